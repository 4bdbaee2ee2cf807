//! Per-shard counters and histograms, and their Prometheus text exposition.
//!
//! Each shard counts into its own [`ShardMetrics`] (no sharing, no atomics); a scrape asks
//! every shard for a [`Snapshot`] through the mesh and renders them together, one series per
//! shard where it helps tuning, merged where it does not.

use std::collections::BTreeMap;
use std::fmt::Write;

use hdrhistogram::Histogram;
use kafka_protocol::messages::ApiKey;

/// Latencies are recorded in microseconds, up to a minute, with 2 significant digits.
const LATENCY_MAX_US: u64 = 60_000_000;
/// Upper bounds of the exported latency buckets, in seconds.
const LATENCY_BUCKETS_S: [f64; 12] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0];

fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 2).expect("valid histogram bounds")
}

/// One API's requests on one shard.
#[derive(Clone)]
pub struct ApiStats {
    pub requests: u64,
    pub latency_us: Histogram<u64>,
}

/// What a shard counts. Lives in the shard (`RefCell`), never shared.
#[derive(Clone, Default)]
pub struct ShardMetrics {
    pub apis: BTreeMap<i16, ApiStats>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Record bytes of fetch responses copied through user space.
    pub fetch_bytes_copied: u64,
    /// Record bytes of fetch responses sent from the page cache without a copy.
    pub fetch_bytes_zero_copy: u64,
    /// Record bytes of fetch responses read through io_uring, not being in the page cache.
    pub fetch_bytes_io_uring: u64,
    /// Chunks of fetched file ranges that were not all in the page cache (each read that way).
    pub fetch_cold_chunks: u64,
    /// Page-cache probes of fetched file ranges (one per wholly cached range, one per chunk of
    /// a range that is not, or of any range once a connection met a cold chunk).
    pub fetch_page_cache_probes: u64,
    /// Loads through io_uring of bytes a fetch's owner-side read (batch headers, or records
    /// with `fetch.zero.copy.enable=false`), or a coordinator loading its committed offsets,
    /// did not find in the page cache.
    pub fetch_owner_loads: u64,
    pub mesh_sent: u64,
    pub mesh_received: u64,
    /// Partitions of acks=0 produce requests that failed; their clients are never told.
    pub unacknowledged_produce_errors: u64,
    /// fsyncs of partition segments submitted to the ring (group commit, `flush.ms`).
    pub fsyncs: u64,
    /// Appends acknowledged once an fsync covered them; far above `fsyncs` when group commit
    /// works.
    pub fsync_covered_appends: u64,
    /// Microseconds from the fsyncs' submission to their completion, summed.
    pub fsync_micros: u64,
    /// Writes of appends to segments through the ring (each may gather several appends).
    pub file_writes: u64,
    /// Microseconds from those writes' submission to their completion, summed.
    pub file_write_micros: u64,
}

impl ShardMetrics {
    pub fn record_request(&mut self, api_key: i16, latency_us: u64) {
        let stats =
            self.apis.entry(api_key).or_insert_with(|| ApiStats { requests: 0, latency_us: latency_histogram() });
        stats.requests += 1;
        stats.latency_us.saturating_record(latency_us.clamp(1, LATENCY_MAX_US));
    }
}

/// A partition's offsets at scrape time.
pub struct PartitionGauge {
    pub topic: String,
    pub partition: i32,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    pub high_watermark: i64,
}

/// Everything one shard reports to a scrape.
pub struct Snapshot {
    pub shard: usize,
    pub metrics: ShardMetrics,
    pub partitions: Vec<PartitionGauge>,
    /// (topic, partition) of the partitions that failed to open.
    pub offline: Vec<(String, i32)>,
    /// CPU time this shard's thread has used.
    pub cpu_seconds: f64,
    /// The most kernel workers that may run this shard's file I/O at once, as the kernel holds
    /// it (`num.io.threads`); `None` where it cannot be read.
    pub file_io_workers: Option<u32>,
}

/// CPU time of the calling thread, from `getrusage(RUSAGE_THREAD)`.
pub fn thread_cpu_seconds() -> f64 {
    match nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_THREAD) {
        Ok(usage) => {
            let seconds = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
            seconds(usage.user_time()) + seconds(usage.system_time())
        }
        Err(_) => 0.0,
    }
}

fn api_name(key: i16) -> String {
    ApiKey::try_from(key).map_or_else(|_| key.to_string(), |k| format!("{k:?}"))
}

