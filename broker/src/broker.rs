//! The broker's shared state, handed to every connection and background task.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use uuid::Uuid;

use crate::config::BrokerConfig;
use crate::coordinator::GroupCoordinator;
use crate::metadata::quorum::Quorum;
use crate::metadata::{Controller, ControllerError, MetadataCache};
use crate::metrics::Metrics;
use crate::replica::ReplicaManager;

/// Producer ids fetched from the controller per block, as Kafka's brokers do.
const PRODUCER_ID_BLOCK: i64 = 1000;

/// Everything a request handler can reach.
/// A Kafka listener as served: bound, advertised, forwarding or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedListener {
    pub name: String,
    pub bound: std::net::SocketAddr,
    pub advertised: (String, u16),
    pub forwarding: bool,
}

pub struct Broker {
    pub config: Arc<BrokerConfig>,
    /// The Kafka listeners being served, in `listeners` order; a request knows its listener
    /// by index.
    pub listeners: Vec<ServedListener>,
    pub cluster_id: String,
    /// Changes at every start: tells this process apart from earlier ones of the same id.
    pub incarnation: Uuid,
    pub metadata: Arc<MetadataCache>,
    /// The replicated metadata log this broker takes part in.
    pub quorum: Arc<Quorum>,
    pub controller: Arc<Controller>,
    pub replicas: Arc<ReplicaManager>,
    pub groups: Arc<GroupCoordinator>,
    pub metrics: Metrics,
    /// Serving: registered with the controller, partitions open, listener bound. Cleared at
    /// shutdown.
    pub ready: AtomicBool,
    /// The unused rest of this broker's producer id block: `[next, end)`.
    producer_ids: tokio::sync::Mutex<(i64, i64)>,
}

impl Broker {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Arc<BrokerConfig>,
        listeners: Vec<ServedListener>,
        cluster_id: String,
        incarnation: Uuid,
        metadata: Arc<MetadataCache>,
        quorum: Arc<Quorum>,
        controller: Arc<Controller>,
        replicas: Arc<ReplicaManager>,
        groups: Arc<GroupCoordinator>,
    ) -> Broker {
        let metrics = Metrics::new(&replicas.traffic());
        Broker {
            config,
            listeners,
            cluster_id,
            incarnation,
            metadata,
            quorum,
            controller,
            replicas,
            groups,
            metrics,
            ready: AtomicBool::new(false),
            producer_ids: tokio::sync::Mutex::new((0, 0)),
        }
    }

    /// A producer id never handed out before in this cluster.
    pub async fn next_producer_id(&self) -> Result<i64, ControllerError> {
        let mut block = self.producer_ids.lock().await;
        if block.0 >= block.1 {
            let (first, count) = self
                .controller
                .allocate_producer_ids(PRODUCER_ID_BLOCK)
                .await?;
            *block = (first, first + count);
        }
        let id = block.0;
        block.0 += 1;
        Ok(id)
    }
}
