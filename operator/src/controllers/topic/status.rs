//! `KafkaTopic` status for each outcome of a reconcile (pure).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use sluice_client::ClientError;

use super::plan::DesiredTopic;
use super::reassign::{KIND, PHASE_BLOCKED, PHASE_MOVING};
use super::sync::{ReplicaMove, SyncReport};
use crate::crd::{
    condition, merge_conditions, ConditionStatus, KafkaTopic, KafkaTopicStatus, TopicOperation,
};
use crate::kafka::is_connection_error;

/// Condition types.
pub const READY: &str = "Ready";
/// Condition types.
pub const PROGRESSING: &str = "Progressing";
/// Set while another, earlier `KafkaTopic` manages the same topic.
pub const CONFLICT: &str = "Conflict";
/// Set while the spec cannot be acted on.
pub const INVALID: &str = "Invalid";
/// Progressing reason while replicas move.
pub const REPLICAS_MOVING: &str = "ReplicasMoving";
/// Ready and Progressing reason while a replication-factor change cannot start.
pub const NOT_ENOUGH_BROKERS: &str = "NotEnoughBrokers";

/// Whether `status` has condition `type_` with status True.
pub fn has_condition(status: &KafkaTopicStatus, type_: &str) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// Condition reason for a failed Kafka call: the Kafka error's name
/// (`InvalidReplicationFactor`, `PolicyViolation`, ...), `KafkaUnavailable` when the
/// cluster could not be reached, `KafkaError` otherwise.
pub fn error_reason(e: &ClientError) -> String {
    match e {
        ClientError::Kafka { name, .. } if *name != "Unknown" => (*name).to_string(),
        e if is_connection_error(e) => "KafkaUnavailable".to_string(),
        _ => "KafkaError".to_string(),
    }
}

/// Builds the status of one `KafkaTopic` at one point in time.
pub struct TopicStatusBuilder<'a> {
    old: Option<&'a KafkaTopicStatus>,
    generation: Option<i64>,
    topic_name: String,
    now: Timestamp,
}

impl<'a> TopicStatusBuilder<'a> {
    /// For `kt` at `now`.
    pub fn new(kt: &'a KafkaTopic, now: Timestamp) -> Self {
        TopicStatusBuilder {
            old: kt.status.as_ref(),
            generation: kt.metadata.generation,
            topic_name: kt.topic_name(),
            now,
        }
    }

    fn cond(&self, type_: &str, status: ConditionStatus, reason: &str, message: &str) -> Condition {
        condition(type_, status, reason, message, self.generation, self.now)
    }

    /// The previous status with new `conditions` (topic fields kept).
    fn with_conditions(&self, conditions: Vec<Condition>) -> KafkaTopicStatus {
        let mut status = self.old.cloned().unwrap_or_default();
        status.conditions = merge_conditions(&status.conditions, conditions);
        status.observed_generation = self.generation;
        status.topic_name = Some(self.topic_name.clone());
        status
    }

    /// The spec cannot be acted on.
    pub fn invalid(&self, message: &str) -> KafkaTopicStatus {
        self.with_conditions(vec![
            self.cond(READY, ConditionStatus::False, "InvalidSpec", message),
            self.cond(PROGRESSING, ConditionStatus::False, "InvalidSpec", message),
            self.cond(INVALID, ConditionStatus::True, "InvalidSpec", message),
        ])
    }

    /// Another resource owns the topic: report nothing about the topic itself.
    pub fn conflict(&self, message: &str) -> KafkaTopicStatus {
        let mut status = self.with_conditions(vec![
            self.cond(READY, ConditionStatus::False, "Conflict", message),
            self.cond(PROGRESSING, ConditionStatus::False, "Conflict", message),
            self.cond(
                CONFLICT,
                ConditionStatus::True,
                "TopicManagedElsewhere",
                message,
            ),
        ]);
        status.topic_id = None;
        status.partitions = None;
        status.replicas = None;
        status.operation = None;
        status
    }

    /// Waiting for the cluster (`reason`: ClusterNotFound, ClusterNotReady).
    pub fn waiting(&self, reason: &str, message: &str) -> KafkaTopicStatus {
        self.with_conditions(vec![
            self.cond(READY, ConditionStatus::False, reason, message),
            self.cond(PROGRESSING, ConditionStatus::False, reason, message),
        ])
    }

