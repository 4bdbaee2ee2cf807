//! Brokers in the metadata log: each node registers itself with the active controller (the
//! quorum's leader) and heartbeats to it, as a KRaft broker does, with Kafka's own
//! BrokerRegistration (62) and BrokerHeartbeat (63) messages.
//!
//! - **Broker side** ([`Lifecycle`], a task on shard 0): registers with this node's id, its
//!   advertised Kafka listener, `broker.rack` and an incarnation id drawn at start; then
//!   heartbeats every `broker.heartbeat.interval.ms`. Its heartbeats ask to stay fenced until
//!   the controller says that the node's image has caught up (`is_caught_up`: the metadata
//!   offset it reports has reached its registration); then its shards take up the leaderships
//!   the image gives them (before, a restarted node's own stale image might make it act as the
//!   leader of partitions that moved away while it was down), and the next heartbeat asks to
//!   be unfenced, as a KRaft broker does.
//!   A node that leads the quorum calls its own controller in place; the others send the
//!   requests over the leader's controller listener (a connection opened with
//!   `transport::BROKER_CALLS_PREAMBLE`, then Kafka frames). A controller that no longer
//!   leads answers NOT_CONTROLLER, and the next try goes to the leader this node has heard
//!   of since. A heartbeat that names a stale epoch, or an unknown broker, registers again.
//!   Every heartbeat reports the metadata offset this node has installed. Controlled
//!   shutdown (SIGTERM) heartbeats `want_shut_down` until the controller answers that the
//!   broker may stop, within a deadline.
//! - **Controlled shutdown**, Kafka's rule: the controller fences the broker, which moves its
//!   leaderships and ISR memberships away, and answers `should_shut_down` only once every
//!   other active broker (unfenced, not shutting down) reports a metadata offset at or past
//!   that change ([`Sessions::may_shut_down`]): the new leaders know they lead before the old
//!   one goes, so clients meet no gap beyond the metadata propagation.
//! - **Controller side**: `shard::controller` answers both requests, changing the image through
//!   the metadata log (`records::MetadataRecord::Broker`), and AlterPartition (56), a partition
//!   leader's change of its ISR (`cluster::election::alter_isr`), sent the same way, and
//!   CreateTopics (19) and CreatePartitions (37) that another broker received (KIP-590's
//!   forwarding): placed and validated on the active controller's image, which is the one that
//!   knows every registered broker. When each broker was last heard of
//!   is in memory on the active controller only ([`Sessions`], on shard 0), as in Kafka: a
//!   controller that becomes the leader counts every broker as heard of at that moment, and
//!   fences those it then does not hear from within `broker.session.timeout.ms`.
//!
//! Invariant: only the active controller changes a broker's registration, and a change made
//! against an older registration of that broker never applies (`records::apply`).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use futures::channel::oneshot;
use futures::future::LocalBoxFuture;
use futures::{AsyncWriteExt, FutureExt};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::alter_partition_request::BrokerState;
use kafka_protocol::messages::broker_registration_request::Listener;
use kafka_protocol::messages::{
    AlterPartitionRequest, AlterPartitionResponse, ApiKey, BrokerHeartbeatRequest, BrokerHeartbeatResponse, BrokerId,
    BrokerRegistrationRequest, BrokerRegistrationResponse, CreatePartitionsRequest, CreatePartitionsResponse,
    CreateTopicsRequest, CreateTopicsResponse, RequestHeader,
};
use kafka_protocol::protocol::{Decodable, Message, StrBytes};

use super::MetadataImage;
use super::quorum::Quorum;
use super::quorum::transport::BROKER_CALLS_PREAMBLE;
use crate::protocol::frame::{decode_response, encode_request_into, encode_response, read_frame};
use crate::runtime::{TcpStream, sleep};

