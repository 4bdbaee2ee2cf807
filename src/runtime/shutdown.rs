//! Clean shutdown on SIGINT/SIGTERM, in two phases across all shards:
//! 1. every shard stops accepting and lets its in-flight requests finish (they may still need
//!    other shards, so every shard keeps serving the mesh meanwhile);
//! 2. once all shards have drained, or at the drain deadline whatever clients do (a client
//!    that never reads its response keeps a request in flight), every shard flushes and
//!    closes its partitions; connections still open are dropped with the shard.
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

    /// Waits until `is_drained()` holds, reports this shard drained, and waits until every
    /// shard has; returns early, drained or not, once the drain deadline has passed, so that
    /// no client can hold the shutdown up.
    pub async fn drain(mut self, shard_id: usize, is_drained: impl Fn() -> bool) {
        while !is_drained() {
            // `Ok(None)`: no word from the coordinator yet; anything else means close now.
            if !matches!(self.close.try_recv(), Ok(None)) {
                return;
            }
            glommio::timer::sleep(DRAIN_POLL).await;
        }
        let _ = self.drained.send(shard_id);
        let _ = self.close.await;
    }
}

/// How often a draining shard looks at its in-flight count.
const DRAIN_POLL: Duration = Duration::from_millis(5);

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
