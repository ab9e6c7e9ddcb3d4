//! Cluster RPC: JSON over HTTP/1.1 between brokers' HTTP side ports.
//!
//! A request is a `POST` of a JSON body; a 2xx answer carries the JSON response. Any other
//! status carries an [`ErrorBody`] (`{"code": ..., "message": ...}`), which handlers build with
//! [`error_response`] and callers get back as [`RpcError::Remote`]. Every call has a deadline.
//!
//! [`RpcClient`] pools connections per peer (keep-alive), so hold one per component and clone
//! it. [`call`] uses one client shared by the whole process, for code that has no client at
//! hand. Pooled connections belong to the Tokio runtime that opened them: code that runs
//! several runtimes (tests) should hold its own [`RpcClient`].

use std::sync::OnceLock;
use std::time::Duration;

use axum::http::{header, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The largest answer read from a peer. Metadata snapshots are the largest payloads.
pub const MAX_RESPONSE_BYTES: usize = 256 << 20;

/// How long an idle pooled connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(30);

/// The body of a non-2xx answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A stable, machine-readable reason (`cluster_id_mismatch`, `not_leader`, ...).
    pub code: String,
    /// For people.
    pub message: String,
}

/// Builds a non-2xx answer with an [`ErrorBody`].
pub fn error_response(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = ErrorBody {
        code: code.to_string(),
        message: message.into(),
    };
    (status, axum::Json(body)).into_response()
}

/// A failed cluster RPC.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("invalid peer address `{addr}`: {reason}")]
    InvalidAddress { addr: String, reason: String },
    #[error("encoding the request to http://{addr}{path}: {source}")]
    Encode {
        addr: String,
        path: String,
        source: serde_json::Error,
    },
    /// The connection could not be opened (refused, no route, DNS): the peer is down or the
    /// address is wrong.
    #[error("http://{addr}{path} is unreachable: {source}")]
    Unreachable {
        addr: String,
        path: String,
        source: hyper_util::client::legacy::Error,
    },
    /// The connection broke while the request or answer was in flight.
    #[error("http://{addr}{path} failed: {source}")]
    Transport {
        addr: String,
        path: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("http://{addr}{path} did not answer within {timeout:?}")]
    Timeout {
        addr: String,
        path: String,
        timeout: Duration,
    },
    /// The peer answered with an error status.
    #[error("http://{addr}{path} answered {status}: {code}: {message}")]
    Remote {
        addr: String,
        path: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("decoding the answer of http://{addr}{path}: {source}")]
    Decode {
        addr: String,
        path: String,
        source: serde_json::Error,
    },
}

impl RpcError {
    /// The peer could not be reached at all (as opposed to answering badly).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, RpcError::Unreachable { .. })
    }

    /// The remote error code, when the peer answered with an [`ErrorBody`].
    pub fn remote_code(&self) -> Option<&str> {
        match self {
            RpcError::Remote { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A pooled HTTP client for cluster RPC. Cheap to clone (clones share the pool).
#[derive(Clone, Debug)]
pub struct RpcClient {
    http: Client<HttpConnector, Full<Bytes>>,
}

impl Default for RpcClient {
    fn default() -> Self {
        Self::new()
    }
}

impl RpcClient {
    pub fn new() -> RpcClient {
        let mut connector = HttpConnector::new();
        // Raft heartbeats are small; do not let Nagle delay them.
        connector.set_nodelay(true);
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .build(connector);
        RpcClient { http }
    }

    /// POSTs `req` as JSON to `http://{addr}{path}` and decodes the JSON answer, all within
    /// `timeout`.
    pub async fn call<Req, Resp>(
        &self,
        addr: &str,
        path: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, RpcError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let body = serde_json::to_vec(req).map_err(|source| RpcError::Encode {
            addr: addr.to_string(),
            path: path.to_string(),
            source,
        })?;
        match tokio::time::timeout(timeout, self.exchange(addr, path, body)).await {
            Ok(result) => result,
            Err(_) => Err(RpcError::Timeout {
                addr: addr.to_string(),
                path: path.to_string(),
                timeout,
            }),
        }
    }

    async fn exchange<Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        body: Vec<u8>,
    ) -> Result<Resp, RpcError> {
        let uri = format!("http://{addr}{path}");
        let request = Request::builder()
            .method(Method::POST)
            .uri(&uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| RpcError::InvalidAddress {
                addr: addr.to_string(),
                reason: e.to_string(),
            })?;
        let response = self.http.request(request).await.map_err(|source| {
            if source.is_connect() {
                RpcError::Unreachable {
                    addr: addr.to_string(),
                    path: path.to_string(),
                    source,
                }
            } else {
                RpcError::Transport {
                    addr: addr.to_string(),
                    path: path.to_string(),
                    source: Box::new(source),
                }
            }
        })?;
        let status = response.status();
        let bytes = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|source| RpcError::Transport {
                addr: addr.to_string(),
                path: path.to_string(),
                source,
            })?
            .to_bytes();
        if !status.is_success() {
            let (code, message) = match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(e) => (e.code, e.message),
                Err(_) => ("http".to_string(), snippet(&bytes)),
            };
            return Err(RpcError::Remote {
                addr: addr.to_string(),
                path: path.to_string(),
                status: status.as_u16(),
                code,
                message,
            });
        }
        serde_json::from_slice(&bytes).map_err(|source| RpcError::Decode {
            addr: addr.to_string(),
            path: path.to_string(),
            source,
        })
    }
}

