//! A full disk never takes the broker down: writes are refused with KAFKA_STORAGE_ERROR,
//! reads keep working, writes resume once space is freed, and a broker restarted on a full
//! disk serves what is there. The data directory is a small tmpfs (the tests run as root).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Broker, Raw, batch};

const KAFKA_STORAGE_ERROR: i16 = 56;

/// A tmpfs mounted on a temporary directory, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` (and a loud message) where this process may not mount.
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let mut mount = Command::new("mount");
        mount.args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(dir.path());
        match mount.status() {
            Ok(s) if s.success() => Some(Tmpfs { dir }),
            other => {
                eprintln!(
                    "\n!!! SKIPPED: cannot mount a tmpfs here ({other:?}); full-disk behaviour is untested !!!\n"
                );
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// Writes a file until the file system has no page left; returns its path.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path).unwrap();
    for chunk in [1 << 16, 4096, 1] {
        let bytes = vec![0xEEu8; chunk];
        loop {
            match file.write_all(&bytes) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ENOSPC as i32) => break,
                Err(e) => panic!("filling the disk: {e}"),
            }
        }
    }
    path
}

/// Produces one more record to `full-0`; returns the error code, noting what was acknowledged.
fn produce(raw: &mut Raw, acked: &mut Vec<(i64, Vec<u8>)>) -> i16 {
    let v = value(acked.len());
    let (error, base) = raw.produce("full", 0, batch(&[&v]), -1);
    if error == 0 {
        assert_eq!(base, acked.len() as i64, "offsets stay contiguous");
        acked.push((base, v));
    }
    error
}

fn value(i: usize) -> Vec<u8> {
    format!("{i:06}-{}", "x".repeat(1000)).into_bytes()
}

/// The sum of every series of metric `name`, polled until it reaches `at_least`.
fn wait_for_metric(broker: &Broker, name: &str, at_least: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let body = broker.http_get("/metrics").1;
        let total: f64 = body
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum();
        if total >= at_least || Instant::now() > deadline {
            return total;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_full_disk_refuses_writes_and_keeps_serving() {
    let Some(tmpfs) = Tmpfs::mount("16m") else { return };
    let mut broker = Broker::start_in(tmpfs.path(), 2, &[]);
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(raw.create_topic("full", 1, &[]), 0);
    // Durable mode: answered after the fsync; a write refused for space must not poison it.
    assert_eq!(raw.create_topic("durable", 1, &[("write.caching", "false")]), 0);
    assert_eq!(raw.produce("durable", 0, batch(&[b"before"]), -1), (0, 0));
    let mut acked: Vec<(i64, Vec<u8>)> = Vec::new();
    for _ in 0..20 {
        assert_eq!(produce(&mut raw, &mut acked), 0);
    }

    // Produce until the disk is full: the producer hears KAFKA_STORAGE_ERROR.
    let filler = fill(tmpfs.path());
    let refused = (0..100).map(|_| produce(&mut raw, &mut acked)).find(|&e| e != 0);
    assert_eq!(refused, Some(KAFKA_STORAGE_ERROR), "a full disk must refuse the write");
    assert_eq!(raw.fetch_all("full", 0), acked, "reads keep working on a full disk");
    assert_eq!(raw.create_topic("another", 3, &[]), KAFKA_STORAGE_ERROR);
    let big = value(0).repeat(64);
    assert_eq!(raw.produce("durable", 0, batch(&[&big]), -1).0, KAFKA_STORAGE_ERROR);
    raw.produce_acks0("full", 0, batch(&[&value(999)]));
    assert!(wait_for_metric(&broker, "sluice_unacknowledged_produce_errors_total", 1.0) >= 1.0);
    assert!(broker.is_running(), "stderr:\n{}", broker.stderr_text());
    assert!(!tmpfs.path().join("another-0").exists(), "a refused topic leaves nothing behind");

    // Space comes back: writes work again without a restart.
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(produce(&mut raw, &mut acked), 0);
    assert_eq!(raw.produce("durable", 0, batch(&[b"after"]), -1), (0, 1));
    assert_eq!(raw.create_topic("another", 3, &[]), 0);
    assert_eq!(raw.fetch_all("full", 0), acked);
    drop(raw);

    // A broker stopped and started again on a full disk serves what is there.
    fill(tmpfs.path());
    let status = broker.stop();
    if !tmpfs.path().join(".clean-shutdown").exists() {
        assert!(!status.success(), "a shutdown that could not close everything says so");
    }
    broker.restart();
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(raw.fetch_all("full", 0), acked);
    let refused = (0..100).map(|_| produce(&mut raw, &mut acked)).find(|&e| e != 0);
    assert_eq!(refused, Some(KAFKA_STORAGE_ERROR));
    assert_eq!(raw.fetch_all("full", 0), acked);
    assert!(broker.is_running(), "stderr:\n{}", broker.stderr_text());
}
