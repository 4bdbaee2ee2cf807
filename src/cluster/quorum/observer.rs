//! Broker-only nodes (`process.roles = broker`): they follow the metadata log without a vote.
//!
//! Such a node is no Raft member at all. Its observer task (on shard 0) asks a voter for the
//! committed image newer than the one it installed (`Fetch`, a long poll: the voter answers
//! once it has applied past it, or after [`FETCH_WAIT`] with no image), installs what comes
//! back on every shard, and learns from each answer which voter leads. The changes its own
//! controller code makes (a CreateTopics sent to this broker) travel as `Propose` to a voter, which proposes them in its quorum; the answer names the voter's applied
//! index, and the proposer is answered once this node installed an image at least that new. So
//! a broker-only node answers its clients as a voter does: after the change is in its image.
//!
//! Why not a raft-rs learner: a learner must be added to the Raft configuration through the
//! log (a conf change, with its address, persisted in every snapshot), and the leader pushes
//! entries to it. Fetching the committed image changes nothing in the quorum's membership (a
//! broker can never vote, whatever it says), needs no address for the broker, is served by
//! any voter (only committed, applied state leaves it), and is what a KRaft broker does too
//! (it fetches the metadata log; it is no voter). The cost: each change ships the whole image
//! (a few hundred bytes per partition) to each broker, and a broker keeps no copy on disk: it
//! fetches the image again when it starts.
//!
//! Wire: on a voter's controller listener, a connection opened with [`OBSERVER_PREAMBLE`],
//! then size-prefixed frames (`i32` big endian) of JSON: an [`ObserverRequest`], answered in
//! order by an [`ObserverAnswer`]. A frame above [`super::transport::MESSAGE_MAX_BYTES`] or one
//! that does not decode closes the connection, logged.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::BufMut;
use futures::channel::{mpsc, oneshot};
use futures::future::LocalBoxFuture;
use futures::{AsyncWriteExt, FutureExt, StreamExt};
use serde::{Deserialize, Serialize};

use super::transport::MESSAGE_MAX_BYTES;
use super::{Install, Proposal, ProposeError, Quorum};
use crate::cluster::MetadataImage;
use crate::cluster::records::MetadataRecord;
use crate::protocol::frame::{FrameError, read_frame};
use crate::runtime::{TcpStream, sleep};

/// The first four bytes of an observer's connection ("SLMD"): read as a Raft frame's length it
/// is far above the limit, so no Raft peer sends it.
pub const OBSERVER_PREAMBLE: [u8; 4] = *b"SLMD";
const _: () = assert!(u32::from_be_bytes(OBSERVER_PREAMBLE) as usize > MESSAGE_MAX_BYTES);
/// How long a voter holds a fetch that finds nothing newer.
pub const FETCH_WAIT: Duration = Duration::from_secs(1);
/// A voter that does not answer within its wait and this much is given up for another.
const ANSWER_SLACK: Duration = Duration::from_secs(3);
/// Between tries while no voter answers.
const RETRY_DELAY: Duration = Duration::from_millis(100);

#[derive(Debug, Serialize, Deserialize)]
pub enum ObserverRequest {
    /// The committed image, once the voter has applied past `after`.
    Fetch { after: u64 },
    /// A change for the quorum, proposed by the voter.
    Propose(Vec<MetadataRecord>),
}

#[derive(Debug, Serialize, Deserialize)]
pub enum ObserverAnswer {
    /// The voter's image at its applied index, and the quorum's leader as it knows it (0: none).
    Image { applied: u64, leader: u64, image: MetadataImage },
    /// Nothing newer within [`FETCH_WAIT`].
    Unchanged { leader: u64 },
    /// The change's outcome; when made, the voter's applied index once it had it.
    Proposed(Result<u64, ProposeError>),
}

/// The image a node has applied, at which index, and who waits for a newer one. A voter's is
/// what observers fetch; an observer's is what its proposers wait for.
#[derive(Default)]
pub struct Published {
    current: RefCell<(u64, Rc<MetadataImage>)>,
    waiters: RefCell<Vec<oneshot::Sender<()>>>,
}

impl Published {
    pub fn applied(&self) -> u64 {
        self.current.borrow().0
    }