/// The versions this node sends; the controller answers any version the protocol crate knows.
const REGISTRATION_VERSION: i16 = 0;
const HEARTBEAT_VERSION: i16 = 0;
/// Forwarded topic creations: CreateTopics v7 answers with topic ids.
const CREATE_TOPICS_VERSION: i16 = 7;
const CREATE_PARTITIONS_VERSION: i16 = 3;
const ALTER_PARTITION_VERSION: i16 = 3;
/// Registrations and heartbeats are small; a larger frame is refused before it is read.
const CALL_MAX_BYTES: usize = 1 << 20;
/// A call not answered by then is given up (its controller may have died); the next goes to
/// whichever leader is known then.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// A forwarded CreateTopics or CreatePartitions waits for its change to commit and install on
/// the controller's node (a proposal times out after 5 s there).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(8);
/// How often a call in flight checks whether the quorum's leader has changed (Raft's tick).
const LEADER_POLL: Duration = Duration::from_millis(100);
/// Between tries while no controller answers, and the longest controlled shutdown.
const RETRY_DELAY: Duration = Duration::from_millis(100);
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);
const CLIENT_ID: &str = "sluice-broker";
/// Logged when the controller lets this broker stop (tests look for it).
const SHUT_DOWN_LOG: &str = "controlled shutdown done: leaderships moved, every broker knows";

/// A request from a broker to the active controller.
pub enum BrokerCall {
    Register(BrokerRegistrationRequest),
    Heartbeat(BrokerHeartbeatRequest),
    /// A partition leader's new ISRs (always as version 3's, members with broker epochs).
    AlterPartition(AlterPartitionRequest),
    /// A client's request that another broker received, forwarded.
    CreateTopics(CreateTopicsRequest),
    CreatePartitions(CreatePartitionsRequest),
}

/// The controller's answer, of the request's own type.
pub enum BrokerAnswer {
    Register(BrokerRegistrationResponse),
    Heartbeat(BrokerHeartbeatResponse),
    AlterPartition(AlterPartitionResponse),
    CreateTopics(CreateTopicsResponse),
    CreatePartitions(CreatePartitionsResponse),
}

/// Answers brokers' calls on this node's controller (shard 0).
pub type Controller = Rc<dyn Fn(BrokerCall) -> LocalBoxFuture<'static, BrokerAnswer>>;

