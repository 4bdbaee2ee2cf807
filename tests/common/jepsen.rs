//! The Jepsen-style workload of `tests/driver/jepsen.py` from Rust: an idempotent acks=all
//! producer and a consumer following the topic run while a test breaks brokers; at the end a
//! fresh consumer reads everything and the checker judges every value produced, acknowledged
//! and read (lost, duplicated, reordered, conflicting positions). The histories and reads are
//! files in a temporary directory owned by the workload.

use std::process::Command;
use std::time::Duration;

use kafka_protocol::messages::ProduceRequest;

use super::cluster::{Cluster, FAST_SESSIONS, PartitionView};
use super::{Clients, Running, json_summary, script_command};

const SCRIPT: &str = "jepsen";
/// How long the producer may take to flush, and a reader to catch up, at the end.
const FINISH_DEADLINE: Duration = Duration::from_secs(150);

pub struct Workload {
    bootstrap: String,
    topic: String,
    dir: tempfile::TempDir,
    /// Every producer's prefix, in start order.
    prefixes: Vec<String>,
    producers: Vec<(String, Running)>,
    follower: Option<Running>,
    /// Consumer groups' members: (group, process).
    groups: Vec<(String, Running)>,
    /// What each stopped producer printed.
    producer_summaries: Vec<serde_json::Value>,
    /// Each fault marked with [`Workload::fault_now`]: the partition, and when (seconds since
    /// the epoch).
    faults: Vec<(i32, f64)>,
}

impl Workload {
    /// Starts a consumer following `topic` from its start; producers come with [`Workload::produce`].
    pub fn start(bootstrap: &str, topic: &str) -> Workload {
        let mut workload = Workload {
            bootstrap: bootstrap.to_string(),
            topic: topic.to_string(),
            dir: tempfile::tempdir().expect("temp dir"),
            prefixes: Vec::new(),
            producers: Vec::new(),
            follower: None,
            groups: Vec::new(),
            producer_summaries: Vec::new(),
            faults: Vec::new(),
        };
        let reads = workload.file("follower-reads");
        workload.follower = Some(Running::spawn(workload.command(&["consume", "--follow", "--reads", &reads])));
        workload
    }

    /// Starts an idempotent producer of values `prefix:N` at `rate` records per second.
    pub fn produce(&mut self, prefix: &str, rate: u32) {
        self.produce_with(prefix, rate, &[]);
    }

    /// Like [`Workload::produce`], with librdkafka settings (`socket.timeout.ms`, ...).
    pub fn produce_with(&mut self, prefix: &str, rate: u32, config: &[(&str, &str)]) {
        let history = self.file(&format!("history-{prefix}"));
        let rate = rate.to_string();
        let mut args: Vec<String> = ["produce", "--prefix", prefix, "--rate", &rate, "--history", &history]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for (key, value) in config {
            args.extend(["--config".to_string(), format!("{key}={value}")]);
        }
        let command = self.command(&args.iter().map(String::as_str).collect::<Vec<_>>());
        self.prefixes.push(prefix.to_string());
        self.producers.push((prefix.to_string(), Running::spawn(command)));
    }

    /// Starts a member of consumer group `group` reading the topic, committing as it goes; at
    /// the end the checker counts the acknowledged values it never read (`group_missed`).
    pub fn join_group(&mut self, group: &str) {
        let reads = self.file(&format!("group-{group}"));
        let command = self.command(&["consume", "--follow", "--group", group, "--reads", &reads]);
        self.groups.push((group.to_string(), Running::spawn(command)));
    }

    /// Marks a fault of `partition` (its leader killed, ...) as happening now: the checker's
    /// summary lists, in `first_ack_after_fault_s`, the seconds from each one to the first
    /// acknowledgement on that partition of a value produced after it (null if none was).
    pub fn fault_now(&mut self, partition: i32) {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after the epoch");
        self.faults.push((partition, now.as_secs_f64()));
    }

    /// How many values the running producers have had acknowledged so far (each reports it
    /// every 100 ms).
    pub fn acked(&self) -> u64 {
        self.producers.iter().map(|(_, running)| reported(running, "acked ")).sum()
    }

    /// How many values the running producers have had acknowledged on `partition` so far.
    pub fn acked_on(&self, partition: i32) -> u64 {
        let prefix = format!("partition {partition} acked ");
        self.producers.iter().map(|(_, running)| reported(running, &prefix)).sum()
    }

