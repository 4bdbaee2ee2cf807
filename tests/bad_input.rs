//! Bad input gets Kafka's error codes, or a closed connection where the protocol has no
//! answer; meanwhile a healthy client keeps working and nothing accepted is lost.

mod common;

use bytes::{BufMut, BytesMut};
use common::{Broker, Raw, batch, craft_batch, record_payload};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{ApiVersionsResponse, MetadataRequest, TopicName};
use kafka_protocol::protocol::{Decodable, StrBytes};
use sluice::storage::codec::Codec;

const CORRUPT_MESSAGE: i16 = 2;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const MESSAGE_TOO_LARGE: i16 = 10;
const UNSUPPORTED_VERSION: i16 = 35;
const UNSUPPORTED_FOR_MESSAGE_FORMAT: i16 = 43;
const INVALID_TOPIC_EXCEPTION: i16 = 17;
const INVALID_GROUP_ID: i16 = 24;
const INVALID_REQUEST: i16 = 42;
const UNSUPPORTED_COMPRESSION_TYPE: i16 = 76;
const INVALID_RECORD: i16 = 87;

/// A broker with small limits, no auto-creation, a topic "good" and a healthy client that
/// has written a first record.
fn setup() -> (Broker, Raw, Vec<(i64, Vec<u8>)>) {
    let broker = Broker::start(
        2,
        &[
            "--set",
            "auto.create.topics.enable=false",
            "--set",
            "message.max.bytes=10000",
            "--set",
            "socket.request.max.bytes=1048576",
        ],
    );
    let mut healthy = Raw::connect(broker.addr());
    assert_eq!(healthy.create_topic("good", 2, &[]), 0);
    assert_eq!(healthy.produce("good", 0, batch(&[b"before"]), -1), (0, 0));
    (broker, healthy, vec![(0, b"before".to_vec())])
}

/// The healthy client still produces and reads everything back.
fn still_healthy(broker: &mut Broker, healthy: &mut Raw, accepted: &mut Vec<(i64, Vec<u8>)>) {
    assert!(broker.is_running(), "broker died:\n{}", broker.stderr_text());
    let value = format!("after-{}", accepted.len()).into_bytes();
    let (error, base) = healthy.produce("good", 0, batch(&[&value]), -1);
    assert_eq!(error, 0);
    accepted.push((base, value));
    assert_eq!(&healthy.fetch_all("good", 0), accepted);
}

fn header(api_key: i16, version: i16) -> BytesMut {
    let mut frame = BytesMut::new();
    frame.put_i16(api_key);
    frame.put_i16(version);
    frame.put_i32(42);
    frame.put_i16(-1); // null client id
    frame
}

/// The harness itself: a peer that stays silent is a hang, not a close, so that a broker that
/// hangs fails every close assertion below instead of passing it.
#[test]
fn a_silent_peer_is_not_a_closed_one() {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();

    let mut silent = Raw::connect(&addr);
    let _held = listener.accept().unwrap();
    silent.stream.set_read_timeout(Some(std::time::Duration::from_millis(200))).unwrap();
    let verdict = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| silent.is_closed_by_broker()));
    assert!(verdict.is_err(), "a silent peer was taken for a closed connection");

    let mut closed = Raw::connect(&addr);
    drop(listener.accept().unwrap());
    assert!(closed.is_closed_by_broker());

    let mut answering = Raw::connect(&addr);
    listener.accept().unwrap().0.write_all(b"x").unwrap();
    assert!(!answering.is_closed_by_broker());
}

