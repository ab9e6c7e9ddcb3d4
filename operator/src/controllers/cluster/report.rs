//! The cluster controller's reporting steps (I/O out): status writes and Events for each
//! way a reconcile ends.

use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};

use super::scaling::{self, ScalingPlan};
use super::status::{condition_true, failure_status, is_paused_status, paused_status, READY};
use crate::builders::statefulset_name;
use crate::controllers::{apply_status, Context, Error};
use crate::crd::{KafkaCluster, KafkaClusterStatus, Operation};

/// `spec.paused` is set: Progressing becomes `False/Paused` (once, with an Event).
pub(super) async fn report_paused(
    ctx: &Context,
    api: &Api<KafkaCluster>,
    kc: &KafkaCluster,
) -> Result<(), Error> {
    let old = kc.status.as_ref();
    if !is_paused_status(old) {
        apply_status(
            api,
            kc,
            &paused_status(old, kc.metadata.generation, Timestamp::now()),
        )
        .await?;
        ctx.events
            .publish(
                &kc.object_ref(&()),
                EventType::Normal,
                "Paused",
                "Pause",
                "spec.paused is true: reconciliation stopped".into(),
            )
            .await;
    }
    Ok(())
}

/// The reconcile stopped before observing the brokers (`reason`: InvalidSpec,
/// ApplyFailed): the conditions and a Warning Event say why.
pub(super) async fn report_failure(
    ctx: &Context,
    api: &Api<KafkaCluster>,
    kc: &KafkaCluster,
    reason: &str,
    action: &str,
    message: String,
) -> Result<(), Error> {
    let status = failure_status(
        kc.status.as_ref(),
        kc.metadata.generation,
        reason,
        &message,
        Timestamp::now(),
    );
    apply_status(api, kc, &status).await?;
    ctx.events
        .publish(
            &kc.object_ref(&()),
            EventType::Warning,
            reason,
            action,
            message,
        )
        .await;
    Ok(())
}

/// Events for what changed in this reconcile.
pub(super) async fn publish_changes(
    ctx: &Context,
    kc: &KafkaCluster,
    old: Option<&KafkaClusterStatus>,
    new: &KafkaClusterStatus,
    previous_replicas: Option<i32>,
    scaling: &ScalingPlan,
) {
    let reference = kc.object_ref(&());
    let applied = scaling.statefulset_replicas;
    match previous_replicas {
        None => {
            ctx.events
                .publish(
                    &reference,
                    EventType::Normal,
                    "Created",
                    "Apply",
                    format!(
                        "created StatefulSet {} with {applied} brokers",
                        statefulset_name(&kc.name_any())
                    ),
                )
                .await
        }
        Some(prev) if prev != applied => {
            ctx.events
                .publish(
                    &reference,
                    EventType::Normal,
                    "Scaled",
                    "Apply",
                    format!("brokers {prev} -> {applied}"),
                )
                .await
        }
        _ => {}
    }
    let before = old.and_then(|s| s.operation.as_ref());
    let after = new.operation.as_ref();
    let phase = |o: Option<&Operation>| o.map(|o| (o.kind.clone(), o.phase.clone()));
    if phase(before) != phase(after) {
        if let Some(op) = after {
            let (type_, reason) = if op.phase == scaling::REFUSED {
                (EventType::Warning, "ScaleDownRefused".to_string())
            } else {
                (EventType::Normal, format!("{}{}", op.kind, op.phase))
            };
            let message = op.message.clone().unwrap_or_else(|| op.phase.clone());
            ctx.events
                .publish(&reference, type_, &reason, "Scale", message)
                .await;
        }
    }
    if let (Some(done), None) = (before, after) {
        if done.phase != scaling::REFUSED {
            let elapsed = done
                .started
                .as_deref()
                .and_then(|s| s.parse::<Timestamp>().ok())
                .and_then(|t| Timestamp::now().duration_since(t).try_into().ok());
            if let Some(elapsed) = elapsed {
                ctx.metrics.observe_operation(&done.kind, elapsed);
            }
            let words = match (done.from_replicas, done.to_replicas) {
                (Some(f), Some(t)) => format!("{} finished: {f} -> {t} brokers", done.kind),
                _ => format!("{} finished", done.kind),
            };
            ctx.events
                .publish(
                    &reference,
                    EventType::Normal,
                    &format!("{}Complete", done.kind),
                    "Scale",
                    words,
                )
                .await;
        }
    }
    let was_ready = old.is_some_and(|s| condition_true(s, READY));
    if !was_ready && condition_true(new, READY) {
        ctx.events
            .publish(
                &reference,
                EventType::Normal,
                "ClusterReady",
                "Reconcile",
                format!("{}/{} brokers ready", new.ready_replicas, new.replicas),
            )
            .await;
    }
}
