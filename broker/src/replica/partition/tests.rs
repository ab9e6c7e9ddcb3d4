use super::*;
use bytes::Bytes;

use crate::metadata::{MetadataImage, MetadataRecord};
use crate::test_support::TestBatch;

/// `n` one-byte records, from an idempotent producer (epoch 0) when `producer_id` >= 0.
fn batch(producer_id: i64, first_seq: i32, n: usize) -> Bytes {
    TestBatch::values(&vec!["v"; n])
        .producer(producer_id, 0, first_seq)
        .build()
}

/// Brokers 0..=3 registered and live.
fn live_brokers() -> Arc<BrokerDirectory> {
    let mut image = MetadataImage::default();
    for id in 0..4 {
        image.apply(&MetadataRecord::RegisterBroker {
            id,
            host: "127.0.0.1".into(),
            port: 9000 + id as u16,
            listeners: Vec::new(),
            rack: None,
            http_address: String::new(),
            incarnation: Uuid::nil(),
        });
        image.apply(&MetadataRecord::UnfenceBroker { id });
    }
    let d = BrokerDirectory::default();
    d.update(&image);
    Arc::new(d)
}

const LAG_MS: i64 = 10_000;

fn open_as(dir: &Path, node_id: i32, min_isr: i32) -> Partition {
    let settings = PartitionSettings {
        log: LogConfig::default(),
        min_insync_replicas: min_isr,
        replica_lag_max_ms: LAG_MS,
    };
    Partition::open(
        dir.to_path_buf(),
        Arc::from("t"),
        0,
        Uuid::nil(),
        settings,
        node_id,
        live_brokers(),
    )
    .unwrap()
}

fn state(
    leader: i32,
    leader_epoch: i32,
    partition_epoch: i32,
    replicas: &[i32],
    isr: &[i32],
) -> PartitionImage {
    PartitionImage {
        replicas: replicas.to_vec(),
        isr: isr.to_vec(),
        leader,
        leader_epoch,
        partition_epoch,
        adding_replicas: Vec::new(),
        removing_replicas: Vec::new(),
    }
}

/// A single-replica leader, as on one broker.
fn open(dir: &Path) -> Partition {
    let p = open_as(dir, 0, 1);
    p.apply_metadata(&state(0, 0, 0, &[0], &[0]), 0);
    p
}

#[test]
fn producer_state_survives_a_crash_from_snapshot_plus_replay() {
    let dir = tempfile::tempdir().unwrap();
    let p = open(dir.path());
    p.append_as_leader(&batch(9, 0, 3), -1, 0).unwrap();
    p.snapshot_producer_state().unwrap();
    let snapshot: ProducerSnapshot =
        serde_json::from_slice(&std::fs::read(dir.path().join(PRODUCER_SNAPSHOT_FILE)).unwrap())
            .unwrap();
    assert_eq!(snapshot.end_offset, 3);
    p.append_as_leader(&batch(9, 3, 2), -1, 0).unwrap();
    drop(p); // a crash: no close, no clean-shutdown marker
    let p = open(dir.path());
    // Both the batch in the snapshot and the one replayed from the log are duplicates now.
    let dup = |first, n| p.append_as_leader(&batch(9, first, n), -1, 0).unwrap();
    assert!(
        matches!(dup(0, 3), AppendOutcome::Duplicate(m) if (m.first_offset, m.last_offset) == (0, 2))
    );
    assert!(
        matches!(dup(3, 2), AppendOutcome::Duplicate(m) if (m.first_offset, m.last_offset) == (3, 4))
    );
    assert!(matches!(dup(5, 1), AppendOutcome::Appended(info) if info.first_offset == 5));
    let gap = p.append_as_leader(&batch(9, 9, 1), -1, 0).unwrap_err();
    assert_eq!(gap.kafka_error(), ResponseError::OutOfOrderSequenceNumber);
}

