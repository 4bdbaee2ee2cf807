//! Clean shutdown on SIGINT/SIGTERM, in two phases across all shards:
//! 1. every shard stops accepting and lets its in-flight requests finish (they may still need
//!    other shards, so every shard keeps serving the mesh meanwhile);
//! 2. once all shards have drained, every shard flushes and closes its partitions.
//!
//! A dedicated signal thread (not a shard) coordinates the phases, so no shard ever blocks.

use std::sync::mpsc;
use std::time::Duration;

use futures::channel::oneshot;
use nix::sys::signal::{SigSet, Signal};

/// How long phase 1 may take before the partitions are closed anyway.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// One shard's end of the shutdown protocol.
pub struct ShardShutdown {
    stop: Option<oneshot::Receiver<()>>,
    drained: mpsc::Sender<usize>,
    close: oneshot::Receiver<()>,
}

impl ShardShutdown {
    /// Resolves once shutdown was asked for (or the coordinator is gone).
    pub async fn stop_requested(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.await;
        }
    }

    /// Reports this shard drained and waits until every shard has.
    pub async fn drained(self, shard_id: usize) {
        let _ = self.drained.send(shard_id);
        let _ = self.close.await;
    }
}

/// Blocks SIGINT and SIGTERM in this thread (and so in every thread started after) and starts
/// the thread that waits for them. Call before starting the shards.
pub fn install(shards: usize) -> anyhow::Result<Vec<ShardShutdown>> {
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.thread_block()?;

    let (drained_tx, drained_rx) = mpsc::channel();
    let mut stops = Vec::with_capacity(shards);
    let mut closes = Vec::with_capacity(shards);
    let mut ends = Vec::with_capacity(shards);
    for _ in 0..shards {
        let (stop_tx, stop_rx) = oneshot::channel();
        let (close_tx, close_rx) = oneshot::channel();
        stops.push(stop_tx);
        closes.push(close_tx);
        ends.push(ShardShutdown { stop: Some(stop_rx), drained: drained_tx.clone(), close: close_rx });
    }
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        let signal = signals.wait();
        tracing::info!(?signal, "shutting down");
        for stop in stops {
            let _ = stop.send(());
        }
        let deadline = std::time::Instant::now() + DRAIN_DEADLINE;
        for _ in 0..shards {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if drained_rx.recv_timeout(left).is_err() {
                tracing::warn!("shards did not drain in time; closing anyway");
                break;
            }
        }
        for close in closes {
            let _ = close.send(());
        }
    })?;
    Ok(ends)
}
