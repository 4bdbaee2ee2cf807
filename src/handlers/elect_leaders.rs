//! ElectLeaders (API 43): preferred or unclean leader elections, decided and written by the
//! controller shard (`shard::controller::elect_leaders`); answered once every shard has the
//! new leaders.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse};

use super::{str_bytes, topic_name};
use crate::cluster::election::Election;
use crate::shard::router::ElectLeaders;
use crate::shard::{CONTROLLER_SHARD, Shard};

pub async fn handle(shard: &Rc<Shard>, request: ElectLeadersRequest) -> ElectLeadersResponse {
    // Kafka's ElectionType: 0 preferred (the only one before v1), 1 unclean.
    let election = match request.election_type {
        0 => Election::Preferred,
        1 => Election::Unclean,
        _ => return ElectLeadersResponse::default().with_error_code(ResponseError::InvalidRequest.code()),
    };
    let topics = request
        .topic_partitions
        .map(|topics| topics.into_iter().map(|t| (t.topic.0.to_string(), t.partitions)).collect());
    let results = shard.invoke_on(CONTROLLER_SHARD, ElectLeaders { election, topics }).await;
    let results = results
        .into_iter()
        .map(|(topic, outcomes)| {
            let partitions = outcomes
                .into_iter()
                .map(|(partition, outcome)| {
                    let result = PartitionResult::default().with_partition_id(partition);
                    match outcome {
                        Ok(()) => result,
                        Err((error, message)) => {
                            result.with_error_code(error.code()).with_error_message(Some(str_bytes(&message)))
                        }
                    }
                })
                .collect();
            ReplicaElectionResult::default().with_topic(topic_name(&topic)).with_partition_result(partitions)
        })
        .collect();
    ElectLeadersResponse::default().with_replica_election_results(results)
}
