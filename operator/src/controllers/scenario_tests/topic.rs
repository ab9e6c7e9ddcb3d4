//! KafkaTopic scenarios: finalizer, create, drift repair, replica moves (start, progress,
//! done, restart, too few brokers, refused), delete (Delete, Retain, cluster gone),
//! conflict, Kafka error, missing cluster.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use serde_json::{json, Value};

use super::*;
use crate::controllers::reconcile::reconcile;
use crate::crd::KafkaTopic;

const KTS: &str = "/apis/kafka.sluice.dev/v1alpha1/namespaces/ns/kafkatopics";
const KC: &str = "/apis/kafka.sluice.dev/v1alpha1/namespaces/ns/kafkaclusters/demo";

fn kt_path(name: &str) -> String {
    format!("{KTS}/{name}")
}

fn kt_status_path(name: &str) -> String {
    format!("{KTS}/{name}/status")
}

/// A stored KafkaTopic (finalizer already added unless `finalizer` is false).
fn topic(name: &str, spec: Value, created: i64, finalizer: bool) -> KafkaTopic {
    let mut t: KafkaTopic = serde_json::from_value(json!({
        "apiVersion": "kafka.sluice.dev/v1alpha1",
        "kind": "KafkaTopic",
        "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"), "generation": 1},
        "spec": spec,
    }))
    .expect("KafkaTopic");
    t.metadata.creation_timestamp = Some(Time(Timestamp::from_second(created).expect("time")));
    if finalizer {
        t.metadata.finalizers = Some(vec!["kafka.sluice.dev/topic".into()]);
    }
    t
}

fn orders_spec() -> Value {
    json!({"cluster": "demo", "topicName": "orders", "partitions": 3, "replicas": 1,
           "config": {"retention.ms": "1000"}})
}

fn deleting(mut t: KafkaTopic, topic_id: Option<&str>) -> KafkaTopic {
    t.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(1000).expect("time")));
    if let Some(id) = topic_id {
        t.status = Some(serde_json::from_value(json!({"topicId": id})).expect("status"));
    }
    t
}

fn cluster_json() -> Value {
    json!({
        "apiVersion": "kafka.sluice.dev/v1alpha1", "kind": "KafkaCluster",
        "metadata": {"name": "demo", "namespace": "ns", "uid": "kc-uid"},
        "spec": {"replicas": 3, "storage": {"size": "1Gi"}},
        "status": {"bootstrapServers": "demo-kafka-bootstrap.ns.svc:9092", "replicas": 3, "readyReplicas": 3}
    })
}

fn condition<'a>(status: &'a Value, type_: &str) -> Option<&'a Value> {
    status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
}

/// Run one reconcile of `kt` (with `store` as every KafkaTopic) against `steps`.
async fn run(
    kt: &KafkaTopic,
    store: &[KafkaTopic],
    kafka: Arc<FakeKafka>,
    steps: Vec<Step>,
) -> (Result<Action, crate::controllers::Error>, Recorded) {
    let (client, runner) = mock_api(steps);
    let (ctx, _writer) = context(client, kafka, store);
    let result = within(reconcile(Arc::new(kt.clone()), ctx.clone())).await;
    drop(ctx);
    (result, finish(runner).await)
}

fn removes_finalizer(call: &Call) -> bool {
    call.content_type == "application/json-patch+json"
        && call.body.as_array().is_some_and(|ops| {
            ops.iter()
                .any(|op| op["op"] == "remove" && op["path"] == "/metadata/finalizers/0")
        })
}

