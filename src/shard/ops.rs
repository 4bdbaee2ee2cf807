//! What a shard does with an envelope addressed to it. Every function here runs on the shard
//! that owns the state it touches.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use futures::FutureExt;
use futures::channel::oneshot;
use futures::future::LocalBoxFuture;

use super::router::{
    Appended, Call, FoundOffset, OffsetQuery, PartitionRead, PartitionReadResult, Produce, RecordData, WaitForData,
};
use super::{Shard, ShardRequest, TopicPartition, controller};
use crate::cluster::{MetadataImage, PartitionMetadata};
use crate::group::coordinator;
use crate::partition::{Partition, PartitionError, ReadLimit};
use crate::runtime::file::run_blocking;
use crate::runtime::{now_ms, sleep, spawn_local};
use crate::storage::deleter;

/// Serves one envelope and sends its answer back.
pub async fn execute(shard: &Rc<Shard>, envelope: ShardRequest) {
    match envelope {
        ShardRequest::Produce(Call { request, reply }) => reply.send(produce(shard, request).await),
        ShardRequest::Read(Call { request, reply }) => reply.send(read(shard, request.reads).await),
        ShardRequest::WaitForData(Call { request, reply }) => {
            wait_for_data(shard, request).await;
            reply.send(())
        }
        ShardRequest::ListOffsets(Call { request, reply }) => reply.send(list_offsets(shard, request.queries).await),
        ShardRequest::OffsetForLeaderEpoch(Call { request, reply }) => {
            let table = shard.partitions.borrow();
            let results = request
                .queries
                .iter()
                .map(|(tp, (current_leader_epoch, leader_epoch))| match table.get(tp) {
                    Some(p) => p.end_offset_for_epoch(*current_leader_epoch, *leader_epoch),
                    None => Err(shard.missing_partition_error(tp)),
                })
                .collect();
            reply.send(results)
        }
        ShardRequest::PartitionSizes(Call { reply, .. }) => {
            let table = shard.partitions.borrow();
            reply.send(table.iter().map(|(tp, p)| (tp.clone(), p.size())).collect())
        }
        ShardRequest::DescribeProducers(Call { request, reply }) => {
            let table = shard.partitions.borrow();
            let results = request
                .partitions
                .iter()
                .map(|tp| {
                    table.get(tp).map(Partition::active_producers).ok_or_else(|| shard.missing_partition_error(tp))
                })
                .collect();
            reply.send(results)
        }
        ShardRequest::DeleteRecords(Call { request, reply }) => {
            let deletions: Vec<_> = {
                let table = shard.partitions.borrow();
                request
                    .partitions
                    .into_iter()
                    .map(|(tp, offset)| match table.get(&tp) {
                        Some(p) => p.delete_records(offset).left_future(),
                        None => std::future::ready(Err(shard.missing_partition_error(&tp))).right_future(),
                    })
                    .collect()
            };
            reply.send(futures::future::join_all(deletions).await)
        }
        ShardRequest::CreateTopics(Call { request, reply }) => {
            reply.send(controller::create_topics(shard, request.topics, request.validate_only).await)
        }
        ShardRequest::CreatePartitions(Call { request, reply }) => {
            reply.send(controller::create_partitions(shard, request.topics, request.validate_only).await)
        }
        ShardRequest::AlterConfigs(Call { request, reply }) => {
            reply.send(controller::alter_configs(shard, request.changes, request.validate_only).await)
        }
        ShardRequest::AlterReassignments(Call { request, reply }) => {
            let allow = request.allow_replication_factor_change;
            reply.send(controller::alter_reassignments(shard, request.topics, allow).await)
        }
        ShardRequest::DeleteTopics(Call { request, reply }) => {
            reply.send(controller::delete_topics(shard, request.topics).await)
        }
        ShardRequest::AlterIsr(Call { request, reply }) => {
            reply.send(crate::replication::isr::send(shard, request.changes).await)
        }
        ShardRequest::ElectLeaders(Call { request, reply }) => {
            reply.send(controller::elect_leaders(shard, request.election, request.topics).await)
        }
        ShardRequest::AllocateProducerIds(Call { request, reply }) => {
            reply.send(controller::allocate_producer_ids(shard, request.count).await)
        }
        ShardRequest::Metrics(Call { reply, .. }) => reply.send(Box::new(snapshot(shard))),
        ShardRequest::JoinGroup(Call { request, reply }) => reply.send(coordinator::join(shard, request).await),
        ShardRequest::SyncGroup(Call { request, reply }) => reply.send(coordinator::sync(shard, request).await),
        ShardRequest::Heartbeat(Call { request, reply }) => reply.send(coordinator::heartbeat(shard, request)),
        ShardRequest::LeaveGroup(Call { request, reply }) => reply.send(coordinator::leave(shard, request)),
        ShardRequest::CommitOffsets(Call { request, reply }) => reply.send(coordinator::commit(shard, request).await),
        ShardRequest::FetchOffsets(Call { request, reply }) => reply.send(coordinator::fetch_offsets(shard, request)),
        ShardRequest::ListGroups(Call { reply, .. }) => reply.send(coordinator::list(shard)),
        ShardRequest::DescribeGroup(Call { request, reply }) => {
            reply.send(coordinator::describe(shard, &request.group_id))
        }
        ShardRequest::DeleteGroup(Call { request, reply }) => {
            reply.send(coordinator::delete(shard, &request.group_id).await)
        }
        ShardRequest::DeleteOffsets(Call { request, reply }) => {
            reply.send(coordinator::delete_offsets(shard, request).await)
        }
        ShardRequest::ApplyMetadata(Call { request, reply }) => {
            shard.caught_up.set(request.caught_up);
            reply.send(apply_metadata(shard, request.image, false).await)
        }
        ShardRequest::PartitionsOffline(Call { request, reply }) => {
            controller::mark_offline(shard, request.partitions).await;
            reply.send(())
        }
    }
}

