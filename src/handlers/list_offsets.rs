//! ListOffsets: earliest (-2, and -4 earliest local), latest (-1), the first record with the
//! largest timestamp (-3) or the first offset at or after a timestamp (found through the time
//! index), each answered by the partition's owner.

use std::collections::HashMap;
use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use crate::protocol::errors::partition_error_code;
use crate::shard::router::{ListOffsets, OffsetQuery};
use crate::shard::{Shard, ShardId, TopicPartition};

/// ListOffsets v4 added the leader epoch to the answer.
const LEADER_EPOCH_VERSION: i16 = 4;

/// Kafka's special timestamps: what a negative one asks for, if we serve it.
fn query(timestamp: i64) -> Option<OffsetQuery> {
    match timestamp {
        -1 => Some(OffsetQuery::Latest),
        // Without tiered storage the earliest local offset (-4) is the log start offset.
        -2 | -4 => Some(OffsetQuery::Earliest),
        -3 => Some(OffsetQuery::MaxTimestamp),
        t if t >= 0 => Some(OffsetQuery::AtTime(t)),
        _ => None,
    }
}

pub async fn handle(shard: &Rc<Shard>, request: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let image = shard.metadata();
    let mut outcomes: HashMap<TopicPartition, Result<(i64, i64), ResponseError>> = HashMap::new();
    let mut per_shard: HashMap<ShardId, Vec<(TopicPartition, OffsetQuery)>> = HashMap::new();
    let duplicated = super::duplicated(
        request.topics.iter().flat_map(|t| t.partitions.iter().map(|p| (t.name.0.as_str(), p.partition_index))),
    );
    for topic in &request.topics {
        for p in &topic.partitions {
            let tp = TopicPartition { topic: topic.name.0.to_string(), partition: p.partition_index };
            if duplicated.contains(&(tp.topic.as_str(), tp.partition)) {
                outcomes.insert(tp, Err(ResponseError::InvalidRequest));
                continue;
            }
            match (image.owner(&tp.topic, tp.partition), query(p.timestamp)) {
                (Some(owner), Some(query)) => per_shard.entry(owner).or_default().push((tp, query)),
                (Some(_), None) => {
                    outcomes.insert(tp, Err(ResponseError::UnsupportedVersion));
                }
                (None, _) => {
                    outcomes.insert(tp, Err(ResponseError::UnknownTopicOrPartition));
                }
            }
        }
    }
    let calls = per_shard.into_iter().map(|(owner, queries)| {
        let partitions: Vec<TopicPartition> = queries.iter().map(|(tp, _)| tp.clone()).collect();
        let call = shard.invoke_on(owner, ListOffsets { queries });
        async move {
            let results = call.await.into_iter().map(|r| r.map_err(|e| partition_error_code(&e)));
            partitions.into_iter().zip(results).collect::<Vec<_>>()
        }
    });
    for answers in futures::future::join_all(calls).await {
        outcomes.extend(answers);
    }

    let topics = request
        .topics
        .iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let tp = TopicPartition { topic: topic.name.0.to_string(), partition: p.partition_index };
                    let response = ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index);
                    // Each entry of a duplicated partition gets the same answer, so look up, don't take.
                    match *outcomes.get(&tp).expect("every partition has an outcome") {
                        Ok((offset, timestamp)) => response
                            .with_offset(offset)
                            .with_timestamp(timestamp)
                            .with_leader_epoch(match image.topic(&tp.topic) {
                                Some(t) if version >= LEADER_EPOCH_VERSION => {
                                    t.partitions.get(tp.partition as usize).map_or(-1, |p| p.leader_epoch)
                                }
                                _ => -1,
                            }),
                        Err(error) => response.with_error_code(error.code()).with_offset(-1).with_timestamp(-1),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default().with_name(topic.name.clone()).with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}
