//! Broker configuration: Kafka's property names, read from (lowest to highest precedence)
//! built-in defaults, a properties file, `SLUICE_*` environment variables and `--set` flags.
//! Each setting is one entry of [`BROKER_CONFIGS`] (name, type, doc, parsing and checks);
//! README.md's table of broker settings is checked against it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::config_values::{ratio, ConfigType};
use crate::network::listeners::{self, ListenerSettings};

/// Errors while building a [`BrokerConfig`].
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown broker config `{0}` (see the configuration reference in README.md)")]
    UnknownKey(String),
    #[error("invalid value `{value}` for `{key}`: {reason}")]
    InvalidValue {
        key: String,
        value: String,
        reason: String,
    },
    #[error("cannot read config file {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: expected `key=value`")]
    Syntax { path: PathBuf, line: usize },
}

/// When the log is fsynced relative to acknowledging a produce request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Acknowledge only after the data is fsynced; concurrent producers share one fsync
    /// (group commit).
    Sync,
    /// Acknowledge once written to the OS; fsync every `log.flush.interval.ms` (Kafka's model,
    /// which relies on replication rather than fsync for durability).
    Interval,
}

/// Every broker setting, typed. Field docs name the Kafka property; [`BROKER_CONFIGS`] says
/// what it means and how it is parsed.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// `node.id`
    pub node_id: i32,
    /// `listeners`, `advertised.listeners`, `listener.security.protocol.map`,
    /// `inter.broker.listener.name` and `forwarding.listener.names`, as given; resolved against
    /// each other by [`ListenerSettings::resolve`] when the broker starts.
    pub listeners: ListenerSettings,
    /// `http.listener`: the HTTP side port for /metrics, /healthz, /readyz.
    pub http_listener: SocketAddr,
    /// `log.dirs`: the data directory.
    pub data_dir: PathBuf,
    /// `broker.rack`
    pub rack: Option<String>,
    /// `num.partitions`
    pub num_partitions: i32,
    /// `default.replication.factor`
    pub default_replication_factor: i16,
    /// `auto.create.topics.enable`
    pub auto_create_topics: bool,
    /// `message.max.bytes`: default for the topic config `max.message.bytes`.
    pub message_max_bytes: usize,
    /// `socket.request.max.bytes`: a larger request frame closes the connection.
    pub socket_request_max_bytes: usize,
    /// `queued.max.requests`: pipelined requests in flight per connection.
    pub queued_max_requests: usize,
    /// `log.segment.bytes`
    pub log_segment_bytes: u64,
    /// `log.roll.ms` (or `log.roll.hours`)
    pub log_roll_ms: i64,
    /// `log.retention.ms` (or `.minutes` / `.hours`); -1 keeps forever.
    pub log_retention_ms: i64,
    /// `log.retention.bytes`; -1 is unlimited.
    pub log_retention_bytes: i64,
    /// `log.retention.check.interval.ms`
    pub log_retention_check_interval: Duration,
    /// `log.index.interval.bytes`
    pub log_index_interval_bytes: u32,
    /// `log.index.size.max.bytes`
    pub log_index_size_max_bytes: u32,
    /// `log.message.timestamp.type`: `CreateTime` or `LogAppendTime`.
    pub log_message_timestamp_type_log_append: bool,
    /// `log.cleanup.policy`: `delete`, `compact` or both (`compact,delete`).
    pub log_cleanup_policy: String,
    /// `log.cleaner.delete.retention.ms`: default for the topic config `delete.retention.ms`.
    pub log_cleaner_delete_retention_ms: i64,
    /// `log.cleaner.min.compaction.lag.ms`: default for `min.compaction.lag.ms`.
    pub log_cleaner_min_compaction_lag_ms: i64,
    /// `log.cleaner.min.cleanable.ratio`: default for `min.cleanable.dirty.ratio`.
    pub log_cleaner_min_cleanable_ratio: f64,
    /// `log.cleaner.backoff.ms`: how often the cleaner looks at compacted partitions.
    pub log_cleaner_backoff: Duration,
    /// `min.insync.replicas`
    pub min_insync_replicas: i32,
    /// `log.flush.policy` (Sluice): `sync` or `interval`.
    pub flush_policy: FlushPolicy,
    /// `log.flush.interval.ms`
    pub flush_interval: Duration,
    /// `fetch.max.bytes`: cap on one fetch response, whatever the client asks for.
    pub fetch_max_bytes: usize,
    /// `cluster.id` (Sluice): fixed cluster id; generated and stored on first start otherwise.
    pub cluster_id: Option<String>,
    /// `offsets.topic.num.partitions`
    pub offsets_topic_num_partitions: i32,
    /// `offsets.retention.minutes`, in ms: committed offsets of a group without members expire.
    pub offsets_retention_ms: i64,
    /// `offsets.retention.check.interval.ms`
    pub offsets_retention_check_interval: Duration,
    /// `offset.metadata.max.bytes`
    pub offset_metadata_max_bytes: usize,
    /// `group.initial.rebalance.delay.ms`
    pub group_initial_rebalance_delay: Duration,
    /// `group.min.session.timeout.ms`
    pub group_min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`
    pub group_max_session_timeout_ms: i32,
    /// `group.max.size`
    pub group_max_size: usize,
    /// `advertised.http.listener` (Sluice): the `HOST:PORT` other brokers use to reach this
    /// broker's HTTP side port (cluster RPC). Defaults to the advertised host with the bound
    /// HTTP port.
    pub advertised_http_listener: Option<String>,
    /// `controller.quorum.bootstrap.servers`: `id@host:httpPort` of the brokers that form the
    /// cluster the first time; later brokers join through them. Empty: a single-broker cluster.
    pub quorum_bootstrap_servers: Vec<(i32, String)>,
    /// `controller.quorum.voter.count` (Sluice): metadata quorum voters picked from live brokers
    /// (1, 3 or 5).
    pub quorum_voter_count: usize,
    /// `controller.quorum.election.timeout.ms`
    pub quorum_election_timeout: Duration,
    /// `broker.heartbeat.interval.ms`
    pub broker_heartbeat_interval: Duration,
    /// `broker.session.timeout.ms`: a broker whose heartbeats stop this long is fenced.
    pub broker_session_timeout: Duration,
    /// `replica.lag.time.max.ms`: a follower that has not caught up for this long leaves the ISR.
    pub replica_lag_time_max: Duration,
    /// `replica.fetch.max.bytes`: per partition in a follower's fetch.
    pub replica_fetch_max_bytes: i32,
    /// `replica.fetch.wait.max.ms`: how long a follower's fetch waits for data at the leader.
    pub replica_fetch_wait_max_ms: i32,
    /// `replica.fetch.backoff.ms`: pause after a failed follower fetch.
    pub replica_fetch_backoff: Duration,
    /// `unclean.leader.election.enable`: default for the topic config.
    pub unclean_leader_election: bool,
    /// `auto.leader.rebalance.enable`: move leadership back to preferred replicas.
    pub auto_leader_rebalance: bool,
    /// `leader.imbalance.check.interval.seconds`
    pub leader_imbalance_check_interval: Duration,
    /// `offsets.topic.replication.factor`: capped by the number of bootstrap brokers.
    pub offsets_topic_replication_factor: i16,
    /// `controlled.shutdown.timeout.ms` (Sluice): how long SIGTERM waits for leadership to move.
    pub controlled_shutdown_timeout: Duration,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            node_id: 0,
            listeners: ListenerSettings::default(),
            http_listener: SocketAddr::from(([127, 0, 0, 1], 9644)),
            data_dir: PathBuf::from("./data"),
            rack: None,
            num_partitions: 1,
            default_replication_factor: 1,
            auto_create_topics: true,
            message_max_bytes: 1_048_588,
            socket_request_max_bytes: 104_857_600,
            queued_max_requests: 500,
            log_segment_bytes: 1 << 30,
            log_roll_ms: 7 * 24 * 3_600_000,
            log_retention_ms: 7 * 24 * 3_600_000,
            log_retention_bytes: -1,
            log_retention_check_interval: Duration::from_millis(300_000),
            log_index_interval_bytes: 4096,
            log_index_size_max_bytes: 10 * 1024 * 1024,
            log_message_timestamp_type_log_append: false,
            log_cleanup_policy: "delete".to_string(),
            log_cleaner_delete_retention_ms: 86_400_000,
            log_cleaner_min_compaction_lag_ms: 0,
            log_cleaner_min_cleanable_ratio: 0.5,
            log_cleaner_backoff: Duration::from_millis(15_000),
            min_insync_replicas: 1,
            flush_policy: FlushPolicy::Interval,
            flush_interval: Duration::from_millis(1000),
            fetch_max_bytes: 55 * 1024 * 1024,
            cluster_id: None,
            offsets_topic_num_partitions: 50,
            offsets_retention_ms: 7 * 24 * 3_600_000,
            offsets_retention_check_interval: Duration::from_millis(600_000),
            offset_metadata_max_bytes: 4096,
            group_initial_rebalance_delay: Duration::from_millis(3000),
            group_min_session_timeout_ms: 6000,
            group_max_session_timeout_ms: 1_800_000,
            group_max_size: 1000,
            advertised_http_listener: None,
            quorum_bootstrap_servers: Vec::new(),
            quorum_voter_count: 3,
            quorum_election_timeout: Duration::from_millis(1000),
            broker_heartbeat_interval: Duration::from_millis(250),
            broker_session_timeout: Duration::from_millis(1500),
            replica_lag_time_max: Duration::from_millis(10_000),
            replica_fetch_max_bytes: 1_048_576,
            replica_fetch_wait_max_ms: 500,
            replica_fetch_backoff: Duration::from_millis(100),
            unclean_leader_election: false,
            auto_leader_rebalance: true,
            leader_imbalance_check_interval: Duration::from_secs(30),
            offsets_topic_replication_factor: 3,
            controlled_shutdown_timeout: Duration::from_secs(30),
        }
    }
}

/// Another name for a broker setting: Kafka's older name, or the same value in a larger unit.
pub struct Alias {
    pub name: &'static str,
    /// How many of the setting's units one unit of the alias is (`log.retention.hours`:
    /// 3 600 000 ms); 1 for a plain second name.
    pub scale: i64,
}

/// How DescribeConfigs on the broker resource reports a setting.
pub enum Describe {
    /// Not reported.
    Hidden,
    /// Reported as [`BrokerConfigDef::value`].
    Value,
    /// Reported in another form than the one `set` takes.
    Custom(fn(&BrokerConfig) -> String),
}

/// One broker setting. Its default is its value in `BrokerConfig::default()`.
pub struct BrokerConfigDef {
    pub name: &'static str,
    pub aliases: &'static [Alias],
    /// Kafka's type of the property.
    pub config_type: ConfigType,
    /// The README's description.
    pub doc: &'static str,
    /// What the broker does while the setting has no value (the README's default); `None` for
    /// settings that always have one.
    pub unset: Option<&'static str>,
    pub describe: Describe,
    /// The current value, written as `set` takes it under `name`; `None` while unset.
    value: fn(&BrokerConfig) -> Option<String>,
    /// Parses, checks and stores a value given in `scale` units (1 under `name`, the alias's
    /// scale under an alias); the error is the reason given in [`ConfigError::InvalidValue`].
    set: fn(&mut BrokerConfig, &str, i64) -> Result<(), String>,
}

/// Every broker setting Sluice accepts; anything else stops the broker, so a misspelt name
/// never silently does nothing. The order is the order of DescribeConfigs. README.md's table of
/// broker settings must agree (checked by a test below).
pub const BROKER_CONFIGS: &[BrokerConfigDef] = &[
    BrokerConfigDef {
        name: "node.id",
        aliases: &[Alias {
            name: "broker.id",
            scale: 1,
        }],
        config_type: ConfigType::Int,
        doc: "Broker id.",
        unset: None,
        describe: Describe::Value,
        value: |c| Some(c.node_id.to_string()),
        set: |c, v, _| parse(v).map(|n| c.node_id = n),
    },
    BrokerConfigDef {
        name: "listeners",
        aliases: &[],
        config_type: ConfigType::List,
        doc: "Kafka listeners, `NAME://HOST:PORT,...`; a single `HOST:PORT` is a listener named \
              PLAINTEXT. An empty host (`LOCAL://:9092`) means all interfaces; port 0 picks a \
              free port.",
        unset: None,
        describe: Describe::Value,
        value: |c| Some(c.listeners.listeners_value()),
        set: |c, v, _| listeners::parse_listeners(v).map(|l| c.listeners.listeners = l),
    },
    BrokerConfigDef {
        name: "advertised.listeners",
        aliases: &[],
        config_type: ConfigType::List,
        doc: "`NAME://HOST:PORT,...` clients are told to connect to, per listener (Metadata, \
              FindCoordinator and DescribeCluster answer with the listener the request came in \
              on). A single `HOST:PORT` is for the only listener.",
        unset: Some("each listener's bound address"),
        describe: Describe::Custom(|c| c.listeners.advertised_value().unwrap_or_default()),
        value: |c| c.listeners.advertised_value(),
        set: |c, v, _| listeners::parse_advertised(v).map(|a| c.listeners.advertised = a),
    },
    BrokerConfigDef {
        name: "listener.security.protocol.map",
        aliases: &[],
        config_type: ConfigType::List,
        doc: "`NAME:PROTOCOL,...`: each listener's security protocol. Only PLAINTEXT is served; \
              a listener named after a protocol (PLAINTEXT) needs no entry.",
        unset: Some("listeners named PLAINTEXT are PLAINTEXT"),
        describe: Describe::Custom(|c| c.listeners.protocols_value()),
        value: |c| (!c.listeners.protocols.is_empty()).then(|| c.listeners.protocols_value()),
        set: |c, v, _| listeners::parse_protocol_map(v).map(|m| c.listeners.protocols = m),
    },
    BrokerConfigDef {
        name: "inter.broker.listener.name",
        aliases: &[],
        config_type: ConfigType::String,
        doc: "The listener other brokers use (replication, forwarding).",
        unset: Some("the only listener, or PLAINTEXT"),
        describe: Describe::Custom(|c| c.listeners.inter_broker.clone().unwrap_or_default()),
        value: |c| c.listeners.inter_broker.clone(),
        set: |c, v, _| listeners::parse_name(v).map(|n| c.listeners.inter_broker = Some(n)),
    },
    BrokerConfigDef {
        name: "forwarding.listener.names",
        aliases: &[],
        config_type: ConfigType::List,
        doc: "(Sluice) Listeners that forward: a request there for a partition this broker does \
              not lead, or a group it does not coordinate, is sent on to the broker that does \
              and its answer returned, so one address (a `kubectl port-forward`) serves the \
              whole cluster. Every broker advertises the same address on such a listener.",
        unset: Some("none"),
        describe: Describe::Custom(|c| c.listeners.forwarding_value()),
        value: |c| (!c.listeners.forwarding.is_empty()).then(|| c.listeners.forwarding_value()),
        set: |c, v, _| listeners::parse_names(v).map(|n| c.listeners.forwarding = n),
    },
    BrokerConfigDef {
        name: "http.listener",
        aliases: &[],
        config_type: ConfigType::String,
        doc: "HTTP side port: `/metrics`, `/healthz`, `/readyz`.",
        unset: None,
        describe: Describe::Hidden,
        value: |c| Some(c.http_listener.to_string()),
        set: |c, v, _| parse_listener(v).map(|a| c.http_listener = a),
    },
    BrokerConfigDef {
        name: "log.dirs",
        aliases: &[Alias {
            name: "log.dir",
            scale: 1,
        }],
        config_type: ConfigType::String,
        doc: "Data directory (the first of a comma-separated list).",
        unset: None,
        describe: Describe::Value,
        value: |c| Some(c.data_dir.display().to_string()),
        set: |c, v, _| {
            // Kafka accepts a comma-separated list; Sluice uses one directory.
            let first = v.split(',').next().unwrap_or_default();
            if first.is_empty() {
                return Err("empty path".into());
            }
            c.data_dir = PathBuf::from(first);
            Ok(())
        },
    },
    BrokerConfigDef {
        name: "cluster.id",
        aliases: &[],
        config_type: ConfigType::String,
        doc: "Cluster id; stored in `meta.properties` on first start, and a mismatch later \
              refuses to start.",
        unset: Some("generated"),
        describe: Describe::Hidden,
        value: |c| c.cluster_id.clone(),
        set: |c, v, _| {
            c.cluster_id = Some(v.to_string()).filter(|v| !v.is_empty());
            Ok(())
        },
    },
    BrokerConfigDef {
        name: "broker.rack",
        aliases: &[],
        config_type: ConfigType::String,
        doc: "Rack, reported in metadata.",
        unset: Some("none"),
        describe: Describe::Hidden,
        value: |c| c.rack.clone(),
        set: |c, v, _| {
            c.rack = Some(v.to_string()).filter(|v| !v.is_empty());
            Ok(())
        },
    },
    BrokerConfigDef {
        name: "num.partitions",
        aliases: &[],
        config_type: ConfigType::Int,
        doc: "Partitions of auto-created topics and of CreateTopics with `-1`.",
        unset: None,
        describe: Describe::Value,
        value: |c| Some(c.num_partitions.to_string()),
        set: |c, v, _| parse_positive(v).map(|n| c.num_partitions = n),
    },
    BrokerConfigDef {
        name: "default.replication.factor",
        aliases: &[],
        config_type: ConfigType::Int,
        doc: "Replication factor for `-1` and auto-created topics.",
        unset: None,
        describe: Describe::Value,
        value: |c| Some(c.default_replication_factor.to_string()),
        set: |c, v, _| parse_positive(v).map(|n| c.default_replication_factor = n),
    },
    BrokerConfigDef {
        name: "auto.create.topics.enable",
        aliases: &[],
        config_type: ConfigType::Boolean,
        doc: "Create unknown topics when clients ask for their metadata.",
        unset: None,
        describe: Describe::Value,
        value: |c| Some(c.auto_create_topics.to_string()),
        set: |c, v, _| parse(v).map(|b| c.auto_create_topics = b),
    },
    BrokerConfigDef {
        name: "message.max.bytes",
        aliases: &[],
        config_type: ConfigType::Int,
        doc: "Largest record batch (default of the topic config `max.message.bytes`).",
        unset: None,
        describe: Describe::Value,
        value: |c| Some(c.message_max_bytes.to_string()),
        set: |c, v, _| parse_positive(v).map(|n| c.message_max_bytes = n),
    },
    BrokerConfigDef {
        name: "socket.request.max.bytes",
        aliases: &[],
        config_type: ConfigType::Int,
        doc: "Largest request; a larger frame closes the connection.",
        unset: None,
        describe: Describe::Value,
        value: |c| Some(c.socket_request_max_bytes.to_string()),
        set: |c, v, _| parse_positive(v).map(|n| c.socket_request_max_bytes = n),
    },
    BrokerConfigDef {
        name: "queued.max.requests",
        aliases: &[],
        config_type: ConfigType::Int,
        doc: "Pipelined requests in flight per connection before the broker stops reading.",
        unset: None,
        describe: Describe::Hidden,
        value: |c| Some(c.queued_max_requests.to_string()),
        set: |c, v, _| parse_positive(v).map(|n| c.queued_max_requests = n),
    },
    BrokerConfigDef {
        name: "fetch.max.bytes",
        aliases: &[],
        config_type: ConfigType::Int,
        doc: "Cap on one fetch response.",
        unset: None,
        describe: Describe::Hidden,
        value: |c| Some(c.fetch_max_bytes.to_string()),
        set: |c, v, _| parse_positive(v).map(|n| c.fetch_max_bytes = n),
    },
    BrokerConfigDef {
        name: "log.segment.bytes",
        aliases: &[],
        config_type: ConfigType::Int,
        doc: "Default `segment.bytes`.",
        unset: None,
        describe: Describe::Value,
        value: |c| Some(c.log_segment_bytes.to_string()),
        set: |c, v, _| parse_positive(v).map(|n| c.log_segment_bytes = n),
    },
    BrokerConfigDef {
        name: "log.roll.ms",
        aliases: &[Alias {
            name: "log.roll.hours",
            scale: 3_600_000,
        }],
        config_type: ConfigType::Long,
        doc: "Default `segment.ms`.",
        unset: None,
        describe: Describe::Value,
        value: |c| Some(c.log_roll_ms.to_string()),
        set: |c, v, scale| parse_positive::<i64>(v).map(|n| c.log_roll_ms = n * scale),
    },
    BrokerConfigDef {
        name: "log.retention.ms",
        aliases: &[
            Alias {
                name: "log.retention.minutes",
                scale: 60_000,
            },
            Alias {
                name: "log.retention.hours",
                scale: 3_600_000,
            },
        ],
        config_type: ConfigType::Long,
        doc: "Default `retention.ms`; `-1` keeps forever.",
        unset: None,
        describe: Describe::Value,
        value: |c| Some(c.log_retention_ms.to_string()),
        set: |c, v, scale| parse_retention(v, scale).map(|ms| c.log_retention_ms = ms),
    },
    BrokerConfigDef {
        name: "log.retention.bytes",
        aliases: &[],
        config_type: ConfigType::Long,
        doc: "Default `retention.bytes`.",
        unset: None,
        describe: Describe::Value,
        value: |c| Some(c.log_retention_bytes.to_string()),
        set: |c, v, _| parse_retention(v, 1).map(|n| c.log_retention_bytes = n),
    },
    BrokerConfigDef {
        name: "log.retention.check.interval.ms",
        aliases: &[],
        config_type: ConfigType::Long,
        doc: "How often retention and time-based rolling run.",
        unset: None,
        describe: Describe::Value,
        value: |c| Some(c.log_retention_check_interval.as_millis().to_string()),
        set: |c, v, _| parse_millis(v).map(|d| c.log_retention_check_interval = d),
    },
    BrokerConfigDef {
        name: "log.index.interval.bytes",
        aliases: &[],
        config_type: ConfigType::Int,
        doc: "Bytes between offset index entries.",
        unset: None,
        describe: Describe::Hidden,
        value: |c| Some(c.log_index_interval_bytes.to_string()),
        set: |c, v, _| parse_positive(v).map(|n| c.log_index_interval_bytes = n),
    },
    BrokerConfigDef {
        name: "log.index.size.max.bytes",
        aliases: &[],
        config_type: ConfigType::Int,
        doc: "Default `segment.index.bytes`.",
        unset: None,
        describe: Describe::Hidden,
        value: |c| Some(c.log_index_size_max_bytes.to_string()),
        set: |c, v, _| parse_positive(v).map(|n| c.log_index_size_max_bytes = n),
    },
    BrokerConfigDef {
        name: "log.message.timestamp.type",
        aliases: &[],
        config_type: ConfigType::String,
        doc: "Default `message.timestamp.type`.",
        unset: None,
        describe: Describe::Hidden,
        value: |c| {
            Some(if c.log_message_timestamp_type_log_append {
                "LogAppendTime".into()
            } else {
                "CreateTime".into()
            })
        },
        set: |c, v, _| {
            c.log_message_timestamp_type_log_append = match v {
                "CreateTime" => false,
                "LogAppendTime" => true,
                _ => return Err("expected CreateTime or LogAppendTime".into()),
            };
            Ok(())
        },
    },
    BrokerConfigDef {
        name: "log.flush.policy",
        aliases: &[],
        config_type: ConfigType::String,
        doc: "`sync`: acknowledge produce requests only after fsync; concurrent producers share \
              one fsync (group commit). `interval`: fsync every `log.flush.interval.ms`, as \
              Kafka does by default. Either way a process crash (`kill -9`) loses nothing \
              acknowledged; `sync` also covers power loss.",
        unset: None,
        describe: Describe::Value,
        value: |c| {
            Some(
                match c.flush_policy {
                    FlushPolicy::Sync => "sync",
                    FlushPolicy::Interval => "interval",
                }
                .into(),
            )
        },
        set: |c, v, _| {
            c.flush_policy = match v {
                "sync" => FlushPolicy::Sync,
                "interval" => FlushPolicy::Interval,
                _ => return Err("expected `sync` or `interval`".into()),
            };
            Ok(())
        },
    },
    BrokerConfigDef {
        name: "log.flush.interval.ms",
        aliases: &[],
        config_type: ConfigType::Long,
        doc: "fsync interval under the `interval` policy.",
        unset: None,
        describe: Describe::Value,
        value: |c| Some(c.flush_interval.as_millis().to_string()),
        set: |c, v, _| parse_millis(v).map(|d| c.flush_interval = d),
    },
    BrokerConfigDef {
        name: "min.insync.replicas",
        aliases: &[],
        config_type: ConfigType::Int,
        doc: "Default `min.insync.replicas`.",
        unset: None,
        describe: Describe::Value,
        value: |c| Some(c.min_insync_replicas.to_string()),
        set: |c, v, _| parse_positive(v).map(|n| c.min_insync_replicas = n),
    },
    BrokerConfigDef {
        name: "offsets.topic.num.partitions",
        aliases: &[],
        config_type: ConfigType::Int,
        doc: "Partitions of `__consumer_offsets`, created on first start.",
        unset: None,
        describe: Describe::Value,
        value: |c| Some(c.offsets_topic_num_partitions.to_string()),
        set: |c, v, _| parse_positive(v).map(|n| c.offsets_topic_num_partitions = n),
    },
    BrokerConfigDef {
        name: "offsets.retention.minutes",
        aliases: &[],
        config_type: ConfigType::Int,
        doc: "Committed offsets of a group with no members expire this long after their commit.",
        unset: None,
        describe: Describe::Value,
        value: |c| Some((c.offsets_retention_ms / 60_000).to_string()),
        set: |c, v, _| {
            parse_positive::<i64>(v).map(|minutes| c.offsets_retention_ms = minutes * 60_000)
        },
    },
    BrokerConfigDef {
        name: "offsets.retention.check.interval.ms",
        aliases: &[],
        config_type: ConfigType::Long,
        doc: "How often expired offsets are removed.",
        unset: None,
        describe: Describe::Hidden,
        value: |c| Some(c.offsets_retention_check_interval.as_millis().to_string()),
        set: |c, v, _| parse_millis(v).map(|d| c.offsets_retention_check_interval = d),
    },
    BrokerConfigDef {
        name: "offset.metadata.max.bytes",
        aliases: &[],
        config_type: ConfigType::Int,
        doc: "Larger commit metadata gets `OFFSET_METADATA_TOO_LARGE`.",
        unset: None,
        describe: Describe::Hidden,
        value: |c| Some(c.offset_metadata_max_bytes.to_string()),
        set: |c, v, _| parse_positive(v).map(|n| c.offset_metadata_max_bytes = n),
    },
    BrokerConfigDef {
        name: "group.initial.rebalance.delay.ms",
        aliases: &[],
        config_type: ConfigType::Int,
        doc: "An empty group waits this long for more members before its first rebalance \
              completes.",
        unset: None,
        describe: Describe::Value,
        value: |c| Some(c.group_initial_rebalance_delay.as_millis().to_string()),
        set: |c, v, _| {
            parse_non_negative(v)
                .map(|ms| c.group_initial_rebalance_delay = Duration::from_millis(ms as u64))
        },
    },
    BrokerConfigDef {
        name: "group.min.session.timeout.ms",
        aliases: &[],
        config_type: ConfigType::Int,
        doc: "Smallest session timeout a consumer may ask for.",
        unset: None,
        describe: Describe::Value,
        value: |c| Some(c.group_min_session_timeout_ms.to_string()),
        set: |c, v, _| parse_positive(v).map(|n| c.group_min_session_timeout_ms = n),
    },
    BrokerConfigDef {
        name: "group.max.session.timeout.ms",
        aliases: &[],
        config_type: ConfigType::Int,
        doc: "Largest session timeout a consumer may ask for.",
        unset: None,
        describe: Describe::Value,
        value: |c| Some(c.group_max_session_timeout_ms.to_string()),
        set: |c, v, _| parse_positive(v).map(|n| c.group_max_session_timeout_ms = n),
    },
    BrokerConfigDef {
        name: "group.max.size",
        aliases: &[],
        config_type: ConfigType::Int,
        doc: "Members per group.",
        unset: None,
        describe: Describe::Value,
        value: |c| Some(c.group_max_size.to_string()),
        set: |c, v, _| parse_positive(v).map(|n| c.group_max_size = n),
    },
    BrokerConfigDef {
        name: "log.cleanup.policy",
        aliases: &[],
        config_type: ConfigType::List,
        doc: "Default `cleanup.policy`: `delete`, `compact` or `compact,delete`.",
        unset: None,
        describe: Describe::Value,
        value: |c| Some(c.log_cleanup_policy.clone()),
        set: |c, v, _| {
            if !matches!(
                v,
                "delete" | "compact" | "compact,delete" | "delete,compact"
            ) {
                return Err("expected `delete`, `compact` or `compact,delete`".into());
            }
            c.log_cleanup_policy = v.to_string();
            Ok(())
        },
    },
    BrokerConfigDef {
        name: "log.cleaner.delete.retention.ms",
        aliases: &[],
        config_type: ConfigType::Long,
        doc: "Default `delete.retention.ms`.",
        unset: None,
        describe: Describe::Value,
        value: |c| Some(c.log_cleaner_delete_retention_ms.to_string()),
        set: |c, v, _| parse_non_negative(v).map(|ms| c.log_cleaner_delete_retention_ms = ms),
    },
    BrokerConfigDef {
        name: "log.cleaner.min.compaction.lag.ms",
        aliases: &[],
        config_type: ConfigType::Long,
        doc: "Default `min.compaction.lag.ms`.",
        unset: None,
        describe: Describe::Value,
        value: |c| Some(c.log_cleaner_min_compaction_lag_ms.to_string()),
        set: |c, v, _| parse_non_negative(v).map(|ms| c.log_cleaner_min_compaction_lag_ms = ms),
    },
    BrokerConfigDef {
        name: "log.cleaner.min.cleanable.ratio",
        aliases: &[],
        config_type: ConfigType::Double,
        doc: "Default `min.cleanable.dirty.ratio`.",
        unset: None,
        describe: Describe::Value,
        value: |c| Some(c.log_cleaner_min_cleanable_ratio.to_string()),
        set: |c, v, _| ratio(v).map(|r| c.log_cleaner_min_cleanable_ratio = r),
    },
    BrokerConfigDef {
        name: "log.cleaner.backoff.ms",
        aliases: &[],
        config_type: ConfigType::Long,
        doc: "How often compacted partitions are checked for cleaning.",
        unset: None,
        describe: Describe::Value,
        value: |c| Some(c.log_cleaner_backoff.as_millis().to_string()),
        set: |c, v, _| parse_millis(v).map(|d| c.log_cleaner_backoff = d),
    },
    BrokerConfigDef {
        name: "advertised.http.listener",
        aliases: &[],
        config_type: ConfigType::String,
        doc: "`HOST:PORT` other brokers use for this broker's HTTP side port (cluster RPC).",
        unset: Some("advertised host, HTTP port"),
        describe: Describe::Hidden,
        value: |c| c.advertised_http_listener.clone(),
        set: |c, v, _| {
            let addr = strip_scheme(v);
            if addr
                .rsplit_once(':')
                .is_none_or(|(_, p)| p.parse::<u16>().is_err())
            {
                return Err("expected HOST:PORT".into());
            }
            c.advertised_http_listener = Some(addr.to_string());
            Ok(())
        },
    },
    BrokerConfigDef {
        name: "controller.quorum.bootstrap.servers",
        aliases: &[],
        config_type: ConfigType::List,
        doc: "`id@host:httpPort,...`: the brokers that form the cluster the first time; later \
              brokers join through them. Empty: a single-broker cluster. With more than one \
              entry `cluster.id` must be set.",
        unset: Some("empty"),
        describe: Describe::Hidden,
        value: |c| {
            let servers = &c.quorum_bootstrap_servers;
            (!servers.is_empty()).then(|| {
                let entries: Vec<String> = servers
                    .iter()
                    .map(|(id, addr)| format!("{id}@{addr}"))
                    .collect();
                entries.join(",")
            })
        },
        set: |c, v, _| {
            parse_bootstrap_servers(v).map(|servers| c.quorum_bootstrap_servers = servers)
        },
    },
    BrokerConfigDef {
        name: "controller.quorum.voter.count",
        aliases: &[],
        config_type: ConfigType::Int,
        doc: "Brokers that vote in the metadata quorum (1, 3 or 5), picked from live brokers.",
        unset: None,
        describe: Describe::Hidden,
        value: |c| Some(c.quorum_voter_count.to_string()),
        set: |c, v, _| {
            c.quorum_voter_count = match parse(v)? {
                n @ (1 | 3 | 5) => n,
                _ => return Err("must be 1, 3 or 5".into()),
            };
            Ok(())
        },
    },
    BrokerConfigDef {
        name: "controller.quorum.election.timeout.ms",
        aliases: &[],
        config_type: ConfigType::Int,
        doc: "A quorum member that hears nothing from the leader for 1-2x this starts an \
              election.",
        unset: None,
        describe: Describe::Hidden,
        value: |c| Some(c.quorum_election_timeout.as_millis().to_string()),
        set: |c, v, _| parse_millis(v).map(|d| c.quorum_election_timeout = d),
    },
    BrokerConfigDef {
        name: "broker.heartbeat.interval.ms",
        aliases: &[],
        config_type: ConfigType::Int,
        doc: "How often a broker heartbeats to the controller.",
        unset: None,
        describe: Describe::Hidden,
        value: |c| Some(c.broker_heartbeat_interval.as_millis().to_string()),
        set: |c, v, _| parse_millis(v).map(|d| c.broker_heartbeat_interval = d),
    },
    BrokerConfigDef {
        name: "broker.session.timeout.ms",
        aliases: &[],
        config_type: ConfigType::Int,
        doc: "A broker whose heartbeats stop this long is fenced and loses its leaderships.",
        unset: None,
        describe: Describe::Hidden,
        value: |c| Some(c.broker_session_timeout.as_millis().to_string()),
        set: |c, v, _| parse_millis(v).map(|d| c.broker_session_timeout = d),
    },
    BrokerConfigDef {
        name: "replica.lag.time.max.ms",
        aliases: &[],
        config_type: ConfigType::Long,
        doc: "A follower not caught up for this long leaves the ISR.",
        unset: None,
        describe: Describe::Hidden,
        value: |c| Some(c.replica_lag_time_max.as_millis().to_string()),
        set: |c, v, _| parse_millis(v).map(|d| c.replica_lag_time_max = d),
    },
    BrokerConfigDef {
        name: "replica.fetch.max.bytes",
        aliases: &[],
        config_type: ConfigType::Int,
        doc: "Per partition in a follower's fetch.",
        unset: None,
        describe: Describe::Hidden,
        value: |c| Some(c.replica_fetch_max_bytes.to_string()),
        set: |c, v, _| parse_positive(v).map(|n| c.replica_fetch_max_bytes = n),
    },
    BrokerConfigDef {
        name: "replica.fetch.wait.max.ms",
        aliases: &[],
        config_type: ConfigType::Int,
        doc: "How long a follower's fetch waits at the leader for new data.",
        unset: None,
        describe: Describe::Hidden,
        value: |c| Some(c.replica_fetch_wait_max_ms.to_string()),
        set: |c, v, _| parse_positive(v).map(|n| c.replica_fetch_wait_max_ms = n),
    },
    BrokerConfigDef {
        name: "replica.fetch.backoff.ms",
        aliases: &[],
        config_type: ConfigType::Int,
        doc: "Pause after a failed follower fetch.",
        unset: None,
        describe: Describe::Hidden,
        value: |c| Some(c.replica_fetch_backoff.as_millis().to_string()),
        set: |c, v, _| parse_millis(v).map(|d| c.replica_fetch_backoff = d),
    },
    BrokerConfigDef {
        name: "unclean.leader.election.enable",
        aliases: &[],
        config_type: ConfigType::Boolean,
        doc: "Default of the topic config of that name.",
        unset: None,
        describe: Describe::Hidden,
        value: |c| Some(c.unclean_leader_election.to_string()),
        set: |c, v, _| parse(v).map(|b| c.unclean_leader_election = b),
    },
    BrokerConfigDef {
        name: "auto.leader.rebalance.enable",
        aliases: &[],
        config_type: ConfigType::Boolean,
        doc: "Move leadership back to each partition's preferred replica when it is in sync.",
        unset: None,
        describe: Describe::Hidden,
        value: |c| Some(c.auto_leader_rebalance.to_string()),
        set: |c, v, _| parse(v).map(|b| c.auto_leader_rebalance = b),
    },
    BrokerConfigDef {
        name: "leader.imbalance.check.interval.seconds",
        aliases: &[],
        config_type: ConfigType::Long,
        doc: "How often the check of `auto.leader.rebalance.enable` runs.",
        unset: None,
        describe: Describe::Hidden,
        value: |c| Some(c.leader_imbalance_check_interval.as_secs().to_string()),
        set: |c, v, _| {
            parse_positive(v)
                .map(|secs| c.leader_imbalance_check_interval = Duration::from_secs(secs))
        },
    },
    BrokerConfigDef {
        name: "offsets.topic.replication.factor",
        aliases: &[],
        config_type: ConfigType::Short,
        doc: "Replication factor of `__consumer_offsets`, capped by the number of bootstrap \
              brokers; the topic is created once that many brokers are up.",
        unset: None,
        describe: Describe::Hidden,
        value: |c| Some(c.offsets_topic_replication_factor.to_string()),
        set: |c, v, _| parse_positive(v).map(|n| c.offsets_topic_replication_factor = n),
    },
    BrokerConfigDef {
        name: "controlled.shutdown.timeout.ms",
        aliases: &[],
        config_type: ConfigType::Long,
        doc: "How long SIGTERM waits for leadership to move away.",
        unset: None,
        describe: Describe::Hidden,
        value: |c| Some(c.controlled_shutdown_timeout.as_millis().to_string()),
        set: |c, v, _| parse_millis(v).map(|d| c.controlled_shutdown_timeout = d),
    },
];

