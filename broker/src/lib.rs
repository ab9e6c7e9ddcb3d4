//! Sluice broker: a Kafka-compatible broker.
//!
//! Data flows one way: [`network`] reads frames, [`protocol`] decodes them, [`apis`] handles
//! them against the [`replica`] partitions and their [`log`], and responses go back in order.
//! [`metadata`] holds the cluster's topics and the controller that changes them;
//! [`coordinator`] runs consumer groups and stores their offsets in `__consumer_offsets`.

pub mod apis;
pub mod broker;
pub mod clock;
pub mod config;
pub mod config_values;
pub mod coordinator;
pub mod forward;
pub mod http;
pub mod log;
pub mod membership;
pub mod metadata;
pub mod metrics;
pub mod network;
pub mod protocol;
pub mod replica;
pub mod rpc;
pub mod server;
pub mod shutdown;
#[cfg(test)]
pub(crate) mod test_support;
