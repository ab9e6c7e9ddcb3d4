//! Listeners: the broker settings that name them, each broker's advertised addresses (a
//! per-pod properties file), and the Services of external (`nodePort`, `loadBalancer`)
//! listeners.
//!
//! Every broker reads two files: `server.properties` (the same for all) and
//! `<pod>.properties` (its own `advertised.listeners`), both from the cluster's ConfigMap;
//! the container's args name the second with `$(POD_NAME)`, which Kubernetes expands. A
//! nodePort listener advertises `${env:HOST_IP}:<the broker Service's nodePort>`: the broker
//! expands `${env:HOST_IP}` (the node's IP from the downward API), the operator writes the
//! nodePort it read back from the applied Service. A loadBalancer listener advertises the
//! broker Service's ingress address; until it has one, the broker's file leaves that listener
//! out of `listeners` (it is not served rather than advertised with a wrong address) and the
//! controller does not start brokers that have none yet.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{headless_service_name, metadata, pod_name, selector_labels, statefulset_name};
use crate::crd::ListenerType;
use crate::validate::{Listener, ValidatedCluster};

/// Label on external listener Services naming their listener (for finding stale ones).
pub const LISTENER_LABEL: &str = "kafka.sluice.dev/listener";
/// The StatefulSet controller's label with the pod name, selecting one broker.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// Env var with the node's IP (downward API `status.hostIP`), for nodePort listeners.
pub const HOST_IP_ENV: &str = "HOST_IP";

/// The per-broker Service of an external listener: `<cluster>-kafka-<ordinal>-<listener>`.
pub fn external_service_name(
    cluster: &str,
    ordinal: impl std::fmt::Display,
    listener: &str,
) -> String {
    format!("{}-{ordinal}-{listener}", statefulset_name(cluster))
}

/// The bootstrap Service of an external listener: `<cluster>-kafka-<listener>-bootstrap`.
pub fn external_bootstrap_service_name(cluster: &str, listener: &str) -> String {
    format!("{}-{listener}-bootstrap", statefulset_name(cluster))
}

/// ConfigMap key (and file name) of a broker's own settings: `<pod>.properties`.
pub fn pod_config_file(pod: &str) -> String {
    format!("{pod}.properties")
}

/// `NAME://0.0.0.0:PORT,...` for `listeners`.
fn bind_list<'a>(listeners: impl Iterator<Item = &'a Listener>) -> String {
    listeners
        .map(|l| format!("{}://0.0.0.0:{}", l.kafka_name, l.port))
        .collect::<Vec<_>>()
        .join(",")
}

/// The cluster-wide listener settings of `server.properties`.
pub(super) fn listener_settings(view: &ValidatedCluster) -> BTreeMap<String, String> {
    let map = view
        .listeners
        .iter()
        .map(|l| format!("{}:PLAINTEXT", l.kafka_name))
        .collect::<Vec<_>>()
        .join(",");
    let mut out = BTreeMap::from([
        ("listeners".to_string(), bind_list(view.listeners.iter())),
        ("listener.security.protocol.map".to_string(), map),
        (
            "inter.broker.listener.name".to_string(),
            view.internal_listener().kafka_name.clone(),
        ),
    ]);
    if let Some(f) = view.forwarding_listener() {
        out.insert(
            "forwarding.listener.names".to_string(),
            f.kafka_name.clone(),
        );
    }
    out
}

/// What the applied external Services give the brokers to advertise: by (listener name,
/// ordinal), `host:port` (a nodePort listener's host is `${env:HOST_IP}`). Absent: not known
/// yet (a load balancer without an address).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExternalAddresses {
    /// Advertised address by (listener, ordinal).
    pub brokers: BTreeMap<(String, i32), String>,
}

impl ExternalAddresses {
    /// Read from the Services as stored (with allocated nodePorts and load-balancer status).
    pub fn from_services(view: &ValidatedCluster, services: &[Service]) -> Self {
        let mut brokers = BTreeMap::new();
        for l in view.external_listeners() {
            for ordinal in 0..view.replicas.max(0) {
                let name = external_service_name(&view.name, ordinal, &l.name);
                let Some(svc) = services
                    .iter()
                    .find(|s| s.metadata.name.as_deref() == Some(name.as_str()))
                else {
                    continue;
                };
                if let Some(address) = service_address(l, svc) {
                    brokers.insert((l.name.clone(), ordinal), address);
                }
            }
        }
        ExternalAddresses { brokers }
    }

