//! OffsetCommit, OffsetFetch and OffsetDelete: committed offsets of consumer groups.

use std::sync::Arc;

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{Reply, RequestContext};
use crate::broker::Broker;
use crate::clock::now_ms;
use crate::config::FlushPolicy;
use crate::coordinator::offsets_topic::CommittedOffset;

pub fn offset_commit(
    broker: &Arc<Broker>,
    ctx: RequestContext,
    request: OffsetCommitRequest,
) -> Reply {
    let group = request.group_id.0.to_string();
    let now = now_ms();
    let mut order: Vec<(TopicName, Vec<i32>)> = Vec::new();
    let mut offsets = Vec::new();
    for t in request.topics {
        let name = t.name.0.to_string();
        order.push((
            t.name.clone(),
            t.partitions.iter().map(|p| p.partition_index).collect(),
        ));
        for p in t.partitions {
            let value = CommittedOffset {
                offset: p.committed_offset,
                leader_epoch: p.committed_leader_epoch,
                metadata: p.committed_metadata.map(|m| m.to_string()),
                commit_timestamp: now,
            };
            offsets.push(((name.clone(), p.partition_index), value));
        }
    }
    let instance = request.group_instance_id.map(|i| i.to_string());
    let outcome = broker.groups.commit_offsets(
        &broker.metadata.current(),
        &group,
        request.generation_id_or_member_epoch,
        request.member_id.as_str(),
        instance.as_deref(),
        offsets,
    );
    let result_of = |topic: &str, partition: i32| -> i16 {
        match &outcome {
            Err(e) => e.code(),
            Ok((results, _)) => results
                .iter()
                .find(|((t, p), _)| t == topic && *p == partition)
                .map_or(ResponseError::UnknownServerError.code(), |(_, r)| {
                    r.err().map_or(0, |e| e.code())
                }),
        }
    };
    let mut response = OffsetCommitResponse::default();
    response.topics = order
        .into_iter()
        .map(|(name, partitions)| {
            let mut t = OffsetCommitResponseTopic::default();
            t.partitions = partitions
                .into_iter()
                .map(|p| {
                    let mut r = OffsetCommitResponsePartition::default();
                    r.partition_index = p;
                    r.error_code = result_of(name.0.as_str(), p);
                    r
                })
                .collect();
            t.name = name;
            t
        })
        .collect();
    match outcome {
        // Acknowledged once replicated to the offsets partition's ISR (and fsynced under the
        // sync flush policy), like a produce with acks=all.
        Ok((_, Some((partition, end)))) => {
            let broker = broker.clone();
            let epoch = partition.leader_epoch();
            Reply::Later(Box::pin(async move {
                let deadline = tokio::time::Instant::now() + OFFSET_COMMIT_TIMEOUT;
                let committed = partition.wait_committed(end, epoch, deadline).await;
                let durable = match committed {
                    Ok(()) if broker.config.flush_policy == FlushPolicy::Sync => {
                        partition.wait_durable(end).await.map_err(|e| {
                            tracing::error!(error = %e, "offsets topic fsync failed");
                            ResponseError::KafkaStorageError
                        })
                    }
                    other => other,
                };
                if let Err(e) = durable {
                    tracing::debug!(error = ?e, "offset commit not replicated in time");
                    for t in &mut response.topics {
                        for p in t.partitions.iter_mut().filter(|p| p.error_code == 0) {
                            p.error_code = ResponseError::CoordinatorNotAvailable.code();
                        }
                    }
                }
                ctx.respond(&broker, &response)
            }))
        }
        _ => super::ready(ctx.respond(broker, &response)),
    }
}

/// Kafka's `offsets.commit.timeout.ms` default.
const OFFSET_COMMIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

type Wanted = Option<Vec<(String, Vec<i32>)>>;
type TopicOffsets = Vec<(String, Vec<(i32, Option<CommittedOffset>)>)>;

fn fetch_group(
    broker: &Broker,
    group: &str,
    wanted: Wanted,
) -> Result<Vec<(String, i32, Option<CommittedOffset>)>, ResponseError> {
    broker.groups.fetch_offsets(group, wanted)
}

