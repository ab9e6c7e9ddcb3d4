//! Running the operator: the Kubernetes client, the side port, leader election through a
//! Lease, both controllers, and graceful shutdown on SIGTERM / Ctrl-C.

use std::net::SocketAddr;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::{Api, ResourceExt};
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::builders::MANAGED_BY;
use crate::controllers::reconcile::{error_policy, reconcile};
use crate::controllers::{cluster, topic, Context, Settings};
use crate::crd::{KafkaCluster, KafkaTopic};
use crate::http::{self, Health};
use crate::kafka::SluiceKafka;
use crate::metrics::Metrics;

/// Lease timing: a new leader takes over at most this long after the old one vanished.
const LEASE_DURATION_SECONDS: u64 = 15;
/// The leader renews this long before the lease would expire.
const LEASE_GRACE_SECONDS: u64 = 5;

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Watch only this namespace (`None`: all namespaces).
    pub namespace: Option<String>,
    /// Run the controllers only while holding the Lease.
    pub leader_election: bool,
    /// Lease name.
    pub lease_name: String,
    /// Lease namespace (`None`: the watched namespace, else the client's default).
    pub lease_namespace: Option<String>,
    /// Side port address.
    pub http_listener: SocketAddr,
    /// Broker image for clusters without `spec.image`.
    pub broker_image: String,
    /// This replica's identity (pod name) for the Lease and Events.
    pub identity: String,
    /// Most partitions a scaling workflow moves at once, per cluster.
    pub max_partition_moves: usize,
}

/// Why the operator stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No usable kubeconfig or in-cluster configuration.
    #[error("cannot configure the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    /// The API server did not answer.
    #[error("cannot reach the Kubernetes API server: {0}")]
    ApiServer(#[source] kube::Error),
    /// The side port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Leader election failed.
    #[error("leader election: {0}")]
    Lease(#[from] LeaseManagerError),
}

/// Run until SIGTERM / Ctrl-C.
pub async fn run(options: RunOptions) -> Result<(), RunError> {
    let client = kube::Client::try_default()
        .await
        .map_err(RunError::Client)?;
    let listener = http::bind(options.http_listener)
        .await
        .map_err(|source| RunError::Listen {
            addr: options.http_listener,
            source,
        })?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutdown requested");
        let _ = shutdown_tx.send(true);
    });
    run_with_client(client, options, listener, shutdown_rx).await
}

/// Run with `client`, serving the side port on `listener`, until `shutdown` turns true.
pub async fn run_with_client(
    client: kube::Client,
    options: RunOptions,
    listener: tokio::net::TcpListener,
    shutdown: watch::Receiver<bool>,
) -> Result<(), RunError> {
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::new(metrics.clone()));
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "serving /metrics, /healthz and /readyz");
    }
    let http_task = tokio::spawn(http::serve(
        listener,
        health.clone(),
        turned_true(shutdown.clone()),
    ));

    let version = client
        .apiserver_version()
        .await
        .map_err(RunError::ApiServer)?;
    info!(
        version = %version.git_version,
        namespace = options.namespace.as_deref().unwrap_or("<all>"),
        leader_election = options.leader_election,
        "connected to the Kubernetes API server"
    );
    health.set_ready(true);

    let result = if options.leader_election {
        lead_and_run(&client, &options, &metrics, shutdown.clone()).await
    } else {
        metrics.set_leader(true);
        run_controllers(&client, &options, &metrics, turned_true(shutdown.clone())).await;
        metrics.set_leader(false);
        Ok(())
    };
    health.set_ready(false);
    // The side port stops with the shutdown signal; if leader election failed first, it
    // stops with the process.
    if *shutdown.borrow() {
        match http_task.await {
            Ok(Err(e)) => warn!(error = %e, "side port failed"),
            Err(e) => warn!(error = %e, "side port task failed"),
            Ok(Ok(())) => {}
        }
    }
    result
}