#[test]
fn framing_errors_close_only_that_connection() {
    let (mut broker, mut healthy, mut accepted) = setup();

    let mut garbage = Raw::connect(broker.addr());
    garbage.send_bytes(b"\x00\x00\x00\x10this is not kafka");
    assert!(garbage.is_closed_by_broker(), "garbage");
    still_healthy(&mut broker, &mut healthy, &mut accepted);

    let mut negative = Raw::connect(broker.addr());
    negative.send_bytes(&(-5i32).to_be_bytes());
    assert!(negative.is_closed_by_broker(), "negative size");

    let mut oversized = Raw::connect(broker.addr());
    oversized.send_bytes(&(2 * 1048576i32).to_be_bytes());
    assert!(oversized.is_closed_by_broker(), "frame over socket.request.max.bytes");
    still_healthy(&mut broker, &mut healthy, &mut accepted);

    let mut truncated = Raw::connect(broker.addr());
    truncated.send_bytes(&100i32.to_be_bytes());
    truncated.send_bytes(&header(3, 12)[..6]);
    truncated.stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(truncated.is_closed_by_broker(), "truncated frame");

    let mut unknown_api = Raw::connect(broker.addr());
    unknown_api.send_frame(&header(999, 0));
    assert!(unknown_api.is_closed_by_broker(), "unknown API key");

    let mut old_produce = Raw::connect(broker.addr());
    old_produce.send_frame(&header(0, 1));
    assert!(old_produce.is_closed_by_broker(), "Produce v1 is not served");

    let mut malformed = Raw::connect(broker.addr());
    let mut frame = header(3, 1);
    frame.put_slice(b"\x7f\xff\xff\xff");
    malformed.send_frame(&frame);
    assert!(malformed.is_closed_by_broker(), "metadata body that does not decode");
    still_healthy(&mut broker, &mut healthy, &mut accepted);
}

#[test]
fn api_versions_of_an_unknown_version_answers_in_v0() {
    let (mut broker, mut healthy, mut accepted) = setup();
    let mut client = Raw::connect(broker.addr());
    client.send_frame(&header(18, 99));
    let mut response = client.read_frame().expect("an answer, not a closed connection");
    assert_eq!(i32::from_be_bytes(response[..4].try_into().unwrap()), 42);
    let _ = bytes::Buf::get_i32(&mut response);
    let body = ApiVersionsResponse::decode(&mut response, 0).unwrap();
    assert_eq!(body.error_code, UNSUPPORTED_VERSION);
    assert!(body.api_keys.iter().any(|k| k.api_key == 0), "Produce advertised");
    still_healthy(&mut broker, &mut healthy, &mut accepted);
}

#[test]
fn bad_batches_get_error_codes_and_write_nothing() {
    let (mut broker, mut healthy, mut accepted) = setup();
    let mut client = Raw::connect(broker.addr());

    let mut corrupt = BytesMut::from(&batch(&[b"x", b"y"])[..]);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x55;
    assert_eq!(client.produce("good", 0, corrupt.freeze(), -1).0, CORRUPT_MESSAGE);

    let mut old_magic = BytesMut::from(&batch(&[b"x"])[..]);
    old_magic[16] = 1;
    let error = client.produce("good", 0, old_magic.freeze(), -1).0;
    assert!([UNSUPPORTED_FOR_MESSAGE_FORMAT, CORRUPT_MESSAGE].contains(&error), "old magic: {error}");

    let big = vec![b'z'; 20_000];
    assert_eq!(client.produce("good", 0, batch(&[&big]), -1).0, MESSAGE_TOO_LARGE);

    let mut torn = BytesMut::from(&batch(&[b"x"])[..]);
    torn.truncate(torn.len() - 3);
    assert_eq!(client.produce("good", 0, torn.freeze(), -1).0, CORRUPT_MESSAGE);

    // Nothing of the refused batches reached the log.
    still_healthy(&mut broker, &mut healthy, &mut accepted);
    assert_eq!(accepted.len(), 2);
}

