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

use crate::broker::{stopped, Broker};
use crate::metadata::controller::requests::{ControllerRequest, ControllerResponse, WireError};

pub async fn serve(
    broker: Arc<Broker>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/internal/controller", post(controller_rpc))
        .with_state(broker);
    let stop = async move { stopped(&mut shutdown).await };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
    {
        tracing::error!(error = %e, "HTTP side port failed");
    }
}

async fn readyz(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
    if broker.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
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
