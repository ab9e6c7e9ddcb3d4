//! Pure decisions of the cluster controller: partition health from metadata, broker
//! readiness from pods, and the status with its conditions (the scaling workflows are in
//! `scaling.rs`).

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use sluice_client::ClusterMetadata;

use super::scaling::{self, ScalingPlan};
use crate::builders::{
    bootstrap_servers, external_bootstrap_service_name, external_service_name, load_balancer_host,
    node_port, pod_name,
};
use crate::crd::{
    condition, merge_conditions, BrokerStatus, ConditionStatus, KafkaClusterStatus, ListenerStatus,
    ListenerType, PartitionHealth,
};
use crate::validate::ValidatedCluster;

/// Condition types.
pub const READY: &str = "Ready";
/// Condition types.
pub const PROGRESSING: &str = "Progressing";
/// Condition types.
pub const DEGRADED: &str = "Degraded";

/// Whether `status` has condition `type_` with status True.
pub fn condition_true(status: &KafkaClusterStatus, type_: &str) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// Partition counts over every topic in `md`.
pub fn partition_health(md: &ClusterMetadata) -> PartitionHealth {
    let mut health = PartitionHealth::default();
    for p in md.topics.values().flat_map(|t| &t.partitions) {
        health.total += 1;
        if p.isr.len() < p.replicas.len() {
            health.under_replicated += 1;
        }
        if p.leader < 0 {
            health.offline += 1;
        }
    }
    health
}

/// Broker entries for ordinals `0..replicas` from the pods found.
pub fn broker_statuses(cluster: &str, replicas: i32, pods: &[Pod]) -> Vec<BrokerStatus> {
    (0..replicas.max(0))
        .map(|id| {
            let name = pod_name(cluster, id);
            let ready = pods
                .iter()
                .find(|p| p.metadata.name.as_deref() == Some(name.as_str()))
                .is_some_and(pod_ready);
            BrokerStatus {
                id,
                pod: name,
                ready,
            }
        })
        .collect()
}

fn pod_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Where each listener's clients bootstrap from, the forwarding listener first, and the
/// load-balancer Services still without an address (per broker ones for ordinals
/// `0..brokers`). `services`: the external listeners' Services as stored; `pods`: the broker
/// pods (a nodePort listener bootstraps from the nodes they run on).
pub fn listener_statuses(
    view: &ValidatedCluster,
    brokers: i32,
    services: &[Service],
    pods: &[Pod],
) -> (Vec<ListenerStatus>, Vec<String>) {
    let find = |name: &str| {
        services
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(name))
    };
    let mut pending = Vec::new();
    let mut out: Vec<ListenerStatus> = view
        .listeners
        .iter()
        .map(|l| {
            let bootstrap_name = external_bootstrap_service_name(&view.name, &l.name);
            let (address, message) = match l.type_ {
                ListenerType::Forwarding => (
                    Some(format!("{}:{}", l.advertised_host, l.advertised_port)),
                    None,
                ),
                ListenerType::Internal => (
                    Some(bootstrap_servers(&view.name, &view.namespace, l.port)),
                    None,
                ),
                ListenerType::NodePort => {
                    let mut hosts: Vec<&str> = pods
                        .iter()
                        .filter_map(|p| p.status.as_ref()?.host_ip.as_deref())
                        .filter(|h| !h.is_empty())
                        .collect();
                    hosts.sort_unstable();
                    hosts.dedup();
                    match (find(&bootstrap_name).and_then(node_port), hosts.is_empty()) {
                        (Some(port), false) => (
                            Some(
                                hosts
                                    .iter()
                                    .map(|h| format!("{h}:{port}"))
                                    .collect::<Vec<_>>()
                                    .join(","),
                            ),
                            None,
                        ),
                        (None, _) => (
                            None,
                            Some(format!("Service {bootstrap_name} has no nodePort yet")),
                        ),
                        (Some(_), true) => (None, Some("no broker runs on a node yet".to_string())),
                    }
                }
                ListenerType::LoadBalancer => {
                    for ordinal in 0..brokers.max(0) {
                        let name = external_service_name(&view.name, ordinal, &l.name);
                        if find(&name).and_then(load_balancer_host).is_none() {
                            pending.push(name);
                        }
                    }
                    match find(&bootstrap_name).and_then(load_balancer_host) {
                        Some(host) => (Some(format!("{host}:{}", l.port)), None),
                        None => {
                            pending.push(bootstrap_name.clone());
                            (
                                None,
                                Some(format!(
                                    "waiting for the load balancer of Service {bootstrap_name}"
                                )),
                            )
                        }
                    }
                }
            };
            ListenerStatus {
                name: l.name.clone(),
                type_: l.type_,
                bootstrap_servers: address,
                message,
            }
        })
        .collect();
    // Stable: the forwarding listener first (the printer column shows the first), the rest
    // in spec order.
    out.sort_by_key(|l| l.type_ != ListenerType::Forwarding);
    (out, pending)
}