/// Groups the flat `(topic, partition, offset)` list by topic, keeping first-seen order.
fn by_topic(rows: Vec<(String, i32, Option<CommittedOffset>)>) -> TopicOffsets {
    let mut out: TopicOffsets = Vec::new();
    for (t, p, v) in rows {
        match out.iter_mut().find(|(name, _)| *name == t) {
            Some((_, ps)) => ps.push((p, v)),
            None => out.push((t, vec![(p, v)])),
        }
    }
    out
}

fn fields(v: &Option<CommittedOffset>) -> (i64, i32, Option<StrBytes>) {
    match v {
        Some(c) => (
            c.offset,
            c.leader_epoch,
            Some(StrBytes::from_string(
                c.metadata.clone().unwrap_or_default(),
            )),
        ),
        None => (-1, -1, Some(StrBytes::default())),
    }
}

pub fn offset_fetch(
    broker: &Broker,
    ctx: &RequestContext,
    request: OffsetFetchRequest,
) -> OffsetFetchResponse {
    let mut response = OffsetFetchResponse::default();
    if ctx.version >= 8 {
        for g in request.groups {
            let wanted: Wanted = g.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| (t.name.0.to_string(), t.partition_indexes))
                    .collect()
            });
            let mut group = OffsetFetchResponseGroup::default();
            match fetch_group(broker, g.group_id.0.as_str(), wanted) {
                Err(e) => group.error_code = e.code(),
                Ok(rows) => {
                    group.topics = by_topic(rows)
                        .into_iter()
                        .map(|(name, ps)| {
                            let mut t = OffsetFetchResponseTopics::default();
                            t.name = TopicName(StrBytes::from_string(name));
                            t.partitions = ps
                                .into_iter()
                                .map(|(p, v)| {
                                    let (offset, epoch, metadata) = fields(&v);
                                    let mut r = OffsetFetchResponsePartitions::default();
                                    r.partition_index = p;
                                    r.committed_offset = offset;
                                    r.committed_leader_epoch = epoch;
                                    r.metadata = metadata;
                                    r
                                })
                                .collect();
                            t
                        })
                        .collect();
                }
            }
            group.group_id = g.group_id;
            response.groups.push(group);
        }
        return response;
    }
    let wanted: Wanted = request.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    match fetch_group(broker, request.group_id.0.as_str(), wanted) {
        // v0-1 have no top-level error: report it on every partition.
        Err(e) if ctx.version >= 2 => response.error_code = e.code(),
        Err(_) => {}
        Ok(rows) => {
            response.topics = by_topic(rows)
                .into_iter()
                .map(|(name, ps)| {
                    let mut t = OffsetFetchResponseTopic::default();
                    t.name = TopicName(StrBytes::from_string(name));
                    t.partitions = ps
                        .into_iter()
                        .map(|(p, v)| {
                            let (offset, epoch, metadata) = fields(&v);
                            let mut r = OffsetFetchResponsePartition::default();
                            r.partition_index = p;
                            r.committed_offset = offset;
                            if ctx.version >= 5 {
                                r.committed_leader_epoch = epoch;
                            }
                            r.metadata = metadata;
                            r
                        })
                        .collect();
                    t
                })
                .collect();
        }
    }
    response
}

pub fn offset_delete(broker: &Broker, request: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let partitions: Vec<(String, i32)> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.name.0.to_string(), p.partition_index))
        })
        .collect();
    let mut response = OffsetDeleteResponse::default();
    match broker
        .groups
        .delete_offsets(request.group_id.0.as_str(), partitions)
    {
        Err(e) => response.error_code = e.code(),
        Ok(results) => {
            for t in request.topics {
                let mut rt = OffsetDeleteResponseTopic::default();
                rt.partitions = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let mut r = OffsetDeleteResponsePartition::default();
                        r.partition_index = p.partition_index;
                        r.error_code = results
                            .iter()
                            .find(|((n, i), _)| n == t.name.0.as_str() && *i == p.partition_index)
                            .map_or(0, |(_, r)| r.err().map_or(0, |e| e.code()));
                        r
                    })
                    .collect();
                rt.name = t.name;
                response.topics.push(rt);
            }
        }
    }
    response
}
