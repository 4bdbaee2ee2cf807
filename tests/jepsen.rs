//! The Jepsen-style checker (`tests/driver/jepsen.py`, run through `common::jepsen`) can fail:
//! it finds each fault in deliberately broken histories, and it reports, exactly, the
//! acknowledged records a real broker lost when its log was cut behind its back. Three brokers,
//! each killed and restarted in turn under the workload, lose nothing acknowledged; a consumer
//! group whose coordinator's broker is killed resumes from its commits; a leader paused past
//! its session steps down, truncates and rejoins, losing nothing. (More runs it judges: `idempotence.rs`, `kill -9` and
//! SIGSTOP of one broker; `network_partition.rs`, a broker cut off.)

mod common;

use std::time::Duration;

use common::cluster::{Cluster, FAST_SESSIONS};
use common::jepsen::{self, Workload};
use common::{Broker, Raw};
use kafka_protocol::messages::ProduceRequest;

#[test]
fn the_checker_finds_each_fault_in_broken_histories() {
    let summary = jepsen::self_test();
    assert_eq!(summary["failures"].as_array().map(Vec::len), Some(0), "{summary:#}");
    assert_eq!(summary["cases"], 8);
}

/// Durability broken on purpose, honestly: while the broker is down its segment loses its tail
/// (what a power cut does to writes that never reached the disk), and a second producer then
/// writes new values at the offsets the first one's acknowledged values had. The checker
/// must count every acknowledged value past the cut as lost, and every rewritten offset as a
/// conflict (its acknowledgement, and the following consumer's reads, said otherwise).
#[test]
fn the_checker_reports_what_a_log_cut_behind_the_brokers_back_lost() {
    let _one_at_a_time = common::serial();
    let mut broker = Broker::start(1, &[]);
    assert_eq!(Raw::connect(broker.addr()).create_topic("cut", 1, &[]), 0);
    let high_watermark = |broker: &Broker| Raw::connect(broker.addr()).fetch("cut", 0, 0, 0).1;
    let mut workload = Workload::start(broker.addr(), "cut");
    workload.produce("before", 1000);
    common::wait_until(Duration::from_secs(60), "the first producer had 2000 records acknowledged", || {
        workload.acked() >= 2000
    });
    workload.stop_producers(&|| broker.stderr_text());
    let written = high_watermark(&broker);

    broker.kill9();
    let segment = broker.data_dir().join("cut-0/00000000000000000000.log");
    let length = std::fs::metadata(&segment).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&segment).unwrap().set_len(length / 2).unwrap();
    broker.restart();
    let kept = high_watermark(&broker);
    assert!(0 < kept && kept < written, "recovery kept {kept} of {written}");

    workload.produce("after", 1000);
    common::wait_until(Duration::from_secs(60), "the second producer wrote past the cut", || {
        high_watermark(&broker) >= written
    });
    let check = workload.finish(|| format!("broker stderr:\n{}", broker.stderr_text()));
    println!("recovery kept {kept} of {written} records; checker: {check}");
    let before = &check["producers"][0];
    assert_eq!(before["acked"].as_i64(), Some(written), "{check:#}");
    assert_eq!(check["lost"].as_i64(), Some(written - kept), "{check:#}");
    assert_eq!(check["conflicts"].as_i64(), Some(written - kept), "{check:#}");
    for fault in ["duplicates", "reordered", "unexpected"] {
        assert_eq!(check[fault], 0, "{fault}: {check:#}");
    }
}

/// A test that fails midway drops its workload unfinished: the client processes (and any they
/// started) are killed with it rather than left producing.
#[test]
fn clients_dropped_unfinished_are_killed_with_their_helpers() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let mut command = std::process::Command::new("sh");
    command.arg("-c").arg(format!("sleep 600 & echo $! > {}.tmp && mv {0}.tmp {0}; wait", pid_file.display()));
    let running = common::Running::spawn(command);
    common::wait_until(Duration::from_secs(10), "the helper started", || pid_file.exists());
    let helper = std::fs::read_to_string(&pid_file).unwrap().trim().to_string();
    drop(running);
    // Gone, or a zombie no one reaped yet: either way no longer running.
    common::wait_until(Duration::from_secs(10), "the helper was killed", || {
        std::fs::read_to_string(format!("/proc/{helper}/stat"))
            .map_or(true, |stat| stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')))
    });
}

/// Three brokers, the topic's partitions (one replica each) placed over them, the workload
/// bootstrapped on all three: each broker in turn is killed with SIGKILL and restarted. The
/// clients follow Metadata to each partition's broker and wait out its restart; nothing
/// acknowledged is lost, duplicated or reordered.
#[test]
fn three_brokers_each_killed_in_turn_lose_nothing_acknowledged() {
    let _one_at_a_time = common::serial();
    let mut cluster = Cluster::start(3, 1, &[]);
    cluster.create_topic_everywhere("spread", 6, 1, &[]);
    let mut workload = Workload::start(&cluster.bootstrap(), "spread");
    workload.produce("p", 1000);
    let mut acked = 0;
    for round in 0..=3 {
        common::wait_until(Duration::from_secs(60), "the producer had 1000 more acknowledged", || {
            workload.acked() >= acked + 1000
        });
        acked = workload.acked();
        if round < 3 {
            cluster.node_mut(round).kill9();
            cluster.node_mut(round).restart();
        }
    }
    let check = workload
        .finish(|| (0..3).map(|i| format!("node {} stderr:\n{}", i + 1, cluster.node(i).stderr_text())).collect());
    jepsen::assert_clean(&check, acked);
    assert_eq!(check["acked"], check["produced"], "{check:#}");
}

