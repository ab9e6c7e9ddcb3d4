//! The metadata quorum as the controller's metadata log, and forwarding of controller
//! requests to the quorum leader over cluster RPC.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::ResponseError;

use super::requests::{ControllerRequest, ControllerResponse, WireError};
use super::{BoxFuture, ControllerError, Forwarder, MetadataLog, ProposeError};
use crate::metadata::image::records::MetadataRecord;
use crate::metadata::quorum::{Quorum, QuorumError};

/// The path of the controller RPC on every broker's HTTP side port.
pub const CONTROLLER_RPC_PATH: &str = "/internal/controller";

pub struct RaftLog(pub Arc<Quorum>);

impl MetadataLog for RaftLog {
    fn propose(&self, records: Vec<MetadataRecord>) -> BoxFuture<'_, Result<(), ProposeError>> {
        Box::pin(async move {
            self.0.propose(records).await.map_err(|e| match e {
                QuorumError::NotLeader { .. } => ProposeError::NotLeader,
                other => ProposeError::Failed(other.to_string()),
            })
        })
    }

    fn leader(&self) -> Option<(i32, String)> {
        self.0.leader()
    }

    fn is_leader(&self) -> bool {
        self.0.is_leader()
    }

    fn manage_voters(&self, live: BTreeSet<i32>) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            match self.0.manage_voters(&live).await {
                Ok(Some(voters)) => tracing::info!(?voters, "metadata quorum voters changed"),
                Ok(None) => {}
                Err(e) => tracing::debug!(error = %e, "voter change deferred"),
            }
        })
    }
}

/// Sends controller requests to the controller's `/internal/controller`.
pub struct RpcForwarder;

impl Forwarder for RpcForwarder {
    fn forward(
        &self,
        http_address: String,
        request: ControllerRequest,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<ControllerResponse, ControllerError>> {
        Box::pin(async move {
            let answer: Result<Result<ControllerResponse, WireError>, _> =
                crate::rpc::call(&http_address, CONTROLLER_RPC_PATH, &request, timeout).await;
            match answer {
                Ok(Ok(response)) => Ok(response),
                Ok(Err(e)) => Err(ControllerError::from_wire(e)),
                // Retriable for clients: the controller may be moving.
                Err(e) => Err(ControllerError::new(
                    ResponseError::NotController,
                    format!("controller at {http_address} unreachable: {e}"),
                )),
            }
        })
    }
}
