//! Arbitrary request frames (the bytes after the size prefix) through what the broker does
//! before a handler runs: the connection's header checks, then the body's decoder for the
//! API and version. Nothing may panic, and no count a frame claims may exhaust memory.
#![no_main]

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestKind};
use libfuzzer_sys::fuzz_target;
use sluice::server::connection::parse_request;

fuzz_target!(|frame: &[u8]| {
    let Ok((header, mut body)) = parse_request(Bytes::copy_from_slice(frame)) else {
        return;
    };
    let api_key = ApiKey::try_from(header.request_api_key).expect("parse_request let through only served APIs");
    let _ = RequestKind::decode(api_key, &mut body, header.request_api_version);
});
