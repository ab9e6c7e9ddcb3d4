//! The quorum's Raft type configuration, its settings and its errors.

use std::path::PathBuf;
use std::time::Duration;

use openraft::BasicNode;

use crate::metadata::image::records::MetadataRecord;
use crate::metadata::image::MetadataImage;
use crate::rpc::RpcError;

openraft::declare_raft_types!(
    /// Raft types of the metadata quorum: each log entry carries one batch of metadata records,
    /// a node is reached at its HTTP side port, and a snapshot is the whole metadata image.
    pub TypeConfig:
        D = Vec<MetadataRecord>,
        R = (),
        NodeId = u64,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = MetadataImage,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<u64>;
pub type Vote = openraft::Vote<u64>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StoredMembership = openraft::StoredMembership<u64, BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<u64, BasicNode>;
pub type StorageError = openraft::StorageError<u64>;

/// How the quorum of one broker is set up.
#[derive(Debug, Clone)]
pub struct QuorumConfig {
    /// This broker's id (>= 0). Raft node ids are the same numbers.
    pub node_id: i32,
    /// Every broker of one cluster has the same id; RPC from another cluster is refused.
    pub cluster_id: String,
    /// `host:port` where other brokers reach this broker's HTTP side port.
    pub http_address: String,
    /// Where the Raft log, vote and snapshot live (`<data_dir>/__cluster_metadata`).
    pub dir: PathBuf,
    /// `id@host:port` of the brokers that form the cluster the first time
    /// (`controller.quorum.bootstrap.servers`). Empty: a single-broker cluster.
    pub bootstrap: Vec<(i32, String)>,
    /// `controller.quorum.election.timeout.ms`: a follower that hears nothing from the leader
    /// for a random time in `[t, 2t]` starts an election. Heartbeats go every `t / 5`.
    pub election_timeout: Duration,
    /// `controller.quorum.voter.count`: how many brokers vote (1, 3 or 5).
    pub voter_count: usize,
    /// The leader picks voters by itself every election timeout, from the members its
    /// heartbeats reach ([`super::Quorum::responsive_members`]). Turn off when the
    /// controller calls [`super::Quorum::manage_voters`] with its own view of live brokers.
    pub auto_manage_voters: bool,
}

impl QuorumConfig {
    pub(crate) fn raft_id(&self) -> u64 {
        // Checked in validate(): node_id >= 0.
        self.node_id as u64
    }

    pub(crate) fn validate(&self) -> Result<(), QuorumError> {
        let bad = |m: String| Err(QuorumError::InvalidConfig(m));
        if self.node_id < 0 {
            return bad(format!("node id {} must be >= 0", self.node_id));
        }
        if self.cluster_id.is_empty() {
            return bad("the cluster id must not be empty".into());
        }
        if self.http_address.is_empty() {
            return bad("the advertised HTTP address must not be empty".into());
        }
        if !(1..=7).contains(&self.voter_count) {
            return bad(format!(
                "voter count {} must be between 1 and 7 (1, 3 or 5 recommended)",
                self.voter_count
            ));
        }
        if self.election_timeout < Duration::from_millis(50) {
            return bad(format!(
                "election timeout {:?} is too short (at least 50 ms)",
                self.election_timeout
            ));
        }
        let mut ids = std::collections::BTreeSet::new();
        for (id, addr) in &self.bootstrap {
            if *id < 0 || addr.is_empty() {
                return bad(format!("bootstrap server {id}@{addr} is not id@host:port"));
            }
            if !ids.insert(*id) {
                return bad(format!("bootstrap server id {id} appears twice"));
            }
        }
        Ok(())
    }
}

/// Raft node id of a broker id. Broker ids are checked to be >= 0 where they enter.
pub(crate) fn raft_id(broker: i32) -> Result<u64, QuorumError> {
    u64::try_from(broker)
        .map_err(|_| QuorumError::InvalidConfig(format!("broker id {broker} must be >= 0")))
}

/// Broker id of a Raft node id; ids come from broker ids, so they fit.
pub(crate) fn broker_id(node: u64) -> i32 {
    i32::try_from(node).unwrap_or(i32::MAX)
}

/// A failed quorum operation.
#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    /// Only the leader does this; `leader` is `(id, http address)` when known.
    #[error("this broker is not the metadata quorum leader (leader: {leader:?})")]
    NotLeader { leader: Option<(i32, String)> },
    #[error("metadata quorum storage: {context}: {source}")]
    Storage {
        context: String,
        source: std::io::Error,
    },
    #[error("metadata quorum storage is corrupt: {0}")]
    Corrupt(String),
    #[error("cluster RPC failed: {0}")]
    Network(#[from] RpcError),
    /// A broker or a data directory of another cluster.
    #[error(
        "cluster id mismatch: this broker is in cluster `{local}` but {peer} is in cluster `{remote}`"
    )]
    ClusterIdMismatch {
        local: String,
        remote: String,
        peer: String,
    },
    #[error("invalid metadata quorum setting: {0}")]
    InvalidConfig(String),
    /// Another membership change is not finished; retry later.
    #[error("a metadata quorum membership change is in progress: {0}")]
    MembershipChangeInProgress(String),
    #[error("invalid metadata quorum membership change: {0}")]
    InvalidMembership(String),
    #[error("the metadata quorum did not finish {what} within {after:?}")]
    Timeout { what: String, after: Duration },
    /// Raft stopped (shutdown, or a storage failure it cannot continue after).
    #[error("the metadata quorum stopped: {0}")]
    Stopped(String),
}

impl QuorumError {
    pub(crate) fn storage(context: impl Into<String>, source: std::io::Error) -> QuorumError {
        QuorumError::Storage {
            context: context.into(),
            source,
        }
    }
}

impl From<openraft::error::Fatal<u64>> for QuorumError {
    fn from(e: openraft::error::Fatal<u64>) -> Self {
        QuorumError::Stopped(e.to_string())
    }
}
