//! IncrementalAlterConfigs: sets, deletes, appends to or subtracts from single configs of
//! topics or of the broker, the others kept; applied like AlterConfigs.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::incremental_alter_configs_request::AlterConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};

use super::alter_configs::{alter, resource};
use super::str_bytes;
use crate::cluster::configs::{AlterOp, Alteration, ConfigError, ConfigResource};
use crate::shard::Shard;

pub async fn handle(shard: &Rc<Shard>, request: IncrementalAlterConfigsRequest) -> IncrementalAlterConfigsResponse {
    let changes = request.resources.iter().map(change).collect();
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
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

fn change(r: &AlterConfigsResource) -> Result<(ConfigResource, Alteration), ConfigError> {
    let resource = resource(r.resource_type, &r.resource_name)?;
    let mut ops = Vec::with_capacity(r.configs.len());
    for config in &r.configs {
        let name = config.name.to_string();
        if ops.iter().any(|(n, _)| *n == name) {
            return Err((ResponseError::InvalidRequest, format!("config {name:?} named twice")));
        }
        let value = || {
            config.value.as_ref().map(|v| v.to_string()).ok_or_else(|| {
                (ResponseError::InvalidRequest, format!("config {name:?}: this operation needs a value"))
            })
        };
        let op = match config.config_operation {
            0 => AlterOp::Set(value()?),
            1 => AlterOp::Delete,
            2 => AlterOp::Append(value()?),
            3 => AlterOp::Subtract(value()?),
            other => return Err((ResponseError::InvalidRequest, format!("unknown config operation {other}"))),
        };
        ops.push((name, op));
    }
    Ok((resource, Alteration::Incremental(ops)))
}
