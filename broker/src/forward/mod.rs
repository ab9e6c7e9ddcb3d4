//! Forwarding listeners: one address (a `kubectl port-forward` to any broker) serves the whole
//! cluster. Every broker advertises the same address there, so a client sends whatever it
//! means for broker N to the one broker it reaches; that broker sends on what it does not own
//! (partitions it does not lead, groups it does not coordinate, another broker's configs) to
//! the owner over the inter-broker listener, and returns the owner's answer.
//!
//! * A request owned by one other broker is relayed as it is: its bytes, the client's id in the
//!   header, the owner's answer bytes back. The owner checks everything (leadership, producer
//!   sequences, group generations) as for a direct client.
//! * A request whose partitions have several leaders (the client's metadata is older than
//!   ours) is split, each part sent to its leader (this broker too, over its own listener), and
//!   the answers merged ([`partitioned`]).
//! * Each client connection has its own connections to the owners, and requests are queued on
//!   them in the client's order, so order per partition (idempotent producers) is kept.
//! * An owner that cannot be reached gives a partition NOT_LEADER_OR_FOLLOWER (the client
//!   refreshes metadata and retries); for group and admin requests the client's connection is
//!   closed, which is what a client sees when a coordinator dies.

pub mod partitioned;
pub mod routes;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    ApiKey, DeleteGroupsRequest, DescribeConfigsRequest, DescribeGroupsRequest, FetchRequest,
    HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, ListGroupsResponse, ListOffsetsRequest,
    OffsetCommitRequest, OffsetDeleteRequest, OffsetFetchRequest, ProduceRequest, SyncGroupRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable};
use sluice_client::{ClientConfig, ClientError, Connection, RawResponse};
use tokio::sync::Mutex;

use self::partitioned::{PartitionedRequest, Slot};
use self::routes::{coordinator_of, leader_of, route, Route};
use crate::apis::Reply;
use crate::broker::Broker;
use crate::network::listeners::join_host_port;
use crate::protocol::codec::encode_raw_response;
use crate::protocol::versions::is_supported;
use crate::protocol::{decode_body, encode_response, RequestFrame};

/// Kafka's `ConfigResource.Type.BROKER`.
const BROKER_RESOURCE: i8 = 4;
/// Added to a group request's own wait (a rebalance) before giving up on the coordinator.
const GRACE: Duration = Duration::from_secs(30);
/// Added to a Produce's `timeout_ms` or a Fetch's `max_wait_ms` before the leader counts as
/// unreachable (a frozen process answers nothing): the client then gets NOT_LEADER_OR_FOLLOWER
/// well within its own request timeout, and refreshes metadata.
const PARTITION_GRACE: Duration = Duration::from_secs(5);
/// For requests without a wait of their own.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The answer to send when the owner does not answer.
type Fallback = Box<dyn FnOnce() -> Option<Bytes> + Send>;

/// What forwarding decided for one request.
pub enum Forwarded {
    /// This broker answers it as usual.
    Local,
    /// The answer, from the owner(s).
    Reply(Reply),
}

/// One client connection's forwarding state: its connections to the other brokers.
pub struct Forwarder {
    broker: Arc<Broker>,
    peers: Mutex<HashMap<i32, Arc<Connection>>>,
}

impl Forwarder {
    pub fn new(broker: Arc<Broker>) -> Forwarder {
        Forwarder {
            broker,
            peers: Mutex::new(HashMap::new()),
        }
    }

