//! Cluster metadata as plain Rust types, built from Metadata responses (pure).

use indexmap::IndexMap;
use kafka_protocol::messages::MetadataResponse;
use uuid::Uuid;

use crate::error::{check_error, ClientError};

/// A broker as advertised in metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    /// Broker (node) id.
    pub id: i32,
    /// Advertised host.
    pub host: String,
    /// Advertised port.
    pub port: i32,
    /// Rack, if configured.
    pub rack: Option<String>,
}

impl BrokerInfo {
    /// `host:port`, ready for [`crate::Connection::connect`].
    pub fn addr(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// One partition of a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMetadata {
    /// Partition index.
    pub partition: i32,
    /// Kafka error code for this partition (0 = none; e.g. 5 LEADER_NOT_AVAILABLE).
    pub error_code: i16,
    /// Leader broker id, -1 when there is none.
    pub leader: i32,
    /// Leader epoch, -1 when unknown.
    pub leader_epoch: i32,
    /// Replica broker ids.
    pub replicas: Vec<i32>,
    /// In-sync replica broker ids.
    pub isr: Vec<i32>,
    /// Offline replica broker ids.
    pub offline_replicas: Vec<i32>,
}

/// One topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    /// Topic name.
    pub name: String,
    /// Topic id (nil before Metadata v10 or if the broker has none).
    pub topic_id: Uuid,
    /// Kafka error code for this topic (0 = none; e.g. 3 UNKNOWN_TOPIC_OR_PARTITION).
    pub error_code: i16,
    /// Whether the topic is internal.
    pub is_internal: bool,
    /// Partitions, ordered by index.
    pub partitions: Vec<PartitionMetadata>,
}

impl TopicMetadata {
    /// `Err(ClientError::Kafka)` if the topic carries an error code.
    pub fn check(&self) -> Result<(), ClientError> {
        check_error(self.error_code, None, || {
            format!("metadata for topic {}", self.name)
        })
    }

    /// The partition with index `partition`.
    pub fn partition(&self, partition: i32) -> Option<&PartitionMetadata> {
        self.partitions.iter().find(|p| p.partition == partition)
    }
}

/// A Metadata response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterMetadata {
    /// Cluster id, if the broker reports one.
    pub cluster_id: Option<String>,
    /// Controller broker id, -1 when unknown.
    pub controller_id: i32,
    /// Brokers by id, in response order.
    pub brokers: IndexMap<i32, BrokerInfo>,
    /// Topics by name, in response order (topics with errors included, see `error_code`).
    pub topics: IndexMap<String, TopicMetadata>,
}

impl ClusterMetadata {
    /// Convert a Metadata response.
    pub fn from_response(resp: &MetadataResponse) -> Self {
        let brokers = resp
            .brokers
            .iter()
            .map(|b| {
                let info = BrokerInfo {
                    id: b.node_id.0,
                    host: b.host.to_string(),
                    port: b.port,
                    rack: b.rack.as_ref().map(|r| r.to_string()),
                };
                (info.id, info)
            })
            .collect();
        let topics = resp
            .topics
            .iter()
            .map(|t| {
                let name = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
                let mut partitions: Vec<PartitionMetadata> = t
                    .partitions
                    .iter()
                    .map(|p| PartitionMetadata {
                        partition: p.partition_index,
                        error_code: p.error_code,
                        leader: p.leader_id.0,
                        leader_epoch: p.leader_epoch,
                        replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                        isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                        offline_replicas: p.offline_replicas.iter().map(|b| b.0).collect(),
                    })
                    .collect();
                partitions.sort_by_key(|p| p.partition);
                let topic = TopicMetadata {
                    name: name.clone(),
                    topic_id: t.topic_id,
                    error_code: t.error_code,
                    is_internal: t.is_internal,
                    partitions,
                };
                (name, topic)
            })
            .collect();
        ClusterMetadata {
            cluster_id: resp.cluster_id.as_ref().map(|c| c.to_string()),
            controller_id: resp.controller_id.0,
            brokers,
            topics,
        }
    }

    /// Fold a newer response into this one: brokers and controller are replaced; topics in
    /// `newer` replace ours (topics it reports as unknown are dropped). With `all_topics`
    /// (the response listed every topic) topics missing from `newer` are dropped too.
    pub fn merge(&mut self, newer: &ClusterMetadata, all_topics: bool) {
        self.cluster_id.clone_from(&newer.cluster_id);
        self.controller_id = newer.controller_id;
        self.brokers.clone_from(&newer.brokers);
        if all_topics {
            self.topics.clear();
        }
        for (name, topic) in &newer.topics {
            if topic.error_code == 3 {
                self.topics.shift_remove(name);
            } else {
                self.topics.insert(name.clone(), topic.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::metadata_response::{
        MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
    };
    use kafka_protocol::messages::{BrokerId, TopicName};
    use kafka_protocol::protocol::StrBytes;

    /// `(name, error_code, [(partition, leader)])`
    type TopicSpec<'a> = (&'a str, i16, &'a [(i32, i32)]);

    fn response(topics: &[TopicSpec]) -> MetadataResponse {
        MetadataResponse::default()
            .with_cluster_id(Some(StrBytes::from_static_str("c1")))
            .with_controller_id(BrokerId(1))
            .with_brokers(vec![MetadataResponseBroker::default()
                .with_node_id(BrokerId(1))
                .with_host(StrBytes::from_static_str("b1"))
                .with_port(9092)])
            .with_topics(
                topics
                    .iter()
                    .map(|(name, err, parts)| {
                        MetadataResponseTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string(name.to_string()))))
                            .with_error_code(*err)
                            .with_partitions(
                                parts
                                    .iter()
                                    .map(|&(p, leader)| {
                                        MetadataResponsePartition::default()
                                            .with_partition_index(p)
                                            .with_leader_id(BrokerId(leader))
                                            .with_replica_nodes(vec![BrokerId(leader)])
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            )
    }

    #[test]
    fn converts_response() {
        let md = ClusterMetadata::from_response(&response(&[("t", 0, &[(1, 1), (0, 1)])]));
        assert_eq!(md.cluster_id.as_deref(), Some("c1"));
        assert_eq!(md.controller_id, 1);
        assert_eq!(md.brokers[&1].addr(), "b1:9092");
        let t = &md.topics["t"];
        assert_eq!(t.partitions.len(), 2);
        assert_eq!(t.partitions[0].partition, 0, "partitions are sorted");
        assert_eq!(t.partition(1).unwrap().leader, 1);
        assert!(t.check().is_ok());
    }

    #[test]
    fn merge_replaces_and_drops_unknown() {
        let mut md =
            ClusterMetadata::from_response(&response(&[("a", 0, &[(0, 1)]), ("b", 0, &[])]));
        let newer =
            ClusterMetadata::from_response(&response(&[("a", 3, &[]), ("c", 0, &[(0, 1)])]));
        md.merge(&newer, false);
        assert_eq!(md.topics.keys().collect::<Vec<_>>(), ["b", "c"]);
        md.merge(
            &ClusterMetadata::from_response(&response(&[("c", 0, &[])])),
            true,
        );
        assert_eq!(md.topics.keys().collect::<Vec<_>>(), ["c"]);
    }

    #[test]
    fn ipv6_addr_is_bracketed() {
        let b = BrokerInfo {
            id: 0,
            host: "::1".into(),
            port: 9092,
            rack: None,
        };
        assert_eq!(b.addr(), "[::1]:9092");
    }
}
