//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs. Topic configs are dynamic and
//! go through the controller; broker configs are static and only described.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest,
    AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::RequestContext;
use crate::broker::Broker;
use crate::metadata::topic_config::{self, ConfigSource, ConfigType};
use crate::metadata::ControllerError;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

fn err(code: ResponseError, message: impl Into<String>) -> ControllerError {
    ControllerError {
        code,
        message: message.into(),
    }
}

pub fn describe_configs(
    broker: &Broker,
    ctx: &RequestContext,
    request: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let image = broker.metadata.current();
    let mut response = DescribeConfigsResponse::default();
    for resource in request.resources {
        let mut result = DescribeConfigsResult::default();
        result.resource_type = resource.resource_type;
        result.resource_name = resource.resource_name.clone();
        let wanted = |name: &str| {
            resource
                .configuration_keys
                .as_ref()
                .is_none_or(|keys| keys.iter().any(|k| k.as_str() == name))
        };
        match resource.resource_type {
            RESOURCE_TOPIC => match image.topic(resource.resource_name.as_str()) {
                Some(topic) => {
                    for def in topic_config::TOPIC_CONFIGS
                        .iter()
                        .filter(|d| wanted(d.name))
                    {
                        let (value, source) =
                            topic_config::effective(&broker.config, &topic.configs, def);
                        let mut c = DescribeConfigsResourceResult::default();
                        c.name = StrBytes::from_static_str(def.name);
                        c.value = Some(s(value));
                        c.config_source = source as i8;
                        c.config_type = def.config_type as i8;
                        if request.include_synonyms && ctx.version >= 1 {
                            c.synonyms = synonyms(broker, &topic.configs, def);
                        }
                        if request.include_documentation {
                            c.documentation = Some(StrBytes::from_static_str(def.doc));
                        }
                        result.configs.push(c);
                    }
                }
                None => {
                    result.error_code = ResponseError::UnknownTopicOrPartition.code();
                    result.error_message = Some(s(format!(
                        "topic `{}` does not exist",
                        resource.resource_name.as_str()
                    )));
                }
            },
            RESOURCE_BROKER => {
                let name = resource.resource_name.as_str();
                if !name.is_empty() && name != broker.config.node_id.to_string() {
                    result.error_code = ResponseError::InvalidRequest.code();
                    result.error_message = Some(s(format!(
                        "this is broker {}, not `{name}`",
                        broker.config.node_id
                    )));
                } else {
                    for (key, value) in broker
                        .config
                        .describe()
                        .into_iter()
                        .filter(|(k, _)| wanted(k))
                    {
                        let mut c = DescribeConfigsResourceResult::default();
                        c.name = StrBytes::from_static_str(key);
                        c.value = Some(s(value));
                        c.read_only = true;
                        c.config_source = ConfigSource::StaticBroker as i8;
                        c.config_type = ConfigType::String as i8;
                        result.configs.push(c);
                    }
                }
            }
            other => {
                result.error_code = ResponseError::InvalidRequest.code();
                result.error_message = Some(s(format!("resource type {other} is not supported")));
            }
        }
        response.results.push(result);
    }
    response
}

fn synonyms(
    broker: &Broker,
    overrides: &BTreeMap<String, String>,
    def: &topic_config::TopicConfigDef,
) -> Vec<DescribeConfigsSynonym> {
    let mut out = Vec::new();
    let synonym = |name: &'static str, value: String, source: ConfigSource| {
        let mut syn = DescribeConfigsSynonym::default();
        syn.name = StrBytes::from_static_str(name);
        syn.value = Some(s(value));
        syn.source = source as i8;
        syn
    };
    if let Some(v) = overrides.get(def.name) {
        out.push(synonym(def.name, v.clone(), ConfigSource::Topic));
    }
    let (value, source) = topic_config::effective(&broker.config, &BTreeMap::new(), def);
    out.push(synonym(def.broker_key, value, source));
    out
}

/// Checks that a resource names an existing topic; broker configs cannot be altered.
fn topic_target(
    broker: &Broker,
    resource_type: i8,
    name: &str,
) -> Result<BTreeMap<String, String>, ControllerError> {
    match resource_type {
        RESOURCE_TOPIC => broker
            .metadata
            .current()
            .topic(name)
            .map(|t| t.configs.clone())
            .ok_or_else(|| {
                err(
                    ResponseError::UnknownTopicOrPartition,
                    format!("topic `{name}` does not exist"),
                )
            }),
        RESOURCE_BROKER => Err(err(
            ResponseError::InvalidRequest,
            "broker configs are static: set them in the broker's configuration and restart",
        )),
        other => Err(err(
            ResponseError::InvalidRequest,
            format!("resource type {other} is not supported"),
        )),
    }
}

