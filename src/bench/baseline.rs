//! The machine's physical limits, measured in the same run as the broker figures so that
//! those can be given as ratios: raw loopback TCP throughput (one sender thread, one
//! receiver thread, large buffers), raw sequential write throughput through the page
//! cache, and the disk's own limits for durable writes: sequential buffered writes made
//! durable by `fdatasync`, and how many append-then-`fdatasync` rounds per second it takes
//! with 4 KiB and 1 MiB writes (what `fio --rw=write --fsync=1` shows).
//!
//! This is a measuring tool, not the broker: it uses blocking file calls on its own thread.
//! Every file it writes is a temporary one in the given directory, removed when measured.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Bytes per write and read call; large, as a broker's batches are.
const CHUNK_BYTES: usize = 1 << 20;
const SOCKET_BUFFER_BYTES: usize = 4 << 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Baseline {
    pub loopback_mb_per_s: f64,
    pub loopback_seconds: f64,
    /// (receiver, sender) CPUs.
    pub loopback_cpus: (usize, usize),
    pub page_cache_write_mb_per_s: f64,
    pub page_cache_write_bytes: u64,
    /// Sequential 1 MiB buffered writes of `disk_sync_write_bytes`, then one `fdatasync`,
    /// timed together: the most a log made durable in large groups can write.
    pub disk_sync_write_mb_per_s: f64,
    pub disk_sync_write_bytes: u64,
    /// Appends of 4 KiB, each followed by `fdatasync`, per second.
    pub sync_4k_per_s: f64,
    /// Appends of 1 MiB, each followed by `fdatasync`, per second.
    pub sync_1m_per_s: f64,
    /// How long each of the two sync rates was measured.
    pub sync_seconds: f64,
}

/// The baseline of an earlier `results.json` (from `bench baseline --report` in the same
/// session), so that several runs compare against one measurement.
pub fn load(path: &Path) -> anyhow::Result<Baseline> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let results: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    serde_json::from_value(results["baseline"].clone()).with_context(|| format!("no baseline in {}", path.display()))
}

pub struct BaselinePlan<'a> {
    pub duration: Duration,
    pub cpus: (usize, usize),
    pub write_bytes: u64,
    pub disk_bytes: u64,
    pub sync_duration: Duration,
    pub dir: &'a Path,
}

pub fn measure(plan: &BaselinePlan) -> anyhow::Result<Baseline> {
    let loopback = loopback_mb_per_s(plan.duration, plan.cpus)?;
    let write = page_cache_write_mb_per_s(plan.dir, plan.write_bytes)?;
    // Dirty pages of earlier writes (this run's or anyone's) must not be flushed on the
    // disk measurements' time.
    nix::unistd::sync();
    let disk = disk_sync_write_mb_per_s(plan.dir, plan.disk_bytes)?;
    let sync_4k = syncs_per_s(plan.dir, 4 << 10, plan.sync_duration)?;
    let sync_1m = syncs_per_s(plan.dir, 1 << 20, plan.sync_duration)?;
    Ok(Baseline {
        loopback_mb_per_s: loopback,
        loopback_seconds: plan.duration.as_secs_f64(),
        loopback_cpus: plan.cpus,
        page_cache_write_mb_per_s: write,
        page_cache_write_bytes: plan.write_bytes,
        disk_sync_write_mb_per_s: disk,
        disk_sync_write_bytes: plan.disk_bytes,
        sync_4k_per_s: sync_4k,
        sync_1m_per_s: sync_1m,
        sync_seconds: plan.sync_duration.as_secs_f64(),
    })
}

/// The two CPUs the broker and the bench would use: the first two this process may use.
pub fn default_cpus() -> (usize, usize) {
    let cpus = crate::runtime::executor::allowed_cpus();
    (cpus[0], cpus[1.min(cpus.len() - 1)])
}

