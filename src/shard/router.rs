//! Envelopes that cross cores, and the two ends of the mesh.
//!
//! A handler that needs a partition owned elsewhere calls [`Shard::invoke_on`] with the owner's
//! id and a request; the call site is the only place where crossing cores is visible. Every
//! request type names its reply type ([`ShardCall`]); the envelope ([`ShardRequest`]) carries
//! the request and a typed way back, so an answer of the wrong kind cannot be written. Envelopes
//! carry owned buffers (`Bytes`): the request body is moved, never copied, to its owner.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures::channel::oneshot;
use futures::future::LocalBoxFuture;
use kafka_protocol::ResponseError;

use super::{Shard, ShardId, TopicPartition, ops};
use crate::cluster::MetadataImage;
use crate::cluster::configs::{Alteration, ConfigResource};
use crate::group::coordinator::{
    CommitOffsets, Committed, DeleteGroup, DeleteOffsets, DescribeGroup, FetchOffsets, GroupDescription, Heartbeat,
    JoinGroup, LeaveGroup, ListGroups, ListedGroup, SyncGroup, Synced,
};
use crate::group::state::JoinResult;
use crate::partition::{PartitionError, ReadLimit};
use crate::runtime::zero_copy::FileSlice;
use crate::runtime::{Receivers, serve_bounded, spawn_local};
use crate::storage::producer_state::ActiveProducer;

/// Envelopes from one peer served at once. Parked ones (long polls, group joins) count, so it
/// is well above what the peers' connections normally keep waiting; beyond it, the peer's
/// channel fills and its senders wait.
pub const MESH_SERVING_PER_PEER: usize = 4096;

/// A request one shard sends another, and the type of its answer. Each request type names its
/// reply ([`ShardCall::Reply`]), so a caller gets exactly that type back from
/// [`Shard::invoke_on`], and the owner cannot answer with another.
pub trait ShardCall: Sized {
    type Reply;
    /// The envelope carrying this request and the way back.
    fn envelope(call: Call<Self>) -> ShardRequest;
}

/// A request on its way to its owner, with the way back for the answer.
pub struct Call<C: ShardCall> {
    pub request: C,
    pub reply: Reply<C::Reply>,
}

/// The way back for one answer.
pub struct Reply<T>(oneshot::Sender<T>);

impl<T> Reply<T> {
    /// Sends the answer. The caller may have gone (its connection closed): then it is dropped.
    pub fn send(self, answer: T) {
        let _ = self.0.send(answer);
    }
}

