//! sluice-client: an async Kafka-protocol client.
//!
//! * [`Connection`] — one TCP connection to one broker: framing, pipelined requests matched
//!   by correlation id, ApiVersions handshake (with the KIP-511 fallback) and version
//!   negotiation for any `kafka_protocol` request type ([`Connection::send`]).
//! * [`Client`] — a cluster: bootstrap, metadata cache, one lazy connection per broker,
//!   leader routing, and typed admin / produce / fetch calls.
//!
//! Kafka error codes become [`ClientError::Kafka`].

mod admin;
mod client;
mod config;
mod connection;
mod error;
mod fetch;
mod metadata;
mod produce;
pub mod versions;

pub use admin::{
    ClusterDescription, ConfigEntry, CreatedTopic, NewTopic, OngoingReassignment,
    OngoingReassignments, PartitionResults, QuorumInfo, ReassignmentMove, TopicResults,
};
pub use client::Client;
pub use config::ClientConfig;
pub use connection::{Connection, RawResponse};
pub use error::{check_error, error_name, kafka_error, ClientError};
pub use fetch::{decode_records, FetchResult, FetchedRecord, ListedOffset};
pub use metadata::{BrokerInfo, ClusterMetadata, PartitionMetadata, TopicMetadata};
pub use produce::{build_batch, KeyValue};
pub use versions::BrokerVersions;

/// The `kafka_protocol` version this crate is built on, re-exported for callers that
/// build requests for [`Connection::send`].
pub use kafka_protocol;
