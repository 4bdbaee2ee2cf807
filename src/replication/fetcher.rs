//! A follower's side of replication: the fetchers of one shard.
//!
//! When the installed image lists this node among a partition's replicas and another broker as
//! its leader, the shard owning it follows it ([`follow`], from `ops::apply_metadata`): the
//! partition joins the shard's fetcher for that leader, one task and one connection per leader
//! broker per shard, which sends all its partitions in one Fetch (as Kafka's
//! `ReplicaFetcherThread`) with this node as `replica_id` (`replica_state` from v15), each
//! partition's `current_leader_epoch` from the image and its `last_fetched_epoch` (the newest
//! epoch in its log). It takes the highest Fetch version both brokers serve (16 between two
//! Sluice brokers; Kafka 4's fetchers send 17, which only adds a JBOD directory id).
//!
//! For each partition the leader answers: batches are appended as they are
//! (`Partition::append_replica`: offsets, epochs and timestamps kept, every CRC checked, the
//! leader-epoch cache following the batches' epochs) and the follower's high watermark becomes
//! the leader's, capped by its own log end; a `diverging_epoch` truncates the log where it
//! left the leader's (Kafka's rule, [`truncation_offset`]) and the next fetch goes on from
//! there; an error (a stale or unknown leader epoch, not the leader) pauses the partition for
//! [`RETRY_BACKOFF`] until the image moves on. A new image that names another leader or epoch
//! moves the partition to that leader's fetcher; one that makes this node the leader stops
//! following it. Nothing here crosses cores: the fetcher's state lives on the partition's
//! shard, and a response's partitions are taken in one at a time there.
//!
//! A follower whose log ends below the leader's log start (retention or DeleteRecords ran
//! there while it was away) gets OFFSET_OUT_OF_RANGE: as Kafka's fetcher, it asks the leader's
//! log start (ListOffsets EARLIEST as this replica), empties its log and starts it again there
//! (`Partition::restart_at`, Kafka's `truncateFullyAndStartAt`), and fetches on from there
//! ([`restart_below_log_start`]). Not done: a follower whose log ends past the leader's (which
//! Kafka cuts to the leader's end after an unclean election) pauses and retries.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ReplicaState};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    BrokerId, FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::client::wire::{self, RequestWriter, ResponseReader};
use crate::cluster::{MetadataImage, NO_LEADER};
use crate::handlers::fetch::REPLICA_STATE_VERSION;
use crate::partition::Partition;
use crate::runtime::{now_ms, sleep, spawn_local};
use crate::server::connection::InFlight;
use crate::shard::{Shard, TopicPartition};

/// `replica.fetch.wait.max.ms`: how long the leader may hold a fetch with nothing new.
const FETCH_WAIT_MAX_MS: i32 = 500;
/// `replica.fetch.max.bytes`: per partition, as Kafka's default.
const PARTITION_MAX_BYTES: i32 = 1 << 20;
/// `replica.fetch.response.max.bytes`: per response, as Kafka's default.
const RESPONSE_MAX_BYTES: i32 = 10 << 20;
/// `replica.fetch.backoff.ms`: after a failed connection or request, or an error for a
/// partition, before trying again.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// Fetch v13+ names topics by id.
const TOPIC_ID_VERSION: i16 = 13;
/// ListOffsets' timestamp asking for the log start offset.
const EARLIEST_TIMESTAMP: i64 = -2;

/// The fetchers of one shard, by leader broker.
#[derive(Default)]
pub struct Fetchers {
    by_leader: RefCell<HashMap<i32, Rc<Fetcher>>>,
}

/// One leader broker's partitions that this shard follows.
struct Fetcher {
    leader: i32,
    partitions: RefCell<BTreeMap<TopicPartition, Followed>>,
    /// Set when no partition is left: the task ends after its fetch in flight.
    stopped: Cell<bool>,
}