#[tokio::test]
async fn new_resource_gets_the_finalizer_first() {
    let kt = topic("orders", orders_spec(), 100, false);
    let kafka = FakeKafka::with_brokers(&[0]);
    let kt_json = serde_json::to_value(&kt).unwrap();
    let (result, rec) = run(
        &kt,
        std::slice::from_ref(&kt),
        kafka.clone(),
        vec![step("PATCH", kt_path("orders"), ok(kt_json))],
    )
    .await;
    assert_eq!(result.expect("reconcile"), Action::await_change());
    let patch = &rec.calls[0];
    assert_eq!(patch.content_type, "application/json-patch+json");
    assert!(
        patch
            .body
            .as_array()
            .unwrap()
            .iter()
            .any(|op| op["op"] == "add" && op["value"] == json!(["kafka.sluice.dev/topic"])),
        "{}",
        patch.body
    );
    assert!(
        kafka.calls().is_empty(),
        "nothing touches Kafka before the finalizer is in place"
    );
}

#[tokio::test]
async fn creates_the_topic_and_reports_it() {
    let kt = topic("orders", orders_spec(), 100, true);
    let kt_json = serde_json::to_value(&kt).unwrap();
    let kafka = FakeKafka::with_brokers(&[0]);
    let (result, rec) = run(
        &kt,
        std::slice::from_ref(&kt),
        kafka.clone(),
        vec![
            step("GET", KC, ok(cluster_json())),
            step("PATCH", kt_status_path("orders"), ok(kt_json)),
        ],
    )
    .await;
    assert_eq!(
        result.expect("reconcile"),
        Action::requeue(Duration::from_secs(60))
    );
    let created = kafka
        .lock()
        .topics
        .get("orders")
        .cloned()
        .expect("topic created");
    assert_eq!(created.partitions(), 3);
    assert_eq!(
        created.configs.get("retention.ms").map(String::as_str),
        Some("1000")
    );
    assert_eq!(kafka.calls()[0], "connect demo-kafka-bootstrap.ns.svc:9092");
    let status_call = &rec.calls[1];
    assert!(status_call.is_forced_apply());
    let status = &status_call.body["status"];
    assert_eq!(status["topicName"], "orders");
    assert_eq!(status["topicId"], created.topic_id.to_string());
    assert_eq!(
        (status["partitions"].as_i64(), status["replicas"].as_i64()),
        (Some(3), Some(1))
    );
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(condition(status, "Ready").unwrap()["status"], "True");
    assert_eq!(condition(status, "Ready").unwrap()["reason"], "TopicReady");
    assert_eq!(condition(status, "Progressing").unwrap()["status"], "False");
    assert_eq!(rec.event_reasons(), ["Created"]);
}

#[tokio::test]
async fn grows_partitions_and_puts_drifted_configs_back() {
    let kt = topic("orders", orders_spec(), 100, true);
    let kt_json = serde_json::to_value(&kt).unwrap();
    let kafka = FakeKafka::with_brokers(&[0]);
    kafka.add_topic(
        "orders",
        &[&[0]],
        &[("retention.ms", "5"), ("cleanup.policy", "compact")],
    );
    let (result, rec) = run(
        &kt,
        std::slice::from_ref(&kt),
        kafka.clone(),
        vec![
            step("GET", KC, ok(cluster_json())),
            step("PATCH", kt_status_path("orders"), ok(kt_json)),
        ],
    )
    .await;
    result.expect("reconcile");
    let t = kafka.lock().topics.get("orders").cloned().unwrap();
    assert_eq!(t.partitions(), 3);
    assert_eq!(
        t.configs.into_iter().collect::<Vec<_>>(),
        [("retention.ms".to_string(), "1000".to_string())]
    );
    assert_eq!(
        rec.event_reasons(),
        ["PartitionsIncreased", "ConfigsUpdated"]
    );
    assert_eq!(rec.events[0]["note"], "topic orders: 1 -> 3 partitions");
    assert_eq!(
        rec.events[1]["note"],
        "topic orders: set retention.ms; removed cleanup.policy"
    );
    assert!(kafka.calls().contains(&"grow orders 3".to_string()));
}

