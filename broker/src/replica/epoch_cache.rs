//! The leader-epoch cache of one partition replica: where each leader epoch starts in the log.
//! Followers use it to find where their log diverged from a new leader's (KIP-101/KIP-320);
//! the leader uses it to tell a fetching follower where its last fetched epoch ends.
//!
//! [`EpochHistory`] is the pure part; [`LeaderEpochCache`] keeps it in the partition directory
//! as `leader-epoch-checkpoint` (Kafka's format: version, count, then `epoch startOffset` lines),
//! rewritten atomically on every change. Changes are rare: one per leader epoch.

use std::path::{Path, PathBuf};

use crate::log::checkpoint::write_atomic;
use crate::log::{Log, LogError};

/// No epoch known (Kafka's UNDEFINED_EPOCH).
pub const UNDEFINED_EPOCH: i32 = -1;
/// No offset known (Kafka's UNDEFINED_EPOCH_OFFSET).
pub const UNDEFINED_OFFSET: i64 = -1;

pub const CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";
const CHECKPOINT_VERSION: &str = "0";

/// One leader epoch and the offset of its first batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

/// Epoch start offsets, both strictly increasing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochHistory {
    entries: Vec<EpochEntry>,
}

impl EpochHistory {
    /// Builds a history from `(epoch, start)` pairs in log order, dropping any that do not
    /// increase.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (i32, i64)>) -> EpochHistory {
        let mut h = EpochHistory::default();
        for (epoch, start_offset) in pairs {
            h.assign(epoch, start_offset);
        }
        h
    }

    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    /// Records that `epoch` starts at `start_offset`. Entries that would no longer be monotonic
    /// (same or later epoch, same or later offset) are dropped first, as Kafka does. Returns
    /// whether the history changed.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if epoch < 0 || start_offset < 0 {
            return false;
        }
        let needed = match self.entries.last() {
            None => true,
            Some(last) => epoch != last.epoch || start_offset < last.start_offset,
        };
        if !needed {
            return false;
        }
        while self
            .entries
            .last()
            .is_some_and(|e| e.epoch >= epoch || e.start_offset >= start_offset)
        {
            self.entries.pop();
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        true
    }

    /// Kafka's `endOffsetFor`: the largest epoch `<=` `requested` and the offset where it ends
    /// (the start of the next epoch, or `log_end_offset` for the latest). A requested epoch
    /// below every known one gives `(requested, first start)`; above every known one (or
    /// [`UNDEFINED_EPOCH`]) gives `(UNDEFINED_EPOCH, UNDEFINED_OFFSET)`.
    pub fn end_offset_for(&self, requested: i32, log_end_offset: i64) -> (i32, i64) {
        if requested == UNDEFINED_EPOCH {
            return (UNDEFINED_EPOCH, UNDEFINED_OFFSET);
        }
        if self.latest_epoch() == Some(requested) {
            return (requested, log_end_offset);
        }
        let higher = self.entries.partition_point(|e| e.epoch <= requested);
        let Some(next) = self.entries.get(higher) else {
            return (UNDEFINED_EPOCH, UNDEFINED_OFFSET);
        };
        match higher.checked_sub(1).map(|i| self.entries[i]) {
            None => (requested, next.start_offset),
            Some(floor) => (floor.epoch, next.start_offset),
        }
    }

    /// The log was truncated to `end_offset`: epochs starting at or after it are gone.
    pub fn truncate_from_end(&mut self, end_offset: i64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.start_offset < end_offset);
        self.entries.len() != before
    }

    /// The log start moved to `start_offset`: epochs wholly before it are dropped and the one
    /// containing it now starts there.
    pub fn truncate_from_start(&mut self, start_offset: i64) -> bool {
        let covered = self
            .entries
            .partition_point(|e| e.start_offset <= start_offset);
        let Some(last_covered) = covered.checked_sub(1) else {
            return false;
        };
        if covered == 1 && self.entries[0].start_offset == start_offset {
            return false;
        }
        let epoch = self.entries[last_covered].epoch;
        self.entries.drain(..covered);
        self.entries.insert(
            0,
            EpochEntry {
                epoch,
                start_offset,
            },
        );
        true
    }

    pub fn clear(&mut self) -> bool {
        let changed = !self.entries.is_empty();
        self.entries.clear();
        changed
    }

    fn encode(&self) -> String {
        let mut out = format!("{CHECKPOINT_VERSION}\n{}\n", self.entries.len());
        for e in &self.entries {
            out.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
        }
        out
    }

    fn decode(text: &str) -> Result<EpochHistory, String> {
        let mut lines = text.lines();
        match lines.next() {
            Some(v) if v.trim() == CHECKPOINT_VERSION => {}
            other => return Err(format!("unsupported version line {other:?}")),
        }
        let count: usize = lines
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or("missing entry count")?;
        let mut pairs = Vec::with_capacity(count.min(1024));
        for _ in 0..count {
            let line = lines.next().ok_or("fewer entries than the count says")?;
            let mut parts = line.split_whitespace();
            let epoch = parts.next().and_then(|p| p.parse::<i32>().ok());
            let start = parts.next().and_then(|p| p.parse::<i64>().ok());
            match (epoch, start, parts.next()) {
                (Some(e), Some(s), None) => pairs.push((e, s)),
                _ => return Err(format!("bad entry line `{line}`")),
            }
        }
        Ok(EpochHistory::from_pairs(pairs))
    }
}

