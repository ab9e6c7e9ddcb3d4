//! The controller: the one place that decides metadata changes. The broker that leads the
//! metadata quorum runs it; every other broker forwards its requests there. A request is
//! checked against the current image by pure decision functions (topics, brokers,
//! partitions, partition_state, and placement of new replicas), becomes records, and is
//! committed through the metadata log (raft_log: the quorum as that log); every broker then
//! applies the records to its image. The controller also watches broker
//! heartbeats and fences brokers whose heartbeats stop, moves leadership back to preferred
//! replicas, and creates the internal offsets topic once enough brokers are up.

pub mod brokers;
pub mod liveness;
pub mod partition_state;
pub mod partitions;
pub mod placement;
pub mod raft_log;
pub mod requests;
pub mod topics;

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use uuid::Uuid;

use self::liveness::Liveness;
use self::requests::{ControllerRequest, ControllerResponse, WireError};
pub use self::topics::NewTopic;
use super::image::cache::MetadataCache;
use super::image::records::MetadataRecord;
use super::image::TopicImage;
use crate::config::BrokerConfig;

/// A boxed, sendable future: what the object-safe traits here return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A refused metadata change: the Kafka error and a message for the client.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ControllerError {
    pub code: ResponseError,
    pub message: String,
}

impl ControllerError {
    pub fn new(code: ResponseError, message: impl Into<String>) -> Self {
        ControllerError {
            code,
            message: message.into(),
        }
    }

    pub fn to_wire(&self) -> WireError {
        WireError {
            code: self.code.code(),
            message: self.message.clone(),
        }
    }

    pub fn from_wire(e: WireError) -> Self {
        ControllerError::new(
            ResponseError::try_from_code(e.code).unwrap_or(ResponseError::UnknownServerError),
            e.message,
        )
    }

    fn not_controller(message: impl Into<String>) -> Self {
        ControllerError::new(ResponseError::NotController, message)
    }
}

/// Why records could not be committed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProposeError {
    #[error("this broker is not the controller")]
    NotLeader,
    #[error("metadata log: {0}")]
    Failed(String),
}

/// The replicated metadata log as the controller uses it.
pub trait MetadataLog: Send + Sync {
    /// Commits records; resolves once they are applied to this broker's image.
    fn propose(&self, records: Vec<MetadataRecord>) -> BoxFuture<'_, Result<(), ProposeError>>;
    /// The controller (quorum leader): its id and HTTP address.
    fn leader(&self) -> Option<(i32, String)>;
    fn is_leader(&self) -> bool;
    /// Called on the leader with the brokers that are alive, to keep the voter set healthy.
    fn manage_voters(&self, _live: BTreeSet<i32>) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// Sends a request to the controller on another broker.
pub trait Forwarder: Send + Sync {
    fn forward(
        &self,
        http_address: String,
        request: ControllerRequest,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<ControllerResponse, ControllerError>>;
}

/// How long a forwarded admin request may take (a commit, plus one network hop).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// Decides and commits metadata changes on the quorum leader; forwards from other brokers.
pub struct Controller {
    node_id: i32,
    config: Arc<BrokerConfig>,
    log: Arc<dyn MetadataLog>,
    cache: Arc<MetadataCache>,
    forwarder: Option<Arc<dyn Forwarder>>,
    /// One decision at a time, each made against the image that includes the previous one.
    decide: tokio::sync::Mutex<()>,
    liveness: Mutex<Liveness>,
}

impl Controller {
    pub fn new(
        config: Arc<BrokerConfig>,
        log: Arc<dyn MetadataLog>,
        cache: Arc<MetadataCache>,
        forwarder: Option<Arc<dyn Forwarder>>,
    ) -> Controller {
        Controller {
            node_id: config.node_id,
            liveness: Mutex::new(Liveness::new(config.broker_session_timeout)),
            config,
            log,
            cache,
            forwarder,
            decide: tokio::sync::Mutex::new(()),
        }
    }

