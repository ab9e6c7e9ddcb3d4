//! The network layer: accepting connections and moving request and response frames.

pub mod connection;
pub mod frame;
pub mod listeners;
