//! The replica manager: the partitions this broker hosts, kept in step with the metadata image.
//! On every applied batch of records (and every whole image) it reconciles each partition
//! assigned to this broker: opens it, makes it leader or follower as the image says (starting
//! or moving its fetcher), and removes partitions no longer assigned (topic deleted, or the
//! replica moved away by a reassignment). It also runs the leaders' ISR maintenance and the
//! high watermark checkpoints, and tells the group coordinator about leadership changes.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use super::brokers::BrokerDirectory;
use super::fetcher::Fetchers;
use super::isr::{monotonic_ms, IsrUpdate};
use super::partition::{Partition, PartitionSettings, RoleChange};
use crate::config::BrokerConfig;
use crate::metadata::image::NO_LEADER;
use crate::metadata::{topic_config, MetadataImage, MetadataListener, MetadataRecord, TopicImage};
use crate::shutdown::stopped;

/// Suffix of a partition directory whose files are being removed.
const DELETE_SUFFIX: &str = "-delete";
/// Kafka's `replica.high.watermark.checkpoint.interval.ms`.
const HIGH_WATERMARK_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);
/// An ISR change with no answer in metadata after this long is decided and sent again.
const ISR_UPDATE_RETRY_MS: i64 = 5_000;

type TopicPartitions = BTreeMap<i32, Arc<Partition>>;

/// Told when this broker gains or loses the leadership of a partition (the group coordinator
/// loads or unloads the groups of an offsets partition). Called outside the manager's locks.
pub trait LeadershipListener: Send + Sync {
    fn on_leadership(&self, topic: &str, partition: i32, leader_epoch: i32, is_leader: bool);
}

/// Counts for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplicaStats {
    pub partitions: usize,
    /// Partitions this broker leads.
    pub leaders: usize,
    /// Led here, with fewer in-sync replicas than replicas.
    pub under_replicated: usize,
    /// Led here, with fewer in-sync replicas than min.insync.replicas.
    pub under_min_isr: usize,
    /// Followed here while this broker is not in the ISR.
    pub out_of_sync: usize,
}

struct LeadershipEvent {
    topic: Arc<str>,
    partition: i32,
    leader_epoch: i32,
    is_leader: bool,
}

/// The partitions hosted on this broker.
pub struct ReplicaManager {
    config: Arc<BrokerConfig>,
    partitions: RwLock<HashMap<Arc<str>, TopicPartitions>>,
    brokers: Arc<BrokerDirectory>,
    fetchers: Fetchers,
    isr_updates: mpsc::UnboundedSender<IsrUpdate>,
    leadership: RwLock<Option<Arc<dyn LeadershipListener>>>,
    /// Metadata is applied one batch at a time.
    reconciling: Mutex<()>,
}

impl ReplicaManager {
    /// `isr_updates` receives the ISR changes partition leaders ask for; whoever holds the
    /// receiver forwards them to the controller.
    pub fn new(
        config: Arc<BrokerConfig>,
        isr_updates: mpsc::UnboundedSender<IsrUpdate>,
    ) -> ReplicaManager {
        let brokers = Arc::new(BrokerDirectory::default());
        ReplicaManager {
            fetchers: Fetchers::new(config.clone(), brokers.clone()),
            config,
            partitions: RwLock::new(HashMap::new()),
            brokers,
            isr_updates,
            leadership: RwLock::new(None),
            reconciling: Mutex::new(()),
        }
    }

    /// Registers the listener for leadership changes (one; a later call replaces it). It is
    /// told at once about every partition this broker leads now, since the first image may
    /// have been applied before it existed.
    pub fn set_leadership_listener(&self, listener: Arc<dyn LeadershipListener>) {
        let current: Vec<LeadershipEvent> = {
            // Under the reconcile lock so no change slips between the replay and registering.
            let _one_at_a_time = self.reconciling.lock().unwrap_or_else(|p| p.into_inner());
            *self.leadership.write().unwrap_or_else(|p| p.into_inner()) = Some(listener.clone());
            self.all()
                .into_iter()
                .filter(|p| p.is_leader())
                .map(|p| LeadershipEvent {
                    topic: p.topic.clone(),
                    partition: p.index,
                    leader_epoch: p.leader_epoch(),
                    is_leader: true,
                })
                .collect()
        };
        for e in current {
            listener.on_leadership(&e.topic, e.partition, e.leader_epoch, e.is_leader);
        }
    }

