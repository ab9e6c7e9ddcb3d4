//! `KafkaTopic` status for each outcome of a reconcile (pure).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use sluice_client::ClientError;

use super::plan::DesiredTopic;
use super::sync::SyncReport;
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
/// Set while the replication factor differs from the spec.
pub const REPLICAS_PENDING: &str = "ReplicasChangePending";

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

    /// A Kafka call failed; the topic fields stay as last seen.
    pub fn kafka_error(&self, topic: &str, reason: &str, message: &str) -> KafkaTopicStatus {
        let mut status = self.with_conditions(vec![
            self.cond(READY, ConditionStatus::False, reason, message),
            self.cond(
                PROGRESSING,
                ConditionStatus::True,
                "Retrying",
                &format!("retrying topic {topic} with backoff"),
            ),
        ]);
        // Keep a pending replicas change visible.
        if let Some(prev) = self.old.and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == REPLICAS_PENDING && c.status == "True")
        }) {
            status.conditions.push(prev.clone());
        }
        status
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
            "partitions and configs match the spec",
        ));
        let mut operation = None;
        if let Some(change) = &report.replicas_change {
            let target = match &change.target {
                Ok(assignment) => format!(
                    "target assignment computed for {} partitions",
                    assignment.len()
                ),
                Err(e) => format!("no target assignment: {e}"),
            };
            let message = format!(
                "replication factor {} -> {} needs partition reassignment, which the brokers \
                 do not support yet; {target}",
                change.from, change.to
            );
            conditions.push(self.cond(
                REPLICAS_PENDING,
                ConditionStatus::True,
                "ReassignmentNotSupported",
                &message,
            ));
            operation = Some(TopicOperation {
                target: change.to,
                progress: Some("pending".to_string()),
                message: Some(message),
            });
        }
        let mut status = self.with_conditions(conditions);
        status.topic_id = Some(state.topic_id)
            .filter(|id| !id.is_nil())
            .map(|id| id.to_string());
        status.partitions = Some(partitions);
        status.replicas = Some(rf);
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
    use crate::controllers::topic::placement::PlacementError;
    use crate::controllers::topic::sync::ReplicasChange;
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
        assert!(cond(&s, REPLICAS_PENDING).is_none());
        assert_eq!(s.operation, None);
    }

    #[test]
    fn replicas_change_is_reported_pending() {
        let t = kt();
        let b = TopicStatusBuilder::new(&t, Timestamp::UNIX_EPOCH);
        let report = SyncReport {
            state: Some(state(1)),
            replicas_change: Some(ReplicasChange {
                from: 1,
                to: 3,
                target: Err(PlacementError::NotEnoughBrokers { rf: 3, brokers: 1 }),
            }),
            ..Default::default()
        };
        let s = b.synced(&desired(), &report);
        let pending = cond(&s, REPLICAS_PENDING).expect("pending");
        assert_eq!(pending.status, "True");
        assert_eq!(pending.reason, "ReassignmentNotSupported");
        assert!(pending
            .message
            .contains("replication factor 1 -> 3 needs partition reassignment"));
        assert!(
            pending
                .message
                .contains("needs 3 brokers, the cluster has 1"),
            "{}",
            pending.message
        );
        let op = s.operation.clone().expect("operation");
        assert_eq!(op.target, 3);
        assert_eq!(s.replicas, Some(1), "status shows what the topic has");
        assert_eq!(
            cond(&s, READY).unwrap().status,
            "True",
            "the topic is usable"
        );
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
