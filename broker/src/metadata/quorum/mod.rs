//! The metadata quorum: a Raft log of metadata records (openraft 0.9) replicated between
//! brokers; every broker applies it to its
//! [`MetadataImage`](crate::metadata::image::MetadataImage), and the Raft leader is the
//! controller.
//!
//! # Layout
//! - `types`: Raft type config ([`TypeConfig`]), [`QuorumConfig`], [`QuorumError`].
//! - `log_store`: the durable Raft log, vote and commit point (files, fsync, torn tails).
//! - `state_machine`: applies entries to the image, publishes it, calls the listener;
//!   snapshots.
//! - `network` / `routes`: Raft RPC over HTTP (client / server), status and join endpoints.
//! - `formation`: forming the cluster once, joining it.
//! - `voters`: which brokers vote ([`choose_voters`], pure).
//!
//! # Forming and joining: the rules
//! 1. Every broker has the cluster id. It is stored in the quorum directory on first start; a
//!    directory of another cluster is refused at start. Every RPC carries the cluster id (and
//!    Raft RPCs the target node id); a broker of another cluster answers 409
//!    `cluster_id_mismatch` and never counts as a peer.
//! 2. No bootstrap list: a single-broker cluster. With no local Raft state, the broker
//!    initializes a cluster with itself as the only voter.
//! 3. With a bootstrap list, only the lowest id of the list (the founder) may initialize, and
//!    only when it has no local Raft state, a majority of the listed brokers (itself included)
//!    answered that they hold no state either, and no broker that answered holds state or
//!    knows a leader. Otherwise it keeps probing with backoff and joins like any other broker.
//!    So a founder that lost its disk never founds a second cluster while the brokers holding
//!    the real one are reachable, and it waits while they are not (it cannot tell "never
//!    formed" from "unreachable" without a majority). The guarantee assumes that all brokers
//!    have the same bootstrap list and that no majority of it lost its disks at once.
//! 4. Every other broker (and a founder that found a cluster) asks to join: `POST
//!    /internal/quorum/join` to the leader it knows, else to the bootstrap brokers; a
//!    non-leader answers with the leader's address. The leader adds the broker as a learner
//!    (or updates its address if it changed) and answers `Joined`. The broker retries with
//!    backoff until it is in the membership at its current address and a leader's appends
//!    reach it, then checks slowly (a membership entry of its own that was never committed, or
//!    a leader that cannot reach it, sends it asking again).
//! 5. A broker that starts without any Raft state (new, or its disk was lost) is *fresh*: it
//!    does not vote until a leader that confirmed its leadership with a quorum acknowledged
//!    its join, and it has applied the log up to the index that leader named (everything
//!    committed so far). A voter that forgot what it acknowledged could otherwise elect a
//!    leader missing committed entries (openraft FAQ, "wipe out the data of one node"). It
//!    stays in the voter set meanwhile (no membership change, so no two-voter window). This is
//!    why openraft's `loosen-follower-log-revert` feature is on: the leader sees that broker's
//!    log go back to empty. Limits: while it catches up, one more voter failure stops
//!    elections until that voter is back; losing a majority of the voters' disks loses data
//!    (no consensus system can help), and the cluster then waits for an operator.
//! 6. Voters: [`choose_voters`] on the leader (see there), applied with
//!    [`Quorum::manage_voters`]; automatically every election timeout when
//!    [`QuorumConfig::auto_manage_voters`] is set, with [`Quorum::responsive_members`] as the
//!    liveness view.
//!
//! # Interface notes (differences from the plan)
//! - [`QuorumConfig`] has one more field, `auto_manage_voters`.
//! - [`Quorum::manage_voters`] takes `&BTreeSet<i32>` and returns the new voter set if it
//!   changed.
//! - [`stored_cluster_id`] reads the cluster id a data directory belongs to, for a broker
//!   that has no `cluster.id` setting (generate one only when it returns `None`).
//! - Extra: [`Quorum::responsive_members`], [`Quorum::is_fresh`], [`Quorum::status`],
//!   [`Quorum::handle_join`].
//! - [`Quorum::caught_up`] compares the applied index with the commit index carried by the
//!   last append this broker accepted (openraft 0.9 metrics have no follower commit index),
//!   and requires that append to be recent.
//! - A proposal that fails with `NotLeader` or a timeout may still be committed later by the
//!   new leader (Raft cannot tell): the controller must re-check the image before retrying.
//! - One listener call may cover several committed entries (their records in order, the image
//!   after the last). Listeners run on a blocking thread while the next entries wait: they
//!   must not wait for a proposal to commit.