/// Serves a broker's connection to the controller listener (after its preamble): Kafka frames
/// of BrokerRegistration, BrokerHeartbeat, AlterPartition, CreateTopics and CreatePartitions,
/// answered in order. Anything else
/// closes the connection, with the reason returned.
pub async fn answer_calls(mut stream: TcpStream, controller: Controller) -> Result<(), String> {
    loop {
        let mut frame = match read_frame(&mut stream, CALL_MAX_BYTES).await {
            Ok(frame) => frame,
            Err(crate::protocol::frame::FrameError::Closed) => return Ok(()),
            Err(e) => return Err(e.to_string()),
        };
        if frame.len() < 4 {
            return Err(format!("a broker call of {} bytes has no header", frame.len()));
        }
        let (key, version) = (frame.get_i16(), frame.get_i16());
        let supported = |range: kafka_protocol::protocol::VersionRange| version >= range.min && version <= range.max;
        let call = match ApiKey::try_from(key) {
            Ok(ApiKey::BrokerRegistration) if supported(BrokerRegistrationRequest::VERSIONS) => {
                ApiKey::BrokerRegistration
            }
            Ok(ApiKey::BrokerHeartbeat) if supported(BrokerHeartbeatRequest::VERSIONS) => ApiKey::BrokerHeartbeat,
            Ok(ApiKey::AlterPartition) if supported(AlterPartitionRequest::VERSIONS) => ApiKey::AlterPartition,
            Ok(ApiKey::CreateTopics) if supported(CreateTopicsRequest::VERSIONS) => ApiKey::CreateTopics,
            Ok(ApiKey::CreatePartitions) if supported(CreatePartitionsRequest::VERSIONS) => ApiKey::CreatePartitions,
            _ => return Err(format!("API key {key} v{version} is not served on the controller listener")),
        };
        // The header again, whole (its key and version were only peeked at).
        let mut whole = BytesMut::with_capacity(frame.len() + 4);
        whole.extend_from_slice(&key.to_be_bytes());
        whole.extend_from_slice(&version.to_be_bytes());
        whole.extend_from_slice(&frame);
        let mut body = whole.freeze();
        let header = RequestHeader::decode(&mut body, call.request_header_version(version))
            .map_err(|e| format!("a malformed request header: {e}"))?;
        let malformed = |e: anyhow::Error| format!("a malformed {call:?} request: {e}");
        let answer = match call {
            ApiKey::BrokerRegistration => {
                let request = BrokerRegistrationRequest::decode(&mut body, version).map_err(malformed)?;
                controller(BrokerCall::Register(request)).await
            }
            ApiKey::AlterPartition => {
                let mut request = AlterPartitionRequest::decode(&mut body, version).map_err(malformed)?;
                if version < 3 {
                    for p in request.topics.iter_mut().flat_map(|t| t.partitions.iter_mut()) {
                        let any_epoch = |id| BrokerState::default().with_broker_id(id).with_broker_epoch(-1);
                        p.new_isr_with_epochs = std::mem::take(&mut p.new_isr).into_iter().map(any_epoch).collect();
                    }
                }
                controller(BrokerCall::AlterPartition(request)).await
            }
            ApiKey::CreateTopics => {
                let request = CreateTopicsRequest::decode(&mut body, version).map_err(malformed)?;
                controller(BrokerCall::CreateTopics(request)).await
            }
            ApiKey::CreatePartitions => {
                let request = CreatePartitionsRequest::decode(&mut body, version).map_err(malformed)?;
                controller(BrokerCall::CreatePartitions(request)).await
            }
            _ => {
                let request = BrokerHeartbeatRequest::decode(&mut body, version).map_err(malformed)?;
                controller(BrokerCall::Heartbeat(request)).await
            }
        };
        let header_version = call.response_header_version(version);
        let frame = match &answer {
            BrokerAnswer::Register(r) => encode_response(header.correlation_id, header_version, r, version),
            BrokerAnswer::Heartbeat(r) => encode_response(header.correlation_id, header_version, r, version),
            BrokerAnswer::AlterPartition(r) => encode_response(header.correlation_id, header_version, r, version),
            BrokerAnswer::CreateTopics(r) => encode_response(header.correlation_id, header_version, r, version),
            BrokerAnswer::CreatePartitions(r) => encode_response(header.correlation_id, header_version, r, version),
        }
        .map_err(|e| format!("encoding an answer: {e}"))?;
        stream.write_all(&frame).await.map_err(|e| e.to_string())?;
    }
}

/// When the active controller last heard from each broker. Lives on the controller shard;
/// consulted only while this node leads the quorum.
#[derive(Debug, Default)]
pub struct Sessions {
    last_heard: HashMap<i32, Instant>,
    /// Since when this node has led the quorum, if it does.
    leading_since: Option<Instant>,
    /// The metadata offset each broker must report before it is unfenced: that of its
    /// registration (Kafka's rule), or, for a registration from before this leadership, the
    /// offset this controller had applied when it first heard of it (at or past it, since its
    /// heartbeat named the epoch of that registration).
    catch_up_to: HashMap<i32, i64>,
    /// Brokers that asked to shut down: fenced, and kept so until they register again; with
    /// the metadata offset by which their leaderships had moved away, once they have.
    shutting_down: HashMap<i32, Option<i64>>,
    /// The metadata offset each broker last reported installed (its heartbeats).
    metadata_offsets: HashMap<i32, i64>,
}

impl Sessions {
    /// Notes whether this node leads now; a new leader starts every session afresh.
    pub fn leading(&mut self, leads: bool, now: Instant) {
        match (leads, self.leading_since) {
            (true, None) => self.leading_since = Some(now),
            (false, Some(_)) => *self = Sessions::default(),
            _ => {}
        }
    }

    pub fn heard(&mut self, node_id: i32, now: Instant) {
        self.last_heard.insert(node_id, now);
    }

    /// A new incarnation of `node_id`, registered at metadata offset `offset`: nothing it or
    /// the old one reported holds any more.
    pub fn registered(&mut self, node_id: i32, now: Instant, offset: i64) {
        self.shutting_down.remove(&node_id);
        self.metadata_offsets.remove(&node_id);
        self.catch_up_to.insert(node_id, offset);
        self.heard(node_id, now);
    }

