//! One client connection: a reader that decodes and handles requests one after another, and a
//! writer that sends their responses in request order. Handlers that must wait (long-poll
//! fetch, fsync) hand the writer a future, so the reader moves on to the next request.

use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use super::frame::FrameReader;
use crate::apis::{self, Reply};
use crate::broker::Broker;
use crate::forward::{Forwarded, Forwarder};
use crate::protocol::decode_request;
use crate::shutdown::stopped;

/// Serves a connection until the client closes it, it misbehaves, or the broker shuts down.
/// `listener` is the index of the listener (in `broker.listeners`) the connection came in on.
pub async fn serve(
    broker: Arc<Broker>,
    socket: TcpStream,
    listener: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let peer = socket.peer_addr().ok();
    let _ = socket.set_nodelay(true);
    let (read_half, write_half) = socket.into_split();
    let mut frames = FrameReader::new(read_half, broker.config.socket_request_max_bytes);
    // Bounded: a client that pipelines more than queued.max.requests waits for responses.
    let (replies, pending) = mpsc::channel(broker.config.queued_max_requests);
    let writer = tokio::spawn(write_replies(write_half, pending));
    // A forwarding listener's connection keeps its own connections to the other brokers.
    let forwarder = broker.listeners[listener]
        .forwarding
        .then(|| Forwarder::new(broker.clone()));
    broker.metrics.connections.inc();
    loop {
        let frame = tokio::select! {
            frame = frames.next_frame() => frame,
            _ = stopped(&mut shutdown) => break,
        };
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => {
                tracing::info!(?peer, error = %e, "closing connection");
                break;
            }
        };
        match handle(
            &broker,
            frame,
            peer.map(|p| p.ip()),
            listener,
            forwarder.as_ref(),
        )
        .await
        {
            Some(reply) => {
                if replies.send(reply).await.is_err() {
                    break;
                }
            }
            None => break,
        }
    }
    drop(replies);
    let _ = writer.await;
    broker.metrics.connections.dec();
}

async fn handle(
    broker: &Arc<Broker>,
    frame: Bytes,
    peer: Option<std::net::IpAddr>,
    listener: usize,
    forwarder: Option<&Forwarder>,
) -> Option<Reply> {
    let request = match decode_request(frame) {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(error = %e, "bad request header; closing connection");
            return None;
        }
    };
    if let Some(forwarder) = forwarder {
        if let Forwarded::Reply(reply) = forwarder.forward(&request).await {
            return Some(reply);
        }
    }
    match apis::handle(broker, request, peer, listener).await {
        Ok(reply) => Some(reply),
        Err(e) => {
            tracing::info!(error = %e, "bad request; closing connection");
            None
        }
    }
}

async fn write_replies(socket: OwnedWriteHalf, mut pending: mpsc::Receiver<Reply>) {
    let mut out = BufWriter::with_capacity(64 * 1024, socket);
    while let Some(reply) = pending.recv().await {
        let frame = match reply {
            Reply::Nothing => continue,
            Reply::Ready(frame) => frame,
            Reply::Later(future) => match future.await {
                Some(frame) => frame,
                None => break,
            },
            Reply::Close => break,
        };
        if out.write_all(&frame).await.is_err() {
            return;
        }
        // Coalesce writes while more responses are ready; flush before waiting.
        if pending.is_empty() && out.flush().await.is_err() {
            return;
        }
    }
    let _ = out.flush().await;
    let _ = out.shutdown().await;
}
