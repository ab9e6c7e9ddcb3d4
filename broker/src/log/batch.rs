//! Kafka RecordBatch (magic v2) header parsing, validation and in-place patching.
//!
//! Only batch headers are ever decoded here: records stay opaque bytes so that
//! appends and reads cost a header parse, a CRC check and at most a header patch.

use thiserror::Error;

/// Size of the fixed v2 batch header, from baseOffset up to and including recordsCount.
pub const HEADER_LEN: usize = 61;
/// baseOffset (8) + batchLength (4): the part not counted in batchLength.
pub const LOG_OVERHEAD: usize = 12;
/// Smallest legal batchLength: a header with zero records.
pub const MIN_BATCH_LENGTH: i32 = (HEADER_LEN - LOG_OVERHEAD) as i32;
/// The only record format this log stores.
pub const MAGIC_V2: i8 = 2;

const BASE_OFFSET_POS: usize = 0;
const LENGTH_POS: usize = 8;
const LEADER_EPOCH_POS: usize = 12;
const MAGIC_POS: usize = 16;
const CRC_POS: usize = 17;
/// The CRC covers everything from attributes to the end of the batch.
const ATTRIBUTES_POS: usize = 21;
const LAST_OFFSET_DELTA_POS: usize = 23;
const BASE_TIMESTAMP_POS: usize = 27;
const MAX_TIMESTAMP_POS: usize = 35;
const PRODUCER_ID_POS: usize = 43;
const PRODUCER_EPOCH_POS: usize = 51;
const BASE_SEQUENCE_POS: usize = 53;
const RECORDS_COUNT_POS: usize = 57;

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 1 << 3;
const TRANSACTIONAL_BIT: i16 = 1 << 4;
const CONTROL_BIT: i16 = 1 << 5;
/// Highest compression codec id Kafka defines (zstd).
const MAX_COMPRESSION_CODEC: u8 = 4;

/// Kafka error codes this module maps to.
pub mod error_codes {
    pub const CORRUPT_MESSAGE: i16 = 2;
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    pub const UNSUPPORTED_FOR_MESSAGE_FORMAT: i16 = 43;
    pub const INVALID_RECORD: i16 = 87;
}

/// Why a records blob was rejected.
///
/// Mapping to Kafka error codes (see [`BatchError::kafka_error_code`]):
/// * framing problems (truncated, bad length, bad CRC, unknown magic above v2,
///   unknown compression codec) -> CORRUPT_MESSAGE, as Kafka's
///   `CorruptRecordException`;
/// * a batch above the size limit -> MESSAGE_TOO_LARGE;
/// * magic v0/v1 (legacy message sets) -> UNSUPPORTED_FOR_MESSAGE_FORMAT;
/// * count/delta mismatches, control batches from clients, bad sequences and an
///   empty blob, a keyless record on a compacted topic -> INVALID_RECORD, because Kafka's `LogValidator` /
///   `ProduceRequest.validateRecords` throw `InvalidRecordException` for these.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BatchError {
    #[error(
        "record batch truncated at byte {position}: need {needed} bytes, {available} available"
    )]
    Truncated {
        position: usize,
        needed: usize,
        available: usize,
    },
    #[error("invalid batch length {length} at byte {position}")]
    InvalidLength { position: usize, length: i32 },
    #[error("unsupported record format magic {magic} at byte {position} (only v2 is stored)")]
    UnsupportedMagic { position: usize, magic: i8 },
    #[error("invalid record format magic {magic} at byte {position}")]
    InvalidMagic { position: usize, magic: i8 },
    #[error("CRC mismatch at byte {position}: stored {stored:#010x}, computed {computed:#010x}")]
    Corrupt {
        position: usize,
        stored: u32,
        computed: u32,
    },
    #[error("record batch of {size} bytes exceeds the maximum of {max} bytes")]
    TooLarge { size: usize, max: usize },
    #[error("record batch at byte {position} has records count {count} but last offset delta {last_offset_delta}")]
    InvalidRecordCount {
        position: usize,
        count: i32,
        last_offset_delta: i32,
    },
    #[error("unknown compression codec {codec} at byte {position}")]
    UnknownCompression { position: usize, codec: u8 },
    #[error("clients may not produce control batches (byte {position})")]
    ControlBatchFromClient { position: usize },
    #[error(
        "producer id {producer_id} with invalid base sequence {base_sequence} at byte {position}"
    )]
    InvalidSequence {
        position: usize,
        producer_id: i64,
        base_sequence: i32,
    },
    #[error("records blob contains no record batch")]
    Empty,
    #[error("cannot decode the records of the batch at byte {position}: {reason}")]
    Undecodable { position: usize, reason: String },
    #[error("compacted topic cannot accept a record without a key")]
    NullKeyInCompactedTopic,
}

