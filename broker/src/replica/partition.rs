//! One partition replica hosted by this broker: its log, its role (leader or follower, from
//! metadata), its leader-epoch cache, its high watermark, its idempotent-producer state, and
//! the requests waiting on it. The leader's produce path, the leader's handling of follower
//! fetches and this broker's replica fetcher all drive a partition through this type.
//!
//! Locks, always taken in this order and never held across an await:
//! `writer` (the producer table; held for a whole append, truncation or role change, so each
//! is one step: one writer per partition) -> `epochs` -> `replication`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};

use kafka_protocol::ResponseError;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use uuid::Uuid;

use super::brokers::BrokerDirectory;
use super::epoch_cache::{check_follower_position, FollowerPosition, LeaderEpochCache};
use super::isr::{self, FollowerState, IsrUpdate, PendingIsr};
use super::producer_state::{BatchMeta, ProducerStateTable, SequenceCheck, SequenceError};
use crate::log::batch::{batch_has_null_key, validate_batches, BatchError};
use crate::log::checkpoint::read_i64;
use crate::log::{AppendInfo, BatchHeader, Log, LogConfig, LogError, ReadInfo};
use crate::metadata::image::{PartitionImage, NO_LEADER};

const PRODUCER_SNAPSHOT_FILE: &str = "producer-state.json";
/// The high watermark as of the last checkpoint; at open the watermark is never above it, so a
/// restarted leader does not expose records its followers may never have had.
pub const HIGH_WATERMARK_FILE: &str = "high-watermark-checkpoint";

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
    #[error("this broker is not the leader of the partition (leader: {leader})")]
    NotLeader { leader: i32 },
    /// A fetched response belongs to a leader epoch this replica has moved past.
    #[error("fetched data is for leader epoch {fetched}, the replica is at epoch {current}")]
    StaleFetch { fetched: i32, current: i32 },
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
            AppendError::NotLeader { .. } => ResponseError::NotLeaderOrFollower,
            AppendError::StaleFetch { .. } => ResponseError::FencedLeaderEpoch,
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

    /// The offset after the last record: the high watermark that commits it.
    pub fn end_offset(&self) -> i64 {
        match self {
            AppendOutcome::Appended(info) => info.last_offset + 1,
            AppendOutcome::Duplicate(meta) => meta.last_offset + 1,
        }
    }
}

/// Settings of the partition that come from its topic's configs.
#[derive(Debug, Clone)]
pub struct PartitionSettings {
    pub log: LogConfig,
    pub min_insync_replicas: i32,
    /// `replica.lag.time.max.ms`: a follower not caught up for this long leaves the ISR.
    pub replica_lag_max_ms: i64,
}

/// This replica's role, from the metadata image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// No metadata applied yet, or the partition is being removed: serves nothing.
    None,
    Leader,
    /// Follows `leader` ([`NO_LEADER`] while the partition is offline).
    Follower {
        leader: i32,
    },
}

/// What applying a metadata state did to the replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleChange {
    /// Nothing that matters to the caller (same epoch, or an older state).
    Unchanged,
    /// Became leader, or leads a new epoch.
    BecameLeader,
    /// Follows a new leader or a new epoch; `was_leader` if it led before.
    BecameFollower { leader: i32, was_leader: bool },
    /// Still leader of the same epoch; the ISR or replica set changed.
    LeaderUpdated,
}

/// What the leader answers a follower's fetch with, before reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowerFetchCheck {
    Serve,
    Diverging { epoch: i32, end_offset: i64 },
    OutOfRange,
    NotLeader,
    UnknownReplica,
}

/// Where a follower fetches from next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchPosition {
    pub fetch_offset: i64,
    pub last_fetched_epoch: i32,
    pub log_start_offset: i64,
}

#[derive(Serialize, Deserialize)]
struct ProducerSnapshot {
    end_offset: i64,
    table: ProducerStateTable,
}

