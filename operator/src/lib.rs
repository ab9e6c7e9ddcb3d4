//! sluice-operator: runs Sluice on Kubernetes from two custom resources, `KafkaCluster`
//! and `KafkaTopic`.
//!
//! Each reconcile is a pipeline with I/O at the edges and pure logic in the middle:
//! read the resource, validate it into a checked view ([`validate`]), observe what runs,
//! plan (where replicas go: [`placement`]), build the desired objects with pure functions
//! ([`builders`]), apply them with server-side apply, then write `.status` and publish
//! Events ([`controllers`]).

pub mod builders;
pub mod crd;
pub mod render;
pub mod validate;

/// Broker image used when neither `spec.image` nor `--broker-image` says otherwise.
pub const DEFAULT_BROKER_IMAGE: &str = concat!("sluice:", env!("CARGO_PKG_VERSION"));
pub mod controllers;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod placement;
pub mod runtime;
