//! Coordinators: consumer groups (classic protocol) and their committed offsets, stored in the
//! internal `__consumer_offsets` topic.

pub mod group;
pub mod group_coordinator;
pub mod offsets_topic;

pub use group_coordinator::GroupCoordinator;
pub use offsets_topic::OFFSETS_TOPIC;
