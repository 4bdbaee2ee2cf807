//! The controller quorum: the metadata log, replicated by Raft (tikv's raft-rs), and the task
//! on shard 0 that drives it.
//!
//! raft-rs is a state machine with no runtime of its own: this task ticks it, hands it
//! proposals, and for each `Ready` makes its entries and hard state durable ([`store`]), sends
//! its messages and applies what it committed. That fits thread-per-core: the node lives on
//! shard 0 and is touched by this one task only; no thread, lock or other executor.
//!
//! A metadata change is a proposal of [`MetadataRecord`]s. Once committed, the records are
//! applied to the image and the image is installed on every shard (the `install` callback);
//! only then is the proposer answered. A follower's proposals are forwarded by raft-rs to the
//! leader; the entry's context names the node and proposal, so that the proposer's node
//! answers it when it applies the entry, on every node alike. Entries whose records no longer
//! fit the image (two controllers changed the same thing at once) change nothing anywhere
//! (`records::apply`), and their proposer hears so.
//!
//! With several voters, every node starts from the same empty snapshot, and the first leader
//! proposes the cluster's first records (its id, `__consumer_offsets`). Messages between
//! voters travel over [`transport`]. Every `metadata.log.max.record.bytes.between.snapshots`
//! of applied records, the image becomes the snapshot and the log is cut behind it.
//!
//! A broker-only node runs no Raft node: it follows the applied image of a voter
//! ([`observer`]), and its changes are proposed through one.
//!
//! Invariants: nothing is applied before it is committed; nothing counts for a commit before
//! it is durable; a proposer is answered once, after its change is installed everywhere or
//! once it is certain it will not be (an error). A failed log write restarts the node from what
//! is durable, failing the proposals in flight.

pub mod observer;
pub mod store;
pub mod transport;

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::StreamExt;
use futures::channel::{mpsc, oneshot};
use futures::future::LocalBoxFuture;
use raft::prelude::{Entry, Message, MessageType};
use raft::{RawNode, SnapshotStatus, Storage};

use self::store::{DurableLog, LogStorage, Recovered, SnapshotFile};
use super::MetadataImage;
use super::brokers::Controller;
use super::records::{self, MetadataRecord};

/// How long the node waits after a failed write before it goes on from what is durable.
const RESTART_BACKOFF: Duration = Duration::from_millis(500);

/// raft-rs counts time in ticks.
const TICK: Duration = Duration::from_millis(100);
/// Ticks without a leader's heartbeat before a follower stands for election (at random up to
/// twice as many).
const ELECTION_TICKS: usize = 10;
const HEARTBEAT_TICKS: usize = 2;
/// Proposals waiting for the Raft task; the controller sends one change at a time anyway.
const PROPOSALS_QUEUED_MAX: usize = 16;
/// Messages from other voters waiting for the Raft task.
const INBOX_MAX: usize = 1024;
/// A proposal not committed by then is answered as timed out (its leader may have died).
const PROPOSAL_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a change was not made.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ProposeError {
    /// This node is not the quorum's leader (or lost leadership before the change committed).
    NotLeader,
    /// The log could not be written (a full disk): nothing changed.
    Storage(String),
    /// Committed, but it no longer fitted the image (a concurrent change won): nothing changed.
    Conflict(String),
    /// Not committed in time; it may still be, later.
    TimedOut,
}

/// Installs a committed image on every shard; resolves once all have it.
pub type Install = Rc<dyn Fn(MetadataImage) -> LocalBoxFuture<'static, ()>>;

/// The way to the Raft task, held by the controller (shard 0).
#[derive(Clone)]
pub struct Quorum {
    proposals: mpsc::Sender<Proposal>,
    /// The Raft id of the leader this node last heard of (0: none), kept by the Raft task.
    leader: Rc<Cell<u64>>,
    node_id: u64,
    /// What this node has applied: served to observers by a voter, awaited by an observer.
    published: Rc<observer::Published>,
    /// Resolves once a write of this node's metadata log has failed (a voter's full disk); an
    /// observer, which writes none, never resolves it.
    write_failed: futures::future::Shared<oneshot::Receiver<()>>,
}

