//! `KafkaTopic`: one topic of a `KafkaCluster`, managed over the Kafka admin protocol.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A topic of a `KafkaCluster` in the same namespace.
// Several `printcolumn(...)` entries repeat keys such as `type_`; that is how the derive
// takes a list, not a mistake.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kafka.sluice.dev",
    version = "v1alpha1",
    kind = "KafkaTopic",
    namespaced,
    status = "KafkaTopicStatus",
    shortname = "kt",
    category = "sluice",
    derive = "PartialEq",
    doc = "A Kafka topic of a KafkaCluster in the same namespace.",
    annotation("helm.sh/resource-policy", "keep"),
    validation = Rule::new("has(self.spec.topicName) || size(self.metadata.name) <= 249")
        .message("metadata.name is longer than 249 characters, the longest Kafka topic name: set spec.topicName"),
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.cluster", description = "KafkaCluster"),
    printcolumn(name = "Topic", type_ = "string", json_path = ".status.topicName", description = "Kafka topic name"),
    printcolumn(name = "Partitions", type_ = "integer", json_path = ".spec.partitions"),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas", description = "Replication factor"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status", description = "Ready condition"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.cluster == oldSelf.cluster").message("spec.cluster is immutable"))]
#[x_kube(validation = Rule::new(
    "has(self.topicName) == has(oldSelf.topicName) && (!has(self.topicName) || self.topicName == oldSelf.topicName)"
).message("spec.topicName is immutable"))]
pub struct KafkaTopicSpec {
    /// Name of the KafkaCluster (same namespace).
    #[schemars(length(min = 1, max = 253))]
    pub cluster: String,

    /// Kafka topic name; `metadata.name` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 249))]
    #[x_kube(
        validation = Rule::new("self.matches('^[a-zA-Z0-9._-]{1,249}$')").message("topicName may only contain ASCII letters, digits, '.', '_' and '-' (1 to 249 characters)"),
        validation = Rule::new("self != '.' && self != '..'").message("topicName may not be '.' or '..'")
    )]
    pub topic_name: Option<String>,

    /// Number of partitions. May grow, never shrink.
    #[x_kube(
        validation = Rule::new("self >= 1").message("partitions must be >= 1"),
        validation = Rule::new("self >= oldSelf").message("partitions cannot be decreased")
    )]
    pub partitions: i32,

    /// Replication factor.
    #[x_kube(validation = Rule::new("self >= 1 && self <= 32767").message("replicas must be between 1 and 32767"))]
    pub replicas: i32,

    /// Topic configs, Kafka names, string values (`retention.ms`, `cleanup.policy`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 256))]
    pub config: BTreeMap<String, String>,

    /// What deleting this resource does to the topic.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// What deleting a `KafkaTopic` does to its topic.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeletionPolicy {
    /// Delete the topic.
    #[default]
    Delete,
    /// Keep the topic.
    Retain,
}

/// Observed state of a `KafkaTopic`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KafkaTopicStatus {
    /// The `metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready and Progressing, plus Conflict and Invalid where they apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The Kafka topic name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_name: Option<String>,
    /// The Kafka topic id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_id: Option<String>,
    /// Partitions the topic has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<i32>,
    /// Replication factor the topic has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// A replication-factor change in progress (or blocked: too few live brokers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<TopicOperation>,
}

/// A replica move of a topic.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TopicOperation {
    /// What runs: `ReplicaChange`.
    #[serde(default)]
    pub kind: String,
    /// Where it is: `Moving`, or `Blocked` (fewer live brokers than replicas wanted).
    #[serde(default)]
    pub phase: String,
    /// Target replication factor.
    pub target: i32,
    /// Progress in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// Details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl KafkaTopic {
    /// The Kafka topic name: `spec.topicName`, or `metadata.name`.
    pub fn topic_name(&self) -> String {
        self.spec
            .topic_name
            .clone()
            .unwrap_or_else(|| self.name_any())
    }
}
