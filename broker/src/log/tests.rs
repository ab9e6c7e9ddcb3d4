//! Tests of `Log` as a whole, against real files in temp directories.

use std::fs::{self, OpenOptions};
use std::path::Path;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{Compression, RecordBatchDecoder};

use super::*;
use crate::test_support::TestBatch;

fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 256,
        retention_ms: -1,
        ..LogConfig::default()
    }
}

/// Appends one batch of `count` records with timestamps from `ts`.
fn append(log: &Log, count: usize, ts: i64, value_len: usize) -> AppendInfo {
    let buf = TestBatch::keyed(count, value_len).timestamp(ts).encode();
    let v = validate_batches(&buf, 1 << 20).unwrap();
    log.append(&buf, &v, 3, None).unwrap()
}

/// Decodes every record of a read: (offset, timestamp, value).
fn decode(records: &Bytes) -> Vec<(i64, i64, Option<Bytes>)> {
    let mut b = records.clone();
    RecordBatchDecoder::decode_all(&mut b)
        .unwrap()
        .into_iter()
        .flat_map(|set| set.records)
        .map(|r| (r.offset, r.timestamp, r.value))
        .collect()
}

fn read_all(log: &Log) -> Vec<(i64, i64, Option<Bytes>)> {
    let mut out = Vec::new();
    let mut next = log.log_start_offset();
    while next < log.log_end_offset() {
        let r = log.read(next, 1 << 20, i64::MAX, true).unwrap();
        let recs = decode(&r.records);
        let last = recs.last().unwrap().0;
        out.extend(recs.into_iter().filter(|r| r.0 >= next));
        next = last + 1;
    }
    out
}

/// Fills a log with `batches` batches of 5 records, timestamps 1000 + offset.
fn fill(log: &Log, batches: usize) {
    for _ in 0..batches {
        let base = log.log_end_offset();
        append(log, 5, 1_000 + base, 100);
    }
}

fn last_segment(dir: &Path) -> std::path::PathBuf {
    let mut logs: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs.pop().unwrap()
}

#[test]
fn round_trip_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 0));
    fill(&log, 60);
    assert_eq!(log.log_end_offset(), 300);
    assert!(log.num_segments() > 5, "{} segments", log.num_segments());
    let all = read_all(&log);
    assert_eq!(all.len(), 300);
    for (i, (off, ts, value)) in all.iter().enumerate() {
        assert_eq!(*off, i as i64);
        assert_eq!(*ts, 1_000 + i as i64);
        assert_eq!(value.as_deref(), Some(&[b'v'; 100][..]));
    }
    // Offsets and leader epoch were stamped in the stored bytes.
    let r = log.read(7, 1, i64::MAX, true).unwrap();
    let h = BatchHeader::parse(&r.records).unwrap();
    assert_eq!((h.base_offset, h.partition_leader_epoch), (5, 3));
    assert_eq!(r.first_offset, Some(5));
    assert_eq!(r.records.len(), h.total_len());
}

#[test]
fn reads_from_the_middle_of_a_segment_use_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 1 << 20,
        index_interval_bytes: 100,
        ..small_config()
    };
    let log = Log::open(dir.path(), config).unwrap();
    fill(&log, 100);
    assert_eq!(log.num_segments(), 1);
    {
        let st = log.lock();
        assert!(st.active().offset_index.len() > 50);
    }
    for start in [0, 1, 4, 5, 6, 250, 377, 499] {
        let r = log.read(start, 1, i64::MAX, true).unwrap();
        let recs = decode(&r.records);
        assert_eq!(r.first_offset, Some(start / 5 * 5));
        assert!(recs.iter().any(|rec| rec.0 == start), "start {start}");
    }
    let r = log.read(500, 100, i64::MAX, true).unwrap();
    assert!(r.records.is_empty() && r.first_offset.is_none());
    assert!(matches!(
        log.read(501, 100, i64::MAX, true),
        Err(LogError::OffsetOutOfRange {
            requested: 501,
            start: 0,
            end: 500
        })
    ));
}

