//! Where a request on a forwarding listener goes: pure decisions from the metadata image.
//!
//! Partitions go to their leader, groups to their coordinator (the leader of the group's
//! `__consumer_offsets` partition), a broker's configs to that broker. Whatever has no live
//! owner stays here, so the local handler answers with the usual error (unknown topic, no
//! leader) and the client retries as it would against Kafka.

use std::collections::BTreeMap;

use crate::coordinator::OFFSETS_TOPIC;
use crate::metadata::image::NO_LEADER;
use crate::metadata::MetadataImage;

/// Where to send a request, or its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route<K> {
    /// Handle it here.
    Local,
    /// Send it whole to this broker.
    Peer(i32),
    /// Its keys belong to several brokers (the client's metadata is older than ours): each
    /// broker gets its own keys. `self_id` may be among them.
    Split(BTreeMap<i32, Vec<K>>),
}

/// The live leader of a partition, if any.
pub fn leader_of(image: &MetadataImage, topic: &str, partition: i32) -> Option<i32> {
    let leader = image.topic(topic)?.partitions.get(&partition)?.leader;
    (leader != NO_LEADER && image.brokers.get(&leader).is_some_and(|b| !b.fenced)).then_some(leader)
}

/// The broker coordinating `group`: the live leader of its offsets partition.
pub fn coordinator_of(image: &MetadataImage, group: &str, offsets_partitions: i32) -> Option<i32> {
    leader_of(
        image,
        OFFSETS_TOPIC,
        crate::coordinator::offsets_topic::partition_for(group, offsets_partitions),
    )
}

/// Decides the route for keys owned as `owner` says. Keys without an owner, and keys this
/// broker owns, are handled here unless others are involved.
pub fn route<K: Clone>(
    self_id: i32,
    keys: impl IntoIterator<Item = K>,
    owner: impl Fn(&K) -> Option<i32>,
) -> Route<K> {
    let mut by_owner: BTreeMap<i32, Vec<K>> = BTreeMap::new();
    for key in keys {
        // No owner: this broker answers (with the error a client expects).
        let id = owner(&key).unwrap_or(self_id);
        by_owner.entry(id).or_default().push(key);
    }
    match by_owner.len() {
        0 => Route::Local,
        1 => match by_owner.into_keys().next() {
            Some(id) if id != self_id => Route::Peer(id),
            _ => Route::Local,
        },
        _ => Route::Split(by_owner),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_owner_is_local_or_peer_and_several_split() {
        let owners = BTreeMap::from([("a", Some(1)), ("b", Some(2)), ("c", None), ("d", Some(2))]);
        let owner = |k: &&str| owners[k];
        assert_eq!(route(1, ["a"], owner), Route::Local);
        assert_eq!(route(1, ["b", "d"], owner), Route::Peer(2));
        // No owner: answered here.
        assert_eq!(route(1, ["c"], owner), Route::Local);
        assert_eq!(route(1, Vec::<&str>::new(), owner), Route::Local);
        assert_eq!(
            route(1, ["a", "b", "c", "d"], owner),
            Route::Split(BTreeMap::from([(1, vec!["a", "c"]), (2, vec!["b", "d"])]))
        );
    }

    #[test]
    fn fenced_or_missing_leaders_own_nothing() {
        use crate::metadata::MetadataRecord;
        let mut image = MetadataImage::default();
        for id in [1, 2] {
            image.apply(&MetadataRecord::RegisterBroker {
                id,
                host: "h".into(),
                port: 1,
                listeners: Vec::new(),
                rack: None,
                http_address: String::new(),
                incarnation: Default::default(),
            });
        }
        image.apply(&MetadataRecord::UnfenceBroker { id: 1 });
        let topic = uuid::Uuid::new_v4();
        image.apply(&MetadataRecord::CreateTopic {
            name: "t".into(),
            id: topic,
            configs: Default::default(),
        });
        for (partition, leader) in [(0, 1), (1, 2), (2, NO_LEADER)] {
            image.apply(&MetadataRecord::CreatePartition {
                topic_id: topic,
                partition,
                replicas: vec![1, 2],
                isr: vec![1, 2],
                leader,
                leader_epoch: 0,
            });
        }
        assert_eq!(leader_of(&image, "t", 0), Some(1));
        assert_eq!(leader_of(&image, "t", 1), None, "broker 2 is fenced");
        assert_eq!(leader_of(&image, "t", 2), None);
        assert_eq!(leader_of(&image, "t", 9), None);
        assert_eq!(leader_of(&image, "nope", 0), None);
    }
}
