//! The admin listener's `/metrics`: valid Prometheus text exposition whose counters move with
//! traffic.

mod common;

use std::collections::HashMap;

use common::{Broker, Raw, batch};

/// Checks the exposition format line by line; returns every sample as "name{labels}" → value.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    let mut typed = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(typed.insert(name.to_string()), "family typed twice: {line}");
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                && !name.starts_with(|c: char| c.is_ascii_digit()),
            "bad metric name: {line}"
        );
        let family = ["_bucket", "_sum", "_count"].iter().fold(name, |n, suffix| n.strip_suffix(suffix).unwrap_or(n));
        assert!(typed.contains(name) || typed.contains(family), "sample before its # TYPE: {line}");
        let labels = &series[name.len()..];
        if !labels.is_empty() {
            assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
            for pair in labels[1..labels.len() - 1].split("\",") {
                let (key, _) = pair.split_once("=\"").unwrap_or_else(|| panic!("bad label in {line}"));
                assert!(key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{line}");
            }
        }
        samples.insert(series.to_string(), value.parse::<f64>().unwrap_or_else(|_| panic!("bad value: {line}")));
    }
    samples
}

fn total(samples: &HashMap<String, f64>, prefix: &str) -> f64 {
    samples.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(_, v)| v).sum()
}

#[test]
fn metrics_are_valid_prometheus_text_and_move_with_traffic() {
    let broker = Broker::start(2, &[]);
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(raw.create_topic("watched", 2, &[]), 0);
    let (status, body) = broker.http_get("/metrics");
    assert!(status.contains("200"), "{status}");
    let before = parse(&body);

    for i in 0..10 {
        assert_eq!(raw.produce("watched", i % 2, batch(&[b"payload"]), 1).0, 0);
    }
    let (error, _, records) = raw.fetch("watched", 0, 0, 0);
    assert_eq!(error, 0);
    assert!(!records.is_empty());

    let after = parse(&broker.http_get("/metrics").1);
    let produced = |s: &HashMap<String, f64>| total(s, "sluice_requests_total{api=\"Produce\"");
    assert_eq!(produced(&after) - produced(&before), 10.0);
    assert_eq!(total(&after, "sluice_request_latency_seconds_count{api=\"Produce\"}"), produced(&after));
    assert!(total(&after, "sluice_bytes_in_total") > total(&before, "sluice_bytes_in_total"));
    assert!(total(&after, "sluice_bytes_out_total") > total(&before, "sluice_bytes_out_total"));
    // The records went from the page cache to the socket without a copy.
    assert!(total(&after, "sluice_fetch_record_bytes_total{path=\"zero_copy\"") >= records.len() as f64);
    assert_eq!(total(&after, "sluice_partition_log_end_offset{topic=\"watched\",partition=\"0\""), 5.0);
    assert_eq!(total(&after, "sluice_partition_high_watermark{topic=\"watched\",partition=\"1\""), 5.0);
    assert!(total(&after, "sluice_shard_cpu_seconds_total") > 0.0);
    // Two shards: something crossed the mesh (topic creation at least).
    assert!(total(&after, "sluice_mesh_messages_total{direction=\"received\"") > 0.0);

    assert!(broker.http_get("/elsewhere").0.contains("404"));
}

/// Every shard's file writes and fsyncs may run on `num.io.threads` kernel workers, as the
/// kernel holds the limit: the first shard's too, which glommio's 2-entry probe ring had left
/// with 2 (then two partitions' fsyncs held both and the other partitions' writes and fsyncs
/// queued behind them).
#[test]
fn every_shard_runs_its_file_io_on_num_io_threads_kernel_workers() {
    let default = sluice::config::DEFAULT_NUM_IO_THREADS.to_string();
    for (extra, workers) in [(vec![], default.as_str()), (vec!["--set", "num.io.threads=5"], "5")] {
        let broker = Broker::start(2, &extra);
        let samples = parse(&broker.http_get("/metrics").1);
        for shard in 0..2 {
            let series = format!("sluice_shard_file_io_workers{{shard=\"{shard}\"}}");
            assert_eq!(samples.get(&series), Some(&workers.parse().unwrap()), "{series}, with {extra:?}");
        }
    }
}

/// Durable appends' writes and fsyncs are counted and timed (their mean shows waiting for a
/// kernel worker).
#[test]
fn segment_writes_and_fsyncs_are_counted_and_timed() {
    let broker = Broker::start(1, &[]);
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(raw.create_topic("durable", 1, &[("flush.messages", "1")]), 0);
    for _ in 0..5 {
        assert_eq!(raw.produce("durable", 0, batch(&[b"payload"]), 1).0, 0);
    }
    let samples = parse(&broker.http_get("/metrics").1);
    assert!(total(&samples, "sluice_file_writes_total") >= 5.0);
    assert!(total(&samples, "sluice_file_write_seconds_total") > 0.0);
    assert!(total(&samples, "sluice_fsyncs_total") >= 5.0, "each append waited for its own fsync");
    assert!(total(&samples, "sluice_fsync_seconds_total") > 0.0);
}

/// Zero-copy and copying fetches return byte-identical batches (as stamped at append), and
/// each is counted under its own path.
#[test]
fn zero_copy_and_copied_fetches_send_the_same_bytes() {
    let mut fetched = Vec::new();
    for (zero_copy, path) in [("true", "zero_copy"), ("false", "copied")] {
        let broker = Broker::start(1, &["--set", &format!("fetch.zero.copy.enable={zero_copy}")]);
        let mut raw = Raw::connect(broker.addr());
        assert_eq!(raw.create_topic("same", 1, &[]), 0);
        let values: Vec<Vec<u8>> = (0..50).map(|i| format!("value-{i}-").repeat(40).into_bytes()).collect();
        for chunk in values.chunks(5) {
            let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
            // One timestamp for both brokers, so that their batches are alike byte for byte.
            assert_eq!(raw.produce("same", 0, common::batch_at(&refs, 1_700_000_000_000), -1).0, 0);
        }
        let records = raw.fetch_all("same", 0);
        assert_eq!(records.iter().map(|r| r.1.clone()).collect::<Vec<_>>(), values);
        let (_, _, bytes) = raw.fetch("same", 0, 0, 0);
        let samples = parse(&broker.http_get("/metrics").1);
        assert!(total(&samples, &format!("sluice_fetch_record_bytes_total{{path=\"{path}\"")) >= bytes.len() as f64);
        fetched.push(bytes);
    }
    assert_eq!(fetched[0], fetched[1], "both paths send the same bytes");
}
