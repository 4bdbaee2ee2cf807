//! DescribeCluster: the cluster id and its one broker, which is also its controller.

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
    let node_id = BrokerId(shard.config.node_id);
    let broker = DescribeClusterBroker::default()
        .with_broker_id(node_id)
        .with_host(str_bytes(&shard.advertised_host))
        .with_port(shard.advertised_port);
    response
        .with_cluster_id(str_bytes(&shard.metadata().cluster_id))
        .with_controller_id(node_id)
        .with_brokers(vec![broker])
}
