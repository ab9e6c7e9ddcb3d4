//! The other brokers as replication sees them: where a leader is reached (its advertised Kafka
//! listener) and whether a broker is live (registered and not fenced: only live brokers join
//! an ISR). Refreshed from every metadata image; read by fetchers and partition leaders.

use std::collections::BTreeMap;
use std::sync::RwLock;

use crate::metadata::MetadataImage;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Endpoint {
    address: String,
    fenced: bool,
}

/// Registered brokers' addresses and liveness.
#[derive(Debug, Default)]
pub struct BrokerDirectory {
    brokers: RwLock<BTreeMap<i32, Endpoint>>,
}

impl BrokerDirectory {
    /// Replaces the directory with the image's brokers.
    pub fn update(&self, image: &MetadataImage) {
        let brokers = image
            .brokers
            .values()
            .map(|b| {
                let address = if b.host.contains(':') && !b.host.starts_with('[') {
                    format!("[{}]:{}", b.host, b.port)
                } else {
                    format!("{}:{}", b.host, b.port)
                };
                (
                    b.id,
                    Endpoint {
                        address,
                        fenced: b.fenced,
                    },
                )
            })
            .collect();
        *self.brokers.write().unwrap_or_else(|p| p.into_inner()) = brokers;
    }

    /// `host:port` of a registered broker's Kafka listener.
    pub fn address(&self, id: i32) -> Option<String> {
        self.read().get(&id).map(|e| e.address.clone())
    }

    /// Registered and not fenced.
    pub fn is_live(&self, id: i32) -> bool {
        self.read().get(&id).is_some_and(|e| !e.fenced)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<i32, Endpoint>> {
        self.brokers.read().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::MetadataRecord;

    #[test]
    fn addresses_and_liveness_follow_the_image() {
        let mut image = MetadataImage::default();
        for (id, host) in [(1, "10.0.0.1"), (2, "::1")] {
            image.apply(&MetadataRecord::RegisterBroker {
                id,
                host: host.into(),
                port: 9092,
                listeners: Vec::new(),
                rack: None,
                http_address: String::new(),
                incarnation: Default::default(),
            });
        }
        image.apply(&MetadataRecord::UnfenceBroker { id: 1 });
        let d = BrokerDirectory::default();
        d.update(&image);
        assert_eq!(d.address(1).as_deref(), Some("10.0.0.1:9092"));
        assert_eq!(d.address(2).as_deref(), Some("[::1]:9092"));
        assert!(d.is_live(1));
        assert!(!d.is_live(2), "registered but still fenced");
        assert!(!d.is_live(3), "unknown");
        image.apply(&MetadataRecord::FenceBroker { id: 1 });
        d.update(&image);
        assert!(!d.is_live(1));
    }
}
