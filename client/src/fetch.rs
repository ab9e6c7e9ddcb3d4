//! Fetch and ListOffsets: reading from the partition leader and decoding record batches.

use std::time::Duration;

use bytes::{Buf, Bytes};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, ListOffsetsRequest};
use kafka_protocol::records::RecordBatchDecoder;

use crate::client::{topic_name, Client};
use crate::error::{check_error, ClientError};

/// Highest Fetch version that addresses topics by name; v13+ needs the topic id.
const FETCH_MAX_BY_NAME: i16 = 12;
/// Size of the batch fields before (and including) `batchLength`.
const BATCH_LENGTH_END: usize = 12;
/// Offset of the magic byte in a batch.
const MAGIC_OFFSET: usize = 16;

/// A record returned by [`Client::fetch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedRecord {
    /// Offset in the partition.
    pub offset: i64,
    /// Timestamp (create or log-append time, per the batch).
    pub timestamp: i64,
    /// Key.
    pub key: Option<Bytes>,
    /// Value.
    pub value: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// Partition state reported with fetched data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchResult<R> {
    /// High watermark.
    pub high_watermark: i64,
    /// Last stable offset (-1 if unknown).
    pub last_stable_offset: i64,
    /// Log start offset (-1 if unknown).
    pub log_start_offset: i64,
    /// The records: decoded ([`Client::fetch`]) or raw bytes ([`Client::fetch_raw`]).
    pub records: R,
}

/// Result of ListOffsets for one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedOffset {
    /// The offset found.
    pub offset: i64,
    /// The timestamp belonging to it (-1 for latest/earliest).
    pub timestamp: i64,
    /// Leader epoch (-1 if unknown).
    pub leader_epoch: i32,
}

/// Decode the `records` bytes of a fetch response, skipping control records and records
/// before `from_offset` (a batch may start earlier than the fetch offset). A truncated
/// last batch — brokers may cut the data at `max_bytes` — is ignored.
pub fn decode_records(mut raw: Bytes, from_offset: i64) -> Result<Vec<FetchedRecord>, ClientError> {
    let mut out = Vec::new();
    while raw.len() >= BATCH_LENGTH_END {
        let batch_len = (&raw[8..12]).get_i32();
        let Ok(batch_len) = usize::try_from(batch_len) else {
            return Err(ClientError::protocol(
                "decode fetched records",
                format!("negative batch length {batch_len}"),
            ));
        };
        let total = BATCH_LENGTH_END + batch_len;
        if raw.len() < total {
            break;
        }
        let mut batch = raw.split_to(total);
        if batch.len() > MAGIC_OFFSET && batch[MAGIC_OFFSET] != 2 {
            return Err(ClientError::protocol(
                "decode fetched records",
                format!("unsupported record batch magic {}", batch[MAGIC_OFFSET]),
            ));
        }
        let set = RecordBatchDecoder::decode(&mut batch)
            .map_err(|e| ClientError::protocol("decode fetched records", e))?;
        out.extend(
            set.records
                .into_iter()
                .filter(|r| !r.control && r.offset >= from_offset)
                .map(|r| FetchedRecord {
                    offset: r.offset,
                    timestamp: r.timestamp,
                    key: r.key,
                    value: r.value,
                    headers: r
                        .headers
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect(),
                }),
        );
    }
    Ok(out)
}