mod formation;
mod log_store;
mod network;
mod routes;
mod state_machine;
mod types;
mod voters;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{ChangeMembershipError, CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, RaftMetrics, ServerState, SnapshotPolicy};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use formation::{decide as decide_formation, Decision, Probe};
pub use network::{
    codes, JoinRequest, JoinResponse, QuorumStatus, StatusRequest, APPEND_PATH, JOIN_PATH,
    SNAPSHOT_PATH, STATUS_PATH, VOTE_PATH,
};
pub use types::{QuorumConfig, QuorumError, TypeConfig};
pub use voters::{choose_voters, majority};

use self::log_store::{write_atomic, LogStore};
use self::network::{NetworkFactory, PeerAddresses, PeerHealth};
use self::state_machine::{SmShared, StateMachine};
use self::types::{broker_id, raft_id, Raft};
use super::image::cache::{MetadataCache, MetadataListener};
use super::image::records::MetadataRecord;
use crate::rpc::RpcClient;

/// A snapshot every this many applied entries; the log is then purged up to the snapshot but
/// the last `KEEP_LOGS_AFTER_SNAPSHOT` entries, so a slightly lagging follower still catches
/// up from the log.
pub const SNAPSHOT_EVERY_LOGS: u64 = 10_000;
const KEEP_LOGS_AFTER_SNAPSHOT: u64 = 1_000;
/// Sending a whole snapshot may take this long.
const SNAPSHOT_SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// A peer is responsive when it answered a Raft RPC within this many election timeouts.
const RESPONSIVE_ELECTION_TIMEOUTS: u32 = 3;
/// A learner is promoted only when it is at most this many entries behind the leader.
const MAX_PROMOTION_LAG: u64 = 100;

const CLUSTER_ID_FILE: &str = "cluster-id";

/// Knobs that are not settings (tests shrink them).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tuning {
    pub(crate) snapshot_every: u64,
    pub(crate) keep_after_snapshot: u64,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            snapshot_every: SNAPSHOT_EVERY_LOGS,
            keep_after_snapshot: KEEP_LOGS_AFTER_SNAPSHOT,
        }
    }
}

/// The last commit point heard from a leader, and when.
#[derive(Clone, Copy, Default)]
struct HeardCommit {
    at: Option<std::time::Instant>,
    index: Option<u64>,
}

/// Whether this broker may vote (rule 5 of the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    Voting,
    /// Started without Raft state; no leader acknowledged its join yet.
    AwaitingJoin,
    /// Joined; votes once it has applied the log up to this index.
    CatchingUp(Option<u64>),
}

