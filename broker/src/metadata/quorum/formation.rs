//! Forming the cluster once, and joining it (see the rules in the `quorum` module doc).
//!
//! [`decide`] is the pure decision for a broker without Raft state; [`run`] is the loop that
//! probes peers, applies the decision and retries with backoff until this broker is a member
//! at its current address, then keeps checking at a slow pace.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Weak;
use std::time::Duration;

use openraft::error::{InitializeError, RaftError};
use openraft::BasicNode;

use super::network::STATUS_PATH;
use super::network::{codes, JoinRequest, JoinResponse, QuorumStatus, StatusRequest, JOIN_PATH};
use super::types::QuorumError;
use super::voters::majority;
use super::{Quorum, Standing};

/// What a bootstrap broker answered to a status probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Answer(QuorumStatus),
    /// It belongs to another cluster: it does not count for anything.
    Foreign(String),
    NoAnswer(String),
}

/// What a broker without Raft state does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Initialize a new cluster with this broker as its only voter.
    Found,
    /// A cluster exists: ask to join at these addresses (leaders first).
    Join(Vec<String>),
    Wait(String),
}

/// Decides for broker `me`, which has no Raft state, from the answers of the other bootstrap
/// brokers.
pub fn decide(me: i32, bootstrap: &[(i32, String)], answers: &[(i32, Probe)]) -> Decision {
    if bootstrap.is_empty() {
        return Decision::Found;
    }
    let addr_of: BTreeMap<i32, &str> = bootstrap.iter().map(|(i, a)| (*i, a.as_str())).collect();
    let mut targets = Vec::new();
    for (_, probe) in answers {
        if let Probe::Answer(s) = probe {
            if let Some((_, leader)) = &s.leader {
                targets.push(leader.clone());
            }
        }
    }
    for (id, probe) in answers {
        if let Probe::Answer(s) = probe {
            if s.has_state || s.leader.is_some() {
                if let Some(addr) = addr_of.get(id) {
                    targets.push(addr.to_string());
                }
            }
        }
    }
    if !targets.is_empty() {
        let mut seen = BTreeSet::new();
        targets.retain(|t| seen.insert(t.clone()));
        return Decision::Join(targets);
    }
    let founder = bootstrap.iter().map(|(i, _)| *i).min().unwrap_or(me);
    if me != founder {
        return Decision::Wait(format!(
            "waiting for broker {founder} (lowest bootstrap id) to form the cluster"
        ));
    }
    let confirmed_empty = 1 + answers
        .iter()
        .filter(|(id, p)| {
            *id != me
                && addr_of.contains_key(id)
                && matches!(p, Probe::Answer(s) if !s.has_state && s.leader.is_none())
        })
        .count();
    let needed = majority(bootstrap.len());
    if confirmed_empty >= needed {
        Decision::Found
    } else {
        Decision::Wait(format!(
            "{confirmed_empty} of {} bootstrap brokers (this one included) confirmed they hold no \
             cluster state, {needed} needed to form the cluster",
            bootstrap.len()
        ))
    }
}

/// What one round of [`run`] achieved.
#[derive(Debug)]
pub(crate) enum Step {
    /// A member at the current address: nothing to do.
    Member,
    /// Formed a cluster, or changed this broker's own membership; check again soon.
    Progress(String),
    /// The leader accepted the join; the membership takes a moment to reach this broker.
    Joined(String),
    /// Nothing possible yet.
    Waiting(String),
}

/// Exponential backoff with jitter.
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            current: min,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.current = self.min;
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        // Up to +50%, so brokers started together do not probe in lockstep.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        base + base.mul_f64(f64::from(nanos % 500) / 1000.0)
    }
}

/// Forms or joins the cluster, then keeps this broker's membership right (address changes,
/// removal). Ends when the quorum is dropped.
pub(crate) async fn run(quorum: Weak<Quorum>) {
    let (t, mut backoff) = match quorum.upgrade() {
        Some(q) => {
            let t = q.cfg.election_timeout;
            (t, Backoff::new(t / 4, (t * 4).max(Duration::from_secs(2))))
        }
        None => return,
    };
    let mut last_wait = String::new();
    loop {
        let Some(q) = quorum.upgrade() else { return };
        let delay = match q.formation_step().await {
            Ok(Step::Member) => {
                backoff.reset();
                last_wait.clear();
                t * 2
            }
            Ok(Step::Progress(what)) => {
                tracing::info!(broker = q.cfg.node_id, "metadata quorum: {what}");
                backoff.reset();
                t / 4
            }
            Ok(Step::Joined(why) | Step::Waiting(why)) => {
                if why != last_wait {
                    tracing::info!(broker = q.cfg.node_id, "metadata quorum: {why}");
                    last_wait = why;
                }
                backoff.next_delay()
            }
            Err(e) => {
                tracing::warn!(broker = q.cfg.node_id, error = %e, "metadata quorum: forming or joining failed");
                backoff.next_delay()
            }
        };
        drop(q);
        tokio::time::sleep(delay).await;
    }
}

