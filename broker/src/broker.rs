//! The broker's shared state, handed to every connection and background task.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::BrokerConfig;
use crate::coordinator::GroupCoordinator;
use crate::metadata::{Controller, MetadataCache};
use crate::metrics::Metrics;
use crate::replica::ReplicaManager;

/// Everything a request handler can reach.
pub struct Broker {
    pub config: Arc<BrokerConfig>,
    pub cluster_id: String,
    pub metadata: Arc<MetadataCache>,
    pub controller: Controller,
    pub replicas: Arc<ReplicaManager>,
    pub groups: Arc<GroupCoordinator>,
    pub metrics: Metrics,
    /// Serving: metadata loaded, partitions open, listener bound. Cleared at shutdown.
    pub ready: AtomicBool,
}

impl Broker {
    /// Runs a controller call off the async workers: commits fsync the metadata log.
    pub async fn control<T, F>(self: &Arc<Self>, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(&Controller) -> T + Send + 'static,
    {
        let broker = self.clone();
        match tokio::task::spawn_blocking(move || f(&broker.controller)).await {
            Ok(v) => v,
            // A panic in the controller is a bug; surface it in this request's task.
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

/// Milliseconds since the Unix epoch, Kafka's timestamp unit.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Resolves once `shutdown` says stop (or its sender is gone).
pub async fn stopped(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