/// The setting a property name stands for, and the scale of a value given under that name.
fn lookup(key: &str) -> Option<(&'static BrokerConfigDef, i64)> {
    BROKER_CONFIGS.iter().find_map(|def| {
        if def.name == key {
            return Some((def, 1));
        }
        let alias = def.aliases.iter().find(|a| a.name == key)?;
        Some((def, alias.scale))
    })
}

/// Every property name the broker understands, aliases included, for env lookup.
pub fn known_keys() -> impl Iterator<Item = &'static str> {
    BROKER_CONFIGS
        .iter()
        .flat_map(|def| std::iter::once(def.name).chain(def.aliases.iter().map(|a| a.name)))
}

impl BrokerConfigDef {
    /// The setting's value in `config`, as `set` takes it under `name`; `None` while unset.
    pub fn value(&self, config: &BrokerConfig) -> Option<String> {
        (self.value)(config)
    }
}

impl BrokerConfig {
    /// Applies one `key=value` property.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let (def, scale) = lookup(key).ok_or_else(|| ConfigError::UnknownKey(key.to_string()))?;
        let invalid = |reason| ConfigError::InvalidValue {
            key: key.to_string(),
            value: value.trim().to_string(),
            reason,
        };
        let expanded = expand_env(value, |name| std::env::var(name).ok()).map_err(invalid)?;
        let value = expanded.trim();
        (def.set)(self, value, scale).map_err(|reason| ConfigError::InvalidValue {
            key: key.to_string(),
            value: value.to_string(),
            reason,
        })
    }

    /// Applies a Java-style properties file (`key=value` lines, `#` and `!` comments).
    pub fn load_file(&mut self, path: &std::path::Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::File {
            path: path.to_path_buf(),
            source,
        })?;
        for (key, value) in parse_properties(&text).map_err(|line| ConfigError::Syntax {
            path: path.to_path_buf(),
            line,
        })? {
            self.set(&key, &value)?;
        }
        Ok(())
    }

    /// Applies `SLUICE_<NAME>` environment variables for every known key (`log.dirs` is
    /// `SLUICE_LOG_DIRS`). Unrelated `SLUICE_*` variables are ignored.
    pub fn load_env<I: IntoIterator<Item = (String, String)>>(
        &mut self,
        vars: I,
    ) -> Result<(), ConfigError> {
        let by_env: BTreeMap<String, &str> = known_keys().map(|k| (env_name(k), k)).collect();
        for (name, value) in vars {
            if let Some(key) = by_env.get(&name) {
                self.set(key, &value)?;
            }
        }
        Ok(())
    }

    /// The effective broker settings, for DescribeConfigs on the broker resource.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        BROKER_CONFIGS
            .iter()
            .filter_map(|def| match def.describe {
                Describe::Hidden => None,
                Describe::Value => Some((def.name, def.value(self).unwrap_or_default())),
                Describe::Custom(show) => Some((def.name, show(self))),
            })
            .collect()
    }

    /// The `host:port` other brokers use for this broker's HTTP side port: the inter-broker
    /// listener's advertised host (or its bound IP) with the bound HTTP port.
    pub fn advertised_http(
        &self,
        inter_broker_advertised: Option<&str>,
        kafka_bound: SocketAddr,
        http_bound: SocketAddr,
    ) -> String {
        if let Some(addr) = &self.advertised_http_listener {
            return addr.clone();
        }
        let host = match inter_broker_advertised {
            Some(host) => host.to_string(),
            None if http_bound.ip().is_unspecified() => kafka_bound.ip().to_string(),
            None => http_bound.ip().to_string(),
        };
        listeners::join_host_port(&host, http_bound.port())
    }
}

