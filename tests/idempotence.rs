//! Idempotent producers: a retried batch is written once, also across `kill -9` and restarts
//! (producer state is snapshotted and rebuilt from the log); idle producers expire; a real
//! librdkafka idempotent producer loses nothing and duplicates nothing while the broker is
//! killed and restarted under it; InitProducerId never bumps an id it is handed.

mod common;

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::jepsen::{self, Workload};
use common::{Broker, Raw};
use kafka_protocol::messages::{InitProducerIdRequest, ProducerId};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions};

/// One v2 batch of `count` records from producer `id` at `epoch`, sequences from `sequence`,
/// stamped now (older records could fall to time retention).
fn producer_batch(id: i64, epoch: i16, sequence: i32, count: usize) -> Bytes {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let records: Vec<Record> = (0..count)
        .map(|i| {
            let mut record = sluice::protocol::records::plain_record(
                i,
                now,
                None,
                Some(Bytes::from(format!("{id}-{}", sequence + i as i32))),
            );
            record.producer_id = id;
            record.producer_epoch = epoch;
            record.sequence = sequence + i as i32;
            record
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions { version: 2, compression: Compression::None };
    RecordBatchEncoder::encode(&mut buf, &records, &options).expect("encodes");
    buf.freeze()
}

/// InitProducerId v4: (error code, producer id, epoch).
fn init_producer_id(raw: &mut Raw, id: i64, epoch: i16) -> (i16, i64, i16) {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(id))
        .with_producer_epoch(epoch);
    let response = raw.send(&request, 4);
    (response.error_code, response.producer_id.0, response.producer_epoch)
}

#[test]
fn retries_are_recognised_after_kill_9_and_clean_restarts() {
    let mut broker = Broker::start(1, &[]);
    let mut raw = Raw::connect(broker.addr());
    // Small segments: the log rolls, so snapshots are written and the state is rebuilt from
    // a snapshot plus the log after it.
    assert_eq!(raw.create_topic("retried", 1, &[("segment.bytes", "1024")]), 0);
    let (error, id, epoch) = init_producer_id(&mut raw, -1, -1);
    assert_eq!((error, epoch), (0, 0));
    let mut sequence = 0;
    let mut offsets = Vec::new();
    for _ in 0..40 {
        let (error, base) = raw.produce("retried", 0, producer_batch(id, epoch, sequence, 3), -1);
        assert_eq!(error, 0);
        offsets.push((sequence, base));
        sequence += 3;
    }
    drop(raw);
    for clean in [false, true, false] {
        if clean {
            broker.terminate();
        } else {
            broker.kill9();
        }
        broker.restart();
        let mut raw = Raw::connect(broker.addr());
        // Each of the producer's last five batches is answered with its original offset and
        // not written again.
        for &(first, base) in &offsets[offsets.len() - 5..] {
            assert_eq!(raw.produce("retried", 0, producer_batch(id, epoch, first, 3), -1), (0, base), "clean {clean}");
        }
        // An older one, or one that skips ahead, is out of order; the next one goes on.
        assert_eq!(
            raw.produce("retried", 0, producer_batch(id, epoch, 0, 3), -1).0,
            45,
            "OUT_OF_ORDER_SEQUENCE_NUMBER"
        );
        let ahead = producer_batch(id, epoch, sequence + 3, 3);
        assert_eq!(raw.produce("retried", 0, ahead, -1).0, 45, "OUT_OF_ORDER_SEQUENCE_NUMBER");
        let (error, base) = raw.produce("retried", 0, producer_batch(id, epoch, sequence, 3), -1);
        assert_eq!((error, base), (0, i64::from(sequence)));
        offsets.push((sequence, base));
        sequence += 3;
        assert_eq!(raw.fetch_all("retried", 0).len(), sequence as usize, "nothing written twice");
    }
}

#[test]
fn idle_producers_expire() {
    let settings = ["--set", "producer.id.expiration.ms=300", "--set", "producer.id.expiration.check.interval.ms=50"];
    let broker = Broker::start(1, &settings);
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(raw.create_topic("idle", 1, &[]), 0);
    let (_, id, epoch) = init_producer_id(&mut raw, -1, -1);
    assert_eq!(raw.produce("idle", 0, producer_batch(id, epoch, 0, 2), -1), (0, 0));
    // The retry is recognised while the producer is remembered; once it expired the same
    // batch is taken for a new producer's and written (Kafka's behaviour too).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (error, base) = raw.produce("idle", 0, producer_batch(id, epoch, 0, 2), -1);
        assert_eq!(error, 0);
        if base == 2 {
            break;
        }
        assert_eq!(base, 0);
        assert!(Instant::now() < deadline, "the idle producer was never forgotten");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn init_producer_id_never_bumps_a_given_id() {
    let broker = Broker::start(1, &[]);
    let mut raw = Raw::connect(broker.addr());
    let (error, first, epoch) = init_producer_id(&mut raw, -1, -1);
    assert_eq!((error, epoch), (0, 0));
    // Asking to bump an id (ours or anyone's) gets a fresh id, as Kafka answers idempotent
    // producers: nobody can fence another producer's id.
    for (id, epoch) in [(first, 0), (first + 1, 7), (123_456, 0)] {
        let (error, fresh, fresh_epoch) = init_producer_id(&mut raw, id, epoch);
        assert_eq!(error, 0);
        assert!(fresh != id && fresh != first, "asked for {id}/{epoch}, got {fresh}");
        assert_eq!(fresh_epoch, 0);
    }
    for (id, epoch) in [(first, -1), (-1, 3)] {
        assert_eq!(init_producer_id(&mut raw, id, epoch).0, 42, "INVALID_REQUEST for {id}/{epoch}");
    }
}

/// The sum of the partitions' high watermarks.
fn records_in(raw: &mut Raw, topic: &str, partitions: i32) -> i64 {
    (0..partitions).map(|p| raw.fetch(topic, p, 0, 0).1).sum()
}

/// librdkafka's idempotent acks=all producer at a steady rate, and a consumer following the
/// topic, while the broker is killed with SIGKILL and restarted `cycles` times; then the
/// Jepsen-style checker finds every acknowledged value in the log exactly once, each
/// producer's values in order within their partition, and no offset that returned two values.
fn kill_9_under_an_idempotent_producer(topic_configs: &[(&str, &str)], cycles: usize) {
    const PARTITIONS: i32 = 3;
    let mut broker = Broker::start(2, &[]);
    let mut raw = Raw::connect(broker.addr());
    let mut configs = vec![("segment.bytes", "65536")];
    configs.extend_from_slice(topic_configs);
    assert_eq!(raw.create_topic("steady", PARTITIONS, &configs), 0);
    drop(raw);
    let mut workload = Workload::start(broker.addr(), "steady");
    workload.produce("p", 2000);

    let mut written = 0;
    for cycle in 0..=cycles {
        // Let the producer get well going (and retry what the last kill cut off) first.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let now = records_in(&mut Raw::connect(broker.addr()), "steady", PARTITIONS);
            if now >= written + 1500 {
                written = now;
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no progress in cycle {cycle}; broker stderr:\n{}",
                broker.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        if cycle < cycles {
            broker.kill9();
            broker.restart();
        }
    }
    let check = workload.finish(|| format!("broker stderr:\n{}", broker.stderr_text()));
    jepsen::assert_clean(&check, written as u64);
    // Every value the producer made was acknowledged in the end (it retries across restarts).
    assert_eq!(check["acked"], check["produced"], "{check:#}");
}

/// Waits until the partitions of `topic` hold `records` records, up to a minute.
fn wait_for_records(broker: &Broker, topic: &str, partitions: i32, records: i64) {
    common::wait_until(Duration::from_secs(60), &format!("{topic} holds {records} records"), || {
        records_in(&mut Raw::connect(broker.addr()), topic, partitions) >= records
    });
}

/// The broker frozen (SIGSTOP) three times, each for longer than the idempotent producer's
/// request timeout, its sockets open: the producer gives up on the requests in flight and
/// sends them again on a new connection; resumed, the broker reads the originals and the
/// retries, in either order, and the checker finds each acknowledged value written once.
#[test]
fn a_broker_paused_past_the_request_timeout_writes_each_retried_batch_once() {
    const PARTITIONS: i32 = 3;
    let _one_at_a_time = common::serial();
    let broker = Broker::start(2, &[]);
    assert_eq!(Raw::connect(broker.addr()).create_topic("paused", PARTITIONS, &[]), 0);
    let mut workload = Workload::start(broker.addr(), "paused");
    // librdkafka times requests in flight out after socket.timeout.ms (request.timeout.ms is
    // the broker's acks wait).
    workload.produce_with("p", 1000, &[("socket.timeout.ms", "1000")]);
    let mut written = 0;
    for _ in 0..3 {
        written += 1000;
        wait_for_records(&broker, "paused", PARTITIONS, written);
        broker.pause();
        // The fault itself, not a wait for anything: frozen past the request timeout.
        std::thread::sleep(Duration::from_millis(2500));
        broker.resume();
    }
    wait_for_records(&broker, "paused", PARTITIONS, written + 1000);
    let check = workload.finish(|| format!("broker stderr:\n{}", broker.stderr_text()));
    jepsen::assert_clean(&check, written as u64);
    assert_eq!(check["acked"], check["produced"], "{check:#}");
}

#[test]
fn kill_9_under_an_idempotent_producer_with_fsync_per_message() {
    let _one_at_a_time = common::serial();
    kill_9_under_an_idempotent_producer(&[("flush.messages", "1")], 6);
}

#[test]
fn kill_9_under_an_idempotent_producer_with_page_cache_writes() {
    let _one_at_a_time = common::serial();
    kill_9_under_an_idempotent_producer(&[], 6);
}