/// A partition as its fetcher follows it.
#[derive(Clone)]
struct Followed {
    partition: Partition,
    topic_id: uuid::Uuid,
    /// The leader epoch of the image that named the leader.
    leader_epoch: i32,
    /// Not fetched before then: the leader refused it, and the image should move on.
    paused_until: Option<Instant>,
}

/// Makes this shard's fetchers match `image`: every partition of the shard's table that this
/// node holds a replica of and another broker leads is followed by that leader's fetcher, in
/// the image's leader epoch; the others are not followed. A fetcher left with no partition
/// stops; one for a new leader starts.
pub fn follow(shard: &Rc<Shard>, image: &MetadataImage) {
    let node_id = shard.config.node_id;
    let mut wanted: HashMap<i32, BTreeMap<TopicPartition, Followed>> = HashMap::new();
    for (tp, partition) in shard.partitions.borrow().iter() {
        let Some(topic) = image.topic(&tp.topic) else { continue };
        let Some(metadata) = usize::try_from(tp.partition).ok().and_then(|i| topic.partitions.get(i)) else {
            continue;
        };
        if metadata.leader == node_id || metadata.leader == NO_LEADER || !metadata.replicas.contains(&node_id) {
            continue;
        }
        let followed = Followed {
            partition: partition.clone(),
            topic_id: topic.topic_id,
            leader_epoch: metadata.leader_epoch,
            paused_until: None,
        };
        wanted.entry(metadata.leader).or_default().insert(tp.clone(), followed);
    }
    let mut fetchers = shard.fetchers.by_leader.borrow_mut();
    fetchers.retain(|leader, fetcher| {
        let keep = wanted.contains_key(leader);
        fetcher.stopped.set(!keep);
        keep
    });
    for (leader, partitions) in wanted {
        match fetchers.get(&leader) {
            Some(fetcher) => {
                let mut followed = fetcher.partitions.borrow_mut();
                // A partition still followed in the same epoch keeps its pause.
                let kept = partitions.into_iter().map(|(tp, mut new)| {
                    if let Some(old) = followed.get(&tp).filter(|old| old.leader_epoch == new.leader_epoch) {
                        new.paused_until = old.paused_until;
                    }
                    (tp, new)
                });
                *followed = kept.collect();
            }
            None => {
                let fetcher =
                    Rc::new(Fetcher { leader, partitions: RefCell::new(partitions), stopped: Cell::new(false) });
                fetchers.insert(leader, fetcher.clone());
                tracing::info!(shard = shard.id, leader, "fetching from a leader");
                spawn_local(run(shard.clone(), fetcher)).detach();
            }
        }
    }
}

/// One fetcher's task: fetch, take the answer in, again, until it is stopped or the shard is.
async fn run(shard: Rc<Shard>, fetcher: Rc<Fetcher>) {
    let mut connection: Option<(RequestWriter, ResponseReader)> = None;
    let mut failures = 0u32;
    while !fetcher.stopped.get() && !shard.stopping.get() {
        let outcome = fetch_once(&shard, &fetcher, &mut connection).await;
        match outcome {
            Ok(true) => failures = 0,
            Ok(false) => sleep(RETRY_BACKOFF).await,
            Err(e) => {
                // Logged once per run of failures: a leader that is down fails every try.
                if failures == 0 {
                    tracing::warn!(shard = shard.id, leader = fetcher.leader, error = %format!("{e:#}"), "fetching from the leader failed; retrying");
                }
                failures = failures.saturating_add(1);
                connection = None;
                sleep(RETRY_BACKOFF).await;
            }
        }
    }
    tracing::debug!(shard = shard.id, leader = fetcher.leader, "fetcher stopped");
}

