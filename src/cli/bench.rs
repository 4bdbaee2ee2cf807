//! `sluice bench produce|consume|e2e|baseline`: the load generator's command line; the work
//! is in [`crate::bench`].

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::bench::baseline::{self, Baseline, BaselinePlan};
use crate::bench::{self as load, Mode, Results, Workload, report};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Produce records and measure publish latency (send → acknowledgement).
    Produce(LoadArgs),
    /// Consume a topic's records from the beginning (what an earlier produce run wrote).
    Consume(LoadArgs),
    /// Produce and consume at once and measure end-to-end latency (send → consume).
    E2e(LoadArgs),
    /// Measure this machine's limits: loopback TCP, page-cache write throughput and the
    /// disk's durable-write limits (write + fdatasync throughput, fdatasync rates).
    Baseline {
        #[command(flatten)]
        baseline: BaselineArgs,
        /// Write results.json and report.html here.
        #[arg(long, value_name = "DIR")]
        report: Option<PathBuf>,
    },
}

#[derive(Args)]
pub struct LoadArgs {
    #[arg(long, default_value = super::DEFAULT_BOOTSTRAP)]
    bootstrap: String,
    #[arg(long, default_value = "sluice-bench")]
    topic: String,
    /// Partitions of the topic (created with this many if it does not exist).
    #[arg(long, default_value_t = 1)]
    partitions: i32,
    /// A config the topic is created with, as KEY=VALUE (e.g. flush.messages=1); repeatable.
    /// An existing topic must already have it.
    #[arg(long = "topic-config", value_name = "KEY=VALUE")]
    topic_configs: Vec<String>,
    /// Bytes of each record value.
    #[arg(long, default_value_t = 1024)]
    record_size: usize,
    /// Records to produce (or consume), in all.
    #[arg(long, conflicts_with = "duration")]
    records: Option<u64>,
    /// Seconds to run, instead of a record count.
    #[arg(long, value_name = "SECONDS")]
    duration: Option<f64>,
    /// Records per second, in all (open loop); unset is as fast as the broker takes them.
    #[arg(long)]
    rate: Option<f64>,
    /// Producer connections; with more than partitions, several share each partition.
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Consumer connections (at most one per partition).
    #[arg(long, default_value_t = 1)]
    consumers: usize,
    /// 0, 1 or -1 (all).
    #[arg(long, default_value_t = 1, allow_hyphen_values = true)]
    acks: i16,
    /// Bytes of records per batch (one batch per Produce request).
    #[arg(long, default_value_t = 1 << 20)]
    batch_bytes: usize,
    /// With --rate: how long a batch waits to fill before it is sent.
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    compression: String,
    /// Produce requests a connection may have unanswered.
    #[arg(long, default_value_t = 5)]
    max_in_flight: usize,
    /// Bytes a consumer asks for per partition and fetch.
    #[arg(long, default_value_t = 1 << 20)]
    fetch_bytes: i32,
    /// Shards (pinned threads) the load runs on; default one per CPU this process may use.
    #[arg(long)]
    cores: Option<usize>,
    /// Microseconds an idle bench shard spins before it sleeps (as the broker's
    /// `reactor.spin.before.park.us`): lower wake-up latency for CPU time.
    #[arg(long, default_value_t = 0)]
    spin_us: u64,
    /// The broker's process id, for its CPU time (found by the port for a local broker).
    #[arg(long)]
    broker_pid: Option<i32>,
    /// Write results.json and report.html here.
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    /// Measure the machine's limits first and report every figure as a ratio of them.
    #[arg(long, conflicts_with = "baseline_from")]
    baseline: bool,
    /// Compare with the baseline in this results.json instead (from `bench baseline --report`).
    #[arg(long, value_name = "RESULTS_JSON")]
    baseline_from: Option<PathBuf>,
    #[command(flatten)]
    baseline_args: BaselineArgs,
}