/// Returns once any of the partitions has data past the offset given for it, or at the timeout.
async fn wait_for_data(shard: &Shard, WaitForData { partitions, timeout }: WaitForData) {
    let Some(waiters) = park(&shard.partitions.borrow(), &partitions) else {
        return;
    };
    if !waiters.is_empty() {
        futures::select! {
            _ = futures::future::select_all(waiters).fuse() => {},
            _ = sleep(timeout).fuse() => {},
        }
    }
}

/// Parks on each of `partitions` this shard holds, unless one of them already has data past
/// the offset given for it (it arrived after the caller's read): then `None`, nothing to wait
/// for. The check and the parking are one synchronous step, so no append can land between
/// them unseen; one that did would leave the fetch asleep until its `max_wait_ms` with data
/// there (a lost wake-up).
fn park(
    table: &HashMap<TopicPartition, Partition>,
    partitions: &[(TopicPartition, i64, ReadLimit)],
) -> Option<Vec<oneshot::Receiver<()>>> {
    let arrived =
        partitions.iter().any(|(tp, offset, limit)| table.get(tp).is_some_and(|p| p.read_limit(*limit) > *offset));
    if arrived {
        return None;
    }
    Some(partitions.iter().filter_map(|(tp, _, _)| table.get(tp).map(Partition::wait_for_data)).collect())
}

