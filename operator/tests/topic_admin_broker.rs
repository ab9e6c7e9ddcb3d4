//! The topic controller's Kafka side against the real broker binary: create, grow, config
//! drift repaired, replication-factor change blocked on one broker, partition reassignment
//! calls (what a single broker can show), Kafka errors named, delete.
//!
//! Needs the broker binary: `cargo build -p sluice-broker` (found through
//! `SLUICE_BROKER_BIN`, else `$CARGO_TARGET_DIR/{debug,release}/sluice-broker` (this test's profile first), else the
//! workspace's `target/`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use sluice_client::Client;
use sluice_operator::controllers::cluster::status::partition_health;
use sluice_operator::controllers::topic::plan::DesiredTopic;
use sluice_operator::controllers::topic::status::{error_reason, TopicStatusBuilder};
use sluice_operator::controllers::topic::sync::{start_moves, sync_topic, ReplicaMove};
use sluice_operator::crd::KafkaTopic;
use sluice_operator::kafka::{KafkaConnector, SluiceKafka};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const START_TIMEOUT: Duration = Duration::from_secs(60);

fn broker_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("SLUICE_BROKER_BIN") {
        return PathBuf::from(bin);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")));
    // The profile this test was built with first (`cargo test --release` after
    // `cargo build --release`), then the other.
    let (first, second) = if cfg!(debug_assertions) {
        ("debug", "release")
    } else {
        ("release", "debug")
    };
    let candidates = [
        target.join(first).join("sluice-broker"),
        target.join(second).join("sluice-broker"),
    ];
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "sluice-broker binary not found in {candidates:?}: run `cargo build -p sluice-broker` \
                 or set SLUICE_BROKER_BIN"
            )
        })
}

/// A broker process on free ports; killed when dropped.
struct Broker {
    _child: Child,
    _data: tempfile::TempDir,
    kafka: String,
}

async fn start_broker() -> Broker {
    let data = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(broker_binary())
        .arg("--data-dir")
        .arg(data.path())
        .args([
            "--listener",
            "127.0.0.1:0",
            "--http-listener",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn sluice-broker");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(START_TIMEOUT, async {
        while let Some(line) = lines.next_line().await.expect("read broker stdout") {
            if let Some(rest) = line.strip_prefix("sluice-broker ready kafka=") {
                return rest.split_whitespace().next().map(str::to_string);
            }
        }
        None
    })
    .await
    .expect("broker ready within the deadline")
    .expect("broker printed its ready line");
    Broker {
        _child: child,
        _data: data,
        kafka: ready,
    }
}

