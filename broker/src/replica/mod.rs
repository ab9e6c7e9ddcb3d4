//! Partition replicas hosted by this broker and their replication: the replica manager (roles
//! from metadata), each partition's state, the follower fetchers, the leaders' ISR and high
//! watermark decisions, the leader-epoch cache and idempotent-producer bookkeeping.

pub mod brokers;
pub mod epoch_cache;
pub mod fetcher;
pub mod isr;
pub mod manager;
pub mod partition;
pub mod producer_state;

pub use fetcher::ReplicationTraffic;
pub use isr::IsrUpdate;
pub use manager::{LeadershipListener, ReplicaManager, ReplicaStats};
pub use partition::{AppendError, AppendOutcome, Partition, PartitionSettings, Role};
