//! Consumer groups: membership (the classic group protocol) and committed offsets.
//!
//! Each group is owned by one shard, the one that owns its partition of the internal topic
//! `__consumer_offsets` (`placement::offsets_partition`). Group requests arriving on any
//! shard are forwarded there ([`route`]) as Sluice's own request types; the owner's
//! [`coordinator`] runs the state machine ([`state`]) and appends commits to its local offsets
//! partition through the normal storage path ([`offsets`]), so a commit never crosses a core
//! twice.
//!
//! At startup each shard replays its offsets partitions before it accepts clients; a shard
//! that comes to lead one later loads it in the background, answering its groups' requests
//! COORDINATOR_LOAD_IN_PROGRESS meanwhile ([`coordinating`]), so a coordinator never answers
//! before it knows its groups' offsets. Offsets of a group that
//! stays empty expire after `offsets.retention.minutes`.

pub mod coordinator;
pub mod offsets;
pub mod state;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::LocalBoxFuture;
use kafka_protocol::ResponseError;

use crate::cluster::MetadataImage;
use crate::partition::ReadLimit;
use crate::protocol::errors::partition_error_code;
use crate::protocol::records::{decode_records, encode_batch};
use crate::runtime::{now_ms, sleep};
use crate::shard::placement::offsets_partition;
use crate::shard::{Shard, ShardCall, ShardId, TopicPartition};
use state::{Group, GroupLimits, GroupState};

/// The internal topic holding committed offsets, as in Kafka.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// A committed offset with what the consumer stored beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

/// A group's committed offsets by (topic, partition).
pub type Offsets = BTreeMap<(String, i32), CommittedOffset>;

/// What the coordinating shard keeps per group.
pub struct GroupEntry {
    pub group: Group,
    pub offsets: Offsets,
}

/// Runs `request` on the shard coordinating `group_id`; NOT_COORDINATOR when this node does
/// not lead the group's offsets partition (FindCoordinator names the node that does).
pub fn route<C: ShardCall + 'static>(
    shard: &Rc<Shard>,
    group_id: &str,
    request: C,
) -> LocalBoxFuture<'static, Result<C::Reply, ResponseError>> {
    let image = shard.metadata();
    let tp = offsets_topic_partition(&image, group_id);
    if !shard.leads(&image, &tp.topic, tp.partition) {
        return Box::pin(async { Err(ResponseError::NotCoordinator) });
    }
    let reply = shard.invoke_on(coordinator_shard(&image, group_id), request);
    Box::pin(async move { Ok(reply.await) })
}

/// The shard coordinating `group_id`.
pub fn coordinator_shard(image: &MetadataImage, group_id: &str) -> ShardId {
    let partitions = image.topic(OFFSETS_TOPIC).map_or(1, |t| t.partitions.len() as i32);
    image.owner(OFFSETS_TOPIC, offsets_partition(group_id, partitions)).unwrap_or(0)
}

/// The `__consumer_offsets` partition holding `group_id`'s commits.
pub fn offsets_topic_partition(image: &MetadataImage, group_id: &str) -> TopicPartition {
    let partitions = image.topic(OFFSETS_TOPIC).map_or(1, |t| t.partitions.len() as i32);
    TopicPartition { topic: OFFSETS_TOPIC.to_string(), partition: offsets_partition(group_id, partitions) }
}

pub fn limits(shard: &Shard) -> GroupLimits {
    GroupLimits {
        min_session_timeout_ms: shard.config.group_min_session_timeout_ms,
        max_session_timeout_ms: shard.config.group_max_session_timeout_ms,
        initial_rebalance_delay_ms: shard.config.group_initial_rebalance_delay_ms,
        max_size: shard.config.group_max_size,
    }
}

/// Appends offset records (key, value; `None` deletes) to the group's offsets partition, which
/// this shard owns.
pub async fn append_offset_records(
    shard: &Shard,
    group_id: &str,
    records: Vec<(Bytes, Option<Bytes>)>,
) -> Result<(), ResponseError> {
    if records.is_empty() {
        return Ok(());
    }
    let tp = offsets_topic_partition(&shard.metadata(), group_id);
    let now = now_ms();
    let records: Vec<_> = records.into_iter().map(|(key, value)| (Some(key), value)).collect();
    let batch = encode_batch(&records, now);
    let partition = shard.partitions.borrow().get(&tp).cloned().ok_or(ResponseError::CoordinatorNotAvailable)?;
    let appended = partition.append(batch, now).await.map_err(|e| commit_error(partition_error_code(&e)))?;
    // As Kafka's coordinator, acks=-1: answered once the high watermark covers the records.
    let min_insync_replicas = usize::try_from(shard.effective_config().min_insync_replicas).unwrap_or(1);
    let replicated = partition.wait_replicated(appended.last_offset + 1, min_insync_replicas).fuse();
    futures::pin_mut!(replicated);
    futures::select! {
        replicated = replicated => replicated.map_err(|e| commit_error(partition_error_code(&e))),
        _ = sleep(COMMIT_TIMEOUT).fuse() => Err(commit_error(ResponseError::RequestTimedOut)),
    }
}

