//! Partition replication over real sockets, before the metadata quorum exists.
//!
//! Two harnesses:
//! * one real broker leading a partition whose other replica is a broker id the test plays,
//!   sending follower Fetch requests (`replica_id` >= 0) itself: high watermark, acks=all,
//!   diverging epochs, ISR changes;
//! * two real brokers, each with its own single-node metadata, told the same partition
//!   assignment; leadership changes are applied to both the way a controller's
//!   `PartitionChange` record would be. The follower runs the real replica fetcher:
//!   replication, failover, truncation of a diverged log, producer dedup after failover.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::{
    BrokerId, FetchRequest, ListOffsetsRequest, ProduceRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_broker::broker::Broker;
use sluice_broker::metadata::controller::requests::ControllerRequest;
use sluice_broker::metadata::{
    BrokerInfo, MetadataListener, MetadataRecord, NewTopic, PartitionImage,
};
use sluice_broker::replica::{Partition, Role};
use sluice_client::{ClientConfig, Connection};
use support::test_support::TestBatch;
use support::TestBroker;

const TOPIC: &str = "replicated";

fn broker(tb: &TestBroker) -> &Arc<Broker> {
    &tb.running.broker
}

async fn connect(tb: &TestBroker) -> Connection {
    Connection::connect(&tb.addr(), ClientConfig::default())
        .await
        .expect("connects")
}

/// A free local port nobody listens on.
fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Registers broker `id` at `addr` in `tb`'s metadata.
async fn register_peer(tb: &TestBroker, id: i32, addr: SocketAddr) {
    let info = BrokerInfo {
        id,
        host: addr.ip().to_string(),
        port: addr.port(),
        listeners: Vec::new(),
        rack: None,
        http_address: String::new(),
        incarnation: uuid::Uuid::new_v4(),
        fenced: false,
    };
    let incarnation = info.incarnation;
    let controller = &broker(tb).controller;
    controller
        .handle(ControllerRequest::RegisterBroker { broker: info })
        .await
        .expect("peer registered");
    // A heartbeat from the (pretend) caught-up peer unfences it, so it can be in the ISR.
    controller
        .handle(ControllerRequest::Heartbeat {
            id,
            incarnation,
            caught_up: true,
        })
        .await
        .expect("peer unfenced");
}

/// Creates one-partition `TOPIC` with `replicas` (the first leads, all in sync).
async fn create_topic(tb: &TestBroker, replicas: &[i32], configs: &[(&str, &str)]) {
    let topic = NewTopic {
        name: TOPIC.to_string(),
        partitions: 1,
        replication_factor: replicas.len() as i16,
        assignments: BTreeMap::from([(0, replicas.to_vec())]),
        configs: configs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    broker(tb)
        .controller
        .create_topic(topic, false)
        .await
        .expect("topic created");
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

/// Applies a partition change to `tb`'s replicas the way a committed `PartitionChange` record
/// reaches them (the single-node controller cannot commit one yet).
async fn set_partition(tb: &TestBroker, state: PartitionImage) {
    let broker = broker(tb).clone();
    let mut image = (*broker.metadata.current()).clone();
    let record = MetadataRecord::PartitionChange {
        topic_id: image.topic(TOPIC).expect("topic exists").id,
        partition: 0,
        state,
    };
    image.apply(&record);
    tokio::task::spawn_blocking(move || broker.replicas.on_records(&image, &[record]))
        .await
        .unwrap();
}

fn partition(tb: &TestBroker) -> Arc<Partition> {
    broker(tb).replicas.get(TOPIC, 0).expect("partition hosted")
}

/// Keyless records, from an idempotent producer (epoch 0) when `producer_id` >= 0.
fn batch(producer_id: i64, first_seq: i32, values: &[&str]) -> Bytes {
    TestBatch::values(values)
        .producer(producer_id, 0, first_seq)
        .build()
}

async fn produce(
    conn: &Connection,
    batch: Bytes,
    acks: i16,
    timeout_ms: i32,
) -> PartitionProduceResponse {
    let request = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(timeout_ms)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch))])]);
    let response = conn
        .send_version(request, 9)
        .await
        .expect("produce answered");
    response.responses[0].partition_responses[0].clone()
}

fn error(code: i16) -> Option<ResponseError> {
    ResponseError::try_from_code(code)
}