    /// Whether `node_id`, reporting metadata offset `reported`, has caught up with its
    /// registration; `applied` is this controller's offset, the target of a broker it has not
    /// seen register.
    pub fn caught_up(&mut self, node_id: i32, reported: i64, applied: i64) -> bool {
        reported >= *self.catch_up_to.entry(node_id).or_insert(applied)
    }

    /// `node_id` has installed the metadata log up to `offset` (its heartbeat says so).
    pub fn reported(&mut self, node_id: i32, offset: i64) {
        self.metadata_offsets.insert(node_id, offset);
    }

    pub fn shut_down(&mut self, node_id: i32) {
        self.shutting_down.entry(node_id).or_insert(None);
    }

    /// The leaderships of `node_id`, shutting down, have moved away in the metadata log by
    /// `offset` (the first offset given counts).
    pub fn moved_away(&mut self, node_id: i32, offset: i64) {
        if let Some(moved) = self.shutting_down.get_mut(&node_id) {
            moved.get_or_insert(offset);
        }
    }

    pub fn is_shutting_down(&self, node_id: i32) -> bool {
        self.shutting_down.contains_key(&node_id)
    }

    /// Whether `node_id`, shutting down, may stop now (Kafka's `should_shut_down`): its
    /// leaderships have moved away, and every other active broker of `image` (unfenced, not
    /// shutting down) has reported installing that change, so that it knows who leads now.
    pub fn may_shut_down(&self, node_id: i32, image: &MetadataImage) -> bool {
        let Some(&Some(moved)) = self.shutting_down.get(&node_id) else {
            return false;
        };
        image
            .unfenced_brokers()
            .filter(|b| b.node_id != node_id && !self.is_shutting_down(b.node_id))
            .all(|b| self.metadata_offsets.get(&b.node_id).is_some_and(|&offset| offset >= moved))
    }

    /// Whether `node_id` was heard of within `timeout` (counting from the start of this
    /// leadership for a broker not heard of since).
    pub fn is_alive(&self, node_id: i32, now: Instant, timeout: Duration) -> bool {
        let last = self.last_heard.get(&node_id).copied().max(self.leading_since);
        last.is_some_and(|at| now.saturating_duration_since(at) <= timeout)
    }

    /// The unfenced brokers of `image` not heard of within `timeout`: to be fenced.
    pub fn expired(&self, image: &MetadataImage, now: Instant, timeout: Duration) -> Vec<i32> {
        if self.leading_since.is_none() {
            return Vec::new();
        }
        image.unfenced_brokers().map(|b| b.node_id).filter(|&id| !self.is_alive(id, now, timeout)).collect()
    }
}

/// What a broker says of itself when it registers.
#[derive(Debug, Clone)]
pub struct Identity {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    pub heartbeat_interval: Duration,
}

/// This node as a broker: its registration with the active controller and its heartbeats.
pub struct Lifecycle {
    identity: Identity,
    incarnation_id: uuid::Uuid,
    quorum: Quorum,
    /// This node's Raft id, and every other voter's controller listener by Raft id.
    raft_id: u64,
    voters: HashMap<u64, SocketAddr>,
    /// This node's own controller, called in place while this node leads.
    local: Controller,
    /// The image this node has installed.
    image: Box<dyn Fn() -> Rc<MetadataImage>>,
    /// The broker epoch of the registration in force.
    epoch: Cell<Option<i64>>,
    /// The connection to the leader last called, by its Raft id; taken out while in use.
    connection: RefCell<Option<(u64, TcpStream)>>,
    correlation_id: Cell<i32>,
    /// Told once, when a heartbeat first finds this broker unfenced.
    unfenced: RefCell<Option<oneshot::Sender<()>>>,
    /// Run once, when the controller first says that this node's image has caught up: the
    /// shards take up their leaderships. Until it has run, heartbeats ask to stay fenced.
    caught_up: RefCell<Option<LocalBoxFuture<'static, ()>>>,
    stopping: Cell<bool>,
}

