//! Cluster metadata: the records that describe it, the image they build, the log that
//! replicates them, and the controller that decides changes.

pub mod controller;
pub mod image;
pub mod placement;
pub mod quorum;
pub mod topic_config;
pub mod topic_name;

pub use controller::{Controller, ControllerError, MetadataLog, NewTopic};
pub use image::cache::{MetadataCache, MetadataListener};
pub use image::records::MetadataRecord;
pub use image::{BrokerInfo, MetadataImage, PartitionImage, TopicImage};
