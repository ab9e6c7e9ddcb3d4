//! The headless Service (stable per-broker DNS names) and the bootstrap Service.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{
    bootstrap_service_name, headless_service_name, metadata, selector_labels, HTTP_PORT, KAFKA_PORT,
};
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
            ports: Some(vec![port("kafka", KAFKA_PORT), port("http", HTTP_PORT)]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `<cluster>-kafka-bootstrap`: a ClusterIP Service over the ready brokers' Kafka port.
pub fn bootstrap_service(view: &ValidatedCluster) -> Service {
    Service {
        metadata: metadata(view, bootstrap_service_name(&view.name)),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_string()),
            selector: Some(selector_labels(&view.name)),
            ports: Some(vec![port("kafka", KAFKA_PORT)]),
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
    fn headless_service_publishes_not_ready_brokers() {
        let svc = headless_service(&three_brokers());
        assert_eq!(svc.metadata.name.as_deref(), Some("demo-kafka-brokers"));
        let spec = svc.spec.expect("spec");
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.publish_not_ready_addresses, Some(true));
        assert_eq!(spec.selector, Some(selector_labels("demo")));
        let ports = spec.ports.expect("ports");
        assert_eq!(ports.len(), 2);
        assert_eq!(
            (ports[0].name.as_deref(), ports[0].port),
            (Some("kafka"), 9092)
        );
        assert_eq!(
            ports[0].target_port,
            Some(IntOrString::String("kafka".into()))
        );
        assert_eq!(
            (ports[1].name.as_deref(), ports[1].port),
            (Some("http"), 9644)
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
        let ports = spec.ports.expect("ports");
        assert_eq!(ports.len(), 1);
        assert_eq!(
            (ports[0].name.as_deref(), ports[0].port),
            (Some("kafka"), 9092)
        );
    }
}
