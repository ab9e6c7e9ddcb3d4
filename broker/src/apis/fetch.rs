//! Fetch: whole batches from the log, long-polling until `min_bytes` arrive or `max_wait_ms`
//! passes. Two kinds of fetchers:
//!
//! * consumers (`replica_id` -1) read from the leader, up to the high watermark; they are woken
//!   when it moves;
//! * followers (`replica_id` = their broker id) read from the leader up to its log end. Their
//!   fetch offset is their log end offset: the leader records it, which advances the high
//!   watermark and may add them to the ISR. A follower whose log diverged (its last fetched
//!   epoch ends earlier at the leader) is told where with `diverging_epoch` (KIP-320). They are
//!   woken by appends.
//!
//! Incremental fetch sessions (KIP-227) are declined: every response carries session id 0,
//! which tells clients to send full fetch requests.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::FetchPartition;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};
use kafka_protocol::ResponseError;
use tokio::sync::Notify;

use super::{Reply, RequestContext};
use crate::broker::Broker;
use crate::log::LogError;
use crate::replica::partition::FollowerFetchCheck;
use crate::replica::Partition;

const READ_COMMITTED: i8 = 1;

pub fn handle(broker: &Arc<Broker>, ctx: RequestContext, request: FetchRequest) -> Reply {
    if ctx.version >= 7 && request.session_epoch > 0 {
        let mut response = FetchResponse::default();
        response.error_code = ResponseError::FetchSessionIdNotFound.code();
        return super::ready(ctx.respond(broker, &response));
    }
    let min_bytes = request.min_bytes.max(0) as usize;
    let max_wait = Duration::from_millis(request.max_wait_ms.max(0) as u64);
    let deadline = tokio::time::Instant::from_std(ctx.received) + max_wait;
    let waiter = Arc::new(Notify::new());
    let (response, bytes, done) = read_all(broker, &ctx, &request, &waiter);
    if done || bytes >= min_bytes || max_wait.is_zero() {
        return finish(broker, &ctx, response, bytes);
    }
    let broker = broker.clone();
    Reply::Later(Box::pin(async move {
        let mut response = response;
        let mut bytes = bytes;
        // Each wake re-reads; the waiter is registered before each read so no change is missed.
        while tokio::time::timeout_at(deadline, waiter.notified())
            .await
            .is_ok()
        {
            let (r, b, done) = read_all(&broker, &ctx, &request, &waiter);
            (response, bytes) = (r, b);
            if done || bytes >= min_bytes {
                break;
            }
        }
        broker.metrics.bytes_out(bytes);
        ctx.respond(&broker, &response)
    }))
}

fn finish(broker: &Broker, ctx: &RequestContext, response: FetchResponse, bytes: usize) -> Reply {
    broker.metrics.bytes_out(bytes);
    super::ready(ctx.respond(broker, &response))
}

/// Reads every requested partition once. Returns the response, the record bytes in it, and
/// whether it must be answered at once (a partition error or a diverging epoch).
fn read_all(
    broker: &Broker,
    ctx: &RequestContext,
    request: &FetchRequest,
    waiter: &Arc<Notify>,
) -> (FetchResponse, usize, bool) {
    let max_bytes = if ctx.version >= 3 {
        request.max_bytes.max(0) as usize
    } else {
        usize::MAX
    };
    // Fetch v4-v14 carry the follower's id here (v15 moved it to replica_state; not served).
    let replica_id = request.replica_id.0;
    let mut budget = Budget {
        remaining: max_bytes.min(broker.config.fetch_max_bytes),
        total: 0,
    };
    let mut has_error = false;
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in &request.topics {
        let name = topic.topic.0.as_str();
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for fp in &topic.partitions {
            let mut pd = PartitionData::default();
            pd.partition_index = fp.partition;
            pd.high_watermark = -1;
            pd.last_stable_offset = -1;
            pd.log_start_offset = -1;
            pd.preferred_read_replica = (-1).into();
            pd.aborted_transactions = (request.isolation_level == READ_COMMITTED).then(Vec::new);
            match broker.replicas.get(name, fp.partition) {
                None => pd.error_code = super::missing_partition(broker, name, fp.partition).code(),
                Some(partition) => {
                    if replica_id >= 0 {
                        partition.add_follower_waiter(waiter);
                    } else {
                        partition.add_waiter(waiter);
                    }
                    read_partition(broker, &partition, fp, replica_id, &mut budget, &mut pd);
                }
            }
            has_error |= pd.error_code != 0 || pd.diverging_epoch.epoch >= 0;
            if pd.records.is_none() {
                pd.records = Some(Bytes::new());
            }
            partitions.push(pd);
        }
        let mut t = FetchableTopicResponse::default();
        t.topic = topic.topic.clone();
        t.topic_id = topic.topic_id;
        t.partitions = partitions;
        topics.push(t);
    }
    let mut response = FetchResponse::default();
    response.responses = topics;
    (response, budget.total, has_error)
}

