//! Protocol behaviour not tied to one client: pipelined requests answered in order, and
//! ListOffsets by earliest, latest, max timestamp and timestamp.

mod common;

use bytes::{Buf, BytesMut};
use common::{Broker, Raw, batch_at};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// A request frame body (header + request) with the given correlation id.
fn encode<R: kafka_protocol::protocol::Request>(request: &R, version: i16, correlation_id: i32) -> BytesMut {
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id);
    let mut body = BytesMut::new();
    header.encode(&mut body, R::header_version(version)).unwrap();
    request.encode(&mut body, version).unwrap();
    body
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let broker = Broker::start(2, &[]);
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(raw.create_topic("quiet", 2, &[]), 0);

    // A long-polling fetch on an empty topic first: the quick requests behind it must wait.
    let fetch = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(300)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default().with_topic(name("quiet")).with_partitions(vec![
            FetchPartition::default().with_partition(0).with_fetch_offset(0).with_partition_max_bytes(1 << 20),
        ])]);
    raw.send_frame(&encode(&fetch, 11, 100));
    raw.send_frame(&encode(&MetadataRequest::default().with_topics(None), 9, 101));
    raw.send_frame(&encode(&ApiVersionsRequest::default(), 2, 102));
    let started = std::time::Instant::now();
    for expected in [100, 101, 102] {
        let mut frame = raw.read_frame().expect("a response");
        assert_eq!(frame.get_i32(), expected, "responses out of order");
    }
    assert!(started.elapsed() >= std::time::Duration::from_millis(250), "the fetch did not long-poll");
}

#[test]
fn list_offsets_by_position_and_time() {
    let broker = Broker::start(1, &[]);
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(raw.create_topic("timed", 1, &[]), 0);
    // Offsets 0-1 at t=1000, 2-3 at t=2000, 4-5 at t=3000, 6-7 at t=1500.
    for (i, timestamp) in [1000, 2000, 3000, 1500].into_iter().enumerate() {
        assert_eq!(raw.produce("timed", 0, batch_at(&[b"a", b"b"], timestamp), 1), (0, 2 * i as i64));
    }
    let mut lookup = |timestamp: i64| {
        let request = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![
            ListOffsetsTopic::default().with_name(name("timed")).with_partitions(vec![
                ListOffsetsPartition::default().with_partition_index(0).with_timestamp(timestamp),
            ]),
        ]);
        let response = raw.send(&request, 7);
        let p = &response.topics[0].partitions[0];
        assert_eq!(p.error_code, 0);
        (p.offset, p.timestamp)
    };
    assert_eq!(lookup(-2).0, 0, "earliest");
    assert_eq!(lookup(-1).0, 8, "latest");
    assert_eq!(lookup(-3), (4, 3000), "the first record with the largest timestamp");
    assert_eq!(lookup(-4).0, 0, "earliest local");
    assert_eq!(lookup(0), (0, 1000));
    assert_eq!(lookup(1000), (0, 1000));
    assert_eq!(lookup(1001), (2, 2000));
    assert_eq!(lookup(2500), (4, 3000));
    assert_eq!(lookup(3001), (-1, -1), "nothing that late");
}

#[test]
fn acks_0_gets_no_answer_and_fetch_respects_max_bytes() {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    let broker = Broker::start(1, &[]);
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(raw.create_topic("fire", 2, &[]), 0);
    // acks=0: the broker writes but answers nothing; the next request's answer comes next.
    for partition in 0..2 {
        let produce = ProduceRequest::default().with_acks(0).with_timeout_ms(1000).with_topic_data(vec![
            TopicProduceData::default().with_name(name("fire")).with_partition_data(vec![
                PartitionProduceData::default().with_index(partition).with_records(Some(batch_at(&[&[b'x'; 600]], 0))),
            ]),
        ]);
        raw.send_frame(&encode(&produce, 9, 200 + partition));
    }
    raw.send_frame(&encode(&ApiVersionsRequest::default(), 2, 300));
    assert_eq!(raw.read_frame().expect("a response").get_i32(), 300);

    // Two partitions of ~700 bytes each: a 1000-byte response holds only the first (and
    // always at least one batch, even when the limit is smaller still).
    let fetch = |raw: &mut Raw, max_bytes: i32| {
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_max_bytes(max_bytes)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default().with_topic(name("fire")).with_partitions(
                (0..2).map(|p| FetchPartition::default().with_partition(p).with_partition_max_bytes(1 << 20)).collect(),
            )]);
        let response = raw.send(&request, 11);
        response.responses[0].partitions.iter().map(|p| p.records.as_ref().map_or(0, |r| r.len())).collect::<Vec<_>>()
    };
    let both = fetch(&mut raw, 1 << 20);
    assert!(both.iter().all(|&n| n > 600), "{both:?}");
    let limited = fetch(&mut raw, 1000);
    assert_eq!((limited[0] > 600, limited[1]), (true, 0), "{limited:?}");
    let tiny = fetch(&mut raw, 10);
    assert_eq!((tiny[0] > 600, tiny[1]), (true, 0), "{tiny:?}");
}

