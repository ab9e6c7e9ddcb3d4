//! One segment: a `.log` file of whole batches plus its sparse indexes, and the
//! in-memory facts about it (size, next offset, max timestamp).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::warn;

use super::batch::BatchHeader;
use super::config::LogConfig;
use super::error::{IoContext, LogError};
use super::index::{OffsetEntry, OffsetIndex, TimeEntry, TimeIndex};
use super::scan::{BatchScanner, ChunkReader, Scanned};

pub(crate) const LOG_EXT: &str = "log";
pub(crate) const INDEX_EXT: &str = "index";
pub(crate) const TIME_INDEX_EXT: &str = "timeindex";
pub(crate) const DELETED_SUFFIX: &str = ".deleted";
/// Files written by the cleaner, complete only once fsynced (see `cleaner.rs`).
pub(crate) const CLEANED_SUFFIX: &str = ".cleaned";
/// A cleaned log file committed to replace its segment (see `cleaner.rs`).
pub(crate) const SWAP_SUFFIX: &str = ".swap";

/// `path` with `suffix` appended (`x.log` -> `x.log.cleaned`).
pub(crate) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// `<base offset, 20 digits>.<ext>`, sorting lexically in offset order.
pub(crate) fn file_name(base: i64, ext: &str) -> String {
    format!("{base:020}.{ext}")
}

/// Facts about one batch being appended, already at its final offsets.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchMeta {
    /// Position within the appended buffer.
    pub buf_pos: usize,
    pub len: usize,
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
}

impl BatchMeta {
    pub fn from_header(buf_pos: usize, h: &BatchHeader) -> Self {
        BatchMeta {
            buf_pos,
            len: h.total_len(),
            base_offset: h.base_offset,
            last_offset: h.last_offset(),
            max_timestamp: h.max_timestamp,
        }
    }
}

pub(crate) struct Segment {
    pub base_offset: i64,
    pub log_path: PathBuf,
    pub log: Arc<File>,
    pub offset_index: OffsetIndex,
    pub time_index: TimeIndex,
    /// Bytes of whole batches in the file; readers never look past this.
    pub size: u64,
    /// Bytes known to be fsynced.
    pub flushed_size: u64,
    /// Last offset + 1 of the last batch, or the base offset when empty.
    pub next_offset: i64,
    /// Largest batch maxTimestamp (-1 when none).
    pub max_timestamp: i64,
    /// Base offset of the first batch that reached `max_timestamp` (-1 when none).
    pub offset_of_max_timestamp: i64,
    /// maxTimestamp of the first batch: what segment.ms ages against (Kafka's
    /// "rolling based timestamp").
    pub first_batch_timestamp: Option<i64>,
    /// Wall clock when this segment was created or opened; the segment.ms
    /// fallback when batches carry no timestamp.
    pub created_ms: i64,
    bytes_since_index: u64,
}

fn open_log(path: &Path, create: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(create)
        .open(path)
}

impl Segment {
    fn empty(
        log_path: PathBuf,
        base: i64,
        log: File,
        index: OffsetIndex,
        time: TimeIndex,
        now_ms: i64,
    ) -> Self {
        Segment {
            base_offset: base,
            log_path,
            log: Arc::new(log),
            offset_index: index,
            time_index: time,
            size: 0,
            flushed_size: 0,
            next_offset: base,
            max_timestamp: -1,
            offset_of_max_timestamp: -1,
            first_batch_timestamp: None,
            created_ms: now_ms,
            bytes_since_index: 0,
        }
    }

    /// Creates a new, empty segment. Fails if its log file already exists.
    pub fn create(dir: &Path, base: i64, now_ms: i64) -> Result<Segment, LogError> {
        let log_path = dir.join(file_name(base, LOG_EXT));
        let log = open_log(&log_path, true).ctx(&log_path)?;
        let index_path = dir.join(file_name(base, INDEX_EXT));
        let index = OffsetIndex::create(index_path.clone()).ctx(&index_path)?;
        let time_path = dir.join(file_name(base, TIME_INDEX_EXT));
        let time = TimeIndex::create(time_path.clone()).ctx(&time_path)?;
        Ok(Segment::empty(log_path, base, log, index, time, now_ms))
    }

