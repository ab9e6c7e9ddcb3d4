//! Log compaction (`cleanup.policy=compact`), modelled on Kafka's `LogCleaner`.
//!
//! A run ([`Log::clean`]) works on the *cleanable* segments: the inactive
//! segments, oldest first, up to the first one that is younger than
//! `min.compaction.lag.ms` (by its largest timestamp) or reaches past the offset
//! limit (the high watermark, see [`Log::clean_below`]). The active segment is
//! never rewritten.
//!
//! 1. Map: every key of every batch in the whole log (cleanable segments, later
//!    segments and the active one, below the limit) to the offset of its latest
//!    record. Records are decoded (and decompressed) only here, in the background.
//! 2. Rewrite: each cleanable segment is copied to `<base>.log.cleaned`, keeping a
//!    record only if it is the latest of its key and not an expired tombstone;
//!    records with a null key are dropped. A batch whose records all survive is
//!    copied as is; otherwise it is rebuilt (`compact.rs`: same base offset, last
//!    offset, producer fields and codec); a batch left empty is dropped. Segments
//!    in which nothing changes are not rewritten. The cleaned log and its indexes
//!    (`.index.cleaned`, `.timeindex.cleaned`) are fsynced.
//! 3. Swap, under the log lock (after checking that no truncation happened and
//!    the segment is still in the log): rename every `.log.cleaned` to `.log.swap`
//!    and fsync the directory (commit point); then rename the cleaned indexes and
//!    the `.log.swap` over the live files and switch the in-memory segment. Readers
//!    holding the old file handles keep reading the old, consistent data.
//!    Recovery (`recovery.rs`) completes a `.log.swap` whose `.log` still exists,
//!    removes `.cleaned` files, and rebuilds the indexes of any segment that had
//!    leftovers, so a crash at any point leaves the old or the new segment.
//! 4. The cleaner checkpoint (`cleaner-offset-checkpoint`, the base offset of the
//!    first segment not cleaned) is persisted. It only steers the dirty ratio.
//!
//! Tombstones (null value) are kept until their batch's maxTimestamp is older than
//! `now - delete.retention.ms`, then dropped by the next run that rewrites their
//! segment (simpler than Kafka's delete horizon, which counts from the first
//! cleaning of the segment). The log start and end offsets never change.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError};

use bytes::Bytes;
use kafka_protocol::records::Record;
use tracing::{debug, warn};

use super::batch::{BatchHeader, HEADER_LEN};
use super::checkpoint::{self, CLEANER_CHECKPOINT_FILE};
use super::compact::{self, Filtered};
use super::config::LogConfig;
use super::error::{IoContext, LogError};
use super::scan::{read_full_at, ChunkReader};
use super::segment::{with_suffix, Segment, CLEANED_SUFFIX, SWAP_SUFFIX};
use super::Log;

/// What a cleaner run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanOutcome {
    /// Segments rewritten and swapped in.
    pub segments_cleaned: usize,
    /// Size of those segments before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Records dropped (obsolete, expired tombstones, null keys).
    pub records_removed: u64,
}

/// A segment as seen by the cleaner, taken under the lock.
struct SegSnap {
    base: i64,
    file: Arc<File>,
    path: PathBuf,
    size: u64,
}

/// What a run works on.
struct Plan {
    config: LogConfig,
    /// Segments to rewrite.
    cleanable: Vec<SegSnap>,
    /// The other segments (including the active one), for the key map only.
    rest: Vec<SegSnap>,
    /// Base offset of the first segment not cleanable: the new checkpoint.
    first_uncleanable: i64,
    truncations: u64,
}

/// A rewritten segment waiting to be swapped in.
struct Cleaned {
    seg: Segment,
    old_log: Arc<File>,
    bytes_before: u64,
    removed: u64,
}

/// Key -> offset of its latest record.
type OffsetMap = HashMap<Bytes, i64>;

impl Log {
    /// Compacts the log if `cleanup.policy` includes `compact` and either `force`
    /// or the dirty ratio (bytes of cleanable segments at or above the cleaner
    /// checkpoint / bytes of all cleanable segments) reaches
    /// `min.cleanable.dirty.ratio`. See the module docs. Every record in the log
    /// is considered committed: use [`Log::clean_below`] where a high watermark
    /// exists.
    pub fn clean(&self, now_ms: i64, force: bool) -> Result<CleanOutcome, LogError> {
        self.clean_below(now_ms, force, i64::MAX)
    }