struct Proposal {
    records: Vec<MetadataRecord>,
    done: oneshot::Sender<Result<(), ProposeError>>,
}

impl Quorum {
    /// A handle on a Raft task (or an observer) of `node_id` taking `proposals`, and what its
    /// task sends when a write of its log fails.
    fn new(proposals: mpsc::Sender<Proposal>, node_id: u64) -> (Quorum, oneshot::Sender<()>) {
        let (failed, write_failed) = oneshot::channel();
        let leader = Rc::new(Cell::new(0));
        (Quorum { proposals, leader, node_id, published: Rc::default(), write_failed: write_failed.shared() }, failed)
    }

    /// Proposes `records` and waits until they are committed, applied and installed.
    pub async fn propose(&self, records: Vec<MetadataRecord>) -> Result<(), ProposeError> {
        let (done, answer) = oneshot::channel();
        let mut proposals = self.proposals.clone();
        futures::SinkExt::send(&mut proposals, Proposal { records, done })
            .await
            .map_err(|_| ProposeError::Storage("the metadata log has stopped".into()))?;
        answer.await.unwrap_or_else(|_| Err(ProposeError::Storage("the metadata log has stopped".into())))
    }

    /// The Raft id of the quorum's leader as this node knows it, if any.
    pub fn leader(&self) -> Option<u64> {
        Some(self.leader.get()).filter(|&id| id != 0)
    }

    /// Whether this node leads the quorum: it is the active controller.
    pub fn is_leader(&self) -> bool {
        self.leader() == Some(self.node_id)
    }

    /// The index of the metadata log up to which this node has applied the records and
    /// installed the image on every shard: what its broker reports as its metadata offset.
    pub fn applied(&self) -> u64 {
        self.published.applied()
    }

    /// Waits until this node installs an image newer than the one it has, up to `wait`; says
    /// whether it did.
    pub async fn installed_newer(&self, wait: std::time::Duration) -> bool {
        self.published.wait_past(self.applied(), wait).await
    }

    /// Resolves once a write of this node's metadata log has failed since it started (never on
    /// an observer): a lone node on a full disk learns that its registration cannot be written.
    pub async fn write_failed(&self) {
        if self.write_failed.clone().await.is_err() {
            // The Raft task ended without a failed write: nothing will come.
            futures::future::pending::<()>().await;
        }
    }
}

/// What the node is: its id, the voters, when to snapshot.
#[derive(Debug, Clone)]
pub struct QuorumConfig {
    pub node_id: u64,
    pub voters: Vec<u64>,
    /// The other voters' controller listeners, and this node's own (none when alone).
    pub peers: Vec<(u64, std::net::SocketAddr)>,
    pub listen: Option<std::net::SocketAddr>,
    pub snapshot_after_bytes: u64,
    /// What the first leader of a cluster proposes (when the image has no cluster id yet).
    pub bootstrap: Vec<MetadataRecord>,
}

/// Raft ids must not be 0; Kafka's node ids may be.
pub fn raft_id(node_id: i32) -> u64 {
    u64::try_from(node_id).expect("node ids are validated non-negative") + 1
}

/// Starts the Raft task (to be spawned on shard 0) on what recovery found; returns the handle
/// for proposals and the task's future. Brokers' registrations and heartbeats that reach the
/// controller listener are answered by `controller`.
pub fn start(
    config: QuorumConfig,
    recovered: Recovered,
    install: Install,
    controller: Controller,
) -> anyhow::Result<(Quorum, LocalBoxFuture<'static, ()>)> {
    let (proposals, receiver) = mpsc::channel(PROPOSALS_QUEUED_MAX);
    let (inbox, messages) = mpsc::channel(INBOX_MAX);
    let listener = match config.listen {
        Some(address) => Some(
            crate::runtime::TcpListener::bind(address)
                .map_err(|e| anyhow::anyhow!("binding the controller listener {address}: {e}"))?,
        ),
        None => None,
    };
    let peers = transport::Peers::start(config.peers.clone());
    let (quorum, write_failed) = Quorum::new(proposals, config.node_id);
    let mut node = Node::new(config, recovered, install, peers, quorum.clone(), write_failed)?;
    node._listener = listener
        .map(|listener| crate::runtime::spawn_local(transport::serve(listener, inbox, controller, quorum.clone())));
    Ok((quorum, node.run(receiver, messages).boxed_local()))
}

