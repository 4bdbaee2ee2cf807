//! kafka-python, as the seed tutorials use it: unkeyed messages spread over partitions, keyed
//! ones stick to one, a JSON serializer and gzip round-trip, a consumer from the earliest
//! offset sees every record with its topic, partition, offset, key and value.

mod common;

use std::time::Duration;

use common::{Broker, Clients, driver_with};

fn tutorial(clients: Clients) {
    let broker = Broker::start(2, &[]);
    let summary = driver_with(clients, &broker, "kafka_python_tutorial", &[], Duration::from_secs(240));
    assert!(summary["plain_partitions"].as_array().unwrap().len() > 1, "{summary}");
    assert_eq!(summary["keys"], 10);
    assert_eq!(summary["json"], 50);
    assert_eq!(summary["gzip"], 300);
}

#[test]
fn seed_tutorial_scenarios() {
    tutorial(Clients::Current);
}

/// kafka-python 2.0.2, as Linux distributions package it, negotiates older API versions.
#[test]
fn seed_tutorial_scenarios_with_an_older_client() {
    tutorial(Clients::Old);
}
