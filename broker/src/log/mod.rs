//! Durable per-partition storage: a directory of segments holding Kafka record
//! batches exactly as produced.
//!
//! Concurrency: all mutable state sits behind one `std::sync::Mutex`. Every
//! operation holds it only for in-memory work and cheap metadata syscalls; file
//! reads and fsyncs happen after releasing it, on `Arc<File>` handles taken
//! under it (a segment deleted meanwhile stays readable through its handle).
//! The compaction cleaner (`cleaner.rs`) reads and writes outside the lock too and
//! takes it only to swap cleaned segments in (renames and one directory fsync).

pub mod batch;
pub(crate) mod checkpoint;
mod cleaner;
mod compact;
pub mod config;
mod error;
mod index;
mod recovery;
mod retention;
mod scan;
mod segment;

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::RecordBatchDecoder;
use tracing::warn;

pub use batch::{
    batch_has_null_key, validate_batches, validate_batches_from, AppendOrigin, BatchError,
    BatchHeader, ValidatedBatches,
};
pub use cleaner::CleanOutcome;
pub use config::LogConfig;
pub use error::LogError;
pub use retention::RetentionReason;

use batch::{set_base_offset, set_log_append_time, set_partition_leader_epoch, HEADER_LEN};
use checkpoint::{CLEANER_CHECKPOINT_FILE, LOG_START_OFFSET_FILE};
use error::IoContext;
use retention::SegmentStat;
use scan::{find_batch, read_full_at, BatchScanner, Scanned};
use segment::{BatchMeta, Segment};

/// Result of an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendInfo {
    pub first_offset: i64,
    pub last_offset: i64,
    /// Largest batch maxTimestamp after LogAppendTime was applied (-1 if none).
    pub max_timestamp: i64,
    /// Batch-granular offset of `max_timestamp`: the last offset of that batch
    /// for CreateTime, the first offset of the append for LogAppendTime (all its
    /// records share the timestamp); -1 if no timestamp.
    pub offset_of_max_timestamp: i64,
    /// The append time applied, or -1 for CreateTime.
    pub log_append_time_ms: i64,
    /// Bytes written.
    pub bytes: usize,
}

/// Result of a read: whole batches as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadInfo {
    pub records: Bytes,
    /// Base offset of the first returned batch (None when nothing returned).
    pub first_offset: Option<i64>,
}

/// Result of [`Log::enforce_retention`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionOutcome {
    pub deleted_segments: usize,
    pub deleted_bytes: u64,
    pub reason: Option<RetentionReason>,
    pub log_start_offset: i64,
}

struct LogState {
    config: LogConfig,
    /// Sorted by base offset; never empty (the last one is the active segment).
    segments: Vec<Segment>,
    log_start_offset: i64,
    flushed_offset: i64,
    /// Bumped by truncation so a concurrent flush does not claim durability
    /// for offsets that were rewritten while it ran.
    truncations: u64,
    /// A segment file was created since the last directory fsync.
    dir_dirty: bool,
    closed: bool,
    /// Offset below which the cleaner has compacted the log (persisted in
    /// `cleaner-offset-checkpoint`); data from here on counts as dirty.
    cleaner_checkpoint: i64,
}

