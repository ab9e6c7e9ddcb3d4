//! Consumer group APIs (classic protocol): FindCoordinator, JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, ListGroups, DescribeGroups, DeleteGroups. The group logic lives in
//! `coordinator`; these translate requests and responses.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use crate::coordinator::OFFSETS_TOPIC;
use kafka_protocol::ResponseError;

use super::{Reply, RequestContext};
use crate::broker::Broker;
use crate::coordinator::group::{JoinRequest, JoinResult, SyncResult};

const KEY_TYPE_GROUP: i8 = 0;

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

fn code(e: Option<ResponseError>) -> i16 {
    e.map_or(0, |e| e.code())
}

pub fn find_coordinator(
    broker: &Broker,
    ctx: &RequestContext,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let image = broker.metadata.current();
    // Any broker answers: the coordinator is the leader of the group's offsets partition.
    let lookup = |key: &str| -> Result<(i32, String, i32), ResponseError> {
        if request.key_type != KEY_TYPE_GROUP {
            // Transactions are not served, so there is no transaction coordinator.
            return Err(ResponseError::InvalidRequest);
        }
        if key.is_empty() {
            return Err(ResponseError::InvalidGroupId);
        }
        let leader = image
            .topic(OFFSETS_TOPIC)
            .and_then(|t| t.partitions.get(&broker.groups.partition_of(key)))
            .map(|p| p.leader)
            .ok_or(ResponseError::CoordinatorNotAvailable)?;
        let b = image
            .brokers
            .get(&leader)
            .filter(|b| !b.fenced)
            .ok_or(ResponseError::CoordinatorNotAvailable)?;
        let (host, port) = b
            .endpoint(ctx.listener_name(broker))
            .ok_or(ResponseError::CoordinatorNotAvailable)?;
        Ok((b.id, host.to_string(), i32::from(port)))
    };
    let mut response = FindCoordinatorResponse::default();
    if ctx.version >= 4 {
        response.coordinators = request
            .coordinator_keys
            .iter()
            .map(|key| {
                let mut c = Coordinator::default();
                c.key = key.clone();
                match lookup(key.as_str()) {
                    Ok((id, host, port)) => {
                        c.node_id = BrokerId(id);
                        c.host = s(host);
                        c.port = port;
                    }
                    Err(e) => {
                        c.node_id = BrokerId(-1);
                        c.port = -1;
                        c.error_code = e.code();
                    }
                }
                c
            })
            .collect();
    } else {
        match lookup(request.key.as_str()) {
            Ok((id, host, port)) => {
                response.node_id = BrokerId(id);
                response.host = s(host);
                response.port = port;
            }
            Err(e) => {
                response.node_id = BrokerId(-1);
                response.port = -1;
                response.error_code = e.code();
            }
        }
    }
    response
}

pub fn join_group(
    broker: &Arc<Broker>,
    ctx: RequestContext,
    request: JoinGroupRequest,
    client_id: String,
) -> Reply {
    let group_id = request.group_id.0.to_string();
    // v0 has no rebalance timeout: it equals the session timeout.
    let rebalance_ms = if ctx.version >= 1 {
        request.rebalance_timeout_ms
    } else {
        request.session_timeout_ms
    };
    let req = JoinRequest {
        member_id: request.member_id.to_string(),
        instance_id: request.group_instance_id.map(|i| i.to_string()),
        client_id,
        // Kafka shows the host as `/<ip>`.
        client_host: ctx.peer.map(|ip| format!("/{ip}")).unwrap_or_default(),
        session_timeout: Duration::from_millis(request.session_timeout_ms.max(0) as u64),
        rebalance_timeout: Duration::from_millis(rebalance_ms.max(0) as u64),
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
        require_known_member_id: ctx.version >= 4,
    };
    let waiting = broker.groups.join(&group_id, req);
    let broker = broker.clone();
    Reply::Later(Box::pin(async move {
        let result = waiting
            .await
            .unwrap_or_else(|_| JoinResult::error(ResponseError::UnknownServerError, ""));
        ctx.respond(&broker, &join_response(result))
    }))
}

fn join_response(r: JoinResult) -> JoinGroupResponse {
    let mut response = JoinGroupResponse::default();
    response.error_code = code(r.error);
    response.generation_id = r.generation;
    response.protocol_type = r.protocol_type.map(s);
    response.protocol_name = r.protocol.map(s);
    response.leader = s(r.leader);
    response.member_id = s(r.member_id);
    response.members = r
        .members
        .into_iter()
        .map(|(id, instance, metadata)| {
            let mut m = JoinGroupResponseMember::default();
            m.member_id = s(id);
            m.group_instance_id = instance.map(s);
            m.metadata = metadata;
            m
        })
        .collect();
    response
}

