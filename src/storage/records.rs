//! The records inside a v2 batch: walking them, for validating a producer's batches and for
//! compaction. Only these two paths look inside a batch; reads and appends move batches whole.
//!
//! A record is `length varint | attributes i8 | timestampDelta varlong | offsetDelta varint |
//! keyLength varint | key | valueLength varint | value | headerCount varint | headers`, each
//! header `keyLength varint | key | valueLength varint | value`; lengths of -1 mean null.
//!
//! Invariant: a walk reads exactly `records_count` records and then the end of the records;
//! every length is checked against the bytes that remain before anything is skipped or
//! copied, so a lying length costs an error, never an allocation.

use super::StorageError;
use super::batch::{BatchHeader, HEADER_LEN};
use super::codec::Codec;

/// One record, borrowed from the batch (or from the walk's buffer for a compressed batch).
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    /// Position in the batch, from 0.
    pub index: usize,
    pub attributes: i8,
    pub timestamp_delta: i64,
    pub offset_delta: i32,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// The header count and the headers, as encoded.
    pub headers: &'a [u8],
}

fn invalid(index: usize, what: impl std::fmt::Display) -> StorageError {
    StorageError::InvalidRecord(format!("record {index}: {what}"))
}

/// Calls `visit` with each record of `batch` (the whole batch, whose header is `header`).
/// A compressed batch is decompressed as a stream that fails past `decompressed_limit` bytes.
pub fn for_each_record(
    header: &BatchHeader,
    batch: &[u8],
    decompressed_limit: usize,
    mut visit: impl FnMut(RecordRef<'_>) -> Result<(), StorageError>,
) -> Result<(), StorageError> {
    let count = usize::try_from(header.records_count).unwrap_or(0);
    let payload = &batch[HEADER_LEN..header.size()];
    match Codec::from_attributes(header.attributes)? {
        Codec::None => {
            let mut rest = payload;
            for index in 0..count {
                let length = record_length(index, varint(&mut rest, index)?, rest.len())?;
                let (body, tail) = rest.split_at(length);
                visit(parse(body, index)?)?;
                rest = tail;
            }
            if !rest.is_empty() {
                return Err(invalid(count, format!("{} bytes remain after the batch's {count} records", rest.len())));
            }
        }
        codec => {
            let mut stream = codec.decompress(payload, decompressed_limit)?;
            let mut body = Vec::new();
            let mut walk = || {
                for index in 0..count {
                    let length = varint_from(index, 5, || stream.read_byte())? as i32;
                    // Read as it arrives: a lying length meets the end of the stream or its limit.
                    let length = record_length(index, length, usize::MAX)?;
                    body.clear();
                    if stream.read_up_to(length as u64, &mut body)? < length {
                        return Err(invalid(index, "the batch ends inside it"));
                    }
                    visit(parse(&body, index)?)?;
                }
                match stream.at_end()? {
                    true => Ok(()),
                    false => Err(invalid(count, format!("bytes remain after the batch's {count} records"))),
                }
            };
            match walk() {
                // Corrupt compressed data can decode to garbage for a while before the codec
                // notices (at a checksum, say): the codec's verdict comes first.
                Err(StorageError::InvalidRecord(why)) => {
                    stream.drain()?;
                    return Err(StorageError::InvalidRecord(why));
                }
                other => other?,
            }
        }
    }
    Ok(())
}

fn record_length(index: usize, length: i32, available: usize) -> Result<usize, StorageError> {
    match usize::try_from(length) {
        Ok(length) if length <= available => Ok(length),
        _ => Err(invalid(index, format!("length {length} with {available} bytes left"))),
    }
}

/// One record's body (after its length).
fn parse(body: &[u8], index: usize) -> Result<RecordRef<'_>, StorageError> {
    let mut rest = body;
    let (&attributes, tail) = rest.split_first().ok_or_else(|| invalid(index, "empty"))?;
    rest = tail;
    let timestamp_delta = varint_from(index, 10, || Ok(take_byte(&mut rest)))?;
    let offset_delta = varint(&mut rest, index)?;
    let key = nullable(&mut rest, index, "key")?;
    let value = nullable(&mut rest, index, "value")?;
    let headers = rest;
    let header_count = varint(&mut rest, index)?;
    // Each header takes at least two bytes.
    if header_count < 0 || header_count as usize > rest.len() / 2 {
        return Err(invalid(index, format!("{header_count} headers in {} bytes", rest.len())));
    }
    for _ in 0..header_count {
        if nullable(&mut rest, index, "header key")?.is_none() {
            return Err(invalid(index, "null header key"));
        }
        nullable(&mut rest, index, "header value")?;
    }
    if !rest.is_empty() {
        return Err(invalid(index, format!("{} bytes after its last field", rest.len())));
    }
    Ok(RecordRef { index, attributes: attributes as i8, timestamp_delta, offset_delta, key, value, headers })
}