    /// How many records the groups' members have read so far.
    pub fn consumed(&self) -> u64 {
        self.groups.iter().map(|(_, running)| reported(running, "consumed ")).sum()
    }

    /// Stops the producers (each flushes what it has), then the follower; reads the whole topic
    /// once more (the final read) and returns the checker's summary, with what each producer
    /// printed under `producers`. `context` (e.g. the brokers' logs) is added to a failure's
    /// message.
    pub fn finish(mut self, context: impl Fn() -> String) -> serde_json::Value {
        self.stop_producers(&context);
        let follower = self.follower.take().expect("a follower");
        json_summary("the following consumer", follower.finish(FINISH_DEADLINE), &context);
        let mut groups = Vec::new();
        for (group, member) in std::mem::take(&mut self.groups) {
            let mut printed = json_summary(&format!("group {group}"), member.finish(FINISH_DEADLINE), &context);
            printed["group"] = group.into();
            groups.push(printed);
        }
        let final_reads = self.file("final-reads");
        self.run(&["consume", "--reads", &final_reads], &context);
        let mut check = vec!["check".to_string(), "--final".to_string(), final_reads];
        for prefix in &self.prefixes {
            check.extend(["--history".to_string(), self.file(&format!("history-{prefix}"))]);
        }
        check.extend(["--reads".to_string(), self.file("follower-reads")]);
        for group in &groups {
            let reads = self.file(&format!("group-{}", group["group"].as_str().expect("named")));
            check.extend(["--reads".to_string(), reads.clone(), "--group-reads".to_string(), reads]);
        }
        for (partition, at) in &self.faults {
            check.extend(["--fault-at".to_string(), format!("{partition}@{at}")]);
        }
        let args: Vec<&str> = check.iter().map(String::as_str).collect();
        let mut summary = self.run(&args, &context);
        summary["producers"] = std::mem::take(&mut self.producer_summaries).into();
        summary["groups"] = groups.into();
        summary
    }

    /// Stops the producers started so far and keeps their summaries (a test may go on with
    /// new producers, e.g. after breaking the log behind their back).
    pub fn stop_producers(&mut self, context: &impl Fn() -> String) {
        for (prefix, producer) in std::mem::take(&mut self.producers) {
            let mut printed = json_summary(&format!("producer {prefix}"), producer.finish(FINISH_DEADLINE), context);
            printed["prefix"] = prefix.into();
            self.producer_summaries.push(printed);
        }
    }

    fn file(&self, name: &str) -> String {
        self.dir.path().join(format!("{name}.json")).display().to_string()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = script_command(Clients::Current, SCRIPT);
        command.args(["--bootstrap", &self.bootstrap]).args(args);
        // Every subcommand but check takes the topic after its own name.
        if args[0] != "check" {
            command.args(["--topic", &self.topic]);
        }
        command
    }

    fn run(&self, args: &[&str], context: &impl Fn() -> String) -> serde_json::Value {
        let what = format!("jepsen {}", args[0]);
        json_summary(&what, super::run_with_deadline(self.command(args), b"", FINISH_DEADLINE), context)
    }
}

/// The topic [`through_a_broker_fault`] makes and runs the workload over.
pub const TOPIC: &str = "spread";

/// Broker settings for [`through_a_broker_fault`]: sessions as [`FAST_SESSIONS`], and
/// `replica.lag.time.max.ms` as short, so that a broker held broken until it is fenced is
/// also past the replica lag.
pub fn fast_failover() -> Vec<&'static str> {
    FAST_SESSIONS.iter().copied().chain(["--set", "replica.lag.time.max.ms=2000"]).collect()
}

/// A partition the broken broker led: as a majority node's Metadata described it before the
/// fault, and once another replica led it.
pub struct Moved {
    pub before: PartitionView,
    pub after: PartitionView,
}

