//! Bringing one topic in line with its [`DesiredTopic`] through a [`KafkaAdmin`]. No
//! Kubernetes here, so the same code runs against the real broker in integration tests.

use std::collections::BTreeMap;

use sluice_client::ClientError;

use super::plan::{plan_topic, DesiredTopic, TopicPlan};
use super::reassign::{needs_move, replica_action, MoveProgress, ReplicaAction};
use crate::kafka::{KafkaAdmin, TopicState};
use crate::placement::staying_brokers;

/// TOPIC_ALREADY_EXISTS: someone created it between our describe and create.
const TOPIC_ALREADY_EXISTS: i16 = 36;

/// Where a replication-factor change stands (absent from the report when the replica
/// counts match the spec and nothing moves).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaMove {
    /// This sync started moving replicas.
    Started {
        /// Replication factor before.
        from: i32,
        /// Replication factor wanted.
        to: i32,
        /// Partitions whose replicas were sent a new target.
        partitions: usize,
        /// Progress right after starting.
        progress: MoveProgress,
    },
    /// A reassignment of the topic is running (started earlier, by anyone).
    Running {
        /// Replication factor wanted.
        to: i32,
        /// Progress.
        progress: MoveProgress,
    },
    /// The change cannot start: fewer live brokers than replicas wanted.
    NotEnoughBrokers {
        /// Replication factor now.
        from: i32,
        /// Replication factor wanted.
        to: i32,
        /// Live brokers.
        live: usize,
    },
}

/// What [`sync_topic`] did and found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// The topic after the changes (`None` right after creation if the metadata does not
    /// show it yet).
    pub state: Option<TopicState>,
    /// It was created.
    pub created: bool,
    /// Partitions grown `(from, to)`.
    pub grown: Option<(i32, i32)>,
    /// Configs set.
    pub configs_set: Vec<String>,
    /// Configs removed.
    pub configs_removed: Vec<String>,
    /// A replication-factor change under way or blocked.
    pub replica_move: Option<ReplicaMove>,
    /// The topic has this many partitions, more than the spec.
    pub partitions_above_spec: Option<i32>,
}

impl SyncReport {
    /// Whether anything was changed on the cluster.
    pub fn changed(&self) -> bool {
        self.created
            || self.grown.is_some()
            || !self.configs_set.is_empty()
            || !self.configs_removed.is_empty()
            || matches!(self.replica_move, Some(ReplicaMove::Started { .. }))
    }

    /// Whether replicas are moving (so the topic is looked at again soon).
    pub fn moving(&self) -> bool {
        matches!(
            self.replica_move,
            Some(ReplicaMove::Started { .. } | ReplicaMove::Running { .. })
        )
    }
}

/// Create the topic, or grow it, repair its configs and move its replicas to the spec's
/// replication factor. New replicas go only to brokers below `kept_brokers` (the cluster's
/// `spec.replicas`: higher ids are being drained), when given.
pub async fn sync_topic(
    admin: &dyn KafkaAdmin,
    desired: &DesiredTopic,
    kept_brokers: Option<i32>,
) -> Result<SyncReport, ClientError> {
    let observed = admin.describe_topic(&desired.name).await?;
    let mut report = SyncReport::default();
    match plan_topic(desired, observed.as_ref()) {
        TopicPlan::Create(new_topic) => {
            match admin.create_topic(&new_topic).await {
                Ok(_) => report.created = true,
                // Created concurrently: the next sync compares it like any existing topic.
                Err(e) if e.code() == Some(TOPIC_ALREADY_EXISTS) => {}
                Err(e) => return Err(e),
            }
            report.state = admin.describe_topic(&desired.name).await?;
        }
        TopicPlan::Update(changes) => {
            let before = observed.as_ref().map(TopicState::partitions).unwrap_or(0);
            if let Some(total) = changes.grow_to {
                admin.create_partitions(&desired.name, total).await?;
                report.grown = Some((before, total));
            }
            if !changes.set_configs.is_empty() || !changes.delete_configs.is_empty() {
                admin
                    .alter_topic_configs(
                        &desired.name,
                        &changes.set_configs,
                        &changes.delete_configs,
                    )
                    .await?;
                report.configs_set = changes.set_configs.into_iter().map(|(k, _)| k).collect();
                report.configs_removed = changes.delete_configs;
            }
            report.partitions_above_spec = changes.partitions_above_spec;
            report.state = if report.changed() {
                admin.describe_topic(&desired.name).await?
            } else {
                observed
            };
            if let Some(state) = &report.state {
                let want = i32::from(desired.replication_factor);
                report.replica_move =
                    sync_replicas(admin, &desired.name, want, state, kept_brokers).await?;
            }
        }
    }
    Ok(report)
}

/// Follow or start the move of `topic`'s replicas to `want` per partition.
async fn sync_replicas(
    admin: &dyn KafkaAdmin,
    topic: &str,
    want: i32,
    state: &TopicState,
    kept_brokers: Option<i32>,
) -> Result<Option<ReplicaMove>, ClientError> {
    let partitions: Vec<i32> = state.assignment.keys().copied().collect();
    let mut ongoing = admin
        .list_partition_reassignments(topic, &partitions)
        .await?;
    let mut fresh = None;
    if needs_move(want, &state.assignment, &ongoing) {
        // `state` was read before `ongoing`: a move that finished in between leaves its old
        // and new replicas together in `state` and nothing in `ongoing`, which looks like a
        // replication factor to fix. Read again, bracketed by two listings: a move running
        // at either listing is waited for.
        if let Some(again) = admin.describe_topic(topic).await? {
            let after = admin
                .list_partition_reassignments(topic, &partitions)
                .await?;
            ongoing.extend(after);
            fresh = Some(again);
        }
    }
    let state = fresh.as_ref().unwrap_or(state);
    let live = if needs_move(want, &state.assignment, &ongoing) {
        staying_brokers(admin.live_brokers().await?, kept_brokers)
    } else {
        Vec::new()
    };
    Ok(
        match replica_action(want, &state.assignment, &ongoing, &live) {
            ReplicaAction::InSync => None,
            ReplicaAction::Wait(progress) => Some(ReplicaMove::Running { to: want, progress }),
            ReplicaAction::NotEnoughBrokers { from, to, live } => {
                Some(ReplicaMove::NotEnoughBrokers { from, to, live })
            }
            ReplicaAction::Start {
                from,
                to,
                moves,
                progress,
            } => {
                start_moves(admin, topic, &moves).await?;
                Some(ReplicaMove::Started {
                    from,
                    to,
                    partitions: moves.len(),
                    progress,
                })
            }
        },
    )
}

/// Send new replica lists for partitions of `topic`; the first partition refused fails
/// the call (the others keep moving, and the next reconcile sees them running).
pub async fn start_moves(
    admin: &dyn KafkaAdmin,
    topic: &str,
    moves: &BTreeMap<i32, Vec<i32>>,
) -> Result<(), ClientError> {
    if moves.is_empty() {
        return Ok(());
    }
    let mut results = admin.alter_partition_reassignments(topic, moves).await?;
    for partition in moves.keys() {
        match results.remove(partition) {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(e),
            None => {
                return Err(sluice_client::kafka_error(
                    -1,
                    Some("partition missing from the AlterPartitionReassignments response".into()),
                    format!("reassign {topic}-{partition}"),
                ))
            }
        }
    }
    Ok(())
}
