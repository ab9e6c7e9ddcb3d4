//! The Raft log, vote and commit point on disk.
//!
//! Files in the quorum directory:
//! - `raft-log`: frames `[len: u32 LE][crc32c: u32 LE][JSON record]`. The first frame may be a
//!   `purged` marker (the last log id dropped after a snapshot); then entries, contiguous
//!   indexes. Appends are fsynced before openraft is told they are flushed. At open, the log is
//!   cut at the first frame that is incomplete, fails its checksum, does not decode or breaks
//!   the index sequence: only a write that was never acknowledged can be torn.
//! - `raft-vote.json`: written to a temporary file, fsynced, renamed, directory fsynced.
//! - `raft-committed.json`: the commit point, so a restart applies committed entries before
//!   hearing from a leader. Renamed into place without fsync: losing it only means applying
//!   later, and an unreadable file is read as "nothing known committed".
//!
//! Purging (after a snapshot) rewrites the log file atomically. Entries are also kept in
//! memory: the metadata log is small and snapshots bound it (see `SNAPSHOT_EVERY_LOGS`).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::ops::RangeBounds;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, RaftLogId, RaftLogReader};
use serde::{Deserialize, Serialize};

use super::types::{Entry, LogId, QuorumError, StorageError, TypeConfig, Vote};

const LOG_FILE: &str = "raft-log";
const VOTE_FILE: &str = "raft-vote.json";
const COMMITTED_FILE: &str = "raft-committed.json";
const FRAME_HEADER: usize = 8;
/// A frame claiming more than this is corrupt (an append is one batch of metadata records).
const MAX_FRAME: usize = 256 << 20;

/// One frame of the log file.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum LogRecord {
    Purged(LogId),
    Entry(Entry),
}

/// [`LogRecord`] for writing, without cloning entries.
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum LogRecordRef<'a> {
    Purged(&'a LogId),
    Entry(&'a Entry),
}

/// The log file and where each entry's frame starts. Only the Raft core writes (one call at
/// a time), inside `spawn_blocking`.
struct LogFile {
    path: PathBuf,
    file: File,
    end: u64,
    offsets: BTreeMap<u64, u64>,
}

/// What readers see.
#[derive(Default)]
struct LogMemory {
    entries: BTreeMap<u64, Entry>,
    purged: Option<LogId>,
    vote: Option<Vote>,
    committed: Option<LogId>,
}

/// The durable Raft log. Clones share the same files and memory (the clone is the log reader).
#[derive(Clone)]
pub struct LogStore {
    dir: PathBuf,
    file: Arc<Mutex<LogFile>>,
    memory: Arc<RwLock<LogMemory>>,
}

impl LogStore {
    /// Opens (or creates) the log in `dir`, cutting a torn tail.
    pub fn open(dir: &Path) -> Result<LogStore, QuorumError> {
        fs::create_dir_all(dir)
            .map_err(|e| QuorumError::storage(format!("creating {}", dir.display()), e))?;
        let vote: Option<Vote> = match read_optional(&dir.join(VOTE_FILE))? {
            None => None,
            Some(bytes) => Some(serde_json::from_slice(&bytes).map_err(|e| {
                QuorumError::Corrupt(format!("{}: {e}", dir.join(VOTE_FILE).display()))
            })?),
        };
        let committed: Option<LogId> = read_optional(&dir.join(COMMITTED_FILE))?.and_then(
            |bytes| match serde_json::from_slice(&bytes) {
                Ok(c) => c,
                Err(e) => {
                    // Written without fsync; a crash can leave it empty. Nothing is lost: the
                    // leader tells the commit point again.
                    tracing::warn!(error = %e, "unreadable Raft commit point, ignoring it");
                    None
                }
            },
        );

        let path = dir.join(LOG_FILE);
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| QuorumError::storage(format!("opening {}", path.display()), e))?;
        if !existed {
            sync_dir(dir)?;
        }
        let bytes = fs::read(&path)
            .map_err(|e| QuorumError::storage(format!("reading {}", path.display()), e))?;
        let parsed = parse_log(&bytes);
        if let Some(reason) = &parsed.torn {
            tracing::warn!(
                file = %path.display(),
                kept_bytes = parsed.valid_len,
                cut_bytes = bytes.len() as u64 - parsed.valid_len,
                reason = %reason,
                "cutting the torn tail of the Raft log"
            );
            file.set_len(parsed.valid_len)
                .and_then(|_| file.sync_all())
                .map_err(|e| QuorumError::storage(format!("truncating {}", path.display()), e))?;
        }
        file.flush()
            .map_err(|e| QuorumError::storage(format!("flushing {}", path.display()), e))?;
        Ok(LogStore {
            dir: dir.to_path_buf(),
            file: Arc::new(Mutex::new(LogFile {
                path,
                file,
                end: parsed.valid_len,
                offsets: parsed.offsets,
            })),
            memory: Arc::new(RwLock::new(LogMemory {
                entries: parsed.entries,
                purged: parsed.purged,
                vote,
                committed,
            })),
        })
    }

    /// Nothing was ever stored: no vote, no entry, nothing purged.
    pub fn is_empty(&self) -> bool {
        let m = self.read();
        m.vote.is_none() && m.entries.is_empty() && m.purged.is_none()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, LogMemory> {
        // Memory is updated with single assignments; a panic elsewhere cannot leave it torn.
        self.memory.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, LogMemory> {
        self.memory.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs file I/O off the async threads.
    async fn with_file<T: Send + 'static>(
        &self,
        verb: ErrorVerb,
        f: impl FnOnce(&mut LogFile) -> io::Result<T> + Send + 'static,
    ) -> Result<T, StorageError> {
        let file = self.file.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut guard = file.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .unwrap_or_else(|join| Err(io::Error::other(join.to_string())));
        result.map_err(|e| StorageError::from_io_error(ErrorSubject::Logs, verb, e))
    }

    async fn write_small_file(
        &self,
        name: &'static str,
        bytes: Vec<u8>,
        durable: bool,
        subject: ErrorSubject<u64>,
    ) -> Result<(), StorageError> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || write_atomic(&dir, name, &bytes, durable))
            .await
            .unwrap_or_else(|join| Err(io::Error::other(join.to_string())))
            .map_err(|e| StorageError::from_io_error(subject, ErrorVerb::Write, e))
    }
}

