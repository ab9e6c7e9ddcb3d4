//! The `KafkaCluster` controller: read -> validate -> build -> apply -> status.

pub mod scaling;
pub mod status;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use sluice_client::ClusterMetadata;
use tracing::{debug, info, info_span, warn, Span};

use self::scaling::{ScalingInput, ScalingPlan};
use self::status::{
    cluster_status, failure_status, is_paused_status, partition_health, paused_status, Observation,
    READY,
};
use super::reconcile::Reconciled;
use super::{apply, apply_status, Context, Error, BOOTSTRAP_OVERRIDE_ANNOTATION};
use crate::builders::{
    self, build_all, config_map_name, label_selector, statefulset_name, ClusterObjects, CONFIG_FILE,
};
use crate::crd::{KafkaCluster, KafkaClusterStatus, Operation};
use crate::kafka::KafkaAdmin;
use crate::placement::ObservedLayout;
use crate::validate::{new_cluster_id, validate_cluster};

/// Controller name in metrics and logs.
pub const CONTROLLER: &str = "kafkacluster";

/// Longest wait for the cluster's metadata during a reconcile.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

impl Reconciled for KafkaCluster {
    const CONTROLLER: &'static str = CONTROLLER;

    fn reconcile_span(&self) -> Span {
        info_span!(
            "reconcile",
            cluster = %self.name_any(),
            namespace = %self.namespace().unwrap_or_default()
        )
    }

    fn log_failure(&self, error: &Error, retry_in: Duration) {
        warn!(
            cluster = %self.name_any(),
            namespace = %self.namespace().unwrap_or_default(),
            error = %error,
            retry_in = ?retry_in,
            "KafkaCluster reconcile failed"
        );
    }

    async fn reconcile(self: Arc<Self>, ctx: Arc<Context>) -> Result<Action, Error> {
        reconcile_inner(&self, &ctx).await
    }
}

async fn reconcile_inner(kc: &KafkaCluster, ctx: &Context) -> Result<Action, Error> {
    if kc.metadata.deletion_timestamp.is_some() {
        // Owned objects go with it (owner references); nothing to do.
        return Ok(Action::await_change());
    }
    let name = kc.name_any();
    let namespace = kc.namespace().unwrap_or_default();
    let api: Api<KafkaCluster> = Api::namespaced(ctx.client.clone(), &namespace);
    let old = kc.status.as_ref();
    let generation = kc.metadata.generation;
    let reference = kc.object_ref(&());

    if kc.spec.paused {
        if !is_paused_status(old) {
            apply_status(&api, kc, &paused_status(old, generation, Timestamp::now())).await?;
            ctx.event(
                &reference,
                EventType::Normal,
                "Paused",
                "Pause",
                "spec.paused is true: reconciliation stopped".into(),
            )
            .await;
        }
        return Ok(Action::await_change());
    }

    let cluster_id = cluster_id(kc, ctx, &api, &namespace).await?;
    let view = match validate_cluster(kc, &ctx.settings.default_image, &cluster_id) {
        Ok(view) => view,
        Err(invalid) => {
            let message = invalid.to_string();
            apply_status(
                &api,
                kc,
                &failure_status(old, generation, "InvalidSpec", &message, Timestamp::now()),
            )
            .await?;
            ctx.event(
                &reference,
                EventType::Warning,
                "InvalidSpec",
                "Validate",
                message,
            )
            .await;
            // Nothing to retry until the spec changes.
            return Ok(Action::await_change());
        }
    };

    let sts_api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &namespace);
    let sts_name = statefulset_name(&name);
    let current = sts_api
        .get_opt(&sts_name)
        .await
        .map_err(Error::kube(format!("get StatefulSet {sts_name}")))?;
    let current_replicas = current
        .as_ref()
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.replicas);
    let any_ready = current
        .as_ref()
        .and_then(|s| s.status.as_ref())
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
        > 0;
    let bootstrap = builders::bootstrap_servers(&name, &namespace);
    let admin_bootstrap = kc
        .annotations()
        .get(BOOTSTRAP_OVERRIDE_ANNOTATION)
        .cloned()
        .unwrap_or_else(|| bootstrap.clone());
    let kafka = if any_ready {
        read_cluster(ctx, &admin_bootstrap).await
    } else {
        None
    };
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let pods = pods_api
        .list(&ListParams::default().labels(&label_selector(&name)))
        .await
        .map_err(Error::kube("list broker pods"))?
        .items;
    let ordinals: BTreeSet<i32> = pods
        .iter()
        .filter_map(|p| pod_ordinal(&sts_name, &p.name_any()))
        .collect();
    let mut scaling = scaling::plan(&ScalingInput {
        desired: view.replicas,
        running: current_replicas,
        cluster: kafka.as_ref().map(|k| &k.view),
        pods: &ordinals,
        previous: old.and_then(|s| s.operation.as_ref()),
        max_moves: ctx.settings.max_partition_moves,
        now: Timestamp::now(),
    });
    let mut applied_view = view;
    applied_view.replicas = scaling.statefulset_replicas;

    let objects = build_all(&applied_view);
    let statefulset = match apply_objects(ctx, &namespace, &objects).await {
        Ok(sts) => sts,
        Err(e) if e.stands_down() => return Err(e),
        Err(e) => {
            let message = e.to_string();
            apply_status(
                &api,
                kc,
                &failure_status(old, generation, "ApplyFailed", &message, Timestamp::now()),
            )
            .await?;
            ctx.event(
                &reference,
                EventType::Warning,
                "ApplyFailed",
                "Apply",
                message,
            )
            .await;
            return Err(e);
        }
    };
    if let Some(k) = &kafka {
        carry_out(ctx, kc, k.admin.as_ref(), &mut scaling).await;
    }

    let observation = Observation {
        name: &name,
        generation,
        desired_replicas: kc.spec.replicas,
        statefulset: Some(&statefulset),
        pods: &pods,
        partitions: kafka.as_ref().map(|k| partition_health(&k.metadata)),
        scaling: &scaling,
        cluster_id: &cluster_id,
        bootstrap_servers: bootstrap,
        label_selector: label_selector(&name),
    };
    let new_status = cluster_status(&observation, old, Timestamp::now());
    apply_status(&api, kc, &new_status).await?;
    publish_changes(ctx, kc, old, &new_status, current_replicas, &scaling).await;

    let running_operation = scaling
        .operation
        .as_ref()
        .is_some_and(|o| o.phase != scaling::REFUSED);
    let settled = condition_true(&new_status, READY) && scaling.operation.is_none();
    Ok(Action::requeue(if running_operation {
        ctx.settings.operation_poll
    } else if settled {
        ctx.settings.cluster_resync
    } else {
        ctx.settings.cluster_progress_resync
    }))
}

