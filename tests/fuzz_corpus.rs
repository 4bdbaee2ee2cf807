//! Captures the seed corpora of the fuzz targets (`fuzz/`) from the real clients: the Python
//! driver scenarios run through a recording proxy, and the request frames they send, the
//! batches inside their produce requests, and the segment files they leave are written to
//! `fuzz/corpus/<target>/`. Ignored by default (it rewrites files in the source tree); run
//! `cargo test --test fuzz_corpus -- --ignored` to refresh the corpora.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use bytes::{Buf, Bytes};
use common::{Broker, Clients, Recorder, driver, driver_with};
use kafka_protocol::messages::{ProduceRequest, RequestHeader};
use kafka_protocol::protocol::Decodable;

/// Seeds bigger than this are left out: the fuzzers mutate small inputs faster.
const SEED_BYTES_MAX: usize = 32 * 1024;
/// Distinct frames kept per (API, version).
const FRAMES_PER_VERSION: usize = 4;

/// What one broker saw: the request frames, and its segment files with their offset indexes.
struct Session {
    frames: Vec<Bytes>,
    segments: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Runs `scenarios` against a fresh broker behind a recorder.
fn record(scenarios: impl FnOnce(&Broker)) -> Session {
    let recorder = Recorder::bind();
    let advertise = recorder.addr();
    let broker = Broker::start(2, &["--advertise", &advertise]);
    recorder.forward_to(broker.addr());
    scenarios(&broker);
    let segments = walk(broker.data_dir())
        .into_iter()
        .filter(|path| path.extension().is_some_and(|e| e == "log"))
        .map(|path| (std::fs::read(&path).unwrap(), std::fs::read(path.with_extension("index")).unwrap_or_default()))
        .collect();
    Session { frames: recorder.frames(), segments }
}

#[test]
#[ignore = "rewrites fuzz/corpus; run on purpose"]
fn capture_seed_corpora() {
    let long = Duration::from_secs(300);
    let sessions = [
        record(|broker| {
            driver(broker, "confluent_codecs", &["--records", "2000"], long);
            driver(broker, "groups_confluent", &[], long);
            driver(broker, "admin_lifecycle", &["create-partitions", "--topic", "grown"], long);
            driver(broker, "admin_lifecycle", &["delete-records", "--topic", "trimmed"], long);
            driver_with(Clients::Current, broker, "kafka_python_tutorial", &[], long);
        }),
        record(|broker| {
            driver_with(Clients::Old, broker, "kafka_python_tutorial", &[], long);
            driver_with(Clients::Old, broker, "groups_kafka_python", &["broadcast"], long);
        }),
    ];

    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut per_version: BTreeMap<(i16, i16), usize> = BTreeMap::new();
    let mut batches = 0;
    for frame in sessions.iter().flat_map(|s| s.frames.iter().cloned()) {
        if frame.len() < 4 || frame.len() > SEED_BYTES_MAX {
            continue;
        }
        let (api_key, version) = (frame.clone().get_i16(), frame.slice(2..).get_i16());
        let kept = per_version.entry((api_key, version)).or_default();
        if *kept < FRAMES_PER_VERSION && write_seed(&corpus.join("request"), &format!("{api_key}-v{version}"), &frame) {
            *kept += 1;
        }
        if api_key == 0 && batches < 40 {
            batches += produced_batches(frame, version)
                .filter(|records| write_seed(&corpus.join("record_batch"), "produce", &[&[0u8][..], records].concat()))
                .count();
        }
    }
    assert!(per_version.len() > 20, "too few (API, version) pairs seen: {per_version:?}");

    // Segment files as the clients left them: whole, after a crash, and with their indexes
    // after a clean stop (see the target for the input layout).
    let mut segments = 0;
    for (log, index) in sessions.iter().flat_map(|s| s.segments.iter()) {
        if segments >= 20 {
            break;
        }
        let log = &log[..log.len().min(SEED_BYTES_MAX)];
        let index = &index[..index.len().min(1024)];
        let crashed = [&[0u8, 0, 0][..], log].concat();
        let clean = [&[3u8][..], &(index.len() as u16).to_be_bytes(), index, log].concat();
        if !log.is_empty() && write_seed(&corpus.join("segment_recovery"), "crashed", &crashed) {
            write_seed(&corpus.join("segment_recovery"), "clean", &clean);
            segments += 1;
        }
    }
    assert!(segments > 0 && batches > 0, "{segments} segments, {batches} batches");
}

/// Writes `bytes` as `<dir>/<prefix>-<crc>`; false when that seed already exists.
fn write_seed(dir: &Path, prefix: &str, bytes: &[u8]) -> bool {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(format!("{prefix}-{:08x}", crc32c::crc32c(bytes)));
    if path.exists() {
        return false;
    }
    std::fs::write(path, bytes).unwrap();
    true
}

/// The records of every partition of a produce request frame.
fn produced_batches(mut frame: Bytes, version: i16) -> impl Iterator<Item = Bytes> {
    let header_version = kafka_protocol::messages::ApiKey::Produce.request_header_version(version);
    let request = RequestHeader::decode(&mut frame, header_version)
        .and_then(|_| ProduceRequest::decode(&mut frame, version))
        .expect("clients send produce requests that decode");
    request.topic_data.into_iter().flat_map(|t| t.partition_data).filter_map(|p| p.records)
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().map_while(Result::ok) {
        let path = entry.path();
        if path.is_dir() { files.extend(walk(&path)) } else { files.push(path) }
    }
    files.sort();
    files
}
