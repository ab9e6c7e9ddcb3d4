//! One consumer group under the classic rebalance protocol: its members, generation, state
//! and the join/sync barriers. Synchronous logic with the clock passed in; waiting callers are
//! answered through the oneshot senders stored on their member.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use tokio::sync::oneshot;

/// Kafka's group states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// What a JoinGroup caller receives.
#[derive(Debug, Clone)]
pub struct JoinResult {
    pub error: Option<ResponseError>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Every member's metadata for the chosen protocol; only the leader gets it.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinResult {
    pub fn error(error: ResponseError, member_id: &str) -> JoinResult {
        JoinResult {
            error: Some(error),
            generation: -1,
            protocol_type: None,
            protocol: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
        }
    }
}

/// What a SyncGroup caller receives.
#[derive(Debug, Clone)]
pub struct SyncResult {
    pub error: Option<ResponseError>,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub assignment: Bytes,
}

impl SyncResult {
    pub fn error(error: ResponseError) -> SyncResult {
        SyncResult {
            error: Some(error),
            protocol_type: None,
            protocol: None,
            assignment: Bytes::new(),
        }
    }
}

/// A group member.
#[derive(Debug)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    /// `(protocol name, metadata)` in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    pub last_seen: Instant,
    join_waiter: Option<oneshot::Sender<JoinResult>>,
    sync_waiter: Option<oneshot::Sender<SyncResult>>,
}

impl Member {
    pub fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

/// A join request, already validated for group-independent rules.
#[derive(Debug)]
pub struct JoinRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a new member must first get its id (MEMBER_ID_REQUIRED).
    pub require_known_member_id: bool,
}

/// A consumer group.
#[derive(Debug)]
pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED that have not joined yet, and when.
    pending: HashMap<String, Instant>,
    /// When the join phase ends even if not every member has rejoined.
    join_deadline: Option<Instant>,
    /// When the sync phase gives up on members that never sent SyncGroup.
    sync_deadline: Option<Instant>,
    /// Kafka's `group.initial.rebalance.delay.ms`: an empty group waits this long for more
    /// members before its first rebalance completes.
    initial_delay: Duration,
    initial_deadline: Option<Instant>,
    next_member_seq: u64,
}

