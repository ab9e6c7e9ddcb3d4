//! Wall-clock time in Kafka's unit. Every layer stamps records and checks deadlines with it, so
//! it sits below all of them.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, Kafka's timestamp unit.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