/// Appends to each partition at once; the partition table is not borrowed while they wait
/// for their writes and fsyncs, and with acks=-1 for the in-sync replicas (at most `timeout`,
/// then REQUEST_TIMED_OUT as Kafka's DelayedProduce; the records stay written).
async fn produce(shard: &Shard, Produce { parts, timeout }: Produce) -> Vec<Result<Appended, PartitionError>> {
    let now = now_ms();
    let appends: Vec<_> = {
        let table = shard.partitions.borrow();
        parts
            .into_iter()
            .map(|(tp, part)| match table.get(&tp) {
                None => Err(shard.missing_partition_error(&tp)),
                Some(p) => Ok((p.append(part.records, now), part.min_insync_replicas, p.clone())),
            })
            .collect()
    };
    let deadline = std::time::Instant::now() + timeout;
    futures::future::join_all(appends.into_iter().map(|append| async move {
        let (append, min_insync_replicas, p) = append?;
        let info = append.await?;
        if let Some(min_insync_replicas) = min_insync_replicas {
            let replicated = p.wait_replicated(info.last_offset + 1, min_insync_replicas).fuse();
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            futures::pin_mut!(replicated);
            futures::select! {
                replicated = replicated => replicated?,
                _ = sleep(left).fuse() => return Err(PartitionError::ReplicationTimedOut),
            }
        }
        Ok(Appended {
            base_offset: info.base_offset,
            log_append_time_ms: info.log_append_time_ms,
            log_start_offset: p.log_start_offset(),
        })
    }))
    .await
}

/// Reads for a fetch, all at once: a read whose bytes are not in the page cache loads them
/// through the shard's io_uring (`Partition::fetch_slice`) while the others, and the shard's
/// other work, go on.
async fn read(shard: &Shard, reads: Vec<PartitionRead>) -> Vec<PartitionReadResult> {
    futures::future::join_all(reads.into_iter().map(|r| read_one(shard, r))).await
}

async fn read_one(shard: &Shard, r: PartitionRead) -> PartitionReadResult {
    let partition = shard.partitions.borrow().get(&r.partition).cloned();
    let Some(p) = partition else {
        return PartitionReadResult {
            error: Some(shard.missing_partition_error(&r.partition)),
            high_watermark: -1,
            read_limit: -1,
            log_start_offset: -1,
            records: RecordData::Memory(bytes::Bytes::new()),
            diverging_epoch: None,
        };
    };
    let limit = if r.replica_id >= 0 { ReadLimit::LogEnd } else { ReadLimit::HighWatermark };
    let answer = |error, records, diverging_epoch| PartitionReadResult {
        error,
        high_watermark: p.high_watermark(),
        read_limit: p.read_limit(limit),
        log_start_offset: p.log_start_offset(),
        records,
        diverging_epoch,
    };
    let no_records = || RecordData::Memory(bytes::Bytes::new());
    let diverging =
        p.check_leader_epoch(r.current_leader_epoch).and_then(|()| p.diverging_epoch(r.offset, r.last_fetched_epoch));
    match diverging {
        Err(e) => return answer(Some(e), no_records(), None),
        Ok(Some(diverging)) => return answer(None, no_records(), Some(diverging)),
        Ok(None) => {}
    }
    let mut loads = 0;
    let records = match r.zero_copy {
        true => p.fetch_slice(r.offset, r.max_bytes, limit, &mut loads).await.map(|slice| match slice {
            Some(slice) => RecordData::File(slice),
            None => RecordData::Memory(bytes::Bytes::new()),
        }),
        false => p.fetch_bytes(r.offset, r.max_bytes, limit, &mut loads).await.map(RecordData::Memory),
    };
    // A replica's fetch offset is its log end: the high watermark may move (as Kafka, only
    // for a fetch that found its offset in this log and did not diverge). The answer then
    // carries the new one.
    let records = records.map_err(PartitionError::from).and_then(|records| match r.replica_id >= 0 {
        true => p.replica_fetched(r.replica_id, r.offset, now_ms()).map(|()| records),
        false => Ok(records),
    });
    shard.metrics.borrow_mut().fetch_owner_loads += loads;
    let (error, records) = match records {
        Ok(records) => (None, records),
        Err(e) => {
            if matches!(e, PartitionError::Storage(crate::storage::StorageError::Io(_))) {
                let tp = &r.partition;
                tracing::warn!(topic = %tp.topic, partition = tp.partition, offset = r.offset, error = %e, "read failed");
            }
            (Some(e), no_records())
        }
    };
    answer(error, records, None)
}

