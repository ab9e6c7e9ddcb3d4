//! Reconcile scenarios against a mocked Kubernetes API (kube's tower-test pattern) and an
//! in-memory Kafka admin. Each scenario lists the API calls it expects in order, answers
//! them, and checks what was sent. Event POSTs are answered and recorded on the side.

mod cluster;
mod topic;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use http::{Request, Response};
use kube::client::Body;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher;
use serde_json::{json, Value};
use sluice_client::{
    kafka_error, BrokerInfo, ClientError, ClusterMetadata, NewTopic, OngoingReassignment,
    OngoingReassignments, PartitionMetadata, TopicMetadata,
};
use tokio::task::JoinHandle;

use super::{Context, Settings};
use crate::crd::KafkaTopic;
use crate::kafka::{KafkaAdmin, KafkaConnector, PartitionOutcomes, TopicState};
use crate::metrics::Metrics;

/// Deadline for one scenario's reconcile and for the mock to finish.
pub(crate) const DEADLINE: Duration = Duration::from_secs(10);

type Reply = Box<dyn FnOnce(&Value) -> (u16, Value) + Send>;

/// One expected API call and its answer.
pub(crate) struct Step {
    method: &'static str,
    path: String,
    reply: Reply,
}

/// Expect `method path` (the URI path, no query) and answer with `reply(body)`.
pub(crate) fn step(
    method: &'static str,
    path: impl Into<String>,
    reply: impl FnOnce(&Value) -> (u16, Value) + Send + 'static,
) -> Step {
    Step {
        method,
        path: path.into(),
        reply: Box::new(reply),
    }
}

/// Answer with the request body (what server-side apply returns, near enough).
pub(crate) fn echo() -> impl FnOnce(&Value) -> (u16, Value) + Send + 'static {
    |body| (200, body.clone())
}

/// Answer 200 with `v`.
pub(crate) fn ok(v: Value) -> impl FnOnce(&Value) -> (u16, Value) + Send + 'static {
    move |_| (200, v)
}

/// Answer with a Kubernetes `Status` error.
pub(crate) fn fail(
    code: u16,
    reason: &'static str,
    message: &'static str,
) -> impl FnOnce(&Value) -> (u16, Value) + Send + 'static {
    move |_| {
        (
            code,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": message, "reason": reason, "code": code}),
        )
    }
}

/// 404.
pub(crate) fn not_found() -> impl FnOnce(&Value) -> (u16, Value) + Send + 'static {
    fail(404, "NotFound", "not found")
}

/// A request the mock received.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: Value,
}

impl Call {
    /// Whether this is a server-side apply by the operator's field manager, forced.
    pub fn is_forced_apply(&self) -> bool {
        self.content_type == "application/apply-patch+yaml"
            && self.query.contains("fieldManager=sluice-operator")
            && self.query.contains("force=true")
    }
}

/// What the mock saw.
#[derive(Debug, Default)]
pub(crate) struct Recorded {
    pub calls: Vec<Call>,
    pub events: Vec<Value>,
}