/// The workload over `cluster`'s brokers (started with [`fast_failover`]'s settings) and a
/// topic of six partitions with `replication_factor` replicas (at least two) and `configs`,
/// through a fault: `fault` on a broker that is not the active controller and leads some
/// partitions, held until the others fence it, every partition it led has another leader from
/// its ISR in a newer leader epoch, and the producer goes on; then `mend`, given what `fault`
/// returned.
///
/// Asserts that once mended every node reports the same leaders and ISRs, with the mended
/// broker back in every ISR; that the producer goes on; that on every partition it led, its
/// epoch history (`leader-epoch-checkpoint`) is its new leader's up to the new epoch, so any
/// tail it had written in its old epoch and no one else had is cut; that the checker finds
/// nothing lost, duplicated or reordered, no value whose produce failed visible, every value
/// produced acknowledged in the end. Values a test writes to the broken broker itself are in
/// no producer's history: any read of one (by the following consumer or the final read) is
/// `unexpected`, which must be none. On a failure the nodes' logs are printed. Returns the
/// broken broker and the partitions whose leadership moved.
pub fn through_a_broker_fault<T>(
    cluster: &Cluster,
    replication_factor: i16,
    configs: &[(&str, &str)],
    fault: impl FnOnce(&Cluster, usize) -> T,
    mend: impl FnOnce(&Cluster, usize, T),
) -> (usize, Vec<Moved>) {
    assert!(replication_factor >= 2, "leadership can move only to another replica");
    // Replicas are placed over the brokers registered when the topic is made (as in Kafka),
    // as the creating node knows them: a node ready before the others have registered would
    // put every partition on the brokers it has heard of, and the fault might leave none.
    cluster.wait_for_every_broker(Duration::from_secs(30));
    cluster.create_topic_everywhere(TOPIC, 6, replication_factor, configs);
    let everyone: Vec<i32> = (1..=cluster.len() as i32).collect();
    let mut leaders: Vec<i32> = cluster.leaders_seen_by(0, TOPIC).into_iter().map(|(_, leader)| leader).collect();
    leaders.sort();
    leaders.dedup();
    assert_eq!(leaders, everyone, "the partitions of {TOPIC:?} are led by every broker");
    let mut workload = Workload::start(&cluster.bootstrap(), TOPIC);
    workload.produce("p", 500);
    super::wait_until(Duration::from_secs(60), "500 acknowledged", || workload.acked() >= 500);
    let all: Vec<usize> = (0..cluster.len()).collect();
    // The active controller stays up: its Metadata describes the majority's view.
    let other = cluster.quorum_leader(&all, Duration::from_secs(10));
    let views = cluster.partitions_seen_by(other, TOPIC);
    // A broker that leads partitions now: one fenced for a moment under load since the topic
    // was made may have lost its leaderships to the others.
    let broken = (1..cluster.len())
        .map(|k| (other + k) % cluster.len())
        .find(|&i| views.iter().any(|p| p.leader == i as i32 + 1))
        .unwrap_or_else(|| panic!("a broker other than the active controller leads a partition: {views:?}"));
    let id = broken as i32 + 1;
    let rest: Vec<i32> = everyone.iter().copied().filter(|&other| other != id).collect();
    let led: Vec<PartitionView> = views.into_iter().filter(|p| p.leader == id).collect();

    let held = fault(cluster, broken);
    super::wait_until(Duration::from_secs(20), "the broken broker is fenced", || {
        cluster.brokers_seen_by(other) == rest
    });
    let mut moved = Vec::new();
    super::wait_until(Duration::from_secs(20), "another in-sync replica leads what it led, in a newer epoch", || {
        let now = cluster.partitions_seen_by(other, TOPIC);
        moved = led
            .iter()
            .filter_map(|before| {
                let after = now[before.partition as usize].clone();
                let took_over = after.leader != id
                    && before.isr.contains(&after.leader)
                    && after.leader_epoch > before.leader_epoch
                    && !after.isr.contains(&id);
                took_over.then(|| Moved { before: before.clone(), after })
            })
            .collect();
        moved.len() == led.len()
    });
    let before = workload.acked();
    super::wait_until(Duration::from_secs(30), "the producer goes on", || workload.acked() >= before + 200);

    mend(cluster, broken, held);
    super::wait_until(
        Duration::from_secs(60),
        "every node reports the same leaders and ISRs, the mended one in sync",
        || {
            let views: Vec<Vec<PartitionView>> = all.iter().map(|&i| cluster.partitions_seen_by(i, TOPIC)).collect();
            views.iter().all(|view| view == &views[0])
                && views[0].iter().all(|p| p.leader > 0 && (!p.replicas.contains(&id) || p.isr.contains(&id)))
        },
    );
    let mended = workload.acked();
    super::wait_until(Duration::from_secs(60), "500 more acknowledged once mended", || {
        workload.acked() >= mended + 500
    });
    for Moved { after, .. } in &moved {
        let up_to_new_epoch = |node: usize| {
            let mut epochs = leader_epochs(cluster, node, after.partition);
            epochs.retain(|&(epoch, _)| epoch <= after.leader_epoch);
            epochs
        };
        let new_leader = after.leader as usize - 1;
        super::wait_until(Duration::from_secs(20), "the mended broker's epochs are its new leader's", || {
            up_to_new_epoch(broken) == up_to_new_epoch(new_leader)
        });
    }
    let acked = workload.acked();
    let context =
        || (0..cluster.len()).map(|i| format!("node {} stderr:\n{}", i + 1, cluster.node(i).stderr_text())).collect();
    let check = workload.finish(context);
    assert_clean(&check, acked);
    assert_eq!(check["acked"], check["produced"], "{check:#}");
    assert_eq!(check["failed_visible"], 0, "{check:#}");
    (broken, moved)
}