/// Each query's answer, with the leader epoch of the offset found as Kafka gives it: the
/// current one for the latest offset, the cache's for the others. Lookups by time read the
/// segments as fetches do (never waiting for the disk on the shard's thread), all at once.
async fn list_offsets(
    shard: &Shard,
    queries: Vec<(TopicPartition, (OffsetQuery, i32))>,
) -> Vec<Result<FoundOffset, PartitionError>> {
    let found = {
        let table = shard.partitions.borrow();
        queries
            .into_iter()
            .map(|(tp, (query, current_leader_epoch))| {
                let p = table.get(&tp).cloned().ok_or_else(|| shard.missing_partition_error(&tp));
                async move {
                    let p = p?;
                    p.check_leader_epoch(current_leader_epoch)?;
                    let found = match query {
                        OffsetQuery::Latest => {
                            return Ok(FoundOffset {
                                offset: p.high_watermark(),
                                timestamp: -1,
                                leader_epoch: p.leader_epoch(),
                            });
                        }
                        OffsetQuery::Earliest => Some((p.log_start_offset(), -1)),
                        OffsetQuery::MaxTimestamp => p.max_timestamp_offset().await?,
                        OffsetQuery::AtTime(timestamp) => p.offset_for_timestamp(timestamp).await?,
                    };
                    // Kafka answers "no such record" with offset -1 and timestamp -1.
                    let (offset, timestamp) = found.unwrap_or((-1, -1));
                    let leader_epoch = found.and_then(|_| p.epoch_for_offset(offset)).unwrap_or(-1);
                    Ok(FoundOffset { offset, timestamp, leader_epoch })
                }
            })
            .collect::<Vec<_>>()
    };
    futures::future::join_all(found).await
}