/// Parses `id@host:port,id@host:port`.
fn parse_bootstrap_servers(value: &str) -> Result<Vec<(i32, String)>, String> {
    let mut out: Vec<(i32, String)> = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (id, addr) = entry
            .split_once('@')
            .ok_or_else(|| format!("`{entry}`: expected ID@HOST:PORT"))?;
        let id: i32 = id
            .parse()
            .ok()
            .filter(|i| *i >= 0)
            .ok_or_else(|| format!("`{entry}`: the id must be a non-negative integer"))?;
        if addr
            .rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            return Err(format!("`{entry}`: expected ID@HOST:PORT"));
        }
        if out.iter().any(|(other, _)| *other == id) {
            return Err(format!("id {id} is listed twice"));
        }
        out.push((id, addr.to_string()));
    }
    Ok(out)
}

/// The environment variable that carries a property: `log.dirs` -> `SLUICE_LOG_DIRS`.
pub fn env_name(key: &str) -> String {
    format!("SLUICE_{}", key.replace('.', "_").to_uppercase())
}

/// Parses `key=value` lines; returns the 1-based line number of a malformed line.
pub fn parse_properties(text: &str) -> Result<Vec<(String, String)>, usize> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let (k, v) = line.split_once(['=', ':']).ok_or(i + 1)?;
        out.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok(out)
}

