//! One file per Kafka API, each with a `handle` that takes the decoded request and returns
//! the response; this module is the dispatch table between them and the connection.
//!
//! Handlers run on the shard that accepted the connection and reach partitions owned by
//! other shards only through `Shard::invoke_on`.

pub mod api_versions;
pub mod create_topics;
pub mod delete_topics;
pub mod fetch;
pub mod find_coordinator;
pub mod init_producer_id;
pub mod list_offsets;
pub mod metadata;
pub mod produce;

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};

use crate::protocol::frame::encode_response;
use crate::shard::Shard;

/// Decodes the body, runs the API's handler and encodes its response frame (`None` when the
/// API sends none, as for acks=0 produce). An error means the body did not decode, or (a bug)
/// the response does not fit the version asked for; either way the connection closes.
pub async fn handle(shard: &Rc<Shard>, header: RequestHeader, mut body: Bytes) -> anyhow::Result<Option<Bytes>> {
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
            let response = fetch::handle(shard, FetchRequest::decode(body, version)?, version).await;
            respond(&header, &response)
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
            let response = find_coordinator::handle(FindCoordinatorRequest::decode(body, version)?, version);
            respond(&header, &response)
        }
        ApiKey::InitProducerId => {
            let response = init_producer_id::handle(shard, InitProducerIdRequest::decode(body, version)?).await;
            respond(&header, &response)
        }
        other => anyhow::bail!("connection let through unserved API {other:?}"),
    }
}

fn respond<M: Encodable + HeaderVersion>(header: &RequestHeader, body: &M) -> anyhow::Result<Option<Bytes>> {
    let version = header.request_api_version;
    encode_response(header.correlation_id, M::header_version(version), body, version)
        .map(Some)
        .map_err(|e| e.context(format!("encoding the v{version} response")))
}

/// kafka-protocol's string type from a Rust string.
fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn topic_name(s: &str) -> TopicName {
    TopicName(str_bytes(s))
}