/// Batches whose CRC is right but whose header lies about the records inside, or whose
/// compression is unknown, corrupt or a bomb: each is refused with Kafka's error, nothing is
/// stored, and the partition's consumers read on past them.
#[test]
fn batches_that_lie_about_their_records_are_refused() {
    let (mut broker, mut healthy, mut accepted) = setup();
    let mut client = Raw::connect(broker.addr());
    let mut produce = |batch: bytes::Bytes| client.produce("good", 0, batch, -1).0;

    assert_eq!(produce(craft_batch(0, 1_000_000, 1, &record_payload(&[0]))), INVALID_RECORD, "delta of 1,000,000");
    assert_eq!(produce(craft_batch(0, 0, 1, &record_payload(&[0, 1, 2]))), INVALID_RECORD, "one claimed, three held");
    assert_eq!(produce(craft_batch(0, 2, 3, &record_payload(&[0, 1]))), INVALID_RECORD, "three claimed, two held");
    assert_eq!(produce(craft_batch(0, 1, 2, &record_payload(&[0, 5]))), INVALID_RECORD, "offset deltas 0, 5");
    let mut lying_length = record_payload(&[0]);
    lying_length[0] += 2;
    assert_eq!(produce(craft_batch(0, 0, 1, &lying_length)), INVALID_RECORD, "record length past the batch");
    for codec in 5..=7 {
        let error = produce(craft_batch(codec, 0, 1, &record_payload(&[0])));
        assert_eq!(error, UNSUPPORTED_COMPRESSION_TYPE, "codec {codec}");
    }
    for codec in [Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd] {
        let id = codec as i16;
        let three = codec.compress(&record_payload(&[0, 1, 2])).unwrap();
        assert_eq!(produce(craft_batch(id, 0, 1, &three)), INVALID_RECORD, "{codec:?}: one claimed, three held");
        assert_eq!(produce(craft_batch(id, 2, 3, &[0x5A; 64])), CORRUPT_MESSAGE, "{codec:?}: garbage payload");
    }
    // Damage that decodes to garbage records first is still the codec's to report (gzip's CRC).
    let mut damaged = Codec::Gzip.compress(&record_payload(&[0, 1, 2])).unwrap();
    let middle = damaged.len() / 2;
    damaged[middle..].fill(0xA5);
    assert_eq!(produce(craft_batch(Codec::Gzip as i16, 2, 3, &damaged)), CORRUPT_MESSAGE, "damaged gzip");
    // 1 MiB of zeros in one record: a few hundred bytes of zstd, past 32 x message.max.bytes.
    let mut zeros = Vec::new();
    sluice::storage::records::write_record(&mut zeros, 0, 0, None, Some(&vec![0; 1 << 20]), &[0]);
    let bomb = craft_batch(Codec::Zstd as i16, 0, 1, &Codec::Zstd.compress(&zeros).unwrap());
    assert!(bomb.len() < 10_000);
    assert_eq!(produce(bomb), MESSAGE_TOO_LARGE, "decompression bomb");

    // A well-formed compressed batch still goes through, and reads back.
    let good = craft_batch(Codec::Lz4 as i16, 2, 3, &Codec::Lz4.compress(&record_payload(&[0, 1, 2])).unwrap());
    let (error, base) = healthy.produce("good", 0, good, -1);
    assert_eq!(error, 0);
    accepted.extend((0..3).map(|i| (base + i, format!("v{i}").into_bytes())));
    still_healthy(&mut broker, &mut healthy, &mut accepted);
}

#[test]
fn unknown_topics_and_partitions() {
    let (mut broker, mut healthy, mut accepted) = setup();
    let mut client = Raw::connect(broker.addr());
    assert_eq!(client.produce("missing", 0, batch(&[b"x"]), -1).0, UNKNOWN_TOPIC_OR_PARTITION);
    assert_eq!(client.produce("good", 7, batch(&[b"x"]), -1).0, UNKNOWN_TOPIC_OR_PARTITION);
    assert_eq!(client.fetch("good", 7, 0, 0).0, UNKNOWN_TOPIC_OR_PARTITION);
    assert_eq!(client.fetch("missing", 0, 0, 0).0, UNKNOWN_TOPIC_OR_PARTITION);

    let request = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_static_str("missing")))),
        ]))
        .with_allow_auto_topic_creation(true);
    let response = client.send(&request, 12);
    assert_eq!(response.topics[0].error_code, UNKNOWN_TOPIC_OR_PARTITION, "auto-creation is off");
    // A fetch past the end is out of range; the log is untouched.
    assert_eq!(client.fetch("good", 0, 1000, 0).0, 1, "OFFSET_OUT_OF_RANGE");
    still_healthy(&mut broker, &mut healthy, &mut accepted);
}

