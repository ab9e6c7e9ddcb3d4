//! Admin calls: topics, partitions, configs, cluster description, partition reassignments.

use std::collections::BTreeMap;

use indexmap::IndexMap;
use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_quorum_request;
use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics;
use kafka_protocol::messages::{
    alter_configs_request, incremental_alter_configs_request, AlterConfigsRequest,
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, DescribeClusterRequest,
    DescribeConfigsRequest, DescribeQuorumRequest, IncrementalAlterConfigsRequest,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
    UnregisterBrokerRequest,
};
use uuid::Uuid;

use crate::client::{str_bytes, topic_name, Client};
use crate::error::{check_error, ClientError};
use crate::metadata::BrokerInfo;

/// ConfigResource type for topics.
const RESOURCE_TOPIC: i8 = 2;
/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    /// Topic name.
    pub name: String,
    /// Number of partitions (-1 = broker default).
    pub partitions: i32,
    /// Replication factor (-1 = broker default).
    pub replication_factor: i16,
    /// Topic configs (`retention.ms`, `cleanup.policy`, ...).
    pub configs: Vec<(String, String)>,
}

impl NewTopic {
    /// A topic with no explicit configs.
    pub fn new(name: impl Into<String>, partitions: i32, replication_factor: i16) -> Self {
        NewTopic {
            name: name.into(),
            partitions,
            replication_factor,
            configs: Vec::new(),
        }
    }

    /// Add a config.
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.configs.push((key.into(), value.into()));
        self
    }
}

/// What the broker reports for a created (or validated) topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedTopic {
    /// Topic name.
    pub name: String,
    /// Topic id (nil before CreateTopics v7).
    pub topic_id: Uuid,
    /// Partitions (-1 before CreateTopics v5).
    pub partitions: i32,
    /// Replication factor (-1 before CreateTopics v5).
    pub replication_factor: i16,
}

/// One config of a described resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    /// Config name.
    pub name: String,
    /// Value (`None` when null or sensitive).
    pub value: Option<String>,
    /// Whether the config is read-only.
    pub read_only: bool,
    /// Whether the config is sensitive.
    pub is_sensitive: bool,
    /// Kafka ConfigSource: 1 dynamic topic, 4 static broker, 5 default, ...; -1 unknown.
    pub source: i8,
}

impl ConfigEntry {
    /// Whether the value is the broker default (ConfigSource DEFAULT_CONFIG).
    pub fn is_default(&self) -> bool {
        self.source == 5
    }
}

/// A DescribeCluster response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDescription {
    /// Cluster id.
    pub cluster_id: String,
    /// Controller broker id, -1 when unknown.
    pub controller_id: i32,
    /// Brokers.
    pub brokers: Vec<BrokerInfo>,
}

/// The metadata log, as DescribeQuorum names it.
const METADATA_TOPIC: &str = "__cluster_metadata";

/// The metadata quorum, from DescribeQuorum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumInfo {
    /// The quorum leader (the controller).
    pub leader_id: i32,
    /// Voting members' broker ids.
    pub voters: Vec<i32>,
    /// Non-voting members' broker ids.
    pub observers: Vec<i32>,
}

/// Per-topic outcomes of a batch admin call, in response order.
pub type TopicResults<T> = IndexMap<String, Result<T, ClientError>>;

/// Per-partition outcomes of a batch admin call, by `(topic, partition)`, in response order.
pub type PartitionResults<T> = IndexMap<(String, i32), Result<T, ClientError>>;

/// One partition reassignment to request: `(topic, partition, target replicas)`; `None`
/// cancels the partition's running reassignment.
pub type ReassignmentMove<'a> = (&'a str, i32, Option<&'a [i32]>);

/// A partition reassignment in progress, as ListPartitionReassignments reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OngoingReassignment {
    /// The current replica set (the target plus the replicas being removed).
    pub replicas: Vec<i32>,
    /// Replicas being added (already in `replicas`).
    pub adding: Vec<i32>,
    /// Replicas being removed (still in `replicas` until the move completes).
    pub removing: Vec<i32>,
}

/// Reassignments in progress, by `(topic, partition)`.
pub type OngoingReassignments = BTreeMap<(String, i32), OngoingReassignment>;

