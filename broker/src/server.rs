//! Starting and stopping a broker: load metadata and open partitions, bind the Kafka and HTTP
//! listeners, run background tasks, and shut down cleanly so the next start needs no recovery.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::broker::{now_ms, stopped, Broker};
use crate::config::{BrokerConfig, FlushPolicy};
use crate::coordinator::{GroupCoordinator, OFFSETS_TOPIC};
use crate::http;
use crate::metadata::store::MetadataStore;
use crate::metadata::{BrokerInfo, Controller, MetadataCache, NewTopic};
use crate::metrics::Metrics;
use crate::network::connection;
use crate::replica::{Partition, ReplicaManager};

/// How long shutdown waits for in-flight requests before closing the logs anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors that stop a broker from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot use data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Metadata(#[from] crate::metadata::store::StoreError),
    #[error("data directory {path} belongs to {what} `{found}`, but this broker is configured with `{configured}`")]
    Identity {
        path: std::path::PathBuf,
        what: &'static str,
        found: String,
        configured: String,
    },
    #[error("cannot register the broker or create internal topics: {0}")]
    Register(#[from] crate::metadata::ControllerError),
    #[error("cannot load consumer groups from __consumer_offsets: {0}")]
    Offsets(crate::log::LogError),
}

/// A broker that is serving.
pub struct RunningBroker {
    pub broker: Arc<Broker>,
    pub kafka_addr: SocketAddr,
    pub http_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

/// Starts a broker: everything is ready to serve when this returns.
pub async fn start(config: BrokerConfig) -> Result<RunningBroker, StartError> {
    let data_dir = config.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|source| StartError::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    let cluster_id = load_identity(&data_dir, &config)?;

    let kafka = TcpListener::bind(config.listener)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listener,
            source,
        })?;
    let kafka_addr = kafka.local_addr().map_err(|source| StartError::Bind {
        addr: config.listener,
        source,
    })?;
    let http_listener = TcpListener::bind(config.http_listener)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.http_listener,
            source,
        })?;
    let http_addr = http_listener
        .local_addr()
        .map_err(|source| StartError::Bind {
            addr: config.http_listener,
            source,
        })?;

    let config = Arc::new(config);
    // Replication wiring is the cluster integration's job; until then ISR changes (none on a
    // single broker) have no receiver.
    let (isr_updates, _) = tokio::sync::mpsc::unbounded_channel();
    let replicas = Arc::new(ReplicaManager::new(config.clone(), isr_updates));
    let metadata = Arc::new(MetadataCache::default());
    let (store, records) = MetadataStore::open(&data_dir.join("metadata.log"))?;
    // Opening partitions recovers their logs: blocking work, off the async workers.
    let (controller, replicas) = {
        let (metadata, replicas) = (metadata.clone(), replicas.clone());
        tokio::task::spawn_blocking(move || {
            (
                Controller::new(store, records, metadata, replicas.clone()),
                replicas,
            )
        })
        .await
        .expect("opening the metadata and partitions does not panic")
    };
    let (host, port) = config.advertised(kafka_addr);
    controller.register_broker(BrokerInfo {
        id: config.node_id,
        host,
        port,
        rack: config.rack.clone(),
        http_address: http_addr.to_string(),
        incarnation: uuid::Uuid::new_v4(),
        fenced: false,
    })?;
    ensure_offsets_topic(&controller, &config)?;
    let groups = Arc::new(GroupCoordinator::new(config.clone(), replicas.clone()));
    {
        let groups = groups.clone();
        tokio::task::spawn_blocking(move || groups.load())
            .await
            .expect("loading groups does not panic")
            .map_err(StartError::Offsets)?;
    }

    let broker = Arc::new(Broker {
        config: config.clone(),
        cluster_id,
        metadata,
        controller,
        replicas,
        groups: groups.clone(),
        metrics: Metrics::new(),
        ready: Default::default(),
    });
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tasks.spawn(accept_loop(broker.clone(), kafka, shutdown_rx.clone()));
    tasks.spawn(groups.run_timers(shutdown_rx.clone()));
    tasks.spawn(broker.replicas.clone().run(shutdown_rx.clone()));
    tasks.spawn(http::serve(
        broker.clone(),
        http_listener,
        shutdown_rx.clone(),
    ));
    tasks.spawn(every_partition(
        broker.clone(),
        config.log_retention_check_interval,
        shutdown_rx.clone(),
        roll_and_retain,
    ));
    tasks.spawn(every_partition(
        broker.clone(),
        config.log_cleaner_backoff,
        shutdown_rx.clone(),
        compact,
    ));
    if config.flush_policy == FlushPolicy::Interval {
        tasks.spawn(every_partition(
            broker.clone(),
            config.flush_interval,
            shutdown_rx,
            flush_if_dirty,
        ));
    }
    broker.ready.store(true, Ordering::Release);
    tracing::info!(%kafka_addr, %http_addr, node_id = config.node_id, cluster_id = %broker.cluster_id, "broker started");
    Ok(RunningBroker {
        broker,
        kafka_addr,
        http_addr,
        shutdown,
        tasks,
    })
}