/// A consumer group reading topic "grouped" of `cluster` under load while its coordinator's
/// broker is killed with SIGKILL and then `after_kill` (given the coordinator's index) runs: the
/// group goes on from its committed offsets (never reading again below an offset it had
/// committed, skipping nothing) and in the end has read every acknowledged value.
fn a_group_through_its_coordinators_kill(cluster: &mut Cluster, after_kill: impl Fn(&mut Cluster, usize)) {
    let mut workload = Workload::start(&cluster.bootstrap(), "grouped");
    workload.produce("p", 500);
    workload.join_group("readers");
    common::wait_until(Duration::from_secs(60), "the group read 1000 records", || workload.consumed() >= 1000);
    let coordinator = cluster.coordinator(0, "readers");
    cluster.node_mut(coordinator).kill9();
    after_kill(cluster, coordinator);
    let before = workload.consumed();
    common::wait_until(Duration::from_secs(60), "the group read 1000 more", || workload.consumed() >= before + 1000);
    let check = workload
        .finish(|| (0..3).map(|i| format!("node {} stderr:\n{}", i + 1, cluster.node(i).stderr_text())).collect());
    println!("coordinator: node {}; {}", coordinator + 1, check["groups"]);
    jepsen::assert_clean(&check, 1000);
    assert_eq!(check["group_missed"], 0, "{check:#}");
    assert_eq!(check["groups"][0]["reread_below_commit"], 0, "{check:#}");
}

/// The coordinator's broker is restarted after its SIGKILL.
#[test]
fn a_consumer_group_resumes_from_its_commits_when_its_coordinators_broker_is_killed() {
    let _one_at_a_time = common::serial();
    let mut cluster = Cluster::start(3, 1, &[]);
    cluster.create_topic_everywhere("grouped", 6, 1, &[]);
    a_group_through_its_coordinators_kill(&mut cluster, |cluster, coordinator| cluster.node_mut(coordinator).restart());
}

/// The topic has three replicas and the coordinator's broker stays down after its SIGKILL:
/// `__consumer_offsets` has three replicas too, so the new leader of the group's offsets
/// partition loads its commits and coordinates.
#[test]
fn a_consumer_group_resumes_from_its_commits_on_a_new_coordinator_when_the_old_ones_broker_stays_down() {
    let _one_at_a_time = common::serial();
    let mut cluster = Cluster::start(3, 1, &FAST_SESSIONS);
    cluster.create_topic_everywhere("grouped", 6, 3, &[]);
    a_group_through_its_coordinators_kill(&mut cluster, |cluster, coordinator| {
        let other = (coordinator + 1) % 3;
        common::wait_until(Duration::from_secs(30), "another broker coordinates", || {
            cluster.coordinator(other, "readers") != coordinator
        });
    });
}

/// Issue 11: a leader paused (SIGSTOP) past its broker session and `replica.lag.time.max.ms`,
/// under the workload over three replicas (`min.insync.replicas=2`), then resumed (SIGCONT).
/// Meanwhile another in-sync replica leads in a newer epoch and takes the producer's writes.
/// An acks=all produce sent to the paused leader waits in its socket: resumed, it reads it
/// while it may still believe it leads, and must not acknowledge it, nor may its values ever
/// be read. It steps down, cuts what of its old epoch no one else had (its epoch history ends
/// as the new leader's), rejoins the ISR, and nothing acknowledged is lost.
#[test]
fn a_leader_paused_past_its_session_steps_down_truncates_and_rejoins_losing_nothing() {
    let _one_at_a_time = common::serial();
    let cluster = Cluster::start(3, 1, &jepsen::fast_failover());
    let (broken, moved) = jepsen::through_a_broker_fault(
        &cluster,
        3,
        &[("min.insync.replicas", "2")],
        |cluster, i| {
            let (request, led) = jepsen::writes_to_what_it_leads(cluster, i, "stale");
            let mut raw = cluster.connect(i);
            cluster.node(i).pause();
            raw.send_only(&request, 9);
            (raw, led)
        },
        |cluster, i, (mut raw, led)| {
            cluster.node(i).resume();
            let response = raw.receive::<ProduceRequest>(9);
            let errors: Vec<i16> = response.responses[0].partition_responses.iter().map(|p| p.error_code).collect();
            assert_eq!(errors.len(), led.len());
            assert!(errors.iter().all(|&e| e != 0), "the resumed leader acknowledged acks=all writes: {errors:?}");
        },
    );
    // Its new leader told it where its log diverged (a fetch past the end of its old epoch
    // there): it had a tail no one else had, and cut it.
    let stderr = cluster.node(broken).stderr_text();
    let truncations: Vec<&str> = stderr.lines().filter(|l| l.contains("truncated a log that diverged")).collect();
    for jepsen::Moved { after, .. } in &moved {
        let partition = format!("partition={} ", after.partition);
        assert!(
            truncations.iter().any(|l| l.contains(&partition)),
            "node {} cut no tail of partition {} it led: {truncations:#?}",
            broken + 1,
            after.partition
        );
    }
}