/// The ordinal of a StatefulSet pod from its name (`<sts>-<ordinal>`).
fn pod_ordinal(statefulset: &str, pod: &str) -> Option<i32> {
    pod.strip_prefix(statefulset)?
        .strip_prefix('-')?
        .parse()
        .ok()
}

/// Starts the moves and unregisters the brokers `scaling` calls for. A scale-down whose
/// brokers are all unregistered ends here; failures are reported in the operation's
/// message and retried by the next reconcile.
async fn carry_out(
    ctx: &Context,
    kc: &KafkaCluster,
    admin: &dyn KafkaAdmin,
    scaling: &mut ScalingPlan,
) {
    // `<namespace>/<name>`: the metrics' `cluster` label.
    let key = format!("{}/{}", kc.namespace().unwrap_or_default(), kc.name_any());
    let mut by_topic: BTreeMap<&str, BTreeMap<i32, Vec<i32>>> = BTreeMap::new();
    for ((topic, partition), target) in &scaling.start_moves {
        by_topic
            .entry(topic.as_str())
            .or_default()
            .insert(*partition, target.clone());
    }
    let mut started = 0;
    let mut failures = Vec::new();
    for (topic, targets) in &by_topic {
        match admin.alter_partition_reassignments(topic, targets).await {
            Ok(outcomes) => {
                for (partition, outcome) in outcomes {
                    match outcome {
                        Ok(()) => started += 1,
                        Err(e) => failures.push(format!("{topic}-{partition}: {e}")),
                    }
                }
            }
            Err(e) => failures.push(format!("{topic}: {e}")),
        }
    }
    // Zero once no workflow runs: the gauge must not keep the last operation's figure.
    let pending = if scaling.operation.is_some() {
        scaling.pending_moves
    } else {
        0
    };
    ctx.metrics.observe_moves(&key, started, pending);
    if started > 0 {
        info!(cluster = %key, started, pending = scaling.pending_moves, "partition moves started");
    }
    if !failures.is_empty() {
        warn!(cluster = %key, ?failures, "partition moves refused");
        if let Some(op) = scaling.operation.as_mut() {
            op.message = Some(format!(
                "{}; refused by the cluster: {}",
                op.message.clone().unwrap_or_default(),
                failures.join("; ")
            ));
        }
    }
    if scaling.unregister.is_empty() {
        return;
    }
    let mut waiting = Vec::new();
    for &id in &scaling.unregister {
        match admin.unregister_broker(id).await {
            Ok(()) => info!(cluster = %key, broker = id, "broker unregistered"),
            Err(e) if e.code() == Some(BROKER_ID_NOT_REGISTERED) => {}
            Err(e) => waiting.push(format!("broker {id}: {e}")),
        }
    }
    if waiting.is_empty() {
        scaling.operation = None;
        ctx.metrics.observe_moves(&key, 0, 0);
    } else if let Some(op) = scaling.operation.as_mut() {
        op.message = Some(format!("unregistering: {}", waiting.join("; ")));
    }
}