impl Lifecycle {
    /// The broker side of this node; `first_unfenced` resolves when it is first unfenced.
    /// `caught_up` runs once the node's image has caught up (none: it has from the start).
    pub fn new(
        identity: Identity,
        quorum: Quorum,
        raft_id: u64,
        voters: HashMap<u64, SocketAddr>,
        local: Controller,
        image: Box<dyn Fn() -> Rc<MetadataImage>>,
        caught_up: Option<LocalBoxFuture<'static, ()>>,
    ) -> (Rc<Lifecycle>, oneshot::Receiver<()>) {
        let (unfenced, first_unfenced) = oneshot::channel();
        let lifecycle = Lifecycle {
            identity,
            incarnation_id: uuid::Uuid::new_v4(),
            quorum,
            raft_id,
            voters,
            local,
            image,
            epoch: Cell::new(None),
            connection: RefCell::new(None),
            correlation_id: Cell::new(0),
            unfenced: RefCell::new(Some(unfenced)),
            caught_up: RefCell::new(caught_up),
            stopping: Cell::new(false),
        };
        (Rc::new(lifecycle), first_unfenced)
    }

    /// Registers, then heartbeats, until [`Lifecycle::shut_down`].
    pub async fn run(self: Rc<Self>) {
        while !self.stopping.get() {
            let Some(epoch) = self.epoch.get() else {
                match self.register().await {
                    // Heartbeat at once: the first one unfences.
                    Ok(epoch) => self.epoch.set(Some(epoch)),
                    Err(reason) => {
                        tracing::debug!(%reason, "broker registration");
                        sleep(RETRY_DELAY).await;
                    }
                }
                continue;
            };
            let delay = match self.heartbeat(epoch, false).await {
                Ok(response) => {
                    if response.error_code == 0 && response.is_caught_up {
                        // Taken out first: no borrow may live across the await.
                        let caught_up = self.caught_up.borrow_mut().take();
                        if let Some(caught_up) = caught_up {
                            tracing::info!(node_id = self.identity.node_id, "the metadata image has caught up");
                            caught_up.await;
                        }
                    }
                    self.heard(epoch, &response)
                }
                Err(reason) => {
                    tracing::debug!(%reason, "broker heartbeat");
                    RETRY_DELAY
                }
            };
            sleep(delay).await;
        }
    }

    /// Acts on a heartbeat's answer; returns when to send the next.
    fn heard(&self, epoch: i64, response: &BrokerHeartbeatResponse) -> Duration {
        match ResponseError::try_from_code(response.error_code) {
            None if !response.is_fenced => {
                if let Some(unfenced) = self.unfenced.borrow_mut().take() {
                    tracing::info!(node_id = self.identity.node_id, epoch, "registered and unfenced");
                    let _ = unfenced.send(());
                }
                self.identity.heartbeat_interval
            }
            // Fenced (a controller that fenced it is told it lives): asking again at once.
            None => RETRY_DELAY,
            Some(ResponseError::StaleBrokerEpoch | ResponseError::BrokerIdNotRegistered) => {
                tracing::info!(epoch, "the controller no longer knows this registration: registering again");
                self.epoch.set(None);
                Duration::ZERO
            }
            Some(error) => {
                tracing::debug!(?error, "broker heartbeat refused");
                RETRY_DELAY
            }
        }
    }

    async fn register(&self) -> Result<i64, String> {
        let cluster_id = self.image.as_ref()().cluster_id.clone();
        if cluster_id.is_empty() {
            return Err("the cluster has no id yet".into());
        }
        let port = u16::try_from(self.identity.port).map_err(|_| "the advertised port is out of range".to_string())?;
        let listener = Listener::default()
            .with_name(StrBytes::from_static_str("PLAINTEXT"))
            .with_host(StrBytes::from_string(self.identity.host.clone()))
            .with_port(port);
        let request = BrokerRegistrationRequest::default()
            .with_broker_id(BrokerId(self.identity.node_id))
            .with_cluster_id(StrBytes::from_string(cluster_id))
            .with_incarnation_id(self.incarnation_id)
            .with_listeners(vec![listener])
            .with_rack(self.identity.rack.clone().map(StrBytes::from_string));
        let BrokerAnswer::Register(response) = self.call(BrokerCall::Register(request)).await? else {
            return Err("a registration answered as another call".into());
        };
        match ResponseError::try_from_code(response.error_code) {
            None => Ok(response.broker_epoch),
            Some(error) => Err(format!("refused: {error:?}")),
        }
    }

