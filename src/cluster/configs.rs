//! Topic and broker configs as Kafka's admin APIs see them: what DescribeConfigs reports
//! (value, source, read-only, synonyms) and how AlterConfigs / IncrementalAlterConfigs change
//! them. Pure functions over the static settings and a metadata image; the controller applies
//! changes to its next image, every shard describes from its own copy.
//!
//! Precedence, highest first, as in Kafka: the topic's own config, this broker's dynamic
//! config, the cluster-wide dynamic default, the static setting (file, `--set`), the default.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;

use super::MetadataImage;
use crate::config::{BROKER_CONFIG_NAMES, BrokerConfig, DYNAMIC_BROKER_CONFIG_NAMES, TOPIC_CONFIGS, is_topic_config};

/// What a config belongs to (Kafka's resource types 2 and 4).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ConfigResource {
    Topic(String),
    /// "" for the cluster-wide default, else a node id.
    Broker(String),
}

/// Kafka's `ConfigSource` codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    Topic = 1,
    DynamicBroker = 2,
    DynamicDefaultBroker = 3,
    StaticBroker = 4,
    Default = 5,
}

/// One config as DescribeConfigs reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedConfig {
    pub name: String,
    pub value: Option<String>,
    pub source: ConfigSource,
    pub read_only: bool,
    /// Every level that sets it, highest precedence first: (name, value, source).
    pub synonyms: Vec<(String, Option<String>, ConfigSource)>,
}

/// One change of IncrementalAlterConfigs (operations 0 to 3).
#[derive(Debug, Clone)]
pub enum AlterOp {
    Set(String),
    Delete,
    /// Add to a list config (`cleanup.policy`).
    Append(String),
    /// Remove from a list config.
    Subtract(String),
}

/// A change to one resource's dynamic configs.
#[derive(Debug, Clone)]
pub enum Alteration {
    /// AlterConfigs: these become the resource's whole set.
    Replace(BTreeMap<String, String>),
    /// IncrementalAlterConfigs: each key changed as said, the others kept.
    Incremental(Vec<(String, AlterOp)>),
}

pub type ConfigError = (ResponseError, String);

/// The configs of `resource`; `keys` limits them to those named (unknown names are left out).
pub fn describe(
    config: &BrokerConfig,
    image: &MetadataImage,
    resource: &ConfigResource,
    keys: Option<&[String]>,
) -> Result<Vec<DescribedConfig>, ConfigError> {
    let wanted = |name: &str| keys.is_none_or(|keys| keys.iter().any(|k| k == name));
    let levels = broker_levels(image);
    match resource {
        ConfigResource::Topic(name) => {
            let topic = image.topic(name).ok_or_else(|| unknown_topic(name))?;
            let effective = effective(config, image)?;
            Ok(TOPIC_CONFIGS
                .iter()
                .filter(|(key, _)| wanted(key))
                .map(|(key, broker_keys)| {
                    let own = topic.configs.get(*key).map(|v| (key.to_string(), Some(v.clone()), ConfigSource::Topic));
                    let mut synonyms: Vec<_> = own.into_iter().collect();
                    for broker_key in *broker_keys {
                        synonyms.extend(broker_synonyms(config, &levels, broker_key));
                    }
                    let source = synonyms.first().map_or(ConfigSource::Default, |s| s.2);
                    let value = topic.configs.get(*key).cloned().or_else(|| effective.topic_default(key));
                    DescribedConfig { name: key.to_string(), value, source, read_only: false, synonyms }
                })
                .collect())
        }
        ConfigResource::Broker(name) if name.is_empty() => Ok(image
            .cluster_configs
            .iter()
            .filter(|(key, _)| wanted(key))
            .map(|(key, value)| DescribedConfig {
                name: key.clone(),
                value: Some(value.clone()),
                source: ConfigSource::DynamicDefaultBroker,
                read_only: false,
                synonyms: vec![(key.clone(), Some(value.clone()), ConfigSource::DynamicDefaultBroker)],
            })
            .collect()),
        ConfigResource::Broker(name) => {
            check_broker(config, name)?;
            let effective = effective(config, image)?;
            Ok(BROKER_CONFIG_NAMES
                .iter()
                .filter(|key| wanted(key))
                .map(|key| {
                    let synonyms = broker_synonyms(config, &levels, key);
                    DescribedConfig {
                        name: key.to_string(),
                        value: effective.get(key),
                        source: synonyms.first().map_or(ConfigSource::Default, |s| s.2),
                        read_only: !DYNAMIC_BROKER_CONFIG_NAMES.contains(key),
                        synonyms,
                    }
                })
                .collect())
        }
    }
}