    /// `image` is now applied up to `index`: whoever waits for it is woken.
    pub fn publish(&self, index: u64, image: MetadataImage) {
        *self.current.borrow_mut() = (index, Rc::new(image));
        for waiter in self.waiters.borrow_mut().drain(..) {
            let _ = waiter.send(());
        }
    }

    /// Resolves at the next publication (or never, if none comes).
    fn changed(&self) -> oneshot::Receiver<()> {
        let (sender, receiver) = oneshot::channel();
        let mut waiters = self.waiters.borrow_mut();
        // Those that gave up waiting (a fetch's wait ran out) go: the list stays bounded.
        waiters.retain(|w| !w.is_canceled());
        waiters.push(sender);
        receiver
    }

    /// Waits until something past `index` is published, up to `wait`; says whether it was.
    pub(super) async fn wait_past(&self, index: u64, wait: Duration) -> bool {
        let deadline = std::time::Instant::now() + wait;
        while self.applied() <= index {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            futures::select! {
                _ = self.changed().fuse() => {}
                _ = sleep(left).fuse() => {}
            }
        }
        true
    }
}

/// Serves an observer's connection on a voter (after its preamble), with what `quorum` (this
/// voter's) has applied. Returns the reason when it closes the connection for bad input.
pub async fn answer(mut stream: TcpStream, quorum: Quorum) -> Result<(), String> {
    loop {
        let request: ObserverRequest = match read_json(&mut stream).await {
            Ok(request) => request,
            Err(None) => return Ok(()),
            Err(Some(reason)) => return Err(reason),
        };
        let answer = match request {
            ObserverRequest::Fetch { after } => match quorum.published.wait_past(after, FETCH_WAIT).await {
                true => {
                    let (applied, image) = quorum.published.current.borrow().clone();
                    ObserverAnswer::Image { applied, leader: quorum.leader.get(), image: (*image).clone() }
                }
                false => ObserverAnswer::Unchanged { leader: quorum.leader.get() },
            },
            ObserverRequest::Propose(records) => {
                let outcome = quorum.propose(records).await;
                ObserverAnswer::Proposed(outcome.map(|()| quorum.published.applied()))
            }
        };
        write_json(&mut stream, &answer).await?;
    }
}

/// Starts a broker-only node's way to the quorum: the handle its controller proposes through
/// (answered once this node has installed the change), and the task (for shard 0) that
/// fetches and installs the committed image from `voters` (Raft id, controller listener).
pub fn start(node_id: u64, voters: Vec<(u64, SocketAddr)>, install: Install) -> (Quorum, LocalBoxFuture<'static, ()>) {
    let (proposals, receiver) = mpsc::channel(super::PROPOSALS_QUEUED_MAX);
    // An observer writes no log: its failure signal is dropped, never sent.
    let (quorum, _) = Quorum::new(proposals, node_id);
    let voters = Rc::new(Voters { all: voters, leader: quorum.leader.clone(), next: Cell::new(0) });
    let fetching = follow(voters.clone(), quorum.published.clone(), install);
    let proposing = forward(voters, quorum.published.clone(), receiver);
    (quorum, futures::future::join(fetching, proposing).map(|_| ()).boxed_local())
}

/// The voters, and which one to ask next: the leader when known (its image is the newest),
/// else each in turn.
struct Voters {
    all: Vec<(u64, SocketAddr)>,
    leader: Rc<Cell<u64>>,
    next: Cell<usize>,
}

impl Voters {
    fn pick(&self) -> SocketAddr {
        if let Some((_, address)) = self.all.iter().find(|(id, _)| *id == self.leader.get()) {
            return *address;
        }
        let next = self.next.get() % self.all.len();
        self.next.set(next + 1);
        self.all[next].1
    }

    /// The voter asked did not answer: forget the leader it stood for, try the others.
    fn failed(&self) {
        self.leader.set(0);
    }
}