/// What a client hears for a failed offsets append, as Kafka's coordinator maps it: retry
/// here, or find the coordinator again.
fn commit_error(error: ResponseError) -> ResponseError {
    use ResponseError::*;
    match error {
        UnknownTopicOrPartition | NotEnoughReplicas | NotEnoughReplicasAfterAppend | RequestTimedOut => {
            CoordinatorNotAvailable
        }
        NotLeaderOrFollower | KafkaStorageError => NotCoordinator,
        other => other,
    }
}

/// How long a commit waits for the in-sync replicas (Kafka's `offsets.commit.timeout.ms`
/// default).
const COMMIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The `__consumer_offsets` partitions whose groups this shard holds (those its node leads):
/// loaded, or being loaded. Each load has its own number, so that a load overtaken by a loss
/// of the partition and a new lead of it is not taken for the new one.
#[derive(Default)]
pub struct OffsetsPartitions {
    loaded: BTreeSet<i32>,
    loading: BTreeMap<i32, u64>,
    loads: u64,
}

/// Whether this shard may answer for `group_id` now, checked on the coordinating shard before
/// each group request: COORDINATOR_LOAD_IN_PROGRESS while the group's offsets partition is
/// being loaded (as Kafka's coordinator), NOT_COORDINATOR when this shard does not hold it
/// (its image names another leader: a request routed by a shard whose image differs).
pub fn coordinating(shard: &Shard, group_id: &str) -> Result<(), ResponseError> {
    let partition = offsets_topic_partition(&shard.metadata(), group_id).partition;
    let partitions = shard.offsets_partitions.borrow();
    if partitions.loaded.contains(&partition) {
        Ok(())
    } else if partitions.loading.contains_key(&partition) {
        Err(ResponseError::CoordinatorLoadInProgress)
    } else {
        Err(ResponseError::NotCoordinator)
    }
}

/// Makes this shard's group table follow the `__consumer_offsets` partitions it leads now:
/// one it has just come to lead is loaded, replayed from its replica's log up to the log end
/// (as Kafka's coordinator loads on election), its groups' requests answered
/// COORDINATOR_LOAD_IN_PROGRESS meanwhile ([`coordinating`]); the groups of one it no longer
/// leads are dropped, so their members hear NOT_COORDINATOR and find the new coordinator. The
/// table changes at once; the returned future is the loads, which the caller awaits at
/// startup (before the shard accepts clients) and spawns after each metadata image.
pub fn follow_leadership(shard: &Rc<Shard>) -> impl Future<Output = ()> + 'static {
    let image = shard.metadata();
    let mut loads = Vec::new();
    let Some(topic) = image.topic(OFFSETS_TOPIC) else { return futures::future::join_all(loads).map(drop) };
    let partitions = topic.partitions.len() as i32;
    let led: BTreeSet<i32> = topic
        .partitions
        .iter()
        .filter(|p| p.shard == shard.id && shard.leads(&image, OFFSETS_TOPIC, p.partition))
        .map(|p| p.partition)
        .collect();
    let mut held = shard.offsets_partitions.borrow_mut();
    let held = &mut *held;
    let lost: Vec<i32> = held.loaded.iter().chain(held.loading.keys()).filter(|p| !led.contains(p)).copied().collect();
    if !lost.is_empty() {
        held.loaded.retain(|p| led.contains(p));
        held.loading.retain(|p, _| led.contains(p));
        let mut groups = shard.groups.borrow_mut();
        let before = groups.len();
        groups.retain(|id, _| !lost.contains(&offsets_partition(id, partitions)));
        tracing::info!(shard = shard.id, partitions = ?lost, groups = before - groups.len(), "no longer coordinating");
    }
    for &partition in &led {
        if held.loaded.contains(&partition) || held.loading.contains_key(&partition) {
            continue;
        }
        held.loads += 1;
        held.loading.insert(partition, held.loads);
        loads.push(load_partition(shard.clone(), partition, held.loads));
    }
    futures::future::join_all(loads).map(drop)
}