#[test]
fn a_replica_without_a_role_or_following_refuses_produce() {
    let dir = tempfile::tempdir().unwrap();
    let p = open_as(dir.path(), 0, 1);
    let e = p.append_as_leader(&batch(-1, 0, 1), 1, 0).unwrap_err();
    assert_eq!(e.kafka_error(), ResponseError::NotLeaderOrFollower);
    p.apply_metadata(&state(1, 3, 0, &[0, 1], &[0, 1]), 0);
    assert_eq!(p.role(), Role::Follower { leader: 1 });
    let e = p.append_as_leader(&batch(-1, 0, 1), 1, 0).unwrap_err();
    assert!(matches!(e, AppendError::NotLeader { leader: 1 }));
}

#[test]
fn leader_high_watermark_waits_for_every_in_sync_follower() {
    let dir = tempfile::tempdir().unwrap();
    let p = open_as(dir.path(), 0, 1);
    assert_eq!(
        p.apply_metadata(&state(0, 1, 0, &[0, 1, 2], &[0, 1, 2]), 0),
        RoleChange::BecameLeader
    );
    p.append_as_leader(&batch(-1, 0, 4), 1, 0).unwrap();
    assert_eq!(p.log_end_offset(), 4);
    assert_eq!(p.high_watermark(), 0, "followers have nothing yet");
    assert_eq!(p.record_follower_fetch(1, 4, 4, 10), None);
    assert_eq!(p.high_watermark(), 0, "follower 2 has not fetched");
    p.record_follower_fetch(2, 3, 4, 10);
    assert_eq!(p.high_watermark(), 3);
    p.record_follower_fetch(2, 4, 4, 20);
    assert_eq!(p.high_watermark(), 4);
    // The watermark never moves backwards, whatever a fetch says.
    p.record_follower_fetch(2, 2, 4, 30);
    assert_eq!(p.high_watermark(), 4);
    // Consumers read only committed data.
    p.append_as_leader(&batch(-1, 0, 2), 1, 0).unwrap();
    let read = p.read(4, 1 << 20, true).unwrap();
    assert!(
        read.records.is_empty(),
        "offsets 4..6 are not committed yet"
    );
    let read = p.read_for_follower(4, 1 << 20, true).unwrap();
    assert_eq!(
        read.first_offset,
        Some(4),
        "followers read up to the log end"
    );
}

#[test]
fn isr_expands_when_a_follower_catches_up_and_shrinks_when_it_lags() {
    let dir = tempfile::tempdir().unwrap();
    let p = open_as(dir.path(), 0, 1);
    p.append_as_leader(&batch(-1, 0, 1), 1, 0).ok(); // no role yet: refused
    p.apply_metadata(&state(0, 2, 5, &[0, 1, 2], &[0, 1]), 1_000);
    p.append_as_leader(&batch(-1, 0, 3), 1, 0).unwrap();
    p.record_follower_fetch(1, 3, 3, 1_100);
    assert_eq!(p.high_watermark(), 3);
    // Follower 2 behind the high watermark: not yet.
    assert_eq!(p.record_follower_fetch(2, 1, 3, 1_200), None);
    let expand = p
        .record_follower_fetch(2, 3, 3, 1_300)
        .expect("2 caught up");
    assert_eq!(
        expand,
        IsrUpdate {
            topic_id: Uuid::nil(),
            partition: 0,
            leader: 0,
            leader_epoch: 2,
            partition_epoch: 5,
            new_isr: vec![0, 1, 2],
        }
    );
    assert_eq!(p.pending_isr(), Some(vec![0, 1, 2]));
    // One change in flight at a time; no answer within the retry time: decided again.
    assert_eq!(p.check_isr(1_400, 5_000), None);
    // The controller commits it.
    assert_eq!(
        p.apply_metadata(&state(0, 2, 6, &[0, 1, 2], &[0, 1, 2]), 1_500),
        RoleChange::LeaderUpdated
    );
    assert_eq!(p.pending_isr(), None);
    assert_eq!(p.isr(), vec![0, 1, 2]);
    assert!(!p.under_replicated());
    // New data; follower 2 keeps fetching, follower 1 stopped at 3. After the lag limit 1 is
    // dropped (a follower at the leader's end would count as caught up).
    let later = 1_100 + LAG_MS + 1;
    p.append_as_leader(&batch(-1, 0, 1), 1, 0).unwrap();
    assert_eq!(p.check_isr(later - 1, 5_000), None, "1 is within the lag");
    p.record_follower_fetch(2, 4, 4, later);
    let shrink = p.check_isr(later, 5_000).expect("1 lags");
    assert_eq!(shrink.new_isr, vec![0, 2]);
    assert_eq!(shrink.partition_epoch, 6);
    // Unanswered: after the retry time the same decision is sent again.
    assert_eq!(p.check_isr(later + 10, 5_000), None);
    let again = p.check_isr(later + 5_000, 5_000).expect("resent");
    assert_eq!(again.new_isr, vec![0, 2]);
}

