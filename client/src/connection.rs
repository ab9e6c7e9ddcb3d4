//! One TCP connection to one broker: size-prefixed framing, correlation ids, pipelining
//! and the ApiVersions handshake.
//!
//! Requests are encoded by the caller's task and handed to a writer task through a
//! channel, so a cancelled caller never leaves half a frame on the socket. A reader task
//! reads response frames and hands each to the caller waiting on its correlation id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Message, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, trace, warn};

use crate::config::ClientConfig;
use crate::error::{check_error, ClientError};
use crate::versions::{
    api_versions_retry_version, decode_api_versions_response, BrokerVersions,
    API_VERSIONS_PREFERRED,
};

/// Frames queued for the writer task before callers wait.
const WRITE_QUEUE: usize = 128;

type PendingMap = HashMap<i32, oneshot::Sender<Bytes>>;

/// State shared between callers and the reader/writer tasks.
struct Shared {
    addr: String,
    /// Callers waiting for a response, by correlation id. `None` once the connection closed;
    /// closing drops every sender, which wakes every waiter with "disconnected".
    pending: Mutex<Option<PendingMap>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Option<PendingMap>> {
        // No code panics while holding this lock, but stay usable if one ever did.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn close(&self) {
        let waiters = self.lock().take();
        if let Some(waiters) = waiters {
            if !waiters.is_empty() {
                debug!(addr = %self.addr, in_flight = waiters.len(), "connection closed with requests in flight");
            }
        }
    }

    fn disconnected(&self) -> ClientError {
        ClientError::Disconnected {
            addr: self.addr.clone(),
        }
    }
}

/// Removes a caller's pending entry if the caller gives up (timeout, cancellation).
struct PendingGuard<'a> {
    shared: &'a Shared,
    correlation_id: i32,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if let Some(map) = self.shared.lock().as_mut() {
            map.remove(&self.correlation_id);
        }
    }
}

/// One connection to one broker. Cheap to share behind an `Arc`; all methods take `&self`
/// and may be called concurrently (requests are pipelined).
/// A removal from the pending map that owns its connection state, for futures that outlive
/// the call that queued them.
struct OwnedPendingGuard {
    shared: Arc<Shared>,
    correlation_id: i32,
}

impl Drop for OwnedPendingGuard {
    fn drop(&mut self) {
        if let Some(map) = self.shared.lock().as_mut() {
            map.remove(&self.correlation_id);
        }
    }
}

struct RawPending {
    guard: OwnedPendingGuard,
    rx: oneshot::Receiver<Bytes>,
    timeout: Duration,
    response_header_version: i16,
    context: String,
}

/// The response to a request queued with [`Connection::dispatch_raw`].
pub struct RawResponse {
    inner: Option<RawPending>,
}

impl RawResponse {
    /// Waits for the response body (the header is checked and stripped). Dropping the
    /// response instead forgets the request; its answer is discarded when it arrives. A
    /// timeout marks the connection closed ([`Connection::is_closed`]): later answers on it
    /// would wait behind the missing one.
    pub async fn body(self) -> Result<Bytes, ClientError> {
        let Some(p) = self.inner else {
            return Ok(Bytes::new());
        };
        let mut response = match tokio::time::timeout(p.timeout, p.rx).await {
            Ok(answer) => answer.map_err(|_| p.guard.shared.disconnected())?,
            Err(_) => {
                // Answers come in request order: every later request on this connection is
                // stuck behind this one, so the connection is given up (as Kafka clients do).
                p.guard.shared.close();
                return Err(ClientError::Timeout {
                    context: p.context.clone(),
                    after: p.timeout,
                });
            }
        };
        let header =
            ResponseHeader::decode(&mut response, p.response_header_version).map_err(|e| {
                ClientError::protocol(format!("decode response header: {}", p.context), e)
            })?;
        if header.correlation_id != p.guard.correlation_id {
            return Err(ClientError::protocol(
                "match response",
                format!(
                    "expected correlation id {}, got {}",
                    p.guard.correlation_id, header.correlation_id
                ),
            ));
        }
        Ok(response)
    }
}

pub struct Connection {
    addr: String,
    config: ClientConfig,
    shared: Arc<Shared>,
    frames: mpsc::Sender<Bytes>,
    next_correlation_id: AtomicI32,
    versions: BrokerVersions,
    reader: JoinHandle<()>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.addr)
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // The writer task ends by itself once `frames` is dropped (flushing what is queued);
        // the reader would otherwise wait on the socket forever.
        self.reader.abort();
        self.shared.close();
    }
}

