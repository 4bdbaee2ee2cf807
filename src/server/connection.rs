//! One client connection: read frames, check the header, run handlers concurrently, write the
//! responses strictly in request order.
//!
//! Clients pipeline, so the reader keeps going while earlier requests are still being served;
//! at most `queued.max.requests.per.connection` requests may wait for their turn to be
//! written, after which the reader waits (backpressure). A frame that cannot be answered
//! within the protocol (garbage, oversize, unknown API, malformed body) closes the connection
//! with a logged reason; other connections are unaffected.
//!
//! Memory is bounded whatever peers send: a request's bytes are allocated as they arrive,
//! within the shard's request budget ([`super::budget`]), and a connection that makes no
//! progress for `connections.max.idle.ms` (idle, trickling a frame, or not reading its
//! responses) is closed.

use std::cell::Cell;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use futures::channel::mpsc;
use futures::future::Either;
use futures::{AsyncRead, AsyncReadExt, AsyncWriteExt, SinkExt, StreamExt};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::Decodable;

use crate::handlers;
use crate::protocol::frame::{FrameError, read_frame_size};
use crate::protocol::versions;
use crate::runtime::receive::read_exact_into;
use crate::runtime::zero_copy::{Part, Probe, make_nonblocking, write_parts};
use crate::runtime::{Task, TcpStream, sleep, spawn_local};
use crate::server::budget::{Grant, MemoryBudget};
use crate::shard::Shard;

