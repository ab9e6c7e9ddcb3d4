//! Request headers in, response frames out, through the `kafka-protocol` crate.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

/// A request that cannot be served; the connection is closed, as Kafka closes it.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("request frame of {0} bytes is too short for a header")]
    TooShort(usize),
    #[error("unknown API key {0}")]
    UnknownApiKey(i16),
    #[error("cannot decode {api:?} v{version}: {reason}")]
    Malformed {
        api: ApiKey,
        version: i16,
        reason: String,
    },
}

/// A decoded request header and the body bytes after it.
#[derive(Debug)]
pub struct RequestFrame {
    pub api: ApiKey,
    pub version: i16,
    pub header: RequestHeader,
    pub body: Bytes,
}

/// Splits a frame (without its size prefix) into header and body. Header versions follow the
/// API and version, including versions we do not serve (ApiVersions needs that, KIP-511).
pub fn decode_request(mut frame: Bytes) -> Result<RequestFrame, DecodeError> {
    if frame.len() < 8 {
        return Err(DecodeError::TooShort(frame.len()));
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let api = ApiKey::try_from(key).map_err(|_| DecodeError::UnknownApiKey(key))?;
    let header_version = api.request_header_version(version);
    let header =
        RequestHeader::decode(&mut frame, header_version).map_err(|e| DecodeError::Malformed {
            api,
            version,
            reason: e.to_string(),
        })?;
    Ok(RequestFrame {
        api,
        version,
        header,
        body: frame,
    })
}

/// Decodes a request body. Bytes left after the body are ignored, as Kafka ignores them:
/// librdkafka 2.16 sends Metadata v12 requests with three extra bytes.
pub fn decode_body<T: Decodable>(frame: &RequestFrame) -> Result<T, DecodeError> {
    let mut body = frame.body.clone();
    let message = T::decode(&mut body, frame.version).map_err(|e| DecodeError::Malformed {
        api: frame.api,
        version: frame.version,
        reason: format!("{e:#}"),
    })?;
    if !body.is_empty() {
        tracing::debug!(api = ?frame.api, version = frame.version, trailing = body.len(), "ignoring bytes after the request body");
    }
    Ok(message)
}

/// Encodes a whole response frame: size prefix, header, body.
pub fn encode_response<T: Encodable>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> anyhow::Result<Bytes> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = api.response_header_version(version);
    let size = header.compute_size(header_version)? + body.compute_size(version)?;
    let mut buf = BytesMut::with_capacity(4 + size);
    buf.put_i32(size as i32);
    header.encode(&mut buf, header_version)?;
    body.encode(&mut buf, version)?;
    Ok(buf.freeze())
}

/// A whole response frame around a body encoded elsewhere (a forwarded request's answer).
pub fn encode_raw_response(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &[u8],
) -> anyhow::Result<Bytes> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = api.response_header_version(version);
    let size = header.compute_size(header_version)? + body.len();
    let mut buf = BytesMut::with_capacity(4 + size);
    buf.put_i32(i32::try_from(size)?);
    header.encode(&mut buf, header_version)?;
    buf.put_slice(body);
    Ok(buf.freeze())
}
