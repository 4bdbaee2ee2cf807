//! The blocking client's admin requests: partitions, configs, DeleteRecords, cluster and log
//! directories, partition reassignments. Each turns the broker's error codes into errors with its message.

use anyhow::Context;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::*;

use super::{Client, check, str_bytes};

/// Kafka's resource type of a topic, in the config APIs.
const RESOURCE_TOPIC: i8 = 2;
/// Kafka's `ConfigSource` for a value nobody set.
pub const SOURCE_DEFAULT: i8 = 5;

/// One config of a resource as DescribeConfigs reports it.
#[derive(Debug, Clone)]
pub struct ConfigEntry {
    pub name: String,
    pub value: Option<String>,
    /// Kafka's `ConfigSource` code.
    pub source: i8,
    pub read_only: bool,
}

/// A change of IncrementalAlterConfigs.
pub enum ConfigChange {
    Set(String, String),
    Delete(String),
}

/// A broker as DescribeCluster reports it.
pub struct BrokerInfo {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
}

/// A reassignment in progress as ListPartitionReassignments reports it.
pub struct Reassignment {
    pub topic: String,
    pub partition: i32,
    pub replicas: Vec<i32>,
    pub adding: Vec<i32>,
    pub removing: Vec<i32>,
}

/// A log directory as DescribeLogDirs reports it: its path, total and usable bytes, and
/// (topic, partition, size in bytes) of every partition in it.
pub struct LogDirInfo {
    pub path: String,
    pub total_bytes: i64,
    pub usable_bytes: i64,
    pub partitions: Vec<(String, i32, i64)>,
}

impl Client {
    /// Reassigns `partition` of `topic` to `replicas`, or cancels its reassignment (`None`).
    pub fn reassign(&mut self, topic: &str, partition: i32, replicas: Option<&[i32]>) -> anyhow::Result<()> {
        use alter_partition_reassignments_request::{ReassignablePartition, ReassignableTopic};
        let replicas = replicas.map(|r| r.iter().map(|&id| BrokerId(id)).collect());
        let wanted = ReassignablePartition::default().with_partition_index(partition).with_replicas(replicas);
        let request = AlterPartitionReassignmentsRequest::default()
            .with_timeout_ms(30_000)
            .with_allow_replication_factor_change(true)
            .with_topics(vec![
                ReassignableTopic::default().with_name(TopicName(str_bytes(topic))).with_partitions(vec![wanted]),
            ]);
        let response = self.send(request)?;
        let message = response.error_message.map(|m| m.to_string()).unwrap_or_default();
        check(response.error_code, &format!("reassigning {topic}-{partition}: {message}"))?;
        for p in response.responses.iter().flat_map(|t| &t.partitions) {
            let message = p.error_message.as_ref().map(|m| m.to_string()).unwrap_or_default();
            check(p.error_code, &format!("reassigning {topic}-{partition}: {message}"))?;
        }
        Ok(())
    }

    /// Every reassignment in progress.
    pub fn reassignments(&mut self) -> anyhow::Result<Vec<Reassignment>> {
        let request = ListPartitionReassignmentsRequest::default().with_timeout_ms(30_000).with_topics(None);
        let response = self.send(request)?;
        let message = response.error_message.map(|m| m.to_string()).unwrap_or_default();
        check(response.error_code, &format!("listing reassignments: {message}"))?;
        let ids = |ids: &[BrokerId]| ids.iter().map(|id| id.0).collect();
        let listed = response.topics.iter().flat_map(|t| {
            t.partitions.iter().map(|p| Reassignment {
                topic: t.name.0.to_string(),
                partition: p.partition_index,
                replicas: ids(&p.replicas),
                adding: ids(&p.adding_replicas),
                removing: ids(&p.removing_replicas),
            })
        });
        Ok(listed.collect())
    }

    /// Grows `topic` to `count` partitions.
    pub fn create_partitions(&mut self, topic: &str, count: i32) -> anyhow::Result<()> {
        let request = CreatePartitionsRequest::default().with_timeout_ms(30_000).with_topics(vec![
            CreatePartitionsTopic::default()
                .with_name(TopicName(str_bytes(topic)))
                .with_count(count)
                .with_assignments(None),
        ]);
        for result in self.send(request)?.results {
            let message = result.error_message.map(|m| m.to_string()).unwrap_or_default();
            check(result.error_code, &format!("growing topic {topic}: {message}"))?;
        }
        Ok(())
    }

    /// Every config of `topic`, with its source.
    pub fn topic_configs(&mut self, topic: &str) -> anyhow::Result<Vec<ConfigEntry>> {
        let resource = DescribeConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(str_bytes(topic))
            .with_configuration_keys(None);
        let response = self.send(DescribeConfigsRequest::default().with_resources(vec![resource]))?;
        let result = response.results.into_iter().next().context("no result in the DescribeConfigs answer")?;
        let message = result.error_message.map(|m| m.to_string()).unwrap_or_default();
        check(result.error_code, &format!("describing the configs of {topic}: {message}"))?;
        Ok(result
            .configs
            .into_iter()
            .map(|c| ConfigEntry {
                name: c.name.to_string(),
                value: c.value.map(|v| v.to_string()),
                source: c.config_source,
                read_only: c.read_only,
            })
            .collect())
    }