/// Serves `stream` until the peer closes it, it misbehaves, it stays idle for
/// `connections.max.idle.ms`, or shutdown begins. Request bytes are taken from `budget`, the
/// shard's share of `queued.max.request.bytes`.
pub async fn serve(shard: Rc<Shard>, stream: TcpStream, budget: Rc<MemoryBudget>) {
    let peer = stream.peer_addr().ok();
    let _ = stream.set_nodelay(true);
    if let Err(e) = make_nonblocking(&stream) {
        tracing::warn!(?peer, error = %e, "closing connection: cannot make its socket non-blocking");
        return;
    }
    let socket = std::os::fd::AsRawFd::as_raw_fd(&stream);
    let (mut reader, mut writer) = stream.split();
    let (mut queue, mut responses) =
        mpsc::channel::<Task<(Outcome, InFlight)>>(shard.config.queued_max_requests_per_connection);
    let activity = Rc::new(Activity { last_progress: Cell::new(Instant::now()), handling: Cell::new(0) });

    let write_shard = shard.clone();
    let write_activity = activity.clone();
    let writer_task = spawn_local(async move {
        let mut probe = Probe::default();
        while let Some(task) = responses.next().await {
            let (outcome, in_flight) = task.await;
            let written = match outcome {
                Outcome::Respond(parts) => {
                    let length: usize = parts.iter().map(Part::len).sum();
                    tracing::trace!(?peer, length, "response");
                    let result = write_parts(&mut writer, socket, parts, &mut probe).await;
                    let mut metrics = write_shard.metrics.borrow_mut();
                    metrics.bytes_out += length as u64;
                    if let Ok(sent) = &result {
                        metrics.fetch_bytes_zero_copy += sent.zero_copy;
                        metrics.fetch_bytes_copied += sent.copied;
                        metrics.fetch_bytes_io_uring += sent.io_uring;
                        metrics.fetch_cold_chunks += sent.cold_chunks;
                        metrics.fetch_page_cache_probes += sent.probes;
                    }
                    result.map(|_| ())
                }
                Outcome::Silent => Ok(()),
                Outcome::Close => Err(std::io::ErrorKind::InvalidData.into()),
            };
            drop(in_flight);
            write_activity.last_progress.set(Instant::now());
            if let Err(e) = written {
                tracing::debug!(?peer, error = %e, "closing after response stream ended");
                let _ = writer.close().await;
                return;
            }
        }
        let _ = writer.flush().await;
    });

    let request_max = shard.config.socket_request_max_bytes;
    let reading = async {
        loop {
            let (frame, grant) = match read_request(&mut reader, socket, request_max, &budget).await {
                Ok(read) => {
                    shard.metrics.borrow_mut().bytes_in += 4 + read.0.len() as u64;
                    activity.last_progress.set(Instant::now());
                    read
                }
                Err(e) => {
                    tracing::debug!(?peer, reason = %e, "closing connection");
                    break;
                }
            };
            if shard.stopping.get() {
                break;
            }
            let request = match parse_request(frame) {
                Ok(request) => request,
                Err(Refusal::Close(reason)) => {
                    tracing::info!(?peer, %reason, "closing connection");
                    break;
                }
                Err(Refusal::Answer(response)) => {
                    drop(grant);
                    let in_flight = InFlight::new(&shard);
                    let answer =
                        spawn_local(async move { (Outcome::Respond(vec![Part::Memory(response)]), in_flight) });
                    if queue.send(answer).await.is_err() {
                        break;
                    }
                    continue;
                }
            };
            let (header, body) = request;
            tracing::trace!(
                ?peer,
                api_key = header.request_api_key,
                version = header.request_api_version,
                correlation_id = header.correlation_id,
                "request"
            );
            let in_flight = InFlight::new(&shard);
            let handler_shard = shard.clone();
            let handler_activity = activity.clone();
            handler_activity.handling.set(handler_activity.handling.get() + 1);
            let received = Instant::now();
            let task = spawn_local(async move {
                #[cfg(debug_assertions)]
                panic_if_asked(&header);
                let api_key = header.request_api_key;
                let outcome = handlers::handle(&handler_shard, header, body, peer).await;
                // The request's bytes are gone (decoded, appended, or dropped with the frame).
                drop(grant);
                handler_activity.handling.set(handler_activity.handling.get() - 1);
                handler_activity.last_progress.set(Instant::now());
                let latency_us = u64::try_from(received.elapsed().as_micros()).unwrap_or(u64::MAX);
                if latency_us > SLOW_REQUEST_US {
                    tracing::warn!(?peer, api_key, latency_ms = latency_us / 1000, "slow request");
                }
                handler_shard.metrics.borrow_mut().record_request(api_key, latency_us);
                let outcome = match outcome {
                    Ok(Some(response)) => Outcome::Respond(response),
                    Ok(None) => Outcome::Silent,
                    Err(e) => {
                        // A body that does not decode (or, a bug, a response that does not encode):
                        // the protocol has no way to answer, so the writer closes the socket once
                        // earlier responses are out.
                        tracing::info!(?peer, api_key, error = format!("{e:#}"), "cannot answer request");
                        Outcome::Close
                    }
                };
                (outcome, in_flight)
            });
            if queue.send(task).await.is_err() {
                break;
            }
        }
    };
    let idle = async {
        match shard.config.connections_max_idle {
            Some(idle) => until_idle(&activity, idle).await,
            None => futures::future::pending().await,
        }
    };
    let went_idle = {
        futures::pin_mut!(reading, idle);
        matches!(futures::future::select(reading, idle).await, Either::Right(_))
    };
    if went_idle {
        // Reading stops where it is (a partial frame gives its budget back) and responses not
        // yet written are dropped with the socket.
        tracing::info!(?peer, "closing idle connection");
        return;
    }
    // Let the writer finish the responses already owed, then drop the socket.
    drop(queue);
    writer_task.await;
}

/// Bytes of a request read before more are granted: small, so that a peer announcing a large
/// frame and sending slowly holds little of the budget.
const FIRST_CHUNK_BYTES: usize = 64 * 1024;

/// Frames up to this size are read whole, in one allocation and one read, while granting it
/// leaves at least half the budget: the common case, as fast as it can be. What slow peers can
/// pin this way stays below half the budget; the rest is read as bytes arrive.
const WHOLE_FRAME_MAX_BYTES: usize = 8 << 20;

/// Reads one request frame. A small frame when the budget is plentiful is granted and read
/// whole. Otherwise the body grows as its bytes arrive, by chunks, each granted by `budget`
/// before it is allocated and at most as large as what already arrived, so what a peer holds
/// is at most twice what it sent plus one first chunk, and a frame that arrives fast is still
/// read in few large reads. Returns the frame with its grant.
async fn read_request<R: AsyncRead + Unpin>(
    reader: &mut R,
    socket: RawFd,
    max: usize,
    budget: &Rc<MemoryBudget>,
) -> Result<(Bytes, Grant), FrameError> {
    let size = read_frame_size(reader, max).await?;
    let mut grant = budget.grant();
    if size <= WHOLE_FRAME_MAX_BYTES && budget.leaves_half(size) {
        grant.grow(size).await;
        let mut body = BytesMut::with_capacity(size);
        read_exact_into(reader, socket, &mut body, size).await?;
        return Ok((body.freeze(), grant));
    }
    let mut body = BytesMut::new();
    while body.len() < size {
        let chunk = (size - body.len()).min(body.len().max(FIRST_CHUNK_BYTES));
        grant.grow(chunk).await;
        read_exact_into(reader, socket, &mut body, chunk).await?;
    }
    Ok((body.freeze(), grant))
}