fn clamp_ms(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

impl Client {
    /// Fetch from `topic`/`partition` starting at `offset` and decode the records.
    pub async fn fetch(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: i32,
        max_wait_ms: i32,
        min_bytes: i32,
    ) -> Result<FetchResult<Vec<FetchedRecord>>, ClientError> {
        let raw = self
            .fetch_raw(topic, partition, offset, max_bytes, max_wait_ms, min_bytes)
            .await?;
        Ok(FetchResult {
            high_watermark: raw.high_watermark,
            last_stable_offset: raw.last_stable_offset,
            log_start_offset: raw.log_start_offset,
            records: decode_records(raw.records, offset)?,
        })
    }

    /// Like [`Client::fetch`] but returns the `records` bytes as the broker sent them.
    pub async fn fetch_raw(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: i32,
        max_wait_ms: i32,
        min_bytes: i32,
    ) -> Result<FetchResult<Bytes>, ClientError> {
        self.with_leader(topic, partition, true, |route| async move {
            let req = FetchRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_max_wait_ms(max_wait_ms)
                .with_min_bytes(min_bytes)
                .with_max_bytes(max_bytes)
                .with_topics(vec![FetchTopic::default()
                    .with_topic(topic_name(topic))
                    .with_topic_id(route.topic_id)
                    .with_partitions(vec![FetchPartition::default()
                        .with_partition(partition)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(max_bytes)])]);
            let version = route.version::<FetchRequest>(FETCH_MAX_BY_NAME)?;
            let timeout = self.config.request_timeout
                + Duration::from_millis(u64::try_from(max_wait_ms).unwrap_or(0));
            let resp = route.conn.send_inner(&req, version, timeout).await?;
            let context = || format!("fetch from {topic}-{partition} at {offset}");
            check_error(resp.error_code, None, context)?;
            let p = resp
                .responses
                .into_iter()
                .flat_map(|t| t.partitions)
                .find(|p| p.partition_index == partition)
                .ok_or_else(|| {
                    ClientError::protocol(context(), "partition missing from response")
                })?;
            check_error(p.error_code, None, context)?;
            Ok(FetchResult {
                high_watermark: p.high_watermark,
                last_stable_offset: p.last_stable_offset,
                log_start_offset: p.log_start_offset,
                records: p.records.unwrap_or_default(),
            })
        })
        .await
    }

    /// ListOffsets for one partition; `timestamp` -1 = latest, -2 = earliest, otherwise the
    /// first offset with a timestamp at or after it.
    pub async fn list_offsets(
        &self,
        topic: &str,
        partition: i32,
        timestamp: i64,
    ) -> Result<ListedOffset, ClientError> {
        self.with_leader(topic, partition, true, |route| async move {
            let req = ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_timeout_ms(clamp_ms(self.config.request_timeout))
                .with_topics(vec![ListOffsetsTopic::default()
                    .with_name(topic_name(topic))
                    .with_partitions(vec![ListOffsetsPartition::default()
                        .with_partition_index(partition)
                        .with_timestamp(timestamp)])]);
            let resp = route.conn.send(req).await?;
            let context = || format!("list offsets of {topic}-{partition} at {timestamp}");
            let p = resp
                .topics
                .iter()
                .flat_map(|t| t.partitions.iter())
                .find(|p| p.partition_index == partition)
                .ok_or_else(|| {
                    ClientError::protocol(context(), "partition missing from response")
                })?;
            check_error(p.error_code, None, context)?;
            Ok(ListedOffset {
                offset: p.offset,
                timestamp: p.timestamp,
                leader_epoch: p.leader_epoch,
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::produce::build_batch;
    use bytes::BytesMut;

    fn kv(v: &'static [u8]) -> (Option<Bytes>, Option<Bytes>) {
        (None, Some(Bytes::from_static(v)))
    }

    /// Two batches as a log would hold them: the second rebased to offset 10.
    fn two_batches() -> Bytes {
        let first = build_batch(&[kv(b"a"), kv(b"b")], 1).unwrap();
        let mut second = BytesMut::from(&build_batch(&[kv(b"c")], 2).unwrap()[..]);
        // The CRC covers `attributes` onwards, so the base offset can be rewritten.
        second[..8].copy_from_slice(&10i64.to_be_bytes());
        let mut all = BytesMut::from(&first[..]);
        all.extend_from_slice(&second);
        all.freeze()
    }

    #[test]
    fn decodes_several_batches() {
        let records = decode_records(two_batches(), 0).unwrap();
        let got: Vec<(i64, &[u8])> = records
            .iter()
            .map(|r| (r.offset, r.value.as_deref().unwrap()))
            .collect();
        assert_eq!(got, [(0, &b"a"[..]), (1, b"b"), (10, b"c")]);
        assert_eq!(records[2].timestamp, 2);
    }

    #[test]
    fn skips_records_before_fetch_offset() {
        let records = decode_records(two_batches(), 1).unwrap();
        assert_eq!(
            records.iter().map(|r| r.offset).collect::<Vec<_>>(),
            [1, 10]
        );
    }

    #[test]
    fn ignores_truncated_last_batch() {
        let all = two_batches();
        for cut in 1..20 {
            let records = decode_records(all.slice(..all.len() - cut), 0).unwrap();
            assert_eq!(records.len(), 2, "cut {cut}");
        }
        assert!(decode_records(Bytes::new(), 0).unwrap().is_empty());
    }

    #[test]
    fn corrupt_batch_is_an_error() {
        let mut bad = BytesMut::from(&build_batch(&[kv(b"a")], 1).unwrap()[..]);
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert!(matches!(
            decode_records(bad.freeze(), 0),
            Err(ClientError::Protocol { .. })
        ));
    }
}
