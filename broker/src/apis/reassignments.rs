//! AlterPartitionReassignments, ListPartitionReassignments and UnregisterBroker: moving
//! replicas between brokers and removing a broker for good, through the controller.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, UnregisterBrokerRequest,
    UnregisterBrokerResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::broker::Broker;
use crate::metadata::controller::requests::{ControllerRequest, ControllerResponse, WireError};
use crate::metadata::PartitionImage;

type Move = (String, i32, Option<Vec<i32>>);

pub async fn alter(
    broker: &Arc<Broker>,
    request: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let image = broker.metadata.current();
    let mut moves: Vec<Move> = Vec::new();
    // Refusals decided here (replication factor changes not allowed by the request).
    let mut early: BTreeMap<usize, WireError> = BTreeMap::new();
    for t in &request.topics {
        for p in &t.partitions {
            let target = p
                .replicas
                .as_ref()
                .map(|r| r.iter().map(|b| b.0).collect::<Vec<i32>>());
            let current_rf = image
                .topic(t.name.0.as_str())
                .and_then(|topic| topic.partitions.get(&p.partition_index))
                .map(|p| p.target_replicas().len());
            if let (Some(target), Some(rf)) = (&target, current_rf) {
                if !request.allow_replication_factor_change && target.len() != rf {
                    early.insert(
                        moves.len(),
                        WireError {
                            code: ResponseError::InvalidReplicationFactor.code(),
                            message: format!(
                                "the request does not allow changing the replication factor ({rf} -> {})",
                                target.len()
                            ),
                        },
                    );
                }
            }
            moves.push((t.name.0.to_string(), p.partition_index, target));
        }
    }
    let allowed: Vec<Move> = moves
        .iter()
        .enumerate()
        .filter(|(i, _)| !early.contains_key(i))
        .map(|(_, m)| m.clone())
        .collect();
    let mut response = AlterPartitionReassignmentsResponse::default();
    response.allow_replication_factor_change = request.allow_replication_factor_change;
    let outcome = if allowed.is_empty() {
        Ok(Vec::new())
    } else {
        match broker
            .controller
            .handle(ControllerRequest::AlterReassignments { moves: allowed })
            .await
        {
            Ok(ControllerResponse::Reassignments { results }) => Ok(results),
            Ok(other) => Err(WireError {
                code: ResponseError::UnknownServerError.code(),
                message: format!("unexpected controller response {other:?}"),
            }),
            Err(e) => Err(e.to_wire()),
        }
    };
    let results = match outcome {
        Ok(r) => r,
        Err(e) => {
            response.error_code = e.code;
            response.error_message = Some(StrBytes::from_string(e.message));
            return response;
        }
    };
    let mut controller_results = results.into_iter();
    let mut by_topic: Vec<ReassignableTopicResponse> = Vec::new();
    for (i, (topic, partition, _)) in moves.into_iter().enumerate() {
        let result = match early.remove(&i) {
            Some(e) => Some(e),
            None => controller_results.next().flatten(),
        };
        let mut p = ReassignablePartitionResponse::default();
        p.partition_index = partition;
        if let Some(e) = result {
            p.error_code = e.code;
            p.error_message = Some(StrBytes::from_string(e.message));
        }
        match by_topic.iter_mut().find(|t| t.name.0.as_str() == topic) {
            Some(t) => t.partitions.push(p),
            None => {
                let mut t = ReassignableTopicResponse::default();
                t.name = kafka_protocol::messages::TopicName(StrBytes::from_string(topic));
                t.partitions.push(p);
                by_topic.push(t);
            }
        }
    }
    response.responses = by_topic;
    response
}

pub fn list(
    broker: &Broker,
    request: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let image = broker.metadata.current();
    let ongoing = |index: i32, p: &PartitionImage| {
        let mut r = OngoingPartitionReassignment::default();
        r.partition_index = index;
        let ids = |v: &[i32]| v.iter().copied().map(BrokerId).collect::<Vec<_>>();
        r.replicas = ids(&p.replicas);
        r.adding_replicas = ids(&p.adding_replicas);
        r.removing_replicas = ids(&p.removing_replicas);
        r
    };
    let mut response = ListPartitionReassignmentsResponse::default();
    for topic in image.topics.values() {
        let wanted: Option<&Vec<i32>> = match &request.topics {
            None => None,
            Some(list) => match list.iter().find(|t| t.name.0.as_str() == topic.name) {
                Some(t) => Some(&t.partition_indexes),
                None => continue,
            },
        };
        let partitions: Vec<OngoingPartitionReassignment> = topic
            .partitions
            .iter()
            .filter(|(i, p)| p.is_reassigning() && wanted.is_none_or(|w| w.contains(i)))
            .map(|(i, p)| ongoing(*i, p))
            .collect();
        if !partitions.is_empty() {
            let mut t = OngoingTopicReassignment::default();
            t.name = kafka_protocol::messages::TopicName(StrBytes::from_string(topic.name.clone()));
            t.partitions = partitions;
            response.topics.push(t);
        }
    }
    response
}

pub async fn unregister_broker(
    broker: &Arc<Broker>,
    request: UnregisterBrokerRequest,
) -> UnregisterBrokerResponse {
    let mut response = UnregisterBrokerResponse::default();
    if let Err(e) = broker
        .controller
        .handle(ControllerRequest::UnregisterBroker {
            id: request.broker_id.0,
        })
        .await
    {
        response.error_code = e.code.code();
        response.error_message = Some(StrBytes::from_string(e.message));
    }
    response
}
