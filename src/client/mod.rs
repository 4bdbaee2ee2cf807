//! A small blocking Kafka client (std sockets + kafka-protocol), used by the CLI and tests.
//!
//! One connection, one request at a time. Versions are negotiated with ApiVersions on
//! connect (falling back to v0 as KIP-511 asks), then each request goes at the highest
//! version both sides serve.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::{Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Request, StrBytes};

mod admin;
pub mod wire;

pub use admin::{BrokerInfo, ConfigChange, ConfigEntry, LogDirInfo, SOURCE_DEFAULT};

use crate::protocol::frame::{decode_response, encode_request_into};
use crate::protocol::records::encode_batch;
pub use crate::protocol::records::{ConsumedRecord, decode_records};

/// Responses larger than this are refused rather than allocated.
const MAX_RESPONSE_BYTES: usize = 256 << 20;
const CLIENT_ID: &str = "sluice-cli";
/// ListOffsets' special timestamps.
pub const EARLIEST: i64 = -2;
pub const LATEST: i64 = -1;

pub struct Client {
    stream: TcpStream,
    correlation_id: i32,
    /// Highest version of each API that both sides serve.
    versions: HashMap<i16, i16>,
}

/// A partition's state as Metadata describes it.
#[derive(Debug, Clone)]
pub struct PartitionInfo {
    pub partition: i32,
    /// -1 when the partition has no leader (it is offline).
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub offline_replicas: Vec<i32>,
}

#[derive(Debug, Clone)]
pub struct TopicInfo {
    pub name: String,
    pub topic_id: uuid::Uuid,
    pub partitions: Vec<PartitionInfo>,
}

/// Turns a response's error code into an error naming it.
pub fn check(code: i16, context: &str) -> anyhow::Result<()> {
    match ResponseError::try_from_code(code) {
        None => Ok(()),
        Some(error) => bail!("{context}: {error} (error code {code})"),
    }
}

