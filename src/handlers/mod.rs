//! One file per Kafka API, each with a `handle` that takes the decoded request and returns
//! the response; this module is the dispatch table between them and the connection.
//!
//! Handlers run on the shard that accepted the connection and reach partitions owned by
//! other shards only through `Shard::invoke_on`.

pub mod alter_configs;
pub mod alter_partition_reassignments;
pub mod api_versions;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod describe_log_dirs;
pub mod describe_producers;
pub mod elect_leaders;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod list_partition_reassignments;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod sync_group;

use std::collections::HashSet;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};

use crate::protocol::frame::{encode_response, encode_response_into};
use crate::runtime::zero_copy::{Part, PartsBuf};

/// Response bytes that fetch encodes in memory beside its file parts: headers and metadata only.
const FRAME_IN_MEMORY_HINT_BYTES: usize = 64 * 1024;
use crate::cluster::MetadataImage;
use crate::shard::{Shard, ShardId, TopicPartition};
use join_group::ClientInfo;

/// Decodes the body, runs the API's handler and encodes its response frame (`None` when the
/// API sends none, as for acks=0 produce). An error means the body did not decode, or (a bug)
/// the response does not fit the version asked for; either way the connection closes.
pub async fn handle(
    shard: &Rc<Shard>,
    header: RequestHeader,
    mut body: Bytes,
    peer: Option<std::net::SocketAddr>,
) -> anyhow::Result<Option<Vec<Part>>> {
    let version = header.request_api_version;
    let api_key = ApiKey::try_from(header.request_api_key)
        .map_err(|_| anyhow::anyhow!("connection let through API key {}", header.request_api_key))?;
    let body = &mut body;
    match api_key {
        ApiKey::Produce => match produce::handle(shard, ProduceRequest::decode(body, version)?).await {
            Some(response) => respond(&header, &response),
            None => Ok(None),
        },
        ApiKey::Fetch => {
            let (response, file_parts) = fetch::handle(shard, FetchRequest::decode(body, version)?, version).await;
            if file_parts.is_empty() {
                return respond(&header, &response);
            }
            let size = response.compute_size(version)?;
            let mut buf = PartsBuf::new(size.min(FRAME_IN_MEMORY_HINT_BYTES), file_parts);
            let header_version = FetchResponse::header_version(version);
            encode_response_into(&mut buf, header.correlation_id, header_version, &response, version)
                .map_err(|e| e.context(format!("encoding the v{version} response")))?;
            Ok(Some(buf.into_parts()))
        }
        ApiKey::ListOffsets => {
            let response = list_offsets::handle(shard, ListOffsetsRequest::decode(body, version)?, version).await;
            respond(&header, &response)
        }
        ApiKey::Metadata => {
            let response = metadata::handle(shard, MetadataRequest::decode(body, version)?, version).await;
            respond(&header, &response)
        }
        ApiKey::ApiVersions => {
            ApiVersionsRequest::decode(body, version)?;
            respond(&header, &api_versions::handle())
        }
        ApiKey::CreateTopics => {
            let response = create_topics::handle(shard, CreateTopicsRequest::decode(body, version)?).await;
            respond(&header, &response)
        }
        ApiKey::DeleteTopics => {
            let response = delete_topics::handle(shard, DeleteTopicsRequest::decode(body, version)?).await;
            respond(&header, &response)
        }
        ApiKey::FindCoordinator => {
            let response = find_coordinator::handle(shard, FindCoordinatorRequest::decode(body, version)?, version);
            respond(&header, &response)
        }
        ApiKey::JoinGroup => {
            let client = ClientInfo {
                client_id: header.client_id.as_ref().map(|c| c.to_string()).unwrap_or_default(),
                // Kafka's tools print hosts with a leading slash.
                client_host: peer.map(|p| format!("/{}", p.ip())).unwrap_or_default(),
            };
            let response = join_group::handle(shard, JoinGroupRequest::decode(body, version)?, version, client).await;
            respond(&header, &response)
        }
        ApiKey::SyncGroup => {
            let response = sync_group::handle(shard, SyncGroupRequest::decode(body, version)?, version).await;
            respond(&header, &response)
        }
        ApiKey::Heartbeat => {
            let response = heartbeat::handle(shard, HeartbeatRequest::decode(body, version)?).await;
            respond(&header, &response)
        }
        ApiKey::LeaveGroup => {
            let response = leave_group::handle(shard, LeaveGroupRequest::decode(body, version)?, version).await;
            respond(&header, &response)
        }
        ApiKey::OffsetCommit => {
            let response = offset_commit::handle(shard, OffsetCommitRequest::decode(body, version)?).await;
            respond(&header, &response)
        }
        ApiKey::OffsetFetch => {
            let response = offset_fetch::handle(shard, OffsetFetchRequest::decode(body, version)?, version).await;
            respond(&header, &response)
        }
        ApiKey::ListGroups => {
            let response = list_groups::handle(shard, ListGroupsRequest::decode(body, version)?).await;
            respond(&header, &response)
        }
        ApiKey::DescribeGroups => {
            let response = describe_groups::handle(shard, DescribeGroupsRequest::decode(body, version)?, version).await;
            respond(&header, &response)
        }
        ApiKey::DeleteGroups => {
            let response = delete_groups::handle(shard, DeleteGroupsRequest::decode(body, version)?).await;
            respond(&header, &response)
        }
        ApiKey::OffsetDelete => {
            let response = offset_delete::handle(shard, OffsetDeleteRequest::decode(body, version)?).await;
            respond(&header, &response)
        }
        ApiKey::CreatePartitions => {
            let response = create_partitions::handle(shard, CreatePartitionsRequest::decode(body, version)?).await;
            respond(&header, &response)
        }
        ApiKey::ElectLeaders => {
            let response = elect_leaders::handle(shard, ElectLeadersRequest::decode(body, version)?).await;
            respond(&header, &response)
        }
        ApiKey::DescribeConfigs => {
            respond(&header, &describe_configs::handle(shard, DescribeConfigsRequest::decode(body, version)?))
        }
        ApiKey::AlterConfigs => {
            let response = alter_configs::handle(shard, AlterConfigsRequest::decode(body, version)?).await;
            respond(&header, &response)
        }
        ApiKey::IncrementalAlterConfigs => {
            let request = IncrementalAlterConfigsRequest::decode(body, version)?;
            respond(&header, &incremental_alter_configs::handle(shard, request).await)
        }
        ApiKey::AlterPartitionReassignments => {
            let request = AlterPartitionReassignmentsRequest::decode(body, version)?;
            respond(&header, &alter_partition_reassignments::handle(shard, request).await)
        }
        ApiKey::ListPartitionReassignments => {
            let request = ListPartitionReassignmentsRequest::decode(body, version)?;
            respond(&header, &list_partition_reassignments::handle(shard, request))
        }
        ApiKey::DescribeCluster => {
            respond(&header, &describe_cluster::handle(shard, DescribeClusterRequest::decode(body, version)?))
        }
        ApiKey::DescribeLogDirs => {
            let response = describe_log_dirs::handle(shard, DescribeLogDirsRequest::decode(body, version)?).await;
            respond(&header, &response)
        }
        ApiKey::DescribeProducers => {
            let response = describe_producers::handle(shard, DescribeProducersRequest::decode(body, version)?).await;
            respond(&header, &response)
        }
        ApiKey::DeleteRecords => {
            let response = delete_records::handle(shard, DeleteRecordsRequest::decode(body, version)?).await;
            respond(&header, &response)
        }
        ApiKey::OffsetForLeaderEpoch => {
            let request = OffsetForLeaderEpochRequest::decode(body, version)?;
            respond(&header, &offset_for_leader_epoch::handle(shard, request).await)
        }
        ApiKey::InitProducerId => {
            let response = init_producer_id::handle(shard, InitProducerIdRequest::decode(body, version)?).await;
            respond(&header, &response)
        }
        other => anyhow::bail!("connection let through unserved API {other:?}"),
    }
}

