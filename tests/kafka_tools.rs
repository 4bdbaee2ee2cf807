//! Kafka's own command-line tools (4.4, run through their main classes from the Maven jars that
//! `scripts/test` puts on the Java driver's classpath) against the real broker: kafka-topics,
//! kafka-console-producer and -consumer, kafka-consumer-groups (describe with lag, reset
//! offsets), kafka-configs, kafka-delete-records, kafka-reassign-partitions (execute, list,
//! verify, cancel), and the producer and consumer perf tests.

mod common;

use std::time::Duration;

use common::{Broker, java_command, run_with_deadline, serial};

const DEADLINE: Duration = Duration::from_secs(120);

/// Runs a tool's main class with `args`, feeding `stdin`; panics unless it succeeds. Returns
/// its stdout.
fn tool(broker: &Broker, main_class: &str, args: &[&str], stdin: &str) -> String {
    let mut command = java_command(main_class);
    command.args(args);
    let (ok, out, err) = run_with_deadline(command, stdin.as_bytes(), DEADLINE);
    assert!(
        ok,
        "{main_class} {args:?} failed\nstdout:\n{out}\nstderr:\n{err}\nbroker stderr:\n{}",
        broker.stderr_text()
    );
    out
}

const TOPICS: &str = "org.apache.kafka.tools.TopicCommand";
const PRODUCER: &str = "org.apache.kafka.tools.ConsoleProducer";
const CONSUMER: &str = "org.apache.kafka.tools.consumer.ConsoleConsumer";
const GROUPS: &str = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand";
const CONFIGS: &str = "org.apache.kafka.tools.ConfigCommand";
const DELETE_RECORDS: &str = "org.apache.kafka.tools.DeleteRecordsCommand";

/// The rows of `kafka-consumer-groups --describe` for `topic`: (partition, current offset,
/// log end offset, lag), sorted by partition.
fn group_rows(out: &str, topic: &str) -> Vec<(i32, i64, i64, i64)> {
    let mut rows: Vec<(i32, i64, i64, i64)> = out
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|fields| fields.get(1) == Some(&topic))
        .map(|f| {
            let number = |s: &str| s.parse::<i64>().unwrap_or(-1);
            (f[2].parse().unwrap(), number(f[3]), number(f[4]), number(f[5]))
        })
        .collect();
    rows.sort();
    rows
}

