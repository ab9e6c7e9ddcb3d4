//! The quorum's HTTP routes (server side of `network.rs`), merged into the broker's HTTP side
//! port by [`super::Quorum::router`].

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, VoteRequest};
use openraft::Snapshot;

use super::network::{
    codes, Envelope, FullSnapshot, JoinRequest, StatusRequest, APPEND_PATH, JOIN_PATH,
    SNAPSHOT_PATH, STATUS_PATH, VOTE_PATH,
};
use super::types::{QuorumError, TypeConfig};
use super::Quorum;
use crate::rpc::error_response;

/// Largest request accepted (a snapshot of the metadata image is the largest).
const MAX_REQUEST_BYTES: usize = 256 << 20;

pub(crate) fn router(quorum: Arc<Quorum>) -> Router {
    Router::new()
        .route(APPEND_PATH, post(append))
        .route(VOTE_PATH, post(vote))
        .route(SNAPSHOT_PATH, post(snapshot))
        .route(STATUS_PATH, get(status).post(checked_status))
        .route(JOIN_PATH, post(join))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(quorum)
}

/// Refuses a request of another cluster, or meant for another node.
fn refusal(q: &Quorum, cluster_id: &str, to: Option<u64>) -> Option<Response> {
    if cluster_id != q.cfg.cluster_id {
        return Some(error_response(
            StatusCode::CONFLICT,
            codes::CLUSTER_ID_MISMATCH,
            format!(
                "broker {} is in cluster `{}`, the request is for cluster `{cluster_id}`",
                q.cfg.node_id, q.cfg.cluster_id
            ),
        ));
    }
    match to {
        Some(to) if to != q.id => Some(error_response(
            StatusCode::CONFLICT,
            codes::WRONG_NODE,
            format!(
                "this is broker {}, the request is for broker {to} (stale address?)",
                q.cfg.node_id
            ),
        )),
        _ => None,
    }
}

async fn append(
    State(q): State<Arc<Quorum>>,
    Json(req): Json<Envelope<AppendEntriesRequest<TypeConfig>>>,
) -> Response {
    if let Some(refused) = refusal(&q, &req.cluster_id, Some(req.to)) {
        return refused;
    }
    let leader_commit = req.body.leader_commit;
    let result = q.raft.append_entries(req.body).await;
    if let Ok(AppendEntriesResponse::Success | AppendEntriesResponse::PartialSuccess(_)) = &result {
        q.heard_leader_commit(leader_commit.map(|l| l.index));
    }
    Json(result).into_response()
}

async fn vote(
    State(q): State<Arc<Quorum>>,
    Json(req): Json<Envelope<VoteRequest<u64>>>,
) -> Response {
    if let Some(refused) = refusal(&q, &req.cluster_id, Some(req.to)) {
        return refused;
    }
    if !q.may_vote() {
        // Lost state: a vote now could elect a leader without entries this broker once
        // acknowledged. See the module doc of `quorum`.
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            codes::NOT_VOTING,
            format!(
                "broker {} started without metadata state and does not vote until it has rejoined",
                q.cfg.node_id
            ),
        );
    }
    Json(q.raft.vote(req.body).await).into_response()
}

async fn snapshot(
    State(q): State<Arc<Quorum>>,
    Json(req): Json<Envelope<FullSnapshot>>,
) -> Response {
    if let Some(refused) = refusal(&q, &req.cluster_id, Some(req.to)) {
        return refused;
    }
    let FullSnapshot { vote, meta, image } = req.body;
    let snapshot = Snapshot {
        meta,
        snapshot: Box::new(image),
    };
    Json(q.raft.install_full_snapshot(vote, snapshot).await).into_response()
}

async fn status(State(q): State<Arc<Quorum>>) -> Response {
    Json(q.status().await).into_response()
}

async fn checked_status(State(q): State<Arc<Quorum>>, Json(req): Json<StatusRequest>) -> Response {
    if let Some(refused) = refusal(&q, &req.cluster_id, None) {
        return refused;
    }
    Json(q.status().await).into_response()
}

async fn join(State(q): State<Arc<Quorum>>, Json(req): Json<JoinRequest>) -> Response {
    if let Some(refused) = refusal(&q, &req.cluster_id, None) {
        return refused;
    }
    match q.handle_join(req).await {
        Ok(answer) => Json(answer).into_response(),
        Err(e @ (QuorumError::MembershipChangeInProgress(_) | QuorumError::Timeout { .. })) => {
            error_response(StatusCode::SERVICE_UNAVAILABLE, codes::BUSY, e.to_string())
        }
        Err(e @ QuorumError::NotLeader { .. }) => {
            error_response(StatusCode::SERVICE_UNAVAILABLE, codes::BUSY, e.to_string())
        }
        Err(e @ (QuorumError::InvalidConfig(_) | QuorumError::InvalidMembership(_))) => {
            error_response(StatusCode::BAD_REQUEST, codes::INVALID, e.to_string())
        }
        Err(e @ QuorumError::Stopped(_)) => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            codes::STOPPED,
            e.to_string(),
        ),
        Err(e) => error_response(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}