#[derive(Args)]
pub struct BaselineArgs {
    /// Seconds of loopback TCP transfer.
    #[arg(long, default_value_t = 3.0)]
    baseline_seconds: f64,
    /// Bytes written through the page cache.
    #[arg(long, default_value_t = 1 << 30)]
    baseline_write_bytes: u64,
    /// Bytes written through the page cache and then made durable with one fdatasync.
    #[arg(long, default_value_t = 1 << 30)]
    baseline_disk_bytes: u64,
    /// Seconds of 4 KiB appends each followed by fdatasync, and again with 1 MiB appends.
    #[arg(long, default_value_t = 2.0)]
    baseline_sync_seconds: f64,
    /// Where the write tests go (put them on the broker's filesystem).
    #[arg(long, default_value = ".")]
    baseline_dir: PathBuf,
    /// Receiver and sender CPUs of the loopback transfer, e.g. 0,1 (default: the first two
    /// this process may use).
    #[arg(long, value_name = "RECEIVER,SENDER")]
    baseline_cpus: Option<String>,
}

impl BaselineArgs {
    fn measure(&self) -> anyhow::Result<Baseline> {
        let cpus = match &self.baseline_cpus {
            None => baseline::default_cpus(),
            Some(text) => {
                let (a, b) = text.split_once(',').context("--baseline-cpus takes RECEIVER,SENDER")?;
                (a.trim().parse().context("receiver CPU")?, b.trim().parse().context("sender CPU")?)
            }
        };
        println!(
            "measuring the baseline: loopback TCP for {} s, {} bytes of page-cache writes, {} bytes written \
             and fdatasynced, then 4 KiB and 1 MiB appends each fdatasynced, {} s each",
            self.baseline_seconds, self.baseline_write_bytes, self.baseline_disk_bytes, self.baseline_sync_seconds
        );
        baseline::measure(&BaselinePlan {
            duration: Duration::from_secs_f64(self.baseline_seconds),
            cpus,
            write_bytes: self.baseline_write_bytes,
            disk_bytes: self.baseline_disk_bytes,
            sync_duration: Duration::from_secs_f64(self.baseline_sync_seconds),
            dir: &self.baseline_dir,
        })
    }
}

pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    let (mode, args) = match command {
        BenchCommand::Produce(args) => (Mode::Produce, args),
        BenchCommand::Consume(args) => (Mode::Consume, args),
        BenchCommand::E2e(args) => (Mode::EndToEnd, args),
        BenchCommand::Baseline { baseline, report: dir } => {
            let mut results = Results::new(None);
            results.baseline = Some(baseline.measure()?);
            return finish(&results, dir.as_ref());
        }
    };
    let baseline = match (&args.baseline_from, args.baseline) {
        (Some(path), _) => Some(baseline::load(path)?),
        (None, true) => Some(args.baseline_args.measure()?),
        (None, false) => None,
    };
    let workload = Workload {
        mode,
        bootstrap: args.bootstrap,
        topic: args.topic,
        partitions: args.partitions,
        topic_configs: super::topic::key_values(&args.topic_configs, "--topic-config ")?,
        record_size: args.record_size,
        records: args.records,
        duration_s: args.duration,
        rate: args.rate,
        producers: args.producers,
        consumers: args.consumers,
        acks: args.acks,
        batch_bytes: args.batch_bytes,
        linger_ms: args.linger_ms,
        compression: args.compression,
        max_in_flight: args.max_in_flight,
        fetch_bytes: args.fetch_bytes,
        cores: args.cores,
        spin_us: args.spin_us,
    };
    let results = load::run(&workload, args.broker_pid, baseline)?;
    finish(&results, args.report.as_ref())
}

fn finish(results: &Results, dir: Option<&PathBuf>) -> anyhow::Result<()> {
    print!("{}", report::summary(results));
    if let Some(dir) = dir {
        load::write_report(dir, results)?;
        println!("report: {}", dir.join("report.html").display());
    }
    Ok(())
}