impl Recorded {
    /// Reasons of the published Events, in order.
    pub fn event_reasons(&self) -> Vec<String> {
        self.events
            .iter()
            .map(|e| e["reason"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

/// A kube client whose requests are checked against `steps`, in order.
pub(crate) fn mock_api(steps: Vec<Step>) -> (kube::Client, JoinHandle<Recorded>) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let runner = tokio::spawn(async move {
        let mut handle = std::pin::pin!(handle);
        let mut recorded = Recorded::default();
        let mut steps = steps.into_iter();
        while let Some((request, send)) = handle.next_request().await {
            let method = request.method().to_string();
            let path = request.uri().path().to_string();
            let query = request.uri().query().unwrap_or_default().to_string();
            let content_type = request
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let bytes = request
                .into_body()
                .collect_bytes()
                .await
                .expect("request body");
            let body: Value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).expect("JSON request body")
            };
            let (status, answer) = if path.starts_with("/apis/events.k8s.io/") {
                recorded.events.push(body.clone());
                (201, body)
            } else {
                let Some(expected) = steps.next() else {
                    panic!("unexpected request after the last step: {method} {path}?{query}");
                };
                assert_eq!(
                    (expected.method, expected.path.as_str()),
                    (method.as_str(), path.as_str()),
                    "request {} differs from the expected one",
                    recorded.calls.len() + 1
                );
                let answer = (expected.reply)(&body);
                recorded.calls.push(Call {
                    method,
                    path,
                    query,
                    content_type,
                    body,
                });
                answer
            };
            let response = Response::builder()
                .status(status)
                .body(Body::from(serde_json::to_vec(&answer).expect("JSON")))
                .expect("response");
            send.send_response(response);
        }
        let left: Vec<String> = steps.map(|s| format!("{} {}", s.method, s.path)).collect();
        assert!(left.is_empty(), "expected requests never came: {left:?}");
        recorded
    });
    (kube::Client::new(service, "default"), runner)
}

/// Wait for the mock to see the client go away and return what it recorded.
pub(crate) async fn finish(runner: JoinHandle<Recorded>) -> Recorded {
    tokio::time::timeout(DEADLINE, runner)
        .await
        .expect("the mock API finished")
        .expect("the mock API saw the expected requests")
}

/// An in-memory Kafka cluster implementing the admin trait.
#[derive(Default)]
pub(crate) struct FakeKafka {
    pub state: Mutex<FakeState>,
}

#[derive(Default)]
pub(crate) struct FakeState {
    pub brokers: Vec<i32>,
    pub topics: BTreeMap<String, TopicState>,
    /// Every admin call, `op topic`.
    pub calls: Vec<String>,
    /// The next create fails with this Kafka error code.
    pub fail_create: Option<i16>,
    /// Connecting fails.
    pub unreachable: bool,
    /// Extra metadata partitions (isr, leader overrides) per topic: (leader, isr).
    pub health: BTreeMap<(String, i32), (i32, Vec<i32>)>,
    /// Reassignments in progress; the partition's replicas show old and new together
    /// until [`FakeKafka::complete_reassignment`].
    pub reassignments: BTreeMap<(String, i32), OngoingReassignment>,
    /// The controller refuses targets naming this broker, as if it were not registered.
    pub refuse_broker: Option<i32>,
}

impl FakeKafka {
    pub fn with_brokers(brokers: &[i32]) -> Arc<FakeKafka> {
        let fake = FakeKafka::default();
        fake.lock().brokers = brokers.to_vec();
        Arc::new(fake)
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().expect("fake kafka lock")
    }

    /// Add a topic with the given replica lists.
    pub fn add_topic(&self, name: &str, assignment: &[&[i32]], configs: &[(&str, &str)]) {
        self.lock().topics.insert(
            name.to_string(),
            TopicState {
                topic_id: uuid::Uuid::new_v4(),
                assignment: assignment
                    .iter()
                    .enumerate()
                    .map(|(i, r)| (i as i32, r.to_vec()))
                    .collect(),
                configs: configs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            },
        );
    }

    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// Finish the reassignment of `topic`-`partition`: drop the removed replicas.
    pub fn complete_reassignment(&self, topic: &str, partition: i32) {
        let mut s = self.lock();
        let done = s
            .reassignments
            .remove(&(topic.to_string(), partition))
            .expect("a reassignment to complete");
        let target: Vec<i32> = done
            .replicas
            .into_iter()
            .filter(|r| !done.removing.contains(r))
            .collect();
        let t = s.topics.get_mut(topic).expect("topic exists");
        t.assignment.insert(partition, target);
    }

