//! Kafka's named listeners: `listeners`, `advertised.listeners`,
//! `listener.security.protocol.map`, `inter.broker.listener.name`, and Sluice's
//! `forwarding.listener.names`. Parsing and resolving them is pure; the server binds the result.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

/// The name the single-address forms (`HOST:PORT`, `PLAINTEXT://HOST:PORT`) give a listener.
pub const DEFAULT_NAME: &str = "PLAINTEXT";

/// Security protocols Kafka defines; listeners named after one map to it by default.
const PROTOCOLS: [&str; 4] = ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"];

/// One listener the broker serves, resolved from the settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Upper-case, as Kafka normalises listener names.
    pub name: String,
    pub bind: SocketAddr,
    /// `host:port` clients are told to use; `None` advertises the bound address.
    pub advertised: Option<(String, u16)>,
    /// Requests for partitions and groups owned elsewhere are sent on to their owner.
    pub forwarding: bool,
}

impl Listener {
    /// The advertised address, given the address actually bound (port 0 picks one).
    pub fn advertised_address(&self, bound: SocketAddr) -> (String, u16) {
        match &self.advertised {
            Some((host, port)) => (host.clone(), *port),
            None => (bound.ip().to_string(), bound.port()),
        }
    }
}

/// Every listener and which one other brokers use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerPlan {
    pub listeners: Vec<Listener>,
    /// Index into `listeners` of `inter.broker.listener.name`.
    pub inter_broker: usize,
}

/// Why the listener settings cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListenerError {
    #[error("`listeners` is empty")]
    Empty,
    #[error("listener `{0}` is listed twice in `listeners`")]
    Duplicate(String),
    #[error("`advertised.listeners` names `{0}`, which is not in `listeners`")]
    UnknownAdvertised(String),
    #[error("`advertised.listeners` has a `HOST:PORT` without a listener name, but there are several listeners: write `NAME://HOST:PORT`")]
    AmbiguousAdvertised,
    #[error("listener `{0}` has no security protocol: add `{0}:PLAINTEXT` to `listener.security.protocol.map`")]
    NoProtocol(String),
    #[error("listener `{name}` uses security protocol `{protocol}`: only PLAINTEXT is served")]
    UnsupportedProtocol { name: String, protocol: String },
    #[error("`inter.broker.listener.name` is `{0}`, which is not in `listeners`")]
    UnknownInterBroker(String),
    #[error(
        "several listeners and no `inter.broker.listener.name`: say which one other brokers use"
    )]
    NoInterBroker,
    #[error("`forwarding.listener.names` names `{0}`, which is not in `listeners`")]
    UnknownForwarding(String),
    #[error("the inter-broker listener `{0}` cannot forward: forwarded requests arrive on it")]
    ForwardingInterBroker(String),
}

/// One `advertised.listeners` entry: the listener's name (`None` in the bare `HOST:PORT` form)
/// and its host and port.
pub type AdvertisedEntry = (Option<String>, (String, u16));

/// The listener settings as given, before they are resolved against each other (they may be set
/// in any order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSettings {
    /// `listeners`: name and bound address, in the order given.
    pub listeners: Vec<(String, SocketAddr)>,
    /// `advertised.listeners`: by name; `None` for the unnamed `HOST:PORT` form.
    pub advertised: Vec<AdvertisedEntry>,
    /// `listener.security.protocol.map`
    pub protocols: BTreeMap<String, String>,
    /// `inter.broker.listener.name`
    pub inter_broker: Option<String>,
    /// `forwarding.listener.names`
    pub forwarding: BTreeSet<String>,
}

impl Default for ListenerSettings {
    fn default() -> Self {
        ListenerSettings {
            listeners: vec![(
                DEFAULT_NAME.to_string(),
                SocketAddr::from(([127, 0, 0, 1], 9092)),
            )],
            advertised: Vec::new(),
            protocols: BTreeMap::new(),
            inter_broker: None,
            forwarding: BTreeSet::new(),
        }
    }
}

