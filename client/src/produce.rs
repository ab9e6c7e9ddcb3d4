//! Produce: building magic v2 record batches (pure) and sending them to the leader.

use bytes::{Bytes, BytesMut};
use indexmap::IndexMap;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::ProduceRequest;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE,
};

use crate::client::{topic_name, Client, Route};
use crate::error::{check_error, ClientError};

/// A record to produce: `(key, value)`.
pub type KeyValue = (Option<bytes::Bytes>, Option<bytes::Bytes>);

/// Highest Produce version that addresses topics by name; v13+ needs the topic id.
const PRODUCE_MAX_BY_NAME: i16 = 12;

/// Encode `records` as one uncompressed magic v2 batch with base offset 0, relative
/// offsets 0..n, all timestamps `timestamp_ms`, and no producer id / sequence
/// (a plain, non-idempotent producer).
pub fn build_batch(records: &[KeyValue], timestamp_ms: i64) -> Result<Bytes, ClientError> {
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (key, value))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder keeps records in one batch only while `offset - sequence` stays
            // constant, and writes the first record's sequence as the batch's base
            // sequence; counting up from NO_SEQUENCE keeps one batch with base -1.
            sequence: NO_SEQUENCE.wrapping_add(i as i32),
            timestamp: timestamp_ms,
            key: key.clone(),
            value: value.clone(),
            headers: IndexMap::new(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| ClientError::protocol("encode record batch", e))?;
    Ok(buf.freeze())
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Client {
    /// Produce `records` as one batch to `topic`/`partition` with `acks` (0, 1 or -1) and
    /// return the base offset the broker assigned (-1 with `acks = 0`, where the broker
    /// does not answer).
    pub async fn produce(
        &self,
        topic: &str,
        partition: i32,
        records: Vec<KeyValue>,
        acks: i16,
    ) -> Result<i64, ClientError> {
        if records.is_empty() {
            return Err(ClientError::InvalidArgument(
                "produce needs at least one record".into(),
            ));
        }
        let batch = build_batch(&records, now_ms())?;
        self.produce_raw(topic, partition, batch, acks).await
    }

    /// Produce `batch` exactly as given (it may be corrupt on purpose) and return the base
    /// offset as for [`Client::produce`].
    pub async fn produce_raw(
        &self,
        topic: &str,
        partition: i32,
        batch: Bytes,
        acks: i16,
    ) -> Result<i64, ClientError> {
        self.with_leader(topic, partition, false, |route| {
            let batch = batch.clone();
            async move {
                self.produce_once(route, topic, partition, batch, acks)
                    .await
            }
        })
        .await
    }

    async fn produce_once(
        &self,
        route: Route,
        topic: &str,
        partition: i32,
        batch: Bytes,
        acks: i16,
    ) -> Result<i64, ClientError> {
        let req = ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(
                i32::try_from(self.config.request_timeout.as_millis()).unwrap_or(i32::MAX),
            )
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(topic_name(topic))
                .with_topic_id(route.topic_id)
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(batch))])]);
        let version = route.version::<ProduceRequest>(PRODUCE_MAX_BY_NAME)?;
        if acks == 0 {
            route.conn.send_oneway(&req, version).await?;
            return Ok(-1);
        }
        let resp = route.conn.send_version(req, version).await?;
        let context = || format!("produce to {topic}-{partition}");
        let p = resp
            .responses
            .iter()
            .flat_map(|t| t.partition_responses.iter())
            .find(|p| p.index == partition)
            .ok_or_else(|| ClientError::protocol(context(), "partition missing from response"))?;
        if p.error_code != 0 {
            let mut message: Vec<String> = p.error_message.iter().map(|m| m.to_string()).collect();
            message.extend(p.record_errors.iter().map(|r| {
                format!(
                    "record {}: {}",
                    r.batch_index,
                    r.batch_index_error_message.as_deref().unwrap_or("")
                )
            }));
            let message = (!message.is_empty()).then(|| message.join("; "));
            check_error(p.error_code, message.as_deref(), context)?;
        }
        Ok(p.base_offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::RecordBatchDecoder;

    #[test]
    fn batch_round_trips() {
        let records = vec![
            (
                Some(Bytes::from_static(b"k1")),
                Some(Bytes::from_static(b"v1")),
            ),
            (None, Some(Bytes::from_static(b"v2"))),
            (Some(Bytes::from_static(b"k3")), None),
        ];
        let batch = build_batch(&records, 1_700_000_000_000).unwrap();

        let info = RecordBatchDecoder::decode_batch_info(&mut batch.clone()).unwrap();
        assert_eq!(info.len(), 1, "one batch");
        assert_eq!(info[0].record_count, 3);
        assert_eq!(info[0].min_offset, 0);
        assert_eq!(info[0].base_sequence, NO_SEQUENCE);
        assert_eq!(info[0].producer_id, NO_PRODUCER_ID);
        assert_eq!(info[0].version, 2);

        let set = RecordBatchDecoder::decode(&mut batch.clone()).unwrap();
        let decoded: Vec<KeyValue> = set
            .records
            .iter()
            .map(|r| (r.key.clone(), r.value.clone()))
            .collect();
        assert_eq!(decoded, records);
        assert_eq!(
            set.records.iter().map(|r| r.offset).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert!(set.records.iter().all(|r| r.timestamp == 1_700_000_000_000));
    }

    #[test]
    fn batch_header_layout() {
        let batch = build_batch(&[(None, Some(Bytes::from_static(b"x")))], 5).unwrap();
        // baseOffset i64, batchLength i32 (bytes after this field), then epoch i32, magic.
        assert_eq!(&batch[..8], &[0; 8]);
        let len = i32::from_be_bytes(batch[8..12].try_into().unwrap());
        assert_eq!(len as usize, batch.len() - 12);
        assert_eq!(batch[16], 2, "magic v2");
    }

    #[test]
    fn empty_batch_is_empty() {
        assert!(build_batch(&[], 0).unwrap().is_empty());
    }
}