    /// Routes one request. Decoding errors are left to the local handler, which closes the
    /// connection with the reason.
    pub async fn forward(&self, frame: &RequestFrame) -> Forwarded {
        if frame.api == ApiKey::ApiVersions || !is_supported(frame.api, frame.version) {
            return Forwarded::Local;
        }
        let image = self.broker.metadata.current();
        let me = self.broker.config.node_id;
        let groups_partitions = self.broker.config.offsets_topic_num_partitions;
        let coordinator = |group: &str| coordinator_of(&image, group, groups_partitions);
        let one_group = |group: &str| match coordinator(group) {
            Some(id) if id != me => Route::Peer(id),
            _ => Route::Local,
        };
        let whole = |group_route: Route<()>, timeout: Duration| (group_route, timeout);
        let (target, timeout) = match frame.api {
            ApiKey::Produce => {
                let Ok(request) = decode_body::<ProduceRequest>(frame) else {
                    return Forwarded::Local;
                };
                let timeout = millis(request.timeout_ms) + PARTITION_GRACE;
                let expect_response = request.acks != 0;
                return self
                    .partitioned(frame, request, timeout, expect_response)
                    .await;
            }
            ApiKey::Fetch => {
                let Ok(request) = decode_body::<FetchRequest>(frame) else {
                    return Forwarded::Local;
                };
                // Follower fetches never come in on a forwarding listener; a consumer's do.
                let timeout = millis(request.max_wait_ms) + PARTITION_GRACE;
                return self.partitioned(frame, request, timeout, true).await;
            }
            ApiKey::ListOffsets => {
                let Ok(request) = decode_body::<ListOffsetsRequest>(frame) else {
                    return Forwarded::Local;
                };
                return self
                    .partitioned(frame, request, PARTITION_GRACE * 2, true)
                    .await;
            }
            ApiKey::JoinGroup => match decode_body::<JoinGroupRequest>(frame) {
                Ok(r) => {
                    let wait = if frame.version >= 1 {
                        r.rebalance_timeout_ms
                    } else {
                        r.session_timeout_ms
                    };
                    whole(one_group(&r.group_id.0), millis(wait) + GRACE)
                }
                Err(_) => return Forwarded::Local,
            },
            ApiKey::SyncGroup => match decode_body::<SyncGroupRequest>(frame) {
                Ok(r) => whole(one_group(&r.group_id.0), DEFAULT_TIMEOUT),
                Err(_) => return Forwarded::Local,
            },
            ApiKey::Heartbeat => match decode_body::<HeartbeatRequest>(frame) {
                Ok(r) => whole(one_group(&r.group_id.0), DEFAULT_TIMEOUT),
                Err(_) => return Forwarded::Local,
            },
            ApiKey::LeaveGroup => match decode_body::<LeaveGroupRequest>(frame) {
                Ok(r) => whole(one_group(&r.group_id.0), DEFAULT_TIMEOUT),
                Err(_) => return Forwarded::Local,
            },
            ApiKey::OffsetCommit => match decode_body::<OffsetCommitRequest>(frame) {
                Ok(r) => whole(one_group(&r.group_id.0), DEFAULT_TIMEOUT),
                Err(_) => return Forwarded::Local,
            },
            ApiKey::OffsetDelete => match decode_body::<OffsetDeleteRequest>(frame) {
                Ok(r) => whole(one_group(&r.group_id.0), DEFAULT_TIMEOUT),
                Err(_) => return Forwarded::Local,
            },
            ApiKey::OffsetFetch => match decode_body::<OffsetFetchRequest>(frame) {
                Ok(r) if frame.version >= 8 => whole(
                    self.all_to_one(r.groups.iter().map(|g| coordinator(&g.group_id.0))),
                    DEFAULT_TIMEOUT,
                ),
                Ok(r) => whole(one_group(&r.group_id.0), DEFAULT_TIMEOUT),
                Err(_) => return Forwarded::Local,
            },
            ApiKey::DescribeGroups => match decode_body::<DescribeGroupsRequest>(frame) {
                Ok(r) => whole(
                    self.all_to_one(r.groups.iter().map(|g| coordinator(&g.0))),
                    DEFAULT_TIMEOUT,
                ),
                Err(_) => return Forwarded::Local,
            },
            ApiKey::DeleteGroups => match decode_body::<DeleteGroupsRequest>(frame) {
                Ok(r) => whole(
                    self.all_to_one(r.groups_names.iter().map(|g| coordinator(&g.0))),
                    DEFAULT_TIMEOUT,
                ),
                Err(_) => return Forwarded::Local,
            },
            ApiKey::DescribeConfigs => match decode_body::<DescribeConfigsRequest>(frame) {
                Ok(r) => whole(
                    self.all_to_one(r.resources.iter().map(|res| {
                        (res.resource_type == BROKER_RESOURCE)
                            .then(|| res.resource_name.parse::<i32>().ok())
                            .flatten()
                            .filter(|id| image.brokers.get(id).is_some_and(|b| !b.fenced))
                    })),
                    DEFAULT_TIMEOUT,
                ),
                Err(_) => return Forwarded::Local,
            },
            // A client asks every broker for its groups; here they are all one address, so
            // this broker asks them all.
            ApiKey::ListGroups => return self.list_groups(frame).await,
            _ => return Forwarded::Local,
        };
        match target {
            Route::Peer(id) => Forwarded::Reply(self.relay(id, frame, true, timeout, None).await),
            _ => Forwarded::Local,
        }
    }

