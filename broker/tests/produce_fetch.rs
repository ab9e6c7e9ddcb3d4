//! Produce and fetch semantics through sluice-client against an in-process broker: the
//! idempotent producer's sequence rules, corrupt and oversized batches, long-poll fetch,
//! min.insync.replicas, and state that survives a clean restart.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use sluice_broker::log::batch::BatchHeader;
use sluice_client::{ClientError, NewTopic};
use support::test_support::TestBatch;
use support::TestBroker;

/// Keyless records timestamped now, from an idempotent producer when `producer_id` >= 0.
fn batch(producer_id: i64, epoch: i16, first_seq: i32, values: &[&str]) -> Bytes {
    TestBatch::values(values)
        .producer(producer_id, epoch, first_seq)
        .build()
}

fn code(e: ClientError) -> Option<ResponseError> {
    e.response_error()
}

async fn topic(broker: &TestBroker, name: &str, configs: &[(&str, &str)]) -> sluice_client::Client {
    let client = broker.client().await;
    let mut t = NewTopic::new(name, 1, 1);
    for (k, v) in configs {
        t = t.config(*k, *v);
    }
    let results = client.create_topics(&[t], false).await.unwrap();
    results[name].as_ref().expect("topic created");
    client
}

async fn values(client: &sluice_client::Client, topic: &str) -> Vec<String> {
    let fetched = client.fetch(topic, 0, 0, 1 << 20, 0, 0).await.unwrap();
    fetched
        .records
        .iter()
        .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_sequences_dedupe_and_refuse_gaps_and_stale_epochs() {
    let broker = TestBroker::start().await;
    let client = topic(&broker, "idem", &[]).await;
    let pid = 4242;
    assert_eq!(
        client
            .produce_raw("idem", 0, batch(pid, 0, 0, &["a", "b"]), -1)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        client
            .produce_raw("idem", 0, batch(pid, 0, 2, &["c"]), -1)
            .await
            .unwrap(),
        2
    );
    // A retry of the first batch is answered with its original offset and not written again.
    assert_eq!(
        client
            .produce_raw("idem", 0, batch(pid, 0, 0, &["a", "b"]), -1)
            .await
            .unwrap(),
        0
    );
    // A gap in sequence numbers.
    let gap = client
        .produce_raw("idem", 0, batch(pid, 0, 5, &["x"]), -1)
        .await
        .unwrap_err();
    assert_eq!(code(gap), Some(ResponseError::OutOfOrderSequenceNumber));
    // A new epoch starts at sequence 0; the old epoch is fenced from then on.
    assert_eq!(
        client
            .produce_raw("idem", 0, batch(pid, 1, 0, &["d"]), -1)
            .await
            .unwrap(),
        3
    );
    let stale = client
        .produce_raw("idem", 0, batch(pid, 0, 3, &["y"]), -1)
        .await
        .unwrap_err();
    assert_eq!(code(stale), Some(ResponseError::InvalidProducerEpoch));
    assert_eq!(values(&client, "idem").await, ["a", "b", "c", "d"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_are_still_detected_after_a_restart() {
    let broker = TestBroker::start().await;
    let client = topic(&broker, "idem2", &[]).await;
    client
        .produce_raw("idem2", 0, batch(7, 0, 0, &["a"]), -1)
        .await
        .unwrap();
    client
        .produce_raw("idem2", 0, batch(7, 0, 1, &["b"]), -1)
        .await
        .unwrap();
    let broker = broker.restart().await;
    let client = broker.client().await;
    assert_eq!(
        client
            .produce_raw("idem2", 0, batch(7, 0, 1, &["b"]), -1)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        client
            .produce_raw("idem2", 0, batch(7, 0, 2, &["c"]), -1)
            .await
            .unwrap(),
        2
    );
    assert_eq!(values(&client, "idem2").await, ["a", "b", "c"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_oversized_and_multi_batch_produces_are_refused_without_damage() {
    let broker = TestBroker::start().await;
    let client = topic(&broker, "guarded", &[("max.message.bytes", "200")]).await;
    client
        .produce_raw("guarded", 0, batch(-1, -1, 0, &["kept"]), 1)
        .await
        .unwrap();

    let mut corrupt = batch(-1, -1, 0, &["evil"]).to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff; // the CRC no longer matches
    let e = client
        .produce_raw("guarded", 0, Bytes::from(corrupt), 1)
        .await
        .unwrap_err();
    assert_eq!(code(e), Some(ResponseError::CorruptMessage));

    let big = "x".repeat(300);
    let e = client
        .produce_raw("guarded", 0, batch(-1, -1, 0, &[&big]), 1)
        .await
        .unwrap_err();
    assert_eq!(code(e), Some(ResponseError::MessageTooLarge));

    let mut two = batch(-1, -1, 0, &["one"]).to_vec();
    two.extend_from_slice(&batch(-1, -1, 0, &["two"]));
    let e = client
        .produce_raw("guarded", 0, Bytes::from(two), 1)
        .await
        .unwrap_err();
    assert_eq!(code(e), Some(ResponseError::InvalidRecord));

    let e = client
        .produce_raw("guarded", 0, Bytes::from_static(b"garbage"), 1)
        .await
        .unwrap_err();
    assert_eq!(code(e), Some(ResponseError::CorruptMessage));

    assert_eq!(values(&client, "guarded").await, ["kept"]);
    assert_eq!(
        client
            .produce_raw("guarded", 0, batch(-1, -1, 0, &["next"]), 1)
            .await
            .unwrap(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_fetch_is_woken_by_an_append() {
    let broker = TestBroker::start().await;
    let client = topic(&broker, "poll", &[]).await;
    let reader = broker.client().await;
    let started = Instant::now();
    let fetch = tokio::spawn(async move {
        reader
            .fetch("poll", 0, 0, 1 << 20, 30_000, 1)
            .await
            .unwrap()
    });
    // Produce only once the fetch is parked on the partition.
    let partition = broker.running.broker.replicas.get("poll", 0).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while partition.parked_fetches() == 0 {
        assert!(Instant::now() < deadline, "the fetch never parked");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    client
        .produce_raw("poll", 0, batch(-1, -1, 0, &["wake"]), 1)
        .await
        .unwrap();
    let fetched = fetch.await.unwrap();
    assert_eq!(fetched.records.len(), 1);
    assert_eq!(fetched.high_watermark, 1);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the fetch waited out max_wait instead of waking"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_all_respects_min_insync_replicas_and_sync_flush() {
    let broker =
        TestBroker::start_with(|c| c.flush_policy = sluice_broker::config::FlushPolicy::Sync).await;
    let client = topic(&broker, "strict", &[("min.insync.replicas", "2")]).await;
    let e = client
        .produce_raw("strict", 0, batch(-1, -1, 0, &["no"]), -1)
        .await
        .unwrap_err();
    assert_eq!(code(e), Some(ResponseError::NotEnoughReplicas));
    // acks=1 does not need the ISR; with the sync policy it is acknowledged once fsynced.
    assert_eq!(
        client
            .produce_raw("strict", 0, batch(-1, -1, 0, &["yes"]), 1)
            .await
            .unwrap(),
        0
    );
    let partition = broker.running.broker.replicas.get("strict", 0).unwrap();
    assert_eq!(partition.log().flushed_offset(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_append_time_topics_stamp_broker_time() {
    let broker = TestBroker::start().await;
    let client = topic(
        &broker,
        "stamped",
        &[("message.timestamp.type", "LogAppendTime")],
    )
    .await;
    let before = sluice_broker::clock::now_ms();
    client
        .produce_raw("stamped", 0, batch(-1, -1, 0, &["t"]), 1)
        .await
        .unwrap();
    let after = sluice_broker::clock::now_ms();
    // Clients read a LogAppendTime batch's maxTimestamp as every record's timestamp.
    let fetched = client
        .fetch_raw("stamped", 0, 0, 1 << 20, 0, 0)
        .await
        .unwrap();
    let header = BatchHeader::parse(&fetched.records).unwrap();
    assert!(header.is_log_append_time());
    assert!(
        (before..=after).contains(&header.max_timestamp),
        "{} is not the append time",
        header.max_timestamp
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_and_configs_survive_restart_and_bad_names_are_refused() {
    let broker = TestBroker::start().await;
    let client = broker.client().await;
    let results = client
        .create_topics(
            &[
                NewTopic::new("kept", 3, 1).config("retention.ms", "60000"),
                NewTopic::new("bad name!", 1, 1),
            ],
            false,
        )
        .await
        .unwrap();
    assert!(results["kept"].is_ok());
    let bad = results["bad name!"].as_ref().unwrap_err();
    assert_eq!(
        bad.response_error(),
        Some(ResponseError::InvalidTopicException)
    );
    client
        .produce("kept", 2, vec![(None, Some(Bytes::from_static(b"v")))], 1)
        .await
        .unwrap();

    let broker = broker.restart().await;
    let client = broker.client().await;
    let md = client.metadata(Some(&["kept"])).await.unwrap();
    assert_eq!(md.topics["kept"].partitions.len(), 3);
    let configs = client.describe_configs("kept").await.unwrap();
    assert_eq!(configs["retention.ms"].value.as_deref(), Some("60000"));
    let fetched = client.fetch("kept", 2, 0, 1 << 20, 0, 0).await.unwrap();
    assert_eq!(fetched.records.len(), 1);
}
