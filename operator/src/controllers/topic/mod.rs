//! The `KafkaTopic` controller: topics over the Kafka admin protocol, a finalizer for
//! deletion, and the Conflict rule. Each reconcile is a pipeline, I/O at the edges and pure
//! steps between: validate the spec, apply the Conflict rule, observe the cluster, sync the
//! topic (describe, plan, change: `sync.rs`), then write the status and publish Events
//! (`apply_topic`).

pub mod plan;
pub mod reassign;
mod report;
pub mod status;
pub mod sync;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{finalizer, Error as FinalizerError, Event as FinalizerEvent};
use kube::{Api, Resource, ResourceExt};
use sluice_client::ClientError;
use tracing::{info, info_span, warn, Span};

use self::plan::{desired_topic, owner_other_than, DesiredTopic};
use self::report::{publish_changes, report_conflict, report_invalid, report_kafka_error};
use self::status::TopicStatusBuilder;
use self::sync::{sync_topic, SyncReport};
use super::reconcile::Reconciled;
use super::{apply_status, bootstrap_of, Context, Error, Settings};
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
        reconcile_topic(self, &ctx).await
    }
}

/// One reconcile of `topic`: applied, or cleaned up once it is being deleted.
async fn reconcile_topic(topic: Arc<KafkaTopic>, ctx: &Context) -> Result<Action, Error> {
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

/// Bring the topic in line with `kt`, step by step.
async fn apply_topic(
    kt: &KafkaTopic,
    ctx: &Context,
    api: &Api<KafkaTopic>,
) -> Result<Action, Error> {
    let status = TopicStatusBuilder::new(kt, Timestamp::now());
    let desired = match desired_topic(kt) {
        Ok(d) => d,
        Err(message) => {
            report_invalid(ctx, api, kt, &status, message).await?;
            return Ok(Action::await_change());
        }
    };
    if let Some(message) = conflict(kt, &desired, &ctx.topics.state()) {
        report_conflict(ctx, api, kt, &status, message).await?;
        // Look again later: the owner may go away.
        return Ok(Action::requeue(ctx.settings.topic_resync));
    }
    let cluster = get_cluster(ctx, kt).await?;
    let (bootstrap, brokers) = match cluster_readiness(kt, cluster.as_ref()) {
        ClusterReadiness::Ready { bootstrap, brokers } => (bootstrap, brokers),
        ClusterReadiness::Waiting { reason, message } => {
            apply_status(api, kt, &status.waiting(reason, &message)).await?;
            return Ok(Action::requeue(CLUSTER_WAIT));
        }
    };
    let report = match sync(ctx, &bootstrap, &desired, brokers).await {
        Ok(report) => report,
        Err(e) => {
            report_kafka_error(ctx, api, kt, &status, "Sync", &e, e.to_string()).await?;
            return Err(Error::Kafka(e));
        }
    };
    let new_status = status.synced(&desired, &report);
    apply_status(api, kt, &new_status).await?;
    publish_changes(ctx, kt, &desired, &report, &new_status).await;
    Ok(next_action(&report, &ctx.settings))
}

/// The Conflict rule (pure): why `kt` must leave its topic alone, when an earlier
/// `KafkaTopic` in `all` manages it.
fn conflict(kt: &KafkaTopic, desired: &DesiredTopic, all: &[Arc<KafkaTopic>]) -> Option<String> {
    let owner = owner_other_than(kt, all)?;
    Some(format!(
        "topic `{}` of KafkaCluster {} is managed by KafkaTopic {}, created earlier; this \
         resource never changes or deletes it",
        desired.name,
        kt.spec.cluster,
        owner.name_any()
    ))
}

/// Whether a topic's cluster can be synced against.
enum ClusterReadiness {
    /// It has a bootstrap address.
    Ready {
        /// Where admin calls go.
        bootstrap: String,
        /// The cluster's `spec.replicas`: brokers from there up are being drained.
        brokers: i32,
    },
    /// Not yet: the status says why (`reason`: ClusterNotFound, ClusterNotReady).
    Waiting {
        /// Condition reason.
        reason: &'static str,
        /// Condition message.
        message: String,
    },
}

/// Where `kt`'s cluster stands (pure), from what `get_cluster` found.
fn cluster_readiness(kt: &KafkaTopic, cluster: Option<&KafkaCluster>) -> ClusterReadiness {
    let Some(cluster) = cluster else {
        return ClusterReadiness::Waiting {
            reason: "ClusterNotFound",
            message: format!("KafkaCluster {} not found", kt.spec.cluster),
        };
    };
    match bootstrap_of(cluster) {
        Some(bootstrap) => ClusterReadiness::Ready {
            bootstrap,
            brokers: cluster.spec.replicas,
        },
        None => ClusterReadiness::Waiting {
            reason: "ClusterNotReady",
            message: format!(
                "KafkaCluster {} has no bootstrap address yet",
                kt.spec.cluster
            ),
        },
    }
}

/// Sync the topic through `bootstrap` (Kafka I/O): describe it, then create it or change
/// what differs, and follow or start a replica move over the brokers below `brokers`.
async fn sync(
    ctx: &Context,
    bootstrap: &str,
    desired: &DesiredTopic,
    brokers: i32,
) -> Result<SyncReport, ClientError> {
    within_kafka_timeout(
        || format!("sync topic {} via {bootstrap}", desired.name),
        async {
            let admin = ctx.kafka.connect(bootstrap).await?;
            sync_topic(admin.as_ref(), desired, Some(brokers)).await
        },
    )
    .await
}

/// Delete topic `name` through `bootstrap` (Kafka I/O).
async fn delete(ctx: &Context, bootstrap: &str, name: &str) -> Result<(), ClientError> {
    within_kafka_timeout(|| format!("delete topic {name} via {bootstrap}"), async {
        let admin = ctx.kafka.connect(bootstrap).await?;
        admin.delete_topic(name).await
    })
    .await
}

/// `call`, given up after [`KAFKA_TIMEOUT`] with a timeout error naming `what`.
async fn within_kafka_timeout<T>(
    what: impl FnOnce() -> String,
    call: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    tokio::time::timeout(KAFKA_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| {
            Err(ClientError::Timeout {
                context: what(),
                after: KAFKA_TIMEOUT,
            })
        })
}

/// When to look again after a sync (pure).
fn next_action(report: &SyncReport, settings: &Settings) -> Action {
    Action::requeue(if report.moving() {
        // The broker moves the data; follow it closely so status shows progress.
        REASSIGNMENT_POLL
    } else if report.state.is_some() {
        // Check again later: configs may be changed behind the operator's back.
        settings.topic_resync
    } else {
        Duration::from_secs(5)
    })
}

/// Let go of the topic once `kt` is being deleted: delete it (`deletionPolicy: Delete`) or
/// keep it.
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
        ctx.events
            .publish(
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
    match delete(ctx, &bootstrap, &name).await {
        Ok(()) => {
            info!(topic = %name, "deleted topic");
            ctx.events
                .publish(
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
            let message = format!("cannot delete topic {name}: {e}");
            let status = TopicStatusBuilder::new(kt, Timestamp::now());
            report_kafka_error(ctx, api, kt, &status, "Delete", &e, message).await?;
            Err(Error::Kafka(e))
        }
    }
}
