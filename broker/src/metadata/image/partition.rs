//! One partition's replica placement and leadership: what the image holds for it, and what a
//! `PartitionChange` record carries whole. Apart from the image so the records can embed it
//! without importing the image they build.

use serde::{Deserialize, Serialize};

/// No leader: the partition is offline.
pub const NO_LEADER: i32 = -1;

/// One partition's replica placement and leadership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionImage {
    /// The replica set, preferred leader first. During a reassignment it holds the old and
    /// the new replicas together.
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// The leader's broker id, or [`NO_LEADER`].
    pub leader: i32,
    /// Bumped on every leader change; stamped into batches and checked by followers.
    pub leader_epoch: i32,
    /// Bumped on every change of this partition (ISR, replicas, leader), so a stale ISR
    /// update from a leader is told apart from a current one (Kafka's partition epoch).
    #[serde(default)]
    pub partition_epoch: i32,
    /// Replicas being added by a reassignment (also in `replicas`).
    #[serde(default)]
    pub adding_replicas: Vec<i32>,
    /// Replicas being removed by a reassignment (still in `replicas` until it completes).
    #[serde(default)]
    pub removing_replicas: Vec<i32>,
}

impl PartitionImage {
    pub fn is_reassigning(&self) -> bool {
        !self.adding_replicas.is_empty() || !self.removing_replicas.is_empty()
    }

    /// The replica set the partition will have once its reassignment completes.
    pub fn target_replicas(&self) -> Vec<i32> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !self.removing_replicas.contains(r))
            .collect()
    }
}
