//! Topic-level configs: which Kafka names Sluice supports, how each is validated, and the
//! effective value of each (topic override, else the broker default). Pure functions.

use std::collections::BTreeMap;

use crate::config::BrokerConfig;
use crate::config_values::ratio;
use crate::log::LogConfig;

/// Where an effective config value comes from (Kafka's DescribeConfigs `config_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    /// Set on the topic (`DYNAMIC_TOPIC_CONFIG`).
    Topic = 1,
    /// Set in the broker's static configuration (`STATIC_BROKER_CONFIG`).
    StaticBroker = 4,
    /// Kafka's default (`DEFAULT_CONFIG`).
    Default = 5,
}

pub use crate::config_values::ConfigType;

/// One supported topic config.
pub struct TopicConfigDef {
    pub name: &'static str,
    pub config_type: ConfigType,
    /// The broker property that supplies the default.
    pub broker_key: &'static str,
    pub doc: &'static str,
    default: fn(&BrokerConfig) -> String,
    validate: fn(&str) -> Result<(), String>,
}

/// Every topic config Sluice accepts. Anything else is refused with INVALID_CONFIG, as Kafka
/// refuses unknown names, so users never set a config that silently does nothing.
pub const TOPIC_CONFIGS: &[TopicConfigDef] = &[
    TopicConfigDef {
        name: "cleanup.policy",
        config_type: ConfigType::List,
        broker_key: "log.cleanup.policy",
        doc: "`delete` removes old segments by retention.ms / retention.bytes; `compact` keeps \
              the latest record per key; `compact,delete` does both.",
        default: |b| b.log_cleanup_policy.clone(),
        validate: |v| match v {
            "delete" | "compact" | "compact,delete" | "delete,compact" => Ok(()),
            _ => Err("expected `delete`, `compact` or `compact,delete`".into()),
        },
    },
    TopicConfigDef {
        name: "delete.retention.ms",
        config_type: ConfigType::Long,
        broker_key: "log.cleaner.delete.retention.ms",
        doc: "How long the cleaner keeps tombstones of a compacted topic.",
        default: |b| b.log_cleaner_delete_retention_ms.to_string(),
        validate: |v| at_least(v, 0),
    },
    TopicConfigDef {
        name: "min.compaction.lag.ms",
        config_type: ConfigType::Long,
        broker_key: "log.cleaner.min.compaction.lag.ms",
        doc: "Records younger than this are not compacted.",
        default: |b| b.log_cleaner_min_compaction_lag_ms.to_string(),
        validate: |v| at_least(v, 0),
    },
    TopicConfigDef {
        name: "min.cleanable.dirty.ratio",
        config_type: ConfigType::Double,
        broker_key: "log.cleaner.min.cleanable.ratio",
        doc: "Compact when uncleaned bytes reach this share of the cleanable bytes.",
        default: |b| b.log_cleaner_min_cleanable_ratio.to_string(),
        validate: |v| ratio(v).map(|_| ()),
    },
    TopicConfigDef {
        name: "retention.ms",
        config_type: ConfigType::Long,
        broker_key: "log.retention.ms",
        doc: "Delete segments whose newest record is older than this; -1 keeps forever.",
        default: |b| b.log_retention_ms.to_string(),
        validate: |v| at_least(v, -1),
    },
    TopicConfigDef {
        name: "retention.bytes",
        config_type: ConfigType::Long,
        broker_key: "log.retention.bytes",
        doc: "Delete the oldest segments while the partition is larger than this; -1 is unlimited.",
        default: |b| b.log_retention_bytes.to_string(),
        validate: |v| at_least(v, -1),
    },
    TopicConfigDef {
        name: "segment.bytes",
        config_type: ConfigType::Int,
        broker_key: "log.segment.bytes",
        doc: "Roll a new segment when the active one reaches this size.",
        default: |b| b.log_segment_bytes.to_string(),
        validate: |v| in_range(v, 14, i32::MAX as i64),
    },
    TopicConfigDef {
        name: "segment.ms",
        config_type: ConfigType::Long,
        broker_key: "log.roll.ms",
        doc: "Roll a new segment when the active one is this old.",
        default: |b| b.log_roll_ms.to_string(),
        validate: |v| at_least(v, 1),
    },
    TopicConfigDef {
        name: "segment.index.bytes",
        config_type: ConfigType::Int,
        broker_key: "log.index.size.max.bytes",
        doc: "Maximum size of a segment's offset index; the segment rolls when it is full.",
        default: |b| b.log_index_size_max_bytes.to_string(),
        validate: |v| in_range(v, 4096, i32::MAX as i64),
    },
    TopicConfigDef {
        name: "index.interval.bytes",
        config_type: ConfigType::Int,
        broker_key: "log.index.interval.bytes",
        doc: "Bytes of log between two offset index entries.",
        default: |b| b.log_index_interval_bytes.to_string(),
        validate: |v| in_range(v, 0, i32::MAX as i64),
    },
    TopicConfigDef {
        name: "max.message.bytes",
        config_type: ConfigType::Int,
        broker_key: "message.max.bytes",
        doc: "Largest record batch the topic accepts.",
        default: |b| b.message_max_bytes.to_string(),
        validate: |v| in_range(v, 0, i32::MAX as i64),
    },
    TopicConfigDef {
        name: "message.timestamp.type",
        config_type: ConfigType::String,
        broker_key: "log.message.timestamp.type",
        doc: "`CreateTime` keeps the producer's timestamps, `LogAppendTime` stamps the broker's.",
        default: |b| {
            if b.log_message_timestamp_type_log_append {
                "LogAppendTime".into()
            } else {
                "CreateTime".into()
            }
        },
        validate: |v| match v {
            "CreateTime" | "LogAppendTime" => Ok(()),
            _ => Err("expected CreateTime or LogAppendTime".into()),
        },
    },
    TopicConfigDef {
        name: "min.insync.replicas",
        config_type: ConfigType::Int,
        broker_key: "min.insync.replicas",
        doc: "acks=all produce fails with NOT_ENOUGH_REPLICAS when fewer replicas are in sync.",
        default: |b| b.min_insync_replicas.to_string(),
        validate: |v| at_least(v, 1),
    },
    TopicConfigDef {
        name: "unclean.leader.election.enable",
        config_type: ConfigType::Boolean,
        broker_key: "unclean.leader.election.enable",
        doc: "Elect an out-of-sync replica when no in-sync one is left: availability over \
              durability (acknowledged records can be lost).",
        default: |b| b.unclean_leader_election.to_string(),
        validate: |v| match v {
            "true" | "false" => Ok(()),
            _ => Err("expected true or false".into()),
        },
    },
];

