//! AlterPartitionReassignments (45): starts, replaces or cancels (a null target) partitions'
//! reassignments, decided by the controller shard against the image (`cluster::reassignment`);
//! answered per partition once the change is installed on every shard.

use std::rc::Rc;

use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::{AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse};

use super::{str_bytes, topic_name};
use crate::shard::router::AlterReassignments;
use crate::shard::{CONTROLLER_SHARD, Shard};

pub async fn handle(
    shard: &Rc<Shard>,
    request: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .into_iter()
                .map(|p| (p.partition_index, p.replicas.map(|replicas| replicas.into_iter().map(|id| id.0).collect())))
                .collect();
            (topic.name.0.to_string(), partitions)
        })
        .collect();
    let allow = request.allow_replication_factor_change;
    let call = AlterReassignments { topics, allow_replication_factor_change: allow };
    let outcomes = shard.invoke_on(CONTROLLER_SHARD, call).await;
    let responses = outcomes
        .into_iter()
        .map(|(name, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|(partition, outcome)| {
                    let response = ReassignablePartitionResponse::default().with_partition_index(partition);
                    match outcome {
                        Ok(()) => response,
                        Err((error, message)) => {
                            response.with_error_code(error.code()).with_error_message(Some(str_bytes(&message)))
                        }
                    }
                })
                .collect();
            ReassignableTopicResponse::default().with_name(topic_name(&name)).with_partitions(partitions)
        })
        .collect();
    AlterPartitionReassignmentsResponse::default().with_allow_replication_factor_change(allow).with_responses(responses)
}
