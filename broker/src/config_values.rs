//! Parsers for config values that both the broker's static config ([`crate::config`]) and
//! topic configs ([`crate::metadata::topic_config`]) accept, so neither imports the other's
//! rules.

/// A double between 0 and 1, as Kafka's `min.cleanable.dirty.ratio`.
pub fn ratio(v: &str) -> Result<f64, String> {
    match v.trim().parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        Ok(_) => Err("must be between 0 and 1".into()),
        Err(_) => Err("not a number".into()),
    }
}
