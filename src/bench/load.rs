//! The load itself: producer loops (open-loop schedule, pipelined Produce requests) and
//! consumer loops (Fetch from given offsets), one connection each, run as tasks on the
//! bench's shards.
//!
//! Coordinated omission: with `--rate`, record `i` of a loop is due at `start + i / rate`
//! whatever happens to earlier requests, and its latency is measured from that due time. A
//! stalled broker therefore shows up as the queueing it causes, not as a pause in sampling.
//! Without a rate the loop sends as fast as `max_in_flight` allows and a record is due when
//! its batch is built.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::channel::mpsc;
use hdrhistogram::Histogram;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{BrokerId, FetchRequest, ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions};

use super::stats::{Stats, new_histogram, now_ns};
use crate::client::check;
use crate::client::wire::{self, ResponseReader, Sent};
use crate::protocol::records::plain_record;
use crate::runtime::{Semaphore, StaticPermit, sleep, spawn_local};
use crate::storage::batch::{BatchHeader, HEADER_LEN};

/// How long a consumer may see no new record before the run is declared stuck.
const STALL_LIMIT: Duration = Duration::from_secs(30);
/// Bytes of each record value that carry its due time, for end-to-end latency.
pub const STAMP_BYTES: usize = 8;

/// One producer connection's share of the load.
#[derive(Debug, Clone)]
pub struct ProducerPlan {
    pub address: SocketAddr,
    pub topic: String,
    pub topic_id: uuid::Uuid,
    /// Batches go to these in turn (Kafka's sticky partitioning, one batch at a time).
    pub partitions: Vec<i32>,
    /// Records to send; `None` sends until `deadline`.
    pub records: Option<u64>,
    pub deadline: Option<Instant>,
    /// Records per second; `None` is as fast as the broker acknowledges.
    pub rate: Option<f64>,
    pub record_size: usize,
    pub batch_records: usize,
    pub linger: Duration,
    pub acks: i16,
    pub compression: Compression,
    pub max_in_flight: usize,
}

/// One consumer connection's share: partitions and where to start reading each.
#[derive(Debug, Clone)]
pub struct ConsumerPlan {
    pub address: SocketAddr,
    pub topic: String,
    pub topic_id: uuid::Uuid,
    pub partitions: Vec<(i32, i64)>,
    pub stop: Stop,
    pub partition_max_bytes: i32,
    /// Decode records and measure end-to-end latency from their stamps.
    pub end_to_end: bool,
}

/// When consumers are done.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    /// All consumers together have read this many records.
    Records(u64),
    /// Producers have finished and everything they settled has been read.
    Drain,
    At(Instant),
}

/// How many records of `record_size` fill a batch of at most `batch_bytes` (as Kafka's
/// `batch.size` counts them, overheads included, so that a batch fits `max.message.bytes`).
pub fn records_per_batch(batch_bytes: usize, record_size: usize) -> usize {
    const BATCH_HEADER: usize = 61;
    // Per record: length, attributes, timestamp and offset deltas, key length, value length
    // and header count, as varints; 5 bytes bound each varint here.
    let per_record = record_size + 5 * 6 + 1;
    (batch_bytes.saturating_sub(BATCH_HEADER) / per_record).max(1)
}

/// Random letters, as Kafka's own perf tool sends: compressible about as much as text.
struct Payload {
    pool: Vec<u8>,
    next: usize,
}

const POOL_BYTES: usize = 1 << 16;

impl Payload {
    fn new(record_size: usize) -> Payload {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let pool = (0..POOL_BYTES + record_size)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                b'A' + (state % 26) as u8
            })
            .collect();
        Payload { pool, next: 0 }
    }

    /// A record value: its due time, then `size - STAMP_BYTES` letters.
    fn fill(&mut self, out: &mut BytesMut, due_ns: u64, size: usize) {
        out.extend_from_slice(&due_ns.to_be_bytes());
        out.extend_from_slice(&self.pool[self.next..self.next + size - STAMP_BYTES]);
        self.next = (self.next + 4099) % POOL_BYTES;
    }
}

