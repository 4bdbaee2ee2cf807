//! The admin HTTP listener (`--admin`, default 127.0.0.1:9644): `GET /metrics` answers with
//! every shard's counters in Prometheus text format. Served by shard 0; each scrape gathers
//! a snapshot from every shard through the mesh.

use std::rc::Rc;

use futures::{AsyncReadExt, AsyncWriteExt};

use crate::metrics::{Snapshot, render};
use crate::runtime::{TcpListener, TcpStream, spawn_local};
use crate::shard::Shard;
use crate::shard::router::Metrics;

/// Longest request head we read; anything longer is not a scrape.
const REQUEST_HEAD_MAX_BYTES: usize = 8192;

pub async fn serve(shard: Rc<Shard>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                spawn_local(answer(shard.clone(), stream)).detach();
            }
            Err(e) => tracing::warn!(error = %e, "admin accept failed"),
        }
    }
}

async fn answer(shard: Rc<Shard>, mut stream: TcpStream) {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
        if head.len() > REQUEST_HEAD_MAX_BYTES {
            return;
        }
    }
    let request_line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let (status, content_type, body) = match request_line.split(|&b| b == b' ').collect::<Vec<_>>()[..] {
        [b"GET", b"/metrics", _] => {
            ("200 OK", "text/plain; version=0.0.4; charset=utf-8", render(&snapshots(&shard).await))
        }
        [b"GET", _, _] => ("404 Not Found", "text/plain", "only /metrics is served here\n".to_string()),
        _ => ("405 Method Not Allowed", "text/plain", "GET only\n".to_string()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.close().await;
}

async fn snapshots(shard: &Rc<Shard>) -> Vec<Snapshot> {
    shard.on_every_shard(|| Metrics).await.into_iter().map(|snapshot| *snapshot).collect()
}
