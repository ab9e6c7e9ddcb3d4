//! Prometheus metrics: requests and latency by API, bytes in and out, partitions, log size.

use std::sync::atomic::AtomicI64;
use std::time::Duration;

use kafka_protocol::messages::ApiKey;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::replica::ReplicationTraffic;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabel {
    api: String,
}

/// The broker's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    requests: Family<ApiLabel, Counter>,
    forwarded: Family<ApiLabel, Counter>,
    latency: Family<ApiLabel, Histogram>,
    response_bytes: Counter,
    bytes_in: Counter,
    bytes_out: Counter,
    produced_bytes: Counter,
    pub connections: Gauge,
    pub partitions: Gauge,
    pub log_size_bytes: Gauge<i64, AtomicI64>,
    pub segments: Gauge,
    pub groups: Gauge,
    pub group_members: Gauge,
    pub leader_partitions: Gauge,
    pub under_replicated_partitions: Gauge,
    pub under_min_isr_partitions: Gauge,
    pub out_of_sync_replicas: Gauge,
    pub is_controller: Gauge,
}

impl Metrics {
    /// The registry, with the replica fetchers' byte counters in it.
    pub fn new(traffic: &ReplicationTraffic) -> Metrics {
        let mut registry = Registry::with_prefix("sluice");
        registry.register(
            "replica_fetched_bytes",
            "Record batch bytes this broker's follower replicas copied from leaders",
            traffic.fetched_bytes.clone(),
        );
        registry.register(
            "replica_catch_up_bytes",
            "Bytes copied while out of the ISR: new replicas of a reassignment (data moved \
             by scaling), restarted and lagging followers",
            traffic.catch_up_bytes.clone(),
        );
        let requests = Family::<ApiLabel, Counter>::default();
        // 50 µs .. ~26 s: covers a cached fetch up to a long poll.
        let latency = Family::<ApiLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.00005, 2.0, 20))
        });
        let forwarded = Family::<ApiLabel, Counter>::default();
        let m = Metrics {
            requests: requests.clone(),
            forwarded: forwarded.clone(),
            latency: latency.clone(),
            response_bytes: Counter::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            produced_bytes: Counter::default(),
            connections: Gauge::default(),
            partitions: Gauge::default(),
            log_size_bytes: Gauge::default(),
            segments: Gauge::default(),
            groups: Gauge::default(),
            group_members: Gauge::default(),
            leader_partitions: Gauge::default(),
            under_replicated_partitions: Gauge::default(),
            under_min_isr_partitions: Gauge::default(),
            out_of_sync_replicas: Gauge::default(),
            is_controller: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("requests", "Requests handled, by API", requests);
        registry.register(
            "forwarded_requests",
            "Requests a forwarding listener sent on to the brokers owning them, by API",
            forwarded,
        );
        registry.register(
            "request_duration_seconds",
            "Time from request decoded to response encoded, by API",
            latency,
        );
        registry.register(
            "response_bytes",
            "Bytes of encoded responses",
            m.response_bytes.clone(),
        );
        registry.register(
            "bytes_in",
            "Bytes of produce requests received",
            m.bytes_in.clone(),
        );
        registry.register(
            "bytes_out",
            "Record bytes served by fetch",
            m.bytes_out.clone(),
        );
        registry.register(
            "produced_record_bytes",
            "Record batch bytes appended to logs",
            m.produced_bytes.clone(),
        );
        registry.register(
            "connections",
            "Open client connections",
            m.connections.clone(),
        );
        registry.register(
            "partitions",
            "Partitions hosted by this broker",
            m.partitions.clone(),
        );
        registry.register(
            "log_size_bytes",
            "Bytes of log segments on disk",
            m.log_size_bytes.clone(),
        );
        registry.register("log_segments", "Log segments on disk", m.segments.clone());
        registry.register(
            "consumer_groups",
            "Consumer groups known to the coordinator",
            m.groups.clone(),
        );
        registry.register(
            "consumer_group_members",
            "Members of all consumer groups",
            m.group_members.clone(),
        );
        registry.register(
            "leader_partitions",
            "Partitions this broker leads",
            m.leader_partitions.clone(),
        );
        registry.register(
            "under_replicated_partitions",
            "Partitions led here with fewer in-sync replicas than replicas",
            m.under_replicated_partitions.clone(),
        );
        registry.register(
            "under_min_isr_partitions",
            "Partitions led here with fewer in-sync replicas than min.insync.replicas",
            m.under_min_isr_partitions.clone(),
        );
        registry.register(
            "out_of_sync_replicas",
            "Partitions followed here while this broker is not in their ISR",
            m.out_of_sync_replicas.clone(),
        );
        registry.register(
            "is_controller",
            "1 on the broker that leads the metadata quorum",
            m.is_controller.clone(),
        );
        Metrics { registry, ..m }
    }

    pub fn record_request(&self, api: ApiKey, elapsed: Duration, response_bytes: usize) {
        let label = ApiLabel {
            api: format!("{api:?}"),
        };
        self.requests.get_or_create(&label).inc();
        self.latency
            .get_or_create(&label)
            .observe(elapsed.as_secs_f64());
        self.response_bytes.inc_by(response_bytes as u64);
    }

    /// A request answered by other brokers through a forwarding listener.
    pub fn forwarded(&self, api: ApiKey) {
        self.forwarded
            .get_or_create(&ApiLabel {
                api: format!("{api:?}"),
            })
            .inc();
    }

    pub fn bytes_in(&self, n: usize) {
        self.bytes_in.inc_by(n as u64);
    }

    pub fn bytes_out(&self, n: usize) {
        self.bytes_out.inc_by(n as u64);
    }

    pub fn records_appended(&self, bytes: usize) {
        self.produced_bytes.inc_by(bytes as u64);
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
