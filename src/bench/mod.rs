//! `sluice bench`: a Kafka load generator on the broker's own thread-per-core runtime.
//!
//! Setup (topic, leaders, start offsets) uses the blocking [`crate::client`] on the main
//! thread. The load runs as producer and consumer loops (see [`load`]), one connection each,
//! spread over pinned shards ([`crate::runtime::executor::run_pinned`]). The main thread
//! meanwhile prints a progress line each second and gathers the timeline; at the end it
//! prints the summary and, with a report directory, writes `results.json` and `report.html`.

pub mod baseline;
pub mod host;
pub mod load;
pub mod report;
pub mod stats;

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kafka_protocol::records::Compression;
use serde::Serialize;

use self::baseline::Baseline;
use self::load::{ConsumerPlan, ProducerPlan, Stop};
use self::stats::{Percentiles, Stats};
use crate::client::{Client, EARLIEST, LATEST};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Produce,
    Consume,
    EndToEnd,
}

/// Everything a run is asked to do; serialized into `results.json` as given.
#[derive(Debug, Clone, Serialize)]
pub struct Workload {
    pub mode: Mode,
    pub bootstrap: String,
    pub topic: String,
    pub partitions: i32,
    /// Configs the topic is created with (e.g. `flush.messages=1`); an existing topic must
    /// already have them.
    pub topic_configs: Vec<(String, String)>,
    pub record_size: usize,
    pub records: Option<u64>,
    pub duration_s: Option<f64>,
    pub rate: Option<f64>,
    pub producers: usize,
    pub consumers: usize,
    pub acks: i16,
    pub batch_bytes: usize,
    pub linger_ms: u64,
    pub compression: String,
    pub max_in_flight: usize,
    pub fetch_bytes: i32,
    /// Shards the load runs on; `None` is one per CPU this process may use.
    pub cores: Option<usize>,
    /// How long an idle bench shard spins before it sleeps (µs).
    pub spin_us: u64,
}

/// One direction's totals.
#[derive(Debug, Clone, Serialize)]
pub struct FlowSummary {
    pub records: u64,
    /// Record batch bytes (what crosses the wire and lands in the log).
    pub bytes: u64,
    /// Connections this direction ran on.
    pub connections: usize,
    pub seconds: f64,
    pub records_per_s: f64,
    pub mb_per_s: f64,
    /// `publish` (due → acknowledged), `end_to_end` (due → consumed) or `fetch` (round trip).
    pub latency_kind: &'static str,
    pub latency_us: Percentiles,
}

/// One second of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Tick {
    pub t_s: f64,
    pub produced_mb_per_s: f64,
    pub produced_records_per_s: f64,
    pub consumed_mb_per_s: f64,
    pub consumed_records_per_s: f64,
    pub publish_p99_us: Option<u64>,
    pub consume_p99_us: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BrokerCpu {
    pub pid: i32,
    pub cpu_seconds: f64,
    /// Broker CPU seconds per GB (10^9 bytes) produced plus consumed.
    pub cpu_s_per_gb: f64,
    pub mb_per_cpu_s: f64,
}

/// Broker figures as fractions of the machine's limits.
#[derive(Debug, Clone, Serialize)]
pub struct Ratios {
    pub produce_of_loopback: Option<f64>,
    pub consume_of_loopback: Option<f64>,
    pub produce_of_page_cache_write: Option<f64>,
    /// Produced MB/s over the disk's sequential write + fdatasync MB/s.
    pub produce_of_disk_sync_write: Option<f64>,
    /// Produced records/s over the disk's 4 KiB append + fdatasync rounds/s: above 1 only
    /// if fsyncs are shared by many records.
    pub produce_records_per_sync_4k: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub tool: &'static str,
    pub version: &'static str,
    pub started_unix_ms: i64,
    pub workload: Option<Workload>,
    pub produce: Option<FlowSummary>,
    pub consume: Option<FlowSummary>,
    pub timeline: Vec<Tick>,
    pub broker: Option<BrokerCpu>,
    /// The share of this machine's CPU time the hypervisor withheld during the run (steal): on a
    /// virtual machine whose host throttles it, every process in it freezes at once, and
    /// latency figures then measure the host.
    pub host_steal_share: Option<f64>,
    pub baseline: Option<Baseline>,
    pub ratios: Option<Ratios>,
}

