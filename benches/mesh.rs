//! A cross-core round trip: shard 0 asks shard 1 (another pinned executor) for a cheap
//! answer through the real router (`Shard::invoke_on` over the channel mesh) and awaits it.
//! This is the fixed cost every request pays when its partition lives on another core.

use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use sluice::cluster::MetadataImage;
use sluice::config::BrokerConfig;
use sluice::runtime::MeshBuilder;
use sluice::runtime::executor::run_pinned;
use sluice::shard::router::Metrics;
use sluice::shard::{Shard, ShardRequest};

/// Runs `iterations` round trips from shard 0 to shard 1; returns the time they took.
fn round_trips(iterations: u64, spin_before_park: Duration) -> Duration {
    let mesh = MeshBuilder::<ShardRequest, _>::full(2, 1024);
    let (elapsed_tx, elapsed_rx) = std::sync::mpsc::channel();
    let shard_1_done = Arc::new(AtomicBool::new(false));
    run_pinned(vec![Some(elapsed_tx), None], spin_before_park, move |id, elapsed_tx| {
        let mesh = mesh.clone();
        let shard_1_done = shard_1_done.clone();
        async move {
            let ticks = sluice::runtime::tick_while_connecting();
            let (senders, receivers) = mesh.join().await.map_err(|e| anyhow::anyhow!("joining the mesh: {e}"))?;
            let config = BrokerConfig { cores: 2, ..BrokerConfig::default() };
            let shard = Rc::new(Shard::new(id, config, ("127.0.0.1".into(), 9092), MetadataImage::default(), senders));
            match elapsed_tx {
                // Shard 1 answers until shard 0 drops its end of the mesh.
                None => {
                    drop(ticks);
                    shard.serve_mesh(receivers).await;
                    shard_1_done.store(true, Ordering::Release);
                }
                Some(elapsed_tx) => {
                    drop(receivers);
                    // The first round trip finishes connecting the channels; then no ticks.
                    shard.invoke_on(1, Metrics).await;
                    drop(ticks);
                    let start = Instant::now();
                    for _ in 0..iterations {
                        let snapshot = shard.invoke_on(1, Metrics).await;
                        assert_eq!(snapshot.shard, 1);
                    }
                    elapsed_tx.send(start.elapsed()).unwrap();
                    // Shard 0 ends after shard 1, so that each round trip's teardown is the
                    // same. (Ending in either order once corrupted the heap: the eventfd read
                    // that vendor/glommio/PATCHES.md fixes.)
                    drop(shard);
                    while !shard_1_done.load(Ordering::Acquire) {
                        sluice::runtime::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
            Ok(())
        }
    })
    .unwrap();
    elapsed_rx.recv().unwrap()
}

fn mesh(c: &mut Criterion) {
    c.bench_function("cross-core round trip (invoke_on over the mesh)", |b| {
        b.iter_custom(|n| round_trips(n, Duration::ZERO))
    });
    // What `reactor.spin.before.park.us=100` buys: the answering shard is awake when asked.
    c.bench_function("cross-core round trip, shards spinning 100 µs before parking", |b| {
        b.iter_custom(|n| round_trips(n, Duration::from_micros(100)))
    });
}

criterion_group!(benches, mesh);
criterion_main!(benches);
