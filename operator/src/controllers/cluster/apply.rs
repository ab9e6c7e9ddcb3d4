//! The cluster controller's acting steps (I/O out): apply the built objects, then carry out
//! the scaling step on the brokers.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::DeleteParams;
use kube::{Api, ResourceExt};
use tracing::{info, warn};

use super::scaling::ScalingPlan;
use crate::builders::ClusterObjects;
use crate::controllers::{apply, Context, Error};
use crate::crd::KafkaCluster;
use crate::kafka::KafkaAdmin;

/// Apply the external listeners' Services and delete those of `existing` no longer wanted
/// (a removed listener, a removed broker); returns the Services as stored (allocated
/// nodePorts, load-balancer status).
pub(super) async fn apply_external_services(
    ctx: &Context,
    namespace: &str,
    wanted: &[Service],
    existing: &[Service],
) -> Result<Vec<Service>, Error> {
    let api = Api::<Service>::namespaced(ctx.client.clone(), namespace);
    let mut stored = Vec::with_capacity(wanted.len());
    for svc in wanted {
        stored.push(apply(&api, svc).await?);
    }
    for old in existing {
        let name = old.name_any();
        if wanted
            .iter()
            .any(|w| w.metadata.name.as_deref() == Some(&name))
        {
            continue;
        }
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => info!(service = %name, "listener Service no longer wanted: deleted"),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(Error::kube(format!("delete Service {name}"))(e)),
        }
    }
    Ok(stored)
}

/// Apply every object in order; returns the StatefulSet as stored.
pub(super) async fn apply_objects(
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

/// Starts the moves and unregisters the brokers `scaling` calls for. A scale-down whose
/// brokers are all unregistered ends here; failures are reported in the operation's
/// message and retried by the next reconcile.
pub(super) async fn carry_out(
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