/// A Produce request written and waiting for its acknowledgement.
struct InFlight {
    sent: Sent,
    /// Due time of the batch's first record, and the spacing of the others.
    first_due_ns: u64,
    step_ns: u64,
    records: u64,
    bytes: u64,
    _permit: StaticPermit,
}

pub async fn produce(plan: ProducerPlan, stats: Arc<Stats>) -> anyhow::Result<()> {
    assert!(plan.record_size >= STAMP_BYTES && plan.batch_records > 0 && !plan.partitions.is_empty());
    let (mut writer, reader) = wire::connect(plan.address, "sluice-bench").await?;
    let in_flight = Rc::new(Semaphore::new(plan.max_in_flight as u64));
    let (acks_queue, unacked) = mpsc::unbounded::<InFlight>();
    let acker = (plan.acks != 0).then(|| spawn_local(read_acks(reader, unacked, stats.clone())));

    let topic = TopicName(StrBytes::from_string(plan.topic.clone()));
    let options = RecordEncodeOptions { version: 2, compression: plan.compression };
    let mut payload = Payload::new(plan.record_size);
    let step_ns = plan.rate.map_or(0, |rate| (1e9 / rate) as u64);
    let linger_ns = plan.linger.as_nanos() as u64;
    let start_ns = now_ns();
    let mut next_record = 0u64;
    for batch_number in 0usize.. {
        let mut count = plan.batch_records as u64;
        if let Some(total) = plan.records {
            count = count.min(total - next_record);
        }
        if count == 0 {
            break;
        }
        let permit;
        let first_due_ns = match plan.rate {
            None => {
                permit = acquire(&in_flight).await?;
                now_ns()
            }
            Some(_) => {
                let first_due_ns = start_ns + next_record * step_ns;
                // The batch closes when full or when its first record has lingered long
                // enough; if the connection is then still busy, it keeps filling meanwhile.
                let close_ns = (first_due_ns + (count - 1) * step_ns).min(first_due_ns + linger_ns);
                let now = now_ns();
                if close_ns > now {
                    sleep(Duration::from_nanos(close_ns - now)).await;
                }
                permit = acquire(&in_flight).await?;
                count = count.min((now_ns().max(close_ns) - first_due_ns) / step_ns.max(1) + 1);
                first_due_ns
            }
        };
        if plan.deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }

        let mut values = BytesMut::with_capacity(count as usize * plan.record_size);
        for i in 0..count {
            payload.fill(&mut values, first_due_ns + i * step_ns, plan.record_size);
        }
        let values = values.freeze();
        let timestamp = crate::runtime::now_ms();
        let records: Vec<Record> = (0..count as usize)
            .map(|i| {
                plain_record(i, timestamp, None, Some(values.slice(i * plan.record_size..(i + 1) * plan.record_size)))
            })
            .collect();
        let mut batch = BytesMut::with_capacity(values.len() + 64 + 16 * records.len());
        RecordBatchEncoder::encode(&mut batch, &records, &options).context("encoding a batch")?;
        let batch = batch.freeze();
        let bytes = batch.len() as u64;
        let partition = plan.partitions[batch_number % plan.partitions.len()];
        let request = produce_request(&topic, plan.topic_id, partition, batch, plan.acks);
        let sent = writer.write(&request).await?;
        next_record += count;
        if plan.acks == 0 {
            stats.produced.add(count, bytes);
            stats.produced_settled.fetch_add(count, Ordering::Relaxed);
            continue;
        }
        let pending = InFlight { sent, first_due_ns, step_ns, records: count, bytes, _permit: permit };
        if acks_queue.unbounded_send(pending).is_err() {
            break; // the acker stopped on an error, which it returns below
        }
    }
    drop(acks_queue);
    match acker {
        Some(acker) => acker.await,
        None => Ok(()),
    }
}

