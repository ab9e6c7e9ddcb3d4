//! The group coordinator: every consumer group and its committed offsets, kept in memory and
//! written to the `__consumer_offsets` partition the group hashes to. A group's coordinator
//! is the leader of that partition; on a single broker that is always this broker, and the
//! state is rebuilt from the partitions at start.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use tokio::sync::oneshot;

use super::group::{Group, GroupState, JoinRequest, JoinResult, StoredGroup, SyncResult};
use super::offsets_topic::{
    encode_batch, partition_for, CommittedOffset, OffsetsRecord, OFFSETS_TOPIC,
};
use crate::clock::now_ms;
use crate::config::BrokerConfig;
use crate::log::LogError;
use crate::metadata::MetadataImage;
use crate::replica::{Partition, ReplicaManager};

type TopicPartition = (String, i32);

/// Per-partition outcomes of an offsets operation.
pub type PartitionResults = Vec<(TopicPartition, Result<(), ResponseError>)>;

/// Where a write to the offsets topic must be durable before it is acknowledged.
pub type DurableAt = (Arc<Partition>, i64);

#[derive(Default)]
struct State {
    groups: HashMap<String, Group>,
    offsets: HashMap<String, BTreeMap<TopicPartition, CommittedOffset>>,
    /// The group metadata last written, so only changes are written.
    persisted: HashMap<String, StoredGroup>,
}

/// A group as DescribeGroups shows it.
pub struct GroupDescription {
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    /// `(member id, instance id, client id, client host, metadata, assignment)`
    pub members: Vec<(
        String,
        Option<String>,
        String,
        String,
        bytes::Bytes,
        bytes::Bytes,
    )>,
}

/// Consumer groups and offsets of this broker.
pub struct GroupCoordinator {
    config: Arc<BrokerConfig>,
    replicas: Arc<ReplicaManager>,
    state: Mutex<State>,
    /// Offsets partitions this broker leads and has loaded: it coordinates their groups.
    /// Apart from `state` so checks made while holding `state` do not lock it twice.
    loaded: Mutex<std::collections::BTreeSet<i32>>,
}

