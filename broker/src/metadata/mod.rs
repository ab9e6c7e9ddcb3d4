//! Cluster metadata, in three parts, lower to higher:
//! - [`image`]: the records that describe the cluster, the image they build, and the cache
//!   that shares the latest image with the rest of the broker.
//! - [`quorum`]: the Raft log that replicates the records between brokers and applies them.
//! - [`controller`]: the decisions that turn requests into records, committed through the
//!   quorum.
//!
//! Beside them, the topic rules other layers check too: [`topic_config`] and [`topic_name`].

pub mod controller;
pub mod image;
pub mod quorum;
pub mod topic_config;
pub mod topic_name;

pub use controller::{Controller, ControllerError, MetadataLog, NewTopic};
pub use image::cache::{MetadataCache, MetadataListener};
pub use image::records::MetadataRecord;
pub use image::{BrokerInfo, Endpoint, MetadataImage, PartitionImage, TopicImage};