#[test]
fn a_new_leader_exposes_nothing_its_followers_may_lack() {
    let dir = tempfile::tempdir().unwrap();
    {
        let p = open(dir.path());
        p.append_as_leader(&batch(-1, 0, 5), 1, 0).unwrap();
        assert_eq!(p.high_watermark(), 5);
        p.checkpoint_high_watermark().unwrap();
        p.append_as_leader(&batch(-1, 0, 3), 1, 0).unwrap();
        // Crash: the checkpoint says 5, the log has 8.
    }
    let p = open_as(dir.path(), 0, 1);
    assert_eq!(
        p.high_watermark(),
        5,
        "min(checkpoint, log end), not the log end"
    );
    // As leader with followers in the ISR, it stays there until they fetch.
    p.apply_metadata(&state(0, 1, 0, &[0, 1], &[0, 1]), 0);
    assert_eq!(p.high_watermark(), 5);
    p.record_follower_fetch(1, 8, 8, 1);
    assert_eq!(p.high_watermark(), 8);
    p.close().unwrap();
    let p = open_as(dir.path(), 0, 1);
    assert_eq!(p.high_watermark(), 8, "close writes the checkpoint");
    // Alone in the ISR, a leader commits everything it has at once.
    let dir = tempfile::tempdir().unwrap();
    {
        let p = open(dir.path());
        p.append_as_leader(&batch(-1, 0, 2), 1, 0).unwrap();
    }
    let p = open(dir.path());
    assert_eq!(p.high_watermark(), 2);
}

#[test]
fn leadership_records_epochs_and_answers_diverged_followers() {
    let dir = tempfile::tempdir().unwrap();
    let p = open_as(dir.path(), 0, 1);
    p.apply_metadata(&state(0, 0, 0, &[0, 1], &[0, 1]), 0);
    p.append_as_leader(&batch(-1, 0, 10), 1, 0).unwrap();
    // Re-elected in epoch 3 (e.g. after another broker led epochs 1-2 without writing).
    p.apply_metadata(&state(0, 3, 1, &[0, 1], &[0, 1]), 0);
    p.append_as_leader(&batch(-1, 0, 5), 1, 0).unwrap();
    assert_eq!(p.epoch_history(), vec![(0, 0), (3, 10)]);
    let fetched = p.read_for_follower(10, 1 << 20, true).unwrap().records;
    assert_eq!(
        BatchHeader::parse(&fetched).unwrap().partition_leader_epoch,
        3,
        "batches carry the epoch they were written in"
    );
    assert_eq!(p.check_follower_fetch(1, 15, 3), FollowerFetchCheck::Serve);
    assert_eq!(p.check_follower_fetch(1, 10, 0), FollowerFetchCheck::Serve);
    // The follower wrote offsets 10.. in epoch 2, which this leader never had.
    assert_eq!(
        p.check_follower_fetch(1, 14, 2),
        FollowerFetchCheck::Diverging {
            epoch: 0,
            end_offset: 10
        }
    );
    assert_eq!(
        p.check_follower_fetch(5, 15, 3),
        FollowerFetchCheck::UnknownReplica
    );
    assert_eq!(
        p.check_follower_fetch(1, 20, -1),
        FollowerFetchCheck::OutOfRange
    );
    p.apply_metadata(&state(1, 4, 2, &[0, 1], &[0, 1]), 0);
    assert_eq!(
        p.check_follower_fetch(1, 15, 3),
        FollowerFetchCheck::NotLeader
    );
}

