//! The `sluice` CLI against a live broker: topic create/list/describe/delete, produce from
//! stdin, consume back.

mod common;

use common::{Broker, cli};

#[test]
fn topic_produce_consume_round_trip() {
    let broker = Broker::start(2, &[]);
    let bootstrap = broker.addr();

    let (ok, out, err) = cli(
        &["topic", "create", "orders", "--partitions", "3", "--config", "flush.messages=1", "--bootstrap", bootstrap],
        "",
    );
    assert!(ok, "{out}{err}");
    let (ok, _, err) = cli(&["topic", "create", "orders", "--bootstrap", bootstrap], "");
    assert!(!ok && err.contains("TopicAlreadyExists"), "{err}");
    let (ok, _, err) = cli(&["topic", "create", "bad", "--config", "no.such.config=1", "--bootstrap", bootstrap], "");
    assert!(!ok && err.contains("InvalidConfig"), "{err}");

    let (ok, out, _) = cli(&["topic", "list", "--bootstrap", bootstrap], "");
    assert!(ok);
    // Like Kafka's tools, the list shows the internal offsets topic too.
    assert_eq!(out.lines().collect::<Vec<_>>(), vec!["__consumer_offsets", "orders"]);

    let (ok, out, _) = cli(&["topic", "describe", "orders", "--bootstrap", bootstrap], "");
    assert!(ok);
    assert!(out.contains("Partitions: 3"), "{out}");
    for p in 0..3 {
        assert!(out.contains(&format!("Partition: {p}\t")), "{out}");
    }

    let lines: String = (0..30).map(|i| format!("user-{}:order-{i}\n", i % 4)).collect();
    let (ok, out, err) = cli(&["produce", "orders", "--key-separator", ":", "--bootstrap", bootstrap], &lines);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = cli(
        &[
            "consume",
            "orders",
            "--from-beginning",
            "--max-messages",
            "30",
            "--print-key",
            "--print-offset",
            "--bootstrap",
            bootstrap,
        ],
        "",
    );
    assert!(ok, "{err}");
    let mut key_partition = std::collections::HashMap::new();
    let mut values = Vec::new();
    let per_partition = |p: usize| out.lines().filter(|l| l.starts_with(&format!("{p}:"))).count();
    let busiest = (0..3).max_by_key(|&p| per_partition(p)).unwrap();
    let in_busiest = per_partition(busiest);
    for line in out.lines() {
        let (position, rest) = line.split_once('\t').unwrap();
        let (key, value) = rest.split_once('\t').unwrap();
        let partition = position.split_once(':').unwrap().0.to_string();
        assert_eq!(
            key_partition.entry(key.to_string()).or_insert(partition.clone()),
            &partition,
            "{key} in two partitions"
        );
        values.push(value.to_string());
    }
    values.sort();
    let mut expected: Vec<String> = (0..30).map(|i| format!("order-{i}")).collect();
    expected.sort();
    assert_eq!(values, expected);

    // One partition from an offset; --timeout-ms ends the read when nothing more comes.
    let busiest = busiest.to_string();
    let (ok, out, err) = cli(
        &[
            "consume",
            "orders",
            "--partition",
            &busiest,
            "--offset",
            "1",
            "--timeout-ms",
            "500",
            "--bootstrap",
            bootstrap,
        ],
        "",
    );
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), in_busiest - 1, "{out}");

    let (ok, _, err) =
        cli(&["produce", "orders", "--key-separator", ":", "--bootstrap", bootstrap], "no separator here\n");
    assert!(!ok && err.contains("line 1"), "{err}");

    let (ok, out, err) = cli(&["topic", "delete", "orders", "--bootstrap", bootstrap], "");
    assert!(ok, "{out}{err}");
    let (ok, out, _) = cli(&["topic", "list", "--bootstrap", bootstrap], "");
    assert!(ok && out.lines().eq(["__consumer_offsets"]), "{out}");
    let (ok, _, err) = cli(&["topic", "delete", "orders", "--bootstrap", bootstrap], "");
    assert!(!ok && err.contains("UnknownTopicOrPartition"), "{err}");
}

#[test]
fn topic_admin_commands_grow_configure_trim_and_describe() {
    let broker = Broker::start(2, &[]);
    let bootstrap = broker.addr();
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--bootstrap", bootstrap]);
        cli(&all, "")
    };
    assert!(run(&["topic", "create", "logs"]).0);
    let (ok, out, err) = run(&["topic", "alter", "logs", "--partitions", "3"]);
    assert!(ok, "{out}{err}");
    let (ok, _, err) = run(&["topic", "alter", "logs", "--partitions", "2"]);
    assert!(!ok && err.contains("InvalidPartitions"), "{err}");

    let (ok, out, err) = run(&["topic", "config", "set", "logs", "retention.ms=3600000", "segment.bytes=100000"]);
    assert!(ok, "{out}{err}");
    let (ok, _, err) = run(&["topic", "config", "set", "logs", "segment.jitter.ms=5"]);
    assert!(!ok && err.contains("InvalidConfig"), "{err}");
    let (ok, out, _) = run(&["topic", "describe", "logs"]);
    assert!(ok);
    assert!(out.contains("Partitions: 3\tConfigs: retention.ms=3600000,segment.bytes=100000\n"), "{out}");
    let (_, out, _) = run(&["topic", "config", "get", "logs", "retention.ms"]);
    assert_eq!(out, "retention.ms=3600000\t(DYNAMIC_TOPIC_CONFIG)\n");
    assert!(run(&["topic", "config", "delete", "logs", "retention.ms"]).0);
    let (_, out, _) = run(&["topic", "config", "get", "logs", "retention.ms", "cleanup.policy"]);
    assert_eq!(out, "cleanup.policy=delete\t(DEFAULT_CONFIG)\nretention.ms=604800000\t(DEFAULT_CONFIG)\n");

    let lines: String = (0..10).map(|i| format!("record-{i}\n")).collect();
    let (ok, out, err) = cli(&["produce", "logs", "--partition", "2", "--bootstrap", bootstrap], &lines);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = run(&["topic", "delete-records", "logs", "--partition", "2", "--before-offset", "4"]);
    assert!(ok && out.contains("now starts at offset 4"), "{out}{err}");
    assert_eq!(common::Raw::connect(bootstrap).fetch("logs", 2, 3, 0).0, 1, "OFFSET_OUT_OF_RANGE below the start");

    let (ok, out, err) = run(&["cluster", "describe"]);
    assert!(ok, "{err}");
    assert!(out.contains("Broker: 0\t127.0.0.1:") && out.contains("Controller: 0"), "{out}");
    let size: u64 = std::fs::metadata(broker.data_dir().join("logs-2/00000000000000000000.log")).unwrap().len();
    assert!(size > 0 && out.contains(&format!("\tlogs-2\t{size}\n")), "{out}");
    assert!(out.contains("Log dir: "), "{out}");
}
