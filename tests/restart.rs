//! Durability: a clean restart keeps topics and records; a `kill -9` in the middle of a stream
//! of acks=-1 produces to a topic that fsyncs before answering loses no acknowledged record,
//! leaves offsets contiguous and never serves a partial batch; files damaged while the broker
//! was down are recovered where a crash could have caused the damage, and otherwise leave
//! their partition offline while the rest serves.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Broker, Raw, batch};

#[test]
fn clean_restart_keeps_topics_and_records() {
    let mut broker = Broker::start(2, &[]);
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(raw.create_topic("kept", 3, &[("segment.bytes", "4096")]), 0);
    let mut expected = vec![Vec::new(); 3];
    for i in 0..300 {
        let partition = i % 3;
        let value = format!("record-{i}").into_bytes();
        let (error, base) = raw.produce("kept", partition as i32, batch(&[&value]), 1);
        assert_eq!(error, 0);
        assert_eq!(base, expected[partition].len() as i64);
        expected[partition].push((base, value));
    }
    drop(raw);
    broker.terminate();
    assert!(broker.data_dir().join(".clean-shutdown").exists());
    broker.restart();

    let mut raw = Raw::connect(broker.addr());
    for (partition, records) in expected.iter().enumerate() {
        assert_eq!(&raw.fetch_all("kept", partition as i32), records, "partition {partition}");
    }
    // Appends continue after the last offset, and the topic still exists with its partitions.
    assert_eq!(raw.produce("kept", 0, batch(&[b"after"]), 1), (0, 100));
    assert_eq!(raw.create_topic("kept", 3, &[]), 36, "TOPIC_ALREADY_EXISTS");
}

/// An acknowledged produce: its base offset and the values it carried.
type Acked = (i64, Vec<Vec<u8>>);

#[test]
fn kill_9_loses_no_acknowledged_record() {
    let mut broker = Broker::start(1, &[]);
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(raw.create_topic("durable", 1, &[("flush.messages", "1"), ("segment.bytes", "65536")]), 0);
    drop(raw);

    let acked: Arc<Mutex<Vec<Acked>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let acked = acked.clone();
        let stop = stop.clone();
        let addr = broker.addr().to_string();
        std::thread::spawn(move || {
            let mut raw = Raw::connect(&addr);
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let values: Vec<Vec<u8>> =
                    (0..1 + i % 7).map(|j| format!("batch-{i}-record-{j}").into_bytes()).collect();
                let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
                // The broker dies under us: whatever has no answer was never acknowledged.
                let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    raw.produce("durable", 0, batch(&refs), -1)
                }));
                match answer {
                    Ok((0, base)) => acked.lock().unwrap().push((base, values)),
                    _ => return,
                }
            }
        })
    };

    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 300 {
        assert!(Instant::now() < deadline, "producer made no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    broker.kill9();
    stop.store(true, Ordering::Relaxed);
    producer.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(!broker.data_dir().join(".clean-shutdown").exists());

    broker.restart();
    let mut raw = Raw::connect(broker.addr());
    let records = raw.fetch_all("durable", 0);
    for (i, (offset, _)) in records.iter().enumerate() {
        assert_eq!(*offset, i as i64, "offsets must be contiguous from 0");
    }
    for (base, values) in &acked {
        for (j, value) in values.iter().enumerate() {
            let offset = *base as usize + j;
            assert!(offset < records.len(), "acknowledged offset {offset} lost ({} records survived)", records.len());
            assert_eq!(&records[offset].1, value, "offset {offset}");
        }
    }
    // The log takes appends again right after what survived.
    assert_eq!(raw.produce("durable", 0, batch(&[b"after"]), -1), (0, records.len() as i64));
}

/// The `.log` files of a partition directory, in offset order.
fn segment_files(partition_dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(partition_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

fn cut(path: &std::path::Path, bytes: u64) {
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.set_len(file.metadata().unwrap().len() - bytes).unwrap();
}

#[test]
fn damaged_partitions_go_offline_and_the_rest_serves() {
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::{MetadataRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;

    let mut broker = Broker::start(2, &[]);
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(raw.create_topic("healthy", 1, &[]), 0);
    assert_eq!(raw.create_topic("cut", 1, &[("segment.bytes", "4096")]), 0);
    assert_eq!(raw.create_topic("broken", 2, &[("segment.bytes", "4096")]), 0);
    let values: Vec<Vec<u8>> = (0..100).map(|i| format!("record-{i:03}-{}", "v".repeat(100)).into_bytes()).collect();
    let expected: Vec<(i64, Vec<u8>)> = values.iter().cloned().enumerate().map(|(i, v)| (i as i64, v)).collect();
    for (topic, partition) in [("healthy", 0), ("cut", 0), ("broken", 0), ("broken", 1)] {
        for (i, value) in values.iter().enumerate() {
            assert_eq!(raw.produce(topic, partition, batch(&[value]), 1), (0, i as i64));
        }
    }
    drop(raw);
    broker.terminate();

    let dir = broker.data_dir().to_path_buf();
    // After the clean shutdown, cut-0's last segment loses 7 bytes: recovered, not offline.
    cut(segment_files(&dir.join("cut-0")).last().unwrap(), 7);
    // broken-0: a closed segment loses 7 bytes, a hole that recovery must not paper over.
    let broken = segment_files(&dir.join("broken-0"));
    assert!(broken.len() > 2);
    cut(&broken[0], 7);
    // broken-1: a segment file that cannot be opened at all.
    let first = segment_files(&dir.join("broken-1")).remove(0);
    std::fs::remove_file(&first).unwrap();
    std::fs::create_dir(&first).unwrap();
    broker.restart();

    let mut raw = Raw::connect(broker.addr());
    assert_eq!(raw.fetch_all("healthy", 0), expected);
    assert_eq!(raw.fetch_all("cut", 0), expected[..99], "only the torn batch goes");
    assert_eq!(raw.produce("cut", 0, batch(&[b"after"]), -1), (0, 99));
    assert!(broker.stderr_text().contains("the tail does not parse"), "{}", broker.stderr_text());

    let request = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_static_str("broken")))),
    ]));
    let metadata = raw.send(&request, 12);
    let node = metadata.brokers[0].node_id;
    let topic = &metadata.topics[0];
    assert_eq!(topic.error_code, 0);
    for partition in &topic.partitions {
        assert_eq!(partition.error_code, 5, "LEADER_NOT_AVAILABLE for partition {}", partition.partition_index);
        assert_eq!(partition.leader_id.0, -1);
        assert_eq!(partition.offline_replicas, vec![node]);
    }
    for partition in [0, 1] {
        assert_eq!(raw.produce("broken", partition, batch(&[b"lost"]), -1).0, 56, "KAFKA_STORAGE_ERROR");
        assert_eq!(raw.fetch("broken", partition, 0, 0).0, 56, "KAFKA_STORAGE_ERROR");
    }
    // The damage is left as it was, for an operator to look at.
    assert!(first.is_dir());

    let (ok, out, err) = common::cli(&["topic", "describe", "broken", "--bootstrap", broker.addr()], "");
    assert!(ok, "{err}");
    assert_eq!(out.matches("Leader: none").count(), 2, "{out}");
    assert_eq!(out.matches(&format!("Offline: {}", node.0)).count(), 2, "{out}");

    let metrics = broker.http_get("/metrics").1;
    for (topic, partition, offline) in [("broken", 0, 1), ("broken", 1, 1), ("cut", 0, 0), ("healthy", 0, 0)] {
        let series = format!("sluice_partition_offline{{topic=\"{topic}\",partition=\"{partition}\"");
        let line =
            metrics.lines().find(|l| l.starts_with(&series)).unwrap_or_else(|| panic!("no {series}:\n{metrics}"));
        assert!(line.ends_with(&format!(" {offline}")), "{line}");
    }
}

