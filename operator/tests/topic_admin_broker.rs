//! The topic controller's Kafka side against the real broker binary: create, grow, config
//! drift repaired, replication-factor change reported, Kafka errors named, delete.
//!
//! Needs the broker binary: `cargo build -p sluice-broker` (found through
//! `SLUICE_BROKER_BIN`, else `$CARGO_TARGET_DIR/{debug,release}/sluice-broker` (this test's profile first), else the
//! workspace's `target/`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use sluice_client::Client;
use sluice_operator::controllers::cluster::status::partition_health;
use sluice_operator::controllers::topic::placement::PlacementError;
use sluice_operator::controllers::topic::plan::DesiredTopic;
use sluice_operator::controllers::topic::status::error_reason;
use sluice_operator::controllers::topic::sync::sync_topic;
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
    let report = sync_topic(admin.as_ref(), &spec).await.expect("create");
    assert!(report.created);
    let state = report.state.expect("state after create");
    assert_eq!(state.partitions(), 3);
    assert_eq!(state.replication_factor(), 1);
    assert_eq!(state.configs, map(&[("retention.ms", "3600000")]));
    assert!(!state.topic_id.is_nil());

    // Nothing to do the second time.
    let again = sync_topic(admin.as_ref(), &spec).await.expect("resync");
    assert!(!again.changed(), "{again:?}");
    assert_eq!(
        again.state.as_ref().map(|s| s.topic_id),
        Some(state.topic_id)
    );

    // Grow.
    let grown = desired(5, 1, &[("retention.ms", "3600000")]);
    let report = sync_topic(admin.as_ref(), &grown).await.expect("grow");
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
    let report = sync_topic(admin.as_ref(), &grown).await.expect("repair");
    assert_eq!(report.configs_set, ["retention.ms"]);
    assert_eq!(report.configs_removed, ["cleanup.policy"]);
    let repaired = admin.describe_topic("orders").await.unwrap().unwrap();
    assert_eq!(repaired.configs, map(&[("retention.ms", "3600000")]));

    // A replication-factor change is detected, not attempted.
    let more_replicas = desired(5, 2, &[("retention.ms", "3600000")]);
    let report = sync_topic(admin.as_ref(), &more_replicas)
        .await
        .expect("rf");
    assert!(!report.changed());
    let change = report.replicas_change.expect("replicas change");
    assert_eq!((change.from, change.to), (1, 2));
    assert_eq!(
        change.target,
        Err(PlacementError::NotEnoughBrokers { rf: 2, brokers: 1 })
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
    let err = sync_topic(admin.as_ref(), &impossible).await.unwrap_err();
    assert_eq!(error_reason(&err), "InvalidReplicationFactor", "{err}");
    let bad_config = DesiredTopic {
        name: "bad-config".into(),
        ..desired(1, 1, &[("no.such.config", "1")])
    };
    let err = sync_topic(admin.as_ref(), &bad_config).await.unwrap_err();
    assert!(err.code().is_some(), "a Kafka error: {err}");

    // Delete, twice (the second finds nothing and is fine).
    admin.delete_topic("orders").await.expect("delete");
    assert_eq!(
        admin.describe_topic("orders").await.expect("describe"),
        None
    );
    admin.delete_topic("orders").await.expect("delete again");
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
