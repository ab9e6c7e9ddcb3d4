//! DescribeCluster: the brokers and the controller, as the metadata image knows them.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::broker::Broker;

const ENDPOINT_TYPE_BROKERS: i8 = 1;

pub fn describe_cluster(
    broker: &Broker,
    ctx: &super::RequestContext,
    request: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let mut response = DescribeClusterResponse::default();
    response.endpoint_type = ENDPOINT_TYPE_BROKERS;
    response.cluster_authorized_operations = i32::MIN;
    if request.endpoint_type != ENDPOINT_TYPE_BROKERS {
        response.error_code = ResponseError::MismatchedEndpointType.code();
        response.error_message = Some(StrBytes::from_static_str(
            "Sluice brokers serve the broker endpoints only",
        ));
        return response;
    }
    response.cluster_id = StrBytes::from_string(broker.cluster_id.clone());
    response.controller_id = BrokerId(broker.controller.controller_id().unwrap_or(-1));
    response.brokers = broker
        .metadata
        .current()
        .live_brokers()
        .filter_map(|b| {
            let (host, port) = b.endpoint(ctx.listener_name(broker))?;
            let mut r = DescribeClusterBroker::default();
            r.broker_id = BrokerId(b.id);
            r.host = StrBytes::from_string(host.to_string());
            r.port = i32::from(port);
            r.rack = b.rack.clone().map(StrBytes::from_string);
            Some(r)
        })
        .collect();
    response
}
