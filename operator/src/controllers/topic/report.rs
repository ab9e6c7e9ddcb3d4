//! The topic controller's reporting steps (I/O out): status writes and Events for each way
//! a reconcile ends.

use kube::runtime::events::EventType;
use kube::{Api, Resource};
use sluice_client::ClientError;
use tracing::info;

use super::plan::DesiredTopic;
use super::reassign::{KIND, PHASE_BLOCKED, PHASE_MOVING};
use super::status::{error_reason, has_condition, TopicStatusBuilder, CONFLICT};
use super::sync::{ReplicaMove, SyncReport};
use crate::controllers::{apply_status, Context, Error};
use crate::crd::{KafkaTopic, KafkaTopicStatus};

/// The spec cannot be acted on: the conditions and a Warning Event say why.
pub(super) async fn report_invalid(
    ctx: &Context,
    api: &Api<KafkaTopic>,
    kt: &KafkaTopic,
    status: &TopicStatusBuilder<'_>,
    message: String,
) -> Result<(), Error> {
    apply_status(api, kt, &status.invalid(&message)).await?;
    ctx.events
        .publish(
            &kt.object_ref(&()),
            EventType::Warning,
            "InvalidSpec",
            "Validate",
            message,
        )
        .await;
    Ok(())
}

/// Another resource manages the topic: `Conflict=True`, and a Warning Event when it
/// starts.
pub(super) async fn report_conflict(
    ctx: &Context,
    api: &Api<KafkaTopic>,
    kt: &KafkaTopic,
    status: &TopicStatusBuilder<'_>,
    message: String,
) -> Result<(), Error> {
    let was_conflict = kt
        .status
        .as_ref()
        .is_some_and(|s| has_condition(s, CONFLICT));
    apply_status(api, kt, &status.conflict(&message)).await?;
    if !was_conflict {
        ctx.events
            .publish(
                &kt.object_ref(&()),
                EventType::Warning,
                "Conflict",
                "Reconcile",
                message,
            )
            .await;
    }
    Ok(())
}

/// A Kafka call for `action` (Sync, Delete) failed: the Ready condition's reason names the
/// Kafka error, and a Warning Event carries `message`.
pub(super) async fn report_kafka_error(
    ctx: &Context,
    api: &Api<KafkaTopic>,
    kt: &KafkaTopic,
    status: &TopicStatusBuilder<'_>,
    action: &str,
    error: &ClientError,
    message: String,
) -> Result<(), Error> {
    let reason = error_reason(error);
    apply_status(
        api,
        kt,
        &status.kafka_error(&kt.topic_name(), &reason, &message),
    )
    .await?;
    ctx.events
        .publish(
            &kt.object_ref(&()),
            EventType::Warning,
            &reason,
            action,
            message,
        )
        .await;
    Ok(())
}

/// Events for what a sync changed on the cluster, and for a replica move starting, blocked
/// or done.
pub(super) async fn publish_changes(
    ctx: &Context,
    kt: &KafkaTopic,
    desired: &DesiredTopic,
    report: &SyncReport,
    new_status: &KafkaTopicStatus,
) {
    let reference = kt.object_ref(&());
    let old = kt.status.as_ref();
    let name = &desired.name;
    if report.created {
        info!(topic = %name, "created topic");
        ctx.events
            .publish(
                &reference,
                EventType::Normal,
                "Created",
                "Create",
                format!(
                    "created topic {name} with {} partitions, replication factor {}",
                    desired.partitions, desired.replication_factor
                ),
            )
            .await;
    }
    if let Some((from, to)) = report.grown {
        ctx.events
            .publish(
                &reference,
                EventType::Normal,
                "PartitionsIncreased",
                "Update",
                format!("topic {name}: {from} -> {to} partitions"),
            )
            .await;
    }
    if !report.configs_set.is_empty() || !report.configs_removed.is_empty() {
        let mut parts = Vec::new();
        if !report.configs_set.is_empty() {
            parts.push(format!("set {}", report.configs_set.join(", ")));
        }
        if !report.configs_removed.is_empty() {
            parts.push(format!("removed {}", report.configs_removed.join(", ")));
        }
        ctx.events
            .publish(
                &reference,
                EventType::Normal,
                "ConfigsUpdated",
                "Update",
                format!("topic {name}: {}", parts.join("; ")),
            )
            .await;
    }
    let old_phase = old
        .and_then(|s| s.operation.as_ref())
        .filter(|op| op.kind == KIND)
        .map(|op| op.phase.as_str());
    match &report.replica_move {
        Some(ReplicaMove::Started {
            from,
            to,
            partitions,
            ..
        }) => {
            info!(topic = %name, from, to, partitions, "started moving replicas");
            ctx.events
                .publish(
                    &reference,
                    EventType::Normal,
                    "ReplicasMoving",
                    "Reassign",
                    format!(
                        "topic {name}: replication factor {from} -> {to}, moving replicas of \
                     {partitions} partitions"
                    ),
                )
                .await;
        }
        Some(ReplicaMove::NotEnoughBrokers { .. }) if old_phase != Some(PHASE_BLOCKED) => {
            let message = new_status
                .operation
                .as_ref()
                .and_then(|op| op.message.clone())
                .unwrap_or_default();
            ctx.events
                .publish(
                    &reference,
                    EventType::Warning,
                    "NotEnoughBrokers",
                    "Reassign",
                    message,
                )
                .await;
        }
        None if old_phase == Some(PHASE_MOVING) => {
            info!(topic = %name, "replica move done");
            ctx.events
                .publish(
                    &reference,
                    EventType::Normal,
                    "ReplicasChanged",
                    "Reassign",
                    format!(
                        "topic {name}: replicas moved, replication factor {}",
                        desired.replication_factor
                    ),
                )
                .await;
        }
        _ => {}
    }
}
