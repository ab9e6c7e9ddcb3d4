//! The file behind [`super::local_log::LocalLog`]: one JSON metadata record per line, fsynced
//! before a change is acknowledged.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::metadata::image::records::MetadataRecord;

/// Errors reading or writing the metadata log.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("metadata log {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("metadata log {path} line {line} is corrupt: {reason}")]
    Corrupt {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// An append-only file of metadata records.
pub struct MetadataStore {
    path: PathBuf,
    file: File,
}

impl MetadataStore {
    /// Opens (or creates) the log and returns every record in it. A torn last line (a crash
    /// during a write that was never acknowledged) is cut off; a bad line elsewhere is an error.
    pub fn open(path: &Path) -> Result<(MetadataStore, Vec<MetadataRecord>), StoreError> {
        let io = |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io)?;
        let mut records = Vec::new();
        let mut valid_len = 0u64;
        let mut reader = BufReader::new(&file);
        let mut line = String::new();
        let mut line_no = 0;
        loop {
            line.clear();
            let n = reader.read_line(&mut line).map_err(io)?;
            if n == 0 {
                break;
            }
            line_no += 1;
            let complete = line.ends_with('\n');
            match serde_json::from_str::<MetadataRecord>(line.trim_end()) {
                Ok(r) if complete => {
                    records.push(r);
                    valid_len += n as u64;
                }
                // A final line without its newline was never fsynced whole.
                _ if !complete => break,
                Err(e) => {
                    return Err(StoreError::Corrupt {
                        path: path.to_path_buf(),
                        line: line_no,
                        reason: e.to_string(),
                    })
                }
                Ok(_) => unreachable!("complete is checked by the first arm"),
            }
        }
        drop(reader);
        if file.metadata().map_err(io)?.len() != valid_len {
            file.set_len(valid_len).map_err(io)?;
            file.sync_data().map_err(io)?;
        }
        file.seek(SeekFrom::End(0)).map_err(io)?;
        Ok((
            MetadataStore {
                path: path.to_path_buf(),
                file,
            },
            records,
        ))
    }

    /// Appends records durably (one write, then fsync).
    pub fn append(&mut self, records: &[MetadataRecord]) -> Result<(), StoreError> {
        let mut buf = Vec::new();
        for r in records {
            serde_json::to_writer(&mut buf, r).expect("metadata records always serialize to JSON");
            buf.push(b'\n');
        }
        let io = |source| StoreError::Io {
            path: self.path.clone(),
            source,
        };
        self.file.write_all(&buf).map_err(io)?;
        self.file.sync_data().map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopen_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.log");
        let (mut store, records) = MetadataStore::open(&path).unwrap();
        assert!(records.is_empty());
        let r = MetadataRecord::ProducerIdBlock {
            next_producer_id: 1000,
        };
        store.append(&[r.clone(), r.clone()]).unwrap();
        drop(store);
        // A crash in the middle of a write leaves half a line.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"type\":\"delete_to").unwrap();
        drop(f);
        let (mut store, records) = MetadataStore::open(&path).unwrap();
        assert_eq!(records, vec![r.clone(), r.clone()]);
        store.append(std::slice::from_ref(&r)).unwrap();
        drop(store);
        let (_, records) = MetadataStore::open(&path).unwrap();
        assert_eq!(records.len(), 3);
    }

    #[test]
    fn a_corrupt_complete_line_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.log");
        std::fs::write(&path, "garbage\n{}\n").unwrap();
        assert!(matches!(
            MetadataStore::open(&path),
            Err(StoreError::Corrupt { line: 1, .. })
        ));
    }
}
