//! sluice-client: an async Kafka-protocol client.
