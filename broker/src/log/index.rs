//! Sparse offset and time indexes of one segment.
//!
//! Entries are kept in memory (8 or 12 bytes per `index_interval_bytes` of log)
//! and appended to the index file with positional writes; the file is the
//! durable copy used on a clean open and is rebuilt by recovery otherwise.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A fixed-size index entry.
pub(crate) trait IndexEntry: Copy {
    const SIZE: usize;
    fn encode(&self, out: &mut Vec<u8>);
    fn decode(b: &[u8]) -> Self;
}

/// Offset index entry: the batch starting at `position` has base offset
/// `segment base + rel_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub rel_offset: u32,
    pub position: u32,
}

impl IndexEntry for OffsetEntry {
    const SIZE: usize = 8;
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.rel_offset.to_be_bytes());
        out.extend_from_slice(&self.position.to_be_bytes());
    }
    fn decode(b: &[u8]) -> Self {
        OffsetEntry {
            rel_offset: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            position: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
}

/// Time index entry: `timestamp` is the largest timestamp in the segment up to
/// this point, first reached by the batch with base offset `base + rel_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub timestamp: i64,
    pub rel_offset: u32,
}

impl IndexEntry for TimeEntry {
    const SIZE: usize = 12;
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.rel_offset.to_be_bytes());
    }
    fn decode(b: &[u8]) -> Self {
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&b[..8]);
        TimeEntry {
            timestamp: i64::from_be_bytes(ts),
            rel_offset: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        }
    }
}

pub(crate) struct Index<E: IndexEntry> {
    pub path: PathBuf,
    pub file: Arc<File>,
    pub entries: Vec<E>,
    /// Entries written since the last fsync of this file.
    pub dirty: bool,
}

fn open_rw(path: &Path, truncate: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(truncate)
        .open(path)
}

impl<E: IndexEntry> Index<E> {
    /// Creates (or empties) the index file.
    pub fn create(path: PathBuf) -> io::Result<Self> {
        let file = open_rw(&path, true)?;
        Ok(Index {
            path,
            file: Arc::new(file),
            entries: Vec::new(),
            dirty: false,
        })
    }

    /// Loads the index file. `Ok(None)` when it is missing or its length is
    /// not a whole number of entries (the caller rebuilds it).
    pub fn load(path: PathBuf) -> io::Result<Option<Self>> {
        let file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        if len % E::SIZE as u64 != 0 || len > u32::MAX as u64 {
            return Ok(None);
        }
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, 0)?;
        let entries = buf.chunks_exact(E::SIZE).map(E::decode).collect();
        Ok(Some(Index {
            path,
            file: Arc::new(file),
            entries,
            dirty: false,
        }))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn last(&self) -> Option<E> {
        self.entries.last().copied()
    }

    pub fn is_full(&self, max_index_bytes: u32) -> bool {
        self.entries.len() >= max_index_bytes as usize / E::SIZE
    }

    /// Appends entries in memory and to the file with one positional write.
    pub fn append(&mut self, new: &[E]) -> io::Result<()> {
        if new.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(new.len() * E::SIZE);
        for e in new {
            e.encode(&mut buf);
        }
        self.file
            .write_all_at(&buf, (self.entries.len() * E::SIZE) as u64)?;
        self.entries.extend_from_slice(new);
        self.dirty = true;
        Ok(())
    }

    /// Replaces the whole file content with `entries`.
    pub fn rewrite(&mut self, entries: Vec<E>) -> io::Result<()> {
        self.file.set_len(0)?;
        self.entries.clear();
        self.append(&entries)?;
        self.dirty = true;
        Ok(())
    }

    /// Index of the last entry for which `le(entry)` holds, given that the
    /// predicate is true for a prefix of the entries.
    pub fn last_where(&self, le: impl Fn(&E) -> bool) -> Option<E> {
        let n = self.entries.partition_point(le);
        n.checked_sub(1).map(|i| self.entries[i])
    }
}