impl Group {
    pub fn new(id: &str, initial_delay: Duration) -> Group {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: HashMap::new(),
            join_deadline: None,
            sync_deadline: None,
            initial_delay,
            initial_deadline: None,
            next_member_seq: 0,
        }
    }

    fn new_member_id(&mut self, client_id: &str) -> String {
        self.next_member_seq += 1;
        format!(
            "{client_id}-{}-{}",
            self.next_member_seq,
            uuid::Uuid::new_v4().simple()
        )
    }

    fn static_member(&self, instance_id: &str) -> Option<&Member> {
        self.members
            .values()
            .find(|m| m.instance_id.as_deref() == Some(instance_id))
    }

    /// Checks a request's member id and generation against the group, as Heartbeat, SyncGroup
    /// and OffsetCommit do.
    pub fn check_member(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), ResponseError> {
        if let Some(instance) = instance_id {
            if let Some(m) = self.static_member(instance) {
                if m.id != member_id {
                    return Err(ResponseError::FencedInstanceId);
                }
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(ResponseError::UnknownMemberId);
        }
        if generation != self.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        Ok(())
    }

    /// Handles JoinGroup. The result comes through the returned receiver: at once, or when the
    /// join phase completes.
    pub fn join(&mut self, req: JoinRequest, now: Instant) -> oneshot::Receiver<JoinResult> {
        let (tx, rx) = oneshot::channel();
        if let Some(result) = self.join_refusal(&req) {
            let _ = tx.send(result);
            return rx;
        }
        let member_id = if req.member_id.is_empty() {
            match req.instance_id.clone() {
                Some(instance) => match self.static_member(&instance).map(|m| m.id.clone()) {
                    // A static member came back under a new member id: the old one is fenced.
                    Some(old) => {
                        let new_id = self.new_member_id(&req.client_id);
                        let mut member =
                            self.members.remove(&old).expect("static member is present");
                        if let Some(w) = member.join_waiter.take() {
                            let _ =
                                w.send(JoinResult::error(ResponseError::FencedInstanceId, &old));
                        }
                        if let Some(w) = member.sync_waiter.take() {
                            let _ = w.send(SyncResult::error(ResponseError::FencedInstanceId));
                        }
                        member.id = new_id.clone();
                        if self.leader.as_deref() == Some(old.as_str()) {
                            self.leader = Some(new_id.clone());
                        }
                        self.members.insert(new_id.clone(), member);
                        new_id
                    }
                    None => self.new_member_id(&req.client_id),
                },
                None if req.require_known_member_id => {
                    let id = self.new_member_id(&req.client_id);
                    self.pending.insert(id.clone(), now);
                    let _ = tx.send(JoinResult::error(ResponseError::MemberIdRequired, &id));
                    return rx;
                }
                None => self.new_member_id(&req.client_id),
            }
        } else {
            req.member_id.clone()
        };
        if !self.members.contains_key(&member_id)
            && self.pending.remove(&member_id).is_none()
            && !req.member_id.is_empty()
        {
            let _ = tx.send(JoinResult::error(
                ResponseError::UnknownMemberId,
                &member_id,
            ));
            return rx;
        }
        // A known member in a settled group whose protocols did not change gets the current
        // generation back without a rebalance (the leader always triggers one, to reassign).
        if let Some(m) = self.members.get_mut(&member_id) {
            let unchanged = m.protocols == req.protocols;
            let settled = matches!(
                self.state,
                GroupState::Stable | GroupState::CompletingRebalance
            );
            if unchanged && settled && self.leader.as_deref() != Some(member_id.as_str()) {
                m.last_seen = now;
                let _ = tx.send(self.join_result(&member_id, false));
                return rx;
            }
        }
        let member = self
            .members
            .entry(member_id.clone())
            .or_insert_with(|| Member {
                id: member_id.clone(),
                instance_id: req.instance_id.clone(),
                client_id: req.client_id.clone(),
                client_host: req.client_host.clone(),
                session_timeout: req.session_timeout,
                rebalance_timeout: req.rebalance_timeout,
                protocols: Vec::new(),
                assignment: Bytes::new(),
                last_seen: now,
                join_waiter: None,
                sync_waiter: None,
            });
        member.protocols = req.protocols;
        member.session_timeout = req.session_timeout;
        member.rebalance_timeout = req.rebalance_timeout;
        member.last_seen = now;
        if let Some(old) = member.join_waiter.replace(tx) {
            let _ = old.send(JoinResult::error(
                ResponseError::UnknownMemberId,
                &member_id,
            ));
        }
        if self.protocol_type.is_none() {
            self.protocol_type = Some(req.protocol_type);
        }
        if self.state != GroupState::PreparingRebalance {
            self.prepare_rebalance(now);
        }
        self.poll(now);
        rx
    }

    /// Why a join cannot be accepted at all, if it cannot.
    fn join_refusal(&self, req: &JoinRequest) -> Option<JoinResult> {
        let refuse = |e| Some(JoinResult::error(e, &req.member_id));
        if self.state == GroupState::Dead {
            return refuse(ResponseError::CoordinatorNotAvailable);
        }
        if req.protocols.is_empty() || req.protocol_type.is_empty() {
            return refuse(ResponseError::InconsistentGroupProtocol);
        }
        if !self.members.is_empty() {
            if self.protocol_type.as_deref() != Some(req.protocol_type.as_str()) {
                return refuse(ResponseError::InconsistentGroupProtocol);
            }
            let shared = req.protocols.iter().any(|(name, _)| {
                self.members
                    .values()
                    .filter(|m| m.id != req.member_id)
                    .all(|m| m.protocols.iter().any(|(n, _)| n == name))
            });
            if !shared {
                return refuse(ResponseError::InconsistentGroupProtocol);
            }
        }
        if let (Some(instance), false) = (&req.instance_id, req.member_id.is_empty()) {
            if let Some(m) = self.static_member(instance) {
                if m.id != req.member_id {
                    return refuse(ResponseError::FencedInstanceId);
                }
            }
        }
        None
    }

    /// Abandons the generation being formed and starts another rebalance (its metadata could
    /// not be stored).
    pub fn rebalance(&mut self, now: Instant) {
        if !self.members.is_empty() {
            self.prepare_rebalance(now);
        }
    }

    /// The group's rebalance timeout: the longest any member asked for.
    fn rebalance_timeout(&self) -> Duration {
        self.members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default()
    }

    /// Starts a rebalance: members must rejoin within the rebalance timeout.
    fn prepare_rebalance(&mut self, now: Instant) {
        // Members waiting for their assignment will not get one from this generation.
        for m in self.members.values_mut() {
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(SyncResult::error(ResponseError::RebalanceInProgress));
            }
        }
        let rebalance_timeout = self.rebalance_timeout();
        let delay = if self.state == GroupState::Empty {
            self.initial_delay.min(rebalance_timeout)
        } else {
            Duration::ZERO
        };
        self.state = GroupState::PreparingRebalance;
        self.sync_deadline = None;
        self.join_deadline = Some(now + rebalance_timeout);
        self.initial_deadline = Some(now + delay);
    }

    /// Advances timers: completes a join phase, expires members whose session lapsed and
    /// members that never synced. Call on every request and periodically.
    pub fn poll(&mut self, now: Instant) {
        // Pending member ids that never came back.
        self.pending
            .retain(|_, since| now.duration_since(*since) < Duration::from_secs(300));
        // Session expiry, except for members parked in a join (they are waiting on us).
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                m.join_waiter.is_none()
                    && m.sync_waiter.is_none()
                    && now.duration_since(m.last_seen) > m.session_timeout
            })
            .map(|m| m.id.clone())
            .collect();
        if !expired.is_empty() {
            tracing::info!(group = %self.id, members = ?expired, "session timeout; removing members");
            self.remove_members(&expired, now);
        }
        if self.state == GroupState::CompletingRebalance
            && self.sync_deadline.is_some_and(|d| now >= d)
        {
            let lagging: Vec<String> = self
                .members
                .values()
                .filter(|m| m.sync_waiter.is_none())
                .map(|m| m.id.clone())
                .collect();
            tracing::info!(group = %self.id, members = ?lagging, "no SyncGroup within the rebalance timeout");
            self.remove_members(&lagging, now);
        }
        if self.state == GroupState::PreparingRebalance {
            let all_joined =
                self.members.values().all(|m| m.join_waiter.is_some()) && self.pending.is_empty();
            let delay_over = self.initial_deadline.is_none_or(|d| now >= d);
            let timed_out = self.join_deadline.is_some_and(|d| now >= d);
            if (all_joined && delay_over) || timed_out {
                self.complete_join(now);
            }
        }
    }

    /// Removes members (left, expired or fenced) and rebalances the rest.
    pub fn remove_members(&mut self, ids: &[String], now: Instant) {
        for id in ids {
            if let Some(mut m) = self.members.remove(id) {
                if let Some(w) = m.join_waiter.take() {
                    let _ = w.send(JoinResult::error(ResponseError::UnknownMemberId, id));
                }
                if let Some(w) = m.sync_waiter.take() {
                    let _ = w.send(SyncResult::error(ResponseError::UnknownMemberId));
                }
            }
        }
        if self
            .leader
            .as_ref()
            .is_some_and(|l| !self.members.contains_key(l))
        {
            self.leader = None;
        }
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                if self.members.is_empty() {
                    self.become_empty();
                } else {
                    self.prepare_rebalance(now);
                }
            }
            GroupState::PreparingRebalance => self.poll_join_only(now),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    fn poll_join_only(&mut self, now: Instant) {
        if self.members.is_empty() {
            self.generation += 1;
            self.become_empty();
            return;
        }
        if self.members.values().all(|m| m.join_waiter.is_some()) && self.pending.is_empty() {
            self.complete_join(now);
        }
    }

    fn become_empty(&mut self) {
        self.state = GroupState::Empty;
        self.protocol = None;
        self.protocol_type = None;
        self.leader = None;
        self.join_deadline = None;
        self.sync_deadline = None;
    }

    /// Ends the join phase: members that did not rejoin are dropped, a protocol and a leader
    /// are chosen, and every waiting member is answered with the new generation.
    fn complete_join(&mut self, now: Instant) {
        let absent: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join_waiter.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in &absent {
            self.members.remove(id);
        }
        self.pending.clear();
        self.join_deadline = None;
        self.initial_deadline = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.become_empty();
            return;
        }
        self.protocol = choose_protocol(&self.members);
        if self
            .leader
            .as_ref()
            .is_none_or(|l| !self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.state = GroupState::CompletingRebalance;
        let rebalance_timeout = self.rebalance_timeout();
        self.sync_deadline = Some(now + rebalance_timeout);
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let is_leader = self.leader.as_deref() == Some(id.as_str());
            let result = self.join_result(&id, is_leader);
            let member = self
                .members
                .get_mut(&id)
                .expect("id comes from the member list");
            member.last_seen = now;
            if let Some(w) = member.join_waiter.take() {
                let _ = w.send(result);
            }
        }
    }

    fn join_result(&self, member_id: &str, with_members: bool) -> JoinResult {
        let protocol = self.protocol.clone();
        let members = if with_members {
            let p = protocol.clone().unwrap_or_default();
            self.members
                .values()
                .map(|m| (m.id.clone(), m.instance_id.clone(), m.metadata_for(&p)))
                .collect()
        } else {
            Vec::new()
        };
        JoinResult {
            error: None,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol,
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members,
        }
    }

    /// Handles SyncGroup. The leader's assignments complete the rebalance for everyone.
    pub fn sync(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
    ) -> oneshot::Receiver<SyncResult> {
        let (tx, rx) = oneshot::channel();
        self.poll(now);
        if let Err(e) = self.check_member(member_id, instance_id, generation) {
            let _ = tx.send(SyncResult::error(e));
            return rx;
        }
        match self.state {
            GroupState::PreparingRebalance => {
                let _ = tx.send(SyncResult::error(ResponseError::RebalanceInProgress));
            }
            GroupState::Stable => {
                let assignment = self.members[member_id].assignment.clone();
                let _ = tx.send(self.sync_result(assignment));
            }
            GroupState::CompletingRebalance => {
                let member = self.members.get_mut(member_id).expect("checked above");
                member.last_seen = now;
                member.sync_waiter = Some(tx);
                if self.leader.as_deref() == Some(member_id) {
                    let mut by_member: HashMap<String, Bytes> = assignments.into_iter().collect();
                    self.state = GroupState::Stable;
                    self.sync_deadline = None;
                    let results: Vec<(String, SyncResult)> = self
                        .members
                        .keys()
                        .map(|id| {
                            (
                                id.clone(),
                                self.sync_result(by_member.remove(id).unwrap_or_default()),
                            )
                        })
                        .collect();
                    for (id, result) in results {
                        let m = self
                            .members
                            .get_mut(&id)
                            .expect("id comes from the member list");
                        m.assignment = result.assignment.clone();
                        if let Some(w) = m.sync_waiter.take() {
                            let _ = w.send(result);
                        }
                    }
                }
            }
            GroupState::Empty | GroupState::Dead => {
                let _ = tx.send(SyncResult::error(ResponseError::UnknownMemberId));
            }
        }
        rx
    }

    fn sync_result(&self, assignment: Bytes) -> SyncResult {
        SyncResult {
            error: None,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            assignment,
        }
    }

    /// Handles Heartbeat.
    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> Result<(), ResponseError> {
        self.poll(now);
        if self.state == GroupState::Dead {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        self.check_member(member_id, instance_id, generation)?;
        if let Some(m) = self.members.get_mut(member_id) {
            m.last_seen = now;
        }
        match self.state {
            GroupState::PreparingRebalance => Err(ResponseError::RebalanceInProgress),
            _ => Ok(()),
        }
    }

    /// Handles one member of LeaveGroup.
    pub fn leave(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        now: Instant,
    ) -> Result<(), ResponseError> {
        let id = match (member_id.is_empty(), instance_id) {
            (true, Some(instance)) => self
                .static_member(instance)
                .map(|m| m.id.clone())
                .ok_or(ResponseError::UnknownMemberId)?,
            _ => {
                if let Some(instance) = instance_id {
                    if self
                        .static_member(instance)
                        .is_some_and(|m| m.id != member_id)
                    {
                        return Err(ResponseError::FencedInstanceId);
                    }
                }
                if self.pending.remove(member_id).is_some() {
                    return Ok(());
                }
                if !self.members.contains_key(member_id) {
                    return Err(ResponseError::UnknownMemberId);
                }
                member_id.to_string()
            }
        };
        self.remove_members(&[id], now);
        Ok(())
    }

    /// Whether the group has no live members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.pending.is_empty()
    }

    /// Restores a group from its stored metadata (after a restart): it keeps its generation,
    /// protocol and members, which must heartbeat within their session timeout to stay.
    pub fn restore(&mut self, stored: &StoredGroup, now: Instant) {
        self.generation = stored.generation;
        self.protocol_type = stored.protocol_type.clone();
        self.protocol = stored.protocol.clone();
        self.leader = stored.leader.clone();
        self.members = stored
            .members
            .iter()
            .map(|m| {
                let member = Member {
                    id: m.member_id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout: Duration::from_millis(m.session_timeout_ms),
                    rebalance_timeout: Duration::from_millis(m.rebalance_timeout_ms),
                    protocols: vec![(
                        stored.protocol.clone().unwrap_or_default(),
                        Bytes::from(m.subscription.clone()),
                    )],
                    assignment: Bytes::from(m.assignment.clone()),
                    last_seen: now,
                    join_waiter: None,
                    sync_waiter: None,
                };
                (m.member_id.clone(), member)
            })
            .collect();
        self.state = if self.members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
    }

    /// The group's metadata as stored in the offsets topic.
    pub fn to_stored(&self) -> StoredGroup {
        let protocol = self.protocol.clone().unwrap_or_default();
        StoredGroup {
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            members: self
                .members
                .values()
                .map(|m| StoredMember {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: m.session_timeout.as_millis() as u64,
                    rebalance_timeout_ms: m.rebalance_timeout.as_millis() as u64,
                    subscription: m.metadata_for(&protocol).to_vec(),
                    assignment: m.assignment.to_vec(),
                })
                .collect(),
        }
    }
}

