//! CreateTopics, DeleteTopics and CreatePartitions, through the controller.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::RequestContext;
use crate::broker::Broker;
use crate::metadata::{topic_config, ControllerError, NewTopic, TopicImage};

fn message(s: String) -> Option<StrBytes> {
    Some(StrBytes::from_string(s))
}

/// Names that appear more than once in one request: Kafka refuses all of their entries.
fn duplicates<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut counts = HashMap::new();
    names.for_each(|n| *counts.entry(n).or_insert(0) += 1);
    counts
        .into_iter()
        .filter(|(_, c)| *c > 1)
        .map(|(n, _)| n.to_string())
        .collect()
}

fn duplicate_error(name: &str) -> ControllerError {
    ControllerError {
        code: ResponseError::InvalidRequest,
        message: format!("topic `{name}` appears more than once in the request"),
    }
}

pub async fn create_topics(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let dups = duplicates(request.topics.iter().map(|t| t.name.0.as_str()));
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let mut result = CreatableTopicResult::default();
        result.name = topic.name.clone();
        result.num_partitions = -1;
        result.replication_factor = -1;
        let outcome = if dups.contains(&name) {
            Err(duplicate_error(&name))
        } else {
            match new_topic(broker, topic) {
                Ok(new) => {
                    let validate_only = request.validate_only;
                    broker.controller.create_topic(new, validate_only).await
                }
                Err(e) => Err(e),
            }
        };
        match outcome {
            Ok(created) => {
                result.topic_id = created.id;
                result.num_partitions = created.partitions.len() as i32;
                result.replication_factor = created
                    .partitions
                    .values()
                    .next()
                    .map_or(0, |p| p.replicas.len() as i16);
                if ctx.version >= 5 {
                    result.configs = Some(describe_for_create(broker, &created));
                }
            }
            Err(e) => {
                result.error_code = e.code.code();
                result.error_message = message(e.message);
            }
        }
        results.push(result);
    }
    let mut response = CreateTopicsResponse::default();
    response.topics = results;
    response
}

fn new_topic(
    broker: &Broker,
    topic: kafka_protocol::messages::create_topics_request::CreatableTopic,
) -> Result<NewTopic, ControllerError> {
    let invalid = |code, message: String| ControllerError { code, message };
    let manual = !topic.assignments.is_empty();
    if manual && (topic.num_partitions != -1 || topic.replication_factor != -1) {
        return Err(invalid(
            ResponseError::InvalidRequest,
            "with a replica assignment, numPartitions and replicationFactor must be -1".into(),
        ));
    }
    let mut configs = BTreeMap::new();
    for c in topic.configs {
        let value = c.value.ok_or_else(|| {
            invalid(
                ResponseError::InvalidConfig,
                format!("null value for config `{}`", c.name.as_str()),
            )
        })?;
        configs.insert(c.name.to_string(), value.to_string());
    }
    let assignments: BTreeMap<i32, Vec<i32>> = topic
        .assignments
        .iter()
        .map(|a| {
            (
                a.partition_index,
                a.broker_ids.iter().map(|b| b.0).collect(),
            )
        })
        .collect();
    let partitions = match topic.num_partitions {
        -1 if manual => assignments.len() as i32,
        -1 => broker.config.num_partitions,
        n => n,
    };
    let replication_factor = match topic.replication_factor {
        -1 if manual => assignments.values().next().map_or(0, |r| r.len() as i16),
        -1 => broker.config.default_replication_factor,
        n => n,
    };
    Ok(NewTopic {
        name: topic.name.0.to_string(),
        partitions,
        replication_factor,
        assignments,
        configs,
    })
}

fn describe_for_create(broker: &Broker, topic: &TopicImage) -> Vec<CreatableTopicConfigs> {
    topic_config::TOPIC_CONFIGS
        .iter()
        .map(|def| {
            let (value, source) = topic_config::effective(&broker.config, &topic.configs, def);
            let mut c = CreatableTopicConfigs::default();
            c.name = StrBytes::from_static_str(def.name);
            c.value = Some(StrBytes::from_string(value));
            c.config_source = source as i8;
            c
        })
        .collect()
}

pub async fn delete_topics(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    // v6 names topics by name or id; earlier versions by name only.
    let targets: Vec<(Option<String>, Uuid)> = if ctx.version >= 6 {
        request
            .topics
            .into_iter()
            .map(|t| (t.name.map(|n| n.0.to_string()), t.topic_id))
            .collect()
    } else {
        request
            .topic_names
            .into_iter()
            .map(|n| (Some(n.0.to_string()), Uuid::nil()))
            .collect()
    };
    let mut responses = Vec::with_capacity(targets.len());
    for (name, id) in targets {
        let mut r = DeletableTopicResult::default();
        r.topic_id = id;
        let image = broker.metadata.current();
        let resolved = match (&name, id.is_nil()) {
            (Some(n), _) => Ok(n.clone()),
            (None, false) => image
                .topic_by_id(&id)
                .map(|t| t.name.clone())
                .ok_or(ResponseError::UnknownTopicId),
            (None, true) => Err(ResponseError::InvalidRequest),
        };
        r.name = name
            .or_else(|| resolved.clone().ok())
            .map(|n| TopicName(StrBytes::from_string(n)));
        match resolved {
            Ok(topic) => match broker.controller.delete_topic(&topic).await {
                Ok(deleted) => r.topic_id = deleted,
                Err(e) => {
                    r.error_code = e.code.code();
                    r.error_message = message(e.message);
                }
            },
            Err(code) => r.error_code = code.code(),
        }
        responses.push(r);
    }
    let mut response = DeleteTopicsResponse::default();
    response.responses = responses;
    response
}

pub async fn create_partitions(
    broker: &Arc<Broker>,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let dups = duplicates(request.topics.iter().map(|t| t.name.0.as_str()));
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let mut r = CreatePartitionsTopicResult::default();
        r.name = topic.name.clone();
        let outcome = if dups.contains(&name) {
            Err(duplicate_error(&name))
        } else {
            let current = broker
                .metadata
                .current()
                .topic(&name)
                .map_or(0, |t| t.partitions.len() as i32);
            let assignments: BTreeMap<i32, Vec<i32>> = topic
                .assignments
                .unwrap_or_default()
                .into_iter()
                .zip(current..)
                .map(|(a, p)| (p, a.broker_ids.into_iter().map(|b| b.0).collect()))
                .collect();
            let (count, validate_only) = (topic.count, request.validate_only);
            broker
                .controller
                .create_partitions(&name, count, assignments, validate_only)
                .await
        };
        if let Err(e) = outcome {
            r.error_code = e.code.code();
            r.error_message = message(e.message);
        }
        results.push(r);
    }
    let mut response = CreatePartitionsResponse::default();
    response.results = results;
    response
}
