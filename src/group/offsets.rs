//! Records of `__consumer_offsets`: one per committed (group, topic, partition), keyed so that
//! compaction keeps the latest; a record without a value deletes the commit.
//!
//! Key: version i16 (1) | group string | topic string | partition i32.
//! Value: version i16 (3) | offset i64 | leader epoch i32 | metadata string | commit time i64.
//! Strings are i16 length + UTF-8, as elsewhere in the Kafka protocol.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::CommittedOffset;

const KEY_VERSION: i16 = 1;
const VALUE_VERSION: i16 = 3;

/// The longest string a record can hold (i16 length): group ids and metadata above it are
/// refused before they get here.
pub const STRING_MAX_BYTES: usize = i16::MAX as usize;

fn put_string(buf: &mut BytesMut, s: &str) {
    let length = i16::try_from(s.len()).expect("strings are bounded before they get here");
    buf.put_i16(length);
    buf.put_slice(s.as_bytes());
}

fn get_string(buf: &mut Bytes) -> Option<String> {
    if buf.remaining() < 2 {
        return None;
    }
    let length = usize::try_from(buf.get_i16()).ok()?;
    if buf.remaining() < length {
        return None;
    }
    String::from_utf8(buf.split_to(length).to_vec()).ok()
}

pub fn key(group_id: &str, topic: &str, partition: i32) -> Bytes {
    let mut buf = BytesMut::with_capacity(10 + group_id.len() + topic.len());
    buf.put_i16(KEY_VERSION);
    put_string(&mut buf, group_id);
    put_string(&mut buf, topic);
    buf.put_i32(partition);
    buf.freeze()
}

pub fn value(committed: &CommittedOffset) -> Bytes {
    let mut buf = BytesMut::with_capacity(24 + committed.metadata.len());
    buf.put_i16(VALUE_VERSION);
    buf.put_i64(committed.offset);
    buf.put_i32(committed.leader_epoch);
    put_string(&mut buf, &committed.metadata);
    buf.put_i64(committed.commit_timestamp_ms);
    buf.freeze()
}

/// (group, topic, partition, commit or deletion); `None` for a record we do not understand.
pub fn decode(key: Option<Bytes>, value: Option<Bytes>) -> Option<(String, String, i32, Option<CommittedOffset>)> {
    let mut key = key?;
    if key.remaining() < 2 || key.get_i16() != KEY_VERSION {
        return None;
    }
    let group = get_string(&mut key)?;
    let topic = get_string(&mut key)?;
    if key.remaining() < 4 {
        return None;
    }
    let partition = key.get_i32();
    let Some(mut value) = value else { return Some((group, topic, partition, None)) };
    if value.remaining() < 14 || value.get_i16() != VALUE_VERSION {
        return None;
    }
    let offset = value.get_i64();
    let leader_epoch = value.get_i32();
    let metadata = get_string(&mut value)?;
    if value.remaining() < 8 {
        return None;
    }
    let commit_timestamp_ms = value.get_i64();
    Some((group, topic, partition, Some(CommittedOffset { offset, leader_epoch, metadata, commit_timestamp_ms })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_and_deletions_round_trip() {
        let committed =
            CommittedOffset { offset: 42, leader_epoch: 3, metadata: "meta".into(), commit_timestamp_ms: 1000 };
        let decoded = decode(Some(key("g", "t", 7)), Some(value(&committed))).unwrap();
        assert_eq!(decoded, ("g".into(), "t".into(), 7, Some(committed)));
        assert_eq!(decode(Some(key("g", "t", 7)), None).unwrap().3, None);
        assert!(decode(Some(Bytes::from_static(b"\x00\x09junk")), None).is_none());
        assert!(decode(None, None).is_none());
    }
}
