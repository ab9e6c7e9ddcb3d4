//! Raft RPC between brokers: the wire types and the client side (openraft's
//! `RaftNetworkFactory`). The server side is `routes.rs`.
//!
//! Every Raft RPC is a JSON `POST` wrapped in an [`Envelope`] that names the cluster and the
//! target node, so a message never reaches a broker of another cluster or a different broker
//! that took over an address. Snapshots travel whole in one request (the metadata image is
//! small), with openraft's snapshot timeout; appends and votes time out before openraft's own
//! deadline (heartbeat interval, election timeout) expires.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{
    Fatal, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError,
    Timeout, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RPCTypes, RaftNetwork, RaftNetworkFactory, Snapshot};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::types::{SnapshotMeta, TypeConfig, Vote};
use crate::metadata::image::MetadataImage;
use crate::rpc::{RpcClient, RpcError};

pub const APPEND_PATH: &str = "/internal/raft/append";
pub const VOTE_PATH: &str = "/internal/raft/vote";
pub const SNAPSHOT_PATH: &str = "/internal/raft/snapshot";
pub const STATUS_PATH: &str = "/internal/quorum/status";
pub const JOIN_PATH: &str = "/internal/quorum/join";

/// Error codes in [`crate::rpc::ErrorBody`] answers of the quorum's routes.
pub mod codes {
    pub const CLUSTER_ID_MISMATCH: &str = "cluster_id_mismatch";
    pub const WRONG_NODE: &str = "wrong_node";
    pub const NOT_VOTING: &str = "not_voting";
    pub const BUSY: &str = "busy";
    pub const INVALID: &str = "invalid";
    pub const STOPPED: &str = "stopped";
}

/// A Raft RPC body with the cluster and the node it is meant for.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub cluster_id: String,
    pub to: u64,
    pub body: T,
}

/// A whole snapshot in one request.
#[derive(Debug, Serialize, Deserialize)]
pub struct FullSnapshot {
    pub vote: Vote,
    pub meta: SnapshotMeta,
    pub image: MetadataImage,
}

/// `POST /internal/quorum/status` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusRequest {
    pub cluster_id: String,
}

/// What a broker knows of the quorum (`/internal/quorum/status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumStatus {
    pub cluster_id: String,
    pub node_id: i32,
    /// It holds Raft state (a vote, log entries or a snapshot): a cluster exists.
    pub has_state: bool,
    /// `(id, http address)` of the leader it follows.
    pub leader: Option<(i32, String)>,
    pub voters: BTreeSet<i32>,
}

/// `POST /internal/quorum/join` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    pub cluster_id: String,
    pub id: i32,
    pub http_address: String,
    /// The broker started without any Raft state (new, or its disk was lost) and does not
    /// vote yet.
    #[serde(default)]
    pub fresh: bool,
}

/// `/internal/quorum/join` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum JoinResponse {
    /// The leader has the broker in the membership, at this address. `catch_up_to`: a fresh
    /// broker votes once it has applied the log up to this index.
    Joined { catch_up_to: Option<u64> },
    /// Ask the leader instead (`(id, http address)`, when known).
    NotLeader { leader: Option<(i32, String)> },
}

/// When each peer last answered a Raft RPC. The leader's heartbeats make this a liveness view.
#[derive(Default)]
pub(crate) struct PeerHealth {
    acks: Mutex<HashMap<u64, Instant>>,
}

impl PeerHealth {
    fn ack(&self, node: u64) {
        self.lock().insert(node, Instant::now());
    }