    /// [`Log::clean`] considering only records below `max_offset` (the high
    /// watermark): records above it may still be truncated away, so they must not
    /// make older records obsolete; segments reaching past it are not cleaned.
    pub fn clean_below(
        &self,
        now_ms: i64,
        force: bool,
        max_offset: i64,
    ) -> Result<CleanOutcome, LogError> {
        // A panicked run left only `.cleaned` files, which the next run overwrites.
        let _running = self.cleaning.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(plan) = self.plan(now_ms, force, max_offset)? else {
            return Ok(CleanOutcome::default());
        };
        let map = build_map(&plan, max_offset)?;
        let mut cleaned = Vec::new();
        for snap in &plan.cleanable {
            match rewrite(&self.dir, snap, &map, &plan.config, now_ms) {
                Ok(Some(c)) => cleaned.push(c),
                Ok(None) => {}
                Err(e) => {
                    discard(&self.dir, cleaned.iter().map(|c| c.seg.base_offset));
                    discard(&self.dir, [snap.base]);
                    return Err(e);
                }
            }
        }
        let Some((outcome, checkpoint_moved)) = self.swap_in(&plan, cleaned)? else {
            return Ok(CleanOutcome::default());
        };
        if checkpoint_moved {
            checkpoint::write_i64(&self.dir, CLEANER_CHECKPOINT_FILE, plan.first_uncleanable)?;
        }
        Ok(outcome)
    }

    /// Offset below which the log has been cleaned (segment granularity).
    pub fn cleaner_checkpoint(&self) -> i64 {
        self.lock().cleaner_checkpoint
    }

    /// Decides, under the lock, whether to run and on which segments.
    fn plan(&self, now_ms: i64, force: bool, max_offset: i64) -> Result<Option<Plan>, LogError> {
        let st = self.lock_writable()?;
        let config = st.config.clone();
        if !config.cleanup_compact {
            return Ok(None);
        }
        let lag_horizon = now_ms.saturating_sub(config.min_compaction_lag_ms);
        let inactive = &st.segments[..st.segments.len() - 1];
        let n = inactive
            .iter()
            .take_while(|s| {
                // An empty segment has nothing to protect (and only an mtime).
                s.next_offset <= max_offset
                    && (config.min_compaction_lag_ms <= 0
                        || s.size == 0
                        || s.largest_timestamp() <= lag_horizon)
            })
            .count();
        let total: u64 = inactive[..n].iter().map(|s| s.size).sum();
        let dirty: u64 = inactive[..n]
            .iter()
            .filter(|s| s.base_offset >= st.cleaner_checkpoint)
            .map(|s| s.size)
            .sum();
        let ratio_reached =
            dirty > 0 && dirty as f64 >= config.min_cleanable_dirty_ratio * total as f64;
        if n == 0 || !(force || ratio_reached) {
            return Ok(None);
        }
        let snap = |s: &Segment| SegSnap {
            base: s.base_offset,
            file: Arc::clone(&s.log),
            path: s.log_path.clone(),
            size: s.size,
        };
        debug!(dir = %self.dir.display(), segments = n, dirty, total, "cleaning log");
        Ok(Some(Plan {
            cleanable: st.segments[..n].iter().map(snap).collect(),
            rest: st.segments[n..].iter().map(snap).collect(),
            first_uncleanable: st.segments[n].base_offset,
            truncations: st.truncations,
            config,
        }))
    }

