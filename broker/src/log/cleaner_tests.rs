//! Tests of log compaction against real files in temp directories.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{Compression, Record, RecordBatchDecoder};

use super::*;
use crate::test_support::TestBatch;

const DAY_MS: i64 = 86_400_000;

fn compact_config() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 128,
        retention_ms: -1,
        cleanup_delete: false,
        cleanup_compact: true,
        ..LogConfig::default()
    }
}

/// A record to produce: key and value (None = null).
type Kv = (Option<String>, Option<String>);

fn kv(key: &str, value: &str) -> Kv {
    (Some(key.to_string()), Some(value.to_string()))
}

fn tombstone(key: &str) -> Kv {
    (Some(key.to_string()), None)
}

fn null_key(value: &str) -> Kv {
    (None, Some(value.to_string()))
}

/// One batch with timestamps `ts, ts+1, ...`, a header on every record, and
/// optionally an idempotent producer (id, epoch, base sequence).
fn encode(
    recs: &[Kv],
    ts: i64,
    compression: Compression,
    producer: Option<(i64, i16, i32)>,
) -> BytesMut {
    let mut batch = TestBatch::default()
        .timestamp(ts)
        .compression(compression)
        .with_headers();
    if let Some((id, epoch, first_sequence)) = producer {
        batch = batch.producer(id, epoch, first_sequence);
    }
    for (k, v) in recs {
        batch = batch.record(
            k.as_deref().map(str::as_bytes),
            v.as_deref().map(str::as_bytes),
        );
    }
    batch.encode()
}

fn append_with(log: &Log, recs: &[Kv], ts: i64, c: Compression, p: Option<(i64, i16, i32)>) {
    let buf = encode(recs, ts, c, p);
    let v = validate_batches(&buf, 1 << 20).unwrap();
    log.append(&buf, &v, 0, None).unwrap();
}

fn append(log: &Log, recs: &[Kv], ts: i64) {
    append_with(log, recs, ts, Compression::None, None);
}

/// Every record readable from the log, in offset order.
fn read_all(log: &Log) -> Vec<Record> {
    let mut out = Vec::new();
    let mut next = log.log_start_offset();
    while next < log.log_end_offset() {
        let r = log.read(next, 1 << 20, i64::MAX, true).unwrap();
        assert!(!r.records.is_empty(), "nothing read at {next}");
        let mut pos = 0;
        let mut last = next;
        while pos < r.records.len() {
            let h = BatchHeader::parse(&r.records[pos..]).unwrap();
            last = h.last_offset();
            pos += h.total_len();
        }
        let mut b = r.records.clone();
        for set in RecordBatchDecoder::decode_all(&mut b).unwrap() {
            out.extend(set.records.into_iter().filter(|rec| rec.offset >= next));
        }
        next = last + 1;
    }
    out
}

/// Latest (offset, value) per key.
fn latest(records: &[Record]) -> BTreeMap<Bytes, (i64, Option<Bytes>)> {
    records
        .iter()
        .filter_map(|r| Some((r.key.clone()?, (r.offset, r.value.clone()))))
        .collect()
}

fn roll(log: &Log) {
    let mut st = log.lock();
    st.roll(&log.dir, 0).unwrap();
}

/// (base, next offset, size, max timestamp, offset of max timestamp) per segment.
fn segment_facts(log: &Log) -> Vec<(i64, i64, u64, i64, i64)> {
    let st = log.lock();
    st.segments
        .iter()
        .map(|s| {
            (
                s.base_offset,
                s.next_offset,
                s.size,
                s.max_timestamp,
                s.offset_of_max_timestamp,
            )
        })
        .collect()
}

fn active_base(log: &Log) -> i64 {
    log.lock().active().base_offset
}