fn desired(partitions: i32, rf: i16, configs: &[(&str, &str)]) -> DesiredTopic {
    DesiredTopic {
        name: "orders".into(),
        partitions,
        replication_factor: rf,
        configs: configs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn topic_lifecycle_against_the_broker() {
    let broker = start_broker().await;
    let kafka = SluiceKafka::new();
    let admin = kafka.connect(&broker.kafka).await.expect("connect");
    assert_eq!(
        admin.describe_topic("orders").await.expect("describe"),
        None
    );

    // Create.
    let spec = desired(3, 1, &[("retention.ms", "3600000")]);
    let report = sync_topic(admin.as_ref(), &spec, None)
        .await
        .expect("create");
    assert!(report.created);
    let state = report.state.expect("state after create");
    assert_eq!(state.partitions(), 3);
    assert_eq!(state.replication_factor(), 1);
    assert_eq!(state.configs, map(&[("retention.ms", "3600000")]));
    assert!(!state.topic_id.is_nil());

    // Nothing to do the second time.
    let again = sync_topic(admin.as_ref(), &spec, None)
        .await
        .expect("resync");
    assert!(!again.changed(), "{again:?}");
    assert_eq!(
        again.state.as_ref().map(|s| s.topic_id),
        Some(state.topic_id)
    );

    // Grow.
    let grown = desired(5, 1, &[("retention.ms", "3600000")]);
    let report = sync_topic(admin.as_ref(), &grown, None)
        .await
        .expect("grow");
    assert_eq!(report.grown, Some((3, 5)));
    assert_eq!(report.state.as_ref().map(|s| s.partitions()), Some(5));

    // Changed behind the operator's back: put back.
    let other = Client::connect(&[broker.kafka.as_str()])
        .await
        .expect("client");
    other
        .incremental_alter_configs(
            "orders",
            &[("retention.ms", "5000"), ("cleanup.policy", "compact")],
            &[],
        )
        .await
        .expect("drift");
    let drifted = admin.describe_topic("orders").await.unwrap().unwrap();
    assert_eq!(
        drifted.configs,
        map(&[("cleanup.policy", "compact"), ("retention.ms", "5000")])
    );
    let report = sync_topic(admin.as_ref(), &grown, None)
        .await
        .expect("repair");
    assert_eq!(report.configs_set, ["retention.ms"]);
    assert_eq!(report.configs_removed, ["cleanup.policy"]);
    let repaired = admin.describe_topic("orders").await.unwrap().unwrap();
    assert_eq!(repaired.configs, map(&[("retention.ms", "3600000")]));

    // A replication factor above the live broker count is refused before sending anything.
    let more_replicas = desired(5, 2, &[("retention.ms", "3600000")]);
    let report = sync_topic(admin.as_ref(), &more_replicas, None)
        .await
        .expect("rf");
    assert!(!report.changed());
    assert_eq!(
        report.replica_move,
        Some(ReplicaMove::NotEnoughBrokers {
            from: 1,
            to: 2,
            live: 1
        })
    );
    assert_eq!(
        other
            .list_partition_reassignments(None)
            .await
            .expect("list"),
        Default::default(),
        "nothing was started"
    );

    // Partition health from the same metadata the cluster controller reads.
    let md = admin.metadata().await.expect("metadata");
    assert_eq!(md.brokers.len(), 1);
    let health = partition_health(&md);
    assert!(health.total >= 5, "{health:?}");
    assert_eq!((health.under_replicated, health.offline), (0, 0));

    // Kafka errors keep their name.
    let impossible = DesiredTopic {
        name: "too-many-replicas".into(),
        ..desired(1, 3, &[])
    };
    let err = sync_topic(admin.as_ref(), &impossible, None)
        .await
        .unwrap_err();
    assert_eq!(error_reason(&err), "InvalidReplicationFactor", "{err}");
    let bad_config = DesiredTopic {
        name: "bad-config".into(),
        ..desired(1, 1, &[("no.such.config", "1")])
    };
    let err = sync_topic(admin.as_ref(), &bad_config, None)
        .await
        .unwrap_err();
    assert!(err.code().is_some(), "a Kafka error: {err}");

    // Delete, twice (the second finds nothing and is fine).
    admin.delete_topic("orders").await.expect("delete");
    assert_eq!(
        admin.describe_topic("orders").await.expect("describe"),
        None
    );
    admin.delete_topic("orders").await.expect("delete again");
}

fn kafka_topic() -> KafkaTopic {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "kafka.sluice.dev/v1alpha1",
        "kind": "KafkaTopic",
        "metadata": {"name": "moves", "namespace": "ns", "generation": 1},
        "spec": {"cluster": "demo", "partitions": 2, "replicas": 1},
    }))
    .expect("KafkaTopic")
}

