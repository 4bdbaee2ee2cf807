//! Power loss: the real partition and storage code, appending with `flush.messages=1` or
//! `write.caching=false` over the simulated disk, loses power at hundreds of seeded points (between appends and in the middle
//! of any file operation), recovers, and goes on; several times per seed.
//!
//! After every cut: every acknowledged record is there, byte for byte; offsets are contiguous
//! from 0; nothing is returned that was not written, in the order it was written; and the log
//! ends where its last surviving batch ends. A second test cuts the power in the middle of a
//! truncation (`truncation_survives_every_power_cut`). A failure names its seed; set
//! `SLUICE_POWER_LOSS_SEED` to replay that one alone.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use super::LogConfig;
use super::batch::{BatchHeader, HEADER_LEN, validate};
use super::fs::FileSystem;
use super::fs::simulated::{Rng, SimDisk};
use super::producer_state::ProducerExpiry;
use crate::partition::Partition;

const SEEDS: u64 = 300;
const SEED_VARIABLE: &str = "SLUICE_POWER_LOSS_SEED";
/// Power cuts per seed, each followed by recovery.
const CUTS: usize = 4;
const APPENDS_PER_RUN_MAX: usize = 100;
const NOW_MS: i64 = 1_700_000_000_000;
const EXPIRY: ProducerExpiry = ProducerExpiry { expiration_ms: i64::MAX, check_interval_ms: i64::MAX };

fn config(rng: &mut Rng) -> LogConfig {
    // Either way every acknowledged append is durable: by the flush policy, or by
    // `write.caching=false`.
    let flush_each_message = rng.coin();
    LogConfig {
        // Small segments and indexes, so that rolls and index entries happen all the time.
        segment_bytes: rng.below(1024, 32 * 1024),
        index_interval_bytes: rng.below(64, 8192) as u32,
        flush_messages: flush_each_message.then_some(1),
        write_caching: flush_each_message,
        delete: false,
        ..super::log::tests::config()
    }
}

/// A batch of 1 to 5 records of up to 2000 bytes each, its content drawn from `rng`.
fn random_batch(rng: &mut Rng) -> Bytes {
    let records: Vec<(Option<Bytes>, Option<Bytes>)> = (0..rng.below(1, 6))
        .map(|_| {
            let fill = rng.next_u64() as u8;
            let value: Vec<u8> = (0..rng.below(0, 2000)).map(|i| fill.wrapping_add(i as u8)).collect();
            (None, Some(Bytes::from(value)))
        })
        .collect();
    crate::protocol::records::encode_batch(&records, NOW_MS)
}

fn record_count(batch: &[u8]) -> i64 {
    BatchHeader::parse(batch).expect("a batch we encoded").offset_count()
}

/// Reads the whole partition and checks it against `written` (every batch appended, in order)
/// of which the first `acknowledged` were acknowledged. Returns how many batches survived.
fn check(partition: &Partition, written: &[Bytes], acknowledged: usize) -> Result<usize, String> {
    if partition.log_start_offset() != 0 {
        return Err(format!("log start offset {}", partition.log_start_offset()));
    }
    let end = partition.log_end_offset();
    let mut offset = 0;
    let mut survived = 0;
    while offset < end {
        let bytes = partition.read(offset, 1 << 20).map_err(|e| format!("read at {offset}: {e}"))?;
        if bytes.is_empty() {
            return Err(format!("nothing read at {offset}, below the log end {end}"));
        }
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let header = validate(&rest[..BatchHeader::parse(rest).map_err(|e| e.to_string())?.size().min(rest.len())])
                .map_err(|e| format!("batch at offset {offset}: {e}"))?;
            if header.base_offset != offset {
                return Err(format!("offsets not contiguous: batch at {} after offset {offset}", header.base_offset));
            }
            let Some(sent) = written.get(survived) else {
                return Err(format!("batch {survived} at offset {offset} was never written"));
            };
            if rest[HEADER_LEN..header.size()] != sent[HEADER_LEN..] {
                return Err(format!("batch {survived} at offset {offset} is not what was written"));
            }
            offset = header.last_offset() + 1;
            survived += 1;
            rest = &rest[header.size()..];
        }
    }
    if offset != end {
        return Err(format!("the last batch ends at {offset}, the log at {end}"));
    }
    if survived < acknowledged {
        return Err(format!(
            "{} acknowledged batches lost ({survived} of {acknowledged} survived)",
            acknowledged - survived
        ));
    }
    let beyond = partition.read(end, 1 << 20).map_err(|e| format!("read at the log end: {e}"))?;
    if !beyond.is_empty() {
        return Err(format!("{} bytes returned past the log end {end}", beyond.len()));
    }
    Ok(survived)
}

fn run(seed: u64) -> Result<(), String> {
    crate::runtime::file::block_on(run_on_shard(seed))
}

