//! The custom resources: `KafkaCluster` and `KafkaTopic` (group `kafka.sluice.dev`,
//! version `v1alpha1`), their status types, and CRD generation.
//!
//! The Rust types are the source of truth; `crds/*.yaml` is generated from them
//! (`sluice-operator crds --write`) and a test fails when the committed files drift.

mod cluster;
mod conditions;
mod generate;
mod topic;

pub use cluster::{
    BrokerStatus, KafkaCluster, KafkaClusterSpec, KafkaClusterStatus, ListenerSpec, ListenerStatus,
    ListenerType, Operation, PartitionHealth, PodTemplate, StorageSpec, OPERATOR_OWNED_CONFIG_KEYS,
};
pub use conditions::{condition, merge_conditions, ConditionStatus};
pub use generate::{crd_files, crds, crds_yaml, CrdFile, CRD_DIRS};
pub use topic::{DeletionPolicy, KafkaTopic, KafkaTopicSpec, KafkaTopicStatus, TopicOperation};

/// API group of both resources.
pub const GROUP: &str = "kafka.sluice.dev";
/// API version of both resources.
pub const VERSION: &str = "v1alpha1";
