//! Follower replication: for each leader broker, one task fetches every partition this broker
//! follows from that leader, in one Fetch v12 request per round (`replica_id` = this broker,
//! `fetch_offset` = the local log end, `last_fetched_epoch` from the local epoch cache).
//!
//! Each round's answers are applied per partition: batches are appended with the leader's
//! offsets, a diverging epoch (KIP-320) truncates the local log, an out-of-range offset asks the
//! leader for its log bounds, and errors (leadership moved, stale epoch, connection lost) back
//! off for `replica.fetch.backoff.ms`. Which leader a partition fetches from is decided by the
//! replica manager from metadata; a partition's own role check (under its writer lock) makes
//! a fetcher that is a step behind a role change harmless.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, ListOffsetsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use prometheus_client::metrics::counter::Counter;
use sluice_client::{ClientConfig, ClientError, Connection};
use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::brokers::BrokerDirectory;
use super::epoch_cache::follower_truncation_offset;
use super::partition::{AppendError, Partition};

use crate::config::{BrokerConfig, FlushPolicy};

/// The Fetch version followers send: the first with diverging epochs (KIP-320) that still
/// names topics rather than topic ids.
pub const REPLICA_FETCH_VERSION: i16 = 12;
const LIST_OFFSETS_LATEST: i64 = -1;
const LIST_OFFSETS_EARLIEST: i64 = -2;

/// What a follower does when the leader says its fetch offset is out of range (Kafka's
/// `fetchOffsetAndTruncate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutOfRangeAction {
    /// The leader has less than this replica (only after an unclean election): truncate.
    TruncateTo(i64),
    /// The leader deleted what this replica would fetch next: start over at its log start.
    StartAt(i64),
    /// The offset is in range after all (leadership or retention moved meanwhile): fetch again.
    Retry,
}

/// Decides [`OutOfRangeAction`] from this replica's log end and the leader's log bounds.
pub fn out_of_range_action(
    own_log_end: i64,
    leader_log_start: i64,
    leader_log_end: i64,
) -> OutOfRangeAction {
    if leader_log_end < own_log_end {
        OutOfRangeAction::TruncateTo(leader_log_end)
    } else if leader_log_start > own_log_end {
        OutOfRangeAction::StartAt(leader_log_start)
    } else {
        OutOfRangeAction::Retry
    }
}

type PartitionKey = (Arc<str>, i32);

/// A partition a fetcher serves, at the leader epoch metadata gave it.
#[derive(Clone)]
struct Target {
    partition: Arc<Partition>,
    leader_epoch: i32,
    /// Not fetched before this time (after an error).
    retry_at: Option<Instant>,
}

struct Shared {
    leader: i32,
    targets: Mutex<BTreeMap<PartitionKey, Target>>,
    /// Wakes an idle or backing-off fetcher when targets change.
    changed: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<PartitionKey, Target>> {
        self.targets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Delays a partition after an error, if it is still fetched at the same epoch.
    fn back_off(&self, key: &PartitionKey, leader_epoch: i32, until: Instant) {
        if let Some(t) = self.lock().get_mut(key) {
            if t.leader_epoch == leader_epoch {
                t.retry_at = Some(until);
            }
        }
    }

    fn is_current(
        &self,
        key: &PartitionKey,
        partition: &Arc<Partition>,
        leader_epoch: i32,
    ) -> bool {
        self.lock()
            .get(key)
            .is_some_and(|t| t.leader_epoch == leader_epoch && Arc::ptr_eq(&t.partition, partition))
    }
}

struct Fetcher {
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
}

impl Drop for Fetcher {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// What every fetcher task needs.
#[derive(Clone)]
struct Context {
    node_id: i32,
    config: Arc<BrokerConfig>,
    brokers: Arc<BrokerDirectory>,
    traffic: ReplicationTraffic,
}

/// Bytes this broker's followers copied from leaders (shared with the metrics registry).
#[derive(Clone, Debug, Default)]
pub struct ReplicationTraffic {
    /// Every record batch byte appended from a leader.
    pub fetched_bytes: Counter,
    /// The part fetched while this broker was not in the partition's ISR: new replicas of a
    /// reassignment catching up, and restarted or lagging followers. What scaling moves.
    pub catch_up_bytes: Counter,
}

/// The fetcher tasks of this broker, one per leader it follows.
pub struct Fetchers {
    context: Context,
    runtime: Option<Handle>,
    by_leader: Mutex<HashMap<i32, Fetcher>>,
}

impl Fetchers {
    pub fn new(config: Arc<BrokerConfig>, brokers: Arc<BrokerDirectory>) -> Fetchers {
        Fetchers {
            context: Context {
                node_id: config.node_id,
                config,
                brokers,
                traffic: ReplicationTraffic::default(),
            },
            runtime: Handle::try_current().ok(),
            by_leader: Mutex::new(HashMap::new()),
        }
    }

