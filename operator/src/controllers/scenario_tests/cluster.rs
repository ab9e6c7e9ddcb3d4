//! KafkaCluster scenarios: create, spec change, scale, pause, invalid spec, API error.

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;
use serde_json::{json, Value};

use super::*;
use crate::builders::{config_hash, server_properties};
use crate::controllers::reconcile::{error_policy, reconcile};
use crate::controllers::Error;
use crate::crd::KafkaCluster;
use crate::validate::tests::{cluster, CLUSTER_ID};
use crate::validate::validate_cluster;

const KC: &str = "/apis/kafka.sluice.dev/v1alpha1/namespaces/ns/kafkaclusters/demo";
const STS: &str = "/apis/apps/v1/namespaces/ns/statefulsets/demo-kafka";
const CM: &str = "/api/v1/namespaces/ns/configmaps/demo-kafka-config";
const SVC: &str = "/api/v1/namespaces/ns/services";
const PDB: &str = "/apis/policy/v1/namespaces/ns/poddisruptionbudgets/demo-kafka";
const PODS: &str = "/api/v1/namespaces/ns/pods";

fn status_path() -> String {
    format!("{KC}/status")
}

/// A StatefulSet as the API returns it: the applied object plus a status.
fn sts_with_status(
    body: &Value,
    generation: i64,
    observed: i64,
    replicas: i32,
    ready: i32,
    updated: i32,
) -> Value {
    let mut v = body.clone();
    v["metadata"]["generation"] = json!(generation);
    v["status"] = json!({
        "observedGeneration": observed,
        "replicas": replicas,
        "readyReplicas": ready,
        "updatedReplicas": updated,
        "currentRevision": "r1",
        "updateRevision": if updated == replicas { "r1" } else { "r2" },
    });
    v
}

/// An existing StatefulSet with `replicas`, all ready.
fn existing_sts(replicas: i32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "demo-kafka", "namespace": "ns", "generation": 1},
        "spec": {"replicas": replicas, "serviceName": "demo-kafka-brokers",
                 "selector": {"matchLabels": {"app.kubernetes.io/name": "sluice-broker"}},
                 "template": {}},
        "status": {"observedGeneration": 1, "replicas": replicas, "readyReplicas": replicas,
                   "updatedReplicas": replicas, "currentRevision": "r1", "updateRevision": "r1"}
    })
}

/// The listing of the external listeners' Services: none.
fn no_listener_services() -> Step {
    step(
        "GET",
        SVC,
        ok(json!({"apiVersion": "v1", "kind": "ServiceList", "metadata": {}, "items": []})),
    )
}

fn pod_list(ready: &[(i32, bool)]) -> Value {
    let items: Vec<Value> = ready
        .iter()
        .map(|(i, r)| {
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("demo-kafka-{i}"), "namespace": "ns"},
                "status": {"conditions": [{"type": "Ready", "status": if *r { "True" } else { "False" }}]}
            })
        })
        .collect();
    json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})
}

fn with_status(mut kc: KafkaCluster, status: Value) -> KafkaCluster {
    kc.status = Some(serde_json::from_value(status).expect("status"));
    kc
}

fn applied_objects(sts_reply: impl FnOnce(&Value) -> (u16, Value) + Send + 'static) -> Vec<Step> {
    vec![
        step("PATCH", CM, echo()),
        step("PATCH", format!("{SVC}/demo-kafka-brokers"), echo()),
        step("PATCH", format!("{SVC}/demo-kafka-bootstrap"), echo()),
        step("PATCH", STS, sts_reply),
        step("PATCH", PDB, echo()),
    ]
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

fn calls_to<'a>(rec: &'a Recorded, path: &str) -> Vec<&'a Call> {
    rec.calls.iter().filter(|c| c.path == path).collect()
}

