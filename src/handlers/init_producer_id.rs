//! InitProducerId: hands idempotent producers a producer id and epoch. Transactions are not
//! supported yet, so a transactional id gets an error.
//!
//! As in Kafka, an idempotent producer gets a new id with epoch 0 every time, also when it
//! names its current id and epoch to have the epoch bumped (KIP-360, after a sequence error):
//! a fresh id starts its sequences afresh just the same, and no client can bump, and so
//! fence, an id that is not its own.
//!
//! Ids come from a block the controller reserved for this shard, so the common case crosses
//! no core and no disk.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::shard::router::AllocateProducerIds;
use crate::shard::{CONTROLLER_SHARD, Shard};

/// Producer ids reserved per trip to the controller.
const PRODUCER_ID_BLOCK: i64 = 1000;

pub async fn handle(shard: &Rc<Shard>, request: InitProducerIdRequest) -> InitProducerIdResponse {
    let response = InitProducerIdResponse::default().with_producer_id(ProducerId(-1)).with_producer_epoch(-1);
    if request.transactional_id.is_some() {
        return response.with_error_code(ResponseError::UnsupportedVersion.code());
    }
    // An id and epoch come together or not at all (-1 for none), as Kafka checks.
    if (request.producer_id.0 == -1) != (request.producer_epoch == -1) {
        return response.with_error_code(ResponseError::InvalidRequest.code());
    }
    let (mut next, mut end) = shard.producer_ids.get();
    if next == end {
        let allocate = AllocateProducerIds { count: PRODUCER_ID_BLOCK };
        let allocated = shard.invoke_on(CONTROLLER_SHARD, allocate).await;
        let first = match allocated {
            Ok(first) => first,
            Err(error) => return response.with_error_code(error.code()),
        };
        // Another request on this shard may have refilled the block while this one waited.
        (next, end) = shard.producer_ids.get();
        if next == end {
            (next, end) = (first, first + PRODUCER_ID_BLOCK);
        }
    }
    shard.producer_ids.set((next + 1, end));
    response.with_producer_id(ProducerId(next)).with_producer_epoch(0)
}