/// One Fetch v12 for `TOPIC`-0 as `replica_id` (-1: a consumer).
async fn fetch(
    conn: &Connection,
    replica_id: i32,
    offset: i64,
    current_leader_epoch: i32,
    last_fetched_epoch: i32,
) -> PartitionData {
    let mut p = FetchPartition::default();
    p.partition = 0;
    p.fetch_offset = offset;
    p.current_leader_epoch = current_leader_epoch;
    p.last_fetched_epoch = last_fetched_epoch;
    p.partition_max_bytes = 1 << 20;
    let mut t = FetchTopic::default();
    t.topic = TopicName(StrBytes::from_static_str(TOPIC));
    t.partitions = vec![p];
    let mut request = FetchRequest::default();
    request.replica_id = BrokerId(replica_id);
    request.max_wait_ms = 0;
    request.min_bytes = 0;
    request.topics = vec![t];
    let response = conn
        .send_version(request, 12)
        .await
        .expect("fetch answered");
    assert_eq!(response.error_code, 0);
    response.responses[0].partitions[0].clone()
}

async fn list_latest(conn: &Connection, replica_id: i32) -> (Option<ResponseError>, i64) {
    let mut p = ListOffsetsPartition::default();
    p.partition_index = 0;
    p.timestamp = -1;
    p.current_leader_epoch = -1;
    let mut t = ListOffsetsTopic::default();
    t.name = TopicName(StrBytes::from_static_str(TOPIC));
    t.partitions = vec![p];
    let mut request = ListOffsetsRequest::default();
    request.replica_id = BrokerId(replica_id);
    request.topics = vec![t];
    let response = conn
        .send_version(request, 7)
        .await
        .expect("list offsets answered");
    let p = &response.topics[0].partitions[0];
    (error(p.error_code), p.offset)
}

fn values(records: &Option<Bytes>) -> Vec<String> {
    let raw = records.clone().unwrap_or_default();
    sluice_client::decode_records(raw, 0)
        .unwrap()
        .iter()
        .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap())
        .collect()
}