pub async fn alter_configs(
    broker: &Arc<Broker>,
    request: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let mut response = AlterConfigsResponse::default();
    for resource in request.resources {
        let name = resource.resource_name.to_string();
        // AlterConfigs replaces the whole set of overrides.
        let new = topic_target(broker, resource.resource_type, &name).map(|_| {
            resource
                .configs
                .into_iter()
                .filter_map(|c| c.value.map(|v| (c.name.to_string(), v.to_string())))
                .collect()
        });
        let mut r = alter_configs_response::AlterConfigsResourceResponse::default();
        (r.error_code, r.error_message) = store(broker, name, new, request.validate_only).await;
        r.resource_type = resource.resource_type;
        r.resource_name = resource.resource_name;
        response.responses.push(r);
    }
    response
}

pub async fn incremental_alter_configs(
    broker: &Arc<Broker>,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut response = IncrementalAlterConfigsResponse::default();
    for resource in request.resources {
        let name = resource.resource_name.to_string();
        let new = topic_target(broker, resource.resource_type, &name)
            .and_then(|current| apply_operations(broker, current, &resource.configs));
        let mut r = incremental_alter_configs_response::AlterConfigsResourceResponse::default();
        (r.error_code, r.error_message) = store(broker, name, new, request.validate_only).await;
        r.resource_type = resource.resource_type;
        r.resource_name = resource.resource_name;
        response.responses.push(r);
    }
    response
}

/// Both alter APIs end here: a topic's new overrides stored through the controller, as the
/// resource's error code and message.
async fn store(
    broker: &Arc<Broker>,
    topic: String,
    new: Result<BTreeMap<String, String>, ControllerError>,
    validate_only: bool,
) -> (i16, Option<StrBytes>) {
    let outcome = match new {
        Ok(configs) => {
            broker
                .controller
                .set_topic_configs(&topic, configs, validate_only)
                .await
        }
        Err(e) => Err(e),
    };
    match outcome {
        Ok(()) => (0, None),
        Err(e) => (e.code.code(), Some(s(e.message))),
    }
}

/// Applies SET / DELETE / APPEND / SUBTRACT to a topic's overrides. Pure.
fn apply_operations(
    broker: &Broker,
    mut configs: BTreeMap<String, String>,
    ops: &[kafka_protocol::messages::incremental_alter_configs_request::AlterableConfig],
) -> Result<BTreeMap<String, String>, ControllerError> {
    let invalid = |m: String| err(ResponseError::InvalidConfig, m);
    for op in ops {
        let name = op.name.as_str();
        let def = topic_config::definition(name)
            .ok_or_else(|| invalid(format!("unknown or unsupported topic config `{name}`")))?;
        let value = op.value.as_ref().map(|v| v.to_string());
        match op.config_operation {
            OP_SET => {
                let v = value.ok_or_else(|| invalid(format!("SET `{name}` needs a value")))?;
                configs.insert(name.to_string(), v);
            }
            OP_DELETE => {
                configs.remove(name);
            }
            OP_APPEND | OP_SUBTRACT if def.config_type == ConfigType::List => {
                let v = value
                    .ok_or_else(|| invalid(format!("APPEND/SUBTRACT `{name}` needs a value")))?;
                let current = configs
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| topic_config::effective(&broker.config, &configs, def).0);
                let mut items: Vec<String> = current
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect();
                for item in v.split(',').filter(|s| !s.is_empty()) {
                    if op.config_operation == OP_APPEND && !items.iter().any(|i| i == item) {
                        items.push(item.to_string());
                    } else if op.config_operation == OP_SUBTRACT {
                        items.retain(|i| i != item);
                    }
                }
                configs.insert(name.to_string(), items.join(","));
            }
            OP_APPEND | OP_SUBTRACT => {
                return Err(invalid(format!("`{name}` is not a list config")))
            }
            other => {
                return Err(err(
                    ResponseError::InvalidRequest,
                    format!("unknown config operation {other}"),
                ))
            }
        }
    }
    Ok(configs)
}
