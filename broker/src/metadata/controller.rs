//! The controller: the one place that decides metadata changes. It validates a request against
//! the current image, turns it into records, makes them durable in the metadata log, applies
//! them to the image and tells listeners (the replica manager). On a single node it writes the
//! local store; with the Raft quorum, the quorum leader will run this same logic.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::image::{BrokerInfo, MetadataImage, TopicImage};
use super::placement::assign_replicas;
use super::records::MetadataRecord;
use super::store::{MetadataStore, StoreError};
use super::topic_config;
use super::topic_name::{collision_key, is_internal, validate_topic_name};

/// Producer ids are reserved in blocks so that the metadata log is written once per block,
/// and ids never repeat after a restart (the whole block is skipped).
const PRODUCER_ID_BLOCK: i64 = 1000;

/// A refused metadata change: the Kafka error and a message for the client.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ControllerError {
    pub code: ResponseError,
    pub message: String,
}

impl ControllerError {
    fn new(code: ResponseError, message: impl Into<String>) -> Self {
        ControllerError {
            code,
            message: message.into(),
        }
    }
}

impl From<StoreError> for ControllerError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "metadata log write failed");
        ControllerError::new(ResponseError::KafkaStorageError, e.to_string())
    }
}

/// Receives every committed batch of records, in order.
pub trait MetadataListener: Send + Sync {
    /// The image replayed from the metadata log at start.
    fn on_image_loaded(&self, image: &MetadataImage);
    /// Records committed after start.
    fn on_records(&self, image: &MetadataImage, records: &[MetadataRecord]);
}

/// The latest published image, shared by every request handler. Readers take a cheap `Arc`
/// snapshot and never block the controller.
#[derive(Default)]
pub struct MetadataCache {
    image: RwLock<Arc<MetadataImage>>,
}

