//! Request decode and response encode on the two hot APIs: a Produce request carrying a
//! 1 MiB batch (decoding must slice the batch, not copy it), and a Fetch response carrying
//! 16 partitions of records, encoded both ways the broker does: copying records into the
//! frame, and with zero-copy placeholders that leave file ranges in their place.

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, ProduceRequest, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use sluice::protocol::frame::encode_response_into;
use sluice::protocol::records::encode_batch;
use sluice::runtime::zero_copy::{FileSlice, PartsBuf, Placeholders};

const PRODUCE_VERSION: i16 = 9;
const FETCH_VERSION: i16 = 12;
const PARTITIONS: i32 = 16;

fn batch(records: usize, size: usize) -> Bytes {
    let records: Vec<_> = (0..records).map(|_| (None, Some(Bytes::from(vec![b'x'; size])))).collect();
    encode_batch(&records, 0)
}

fn topic() -> TopicName {
    TopicName(StrBytes::from_static_str("bench"))
}

fn produce_request(batch: Bytes) -> Bytes {
    let request = ProduceRequest::default().with_acks(1).with_timeout_ms(30_000).with_topic_data(vec![
        TopicProduceData::default()
            .with_name(topic())
            .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(batch))]),
    ]);
    let mut buf = BytesMut::new();
    request.encode(&mut buf, PRODUCE_VERSION).unwrap();
    buf.freeze()
}

fn fetch_request() -> Bytes {
    let partitions = (0..PARTITIONS)
        .map(|p| FetchPartition::default().with_partition(p).with_fetch_offset(1000).with_partition_max_bytes(1 << 20))
        .collect();
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(500)
        .with_min_bytes(1)
        .with_max_bytes(50 << 20)
        .with_topics(vec![FetchTopic::default().with_topic(topic()).with_partitions(partitions)]);
    let mut buf = BytesMut::new();
    request.encode(&mut buf, FETCH_VERSION).unwrap();
    buf.freeze()
}

fn fetch_response(mut records: impl FnMut() -> Bytes) -> FetchResponse {
    let partitions = (0..PARTITIONS)
        .map(|p| {
            PartitionData::default().with_partition_index(p).with_high_watermark(1 << 20).with_records(Some(records()))
        })
        .collect();
    FetchResponse::default()
        .with_responses(vec![FetchableTopicResponse::default().with_topic(topic()).with_partitions(partitions)])
}

fn protocol(c: &mut Criterion) {
    let mut group = c.benchmark_group("protocol");
    let big = batch(1000, 1024);
    let produce = produce_request(big.clone());
    group.throughput(Throughput::Bytes(produce.len() as u64));
    group.bench_function("decode Produce, 1 MiB batch", |b| {
        b.iter(|| ProduceRequest::decode(&mut produce.clone(), PRODUCE_VERSION).unwrap())
    });

    let fetch = fetch_request();
    group.throughput(Throughput::Elements(PARTITIONS as u64));
    group.bench_function("decode Fetch, 16 partitions", |b| {
        b.iter(|| FetchRequest::decode(&mut fetch.clone(), FETCH_VERSION).unwrap())
    });

    // 16 partitions × 64 KiB of records: what a consumer's fetch typically carries.
    let records = batch(64, 1000);
    let copied = fetch_response(|| records.clone());
    group.throughput(Throughput::Bytes(PARTITIONS as u64 * records.len() as u64));
    group.bench_function("encode Fetch response, copying 16 × 64 KiB", |b| {
        b.iter(|| {
            let mut buf = BytesMut::new();
            encode_response_into(&mut buf, 7, 1, &copied, FETCH_VERSION).unwrap();
            buf
        })
    });
    let segment = tempfile::tempfile().unwrap();
    group.bench_function("encode Fetch response, zero-copy 16 × 64 KiB", |b| {
        b.iter(|| {
            let mut placeholders = Placeholders::default();
            let mut holes = Vec::new();
            let response = fetch_response(|| {
                let placeholder = placeholders.make(records.len());
                let slice = FileSlice { file: segment.try_clone().unwrap(), position: 0, len: records.len() };
                holes.push((placeholder.clone(), slice));
                placeholder
            });
            let mut buf = PartsBuf::new(4096, holes);
            encode_response_into(&mut buf, 7, 1, &response, FETCH_VERSION).unwrap();
            buf.into_parts()
        })
    });
    group.finish();
}

criterion_group!(benches, protocol);
criterion_main!(benches);
