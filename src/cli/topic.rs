//! `sluice topic create|list|describe|alter|config|delete-records|delete`: topic
//! administration over the Kafka protocol.

use clap::Subcommand;

use crate::client::{Client, ConfigChange, SOURCE_DEFAULT};

#[derive(Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        #[arg(long, default_value_t = 1)]
        partitions: i32,
        #[arg(long, default_value_t = 1)]
        replication_factor: i16,
        /// A topic config as key=value (e.g. flush.messages=1); repeatable.
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
        #[arg(long, default_value = super::DEFAULT_BOOTSTRAP)]
        bootstrap: String,
    },
    /// List topic names, one per line.
    List {
        #[arg(long, default_value = super::DEFAULT_BOOTSTRAP)]
        bootstrap: String,
    },
    /// Show a topic's partitions, leaders and replicas.
    Describe {
        name: String,
        #[arg(long, default_value = super::DEFAULT_BOOTSTRAP)]
        bootstrap: String,
    },
    /// Grow a topic to more partitions.
    Alter {
        name: String,
        /// The partition count wanted (more than it has).
        #[arg(long)]
        partitions: i32,
        #[arg(long, default_value = super::DEFAULT_BOOTSTRAP)]
        bootstrap: String,
    },
    /// Read or change a topic's configs.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Delete a partition's records below an offset (its log start offset moves there).
    DeleteRecords {
        name: String,
        #[arg(long)]
        partition: i32,
        /// The new first offset; -1 deletes up to the high watermark.
        #[arg(long, allow_negative_numbers = true)]
        before_offset: i64,
        #[arg(long, default_value = super::DEFAULT_BOOTSTRAP)]
        bootstrap: String,
    },
    /// Delete a topic and its data.
    Delete {
        name: String,
        #[arg(long, default_value = super::DEFAULT_BOOTSTRAP)]
        bootstrap: String,
    },
}

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Print every config of a topic as key=value with where the value comes from; only the
    /// keys named, if any.
    Get {
        name: String,
        keys: Vec<String>,
        #[arg(long, default_value = super::DEFAULT_BOOTSTRAP)]
        bootstrap: String,
    },
    /// Set configs of a topic, the others kept.
    Set {
        name: String,
        #[arg(value_name = "KEY=VALUE", required = true)]
        configs: Vec<String>,
        #[arg(long, default_value = super::DEFAULT_BOOTSTRAP)]
        bootstrap: String,
    },
    /// Remove configs of a topic, which then follow the broker's defaults again.
    Delete {
        name: String,
        #[arg(value_name = "KEY", required = true)]
        keys: Vec<String>,
        #[arg(long, default_value = super::DEFAULT_BOOTSTRAP)]
        bootstrap: String,
    },
}

/// Kafka's names of config sources, as its tools print them.
fn source_name(source: i8) -> &'static str {
    match source {
        1 => "DYNAMIC_TOPIC_CONFIG",
        2 => "DYNAMIC_BROKER_CONFIG",
        3 => "DYNAMIC_DEFAULT_BROKER_CONFIG",
        4 => "STATIC_BROKER_CONFIG",
        5 => "DEFAULT_CONFIG",
        _ => "UNKNOWN",
    }
}

/// `KEY=VALUE` arguments as pairs.
pub(super) fn key_values(pairs: &[String], flag: &str) -> anyhow::Result<Vec<(String, String)>> {
    pairs
        .iter()
        .map(|c| {
            c.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| anyhow::anyhow!("{flag}{c}: expected KEY=VALUE"))
        })
        .collect()
}

pub fn run(command: TopicCommand) -> anyhow::Result<()> {
    match command {
        TopicCommand::Create { name, partitions, replication_factor, configs, bootstrap } => {
            let configs = key_values(&configs, "--config ")?;
            Client::connect(&bootstrap)?.create_topic(&name, partitions, replication_factor, &configs)?;
            println!("Created topic {name}.");
        }
        TopicCommand::List { bootstrap } => {
            for topic in Client::connect(&bootstrap)?.metadata(None)? {
                println!("{}", topic.name);
            }
        }
        TopicCommand::Describe { name, bootstrap } => {
            let mut client = Client::connect(&bootstrap)?;
            let topics = client.metadata(Some(&[&name]))?;
            let topic = topics.first().ok_or_else(|| anyhow::anyhow!("no metadata for topic {name}"))?;
            // Like kafka-topics: the configs that differ from the defaults.
            let configs: Vec<String> = client
                .topic_configs(&name)?
                .into_iter()
                .filter(|c| c.source != SOURCE_DEFAULT)
                .map(|c| format!("{}={}", c.name, c.value.unwrap_or_default()))
                .collect();
            println!("Topic: {}\tPartitions: {}\tConfigs: {}", topic.name, topic.partitions.len(), configs.join(","));
            let list = |ids: &[i32]| ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
            for p in &topic.partitions {
                // Kafka's tool prints "none" for a partition without a leader, and its offline
                // replicas last.
                let leader = if p.leader < 0 { "none".to_string() } else { p.leader.to_string() };
                let offline = match p.offline_replicas.is_empty() {
                    true => String::new(),
                    false => format!("\tOffline: {}", list(&p.offline_replicas)),
                };
                println!(
                    "\tPartition: {}\tLeader: {leader}\tReplicas: {}\tIsr: {}{offline}",
                    p.partition,
                    list(&p.replicas),
                    list(&p.isr)
                );
            }
        }
        TopicCommand::Alter { name, partitions, bootstrap } => {
            Client::connect(&bootstrap)?.create_partitions(&name, partitions)?;
            println!("Topic {name} now has {partitions} partitions.");
        }
        TopicCommand::Config { command } => run_config(command)?,
        TopicCommand::DeleteRecords { name, partition, before_offset, bootstrap } => {
            let start = Client::connect(&bootstrap)?.delete_records(&name, partition, before_offset)?;
            println!("Partition {name}-{partition} now starts at offset {start}.");
        }
        TopicCommand::Delete { name, bootstrap } => {
            Client::connect(&bootstrap)?.delete_topic(&name)?;
            println!("Deleted topic {name}.");
        }
    }
    Ok(())
}

fn run_config(command: ConfigCommand) -> anyhow::Result<()> {
    match command {
        ConfigCommand::Get { name, keys, bootstrap } => {
            for config in Client::connect(&bootstrap)?.topic_configs(&name)? {
                if keys.is_empty() || keys.contains(&config.name) {
                    let value = config.value.as_deref().unwrap_or("null");
                    println!("{}={value}\t({})", config.name, source_name(config.source));
                }
            }
        }
        ConfigCommand::Set { name, configs, bootstrap } => {
            let changes: Vec<_> = key_values(&configs, "")?.into_iter().map(|(k, v)| ConfigChange::Set(k, v)).collect();
            Client::connect(&bootstrap)?.alter_topic_configs(&name, &changes)?;
            println!("Updated the configs of {name}.");
        }
        ConfigCommand::Delete { name, keys, bootstrap } => {
            let changes: Vec<_> = keys.into_iter().map(ConfigChange::Delete).collect();
            Client::connect(&bootstrap)?.alter_topic_configs(&name, &changes)?;
            println!("Updated the configs of {name}.");
        }
    }
    Ok(())
}
