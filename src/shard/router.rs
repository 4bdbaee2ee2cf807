//! Envelopes that cross cores, and the two ends of the mesh.
//!
//! A handler that needs a partition owned elsewhere calls [`Shard::invoke_on`] with the owner's
//! id; the call site is the only place where crossing cores is visible. Envelopes carry owned
//! buffers (`Bytes`): the request body is moved, never copied, to its owner.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures::channel::oneshot;
use futures::future::LocalBoxFuture;
use kafka_protocol::ResponseError;

use super::{Shard, ShardId, TopicPartition, ops};
use crate::cluster::MetadataImage;
use crate::cluster::configs::{Alteration, ConfigResource};
use crate::group::CommittedOffset;
use crate::group::state::GroupState;
use crate::partition::PartitionError;
use crate::runtime::zero_copy::FileSlice;
use crate::runtime::{Receivers, serve_bounded, spawn_local};
use crate::storage::AppendInfo;
use crate::storage::producer_state::ActiveProducer;
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::{
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse, SyncGroupRequest,
    SyncGroupResponse,
};

/// Envelopes from one peer served at once. Parked ones (long polls, group joins) count, so it
/// is well above what the peers' connections normally keep waiting; beyond it, the peer's
/// channel fills and its senders wait.
pub const MESH_SERVING_PER_PEER: usize = 4096;

/// What one shard asks another to do.
pub enum ShardRequest {
    /// Append each (partition, batches) of one topic.
    Produce { topic: String, partitions: Vec<(i32, Bytes)> },
    /// Read from each partition without waiting.
    Read { reads: Vec<PartitionRead> },
    /// Resolve once any of these partitions has data past the given offset, or after `timeout`.
    WaitForData { partitions: Vec<(TopicPartition, i64)>, timeout: Duration },
    /// Offset lookups.
    ListOffsets { queries: Vec<(TopicPartition, OffsetQuery)> },
    /// DeleteRecords: move each partition's log start offset to the offset (-1: high watermark).
    DeleteRecords { partitions: Vec<(TopicPartition, i64)> },
    /// The size in bytes of every partition this shard owns (DescribeLogDirs).
    PartitionSizes,
    /// The idempotent producers each partition remembers (DescribeProducers).
    DescribeProducers { partitions: Vec<TopicPartition> },
    /// Controller only: create topics.
    CreateTopics { topics: Vec<NewTopic>, validate_only: bool },
    /// Controller only: add partitions to topics.
    CreatePartitions { topics: Vec<PartitionGrowth>, validate_only: bool },
    /// Controller only: change topic or broker configs; answered per change, in order.
    AlterConfigs { changes: Vec<(ConfigResource, Alteration)>, validate_only: bool },
    /// Controller only: delete topics.
    DeleteTopics { topics: Vec<String> },
    /// Controller only: reserve `count` producer ids; answered with the first.
    AllocateProducerIds { count: i64 },
    /// Install a new metadata image: open partitions now owned, drop deleted ones.
    ApplyMetadata { image: MetadataImage },
    /// Controller only: these partitions failed to open on their owner; mark them offline.
    PartitionsOffline { partitions: Vec<TopicPartition> },
    /// This shard's counters and partition offsets, for a metrics scrape.
    Metrics,
    /// A consumer-group request, for the shard coordinating the group.
    Group(Box<GroupCall>),
}

/// Who sent a request, as DescribeGroups reports members.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub client_id: String,
    pub client_host: String,
}

/// Consumer-group requests, carried whole to the coordinating shard.
pub enum GroupCall {
    Join {
        request: JoinGroupRequest,
        version: i16,
        client: ClientInfo,
    },
    Sync {
        request: SyncGroupRequest,
        version: i16,
    },
    Heartbeat {
        request: HeartbeatRequest,
    },
    Leave {
        request: LeaveGroupRequest,
        version: i16,
    },
    Commit {
        request: OffsetCommitRequest,
    },
    /// Committed offsets of one group; `None` asks for all of them.
    FetchOffsets {
        group_id: String,
        topics: Option<Vec<(String, Vec<i32>)>>,
    },
    List,
    Describe {
        group_id: String,
    },
    Delete {
        group_id: String,
    },
    DeleteOffsets {
        request: OffsetDeleteRequest,
    },
}

/// The coordinator's answer to a [`GroupCall`], variant for variant.
pub enum GroupAnswer {
    Join(JoinGroupResponse),
    Sync(SyncGroupResponse),
    Heartbeat(HeartbeatResponse),
    Leave(LeaveGroupResponse),
    Commit(OffsetCommitResponse),
    /// (topic, partition, committed offset if any), or the group-level error.
    Offsets(Result<Vec<(String, i32, Option<CommittedOffset>)>, ResponseError>),
    /// (group id, protocol type, state) of every group on the shard.
    List(Vec<(String, String, GroupState)>),
    Describe(DescribedGroup),
    Delete(Option<ResponseError>),
    DeleteOffsets(OffsetDeleteResponse),
}

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