impl Results {
    pub fn new(workload: Option<Workload>) -> Results {
        Results {
            tool: "sluice bench",
            version: env!("CARGO_PKG_VERSION"),
            started_unix_ms: crate::runtime::now_ms(),
            workload,
            produce: None,
            consume: None,
            timeline: Vec::new(),
            broker: None,
            host_steal_share: None,
            baseline: None,
            ratios: None,
        }
    }

    /// Fills `ratios` from the flows and the baseline.
    pub fn compare_with(&mut self, baseline: Baseline) {
        let of = |flow: &Option<FlowSummary>, limit: f64| flow.as_ref().map(|f| f.mb_per_s / limit);
        self.ratios = Some(Ratios {
            produce_of_loopback: of(&self.produce, baseline.loopback_mb_per_s),
            consume_of_loopback: of(&self.consume, baseline.loopback_mb_per_s),
            produce_of_page_cache_write: of(&self.produce, baseline.page_cache_write_mb_per_s),
            produce_of_disk_sync_write: of(&self.produce, baseline.disk_sync_write_mb_per_s),
            produce_records_per_sync_4k: self.produce.as_ref().map(|f| f.records_per_s / baseline.sync_4k_per_s),
        });
        self.baseline = Some(baseline);
    }
}

pub fn parse_compression(name: &str) -> anyhow::Result<Compression> {
    Ok(match name {
        "none" => Compression::None,
        "gzip" => Compression::Gzip,
        "snappy" => Compression::Snappy,
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd,
        other => bail!("unknown compression {other:?} (none, gzip, snappy, lz4, zstd)"),
    })
}

/// The topic as the load sees it: partitions with their leaders' addresses.
struct Target {
    topic_id: uuid::Uuid,
    leaders: BTreeMap<i32, SocketAddr>,
}

fn resolve(address: &str) -> anyhow::Result<SocketAddr> {
    address.to_socket_addrs()?.next().with_context(|| format!("{address} resolves to nothing"))
}

/// Creates the topic if it does not exist and finds each partition's leader.
fn prepare(client: &mut Client, workload: &Workload) -> anyhow::Result<Target> {
    let exists = client.metadata(None)?.iter().any(|t| t.name == workload.topic);
    if !exists {
        anyhow::ensure!(workload.mode != Mode::Consume, "topic {} does not exist: nothing to consume", workload.topic);
        client.create_topic(&workload.topic, workload.partitions, -1, &workload.topic_configs)?;
        wait_until_served(client, &workload.topic)?;
    } else if !workload.topic_configs.is_empty() {
        // The configs are part of what is measured: a topic that lacks them is refused, not
        // silently measured without them.
        let actual = client.topic_configs(&workload.topic)?;
        for (key, value) in &workload.topic_configs {
            let found = actual.iter().find(|c| &c.name == key).and_then(|c| c.value.as_deref());
            if found != Some(value.as_str()) {
                bail!("topic {} exists with {key}={}, not {value}", workload.topic, found.unwrap_or("(unset)"));
            }
        }
    }
    let (brokers, topic) = client.cluster(&workload.topic)?;
    if exists && topic.partitions.len() as i32 != workload.partitions {
        bail!(
            "topic {} exists with {} partitions, not {}",
            workload.topic,
            topic.partitions.len(),
            workload.partitions
        );
    }
    let mut leaders = BTreeMap::new();
    for p in &topic.partitions {
        let address = brokers.get(&p.leader).with_context(|| format!("partition {} has no leader", p.partition))?;
        leaders.insert(p.partition, resolve(address)?);
    }
    Ok(Target { topic_id: topic.topic_id, leaders })
}

/// How long a topic just created may take to be served.
const TOPIC_READY_LIMIT: Duration = Duration::from_secs(30);

