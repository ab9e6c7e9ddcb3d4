//! The `KafkaCluster` controller: read -> validate -> build -> apply -> status.

pub mod status;

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use sluice_client::ClusterMetadata;
use tracing::{debug, info, warn};

use self::status::{
    cluster_status, decide_replicas, failure_status, is_paused_status, partition_health,
    paused_status, Observation, ScaleDecision, READY,
};
use super::{apply, apply_status, object_key, Context, Error, BOOTSTRAP_OVERRIDE_ANNOTATION};
use crate::builders::{
    self, build_all, config_map_name, label_selector, statefulset_name, ClusterObjects, CONFIG_FILE,
};
use crate::crd::{KafkaCluster, KafkaClusterStatus};
use crate::validate::{new_cluster_id, validate_cluster};

/// Controller name in metrics and logs.
pub const CONTROLLER: &str = "kafkacluster";

/// Longest wait for the cluster's metadata during a reconcile.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// Reconcile one `KafkaCluster`, recording metrics and resetting the backoff on success.
pub async fn reconcile(cluster: Arc<KafkaCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let start = Instant::now();
    let result = reconcile_inner(&cluster, &ctx).await;
    ctx.metrics.observe(
        CONTROLLER,
        start.elapsed(),
        result.as_ref().err().map(Error::kind),
    );
    if result.is_ok() {
        ctx.record_success(&object_key(cluster.as_ref()));
    }
    result
}

/// Retry a failed reconcile with exponential backoff.
pub fn error_policy(cluster: Arc<KafkaCluster>, error: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.record_failure(&object_key(cluster.as_ref()));
    warn!(
        cluster = %cluster.name_any(),
        namespace = %cluster.namespace().unwrap_or_default(),
        error = %error,
        retry_in = ?delay,
        "KafkaCluster reconcile failed"
    );
    Action::requeue(delay)
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
    let metadata = if any_ready {
        read_metadata(ctx, &admin_bootstrap).await
    } else {
        None
    };
    let scale = decide_replicas(view.replicas, current_replicas, metadata.as_ref());
    let mut applied_view = view;
    if let ScaleDecision::Blocked { keep, .. } = &scale {
        applied_view.replicas = *keep;
    }

    let objects = build_all(&applied_view);
    let statefulset = match apply_objects(ctx, &namespace, &objects).await {
        Ok(sts) => sts,
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

    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let pods = pods
        .list(&ListParams::default().labels(&label_selector(&name)))
        .await
        .map_err(Error::kube("list broker pods"))?
        .items;
    let observation = Observation {
        name: &name,
        generation,
        desired_replicas: kc.spec.replicas,
        statefulset: Some(&statefulset),
        pods: &pods,
        partitions: metadata.as_ref().map(partition_health),
        scale: &scale,
        cluster_id: &cluster_id,
        bootstrap_servers: bootstrap,
        label_selector: label_selector(&name),
    };
    let new_status = cluster_status(&observation, old, Timestamp::now());
    apply_status(&api, kc, &new_status).await?;
    publish_changes(ctx, kc, old, &new_status, current_replicas, &scale).await;

    let settled = condition_true(&new_status, READY) && matches!(scale, ScaleDecision::Apply(_));
    Ok(Action::requeue(if settled {
        ctx.settings.cluster_resync
    } else {
        ctx.settings.cluster_progress_resync
    }))
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

/// The cluster's metadata, or `None` (logged) when it cannot be read in time.
async fn read_metadata(ctx: &Context, bootstrap: &str) -> Option<ClusterMetadata> {
    let read = async {
        let admin = ctx.kafka.connect(bootstrap).await?;
        admin.metadata().await
    };
    match tokio::time::timeout(METADATA_TIMEOUT, read).await {
        Ok(Ok(md)) => Some(md),
        Ok(Err(e)) => {
            debug!(bootstrap, error = %e, "cannot read cluster metadata");
            None
        }
        Err(_) => {
            debug!(bootstrap, "timed out reading cluster metadata");
            None
        }
    }
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
    scale: &ScaleDecision,
) {
    let reference = kc.object_ref(&());
    let applied = match scale {
        ScaleDecision::Apply(n) => *n,
        ScaleDecision::Blocked { keep, .. } => *keep,
    };
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
    if let ScaleDecision::Blocked { message, .. } = scale {
        let was_blocked = old.and_then(|s| s.operation.as_ref()).is_some();
        if !was_blocked {
            ctx.event(
                &reference,
                EventType::Warning,
                "ScaleDownBlocked",
                "Scale",
                message.clone(),
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
