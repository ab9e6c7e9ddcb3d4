//! `KafkaCluster`: a set of brokers run as a StatefulSet.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Broker config keys the operator sets itself; `spec.config` may not name them.
pub const OPERATOR_OWNED_CONFIG_KEYS: &[&str] = &[
    "listeners",
    "advertised.listeners",
    "listener.security.protocol.map",
    "inter.broker.listener.name",
    "forwarding.listener.names",
    "http.listener",
    "advertised.http.listener",
    "log.dirs",
    "node.id",
    "cluster.id",
    "controller.quorum.bootstrap.servers",
];

/// A Sluice cluster: `replicas` brokers with persistent storage.
// Several `printcolumn(...)` entries repeat keys such as `type_`; that is how the derive
// takes a list, not a mistake.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kafka.sluice.dev",
    version = "v1alpha1",
    kind = "KafkaCluster",
    namespaced,
    status = "KafkaClusterStatus",
    shortname = "kc",
    category = "sluice",
    derive = "PartialEq",
    doc = "A Sluice (Kafka-compatible) cluster: brokers run as a StatefulSet with persistent storage.",
    annotation("helm.sh/resource-policy", "keep"),
    validation = Rule::new("size(self.metadata.name) <= 46")
        .message("metadata.name may be at most 46 characters (pod and Service names derive from it)")
        .field_path(".metadata.name"),
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.labelSelector"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".spec.replicas",
        description = "Desired brokers"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyReplicas",
        description = "Ready brokers"
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Ready condition"
    ),
    printcolumn(
        name = "Bootstrap",
        type_ = "string",
        json_path = ".status.listeners[0].bootstrapServers",
        description = "Bootstrap address of the first listener (the forwarding one when there is one)"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct KafkaClusterSpec {
    /// Number of brokers. Also served by the /scale subresource.
    #[x_kube(validation = Rule::new("self >= 0").message("replicas must be >= 0"))]
    pub replicas: i32,

    /// Broker image; the operator's default image when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,

    /// Persistent storage for each broker (one PersistentVolumeClaim per broker).
    pub storage: StorageSpec,

    /// Compute resources of the broker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Broker and topic-default settings, Kafka names, string values. Merged over the
    /// operator's defaults. Keys the operator sets itself (listeners, log.dirs, node.id,
    /// cluster.id, ...) are refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 512))]
    #[x_kube(validation = Rule::new(
        "['listeners', 'advertised.listeners', 'listener.security.protocol.map', 'inter.broker.listener.name', 'forwarding.listener.names', 'http.listener', 'advertised.http.listener', 'log.dirs', 'node.id', 'cluster.id', 'controller.quorum.bootstrap.servers'].all(k, !(k in self))"
    ).message("config may not set listeners, advertised.listeners, listener.security.protocol.map, inter.broker.listener.name, forwarding.listener.names (use spec.listeners), http.listener, advertised.http.listener, log.dirs, node.id, cluster.id or controller.quorum.bootstrap.servers: the operator sets them"))]
    pub config: BTreeMap<String, String>,

    /// Kafka listeners: how clients and brokers reach the brokers. Unset: a forwarding
    /// listener `local` on 9092 (every broker advertises `localhost:9092` and forwards what it
    /// does not own, so `kubectl port-forward svc/<name>-kafka-bootstrap 9092` serves the whole
    /// cluster) and the internal listener `internal` on 9093 (in-cluster clients, replication,
    /// the operator). Exactly one `internal` listener, at most one `forwarding`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 8))]
    #[x_kube(
        validation = Rule::new("self.exists_one(l, l.type == 'internal')").message("listeners must have exactly one listener of type internal"),
        validation = Rule::new("self.filter(l, l.type == 'forwarding').size() <= 1").message("listeners may have at most one listener of type forwarding"),
        validation = Rule::new("self.all(a, self.exists_one(b, b.name == a.name))").message("listener names must be unique"),
        validation = Rule::new("self.all(a, self.exists_one(b, b.port == a.port))").message("listener ports must be unique")
    )]
    pub listeners: Option<Vec<ListenerSpec>>,

    /// Extra settings for the broker pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodTemplate>,

    /// Stop reconciling (nothing is changed or deleted) until set back to false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