/// Looks up a supported topic config by name.
pub fn definition(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// Checks one `name=value`; the error is the message for INVALID_CONFIG.
pub fn validate(name: &str, value: &str) -> Result<(), String> {
    let def =
        definition(name).ok_or_else(|| format!("unknown or unsupported topic config `{name}`"))?;
    (def.validate)(value)
        .map_err(|reason| format!("invalid value `{value}` for `{name}`: {reason}"))
}

/// Checks a whole set of overrides.
pub fn validate_all<'a>(
    configs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<(), String> {
    configs.into_iter().try_for_each(|(k, v)| validate(k, v))
}

/// The effective value and its source.
pub fn effective(
    broker: &BrokerConfig,
    overrides: &BTreeMap<String, String>,
    def: &TopicConfigDef,
) -> (String, ConfigSource) {
    match overrides.get(def.name) {
        Some(v) => (v.clone(), ConfigSource::Topic),
        None => {
            let value = (def.default)(broker);
            let source = if value == (def.default)(&BrokerConfig::default()) {
                ConfigSource::Default
            } else {
                ConfigSource::StaticBroker
            };
            (value, source)
        }
    }
}

fn effective_value(
    broker: &BrokerConfig,
    overrides: &BTreeMap<String, String>,
    name: &str,
) -> String {
    let def =
        definition(name).expect("effective_value is only called with names from TOPIC_CONFIGS");
    effective(broker, overrides, def).0
}

fn number<T: std::str::FromStr + Default>(
    broker: &BrokerConfig,
    o: &BTreeMap<String, String>,
    name: &str,
) -> T {
    // Overrides were validated when stored, so a parse failure can only come from a hand-edited
    // metadata file; fall back to the type's default rather than refuse to start.
    effective_value(broker, o, name).parse().unwrap_or_default()
}

/// The log settings of a topic.
pub fn log_config(broker: &BrokerConfig, overrides: &BTreeMap<String, String>) -> LogConfig {
    let policy = effective_value(broker, overrides, "cleanup.policy");
    let has = |p: &str| policy.split(',').any(|item| item.trim() == p);
    LogConfig {
        segment_bytes: number(broker, overrides, "segment.bytes"),
        segment_ms: number(broker, overrides, "segment.ms"),
        index_interval_bytes: number(broker, overrides, "index.interval.bytes"),
        segment_index_bytes: number(broker, overrides, "segment.index.bytes"),
        retention_ms: number(broker, overrides, "retention.ms"),
        retention_bytes: number(broker, overrides, "retention.bytes"),
        timestamp_type_log_append: effective_value(broker, overrides, "message.timestamp.type")
            == "LogAppendTime",
        max_message_bytes: number(broker, overrides, "max.message.bytes"),
        cleanup_delete: has("delete"),
        cleanup_compact: has("compact"),
        delete_retention_ms: number(broker, overrides, "delete.retention.ms"),
        min_compaction_lag_ms: number(broker, overrides, "min.compaction.lag.ms"),
        min_cleanable_dirty_ratio: number(broker, overrides, "min.cleanable.dirty.ratio"),
    }
}

/// The topic's `unclean.leader.election.enable`.
pub fn unclean_leader_election(
    broker: &BrokerConfig,
    overrides: &BTreeMap<String, String>,
) -> bool {
    effective_value(broker, overrides, "unclean.leader.election.enable") == "true"
}

/// The topic's `min.insync.replicas`.
pub fn min_insync_replicas(broker: &BrokerConfig, overrides: &BTreeMap<String, String>) -> i32 {
    number(broker, overrides, "min.insync.replicas")
}

fn parse_i64(v: &str) -> Result<i64, String> {
    v.parse().map_err(|_| "not a number".to_string())
}

fn at_least(v: &str, min: i64) -> Result<(), String> {
    in_range(v, min, i64::MAX)
}

fn in_range(v: &str, min: i64, max: i64) -> Result<(), String> {
    let n = parse_i64(v)?;
    if n < min || n > max {
        return Err(format!("must be between {min} and {max}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_invalid_configs_are_refused() {
        assert!(validate("retention.ms", "1000").is_ok());
        assert!(validate("retention.ms", "-2").is_err());
        assert!(validate("retention.ms", "soon").is_err());
        assert!(validate("no.such.config", "1")
            .unwrap_err()
            .contains("no.such.config"));
        for policy in ["delete", "compact", "compact,delete", "delete,compact"] {
            assert!(validate("cleanup.policy", policy).is_ok(), "{policy}");
        }
        assert!(validate("cleanup.policy", "shred").is_err());
        assert!(validate("min.cleanable.dirty.ratio", "0.1").is_ok());
        assert!(validate("min.cleanable.dirty.ratio", "1.5").is_err());
        assert!(validate("min.cleanable.dirty.ratio", "half").is_err());
        assert!(validate("delete.retention.ms", "-1").is_err());
        assert!(validate("min.compaction.lag.ms", "0").is_ok());
        assert!(validate("message.timestamp.type", "LogAppendTime").is_ok());
    }

    #[test]
    fn overrides_win_over_broker_defaults() {
        let broker = BrokerConfig {
            log_retention_ms: 1234,
            ..Default::default()
        };
        let mut o = BTreeMap::new();
        let def = definition("retention.ms").unwrap();
        assert_eq!(
            effective(&broker, &o, def),
            ("1234".into(), ConfigSource::StaticBroker)
        );
        o.insert("retention.ms".to_string(), "99".to_string());
        assert_eq!(
            effective(&broker, &o, def),
            ("99".into(), ConfigSource::Topic)
        );
        let lc = log_config(&broker, &o);
        assert_eq!(lc.retention_ms, 99);
        assert_eq!(lc.segment_bytes, 1 << 30);
        let def = definition("segment.bytes").unwrap();
        assert_eq!(effective(&broker, &o, def).1, ConfigSource::Default);
        assert!(lc.cleanup_delete && !lc.cleanup_compact);
        assert_eq!(lc.delete_retention_ms, 86_400_000);
        assert_eq!(lc.min_cleanable_dirty_ratio, 0.5);
    }

    #[test]
    fn compaction_configs_feed_the_log_config() {
        let broker = BrokerConfig {
            log_cleaner_min_cleanable_ratio: 0.25,
            ..Default::default()
        };
        let mut o = BTreeMap::new();
        o.insert("cleanup.policy".to_string(), "compact".to_string());
        o.insert("delete.retention.ms".to_string(), "1000".to_string());
        o.insert("min.compaction.lag.ms".to_string(), "60000".to_string());
        let lc = log_config(&broker, &o);
        assert!(lc.cleanup_compact && !lc.cleanup_delete);
        assert_eq!(lc.delete_retention_ms, 1000);
        assert_eq!(lc.min_compaction_lag_ms, 60_000);
        assert_eq!(lc.min_cleanable_dirty_ratio, 0.25);
        let def = definition("min.cleanable.dirty.ratio").unwrap();
        assert_eq!(
            effective(&broker, &o, def),
            ("0.25".into(), ConfigSource::StaticBroker)
        );
        o.insert("cleanup.policy".to_string(), "delete,compact".to_string());
        let lc = log_config(&broker, &o);
        assert!(lc.cleanup_compact && lc.cleanup_delete);
    }
}