#[test]
fn max_bytes_min_one_batch_and_high_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let big = append(&log, 3, 0, 5_000);
    fill(&log, 4);
    let big_len = big.bytes;

    // KIP-74: the first batch comes back even when larger than max_bytes.
    let r = log.read(0, 100, i64::MAX, true).unwrap();
    assert_eq!(r.records.len(), big_len);
    assert!(log
        .read(0, 100, i64::MAX, false)
        .unwrap()
        .records
        .is_empty());

    // max_bytes limits whole batches.
    let r = log.read(3, big_len * 10, i64::MAX, false).unwrap();
    assert_eq!(decode(&r.records).len(), 20);
    let one = log.read(3, 1, i64::MAX, true).unwrap().records.len();
    let r = log.read(3, one * 2 + one / 2, i64::MAX, false).unwrap();
    assert_eq!(r.records.len(), one * 2);

    // High watermark: batches whose last offset >= max_offset are excluded.
    let r = log.read(0, 1 << 20, 8, true).unwrap();
    let offs: Vec<i64> = decode(&r.records).iter().map(|r| r.0).collect();
    assert_eq!(offs, (0..8).collect::<Vec<_>>());
    let r = log.read(0, 1 << 20, 7, true).unwrap();
    assert_eq!(decode(&r.records).len(), 3);
    assert!(log.read(3, 1 << 20, 3, true).unwrap().records.is_empty());
}

#[test]
fn reopen_after_close_and_after_crash() {
    let dir = tempfile::tempdir().unwrap();
    let expected = {
        let log = Log::open(dir.path(), small_config()).unwrap();
        fill(&log, 30);
        let all = read_all(&log);
        log.close().unwrap();
        assert!(log.append_as_follower(&[]).is_err());
        all
    };
    assert!(dir.path().join("clean-shutdown").exists());
    {
        let log = Log::open(dir.path(), small_config()).unwrap();
        assert!(!dir.path().join("clean-shutdown").exists());
        assert_eq!(log.log_end_offset(), 150);
        assert_eq!(log.flushed_offset(), 150);
        assert_eq!(read_all(&log), expected);
        fill(&log, 10);
        // Dropped without close: the next open recovers.
    }
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.log_end_offset(), 200);
    let all = read_all(&log);
    assert_eq!(&all[..150], &expected[..]);
    assert_eq!(all.len(), 200);
    assert_eq!(log.offset_for_timestamp(1_170).unwrap(), Some((170, 1_170)));
}

#[test]
fn torn_tail_is_truncated_at_every_cut_point() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 1 << 20,
        ..small_config()
    };
    let (sizes, full) = {
        let log = Log::open(dir.path(), config.clone()).unwrap();
        let mut sizes = Vec::new();
        for i in 0..4 {
            sizes.push(append(&log, 5, 1_000 + i * 5, 30).bytes as u64);
        }
        (sizes, read_all(&log))
    };
    let seg = last_segment(dir.path());
    let pristine = fs::read(&seg).unwrap();
    let last_len = sizes[3];
    // Inside the length prefix, inside the header, inside the records, 1 byte short.
    for cut in [last_len - 3, last_len - 10, last_len - 40, 1] {
        fs::write(&seg, &pristine[..pristine.len() - cut as usize]).unwrap();
        let log = Log::open(dir.path(), config.clone()).unwrap();
        assert_eq!(log.log_end_offset(), 15, "cut {cut}");
        assert_eq!(read_all(&log), full[..15].to_vec());
        assert_eq!(
            fs::metadata(&seg).unwrap().len(),
            sizes[..3].iter().sum::<u64>()
        );
        // Appends continue at the recovered end.
        assert_eq!(append(&log, 1, 5_000, 1).first_offset, 15);
    }
}

#[test]
fn garbage_tail_and_mid_segment_crc_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 1 << 20,
        ..small_config()
    };
    let sizes: Vec<u64> = {
        let log = Log::open(dir.path(), config.clone()).unwrap();
        (0..5)
            .map(|i| append(&log, 2, i * 10, 50).bytes as u64)
            .collect()
    };
    let seg = last_segment(dir.path());
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    std::io::Write::write_all(&mut f, &[0xab; 100]).unwrap();
    drop(f);
    let log = Log::open(dir.path(), config.clone()).unwrap();
    assert_eq!(log.log_end_offset(), 10);
    drop(log);

    // Flip a record byte of the third batch: recovery truncates there.
    let mut data = fs::read(&seg).unwrap();
    let third_end = (sizes[0] + sizes[1] + sizes[2]) as usize;
    data[third_end - 5] ^= 0xff;
    fs::write(&seg, &data).unwrap();
    let log = Log::open(dir.path(), config).unwrap();
    assert_eq!(log.log_end_offset(), 4);
    assert_eq!(log.size_bytes(), sizes[0] + sizes[1]);
}

