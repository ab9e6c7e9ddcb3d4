//! Replica placement (pure): which brokers hold each partition's replicas. Both controllers
//! place replicas, at two scales:
//!
//! - `balance.rs`: the cluster controller's scaling workflows spread every partition's
//!   replicas and preferred leaders evenly over a set of brokers (a drain before a
//!   scale-down, a rebalance after a scale-up), from the [`ObservedLayout`] (`observed.rs`);
//! - `replication_factor.rs`: the topic controller gives one topic's partitions a new
//!   replica count.
//!
//! Shared here: the layout types, the moves between two layouts, and which brokers stay.

pub mod balance;
mod observed;
pub mod replication_factor;

use std::collections::BTreeMap;

pub use self::balance::{balance, load, BrokerLoad};
pub use self::observed::ObservedLayout;
pub use self::replication_factor::target_assignment;

/// A partition: topic name and index.
pub type PartitionKey = (String, i32);

/// Replica lists by partition; the first replica is the preferred leader.
pub type Layout = BTreeMap<PartitionKey, Vec<i32>>;

/// The partitions whose replica list differs between `from` and `to`, with their new lists.
/// Partitions are keyed by [`PartitionKey`] cluster-wide, by index within one topic.
pub fn moves<P: Ord + Clone>(
    from: &BTreeMap<P, Vec<i32>>,
    to: &BTreeMap<P, Vec<i32>>,
) -> BTreeMap<P, Vec<i32>> {
    to.iter()
        .filter(|(k, r)| from.get(*k) != Some(*r))
        .map(|(k, r)| (k.clone(), r.clone()))
        .collect()
}

/// The brokers of `live` that stay in a cluster of `brokers` brokers (`None`: all of them).
/// A StatefulSet scales down from its highest ordinals, so ids `>= brokers` are being drained
/// and get no new replicas.
pub fn staying_brokers(mut live: Vec<i32>, brokers: Option<i32>) -> Vec<i32> {
    live.retain(|&b| brokers.is_none_or(|kept| b < kept));
    live
}
