//! Durability against the real binary: `write.caching=false` answers a produce only once an
//! fsync covers it, concurrent producers share fsyncs (group commit, seen in `/metrics`), and
//! the mode is reported by DescribeConfigs and changed live by IncrementalAlterConfigs.

mod common;

use common::{Broker, Raw, batch, metric_total};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::{DescribeConfigsRequest, IncrementalAlterConfigsRequest};
use kafka_protocol::protocol::StrBytes;

const TOPIC_RESOURCE: i8 = 2;
/// DescribeConfigs' source of a config set on the topic itself.
const DYNAMIC_TOPIC_CONFIG: i8 = 1;
const DEFAULT_CONFIG: i8 = 5;

fn string(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// `write.caching` of `topic` as DescribeConfigs reports it: (value, source).
fn described(raw: &mut Raw, topic: &str) -> (String, i8) {
    let request = DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(TOPIC_RESOURCE)
            .with_resource_name(string(topic))
            .with_configuration_keys(Some(vec![string("write.caching")])),
    ]);
    let result = raw.send(&request, 4).results[0].clone();
    assert_eq!(result.error_code, 0);
    let config = &result.configs[0];
    (config.value.as_ref().map(|v| v.to_string()).unwrap_or_default(), config.config_source)
}

fn set_write_caching(raw: &mut Raw, topic: &str, value: &str) -> i16 {
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(TOPIC_RESOURCE)
            .with_resource_name(string(topic))
            .with_configs(vec![
                AlterableConfig::default()
                    .with_name(string("write.caching"))
                    .with_config_operation(0)
                    .with_value(Some(string(value))),
            ]),
    ]);
    raw.send(&request, 1).responses[0].error_code
}

fn fsyncs(broker: &Broker) -> (f64, f64) {
    (metric_total(broker, "sluice_fsyncs_total"), metric_total(broker, "sluice_fsync_covered_appends_total"))
}

#[test]
fn write_caching_off_answers_after_the_covering_fsync_and_producers_share_fsyncs() {
    const PRODUCERS: usize = 8;
    const PRODUCES_EACH: usize = 25;
    let broker = Broker::start(1, &[]);
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(raw.create_topic("durable", 1, &[("write.caching", "false")]), 0);
    assert_eq!(raw.create_topic("cached", 1, &[]), 0);
    assert_eq!(described(&mut raw, "durable"), ("false".to_string(), DYNAMIC_TOPIC_CONFIG));
    assert_eq!(described(&mut raw, "cached"), ("true".to_string(), DEFAULT_CONFIG));
    assert_eq!(set_write_caching(&mut raw, "cached", "sometimes"), 40, "INVALID_CONFIG");

    // The default caches writes: acknowledged without an fsync.
    assert_eq!(raw.produce("cached", 0, batch(&[b"fast"]), 1).0, 0);
    assert_eq!(fsyncs(&broker), (0.0, 0.0));

    let (fsyncs_before, _) = fsyncs(&broker);
    std::thread::scope(|scope| {
        for _ in 0..PRODUCERS {
            scope.spawn(|| {
                let mut producer = Raw::connect(broker.addr());
                for _ in 0..PRODUCES_EACH {
                    assert_eq!(producer.produce("durable", 0, batch(&[b"kept"]), -1).0, 0);
                }
            });
        }
    });
    let (fsyncs_after, covered) = fsyncs(&broker);
    let appends = (PRODUCERS * PRODUCES_EACH) as f64;
    // Every acknowledgement was counted when the fsync covering it completed.
    assert_eq!(covered, appends);
    let issued = fsyncs_after - fsyncs_before;
    eprintln!("{appends} concurrent durable appends took {issued} fsyncs");
    assert!(issued < appends, "group commit: {issued} fsyncs for {appends} appends");

    // Changed live: the topic caches writes again.
    assert_eq!(set_write_caching(&mut raw, "durable", "true"), 0);
    assert_eq!(described(&mut raw, "durable").0, "true");
    assert_eq!(raw.produce("durable", 0, batch(&[b"cached now"]), -1).0, 0);
    assert_eq!(fsyncs(&broker), (fsyncs_after, covered));
}
