//! The in-memory metadata image: the state obtained by applying every metadata record in
//! order. Answers Metadata, DescribeCluster and config lookups. Pure data, no I/O.
//!
//! Beside it: [`records`], the changes it is built from; [`partition`], a partition's state,
//! which the image holds and a record carries; and [`cache`], the latest image shared with the
//! rest of the broker.

pub mod cache;
pub mod partition;
pub mod records;

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use self::partition::{PartitionImage, NO_LEADER};
use self::records::MetadataRecord;

/// One advertised listener of a broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The listener's name (`INTERNAL`, `LOCAL`, ...).
    pub name: String,
    pub host: String,
    pub port: u16,
}

/// A registered broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerInfo {
    pub id: i32,
    /// Where other brokers reach it: the advertised inter-broker listener.
    pub host: String,
    pub port: u16,
    /// Every advertised listener. Empty in records written before named listeners: such a
    /// broker is reached at `host:port` on every listener.
    #[serde(default)]
    pub listeners: Vec<Endpoint>,
    pub rack: Option<String>,
    /// `host:port` of its HTTP side port, where other brokers send cluster RPC.
    #[serde(default)]
    pub http_address: String,
    #[serde(default)]
    pub incarnation: Uuid,
    /// Fenced brokers lead nothing, are in no ISR and are not offered to clients.
    #[serde(default)]
    pub fenced: bool,
}

impl BrokerInfo {
    /// Where a client of `listener` reaches this broker; `None` when it has no such listener.
    pub fn endpoint(&self, listener: &str) -> Option<(&str, u16)> {
        if self.listeners.is_empty() {
            return Some((&self.host, self.port));
        }
        self.listeners
            .iter()
            .find(|e| e.name == listener)
            .map(|e| (e.host.as_str(), e.port))
    }
}

/// A topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicImage {
    pub name: String,
    pub id: Uuid,
    pub partitions: BTreeMap<i32, PartitionImage>,
    pub configs: BTreeMap<String, String>,
}

/// All cluster metadata known to this broker. Serialized whole as the quorum's snapshot.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MetadataImage {
    pub brokers: BTreeMap<i32, BrokerInfo>,
    pub topics: BTreeMap<String, TopicImage>,
    topic_names: HashMap<Uuid, String>,
    /// The first producer id not yet handed out.
    pub next_producer_id: i64,
}

impl MetadataImage {
    /// Applies one record. Records referring to unknown topics are ignored: they can only
    /// follow a deletion that raced them, and ignoring them is what replaying the log gives.
    pub fn apply(&mut self, record: &MetadataRecord) {
        match record {
            MetadataRecord::RegisterBroker {
                id,
                host,
                port,
                listeners,
                rack,
                http_address,
                incarnation,
            } => {
                self.brokers.insert(
                    *id,
                    BrokerInfo {
                        id: *id,
                        host: host.clone(),
                        port: *port,
                        listeners: listeners.clone(),
                        rack: rack.clone(),
                        http_address: http_address.clone(),
                        incarnation: *incarnation,
                        fenced: true,
                    },
                );
            }
            MetadataRecord::FenceBroker { id } => {
                if let Some(b) = self.brokers.get_mut(id) {
                    b.fenced = true;
                }
            }
            MetadataRecord::UnfenceBroker { id } => {
                if let Some(b) = self.brokers.get_mut(id) {
                    b.fenced = false;
                }
            }
            MetadataRecord::UnregisterBroker { id } => {
                self.brokers.remove(id);
            }
            MetadataRecord::CreateTopic { name, id, configs } => {
                self.topic_names.insert(*id, name.clone());
                self.topics.insert(
                    name.clone(),
                    TopicImage {
                        name: name.clone(),
                        id: *id,
                        partitions: BTreeMap::new(),
                        configs: configs.clone(),
                    },
                );
            }
            MetadataRecord::CreatePartition {
                topic_id,
                partition,
                replicas,
                isr,
                leader,
                leader_epoch,
            } => {
                if let Some(topic) = self.topic_by_id_mut(topic_id) {
                    topic.partitions.insert(
                        *partition,
                        PartitionImage {
                            replicas: replicas.clone(),
                            isr: isr.clone(),
                            leader: *leader,
                            leader_epoch: *leader_epoch,
                            partition_epoch: 0,
                            adding_replicas: Vec::new(),
                            removing_replicas: Vec::new(),
                        },
                    );
                }
            }
            MetadataRecord::PartitionChange {
                topic_id,
                partition,
                state,
            } => {
                if let Some(topic) = self.topic_by_id_mut(topic_id) {
                    if topic.partitions.contains_key(partition) {
                        topic.partitions.insert(*partition, state.clone());
                    }
                }
            }
            MetadataRecord::DeleteTopic { id } => {
                if let Some(name) = self.topic_names.remove(id) {
                    self.topics.remove(&name);
                }
            }
            MetadataRecord::SetTopicConfigs { topic_id, configs } => {
                if let Some(topic) = self.topic_by_id_mut(topic_id) {
                    topic.configs = configs.clone();
                }
            }
            MetadataRecord::ProducerIdBlock { next_producer_id } => {
                self.next_producer_id = self.next_producer_id.max(*next_producer_id);
            }
        }
    }

    /// Brokers that are registered and not fenced.
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerInfo> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    pub fn topic(&self, name: &str) -> Option<&TopicImage> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: &Uuid) -> Option<&TopicImage> {
        self.topic_names.get(id).and_then(|n| self.topics.get(n))
    }

    fn topic_by_id_mut(&mut self, id: &Uuid) -> Option<&mut TopicImage> {
        let name = self.topic_names.get(id)?;
        self.topics.get_mut(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaying_records_builds_topics_and_deletes_them() {
        let id = Uuid::from_u128(7);
        let mut image = MetadataImage::default();
        for r in [
            MetadataRecord::CreateTopic {
                name: "t".into(),
                id,
                configs: BTreeMap::new(),
            },
            MetadataRecord::CreatePartition {
                topic_id: id,
                partition: 0,
                replicas: vec![0],
                isr: vec![0],
                leader: 0,
                leader_epoch: 0,
            },
            MetadataRecord::SetTopicConfigs {
                topic_id: id,
                configs: [("retention.ms".to_string(), "5".to_string())].into(),
            },
            MetadataRecord::ProducerIdBlock {
                next_producer_id: 1000,
            },
        ] {
            image.apply(&r);
        }
        let t = image.topic("t").unwrap();
        assert_eq!(t.partitions.len(), 1);
        assert_eq!(t.configs["retention.ms"], "5");
        assert_eq!(image.topic_by_id(&id).unwrap().name, "t");
        assert_eq!(image.next_producer_id, 1000);
        image.apply(&MetadataRecord::DeleteTopic { id });
        assert!(image.topic("t").is_none());
        assert!(image.topic_by_id(&id).is_none());
    }
}