    /// The number of leading ordinals whose every external listener has an address: the
    /// brokers that can start now.
    pub fn addressable_brokers(&self, view: &ValidatedCluster) -> i32 {
        let external: Vec<&Listener> = view.external_listeners().collect();
        (0..view.replicas.max(0))
            .find(|&o| {
                external
                    .iter()
                    .any(|l| !self.brokers.contains_key(&(l.name.clone(), o)))
            })
            .unwrap_or(view.replicas.max(0))
    }
}

/// What a stored external Service makes the listener's address: `${env:HOST_IP}:<nodePort>`
/// or `<ingress ip or hostname>:<port>`; `None` while not allocated or assigned.
pub fn service_address(listener: &Listener, svc: &Service) -> Option<String> {
    match listener.type_ {
        ListenerType::NodePort => node_port(svc).map(|p| format!("${{env:{HOST_IP_ENV}}}:{p}")),
        ListenerType::LoadBalancer => {
            load_balancer_host(svc).map(|h| format!("{h}:{}", listener.port))
        }
        _ => None,
    }
}

/// The first port's allocated nodePort.
pub fn node_port(svc: &Service) -> Option<i32> {
    svc.spec
        .as_ref()?
        .ports
        .as_ref()?
        .first()?
        .node_port
        .filter(|p| *p > 0)
}

/// The first load-balancer ingress address (IP, else hostname).
pub fn load_balancer_host(svc: &Service) -> Option<String> {
    let ingress = svc
        .status
        .as_ref()?
        .load_balancer
        .as_ref()?
        .ingress
        .as_ref()?
        .first()?;
    ingress
        .ip
        .clone()
        .filter(|s| !s.is_empty())
        .or_else(|| ingress.hostname.clone().filter(|s| !s.is_empty()))
}

/// The address broker `ordinal` advertises on `listener`, `None` while unknown.
fn advertised(
    view: &ValidatedCluster,
    listener: &Listener,
    ordinal: i32,
    external: &ExternalAddresses,
) -> Option<String> {
    match listener.type_ {
        ListenerType::Internal => Some(format!(
            "{}.{}.{}.svc:{}",
            pod_name(&view.name, ordinal),
            headless_service_name(&view.name),
            view.namespace,
            listener.port
        )),
        ListenerType::Forwarding => Some(format!(
            "{}:{}",
            listener.advertised_host, listener.advertised_port
        )),
        ListenerType::NodePort | ListenerType::LoadBalancer => external
            .brokers
            .get(&(listener.name.clone(), ordinal))
            .cloned(),
    }
}

/// `<pod>.properties` of broker `ordinal`: its `advertised.listeners`, and, when an external
/// address is not known yet, `listeners` without that listener.
pub fn pod_properties(
    view: &ValidatedCluster,
    ordinal: i32,
    external: &ExternalAddresses,
) -> String {
    let mut advertised_list = Vec::new();
    let mut served = Vec::new();
    for l in &view.listeners {
        if let Some(address) = advertised(view, l, ordinal, external) {
            advertised_list.push(format!("{}://{address}", l.kafka_name));
            served.push(l);
        }
    }
    let mut out = format!(
        "# Generated by sluice-operator: broker {ordinal}'s own settings, read after server.properties.\n\
         advertised.listeners={}\n",
        advertised_list.join(",")
    );
    if served.len() < view.listeners.len() {
        out.push_str("# Some external addresses are not known yet: those listeners wait.\n");
        out.push_str(&format!("listeners={}\n", bind_list(served.into_iter())));
    }
    out
}

/// A comment for `server.properties` describing what every broker advertises. It makes the
/// configuration hash follow the advertised addresses' shape (a changed forwarding address
/// rolls the brokers), while the per-broker values (nodePorts) stay out of it, so adding a
/// broker does not restart the others.
pub(super) fn advertised_summary(view: &ValidatedCluster) -> String {
    const ORDINAL: &str = "<ordinal>";
    let parts = view
        .listeners
        .iter()
        .map(|l| {
            let address = match l.type_ {
                ListenerType::Internal => format!(
                    "<pod>.{}.{}.svc:{}",
                    headless_service_name(&view.name),
                    view.namespace,
                    l.port
                ),
                ListenerType::Forwarding => format!("{}:{}", l.advertised_host, l.advertised_port),
                ListenerType::NodePort => format!(
                    "${{env:{HOST_IP_ENV}}}:<nodePort of {}>",
                    external_service_name(&view.name, ORDINAL, &l.name)
                ),
                ListenerType::LoadBalancer => format!(
                    "<load balancer of {}>:{}",
                    external_service_name(&view.name, ORDINAL, &l.name),
                    l.port
                ),
            };
            format!("{}://{address}", l.kafka_name)
        })
        .collect::<Vec<_>>()
        .join(",");
    format!("# advertised.listeners (in <pod>.properties): {parts}\n")
}

