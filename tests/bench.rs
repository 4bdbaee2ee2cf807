//! `sluice bench` against a live broker: produce and consume complete, agree with each other,
//! and write a valid `results.json` and a self-contained `report.html`.

mod common;

use std::path::Path;

use common::{Broker, cli};
use serde_json::Value;

fn bench(args: &[&str]) -> String {
    let (ok, out, err) = cli(&[&["bench"], args].concat(), "");
    assert!(ok, "sluice bench {args:?} failed:\n{out}\n{err}");
    out
}

fn results(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("results.json")).expect("results.json written");
    serde_json::from_str(&text).expect("results.json is JSON")
}

/// The report is one page that needs nothing else: no scripts, nothing loaded from elsewhere.
fn check_report(dir: &Path, charts: usize) {
    let html = std::fs::read_to_string(dir.join("report.html")).expect("report.html written");
    assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
    assert_eq!(html.matches("<svg").count(), charts, "{html}");
    assert_eq!(html.matches("<svg").count(), html.matches("</svg>").count());
    for external in ["<script", "src=", "href=", "@import", "url("] {
        assert!(!html.contains(external), "report.html refers to something outside it: {external}");
    }
}

/// A flow's numbers hang together: latency counts every record and percentiles are ordered.
fn check_flow(flow: &Value, records: u64, latency_kind: &str) {
    assert_eq!(flow["records"], records, "{flow}");
    assert_eq!(flow["latency_kind"], latency_kind);
    assert!(flow["bytes"].as_u64().unwrap() > 0 && flow["mb_per_s"].as_f64().unwrap() > 0.0, "{flow}");
    let latency = &flow["latency_us"];
    let ordered: Vec<u64> =
        ["p50", "p90", "p99", "p99_9", "p99_99", "max"].map(|p| latency[p].as_u64().unwrap()).into();
    assert!(ordered.windows(2).all(|w| w[0] <= w[1]) && ordered[0] > 0, "{latency}");
    let distribution = latency["distribution"].as_array().unwrap();
    assert!(distribution.len() > 2, "{latency}");
    assert_eq!(distribution.last().unwrap()[1].as_u64().unwrap(), latency["max"].as_u64().unwrap());
}

#[test]
fn produce_then_consume_reports_the_same_data() {
    let broker = Broker::start(2, &[]);
    let reports = tempfile::tempdir().unwrap();
    let produced_dir = reports.path().join("produce");
    let common = ["--bootstrap", broker.addr(), "--topic", "bench", "--partitions", "3"];
    let out = bench(
        &[
            &["produce"][..],
            &common,
            &["--records", "20000", "--record-size", "200", "--batch-bytes", "65536", "--report"],
            &[produced_dir.to_str().unwrap()],
        ]
        .concat(),
    );
    assert!(out.contains("produce: 20000 records"), "{out}");
    let produced = results(&produced_dir);
    assert_eq!(produced["workload"]["mode"], "produce");
    check_flow(&produced["produce"], 20000, "publish");
    assert!(produced["consume"].is_null());
    assert!(!produced["timeline"].as_array().unwrap().is_empty());
    // The broker is local: the bench finds it by its port and reads its CPU time.
    assert_eq!(produced["broker"]["pid"], broker.pid());
    assert!(produced["broker"]["cpu_seconds"].as_f64().unwrap() >= 0.0);
    // The share of the machine's CPU time its hypervisor withheld meanwhile (0 on bare metal).
    let steal = produced["host_steal_share"].as_f64().expect("the host's steal reported");
    assert!((0.0..=1.0).contains(&steal), "steal share {steal}");
    check_report(&produced_dir, 3);

    let consumed_dir = reports.path().join("consume");
    bench(
        &[
            &["consume"][..],
            &common,
            &["--records", "20000", "--consumers", "2", "--report"],
            &[consumed_dir.to_str().unwrap()],
        ]
        .concat(),
    );
    let consumed = results(&consumed_dir);
    check_flow(&consumed["consume"], 20000, "fetch");
    // The consumers read exactly the batches the producer wrote.
    assert_eq!(consumed["consume"]["bytes"], produced["produce"]["bytes"]);
    check_report(&consumed_dir, 3);
}

