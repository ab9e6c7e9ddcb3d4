//! The HTTP side port: /metrics (Prometheus), /healthz (alive), /readyz (serving).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::broker::Broker;
use crate::metadata::controller::raft_log::CONTROLLER_RPC_PATH;
use crate::metadata::controller::requests::{ControllerRequest, ControllerResponse, WireError};
use crate::shutdown::stopped;

/// Serves the side port: the broker's routes plus `internal` (the metadata quorum's RPC).
pub async fn serve(
    broker: Arc<Broker>,
    internal: Router,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route(CONTROLLER_RPC_PATH, post(controller_rpc))
        .with_state(broker)
        .merge(internal);
    let stop = async move { stopped(&mut shutdown).await };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
    {
        tracing::error!(error = %e, "HTTP side port failed");
    }
}

/// Ready when serving, caught up with the metadata log, and not the reason any partition is
/// under-replicated: what a StatefulSet rolling restart waits for before the next broker.
async fn readyz(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
    if !broker.ready.load(Ordering::Acquire) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: starting or stopping\n",
        );
    }
    if !broker.quorum.caught_up() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: catching up with the metadata log\n",
        );
    }
    let image = broker.metadata.current();
    if image
        .brokers
        .get(&broker.config.node_id)
        .is_none_or(|b| b.fenced)
    {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready: fenced\n");
    }
    if broker.replicas.is_cause_of_under_replication() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: catching up as a follower (a partition is under-replicated)\n",
        );
    }
    (StatusCode::OK, "ready\n")
}

/// A request forwarded by another broker to this one, the controller.
async fn controller_rpc(
    State(broker): State<Arc<Broker>>,
    Json(request): Json<ControllerRequest>,
) -> Json<Result<ControllerResponse, WireError>> {
    Json(
        broker
            .controller
            .execute(request)
            .await
            .map_err(|e| e.to_wire()),
    )
}

async fn metrics(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
    let partitions = broker.replicas.all();
    let m = &broker.metrics;
    m.partitions.set(partitions.len() as i64);
    m.log_size_bytes
        .set(partitions.iter().map(|p| p.log().size_bytes() as i64).sum());
    let stats = broker.replicas.stats();
    m.leader_partitions.set(stats.leaders as i64);
    m.under_replicated_partitions
        .set(stats.under_replicated as i64);
    m.under_min_isr_partitions.set(stats.under_min_isr as i64);
    m.out_of_sync_replicas.set(stats.out_of_sync as i64);
    m.is_controller
        .set(i64::from(broker.controller.is_controller()));
    let (groups, members) = broker.groups.counts();
    m.groups.set(groups as i64);
    m.group_members.set(members as i64);
    m.segments.set(
        partitions
            .iter()
            .map(|p| p.log().num_segments() as i64)
            .sum(),
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        m.encode(),
    )
}
