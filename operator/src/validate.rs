//! Turning a `KafkaCluster` into a checked [`ValidatedCluster`] the builders can trust.
//!
//! The API server already enforces the CRD's schema and CEL rules; this re-checks what the
//! builders rely on (so a resource created before a rule existed, or a `render` input file,
//! gets a clear error instead of a bad object) and what CEL cannot express cheaply.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};

use crate::crd::{
    KafkaCluster, ListenerSpec, ListenerType, PodTemplate, OPERATOR_OWNED_CONFIG_KEYS,
};

/// Longest cluster name: pod names `<name>-kafka-<ordinal>` plus the StatefulSet's
/// `controller-revision-hash` label value (`<name>-kafka-<10 chars>`) must fit in 63.
pub const MAX_CLUSTER_NAME_LEN: usize = 46;

/// Everything wrong with a spec, one message per problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid KafkaCluster: {}", .0.join("; "))]
pub struct InvalidSpec(pub Vec<String>);

/// A validated `KafkaCluster`: what the builders need, nothing optional left to guess.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedCluster {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// Controller owner reference to put on every built object.
    pub owner: OwnerReference,
    /// Number of brokers.
    pub replicas: i32,
    /// Broker image.
    pub image: String,
    /// Size of each broker volume.
    pub storage_size: Quantity,
    /// StorageClass of the volumes (`None`: cluster default).
    pub storage_class: Option<String>,
    /// Delete claims of brokers removed by a scale-down.
    pub delete_claims_on_scale_down: bool,
    /// Broker container resources.
    pub resources: Option<ResourceRequirements>,
    /// `spec.config` (checked: keys safe for a properties file, no operator-owned key).
    pub config: BTreeMap<String, String>,
    /// Pod extras.
    pub pod_template: PodTemplate,
    /// Kafka cluster id.
    pub cluster_id: String,
    /// The listeners (checked: exactly one internal, at most one forwarding, unique names
    /// and ports), in spec order.
    pub listeners: Vec<Listener>,
}

/// A checked listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Name in the resource, also the container and Service port name (`local`).
    pub name: String,
    /// Kafka's listener name: the name in upper case (`LOCAL`).
    pub kafka_name: String,
    /// Type.
    pub type_: ListenerType,
    /// Container port.
    pub port: i32,
    /// Forwarding: the address every broker advertises (`advertisedHost`, default
    /// `localhost`, and `advertisedPort`, default `port`). Unused by the other types.
    pub advertised_host: String,
    /// See `advertised_host`.
    pub advertised_port: i32,
}

impl ValidatedCluster {
    /// The internal listener (validation guarantees exactly one).
    pub fn internal_listener(&self) -> &Listener {
        self.listeners
            .iter()
            .find(|l| l.type_ == ListenerType::Internal)
            .expect("validated: one internal listener")
    }

    /// The forwarding listener, if any.
    pub fn forwarding_listener(&self) -> Option<&Listener> {
        self.listeners
            .iter()
            .find(|l| l.type_ == ListenerType::Forwarding)
    }

    /// The nodePort and loadBalancer listeners.
    pub fn external_listeners(&self) -> impl Iterator<Item = &Listener> {
        self.listeners.iter().filter(|l| l.type_.is_external())
    }
}

/// The listeners of a cluster without `spec.listeners`: `local` (forwarding, 9092) and
/// `internal` (9093).
pub fn default_listeners() -> Vec<ListenerSpec> {
    vec![
        ListenerSpec {
            name: "local".into(),
            type_: ListenerType::Forwarding,
            port: 9092,
            advertised_host: None,
            advertised_port: None,
        },
        ListenerSpec {
            name: "internal".into(),
            type_: ListenerType::Internal,
            port: 9093,
            advertised_host: None,
            advertised_port: None,
        },
    ]
}

/// Longest Kubernetes object name derived from a listener (Service names are DNS labels).
const MAX_SERVICE_NAME_LEN: usize = 63;