pub fn sync_group(broker: &Arc<Broker>, ctx: RequestContext, request: SyncGroupRequest) -> Reply {
    let group_id = request.group_id.0.to_string();
    let instance = request.group_instance_id.map(|i| i.to_string());
    let assignments = request
        .assignments
        .into_iter()
        .map(|a| (a.member_id.to_string(), a.assignment))
        .collect();
    let waiting = broker.groups.sync(
        &group_id,
        request.member_id.as_str(),
        instance.as_deref(),
        request.generation_id,
        assignments,
    );
    let broker = broker.clone();
    Reply::Later(Box::pin(async move {
        let r = waiting
            .await
            .unwrap_or_else(|_| SyncResult::error(ResponseError::UnknownServerError));
        let mut response = SyncGroupResponse::default();
        response.error_code = code(r.error);
        response.protocol_type = r.protocol_type.map(s);
        response.protocol_name = r.protocol.map(s);
        response.assignment = r.assignment;
        ctx.respond(&broker, &response)
    }))
}

pub fn heartbeat(broker: &Broker, request: HeartbeatRequest) -> HeartbeatResponse {
    let instance = request.group_instance_id.map(|i| i.to_string());
    let result = broker.groups.heartbeat(
        request.group_id.0.as_str(),
        request.member_id.as_str(),
        instance.as_deref(),
        request.generation_id,
    );
    let mut response = HeartbeatResponse::default();
    response.error_code = code(result.err());
    response
}

pub fn leave_group(
    broker: &Broker,
    ctx: &RequestContext,
    request: LeaveGroupRequest,
) -> LeaveGroupResponse {
    let members: Vec<(String, Option<String>)> = if ctx.version >= 3 {
        request
            .members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|i| i.to_string()),
                )
            })
            .collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    let mut response = LeaveGroupResponse::default();
    match broker.groups.leave(request.group_id.0.as_str(), &members) {
        Err(e) => response.error_code = e.code(),
        Ok(results) if ctx.version >= 3 => {
            response.members = members
                .into_iter()
                .zip(results)
                .map(|((id, instance), r)| {
                    let mut m = MemberResponse::default();
                    m.member_id = s(id);
                    m.group_instance_id = instance.map(s);
                    m.error_code = code(r.err());
                    m
                })
                .collect();
        }
        Ok(results) => response.error_code = code(results.into_iter().next().and_then(|r| r.err())),
    }
    response
}

pub fn list_groups(broker: &Broker, request: ListGroupsRequest) -> ListGroupsResponse {
    let states: Vec<String> = request
        .states_filter
        .iter()
        .map(|s| s.to_lowercase())
        .collect();
    let types: Vec<String> = request
        .types_filter
        .iter()
        .map(|s| s.to_lowercase())
        .collect();
    let mut response = ListGroupsResponse::default();
    response.groups = broker
        .groups
        .list_groups()
        .into_iter()
        .filter(|(_, _, state)| states.is_empty() || states.contains(&state.to_lowercase()))
        .filter(|_| types.is_empty() || types.iter().any(|t| t == "classic"))
        .map(|(id, protocol_type, state)| {
            let mut g = ListedGroup::default();
            g.group_id = GroupId(s(id));
            g.protocol_type = s(protocol_type);
            g.group_state = s(state);
            g.group_type = s("classic");
            g
        })
        .collect();
    response
}

pub fn describe_groups(broker: &Broker, request: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let mut response = DescribeGroupsResponse::default();
    for id in request.groups {
        let mut g = DescribedGroup::default();
        g.group_id = id.clone();
        match broker.groups.describe(id.0.as_str()) {
            Err(e) => g.error_code = e.code(),
            // Kafka describes an unknown group as Dead with no error (before v6).
            Ok(None) => g.group_state = s("Dead"),
            Ok(Some(d)) => {
                g.group_state = s(d.state);
                g.protocol_type = s(d.protocol_type);
                g.protocol_data = s(d.protocol);
                g.members = d
                    .members
                    .into_iter()
                    .map(
                        |(member_id, instance, client_id, host, metadata, assignment)| {
                            let mut m = DescribedGroupMember::default();
                            m.member_id = s(member_id);
                            m.group_instance_id = instance.map(s);
                            m.client_id = s(client_id);
                            m.client_host = s(host);
                            m.member_metadata = metadata;
                            m.member_assignment = assignment;
                            m
                        },
                    )
                    .collect();
            }
        }
        response.groups.push(g);
    }
    response
}

pub fn delete_groups(broker: &Broker, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut response = DeleteGroupsResponse::default();
    response.results = request
        .groups_names
        .into_iter()
        .map(|id| {
            let mut r = DeletableGroupResult::default();
            r.error_code = code(broker.groups.delete_group(id.0.as_str()).err());
            r.group_id = id;
            r
        })
        .collect();
    response
}