pub struct PartitionRead {
    pub partition: TopicPartition,
    pub offset: i64,
    pub max_bytes: usize,
    /// Answer with a file range to send as is, rather than bytes read into memory.
    pub zero_copy: bool,
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
    pub log_start_offset: i64,
    pub records: RecordData,
}

pub struct NewTopic {
    pub name: String,
    pub partitions: i32,
    pub configs: std::collections::BTreeMap<String, String>,
}

/// CreatePartitions for one topic: the partition count wanted, and the replicas of each new
/// partition if the client chose them.
pub struct PartitionGrowth {
    pub name: String,
    pub count: i32,
    pub assignments: Option<Vec<Vec<i32>>>,
}

/// One partition's produce result: what was appended and the log start offset, or why not.
pub type ProduceOutcome = Result<(AppendInfo, i64), PartitionError>;
/// One topic's create or delete result; the error comes with a message for the client.
pub type TopicOutcome = Result<(), (ResponseError, String)>;

/// The answer to a [`ShardRequest`], variant for variant.
pub enum ShardResponse {
    Produced(Vec<(i32, ProduceOutcome)>),
    Read(Vec<PartitionReadResult>),
    DataReady,
    Offsets(Vec<Result<(i64, i64), PartitionError>>),
    Sizes(Vec<(TopicPartition, u64)>),
    Producers(Vec<Result<Vec<ActiveProducer>, PartitionError>>),
    /// The new log start offset of each partition, in request order.
    RecordsDeleted(Vec<Result<i64, PartitionError>>),
    Topics(Vec<(String, TopicOutcome)>),
    /// The image is installed; `offline` lists the partitions that failed to open.
    MetadataApplied {
        offline: Vec<TopicPartition>,
    },
    ProducerIds(Result<i64, ResponseError>),
    Group(GroupAnswer),
    Metrics(Box<crate::metrics::Snapshot>),
}

/// A request travelling to its owner, with the way back.
pub struct Envelope {
    pub request: ShardRequest,
    pub reply: oneshot::Sender<ShardResponse>,
}

impl Shard {
    /// Runs `request` on shard `target`: directly when that is this shard, else through the
    /// mesh. Boxed because controller requests fan out into further calls.
    pub fn invoke_on(
        self: &Rc<Self>,
        target: ShardId,
        request: ShardRequest,
    ) -> LocalBoxFuture<'static, ShardResponse> {
        let shard = self.clone();
        Box::pin(async move {
            if target == shard.id {
                return ops::execute(&shard, request).await;
            }
            shard.metrics.borrow_mut().mesh_sent += 1;
            let (reply, answer) = oneshot::channel();
            if shard.senders.send_to(target, Envelope { request, reply }).await.is_err() {
                return shard.peer_gone(target, "left the mesh").await;
            }
            match answer.await {
                Ok(response) => response,
                Err(_) => shard.peer_gone(target, "dropped an envelope").await,
            }
        })
    }

    /// Shard `target` is gone. After the drain deadline of a shutdown that is expected (shards
    /// close one by one, some connections still open): the request never completes and goes
    /// away with its connection when this shard ends. Otherwise a shard died, a broken
    /// invariant.
    async fn peer_gone(&self, target: ShardId, what: &str) -> ShardResponse {
        assert!(self.stopping.get(), "shard {target} {what} while shard {} runs", self.id);
        futures::future::pending().await
    }

    /// Serves envelopes from every other shard until the mesh closes. Each envelope runs in its
    /// own task so that a parked fetch does not hold up the ones behind it, but at most
    /// [`MESH_SERVING_PER_PEER`] from one peer at a time: then that peer's channel fills and
    /// its senders wait (backpressure), and envelopes never pile up as tasks.
    pub async fn serve_mesh(self: Rc<Self>, mut receivers: Receivers<Envelope>) {
        let mut streams = Vec::new();
        for (_peer, stream) in receivers.streams() {
            let shard = self.clone();
            streams.push(spawn_local(async move {
                let stream = &stream;
                serve_bounded(
                    MESH_SERVING_PER_PEER,
                    || stream.recv(),
                    |Envelope { request, reply }| {
                        shard.metrics.borrow_mut().mesh_received += 1;
                        let shard = shard.clone();
                        async move {
                            let _ = reply.send(ops::execute(&shard, request).await);
                        }
                    },
                )
                .await;
            }));
        }
        futures::future::join_all(streams).await;
    }
}
