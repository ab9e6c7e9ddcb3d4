//! ListOffsets: earliest, latest, max-timestamp, or the first offset at or after a timestamp.
//! Answered by the partition leader. Consumers see offsets below the high watermark ("latest"
//! is the high watermark); followers (`replica_id` >= 0, asking where the leader's log ends
//! after an out-of-range fetch) and debugging tools (-2) see the whole log.

use std::sync::Arc;

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::ResponseError;

use super::RequestContext;
use crate::broker::Broker;
use crate::replica::Partition;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
/// `replica_id` of tools allowed to read any replica (Kafka's DEBUGGING_REPLICA_ID).
const DEBUGGING_REPLICA_ID: i32 = -2;

pub fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let replica_id = request.replica_id.0;
    let whole_log = replica_id >= 0 || replica_id == DEBUGGING_REPLICA_ID;
    let mut response = ListOffsetsResponse::default();
    response.topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let mut r = ListOffsetsPartitionResponse::default();
                    r.partition_index = p.partition_index;
                    r.timestamp = -1;
                    r.offset = -1;
                    r.leader_epoch = -1;
                    let name = topic.name.0.as_str();
                    match broker.replicas.get(name, p.partition_index) {
                        None => {
                            r.error_code =
                                super::missing_partition(broker, name, p.partition_index).code()
                        }
                        Some(partition) => {
                            let epoch = partition.leader_epoch();
                            if p.current_leader_epoch >= 0 && p.current_leader_epoch < epoch {
                                r.error_code = ResponseError::FencedLeaderEpoch.code();
                            } else if p.current_leader_epoch > epoch {
                                r.error_code = ResponseError::UnknownLeaderEpoch.code();
                            } else if !partition.is_leader() && replica_id != DEBUGGING_REPLICA_ID {
                                r.error_code = ResponseError::NotLeaderOrFollower.code();
                            } else {
                                let end = if whole_log {
                                    partition.log_end_offset()
                                } else {
                                    partition.high_watermark()
                                };
                                match lookup(&partition, p.timestamp, ctx.version, end) {
                                    Ok((offset, timestamp)) => {
                                        r.offset = offset;
                                        r.timestamp = timestamp;
                                        if ctx.version >= 4 {
                                            r.leader_epoch = epoch;
                                        }
                                    }
                                    Err(code) => r.error_code = code.code(),
                                }
                            }
                        }
                    }
                    r
                })
                .collect();
            let mut t = ListOffsetsTopicResponse::default();
            t.name = topic.name;
            t.partitions = partitions;
            t
        })
        .collect();
    response
}

/// `(offset, timestamp)` for one query, among offsets below `hw` (the high watermark, or the
/// log end for followers); -1 for both when no record matches.
fn lookup(
    partition: &Partition,
    timestamp: i64,
    version: i16,
    hw: i64,
) -> Result<(i64, i64), ResponseError> {
    let storage = |e| {
        tracing::error!(topic = %partition.topic, partition = partition.index, error = %e, "offset lookup failed");
        ResponseError::KafkaStorageError
    };
    match timestamp {
        LATEST => Ok((hw, -1)),
        EARLIEST => Ok((partition.log_start_offset(), -1)),
        MAX_TIMESTAMP if version >= 7 => Ok(partition
            .log()
            .max_timestamp()
            .map_err(storage)?
            .filter(|(o, _)| *o < hw)
            .unwrap_or((-1, -1))),
        ts if ts >= 0 => Ok(partition
            .log()
            .offset_for_timestamp(ts)
            .map_err(storage)?
            .filter(|(o, _)| *o < hw)
            .unwrap_or((-1, -1))),
        _ => Err(ResponseError::InvalidRequest),
    }
}
