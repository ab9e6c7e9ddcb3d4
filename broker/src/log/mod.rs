//! Durable per-partition storage (work in progress).

pub mod batch;
pub mod config;