/// Waits until every partition of a topic just created has a leader that answers ListOffsets.
/// Apache Kafka's CreateTopics answers once its controller has committed the topic; the broker
/// learns of it moments later (Metadata first, then the partitions' logs), and a produce in
/// between fails. Like `list_offset` elsewhere here, this asks the bootstrap broker.
fn wait_until_served(client: &mut Client, topic: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let served = client.cluster(topic).and_then(|(_, info)| {
            anyhow::ensure!(!info.partitions.is_empty(), "no partitions yet");
            for p in &info.partitions {
                anyhow::ensure!(p.leader >= 0, "partition {} has no leader yet", p.partition);
                client.list_offset(topic, p.partition, LATEST)?;
            }
            Ok(())
        });
        match served {
            Ok(()) => return Ok(()),
            Err(e) if started.elapsed() > TOPIC_READY_LIMIT => {
                return Err(e.context(format!(
                    "topic {topic} not served {} s after its creation",
                    TOPIC_READY_LIMIT.as_secs()
                )));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Splits `total` into `n` near-equal shares.
fn shares(total: u64, n: usize) -> Vec<u64> {
    (0..n as u64).map(|i| total / n as u64 + u64::from(i < total % n as u64)).collect()
}

/// Member `index` of `count`'s partitions, grouped by leader: one connection per group.
/// With more members than partitions, each partition is shared by several members.
fn groups_for(target: &Target, index: usize, count: usize) -> Vec<(SocketAddr, Vec<i32>)> {
    let members = count.min(target.leaders.len());
    let mut by_leader: BTreeMap<SocketAddr, Vec<i32>> = BTreeMap::new();
    for (position, (&partition, &leader)) in target.leaders.iter().enumerate() {
        if position % members == index % members {
            by_leader.entry(leader).or_default().push(partition);
        }
    }
    by_leader.into_iter().collect()
}

enum Loop {
    Producer(ProducerPlan),
    Consumer(ConsumerPlan),
}

/// Runs `workload` against the broker, printing progress; `baseline` is compared with.
pub fn run(workload: &Workload, broker_pid: Option<i32>, baseline: Option<Baseline>) -> anyhow::Result<Results> {
    anyhow::ensure!(workload.record_size >= load::STAMP_BYTES, "--record-size must be at least {}", load::STAMP_BYTES);
    anyhow::ensure!(workload.records.is_some() || workload.duration_s.is_some(), "give --records or --duration");
    anyhow::ensure!(workload.producers > 0 && workload.consumers > 0, "--producers and --consumers must be positive");
    let compression = parse_compression(&workload.compression)?;
    let mut client = Client::connect(&workload.bootstrap)?;
    let target = prepare(&mut client, workload)?;
    let partitions: Vec<i32> = target.leaders.keys().copied().collect();

    let mut start_offsets = BTreeMap::new();
    let mut available = 0u64;
    if workload.mode != Mode::Produce {
        for &p in &partitions {
            // An end-to-end run reads only what it produces; a consume run reads what is there.
            let start = client.list_offset(
                &workload.topic,
                p,
                if workload.mode == Mode::Consume { EARLIEST } else { LATEST },
            )?;
            let end = client.list_offset(&workload.topic, p, LATEST)?;
            available += u64::try_from(end - start).unwrap_or(0);
            start_offsets.insert(p, start);
        }
    }
    drop(client);

    let broker_pid = broker_pid.or_else(|| host::local_listener(resolve(&workload.bootstrap).ok()?));
    let cpu_before = broker_pid.map(host::cpu_seconds).transpose()?;
    // Not every kernel reports steal time; the run goes on without it.
    let host_before = host::CpuTimes::now().ok();
    let deadline = workload.duration_s.map(|s| Instant::now() + Duration::from_secs_f64(s));
    let loops = plan_loops(workload, &target, compression, &start_offsets, available, deadline)?;
    let stats = Arc::new(Stats::default());
    let producer_loops = loops.iter().filter(|l| matches!(l, Loop::Producer(_))).count();
    let consumer_loops = loops.len() - producer_loops;
    stats.producers_running.store(producer_loops as u64, Ordering::Release);

    let mut results = Results::new(Some(workload.clone()));
    let started = Instant::now();
    let spin = Duration::from_micros(workload.spin_us);
    let finished = drive(loops, workload.cores, spin, stats.clone(), &mut results.timeline)?;
    let seconds = finished.as_secs_f64();

    let flow = |flow: &stats::Flow, latencies: &stats::Latencies, connections, kind| {
        let (records, bytes) = flow.read();
        FlowSummary {
            records,
            bytes,
            connections,
            seconds,
            records_per_s: records as f64 / seconds,
            mb_per_s: bytes as f64 / 1e6 / seconds,
            latency_kind: kind,
            latency_us: Percentiles::of(&latencies.total()),
        }
    };
    if workload.mode != Mode::Consume {
        results.produce = Some(flow(&stats.produced, &stats.publish, producer_loops, "publish"));
    }
    match workload.mode {
        Mode::Produce => {}
        Mode::Consume => results.consume = Some(flow(&stats.consumed, &stats.consume, consumer_loops, "fetch")),
        Mode::EndToEnd => results.consume = Some(flow(&stats.consumed, &stats.consume, consumer_loops, "end_to_end")),
    }
    results.host_steal_share =
        host_before.and_then(|before| Some(host::CpuTimes::now().ok()?.steal_share_since(&before)));
    if let (Some(pid), Some(before)) = (broker_pid, cpu_before) {
        let cpu = host::cpu_seconds(pid)? - before;
        let moved = stats.produced.read().1 + stats.consumed.read().1;
        results.broker = Some(BrokerCpu {
            pid,
            cpu_seconds: cpu,
            cpu_s_per_gb: cpu / (moved as f64 / 1e9).max(1e-12),
            mb_per_cpu_s: moved as f64 / 1e6 / cpu.max(1e-9),
        });
    }
    if let Some(baseline) = baseline {
        results.compare_with(baseline);
    }
    tracing::debug!(elapsed = ?started.elapsed(), "bench finished");
    Ok(results)
}

fn plan_loops(
    workload: &Workload,
    target: &Target,
    compression: Compression,
    start_offsets: &BTreeMap<i32, i64>,
    available: u64,
    deadline: Option<Instant>,
) -> anyhow::Result<Vec<Loop>> {
    // Producers may outnumber partitions (several connections appending to one partition);
    // consumers may not, as two would read the same records.
    let producers = workload.producers;
    let consumers = workload.consumers.min(target.leaders.len());
    let mut loops = Vec::new();
    if workload.mode != Mode::Consume {
        let records = workload.records.map(|n| shares(n, producers));
        let batch_records = load::records_per_batch(workload.batch_bytes, workload.record_size);
        for index in 0..producers {
            let groups = groups_for(target, index, producers);
            let mine = groups.iter().map(|(_, ps)| ps.len() as u64).sum::<u64>();
            for (group, (address, partitions)) in groups.iter().enumerate() {
                // A producer's records are split evenly over its connections (one per leader), its
                // rate by their partition counts.
                let weight = partitions.len() as f64 / mine as f64;
                let records = records.as_ref().map(|r| shares(r[index], groups.len())[group]);
                loops.push(Loop::Producer(ProducerPlan {
                    address: *address,
                    topic: workload.topic.clone(),
                    topic_id: target.topic_id,
                    partitions: partitions.clone(),
                    records,
                    deadline,
                    rate: workload.rate.map(|r| r / producers as f64 * weight),
                    record_size: workload.record_size,
                    batch_records,
                    linger: Duration::from_millis(workload.linger_ms),
                    acks: workload.acks,
                    compression,
                    max_in_flight: workload.max_in_flight,
                }));
            }
        }
    }
    if workload.mode != Mode::Produce {
        let stop = match (workload.mode, workload.records, deadline) {
            (Mode::EndToEnd, _, _) => Stop::Drain,
            (_, Some(records), _) => {
                anyhow::ensure!(
                    records <= available,
                    "topic {} holds {available} records, fewer than --records {records}",
                    workload.topic
                );
                Stop::Records(records)
            }
            (_, None, Some(deadline)) => Stop::At(deadline),
            (_, None, None) => unreachable!("checked in run"),
        };
        for index in 0..consumers {
            for (address, partitions) in groups_for(target, index, consumers) {
                loops.push(Loop::Consumer(ConsumerPlan {
                    address,
                    topic: workload.topic.clone(),
                    topic_id: target.topic_id,
                    partitions: partitions.iter().map(|p| (*p, start_offsets[p])).collect(),
                    stop,
                    partition_max_bytes: workload.fetch_bytes,
                    end_to_end: workload.mode == Mode::EndToEnd,
                }));
            }
        }
    }
    Ok(loops)
}

/// Runs the loops on pinned shards, printing a progress line and adding a tick each second;
/// returns how long the load ran.
fn drive(
    loops: Vec<Loop>,
    cores: Option<usize>,
    spin: Duration,
    stats: Arc<Stats>,
    timeline: &mut Vec<Tick>,
) -> anyhow::Result<Duration> {
    let shard_count = cores.unwrap_or_else(crate::runtime::executor::allowed_cpu_count).clamp(1, loops.len().max(1));
    let mut payloads: Vec<Vec<Loop>> = (0..shard_count).map(|_| Vec::new()).collect();
    for (i, l) in loops.into_iter().enumerate() {
        payloads[i % shard_count].push(l);
    }
    let started = Instant::now();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let load_stats = stats.clone();
    let runner = std::thread::spawn(move || {
        let result = crate::runtime::executor::run_pinned(payloads, spin, move |_, loops: Vec<Loop>| {
            let stats = load_stats.clone();
            async move { run_loops(loops, stats).await }
        });
        let _ = done_tx.send(());
        result
    });

    let mut last = (Instant::now(), stats.produced.read(), stats.consumed.read());
    loop {
        let finished = done_rx.recv_timeout(Duration::from_secs(1)).is_ok();
        let now = Instant::now();
        let (produced, consumed) = (stats.produced.read(), stats.consumed.read());
        let dt = now.duration_since(last.0).as_secs_f64().max(1e-9);
        let per_s =
            |now: (u64, u64), then: (u64, u64)| ((now.0 - then.0) as f64 / dt, (now.1 - then.1) as f64 / 1e6 / dt);
        let (p_rec, p_mb) = per_s(produced, last.1);
        let (c_rec, c_mb) = per_s(consumed, last.2);
        let publish = stats.publish.take_interval();
        let consume = stats.consume.take_interval();
        let p99 = |h: &hdrhistogram::Histogram<u64>| (!h.is_empty()).then(|| h.value_at_quantile(0.99));
        let tick = Tick {
            t_s: now.duration_since(started).as_secs_f64(),
            produced_mb_per_s: p_mb,
            produced_records_per_s: p_rec,
            consumed_mb_per_s: c_mb,
            consumed_records_per_s: c_rec,
            publish_p99_us: p99(&publish),
            consume_p99_us: p99(&consume),
        };
        last = (now, produced, consumed);
        // The last, partial second is kept only if something happened in it.
        if finished && p_rec == 0.0 && c_rec == 0.0 && !timeline.is_empty() {
            break;
        }
        println!("{}", report::progress_line(&tick));
        timeline.push(tick);
        if finished {
            break;
        }
    }
    let elapsed = started.elapsed();
    runner.join().map_err(|_| anyhow::anyhow!("the load thread panicked"))??;
    Ok(elapsed)
}

async fn run_loops(loops: Vec<Loop>, stats: Arc<Stats>) -> anyhow::Result<()> {
    let tasks: Vec<_> = loops
        .into_iter()
        .map(|l| {
            let stats = stats.clone();
            crate::runtime::spawn_local(async move {
                match l {
                    Loop::Producer(plan) => {
                        let result = load::produce(plan, stats.clone()).await;
                        stats.producers_running.fetch_sub(1, Ordering::AcqRel);
                        result.context("producer")
                    }
                    Loop::Consumer(plan) => load::consume(plan, stats).await.context("consumer"),
                }
            })
        })
        .collect();
    let mut first_error = None;
    for task in tasks {
        if let Err(e) = task.await {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Writes `results.json` and `report.html` into `dir`.
pub fn write_report(dir: &PathBuf, results: &Results) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let json = serde_json::to_string_pretty(results)?;
    std::fs::write(dir.join("results.json"), json).context("writing results.json")?;
    std::fs::write(dir.join("report.html"), report::html(results)).context("writing report.html")?;
    Ok(())
}