/// What a reconcile observed, for [`cluster_status`].
#[derive(Debug, Clone)]
pub struct Observation<'a> {
    /// Cluster name.
    pub name: &'a str,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// `spec.replicas`.
    pub desired_replicas: i32,
    /// The StatefulSet as last applied (its status may lag).
    pub statefulset: Option<&'a StatefulSet>,
    /// Broker pods.
    pub pods: &'a [Pod],
    /// Partition health, when the metadata could be read.
    pub partitions: Option<PartitionHealth>,
    /// The scaling step taken.
    pub scaling: &'a ScalingPlan,
    /// Cluster id.
    pub cluster_id: &'a str,
    /// Bootstrap address.
    pub bootstrap_servers: String,
    /// `status.labelSelector`.
    pub label_selector: String,
    /// `status.listeners`.
    pub listeners: Vec<ListenerStatus>,
    /// Load-balancer Services without an address yet (brokers that need one wait).
    pub pending_addresses: Vec<String>,
}

/// Whether the StatefulSet controller has caught up with the last applied spec and every
/// replica runs the latest revision.
fn rollout_complete(sts: &StatefulSet, replicas: i32) -> bool {
    let Some(status) = sts.status.as_ref() else {
        return false;
    };
    let observed = status.observed_generation.unwrap_or(0) >= sts.metadata.generation.unwrap_or(0);
    let revisions_match = match (&status.current_revision, &status.update_revision) {
        (Some(c), Some(u)) => c == u,
        _ => true,
    };
    observed
        && status.replicas == replicas
        && status.updated_replicas.unwrap_or(0) == replicas
        && status.ready_replicas.unwrap_or(0) == replicas
        && revisions_match
}

