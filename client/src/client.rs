//! Cluster-level client: bootstrap, metadata cache, one lazy connection per broker and
//! routing of partition requests to the partition leader.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};

use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{MetadataRequest, TopicName};
use kafka_protocol::protocol::{Request, StrBytes};
use tokio::sync::OnceCell;
use tracing::debug;
use uuid::Uuid;

use crate::config::ClientConfig;
use crate::connection::Connection;
use crate::error::{check_error, kafka_error, ClientError};
use crate::metadata::ClusterMetadata;

/// Kafka error codes used for routing decisions.
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const LEADER_NOT_AVAILABLE: i16 = 5;

/// Where a partition request goes.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub conn: Arc<Connection>,
    pub topic_id: Uuid,
}

impl Route {
    /// Negotiate `R`'s version on this connection, staying at or below `max_by_name` (the
    /// last version that addresses topics by name) when the topic id is unknown.
    pub fn version<R: Request>(&self, max_by_name: i16) -> Result<i16, ClientError> {
        let cap = self.topic_id.is_nil().then_some(max_by_name);
        self.conn
            .broker_versions()
            .negotiate(R::KEY, R::VERSIONS, cap)
    }
}

type ConnCell = Arc<OnceCell<Arc<Connection>>>;

/// A client for a whole cluster. All methods take `&self`; share it behind an `Arc`.
pub struct Client {
    pub(crate) config: ClientConfig,
    bootstrap: Vec<String>,
    cache: RwLock<ClusterMetadata>,
    brokers: Mutex<HashMap<i32, ConnCell>>,
    /// Connection used for requests any broker can answer.
    any: tokio::sync::Mutex<Option<Arc<Connection>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("bootstrap", &self.bootstrap)
            .finish_non_exhaustive()
    }
}

pub(crate) fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

pub(crate) fn topic_name(s: &str) -> TopicName {
    TopicName(str_bytes(s))
}

impl Client {
    /// Connect to the first reachable bootstrap address (`host:port`) with default settings
    /// and load the broker list.
    pub async fn connect<S: AsRef<str>>(bootstrap: &[S]) -> Result<Client, ClientError> {
        Self::connect_with(bootstrap, ClientConfig::default()).await
    }

    /// Like [`Client::connect`] with explicit settings.
    pub async fn connect_with<S: AsRef<str>>(
        bootstrap: &[S],
        config: ClientConfig,
    ) -> Result<Client, ClientError> {
        if bootstrap.is_empty() {
            return Err(ClientError::InvalidArgument("empty bootstrap list".into()));
        }
        let client = Client {
            config,
            bootstrap: bootstrap.iter().map(|s| s.as_ref().to_string()).collect(),
            cache: RwLock::new(ClusterMetadata::default()),
            brokers: Mutex::new(HashMap::new()),
            any: tokio::sync::Mutex::new(None),
        };
        client.metadata(Some(&[])).await?;
        Ok(client)
    }

    /// The settings in use.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// A copy of the cached metadata (brokers, controller and the topics seen so far).
    pub fn cached_metadata(&self) -> ClusterMetadata {
        self.read_cache().clone()
    }

    /// Fetch metadata for `topics` (`None` = all topics, `Some(&[])` = brokers only) and
    /// update the cache. Topics with errors are returned with their `error_code` set.
    pub async fn metadata(&self, topics: Option<&[&str]>) -> Result<ClusterMetadata, ClientError> {
        let req = MetadataRequest::default()
            .with_topics(topics.map(|ts| {
                ts.iter()
                    .map(|t| MetadataRequestTopic::default().with_name(Some(topic_name(t))))
                    .collect()
            }))
            .with_allow_auto_topic_creation(false);
        let conn = self.any_connection().await?;
        let resp = match conn.send(req.clone()).await {
            Err(ClientError::Disconnected { .. }) => {
                // The cached connection died; one more try on a fresh one.
                self.any_connection().await?.send(req).await?
            }
            other => other?,
        };
        check_error(resp.error_code, None, || "metadata".to_string())?;
        let md = ClusterMetadata::from_response(&resp);
        self.write_cache().merge(&md, topics.is_none());
        Ok(md)
    }

    /// The connection to broker `id`, opened on first use (and reopened if it closed).
    pub async fn broker(&self, id: i32) -> Result<Arc<Connection>, ClientError> {
        loop {
            let cell = self.lock_brokers().entry(id).or_default().clone();
            if let Some(conn) = cell.get() {
                if !conn.is_closed() {
                    return Ok(conn.clone());
                }
                let mut brokers = self.lock_brokers();
                if brokers.get(&id).is_some_and(|cur| Arc::ptr_eq(cur, &cell)) {
                    brokers.remove(&id);
                }
                continue;
            }
            let addr = self
                .read_cache()
                .brokers
                .get(&id)
                .map(|b| b.addr())
                .ok_or_else(|| ClientError::InvalidArgument(format!("unknown broker id {id}")))?;
            let conn = cell
                .get_or_try_init(|| async {
                    Connection::connect(&addr, self.config.clone())
                        .await
                        .map(Arc::new)
                })
                .await?;
            return Ok(conn.clone());
        }
    }