    /// A Kafka call failed; the topic fields (and a replica move in progress) stay as last
    /// seen.
    pub fn kafka_error(&self, topic: &str, reason: &str, message: &str) -> KafkaTopicStatus {
        self.with_conditions(vec![
            self.cond(READY, ConditionStatus::False, reason, message),
            self.cond(
                PROGRESSING,
                ConditionStatus::True,
                "Retrying",
                &format!("retrying topic {topic} with backoff"),
            ),
        ])
    }

    /// The topic matches the spec as far as the cluster allows.
    pub fn synced(&self, desired: &DesiredTopic, report: &SyncReport) -> KafkaTopicStatus {
        let name = &desired.name;
        let mut conditions = Vec::new();
        let Some(state) = &report.state else {
            // Created, but the metadata does not show it yet.
            conditions.push(self.cond(
                READY,
                ConditionStatus::False,
                "Creating",
                &format!("topic {name} created; waiting for it to appear in the metadata"),
            ));
            conditions.push(self.cond(PROGRESSING, ConditionStatus::True, "Creating", ""));
            return self.with_conditions(conditions);
        };
        let partitions = state.partitions();
        let rf = state.replication_factor();
        let mut replicas = Some(rf);
        let mut operation = None;
        // (Ready, Progressing) for a replica move, else None.
        let mut move_conditions = None;
        let moving = match &report.replica_move {
            Some(ReplicaMove::Started {
                from, to, progress, ..
            }) => Some((Some(*from), *to, *progress)),
            Some(ReplicaMove::Running { to, progress }) => Some((None, *to, *progress)),
            _ => None,
        };
        if let Some((from, to, progress)) = moving {
            // During the move the metadata shows old and new replicas together: keep
            // reporting the factor the topic had until the move is done.
            replicas = from.or_else(|| self.old.and_then(|s| s.replicas));
            let change = match replicas {
                Some(from) => format!("replication factor {from} -> {to}"),
                None => format!("replication factor -> {to}"),
            };
            let message = format!("topic {name}: {change}, moving replicas ({progress})");
            operation = Some(TopicOperation {
                kind: KIND.to_string(),
                phase: PHASE_MOVING.to_string(),
                target: to,
                progress: Some(progress.to_string()),
                message: Some(message.clone()),
            });
            move_conditions = Some((
                self.cond(
                    READY,
                    ConditionStatus::True,
                    "TopicReady",
                    &format!("topic {name}: {partitions} partitions, serving while replicas move"),
                ),
                self.cond(
                    PROGRESSING,
                    ConditionStatus::True,
                    REPLICAS_MOVING,
                    &message,
                ),
            ));
        }
        if let Some(ReplicaMove::NotEnoughBrokers { from, to, live }) = &report.replica_move {
            let message = format!(
                "topic {name}: replication factor {from} -> {to} needs {to} live brokers, the \
                 cluster has {live}; no replicas were moved. Add brokers or lower spec.replicas"
            );
            operation = Some(TopicOperation {
                kind: KIND.to_string(),
                phase: PHASE_BLOCKED.to_string(),
                target: *to,
                progress: None,
                message: Some(message.clone()),
            });
            move_conditions = Some((
                self.cond(READY, ConditionStatus::False, NOT_ENOUGH_BROKERS, &message),
                self.cond(
                    PROGRESSING,
                    ConditionStatus::False,
                    NOT_ENOUGH_BROKERS,
                    &message,
                ),
            ));
        }
        if let Some((ready, progressing)) = move_conditions {
            conditions.push(ready);
            conditions.push(progressing);
        } else {
            let summary = format!("topic {name}: {partitions} partitions, replication factor {rf}");
            conditions.push(match report.partitions_above_spec {
                Some(have) => self.cond(
                    READY,
                    ConditionStatus::True,
                    "PartitionsAboveSpec",
                    &format!(
                        "{summary}; the topic has {have} partitions, more than spec.partitions \
                         {}, and partitions cannot be removed",
                        desired.partitions
                    ),
                ),
                None => self.cond(READY, ConditionStatus::True, "TopicReady", &summary),
            });
            conditions.push(self.cond(
                PROGRESSING,
                ConditionStatus::False,
                "Synced",
                "partitions, configs and replicas match the spec",
            ));
        }
        let mut status = self.with_conditions(conditions);
        status.topic_id = Some(state.topic_id)
            .filter(|id| !id.is_nil())
            .map(|id| id.to_string());
        status.partitions = Some(partitions);
        status.replicas = replicas;
        status.operation = operation;
        status
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;
    use sluice_client::kafka_error;

    use super::*;
    use crate::controllers::topic::reassign::MoveProgress;
    use crate::kafka::TopicState;

    fn kt() -> KafkaTopic {
        serde_json::from_value(json!({
            "apiVersion": "kafka.sluice.dev/v1alpha1",
            "kind": "KafkaTopic",
            "metadata": {"name": "orders", "namespace": "ns", "generation": 3},
            "spec": {"cluster": "demo", "partitions": 2, "replicas": 3},
        }))
        .expect("KafkaTopic")
    }

    fn desired() -> DesiredTopic {
        DesiredTopic {
            name: "orders".into(),
            partitions: 2,
            replication_factor: 3,
            configs: BTreeMap::new(),
        }
    }

    fn cond<'a>(s: &'a KafkaTopicStatus, t: &str) -> Option<&'a Condition> {
        s.conditions.iter().find(|c| c.type_ == t)
    }

    fn state(rf: usize) -> TopicState {
        TopicState {
            topic_id: uuid::Uuid::from_u128(7),
            assignment: (0..2).map(|p| (p, (0..rf as i32).collect())).collect(),
            configs: BTreeMap::new(),
        }
    }

    #[test]
    fn synced_topic_is_ready() {
        let t = kt();
        let b = TopicStatusBuilder::new(&t, Timestamp::UNIX_EPOCH);
        let report = SyncReport {
            state: Some(state(3)),
            created: true,
            ..Default::default()
        };
        let s = b.synced(&desired(), &report);
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.topic_name.as_deref(), Some("orders"));
        assert_eq!(
            s.topic_id.as_deref(),
            Some("00000000-0000-0000-0000-000000000007")
        );
        assert_eq!((s.partitions, s.replicas), (Some(2), Some(3)));
        let ready = cond(&s, READY).expect("Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "TopicReady")
        );
        assert_eq!(
            ready.message,
            "topic orders: 2 partitions, replication factor 3"
        );
        assert_eq!(cond(&s, PROGRESSING).unwrap().status, "False");
        assert_eq!(s.operation, None);
    }

    #[test]
    fn replica_move_is_reported_while_running() {
        let t = kt();
        let b = TopicStatusBuilder::new(&t, Timestamp::UNIX_EPOCH);
        let report = SyncReport {
            state: Some(state(1)),
            replica_move: Some(ReplicaMove::Started {
                from: 1,
                to: 3,
                partitions: 2,
                progress: MoveProgress { done: 0, total: 2 },
            }),
            ..Default::default()
        };
        let s = b.synced(&desired(), &report);
        let op = s.operation.clone().expect("operation");
        assert_eq!(
            (op.kind.as_str(), op.phase.as_str(), op.target),
            ("ReplicaChange", "Moving", 3)
        );
        assert_eq!(op.progress.as_deref(), Some("0 of 2 partitions done"));
        assert_eq!(
            op.message.as_deref(),
            Some(
                "topic orders: replication factor 1 -> 3, moving replicas (0 of 2 partitions done)"
            )
        );
        let progressing = cond(&s, PROGRESSING).expect("Progressing");
        assert_eq!(
            (progressing.status.as_str(), progressing.reason.as_str()),
            ("True", "ReplicasMoving")
        );
        assert_eq!(cond(&s, READY).unwrap().status, "True", "the topic serves");
        assert_eq!(s.replicas, Some(1), "the old factor until the move is done");

        // Later (e.g. after an operator restart): the metadata shows the union of old and
        // new replicas; the status keeps the factor it recorded.
        let mut t = kt();
        t.status = Some(s);
        let b = TopicStatusBuilder::new(&t, Timestamp::UNIX_EPOCH);
        let report = SyncReport {
            state: Some(state(3)),
            replica_move: Some(ReplicaMove::Running {
                to: 3,
                progress: MoveProgress { done: 1, total: 2 },
            }),
            ..Default::default()
        };
        let s = b.synced(&desired(), &report);
        assert_eq!(s.replicas, Some(1));
        let op = s.operation.clone().expect("operation");
        assert_eq!(op.progress.as_deref(), Some("1 of 2 partitions done"));

        // Done: the operation goes, the new factor shows.
        let mut t = kt();
        t.status = Some(s);
        let b = TopicStatusBuilder::new(&t, Timestamp::UNIX_EPOCH);
        let report = SyncReport {
            state: Some(state(3)),
            ..Default::default()
        };
        let s = b.synced(&desired(), &report);
        assert_eq!(s.operation, None);
        assert_eq!(s.replicas, Some(3));
        assert_eq!(cond(&s, PROGRESSING).unwrap().status, "False");
        assert_eq!(cond(&s, READY).unwrap().reason, "TopicReady");
    }

    #[test]
    fn too_few_brokers_is_not_ready_and_names_the_numbers() {
        let t = kt();
        let b = TopicStatusBuilder::new(&t, Timestamp::UNIX_EPOCH);
        let report = SyncReport {
            state: Some(state(1)),
            replica_move: Some(ReplicaMove::NotEnoughBrokers {
                from: 1,
                to: 3,
                live: 1,
            }),
            ..Default::default()
        };
        let s = b.synced(&desired(), &report);
        let ready = cond(&s, READY).expect("Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "NotEnoughBrokers")
        );
        assert_eq!(
            ready.message,
            "topic orders: replication factor 1 -> 3 needs 3 live brokers, the cluster has 1; \
             no replicas were moved. Add brokers or lower spec.replicas"
        );
        assert_eq!(cond(&s, PROGRESSING).unwrap().reason, "NotEnoughBrokers");
        let op = s.operation.clone().expect("operation");
        assert_eq!((op.phase.as_str(), op.target), ("Blocked", 3));
        assert_eq!(s.replicas, Some(1));
    }

    #[test]
    fn kafka_error_keeps_a_running_move_visible() {
        let mut t = kt();
        t.status = Some(KafkaTopicStatus {
            replicas: Some(1),
            operation: Some(TopicOperation {
                kind: KIND.into(),
                phase: PHASE_MOVING.into(),
                target: 3,
                ..Default::default()
            }),
            ..Default::default()
        });
        let b = TopicStatusBuilder::new(&t, Timestamp::UNIX_EPOCH);
        let s = b.kafka_error("orders", "KafkaUnavailable", "down");
        assert_eq!(s.operation.map(|o| o.target), Some(3));
        assert_eq!(s.replicas, Some(1));
    }

    #[test]
    fn errors_name_the_kafka_error() {
        let e = kafka_error(38, Some("too many".into()), "create topic orders".into());
        assert_eq!(error_reason(&e), "InvalidReplicationFactor");
        let io = ClientError::Disconnected { addr: "x".into() };
        assert_eq!(error_reason(&io), "KafkaUnavailable");
        let t = kt();
        let b = TopicStatusBuilder::new(&t, Timestamp::UNIX_EPOCH);
        let s = b.kafka_error("orders", &error_reason(&e), &e.to_string());
        let ready = cond(&s, READY).unwrap();
        assert_eq!(ready.reason, "InvalidReplicationFactor");
        assert!(
            ready
                .message
                .contains("Kafka error 38 InvalidReplicationFactor"),
            "{}",
            ready.message
        );
        assert_eq!(cond(&s, PROGRESSING).unwrap().reason, "Retrying");
    }

    #[test]
    fn conflict_clears_topic_fields() {
        let mut t = kt();
        t.status = Some(KafkaTopicStatus {
            topic_id: Some("x".into()),
            partitions: Some(2),
            replicas: Some(3),
            ..Default::default()
        });
        let b = TopicStatusBuilder::new(&t, Timestamp::UNIX_EPOCH);
        let s = b.conflict("owned by first");
        assert!(has_condition(&s, CONFLICT));
        assert_eq!(cond(&s, READY).unwrap().reason, "Conflict");
        assert_eq!((s.topic_id, s.partitions, s.replicas), (None, None, None));
        let inv = b.invalid("bad");
        assert!(has_condition(&inv, INVALID));
        assert!(
            !has_condition(&inv, CONFLICT),
            "the conflict condition goes away"
        );
    }
}