/// 120 batches of 1-4 records over 17 keys, some tombstones; timestamps ~1000.
fn fill(log: &Log, compression: Compression) {
    for i in 0..120usize {
        let recs: Vec<Kv> = (0..i % 4 + 1)
            .map(|j| {
                let key = format!("k{}", (i * 7 + j * 3) % 17);
                let value = (i % 11 != 5).then(|| format!("v{i}-{j}-{}", "x".repeat(i % 30)));
                (Some(key), value)
            })
            .collect();
        append_with(log, &recs, 1_000 + i as i64 * 10, compression, None);
    }
}

/// The records before and after must agree per key, offsets and records must be
/// preserved, and inactive segments must hold only latest records.
fn check_compacted(before: &[Record], after: &[Record], active_base: i64) {
    assert_eq!(latest(after), latest(before));
    for r in after {
        assert!(before.contains(r), "record at {} was changed", r.offset);
    }
    let model = latest(before);
    for r in after.iter().filter(|r| r.offset < active_base) {
        let key = r.key.clone().expect("null keys are dropped");
        assert_eq!(
            model[&key].0, r.offset,
            "obsolete record kept at {}",
            r.offset
        );
    }
    for r in before.iter().filter(|r| r.offset >= active_base) {
        assert!(after.contains(r), "active segment record {} lost", r.offset);
    }
}

#[test]
fn keeps_the_latest_value_per_key_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), compact_config()).unwrap();
    fill(&log, Compression::None);
    assert!(log.num_segments() > 4, "{} segments", log.num_segments());
    let (start, end, size) = (
        log.log_start_offset(),
        log.log_end_offset(),
        log.size_bytes(),
    );
    let before = read_all(&log);

    let outcome = log.clean(10_000, false).unwrap();
    assert!(outcome.segments_cleaned > 0, "{outcome:?}");
    assert!(outcome.records_removed > 0);
    assert!(outcome.bytes_after < outcome.bytes_before);
    assert_eq!(
        log.size_bytes(),
        size - outcome.bytes_before + outcome.bytes_after
    );
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (start, end));
    let after = read_all(&log);
    check_compacted(&before, &after, active_base(&log));
    assert_eq!(log.cleaner_checkpoint(), active_base(&log));

    // A second run has nothing left to remove.
    let again = log.clean(10_000, true).unwrap();
    assert_eq!(again.records_removed, 0);
    assert_eq!(read_all(&log), after);

    // Same data and segment facts after a clean reopen and after a crash (no close).
    let facts = segment_facts(&log);
    log.close().unwrap();
    drop(log);
    let log = Log::open(dir.path(), compact_config()).unwrap();
    assert_eq!(read_all(&log), after);
    assert_eq!(segment_facts(&log), facts);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (start, end));
    assert_eq!(log.cleaner_checkpoint(), active_base(&log));
    drop(log);
    let log = Log::open(dir.path(), compact_config()).unwrap();
    assert_eq!(read_all(&log), after);
    for entry in fs::read_dir(dir.path()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(recovery::is_known_file(&name), "unexpected file {name}");
    }
}

#[test]
fn compressed_batches_keep_their_codec() {
    for codec in [
        Compression::Gzip,
        Compression::Lz4,
        Compression::Zstd,
        Compression::Snappy,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), compact_config()).unwrap();
        fill(&log, codec);
        let before = read_all(&log);
        let outcome = log.clean(10_000, true).unwrap();
        assert!(outcome.records_removed > 0, "{codec:?}");
        let after = read_all(&log);
        check_compacted(&before, &after, active_base(&log));
        let r = log.read(0, 1 << 20, i64::MAX, true).unwrap();
        let mut pos = 0;
        while pos < r.records.len() {
            let h = BatchHeader::parse(&r.records[pos..]).unwrap();
            assert_eq!(h.compression(), codec as u8);
            batch::verify_crc(&r.records[pos..pos + h.total_len()], &h).unwrap();
            pos += h.total_len();
        }
    }
}