impl LogFile {
    fn append(&mut self, buf: &[u8], frames: &[(u64, u64)]) -> io::Result<()> {
        let result = self
            .file
            .write_all_at(buf, self.end)
            .and_then(|_| self.file.sync_data());
        if let Err(e) = result {
            // Leave no partial frame behind for a later append to follow.
            let _ = self.file.set_len(self.end);
            return Err(e);
        }
        for (index, rel) in frames {
            self.offsets.insert(*index, self.end + rel);
        }
        self.end += buf.len() as u64;
        Ok(())
    }

    fn truncate_from(&mut self, index: u64) -> io::Result<()> {
        if let Some(&offset) = self.offsets.get(&index) {
            self.file.set_len(offset)?;
            self.file.sync_data()?;
            self.offsets.split_off(&index);
            self.end = offset;
        }
        Ok(())
    }

    /// Replaces the file with `buf` (a purged marker and the kept entries) atomically.
    fn rewrite(&mut self, buf: &[u8], frames: &[(u64, u64)]) -> io::Result<()> {
        let dir = self
            .path
            .parent()
            .ok_or_else(|| io::Error::other("the log file has no directory"))?
            .to_path_buf();
        let name = self
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| io::Error::other("the log file has no name"))?
            .to_string();
        write_atomic(&dir, &name, buf, true)?;
        self.file = OpenOptions::new().read(true).write(true).open(&self.path)?;
        self.offsets = frames.iter().copied().collect();
        self.end = buf.len() as u64;
        Ok(())
    }
}

/// Appends one frame to `buf`; returns where it starts in `buf`.
fn encode_frame(buf: &mut Vec<u8>, record: &LogRecordRef<'_>) -> Result<u64, serde_json::Error> {
    let payload = serde_json::to_vec(record)?;
    let start = buf.len() as u64;
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    buf.extend_from_slice(&payload);
    Ok(start)
}

struct ParsedLog {
    entries: BTreeMap<u64, Entry>,
    offsets: BTreeMap<u64, u64>,
    purged: Option<LogId>,
    valid_len: u64,
    /// Why the log was cut, if it was.
    torn: Option<String>,
}