    /// The one broker owning every key, if there is one and it is not this broker.
    fn all_to_one(&self, owners: impl Iterator<Item = Option<i32>>) -> Route<()> {
        let me = self.broker.config.node_id;
        route(me, owners.map(|o| ((), o)), |(_, o)| *o).map_keys()
    }

    /// Produce, Fetch, ListOffsets: to the partitions' leaders.
    async fn partitioned<R>(
        &self,
        frame: &RequestFrame,
        request: R,
        timeout: Duration,
        expect_response: bool,
    ) -> Forwarded
    where
        R: PartitionedRequest + Send + 'static,
        R::Response: Send,
    {
        let image = self.broker.metadata.current();
        let me = self.broker.config.node_id;
        let partitions = request.partitions();
        let target = route(me, partitions, |(_, topic, p)| leader_of(&image, topic, *p));
        match target {
            Route::Local => Forwarded::Local,
            Route::Peer(id) => {
                let (api, version, correlation_id) =
                    (frame.api, frame.version, frame.header.correlation_id);
                let broker = self.broker.clone();
                let fallback: Fallback = Box::new(move || {
                    respond_bytes(
                        &broker,
                        api,
                        version,
                        correlation_id,
                        &request.unreachable(),
                    )
                });
                Forwarded::Reply(
                    self.relay(id, frame, expect_response, timeout, Some(fallback))
                        .await,
                )
            }
            Route::Split(parts) => {
                let mut pending = Vec::with_capacity(parts.len());
                for (id, keys) in parts {
                    let slots: Vec<Slot> = keys.into_iter().map(|(slot, _, _)| slot).collect();
                    let part = request.subset(&slots);
                    let sent = match encode(&part, frame.version) {
                        Some(body) => {
                            self.dispatch(id, frame, body, expect_response, timeout)
                                .await
                        }
                        None => Err(ClientError::InvalidArgument("cannot encode".into())),
                    };
                    pending.push((part, sent));
                }
                if !expect_response {
                    return Forwarded::Reply(Reply::Nothing);
                }
                let version = frame.version;
                let correlation_id = frame.header.correlation_id;
                let api = frame.api;
                let broker = self.broker.clone();
                Forwarded::Reply(Reply::Later(Box::pin(async move {
                    let mut answers = Vec::with_capacity(pending.len());
                    for (part, sent) in pending {
                        let answer = match sent {
                            Ok(response) => response
                                .body()
                                .await
                                .ok()
                                .and_then(|body| decode::<R::Response>(body, version)),
                            Err(_) => None,
                        };
                        answers.push(answer.unwrap_or_else(|| part.unreachable()));
                    }
                    let merged = request.merge(answers);
                    respond_bytes(&broker, api, version, correlation_id, &merged)
                })))
            }
        }
    }

    /// ListGroups to every live broker, the groups merged.
    async fn list_groups(&self, frame: &RequestFrame) -> Forwarded {
        let image = self.broker.metadata.current();
        let mut pending = Vec::new();
        for id in image.live_brokers().map(|b| b.id) {
            match self
                .dispatch(id, frame, frame.body.clone(), true, DEFAULT_TIMEOUT)
                .await
            {
                Ok(response) => pending.push((id, response)),
                Err(e) => tracing::info!(peer = id, error = %e, "ListGroups not forwarded"),
            }
        }
        let version = frame.version;
        let correlation_id = frame.header.correlation_id;
        let broker = self.broker.clone();
        Forwarded::Reply(Reply::Later(Box::pin(async move {
            let mut merged = ListGroupsResponse::default();
            let mut seen = std::collections::BTreeSet::new();
            for (id, response) in pending {
                let answer = match response.body().await {
                    Ok(body) => decode::<ListGroupsResponse>(body, version),
                    Err(e) => {
                        tracing::info!(peer = id, error = %e, "ListGroups unanswered");
                        None
                    }
                };
                let Some(answer) = answer else {
                    merged.error_code =
                        kafka_protocol::ResponseError::CoordinatorNotAvailable.code();
                    continue;
                };
                if merged.error_code == 0 {
                    merged.error_code = answer.error_code;
                }
                let groups: Vec<ListedGroup> = answer.groups;
                for g in groups {
                    if seen.insert(g.group_id.0.to_string()) {
                        merged.groups.push(g);
                    }
                }
            }
            respond_bytes(
                &broker,
                ApiKey::ListGroups,
                version,
                correlation_id,
                &merged,
            )
        })))
    }

