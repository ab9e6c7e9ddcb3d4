//! The `KafkaCluster` controller. Each reconcile is a pipeline, I/O at the edges and pure
//! steps between: read the cluster id, validate the spec, observe what runs, plan the
//! scaling step, build the objects, apply them and carry out the step, then write the
//! status and publish Events (`reconcile_cluster`).

mod apply;
mod observe;
mod report;
pub mod scaling;
pub mod status;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use tracing::{info_span, warn, Span};

use self::apply::{apply_external_services, apply_objects, carry_out};
use self::observe::{cluster_id, observe, Observed};
use self::report::{publish_changes, report_failure, report_paused};
use self::scaling::{ScalingInput, ScalingPlan};
use self::status::{
    cluster_status, condition_true, listener_statuses, partition_health, Observation, READY,
};
use super::reconcile::Reconciled;
use super::{apply_status, Context, Error, Settings};
use k8s_openapi::api::core::v1::Service;

use crate::builders::{
    build_all, external_services, internal_bootstrap_servers, label_selector, statefulset_name,
    ClusterObjects, ExternalAddresses,
};
use crate::crd::{KafkaCluster, KafkaClusterStatus};
use crate::validate::{validate_cluster, ValidatedCluster};

/// Controller name in metrics and logs.
pub const CONTROLLER: &str = "kafkacluster";

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
        reconcile_cluster(&self, &ctx).await
    }
}

/// One reconcile of `kc`, step by step.
async fn reconcile_cluster(kc: &KafkaCluster, ctx: &Context) -> Result<Action, Error> {
    if kc.metadata.deletion_timestamp.is_some() {
        // Owned objects go with it (owner references); nothing to do.
        return Ok(Action::await_change());
    }
    let namespace = kc.namespace().unwrap_or_default();
    let api: Api<KafkaCluster> = Api::namespaced(ctx.client.clone(), &namespace);
    if kc.spec.paused {
        report_paused(ctx, &api, kc).await?;
        return Ok(Action::await_change());
    }

    let cluster_id = cluster_id(kc, ctx, &api, &namespace).await?;
    let spec = match validate_cluster(kc, &ctx.settings.default_image, &cluster_id) {
        Ok(spec) => spec,
        Err(invalid) => {
            report_failure(
                ctx,
                &api,
                kc,
                "InvalidSpec",
                "Validate",
                invalid.to_string(),
            )
            .await?;
            // Nothing to retry until the spec changes.
            return Ok(Action::await_change());
        }
    };
    let observed = observe(kc, &spec, ctx).await?;
    let mut scaling = plan_scaling(kc, &spec, &observed, &ctx.settings, Timestamp::now());
    // The external listeners' Services first: the brokers advertise the nodePorts and
    // load-balancer addresses they get.
    let planned = with_replicas(&spec, scaling.statefulset_replicas);
    let applied = apply_external_services(
        ctx,
        &namespace,
        &external_services(&planned),
        &observed.external_services,
    )
    .await;
    let stored_services = match applied {
        Ok(services) => services,
        Err(e) if e.stands_down() => return Err(e),
        Err(e) => {
            report_failure(ctx, &api, kc, "ApplyFailed", "Apply", e.to_string()).await?;
            return Err(e);
        }
    };
    let addresses = ExternalAddresses::from_services(&planned, &stored_services);
    scaling.statefulset_replicas = startable_brokers(
        scaling.statefulset_replicas,
        addresses.addressable_brokers(&planned),
        observed.running_replicas,
    );
    let objects = build_objects(&spec, &scaling, &addresses);
    let statefulset = match apply_objects(ctx, &namespace, &objects).await {
        Ok(sts) => sts,
        Err(e) if e.stands_down() => return Err(e),
        Err(e) => {
            report_failure(ctx, &api, kc, "ApplyFailed", "Apply", e.to_string()).await?;
            return Err(e);
        }
    };
    if let Some(kafka) = &observed.kafka {
        carry_out(ctx, kc, kafka.admin.as_ref(), &mut scaling).await;
    }
    let new_status = observed_status(
        kc,
        &planned,
        &observed,
        &scaling,
        &statefulset,
        &stored_services,
        Timestamp::now(),
    );
    apply_status(&api, kc, &new_status).await?;
    publish_changes(
        ctx,
        kc,
        kc.status.as_ref(),
        &new_status,
        observed.running_replicas,
        &scaling,
    )
    .await;
    Ok(next_action(&new_status, &scaling, &ctx.settings))
}

