//! DescribeConfigs: topic and broker configs with their sources, read-only flags and (when
//! asked) synonyms, read from this shard's copy of the metadata (`cluster::configs`).

use std::rc::Rc;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};

use super::alter_configs::resource;
use super::str_bytes;
use crate::cluster::configs::{self, DescribedConfig};
use crate::shard::Shard;

/// Kafka's `ConfigType` codes (DescribeConfigs v3+).
const TYPE_BOOLEAN: i8 = 1;
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;
const TYPE_LIST: i8 = 7;

pub fn handle(shard: &Rc<Shard>, request: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let image = shard.metadata();
    let results = request
        .resources
        .iter()
        .map(|r| {
            let result = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            let keys: Option<Vec<String>> =
                r.configuration_keys.as_ref().map(|keys| keys.iter().map(|k| k.to_string()).collect());
            let described = resource(r.resource_type, &r.resource_name)
                .and_then(|res| configs::describe(&shard.config, &image, &res, keys.as_deref()));
            match described {
                Ok(configs) => {
                    result.with_configs(configs.into_iter().map(|c| entry(c, request.include_synonyms)).collect())
                }
                Err((error, message)) => {
                    result.with_error_code(error.code()).with_error_message(Some(str_bytes(&message)))
                }
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

fn entry(config: DescribedConfig, include_synonyms: bool) -> DescribeConfigsResourceResult {
    let synonyms = match include_synonyms {
        true => config
            .synonyms
            .iter()
            .map(|(name, value, source)| {
                DescribeConfigsSynonym::default()
                    .with_name(str_bytes(name))
                    .with_value(value.as_deref().map(str_bytes))
                    .with_source(*source as i8)
            })
            .collect(),
        false => Vec::new(),
    };
    DescribeConfigsResourceResult::default()
        .with_config_type(config_type(&config.name))
        .with_name(str_bytes(&config.name))
        .with_value(config.value.as_deref().map(str_bytes))
        .with_read_only(config.read_only)
        .with_config_source(config.source as i8)
        // Sluice has no secrets among its settings.
        .with_is_sensitive(false)
        .with_synonyms(synonyms)
}

/// The type Kafka declares for a config, for clients that display or check it.
fn config_type(name: &str) -> i8 {
    match name {
        "cleanup.policy" | "log.cleanup.policy" => TYPE_LIST,
        "compression.type" | "message.timestamp.type" | "log.message.timestamp.type" => TYPE_STRING,
        "listeners" | "admin.listen" | "advertised.listeners" | "log.dirs" => TYPE_STRING,
        "sluice.validate.compressed.records" | "write.caching" | "log.write.caching" => TYPE_BOOLEAN,
        _ if name.ends_with(".enable") => TYPE_BOOLEAN,
        _ if name.ends_with(".ms") || name.ends_with(".bytes") || name.ends_with(".messages") => TYPE_LONG,
        _ => TYPE_INT,
    }
}
