//! The committed CRD files match the Rust types, and the CRDs' CEL rules accept and
//! refuse what they should (evaluated client-side with kube-cel, the same rules the API
//! server runs).

use std::path::Path;

use kube::core::cel::{validate_cel, validate_cel_update, ValidationErrors};
use serde_json::json;
use sluice_operator::crd::{crd_files, KafkaCluster, KafkaTopic, CRD_DIRS};

const REGENERATE: &str = "cargo run -p sluice-operator -- crds --write";

#[test]
fn committed_crds_match_the_types() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let files = crd_files().expect("CRDs serialize");
    assert_eq!(files.len(), 2);
    let mut stale = Vec::new();
    for dir in CRD_DIRS {
        for f in &files {
            let path = root.join(dir).join(&f.file_name);
            match std::fs::read_to_string(&path) {
                Ok(committed) if committed == f.yaml => {}
                Ok(_) => stale.push(format!("{} differs", path.display())),
                Err(e) => stale.push(format!("{}: {e}", path.display())),
            }
        }
    }
    assert!(
        stale.is_empty(),
        "CRD files are out of date:\n  {}\nregenerate with `{REGENERATE}`",
        stale.join("\n  ")
    );
}

#[test]
fn crds_carry_names_subresources_and_keep_annotation() {
    let files = crd_files().expect("CRDs serialize");
    let names: Vec<_> = files.iter().map(|f| f.file_name.as_str()).collect();
    assert_eq!(
        names,
        [
            "kafkaclusters.kafka.sluice.dev.yaml",
            "kafkatopics.kafka.sluice.dev.yaml"
        ]
    );
    for crd in sluice_operator::crd::crds() {
        let keep = crd
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("helm.sh/resource-policy"));
        assert_eq!(keep.map(String::as_str), Some("keep"));
        assert_eq!(crd.spec.group, "kafka.sluice.dev");
        assert_eq!(crd.spec.scope, "Namespaced");
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        let sub = v.subresources.as_ref().expect("subresources");
        assert!(sub.status.is_some(), "status subresource");
        let short = crd.spec.names.short_names.clone().unwrap_or_default();
        let columns: Vec<_> = v
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        match crd.spec.names.kind.as_str() {
            "KafkaCluster" => {
                assert_eq!(short, ["kc"]);
                let scale = sub.scale.as_ref().expect("scale subresource");
                assert_eq!(scale.spec_replicas_path, ".spec.replicas");
                assert_eq!(scale.status_replicas_path, ".status.replicas");
                assert_eq!(
                    scale.label_selector_path.as_deref(),
                    Some(".status.labelSelector")
                );
                assert_eq!(columns, ["Replicas", "Ready", "Status", "Bootstrap", "Age"]);
            }
            "KafkaTopic" => {
                assert_eq!(short, ["kt"]);
                assert!(sub.scale.is_none());
                assert_eq!(
                    columns,
                    ["Cluster", "Topic", "Partitions", "Replicas", "Ready", "Age"]
                );
            }
            other => panic!("unexpected kind {other}"),
        }
    }
}

fn topic(spec: serde_json::Value) -> KafkaTopic {
    serde_json::from_value(json!({
        "apiVersion": "kafka.sluice.dev/v1alpha1",
        "kind": "KafkaTopic",
        "metadata": {"name": "orders", "namespace": "ns"},
        "spec": spec,
    }))
    .expect("valid KafkaTopic")
}

fn cluster(spec: serde_json::Value) -> KafkaCluster {
    serde_json::from_value(json!({
        "apiVersion": "kafka.sluice.dev/v1alpha1",
        "kind": "KafkaCluster",
        "metadata": {"name": "demo", "namespace": "ns"},
        "spec": spec,
    }))
    .expect("valid KafkaCluster")
}

fn messages(result: Result<(), ValidationErrors>) -> Vec<String> {
    match result {
        Ok(()) => Vec::new(),
        Err(errors) => errors
            .as_slice()
            .iter()
            .map(|e| e.message.clone())
            .collect(),
    }
}

fn topic_spec(partitions: i32) -> serde_json::Value {
    json!({"cluster": "demo", "partitions": partitions, "replicas": 3})
}