    /// Step 3 of the module docs. `None` when a truncation made the run void;
    /// otherwise also whether the cleaner checkpoint moved.
    fn swap_in(
        &self,
        plan: &Plan,
        cleaned: Vec<Cleaned>,
    ) -> Result<Option<(CleanOutcome, bool)>, LogError> {
        let bases: Vec<i64> = cleaned.iter().map(|c| c.seg.base_offset).collect();
        let st = self.lock_writable();
        let mut st = match st {
            Ok(st) if st.truncations == plan.truncations => st,
            other => {
                // Closed, or truncated: the map may name records that are gone.
                let closed = other.err();
                discard(&self.dir, bases);
                return closed.map_or(Ok(None), Err);
            }
        };
        // Segments deleted by retention meanwhile are skipped.
        let (live, gone): (Vec<Cleaned>, Vec<Cleaned>) = cleaned.into_iter().partition(|c| {
            st.segments
                .iter()
                .any(|s| s.base_offset == c.seg.base_offset && Arc::ptr_eq(&s.log, &c.old_log))
        });
        discard(&self.dir, gone.iter().map(|c| c.seg.base_offset));
        for c in &live {
            let cleaned_log = &c.seg.log_path;
            let swap = swap_path(&self.dir, c.seg.base_offset);
            fs::rename(cleaned_log, &swap).ctx(cleaned_log)?;
        }
        if !live.is_empty() {
            checkpoint::sync_dir(&self.dir)?;
        }
        // An error from here on leaves a committed `.log.swap` that the next open
        // completes (or drops with its segment); until then the in-memory segment
        // keeps reading its old files through the open handles.
        let mut outcome = CleanOutcome::default();
        for mut c in live {
            let base = c.seg.base_offset;
            let [log, index, time] = Segment::final_paths(&self.dir, base);
            fs::rename(&c.seg.offset_index.path, &index).ctx(&index)?;
            fs::rename(&c.seg.time_index.path, &time).ctx(&time)?;
            fs::rename(swap_path(&self.dir, base), &log).ctx(&log)?;
            c.seg.set_paths([log, index, time]);
            outcome.segments_cleaned += 1;
            outcome.bytes_before += c.bytes_before;
            outcome.bytes_after += c.seg.size;
            outcome.records_removed += c.removed;
            if let Some(slot) = st.segments.iter_mut().find(|s| s.base_offset == base) {
                *slot = c.seg;
            }
        }
        let moved = st.cleaner_checkpoint != plan.first_uncleanable;
        st.cleaner_checkpoint = plan.first_uncleanable;
        drop(st);
        if outcome.segments_cleaned > 0 {
            checkpoint::sync_dir(&self.dir)?;
        }
        Ok(Some((outcome, moved)))
    }
}

fn swap_path(dir: &Path, base: i64) -> PathBuf {
    with_suffix(&Segment::final_paths(dir, base)[0], SWAP_SUFFIX)
}

/// Best-effort removal of the `.cleaned` files of `bases` (a later run or the next
/// open removes what is left).
fn discard(dir: &Path, bases: impl IntoIterator<Item = i64>) {
    for base in bases {
        for p in Segment::final_paths(dir, base) {
            let p = with_suffix(&p, CLEANED_SUFFIX);
            if let Err(e) = fs::remove_file(&p) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    warn!(path = %p.display(), error = %e, "cannot remove cleaner file");
                }
            }
        }
    }
}

/// Calls `f` with the position, header and a copy of every whole batch of `s`.
fn for_each_batch(
    s: &SegSnap,
    mut f: impl FnMut(u64, &BatchHeader, Bytes) -> Result<(), LogError>,
) -> Result<(), LogError> {
    let corrupt = |position: u64, reason: String| LogError::Corrupt {
        path: s.path.clone(),
        position,
        reason,
    };
    let mut reader = ChunkReader::new(&s.file, s.size);
    let mut pos = 0u64;
    while pos < s.size {
        let head = reader.get(pos, HEADER_LEN).ctx(&s.path)?;
        let h = head
            .ok_or_else(|| corrupt(pos, "truncated batch header".into()))
            .and_then(|b| BatchHeader::parse(b).map_err(|e| corrupt(pos, e.to_string())))?;
        let len = h.total_len();
        let batch = reader.get(pos, len).ctx(&s.path)?;
        let batch = batch.ok_or_else(|| corrupt(pos, "truncated batch".into()))?;
        f(pos, &h, Bytes::copy_from_slice(batch))?;
        pos += len as u64;
    }
    Ok(())
}

/// Decodes a data batch; control batches and batches the decoder refuses (kept
/// as stored) give `None`.
fn decode_data(s: &SegSnap, h: &BatchHeader, batch: &Bytes) -> Option<compact::DecodedBatch> {
    if h.is_control() {
        return None;
    }
    match compact::decode(batch) {
        Ok(d) => Some(d),
        Err(e) => {
            warn!(path = %s.path.display(), base_offset = h.base_offset, error = %e,
                "cleaner cannot decode batch, keeping it as stored");
            None
        }
    }
}

