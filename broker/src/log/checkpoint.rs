//! Small durable files in the partition directory: the log start offset
//! checkpoint, the cleaner checkpoint and the clean-shutdown marker.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use super::error::{IoContext, LogError};

pub(crate) const LOG_START_OFFSET_FILE: &str = "log-start-offset";
pub(crate) const CLEAN_SHUTDOWN_FILE: &str = "clean-shutdown";
/// Offset below which the log has been compacted (steers the dirty ratio only).
pub(crate) const CLEANER_CHECKPOINT_FILE: &str = "cleaner-offset-checkpoint";
/// Suffix of files being written before an atomic rename.
pub(crate) const TMP_SUFFIX: &str = ".tmp";

/// fsync a directory so that creates, renames and deletes in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir).and_then(|d| d.sync_all()).ctx(dir)
}

/// Reads a checkpointed integer; a missing or unreadable file yields `None`
/// (callers fall back to what the segments say).
pub(crate) fn read_i64(dir: &Path, name: &str) -> Result<Option<i64>, LogError> {
    let path = dir.join(name);
    match fs::read_to_string(&path) {
        Ok(s) => Ok(s.trim().parse().ok()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LogError::io(path, e)),
    }
}

/// Atomically replaces `name` with `value`: write temp, fsync, rename, fsync dir.
pub(crate) fn write_i64(dir: &Path, name: &str, value: i64) -> Result<(), LogError> {
    write_atomic(dir, name, format!("{value}\n").as_bytes())
}

/// Atomically replaces `name` with `contents`: write temp, fsync, rename, fsync dir.
pub(crate) fn write_atomic(dir: &Path, name: &str, contents: &[u8]) -> Result<(), LogError> {
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .ctx(&tmp)?;
    f.write_all(contents).ctx(&tmp)?;
    f.sync_all().ctx(&tmp)?;
    let path = dir.join(name);
    fs::rename(&tmp, &path).ctx(&path)?;
    sync_dir(dir)
}

pub(crate) fn has_clean_shutdown_marker(dir: &Path) -> bool {
    dir.join(CLEAN_SHUTDOWN_FILE).exists()
}

pub(crate) fn write_clean_shutdown_marker(dir: &Path) -> Result<(), LogError> {
    let path = dir.join(CLEAN_SHUTDOWN_FILE);
    File::create(&path).and_then(|f| f.sync_all()).ctx(&path)?;
    sync_dir(dir)
}

/// Removes the marker durably: if it survived a later crash, torn data written
/// after this open would be trusted without recovery.
pub(crate) fn remove_clean_shutdown_marker(dir: &Path) -> Result<(), LogError> {
    let path = dir.join(CLEAN_SHUTDOWN_FILE);
    match fs::remove_file(&path) {
        Ok(()) => sync_dir(dir),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LogError::io(path, e)),
    }
}