#[test]
fn topic_partitions_may_grow_but_never_shrink() {
    let old = topic(topic_spec(6));
    assert_eq!(messages(validate_cel(&old)), Vec::<String>::new());
    assert_eq!(
        messages(validate_cel_update(&topic(topic_spec(8)), &old)),
        Vec::<String>::new()
    );
    assert_eq!(
        messages(validate_cel_update(&topic(topic_spec(6)), &old)),
        Vec::<String>::new()
    );
    assert_eq!(
        messages(validate_cel_update(&topic(topic_spec(3)), &old)),
        ["partitions cannot be decreased"]
    );
}

#[test]
fn topic_partitions_and_replicas_must_be_positive() {
    assert_eq!(
        messages(validate_cel(&topic(topic_spec(0)))),
        ["partitions must be >= 1"]
    );
    let spec = json!({"cluster": "demo", "partitions": 1, "replicas": 0});
    assert_eq!(
        messages(validate_cel(&topic(spec))),
        ["replicas must be between 1 and 32767"]
    );
    let spec = json!({"cluster": "demo", "partitions": 1, "replicas": 40000});
    assert_eq!(
        messages(validate_cel(&topic(spec))),
        ["replicas must be between 1 and 32767"]
    );
}

#[test]
fn topic_names_follow_kafka_rules() {
    let with_name = |name: &str| {
        topic(json!({"cluster": "demo", "topicName": name, "partitions": 1, "replicas": 1}))
    };
    for good in ["orders", "a.b_c-D9", "x", &"t".repeat(249)] {
        assert_eq!(
            messages(validate_cel(&with_name(good))),
            Vec::<String>::new(),
            "{good}"
        );
    }
    for bad in ["with space", "sl/ash", "ünï", "a:b"] {
        assert_eq!(
            messages(validate_cel(&with_name(bad))),
            ["topicName may only contain ASCII letters, digits, '.', '_' and '-' (1 to 249 characters)"],
            "{bad}"
        );
    }
    for bad in [".", ".."] {
        assert_eq!(
            messages(validate_cel(&with_name(bad))),
            ["topicName may not be '.' or '..'"],
            "{bad}"
        );
    }
}

#[test]
fn topic_cluster_and_name_are_immutable() {
    let old = topic(json!({"cluster": "demo", "topicName": "a", "partitions": 1, "replicas": 1}));
    let moved =
        topic(json!({"cluster": "other", "topicName": "a", "partitions": 1, "replicas": 1}));
    assert_eq!(
        messages(validate_cel_update(&moved, &old)),
        ["spec.cluster is immutable"]
    );
    let renamed =
        topic(json!({"cluster": "demo", "topicName": "b", "partitions": 1, "replicas": 1}));
    assert_eq!(
        messages(validate_cel_update(&renamed, &old)),
        ["spec.topicName is immutable"]
    );
    let unset = topic(json!({"cluster": "demo", "partitions": 1, "replicas": 1}));
    assert_eq!(
        messages(validate_cel_update(&unset, &old)),
        ["spec.topicName is immutable"]
    );
}

fn cluster_spec() -> serde_json::Value {
    json!({"replicas": 3, "storage": {"size": "10Gi"}})
}

#[test]
fn cluster_replicas_non_negative_and_zero_allowed() {
    assert_eq!(
        messages(validate_cel(&cluster(cluster_spec()))),
        Vec::<String>::new()
    );
    let zero = json!({"replicas": 0, "storage": {"size": "10Gi"}});
    assert_eq!(messages(validate_cel(&cluster(zero))), Vec::<String>::new());
    let negative = json!({"replicas": -1, "storage": {"size": "10Gi"}});
    assert_eq!(
        messages(validate_cel(&cluster(negative))),
        ["replicas must be >= 0"]
    );
}

#[test]
fn cluster_names_fit_derived_object_names() {
    let mut kc = cluster(cluster_spec());
    kc.metadata.name = Some("a".repeat(46));
    assert_eq!(messages(validate_cel(&kc)), Vec::<String>::new());
    kc.metadata.name = Some("a".repeat(47));
    assert_eq!(
        messages(validate_cel(&kc)),
        ["metadata.name may be at most 46 characters (pod and Service names derive from it)"]
    );
}

