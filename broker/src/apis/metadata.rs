//! Metadata: brokers, topics and partitions from the metadata image, creating missing topics
//! when `auto.create.topics.enable` allows.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::RequestContext;
use crate::broker::Broker;
use crate::metadata::image::NO_LEADER;
use crate::metadata::topic_name::is_internal;
use crate::metadata::{MetadataImage, NewTopic, TopicImage};

/// Kafka's value for "authorized operations not requested".
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: MetadataRequest,
) -> MetadataResponse {
    // v0 used an empty list to mean "all topics"; later versions use null.
    let wanted = match request.topics {
        Some(t) if !(t.is_empty() && ctx.version == 0) => Some(t),
        _ => None,
    };
    let auto_create =
        broker.config.auto_create_topics && (ctx.version < 4 || request.allow_auto_topic_creation);
    let mut topics = Vec::new();
    match wanted {
        None => {
            let image = broker.metadata.current();
            topics.extend(image.topics.values().map(|t| topic_response(&image, t)));
        }
        Some(requested) => {
            for t in requested {
                let name = t.name.map(|n| n.0.to_string());
                topics.push(match name {
                    Some(name) => named_topic(broker, name, auto_create).await,
                    None => topic_by_id(&broker.metadata.current(), t.topic_id),
                });
            }
        }
    }
    let image = broker.metadata.current();
    let mut response = MetadataResponse::default();
    response.brokers = brokers(&image, ctx.listener_name(broker));
    // A leader without this listener cannot be reached by this client (Kafka's answer).
    let reachable: std::collections::BTreeSet<i32> =
        response.brokers.iter().map(|b| b.node_id.0).collect();
    for p in topics.iter_mut().flat_map(|t| t.partitions.iter_mut()) {
        if p.error_code == 0
            && !reachable.contains(&p.leader_id.0)
            && image.brokers.get(&p.leader_id.0).is_some_and(|b| !b.fenced)
        {
            p.error_code = ResponseError::ListenerNotFound.code();
        }
    }
    response.cluster_id = Some(StrBytes::from_string(broker.cluster_id.clone()));
    response.controller_id = BrokerId(broker.controller.controller_id().unwrap_or(-1));
    response.topics = topics;
    response.cluster_authorized_operations = AUTHORIZED_OPERATIONS_OMITTED;
    response
}

async fn named_topic(
    broker: &Arc<Broker>,
    name: String,
    auto_create: bool,
) -> MetadataResponseTopic {
    if let Some(t) = broker.metadata.current().topic(&name) {
        return topic_response(&broker.metadata.current(), t);
    }
    if !auto_create {
        return topic_error(
            Some(name),
            Uuid::nil(),
            ResponseError::UnknownTopicOrPartition,
        );
    }
    let new_topic = NewTopic {
        name: name.clone(),
        partitions: broker.config.num_partitions,
        replication_factor: broker.config.default_replication_factor,
        assignments: BTreeMap::new(),
        configs: BTreeMap::new(),
    };
    match broker.controller.create_topic(new_topic, false).await {
        Ok(t) => topic_response(&broker.metadata.current(), &t),
        // Another request created it first.
        Err(e) if e.code == ResponseError::TopicAlreadyExists => {
            match broker.metadata.current().topic(&name) {
                Some(t) => topic_response(&broker.metadata.current(), t),
                None => topic_error(Some(name), Uuid::nil(), ResponseError::LeaderNotAvailable),
            }
        }
        Err(e) => {
            tracing::debug!(topic = %name, error = %e, "auto-create refused");
            topic_error(Some(name), Uuid::nil(), e.code)
        }
    }
}

fn topic_by_id(image: &MetadataImage, id: Uuid) -> MetadataResponseTopic {
    match image.topic_by_id(&id) {
        Some(t) => topic_response(image, t),
        None => topic_error(None, id, ResponseError::UnknownTopicId),
    }
}

fn topic_error(name: Option<String>, id: Uuid, code: ResponseError) -> MetadataResponseTopic {
    let mut t = MetadataResponseTopic::default();
    t.error_code = code.code();
    t.name = name.map(|n| TopicName(StrBytes::from_string(n)));
    t.topic_id = id;
    t.topic_authorized_operations = AUTHORIZED_OPERATIONS_OMITTED;
    t
}

/// The live brokers with their addresses on `listener`; brokers without it are left out.
pub fn brokers(image: &MetadataImage, listener: &str) -> Vec<MetadataResponseBroker> {
    // Fenced brokers are not offered to clients, as in Kafka.
    image
        .live_brokers()
        .filter_map(|b| {
            let (host, port) = b.endpoint(listener)?;
            let mut r = MetadataResponseBroker::default();
            r.node_id = BrokerId(b.id);
            r.host = StrBytes::from_string(host.to_string());
            r.port = i32::from(port);
            r.rack = b.rack.clone().map(StrBytes::from_string);
            Some(r)
        })
        .collect()
}

fn topic_response(image: &MetadataImage, topic: &TopicImage) -> MetadataResponseTopic {
    let ids = |v: &[i32]| v.iter().copied().map(BrokerId).collect::<Vec<_>>();
    let mut t = topic_error(
        Some(topic.name.clone()),
        topic.id,
        ResponseError::UnknownServerError,
    );
    t.error_code = 0;
    t.is_internal = is_internal(&topic.name);
    t.partitions = topic
        .partitions
        .iter()
        .map(|(&index, p)| {
            let offline: Vec<i32> = p
                .replicas
                .iter()
                .copied()
                .filter(|r| image.brokers.get(r).is_none_or(|b| b.fenced))
                .collect();
            let mut r = MetadataResponsePartition::default();
            if p.leader == NO_LEADER {
                r.error_code = ResponseError::LeaderNotAvailable.code();
            }
            r.partition_index = index;
            r.leader_id = BrokerId(p.leader);
            r.leader_epoch = p.leader_epoch;
            r.replica_nodes = ids(&p.replicas);
            r.isr_nodes = ids(&p.isr);
            r.offline_replicas = ids(&offline);
            r
        })
        .collect();
    t
}
