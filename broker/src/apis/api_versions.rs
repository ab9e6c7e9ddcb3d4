//! ApiVersions, with KIP-511's answer to versions we do not know: a v0 body carrying
//! UNSUPPORTED_VERSION and our ranges, so the client can retry with a version we serve.

use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::ResponseError;

use super::RequestContext;
use crate::broker::Broker;
use crate::protocol::versions::{is_supported, SUPPORTED_APIS};
use crate::protocol::{decode_body, RequestFrame};

pub fn handle(broker: &Broker, ctx: &RequestContext, frame: &RequestFrame) -> Option<Bytes> {
    let mut response = ApiVersionsResponse::default();
    response.api_keys = SUPPORTED_APIS
        .iter()
        .map(|&(api, min, max)| {
            ApiVersion::default()
                .with_api_key(api as i16)
                .with_min_version(min)
                .with_max_version(max)
        })
        .collect();
    // Feature fields (tagged in v3) stay at their defaults and are therefore not written: older
    // librdkafka (2.0.x) misreads responses that carry them, and Kafka leaves them out too.
    if !is_supported(ctx.api, ctx.version) {
        response.error_code = ResponseError::UnsupportedVersion.code();
        let v0 = RequestContext { version: 0, ..*ctx };
        return v0.respond(broker, &response);
    }
    if decode_body::<ApiVersionsRequest>(frame).is_err() {
        // Kafka answers a malformed ApiVersions with INVALID_REQUEST rather than closing.
        response.error_code = ResponseError::InvalidRequest.code();
    }
    ctx.respond(broker, &response)
}