/// Makes this shard's partition table match `image`: opens the partitions it now owns and
/// deletes those whose topic is gone. `clean_shutdown` says whether recovery may be skipped
/// (only meaningful at startup). Returns the partitions that failed to open: they are offline
/// on this shard from now on, and the controller must mark them so in the image.
///
/// New partitions are opened (recovered, at startup) on the shard's blocking pool, a few at a
/// time, while the shard serves: each joins the table, and so answers, once it is open.
/// Installs never overlap (the controller makes them one at a time).
pub async fn apply_metadata(shard: &Rc<Shard>, image: MetadataImage, clean_shutdown: bool) -> Vec<TopicPartition> {
    let mut owned = HashSet::new();
    // Only partitions with a replica on this node are opened here.
    let hosted = |p: &&PartitionMetadata| p.shard == shard.id && p.replicas.contains(&shard.config.node_id);
    for topic in image.topics.values() {
        for p in topic.partitions.iter().filter(hosted) {
            owned.insert(TopicPartition { topic: topic.name.clone(), partition: p.partition });
        }
    }
    let effective = shard.effective_config_for(&image);
    // Each topic's log settings, computed once: new partitions open with them, and existing
    // ones take them at once (a config change through AlterConfigs).
    let mut log_configs = std::collections::HashMap::new();
    let mut log_config_of = |topic: &str| {
        log_configs
            .entry(topic.to_string())
            .or_insert_with(|| effective.log_config(&image.topics[topic].configs).map_err(|e| format!("{e:#}")))
            .clone()
    };
    // Partitions whose topic is gone: their directories are renamed away on the blocking pool,
    // all before any partition opens, since a topic created again takes the same names.
    let mut deletions: Vec<LocalBoxFuture<'static, ()>> = Vec::new();
    shard.offline.borrow_mut().retain(|tp, _| {
        let keep = owned.contains(tp);
        if !keep {
            let (fs, dir, tp) = (shard.fs.clone(), partition_dir(&shard.config.data_dir, tp), tp.clone());
            deletions.push(Box::pin(async move {
                if let Err(e) = run_blocking(move || deleter::delete_dir_later(&fs, &dir)).await {
                    tracing::error!(topic = %tp.topic, partition = tp.partition, error = %e, "deleting an offline partition");
                }
            }));
        }
        keep
    });
    let gone: Vec<_> = shard.partitions.borrow().keys().filter(|tp| !owned.contains(tp)).cloned().collect();
    for tp in gone {
        let partition = shard.partitions.borrow_mut().remove(&tp).expect("key listed from the table");
        deletions.push(Box::pin(async move {
            if let Err(e) = partition.delete().await {
                tracing::error!(topic = %tp.topic, partition = tp.partition, error = %e, "deleting partition");
            }
        }));
    }
    futures::future::join_all(deletions).await;
    // The tables are borrowed in a block of their own: only while the openings are made, never
    // across an await (a `drop` of the borrows still counts as holding them there).
    let opening = {
        let mut table = shard.partitions.borrow_mut();
        let offline = shard.offline.borrow();
        let mut opening = Vec::new();
        for tp in owned {
            if offline.contains_key(&tp) {
                continue;
            }
            let metadata = &image.topics[&tp.topic].partitions[tp.partition as usize];
            let (epoch, leads) = (metadata.leader_epoch, shard.leads(&image, &tp.topic, tp.partition));
            let (node_id, replicas, isr) = (shard.config.node_id, metadata.replicas.clone(), metadata.isr.clone());
            let partition_epoch = metadata.partition_epoch;
            let replicated = replicas.len() > 1;
            let assign = move |partition: &Partition| {
                partition.set_leadership(epoch, leads);
                if leads {
                    partition.set_replicas(node_id, &replicas, &isr, partition_epoch, now_ms());
                }
            };
            if let Some(partition) = table.get_mut(&tp) {
                assign(partition);
                match log_config_of(&tp.topic) {
                    Ok(config) => partition.set_config(config),
                    Err(e) => tracing::error!(topic = %tp.topic, error = %e, "topic configs left unchanged"),
                }
                continue;
            }
            let dir = partition_dir(&shard.config.data_dir, &tp);
            let config = log_config_of(&tp.topic);
            let (fs, expiry, counters) =
                (shard.fs.clone(), shard.config.producer_expiry(), shard.sync_counters.clone());
            opening.push(async move {
                let opened = match config {
                    Ok(config) => {
                        Partition::open_off_thread(&fs, &dir, config, expiry, epoch, clean_shutdown, counters)
                            .await
                            .inspect(|partition| {
                                if replicated {
                                    partition.forget_high_watermark();
                                }
                                assign(partition)
                            })
                            .map_err(|e| e.to_string())
                    }
                    Err(e) => Err(e),
                };
                (tp, dir, opened)
            });
        }
        opening
    };
    let mut failed = Vec::new();
    let mut opening: futures::stream::FuturesUnordered<_> = opening.into_iter().collect();
    while let Some((tp, dir, opened)) = futures::StreamExt::next(&mut opening).await {
        match opened {
            Ok(partition) => {
                shard.partitions.borrow_mut().insert(tp, partition);
            }
            // Reads and writes get KAFKA_STORAGE_ERROR for it; the rest keeps serving.
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e, "opening partition failed; it is offline");
                shard.offline.borrow_mut().insert(tp.clone(), e);
                failed.push(tp);
            }
        }
    }
    // Followers fetch from the leaders this image names, from now on.
    crate::replication::fetcher::follow(shard, &image);
    shard.set_metadata(image, effective);
    // A new leader of an offsets partition loads its groups before it answers for them.
    spawn_local(crate::group::follow_leadership(shard)).detach();
    failed
}

/// `<data-dir>/<topic>-<partition>`, Kafka's layout.
pub fn partition_dir(data_dir: &std::path::Path, tp: &TopicPartition) -> std::path::PathBuf {
    data_dir.join(format!("{}-{}", tp.topic, tp.partition))
}

