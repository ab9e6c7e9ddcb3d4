//! Idempotent-producer state of one partition: for each producer id, its epoch and the last
//! batches it wrote, so a retried batch is answered with its original offsets and a gap or a
//! stale epoch is refused. Pure logic; the partition persists snapshots of it.

use std::collections::{HashMap, VecDeque};

use kafka_protocol::ResponseError;
use serde::{Deserialize, Serialize};

use crate::log::batch::BatchHeader;

/// Kafka keeps the last five batches per producer, matching the producer's in-flight limit.
pub const CACHED_BATCHES_PER_PRODUCER: usize = 5;

/// What was written for one producer batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    pub timestamp: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchMeta>,
}

/// The outcome of checking an incoming batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// New data in sequence: append it.
    Append,
    /// A retry of a batch already written: answer with its original offsets, write nothing.
    Duplicate(BatchMeta),
}

/// Why a batch is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    #[error("producer {producer_id} epoch {epoch} is older than the current epoch {current}")]
    StaleEpoch {
        producer_id: i64,
        epoch: i16,
        current: i16,
    },
    #[error("producer {producer_id}: expected sequence {expected}, got {got}")]
    OutOfOrder {
        producer_id: i64,
        expected: i32,
        got: i32,
    },
}

impl SequenceError {
    pub fn kafka_error(&self) -> ResponseError {
        match self {
            SequenceError::StaleEpoch { .. } => ResponseError::InvalidProducerEpoch,
            SequenceError::OutOfOrder { .. } => ResponseError::OutOfOrderSequenceNumber,
        }
    }
}

/// The state of every producer that wrote to one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerStateTable {
    producers: HashMap<i64, ProducerEntry>,
}

fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

impl ProducerStateTable {
    /// Checks a batch from `producer_id` before it is appended.
    pub fn check(
        &self,
        producer_id: i64,
        epoch: i16,
        first_seq: i32,
        last_seq: i32,
    ) -> Result<SequenceCheck, SequenceError> {
        let Some(entry) = self.producers.get(&producer_id) else {
            // Unknown producer (new, or its state expired with retention): accept, as Kafka does.
            return Ok(SequenceCheck::Append);
        };
        if epoch < entry.epoch {
            return Err(SequenceError::StaleEpoch {
                producer_id,
                epoch,
                current: entry.epoch,
            });
        }
        if epoch > entry.epoch {
            // A bumped epoch restarts sequences at zero.
            return if first_seq == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err(SequenceError::OutOfOrder {
                    producer_id,
                    expected: 0,
                    got: first_seq,
                })
            };
        }
        if let Some(dup) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
        {
            return Ok(SequenceCheck::Duplicate(*dup));
        }
        let expected = entry.batches.back().map_or(0, |b| next_seq(b.last_seq));
        if first_seq != expected {
            return Err(SequenceError::OutOfOrder {
                producer_id,
                expected,
                got: first_seq,
            });
        }
        Ok(SequenceCheck::Append)
    }

    /// Records an appended batch.
    pub fn record(&mut self, producer_id: i64, epoch: i16, meta: BatchMeta) {
        let entry = self.producers.entry(producer_id).or_default();
        if epoch != entry.epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == CACHED_BATCHES_PER_PRODUCER {
            entry.batches.pop_front();
        }
        entry.batches.push_back(meta);
    }

    /// Replays batch headers read back from the log (after recovery or from a snapshot's end).
    pub fn replay(&mut self, headers: &[BatchHeader]) {
        for h in headers.iter().filter(|h| h.producer_id >= 0) {
            self.record(
                h.producer_id,
                h.producer_epoch,
                BatchMeta {
                    first_seq: h.base_sequence,
                    last_seq: h.last_sequence(),
                    first_offset: h.base_offset,
                    last_offset: h.last_offset(),
                    timestamp: h.max_timestamp,
                },
            );
        }
    }

    /// Drops batches at or after `offset` (the log was truncated there).
    pub fn truncate_from(&mut self, offset: i64) {
        for entry in self.producers.values_mut() {
            entry.batches.retain(|b| b.last_offset < offset);
        }
        self.producers.retain(|_, e| !e.batches.is_empty());
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(first_seq: i32, last_seq: i32, first_offset: i64) -> BatchMeta {
        BatchMeta {
            first_seq,
            last_seq,
            first_offset,
            last_offset: first_offset + (last_seq - first_seq) as i64,
            timestamp: 0,
        }
    }

    #[test]
    fn in_order_duplicate_gap_and_stale_epoch() {
        let mut t = ProducerStateTable::default();
        assert_eq!(t.check(7, 0, 0, 9), Ok(SequenceCheck::Append));
        t.record(7, 0, meta(0, 9, 100));
        assert_eq!(t.check(7, 0, 10, 19), Ok(SequenceCheck::Append));
        t.record(7, 0, meta(10, 19, 110));
        assert_eq!(
            t.check(7, 0, 0, 9),
            Ok(SequenceCheck::Duplicate(meta(0, 9, 100)))
        );
        assert!(matches!(
            t.check(7, 0, 25, 30),
            Err(SequenceError::OutOfOrder { expected: 20, .. })
        ));
        assert_eq!(t.check(7, 1, 0, 3), Ok(SequenceCheck::Append));
        assert!(matches!(
            t.check(7, 1, 5, 6),
            Err(SequenceError::OutOfOrder { expected: 0, .. })
        ));
        t.record(7, 1, meta(0, 3, 120));
        assert!(matches!(
            t.check(7, 0, 20, 21),
            Err(SequenceError::StaleEpoch { current: 1, .. })
        ));
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut t = ProducerStateTable::default();
        for i in 0..7 {
            t.record(1, 0, meta(i, i, i as i64));
        }
        assert!(matches!(
            t.check(1, 0, 6, 6),
            Ok(SequenceCheck::Duplicate(_))
        ));
        assert!(matches!(
            t.check(1, 0, 2, 2),
            Ok(SequenceCheck::Duplicate(_))
        ));
        assert!(t.check(1, 0, 1, 1).is_err());
        assert_eq!(t.check(1, 0, 7, 7), Ok(SequenceCheck::Append));
    }

    #[test]
    fn sequences_wrap_and_truncation_forgets() {
        let mut t = ProducerStateTable::default();
        t.record(1, 0, meta(i32::MAX - 1, i32::MAX, 10));
        assert_eq!(t.check(1, 0, 0, 4), Ok(SequenceCheck::Append));
        t.truncate_from(5);
        assert!(t.is_empty());
    }
}
