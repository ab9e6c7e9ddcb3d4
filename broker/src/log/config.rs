//! Per-partition log configuration (the subset of Kafka topic configs the log uses).

/// Log settings; `Default` mirrors Kafka's broker defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct LogConfig {
    /// `segment.bytes`: roll when the active segment would grow past this.
    pub segment_bytes: u64,
    /// `segment.ms`: roll when the active segment's first batch is this old.
    pub segment_ms: i64,
    /// `index.interval.bytes`: log bytes between sparse index entries.
    pub index_interval_bytes: u32,
    /// `segment.index.bytes`: maximum size of each index file; roll when full.
    pub segment_index_bytes: u32,
    /// `retention.ms`: -1 keeps data forever.
    pub retention_ms: i64,
    /// `retention.bytes`: -1 means no size limit.
    pub retention_bytes: i64,
    /// `message.timestamp.type=LogAppendTime` when true.
    pub timestamp_type_log_append: bool,
    /// `max.message.bytes`: largest batch accepted.
    pub max_message_bytes: usize,
    /// `cleanup.policy` contains `delete`: retention by time and size applies.
    pub cleanup_delete: bool,
    /// `cleanup.policy` contains `compact`: the cleaner keeps the latest record per key.
    pub cleanup_compact: bool,
    /// `delete.retention.ms`: how long tombstones survive cleaning (see `cleaner.rs`).
    pub delete_retention_ms: i64,
    /// `min.compaction.lag.ms`: records younger than this are not compacted.
    pub min_compaction_lag_ms: i64,
    /// `min.cleanable.dirty.ratio`: clean when dirty bytes / cleanable bytes reach this.
    pub min_cleanable_dirty_ratio: f64,
}

impl Default for LogConfig {
    fn default() -> Self {
        const DAY_MS: i64 = 24 * 60 * 60 * 1000;
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * DAY_MS,
            index_interval_bytes: 4096,
            segment_index_bytes: 10 * 1024 * 1024,
            retention_ms: 7 * DAY_MS,
            retention_bytes: -1,
            timestamp_type_log_append: false,
            max_message_bytes: 1_048_588,
            cleanup_delete: true,
            cleanup_compact: false,
            delete_retention_ms: DAY_MS,
            min_compaction_lag_ms: 0,
            min_cleanable_dirty_ratio: 0.5,
        }
    }
}

impl LogConfig {
    /// Segment size cap actually used: positions in the offset index are u32.
    pub(crate) fn effective_segment_bytes(&self) -> u64 {
        self.segment_bytes.clamp(1, u32::MAX as u64)
    }
}
