//! Log compaction (`cleanup.policy=compact`): closed segments keep only the latest record of
//! each key, so a topic like `__consumer_offsets` stays proportional to its keys, not to its
//! history. Offsets never change: compaction leaves gaps, which reads step over.
//!
//! A segment is rewritten beside itself (`.log.cleaned`), made durable, and renamed over the
//! original after its index files are removed; a crash at any point leaves either the old or
//! the new segment, and missing indexes are rebuilt on open. Records without a key are kept;
//! a deletion (a key without value) is dropped once it is the latest record of its key, since
//! no older record of that key remains to be hidden.

use std::collections::HashMap;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions};

use super::StorageError;
use super::batch::BatchHeader;
use super::segment::{Check, Segment, Tail, file_name};

/// The records of every batch in `bytes`, batch by batch.
fn batches(mut bytes: Bytes) -> Result<Vec<Vec<Record>>, StorageError> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let header = BatchHeader::parse(&bytes)?;
        let mut batch = bytes.split_to(header.size().min(bytes.len()));
        let set = RecordBatchDecoder::decode(&mut batch)
            .map_err(|e| StorageError::CorruptBatch(format!("undecodable batch while compacting: {e}")))?;
        out.push(set.records);
    }
    Ok(out)
}

/// All bytes of a segment.
fn contents(segment: &Segment) -> Result<Bytes, StorageError> {
    segment.read(0, segment.size() as usize, i64::MAX)
}

/// Records the offset of every key in `segment`; later calls overwrite earlier ones.
pub fn note_latest(segment: &Segment, latest: &mut HashMap<Bytes, i64>) -> Result<(), StorageError> {
    for records in batches(contents(segment)?)? {
        for record in records {
            if let Some(key) = record.key {
                latest.insert(key, record.offset);
            }
        }
    }
    Ok(())
}

/// Rewrites `segment` without superseded records; returns the reopened segment, or `None`
/// when nothing could be removed.
pub fn compact(
    dir: &Path,
    segment: &Segment,
    latest: &HashMap<Bytes, i64>,
    index_interval_bytes: u64,
    now_ms: i64,
) -> Result<Option<Segment>, StorageError> {
    let mut cleaned = BytesMut::new();
    let mut removed = 0usize;
    for records in batches(contents(segment)?)? {
        let total = records.len();
        let kept: Vec<Record> = records
            .into_iter()
            .filter(|r| match &r.key {
                None => true,
                Some(key) => latest.get(key) == Some(&r.offset) && r.value.is_some(),
            })
            .map(|mut r| {
                // The encoder keeps records together while offset - sequence is constant.
                if r.producer_id < 0 {
                    r.sequence = r.offset as i32;
                }
                r
            })
            .collect();
        removed += total - kept.len();
        if !kept.is_empty() {
            let options = RecordEncodeOptions { version: 2, compression: Compression::None };
            RecordBatchEncoder::encode(&mut cleaned, &kept, &options)
                .map_err(|e| StorageError::CorruptBatch(format!("re-encoding a compacted batch: {e}")))?;
        }
    }
    if removed == 0 {
        return Ok(None);
    }
    let base = segment.base_offset;
    let cleaned_path = dir.join(format!("{}.cleaned", file_name(base, "log")));
    std::fs::write(&cleaned_path, &cleaned)?;
    std::fs::File::open(&cleaned_path)?.sync_all()?;
    for extension in ["index", "timeindex"] {
        std::fs::remove_file(dir.join(file_name(base, extension)))?;
    }
    std::fs::rename(&cleaned_path, dir.join(file_name(base, "log")))?;
    std::fs::File::open(dir)?.sync_all()?;
    tracing::debug!(dir = %dir.display(), base, removed, "compacted a segment");
    let segment = Segment::open(dir, base, Check::Full, Tail::MustBeWhole, index_interval_bytes, now_ms)?;
    // Its indexes were rebuilt in memory; write them, so that a restart can trust them.
    segment.sync()?;
    Ok(Some(segment))
}
