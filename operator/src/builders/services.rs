//! The headless Service (stable per-broker DNS names) and the bootstrap Service.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{bootstrap_service_name, headless_service_name, metadata, selector_labels, HTTP_PORT};
use crate::crd::ListenerType;
use crate::validate::ValidatedCluster;

fn port(name: &str, number: i32) -> ServicePort {
    ServicePort {
        name: Some(name.to_string()),
        port: number,
        target_port: Some(IntOrString::String(name.to_string())),
        protocol: Some("TCP".to_string()),
        ..Default::default()
    }
}

/// `<cluster>-kafka-brokers`: headless, and publishing not-ready pods so brokers resolve
/// each other while they start (the quorum forms before any broker is ready).
pub fn headless_service(view: &ValidatedCluster) -> Service {
    Service {
        metadata: metadata(view, headless_service_name(&view.name)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_string()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(&view.name)),
            ports: Some(
                view.listeners
                    .iter()
                    .map(|l| port(&l.name, l.port))
                    .chain([port("http", HTTP_PORT)])
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `<cluster>-kafka-bootstrap`: a ClusterIP Service over the ready brokers' in-cluster
/// listener ports, the forwarding listener's first (what `kubectl port-forward
/// svc/<cluster>-kafka-bootstrap 9092` picks), then the internal one.
pub fn bootstrap_service(view: &ValidatedCluster) -> Service {
    let mut listeners: Vec<_> = view
        .listeners
        .iter()
        .filter(|l| !l.type_.is_external())
        .collect();
    listeners.sort_by_key(|l| l.type_ != ListenerType::Forwarding);
    Service {
        metadata: metadata(view, bootstrap_service_name(&view.name)),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_string()),
            selector: Some(selector_labels(&view.name)),
            ports: Some(listeners.iter().map(|l| port(&l.name, l.port)).collect()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::builders::test_support::{three_brokers, view};

    #[test]
    fn headless_service_publishes_not_ready_brokers() {
        let svc = headless_service(&three_brokers());
        assert_eq!(svc.metadata.name.as_deref(), Some("demo-kafka-brokers"));
        let spec = svc.spec.expect("spec");
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.publish_not_ready_addresses, Some(true));
        assert_eq!(spec.selector, Some(selector_labels("demo")));
        let ports: Vec<_> = spec
            .ports
            .expect("ports")
            .into_iter()
            .map(|p| (p.name.unwrap(), p.port, p.target_port.unwrap()))
            .collect();
        let named = |n: &str, p| (n.to_string(), p, IntOrString::String(n.into()));
        assert_eq!(
            ports,
            [
                named("local", 9092),
                named("internal", 9093),
                named("http", 9644)
            ]
        );
    }

    #[test]
    fn bootstrap_service_serves_kafka_only() {
        let svc = bootstrap_service(&three_brokers());
        assert_eq!(svc.metadata.name.as_deref(), Some("demo-kafka-bootstrap"));
        let spec = svc.spec.expect("spec");
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
        assert_eq!(spec.cluster_ip, None);
        assert_eq!(spec.publish_not_ready_addresses, None);
        assert_eq!(spec.selector, Some(selector_labels("demo")));
        let ports: Vec<_> = spec
            .ports
            .expect("ports")
            .into_iter()
            .map(|p| (p.name.unwrap(), p.port))
            .collect();
        assert_eq!(
            ports,
            [("local".to_string(), 9092), ("internal".to_string(), 9093)]
        );
    }

    #[test]
    fn bootstrap_puts_forwarding_first_and_leaves_external_listeners_out() {
        let v = view(
            json!({"replicas": 3, "storage": {"size": "1Gi"}, "listeners": [
                {"name": "internal", "type": "internal", "port": 9092},
                {"name": "external", "type": "nodePort", "port": 9094},
                {"name": "pf", "type": "forwarding", "port": 9095},
            ]}),
        );
        let ports = |svc: Service| -> Vec<(String, i32)> {
            svc.spec
                .unwrap()
                .ports
                .unwrap()
                .into_iter()
                .map(|p| (p.name.unwrap(), p.port))
                .collect()
        };
        assert_eq!(
            ports(bootstrap_service(&v)),
            [("pf".to_string(), 9095), ("internal".to_string(), 9092)]
        );
        assert_eq!(
            ports(headless_service(&v)),
            [
                ("internal".to_string(), 9092),
                ("external".to_string(), 9094),
                ("pf".to_string(), 9095),
                ("http".to_string(), 9644)
            ]
        );
    }
}
