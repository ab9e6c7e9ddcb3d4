//! API version negotiation (pure functions, no I/O).

use std::collections::BTreeMap;

use bytes::{Buf, Bytes};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::protocol::{Decodable, Message, VersionRange};

use crate::error::ClientError;

/// Kafka error code UNSUPPORTED_VERSION.
pub const UNSUPPORTED_VERSION: i16 = 35;

/// The ApiVersions version tried first on connect.
pub const API_VERSIONS_PREFERRED: i16 = 3;

/// The API version ranges a broker advertised in its ApiVersions response.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BrokerVersions {
    ranges: BTreeMap<i16, VersionRange>,
}

impl BrokerVersions {
    /// Build from an ApiVersions response (its `api_keys` list).
    pub fn from_response(resp: &ApiVersionsResponse) -> Self {
        Self::from_ranges(
            resp.api_keys
                .iter()
                .map(|k| (k.api_key, k.min_version, k.max_version)),
        )
    }

    /// Build from `(api_key, min, max)` triples.
    pub fn from_ranges(ranges: impl IntoIterator<Item = (i16, i16, i16)>) -> Self {
        BrokerVersions {
            ranges: ranges
                .into_iter()
                .map(|(k, min, max)| (k, VersionRange { min, max }))
                .collect(),
        }
    }

    /// The range the broker supports for `api_key`, if it advertises it.
    pub fn range(&self, api_key: i16) -> Option<VersionRange> {
        self.ranges.get(&api_key).copied()
    }

    /// All advertised `(api_key, range)` pairs, ordered by key.
    pub fn iter(&self) -> impl Iterator<Item = (i16, VersionRange)> + '_ {
        self.ranges.iter().map(|(k, r)| (*k, *r))
    }

    /// Highest version of `api_key` supported by both sides, optionally capped at `cap`.
    pub fn negotiate(
        &self,
        api_key: i16,
        ours: VersionRange,
        cap: Option<i16>,
    ) -> Result<i16, ClientError> {
        negotiate(api_key, ours, self.range(api_key), cap)
    }
}

/// Highest version in `ours ∩ broker` (and `<= cap` if given).
///
/// Fails with [`ClientError::UnsupportedVersion`] when the broker does not advertise the
/// API or the ranges do not overlap.
pub fn negotiate(
    api_key: i16,
    ours: VersionRange,
    broker: Option<VersionRange>,
    cap: Option<i16>,
) -> Result<i16, ClientError> {
    let unsupported = || ClientError::UnsupportedVersion {
        api: api_key,
        client_range: ours,
        broker_range: broker,
    };
    let broker_range = broker.ok_or_else(unsupported)?;
    let mut common = ours.intersect(&broker_range);
    if let Some(cap) = cap {
        common.max = common.max.min(cap);
    }
    if common.is_empty() {
        return Err(unsupported());
    }
    Ok(common.max)
}

/// KIP-511: when a broker does not support the ApiVersions version we sent, it answers
/// with a version-0 body carrying UNSUPPORTED_VERSION and (usually) its own ApiVersions
/// range. Returns the version to retry with: the highest version both sides support,
/// or 0 when the broker gave no usable range. `None` when no retry is called for.
pub fn api_versions_retry_version(resp: &ApiVersionsResponse, sent: i16) -> Option<i16> {
    if resp.error_code != UNSUPPORTED_VERSION {
        return None;
    }
    let ours = VersionRange {
        min: ApiVersionsRequest::VERSIONS.min,
        max: (sent - 1).min(ApiVersionsRequest::VERSIONS.max),
    };
    let broker = BrokerVersions::from_response(resp).range(ApiKey::ApiVersions as i16);
    let retry = negotiate(ApiKey::ApiVersions as i16, ours, broker, None).unwrap_or(0);
    // Never retry with the version that was just refused.
    (retry < sent).then_some(retry)
}