impl ListenerSettings {
    /// Checks the settings against each other.
    pub fn resolve(&self) -> Result<ListenerPlan, ListenerError> {
        if self.listeners.is_empty() {
            return Err(ListenerError::Empty);
        }
        let mut names = BTreeSet::new();
        for (name, _) in &self.listeners {
            if !names.insert(name.as_str()) {
                return Err(ListenerError::Duplicate(name.clone()));
            }
        }
        for (name, _) in &self.listeners {
            let protocol = self
                .protocols
                .get(name)
                .map(String::as_str)
                .or_else(|| PROTOCOLS.contains(&name.as_str()).then_some(name.as_str()))
                .ok_or_else(|| ListenerError::NoProtocol(name.clone()))?;
            if protocol != "PLAINTEXT" {
                return Err(ListenerError::UnsupportedProtocol {
                    name: name.clone(),
                    protocol: protocol.to_string(),
                });
            }
        }
        let mut advertised = BTreeMap::new();
        for (name, addr) in &self.advertised {
            let name = match name {
                Some(n) if names.contains(n.as_str()) => n.clone(),
                Some(n) => return Err(ListenerError::UnknownAdvertised(n.clone())),
                None if self.listeners.len() == 1 => self.listeners[0].0.clone(),
                None => return Err(ListenerError::AmbiguousAdvertised),
            };
            advertised.insert(name, addr.clone());
        }
        let inter_broker = match &self.inter_broker {
            Some(n) => self
                .listeners
                .iter()
                .position(|(name, _)| name == n)
                .ok_or_else(|| ListenerError::UnknownInterBroker(n.clone()))?,
            None if self.listeners.len() == 1 => 0,
            None => self
                .listeners
                .iter()
                .position(|(name, _)| name == DEFAULT_NAME)
                .ok_or(ListenerError::NoInterBroker)?,
        };
        for name in &self.forwarding {
            if !names.contains(name.as_str()) {
                return Err(ListenerError::UnknownForwarding(name.clone()));
            }
        }
        let inter_name = &self.listeners[inter_broker].0;
        if self.forwarding.contains(inter_name) {
            return Err(ListenerError::ForwardingInterBroker(inter_name.clone()));
        }
        let listeners = self
            .listeners
            .iter()
            .map(|(name, bind)| Listener {
                name: name.clone(),
                bind: *bind,
                advertised: advertised.get(name).cloned(),
                forwarding: self.forwarding.contains(name),
            })
            .collect();
        Ok(ListenerPlan {
            listeners,
            inter_broker,
        })
    }

