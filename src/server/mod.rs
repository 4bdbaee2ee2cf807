//! Per-shard network front: the accept loop and connections.
//!
//! Every shard binds the same address with SO_REUSEPORT and serves the connections the kernel
//! hands it; a connection lives and dies on the shard that accepted it.

pub mod admin;
pub mod budget;
pub mod connection;

use std::rc::Rc;

use crate::runtime::{TcpListener, spawn_local};
use crate::shard::Shard;

/// Accepts connections until the future is dropped (at shutdown).
pub async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    let share = shard.config.queued_max_request_bytes.map(|bytes| (bytes / shard.shard_count).max(1));
    let budget = budget::MemoryBudget::new(share);
    loop {
        match listener.accept().await {
            Ok(stream) => {
                spawn_local(connection::serve(shard.clone(), stream, budget.clone())).detach();
            }
            // Out of file descriptors or a connection reset before accept: keep serving.
            Err(e) => tracing::warn!(shard = shard.id, error = %e, "accept failed"),
        }
    }
}