/// One batch for one partition. The topic goes by name and by id: the codec writes whichever
/// the negotiated version carries (the id from v13, KIP-516), so one request serves Sluice and
/// Apache Kafka alike.
fn produce_request(topic: &TopicName, topic_id: uuid::Uuid, partition: i32, batch: Bytes, acks: i16) -> ProduceRequest {
    ProduceRequest::default().with_acks(acks).with_timeout_ms(30_000).with_topic_data(vec![
        TopicProduceData::default()
            .with_name(topic.clone())
            .with_topic_id(topic_id)
            .with_partition_data(vec![PartitionProduceData::default().with_index(partition).with_records(Some(batch))]),
    ])
}

async fn acquire(in_flight: &Rc<Semaphore>) -> anyhow::Result<StaticPermit> {
    in_flight.acquire_static_permit(1).await.map_err(|e| anyhow::anyhow!("in-flight limit: {e}"))
}

/// Reads acknowledgements in request order and records each record's publish latency.
async fn read_acks(
    mut reader: ResponseReader,
    mut unacked: mpsc::UnboundedReceiver<InFlight>,
    stats: Arc<Stats>,
) -> anyhow::Result<()> {
    while let Some(pending) = unacked.next().await {
        let response = reader.read::<ProduceRequest>(pending.sent).await?;
        let acked_ns = now_ns();
        for topic in &response.responses {
            for partition in &topic.partition_responses {
                check(partition.error_code, &format!("producing to partition {}", partition.index))?;
            }
        }
        stats.publish.record_batch(acked_ns.saturating_sub(pending.first_due_ns), pending.step_ns, pending.records);
        stats.produced.add(pending.records, pending.bytes);
        stats.produced_settled.fetch_add(pending.records, Ordering::Relaxed);
    }
    Ok(())
}

pub async fn consume(plan: ConsumerPlan, stats: Arc<Stats>) -> anyhow::Result<()> {
    let (mut writer, mut reader) = wire::connect(plan.address, "sluice-bench").await?;
    let topic = TopicName(StrBytes::from_string(plan.topic.clone()));
    let mut offsets = plan.partitions.clone();
    let mut last_progress = Instant::now();
    loop {
        let done = match plan.stop {
            Stop::Records(total) => stats.consumed.read().0 >= total,
            Stop::Drain => {
                stats.producers_running.load(Ordering::Acquire) == 0
                    && stats.consumed.read().0 >= stats.produced_settled.load(Ordering::Acquire)
            }
            Stop::At(deadline) => Instant::now() >= deadline,
        };
        if done {
            return Ok(());
        }
        if last_progress.elapsed() > STALL_LIMIT {
            bail!("no new record for {} s", STALL_LIMIT.as_secs());
        }

        let request = fetch_request(&topic, plan.topic_id, &offsets, plan.partition_max_bytes);
        let sent_ns = now_ns();
        let sent = writer.write(&request).await?;
        let response = reader.read::<FetchRequest>(sent).await?;
        check(response.error_code, "fetch")?;
        if !plan.end_to_end {
            stats.consume.record(now_ns() - sent_ns);
        }
        let mut latencies = plan.end_to_end.then(new_histogram);
        for data in response.responses.into_iter().flat_map(|t| t.partitions) {
            check(data.error_code, &format!("fetching partition {}", data.partition_index))?;
            let Some(entry) = offsets.iter_mut().find(|(p, _)| *p == data.partition_index) else {
                bail!("fetch response names partition {}, not asked for", data.partition_index);
            };
            let (records, bytes) = walk_batches(data.records.unwrap_or_default(), &mut entry.1, latencies.as_mut())?;
            if records > 0 {
                stats.consumed.add(records, bytes);
                last_progress = Instant::now();
            }
        }
        if let Some(latencies) = latencies {
            stats.consume.add(&latencies);
        }
    }
}

