//! AlterConfigs: replaces the whole set of dynamic configs of topics or of the broker. The
//! controller validates and applies each resource's change to the next metadata image,
//! persists it, and every shard (each partition's log) runs with it before the answer.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::str_bytes;
use crate::cluster::configs::{Alteration, ConfigError, ConfigResource};
use crate::shard::router::AlterConfigs;
use crate::shard::{CONTROLLER_SHARD, Shard};

/// Kafka's resource types.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

pub async fn handle(shard: &Rc<Shard>, request: AlterConfigsRequest) -> AlterConfigsResponse {
    let changes = request
        .resources
        .iter()
        .map(|r| {
            // A config without a value is simply not part of the new set.
            let configs: BTreeMap<String, String> = r
                .configs
                .iter()
                .filter_map(|c| c.value.as_ref().map(|v| (c.name.to_string(), v.to_string())))
                .collect();
            resource(r.resource_type, &r.resource_name).map(|res| (res, Alteration::Replace(configs)))
        })
        .collect();
    let outcomes = alter(shard, changes, request.validate_only).await;
    let responses = request
        .resources
        .iter()
        .zip(outcomes)
        .map(|(r, outcome)| {
            let response = AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            match outcome {
                Ok(()) => response,
                Err((error, message)) => {
                    response.with_error_code(error.code()).with_error_message(Some(str_bytes(&message)))
                }
            }
        })
        .collect();
    AlterConfigsResponse::default().with_responses(responses)
}

/// Has the controller apply every well-formed change (in one metadata change); answers one
/// outcome per entry of `changes`, in order.
pub async fn alter(
    shard: &Rc<Shard>,
    changes: Vec<Result<(ConfigResource, Alteration), ConfigError>>,
    validate_only: bool,
) -> Vec<Result<(), ConfigError>> {
    let mut seen = std::collections::HashSet::new();
    let duplicated: std::collections::HashSet<ConfigResource> = changes
        .iter()
        .filter_map(|c| c.as_ref().ok().map(|(res, _)| res.clone()))
        .filter(|res| !seen.insert(res.clone()))
        .collect();
    let mut outcomes: Vec<Option<Result<(), ConfigError>>> = Vec::with_capacity(changes.len());
    let mut valid = Vec::new();
    for change in changes {
        match change {
            Ok((res, _)) if duplicated.contains(&res) => {
                outcomes.push(Some(Err((ResponseError::InvalidRequest, "resource named twice".to_string()))))
            }
            Ok(change) => {
                valid.push(change);
                outcomes.push(None);
            }
            Err(error) => outcomes.push(Some(Err(error))),
        }
    }
    let mut answers = Vec::new().into_iter();
    if !valid.is_empty() {
        let call = AlterConfigs { changes: valid, validate_only };
        answers = shard.invoke_on(CONTROLLER_SHARD, call).await.into_iter();
    }
    outcomes.into_iter().map(|o| o.unwrap_or_else(|| answers.next().expect("one answer per valid change").1)).collect()
}

/// The resource a request names, if it is one whose configs Sluice keeps.
pub fn resource(resource_type: i8, name: &StrBytes) -> Result<ConfigResource, ConfigError> {
    match resource_type {
        RESOURCE_TOPIC => Ok(ConfigResource::Topic(name.to_string())),
        RESOURCE_BROKER => Ok(ConfigResource::Broker(name.to_string())),
        other => Err((ResponseError::InvalidRequest, format!("configs of resource type {other} are not kept here"))),
    }
}
