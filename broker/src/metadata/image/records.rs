//! The metadata log's records: every change to cluster metadata is one of these. The Raft
//! quorum replicates them in order, and every broker applies them to its
//! [`super::MetadataImage`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::partition::PartitionImage;

/// One metadata change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MetadataRecord {
    /// A broker, where clients reach it (`host:port`) and where other brokers reach its HTTP
    /// side port for cluster RPC (`http_address`). A later record for the same id replaces it.
    /// A broker registers fenced and is unfenced once it has caught up with the metadata log.
    RegisterBroker {
        id: i32,
        host: String,
        port: u16,
        /// Every advertised listener (`host:port` is the inter-broker one).
        #[serde(default)]
        listeners: Vec<super::Endpoint>,
        rack: Option<String>,
        #[serde(default)]
        http_address: String,
        /// Changes on every process start, so a restarted broker is told apart from the old one.
        #[serde(default)]
        incarnation: Uuid,
    },
    /// The broker's heartbeats stopped (or it shut down): it leads nothing and is out of ISRs.
    FenceBroker { id: i32 },
    /// The broker is alive and caught up: it may lead partitions and join ISRs again.
    UnfenceBroker { id: i32 },
    /// The broker is gone for good (UnregisterBroker, scale-down).
    UnregisterBroker { id: i32 },
    /// A topic exists, with its config overrides. Its partitions follow as records.
    CreateTopic {
        name: String,
        id: Uuid,
        configs: BTreeMap<String, String>,
    },
    /// A partition of a topic, its replicas and leadership.
    CreatePartition {
        topic_id: Uuid,
        partition: i32,
        replicas: Vec<i32>,
        isr: Vec<i32>,
        leader: i32,
        leader_epoch: i32,
    },
    /// A partition's new replica set, ISR or leadership: the whole new state.
    PartitionChange {
        topic_id: Uuid,
        partition: i32,
        state: PartitionImage,
    },
    /// A topic and all its partitions are gone.
    DeleteTopic { id: Uuid },
    /// A topic's config overrides are replaced by this set.
    SetTopicConfigs {
        topic_id: Uuid,
        configs: BTreeMap<String, String>,
    },
    /// Producer ids below `next_producer_id` are handed out; never hand them out again.
    ProducerIdBlock { next_producer_id: i64 },
}