/// One Fetch of every partition not paused, and its answer taken in. `Ok(false)` when there
/// was nothing to fetch.
async fn fetch_once(
    shard: &Rc<Shard>,
    fetcher: &Fetcher,
    connection: &mut Option<(RequestWriter, ResponseReader)>,
) -> anyhow::Result<bool> {
    let now = Instant::now();
    let fetched: Vec<(TopicPartition, Followed)> = {
        let partitions = fetcher.partitions.borrow();
        let due = partitions.iter().filter(|(_, f)| f.paused_until.is_none_or(|until| until <= now));
        due.map(|(tp, f)| (tp.clone(), f.clone())).collect()
    };
    if fetched.is_empty() {
        return Ok(false);
    }
    if connection.is_none() {
        let address = leader_address(&shard.metadata(), fetcher.leader)?;
        *connection = Some(wire::connect(address, "sluice-replica").await?);
    }
    let (writer, reader) = connection.as_mut().expect("connected above");
    let version = writer.version::<FetchRequest>()?;
    let request = fetch_request(shard.config.node_id, version, &fetched);
    let sent = writer.write(&request).await?;
    let response: FetchResponse = reader.read::<FetchRequest>(sent).await?;
    if let Some(error) = ResponseError::try_from_code(response.error_code) {
        anyhow::bail!("the leader refused the fetch: {error:?}");
    }
    let out_of_range = take_in(shard, fetcher, version, &fetched, response).await;
    if !out_of_range.is_empty() {
        restart_below_log_start(shard, fetcher, writer, reader, &out_of_range).await?;
    }
    Ok(true)
}

/// The leader's Kafka listener, as it registered.
fn leader_address(image: &MetadataImage, leader: i32) -> anyhow::Result<SocketAddr> {
    let broker = image.brokers.get(&leader).ok_or_else(|| anyhow::anyhow!("leader {leader} is not registered"))?;
    let port = u16::try_from(broker.port)?;
    match broker.host.parse::<std::net::IpAddr>() {
        Ok(ip) => Ok(SocketAddr::new(ip, port)),
        // A host name: resolved at each connection (rare), on the shard's thread.
        Err(_) => (broker.host.as_str(), port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| anyhow::anyhow!("{} does not resolve", broker.host)),
    }
}

fn fetch_request(node_id: i32, version: i16, fetched: &[(TopicPartition, Followed)]) -> FetchRequest {
    let mut topics: Vec<FetchTopic> = Vec::new();
    for (tp, followed) in fetched {
        let p = &followed.partition;
        let partition = FetchPartition::default()
            .with_partition(tp.partition)
            .with_current_leader_epoch(followed.leader_epoch)
            .with_fetch_offset(p.log_end_offset())
            .with_last_fetched_epoch(p.latest_epoch().unwrap_or(-1))
            .with_log_start_offset(p.log_start_offset())
            .with_partition_max_bytes(PARTITION_MAX_BYTES);
        match topics.last_mut() {
            Some(last) if last.topic_id == followed.topic_id => last.partitions.push(partition),
            _ => {
                let mut topic = FetchTopic::default().with_partitions(vec![partition]);
                if version >= TOPIC_ID_VERSION {
                    topic.topic_id = followed.topic_id;
                } else {
                    topic.topic = TopicName(StrBytes::from_string(tp.topic.clone()));
                }
                topics.push(topic);
            }
        }
    }
    let request = FetchRequest::default()
        .with_max_wait_ms(FETCH_WAIT_MAX_MS)
        .with_min_bytes(1)
        .with_max_bytes(RESPONSE_MAX_BYTES)
        .with_session_epoch(-1)
        .with_topics(topics);
    if version >= REPLICA_STATE_VERSION {
        request.with_replica_state(ReplicaState::default().with_replica_id(BrokerId(node_id)))
    } else {
        request.with_replica_id(BrokerId(node_id))
    }
}

