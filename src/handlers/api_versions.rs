//! ApiVersions: which APIs and versions this broker serves (see `protocol::versions`).

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::ApiVersionsResponse;
use kafka_protocol::messages::api_versions_response::ApiVersion;

use crate::protocol::frame::encode_response;
use crate::protocol::versions::SERVED;

pub fn handle() -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(served_list()).with_finalized_features_epoch(-1)
}

fn served_list() -> Vec<ApiVersion> {
    SERVED
        .iter()
        .map(|&(key, min, max)| {
            ApiVersion::default().with_api_key(key as i16).with_min_version(min).with_max_version(max)
        })
        .collect()
}

/// The v0 answer to an ApiVersions request of a version we do not serve (KIP-511): error
/// UNSUPPORTED_VERSION plus our ranges, so the client retries with one we do.
pub fn unsupported_version(correlation_id: i32) -> Bytes {
    let response = ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(served_list());
    encode_response(correlation_id, 0, &response, 0).expect("a v0 ApiVersions response encodes")
}
