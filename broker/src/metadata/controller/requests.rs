//! What brokers ask the controller, in a form that crosses the network: a broker that is not
//! the controller forwards these to the one that is.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::partition_state::IsrChange;
use super::topics::NewTopic;
use crate::metadata::image::{BrokerInfo, TopicImage};

/// A request to the controller.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ControllerRequest {
    /// A broker (re)starts: where it is reached. Registers it fenced.
    RegisterBroker {
        broker: BrokerInfo,
    },
    /// A broker is alive; `caught_up` once it has applied the metadata log.
    Heartbeat {
        id: i32,
        incarnation: Uuid,
        caught_up: bool,
    },
    /// SIGTERM: move leadership away from the broker and take it out of ISRs.
    ControlledShutdown {
        id: i32,
        incarnation: Uuid,
    },
    /// The broker is gone for good.
    UnregisterBroker {
        id: i32,
    },
    CreateTopic {
        topic: NewTopic,
        validate_only: bool,
    },
    DeleteTopic {
        name: String,
    },
    CreatePartitions {
        name: String,
        count: i32,
        assignments: BTreeMap<i32, Vec<i32>>,
        validate_only: bool,
    },
    SetTopicConfigs {
        name: String,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    },
    /// A block of producer ids for the asking broker to hand out.
    AllocateProducerIds {
        count: i64,
    },
    /// A partition leader's ISR change.
    AlterPartition {
        topic_id: Uuid,
        partition: i32,
        change: IsrChange,
    },
    /// Start (`Some`) or cancel (`None`) moving partitions to new replicas.
    AlterReassignments {
        moves: Vec<(String, i32, Option<Vec<i32>>)>,
    },
}

/// The controller's answer to a [`ControllerRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ControllerResponse {
    Done,
    /// Heartbeat: whether the controller considers the broker fenced, and whether it should
    /// register again (unknown broker or a stale incarnation).
    Heartbeat {
        fenced: bool,
        reregister: bool,
    },
    /// ControlledShutdown: partitions the broker still leads (0 = safe to stop).
    ShutdownProgress {
        still_leading: usize,
    },
    Topic {
        topic: TopicImage,
    },
    TopicDeleted {
        id: Uuid,
    },
    ProducerIds {
        first: i64,
        count: i64,
    },
    /// AlterReassignments: one result per move, in order (`None` = accepted).
    Reassignments {
        results: Vec<Option<WireError>>,
    },
}

/// A Kafka error code and message, as it crosses the network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    pub code: i16,
    pub message: String,
}