#[tokio::test]
async fn partition_reassignment_on_a_single_broker() {
    let broker = start_broker().await;
    let kafka = SluiceKafka::new();
    let admin = kafka.connect(&broker.kafka).await.expect("connect");
    let spec = DesiredTopic {
        name: "moves".into(),
        ..desired(2, 1, &[])
    };
    sync_topic(admin.as_ref(), &spec, None)
        .await
        .expect("create");
    let before = admin
        .describe_topic("moves")
        .await
        .expect("describe")
        .expect("topic exists");
    let live = admin.live_brokers().await.expect("live brokers");
    assert_eq!(live.len(), 1, "{live:?}");
    let id = live[0];
    assert_eq!(
        before.assignment,
        BTreeMap::from([(0, vec![id]), (1, vec![id])])
    );

    // Nothing is moving.
    let none = admin
        .list_partition_reassignments("moves", &[0, 1])
        .await
        .expect("list");
    assert!(none.is_empty(), "{none:?}");
    let client = Client::connect(&[broker.kafka.as_str()])
        .await
        .expect("client");
    assert!(client
        .list_partition_reassignments(None)
        .await
        .expect("list all")
        .is_empty());

    // Moving a 1-replica partition to the broker it is on is a no-op.
    start_moves(admin.as_ref(), "moves", &BTreeMap::from([(0, vec![id])]))
        .await
        .expect("same-broker move accepted");
    assert!(admin
        .list_partition_reassignments("moves", &[0, 1])
        .await
        .expect("list")
        .is_empty());
    let after = admin.describe_topic("moves").await.unwrap().unwrap();
    assert_eq!(after.assignment, before.assignment);

    // The spec matches the cluster: the sync sends nothing and reports no move.
    let report = sync_topic(admin.as_ref(), &spec, None)
        .await
        .expect("resync");
    assert_eq!(report.replica_move, None);
    assert!(!report.changed());

    // A target naming a broker that does not exist is refused, and the status condition
    // names the Kafka error.
    let unknown = id + 100;
    let err = start_moves(
        admin.as_ref(),
        "moves",
        &BTreeMap::from([(1, vec![unknown])]),
    )
    .await
    .expect_err("unknown broker refused");
    assert_eq!(error_reason(&err), "InvalidReplicaAssignment", "{err}");
    let kt = kafka_topic();
    let status = TopicStatusBuilder::new(&kt, Timestamp::UNIX_EPOCH).kafka_error(
        "moves",
        &error_reason(&err),
        &err.to_string(),
    );
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready condition");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "InvalidReplicaAssignment")
    );
    assert!(
        ready
            .message
            .contains("Kafka error 39 InvalidReplicaAssignment (reassign moves-1)"),
        "{}",
        ready.message
    );
    assert!(
        ready.message.contains(&unknown.to_string()),
        "{}",
        ready.message
    );
    assert_eq!(
        admin
            .describe_topic("moves")
            .await
            .unwrap()
            .unwrap()
            .assignment,
        before.assignment,
        "nothing moved"
    );

    // Cancelling when nothing runs: a per-partition error, not a failed request.
    let results = client
        .alter_partition_reassignments(&[("moves", 0, None)])
        .await
        .expect("request answered");
    let err = results[&("moves".to_string(), 0)]
        .as_ref()
        .expect_err("nothing to cancel");
    assert_eq!(
        err.response_error(),
        Some(sluice_client::kafka_protocol::ResponseError::NoReassignmentInProgress),
        "{err}"
    );
}

#[tokio::test]
async fn unreachable_cluster_is_a_connection_error() {
    // A port nothing listens on: bind, note the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let kafka = SluiceKafka::new();
    let err = match kafka.connect(&format!("127.0.0.1:{port}")).await {
        Ok(_) => panic!("connected to a closed port"),
        Err(e) => e,
    };
    assert_eq!(error_reason(&err), "KafkaUnavailable", "{err}");
}

#[tokio::test]
async fn quorum_and_unregister_against_the_broker() {
    let broker = start_broker().await;
    let kafka = SluiceKafka::new();
    let admin = kafka.connect(&broker.kafka).await.expect("connect");
    // A single broker is the whole quorum.
    assert_eq!(admin.quorum_voters().await.expect("describe quorum"), [0]);
    assert!(admin.all_reassignments().await.expect("list").is_empty());
    // The running broker cannot be unregistered; an unknown one is BROKER_ID_NOT_REGISTERED.
    let running = admin.unregister_broker(0).await.unwrap_err();
    assert_eq!(running.code(), Some(42), "INVALID_REQUEST: {running}");
    let unknown = admin.unregister_broker(7).await.unwrap_err();
    assert_eq!(unknown.code(), Some(102), "{unknown}");
}