impl Client {
    fn admin_timeout_ms(&self) -> i32 {
        i32::try_from(self.config.request_timeout.as_millis()).unwrap_or(i32::MAX)
    }

    /// Create topics (on the controller). The outer error is for the request as a whole;
    /// each topic has its own outcome (e.g. 36 TOPIC_ALREADY_EXISTS).
    pub async fn create_topics(
        &self,
        topics: &[NewTopic],
        validate_only: bool,
    ) -> Result<TopicResults<CreatedTopic>, ClientError> {
        let req = CreateTopicsRequest::default()
            .with_topics(
                topics
                    .iter()
                    .map(|t| {
                        CreatableTopic::default()
                            .with_name(topic_name(&t.name))
                            .with_num_partitions(t.partitions)
                            .with_replication_factor(t.replication_factor)
                            .with_configs(
                                t.configs
                                    .iter()
                                    .map(|(k, v)| {
                                        CreatableTopicConfig::default()
                                            .with_name(str_bytes(k))
                                            .with_value(Some(str_bytes(v)))
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            )
            .with_timeout_ms(self.admin_timeout_ms())
            .with_validate_only(validate_only);
        let resp = self
            .with_controller(|conn| {
                let req = req.clone();
                async move { conn.send(req).await }
            })
            .await?;
        let mut out = IndexMap::new();
        for t in resp.topics {
            let name = t.name.0.to_string();
            self.invalidate(&name);
            let result = check_error(t.error_code, t.error_message.as_deref(), || {
                format!("create topic {name}")
            })
            .map(|()| CreatedTopic {
                name: name.clone(),
                topic_id: t.topic_id,
                partitions: t.num_partitions,
                replication_factor: t.replication_factor,
            });
            out.insert(name, result);
        }
        Ok(out)
    }

    /// Delete topics by name (on the controller); per-topic outcomes as for
    /// [`Client::create_topics`].
    pub async fn delete_topics(&self, topics: &[&str]) -> Result<TopicResults<()>, ClientError> {
        let req = DeleteTopicsRequest::default()
            // v6+ carries `topics`, older versions `topic_names`; fill both.
            .with_topics(
                topics
                    .iter()
                    .map(|t| DeleteTopicState::default().with_name(Some(topic_name(t))))
                    .collect(),
            )
            .with_topic_names(topics.iter().map(|t| topic_name(t)).collect())
            .with_timeout_ms(self.admin_timeout_ms());
        let resp = self
            .with_controller(|conn| {
                let req = req.clone();
                async move { conn.send(req).await }
            })
            .await?;
        let mut out = IndexMap::new();
        for t in resp.responses {
            let name = t
                .name
                .map(|n| n.0.to_string())
                .unwrap_or_else(|| t.topic_id.to_string());
            self.invalidate(&name);
            let result = check_error(t.error_code, t.error_message.as_deref(), || {
                format!("delete topic {name}")
            });
            out.insert(name, result);
        }
        Ok(out)
    }

    /// Grow `topic` to `total` partitions.
    pub async fn create_partitions(&self, topic: &str, total: i32) -> Result<(), ClientError> {
        let req = CreatePartitionsRequest::default()
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(topic_name(topic))
                .with_count(total)])
            .with_timeout_ms(self.admin_timeout_ms());
        let resp = self
            .with_controller(|conn| {
                let req = req.clone();
                async move { conn.send(req).await }
            })
            .await?;
        self.invalidate(topic);
        let context = || format!("create partitions for {topic}");
        let result = resp
            .results
            .iter()
            .find(|r| *r.name.0 == *topic)
            .ok_or_else(|| ClientError::protocol(context(), "topic missing from response"))?;
        check_error(result.error_code, result.error_message.as_deref(), context)
    }

    /// All configs of `topic`, by name.
    pub async fn describe_configs(
        &self,
        topic: &str,
    ) -> Result<IndexMap<String, ConfigEntry>, ClientError> {
        let req = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(RESOURCE_TOPIC)
                .with_resource_name(str_bytes(topic))
                .with_configuration_keys(None),
        ]);
        let resp = self.any_connection().await?.send(req).await?;
        let context = || format!("describe configs of topic {topic}");
        let result = resp
            .results
            .into_iter()
            .find(|r| r.resource_type == RESOURCE_TOPIC && *r.resource_name == *topic)
            .ok_or_else(|| ClientError::protocol(context(), "topic missing from response"))?;
        check_error(result.error_code, result.error_message.as_deref(), context)?;
        Ok(result
            .configs
            .into_iter()
            .map(|c| {
                let entry = ConfigEntry {
                    name: c.name.to_string(),
                    value: c.value.map(|v| v.to_string()),
                    read_only: c.read_only,
                    is_sensitive: c.is_sensitive,
                    source: c.config_source,
                };
                (entry.name.clone(), entry)
            })
            .collect())
    }

    /// Legacy AlterConfigs: replace the topic's whole dynamic config with `configs`.
    pub async fn alter_configs(
        &self,
        topic: &str,
        configs: &[(&str, &str)],
    ) -> Result<(), ClientError> {
        let req = AlterConfigsRequest::default().with_resources(vec![
            alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(RESOURCE_TOPIC)
                .with_resource_name(str_bytes(topic))
                .with_configs(
                    configs
                        .iter()
                        .map(|(k, v)| {
                            alter_configs_request::AlterableConfig::default()
                                .with_name(str_bytes(k))
                                .with_value(Some(str_bytes(v)))
                        })
                        .collect(),
                ),
        ]);
        let resp = self.any_connection().await?.send(req).await?;
        let context = || format!("alter configs of topic {topic}");
        let r = resp
            .responses
            .iter()
            .find(|r| *r.resource_name == *topic)
            .ok_or_else(|| ClientError::protocol(context(), "topic missing from response"))?;
        check_error(r.error_code, r.error_message.as_deref(), context)
    }

    /// IncrementalAlterConfigs: set the `set` pairs and delete the `delete` keys, leaving
    /// other configs alone.
    pub async fn incremental_alter_configs(
        &self,
        topic: &str,
        set: &[(&str, &str)],
        delete: &[&str],
    ) -> Result<(), ClientError> {
        let ops = set
            .iter()
            .map(|(k, v)| (k, OP_SET, Some(str_bytes(v))))
            .chain(delete.iter().map(|k| (k, OP_DELETE, None)));
        let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
            incremental_alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(RESOURCE_TOPIC)
                .with_resource_name(str_bytes(topic))
                .with_configs(
                    ops.map(|(k, op, value)| {
                        incremental_alter_configs_request::AlterableConfig::default()
                            .with_name(str_bytes(k))
                            .with_config_operation(op)
                            .with_value(value)
                    })
                    .collect(),
                ),
        ]);
        let resp = self.any_connection().await?.send(req).await?;
        let context = || format!("incremental alter configs of topic {topic}");
        let r = resp
            .responses
            .iter()
            .find(|r| *r.resource_name == *topic)
            .ok_or_else(|| ClientError::protocol(context(), "topic missing from response"))?;
        check_error(r.error_code, r.error_message.as_deref(), context)
    }

    /// AlterPartitionReassignments (on the controller): move each listed partition to its
    /// target replicas, or cancel its running reassignment (`None`). Replication-factor
    /// changes are allowed. The outer error is for the request as a whole (e.g. the broker
    /// does not support the API); each partition has its own outcome (e.g. 39
    /// INVALID_REPLICA_ASSIGNMENT for an unknown broker, 85 NO_REASSIGNMENT_IN_PROGRESS).
    pub async fn alter_partition_reassignments(
        &self,
        moves: &[ReassignmentMove<'_>],
    ) -> Result<PartitionResults<()>, ClientError> {
        let mut topics: Vec<ReassignableTopic> = Vec::new();
        for (topic, partition, target) in moves {
            let partition = ReassignablePartition::default()
                .with_partition_index(*partition)
                .with_replicas(target.map(|r| r.iter().copied().map(BrokerId).collect()));
            match topics.iter_mut().find(|t| *t.name.0 == **topic) {
                Some(t) => t.partitions.push(partition),
                None => topics.push(
                    ReassignableTopic::default()
                        .with_name(topic_name(topic))
                        .with_partitions(vec![partition]),
                ),
            }
        }
        let req = AlterPartitionReassignmentsRequest::default()
            .with_timeout_ms(self.admin_timeout_ms())
            .with_allow_replication_factor_change(true)
            .with_topics(topics);
        let resp = self
            .with_controller(|conn| {
                let req = req.clone();
                async move { conn.send(req).await }
            })
            .await?;
        for (topic, _, _) in moves {
            self.invalidate(topic);
        }
        reassignment_results(resp)
    }

    /// ListPartitionReassignments (on the controller): the reassignments in progress, of
    /// the given `(topic, partitions)` or of every topic (`None`). Partitions not being
    /// reassigned are absent from the result.
    pub async fn list_partition_reassignments(
        &self,
        topics: Option<&[(&str, &[i32])]>,
    ) -> Result<OngoingReassignments, ClientError> {
        let req = ListPartitionReassignmentsRequest::default()
            .with_timeout_ms(self.admin_timeout_ms())
            .with_topics(topics.map(|ts| {
                ts.iter()
                    .map(|(topic, partitions)| {
                        ListPartitionReassignmentsTopics::default()
                            .with_name(topic_name(topic))
                            .with_partition_indexes(partitions.to_vec())
                    })
                    .collect()
            }));
        let resp = self
            .with_controller(|conn| {
                let req = req.clone();
                async move { conn.send(req).await }
            })
            .await?;
        ongoing_reassignments(resp)
    }

    /// UnregisterBroker (on the controller): remove a stopped broker from the cluster for
    /// good. A broker that is still running is refused (INVALID_REQUEST); one that is not
    /// registered gives BROKER_ID_NOT_REGISTERED (102).
    pub async fn unregister_broker(&self, id: i32) -> Result<(), ClientError> {
        let req = UnregisterBrokerRequest::default().with_broker_id(BrokerId(id));
        let resp = self
            .with_controller(|conn| {
                let req = req.clone();
                async move { conn.send(req).await }
            })
            .await?;
        check_error(resp.error_code, resp.error_message.as_deref(), || {
            format!("unregister broker {id}")
        })
    }

    /// DescribeQuorum (on the controller, which leads the metadata quorum): its voters and
    /// observers.
    pub async fn describe_quorum(&self) -> Result<QuorumInfo, ClientError> {
        let mut partition = describe_quorum_request::PartitionData::default();
        partition.partition_index = 0;
        let mut topic = describe_quorum_request::TopicData::default();
        topic.topic_name = TopicName(str_bytes(METADATA_TOPIC));
        topic.partitions = vec![partition];
        let mut req = DescribeQuorumRequest::default();
        req.topics = vec![topic];
        let resp = self
            .with_controller(|conn| {
                let req = req.clone();
                async move { conn.send(req).await }
            })
            .await?;
        let context = || "describe quorum".to_string();
        check_error(resp.error_code, resp.error_message.as_deref(), context)?;
        let p = resp
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .next()
            .ok_or_else(|| ClientError::protocol(context(), "no partition in the response"))?;
        check_error(p.error_code, p.error_message.as_deref(), context)?;
        Ok(QuorumInfo {
            leader_id: p.leader_id.0,
            voters: p.current_voters.iter().map(|r| r.replica_id.0).collect(),
            observers: p.observers.iter().map(|r| r.replica_id.0).collect(),
        })
    }

    /// DescribeCluster.
    pub async fn describe_cluster(&self) -> Result<ClusterDescription, ClientError> {
        let req = DescribeClusterRequest::default().with_endpoint_type(1);
        let resp = self.any_connection().await?.send(req).await?;
        check_error(resp.error_code, resp.error_message.as_deref(), || {
            "describe cluster".to_string()
        })?;
        Ok(ClusterDescription {
            cluster_id: resp.cluster_id.to_string(),
            controller_id: resp.controller_id.0,
            brokers: resp
                .brokers
                .iter()
                .map(|b| BrokerInfo {
                    id: b.broker_id.0,
                    host: b.host.to_string(),
                    port: b.port,
                    rack: b.rack.as_ref().map(|r| r.to_string()),
                })
                .collect(),
        })
    }
}

