//! Loading a partition directory at open: stray-file cleanup, segment loading,
//! and crash recovery of segments that cannot be trusted.

use std::fs;
use std::path::Path;

use tracing::{info, warn};

use super::checkpoint::TMP_SUFFIX;
use super::config::LogConfig;
use super::error::{IoContext, LogError};
use super::segment::{
    Segment, CLEANED_SUFFIX, DELETED_SUFFIX, INDEX_EXT, LOG_EXT, SWAP_SUFFIX, TIME_INDEX_EXT,
};

/// Suffixes of leftovers from interrupted deletes and checkpoint writes.
const STRAY_SUFFIXES: [&str; 2] = [DELETED_SUFFIX, TMP_SUFFIX];

/// Base offset encoded in a `<20 digits>.<ext>` file name.
fn parse_base(name: &str, ext: &str) -> Option<i64> {
    let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Base offset of a cleaner leftover `<base>.<ext>.cleaned|.swap`, and whether it
/// is a committed log swap (`<base>.log.swap`).
fn parse_cleaner_leftover(name: &str) -> Option<(i64, bool)> {
    let (stem, swap) = match name.strip_suffix(SWAP_SUFFIX) {
        Some(stem) => (stem, true),
        None => (name.strip_suffix(CLEANED_SUFFIX)?, false),
    };
    if let Some(base) = parse_base(stem, LOG_EXT) {
        return Some((base, swap));
    }
    parse_base(stem, INDEX_EXT)
        .or_else(|| parse_base(stem, TIME_INDEX_EXT))
        .map(|base| (base, false))
}

/// Finishes or discards an interrupted cleaner swap (protocol in `cleaner.rs`). A
/// `<base>.log.swap` is a complete, fsynced cleaned log: it replaces `<base>.log`
/// (if that still exists; otherwise the segment was deleted and the swap is
/// dropped). `.cleaned` files are incomplete and removed. Either way the
/// segment's indexes may belong to the other version of the log, so they are
/// removed and the segment is rebuilt by recovery. Returns whether anything changed.
fn resolve_cleaner_leftovers(dir: &Path) -> Result<bool, LogError> {
    let mut leftovers = Vec::new();
    for entry in fs::read_dir(dir).ctx(dir)? {
        let entry = entry.ctx(dir)?;
        let name = entry.file_name();
        if let Some((base, swap)) = name.to_str().and_then(parse_cleaner_leftover) {
            leftovers.push((base, swap, entry.path()));
        }
    }
    for (base, swap, path) in &leftovers {
        let [log, index, time] = Segment::final_paths(dir, *base);
        if *swap && log.exists() {
            info!(path = %path.display(), "completing an interrupted segment swap");
            fs::rename(path, &log).ctx(path)?;
        } else {
            info!(path = %path.display(), "removing cleaner leftover");
            fs::remove_file(path).ctx(path)?;
        }
        for p in [index, time] {
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(LogError::io(p, e)),
            }
        }
    }
    Ok(!leftovers.is_empty())
}

/// Removes stray files and returns the sorted base offsets of all segments.
fn scan_dir(dir: &Path) -> Result<Vec<i64>, LogError> {
    if resolve_cleaner_leftovers(dir)? {
        super::checkpoint::sync_dir(dir)?;
    }
    let mut bases = Vec::new();
    let mut index_files = Vec::new();
    for entry in fs::read_dir(dir).ctx(dir)? {
        let entry = entry.ctx(dir)?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if STRAY_SUFFIXES.iter().any(|s| name.ends_with(s)) {
            info!(path = %path.display(), "removing stray file");
            fs::remove_file(&path).ctx(&path)?;
        } else if let Some(base) = parse_base(&name, LOG_EXT) {
            bases.push(base);
        } else if let Some(base) =
            parse_base(&name, INDEX_EXT).or_else(|| parse_base(&name, TIME_INDEX_EXT))
        {
            index_files.push((base, path));
        }
    }
    bases.sort_unstable();
    // Indexes without their log are leftovers of a delete interrupted midway.
    for (base, path) in index_files {
        if bases.binary_search(&base).is_err() {
            info!(path = %path.display(), "removing orphan index file");
            fs::remove_file(&path).ctx(&path)?;
        }
    }
    Ok(bases)
}