/// Replays one `__consumer_offsets` partition of this shard into its group table (load number
/// `load`), then counts it loaded, unless the partition was lost meanwhile.
async fn load_partition(shard: Rc<Shard>, partition_index: i32, load: u64) {
    hold_load_in_tests().await;
    let still_loading = |shard: &Shard| shard.offsets_partitions.borrow().loading.get(&partition_index) == Some(&load);
    let now = now_ms();
    let tp = TopicPartition { topic: OFFSETS_TOPIC.to_string(), partition: partition_index };
    let partition = shard.partitions.borrow().get(&tp).cloned();
    let mut loaded: HashMap<String, GroupEntry> = HashMap::new();
    let mut records_loaded = 0usize;
    let mut offset = partition.as_ref().map_or(0, |p| p.log_start_offset());
    while let Some(partition) = partition.as_ref().filter(|p| offset < p.log_end_offset()) {
        if !still_loading(&shard) {
            return;
        }
        // Pages not cached are loaded through the ring, the shard serving others meanwhile.
        let mut page_loads = 0;
        let read = partition.fetch_bytes(offset, 1 << 20, ReadLimit::LogEnd, &mut page_loads).await;
        shard.metrics.borrow_mut().fetch_owner_loads += page_loads;
        let bytes = match read {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::error!(partition = partition_index, offset, error = %e, "reading committed offsets");
                break;
            }
        };
        let records = match decode_records(bytes, offset) {
            Ok(records) if !records.is_empty() => records,
            _ => break,
        };
        offset = records.last().map_or(offset, |r| r.offset + 1);
        for record in records {
            let Some((group_id, topic, partition, value)) = offsets::decode(record.key, record.value) else {
                continue;
            };
            let entry = loaded
                .entry(group_id.clone())
                .or_insert_with(|| GroupEntry { group: Group::new(&group_id, now), offsets: Offsets::new() });
            match value {
                Some(committed) => entry.offsets.insert((topic, partition), committed),
                None => entry.offsets.remove(&(topic, partition)),
            };
            records_loaded += 1;
        }
        // Other work of the shard goes on between chunks.
        crate::runtime::yield_if_needed().await;
    }
    if !still_loading(&shard) {
        return;
    }
    loaded.retain(|_, e| !e.offsets.is_empty());
    shard.groups.borrow_mut().extend(loaded);
    let mut held = shard.offsets_partitions.borrow_mut();
    held.loading.remove(&partition_index);
    held.loaded.insert(partition_index);
    tracing::info!(shard = shard.id, partition = partition_index, records = records_loaded, "loaded committed offsets");
}

/// Debug builds only: a load of committed offsets first waits `$SLUICE_TEST_OFFSETS_LOAD_DELAY_MS`,
/// so that tests see requests arrive while it is under way.
async fn hold_load_in_tests() {
    if !cfg!(debug_assertions) {
        return;
    }
    static DELAY_MS: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    let delay = DELAY_MS.get_or_init(|| std::env::var("SLUICE_TEST_OFFSETS_LOAD_DELAY_MS").ok()?.parse().ok());
    if let Some(ms) = *delay {
        sleep(std::time::Duration::from_millis(ms)).await;
    }
}

/// How often a coordinator checks sessions, rebalance deadlines and offset expiry.
const GROUP_TICK: std::time::Duration = std::time::Duration::from_millis(50);

/// Runs for the shard's lifetime: expels members whose session lapsed, completes rebalances
/// whose deadline came, expires offsets of groups that stayed empty, forgets empty groups.
pub async fn maintain(shard: Rc<Shard>) {
    let mut last_expiry_check = now_ms();
    loop {
        sleep(GROUP_TICK).await;
        let now = now_ms();
        let limits = limits(&shard);
        for entry in shard.groups.borrow_mut().values_mut() {
            entry.group.tick(now, &limits);
        }
        if now - last_expiry_check >= shard.config.offsets_retention_check_interval_ms {
            last_expiry_check = now;
            expire_offsets(&shard, now).await;
        }
        shard.groups.borrow_mut().retain(|_, e| !e.group.is_idle() || !e.offsets.is_empty());
    }
}

/// Deletes the offsets of groups that have been empty for `offsets.retention.minutes`
/// (counted from the later of the commit and the moment the group became empty).
async fn expire_offsets(shard: &Shard, now: i64) {
    let retention_ms = shard.config.offsets_retention_minutes * 60_000;
    let mut expired: Vec<(String, Vec<(String, i32)>)> = Vec::new();
    for (id, entry) in shard.groups.borrow().iter() {
        let Some(empty_since) = entry.group.empty_since_ms.filter(|_| entry.group.state == GroupState::Empty) else {
            continue;
        };
        let keys: Vec<(String, i32)> = entry
            .offsets
            .iter()
            .filter(|(_, c)| now - c.commit_timestamp_ms.max(empty_since) >= retention_ms)
            .map(|(k, _)| k.clone())
            .collect();
        if !keys.is_empty() {
            expired.push((id.clone(), keys));
        }
    }
    for (group_id, keys) in expired {
        let tombstones = keys.iter().map(|(t, p)| (offsets::key(&group_id, t, *p), None)).collect();
        match append_offset_records(shard, &group_id, tombstones).await {
            Ok(()) => {
                if let Some(entry) = shard.groups.borrow_mut().get_mut(&group_id) {
                    for key in &keys {
                        entry.offsets.remove(key);
                    }
                }
                tracing::info!(group = %group_id, partitions = keys.len(), "expired committed offsets");
            }
            Err(e) => tracing::error!(group = %group_id, error = %e, "expiring offsets"),
        }
    }
}
