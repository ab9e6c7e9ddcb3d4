//! `sluice-operator render`: the objects the operator would apply for `KafkaCluster`
//! manifests, as multi-document YAML, without a cluster. Used to review changes and to
//! validate the builders' output against the Kubernetes schemas offline.

use serde::Deserialize;

use crate::builders::{build_all, external_services, ExternalAddresses};
use crate::crd::KafkaCluster;
use crate::validate::{new_cluster_id, validate_cluster, InvalidSpec};

/// Stands in for `metadata.uid` (assigned by the API server) in rendered owner references.
pub const PLACEHOLDER_UID: &str = "00000000-0000-0000-0000-000000000000";

/// Settings the API server or the operator would otherwise supply.
#[derive(Debug, Clone)]
pub struct RenderOptions {
    /// Namespace for resources without one.
    pub namespace: String,
    /// Broker image when `spec.image` is unset.
    pub default_image: String,
    /// Cluster id when `status.clusterId` is unset (a new random one when `None`).
    pub cluster_id: Option<String>,
}

/// Why rendering failed.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The input is not YAML, or a KafkaCluster document does not match the schema.
    #[error("document {index}: {source}")]
    Parse {
        /// 1-based document number.
        index: usize,
        /// The parse error.
        source: yaml_serde::Error,
    },
    /// No document is a KafkaCluster.
    #[error("no KafkaCluster (apiVersion kafka.sluice.dev/v1alpha1) in the input")]
    NoCluster,
    /// A KafkaCluster fails validation.
    #[error("KafkaCluster {name}: {source}")]
    Invalid {
        /// Its name.
        name: String,
        /// The problems.
        source: InvalidSpec,
    },
    /// Output serialization failed.
    #[error("cannot serialize: {0}")]
    Serialize(#[from] yaml_serde::Error),
}

/// Render every `KafkaCluster` in the multi-document YAML `input`; other documents are skipped.
pub fn render(input: &str, options: &RenderOptions) -> Result<String, RenderError> {
    let mut out = String::new();
    let mut found = false;
    for (i, doc) in yaml_serde::Deserializer::from_str(input).enumerate() {
        let index = i + 1;
        let value = yaml_serde::Value::deserialize(doc)
            .map_err(|source| RenderError::Parse { index, source })?;
        let is_cluster = value.get("kind").and_then(|k| k.as_str()) == Some("KafkaCluster")
            && value.get("apiVersion").and_then(|k| k.as_str())
                == Some("kafka.sluice.dev/v1alpha1");
        if !is_cluster {
            continue;
        }
        found = true;
        let mut cluster: KafkaCluster =
            yaml_serde::from_value(value).map_err(|source| RenderError::Parse { index, source })?;
        let meta = &mut cluster.metadata;
        meta.namespace
            .get_or_insert_with(|| options.namespace.clone());
        meta.uid.get_or_insert_with(|| PLACEHOLDER_UID.to_string());
        let cluster_id = cluster
            .status
            .as_ref()
            .and_then(|s| s.cluster_id.clone())
            .or_else(|| options.cluster_id.clone())
            .unwrap_or_else(new_cluster_id);
        let view =
            validate_cluster(&cluster, &options.default_image, &cluster_id).map_err(|source| {
                RenderError::Invalid {
                    name: cluster.metadata.name.clone().unwrap_or_default(),
                    source,
                }
            })?;
        // No Service exists here: nodePorts and load-balancer addresses are not known, so
        // the brokers' files leave external listeners out (the operator fills them in).
        for svc in external_services(&view) {
            out.push_str(&document(&svc)?);
        }
        let objects = build_all(&view, &ExternalAddresses::default());
        out.push_str(&document(&objects.config_map)?);
        out.push_str(&document(&objects.headless_service)?);
        out.push_str(&document(&objects.bootstrap_service)?);
        out.push_str(&document(&objects.statefulset)?);
        out.push_str(&document(&objects.pod_disruption_budget)?);
    }
    if !found {
        return Err(RenderError::NoCluster);
    }
    Ok(out)
}