/// Partitions of one topic from their next offsets, waiting up to 100 ms for a first byte. As
/// in `produce_request`, the topic goes by name and by id (Fetch names it by id from v13).
fn fetch_request(
    topic: &TopicName,
    topic_id: uuid::Uuid,
    offsets: &[(i32, i64)],
    partition_max_bytes: i32,
) -> FetchRequest {
    let partitions = offsets
        .iter()
        .map(|&(partition, offset)| {
            FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(partition_max_bytes)
                .with_current_leader_epoch(-1)
                .with_last_fetched_epoch(-1)
                .with_log_start_offset(-1)
        })
        .collect();
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(100)
        .with_min_bytes(1)
        .with_max_bytes(i32::MAX)
        .with_session_epoch(-1)
        .with_topics(vec![
            FetchTopic::default().with_topic(topic.clone()).with_topic_id(topic_id).with_partitions(partitions),
        ])
}

/// Counts the whole batches of a fetched partition, moving `next_offset` past them; with
/// `latencies`, decodes them and records each record's end-to-end latency.
fn walk_batches(
    mut bytes: Bytes,
    next_offset: &mut i64,
    mut latencies: Option<&mut Histogram<u64>>,
) -> anyhow::Result<(u64, u64)> {
    let (mut records, mut total) = (0u64, 0u64);
    while bytes.len() >= HEADER_LEN {
        let header = BatchHeader::parse(&bytes).context("a fetched batch")?;
        if header.size() > bytes.len() {
            break; // cut by the size limit (KIP-74): fetched again next time
        }
        let batch = bytes.split_to(header.size());
        if header.last_offset() < *next_offset {
            continue;
        }
        if let Some(histogram) = latencies.as_mut() {
            let consumed_ns = now_ns();
            let set = RecordBatchDecoder::decode(&mut batch.clone()).context("decoding a fetched batch")?;
            for record in set.records.iter().filter(|r| r.offset >= *next_offset) {
                let value = record.value.as_deref().unwrap_or_default();
                let stamp = value.get(..STAMP_BYTES).context("a record too short to carry its due time")?;
                let due_ns = u64::from_be_bytes(stamp.try_into().expect("8 bytes"));
                histogram.saturating_record((consumed_ns.saturating_sub(due_ns) / 1000).max(1));
            }
        }
        records += u64::try_from(header.records_count).expect("parse refuses negative counts");
        total += header.size() as u64;
        *next_offset = header.last_offset() + 1;
    }
    Ok((records, total))
}

#[cfg(test)]
mod tests {
    use kafka_protocol::protocol::{Decodable, Encodable, Message};

    use super::*;

    /// Each request through the codec at every version it knows, back as the broker reads it.
    fn round_trip<R: Encodable + Decodable + Message>(request: &R) -> impl Iterator<Item = (i16, R)> + '_ {
        (R::VERSIONS.min..=R::VERSIONS.max).map(move |version| {
            let mut buf = BytesMut::new();
            request.encode(&mut buf, version).unwrap();
            (version, R::decode(&mut buf.freeze(), version).unwrap())
        })
    }

    /// Produce and Fetch name their topic by id from v13 (KIP-516): a request carrying only the
    /// name reaches Apache Kafka as topic id 0, UNKNOWN_TOPIC_ID.
    #[test]
    fn requests_identify_their_topic_at_every_version() {
        let topic = TopicName(StrBytes::from_static_str("t"));
        let topic_id = uuid::Uuid::from_u128(7);
        for (version, request) in round_trip(&produce_request(&topic, topic_id, 0, Bytes::new(), 1)) {
            let sent = &request.topic_data[0];
            assert!(sent.name == topic || sent.topic_id == topic_id, "Produce v{version} names no topic");
        }
        for (version, request) in round_trip(&fetch_request(&topic, topic_id, &[(0, 0)], 1 << 20)) {
            let sent = &request.topics[0];
            assert!(sent.topic == topic || sent.topic_id == topic_id, "Fetch v{version} names no topic");
        }
    }
}
