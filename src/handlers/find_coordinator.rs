//! FindCoordinator: consumer groups and transactions are not there yet, so every key gets
//! COORDINATOR_NOT_AVAILABLE, which clients treat as "try again later".

use kafka_protocol::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};

use super::str_bytes;

const NOT_YET: &str = "consumer groups and transactions are not supported yet";

pub fn handle(request: FindCoordinatorRequest, version: i16) -> FindCoordinatorResponse {
    let error = ResponseError::CoordinatorNotAvailable.code();
    if version >= 4 {
        let coordinators = request
            .coordinator_keys
            .into_iter()
            .map(|key| {
                Coordinator::default()
                    .with_key(key)
                    .with_node_id(BrokerId(-1))
                    .with_host(str_bytes(""))
                    .with_port(-1)
                    .with_error_code(error)
                    .with_error_message(Some(str_bytes(NOT_YET)))
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    FindCoordinatorResponse::default()
        .with_error_code(error)
        .with_error_message(Some(str_bytes(NOT_YET)))
        .with_node_id(BrokerId(-1))
        .with_host(str_bytes(""))
        .with_port(-1)
}
