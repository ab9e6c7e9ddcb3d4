//! The `__consumer_offsets` topic: how committed offsets and group metadata are written to it
//! and read back. Keys and values are JSON; a null value is a tombstone that compaction
//! eventually removes. Pure functions.

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use serde::{Deserialize, Serialize};

use super::group::StoredGroup;

/// The internal topic's name, as in Kafka.
pub const OFFSETS_TOPIC: &str = crate::metadata::topic_name::INTERNAL_TOPICS[0];

/// A key in the offsets topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OffsetsKey {
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    Group {
        group: String,
    },
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_timestamp: i64,
}

/// One decoded record of the offsets topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffsetsRecord {
    Offset {
        group: String,
        topic: String,
        partition: i32,
        value: Option<CommittedOffset>,
    },
    Group {
        group: String,
        value: Option<StoredGroup>,
    },
}

impl OffsetsRecord {
    pub fn encode(&self) -> (Bytes, Option<Bytes>) {
        let json = |v: &dyn erased::Json| Bytes::from(v.to_json());
        match self {
            OffsetsRecord::Offset {
                group,
                topic,
                partition,
                value,
            } => (
                json(&OffsetsKey::Offset {
                    group: group.clone(),
                    topic: topic.clone(),
                    partition: *partition,
                }),
                value.as_ref().map(|v| json(v)),
            ),
            OffsetsRecord::Group { group, value } => (
                json(&OffsetsKey::Group {
                    group: group.clone(),
                }),
                value.as_ref().map(|v| json(v)),
            ),
        }
    }

    /// Decodes a record; `None` for keys this version does not know (skipped, not fatal).
    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Option<OffsetsRecord> {
        match serde_json::from_slice::<OffsetsKey>(key).ok()? {
            OffsetsKey::Offset {
                group,
                topic,
                partition,
            } => Some(OffsetsRecord::Offset {
                group,
                topic,
                partition,
                value: match value {
                    Some(v) => Some(serde_json::from_slice(v).ok()?),
                    None => None,
                },
            }),
            OffsetsKey::Group { group } => Some(OffsetsRecord::Group {
                group,
                value: match value {
                    Some(v) => Some(serde_json::from_slice(v).ok()?),
                    None => None,
                },
            }),
        }
    }
}

mod erased {
    /// Object-safe JSON encoding for the few types stored in the offsets topic.
    pub trait Json {
        fn to_json(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> Vec<u8> {
            serde_json::to_vec(self).expect("offsets topic records always serialize to JSON")
        }
    }
}

/// The offsets partition of a group: Java's `String.hashCode`, made non-negative, modulo the
/// partition count, as Kafka computes it.
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    let hash = group
        .encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32));
    (hash & 0x7fff_ffff) % partitions.max(1)
}

/// Encodes records as one uncompressed batch for the offsets topic.
pub fn encode_batch(records: &[OffsetsRecord], now_ms: i64) -> Bytes {
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let (key, value) = r.encode();
            Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // The encoder starts a new batch whenever offset - sequence changes; keeping it
                // constant gives one batch with base sequence -1 (not idempotent).
                sequence: i as i32 - 1,
                timestamp: now_ms,
                key: Some(key),
                value,
                headers: Default::default(),
            }
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, &records, &options)
        .expect("encoding an uncompressed batch cannot fail");
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_matches_java_hash_code() {
        // "test_group".hashCode() == 2059298962 in Java; "polygenelubricants" hashes to
        // i32::MIN, where Kafka's mask (not abs) matters.
        assert_eq!(partition_for("test_group", 50), 2059298962 % 50);
        assert_eq!(partition_for("polygenelubricants", 50), 0);
        assert_eq!(partition_for("", 50), 0);
        assert!((0..50).contains(&partition_for("ünïcode", 50)));
    }

    fn tomb_offset() -> OffsetsRecord {
        OffsetsRecord::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 0,
            value: None,
        }
    }

    #[test]
    fn records_round_trip_and_tombstones() {
        let r = OffsetsRecord::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 3,
            value: Some(CommittedOffset {
                offset: 42,
                leader_epoch: -1,
                metadata: Some("m".into()),
                commit_timestamp: 7,
            }),
        };
        let (k, v) = r.encode();
        assert_eq!(OffsetsRecord::decode(&k, v.as_deref()), Some(r));
        let tomb = OffsetsRecord::Group {
            group: "g".into(),
            value: None,
        };
        let (k, v) = tomb.encode();
        assert_eq!(OffsetsRecord::decode(&k, v.as_deref()), Some(tomb));
        assert_eq!(OffsetsRecord::decode(b"not json", None), None);
        let two = [
            OffsetsRecord::Group {
                group: "g".into(),
                value: None,
            },
            tomb_offset(),
        ];
        let batch = encode_batch(&two, 1);
        let validated = crate::log::batch::validate_batches(&batch, 1 << 20).unwrap();
        assert_eq!(
            validated.headers.len(),
            1,
            "one batch, as a partition append requires"
        );
        assert_eq!(validated.headers[0].base_sequence, -1);
    }
}