/// Damage to the fields of a batch header that the CRC does not cover (the base offset, the
/// length) in the tail a crash left: the restart cuts the log at that batch, never serves it
/// or anything after it, and appends continue from there.
#[test]
fn damaged_batch_headers_in_a_crashed_tail_are_cut() {
    let mut broker = Broker::start(1, &[]);
    let mut raw = Raw::connect(broker.addr());
    let values: Vec<Vec<u8>> = (0..10).map(|i| format!("record-{i}").into_bytes()).collect();
    let damage: [(&str, usize, Vec<u8>); 3] = [
        ("huge-offset", 0, (i64::MAX - 1).to_be_bytes().to_vec()),
        ("earlier-offset", 0, 2i64.to_be_bytes().to_vec()),
        ("absurd-length", 8, i32::MAX.to_be_bytes().to_vec()),
    ];
    for (topic, _, _) in &damage {
        assert_eq!(raw.create_topic(topic, 1, &[]), 0);
        for (i, value) in values.iter().enumerate() {
            assert_eq!(raw.produce(topic, 0, batch(&[value]), 1), (0, i as i64));
        }
    }
    drop(raw);
    broker.kill9();

    let size = batch(&[&values[0]]).len() as u64;
    for (topic, field, bytes) in &damage {
        let segment = segment_files(&broker.data_dir().join(format!("{topic}-0"))).pop().unwrap();
        let file = std::fs::OpenOptions::new().write(true).open(segment).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&file, bytes, 5 * size + *field as u64).unwrap();
    }
    broker.restart();

    let mut raw = Raw::connect(broker.addr());
    let kept: Vec<(i64, Vec<u8>)> = values[..5].iter().cloned().enumerate().map(|(i, v)| (i as i64, v)).collect();
    for (topic, _, _) in &damage {
        assert_eq!(raw.fetch_all(topic, 0), kept, "{topic}");
        assert_eq!(raw.produce(topic, 0, batch(&[b"after"]), -1), (0, 5), "{topic}");
    }
}
