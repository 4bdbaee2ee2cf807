//! FindCoordinator: a group's coordinator is the leader of its `__consumer_offsets` partition
//! (one key at a time from v0, a batch of keys from v4); COORDINATOR_NOT_AVAILABLE while that
//! partition has no leader. Transactions are not supported yet, so a transactional key gets
//! COORDINATOR_NOT_AVAILABLE.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::str_bytes;
use crate::cluster::BrokerRegistration;
use crate::group;
use crate::shard::Shard;

/// From v4 a request names a batch of keys.
const BATCH_VERSION: i16 = 4;
const GROUP_KEY_TYPE: i8 = 0;

pub fn handle(shard: &Rc<Shard>, request: FindCoordinatorRequest, version: i16) -> FindCoordinatorResponse {
    let image = shard.metadata();
    let answer = |key: &StrBytes| -> Result<&BrokerRegistration, (ResponseError, &'static str)> {
        match request.key_type {
            GROUP_KEY_TYPE if key.is_empty() => Err((ResponseError::InvalidGroupId, "empty group id")),
            GROUP_KEY_TYPE => {
                let tp = group::offsets_topic_partition(&image, key.as_str());
                let leader = image.leader(&tp.topic, tp.partition).and_then(|id| image.brokers.get(&id));
                leader
                    .filter(|b| !b.fenced)
                    .ok_or((ResponseError::CoordinatorNotAvailable, "the group's offsets partition has no leader"))
            }
            _ => Err((ResponseError::CoordinatorNotAvailable, "transactions are not supported yet")),
        }
    };
    if version >= BATCH_VERSION {
        let coordinators = request
            .coordinator_keys
            .iter()
            .map(|key| {
                let coordinator = Coordinator::default().with_key(key.clone());
                match answer(key) {
                    Ok(broker) => coordinator
                        .with_node_id(BrokerId(broker.node_id))
                        .with_host(str_bytes(&broker.host))
                        .with_port(broker.port),
                    Err((error, message)) => coordinator
                        .with_node_id(BrokerId(-1))
                        .with_host(str_bytes(""))
                        .with_port(-1)
                        .with_error_code(error.code())
                        .with_error_message(Some(str_bytes(message))),
                }
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    match answer(&request.key) {
        Ok(broker) => FindCoordinatorResponse::default()
            .with_node_id(BrokerId(broker.node_id))
            .with_host(str_bytes(&broker.host))
            .with_port(broker.port),
        Err((error, message)) => FindCoordinatorResponse::default()
            .with_error_code(error.code())
            .with_error_message(Some(str_bytes(message)))
            .with_node_id(BrokerId(-1))
            .with_host(str_bytes(""))
            .with_port(-1),
    }
}