/// What is left of the response's byte limit.
struct Budget {
    remaining: usize,
    total: usize,
}

fn read_partition(
    broker: &Broker,
    partition: &Arc<Partition>,
    fp: &FetchPartition,
    replica_id: i32,
    budget: &mut Budget,
    pd: &mut PartitionData,
) {
    let epoch = partition.leader_epoch();
    pd.log_start_offset = partition.log_start_offset();
    let not_leader = |pd: &mut PartitionData, code: ResponseError| {
        let (leader, leader_epoch) = partition.leader_and_epoch();
        pd.error_code = code.code();
        pd.current_leader.leader_id = BrokerId(leader);
        pd.current_leader.leader_epoch = leader_epoch;
    };
    if fp.current_leader_epoch >= 0 && fp.current_leader_epoch != epoch {
        let code = if fp.current_leader_epoch < epoch {
            ResponseError::FencedLeaderEpoch
        } else {
            ResponseError::UnknownLeaderEpoch
        };
        not_leader(pd, code);
        pd.high_watermark = partition.high_watermark();
        return;
    }
    if !partition.is_leader() {
        // No fetching from followers (KIP-392 is not supported).
        not_leader(pd, ResponseError::NotLeaderOrFollower);
        return;
    }
    let limit = (fp.partition_max_bytes.max(0) as usize).min(budget.remaining);
    // KIP-74: the first batch of the response is returned even if larger than the limits,
    // so a large batch can never stall a fetcher.
    let min_one = budget.total == 0;
    let read = if replica_id >= 0 {
        match partition.check_follower_fetch(replica_id, fp.fetch_offset, fp.last_fetched_epoch) {
            FollowerFetchCheck::Serve => {
                let leader_leo = partition.log_end_offset();
                let read = partition.read_for_follower(fp.fetch_offset, limit, min_one);
                if read.is_ok() {
                    broker.replicas.record_follower_fetch(
                        partition,
                        replica_id,
                        fp.fetch_offset,
                        leader_leo,
                    );
                }
                read
            }
            FollowerFetchCheck::Diverging { epoch, end_offset } => {
                pd.diverging_epoch.epoch = epoch;
                pd.diverging_epoch.end_offset = end_offset;
                pd.high_watermark = partition.high_watermark();
                pd.last_stable_offset = pd.high_watermark;
                return;
            }
            FollowerFetchCheck::OutOfRange => Err(LogError::OffsetOutOfRange {
                requested: fp.fetch_offset,
                start: partition.log_start_offset(),
                end: partition.log_end_offset(),
            }),
            FollowerFetchCheck::NotLeader | FollowerFetchCheck::UnknownReplica => {
                not_leader(pd, ResponseError::NotLeaderOrFollower);
                return;
            }
        }
    } else {
        partition.read(fp.fetch_offset, limit, min_one)
    };
    let hw = partition.high_watermark();
    pd.high_watermark = hw;
    pd.last_stable_offset = hw;
    match read {
        Ok(read) => {
            budget.total += read.records.len();
            budget.remaining = budget.remaining.saturating_sub(read.records.len());
            pd.records = Some(read.records);
        }
        Err(LogError::OffsetOutOfRange { .. }) => {
            pd.error_code = ResponseError::OffsetOutOfRange.code();
        }
        Err(e) => {
            tracing::error!(topic = %partition.topic, partition = fp.partition, error = %e, "fetch read failed");
            pd.error_code = ResponseError::KafkaStorageError.code();
        }
    }
}