/// Resolves once `rx` holds `true` (or its sender is gone).
async fn turned_true(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// Wait for the Lease, run the controllers while holding it, repeat until shutdown.
async fn lead_and_run(
    client: &kube::Client,
    options: &RunOptions,
    metrics: &Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), RunError> {
    let lease_namespace = options
        .lease_namespace
        .clone()
        .or_else(|| options.namespace.clone())
        .unwrap_or_else(|| client.default_namespace().to_string());
    let manager = LeaseManagerBuilder::new(client.clone(), &options.lease_name)
        .with_namespace(&lease_namespace)
        .with_identity(&options.identity)
        .with_duration(LEASE_DURATION_SECONDS)
        .with_grace(LEASE_GRACE_SECONDS)
        .build()
        .await?;
    info!(
        lease = %options.lease_name,
        namespace = %lease_namespace,
        identity = %options.identity,
        "waiting for the leader lease"
    );
    let (mut leader, lease_task) = manager.watch().await;
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|v| *v) => break,
            changed = leader.wait_for(|l| *l) => {
                if changed.is_err() {
                    error!("leader election stopped");
                    break;
                }
            }
        }
        info!(identity = %options.identity, "leading: starting the controllers");
        metrics.set_leader(true);
        let mut lost = leader.clone();
        let stop_shutdown = shutdown.clone();
        let stop = async move {
            tokio::select! {
                _ = lost.wait_for(|l| !*l) => {}
                _ = turned_true(stop_shutdown) => {}
            }
        };
        run_controllers(client, options, metrics, stop).await;
        metrics.set_leader(false);
        if *shutdown.borrow() {
            break;
        }
        warn!("lost the leader lease: controllers stopped, waiting to lead again");
    }
    // Closing the channel makes the manager release the lease, so a standby takes over
    // without waiting for it to expire.
    drop(leader);
    match lease_task.await {
        Ok(Ok(_)) => {
            info!("leader lease released");
            Ok(())
        }
        Ok(Err(e)) => Err(RunError::Lease(e)),
        Err(e) => {
            warn!(error = %e, "lease task failed");
            Ok(())
        }
    }
}