impl Quorum {
    /// One round of forming or joining.
    pub(crate) async fn formation_step(&self) -> Result<Step, QuorumError> {
        let at_my_address = self
            .members()
            .get(&self.cfg.node_id)
            .is_some_and(|a| *a == self.cfg.http_address);
        // The local membership may come from an entry the leader never committed (this broker
        // led before a restart and proposed its new address); only a leader that reaches this
        // broker proves that the cluster has the address. Without one, ask again.
        // Moves a fresh broker that has caught up to voting.
        self.may_vote();
        let joined = self.standing() != Standing::AwaitingJoin;
        if at_my_address && self.leader_reaches_me() && joined {
            return Ok(Step::Member);
        }
        let has_state = self.raft.is_initialized().await?;
        if self.cfg.bootstrap.is_empty() && !has_state {
            return self.found().await;
        }
        if has_state {
            let peers = self.bootstrap_peers().map(|(_, a)| a.clone()).collect();
            return self.join_through(peers).await;
        }
        let answers = self.probe_bootstrap().await;
        match decide(self.cfg.node_id, &self.cfg.bootstrap, &answers) {
            Decision::Found => self.found().await,
            Decision::Join(targets) => self.join_through(targets).await,
            Decision::Wait(why) => Ok(Step::Waiting(why)),
        }
    }

    fn bootstrap_peers(&self) -> impl Iterator<Item = &(i32, String)> {
        let me = self.cfg.node_id;
        self.cfg.bootstrap.iter().filter(move |(id, _)| *id != me)
    }