/// Takes each partition's answer in, one after the other, unless the partition is no longer
/// followed in the epoch it was fetched in. Counted in flight, so that shutdown waits for it
/// before it closes the partitions. Returns the partitions the leader answered
/// OFFSET_OUT_OF_RANGE.
async fn take_in(
    shard: &Rc<Shard>,
    fetcher: &Fetcher,
    version: i16,
    fetched: &[(TopicPartition, Followed)],
    response: FetchResponse,
) -> Vec<(TopicPartition, Followed)> {
    let _in_flight = InFlight::new(shard);
    let mut out_of_range = Vec::new();
    let by_id: HashMap<uuid::Uuid, &str> = fetched.iter().map(|(tp, f)| (f.topic_id, tp.topic.as_str())).collect();
    for topic in response.responses {
        let name = match version >= TOPIC_ID_VERSION {
            true => by_id.get(&topic.topic_id).map(|name| name.to_string()),
            false => Some(topic.topic.0.to_string()),
        };
        let Some(name) = name else { continue };
        for data in topic.partitions {
            let tp = TopicPartition { topic: name.clone(), partition: data.partition_index };
            let Some((_, asked)) = fetched.iter().find(|(t, _)| *t == tp) else { continue };
            if shard.stopping.get() || !still_followed(fetcher, &tp, asked) {
                continue;
            }
            if data.error_code == ResponseError::OffsetOutOfRange.code() {
                out_of_range.push((tp, asked.clone()));
                continue;
            }
            if let Err(e) = take_in_partition(&tp, &asked.partition, data).await {
                pause(fetcher, &tp, &e);
            }
        }
    }
    out_of_range
}

/// Not fetched for [`RETRY_BACKOFF`]: the leader refused it, and the image should move on.
fn pause(fetcher: &Fetcher, tp: &TopicPartition, error: &anyhow::Error) {
    tracing::info!(topic = %tp.topic, partition = tp.partition, leader = fetcher.leader, error = %error, "replica fetch refused; retrying");
    if let Some(followed) = fetcher.partitions.borrow_mut().get_mut(tp) {
        followed.paused_until = Some(Instant::now() + RETRY_BACKOFF);
    }
}

/// The partitions whose fetch offset the leader found out of range: as Kafka's
/// `AbstractFetcherThread.fetchOffsetAndTruncate`, asks the leader's log start (ListOffsets
/// EARLIEST, as this replica, in the followed epoch); a log ending below it is emptied and
/// started again there, and the next fetch goes on from there. Any other answer pauses the
/// partition. Counted in flight, as [`take_in`].
async fn restart_below_log_start(
    shard: &Rc<Shard>,
    fetcher: &Fetcher,
    writer: &mut RequestWriter,
    reader: &mut ResponseReader,
    out_of_range: &[(TopicPartition, Followed)],
) -> anyhow::Result<()> {
    let mut topics: Vec<ListOffsetsTopic> = Vec::new();
    for (tp, followed) in out_of_range {
        let partition = ListOffsetsPartition::default()
            .with_partition_index(tp.partition)
            .with_current_leader_epoch(followed.leader_epoch)
            .with_timestamp(EARLIEST_TIMESTAMP);
        match topics.last_mut() {
            Some(last) if last.name.0.as_str() == tp.topic => last.partitions.push(partition),
            _ => topics.push(
                ListOffsetsTopic::default()
                    .with_name(TopicName(StrBytes::from_string(tp.topic.clone())))
                    .with_partitions(vec![partition]),
            ),
        }
    }
    let request = ListOffsetsRequest::default().with_replica_id(BrokerId(shard.config.node_id)).with_topics(topics);
    let sent = writer.write(&request).await?;
    let response: ListOffsetsResponse = reader.read::<ListOffsetsRequest>(sent).await?;
    let _in_flight = InFlight::new(shard);
    for topic in response.topics {
        for answer in topic.partitions {
            let tp = TopicPartition { topic: topic.name.0.to_string(), partition: answer.partition_index };
            let Some((_, asked)) = out_of_range.iter().find(|(t, _)| *t == tp) else { continue };
            if shard.stopping.get() || !still_followed(fetcher, &tp, asked) {
                continue;
            }
            let log_end_offset = asked.partition.log_end_offset();
            let outcome = match ResponseError::try_from_code(answer.error_code) {
                Some(error) => Err(anyhow::anyhow!("the leader's log start: {error:?}")),
                None if answer.offset > log_end_offset => {
                    asked.partition.restart_at(answer.offset).await.map_err(anyhow::Error::from)
                }
                None => Err(anyhow::anyhow!(
                    "OffsetOutOfRange at {log_end_offset}, at or above the leader's log start {}",
                    answer.offset
                )),
            };
            match outcome {
                Ok(()) => tracing::info!(
                    topic = %tp.topic,
                    partition = tp.partition,
                    log_end_offset,
                    leader_log_start_offset = answer.offset,
                    "the log ended below the leader's log start; started it again there"
                ),
                Err(e) => pause(fetcher, &tp, &e),
            }
        }
    }
    Ok(())
}