/// Loads all segments, oldest first.
///
/// After a clean shutdown every segment's indexes are trusted (only the bytes
/// after the last index entry are scanned, headers only). Otherwise the last
/// segment is fully recovered (CRC and offsets of every batch, truncating at
/// the first bad one, indexes rebuilt), as is any segment whose indexes are
/// missing or inconsistent. If a segment other than the last loses bytes, the
/// segments after it are deleted so the log stays a contiguous history.
pub(crate) fn load_segments(
    dir: &Path,
    config: &LogConfig,
    clean: bool,
    now_ms: i64,
) -> Result<Vec<Segment>, LogError> {
    let bases = scan_dir(dir)?;
    let mut segments: Vec<Segment> = Vec::with_capacity(bases.len());
    for (i, &base) in bases.iter().enumerate() {
        let is_last = i + 1 == bases.len();
        let trusted = if clean || !is_last {
            Segment::open_trusted(dir, base, now_ms)?
        } else {
            None
        };
        let (mut seg, cut) = match trusted {
            Some(seg) => (seg, 0),
            None => {
                if clean || !is_last {
                    warn!(dir = %dir.display(), base, "segment indexes unusable, recovering");
                }
                let (mut seg, cut) = Segment::open_recover(dir, base, config, now_ms)?;
                if !is_last {
                    // An inactive segment's time index ends with its max timestamp,
                    // which a later clean open reads from there.
                    seg.seal()?;
                }
                (seg, cut)
            }
        };
        if !clean {
            // A process crash may have left data only in the page cache.
            seg.flushed_size = 0;
        }
        if let Some(prev) = segments.last() {
            if prev.next_offset > seg.base_offset {
                return Err(LogError::Corrupt {
                    path: seg.log_path.clone(),
                    position: 0,
                    reason: format!(
                        "segment starts at {} but the previous one ends at {}",
                        seg.base_offset, prev.next_offset
                    ),
                });
            }
        }
        segments.push(seg);
        if cut > 0 && !is_last {
            for &later in &bases[i + 1..] {
                warn!(dir = %dir.display(), base = later, "deleting segment after a truncated one");
                for ext in [LOG_EXT, INDEX_EXT, TIME_INDEX_EXT] {
                    let p = dir.join(super::segment::file_name(later, ext));
                    if p.exists() {
                        fs::remove_file(&p).ctx(&p)?;
                    }
                }
            }
            break;
        }
    }
    Ok(segments)
}

/// Whether `name` is one of the files this module manages (for tests).
#[cfg(test)]
pub(crate) fn is_known_file(name: &str) -> bool {
    name == super::checkpoint::CLEAN_SHUTDOWN_FILE
        || name == super::checkpoint::LOG_START_OFFSET_FILE
        || name == super::checkpoint::CLEANER_CHECKPOINT_FILE
        || [LOG_EXT, INDEX_EXT, TIME_INDEX_EXT]
            .iter()
            .any(|ext| parse_base(name, ext).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_segment_names() {
        assert_eq!(parse_base("00000000000000000042.log", LOG_EXT), Some(42));
        assert_eq!(parse_base("00000000000000000042.index", LOG_EXT), None);
        assert_eq!(parse_base("42.log", LOG_EXT), None);
        assert_eq!(parse_base("0000000000000000004x.log", LOG_EXT), None);
        assert!(is_known_file("clean-shutdown"));
        assert!(!is_known_file("foo.log.deleted"));
        let b = "00000000000000000042";
        assert_eq!(
            parse_cleaner_leftover(&format!("{b}.log.swap")),
            Some((42, true))
        );
        assert_eq!(
            parse_cleaner_leftover(&format!("{b}.log.cleaned")),
            Some((42, false))
        );
        assert_eq!(
            parse_cleaner_leftover(&format!("{b}.index.swap")),
            Some((42, false))
        );
        assert_eq!(
            parse_cleaner_leftover(&format!("{b}.timeindex.cleaned")),
            Some((42, false))
        );
        assert_eq!(parse_cleaner_leftover(&format!("{b}.log")), None);
        assert_eq!(parse_cleaner_leftover("x.log.swap"), None);
    }
}