async fn run_on_shard(seed: u64) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    let disk = SimDisk::new();
    let fs: Arc<dyn FileSystem> = disk.clone();
    // The data directory exists, durably, before any partition is made (as `serve` does).
    fs.create_dir_all(Path::new("/data")).map_err(|e| e.to_string())?;
    fs.sync_dir(Path::new("/")).map_err(|e| e.to_string())?;
    let dir = Path::new("/data/topic-0");
    let config = config(&mut rng);
    let mut written: Vec<Bytes> = Vec::new();
    let mut acknowledged = 0;
    let mut clean = false;
    for cut in 0..=CUTS {
        let partition = Partition::open(&fs, dir, config.clone(), EXPIRY, 0, clean, Default::default())
            .map_err(|e| format!("recovery after cut {cut} failed: {e}"))?;
        let survived = check(&partition, &written, acknowledged).map_err(|e| format!("after cut {cut}: {e}"))?;
        written.truncate(survived);
        acknowledged = survived;
        if cut == CUTS {
            return Ok(());
        }

        // The disk dies at a random operation from now on (or never, during this run).
        disk.fail_after(rng.below(0, 600));
        let mut expected_offset: i64 = written.iter().map(|b| record_count(b)).sum();
        for _ in 0..rng.below(1, APPENDS_PER_RUN_MAX as u64) {
            let batch = random_batch(&mut rng);
            written.push(batch.clone());
            match partition.append(batch, NOW_MS).await {
                Ok(info) => {
                    if info.base_offset != expected_offset {
                        return Err(format!("append got offset {} instead of {expected_offset}", info.base_offset));
                    }
                    expected_offset = info.last_offset + 1;
                    acknowledged = written.len();
                }
                Err(_) => break,
            }
        }
        // Sometimes a clean shutdown comes first; it counts only if it succeeded.
        clean = rng.coin() && partition.close().await.is_ok();
        disk.power_cut(rng.next_u64());
    }
    unreachable!("the last cut returns")
}

#[test]
fn acknowledged_records_survive_every_power_cut() {
    for_every_seed(run);
}

/// Runs `run` for every seed, or for `SLUICE_POWER_LOSS_SEED` alone; a failure names its seed.
fn for_every_seed(run: fn(u64) -> Result<(), String>) {
    let seeds: Vec<u64> = match std::env::var(SEED_VARIABLE) {
        Ok(seed) => vec![seed.parse().expect("a seed is a number")],
        Err(_) => (0..SEEDS).collect(),
    };
    for seed in seeds {
        let outcome = std::panic::catch_unwind(|| run(seed));
        let failure = match outcome {
            Ok(Ok(())) => continue,
            Ok(Err(message)) => message,
            Err(panic) => panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default(),
        };
        panic!("power-loss seed {seed} failed: {failure}\nreplay it with {SEED_VARIABLE}={seed}");
    }
}

/// Truncation (`Partition::truncate_to`, a follower cutting a divergent tail) loses power in
/// the middle of any of its file operations, or after it returned. After recovery the log is
/// a prefix of what was written, at least up to the cut and, if the truncation returned, exactly
/// up to it; every surviving batch's leader epoch is what the epoch cache says for its offset;
/// and the log takes appends at its end.
#[test]
fn truncation_survives_every_power_cut() {
    for_every_seed(run_truncation);
}

fn run_truncation(seed: u64) -> Result<(), String> {
    crate::runtime::file::block_on(truncate_on_shard(seed))
}

async fn truncate_on_shard(seed: u64) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    let disk = SimDisk::new();
    let fs: Arc<dyn FileSystem> = disk.clone();
    fs.create_dir_all(Path::new("/data")).map_err(|e| e.to_string())?;
    fs.sync_dir(Path::new("/")).map_err(|e| e.to_string())?;
    let dir = Path::new("/data/topic-0");
    let config = config(&mut rng);
    let mut epoch = 0;
    let partition = Partition::open(&fs, dir, config.clone(), EXPIRY, epoch, false, Default::default())
        .map_err(|e| format!("open: {e}"))?;
    // (batch, offset after it) for every batch written, all acknowledged.
    let mut written: Vec<(Bytes, i64)> = Vec::new();
    for _ in 0..rng.below(1, 60) {
        if rng.below(0, 5) == 0 {
            epoch += 1;
            partition.set_leadership(epoch, true);
        }
        let batch = random_batch(&mut rng);
        let info = partition.append(batch.clone(), NOW_MS).await.map_err(|e| format!("append: {e}"))?;
        written.push((batch, info.last_offset + 1));
    }
    let log_end_offset = partition.log_end_offset();
    let target = rng.below(0, log_end_offset as u64 + 1) as i64;
    // The batch holding the target goes whole: the log keeps at least the batches before it.
    let kept = written.iter().take_while(|(_, end)| *end <= target).count();
    let cut = if kept == 0 { 0 } else { written[kept - 1].1 };
    disk.fail_after(rng.below(0, 40));
    let truncated = partition.truncate_to(target).await;
    drop(partition);
    disk.power_cut(rng.next_u64());

    let partition = Partition::open(&fs, dir, config, EXPIRY, epoch, false, Default::default())
        .map_err(|e| format!("recovery after the truncation failed: {e}"))?;
    let batches: Vec<Bytes> = written.iter().map(|(b, _)| b.clone()).collect();
    let survived = check(&partition, &batches, kept)?;
    let end = partition.log_end_offset();
    match truncated {
        Ok(new_end) if new_end != cut => return Err(format!("truncation to {target} ended at {new_end}, not {cut}")),
        Ok(_) if end != cut => return Err(format!("a completed truncation to {cut} came back at {end}")),
        _ => {}
    }
    // Each surviving batch's epoch, stamped in its header, is the one the cache gives.
    let mut offset = 0;
    while offset < end {
        let header =
            BatchHeader::parse(&partition.read(offset, 1).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
        let cached = partition.epoch_for_offset(header.base_offset);
        if cached != Some(header.partition_leader_epoch) {
            return Err(format!(
                "batch at {offset} of epoch {} but the cache says {cached:?}",
                header.partition_leader_epoch
            ));
        }
        offset = header.last_offset() + 1;
    }
    let info = partition.append(random_batch(&mut rng), NOW_MS).await.map_err(|e| format!("append after: {e}"))?;
    if info.base_offset != end || survived > written.len() {
        return Err(format!("append after recovery at {} with the log ending at {end}", info.base_offset));
    }
    Ok(())
}