impl Connection {
    /// Connect to `addr` (`host:port`) and perform the ApiVersions handshake.
    pub async fn connect(addr: &str, config: ClientConfig) -> Result<Connection, ClientError> {
        let stream = tokio::time::timeout(config.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::Timeout {
                context: format!("connect to {addr}"),
                after: config.connect_timeout,
            })?
            .map_err(|e| ClientError::io(format!("connect to {addr}"), e))?;
        stream
            .set_nodelay(true)
            .map_err(|e| ClientError::io(format!("set TCP_NODELAY on {addr}"), e))?;
        let (rd, wr) = stream.into_split();
        let shared = Arc::new(Shared {
            addr: addr.to_string(),
            pending: Mutex::new(Some(HashMap::new())),
        });
        let (frames, rx) = mpsc::channel(WRITE_QUEUE);
        let reader = tokio::spawn(read_loop(rd, shared.clone(), config.max_response_size));
        tokio::spawn(write_loop(wr, rx, shared.clone()));
        let mut conn = Connection {
            addr: addr.to_string(),
            config,
            shared,
            frames,
            next_correlation_id: AtomicI32::new(0),
            versions: BrokerVersions::default(),
            reader,
        };
        conn.versions = conn.handshake().await?;
        debug!(addr, apis = conn.versions.iter().count(), "connected");
        Ok(conn)
    }

    /// The address this connection was opened to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The settings this connection uses.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The API version ranges the broker advertised on connect.
    pub fn broker_versions(&self) -> &BrokerVersions {
        &self.versions
    }

    /// Whether the connection is closed (by the peer, an I/O error or a framing error).
    /// A closed connection fails every request with [`ClientError::Disconnected`].
    pub fn is_closed(&self) -> bool {
        self.shared.lock().is_none()
    }

    /// Send `req` at the highest version supported by both this crate and the broker.
    pub async fn send<R: Request>(&self, req: R) -> Result<R::Response, ClientError> {
        let version = self.versions.negotiate(R::KEY, R::VERSIONS, None)?;
        self.send_inner(&req, version, self.config.request_timeout)
            .await
    }

    /// Like [`Connection::send`], but never above `max_version`.
    pub async fn send_with_max<R: Request>(
        &self,
        req: R,
        max_version: i16,
    ) -> Result<R::Response, ClientError> {
        let version = self
            .versions
            .negotiate(R::KEY, R::VERSIONS, Some(max_version))?;
        self.send_inner(&req, version, self.config.request_timeout)
            .await
    }

    /// Send `req` at exactly `version`, whatever the broker advertised (the version must be
    /// one this crate can encode).
    pub async fn send_version<R: Request>(
        &self,
        req: R,
        version: i16,
    ) -> Result<R::Response, ClientError> {
        self.send_inner(&req, version, self.config.request_timeout)
            .await
    }

    /// Send a request body as given (the header is added) and return the response body
    /// (the header is stripped). Useful for malformed-request tests.
    pub async fn send_raw(
        &self,
        api_key: i16,
        version: i16,
        body: Bytes,
    ) -> Result<Bytes, ClientError> {
        let key = ApiKey::try_from(api_key)
            .map_err(|_| ClientError::InvalidArgument(format!("unknown api key {api_key}")))?;
        self.roundtrip(
            api_key,
            version,
            key.request_header_version(version),
            key.response_header_version(version),
            |buf| {
                buf.put_slice(&body);
                Ok(())
            },
            self.config.request_timeout,
        )
        .await
    }

    /// Queues an already encoded request body (the header is added, with `client_id` when
    /// given) and returns the future of its response body. Requests dispatched one after
    /// another are written in that order, whenever their responses are awaited: what a proxy
    /// needs to keep a client's order. `expect_response` false is for Produce with acks=0:
    /// nothing is awaited and the future resolves to an empty body at once.
    pub async fn dispatch_raw(
        &self,
        api: ApiKey,
        version: i16,
        client_id: Option<&str>,
        body: Bytes,
        expect_response: bool,
        timeout: Duration,
    ) -> Result<RawResponse, ClientError> {
        let (correlation_id, frame) = self.frame(
            api as i16,
            version,
            api.request_header_version(version),
            client_id,
            |buf| {
                buf.put_slice(&body);
                Ok(())
            },
        )?;
        if !expect_response {
            self.queue(frame, timeout).await?;
            return Ok(RawResponse { inner: None });
        }
        let (tx, rx) = oneshot::channel();
        match self.shared.lock().as_mut() {
            Some(map) => {
                map.insert(correlation_id, tx);
            }
            None => return Err(self.shared.disconnected()),
        }
        let guard = OwnedPendingGuard {
            shared: self.shared.clone(),
            correlation_id,
        };
        self.queue(frame, timeout).await?;
        Ok(RawResponse {
            inner: Some(RawPending {
                guard,
                rx,
                timeout,
                response_header_version: api.response_header_version(version),
                context: format!(
                    "api key {api:?} v{version} correlation id {correlation_id} to {}",
                    self.addr
                ),
            }),
        })
    }