fn parse<T: std::str::FromStr>(value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| "not a valid value of the expected type".to_string())
}

fn parse_positive<T: std::str::FromStr + PartialOrd + Default>(value: &str) -> Result<T, String> {
    let v: T = parse(value)?;
    if v <= T::default() {
        return Err("must be positive".into());
    }
    Ok(v)
}

fn parse_non_negative(value: &str) -> Result<i64, String> {
    let v: i64 = parse(value)?;
    if v < 0 {
        return Err("must be >= 0".into());
    }
    Ok(v)
}

/// A positive number of milliseconds.
fn parse_millis(value: &str) -> Result<Duration, String> {
    parse_positive(value).map(Duration::from_millis)
}

/// Retention values: -1 means unlimited, otherwise a positive amount times `unit`.
fn parse_retention(value: &str, unit: i64) -> Result<i64, String> {
    let v: i64 = parse(value)?;
    match v {
        -1 => Ok(-1),
        v if v >= 0 => v.checked_mul(unit).ok_or_else(|| "too large".into()),
        _ => Err("must be -1 or >= 0".into()),
    }
}

fn strip_scheme(value: &str) -> &str {
    // Kafka lists `NAME://host:port[,...]`; Sluice serves one plaintext listener.
    let first = value.split(',').next().unwrap_or_default().trim();
    first.split_once("://").map_or(first, |(_, rest)| rest)
}