impl GroupCoordinator {
    pub fn new(config: Arc<BrokerConfig>, replicas: Arc<ReplicaManager>) -> GroupCoordinator {
        GroupCoordinator {
            config,
            replicas,
            state: Mutex::new(State::default()),
            loaded: Mutex::new(Default::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every mutation completes before the lock is released; a panic cannot leave a half
        // update behind that later requests would trip over worse than an error.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn loaded(&self) -> MutexGuard<'_, std::collections::BTreeSet<i32>> {
        // A set of partition numbers: always consistent.
        self.loaded.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The offsets partition that holds `group`.
    pub fn partition_of(&self, group: &str) -> i32 {
        partition_for(group, self.config.offsets_topic_num_partitions)
    }

    /// Whether this broker coordinates `group`: it leads the group's offsets partition and
    /// has loaded it.
    pub fn is_coordinator(&self, group: &str) -> bool {
        self.loaded().contains(&self.partition_of(group))
    }

    /// Follows leadership of the offsets partitions: loads the groups of a partition this
    /// broker now leads, drops those of a partition it no longer leads. Blocking (reads the
    /// partition's log).
    pub fn follow_leadership(&self, image: &MetadataImage) {
        let me = self.config.node_id;
        let led: std::collections::BTreeSet<i32> = image
            .topic(OFFSETS_TOPIC)
            .map(|t| {
                t.partitions
                    .iter()
                    .filter(|(_, p)| p.leader == me)
                    .map(|(i, _)| *i)
                    .collect()
            })
            .unwrap_or_default();
        let loaded = self.loaded().clone();
        for p in loaded.difference(&led) {
            self.unload(*p);
        }
        for p in led.difference(&loaded) {
            if let Err(e) = self.load(*p) {
                tracing::error!(partition = p, error = %e, "cannot load consumer groups");
            }
        }
    }

    /// Rebuilds the groups and offsets of one offsets partition from its log.
    fn load(&self, index: i32) -> Result<(), LogError> {
        let Some(partition) = self.replicas.get(OFFSETS_TOPIC, index) else {
            return Ok(());
        };
        let records = read_all(&partition)?;
        let mut state = self.lock();
        let now = Instant::now();
        for record in records {
            apply(&mut state, record);
        }
        let stored: Vec<(String, StoredGroup)> = state
            .persisted
            .iter()
            .filter(|(id, _)| self.partition_of(id) == index)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (id, s) in stored {
            let mut group = Group::new(&id, self.config.group_initial_rebalance_delay);
            group.restore(&s, now);
            state.groups.insert(id, group);
        }
        self.loaded().insert(index);
        tracing::info!(
            partition = index,
            groups = state.groups.len(),
            "offsets partition loaded"
        );
        Ok(())
    }

    /// Forgets the groups of an offsets partition another broker now coordinates.
    fn unload(&self, index: i32) {
        self.loaded().remove(&index);
        let mut state = self.lock();
        let mine = |id: &String| self.partition_of(id) == index;
        state.groups.retain(|id, _| !mine(id));
        state.offsets.retain(|id, _| !mine(id));
        state.persisted.retain(|id, _| !mine(id));
        tracing::info!(partition = index, "offsets partition unloaded");
    }

    fn check_group_id(&self, group: &str) -> Result<(), ResponseError> {
        if group.is_empty() {
            return Err(ResponseError::InvalidGroupId);
        }
        if !self.is_coordinator(group) {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        Ok(())
    }

    pub fn join(&self, group_id: &str, req: JoinRequest) -> oneshot::Receiver<JoinResult> {
        let refuse = |e| {
            let (tx, rx) = oneshot::channel();
            let _ = tx.send(JoinResult::error(e, &req.member_id));
            rx
        };
        if let Err(e) = self.check_group_id(group_id) {
            return refuse(e);
        }
        let session_ms = req.session_timeout.as_millis() as i64;
        if session_ms < self.config.group_min_session_timeout_ms as i64
            || session_ms > self.config.group_max_session_timeout_ms as i64
        {
            return refuse(ResponseError::InvalidSessionTimeout);
        }
        let mut state = self.lock();
        let group = state
            .groups
            .entry(group_id.to_string())
            .or_insert_with(|| Group::new(group_id, self.config.group_initial_rebalance_delay));
        if req.member_id.is_empty() && group.members.len() >= self.config.group_max_size {
            return refuse(ResponseError::GroupMaxSizeReached);
        }
        let rx = group.join(req, Instant::now());
        self.persist_if_changed(&mut state, group_id);
        rx
    }

    pub fn sync(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        assignments: Vec<(String, bytes::Bytes)>,
    ) -> oneshot::Receiver<SyncResult> {
        let mut state = self.lock();
        if let Err(e) = self.check_group_id(group_id) {
            return refused_sync(e);
        }
        let now = Instant::now();
        let Some(group) = state.groups.get_mut(group_id) else {
            return refused_sync(ResponseError::UnknownMemberId);
        };
        group.poll(now);
        // The leader's assignments settle the generation: store it first, and if that fails
        // answer with an error and rebalance again, as Kafka does, rather than run a
        // generation that would not survive a restart.
        let settles = group.state == GroupState::CompletingRebalance
            && group.leader.as_deref() == Some(member_id)
            && group
                .check_member(member_id, instance_id, generation)
                .is_ok();
        if settles {
            let mut stored = group.to_stored();
            for m in &mut stored.members {
                m.assignment = assignments
                    .iter()
                    .find(|(id, _)| *id == m.member_id)
                    .map(|(_, a)| a.to_vec())
                    .unwrap_or_default();
            }
            let record = OffsetsRecord::Group {
                group: group_id.to_string(),
                value: Some(stored),
            };
            if let Err(e) = self.write(group_id, std::slice::from_ref(&record)) {
                group.rebalance(now);
                return refused_sync(match e {
                    ResponseError::InvalidCommitOffsetSize => ResponseError::UnknownServerError,
                    other => other,
                });
            }
            apply(&mut state, record);
        }
        let group = state
            .groups
            .get_mut(group_id)
            .expect("looked up above under the same lock");
        let rx = group.sync(member_id, instance_id, generation, assignments, now);
        self.persist_if_changed(&mut state, group_id);
        rx
    }

    pub fn heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), ResponseError> {
        self.check_group_id(group_id)?;
        let mut state = self.lock();
        let group = state
            .groups
            .get_mut(group_id)
            .ok_or(ResponseError::UnknownMemberId)?;
        let result = group.heartbeat(member_id, instance_id, generation, Instant::now());
        self.persist_if_changed(&mut state, group_id);
        result
    }

    /// LeaveGroup for each `(member id, instance id)`; per-member results in order.
    pub fn leave(
        &self,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Result<Vec<Result<(), ResponseError>>, ResponseError> {
        self.check_group_id(group_id)?;
        let mut state = self.lock();
        let Some(group) = state.groups.get_mut(group_id) else {
            return Ok(members
                .iter()
                .map(|_| Err(ResponseError::UnknownMemberId))
                .collect());
        };
        let now = Instant::now();
        let results = members
            .iter()
            .map(|(m, i)| group.leave(m, i.as_deref(), now))
            .collect();
        self.persist_if_changed(&mut state, group_id);
        Ok(results)
    }

    /// OffsetCommit. Group-level checks first (membership, generation); then each partition
    /// is checked and the valid ones are written in one batch. Returns per-partition results
    /// and where the write must be durable.
    pub fn commit_offsets(
        &self,
        image: &MetadataImage,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        offsets: Vec<(TopicPartition, CommittedOffset)>,
    ) -> Result<(PartitionResults, Option<DurableAt>), ResponseError> {
        self.check_group_id(group_id)?;
        let mut state = self.lock();
        if let Some(group) = state.groups.get_mut(group_id) {
            group.poll(Instant::now());
            let simple = generation < 0 && member_id.is_empty();
            match group.state {
                GroupState::Dead => return Err(ResponseError::CoordinatorNotAvailable),
                // A group that only stores offsets (no members), as simple consumers use it.
                GroupState::Empty if simple => {}
                _ => {
                    group.check_member(member_id, instance_id, generation)?;
                    if group.state == GroupState::CompletingRebalance {
                        return Err(ResponseError::RebalanceInProgress);
                    }
                    if let Some(m) = group.members.get_mut(member_id) {
                        m.last_seen = Instant::now();
                    }
                }
            }
        } else if !(generation < 0 && member_id.is_empty()) {
            // Committing as a member of a group that does not exist.
            return Err(if generation < 0 {
                ResponseError::UnknownMemberId
            } else {
                ResponseError::IllegalGeneration
            });
        }
        let mut results = Vec::with_capacity(offsets.len());
        let mut records = Vec::new();
        for ((topic, partition), value) in offsets {
            let known = image
                .topic(&topic)
                .is_some_and(|t| t.partitions.contains_key(&partition));
            let result = if !known {
                Err(ResponseError::UnknownTopicOrPartition)
            } else if value
                .metadata
                .as_ref()
                .is_some_and(|m| m.len() > self.config.offset_metadata_max_bytes)
            {
                Err(ResponseError::OffsetMetadataTooLarge)
            } else {
                records.push(OffsetsRecord::Offset {
                    group: group_id.to_string(),
                    topic: topic.clone(),
                    partition,
                    value: Some(value),
                });
                Ok(())
            };
            results.push(((topic, partition), result));
        }
        if records.is_empty() {
            return Ok((results, None));
        }
        let durable = match self.write(group_id, &records) {
            Ok(at) => at,
            Err(e) => {
                for (_, r) in results.iter_mut().filter(|(_, r)| r.is_ok()) {
                    *r = Err(e);
                }
                return Ok((results, None));
            }
        };
        for record in records {
            apply(&mut state, record);
        }
        Ok((results, Some(durable)))
    }

    /// Committed offsets of a group: the requested partitions, or all when `None`.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        wanted: Option<Vec<(String, Vec<i32>)>>,
    ) -> Result<Vec<(String, i32, Option<CommittedOffset>)>, ResponseError> {
        self.check_group_id(group_id)?;
        let state = self.lock();
        let committed = state.offsets.get(group_id);
        Ok(match wanted {
            Some(topics) => topics
                .into_iter()
                .flat_map(|(topic, partitions)| {
                    partitions.into_iter().map(move |p| {
                        let value = committed.and_then(|c| c.get(&(topic.clone(), p))).cloned();
                        (topic.clone(), p, value)
                    })
                })
                .collect(),
            None => committed
                .into_iter()
                .flat_map(|c| c.iter().map(|((t, p), v)| (t.clone(), *p, Some(v.clone()))))
                .collect(),
        })
    }

    /// `(groups, members)` for metrics.
    pub fn counts(&self) -> (usize, usize) {
        let state = self.lock();
        (
            state.groups.len(),
            state.groups.values().map(|g| g.members.len()).sum(),
        )
    }

    /// `(group id, protocol type, state)` of every group.
    pub fn list_groups(&self) -> Vec<(String, String, &'static str)> {
        let state = self.lock();
        let mut ids: Vec<&String> = state.groups.keys().chain(state.offsets.keys()).collect();
        ids.sort();
        ids.dedup();
        ids.into_iter()
            .map(|id| match state.groups.get(id) {
                Some(g) => (
                    id.clone(),
                    g.protocol_type.clone().unwrap_or_default(),
                    g.state.name(),
                ),
                None => (id.clone(), String::new(), GroupState::Empty.name()),
            })
            .collect()
    }

    pub fn describe(&self, group_id: &str) -> Result<Option<GroupDescription>, ResponseError> {
        self.check_group_id(group_id)?;
        let mut state = self.lock();
        if let Some(g) = state.groups.get_mut(group_id) {
            g.poll(Instant::now());
        }
        let Some(g) = state.groups.get(group_id) else {
            return Ok(state
                .offsets
                .contains_key(group_id)
                .then(|| GroupDescription {
                    state: GroupState::Empty.name(),
                    protocol_type: String::new(),
                    protocol: String::new(),
                    members: Vec::new(),
                }));
        };
        let protocol = g.protocol.clone().unwrap_or_default();
        let stable = g.state == GroupState::Stable;
        Ok(Some(GroupDescription {
            state: g.state.name(),
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol: protocol.clone(),
            members: g
                .members
                .values()
                .map(|m| {
                    // Kafka shows metadata and assignment only once the group is stable.
                    let (metadata, assignment) = if stable {
                        (m.metadata_for(&protocol), m.assignment.clone())
                    } else {
                        Default::default()
                    };
                    (
                        m.id.clone(),
                        m.instance_id.clone(),
                        m.client_id.clone(),
                        m.client_host.clone(),
                        metadata,
                        assignment,
                    )
                })
                .collect(),
        }))
    }

    /// DeleteGroups for one group: only a group without members.
    pub fn delete_group(&self, group_id: &str) -> Result<(), ResponseError> {
        self.check_group_id(group_id)?;
        let mut state = self.lock();
        let exists = state.groups.contains_key(group_id) || state.offsets.contains_key(group_id);
        if !exists {
            return Err(ResponseError::GroupIdNotFound);
        }
        if state.groups.get(group_id).is_some_and(|g| !g.is_empty()) {
            return Err(ResponseError::NonEmptyGroup);
        }
        let mut records: Vec<OffsetsRecord> = state
            .offsets
            .get(group_id)
            .into_iter()
            .flat_map(|c| c.keys())
            .map(|(t, p)| OffsetsRecord::Offset {
                group: group_id.to_string(),
                topic: t.clone(),
                partition: *p,
                value: None,
            })
            .collect();
        records.push(OffsetsRecord::Group {
            group: group_id.to_string(),
            value: None,
        });
        self.write(group_id, &records)?;
        for r in records {
            apply(&mut state, r);
        }
        state.groups.remove(group_id);
        Ok(())
    }

    /// OffsetDelete: removes committed offsets of partitions the group does not consume.
    pub fn delete_offsets(
        &self,
        group_id: &str,
        partitions: Vec<TopicPartition>,
    ) -> Result<PartitionResults, ResponseError> {
        self.check_group_id(group_id)?;
        let mut state = self.lock();
        if !state.groups.contains_key(group_id) && !state.offsets.contains_key(group_id) {
            return Err(ResponseError::GroupIdNotFound);
        }
        let subscribed = state
            .groups
            .get(group_id)
            .map(subscribed_topics)
            .unwrap_or_default();
        let mut results = Vec::new();
        let mut records = Vec::new();
        for (topic, partition) in partitions {
            if subscribed.contains(&topic) {
                results.push((
                    (topic, partition),
                    Err(ResponseError::GroupSubscribedToTopic),
                ));
                continue;
            }
            if state
                .offsets
                .get(group_id)
                .is_some_and(|c| c.contains_key(&(topic.clone(), partition)))
            {
                records.push(OffsetsRecord::Offset {
                    group: group_id.to_string(),
                    topic: topic.clone(),
                    partition,
                    value: None,
                });
            }
            results.push(((topic, partition), Ok(())));
        }
        if !records.is_empty() {
            self.write(group_id, &records)?;
            for r in records {
                apply(&mut state, r);
            }
        }
        Ok(results)
    }

    /// Timers: session and rebalance timeouts, group metadata changes, offsets retention.
    pub fn tick(&self, expire_offsets: bool) {
        let mut state = self.lock();
        let now = Instant::now();
        let ids: Vec<String> = state.groups.keys().cloned().collect();
        for id in &ids {
            if let Some(g) = state.groups.get_mut(id) {
                g.poll(now);
            }
            self.persist_if_changed(&mut state, id);
        }
        if expire_offsets {
            self.expire_offsets(&mut state);
        }
    }

    /// Offsets of groups without members expire `offsets.retention.minutes` after their commit.
    fn expire_offsets(&self, state: &mut State) {
        let cutoff = now_ms() - self.config.offsets_retention_ms;
        let expired: Vec<(String, Vec<OffsetsRecord>)> = state
            .offsets
            .iter()
            .filter(|(g, _)| state.groups.get(*g).is_none_or(|g| g.is_empty()))
            .map(|(g, c)| {
                let records = c
                    .iter()
                    .filter(|(_, v)| v.commit_timestamp < cutoff)
                    .map(|((t, p), _)| OffsetsRecord::Offset {
                        group: g.clone(),
                        topic: t.clone(),
                        partition: *p,
                        value: None,
                    })
                    .collect::<Vec<_>>();
                (g.clone(), records)
            })
            .filter(|(_, r)| !r.is_empty())
            .collect();
        for (group, records) in expired {
            tracing::info!(%group, partitions = records.len(), "committed offsets expired");
            if self.write(&group, &records).is_ok() {
                records.into_iter().for_each(|r| apply(state, r));
            }
        }
    }

    /// Writes a group's metadata when it settled into a new generation or became empty.
    fn persist_if_changed(&self, state: &mut State, group_id: &str) {
        let Some(group) = state.groups.get(group_id) else {
            return;
        };
        if !matches!(group.state, GroupState::Stable | GroupState::Empty) {
            return;
        }
        let stored = group.to_stored();
        if state.persisted.get(group_id) == Some(&stored) {
            return;
        }
        let record = OffsetsRecord::Group {
            group: group_id.to_string(),
            value: Some(stored),
        };
        if let Err(e) = self.write(group_id, std::slice::from_ref(&record)) {
            tracing::warn!(group = group_id, error = ?e, "cannot store group metadata");
            return;
        }
        apply(state, record);
    }

    /// Appends records to the group's offsets partition.
    fn write(&self, group_id: &str, records: &[OffsetsRecord]) -> Result<DurableAt, ResponseError> {
        let partition = self
            .replicas
            .get(OFFSETS_TOPIC, self.partition_of(group_id))
            .ok_or(ResponseError::CoordinatorNotAvailable)?;
        let batch = encode_batch(records, now_ms());
        match partition.append_as_leader(&batch, 1, now_ms()) {
            Ok(outcome) => {
                let end = match outcome {
                    crate::replica::AppendOutcome::Appended(info) => info.last_offset + 1,
                    crate::replica::AppendOutcome::Duplicate(meta) => meta.last_offset + 1,
                };
                Ok((partition, end))
            }
            Err(e) => {
                tracing::error!(group = group_id, error = %e, "offsets topic write failed");
                Err(match e.kafka_error() {
                    ResponseError::MessageTooLarge | ResponseError::RecordListTooLarge => {
                        ResponseError::InvalidCommitOffsetSize
                    }
                    _ => ResponseError::CoordinatorNotAvailable,
                })
            }
        }
    }

    /// Ticks every group until shutdown: timeouts take effect without any request.
    pub async fn run_timers(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut last_expiry = Instant::now();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = crate::shutdown::stopped(&mut shutdown) => return,
            }
            let expire = last_expiry.elapsed() >= self.config.offsets_retention_check_interval;
            if expire {
                last_expiry = Instant::now();
            }
            let me = self.clone();
            let _ = tokio::task::spawn_blocking(move || me.tick(expire)).await;
        }
    }
}

fn refused_sync(e: ResponseError) -> oneshot::Receiver<SyncResult> {
    let (tx, rx) = oneshot::channel();
    let _ = tx.send(SyncResult::error(e));
    rx
}

fn apply(state: &mut State, record: OffsetsRecord) {
    match record {
        OffsetsRecord::Offset {
            group,
            topic,
            partition,
            value: Some(v),
        } => {
            state
                .offsets
                .entry(group)
                .or_default()
                .insert((topic, partition), v);
        }
        OffsetsRecord::Offset {
            group,
            topic,
            partition,
            value: None,
        } => {
            if let Some(c) = state.offsets.get_mut(&group) {
                c.remove(&(topic, partition));
                if c.is_empty() {
                    state.offsets.remove(&group);
                }
            }
        }
        OffsetsRecord::Group {
            group,
            value: Some(v),
        } => {
            state.persisted.insert(group, v);
        }
        OffsetsRecord::Group { group, value: None } => {
            state.persisted.remove(&group);
        }
    }
}

/// Topics the group's members subscribe to, from the consumer protocol's subscriptions.
fn subscribed_topics(group: &Group) -> Vec<String> {
    use kafka_protocol::messages::ConsumerProtocolSubscription;
    use kafka_protocol::protocol::Decodable;
    if group.protocol_type.as_deref() != Some("consumer") {
        return Vec::new();
    }
    let protocol = group.protocol.clone().unwrap_or_default();
    let mut topics = Vec::new();
    for m in group.members.values() {
        let mut meta = m.metadata_for(&protocol);
        if meta.len() < 2 {
            continue;
        }
        let version = i16::from_be_bytes([meta[0], meta[1]]);
        bytes::Buf::advance(&mut meta, 2);
        if let Ok(sub) = ConsumerProtocolSubscription::decode(&mut meta, version.clamp(0, 3)) {
            topics.extend(sub.topics.into_iter().map(|t| t.to_string()));
        }
    }
    topics
}

/// Every record of an offsets partition, decoded.
fn read_all(partition: &Partition) -> Result<Vec<OffsetsRecord>, LogError> {
    let mut out = Vec::new();
    let mut offset = partition.log_start_offset();
    let end = partition.log_end_offset();
    while offset < end {
        let read = partition.log().read(offset, 1 << 20, end, true)?;
        if read.records.is_empty() {
            break;
        }
        let mut buf = read.records.clone();
        let sets =
            kafka_protocol::records::RecordBatchDecoder::decode_all(&mut buf).map_err(|e| {
                LogError::Corrupt {
                    path: partition.log().dir().to_path_buf(),
                    position: offset as u64,
                    reason: format!("offsets topic batch: {e:#}"),
                }
            })?;
        let mut next = offset;
        for set in sets {
            for r in set.records {
                next = next.max(r.offset + 1);
                if r.offset < offset {
                    continue;
                }
                if let Some(key) = r.key.as_deref() {
                    if let Some(rec) = OffsetsRecord::decode(key, r.value.as_deref()) {
                        out.push(rec);
                    }
                }
            }
        }
        if next <= offset {
            break;
        }
        offset = next;
    }
    Ok(out)
}

impl crate::metadata::MetadataListener for GroupCoordinator {
    fn on_image_loaded(&self, image: &MetadataImage) {
        self.follow_leadership(image);
    }

    fn on_records(&self, image: &MetadataImage, records: &[crate::metadata::MetadataRecord]) {
        use crate::metadata::MetadataRecord as R;
        let relevant = records.iter().any(|r| {
            matches!(
                r,
                R::CreatePartition { .. } | R::PartitionChange { .. } | R::DeleteTopic { .. }
            )
        });
        if relevant {
            self.follow_leadership(image);
        }
    }
}
