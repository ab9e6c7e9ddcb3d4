//! Bringing one topic in line with its [`DesiredTopic`] through a [`KafkaAdmin`]. No
//! Kubernetes here, so the same code runs against the real broker in integration tests.

use std::collections::BTreeMap;

use sluice_client::ClientError;

use super::placement::{target_assignment, PlacementError};
use super::plan::{plan_topic, DesiredTopic, TopicPlan};
use crate::kafka::{KafkaAdmin, TopicState};

/// TOPIC_ALREADY_EXISTS: someone created it between our describe and create.
const TOPIC_ALREADY_EXISTS: i16 = 36;

/// A pending replication-factor change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicasChange {
    /// Current replication factor.
    pub from: i32,
    /// Desired replication factor.
    pub to: i32,
    /// Where the replicas would go (see [`target_assignment`]).
    pub target: Result<BTreeMap<i32, Vec<i32>>, PlacementError>,
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
    /// Replication factor differs; needs reassignment.
    pub replicas_change: Option<ReplicasChange>,
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
    }
}

/// Create the topic, or grow it and repair its configs.
pub async fn sync_topic(
    admin: &dyn KafkaAdmin,
    desired: &DesiredTopic,
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
            if let Some((from, to)) = changes.replicas_change {
                let brokers: Vec<i32> = admin.metadata().await?.brokers.keys().copied().collect();
                let current = report
                    .state
                    .as_ref()
                    .map(|s| s.assignment.clone())
                    .unwrap_or_default();
                report.replicas_change = Some(ReplicasChange {
                    from,
                    to,
                    target: target_assignment(&current, &brokers, usize::try_from(to).unwrap_or(0)),
                });
            }
        }
    }
    Ok(report)
}