#[test]
fn missing_or_broken_indexes_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let expected = {
        let log = Log::open(dir.path(), small_config()).unwrap();
        fill(&log, 30);
        let all = read_all(&log);
        log.close().unwrap();
        all
    };
    let mut names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "index"))
        .collect();
    names.sort();
    fs::remove_file(&names[0]).unwrap();
    fs::write(&names[1], [1, 2, 3]).unwrap();
    let time_index = names[2].with_extension("timeindex");
    fs::remove_file(time_index).unwrap();
    fs::write(dir.path().join("00000000000000000000.log.deleted"), b"x").unwrap();
    fs::write(dir.path().join("00000000000000099999.index"), b"").unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(read_all(&log), expected);
    assert!(names[0].exists());
    for e in fs::read_dir(dir.path()).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        assert!(recovery::is_known_file(&name), "stray {name}");
    }
    for start in (0..150).step_by(7) {
        let r = log.read(start, 1, i64::MAX, true).unwrap();
        assert!(decode(&r.records).iter().any(|rec| rec.0 == start));
    }
}

#[test]
fn retention_by_time_and_size_persists_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 2048,
        ..small_config()
    };
    {
        let log = Log::open(dir.path(), config.clone()).unwrap();
        // Timestamps = 1000 + offset, so older segments have older timestamps.
        fill(&log, 40);
        let segs = log.num_segments();
        assert!(segs >= 6);
        let (bases, maxes): (Vec<i64>, Vec<i64>) = {
            let st = log.lock();
            st.segments
                .iter()
                .map(|s| (s.base_offset, s.max_timestamp))
                .unzip()
        };
        assert_eq!(log.enforce_retention(0).unwrap().deleted_segments, 0);

        // retention.ms: delete segments whose max timestamp < now - 100.
        log.update_config(LogConfig {
            retention_ms: 100,
            ..config.clone()
        });
        let now = maxes[2] + 101;
        let out = log.enforce_retention(now).unwrap();
        assert_eq!(out.deleted_segments, 3);
        assert_eq!(out.reason, Some(RetentionReason::Time));
        assert_eq!(log.log_start_offset(), bases[3]);
        assert_eq!(out.log_start_offset, bases[3]);
        assert!(matches!(
            log.read(0, 100, i64::MAX, true),
            Err(LogError::OffsetOutOfRange { .. })
        ));

        // retention.bytes: keep at least ~2 segments' worth.
        let sizes: Vec<u64> = log.lock().segments.iter().map(|s| s.size).collect();
        let total: u64 = sizes.iter().sum();
        let keep = sizes[sizes.len() - 2..].iter().sum::<u64>() as i64;
        log.update_config(LogConfig {
            retention_bytes: keep,
            ..config.clone()
        });
        let out = log.enforce_retention(now).unwrap();
        assert_eq!(out.reason, Some(RetentionReason::Size));
        assert_eq!(out.deleted_segments, sizes.len() - 2);
        assert_eq!(out.deleted_bytes, total - keep as u64);
        assert_eq!(log.num_segments(), 2);
        assert_eq!(log.log_start_offset(), bases[segs - 2]);
    }
    let log = Log::open(dir.path(), config.clone()).unwrap();
    let start = log.log_start_offset();
    assert!(start > 0);
    assert_eq!(read_all(&log).first().unwrap().0, start);
    assert!(!fs::read_dir(dir.path()).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".deleted")));

    // Everything expired, including the active segment: roll, then delete.
    log.update_config(LogConfig {
        retention_ms: 1,
        ..config
    });
    let end = log.log_end_offset();
    let out = log.enforce_retention(i64::MAX / 2).unwrap();
    assert_eq!(out.deleted_segments, 2);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (end, end));
    assert_eq!(log.num_segments(), 1);
    assert_eq!(append(&log, 1, 0, 1).first_offset, end);
}