#[test]
fn duplicated_partitions_and_oversized_ids_get_error_codes() {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{BrokerId, GroupId, ListOffsetsRequest, OffsetCommitRequest, ProduceRequest};

    let (mut broker, mut healthy, mut accepted) = setup();
    let mut client = Raw::connect(broker.addr());
    let good = || TopicName(StrBytes::from_static_str("good"));

    // Partition 0 twice (once in a second entry for the same topic): both entries refused,
    // partition 1 written.
    let data = |p: i32| PartitionProduceData::default().with_index(p).with_records(Some(batch(&[b"dup"])));
    let produce = ProduceRequest::default().with_acks(-1).with_timeout_ms(10_000).with_topic_data(vec![
        TopicProduceData::default().with_name(good()).with_partition_data(vec![data(0), data(1)]),
        TopicProduceData::default().with_name(good()).with_partition_data(vec![data(0)]),
    ]);
    let response = client.send(&produce, 9);
    let errors: Vec<(i32, i16)> =
        response.responses.iter().flat_map(|t| t.partition_responses.iter().map(|p| (p.index, p.error_code))).collect();
    assert_eq!(errors, [(0, INVALID_REQUEST), (1, 0), (0, INVALID_REQUEST)]);

    let query = |p: i32| ListOffsetsPartition::default().with_partition_index(p).with_timestamp(-1);
    let list = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![
        ListOffsetsTopic::default().with_name(good()).with_partitions(vec![query(1), query(1), query(0)]),
    ]);
    let response = client.send(&list, 7);
    let answers: Vec<(i16, i64)> = response.topics[0].partitions.iter().map(|p| (p.error_code, p.offset)).collect();
    assert_eq!(answers, [(INVALID_REQUEST, -1), (INVALID_REQUEST, -1), (0, 1)]);

    // v8 carries the group id as a compact string: longer than any record key can hold.
    let commit = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_string("g".repeat(40_000))))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default().with_name(good()).with_partitions(vec![
            OffsetCommitRequestPartition::default().with_partition_index(0).with_committed_offset(1),
        ])]);
    assert_eq!(client.send(&commit, 8).topics[0].partitions[0].error_code, INVALID_GROUP_ID);

    // Nothing of the duplicated partition reached the log.
    still_healthy(&mut broker, &mut healthy, &mut accepted);
    assert_eq!(accepted, [(0, b"before".to_vec()), (1, b"after-1".to_vec())]);
}

#[test]
fn illegal_topic_names_are_invalid_topics() {
    let (mut broker, mut healthy, mut accepted) = setup();
    let mut client = Raw::connect(broker.addr());
    let too_long = "t".repeat(250);
    let illegal = ["bad name", "..", "a/b", "ümlaut", too_long.as_str()];
    for name in illegal {
        assert_eq!(client.create_topic(name, 1, &[]), INVALID_TOPIC_EXCEPTION, "CreateTopics {name:?}");
    }
    assert_eq!(client.create_topic(&"t".repeat(249), 1, &[]), 0, "249 characters are allowed");

    let metadata = |client: &mut Raw, names: &[&str]| {
        let topics = names
            .iter()
            .map(|n| MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_string(n.to_string())))))
            .collect();
        let request = MetadataRequest::default().with_topics(Some(topics)).with_allow_auto_topic_creation(true);
        client.send(&request, 12).topics.iter().map(|t| t.error_code).collect::<Vec<_>>()
    };
    let mut expected = vec![INVALID_TOPIC_EXCEPTION; illegal.len()];
    expected.push(UNKNOWN_TOPIC_OR_PARTITION);
    assert_eq!(metadata(&mut client, &[&illegal[..], &["missing"]].concat()), expected, "auto-creation off");
    still_healthy(&mut broker, &mut healthy, &mut accepted);

    // With auto-creation on, legal names are created and illegal ones still refused.
    let auto = Broker::start(1, &[]);
    let mut client = Raw::connect(auto.addr());
    expected[illegal.len()] = 0;
    assert_eq!(metadata(&mut client, &[&illegal[..], &["fresh"]].concat()), expected, "auto-creation on");
}