#[test]
fn end_to_end_at_a_rate_consumes_everything_it_produces() {
    let broker = Broker::start(1, &[]);
    let dir = tempfile::tempdir().unwrap();
    let args = ["e2e", "--bootstrap", broker.addr(), "--topic", "e2e", "--partitions", "2", "--record-size", "100"];
    bench(
        &[
            &args[..],
            &["--rate", "5000", "--duration", "1", "--linger-ms", "1", "--report"],
            &[dir.path().to_str().unwrap()],
        ]
        .concat(),
    );
    let run = results(dir.path());
    let produced = run["produce"]["records"].as_u64().unwrap();
    // Open loop: records are due at the rate, never faster.
    assert!(produced > 0 && produced <= 5000 + 1, "{produced}");
    check_flow(&run["produce"], produced, "publish");
    check_flow(&run["consume"], produced, "end_to_end");
    check_report(dir.path(), 3);
}

#[test]
fn baseline_measures_loopback_page_cache_and_disk_writes_and_runs_compare_with_it() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = bench(&[
        "baseline",
        "--baseline-seconds",
        "0.3",
        "--baseline-write-bytes",
        "8388608",
        "--baseline-disk-bytes",
        "4194304",
        "--baseline-sync-seconds",
        "0.2",
        "--baseline-dir",
        scratch.path().to_str().unwrap(),
        "--report",
        dir.path().to_str().unwrap(),
    ]);
    assert!(out.contains("baseline: loopback TCP"), "{out}");
    let baseline = &results(dir.path())["baseline"];
    let loopback = baseline["loopback_mb_per_s"].as_f64().unwrap();
    assert!(loopback > 0.0, "{baseline}");
    assert!(baseline["page_cache_write_mb_per_s"].as_f64().unwrap() > 0.0, "{baseline}");
    assert_eq!(baseline["page_cache_write_bytes"], 8388608);
    assert!(baseline["disk_sync_write_mb_per_s"].as_f64().unwrap() > 0.0, "{baseline}");
    assert_eq!(baseline["disk_sync_write_bytes"], 4194304);
    let sync_4k = baseline["sync_4k_per_s"].as_f64().unwrap();
    assert!(sync_4k > 0.0 && baseline["sync_1m_per_s"].as_f64().unwrap() > 0.0, "{baseline}");
    assert!(out.contains("baseline disk: write + fdatasync"), "{out}");
    assert_eq!(std::fs::read_dir(scratch.path()).unwrap().count(), 0, "the write test leaves no file behind");
    check_report(dir.path(), 0);

    // A later run reports its figures as fractions of that baseline.
    let broker = Broker::start(1, &[]);
    let run = tempfile::tempdir().unwrap();
    let baseline_file = dir.path().join("results.json");
    let out = bench(&[
        "produce",
        "--bootstrap",
        broker.addr(),
        "--records",
        "1000",
        "--baseline-from",
        baseline_file.to_str().unwrap(),
        "--report",
        run.path().to_str().unwrap(),
    ]);
    assert!(out.contains("% of loopback") && out.contains("of its write + fdatasync MB/s"), "{out}");
    let results = results(run.path());
    let close = |ratio: &Value, expected: f64| {
        let ratio = ratio.as_f64().unwrap();
        assert!((ratio - expected).abs() < 1e-9 * expected.max(1.0), "{ratio} vs {expected}");
    };
    let produce = &results["produce"];
    close(&results["ratios"]["produce_of_loopback"], produce["mb_per_s"].as_f64().unwrap() / loopback);
    close(
        &results["ratios"]["produce_of_disk_sync_write"],
        produce["mb_per_s"].as_f64().unwrap() / baseline["disk_sync_write_mb_per_s"].as_f64().unwrap(),
    );
    close(&results["ratios"]["produce_records_per_sync_4k"], produce["records_per_s"].as_f64().unwrap() / sync_4k);
    assert_eq!(results["baseline"]["loopback_mb_per_s"].as_f64().unwrap(), loopback);
}

