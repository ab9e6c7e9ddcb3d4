//! The brokers' StatefulSet.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile,
    SecurityContext, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{
    config_map_name, headless_service_name, labels, metadata, selector_labels, statefulset_name,
    BROKER_UID, CONFIG_FILE, CONFIG_HASH_ANNOTATION, CONFIG_MOUNT, DATA_MOUNT, HOST_IP_ENV,
    HTTP_PORT, TERMINATION_GRACE_SECONDS,
};
use crate::crd::ListenerType;
use crate::validate::ValidatedCluster;

/// Name of the broker container.
pub const CONTAINER_NAME: &str = "broker";
/// Name of the data volume claim template (PVCs are `data-<pod>`).
pub const DATA_VOLUME: &str = "data";

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_string(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn value_env(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: Some(value),
        ..Default::default()
    }
}

/// Per-pod settings: identity from the downward API, the HTTP side port's advertised address
/// from the pod's stable DNS name under the headless Service (the Kafka listeners' advertised
/// addresses are in `<pod>.properties`), and with a nodePort listener the node's IP, which
/// that file refers to as `${env:HOST_IP}`. `$(VAR)` references need the variable defined
/// earlier in the list.
fn env(view: &ValidatedCluster) -> Vec<EnvVar> {
    let host = format!(
        "$(POD_NAME).{}.$(POD_NAMESPACE).svc",
        headless_service_name(&view.name)
    );
    let mut env = vec![
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        field_env(
            "SLUICE_NODE_ID",
            "metadata.labels['apps.kubernetes.io/pod-index']",
        ),
        value_env(
            "SLUICE_ADVERTISED_HTTP_LISTENER",
            format!("{host}:{HTTP_PORT}"),
        ),
    ];
    if view
        .listeners
        .iter()
        .any(|l| l.type_ == ListenerType::NodePort)
    {
        env.push(field_env(HOST_IP_ENV, "status.hostIP"));
    }
    env
}

fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_string()),
        container_port: port,
        protocol: Some("TCP".to_string()),
        ..Default::default()
    }
}

fn http_probe(path: &str, period: i32, timeout: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String("http".to_string()),
            scheme: Some("HTTP".to_string()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(timeout),
        failure_threshold: Some(failures),
        ..Default::default()
    }
}

fn container(view: &ValidatedCluster) -> Container {
    Container {
        name: CONTAINER_NAME.to_string(),
        image: Some(view.image.clone()),
        image_pull_policy: Some("IfNotPresent".to_string()),
        command: Some(vec!["sluice-broker".to_string()]),
        // The shared file, then the broker's own (later files win); Kubernetes expands
        // $(POD_NAME).
        args: Some(vec![
            "--config".to_string(),
            format!("{CONFIG_MOUNT}/{CONFIG_FILE}"),
            "--config".to_string(),
            format!("{CONFIG_MOUNT}/$(POD_NAME).properties"),
        ]),
        ports: Some(
            view.listeners
                .iter()
                .map(|l| container_port(&l.name, l.port))
                .chain([container_port("http", HTTP_PORT)])
                .collect(),
        ),
        env: Some(env(view)),
        resources: view.resources.clone(),
        // Log recovery after an unclean stop may take a while: the startup probe gives
        // it up to 10 minutes before liveness applies.
        startup_probe: Some(http_probe("/healthz", 5, 3, 120)),
        liveness_probe: Some(http_probe("/healthz", 10, 5, 6)),
        readiness_probe: Some(http_probe("/readyz", 5, 3, 3)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(BROKER_UID),
            run_as_group: Some(BROKER_UID),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_string()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: DATA_VOLUME.to_string(),
                mount_path: DATA_MOUNT.to_string(),
                ..Default::default()
            },
            VolumeMount {
                name: "config".to_string(),
                mount_path: CONFIG_MOUNT.to_string(),
                read_only: Some(true),
                ..Default::default()
            },
            VolumeMount {
                name: "tmp".to_string(),
                mount_path: "/tmp".to_string(),
                ..Default::default()
            },
        ]),
        ..Default::default()
    }
}