/// BROKER_ID_NOT_REGISTERED: already unregistered (e.g. by a reconcile the operator did
/// not get to record).
const BROKER_ID_NOT_REGISTERED: i16 = 102;

/// What the brokers report, and the connection to act on them.
struct KafkaState {
    admin: Arc<dyn KafkaAdmin>,
    metadata: ClusterMetadata,
    view: ObservedLayout,
}

/// The cluster's metadata and running reassignments, or `None` (logged) when they cannot
/// be read in time.
async fn read_cluster(ctx: &Context, bootstrap: &str) -> Option<KafkaState> {
    let read = async {
        let admin = ctx.kafka.connect(bootstrap).await?;
        // Running moves listed before and after the metadata, and both kept: a move that
        // finished or started while the metadata was read is then known either way, so a
        // partition's old and new replicas together are never taken for its replica set.
        let mut moving = admin.all_reassignments().await?;
        let metadata = admin.metadata().await?;
        moving.extend(admin.all_reassignments().await?);
        // Only a scale-down needs the voters; without them it waits, nothing else does.
        let voters = match admin.quorum_voters().await {
            Ok(v) => Some(v.into_iter().collect()),
            Err(e) => {
                debug!(bootstrap, error = %e, "cannot read the metadata quorum's voters");
                None
            }
        };
        Ok::<_, sluice_client::ClientError>((admin, metadata, moving, voters))
    };
    match tokio::time::timeout(METADATA_TIMEOUT, read).await {
        Ok(Ok((admin, metadata, moving, voters))) => {
            let view = ObservedLayout::from_metadata(&metadata, &moving, voters);
            Some(KafkaState {
                admin,
                metadata,
                view,
            })
        }
        Ok(Err(e)) => {
            debug!(bootstrap, error = %e, "cannot read the cluster's metadata");
            None
        }
        Err(_) => {
            debug!(bootstrap, "timed out reading the cluster's metadata");
            None
        }
    }
}

/// The cluster id: from the status, else from the ConfigMap a previous reconcile wrote
/// (the status write may not have reached this reconcile's copy yet), else a new one,
/// which is stored in the status before anything uses it.
async fn cluster_id(
    kc: &KafkaCluster,
    ctx: &Context,
    api: &Api<KafkaCluster>,
    namespace: &str,
) -> Result<String, Error> {
    if let Some(id) = kc.status.as_ref().and_then(|s| s.cluster_id.clone()) {
        return Ok(id);
    }
    let cm_name = config_map_name(&kc.name_any());
    let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), namespace);
    let existing = config_maps
        .get_opt(&cm_name)
        .await
        .map_err(Error::kube(format!("get ConfigMap {cm_name}")))?
        .and_then(|cm| cm.data)
        .and_then(|data| data.get(CONFIG_FILE).cloned())
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("cluster.id=").map(str::to_string))
        });
    let id = existing.unwrap_or_else(new_cluster_id);
    let mut status: KafkaClusterStatus = kc.status.clone().unwrap_or_default();
    status.cluster_id = Some(id.clone());
    apply_status(api, kc, &status).await?;
    info!(cluster = %kc.name_any(), cluster_id = %id, "cluster id assigned");
    Ok(id)
}

/// Apply every object in order; returns the StatefulSet as stored.
async fn apply_objects(
    ctx: &Context,
    namespace: &str,
    objects: &ClusterObjects,
) -> Result<StatefulSet, Error> {
    let client = ctx.client.clone();
    apply(
        &Api::<ConfigMap>::namespaced(client.clone(), namespace),
        &objects.config_map,
    )
    .await?;
    let services = Api::<Service>::namespaced(client.clone(), namespace);
    apply(&services, &objects.headless_service).await?;
    apply(&services, &objects.bootstrap_service).await?;
    let sts = apply(
        &Api::<StatefulSet>::namespaced(client.clone(), namespace),
        &objects.statefulset,
    )
    .await?;
    apply(
        &Api::<PodDisruptionBudget>::namespaced(client, namespace),
        &objects.pod_disruption_budget,
    )
    .await?;
    Ok(sts)
}

fn condition_true(status: &KafkaClusterStatus, type_: &str) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// Events for what changed in this reconcile.
async fn publish_changes(
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
            ctx.event(
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
            ctx.event(
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
            ctx.event(&reference, type_, &reason, "Scale", message)
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
            ctx.event(
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
        ctx.event(
            &reference,
            EventType::Normal,
            "ClusterReady",
            "Reconcile",
            format!("{}/{} brokers ready", new.ready_replicas, new.replicas),
        )
        .await;
    }
}
