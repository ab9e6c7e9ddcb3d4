//! Which old segments retention deletes (pure decisions; `Log` does the I/O).

use super::config::LogConfig;

/// What retention needs to know about a segment, oldest first.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SegmentStat {
    pub base_offset: i64,
    pub size: u64,
    /// Kafka's `largestTimestamp`: max record timestamp, or mtime without one.
    pub largest_timestamp: i64,
}

/// Why segments were deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionReason {
    /// Segments entirely below the log start offset (after DeleteRecords).
    LogStartOffset,
    /// `retention.ms`.
    Time,
    /// `retention.bytes`.
    Size,
}

/// Number of oldest segments to delete and why, mirroring Kafka's
/// `deleteOldSegments`: first segments wholly below the log start offset, then
/// by time (largest timestamp older than `now - retention_ms`), then by size
/// (while the total minus the segment stays >= `retention_bytes`). Each rule
/// stops at the first segment it keeps. The active (last) segment counts too,
/// unless it is empty; the caller rolls before deleting it. Time and size only apply
/// when `cleanup.policy` includes `delete` (a compact-only topic keeps its data).
pub(crate) fn segments_to_delete(
    segs: &[SegmentStat],
    log_start_offset: i64,
    config: &LogConfig,
    now_ms: i64,
) -> Option<(usize, RetentionReason)> {
    let eligible = |i: usize| !(i + 1 == segs.len() && segs[i].size == 0);

    // A segment is below the start offset when the next one starts at or before it.
    let below_start = (0..segs.len())
        .take_while(|&i| {
            i + 1 < segs.len() && segs[i + 1].base_offset <= log_start_offset && eligible(i)
        })
        .count();
    if below_start > 0 {
        return Some((below_start, RetentionReason::LogStartOffset));
    }

    if config.cleanup_delete && config.retention_ms >= 0 {
        let expired = (0..segs.len())
            .take_while(|&i| {
                eligible(i)
                    && now_ms.saturating_sub(segs[i].largest_timestamp) > config.retention_ms
            })
            .count();
        if expired > 0 {
            return Some((expired, RetentionReason::Time));
        }
    }

    if config.cleanup_delete && config.retention_bytes >= 0 {
        let total: u64 = segs.iter().map(|s| s.size).sum();
        let mut excess = total as i64 - config.retention_bytes;
        let mut n = 0;
        while n < segs.len() && eligible(n) && excess - segs[n].size as i64 >= 0 {
            excess -= segs[n].size as i64;
            n += 1;
        }
        if n > 0 {
            return Some((n, RetentionReason::Size));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(base: i64, size: u64, ts: i64) -> SegmentStat {
        SegmentStat {
            base_offset: base,
            size,
            largest_timestamp: ts,
        }
    }

    fn cfg(ms: i64, bytes: i64) -> LogConfig {
        LogConfig {
            retention_ms: ms,
            retention_bytes: bytes,
            ..LogConfig::default()
        }
    }

    #[test]
    fn by_time_stops_at_first_young_segment() {
        let segs = [
            stat(0, 10, 100),
            stat(10, 10, 500),
            stat(20, 10, 150),
            stat(30, 0, -1),
        ];
        assert_eq!(
            segments_to_delete(&segs, 0, &cfg(1000, -1), 1_200),
            Some((1, RetentionReason::Time))
        );
        assert_eq!(segments_to_delete(&segs, 0, &cfg(-1, -1), 1_000_000), None);
        // Everything expired but the empty active segment is never deleted.
        assert_eq!(
            segments_to_delete(&segs, 0, &cfg(10, -1), 1_000_000),
            Some((3, RetentionReason::Time))
        );
    }

    #[test]
    fn by_size_keeps_at_least_retention_bytes() {
        let segs = [
            stat(0, 100, 1),
            stat(10, 100, 1),
            stat(20, 100, 1),
            stat(30, 50, 1),
        ];
        // 350 total, keep >= 120: deleting 100 + 100 leaves 150.
        assert_eq!(
            segments_to_delete(&segs, 0, &cfg(-1, 120), 0),
            Some((2, RetentionReason::Size))
        );
        assert_eq!(segments_to_delete(&segs, 0, &cfg(-1, 350), 0), None);
        assert_eq!(
            segments_to_delete(&segs, 0, &cfg(-1, 0), 0),
            Some((4, RetentionReason::Size))
        );
    }

    #[test]
    fn below_log_start_offset() {
        let segs = [stat(0, 100, 1), stat(10, 100, 1), stat(20, 100, 1)];
        assert_eq!(
            segments_to_delete(&segs, 15, &cfg(-1, -1), 0),
            Some((1, RetentionReason::LogStartOffset))
        );
        assert_eq!(
            segments_to_delete(&segs, 20, &cfg(-1, -1), 0),
            Some((2, RetentionReason::LogStartOffset))
        );
    }

    #[test]
    fn compact_only_keeps_data_but_honours_log_start() {
        let segs = [stat(0, 100, 1), stat(10, 100, 1), stat(20, 100, 1)];
        let compact_only = LogConfig {
            cleanup_delete: false,
            cleanup_compact: true,
            ..cfg(10, 0)
        };
        assert_eq!(segments_to_delete(&segs, 0, &compact_only, 1_000_000), None);
        assert_eq!(
            segments_to_delete(&segs, 15, &compact_only, 1_000_000),
            Some((1, RetentionReason::LogStartOffset))
        );
    }
}
