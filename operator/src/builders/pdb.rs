//! PodDisruptionBudget: at most one broker down by voluntary disruption (drains, upgrades).

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{metadata, selector_labels, statefulset_name};
use crate::validate::ValidatedCluster;

/// The cluster's PodDisruptionBudget (`maxUnavailable: 1`).
pub fn pod_disruption_budget(view: &ValidatedCluster) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: metadata(view, statefulset_name(&view.name)),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&view.name)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builders::test_support::three_brokers;

    #[test]
    fn one_broker_at_a_time() {
        let pdb = pod_disruption_budget(&three_brokers());
        assert_eq!(pdb.metadata.name.as_deref(), Some("demo-kafka"));
        let spec = pdb.spec.expect("spec");
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(spec.min_available, None);
        assert_eq!(
            spec.selector.and_then(|s| s.match_labels),
            Some(selector_labels("demo"))
        );
    }
}