impl RunningBroker {
    /// Clean shutdown: stop accepting, let in-flight requests finish, then flush and close
    /// every log so the next start skips recovery.
    pub async fn shutdown(mut self) {
        self.broker.ready.store(false, Ordering::Release);
        let _ = self.shutdown.send(true);
        if tokio::time::timeout(DRAIN_TIMEOUT, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            tracing::warn!("requests still running after {DRAIN_TIMEOUT:?}; closing logs anyway");
            self.tasks.abort_all();
        }
        let replicas = self.broker.replicas.clone();
        let _ = tokio::task::spawn_blocking(move || replicas.close_all()).await;
        tracing::info!("broker stopped cleanly");
    }
}

async fn accept_loop(broker: Arc<Broker>, listener: TcpListener, shutdown: watch::Receiver<bool>) {
    let mut stop = shutdown.clone();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => {
                    connections.spawn(connection::serve(broker.clone(), socket, shutdown.clone()));
                }
                // Out of file descriptors and the like: back off instead of spinning.
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = stopped(&mut stop) => break,
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Runs `work` over every hosted partition, off the async workers, every `period` until shutdown.
async fn every_partition(
    broker: Arc<Broker>,
    period: Duration,
    mut shutdown: watch::Receiver<bool>,
    work: fn(&Partition),
) {
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped(&mut shutdown) => return,
        }
        let partitions = broker.replicas.all();
        let _ = tokio::task::spawn_blocking(move || partitions.iter().for_each(|p| work(p))).await;
    }
}

/// Time-based rolling, retention and a producer-state snapshot
/// (`log.retention.check.interval.ms`).
fn roll_and_retain(p: &Partition) {
    let now = now_ms();
    if let Err(e) = p.snapshot_producer_state() {
        tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "producer state snapshot failed");
    }
    if let Err(e) = p.log().roll_if_due(now) {
        tracing::error!(topic = %p.topic, partition = p.index, error = %e, "segment roll failed");
    }
    match p.log().enforce_retention(now) {
        Ok(outcome) => {
            tracing::debug!(topic = %p.topic, partition = p.index, ?outcome, "retention checked")
        }
        Err(e) => {
            tracing::error!(topic = %p.topic, partition = p.index, error = %e, "retention failed")
        }
    }
}

/// Log compaction of `cleanup.policy=compact` partitions (`log.cleaner.backoff.ms`), below the
/// high watermark: a record that may still be truncated must not make an older copy obsolete.
fn compact(p: &Partition) {
    if !p.log().config().cleanup_compact {
        return;
    }
    match p.log().clean_below(now_ms(), false, p.high_watermark()) {
        Ok(outcome) if outcome.segments_cleaned > 0 => {
            tracing::info!(topic = %p.topic, partition = p.index, ?outcome, "log compacted")
        }
        Ok(_) => {}
        Err(e) => {
            tracing::error!(topic = %p.topic, partition = p.index, error = %e, "log compaction failed")
        }
    }
}

/// Interval flushing (`log.flush.interval.ms`): fsync what is not yet durable.
fn flush_if_dirty(p: &Partition) {
    if p.log().flushed_offset() < p.log_end_offset() {
        if let Err(e) = p.log().flush() {
            tracing::error!(topic = %p.topic, partition = p.index, error = %e, "flush failed");
        }
    }
}

/// Creates `__consumer_offsets` (compacted) on first start.
fn ensure_offsets_topic(controller: &Controller, config: &BrokerConfig) -> Result<(), StartError> {
    let topic = NewTopic {
        name: OFFSETS_TOPIC.to_string(),
        partitions: config.offsets_topic_num_partitions,
        replication_factor: 1,
        assignments: Default::default(),
        configs: [
            ("cleanup.policy", "compact"),
            ("segment.bytes", "104857600"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    };
    match controller.create_topic(topic, false) {
        Ok(_) => Ok(()),
        Err(e) if e.code == kafka_protocol::ResponseError::TopicAlreadyExists => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Reads or creates `meta.properties`: the cluster id and node id this data belongs to. A data
/// directory is never silently reused by another cluster or node.
fn load_identity(dir: &Path, config: &BrokerConfig) -> Result<String, StartError> {
    let path = dir.join("meta.properties");
    let io = |source| StartError::DataDir {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let props: std::collections::HashMap<String, String> =
                crate::config::parse_properties(&text)
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
            let found_cluster = props.get("cluster.id").cloned().unwrap_or_default();
            let found_node = props.get("node.id").cloned().unwrap_or_default();
            if let Some(configured) = config.cluster_id.as_ref().filter(|c| **c != found_cluster) {
                return Err(StartError::Identity {
                    path,
                    what: "cluster",
                    found: found_cluster,
                    configured: configured.clone(),
                });
            }
            if found_node != config.node_id.to_string() {
                return Err(StartError::Identity {
                    path,
                    what: "node",
                    found: found_node,
                    configured: config.node_id.to_string(),
                });
            }
            Ok(found_cluster)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let cluster_id = config.cluster_id.clone().unwrap_or_else(new_cluster_id);
            let text = format!(
                "version=1\ncluster.id={cluster_id}\nnode.id={}\n",
                config.node_id
            );
            let tmp = dir.join("meta.properties.tmp");
            std::fs::write(&tmp, text).map_err(io)?;
            std::fs::rename(&tmp, &path).map_err(io)?;
            Ok(cluster_id)
        }
        Err(e) => Err(io(e)),
    }
}

/// Kafka-style cluster id: a random UUID in URL-safe base64 without padding (22 characters).
fn new_cluster_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bits = uuid::Uuid::new_v4().as_u128();
    (0..22)
        .map(|i| ALPHABET[((bits >> (i * 6)) & 63) as usize] as char)
        .collect()
}
