//! Arbitrary produce payloads through a partition's append: batch validation (lengths,
//! magic, CRC-32C, sizes), then, for what passes, the idempotent-producer checks and the
//! write. Whatever is accepted must read back as valid batches.
//!
//! Input: one mode byte, then the records. An odd mode byte has every batch's CRC fixed
//! first, so that mutations reach the checks behind the checksum.
#![no_main]

mod common;

use std::cell::RefCell;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice::partition::Partition;
use sluice::runtime::file::Driver;
use sluice::storage::batch::{CRC_FROM, HEADER_LEN, LOG_OVERHEAD, validate_all};

/// Appends before the partition starts over in a fresh directory, bounding its size.
const APPENDS_PER_PARTITION: u32 = 5_000;

struct Current {
    partition: Partition,
    appends: u32,
    _dir: tempfile::TempDir,
    /// The executor appends run on; the partition's files are on its ring, so it is dropped
    /// after them (fields drop in order).
    driver: Driver,
}

thread_local! {
    static CURRENT: RefCell<Option<Current>> = const { RefCell::new(None) };
}

fn fresh() -> Current {
    let dir = common::temp_dir();
    let partition = Partition::open(
        &sluice::storage::fs::os(),
        dir.path(),
        common::log_config(),
        common::producer_expiry(),
        0,
        false,
        Default::default(),
    )
    .expect("opening a new partition");
    Current { partition, appends: 0, _dir: dir, driver: Driver::new() }
}

/// Recomputes the CRC-32C of each batch that `records` frames whole.
fn fix_crcs(records: &mut [u8]) {
    let mut position = 0;
    while position + HEADER_LEN <= records.len() {
        let length = i32::from_be_bytes(records[position + 8..position + 12].try_into().unwrap());
        let Some(size) = usize::try_from(length).ok().map(|l| l + LOG_OVERHEAD) else { break };
        if size < HEADER_LEN || position + size > records.len() {
            break;
        }
        let crc = crc32c::crc32c(&records[position + CRC_FROM..position + size]);
        records[position + 17..position + 21].copy_from_slice(&crc.to_be_bytes());
        position += size;
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, records)) = data.split_first() else { return };
    let mut records = records.to_vec();
    if mode & 1 == 1 {
        fix_crcs(&mut records);
    }
    CURRENT.with(|current| {
        let mut current = current.borrow_mut();
        if current.as_ref().is_none_or(|c| c.appends >= APPENDS_PER_PARTITION) {
            *current = None;
            *current = Some(fresh());
        }
        let current = current.as_mut().expect("set above");
        current.appends += 1;
        let partition = &current.partition;
        let append = async { partition.append(Bytes::from(records), sluice::runtime::now_ms()).await };
        let Ok(info) = current.driver.block_on(append) else { return };
        // The most a fetch can ask for.
        let read = current.partition.read(info.base_offset, i32::MAX as usize).expect("reading what was appended");
        validate_all(&read, &common::stored_batch()).expect("what was appended reads back as valid batches");
    });
});
