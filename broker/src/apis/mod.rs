//! Request handlers, one module per API family. `handle` decodes a request body, runs its
//! handler and encodes the reply; the network layer only moves frames.

mod api_versions;
mod cluster;
mod configs;
mod fetch;
mod groups;
mod list_offsets;
mod metadata;
mod offsets;
mod produce;
mod producer_id;
mod quorum;
mod reassignments;
mod topics;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::Encodable;

use crate::broker::Broker;
use crate::protocol::versions::is_supported;
use crate::protocol::{decode_body, encode_response, DecodeError, RequestFrame};

/// What the connection sends back for one request, in request order.
pub enum Reply {
    /// No response at all (Produce with acks=0).
    Nothing,
    /// An encoded response frame.
    Ready(Bytes),
    /// A response that completes later (a long-poll fetch, a produce waiting for fsync).
    /// Later requests on the connection are handled meanwhile; responses stay in order.
    /// `None` closes the connection.
    Later(Pin<Box<dyn Future<Output = Option<Bytes>> + Send>>),
    /// Close the connection (the response could not be encoded).
    Close,
}

/// The parts of a request header a handler needs.
#[derive(Debug, Clone, Copy)]
pub struct RequestContext {
    pub api: ApiKey,
    pub version: i16,
    pub correlation_id: i32,
    pub received: Instant,
    /// The client's address, shown as a group member's host.
    pub peer: Option<std::net::IpAddr>,
    /// Index into `broker.listeners` of the listener the request came in on: answers carry
    /// that listener's addresses.
    pub listener: usize,
}

impl RequestContext {
    /// The name of the listener the request came in on.
    pub fn listener_name<'a>(&self, broker: &'a Broker) -> &'a str {
        &broker.listeners[self.listener].name
    }

    /// Encodes `body` as this request's response and records its metrics.
    pub fn respond<T: Encodable>(&self, broker: &Broker, body: &T) -> Option<Bytes> {
        match encode_response(self.api, self.version, self.correlation_id, body) {
            Ok(frame) => {
                broker
                    .metrics
                    .record_request(self.api, self.received.elapsed(), frame.len());
                Some(frame)
            }
            Err(e) => {
                // Only values the protocol cannot carry get here; the connection is closed.
                tracing::error!(api = ?self.api, version = self.version, error = %e, "cannot encode response");
                None
            }
        }
    }
}