/// Check the listeners; problems are pushed to `problems`.
fn validate_listeners(
    cluster: &str,
    replicas: i32,
    specs: &[ListenerSpec],
    problems: &mut Vec<String>,
) -> Vec<Listener> {
    use std::collections::BTreeSet;
    let mut names = BTreeSet::new();
    let mut ports = BTreeSet::new();
    let count = |t: ListenerType| specs.iter().filter(|l| l.type_ == t).count();
    if count(ListenerType::Internal) != 1 {
        problems.push(format!(
            "spec.listeners must have exactly one listener of type internal, found {}",
            count(ListenerType::Internal)
        ));
    }
    if count(ListenerType::Forwarding) > 1 {
        problems.push(format!(
            "spec.listeners may have at most one listener of type forwarding, found {}",
            count(ListenerType::Forwarding)
        ));
    }
    let max_ordinal_digits = (replicas.max(1) - 1).to_string().len();
    for l in specs {
        let name = &l.name;
        if !is_port_name(name) {
            problems.push(format!(
                "listener name `{name}` must be 1-15 lowercase letters, digits and '-', starting with a letter, \
                 not ending with '-' and without '--'"
            ));
        } else if name == "http" {
            problems.push("listener name `http` is taken by the HTTP side port".to_string());
        }
        if !names.insert(name.clone()) {
            problems.push(format!("listener name `{name}` is used twice"));
        }
        if !(1..=65535).contains(&l.port) {
            problems.push(format!(
                "listener `{name}`: port {} is not between 1 and 65535",
                l.port
            ));
        } else if l.port == crate::builders::HTTP_PORT {
            problems.push(format!(
                "listener `{name}`: port {} is the HTTP side port",
                l.port
            ));
        }
        if !ports.insert(l.port) {
            problems.push(format!("listener port {} is used twice", l.port));
        }
        if l.type_ != ListenerType::Forwarding
            && (l.advertised_host.is_some() || l.advertised_port.is_some())
        {
            problems.push(format!(
                "listener `{name}`: advertisedHost and advertisedPort apply to the forwarding listener only"
            ));
        }
        if let Some(host) = &l.advertised_host {
            if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == ',' || c == '/')
            {
                problems.push(format!(
                    "listener `{name}`: advertisedHost `{host}` is not a host name or address"
                ));
            }
        }
        if let Some(port) = l.advertised_port {
            if !(1..=65535).contains(&port) {
                problems.push(format!(
                    "listener `{name}`: advertisedPort {port} is not between 1 and 65535"
                ));
            }
        }
        if l.type_.is_external() {
            // `<cluster>-kafka-<ordinal>-<listener>` and `<cluster>-kafka-<listener>-bootstrap`.
            let per_broker = cluster.len() + "-kafka-".len() + max_ordinal_digits + 1 + name.len();
            let bootstrap = cluster.len() + "-kafka-".len() + name.len() + "-bootstrap".len();
            if per_broker.max(bootstrap) > MAX_SERVICE_NAME_LEN {
                problems.push(format!(
                    "listener `{name}`: its Service names (`{cluster}-kafka-<ordinal>-{name}`, \
                     `{cluster}-kafka-{name}-bootstrap`) would be longer than {MAX_SERVICE_NAME_LEN} characters: \
                     use a shorter listener or cluster name"
                ));
            }
        }
    }
    specs
        .iter()
        .map(|l| Listener {
            name: l.name.clone(),
            kafka_name: l.name.to_ascii_uppercase(),
            type_: l.type_,
            port: l.port,
            advertised_host: l
                .advertised_host
                .clone()
                .unwrap_or_else(|| "localhost".to_string()),
            advertised_port: l.advertised_port.unwrap_or(l.port),
        })
        .collect()
}