impl LogState {
    fn active(&self) -> &Segment {
        // Invariant: `segments` is never empty (open and every removal keep one).
        self.segments.last().expect("log has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments.last_mut().expect("log has an active segment")
    }

    fn log_end_offset(&self) -> i64 {
        self.active().next_offset
    }

    /// Index of the segment that would hold `offset` (the first for offsets
    /// below its base).
    fn segment_index_for(&self, offset: i64) -> usize {
        self.segments
            .partition_point(|s| s.base_offset <= offset)
            .saturating_sub(1)
    }

    fn roll(&mut self, dir: &Path, now_ms: i64) -> Result<(), LogError> {
        let base = self.log_end_offset();
        self.active_mut().seal()?;
        let seg = Segment::create(dir, base, now_ms)?;
        self.segments.push(seg);
        self.dir_dirty = true;
        Ok(())
    }
}

/// The log of one partition. `Send + Sync`; one writer at a time is expected
/// but not required (appends serialize on the mutex).
pub struct Log {
    dir: PathBuf,
    state: Mutex<LogState>,
    /// Held for a whole cleaner run, so runs of one log never overlap.
    cleaning: Mutex<()>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Removes files renamed to `.deleted`; failures only leave litter that the
/// next open cleans up.
fn remove_files(paths: &[PathBuf]) {
    for p in paths {
        if let Err(e) = fs::remove_file(p) {
            warn!(path = %p.display(), error = %e, "failed to remove deleted segment file");
        }
    }
}

/// Snapshot of one segment for I/O outside the lock.
struct SegView {
    file: Arc<File>,
    path: PathBuf,
    start: u64,
    size: u64,
}

impl Log {
    /// Opens (creating if needed) the log in `dir`, recovering after a crash.
    pub fn open(dir: impl Into<PathBuf>, config: LogConfig) -> Result<Log, LogError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).ctx(&dir)?;
        let clean = checkpoint::has_clean_shutdown_marker(&dir);
        let now = now_ms();
        let mut segments = recovery::load_segments(&dir, &config, clean, now)?;
        let checkpointed = checkpoint::read_i64(&dir, LOG_START_OFFSET_FILE)?;
        if segments.is_empty() {
            let base = checkpointed.unwrap_or(0).max(0);
            segments.push(Segment::create(&dir, base, now)?);
            checkpoint::sync_dir(&dir)?;
        }
        let first_base = segments[0].base_offset;
        let end = segments.last().map_or(first_base, |s| s.next_offset);
        let log_start_offset = checkpointed.unwrap_or(first_base).max(first_base).min(end);
        if clean {
            checkpoint::remove_clean_shutdown_marker(&dir)?;
        }
        let flushed_offset = if clean { end } else { log_start_offset };
        let cleaner_checkpoint = checkpoint::read_i64(&dir, CLEANER_CHECKPOINT_FILE)?
            .unwrap_or(0)
            .clamp(0, end);
        Ok(Log {
            dir,
            state: Mutex::new(LogState {
                config,
                segments,
                log_start_offset,
                flushed_offset,
                truncations: 0,
                dir_dirty: false,
                closed: false,
                cleaner_checkpoint,
            }),
            cleaning: Mutex::new(()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, LogState> {
        // A poisoned lock means a panic mid-update: the in-memory state may no
        // longer match the files, so continuing would risk corrupting them.
        self.state.lock().expect("log state mutex poisoned")
    }

    fn lock_writable(&self) -> Result<MutexGuard<'_, LogState>, LogError> {
        let st = self.lock();
        if st.closed {
            return Err(LogError::Closed(self.dir.clone()));
        }
        Ok(st)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn log_start_offset(&self) -> i64 {
        self.lock().log_start_offset
    }

    pub fn log_end_offset(&self) -> i64 {
        self.lock().log_end_offset()
    }

    pub fn size_bytes(&self) -> u64 {
        self.lock().segments.iter().map(|s| s.size).sum()
    }

    pub fn num_segments(&self) -> usize {
        self.lock().segments.len()
    }

    pub fn config(&self) -> LogConfig {
        self.lock().config.clone()
    }

    /// New settings apply from the next append/roll/retention check.
    pub fn update_config(&self, config: LogConfig) {
        self.lock().config = config;
    }

    /// Offset up to which (exclusive) data is known to be fsynced.
    pub fn flushed_offset(&self) -> i64 {
        self.lock().flushed_offset
    }

    /// Appends a validated produce blob: assigns offsets from the log end offset, stamps the
    /// leader epoch and, when `log_append_time_ms` is Some, LogAppendTime. `records` is not
    /// modified or copied: each batch is written as a patched copy of its 61-byte header
    /// followed by its body straight from the request buffer. Does not fsync.
    pub fn append(
        &self,
        records: &[u8],
        validated: &ValidatedBatches,
        leader_epoch: i32,
        log_append_time_ms: Option<i64>,
    ) -> Result<AppendInfo, LogError> {
        if records.len() != validated.total_bytes || validated.headers.is_empty() {
            return Err(LogError::InvalidAppend(format!(
                "buffer of {} bytes does not match the validated {} bytes in {} batches",
                records.len(),
                validated.total_bytes,
                validated.headers.len()
            )));
        }
        // Header copies and bodies; re-checked against the buffer so a mismatched
        // `validated` cannot make us write the wrong bytes.
        let mut headers = Vec::with_capacity(validated.headers.len());
        let mut bodies = Vec::with_capacity(validated.headers.len());
        let mut pos = 0usize;
        for h in &validated.headers {
            let on_buf = BatchHeader::parse(&records[pos..])?;
            if on_buf.batch_length != h.batch_length
                || h.last_offset_delta < 0
                || pos + h.total_len() > records.len()
            {
                return Err(LogError::InvalidAppend(
                    "validated headers do not match the buffer".into(),
                ));
            }
            let mut header = [0u8; HEADER_LEN];
            header.copy_from_slice(&records[pos..pos + HEADER_LEN]);
            let body = &records[pos + HEADER_LEN..pos + h.total_len()];
            // LogAppendTime does not depend on offsets: patch (and re-CRC) before locking.
            if let Some(t) = log_append_time_ms {
                set_log_append_time(&mut header, body, t);
            }
            headers.push(header);
            bodies.push(body);
            pos += h.total_len();
        }

        let mut st = self.lock_writable()?;
        let first_offset = st.log_end_offset();
        let mut metas = Vec::with_capacity(headers.len());
        let mut next = first_offset;
        let mut max_timestamp = -1i64;
        let mut offset_of_max_timestamp = -1i64;
        let mut buf_pos = 0usize;
        for (header, h) in headers.iter_mut().zip(&validated.headers) {
            set_base_offset(header, next);
            set_partition_leader_epoch(header, leader_epoch);
            let ts = log_append_time_ms.unwrap_or(h.max_timestamp);
            let last = next + h.last_offset_delta as i64;
            if ts > max_timestamp {
                max_timestamp = ts;
                offset_of_max_timestamp = if log_append_time_ms.is_some() {
                    first_offset
                } else {
                    last
                };
            }
            metas.push(BatchMeta {
                buf_pos,
                len: h.total_len(),
                base_offset: next,
                last_offset: last,
                max_timestamp: ts,
            });
            buf_pos += h.total_len();
            next = last + 1;
        }
        let last_offset = next - 1;
        let parts: Vec<&[u8]> = headers
            .iter()
            .zip(&bodies)
            .flat_map(|(header, body)| [&header[..], *body])
            .collect();
        self.append_locked(&mut st, &parts, &metas, max_timestamp, last_offset)?;
        Ok(AppendInfo {
            first_offset,
            last_offset,
            max_timestamp,
            offset_of_max_timestamp,
            log_append_time_ms: log_append_time_ms.unwrap_or(-1),
            bytes: records.len(),
        })
    }

    fn append_locked(
        &self,
        st: &mut LogState,
        parts: &[&[u8]],
        metas: &[BatchMeta],
        max_timestamp: i64,
        last_offset: i64,
    ) -> Result<(), LogError> {
        let now = now_ms();
        let config = st.config.clone();
        if st.active().should_roll(
            parts.iter().map(|p| p.len() as u64).sum(),
            max_timestamp,
            last_offset,
            &config,
            now,
        ) {
            st.roll(&self.dir, now)?;
        }
        st.active_mut().append(parts, metas, &config)
    }

    /// Appends batches fetched from the leader, keeping their offsets, epochs
    /// and timestamps. The first batch must start at or after the log end
    /// offset (a compacted leader log has gaps between batches) and offsets
    /// must increase; every CRC is checked.
    pub fn append_as_follower(&self, records: &[u8]) -> Result<AppendInfo, LogError> {
        let mut metas = Vec::new();
        let mut pos = 0usize;
        let mut max_timestamp = -1i64;
        let mut offset_of_max_timestamp = -1i64;
        let mut prev_last: Option<i64> = None;
        while pos < records.len() {
            let h = BatchHeader::parse(&records[pos..])?;
            let len = h.total_len();
            if pos + len > records.len() {
                return Err(BatchError::Truncated {
                    position: pos,
                    needed: len,
                    available: records.len() - pos,
                }
                .into());
            }
            batch::verify_crc(&records[pos..pos + len], &h)?;
            if h.last_offset_delta < 0 || prev_last.is_some_and(|l| h.base_offset <= l) {
                return Err(LogError::InvalidAppend(format!(
                    "batch offsets {}..={} do not increase",
                    h.base_offset,
                    h.last_offset()
                )));
            }
            if h.max_timestamp > max_timestamp {
                max_timestamp = h.max_timestamp;
                offset_of_max_timestamp = h.last_offset();
            }
            prev_last = Some(h.last_offset());
            metas.push(BatchMeta::from_header(pos, &h));
            pos += len;
        }
        let (Some(first), Some(last)) = (metas.first(), metas.last()) else {
            return Err(BatchError::Empty.into());
        };
        let (first_offset, last_offset) = (first.base_offset, last.last_offset);
        let mut st = self.lock_writable()?;
        let expected = st.log_end_offset();
        if first_offset < expected {
            return Err(LogError::NonContiguousAppend {
                expected,
                got: first_offset,
            });
        }
        self.append_locked(&mut st, &[records], &metas, max_timestamp, last_offset)?;
        Ok(AppendInfo {
            first_offset,
            last_offset,
            max_timestamp,
            offset_of_max_timestamp,
            log_append_time_ms: -1,
            bytes: records.len(),
        })
    }

    /// Reads whole batches starting with the one containing `start_offset`,
    /// stopping before the first batch whose last offset is >= `max_offset`
    /// (the high watermark) or that would exceed `max_bytes`; with
    /// `min_one_batch` the first batch is returned even if larger (KIP-74).
    /// Data comes from a single segment per call, as in Kafka.
    pub fn read(
        &self,
        start_offset: i64,
        max_bytes: usize,
        max_offset: i64,
        min_one_batch: bool,
    ) -> Result<ReadInfo, LogError> {
        let empty = ReadInfo {
            records: Bytes::new(),
            first_offset: None,
        };
        let views = {
            let st = self.lock();
            let (start, end) = (st.log_start_offset, st.log_end_offset());
            if start_offset < start || start_offset > end {
                return Err(LogError::OffsetOutOfRange {
                    requested: start_offset,
                    start,
                    end,
                });
            }
            if start_offset == end || start_offset >= max_offset {
                return Ok(empty);
            }
            // Normally one segment; later ones too in case the offset falls in
            // a gap at the end of a segment.
            let i = st.segment_index_for(start_offset);
            st.segments[i..]
                .iter()
                .filter(|s| s.next_offset > start_offset)
                .map(|s| SegView {
                    file: Arc::clone(&s.log),
                    path: s.log_path.clone(),
                    start: s.lookup_position(start_offset),
                    size: s.size,
                })
                .collect::<Vec<_>>()
        };
        for v in views {
            let found = find_batch(&v.file, v.start, v.size, start_offset).ctx(&v.path)?;
            if let Some((position, first)) = found {
                return read_batches(&v, position, &first, max_bytes, max_offset, min_one_batch);
            }
        }
        Ok(empty)
    }

    /// fsyncs every segment with unflushed bytes, up to the log end offset seen
    /// at the start of the call, without holding the lock during the fsyncs.
    /// Returns the offset up to which data is durable (exclusive).
    pub fn flush(&self) -> Result<i64, LogError> {
        self.flush_inner(false)
    }

    fn flush_inner(&self, all_indexes: bool) -> Result<i64, LogError> {
        struct Pending {
            base: i64,
            log: Arc<File>,
            size: u64,
            indexes: Vec<(Arc<File>, PathBuf)>,
            path: PathBuf,
        }
        let (target, truncations, dir_dirty, pending) = {
            let st = self.lock();
            let active_base = st.active().base_offset;
            // The active segment's indexes are rebuilt by recovery after a
            // crash; syncing them on every flush would triple the fsyncs.
            let sync_indexes = |s: &Segment| all_indexes || s.base_offset != active_base;
            let pending: Vec<Pending> = st
                .segments
                .iter()
                .filter(|s| {
                    s.size > s.flushed_size
                        || (sync_indexes(s) && (s.offset_index.dirty || s.time_index.dirty))
                })
                .map(|s| {
                    let indexes = if sync_indexes(s) {
                        vec![
                            (
                                Arc::clone(&s.offset_index.file),
                                s.offset_index.path.clone(),
                            ),
                            (Arc::clone(&s.time_index.file), s.time_index.path.clone()),
                        ]
                    } else {
                        Vec::new()
                    };
                    Pending {
                        base: s.base_offset,
                        log: Arc::clone(&s.log),
                        size: s.size,
                        indexes,
                        path: s.log_path.clone(),
                    }
                })
                .collect();
            (st.log_end_offset(), st.truncations, st.dir_dirty, pending)
        };
        for p in &pending {
            p.log.sync_data().ctx(&p.path)?;
            for (f, path) in &p.indexes {
                f.sync_data().ctx(path)?;
            }
        }
        if dir_dirty {
            checkpoint::sync_dir(&self.dir)?;
        }
        let mut st = self.lock();
        if dir_dirty {
            st.dir_dirty = false;
        }
        for p in &pending {
            if st.truncations != truncations {
                // Bytes may have been cut and rewritten since the snapshot.
                break;
            }
            if let Some(s) = st
                .segments
                .iter_mut()
                .find(|s| s.base_offset == p.base && Arc::ptr_eq(&s.log, &p.log))
            {
                s.flushed_size = s.flushed_size.max(p.size.min(s.size));
                if !p.indexes.is_empty() {
                    s.offset_index.dirty = false;
                    s.time_index.dirty = false;
                }
            }
        }
        if st.truncations == truncations {
            st.flushed_offset = st.flushed_offset.max(target);
        }
        Ok(st.flushed_offset)
    }

    /// Kafka ListOffsets by timestamp: the earliest offset (>= log start) whose
    /// record timestamp is >= `ts`, with that timestamp.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, LogError> {
        let (log_start, views) = {
            let st = self.lock();
            let views: Vec<SegView> = st
                .segments
                .iter()
                .filter(|s| s.max_timestamp >= ts && s.next_offset > st.log_start_offset)
                .map(|s| {
                    // Batches before the last entry below `ts` cannot qualify.
                    let from = s
                        .time_index
                        .lookup_before(ts)
                        .map_or(s.base_offset, |e| s.base_offset + e.rel_offset as i64)
                        .max(st.log_start_offset);
                    SegView {
                        file: Arc::clone(&s.log),
                        path: s.log_path.clone(),
                        start: s.lookup_position(from),
                        size: s.size,
                    }
                })
                .collect();
            (st.log_start_offset, views)
        };
        for v in views {
            let mut scanner = BatchScanner::new(&v.file, v.start, v.size, false);
            while let Scanned::Batch {
                position,
                header: h,
            } = scanner.next_batch().ctx(&v.path)?
            {
                if h.max_timestamp < ts || h.last_offset() < log_start {
                    continue;
                }
                let found = find_record(&v, position, &h, |off, t| off >= log_start && t >= ts)?;
                if found.is_some() {
                    return Ok(found);
                }
            }
        }
        Ok(None)
    }

    /// Kafka ListOffsets MAX_TIMESTAMP: the earliest record carrying the largest
    /// timestamp, as (offset, timestamp); None when no record has a timestamp.
    pub fn max_timestamp(&self) -> Result<Option<(i64, i64)>, LogError> {
        let (max_ts, batch_offset, view) = {
            let st = self.lock();
            // Earliest segment wins ties, like Kafka's `maxBy`.
            let mut best: Option<&Segment> = None;
            for s in &st.segments {
                let better = match best {
                    Some(b) => s.max_timestamp > b.max_timestamp,
                    None => s.max_timestamp >= 0,
                };
                if better {
                    best = Some(s);
                }
            }
            let Some(s) = best else {
                return Ok(None);
            };
            let view = SegView {
                file: Arc::clone(&s.log),
                path: s.log_path.clone(),
                start: s.lookup_position(s.offset_of_max_timestamp),
                size: s.size,
            };
            (s.max_timestamp, s.offset_of_max_timestamp, view)
        };
        let found = find_batch(&view.file, view.start, view.size, batch_offset).ctx(&view.path)?;
        let Some((position, h)) = found else {
            return Ok(None);
        };
        Ok(find_record(&view, position, &h, |_, t| t == max_ts)?.or(Some((h.base_offset, max_ts))))
    }

    /// Removes every batch whose last offset is >= `offset`, so no record at or
    /// after `offset` survives. Unlike "cut at the first batch with base >=
    /// offset", a batch straddling `offset` is dropped too (as Kafka's
    /// `LogSegment.truncateTo` does), so the new log end offset can be below
    /// `offset` when it falls mid-batch; follower truncation points are batch
    /// boundaries in practice. An offset below the first segment empties the log
    /// and restarts it at `offset`.
    pub fn truncate_to(&self, offset: i64) -> Result<(), LogError> {
        let mut st = self.lock_writable()?;
        if offset >= st.log_end_offset() {
            return Ok(());
        }
        st.truncations += 1;
        let config = st.config.clone();
        let mut doomed = Vec::new();
        if offset < st.segments[0].base_offset {
            let base = offset.max(0);
            for s in st.segments.drain(..) {
                doomed.extend(s.rename_to_deleted()?);
            }
            let seg = Segment::create(&self.dir, base, now_ms())?;
            st.segments.push(seg);
            st.dir_dirty = true;
            st.log_start_offset = base;
            checkpoint::write_i64(&self.dir, LOG_START_OFFSET_FILE, base)?;
        } else {
            // Segments starting at or after `offset` go entirely.
            let keep = st
                .segments
                .partition_point(|s| s.base_offset < offset)
                .max(1);
            for s in st.segments.drain(keep..) {
                doomed.extend(s.rename_to_deleted()?);
            }
            st.active_mut().truncate_to(offset, &config)?;
            let end = st.log_end_offset();
            if st.log_start_offset > end {
                st.log_start_offset = end;
                checkpoint::write_i64(&self.dir, LOG_START_OFFSET_FILE, end)?;
            }
        }
        let end = st.log_end_offset();
        st.flushed_offset = st.flushed_offset.min(end);
        if st.cleaner_checkpoint > end {
            // Offsets from `end` on will be written again, uncleaned.
            st.cleaner_checkpoint = end;
            checkpoint::write_i64(&self.dir, CLEANER_CHECKPOINT_FILE, end)?;
        }
        let active = Arc::clone(&st.active().log);
        let active_path = st.active().log_path.clone();
        drop(st);
        // Make the cut durable (outside the lock; truncation is rare): data a
        // follower truncated must not reappear after a crash.
        active.sync_all().ctx(&active_path)?;
        checkpoint::sync_dir(&self.dir)?;
        remove_files(&doomed);
        Ok(())
    }

    /// Empties the log and restarts it at `offset` (log start and end), as a
    /// follower does when the leader no longer has the data it would fetch next.
    pub fn truncate_fully_and_start_at(&self, offset: i64) -> Result<(), LogError> {
        let base = offset.max(0);
        let mut st = self.lock_writable()?;
        st.truncations += 1;
        let mut doomed = Vec::new();
        for s in st.segments.drain(..) {
            doomed.extend(s.rename_to_deleted()?);
        }
        let seg = Segment::create(&self.dir, base, now_ms())?;
        st.segments.push(seg);
        st.dir_dirty = true;
        st.log_start_offset = base;
        st.flushed_offset = base;
        checkpoint::write_i64(&self.dir, LOG_START_OFFSET_FILE, base)?;
        if st.cleaner_checkpoint != base {
            st.cleaner_checkpoint = base;
            checkpoint::write_i64(&self.dir, CLEANER_CHECKPOINT_FILE, base)?;
        }
        drop(st);
        checkpoint::sync_dir(&self.dir)?;
        remove_files(&doomed);
        Ok(())
    }

    /// Deletes old segments per retention.ms / retention.bytes and the log start
    /// offset (see `retention::segments_to_delete`), rolling first if the active
    /// segment itself must go. Moves and persists the log start offset.
    ///
    /// Note: Kafka never deletes past the high watermark; this layer does not
    /// know it, so callers must not run retention on a follower ahead of it.
    pub fn enforce_retention(&self, now_ms: i64) -> Result<RetentionOutcome, LogError> {
        let mut st = self.lock_writable()?;
        let stats: Vec<SegmentStat> = st
            .segments
            .iter()
            .map(|s| SegmentStat {
                base_offset: s.base_offset,
                size: s.size,
                largest_timestamp: s.largest_timestamp(),
            })
            .collect();
        let decision =
            retention::segments_to_delete(&stats, st.log_start_offset, &st.config, now_ms);
        let Some((count, reason)) = decision else {
            return Ok(RetentionOutcome {
                deleted_segments: 0,
                deleted_bytes: 0,
                reason: None,
                log_start_offset: st.log_start_offset,
            });
        };
        if count == st.segments.len() {
            st.roll(&self.dir, now_ms)?;
        }
        let mut doomed = Vec::new();
        let mut deleted_bytes = 0;
        // Rename first; only then drop from memory, so a failed rename leaves
        // the state matching the files.
        for s in &st.segments[..count] {
            doomed.extend(s.rename_to_deleted()?);
            deleted_bytes += s.size;
        }
        st.segments.drain(..count);
        let new_start = st.log_start_offset.max(st.segments[0].base_offset);
        if new_start != st.log_start_offset {
            st.log_start_offset = new_start;
            checkpoint::write_i64(&self.dir, LOG_START_OFFSET_FILE, new_start)?;
        }
        let outcome = RetentionOutcome {
            deleted_segments: count,
            deleted_bytes,
            reason: Some(reason),
            log_start_offset: st.log_start_offset,
        };
        drop(st);
        remove_files(&doomed);
        Ok(outcome)
    }

    /// Rolls the active segment if segment.ms has passed since its first batch
    /// (for partitions that receive no appends). Returns whether it rolled.
    pub fn roll_if_due(&self, now_ms: i64) -> Result<bool, LogError> {
        let mut st = self.lock_writable()?;
        let config = st.config.clone();
        if !st.active().is_due(&config, now_ms) {
            return Ok(false);
        }
        st.roll(&self.dir, now_ms)?;
        Ok(true)
    }

    /// Headers of all batches from the one containing `offset` to the end
    /// (for rebuilding producer state); reads headers only.
    pub fn batch_headers_from(&self, offset: i64) -> Result<Vec<BatchHeader>, LogError> {
        let views: Vec<SegView> = {
            let st = self.lock();
            let i = st.segment_index_for(offset);
            st.segments[i..]
                .iter()
                .map(|s| SegView {
                    file: Arc::clone(&s.log),
                    path: s.log_path.clone(),
                    start: s.lookup_position(offset),
                    size: s.size,
                })
                .collect()
        };
        let mut out = Vec::new();
        for v in views {
            let mut scanner = BatchScanner::new(&v.file, v.start, v.size, false);
            loop {
                match scanner.next_batch().ctx(&v.path)? {
                    Scanned::Batch { header, .. } if header.last_offset() >= offset => {
                        out.push(header)
                    }
                    Scanned::Batch { .. } => {}
                    Scanned::End => break,
                    Scanned::Invalid { position, reason } => {
                        return Err(LogError::Corrupt {
                            path: v.path,
                            position,
                            reason,
                        })
                    }
                }
            }
        }
        Ok(out)
    }

    /// Where each leader epoch starts in the log from `offset` on: `(epoch,
    /// base offset of its first batch)` for every batch whose epoch is larger
    /// than the one before it. Reads headers only; rebuilds a lost
    /// leader-epoch checkpoint.
    pub fn leader_epoch_starts(&self, offset: i64) -> Result<Vec<(i32, i64)>, LogError> {
        let views: Vec<SegView> = {
            let st = self.lock();
            let i = st.segment_index_for(offset);
            st.segments[i..]
                .iter()
                .map(|s| SegView {
                    file: Arc::clone(&s.log),
                    path: s.log_path.clone(),
                    start: s.lookup_position(offset),
                    size: s.size,
                })
                .collect()
        };
        let mut out: Vec<(i32, i64)> = Vec::new();
        for v in views {
            let mut scanner = BatchScanner::new(&v.file, v.start, v.size, false);
            loop {
                match scanner.next_batch().ctx(&v.path)? {
                    Scanned::Batch { header, .. } if header.last_offset() >= offset => {
                        let epoch = header.partition_leader_epoch;
                        if epoch >= 0 && out.last().is_none_or(|&(last, _)| epoch > last) {
                            out.push((epoch, header.base_offset));
                        }
                    }
                    Scanned::Batch { .. } => {}
                    Scanned::End => break,
                    Scanned::Invalid { position, reason } => {
                        return Err(LogError::Corrupt {
                            path: v.path,
                            position,
                            reason,
                        })
                    }
                }
            }
        }
        Ok(out)
    }

    /// Flushes everything (including indexes) and writes the clean-shutdown
    /// marker, so the next open skips recovery. The log rejects writes after.
    pub fn close(&self) -> Result<(), LogError> {
        {
            let mut st = self.lock_writable()?;
            st.active_mut().seal()?;
            // Closed before flushing: nothing can be appended after the flush
            // and then be trusted under the clean marker.
            st.closed = true;
        }
        self.flush_inner(true)?;
        checkpoint::write_clean_shutdown_marker(&self.dir)
    }

    /// Deletes the log's directory and everything in it.
    pub fn delete_dir(self) -> Result<(), LogError> {
        let Log { dir, state, .. } = self;
        drop(state);
        fs::remove_dir_all(&dir).ctx(&dir)
    }
}

/// Copies the run of whole batches starting at `position` (whose header is
/// `first`) with one pread, cutting at `max_offset` and `max_bytes`.
fn read_batches(
    v: &SegView,
    position: u64,
    first: &BatchHeader,
    max_bytes: usize,
    max_offset: i64,
    min_one_batch: bool,
) -> Result<ReadInfo, LogError> {
    let empty = ReadInfo {
        records: Bytes::new(),
        first_offset: None,
    };
    let first_len = first.total_len();
    if first.last_offset() >= max_offset || (first_len > max_bytes && !min_one_batch) {
        return Ok(empty);
    }
    let budget = max_bytes.max(first_len);
    let want = (budget as u64).min(v.size - position) as usize;
    let mut buf = BytesMut::zeroed(want);
    let n = read_full_at(&v.file, &mut buf, position).ctx(&v.path)?;
    buf.truncate(n);
    // Keep whole batches below the high watermark that fit in the buffer.
    let mut end = 0usize;
    while end + HEADER_LEN <= buf.len() {
        let Ok(h) = BatchHeader::parse(&buf[end..]) else {
            break;
        };
        if end + h.total_len() > buf.len() || h.last_offset() >= max_offset {
            break;
        }
        end += h.total_len();
    }
    if end == 0 {
        return Ok(empty);
    }
    buf.truncate(end);
    Ok(ReadInfo {
        records: buf.freeze(),
        first_offset: Some(first.base_offset),
    })
}

/// Decodes the one batch at `position` to find its first record matching
/// `wanted(offset, timestamp)`. LogAppendTime batches need no decoding: every
/// record carries the batch's maxTimestamp.
fn find_record(
    v: &SegView,
    position: u64,
    h: &BatchHeader,
    wanted: impl Fn(i64, i64) -> bool,
) -> Result<Option<(i64, i64)>, LogError> {
    if h.is_log_append_time() {
        return Ok((h.base_offset..=h.last_offset())
            .find(|&o| wanted(o, h.max_timestamp))
            .map(|o| (o, h.max_timestamp)));
    }
    let mut buf = vec![0u8; h.total_len()];
    v.file.read_exact_at(&mut buf, position).ctx(&v.path)?;
    let mut bytes = Bytes::from(buf);
    let set = RecordBatchDecoder::decode(&mut bytes).map_err(|e| LogError::Corrupt {
        path: v.path.clone(),
        position,
        reason: format!("cannot decode batch: {e}"),
    })?;
    Ok(set
        .records
        .iter()
        .find(|r| wanted(r.offset, r.timestamp))
        .map(|r| (r.offset, r.timestamp)))
}

#[cfg(test)]
mod cleaner_tests;
#[cfg(test)]
mod tests;
