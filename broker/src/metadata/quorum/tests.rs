//! Several quorum members in one process, each with its own directory and its own HTTP
//! server on a free loopback port, talking real HTTP.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::time::Instant;
use uuid::Uuid;

use super::network::{codes, Envelope, JoinRequest, StatusRequest};
use super::*;
use crate::metadata::image::records::MetadataRecord;
use crate::metadata::image::MetadataImage;
use crate::rpc::RpcError;

const ELECTION_TIMEOUT: Duration = Duration::from_millis(500);
/// Generous: the machine is shared and tests run in parallel.
const DEADLINE: Duration = Duration::from_secs(60);

/// Remembers what the listener was told, in order.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<Event>>,
}

#[derive(Debug, Clone)]
enum Event {
    Loaded(BTreeSet<String>),
    Records(usize),
}

impl Recorder {
    fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }
}

impl MetadataListener for Recorder {
    fn on_image_loaded(&self, image: &MetadataImage) {
        let topics = image.topics.keys().cloned().collect();
        self.events.lock().unwrap().push(Event::Loaded(topics));
    }
    fn on_records(&self, _image: &MetadataImage, records: &[MetadataRecord]) {
        self.events
            .lock()
            .unwrap()
            .push(Event::Records(records.len()));
    }
}

struct Node {
    id: i32,
    dir: PathBuf,
    addr: String,
    quorum: Arc<Quorum>,
    cache: Arc<MetadataCache>,
    recorder: Arc<Recorder>,
    stop_server: Option<oneshot::Sender<()>>,
}

impl Node {
    fn has_topic(&self, name: &str) -> bool {
        self.cache.current().topic(name).is_some()
    }

    async fn stop(mut self) -> PathBuf {
        self.quorum.shutdown().await;
        if let Some(stop) = self.stop_server.take() {
            let _ = stop.send(());
        }
        self.dir
    }
}

struct Spec {
    cluster_id: String,
    bootstrap: Vec<(i32, String)>,
    auto_voters: bool,
    tuning: Tuning,
}

/// Logs with `RUST_LOG=...` when debugging a test.
fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
}

async fn bind() -> (TcpListener, String) {
    init_logging();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    (listener, addr)
}

async fn start(spec: &Spec, id: i32, dir: PathBuf, bound: (TcpListener, String)) -> Node {
    try_start(spec, id, dir, bound).await.unwrap()
}

async fn try_start(
    spec: &Spec,
    id: i32,
    dir: PathBuf,
    (listener, addr): (TcpListener, String),
) -> Result<Node, QuorumError> {
    let cache = Arc::new(MetadataCache::default());
    let recorder = Arc::new(Recorder::default());
    let cfg = QuorumConfig {
        node_id: id,
        cluster_id: spec.cluster_id.clone(),
        http_address: addr.clone(),
        dir: dir.clone(),
        bootstrap: spec.bootstrap.clone(),
        election_timeout: ELECTION_TIMEOUT,
        voter_count: 3,
        auto_manage_voters: spec.auto_voters,
    };
    let quorum = Quorum::start_tuned(cfg, cache.clone(), recorder.clone(), spec.tuning).await?;
    let app = quorum.router();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop_rx.await;
            })
            .await;
    });
    Ok(Node {
        id,
        dir,
        addr,
        quorum,
        cache,
        recorder,
        stop_server: Some(stop_tx),
    })
}

/// Starts brokers `0..n` with one bootstrap list naming them all.
async fn start_cluster(
    root: &std::path::Path,
    n: i32,
    auto_voters: bool,
    tuning: Tuning,
) -> (Spec, Vec<Node>) {
    let mut bound = Vec::new();
    for _ in 0..n {
        bound.push(bind().await);
    }
    let spec = Spec {
        cluster_id: format!("test-{}", Uuid::new_v4()),
        bootstrap: bound
            .iter()
            .enumerate()
            .map(|(i, (_, a))| (i as i32, a.clone()))
            .collect(),
        auto_voters,
        tuning,
    };
    let mut nodes = Vec::new();
    for (i, b) in bound.into_iter().enumerate() {
        nodes.push(start(&spec, i as i32, root.join(format!("b{i}")), b).await);
    }
    (spec, nodes)
}