/// Fetches every newer committed image and installs it, for as long as the node runs.
async fn follow(voters: Rc<Voters>, published: Rc<Published>, install: Install) {
    let mut connection: Option<(SocketAddr, TcpStream)> = None;
    loop {
        let address = voters.pick();
        let request = ObserverRequest::Fetch { after: published.applied() };
        match call(&mut connection, address, &request, FETCH_WAIT + ANSWER_SLACK).await {
            Ok(ObserverAnswer::Image { applied, leader, image }) => {
                voters.leader.set(leader);
                // A voter behind the one asked before (a new connection) has nothing newer.
                if applied > published.applied() {
                    install(image.clone()).await;
                    published.publish(applied, image);
                }
            }
            Ok(ObserverAnswer::Unchanged { leader }) => voters.leader.set(leader),
            Ok(ObserverAnswer::Proposed(_)) => {
                tracing::warn!(%address, "a voter answered a fetch with a proposal's outcome");
                connection = None;
            }
            Err(reason) => {
                tracing::debug!(%address, %reason, "fetching the metadata image");
                voters.failed();
                sleep(RETRY_DELAY).await;
            }
        }
    }
}

/// Hands this node's changes to a voter, one at a time (the controller makes one at a time),
/// and answers each once this node has installed an image that holds it.
async fn forward(voters: Rc<Voters>, published: Rc<Published>, mut proposals: mpsc::Receiver<Proposal>) {
    let mut connection: Option<(SocketAddr, TcpStream)> = None;
    while let Some(Proposal { records, done }) = proposals.next().await {
        let address = voters.pick();
        let timeout = super::PROPOSAL_TIMEOUT + ANSWER_SLACK;
        let outcome = match call(&mut connection, address, &ObserverRequest::Propose(records), timeout).await {
            Ok(ObserverAnswer::Proposed(Ok(index))) => {
                match published.wait_past(index.saturating_sub(1), super::PROPOSAL_TIMEOUT).await {
                    true => Ok(()),
                    false => Err(ProposeError::TimedOut),
                }
            }
            Ok(ObserverAnswer::Proposed(Err(error))) => Err(error),
            Ok(_) => Err(ProposeError::NotLeader),
            // Never sent, or sent and not answered: it may still commit (as a voter's timeout).
            Err(reason) => {
                tracing::debug!(%address, %reason, "forwarding a metadata change");
                voters.failed();
                Err(ProposeError::TimedOut)
            }
        };
        let _ = done.send(outcome);
    }
}

/// One request and its answer on the connection to `address` (made anew when there is none or
/// it leads elsewhere); a failure drops the connection.
async fn call(
    connection: &mut Option<(SocketAddr, TcpStream)>,
    address: SocketAddr,
    request: &ObserverRequest,
    timeout: Duration,
) -> Result<ObserverAnswer, String> {
    let exchange = async {
        let mut stream = match connection.take() {
            Some((to, stream)) if to == address => stream,
            _ => {
                let mut stream = TcpStream::connect(address).await.map_err(|e| e.to_string())?;
                let _ = stream.set_nodelay(true);
                stream.write_all(&OBSERVER_PREAMBLE).await.map_err(|e| e.to_string())?;
                stream
            }
        };
        write_json(&mut stream, request).await?;
        let answer = read_json(&mut stream).await.map_err(|e| e.unwrap_or_else(|| "closed by the voter".into()))?;
        *connection = Some((address, stream));
        Ok(answer)
    };
    futures::select! {
        answer = exchange.fuse() => answer,
        _ = sleep(timeout).fuse() => Err("no answer in time".into()),
    }
}

async fn write_json(stream: &mut TcpStream, message: &impl Serialize) -> Result<(), String> {
    let body = serde_json::to_vec(message).map_err(|e| e.to_string())?;
    if body.len() > MESSAGE_MAX_BYTES {
        return Err(format!("a message of {} bytes, above the limit of {MESSAGE_MAX_BYTES}", body.len()));
    }
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.put_i32(body.len() as i32);
    frame.extend_from_slice(&body);
    stream.write_all(&frame).await.map_err(|e| e.to_string())
}

/// The next message; `Err(None)` when the peer closed the connection between messages.
async fn read_json<T: serde::de::DeserializeOwned>(stream: &mut TcpStream) -> Result<T, Option<String>> {
    let frame = match read_frame(stream, MESSAGE_MAX_BYTES).await {
        Ok(frame) => frame,
        Err(FrameError::Closed) => return Err(None),
        Err(e) => return Err(Some(e.to_string())),
    };
    serde_json::from_slice(&frame).map_err(|e| Some(format!("an undecodable observer message: {e}")))
}