/// Polls `condition` until it holds; fails after 15 s.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A broker leading `TOPIC`-0 with replicas [0, 1]; broker 1 is played by the test.
async fn leader_with_test_follower(configs: &[(&str, &str)]) -> TestBroker {
    let tb = TestBroker::start().await;
    register_peer(&tb, 1, closed_port()).await;
    create_topic(&tb, &[0, 1], configs).await;
    assert!(partition(&tb).is_leader());
    tb
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_fetches_advance_the_high_watermark_and_release_acks_all() {
    let tb = leader_with_test_follower(&[("min.insync.replicas", "2")]).await;
    let conn = connect(&tb).await;
    // Its own connection: responses go back in request order per connection.
    let producer = connect(&tb).await;
    let producing = tokio::spawn(async move {
        produce(&producer, batch(-1, 0, &["a", "b", "c"]), -1, 30_000).await
    });
    eventually("the records are appended", || {
        partition(&tb).log_end_offset() == 3
    })
    .await;

    // Consumers see nothing yet: the follower does not have the records.
    let consumer = fetch(&conn, -1, 0, -1, -1).await;
    assert_eq!(consumer.error_code, 0);
    assert_eq!(consumer.high_watermark, 0);
    assert!(values(&consumer.records).is_empty());
    assert_eq!(list_latest(&conn, -1).await, (None, 0));
    assert_eq!(
        list_latest(&conn, 1).await,
        (None, 3),
        "followers see the log end"
    );

    // The follower fetches from 0: it gets the records, but has not stored them yet.
    let fetched = fetch(&conn, 1, 0, 0, -1).await;
    assert_eq!(fetched.error_code, 0);
    assert_eq!(values(&fetched.records), ["a", "b", "c"]);
    assert_eq!(fetched.high_watermark, 0);
    assert!(
        !producing.is_finished(),
        "acks=all answered before the follower had the records"
    );

    // Its next fetch says it has them: committed, and the producer is answered.
    let next = fetch(&conn, 1, 3, 0, 0).await;
    assert_eq!(next.error_code, 0);
    assert_eq!(next.high_watermark, 3);
    let answer = producing.await.unwrap();
    assert_eq!((error(answer.error_code), answer.base_offset), (None, 0));
    let consumer = fetch(&conn, -1, 0, -1, -1).await;
    assert_eq!(values(&consumer.records), ["a", "b", "c"]);
    assert_eq!(list_latest(&conn, -1).await, (None, 3));

    // acks=1 answers at once; the watermark waits for the follower.
    let answer = produce(&conn, batch(-1, 0, &["d"]), 1, 30_000).await;
    assert_eq!((error(answer.error_code), answer.base_offset), (None, 3));
    assert_eq!(partition(&tb).high_watermark(), 3);
    // acks=all that the follower never confirms times out.
    let answer = produce(&conn, batch(-1, 0, &["e"]), -1, 100).await;
    assert_eq!(
        error(answer.error_code),
        Some(ResponseError::RequestTimedOut)
    );
    assert_eq!(
        partition(&tb).log_end_offset(),
        5,
        "appended, just not committed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_fetch_is_checked_for_epoch_membership_and_divergence() {
    let tb = leader_with_test_follower(&[]).await;
    let conn = connect(&tb).await;
    produce(&conn, batch(-1, 0, &["a", "b", "c"]), 1, 1000).await;
    // Re-elected in epoch 2: epoch 0 covers offsets 0..3, epoch 2 starts at 3.
    set_partition(&tb, state(0, 2, 1, &[0, 1], &[0, 1])).await;
    produce(&conn, batch(-1, 0, &["d", "e"]), 1, 1000).await;
    assert_eq!(partition(&tb).epoch_history(), vec![(0, 0), (2, 3)]);

    // Stale and future epochs.
    let fenced = fetch(&conn, 1, 0, 1, -1).await;
    assert_eq!(
        error(fenced.error_code),
        Some(ResponseError::FencedLeaderEpoch)
    );
    assert_eq!(
        (
            fenced.current_leader.leader_id.0,
            fenced.current_leader.leader_epoch
        ),
        (0, 2)
    );
    let unknown = fetch(&conn, 1, 0, 3, -1).await;
    assert_eq!(
        error(unknown.error_code),
        Some(ResponseError::UnknownLeaderEpoch)
    );
    // A broker that is not a replica.
    let stranger = fetch(&conn, 7, 0, 2, -1).await;
    assert_eq!(
        error(stranger.error_code),
        Some(ResponseError::NotLeaderOrFollower)
    );

    // The follower wrote offsets 3 and 4 in epoch 1, which this leader never had: it must go
    // back to the end of epoch 0.
    let diverged = fetch(&conn, 1, 5, 2, 1).await;
    assert_eq!(diverged.error_code, 0);
    assert_eq!(
        (
            diverged.diverging_epoch.epoch,
            diverged.diverging_epoch.end_offset
        ),
        (0, 3)
    );
    assert!(values(&diverged.records).is_empty());
    // Ahead of the leader within the latest epoch.
    let ahead = fetch(&conn, 1, 7, 2, 2).await;
    assert_eq!(
        (
            ahead.diverging_epoch.epoch,
            ahead.diverging_epoch.end_offset
        ),
        (2, 5)
    );
    // After truncating to 3 (last epoch 0) the fetch is consistent and gets epoch 2's data.
    let ok = fetch(&conn, 1, 3, 2, 0).await;
    assert_eq!(ok.error_code, 0);
    assert_eq!(ok.diverging_epoch.epoch, -1);
    assert_eq!(values(&ok.records), ["d", "e"]);
    // Beyond the log end without an epoch.
    let out = fetch(&conn, 1, 9, 2, -1).await;
    assert_eq!(error(out.error_code), Some(ResponseError::OffsetOutOfRange));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_insync_replicas_and_leadership_are_enforced() {
    let tb = leader_with_test_follower(&[("min.insync.replicas", "2")]).await;
    let conn = connect(&tb).await;
    // Re-elected with the leader alone in the ISR.
    set_partition(&tb, state(0, 1, 1, &[0, 1], &[0])).await;
    let refused = produce(&conn, batch(-1, 0, &["a"]), -1, 1000).await;
    assert_eq!(
        error(refused.error_code),
        Some(ResponseError::NotEnoughReplicas)
    );
    assert_eq!(
        partition(&tb).log_end_offset(),
        0,
        "refused before the append"
    );
    let accepted = produce(&conn, batch(-1, 0, &["a"]), 1, 1000).await;
    assert_eq!(error(accepted.error_code), None);
    assert_eq!(
        partition(&tb).high_watermark(),
        1,
        "alone in the ISR: committed at once"
    );

    // Leadership moves to broker 1: this broker follows and serves nobody.
    set_partition(&tb, state(1, 2, 2, &[0, 1], &[1])).await;
    assert_eq!(partition(&tb).role(), Role::Follower { leader: 1 });
    assert_eq!(broker(&tb).replicas.fetching_from(TOPIC, 0), Some(1));
    let refused = produce(&conn, batch(-1, 0, &["b"]), 1, 1000).await;
    assert_eq!(
        error(refused.error_code),
        Some(ResponseError::NotLeaderOrFollower)
    );
    let consumer = fetch(&conn, -1, 0, -1, -1).await;
    assert_eq!(
        error(consumer.error_code),
        Some(ResponseError::NotLeaderOrFollower)
    );
    assert_eq!(consumer.current_leader.leader_id.0, 1);
    assert_eq!(
        list_latest(&conn, -1).await.0,
        Some(ResponseError::NotLeaderOrFollower)
    );
    assert!(
        broker(&tb).replicas.is_cause_of_under_replication(),
        "a follower of a live leader, missing from the ISR"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_follower_is_proposed_out_of_the_isr_and_a_caught_up_one_back_in() {
    let tb = TestBroker::start_with(|c| c.replica_lag_time_max = Duration::from_millis(300)).await;
    register_peer(&tb, 1, closed_port()).await;
    create_topic(&tb, &[0, 1], &[]).await;
    let conn = connect(&tb).await;
    produce(&conn, batch(-1, 0, &["a"]), 1, 1000).await;
    // The follower never fetches the new record: after the lag limit the leader asks the
    // controller to drop it, and the controller commits that.
    let p = partition(&tb);
    eventually("the controller commits the ISR without 1", || {
        p.isr() == vec![0]
    })
    .await;
    assert_eq!(
        p.pending_isr(),
        None,
        "the committed change is no longer pending"
    );
    let committed_isr = |tb: &TestBroker| {
        broker(tb)
            .metadata
            .current()
            .topic(TOPIC)
            .expect("topic exists")
            .partitions[&0]
            .isr
            .clone()
    };
    assert_eq!(committed_isr(&tb), vec![0], "the image agrees");
    // The high watermark no longer waits for broker 1.
    assert_eq!(p.high_watermark(), 1);
    assert_eq!(broker(&tb).replicas.stats().under_replicated, 1);
    // Broker 1 catches up to the high watermark: the leader asks to add it back.
    fetch(&conn, 1, 0, 0, -1).await;
    assert_eq!(p.pending_isr(), None, "behind the high watermark: not yet");
    assert_eq!(p.isr(), vec![0]);
    fetch(&conn, 1, 1, 0, 0).await;
    eventually("the controller commits broker 1 back into the ISR", || {
        p.isr() == vec![0, 1]
    })
    .await;
    assert_eq!(broker(&tb).replicas.stats().under_replicated, 0);
}

/// Two real brokers (ids 0 and 1) that know each other, both assigned `TOPIC`-0 on [0, 1]
/// with broker 0 leading.
async fn two_brokers(configs: &[(&str, &str)]) -> (TestBroker, TestBroker) {
    let fast = |c: &mut sluice_broker::config::BrokerConfig| {
        c.replica_fetch_backoff = Duration::from_millis(20);
        c.replica_fetch_wait_max_ms = 200;
    };
    let b0 = TestBroker::start_with(|c| {
        c.node_id = 0;
        fast(c)
    })
    .await;
    let b1 = TestBroker::start_with(|c| {
        c.node_id = 1;
        fast(c)
    })
    .await;
    register_peer(&b0, 1, b1.running.kafka_addr).await;
    register_peer(&b1, 0, b0.running.kafka_addr).await;
    create_topic(&b0, &[0, 1], configs).await;
    create_topic(&b1, &[0, 1], configs).await;
    (b0, b1)
}

/// Every batch of a partition's log, as stored.
fn log_bytes(p: &Partition) -> Bytes {
    p.read_for_follower(p.log_start_offset(), 64 << 20, true)
        .unwrap()
        .records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_replicates_then_takes_over_and_the_old_leader_truncates() {
    let (b0, b1) = two_brokers(&[("min.insync.replicas", "2")]).await;
    assert!(partition(&b0).is_leader());
    assert_eq!(partition(&b1).role(), Role::Follower { leader: 0 });
    assert_eq!(broker(&b1).replicas.fetching_from(TOPIC, 0), Some(0));
    let c0 = connect(&b0).await;
    let c1 = connect(&b1).await;

    // acks=all through the real fetcher; an idempotent producer (id 77).
    for (i, v) in ["a", "b", "c"].iter().enumerate() {
        let answer = produce(&c0, batch(77, i as i32, &[v]), -1, 10_000).await;
        assert_eq!(
            (error(answer.error_code), answer.base_offset),
            (None, i as i64)
        );
    }
    assert_eq!(partition(&b0).high_watermark(), 3);
    assert_eq!(
        log_bytes(&partition(&b1)),
        log_bytes(&partition(&b0)),
        "byte-identical copy"
    );
    eventually("the follower learns the high watermark", || {
        partition(&b1).high_watermark() == 3
    })
    .await;
    assert!(!broker(&b1).replicas.is_cause_of_under_replication());

    // Broker 1 loses contact (offline in its own view); broker 0 keeps writing with acks=1.
    set_partition(&b1, state(-1, 1, 1, &[0, 1], &[0, 1])).await;
    assert_eq!(broker(&b1).replicas.fetching_from(TOPIC, 0), None);
    for v in ["x", "y"] {
        let answer = produce(&c0, batch(-1, 0, &[v]), 1, 1000).await;
        assert_eq!(error(answer.error_code), None);
    }
    assert_eq!(partition(&b0).log_end_offset(), 5);
    assert_eq!(
        partition(&b0).high_watermark(),
        3,
        "x and y are not committed"
    );

    // The controller elects broker 1 (in the ISR) in epoch 2; broker 0 follows it.
    let after_failover = state(1, 2, 2, &[0, 1], &[1, 0]);
    set_partition(&b1, after_failover.clone()).await;
    set_partition(&b0, after_failover).await;
    assert!(partition(&b1).is_leader());
    assert_eq!(broker(&b0).replicas.fetching_from(TOPIC, 0), Some(1));

    // The producer retries its last batch at the new leader: a duplicate, same offset.
    let retry = produce(&c1, batch(77, 2, &["c"]), -1, 10_000).await;
    assert_eq!((error(retry.error_code), retry.base_offset), (None, 2));
    let answer = produce(&c1, batch(77, 3, &["d"]), -1, 10_000).await;
    assert_eq!((error(answer.error_code), answer.base_offset), (None, 3));

    // Broker 0 dropped x and y (never committed) and copied d: the logs are identical.
    eventually("the old leader converges on the new leader's log", || {
        log_bytes(&partition(&b0)) == log_bytes(&partition(&b1))
    })
    .await;
    assert_eq!(partition(&b0).log_end_offset(), 4);
    assert_eq!(partition(&b0).epoch_history(), vec![(0, 0), (2, 3)]);
    let read = fetch(&c1, -1, 0, -1, -1).await;
    assert_eq!(values(&read.records), ["a", "b", "c", "d"]);
    assert_eq!(read.high_watermark, 4);
    let refused = fetch(&c0, -1, 0, -1, -1).await;
    assert_eq!(
        error(refused.error_code),
        Some(ResponseError::NotLeaderOrFollower)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_restarts_catches_up_from_its_own_log() {
    let (b0, b1) = two_brokers(&[]).await;
    let c0 = connect(&b0).await;
    for v in ["a", "b"] {
        produce(&c0, batch(-1, 0, &[v]), -1, 10_000).await;
    }
    eventually("the follower has both", || {
        partition(&b1).log_end_offset() == 2
    })
    .await;
    let b1 = b1.restart().await;
    assert_eq!(
        partition(&b1).log_end_offset(),
        2,
        "kept across the restart"
    );
    assert_eq!(partition(&b1).epoch_history(), vec![(0, 0)]);
    let answer = produce(&c0, batch(-1, 0, &["c"]), -1, 10_000).await;
    assert_eq!((error(answer.error_code), answer.base_offset), (None, 2));
    eventually("the follower has c", || {
        partition(&b1).log_end_offset() == 3
    })
    .await;
    assert_eq!(log_bytes(&partition(&b1)), log_bytes(&partition(&b0)));
}
