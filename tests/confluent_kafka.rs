//! confluent-kafka (librdkafka): 100,000 records per codec (lz4, snappy, zstd) over six
//! partitions, all read back in order with contiguous offsets; admin create, list, delete.

mod common;

use std::time::Duration;

use common::{Broker, driver};

#[test]
fn compressed_streams_round_trip_and_admin_works() {
    let broker = Broker::start(2, &[]);
    let summary = driver(&broker, "confluent_codecs", &["--records", "100000"], Duration::from_secs(600));
    for codec in ["lz4", "snappy", "zstd"] {
        let per_partition = summary[codec].as_object().unwrap();
        assert_eq!(per_partition.len(), 6, "{summary}");
        let total: u64 = per_partition.values().map(|n| n.as_u64().unwrap()).sum();
        assert_eq!(total, 100_000, "{codec}: {summary}");
    }
}