#[tokio::test]
async fn create_applies_every_object_and_writes_status() {
    let kc = cluster(json!({"replicas": 3, "storage": {"size": "10Gi"}}));
    let kc_json = serde_json::to_value(&kc).unwrap();
    let mut steps = vec![
        // No status.clusterId: look for one in an existing ConfigMap, then store a new one.
        step("GET", CM, not_found()),
        step("PATCH", status_path(), ok(kc_json.clone())),
        step("GET", STS, not_found()),
        step("GET", PODS, ok(pod_list(&[]))),
        no_listener_services(),
    ];
    steps.extend(applied_objects(|b| {
        (200, sts_with_status(b, 1, 1, 0, 0, 0))
    }));
    steps.push(step("PATCH", status_path(), ok(kc_json)));
    let (client, runner) = mock_api(steps);
    let kafka = FakeKafka::with_brokers(&[]);
    let (ctx, _writer) = context(client, kafka.clone(), &[]);

    let action = within(reconcile(Arc::new(kc), ctx.clone()))
        .await
        .expect("reconcile");
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(30)),
        "not settled yet"
    );
    drop(ctx);
    let rec = finish(runner).await;

    // The cluster id is stored first, then used in the config.
    let first_status = &rec.calls[1].body["status"];
    let id = first_status["clusterId"]
        .as_str()
        .expect("cluster id")
        .to_string();
    assert_eq!(id.len(), 22);
    assert!(
        rec.calls[1].is_forced_apply(),
        "status is server-side applied"
    );

    for path in [CM, STS, PDB] {
        let call = calls_to(&rec, path)
            .into_iter()
            .find(|c| c.method == "PATCH")
            .expect(path);
        assert!(
            call.is_forced_apply(),
            "{path} applied with force by sluice-operator"
        );
        assert_eq!(
            call.body["metadata"]["ownerReferences"][0]["uid"],
            crate::validate::tests::UID
        );
        assert_eq!(
            call.body["metadata"]["ownerReferences"][0]["controller"],
            true
        );
    }
    let cm = &calls_to(&rec, CM)[1].body;
    let props = cm["data"]["server.properties"]
        .as_str()
        .expect("properties");
    assert!(props.contains(&format!("cluster.id={id}\n")), "{props}");
    let sts = &calls_to(&rec, STS)[1].body;
    assert_eq!(sts["spec"]["replicas"], 3);
    assert_eq!(
        sts["spec"]["template"]["metadata"]["annotations"]["kafka.sluice.dev/config-hash"],
        config_hash(props)
    );
    assert_eq!(
        sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"],
        "10Gi"
    );

    let status = &rec.calls.last().expect("status").body["status"];
    assert_eq!(status["clusterId"], id.as_str());
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(
        status["bootstrapServers"],
        "demo-kafka-bootstrap.ns.svc:9093"
    );
    assert_eq!(
        status["listeners"],
        json!([
            {"name": "local", "type": "forwarding", "bootstrapServers": "localhost:9092"},
            {"name": "internal", "type": "internal", "bootstrapServers": "demo-kafka-bootstrap.ns.svc:9093"},
        ])
    );
    assert_eq!(
        status["labelSelector"],
        "app.kubernetes.io/instance=demo,app.kubernetes.io/name=sluice-broker"
    );
    assert_eq!(status["replicas"], 0);
    assert_eq!(condition(status, "Ready")["status"], "False");
    assert_eq!(condition(status, "Ready")["reason"], "BrokersNotReady");
    assert_eq!(condition(status, "Progressing")["status"], "True");
    assert_eq!(condition(status, "Degraded")["status"], "False");
    assert_eq!(status["brokers"].as_array().map(Vec::len), Some(3));
    assert!(
        status.get("partitions").is_none(),
        "no broker ready: metadata not read"
    );
    assert_eq!(rec.event_reasons(), ["Created"]);
    assert!(
        kafka.calls().is_empty(),
        "no Kafka call before a broker is ready"
    );
}

