//! Fetches of records that are not in the page cache: read through the shard's io_uring
//! instead of sent with sendfile (which would stall the shard on the disk), byte for byte what
//! a fetch of cached pages sends, and counted in `/metrics`; so are the reads of a coordinator
//! loading its committed offsets.

mod common;

use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use bytes::Bytes;
use common::{Broker, Raw, fetch_request, metric_total};

/// The broker probes and sends file ranges by chunks of this size (`zero_copy::CHUNK_BYTES`).
const CHUNK_BYTES: u64 = 256 * 1024;

/// Writes `path`'s dirty pages back (only clean pages can be dropped), then drops every page
/// of it from the page cache.
fn evict(path: &Path) {
    use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
    let file = std::fs::File::open(path).unwrap();
    file.sync_data().unwrap();
    posix_fadvise(file.as_raw_fd(), 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED).unwrap();
}

/// Every record byte of partition 0 of `topic` in one fetch.
fn fetch_whole(raw: &mut Raw, topic: &str) -> Bytes {
    let response = raw.send(&fetch_request(topic, 8 << 20, 0), 11);
    let partition = &response.responses[0].partitions[0];
    assert_eq!(partition.error_code, 0);
    partition.records.clone().unwrap_or_default()
}

fn cold_chunks(broker: &Broker) -> f64 {
    metric_total(broker, "sluice_fetch_cold_chunks_total")
}

fn bytes_by(broker: &Broker, path: &str) -> f64 {
    metric_total(broker, &format!("sluice_fetch_record_bytes_total{{path=\"{path}\""))
}

#[test]
fn cold_ranges_are_read_through_io_uring_and_send_the_same_bytes() {
    // In the target directory, on the build's disk: a tmpfs (as /tmp may be) keeps its pages.
    let data = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut broker = Broker::start_in(data.path(), 1, &[]);
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(raw.create_topic("cold", 1, &[]), 0);
    // About 3 MiB in batches of 50 KiB, every value distinct, so that a byte out of place shows.
    for b in 0..60 {
        let values: Vec<Vec<u8>> = (0..10).map(|r| format!("batch {b} record {r} ").repeat(250).into_bytes()).collect();
        let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
        assert_eq!(raw.produce("cold", 0, common::batch(&refs), -1).0, 0);
    }
    let segment = data.path().join("cold-0").join(format!("{:020}.log", 0));
    let segment_bytes = std::fs::metadata(&segment).unwrap().len();
    assert!(segment_bytes > 8 * CHUNK_BYTES, "spans many chunks: {segment_bytes}");

    // Just written, so cached: sent with sendfile, no chunk read cold.
    let hot = fetch_whole(&mut raw, "cold");
    assert_eq!(hot.len() as u64, segment_bytes);
    assert_eq!(common::decode(&hot).len(), 600);
    assert_eq!(cold_chunks(&broker), 0.0);
    assert!(bytes_by(&broker, "io_uring") == 0.0);

    // All evicted. The broker's own header reads bring a few pages back, the first chunk's
    // among them, but not the whole chunk: it is read through io_uring (and the kernel reads
    // ahead from there, so how many of the later chunks are cold depends on its readahead).
    evict(&segment);
    let cold = fetch_whole(&mut raw, "cold");
    assert!(cold == hot, "a cold fetch sends the bytes a cached one does");
    let after_cold = cold_chunks(&broker);
    assert!(after_cold >= 1.0, "the first chunk was cold");
    assert!(bytes_by(&broker, "io_uring") >= CHUNK_BYTES as f64, "a whole chunk read through io_uring");
    // The owner's header reads loaded what they missed, unless the readahead their first try
    // started had already landed (a fast disk): counted, not asserted.
    assert!(broker.http_get("/metrics").1.contains("sluice_fetch_owner_loads_total{shard=\"0\"}"));

    // Evicted, then the second and the fifth chunk read back in (the fetch starts at position
    // 0, so its chunks are the file's): one range, cached and cold parts in turn.
    evict(&segment);
    let mut warm = vec![0u8; CHUNK_BYTES as usize];
    for chunk in [1, 4] {
        std::fs::File::open(&segment).unwrap().read_exact_at(&mut warm, chunk * CHUNK_BYTES).unwrap();
    }
    let sent_before = bytes_by(&broker, "zero_copy") + bytes_by(&broker, "copied");
    let mixed = fetch_whole(&mut raw, "cold");
    assert!(mixed == hot, "a range of cached and cold chunks sends the bytes a cached one does");
    assert!(cold_chunks(&broker) > after_cold, "the cold chunks went through io_uring");
    let sent_cached = bytes_by(&broker, "zero_copy") + bytes_by(&broker, "copied") - sent_before;
    assert!(sent_cached >= 2.0 * CHUNK_BYTES as f64, "the cached chunks went with sendfile: {sent_cached}");

    // And what the copying path (no zero copy at all) reads from the same files.
    broker.terminate();
    let broker = Broker::start_in(data.path(), 1, &["--set", "fetch.zero.copy.enable=false"]);
    let mut raw = Raw::connect(broker.addr());
    let copied = fetch_whole(&mut raw, "cold");
    assert!(copied == hot, "the copying path reads the same bytes");
}

#[test]
fn a_coordinator_loads_committed_offsets_not_cached_through_io_uring() {
    let data = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut broker = Broker::start_in(data.path(), 1, &["--set", "offsets.topic.num.partitions=1"]);
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(raw.create_topic("t", 1, &[]), 0);
    drop(raw);
    // About 200 KiB of commits: more than the kernel reads ahead of the log's tail, which
    // opening the partition reads.
    let mut client = sluice::client::Client::connect(broker.addr()).unwrap();
    for offset in 0..2000 {
        client.commit_offsets("cold-group", "t", &[(0, offset)]).unwrap();
    }
    drop(client);
    broker.terminate();
    for entry in std::fs::read_dir(data.path().join("__consumer_offsets-0")).unwrap() {
        evict(&entry.unwrap().path());
    }
    // The restarted coordinator replays the partition from pages no longer cached: loaded
    // through the ring, not read on the shard's thread waiting for the disk.
    broker.restart();
    let committed = || {
        let mut client = sluice::client::Client::connect(broker.addr()).ok()?;
        let committed = client.committed_offsets("cold-group").ok()?;
        Some(committed.into_iter().map(|(topic, p, offset, _)| (topic, p, offset)).collect::<Vec<_>>())
    };
    common::wait_until(std::time::Duration::from_secs(10), "the offsets are loaded", || {
        committed() == Some(vec![("t".to_string(), 0, 1999)])
    });
    assert!(metric_total(&broker, "sluice_fetch_owner_loads_total") > 0.0, "the load read through io_uring");
}