    pub(crate) fn answered_within(&self, node: u64, window: Duration) -> bool {
        self.lock()
            .get(&node)
            .is_some_and(|at| at.elapsed() <= window)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Instant>> {
        // Plain map updates; a panic elsewhere cannot leave it inconsistent.
        self.acks.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Addresses learned from join requests, ahead of the membership: the leader reaches a
/// broker at its new address before the address change is committed (which may need that
/// broker's answer). Safe because every message names its target node id.
#[derive(Default)]
pub(crate) struct PeerAddresses {
    latest: Mutex<HashMap<u64, String>>,
}

impl PeerAddresses {
    pub(crate) fn learn(&self, node: u64, addr: &str) {
        self.lock().insert(node, addr.to_string());
    }

    fn get(&self, node: u64) -> Option<String> {
        self.lock().get(&node).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, String>> {
        // Plain map updates; a panic elsewhere cannot leave it inconsistent.
        self.latest.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Opens [`PeerConnection`]s for openraft.
pub(crate) struct NetworkFactory {
    rpc: RpcClient,
    cluster_id: Arc<str>,
    local: u64,
    health: Arc<PeerHealth>,
    addresses: Arc<PeerAddresses>,
}

impl NetworkFactory {
    pub(crate) fn new(
        rpc: RpcClient,
        cluster_id: &str,
        local: u64,
        health: Arc<PeerHealth>,
        addresses: Arc<PeerAddresses>,
    ) -> NetworkFactory {
        NetworkFactory {
            rpc,
            cluster_id: cluster_id.into(),
            local,
            health,
            addresses,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerConnection {
        PeerConnection {
            rpc: self.rpc.clone(),
            cluster_id: self.cluster_id.clone(),
            local: self.local,
            health: self.health.clone(),
            addresses: self.addresses.clone(),
            target,
            node: node.clone(),
        }
    }
}

/// RPC to one peer. Connections are pooled by the shared [`RpcClient`].
pub(crate) struct PeerConnection {
    rpc: RpcClient,
    cluster_id: Arc<str>,
    local: u64,
    health: Arc<PeerHealth>,
    addresses: Arc<PeerAddresses>,
    target: u64,
    node: BasicNode,
}

impl PeerConnection {
    async fn send<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        body: Req,
        timeout: Duration,
    ) -> Result<Resp, RpcError> {
        let envelope = Envelope {
            cluster_id: self.cluster_id.to_string(),
            to: self.target,
            body,
        };
        let addr = self
            .addresses
            .get(self.target)
            .unwrap_or_else(|| self.node.addr.clone());
        let result = self.rpc.call(&addr, path, &envelope, timeout).await;
        match &result {
            Ok(_) => self.health.ack(self.target),
            Err(e) => self.log_refusal(e),
        }
        result
    }

    /// A peer of another cluster is a configuration error worth an error line, not a retry.
    fn log_refusal(&self, e: &RpcError) {
        if let Some(code @ (codes::CLUSTER_ID_MISMATCH | codes::WRONG_NODE)) = e.remote_code() {
            tracing::error!(
                target_node = self.target,
                addr = %self.node.addr,
                code,
                error = %e,
                "a quorum peer refuses this broker's Raft messages"
            );
        }
    }

    fn rpc_error<E: std::error::Error>(
        &self,
        e: RpcError,
        action: RPCTypes,
        timeout: Duration,
    ) -> RPCError<u64, BasicNode, E> {
        match e {
            RpcError::Timeout { .. } => RPCError::Timeout(Timeout {
                action,
                id: self.local,
                target: self.target,
                timeout,
            }),
            // Down, refusing (another cluster) or not voting: back off before retrying.
            e if e.is_unreachable() || e.remote_code().is_some() => {
                RPCError::Unreachable(Unreachable::new(&e))
            }
            e => RPCError::Network(NetworkError::new(&e)),
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let timeout = option.soft_ttl();
        let answer: Result<AppendEntriesResponse<u64>, RaftError<u64>> = self
            .send(APPEND_PATH, rpc, timeout)
            .await
            .map_err(|e| self.rpc_error(e, RPCTypes::AppendEntries, timeout))?;
        answer.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let timeout = option.soft_ttl();
        let answer: Result<VoteResponse<u64>, RaftError<u64>> = self
            .send(VOTE_PATH, rpc, timeout)
            .await
            .map_err(|e| self.rpc_error(e, RPCTypes::Vote, timeout))?;
        answer.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))
        })
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<u64>, StreamingError<TypeConfig, Fatal<u64>>> {
        let timeout = option.hard_ttl();
        let body = FullSnapshot {
            vote,
            meta: snapshot.meta,
            image: *snapshot.snapshot,
        };
        let send =
            self.send::<_, Result<SnapshotResponse<u64>, Fatal<u64>>>(SNAPSHOT_PATH, body, timeout);
        let answer = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            answer = send => answer,
        };
        match answer {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(fatal)) => Err(StreamingError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                fatal,
            ))),
            Err(e) => Err(
                match self.rpc_error::<Fatal<u64>>(e, RPCTypes::InstallSnapshot, timeout) {
                    RPCError::Timeout(t) => StreamingError::Timeout(t),
                    RPCError::Unreachable(u) => StreamingError::Unreachable(u),
                    RPCError::Network(n) => StreamingError::Network(n),
                    RPCError::PayloadTooLarge(p) => StreamingError::Network(NetworkError::new(&p)),
                    RPCError::RemoteError(r) => StreamingError::RemoteError(r),
                },
            ),
        }
    }
}
