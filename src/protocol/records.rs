//! Building and reading record batches where the broker or its tools need the records
//! themselves (the CLI, `__consumer_offsets`); the data path never decodes records.

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// A record as a consumer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
}

/// Record `index` of a batch from a plain producer (no idempotence, no transaction).
pub fn plain_record(index: usize, timestamp: i64, key: Option<Bytes>, value: Option<Bytes>) -> Record {
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: index as i64,
        // kafka-protocol starts a new batch whenever offset - sequence changes.
        sequence: index as i32,
        timestamp,
        key,
        value,
        headers: Default::default(),
    }
}

/// One uncompressed v2 batch of `records`, all stamped `timestamp`.
pub fn encode_batch(records: &[(Option<Bytes>, Option<Bytes>)], timestamp: i64) -> Bytes {
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (key, value))| plain_record(i, timestamp, key.clone(), value.clone()))
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression: Compression::None })
        .expect("uncompressed records always encode");
    buf.freeze()
}

/// Decodes the batches of a fetch response (compressed ones too), skipping records below
/// `from_offset` (a batch starts before it) and a partial batch at the end (KIP-74 cut).
pub fn decode_records(mut bytes: Bytes, from_offset: i64) -> anyhow::Result<Vec<ConsumedRecord>> {
    let mut out = Vec::new();
    while bytes.len() >= 12 {
        let batch_size = 12 + i32::from_be_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
        if batch_size > bytes.len() {
            break;
        }
        let mut batch = bytes.split_to(batch_size);
        let set = RecordBatchDecoder::decode(&mut batch)?;
        out.extend(set.records.into_iter().filter(|r| r.offset >= from_offset && !r.control).map(|r| ConsumedRecord {
            offset: r.offset,
            timestamp: r.timestamp,
            key: r.key,
            value: r.value,
        }));
    }
    Ok(out)
}
