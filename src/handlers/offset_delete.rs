//! OffsetDelete: removes a group's committed offsets for some partitions, unless the group's
//! members still subscribe to those topics.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use crate::group::coordinator::DeleteOffsets;
use crate::group::route;
use crate::shard::Shard;

pub async fn handle(shard: &Rc<Shard>, request: OffsetDeleteRequest) -> OffsetDeleteResponse {
    if request.group_id.0.is_empty() {
        return OffsetDeleteResponse::default().with_error_code(ResponseError::InvalidGroupId.code());
    }
    let group_id = request.group_id.0.to_string();
    let topics =
        request.topics.iter().map(|t| (t.name.0.to_string(), t.partitions.iter().map(|p| p.partition_index).collect()));
    let delete = DeleteOffsets { group_id: group_id.clone(), topics: topics.collect() };
    let mut errors = match route(shard, &group_id, delete).await.and_then(|answer| answer) {
        Ok(errors) => errors.into_iter(),
        Err(error) => return OffsetDeleteResponse::default().with_error_code(error.code()),
    };
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let error = errors.next().expect("one error or none per partition");
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(error.map_or(0, |e| e.code()))
                })
                .collect();
            OffsetDeleteResponseTopic::default().with_name(t.name).with_partitions(partitions)
        })
        .collect();
    OffsetDeleteResponse::default().with_topics(topics)
}
