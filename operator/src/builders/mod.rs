//! Pure builders: a [`ValidatedCluster`] in, the Kubernetes objects the operator applies out.
//! No I/O here; every function is unit-tested field by field.

mod config;
mod listeners;
mod pdb;
mod services;
mod statefulset;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::validate::ValidatedCluster;

pub use config::{config_hash, server_properties};
pub use listeners::{
    external_bootstrap_service_name, external_service_name, external_services, load_balancer_host,
    node_port, pod_config_file, pod_properties, service_address, ExternalAddresses, HOST_IP_ENV,
    LISTENER_LABEL, POD_NAME_LABEL,
};
pub use pdb::pod_disruption_budget;
pub use services::{bootstrap_service, headless_service};
pub use statefulset::statefulset;

/// HTTP side port: /metrics, /healthz, /readyz, internal RPC (name `http`).
pub const HTTP_PORT: i32 = 9644;
/// Where the data volume claim is mounted.
pub const DATA_MOUNT: &str = "/var/lib/sluice";
/// Broker data directory (`log.dirs`), inside the data volume.
pub const DATA_DIR: &str = "/var/lib/sluice/data";
/// Where the ConfigMap is mounted.
pub const CONFIG_MOUNT: &str = "/etc/sluice";
/// ConfigMap key of the broker configuration.
pub const CONFIG_FILE: &str = "server.properties";
/// Pod template annotation carrying the configuration hash: a config change changes the
/// template, so the StatefulSet controller rolls the pods one at a time.
pub const CONFIG_HASH_ANNOTATION: &str = "kafka.sluice.dev/config-hash";
/// Non-root user and group of the broker process.
pub const BROKER_UID: i64 = 65532;
/// Grace period for controlled shutdown (leadership moves away before exit).
pub const TERMINATION_GRACE_SECONDS: i64 = 120;
/// Largest number of controller-quorum voters.
pub const MAX_VOTERS: i32 = 3;

/// The label values every object carries.
pub const APP_NAME: &str = "sluice-broker";
/// `app.kubernetes.io/managed-by`.
pub const MANAGED_BY: &str = "sluice-operator";

/// StatefulSet (and PodDisruptionBudget) name: `<cluster>-kafka`.
pub fn statefulset_name(cluster: &str) -> String {
    format!("{cluster}-kafka")
}

/// Headless Service name: `<cluster>-kafka-brokers`.
pub fn headless_service_name(cluster: &str) -> String {
    format!("{cluster}-kafka-brokers")
}

/// Bootstrap Service name: `<cluster>-kafka-bootstrap`.
pub fn bootstrap_service_name(cluster: &str) -> String {
    format!("{cluster}-kafka-bootstrap")
}

/// ConfigMap name: `<cluster>-kafka-config`.
pub fn config_map_name(cluster: &str) -> String {
    format!("{cluster}-kafka-config")
}

/// Pod name of broker `ordinal`.
pub fn pod_name(cluster: &str, ordinal: i32) -> String {
    format!("{}-{ordinal}", statefulset_name(cluster))
}

/// `<cluster>-kafka-bootstrap.<namespace>.svc:<port>`, what in-cluster clients bootstrap
/// from (`port`: the internal listener's).
pub fn bootstrap_servers(cluster: &str, namespace: &str, port: i32) -> String {
    format!("{}.{namespace}.svc:{port}", bootstrap_service_name(cluster))
}

/// The bootstrap address of `view`'s internal listener.
pub fn internal_bootstrap_servers(view: &ValidatedCluster) -> String {
    bootstrap_servers(&view.name, &view.namespace, view.internal_listener().port)
}

/// Labels selecting the broker pods of `cluster` (the StatefulSet selector, immutable).
pub fn selector_labels(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), APP_NAME.to_string()),
        (
            "app.kubernetes.io/instance".to_string(),
            cluster.to_string(),
        ),
    ])
}

/// The selector as a string, for `status.labelSelector` (the /scale subresource).
pub fn label_selector(cluster: &str) -> String {
    selector_labels(cluster)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Labels of every object the operator builds for `cluster`.
pub fn labels(cluster: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(cluster);
    labels.insert("app.kubernetes.io/component".into(), "broker".into());
    labels.insert("app.kubernetes.io/managed-by".into(), MANAGED_BY.into());
    labels
}

/// Metadata of a built object: name, namespace, labels, controller owner reference.
fn metadata(view: &ValidatedCluster, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(view.namespace.clone()),
        labels: Some(labels(&view.name)),
        owner_references: Some(vec![view.owner.clone()]),
        ..Default::default()
    }
}

