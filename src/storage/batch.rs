//! Kafka v2 record batch headers: parsing and validation, and the fields the broker stamps.
//!
//! A producer's batch is checked as Kafka's LogValidator does before anything is written:
//! header, length, CRC-32C, then the records inside (through [`super::records`]): exactly
//! `recordsCount` of them, with offset deltas 0..n-1 matching `lastOffsetDelta`, every length
//! consistent, a key in each record of a compacted topic. A compressed batch is decompressed
//! as a bounded stream for this (see [`DECOMPRESSION_RATIO_LIMIT`]) unless the topic sets
//! `sluice.validate.compressed.records=false`; the stored records stay the producer's bytes.
//! As in Kafka, a walked batch is stored with its largest record timestamp as `maxTimestamp`
//! (and CreateTime), whatever the producer's header claimed.
//!
//! Layout (big-endian): baseOffset i64 | batchLength i32 | partitionLeaderEpoch i32 | magic i8 |
//! crc u32 | attributes i16 | lastOffsetDelta i32 | baseTimestamp i64 | maxTimestamp i64 |
//! producerId i64 | producerEpoch i16 | baseSequence i32 | recordsCount i32 | records.
//! The CRC covers everything from `attributes` to the end of the batch.

use super::StorageError;
use super::codec::Codec;
use super::records::for_each_record;

/// A compressed batch may inflate to at most this many times `max.message.bytes`; beyond,
/// it is refused as too large (a decompression bomb costs bounded work). Kafka's clients
/// bound uncompressed batches by roughly `max.message.bytes` themselves.
pub const DECOMPRESSION_RATIO_LIMIT: usize = 32;

/// Bytes before `batchLength`'s count starts (baseOffset + batchLength).
pub const LOG_OVERHEAD: usize = 12;
/// Size of the whole v2 header.
pub const HEADER_LEN: usize = 61;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
/// Where the CRC-covered part starts (attributes).
pub const CRC_FROM: usize = 21;
const ATTRIBUTES_AT: usize = 21;
const MAX_TIMESTAMP_AT: usize = 35;
/// Attribute bit 3: timestamps are LogAppendTime.
const LOG_APPEND_TIME_FLAG: i16 = 1 << 3;
/// Attribute bit 4: part of a transaction.
const TRANSACTIONAL_FLAG: i16 = 1 << 4;
/// Attribute bit 5: a control batch (transaction marker).
const CONTROL_FLAG: i16 = 1 << 5;
/// Attribute bit 6 (KIP-534): `baseTimestamp` is the batch's delete horizon, set by compaction
/// on a batch holding tombstones; they may go once it has passed.
pub const DELETE_HORIZON_FLAG: i16 = 1 << 6;

/// The parsed v2 header of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Bytes after the `batchLength` field.
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