    async fn heartbeat(&self, epoch: i64, want_shut_down: bool) -> Result<BrokerHeartbeatResponse, String> {
        let request = BrokerHeartbeatRequest::default()
            .with_broker_id(BrokerId(self.identity.node_id))
            .with_broker_epoch(epoch)
            .with_current_metadata_offset(i64::try_from(self.quorum.applied()).unwrap_or(i64::MAX))
            .with_want_fence(self.caught_up.borrow().is_some())
            .with_want_shut_down(want_shut_down);
        match self.call(BrokerCall::Heartbeat(request)).await? {
            BrokerAnswer::Heartbeat(response) => Ok(response),
            _ => Err("a heartbeat answered as another call".into()),
        }
    }

    /// AlterPartition from this broker (its leaders' ISR changes) to the active controller.
    pub async fn alter_partition(&self, request: AlterPartitionRequest) -> Result<AlterPartitionResponse, String> {
        let epoch = self.epoch.get().ok_or("this broker is not registered")?;
        let request = request.with_broker_id(BrokerId(self.identity.node_id)).with_broker_epoch(epoch);
        match self.call(BrokerCall::AlterPartition(request)).await? {
            BrokerAnswer::AlterPartition(response) => Ok(response),
            _ => Err("an AlterPartition answered as another call".into()),
        }
    }

    /// Stops heartbeating without asking anything (`controlled.shutdown.enable=false`): the
    /// controller fences this broker once its session expires.
    pub fn stop_heartbeats(&self) {
        self.stopping.set(true);
    }

    /// CreateTopics that this broker received, to the active controller (KIP-590), which
    /// places the replicas over the brokers its own image knows.
    pub async fn create_topics(&self, request: CreateTopicsRequest) -> Result<CreateTopicsResponse, String> {
        match self.call_within(BrokerCall::CreateTopics(request), FORWARD_TIMEOUT).await? {
            BrokerAnswer::CreateTopics(response) => Ok(response),
            _ => Err("a CreateTopics answered as another call".into()),
        }
    }

    /// CreatePartitions that this broker received, to the active controller, as CreateTopics.
    pub async fn create_partitions(
        &self,
        request: CreatePartitionsRequest,
    ) -> Result<CreatePartitionsResponse, String> {
        match self.call_within(BrokerCall::CreatePartitions(request), FORWARD_TIMEOUT).await? {
            BrokerAnswer::CreatePartitions(response) => Ok(response),
            _ => Err("a CreatePartitions answered as another call".into()),
        }
    }

    /// Controlled shutdown: asks the controller, in every heartbeat, to move this broker's
    /// leaderships away and let it stop, until it says so (once the other brokers have caught
    /// up with the move) or [`SHUTDOWN_DEADLINE`] passes (no controller: stop anyway).
    pub async fn shut_down(&self) {
        self.stopping.set(true);
        let deadline = Instant::now() + SHUTDOWN_DEADLINE;
        while let Some(epoch) = self.epoch.get()
            && Instant::now() < deadline
        {
            match self.heartbeat(epoch, true).await {
                Ok(response) if response.error_code == 0 && response.should_shut_down => {
                    tracing::info!("{SHUT_DOWN_LOG}");
                    return;
                }
                Ok(response)
                    if response.error_code != 0 && response.error_code != ResponseError::NotController.code() =>
                {
                    return;
                }
                _ => sleep(RETRY_DELAY).await,
            }
        }
    }

    /// Sends `call` to the active controller: in place when this node leads, else over the
    /// leader's controller listener.
    async fn call(&self, call: BrokerCall) -> Result<BrokerAnswer, String> {
        self.call_within(call, CALL_TIMEOUT).await
    }

    /// [`Lifecycle::call`], given up after `timeout` without an answer, or as soon as this
    /// node's Raft node hears of another leader (as Kafka's brokers move to a new controller):
    /// a call stuck on a controller cut off by the network must not outlast the brokers'
    /// sessions on its successor, which counts them as heard of only from its takeover on.
    async fn call_within(&self, call: BrokerCall, timeout: Duration) -> Result<BrokerAnswer, String> {
        let leader = self.quorum.leader().ok_or("the controller quorum has no leader")?;
        if leader == self.raft_id {
            return Ok(self.local.as_ref()(call).await);
        }
        futures::select! {
            answer = self.call_remote(leader, call, timeout).fuse() => answer,
            _ = self.leader_moves_from(leader).fuse() => Err("the controller quorum has a new leader".into()),
        }
    }