/// Group metadata as persisted (written when a generation is settled).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredGroup {
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: Vec<StoredMember>,
}

/// One member as persisted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: u64,
    pub rebalance_timeout_ms: u64,
    pub subscription: Vec<u8>,
    pub assignment: Vec<u8>,
}

/// Kafka's choice: among protocols every member supports, the one most members list first
/// (ties broken by the order of the first member's list).
pub fn choose_protocol(members: &BTreeMap<String, Member>) -> Option<String> {
    let first = members.values().next()?;
    let candidates: Vec<&String> = first
        .protocols
        .iter()
        .map(|(n, _)| n)
        .filter(|n| {
            members
                .values()
                .all(|m| m.protocols.iter().any(|(p, _)| p == *n))
        })
        .collect();
    let votes = |name: &String| {
        members
            .values()
            .filter(|m| {
                m.protocols
                    .iter()
                    .find(|(p, _)| candidates.contains(&p))
                    .is_some_and(|(p, _)| p == name)
            })
            .count()
    };
    let mut best: Option<(&String, usize)> = None;
    for c in &candidates {
        let v = votes(c);
        if best.is_none_or(|(_, bv)| v > bv) {
            best = Some((c, v));
        }
    }
    best.map(|(n, _)| n.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(member_id: &str, protocols: &[&str]) -> JoinRequest {
        JoinRequest {
            member_id: member_id.to_string(),
            instance_id: None,
            client_id: "c".into(),
            client_host: String::new(),
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(30),
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|p| (p.to_string(), Bytes::from(p.to_string())))
                .collect(),
            require_known_member_id: true,
        }
    }

    fn take<T>(rx: &mut oneshot::Receiver<T>) -> Option<T> {
        rx.try_recv().ok()
    }

    /// Joins a new member the v4+ way (MEMBER_ID_REQUIRED, then join with the id).
    fn join_new(g: &mut Group, now: Instant) -> (String, oneshot::Receiver<JoinResult>) {
        let first = take(&mut g.join(req("", &["range"]), now)).expect("answered at once");
        assert_eq!(first.error, Some(ResponseError::MemberIdRequired));
        let rx = g.join(req(&first.member_id, &["range"]), now);
        (first.member_id, rx)
    }

    #[test]
    fn two_members_form_a_generation_and_sync_assignments() {
        let now = Instant::now();
        let mut g = Group::new("g", Duration::ZERO);
        let (a, mut ja) = join_new(&mut g, now);
        // Alone and no initial delay: the first generation completes at once.
        let r = take(&mut ja).expect("join completed");
        assert_eq!(
            (r.generation, r.leader.as_str(), r.members.len()),
            (1, a.as_str(), 1)
        );
        let (b, mut jb) = join_new(&mut g, now);
        assert_eq!(g.state, GroupState::PreparingRebalance);
        assert!(
            take(&mut jb).is_none(),
            "waits for the existing member to rejoin"
        );
        assert_eq!(
            g.heartbeat(&a, None, 1, now),
            Err(ResponseError::RebalanceInProgress)
        );
        let mut ja = g.join(req(&a, &["range"]), now);
        let (ra, rb) = (take(&mut ja).unwrap(), take(&mut jb).unwrap());
        assert_eq!((ra.generation, rb.generation), (2, 2));
        assert_eq!(ra.members.len(), 2, "the leader gets every member");
        assert!(rb.members.is_empty());
        assert_eq!(ra.protocol.as_deref(), Some("range"));

        let mut sb = g.sync(&b, None, 2, vec![], now);
        assert!(take(&mut sb).is_none(), "followers wait for the leader");
        let assignments = vec![
            (a.clone(), Bytes::from_static(b"A")),
            (b.clone(), Bytes::from_static(b"B")),
        ];
        let mut sa = g.sync(&a, None, 2, assignments, now);
        assert_eq!(take(&mut sa).unwrap().assignment, Bytes::from_static(b"A"));
        assert_eq!(take(&mut sb).unwrap().assignment, Bytes::from_static(b"B"));
        assert_eq!(g.state, GroupState::Stable);
        assert_eq!(g.heartbeat(&b, None, 2, now), Ok(()));
        assert_eq!(
            g.heartbeat(&b, None, 1, now),
            Err(ResponseError::IllegalGeneration)
        );
        assert_eq!(
            g.heartbeat("nobody", None, 2, now),
            Err(ResponseError::UnknownMemberId)
        );
        let mut stale = g.sync(&b, None, 1, vec![], now);
        assert_eq!(
            take(&mut stale).unwrap().error,
            Some(ResponseError::IllegalGeneration)
        );
    }

    #[test]
    fn expired_sessions_and_leaves_rebalance_the_rest() {
        let now = Instant::now();
        let mut g = Group::new("g", Duration::ZERO);
        let (a, mut ja) = join_new(&mut g, now);
        take(&mut ja).unwrap();
        let (b, _jb) = join_new(&mut g, now);
        let _ja = g.join(req(&a, &["range"]), now);
        g.sync(&a, None, 2, vec![], now);
        assert_eq!(g.state, GroupState::Stable);
        // b keeps heartbeating, a goes silent past its session timeout.
        let later = now + Duration::from_secs(8);
        assert_eq!(g.heartbeat(&b, None, 2, later), Ok(()));
        g.poll(now + Duration::from_secs(11));
        assert!(!g.members.contains_key(&a));
        assert_eq!(g.state, GroupState::PreparingRebalance);
        let mut jb = g.join(req(&b, &["range"]), now + Duration::from_secs(11));
        let r = take(&mut jb).unwrap();
        assert_eq!((r.generation, r.leader.as_str()), (3, b.as_str()));
        assert_eq!(g.leave(&b, None, now + Duration::from_secs(12)), Ok(()));
        assert_eq!(g.state, GroupState::Empty);
        assert_eq!(g.leave(&b, None, now), Err(ResponseError::UnknownMemberId));
    }

    #[test]
    fn a_member_that_does_not_rejoin_is_dropped_at_the_rebalance_timeout() {
        let now = Instant::now();
        let mut g = Group::new("g", Duration::ZERO);
        let (a, mut ja) = join_new(&mut g, now);
        take(&mut ja).unwrap();
        let (b, mut jb) = join_new(&mut g, now);
        // `a` keeps its session alive but never rejoins.
        for s in [8, 16, 24] {
            let t = now + Duration::from_secs(s);
            assert_eq!(
                g.heartbeat(&a, None, 1, t),
                Err(ResponseError::RebalanceInProgress)
            );
        }
        g.poll(now + Duration::from_secs(29));
        assert!(take(&mut jb).is_none());
        g.poll(now + Duration::from_secs(31));
        let r = take(&mut jb).unwrap();
        assert_eq!(
            (r.generation, r.leader.as_str(), r.members.len()),
            (2, b.as_str(), 1)
        );
    }

    #[test]
    fn static_members_are_fenced_by_their_replacement() {
        let now = Instant::now();
        let mut g = Group::new("g", Duration::ZERO);
        let mut r = req("", &["range"]);
        r.instance_id = Some("i-1".into());
        let first = take(&mut g.join(r, now)).unwrap();
        assert_eq!(
            first.error, None,
            "static members need no MEMBER_ID_REQUIRED round"
        );
        g.sync(
            &first.member_id,
            Some("i-1"),
            1,
            vec![(first.member_id.clone(), Bytes::from_static(b"X"))],
            now,
        );
        let mut again = req("", &["range"]);
        again.instance_id = Some("i-1".into());
        let second = take(&mut g.join(again, now)).unwrap();
        assert_ne!(second.member_id, first.member_id);
        assert_eq!(
            g.heartbeat(&first.member_id, Some("i-1"), second.generation, now),
            Err(ResponseError::FencedInstanceId)
        );
        assert_eq!(g.members.len(), 1);
    }

    #[test]
    fn protocol_choice_and_inconsistent_protocols() {
        let now = Instant::now();
        let mut g = Group::new("g", Duration::ZERO);
        let (a, mut ja) = join_new(&mut g, now);
        take(&mut ja).unwrap();
        let mut other = req("", &["roundrobin"]);
        other.require_known_member_id = false;
        assert_eq!(
            take(&mut g.join(other, now)).unwrap().error,
            Some(ResponseError::InconsistentGroupProtocol)
        );
        let mut wrong_type = req(&a, &["range"]);
        wrong_type.protocol_type = "connect".into();
        assert_eq!(
            take(&mut g.join(wrong_type, now)).unwrap().error,
            Some(ResponseError::InconsistentGroupProtocol)
        );
        let members: BTreeMap<String, Member> = [
            ("1", &["sticky", "range"][..]),
            ("2", &["range", "sticky"]),
            ("3", &["range"]),
        ]
        .iter()
        .map(|(id, ps)| {
            let mut g = Group::new("x", Duration::ZERO);
            let mut r = req("", ps);
            r.require_known_member_id = false;
            drop(g.join(r, now));
            let mut m = g.members.into_values().next().unwrap();
            m.id = id.to_string();
            (id.to_string(), m)
        })
        .collect();
        assert_eq!(choose_protocol(&members).as_deref(), Some("range"));
    }
}
