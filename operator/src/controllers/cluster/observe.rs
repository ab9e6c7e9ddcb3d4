//! The cluster controller's reading steps (I/O in): the cluster id, then the StatefulSet,
//! the broker pods and what the brokers report.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use sluice_client::ClusterMetadata;
use tracing::{debug, info};

use crate::builders::{
    config_map_name, internal_bootstrap_servers, label_selector, statefulset_name, CONFIG_FILE,
    LISTENER_LABEL,
};
use crate::controllers::{apply_status, Context, Error, BOOTSTRAP_OVERRIDE_ANNOTATION};
use crate::crd::{KafkaCluster, KafkaClusterStatus};
use crate::kafka::KafkaAdmin;
use crate::placement::ObservedLayout;
use crate::validate::{new_cluster_id, ValidatedCluster};

/// Longest wait for the cluster's metadata during a reconcile.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// The cluster id: from the status, else from the ConfigMap a previous reconcile wrote
/// (the status write may not have reached this reconcile's copy yet), else a new one,
/// which is stored in the status before anything uses it.
pub(super) async fn cluster_id(
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

/// What runs: what one reconcile read about the cluster's StatefulSet, pods and brokers.
pub(super) struct Observed {
    /// The StatefulSet's `spec.replicas` (`None`: not created yet).
    pub running_replicas: Option<i32>,
    /// The broker pods.
    pub pods: Vec<Pod>,
    /// What the brokers report, when a broker is ready and answered in time.
    pub kafka: Option<KafkaState>,
    /// The external listeners' Services that exist (to remove those no longer wanted).
    pub external_services: Vec<Service>,
}

/// What the brokers report, and the connection to act on them.
pub(super) struct KafkaState {
    /// Admin connection to the cluster.
    pub admin: Arc<dyn KafkaAdmin>,
    /// The cluster's metadata.
    pub metadata: ClusterMetadata,
    /// The replica layout for the scaling workflows.
    pub layout: ObservedLayout,
}

/// Read the StatefulSet, the brokers (only once one is ready, through the internal
/// listener), the broker pods and the external listeners' Services.
pub(super) async fn observe(
    kc: &KafkaCluster,
    spec: &ValidatedCluster,
    ctx: &Context,
) -> Result<Observed, Error> {
    let name = kc.name_any();
    let namespace = kc.namespace().unwrap_or_default();
    let sts_api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &namespace);
    let sts_name = statefulset_name(&name);
    let current = sts_api
        .get_opt(&sts_name)
        .await
        .map_err(Error::kube(format!("get StatefulSet {sts_name}")))?;
    let running_replicas = current
        .as_ref()
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.replicas);
    let any_ready = current
        .as_ref()
        .and_then(|s| s.status.as_ref())
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
        > 0;
    let admin_bootstrap = kc
        .annotations()
        .get(BOOTSTRAP_OVERRIDE_ANNOTATION)
        .cloned()
        .unwrap_or_else(|| internal_bootstrap_servers(spec));
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
    let services_api: Api<Service> = Api::namespaced(ctx.client.clone(), &namespace);
    let external_services = services_api
        .list(&ListParams::default().labels(&format!(
            "app.kubernetes.io/instance={name},{LISTENER_LABEL}"
        )))
        .await
        .map_err(Error::kube("list listener Services"))?
        .items;
    Ok(Observed {
        running_replicas,
        pods,
        kafka,
        external_services,
    })
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
            let layout = ObservedLayout::from_metadata(&metadata, &moving, voters);
            Some(KafkaState {
                admin,
                metadata,
                layout,
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