/// Polls `cond` until it holds; fails the test at the deadline.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Retries `attempt` until it returns `Some`.
async fn eventually<T, F: Future<Output = Option<T>>>(
    what: &str,
    mut attempt: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = attempt().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The leader all `nodes` agree on.
async fn agreed_leader(nodes: &[&Node]) -> i32 {
    let mut leader = None;
    wait_until("one leader known to all", || {
        let leaders: BTreeSet<Option<i32>> = nodes
            .iter()
            .map(|n| n.quorum.leader().map(|l| l.0))
            .collect();
        leader = leaders.iter().next().copied().flatten();
        leaders.len() == 1
            && leader.is_some()
            && nodes
                .iter()
                .any(|n| Some(n.id) == leader && n.quorum.is_leader())
    })
    .await;
    leader.expect("checked above")
}

fn topic(name: &str) -> Vec<MetadataRecord> {
    vec![MetadataRecord::CreateTopic {
        name: name.into(),
        id: Uuid::new_v4(),
        configs: BTreeMap::new(),
    }]
}

/// Proposes on whichever node leads, retrying through elections.
async fn propose(nodes: &[&Node], records: Vec<MetadataRecord>) {
    eventually("a committed proposal", || {
        let records = records.clone();
        async move {
            let leader = nodes.iter().find(|n| n.quorum.is_leader())?;
            match leader.quorum.propose(records).await {
                Ok(()) => Some(()),
                Err(e) => {
                    tracing::info!(error = %e, "proposal not committed, retrying");
                    None
                }
            }
        }
    })
    .await
}

/// Every node has exactly these voters, with no membership change under way.
fn voters_everywhere(nodes: &[&Node], expected: &BTreeSet<i32>) -> bool {
    nodes.iter().all(|n| {
        let settled = n
            .quorum
            .with_metrics(|m| m.membership_config.membership().get_joint_config().len() == 1);
        settled && n.quorum.voters() == *expected
    })
}

fn set(ids: &[i32]) -> BTreeSet<i32> {
    ids.iter().copied().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_brokers_form_one_cluster_fail_over_and_restart() {
    let root = tempfile::tempdir().unwrap();
    let (spec, mut nodes) = start_cluster(root.path(), 3, true, Tuning::default()).await;

    let all: Vec<&Node> = nodes.iter().collect();
    wait_until("three voters", || voters_everywhere(&all, &set(&[0, 1, 2]))).await;
    let leader = agreed_leader(&all).await;
    for n in &nodes {
        // Each listener saw the (empty) recovered image first, once.
        let events = n.recorder.events();
        assert!(
            matches!(&events[0], Event::Loaded(t) if t.is_empty()),
            "{events:?}"
        );
        assert_eq!(
            events
                .iter()
                .filter(|e| matches!(e, Event::Loaded(_)))
                .count(),
            1
        );
    }

    // A follower refuses proposals and names the leader.
    let follower = nodes.iter().find(|n| n.id != leader).unwrap();
    let leader_addr = nodes.iter().find(|n| n.id == leader).unwrap().addr.clone();
    match follower.quorum.propose(topic("nope")).await {
        Err(QuorumError::NotLeader { leader: named }) => {
            assert_eq!(named, Some((leader, leader_addr)))
        }
        other => panic!("a follower must refuse proposals: {other:?}"),
    }
    assert!(!follower.quorum.is_leader());

    propose(&all, topic("first")).await;
    wait_until("first topic everywhere", || {
        all.iter().all(|n| n.has_topic("first"))
    })
    .await;
    wait_until("all caught up", || all.iter().all(|n| n.quorum.caught_up())).await;
    for n in &nodes {
        assert!(n
            .recorder
            .events()
            .iter()
            .any(|e| matches!(e, Event::Records(1))));
    }

    // The leader stops: the two others elect a new one and commit.
    let pos = nodes.iter().position(|n| n.id == leader).unwrap();
    let old = nodes.remove(pos);
    let old_addr = old.addr.clone();
    let old_dir = old.stop().await;
    let rest: Vec<&Node> = nodes.iter().collect();
    let new_leader = agreed_leader(&rest).await;
    assert_ne!(new_leader, leader);
    propose(&rest, topic("second")).await;
    wait_until("second topic on the two", || {
        rest.iter().all(|n| n.has_topic("second"))
    })
    .await;

    // The old leader restarts from its directory on another port: its committed image is
    // there at once, before it hears from anyone; then it catches up and its new address
    // replaces the old one in the membership.
    let restarted = start(&spec, leader, old_dir, bind().await).await;
    assert!(restarted.has_topic("first"));
    assert!(
        matches!(&restarted.recorder.events()[0], Event::Loaded(t) if t.contains("first")),
        "{:?}",
        restarted.recorder.events()
    );
    wait_until("restarted broker catches up", || {
        restarted.has_topic("second") && restarted.quorum.caught_up()
    })
    .await;
    let new_addr = restarted.addr.clone();
    wait_until("new address in the membership", || {
        rest.iter()
            .all(|n| n.quorum.members().get(&leader) == Some(&new_addr))
    })
    .await;
    assert_ne!(old_addr, new_addr);
    nodes.push(restarted);
    let all: Vec<&Node> = nodes.iter().collect();
    propose(&all, topic("third")).await;
    wait_until("third topic everywhere", || {
        all.iter().all(|n| n.has_topic("third"))
    })
    .await;
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn brokers_that_lost_their_disk_rejoin_and_never_found_a_second_cluster() {
    let root = tempfile::tempdir().unwrap();
    let (spec, mut nodes) = start_cluster(root.path(), 3, true, Tuning::default()).await;
    let all: Vec<&Node> = nodes.iter().collect();
    wait_until("three voters", || voters_everywhere(&all, &set(&[0, 1, 2]))).await;
    propose(&all, topic("kept")).await;
    wait_until("topic everywhere", || {
        all.iter().all(|n| n.has_topic("kept"))
    })
    .await;

    // Broker 2, then the founder (broker 0), lose their disks and restart empty.
    for wiped in [2, 0] {
        let pos = nodes.iter().position(|n| n.id == wiped).unwrap();
        let dir = nodes.remove(pos).stop().await;
        std::fs::remove_dir_all(&dir).unwrap();
        let node = start(&spec, wiped, dir, bind().await).await;
        assert!(!node.has_topic("kept"));
        assert!(
            node.quorum.is_fresh(),
            "started without state: must not vote"
        );
        // It gets the first cluster's data: it joined that cluster, it did not found one.
        // It votes again only once it has caught up.
        wait_until("wiped broker catches up", || {
            node.has_topic("kept") && node.quorum.caught_up() && !node.quorum.is_fresh()
        })
        .await;
        nodes.push(node);
        let all: Vec<&Node> = nodes.iter().collect();
        // Still one cluster with the same three voters.
        wait_until("three voters", || voters_everywhere(&all, &set(&[0, 1, 2]))).await;
        let leader = agreed_leader(&all).await;
        assert!(all.iter().all(|n| n.quorum.members().len() == 3));
        tracing::info!(leader, wiped, "rejoined");
    }
    let all: Vec<&Node> = nodes.iter().collect();
    propose(&all, topic("after")).await;
    wait_until("new topic everywhere", || {
        all.iter().all(|n| n.has_topic("after"))
    })
    .await;
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_learner_is_promoted_when_a_voter_is_gone_and_catches_up_from_a_snapshot() {
    let root = tempfile::tempdir().unwrap();
    // Snapshots every 5 entries and no log kept behind them: a late joiner needs a snapshot.
    let tuning = Tuning {
        snapshot_every: 5,
        keep_after_snapshot: 0,
    };
    let (spec, mut nodes) = start_cluster(root.path(), 3, false, tuning).await;
    let all: Vec<&Node> = nodes.iter().collect();
    // Without automatic voter management the founder is the only voter.
    let leader = agreed_leader(&all).await;
    assert_eq!(leader, 0);
    wait_until("two learners joined", || {
        nodes[0].quorum.members().len() == 3
    })
    .await;
    assert_eq!(nodes[0].quorum.voters(), set(&[0]));
    let promoted = eventually("voters 0, 1, 2", || async {
        nodes[0].quorum.manage_voters(&set(&[0, 1, 2])).await.ok()
    })
    .await;
    assert_eq!(promoted, Some(set(&[0, 1, 2])));
    for i in 0..20 {
        propose(&all, topic(&format!("t{i}"))).await;
    }

    // Broker 3 is not in the bootstrap list; it joins as a learner from a snapshot.
    let fourth = start(&spec, 3, root.path().join("b3"), bind().await).await;
    wait_until("fourth broker caught up", || {
        fourth.has_topic("t19") && fourth.quorum.caught_up()
    })
    .await;
    assert_eq!(nodes[0].quorum.members().len(), 4);
    assert_eq!(nodes[0].quorum.voters(), set(&[0, 1, 2]));
    // Full: nothing to change.
    assert_eq!(
        nodes[0]
            .quorum
            .manage_voters(&set(&[0, 1, 2, 3]))
            .await
            .unwrap(),
        None
    );
    wait_until("leader sees all four responsive", || {
        nodes[0].quorum.responsive_members() == set(&[0, 1, 2, 3])
    })
    .await;

    // Voter 2 goes away: the leader's view drops it, and it is replaced by broker 3.
    let gone = nodes.remove(2).stop().await;
    wait_until("broker 2 unresponsive", || {
        nodes[0].quorum.responsive_members() == set(&[0, 1, 3])
    })
    .await;
    let live = nodes[0].quorum.responsive_members();
    assert_eq!(
        nodes[0].quorum.manage_voters(&live).await.unwrap(),
        Some(set(&[0, 1, 3]))
    );
    nodes.push(fourth);
    let all: Vec<&Node> = nodes.iter().collect();
    wait_until("voters 0, 1, 3 everywhere", || {
        voters_everywhere(&all, &set(&[0, 1, 3]))
    })
    .await;
    // Broker 0 leaves too: 1 and 3 still make a majority of 0, 1, 3.
    let founder = nodes.remove(0);
    founder.stop().await;
    let rest: Vec<&Node> = nodes.iter().collect();
    let leader = agreed_leader(&rest).await;
    assert!(leader == 1 || leader == 3);
    propose(&rest, topic("late")).await;
    wait_until("late topic", || rest.iter().all(|n| n.has_topic("late"))).await;

    // Broker 2 restarts from its directory (snapshot + log) and catches up as a learner.
    let back = start(&spec, 2, gone, bind().await).await;
    assert!(
        back.has_topic("t19"),
        "recovered from its own snapshot and log"
    );
    wait_until("broker 2 catches up", || back.has_topic("late")).await;
    for n in nodes {
        n.stop().await;
    }
    back.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_broker_forms_alone_and_keeps_its_image() {
    let root = tempfile::tempdir().unwrap();
    let spec = Spec {
        cluster_id: "solo".into(),
        bootstrap: Vec::new(),
        auto_voters: true,
        tuning: Tuning::default(),
    };
    let dir = root.path().join("solo");
    let node = start(&spec, 7, dir.clone(), bind().await).await;
    wait_until("leader", || node.quorum.is_leader()).await;
    assert_eq!(node.quorum.voters(), set(&[7]));
    node.quorum.propose(topic("a")).await.unwrap();
    assert!(node.has_topic("a"), "applied when propose returns");
    let mut watch = node.quorum.leader_watch();
    assert_eq!(*watch.borrow_and_update(), Some(7));
    node.stop().await;

    // Restart on another port: the image is back at once, and the new address replaces the
    // old one once it leads again.
    let node = start(&spec, 7, dir.clone(), bind().await).await;
    assert!(node.has_topic("a"));
    let addr = node.addr.clone();
    wait_until("own address updated", || {
        node.quorum.members().get(&7) == Some(&addr) && node.quorum.caught_up()
    })
    .await;
    node.stop().await;

    // The same directory under another cluster id is refused.
    let other = Spec {
        cluster_id: "other".into(),
        ..spec
    };
    let err = try_start(&other, 7, dir.clone(), bind().await)
        .await
        .err()
        .expect("a directory of another cluster must be refused");
    assert!(
        matches!(err, QuorumError::ClusterIdMismatch { .. }),
        "{err}"
    );
    assert_eq!(stored_cluster_id(&dir).unwrap().as_deref(), Some("solo"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_from_another_cluster_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let spec = Spec {
        cluster_id: "blue".into(),
        bootstrap: Vec::new(),
        auto_voters: true,
        tuning: Tuning::default(),
    };
    let node = start(&spec, 0, root.path().join("blue"), bind().await).await;
    wait_until("leader", || node.quorum.is_leader()).await;
    let rpc = crate::rpc::RpcClient::new();
    let t = Duration::from_secs(5);

    let join = JoinRequest {
        cluster_id: "green".into(),
        id: 1,
        http_address: "127.0.0.1:1".into(),
        fresh: true,
    };
    let err = rpc
        .call::<_, JoinResponse>(&node.addr, JOIN_PATH, &join, t)
        .await
        .unwrap_err();
    assert_eq!(err.remote_code(), Some(codes::CLUSTER_ID_MISMATCH), "{err}");
    assert!(err.to_string().contains("blue"), "{err}");

    let status = StatusRequest {
        cluster_id: "green".into(),
    };
    let err = rpc
        .call::<_, QuorumStatus>(&node.addr, STATUS_PATH, &status, t)
        .await
        .unwrap_err();
    assert_eq!(err.remote_code(), Some(codes::CLUSTER_ID_MISMATCH));

    // Raft messages of another cluster, or for another node, are refused before Raft sees
    // them.
    let vote = openraft::raft::VoteRequest::<u64>::new(openraft::Vote::new(99, 1), None);
    for (cluster_id, to, code) in [
        ("green", 0, codes::CLUSTER_ID_MISMATCH),
        ("blue", 5, codes::WRONG_NODE),
    ] {
        let envelope = Envelope {
            cluster_id: cluster_id.to_string(),
            to,
            body: vote.clone(),
        };
        let err: RpcError = rpc
            .call::<_, serde_json::Value>(&node.addr, VOTE_PATH, &envelope, t)
            .await
            .unwrap_err();
        assert_eq!(err.remote_code(), Some(code), "{err}");
    }
    // The refused vote did not disturb the leader.
    assert!(node.quorum.is_leader());

    // The right cluster gets a status.
    let status: QuorumStatus = rpc
        .call(
            &node.addr,
            STATUS_PATH,
            &StatusRequest {
                cluster_id: "blue".into(),
            },
            t,
        )
        .await
        .unwrap();
    assert!(status.has_state);
    assert_eq!(status.leader.map(|l| l.0), Some(0));
    assert_eq!(status.voters, set(&[0]));
    node.stop().await;
}