#[test]
fn tombstones_are_kept_then_dropped_after_delete_retention() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        delete_retention_ms: 1_000,
        ..compact_config()
    };
    let log = Log::open(dir.path(), config).unwrap();
    append(&log, &[kv("a", "1"), kv("b", "1")], 10_000);
    append(&log, &[tombstone("a")], 20_000);
    roll(&log);
    append(&log, &[kv("c", "1")], 30_000);

    // 20_000 is not older than now - 1_000: the tombstone stays, "a"=1 goes.
    log.clean(20_500, true).unwrap();
    let recs = read_all(&log);
    let keys: Vec<_> = recs.iter().map(|r| (r.offset, r.value.is_some())).collect();
    assert_eq!(keys, vec![(1, true), (2, false), (3, true)]);

    log.clean(21_001, true).unwrap();
    let offsets: Vec<i64> = read_all(&log).iter().map(|r| r.offset).collect();
    assert_eq!(offsets, vec![1, 3]);
    assert_eq!(log.log_end_offset(), 4);
}

#[test]
fn min_compaction_lag_protects_young_segments() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        min_compaction_lag_ms: 1_000,
        ..compact_config()
    };
    let log = Log::open(dir.path(), config).unwrap();
    append(&log, &[kv("a", "1")], 10_000);
    roll(&log);
    append(&log, &[kv("a", "2")], 50_000);
    roll(&log);
    append(&log, &[kv("a", "3")], 60_000);

    // Only the first segment is old enough.
    let o = log.clean(50_500, true).unwrap();
    assert_eq!((o.segments_cleaned, o.records_removed), (1, 1));
    assert_eq!(log.cleaner_checkpoint(), 1);
    let offsets: Vec<i64> = read_all(&log).iter().map(|r| r.offset).collect();
    assert_eq!(offsets, vec![1, 2]);

    let o = log.clean(51_000, true).unwrap();
    assert_eq!((o.segments_cleaned, o.records_removed), (1, 1));
    let offsets: Vec<i64> = read_all(&log).iter().map(|r| r.offset).collect();
    assert_eq!(offsets, vec![2]);
}

#[test]
fn active_segment_is_never_rewritten_but_obsoletes_older_copies() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), compact_config()).unwrap();
    append(&log, &[kv("a", "1"), kv("b", "1")], 1_000);
    roll(&log);
    append(&log, &[kv("a", "2"), kv("a", "3"), null_key("n")], 2_000);
    let active_before = {
        let st = log.lock();
        (Arc::clone(&st.active().log), st.active().size)
    };
    let o = log.clean(10_000, true).unwrap();
    assert_eq!((o.segments_cleaned, o.records_removed), (1, 1));
    let recs = read_all(&log);
    let offsets: Vec<i64> = recs.iter().map(|r| r.offset).collect();
    // "a" at 0 is gone; the active segment keeps both "a"s and the null key.
    assert_eq!(offsets, vec![1, 2, 3, 4]);
    let st = log.lock();
    assert!(Arc::ptr_eq(&st.active().log, &active_before.0));
    assert_eq!(st.active().size, active_before.1);
}

#[test]
fn null_keys_are_dropped_from_cleaned_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), compact_config()).unwrap();
    append(&log, &[null_key("x"), kv("a", "1")], 1_000);
    roll(&log);
    let o = log.clean(10_000, true).unwrap();
    assert_eq!(o.records_removed, 1);
    let offsets: Vec<i64> = read_all(&log).iter().map(|r| r.offset).collect();
    assert_eq!(offsets, vec![1]);
}

