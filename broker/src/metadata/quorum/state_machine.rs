//! The quorum's state machine: the metadata image built from committed entries.
//!
//! Each applied entry's records go to the image in order; then the new image is published to
//! the [`MetadataCache`] and the [`MetadataListener`] gets the records (on a blocking thread,
//! awaited, so listeners see batches in log order). One `apply` call may cover several entries:
//! the listener then gets their records together, with the image after the last one.
//!
//! Until [`SmShared::go_live`] runs (once, at start, after openraft re-applied the committed
//! entries of the local log), applying only builds the image; `go_live` then publishes it and
//! calls `on_image_loaded` once. An installed snapshot replaces the image and calls
//! `on_image_loaded` again.
//!
//! A snapshot is the image, the last applied log id and the membership, as JSON in
//! `raft-snapshot.json` (written atomically and fsynced before openraft purges the log).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::log_store::write_atomic;
use super::types::{
    Entry, LogId, QuorumError, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use crate::metadata::image::cache::{MetadataCache, MetadataListener};
use crate::metadata::image::records::MetadataRecord;
use crate::metadata::image::MetadataImage;

const SNAPSHOT_FILE: &str = "raft-snapshot.json";

/// The snapshot file's content.
#[derive(Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    image: MetadataImage,
}

struct SmState {
    image: MetadataImage,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    snapshot: Option<StoredSnapshot>,
    /// Publish and notify listeners (false while recovering at start).
    live: bool,
}

/// State shared by the state machine (owned by openraft), its snapshot builders and the
/// quorum.
pub(crate) struct SmShared {
    state: Mutex<SmState>,
    dir: PathBuf,
    /// Serializes snapshot file writes; holds the last log id written.
    snapshot_file: Mutex<Option<LogId>>,
    snapshot_seq: AtomicU64,
    cache: Arc<MetadataCache>,
    listener: Arc<dyn MetadataListener>,
}

impl SmShared {
    /// Loads the snapshot in `dir`, if any.
    pub(crate) fn open(
        dir: &Path,
        cache: Arc<MetadataCache>,
        listener: Arc<dyn MetadataListener>,
    ) -> Result<Arc<SmShared>, QuorumError> {
        let path = dir.join(SNAPSHOT_FILE);
        let snapshot: Option<StoredSnapshot> = match std::fs::read(&path) {
            Ok(bytes) => Some(
                serde_json::from_slice(&bytes)
                    .map_err(|e| QuorumError::Corrupt(format!("{}: {e}", path.display())))?,
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(QuorumError::storage(
                    format!("reading {}", path.display()),
                    e,
                ))
            }
        };
        let state = match &snapshot {
            Some(s) => SmState {
                image: s.image.clone(),
                last_applied: s.meta.last_log_id,
                membership: s.meta.last_membership.clone(),
                snapshot: snapshot.clone(),
                live: false,
            },
            None => SmState {
                image: MetadataImage::default(),
                last_applied: None,
                membership: StoredMembership::default(),
                snapshot: None,
                live: false,
            },
        };
        Ok(Arc::new(SmShared {
            snapshot_file: Mutex::new(snapshot.as_ref().and_then(|s| s.meta.last_log_id)),
            state: Mutex::new(state),
            dir: dir.to_path_buf(),
            snapshot_seq: AtomicU64::new(0),
            cache,
            listener,
        }))
    }

    pub(crate) async fn has_snapshot(&self) -> bool {
        self.state.lock().await.snapshot.is_some()
    }

    /// Publishes the recovered image and calls `on_image_loaded` once; from now on applied
    /// entries are published and passed to the listener.
    pub(crate) async fn go_live(&self) {
        let mut state = self.state.lock().await;
        if state.live {
            return;
        }
        self.publish_loaded(&state.image).await;
        state.live = true;
    }