struct Node {
    config: QuorumConfig,
    raft: RawNode<LogStorage>,
    log: DurableLog,
    /// The state machine: the image with every applied entry.
    image: MetadataImage,
    applied: u64,
    install: Install,
    /// This node's proposals not yet answered, by the number in their entry's context, with
    /// the time they give up.
    pending: HashMap<u64, (Instant, oneshot::Sender<Result<(), ProposeError>>)>,
    next_proposal: u64,
    bytes_since_snapshot: u64,
    peers: transport::Peers,
    bootstrap_proposed: Option<Instant>,
    /// Shared with the [`Quorum`] handle.
    leader: Rc<Cell<u64>>,
    published: Rc<observer::Published>,
    /// Told of the first failed write of the log (then `None`), for [`Quorum::write_failed`].
    write_failed: Option<oneshot::Sender<()>>,
    _listener: Option<crate::runtime::Task<()>>,
}

fn raft_node(config: &QuorumConfig, storage: LogStorage, applied: u64) -> anyhow::Result<RawNode<LogStorage>> {
    let raft_config = raft::Config {
        id: config.node_id,
        election_tick: ELECTION_TICKS,
        heartbeat_tick: HEARTBEAT_TICKS,
        applied,
        check_quorum: true,
        pre_vote: true,
        ..raft::Config::default()
    };
    raft_config.validate()?;
    // raft-rs logs through slog; the events that matter are logged here through tracing.
    let logger = slog::Logger::root(slog::Discard, slog::o!());
    let mut raft = RawNode::new(&raft_config, storage, &logger)?;
    if config.voters == [config.node_id] {
        // Alone: no need to wait for an election timeout.
        raft.campaign()?;
    }
    Ok(raft)
}

impl Node {
    fn new(
        config: QuorumConfig,
        recovered: Recovered,
        install: Install,
        peers: transport::Peers,
        quorum: Quorum,
        write_failed: oneshot::Sender<()>,
    ) -> anyhow::Result<Node> {
        let Recovered { storage, image, applied, log } = recovered;
        quorum.published.publish(applied, image.clone());
        Ok(Node {
            raft: raft_node(&config, storage, applied)?,
            config,
            log,
            image,
            applied,
            install,
            pending: HashMap::new(),
            next_proposal: 0,
            bytes_since_snapshot: 0,
            peers,
            bootstrap_proposed: None,
            leader: quorum.leader,
            published: quorum.published,
            write_failed: Some(write_failed),
            _listener: None,
        })
    }