/// An acks=all Produce of three values `{prefix}-{partition}-{k}` to each partition of
/// [`TOPIC`] that node `i` leads, as its own Metadata says (ask before breaking it): the
/// request and the partitions (as node `i` describes them).
pub fn writes_to_what_it_leads(cluster: &Cluster, i: usize, prefix: &str) -> (ProduceRequest, Vec<PartitionView>) {
    let id = i as i32 + 1;
    let led: Vec<PartitionView> = cluster.partitions_seen_by(i, TOPIC).into_iter().filter(|p| p.leader == id).collect();
    let batches = led
        .iter()
        .map(|p| {
            let values: Vec<String> = (0..3).map(|k| format!("{prefix}-{}-{k}", p.partition)).collect();
            (p.partition, super::batch(&values.iter().map(String::as_bytes).collect::<Vec<_>>()))
        })
        .collect();
    (super::produce_request_to(TOPIC, batches, -1), led)
}

/// Node `i`'s leader-epoch cache of partition `partition` of [`TOPIC`], as its
/// `leader-epoch-checkpoint` holds it: (epoch, start offset) in order.
pub fn leader_epochs(cluster: &Cluster, i: usize, partition: i32) -> Vec<(i32, i64)> {
    let path = cluster.node(i).data_dir().join(format!("{TOPIC}-{partition}/leader-epoch-checkpoint"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // Kafka's format: the version, the count, then `epoch start_offset` lines.
    text.lines()
        .skip(2)
        .map(|line| {
            let (epoch, start) = line.split_once(' ').expect("`epoch start_offset`");
            (epoch.parse().expect("an epoch"), start.parse().expect("an offset"))
        })
        .collect()
}

/// The last `PREFIX COUNT` progress line a driver printed (0 before its first).
fn reported(running: &Running, prefix: &str) -> u64 {
    let out = running.stdout_so_far();
    out.lines().filter_map(|l| l.strip_prefix(prefix)?.parse::<u64>().ok()).next_back().unwrap_or(0)
}

/// Asserts that the checker found nothing wrong, that no producer met a fatal error, and that
/// at least `min_acked` values were acknowledged (a run that produced nothing proves nothing).
pub fn assert_clean(check: &serde_json::Value, min_acked: u64) {
    for producer in check["producers"].as_array().expect("the producers' summaries") {
        assert_eq!(producer["fatal"].as_array().map(Vec::len), Some(0), "{check:#}");
    }
    for fault in ["lost", "duplicates", "reordered", "conflicts", "unexpected"] {
        assert_eq!(check[fault], 0, "{fault}: {check:#}");
    }
    let acked = check["acked"].as_u64().unwrap();
    assert!(acked >= min_acked, "only {acked} values acknowledged, wanted {min_acked}: {check:#}");
}

/// Runs the checker's self-test (deliberately broken histories); returns its summary.
pub fn self_test() -> serde_json::Value {
    let mut command = script_command(Clients::Current, SCRIPT);
    command.arg("self-test");
    json_summary("jepsen self-test", super::run_with_deadline(command, b"", Duration::from_secs(60)), String::new)
}