    /// Opens an existing segment trusting its indexes: only the data after the
    /// last offset index entry is scanned (headers only) to find the end.
    /// Returns `None` when the indexes are missing or disagree with the log, or
    /// the tail is not a clean sequence of batches: the caller then recovers.
    pub fn open_trusted(dir: &Path, base: i64, now_ms: i64) -> Result<Option<Segment>, LogError> {
        let log_path = dir.join(file_name(base, LOG_EXT));
        let log = open_log(&log_path, false).ctx(&log_path)?;
        let size = log.metadata().ctx(&log_path)?.len();
        let index_path = dir.join(file_name(base, INDEX_EXT));
        let time_path = dir.join(file_name(base, TIME_INDEX_EXT));
        let Some(index) = OffsetIndex::load(index_path.clone()).ctx(&index_path)? else {
            return Ok(None);
        };
        let Some(time) = TimeIndex::load(time_path.clone()).ctx(&time_path)? else {
            return Ok(None);
        };
        if size > u32::MAX as u64 || !index.is_consistent(size) || !time.is_consistent() {
            return Ok(None);
        }
        let mut seg = Segment::empty(log_path, base, log, index, time, now_ms);
        seg.size = size;
        seg.flushed_size = size;
        if let Some(t) = seg.time_index.last() {
            seg.max_timestamp = t.timestamp;
            seg.offset_of_max_timestamp = base + t.rel_offset as i64;
        }
        let (start, mut expected) = match seg.offset_index.last() {
            Some(e) => (e.position as u64, base + e.rel_offset as i64),
            None => (0, base),
        };
        seg.bytes_since_index = size - start;
        let mut scanner = BatchScanner::new(&seg.log, start, size, false);
        let mut first = true;
        loop {
            match scanner.next_batch().ctx(&seg.log_path)? {
                Scanned::End => break,
                Scanned::Invalid { .. } => return Ok(None),
                Scanned::Batch { header, .. } => {
                    // The indexed batch must start exactly at its entry's offset.
                    let ok = if first {
                        header.base_offset == expected
                    } else {
                        header.base_offset >= expected
                    };
                    if !ok || header.last_offset() < header.base_offset {
                        return Ok(None);
                    }
                    first = false;
                    if header.max_timestamp > seg.max_timestamp {
                        seg.max_timestamp = header.max_timestamp;
                        seg.offset_of_max_timestamp = header.base_offset;
                    }
                    expected = header.last_offset() + 1;
                }
            }
        }
        seg.next_offset = expected;
        if let Some(t) = seg.time_index.last() {
            if base + t.rel_offset as i64 >= seg.next_offset {
                return Ok(None);
            }
        }
        if size > 0 {
            let mut reader = ChunkReader::new(&seg.log, size);
            let head = reader.get(0, super::batch::HEADER_LEN).ctx(&seg.log_path)?;
            match head.map(BatchHeader::parse) {
                Some(Ok(h)) if h.base_offset >= base => {
                    seg.first_batch_timestamp = Some(h.max_timestamp)
                }
                _ => return Ok(None),
            }
        }
        Ok(Some(seg))
    }

    /// Opens a segment and rebuilds its indexes from a full scan, verifying every
    /// batch's CRC and offsets and truncating the file at the first bad batch.
    /// Returns the segment and the number of bytes cut off.
    pub fn open_recover(
        dir: &Path,
        base: i64,
        config: &LogConfig,
        now_ms: i64,
    ) -> Result<(Segment, u64), LogError> {
        let log_path = dir.join(file_name(base, LOG_EXT));
        let log = open_log(&log_path, false).ctx(&log_path)?;
        let size = log.metadata().ctx(&log_path)?.len();
        let index_path = dir.join(file_name(base, INDEX_EXT));
        let index = OffsetIndex::create(index_path.clone()).ctx(&index_path)?;
        let time_path = dir.join(file_name(base, TIME_INDEX_EXT));
        let time = TimeIndex::create(time_path.clone()).ctx(&time_path)?;
        let mut seg = Segment::empty(log_path, base, log, index, time, now_ms);
        seg.size = size;
        let cut = seg.rebuild(true, config)?;
        // After a process crash the data may still be only in the page cache.
        seg.flushed_size = 0;
        Ok((seg, cut))
    }