    /// The controller's broker id, if one is elected.
    pub fn controller_id(&self) -> Option<i32> {
        self.log.leader().map(|(id, _)| id)
    }

    pub fn is_controller(&self) -> bool {
        self.log.is_leader()
    }

    /// Runs a request here if this broker is the controller, else forwards it.
    pub async fn handle(
        &self,
        request: ControllerRequest,
    ) -> Result<ControllerResponse, ControllerError> {
        if self.log.is_leader() {
            return self.execute(request).await;
        }
        match (self.log.leader(), &self.forwarder) {
            (Some((id, addr)), Some(forwarder)) if id != self.node_id => {
                // A controller that stopped answering (paused, partitioned) must not hold up
                // heartbeats past the session timeout: by then a new controller is elected
                // and the next heartbeat goes there.
                let timeout = match request {
                    ControllerRequest::Heartbeat { .. } => self.config.broker_session_timeout / 3,
                    ControllerRequest::AlterPartition { .. } => self.config.broker_session_timeout,
                    _ => FORWARD_TIMEOUT,
                };
                forwarder.forward(addr, request, timeout).await
            }
            _ => Err(ControllerError::not_controller(
                "no controller is elected yet; retry",
            )),
        }
    }

    fn liveness(&self) -> std::sync::MutexGuard<'_, Liveness> {
        // Liveness holds timestamps only; a panic mid-update leaves usable data.
        self.liveness.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn commit(&self, records: Vec<MetadataRecord>) -> Result<(), ControllerError> {
        if records.is_empty() {
            return Ok(());
        }
        self.log.propose(records).await.map_err(|e| match e {
            ProposeError::NotLeader => {
                ControllerError::not_controller("controller leadership moved; retry")
            }
            ProposeError::Failed(m) => {
                tracing::error!(error = %m, "metadata commit failed");
                ControllerError::new(ResponseError::RequestTimedOut, m)
            }
        })
    }