#[tokio::test]
async fn spec_change_rolls_the_brokers_and_reports_partition_health() {
    let kc = cluster(json!({"replicas": 3, "storage": {"size": "10Gi"},
                            "config": {"log.retention.ms": "1000"}}));
    let mut kc = with_status(
        kc,
        json!({"clusterId": CLUSTER_ID, "replicas": 3, "readyReplicas": 3}),
    );
    kc.metadata.generation = Some(2);
    let kc_json = serde_json::to_value(&kc).unwrap();
    let mut steps = vec![
        step("GET", STS, ok(existing_sts(3))),
        step(
            "GET",
            PODS,
            ok(pod_list(&[(0, true), (1, false), (2, true)])),
        ),
        no_listener_services(),
    ];
    // The StatefulSet controller has seen the new template and is rolling.
    steps.extend(applied_objects(|b| {
        (200, sts_with_status(b, 2, 2, 3, 2, 1))
    }));
    steps.push(step("PATCH", status_path(), ok(kc_json)));
    let (client, runner) = mock_api(steps);
    let kafka = FakeKafka::with_brokers(&[0, 1, 2]);
    kafka.add_topic("orders", &[&[0, 1, 2], &[1, 2, 0]], &[]);
    kafka
        .lock()
        .health
        .insert(("orders".into(), 1), (1, vec![1]));
    let (ctx, _writer) = context(client, kafka.clone(), &[]);

    within(reconcile(Arc::new(kc.clone()), ctx.clone()))
        .await
        .expect("reconcile");
    drop(ctx);
    let rec = finish(runner).await;

    let view = validate_cluster(&kc, "sluice:test", CLUSTER_ID).expect("valid");
    let props = server_properties(&view);
    assert!(props.contains("log.retention.ms=1000\n"));
    assert_eq!(
        calls_to(&rec, CM)[0].body["data"]["server.properties"],
        props.as_str()
    );
    let sts = &calls_to(&rec, STS)[1].body;
    assert_eq!(
        sts["spec"]["template"]["metadata"]["annotations"]["kafka.sluice.dev/config-hash"],
        config_hash(&props),
        "the new config hash rolls the pods"
    );
    let status = &rec.calls.last().unwrap().body["status"];
    assert_eq!(status["observedGeneration"], 2);
    assert_eq!(condition(status, "Progressing")["reason"], "RollingUpdate");
    assert_eq!(
        condition(status, "Progressing")["message"],
        "1/3 brokers updated, 2 ready"
    );
    assert_eq!(
        status["partitions"],
        json!({"total": 2, "underReplicated": 1, "offline": 0})
    );
    assert_eq!(
        condition(status, "Degraded")["reason"],
        "UnderReplicatedPartitions"
    );
    let brokers: Vec<bool> = status["brokers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["ready"].as_bool().unwrap())
        .collect();
    assert_eq!(brokers, [true, false, true]);
    assert_eq!(
        kafka.calls(),
        [
            "connect demo-kafka-bootstrap.ns.svc:9093",
            "list-all-reassignments",
            "metadata",
            "list-all-reassignments",
            "describe-quorum"
        ]
    );
    assert!(rec.event_reasons().is_empty(), "{:?}", rec.event_reasons());
}

/// One reconcile of a cluster whose spec asks for `to` brokers while the StatefulSet runs
/// `from`, with `status` recorded and the pods of `pods` existing.
async fn scale(
    from: i32,
    to: i32,
    status: Value,
    pods: &[i32],
    kafka: Arc<FakeKafka>,
) -> (Recorded, Value) {
    let kc = cluster(json!({"replicas": to, "storage": {"size": "1Gi"}}));
    let mut status = status;
    status["clusterId"] = json!(CLUSTER_ID);
    let kc = with_status(kc, status);
    let kc_json = serde_json::to_value(&kc).unwrap();
    let ready: Vec<(i32, bool)> = pods.iter().map(|&p| (p, true)).collect();
    let mut steps = vec![
        step("GET", STS, ok(existing_sts(from))),
        step("GET", PODS, ok(pod_list(&ready))),
        no_listener_services(),
    ];
    steps.extend(applied_objects(|b| {
        let n = b["spec"]["replicas"].as_i64().unwrap() as i32;
        (200, sts_with_status(b, 2, 2, n, n, n))
    }));
    steps.push(step("PATCH", status_path(), ok(kc_json)));
    let (client, runner) = mock_api(steps);
    let (ctx, _writer) = context(client, kafka, &[]);
    within(reconcile(Arc::new(kc), ctx.clone()))
        .await
        .expect("reconcile");
    drop(ctx);
    let rec = finish(runner).await;
    let sts = calls_to(&rec, STS)[1].body.clone();
    (rec, sts)
}

fn last_status(rec: &Recorded) -> Value {
    rec.calls.last().unwrap().body["status"].clone()
}

#[tokio::test]
async fn scale_up_grows_then_rebalances_onto_the_new_brokers() {
    let kafka = FakeKafka::with_brokers(&[0, 1, 2]);
    kafka.add_topic("orders", &[&[0, 1], &[1, 2], &[2, 0], &[0, 1]], &[]);
    let (rec, sts) = scale(3, 5, json!({}), &[0, 1, 2], kafka.clone()).await;
    assert_eq!(sts["spec"]["replicas"], 5);
    assert_eq!(rec.events[0]["note"], "brokers 3 -> 5");
    let status = last_status(&rec);
    assert_eq!(status["operation"]["kind"], "ScaleUp");
    assert_eq!(status["operation"]["phase"], "AddingBrokers");
    assert_eq!(condition(&status, "Progressing")["reason"], "ScaleUp");
    assert_eq!(
        rec.event_reasons(),
        ["Scaled", "ScaleUpAddingBrokers", "ClusterReady"],
        "the mocked StatefulSet reports every broker ready at once"
    );

    // The new brokers joined: replicas move onto them.
    kafka.lock().brokers = vec![0, 1, 2, 3, 4];
    let (rec, sts) = scale(5, 5, status, &[0, 1, 2, 3, 4], kafka.clone()).await;
    assert_eq!(sts["spec"]["replicas"], 5);
    let status = last_status(&rec);
    assert_eq!(status["operation"]["phase"], "Rebalancing");
    let moving = kafka.lock().reassignments.clone();
    assert!(!moving.is_empty(), "{:?}", kafka.calls());
    for r in moving.values() {
        assert!(!r.adding.is_empty());
        assert!(
            r.adding.iter().all(|b| *b >= 3),
            "onto the new brokers: {r:?}"
        );
    }
    assert_eq!(rec.event_reasons(), ["ScaleUpRebalancing"]);

    // The moves finish; the layout is balanced and the operation ends.
    for (t, p) in moving.keys() {
        kafka.complete_reassignment(t, *p);
    }
    let (rec, _) = scale(5, 5, status, &[0, 1, 2, 3, 4], kafka.clone()).await;
    assert!(
        last_status(&rec).get("operation").is_none(),
        "{:?}",
        last_status(&rec)
    );
    assert_eq!(rec.event_reasons(), ["ScaleUpComplete"]);
}

#[tokio::test]
async fn scale_down_drains_then_shrinks_then_unregisters() {
    let kafka = FakeKafka::with_brokers(&[0, 1, 2, 3, 4]);
    kafka.add_topic("orders", &[&[0, 4], &[1, 2], &[3, 1]], &[]);
    let all = [0, 1, 2, 3, 4];
    let (rec, sts) = scale(5, 3, json!({}), &all, kafka.clone()).await;
    assert_eq!(
        sts["spec"]["replicas"], 5,
        "brokers 3 and 4 still hold replicas"
    );
    let status = last_status(&rec);
    assert_eq!(status["operation"]["kind"], "ScaleDown");
    assert_eq!(status["operation"]["phase"], "Draining");
    assert_eq!(status["operation"]["fromReplicas"], 5);
    assert_eq!(status["operation"]["toReplicas"], 3);
    let moving = kafka.lock().reassignments.clone();
    assert_eq!(moving.len(), 2, "partitions 0 and 2 move");
    for r in moving.values() {
        assert!(r.adding.iter().all(|b| *b < 3));
        assert!(r.removing.iter().all(|b| *b >= 3));
    }

    // Still moving: nothing else happens.
    let (_, sts) = scale(5, 3, status.clone(), &all, kafka.clone()).await;
    assert_eq!(sts["spec"]["replicas"], 5);
    for (t, p) in moving.keys() {
        kafka.complete_reassignment(t, *p);
    }
    // Drained: the StatefulSet shrinks.
    let (rec, sts) = scale(5, 3, status, &all, kafka.clone()).await;
    assert_eq!(sts["spec"]["replicas"], 3);
    let status = last_status(&rec);
    assert_eq!(status["operation"]["phase"], "RemovingBrokers");
    // The pods stop; the brokers are unregistered and the operation ends.
    let (rec, _) = scale(3, 3, status.clone(), &[0, 1, 2, 3], kafka.clone()).await;
    assert_eq!(last_status(&rec)["operation"]["phase"], "RemovingBrokers");
    assert!(!kafka.calls().iter().any(|c| c.starts_with("unregister")));
    let (rec, _) = scale(3, 3, status, &[0, 1, 2], kafka.clone()).await;
    assert!(last_status(&rec).get("operation").is_none());
    let calls = kafka.calls();
    assert!(
        calls.contains(&"unregister 3".to_string()) && calls.contains(&"unregister 4".to_string())
    );
    assert_eq!(rec.event_reasons(), ["ScaleDownComplete"]);
}

#[tokio::test]
async fn scale_down_below_a_replication_factor_is_refused() {
    let kafka = FakeKafka::with_brokers(&[0, 1, 2]);
    kafka.add_topic("orders", &[&[0, 1, 2]], &[]);
    let (rec, sts) = scale(3, 2, json!({}), &[0, 1, 2], kafka.clone()).await;
    assert_eq!(sts["spec"]["replicas"], 3);
    let status = last_status(&rec);
    let degraded = condition(&status, "Degraded");
    assert_eq!(degraded["reason"], "ScaleDownRefused");
    let message = degraded["message"].as_str().unwrap();
    assert!(
        message.contains("topic orders has replication factor 3"),
        "{message}"
    );
    assert_eq!(status["operation"]["phase"], "Refused");
    assert!(kafka.lock().reassignments.is_empty());
    assert_eq!(rec.event_reasons(), ["ScaleDownRefused", "ClusterReady"]);
}

#[tokio::test]
async fn paused_cluster_only_reports() {
    let kc = cluster(json!({"replicas": 3, "storage": {"size": "1Gi"}, "paused": true}));
    let kc = with_status(
        kc,
        json!({"clusterId": CLUSTER_ID, "observedGeneration": 1, "readyReplicas": 3, "conditions": [
            {"type": "Ready", "status": "True", "reason": "AllBrokersReady", "message": "3/3",
             "lastTransitionTime": "2026-01-01T00:00:00Z"}]}),
    );
    let kc_json = serde_json::to_value(&kc).unwrap();
    let (client, runner) = mock_api(vec![step("PATCH", status_path(), ok(kc_json))]);
    let kafka = FakeKafka::with_brokers(&[0]);
    let (ctx, _writer) = context(client, kafka.clone(), &[]);
    let action = within(reconcile(Arc::new(kc.clone()), ctx.clone()))
        .await
        .expect("reconcile");
    assert_eq!(action, Action::await_change());
    drop(ctx);
    let rec = finish(runner).await;
    let status = &rec.calls[0].body["status"];
    assert_eq!(condition(status, "Progressing")["reason"], "Paused");
    assert_eq!(
        condition(status, "Ready")["status"],
        "True",
        "kept as it was"
    );
    assert_eq!(rec.event_reasons(), ["Paused"]);
    assert!(kafka.calls().is_empty());

    // Already reported: nothing at all happens.
    let paused: Value = rec.calls[0].body["status"].clone();
    let kc = with_status(kc, paused);
    let (client, runner) = mock_api(vec![]);
    let (ctx, _writer) = context(client, kafka, &[]);
    within(reconcile(Arc::new(kc), ctx.clone()))
        .await
        .expect("reconcile");
    drop(ctx);
    let rec = finish(runner).await;
    assert!(rec.calls.is_empty() && rec.events.is_empty());
}

#[tokio::test]
async fn invalid_spec_is_reported_and_nothing_applied() {
    let kc = cluster(json!({"replicas": 1, "storage": {"size": "lots"}}));
    let kc = with_status(kc, json!({"clusterId": CLUSTER_ID}));
    let kc_json = serde_json::to_value(&kc).unwrap();
    let (client, runner) = mock_api(vec![step("PATCH", status_path(), ok(kc_json))]);
    let (ctx, _writer) = context(client, FakeKafka::with_brokers(&[]), &[]);
    let action = within(reconcile(Arc::new(kc), ctx.clone()))
        .await
        .expect("reconcile");
    assert_eq!(
        action,
        Action::await_change(),
        "only a spec change can help"
    );
    drop(ctx);
    let rec = finish(runner).await;
    let status = &rec.calls[0].body["status"];
    let ready = condition(status, "Ready");
    assert_eq!(ready["reason"], "InvalidSpec");
    assert!(ready["message"]
        .as_str()
        .unwrap()
        .contains("spec.storage.size `lots`"));
    assert_eq!(condition(status, "Degraded")["status"], "True");
    assert_eq!(rec.event_reasons(), ["InvalidSpec"]);
}

#[tokio::test]
async fn api_error_is_surfaced_in_status_and_retried_with_backoff() {
    let kc = cluster(json!({"replicas": 3, "storage": {"size": "1Gi"}}));
    let kc = with_status(kc, json!({"clusterId": CLUSTER_ID}));
    let kc_json = serde_json::to_value(&kc).unwrap();
    let steps = vec![
        step("GET", STS, not_found()),
        step("GET", PODS, ok(pod_list(&[]))),
        no_listener_services(),
        step("PATCH", CM, echo()),
        step("PATCH", format!("{SVC}/demo-kafka-brokers"), echo()),
        step("PATCH", format!("{SVC}/demo-kafka-bootstrap"), echo()),
        step(
            "PATCH",
            STS,
            fail(
                422,
                "Invalid",
                "StatefulSet.apps \"demo-kafka\" is invalid: spec: Forbidden",
            ),
        ),
        step("PATCH", status_path(), ok(kc_json)),
    ];
    let (client, runner) = mock_api(steps);
    let (ctx, _writer) = context(client, FakeKafka::with_brokers(&[]), &[]);
    let kc = Arc::new(kc);
    let err = within(reconcile(kc.clone(), ctx.clone()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Kube { .. }), "{err}");
    assert_eq!(err.kind(), "kube");
    assert_eq!(
        error_policy(kc.clone(), &err, ctx.clone()),
        Action::requeue(Duration::from_secs(2))
    );
    assert_eq!(
        error_policy(kc, &err, ctx.clone()),
        Action::requeue(Duration::from_secs(4)),
        "backoff grows"
    );
    let metrics = ctx.metrics.encode();
    assert!(
        metrics.contains(
            "sluice_operator_reconcile_errors_total{controller=\"kafkacluster\",kind=\"kube\"} 1"
        ),
        "{metrics}"
    );
    drop(ctx);
    let rec = finish(runner).await;
    let status = &rec.calls.last().unwrap().body["status"];
    let ready = condition(status, "Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "ApplyFailed");
    let message = ready["message"].as_str().unwrap();
    assert!(
        message.starts_with("apply StatefulSet demo-kafka:"),
        "{message}"
    );
    assert!(message.contains("Forbidden"), "{message}");
    assert_eq!(rec.event_reasons(), ["ApplyFailed"]);
}

/// A stored Service: the applied one with an allocated nodePort and, optionally, a
/// load-balancer ingress IP.
fn allocated(node_port: i32, ingress: Option<&'static str>) -> impl FnOnce(&Value) -> (u16, Value) {
    move |b| {
        let mut v = b.clone();
        v["spec"]["ports"][0]["nodePort"] = json!(node_port);
        if let Some(ip) = ingress {
            v["status"] = json!({"loadBalancer": {"ingress": [{"ip": ip}]}});
        }
        (200, v)
    }
}

#[tokio::test]
async fn external_listeners_get_services_first_and_brokers_advertise_what_they_got() {
    let kc = cluster(
        json!({"replicas": 2, "storage": {"size": "1Gi"}, "listeners": [
            {"name": "internal", "type": "internal", "port": 9093},
            {"name": "local", "type": "forwarding", "port": 9092},
            {"name": "ext", "type": "nodePort", "port": 9094},
            {"name": "lb", "type": "loadBalancer", "port": 9095},
        ]}),
    );
    let kc = with_status(kc, json!({"clusterId": CLUSTER_ID}));
    let kc_json = serde_json::to_value(&kc).unwrap();
    // A Service of a listener (or broker) that is gone: deleted.
    let stale = json!({"apiVersion": "v1", "kind": "ServiceList", "metadata": {}, "items": [
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "demo-kafka-5-ext", "namespace": "ns",
                      "labels": {"kafka.sluice.dev/listener": "ext"}}}]});
    let svc = |name: &str| format!("{SVC}/{name}");
    let mut steps = vec![
        step("GET", STS, not_found()),
        step("GET", PODS, ok(pod_list(&[]))),
        step("GET", SVC, ok(stale)),
        step("PATCH", svc("demo-kafka-0-ext"), allocated(31000, None)),
        step("PATCH", svc("demo-kafka-1-ext"), allocated(31001, None)),
        step(
            "PATCH",
            svc("demo-kafka-ext-bootstrap"),
            allocated(31100, None),
        ),
        step(
            "PATCH",
            svc("demo-kafka-0-lb"),
            allocated(32000, Some("203.0.113.10")),
        ),
        // Broker 1's load balancer has no address yet: broker 1 waits.
        step("PATCH", svc("demo-kafka-1-lb"), allocated(32001, None)),
        step(
            "PATCH",
            svc("demo-kafka-lb-bootstrap"),
            allocated(32100, None),
        ),
        step(
            "DELETE",
            svc("demo-kafka-5-ext"),
            ok(json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})),
        ),
    ];
    steps.extend(applied_objects(|b| {
        let n = b["spec"]["replicas"].as_i64().unwrap() as i32;
        (200, sts_with_status(b, 1, 1, n, 0, n))
    }));
    steps.push(step("PATCH", status_path(), ok(kc_json)));
    let (client, runner) = mock_api(steps);
    let (ctx, _writer) = context(client, FakeKafka::with_brokers(&[]), &[]);
    within(reconcile(Arc::new(kc), ctx.clone()))
        .await
        .expect("reconcile");
    drop(ctx);
    let rec = finish(runner).await;

    let broker_svc = &calls_to(&rec, &svc("demo-kafka-1-ext"))[0].body;
    assert_eq!(broker_svc["spec"]["type"], "NodePort");
    assert_eq!(
        broker_svc["spec"]["selector"]["statefulset.kubernetes.io/pod-name"],
        "demo-kafka-1"
    );
    assert!(calls_to(&rec, &svc("demo-kafka-lb-bootstrap"))[0].is_forced_apply());
    assert_eq!(
        calls_to(&rec, &svc("demo-kafka-0-lb"))[0].body["spec"]["type"],
        "LoadBalancer"
    );

    let data = &calls_to(&rec, CM)[0].body["data"];
    let broker0 = data["demo-kafka-0.properties"].as_str().expect("broker 0");
    assert!(
        broker0.contains(
            "advertised.listeners=INTERNAL://demo-kafka-0.demo-kafka-brokers.ns.svc:9093,\
             LOCAL://localhost:9092,EXT://${env:HOST_IP}:31000,LB://203.0.113.10:9095\n"
        ),
        "{broker0}"
    );
    assert!(
        data.get("demo-kafka-1.properties").is_none(),
        "broker 1 does not start without its load balancer's address"
    );
    let sts = &calls_to(&rec, STS)[1].body;
    assert_eq!(sts["spec"]["replicas"], 1);
    let env: Vec<&str> = sts["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(env.contains(&"HOST_IP"), "{env:?}");

    let status = &rec.calls.last().unwrap().body["status"];
    assert_eq!(
        condition(status, "Ready")["reason"],
        "WaitingForLoadBalancer"
    );
    assert_eq!(
        condition(status, "Progressing")["message"],
        "waiting for load-balancer addresses: demo-kafka-1-lb, demo-kafka-lb-bootstrap"
    );
    assert_eq!(
        status["listeners"],
        json!([
            {"name": "local", "type": "forwarding", "bootstrapServers": "localhost:9092"},
            {"name": "internal", "type": "internal", "bootstrapServers": "demo-kafka-bootstrap.ns.svc:9093"},
            {"name": "ext", "type": "nodePort", "message": "no broker runs on a node yet"},
            {"name": "lb", "type": "loadBalancer",
             "message": "waiting for the load balancer of Service demo-kafka-lb-bootstrap"},
        ])
    );
}
