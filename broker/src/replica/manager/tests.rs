use super::*;
use crate::metadata::image::PartitionImage;
use crate::replica::Role;
use crate::test_support::TestBatch;

const TOPIC: Uuid = Uuid::from_u128(0x5eed);

fn manager(dir: &Path) -> (Arc<ReplicaManager>, mpsc::UnboundedReceiver<IsrUpdate>) {
    let config = BrokerConfig {
        data_dir: dir.to_path_buf(),
        node_id: 0,
        ..Default::default()
    };
    let (tx, rx) = mpsc::unbounded_channel();
    (Arc::new(ReplicaManager::new(Arc::new(config), tx)), rx)
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

/// Brokers 0..=2, topic `t` with the given partitions.
fn image(partitions: &[PartitionImage]) -> MetadataImage {
    let mut image = MetadataImage::default();
    for id in 0..3 {
        image.apply(&MetadataRecord::RegisterBroker {
            id,
            host: "127.0.0.1".into(),
            port: 1,
            listeners: Vec::new(),
            rack: None,
            http_address: String::new(),
            incarnation: Uuid::nil(),
        });
        image.apply(&MetadataRecord::UnfenceBroker { id });
    }
    image.apply(&MetadataRecord::CreateTopic {
        name: "t".into(),
        id: TOPIC,
        configs: Default::default(),
    });
    for (i, p) in partitions.iter().enumerate() {
        image.apply(&MetadataRecord::CreatePartition {
            topic_id: TOPIC,
            partition: i as i32,
            replicas: p.replicas.clone(),
            isr: p.isr.clone(),
            leader: p.leader,
            leader_epoch: p.leader_epoch,
        });
    }
    image
}

/// Applies `records` to `image` and tells the manager, as the metadata layer does.
fn commit(rm: &ReplicaManager, image: &mut MetadataImage, records: Vec<MetadataRecord>) {
    for r in &records {
        image.apply(r);
    }
    rm.on_records(image, &records);
}

fn change(partition: i32, state: PartitionImage) -> MetadataRecord {
    MetadataRecord::PartitionChange {
        topic_id: TOPIC,
        partition,
        state,
    }
}

#[derive(Default)]
struct Recorder(Mutex<Vec<(String, i32, i32, bool)>>);

impl LeadershipListener for Recorder {
    fn on_leadership(&self, topic: &str, partition: i32, leader_epoch: i32, is_leader: bool) {
        self.0
            .lock()
            .unwrap()
            .push((topic.to_string(), partition, leader_epoch, is_leader));
    }
}

impl Recorder {
    fn take(&self) -> Vec<(String, i32, i32, bool)> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn roles_follow_metadata_idempotently_and_unassigned_replicas_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (rm, _updates) = manager(dir.path());
    let mut image = image(&[
        state(0, 0, 0, &[0, 1], &[0, 1]),
        state(1, 0, 0, &[1, 0], &[1, 0]),
        state(1, 0, 0, &[1, 2], &[1, 2]),
    ]);
    rm.on_image_loaded(&image);
    // Registered after the first image: told what this broker leads already.
    let events = Arc::new(Recorder::default());
    rm.set_leadership_listener(events.clone());
    let p0 = rm.get("t", 0).expect("assigned here");
    let p1 = rm.get("t", 1).expect("assigned here");
    assert!(rm.get("t", 2).is_none(), "not a replica here");
    assert!(p0.is_leader());
    assert_eq!(p1.role(), Role::Follower { leader: 1 });
    assert_eq!(rm.fetching_from("t", 1), Some(1));
    assert_eq!(rm.fetching_from("t", 0), None);
    assert_eq!(events.take(), vec![("t".to_string(), 0, 0, true)]);

    // The same image again (a snapshot reinstalled, an unrelated record): nothing happens.
    commit(
        &rm,
        &mut image,
        vec![MetadataRecord::UnfenceBroker { id: 2 }],
    );
    rm.on_image_loaded(&image);
    assert!(Arc::ptr_eq(&p0, &rm.get("t", 0).unwrap()));
    assert!(events.take().is_empty());

    // Leadership of partition 1 moves here: it stops fetching and leads.
    commit(
        &rm,
        &mut image,
        vec![change(1, state(0, 1, 1, &[1, 0], &[0]))],
    );
    assert!(p1.is_leader());
    assert_eq!(rm.fetching_from("t", 1), None);
    assert_eq!(events.take(), vec![("t".to_string(), 1, 1, true)]);

    // And away again: it follows broker 1 in the new epoch.
    commit(
        &rm,
        &mut image,
        vec![change(1, state(1, 2, 2, &[1, 0], &[0, 1]))],
    );
    assert_eq!(p1.role(), Role::Follower { leader: 1 });
    assert_eq!(p1.leader_epoch(), 2);
    assert_eq!(rm.fetching_from("t", 1), Some(1));
    assert_eq!(events.take(), vec![("t".to_string(), 1, 2, false)]);

    // Offline (no leader): no fetching.
    commit(
        &rm,
        &mut image,
        vec![change(1, state(-1, 3, 3, &[1, 0], &[0]))],
    );
    assert_eq!(rm.fetching_from("t", 1), None);

    // Partition 0 is reassigned to brokers 1 and 2: stopped, forgotten, its files deleted.
    let p0_dir = p0.log().dir().to_path_buf();
    commit(
        &rm,
        &mut image,
        vec![change(0, state(1, 1, 1, &[1, 2], &[1, 2]))],
    );
    assert!(rm.get("t", 0).is_none());
    assert_eq!(p0.role(), Role::None);
    assert_eq!(events.take(), vec![("t".to_string(), 0, 0, false)]);
    wait_until("the reassigned replica's files are deleted", || {
        !p0_dir.exists()
            && std::fs::read_dir(dir.path())
                .unwrap()
                .all(|e| !e.unwrap().file_name().to_string_lossy().starts_with("t-0"))
    });

    // The topic is deleted: partition 1 goes too.
    commit(
        &rm,
        &mut image,
        vec![MetadataRecord::DeleteTopic { id: TOPIC }],
    );
    assert!(rm.all().is_empty());
    assert_eq!(rm.fetching_from("t", 1), None);
}

#[test]
fn a_stale_metadata_state_does_not_undo_a_newer_one() {
    let dir = tempfile::tempdir().unwrap();
    let (rm, _updates) = manager(dir.path());
    let mut image = image(&[state(0, 5, 0, &[0, 1], &[0, 1])]);
    rm.on_image_loaded(&image);
    let p = rm.get("t", 0).unwrap();
    assert_eq!(p.leader_epoch(), 5);
    commit(
        &rm,
        &mut image,
        vec![change(0, state(1, 4, 1, &[0, 1], &[1]))],
    );
    assert!(p.is_leader(), "an older leader epoch is ignored");
    assert_eq!(p.isr(), vec![0, 1]);
}

#[test]
fn isr_changes_go_out_one_at_a_time_and_come_back_as_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let (rm, mut updates) = manager(dir.path());
    let mut image = image(&[state(0, 3, 0, &[0, 1, 2], &[0])]);
    rm.on_image_loaded(&image);
    let p = rm.get("t", 0).unwrap();
    p.append_as_leader(&TestBatch::values(&["v"]).build(), 1, 0)
        .unwrap();
    assert_eq!(p.high_watermark(), 1, "alone in the ISR");
    assert_eq!(
        rm.stats(),
        ReplicaStats {
            partitions: 1,
            leaders: 1,
            under_replicated: 1,
            under_min_isr: 0,
            out_of_sync: 0
        }
    );
    rm.record_follower_fetch(&p, 1, 1, 1);
    let update = updates.try_recv().expect("follower 1 caught up");
    assert_eq!(
        update,
        IsrUpdate {
            topic_id: TOPIC,
            partition: 0,
            leader: 0,
            leader_epoch: 3,
            partition_epoch: 0,
            new_isr: vec![0, 1],
        }
    );
    rm.record_follower_fetch(&p, 2, 1, 1);
    assert!(
        updates.try_recv().is_err(),
        "one change in flight at a time"
    );
    // No answer: after the retry time the leader decides again, then sends 2's expansion
    // on its next fetch (1's request is still what the controller has not answered).
    rm.check_isr_at(monotonic_ms() + ISR_UPDATE_RETRY_MS + 1);
    assert_eq!(p.pending_isr(), None);
    rm.record_follower_fetch(&p, 2, 1, 1);
    assert_eq!(updates.try_recv().unwrap().new_isr, vec![0, 2]);
    // The controller commits 1 and 2 together.
    commit(
        &rm,
        &mut image,
        vec![change(0, state(0, 3, 1, &[0, 1, 2], &[0, 1, 2]))],
    );
    assert_eq!(p.pending_isr(), None);
    assert_eq!(p.isr(), vec![0, 1, 2]);
    assert_eq!(rm.stats().under_replicated, 0);
    assert!(updates.try_recv().is_err());
}

#[test]
fn readiness_blames_a_follower_missing_from_the_isr_of_a_live_leader() {
    let dir = tempfile::tempdir().unwrap();
    let (rm, _updates) = manager(dir.path());
    let mut image = image(&[state(1, 0, 0, &[1, 0], &[1, 0])]);
    rm.on_image_loaded(&image);
    assert!(!rm.is_cause_of_under_replication());
    commit(
        &rm,
        &mut image,
        vec![change(0, state(1, 0, 1, &[1, 0], &[1]))],
    );
    assert!(rm.is_cause_of_under_replication());
    assert_eq!(rm.stats().out_of_sync, 1);
    // The leader's broker is fenced: this broker is not what keeps the partition short.
    commit(&rm, &mut image, vec![MetadataRecord::FenceBroker { id: 1 }]);
    assert!(!rm.is_cause_of_under_replication());
}