    /// The partition, if this broker hosts it.
    pub fn get(&self, topic: &str, partition: i32) -> Option<Arc<Partition>> {
        self.read()
            .get(topic)
            .and_then(|p| p.get(&partition))
            .cloned()
    }

    /// Every hosted partition.
    pub fn all(&self) -> Vec<Arc<Partition>> {
        self.read()
            .values()
            .flat_map(|p| p.values().cloned())
            .collect()
    }

    /// The leader this broker fetches the partition from, if it follows one.
    pub fn fetching_from(&self, topic: &str, partition: i32) -> Option<i32> {
        self.fetchers.leader_of(topic, partition)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Arc<str>, TopicPartitions>> {
        self.partitions.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Arc<str>, TopicPartitions>> {
        self.partitions.write().unwrap_or_else(|p| p.into_inner())
    }

    fn partition_dir(&self, topic: &str, partition: i32) -> PathBuf {
        self.config.data_dir.join(format!("{topic}-{partition}"))
    }

    fn settings(&self, topic: &TopicImage) -> PartitionSettings {
        PartitionSettings {
            log: topic_config::log_config(&self.config, &topic.configs),
            min_insync_replicas: topic_config::min_insync_replicas(&self.config, &topic.configs),
            replica_lag_max_ms: self.config.replica_lag_time_max.as_millis() as i64,
        }
    }

    /// Leader: a follower fetched at `fetch_offset` while the log ended at `leader_leo`.
    /// Advances the high watermark and sends the ISR expansion the fetch earned, if any.
    pub fn record_follower_fetch(
        &self,
        partition: &Partition,
        replica_id: i32,
        fetch_offset: i64,
        leader_leo: i64,
    ) {
        if let Some(update) =
            partition.record_follower_fetch(replica_id, fetch_offset, leader_leo, monotonic_ms())
        {
            tracing::info!(topic = %partition.topic, partition = partition.index, replica_id, new_isr = ?update.new_isr, "follower caught up; expanding the ISR");
            self.send_isr_update(update);
        }
    }

    fn send_isr_update(&self, update: IsrUpdate) {
        if self.isr_updates.send(update).is_err() {
            // Retried after ISR_UPDATE_RETRY_MS like any unanswered change.
            tracing::debug!("nobody receives ISR updates");
        }
    }

    /// Leaders' ISR maintenance at `now_ms` (monotonic): shrink by lagging followers, resend
    /// changes metadata never confirmed.
    pub fn check_isr_at(&self, now_ms: i64) {
        for p in self.all() {
            if let Some(update) = p.check_isr(now_ms, ISR_UPDATE_RETRY_MS) {
                self.send_isr_update(update);
            }
        }
    }

    /// Writes every partition's high watermark checkpoint that moved. Blocking.
    pub fn checkpoint_high_watermarks(&self) {
        for p in self.all() {
            if let Err(e) = p.checkpoint_high_watermark() {
                tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "high watermark checkpoint failed");
            }
        }
    }

    /// Background duties until shutdown: ISR maintenance every half `replica.lag.time.max.ms`
    /// (at most every second) and high watermark checkpoints.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let isr_period = (self.config.replica_lag_time_max / 2)
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        let mut isr_tick = tokio::time::interval(isr_period);
        let mut checkpoint_tick = tokio::time::interval(HIGH_WATERMARK_CHECKPOINT_INTERVAL);
        isr_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        checkpoint_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = isr_tick.tick() => self.check_isr_at(monotonic_ms()),
                _ = checkpoint_tick.tick() => {
                    let me = self.clone();
                    let _ = tokio::task::spawn_blocking(move || me.checkpoint_high_watermarks()).await;
                }
                _ = stopped(&mut shutdown) => return,
            }
        }
    }

    /// For /readyz: this broker follows a partition whose leader is live and is not in its
    /// ISR, so restarting it now could leave that partition with too few in-sync replicas.
    pub fn is_cause_of_under_replication(&self) -> bool {
        self.all().iter().any(|p| {
            p.out_of_sync_follower()
                .is_some_and(|leader| self.brokers.is_live(leader))
        })
    }

    /// Bytes this broker's followers copied from leaders.
    pub fn traffic(&self) -> super::ReplicationTraffic {
        self.fetchers.traffic()
    }

    pub fn stats(&self) -> ReplicaStats {
        let mut s = ReplicaStats::default();
        for p in self.all() {
            s.partitions += 1;
            if p.is_leader() {
                s.leaders += 1;
                s.under_replicated += usize::from(p.under_replicated());
                s.under_min_isr += usize::from(p.under_min_isr());
            } else if p.out_of_sync_follower().is_some() {
                s.out_of_sync += 1;
            }
        }
        s
    }

    /// Opens partition `index` of `topic`. None (logged) if its log cannot be opened: the
    /// partition stays offline here; produce and fetch answer KAFKA_STORAGE_ERROR.
    fn open_partition(&self, topic: &TopicImage, index: i32) -> Option<Arc<Partition>> {
        let name: Arc<str> = Arc::from(topic.name.as_str());
        let dir = self.partition_dir(&topic.name, index);
        match Partition::open(
            dir,
            name.clone(),
            index,
            topic.id,
            self.settings(topic),
            self.config.node_id,
            self.brokers.clone(),
        ) {
            Ok(partition) => {
                let partition = Arc::new(partition);
                self.write()
                    .entry(name)
                    .or_default()
                    .insert(index, partition.clone());
                Some(partition)
            }
            Err(e) => {
                tracing::error!(topic = %topic.name, partition = index, error = %e, "cannot open partition");
                None
            }
        }
    }

    /// Stops and forgets a partition, and deletes its directory in the background. The
    /// directory is renamed first so a topic created again under the same name starts empty;
    /// a crash before the files are gone is finished on the next start.
    fn remove_partition(&self, p: &Arc<Partition>) {
        self.fetchers.unfollow(&p.topic, p.index);
        {
            let mut map = self.write();
            if let Some(ps) = map.get_mut(&p.topic) {
                if ps.get(&p.index).is_some_and(|q| Arc::ptr_eq(q, p)) {
                    ps.remove(&p.index);
                }
                if ps.is_empty() {
                    map.remove(&p.topic);
                }
            }
        }
        p.retire();
        let dir = p.log().dir().to_path_buf();
        let doomed = dir.with_file_name(format!(
            "{}.{}{DELETE_SUFFIX}",
            dir.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("partition"),
            p.topic_id.simple()
        ));
        match std::fs::rename(&dir, &doomed) {
            Ok(()) => remove_dir_in_background(doomed),
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e, "cannot delete partition directory")
            }
        }
    }

    /// Brings every hosted partition in line with `image`. Returns the leadership changes.
    fn reconcile(&self, image: &MetadataImage) -> Vec<LeadershipEvent> {
        let me = self.config.node_id;
        self.brokers.update(image);
        let now = monotonic_ms();
        let mut events = Vec::new();
        for p in self.all() {
            let assigned = image
                .topic_by_id(&p.topic_id)
                .filter(|t| *t.name == *p.topic)
                .and_then(|t| t.partitions.get(&p.index))
                .is_some_and(|state| state.replicas.contains(&me));
            if !assigned {
                let was_leader = p.is_leader();
                tracing::info!(topic = %p.topic, partition = p.index, "partition no longer assigned to this broker; removing it");
                self.remove_partition(&p);
                if was_leader {
                    events.push(LeadershipEvent {
                        topic: p.topic.clone(),
                        partition: p.index,
                        leader_epoch: p.leader_epoch(),
                        is_leader: false,
                    });
                }
            }
        }
        for topic in image.topics.values() {
            for (&index, state) in &topic.partitions {
                if !state.replicas.contains(&me) {
                    continue;
                }
                let partition = match self.get(&topic.name, index) {
                    Some(p) => p,
                    None => match self.open_partition(topic, index) {
                        Some(p) => p,
                        None => continue,
                    },
                };
                if state.leader == me {
                    // Stop fetching before leading.
                    self.fetchers.unfollow(&topic.name, index);
                }
                match partition.apply_metadata(state, now) {
                    RoleChange::BecameLeader => {
                        tracing::info!(topic = %topic.name, partition = index, leader_epoch = state.leader_epoch, isr = ?state.isr, "leading partition");
                        events.push(LeadershipEvent {
                            topic: partition.topic.clone(),
                            partition: index,
                            leader_epoch: state.leader_epoch,
                            is_leader: true,
                        });
                    }
                    RoleChange::BecameFollower { leader, was_leader } => {
                        tracing::info!(topic = %topic.name, partition = index, leader, leader_epoch = state.leader_epoch, "following partition");
                        if leader == NO_LEADER {
                            self.fetchers.unfollow(&topic.name, index);
                        } else {
                            self.fetchers.follow(&partition, leader, state.leader_epoch);
                        }
                        if was_leader {
                            events.push(LeadershipEvent {
                                topic: partition.topic.clone(),
                                partition: index,
                                leader_epoch: state.leader_epoch,
                                is_leader: false,
                            });
                        }
                    }
                    RoleChange::LeaderUpdated | RoleChange::Unchanged => {}
                }
            }
        }
        events
    }

    fn apply_image(&self, image: &MetadataImage, refresh_settings: bool) {
        let events = {
            let _one_at_a_time = self.reconciling.lock().unwrap_or_else(|p| p.into_inner());
            let events = self.reconcile(image);
            if refresh_settings {
                for topic in image.topics.values() {
                    self.refresh_settings(topic);
                }
            }
            events
        };
        self.notify_leadership(events);
    }

    fn refresh_settings(&self, topic: &TopicImage) {
        let settings = self.settings(topic);
        if let Some(ps) = self.read().get(topic.name.as_str()) {
            ps.values()
                .filter(|p| p.topic_id == topic.id)
                .for_each(|p| p.update_settings(settings.clone()));
        }
    }

    fn notify_leadership(&self, events: Vec<LeadershipEvent>) {
        if events.is_empty() {
            return;
        }
        let listener = self
            .leadership
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(listener) = listener {
            for e in events {
                listener.on_leadership(&e.topic, e.partition, e.leader_epoch, e.is_leader);
            }
        }
    }

    /// Removes directories left by deletions a crash interrupted, and partition directories
    /// not assigned here (and not open).
    fn remove_orphans(&self, image: &MetadataImage) {
        let Ok(entries) = std::fs::read_dir(&self.config.data_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let parsed = name
                .rsplit_once('-')
                .and_then(|(topic, p)| p.parse::<i32>().ok().map(|p| (topic, p)));
            let known = parsed.is_some_and(|(topic, p)| {
                self.get(topic, p).is_some()
                    || image.topic(topic).is_some_and(|t| {
                        t.partitions
                            .get(&p)
                            .is_some_and(|pi| pi.replicas.contains(&self.config.node_id))
                    })
            });
            if name.ends_with(DELETE_SUFFIX)
                || (parsed.is_some() && !known && is_partition_dir(&path))
            {
                tracing::info!(dir = %path.display(), "removing partition directory no longer assigned here");
                remove_dir_in_background(path);
            }
        }
    }

    /// Clean shutdown: stop fetching, then close every partition.
    pub fn close_all(&self) {
        self.fetchers.stop_all();
        for p in self.all() {
            if let Err(e) = p.close() {
                tracing::error!(topic = %p.topic, partition = p.index, error = %e, "partition did not close cleanly");
            }
        }
    }

    /// The topic id of a hosted topic (for tests and admin views).
    pub fn topic_id(&self, topic: &str) -> Option<Uuid> {
        self.read()
            .get(topic)
            .and_then(|ps| ps.values().next().map(|p| p.topic_id))
    }
}

/// A partition directory holds segment files; other directories (the metadata log's) are left.
fn is_partition_dir(path: &Path) -> bool {
    std::fs::read_dir(path).is_ok_and(|mut it| {
        it.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".log")))
    })
}

fn remove_dir_in_background(path: PathBuf) {
    std::thread::spawn(move || match std::fs::remove_dir_all(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(dir = %path.display(), error = %e, "cannot remove directory"),
    });
}

impl MetadataListener for ReplicaManager {
    fn on_image_loaded(&self, image: &MetadataImage) {
        self.apply_image(image, true);
        self.remove_orphans(image);
    }

    fn on_records(&self, image: &MetadataImage, records: &[MetadataRecord]) {
        let configs_changed = records
            .iter()
            .any(|r| matches!(r, MetadataRecord::SetTopicConfigs { .. }));
        self.apply_image(image, configs_changed);
    }
}

#[cfg(test)]
mod tests;
