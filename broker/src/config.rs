//! Broker configuration: Kafka's property names, read from (lowest to highest precedence)
//! built-in defaults, a properties file, `SLUICE_*` environment variables and `--set` flags.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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

/// Every broker setting, typed. Field docs name the Kafka property.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// `node.id`
    pub node_id: i32,
    /// `listeners`: where the Kafka protocol is served (`HOST:PORT` or `PLAINTEXT://HOST:PORT`).
    pub listener: SocketAddr,
    /// `advertised.listeners`: the `HOST:PORT` clients are told to connect to. Defaults to the
    /// bound listener address.
    pub advertised_listener: Option<(String, u16)>,
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
            listener: SocketAddr::from(([127, 0, 0, 1], 9092)),
            advertised_listener: None,
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

/// The property names this broker understands, for env lookup and error messages.
pub const KNOWN_KEYS: &[&str] = &[
    "node.id",
    "broker.id",
    "listeners",
    "advertised.listeners",
    "http.listener",
    "log.dirs",
    "log.dir",
    "broker.rack",
    "num.partitions",
    "default.replication.factor",
    "auto.create.topics.enable",
    "message.max.bytes",
    "socket.request.max.bytes",
    "queued.max.requests",
    "log.segment.bytes",
    "log.roll.ms",
    "log.roll.hours",
    "log.retention.ms",
    "log.retention.minutes",
    "log.retention.hours",
    "log.retention.bytes",
    "log.retention.check.interval.ms",
    "log.index.interval.bytes",
    "log.index.size.max.bytes",
    "log.message.timestamp.type",
    "log.cleanup.policy",
    "log.cleaner.delete.retention.ms",
    "log.cleaner.min.compaction.lag.ms",
    "log.cleaner.min.cleanable.ratio",
    "log.cleaner.backoff.ms",
    "min.insync.replicas",
    "log.flush.policy",
    "log.flush.interval.ms",
    "fetch.max.bytes",
    "cluster.id",
    "offsets.topic.num.partitions",
    "offsets.retention.minutes",
    "offsets.retention.check.interval.ms",
    "offset.metadata.max.bytes",
    "group.initial.rebalance.delay.ms",
    "group.min.session.timeout.ms",
    "group.max.session.timeout.ms",
    "group.max.size",
    "advertised.http.listener",
    "controller.quorum.bootstrap.servers",
    "controller.quorum.voter.count",
    "controller.quorum.election.timeout.ms",
    "broker.heartbeat.interval.ms",
    "broker.session.timeout.ms",
    "replica.lag.time.max.ms",
    "replica.fetch.max.bytes",
    "replica.fetch.wait.max.ms",
    "replica.fetch.backoff.ms",
    "unclean.leader.election.enable",
    "auto.leader.rebalance.enable",
    "leader.imbalance.check.interval.seconds",
    "offsets.topic.replication.factor",
    "controlled.shutdown.timeout.ms",
];