    /// `listeners` as Kafka writes it.
    pub fn listeners_value(&self) -> String {
        self.listeners
            .iter()
            .map(|(name, addr)| format!("{name}://{addr}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `listener.security.protocol.map` as Kafka writes it.
    pub fn protocols_value(&self) -> String {
        self.protocols
            .iter()
            .map(|(name, protocol)| format!("{name}:{protocol}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `forwarding.listener.names`, comma-separated.
    pub fn forwarding_value(&self) -> String {
        self.forwarding
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `advertised.listeners` as Kafka writes it; `None` while unset.
    pub fn advertised_value(&self) -> Option<String> {
        if self.advertised.is_empty() {
            return None;
        }
        Some(
            self.advertised
                .iter()
                .map(|(name, (host, port))| match name {
                    Some(name) => format!("{name}://{}", join_host_port(host, *port)),
                    None => join_host_port(host, *port),
                })
                .collect::<Vec<_>>()
                .join(","),
        )
    }
}

/// The host a broker advertises on a forwarding listener: the configured host with its letters
/// upper-cased by the bits of the node id (`localhost`, `Localhost`, `lOcalhost`,
/// `LOcalhost`, ...). Every broker's address must differ, because librdkafka tells brokers
/// apart by `host:port` and merges brokers that share one; host names are case-insensitive,
/// so every variant still reaches the one tunnel. A host without letters (an IP address) is
/// returned as it is, and then librdkafka-based clients cannot use the listener.
pub fn distinct_host(host: &str, node_id: i32) -> String {
    let mut bits = node_id.unsigned_abs();
    host.chars()
        .map(|c| {
            if !c.is_ascii_alphabetic() {
                return c;
            }
            let upper = bits & 1 == 1;
            bits >>= 1;
            if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

/// `host:port`, with brackets around an IPv6 host.
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A listener name as Kafka normalises it: letters, digits, `_` and `-`, upper-cased.
fn listener_name(name: &str) -> Result<String, String> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(format!(
            "`{name}` is not a listener name (letters, digits, `_`, `-`)"
        ));
    }
    Ok(name.to_ascii_uppercase())
}

/// Splits `NAME://REST` (the name normalised) or a bare `REST`.
fn split_entry(entry: &str) -> Result<(Option<String>, &str), String> {
    match entry.split_once("://") {
        Some((name, rest)) => Ok((Some(listener_name(name)?), rest)),
        None => Ok((None, entry)),
    }
}

fn entries(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|e| !e.is_empty())
}

/// A bind address: an IP (or `localhost`) and port; an empty host means all interfaces, as in
/// Kafka's `PLAINTEXT://:9092`.
pub fn parse_bind_address(addr: &str) -> Result<SocketAddr, String> {
    let addr = if addr.starts_with(':') {
        format!("0.0.0.0{addr}")
    } else {
        addr.replace("localhost", "127.0.0.1")
    };
    addr.parse()
        .map_err(|_| format!("`{addr}`: expected HOST:PORT with an IP address host"))
}

/// `listeners`: `NAME://HOST:PORT,...`, or one `HOST:PORT` (named PLAINTEXT).
pub fn parse_listeners(value: &str) -> Result<Vec<(String, SocketAddr)>, String> {
    let mut out = Vec::new();
    for entry in entries(value) {
        let (name, addr) = split_entry(entry)?;
        out.push((
            name.unwrap_or_else(|| DEFAULT_NAME.to_string()),
            parse_bind_address(addr)?,
        ));
    }
    if out.is_empty() {
        return Err("expected NAME://HOST:PORT[,NAME://HOST:PORT...]".into());
    }
    Ok(out)
}

/// `advertised.listeners`: `NAME://HOST:PORT,...`, or one `HOST:PORT`.
pub fn parse_advertised(value: &str) -> Result<Vec<AdvertisedEntry>, String> {
    let mut out = Vec::new();
    for entry in entries(value) {
        let (name, addr) = split_entry(entry)?;
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| format!("`{entry}`: expected HOST:PORT"))?;
        let host = host.trim_matches(['[', ']']);
        if host.is_empty() {
            return Err(format!("`{entry}`: the host is empty"));
        }
        let port = port
            .parse()
            .map_err(|_| format!("`{entry}`: bad port `{port}`"))?;
        out.push((name, (host.to_string(), port)));
    }
    if out.is_empty() {
        return Err("expected NAME://HOST:PORT[,...]".into());
    }
    Ok(out)
}

/// `listener.security.protocol.map`: `NAME:PROTOCOL,...`.
pub fn parse_protocol_map(value: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for entry in entries(value) {
        let (name, protocol) = entry
            .split_once(':')
            .ok_or_else(|| format!("`{entry}`: expected NAME:PROTOCOL"))?;
        let protocol = protocol.trim().to_ascii_uppercase();
        if !PROTOCOLS.contains(&protocol.as_str()) {
            return Err(format!(
                "`{protocol}` is not a security protocol (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL)"
            ));
        }
        out.insert(listener_name(name.trim())?, protocol);
    }
    Ok(out)
}

/// A comma-separated list of listener names.
pub fn parse_names(value: &str) -> Result<BTreeSet<String>, String> {
    entries(value).map(listener_name).collect()
}

/// `inter.broker.listener.name`
pub fn parse_name(value: &str) -> Result<String, String> {
    listener_name(value.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(listeners: &str) -> ListenerSettings {
        ListenerSettings {
            listeners: parse_listeners(listeners).unwrap(),
            ..ListenerSettings::default()
        }
    }

    #[test]
    fn the_single_address_forms_are_one_plaintext_listener() {
        for value in [
            "127.0.0.1:9092",
            "PLAINTEXT://127.0.0.1:9092",
            "plaintext://localhost:9092",
        ] {
            let plan = settings(value).resolve().unwrap();
            assert_eq!(plan.listeners.len(), 1, "{value}");
            assert_eq!(plan.listeners[0].name, "PLAINTEXT");
            assert_eq!(plan.listeners[0].bind, "127.0.0.1:9092".parse().unwrap());
            assert_eq!(plan.inter_broker, 0);
        }
        assert_eq!(
            parse_listeners(":9093").unwrap()[0].1,
            "0.0.0.0:9093".parse().unwrap()
        );
    }

    #[test]
    fn named_listeners_resolve_with_their_advertised_addresses() {
        let mut s = settings("INTERNAL://0.0.0.0:9093,local://0.0.0.0:9092");
        s.advertised =
            parse_advertised("LOCAL://localhost:9092,INTERNAL://b-0.brokers.ns.svc:9093").unwrap();
        s.protocols = parse_protocol_map("INTERNAL:PLAINTEXT,LOCAL:plaintext").unwrap();
        s.inter_broker = Some(parse_name("internal").unwrap());
        s.forwarding = parse_names("LOCAL").unwrap();
        let plan = s.resolve().unwrap();
        assert_eq!(plan.inter_broker, 0);
        let local = &plan.listeners[1];
        assert_eq!(local.name, "LOCAL");
        assert!(local.forwarding);
        assert_eq!(
            local.advertised_address("0.0.0.0:1".parse().unwrap()),
            ("localhost".to_string(), 9092)
        );
        assert!(!plan.listeners[0].forwarding);
        assert_eq!(
            s.advertised_value().unwrap(),
            "LOCAL://localhost:9092,INTERNAL://b-0.brokers.ns.svc:9093"
        );
        assert_eq!(
            s.listeners_value(),
            "INTERNAL://0.0.0.0:9093,LOCAL://0.0.0.0:9092"
        );
    }

    #[test]
    fn forwarding_hosts_differ_by_node_id_in_case_only() {
        let hosts: Vec<String> = (0..8).map(|id| distinct_host("localhost", id)).collect();
        assert_eq!(hosts[0], "localhost");
        assert_eq!(hosts[1], "Localhost");
        assert_eq!(hosts[2], "lOcalhost");
        assert_eq!(hosts[3], "LOcalhost");
        let unique: BTreeSet<&String> = hosts.iter().collect();
        assert_eq!(unique.len(), 8);
        assert!(hosts.iter().all(|h| h.eq_ignore_ascii_case("localhost")));
        assert_eq!(distinct_host("10.0.0.1", 3), "10.0.0.1");
        assert_eq!(distinct_host("My-Host.example", 0), "my-host.example");
    }

    #[test]
    fn inconsistent_settings_are_refused_with_the_reason() {
        let two = "A://127.0.0.1:1,B://127.0.0.1:2";
        let map = parse_protocol_map("A:PLAINTEXT,B:PLAINTEXT").unwrap();
        let base = || ListenerSettings {
            protocols: map.clone(),
            inter_broker: Some("A".into()),
            ..settings(two)
        };
        assert_eq!(
            settings(two).resolve(),
            Err(ListenerError::NoProtocol("A".into()))
        );
        let mut s = base();
        s.protocols.insert("B".into(), "SSL".into());
        assert!(matches!(
            s.resolve(),
            Err(ListenerError::UnsupportedProtocol { .. })
        ));
        let mut s = base();
        s.inter_broker = None;
        assert_eq!(s.resolve(), Err(ListenerError::NoInterBroker));
        let mut s = base();
        s.inter_broker = Some("C".into());
        assert_eq!(
            s.resolve(),
            Err(ListenerError::UnknownInterBroker("C".into()))
        );
        let mut s = base();
        s.advertised = parse_advertised("C://h:1").unwrap();
        assert_eq!(
            s.resolve(),
            Err(ListenerError::UnknownAdvertised("C".into()))
        );
        let mut s = base();
        s.advertised = parse_advertised("h:1").unwrap();
        assert_eq!(s.resolve(), Err(ListenerError::AmbiguousAdvertised));
        let mut s = base();
        s.forwarding = parse_names("A").unwrap();
        assert_eq!(
            s.resolve(),
            Err(ListenerError::ForwardingInterBroker("A".into()))
        );
        let mut s = base();
        s.forwarding = parse_names("Z").unwrap();
        assert_eq!(
            s.resolve(),
            Err(ListenerError::UnknownForwarding("Z".into()))
        );
        let s = settings("A://127.0.0.1:1,a://127.0.0.1:2");
        assert_eq!(s.resolve(), Err(ListenerError::Duplicate("A".into())));
        assert!(parse_protocol_map("A:TLS").is_err());
        assert!(parse_listeners("A://example.com:1").is_err());
        assert!(parse_listeners("A B://1.2.3.4:1").is_err());
        assert!(parse_advertised("A://:1").is_err());
    }
}
