//! The `KafkaTopic` controller.