#[test]
fn fetch_at_a_removed_offset_returns_the_next_batch() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), compact_config()).unwrap();
    append(&log, &[kv("a", "1"), kv("b", "1")], 1_000); // 0-1: all obsolete
    append(&log, &[kv("c", "1")], 1_000); // 2: obsolete
    append(&log, &[kv("d", "1"), kv("a", "2")], 1_000); // 3-4: 3 obsolete
    append(&log, &[kv("b", "2"), kv("c", "2"), kv("d", "2")], 1_000); // 5-7
    roll(&log);
    append(&log, &[kv("e", "1")], 1_000); // 8
    log.clean(10_000, true).unwrap();
    assert_eq!(log.log_start_offset(), 0);
    for (fetch, first) in [(0, 3), (1, 3), (2, 3), (3, 3), (4, 3), (5, 5), (6, 5)] {
        let r = log.read(fetch, 1 << 20, i64::MAX, true).unwrap();
        assert_eq!(r.first_offset, Some(first), "fetch at {fetch}");
    }
    // The rebuilt batch keeps its base and last offset (3..=4) but holds only 4.
    let r = log.read(3, 1, i64::MAX, true).unwrap();
    let h = BatchHeader::parse(&r.records).unwrap();
    assert_eq!((h.base_offset, h.last_offset(), h.records_count), (3, 4, 1));
    assert_eq!(read_all(&log).first().map(|r| r.offset), Some(4));
    // Timestamp lookups skip the removed records too.
    assert_eq!(log.offset_for_timestamp(0).unwrap().map(|f| f.0), Some(4));
}

#[test]
fn gaps_work_with_a_dense_index() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 1 << 20,
        index_interval_bytes: 1,
        ..compact_config()
    };
    let log = Log::open(dir.path(), config).unwrap();
    for i in 0..50 {
        // Even offsets are overwritten by the next batch.
        append(&log, &[kv("same", &i.to_string())], 1_000 + i);
        append(&log, &[kv(&format!("k{i}"), "v")], 1_000 + i);
    }
    append(&log, &[kv("same", "last")], 2_000);
    roll(&log);
    log.clean(10_000, true).unwrap();
    for off in 0..100 {
        let r = log.read(off, 1, i64::MAX, true).unwrap();
        let want = if off % 2 == 0 { off + 1 } else { off };
        assert_eq!(r.first_offset, Some(want), "fetch at {off}");
    }
    assert_eq!(log.offset_for_timestamp(1_010).unwrap(), Some((21, 1_010)));
    // Reopened with the rebuilt indexes, clean and after a crash.
    log.close().unwrap();
    drop(log);
    let log = Log::open(dir.path(), compact_config()).unwrap();
    assert_eq!(
        log.read(40, 1, i64::MAX, true).unwrap().first_offset,
        Some(41)
    );
}

#[test]
fn idempotent_batches_keep_producer_fields() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), compact_config()).unwrap();
    let recs = [kv("a", "1"), kv("b", "1"), kv("a", "2"), kv("c", "1")];
    append_with(&log, &recs, 1_000, Compression::Lz4, Some((42, 3, 10)));
    append_with(
        &log,
        &[kv("c", "2")],
        2_000,
        Compression::None,
        Some((42, 3, 14)),
    );
    roll(&log);
    let before = read_all(&log);
    let o = log.clean(10_000, true).unwrap();
    assert_eq!(o.records_removed, 2);
    let r = log.read(0, 1, i64::MAX, true).unwrap();
    let h = BatchHeader::parse(&r.records).unwrap();
    assert_eq!(
        (h.producer_id, h.producer_epoch, h.base_sequence),
        (42, 3, 10)
    );
    assert_eq!(
        (h.base_offset, h.last_offset(), h.last_sequence()),
        (0, 3, 13)
    );
    assert_eq!((h.records_count, h.compression()), (2, 3));
    assert_eq!(h.max_timestamp, 1_002);
    let after = read_all(&log);
    let seqs: Vec<(i64, i32)> = after.iter().map(|r| (r.offset, r.sequence)).collect();
    assert_eq!(seqs, vec![(1, 11), (2, 12), (4, 14)]);
    check_compacted(&before, &after, active_base(&log));
    let headers = log.batch_headers_from(0).unwrap();
    assert_eq!(headers.len(), 2);
}