#[test]
fn follower_keeps_the_leaders_offsets_epochs_and_producer_sequences() {
    let leader_dir = tempfile::tempdir().unwrap();
    let leader = open_as(leader_dir.path(), 0, 1);
    leader.apply_metadata(&state(0, 7, 0, &[0, 1], &[0]), 0);
    leader.append_as_leader(&batch(42, 0, 3), 1, 0).unwrap();
    leader.append_as_leader(&batch(42, 3, 2), 1, 0).unwrap();
    let fetched = leader.read_for_follower(0, 1 << 20, true).unwrap().records;

    let dir = tempfile::tempdir().unwrap();
    let follower = open_as(dir.path(), 1, 1);
    follower.apply_metadata(&state(0, 7, 0, &[0, 1], &[0]), 0);
    assert_eq!(follower.fetch_position().last_fetched_epoch, -1);
    // Data from an older epoch's fetch is refused.
    assert!(matches!(
        follower.append_fetched(&fetched, 6),
        Err(AppendError::StaleFetch { .. })
    ));
    let info = follower.append_fetched(&fetched, 7).unwrap().unwrap();
    assert_eq!((info.first_offset, info.last_offset), (0, 4));
    assert_eq!(
        follower.append_fetched(&fetched, 7).unwrap(),
        None,
        "nothing new"
    );
    assert_eq!(follower.epoch_history(), vec![(7, 0)]);
    assert_eq!(
        follower.fetch_position(),
        FetchPosition {
            fetch_offset: 5,
            last_fetched_epoch: 7,
            log_start_offset: 0
        }
    );
    follower.update_follower_high_watermark(3);
    assert_eq!(follower.high_watermark(), 3);
    follower.update_follower_high_watermark(99);
    assert_eq!(
        follower.high_watermark(),
        5,
        "capped by what the follower has"
    );

    // Failover: the follower leads and knows the producer's sequences.
    follower.apply_metadata(&state(1, 8, 1, &[0, 1], &[1]), 0);
    let dup = follower.append_as_leader(&batch(42, 3, 2), 1, 0).unwrap();
    assert!(matches!(dup, AppendOutcome::Duplicate(m) if m.first_offset == 3));
    let next = follower.append_as_leader(&batch(42, 5, 1), 1, 0).unwrap();
    assert_eq!(next.base_offset(), 5);
    assert_eq!(follower.epoch_history(), vec![(7, 0), (8, 5)]);
}

#[test]
fn truncation_drops_the_tail_its_epochs_and_its_producer_batches() {
    let dir = tempfile::tempdir().unwrap();
    let p = open_as(dir.path(), 1, 1);
    p.apply_metadata(&state(1, 1, 0, &[0, 1], &[1]), 0);
    p.append_as_leader(&batch(42, 0, 4), 1, 0).unwrap();
    p.apply_metadata(&state(1, 2, 1, &[0, 1], &[1]), 0);
    p.append_as_leader(&batch(42, 4, 4), 1, 0).unwrap();
    assert_eq!(p.high_watermark(), 8);
    // Another broker takes over; this one follows and learns it diverged at 4.
    p.apply_metadata(&state(0, 3, 2, &[0, 1], &[0]), 0);
    assert!(matches!(
        p.truncate_to(4, 2),
        Err(AppendError::StaleFetch { .. })
    ));
    p.truncate_to(4, 3).unwrap();
    assert_eq!(p.log_end_offset(), 4);
    assert_eq!(p.high_watermark(), 4);
    assert_eq!(p.epoch_history(), vec![(1, 0)]);
    // The truncated batch is no longer a duplicate once this broker leads again.
    p.apply_metadata(&state(1, 4, 3, &[0, 1], &[1]), 0);
    let again = p.append_as_leader(&batch(42, 4, 4), 1, 0).unwrap();
    assert!(matches!(again, AppendOutcome::Appended(i) if i.first_offset == 4));
    // A restart sees the truncated epoch cache.
    drop(p);
    let p = open_as(dir.path(), 1, 1);
    assert_eq!(p.epoch_history(), vec![(1, 0), (4, 4)]);
}