    /// Start a reassignment as the broker does (the replicas become target + removed).
    pub fn start_reassignment(s: &mut FakeState, topic: &str, partition: i32, target: &[i32]) {
        let current = s.topics[topic].assignment[&partition].clone();
        if current == target {
            return;
        }
        let removing: Vec<i32> = current
            .iter()
            .copied()
            .filter(|r| !target.contains(r))
            .collect();
        let replicas: Vec<i32> = target.iter().chain(&removing).copied().collect();
        let ongoing = OngoingReassignment {
            replicas: replicas.clone(),
            adding: target
                .iter()
                .copied()
                .filter(|r| !current.contains(r))
                .collect(),
            removing,
        };
        s.topics
            .get_mut(topic)
            .expect("topic exists")
            .assignment
            .insert(partition, replicas);
        s.reassignments
            .insert((topic.to_string(), partition), ongoing);
    }
}

struct FakeAdmin(Arc<FakeKafka>);

impl KafkaConnector for Arc<FakeKafka> {
    fn connect<'a>(
        &'a self,
        bootstrap: &'a str,
    ) -> BoxFuture<'a, Result<Arc<dyn KafkaAdmin>, ClientError>> {
        let fake = self.clone();
        async move {
            fake.lock().calls.push(format!("connect {bootstrap}"));
            if fake.lock().unreachable {
                return Err(ClientError::Disconnected {
                    addr: bootstrap.to_string(),
                });
            }
            let admin: Arc<dyn KafkaAdmin> = Arc::new(FakeAdmin(fake));
            Ok(admin)
        }
        .boxed()
    }
}

