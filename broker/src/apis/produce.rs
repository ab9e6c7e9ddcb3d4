//! Produce: validate each partition's batch, append it as leader, and answer after acks=all
//! and the flush policy are satisfied. Records are never decoded here.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{Reply, RequestContext};
use crate::broker::{now_ms, Broker};
use crate::config::FlushPolicy;
use crate::metadata::topic_name::is_internal;
use crate::replica::{AppendOutcome, Partition};

/// A partition's answer, and the offset it must be durable to before the answer goes out.
struct PartitionResult {
    response: PartitionProduceResponse,
    durable_to: Option<(Arc<Partition>, i64)>,
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
            if let Some(p) = result.durable_to {
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
    if broker.config.flush_policy == FlushPolicy::Interval || pending.is_empty() {
        return super::ready(ctx.respond(broker, &response));
    }
    let broker = broker.clone();
    Reply::Later(Box::pin(async move {
        for (partition, offset) in pending {
            if let Err(e) = partition.wait_durable(offset).await {
                tracing::error!(topic = %partition.topic, partition = partition.index, error = %e, "fsync failed");
                mark_failed(&mut response, &partition, &e.to_string());
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
        let code = match broker.metadata.current().topic(topic) {
            Some(t) if t.partitions.contains_key(&index) => ResponseError::KafkaStorageError,
            _ => ResponseError::UnknownTopicOrPartition,
        };
        return error(
            index,
            code,
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
            let durable_to = match outcome {
                AppendOutcome::Appended(info) => Some((partition, info.last_offset + 1)),
                AppendOutcome::Duplicate(meta) => Some((partition, meta.last_offset + 1)),
            };
            broker.metrics.records_appended(records.len());
            PartitionResult {
                response: r,
                durable_to,
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
        durable_to: None,
    }
}

fn mark_failed(response: &mut ProduceResponse, partition: &Partition, message: &str) {
    let topic = response
        .responses
        .iter_mut()
        .find(|t| t.name.0.as_str() == &*partition.topic);
    if let Some(p) = topic.and_then(|t| {
        t.partition_responses
            .iter_mut()
            .find(|p| p.index == partition.index)
    }) {
        p.error_code = ResponseError::KafkaStorageError.code();
        p.base_offset = -1;
        p.error_message = Some(StrBytes::from_string(message.to_string()));
    }
}