/// The leader's verdict on a follower's fetch position (KIP-320, Fetch v12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowerPosition {
    /// The follower's log is a prefix of the leader's: serve the fetch.
    Consistent,
    /// The follower's log diverged: it must truncate to at most `end_offset`, the end of
    /// `epoch` (the largest epoch not above its last fetched one) in the leader's log.
    Diverging { epoch: i32, end_offset: i64 },
    /// The leader cannot place the follower's position (epoch unknown, or below the log start).
    OutOfRange,
}

/// Kafka's `validateFetchOffsetAndMaybeGetDivergingEpoch`, for a follower fetching at
/// `fetch_offset` whose last fetched batch had `last_fetched_epoch` (-1: not given).
pub fn check_follower_position(
    leader_history: &EpochHistory,
    log_start_offset: i64,
    log_end_offset: i64,
    fetch_offset: i64,
    last_fetched_epoch: i32,
) -> FollowerPosition {
    if last_fetched_epoch < 0 {
        return FollowerPosition::Consistent;
    }
    let (epoch, end_offset) = leader_history.end_offset_for(last_fetched_epoch, log_end_offset);
    if epoch == UNDEFINED_EPOCH || end_offset == UNDEFINED_OFFSET {
        return FollowerPosition::OutOfRange;
    }
    if fetch_offset < log_start_offset {
        return FollowerPosition::OutOfRange;
    }
    if epoch < last_fetched_epoch || end_offset < fetch_offset {
        return FollowerPosition::Diverging { epoch, end_offset };
    }
    FollowerPosition::Consistent
}

/// Where a follower truncates when the leader answers `diverging` (Kafka's
/// `getOffsetTruncationState`). If the follower does not have the leader's epoch, it truncates
/// to the end of its own largest epoch below it and fetches again, which may diverge again
/// further back; otherwise to the smaller of the two ends of that epoch.
pub fn follower_truncation_offset(
    own_history: &EpochHistory,
    own_log_end_offset: i64,
    leader_epoch: i32,
    leader_end_offset: i64,
) -> i64 {
    let (epoch, end) = own_history.end_offset_for(leader_epoch, own_log_end_offset);
    if end == UNDEFINED_OFFSET {
        return leader_end_offset.min(own_log_end_offset);
    }
    if epoch != leader_epoch {
        end.min(own_log_end_offset)
    } else {
        end.min(leader_end_offset).min(own_log_end_offset)
    }
}

/// An [`EpochHistory`] kept on disk in a partition directory.
#[derive(Debug)]
pub struct LeaderEpochCache {
    dir: PathBuf,
    history: EpochHistory,
}

