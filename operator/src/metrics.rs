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

type HistogramFamily = Family<ControllerLabels, Histogram, fn() -> Histogram>;

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
        }
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
        let text = m.encode();
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