/// The highest version of each API that both the broker (per its ApiVersions answer) and
/// kafka-protocol serve.
pub fn common_versions(response: ApiVersionsResponse) -> HashMap<i16, i16> {
    let mut versions = HashMap::new();
    for api in response.api_keys {
        let Ok(key) = ApiKey::try_from(api.api_key) else {
            continue;
        };
        let ours = key.valid_versions();
        let max = api.max_version.min(ours.max);
        if max >= api.min_version.max(ours.min) {
            versions.insert(api.api_key, max);
        }
    }
    versions
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

impl Client {
    /// Connects and negotiates API versions.
    pub fn connect(address: &str) -> anyhow::Result<Client> {
        let socket_address = address
            .to_socket_addrs()
            .with_context(|| format!("resolving {address}"))?
            .next()
            .with_context(|| format!("{address} resolves to nothing"))?;
        let stream = TcpStream::connect_timeout(&socket_address, Duration::from_secs(10))
            .with_context(|| format!("connecting to {address}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut client = Client { stream, correlation_id: 0, versions: HashMap::new() };
        client.negotiate_versions()?;
        Ok(client)
    }

    fn negotiate_versions(&mut self) -> anyhow::Result<()> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(str_bytes(CLIENT_ID))
            .with_client_software_version(str_bytes(env!("CARGO_PKG_VERSION")));
        let mut response: ApiVersionsResponse = self.send_at(request.clone(), 3)?;
        if response.error_code == ResponseError::UnsupportedVersion.code() {
            response = self.send_at(request, 0)?;
        }
        check(response.error_code, "ApiVersions")?;
        self.versions = common_versions(response);
        Ok(())
    }

    /// Sends `request` at the highest version both sides serve and returns the response.
    pub fn send<R: Request>(&mut self, request: R) -> anyhow::Result<R::Response> {
        let version =
            *self.versions.get(&R::KEY).with_context(|| format!("the broker does not serve API key {}", R::KEY))?;
        self.send_at(request, version)
    }

    /// Sends `request` at `version`.
    pub fn send_at<R: Request>(&mut self, request: R, version: i16) -> anyhow::Result<R::Response> {
        self.write_request(request, version)?;

        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size).context("reading response size")?;
        let size = i32::from_be_bytes(size);
        if size < 4 || size as usize > MAX_RESPONSE_BYTES {
            bail!("response frame of {size} bytes");
        }
        let mut body = vec![0u8; size as usize];
        self.stream.read_exact(&mut body).context("reading response")?;
        decode_response::<R>(Bytes::from(body), version, self.correlation_id)
    }

    /// Topics and their partitions; all topics when `topics` is `None`.
    pub fn metadata(&mut self, topics: Option<&[&str]>) -> anyhow::Result<Vec<TopicInfo>> {
        Ok(self.cluster_metadata(topics)?.1)
    }

    /// The brokers (node id → host:port) and one topic's partitions.
    pub fn cluster(&mut self, topic: &str) -> anyhow::Result<(HashMap<i32, String>, TopicInfo)> {
        let (brokers, topics) = self.cluster_metadata(Some(&[topic]))?;
        let info = topics.into_iter().next().with_context(|| format!("no metadata for topic {topic}"))?;
        Ok((brokers, info))
    }

    fn cluster_metadata(&mut self, topics: Option<&[&str]>) -> anyhow::Result<(HashMap<i32, String>, Vec<TopicInfo>)> {
        let request = MetadataRequest::default()
            .with_topics(topics.map(|names| {
                names.iter().map(|n| MetadataRequestTopic::default().with_name(Some(TopicName(str_bytes(n))))).collect()
            }))
            .with_allow_auto_topic_creation(false);
        let response = self.send(request)?;
        let mut out = Vec::new();
        for topic in response.topics {
            let name = topic.name.map(|n| n.0.to_string()).unwrap_or_default();
            check(topic.error_code, &format!("topic {name}"))?;
            let mut partitions: Vec<PartitionInfo> = topic
                .partitions
                .into_iter()
                .map(|p| PartitionInfo {
                    partition: p.partition_index,
                    leader: p.leader_id.0,
                    replicas: p.replica_nodes.into_iter().map(|b| b.0).collect(),
                    isr: p.isr_nodes.into_iter().map(|b| b.0).collect(),
                    offline_replicas: p.offline_replicas.into_iter().map(|b| b.0).collect(),
                })
                .collect();
            partitions.sort_by_key(|p| p.partition);
            out.push(TopicInfo { name, topic_id: topic.topic_id, partitions });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        let brokers = response.brokers.into_iter().map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port))).collect();
        Ok((brokers, out))
    }

    /// The number of partitions of `topic`.
    pub fn partition_count(&mut self, topic: &str) -> anyhow::Result<i32> {
        let topics = self.metadata(Some(&[topic]))?;
        let info = topics.first().with_context(|| format!("no metadata for topic {topic}"))?;
        Ok(info.partitions.len() as i32)
    }

    pub fn create_topic(
        &mut self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &[(String, String)],
    ) -> anyhow::Result<()> {
        let topic = CreatableTopic::default()
            .with_name(TopicName(str_bytes(name)))
            .with_num_partitions(partitions)
            .with_replication_factor(replication_factor)
            .with_configs(
                configs
                    .iter()
                    .map(|(k, v)| {
                        CreatableTopicConfig::default().with_name(str_bytes(k)).with_value(Some(str_bytes(v)))
                    })
                    .collect(),
            );
        let response = self.send(CreateTopicsRequest::default().with_topics(vec![topic]).with_timeout_ms(30_000))?;
        for result in response.topics {
            let message = result.error_message.map(|m| m.to_string()).unwrap_or_default();
            check(result.error_code, &format!("creating topic {name}: {message}"))?;
        }
        Ok(())
    }

    pub fn delete_topic(&mut self, name: &str) -> anyhow::Result<()> {
        let request = DeleteTopicsRequest::default()
            .with_topic_names(vec![TopicName(str_bytes(name))])
            .with_topics(vec![
                delete_topics_request::DeleteTopicState::default().with_name(Some(TopicName(str_bytes(name)))),
            ])
            .with_timeout_ms(30_000);
        let response = self.send(request)?;
        for result in response.responses {
            check(result.error_code, &format!("deleting topic {name}"))?;
        }
        Ok(())
    }

    /// Appends `records` (key, value) to one partition as a single batch; returns the base
    /// offset (-1 with acks=0, which gets no answer).
    pub fn produce(
        &mut self,
        topic: &str,
        partition: i32,
        records: &[(Option<Bytes>, Option<Bytes>)],
        acks: i16,
    ) -> anyhow::Result<i64> {
        let batch = encode_batch(records, crate::runtime::now_ms());
        let topic_id = self.topic_id_for::<ProduceRequest>(topic)?;
        let request = ProduceRequest::default().with_acks(acks).with_timeout_ms(30_000).with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(str_bytes(topic)))
                .with_topic_id(topic_id)
                .with_partition_data(vec![
                    PartitionProduceData::default().with_index(partition).with_records(Some(batch)),
                ]),
        ]);
        if acks == 0 {
            // No response will come: write the frame and return.
            let version = *self.versions.get(&ProduceRequest::KEY).context("the broker does not serve Produce")?;
            return self.write_request(request, version).map(|()| -1);
        }
        let response = self.send(request)?;
        let result = response
            .responses
            .first()
            .and_then(|t| t.partition_responses.first())
            .context("produce response names no partition")?;
        check(result.error_code, &format!("producing to {topic}-{partition}"))?;
        Ok(result.base_offset)
    }

    /// Frames and writes one request; the response, if any, is the caller's to read.
    fn write_request<R: Request>(&mut self, request: R, version: i16) -> anyhow::Result<()> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let mut frame = BytesMut::new();
        encode_request_into(&mut frame, &request, version, self.correlation_id, CLIENT_ID)?;
        self.stream.write_all(&frame).context("sending request")
    }

    /// Records of one partition from `offset`: (high watermark, records). Waits up to
    /// `max_wait_ms` for data.
    pub fn fetch(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: i32,
        max_wait_ms: i32,
    ) -> anyhow::Result<(i64, Vec<ConsumedRecord>)> {
        let topic_id = self.topic_id_for::<FetchRequest>(topic)?;
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(max_bytes)
            .with_session_epoch(-1)
            .with_topics(vec![
                FetchTopic::default().with_topic(TopicName(str_bytes(topic))).with_topic_id(topic_id).with_partitions(
                    vec![
                        FetchPartition::default()
                            .with_partition(partition)
                            .with_fetch_offset(offset)
                            .with_partition_max_bytes(max_bytes)
                            .with_current_leader_epoch(-1)
                            .with_last_fetched_epoch(-1)
                            .with_log_start_offset(-1),
                    ],
                ),
            ]);
        let response = self.send(request)?;
        check(response.error_code, "fetch")?;
        let data = response
            .responses
            .into_iter()
            .next()
            .and_then(|t| t.partitions.into_iter().next())
            .context("fetch response names no partition")?;
        check(data.error_code, &format!("fetching {topic}-{partition} at offset {offset}"))?;
        let records = decode_records(data.records.unwrap_or_default(), offset)?;
        Ok((data.high_watermark, records))
    }

    /// The topic's id if `R` (Produce or Fetch) goes out at a version that names topics by id
    /// (v13 and later, KIP-516), else the nil id: a Metadata round trip only when needed.
    fn topic_id_for<R: Request>(&mut self, topic: &str) -> anyhow::Result<uuid::Uuid> {
        match self.versions.get(&R::KEY) {
            Some(&version) if version >= 13 => self.topic_id(topic),
            _ => Ok(uuid::Uuid::nil()),
        }
    }

    fn topic_id(&mut self, topic: &str) -> anyhow::Result<uuid::Uuid> {
        let request = MetadataRequest::default()
            .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(TopicName(str_bytes(topic))))]));
        let response = self.send(request)?;
        let found = response.topics.into_iter().next().context("metadata names no topic")?;
        check(found.error_code, &format!("topic {topic}"))?;
        Ok(found.topic_id)
    }

    /// ListOffsets for one partition: `EARLIEST`, `LATEST` or a timestamp in ms.
    pub fn list_offset(&mut self, topic: &str, partition: i32, timestamp: i64) -> anyhow::Result<i64> {
        let request = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![
            ListOffsetsTopic::default().with_name(TopicName(str_bytes(topic))).with_partitions(vec![
                ListOffsetsPartition::default()
                    .with_partition_index(partition)
                    .with_timestamp(timestamp)
                    .with_current_leader_epoch(-1),
            ]),
        ]);
        let response = self.send(request)?;
        let result = response
            .topics
            .first()
            .and_then(|t| t.partitions.first())
            .context("list offsets response names no partition")?;
        check(result.error_code, &format!("listing offsets of {topic}-{partition}"))?;
        Ok(result.offset)
    }

    /// A connection to the coordinator of `group_id` (this one when it is the coordinator).
    pub fn group_coordinator(address: &str, group_id: &str) -> anyhow::Result<Client> {
        let mut client = Client::connect(address)?;
        let request = FindCoordinatorRequest::default().with_key(str_bytes(group_id)).with_key_type(0);
        let version =
            *client.versions.get(&FindCoordinatorRequest::KEY).context("the broker does not serve FindCoordinator")?;
        // v4 moved the key into a batch; ask in the single-key form every broker serves.
        let response = client.send_at(request, version.min(3))?;
        check(response.error_code, &format!("finding the coordinator of group {group_id}"))?;
        let coordinator = format!("{}:{}", response.host, response.port);
        match coordinator.to_socket_addrs()?.next() == address.to_socket_addrs()?.next() {
            true => Ok(client),
            false => Client::connect(&coordinator),
        }
    }

    /// (group id, state) of every group the broker coordinates.
    pub fn list_groups(&mut self) -> anyhow::Result<Vec<(String, String)>> {
        let response = self.send(ListGroupsRequest::default())?;
        check(response.error_code, "listing groups")?;
        let mut groups: Vec<(String, String)> =
            response.groups.into_iter().map(|g| (g.group_id.0.to_string(), g.group_state.to_string())).collect();
        groups.sort();
        Ok(groups)
    }

    pub fn describe_group(&mut self, group_id: &str) -> anyhow::Result<describe_groups_response::DescribedGroup> {
        let request = DescribeGroupsRequest::default().with_groups(vec![GroupId(str_bytes(group_id))]);
        let response = self.send(request)?;
        let group = response.groups.into_iter().next().context("describe groups names no group")?;
        check(group.error_code, &format!("describing group {group_id}"))?;
        Ok(group)
    }

    /// Every committed offset of `group_id`: (topic, partition, offset, metadata).
    pub fn committed_offsets(&mut self, group_id: &str) -> anyhow::Result<Vec<(String, i32, i64, String)>> {
        let version = *self.versions.get(&OffsetFetchRequest::KEY).context("the broker does not serve OffsetFetch")?;
        // v8 moved the group into a batch; ask in the single-group form every broker serves.
        let request = OffsetFetchRequest::default().with_group_id(GroupId(str_bytes(group_id))).with_topics(None);
        let response = self.send_at(request, version.min(7))?;
        check(response.error_code, &format!("fetching offsets of group {group_id}"))?;
        let mut out = Vec::new();
        for topic in response.topics {
            for p in topic.partitions {
                check(p.error_code, &format!("offset of {}-{}", topic.name.0, p.partition_index))?;
                if p.committed_offset >= 0 {
                    let metadata = p.metadata.map(|m| m.to_string()).unwrap_or_default();
                    out.push((topic.name.0.to_string(), p.partition_index, p.committed_offset, metadata));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Commits offsets outside any generation, as a consumer that assigns itself partitions
    /// does; the coordinator accepts that only while the group has no members.
    pub fn commit_offsets(&mut self, group_id: &str, topic: &str, offsets: &[(i32, i64)]) -> anyhow::Result<()> {
        use offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
        let partitions = offsets
            .iter()
            .map(|&(partition, offset)| {
                OffsetCommitRequestPartition::default()
                    .with_partition_index(partition)
                    .with_committed_offset(offset)
                    .with_committed_leader_epoch(-1)
                    .with_committed_metadata(Some(str_bytes("")))
            })
            .collect();
        let request = OffsetCommitRequest::default()
            .with_group_id(GroupId(str_bytes(group_id)))
            .with_generation_id_or_member_epoch(-1)
            .with_retention_time_ms(-1)
            .with_topics(vec![
                OffsetCommitRequestTopic::default().with_name(TopicName(str_bytes(topic))).with_partitions(partitions),
            ]);
        let response = self.send(request)?;
        for t in response.topics {
            for p in t.partitions {
                check(p.error_code, &format!("committing {}-{} for group {group_id}", t.name.0, p.partition_index))?;
            }
        }
        Ok(())
    }

    pub fn delete_group(&mut self, group_id: &str) -> anyhow::Result<()> {
        let response =
            self.send(DeleteGroupsRequest::default().with_groups_names(vec![GroupId(str_bytes(group_id))]))?;
        for result in response.results {
            check(result.error_code, &format!("deleting group {group_id}"))?;
        }
        Ok(())
    }
}