fn i16_at(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}
fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn i64_at(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl BatchHeader {
    /// Parses the header at the start of `bytes`, checking the magic byte and that the length
    /// fields are sane. Does not look at the records or the CRC.
    pub fn parse(bytes: &[u8]) -> Result<BatchHeader, StorageError> {
        if bytes.len() <= MAGIC_AT {
            return Err(StorageError::CorruptBatch(format!("{} bytes is too short for a batch", bytes.len())));
        }
        let magic = bytes[MAGIC_AT] as i8;
        if magic != 2 {
            return Err(StorageError::UnsupportedMagic(magic));
        }
        if bytes.len() < HEADER_LEN {
            return Err(StorageError::CorruptBatch(format!("{} bytes is too short for a v2 header", bytes.len())));
        }
        let header = BatchHeader {
            base_offset: i64_at(bytes, 0),
            batch_length: i32_at(bytes, 8),
            partition_leader_epoch: i32_at(bytes, 12),
            crc: u32::from_be_bytes(bytes[CRC_AT..CRC_AT + 4].try_into().expect("4 bytes")),
            attributes: i16_at(bytes, ATTRIBUTES_AT),
            last_offset_delta: i32_at(bytes, 23),
            base_timestamp: i64_at(bytes, 27),
            max_timestamp: i64_at(bytes, MAX_TIMESTAMP_AT),
            producer_id: i64_at(bytes, 43),
            producer_epoch: i16_at(bytes, 51),
            base_sequence: i32_at(bytes, 53),
            records_count: i32_at(bytes, 57),
        };
        if (header.batch_length as i64) < (HEADER_LEN - LOG_OVERHEAD) as i64 {
            return Err(StorageError::CorruptBatch(format!(
                "batch length {} is below the header size",
                header.batch_length
            )));
        }
        if header.records_count < 0 || header.last_offset_delta < 0 {
            return Err(StorageError::CorruptBatch("negative record count or offset delta".into()));
        }
        if header.records_count > 0 && header.last_offset_delta < header.records_count - 1 {
            return Err(StorageError::CorruptBatch(format!(
                "last offset delta {} cannot hold {} records",
                header.last_offset_delta, header.records_count
            )));
        }
        Ok(header)
    }

    /// The whole batch's size on disk and on the wire.
    pub fn size(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// Records this batch occupies in the offset space.
    pub fn offset_count(&self) -> i64 {
        i64::from(self.last_offset_delta) + 1
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_FLAG != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_FLAG != 0
    }

    /// The LogAppendTime stamped into the batch, if its timestamps are of that type.
    pub fn log_append_time(&self) -> Option<i64> {
        (self.attributes & LOG_APPEND_TIME_FLAG != 0).then_some(self.max_timestamp)
    }

    /// When compaction may drop this batch's tombstones, if it has set that already.
    pub fn delete_horizon_ms(&self) -> Option<i64> {
        (self.attributes & DELETE_HORIZON_FLAG != 0).then_some(self.base_timestamp)
    }

    /// Whether the batch carries an idempotent producer's id and sequence.
    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }
}

/// Checks one whole batch (`bytes` is exactly the batch): header, length and CRC-32C.
pub fn validate(bytes: &[u8]) -> Result<BatchHeader, StorageError> {
    let header = BatchHeader::parse(bytes)?;
    if header.size() != bytes.len() {
        return Err(StorageError::CorruptBatch(format!(
            "batch says {} bytes but {} are present",
            header.size(),
            bytes.len()
        )));
    }
    let actual = crc32c::crc32c(&bytes[CRC_FROM..]);
    if actual != header.crc {
        return Err(StorageError::CorruptBatch(format!(
            "CRC-32C mismatch: batch says {:#010x}, content has {actual:#010x}",
            header.crc
        )));
    }
    Ok(header)
}

/// What an append checks beyond each batch's header and CRC.
#[derive(Debug, Clone, Copy)]
pub struct Validation {
    /// `max.message.bytes`: the largest batch accepted.
    pub max_batch_bytes: usize,
    /// Walk the records of compressed batches too (`sluice.validate.compressed.records`).
    pub compressed_records: bool,
    /// Every record needs a key (compacted topics).
    pub keys_required: bool,
    /// Under CreateTime, the timestamps accepted, inclusive; -1 (none) is always accepted.
    pub timestamps: Option<(i64, i64)>,
}

/// Splits a producer's records blob into batches and validates each; returns each batch's
/// position in `records` with its header. Nothing is accepted unless everything is valid.
pub fn validate_all(records: &[u8], rules: &Validation) -> Result<Vec<(usize, BatchHeader)>, StorageError> {
    let max_batch_bytes = rules.max_batch_bytes;
    let mut batches = Vec::new();
    let mut position = 0;
    while position < records.len() {
        let rest = &records[position..];
        let header = BatchHeader::parse(rest)?;
        if header.size() > max_batch_bytes {
            return Err(StorageError::BatchTooLarge { size: header.size(), max: max_batch_bytes });
        }
        if header.size() > rest.len() {
            return Err(StorageError::CorruptBatch(format!(
                "batch of {} bytes is truncated to {}",
                header.size(),
                rest.len()
            )));
        }
        let batch = &rest[..header.size()];
        let mut header = validate(batch)?;
        // Kafka sets a CreateTime batch's maxTimestamp from its records: the header's is a claim.
        if let Some(max_timestamp) = validate_records(&header, batch, rules)? {
            header.max_timestamp = max_timestamp;
            header.attributes &= !LOG_APPEND_TIME_FLAG;
        }
        batches.push((position, header));
        position += header.size();
    }
    if batches.is_empty() {
        return Err(StorageError::CorruptBatch("no record batch in the request".into()));
    }
    Ok(batches)
}

/// A producer's batch must hold what its header says: Kafka refuses a count that is not
/// positive or disagrees with the offset range, and records whose offsets or sizes lie.
/// Returns the largest record timestamp, unless the records were not walked (a compressed
/// batch on a topic that trusts its producers).
fn validate_records(header: &BatchHeader, batch: &[u8], rules: &Validation) -> Result<Option<i64>, StorageError> {
    let codec = Codec::from_attributes(header.attributes)?;
    if header.records_count <= 0 || i64::from(header.records_count) != header.offset_count() {
        return Err(StorageError::InvalidRecord(format!(
            "the batch says {} records over offset deltas 0..={}",
            header.records_count, header.last_offset_delta
        )));
    }
    // The header bounds every timestamp, so it settles most batches, and those whose
    // records are not walked.
    if let Some(range) = rules.timestamps {
        check_timestamp(header.max_timestamp, range, format_args!("the batch's newest record"))?;
        check_timestamp(header.base_timestamp, range, format_args!("the batch's first record"))?;
    }
    if codec != Codec::None && !rules.compressed_records {
        return Ok(None);
    }
    let limit = rules.max_batch_bytes.saturating_mul(DECOMPRESSION_RATIO_LIMIT);
    let mut max_timestamp = i64::MIN;
    for_each_record(header, batch, limit, |record| {
        // Java's long arithmetic, as a consumer computes it.
        let timestamp = header.base_timestamp.wrapping_add(record.timestamp_delta);
        max_timestamp = max_timestamp.max(timestamp);
        if record.offset_delta as usize != record.index {
            return Err(StorageError::InvalidRecord(format!(
                "record {} has offset delta {}",
                record.index, record.offset_delta
            )));
        }
        if let Some(range) = rules.timestamps {
            check_timestamp(timestamp, range, format_args!("record {}", record.index))?;
        }
        if rules.keys_required && record.key.is_none() {
            return Err(StorageError::InvalidRecord(format!(
                "record {} has no key, which a compacted topic requires",
                record.index
            )));
        }
        Ok(())
    })?;
    Ok(Some(max_timestamp))
}

/// `what` names the timestamp in the error; it is formatted only for one that fails, since a
/// string built for every record cost 2% of durable produce.
fn check_timestamp(
    timestamp: i64,
    (earliest, latest): (i64, i64),
    what: std::fmt::Arguments<'_>,
) -> Result<(), StorageError> {
    if timestamp != -1 && !(earliest..=latest).contains(&timestamp) {
        return Err(StorageError::InvalidTimestamp(format!(
            "{what} is stamped {timestamp}, outside [{earliest}, {latest}]"
        )));
    }
    Ok(())
}

/// A whole batch of `header`'s fields around `payload` (the records, compressed or not),
/// with its length and CRC-32C computed; `header.batch_length` and `header.crc` are ignored.
pub fn assemble(header: &BatchHeader, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&header.base_offset.to_be_bytes());
    out.extend_from_slice(&((HEADER_LEN - LOG_OVERHEAD + payload.len()) as i32).to_be_bytes());
    out.extend_from_slice(&header.partition_leader_epoch.to_be_bytes());
    out.push(2);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&header.attributes.to_be_bytes());
    out.extend_from_slice(&header.last_offset_delta.to_be_bytes());
    out.extend_from_slice(&header.base_timestamp.to_be_bytes());
    out.extend_from_slice(&header.max_timestamp.to_be_bytes());
    out.extend_from_slice(&header.producer_id.to_be_bytes());
    out.extend_from_slice(&header.producer_epoch.to_be_bytes());
    out.extend_from_slice(&header.base_sequence.to_be_bytes());
    out.extend_from_slice(&header.records_count.to_be_bytes());
    debug_assert_eq!(out.len(), HEADER_LEN);
    out.extend_from_slice(payload);
    let crc = crc32c::crc32c(&out[CRC_FROM..]);
    out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    out
}