/// Label values may hold any topic name; Prometheus wants `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// A metric family drawn from one field: (name, help, how to read it).
type Family<S, V> = (&'static str, &'static str, fn(&S) -> V);

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Renders the snapshots of all shards in the Prometheus text exposition format (0.0.4).
pub fn render(snapshots: &[Snapshot]) -> String {
    let mut out = String::new();

    family(&mut out, "sluice_requests_total", "counter", "Requests answered, by API and shard.");
    for s in snapshots {
        for (key, stats) in &s.metrics.apis {
            let _ = writeln!(
                out,
                "sluice_requests_total{{api=\"{}\",shard=\"{}\"}} {}",
                api_name(*key),
                s.shard,
                stats.requests
            );
        }
    }

    family(
        &mut out,
        "sluice_request_latency_seconds",
        "histogram",
        "Time from a request's arrival to its response, by API.",
    );
    let mut merged: BTreeMap<i16, Histogram<u64>> = BTreeMap::new();
    for s in snapshots {
        for (key, stats) in &s.metrics.apis {
            merged.entry(*key).or_insert_with(latency_histogram).add(&stats.latency_us).expect("same bounds");
        }
    }
    for (key, histogram) in &merged {
        let api = api_name(*key);
        for bound in LATENCY_BUCKETS_S {
            let count = histogram.count_between(0, (bound * 1e6) as u64);
            let _ = writeln!(out, "sluice_request_latency_seconds_bucket{{api=\"{api}\",le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "sluice_request_latency_seconds_bucket{{api=\"{api}\",le=\"+Inf\"}} {}", histogram.len());
        // The sum is estimated from the histogram's buckets, which is what it keeps.
        let sum: f64 =
            histogram.iter_recorded().map(|v| v.value_iterated_to() as f64 * v.count_at_value() as f64).sum();
        let _ = writeln!(out, "sluice_request_latency_seconds_sum{{api=\"{api}\"}} {}", sum / 1e6);
        let _ = writeln!(out, "sluice_request_latency_seconds_count{{api=\"{api}\"}} {}", histogram.len());
    }

    let counters: [Family<ShardMetrics, u64>; 8] = [
        ("sluice_bytes_in_total", "Request bytes read from clients.", |m| m.bytes_in),
        ("sluice_bytes_out_total", "Response bytes written to clients.", |m| m.bytes_out),
        (
            "sluice_unacknowledged_produce_errors_total",
            "Partitions of acks=0 produce requests that failed (the client gets no answer).",
            |m| m.unacknowledged_produce_errors,
        ),
        ("sluice_fsyncs_total", "Segment fsyncs submitted (group commit and flush.ms).", |m| m.fsyncs),
        (
            "sluice_fsync_covered_appends_total",
            "Appends answered once an fsync covered them (many per fsync under group commit).",
            |m| m.fsync_covered_appends,
        ),
        ("sluice_file_writes_total", "Writes of appends to segments (each may gather several appends).", |m| {
            m.file_writes
        }),
        (
            "sluice_fetch_cold_chunks_total",
            "Chunks of fetched file ranges not all in the page cache, read through io_uring instead of sendfile.",
            |m| m.fetch_cold_chunks,
        ),
        (
            "sluice_fetch_page_cache_probes_total",
            "Page-cache probes of fetched file ranges: one per range wholly cached, one per chunk otherwise.",
            |m| m.fetch_page_cache_probes,
        ),
    ];
    for (name, help, value) in counters {
        family(&mut out, name, "counter", help);
        for s in snapshots {
            let _ = writeln!(out, "{name}{{shard=\"{}\"}} {}", s.shard, value(&s.metrics));
        }
    }

    family(
        &mut out,
        "sluice_fetch_record_bytes_total",
        "counter",
        "Record bytes served by Fetch, by how they reached the socket.",
    );
    for s in snapshots {
        let _ = writeln!(
            out,
            "sluice_fetch_record_bytes_total{{path=\"copied\",shard=\"{}\"}} {}",
            s.shard, s.metrics.fetch_bytes_copied
        );
        let _ = writeln!(
            out,
            "sluice_fetch_record_bytes_total{{path=\"zero_copy\",shard=\"{}\"}} {}",
            s.shard, s.metrics.fetch_bytes_zero_copy
        );
        let _ = writeln!(
            out,
            "sluice_fetch_record_bytes_total{{path=\"io_uring\",shard=\"{}\"}} {}",
            s.shard, s.metrics.fetch_bytes_io_uring
        );
    }
    family(
        &mut out,
        "sluice_fetch_owner_loads_total",
        "counter",
        "Loads through io_uring of bytes a fetch's owner-side read (batch headers, or records not sent zero-copy), or a coordinator loading its committed offsets, did not find in the page cache; the read then runs again.",
    );
    for s in snapshots {
        let _ =
            writeln!(out, "sluice_fetch_owner_loads_total{{shard=\"{}\"}} {}", s.shard, s.metrics.fetch_owner_loads);
    }

    family(&mut out, "sluice_mesh_messages_total", "counter", "Envelopes sent to and received from other shards.");
    for s in snapshots {
        let _ = writeln!(
            out,
            "sluice_mesh_messages_total{{direction=\"sent\",shard=\"{}\"}} {}",
            s.shard, s.metrics.mesh_sent
        );
        let _ = writeln!(
            out,
            "sluice_mesh_messages_total{{direction=\"received\",shard=\"{}\"}} {}",
            s.shard, s.metrics.mesh_received
        );
    }

    family(
        &mut out,
        "sluice_shard_cpu_seconds_total",
        "counter",
        "CPU time used by each shard's thread (its reactor's busy time).",
    );
    for s in snapshots {
        let _ = writeln!(out, "sluice_shard_cpu_seconds_total{{shard=\"{}\"}} {}", s.shard, s.cpu_seconds);
    }

    let seconds: [Family<ShardMetrics, u64>; 2] = [
        (
            "sluice_fsync_seconds_total",
            "Time from each segment fsync's submission to its completion (waiting for a kernel worker included), summed.",
            |m| m.fsync_micros,
        ),
        (
            "sluice_file_write_seconds_total",
            "Time from each segment write's submission to its completion (waiting for a kernel worker included), summed.",
            |m| m.file_write_micros,
        ),
    ];
    for (name, help, micros) in seconds {
        family(&mut out, name, "counter", help);
        for s in snapshots {
            let _ = writeln!(out, "{name}{{shard=\"{}\"}} {}", s.shard, micros(&s.metrics) as f64 / 1e6);
        }
    }

    family(
        &mut out,
        "sluice_shard_file_io_workers",
        "gauge",
        "The most kernel (io_uring) workers that may run each shard's file writes and fsyncs at once (num.io.threads).",
    );
    for s in snapshots {
        if let Some(workers) = s.file_io_workers {
            let _ = writeln!(out, "sluice_shard_file_io_workers{{shard=\"{}\"}} {workers}", s.shard);
        }
    }

    let gauges: [Family<PartitionGauge, i64>; 3] = [
        ("sluice_partition_log_start_offset", "First offset still in the log.", |p| p.log_start_offset),
        ("sluice_partition_log_end_offset", "Next offset to be written.", |p| p.log_end_offset),
        ("sluice_partition_high_watermark", "Offset below which records are committed and readable.", |p| {
            p.high_watermark
        }),
    ];
    for (name, help, value) in gauges {
        family(&mut out, name, "gauge", help);
        for s in snapshots {
            for p in &s.partitions {
                let _ = writeln!(
                    out,
                    "{name}{{topic=\"{}\",partition=\"{}\",shard=\"{}\"}} {}",
                    escape(&p.topic),
                    p.partition,
                    s.shard,
                    value(p)
                );
            }
        }
    }
    family(&mut out, "sluice_partition_offline", "gauge", "1 for a partition that failed to open and serves nothing.");
    for s in snapshots {
        let partitions = s.partitions.iter().map(|p| (&p.topic, p.partition, 0));
        for (topic, partition, offline) in partitions.chain(s.offline.iter().map(|(t, p)| (t, *p, 1))) {
            let _ = writeln!(
                out,
                "sluice_partition_offline{{topic=\"{}\",partition=\"{partition}\",shard=\"{}\"}} {offline}",
                escape(topic),
                s.shard
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_valid_exposition_lines() {
        let mut metrics = ShardMetrics::default();
        metrics.record_request(0, 150);
        metrics.record_request(0, 3000);
        metrics.bytes_in = 10;
        metrics.fetch_bytes_io_uring = 4096;
        metrics.fetch_cold_chunks = 1;
        metrics.fetch_page_cache_probes = 3;
        metrics.fetch_owner_loads = 2;
        metrics.fsync_micros = 250_000;
        let snapshot = Snapshot {
            shard: 0,
            metrics,
            partitions: vec![PartitionGauge {
                topic: "a\"b".into(),
                partition: 1,
                log_start_offset: 0,
                log_end_offset: 7,
                high_watermark: 7,
            }],
            offline: vec![("broken".into(), 3)],
            cpu_seconds: 0.5,
            file_io_workers: Some(8),
        };
        let text = render(&[snapshot]);
        assert!(text.contains("sluice_requests_total{api=\"Produce\",shard=\"0\"} 2"));
        assert!(text.contains("sluice_request_latency_seconds_bucket{api=\"Produce\",le=\"0.00025\"} 1"));
        assert!(text.contains("sluice_request_latency_seconds_bucket{api=\"Produce\",le=\"+Inf\"} 2"));
        assert!(text.contains("sluice_partition_log_end_offset{topic=\"a\\\"b\",partition=\"1\",shard=\"0\"} 7"));
        assert!(text.contains("sluice_shard_file_io_workers{shard=\"0\"} 8"));
        assert!(text.contains("sluice_fsync_seconds_total{shard=\"0\"} 0.25"));
        assert!(text.contains("sluice_partition_offline{topic=\"a\\\"b\",partition=\"1\",shard=\"0\"} 0"));
        assert!(text.contains("sluice_partition_offline{topic=\"broken\",partition=\"3\",shard=\"0\"} 1"));
        assert!(text.contains("sluice_fetch_record_bytes_total{path=\"io_uring\",shard=\"0\"} 4096"));
        assert!(text.contains("sluice_fetch_cold_chunks_total{shard=\"0\"} 1"));
        assert!(text.contains("sluice_fetch_page_cache_probes_total{shard=\"0\"} 3"));
        assert!(text.contains("sluice_fetch_owner_loads_total{shard=\"0\"} 2"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
