//! Pure decisions about topics: a request checked against the current image becomes the
//! records that carry it out, or the Kafka error that refuses it.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::placement::{assign_replicas, PlacementBroker};
use super::ControllerError;
use crate::metadata::image::records::MetadataRecord;
use crate::metadata::image::{MetadataImage, TopicImage};
use crate::metadata::topic_config;
use crate::metadata::topic_name::{collision_key, is_internal, validate_topic_name};

/// What CreateTopics asks for, after defaults are resolved by the caller.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NewTopic {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i16,
    /// Manual assignment: partition index -> brokers. Empty means automatic.
    pub assignments: BTreeMap<i32, Vec<i32>>,
    pub configs: BTreeMap<String, String>,
}

/// The records creating `topic` (with id `id`) and the topic as it will be.
pub fn create_topic(
    image: &MetadataImage,
    topic: NewTopic,
    id: Uuid,
) -> Result<(Vec<MetadataRecord>, TopicImage), ControllerError> {
    validate_topic_name(&topic.name)
        .map_err(|m| ControllerError::new(ResponseError::InvalidTopicException, m))?;
    if image.topic(&topic.name).is_some() {
        return Err(ControllerError::new(
            ResponseError::TopicAlreadyExists,
            format!("topic `{}` already exists", topic.name),
        ));
    }
    let key = collision_key(&topic.name);
    if let Some(other) = image.topics.keys().find(|t| collision_key(t) == key) {
        return Err(ControllerError::new(
            ResponseError::InvalidTopicException,
            format!("topic `{}` collides with existing topic `{other}` ('.' and '_' are interchangeable in metric names)", topic.name),
        ));
    }
    topic_config::validate_all(topic.configs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(|m| ControllerError::new(ResponseError::InvalidConfig, m))?;
    let assignments = placement_for(
        image,
        &topic.assignments,
        0,
        topic.partitions,
        topic.replication_factor,
    )?;
    let mut records = vec![MetadataRecord::CreateTopic {
        name: topic.name.clone(),
        id,
        configs: topic.configs,
    }];
    records.extend(partition_records(id, 0, assignments));
    let mut preview = image.clone();
    records.iter().for_each(|r| preview.apply(r));
    let created = preview
        .topics
        .remove(&topic.name)
        .expect("the preview image has the topic just applied");
    Ok((records, created))
}

/// The record deleting a topic by name.
pub fn delete_topic(
    image: &MetadataImage,
    name: &str,
) -> Result<(Uuid, Vec<MetadataRecord>), ControllerError> {
    refuse_internal(name)?;
    let id = image
        .topic(name)
        .map(|t| t.id)
        .ok_or_else(|| unknown_topic(name))?;
    Ok((id, vec![MetadataRecord::DeleteTopic { id }]))
}

/// The records growing a topic to `count` partitions.
pub fn create_partitions(
    image: &MetadataImage,
    name: &str,
    count: i32,
    assignments: &BTreeMap<i32, Vec<i32>>,
) -> Result<Vec<MetadataRecord>, ControllerError> {
    refuse_internal(name)?;
    let topic = image.topic(name).ok_or_else(|| unknown_topic(name))?;
    let current = topic.partitions.len() as i32;
    if count <= current {
        return Err(ControllerError::new(
            ResponseError::InvalidPartitions,
            format!(
                "topic `{name}` has {current} partitions; the new count {count} must be larger"
            ),
        ));
    }
    let rf = topic
        .partitions
        .values()
        .next()
        .map_or(1, |p| p.target_replicas().len()) as i16;
    let placed = placement_for(image, assignments, current, count - current, rf)?;
    Ok(partition_records(topic.id, current, placed).collect())
}

/// The record replacing a topic's config overrides (none when nothing changes).
pub fn set_topic_configs(
    image: &MetadataImage,
    name: &str,
    configs: BTreeMap<String, String>,
) -> Result<Vec<MetadataRecord>, ControllerError> {
    let topic = image.topic(name).ok_or_else(|| unknown_topic(name))?;
    topic_config::validate_all(configs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(|m| ControllerError::new(ResponseError::InvalidConfig, m))?;
    if topic.configs == configs {
        return Ok(Vec::new());
    }
    Ok(vec![MetadataRecord::SetTopicConfigs {
        topic_id: topic.id,
        configs,
    }])
}

fn refuse_internal(name: &str) -> Result<(), ControllerError> {
    if is_internal(name) {
        return Err(ControllerError::new(
            ResponseError::InvalidTopicException,
            format!("`{name}` is an internal topic managed by the broker"),
        ));
    }
    Ok(())
}

pub fn unknown_topic(name: &str) -> ControllerError {
    ControllerError::new(
        ResponseError::UnknownTopicOrPartition,
        format!("topic `{name}` does not exist"),
    )
}

/// Checks a manual assignment (registered brokers, no duplicates) or computes an automatic,
/// rack-aware one over the live brokers for `count` new partitions.
fn placement_for(
    image: &MetadataImage,
    manual: &BTreeMap<i32, Vec<i32>>,
    first: i32,
    count: i32,
    replication_factor: i16,
) -> Result<Vec<Vec<i32>>, ControllerError> {
    if count < 1 {
        return Err(ControllerError::new(
            ResponseError::InvalidPartitions,
            "the number of partitions must be at least 1",
        ));
    }
    if !manual.is_empty() {
        let registered: Vec<i32> = image.brokers.keys().copied().collect();
        let mut out = Vec::new();
        for p in first..first + count {
            let replicas = manual.get(&p).ok_or_else(|| {
                ControllerError::new(
                    ResponseError::InvalidReplicaAssignment,
                    format!("no assignment for partition {p}"),
                )
            })?;
            check_replica_list(&registered, replicas).map_err(|m| {
                ControllerError::new(
                    ResponseError::InvalidReplicaAssignment,
                    format!("partition {p}: {m}"),
                )
            })?;
            out.push(replicas.clone());
        }
        return Ok(out);
    }
    let live: Vec<PlacementBroker> = image
        .live_brokers()
        .map(|b| PlacementBroker {
            id: b.id,
            rack: b.rack.clone(),
        })
        .collect();
    if replication_factor < 1 || replication_factor as usize > live.len() {
        return Err(ControllerError::new(
            ResponseError::InvalidReplicationFactor,
            format!(
                "replication factor {replication_factor} is larger than the {} live broker(s)",
                live.len()
            ),
        ));
    }
    let start = image.topics.len();
    Ok(assign_replicas(
        &live,
        first,
        count,
        replication_factor as usize,
        start,
    ))
}

/// A replica list must name registered brokers, each once.
pub fn check_replica_list(registered: &[i32], replicas: &[i32]) -> Result<(), String> {
    if replicas.is_empty() {
        return Err("the replica list is empty".into());
    }
    if let Some(b) = replicas.iter().find(|b| !registered.contains(b)) {
        return Err(format!(
            "broker {b} is not registered (brokers: {registered:?})"
        ));
    }
    let mut distinct = replicas.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() != replicas.len() {
        return Err(format!("duplicate brokers in {replicas:?}"));
    }
    Ok(())
}

fn partition_records(
    topic_id: Uuid,
    first: i32,
    assignments: Vec<Vec<i32>>,
) -> impl Iterator<Item = MetadataRecord> {
    assignments
        .into_iter()
        .zip(first..)
        .map(
            move |(replicas, partition)| MetadataRecord::CreatePartition {
                topic_id,
                partition,
                leader: replicas[0],
                isr: replicas.clone(),
                replicas,
                leader_epoch: 0,
            },
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::image::BrokerInfo;

    fn image_with_brokers(ids: &[i32]) -> MetadataImage {
        let mut image = MetadataImage::default();
        for &id in ids {
            image.apply(&MetadataRecord::RegisterBroker {
                id,
                host: "h".into(),
                port: 1,
                listeners: Vec::new(),
                rack: None,
                http_address: String::new(),
                incarnation: Uuid::nil(),
            });
            image.apply(&MetadataRecord::UnfenceBroker { id });
        }
        image
    }

    fn new_topic(name: &str, partitions: i32, rf: i16) -> NewTopic {
        NewTopic {
            name: name.into(),
            partitions,
            replication_factor: rf,
            assignments: BTreeMap::new(),
            configs: BTreeMap::new(),
        }
    }

    fn apply(image: &mut MetadataImage, records: &[MetadataRecord]) {
        records.iter().for_each(|r| image.apply(r));
    }

    #[test]
    fn create_validate_and_refuse() {
        let mut image = image_with_brokers(&[0]);
        let (records, t) =
            create_topic(&image, new_topic("a.b", 3, 1), Uuid::from_u128(1)).unwrap();
        assert_eq!(t.partitions.len(), 3);
        apply(&mut image, &records);
        let err =
            |r: Result<(Vec<MetadataRecord>, TopicImage), ControllerError>| r.unwrap_err().code;
        let id = Uuid::from_u128(2);
        assert_eq!(
            err(create_topic(&image, new_topic("a.b", 1, 1), id)),
            ResponseError::TopicAlreadyExists
        );
        assert_eq!(
            err(create_topic(&image, new_topic("a_b", 1, 1), id)),
            ResponseError::InvalidTopicException
        );
        assert_eq!(
            err(create_topic(&image, new_topic("x", 1, 3), id)),
            ResponseError::InvalidReplicationFactor
        );
        assert_eq!(
            err(create_topic(&image, new_topic("bad name", 1, 1), id)),
            ResponseError::InvalidTopicException
        );
        assert_eq!(
            err(create_topic(&image, new_topic("y", 0, 1), id)),
            ResponseError::InvalidPartitions
        );
        let mut bad_cfg = new_topic("z", 1, 1);
        bad_cfg.configs.insert("retention.ms".into(), "x".into());
        assert_eq!(
            err(create_topic(&image, bad_cfg, id)),
            ResponseError::InvalidConfig
        );
    }

    #[test]
    fn replication_factor_counts_live_brokers_only() {
        let mut image = image_with_brokers(&[0, 1, 2]);
        image.apply(&MetadataRecord::FenceBroker { id: 2 });
        let err = create_topic(&image, new_topic("t", 1, 3), Uuid::from_u128(1)).unwrap_err();
        assert_eq!(err.code, ResponseError::InvalidReplicationFactor);
        assert!(err.message.contains("2 live broker"), "{}", err.message);
        let (_, t) = create_topic(&image, new_topic("t", 4, 2), Uuid::from_u128(1)).unwrap();
        assert!(t.partitions.values().all(|p| !p.replicas.contains(&2)));
        let _ = BrokerInfo::clone;
    }

    #[test]
    fn partitions_grow_only_and_configs_change_once() {
        let mut image = image_with_brokers(&[0, 1]);
        let (records, _) = create_topic(&image, new_topic("t", 2, 2), Uuid::from_u128(1)).unwrap();
        apply(&mut image, &records);
        let grow = create_partitions(&image, "t", 4, &BTreeMap::new()).unwrap();
        apply(&mut image, &grow);
        let t = image.topic("t").unwrap();
        assert_eq!(t.partitions.len(), 4);
        assert!(t.partitions.values().all(|p| p.replicas.len() == 2));
        assert_eq!(
            create_partitions(&image, "t", 3, &BTreeMap::new())
                .unwrap_err()
                .code,
            ResponseError::InvalidPartitions
        );
        let manual: BTreeMap<i32, Vec<i32>> = [(4, vec![1, 1])].into();
        assert_eq!(
            create_partitions(&image, "t", 5, &manual).unwrap_err().code,
            ResponseError::InvalidReplicaAssignment
        );
        let cfg: BTreeMap<String, String> = [("retention.ms".to_string(), "5".to_string())].into();
        let set = set_topic_configs(&image, "t", cfg.clone()).unwrap();
        assert_eq!(set.len(), 1);
        apply(&mut image, &set);
        assert!(set_topic_configs(&image, "t", cfg).unwrap().is_empty());
        let (_, del) = delete_topic(&image, "t").unwrap();
        apply(&mut image, &del);
        assert_eq!(
            delete_topic(&image, "t").unwrap_err().code,
            ResponseError::UnknownTopicOrPartition
        );
        assert_eq!(
            delete_topic(&image, "__consumer_offsets").unwrap_err().code,
            ResponseError::InvalidTopicException
        );
    }
}