/// Per-partition outcomes of an AlterPartitionReassignments response.
fn reassignment_results(
    resp: AlterPartitionReassignmentsResponse,
) -> Result<PartitionResults<()>, ClientError> {
    check_error(resp.error_code, resp.error_message.as_deref(), || {
        "alter partition reassignments".to_string()
    })?;
    let mut out = IndexMap::new();
    for t in resp.responses {
        let topic = t.name.0.to_string();
        for p in t.partitions {
            let result = check_error(p.error_code, p.error_message.as_deref(), || {
                format!("reassign {topic}-{}", p.partition_index)
            });
            out.insert((topic.clone(), p.partition_index), result);
        }
    }
    Ok(out)
}

/// The reassignments a ListPartitionReassignments response reports.
fn ongoing_reassignments(
    resp: ListPartitionReassignmentsResponse,
) -> Result<OngoingReassignments, ClientError> {
    check_error(resp.error_code, resp.error_message.as_deref(), || {
        "list partition reassignments".to_string()
    })?;
    let ids = |v: &[BrokerId]| v.iter().map(|b| b.0).collect::<Vec<i32>>();
    Ok(resp
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    (t.name.0.to_string(), p.partition_index),
                    OngoingReassignment {
                        replicas: ids(&p.replicas),
                        adding: ids(&p.adding_replicas),
                        removing: ids(&p.removing_replicas),
                    },
                )
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::alter_partition_reassignments_response::{
        ReassignablePartitionResponse, ReassignableTopicResponse,
    };
    use kafka_protocol::messages::list_partition_reassignments_response::{
        OngoingPartitionReassignment, OngoingTopicReassignment,
    };
    use kafka_protocol::protocol::StrBytes;

    use super::*;

    #[test]
    fn reassignment_results_are_per_partition() {
        let resp = AlterPartitionReassignmentsResponse::default().with_responses(vec![
            ReassignableTopicResponse::default()
                .with_name(topic_name("orders"))
                .with_partitions(vec![
                    ReassignablePartitionResponse::default().with_partition_index(0),
                    ReassignablePartitionResponse::default()
                        .with_partition_index(1)
                        .with_error_code(39)
                        .with_error_message(Some(StrBytes::from_static_str("broker 7 unknown"))),
                ]),
        ]);
        let results = reassignment_results(resp).expect("request accepted");
        assert_eq!(results.len(), 2);
        assert!(results[&("orders".to_string(), 0)].is_ok());
        let err = results[&("orders".to_string(), 1)].as_ref().unwrap_err();
        assert_eq!(err.code(), Some(39));
        assert_eq!(
            err.to_string(),
            "Kafka error 39 InvalidReplicaAssignment (reassign orders-1): broker 7 unknown"
        );
    }

    #[test]
    fn reassignment_request_error_fails_the_call() {
        let resp = AlterPartitionReassignmentsResponse::default()
            .with_error_code(41)
            .with_error_message(Some(StrBytes::from_static_str("not the controller")));
        let err = reassignment_results(resp).unwrap_err();
        assert_eq!(err.code(), Some(41));
        let resp = ListPartitionReassignmentsResponse::default().with_error_code(29);
        let err = ongoing_reassignments(resp).unwrap_err();
        assert_eq!(err.code(), Some(29), "{err}");
    }

    #[test]
    fn ongoing_reassignments_by_partition() {
        let resp = ListPartitionReassignmentsResponse::default().with_topics(vec![
            OngoingTopicReassignment::default()
                .with_name(topic_name("orders"))
                .with_partitions(vec![OngoingPartitionReassignment::default()
                    .with_partition_index(2)
                    .with_replicas(vec![BrokerId(0), BrokerId(1)])
                    .with_adding_replicas(vec![BrokerId(1)])]),
        ]);
        let ongoing = ongoing_reassignments(resp).expect("list");
        assert_eq!(
            ongoing.into_iter().collect::<Vec<_>>(),
            [(
                ("orders".to_string(), 2),
                OngoingReassignment {
                    replicas: vec![0, 1],
                    adding: vec![1],
                    removing: vec![],
                }
            )]
        );
    }
}
