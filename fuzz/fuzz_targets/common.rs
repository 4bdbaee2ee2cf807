//! What the targets share: small logs in memory-backed temporary directories.
#![allow(dead_code)] // Each target uses its own subset.

use std::collections::BTreeMap;

use sluice::config::BrokerConfig;
use sluice::storage::LogConfig;
use sluice::storage::batch::Validation;
use sluice::storage::producer_state::ProducerExpiry;

/// Broker defaults, with segments small enough that a fuzzing run rolls them often.
pub fn log_config() -> LogConfig {
    let topic = BTreeMap::from([
        ("segment.bytes".to_string(), "65536".to_string()),
        ("index.interval.bytes".to_string(), "256".to_string()),
    ]);
    BrokerConfig::default().log_config(&topic).expect("valid topic configs")
}

pub fn producer_expiry() -> ProducerExpiry {
    BrokerConfig::default().producer_expiry()
}

/// What every batch in a log must pass, whatever the topic's rules: framing and CRC.
pub fn stored_batch() -> Validation {
    Validation { max_batch_bytes: usize::MAX, compressed_records: false, keys_required: false, timestamps: None }
}

/// A fresh directory, in tmpfs when there is one: each execution writes files.
pub fn temp_dir() -> tempfile::TempDir {
    match std::path::Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm").expect("temp dir in /dev/shm"),
        false => tempfile::tempdir().expect("temp dir"),
    }
}