fn document<T: serde::Serialize>(object: &T) -> Result<String, yaml_serde::Error> {
    Ok(format!("---\n{}", yaml_serde::to_string(object)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INPUT: &str = r#"
apiVersion: kafka.sluice.dev/v1alpha1
kind: KafkaTopic
metadata:
  name: orders
spec:
  cluster: demo
  partitions: 3
  replicas: 3
---
apiVersion: kafka.sluice.dev/v1alpha1
kind: KafkaCluster
metadata:
  name: demo
spec:
  replicas: 3
  storage:
    size: 10Gi
  config:
    min.insync.replicas: "2"
"#;

    fn options() -> RenderOptions {
        RenderOptions {
            namespace: "kafka".into(),
            default_image: "sluice:test".into(),
            cluster_id: Some("MkU3OEVBNTcwNTJENDM2Qk".into()),
        }
    }

    #[test]
    fn renders_every_object_with_kind_and_no_nulls() {
        let out = render(INPUT, &options()).expect("renders");
        let docs: Vec<yaml_serde::Value> = yaml_serde::Deserializer::from_str(&out)
            .map(|d| yaml_serde::Value::deserialize(d).expect("yaml"))
            .collect();
        let kinds: Vec<_> = docs
            .iter()
            .map(|d| {
                (
                    d["apiVersion"].as_str().unwrap_or(""),
                    d["kind"].as_str().unwrap_or(""),
                    d["metadata"]["name"].as_str().unwrap_or(""),
                    d["metadata"]["namespace"].as_str().unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ("v1", "ConfigMap", "demo-kafka-config", "kafka"),
                ("v1", "Service", "demo-kafka-brokers", "kafka"),
                ("v1", "Service", "demo-kafka-bootstrap", "kafka"),
                ("apps/v1", "StatefulSet", "demo-kafka", "kafka"),
                ("policy/v1", "PodDisruptionBudget", "demo-kafka", "kafka"),
            ]
        );
        assert!(!out.contains(": null"), "no nulls in\n{out}");
        assert!(!out.contains("~"), "no nulls in\n{out}");
        assert!(out.contains("cluster.id=MkU3OEVBNTcwNTJENDM2Qk"));
        assert!(out.contains(PLACEHOLDER_UID));
    }

    #[test]
    fn external_listeners_render_their_services_first() {
        let input = INPUT.replace(
            "  config:\n",
            "  listeners:\n  - {name: internal, type: internal, port: 9093}\n  - {name: ext, type: nodePort, port: 9094}\n  config:\n",
        );
        let out = render(&input, &options()).expect("renders");
        let names: Vec<String> = yaml_serde::Deserializer::from_str(&out)
            .map(|d| {
                let v = yaml_serde::Value::deserialize(d).expect("yaml");
                v["metadata"]["name"].as_str().unwrap_or("").to_string()
            })
            .collect();
        assert_eq!(
            &names[..5],
            [
                "demo-kafka-0-ext",
                "demo-kafka-1-ext",
                "demo-kafka-2-ext",
                "demo-kafka-ext-bootstrap",
                "demo-kafka-config"
            ]
        );
    }

    #[test]
    fn errors_are_clear() {
        assert!(matches!(
            render("kind: ConfigMap\napiVersion: v1\n", &options()),
            Err(RenderError::NoCluster)
        ));
        let bad = "apiVersion: kafka.sluice.dev/v1alpha1\nkind: KafkaCluster\nmetadata: {name: demo}\nspec: {replicas: 1}\n";
        let err = render(bad, &options()).unwrap_err();
        assert!(err.to_string().starts_with("document 1:"), "{err}");
        assert!(err.to_string().contains("storage"), "{err}");
        let invalid = "apiVersion: kafka.sluice.dev/v1alpha1\nkind: KafkaCluster\nmetadata: {name: demo}\nspec: {replicas: 1, storage: {size: lots}}\n";
        let err = render(invalid, &options()).unwrap_err();
        assert!(
            err.to_string()
                .contains("KafkaCluster demo: invalid KafkaCluster: spec.storage.size `lots`"),
            "{err}"
        );
        assert!(render("a: [", &options()).is_err());
    }
}