    /// Resolves once this node's Raft node knows of a leader other than `leader` (or of none).
    async fn leader_moves_from(&self, leader: u64) {
        while self.quorum.leader() == Some(leader) {
            sleep(LEADER_POLL).await;
        }
    }

    /// `call` over the controller listener of `leader`, a voter other than this node.
    async fn call_remote(&self, leader: u64, call: BrokerCall, timeout: Duration) -> Result<BrokerAnswer, String> {
        let address = *self.voters.get(&leader).ok_or_else(|| format!("the leader {leader} is not a voter"))?;
        // Taken out first: no borrow may live across the awaits below (shut_down calls too).
        let kept = self.connection.borrow_mut().take();
        let mut stream = match kept {
            Some((to, stream)) if to == leader => stream,
            _ => {
                let mut stream = within(TcpStream::connect(address), CALL_TIMEOUT).await?.map_err(|e| e.to_string())?;
                let _ = stream.set_nodelay(true);
                within(stream.write_all(&BROKER_CALLS_PREAMBLE), CALL_TIMEOUT).await?.map_err(|e| e.to_string())?;
                stream
            }
        };
        let answer = within(self.exchange(&mut stream, call), timeout).await??;
        *self.connection.borrow_mut() = Some((leader, stream));
        Ok(answer)
    }

    async fn exchange(&self, stream: &mut TcpStream, call: BrokerCall) -> Result<BrokerAnswer, String> {
        let correlation_id = self.correlation_id.get().wrapping_add(1);
        self.correlation_id.set(correlation_id);
        let mut frame = BytesMut::new();
        match &call {
            BrokerCall::Register(r) => {
                encode_request_into(&mut frame, r, REGISTRATION_VERSION, correlation_id, CLIENT_ID)
            }
            BrokerCall::Heartbeat(r) => {
                encode_request_into(&mut frame, r, HEARTBEAT_VERSION, correlation_id, CLIENT_ID)
            }
            BrokerCall::AlterPartition(r) => {
                encode_request_into(&mut frame, r, ALTER_PARTITION_VERSION, correlation_id, CLIENT_ID)
            }
            BrokerCall::CreateTopics(r) => {
                encode_request_into(&mut frame, r, CREATE_TOPICS_VERSION, correlation_id, CLIENT_ID)
            }
            BrokerCall::CreatePartitions(r) => {
                encode_request_into(&mut frame, r, CREATE_PARTITIONS_VERSION, correlation_id, CLIENT_ID)
            }
        }
        .map_err(|e| e.to_string())?;
        stream.write_all(&frame).await.map_err(|e| e.to_string())?;
        let body = read_frame(stream, CALL_MAX_BYTES).await.map_err(|e| e.to_string())?;
        let answer = match call {
            BrokerCall::Register(_) => {
                decode_response::<BrokerRegistrationRequest>(body, REGISTRATION_VERSION, correlation_id)
                    .map(BrokerAnswer::Register)
            }
            BrokerCall::Heartbeat(_) => {
                decode_response::<BrokerHeartbeatRequest>(body, HEARTBEAT_VERSION, correlation_id)
                    .map(BrokerAnswer::Heartbeat)
            }
            BrokerCall::AlterPartition(_) => {
                decode_response::<AlterPartitionRequest>(body, ALTER_PARTITION_VERSION, correlation_id)
                    .map(BrokerAnswer::AlterPartition)
            }
            BrokerCall::CreateTopics(_) => {
                decode_response::<CreateTopicsRequest>(body, CREATE_TOPICS_VERSION, correlation_id)
                    .map(BrokerAnswer::CreateTopics)
            }
            BrokerCall::CreatePartitions(_) => {
                decode_response::<CreatePartitionsRequest>(body, CREATE_PARTITIONS_VERSION, correlation_id)
                    .map(BrokerAnswer::CreatePartitions)
            }
        };
        answer.map_err(|e| e.to_string())
    }
}