/// Applies `alteration` of `resource` to `image`, validated as a whole: on error the image is
/// unchanged.
pub fn alter(
    config: &BrokerConfig,
    image: &mut MetadataImage,
    resource: &ConfigResource,
    alteration: Alteration,
) -> Result<(), ConfigError> {
    let mut next = image.clone();
    match resource {
        ConfigResource::Topic(name) => {
            let effective = effective(config, image)?;
            let topic = next.topics.get_mut(name).ok_or_else(|| unknown_topic(name))?;
            let current = |key: &str| topic.configs.get(key).cloned().or_else(|| effective.topic_default(key));
            let configs = altered(&topic.configs, alteration, current, is_topic_config)?;
            effective.log_config(&configs).map_err(invalid)?;
            topic.configs = configs;
        }
        ConfigResource::Broker(name) => {
            let dynamic = |key: &str| DYNAMIC_BROKER_CONFIG_NAMES.contains(&key);
            let effective = effective(config, image)?;
            let current = |key: &str| effective.get(key);
            if name.is_empty() {
                next.cluster_configs = altered(&image.cluster_configs, alteration, current, dynamic)?;
            } else {
                check_broker(config, name)?;
                next.broker_configs = altered(&image.broker_configs, alteration, current, dynamic)?;
            }
            self::effective(config, &next)?;
        }
    }
    *image = next;
    Ok(())
}

/// The dynamic levels of broker configs in force, highest precedence first.
fn broker_levels(image: &MetadataImage) -> [(&BTreeMap<String, String>, ConfigSource); 2] {
    [(&image.broker_configs, ConfigSource::DynamicBroker), (&image.cluster_configs, ConfigSource::DynamicDefaultBroker)]
}

/// Every level that sets broker setting `key`, highest first, the default last.
fn broker_synonyms(
    config: &BrokerConfig,
    levels: &[(&BTreeMap<String, String>, ConfigSource); 2],
    key: &str,
) -> Vec<(String, Option<String>, ConfigSource)> {
    let mut synonyms: Vec<_> = levels
        .iter()
        .filter_map(|(map, source)| map.get(key).map(|v| (key.to_string(), Some(v.clone()), *source)))
        .collect();
    if config.explicit.contains(key) {
        synonyms.push((key.to_string(), config.get(key), ConfigSource::StaticBroker));
    }
    if let Some(default) = BrokerConfig::default().get(key) {
        synonyms.push((key.to_string(), Some(default), ConfigSource::Default));
    }
    synonyms
}

