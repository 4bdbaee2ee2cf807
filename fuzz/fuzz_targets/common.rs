//! What the targets share: small logs in memory-backed temporary directories.

use std::collections::BTreeMap;

use sluice::config::BrokerConfig;
use sluice::storage::LogConfig;

/// Broker defaults, with segments small enough that a fuzzing run rolls them often.
pub fn log_config() -> LogConfig {
    let topic = BTreeMap::from([
        ("segment.bytes".to_string(), "65536".to_string()),
        ("index.interval.bytes".to_string(), "256".to_string()),
    ]);
    BrokerConfig::default().log_config(&topic).expect("valid topic configs")
}

/// A fresh directory, in tmpfs when there is one: each execution writes files.
pub fn temp_dir() -> tempfile::TempDir {
    match std::path::Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm").expect("temp dir in /dev/shm"),
        false => tempfile::tempdir().expect("temp dir"),
    }
}