/// The broker-owned fields written into a batch header as it is appended.
pub struct Stamp {
    pub base_offset: i64,
    pub leader_epoch: i32,
    /// Set under LogAppendTime: the timestamp that replaces maxTimestamp.
    pub log_append_time_ms: Option<i64>,
    /// Otherwise, the attributes and maxTimestamp that validation found the batch must have.
    pub attributes: i16,
    pub max_timestamp: i64,
}

/// Returns a copy of the batch's header with the broker-owned fields stamped. When the
/// attributes or maxTimestamp change (always under LogAppendTime; under CreateTime when the
/// producer's maxTimestamp was not its records' largest), the CRC is recomputed over the new
/// header bytes followed by the unchanged records (`batch` is the whole original batch).
pub fn stamped_header(batch: &[u8], stamp: &Stamp) -> [u8; HEADER_LEN] {
    let mut header: [u8; HEADER_LEN] = batch[..HEADER_LEN].try_into().expect("validated batch");
    header[0..8].copy_from_slice(&stamp.base_offset.to_be_bytes());
    header[12..16].copy_from_slice(&stamp.leader_epoch.to_be_bytes());
    let (attributes, max_timestamp) = match stamp.log_append_time_ms {
        Some(time) => (i16_at(&header, ATTRIBUTES_AT) | LOG_APPEND_TIME_FLAG, time),
        None => (stamp.attributes, stamp.max_timestamp),
    };
    if attributes != i16_at(&header, ATTRIBUTES_AT) || max_timestamp != i64_at(&header, MAX_TIMESTAMP_AT) {
        header[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
        header[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&max_timestamp.to_be_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&header[CRC_FROM..]), &batch[HEADER_LEN..]);
        header[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    }
    header
}

#[cfg(test)]
pub mod tests {
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

    use super::*;

    /// One v2 batch of `count` records with values `value-<i>`, timestamps from `timestamp`.
    pub fn batch(count: usize, timestamp: i64) -> Bytes {
        producer_batch(count, timestamp, -1, -1, 0)
    }

    /// Like [`batch`], from an idempotent producer with sequences from `base_sequence`.
    pub fn producer_batch(count: usize, timestamp: i64, producer_id: i64, epoch: i16, base_sequence: i32) -> Bytes {
        let records: Vec<Record> = (0..count)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id,
                producer_epoch: epoch,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // The encoder keeps records in one batch only while offset - sequence is constant.
                sequence: base_sequence + i as i32,
                timestamp: timestamp + i as i64,
                key: Some(Bytes::from(format!("key-{i}"))),
                value: Some(Bytes::from(format!("value-{i}"))),
                headers: Default::default(),
            })
            .collect();
        let mut buf = BytesMut::new();
        let options = RecordEncodeOptions { version: 2, compression: Compression::None };
        RecordBatchEncoder::encode(&mut buf, &records, &options).expect("encodes");
        buf.freeze()
    }

    fn rules(max_batch_bytes: usize) -> Validation {
        Validation { max_batch_bytes, compressed_records: true, keys_required: false, timestamps: None }
    }

    /// `count` records with offset deltas `deltas`, values `v<i>`, no keys, as a payload.
    fn payload(deltas: &[i32]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, &delta) in deltas.iter().enumerate() {
            crate::storage::records::write_record(&mut out, 0, delta, None, Some(format!("v{i}").as_bytes()), &[0]);
        }
        out
    }

    /// A CRC-valid batch with the given header fields around `payload`.
    fn craft(attributes: i16, last_offset_delta: i32, records_count: i32, payload: &[u8]) -> Vec<u8> {
        let mut header = BatchHeader::parse(&batch(1, 0)).unwrap();
        header.attributes = attributes;
        header.last_offset_delta = last_offset_delta;
        header.records_count = records_count;
        assemble(&header, payload)
    }

    fn refusal(batch: &[u8]) -> StorageError {
        validate_all(batch, &rules(1 << 20)).expect_err("refused")
    }

    #[test]
    fn assembling_a_batch_reproduces_the_encoder() {
        let b = batch(3, 1000);
        let header = BatchHeader::parse(&b).unwrap();
        assert_eq!(assemble(&header, &b[HEADER_LEN..]), &b[..]);
        assert_eq!(validate_all(&craft(0, 2, 3, &payload(&[0, 1, 2])), &rules(1 << 20)).unwrap().len(), 1);
    }

    #[test]
    fn headers_that_disagree_with_their_records_are_invalid() {
        let invalid = |b: &[u8]| matches!(refusal(b), StorageError::InvalidRecord(_));
        assert!(invalid(&craft(0, 1_000_000, 1, &payload(&[0]))), "one record claiming a delta of 1,000,000");
        assert!(invalid(&craft(0, 0, 1, &payload(&[0, 1, 2]))), "one record claimed, three held");
        assert!(invalid(&craft(0, 2, 3, &payload(&[0]))), "three claimed, one held");
        assert!(invalid(&craft(0, 2, 3, &payload(&[0, 2, 1]))), "offset deltas out of order");
        assert!(invalid(&craft(0, 0, 0, &[])), "no records");
        let mut lying_length = payload(&[0]);
        lying_length[0] += 2; // the record claims one more byte than it has
        assert!(invalid(&craft(0, 0, 1, &lying_length)));
        let mut lying_value = payload(&[0]);
        let value_length_at = lying_value.len() - 4; // ... valueLength varint, "v0", no headers
        lying_value[value_length_at] = 100;
        assert!(invalid(&craft(0, 0, 1, &lying_value)));
        let keyless = Validation { keys_required: true, ..rules(1 << 20) };
        assert!(matches!(validate_all(&craft(0, 0, 1, &payload(&[0])), &keyless), Err(StorageError::InvalidRecord(_))));
    }

    #[test]
    fn a_timestamp_out_of_range_is_refused_with_what_carries_it() {
        let mut header = BatchHeader::parse(&batch(1, 0)).unwrap();
        (header.last_offset_delta, header.records_count) = (2, 3);
        (header.base_timestamp, header.max_timestamp) = (1000, 1000);
        let mut records = Vec::new();
        for (delta, timestamp_delta) in [0, 5000, 1].into_iter().enumerate() {
            crate::storage::records::write_record(&mut records, timestamp_delta, delta as i32, None, Some(b"v"), &[0]);
        }
        let bounded = Validation { timestamps: Some((0, 2000)), ..rules(1 << 20) };
        let why = |header: &BatchHeader| match validate_all(&assemble(header, &records), &bounded) {
            Err(StorageError::InvalidTimestamp(why)) => why,
            other => panic!("accepted or refused otherwise: {other:?}"),
        };
        // The header claims every record in range; the second record is not.
        assert_eq!(why(&header), "record 1 is stamped 6000, outside [0, 2000]");
        header.max_timestamp = 2001;
        assert_eq!(why(&header), "the batch's newest record is stamped 2001, outside [0, 2000]");
    }

    #[test]
    fn a_lying_max_timestamp_is_replaced_by_the_records_largest() {
        let mut header = BatchHeader::parse(&batch(1, 0)).unwrap();
        (header.last_offset_delta, header.records_count) = (2, 3);
        (header.base_timestamp, header.max_timestamp) = (1000, 1 << 50);
        header.attributes = LOG_APPEND_TIME_FLAG;
        let mut records = Vec::new();
        for (delta, timestamp_delta) in [5, 9, 2].into_iter().enumerate() {
            crate::storage::records::write_record(&mut records, timestamp_delta, delta as i32, None, Some(b"v"), &[0]);
        }
        let lying = assemble(&header, &records);
        let (_, validated) = validate_all(&lying, &rules(1 << 20)).unwrap()[0];
        assert_eq!((validated.max_timestamp, validated.attributes), (1009, 0));
        let stamp = Stamp {
            base_offset: 7,
            leader_epoch: 0,
            log_append_time_ms: None,
            attributes: validated.attributes,
            max_timestamp: validated.max_timestamp,
        };
        let mut stored = stamped_header(&lying, &stamp).to_vec();
        stored.extend_from_slice(&lying[HEADER_LEN..]);
        let stored = validate(&stored).unwrap();
        assert_eq!((stored.base_offset, stored.max_timestamp, stored.attributes), (7, 1009, 0));
    }

    #[test]
    fn unknown_codecs_are_unsupported() {
        for codec in 5..=7 {
            assert!(
                matches!(refusal(&craft(codec, 0, 1, &payload(&[0]))), StorageError::UnsupportedCompression(c) if c == codec)
            );
        }
    }

    #[test]
    fn compressed_batches_are_walked_within_bounds() {
        for codec in [Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd] {
            let id = codec as i16;
            let good = craft(id, 2, 3, &codec.compress(&payload(&[0, 1, 2])).unwrap());
            assert!(validate_all(&good, &rules(1 << 20)).is_ok(), "{codec:?}");
            let three_as_one = craft(id, 0, 1, &codec.compress(&payload(&[0, 1, 2])).unwrap());
            assert!(matches!(refusal(&three_as_one), StorageError::InvalidRecord(_)), "{codec:?}");
            let garbage = craft(id, 0, 1, &[0x5a; 64]);
            assert!(matches!(refusal(&garbage), StorageError::CorruptBatch(_)), "{codec:?}");
            // 4 MiB of zeros in one value compresses to a few KiB but inflates past 32 x 64 KiB.
            // Snappy cannot expand 32-fold: a block claiming more is corrupt before any work.
            let mut bomb = Vec::new();
            crate::storage::records::write_record(&mut bomb, 0, 0, None, Some(&vec![0; 4 << 20]), &[0]);
            let bomb = match codec {
                Codec::Snappy => craft(id, 0, 1, b"\x80\x80\x80\x80\x04\x00zero"),
                _ => craft(id, 0, 1, &codec.compress(&bomb).unwrap()),
            };
            assert!(bomb.len() < 1 << 16, "{codec:?}: {}", bomb.len());
            let refused = validate_all(&bomb, &rules(1 << 16));
            match codec {
                Codec::Snappy => assert!(matches!(refused, Err(StorageError::CorruptBatch(_))), "{refused:?}"),
                _ => assert!(matches!(refused, Err(StorageError::DecompressedTooLarge { .. })), "{codec:?}"),
            }
            // A topic that trusts its producers only checks the header of compressed batches.
            let trusting = Validation { compressed_records: false, ..rules(1 << 20) };
            assert!(validate_all(&craft(id, 5, 1, &[0x5a; 64]), &trusting).is_err(), "the header disagrees");
            assert!(validate_all(&three_as_one, &trusting).is_ok());
            assert!(validate_all(&garbage, &trusting).is_ok());
        }
    }

    #[test]
    fn a_valid_batch_passes() {
        let b = batch(3, 1000);
        let header = validate(&b).unwrap();
        assert_eq!(header.records_count, 3);
        assert_eq!(header.last_offset_delta, 2);
        assert_eq!(header.max_timestamp, 1002);
        assert_eq!(header.size(), b.len());
    }

    #[test]
    fn a_flipped_bit_fails_the_crc() {
        let mut b = BytesMut::from(&batch(3, 0)[..]);
        let last = b.len() - 1;
        b[last] ^= 1;
        assert!(matches!(validate(&b), Err(StorageError::CorruptBatch(_))));
    }

    #[test]
    fn old_magic_is_refused() {
        let mut b = BytesMut::from(&batch(1, 0)[..]);
        b[MAGIC_AT] = 1;
        assert!(matches!(validate_all(&b, &rules(usize::MAX)), Err(StorageError::UnsupportedMagic(1))));
    }

    #[test]
    fn truncated_and_oversized_batches_are_refused() {
        let b = batch(5, 0);
        assert!(matches!(validate_all(&b[..b.len() - 1], &rules(usize::MAX)), Err(StorageError::CorruptBatch(_))));
        assert!(matches!(validate_all(&b, &rules(10)), Err(StorageError::BatchTooLarge { .. })));
        assert!(matches!(validate_all(&[], &rules(usize::MAX)), Err(StorageError::CorruptBatch(_))));
    }

    #[test]
    fn stamping_log_append_time_keeps_the_crc_valid() {
        let b = batch(2, 5);
        let stamp =
            Stamp { base_offset: 42, leader_epoch: 3, log_append_time_ms: Some(777), attributes: 0, max_timestamp: 6 };
        let header = stamped_header(&b, &stamp);
        let mut stamped = BytesMut::from(&header[..]);
        stamped.extend_from_slice(&b[HEADER_LEN..]);
        let parsed = validate(&stamped).unwrap();
        assert_eq!(parsed.base_offset, 42);
        assert_eq!(parsed.partition_leader_epoch, 3);
        assert_eq!(parsed.max_timestamp, 777);
        assert_ne!(parsed.attributes & LOG_APPEND_TIME_FLAG, 0);
    }
}