fn service_type(listener: &Listener) -> &'static str {
    match listener.type_ {
        ListenerType::LoadBalancer => "LoadBalancer",
        _ => "NodePort",
    }
}

fn external_service(
    view: &ValidatedCluster,
    listener: &Listener,
    name: String,
    selector: BTreeMap<String, String>,
) -> Service {
    let mut meta = metadata(view, name);
    meta.labels
        .get_or_insert_with(Default::default)
        .insert(LISTENER_LABEL.to_string(), listener.name.clone());
    Service {
        metadata: meta,
        spec: Some(ServiceSpec {
            type_: Some(service_type(listener).to_string()),
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some(listener.name.clone()),
                port: listener.port,
                target_port: Some(IntOrString::String(listener.name.clone())),
                protocol: Some("TCP".to_string()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The Services of the external listeners: per broker (ordinals `0..replicas`, selecting
/// its pod) and one bootstrap Service each (selecting every broker).
pub fn external_services(view: &ValidatedCluster) -> Vec<Service> {
    let mut out = Vec::new();
    for l in view.external_listeners() {
        for ordinal in 0..view.replicas.max(0) {
            let mut selector = selector_labels(&view.name);
            selector.insert(POD_NAME_LABEL.to_string(), pod_name(&view.name, ordinal));
            out.push(external_service(
                view,
                l,
                external_service_name(&view.name, ordinal, &l.name),
                selector,
            ));
        }
        out.push(external_service(
            view,
            l,
            external_bootstrap_service_name(&view.name, &l.name),
            selector_labels(&view.name),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, ServiceStatus};
    use serde_json::json;

    use super::*;
    use crate::builders::test_support::{three_brokers, view};

    fn with_listeners(listeners: serde_json::Value) -> ValidatedCluster {
        view(json!({"replicas": 3, "storage": {"size": "1Gi"}, "listeners": listeners}))
    }

    fn external() -> ValidatedCluster {
        with_listeners(json!([
            {"name": "internal", "type": "internal", "port": 9093},
            {"name": "local", "type": "forwarding", "port": 9092, "advertisedPort": 19092},
            {"name": "external", "type": "nodePort", "port": 9094},
            {"name": "lb", "type": "loadBalancer", "port": 9095},
        ]))
    }

    #[test]
    fn default_listener_settings() {
        let s = listener_settings(&three_brokers());
        assert_eq!(
            s["listeners"],
            "LOCAL://0.0.0.0:9092,INTERNAL://0.0.0.0:9093"
        );
        assert_eq!(
            s["listener.security.protocol.map"],
            "LOCAL:PLAINTEXT,INTERNAL:PLAINTEXT"
        );
        assert_eq!(s["inter.broker.listener.name"], "INTERNAL");
        assert_eq!(s["forwarding.listener.names"], "LOCAL");
    }

    #[test]
    fn without_forwarding_there_is_no_forwarding_setting() {
        let v = with_listeners(json!([{"name": "internal", "type": "internal", "port": 9092}]));
        let s = listener_settings(&v);
        assert_eq!(s["listeners"], "INTERNAL://0.0.0.0:9092");
        assert!(!s.contains_key("forwarding.listener.names"));
    }

    #[test]
    fn default_pod_properties_advertise_localhost_and_the_pod_dns_name() {
        let v = three_brokers();
        let text = pod_properties(&v, 1, &ExternalAddresses::default());
        assert!(text.starts_with("# Generated by sluice-operator"));
        let lines: Vec<_> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            ["advertised.listeners=LOCAL://localhost:9092,\
              INTERNAL://demo-kafka-1.demo-kafka-brokers.ns.svc:9093"]
        );
    }

    fn stored(svc: &Service, node_port: Option<i32>, ingress: Option<(&str, &str)>) -> Service {
        let mut s = svc.clone();
        if let Some(p) = node_port {
            s.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].node_port = Some(p);
        }
        if let Some((ip, host)) = ingress {
            s.status = Some(ServiceStatus {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: Some(vec![LoadBalancerIngress {
                        ip: (!ip.is_empty()).then(|| ip.to_string()),
                        hostname: (!host.is_empty()).then(|| host.to_string()),
                        ..Default::default()
                    }]),
                }),
                ..Default::default()
            });
        }
        s
    }

    #[test]
    fn external_services_per_broker_and_bootstrap() {
        let v = external();
        let services = external_services(&v);
        let names: Vec<_> = services
            .iter()
            .map(|s| s.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "demo-kafka-0-external",
                "demo-kafka-1-external",
                "demo-kafka-2-external",
                "demo-kafka-external-bootstrap",
                "demo-kafka-0-lb",
                "demo-kafka-1-lb",
                "demo-kafka-2-lb",
                "demo-kafka-lb-bootstrap",
            ]
        );
        let broker = &services[1];
        let spec = broker.spec.as_ref().unwrap();
        assert_eq!(spec.type_.as_deref(), Some("NodePort"));
        let sel = spec.selector.as_ref().unwrap();
        assert_eq!(sel[POD_NAME_LABEL], "demo-kafka-1");
        assert_eq!(sel["app.kubernetes.io/instance"], "demo");
        let port = &spec.ports.as_ref().unwrap()[0];
        assert_eq!((port.name.as_deref(), port.port), (Some("external"), 9094));
        assert_eq!(
            port.target_port,
            Some(IntOrString::String("external".into()))
        );
        assert_eq!(port.node_port, None, "the API server allocates it");
        assert_eq!(
            broker.metadata.labels.as_ref().unwrap()[LISTENER_LABEL],
            "external"
        );
        assert_eq!(
            broker.metadata.owner_references,
            Some(vec![v.owner.clone()])
        );
        let bootstrap = &services[3].spec.as_ref().unwrap();
        assert_eq!(bootstrap.selector, Some(selector_labels("demo")));
        assert_eq!(
            services[4].spec.as_ref().unwrap().type_.as_deref(),
            Some("LoadBalancer")
        );
    }

    #[test]
    fn addresses_from_stored_services() {
        let v = external();
        let built = external_services(&v);
        let stored_services = vec![
            stored(&built[0], Some(31000), None),
            stored(&built[1], Some(31001), None),
            stored(&built[2], Some(31002), None),
            stored(&built[4], None, Some(("203.0.113.7", ""))),
            stored(&built[5], None, Some(("", "lb1.example.com"))),
            stored(&built[6], None, None),
        ];
        let addresses = ExternalAddresses::from_services(&v, &stored_services);
        assert_eq!(
            addresses.brokers[&("external".to_string(), 1)],
            "${env:HOST_IP}:31001"
        );
        assert_eq!(
            addresses.brokers[&("lb".to_string(), 0)],
            "203.0.113.7:9095"
        );
        assert_eq!(
            addresses.brokers[&("lb".to_string(), 1)],
            "lb1.example.com:9095"
        );
        assert!(!addresses.brokers.contains_key(&("lb".to_string(), 2)));
        assert_eq!(addresses.addressable_brokers(&v), 2);

        let p0 = pod_properties(&v, 0, &addresses);
        assert!(
            p0.contains(
                "advertised.listeners=INTERNAL://demo-kafka-0.demo-kafka-brokers.ns.svc:9093,\
                 LOCAL://localhost:19092,EXTERNAL://${env:HOST_IP}:31000,LB://203.0.113.7:9095\n"
            ),
            "{p0}"
        );
        assert!(!p0.contains("\nlisteners="), "every address known: {p0}");
        // Broker 2's load balancer has no address: LB is neither served nor advertised there.
        let p2 = pod_properties(&v, 2, &addresses);
        assert!(p2.contains("EXTERNAL://${env:HOST_IP}:31002\n"), "{p2}");
        assert!(!p2.contains("LB://"), "{p2}");
        assert!(
            p2.contains(
                "\nlisteners=INTERNAL://0.0.0.0:9093,LOCAL://0.0.0.0:9092,EXTERNAL://0.0.0.0:9094\n"
            ),
            "{p2}"
        );
    }

    #[test]
    fn no_external_listener_means_every_broker_can_start() {
        let v = three_brokers();
        assert!(external_services(&v).is_empty());
        assert_eq!(ExternalAddresses::default().addressable_brokers(&v), 3);
    }

    #[test]
    fn summary_names_every_listener() {
        let s = advertised_summary(&external());
        assert_eq!(
            s,
            "# advertised.listeners (in <pod>.properties): \
             INTERNAL://<pod>.demo-kafka-brokers.ns.svc:9093,LOCAL://localhost:19092,\
             EXTERNAL://${env:HOST_IP}:<nodePort of demo-kafka-<ordinal>-external>,\
             LB://<load balancer of demo-kafka-<ordinal>-lb>:9095\n"
        );
    }
}