fn pod_template(view: &ValidatedCluster, config_hash: &str) -> PodTemplateSpec {
    let extra = &view.pod_template;
    // User labels and annotations first, so the operator's own win on a clash.
    let mut pod_labels = extra.labels.clone();
    pod_labels.extend(labels(&view.name));
    let mut annotations = extra.annotations.clone();
    annotations.extend(BTreeMap::from([
        ("prometheus.io/scrape".to_string(), "true".to_string()),
        ("prometheus.io/port".to_string(), HTTP_PORT.to_string()),
        ("prometheus.io/path".to_string(), "/metrics".to_string()),
        (CONFIG_HASH_ANNOTATION.to_string(), config_hash.to_string()),
    ]));
    let non_empty = |m: &BTreeMap<String, String>| (!m.is_empty()).then(|| m.clone());
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(pod_labels),
            annotations: Some(annotations),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![container(view)],
            termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
            // Brokers do not talk to the Kubernetes API.
            automount_service_account_token: Some(false),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(BROKER_UID),
                run_as_group: Some(BROKER_UID),
                fs_group: Some(BROKER_UID),
                fs_group_change_policy: Some("OnRootMismatch".to_string()),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".to_string(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            volumes: Some(vec![
                Volume {
                    name: "config".to_string(),
                    config_map: Some(ConfigMapVolumeSource {
                        name: config_map_name(&view.name),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                Volume {
                    name: "tmp".to_string(),
                    empty_dir: Some(EmptyDirVolumeSource::default()),
                    ..Default::default()
                },
            ]),
            node_selector: non_empty(&extra.node_selector),
            affinity: extra.affinity.clone(),
            tolerations: (!extra.tolerations.is_empty()).then(|| extra.tolerations.clone()),
            topology_spread_constraints: (!extra.topology_spread_constraints.is_empty())
                .then(|| extra.topology_spread_constraints.clone()),
            priority_class_name: extra.priority_class_name.clone(),
            ..Default::default()
        }),
    }
}

fn data_claim(view: &ValidatedCluster) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.to_string()),
            labels: Some(selector_labels(&view.name)),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_string()]),
            storage_class_name: view.storage_class.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    view.storage_size.clone(),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The StatefulSet: `replicas` brokers, started in parallel, updated one at a time
