//! `--cores 2`: a topic's partitions live on both shards, and one Produce and one Fetch
//! request that span both shards land and read back in order; requests whose partitions
//! interleave owners, with unknown and duplicated entries among them, are answered entry by
//! entry in request order.

mod common;

use std::collections::BTreeSet;

use bytes::Bytes;
use common::{Broker, Raw, batch, decode};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

const PARTITIONS: i32 = 4;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn create_spread(raw: &mut Raw) {
    let create = CreateTopicsRequest::default()
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(name("spread"))
                .with_num_partitions(PARTITIONS)
                .with_replication_factor(1),
        ])
        .with_timeout_ms(10_000);
    let created = raw.send(&create, 7);
    assert_eq!(created.topics[0].error_code, 0);
}

#[test]
fn one_request_spans_both_shards() {
    let broker = Broker::start(2, &[]);
    let mut raw = Raw::connect(broker.addr());
    create_spread(&mut raw);

    let metadata = common::metadata_image(broker.data_dir());
    let topic = metadata["topics"].as_array().unwrap().iter().find(|t| t["name"] == "spread").unwrap();
    let shards: BTreeSet<u64> =
        topic["partitions"].as_array().unwrap().iter().map(|p| p["shard"].as_u64().unwrap()).collect();
    assert_eq!(shards, BTreeSet::from([0, 1]), "placement: {topic}");

    // Three rounds, each one Produce request carrying a batch for every partition.
    for round in 0..3 {
        let partition_data = (0..PARTITIONS)
            .map(|p| {
                let values: Vec<Vec<u8>> = (0..5).map(|i| format!("p{p}-r{round}-{i}").into_bytes()).collect();
                let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
                PartitionProduceData::default().with_index(p).with_records(Some(batch(&refs)))
            })
            .collect();
        let produce = ProduceRequest::default().with_acks(-1).with_timeout_ms(10_000).with_topic_data(vec![
            TopicProduceData::default().with_name(name("spread")).with_partition_data(partition_data),
        ]);
        let response = raw.send(&produce, 9);
        let partitions = &response.responses[0].partition_responses;
        assert_eq!(partitions.len(), PARTITIONS as usize);
        for p in partitions {
            assert_eq!(p.error_code, 0, "partition {}", p.index);
            assert_eq!(p.base_offset, round * 5, "partition {}", p.index);
        }
    }

    // One Fetch request for all partitions.
    let fetch = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(500)
        .with_min_bytes(1)
        .with_max_bytes(10 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![
            FetchTopic::default().with_topic(name("spread")).with_partitions(
                (0..PARTITIONS)
                    .map(|p| {
                        FetchPartition::default()
                            .with_partition(p)
                            .with_fetch_offset(0)
                            .with_partition_max_bytes(1 << 20)
                    })
                    .collect(),
            ),
        ]);
    let response = raw.send(&fetch, 11);
    let partitions = &response.responses[0].partitions;
    assert_eq!(partitions.len(), PARTITIONS as usize);
    for p in partitions {
        assert_eq!(p.error_code, 0);
        assert_eq!(p.high_watermark, 15);
        let records = decode(p.records.as_ref().unwrap_or(&Bytes::new()));
        let expected: Vec<(i64, Vec<u8>)> = (0..3)
            .flat_map(|round| {
                (0..5).map(move |i| (round * 5 + i, format!("p{}-r{round}-{i}", p.partition_index).into_bytes()))
            })
            .collect();
        assert_eq!(records, expected, "partition {}", p.partition_index);
    }
}

#[test]
fn answers_follow_the_request_order_across_shards() {
    let broker = Broker::start(2, &[]);
    let mut raw = Raw::connect(broker.addr());
    create_spread(&mut raw);
    // Partitions interleaving both shards, an unknown one (9) in the middle, and partition 1
    // twice (every entry of a duplicated partition is refused).
    let order = [3, 0, 9, 2, 1, 1];
    let expected = |p: i32, ok: i16| match p {
        9 => 3,  // UNKNOWN_TOPIC_OR_PARTITION
        1 => 42, // INVALID_REQUEST
        _ => ok,
    };

    // Partition p gets p + 1 records.
    let partition_data = order
        .iter()
        .map(|&p| {
            let values: Vec<Vec<u8>> = (0..=p).map(|i| format!("p{p}-{i}").into_bytes()).collect();
            let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
            PartitionProduceData::default().with_index(p).with_records(Some(batch(&refs)))
        })
        .collect();
    let produce = ProduceRequest::default().with_acks(-1).with_timeout_ms(10_000).with_topic_data(vec![
        TopicProduceData::default().with_name(name("spread")).with_partition_data(partition_data),
    ]);
    let produced = raw.send(&produce, 9);
    let answers: Vec<(i32, i16)> =
        produced.responses[0].partition_responses.iter().map(|p| (p.index, p.error_code)).collect();
    assert_eq!(answers, order.iter().map(|&p| (p, expected(p, 0))).collect::<Vec<_>>());

    let list = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![
        ListOffsetsTopic::default().with_name(name("spread")).with_partitions(
            order.iter().map(|&p| ListOffsetsPartition::default().with_partition_index(p).with_timestamp(-1)).collect(),
        ),
    ]);
    let listed = raw.send(&list, 7);
    let answers: Vec<(i32, i16, i64)> =
        listed.topics[0].partitions.iter().map(|p| (p.partition_index, p.error_code, p.offset)).collect();
    let wanted: Vec<(i32, i16, i64)> = order
        .iter()
        .map(|&p| match expected(p, 0) {
            0 => (p, 0, i64::from(p) + 1),
            code => (p, code, -1),
        })
        .collect();
    assert_eq!(answers, wanted);

    let delete = DeleteRecordsRequest::default().with_timeout_ms(10_000).with_topics(vec![
        DeleteRecordsTopic::default().with_name(name("spread")).with_partitions(
            order.iter().map(|&p| DeleteRecordsPartition::default().with_partition_index(p).with_offset(-1)).collect(),
        ),
    ]);
    let deleted = raw.send(&delete, 2);
    let answers: Vec<(i32, i16, i64)> =
        deleted.topics[0].partitions.iter().map(|p| (p.partition_index, p.error_code, p.low_watermark)).collect();
    assert_eq!(answers, wanted);
}