/// Declares the envelope enum, one variant per request type, and pairs each request type with
/// its reply type: this table is the whole protocol between shards.
macro_rules! shard_calls {
    ($($(#[$doc:meta])* $name:ident => $reply:ty,)*) => {
        /// What travels between shards: one request with the way back for its answer.
        pub enum ShardRequest {
            $($(#[$doc])* $name(Call<$name>),)*
        }
        $(impl ShardCall for $name {
            type Reply = $reply;
            fn envelope(call: Call<Self>) -> ShardRequest {
                ShardRequest::$name(call)
            }
        })*
    };
}

shard_calls! {
    /// Append each partition's batches; answered in request order.
    Produce => Vec<Result<Appended, PartitionError>>,
    /// Read from each partition without waiting; answered in request order.
    Read => Vec<PartitionReadResult>,
    /// Resolve once any of these partitions has data past the given offset, or after `timeout`.
    WaitForData => (),
    /// Offset lookups; answered in request order.
    ListOffsets => Vec<Result<FoundOffset, PartitionError>>,
    /// Where each asked leader epoch's part of the log ends: (epoch, end offset), in request order.
    OffsetForLeaderEpoch => Vec<Result<(i32, i64), PartitionError>>,
    /// Move each partition's log start offset; answered with the new ones, in request order.
    DeleteRecords => Vec<Result<i64, PartitionError>>,
    /// The size in bytes of every partition this shard owns (DescribeLogDirs).
    PartitionSizes => Vec<(TopicPartition, u64)>,
    /// The idempotent producers each partition remembers; answered in request order.
    DescribeProducers => Vec<Result<Vec<ActiveProducer>, PartitionError>>,
    /// Controller only: create topics.
    CreateTopics => Vec<(String, TopicOutcome)>,
    /// Controller only: add partitions to topics.
    CreatePartitions => Vec<(String, TopicOutcome)>,
    /// Controller only: change topic or broker configs; answered per change, in order.
    AlterConfigs => Vec<(String, TopicOutcome)>,
    /// Controller only: delete topics.
    DeleteTopics => Vec<(String, TopicOutcome)>,
    /// Controller only: start, replace or cancel reassignments; answered per partition, in
    /// request order.
    AlterReassignments => Vec<(String, Vec<(i32, TopicOutcome)>)>,
    /// Controller shard of a broker: send its leaders' ISR changes to the active controller
    /// (AlterPartition); each change's new partition epoch, or why it was refused, in order.
    AlterIsr => Vec<Result<i32, String>>,
    /// Controller only: elect leaders (ElectLeaders); each topic's partitions' outcomes.
    ElectLeaders => Vec<(String, Vec<(i32, TopicOutcome)>)>,
    /// Controller only: reserve producer ids; answered with the first.
    AllocateProducerIds => Result<i64, ResponseError>,
    /// Install a new metadata image: open partitions now owned, drop deleted ones. Answered
    /// with the partitions that failed to open.
    ApplyMetadata => Vec<TopicPartition>,
    /// Controller only: these partitions failed to open on their owner; mark them offline.
    PartitionsOffline => (),
    /// This shard's counters and partition offsets, for a metrics scrape.
    Metrics => Box<crate::metrics::Snapshot>,
    /// Consumer-group requests, for the shard coordinating the group (`group::coordinator`).
    JoinGroup => JoinResult,
    SyncGroup => Synced,
    Heartbeat => Result<(), ResponseError>,
    /// Each member's result, or the group-level error.
    LeaveGroup => Result<Vec<Result<(), ResponseError>>, ResponseError>,
    /// Each offset's error (`None`: committed), in request order.
    CommitOffsets => Vec<Option<ResponseError>>,
    FetchOffsets => Committed,
    /// The shard's groups, or COORDINATOR_LOAD_IN_PROGRESS while it loads some.
    ListGroups => Result<Vec<ListedGroup>, ResponseError>,
    /// `None` when the coordinator has no such group.
    DescribeGroup => Result<Option<GroupDescription>, ResponseError>,
    DeleteGroup => Option<ResponseError>,
    /// Each partition's error, in request order, or the group-level error.
    DeleteOffsets => Result<Vec<Option<ResponseError>>, ResponseError>,
}

/// Each partition with the batches to append to it (a slice of the request frame).
pub struct Produce {
    pub parts: Vec<(TopicPartition, ProducePart)>,
    /// acks=-1: how long an append may wait for the in-sync replicas (the request's timeout).
    pub timeout: Duration,
}

pub struct ProducePart {
    pub records: Bytes,
    /// acks=-1: its topic's `min.insync.replicas`, and the answer waits until the high
    /// watermark covers the append; `None` for acks 0 and 1 (answered once written).
    pub min_insync_replicas: Option<usize>,
}

/// Where a partition put a produce's batches.
#[derive(Debug, Clone, Copy)]
pub struct Appended {
    pub base_offset: i64,
    /// The time the broker stamped on the batches under LogAppendTime, else -1.
    pub log_append_time_ms: i64,
    pub log_start_offset: i64,
}

pub struct Read {
    pub reads: Vec<PartitionRead>,
}

/// Wait until one of the partitions can be read past the offset given for it (to its high
/// watermark, or to its log end for a replica's fetch).
pub struct WaitForData {
    pub partitions: Vec<(TopicPartition, i64, ReadLimit)>,
    pub timeout: Duration,
}

pub struct ListOffsets {
    /// Each partition's query with the request's `current_leader_epoch` (-1: none).
    pub queries: Vec<(TopicPartition, (OffsetQuery, i32))>,
}

/// What ListOffsets found: -1 for each that is not known.
#[derive(Debug, Clone, Copy)]
pub struct FoundOffset {
    pub offset: i64,
    pub timestamp: i64,
    /// The leader epoch that wrote the offset (for the latest offset, the current one).
    pub leader_epoch: i32,
}

/// Each partition with (`current_leader_epoch`, the leader epoch asked about).
pub struct OffsetForLeaderEpoch {
    pub queries: Vec<(TopicPartition, (i32, i32))>,
}

/// Each partition with its new log start offset (-1: the high watermark).
pub struct DeleteRecords {
    pub partitions: Vec<(TopicPartition, i64)>,
}

pub struct PartitionSizes;

pub struct DescribeProducers {
    pub partitions: Vec<TopicPartition>,
}

pub struct CreateTopics {
    pub topics: Vec<NewTopic>,
    pub validate_only: bool,
}

pub struct CreatePartitions {
    pub topics: Vec<PartitionGrowth>,
    pub validate_only: bool,
}

pub struct AlterConfigs {
    pub changes: Vec<(ConfigResource, Alteration)>,
    pub validate_only: bool,
}

pub struct DeleteTopics {
    pub topics: Vec<String>,
}

/// Each topic's partitions with their target replicas (`None`: cancel).
pub type ReassignmentTargets = Vec<(String, Vec<(i32, Option<Vec<i32>>)>)>;

pub struct AlterReassignments {
    pub topics: ReassignmentTargets,
    pub allow_replication_factor_change: bool,
}

/// ISR changes proposed by this broker's leaders (`replication::isr`).
pub struct AlterIsr {
    pub changes: Vec<crate::replication::isr::IsrChange>,
}

/// ElectLeaders: a preferred or unclean election for these partitions of each topic, or, when
/// `None`, for every partition that needs one.
pub struct ElectLeaders {
    pub election: crate::cluster::election::Election,
    pub topics: Option<Vec<(String, Vec<i32>)>>,
}

pub struct AllocateProducerIds {
    pub count: i64,
}

pub struct ApplyMetadata {
    pub image: MetadataImage,
    /// Whether the node has caught up (`Shard::caught_up`, shard 0's, which every install
    /// carries to the others).
    pub caught_up: bool,
}

pub struct PartitionsOffline {
    pub partitions: Vec<TopicPartition>,
}

pub struct Metrics;

/// What a ListOffsets asks of one partition.
#[derive(Debug, Clone, Copy)]
pub enum OffsetQuery {
    /// The high watermark.
    Latest,
    /// The log start offset (also the earliest local offset: there is no tiered storage).
    Earliest,
    /// The first record with the largest timestamp.
    MaxTimestamp,
    /// The first record at or after this timestamp (ms).
    AtTime(i64),
}

#[derive(Clone)]
pub struct PartitionRead {
    pub partition: TopicPartition,
    pub offset: i64,
    pub max_bytes: usize,
    /// Answer with a file range to send as is, rather than bytes read into memory.
    pub zero_copy: bool,
    /// The fetcher's idea of the leader epoch (-1: none given).
    pub current_leader_epoch: i32,
    /// The epoch of the last batch the fetcher took (-1: none given), to detect divergence.
    pub last_fetched_epoch: i32,
    /// The broker fetching as a follower replica (reads to the log end, and tells the leader
    /// where the follower's log ends), or -1 for a consumer (reads to the high watermark).
    pub replica_id: i32,
}

/// A partition's records in a read answer.
pub enum RecordData {
    Memory(Bytes),
    /// A range of a segment file, sent to the socket without a copy.
    File(FileSlice),
}

impl RecordData {
    pub fn len(&self) -> usize {
        match self {
            RecordData::Memory(bytes) => bytes.len(),
            RecordData::File(slice) => slice.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub struct PartitionReadResult {
    pub error: Option<PartitionError>,
    pub high_watermark: i64,
    /// Where this read had to stop (the high watermark, or the log end for a replica): a
    /// fetch waiting for more waits for data past it.
    pub read_limit: i64,
    pub log_start_offset: i64,
    pub records: RecordData,
    /// Where the fetcher's log diverged from this one: (epoch, end offset); no records then.
    pub diverging_epoch: Option<(i32, i64)>,
}

pub struct NewTopic {
    pub name: String,
    /// -1: the active controller's `num.partitions`.
    pub partitions: i32,
    /// Replicas per partition, placed by the controller (-1: one); ignored when `assignments`
    /// are given.
    pub replication_factor: i16,
    /// The replicas of each partition, in partition order, when the client chose them.
    pub assignments: Option<Vec<Vec<i32>>>,
    pub configs: std::collections::BTreeMap<String, String>,
}

/// CreatePartitions for one topic: the partition count wanted, and the replicas of each new
/// partition if the client chose them.
pub struct PartitionGrowth {
    pub name: String,
    pub count: i32,
    pub assignments: Option<Vec<Vec<i32>>>,
}

/// One topic's create or delete result; the error comes with a message for the client.
pub type TopicOutcome = Result<(), (ResponseError, String)>;

/// `items` grouped by owner, each group in `items`' order.
fn by_owner<T>(items: Vec<(ShardId, T)>) -> BTreeMap<ShardId, Vec<T>> {
    let mut groups: BTreeMap<ShardId, Vec<T>> = BTreeMap::new();
    for (owner, item) in items {
        groups.entry(owner).or_default().push(item);
    }
    groups
}

impl Shard {
    /// Runs `request` on shard `target`: directly when that is this shard, else through the
    /// mesh. Boxed because controller requests fan out into further calls.
    pub fn invoke_on<C: ShardCall + 'static>(
        self: &Rc<Self>,
        target: ShardId,
        request: C,
    ) -> LocalBoxFuture<'static, C::Reply> {
        let shard = self.clone();
        let (reply, answer) = oneshot::channel();
        let envelope = C::envelope(Call { request, reply: Reply(reply) });
        Box::pin(async move {
            if target == shard.id {
                ops::execute(&shard, envelope).await;
            } else {
                shard.metrics.borrow_mut().mesh_sent += 1;
                if shard.senders.send_to(target, envelope).await.is_err() {
                    return shard.peer_gone(target, "left the mesh").await;
                }
            }
            match answer.await {
                Ok(answer) => answer,
                Err(_) => shard.peer_gone(target, "dropped an envelope").await,
            }
        })
    }

    /// Runs the request `make` builds on every shard at once; the answers come in shard order.
    pub async fn on_every_shard<C: ShardCall + 'static>(self: &Rc<Self>, make: impl Fn() -> C) -> Vec<C::Reply> {
        futures::future::join_all((0..self.shard_count).map(|target| self.invoke_on(target, make()))).await
    }

    /// Sends each owner its items in one request (built by `request`), every owner at once,
    /// and returns the answers in `items`' order. Each owner answers its items in the order it
    /// got them.
    pub async fn gather<T, R, C>(self: &Rc<Self>, items: Vec<(ShardId, T)>, request: impl Fn(Vec<T>) -> C) -> Vec<R>
    where
        C: ShardCall<Reply = Vec<R>> + 'static,
    {
        let count = items.len();
        let indexed = items.into_iter().enumerate().map(|(i, (owner, item))| (owner, (i, item))).collect();
        let calls = by_owner(indexed).into_iter().map(|(owner, parts)| {
            let (indexes, parts): (Vec<usize>, Vec<T>) = parts.into_iter().unzip();
            let call = self.invoke_on(owner, request(parts));
            async move { (indexes, call.await) }
        });
        let mut answers: Vec<Option<R>> = (0..count).map(|_| None).collect();
        for (indexes, replies) in futures::future::join_all(calls).await {
            assert_eq!(indexes.len(), replies.len(), "an owner answers every item it is sent");
            for (i, reply) in indexes.into_iter().zip(replies) {
                answers[i] = Some(reply);
            }
        }
        answers.into_iter().map(|a| a.expect("every item is answered")).collect()
    }

    /// [`Shard::gather`] for a request some of whose items were answered already (`Err`: an
    /// unknown partition, a refused entry): those keep their answer and travel nowhere.
    pub async fn scatter<T, R, E, C>(
        self: &Rc<Self>,
        items: Vec<Result<(ShardId, T), E>>,
        request: impl Fn(Vec<T>) -> C,
    ) -> Vec<Result<R, E>>
    where
        C: ShardCall<Reply = Vec<R>> + 'static,
    {
        let mut answered = Vec::with_capacity(items.len());
        let mut routed = Vec::new();
        for item in items {
            match item {
                Ok(item) => {
                    routed.push(item);
                    answered.push(None);
                }
                Err(e) => answered.push(Some(e)),
            }
        }
        let mut replies = self.gather(routed, request).await.into_iter();
        answered
            .into_iter()
            .map(|answer| match answer {
                Some(e) => Err(e),
                None => Ok(replies.next().expect("one reply per routed item")),
            })
            .collect()
    }

    /// Sends each owner its items in one request, every owner at once, and returns as soon
    /// as the first owner answers (the others' answers are dropped).
    pub async fn scatter_first<T, C: ShardCall + 'static>(
        self: &Rc<Self>,
        items: Vec<(ShardId, T)>,
        request: impl Fn(Vec<T>) -> C,
    ) {
        let calls: Vec<_> =
            by_owner(items).into_iter().map(|(owner, parts)| self.invoke_on(owner, request(parts))).collect();
        if !calls.is_empty() {
            futures::future::select_all(calls).await;
        }
    }

    /// Shard `target` is gone. After the drain deadline of a shutdown that is expected (shards
    /// close one by one, some connections still open): the request never completes and goes
    /// away with its connection when this shard ends. Otherwise a shard died, a broken
    /// invariant.
    async fn peer_gone<T>(&self, target: ShardId, what: &str) -> T {
        assert!(self.stopping.get(), "shard {target} {what} while shard {} runs", self.id);
        futures::future::pending().await
    }

    /// Serves envelopes from every other shard until the mesh closes. Each envelope runs in its
    /// own task so that a parked fetch does not hold up the ones behind it, but at most
    /// [`MESH_SERVING_PER_PEER`] from one peer at a time: then that peer's channel fills and
    /// its senders wait (backpressure), and envelopes never pile up as tasks.
    pub async fn serve_mesh(self: Rc<Self>, mut receivers: Receivers<ShardRequest>) {
        let mut streams = Vec::new();
        for (_peer, stream) in receivers.streams() {
            let shard = self.clone();
            streams.push(spawn_local(async move {
                let stream = &stream;
                serve_bounded(
                    MESH_SERVING_PER_PEER,
                    || stream.recv(),
                    |envelope| {
                        shard.metrics.borrow_mut().mesh_received += 1;
                        let shard = shard.clone();
                        async move { ops::execute(&shard, envelope).await }
                    },
                )
                .await;
            }));
        }
        futures::future::join_all(streams).await;
    }
}