    /// Runs a request on this broker, which must be the controller.
    pub async fn execute(
        &self,
        request: ControllerRequest,
    ) -> Result<ControllerResponse, ControllerError> {
        if !self.log.is_leader() {
            return Err(ControllerError::not_controller(
                "this broker is not the controller",
            ));
        }
        let _one_at_a_time = self.decide.lock().await;
        let image = self.cache.current();
        let config = &self.config;
        match request {
            ControllerRequest::RegisterBroker { broker } => {
                let id = broker.id;
                self.commit(brokers::register(&image, broker, config))
                    .await?;
                self.liveness().registered(id, Instant::now());
                Ok(ControllerResponse::Done)
            }
            ControllerRequest::Heartbeat {
                id,
                incarnation,
                caught_up,
            } => {
                let Some(info) = image.brokers.get(&id) else {
                    return Ok(ControllerResponse::Heartbeat {
                        fenced: true,
                        reregister: true,
                    });
                };
                if info.incarnation != incarnation {
                    return Ok(ControllerResponse::Heartbeat {
                        fenced: true,
                        reregister: true,
                    });
                }
                let shutting_down = self.liveness().seen(id, Instant::now());
                let mut fenced = info.fenced;
                if fenced && caught_up && !shutting_down {
                    self.commit(brokers::unfence(&image, id, config)).await?;
                    fenced = false;
                }
                Ok(ControllerResponse::Heartbeat {
                    fenced,
                    reregister: false,
                })
            }
            ControllerRequest::ControlledShutdown { id, incarnation } => {
                if image.brokers.get(&id).map(|b| b.incarnation) != Some(incarnation) {
                    return Ok(ControllerResponse::ShutdownProgress { still_leading: 0 });
                }
                self.liveness().shutting_down(id);
                self.commit(brokers::fence(&image, id, config)).await?;
                let after = self.cache.current();
                let still_leading = after
                    .topics
                    .values()
                    .flat_map(|t| t.partitions.values())
                    .filter(|p| p.leader == id)
                    .count();
                Ok(ControllerResponse::ShutdownProgress { still_leading })
            }
            ControllerRequest::UnregisterBroker { id } => {
                self.commit(brokers::unregister(&image, id, config)?)
                    .await?;
                self.liveness().forget(id);
                Ok(ControllerResponse::Done)
            }
            ControllerRequest::CreateTopic {
                topic,
                validate_only,
            } => {
                let (records, created) = topics::create_topic(&image, topic, Uuid::new_v4())?;
                if !validate_only {
                    self.commit(records).await?;
                }
                Ok(ControllerResponse::Topic { topic: created })
            }
            ControllerRequest::DeleteTopic { name } => {
                let (id, records) = topics::delete_topic(&image, &name)?;
                self.commit(records).await?;
                Ok(ControllerResponse::TopicDeleted { id })
            }
            ControllerRequest::CreatePartitions {
                name,
                count,
                assignments,
                validate_only,
            } => {
                let records = topics::create_partitions(&image, &name, count, &assignments)?;
                if !validate_only {
                    self.commit(records).await?;
                }
                Ok(ControllerResponse::Done)
            }
            ControllerRequest::SetTopicConfigs {
                name,
                configs,
                validate_only,
            } => {
                let records = topics::set_topic_configs(&image, &name, configs)?;
                if !validate_only {
                    self.commit(records).await?;
                }
                Ok(ControllerResponse::Done)
            }
            ControllerRequest::AllocateProducerIds { count } => {
                let count = count.clamp(1, 1_000_000);
                let first = image.next_producer_id;
                self.commit(vec![MetadataRecord::ProducerIdBlock {
                    next_producer_id: first + count,
                }])
                .await?;
                Ok(ControllerResponse::ProducerIds { first, count })
            }
            ControllerRequest::AlterPartition {
                topic_id,
                partition,
                change,
            } => {
                let records = partitions::alter_partition(&image, topic_id, partition, &change)?;
                self.commit(records).await?;
                Ok(ControllerResponse::Done)
            }
            ControllerRequest::AlterReassignments { moves } => {
                let (records, results) = partitions::alter_reassignments(&image, &moves);
                self.commit(records).await?;
                Ok(ControllerResponse::Reassignments { results })
            }
        }
    }

    /// The controller's periodic duties, while this broker leads the quorum: fence brokers
    /// whose heartbeats stopped, elect leaders for leaderless partitions, rebalance leadership,
    /// create the offsets topic, keep the voter set healthy.
    pub async fn run_duties(
        self: Arc<Self>,
        offsets_topic: NewTopic,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(self.config.broker_heartbeat_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was_leader = false;
        let mut last_rebalance = Instant::now();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = crate::shutdown::stopped(&mut shutdown) => return,
            }
            let leader = self.log.is_leader();
            if leader && !was_leader {
                // A new controller has seen no heartbeats yet: give every broker a full
                // session before fencing it.
                let image = self.cache.current();
                let now = Instant::now();
                let mut liveness = self.liveness();
                liveness.reset(image.brokers.keys().copied(), now);
                last_rebalance = now;
            }
            was_leader = leader;
            if !leader {
                continue;
            }
            if let Err(e) = self.duties_once(&offsets_topic, &mut last_rebalance).await {
                tracing::debug!(error = %e, "controller duties deferred");
            }
        }
    }

    /// Creates the internal offsets topic once enough brokers are live for its replication
    /// factor. Called by the duties loop, and once right after a broker joins so a single
    /// broker serves groups from its first request.
    pub async fn create_offsets_topic(&self, topic: &NewTopic) -> Result<(), ControllerError> {
        let _one_at_a_time = self.decide.lock().await;
        self.create_offsets_topic_locked(topic).await
    }