/// Run both controllers until `stop` resolves (reconciles in flight finish first).
async fn run_controllers(
    client: &kube::Client,
    options: &RunOptions,
    metrics: &Arc<Metrics>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    fn api<K>(client: &kube::Client, namespace: &Option<String>) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let ns = &options.namespace;
    let all = watcher::Config::default();
    let owned =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGED_BY}"));

    // One stop signal, two controllers.
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        stop.await;
        let _ = stop_tx.send(true);
    });

    let topic_controller = Controller::new(api::<KafkaTopic>(client, ns), all.clone());
    let topics = topic_controller.store();
    let ctx = Arc::new(Context::new(
        client.clone(),
        Arc::new(SluiceKafka::new()),
        Settings {
            max_partition_moves: options.max_partition_moves,
            ..Settings::new(options.broker_image.clone())
        },
        metrics.clone(),
        topics.clone(),
        Some(options.identity.clone()),
    ));

    let clusters = Controller::new(api::<KafkaCluster>(client, ns), all.clone())
        .owns(api::<StatefulSet>(client, ns), owned.clone())
        .owns(api::<Service>(client, ns), owned.clone())
        .owns(api::<ConfigMap>(client, ns), owned.clone())
        .owns(api::<PodDisruptionBudget>(client, ns), owned)
        .graceful_shutdown_on(turned_true(stop_rx.clone()))
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Err(e) = result {
                debug!(controller = cluster::CONTROLLER, error = %e, "reconcile not run");
            }
        });

    // A cluster change (e.g. its bootstrap address appearing) re-runs its topics.
    let topics_of_cluster = move |kc: KafkaCluster| {
        let namespace = kc.namespace();
        let name = kc.name_any();
        topics
            .state()
            .into_iter()
            .filter(|t| t.namespace() == namespace && t.spec.cluster == name)
            .map(|t| ObjectRef::from(t.as_ref()))
            .collect::<Vec<_>>()
    };
    let topics = topic_controller
        .watches(api::<KafkaCluster>(client, ns), all, topics_of_cluster)
        .graceful_shutdown_on(turned_true(stop_rx))
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                debug!(controller = topic::CONTROLLER, error = %e, "reconcile not run");
            }
        });

    futures::join!(clusters, topics);
    info!("controllers stopped");
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the operator");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Mutex;
    use std::time::Duration;

    use ::http::{Request, Response};
    use kube::client::Body;
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const DEADLINE: Duration = Duration::from_secs(20);

    /// An API server that answers /version and empty lists, and keeps watches open.
    /// Records the listed paths.
    fn quiet_api_server(listed: Arc<Mutex<BTreeSet<String>>>) -> kube::Client {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        tokio::spawn(async move {
            let mut handle = std::pin::pin!(handle);
            let mut open_watches = Vec::new();
            while let Some((request, send)) = handle.next_request().await {
                let path = request.uri().path().to_string();
                let query = request.uri().query().unwrap_or_default().to_string();
                if query.contains("watch=true") {
                    // Leave it pending, as a quiet watch is.
                    open_watches.push(send);
                    continue;
                }
                let body = if path == "/version" {
                    json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0",
                           "gitCommit": "x", "gitTreeState": "clean",
                           "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go",
                           "compiler": "gc", "platform": "linux/amd64"})
                } else {
                    listed.lock().expect("lock").insert(path);
                    json!({"apiVersion": "v1", "kind": "List",
                           "metadata": {"resourceVersion": "1"}, "items": []})
                };
                let response = Response::builder()
                    .status(200)
                    .body(Body::from(serde_json::to_vec(&body).expect("json")))
                    .expect("response");
                send.send_response(response);
            }
        });
        kube::Client::new(service, "default")
    }

    async fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(request.as_bytes()).await.ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).await.ok()?;
        Some(out)
    }

    #[tokio::test]
    async fn runs_the_controllers_and_stops_on_shutdown() {
        let listed = Arc::new(Mutex::new(BTreeSet::new()));
        let client = quiet_api_server(listed.clone());
        let listener = http::bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let options = RunOptions {
            namespace: Some("ns".into()),
            leader_election: false,
            lease_name: "unused".into(),
            lease_namespace: None,
            http_listener: addr,
            broker_image: "sluice:test".into(),
            identity: "test".into(),
            max_partition_moves: 8,
        };
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let running = tokio::spawn(run_with_client(client, options, listener, shutdown_rx));

        // Ready once the API server answered, and every watched kind gets listed.
        let expected: BTreeSet<String> = [
            "/apis/kafka.sluice.dev/v1alpha1/namespaces/ns/kafkaclusters",
            "/apis/kafka.sluice.dev/v1alpha1/namespaces/ns/kafkatopics",
            "/apis/apps/v1/namespaces/ns/statefulsets",
            "/api/v1/namespaces/ns/services",
            "/api/v1/namespaces/ns/configmaps",
            "/apis/policy/v1/namespaces/ns/poddisruptionbudgets",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        let started = tokio::time::timeout(DEADLINE, async {
            loop {
                let ready = http_get(addr, "/readyz")
                    .await
                    .is_some_and(|r| r.starts_with("HTTP/1.1 200"));
                let all_listed = listed.lock().expect("lock").is_superset(&expected);
                if ready && all_listed {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(
            started.is_ok(),
            "not ready in time; listed {:?}",
            listed.lock().expect("lock")
        );
        let metrics = http_get(addr, "/metrics").await.expect("metrics");
        assert!(metrics.contains("sluice_operator_leader 1"), "{metrics}");

        shutdown_tx.send(true).expect("running");
        tokio::time::timeout(DEADLINE, running)
            .await
            .expect("stopped before the deadline")
            .expect("join")
            .expect("clean stop");
        assert!(
            http_get(addr, "/healthz").await.is_none(),
            "side port closed"
        );
    }
}
