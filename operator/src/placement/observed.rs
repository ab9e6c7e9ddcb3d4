//! The replica layout as the brokers report it (pure): what the cluster controller's scaling
//! workflows place from.

use std::collections::{BTreeMap, BTreeSet};

use sluice_client::{ClusterMetadata, OngoingReassignments};

use super::{Layout, PartitionKey};

/// The cluster's partition layout and brokers as the brokers report them (what is, where
/// `ValidatedCluster` is what the spec asks for).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedLayout {
    /// Every partition's replica list (during a reassignment: old and new replicas).
    pub replicas: Layout,
    /// Running reassignments: the target replica list of each partition being moved.
    pub moving: BTreeMap<PartitionKey, Vec<i32>>,
    /// Live (registered, unfenced) brokers and their racks.
    pub live: BTreeMap<i32, Option<String>>,
    /// The metadata quorum's voters, when DescribeQuorum answered.
    pub voters: Option<BTreeSet<i32>>,
}

impl ObservedLayout {
    /// The layout in the cluster's metadata, its running reassignments and the quorum's
    /// `voters`.
    pub fn from_metadata(
        md: &ClusterMetadata,
        moving: &OngoingReassignments,
        voters: Option<BTreeSet<i32>>,
    ) -> Self {
        ObservedLayout {
            replicas: md
                .topics
                .values()
                .flat_map(|t| {
                    t.partitions
                        .iter()
                        .map(|p| ((t.name.clone(), p.partition), p.replicas.clone()))
                })
                .collect(),
            moving: moving
                .iter()
                .map(|(key, r)| {
                    let target = r
                        .replicas
                        .iter()
                        .copied()
                        .filter(|b| !r.removing.contains(b))
                        .collect();
                    (key.clone(), target)
                })
                .collect(),
            live: md
                .brokers
                .values()
                .map(|b| (b.id, b.rack.clone()))
                .collect(),
            voters,
        }
    }

    /// Each partition's replica list as it will be once running moves complete.
    pub fn settled_layout(&self) -> Layout {
        let mut layout = self.replicas.clone();
        for (key, target) in &self.moving {
            layout.insert(key.clone(), target.clone());
        }
        layout
    }

    /// Partitions with a replica (current or being removed) on a broker `>= first_removed`.
    pub fn partitions_on_removed(&self, first_removed: i32) -> usize {
        self.replicas
            .values()
            .filter(|r| r.iter().any(|&b| b >= first_removed))
            .count()
    }

    /// Brokers `0..count` with their racks as far as known.
    pub fn target_brokers(&self, count: i32) -> BTreeMap<i32, Option<String>> {
        (0..count)
            .map(|b| (b, self.live.get(&b).cloned().flatten()))
            .collect()
    }
}
