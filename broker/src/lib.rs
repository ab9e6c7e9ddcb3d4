//! Sluice broker: a Kafka-compatible broker.
