//! Arbitrary segment files through a log's opening: after a crash (every batch CRC-checked,
//! a torn or corrupt tail cut off, indexes rebuilt) or after a clean stop (indexes trusted).
//! Opening may refuse, but never panic; a recovered log reads back only whole, CRC-valid
//! batches and takes new appends.
//!
//! Input: flags | index length (u16) | index bytes | log bytes. Flag 1: clean shutdown;
//! 2: write the index bytes as the offset index; 4: as the time index.
#![no_main]

mod common;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice::runtime::file::Driver;
use sluice::storage::{Log, Wait};
use sluice::storage::batch::{BatchHeader, validate};

/// Reads at most this many times, so a log of tiny batches stays quick.
const READS_MAX: usize = 1_000;

thread_local! {
    /// The executor appends run on, kept across inputs (starting one costs more than a run).
    static DRIVER: Driver = Driver::new();
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let clean_shutdown = flags & 1 == 1;
    let (index, log_bytes) = match rest {
        [high, low, rest @ ..] => rest.split_at(usize::from(u16::from_be_bytes([*high, *low])).min(rest.len())),
        _ => (&[][..], rest),
    };
    let dir = common::temp_dir();
    let base = dir.path().join("00000000000000000000");
    std::fs::write(base.with_extension("log"), log_bytes).unwrap();
    if flags & 2 == 2 {
        std::fs::write(base.with_extension("index"), index).unwrap();
    }
    if flags & 4 == 4 {
        std::fs::write(base.with_extension("timeindex"), index).unwrap();
    }

    let Ok(mut log) = Log::open(&sluice::storage::fs::os(), dir.path(), common::log_config(), clean_shutdown) else {
        return;
    };
    let _ = log.offset_for_timestamp(0, Wait::Yes);
    let _ = log.max_timestamp_offset(Wait::Yes);
    let mut offset = log.log_start_offset();
    for _ in 0..READS_MAX {
        let Ok(bytes) = log.read(offset, 1 << 20, log.log_end_offset(), Wait::Yes) else { break };
        if bytes.is_empty() {
            break;
        }
        // Recovery checks framing and CRC (record contents are the producer's, checked on
        // append): every batch read back from a recovered log passes those.
        let mut last = None;
        let mut rest = &bytes[..];
        while let Ok(header) = BatchHeader::parse(rest) {
            let size = header.size().min(rest.len());
            if !clean_shutdown {
                validate(&rest[..size]).expect("a recovered log holds only whole batches with their CRC");
            }
            last = Some(header.last_offset());
            rest = &rest[size..];
        }
        match last {
            Some(last) if last >= offset => offset = last + 1,
            _ => break,
        }
    }
    let now = sluice::runtime::now_ms();
    let batch = sluice::protocol::records::encode_batch(&[(None, Some(Bytes::from_static(b"after")))], now);
    let appended = DRIVER.with(|driver| driver.block_on(log.append(batch, 0, now)));
    if !clean_shutdown {
        appended.expect("a recovered log takes appends");
    }
});
