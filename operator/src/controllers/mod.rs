//! The two controllers and what they share: the context, the error type, backoff,
//! server-side apply, status writes, Events (`events.rs`) and the bookkeeping around every
//! reconcile (`reconcile.rs`).

pub mod cluster;
pub mod events;
pub mod reconcile;
pub mod topic;

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use kube::runtime::reflector::Store;
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sluice_client::ClientError;

use self::events::EventPublisher;
use crate::crd::{KafkaCluster, KafkaTopic};
use crate::kafka::KafkaConnector;
use crate::metrics::Metrics;

/// The one field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "sluice-operator";

/// Annotation on a `KafkaCluster` overriding the bootstrap address the operator uses for
/// admin calls (e.g. when the operator runs outside the cluster's network).
pub const BOOTSTRAP_OVERRIDE_ANNOTATION: &str = "kafka.sluice.dev/bootstrap-servers";

/// Tunables of both controllers.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Broker image for clusters without `spec.image`.
    pub default_image: String,
    /// How often a settled `KafkaCluster` is looked at again (partition health).
    pub cluster_resync: Duration,
    /// How often a `KafkaCluster` that is not settled yet is looked at again.
    pub cluster_progress_resync: Duration,
    /// How often a `KafkaTopic` is checked for changes made behind the operator's back.
    pub topic_resync: Duration,
    /// Longest wait between retries of a failing reconcile.
    pub max_backoff: Duration,
    /// How often a `KafkaCluster` with a scaling workflow running is looked at again.
    pub operation_poll: Duration,
    /// Most partitions a scaling workflow moves at once (the throttle).
    pub max_partition_moves: usize,
}

impl Settings {
    /// Production defaults with `default_image`.
    pub fn new(default_image: impl Into<String>) -> Self {
        Settings {
            default_image: default_image.into(),
            cluster_resync: Duration::from_secs(300),
            cluster_progress_resync: Duration::from_secs(30),
            topic_resync: Duration::from_secs(60),
            max_backoff: Duration::from_secs(300),
            operation_poll: Duration::from_secs(2),
            max_partition_moves: 8,
        }
    }
}

/// What both controllers need.
pub struct Context {
    /// Kubernetes client.
    pub client: kube::Client,
    /// Publishes Events.
    pub events: EventPublisher,
    /// Opens Kafka admin connections.
    pub kafka: Arc<dyn KafkaConnector>,
    /// Tunables.
    pub settings: Settings,
    /// Reconcile metrics.
    pub metrics: Arc<Metrics>,
    /// Every `KafkaTopic` the topic controller watches (for the Conflict rule).
    pub topics: Store<KafkaTopic>,
    /// Consecutive failures per object, for backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    /// A context; `topics` is the topic controller's reflector store.
    pub fn new(
        client: kube::Client,
        kafka: Arc<dyn KafkaConnector>,
        settings: Settings,
        metrics: Arc<Metrics>,
        topics: Store<KafkaTopic>,
        instance: Option<String>,
    ) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.to_string(),
            instance,
        };
        Context {
            events: EventPublisher::new(client.clone(), reporter),
            client,
            kafka,
            settings,
            metrics,
            topics,
            failures: Mutex::default(),
        }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forget the failures of `key` after a successful reconcile.
    pub fn record_success(&self, key: &str) {
        self.failures().remove(key);
    }

    /// Count a failure of `key`; returns how long to wait before the next attempt.
    pub fn record_failure(&self, key: &str) -> Duration {
        let mut failures = self.failures();
        let n = failures.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        backoff(*n, self.settings.max_backoff)
    }
}

/// Delay before retry number `failures` (1-based): 2 s doubling up to `max`.
pub fn backoff(failures: u32, max: Duration) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    Duration::from_secs(2u64 << exp).min(max)
}