/// What the idle watchdog of a connection looks at.
struct Activity {
    /// When a request was last read whole, handled, or its response written.
    last_progress: Cell<Instant>,
    /// Requests whose handler has not finished (a long poll is not idleness).
    handling: Cell<usize>,
}

/// Resolves once the connection has made no progress for `idle` with no request being
/// handled: an idle client, one that trickles a frame or cannot get budget for it, or one
/// that does not read its responses.
async fn until_idle(activity: &Activity, idle: Duration) {
    loop {
        let quiet = activity.last_progress.get().elapsed();
        if quiet < idle {
            sleep(idle - quiet).await;
        } else if activity.handling.get() > 0 {
            sleep(idle).await;
        } else {
            return;
        }
    }
}

/// One request counted in its shard's `in_flight` from the moment it is read until its
/// response is written, or until it is dropped unanswered (the peer went away with requests
/// still queued): shutdown waits for the count to reach zero, so it must never leak.
pub(crate) struct InFlight(Rc<Shard>);

impl InFlight {
    pub(crate) fn new(shard: &Rc<Shard>) -> InFlight {
        shard.in_flight.set(shard.in_flight.get() + 1);
        InFlight(shard.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.set(self.0.in_flight.get() - 1);
    }
}

/// Test hook, compiled into debug builds only: a request whose client id is the value of
/// `SLUICE_TEST_PANIC_CLIENT_ID` panics in its handler task, as a bug would there.
#[cfg(debug_assertions)]
fn panic_if_asked(header: &RequestHeader) {
    static CLIENT_ID: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let asked = CLIENT_ID.get_or_init(|| std::env::var("SLUICE_TEST_PANIC_CLIENT_ID").ok());
    if asked.is_some() && header.client_id.as_deref() == asked.as_deref() {
        panic!("test hook: panicking on request from client {asked:?}");
    }
}

/// Requests slower than this are logged: long polls and rebalances aside, they mean trouble.
const SLOW_REQUEST_US: u64 = 2_000_000;

/// What the writer does for one request, in its turn.
enum Outcome {
    /// The frame in pieces: memory, and file ranges sent without a copy.
    Respond(Vec<Part>),
    /// acks=0 produce: Kafka sends no response.
    Silent,
    Close,
}

/// Why a frame gets no handler.
pub enum Refusal {
    /// Close the connection, logging why.
    Close(String),
    /// Send this frame instead of running a handler.
    Answer(Bytes),
}

/// Checks the API key and version, then decodes the header; returns it with the body. Public
/// for the fuzz targets (`fuzz/`), which feed it arbitrary frames.
pub fn parse_request(mut frame: Bytes) -> Result<(RequestHeader, Bytes), Refusal> {
    if frame.len() < 8 {
        return Err(Refusal::Close(format!("request of {} bytes has no header", frame.len())));
    }
    let api_key_code = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let Ok(api_key) = ApiKey::try_from(api_key_code) else {
        return Err(Refusal::Close(format!("unknown API key {api_key_code}")));
    };
    let Some((min, max)) = versions::served(api_key) else {
        return Err(Refusal::Close(format!("API {api_key:?} is not supported yet")));
    };
    if version < min || version > max {
        if api_key == ApiKey::ApiVersions {
            // KIP-511: answer in v0 form so that the client can retry with a version we serve.
            let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
            return Err(Refusal::Answer(handlers::api_versions::unsupported_version(correlation_id)));
        }
        return Err(Refusal::Close(format!("{api_key:?} v{version} is not served (we serve v{min}..v{max})")));
    }
    let header_version = api_key.request_header_version(version);
    let header = RequestHeader::decode(&mut frame, header_version)
        .map_err(|e| Refusal::Close(format!("malformed request header: {e}")))?;
    debug_assert!(frame.remaining() <= i32::MAX as usize);
    Ok((header, frame))
}