#[test]
fn truncating_fully_restarts_the_log_at_the_leaders_start() {
    let dir = tempfile::tempdir().unwrap();
    let p = open_as(dir.path(), 1, 1);
    p.apply_metadata(&state(0, 1, 0, &[0, 1], &[0]), 0);
    let leader_dir = tempfile::tempdir().unwrap();
    let leader = open_as(leader_dir.path(), 0, 1);
    leader.apply_metadata(&state(0, 1, 0, &[0, 1], &[0]), 0);
    leader.append_as_leader(&batch(-1, 0, 2), 1, 0).unwrap();
    p.append_fetched(
        &leader.read_for_follower(0, 1 << 20, true).unwrap().records,
        1,
    )
    .unwrap();
    p.truncate_fully_and_start_at(100, 1).unwrap();
    assert_eq!((p.log_start_offset(), p.log_end_offset()), (100, 100));
    assert_eq!(p.high_watermark(), 100);
    assert!(p.epoch_history().is_empty());
}

#[tokio::test]
async fn acks_all_waits_for_the_isr_and_reports_what_went_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let p = Arc::new(open_as(dir.path(), 0, 2));
    // Long ago, so once out of the ISR the follower is not waited for as "caught up".
    let long_ago = isr::monotonic_ms() - 2 * LAG_MS;
    p.apply_metadata(&state(0, 1, 0, &[0, 1], &[0, 1]), long_ago);
    let end = p
        .append_as_leader(&batch(-1, 0, 2), -1, 0)
        .unwrap()
        .end_offset();
    assert_eq!(p.commit_status(end, 1), None);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let waiting = {
        let p = p.clone();
        tokio::spawn(async move { p.wait_committed(end, 1, deadline).await })
    };
    p.record_follower_fetch(1, end, end, long_ago);
    assert_eq!(waiting.await.unwrap(), Ok(()));

    // A timeout while the follower does not fetch.
    let end = p
        .append_as_leader(&batch(-1, 0, 1), -1, 0)
        .unwrap()
        .end_offset();
    let soon = tokio::time::Instant::now() + std::time::Duration::from_millis(20);
    assert_eq!(
        p.wait_committed(end, 1, soon).await,
        Err(ResponseError::RequestTimedOut)
    );
    // The ISR shrinks to the leader (below min.insync.replicas 2): committed, but not enough.
    p.apply_metadata(&state(0, 1, 1, &[0, 1], &[0]), isr::monotonic_ms());
    assert_eq!(
        p.wait_committed(end, 1, deadline).await,
        Err(ResponseError::NotEnoughReplicasAfterAppend)
    );
    let refused = p.append_as_leader(&batch(-1, 0, 1), -1, 0).unwrap_err();
    assert_eq!(refused.kafka_error(), ResponseError::NotEnoughReplicas);
    // Leadership moves while waiting.
    p.apply_metadata(&state(0, 1, 2, &[0, 1], &[0, 1]), 0);
    let end = p
        .append_as_leader(&batch(-1, 0, 1), -1, 0)
        .unwrap()
        .end_offset();
    let waiting = {
        let p = p.clone();
        tokio::spawn(async move { p.wait_committed(end, 1, deadline).await })
    };
    p.apply_metadata(&state(1, 2, 3, &[0, 1], &[1]), 0);
    assert_eq!(
        waiting.await.unwrap(),
        Err(ResponseError::NotLeaderOrFollower)
    );
}