/// An IANA service name as Kubernetes wants for port names (lowercase here): 1-15
/// characters, letters, digits and '-', a letter first, no '-' at the end, no '--'.
fn is_port_name(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && !s.contains("--")
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Check `cluster` and build its view. `default_image` is used when `spec.image` is unset;
/// `cluster_id` is the id to configure (from status, or freshly generated).
pub fn validate_cluster(
    cluster: &KafkaCluster,
    default_image: &str,
    cluster_id: &str,
) -> Result<ValidatedCluster, InvalidSpec> {
    let mut problems = Vec::new();
    let name = cluster.name_any();
    if !is_dns_label(&name) || name.len() > MAX_CLUSTER_NAME_LEN {
        problems.push(format!(
            "metadata.name `{name}` must be a DNS label of at most {MAX_CLUSTER_NAME_LEN} characters \
             (lowercase letters, digits and '-', starting with a letter)"
        ));
    }
    let namespace = cluster.namespace().unwrap_or_default();
    if namespace.is_empty() {
        problems.push("metadata.namespace is not set".to_string());
    }
    let owner = cluster.controller_owner_ref(&()).map(|mut o| {
        o.block_owner_deletion = Some(true);
        o
    });
    if owner.is_none() {
        problems.push("metadata.uid is not set".to_string());
    }
    let spec = &cluster.spec;
    if spec.replicas < 0 {
        problems.push(format!("spec.replicas must be >= 0, got {}", spec.replicas));
    }
    if !is_quantity(&spec.storage.size.0) {
        problems.push(format!(
            "spec.storage.size `{}` is not a positive quantity such as 10Gi",
            spec.storage.size.0
        ));
    }
    if let Some(class) = &spec.storage.storage_class_name {
        if class.is_empty() {
            problems.push("spec.storage.storageClassName is empty".to_string());
        }
    }
    let image = spec
        .image
        .clone()
        .unwrap_or_else(|| default_image.to_string());
    if image.trim().is_empty() || image.chars().any(char::is_whitespace) {
        problems.push(format!("image `{image}` is not a valid image reference"));
    }
    for (key, value) in &spec.config {
        if OPERATOR_OWNED_CONFIG_KEYS.contains(&key.as_str()) {
            problems.push(format!(
                "spec.config may not set `{key}`: the operator sets it"
            ));
        } else if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            problems.push(format!(
                "spec.config key `{key}` may only contain ASCII letters, digits, '.', '_' and '-'"
            ));
        }
        if value.contains(['\n', '\r']) {
            problems.push(format!(
                "spec.config value of `{key}` contains a line break"
            ));
        }
    }
    let listener_specs = spec.listeners.clone().unwrap_or_else(default_listeners);
    let listeners = validate_listeners(&name, spec.replicas, &listener_specs, &mut problems);
    if cluster_id.len() != 22 {
        problems.push(format!("cluster id `{cluster_id}` is not 22 characters"));
    }
    match (owner, problems.is_empty()) {
        (Some(owner), true) => Ok(ValidatedCluster {
            name,
            namespace,
            owner,
            replicas: spec.replicas,
            image,
            storage_size: spec.storage.size.clone(),
            storage_class: spec.storage.storage_class_name.clone(),
            delete_claims_on_scale_down: spec.storage.delete_claims_on_scale_down,
            resources: spec.resources.clone(),
            config: spec.config.clone(),
            pod_template: spec.pod_template.clone().unwrap_or_default(),
            cluster_id: cluster_id.to_string(),
            listeners,
        }),
        _ => Err(InvalidSpec(problems)),
    }
}

/// RFC 1035 label: what Service names need.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// A positive Kubernetes quantity: a decimal number with an optional binary or decimal SI
/// suffix or exponent (`10Gi`, `500M`, `1e9`, `1073741824`).
fn is_quantity(s: &str) -> bool {
    let s = s.strip_prefix('+').unwrap_or(s);
    let digits_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(digits_end);
    let valid_number = !number.is_empty()
        && number != "."
        && number.matches('.').count() <= 1
        && number.chars().any(|c| c != '0' && c != '.');
    let valid_suffix = matches!(
        suffix,
        "" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" | "k" | "M" | "G" | "T" | "P" | "E"
    ) || suffix.strip_prefix(['e', 'E']).is_some_and(|exp| {
        let exp = exp.strip_prefix(['+', '-']).unwrap_or(exp);
        !exp.is_empty() && exp.chars().all(|c| c.is_ascii_digit())
    });
    valid_number && valid_suffix
}