/// How often a shard looks for partitions due a flush (`flush.ms`) or a compaction.
const MAINTENANCE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// Runs for the shard's lifetime: applies `flush.ms` to partitions that stopped receiving
/// appends (appends apply it themselves), compacts `cleanup.policy=compact` partitions once a
/// segment has closed, and every `log.retention.check.interval.ms` applies retention.
pub async fn maintain_partitions(shard: Rc<Shard>) {
    let mut next_retention_check = now_ms();
    loop {
        sleep(MAINTENANCE_INTERVAL).await;
        let now = now_ms();
        let check_retention = now >= next_retention_check;
        if check_retention {
            next_retention_check = now + shard.config.log_retention_check_interval_ms;
        }
        for (tp, partition) in shard.partitions.borrow_mut().iter_mut() {
            if let Err(e) = partition.maintain(now, check_retention) {
                tracing::error!(topic = %tp.topic, partition = tp.partition, error = %e, "partition upkeep");
            }
        }
    }
}

/// This shard's counters and partition offsets; runs on the shard, so the CPU time is its own.
fn snapshot(shard: &Shard) -> crate::metrics::Snapshot {
    let partitions = shard
        .partitions
        .borrow()
        .iter()
        .map(|(tp, p)| crate::metrics::PartitionGauge {
            topic: tp.topic.clone(),
            partition: tp.partition,
            log_start_offset: p.log_start_offset(),
            log_end_offset: p.log_end_offset(),
            high_watermark: p.high_watermark(),
        })
        .collect();
    let offline = shard.offline.borrow().keys().map(|tp| (tp.topic.clone(), tp.partition)).collect();
    let mut metrics = shard.metrics.borrow().clone();
    metrics.fsyncs = shard.sync_counters.fsyncs.get();
    metrics.fsync_covered_appends = shard.sync_counters.covered_appends.get();
    metrics.fsync_micros = shard.sync_counters.fsync_micros.get();
    metrics.file_writes = shard.sync_counters.writes.get();
    metrics.file_write_micros = shard.sync_counters.write_micros.get();
    crate::metrics::Snapshot {
        shard: shard.id,
        offline,
        metrics,
        partitions,
        cpu_seconds: crate::metrics::thread_cpu_seconds(),
        file_io_workers: crate::runtime::executor::file_io_workers().ok(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::partition::tests::partition;
    use crate::storage::batch::tests::batch;

    /// The race a fetch runs between its read and its wait: a record appended in between must
    /// end the wait at once, not be left for the next append or the fetch's timeout.
    #[test]
    fn data_appended_between_a_read_and_the_wait_is_not_waited_for() {
        crate::runtime::file::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let p = partition(dir.path());
            let tp = TopicPartition { topic: "t".into(), partition: 0 };
            let table = HashMap::from([(tp.clone(), p.clone())]);
            let limit = ReadLimit::HighWatermark;

            // The fetch read up to here and found nothing; then a record lands before it parks.
            let seen = p.read_limit(limit);
            p.append(batch(1, 0), 0).await.unwrap();
            assert!(park(&table, &[(tp.clone(), seen, limit)]).is_none(), "parked past data that had arrived");

            // With nothing new since its read, it parks, and the next append wakes it.
            let seen = p.read_limit(limit);
            let waiters = park(&table, &[(tp.clone(), seen, limit)]).expect("nothing arrived: it parks");
            assert_eq!(waiters.len(), 1);
            p.append(batch(1, 0), 0).await.unwrap();
            let woken = futures::future::select(
                Box::pin(futures::future::select_all(waiters)),
                Box::pin(sleep(Duration::from_secs(5))),
            )
            .await;
            assert!(matches!(woken, futures::future::Either::Left(_)), "the append did not wake the parked fetch");
        });
    }
}