impl KafkaAdmin for FakeAdmin {
    fn metadata(&self) -> BoxFuture<'_, Result<ClusterMetadata, ClientError>> {
        async move {
            let mut s = self.0.lock();
            s.calls.push("metadata".into());
            let mut md = ClusterMetadata::default();
            for &id in &s.brokers {
                md.brokers.insert(
                    id,
                    BrokerInfo {
                        id,
                        host: format!("b{id}"),
                        port: 9092,
                        rack: None,
                    },
                );
            }
            for (name, t) in &s.topics {
                let partitions = t
                    .assignment
                    .iter()
                    .map(|(&p, replicas)| {
                        let (leader, isr) = s
                            .health
                            .get(&(name.clone(), p))
                            .cloned()
                            .unwrap_or_else(|| (replicas[0], replicas.clone()));
                        PartitionMetadata {
                            partition: p,
                            error_code: 0,
                            leader,
                            leader_epoch: 0,
                            replicas: replicas.clone(),
                            isr,
                            offline_replicas: vec![],
                        }
                    })
                    .collect();
                md.topics.insert(
                    name.clone(),
                    TopicMetadata {
                        name: name.clone(),
                        topic_id: t.topic_id,
                        error_code: 0,
                        is_internal: false,
                        partitions,
                    },
                );
            }
            Ok(md)
        }
        .boxed()
    }

    fn describe_topic<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<TopicState>, ClientError>> {
        async move {
            let mut s = self.0.lock();
            s.calls.push(format!("describe {name}"));
            Ok(s.topics.get(name).cloned())
        }
        .boxed()
    }

    fn create_topic<'a>(
        &'a self,
        topic: &'a NewTopic,
    ) -> BoxFuture<'a, Result<uuid::Uuid, ClientError>> {
        async move {
            let mut s = self.0.lock();
            s.calls.push(format!("create {}", topic.name));
            if let Some(code) = s.fail_create.take() {
                return Err(kafka_error(
                    code,
                    None,
                    format!("create topic {}", topic.name),
                ));
            }
            let id = uuid::Uuid::new_v4();
            let brokers = s.brokers.clone();
            let rf = usize::try_from(topic.replication_factor).unwrap_or(0);
            s.topics.insert(
                topic.name.clone(),
                TopicState {
                    topic_id: id,
                    assignment: (0..topic.partitions)
                        .map(|p| {
                            let r = (0..rf)
                                .map(|i| brokers[(p as usize + i) % brokers.len()])
                                .collect();
                            (p, r)
                        })
                        .collect(),
                    configs: topic.configs.iter().cloned().collect(),
                },
            );
            Ok(id)
        }
        .boxed()
    }

    fn create_partitions<'a>(
        &'a self,
        name: &'a str,
        total: i32,
    ) -> BoxFuture<'a, Result<(), ClientError>> {
        async move {
            let mut s = self.0.lock();
            s.calls.push(format!("grow {name} {total}"));
            let t = s.topics.get_mut(name).expect("topic exists");
            let replicas = t.assignment[&0].clone();
            for p in t.partitions()..total {
                t.assignment.insert(p, replicas.clone());
            }
            Ok(())
        }
        .boxed()
    }

    fn alter_topic_configs<'a>(
        &'a self,
        name: &'a str,
        set: &'a [(String, String)],
        delete: &'a [String],
    ) -> BoxFuture<'a, Result<(), ClientError>> {
        async move {
            let mut s = self.0.lock();
            s.calls.push(format!("alter {name}"));
            let t = s.topics.get_mut(name).expect("topic exists");
            for (k, v) in set {
                t.configs.insert(k.clone(), v.clone());
            }
            for k in delete {
                t.configs.remove(k);
            }
            Ok(())
        }
        .boxed()
    }

    fn delete_topic<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), ClientError>> {
        async move {
            let mut s = self.0.lock();
            s.calls.push(format!("delete {name}"));
            s.topics.remove(name);
            Ok(())
        }
        .boxed()
    }

    fn alter_partition_reassignments<'a>(
        &'a self,
        topic: &'a str,
        targets: &'a BTreeMap<i32, Vec<i32>>,
    ) -> BoxFuture<'a, Result<PartitionOutcomes, ClientError>> {
        async move {
            let mut s = self.0.lock();
            let parts: Vec<String> = targets.iter().map(|(p, r)| format!("{p}={r:?}")).collect();
            s.calls
                .push(format!("reassign {topic} {}", parts.join(" ")));
            let mut results = BTreeMap::new();
            for (&p, target) in targets {
                let refused = target
                    .iter()
                    .find(|b| !s.brokers.contains(b) || s.refuse_broker == Some(**b));
                let result = match refused {
                    Some(b) => Err(kafka_error(
                        39,
                        Some(format!("broker {b} is not registered")),
                        format!("reassign {topic}-{p}"),
                    )),
                    None => {
                        FakeKafka::start_reassignment(&mut s, topic, p, target);
                        Ok(())
                    }
                };
                results.insert(p, result);
            }
            Ok(results)
        }
        .boxed()
    }

    fn list_partition_reassignments<'a>(
        &'a self,
        topic: &'a str,
        partitions: &'a [i32],
    ) -> BoxFuture<'a, Result<BTreeMap<i32, OngoingReassignment>, ClientError>> {
        async move {
            let mut s = self.0.lock();
            s.calls.push(format!("list-reassignments {topic}"));
            Ok(s.reassignments
                .iter()
                .filter(|((t, p), _)| t == topic && partitions.contains(p))
                .map(|((_, p), r)| (*p, r.clone()))
                .collect())
        }
        .boxed()
    }

    fn all_reassignments(&self) -> BoxFuture<'_, Result<OngoingReassignments, ClientError>> {
        async move {
            let mut s = self.0.lock();
            s.calls.push("list-all-reassignments".into());
            Ok(s.reassignments.clone())
        }
        .boxed()
    }

    fn quorum_voters(&self) -> BoxFuture<'_, Result<Vec<i32>, ClientError>> {
        async move {
            let mut s = self.0.lock();
            s.calls.push("describe-quorum".into());
            Ok(s.brokers.iter().copied().take(3).collect())
        }
        .boxed()
    }

    fn unregister_broker(&self, id: i32) -> BoxFuture<'_, Result<(), ClientError>> {
        async move {
            let mut s = self.0.lock();
            s.calls.push(format!("unregister {id}"));
            s.brokers.retain(|&b| b != id);
            Ok(())
        }
        .boxed()
    }
}

/// A context over `client` and `kafka`, with the topic store holding `topics` (ready).
pub(crate) fn context(
    client: kube::Client,
    kafka: Arc<FakeKafka>,
    topics: &[KafkaTopic],
) -> (Arc<Context>, Writer<KafkaTopic>) {
    let (store, mut writer) = reflector::store::<KafkaTopic>();
    writer.apply_watcher_event(&watcher::Event::Init);
    for t in topics {
        writer.apply_watcher_event(&watcher::Event::InitApply(t.clone()));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    let ctx = Context::new(
        client,
        Arc::new(kafka),
        Settings::new("sluice:test"),
        Arc::new(Metrics::new()),
        store,
        None,
    );
    (Arc::new(ctx), writer)
}

/// Run `f` with the scenario deadline.
pub(crate) async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, f)
        .await
        .expect("reconcile finished before the deadline")
}