    /// Sends the request's own bytes to `id` and answers with the owner's bytes. When the
    /// owner does not answer (gone, or silent past `timeout`), the client gets `fallback`'s
    /// answer, or a closed connection without one.
    async fn relay(
        &self,
        id: i32,
        frame: &RequestFrame,
        expect_response: bool,
        timeout: Duration,
        fallback: Option<Fallback>,
    ) -> Reply {
        let response = match self
            .dispatch(id, frame, frame.body.clone(), expect_response, timeout)
            .await
        {
            Ok(response) => response,
            Err(e) => {
                tracing::info!(peer = id, api = ?frame.api, error = %e, "cannot forward");
                return match fallback.and_then(|answer| answer()) {
                    Some(bytes) if expect_response => Reply::Ready(bytes),
                    Some(_) => Reply::Nothing,
                    // No answer of its own: the client's connection closes, as when its
                    // coordinator dies.
                    None => Reply::Close,
                };
            }
        };
        self.broker.metrics.forwarded(frame.api);
        if !expect_response {
            return Reply::Nothing;
        }
        let (api, version, correlation_id) =
            (frame.api, frame.version, frame.header.correlation_id);
        Reply::Later(Box::pin(async move {
            match response.body().await {
                Ok(body) => match encode_raw_response(api, version, correlation_id, &body) {
                    Ok(bytes) => Some(bytes),
                    Err(e) => {
                        tracing::error!(?api, error = %e, "cannot frame a forwarded answer");
                        None
                    }
                },
                Err(e) => match fallback {
                    Some(answer) => {
                        tracing::info!(?api, error = %e, "forwarded request unanswered; answering with a retriable error");
                        answer()
                    }
                    // The owner went away with the request in flight: the client sees a broken
                    // connection, as it would with the owner itself, and retries.
                    None => {
                        tracing::info!(?api, error = %e, "forwarded request unanswered; closing");
                        None
                    }
                },
            }
        }))
    }

    /// Queues a request body for broker `id` on this client's connection to it.
    async fn dispatch(
        &self,
        id: i32,
        frame: &RequestFrame,
        body: Bytes,
        expect_response: bool,
        timeout: Duration,
    ) -> Result<RawResponse, ClientError> {
        let conn = self.peer(id).await?;
        let client_id = frame.header.client_id.as_ref().map(|c| c.as_str());
        conn.dispatch_raw(
            frame.api,
            frame.version,
            client_id,
            body,
            expect_response,
            timeout,
        )
        .await
    }

    /// This client's connection to broker `id` (its inter-broker listener), opened on first use
    /// and again after it broke.
    async fn peer(&self, id: i32) -> Result<Arc<Connection>, ClientError> {
        let mut peers = self.peers.lock().await;
        if let Some(conn) = peers.get(&id).filter(|c| !c.is_closed()) {
            return Ok(conn.clone());
        }
        let address = self
            .broker
            .metadata
            .current()
            .brokers
            .get(&id)
            .map(|b| join_host_port(&b.host, b.port))
            .ok_or_else(|| {
                ClientError::InvalidArgument(format!("broker {id} is not registered"))
            })?;
        let config = ClientConfig {
            client_id: format!("sluice-forward-{}", self.broker.config.node_id),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            ..ClientConfig::default()
        };
        let conn = Arc::new(Connection::connect(&address, config).await?);
        peers.insert(id, conn.clone());
        Ok(conn)
    }
}

impl<K> Route<K> {
    fn map_keys(self) -> Route<()> {
        match self {
            Route::Local => Route::Local,
            Route::Peer(id) => Route::Peer(id),
            Route::Split(parts) => Route::Split(
                parts
                    .into_iter()
                    .map(|(id, keys)| (id, keys.into_iter().map(|_| ()).collect()))
                    .collect(),
            ),
        }
    }
}

fn respond_bytes<T: Encodable>(
    broker: &Broker,
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> Option<Bytes> {
    match encode_response(api, version, correlation_id, body) {
        Ok(bytes) => {
            broker.metrics.forwarded(api);
            Some(bytes)
        }
        Err(e) => {
            tracing::error!(?api, version, error = %e, "cannot encode a merged answer");
            None
        }
    }
}

fn millis(ms: i32) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn encode<T: Encodable>(body: &T, version: i16) -> Option<Bytes> {
    let mut buf = BytesMut::new();
    body.encode(&mut buf, version).ok()?;
    Some(buf.freeze())
}

fn decode<T: Decodable>(mut body: Bytes, version: i16) -> Option<T> {
    T::decode(&mut body, version).ok()
}
