//! Config value types and parsers that both the broker's static config ([`crate::config`]) and
//! topic configs ([`crate::metadata::topic_config`]) use, so neither imports the other's rules.

/// Kafka's config value types (DescribeConfigs `config_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Short = 4,
    Long = 5,
    Double = 6,
    List = 7,
}

/// A double between 0 and 1, as Kafka's `min.cleanable.dirty.ratio`.
pub fn ratio(v: &str) -> Result<f64, String> {
    match v.trim().parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        Ok(_) => Err("must be between 0 and 1".into()),
        Err(_) => Err("not a number".into()),
    }
}