/// One broker's member of the metadata quorum.
pub struct Quorum {
    cfg: QuorumConfig,
    id: u64,
    raft: Raft,
    rpc: RpcClient,
    health: Arc<PeerHealth>,
    addresses: Arc<PeerAddresses>,
    metrics: watch::Receiver<RaftMetrics<u64, BasicNode>>,
    leader_tx: watch::Sender<Option<i32>>,
    heard_commit: Mutex<HeardCommit>,
    /// Whether this broker votes (rule 5 of the module doc).
    standing: Mutex<Standing>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// The cluster id the quorum directory `dir` belongs to, if it was ever started.
pub fn stored_cluster_id(dir: &Path) -> Result<Option<String>, QuorumError> {
    let path = dir.join(CLUSTER_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(id) => Ok(Some(id.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(QuorumError::storage(
            format!("reading {}", path.display()),
            e,
        )),
    }
}

/// Refuses a directory of another cluster; stamps a new one.
fn claim_dir(dir: &Path, cluster_id: &str) -> Result<(), QuorumError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| QuorumError::storage(format!("creating {}", dir.display()), e))?;
    match stored_cluster_id(dir)? {
        Some(stored) if stored != cluster_id => Err(QuorumError::ClusterIdMismatch {
            local: cluster_id.to_string(),
            remote: stored,
            peer: format!("the metadata directory {}", dir.display()),
        }),
        Some(_) => Ok(()),
        None => write_atomic(dir, CLUSTER_ID_FILE, cluster_id.as_bytes(), true).map_err(|e| {
            QuorumError::storage(
                format!("writing {}", dir.join(CLUSTER_ID_FILE).display()),
                e,
            )
        }),
    }
}

fn raft_config(cfg: &QuorumConfig, tuning: Tuning) -> Result<openraft::Config, QuorumError> {
    let t = u64::try_from(cfg.election_timeout.as_millis()).unwrap_or(u64::MAX / 4);
    let config = openraft::Config {
        cluster_name: cfg.cluster_id.clone(),
        election_timeout_min: t,
        election_timeout_max: t * 2,
        heartbeat_interval: (t / 5).max(1),
        install_snapshot_timeout: SNAPSHOT_SEND_TIMEOUT.as_millis() as u64,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(tuning.snapshot_every),
        max_in_snapshot_log_to_keep: tuning.keep_after_snapshot,
        // Followers further behind than this get a snapshot; keep it above the snapshot
        // interval (openraft's advice).
        replication_lag_threshold: tuning.snapshot_every * 2,
        ..Default::default()
    };
    config
        .validate()
        .map_err(|e| QuorumError::InvalidConfig(e.to_string()))
}

/// The quorum as its leader sees it: each member's log end (one past its last entry
/// replicated, -1 when unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumDescription {
    pub leader: i32,
    pub term: u64,
    /// One past the last applied (committed) entry.
    pub committed: i64,
    pub voters: Vec<(i32, i64)>,
    pub observers: Vec<(i32, i64)>,
}

impl Quorum {
    /// Recovers the local Raft log and snapshot, applies what is committed
    /// (`listener.on_image_loaded` once with the recovered image, even if empty), then forms or
    /// joins the cluster in the background. Returns without waiting for a leader.
    pub async fn start(
        cfg: QuorumConfig,
        cache: Arc<MetadataCache>,
        listener: Arc<dyn MetadataListener>,
    ) -> Result<Arc<Quorum>, QuorumError> {
        Self::start_tuned(cfg, cache, listener, Tuning::default()).await
    }

    pub(crate) async fn start_tuned(
        cfg: QuorumConfig,
        cache: Arc<MetadataCache>,
        listener: Arc<dyn MetadataListener>,
        tuning: Tuning,
    ) -> Result<Arc<Quorum>, QuorumError> {
        cfg.validate()?;
        claim_dir(&cfg.dir, &cfg.cluster_id)?;
        let log = LogStore::open(&cfg.dir)?;
        let sm = SmShared::open(&cfg.dir, cache, listener)?;
        let fresh = log.is_empty() && !sm.has_snapshot().await;
        let id = cfg.raft_id();
        let rpc = RpcClient::new();
        let health = Arc::new(PeerHealth::default());
        let addresses = Arc::new(PeerAddresses::default());
        let network = NetworkFactory::new(
            rpc.clone(),
            &cfg.cluster_id,
            id,
            health.clone(),
            addresses.clone(),
        );
        // Raft::new re-applies the committed entries of the local log (silently: not live).
        let raft = Raft::new(
            id,
            Arc::new(raft_config(&cfg, tuning)?),
            network,
            log,
            StateMachine::new(sm.clone()),
        )
        .await?;
        sm.go_live().await;
        let (leader_tx, _) = watch::channel(None);
        let quorum = Arc::new(Quorum {
            id,
            metrics: raft.metrics(),
            raft,
            rpc,
            health,
            addresses,
            leader_tx,
            heard_commit: Mutex::new(HeardCommit::default()),
            standing: Mutex::new(if fresh {
                Standing::AwaitingJoin
            } else {
                Standing::Voting
            }),
            tasks: Mutex::new(Vec::new()),
            cfg,
        });
        tracing::info!(
            broker = quorum.cfg.node_id,
            cluster = %quorum.cfg.cluster_id,
            fresh,
            "metadata quorum started"
        );
        let mut tasks = vec![
            tokio::spawn(watch_leader(
                quorum.metrics.clone(),
                quorum.leader_tx.clone(),
            )),
            tokio::spawn(formation::run(Arc::downgrade(&quorum))),
        ];
        if quorum.cfg.auto_manage_voters {
            tasks.push(tokio::spawn(auto_manage_voters(Arc::downgrade(&quorum))));
        }
        *quorum.lock_tasks() = tasks;
        Ok(quorum)
    }