/// One ordinary reconcile of `kt` (cluster found, status applied); the applied status.
async fn sync_once(kt: &KafkaTopic, kafka: Arc<FakeKafka>) -> (Action, Value, Vec<String>) {
    let kt_json = serde_json::to_value(kt).unwrap();
    let (result, rec) = run(
        kt,
        std::slice::from_ref(kt),
        kafka,
        vec![
            step("GET", KC, ok(cluster_json())),
            step("PATCH", kt_status_path("orders"), ok(kt_json)),
        ],
    )
    .await;
    let action = result.expect("reconcile");
    let status = rec.calls[1].body["status"].clone();
    (action, status, rec.event_reasons())
}

/// `kt` as stored after `status` was applied.
fn with_status(kt: &KafkaTopic, status: &Value) -> KafkaTopic {
    let mut kt = kt.clone();
    kt.status = Some(serde_json::from_value(status.clone()).expect("status"));
    kt
}

fn rf3_spec() -> Value {
    json!({"cluster": "demo", "topicName": "orders", "partitions": 3, "replicas": 3})
}

#[tokio::test]
async fn replication_factor_change_moves_replicas_reports_progress_and_completes() {
    let kt = topic("orders", rf3_spec(), 100, true);
    let kafka = FakeKafka::with_brokers(&[0, 1, 2]);
    kafka.add_topic("orders", &[&[0], &[1], &[2]], &[]);

    // 1. The move starts: every partition gets a 3-replica target over the live brokers.
    let (action, status, events) = sync_once(&kt, kafka.clone()).await;
    assert_eq!(action, Action::requeue(Duration::from_secs(5)));
    assert!(
        kafka
            .calls()
            .contains(&"reassign orders 0=[0, 1, 2] 1=[1, 2, 0] 2=[2, 0, 1]".to_string()),
        "{:?}",
        kafka.calls()
    );
    assert_eq!(
        status["operation"],
        json!({"kind": "ReplicaChange", "phase": "Moving", "target": 3,
               "progress": "0 of 3 partitions done",
               "message": "topic orders: replication factor 1 -> 3, moving replicas (0 of 3 partitions done)"})
    );
    let progressing = condition(&status, "Progressing").unwrap();
    assert_eq!(
        (&progressing["status"], &progressing["reason"]),
        (&json!("True"), &json!("ReplicasMoving"))
    );
    assert_eq!(status["replicas"], 1);
    assert_eq!(events, ["ReplicasMoving"]);

    // 2. One partition done: progress shows, nothing is sent again.
    kafka.complete_reassignment("orders", 0);
    kafka.lock().calls.clear();
    let kt = with_status(&kt, &status);
    let (action, status, events) = sync_once(&kt, kafka.clone()).await;
    assert_eq!(action, Action::requeue(Duration::from_secs(5)));
    assert!(
        !kafka.calls().iter().any(|c| c.starts_with("reassign")),
        "a running move is not restarted: {:?}",
        kafka.calls()
    );
    assert_eq!(status["operation"]["progress"], "1 of 3 partitions done");
    assert_eq!(
        status["replicas"], 1,
        "the old factor until the move is done"
    );
    assert!(events.is_empty(), "{events:?}");

    // 3. All done: the operation goes, status shows the new factor, Ready.
    kafka.complete_reassignment("orders", 1);
    kafka.complete_reassignment("orders", 2);
    let kt = with_status(&kt, &status);
    let (action, status, events) = sync_once(&kt, kafka.clone()).await;
    assert_eq!(action, Action::requeue(Duration::from_secs(60)));
    assert!(status.get("operation").is_none(), "{status}");
    assert_eq!(status["replicas"], 3);
    assert_eq!(condition(&status, "Ready").unwrap()["reason"], "TopicReady");
    assert_eq!(
        condition(&status, "Progressing").unwrap()["status"],
        "False"
    );
    assert_eq!(events, ["ReplicasChanged"]);
    assert_eq!(kafka.lock().topics["orders"].replication_factor(), 3);
    assert!(kafka.lock().topics["orders"]
        .assignment
        .values()
        .all(|r| r.len() == 3));
}

