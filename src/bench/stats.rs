//! What a benchmark run measures, shared between the load tasks (on their shards) and the
//! reporter (on the main thread). Counters are atomics; latency histograms sit behind a lock
//! taken once per acknowledged batch, never per record, so the lock costs nothing measurable.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use hdrhistogram::Histogram;
use serde::Serialize;

/// The clock of every latency: nanoseconds since the process's first call. One process runs
/// producers and consumers, so an end-to-end latency compares two readings of one clock.
pub fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    u64::try_from(EPOCH.get_or_init(Instant::now).elapsed().as_nanos()).expect("runs for less than 584 years")
}

/// Latencies are kept in microseconds, 3 significant digits, up to an hour.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// One direction of traffic (produced, or consumed).
#[derive(Default)]
pub struct Flow {
    pub records: AtomicU64,
    pub bytes: AtomicU64,
}

impl Flow {
    pub fn add(&self, records: u64, bytes: u64) {
        self.records.fetch_add(records, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn read(&self) -> (u64, u64) {
        (self.records.load(Ordering::Relaxed), self.bytes.load(Ordering::Relaxed))
    }
}

/// A latency histogram for the whole run and one for the current reporting interval.
pub struct Latencies {
    inner: Mutex<(Histogram<u64>, Histogram<u64>)>,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies { inner: Mutex::new((new_histogram(), new_histogram())) }
    }
}

impl Latencies {
    /// Records `count` latencies of a batch: the first is `first_ns`, each next one `step_ns`
    /// less (records of an open-loop batch were due at evenly spaced times).
    pub fn record_batch(&self, first_ns: u64, step_ns: u64, count: u64) {
        let mut guard = self.inner.lock().expect("latency lock");
        let (total, interval) = &mut *guard;
        for i in 0..count {
            let us = (first_ns.saturating_sub(i * step_ns) / 1000).max(1);
            total.saturating_record(us);
            interval.saturating_record(us);
        }
    }

    pub fn record(&self, latency_ns: u64) {
        self.record_batch(latency_ns, 0, 1);
    }

    /// Adds latencies gathered without the lock (a consumer's fetch worth of records).
    pub fn add(&self, latencies: &Histogram<u64>) {
        let mut guard = self.inner.lock().expect("latency lock");
        let (total, interval) = &mut *guard;
        total.add(latencies).expect("histograms share bounds");
        interval.add(latencies).expect("histograms share bounds");
    }

    /// The interval's histogram, replaced by an empty one.
    pub fn take_interval(&self) -> Histogram<u64> {
        let mut guard = self.inner.lock().expect("latency lock");
        std::mem::replace(&mut guard.1, new_histogram())
    }

    pub fn total(&self) -> Histogram<u64> {
        self.inner.lock().expect("latency lock").0.clone()
    }
}

/// Everything the load tasks report while they run.
#[derive(Default)]
pub struct Stats {
    pub produced: Flow,
    pub consumed: Flow,
    /// Publish latency (a record's due time to its acknowledgement).
    pub publish: Latencies,
    /// End-to-end latency (a record's due time to its consumption), or for a consume-only
    /// run the round trip of each fetch.
    pub consume: Latencies,
    /// Producer loops still running; consumers of an end-to-end run drain after it hits 0.
    pub producers_running: AtomicU64,
    /// Records produced with an acknowledgement (or sent, with acks=0).
    pub produced_settled: AtomicU64,
}

/// A latency summary in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p99_9: u64,
    pub p99_99: u64,
    pub max: u64,
    pub mean: f64,
    /// (percentile, latency µs) along the distribution, for the report's plot.
    pub distribution: Vec<(f64, u64)>,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        let distribution = if h.is_empty() {
            Vec::new()
        } else {
            h.iter_quantiles(4).map(|v| (v.quantile_iterated_to() * 100.0, v.value_iterated_to())).collect()
        };
        Percentiles {
            count: h.len(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p99_9: h.value_at_quantile(0.999),
            p99_99: h.value_at_quantile(0.9999),
            max: h.max(),
            mean: h.mean(),
            distribution,
        }
    }

    /// `p50 1.21 ms  p90 …`, for progress and summary lines.
    pub fn line(&self) -> String {
        let ms = |us: u64| us as f64 / 1000.0;
        format!(
            "p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  p99.99 {:.3}  max {:.3} ms",
            ms(self.p50),
            ms(self.p90),
            ms(self.p99),
            ms(self.p99_9),
            ms(self.p99_99),
            ms(self.max)
        )
    }
}