impl BatchError {
    /// The Kafka protocol error code a produce response should carry.
    pub fn kafka_error_code(&self) -> i16 {
        use error_codes::*;
        match self {
            BatchError::Truncated { .. }
            | BatchError::InvalidLength { .. }
            | BatchError::InvalidMagic { .. }
            | BatchError::Corrupt { .. }
            | BatchError::UnknownCompression { .. }
            | BatchError::Undecodable { .. } => CORRUPT_MESSAGE,
            BatchError::TooLarge { .. } => MESSAGE_TOO_LARGE,
            BatchError::UnsupportedMagic { .. } => UNSUPPORTED_FOR_MESSAGE_FORMAT,
            BatchError::InvalidRecordCount { .. }
            | BatchError::ControlBatchFromClient { .. }
            | BatchError::InvalidSequence { .. }
            | BatchError::NullKeyInCompactedTopic
            | BatchError::Empty => INVALID_RECORD,
        }
    }

    /// Same error, reported at `base` + its position (used when parsing a sub-slice).
    fn shifted(self, base: usize) -> BatchError {
        match self {
            BatchError::Truncated {
                position,
                needed,
                available,
            } => BatchError::Truncated {
                position: position + base,
                needed,
                available,
            },
            BatchError::InvalidLength { position, length } => BatchError::InvalidLength {
                position: position + base,
                length,
            },
            BatchError::UnsupportedMagic { position, magic } => BatchError::UnsupportedMagic {
                position: position + base,
                magic,
            },
            BatchError::InvalidMagic { position, magic } => BatchError::InvalidMagic {
                position: position + base,
                magic,
            },
            other => other,
        }
    }
}

/// The fixed header of a v2 record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

fn i16_at(b: &[u8], p: usize) -> i16 {
    i16::from_be_bytes([b[p], b[p + 1]])
}
fn i32_at(b: &[u8], p: usize) -> i32 {
    i32::from_be_bytes([b[p], b[p + 1], b[p + 2], b[p + 3]])
}
fn u32_at(b: &[u8], p: usize) -> u32 {
    u32::from_be_bytes([b[p], b[p + 1], b[p + 2], b[p + 3]])
}
fn i64_at(b: &[u8], p: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[p..p + 8]);
    i64::from_be_bytes(a)
}

impl BatchHeader {
    /// Parses the header at the start of `buf`. Checks the magic (the layout is
    /// only known for v2) and that batchLength can hold a header; it does NOT
    /// check that the whole batch is present or its CRC.
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        // Look at the magic first so legacy formats get the precise error.
        if buf.len() > MAGIC_POS {
            let magic = buf[MAGIC_POS] as i8;
            if magic != MAGIC_V2 {
                return Err(if (0..MAGIC_V2).contains(&magic) {
                    BatchError::UnsupportedMagic { position: 0, magic }
                } else {
                    BatchError::InvalidMagic { position: 0, magic }
                });
            }
        }
        if buf.len() < HEADER_LEN {
            return Err(BatchError::Truncated {
                position: 0,
                needed: HEADER_LEN,
                available: buf.len(),
            });
        }
        let batch_length = i32_at(buf, LENGTH_POS);
        if batch_length < MIN_BATCH_LENGTH {
            return Err(BatchError::InvalidLength {
                position: 0,
                length: batch_length,
            });
        }
        Ok(BatchHeader {
            base_offset: i64_at(buf, BASE_OFFSET_POS),
            batch_length,
            partition_leader_epoch: i32_at(buf, LEADER_EPOCH_POS),
            magic: buf[MAGIC_POS] as i8,
            crc: u32_at(buf, CRC_POS),
            attributes: i16_at(buf, ATTRIBUTES_POS),
            last_offset_delta: i32_at(buf, LAST_OFFSET_DELTA_POS),
            base_timestamp: i64_at(buf, BASE_TIMESTAMP_POS),
            max_timestamp: i64_at(buf, MAX_TIMESTAMP_POS),
            producer_id: i64_at(buf, PRODUCER_ID_POS),
            producer_epoch: i16_at(buf, PRODUCER_EPOCH_POS),
            base_sequence: i32_at(buf, BASE_SEQUENCE_POS),
            records_count: i32_at(buf, RECORDS_COUNT_POS),
        })
    }

    /// Bytes the whole batch occupies, including baseOffset and batchLength.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_length.max(0) as usize
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset.wrapping_add(self.last_offset_delta as i64)
    }

    /// Sequence of the last record; sequences wrap at i32::MAX like Kafka's
    /// `DefaultRecordBatch.incrementSequence`.
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence < 0 {
            return self.base_sequence;
        }
        let last = self.base_sequence as i64 + self.last_offset_delta as i64;
        if last > i32::MAX as i64 {
            (last - i32::MAX as i64 - 1) as i32
        } else {
            last as i32
        }
    }

    pub fn compression(&self) -> u8 {
        (self.attributes & COMPRESSION_MASK) as u8
    }

    pub fn is_log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_BIT != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }
}