/// A new Kafka cluster id: a random UUID as 22 characters of URL-safe base64 (no padding),
/// the form Kafka's `kafka-storage random-uuid` prints.
pub fn new_cluster_id() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) const UID: &str = "6f0c2c1e-5b7a-4d7e-9a51-3f1e2d4c5b6a";
    pub(crate) const CLUSTER_ID: &str = "MkU3OEVBNTcwNTJENDM2Qk";

    /// A `KafkaCluster` as the API server would return it, with `spec` as given.
    pub(crate) fn cluster(spec: serde_json::Value) -> KafkaCluster {
        serde_json::from_value(json!({
            "apiVersion": "kafka.sluice.dev/v1alpha1",
            "kind": "KafkaCluster",
            "metadata": {"name": "demo", "namespace": "ns", "uid": UID, "generation": 1},
            "spec": spec,
        }))
        .expect("valid KafkaCluster")
    }

    #[test]
    fn minimal_spec_gets_defaults() {
        let kc = cluster(json!({"replicas": 3, "storage": {"size": "10Gi"}}));
        let view = validate_cluster(&kc, "sluice:test", CLUSTER_ID).expect("valid");
        assert_eq!(view.name, "demo");
        assert_eq!(view.namespace, "ns");
        assert_eq!(view.image, "sluice:test");
        assert_eq!(view.replicas, 3);
        assert_eq!(view.storage_size, Quantity("10Gi".into()));
        assert_eq!(view.storage_class, None);
        assert!(!view.delete_claims_on_scale_down);
        assert_eq!(view.pod_template, PodTemplate::default());
        assert_eq!(view.owner.kind, "KafkaCluster");
        assert_eq!(view.owner.api_version, "kafka.sluice.dev/v1alpha1");
        assert_eq!(view.owner.uid, UID);
        assert_eq!(view.owner.controller, Some(true));
        assert_eq!(view.owner.block_owner_deletion, Some(true));
    }

    #[test]
    fn every_problem_is_reported() {
        let mut kc = cluster(json!({
            "replicas": -1,
            "image": "bad image",
            "storage": {"size": "ten gigs", "storageClassName": ""},
            "config": {"log.dirs": "/x", "bad key": "v", "ok.key": "line\nbreak"},
        }));
        kc.metadata.name = Some("Demo_Cluster".into());
        kc.metadata.uid = None;
        let err = validate_cluster(&kc, "sluice:test", "short").unwrap_err();
        let text = err.to_string();
        for expected in [
            "metadata.name `Demo_Cluster` must be a DNS label",
            "metadata.uid is not set",
            "spec.replicas must be >= 0, got -1",
            "spec.storage.size `ten gigs`",
            "storageClassName is empty",
            "image `bad image`",
            "may not set `log.dirs`",
            "key `bad key` may only contain",
            "value of `ok.key` contains a line break",
            "cluster id `short`",
        ] {
            assert!(text.contains(expected), "missing `{expected}` in {text}");
        }
        assert_eq!(err.0.len(), 10);
    }

    #[test]
    fn default_listeners_are_local_forwarding_and_internal() {
        let kc = cluster(json!({"replicas": 3, "storage": {"size": "10Gi"}}));
        let view = validate_cluster(&kc, "i", CLUSTER_ID).expect("valid");
        let summary: Vec<_> = view
            .listeners
            .iter()
            .map(|l| {
                (
                    l.name.as_str(),
                    l.kafka_name.as_str(),
                    l.type_,
                    l.port,
                    l.advertised_host.as_str(),
                    l.advertised_port,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "local",
                    "LOCAL",
                    ListenerType::Forwarding,
                    9092,
                    "localhost",
                    9092
                ),
                (
                    "internal",
                    "INTERNAL",
                    ListenerType::Internal,
                    9093,
                    "localhost",
                    9093
                ),
            ]
        );
        assert_eq!(view.internal_listener().name, "internal");
        assert_eq!(view.forwarding_listener().map(|l| l.port), Some(9092));
        assert_eq!(view.external_listeners().count(), 0);
    }

    #[test]
    fn forwarding_advertises_what_it_is_told() {
        let kc = cluster(
            json!({"replicas": 1, "storage": {"size": "1Gi"}, "listeners": [
                {"name": "pf", "type": "forwarding", "port": 9092, "advertisedHost": "kafka.local", "advertisedPort": 19092},
                {"name": "internal", "type": "internal", "port": 9093},
            ]}),
        );
        let view = validate_cluster(&kc, "i", CLUSTER_ID).expect("valid");
        let f = view.forwarding_listener().expect("forwarding");
        assert_eq!(
            (
                f.kafka_name.as_str(),
                f.advertised_host.as_str(),
                f.advertised_port
            ),
            ("PF", "kafka.local", 19092)
        );
    }

    #[test]
    fn every_listener_problem_is_reported() {
        let kc = cluster(
            json!({"replicas": 3, "storage": {"size": "1Gi"}, "listeners": [
                {"name": "a", "type": "forwarding", "port": 9092},
                {"name": "b", "type": "forwarding", "port": 9092},
                {"name": "Bad_Name", "type": "nodePort", "port": 9644},
                {"name": "http", "type": "nodePort", "port": 70000},
                {"name": "e", "type": "nodePort", "port": 9100, "advertisedHost": "x"},
                {"name": "e", "type": "loadBalancer", "port": 9101},
                {"name": "f", "type": "forwarding", "port": 9102, "advertisedHost": "a b", "advertisedPort": 0},
            ]}),
        );
        let text = validate_cluster(&kc, "i", CLUSTER_ID)
            .unwrap_err()
            .to_string();
        for expected in [
            "exactly one listener of type internal, found 0",
            "at most one listener of type forwarding, found 3",
            "listener name `Bad_Name` must be",
            "listener `Bad_Name`: port 9644 is the HTTP side port",
            "listener name `http` is taken",
            "listener `http`: port 70000 is not between 1 and 65535",
            "listener port 9092 is used twice",
            "listener name `e` is used twice",
            "listener `e`: advertisedHost and advertisedPort apply to the forwarding listener only",
            "listener `f`: advertisedHost `a b` is not a host name",
            "listener `f`: advertisedPort 0 is not between 1 and 65535",
        ] {
            assert!(text.contains(expected), "missing `{expected}` in {text}");
        }
    }

    #[test]
    fn external_service_names_must_fit() {
        let spec = |listener: &str| {
            json!({"replicas": 12, "storage": {"size": "1Gi"}, "listeners": [
                {"name": "internal", "type": "internal", "port": 9093},
                {"name": listener, "type": "nodePort", "port": 9094},
            ]})
        };
        let mut kc = cluster(spec("ext"));
        kc.metadata.name = Some("a".repeat(40));
        // a*40-kafka-ext-bootstrap = 40 + 7 + 3 + 10 = 60
        assert!(validate_cluster(&kc, "i", CLUSTER_ID).is_ok());
        let mut kc = cluster(spec("external"));
        kc.metadata.name = Some("a".repeat(40));
        let err = validate_cluster(&kc, "i", CLUSTER_ID).unwrap_err();
        assert!(
            err.to_string()
                .contains("would be longer than 63 characters"),
            "{err}"
        );
    }

    #[test]
    fn long_names_are_refused() {
        let mut kc = cluster(json!({"replicas": 1, "storage": {"size": "1Gi"}}));
        kc.metadata.name = Some("a".repeat(MAX_CLUSTER_NAME_LEN));
        assert!(validate_cluster(&kc, "i", CLUSTER_ID).is_ok());
        kc.metadata.name = Some("a".repeat(MAX_CLUSTER_NAME_LEN + 1));
        assert!(validate_cluster(&kc, "i", CLUSTER_ID).is_err());
    }

    #[test]
    fn quantities() {
        for ok in ["10Gi", "1", "500M", "1.5Gi", "+2Ti", "1e9", "3E+2", "0.5"] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in [
            "", "Gi", "0", "0Gi", "-1Gi", "1GB", "1..2", ".", "1 Gi", "1e", "ten",
        ] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn cluster_ids_are_22_url_safe_chars_and_random() {
        let a = new_cluster_id();
        let b = new_cluster_id();
        assert_eq!(a.len(), 22);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_ne!(a, b);
    }
}