/// Reads frames up to the first bad one.
fn parse_log(bytes: &[u8]) -> ParsedLog {
    let mut parsed = ParsedLog {
        entries: BTreeMap::new(),
        offsets: BTreeMap::new(),
        purged: None,
        valid_len: 0,
        torn: None,
    };
    let mut pos = 0usize;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        if rest.len() < FRAME_HEADER {
            parsed.torn = Some(format!("incomplete frame header at byte {pos}"));
            break;
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if len > MAX_FRAME || rest.len() - FRAME_HEADER < len {
            parsed.torn = Some(format!("incomplete frame at byte {pos}"));
            break;
        }
        let payload = &rest[FRAME_HEADER..FRAME_HEADER + len];
        if crc32c::crc32c(payload) != crc {
            parsed.torn = Some(format!("checksum mismatch at byte {pos}"));
            break;
        }
        match serde_json::from_slice::<LogRecord>(payload) {
            Ok(LogRecord::Purged(id)) if pos == 0 => parsed.purged = Some(id),
            Ok(LogRecord::Purged(_)) => {
                parsed.torn = Some(format!("purge marker in the middle at byte {pos}"));
                break;
            }
            Ok(LogRecord::Entry(entry)) => {
                let index = entry.get_log_id().index;
                let expected = match (parsed.entries.keys().next_back(), &parsed.purged) {
                    (Some(last), _) => last + 1,
                    (None, Some(purged)) => purged.index + 1,
                    (None, None) => 0,
                };
                if index != expected {
                    parsed.torn = Some(format!(
                        "entry {index} at byte {pos} does not follow entry {}",
                        expected as i128 - 1
                    ));
                    break;
                }
                parsed.offsets.insert(index, pos as u64);
                parsed.entries.insert(index, entry);
            }
            Err(e) => {
                parsed.torn = Some(format!("undecodable frame at byte {pos}: {e}"));
                break;
            }
        }
        pos += FRAME_HEADER + len;
        parsed.valid_len = pos as u64;
    }
    parsed
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, QuorumError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(QuorumError::storage(
            format!("reading {}", path.display()),
            e,
        )),
    }
}

/// Replaces `dir/name` with `bytes` so that a reader sees the old or the new content, never a
/// mix. `durable`: fsync the file before the rename and the directory after it.
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8], durable: bool) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    if durable {
        file.sync_all()?;
    }
    drop(file);
    fs::rename(&tmp, dir.join(name))?;
    if durable {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), QuorumError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| QuorumError::storage(format!("syncing {}", dir.display()), e))
}

