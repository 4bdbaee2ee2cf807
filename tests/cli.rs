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