    /// Sets or deletes configs of `topic`, the others kept (IncrementalAlterConfigs).
    pub fn alter_topic_configs(&mut self, topic: &str, changes: &[ConfigChange]) -> anyhow::Result<()> {
        let configs = changes
            .iter()
            .map(|change| match change {
                ConfigChange::Set(key, value) => AlterableConfig::default()
                    .with_name(str_bytes(key))
                    .with_config_operation(0)
                    .with_value(Some(str_bytes(value))),
                ConfigChange::Delete(key) => {
                    AlterableConfig::default().with_name(str_bytes(key)).with_config_operation(1)
                }
            })
            .collect();
        let resource = AlterConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(str_bytes(topic))
            .with_configs(configs);
        let response = self.send(IncrementalAlterConfigsRequest::default().with_resources(vec![resource]))?;
        for result in response.responses {
            let message = result.error_message.map(|m| m.to_string()).unwrap_or_default();
            check(result.error_code, &format!("changing the configs of {topic}: {message}"))?;
        }
        Ok(())
    }

    /// Deletes the records of one partition below `offset`; returns the new log start offset.
    pub fn delete_records(&mut self, topic: &str, partition: i32, offset: i64) -> anyhow::Result<i64> {
        let request = DeleteRecordsRequest::default().with_timeout_ms(30_000).with_topics(vec![
            DeleteRecordsTopic::default().with_name(TopicName(str_bytes(topic))).with_partitions(vec![
                DeleteRecordsPartition::default().with_partition_index(partition).with_offset(offset),
            ]),
        ]);
        let response = self.send(request)?;
        let result = response
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter())
            .next()
            .context("no partition in the DeleteRecords answer")?;
        check(result.error_code, &format!("deleting records of {topic}-{partition} below {offset}"))?;
        Ok(result.low_watermark)
    }

    /// The cluster id, the controller and the brokers.
    pub fn describe_cluster(&mut self) -> anyhow::Result<(String, i32, Vec<BrokerInfo>)> {
        let response = self.send(DescribeClusterRequest::default())?;
        let message = response.error_message.map(|m| m.to_string()).unwrap_or_default();
        check(response.error_code, &format!("describing the cluster: {message}"))?;
        let brokers = response
            .brokers
            .into_iter()
            .map(|b| BrokerInfo { node_id: b.broker_id.0, host: b.host.to_string(), port: b.port })
            .collect();
        Ok((response.cluster_id.to_string(), response.controller_id.0, brokers))
    }

    /// The broker's log directories with the size of every partition.
    pub fn describe_log_dirs(&mut self) -> anyhow::Result<Vec<LogDirInfo>> {
        let response = self.send(DescribeLogDirsRequest::default().with_topics(None))?;
        check(response.error_code, "describing log directories")?;
        response
            .results
            .into_iter()
            .map(|dir| {
                check(dir.error_code, &format!("describing log directory {}", dir.log_dir.as_str()))?;
                let partitions = dir
                    .topics
                    .iter()
                    .flat_map(|t| {
                        t.partitions.iter().map(|p| (t.name.0.to_string(), p.partition_index, p.partition_size))
                    })
                    .collect();
                Ok(LogDirInfo {
                    path: dir.log_dir.to_string(),
                    total_bytes: dir.total_bytes,
                    usable_bytes: dir.usable_bytes,
                    partitions,
                })
            })
            .collect()
    }

    /// ElectLeaders: election type 0 (preferred) or 1 (unclean), for one partition or (`None`)
    /// every partition that needs it. Each partition's outcome: (topic, partition, error code,
    /// message).
    pub fn elect_leaders(
        &mut self,
        election_type: i8,
        partition: Option<(&str, i32)>,
    ) -> anyhow::Result<Vec<(String, i32, i16, String)>> {
        use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
        let partitions = partition.map(|(topic, partition)| {
            vec![TopicPartitions::default().with_topic(TopicName(str_bytes(topic))).with_partitions(vec![partition])]
        });
        let request = ElectLeadersRequest::default()
            .with_election_type(election_type)
            .with_topic_partitions(partitions)
            .with_timeout_ms(30_000);
        let response = self.send(request)?;
        check(response.error_code, "electing leaders")?;
        let mut outcomes = Vec::new();
        for topic in response.replica_election_results {
            for p in topic.partition_result {
                let message = p.error_message.map(|m| m.to_string()).unwrap_or_default();
                outcomes.push((topic.topic.0.to_string(), p.partition_id, p.error_code, message));
            }
        }
        Ok(outcomes)
    }
}