fn take_byte(rest: &mut &[u8]) -> Option<u8> {
    let (&first, tail) = rest.split_first()?;
    *rest = tail;
    Some(first)
}

/// A length-prefixed byte string; -1 is null.
fn nullable<'a>(rest: &mut &'a [u8], index: usize, what: &str) -> Result<Option<&'a [u8]>, StorageError> {
    let length = varint(rest, index)?;
    if length == -1 {
        return Ok(None);
    }
    match usize::try_from(length) {
        Ok(length) if length <= rest.len() => {
            let (bytes, tail) = rest.split_at(length);
            *rest = tail;
            Ok(Some(bytes))
        }
        _ => Err(invalid(index, format!("{what} length {length} with {} bytes left", rest.len()))),
    }
}

fn varint(rest: &mut &[u8], index: usize) -> Result<i32, StorageError> {
    Ok(varint_from(index, 5, || Ok(take_byte(rest)))? as i32)
}

/// A zig-zag varint of at most `max_bytes` bytes (5 for an int, 10 for a long), read with
/// `next` (`None` at the end of the input). An int's value must fit 32 bits.
fn varint_from(
    index: usize,
    max_bytes: u32,
    mut next: impl FnMut() -> Result<Option<u8>, StorageError>,
) -> Result<i64, StorageError> {
    let mut raw: u64 = 0;
    for i in 0..max_bytes {
        let byte = next()?.ok_or_else(|| invalid(index, "ends inside a varint"))?;
        raw |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if max_bytes == 5 && raw > u64::from(u32::MAX) {
                break;
            }
            return Ok((raw >> 1) as i64 ^ -((raw & 1) as i64));
        }
    }
    Err(invalid(index, "malformed varint"))
}

/// Appends one record (its length first); `headers` is the header count and headers as
/// encoded (`[0]` for none).
pub fn write_record(
    out: &mut Vec<u8>,
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[u8],
) {
    let mut body = Vec::with_capacity(16 + key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len) + headers.len());
    body.push(0); // attributes: unused in v2
    put_varint(&mut body, timestamp_delta);
    put_varint(&mut body, i64::from(offset_delta));
    for field in [key, value] {
        match field {
            None => put_varint(&mut body, -1),
            Some(bytes) => {
                put_varint(&mut body, bytes.len() as i64);
                body.extend_from_slice(bytes);
            }
        }
    }
    body.extend_from_slice(headers);
    put_varint(out, body.len() as i64);
    out.extend_from_slice(&body);
}

/// Appends `value` as a zig-zag varint.
pub fn put_varint(out: &mut Vec<u8>, value: i64) {
    let mut raw = ((value << 1) ^ (value >> 63)) as u64;
    while raw >= 0x80 {
        out.push((raw as u8) | 0x80);
        raw >>= 7;
    }
    out.push(raw as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_overlong_ones_are_refused() {
        for value in [0i64, 1, -1, 63, -64, 64, 300, i64::from(i32::MAX), i64::from(i32::MIN), i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            let mut rest = &out[..];
            assert_eq!(varint_from(0, 10, || Ok(take_byte(&mut rest))).unwrap(), value);
            assert!(rest.is_empty());
        }
        let mut out = Vec::new();
        put_varint(&mut out, i64::from(i32::MAX) + 1);
        assert!(varint(&mut &out[..], 0).is_err(), "an int varint beyond 32 bits");
        assert!(varint(&mut &[0x80u8, 0x80, 0x80, 0x80, 0x80, 0x01][..], 0).is_err(), "six bytes");
        assert!(varint(&mut &[0x80u8][..], 0).is_err(), "truncated");
    }
}