    async fn run(mut self, mut proposals: mpsc::Receiver<Proposal>, mut messages: mpsc::Receiver<Message>) {
        let mut next_tick = Instant::now() + TICK;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            futures::select! {
                proposal = proposals.next() => match proposal {
                    Some(proposal) => self.propose(proposal),
                    None => return,
                },
                message = messages.next() => if let Some(message) = message
                    && let Err(e) = self.raft.step(message)
                {
                    tracing::debug!(error = %e, "a Raft message was refused");
                },
                _ = crate::runtime::sleep(wait).fuse() => {
                    self.raft.tick();
                    next_tick = Instant::now() + TICK;
                    self.expire_proposals();
                }
            }
            self.bootstrap_if_leader();
            while self.raft.has_ready() {
                if let Err(e) = self.handle_ready().await {
                    self.restart(format!("{e:#}"));
                    // A disk that stays full would fail the next write at once (a lone voter
                    // campaigns, wins and appends straight away): not in a tight loop.
                    crate::runtime::sleep(RESTART_BACKOFF).await;
                }
            }
        }
    }

    /// Answers the proposals that waited too long.
    fn expire_proposals(&mut self) {
        let now = Instant::now();
        let expired: Vec<u64> = self.pending.iter().filter(|(_, (by, _))| *by <= now).map(|(n, _)| *n).collect();
        for number in expired {
            let (_, done) = self.pending.remove(&number).expect("listed above");
            let _ = done.send(Err(ProposeError::TimedOut));
        }
    }

    /// The first leader of a cluster of several voters proposes its first records, again
    /// after a timeout if they are still not in; should two leaders in a row both propose
    /// them, the second is refused as a conflict.
    fn bootstrap_if_leader(&mut self) {
        let leader = self.raft.raft.state == raft::StateRole::Leader;
        let due = self.bootstrap_proposed.is_none_or(|at| at.elapsed() >= PROPOSAL_TIMEOUT);
        if leader && self.image.cluster_id.is_empty() && !self.config.bootstrap.is_empty() && due {
            self.bootstrap_proposed = Some(Instant::now());
            let (done, _) = oneshot::channel();
            self.propose(Proposal { records: self.config.bootstrap.clone(), done });
        }
    }

    fn propose(&mut self, Proposal { records, done }: Proposal) {
        let number = self.next_proposal;
        self.next_proposal += 1;
        let data = serde_json::to_vec(&records).expect("records serialise");
        let mut context = self.config.node_id.to_le_bytes().to_vec();
        context.extend_from_slice(&number.to_le_bytes());
        match self.raft.propose(context, data) {
            Ok(()) => {
                self.pending.insert(number, (Instant::now() + PROPOSAL_TIMEOUT, done));
            }
            Err(_) => {
                let _ = done.send(Err(ProposeError::NotLeader));
            }
        }
    }

    /// One round: persist, send, apply, advance. An error means the log could not be written.
    async fn handle_ready(&mut self) -> anyhow::Result<()> {
        let mut ready = self.raft.ready();
        if let Some(soft) = ready.ss() {
            tracing::info!(leader = soft.leader_id, role = ?soft.raft_state, term = self.raft.raft.term, "metadata quorum");
            self.leader.set(soft.leader_id);
        }
        self.send(ready.take_messages());
        if !ready.snapshot().is_empty() {
            // Sent by a leader whose log no longer reaches back to ours: it replaces our log.
            self.install_snapshot(ready.snapshot().clone()).await?;
        }
        // Durable before anything is applied: what was applied is always committed on disk.
        self.log.append(ready.entries(), ready.hs()).await?;
        self.raft.mut_store().append(ready.entries());
        if let Some(hard_state) = ready.hs() {
            self.raft.mut_store().set_hard_state(hard_state.clone());
        }
        let committed = ready.take_committed_entries();
        self.apply(committed).await;
        self.send(ready.take_persisted_messages());
        let mut light = self.raft.advance(ready);
        if let Some(commit) = light.commit_index() {
            // Durable, so that a restart applies everything committed before it serves.
            let mut hard_state = self.raft.store().initial_state()?.hard_state;
            hard_state.commit = commit;
            self.log.append(&[], Some(&hard_state)).await?;
            self.raft.mut_store().set_hard_state(hard_state);
        }
        self.send(light.take_messages());
        let committed = light.take_committed_entries();
        self.apply(committed).await;
        self.raft.advance_apply();
        self.snapshot_if_due().await;
        Ok(())
    }

    fn send(&mut self, messages: Vec<Message>) {
        for message in messages {
            let (to, snapshot) = (message.to, message.get_msg_type() == MessageType::MsgSnapshot);
            let queued = self.peers.send(message);
            if snapshot {
                // raft-rs stops replicating to a follower while its snapshot is in flight, until
                // told how the sending went. The transport cannot know whether the peer got it
                // (a write into a connection whose peer restarted is lost), so the leader goes
                // back to probing at once: a follower still without it refuses the probe and is
                // sent the snapshot again.
                let status = if queued { SnapshotStatus::Finish } else { SnapshotStatus::Failure };
                self.raft.report_snapshot(to, status);
            }
        }
    }

    async fn install_snapshot(&mut self, snapshot: raft::prelude::Snapshot) -> anyhow::Result<()> {
        let file: SnapshotFile = serde_json::from_slice(snapshot.get_data())?;
        let (index, image) = (file.index, file.image.clone());
        self.log.snapshot(file, self.raft.mut_store(), true).await?;
        tracing::info!(index, "installed a metadata snapshot from the leader");
        self.image = image;
        self.applied = index;
        self.bytes_since_snapshot = 0;
        (self.install)(self.image.clone()).await;
        self.published.publish(index, self.image.clone());
        Ok(())
    }

    /// Applies committed entries to the image, installs it, then answers their proposers.
    async fn apply(&mut self, entries: Vec<Entry>) {
        let mut answered = Vec::new();
        let mut changed = false;
        for entry in entries {
            let records = store::decode_records(&entry);
            changed |= !records.is_empty();
            let outcome = records::apply(&mut self.image, records).map_err(ProposeError::Conflict);
            if let Err(ProposeError::Conflict(reason)) = &outcome {
                tracing::info!(index = entry.index, %reason, "a metadata change that no longer fits is dropped");
            }
            self.applied = entry.index;
            self.bytes_since_snapshot += entry.get_data().len() as u64;
            if let Some((_, done)) = self.own_proposal(entry.get_context()).and_then(|n| self.pending.remove(&n)) {
                answered.push((done, outcome));
            }
        }
        if changed {
            (self.install)(self.image.clone()).await;
            self.published.publish(self.applied, self.image.clone());
        }
        for (done, outcome) in answered {
            let _ = done.send(outcome);
        }
    }

    /// The number of this node's proposal that an entry's context names, if it is one.
    fn own_proposal(&self, context: &[u8]) -> Option<u64> {
        let (node, number) = context.split_at_checked(8)?;
        let node = u64::from_le_bytes(node.try_into().ok()?);
        (node == self.config.node_id).then_some(u64::from_le_bytes(number.try_into().ok()?))
    }

    async fn snapshot_if_due(&mut self) {
        if self.bytes_since_snapshot < self.config.snapshot_after_bytes {
            return;
        }
        let term = self.raft.store().term(self.applied).expect("the applied entry is in the log");
        let file =
            SnapshotFile { index: self.applied, term, voters: self.config.voters.clone(), image: self.image.clone() };
        match self.log.snapshot(file, self.raft.mut_store(), false).await {
            Ok(()) => {
                tracing::info!(index = self.applied, "metadata snapshot written; the log was cut behind it");
                self.bytes_since_snapshot = 0;
            }
            // The log keeps its entries; the next applied entry tries again.
            Err(e) => tracing::error!(error = %format!("{e:#}"), "writing a metadata snapshot"),
        }
    }

    /// After a failed write: forgets what was not durable by reopening the log as it is on
    /// disk (blocking the shard, on this rare path), and fails the proposals whose entries did
    /// not reach it. Those that did are still answered when they commit.
    fn restart(&mut self, error: String) {
        tracing::error!(%error, "writing the metadata log; restarting the Raft node from what is durable");
        if let Some(failed) = self.write_failed.take() {
            let _ = failed.send(());
        }
        let recovered = DurableLog::recover(self.log.fs(), self.log.data_dir(), &self.config.voters, || {
            unreachable!("the log exists")
        });
        // Reading back what was just there failed: nothing sensible is left to do.
        let recovered = recovered.unwrap_or_else(|e| panic!("reopening the metadata log: {e:#}"));
        // Applied entries were durable and committed before they were applied.
        assert_eq!(recovered.applied, self.applied, "the durable commit is what was applied");
        let durable: Vec<u64> = recovered
            .storage
            .entries_after(self.applied)
            .iter()
            .filter_map(|e| self.own_proposal(e.get_context()))
            .collect();
        let (kept, lost) = std::mem::take(&mut self.pending).into_iter().partition(|(n, _)| durable.contains(n));
        self.pending = kept;
        for (_, (_, done)) in lost {
            let _ = done.send(Err(ProposeError::Storage(format!("writing the metadata log: {error}"))));
        }
        let raft = raft_node(&self.config, recovered.storage, recovered.applied);
        self.raft = raft.unwrap_or_else(|e| panic!("restarting the Raft node: {e:#}"));
        self.leader.set(0);
        self.log = recovered.log;
    }
}