/// (the rolling update waits for each pod's readiness), a claim per broker.
pub fn statefulset(view: &ValidatedCluster, config_hash: &str) -> StatefulSet {
    StatefulSet {
        metadata: metadata(view, statefulset_name(&view.name)),
        spec: Some(StatefulSetSpec {
            replicas: Some(view.replicas),
            service_name: Some(headless_service_name(&view.name)),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&view.name)),
                ..Default::default()
            },
            pod_management_policy: Some("Parallel".to_string()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".to_string()),
                ..Default::default()
            }),
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Retain".to_string()),
                    when_scaled: Some(
                        if view.delete_claims_on_scale_down {
                            "Delete"
                        } else {
                            "Retain"
                        }
                        .to_string(),
                    ),
                },
            ),
            template: pod_template(view, config_hash),
            volume_claim_templates: Some(vec![data_claim(view)]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use serde_json::json;

    use super::*;
    use crate::builders::test_support::{three_brokers, view};

    fn spec(sts: &StatefulSet) -> &StatefulSetSpec {
        sts.spec.as_ref().expect("spec")
    }

    fn pod(sts: &StatefulSet) -> &PodSpec {
        spec(sts).template.spec.as_ref().expect("pod spec")
    }

    fn env_map(c: &Container) -> BTreeMap<String, EnvVar> {
        c.env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.clone()))
            .collect()
    }

    #[test]
    fn statefulset_shape() {
        let sts = statefulset(&three_brokers(), "abc");
        assert_eq!(sts.metadata.name.as_deref(), Some("demo-kafka"));
        let s = spec(&sts);
        assert_eq!(s.replicas, Some(3));
        assert_eq!(s.service_name.as_deref(), Some("demo-kafka-brokers"));
        assert_eq!(s.selector.match_labels, Some(selector_labels("demo")));
        assert_eq!(s.pod_management_policy.as_deref(), Some("Parallel"));
        assert_eq!(
            s.update_strategy.as_ref().and_then(|u| u.type_.as_deref()),
            Some("RollingUpdate")
        );
        let retention = s
            .persistent_volume_claim_retention_policy
            .as_ref()
            .expect("retention");
        assert_eq!(retention.when_scaled.as_deref(), Some("Retain"));
        assert_eq!(retention.when_deleted.as_deref(), Some("Retain"));
        // Pod labels include the selector (the API server refuses a template that does not).
        let tmeta = s.template.metadata.as_ref().expect("template metadata");
        let tlabels = tmeta.labels.as_ref().expect("labels");
        for (k, v) in selector_labels("demo") {
            assert_eq!(tlabels.get(&k), Some(&v));
        }
    }

    #[test]
    fn volume_claims_from_storage() {
        let v = view(json!({"replicas": 2, "storage": {
            "size": "50Gi", "storageClassName": "fast", "deleteClaimsOnScaleDown": true}}));
        let sts = statefulset(&v, "h");
        let claims = spec(&sts).volume_claim_templates.as_ref().expect("claims");
        assert_eq!(claims.len(), 1);
        assert_eq!(claims[0].metadata.name.as_deref(), Some("data"));
        let cs = claims[0].spec.as_ref().expect("claim spec");
        assert_eq!(cs.access_modes, Some(vec!["ReadWriteOnce".to_string()]));
        assert_eq!(cs.storage_class_name.as_deref(), Some("fast"));
        let requests = cs
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .expect("requests");
        assert_eq!(requests["storage"], Quantity("50Gi".into()));
        assert_eq!(
            spec(&sts)
                .persistent_volume_claim_retention_policy
                .as_ref()
                .and_then(|r| r.when_scaled.as_deref()),
            Some("Delete")
        );
        let default_class = statefulset(&three_brokers(), "h");
        let claims = spec(&default_class)
            .volume_claim_templates
            .as_ref()
            .unwrap();
        assert_eq!(claims[0].spec.as_ref().unwrap().storage_class_name, None);
    }

    #[test]
    fn container_runs_the_broker_per_the_contract() {
        let sts = statefulset(&three_brokers(), "h");
        let p = pod(&sts);
        assert_eq!(p.containers.len(), 1);
        let c = &p.containers[0];
        assert_eq!(c.name, "broker");
        assert_eq!(c.image.as_deref(), Some("sluice:test"));
        assert_eq!(c.command, Some(vec!["sluice-broker".to_string()]));
        assert_eq!(
            c.args,
            Some(vec![
                "--config".to_string(),
                "/etc/sluice/server.properties".to_string(),
                "--config".to_string(),
                "/etc/sluice/$(POD_NAME).properties".to_string()
            ])
        );
        let ports: Vec<_> = c
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.as_deref().unwrap_or(""), p.container_port))
            .collect();
        assert_eq!(ports, [("local", 9092), ("internal", 9093), ("http", 9644)]);
        let mounts: Vec<_> = c
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| (m.name.as_str(), m.mount_path.as_str(), m.read_only))
            .collect();
        assert_eq!(
            mounts,
            [
                ("data", "/var/lib/sluice", None),
                ("config", "/etc/sluice", Some(true)),
                ("tmp", "/tmp", None)
            ]
        );
        let volumes = p.volumes.as_ref().expect("volumes");
        assert_eq!(
            volumes[0].config_map.as_ref().map(|c| c.name.as_str()),
            Some("demo-kafka-config")
        );
        assert!(volumes[1].empty_dir.is_some());
    }

    #[test]
    fn env_gives_identity_and_advertised_addresses() {
        let sts = statefulset(&three_brokers(), "h");
        let c = &pod(&sts).containers[0];
        let names: Vec<_> = c.env.iter().flatten().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "POD_NAME",
                "POD_NAMESPACE",
                "SLUICE_NODE_ID",
                "SLUICE_ADVERTISED_HTTP_LISTENER"
            ],
            "POD_NAME and POD_NAMESPACE come before the values referencing them"
        );
        let env = env_map(c);
        let field = |name: &str| {
            env[name]
                .value_from
                .as_ref()
                .and_then(|v| v.field_ref.as_ref())
                .map(|f| f.field_path.clone())
        };
        assert_eq!(field("POD_NAME").as_deref(), Some("metadata.name"));
        assert_eq!(
            field("POD_NAMESPACE").as_deref(),
            Some("metadata.namespace")
        );
        assert_eq!(
            field("SLUICE_NODE_ID").as_deref(),
            Some("metadata.labels['apps.kubernetes.io/pod-index']")
        );
        assert_eq!(
            env["SLUICE_ADVERTISED_HTTP_LISTENER"].value.as_deref(),
            Some("$(POD_NAME).demo-kafka-brokers.$(POD_NAMESPACE).svc:9644")
        );
    }

    #[test]
    fn a_node_port_listener_gets_the_node_ip() {
        let v = view(
            json!({"replicas": 3, "storage": {"size": "1Gi"}, "listeners": [
                {"name": "internal", "type": "internal", "port": 9093},
                {"name": "external", "type": "nodePort", "port": 9094},
            ]}),
        );
        let sts = statefulset(&v, "h");
        let c = &pod(&sts).containers[0];
        let env = env_map(c);
        let host_ip = env["HOST_IP"]
            .value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.as_str());
        assert_eq!(host_ip, Some("status.hostIP"));
        let ports: Vec<_> = c
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.as_deref().unwrap_or(""), p.container_port))
            .collect();
        assert_eq!(
            ports,
            [("internal", 9093), ("external", 9094), ("http", 9644)]
        );
        assert!(
            !env_map(&pod(&statefulset(&three_brokers(), "h")).containers[0])
                .contains_key("HOST_IP")
        );
    }

    #[test]
    fn probes_use_the_http_port() {
        let sts = statefulset(&three_brokers(), "h");
        let c = &pod(&sts).containers[0];
        let path_port = |p: &Option<Probe>| {
            let get = p
                .as_ref()
                .and_then(|p| p.http_get.as_ref())
                .expect("httpGet");
            (get.path.clone().unwrap_or_default(), get.port.clone())
        };
        let http = IntOrString::String("http".into());
        assert_eq!(
            path_port(&c.readiness_probe),
            ("/readyz".to_string(), http.clone())
        );
        assert_eq!(
            path_port(&c.liveness_probe),
            ("/healthz".to_string(), http.clone())
        );
        assert_eq!(path_port(&c.startup_probe), ("/healthz".to_string(), http));
        let startup = c.startup_probe.as_ref().unwrap();
        assert!(
            startup.period_seconds.unwrap() * startup.failure_threshold.unwrap() >= 600,
            "startup allows 10 minutes of log recovery"
        );
    }

    #[test]
    fn runs_as_non_root_with_a_read_only_root() {
        let sts = statefulset(&three_brokers(), "h");
        let p = pod(&sts);
        assert_eq!(p.termination_grace_period_seconds, Some(120));
        assert_eq!(p.automount_service_account_token, Some(false));
        let psc = p.security_context.as_ref().expect("pod security context");
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(psc.run_as_user, Some(65532));
        assert_eq!(psc.run_as_group, Some(65532));
        assert_eq!(psc.fs_group, Some(65532));
        assert_eq!(
            psc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
            Some("RuntimeDefault")
        );
        let sc = p.containers[0]
            .security_context
            .as_ref()
            .expect("container sc");
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
            Some(vec!["ALL".to_string()])
        );
    }

    #[test]
    fn scrape_and_config_hash_annotations() {
        let sts = statefulset(&three_brokers(), "deadbeef");
        let ann = spec(&sts)
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.clone())
            .expect("annotations");
        assert_eq!(ann["prometheus.io/scrape"], "true");
        assert_eq!(ann["prometheus.io/port"], "9644");
        assert_eq!(ann["prometheus.io/path"], "/metrics");
        assert_eq!(ann["kafka.sluice.dev/config-hash"], "deadbeef");
        let other = statefulset(&three_brokers(), "cafe");
        assert_ne!(
            spec(&sts).template,
            spec(&other).template,
            "a config change changes the pod template, which rolls the pods"
        );
    }

    #[test]
    fn pod_template_extras_and_resources() {
        let v = view(json!({
            "replicas": 3,
            "storage": {"size": "1Gi"},
            "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
            "podTemplate": {
                "labels": {"team": "data", "app.kubernetes.io/name": "hijack"},
                "annotations": {"note": "x", "prometheus.io/port": "1"},
                "nodeSelector": {"disk": "ssd"},
                "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "kafka", "effect": "NoSchedule"}],
                "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                    "whenUnsatisfiable": "DoNotSchedule",
                    "labelSelector": {"matchLabels": {"app.kubernetes.io/instance": "demo"}}}],
                "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                     "labelSelector": {"matchLabels": {"app.kubernetes.io/instance": "demo"}}}}]}},
                "priorityClassName": "high"
            }
        }));
        let sts = statefulset(&v, "h");
        let tmeta = spec(&sts).template.metadata.as_ref().unwrap();
        let l = tmeta.labels.as_ref().unwrap();
        assert_eq!(l["team"], "data");
        assert_eq!(
            l["app.kubernetes.io/name"], "sluice-broker",
            "operator labels win"
        );
        let a = tmeta.annotations.as_ref().unwrap();
        assert_eq!(a["note"], "x");
        assert_eq!(a["prometheus.io/port"], "9644", "operator annotations win");
        let p = pod(&sts);
        assert_eq!(p.node_selector.as_ref().unwrap()["disk"], "ssd");
        assert_eq!(
            p.tolerations.as_ref().unwrap()[0].key.as_deref(),
            Some("dedicated")
        );
        assert_eq!(
            p.topology_spread_constraints.as_ref().unwrap()[0].topology_key,
            "topology.kubernetes.io/zone"
        );
        assert!(p
            .affinity
            .as_ref()
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .is_some());
        assert_eq!(p.priority_class_name.as_deref(), Some("high"));
        let r = p.containers[0].resources.as_ref().expect("resources");
        assert_eq!(r.requests.as_ref().unwrap()["cpu"], Quantity("500m".into()));
        assert_eq!(r.limits.as_ref().unwrap()["memory"], Quantity("2Gi".into()));
        // Without extras nothing is set (no empty maps or lists for the API to reject).
        let plain = statefulset(&three_brokers(), "h");
        let p = pod(&plain);
        assert_eq!(p.node_selector, None);
        assert_eq!(p.tolerations, None);
        assert_eq!(p.topology_spread_constraints, None);
        assert_eq!(p.affinity, None);
        assert_eq!(p.priority_class_name, None);
        assert_eq!(p.containers[0].resources, None);
    }
}