#[test]
fn dirty_ratio_gates_unforced_runs() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        min_cleanable_dirty_ratio: 0.5,
        ..compact_config()
    };
    let log = Log::open(dir.path(), config.clone()).unwrap();
    fill(&log, Compression::None);
    roll(&log);
    assert!(log.clean(10_000, false).unwrap().segments_cleaned > 0);
    let checkpoint = log.cleaner_checkpoint();
    let clean_bytes = log.size_bytes();
    // A little new dirty data: below the ratio.
    for i in 0..3 {
        append(&log, &[kv("k1", &format!("n{i}"))], 5_000);
    }
    roll(&log);
    assert_eq!(log.clean(10_000, false).unwrap(), CleanOutcome::default());
    assert_eq!(log.cleaner_checkpoint(), checkpoint);
    // Forced runs ignore the ratio.
    assert!(log.clean(10_000, true).unwrap().segments_cleaned > 0);
    // Enough new data to pass the ratio.
    while log.size_bytes() < 3 * clean_bytes {
        append(&log, &[kv("k2", &"y".repeat(100))], 6_000);
    }
    roll(&log);
    let o = log.clean(10_000, false).unwrap();
    assert!(o.records_removed > 0, "{o:?}");
    // Not compacted at all without the policy.
    let log2_dir = tempfile::tempdir().unwrap();
    let log2 = Log::open(
        log2_dir.path(),
        LogConfig {
            cleanup_compact: false,
            ..config
        },
    )
    .unwrap();
    fill(&log2, Compression::None);
    assert_eq!(log2.clean(10_000, true).unwrap(), CleanOutcome::default());
}

#[test]
fn retention_does_not_delete_compact_only_data() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_ms: 1,
        retention_bytes: 1,
        ..compact_config()
    };
    let log = Log::open(dir.path(), config.clone()).unwrap();
    fill(&log, Compression::None);
    let segments = log.num_segments();
    let o = log.enforce_retention(100 * DAY_MS).unwrap();
    assert_eq!((o.deleted_segments, o.reason), (0, None));
    assert_eq!(log.num_segments(), segments);
    // With compact,delete retention applies again; it also removes a stale swap
    // of a deleted segment, which recovery would otherwise complete.
    let swap = dir
        .path()
        .join(format!("{}.swap", segment::file_name(0, "log")));
    fs::write(&swap, b"stale").unwrap();
    log.update_config(LogConfig {
        cleanup_delete: true,
        ..config
    });
    let o = log.enforce_retention(100 * DAY_MS).unwrap();
    assert!(o.deleted_segments > 0);
    assert!(!swap.exists());
}

#[test]
fn truncation_lowers_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), compact_config()).unwrap();
    fill(&log, Compression::None);
    log.clean(10_000, true).unwrap();
    let checkpoint = log.cleaner_checkpoint();
    assert!(checkpoint > 10);
    log.truncate_to(10).unwrap();
    assert!(log.cleaner_checkpoint() <= 10);
    drop(log);
    let log = Log::open(dir.path(), compact_config()).unwrap();
    assert!(log.cleaner_checkpoint() <= 10);
}

#[test]
fn clean_below_ignores_records_past_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), compact_config()).unwrap();
    append(&log, &[kv("a", "1")], 1_000);
    roll(&log);
    append(&log, &[kv("a", "2")], 1_000);
    // Offset 1 is above the high watermark: "a"=1 must stay.
    assert_eq!(log.clean_below(10_000, true, 1).unwrap().records_removed, 0);
    assert_eq!(log.clean_below(10_000, true, 2).unwrap().records_removed, 1);
}

/// Copies every regular file of `from` into `to`.
fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// A closed log before cleaning (`old`) and the same log cleaned (`new`); returns
/// the records of each and the first segment's base.
fn before_and_after(old: &Path, new: &Path) -> (Vec<Record>, Vec<Record>, i64) {
    let log = Log::open(new, compact_config()).unwrap();
    fill(&log, Compression::Gzip);
    let before = read_all(&log);
    log.close().unwrap();
    drop(log);
    copy_dir(new, old);
    let log = Log::open(new, compact_config()).unwrap();
    assert!(log.clean(10_000, true).unwrap().segments_cleaned > 0);
    let after = read_all(&log);
    log.close().unwrap();
    let first = log.lock().segments[0].base_offset;
    (before, after, first)
}