/// The scaling step the spec and what runs call for (pure).
fn plan_scaling(
    kc: &KafkaCluster,
    spec: &ValidatedCluster,
    observed: &Observed,
    settings: &Settings,
    now: Timestamp,
) -> ScalingPlan {
    let sts_name = statefulset_name(&spec.name);
    let ordinals: BTreeSet<i32> = observed
        .pods
        .iter()
        .filter_map(|p| pod_ordinal(&sts_name, &p.name_any()))
        .collect();
    scaling::plan(&ScalingInput {
        desired: spec.replicas,
        running: observed.running_replicas,
        cluster: observed.kafka.as_ref().map(|k| &k.layout),
        pods: &ordinals,
        previous: kc.status.as_ref().and_then(|s| s.operation.as_ref()),
        max_moves: settings.max_partition_moves,
        now,
    })
}

/// The ordinal of a StatefulSet pod from its name (`<sts>-<ordinal>`).
fn pod_ordinal(statefulset: &str, pod: &str) -> Option<i32> {
    pod.strip_prefix(statefulset)?
        .strip_prefix('-')?
        .parse()
        .ok()
}

/// `spec` with `replicas` brokers (pure).
fn with_replicas(spec: &ValidatedCluster, replicas: i32) -> ValidatedCluster {
    ValidatedCluster {
        replicas,
        ..spec.clone()
    }
}

/// How many brokers the StatefulSet may run (pure): the scaling step's count, but a broker
/// whose external address is not known yet (a load balancer without an address) does not
/// start, so it never advertises a wrong one. Brokers already running are not stopped for
/// that.
fn startable_brokers(planned: i32, addressable: i32, running: Option<i32>) -> i32 {
    planned.min(addressable.max(running.unwrap_or(0)))
}

/// The objects to apply: the spec's, with as many brokers as the scaling step allows,
/// advertising `addresses` (pure).
fn build_objects(
    spec: &ValidatedCluster,
    scaling: &ScalingPlan,
    addresses: &ExternalAddresses,
) -> ClusterObjects {
    build_all(
        &with_replicas(spec, scaling.statefulset_replicas),
        addresses,
    )
}

/// The status after a successful apply (pure). `planned`: the spec with the brokers the
/// scaling step plans; `services`: the external listeners' Services as stored.
fn observed_status(
    kc: &KafkaCluster,
    planned: &ValidatedCluster,
    observed: &Observed,
    scaling: &ScalingPlan,
    statefulset: &StatefulSet,
    services: &[Service],
    now: Timestamp,
) -> KafkaClusterStatus {
    let name = kc.name_any();
    let (listeners, pending_addresses) =
        listener_statuses(planned, planned.replicas, services, &observed.pods);
    let observation = Observation {
        name: &name,
        generation: kc.metadata.generation,
        desired_replicas: kc.spec.replicas,
        statefulset: Some(statefulset),
        pods: &observed.pods,
        partitions: observed
            .kafka
            .as_ref()
            .map(|k| partition_health(&k.metadata)),
        scaling,
        cluster_id: &planned.cluster_id,
        bootstrap_servers: internal_bootstrap_servers(planned),
        label_selector: label_selector(&name),
        listeners,
        pending_addresses,
    };
    cluster_status(&observation, kc.status.as_ref(), now)
}

/// When to look again (pure): soon while a scaling workflow runs, later while the cluster
/// settles, rarely once it has.
fn next_action(status: &KafkaClusterStatus, scaling: &ScalingPlan, settings: &Settings) -> Action {
    let running_operation = scaling
        .operation
        .as_ref()
        .is_some_and(|o| o.phase != scaling::REFUSED);
    let settled = condition_true(status, READY) && scaling.operation.is_none();
    Action::requeue(if running_operation {
        settings.operation_poll
    } else if settled {
        settings.cluster_resync
    } else {
        settings.cluster_progress_resync
    })
}

#[cfg(test)]
mod tests {
    use super::startable_brokers;

    #[test]
    fn brokers_without_an_address_wait_but_running_ones_stay() {
        assert_eq!(startable_brokers(3, 3, None), 3);
        assert_eq!(startable_brokers(3, 1, None), 1, "a new cluster waits");
        assert_eq!(startable_brokers(5, 3, Some(3)), 3, "a scale-up waits");
        assert_eq!(
            startable_brokers(3, 1, Some(3)),
            3,
            "running brokers are not stopped"
        );
        assert_eq!(startable_brokers(2, 5, Some(3)), 2, "a scale-down goes on");
    }
}