fn encode_error(subject: ErrorSubject<u64>, e: serde_json::Error) -> StorageError {
    StorageError::from_io_error(subject, ErrorVerb::Write, io::Error::other(e))
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(self
            .read()
            .entries
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let m = self.read();
        let last = m
            .entries
            .values()
            .next_back()
            .map(|e| *e.get_log_id())
            .or(m.purged);
        Ok(LogState {
            last_purged_log_id: m.purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(vote).map_err(|e| encode_error(ErrorSubject::Vote, e))?;
        self.write_small_file(VOTE_FILE, bytes, true, ErrorSubject::Vote)
            .await?;
        self.write().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.read().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let bytes =
            serde_json::to_vec(&committed).map_err(|e| encode_error(ErrorSubject::Store, e))?;
        self.write_small_file(COMMITTED_FILE, bytes, false, ErrorSubject::Store)
            .await?;
        self.write().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.read().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let mut buf = Vec::new();
        let mut frames = Vec::with_capacity(entries.len());
        for entry in &entries {
            let rel = encode_frame(&mut buf, &LogRecordRef::Entry(entry))
                .map_err(|e| encode_error(ErrorSubject::Logs, e))?;
            frames.push((entry.get_log_id().index, rel));
        }
        let result = if buf.is_empty() {
            Ok(())
        } else {
            self.with_file(ErrorVerb::Write, move |f| f.append(&buf, &frames))
                .await
        };
        match result {
            Ok(()) => {
                let mut m = self.write();
                for entry in entries {
                    m.entries.insert(entry.get_log_id().index, entry);
                }
                drop(m);
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(io::Error::other(e.to_string())));
                Err(e)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let index = log_id.index;
        self.with_file(ErrorVerb::Delete, move |f| f.truncate_from(index))
            .await?;
        self.write().entries.split_off(&index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let (buf, frames, purged) = {
            let m = self.read();
            let purged = match m.purged {
                Some(p) if p >= log_id => p,
                _ => log_id,
            };
            let mut buf = Vec::new();
            let mut frames = Vec::new();
            encode_frame(&mut buf, &LogRecordRef::Purged(&purged))
                .map_err(|e| encode_error(ErrorSubject::Logs, e))?;
            for (index, entry) in m.entries.range(purged.index + 1..) {
                let rel = encode_frame(&mut buf, &LogRecordRef::Entry(entry))
                    .map_err(|e| encode_error(ErrorSubject::Logs, e))?;
                frames.push((*index, rel));
            }
            (buf, frames, purged)
        };
        self.with_file(ErrorVerb::Delete, move |f| f.rewrite(&buf, &frames))
            .await?;
        let mut m = self.write();
        m.entries = m.entries.split_off(&(purged.index + 1));
        m.purged = Some(purged);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use openraft::storage::RaftLogStorageExt;
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::metadata::image::records::MetadataRecord;

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 0), index)
    }

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: log_id(term, index),
            payload: EntryPayload::Normal(vec![MetadataRecord::ProducerIdBlock {
                next_producer_id: index as i64,
            }]),
        }
    }

    async fn indexes(store: &mut LogStore) -> Vec<u64> {
        store
            .try_get_log_entries(0..)
            .await
            .unwrap()
            .iter()
            .map(|e| e.log_id.index)
            .collect()
    }

    #[tokio::test]
    async fn torn_tail_is_cut_at_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = LogStore::open(dir.path()).unwrap();
            store
                .blocking_append((0..3).map(|i| entry(1, i)))
                .await
                .unwrap();
        }
        let path = dir.path().join(LOG_FILE);
        let full = fs::read(&path).unwrap();

        // A half-written fourth frame: header promises more bytes than there are.
        let mut torn = full.clone();
        torn.extend_from_slice(&100u32.to_le_bytes());
        torn.extend_from_slice(&[1, 2, 3, 4, 5, 6]);
        fs::write(&path, &torn).unwrap();
        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&mut store).await, vec![0, 1, 2]);
        assert_eq!(fs::metadata(&path).unwrap().len(), full.len() as u64);
        // Appends continue after the cut, and survive another reopen.
        store.blocking_append([entry(1, 3)]).await.unwrap();
        drop(store);
        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&mut store).await, vec![0, 1, 2, 3]);
        drop(store);

        // A flipped byte in the last frame: its checksum fails, it is dropped.
        let mut corrupt = fs::read(&path).unwrap();
        let last = corrupt.len() - 2;
        corrupt[last] ^= 0xff;
        fs::write(&path, &corrupt).unwrap();
        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&mut store).await, vec![0, 1, 2]);
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(log_id(1, 2)));
    }

    #[tokio::test]
    async fn vote_truncate_purge_and_commit_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = LogStore::open(dir.path()).unwrap();
            assert!(store.is_empty());
            store.save_vote(&Vote::new(3, 1)).await.unwrap();
            store
                .blocking_append((0..10).map(|i| entry(1, i)))
                .await
                .unwrap();
            // A new leader overwrote entries 7.. with its own.
            store.truncate(log_id(1, 7)).await.unwrap();
            store
                .blocking_append((7..9).map(|i| entry(2, i)))
                .await
                .unwrap();
            store.purge(log_id(1, 4)).await.unwrap();
            store.save_committed(Some(log_id(2, 8))).await.unwrap();
            assert_eq!(indexes(&mut store).await, vec![5, 6, 7, 8]);
        }
        let mut store = LogStore::open(dir.path()).unwrap();
        assert!(!store.is_empty());
        assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(3, 1)));
        assert_eq!(store.read_committed().await.unwrap(), Some(log_id(2, 8)));
        assert_eq!(indexes(&mut store).await, vec![5, 6, 7, 8]);
        let entries = store.try_get_log_entries(7..9).await.unwrap();
        assert!(entries.iter().all(|e| e.log_id.leader_id.term == 2));
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 4)));
        assert_eq!(state.last_log_id, Some(log_id(2, 8)));

        // Purging past the last entry (a snapshot installed from the leader) leaves no entry
        // and the purge point as the last log id.
        store.purge(log_id(3, 20)).await.unwrap();
        drop(store);
        let mut store = LogStore::open(dir.path()).unwrap();
        assert!(indexes(&mut store).await.is_empty());
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(log_id(3, 20)));
        store.blocking_append([entry(3, 21)]).await.unwrap();
        drop(store);
        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&mut store).await, vec![21]);
    }

    #[tokio::test]
    async fn unreadable_commit_point_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(COMMITTED_FILE), b"").unwrap();
        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(store.read_committed().await.unwrap(), None);
        // A broken vote file is not silently ignored: forgetting a vote is unsafe.
        fs::write(dir.path().join(VOTE_FILE), b"{").unwrap();
        assert!(matches!(
            LogStore::open(dir.path()),
            Err(QuorumError::Corrupt(_))
        ));
    }
}
