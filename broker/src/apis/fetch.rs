//! Fetch: whole batches from the log up to the high watermark, long-polling until
//! `min_bytes` arrive or `max_wait_ms` passes. Appends wake waiting fetches.
//!
//! Incremental fetch sessions (KIP-227) are declined: every response carries session id 0,
//! which tells clients to send full fetch requests.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse};
use kafka_protocol::ResponseError;
use tokio::sync::Notify;

use super::{Reply, RequestContext};
use crate::broker::Broker;
use crate::log::LogError;

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
        // Each wake re-reads; the waiter is registered before each read so no append is missed.
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
/// whether it must be answered at once (a partition error).
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
    let mut remaining = max_bytes.min(broker.config.fetch_max_bytes);
    let mut total = 0usize;
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
            let Some(partition) = broker.replicas.get(name, fp.partition) else {
                pd.error_code = ResponseError::UnknownTopicOrPartition.code();
                pd.records = Some(Bytes::new());
                has_error = true;
                partitions.push(pd);
                continue;
            };
            partition.add_waiter(waiter);
            let epoch = partition.leader_epoch();
            let hw = partition.high_watermark();
            pd.high_watermark = hw;
            pd.last_stable_offset = hw;
            pd.log_start_offset = partition.log_start_offset();
            if fp.current_leader_epoch >= 0 && fp.current_leader_epoch != epoch {
                pd.error_code = if fp.current_leader_epoch < epoch {
                    ResponseError::FencedLeaderEpoch.code()
                } else {
                    ResponseError::UnknownLeaderEpoch.code()
                };
                has_error = true;
            } else {
                let limit = (fp.partition_max_bytes.max(0) as usize).min(remaining);
                // KIP-74: the first batch of the response is returned even if larger than the
                // limits, so a large batch can never stall a consumer.
                match partition.read(fp.fetch_offset, limit, total == 0) {
                    Ok(read) => {
                        total += read.records.len();
                        remaining = remaining.saturating_sub(read.records.len());
                        pd.records = Some(read.records);
                    }
                    Err(LogError::OffsetOutOfRange { .. }) => {
                        pd.error_code = ResponseError::OffsetOutOfRange.code();
                        has_error = true;
                    }
                    Err(e) => {
                        tracing::error!(topic = name, partition = fp.partition, error = %e, "fetch read failed");
                        pd.error_code = ResponseError::KafkaStorageError.code();
                        has_error = true;
                    }
                }
            }
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
    (response, total, has_error)
}