impl LeaderEpochCache {
    /// Loads the checkpoint, or rebuilds it from the log's batch headers when it is missing or
    /// unreadable (data written before this file existed). Entries past the log end (written
    /// just before an append a crash lost) are dropped.
    pub fn load(log: &Log) -> Result<LeaderEpochCache, LogError> {
        let dir = log.dir().to_path_buf();
        let path = dir.join(CHECKPOINT_FILE);
        let stored = match std::fs::read_to_string(&path) {
            Ok(text) => match EpochHistory::decode(&text) {
                Ok(h) => Some(h),
                Err(reason) => {
                    tracing::warn!(path = %path.display(), %reason, "leader epoch checkpoint unreadable; rebuilding it from the log");
                    None
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(LogError::io(path, e)),
        };
        let (mut history, rebuilt) = match stored {
            Some(h) => (h, false),
            None => (
                EpochHistory::from_pairs(log.leader_epoch_starts(log.log_start_offset())?),
                true,
            ),
        };
        let trimmed = history.truncate_from_end(log.log_end_offset());
        let cache = LeaderEpochCache { dir, history };
        // A missing file rebuilds to the same history, so an empty one need not be written
        // (a new partition's first epoch writes it).
        if trimmed || (rebuilt && !cache.history.entries.is_empty()) {
            cache.persist()?;
        }
        Ok(cache)
    }

    pub fn history(&self) -> &EpochHistory {
        &self.history
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.history.latest_epoch()
    }

    pub fn end_offset_for(&self, requested: i32, log_end_offset: i64) -> (i32, i64) {
        self.history.end_offset_for(requested, log_end_offset)
    }

    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> Result<(), LogError> {
        self.change(|h| h.assign(epoch, start_offset))
    }

    pub fn truncate_from_end(&mut self, end_offset: i64) -> Result<(), LogError> {
        self.change(|h| h.truncate_from_end(end_offset))
    }

    pub fn truncate_from_start(&mut self, start_offset: i64) -> Result<(), LogError> {
        self.change(|h| h.truncate_from_start(start_offset))
    }

    pub fn clear(&mut self) -> Result<(), LogError> {
        self.change(EpochHistory::clear)
    }

    fn change(&mut self, f: impl FnOnce(&mut EpochHistory) -> bool) -> Result<(), LogError> {
        if f(&mut self.history) {
            self.persist()?;
        }
        Ok(())
    }

    fn persist(&self) -> Result<(), LogError> {
        write_atomic(&self.dir, CHECKPOINT_FILE, self.history.encode().as_bytes())
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(CHECKPOINT_FILE)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TestBatch;

    fn h(pairs: &[(i32, i64)]) -> EpochHistory {
        EpochHistory::from_pairs(pairs.iter().copied())
    }

    fn pairs(h: &EpochHistory) -> Vec<(i32, i64)> {
        h.entries()
            .iter()
            .map(|e| (e.epoch, e.start_offset))
            .collect()
    }

    #[test]
    fn assign_keeps_epochs_and_offsets_monotonic() {
        let mut e = EpochHistory::default();
        assert!(e.assign(0, 0));
        assert!(!e.assign(0, 5), "same epoch later offset: nothing to do");
        assert!(e.assign(2, 10));
        assert!(!e.assign(-1, 20), "undefined epochs are ignored");
        // A lower start for an existing epoch replaces it and what follows.
        assert!(e.assign(2, 8));
        assert_eq!(pairs(&e), vec![(0, 0), (2, 8)]);
        // A newer epoch starting before the latest one drops the conflicting entries.
        assert!(e.assign(3, 4));
        assert_eq!(pairs(&e), vec![(0, 0), (3, 4)]);
    }

    #[test]
    fn end_offset_for_follows_kafka() {
        let e = h(&[(1, 0), (3, 100), (6, 250)]);
        assert_eq!(e.end_offset_for(6, 300), (6, 300), "latest ends at the LEO");
        assert_eq!(e.end_offset_for(3, 300), (3, 250));
        assert_eq!(
            e.end_offset_for(4, 300),
            (3, 250),
            "unknown epoch: the one below"
        );
        assert_eq!(e.end_offset_for(0, 300), (0, 0), "below all: first start");
        assert_eq!(
            e.end_offset_for(7, 300),
            (UNDEFINED_EPOCH, UNDEFINED_OFFSET)
        );
        assert_eq!(
            e.end_offset_for(UNDEFINED_EPOCH, 300),
            (UNDEFINED_EPOCH, UNDEFINED_OFFSET)
        );
        assert_eq!(
            EpochHistory::default().end_offset_for(0, 0),
            (UNDEFINED_EPOCH, UNDEFINED_OFFSET)
        );
    }

    #[test]
    fn truncation_from_either_end() {
        let mut e = h(&[(1, 0), (3, 100), (6, 250)]);
        assert!(e.truncate_from_end(250));
        assert_eq!(pairs(&e), vec![(1, 0), (3, 100)]);
        assert!(!e.truncate_from_end(101));
        assert!(e.truncate_from_start(150));
        assert_eq!(pairs(&e), vec![(3, 150)]);
        assert!(!e.truncate_from_start(150));
        assert!(!e.truncate_from_start(10), "nothing before the first entry");
        let mut e = h(&[(1, 0), (3, 100)]);
        assert!(e.truncate_from_start(100));
        assert_eq!(pairs(&e), vec![(3, 100)]);
    }

    #[test]
    fn leader_detects_a_diverged_follower() {
        // Leader: epoch 0 from 0, epoch 2 from 50, epoch 4 from 80; LEO 120; log start 10.
        let leader = h(&[(0, 0), (2, 50), (4, 80)]);
        let check = |offset, epoch| check_follower_position(&leader, 10, 120, offset, epoch);
        assert_eq!(check(100, 4), FollowerPosition::Consistent);
        assert_eq!(check(120, 4), FollowerPosition::Consistent);
        assert_eq!(
            check(40, -1),
            FollowerPosition::Consistent,
            "no epoch given"
        );
        assert_eq!(check(70, 2), FollowerPosition::Consistent);
        // The follower wrote more in epoch 2 than the leader kept.
        assert_eq!(
            check(90, 2),
            FollowerPosition::Diverging {
                epoch: 2,
                end_offset: 80
            }
        );
        // The follower's epoch 3 never existed at the leader.
        assert_eq!(
            check(85, 3),
            FollowerPosition::Diverging {
                epoch: 2,
                end_offset: 80
            }
        );
        // The follower is ahead of the leader in the latest epoch.
        assert_eq!(
            check(130, 4),
            FollowerPosition::Diverging {
                epoch: 4,
                end_offset: 120
            }
        );
        assert_eq!(check(130, 5), FollowerPosition::OutOfRange, "epoch unknown");
        assert_eq!(check(5, 0), FollowerPosition::OutOfRange, "below log start");
    }

    #[test]
    fn follower_truncates_to_the_common_prefix() {
        // Follower: epoch 0 from 0, epoch 2 from 50, epoch 3 from 90; LEO 100.
        let follower = h(&[(0, 0), (2, 50), (3, 90)]);
        // Leader has epoch 2 ending at 80: both have epoch 2, truncate at the smaller end.
        assert_eq!(follower_truncation_offset(&follower, 100, 2, 80), 80);
        // Leader's epoch 2 ends after the follower's: the follower's end of epoch 2.
        assert_eq!(follower_truncation_offset(&follower, 100, 2, 95), 90);
        // Leader answers epoch 1, which the follower never had: truncate to the end of the
        // follower's epoch below it (0 ends at 50) and ask again.
        assert_eq!(follower_truncation_offset(&follower, 100, 1, 60), 50);
        // Epoch below anything the follower knows: nothing of it survives.
        let late = h(&[(5, 200)]);
        assert_eq!(follower_truncation_offset(&late, 250, 3, 180), 180);
        // No history at all: trust the leader's end.
        assert_eq!(
            follower_truncation_offset(&EpochHistory::default(), 100, 2, 60),
            60
        );
        assert_eq!(
            follower_truncation_offset(&EpochHistory::default(), 30, 2, 60),
            30
        );
    }

    #[test]
    fn checkpoint_round_trips_and_rejects_garbage() {
        let e = h(&[(0, 0), (4, 17)]);
        assert_eq!(EpochHistory::decode(&e.encode()).unwrap(), e);
        assert!(EpochHistory::decode("1\n0\n").is_err());
        assert!(EpochHistory::decode("0\n2\n0 0\n").is_err());
        assert!(EpochHistory::decode("0\n1\n0 x\n").is_err());
    }

    fn batch_at_epoch(log: &Log, epoch: i32) {
        let buf = TestBatch::values(&["v"]).timestamp(1).encode();
        let validated = crate::log::validate_batches(&buf, 1 << 20).unwrap();
        log.append(&buf, &validated, epoch, None).unwrap();
    }

    #[test]
    fn persisted_cache_survives_reopen_and_is_rebuilt_when_lost() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), crate::log::LogConfig::default()).unwrap();
        for epoch in [0, 0, 2, 2, 5] {
            batch_at_epoch(&log, epoch);
        }
        // No file yet: rebuilt from the batches.
        let empty = tempfile::tempdir().unwrap();
        let empty_log = Log::open(empty.path(), crate::log::LogConfig::default()).unwrap();
        let cache = LeaderEpochCache::load(&empty_log).unwrap();
        assert!(cache.latest_epoch().is_none());
        assert!(!cache.path().exists(), "nothing to write for an empty log");
        let mut cache = LeaderEpochCache::load(&log).unwrap();
        assert_eq!(pairs(cache.history()), vec![(0, 0), (2, 2), (5, 4)]);
        assert!(cache.path().exists());
        // An epoch assigned at the log end with no batch yet (a crash right after becoming
        // leader) is dropped on load, as Kafka does; it is assigned again on leadership.
        cache.assign(7, 5).unwrap();
        let mut cache = LeaderEpochCache::load(&log).unwrap();
        assert_eq!(cache.latest_epoch(), Some(5));
        cache.assign(7, 5).unwrap();
        batch_at_epoch(&log, 7);
        let cache = LeaderEpochCache::load(&log).unwrap();
        assert_eq!(pairs(cache.history()), vec![(0, 0), (2, 2), (5, 4), (7, 5)]);
        // A garbled file is rebuilt from the log rather than trusted.
        std::fs::write(cache.path(), "garbage").unwrap();
        let cache = LeaderEpochCache::load(&log).unwrap();
        assert_eq!(pairs(cache.history()), vec![(0, 0), (2, 2), (5, 4), (7, 5)]);
    }
}