#[test]
fn roll_by_segment_ms() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_ms: 1_000,
        segment_bytes: 1 << 20,
        ..small_config()
    };
    let log = Log::open(dir.path(), config).unwrap();
    assert!(
        !log.roll_if_due(i64::MAX).unwrap(),
        "empty segments never roll"
    );
    append(&log, 2, 10_000, 10);
    append(&log, 2, 10_500, 10);
    assert_eq!(log.num_segments(), 1);
    // A batch more than segment.ms newer than the segment's first batch rolls.
    append(&log, 2, 11_002, 10);
    assert_eq!(log.num_segments(), 2);
    // The active segment's first batch has maxTimestamp 11_003.
    assert!(!log.roll_if_due(12_003).unwrap());
    assert!(log.roll_if_due(12_004).unwrap());
    assert_eq!(log.num_segments(), 3);
    assert_eq!(log.log_end_offset(), 6);
    assert_eq!(read_all(&log).len(), 6);
}

#[test]
fn log_append_time_is_stamped_with_valid_crc() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let mut buf = TestBatch::keyed(4, 10)
        .timestamp(100)
        .compression(Compression::Gzip)
        .encode();
    buf.extend_from_slice(&TestBatch::keyed(2, 10).timestamp(200).encode());
    let v = validate_batches(&buf, 1 << 20).unwrap();
    let info = log.append(&buf, &v, 0, Some(77_777)).unwrap();
    assert_eq!(info.log_append_time_ms, 77_777);
    assert_eq!(info.max_timestamp, 77_777);
    assert_eq!((info.first_offset, info.last_offset), (0, 5));
    let r = log.read(0, 1 << 20, i64::MAX, true).unwrap();
    // The stored bytes re-validate (CRC recomputed) and carry the append time.
    let v = batch::validate_batches_from(&r.records, 1 << 20, AppendOrigin::Internal).unwrap();
    assert!(v
        .headers
        .iter()
        .all(|h| h.is_log_append_time() && h.max_timestamp == 77_777));
    assert_eq!(log.offset_for_timestamp(50_000).unwrap(), Some((0, 77_777)));
    assert_eq!(log.max_timestamp().unwrap(), Some((0, 77_777)));
}

#[test]
fn offset_for_timestamp_and_max_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.max_timestamp().unwrap(), None);
    fill(&log, 40); // ts = 1000 + offset
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((0, 1_000)));
    assert_eq!(log.offset_for_timestamp(1_000).unwrap(), Some((0, 1_000)));
    for target in [1_001, 1_003, 1_077, 1_150, 1_199] {
        assert_eq!(
            log.offset_for_timestamp(target).unwrap(),
            Some((target - 1_000, target))
        );
    }
    assert_eq!(log.offset_for_timestamp(1_200).unwrap(), None);
    assert_eq!(log.max_timestamp().unwrap(), Some((199, 1_199)));

    // Out-of-order timestamps inside a compressed batch: the earliest record
    // with ts >= target wins, and the max is found inside the batch.
    let buf = TestBatch::keyed(3, 10)
        .timestamp(5_000)
        .compression(Compression::Snappy)
        .encode();
    let v = validate_batches(&buf, 1 << 20).unwrap();
    log.append(&buf, &v, 0, None).unwrap();
    assert_eq!(log.offset_for_timestamp(5_001).unwrap(), Some((201, 5_001)));
    assert_eq!(log.max_timestamp().unwrap(), Some((202, 5_002)));
    log.close().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.max_timestamp().unwrap(), Some((202, 5_002)));
    assert_eq!(log.offset_for_timestamp(1_123).unwrap(), Some((123, 1_123)));
}

#[test]
fn truncate_to_drops_whole_batches() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    fill(&log, 40);
    let segs = log.num_segments();
    log.truncate_to(200).unwrap();
    assert_eq!(log.log_end_offset(), 200);
    log.truncate_to(152).unwrap(); // mid-batch: the batch 150..=154 goes too
    assert_eq!(log.log_end_offset(), 150);
    assert!(log.num_segments() < segs);
    assert_eq!(read_all(&log).len(), 150);
    assert_eq!(log.max_timestamp().unwrap(), Some((149, 1_149)));
    assert_eq!(log.offset_for_timestamp(1_150).unwrap(), None);
    assert_eq!(append(&log, 5, 9_000, 10).first_offset, 150);
    drop(log);
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.log_end_offset(), 155);

    // Truncating below the first segment restarts the log there.
    log.truncate_to(0).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 0));
    assert_eq!(log.num_segments(), 1);
    assert!(read_all(&log).is_empty());
}