/// Decodes and handles one request. An error closes the connection, as Kafka does for
/// unknown APIs, unsupported versions (except ApiVersions) and malformed requests.
pub async fn handle(
    broker: &Arc<Broker>,
    frame: RequestFrame,
    peer: Option<std::net::IpAddr>,
    listener: usize,
) -> Result<Reply, DecodeError> {
    let ctx = RequestContext {
        api: frame.api,
        version: frame.version,
        correlation_id: frame.header.correlation_id,
        received: Instant::now(),
        peer,
        listener,
    };
    if ctx.api == ApiKey::ApiVersions {
        return Ok(ready(api_versions::handle(broker, &ctx, &frame)));
    }
    if !is_supported(ctx.api, ctx.version) {
        return Err(DecodeError::Malformed {
            api: ctx.api,
            version: ctx.version,
            reason: "unsupported API or version".into(),
        });
    }
    let reply = match ctx.api {
        ApiKey::Produce => {
            return Ok(produce::handle(
                broker,
                ctx,
                decode_body(&frame)?,
                frame.body.len(),
            ))
        }
        ApiKey::Fetch => return Ok(fetch::handle(broker, ctx, decode_body(&frame)?)),
        ApiKey::Metadata => ctx.respond(
            broker,
            &metadata::handle(broker, &ctx, decode_body(&frame)?).await,
        ),
        ApiKey::ListOffsets => ctx.respond(
            broker,
            &list_offsets::handle(broker, &ctx, decode_body(&frame)?),
        ),
        ApiKey::CreateTopics => ctx.respond(
            broker,
            &topics::create_topics(broker, &ctx, decode_body(&frame)?).await,
        ),
        ApiKey::DeleteTopics => ctx.respond(
            broker,
            &topics::delete_topics(broker, &ctx, decode_body(&frame)?).await,
        ),
        ApiKey::CreatePartitions => ctx.respond(
            broker,
            &topics::create_partitions(broker, decode_body(&frame)?).await,
        ),
        ApiKey::DescribeConfigs => ctx.respond(
            broker,
            &configs::describe_configs(broker, &ctx, decode_body(&frame)?),
        ),
        ApiKey::AlterConfigs => ctx.respond(
            broker,
            &configs::alter_configs(broker, decode_body(&frame)?).await,
        ),
        ApiKey::IncrementalAlterConfigs => ctx.respond(
            broker,
            &configs::incremental_alter_configs(broker, decode_body(&frame)?).await,
        ),
        ApiKey::DescribeCluster => ctx.respond(
            broker,
            &cluster::describe_cluster(broker, &ctx, decode_body(&frame)?),
        ),
        ApiKey::InitProducerId => ctx.respond(
            broker,
            &producer_id::init_producer_id(broker, decode_body(&frame)?).await,
        ),
        ApiKey::AlterPartitionReassignments => ctx.respond(
            broker,
            &reassignments::alter(broker, decode_body(&frame)?).await,
        ),
        ApiKey::ListPartitionReassignments => {
            ctx.respond(broker, &reassignments::list(broker, decode_body(&frame)?))
        }
        ApiKey::DescribeQuorum => ctx.respond(
            broker,
            &quorum::describe(&decode_body(&frame)?, broker.quorum.describe().as_ref()),
        ),
        ApiKey::UnregisterBroker => ctx.respond(
            broker,
            &reassignments::unregister_broker(broker, decode_body(&frame)?).await,
        ),
        ApiKey::FindCoordinator => ctx.respond(
            broker,
            &groups::find_coordinator(broker, &ctx, decode_body(&frame)?),
        ),
        ApiKey::JoinGroup => {
            let client_id = frame
                .header
                .client_id
                .as_ref()
                .map(|c| c.to_string())
                .unwrap_or_default();
            return Ok(groups::join_group(
                broker,
                ctx,
                decode_body(&frame)?,
                client_id,
            ));
        }
        ApiKey::SyncGroup => return Ok(groups::sync_group(broker, ctx, decode_body(&frame)?)),
        ApiKey::Heartbeat => ctx.respond(broker, &groups::heartbeat(broker, decode_body(&frame)?)),
        ApiKey::LeaveGroup => ctx.respond(
            broker,
            &groups::leave_group(broker, &ctx, decode_body(&frame)?),
        ),
        ApiKey::ListGroups => {
            ctx.respond(broker, &groups::list_groups(broker, decode_body(&frame)?))
        }
        ApiKey::DescribeGroups => ctx.respond(
            broker,
            &groups::describe_groups(broker, decode_body(&frame)?),
        ),
        ApiKey::DeleteGroups => {
            ctx.respond(broker, &groups::delete_groups(broker, decode_body(&frame)?))
        }
        ApiKey::OffsetCommit => {
            return Ok(offsets::offset_commit(broker, ctx, decode_body(&frame)?))
        }
        ApiKey::OffsetFetch => ctx.respond(
            broker,
            &offsets::offset_fetch(broker, &ctx, decode_body(&frame)?),
        ),
        ApiKey::OffsetDelete => ctx.respond(
            broker,
            &offsets::offset_delete(broker, decode_body(&frame)?),
        ),
        other => unreachable!("{other:?} is advertised in SUPPORTED_APIS but has no handler"),
    };
    Ok(ready(reply))
}

/// The error for a partition this broker does not host: NOT_LEADER_OR_FOLLOWER when it exists
/// on other brokers (the client's metadata is stale), KAFKA_STORAGE_ERROR when it is assigned
/// here but could not be opened, UNKNOWN_TOPIC_OR_PARTITION when it does not exist.
fn missing_partition(broker: &Broker, topic: &str, index: i32) -> kafka_protocol::ResponseError {
    use kafka_protocol::ResponseError;
    match broker
        .metadata
        .current()
        .topic(topic)
        .and_then(|t| t.partitions.get(&index))
    {
        Some(p) if p.replicas.contains(&broker.config.node_id) => ResponseError::KafkaStorageError,
        Some(_) => ResponseError::NotLeaderOrFollower,
        None => ResponseError::UnknownTopicOrPartition,
    }
}

fn ready(frame: Option<Bytes>) -> Reply {
    frame.map_or(Reply::Close, Reply::Ready)
}