    pub(crate) async fn send_inner<R: Request>(
        &self,
        req: &R,
        version: i16,
        timeout: Duration,
    ) -> Result<R::Response, ClientError> {
        check_encodable::<R>(version)?;
        let body = self
            .roundtrip(
                R::KEY,
                version,
                R::header_version(version),
                R::Response::header_version(version),
                |buf| encode_body(req, version, buf),
                timeout,
            )
            .await?;
        decode_body::<R::Response>(body, version, R::KEY)
    }

    /// Send a request the broker will not answer (Produce with acks=0).
    pub(crate) async fn send_oneway<R: Request>(
        &self,
        req: &R,
        version: i16,
    ) -> Result<(), ClientError> {
        check_encodable::<R>(version)?;
        let (_, frame) = self.frame(R::KEY, version, R::header_version(version), None, |buf| {
            encode_body(req, version, buf)
        })?;
        if self.is_closed() {
            return Err(self.shared.disconnected());
        }
        self.queue(frame, self.config.request_timeout).await
    }

    /// Encode a request frame (length prefix, header, body) with a fresh correlation id.
    /// `client_id` replaces the configured one (a proxy passing on its client's id).
    fn frame(
        &self,
        api_key: i16,
        version: i16,
        header_version: i16,
        client_id: Option<&str>,
        encode: impl FnOnce(&mut BytesMut) -> Result<(), ClientError>,
    ) -> Result<(i32, Bytes), ClientError> {
        let correlation_id = self.next_correlation_id.fetch_add(1, Ordering::Relaxed);
        let client_id = client_id.unwrap_or(&self.config.client_id).to_string();
        let header = RequestHeader::default()
            .with_request_api_key(api_key)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_string(client_id)));
        let mut buf = BytesMut::with_capacity(128);
        buf.put_i32(0); // length, patched below
        header.encode(&mut buf, header_version).map_err(|e| {
            ClientError::protocol(format!("encode header for api key {api_key}"), e)
        })?;
        encode(&mut buf)?;
        let len = i32::try_from(buf.len() - 4).map_err(|_| {
            ClientError::InvalidArgument(format!("request of {} bytes is too large", buf.len()))
        })?;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        Ok((correlation_id, buf.freeze()))
    }

    async fn queue(&self, frame: Bytes, timeout: Duration) -> Result<(), ClientError> {
        tokio::time::timeout(timeout, self.frames.send(frame))
            .await
            .map_err(|_| ClientError::Timeout {
                context: format!("queue request to {}", self.addr),
                after: timeout,
            })?
            .map_err(|_| self.shared.disconnected())
    }

    /// Send one request and wait for its response; returns the body after the header.
    async fn roundtrip(
        &self,
        api_key: i16,
        version: i16,
        header_version: i16,
        response_header_version: i16,
        encode: impl FnOnce(&mut BytesMut) -> Result<(), ClientError>,
        timeout: Duration,
    ) -> Result<Bytes, ClientError> {
        let (correlation_id, frame) = self.frame(api_key, version, header_version, None, encode)?;
        let (tx, rx) = oneshot::channel();
        match self.shared.lock().as_mut() {
            Some(map) => {
                map.insert(correlation_id, tx);
            }
            None => return Err(self.shared.disconnected()),
        }
        let _guard = PendingGuard {
            shared: &self.shared,
            correlation_id,
        };
        trace!(addr = %self.addr, api_key, version, correlation_id, "send");
        let exchange = async {
            self.frames
                .send(frame)
                .await
                .map_err(|_| self.shared.disconnected())?;
            rx.await.map_err(|_| self.shared.disconnected())
        };
        let mut response = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout {
                context: format!(
                    "api key {api_key} v{version} correlation id {correlation_id} to {}",
                    self.addr
                ),
                after: timeout,
            })??;
        let header =
            ResponseHeader::decode(&mut response, response_header_version).map_err(|e| {
                ClientError::protocol(format!("decode response header for api key {api_key}"), e)
            })?;
        if header.correlation_id != correlation_id {
            // The reader routes by this id, so this would be a bug in the reader.
            return Err(ClientError::protocol(
                "match response",
                format!(
                    "expected correlation id {correlation_id}, got {}",
                    header.correlation_id
                ),
            ));
        }
        Ok(response)
    }

    async fn handshake(&self) -> Result<BrokerVersions, ClientError> {
        let mut version = API_VERSIONS_PREFERRED.min(ApiVersionsRequest::VERSIONS.max);
        let mut resp = self.api_versions(version).await?;
        if let Some(retry) = api_versions_retry_version(&resp, version) {
            debug!(addr = %self.addr, from = version, to = retry, "broker refused ApiVersions version, retrying (KIP-511)");
            version = retry;
            resp = self.api_versions(version).await?;
        }
        check_error(resp.error_code, None, || {
            format!("ApiVersions v{version} to {}", self.addr)
        })?;
        Ok(BrokerVersions::from_response(&resp))
    }

    async fn api_versions(&self, version: i16) -> Result<ApiVersionsResponse, ClientError> {
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("sluice-client"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let body = self
            .roundtrip(
                ApiKey::ApiVersions as i16,
                version,
                ApiVersionsRequest::header_version(version),
                ApiVersionsResponse::header_version(version),
                |buf| encode_body(&req, version, buf),
                self.config.request_timeout,
            )
            .await?;
        decode_api_versions_response(body, version)
    }
}