/// Everything the operator applies for one cluster, in apply order (after the external
/// listeners' Services, [`external_services`], whose addresses the configuration needs).
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterObjects {
    /// Broker configuration.
    pub config_map: ConfigMap,
    /// Headless Service giving each broker a stable DNS name.
    pub headless_service: Service,
    /// Client bootstrap Service.
    pub bootstrap_service: Service,
    /// The brokers.
    pub statefulset: StatefulSet,
    /// At most one broker down at a time by voluntary disruption.
    pub pod_disruption_budget: PodDisruptionBudget,
}

/// Build every object for `view`, the brokers advertising the `external` addresses.
pub fn build_all(view: &ValidatedCluster, external: &ExternalAddresses) -> ClusterObjects {
    let properties = server_properties(view);
    let hash = config_hash(&properties);
    ClusterObjects {
        config_map: config::config_map(view, properties, external),
        headless_service: headless_service(view),
        bootstrap_service: bootstrap_service(view),
        statefulset: statefulset(view, &hash),
        pod_disruption_budget: pod_disruption_budget(view),
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use serde_json::json;

    use crate::validate::tests::{cluster, CLUSTER_ID};
    use crate::validate::{validate_cluster, ValidatedCluster};

    /// A validated view of a cluster with `spec`.
    pub(crate) fn view(spec: serde_json::Value) -> ValidatedCluster {
        validate_cluster(&cluster(spec), "sluice:test", CLUSTER_ID).expect("valid spec")
    }

    /// The smallest useful spec: 3 brokers, 10Gi each.
    pub(crate) fn three_brokers() -> ValidatedCluster {
        view(json!({"replicas": 3, "storage": {"size": "10Gi"}}))
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::three_brokers;
    use super::*;

    #[test]
    fn names_follow_the_contract() {
        assert_eq!(statefulset_name("demo"), "demo-kafka");
        assert_eq!(headless_service_name("demo"), "demo-kafka-brokers");
        assert_eq!(bootstrap_service_name("demo"), "demo-kafka-bootstrap");
        assert_eq!(config_map_name("demo"), "demo-kafka-config");
        assert_eq!(pod_name("demo", 2), "demo-kafka-2");
        assert_eq!(
            bootstrap_servers("demo", "ns", 9093),
            "demo-kafka-bootstrap.ns.svc:9093"
        );
        assert_eq!(
            internal_bootstrap_servers(&three_brokers()),
            "demo-kafka-bootstrap.ns.svc:9093"
        );
        assert_eq!(external_service_name("demo", 2, "ext"), "demo-kafka-2-ext");
        assert_eq!(
            external_bootstrap_service_name("demo", "ext"),
            "demo-kafka-ext-bootstrap"
        );
        assert_eq!(pod_config_file("demo-kafka-2"), "demo-kafka-2.properties");
        assert_eq!(
            label_selector("demo"),
            "app.kubernetes.io/instance=demo,app.kubernetes.io/name=sluice-broker"
        );
    }

    #[test]
    fn every_object_is_owned_labelled_and_namespaced() {
        let view = three_brokers();
        let objects = build_all(&view, &ExternalAddresses::default());
        let metas = [
            &objects.config_map.metadata,
            &objects.headless_service.metadata,
            &objects.bootstrap_service.metadata,
            &objects.statefulset.metadata,
            &objects.pod_disruption_budget.metadata,
        ];
        for meta in metas {
            assert_eq!(meta.namespace.as_deref(), Some("ns"));
            assert_eq!(meta.labels.as_ref(), Some(&labels("demo")));
            let owners = meta.owner_references.as_ref().expect("owner references");
            assert_eq!(owners, &vec![view.owner.clone()]);
            assert_eq!(owners[0].controller, Some(true));
        }
        let l = labels("demo");
        assert_eq!(l["app.kubernetes.io/name"], "sluice-broker");
        assert_eq!(l["app.kubernetes.io/instance"], "demo");
        assert_eq!(l["app.kubernetes.io/component"], "broker");
        assert_eq!(l["app.kubernetes.io/managed-by"], "sluice-operator");
    }
}