fn respond<M: Encodable + HeaderVersion>(header: &RequestHeader, body: &M) -> anyhow::Result<Option<Vec<Part>>> {
    let version = header.request_api_version;
    encode_response(header.correlation_id, M::header_version(version), body, version)
        .map(|frame| Some(vec![Part::Memory(frame)]))
        .map_err(|e| e.context(format!("encoding the v{version} response")))
}

/// kafka-protocol's string type from a Rust string.
fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn topic_name(s: &str) -> TopicName {
    TopicName(str_bytes(s))
}

/// Each partition's owner and what it is sent, or the answer the partition gets at once.
type Routed<T> = Vec<Result<(ShardId, (TopicPartition, T)), ResponseError>>;

/// Where each partition a request names goes, in request order: to its owner, with what
/// `part` makes of its entry, or nowhere, with its answer. A partition named twice gets
/// INVALID_REQUEST at every mention (Kafka's answer: it cannot tell which one the client
/// meant), one the image lacks UNKNOWN_TOPIC_OR_PARTITION, one that this node does not lead
/// ([`Shard::leads`]) NOT_LEADER_OR_FOLLOWER; `part` refuses the rest as the API requires. The result feeds
/// [`Shard::scatter`].
fn route<'a, E: 'a, T>(
    shard: &Shard,
    image: &MetadataImage,
    entries: impl Iterator<Item = (&'a str, i32, &'a E)> + Clone,
    mut part: impl FnMut(&'a str, &'a E) -> Result<T, ResponseError>,
) -> Routed<T> {
    let mut seen = HashSet::new();
    let duplicated: HashSet<_> = entries.clone().map(|(t, p, _)| (t, p)).filter(|&key| !seen.insert(key)).collect();
    entries
        .map(|(topic, partition, entry)| {
            if duplicated.contains(&(topic, partition)) {
                return Err(ResponseError::InvalidRequest);
            }
            let owner = image.owner(topic, partition).ok_or(ResponseError::UnknownTopicOrPartition)?;
            if !shard.leads(image, topic, partition) {
                return Err(ResponseError::NotLeaderOrFollower);
            }
            Ok((owner, (TopicPartition { topic: topic.to_string(), partition }, part(topic, entry)?)))
        })
        .collect()
}