/// Decode an ApiVersions response body sent in answer to a request of version `sent`.
///
/// A broker that does not support `sent` answers with a version-0 body (KIP-511), so the
/// error code (the first field in every version) is read first and the body decoded as
/// v0 when it is UNSUPPORTED_VERSION.
pub fn decode_api_versions_response(
    mut body: Bytes,
    sent: i16,
) -> Result<ApiVersionsResponse, ClientError> {
    if body.len() < 2 {
        return Err(ClientError::protocol(
            "decode ApiVersions response",
            format!("body is {} bytes", body.len()),
        ));
    }
    let error_code = (&body[..2]).get_i16();
    let version = if error_code == UNSUPPORTED_VERSION {
        0
    } else {
        sent
    };
    let context = || format!("decode ApiVersions v{version} response");
    let resp = ApiVersionsResponse::decode(&mut body, version)
        .map_err(|e| ClientError::protocol(context(), e))?;
    if body.has_remaining() {
        return Err(ClientError::protocol(
            context(),
            format!("{} trailing bytes", body.remaining()),
        ));
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use kafka_protocol::protocol::Encodable;

    fn range(min: i16, max: i16) -> VersionRange {
        VersionRange { min, max }
    }

    fn encode(resp: &ApiVersionsResponse, version: i16) -> Bytes {
        let mut buf = BytesMut::new();
        resp.encode(&mut buf, version).unwrap();
        buf.freeze()
    }

    fn api_versions_response(error_code: i16, keys: &[(i16, i16, i16)]) -> ApiVersionsResponse {
        ApiVersionsResponse::default()
            .with_error_code(error_code)
            .with_api_keys(
                keys.iter()
                    .map(|&(k, min, max)| {
                        ApiVersion::default()
                            .with_api_key(k)
                            .with_min_version(min)
                            .with_max_version(max)
                    })
                    .collect(),
            )
    }

    #[test]
    fn picks_highest_common_version() {
        assert_eq!(
            negotiate(3, range(0, 13), Some(range(0, 12)), None).unwrap(),
            12
        );
        assert_eq!(
            negotiate(3, range(4, 9), Some(range(0, 12)), None).unwrap(),
            9
        );
        assert_eq!(
            negotiate(3, range(0, 13), Some(range(0, 12)), Some(7)).unwrap(),
            7
        );
        assert_eq!(
            negotiate(3, range(5, 5), Some(range(5, 5)), None).unwrap(),
            5
        );
    }

    #[test]
    fn no_overlap_is_unsupported() {
        match negotiate(1, range(4, 18), Some(range(0, 3)), None) {
            Err(ClientError::UnsupportedVersion {
                api,
                client_range,
                broker_range,
            }) => {
                assert_eq!(api, 1);
                assert_eq!(client_range, range(4, 18));
                assert_eq!(broker_range, Some(range(0, 3)));
            }
            other => panic!("unexpected {other:?}"),
        }
        // A cap below the overlap is unsupported too.
        assert!(negotiate(1, range(4, 18), Some(range(4, 18)), Some(3)).is_err());
    }

    #[test]
    fn api_not_advertised_is_unsupported() {
        let versions = BrokerVersions::from_ranges([(18, 0, 3)]);
        match versions.negotiate(0, range(3, 13), None) {
            Err(ClientError::UnsupportedVersion { broker_range, .. }) => {
                assert_eq!(broker_range, None)
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(versions.negotiate(18, range(0, 4), None).unwrap(), 3);
    }

    #[test]
    fn kip511_retry_uses_broker_range() {
        let resp = api_versions_response(UNSUPPORTED_VERSION, &[(18, 0, 2)]);
        assert_eq!(api_versions_retry_version(&resp, 3), Some(2));
    }

    #[test]
    fn kip511_retry_falls_back_to_v0_without_range() {
        let resp = api_versions_response(UNSUPPORTED_VERSION, &[]);
        assert_eq!(api_versions_retry_version(&resp, 3), Some(0));
        // A range that does not overlap ours also means v0.
        let resp = api_versions_response(UNSUPPORTED_VERSION, &[(18, 7, 9)]);
        assert_eq!(api_versions_retry_version(&resp, 3), Some(0));
    }

    #[test]
    fn kip511_no_retry_when_ok_or_already_v0() {
        let resp = api_versions_response(0, &[(18, 0, 3)]);
        assert_eq!(api_versions_retry_version(&resp, 3), None);
        let resp = api_versions_response(UNSUPPORTED_VERSION, &[(18, 0, 3)]);
        assert_eq!(api_versions_retry_version(&resp, 0), None);
    }

    #[test]
    fn decodes_v0_error_body_sent_for_v3_request() {
        let resp = api_versions_response(UNSUPPORTED_VERSION, &[(18, 0, 2)]);
        let decoded = decode_api_versions_response(encode(&resp, 0), 3).unwrap();
        assert_eq!(decoded.error_code, UNSUPPORTED_VERSION);
        assert_eq!(
            BrokerVersions::from_response(&decoded).range(18),
            Some(range(0, 2))
        );
    }

    #[test]
    fn decodes_v3_body() {
        let resp = api_versions_response(0, &[(0, 3, 11), (1, 4, 16), (18, 0, 4)]);
        let decoded = decode_api_versions_response(encode(&resp, 3), 3).unwrap();
        let versions = BrokerVersions::from_response(&decoded);
        assert_eq!(versions.range(1), Some(range(4, 16)));
        assert_eq!(versions.iter().count(), 3);
    }

    #[test]
    fn rejects_short_or_trailing_bodies() {
        assert!(decode_api_versions_response(Bytes::from_static(&[0]), 3).is_err());
        let resp = api_versions_response(0, &[(18, 0, 3)]);
        let mut body = BytesMut::from(&encode(&resp, 0)[..]);
        body.extend_from_slice(&[1, 2, 3]);
        assert!(decode_api_versions_response(body.freeze(), 0).is_err());
    }
}