#[tokio::test]
async fn an_operator_restart_resumes_following_a_running_move() {
    // No status at all (e.g. lost), but the broker holds a running reassignment.
    let kt = topic("orders", rf3_spec(), 100, true);
    let kafka = FakeKafka::with_brokers(&[0, 1, 2]);
    kafka.add_topic("orders", &[&[0], &[1], &[2]], &[]);
    {
        let mut s = kafka.lock();
        FakeKafka::start_reassignment(&mut s, "orders", 1, &[1, 2, 0]);
    }
    let (action, status, events) = sync_once(&kt, kafka.clone()).await;
    assert_eq!(action, Action::requeue(Duration::from_secs(5)));
    assert_eq!(status["operation"]["phase"], "Moving");
    assert_eq!(status["operation"]["progress"], "0 of 3 partitions done");
    assert!(
        !kafka.calls().iter().any(|c| c.starts_with("reassign")),
        "waits for the running move before starting another: {:?}",
        kafka.calls()
    );
    assert!(events.is_empty(), "{events:?}");
}

#[tokio::test]
async fn too_few_live_brokers_blocks_the_change_and_sends_nothing() {
    let kt = topic("orders", rf3_spec(), 100, true);
    let kafka = FakeKafka::with_brokers(&[0]);
    kafka.add_topic("orders", &[&[0], &[0], &[0]], &[]);
    let (action, status, events) = sync_once(&kt, kafka.clone()).await;
    assert_eq!(action, Action::requeue(Duration::from_secs(60)));
    let ready = condition(&status, "Ready").unwrap();
    assert_eq!(
        (&ready["status"], &ready["reason"]),
        (&json!("False"), &json!("NotEnoughBrokers"))
    );
    let message = ready["message"].as_str().unwrap();
    assert!(
        message.contains("replication factor 1 -> 3 needs 3 live brokers, the cluster has 1"),
        "{message}"
    );
    assert_eq!(status["operation"]["phase"], "Blocked");
    assert_eq!(status["replicas"], 1);
    assert_eq!(events, ["NotEnoughBrokers"]);
    assert!(
        !kafka.calls().iter().any(|c| c.starts_with("reassign")),
        "{:?}",
        kafka.calls()
    );

    // Still blocked next time: no second Warning.
    let kt = with_status(&kt, &status);
    let (_, _, events) = sync_once(&kt, kafka.clone()).await;
    assert!(events.is_empty(), "{events:?}");
}

#[tokio::test]
async fn a_refused_move_names_the_kafka_error() {
    let kt = topic("orders", rf3_spec(), 100, true);
    let kt_json = serde_json::to_value(&kt).unwrap();
    // Broker 2 is live in the metadata but refused by the controller (e.g. it was just
    // unregistered).
    let kafka = FakeKafka::with_brokers(&[0, 1, 2]);
    kafka.add_topic("orders", &[&[0], &[1], &[2]], &[]);
    kafka.lock().refuse_broker = Some(2);
    let (result, rec) = run(
        &kt,
        std::slice::from_ref(&kt),
        kafka.clone(),
        vec![
            step("GET", KC, ok(cluster_json())),
            step("PATCH", kt_status_path("orders"), ok(kt_json)),
        ],
    )
    .await;
    assert_eq!(result.unwrap_err().kind(), "kafka");
    let status = &rec.calls[1].body["status"];
    let ready = condition(status, "Ready").unwrap();
    assert_eq!(ready["reason"], "InvalidReplicaAssignment");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("Kafka error 39 InvalidReplicaAssignment (reassign orders-0)"),
        "{}",
        ready["message"]
    );
    assert_eq!(rec.event_reasons(), ["InvalidReplicaAssignment"]);
}

