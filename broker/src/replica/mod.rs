//! Partition replicas hosted by this broker: the replica manager, each partition's state, and
//! idempotent-producer bookkeeping. Replication between brokers will live here too.

pub mod manager;
pub mod partition;
pub mod producer_state;

pub use manager::ReplicaManager;
pub use partition::{AppendError, AppendOutcome, Partition, PartitionSettings};