/// Step 1: key -> latest offset below `max_offset`, over the whole log.
fn build_map(plan: &Plan, max_offset: i64) -> Result<OffsetMap, LogError> {
    let mut map = OffsetMap::new();
    for s in plan.cleanable.iter().chain(&plan.rest) {
        for_each_batch(s, |_, h, batch| {
            if h.base_offset >= max_offset {
                return Ok(());
            }
            let Some(decoded) = decode_data(s, h, &batch) else {
                return Ok(());
            };
            for r in decoded.records.iter().filter(|r| r.offset < max_offset) {
                let Some(key) = &r.key else { continue };
                match map.get_mut(&key[..]) {
                    Some(latest) => *latest = (*latest).max(r.offset),
                    // A copy, so the map does not pin the whole batch buffer.
                    None => {
                        map.insert(Bytes::copy_from_slice(key), r.offset);
                    }
                }
            }
            Ok(())
        })?;
    }
    Ok(map)
}

/// Whether the cleaner keeps record `r` of a batch whose header is `h`.
fn keep(r: &Record, h: &BatchHeader, map: &OffsetMap, tombstone_horizon: i64) -> bool {
    let Some(key) = &r.key else {
        return false;
    };
    let latest = !matches!(map.get(&key[..]), Some(&o) if o > r.offset);
    latest && !(r.value.is_none() && h.max_timestamp < tombstone_horizon)
}

/// Step 2 for one segment: `None` when nothing in it would change. The cleaned
/// file is only created at the first change (the unchanged prefix is then copied),
/// so a run over already clean segments only reads.
fn rewrite(
    dir: &Path,
    s: &SegSnap,
    map: &OffsetMap,
    config: &LogConfig,
    now_ms: i64,
) -> Result<Option<Cleaned>, LogError> {
    let tombstone_horizon = now_ms.saturating_sub(config.delete_retention_ms);
    let path = with_suffix(&Segment::final_paths(dir, s.base)[0], CLEANED_SUFFIX);
    let mut out: Option<BufWriter<File>> = None;
    let mut removed = 0u64;
    for_each_batch(s, |position, h, batch| {
        let filtered = match decode_data(s, h, &batch) {
            Some(d) => compact::filter(&batch, h, &d, |r| keep(r, h, map, tombstone_horizon))
                .map_err(|e| LogError::Cleaner {
                    path: s.path.clone(),
                    reason: format!("cannot rebuild batch at offset {}: {e}", h.base_offset),
                })?,
            None => Filtered::Unchanged,
        };
        let (bytes, n): (&[u8], usize) = match &filtered {
            Filtered::Unchanged => match out.as_mut() {
                Some(w) => return w.write_all(&batch).ctx(&path),
                None => return Ok(()),
            },
            Filtered::Empty(n) => (&[], *n),
            Filtered::Rebuilt(b, n) => (b, *n),
        };
        removed += n as u64;
        let w = match out.as_mut() {
            Some(w) => w,
            None => out.insert(start_cleaned(&path, s, position)?),
        };
        w.write_all(bytes).ctx(&path)
    })?;
    let Some(out) = out else {
        return Ok(None);
    };
    let file = out
        .into_inner()
        .map_err(|e| LogError::io(&path, e.into_error()))?;
    file.sync_all().ctx(&path)?;
    drop(file);
    let seg = Segment::open_cleaned(dir, s.base, config, now_ms)?;
    Ok(Some(Cleaned {
        seg,
        old_log: Arc::clone(&s.file),
        bytes_before: s.size,
        removed,
    }))
}

/// Creates the cleaned file of `s` holding its first `len` bytes unchanged.
fn start_cleaned(path: &Path, s: &SegSnap, len: u64) -> Result<BufWriter<File>, LogError> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .ctx(path)?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let mut buf = vec![0u8; (1 << 20).min(len as usize)];
    let mut done = 0u64;
    while done < len {
        let want = ((len - done) as usize).min(buf.len());
        let n = read_full_at(&s.file, &mut buf[..want], done).ctx(&s.path)?;
        if n < want {
            return Err(LogError::Corrupt {
                path: s.path.clone(),
                position: done + n as u64,
                reason: "segment shorter than expected".into(),
            });
        }
        w.write_all(&buf[..n]).ctx(path)?;
        done += n as u64;
    }
    Ok(w)
}
