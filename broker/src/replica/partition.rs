//! One partition replica hosted by this broker: its log, its high watermark, its idempotent
//! producer state and the fetchers waiting for new data. The leader's produce path and
//! (later) a follower's replica fetcher both drive a partition through this type.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

use kafka_protocol::ResponseError;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use uuid::Uuid;

use super::producer_state::{BatchMeta, ProducerStateTable, SequenceCheck, SequenceError};
use crate::log::batch::{batch_has_null_key, validate_batches, BatchError};
use crate::log::{AppendInfo, Log, LogConfig, LogError, ReadInfo};

const PRODUCER_SNAPSHOT_FILE: &str = "producer-state.json";

/// Why an append was refused.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error(transparent)]
    Sequence(#[from] SequenceError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("{0}")]
    InvalidRecord(String),
    #[error("{isr} in-sync replica(s), min.insync.replicas is {required}")]
    NotEnoughReplicas { isr: i32, required: i32 },
}

impl AppendError {
    pub fn kafka_error(&self) -> ResponseError {
        match self {
            AppendError::Batch(e) => ResponseError::try_from_code(e.kafka_error_code())
                .unwrap_or(ResponseError::CorruptMessage),
            AppendError::Sequence(e) => e.kafka_error(),
            AppendError::Log(_) => ResponseError::KafkaStorageError,
            AppendError::InvalidRecord(_) => ResponseError::InvalidRecord,
            AppendError::NotEnoughReplicas { .. } => ResponseError::NotEnoughReplicas,
        }
    }
}

/// A successful produce to this partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendOutcome {
    Appended(AppendInfo),
    /// The batch was a retry of one already written (idempotent producer).
    Duplicate(BatchMeta),
}

impl AppendOutcome {
    pub fn base_offset(&self) -> i64 {
        match self {
            AppendOutcome::Appended(info) => info.first_offset,
            AppendOutcome::Duplicate(meta) => meta.first_offset,
        }
    }
}

/// Settings of the partition that come from its topic's configs.
#[derive(Debug, Clone)]
pub struct PartitionSettings {
    pub log: LogConfig,
    pub min_insync_replicas: i32,
}

#[derive(Serialize, Deserialize)]
struct ProducerSnapshot {
    end_offset: i64,
    table: ProducerStateTable,
}

/// A partition replica on this broker.
pub struct Partition {
    pub topic: Arc<str>,
    pub index: i32,
    pub topic_id: Uuid,
    log: Arc<Log>,
    /// Held for the whole of an append, so sequence checks and the write are one step: one
    /// writer per partition. Never held across an await.
    producers: Mutex<ProducerStateTable>,
    settings: RwLock<PartitionSettings>,
    high_watermark: AtomicI64,
    leader_epoch: AtomicI32,
    /// Replicas in sync with the leader, the leader included. Replication will maintain it.
    isr_size: AtomicI32,
    /// Long-polling fetches to wake on new data. Weak, so abandoned waits cost nothing.
    waiters: Mutex<Vec<Weak<Notify>>>,
    /// One fsync at a time; producers waiting behind it share the next one (group commit).
    flush_lock: tokio::sync::Mutex<()>,
    /// Log end offset covered by the last producer-state snapshot (-1: none this run).
    snapshot_offset: AtomicI64,
}

impl Partition {
    /// Opens the partition's log (recovering it after an unclean stop) and its producer state.
    pub fn open(
        dir: PathBuf,
        topic: Arc<str>,
        index: i32,
        topic_id: Uuid,
        settings: PartitionSettings,
        leader_epoch: i32,
    ) -> Result<Partition, LogError> {
        let log = Log::open(dir, settings.log.clone())?;
        let producers = load_producer_state(&log)?;
        let end = log.log_end_offset();
        Ok(Partition {
            topic,
            index,
            topic_id,
            log: Arc::new(log),
            producers: Mutex::new(producers),
            settings: RwLock::new(settings),
            high_watermark: AtomicI64::new(end),
            leader_epoch: AtomicI32::new(leader_epoch),
            isr_size: AtomicI32::new(1),
            waiters: Mutex::new(Vec::new()),
            flush_lock: tokio::sync::Mutex::new(()),
            snapshot_offset: AtomicI64::new(-1),
        })
    }

    pub fn log(&self) -> &Log {
        &self.log
    }

    pub fn settings(&self) -> PartitionSettings {
        self.settings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn update_settings(&self, settings: PartitionSettings) {
        self.log.update_config(settings.log.clone());
        *self.settings.write().unwrap_or_else(|p| p.into_inner()) = settings;
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Acquire)
    }

