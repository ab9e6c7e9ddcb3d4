//! The APIs and versions this broker advertises. Only complete implementations are listed:
//! clients change behaviour on what is advertised.

use kafka_protocol::messages::ApiKey;

/// `(api, min, max)` for every API served.
pub const SUPPORTED_APIS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 8),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::AlterPartitionReassignments, 0, 1),
    (ApiKey::ListPartitionReassignments, 0, 0),
    (ApiKey::UnregisterBroker, 0, 0),
    (ApiKey::DescribeQuorum, 0, 0),
];

/// The supported version range of an API, if it is served at all.
pub fn supported_range(api: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED_APIS
        .iter()
        .find(|(k, _, _)| *k == api)
        .map(|&(_, min, max)| (min, max))
}

/// Whether `version` of `api` is served.
pub fn is_supported(api: ApiKey, version: i16) -> bool {
    supported_range(api).is_some_and(|(min, max)| (min..=max).contains(&version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertised_ranges_are_within_what_the_codec_handles() {
        for &(api, min, max) in SUPPORTED_APIS {
            let codec = api.valid_versions();
            assert!(
                min >= codec.min && max <= codec.max && min <= max,
                "{api:?}"
            );
        }
        assert!(is_supported(ApiKey::Metadata, 0));
        assert!(!is_supported(ApiKey::Produce, 2));
        assert!(is_supported(ApiKey::JoinGroup, 0));
        assert!(!is_supported(ApiKey::EndTxn, 0));
    }
}
