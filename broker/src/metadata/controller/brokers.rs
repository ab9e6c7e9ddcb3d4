//! Pure decisions about brokers joining, failing, stopping and leaving, and what each means
//! for the partitions they host.

use std::collections::BTreeSet;

use kafka_protocol::ResponseError;

use super::partition_state::{elect_if_leaderless, without_broker, Electorate};
use super::ControllerError;
use crate::config::BrokerConfig;
use crate::metadata::image::records::MetadataRecord;
use crate::metadata::image::{BrokerInfo, MetadataImage, PartitionImage};
use crate::metadata::topic_config;

/// Applies `change` to every partition, collecting PartitionChange records.
fn each_partition(
    image: &MetadataImage,
    mut change: impl FnMut(&PartitionImage, bool) -> Option<PartitionImage>,
    config: &BrokerConfig,
) -> Vec<MetadataRecord> {
    let mut out = Vec::new();
    for topic in image.topics.values() {
        let unclean = topic_config::unclean_leader_election(config, &topic.configs);
        for (&partition, p) in &topic.partitions {
            if let Some(state) = change(p, unclean) {
                out.push(MetadataRecord::PartitionChange {
                    topic_id: topic.id,
                    partition,
                    state,
                });
            }
        }
    }
    out
}

fn live_ids(image: &MetadataImage) -> BTreeSet<i32> {
    image.live_brokers().map(|b| b.id).collect()
}

/// A broker registers (at every start). It is fenced until it has caught up; if an earlier
/// incarnation was leading or in sync, its partitions move on first, because the new process
/// may have lost what the old one acknowledged to no one but itself.
pub fn register(
    image: &MetadataImage,
    broker: BrokerInfo,
    config: &BrokerConfig,
) -> Vec<MetadataRecord> {
    let previous = image.brokers.get(&broker.id);
    if let Some(prev) = previous {
        if prev.incarnation == broker.incarnation
            && prev.host == broker.host
            && prev.port == broker.port
            && prev.listeners == broker.listeners
            && prev.rack == broker.rack
            && prev.http_address == broker.http_address
        {
            return Vec::new();
        }
    }
    let mut records = vec![MetadataRecord::RegisterBroker {
        id: broker.id,
        host: broker.host,
        port: broker.port,
        listeners: broker.listeners,
        rack: broker.rack,
        http_address: broker.http_address,
        incarnation: broker.incarnation,
    }];
    records.extend(fence_partitions(image, broker.id, config));
    records
}

/// The partition changes that take `id` out of leadership and ISRs.
fn fence_partitions(image: &MetadataImage, id: i32, config: &BrokerConfig) -> Vec<MetadataRecord> {
    let live = live_ids(image);
    each_partition(
        image,
        |p, unclean| {
            without_broker(
                p,
                id,
                Electorate {
                    live: &live,
                    unclean,
                },
            )
        },
        config,
    )
}

/// The broker's heartbeats stopped: fence it and move its leaderships.
pub fn fence(image: &MetadataImage, id: i32, config: &BrokerConfig) -> Vec<MetadataRecord> {
    match image.brokers.get(&id) {
        Some(b) if !b.fenced => {
            let mut records = vec![MetadataRecord::FenceBroker { id }];
            records.extend(fence_partitions(image, id, config));
            records
        }
        _ => Vec::new(),
    }
}

/// The broker caught up: unfence it, and give leaderless partitions a leader again.
pub fn unfence(image: &MetadataImage, id: i32, config: &BrokerConfig) -> Vec<MetadataRecord> {
    match image.brokers.get(&id) {
        Some(b) if b.fenced => {
            let mut live = live_ids(image);
            live.insert(id);
            let mut records = vec![MetadataRecord::UnfenceBroker { id }];
            records.extend(each_partition(
                image,
                |p, unclean| {
                    elect_if_leaderless(
                        p,
                        Electorate {
                            live: &live,
                            unclean,
                        },
                    )
                },
                config,
            ));
            records
        }
        _ => Vec::new(),
    }
}

/// Leaderless partitions whose ISR has a live member again (after any change in liveness).
pub fn elect_leaderless(image: &MetadataImage, config: &BrokerConfig) -> Vec<MetadataRecord> {
    let live = live_ids(image);
    each_partition(
        image,
        |p, unclean| {
            elect_if_leaderless(
                p,
                Electorate {
                    live: &live,
                    unclean,
                },
            )
        },
        config,
    )
}