#[tokio::test]
async fn delete_removes_the_topic_then_the_finalizer() {
    let kt = deleting(topic("orders", orders_spec(), 100, true), Some("id"));
    let kt_json = serde_json::to_value(&kt).unwrap();
    let kafka = FakeKafka::with_brokers(&[0]);
    kafka.add_topic("orders", &[&[0]], &[]);
    kafka.add_topic("unmanaged", &[&[0]], &[]);
    let (result, rec) = run(
        &kt,
        std::slice::from_ref(&kt),
        kafka.clone(),
        vec![
            step("GET", KC, ok(cluster_json())),
            step("PATCH", kt_path("orders"), ok(kt_json)),
        ],
    )
    .await;
    assert_eq!(result.expect("reconcile"), Action::await_change());
    assert!(removes_finalizer(&rec.calls[1]), "{:?}", rec.calls[1]);
    let topics: Vec<String> = kafka.lock().topics.keys().cloned().collect();
    assert_eq!(
        topics,
        ["unmanaged"],
        "topics without a resource are left alone"
    );
    assert_eq!(rec.event_reasons(), ["Deleted"]);
}

#[tokio::test]
async fn retain_keeps_the_topic() {
    let mut spec = orders_spec();
    spec["deletionPolicy"] = json!("Retain");
    let kt = deleting(topic("orders", spec, 100, true), Some("id"));
    let kt_json = serde_json::to_value(&kt).unwrap();
    let kafka = FakeKafka::with_brokers(&[0]);
    kafka.add_topic("orders", &[&[0]], &[]);
    let (result, rec) = run(
        &kt,
        std::slice::from_ref(&kt),
        kafka.clone(),
        vec![step("PATCH", kt_path("orders"), ok(kt_json))],
    )
    .await;
    result.expect("reconcile");
    assert!(removes_finalizer(&rec.calls[0]));
    assert!(kafka.lock().topics.contains_key("orders"));
    assert!(kafka.calls().is_empty());
    assert_eq!(rec.event_reasons(), ["Retained"]);
}

#[tokio::test]
async fn finalizer_lets_go_when_the_cluster_is_gone() {
    let kt = deleting(topic("orders", orders_spec(), 100, true), Some("id"));
    let kt_json = serde_json::to_value(&kt).unwrap();
    let kafka = FakeKafka::with_brokers(&[0]);
    let (result, rec) = run(
        &kt,
        std::slice::from_ref(&kt),
        kafka.clone(),
        vec![
            step("GET", KC, not_found()),
            step("PATCH", kt_path("orders"), ok(kt_json)),
        ],
    )
    .await;
    result.expect("reconcile");
    assert!(removes_finalizer(&rec.calls[1]));
    assert!(
        kafka.calls().is_empty(),
        "no Kafka call for a cluster that is gone"
    );
}

#[tokio::test]
async fn later_resource_for_the_same_topic_gets_conflict_and_never_touches_it() {
    let first = topic("first", orders_spec(), 100, true);
    let mut spec = orders_spec();
    spec["partitions"] = json!(12);
    spec["config"] = json!({"retention.ms": "1"});
    let second = topic("second", spec, 200, true);
    let store = [first.clone(), second.clone()];
    let kafka = FakeKafka::with_brokers(&[0]);
    kafka.add_topic("orders", &[&[0], &[0], &[0]], &[("retention.ms", "1000")]);
    let second_json = serde_json::to_value(&second).unwrap();
    let (result, rec) = run(
        &second,
        &store,
        kafka.clone(),
        vec![step(
            "PATCH",
            kt_status_path("second"),
            ok(second_json.clone()),
        )],
    )
    .await;
    assert_eq!(
        result.expect("reconcile"),
        Action::requeue(Duration::from_secs(60))
    );
    let status = &rec.calls[0].body["status"];
    let conflict = condition(status, "Conflict").expect("Conflict condition");
    assert_eq!(conflict["status"], "True");
    assert!(conflict["message"]
        .as_str()
        .unwrap()
        .contains("managed by KafkaTopic first"));
    assert_eq!(condition(status, "Ready").unwrap()["reason"], "Conflict");
    assert_eq!(rec.event_reasons(), ["Conflict"]);
    assert!(
        kafka.calls().is_empty(),
        "the conflicting resource never talks to Kafka"
    );

    // Deleting it releases the finalizer and leaves the topic to its owner.
    let gone = deleting(second, Some("id"));
    let (result, rec) = run(
        &gone,
        &[first, gone.clone()],
        kafka.clone(),
        vec![step("PATCH", kt_path("second"), ok(second_json))],
    )
    .await;
    result.expect("reconcile");
    assert!(removes_finalizer(&rec.calls[0]));
    assert_eq!(kafka.lock().topics["orders"].partitions(), 3);
    assert!(kafka.calls().is_empty());
}

