//! The `KafkaTopic` controller: topics over the Kafka admin protocol, a finalizer for
//! deletion, and the Conflict rule.

pub mod plan;
pub mod reassign;
pub mod status;
pub mod sync;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{finalizer, Error as FinalizerError, Event as FinalizerEvent};
use kube::{Api, Resource, ResourceExt};
use tracing::{info, info_span, warn, Span};

use self::plan::{desired_topic, owner_other_than};
use self::reassign::{KIND, PHASE_BLOCKED, PHASE_MOVING};
use self::status::{error_reason, has_condition, TopicStatusBuilder, CONFLICT};
use self::sync::{sync_topic, ReplicaMove};
use super::reconcile::Reconciled;
use super::{apply_status, bootstrap_of, Context, Error};
use crate::crd::{DeletionPolicy, KafkaCluster, KafkaTopic};

/// Controller name in metrics and logs.
pub const CONTROLLER: &str = "kafkatopic";
/// Finalizer held while the topic may still need deleting.
pub const FINALIZER: &str = "kafka.sluice.dev/topic";
/// Longest time one reconcile may spend talking to Kafka.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(60);
/// Wait before looking again for a missing or unready cluster.
const CLUSTER_WAIT: Duration = Duration::from_secs(30);
/// How often a running replica move is looked at (progress in status, done detected).
pub const REASSIGNMENT_POLL: Duration = Duration::from_secs(5);

impl Reconciled for KafkaTopic {
    const CONTROLLER: &'static str = CONTROLLER;

    fn reconcile_span(&self) -> Span {
        info_span!(
            "reconcile",
            topic = %self.name_any(),
            namespace = %self.namespace().unwrap_or_default()
        )
    }

    fn log_failure(&self, error: &Error, retry_in: Duration) {
        warn!(
            topic = %self.name_any(),
            namespace = %self.namespace().unwrap_or_default(),
            error = %error,
            retry_in = ?retry_in,
            "KafkaTopic reconcile failed"
        );
    }

    async fn reconcile(self: Arc<Self>, ctx: Arc<Context>) -> Result<Action, Error> {
        reconcile_inner(self, &ctx).await
    }
}

async fn reconcile_inner(topic: Arc<KafkaTopic>, ctx: &Context) -> Result<Action, Error> {
    // The Conflict rule compares with every KafkaTopic: wait for the first full list.
    ctx.topics
        .wait_until_ready()
        .await
        .map_err(|_| Error::Retry("the KafkaTopic cache is closed".into()))?;
    let namespace = topic.namespace().unwrap_or_default();
    let api: Api<KafkaTopic> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, topic, |event| async {
        match event {
            FinalizerEvent::Apply(kt) => apply_topic(&kt, ctx, &api).await,
            FinalizerEvent::Cleanup(kt) => cleanup_topic(&kt, ctx, &api).await,
        }
    })
    .await
    .map_err(|e| match e {
        FinalizerError::ApplyFailed(e) | FinalizerError::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    })
}

/// The `KafkaCluster` a topic belongs to, `None` when it does not exist.
async fn get_cluster(ctx: &Context, kt: &KafkaTopic) -> Result<Option<KafkaCluster>, Error> {
    let api: Api<KafkaCluster> =
        Api::namespaced(ctx.client.clone(), &kt.namespace().unwrap_or_default());
    api.get_opt(&kt.spec.cluster)
        .await
        .map_err(Error::kube(format!("get KafkaCluster {}", kt.spec.cluster)))
}