fn check_encodable<R: Request>(version: i16) -> Result<(), ClientError> {
    let ours = R::VERSIONS;
    if version < ours.min || version > ours.max {
        return Err(ClientError::UnsupportedVersion {
            api: R::KEY,
            client_range: ours,
            broker_range: None,
        });
    }
    Ok(())
}

fn encode_body<T: Encodable>(
    body: &T,
    version: i16,
    buf: &mut BytesMut,
) -> Result<(), ClientError> {
    body.encode(buf, version)
        .map_err(|e| ClientError::protocol(format!("encode request body v{version}"), e))
}

/// Decode a response body, rejecting trailing bytes (they mean the two sides disagree on
/// the version's layout).
pub(crate) fn decode_body<T: Decodable>(
    mut body: Bytes,
    version: i16,
    api_key: i16,
) -> Result<T, ClientError> {
    let context = || format!("decode response for api key {api_key} v{version}");
    let decoded = T::decode(&mut body, version).map_err(|e| ClientError::protocol(context(), e))?;
    if body.has_remaining() {
        return Err(ClientError::protocol(
            context(),
            format!("{} trailing bytes", body.remaining()),
        ));
    }
    Ok(decoded)
}

async fn read_loop(rd: OwnedReadHalf, shared: Arc<Shared>, max_frame: usize) {
    let mut rd = BufReader::new(rd);
    let outcome: std::io::Result<()> = async {
        loop {
            let len = rd.read_i32().await?;
            if len < 4 || len as usize > max_frame {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("response frame size {len} outside 4..={max_frame}"),
                ));
            }
            let mut frame = BytesMut::zeroed(len as usize);
            rd.read_exact(&mut frame).await?;
            let frame = frame.freeze();
            let correlation_id = (&frame[..4]).get_i32();
            let waiter = shared
                .lock()
                .as_mut()
                .and_then(|m| m.remove(&correlation_id));
            match waiter {
                // The caller may have given up in the meantime; nothing to do then.
                Some(tx) => drop(tx.send(frame)),
                None => debug!(addr = %shared.addr, correlation_id, "response nobody waits for"),
            }
        }
    }
    .await;
    match outcome {
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            debug!(addr = %shared.addr, "connection closed by broker")
        }
        Err(e) => warn!(addr = %shared.addr, error = %e, "connection read failed"),
        Ok(()) => {}
    }
    shared.close();
}

async fn write_loop(wr: OwnedWriteHalf, mut frames: mpsc::Receiver<Bytes>, shared: Arc<Shared>) {
    let mut wr = BufWriter::new(wr);
    while let Some(frame) = frames.recv().await {
        let mut result = wr.write_all(&frame).await;
        // Coalesce whatever else is queued into the same flush.
        while result.is_ok() {
            match frames.try_recv() {
                Ok(frame) => result = wr.write_all(&frame).await,
                Err(_) => break,
            }
        }
        if result.is_ok() {
            result = wr.flush().await;
        }
        if let Err(e) = result {
            warn!(addr = %shared.addr, error = %e, "connection write failed");
            shared.close();
            return;
        }
    }
    // The Connection was dropped: close our side.
    let _ = wr.shutdown().await;
}
