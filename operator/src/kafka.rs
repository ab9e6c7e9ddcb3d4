//! The operator's view of a Kafka cluster: a small admin trait the controllers use, and its
//! implementation over `sluice-client`. The trait keeps reconcile logic testable without a
//! broker; the real implementation is exercised against the broker binary in
//! `tests/topic_admin_broker.rs`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use sluice_client::{
    Client, ClientConfig, ClientError, ClusterMetadata, NewTopic, OngoingReassignment,
    OngoingReassignments,
};

/// Kafka ConfigSource of a config set on the topic itself (DYNAMIC_TOPIC_CONFIG).
const SOURCE_TOPIC: i8 = 1;
/// UNKNOWN_TOPIC_OR_PARTITION.
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;

/// What the cluster reports about one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicState {
    /// Topic id (nil when the broker reports none).
    pub topic_id: uuid::Uuid,
    /// Replica broker ids of each partition, by partition index.
    pub assignment: BTreeMap<i32, Vec<i32>>,
    /// Configs set on the topic (not inherited from broker defaults).
    pub configs: BTreeMap<String, String>,
}

impl TopicState {
    /// Number of partitions.
    pub fn partitions(&self) -> i32 {
        i32::try_from(self.assignment.len()).unwrap_or(i32::MAX)
    }

    /// Replication factor: the largest replica set (partitions being moved may differ).
    pub fn replication_factor(&self) -> i32 {
        self.assignment
            .values()
            .map(|r| i32::try_from(r.len()).unwrap_or(i32::MAX))
            .max()
            .unwrap_or(0)
    }
}

/// Outcome of a per-partition admin call, by partition.
pub type PartitionOutcomes = BTreeMap<i32, Result<(), ClientError>>;

/// Admin calls on one cluster. Errors are `sluice_client` errors, so a Kafka error code
/// keeps its name (`TopicAlreadyExists`, `InvalidReplicationFactor`, ...).
pub trait KafkaAdmin: Send + Sync {
    /// Metadata of all topics and brokers.
    fn metadata(&self) -> BoxFuture<'_, Result<ClusterMetadata, ClientError>>;
    /// One topic, `None` when it does not exist.
    fn describe_topic<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<TopicState>, ClientError>>;
    /// Create a topic; returns its id.
    fn create_topic<'a>(
        &'a self,
        topic: &'a NewTopic,
    ) -> BoxFuture<'a, Result<uuid::Uuid, ClientError>>;
    /// Grow a topic to `total` partitions.
    fn create_partitions<'a>(
        &'a self,
        name: &'a str,
        total: i32,
    ) -> BoxFuture<'a, Result<(), ClientError>>;
    /// Set and remove topic configs (others are left alone).
    fn alter_topic_configs<'a>(
        &'a self,
        name: &'a str,
        set: &'a [(String, String)],
        delete: &'a [String],
    ) -> BoxFuture<'a, Result<(), ClientError>>;
    /// Delete a topic. A topic that is already gone is not an error.
    fn delete_topic<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), ClientError>>;
    /// Start moving partitions of `topic` to the replica lists in `targets` (replication
    /// factor changes allowed). The outer error is for the request; each partition has its
    /// own outcome (e.g. InvalidReplicaAssignment for a broker that does not exist).
    fn alter_partition_reassignments<'a>(
        &'a self,
        topic: &'a str,
        targets: &'a BTreeMap<i32, Vec<i32>>,
    ) -> BoxFuture<'a, Result<PartitionOutcomes, ClientError>>;
    /// Reassignments in progress among `partitions` of `topic`, by partition (partitions
    /// not being moved are absent).
    fn list_partition_reassignments<'a>(
        &'a self,
        topic: &'a str,
        partitions: &'a [i32],
    ) -> BoxFuture<'a, Result<BTreeMap<i32, OngoingReassignment>, ClientError>>;

    /// Every reassignment in progress in the cluster, by `(topic, partition)`.
    fn all_reassignments(&self) -> BoxFuture<'_, Result<OngoingReassignments, ClientError>>;
    /// Remove a stopped broker from the cluster for good.
    fn unregister_broker(&self, id: i32) -> BoxFuture<'_, Result<(), ClientError>>;
    /// The metadata quorum's voters.
    fn quorum_voters(&self) -> BoxFuture<'_, Result<Vec<i32>, ClientError>>;

    /// Ids of the live brokers: those Metadata offers to clients (fenced brokers are not).
    fn live_brokers(&self) -> BoxFuture<'_, Result<Vec<i32>, ClientError>> {
        async move { Ok(self.metadata().await?.brokers.keys().copied().collect()) }.boxed()
    }
}