/// `configs` after `alteration`; every key it sets must pass `allowed`.
fn altered(
    configs: &BTreeMap<String, String>,
    alteration: Alteration,
    current: impl Fn(&str) -> Option<String>,
    allowed: impl Fn(&str) -> bool,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let check = |key: &str| match allowed(key) {
        true => Ok(()),
        false => Err((ResponseError::InvalidConfig, format!("config {key:?} cannot be set here"))),
    };
    match alteration {
        Alteration::Replace(all) => {
            all.keys().try_for_each(|k| check(k))?;
            Ok(all)
        }
        Alteration::Incremental(ops) => {
            let mut next = configs.clone();
            for (key, op) in ops {
                check(&key)?;
                let list = |value: &str| -> Vec<String> {
                    value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
                };
                match op {
                    AlterOp::Set(value) => {
                        next.insert(key, value);
                    }
                    AlterOp::Delete => {
                        next.remove(&key);
                    }
                    AlterOp::Append(_) | AlterOp::Subtract(_) if !LIST_CONFIGS.contains(&key.as_str()) => {
                        return Err((ResponseError::InvalidConfig, format!("{key} is not a list")));
                    }
                    AlterOp::Append(value) => {
                        let mut items = list(&next.get(&key).cloned().or_else(|| current(&key)).unwrap_or_default());
                        items.extend(list(&value).into_iter().filter(|v| !items.contains(v)).collect::<Vec<_>>());
                        next.insert(key, items.join(","));
                    }
                    AlterOp::Subtract(value) => {
                        let remove = list(&value);
                        let items = list(&next.get(&key).cloned().or_else(|| current(&key)).unwrap_or_default());
                        let kept: Vec<_> = items.into_iter().filter(|v| !remove.contains(v)).collect();
                        next.insert(key, kept.join(","));
                    }
                }
            }
            Ok(next)
        }
    }
}

/// Configs whose values are comma-separated lists, which APPEND and SUBTRACT work on.
const LIST_CONFIGS: &[&str] = &["cleanup.policy", "log.cleanup.policy"];

/// The settings in force under `image`.
fn effective(config: &BrokerConfig, image: &MetadataImage) -> Result<BrokerConfig, ConfigError> {
    config.with_dynamic(&image.cluster_configs, &image.broker_configs).map_err(invalid)
}

fn check_broker(config: &BrokerConfig, name: &str) -> Result<(), ConfigError> {
    match name.parse::<i32>() {
        Ok(id) if id == config.node_id => Ok(()),
        _ => Err((ResponseError::InvalidRequest, format!("broker {name:?} is not this broker ({})", config.node_id))),
    }
}

fn unknown_topic(name: &str) -> ConfigError {
    (ResponseError::UnknownTopicOrPartition, format!("topic {name:?} does not exist"))
}