/// Replication state, from metadata and from followers' fetches.
#[derive(Debug)]
struct ReplicationState {
    role: Role,
    leader_epoch: i32,
    partition_epoch: i32,
    replicas: Vec<i32>,
    /// The committed ISR, as in metadata.
    isr: Vec<i32>,
    /// An ISR change sent to the controller and not yet in metadata (leader only).
    pending: Option<PendingIsr>,
    /// Every other replica's fetch state (leader only).
    followers: BTreeMap<i32, FollowerState>,
    /// The log end offset when this leader epoch began.
    leader_epoch_start_offset: i64,
}

impl ReplicationState {
    /// Whether applying `state` would change anything.
    fn is_newer(&self, state: &PartitionImage, me: i32) -> bool {
        let role_matches = match self.role {
            Role::Leader => state.leader == me,
            Role::Follower { leader } => leader == state.leader,
            Role::None => return true,
        };
        if state.leader_epoch != self.leader_epoch {
            return state.leader_epoch > self.leader_epoch;
        }
        !role_matches || state.partition_epoch > self.partition_epoch
    }
}

/// Fetches and producers waiting for a partition to move. Weak, so abandoned waits cost
/// nothing; every wake re-checks its condition.
#[derive(Default)]
struct Waiters(Mutex<Vec<Weak<Notify>>>);

impl Waiters {
    fn add(&self, waiter: &Arc<Notify>) {
        let mut waiters = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if waiters.len() >= 64 {
            waiters.retain(|w| w.strong_count() > 0);
        }
        waiters.push(Arc::downgrade(waiter));
    }

    fn count(&self) -> usize {
        let waiters = self.0.lock().unwrap_or_else(|p| p.into_inner());
        waiters.iter().filter(|w| w.strong_count() > 0).count()
    }

    fn wake(&self) {
        let waiters = std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()));
        for w in waiters.iter().filter_map(Weak::upgrade) {
            w.notify_one();
        }
    }
}

/// A partition replica on this broker.
pub struct Partition {
    pub topic: Arc<str>,
    pub index: i32,
    pub topic_id: Uuid,
    node_id: i32,
    brokers: Arc<BrokerDirectory>,
    log: Arc<Log>,
    writer: Mutex<ProducerStateTable>,
    epochs: Mutex<LeaderEpochCache>,
    replication: Mutex<ReplicationState>,
    settings: RwLock<PartitionSettings>,
    high_watermark: AtomicI64,
    // Copies of the replication state for lock-free reads on hot paths.
    leader_epoch: AtomicI32,
    is_leader: AtomicBool,
    isr_size: AtomicI32,
    /// Follower fetches: woken by appends.
    append_waiters: Waiters,
    /// Consumer fetches and acks=all producers: woken when the high watermark moves.
    hw_waiters: Waiters,
    /// One fsync at a time; producers waiting behind it share the next one (group commit).
    flush_lock: tokio::sync::Mutex<()>,
    /// Log end offset covered by the last producer-state snapshot (-1: none this run).
    snapshot_offset: AtomicI64,
    /// The high watermark in the checkpoint file (-1: not written this run).
    hw_checkpointed: AtomicI64,
    /// Removed from this broker: nothing is written to its directory any more.
    retired: AtomicBool,
}

impl Partition {
    /// Opens the partition's log (recovering it after an unclean stop), its leader-epoch cache
    /// and its producer state. It serves nothing until metadata gives it a role
    /// ([`Partition::apply_metadata`]).
    pub fn open(
        dir: PathBuf,
        topic: Arc<str>,
        index: i32,
        topic_id: Uuid,
        settings: PartitionSettings,
        node_id: i32,
        brokers: Arc<BrokerDirectory>,
    ) -> Result<Partition, LogError> {
        let log = Log::open(dir, settings.log.clone())?;
        let producers = load_producer_state(&log)?;
        let epochs = LeaderEpochCache::load(&log)?;
        let (start, end) = (log.log_start_offset(), log.log_end_offset());
        let checkpointed = read_i64(log.dir(), HIGH_WATERMARK_FILE)?;
        let high_watermark = checkpointed.unwrap_or(start).clamp(start, end);
        Ok(Partition {
            topic,
            index,
            topic_id,
            node_id,
            brokers,
            log: Arc::new(log),
            writer: Mutex::new(producers),
            epochs: Mutex::new(epochs),
            replication: Mutex::new(ReplicationState {
                role: Role::None,
                leader_epoch: -1,
                partition_epoch: -1,
                replicas: Vec::new(),
                isr: Vec::new(),
                pending: None,
                followers: BTreeMap::new(),
                leader_epoch_start_offset: end,
            }),
            settings: RwLock::new(settings),
            high_watermark: AtomicI64::new(high_watermark),
            leader_epoch: AtomicI32::new(-1),
            is_leader: AtomicBool::new(false),
            isr_size: AtomicI32::new(0),
            append_waiters: Waiters::default(),
            hw_waiters: Waiters::default(),
            flush_lock: tokio::sync::Mutex::new(()),
            snapshot_offset: AtomicI64::new(-1),
            hw_checkpointed: AtomicI64::new(checkpointed.unwrap_or(-1)),
            retired: AtomicBool::new(false),
        })
    }