/// Opens [`KafkaAdmin`]s by bootstrap address.
pub trait KafkaConnector: Send + Sync {
    /// An admin for the cluster reachable at `bootstrap` (`host:port[,host:port...]`).
    fn connect<'a>(
        &'a self,
        bootstrap: &'a str,
    ) -> BoxFuture<'a, Result<Arc<dyn KafkaAdmin>, ClientError>>;
}

/// Whether an error says the connection (not the request) failed, so a new connection
/// may help.
pub fn is_connection_error(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Io { .. } | ClientError::Disconnected { .. } | ClientError::Timeout { .. }
    )
}

/// [`KafkaConnector`] over `sluice-client`, keeping one client per bootstrap address and
/// dropping it when a call fails at the connection level.
pub struct SluiceKafka {
    config: ClientConfig,
    clients: Arc<Mutex<HashMap<String, Arc<Client>>>>,
}

impl SluiceKafka {
    /// Short timeouts: a reconcile should fail fast and retry with backoff rather than hang.
    pub fn new() -> Self {
        let config = ClientConfig {
            client_id: "sluice-operator".to_string(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(20),
            ..ClientConfig::default()
        };
        SluiceKafka {
            config,
            clients: Arc::default(),
        }
    }

    fn cached(&self, bootstrap: &str) -> Option<Arc<Client>> {
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(bootstrap)
            .cloned()
    }
}

impl Default for SluiceKafka {
    fn default() -> Self {
        Self::new()
    }
}

impl KafkaConnector for SluiceKafka {
    fn connect<'a>(
        &'a self,
        bootstrap: &'a str,
    ) -> BoxFuture<'a, Result<Arc<dyn KafkaAdmin>, ClientError>> {
        async move {
            let client = match self.cached(bootstrap) {
                Some(c) => c,
                None => {
                    let addrs: Vec<&str> = bootstrap
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .collect();
                    let client = Arc::new(Client::connect_with(&addrs, self.config.clone()).await?);
                    self.clients
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(bootstrap.to_string(), client.clone());
                    client
                }
            };
            let admin: Arc<dyn KafkaAdmin> = Arc::new(SluiceAdmin {
                client,
                bootstrap: bootstrap.to_string(),
                clients: self.clients.clone(),
            });
            Ok(admin)
        }
        .boxed()
    }
}

/// One cluster's admin over a cached [`Client`].
struct SluiceAdmin {
    client: Arc<Client>,
    bootstrap: String,
    clients: Arc<Mutex<HashMap<String, Arc<Client>>>>,
}

impl SluiceAdmin {
    /// Pass `result` through, forgetting the cached client on connection failures.
    fn check<T>(&self, result: Result<T, ClientError>) -> Result<T, ClientError> {
        if let Err(e) = &result {
            if is_connection_error(e) {
                let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
                if clients
                    .get(&self.bootstrap)
                    .is_some_and(|c| Arc::ptr_eq(c, &self.client))
                {
                    clients.remove(&self.bootstrap);
                }
            }
        }
        result
    }

    async fn describe(&self, name: &str) -> Result<Option<TopicState>, ClientError> {
        let md = self.client.metadata(Some(&[name])).await?;
        let Some(topic) = md.topics.get(name) else {
            return Ok(None);
        };
        if topic.error_code == UNKNOWN_TOPIC_OR_PARTITION {
            return Ok(None);
        }
        topic.check()?;
        let configs = self
            .client
            .describe_configs(name)
            .await?
            .into_values()
            .filter(|c| c.source == SOURCE_TOPIC)
            .filter_map(|c| c.value.map(|v| (c.name, v)))
            .collect();
        Ok(Some(TopicState {
            topic_id: topic.topic_id,
            assignment: topic
                .partitions
                .iter()
                .map(|p| (p.partition, p.replicas.clone()))
                .collect(),
            configs,
        }))
    }
}