    async fn publish_loaded(&self, image: &MetadataImage) {
        let image = Arc::new(image.clone());
        self.cache.publish(image.clone());
        let listener = self.listener.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || listener.on_image_loaded(&image)).await
        {
            tracing::error!(error = %e, "metadata listener failed on a loaded image");
        }
    }

    async fn publish_records(&self, image: &MetadataImage, records: Vec<MetadataRecord>) {
        let image = Arc::new(image.clone());
        self.cache.publish(image.clone());
        let listener = self.listener.clone();
        if let Err(e) =
            tokio::task::spawn_blocking(move || listener.on_records(&image, &records)).await
        {
            tracing::error!(error = %e, "metadata listener failed on committed records");
        }
    }

    /// Writes `snapshot` unless a newer one is already on disk.
    async fn persist(&self, snapshot: &StoredSnapshot) -> Result<(), StorageError> {
        let mut written = self.snapshot_file.lock().await;
        if *written >= snapshot.meta.last_log_id && written.is_some() {
            return Ok(());
        }
        let signature = snapshot.meta.signature();
        let bytes = serde_json::to_vec(snapshot).map_err(|e| {
            StorageError::from_io_error(
                ErrorSubject::Snapshot(Some(signature.clone())),
                ErrorVerb::Write,
                io::Error::other(e),
            )
        })?;
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || write_atomic(&dir, SNAPSHOT_FILE, &bytes, true))
            .await
            .unwrap_or_else(|join| Err(io::Error::other(join.to_string())))
            .map_err(|e| {
                StorageError::from_io_error(
                    ErrorSubject::Snapshot(Some(signature)),
                    ErrorVerb::Write,
                    e,
                )
            })?;
        *written = snapshot.meta.last_log_id;
        Ok(())
    }
}

/// The state machine handed to openraft.
pub(crate) struct StateMachine {
    shared: Arc<SmShared>,
}

impl StateMachine {
    pub(crate) fn new(shared: Arc<SmShared>) -> StateMachine {
        StateMachine { shared }
    }
}