    /// Initializes a cluster with this broker as the only voter.
    async fn found(&self) -> Result<Step, QuorumError> {
        let nodes = BTreeMap::from([(self.id, BasicNode::new(&self.cfg.http_address))]);
        match self.raft.initialize(nodes).await {
            Ok(()) => {
                *self.lock_standing() = Standing::Voting;
                Ok(Step::Progress(format!(
                    "formed cluster `{}` with broker {} as its first voter",
                    self.cfg.cluster_id, self.cfg.node_id
                )))
            }
            // State appeared meanwhile (a leader reached us): join instead, next round.
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
                Ok(Step::Progress("already initialized".into()))
            }
            Err(RaftError::APIError(e)) => Err(QuorumError::InvalidMembership(e.to_string())),
            Err(RaftError::Fatal(f)) => Err(f.into()),
        }
    }

    /// Asks the leader (found through `targets`) to have this broker in the membership at its
    /// current address.
    async fn join_through(&self, targets: Vec<String>) -> Result<Step, QuorumError> {
        let request = JoinRequest {
            cluster_id: self.cfg.cluster_id.clone(),
            id: self.cfg.node_id,
            http_address: self.cfg.http_address.clone(),
            fresh: self.is_fresh(),
        };
        if self.is_leader() {
            if let JoinResponse::Joined { .. } = self.handle_join(request.clone()).await? {
                return Ok(Step::Progress("updated this broker's own address".into()));
            }
        }
        let mut order: Vec<String> = Vec::new();
        if let Some((leader, addr)) = self.leader() {
            if leader != self.cfg.node_id && !addr.is_empty() {
                order.push(addr);
            }
        }
        order.extend(targets);
        let mut tried = BTreeSet::new();
        let mut failures = Vec::new();
        let mut i = 0;
        // Bounded: every answer may name a leader to try next.
        while i < order.len() && tried.len() < 16 {
            let addr = order[i].clone();
            i += 1;
            if addr == self.cfg.http_address || !tried.insert(addr.clone()) {
                continue;
            }
            let answer = self
                .rpc
                .call::<_, JoinResponse>(&addr, JOIN_PATH, &request, self.join_timeout())
                .await;
            match answer {
                Ok(JoinResponse::Joined { catch_up_to }) => {
                    self.joined(catch_up_to);
                    return Ok(Step::Joined(format!("joined the cluster through {addr}")));
                }
                Ok(JoinResponse::NotLeader { leader }) => {
                    if let Some((_, leader_addr)) = leader {
                        order.push(leader_addr);
                    }
                }
                Err(e) if e.remote_code() == Some(codes::CLUSTER_ID_MISMATCH) => {
                    tracing::error!(peer = %addr, error = %e, "a bootstrap broker is in another cluster");
                    failures.push(e.to_string());
                }
                Err(e) => failures.push(e.to_string()),
            }
        }
        Ok(Step::Waiting(if failures.is_empty() {
            "no leader known yet to join through".to_string()
        } else {
            format!("could not join yet: {}", failures.join("; "))
        }))
    }

    /// Asks every other bootstrap broker for its status, concurrently.
    async fn probe_bootstrap(&self) -> Vec<(i32, Probe)> {
        let mut probes = tokio::task::JoinSet::new();
        let timeout = self.cfg.election_timeout;
        for (id, addr) in self.bootstrap_peers() {
            let (id, addr, rpc) = (*id, addr.clone(), self.rpc.clone());
            let request = StatusRequest {
                cluster_id: self.cfg.cluster_id.clone(),
            };
            let cluster_id = self.cfg.cluster_id.clone();
            probes.spawn(async move {
                let probe = match rpc
                    .call::<_, QuorumStatus>(&addr, STATUS_PATH, &request, timeout)
                    .await
                {
                    Ok(s) if s.cluster_id != cluster_id => Probe::Foreign(s.cluster_id),
                    Ok(s) if s.node_id != id => {
                        Probe::NoAnswer(format!("{addr} is broker {}, not broker {id}", s.node_id))
                    }
                    Ok(s) => Probe::Answer(s),
                    Err(e) if e.remote_code() == Some(codes::CLUSTER_ID_MISMATCH) => {
                        Probe::Foreign(e.to_string())
                    }
                    Err(e) => Probe::NoAnswer(e.to_string()),
                };
                (id, probe)
            });
        }
        let mut answers = Vec::new();
        while let Some(done) = probes.join_next().await {
            match done {
                Ok((id, probe)) => {
                    if let Probe::Foreign(other) = &probe {
                        tracing::error!(peer = id, other = %other, "a bootstrap broker is in another cluster");
                    }
                    answers.push((id, probe));
                }
                Err(e) => tracing::warn!(error = %e, "a status probe failed"),
            }
        }
        answers.sort_by_key(|(id, _)| *id);
        answers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bootstrap(n: i32) -> Vec<(i32, String)> {
        (0..n).map(|i| (i, format!("h{i}:1"))).collect()
    }

    fn status(id: i32, has_state: bool, leader: Option<i32>) -> Probe {
        Probe::Answer(QuorumStatus {
            cluster_id: "c".into(),
            node_id: id,
            has_state,
            leader: leader.map(|l| (l, format!("h{l}:1"))),
            voters: BTreeSet::new(),
        })
    }

    #[test]
    fn founder_needs_a_majority_of_empty_brokers() {
        let b = bootstrap(3);
        // Nobody answered: a lost disk on the founder must not found a second cluster.
        let silent = vec![
            (1, Probe::NoAnswer("down".into())),
            (2, Probe::NoAnswer("down".into())),
        ];
        assert!(matches!(decide(0, &b, &silent), Decision::Wait(_)));
        // One more empty broker makes a majority of 3.
        let one = vec![
            (1, status(1, false, None)),
            (2, Probe::NoAnswer("down".into())),
        ];
        assert_eq!(decide(0, &b, &one), Decision::Found);
        // A broker of another cluster does not count.
        let foreign = vec![
            (1, Probe::Foreign("x".into())),
            (2, Probe::NoAnswer("down".into())),
        ];
        assert!(matches!(decide(0, &b, &foreign), Decision::Wait(_)));
        // 5 brokers: 3 needed.
        let b5 = bootstrap(5);
        let two = vec![
            (1, status(1, false, None)),
            (2, Probe::NoAnswer("-".into())),
        ];
        assert!(matches!(decide(0, &b5, &two), Decision::Wait(_)));
    }

    #[test]
    fn any_sign_of_a_cluster_means_join() {
        let b = bootstrap(3);
        // Broker 2 holds state (the real cluster), broker 1 is empty: join, never found.
        let answers = vec![(1, status(1, false, None)), (2, status(2, true, None))];
        assert_eq!(decide(0, &b, &answers), Decision::Join(vec!["h2:1".into()]));
        // A known leader comes first.
        let answers = vec![(1, status(1, true, Some(2))), (2, status(2, true, Some(2)))];
        assert_eq!(
            decide(0, &b, &answers),
            Decision::Join(vec!["h2:1".into(), "h1:1".into()])
        );
    }

    #[test]
    fn only_the_lowest_id_founds() {
        let b = bootstrap(3);
        let answers = vec![(0, status(0, false, None)), (2, status(2, false, None))];
        assert!(matches!(decide(1, &b, &answers), Decision::Wait(_)));
        // A broker outside the bootstrap list never founds.
        assert!(matches!(decide(7, &b, &answers), Decision::Wait(_)));
        // No bootstrap list: a single-broker cluster.
        assert_eq!(decide(0, &[], &[]), Decision::Found);
    }

    #[test]
    fn backoff_grows_to_its_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let delays: Vec<Duration> = (0..5).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(100) && delays[0] < Duration::from_millis(150));
        assert!(delays[4] >= Duration::from_millis(400) && delays[4] < Duration::from_millis(600));
        b.reset();
        assert!(b.next_delay() < Duration::from_millis(150));
    }
}
