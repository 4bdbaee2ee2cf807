//! DescribeCluster: the cluster id and its unfenced brokers; this node names itself controller
//! (it takes admin requests and hands them to the controller quorum).

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use super::str_bytes;
use crate::shard::Shard;

/// DescribeCluster v1's endpoint types: brokers, or KRaft controllers (which Sluice has not).
const ENDPOINT_BROKERS: i8 = 1;
/// Kafka's answer when authorized operations were not asked for.
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

pub fn handle(shard: &Rc<Shard>, request: DescribeClusterRequest) -> DescribeClusterResponse {
    let response = DescribeClusterResponse::default()
        .with_endpoint_type(ENDPOINT_BROKERS)
        .with_cluster_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED);
    if request.endpoint_type != ENDPOINT_BROKERS {
        return response
            .with_error_code(ResponseError::MismatchedEndpointType.code())
            .with_error_message(Some(str_bytes("this endpoint serves brokers only")));
    }
    let image = shard.metadata();
    let brokers = image
        .unfenced_brokers()
        .map(|b| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(b.node_id))
                .with_host(str_bytes(&b.host))
                .with_port(b.port)
                .with_rack(b.rack.as_deref().map(str_bytes))
        })
        .collect();
    // Clients send admin requests to the controller they are told of: this node forwards them.
    response
        .with_cluster_id(str_bytes(&image.cluster_id))
        .with_controller_id(BrokerId(shard.config.node_id))
        .with_brokers(brokers)
}