impl MetadataCache {
    pub fn current(&self) -> Arc<MetadataImage> {
        self.image.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn publish(&self, image: Arc<MetadataImage>) {
        *self.image.write().unwrap_or_else(|p| p.into_inner()) = image;
    }
}

/// What CreateTopics asks for, after defaults are resolved by the caller.
#[derive(Debug, Clone)]
pub struct NewTopic {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i16,
    /// Manual assignment: partition index -> brokers. Empty means automatic.
    pub assignments: BTreeMap<i32, Vec<i32>>,
    pub configs: BTreeMap<String, String>,
}

struct ControllerState {
    store: MetadataStore,
    image: MetadataImage,
    /// Next producer id to hand out; ids up to `image.next_producer_id` are reserved.
    next_producer_id: i64,
}

/// Validates and commits metadata changes.
pub struct Controller {
    state: Mutex<ControllerState>,
    cache: Arc<MetadataCache>,
    listener: Arc<dyn MetadataListener>,
}

impl Controller {
    /// Builds the controller from the store's records; listeners see the replayed image once.
    pub fn new(
        store: MetadataStore,
        records: Vec<MetadataRecord>,
        cache: Arc<MetadataCache>,
        listener: Arc<dyn MetadataListener>,
    ) -> Controller {
        let mut image = MetadataImage::default();
        for r in &records {
            image.apply(r);
        }
        let next_producer_id = image.next_producer_id;
        cache.publish(Arc::new(image.clone()));
        listener.on_image_loaded(&image);
        Controller {
            state: Mutex::new(ControllerState {
                store,
                image,
                next_producer_id,
            }),
            cache,
            listener,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ControllerState> {
        // A panic while holding the lock leaves the state as the last commit left it
        // (commit applies records only after they are durable), so it is safe to go on.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn commit(
        &self,
        state: &mut ControllerState,
        records: Vec<MetadataRecord>,
    ) -> Result<(), ControllerError> {
        state.store.append(&records)?;
        for r in &records {
            state.image.apply(r);
        }
        self.cache.publish(Arc::new(state.image.clone()));
        self.listener.on_records(&state.image, &records);
        Ok(())
    }

    /// Records where a broker can be reached, if it changed.
    pub fn register_broker(&self, info: BrokerInfo) -> Result<(), ControllerError> {
        let mut state = self.lock();
        if state.image.brokers.get(&info.id) == Some(&info) {
            return Ok(());
        }
        let records = vec![
            MetadataRecord::RegisterBroker {
                id: info.id,
                host: info.host,
                port: info.port,
                rack: info.rack,
                http_address: info.http_address,
                incarnation: info.incarnation,
            },
            MetadataRecord::UnfenceBroker { id: info.id },
        ];
        self.commit(&mut state, records)
    }

    /// Creates a topic (or only checks that it could be created). Returns the topic as it is
    /// (or would be).
    pub fn create_topic(
        &self,
        topic: NewTopic,
        validate_only: bool,
    ) -> Result<TopicImage, ControllerError> {
        let mut state = self.lock();
        let image = &state.image;
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
        let id = Uuid::new_v4();
        let mut records = vec![MetadataRecord::CreateTopic {
            name: topic.name.clone(),
            id,
            configs: topic.configs,
        }];
        records.extend(partition_records(id, 0, assignments));
        if validate_only {
            let mut preview = image.clone();
            records.iter().for_each(|r| preview.apply(r));
            return Ok(preview
                .topics
                .remove(&topic.name)
                .expect("the preview image has the topic just applied"));
        }
        self.commit(&mut state, records)?;
        Ok(state
            .image
            .topic(&topic.name)
            .cloned()
            .expect("the committed image has the topic just created"))
    }

    /// Deletes a topic by name.
    pub fn delete_topic(&self, name: &str) -> Result<Uuid, ControllerError> {
        refuse_internal(name)?;
        let mut state = self.lock();
        let id = state
            .image
            .topic(name)
            .map(|t| t.id)
            .ok_or_else(|| unknown_topic(name))?;
        self.commit(&mut state, vec![MetadataRecord::DeleteTopic { id }])?;
        Ok(id)
    }

    /// Grows a topic to `count` partitions.
    pub fn create_partitions(
        &self,
        name: &str,
        count: i32,
        assignments: BTreeMap<i32, Vec<i32>>,
        validate_only: bool,
    ) -> Result<(), ControllerError> {
        refuse_internal(name)?;
        let mut state = self.lock();
        let topic = state.image.topic(name).ok_or_else(|| unknown_topic(name))?;
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
            .map_or(1, |p| p.replicas.len()) as i16;
        let placed = placement_for(&state.image, &assignments, current, count - current, rf)?;
        if validate_only {
            return Ok(());
        }
        let records = partition_records(topic.id, current, placed).collect();
        self.commit(&mut state, records)
    }

    /// Replaces a topic's config overrides.
    pub fn set_topic_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<(), ControllerError> {
        let mut state = self.lock();
        let topic = state.image.topic(name).ok_or_else(|| unknown_topic(name))?;
        topic_config::validate_all(configs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .map_err(|m| ControllerError::new(ResponseError::InvalidConfig, m))?;
        if validate_only || topic.configs == configs {
            return Ok(());
        }
        let record = MetadataRecord::SetTopicConfigs {
            topic_id: topic.id,
            configs,
        };
        self.commit(&mut state, vec![record])
    }

    /// Hands out a producer id that has never been handed out before, even across restarts.
    pub fn allocate_producer_id(&self) -> Result<i64, ControllerError> {
        let mut state = self.lock();
        if state.next_producer_id >= state.image.next_producer_id {
            let block_end = state.next_producer_id + PRODUCER_ID_BLOCK;
            self.commit(
                &mut state,
                vec![MetadataRecord::ProducerIdBlock {
                    next_producer_id: block_end,
                }],
            )?;
        }
        let id = state.next_producer_id;
        state.next_producer_id += 1;
        Ok(id)
    }
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

fn unknown_topic(name: &str) -> ControllerError {
    ControllerError::new(
        ResponseError::UnknownTopicOrPartition,
        format!("topic `{name}` does not exist"),
    )
}

/// Checks a manual assignment or computes an automatic one for `count` new partitions.
fn placement_for(
    image: &MetadataImage,
    manual: &BTreeMap<i32, Vec<i32>>,
    first: i32,
    count: i32,
    replication_factor: i16,
) -> Result<Vec<Vec<i32>>, ControllerError> {
    let brokers: Vec<i32> = image.brokers.keys().copied().collect();
    if count < 1 {
        return Err(ControllerError::new(
            ResponseError::InvalidPartitions,
            "the number of partitions must be at least 1",
        ));
    }
    if !manual.is_empty() {
        let mut out = Vec::new();
        for p in first..first + count {
            let replicas = manual.get(&p).ok_or_else(|| {
                ControllerError::new(
                    ResponseError::InvalidReplicaAssignment,
                    format!("no assignment for partition {p}"),
                )
            })?;
            if replicas.is_empty() || replicas.iter().any(|b| !brokers.contains(b)) {
                return Err(ControllerError::new(
                    ResponseError::InvalidReplicaAssignment,
                    format!(
                        "partition {p}: replicas {replicas:?} must be live brokers {brokers:?}"
                    ),
                ));
            }
            let mut distinct = replicas.clone();
            distinct.sort_unstable();
            distinct.dedup();
            if distinct.len() != replicas.len() {
                return Err(ControllerError::new(
                    ResponseError::InvalidReplicaAssignment,
                    format!("partition {p}: duplicate brokers in {replicas:?}"),
                ));
            }
            out.push(replicas.clone());
        }
        return Ok(out);
    }
    if replication_factor < 1 || replication_factor as usize > brokers.len() {
        return Err(ControllerError::new(
            ResponseError::InvalidReplicationFactor,
            format!(
                "replication factor {replication_factor} is larger than the {} available broker(s)",
                brokers.len()
            ),
        ));
    }
    let start = image.topics.len();
    Ok(assign_replicas(
        &brokers,
        first,
        count,
        replication_factor as usize,
        start,
    ))
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

    struct Nobody;
    impl MetadataListener for Nobody {
        fn on_image_loaded(&self, _: &MetadataImage) {}
        fn on_records(&self, _: &MetadataImage, _: &[MetadataRecord]) {}
    }

    fn controller(dir: &std::path::Path) -> Controller {
        let (store, records) = MetadataStore::open(&dir.join("metadata.log")).unwrap();
        let c = Controller::new(
            store,
            records,
            Arc::new(MetadataCache::default()),
            Arc::new(Nobody),
        );
        c.register_broker(BrokerInfo {
            id: 0,
            host: "h".into(),
            port: 1,
            rack: None,
            http_address: String::new(),
            incarnation: Uuid::nil(),
            fenced: false,
        })
        .unwrap();
        c
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

    #[test]
    fn create_validate_and_refuse() {
        let dir = tempfile::tempdir().unwrap();
        let c = controller(dir.path());
        let t = c.create_topic(new_topic("a.b", 3, 1), true).unwrap();
        assert_eq!(t.partitions.len(), 3);
        assert!(
            c.cache.current().topic("a.b").is_none(),
            "validate_only must not create"
        );
        c.create_topic(new_topic("a.b", 3, 1), false).unwrap();
        let err = |r: Result<TopicImage, ControllerError>| r.unwrap_err().code;
        assert_eq!(
            err(c.create_topic(new_topic("a.b", 1, 1), false)),
            ResponseError::TopicAlreadyExists
        );
        assert_eq!(
            err(c.create_topic(new_topic("a_b", 1, 1), false)),
            ResponseError::InvalidTopicException
        );
        assert_eq!(
            err(c.create_topic(new_topic("x", 1, 3), false)),
            ResponseError::InvalidReplicationFactor
        );
        assert_eq!(
            err(c.create_topic(new_topic("bad name", 1, 1), false)),
            ResponseError::InvalidTopicException
        );
        assert_eq!(
            err(c.create_topic(new_topic("y", 0, 1), false)),
            ResponseError::InvalidPartitions
        );
        let mut bad_cfg = new_topic("z", 1, 1);
        bad_cfg.configs.insert("retention.ms".into(), "x".into());
        assert_eq!(
            err(c.create_topic(bad_cfg, false)),
            ResponseError::InvalidConfig
        );
    }

    #[test]
    fn metadata_and_producer_ids_survive_restart() {
        let dir = tempfile::tempdir().unwrap();
        let first_id;
        {
            let c = controller(dir.path());
            c.create_topic(new_topic("t", 2, 1), false).unwrap();
            c.create_partitions("t", 4, BTreeMap::new(), false).unwrap();
            assert_eq!(
                c.create_partitions("t", 3, BTreeMap::new(), false)
                    .unwrap_err()
                    .code,
                ResponseError::InvalidPartitions
            );
            first_id = c.allocate_producer_id().unwrap();
            assert_eq!(c.allocate_producer_id().unwrap(), first_id + 1);
        }
        let c = controller(dir.path());
        assert_eq!(c.cache.current().topic("t").unwrap().partitions.len(), 4);
        assert!(c.allocate_producer_id().unwrap() > first_id + 1);
        c.delete_topic("t").unwrap();
        assert!(c.cache.current().topic("t").is_none());
        assert_eq!(
            c.delete_topic("t").unwrap_err().code,
            ResponseError::UnknownTopicOrPartition
        );
    }
}
