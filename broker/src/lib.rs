//! Sluice broker: a Kafka-compatible broker.
pub mod log;