/// The start of a non-JSON error body, for the error message.
fn snippet(bytes: &[u8]) -> String {
    const MAX: usize = 512;
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX)]);
    text.trim().to_string()
}

/// [`RpcClient::call`] on a client shared by the whole process.
pub async fn call<Req, Resp>(
    addr: &str,
    path: &str,
    req: &Req,
    timeout: Duration,
) -> Result<Resp, RpcError>
where
    Req: Serialize + ?Sized,
    Resp: DeserializeOwned,
{
    static SHARED: OnceLock<RpcClient> = OnceLock::new();
    SHARED
        .get_or_init(RpcClient::new)
        .call(addr, path, req, timeout)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::post;
    use axum::{Json, Router};

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Ping {
        n: u32,
    }

    async fn serve(app: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    #[tokio::test]
    async fn round_trip_and_typed_errors() {
        let app = Router::new()
            .route(
                "/ping",
                post(|Json(p): Json<Ping>| async move { Json(Ping { n: p.n + 1 }) }),
            )
            .route(
                "/refuse",
                post(|| async {
                    error_response(StatusCode::CONFLICT, "cluster_id_mismatch", "other cluster")
                }),
            )
            .route(
                "/slow",
                post(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "late"
                }),
            );
        let addr = serve(app).await;
        let client = RpcClient::new();
        let t = Duration::from_secs(5);

        let pong: Ping = client
            .call(&addr, "/ping", &Ping { n: 1 }, t)
            .await
            .unwrap();
        assert_eq!(pong, Ping { n: 2 });
        // The pooled connection is reused for the next call.
        let pong: Ping = client
            .call(&addr, "/ping", &Ping { n: 5 }, t)
            .await
            .unwrap();
        assert_eq!(pong, Ping { n: 6 });

        let err = client
            .call::<_, Ping>(&addr, "/refuse", &Ping { n: 1 }, t)
            .await
            .unwrap_err();
        assert_eq!(err.remote_code(), Some("cluster_id_mismatch"), "{err}");

        let err = client
            .call::<_, Ping>(&addr, "/nowhere", &Ping { n: 1 }, t)
            .await
            .unwrap_err();
        assert!(matches!(err, RpcError::Remote { status: 404, .. }), "{err}");

        let err = client
            .call::<_, Ping>(&addr, "/slow", &Ping { n: 1 }, Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(matches!(err, RpcError::Timeout { .. }), "{err}");

        let err = client
            .call::<_, Ping>(&addr, "/ping", &"not a ping", t)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                RpcError::Remote {
                    status: 422 | 400,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn closed_port_is_unreachable() {
        // Bind then drop, so the port is (almost certainly) closed.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let err = call::<_, Ping>(&addr, "/ping", &Ping { n: 1 }, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(err.is_unreachable(), "{err}");
    }
}