impl KafkaAdmin for SluiceAdmin {
    fn metadata(&self) -> BoxFuture<'_, Result<ClusterMetadata, ClientError>> {
        async move { self.check(self.client.metadata(None).await) }.boxed()
    }

    fn describe_topic<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<TopicState>, ClientError>> {
        async move { self.check(self.describe(name).await) }.boxed()
    }

    fn create_topic<'a>(
        &'a self,
        topic: &'a NewTopic,
    ) -> BoxFuture<'a, Result<uuid::Uuid, ClientError>> {
        async move {
            let result = async {
                let mut results = self
                    .client
                    .create_topics(std::slice::from_ref(topic), false)
                    .await?;
                match results.shift_remove(&topic.name) {
                    Some(r) => r.map(|created| created.topic_id),
                    None => Err(sluice_client::kafka_error(
                        -1,
                        Some("topic missing from the CreateTopics response".into()),
                        format!("create topic {}", topic.name),
                    )),
                }
            }
            .await;
            self.check(result)
        }
        .boxed()
    }

    fn create_partitions<'a>(
        &'a self,
        name: &'a str,
        total: i32,
    ) -> BoxFuture<'a, Result<(), ClientError>> {
        async move { self.check(self.client.create_partitions(name, total).await) }.boxed()
    }

    fn alter_topic_configs<'a>(
        &'a self,
        name: &'a str,
        set: &'a [(String, String)],
        delete: &'a [String],
    ) -> BoxFuture<'a, Result<(), ClientError>> {
        async move {
            let set: Vec<(&str, &str)> =
                set.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let delete: Vec<&str> = delete.iter().map(String::as_str).collect();
            self.check(
                self.client
                    .incremental_alter_configs(name, &set, &delete)
                    .await,
            )
        }
        .boxed()
    }

    fn delete_topic<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), ClientError>> {
        async move {
            let result = async {
                let mut results = self.client.delete_topics(&[name]).await?;
                match results.shift_remove(name) {
                    Some(Err(e)) if e.code() == Some(UNKNOWN_TOPIC_OR_PARTITION) => Ok(()),
                    Some(r) => r,
                    None => Ok(()),
                }
            }
            .await;
            self.check(result)
        }
        .boxed()
    }

    fn alter_partition_reassignments<'a>(
        &'a self,
        topic: &'a str,
        targets: &'a BTreeMap<i32, Vec<i32>>,
    ) -> BoxFuture<'a, Result<PartitionOutcomes, ClientError>> {
        async move {
            let moves: Vec<(&str, i32, Option<&[i32]>)> = targets
                .iter()
                .map(|(&p, replicas)| (topic, p, Some(replicas.as_slice())))
                .collect();
            let results = self.check(self.client.alter_partition_reassignments(&moves).await)?;
            Ok(results
                .into_iter()
                .filter(|((t, _), _)| t == topic)
                .map(|((_, p), r)| (p, r))
                .collect())
        }
        .boxed()
    }

    fn list_partition_reassignments<'a>(
        &'a self,
        topic: &'a str,
        partitions: &'a [i32],
    ) -> BoxFuture<'a, Result<BTreeMap<i32, OngoingReassignment>, ClientError>> {
        async move {
            let ongoing = self.check(
                self.client
                    .list_partition_reassignments(Some(&[(topic, partitions)]))
                    .await,
            )?;
            Ok(ongoing
                .into_iter()
                .filter(|((t, _), _)| t == topic)
                .map(|((_, p), r)| (p, r))
                .collect())
        }
        .boxed()
    }

    fn all_reassignments(&self) -> BoxFuture<'_, Result<OngoingReassignments, ClientError>> {
        async move { self.check(self.client.list_partition_reassignments(None).await) }.boxed()
    }

    fn unregister_broker(&self, id: i32) -> BoxFuture<'_, Result<(), ClientError>> {
        async move { self.check(self.client.unregister_broker(id).await) }.boxed()
    }

    fn quorum_voters(&self) -> BoxFuture<'_, Result<Vec<i32>, ClientError>> {
        async move { Ok(self.check(self.client.describe_quorum().await)?.voters) }.boxed()
    }
}