fn name(base: i64, ext: &str) -> String {
    segment::file_name(base, ext)
}

#[test]
fn crash_leftovers_are_resolved_at_open() {
    let root = tempfile::tempdir().unwrap();
    let (old, new) = (root.path().join("old"), root.path().join("new"));
    let (before, after, base) = before_and_after(&old, &new);
    assert_ne!(before, after);
    let (log_f, index_f, time_f) = (
        name(base, "log"),
        name(base, "index"),
        name(base, "timeindex"),
    );

    // Crash while writing the cleaned files: old data, leftovers removed.
    let d = root.path().join("cleaning");
    copy_dir(&old, &d);
    fs::write(d.join(format!("{log_f}.cleaned")), b"partial").unwrap();
    fs::write(d.join(format!("{index_f}.cleaned")), b"par").unwrap();
    let log = Log::open(&d, compact_config()).unwrap();
    assert_eq!(read_all(&log), before);
    assert!(!d.join(format!("{log_f}.cleaned")).exists());
    drop(log);

    // Crash after the commit point, the new index already renamed over the old
    // one but the log not yet: the swap is completed and indexes rebuilt.
    let d = root.path().join("swap");
    copy_dir(&old, &d);
    fs::copy(new.join(&log_f), d.join(format!("{log_f}.swap"))).unwrap();
    fs::copy(new.join(&index_f), d.join(&index_f)).unwrap();
    fs::copy(new.join(&time_f), d.join(format!("{time_f}.cleaned"))).unwrap();
    let log = Log::open(&d, compact_config()).unwrap();
    let recs = read_all(&log);
    assert_eq!(latest(&recs), latest(&before));
    assert!(recs.iter().all(|r| before.contains(r)) && recs.len() < before.len());
    assert!(after.iter().all(|r| recs.contains(r)));
    assert!(!d.join(format!("{log_f}.swap")).exists());
    drop(log);

    // Crash after the log rename, the old index still in place with its cleaned
    // replacement not renamed: the stale index is not trusted.
    let d = root.path().join("log-renamed");
    copy_dir(&old, &d);
    fs::copy(new.join(&log_f), d.join(&log_f)).unwrap();
    fs::copy(new.join(&index_f), d.join(format!("{index_f}.cleaned"))).unwrap();
    let log = Log::open(&d, compact_config()).unwrap();
    let recs = read_all(&log);
    assert_eq!(latest(&recs), latest(&before));
    assert!(after.iter().all(|r| recs.contains(r)) && recs.len() < before.len());
    assert_eq!(
        (log.log_start_offset(), log.log_end_offset()),
        (0, before.last().unwrap().offset + 1)
    );
    drop(log);

    // A swap whose segment was deleted meanwhile is dropped.
    let d = root.path().join("deleted");
    copy_dir(&old, &d);
    fs::rename(d.join(&log_f), d.join(format!("{log_f}.swap"))).unwrap();
    let log = Log::open(&d, compact_config()).unwrap();
    assert!(!d.join(format!("{log_f}.swap")).exists());
    assert!(!d.join(&log_f).exists());
    assert!(log.log_start_offset() > base);
}

#[test]
fn readers_during_cleaning_see_consistent_data() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path(), compact_config()).unwrap());
    fill(&log, Compression::Zstd);
    let model = latest(&read_all(&log));
    let reader = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            for _ in 0..20 {
                assert_eq!(latest(&read_all(&log)), model);
            }
        })
    };
    for i in 0..5 {
        log.clean(10_000 + i, true).unwrap();
    }
    reader.join().unwrap();
}