async fn apply_topic(
    kt: &KafkaTopic,
    ctx: &Context,
    api: &Api<KafkaTopic>,
) -> Result<Action, Error> {
    let reference = kt.object_ref(&());
    let old = kt.status.as_ref();
    let status = TopicStatusBuilder::new(kt, Timestamp::now());

    let desired = match desired_topic(kt) {
        Ok(d) => d,
        Err(message) => {
            apply_status(api, kt, &status.invalid(&message)).await?;
            ctx.event(
                &reference,
                EventType::Warning,
                "InvalidSpec",
                "Validate",
                message,
            )
            .await;
            return Ok(Action::await_change());
        }
    };

    let all = ctx.topics.state();
    if let Some(owner) = owner_other_than(kt, &all) {
        let message = format!(
            "topic `{}` of KafkaCluster {} is managed by KafkaTopic {}, created earlier; this \
             resource never changes or deletes it",
            desired.name,
            kt.spec.cluster,
            owner.name_any()
        );
        let was_conflict = old.is_some_and(|s| has_condition(s, CONFLICT));
        apply_status(api, kt, &status.conflict(&message)).await?;
        if !was_conflict {
            ctx.event(
                &reference,
                EventType::Warning,
                "Conflict",
                "Reconcile",
                message,
            )
            .await;
        }
        // Look again later: the owner may go away.
        return Ok(Action::requeue(ctx.settings.topic_resync));
    }

    let Some(cluster) = get_cluster(ctx, kt).await? else {
        let message = format!("KafkaCluster {} not found", kt.spec.cluster);
        apply_status(api, kt, &status.waiting("ClusterNotFound", &message)).await?;
        return Ok(Action::requeue(CLUSTER_WAIT));
    };
    let Some(bootstrap) = bootstrap_of(&cluster) else {
        let message = format!(
            "KafkaCluster {} has no bootstrap address yet",
            kt.spec.cluster
        );
        apply_status(api, kt, &status.waiting("ClusterNotReady", &message)).await?;
        return Ok(Action::requeue(CLUSTER_WAIT));
    };

    let synced = tokio::time::timeout(KAFKA_TIMEOUT, async {
        let admin = ctx.kafka.connect(&bootstrap).await?;
        sync_topic(admin.as_ref(), &desired, Some(cluster.spec.replicas)).await
    })
    .await
    .unwrap_or_else(|_| {
        Err(sluice_client::ClientError::Timeout {
            context: format!("sync topic {} via {bootstrap}", desired.name),
            after: KAFKA_TIMEOUT,
        })
    });
    let report = match synced {
        Ok(report) => report,
        Err(e) => {
            let reason = error_reason(&e);
            let message = e.to_string();
            apply_status(
                api,
                kt,
                &status.kafka_error(&desired.name, &reason, &message),
            )
            .await?;
            ctx.event(&reference, EventType::Warning, &reason, "Sync", message)
                .await;
            return Err(Error::Kafka(e));
        }
    };

    let new_status = status.synced(&desired, &report);
    apply_status(api, kt, &new_status).await?;
    let name = &desired.name;
    if report.created {
        info!(topic = %name, "created topic");
        ctx.event(
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
        ctx.event(
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
        ctx.event(
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
            ctx.event(
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
            ctx.event(
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
            ctx.event(
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
    Ok(Action::requeue(if report.moving() {
        // The broker moves the data; follow it closely so status shows progress.
        REASSIGNMENT_POLL
    } else if report.state.is_some() {
        // Check again later: configs may be changed behind the operator's back.
        ctx.settings.topic_resync
    } else {
        Duration::from_secs(5)
    }))
}

async fn cleanup_topic(
    kt: &KafkaTopic,
    ctx: &Context,
    api: &Api<KafkaTopic>,
) -> Result<Action, Error> {
    let reference = kt.object_ref(&());
    let name = kt.topic_name();
    let all = ctx.topics.state();
    if let Some(owner) = owner_other_than(kt, &all) {
        info!(topic = %name, owner = %owner.name_any(), "not deleting a topic another KafkaTopic manages");
        return Ok(Action::await_change());
    }
    if kt.spec.deletion_policy == DeletionPolicy::Retain {
        ctx.event(
            &reference,
            EventType::Normal,
            "Retained",
            "Delete",
            format!("kept topic {name}: deletionPolicy is Retain"),
        )
        .await;
        return Ok(Action::await_change());
    }
    let cluster = get_cluster(ctx, kt).await?;
    let Some(cluster) = cluster.filter(|c| c.metadata.deletion_timestamp.is_none()) else {
        info!(topic = %name, cluster = %kt.spec.cluster, "cluster gone, releasing the finalizer");
        return Ok(Action::await_change());
    };
    let synced_once = kt
        .status
        .as_ref()
        .is_some_and(|s| s.topic_id.is_some() || s.partitions.is_some());
    if !synced_once {
        // Never created or adopted by this resource: nothing to delete.
        return Ok(Action::await_change());
    }
    let Some(bootstrap) = bootstrap_of(&cluster) else {
        return Err(Error::Retry(format!(
            "cannot delete topic {name}: KafkaCluster {} has no bootstrap address",
            kt.spec.cluster
        )));
    };
    let deleted = tokio::time::timeout(KAFKA_TIMEOUT, async {
        let admin = ctx.kafka.connect(&bootstrap).await?;
        admin.delete_topic(&name).await
    })
    .await
    .unwrap_or_else(|_| {
        Err(sluice_client::ClientError::Timeout {
            context: format!("delete topic {name} via {bootstrap}"),
            after: KAFKA_TIMEOUT,
        })
    });
    match deleted {
        Ok(()) => {
            info!(topic = %name, "deleted topic");
            ctx.event(
                &reference,
                EventType::Normal,
                "Deleted",
                "Delete",
                format!("deleted topic {name}"),
            )
            .await;
            Ok(Action::await_change())
        }
        Err(e) => {
            let reason = error_reason(&e);
            let message = format!("cannot delete topic {name}: {e}");
            let status = TopicStatusBuilder::new(kt, Timestamp::now());
            apply_status(api, kt, &status.kafka_error(&name, &reason, &message)).await?;
            ctx.event(&reference, EventType::Warning, &reason, "Delete", message)
                .await;
            Err(Error::Kafka(e))
        }
    }
}