/// Key identifying an object in the failure table.
pub fn object_key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    )
}

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("{action}: {source}")]
    Kube {
        /// What was being done, e.g. `apply StatefulSet demo-kafka`.
        action: String,
        /// The error.
        #[source]
        source: kube::Error,
    },
    /// A Kafka admin call failed.
    #[error("{0}")]
    Kafka(#[from] ClientError),
    /// Adding or removing the finalizer failed.
    #[error("finalizer: {0}")]
    Finalizer(String),
    /// The reconcile cannot finish yet and must be retried (the reason is in the message).
    #[error("{0}")]
    Retry(String),
    /// The namespace is being deleted: nothing can be created in it any more, and everything in
    /// it is on its way out, so the reconcile stands down instead of retrying.
    #[error("{action}: namespace is being terminated")]
    NamespaceTerminating {
        /// What was being done.
        action: String,
    },
    /// The reconciled object was deleted while the reconcile ran: nothing left to report on.
    #[error("{0}: the object is gone")]
    Gone(String),
}

impl Error {
    /// Short kind for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "kube",
            Error::Kafka(_) => "kafka",
            Error::Finalizer(_) => "finalizer",
            Error::Retry(_) => "retry",
            Error::NamespaceTerminating { .. } => "namespace_terminating",
            Error::Gone(_) => "gone",
        }
    }

    /// Wrap a Kubernetes error with what was being done.
    pub fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let action = action.into();
        move |source| {
            if is_namespace_terminating(&source) {
                Error::NamespaceTerminating { action }
            } else {
                Error::Kube { action, source }
            }
        }
    }

    /// Whether the reconcile should stop without retrying, reporting or counting a failure.
    pub fn stands_down(&self) -> bool {
        matches!(self, Error::NamespaceTerminating { .. } | Error::Gone(_))
    }
}

/// The API server's answer to a write into a namespace that is being deleted: 403 with the
/// cause `NamespaceTerminating`.
pub(crate) fn is_namespace_terminating(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 403
        && s.details.as_ref().is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating")))
}

/// The result of a reconcile, with a stand-down (see `Error::stands_down`) turned into waiting
/// for the next change.
pub fn stand_down_or(result: Result<Action, Error>, object: &str) -> Result<Action, Error> {
    match result {
        Err(e) if e.stands_down() => {
            tracing::info!(object, reason = %e, "standing down");
            Ok(Action::await_change())
        }
        other => other,
    }
}

/// Server-side apply `obj` (force, one field manager); returns the object as stored.
pub async fn apply<K>(api: &Api<K>, obj: &K) -> Result<K, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .map_err(Error::kube(format!("apply {} {name}", K::kind(&()))))
}

/// Server-side apply the status of `obj` (the status subresource), as the same manager.
pub async fn apply_status<K, S>(api: &Api<K>, obj: &K, status: &S) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
    S: Serialize,
{
    let name = obj.name_any();
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map(|_| ())
    .map_err(|e| {
        let action = format!("update status of {} {name}", K::kind(&()));
        match e {
            kube::Error::Api(s) if s.code == 404 => Error::Gone(action),
            e => Error::kube(action)(e),
        }
    })
}

/// The bootstrap address to use for admin calls to `cluster`: the override annotation, or
/// `status.bootstrapServers`.
pub fn bootstrap_of(cluster: &KafkaCluster) -> Option<String> {
    cluster
        .annotations()
        .get(BOOTSTRAP_OVERRIDE_ANNOTATION)
        .filter(|s| !s.trim().is_empty())
        .cloned()
        .or_else(|| {
            cluster
                .status
                .as_ref()
                .and_then(|s| s.bootstrap_servers.clone())
        })
}

/// Requeue after `d`.
pub fn requeue(d: Duration) -> Action {
    Action::requeue(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let max = Duration::from_secs(300);
        let delays: Vec<u64> = (1..=10).map(|n| backoff(n, max).as_secs()).collect();
        assert_eq!(delays, [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(backoff(u32::MAX, max), max);
        assert_eq!(backoff(0, max).as_secs(), 2);
    }
}

#[cfg(test)]
mod scenario_tests;
