//! Record-level work of the cleaner on one stored batch: decoding it (with
//! decompression) and rebuilding it from the records that survive.
//!
//! A rebuilt batch keeps what Kafka's `MemoryRecords.filterTo` keeps for magic v2:
//! the original header (base offset, lastOffsetDelta, so the last offset and the
//! producer's last sequence survive, baseTimestamp, producer id/epoch, base
//! sequence, attributes and thus the compression codec and timestamp type, leader
//! epoch). Surviving records are copied byte for byte from the decompressed records
//! section: their offset and timestamp deltas are relative to the unchanged base
//! offset and base timestamp, so offsets, timestamps, keys, values and headers are
//! exactly as produced. Only batchLength, recordsCount, maxTimestamp (CreateTime:
//! the largest surviving timestamp; LogAppendTime: unchanged) and the CRC change.

use std::cell::RefCell;

use anyhow::{anyhow, bail};
use bytes::{Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Decompressor, Gzip, Lz4, Snappy, Zstd};
use kafka_protocol::records::{Compression, Record, RecordBatchDecoder};

use super::batch::{patch_rebuilt_header, BatchHeader, HEADER_LEN};

/// The records of one batch, decoded, with each record's stored bytes.
pub(crate) struct DecodedBatch {
    pub records: Vec<Record>,
    /// `raw[i]` is record `i` as stored in the (decompressed) records section.
    raw: Vec<Bytes>,
}

/// What filtering a batch produced.
pub(crate) enum Filtered {
    /// Every record survives: the stored batch can be copied as is.
    Unchanged,
    /// No record survives; `usize` records were removed.
    Empty(usize),
    /// A rebuilt batch and the number of records removed.
    Rebuilt(BytesMut, usize),
}

/// Decodes every record of one whole batch (CRC checked by the decoder).
pub(crate) fn decode(batch: &Bytes) -> anyhow::Result<DecodedBatch> {
    let section = RefCell::new(Bytes::new());
    let mut buf = batch.clone();
    let set = RecordBatchDecoder::decode_with_custom_compression(
        &mut buf,
        Some(|data: &mut Bytes, codec: Compression| {
            let plain = decompress(data, codec)?;
            *section.borrow_mut() = plain.clone();
            Ok(plain)
        }),
    )?;
    let raw = split_records(&section.into_inner(), set.records.len())?;
    Ok(DecodedBatch {
        records: set.records,
        raw,
    })
}

/// Keeps the records of `decoded` (the records of `batch`, whose header is `h`)
/// for which `keep` holds.
pub(crate) fn filter(
    batch: &[u8],
    h: &BatchHeader,
    decoded: &DecodedBatch,
    keep: impl Fn(&Record) -> bool,
) -> anyhow::Result<Filtered> {
    let kept: Vec<usize> = (0..decoded.records.len())
        .filter(|&i| keep(&decoded.records[i]))
        .collect();
    let removed = decoded.records.len() - kept.len();
    if removed == 0 {
        return Ok(Filtered::Unchanged);
    }
    if kept.is_empty() {
        return Ok(Filtered::Empty(removed));
    }
    let mut out = BytesMut::with_capacity(batch.len());
    out.extend_from_slice(&batch[..HEADER_LEN]);
    let raw: Vec<&Bytes> = kept.iter().map(|&i| &decoded.raw[i]).collect();
    compress(h.compression(), &mut out, &raw)?;
    let max_timestamp = if h.is_log_append_time() {
        h.max_timestamp
    } else {
        kept.iter()
            .map(|&i| decoded.records[i].timestamp)
            .max()
            .unwrap_or(h.max_timestamp)
    };
    patch_rebuilt_header(&mut out, kept.len() as i32, max_timestamp);
    Ok(Filtered::Rebuilt(out, removed))
}

fn decompress(data: &mut Bytes, codec: Compression) -> anyhow::Result<Bytes> {
    let take = |b: &mut Bytes| Ok(b.clone());
    match codec {
        Compression::None => take(data),
        Compression::Gzip => <Gzip as Decompressor<Bytes>>::decompress(data, take),
        Compression::Snappy => <Snappy as Decompressor<Bytes>>::decompress(data, take),
        Compression::Lz4 => <Lz4 as Decompressor<Bytes>>::decompress(data, take),
        Compression::Zstd => <Zstd as Decompressor<Bytes>>::decompress(data, take),
    }
}

/// Appends `records` to `out` compressed with the codec id of a batch's attributes.
fn compress(codec: u8, out: &mut BytesMut, records: &[&Bytes]) -> anyhow::Result<()> {
    let write = |b: &mut BytesMut| {
        for r in records {
            b.extend_from_slice(r);
        }
        Ok(())
    };
    match codec {
        0 => write(out),
        1 => <Gzip as Compressor<BytesMut>>::compress(out, write),
        2 => <Snappy as Compressor<BytesMut>>::compress(out, write),
        3 => <Lz4 as Compressor<BytesMut>>::compress(out, write),
        4 => <Zstd as Compressor<BytesMut>>::compress(out, write),
        c => bail!("unknown compression codec {c}"),
    }
}

/// Splits a records section into `count` records, each prefixed by its zigzag
/// varint length.
fn split_records(section: &Bytes, count: usize) -> anyhow::Result<Vec<Bytes>> {
    let mut out = Vec::with_capacity(count);
    let mut pos = 0usize;
    for _ in 0..count {
        let (len, prefix) =
            read_varint(&section[pos..]).ok_or_else(|| anyhow!("bad record length"))?;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| (pos + prefix).checked_add(l))
            .filter(|&e| e <= section.len())
            .ok_or_else(|| anyhow!("record length {len} out of bounds"))?;
        out.push(section.slice(pos..end));
        pos = end;
    }
    if pos != section.len() {
        bail!("{} bytes after the last record", section.len() - pos);
    }
    Ok(out)
}

/// A zigzag-encoded varint (Kafka's record `length`) and the bytes it took.
fn read_varint(b: &[u8]) -> Option<(i64, usize)> {
    let mut raw = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        raw |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let value = (raw >> 1) as i64 ^ -((raw & 1) as i64);
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints() {
        assert_eq!(read_varint(&[0x00]), Some((0, 1)));
        assert_eq!(read_varint(&[0x01]), Some((-1, 1)));
        assert_eq!(read_varint(&[0x02]), Some((1, 1)));
        assert_eq!(read_varint(&[0xac, 0x02]), Some((150, 2)));
        assert_eq!(read_varint(&[0x80]), None);
    }
}
