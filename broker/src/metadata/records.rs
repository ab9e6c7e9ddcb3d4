//! The metadata log's records: every change to cluster metadata is one of these. Today they
//! are written to a local file ([`super::store`]); the Raft quorum will replicate the same
//! records, and every broker applies them to its [`super::image::MetadataImage`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One metadata change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MetadataRecord {
    /// A broker and where clients reach it. A later record for the same id replaces it.
    RegisterBroker {
        id: i32,
        host: String,
        port: u16,
        rack: Option<String>,
    },
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