    async fn create_offsets_topic_locked(&self, topic: &NewTopic) -> Result<(), ControllerError> {
        if !self.log.is_leader() {
            return Ok(());
        }
        let image = self.cache.current();
        if image.topic(&topic.name).is_some()
            || image.live_brokers().count() < topic.replication_factor as usize
        {
            return Ok(());
        }
        match topics::create_topic(&image, topic.clone(), Uuid::new_v4()) {
            Ok((records, _)) => {
                tracing::info!(topic = %topic.name, "creating the offsets topic");
                self.commit(records).await
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot create the offsets topic");
                Ok(())
            }
        }
    }

    async fn duties_once(
        &self,
        offsets_topic: &NewTopic,
        last_rebalance: &mut Instant,
    ) -> Result<(), ControllerError> {
        let _one_at_a_time = self.decide.lock().await;
        let now = Instant::now();
        let image = self.cache.current();
        let expired = self
            .liveness()
            .expired(image.live_brokers().map(|b| b.id), now);
        for id in expired {
            tracing::warn!(broker = id, "broker heartbeats stopped: fencing it");
            let image = self.cache.current();
            self.commit(brokers::fence(&image, id, &self.config))
                .await?;
        }
        let image = self.cache.current();
        self.commit(brokers::elect_leaderless(&image, &self.config))
            .await?;
        if self.config.auto_leader_rebalance
            && now.duration_since(*last_rebalance) >= self.config.leader_imbalance_check_interval
        {
            *last_rebalance = now;
            let image = self.cache.current();
            self.commit(partitions::preferred_leaders(&image, &self.config))
                .await?;
        }
        self.create_offsets_topic_locked(offsets_topic).await?;
        let live: BTreeSet<i32> = self.cache.current().live_brokers().map(|b| b.id).collect();
        self.log.manage_voters(live).await;
        Ok(())
    }

    /// CreateTopics / auto-creation: the topic as created (or as it would be).
    pub async fn create_topic(
        &self,
        topic: NewTopic,
        validate_only: bool,
    ) -> Result<TopicImage, ControllerError> {
        match self
            .handle(ControllerRequest::CreateTopic {
                topic,
                validate_only,
            })
            .await?
        {
            ControllerResponse::Topic { topic } => Ok(topic),
            other => Err(unexpected(other)),
        }
    }

    /// DeleteTopics: the deleted topic's id.
    pub async fn delete_topic(&self, name: &str) -> Result<Uuid, ControllerError> {
        match self
            .handle(ControllerRequest::DeleteTopic { name: name.into() })
            .await?
        {
            ControllerResponse::TopicDeleted { id } => Ok(id),
            other => Err(unexpected(other)),
        }
    }

    pub async fn create_partitions(
        &self,
        name: &str,
        count: i32,
        assignments: std::collections::BTreeMap<i32, Vec<i32>>,
        validate_only: bool,
    ) -> Result<(), ControllerError> {
        self.handle(ControllerRequest::CreatePartitions {
            name: name.into(),
            count,
            assignments,
            validate_only,
        })
        .await
        .map(|_| ())
    }

    pub async fn set_topic_configs(
        &self,
        name: &str,
        configs: std::collections::BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<(), ControllerError> {
        self.handle(ControllerRequest::SetTopicConfigs {
            name: name.into(),
            configs,
            validate_only,
        })
        .await
        .map(|_| ())
    }

    /// A block of producer ids `[first, first + count)` for this broker to hand out.
    pub async fn allocate_producer_ids(&self, count: i64) -> Result<(i64, i64), ControllerError> {
        match self
            .handle(ControllerRequest::AllocateProducerIds { count })
            .await?
        {
            ControllerResponse::ProducerIds { first, count } => Ok((first, count)),
            other => Err(unexpected(other)),
        }
    }

    /// How long a heartbeat may be late before the broker is fenced.
    pub fn session_timeout(&self) -> Duration {
        self.config.broker_session_timeout
    }
}

/// A response of the wrong kind: only a controller of another version could send it.
fn unexpected(response: ControllerResponse) -> ControllerError {
    ControllerError::new(
        ResponseError::UnknownServerError,
        format!("unexpected controller response {response:?}"),
    )
}

#[cfg(test)]
mod tests;