    /// A connection to some broker, for requests any broker can answer. Reuses the
    /// bootstrap connection while it is open, then tries known brokers, then the
    /// bootstrap list again.
    pub async fn any_connection(&self) -> Result<Arc<Connection>, ClientError> {
        let mut any = self.any.lock().await;
        if let Some(conn) = any.as_ref().filter(|c| !c.is_closed()) {
            return Ok(conn.clone());
        }
        let mut last_err = None;
        let known: Vec<i32> = self.read_cache().brokers.keys().copied().collect();
        for id in known {
            match self.broker(id).await {
                Ok(conn) => {
                    *any = Some(conn.clone());
                    return Ok(conn);
                }
                Err(e) => last_err = Some(e),
            }
        }
        for addr in &self.bootstrap {
            match Connection::connect(addr, self.config.clone()).await {
                Ok(conn) => {
                    let conn = Arc::new(conn);
                    *any = Some(conn.clone());
                    return Ok(conn);
                }
                Err(e) => {
                    debug!(addr, error = %e, "bootstrap address failed");
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| ClientError::InvalidArgument("no brokers".into())))
    }

    /// The connection to the controller (as reported by metadata), or any broker when the
    /// controller is unknown.
    pub async fn controller(&self) -> Result<Arc<Connection>, ClientError> {
        let controller = {
            let cache = self.read_cache();
            Some(cache.controller_id).filter(|id| cache.brokers.contains_key(id))
        };
        match controller {
            Some(id) => self.broker(id).await,
            None => self.any_connection().await,
        }
    }

    /// The leader connection for `topic`/`partition`, refreshing metadata when the cache
    /// does not know a leader.
    pub async fn leader(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Arc<Connection>, ClientError> {
        Ok(self.route(topic, partition).await?.conn)
    }

    pub(crate) async fn route(&self, topic: &str, partition: i32) -> Result<Route, ClientError> {
        let cached = self.lookup_leader(topic, partition);
        let (leader, topic_id) = match cached {
            Some(Ok(found)) => found,
            _ => {
                self.metadata(Some(&[topic])).await?;
                match self.lookup_leader(topic, partition) {
                    Some(found) => found?,
                    None => {
                        return Err(kafka_error(
                            UNKNOWN_TOPIC_OR_PARTITION,
                            None,
                            format!("metadata for topic {topic}"),
                        ))
                    }
                }
            }
        };
        Ok(Route {
            conn: self.broker(leader).await?,
            topic_id,
        })
    }

    /// `None`: topic not in cache. `Some(Err)`: known but unusable (error / no leader).
    fn lookup_leader(
        &self,
        topic: &str,
        partition: i32,
    ) -> Option<Result<(i32, Uuid), ClientError>> {
        let cache = self.read_cache();
        let t = cache.topics.get(topic)?;
        let context = || format!("topic {topic} partition {partition}");
        Some((|| {
            check_error(t.error_code, None, context)?;
            let p = t.partition(partition).ok_or_else(|| {
                kafka_error(
                    UNKNOWN_TOPIC_OR_PARTITION,
                    Some(format!("topic has {} partitions", t.partitions.len())),
                    context(),
                )
            })?;
            check_error(p.error_code, None, context)?;
            if p.leader < 0 {
                check_error(LEADER_NOT_AVAILABLE, None, context)?;
            }
            Ok((p.leader, t.topic_id))
        })())
    }

    /// Forget what the cache knows about `topic` so the next request reloads it.
    pub(crate) fn invalidate(&self, topic: &str) {
        self.write_cache().topics.shift_remove(topic);
    }

    /// Run `op` against the partition leader, refreshing metadata and retrying (up to
    /// `config.retries` times) when leadership looks stale. Connection failures are retried
    /// only with `retry_disconnects` (safe for reads, not for produce).
    pub(crate) async fn with_leader<T, F, Fut>(
        &self,
        topic: &str,
        partition: i32,
        retry_disconnects: bool,
        op: F,
    ) -> Result<T, ClientError>
    where
        F: Fn(Route) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let mut attempt = 0;
        loop {
            let result = match self.route(topic, partition).await {
                Ok(route) => op(route).await,
                Err(e) => Err(e),
            };
            let retry = match &result {
                Err(e) if e.is_stale_metadata() => true,
                Err(ClientError::Disconnected { .. } | ClientError::Io { .. }) => retry_disconnects,
                _ => false,
            };
            match result {
                Err(e) if retry && attempt < self.config.retries => {
                    attempt += 1;
                    debug!(topic, partition, attempt, error = %e, "retrying after metadata refresh");
                    self.invalidate(topic);
                    tokio::time::sleep(self.config.retry_backoff).await;
                }
                other => return other,
            }
        }
    }

    /// Run `op` against the controller, refreshing metadata and retrying once on
    /// NOT_CONTROLLER.
    pub(crate) async fn with_controller<T, F, Fut>(&self, op: F) -> Result<T, ClientError>
    where
        F: Fn(Arc<Connection>) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        match op(self.controller().await?).await {
            Err(e) if e.code() == Some(41) => {
                debug!(error = %e, "controller moved, refreshing metadata");
                self.metadata(Some(&[])).await?;
                op(self.controller().await?).await
            }
            other => other,
        }
    }

    fn read_cache(&self) -> std::sync::RwLockReadGuard<'_, ClusterMetadata> {
        // Nothing panics while holding these locks; recover rather than propagate poison.
        self.cache.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_cache(&self) -> std::sync::RwLockWriteGuard<'_, ClusterMetadata> {
        self.cache.write().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_brokers(&self) -> std::sync::MutexGuard<'_, HashMap<i32, ConnCell>> {
        self.brokers.lock().unwrap_or_else(|e| e.into_inner())
    }
}