    fn lock_tasks(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        // Only pushed to and drained; a panic elsewhere cannot leave it inconsistent.
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Leader only: replicates and commits a batch of records; resolves once applied locally
    /// (cache published, listener called).
    pub async fn propose(&self, records: Vec<MetadataRecord>) -> Result<(), QuorumError> {
        match self.raft.client_write(records).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.write_error(e)),
        }
    }

    fn write_error(&self, e: RaftError<u64, ClientWriteError<u64, BasicNode>>) -> QuorumError {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => QuorumError::NotLeader {
                leader: f.leader_id.map(|id| {
                    let addr = f
                        .leader_node
                        .map(|n| n.addr)
                        .or_else(|| self.members().remove(&broker_id(id)))
                        .unwrap_or_default();
                    (broker_id(id), addr)
                }),
            },
            RaftError::APIError(ClientWriteError::ChangeMembershipError(
                ChangeMembershipError::InProgress(p),
            )) => QuorumError::MembershipChangeInProgress(p.to_string()),
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                QuorumError::InvalidMembership(e.to_string())
            }
            RaftError::Fatal(f) => f.into(),
        }
    }

    fn with_metrics<T>(&self, f: impl FnOnce(&RaftMetrics<u64, BasicNode>) -> T) -> T {
        f(&self.metrics.borrow())
    }

    pub fn is_leader(&self) -> bool {
        self.with_metrics(|m| m.state == ServerState::Leader && m.current_leader == Some(self.id))
    }

    /// `(id, http address)` of the leader this broker knows.
    pub fn leader(&self) -> Option<(i32, String)> {
        self.with_metrics(|m| {
            let leader = m.current_leader?;
            let addr = m
                .membership_config
                .membership()
                .get_node(&leader)
                .map(|n| n.addr.clone())
                .unwrap_or_default();
            Some((broker_id(leader), addr))
        })
    }

    /// Changes of the leader's id (`None`: no leader known).
    pub fn leader_watch(&self) -> watch::Receiver<Option<i32>> {
        self.leader_tx.subscribe()
    }

    /// This broker has applied everything the leader had committed when last heard from, and
    /// that leader reached it within the last few election timeouts. The leader itself: it
    /// applied the entries of earlier terms and a majority of the voters answers it.
    pub fn caught_up(&self) -> bool {
        let window = self.responsive_window();
        let heard = *self.heard_commit.lock().unwrap_or_else(|p| p.into_inner());
        self.with_metrics(|m| {
            let Some(leader) = m.current_leader else {
                return false;
            };
            if leader == self.id {
                // A new leader commits an entry of its own term first; once that is applied,
                // so is everything before it.
                let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
                let answering = voters
                    .iter()
                    .filter(|v| **v == self.id || self.health.answered_within(**v, window))
                    .count();
                return m.state == ServerState::Leader
                    && m.last_applied
                        .is_some_and(|l| l.leader_id.term == m.current_term)
                    && answering >= majority(voters.len());
            }
            heard.at.is_some_and(|at| at.elapsed() <= window)
                && m.last_applied.map(|l| l.index) >= heard.index
        })
    }

    /// This broker leads, or a leader's append reached it recently (a follower's persisted
    /// vote names a leader even when that leader cannot reach it).
    fn leader_reaches_me(&self) -> bool {
        if self.is_leader() {
            return true;
        }
        let heard = *self.heard_commit.lock().unwrap_or_else(|p| p.into_inner());
        heard
            .at
            .is_some_and(|at| at.elapsed() <= self.responsive_window())
    }

    /// Records the commit point of an append this broker accepted.
    fn heard_leader_commit(&self, index: Option<u64>) {
        let mut heard = self.heard_commit.lock().unwrap_or_else(|p| p.into_inner());
        heard.at = Some(std::time::Instant::now());
        // Committed entries stay committed: the point only moves forward.
        if index > heard.index {
            heard.index = index;
        }
    }

    fn lock_standing(&self) -> std::sync::MutexGuard<'_, Standing> {
        // A plain value; a panic elsewhere cannot leave it torn.
        self.standing.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn standing(&self) -> Standing {
        *self.lock_standing()
    }

    /// This broker started without state and has not caught up since (it does not vote).
    pub fn is_fresh(&self) -> bool {
        !self.may_vote()
    }

    /// Whether this broker votes; moves a caught-up fresh broker to voting.
    fn may_vote(&self) -> bool {
        let mut standing = self.lock_standing();
        match *standing {
            Standing::Voting => true,
            Standing::AwaitingJoin => false,
            Standing::CatchingUp(to) => {
                let applied = self.with_metrics(|m| m.last_applied.map(|l| l.index));
                if applied >= to {
                    tracing::info!(
                        broker = self.cfg.node_id,
                        "caught up with the metadata log after starting without state; voting again"
                    );
                    *standing = Standing::Voting;
                    true
                } else {
                    false
                }
            }
        }
    }

    /// A leader acknowledged this broker's join; `to`: what it must apply before voting.
    fn joined(&self, to: Option<u64>) {
        let mut standing = self.lock_standing();
        if *standing == Standing::AwaitingJoin {
            *standing = Standing::CatchingUp(to);
        }
    }

    /// The voters (during a membership change: old and new together).
    pub fn voters(&self) -> BTreeSet<i32> {
        self.with_metrics(|m| {
            m.membership_config
                .membership()
                .voter_ids()
                .map(broker_id)
                .collect()
        })
    }

    /// Leader only: the quorum as DescribeQuorum reports it (`None` elsewhere: only the
    /// leader knows how far each member's log is).
    pub fn describe(&self) -> Option<QuorumDescription> {
        if !self.is_leader() {
            return None;
        }
        Some(self.with_metrics(|m| {
            let membership = m.membership_config.membership();
            let voter_ids: BTreeSet<u64> = membership.voter_ids().collect();
            let end = |id: u64| -> i64 {
                let matched = if id == self.id {
                    m.last_log_index
                } else {
                    m.replication
                        .as_ref()
                        .and_then(|r| r.get(&id))
                        .and_then(|l| l.map(|l| l.index))
                };
                // Log indexes are far below i64::MAX; -1 is Kafka's "unknown".
                matched.map_or(-1, |i| i64::try_from(i + 1).unwrap_or(i64::MAX))
            };
            let (voters, observers): (Vec<_>, Vec<_>) = membership
                .nodes()
                .map(|(id, _)| (*id, (broker_id(*id), end(*id))))
                .partition(|(id, _)| voter_ids.contains(id));
            QuorumDescription {
                leader: broker_id(self.id),
                term: m.current_term,
                committed: m
                    .last_applied
                    .map_or(-1, |l| i64::try_from(l.index + 1).unwrap_or(i64::MAX)),
                voters: voters.into_iter().map(|(_, v)| v).collect(),
                observers: observers.into_iter().map(|(_, v)| v).collect(),
            }
        }))
    }

    /// Every member (voters and learners) and its http address.
    pub fn members(&self) -> BTreeMap<i32, String> {
        self.with_metrics(|m| {
            m.membership_config
                .membership()
                .nodes()
                .map(|(id, n)| (broker_id(*id), n.addr.clone()))
                .collect()
        })
    }

    fn membership_timeout(&self) -> Duration {
        (self.cfg.election_timeout * 10).max(Duration::from_secs(5))
    }

    fn join_timeout(&self) -> Duration {
        self.membership_timeout() * 2 + self.cfg.election_timeout
    }

    /// Leader only: has `id` in the membership at `http_address` (a learner if it is new; the
    /// address is updated if it changed). Returns once the change is committed.
    pub async fn add_learner(&self, id: i32, http_address: String) -> Result<(), QuorumError> {
        let node_id = raft_id(id)?;
        if http_address.is_empty() {
            return Err(QuorumError::InvalidConfig(format!(
                "broker {id} has no http address"
            )));
        }
        let change = match self.members().get(&id) {
            Some(addr) if *addr == http_address => return Ok(()),
            Some(old) => {
                tracing::info!(broker = id, old = %old, new = %http_address, "metadata quorum member moved");
                ChangeMembers::SetNodes(BTreeMap::from([(node_id, BasicNode::new(http_address))]))
            }
            None => {
                tracing::info!(broker = id, addr = %http_address, "adding a metadata quorum learner");
                ChangeMembers::AddNodes(BTreeMap::from([(node_id, BasicNode::new(http_address))]))
            }
        };
        self.change_membership(change, "adding a learner").await
    }

    /// Leader only: makes exactly `voters` vote (they must be members); removed voters stay
    /// learners.
    pub async fn change_voters(&self, voters: BTreeSet<i32>) -> Result<(), QuorumError> {
        if voters.is_empty() {
            return Err(QuorumError::InvalidMembership(
                "the voter set cannot be empty".into(),
            ));
        }
        let members = self.members();
        let ids = voters
            .iter()
            .map(|v| {
                if members.contains_key(v) {
                    raft_id(*v)
                } else {
                    Err(QuorumError::InvalidMembership(format!(
                        "broker {v} is not a quorum member (members: {:?})",
                        members.keys().collect::<Vec<_>>()
                    )))
                }
            })
            .collect::<Result<BTreeSet<u64>, _>>()?;
        tracing::info!(voters = ?voters, "changing the metadata quorum voters");
        self.change_membership(ChangeMembers::ReplaceAllVoters(ids), "changing voters")
            .await
    }

    async fn change_membership(
        &self,
        change: ChangeMembers<u64, BasicNode>,
        what: &str,
    ) -> Result<(), QuorumError> {
        if !self.is_leader() {
            return Err(QuorumError::NotLeader {
                leader: self.leader(),
            });
        }
        let after = self.membership_timeout();
        match tokio::time::timeout(after, self.raft.change_membership(change, true)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(self.write_error(e)),
            Err(_) => Err(QuorumError::Timeout {
                what: what.to_string(),
                after,
            }),
        }
    }

    /// Leader only: applies [`choose_voters`] to the current voters, the members and `live`.
    /// Returns the new voter set when it changed.
    pub async fn manage_voters(
        &self,
        live: &BTreeSet<i32>,
    ) -> Result<Option<BTreeSet<i32>>, QuorumError> {
        if !self.is_leader() {
            return Err(QuorumError::NotLeader {
                leader: self.leader(),
            });
        }
        if self.with_metrics(|m| m.membership_config.membership().get_joint_config().len() > 1) {
            return Err(QuorumError::MembershipChangeInProgress(
                "joint membership".into(),
            ));
        }
        let current = self.voters();
        let members: BTreeSet<i32> = self.members().into_keys().collect();
        match choose_voters(&current, &members, live, self.cfg.voter_count) {
            Some(next) => {
                self.change_voters(next.clone()).await?;
                Ok(Some(next))
            }
            None => Ok(None),
        }
    }

    fn responsive_window(&self) -> Duration {
        self.cfg.election_timeout * RESPONSIVE_ELECTION_TIMEOUTS
    }

    /// Leader only: the members whose Raft RPCs answered within the last few election timeouts
    /// (this broker included); learners also have to be caught up with the leader's log.
    pub fn responsive_members(&self) -> BTreeSet<i32> {
        let window = self.responsive_window();
        self.with_metrics(|m| {
            let membership = m.membership_config.membership();
            let voters: BTreeSet<u64> = membership.voter_ids().collect();
            let last = m.last_log_index.unwrap_or(0);
            membership
                .nodes()
                .filter(|(id, _)| {
                    if **id == self.id {
                        return true;
                    }
                    if !self.health.answered_within(**id, window) {
                        return false;
                    }
                    let matched = m
                        .replication
                        .as_ref()
                        .and_then(|r| r.get(id))
                        .and_then(|l| l.map(|l| l.index));
                    voters.contains(id)
                        || matched.is_some_and(|i| last.saturating_sub(i) <= MAX_PROMOTION_LAG)
                })
                .map(|(id, _)| broker_id(*id))
                .collect()
        })
    }

    /// What this broker knows of the quorum (the status endpoint's answer).
    pub async fn status(&self) -> QuorumStatus {
        // A stopped Raft may have had state: say so, it never helps founding a cluster.
        let has_state = self.raft.is_initialized().await.unwrap_or(true);
        QuorumStatus {
            cluster_id: self.cfg.cluster_id.clone(),
            node_id: self.cfg.node_id,
            has_state,
            leader: self.leader(),
            voters: self.voters(),
        }
    }

    /// A broker asks to join (or to update its address). Answered by the leader; other
    /// brokers name the leader.
    pub async fn handle_join(&self, req: JoinRequest) -> Result<JoinResponse, QuorumError> {
        if req.cluster_id != self.cfg.cluster_id {
            return Err(QuorumError::ClusterIdMismatch {
                local: self.cfg.cluster_id.clone(),
                remote: req.cluster_id,
                peer: format!("broker {}", req.id),
            });
        }
        let node_id = raft_id(req.id)?;
        if req.http_address.is_empty() {
            return Err(QuorumError::InvalidConfig(format!(
                "broker {} has no http address",
                req.id
            )));
        }
        if !self.is_leader() {
            return Ok(JoinResponse::NotLeader {
                leader: self.leader(),
            });
        }
        // Reach it at its new address now: committing the address change may need its answer.
        if node_id != self.id {
            self.addresses.learn(node_id, &req.http_address);
        }
        // Everything committed so far is at or below the read index of a leader that has just
        // confirmed its leadership with a quorum.
        let catch_up_to = self.confirmed_read_index().await?;
        if req.fresh && self.members().contains_key(&req.id) {
            tracing::warn!(
                broker = req.id,
                catch_up_to,
                "a quorum member came back without its Raft state (lost disk?); it does not \
                 vote until it has caught up"
            );
        }
        self.add_learner(req.id, req.http_address).await?;
        Ok(JoinResponse::Joined { catch_up_to })
    }

    /// Leader only: confirms leadership with a quorum and returns the index up to which the
    /// log must be applied to have every committed entry.
    async fn confirmed_read_index(&self) -> Result<Option<u64>, QuorumError> {
        let after = self.membership_timeout();
        match tokio::time::timeout(after, self.raft.get_read_log_id()).await {
            Ok(Ok((read, _applied))) => Ok(read.map(|l| l.index)),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_)))) => {
                Err(QuorumError::NotLeader {
                    leader: self.leader(),
                })
            }
            Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e)))) => {
                Err(QuorumError::Timeout {
                    what: format!("confirming leadership ({e})"),
                    after,
                })
            }
            Ok(Err(RaftError::Fatal(f))) => Err(f.into()),
            Err(_) => Err(QuorumError::Timeout {
                what: "confirming leadership".into(),
                after,
            }),
        }
    }

    /// Routes for the broker's HTTP side port: `/internal/raft/{append,vote,snapshot}`,
    /// `/internal/quorum/{status,join}`. The state is already applied: merge it with
    /// `Router::merge` after the broker's own `with_state`.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        routes::router(self.clone())
    }

    /// Stops Raft and the background tasks. The routes answer errors from then on.
    pub async fn shutdown(&self) {
        for task in self.lock_tasks().drain(..) {
            task.abort();
        }
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "metadata quorum shutdown");
        }
    }
}

