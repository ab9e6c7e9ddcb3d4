//! Test helpers shared by the unit tests and the integration tests: [`TestBatch`] builds Kafka
//! record batches the way a client encodes them.
//!
//! The integration tests (`broker/tests/support`) include this file by path, since they see only
//! the crate's public API and this is compiled into the library for unit tests only. So it
//! names nothing from the crate: only `bytes`, `kafka_protocol` and `std`.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// One record batch, v2 format, as a client sends it: records in order, record `i` at offset
/// delta `i` with timestamp `timestamp + i`, partition leader epoch -1 (the leader stamps its
/// own). Built up with the methods below, then [`encode`](TestBatch::encode)d.
#[derive(Debug, Clone)]
pub struct TestBatch {
    /// Key and value of each record; `None` is null.
    records: Vec<(Option<Bytes>, Option<Bytes>)>,
    timestamp: i64,
    /// An idempotent producer's id, epoch and first sequence.
    producer: Option<(i64, i16, i32)>,
    compression: Compression,
    headers: bool,
}

impl Default for TestBatch {
    /// No records; timestamped now, since older records fall to the default 7-day retention;
    /// no producer id; uncompressed; no headers.
    fn default() -> Self {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        TestBatch {
            records: Vec::new(),
            timestamp: now_ms,
            producer: None,
            compression: Compression::None,
            headers: false,
        }
    }
}

impl TestBatch {
    /// Keyless records with these values.
    pub fn values(values: &[&str]) -> Self {
        values.iter().fold(TestBatch::default(), |b, v| {
            b.record(None, Some(v.as_bytes()))
        })
    }

    /// `count` records keyed `k0`, `k1`, ..., each value `value_len` bytes of `v`.
    pub fn keyed(count: usize, value_len: usize) -> Self {
        let value = vec![b'v'; value_len];
        (0..count).fold(TestBatch::default(), |b, i| {
            b.record(Some(format!("k{i}").as_bytes()), Some(&value))
        })
    }

    /// Appends a record; `None` is a null key or value (a null value is a tombstone).
    pub fn record(mut self, key: Option<&[u8]>, value: Option<&[u8]>) -> Self {
        self.records.push((
            key.map(Bytes::copy_from_slice),
            value.map(Bytes::copy_from_slice),
        ));
        self
    }

    /// The first record's timestamp; the others follow one millisecond apart.
    pub fn timestamp(mut self, timestamp: i64) -> Self {
        self.timestamp = timestamp;
        self
    }

    /// An idempotent producer's batch: record `i` gets sequence `first_sequence + i`
    /// (wrapping). A negative `id` is Kafka's "no producer id": the batch stays as without this
    /// call, with no producer id, epoch or sequence (-1).
    pub fn producer(mut self, id: i64, epoch: i16, first_sequence: i32) -> Self {
        self.producer = (id >= 0).then_some((id, epoch, first_sequence));
        self
    }

    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// A header `h` = `h<i>` on record `i`.
    pub fn with_headers(mut self) -> Self {
        self.headers = true;
        self
    }

    pub fn encode(&self) -> BytesMut {
        // The encoder starts a new batch wherever offset - sequence changes, so records without
        // a producer count their sequence up from -1 too: one batch, base sequence -1.
        let (producer_id, producer_epoch, first_sequence) = self.producer.unwrap_or((-1, -1, -1));
        let records: Vec<Record> = self
            .records
            .iter()
            .enumerate()
            .map(|(i, (key, value))| {
                let mut headers = IndexMap::new();
                if self.headers {
                    headers.insert(
                        StrBytes::from_static_str("h"),
                        Some(Bytes::from(format!("h{i}"))),
                    );
                }
                Record {
                    transactional: false,
                    control: false,
                    delete_horizon: false,
                    partition_leader_epoch: -1,
                    producer_id,
                    producer_epoch,
                    timestamp_type: TimestampType::Creation,
                    offset: i as i64,
                    sequence: first_sequence.wrapping_add(i as i32),
                    timestamp: self.timestamp + i as i64,
                    key: key.clone(),
                    value: value.clone(),
                    headers,
                }
            })
            .collect();
        let mut buf = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression: self.compression,
        };
        // A panic here is a broken test fixture, not a product bug.
        RecordBatchEncoder::encode(&mut buf, &records, &options).expect("encode test batch");
        buf
    }

    pub fn build(&self) -> Bytes {
        self.encode().freeze()
    }
}