/// Removes a broker for good. Refused while it is alive (it must be shut down first); its
/// partitions lose it as leader and ISR member; replica lists still naming it must be
/// reassigned by the operator.
pub fn unregister(
    image: &MetadataImage,
    id: i32,
    config: &BrokerConfig,
) -> Result<Vec<MetadataRecord>, ControllerError> {
    let broker = image.brokers.get(&id).ok_or_else(|| {
        ControllerError::new(
            ResponseError::BrokerIdNotRegistered,
            format!("broker {id} is not registered"),
        )
    })?;
    if !broker.fenced {
        return Err(ControllerError::new(
            ResponseError::InvalidRequest,
            format!("broker {id} is running; stop it before unregistering it"),
        ));
    }
    let mut records = fence_partitions(image, id, config);
    records.push(MetadataRecord::UnregisterBroker { id });
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn info(id: i32, incarnation: u128) -> BrokerInfo {
        BrokerInfo {
            id,
            host: "h".into(),
            port: 9000 + id as u16,
            listeners: Vec::new(),
            rack: None,
            http_address: format!("h:{}", 9600 + id),
            incarnation: Uuid::from_u128(incarnation),
            fenced: false,
        }
    }

    fn cluster(n: i32) -> (MetadataImage, BrokerConfig) {
        let config = BrokerConfig::default();
        let mut image = MetadataImage::default();
        for id in 0..n {
            for r in register(&image, info(id, 1), &config) {
                image.apply(&r);
            }
            for r in unfence(&image, id, &config) {
                image.apply(&r);
            }
        }
        let topic = Uuid::from_u128(9);
        image.apply(&MetadataRecord::CreateTopic {
            name: "t".into(),
            id: topic,
            configs: Default::default(),
        });
        image.apply(&MetadataRecord::CreatePartition {
            topic_id: topic,
            partition: 0,
            replicas: vec![0, 1, 2],
            isr: vec![0, 1, 2],
            leader: 0,
            leader_epoch: 0,
        });
        (image, config)
    }

    fn apply(image: &mut MetadataImage, records: Vec<MetadataRecord>) {
        records.iter().for_each(|r| image.apply(r));
    }

    #[test]
    fn fencing_moves_leadership_and_unfencing_restores_leaderless_partitions() {
        let (mut image, config) = cluster(3);
        let records = fence(&image, 0, &config);
        apply(&mut image, records);
        let p = &image.topic("t").unwrap().partitions[&0];
        assert_eq!((p.leader, p.isr.clone()), (1, vec![1, 2]));
        assert!(image.brokers[&0].fenced);
        assert!(fence(&image, 0, &config).is_empty(), "already fenced");
        let records = fence(&image, 1, &config);
        apply(&mut image, records);
        let records = fence(&image, 2, &config);
        apply(&mut image, records);
        let p = &image.topic("t").unwrap().partitions[&0];
        assert_eq!(p.leader, -1, "no live replica");
        assert_eq!(p.isr, vec![2], "the last in-sync replica stays");
        let records = unfence(&image, 0, &config);
        apply(&mut image, records);
        assert_eq!(
            image.topic("t").unwrap().partitions[&0].leader,
            -1,
            "0 is not in sync"
        );
        let records = unfence(&image, 2, &config);
        apply(&mut image, records);
        assert_eq!(image.topic("t").unwrap().partitions[&0].leader, 2);
    }

    #[test]
    fn a_restarted_broker_registers_fenced_and_loses_leadership() {
        let (mut image, config) = cluster(3);
        assert!(
            register(&image, info(0, 1), &config).is_empty(),
            "same incarnation"
        );
        let records = register(&image, info(0, 2), &config);
        apply(&mut image, records);
        assert!(image.brokers[&0].fenced);
        assert_eq!(image.topic("t").unwrap().partitions[&0].leader, 1);
    }

    #[test]
    fn unregister_needs_a_stopped_broker() {
        let (mut image, config) = cluster(3);
        assert_eq!(
            unregister(&image, 2, &config).unwrap_err().code,
            ResponseError::InvalidRequest
        );
        assert_eq!(
            unregister(&image, 7, &config).unwrap_err().code,
            ResponseError::BrokerIdNotRegistered
        );
        let records = fence(&image, 2, &config);
        apply(&mut image, records);
        let records = unregister(&image, 2, &config).unwrap();
        apply(&mut image, records);
        assert!(!image.brokers.contains_key(&2));
    }
}