fn pin_current_thread(cpu: usize) -> anyhow::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).with_context(|| format!("CPU {cpu}"))?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).with_context(|| format!("pinning to CPU {cpu}"))
}

fn large_buffers(stream: &TcpStream) -> anyhow::Result<()> {
    let socket = socket2::SockRef::from(stream);
    socket.set_send_buffer_size(SOCKET_BUFFER_BYTES)?;
    socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES)?;
    Ok(())
}

fn loopback_mb_per_s(duration: Duration, (receiver_cpu, sender_cpu): (usize, usize)) -> anyhow::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a loopback listener")?;
    let address = listener.local_addr()?;
    let receiver = std::thread::spawn(move || -> anyhow::Result<(u64, Duration)> {
        pin_current_thread(receiver_cpu)?;
        let (mut stream, _) = listener.accept()?;
        large_buffers(&stream)?;
        let mut buffer = vec![0u8; CHUNK_BYTES];
        let mut received = 0u64;
        let mut started = None;
        loop {
            let n = stream.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            started.get_or_insert_with(Instant::now);
            received += n as u64;
        }
        Ok((received, started.map_or(Duration::ZERO, |s| s.elapsed())))
    });
    let sender = std::thread::spawn(move || -> anyhow::Result<()> {
        pin_current_thread(sender_cpu)?;
        let mut stream = TcpStream::connect(address)?;
        large_buffers(&stream)?;
        let buffer = vec![b'x'; CHUNK_BYTES];
        let start = Instant::now();
        while start.elapsed() < duration {
            stream.write_all(&buffer)?;
        }
        Ok(())
    });
    sender.join().map_err(|_| anyhow::anyhow!("loopback sender panicked"))??;
    let (received, elapsed) = receiver.join().map_err(|_| anyhow::anyhow!("loopback receiver panicked"))??;
    Ok(mb_per_s(received, elapsed))
}

fn scratch_file(dir: &Path) -> anyhow::Result<tempfile::NamedTempFile> {
    tempfile::NamedTempFile::new_in(dir).with_context(|| format!("creating a file in {}", dir.display()))
}

/// Writes `bytes` sequentially in 1 MiB calls to `out`.
fn write_sequentially(mut out: &std::fs::File, bytes: u64) -> anyhow::Result<()> {
    let buffer = vec![b'x'; CHUNK_BYTES];
    let mut written = 0u64;
    while written < bytes {
        let n = CHUNK_BYTES.min((bytes - written) as usize);
        out.write_all(&buffer[..n])?;
        written += n as u64;
    }
    Ok(())
}

fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64().max(1e-9)
}

fn page_cache_write_mb_per_s(dir: &Path, bytes: u64) -> anyhow::Result<f64> {
    let file = scratch_file(dir)?;
    let start = Instant::now();
    write_sequentially(file.as_file(), bytes)?;
    Ok(mb_per_s(bytes, start.elapsed()))
}

fn disk_sync_write_mb_per_s(dir: &Path, bytes: u64) -> anyhow::Result<f64> {
    let file = scratch_file(dir)?;
    let start = Instant::now();
    write_sequentially(file.as_file(), bytes)?;
    file.as_file().sync_data().context("fdatasync")?;
    Ok(mb_per_s(bytes, start.elapsed()))
}

/// Appends of `write_bytes`, each made durable before the next, for `duration`: rounds per
/// second. The file grows as a log does, so each `fdatasync` also commits its new length.
fn syncs_per_s(dir: &Path, write_bytes: usize, duration: Duration) -> anyhow::Result<f64> {
    let file = scratch_file(dir)?;
    let mut out = file.as_file();
    let buffer = vec![b'x'; write_bytes];
    let start = Instant::now();
    let mut rounds = 0u64;
    while rounds == 0 || start.elapsed() < duration {
        out.write_all(&buffer)?;
        out.sync_data().context("fdatasync")?;
        rounds += 1;
    }
    Ok(rounds as f64 / start.elapsed().as_secs_f64())
}
