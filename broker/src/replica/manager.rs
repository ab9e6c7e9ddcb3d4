//! The replica manager: the partitions this broker hosts, kept in step with the metadata image
//! (opened when assigned, deleted with their topic, reconfigured when configs change).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use uuid::Uuid;

use super::partition::{Partition, PartitionSettings};
use crate::config::BrokerConfig;
use crate::metadata::{topic_config, MetadataImage, MetadataListener, MetadataRecord, TopicImage};

/// Suffix of a partition directory whose topic was deleted and whose files are being removed.
const DELETE_SUFFIX: &str = "-delete";

type TopicPartitions = BTreeMap<i32, Arc<Partition>>;

/// The partitions hosted on this broker.
pub struct ReplicaManager {
    config: Arc<BrokerConfig>,
    partitions: RwLock<HashMap<Arc<str>, TopicPartitions>>,
}

impl ReplicaManager {
    pub fn new(config: Arc<BrokerConfig>) -> ReplicaManager {
        ReplicaManager {
            config,
            partitions: RwLock::new(HashMap::new()),
        }
    }

    /// The partition, if this broker hosts it.
    pub fn get(&self, topic: &str, partition: i32) -> Option<Arc<Partition>> {
        self.read()
            .get(topic)
            .and_then(|p| p.get(&partition))
            .cloned()
    }

    /// Every hosted partition.
    pub fn all(&self) -> Vec<Arc<Partition>> {
        self.read()
            .values()
            .flat_map(|p| p.values().cloned())
            .collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Arc<str>, TopicPartitions>> {
        self.partitions.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Arc<str>, TopicPartitions>> {
        self.partitions.write().unwrap_or_else(|p| p.into_inner())
    }

    fn partition_dir(&self, topic: &str, partition: i32) -> PathBuf {
        self.config.data_dir.join(format!("{topic}-{partition}"))
    }

    fn settings(&self, topic: &TopicImage) -> PartitionSettings {
        PartitionSettings {
            log: topic_config::log_config(&self.config, &topic.configs),
            min_insync_replicas: topic_config::min_insync_replicas(&self.config, &topic.configs),
        }
    }

    /// Opens every partition of `topic` assigned to this broker that is not open yet.
    fn open_topic(&self, topic: &TopicImage) {
        let name: Arc<str> = Arc::from(topic.name.as_str());
        for (&index, p) in &topic.partitions {
            if !p.replicas.contains(&self.config.node_id) || self.get(&topic.name, index).is_some()
            {
                continue;
            }
            let dir = self.partition_dir(&topic.name, index);
            match Partition::open(
                dir,
                name.clone(),
                index,
                topic.id,
                self.settings(topic),
                p.leader_epoch,
            ) {
                Ok(partition) => {
                    self.write()
                        .entry(name.clone())
                        .or_default()
                        .insert(index, Arc::new(partition));
                }
                // The partition stays offline: produce and fetch answer KAFKA_STORAGE_ERROR.
                Err(e) => {
                    tracing::error!(topic = %topic.name, partition = index, error = %e, "cannot open partition")
                }
            }
        }
    }

    fn delete_topic(&self, id: &Uuid) {
        let removed: Vec<Arc<Partition>> = {
            let mut map = self.write();
            let name = map
                .iter()
                .find(|(_, ps)| ps.values().any(|p| p.topic_id == *id))
                .map(|(n, _)| n.clone());
            name.and_then(|n| map.remove(&n))
                .map(|ps| ps.into_values().collect())
                .unwrap_or_default()
        };
        for p in removed {
            let dir = p.log().dir().to_path_buf();
            let doomed = dir.with_file_name(format!(
                "{}.{}{DELETE_SUFFIX}",
                dir.file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("partition"),
                id.simple()
            ));
            // Rename first so a topic created again under the same name starts empty; the
            // files go in the background, and a crash before that is finished on next start.
            match std::fs::rename(&dir, &doomed) {
                Ok(()) => remove_dir_in_background(doomed),
                Err(e) => {
                    tracing::error!(dir = %dir.display(), error = %e, "cannot delete partition directory")
                }
            }
        }
    }

    /// Removes directories of deleted topics left by a crash, and partitions no longer assigned.
    fn remove_orphans(&self, image: &MetadataImage) {
        let Ok(entries) = std::fs::read_dir(&self.config.data_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let known = name.rsplit_once('-').is_some_and(|(topic, p)| {
                p.parse::<i32>().ok().is_some_and(|p| {
                    image.topic(topic).is_some_and(|t| {
                        t.partitions
                            .get(&p)
                            .is_some_and(|pi| pi.replicas.contains(&self.config.node_id))
                    })
                })
            });
            let looks_like_partition = name
                .rsplit_once('-')
                .is_some_and(|(_, p)| p.parse::<i32>().is_ok());
            if name.ends_with(DELETE_SUFFIX)
                || (looks_like_partition && !known && is_partition_dir(&path))
            {
                tracing::info!(dir = %path.display(), "removing partition directory of a deleted topic");
                remove_dir_in_background(path);
            }
        }
    }

    /// Clean shutdown of every partition.
    pub fn close_all(&self) {
        for p in self.all() {
            if let Err(e) = p.close() {
                tracing::error!(topic = %p.topic, partition = p.index, error = %e, "partition did not close cleanly");
            }
        }
    }
}

/// A partition directory holds segment files; other directories (the metadata log's) are left.
fn is_partition_dir(path: &Path) -> bool {
    std::fs::read_dir(path).is_ok_and(|mut it| {
        it.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".log")))
    })
}

fn remove_dir_in_background(path: PathBuf) {
    std::thread::spawn(move || {
        if let Err(e) = std::fs::remove_dir_all(&path) {
            tracing::warn!(dir = %path.display(), error = %e, "cannot remove directory");
        }
    });
}

impl MetadataListener for ReplicaManager {
    fn on_image_loaded(&self, image: &MetadataImage) {
        self.remove_orphans(image);
        for topic in image.topics.values() {
            self.open_topic(topic);
        }
    }

    fn on_records(&self, image: &MetadataImage, records: &[MetadataRecord]) {
        for record in records {
            match record {
                MetadataRecord::CreatePartition { topic_id, .. } => {
                    if let Some(topic) = image.topic_by_id(topic_id) {
                        self.open_topic(topic);
                    }
                }
                MetadataRecord::DeleteTopic { id } => self.delete_topic(id),
                MetadataRecord::PartitionChange {
                    topic_id,
                    partition,
                    state,
                } => {
                    if let Some(topic) = image.topic_by_id(topic_id) {
                        if let Some(p) = self.get(&topic.name, *partition) {
                            p.set_leader_epoch(state.leader_epoch);
                        }
                    }
                }
                MetadataRecord::SetTopicConfigs { topic_id, .. } => {
                    if let Some(topic) = image.topic_by_id(topic_id) {
                        let settings = self.settings(topic);
                        if let Some(ps) = self.read().get(topic.name.as_str()) {
                            ps.values()
                                .for_each(|p| p.update_settings(settings.clone()));
                        }
                    }
                }
                MetadataRecord::RegisterBroker { .. }
                | MetadataRecord::FenceBroker { .. }
                | MetadataRecord::UnfenceBroker { .. }
                | MetadataRecord::UnregisterBroker { .. }
                | MetadataRecord::CreateTopic { .. }
                | MetadataRecord::ProducerIdBlock { .. } => {}
            }
        }
    }
}