#[test]
fn bad_requests_get_clear_errors() {
    let broker = Broker::start(1, &[]);
    let (ok, _, err) =
        cli(&["bench", "consume", "--bootstrap", broker.addr(), "--topic", "absent", "--records", "1"], "");
    assert!(!ok && err.contains("topic absent does not exist"), "{err}");
    bench(&["produce", "--bootstrap", broker.addr(), "--topic", "two", "--partitions", "2", "--records", "10"]);
    let (ok, _, err) = cli(
        &["bench", "produce", "--bootstrap", broker.addr(), "--topic", "two", "--partitions", "3", "--records", "10"],
        "",
    );
    assert!(!ok && err.contains("exists with 2 partitions, not 3"), "{err}");
    let (ok, _, err) = cli(
        &["bench", "consume", "--bootstrap", broker.addr(), "--topic", "two", "--partitions", "2", "--records", "11"],
        "",
    );
    assert!(!ok && err.contains("holds 10 records, fewer than --records 11"), "{err}");
    let (ok, _, err) =
        cli(&["bench", "produce", "--bootstrap", broker.addr(), "--records", "1", "--record-size", "4"], "");
    assert!(!ok && err.contains("--record-size must be at least 8"), "{err}");
}

#[test]
fn topics_are_created_with_the_configs_asked_for_and_producers_may_share_partitions() {
    let broker = Broker::start(1, &[]);
    let dir = tempfile::tempdir().unwrap();
    let args = ["bench", "produce", "--bootstrap", broker.addr(), "--topic", "durable", "--partitions", "2"];
    let durable = ["--topic-config", "flush.messages=1"];
    let out = bench(
        &[
            &args[1..],
            &durable,
            &["--producers", "5", "--records", "5000", "--record-size", "100", "--batch-bytes", "4096", "--report"],
            &[dir.path().to_str().unwrap()],
        ]
        .concat(),
    );
    assert!(out.contains("on 5 connection(s)"), "{out}");
    let run = results(dir.path());
    check_flow(&run["produce"], 5000, "publish");
    assert_eq!(run["produce"]["connections"], 5);
    assert_eq!(run["workload"]["topic_configs"], serde_json::json!([["flush.messages", "1"]]));
    let (ok, out, err) =
        cli(&["topic", "config", "get", "durable", "flush.messages", "--bootstrap", broker.addr()], "");
    assert!(ok && out.starts_with("flush.messages=1\t"), "{out}\n{err}");

    // Measuring an existing topic that lacks the configs asked for is refused.
    bench(&[&args[1..], &durable, &["--records", "10"]].concat());
    let (ok, _, err) = cli(&[&args[..], &["--topic-config", "flush.messages=2", "--records", "10"]].concat(), "");
    assert!(!ok && err.contains("topic durable exists with flush.messages=1, not 2"), "{err}");
    let (ok, _, err) = cli(&[&args[..], &["--topic-config", "flush.messages", "--records", "10"]].concat(), "");
    assert!(!ok && err.contains("--topic-config flush.messages: expected KEY=VALUE"), "{err}");
    // A config the broker refuses fails the creation with the broker's error.
    let (ok, _, err) = cli(
        &[
            "bench",
            "produce",
            "--bootstrap",
            broker.addr(),
            "--topic",
            "bad",
            "--topic-config",
            "flush.messages=x",
            "--records",
            "1",
        ],
        "",
    );
    assert!(!ok && err.contains("creating topic bad"), "{err}");
}
