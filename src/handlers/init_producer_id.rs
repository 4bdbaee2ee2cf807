//! InitProducerId: hands idempotent producers a producer id and epoch. Transactions are not
//! supported yet, so a transactional id gets an error.
//!
//! Ids come from a block the controller reserved for this shard, so the common case crosses
//! no core and no disk.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::shard::{CONTROLLER_SHARD, Shard, ShardRequest, ShardResponse};

/// Producer ids reserved per trip to the controller.
const PRODUCER_ID_BLOCK: i64 = 1000;

pub async fn handle(shard: &Rc<Shard>, request: InitProducerIdRequest) -> InitProducerIdResponse {
    let response = InitProducerIdResponse::default().with_producer_id(ProducerId(-1)).with_producer_epoch(-1);
    if request.transactional_id.is_some() {
        return response.with_error_code(ResponseError::UnsupportedVersion.code());
    }
    // KIP-360: a known producer asking again gets its epoch bumped, fencing its old epoch.
    if request.producer_id.0 >= 0 {
        return match request.producer_epoch.checked_add(1) {
            Some(epoch) if epoch >= 0 => response.with_producer_id(request.producer_id).with_producer_epoch(epoch),
            _ => response.with_error_code(ResponseError::InvalidProducerEpoch.code()),
        };
    }
    let (mut next, mut end) = shard.producer_ids.get();
    if next == end {
        let allocate = ShardRequest::AllocateProducerIds { count: PRODUCER_ID_BLOCK };
        let ShardResponse::ProducerIds(allocated) = shard.invoke_on(CONTROLLER_SHARD, allocate).await else {
            unreachable!("AllocateProducerIds answers with ProducerIds");
        };
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
