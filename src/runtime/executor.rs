//! Starts one pinned glommio executor (one io_uring) per shard.

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use glommio::{LocalExecutorBuilder, Placement, PoolPlacement};

/// io_uring buffer memory per shard; kept small so that many shards fit the default
/// RLIMIT_MEMLOCK (8 MiB) of an unprivileged user.
const IO_MEMORY_BYTES: usize = 512 * 1024;

/// Runs `shard_main(shard_id, payload)` on one executor per payload, each pinned to a CPU
/// (round-robin over the CPUs this process may use), and waits for all of them to return.
/// An idle executor spins for `spin_before_park` before it sleeps.
pub fn run_pinned<T, F, Fut>(payloads: Vec<T>, spin_before_park: Duration, shard_main: F) -> anyhow::Result<()>
where
    T: Send + 'static,
    F: Fn(usize, T) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = anyhow::Result<()>> + 'static,
{
    let cpus = allowed_cpus();
    let mut handles = Vec::with_capacity(payloads.len());
    for (shard_id, payload) in payloads.into_iter().enumerate() {
        let shard_main = shard_main.clone();
        let cpu = cpus[shard_id % cpus.len()];
        let mut builder = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&format!("shard-{shard_id}"))
            .io_memory(IO_MEMORY_BYTES)
            .blocking_thread_pool_placement(PoolPlacement::Unbound(super::file::BLOCKING_THREADS));
        if !spin_before_park.is_zero() {
            builder = builder.spin_before_park(spin_before_park);
        }
        let handle = builder
            .spawn(move || async move { shard_main(shard_id, payload).await })
            .map_err(|e| anyhow::anyhow!("starting shard {shard_id} on CPU {cpu}: {e}"))?;
        handles.push(handle);
    }
    let mut first_error = None;
    for (shard_id, handle) in handles.into_iter().enumerate() {
        let result = handle
            .join()
            .map_err(|e| anyhow::anyhow!("shard {shard_id} panicked: {e:?}"))
            .and_then(|r| r.with_context(|| format!("shard {shard_id}")));
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Lets up to `workers` of the kernel's io_uring workers run this shard's file I/O at once
/// (io-wq's bounded workers: buffered writes, fdatasyncs, reads that miss the page cache; ext4
/// takes none of them without blocking, so the ring hands every one to a worker). Must run on
/// the shard's thread, whose workers they are.
///
/// Left to the kernel, the limit is fixed when the thread creates its first ring, at the
/// smaller of that ring's depth and 4 × the CPUs online, and glommio's probe of the kernel
/// creates a 2-entry ring first on the first shard's thread: that shard had 2 workers, so
/// with many partitions the fsyncs of two of them took both, and every other partition's
/// writes and fsyncs queued behind them (`vendor/glommio/PATCHES.md`, patch 4).
pub fn set_file_io_workers(workers: u32) -> std::io::Result<()> {
    assert!(workers > 0, "0 would leave the limit as it is");
    glommio::executor().set_io_wq_max_workers(workers, 0).map(drop)
}

/// The limit [`set_file_io_workers`] sets, as the kernel holds it for this shard.
pub fn file_io_workers() -> std::io::Result<u32> {
    glommio::executor().set_io_wq_max_workers(0, 0).map(|(bounded, _)| bounded)
}

/// How many CPUs this process may run on (its affinity mask, e.g. from `taskset`).
pub fn allowed_cpu_count() -> usize {
    allowed_cpus().len()
}

/// The CPUs this process may run on, in order.
pub fn allowed_cpus() -> Vec<usize> {
    let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0));
    let cpus: Vec<usize> = match set {
        Ok(set) => (0..nix::sched::CpuSet::count()).filter(|&cpu| set.is_set(cpu).unwrap_or(false)).collect(),
        Err(_) => Vec::new(),
    };
    if cpus.is_empty() { vec![0] } else { cpus }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};

    use super::super::MeshBuilder;

    /// Every shard gets the workers it is given, the first one too, whose thread created
    /// glommio's 2-entry probe ring before its own rings (which left it 2 workers).
    #[test]
    fn each_shard_runs_its_file_io_on_as_many_kernel_workers_as_set() {
        let limits = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = limits.clone();
        super::run_pinned(vec![(); 2], std::time::Duration::ZERO, move |shard, ()| {
            let seen = seen.clone();
            async move {
                super::set_file_io_workers(24)?;
                seen.lock().unwrap().push((shard, super::file_io_workers()?));
                Ok(())
            }
        })
        .unwrap();
        let mut limits = limits.lock().unwrap().clone();
        limits.sort();
        assert_eq!(limits, [(0, 24), (1, 24)]);
    }

    /// A sleeping reactor wakes when its next timer is due. Paced sleeps beside socket I/O, as
    /// a producer at a fixed rate makes them, once overslept until the preemption timer fired
    /// (100 ms; vendor/glommio/PATCHES.md, patch 6): here that timer is 10 s, so that a missed
    /// wake-up shows as seconds, far beyond any scheduling noise.
    #[test]
    fn paced_sleeps_beside_socket_io_wake_when_due() {
        use std::io::{Read, Write};
        use std::time::{Duration, Instant};

        use futures::{AsyncReadExt, AsyncWriteExt};

        const ROUNDS: usize = 3_000;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let echo = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut buffer = [0u8; 1024];
            while let Ok(n @ 1..) = stream.read(&mut buffer) {
                stream.write_all(&buffer[..n]).unwrap();
            }
        });
        let longest = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .preempt_timer(Duration::from_secs(10))
            .spawn(move || async move {
                let stream = glommio::net::TcpStream::connect(address).await.unwrap();
                let (mut reader, mut writer) = stream.split();
                // Replies are read by a task of their own, so a read is pending while the
                // writer sleeps.
                let replies = glommio::spawn_local(async move {
                    let mut reply = [0u8; 64];
                    for _ in 0..ROUNDS {
                        reader.read_exact(&mut reply).await.unwrap();
                    }
                });
                let message = [7u8; 64];
                let mut longest = Duration::ZERO;
                for _ in 0..ROUNDS {
                    let asleep = Instant::now();
                    glommio::timer::sleep(Duration::from_micros(100)).await;
                    longest = longest.max(asleep.elapsed());
                    writer.write_all(&message).await.unwrap();
                }
                replies.await;
                writer.close().await.unwrap();
                longest
            })
            .unwrap()
            .join()
            .unwrap();
        echo.join().unwrap();
        assert!(longest < Duration::from_secs(2), "a 100 µs sleep lasted {longest:?}");
    }

    /// `run_pinned` hands each shard a clone of the closure, and with it of the mesh builder it
    /// captured; the shards clone, join (dropping) and end (dropping) theirs at the same time.
    /// Clones racing on a non-atomic count once freed the builder's state early or twice
    /// (vendor/glommio/PATCHES.md, patch 3): this aborted in about 2 rounds in 3.
    #[test]
    fn mesh_builder_clones_are_cloned_and_dropped_on_many_threads() {
        const ROUNDS: usize = 8;
        const THREADS: usize = 2;
        const CLONES_PER_THREAD: usize = 1_000_000;
        for _ in 0..ROUNDS {
            let mesh = MeshBuilder::<u64, _>::full(THREADS, 1);
            let start = Arc::new(Barrier::new(THREADS));
            let threads: Vec<_> = (0..THREADS)
                .map(|_| {
                    let (mesh, start) = (mesh.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        for _ in 0..CLONES_PER_THREAD {
                            drop(mesh.clone());
                        }
                    })
                })
                .collect();
            drop(mesh);
            for thread in threads {
                thread.join().expect("a cloning thread panicked");
            }
        }
    }
}
