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
use uuid::Uuid;

use crate::broker::Broker;
pub use crate::broker::ServedListener;
use crate::clock::now_ms;
use crate::config::{BrokerConfig, FlushPolicy};
use crate::coordinator::{GroupCoordinator, OFFSETS_TOPIC};
use crate::http;
use crate::membership;
use crate::metadata::controller::partition_state::IsrChange;
use crate::metadata::controller::raft_log::{RaftLog, RpcForwarder};
use crate::metadata::controller::requests::ControllerRequest;
use crate::metadata::image::cache::Listeners;
use crate::metadata::quorum::{Quorum, QuorumConfig};
use crate::metadata::{
    BrokerInfo, Controller, Endpoint, MetadataCache, MetadataListener, NewTopic,
};
use crate::network::connection;
use crate::network::listeners::{distinct_host, join_host_port, ListenerError};
use crate::replica::{IsrUpdate, Partition, ReplicaManager};
use crate::shutdown::stopped;

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
    #[error("listeners: {0}")]
    Listeners(#[from] ListenerError),
    #[error("metadata quorum: {0}")]
    Quorum(#[from] crate::metadata::quorum::QuorumError),
    #[error("`cluster.id` must be set when `controller.quorum.bootstrap.servers` lists several brokers: every broker of one cluster needs the same id")]
    ClusterIdRequired,
    #[error("data directory {path} belongs to {what} `{found}`, but this broker is configured with `{configured}`")]
    Identity {
        path: std::path::PathBuf,
        what: &'static str,
        found: String,
        configured: String,
    },
    #[error("cannot join the cluster: {0}")]
    Register(#[from] crate::metadata::ControllerError),
    #[error("cannot load consumer groups from __consumer_offsets: {0}")]
    Offsets(crate::log::LogError),
}

/// A broker that is serving.
pub struct RunningBroker {
    pub broker: Arc<Broker>,
    /// The inter-broker listener's bound address (the only one for a single listener).
    pub kafka_addr: SocketAddr,
    pub http_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

/// Starts a broker: everything is ready to serve when this returns (the broker is
/// registered with the cluster's controller and unfenced).
pub async fn start(config: BrokerConfig) -> Result<RunningBroker, StartError> {
    let data_dir = config.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|source| StartError::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    let cluster_id = load_identity(&data_dir, &config)?;

    let plan = config.listeners.resolve()?;
    let mut kafka_sockets = Vec::with_capacity(plan.listeners.len());
    let mut served = Vec::with_capacity(plan.listeners.len());
    for listener in &plan.listeners {
        let bind_error = |source| StartError::Bind {
            addr: listener.bind,
            source,
        };
        let socket = TcpListener::bind(listener.bind).await.map_err(bind_error)?;
        let bound = socket.local_addr().map_err(bind_error)?;
        kafka_sockets.push(socket);
        let (mut host, port) = listener.advertised_address(bound);
        if listener.forwarding {
            host = distinct_host(&host, config.node_id);
            if !host.chars().any(|c| c.is_ascii_alphabetic()) {
                tracing::warn!(listener = %listener.name, %host, "a forwarding listener advertised as an IP address looks the same for every broker, which librdkafka-based clients cannot use; advertise a host name such as localhost");
            }
        }
        served.push(ServedListener {
            name: listener.name.clone(),
            bound,
            advertised: (host, port),
            forwarding: listener.forwarding,
        });
    }
    let inter_broker = &served[plan.inter_broker];
    let kafka_addr = inter_broker.bound;
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
    let incarnation = Uuid::new_v4();
    let http_address = config.advertised_http(
        plan.listeners[plan.inter_broker]
            .advertised
            .as_ref()
            .map(|(host, _)| host.as_str()),
        kafka_addr,
        http_addr,
    );
    // Leaders' ISR changes go to the controller (forward_isr_updates, below).
    let (isr_updates, isr_requests) = tokio::sync::mpsc::unbounded_channel();
    let replicas = Arc::new(ReplicaManager::new(config.clone(), isr_updates));
    let groups = Arc::new(GroupCoordinator::new(config.clone(), replicas.clone()));
    let metadata = Arc::new(MetadataCache::default());
    // Partitions open (and change role) before the coordinator loads groups from them.
    let listener: Arc<dyn MetadataListener> =
        Arc::new(Listeners(vec![replicas.clone(), groups.clone()]));
    let quorum = Quorum::start(
        QuorumConfig {
            node_id: config.node_id,
            cluster_id: cluster_id.clone(),
            http_address: http_address.clone(),
            dir: data_dir.join("__cluster_metadata"),
            bootstrap: config.quorum_bootstrap_servers.clone(),
            election_timeout: config.quorum_election_timeout,
            voter_count: config.quorum_voter_count,
            // The controller picks voters from the brokers whose heartbeats it sees.
            auto_manage_voters: false,
        },
        metadata.clone(),
        listener,
    )
    .await?;
    let controller = Arc::new(Controller::new(
        config.clone(),
        Arc::new(RaftLog(quorum.clone())),
        metadata.clone(),
        Some(Arc::new(RpcForwarder)),
    ));
    let broker = Arc::new(Broker::new(
        config.clone(),
        served.clone(),
        cluster_id,
        incarnation,
        metadata,
        quorum.clone(),
        controller.clone(),
        replicas,
        groups.clone(),
    ));

    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    // Peers reach this broker's controller and quorum over HTTP before it serves clients.
    tasks.spawn(http::serve(
        broker.clone(),
        quorum.router(),
        http_listener,
        shutdown_rx.clone(),
    ));
    tasks.spawn(
        controller
            .clone()
            .run_duties(offsets_topic(&config), shutdown_rx.clone()),
    );
    let me = BrokerInfo {
        id: config.node_id,
        host: inter_broker.advertised.0.clone(),
        port: inter_broker.advertised.1,
        listeners: served
            .iter()
            .map(|l| Endpoint {
                name: l.name.clone(),
                host: l.advertised.0.clone(),
                port: l.advertised.1,
            })
            .collect(),
        rack: config.rack.clone(),
        http_address,
        incarnation,
        fenced: false,
    };
    let caught_up: Arc<dyn Fn() -> bool + Send + Sync> = {
        let quorum = quorum.clone();
        Arc::new(move || quorum.caught_up())
    };
    {
        let caught_up = caught_up.clone();
        membership::join(
            &controller,
            me.clone(),
            move || caught_up(),
            shutdown_rx.clone(),
        )
        .await?;
    }
    if let Err(e) = controller
        .create_offsets_topic(&offsets_topic(&config))
        .await
    {
        tracing::info!(error = %e, "the offsets topic will be created later");
    }
    tasks.spawn(forward_isr_updates(
        controller.clone(),
        isr_requests,
        shutdown_rx.clone(),
    ));
    tasks.spawn(broker.replicas.clone().run(shutdown_rx.clone()));
    tasks.spawn(membership::heartbeat(
        broker.clone(),
        me,
        caught_up,
        shutdown_rx.clone(),
    ));
    for (index, socket) in kafka_sockets.into_iter().enumerate() {
        let l = &served[index];
        tracing::info!(listener = %l.name, bound = %l.bound, advertised = %join_host_port(&l.advertised.0, l.advertised.1), forwarding = l.forwarding, "listening");
        tasks.spawn(accept_loop(
            broker.clone(),
            socket,
            index,
            shutdown_rx.clone(),
        ));
    }
    tasks.spawn(groups.run_timers(shutdown_rx.clone()));
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
    // Ready means caught up with the metadata log too (what /readyz reports); the join above
    // saw it, but the quorum's view can lag a moment behind on a busy machine.
    let caught_up_deadline = tokio::time::Instant::now() + config.quorum_election_timeout * 5;
    while !broker.quorum.caught_up() && tokio::time::Instant::now() < caught_up_deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
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
    /// Clean shutdown: move partition leadership to other brokers (controlled shutdown), stop
    /// accepting, let in-flight requests finish, then flush and close every log so the next
    /// start skips recovery.
    pub async fn shutdown(mut self) {
        self.broker.ready.store(false, Ordering::Release);
        membership::controlled_shutdown(
            &self.broker,
            self.broker.config.controlled_shutdown_timeout,
        )
        .await;
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
        self.broker.quorum.shutdown().await;
        tracing::info!("broker stopped cleanly");
    }
}

/// Sends leaders' ISR changes to the controller. The outcome comes back through the
/// metadata log; a refused or lost change is decided again by the partition.
async fn forward_isr_updates(
    controller: Arc<Controller>,
    mut updates: tokio::sync::mpsc::UnboundedReceiver<IsrUpdate>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let update = tokio::select! {
            u = updates.recv() => match u {
                Some(u) => u,
                None => return,
            },
            _ = stopped(&mut shutdown) => return,
        };
        let controller = controller.clone();
        // Partitions are independent: one slow commit must not hold back the others.
        tokio::spawn(async move {
            let request = ControllerRequest::AlterPartition {
                topic_id: update.topic_id,
                partition: update.partition,
                change: IsrChange {
                    leader: update.leader,
                    leader_epoch: update.leader_epoch,
                    partition_epoch: update.partition_epoch,
                    new_isr: update.new_isr,
                },
            };
            if let Err(e) = controller.handle(request).await {
                tracing::debug!(partition = update.partition, error = %e, "ISR change refused");
            }
        });
    }
}

/// The internal offsets topic, compacted; its replication factor is capped by the number of
/// brokers that form the cluster, so a single broker can run groups on its own.
fn offsets_topic(config: &BrokerConfig) -> NewTopic {
    let brokers = config.quorum_bootstrap_servers.len().max(1) as i16;
    NewTopic {
        name: OFFSETS_TOPIC.to_string(),
        partitions: config.offsets_topic_num_partitions,
        replication_factor: config.offsets_topic_replication_factor.min(brokers),
        assignments: Default::default(),
        configs: [
            ("cleanup.policy", "compact"),
            ("segment.bytes", "104857600"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    }
}

async fn accept_loop(
    broker: Arc<Broker>,
    listener: TcpListener,
    listener_index: usize,
    shutdown: watch::Receiver<bool>,
) {
    let mut stop = shutdown.clone();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => {
                    connections.spawn(connection::serve(broker.clone(), socket, listener_index, shutdown.clone()));
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
            if config.cluster_id.is_none() && config.quorum_bootstrap_servers.len() > 1 {
                return Err(StartError::ClusterIdRequired);
            }
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