/// CRC-32C over attributes..end of one complete batch.
pub(crate) fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[ATTRIBUTES_POS..])
}

/// Checks the CRC of one complete batch (`batch.len() == header.total_len()`).
pub(crate) fn verify_crc(batch: &[u8], header: &BatchHeader) -> Result<(), BatchError> {
    let computed = compute_crc(batch);
    if computed != header.crc {
        return Err(BatchError::Corrupt {
            position: 0,
            stored: header.crc,
            computed,
        });
    }
    Ok(())
}

/// Overwrites baseOffset (not covered by the CRC).
pub(crate) fn set_base_offset(batch: &mut [u8], offset: i64) {
    batch[BASE_OFFSET_POS..BASE_OFFSET_POS + 8].copy_from_slice(&offset.to_be_bytes());
}

/// Overwrites partitionLeaderEpoch (not covered by the CRC).
pub(crate) fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[LEADER_EPOCH_POS..LEADER_EPOCH_POS + 4].copy_from_slice(&epoch.to_be_bytes());
}

/// Switches a batch to LogAppendTime: sets the timestamp-type bit and maxTimestamp in its
/// header, then recomputes the CRC over the patched header and the untouched body (both
/// fields are covered by it).
pub(crate) fn set_log_append_time(header: &mut [u8; HEADER_LEN], body: &[u8], append_time_ms: i64) {
    let attributes = i16_at(header, ATTRIBUTES_POS) | TIMESTAMP_TYPE_BIT;
    header[ATTRIBUTES_POS..ATTRIBUTES_POS + 2].copy_from_slice(&attributes.to_be_bytes());
    header[MAX_TIMESTAMP_POS..MAX_TIMESTAMP_POS + 8].copy_from_slice(&append_time_ms.to_be_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&header[ATTRIBUTES_POS..]), body);
    header[CRC_POS..CRC_POS + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Rewrites batchLength, recordsCount and maxTimestamp of a batch rebuilt from a subset of
/// its records (`batch` is the whole new batch), then its CRC.
pub(crate) fn patch_rebuilt_header(batch: &mut [u8], records_count: i32, max_timestamp: i64) {
    let length = (batch.len() - LOG_OVERHEAD) as i32;
    batch[LENGTH_POS..LENGTH_POS + 4].copy_from_slice(&length.to_be_bytes());
    batch[RECORDS_COUNT_POS..RECORDS_COUNT_POS + 4].copy_from_slice(&records_count.to_be_bytes());
    batch[MAX_TIMESTAMP_POS..MAX_TIMESTAMP_POS + 8].copy_from_slice(&max_timestamp.to_be_bytes());
    let crc = compute_crc(batch);
    batch[CRC_POS..CRC_POS + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Whether any record in `batches` (whole, validated batches, as from
/// [`validate_batches`]) has a null key. Decodes (and decompresses) every record, so
/// the produce path calls it only for compacted topics, which refuse such records with
/// CORRUPT_MESSAGE as Kafka does. Control batches are not looked at.
pub fn batch_has_null_key(batches: &[u8]) -> Result<bool, BatchError> {
    let mut pos = 0usize;
    while pos < batches.len() {
        let header = BatchHeader::parse(&batches[pos..]).map_err(|e| e.shifted(pos))?;
        let end = pos + header.total_len();
        if end > batches.len() {
            return Err(BatchError::Truncated {
                position: pos,
                needed: header.total_len(),
                available: batches.len() - pos,
            });
        }
        if !header.is_control() {
            let mut buf = bytes::Bytes::copy_from_slice(&batches[pos..end]);
            let set =
                kafka_protocol::records::RecordBatchDecoder::decode(&mut buf).map_err(|e| {
                    BatchError::Undecodable {
                        position: pos,
                        reason: e.to_string(),
                    }
                })?;
            if set.records.iter().any(|r| r.key.is_none()) {
                return Ok(true);
            }
        }
        pos = end;
    }
    Ok(false)
}

/// Who is producing the batches; clients may not write control batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOrigin {
    /// A produce request from a client.
    Client,
    /// The broker itself (transaction markers, coordinators).
    Internal,
}

/// Result of validating a records blob: one header per batch, never per record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedBatches {
    /// Headers as received (offsets and epochs not yet assigned).
    pub headers: Vec<BatchHeader>,
    /// Total number of records over all batches.
    pub record_count: i64,
    /// Size of the whole blob in bytes.
    pub total_bytes: usize,
    /// Largest batch maxTimestamp (-1 when no batch carries a timestamp).
    pub max_timestamp: i64,
    /// Offset delta, from the first record of the blob, of the last record of the
    /// first batch holding `max_timestamp` (batch granularity, like Kafka's
    /// shallow offset of max timestamp); -1 when `max_timestamp` is -1.
    pub offset_delta_of_max_timestamp: i64,
}

/// Validates a produce request's records blob (client origin). See
/// [`validate_batches_from`].
pub fn validate_batches(
    buf: &[u8],
    max_batch_bytes: usize,
) -> Result<ValidatedBatches, BatchError> {
    validate_batches_from(buf, max_batch_bytes, AppendOrigin::Client)
}

/// Validates a records blob batch by batch, mirroring Kafka's
/// `UnifiedLog.analyzeAndValidateRecords` and `LogValidator.validateBatch` for
/// magic v2: every batch complete, magic 2, batchLength >= 49, size <=
/// `max_batch_bytes`, CRC-32C correct, known compression codec, recordsCount >= 1
/// and lastOffsetDelta == recordsCount - 1 (Kafka enforces this for compressed
/// batches too), and for clients: no control batches, and a producer id implies
/// a non-negative base sequence. Trailing bytes that do not form a batch are an
/// error. Records themselves are not decoded.
pub fn validate_batches_from(
    buf: &[u8],
    max_batch_bytes: usize,
    origin: AppendOrigin,
) -> Result<ValidatedBatches, BatchError> {
    let mut headers = Vec::new();
    let mut pos = 0usize;
    let mut record_count = 0i64;
    let mut offset_delta = 0i64;
    let mut max_timestamp = -1i64;
    let mut offset_delta_of_max_timestamp = -1i64;
    while pos < buf.len() {
        let rest = &buf[pos..];
        if rest.len() < LOG_OVERHEAD {
            return Err(BatchError::Truncated {
                position: pos,
                needed: LOG_OVERHEAD,
                available: rest.len(),
            });
        }
        let header = BatchHeader::parse(rest).map_err(|e| e.shifted(pos))?;
        let size = header.total_len();
        if size > max_batch_bytes {
            return Err(BatchError::TooLarge {
                size,
                max: max_batch_bytes,
            });
        }
        if size > rest.len() {
            return Err(BatchError::Truncated {
                position: pos,
                needed: size,
                available: rest.len(),
            });
        }
        let batch = &rest[..size];
        verify_crc(batch, &header).map_err(|e| match e {
            BatchError::Corrupt {
                stored, computed, ..
            } => BatchError::Corrupt {
                position: pos,
                stored,
                computed,
            },
            other => other,
        })?;
        let codec = header.compression();
        if codec > MAX_COMPRESSION_CODEC {
            return Err(BatchError::UnknownCompression {
                position: pos,
                codec,
            });
        }
        if header.records_count < 1
            || header.last_offset_delta < 0
            || header.last_offset_delta as i64 + 1 != header.records_count as i64
        {
            return Err(BatchError::InvalidRecordCount {
                position: pos,
                count: header.records_count,
                last_offset_delta: header.last_offset_delta,
            });
        }
        if origin == AppendOrigin::Client {
            if header.is_control() {
                return Err(BatchError::ControlBatchFromClient { position: pos });
            }
            if header.producer_id >= 0 && header.base_sequence < 0 {
                return Err(BatchError::InvalidSequence {
                    position: pos,
                    producer_id: header.producer_id,
                    base_sequence: header.base_sequence,
                });
            }
        }
        let batch_last_delta = offset_delta + header.last_offset_delta as i64;
        if header.max_timestamp > max_timestamp {
            max_timestamp = header.max_timestamp;
            offset_delta_of_max_timestamp = batch_last_delta;
        }
        record_count += header.records_count as i64;
        offset_delta = batch_last_delta + 1;
        headers.push(header);
        pos += size;
    }
    if headers.is_empty() {
        return Err(BatchError::Empty);
    }
    Ok(ValidatedBatches {
        headers,
        record_count,
        total_bytes: buf.len(),
        max_timestamp,
        offset_delta_of_max_timestamp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TestBatch;
    use bytes::BytesMut;
    use kafka_protocol::records::{
        Compression, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
    };
    use proptest::prelude::*;

    #[test]
    fn parses_encoder_output() {
        let buf = TestBatch::keyed(3, 10).timestamp(1_000).encode();
        let v = validate_batches(&buf, 1 << 20).unwrap();
        assert_eq!(v.headers.len(), 1);
        let h = v.headers[0];
        assert_eq!(h.magic, 2);
        assert_eq!(h.records_count, 3);
        assert_eq!(h.last_offset_delta, 2);
        assert_eq!(h.total_len(), buf.len());
        assert_eq!(h.base_timestamp, 1_000);
        assert_eq!(h.max_timestamp, 1_002);
        assert_eq!(v.record_count, 3);
        assert_eq!(v.max_timestamp, 1_002);
        assert_eq!(v.offset_delta_of_max_timestamp, 2);
        assert!(!h.is_log_append_time() && !h.is_control() && !h.is_transactional());
    }

    #[test]
    fn multiple_batches_and_compression() {
        let mut buf = TestBatch::keyed(2, 5).timestamp(50).encode();
        buf.extend_from_slice(
            &TestBatch::keyed(4, 100)
                .timestamp(10)
                .compression(Compression::Gzip)
                .encode(),
        );
        buf.extend_from_slice(
            &TestBatch::keyed(1, 100)
                .timestamp(5)
                .compression(Compression::Lz4)
                .encode(),
        );
        let v = validate_batches(&buf, 1 << 20).unwrap();
        assert_eq!(v.headers.len(), 3);
        assert_eq!(v.record_count, 7);
        assert_eq!(v.headers[1].compression(), 1);
        assert_eq!(v.max_timestamp, 51);
        assert_eq!(v.offset_delta_of_max_timestamp, 1);
    }

    #[test]
    fn rejections_map_to_kafka_codes() {
        let good = TestBatch::keyed(2, 10).timestamp(0).encode();
        let too_large = validate_batches(&good, good.len() - 1).unwrap_err();
        assert_eq!(too_large.kafka_error_code(), error_codes::MESSAGE_TOO_LARGE);

        let mut bad_crc = good.clone();
        let last = bad_crc.len() - 1;
        bad_crc[last] ^= 0xff;
        let e = validate_batches(&bad_crc, 1 << 20).unwrap_err();
        assert!(matches!(e, BatchError::Corrupt { .. }));
        assert_eq!(e.kafka_error_code(), error_codes::CORRUPT_MESSAGE);

        let mut old_magic = good.clone();
        old_magic[MAGIC_POS] = 1;
        let e = validate_batches(&old_magic, 1 << 20).unwrap_err();
        assert_eq!(
            e.kafka_error_code(),
            error_codes::UNSUPPORTED_FOR_MESSAGE_FORMAT
        );

        let e = validate_batches(&good[..good.len() - 3], 1 << 20).unwrap_err();
        assert!(matches!(e, BatchError::Truncated { .. }));

        let mut trailing = good.clone();
        trailing.extend_from_slice(&[0, 0, 0]);
        let e = validate_batches(&trailing, 1 << 20).unwrap_err();
        assert_eq!(e.kafka_error_code(), error_codes::CORRUPT_MESSAGE);

        assert_eq!(
            validate_batches(&[], 1 << 20)
                .unwrap_err()
                .kafka_error_code(),
            error_codes::INVALID_RECORD
        );

        // recordsCount disagreeing with lastOffsetDelta (CRC fixed up so only the
        // count check can fail).
        let mut bad_count = good.clone();
        bad_count[RECORDS_COUNT_POS..RECORDS_COUNT_POS + 4].copy_from_slice(&5i32.to_be_bytes());
        let crc = compute_crc(&bad_count);
        bad_count[CRC_POS..CRC_POS + 4].copy_from_slice(&crc.to_be_bytes());
        let e = validate_batches(&bad_count, 1 << 20).unwrap_err();
        assert!(matches!(e, BatchError::InvalidRecordCount { .. }));
        assert_eq!(e.kafka_error_code(), error_codes::INVALID_RECORD);

        // Control batches only from the broker itself.
        let mut control = good.clone();
        let attrs = i16_at(&control, ATTRIBUTES_POS) | CONTROL_BIT;
        control[ATTRIBUTES_POS..ATTRIBUTES_POS + 2].copy_from_slice(&attrs.to_be_bytes());
        let crc = compute_crc(&control);
        control[CRC_POS..CRC_POS + 4].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            validate_batches(&control, 1 << 20),
            Err(BatchError::ControlBatchFromClient { .. })
        ));
        assert!(validate_batches_from(&control, 1 << 20, AppendOrigin::Internal).is_ok());
    }

    #[test]
    fn patches_keep_crc_valid() {
        let mut buf = TestBatch::keyed(3, 10).timestamp(100).encode();
        set_base_offset(&mut buf, 42);
        set_partition_leader_epoch(&mut buf, 7);
        let h = BatchHeader::parse(&buf).unwrap();
        assert_eq!((h.base_offset, h.partition_leader_epoch), (42, 7));
        assert_eq!(h.last_offset(), 44);
        verify_crc(&buf, &h).unwrap();

        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&buf[..HEADER_LEN]);
        set_log_append_time(&mut header, &buf[HEADER_LEN..], 9_999);
        buf[..HEADER_LEN].copy_from_slice(&header);
        let h = BatchHeader::parse(&buf).unwrap();
        assert!(h.is_log_append_time());
        assert_eq!(h.max_timestamp, 9_999);
        verify_crc(&buf, &h).unwrap();
        // The library decoder agrees the CRC is valid.
        let mut bytes = buf.freeze();
        kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes).unwrap();
    }

    #[test]
    fn null_keys_are_found_in_any_batch() {
        let keyed = TestBatch::keyed(3, 5)
            .timestamp(0)
            .compression(Compression::Gzip)
            .encode();
        assert!(!batch_has_null_key(&keyed).unwrap());
        let mut records = RecordBatchDecoder::decode(&mut keyed.clone().freeze())
            .unwrap()
            .records;
        records[1].key = None;
        let mut null_key = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression: Compression::Lz4,
        };
        RecordBatchEncoder::encode(&mut null_key, &records, &options).unwrap();
        let mut both = keyed.clone();
        both.extend_from_slice(&null_key);
        assert!(batch_has_null_key(&both).unwrap());
        let mut bad = keyed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        let e = batch_has_null_key(&bad).unwrap_err();
        assert_eq!(e.kafka_error_code(), error_codes::CORRUPT_MESSAGE);
    }

    #[test]
    fn last_sequence_wraps() {
        let mut buf = TestBatch::keyed(3, 1).timestamp(0).encode();
        buf[BASE_SEQUENCE_POS..BASE_SEQUENCE_POS + 4]
            .copy_from_slice(&(i32::MAX - 1).to_be_bytes());
        let h = BatchHeader::parse(&buf).unwrap();
        assert_eq!(h.last_sequence(), 0);
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = validate_batches(&bytes, 1 << 20);
            let _ = BatchHeader::parse(&bytes);
        }

        #[test]
        fn never_panics_on_mutated_batches(
            count in 1usize..5,
            mutations in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in any::<usize>(),
        ) {
            let mut buf = TestBatch::keyed(count, 20).timestamp(1_000).encode().to_vec();
            for (pos, byte) in mutations {
                let len = buf.len();
                buf[pos % len] = byte;
            }
            let cut = cut % (buf.len() + 1);
            let _ = validate_batches(&buf[..cut], 1 << 20);
            let _ = validate_batches(&buf, 1 << 20);
        }

        #[test]
        fn encoder_batches_validate(
            counts in proptest::collection::vec(1usize..20, 1..4),
            ts in 0i64..1_000_000_000_000,
            value_len in 0usize..200,
        ) {
            let mut buf = BytesMut::new();
            for c in &counts {
                buf.extend_from_slice(&TestBatch::keyed(*c, value_len).timestamp(ts).encode());
            }
            let v = validate_batches(&buf, 1 << 20).unwrap();
            prop_assert_eq!(v.headers.len(), counts.len());
            prop_assert_eq!(v.record_count, counts.iter().sum::<usize>() as i64);
            prop_assert_eq!(v.total_bytes, buf.len());
        }
    }
}