    fn lock_writer(&self) -> MutexGuard<'_, ProducerStateTable> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_epochs(&self) -> MutexGuard<'_, LeaderEpochCache> {
        self.epochs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_replication(&self) -> MutexGuard<'_, ReplicationState> {
        self.replication.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn log(&self) -> &Log {
        &self.log
    }

    pub fn node_id(&self) -> i32 {
        self.node_id
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

    pub fn is_leader(&self) -> bool {
        self.is_leader.load(Ordering::Acquire)
    }

    pub fn role(&self) -> Role {
        self.lock_replication().role
    }

    /// The committed ISR (as in metadata).
    pub fn isr(&self) -> Vec<i32> {
        self.lock_replication().isr.clone()
    }

    pub fn replicas(&self) -> Vec<i32> {
        self.lock_replication().replicas.clone()
    }

    /// The ISR change this leader has sent and not yet seen committed.
    pub fn pending_isr(&self) -> Option<Vec<i32>> {
        self.lock_replication()
            .pending
            .as_ref()
            .map(|p| p.isr.clone())
    }

    /// Leader with fewer in-sync replicas than replicas.
    pub fn under_replicated(&self) -> bool {
        let rep = self.lock_replication();
        rep.role == Role::Leader && rep.isr.len() < rep.replicas.len()
    }

    /// Leader whose ISR is below `min.insync.replicas`: acks=all produce is refused.
    pub fn under_min_isr(&self) -> bool {
        self.is_leader()
            && self.isr_size.load(Ordering::Acquire) < self.settings().min_insync_replicas
    }

    /// Follower of a leader (not offline) whose ISR does not include this broker.
    pub fn out_of_sync_follower(&self) -> Option<i32> {
        let rep = self.lock_replication();
        match rep.role {
            Role::Follower { leader }
                if leader != NO_LEADER && !rep.isr.contains(&self.node_id) =>
            {
                Some(leader)
            }
            _ => None,
        }
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log.log_start_offset()
    }

    pub fn log_end_offset(&self) -> i64 {
        self.log.log_end_offset()
    }

    /// The leader-epoch cache's entries as `(epoch, start offset)`.
    pub fn epoch_history(&self) -> Vec<(i32, i64)> {
        self.lock_epochs()
            .history()
            .entries()
            .iter()
            .map(|e| (e.epoch, e.start_offset))
            .collect()
    }

    /// Applies this partition's state from a metadata image: becomes leader or follower,
    /// follows ISR changes. Idempotent: the same or an older state changes nothing.
    pub fn apply_metadata(&self, state: &PartitionImage, now_ms: i64) -> RoleChange {
        // Most images change nothing for most partitions: decide that without waiting for an
        // append in progress.
        if !self.lock_replication().is_newer(state, self.node_id) {
            return RoleChange::Unchanged;
        }
        let _writer = self.lock_writer();
        let change = {
            let mut epochs = self.lock_epochs();
            let mut rep = self.lock_replication();
            let me = self.node_id;
            let wants_leader = state.leader == me;
            let role_matches = match rep.role {
                Role::Leader => wants_leader,
                Role::Follower { leader } => leader == state.leader,
                Role::None => false,
            };
            // Checked again: the state may have moved while waiting for the writer lock.
            if !rep.is_newer(state, me) {
                return RoleChange::Unchanged;
            }
            let same_epoch = role_matches && state.leader_epoch == rep.leader_epoch;
            let was_leader = rep.role == Role::Leader;
            let change = if wants_leader && same_epoch {
                rep.partition_epoch = state.partition_epoch;
                rep.replicas = state.replicas.clone();
                rep.isr = state.isr.clone();
                // Whatever was in flight was decided: committed, or overtaken by another change.
                rep.pending = None;
                let known: Vec<i32> = rep.followers.keys().copied().collect();
                for id in known {
                    if !state.replicas.contains(&id) {
                        rep.followers.remove(&id);
                    }
                }
                for &id in state.replicas.iter().filter(|&&id| id != me) {
                    rep.followers
                        .entry(id)
                        .or_insert_with(|| FollowerState::at_leadership(false, now_ms));
                }
                RoleChange::LeaderUpdated
            } else if wants_leader {
                let leo = self.log.log_end_offset();
                // Followers of earlier epochs find where they diverged from this entry.
                if let Err(e) = epochs.assign(state.leader_epoch, leo) {
                    tracing::error!(topic = %self.topic, partition = self.index, error = %e, "cannot persist the leader epoch cache");
                }
                rep.role = Role::Leader;
                rep.leader_epoch = state.leader_epoch;
                rep.partition_epoch = state.partition_epoch;
                rep.replicas = state.replicas.clone();
                rep.isr = state.isr.clone();
                rep.pending = None;
                rep.leader_epoch_start_offset = leo;
                let previous = std::mem::take(&mut rep.followers);
                for &id in state.replicas.iter().filter(|&&id| id != me) {
                    let in_isr = state.isr.contains(&id);
                    let follower = match previous.get(&id) {
                        // Re-elected: keep what is known of the follower's log.
                        Some(f) if was_leader => FollowerState {
                            last_caught_up_ms: if in_isr { now_ms } else { isr::NEVER_MS },
                            last_fetch_leader_leo: leo,
                            last_fetch_ms: if in_isr { now_ms } else { isr::NEVER_MS },
                            ..*f
                        },
                        _ => FollowerState::at_leadership(in_isr, now_ms),
                    };
                    rep.followers.insert(id, follower);
                }
                RoleChange::BecameLeader
            } else {
                rep.role = Role::Follower {
                    leader: state.leader,
                };
                rep.partition_epoch = state.partition_epoch;
                rep.replicas = state.replicas.clone();
                rep.isr = state.isr.clone();
                rep.pending = None;
                rep.followers.clear();
                if same_epoch {
                    RoleChange::Unchanged
                } else {
                    rep.leader_epoch = state.leader_epoch;
                    RoleChange::BecameFollower {
                        leader: state.leader,
                        was_leader,
                    }
                }
            };
            self.leader_epoch.store(rep.leader_epoch, Ordering::Release);
            self.is_leader
                .store(rep.role == Role::Leader, Ordering::Release);
            self.isr_size.store(rep.isr.len() as i32, Ordering::Release);
            change
        };
        drop(_writer);
        self.maybe_advance_high_watermark(now_ms);
        // Waiting producers and fetches re-check leadership.
        self.append_waiters.wake();
        self.hw_waiters.wake();
        change
    }

    /// Stops serving: the partition is being removed from this broker.
    pub fn retire(&self) {
        let _writer = self.lock_writer();
        self.retired.store(true, Ordering::Release);
        let mut rep = self.lock_replication();
        rep.role = Role::None;
        rep.pending = None;
        rep.followers.clear();
        self.is_leader.store(false, Ordering::Release);
        drop(rep);
        self.append_waiters.wake();
        self.hw_waiters.wake();
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
        let mut producers = self.lock_writer();
        // Role changes take the writer lock: leadership cannot change during this append.
        if !self.is_leader() {
            return Err(AppendError::NotLeader {
                leader: self.current_leader(),
            });
        }
        if acks == -1 {
            let isr = self.isr_size.load(Ordering::Acquire);
            if isr < settings.min_insync_replicas {
                return Err(AppendError::NotEnoughReplicas {
                    isr,
                    required: settings.min_insync_replicas,
                });
            }
        }
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
        self.append_waiters.wake();
        // Alone in the ISR, what the leader has is committed.
        self.maybe_advance_high_watermark(isr::monotonic_ms());
        Ok(AppendOutcome::Appended(info))
    }

    fn current_leader(&self) -> i32 {
        match self.lock_replication().role {
            Role::Leader => self.node_id,
            Role::Follower { leader } => leader,
            Role::None => NO_LEADER,
        }
    }

    /// The leader id and epoch as this replica knows them (for NOT_LEADER answers).
    pub fn leader_and_epoch(&self) -> (i32, i32) {
        let rep = self.lock_replication();
        let leader = match rep.role {
            Role::Leader => self.node_id,
            Role::Follower { leader } => leader,
            Role::None => NO_LEADER,
        };
        (leader, rep.leader_epoch)
    }

    /// Leader only: moves the high watermark to the smallest log end offset in the maximal ISR
    /// (and of caught-up followers about to join), never backwards. Wakes consumers and
    /// acks=all producers when it moves.
    fn maybe_advance_high_watermark(&self, now_ms: i64) -> bool {
        let max_lag_ms = self.max_lag_ms();
        let advanced = {
            let rep = self.lock_replication();
            if rep.role != Role::Leader {
                return false;
            }
            let leo = self.log.log_end_offset();
            let maximal = isr::maximal_isr(&rep.isr, rep.pending.as_ref());
            let candidate = isr::leader_high_watermark(
                self.node_id,
                leo,
                &maximal,
                &rep.followers,
                &|id| self.brokers.is_live(id),
                now_ms,
                max_lag_ms,
            );
            let current = self.high_watermark();
            if candidate > current {
                self.high_watermark.store(candidate, Ordering::Release);
                true
            } else {
                false
            }
        };
        if advanced {
            self.hw_waiters.wake();
        }
        advanced
    }

    /// Leader: what to answer a follower's fetch, before reading (KIP-320 divergence check and
    /// replica membership).
    pub fn check_follower_fetch(
        &self,
        replica_id: i32,
        fetch_offset: i64,
        last_fetched_epoch: i32,
    ) -> FollowerFetchCheck {
        {
            let rep = self.lock_replication();
            if rep.role != Role::Leader {
                return FollowerFetchCheck::NotLeader;
            }
            if replica_id == self.node_id || !rep.followers.contains_key(&replica_id) {
                return FollowerFetchCheck::UnknownReplica;
            }
        }
        let epochs = self.lock_epochs();
        let (start, end) = (self.log.log_start_offset(), self.log.log_end_offset());
        if fetch_offset > end && last_fetched_epoch < 0 {
            return FollowerFetchCheck::OutOfRange;
        }
        match check_follower_position(
            epochs.history(),
            start,
            end,
            fetch_offset,
            last_fetched_epoch,
        ) {
            FollowerPosition::Consistent => FollowerFetchCheck::Serve,
            FollowerPosition::Diverging { epoch, end_offset } => {
                FollowerFetchCheck::Diverging { epoch, end_offset }
            }
            FollowerPosition::OutOfRange => FollowerFetchCheck::OutOfRange,
        }
    }

    /// Leader: a follower fetched at `fetch_offset` (its log end offset) while this log ended
    /// at `leader_leo`. Updates its state, advances the high watermark and, if the follower
    /// caught up, returns the ISR expansion to send to the controller.
    pub fn record_follower_fetch(
        &self,
        replica_id: i32,
        fetch_offset: i64,
        leader_leo: i64,
        now_ms: i64,
    ) -> Option<IsrUpdate> {
        let update = {
            let mut rep = self.lock_replication();
            if rep.role != Role::Leader {
                return None;
            }
            let follower = rep.followers.get_mut(&replica_id)?;
            follower.record_fetch(fetch_offset, leader_leo, now_ms);
            let follower = *follower;
            let hw = self.high_watermark();
            let maximal = isr::maximal_isr(&rep.isr, rep.pending.as_ref());
            if rep.pending.is_none()
                && !maximal.contains(&replica_id)
                && self.brokers.is_live(replica_id)
                && isr::should_join_isr(&follower, hw, rep.leader_epoch_start_offset)
            {
                let new_isr = isr::expanded(&rep.isr, replica_id);
                Some(self.propose_isr(&mut rep, new_isr, now_ms))
            } else {
                None
            }
        };
        self.maybe_advance_high_watermark(now_ms);
        update
    }

    fn max_lag_ms(&self) -> i64 {
        self.settings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .replica_lag_max_ms
    }

    fn propose_isr(&self, rep: &mut ReplicationState, new_isr: Vec<i32>, now_ms: i64) -> IsrUpdate {
        rep.pending = Some(PendingIsr {
            isr: new_isr.clone(),
            sent_at_ms: now_ms,
        });
        IsrUpdate {
            topic_id: self.topic_id,
            partition: self.index,
            leader: self.node_id,
            leader_epoch: rep.leader_epoch,
            partition_epoch: rep.partition_epoch,
            new_isr,
        }
    }

    /// Leader, periodically: drops an ISR change nobody answered within `retry_after_ms`
    /// (so it is decided and sent again), and shrinks the ISR by the followers that have not
    /// caught up within `replica.lag.time.max.ms`. Returns the change to send, if any.
    pub fn check_isr(&self, now_ms: i64, retry_after_ms: i64) -> Option<IsrUpdate> {
        let max_lag_ms = self.max_lag_ms();
        let update = {
            let mut rep = self.lock_replication();
            if rep.role != Role::Leader {
                return None;
            }
            match &rep.pending {
                Some(p) if now_ms - p.sent_at_ms < retry_after_ms => return None,
                Some(p) => {
                    tracing::info!(topic = %self.topic, partition = self.index, isr = ?p.isr, "ISR change not confirmed in time; deciding again");
                    rep.pending = None;
                }
                None => {}
            }
            let leo = self.log.log_end_offset();
            let lagging = isr::out_of_sync_replicas(
                self.node_id,
                &rep.isr,
                &rep.followers,
                leo,
                now_ms,
                max_lag_ms,
            );
            if lagging.is_empty() {
                None
            } else {
                tracing::info!(topic = %self.topic, partition = self.index, ?lagging, isr = ?rep.isr, "shrinking the ISR");
                let new_isr = isr::shrunk(&rep.isr, &lagging);
                Some(self.propose_isr(&mut rep, new_isr, now_ms))
            }
        };
        self.maybe_advance_high_watermark(now_ms);
        update
    }

    /// Follower: where to fetch from next.
    pub fn fetch_position(&self) -> FetchPosition {
        let epochs = self.lock_epochs();
        FetchPosition {
            fetch_offset: self.log.log_end_offset(),
            last_fetched_epoch: epochs.latest_epoch().unwrap_or(-1),
            log_start_offset: self.log.log_start_offset(),
        }
    }

    fn check_following(&self, leader_epoch: i32) -> Result<(), AppendError> {
        let rep = self.lock_replication();
        match rep.role {
            Role::Follower { .. } if rep.leader_epoch == leader_epoch => Ok(()),
            Role::Follower { .. } => Err(AppendError::StaleFetch {
                fetched: leader_epoch,
                current: rep.leader_epoch,
            }),
            Role::Leader => Err(AppendError::NotLeader {
                leader: self.node_id,
            }),
            Role::None => Err(AppendError::NotLeader { leader: NO_LEADER }),
        }
    }

    /// Follower: appends batches fetched from the leader of `leader_epoch`, keeping the leader's
    /// offsets; records new leader epochs (before the append, so the cache always covers the
    /// log) and the producers' sequences (so a new leader de-duplicates retries). Returns None
    /// when nothing new was in `records`.
    pub fn append_fetched(
        &self,
        records: &[u8],
        leader_epoch: i32,
    ) -> Result<Option<AppendInfo>, AppendError> {
        let mut producers = self.lock_writer();
        self.check_following(leader_epoch)?;
        let leo = self.log.log_end_offset();
        let (start, end, headers) = whole_batches_from(records, leo)?;
        if headers.is_empty() {
            return Ok(None);
        }
        let mut epochs = self.lock_epochs();
        for h in &headers {
            if h.partition_leader_epoch > epochs.latest_epoch().unwrap_or(-1) {
                epochs.assign(h.partition_leader_epoch, h.base_offset)?;
            }
        }
        match self.log.append_as_follower(&records[start..end]) {
            Ok(info) => {
                drop(epochs);
                producers.replay(&headers);
                drop(producers);
                self.append_waiters.wake();
                Ok(Some(info))
            }
            Err(e) => {
                // Epochs recorded for batches that did not make it must not stay.
                let _ = epochs.truncate_from_end(self.log.log_end_offset());
                Err(e.into())
            }
        }
    }

    /// Follower: takes the leader's high watermark, capped by what this replica has.
    pub fn update_follower_high_watermark(&self, leader_hw: i64) {
        let rep = self.lock_replication();
        if !matches!(rep.role, Role::Follower { .. }) {
            return;
        }
        let hw = leader_hw
            .min(self.log.log_end_offset())
            .max(self.log.log_start_offset());
        self.high_watermark.store(hw, Ordering::Release);
    }

    /// Follower: truncates the log to `offset` after the leader of `leader_epoch` said the logs
    /// diverged there. The epoch cache, producer state and high watermark follow the log.
    pub fn truncate_to(&self, offset: i64, leader_epoch: i32) -> Result<(), AppendError> {
        let mut producers = self.lock_writer();
        self.check_following(leader_epoch)?;
        self.log.truncate_to(offset)?;
        let leo = self.log.log_end_offset();
        self.lock_epochs().truncate_from_end(leo)?;
        producers.truncate_from(leo);
        self.snapshot_offset.store(-1, Ordering::Release);
        let _rep = self.lock_replication();
        if self.high_watermark() > leo {
            self.high_watermark.store(leo, Ordering::Release);
        }
        Ok(())
    }

    /// Follower: the leader no longer has the data this replica would fetch next; start over
    /// empty at `offset` (the leader's log start).
    pub fn truncate_fully_and_start_at(
        &self,
        offset: i64,
        leader_epoch: i32,
    ) -> Result<(), AppendError> {
        let mut producers = self.lock_writer();
        self.check_following(leader_epoch)?;
        self.log.truncate_fully_and_start_at(offset)?;
        self.lock_epochs().clear()?;
        *producers = ProducerStateTable::default();
        self.snapshot_offset.store(-1, Ordering::Release);
        let _rep = self.lock_replication();
        self.high_watermark
            .store(self.log.log_end_offset(), Ordering::Release);
        Ok(())
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

    /// acks=all: waits until the high watermark reaches `end_offset` (every in-sync replica has
    /// the records) while this broker still leads `leader_epoch`. Kafka's answers: the ISR
    /// fell below min.insync.replicas meanwhile -> NOT_ENOUGH_REPLICAS_AFTER_APPEND;
    /// leadership lost -> NOT_LEADER_OR_FOLLOWER; `deadline` -> REQUEST_TIMED_OUT.
    pub async fn wait_committed(
        &self,
        end_offset: i64,
        leader_epoch: i32,
        deadline: tokio::time::Instant,
    ) -> Result<(), ResponseError> {
        loop {
            let waiter = Arc::new(Notify::new());
            self.hw_waiters.add(&waiter);
            if let Some(outcome) = self.commit_status(end_offset, leader_epoch) {
                return outcome;
            }
            if tokio::time::timeout_at(deadline, waiter.notified())
                .await
                .is_err()
            {
                return self
                    .commit_status(end_offset, leader_epoch)
                    .unwrap_or(Err(ResponseError::RequestTimedOut));
            }
        }
    }

    /// `Some` once an acks=all produce up to `end_offset` has its answer.
    pub fn commit_status(
        &self,
        end_offset: i64,
        leader_epoch: i32,
    ) -> Option<Result<(), ResponseError>> {
        if !self.is_leader() || self.leader_epoch() != leader_epoch {
            return Some(Err(ResponseError::NotLeaderOrFollower));
        }
        if self.high_watermark() < end_offset {
            return None;
        }
        if self.isr_size.load(Ordering::Acquire) < self.settings().min_insync_replicas {
            return Some(Err(ResponseError::NotEnoughReplicasAfterAppend));
        }
        Some(Ok(()))
    }

    /// Reads committed data (below the high watermark) starting at `offset`: what consumers see.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
    ) -> Result<ReadInfo, LogError> {
        self.log
            .read(offset, max_bytes, self.high_watermark(), min_one_batch)
    }

    /// Reads up to the log end, for a follower's fetch.
    pub fn read_for_follower(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
    ) -> Result<ReadInfo, LogError> {
        self.log.read(offset, max_bytes, i64::MAX, min_one_batch)
    }

    /// Registers a consumer fetch (or acks=all produce) to be woken when the high watermark
    /// moves or the role changes.
    pub fn add_waiter(&self, waiter: &Arc<Notify>) {
        self.hw_waiters.add(waiter);
    }

    /// Registers a follower fetch to be woken by the next append or role change.
    pub fn add_follower_waiter(&self, waiter: &Arc<Notify>) {
        self.append_waiters.add(waiter);
    }

    /// Fetches currently parked on this partition.
    pub fn parked_fetches(&self) -> usize {
        self.hw_waiters.count() + self.append_waiters.count()
    }

    /// Writes the idempotent-producer state with the log end offset it covers, so recovery
    /// after a crash replays only the batch headers written since. Skipped when nothing was
    /// appended since the last snapshot.
    pub fn snapshot_producer_state(&self) -> Result<(), LogError> {
        if self.retired.load(Ordering::Acquire) {
            return Ok(());
        }
        let producers = self.lock_writer();
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

    /// Writes the high watermark checkpoint if it moved since the last one, and drops epoch
    /// cache entries that retention removed from the log. Blocking.
    pub fn checkpoint_high_watermark(&self) -> Result<(), LogError> {
        if self.retired.load(Ordering::Acquire) {
            return Ok(());
        }
        let hw = self.high_watermark();
        if self.hw_checkpointed.load(Ordering::Acquire) != hw {
            write_high_watermark(self.log.dir(), hw)?;
            self.hw_checkpointed.store(hw, Ordering::Release);
        }
        let start = self.log.log_start_offset();
        self.lock_epochs().truncate_from_start(start)
    }

    /// Clean shutdown: checkpoint the high watermark, snapshot producer state, flush, mark the
    /// log clean.
    pub fn close(&self) -> Result<(), LogError> {
        self.checkpoint_high_watermark()?;
        self.snapshot_offset.store(-1, Ordering::Release);
        self.snapshot_producer_state()?;
        self.log.close()
    }
}

/// The whole batches of a fetched response that end at or after `from` (the follower's log
/// end): `(start, end)` byte range and their headers. A trailing partial batch (Kafka leaders
/// may send one) is left out; the next fetch gets it whole.
fn whole_batches_from(
    records: &[u8],
    from: i64,
) -> Result<(usize, usize, Vec<BatchHeader>), BatchError> {
    let mut pos = 0usize;
    let mut start = None;
    let mut headers = Vec::new();
    while pos < records.len() {
        let h = match BatchHeader::parse(&records[pos..]) {
            Ok(h) => h,
            Err(BatchError::Truncated { .. }) => break,
            Err(e) => return Err(e),
        };
        let len = h.total_len();
        if pos + len > records.len() {
            break;
        }
        if h.last_offset() >= from {
            start.get_or_insert(pos);
            headers.push(h);
        }
        pos += len;
    }
    Ok((start.unwrap_or(pos), pos, headers))
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

/// Replaces the high watermark checkpoint by rename, without fsync: a checkpoint lost or left
/// empty by a power failure reads as missing, which only lowers the watermark at the next open
/// (safe: the leader waits for its followers again).
fn write_high_watermark(dir: &Path, hw: i64) -> Result<(), LogError> {
    let tmp = dir.join(format!("{HIGH_WATERMARK_FILE}.tmp"));
    let io = |source| LogError::Io {
        path: tmp.clone(),
        source,
    };
    std::fs::write(&tmp, format!("{hw}\n")).map_err(io)?;
    std::fs::rename(&tmp, dir.join(HIGH_WATERMARK_FILE)).map_err(io)
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
mod tests;
