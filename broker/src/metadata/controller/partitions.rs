//! Pure decisions about partitions across the image: leaders' ISR changes, reassignments and
//! preferred-leader elections.

use std::collections::BTreeSet;

use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::partition_state::{
    alter_isr, cancel_reassignment, elect_preferred, start_reassignment, Electorate, IsrChange,
};
use super::requests::WireError;
use super::topics::check_replica_list;
use super::ControllerError;
use crate::config::BrokerConfig;
use crate::metadata::image::records::MetadataRecord;
use crate::metadata::image::MetadataImage;

fn live_ids(image: &MetadataImage) -> BTreeSet<i32> {
    image.live_brokers().map(|b| b.id).collect()
}

/// A leader's ISR change for one partition.
pub fn alter_partition(
    image: &MetadataImage,
    topic_id: Uuid,
    partition: i32,
    change: &IsrChange,
) -> Result<Vec<MetadataRecord>, ControllerError> {
    let p = image
        .topic_by_id(&topic_id)
        .and_then(|t| t.partitions.get(&partition))
        .ok_or_else(|| {
            ControllerError::new(
                ResponseError::UnknownTopicOrPartition,
                format!("partition {topic_id}/{partition} does not exist"),
            )
        })?;
    let live = live_ids(image);
    let electorate = Electorate {
        live: &live,
        unclean: false,
    };
    let state = alter_isr(p, change, electorate)
        .map_err(|(code, message)| ControllerError::new(code, message))?;
    Ok(state
        .map(|state| MetadataRecord::PartitionChange {
            topic_id,
            partition,
            state,
        })
        .into_iter()
        .collect())
}

/// Starts or cancels reassignments; one result per move (None = accepted).
pub fn alter_reassignments(
    image: &MetadataImage,
    moves: &[(String, i32, Option<Vec<i32>>)],
) -> (Vec<MetadataRecord>, Vec<Option<WireError>>) {
    let live = live_ids(image);
    let registered: Vec<i32> = image.brokers.keys().copied().collect();
    let electorate = Electorate {
        live: &live,
        unclean: false,
    };
    let mut records = Vec::new();
    let mut results = Vec::new();
    for (topic, partition, target) in moves {
        let refuse = |code: ResponseError, message: String| {
            Some(WireError {
                code: code.code(),
                message,
            })
        };
        let Some(t) = image.topic(topic) else {
            results.push(refuse(
                ResponseError::UnknownTopicOrPartition,
                format!("topic `{topic}` does not exist"),
            ));
            continue;
        };
        let Some(p) = t.partitions.get(partition) else {
            results.push(refuse(
                ResponseError::UnknownTopicOrPartition,
                format!("topic `{topic}` has no partition {partition}"),
            ));
            continue;
        };
        let state = match target {
            Some(target) => {
                if let Err(m) = check_replica_list(&registered, target) {
                    results.push(refuse(ResponseError::InvalidReplicaAssignment, m));
                    continue;
                }
                start_reassignment(p, target, electorate)
            }
            None if !p.is_reassigning() => {
                results.push(refuse(
                    ResponseError::NoReassignmentInProgress,
                    format!("no reassignment of {topic}-{partition} is running"),
                ));
                continue;
            }
            None => cancel_reassignment(p, electorate),
        };
        if let Some(state) = state {
            records.push(MetadataRecord::PartitionChange {
                topic_id: t.id,
                partition: *partition,
                state,
            });
        }
        results.push(None);
    }
    (records, results)
}

/// Leadership back to preferred replicas where they are live and in sync.
pub fn preferred_leaders(image: &MetadataImage, _config: &BrokerConfig) -> Vec<MetadataRecord> {
    let live = live_ids(image);
    let mut out = Vec::new();
    for topic in image.topics.values() {
        for (&partition, p) in &topic.partitions {
            if let Some(state) = elect_preferred(p, &live) {
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