    /// A new leader epoch from the metadata (interim, until replication roles land).
    pub fn set_leader_epoch(&self, epoch: i32) {
        self.leader_epoch.fetch_max(epoch, Ordering::AcqRel);
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log.log_start_offset()
    }

    pub fn log_end_offset(&self) -> i64 {
        self.log.log_end_offset()
    }

    /// Appends a producer's records as the partition leader. `records` is a slice of the request
    /// buffer; the log writes it with a patched copy of the batch header, no other copy.
    pub fn append_as_leader(
        &self,
        records: &[u8],
        acks: i16,
        now_ms: i64,
    ) -> Result<AppendOutcome, AppendError> {
        let settings = self.settings();
        if acks == -1 {
            let isr = self.isr_size.load(Ordering::Acquire);
            if isr < settings.min_insync_replicas {
                return Err(AppendError::NotEnoughReplicas {
                    isr,
                    required: settings.min_insync_replicas,
                });
            }
        }
        let validated = validate_batches(records, settings.log.max_message_bytes)?;
        // Kafka requires exactly one batch per partition from v3 producers; it makes the
        // idempotence check a single lookup.
        let [header] = validated.headers.as_slice() else {
            return Err(AppendError::InvalidRecord(format!(
                "a produce request must carry exactly one record batch per partition, got {}",
                validated.headers.len()
            )));
        };
        if header.is_transactional() || header.is_control() {
            return Err(AppendError::InvalidRecord(
                "transactional and control batches are not supported".into(),
            ));
        }
        let header = *header;
        // Kafka refuses keyless records on compacted topics: compaction keeps one record per key.
        // Only these topics pay for decoding the records.
        if settings.log.cleanup_compact && batch_has_null_key(records)? {
            return Err(AppendError::Batch(BatchError::NullKeyInCompactedTopic));
        }
        let mut producers = self.producers.lock().unwrap_or_else(|p| p.into_inner());
        if header.producer_id >= 0 {
            let check = producers.check(
                header.producer_id,
                header.producer_epoch,
                header.base_sequence,
                header.last_sequence(),
            )?;
            if let SequenceCheck::Duplicate(meta) = check {
                return Ok(AppendOutcome::Duplicate(meta));
            }
        }
        let append_time = settings.log.timestamp_type_log_append.then_some(now_ms);
        let info = self
            .log
            .append(records, &validated, self.leader_epoch(), append_time)?;
        if header.producer_id >= 0 {
            producers.record(
                header.producer_id,
                header.producer_epoch,
                BatchMeta {
                    first_seq: header.base_sequence,
                    last_seq: header.last_sequence(),
                    first_offset: info.first_offset,
                    last_offset: info.last_offset,
                    timestamp: info.max_timestamp,
                },
            );
        }
        drop(producers);
        // A single in-sync replica: what the leader has is committed.
        if self.isr_size.load(Ordering::Acquire) <= 1 {
            self.high_watermark
                .store(info.last_offset + 1, Ordering::Release);
        }
        self.wake_waiters();
        Ok(AppendOutcome::Appended(info))
    }

    /// Waits until everything before `offset` is fsynced. Concurrent callers share fsyncs.
    pub async fn wait_durable(self: &Arc<Self>, offset: i64) -> Result<(), LogError> {
        loop {
            if self.log.flushed_offset() >= offset {
                return Ok(());
            }
            let _turn = self.flush_lock.lock().await;
            if self.log.flushed_offset() >= offset {
                return Ok(());
            }
            let log = self.log.clone();
            tokio::task::spawn_blocking(move || log.flush())
                .await
                .map_err(|e| LogError::Io {
                    path: self.log.dir().to_path_buf(),
                    source: std::io::Error::other(e),
                })??;
        }
    }

