//! Produce: validate each partition's batch, append it as leader, and answer once acks and the
//! flush policy are satisfied: acks=1 after the local append, acks=all once every in-sync
//! replica has the records (the high watermark passed them), and with the sync flush policy
//! once they are fsynced here. Records are never decoded here.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{Reply, RequestContext};
use crate::broker::Broker;
use crate::clock::now_ms;
use crate::config::FlushPolicy;
use crate::metadata::topic_name::is_internal;
use crate::replica::{AppendOutcome, Partition};

/// What a partition's answer still waits for.
struct Pending {
    partition: Arc<Partition>,
    /// The offset after the appended records.
    end_offset: i64,
    /// acks=all: the leader epoch of the append, whose high watermark must reach `end_offset`.
    commit_in_epoch: Option<i32>,
}

/// A partition's answer, and what it waits for before going out.
struct PartitionResult {
    response: PartitionProduceResponse,
    pending: Option<Pending>,
}

pub fn handle(
    broker: &Arc<Broker>,
    ctx: RequestContext,
    request: ProduceRequest,
    request_bytes: usize,
) -> Reply {
    let acks = request.acks;
    let refuse_all = if !matches!(acks, -1..=1) {
        Some((
            ResponseError::InvalidRequiredAcks,
            "acks must be -1, 0 or 1".to_string(),
        ))
    } else if request.transactional_id.is_some() {
        Some((
            ResponseError::InvalidRequest,
            "transactions are not supported".to_string(),
        ))
    } else {
        None
    };
    broker.metrics.bytes_in(request_bytes);
    let now = now_ms();
    let mut topics = Vec::with_capacity(request.topic_data.len());
    let mut pending = Vec::new();
    for topic in request.topic_data {
        let name = topic.name.0.to_string();
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        for data in topic.partition_data {
            let result = match &refuse_all {
                Some((code, message)) => error(data.index, *code, message.clone()),
                None => append(broker, &name, data.index, data.records, acks, now),
            };
            if let Some(p) = result.pending {
                pending.push(p);
            }
            partitions.push(result.response);
        }
        let mut t = TopicProduceResponse::default();
        t.name = topic.name;
        t.partition_responses = partitions;
        topics.push(t);
    }
    if acks == 0 {
        return Reply::Nothing;
    }
    let mut response = ProduceResponse::default();
    response.responses = topics;
    let sync_flush = broker.config.flush_policy == FlushPolicy::Sync;
    pending.retain(|p| sync_flush || p.commit_in_epoch.is_some());
    if pending.is_empty() {
        return super::ready(ctx.respond(broker, &response));
    }
    let deadline = tokio::time::Instant::from_std(ctx.received)
        + Duration::from_millis(request.timeout_ms.max(0) as u64);
    let broker = broker.clone();
    Reply::Later(Box::pin(async move {
        for p in pending {
            if sync_flush {
                if let Err(e) = p.partition.wait_durable(p.end_offset).await {
                    tracing::error!(topic = %p.partition.topic, partition = p.partition.index, error = %e, "fsync failed");
                    mark_failed(
                        &mut response,
                        &p.partition,
                        ResponseError::KafkaStorageError,
                        &e.to_string(),
                    );
                    continue;
                }
            }
            if let Some(epoch) = p.commit_in_epoch {
                if let Err(code) = p
                    .partition
                    .wait_committed(p.end_offset, epoch, deadline)
                    .await
                {
                    let message = format!(
                        "records up to offset {} not acknowledged by the in-sync replicas: {code:?}",
                        p.end_offset - 1
                    );
                    mark_failed(&mut response, &p.partition, code, &message);
                }
            }
        }
        ctx.respond(&broker, &response)
    }))
}

fn append(
    broker: &Broker,
    topic: &str,
    index: i32,
    records: Option<Bytes>,
    acks: i16,
    now: i64,
) -> PartitionResult {
    if is_internal(topic) {
        let message = format!("`{topic}` is an internal topic; only the broker writes to it");
        return error(index, ResponseError::InvalidTopicException, message);
    }
    let Some(partition) = broker.replicas.get(topic, index) else {
        return error(
            index,
            super::missing_partition(broker, topic, index),
            format!("{topic}-{index} is not served by this broker"),
        );
    };
    let Some(records) = records.filter(|r| !r.is_empty()) else {
        return error(index, ResponseError::InvalidRecord, "no records".into());
    };
    match partition.append_as_leader(&records, acks, now) {
        Ok(outcome) => {
            let mut r = PartitionProduceResponse::default();
            r.index = index;
            r.base_offset = outcome.base_offset();
            r.log_append_time_ms = match &outcome {
                AppendOutcome::Appended(info) => info.log_append_time_ms,
                AppendOutcome::Duplicate(meta)
                    if partition.settings().log.timestamp_type_log_append =>
                {
                    meta.timestamp
                }
                AppendOutcome::Duplicate(_) => -1,
            };
            r.log_start_offset = partition.log_start_offset();
            broker.metrics.records_appended(records.len());
            let end_offset = outcome.end_offset();
            let mut commit_in_epoch = None;
            if acks == -1 {
                let epoch = partition.leader_epoch();
                match partition.commit_status(end_offset, epoch) {
                    // Committed already (a single in-sync replica): answer without waiting.
                    Some(Ok(())) => {}
                    Some(Err(code)) => {
                        let mut result = error(
                            index,
                            code,
                            format!("{topic}-{index}: appended but not committed: {code:?}"),
                        );
                        result.response.log_start_offset = partition.log_start_offset();
                        return result;
                    }
                    None => commit_in_epoch = Some(epoch),
                }
            }
            PartitionResult {
                response: r,
                pending: Some(Pending {
                    partition,
                    end_offset,
                    commit_in_epoch,
                }),
            }
        }
        Err(e) => {
            tracing::debug!(topic, partition = index, error = %e, "produce refused");
            let mut result = error(index, e.kafka_error(), e.to_string());
            result.response.log_start_offset = partition.log_start_offset();
            result
        }
    }
}

fn error(index: i32, code: ResponseError, message: String) -> PartitionResult {
    let mut r = PartitionProduceResponse::default();
    r.index = index;
    r.error_code = code.code();
    r.base_offset = -1;
    r.log_append_time_ms = -1;
    r.log_start_offset = -1;
    r.error_message = Some(StrBytes::from_string(message));
    PartitionResult {
        response: r,
        pending: None,
    }
}

fn mark_failed(
    response: &mut ProduceResponse,
    partition: &Partition,
    code: ResponseError,
    message: &str,
) {
    let topic = response
        .responses
        .iter_mut()
        .find(|t| t.name.0.as_str() == &*partition.topic);
    if let Some(p) = topic.and_then(|t| {
        t.partition_responses
            .iter_mut()
            .find(|p| p.index == partition.index)
    }) {
        p.error_code = code.code();
        p.base_offset = -1;
        p.error_message = Some(StrBytes::from_string(message.to_string()));
    }
}