#[test]
fn topics_console_clients_groups_configs_and_delete_records() {
    let _serial = serial();
    let broker = Broker::start(2, &[]);
    let bootstrap = broker.addr();
    let server = ["--bootstrap-server", bootstrap];

    // kafka-topics: create, list, describe, add partitions.
    let out =
        tool(&broker, TOPICS, &[&server[..], &["--create", "--topic", "tools", "--partitions", "2"]].concat(), "");
    assert!(out.contains("Created topic tools."), "{out}");
    let out = tool(&broker, TOPICS, &[&server[..], &["--list", "--exclude-internal"]].concat(), "");
    assert_eq!(out.lines().collect::<Vec<_>>(), ["tools"], "__consumer_offsets is internal: {out}");
    let out = tool(&broker, TOPICS, &[&server[..], &["--alter", "--topic", "tools", "--partitions", "3"]].concat(), "");
    assert!(!out.contains("Error"), "{out}");
    let out = tool(&broker, TOPICS, &[&server[..], &["--describe", "--topic", "tools"]].concat(), "");
    assert!(out.contains("PartitionCount: 3"), "{out}");
    assert_eq!(out.matches("Leader: ").count(), 3, "{out}");

    // kafka-console-producer: keyed lines; the consumer prints them back.
    let lines: String = (0..300).map(|i| format!("k{}:value-{i}\n", i % 7)).collect();
    let keyed = ["--property", "parse.key=true", "--property", "key.separator=:"];
    tool(&broker, PRODUCER, &[&server[..], &["--topic", "tools"], &keyed[..]].concat(), &lines);
    let out = tool(
        &broker,
        CONSUMER,
        &[&server[..], &["--topic", "tools", "--from-beginning", "--max-messages", "300", "--group", "tools-group"]]
            .concat(),
        "",
    );
    let mut values: Vec<&str> = out.lines().collect();
    values.sort_by_key(|v| v.trim_start_matches("value-").parse::<u32>().unwrap_or(u32::MAX));
    let expected: Vec<String> = (0..300).map(|i| format!("value-{i}")).collect();
    assert_eq!(values, expected, "{out}");

    // kafka-consumer-groups: the group committed what it read; reset it to the earliest offsets.
    let out = tool(&broker, GROUPS, &[&server[..], &["--list"]].concat(), "");
    assert!(out.lines().any(|l| l == "tools-group"), "{out}");
    let describe = [&server[..], &["--describe", "--group", "tools-group"]].concat();
    let out = tool(&broker, GROUPS, &describe, "");
    let rows = group_rows(&out, "tools");
    assert_eq!(rows.len(), 3, "{out}");
    assert_eq!(rows.iter().map(|r| r.2).sum::<i64>(), 300, "log end offsets: {out}");
    assert!(rows.iter().all(|&(_, current, end, lag)| current == end && lag == 0), "{out}");
    let out = tool(
        &broker,
        GROUPS,
        &[
            &server[..],
            &["--reset-offsets", "--group", "tools-group", "--topic", "tools", "--to-earliest", "--execute"],
        ]
        .concat(),
        "",
    );
    assert_eq!(out.lines().filter(|l| l.contains("tools")).count(), 3, "{out}");
    let out = tool(&broker, GROUPS, &describe, "");
    let rows = group_rows(&out, "tools");
    assert!(rows.iter().all(|&(_, current, end, lag)| current == 0 && lag == end), "{out}");

    // kafka-delete-records: the log start moves; the group's lag shrinks accordingly.
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("offsets.json");
    std::fs::write(&json, r#"{"partitions":[{"topic":"tools","partition":0,"offset":5}],"version":1}"#).unwrap();
    let out =
        tool(&broker, DELETE_RECORDS, &[&server[..], &["--offset-json-file", json.to_str().unwrap()]].concat(), "");
    assert!(out.contains("partition: tools-0\tlow_watermark: 5"), "{out}");

    // kafka-configs: set, describe, delete a topic config.
    let topic_entity = ["--entity-type", "topics", "--entity-name", "tools"];
    let out = tool(
        &broker,
        CONFIGS,
        &[&server[..], &topic_entity[..], &["--alter", "--add-config", "retention.ms=86400000"]].concat(),
        "",
    );
    assert!(out.contains("Completed updating config"), "{out}");
    let out = tool(&broker, CONFIGS, &[&server[..], &topic_entity[..], &["--describe"]].concat(), "");
    assert!(out.contains("retention.ms=86400000"), "{out}");
    let out = tool(
        &broker,
        CONFIGS,
        &[&server[..], &topic_entity[..], &["--alter", "--delete-config", "retention.ms"]].concat(),
        "",
    );
    assert!(out.contains("Completed updating config"), "{out}");
    let out = tool(&broker, CONFIGS, &[&server[..], &topic_entity[..], &["--describe"]].concat(), "");
    assert!(!out.contains("retention.ms="), "{out}");

    // kafka-topics --delete.
    tool(&broker, TOPICS, &[&server[..], &["--delete", "--topic", "tools"]].concat(), "");
    let out = tool(&broker, TOPICS, &[&server[..], &["--list", "--exclude-internal"]].concat(), "");
    assert_eq!(out.trim(), "", "{out}");
}

#[test]
fn producer_and_consumer_perf_tests() {
    let _serial = serial();
    let broker = Broker::start(2, &[]);
    let bootstrap = broker.addr();
    tool(&broker, TOPICS, &["--bootstrap-server", bootstrap, "--create", "--topic", "perf", "--partitions", "3"], "");
    let props = format!("bootstrap.servers={bootstrap}");
    let out = tool(
        &broker,
        "org.apache.kafka.tools.ProducerPerformance",
        &["--topic", "perf", "--num-records", "200000", "--record-size", "100", "--throughput", "-1"]
            .into_iter()
            .chain(["--producer-props", &props, "acks=all"])
            .collect::<Vec<_>>(),
        "",
    );
    let summary = out.lines().last().unwrap_or_default();
    assert!(summary.starts_with("200000 records sent,"), "{out}");
    let out = tool(
        &broker,
        "org.apache.kafka.tools.ConsumerPerformance",
        &["--bootstrap-server", bootstrap, "--topic", "perf", "--messages", "200000"],
        "",
    );
    // A header line, then: start.time, end.time, data.consumed.in.MB, MB.sec,
    // data.consumed.in.nMsg, ...
    let fields: Vec<&str> = out.lines().last().unwrap_or_default().split(", ").collect();
    assert_eq!(fields.get(4).map(|n| n.trim()), Some("200000"), "{out}");
}

const REASSIGN: &str = "org.apache.kafka.tools.reassign.ReassignPartitionsCommand";

#[test]
fn kafka_reassign_partitions_starts_lists_verifies_and_cancels_a_move() {
    let _serial = serial();
    // A killed broker stays registered and unfenced through the test.
    let mut cluster = common::cluster::Cluster::start(3, 1, &["--set", "broker.session.timeout.ms=60000"]);
    cluster.create_topic(0, "moved", 1, Duration::from_secs(30));
    cluster.wait_for_every_broker(Duration::from_secs(10));
    let controller = cluster.quorum_leader(&[0, 1, 2], Duration::from_secs(10));
    let leader = |out: &str| -> i32 {
        let id = out.split("Leader: ").nth(1).and_then(|rest| rest.split_whitespace().next());
        id.and_then(|id| id.parse().ok()).unwrap_or_else(|| panic!("{out}"))
    };
    let bootstrap = cluster.node(controller).addr().to_string();
    let server = ["--bootstrap-server", bootstrap.as_str()];
    let out = tool(cluster.node(controller), TOPICS, &[&server[..], &["--describe", "--topic", "moved"]].concat(), "");
    let leader = leader(&out);
    // The move goes to a killed broker (neither the partition's leader nor the controller), so
    // that it stays in progress: it cannot catch up.
    let killed = (0..3).find(|&i| i as i32 + 1 != leader && i != controller).unwrap();
    let other = killed as i32 + 1;
    cluster.node_mut(killed).kill9();
    let broker = cluster.node(controller);
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.json");
    std::fs::write(
        &plan,
        format!(r#"{{"version":1,"partitions":[{{"topic":"moved","partition":0,"replicas":[{other}]}}]}}"#),
    )
    .unwrap();
    let plan = plan.to_str().unwrap();
    let with_plan = [&server[..], &["--reassignment-json-file", plan]].concat();

    let out = tool(broker, REASSIGN, &[&with_plan[..], &["--execute"]].concat(), "");
    assert!(out.contains("Successfully started partition reassignment for moved-0"), "{out}");
    let out = tool(broker, REASSIGN, &[&server[..], &["--list"]].concat(), "");
    assert!(
        out.contains(&format!("moved-0: replicas: {other},{leader}. adding: {other}. removing: {leader}.")),
        "{out}"
    );
    let out = tool(broker, REASSIGN, &[&with_plan[..], &["--verify", "--preserve-throttles"]].concat(), "");
    assert!(out.contains("Reassignment of partition moved-0 is still in progress."), "{out}");
    let out = tool(broker, REASSIGN, &[&with_plan[..], &["--cancel", "--preserve-throttles"]].concat(), "");
    assert!(out.contains("Successfully cancelled partition reassignment for: moved-0"), "{out}");
    let out = tool(broker, REASSIGN, &[&server[..], &["--list"]].concat(), "");
    assert!(out.contains("No partition reassignments found."), "{out}");
}