fn invalid(error: anyhow::Error) -> ConfigError {
    (ResponseError::InvalidConfig, format!("{error:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{PartitionMetadata, TopicMetadata};

    fn image() -> MetadataImage {
        let mut image = MetadataImage::default();
        image.topics.insert(
            "t".into(),
            TopicMetadata {
                name: "t".into(),
                topic_id: uuid::Uuid::new_v4(),
                partitions: vec![PartitionMetadata::new(0, 0, vec![0])],
                configs: BTreeMap::from([("retention.ms".into(), "1000".into())]),
            },
        );
        image
    }

    fn find<'a>(configs: &'a [DescribedConfig], name: &str) -> &'a DescribedConfig {
        configs.iter().find(|c| c.name == name).unwrap()
    }

    #[test]
    fn topic_values_come_from_the_highest_level_that_sets_them() {
        let mut config = BrokerConfig::default();
        config.set("log.segment.bytes", "5000").unwrap();
        let mut image = image();
        image.cluster_configs.insert("log.retention.bytes".into(), "777".into());
        let topic = ConfigResource::Topic("t".into());
        let described = describe(&config, &image, &topic, None).unwrap();
        assert_eq!(described.len(), TOPIC_CONFIGS.len());
        let retention = find(&described, "retention.ms");
        assert_eq!((retention.value.as_deref(), retention.source), (Some("1000"), ConfigSource::Topic));
        // Synonyms: the topic's own, then log.retention.hours at its default.
        assert_eq!(retention.synonyms[0].2, ConfigSource::Topic);
        assert_eq!(retention.synonyms.last().unwrap().0, "log.retention.hours");
        let segment = find(&described, "segment.bytes");
        assert_eq!((segment.value.as_deref(), segment.source), (Some("5000"), ConfigSource::StaticBroker));
        let bytes = find(&described, "retention.bytes");
        assert_eq!((bytes.value.as_deref(), bytes.source), (Some("777"), ConfigSource::DynamicDefaultBroker));
        let policy = find(&described, "cleanup.policy");
        assert_eq!((policy.value.as_deref(), policy.source), (Some("delete"), ConfigSource::Default));
        let only = describe(&config, &image, &topic, Some(&["segment.ms".to_string(), "nope".to_string()])).unwrap();
        assert_eq!(only.len(), 1);
    }

    #[test]
    fn alterations_are_validated_whole() {
        let config = BrokerConfig::default();
        let mut image = image();
        let topic = ConfigResource::Topic("t".into());
        let replace = Alteration::Replace(BTreeMap::from([("segment.ms".into(), "100".into())]));
        alter(&config, &mut image, &topic, replace).unwrap();
        assert_eq!(image.topics["t"].configs, BTreeMap::from([("segment.ms".into(), "100".into())]));
        let ops = vec![
            ("cleanup.policy".to_string(), AlterOp::Append("compact".into())),
            ("segment.ms".to_string(), AlterOp::Delete),
        ];
        alter(&config, &mut image, &topic, Alteration::Incremental(ops)).unwrap();
        assert_eq!(image.topics["t"].configs["cleanup.policy"], "delete,compact");
        assert!(!image.topics["t"].configs.contains_key("segment.ms"));
        // One bad change refuses the whole alteration.
        let bad = vec![
            ("segment.ms".to_string(), AlterOp::Set("5".into())),
            ("retention.ms".to_string(), AlterOp::Set("soon".into())),
        ];
        let error = alter(&config, &mut image, &topic, Alteration::Incremental(bad)).unwrap_err();
        assert_eq!(error.0, ResponseError::InvalidConfig);
        assert!(!image.topics["t"].configs.contains_key("segment.ms"));
        let unknown = Alteration::Incremental(vec![("segment.jitter.ms".into(), AlterOp::Set("1".into()))]);
        assert_eq!(alter(&config, &mut image, &topic, unknown).unwrap_err().0, ResponseError::InvalidConfig);
        let missing = ConfigResource::Topic("missing".into());
        let error = alter(&config, &mut image, &missing, Alteration::Replace(BTreeMap::new())).unwrap_err();
        assert_eq!(error.0, ResponseError::UnknownTopicOrPartition);
    }

    #[test]
    fn only_dynamic_broker_configs_change_and_they_rule_over_static_ones() {
        let mut config = BrokerConfig::default();
        config.set("log.segment.bytes", "5000").unwrap();
        let mut image = image();
        let broker = ConfigResource::Broker("0".into());
        let set = |key: &str, value: &str| Alteration::Incremental(vec![(key.to_string(), AlterOp::Set(value.into()))]);
        alter(&config, &mut image, &ConfigResource::Broker(String::new()), set("log.segment.bytes", "6000")).unwrap();
        alter(&config, &mut image, &broker, set("log.segment.bytes", "7000")).unwrap();
        let described = describe(&config, &image, &broker, None).unwrap();
        let segment = find(&described, "log.segment.bytes");
        assert_eq!(
            (segment.value.as_deref(), segment.source, segment.read_only),
            (Some("7000"), ConfigSource::DynamicBroker, false)
        );
        let sources: Vec<_> = segment.synonyms.iter().map(|s| s.2).collect();
        assert_eq!(
            sources,
            [
                ConfigSource::DynamicBroker,
                ConfigSource::DynamicDefaultBroker,
                ConfigSource::StaticBroker,
                ConfigSource::Default
            ]
        );
        assert!(find(&described, "log.dirs").read_only);
        assert_eq!(
            alter(&config, &mut image, &broker, set("log.dirs", "/tmp")).unwrap_err().0,
            ResponseError::InvalidConfig
        );
        assert_eq!(
            alter(&config, &mut image, &broker, set("message.max.bytes", "x")).unwrap_err().0,
            ResponseError::InvalidConfig
        );
        let other = ConfigResource::Broker("3".into());
        assert_eq!(describe(&config, &image, &other, None).unwrap_err().0, ResponseError::InvalidRequest);
        // The cluster-wide default resource lists only what is set there.
        let defaults = describe(&config, &image, &ConfigResource::Broker(String::new()), None).unwrap();
        assert_eq!(defaults.len(), 1);
    }
}