/// Whether `tp` is still followed as it was when fetched: same partition, same leader epoch,
/// and this node has not become its leader meanwhile.
fn still_followed(fetcher: &Fetcher, tp: &TopicPartition, asked: &Followed) -> bool {
    let partitions = fetcher.partitions.borrow();
    partitions.get(tp).is_some_and(|now| {
        now.leader_epoch == asked.leader_epoch
            && now.partition.same(&asked.partition)
            && !asked.partition.leads()
            && asked.partition.leader_epoch() == asked.leader_epoch
    })
}

/// One partition's answer: an error, a divergence to cut, or batches to append.
async fn take_in_partition(tp: &TopicPartition, partition: &Partition, data: PartitionData) -> anyhow::Result<()> {
    if let Some(error) = ResponseError::try_from_code(data.error_code) {
        anyhow::bail!("{error:?}");
    }
    if data.diverging_epoch.epoch >= 0 {
        let (leader_epoch, leader_end_offset) = (data.diverging_epoch.epoch, data.diverging_epoch.end_offset);
        let own = partition.end_offset_for_epoch(-1, leader_epoch)?;
        let offset = truncation_offset((leader_epoch, leader_end_offset), own, partition.log_end_offset());
        let log_end_offset = partition.truncate_to(offset).await?;
        tracing::info!(
            topic = %tp.topic,
            partition = tp.partition,
            leader_epoch,
            leader_end_offset,
            log_end_offset,
            "truncated a log that diverged from its leader's"
        );
        partition.set_follower_high_watermark(data.high_watermark);
        return Ok(());
    }
    if let Some(records) = data.records.filter(|r| !r.is_empty()) {
        partition.append_replica(records, now_ms()).await?;
    }
    partition.set_follower_high_watermark(data.high_watermark);
    Ok(())
}

/// Where a follower cuts its log when the leader says it diverged (Kafka's
/// `AbstractFetcherThread.getOffsetTruncationState`): `leader` is the leader's (epoch, end
/// offset) for the follower's last fetched epoch, `own` the follower's (largest epoch at or
/// below it, where that epoch ends). The same epoch on both sides: cut where the shorter ends;
/// an older one here: cut at its end, and the next fetch finds out whether more must go.
fn truncation_offset(leader: (i32, i64), own: (i32, i64), log_end_offset: i64) -> i64 {
    let ((leader_epoch, leader_end_offset), (own_epoch, own_end_offset)) = (leader, own);
    let cut = match own_epoch {
        // No epoch at or below the leader's here: nothing of its history can be checked.
        -1 => leader_end_offset,
        _ if own_epoch == leader_epoch => leader_end_offset.min(own_end_offset),
        _ => own_end_offset,
    };
    cut.min(log_end_offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diverged_follower_cuts_where_kafka_would() {
        // Same epoch on both sides: the shorter end.
        assert_eq!(truncation_offset((3, 10), (3, 12), 15), 10);
        assert_eq!(truncation_offset((3, 10), (3, 8), 15), 8);
        // An older epoch here: its end; the next fetch checks again from there.
        assert_eq!(truncation_offset((3, 10), (2, 7), 15), 7);
        // Nothing known at or below the leader's epoch: the leader's end.
        assert_eq!(truncation_offset((3, 10), (-1, -1), 15), 10);
        // Never past the own log end.
        assert_eq!(truncation_offset((3, 10), (3, 12), 9), 9);
    }
}