/// Mirrors the leader id from Raft metrics into the leader watch.
async fn watch_leader(
    mut metrics: watch::Receiver<RaftMetrics<u64, BasicNode>>,
    leader_tx: watch::Sender<Option<i32>>,
) {
    loop {
        let leader = metrics.borrow_and_update().current_leader.map(broker_id);
        leader_tx.send_if_modified(|current| {
            let changed = *current != leader;
            *current = leader;
            changed
        });
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// On the leader, every election timeout: [`Quorum::manage_voters`] with the responsive
/// members, once this broker has led for long enough to know who answers.
async fn auto_manage_voters(quorum: std::sync::Weak<Quorum>) {
    let mut leading_since: Option<(u64, tokio::time::Instant)> = None;
    loop {
        let Some(q) = quorum.upgrade() else { return };
        let period = q.cfg.election_timeout;
        if q.is_leader() {
            let term = q.with_metrics(|m| m.current_term);
            let since = match leading_since {
                Some((t, since)) if t == term => since,
                _ => {
                    let now = tokio::time::Instant::now();
                    leading_since = Some((term, now));
                    now
                }
            };
            if since.elapsed() >= q.responsive_window() {
                let live = q.responsive_members();
                match q.manage_voters(&live).await {
                    Ok(Some(voters)) => {
                        tracing::info!(voters = ?voters, "metadata quorum voters changed")
                    }
                    Ok(None) => {}
                    Err(
                        QuorumError::MembershipChangeInProgress(_) | QuorumError::NotLeader { .. },
                    ) => {}
                    Err(e) => tracing::warn!(error = %e, "metadata quorum voter change failed"),
                }
            }
        } else {
            leading_since = None;
        }
        drop(q);
        tokio::time::sleep(period).await;
    }
}