    /// Reads committed data (below the high watermark) starting at `offset`.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
    ) -> Result<ReadInfo, LogError> {
        self.log
            .read(offset, max_bytes, self.high_watermark(), min_one_batch)
    }

    /// Registers a fetch that wants to be woken by the next append.
    pub fn add_waiter(&self, waiter: &Arc<Notify>) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        if waiters.len() >= 64 {
            waiters.retain(|w| w.strong_count() > 0);
        }
        waiters.push(Arc::downgrade(waiter));
    }

    /// Fetches currently parked on this partition.
    pub fn parked_fetches(&self) -> usize {
        let waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        waiters.iter().filter(|w| w.strong_count() > 0).count()
    }

    fn wake_waiters(&self) {
        let waiters = std::mem::take(&mut *self.waiters.lock().unwrap_or_else(|p| p.into_inner()));
        for w in waiters.iter().filter_map(Weak::upgrade) {
            w.notify_one();
        }
    }

    /// Writes the idempotent-producer state with the log end offset it covers, so recovery
    /// after a crash replays only the batch headers written since. Skipped when nothing was
    /// appended since the last snapshot.
    pub fn snapshot_producer_state(&self) -> Result<(), LogError> {
        let producers = self.producers.lock().unwrap_or_else(|p| p.into_inner());
        let end_offset = self.log.log_end_offset();
        if self.snapshot_offset.load(Ordering::Acquire) == end_offset {
            return Ok(());
        }
        let snapshot = ProducerSnapshot {
            end_offset,
            table: producers.clone(),
        };
        write_snapshot(self.log.dir(), &snapshot)?;
        self.snapshot_offset.store(end_offset, Ordering::Release);
        Ok(())
    }

    /// Clean shutdown: snapshot producer state, flush, mark the log clean.
    pub fn close(&self) -> Result<(), LogError> {
        self.snapshot_offset.store(-1, Ordering::Release);
        self.snapshot_producer_state()?;
        self.log.close()
    }
}

fn load_producer_state(log: &Log) -> Result<ProducerStateTable, LogError> {
    let path = log.dir().join(PRODUCER_SNAPSHOT_FILE);
    let snapshot = std::fs::read(&path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<ProducerSnapshot>(&bytes).ok());
    let end = log.log_end_offset();
    let (mut table, from) = match snapshot {
        Some(s) if s.end_offset <= end => (s.table, s.end_offset.max(log.log_start_offset())),
        Some(mut s) => {
            // The log lost its tail in recovery: forget what was in it.
            s.table.truncate_from(end);
            (s.table, end)
        }
        None => (ProducerStateTable::default(), log.log_start_offset()),
    };
    if from < end {
        table.replay(&log.batch_headers_from(from)?);
    }
    Ok(table)
}

fn write_snapshot(dir: &Path, snapshot: &ProducerSnapshot) -> Result<(), LogError> {
    let tmp = dir.join(format!("{PRODUCER_SNAPSHOT_FILE}.tmp"));
    let io = |source| LogError::Io {
        path: tmp.clone(),
        source,
    };
    let bytes = serde_json::to_vec(snapshot).expect("producer state always serializes to JSON");
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, dir.join(PRODUCER_SNAPSHOT_FILE)).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    fn batch(producer_id: i64, first_seq: i32, n: usize) -> Bytes {
        let records: Vec<Record> = (0..n)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id,
                producer_epoch: 0,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: first_seq + i as i32,
                timestamp: crate::broker::now_ms(),
                key: None,
                value: Some(Bytes::from_static(b"v")),
                headers: Default::default(),
            })
            .collect();
        let mut buf = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        };
        RecordBatchEncoder::encode(&mut buf, &records, &options).unwrap();
        buf.freeze()
    }

    fn open(dir: &Path) -> Partition {
        let settings = PartitionSettings {
            log: LogConfig::default(),
            min_insync_replicas: 1,
        };
        Partition::open(
            dir.to_path_buf(),
            Arc::from("t"),
            0,
            Uuid::nil(),
            settings,
            0,
        )
        .unwrap()
    }

    #[test]
    fn producer_state_survives_a_crash_from_snapshot_plus_replay() {
        let dir = tempfile::tempdir().unwrap();
        let p = open(dir.path());
        p.append_as_leader(&batch(9, 0, 3), -1, 0).unwrap();
        p.snapshot_producer_state().unwrap();
        let snapshot: ProducerSnapshot = serde_json::from_slice(
            &std::fs::read(dir.path().join(PRODUCER_SNAPSHOT_FILE)).unwrap(),
        )
        .unwrap();
        assert_eq!(snapshot.end_offset, 3);
        p.append_as_leader(&batch(9, 3, 2), -1, 0).unwrap();
        drop(p); // a crash: no close, no clean-shutdown marker
        let p = open(dir.path());
        // Both the batch in the snapshot and the one replayed from the log are duplicates now.
        let dup = |first, n| p.append_as_leader(&batch(9, first, n), -1, 0).unwrap();
        assert!(
            matches!(dup(0, 3), AppendOutcome::Duplicate(m) if (m.first_offset, m.last_offset) == (0, 2))
        );
        assert!(
            matches!(dup(3, 2), AppendOutcome::Duplicate(m) if (m.first_offset, m.last_offset) == (3, 4))
        );
        assert!(matches!(dup(5, 1), AppendOutcome::Appended(info) if info.first_offset == 5));
        let gap = p.append_as_leader(&batch(9, 9, 1), -1, 0).unwrap_err();
        assert_eq!(gap.kafka_error(), ResponseError::OutOfOrderSequenceNumber);
    }
}