/// Builds snapshots from the current image.
pub(crate) struct SnapshotBuilder {
    shared: Arc<SmShared>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (image, last_applied, membership) = {
            let state = self.shared.state.lock().await;
            (
                state.image.clone(),
                state.last_applied,
                state.membership.clone(),
            )
        };
        let seq = self.shared.snapshot_seq.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match &last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, seq),
            None => format!("none-{seq}"),
        };
        let stored = StoredSnapshot {
            meta: SnapshotMeta {
                last_log_id: last_applied,
                last_membership: membership,
                snapshot_id,
            },
            image,
        };
        self.shared.persist(&stored).await?;
        let mut state = self.shared.state.lock().await;
        let newer = match &state.snapshot {
            Some(s) => s.meta.last_log_id < stored.meta.last_log_id,
            None => true,
        };
        if newer {
            state.snapshot = Some(stored.clone());
        }
        tracing::info!(snapshot = %stored.meta, "metadata snapshot built");
        Ok(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(stored.image),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let state = self.shared.state.lock().await;
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut state = self.shared.state.lock().await;
        let mut responses = Vec::new();
        let mut records = Vec::new();
        for entry in entries {
            state.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(batch) => {
                    for record in &batch {
                        state.image.apply(record);
                    }
                    records.extend(batch);
                }
                EntryPayload::Membership(m) => {
                    state.membership = StoredMembership::new(Some(entry.log_id), m);
                }
            }
            responses.push(());
        }
        if state.live && !records.is_empty() {
            // Holding the state lock: the next batch waits until the listener is done.
            self.shared.publish_records(&state.image, records).await;
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            shared: self.shared.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<MetadataImage>, StorageError> {
        // Snapshots arrive whole (see network.rs); this buffer is not used for chunks.
        Ok(Box::new(MetadataImage::default()))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<MetadataImage>,
    ) -> Result<(), StorageError> {
        let stored = StoredSnapshot {
            meta: meta.clone(),
            image: *snapshot,
        };
        // Durable before openraft purges the log it replaces.
        self.shared.persist(&stored).await?;
        let mut state = self.shared.state.lock().await;
        state.image = stored.image.clone();
        state.last_applied = meta.last_log_id;
        state.membership = meta.last_membership.clone();
        state.snapshot = Some(stored);
        tracing::info!(snapshot = %meta, "metadata snapshot installed");
        if state.live {
            self.shared.publish_loaded(&state.image).await;
        }
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let state = self.shared.state.lock().await;
        Ok(state.snapshot.as_ref().map(|s| Snapshot {
            meta: s.meta.clone(),
            snapshot: Box::new(s.image.clone()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use openraft::{CommittedLeaderId, Membership};

    use super::*;

    #[derive(Default)]
    pub(crate) struct Recorder {
        pub(crate) events: StdMutex<Vec<String>>,
    }

    impl MetadataListener for Recorder {
        fn on_image_loaded(&self, image: &MetadataImage) {
            self.events
                .lock()
                .unwrap()
                .push(format!("loaded next_pid={}", image.next_producer_id));
        }
        fn on_records(&self, image: &MetadataImage, records: &[MetadataRecord]) {
            self.events.lock().unwrap().push(format!(
                "records n={} next_pid={}",
                records.len(),
                image.next_producer_id
            ));
        }
    }

    fn pid_entry(index: u64, pid: i64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 0), index),
            payload: EntryPayload::Normal(vec![MetadataRecord::ProducerIdBlock {
                next_producer_id: pid,
            }]),
        }
    }

    #[tokio::test]
    async fn recovery_is_silent_then_live_and_snapshots_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(MetadataCache::default());
        let rec = Arc::new(Recorder::default());
        let shared = SmShared::open(dir.path(), cache.clone(), rec.clone()).unwrap();
        let mut sm = StateMachine::new(shared.clone());

        // Recovery: image built, nobody told.
        sm.apply([pid_entry(0, 100)]).await.unwrap();
        assert!(rec.events.lock().unwrap().is_empty());
        assert_eq!(cache.current().next_producer_id, 0);

        shared.go_live().await;
        sm.apply([pid_entry(1, 200), pid_entry(2, 300)])
            .await
            .unwrap();
        assert_eq!(cache.current().next_producer_id, 300);
        assert_eq!(
            *rec.events.lock().unwrap(),
            vec!["loaded next_pid=100", "records n=2 next_pid=300"]
        );

        let mut builder = sm.get_snapshot_builder().await;
        let snap = builder.build_snapshot().await.unwrap();
        assert_eq!(snap.meta.last_log_id.unwrap().index, 2);

        // A new state machine on the same directory starts from the snapshot.
        let shared2 = SmShared::open(
            dir.path(),
            Arc::new(MetadataCache::default()),
            Arc::new(Recorder::default()),
        )
        .unwrap();
        let mut sm2 = StateMachine::new(shared2);
        let (applied, _) = sm2.applied_state().await.unwrap();
        assert_eq!(applied.unwrap().index, 2);
        let current = sm2.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.snapshot.next_producer_id, 300);

        // Installing a snapshot replaces the image and tells the listener.
        let meta = SnapshotMeta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(2, 1), 9)),
            last_membership: StoredMembership::new(None, Membership::default()),
            snapshot_id: "x".into(),
        };
        let mut image = MetadataImage::default();
        image.next_producer_id = 900;
        sm.install_snapshot(&meta, Box::new(image)).await.unwrap();
        assert_eq!(cache.current().next_producer_id, 900);
        assert_eq!(
            rec.events.lock().unwrap().last().unwrap(),
            "loaded next_pid=900"
        );
        // An older snapshot build does not overwrite the newer file.
        let (applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(applied.unwrap().index, 9);
        let on_disk: StoredSnapshot =
            serde_json::from_slice(&std::fs::read(dir.path().join(SNAPSHOT_FILE)).unwrap())
                .unwrap();
        assert_eq!(on_disk.meta.last_log_id.unwrap().index, 9);
    }
}