fn parse_listener(value: &str) -> Result<SocketAddr, String> {
    listeners::parse_bind_address(strip_scheme(value))
}

/// Replaces `${env:NAME}` with the environment variable NAME (Kafka's config-provider syntax),
/// so one properties file can carry per-pod values (a node's IP).
fn expand_env(value: &str, env: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${env:") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 6..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("`${{env:` without a closing `}}` in `{value}`"))?;
        let name = &after[..end];
        let var = env(name)
            .ok_or_else(|| format!("`${{env:{name}}}`: environment variable {name} is not set"))?;
        out.push_str(&var);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_style_listener_and_dirs() {
        let mut c = BrokerConfig::default();
        c.set("listeners", "PLAINTEXT://0.0.0.0:19092").unwrap();
        c.set("log.dirs", "/var/lib/a,/var/lib/b").unwrap();
        c.set("advertised.listeners", "PLAINTEXT://demo-0.demo:9092")
            .unwrap();
        let plan = c.listeners.resolve().unwrap();
        assert_eq!(plan.listeners[0].bind, "0.0.0.0:19092".parse().unwrap());
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/a"));
        assert_eq!(
            plan.listeners[0].advertised,
            Some(("demo-0.demo".to_string(), 9092))
        );
        c.set("listeners", "PLAINTEXT://:9093").unwrap();
        assert_eq!(c.listeners.listeners[0].1.port(), 9093);
    }

    #[test]
    fn env_references_are_expanded_and_missing_ones_refused() {
        let env = |name: &str| (name == "HOST_IP").then(|| "10.0.0.7".to_string());
        assert_eq!(
            expand_env("A://${env:HOST_IP}:31000,B://x:1", env).unwrap(),
            "A://10.0.0.7:31000,B://x:1"
        );
        assert_eq!(expand_env("plain", env).unwrap(), "plain");
        let missing = expand_env("${env:NOPE}", env).unwrap_err();
        assert!(missing.contains("NOPE is not set"), "{missing}");
        assert!(expand_env("${env:HOST_IP", env).is_err());
    }

    #[test]
    fn retention_units_and_unlimited() {
        let mut c = BrokerConfig::default();
        c.set("log.retention.hours", "2").unwrap();
        assert_eq!(c.log_retention_ms, 7_200_000);
        c.set("log.retention.ms", "-1").unwrap();
        assert_eq!(c.log_retention_ms, -1);
        assert!(c.set("log.retention.ms", "-5").is_err());
    }

    #[test]
    fn bad_values_and_keys_are_named() {
        let mut c = BrokerConfig::default();
        let e = c.set("num.partitions", "zero").unwrap_err().to_string();
        assert!(e.contains("num.partitions"), "{e}");
        assert!(c.set("num.partitions", "0").is_err());
        assert!(matches!(
            c.set("no.such.key", "1"),
            Err(ConfigError::UnknownKey(_))
        ));
        assert!(c.set("log.flush.policy", "sometimes").is_err());
    }

    #[test]
    fn cleanup_policy_and_cleaner_settings() {
        let mut c = BrokerConfig::default();
        for policy in ["delete", "compact", "compact,delete", "delete,compact"] {
            c.set("log.cleanup.policy", policy).unwrap();
            assert_eq!(c.log_cleanup_policy, policy);
        }
        assert!(c.set("log.cleanup.policy", "shred").is_err());
        c.set("log.cleaner.delete.retention.ms", "1000").unwrap();
        c.set("log.cleaner.min.compaction.lag.ms", "5").unwrap();
        c.set("log.cleaner.min.cleanable.ratio", "0.1").unwrap();
        c.set("log.cleaner.backoff.ms", "250").unwrap();
        assert_eq!(c.log_cleaner_delete_retention_ms, 1000);
        assert_eq!(c.log_cleaner_min_compaction_lag_ms, 5);
        assert_eq!(c.log_cleaner_min_cleanable_ratio, 0.1);
        assert_eq!(c.log_cleaner_backoff, Duration::from_millis(250));
        assert!(c.set("log.cleaner.min.cleanable.ratio", "2").is_err());
        assert!(c.set("log.cleaner.delete.retention.ms", "-1").is_err());
        assert!(c.set("log.cleaner.backoff.ms", "0").is_err());
        let described = c.describe();
        assert!(described.contains(&("log.cleaner.min.cleanable.ratio", "0.1".to_string())));
        assert!(described.contains(&("log.cleanup.policy", "delete,compact".to_string())));
    }

    #[test]
    fn env_maps_known_keys_and_ignores_others() {
        let mut c = BrokerConfig::default();
        c.load_env(vec![
            ("SLUICE_NUM_PARTITIONS".to_string(), "6".to_string()),
            ("SLUICE_BROKER_BIN".to_string(), "/x".to_string()),
        ])
        .unwrap();
        assert_eq!(c.num_partitions, 6);
    }

    #[test]
    fn properties_file_syntax() {
        let props = parse_properties("# c\n\nnum.partitions = 3\nlog.dirs=/d\n").unwrap();
        assert_eq!(props.len(), 2);
        assert_eq!(parse_properties("ok=1\nbroken\n"), Err(2));
    }

    #[test]
    fn defaults_have_their_type_and_round_trip_through_set() {
        let defaults = BrokerConfig::default();
        for def in BROKER_CONFIGS {
            let Some(value) = def.value(&defaults) else {
                assert!(
                    def.unset.is_some(),
                    "`{}` is unset without saying so",
                    def.name
                );
                continue;
            };
            assert!(def.unset.is_none(), "`{}` has a default", def.name);
            let typed = match def.config_type {
                ConfigType::Boolean => value.parse::<bool>().is_ok(),
                ConfigType::Short => value.parse::<i16>().is_ok(),
                ConfigType::Int => value.parse::<i32>().is_ok(),
                ConfigType::Long => value.parse::<i64>().is_ok(),
                ConfigType::Double => value.parse::<f64>().is_ok(),
                ConfigType::String | ConfigType::List => true,
            };
            assert!(
                typed,
                "`{}` = `{value}` is not {:?}",
                def.name, def.config_type
            );
            let mut c = BrokerConfig::default();
            c.set(def.name, &value).unwrap();
            assert_eq!(format!("{c:?}"), format!("{defaults:?}"), "{}", def.name);
        }
    }

    #[test]
    fn names_are_unique_and_back_every_topic_config() {
        let keys: Vec<&str> = known_keys().collect();
        let unique: std::collections::BTreeSet<&str> = keys.iter().copied().collect();
        assert_eq!(unique.len(), keys.len(), "{keys:?}");
        for def in crate::metadata::topic_config::TOPIC_CONFIGS {
            assert!(lookup(def.broker_key).is_some(), "{}", def.broker_key);
        }
    }

    #[test]
    fn aliases_scale_their_values() {
        let mut c = BrokerConfig::default();
        c.set("broker.id", "4").unwrap();
        c.set("log.roll.hours", "3").unwrap();
        c.set("log.retention.minutes", "5").unwrap();
        c.set("log.dir", "/d").unwrap();
        assert_eq!(c.node_id, 4);
        assert_eq!(c.log_roll_ms, 3 * 3_600_000);
        assert_eq!(c.log_retention_ms, 5 * 60_000);
        assert_eq!(c.data_dir, PathBuf::from("/d"));
        let e = c.set("log.retention.hours", "-2").unwrap_err().to_string();
        assert!(e.contains("log.retention.hours"), "{e}");
    }

    /// README.md's table of broker settings: the cells of each row (names, default, meaning).
    fn readme_rows() -> Vec<Vec<String>> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
        let readme = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let section = readme
            .split("\n### Broker settings\n")
            .nth(1)
            .expect("README.md has a `### Broker settings` section");
        section
            .lines()
            .skip_while(|line| !line.starts_with('|'))
            .take_while(|line| line.starts_with('|'))
            .skip(2) // the header and the separator
            .map(|line| {
                let line = line.trim().trim_start_matches('|').trim_end_matches('|');
                line.split('|')
                    .map(|cell| cell.trim().to_string())
                    .collect()
            })
            .collect()
    }

    /// README.md lists every setting once, under its name and aliases, with its default and the
    /// table's doc, and nothing else. A default may be followed by a note (`` `604800000` (7
    /// days) ``).
    #[test]
    fn readme_table_matches_the_settings() {
        let defaults = BrokerConfig::default();
        let rows = readme_rows();
        let mut problems = Vec::new();
        let mut expected_names = Vec::new();
        for def in BROKER_CONFIGS {
            let mut names = format!("`{}`", def.name);
            if !def.aliases.is_empty() {
                let aliases: Vec<String> = def
                    .aliases
                    .iter()
                    .map(|a| format!("`{}`", a.name))
                    .collect();
                names.push_str(&format!(" (or {})", aliases.join(", ")));
            }
            let default = match def.value(&defaults) {
                Some(value) => format!("`{value}`"),
                None => def.unset.unwrap_or_default().to_string(),
            };
            let expected = format!("| {names} | {default} | {} |", def.doc);
            match rows
                .iter()
                .filter(|row| row[0] == names)
                .collect::<Vec<_>>()[..]
            {
                [] => problems.push(format!("no row for `{}`; expected\n  {expected}", def.name)),
                [row] => {
                    let default_ok = row.get(1).is_some_and(|cell| {
                        *cell == default || cell.starts_with(&format!("{default} ("))
                    });
                    if !default_ok || row.get(2) != Some(&def.doc.to_string()) || row.len() != 3 {
                        problems.push(format!(
                            "the row of `{}` disagrees with the code; expected\n  {expected}",
                            def.name
                        ));
                    }
                }
                _ => problems.push(format!("`{}` has more than one row", def.name)),
            }
            expected_names.push(names);
        }
        for row in &rows {
            if !expected_names.contains(&row[0]) {
                problems.push(format!("the row {} names no setting", row[0]));
            }
        }
        assert!(
            problems.is_empty(),
            "README.md's broker settings table:\n{}",
            problems.join("\n")
        );
    }
}