/// The status after a successful apply: counts, brokers, partitions and the three
/// conditions, keeping transition times of unchanged conditions from `old`.
pub fn cluster_status(
    obs: &Observation<'_>,
    old: Option<&KafkaClusterStatus>,
    now: Timestamp,
) -> KafkaClusterStatus {
    let applied = obs.scaling.statefulset_replicas;
    let sts_status = obs.statefulset.and_then(|s| s.status.as_ref());
    let replicas = sts_status.map_or(0, |s| s.replicas);
    let ready = sts_status.and_then(|s| s.ready_replicas).unwrap_or(0);
    let updated = sts_status.and_then(|s| s.updated_replicas).unwrap_or(0);
    let settled = obs
        .statefulset
        .is_some_and(|s| rollout_complete(s, applied));
    let gen = obs.generation;
    let c = |t: &str, s: ConditionStatus, r: &str, m: String| condition(t, s, r, m, gen, now);

    let waiting = (!obs.pending_addresses.is_empty()).then(|| {
        format!(
            "waiting for load-balancer addresses: {}",
            obs.pending_addresses.join(", ")
        )
    });
    let ready_cond = if obs.desired_replicas == 0 && applied == 0 {
        c(
            READY,
            ConditionStatus::False,
            "ScaledToZero",
            "spec.replicas is 0: no brokers run".into(),
        )
    } else if let (Some(message), true) = (&waiting, applied < obs.desired_replicas) {
        c(
            READY,
            ConditionStatus::False,
            "WaitingForLoadBalancer",
            format!("{ready}/{applied} brokers ready; {message}"),
        )
    } else if settled {
        c(
            READY,
            ConditionStatus::True,
            "AllBrokersReady",
            format!("{ready}/{applied} brokers ready"),
        )
    } else {
        c(
            READY,
            ConditionStatus::False,
            "BrokersNotReady",
            format!("{ready}/{applied} brokers ready"),
        )
    };
    let operation = obs
        .scaling
        .operation
        .as_ref()
        .filter(|o| o.phase != scaling::REFUSED);
    // Brokers waiting for their load balancer's address say so before any workflow: a
    // scale-up (or a new cluster) cannot go on without them.
    let progressing = if let Some(message) = &waiting {
        c(
            PROGRESSING,
            ConditionStatus::True,
            "WaitingForLoadBalancer",
            message.clone(),
        )
    } else if let Some(op) = operation {
        c(
            PROGRESSING,
            ConditionStatus::True,
            &op.kind,
            format!("{}: {}", op.phase, op.progress.clone().unwrap_or_default()),
        )
    } else if settled {
        c(
            PROGRESSING,
            ConditionStatus::False,
            "Reconciled",
            "the brokers match the spec".into(),
        )
    } else if replicas != applied {
        c(
            PROGRESSING,
            ConditionStatus::True,
            "Scaling",
            format!("{replicas} -> {applied} brokers, {ready} ready"),
        )
    } else if updated < applied {
        c(
            PROGRESSING,
            ConditionStatus::True,
            "RollingUpdate",
            format!("{updated}/{applied} brokers updated, {ready} ready"),
        )
    } else {
        // Every broker runs the current template and some are not ready yet: a new cluster (or
        // restarted brokers) coming up, not a rollout.
        c(
            PROGRESSING,
            ConditionStatus::True,
            "BrokersStarting",
            format!("{ready}/{applied} brokers ready"),
        )
    };
    let degraded = match (&obs.partitions, &obs.scaling.refused) {
        (Some(p), _) if p.offline > 0 => c(
            DEGRADED,
            ConditionStatus::True,
            "OfflinePartitions",
            format!("{} of {} partitions have no leader", p.offline, p.total),
        ),
        (_, Some(message)) => c(
            DEGRADED,
            ConditionStatus::True,
            "ScaleDownRefused",
            message.clone(),
        ),
        (Some(p), _) if p.under_replicated > 0 => c(
            DEGRADED,
            ConditionStatus::True,
            "UnderReplicatedPartitions",
            format!(
                "{} of {} partitions are under-replicated",
                p.under_replicated, p.total
            ),
        ),
        _ => c(
            DEGRADED,
            ConditionStatus::False,
            "AsExpected",
            "no known problem".into(),
        ),
    };
    let old_conditions = old.map(|s| s.conditions.as_slice()).unwrap_or_default();
    KafkaClusterStatus {
        observed_generation: gen,
        conditions: merge_conditions(old_conditions, vec![ready_cond, progressing, degraded]),
        replicas,
        ready_replicas: ready,
        label_selector: Some(obs.label_selector.clone()),
        cluster_id: Some(obs.cluster_id.to_string()),
        bootstrap_servers: Some(obs.bootstrap_servers.clone()),
        listeners: obs.listeners.clone(),
        brokers: broker_statuses(obs.name, applied, obs.pods),
        partitions: obs.partitions.clone(),
        operation: obs.scaling.operation.clone(),
    }
}