#[test]
fn cluster_config_may_not_set_operator_keys() {
    let ok = json!({"replicas": 1, "storage": {"size": "1Gi"},
                    "config": {"min.insync.replicas": "2"}});
    assert_eq!(messages(validate_cel(&cluster(ok))), Vec::<String>::new());
    for key in ["listeners", "log.dirs", "node.id", "cluster.id"] {
        let bad = json!({"replicas": 1, "storage": {"size": "1Gi"}, "config": {key: "x"}});
        let msgs = messages(validate_cel(&cluster(bad)));
        assert_eq!(msgs.len(), 1, "{key}: {msgs:?}");
        assert!(msgs[0].starts_with("config may not set listeners"), "{key}");
    }
}

#[test]
fn cluster_storage_is_immutable() {
    let old = cluster(json!({"replicas": 1, "storage": {"size": "1Gi"}}));
    let bigger = cluster(json!({"replicas": 1, "storage": {"size": "2Gi"}}));
    assert_eq!(
        messages(validate_cel_update(&bigger, &old)),
        ["storage.size cannot be changed after creation"]
    );
    let classed =
        cluster(json!({"replicas": 1, "storage": {"size": "1Gi", "storageClassName": "fast"}}));
    assert_eq!(
        messages(validate_cel_update(&classed, &old)),
        ["storage.storageClassName cannot be changed after creation"]
    );
    let scaled = cluster(json!({"replicas": 5,
        "storage": {"size": "1Gi", "deleteClaimsOnScaleDown": true}}));
    assert_eq!(
        messages(validate_cel_update(&scaled, &old)),
        Vec::<String>::new()
    );
}

fn with_listeners(listeners: serde_json::Value) -> KafkaCluster {
    cluster(json!({"replicas": 3, "storage": {"size": "1Gi"}, "listeners": listeners}))
}

#[test]
fn cluster_listeners_accept_the_documented_shapes() {
    for ok in [
        json!([{"name": "internal", "type": "internal", "port": 9093}]),
        json!([
            {"name": "local", "type": "forwarding", "port": 9092, "advertisedHost": "localhost", "advertisedPort": 19092},
            {"name": "internal", "type": "internal", "port": 9093},
            {"name": "external", "type": "nodePort", "port": 9094},
            {"name": "lb-1", "type": "loadBalancer", "port": 9095},
        ]),
    ] {
        assert_eq!(
            messages(validate_cel(&with_listeners(ok.clone()))),
            Vec::<String>::new(),
            "{ok}"
        );
    }
}

#[test]
fn cluster_listeners_are_refused_by_the_api_server_rules() {
    let cases = [
        (
            json!([{"name": "local", "type": "forwarding", "port": 9092}]),
            "listeners must have exactly one listener of type internal",
        ),
        (
            json!([
                {"name": "a", "type": "internal", "port": 9093},
                {"name": "b", "type": "internal", "port": 9094},
            ]),
            "listeners must have exactly one listener of type internal",
        ),
        (
            json!([
                {"name": "i", "type": "internal", "port": 9093},
                {"name": "a", "type": "forwarding", "port": 9092},
                {"name": "b", "type": "forwarding", "port": 9094},
            ]),
            "listeners may have at most one listener of type forwarding",
        ),
        (
            json!([
                {"name": "i", "type": "internal", "port": 9093},
                {"name": "i", "type": "nodePort", "port": 9094},
            ]),
            "listener names must be unique",
        ),
        (
            json!([
                {"name": "i", "type": "internal", "port": 9093},
                {"name": "e", "type": "nodePort", "port": 9093},
            ]),
            "listener ports must be unique",
        ),
        (
            json!([{"name": "i", "type": "internal", "port": 9644}]),
            "listener port 9644 is the HTTP side port",
        ),
        (
            json!([{"name": "i", "type": "internal", "port": 70000}]),
            "listener port must be between 1 and 65535",
        ),
        (
            json!([{"name": "Internal", "type": "internal", "port": 9093}]),
            "listener name must be lowercase letters, digits and '-', starting with a letter and not ending with '-' (no '--')",
        ),
        (
            json!([{"name": "http", "type": "internal", "port": 9093}]),
            "listener name `http` is taken by the HTTP side port",
        ),
        (
            json!([{"name": "i", "type": "internal", "port": 9093, "advertisedPort": 1}]),
            "advertisedHost and advertisedPort apply to the forwarding listener only",
        ),
    ];
    for (listeners, expected) in cases {
        let msgs = messages(validate_cel(&with_listeners(listeners.clone())));
        assert!(
            msgs.iter().any(|m| m == expected),
            "{listeners}: {msgs:?} lacks {expected}"
        );
    }
}