    /// Opens the complete, fsynced cleaned log `<base>.log.cleaned`, writes its indexes
    /// as `<base>.index.cleaned` / `<base>.timeindex.cleaned` and fsyncs them.
    pub fn open_cleaned(
        dir: &Path,
        base: i64,
        config: &LogConfig,
        now_ms: i64,
    ) -> Result<Segment, LogError> {
        let [log_path, index_path, time_path] =
            Segment::final_paths(dir, base).map(|p| with_suffix(&p, CLEANED_SUFFIX));
        let log = open_log(&log_path, false).ctx(&log_path)?;
        let size = log.metadata().ctx(&log_path)?.len();
        let index = OffsetIndex::create(index_path.clone()).ctx(&index_path)?;
        let time = TimeIndex::create(time_path.clone()).ctx(&time_path)?;
        let mut seg = Segment::empty(log_path, base, log, index, time, now_ms);
        seg.size = size;
        let cut = seg.rebuild(false, config)?;
        if cut > 0 {
            return Err(LogError::Corrupt {
                path: seg.log_path.clone(),
                position: seg.size,
                reason: "cleaned segment does not scan to its end".into(),
            });
        }
        seg.seal()?;
        seg.offset_index
            .file
            .sync_all()
            .ctx(&seg.offset_index.path)?;
        seg.time_index.file.sync_all().ctx(&seg.time_index.path)?;
        seg.offset_index.dirty = false;
        seg.time_index.dirty = false;
        seg.flushed_size = size;
        Ok(seg)
    }

    /// The live names of a segment's log, offset index and time index.
    pub fn final_paths(dir: &Path, base: i64) -> [PathBuf; 3] {
        [LOG_EXT, INDEX_EXT, TIME_INDEX_EXT].map(|ext| dir.join(file_name(base, ext)))
    }

    /// Points this segment's paths at `paths` after its files were renamed there
    /// (open handles follow a rename).
    pub fn set_paths(&mut self, [log, index, time]: [PathBuf; 3]) {
        self.log_path = log;
        self.offset_index.path = index;
        self.time_index.path = time;
    }

    /// Rescans the whole file, truncates it after the last good batch and
    /// rewrites both indexes. Returns the number of bytes truncated.
    fn rebuild(&mut self, verify_crc: bool, config: &LogConfig) -> Result<u64, LogError> {
        self.next_offset = self.base_offset;
        self.max_timestamp = -1;
        self.offset_of_max_timestamp = -1;
        self.first_batch_timestamp = None;
        self.bytes_since_index = 0;
        let mut offsets = Vec::new();
        let mut times = Vec::new();
        let log = Arc::clone(&self.log);
        let mut scanner = BatchScanner::new(&log, 0, self.size, verify_crc);
        let valid_end = loop {
            match scanner.next_batch().ctx(&self.log_path)? {
                Scanned::End => break self.size,
                Scanned::Invalid { position, reason } => {
                    warn!(path = %self.log_path.display(), position, %reason, "truncating invalid log tail");
                    break position;
                }
                Scanned::Batch { position, header } => {
                    let last = header.last_offset();
                    if header.base_offset < self.next_offset
                        || last < header.base_offset
                        || last - self.base_offset > u32::MAX as i64
                    {
                        warn!(path = %self.log_path.display(), position, base_offset = header.base_offset,
                            expected = self.next_offset, "truncating at out-of-order batch");
                        break position;
                    }
                    let meta = BatchMeta::from_header(0, &header);
                    self.note_batch(position, &meta, &mut offsets, &mut times, config);
                }
            }
        };
        let cut = self.size - valid_end;
        if cut > 0 {
            self.log.set_len(valid_end).ctx(&self.log_path)?;
            self.size = valid_end;
            self.flushed_size = self.flushed_size.min(valid_end);
        }
        let p = self.offset_index.path.clone();
        self.offset_index.rewrite(offsets).ctx(&p)?;
        let p = self.time_index.path.clone();
        self.time_index.rewrite(times).ctx(&p)?;
        Ok(cut)
    }