impl BrokerConfig {
    /// Applies one `key=value` property.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let value = value.trim();
        match key {
            "node.id" | "broker.id" => self.node_id = parse(key, value)?,
            "listeners" => self.listener = parse_listener(key, value)?,
            "advertised.listeners" => {
                let addr = strip_scheme(value);
                let (host, port) = addr
                    .rsplit_once(':')
                    .ok_or_else(|| invalid(key, value, "expected HOST:PORT"))?;
                let port = port.parse().map_err(|_| invalid(key, value, "bad port"))?;
                self.advertised_listener = Some((host.trim_matches(['[', ']']).to_string(), port));
            }
            "http.listener" => self.http_listener = parse_listener(key, value)?,
            "log.dirs" | "log.dir" => {
                // Kafka accepts a comma-separated list; Sluice uses one directory.
                let first = value.split(',').next().unwrap_or_default();
                if first.is_empty() {
                    return Err(invalid(key, value, "empty path"));
                }
                self.data_dir = PathBuf::from(first);
            }
            "broker.rack" => self.rack = Some(value.to_string()).filter(|v| !v.is_empty()),
            "num.partitions" => self.num_partitions = parse_positive(key, value)?,
            "default.replication.factor" => {
                self.default_replication_factor = parse_positive(key, value)?
            }
            "auto.create.topics.enable" => self.auto_create_topics = parse(key, value)?,
            "message.max.bytes" => self.message_max_bytes = parse_positive(key, value)?,
            "socket.request.max.bytes" => {
                self.socket_request_max_bytes = parse_positive(key, value)?
            }
            "queued.max.requests" => self.queued_max_requests = parse_positive(key, value)?,
            "log.segment.bytes" => self.log_segment_bytes = parse_positive(key, value)?,
            "log.roll.ms" => self.log_roll_ms = parse_positive(key, value)?,
            "log.roll.hours" => self.log_roll_ms = parse_positive::<i64>(key, value)? * 3_600_000,
            "log.retention.ms" => self.log_retention_ms = parse_retention(key, value, 1)?,
            "log.retention.minutes" => self.log_retention_ms = parse_retention(key, value, 60_000)?,
            "log.retention.hours" => {
                self.log_retention_ms = parse_retention(key, value, 3_600_000)?
            }
            "log.retention.bytes" => self.log_retention_bytes = parse_retention(key, value, 1)?,
            "log.retention.check.interval.ms" => {
                self.log_retention_check_interval =
                    Duration::from_millis(parse_positive(key, value)?)
            }
            "log.index.interval.bytes" => {
                self.log_index_interval_bytes = parse_positive(key, value)?
            }
            "log.index.size.max.bytes" => {
                self.log_index_size_max_bytes = parse_positive(key, value)?
            }
            "log.message.timestamp.type" => {
                self.log_message_timestamp_type_log_append = match value {
                    "CreateTime" => false,
                    "LogAppendTime" => true,
                    _ => return Err(invalid(key, value, "expected CreateTime or LogAppendTime")),
                }
            }
            "log.cleanup.policy" => {
                if !matches!(
                    value,
                    "delete" | "compact" | "compact,delete" | "delete,compact"
                ) {
                    return Err(invalid(
                        key,
                        value,
                        "expected `delete`, `compact` or `compact,delete`",
                    ));
                }
                self.log_cleanup_policy = value.to_string();
            }
            "log.cleaner.delete.retention.ms" => {
                self.log_cleaner_delete_retention_ms = parse_non_negative(key, value)?
            }
            "log.cleaner.min.compaction.lag.ms" => {
                self.log_cleaner_min_compaction_lag_ms = parse_non_negative(key, value)?
            }
            "log.cleaner.min.cleanable.ratio" => {
                self.log_cleaner_min_cleanable_ratio = crate::config_values::ratio(value)
                    .map_err(|reason| invalid(key, value, &reason))?
            }
            "log.cleaner.backoff.ms" => {
                self.log_cleaner_backoff = Duration::from_millis(parse_positive(key, value)?)
            }
            "min.insync.replicas" => self.min_insync_replicas = parse_positive(key, value)?,
            "log.flush.policy" => {
                self.flush_policy = match value {
                    "sync" => FlushPolicy::Sync,
                    "interval" => FlushPolicy::Interval,
                    _ => return Err(invalid(key, value, "expected `sync` or `interval`")),
                }
            }
            "log.flush.interval.ms" => {
                self.flush_interval = Duration::from_millis(parse_positive(key, value)?)
            }
            "fetch.max.bytes" => self.fetch_max_bytes = parse_positive(key, value)?,
            "cluster.id" => self.cluster_id = Some(value.to_string()).filter(|v| !v.is_empty()),
            "offsets.topic.num.partitions" => {
                self.offsets_topic_num_partitions = parse_positive(key, value)?
            }
            "offsets.retention.minutes" => {
                self.offsets_retention_ms = parse_positive::<i64>(key, value)? * 60_000
            }
            "offsets.retention.check.interval.ms" => {
                self.offsets_retention_check_interval =
                    Duration::from_millis(parse_positive(key, value)?)
            }
            "offset.metadata.max.bytes" => {
                self.offset_metadata_max_bytes = parse_positive(key, value)?
            }
            "group.initial.rebalance.delay.ms" => {
                let ms: i64 = parse(key, value)?;
                if ms < 0 {
                    return Err(invalid(key, value, "must be >= 0"));
                }
                self.group_initial_rebalance_delay = Duration::from_millis(ms as u64);
            }
            "group.min.session.timeout.ms" => {
                self.group_min_session_timeout_ms = parse_positive(key, value)?
            }
            "group.max.session.timeout.ms" => {
                self.group_max_session_timeout_ms = parse_positive(key, value)?
            }
            "group.max.size" => self.group_max_size = parse_positive(key, value)?,
            "advertised.http.listener" => {
                let addr = strip_scheme(value);
                if addr
                    .rsplit_once(':')
                    .is_none_or(|(_, p)| p.parse::<u16>().is_err())
                {
                    return Err(invalid(key, value, "expected HOST:PORT"));
                }
                self.advertised_http_listener = Some(addr.to_string());
            }
            "controller.quorum.bootstrap.servers" => {
                self.quorum_bootstrap_servers =
                    parse_bootstrap_servers(value).map_err(|reason| invalid(key, value, &reason))?
            }
            "controller.quorum.voter.count" => {
                self.quorum_voter_count = match parse(key, value)? {
                    n @ (1 | 3 | 5) => n,
                    _ => return Err(invalid(key, value, "must be 1, 3 or 5")),
                }
            }
            "controller.quorum.election.timeout.ms" => {
                self.quorum_election_timeout = Duration::from_millis(parse_positive(key, value)?)
            }
            "broker.heartbeat.interval.ms" => {
                self.broker_heartbeat_interval = Duration::from_millis(parse_positive(key, value)?)
            }
            "broker.session.timeout.ms" => {
                self.broker_session_timeout = Duration::from_millis(parse_positive(key, value)?)
            }
            "replica.lag.time.max.ms" => {
                self.replica_lag_time_max = Duration::from_millis(parse_positive(key, value)?)
            }
            "replica.fetch.max.bytes" => self.replica_fetch_max_bytes = parse_positive(key, value)?,
            "replica.fetch.wait.max.ms" => {
                self.replica_fetch_wait_max_ms = parse_positive(key, value)?
            }
            "replica.fetch.backoff.ms" => {
                self.replica_fetch_backoff = Duration::from_millis(parse_positive(key, value)?)
            }
            "unclean.leader.election.enable" => self.unclean_leader_election = parse(key, value)?,
            "auto.leader.rebalance.enable" => self.auto_leader_rebalance = parse(key, value)?,
            "leader.imbalance.check.interval.seconds" => {
                self.leader_imbalance_check_interval =
                    Duration::from_secs(parse_positive(key, value)?)
            }
            "offsets.topic.replication.factor" => {
                self.offsets_topic_replication_factor = parse_positive(key, value)?
            }
            "controlled.shutdown.timeout.ms" => {
                self.controlled_shutdown_timeout =
                    Duration::from_millis(parse_positive(key, value)?)
            }
            _ => return Err(ConfigError::UnknownKey(key.to_string())),
        }
        Ok(())
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
        let by_env: BTreeMap<String, &str> = KNOWN_KEYS.iter().map(|k| (env_name(k), *k)).collect();
        for (name, value) in vars {
            if let Some(key) = by_env.get(&name) {
                self.set(key, &value)?;
            }
        }
        Ok(())
    }

    /// The effective broker settings, for DescribeConfigs on the broker resource.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        let (adv_host, adv_port) = self.advertised(self.listener);
        vec![
            ("node.id", self.node_id.to_string()),
            ("listeners", format!("PLAINTEXT://{}", self.listener)),
            (
                "advertised.listeners",
                format!("PLAINTEXT://{adv_host}:{adv_port}"),
            ),
            ("log.dirs", self.data_dir.display().to_string()),
            ("num.partitions", self.num_partitions.to_string()),
            (
                "default.replication.factor",
                self.default_replication_factor.to_string(),
            ),
            (
                "auto.create.topics.enable",
                self.auto_create_topics.to_string(),
            ),
            ("message.max.bytes", self.message_max_bytes.to_string()),
            (
                "socket.request.max.bytes",
                self.socket_request_max_bytes.to_string(),
            ),
            ("log.segment.bytes", self.log_segment_bytes.to_string()),
            ("log.roll.ms", self.log_roll_ms.to_string()),
            ("log.retention.ms", self.log_retention_ms.to_string()),
            ("log.retention.bytes", self.log_retention_bytes.to_string()),
            (
                "log.retention.check.interval.ms",
                self.log_retention_check_interval.as_millis().to_string(),
            ),
            (
                "log.flush.policy",
                match self.flush_policy {
                    FlushPolicy::Sync => "sync",
                    FlushPolicy::Interval => "interval",
                }
                .to_string(),
            ),
            (
                "log.flush.interval.ms",
                self.flush_interval.as_millis().to_string(),
            ),
            ("min.insync.replicas", self.min_insync_replicas.to_string()),
            (
                "offsets.topic.num.partitions",
                self.offsets_topic_num_partitions.to_string(),
            ),
            (
                "offsets.retention.minutes",
                (self.offsets_retention_ms / 60_000).to_string(),
            ),
            (
                "group.initial.rebalance.delay.ms",
                self.group_initial_rebalance_delay.as_millis().to_string(),
            ),
            (
                "group.min.session.timeout.ms",
                self.group_min_session_timeout_ms.to_string(),
            ),
            (
                "group.max.session.timeout.ms",
                self.group_max_session_timeout_ms.to_string(),
            ),
            ("group.max.size", self.group_max_size.to_string()),
            ("log.cleanup.policy", self.log_cleanup_policy.clone()),
            (
                "log.cleaner.delete.retention.ms",
                self.log_cleaner_delete_retention_ms.to_string(),
            ),
            (
                "log.cleaner.min.compaction.lag.ms",
                self.log_cleaner_min_compaction_lag_ms.to_string(),
            ),
            (
                "log.cleaner.min.cleanable.ratio",
                self.log_cleaner_min_cleanable_ratio.to_string(),
            ),
            (
                "log.cleaner.backoff.ms",
                self.log_cleaner_backoff.as_millis().to_string(),
            ),
        ]
    }

    /// The host and port clients should connect to.
    pub fn advertised(&self, bound: SocketAddr) -> (String, u16) {
        match &self.advertised_listener {
            Some((host, port)) => (host.clone(), *port),
            None => (bound.ip().to_string(), bound.port()),
        }
    }

    /// The `host:port` other brokers use for this broker's HTTP side port, given the bound
    /// Kafka and HTTP addresses.
    pub fn advertised_http(&self, kafka_bound: SocketAddr, http_bound: SocketAddr) -> String {
        if let Some(addr) = &self.advertised_http_listener {
            return addr.clone();
        }
        let host = match &self.advertised_listener {
            Some((host, _)) => host.clone(),
            None if http_bound.ip().is_unspecified() => kafka_bound.ip().to_string(),
            None => http_bound.ip().to_string(),
        };
        format!("{host}:{}", http_bound.port())
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

fn invalid(key: &str, value: &str, reason: &str) -> ConfigError {
    ConfigError::InvalidValue {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

fn parse<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, ConfigError> {
    value
        .parse()
        .map_err(|_| invalid(key, value, "not a valid value of the expected type"))
}

fn parse_positive<T: std::str::FromStr + PartialOrd + Default>(
    key: &str,
    value: &str,
) -> Result<T, ConfigError> {
    let v: T = parse(key, value)?;
    if v <= T::default() {
        return Err(invalid(key, value, "must be positive"));
    }
    Ok(v)
}

fn parse_non_negative(key: &str, value: &str) -> Result<i64, ConfigError> {
    let v: i64 = parse(key, value)?;
    if v < 0 {
        return Err(invalid(key, value, "must be >= 0"));
    }
    Ok(v)
}

/// Retention values: -1 means unlimited, otherwise a positive amount times `unit`.
fn parse_retention(key: &str, value: &str, unit: i64) -> Result<i64, ConfigError> {
    let v: i64 = parse(key, value)?;
    match v {
        -1 => Ok(-1),
        v if v >= 0 => v
            .checked_mul(unit)
            .ok_or_else(|| invalid(key, value, "too large")),
        _ => Err(invalid(key, value, "must be -1 or >= 0")),
    }
}

fn strip_scheme(value: &str) -> &str {
    // Kafka lists `NAME://host:port[,...]`; Sluice serves one plaintext listener.
    let first = value.split(',').next().unwrap_or_default().trim();
    first.split_once("://").map_or(first, |(_, rest)| rest)
}

fn parse_listener(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    let addr = strip_scheme(value);
    // An empty host means all interfaces, as in Kafka's `PLAINTEXT://:9092`.
    let addr = if addr.starts_with(':') {
        format!("0.0.0.0{addr}")
    } else {
        addr.replace("localhost", "127.0.0.1")
    };
    addr.parse()
        .map_err(|_| invalid(key, value, "expected HOST:PORT with an IP address host"))
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
        assert_eq!(c.listener, "0.0.0.0:19092".parse().unwrap());
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/a"));
        assert_eq!(
            c.advertised_listener,
            Some(("demo-0.demo".to_string(), 9092))
        );
        c.set("listeners", "PLAINTEXT://:9093").unwrap();
        assert_eq!(c.listener.port(), 9093);
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
}