/// `future`'s output, or an error after `timeout`.
async fn within<T>(future: impl std::future::Future<Output = T>, timeout: Duration) -> Result<T, String> {
    futures::select! {
        output = future.fuse() => Ok(output),
        _ = sleep(timeout).fuse() => Err("the controller did not answer in time".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::BrokerRegistration;

    fn image(unfenced: &[i32]) -> MetadataImage {
        let mut image = MetadataImage::default();
        for &node_id in unfenced {
            image.brokers.insert(node_id, BrokerRegistration::unfenced_for_test(node_id));
        }
        image
    }

    #[test]
    fn a_broker_silent_past_its_session_is_expired_only_by_a_leader() {
        let timeout = Duration::from_secs(9);
        let start = Instant::now();
        let image = image(&[1, 2, 3]);
        let mut sessions = Sessions::default();
        assert!(sessions.expired(&image, start + timeout * 2, timeout).is_empty(), "not leading");
        sessions.leading(true, start);
        // A new leader counts everyone as heard of when it took over.
        assert!(sessions.expired(&image, start + timeout, timeout).is_empty());
        sessions.heard(1, start + Duration::from_secs(7));
        sessions.registered(2, start + Duration::from_secs(8), 1);
        assert_eq!(sessions.expired(&image, start + Duration::from_secs(15), timeout), vec![3]);
        assert_eq!(sessions.expired(&image, start + Duration::from_secs(17), timeout), vec![1, 3]);
        assert!(sessions.is_alive(2, start + Duration::from_secs(17), timeout));
        // Leadership lost and regained: a fresh start.
        sessions.leading(false, start + Duration::from_secs(17));
        sessions.leading(true, start + Duration::from_secs(18));
        assert!(sessions.expired(&image, start + Duration::from_secs(20), timeout).is_empty());
    }

    #[test]
    fn a_broker_shutting_down_may_stop_once_every_active_broker_has_its_move() {
        let mut image = image(&[1, 2, 3, 4]);
        image.brokers.get_mut(&4).unwrap().fenced = true;
        let mut sessions = Sessions::default();
        assert!(!sessions.may_shut_down(1, &image), "it never asked");
        sessions.shut_down(1);
        sessions.reported(2, 50);
        sessions.reported(3, 50);
        assert!(!sessions.may_shut_down(1, &image), "its leaderships have not moved yet");
        sessions.moved_away(1, 40);
        sessions.moved_away(1, 60);
        assert!(sessions.may_shut_down(1, &image), "the first move counts: 2 and 3 are past it");
        sessions.reported(3, 39);
        assert!(!sessions.may_shut_down(1, &image), "3 has not installed the move");
        // A broker shutting down, or fenced (4, silent), holds nobody up.
        sessions.shut_down(3);
        assert!(sessions.may_shut_down(1, &image));
        assert!(!sessions.may_shut_down(3, &image), "3's own move is not known yet");
        // A new incarnation of 2 reported nothing yet.
        sessions.registered(2, Instant::now(), 70);
        assert!(!sessions.may_shut_down(1, &image));
    }

    #[test]
    fn a_shut_down_broker_stays_so_until_it_registers_again() {
        let now = Instant::now();
        let mut sessions = Sessions::default();
        sessions.shut_down(4);
        assert!(sessions.is_shutting_down(4));
        sessions.registered(4, now, 1);
        assert!(!sessions.is_shutting_down(4));
    }

    #[test]
    fn a_broker_has_caught_up_once_it_reports_its_registration_offset() {
        let mut sessions = Sessions::default();
        sessions.registered(1, Instant::now(), 40);
        assert!(!sessions.caught_up(1, 39, 100), "behind its registration");
        assert!(sessions.caught_up(1, 40, 100));
        // Registered before this controller led: the offset it had applied when it first heard.
        assert!(!sessions.caught_up(2, 30, 50));
        assert!(!sessions.caught_up(2, 49, 80), "the first target stays");
        assert!(sessions.caught_up(2, 50, 80));
    }
}