    /// Updates in-memory facts for a batch at file `position` and queues index
    /// entries, mirroring Kafka's `LogSegment.append`.
    fn note_batch(
        &mut self,
        position: u64,
        b: &BatchMeta,
        offsets: &mut Vec<OffsetEntry>,
        times: &mut Vec<TimeEntry>,
        config: &LogConfig,
    ) {
        if self.first_batch_timestamp.is_none() {
            self.first_batch_timestamp = Some(b.max_timestamp);
        }
        if b.max_timestamp > self.max_timestamp {
            self.max_timestamp = b.max_timestamp;
            self.offset_of_max_timestamp = b.base_offset;
        }
        if self.bytes_since_index > config.index_interval_bytes as u64 {
            let max_offsets = config.segment_index_bytes as usize / 8;
            if self.offset_index.len() + offsets.len() < max_offsets {
                offsets.push(OffsetEntry {
                    rel_offset: (b.base_offset - self.base_offset) as u32,
                    position: position as u32,
                });
            }
            if let Some(t) = self.pending_time_entry(times.last().copied()) {
                if self.time_index.len() + times.len() < config.segment_index_bytes as usize / 12 {
                    times.push(t);
                }
            }
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += b.len as u64;
        self.next_offset = b.last_offset + 1;
    }

    /// A time entry for the current max timestamp if it grew past the last one.
    fn pending_time_entry(&self, pending_last: Option<TimeEntry>) -> Option<TimeEntry> {
        let last_ts = pending_last
            .or_else(|| self.time_index.last())
            .map_or(-1, |e| e.timestamp);
        (self.max_timestamp > last_ts).then(|| TimeEntry {
            timestamp: self.max_timestamp,
            rel_offset: (self.offset_of_max_timestamp - self.base_offset) as u32,
        })
    }

    /// Writes `buf` (whole batches described by `batches`) at the end with one
    /// positional write, then the index entries it earned. No fsync.
    /// Writes `parts` back to back at the end of the segment (a batch may arrive as a patched
    /// header and its body).
    pub fn append(
        &mut self,
        parts: &[&[u8]],
        batches: &[BatchMeta],
        config: &LogConfig,
    ) -> Result<(), LogError> {
        let start = self.size;
        let len: u64 = parts.iter().map(|p| p.len() as u64).sum();
        let end = start + len;
        let last = batches
            .last()
            .map_or(self.next_offset - 1, |b| b.last_offset);
        if end > u32::MAX as u64 || last - self.base_offset > u32::MAX as i64 {
            return Err(LogError::InvalidAppend(format!(
                "append of {len} bytes up to offset {last} does not fit segment {}",
                self.base_offset
            )));
        }
        let mut at = start;
        for part in parts {
            self.log.write_all_at(part, at).ctx(&self.log_path)?;
            at += part.len() as u64;
        }
        let mut offsets = Vec::new();
        let mut times = Vec::new();
        for b in batches {
            self.note_batch(
                start + b.buf_pos as u64,
                b,
                &mut offsets,
                &mut times,
                config,
            );
        }
        self.size = end;
        // The log write succeeded; a failed index write only makes the index
        // sparser (the in-memory copy stays consistent), so it is not fatal.
        if let Err(e) = self.offset_index.append(&offsets) {
            warn!(path = %self.offset_index.path.display(), error = %e, "offset index append failed");
        }
        if let Err(e) = self.time_index.append(&times) {
            warn!(path = %self.time_index.path.display(), error = %e, "time index append failed");
        }
        Ok(())
    }

    /// Records the final max timestamp in the time index (Kafka's
    /// `onBecomeInactiveSegment`), so a clean open can read it from there.
    pub fn seal(&mut self) -> Result<(), LogError> {
        if let Some(t) = self.pending_time_entry(None) {
            let p = self.time_index.path.clone();
            self.time_index.append(&[t]).ctx(&p)?;
        }
        Ok(())
    }

    /// Whether an append of `len` bytes ending at `last_offset` with largest
    /// timestamp `max_ts` must go to a new segment (Kafka's `shouldRoll`).
    pub fn should_roll(
        &self,
        len: u64,
        max_ts: i64,
        last_offset: i64,
        config: &LogConfig,
        now_ms: i64,
    ) -> bool {
        if self.size == 0 {
            return false;
        }
        let aged = match self.first_batch_timestamp {
            Some(t) if t >= 0 => max_ts.saturating_sub(t),
            _ => now_ms.saturating_sub(self.created_ms),
        } > config.segment_ms;
        self.size + len > config.effective_segment_bytes()
            || aged
            || self.offset_index.is_full(config.segment_index_bytes)
            || self.time_index.is_full(config.segment_index_bytes)
            || last_offset - self.base_offset > u32::MAX as i64
    }

    /// Whether segment.ms has passed since the first batch (for periodic rolls).
    pub fn is_due(&self, config: &LogConfig, now_ms: i64) -> bool {
        let since = match self.first_batch_timestamp {
            Some(t) if t >= 0 => t,
            _ => self.created_ms,
        };
        self.size > 0 && now_ms.saturating_sub(since) > config.segment_ms
    }

    /// File position from which to scan for `offset`.
    pub fn lookup_position(&self, offset: i64) -> u64 {
        let rel = (offset - self.base_offset).clamp(0, u32::MAX as i64) as u32;
        self.offset_index.lookup(rel) as u64
    }

    /// Drops every batch whose last offset is >= `offset` (so no record at or
    /// after `offset` survives) and rebuilds the indexes from a header scan.
    pub fn truncate_to(&mut self, offset: i64, config: &LogConfig) -> Result<(), LogError> {
        let start = self.lookup_position(offset);
        let found =
            super::scan::find_batch(&self.log, start, self.size, offset).ctx(&self.log_path)?;
        let Some((position, _)) = found else {
            return Ok(());
        };
        self.log.set_len(position).ctx(&self.log_path)?;
        self.size = position;
        self.flushed_size = self.flushed_size.min(position);
        self.rebuild(false, config)?;
        Ok(())
    }

    /// All three files of this segment.
    pub fn paths(&self) -> [PathBuf; 3] {
        [
            self.log_path.clone(),
            self.offset_index.path.clone(),
            self.time_index.path.clone(),
        ]
    }

    /// Renames the files to `*.deleted` (cheap, under the log lock); the caller
    /// removes them later outside the lock. Open handles stay readable.
    pub fn rename_to_deleted(&self) -> Result<Vec<PathBuf>, LogError> {
        let mut renamed = Vec::with_capacity(3);
        for path in self.paths() {
            let mut target = path.clone().into_os_string();
            target.push(DELETED_SUFFIX);
            let target = PathBuf::from(target);
            match fs::rename(&path, &target) {
                Ok(()) => renamed.push(target),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(LogError::io(path, e)),
            }
        }
        // A `.log.swap` left by a cleaner swap that failed midway must not outlive
        // the segment: recovery would complete it if the base offset came back.
        let swap = with_suffix(&self.log_path, SWAP_SUFFIX);
        match fs::remove_file(&swap) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(LogError::io(swap, e)),
        }
        Ok(renamed)
    }

    /// Largest timestamp for retention: the max batch timestamp, or the file's
    /// mtime when no batch carries one (as Kafka's `largestTimestamp`).
    pub fn largest_timestamp(&self) -> i64 {
        if self.max_timestamp > 0 {
            return self.max_timestamp;
        }
        self.log
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(self.created_ms, |d| d.as_millis() as i64)
    }
}