#[test]
fn flush_reports_durable_offset_and_headers_from() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.flush().unwrap(), 0);
    fill(&log, 20);
    assert_eq!(log.flushed_offset(), 0);
    assert_eq!(log.flush().unwrap(), 100);
    assert_eq!(log.flushed_offset(), 100);
    {
        let st = log.lock();
        assert!(st.segments.iter().all(|s| s.flushed_size == s.size));
    }
    fill(&log, 2);
    assert_eq!(log.flush().unwrap(), 110);

    let headers = log.batch_headers_from(42).unwrap();
    assert_eq!(headers.first().unwrap().base_offset, 40);
    assert_eq!(headers.len(), 14);
    assert!(headers
        .windows(2)
        .all(|w| w[1].base_offset == w[0].last_offset() + 1));
}

#[test]
fn follower_append_keeps_offsets() {
    let leader_dir = tempfile::tempdir().unwrap();
    let leader = Log::open(leader_dir.path(), small_config()).unwrap();
    fill(&leader, 10);
    let fetched = leader.read(0, 1 << 20, i64::MAX, true).unwrap().records;

    let dir = tempfile::tempdir().unwrap();
    let follower = Log::open(dir.path(), small_config()).unwrap();
    let info = follower.append_as_follower(&fetched).unwrap();
    assert_eq!(info.first_offset, 0);
    assert_eq!(follower.log_end_offset(), info.last_offset + 1);
    assert!(matches!(
        follower.append_as_follower(&fetched),
        Err(LogError::NonContiguousAppend { .. })
    ));
    let mut corrupt = BytesMut::from(&fetched[..]);
    let n = corrupt.len();
    corrupt[n - 1] ^= 1;
    assert!(follower.append_as_follower(&corrupt).is_err());
    let h = BatchHeader::parse(&fetched).unwrap();
    assert_eq!(h.partition_leader_epoch, 3);
    assert_eq!(
        follower.read(0, 1 << 20, i64::MAX, true).unwrap().records,
        fetched
    );
}

#[test]
fn delete_dir_removes_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("topic-0");
    let log = Log::open(&path, small_config()).unwrap();
    fill(&log, 3);
    log.delete_dir().unwrap();
    assert!(!path.exists());
}

#[test]
fn log_is_send_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Log>();
}

#[test]
fn torn_middle_segment_drops_later_segments() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), small_config()).unwrap();
        fill(&log, 30);
        assert!(log.num_segments() >= 4);
    }
    let mut logs: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    let victim = &logs[1];
    let len = fs::metadata(victim).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(victim)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    // Indexes that point past the end make the segment untrusted.
    fs::remove_file(victim.with_extension("index")).unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.num_segments(), 2);
    let all = read_all(&log);
    assert_eq!(all.len() as i64, log.log_end_offset());
    assert!(all.iter().enumerate().all(|(i, r)| r.0 == i as i64));
    assert!(!logs[2].exists());
}

#[test]
fn concurrent_readers_see_whole_batches() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| fill(&log, 200));
        for _ in 0..2 {
            s.spawn(|| {
                let mut next = 0;
                while next < 1_000 {
                    let end = log.log_end_offset();
                    if next == end {
                        std::thread::yield_now();
                        continue;
                    }
                    let r = log.read(next, 4096, end, true).unwrap();
                    let recs = decode(&r.records);
                    assert!(!recs.is_empty());
                    let from = next;
                    for rec in recs.iter().filter(|r| r.0 >= from) {
                        assert_eq!(rec.0, next);
                        next += 1;
                    }
                }
            });
        }
        s.spawn(|| {
            for _ in 0..20 {
                log.flush().unwrap();
            }
        });
    });
    assert_eq!(log.flush().unwrap(), 1_000);
}