#[tokio::test]
async fn kafka_errors_become_conditions_and_are_retried() {
    let kt = topic("orders", orders_spec(), 100, true);
    let kt_json = serde_json::to_value(&kt).unwrap();
    let kafka = FakeKafka::with_brokers(&[0]);
    kafka.lock().fail_create = Some(38);
    let (result, rec) = run(
        &kt,
        std::slice::from_ref(&kt),
        kafka,
        vec![
            step("GET", KC, ok(cluster_json())),
            step("PATCH", kt_status_path("orders"), ok(kt_json)),
        ],
    )
    .await;
    let err = result.unwrap_err();
    assert_eq!(err.kind(), "kafka");
    let status = &rec.calls[1].body["status"];
    let ready = condition(status, "Ready").unwrap();
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "InvalidReplicationFactor");
    assert!(ready["message"]
        .as_str()
        .unwrap()
        .contains("Kafka error 38 InvalidReplicationFactor"));
    assert_eq!(
        condition(status, "Progressing").unwrap()["reason"],
        "Retrying"
    );
    assert_eq!(rec.event_reasons(), ["InvalidReplicationFactor"]);
}

#[tokio::test]
async fn missing_cluster_is_waited_for() {
    let kt = topic("orders", orders_spec(), 100, true);
    let kt_json = serde_json::to_value(&kt).unwrap();
    let kafka = FakeKafka::with_brokers(&[0]);
    let (result, rec) = run(
        &kt,
        std::slice::from_ref(&kt),
        kafka.clone(),
        vec![
            step("GET", KC, not_found()),
            step("PATCH", kt_status_path("orders"), ok(kt_json)),
        ],
    )
    .await;
    assert_eq!(
        result.expect("reconcile"),
        Action::requeue(Duration::from_secs(30))
    );
    let status = &rec.calls[1].body["status"];
    assert_eq!(
        condition(status, "Ready").unwrap()["reason"],
        "ClusterNotFound"
    );
    assert!(kafka.calls().is_empty());
}

#[tokio::test]
async fn deleting_a_resource_that_never_synced_leaves_kafka_alone() {
    // E.g. created for a topic that already existed, then deleted before the first sync.
    let kt = deleting(topic("orders", orders_spec(), 100, true), None);
    let kt_json = serde_json::to_value(&kt).unwrap();
    let kafka = FakeKafka::with_brokers(&[0]);
    kafka.add_topic("orders", &[&[0]], &[]);
    let (result, rec) = run(
        &kt,
        std::slice::from_ref(&kt),
        kafka.clone(),
        vec![
            step("GET", KC, ok(cluster_json())),
            step("PATCH", kt_path("orders"), ok(kt_json)),
        ],
    )
    .await;
    result.expect("reconcile");
    assert!(removes_finalizer(&rec.calls[1]));
    assert!(kafka.lock().topics.contains_key("orders"));
    assert!(kafka.calls().is_empty());
}