/// One Kafka listener (a port every broker serves, with the addresses it advertises there).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "self.type == 'forwarding' || (!has(self.advertisedHost) && !has(self.advertisedPort))"
).message("advertisedHost and advertisedPort apply to the forwarding listener only"))]
pub struct ListenerSpec {
    /// Listener name: lowercase letters, digits and '-' (a port name, at most 15 characters).
    /// Kafka's listener name is the name in upper case (`local` -> `LOCAL`).
    #[schemars(length(min = 1, max = 15))]
    #[x_kube(
        validation = Rule::new("self.matches('^[a-z]([a-z0-9-]*[a-z0-9])?$') && !self.contains('--')").message("listener name must be lowercase letters, digits and '-', starting with a letter and not ending with '-' (no '--')"),
        validation = Rule::new("self != 'http'").message("listener name `http` is taken by the HTTP side port")
    )]
    pub name: String,
    /// `internal` (in-cluster clients, replication and the operator; exactly one),
    /// `forwarding` (every broker advertises the same address and forwards what it does not
    /// own: the `kubectl port-forward` listener), `nodePort` or `loadBalancer` (external access
    /// through a Service per broker plus a bootstrap Service).
    #[serde(rename = "type")]
    pub type_: ListenerType,
    /// Container port (on every broker). Not 9644, the HTTP side port.
    #[x_kube(
        validation = Rule::new("self >= 1 && self <= 65535").message("listener port must be between 1 and 65535"),
        validation = Rule::new("self != 9644").message("listener port 9644 is the HTTP side port")
    )]
    pub port: i32,
    /// Forwarding only: the host every broker advertises (default `localhost`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub advertised_host: Option<String>,
    /// Forwarding only: the port every broker advertises (default: `port`), e.g. the local
    /// port of a `kubectl port-forward` that is not the same as the container port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 65535").message("advertisedPort must be between 1 and 65535"))]
    pub advertised_port: Option<i32>,
}

/// Kind of listener.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord,
)]
#[serde(rename_all = "camelCase")]
pub enum ListenerType {
    /// In-cluster clients, inter-broker traffic and the operator: each broker advertises its
    /// stable DNS name under the headless Service.
    Internal,
    /// Every broker advertises the same address and forwards requests it cannot serve.
    Forwarding,
    /// A NodePort Service per broker; brokers advertise their node's IP and their nodePort.
    NodePort,
    /// A LoadBalancer Service per broker; brokers advertise its ingress address.
    LoadBalancer,
}

impl ListenerType {
    /// The name used in the resource (`nodePort`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerType::Internal => "internal",
            ListenerType::Forwarding => "forwarding",
            ListenerType::NodePort => "nodePort",
            ListenerType::LoadBalancer => "loadBalancer",
        }
    }

    /// Reached from outside the cluster through Services of its own.
    pub fn is_external(self) -> bool {
        matches!(self, ListenerType::NodePort | ListenerType::LoadBalancer)
    }
}

/// Storage of each broker.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.size == oldSelf.size").message("storage.size cannot be changed after creation"))]
#[x_kube(validation = Rule::new(
    "has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)"
).message("storage.storageClassName cannot be changed after creation"))]
pub struct StorageSpec {
    /// Size of each broker's volume, e.g. `10Gi`.
    pub size: Quantity,
    /// StorageClass of the volumes; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Delete a broker's volume claim when scaling down removes the broker.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delete_claims_on_scale_down: bool,
}

/// Extra settings for broker pods. Labels and annotations are added to the operator's own
/// (which win on a clash).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplate {
    /// Extra pod labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra pod annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Node selector.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Affinity rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Tolerations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Topology spread constraints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    /// Priority class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
}

/// Observed state of a `KafkaCluster`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KafkaClusterStatus {
    /// The `metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Progressing and Degraded, each with a reason and a message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Brokers (StatefulSet replicas), for the /scale subresource.
    #[serde(default)]
    pub replicas: i32,
    /// Brokers whose pod is ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Label selector of the broker pods, for the /scale subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<String>,
    /// Kafka cluster id: generated once, never changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// `host:port` of the bootstrap Service on the internal listener (in-cluster clients).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_servers: Option<String>,
    /// Every listener with the address its clients bootstrap from; the forwarding listener
    /// first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<ListenerStatus>,
    /// One entry per broker ordinal.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub brokers: Vec<BrokerStatus>,
    /// Partition health from the cluster's metadata (absent when it could not be read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<PartitionHealth>,
    /// The multi-step operation in progress, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
}

/// A listener and where its clients bootstrap from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ListenerStatus {
    /// Listener name.
    pub name: String,
    /// Listener type.
    #[serde(rename = "type")]
    pub type_: ListenerType,
    /// `host:port[,host:port...]` to bootstrap from (absent while unknown, e.g. a load
    /// balancer without an address yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_servers: Option<String>,
    /// Why there is no address yet, when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One broker.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BrokerStatus {
    /// Broker id (the pod's StatefulSet ordinal).
    pub id: i32,
    /// Pod name.
    pub pod: String,
    /// Whether the pod is ready.
    pub ready: bool,
}

/// Partition counts from the cluster metadata.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PartitionHealth {
    /// All partitions of all topics.
    pub total: i32,
    /// Partitions whose in-sync replica set is smaller than their replica set.
    pub under_replicated: i32,
    /// Partitions without a leader.
    pub offline: i32,
}

/// A multi-step operation (scale-down drain, rebalance).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    /// What runs, e.g. `ScaleDown`.
    pub kind: String,
    /// Where it is, e.g. `Blocked`.
    pub phase: String,
    /// When it started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    /// Progress in words, e.g. `0/2 brokers drained`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// Details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Broker count when a scaling operation started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_replicas: Option<i32>,
    /// Broker count a scaling operation ends with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_replicas: Option<i32>,
}
