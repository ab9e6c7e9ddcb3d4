//! Prometheus metrics of the controllers, served on `/metrics`.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of per-controller series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// `kafkacluster` or `kafkatopic`.
    pub controller: String,
}

/// Labels of error series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// `kafkacluster` or `kafkatopic`.
    pub controller: String,
    /// What failed: `kube`, `kafka`, `finalizer`, ...
    pub kind: String,
}

/// Labels of per-cluster series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    /// `namespace/name` of the `KafkaCluster`.
    pub cluster: String,
}

/// Labels of per-operation series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    /// `ScaleUp` or `ScaleDown`.
    pub kind: String,
}

type HistogramFamily = Family<ControllerLabels, Histogram, fn() -> Histogram>;
type OperationHistogramFamily = Family<OperationLabels, Histogram, fn() -> Histogram>;

fn operation_histogram() -> Histogram {
    // 1 s .. ~2 h
    Histogram::new(exponential_buckets(1.0, 2.0, 14))
}

fn duration_histogram() -> Histogram {
    // 5 ms .. ~20 s
    Histogram::new(exponential_buckets(0.005, 2.0, 13))
}

/// The operator's metrics and the registry that exposes them.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ControllerLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    durations: HistogramFamily,
    leader: Gauge,
    moves_started: Family<ClusterLabels, Counter>,
    moves_pending: Family<ClusterLabels, Gauge>,
    operation_durations: OperationHistogramFamily,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Register every series.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sluice_operator");
        let reconciles = Family::<ControllerLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let durations: HistogramFamily = Family::new_with_constructor(duration_histogram);
        let leader = Gauge::default();
        let moves_started = Family::<ClusterLabels, Counter>::default();
        let moves_pending = Family::<ClusterLabels, Gauge>::default();
        let operation_durations: OperationHistogramFamily =
            Family::new_with_constructor(operation_histogram);
        registry.register(
            "partition_moves_started",
            "Partition reassignments started by scaling workflows, per cluster",
            moves_started.clone(),
        );
        registry.register(
            "partition_moves_pending",
            "Partitions a running scaling workflow still has to move, per cluster",
            moves_pending.clone(),
        );
        registry.register(
            "operation_duration_seconds",
            "Time from start to end of finished scaling workflows, per kind",
            operation_durations.clone(),
        );
        registry.register(
            "reconciliations",
            "Reconciles run, per controller",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, per controller and kind of error",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile, per controller",
            durations.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader lease and runs the controllers",
            leader.clone(),
        );
        Metrics {
            registry,
            reconciles,
            errors,
            durations,
            leader,
            moves_started,
            moves_pending,
            operation_durations,
        }
    }

    /// Record that a scaling workflow of `cluster` started `started` moves and has
    /// `pending` partitions left to move.
    pub fn observe_moves(&self, cluster: &str, started: usize, pending: usize) {
        let labels = ClusterLabels {
            cluster: cluster.to_string(),
        };
        self.moves_started
            .get_or_create(&labels)
            .inc_by(u64::try_from(started).unwrap_or(u64::MAX));
        self.moves_pending
            .get_or_create(&labels)
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
    }

    /// Record a finished scaling workflow of `kind` that took `elapsed`.
    pub fn observe_operation(&self, kind: &str, elapsed: Duration) {
        self.operation_durations
            .get_or_create(&OperationLabels {
                kind: kind.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Count one reconcile of `controller` that took `elapsed`, failing with an error of
    /// `error_kind` if any.
    pub fn observe(&self, controller: &str, elapsed: Duration, error_kind: Option<&str>) {
        let labels = ControllerLabels {
            controller: controller.to_string(),
        };
        self.reconciles.get_or_create(&labels).inc();
        self.durations
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        if let Some(kind) = error_kind {
            self.errors
                .get_or_create(&ErrorLabels {
                    controller: controller.to_string(),
                    kind: kind.to_string(),
                })
                .inc();
        }
    }

    /// Record whether this replica leads.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encoding metrics into a String");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_durations_and_errors_by_kind() {
        let m = Metrics::new();
        m.observe("kafkatopic", Duration::from_millis(20), None);
        m.observe("kafkatopic", Duration::from_millis(30), Some("kafka"));
        m.observe("kafkacluster", Duration::from_millis(1), Some("kube"));
        m.set_leader(true);
        m.observe_moves("ns/demo", 4, 10);
        m.observe_moves("ns/demo", 2, 6);
        m.observe_operation("ScaleUp", Duration::from_secs(90));
        let text = m.encode();
        assert!(
            text.contains("sluice_operator_partition_moves_started_total{cluster=\"ns/demo\"} 6"),
            "{text}"
        );
        assert!(text.contains("sluice_operator_partition_moves_pending{cluster=\"ns/demo\"} 6"));
        assert!(
            text.contains("sluice_operator_operation_duration_seconds_count{kind=\"ScaleUp\"} 1")
        );
        assert!(
            text.contains("sluice_operator_reconciliations_total{controller=\"kafkatopic\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("sluice_operator_reconciliations_total{controller=\"kafkacluster\"} 1")
        );
        assert!(text.contains(
            "sluice_operator_reconcile_errors_total{controller=\"kafkatopic\",kind=\"kafka\"} 1"
        ));
        assert!(text.contains(
            "sluice_operator_reconcile_errors_total{controller=\"kafkacluster\",kind=\"kube\"} 1"
        ));
        assert!(text.contains(
            "sluice_operator_reconcile_duration_seconds_count{controller=\"kafkatopic\"} 2"
        ));
        assert!(text.contains("sluice_operator_leader 1"));
        assert!(text.ends_with("# EOF\n"));
    }
}