pub(crate) type OffsetIndex = Index<OffsetEntry>;
pub(crate) type TimeIndex = Index<TimeEntry>;

impl OffsetIndex {
    /// File position of the last indexed batch whose base offset is <= `rel`
    /// (0 when none): the place to start scanning for `rel`.
    pub fn lookup(&self, rel: u32) -> u32 {
        self.last_where(|e| e.rel_offset <= rel)
            .map_or(0, |e| e.position)
    }

    /// Entries strictly increasing in offset and position, all inside the log.
    pub fn is_consistent(&self, log_size: u64) -> bool {
        self.entries
            .windows(2)
            .all(|w| w[0].rel_offset < w[1].rel_offset && w[0].position < w[1].position)
            && !matches!(self.entries.last(), Some(e) if e.position as u64 >= log_size)
    }
}

impl TimeIndex {
    /// The last entry with timestamp strictly below `ts`: every batch before its
    /// offset has only smaller timestamps, so a search for `ts` can start there.
    /// (Strict, unlike Kafka's `<=`, so ties with an earlier batch are not skipped.)
    pub fn lookup_before(&self, ts: i64) -> Option<TimeEntry> {
        self.last_where(|e| e.timestamp < ts)
    }

    /// Timestamps and offsets never decrease.
    pub fn is_consistent(&self) -> bool {
        self.entries
            .windows(2)
            .all(|w| w[0].timestamp < w[1].timestamp && w[0].rel_offset <= w[1].rel_offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_load_lookup_truncate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.index");
        let mut idx = OffsetIndex::create(path.clone()).unwrap();
        idx.append(&[
            OffsetEntry {
                rel_offset: 10,
                position: 100,
            },
            OffsetEntry {
                rel_offset: 20,
                position: 200,
            },
        ])
        .unwrap();
        idx.append(&[OffsetEntry {
            rel_offset: 30,
            position: 300,
        }])
        .unwrap();
        assert_eq!(idx.lookup(5), 0);
        assert_eq!(idx.lookup(10), 100);
        assert_eq!(idx.lookup(25), 200);
        assert_eq!(idx.lookup(99), 300);
        assert!(idx.is_consistent(301));
        assert!(!idx.is_consistent(300));
        assert!(idx.is_full(24) && !idx.is_full(32));

        let loaded = OffsetIndex::load(path.clone()).unwrap().unwrap();
        assert_eq!(loaded.entries, idx.entries);

        idx.rewrite(vec![OffsetEntry {
            rel_offset: 1,
            position: 1,
        }])
        .unwrap();
        let loaded = OffsetIndex::load(path.clone()).unwrap().unwrap();
        assert_eq!(loaded.entries.len(), 1);

        // A partial entry makes the file unusable.
        idx.file.set_len(5).unwrap();
        assert!(OffsetIndex::load(path).unwrap().is_none());
        assert!(OffsetIndex::load(dir.path().join("missing.index"))
            .unwrap()
            .is_none());
    }

    #[test]
    fn time_lookup_is_strict() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = TimeIndex::create(dir.path().join("0.timeindex")).unwrap();
        idx.append(&[
            TimeEntry {
                timestamp: 100,
                rel_offset: 0,
            },
            TimeEntry {
                timestamp: 200,
                rel_offset: 5,
            },
        ])
        .unwrap();
        assert_eq!(idx.lookup_before(100), None);
        assert_eq!(idx.lookup_before(101).unwrap().rel_offset, 0);
        assert_eq!(idx.lookup_before(200).unwrap().rel_offset, 0);
        assert_eq!(idx.lookup_before(201).unwrap().rel_offset, 5);
        assert!(idx.is_consistent());
        let loaded = TimeIndex::load(idx.path.clone()).unwrap().unwrap();
        assert_eq!(loaded.entries, idx.entries);
    }
}