/// The status when the reconcile stopped before observing the brokers (invalid spec, an
/// apply that failed): the three conditions say why; counts and the rest stay as they were.
pub fn failure_status(
    old: Option<&KafkaClusterStatus>,
    generation: Option<i64>,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> KafkaClusterStatus {
    let mut status = old.cloned().unwrap_or_default();
    let conditions = vec![
        condition(
            READY,
            ConditionStatus::False,
            reason,
            message,
            generation,
            now,
        ),
        condition(
            PROGRESSING,
            ConditionStatus::False,
            reason,
            message,
            generation,
            now,
        ),
        condition(
            DEGRADED,
            ConditionStatus::True,
            reason,
            message,
            generation,
            now,
        ),
    ];
    status.conditions = merge_conditions(&status.conditions, conditions);
    status.observed_generation = generation;
    status
}

/// The status of a paused cluster: as it was, with `Progressing=False, reason Paused`.
pub fn paused_status(
    old: Option<&KafkaClusterStatus>,
    generation: Option<i64>,
    now: Timestamp,
) -> KafkaClusterStatus {
    let mut status = old.cloned().unwrap_or_default();
    let mut conditions: Vec<Condition> = status
        .conditions
        .iter()
        .filter(|c| c.type_ != PROGRESSING)
        .cloned()
        .collect();
    conditions.push(condition(
        PROGRESSING,
        ConditionStatus::False,
        "Paused",
        "spec.paused is true: the operator changes nothing until it is set back to false",
        generation,
        now,
    ));
    status.conditions = merge_conditions(&status.conditions, conditions);
    status
}

/// Whether `status` says the cluster is paused.
pub fn is_paused_status(status: Option<&KafkaClusterStatus>) -> bool {
    status.is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == PROGRESSING && c.reason == "Paused")
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::StatefulSetStatus;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use sluice_client::{PartitionMetadata, TopicMetadata};

    use super::*;
    use crate::crd::Operation;

    fn settled(replicas: i32) -> ScalingPlan {
        ScalingPlan {
            statefulset_replicas: replicas,
            start_moves: Default::default(),
            unregister: Vec::new(),
            operation: None,
            refused: None,
            pending_moves: 0,
        }
    }

    #[test]
    fn an_operation_is_progress() {
        let s = sts(2, 2, 5, 5, 5);
        let mut plan = settled(5);
        plan.operation = Some(Operation {
            kind: "ScaleUp".into(),
            phase: "Rebalancing".into(),
            progress: Some("3 partitions to move, 3 moving".into()),
            ..Default::default()
        });
        let mut o = observe(Some(&s), &plan, None);
        o.desired_replicas = 5;
        let st = cluster_status(&o, None, ts(1));
        assert_eq!(cond(&st, PROGRESSING).status, "True");
        assert_eq!(cond(&st, PROGRESSING).reason, "ScaleUp");
        assert_eq!(
            cond(&st, PROGRESSING).message,
            "Rebalancing: 3 partitions to move, 3 moving"
        );
        assert_eq!(st.operation, plan.operation);
    }

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).expect("timestamp")
    }

    /// Metadata with one topic whose partitions are `(leader, replicas, isr)`.
    fn md(parts: &[(i32, &[i32], &[i32])]) -> ClusterMetadata {
        let mut md = ClusterMetadata::default();
        md.topics.insert(
            "t".into(),
            TopicMetadata {
                name: "t".into(),
                topic_id: uuid::Uuid::nil(),
                error_code: 0,
                is_internal: false,
                partitions: parts
                    .iter()
                    .enumerate()
                    .map(|(i, (leader, replicas, isr))| PartitionMetadata {
                        partition: i as i32,
                        error_code: 0,
                        leader: *leader,
                        leader_epoch: 0,
                        replicas: replicas.to_vec(),
                        isr: isr.to_vec(),
                        offline_replicas: vec![],
                    })
                    .collect(),
            },
        );
        md
    }

    #[test]
    fn partition_health_counts() {
        let m = md(&[
            (0, &[0, 1, 2], &[0, 1, 2]),
            (1, &[1, 2, 0], &[1]),
            (-1, &[2], &[]),
        ]);
        assert_eq!(
            partition_health(&m),
            PartitionHealth {
                total: 3,
                under_replicated: 2,
                offline: 1
            }
        );
        assert_eq!(
            partition_health(&ClusterMetadata::default()),
            PartitionHealth::default()
        );
    }

    fn pod(name: &str, ready: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn brokers_from_pods() {
        let pods = [pod("demo-kafka-0", true), pod("demo-kafka-2", false)];
        let b = broker_statuses("demo", 3, &pods);
        assert_eq!(
            b,
            vec![
                BrokerStatus {
                    id: 0,
                    pod: "demo-kafka-0".into(),
                    ready: true
                },
                BrokerStatus {
                    id: 1,
                    pod: "demo-kafka-1".into(),
                    ready: false
                },
                BrokerStatus {
                    id: 2,
                    pod: "demo-kafka-2".into(),
                    ready: false
                },
            ]
        );
    }

    fn sts(generation: i64, observed: i64, replicas: i32, ready: i32, updated: i32) -> StatefulSet {
        StatefulSet {
            metadata: ObjectMeta {
                generation: Some(generation),
                ..Default::default()
            },
            status: Some(StatefulSetStatus {
                observed_generation: Some(observed),
                replicas,
                ready_replicas: Some(ready),
                updated_replicas: Some(updated),
                current_revision: Some("r1".into()),
                update_revision: Some("r1".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn observe<'a>(
        s: Option<&'a StatefulSet>,
        scaling: &'a ScalingPlan,
        partitions: Option<PartitionHealth>,
    ) -> Observation<'a> {
        Observation {
            name: "demo",
            generation: Some(4),
            desired_replicas: 3,
            statefulset: s,
            pods: &[],
            partitions,
            scaling,
            cluster_id: "id",
            bootstrap_servers: "b:9092".into(),
            label_selector: "sel".into(),
            listeners: Vec::new(),
            pending_addresses: Vec::new(),
        }
    }

    fn cond<'a>(s: &'a KafkaClusterStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).expect(t)
    }

    #[test]
    fn settled_cluster_is_ready() {
        let s = sts(2, 2, 3, 3, 3);
        let scale = settled(3);
        let st = cluster_status(
            &observe(Some(&s), &scale, Some(PartitionHealth::default())),
            None,
            ts(10),
        );
        assert_eq!(st.observed_generation, Some(4));
        assert_eq!((st.replicas, st.ready_replicas), (3, 3));
        assert_eq!(cond(&st, READY).status, "True");
        assert_eq!(cond(&st, READY).reason, "AllBrokersReady");
        assert_eq!(cond(&st, READY).message, "3/3 brokers ready");
        assert_eq!(cond(&st, PROGRESSING).status, "False");
        assert_eq!(cond(&st, DEGRADED).status, "False");
        assert_eq!(st.cluster_id.as_deref(), Some("id"));
        assert_eq!(st.bootstrap_servers.as_deref(), Some("b:9092"));
        assert_eq!(st.label_selector.as_deref(), Some("sel"));
        assert_eq!(st.brokers.len(), 3);
        assert_eq!(st.operation, None);
        assert!(cond(&st, READY).observed_generation == Some(4));
    }

    #[test]
    fn rolling_and_scaling_are_progressing() {
        let scale = settled(3);
        let rolling = sts(3, 3, 3, 2, 1);
        let st = cluster_status(&observe(Some(&rolling), &scale, None), None, ts(10));
        assert_eq!(cond(&st, READY).status, "False");
        assert_eq!(cond(&st, PROGRESSING).reason, "RollingUpdate");
        assert_eq!(
            cond(&st, PROGRESSING).message,
            "1/3 brokers updated, 2 ready"
        );
        let stale = sts(3, 2, 3, 3, 3);
        let st = cluster_status(&observe(Some(&stale), &scale, None), None, ts(10));
        assert_eq!(
            cond(&st, PROGRESSING).status,
            "True",
            "generation not observed yet"
        );
        let starting = sts(1, 1, 3, 1, 3);
        let st = cluster_status(&observe(Some(&starting), &scale, None), None, ts(10));
        assert_eq!(
            cond(&st, PROGRESSING).reason,
            "BrokersStarting",
            "a new cluster is no rollout"
        );
        assert_eq!(cond(&st, PROGRESSING).message, "1/3 brokers ready");
        let scaling = sts(3, 3, 1, 1, 1);
        let st = cluster_status(&observe(Some(&scaling), &scale, None), None, ts(10));
        assert_eq!(cond(&st, PROGRESSING).reason, "Scaling");
        assert_eq!(cond(&st, PROGRESSING).message, "1 -> 3 brokers, 1 ready");
        let st = cluster_status(&observe(None, &scale, None), None, ts(10));
        assert_eq!(cond(&st, READY).reason, "BrokersNotReady");
    }

    #[test]
    fn degraded_reasons_in_priority_order() {
        let s = sts(2, 2, 3, 3, 3);
        let ok = settled(3);
        let mut blocked = settled(3);
        blocked.refused = Some("m".into());
        blocked.operation = Some(Operation {
            kind: "ScaleDown".into(),
            phase: scaling::REFUSED.into(),
            ..Default::default()
        });
        let under = PartitionHealth {
            total: 4,
            under_replicated: 1,
            offline: 0,
        };
        let offline = PartitionHealth {
            total: 4,
            under_replicated: 1,
            offline: 2,
        };
        let st = cluster_status(&observe(Some(&s), &ok, Some(under.clone())), None, ts(1));
        assert_eq!(cond(&st, DEGRADED).reason, "UnderReplicatedPartitions");
        assert_eq!(
            cond(&st, DEGRADED).message,
            "1 of 4 partitions are under-replicated"
        );
        let st = cluster_status(&observe(Some(&s), &blocked, Some(under)), None, ts(1));
        assert_eq!(cond(&st, DEGRADED).reason, "ScaleDownRefused");
        assert_eq!(cond(&st, DEGRADED).message, "m");
        assert_eq!(
            cond(&st, PROGRESSING).status,
            "False",
            "a refused scale-down is not progress"
        );
        assert_eq!(
            st.operation.as_ref().map(|o| o.phase.as_str()),
            Some("Refused")
        );
        let st = cluster_status(&observe(Some(&s), &blocked, Some(offline)), None, ts(1));
        assert_eq!(cond(&st, DEGRADED).reason, "OfflinePartitions");
    }

    #[test]
    fn transition_times_survive_reconciles() {
        let s = sts(2, 2, 3, 3, 3);
        let scale = settled(3);
        let first = cluster_status(&observe(Some(&s), &scale, None), None, ts(10));
        let second = cluster_status(&observe(Some(&s), &scale, None), Some(&first), ts(20));
        assert_eq!(cond(&second, READY).last_transition_time, Time(ts(10)));
    }

    #[test]
    fn failure_and_pause_keep_the_rest() {
        let s = sts(2, 2, 3, 3, 3);
        let scale = settled(3);
        let ok = cluster_status(&observe(Some(&s), &scale, None), None, ts(10));
        let failed = failure_status(Some(&ok), Some(5), "ApplyFailed", "boom", ts(20));
        assert_eq!(failed.ready_replicas, 3);
        assert_eq!(failed.observed_generation, Some(5));
        assert_eq!(cond(&failed, READY).reason, "ApplyFailed");
        assert_eq!(cond(&failed, READY).message, "boom");
        assert_eq!(cond(&failed, DEGRADED).status, "True");
        let paused = paused_status(Some(&ok), Some(6), ts(30));
        assert!(is_paused_status(Some(&paused)));
        assert!(!is_paused_status(Some(&ok)));
        assert_eq!(
            paused.observed_generation,
            Some(4),
            "a paused spec is not observed"
        );
        assert_eq!(cond(&paused, READY), cond(&ok, READY));
        assert_eq!(cond(&paused, PROGRESSING).reason, "Paused");
        assert_eq!(paused.conditions.len(), 3);
    }

    #[test]
    fn node_port_listeners_bootstrap_from_the_brokers_nodes() {
        use crate::builders::test_support::view;
        use serde_json::json;
        let v = view(
            json!({"replicas": 2, "storage": {"size": "1Gi"}, "listeners": [
                {"name": "internal", "type": "internal", "port": 9093},
                {"name": "ext", "type": "nodePort", "port": 9094},
            ]}),
        );
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "demo-kafka-ext-bootstrap"},
            "spec": {"ports": [{"port": 9094, "nodePort": 30500}]}
        }))
        .unwrap();
        let mut pods = vec![pod("demo-kafka-0", true), pod("demo-kafka-1", true)];
        for (p, ip) in pods.iter_mut().zip(["10.0.0.2", "10.0.0.1"]) {
            p.status.as_mut().unwrap().host_ip = Some(ip.into());
        }
        let (listeners, pending) = listener_statuses(&v, 2, &[svc], &pods);
        assert!(pending.is_empty());
        assert_eq!(listeners[0].name, "internal");
        assert_eq!(
            listeners[1].bootstrap_servers.as_deref(),
            Some("10.0.0.1:30500,10.0.0.2:30500")
        );
        let (listeners, _) = listener_statuses(&v, 2, &[], &pods);
        assert_eq!(listeners[1].bootstrap_servers, None);
        assert_eq!(
            listeners[1].message.as_deref(),
            Some("Service demo-kafka-ext-bootstrap has no nodePort yet")
        );
    }

    #[test]
    fn scaled_to_zero() {
        let s = sts(2, 2, 0, 0, 0);
        let scale = settled(0);
        let mut o = observe(Some(&s), &scale, None);
        o.desired_replicas = 0;
        let st = cluster_status(&o, None, ts(1));
        assert_eq!(cond(&st, READY).reason, "ScaledToZero");
        assert!(st.brokers.is_empty());
    }
}
