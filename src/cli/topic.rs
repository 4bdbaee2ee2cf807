//! `sluice topic create|list|describe|delete`: topic administration over the Kafka protocol.

use clap::Subcommand;

use crate::client::Client;

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
    /// Delete a topic and its data.
    Delete {
        name: String,
        #[arg(long, default_value = super::DEFAULT_BOOTSTRAP)]
        bootstrap: String,
    },
}

pub fn run(command: TopicCommand) -> anyhow::Result<()> {
    match command {
        TopicCommand::Create { name, partitions, replication_factor, configs, bootstrap } => {
            let configs = configs
                .iter()
                .map(|c| {
                    c.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .ok_or_else(|| anyhow::anyhow!("--config {c}: expected KEY=VALUE"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            Client::connect(&bootstrap)?.create_topic(&name, partitions, replication_factor, &configs)?;
            println!("Created topic {name}.");
        }
        TopicCommand::List { bootstrap } => {
            for topic in Client::connect(&bootstrap)?.metadata(None)? {
                println!("{}", topic.name);
            }
        }
        TopicCommand::Describe { name, bootstrap } => {
            let topics = Client::connect(&bootstrap)?.metadata(Some(&[&name]))?;
            let topic = topics.first().ok_or_else(|| anyhow::anyhow!("no metadata for topic {name}"))?;
            println!("Topic: {}\tPartitions: {}", topic.name, topic.partitions.len());
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
        TopicCommand::Delete { name, bootstrap } => {
            Client::connect(&bootstrap)?.delete_topic(&name)?;
            println!("Deleted topic {name}.");
        }
    }
    Ok(())
}
