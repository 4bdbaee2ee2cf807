//! Raft messages between the controllers, over TCP on each voter's controller listener (its
//! address in `controller.quorum.voters`), run by tasks on shard 0.
//!
//! Framing: `[length u32 big endian][a raft-rs Message in its protobuf encoding]`, at most
//! [`MESSAGE_MAX_BYTES`]. A peer that sends a larger frame or one that does not decode has its
//! connection closed, with the reason logged; nothing it sends can panic the node or make it
//! allocate more than one bounded frame.
//!
//! A connection that opens with [`BROKER_CALLS_PREAMBLE`] instead (a length no Raft frame may
//! have) carries Kafka requests from a broker to the controller: BrokerRegistration and
//! BrokerHeartbeat (`cluster::brokers`).
//!
//! Each peer has one outgoing connection, made (and remade, after a failure) by its sender
//! task, fed through a bounded queue: when the queue is full or the peer unreachable, messages
//! are dropped, which Raft tolerates (it retries with heartbeats and appends). Incoming
//! connections are only read: a node sends its messages on its own outgoing connections.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use futures::channel::mpsc;
use futures::{AsyncReadExt, AsyncWriteExt, SinkExt, StreamExt};
use protobuf::Message as _;
use raft::prelude::Message;

use super::Quorum;
use super::observer::{self, OBSERVER_PREAMBLE};
use crate::cluster::brokers::{self, Controller};
use crate::runtime::{Task, TcpListener, TcpStream, sleep, spawn_local};

/// The largest message: a snapshot carries the whole image.
pub const MESSAGE_MAX_BYTES: usize = 64 << 20;
/// The first four bytes of a broker's connection to the controller ("KAFK"): read as a Raft
/// frame's length it would be far above [`MESSAGE_MAX_BYTES`], so no Raft peer sends it.
pub const BROKER_CALLS_PREAMBLE: [u8; 4] = *b"KAFK";
const _: () = assert!(u32::from_be_bytes(BROKER_CALLS_PREAMBLE) as usize > MESSAGE_MAX_BYTES);
/// Messages waiting for one peer's connection before newer ones are dropped.
const QUEUED_PER_PEER: usize = 1024;
/// Between attempts to reach a peer that is down.
const RECONNECT_DELAY: Duration = Duration::from_millis(200);
/// Incoming connections served at once (a handful of voters, reconnecting).
const INCOMING_MAX: usize = 64;

/// The senders to every other voter.
pub struct Peers {
    queues: HashMap<u64, mpsc::Sender<Message>>,
    _tasks: Vec<Task<()>>,
}

impl Peers {
    /// Starts a sender task for each of `peers` (raft id, address).
    pub fn start(peers: Vec<(u64, SocketAddr)>) -> Peers {
        let mut queues = HashMap::new();
        let mut tasks = Vec::new();
        for (id, address) in peers {
            let (queue, messages) = mpsc::channel(QUEUED_PER_PEER);
            queues.insert(id, queue);
            tasks.push(spawn_local(send_to(address, messages)));
        }
        Peers { queues, _tasks: tasks }
    }

    /// Queues `message` for its recipient; drops it when that peer's queue is full. Says
    /// whether it was queued.
    pub fn send(&mut self, message: Message) -> bool {
        match self.queues.get_mut(&message.to) {
            Some(queue) => {
                let queued = queue.try_send(message).is_ok();
                if !queued {
                    tracing::debug!("a Raft message was dropped: its peer's queue is full");
                }
                queued
            }
            None => {
                tracing::warn!(to = message.to, "a Raft message for a node outside the quorum");
                false
            }
        }
    }
}

async fn send_to(address: SocketAddr, mut messages: mpsc::Receiver<Message>) {
    let mut stream: Option<TcpStream> = None;
    while let Some(message) = messages.next().await {
        if stream.is_none() {
            match TcpStream::connect(address).await {
                Ok(connected) => {
                    let _ = connected.set_nodelay(true);
                    stream = Some(connected);
                }
                Err(e) => {
                    tracing::debug!(%address, error = %e, "controller unreachable");
                    // Drop what queued meanwhile: it is stale by the time the peer is back.
                    sleep(RECONNECT_DELAY).await;
                    while messages.try_recv().is_ok() {}
                    continue;
                }
            }
        }
        let bytes = match message.write_to_bytes() {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::error!(error = %e, "encoding a Raft message");
                continue;
            }
        };
        let mut frame = Vec::with_capacity(4 + bytes.len());
        frame.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        frame.extend_from_slice(&bytes);
        let connection = stream.as_mut().expect("connected above");
        if let Err(e) = connection.write_all(&frame).await {
            tracing::debug!(%address, error = %e, "sending to a controller; reconnecting");
            stream = None;
        }
    }
}

/// Accepts other controllers' connections and hands every message read to `inbox`; brokers'
/// connections are answered by `controller`, observers' from what `quorum` applied.
pub async fn serve(listener: TcpListener, inbox: mpsc::Sender<Message>, controller: Controller, quorum: Quorum) {
    let accept = || async {
        loop {
            match listener.accept().await {
                Ok(stream) => return Some(stream),
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a controller connection");
                    sleep(RECONNECT_DELAY).await;
                }
            }
        }
    };
    crate::runtime::serve_bounded(INCOMING_MAX, accept, |stream| {
        let (inbox, controller, quorum) = (inbox.clone(), controller.clone(), quorum.clone());
        async move {
            let peer = stream.peer_addr().map_or_else(|_| "unknown".to_string(), |a| a.to_string());
            if let Err(reason) = read_messages(stream, inbox, controller, quorum).await {
                tracing::warn!(%peer, %reason, "closing a controller connection");
            }
        }
    })
    .await;
}

/// Reads frames until the peer closes (Ok) or sends something wrong (the reason).
async fn read_messages(
    mut stream: TcpStream,
    mut inbox: mpsc::Sender<Message>,
    controller: Controller,
    quorum: Quorum,
) -> Result<(), String> {
    let mut first = true;
    loop {
        let mut length = [0u8; 4];
        match stream.read_exact(&mut length).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.to_string()),
        }
        if std::mem::take(&mut first) {
            match length {
                BROKER_CALLS_PREAMBLE => return brokers::answer_calls(stream, controller).await,
                OBSERVER_PREAMBLE => return observer::answer(stream, quorum).await,
                _ => {}
            }
        }
        let length = u32::from_be_bytes(length) as usize;
        if length > MESSAGE_MAX_BYTES {
            return Err(format!("a frame of {length} bytes, above the limit of {MESSAGE_MAX_BYTES}"));
        }
        let mut body = vec![0; length];
        stream.read_exact(&mut body).await.map_err(|e| e.to_string())?;
        let message = Message::parse_from_bytes(&body).map_err(|e| format!("an undecodable Raft message: {e}"))?;
        if inbox.send(message).await.is_err() {
            return Ok(());
        }
    }
}