    /// The byte counters of every fetcher of this broker.
    pub fn traffic(&self) -> ReplicationTraffic {
        self.context.traffic.clone()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<i32, Fetcher>> {
        self.by_leader.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fetches `partition` from `leader` at `leader_epoch`, and from no other broker.
    pub fn follow(&self, partition: &Arc<Partition>, leader: i32, leader_epoch: i32) {
        let key: PartitionKey = (partition.topic.clone(), partition.index);
        let mut fetchers = self.lock();
        remove_from_others(&mut fetchers, &key, Some(leader));
        let dead = fetchers
            .get(&leader)
            .is_some_and(|f| f.task.as_ref().is_some_and(|t| t.is_finished()));
        if dead {
            // Only a panic ends a fetcher task; start a new one with the same partitions.
            tracing::error!(
                leader,
                "replica fetcher stopped unexpectedly; restarting it"
            );
            if let Some(old) = fetchers.remove(&leader) {
                let targets = std::mem::take(&mut *old.shared.lock());
                let new = self.start(leader);
                *new.shared.lock() = targets;
                fetchers.insert(leader, new);
            }
        }
        let fetcher = fetchers.entry(leader).or_insert_with(|| self.start(leader));
        let mut targets = fetcher.shared.lock();
        let unchanged = targets.get(&key).is_some_and(|t| {
            t.leader_epoch == leader_epoch && Arc::ptr_eq(&t.partition, partition)
        });
        if !unchanged {
            targets.insert(
                key,
                Target {
                    partition: partition.clone(),
                    leader_epoch,
                    retry_at: None,
                },
            );
            drop(targets);
            fetcher.shared.changed.notify_one();
        }
    }

    /// Stops fetching the partition (it leads now, or is gone). Once this returns, no fetcher
    /// will start a new append for it.
    pub fn unfollow(&self, topic: &str, index: i32) {
        let key: PartitionKey = (Arc::from(topic), index);
        remove_from_others(&mut self.lock(), &key, None);
    }

    /// The leader a partition is fetched from, if any.
    pub fn leader_of(&self, topic: &str, index: i32) -> Option<i32> {
        let key: PartitionKey = (Arc::from(topic), index);
        self.lock()
            .values()
            .find(|f| f.shared.lock().contains_key(&key))
            .map(|f| f.shared.leader)
    }

    /// Stops every fetcher (shutdown).
    pub fn stop_all(&self) {
        self.lock().clear();
    }

    fn start(&self, leader: i32) -> Fetcher {
        let shared = Arc::new(Shared {
            leader,
            targets: Mutex::new(BTreeMap::new()),
            changed: Notify::new(),
        });
        let runtime = self.runtime.clone().or_else(|| Handle::try_current().ok());
        let task = match runtime {
            Some(rt) => Some(rt.spawn(run(shared.clone(), self.context.clone()))),
            None => {
                tracing::error!(
                    leader,
                    "no async runtime: cannot start a replica fetcher; followed partitions will lag"
                );
                None
            }
        };
        Fetcher { shared, task }
    }
}

/// Removes `key` from every fetcher except `keep`'s; fetchers left with nothing stop.
fn remove_from_others(fetchers: &mut HashMap<i32, Fetcher>, key: &PartitionKey, keep: Option<i32>) {
    let mut idle = Vec::new();
    for (&leader, fetcher) in fetchers.iter() {
        if Some(leader) == keep {
            continue;
        }
        let mut targets = fetcher.shared.lock();
        if targets.remove(key).is_some() && targets.is_empty() {
            idle.push(leader);
        }
    }
    for leader in idle {
        fetchers.remove(&leader);
    }
}

/// A fetcher's loop: fetch, apply, repeat, until aborted.
async fn run(shared: Arc<Shared>, cx: Context) {
    let backoff = cx.config.replica_fetch_backoff;
    let mut connection: Option<Connection> = None;
    let mut failures = 0u32;
    loop {
        let now = Instant::now();
        let (ready, next_retry) = {
            let targets = shared.lock();
            let ready: Vec<(PartitionKey, Target)> = targets
                .iter()
                .filter(|(_, t)| t.retry_at.is_none_or(|at| at <= now))
                .map(|(k, t)| (k.clone(), t.clone()))
                .collect();
            let next = targets.values().filter_map(|t| t.retry_at).min();
            (ready, next)
        };
        if ready.is_empty() {
            let wake = shared.changed.notified();
            match next_retry {
                Some(at) => {
                    let _ = tokio::time::timeout_at(at, wake).await;
                }
                None => wake.await,
            }
            continue;
        }
        let Some(address) = cx.brokers.address(shared.leader) else {
            tracing::debug!(
                leader = shared.leader,
                "leader address unknown; waiting for metadata"
            );
            sleep_or_change(&shared, backoff).await;
            continue;
        };
        let reconnect = match &connection {
            Some(c) => c.is_closed() || c.addr() != address,
            None => true,
        };
        if reconnect {
            connection = None;
            match Connection::connect(&address, client_config(&cx)).await {
                Ok(c) => connection = Some(c),
                Err(e) => {
                    log_failure(&mut failures, shared.leader, &address, &e);
                    sleep_or_change(&shared, backoff).await;
                    continue;
                }
            }
        }
        let conn = connection.as_ref().expect("connected just above");
        let request = fetch_request(&cx, &ready);
        let response = match conn.send_version(request, REPLICA_FETCH_VERSION).await {
            Ok(r) => r,
            Err(e) => {
                log_failure(&mut failures, shared.leader, &address, &e);
                connection = None;
                sleep_or_change(&shared, backoff).await;
                continue;
            }
        };
        failures = 0;
        if response.error_code != 0 {
            tracing::warn!(
                leader = shared.leader,
                error_code = response.error_code,
                "replica fetch refused"
            );
            let until = Instant::now() + backoff;
            for (key, t) in &ready {
                shared.back_off(key, t.leader_epoch, until);
            }
            continue;
        }
        let by_key: HashMap<PartitionKey, &Target> =
            ready.iter().map(|(k, t)| (k.clone(), t)).collect();
        for topic in response.responses {
            let name: Arc<str> = Arc::from(topic.topic.0.as_str());
            for pd in topic.partitions {
                let key = (name.clone(), pd.partition_index);
                let Some(target) = by_key.get(&key) else {
                    continue;
                };
                if !shared.is_current(&key, &target.partition, target.leader_epoch) {
                    continue;
                }
                if let Err(e) = apply(&cx, conn, &target.partition, target.leader_epoch, pd).await {
                    match &e {
                        FetchError::Append(AppendError::StaleFetch { .. })
                        | FetchError::Append(AppendError::NotLeader { .. }) => {
                            tracing::debug!(topic = %key.0, partition = key.1, error = %e, "replica fetch result dropped")
                        }
                        _ => {
                            tracing::warn!(topic = %key.0, partition = key.1, leader = shared.leader, error = %e, "replica fetch failed; backing off")
                        }
                    }
                    shared.back_off(&key, target.leader_epoch, Instant::now() + backoff);
                }
            }
        }
    }
}

async fn sleep_or_change(shared: &Shared, backoff: Duration) {
    let _ = tokio::time::timeout(backoff, shared.changed.notified()).await;
}

fn log_failure(failures: &mut u32, leader: i32, address: &str, e: &ClientError) {
    *failures += 1;
    if *failures == 1 {
        tracing::warn!(leader, address, error = %e, "cannot fetch from leader; retrying");
    } else {
        tracing::debug!(leader, address, error = %e, failures = *failures, "cannot fetch from leader");
    }
}

fn client_config(cx: &Context) -> ClientConfig {
    let max_wait = Duration::from_millis(cx.config.replica_fetch_wait_max_ms.max(0) as u64);
    ClientConfig {
        client_id: format!("sluice-replica-{}", cx.node_id),
        connect_timeout: Duration::from_secs(5),
        // Kafka's replica.socket.timeout.ms (30 s), on top of the long poll.
        request_timeout: max_wait + Duration::from_secs(30),
        ..ClientConfig::default()
    }
}

fn fetch_request(cx: &Context, ready: &[(PartitionKey, Target)]) -> FetchRequest {
    let mut topics: BTreeMap<Arc<str>, Vec<FetchPartition>> = BTreeMap::new();
    for ((topic, index), target) in ready {
        let position = target.partition.fetch_position();
        let mut p = FetchPartition::default();
        p.partition = *index;
        p.current_leader_epoch = target.leader_epoch;
        p.fetch_offset = position.fetch_offset;
        p.last_fetched_epoch = position.last_fetched_epoch;
        p.log_start_offset = position.log_start_offset;
        p.partition_max_bytes = cx.config.replica_fetch_max_bytes;
        topics.entry(topic.clone()).or_default().push(p);
    }
    let mut request = FetchRequest::default();
    request.replica_id = BrokerId(cx.node_id);
    request.max_wait_ms = cx.config.replica_fetch_wait_max_ms;
    request.min_bytes = 1;
    request.max_bytes = cx.config.fetch_max_bytes.min(i32::MAX as usize) as i32;
    // A full fetch every time: no incremental fetch session.
    request.session_id = 0;
    request.session_epoch = -1;
    request.topics = topics
        .into_iter()
        .map(|(name, partitions)| {
            let mut t = FetchTopic::default();
            t.topic = TopicName(StrBytes::from_string(name.to_string()));
            t.partitions = partitions;
            t
        })
        .collect();
    request
}

#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("leader answered {0:?}")]
    Leader(ResponseError),
    #[error("leader answered error code {0}")]
    LeaderCode(i16),
    #[error(transparent)]
    Append(#[from] AppendError),
    #[error("asking the leader for its log bounds: {0}")]
    ListOffsets(#[from] ClientError),
    #[error("a blocking log operation did not complete: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Applies one partition's answer.
async fn apply(
    cx: &Context,
    conn: &Connection,
    partition: &Arc<Partition>,
    leader_epoch: i32,
    pd: PartitionData,
) -> Result<(), FetchError> {
    match ResponseError::try_from_code(pd.error_code) {
        None if pd.error_code == 0 => {}
        Some(ResponseError::OffsetOutOfRange) => {
            return reset_out_of_range(cx, conn, partition, leader_epoch).await;
        }
        Some(e) => return Err(FetchError::Leader(e)),
        None => return Err(FetchError::LeaderCode(pd.error_code)),
    }
    if pd.diverging_epoch.epoch >= 0 && pd.diverging_epoch.end_offset >= 0 {
        let position = partition.fetch_position();
        let history = super::epoch_cache::EpochHistory::from_pairs(partition.epoch_history());
        let offset = follower_truncation_offset(
            &history,
            position.fetch_offset,
            pd.diverging_epoch.epoch,
            pd.diverging_epoch.end_offset,
        );
        tracing::info!(topic = %partition.topic, partition = partition.index, log_end = position.fetch_offset,
            leader_epoch = pd.diverging_epoch.epoch, leader_end = pd.diverging_epoch.end_offset,
            truncate_to = offset, "log diverged from the leader's; truncating");
        let p = partition.clone();
        tokio::task::spawn_blocking(move || p.truncate_to(offset, leader_epoch)).await??;
        return Ok(());
    }
    let records = pd.records.unwrap_or_default();
    if !records.is_empty() {
        let appended = partition.append_fetched(&records, leader_epoch)?;
        if appended.is_some() {
            let bytes = records.len() as u64;
            cx.traffic.fetched_bytes.inc_by(bytes);
            if partition.out_of_sync_follower().is_some() {
                cx.traffic.catch_up_bytes.inc_by(bytes);
            }
        }
        if appended.is_some() && cx.config.flush_policy == FlushPolicy::Sync {
            // Sync policy: what this follower reports as fetched is on disk.
            let p = partition.clone();
            tokio::task::spawn_blocking(move || p.log().flush())
                .await?
                .map_err(AppendError::from)?;
        }
    }
    partition.update_follower_high_watermark(pd.high_watermark);
    Ok(())
}

/// OFFSET_OUT_OF_RANGE: asks the leader for its log bounds and truncates or restarts.
async fn reset_out_of_range(
    cx: &Context,
    conn: &Connection,
    partition: &Arc<Partition>,
    leader_epoch: i32,
) -> Result<(), FetchError> {
    let leader_end = list_offset(cx, conn, partition, leader_epoch, LIST_OFFSETS_LATEST).await?;
    let leader_start =
        list_offset(cx, conn, partition, leader_epoch, LIST_OFFSETS_EARLIEST).await?;
    let own_end = partition.log_end_offset();
    let action = out_of_range_action(own_end, leader_start, leader_end);
    tracing::warn!(topic = %partition.topic, partition = partition.index, own_end, leader_start, leader_end, ?action,
        "fetch offset out of range at the leader");
    let p = partition.clone();
    match action {
        OutOfRangeAction::TruncateTo(offset) => {
            tokio::task::spawn_blocking(move || p.truncate_to(offset, leader_epoch)).await??
        }
        OutOfRangeAction::StartAt(offset) => {
            tokio::task::spawn_blocking(move || p.truncate_fully_and_start_at(offset, leader_epoch))
                .await??
        }
        OutOfRangeAction::Retry => {}
    }
    Ok(())
}

async fn list_offset(
    cx: &Context,
    conn: &Connection,
    partition: &Partition,
    leader_epoch: i32,
    timestamp: i64,
) -> Result<i64, FetchError> {
    let mut p = ListOffsetsPartition::default();
    p.partition_index = partition.index;
    p.current_leader_epoch = leader_epoch;
    p.timestamp = timestamp;
    let mut t = ListOffsetsTopic::default();
    t.name = TopicName(StrBytes::from_string(partition.topic.to_string()));
    t.partitions = vec![p];
    let mut request = ListOffsetsRequest::default();
    request.replica_id = BrokerId(cx.node_id);
    request.topics = vec![t];
    let response = conn.send(request).await?;
    let answer = response
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter())
        .find(|p| p.partition_index == partition.index)
        .ok_or(FetchError::LeaderCode(-1))?;
    if answer.error_code != 0 {
        return Err(ResponseError::try_from_code(answer.error_code).map_or(
            FetchError::LeaderCode(answer.error_code),
            FetchError::Leader,
        ));
    }
    Ok(answer.offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_truncates_restarts_or_retries() {
        assert_eq!(
            out_of_range_action(120, 0, 100),
            OutOfRangeAction::TruncateTo(100)
        );
        assert_eq!(
            out_of_range_action(50, 80, 200),
            OutOfRangeAction::StartAt(80)
        );
        assert_eq!(out_of_range_action(90, 80, 200), OutOfRangeAction::Retry);
        assert_eq!(out_of_range_action(0, 0, 0), OutOfRangeAction::Retry);
    }
}
