//! KafkaTopic scenarios.
