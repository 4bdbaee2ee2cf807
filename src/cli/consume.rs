//! `sluice consume TOPIC`: print records, one per line, from chosen offsets.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::client::{Client, EARLIEST, LATEST};

/// Bytes asked for per partition and fetch.
const FETCH_MAX_BYTES: i32 = 1 << 20;

#[derive(clap::Args)]
pub struct ConsumeArgs {
    topic: String,
    #[arg(long, default_value = super::DEFAULT_BOOTSTRAP)]
    bootstrap: String,
    /// Start at the earliest offset (default: the latest).
    #[arg(long, conflicts_with = "offset")]
    from_beginning: bool,
    /// Start at this offset (needs --partition).
    #[arg(long, requires = "partition")]
    offset: Option<i64>,
    /// Read only this partition (default: all).
    #[arg(long)]
    partition: Option<i32>,
    /// Exit after this many records.
    #[arg(long)]
    max_messages: Option<u64>,
    /// Print `key<TAB>value`.
    #[arg(long)]
    print_key: bool,
    /// Print `partition:offset<TAB>` before each record.
    #[arg(long)]
    print_offset: bool,
    /// Exit after this long without a new record (default: never).
    #[arg(long)]
    timeout_ms: Option<u64>,
}

pub fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    let mut client = Client::connect(&args.bootstrap)?;
    let partitions: Vec<i32> = match args.partition {
        Some(p) => vec![p],
        None => (0..client.partition_count(&args.topic)?).collect(),
    };
    if partitions.is_empty() {
        bail!("topic {} has no partitions", args.topic);
    }
    let mut positions = Vec::with_capacity(partitions.len());
    for &partition in &partitions {
        let offset = match (args.offset, args.from_beginning) {
            (Some(offset), _) => offset,
            (None, true) => client.list_offset(&args.topic, partition, EARLIEST)?,
            (None, false) => client.list_offset(&args.topic, partition, LATEST)?,
        };
        positions.push((partition, offset));
    }
    // One partition may long-poll; several take turns with short waits.
    let max_wait_ms = if positions.len() == 1 { 500 } else { 50 };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut printed = 0u64;
    let mut last_record = Instant::now();
    loop {
        for (partition, offset) in positions.iter_mut() {
            let (_, records) = client.fetch(&args.topic, *partition, *offset, FETCH_MAX_BYTES, max_wait_ms)?;
            for record in records {
                if args.print_offset {
                    write!(out, "{partition}:{}\t", record.offset)?;
                }
                if args.print_key {
                    match &record.key {
                        Some(key) => out.write_all(key)?,
                        None => out.write_all(b"null")?,
                    }
                    out.write_all(b"\t")?;
                }
                out.write_all(record.value.as_deref().unwrap_or(b"null"))?;
                out.write_all(b"\n")?;
                *offset = record.offset + 1;
                printed += 1;
                last_record = Instant::now();
                if args.max_messages.is_some_and(|max| printed >= max) {
                    return Ok(out.flush()?);
                }
            }
        }
        out.flush()?;
        if args.timeout_ms.is_some_and(|ms| last_record.elapsed() >= Duration::from_millis(ms)) {
            return Ok(());
        }
    }
}