/// A fetch of partition 0 of `topic` from `offset` with the given limits (v11).
fn fetch_request(topic: &str, offset: i64, min_bytes: i32, max_wait_ms: i32, max_bytes: i32) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(min_bytes)
        .with_max_bytes(max_bytes)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default().with_topic(name(topic)).with_partitions(vec![
            FetchPartition::default().with_partition(0).with_fetch_offset(offset).with_partition_max_bytes(1 << 20),
        ])])
}

#[test]
fn fetch_waits_exactly_as_long_as_it_must() {
    use std::time::{Duration, Instant};
    let broker = Broker::start(2, &[]);
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(raw.create_topic("waits", 1, &[]), 0);

    // min_bytes 0: answered at once, even with nothing to return.
    let started = Instant::now();
    let response = raw.send(&fetch_request("waits", 0, 0, 20_000, 1 << 20), 11);
    assert_eq!(response.responses[0].partitions[0].error_code, 0);
    assert!(started.elapsed() < Duration::from_secs(10), "min_bytes=0 waited {:?}", started.elapsed());

    // An offset out of range is answered at once, not after max_wait_ms.
    let started = Instant::now();
    let response = raw.send(&fetch_request("waits", 5, 1, 20_000, 1 << 20), 11);
    assert_eq!(response.responses[0].partitions[0].error_code, 1, "OFFSET_OUT_OF_RANGE");
    assert!(started.elapsed() < Duration::from_secs(10), "out of range waited {:?}", started.elapsed());

    // Woken by a batch smaller than min_bytes, the fetch keeps waiting until max_wait_ms.
    let mut producer = Raw::connect(broker.addr());
    let started = Instant::now();
    raw.send_frame(&encode(&fetch_request("waits", 0, 100_000, 1500, 1 << 20), 11, 500));
    assert_eq!(producer.produce("waits", 0, batch_at(&[b"small"], 0), 1), (0, 0));
    let mut frame = raw.read_frame().expect("a response");
    assert_eq!(frame.get_i32(), 500);
    assert!(started.elapsed() >= Duration::from_millis(1400), "answered after {:?}", started.elapsed());

    // ... and answers once min_bytes has arrived, long before max_wait_ms.
    let started = Instant::now();
    raw.send_frame(&encode(&fetch_request("waits", 1, 1500, 20_000, 1 << 20), 11, 501));
    for i in 1..=2 {
        assert_eq!(producer.produce("waits", 0, batch_at(&[&[b'x'; 1000]], 0), 1), (0, i));
    }
    let mut frame = raw.read_frame().expect("a response");
    assert_eq!(frame.get_i32(), 501);
    assert!(started.elapsed() < Duration::from_secs(10), "min_bytes reached, yet waited {:?}", started.elapsed());
}

#[test]
fn fetch_responses_respect_max_bytes() {
    let broker = Broker::start(1, &[]);
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(raw.create_topic("sized", 1, &[]), 0);
    for i in 0..20 {
        assert_eq!(raw.produce("sized", 0, batch_at(&[&[b'x'; 1000]], 0), 1), (0, i));
    }
    let records = |raw: &mut Raw, max_bytes: i32| {
        let response = raw.send(&fetch_request("sized", 0, 1, 0, max_bytes), 11);
        common::decode(response.responses[0].partitions[0].records.as_ref().unwrap()).len()
    };
    // The partition allows 1 MiB, the response 5 KB: whole batches of about 1 KB within it.
    let within = records(&mut raw, 5000);
    assert!((1..5).contains(&within), "{within} batches in a 5000-byte response");
    // Only a first batch larger than the limit goes over it.
    assert_eq!(records(&mut raw, 10), 1);
    assert_eq!(records(&mut raw, 1 << 20), 20);
}
