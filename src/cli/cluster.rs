//! `sluice cluster describe`: the cluster id, its brokers and controller, and each log
//! directory with its free space and the size of every partition in it. `sluice cluster
//! reassign` moves a partition to other brokers (AlterPartitionReassignments) or cancels its
//! move; `sluice cluster reassignments` lists the moves in progress. `sluice cluster
//! elect-leaders`: a preferred or unclean election (ElectLeaders) for one partition or all.
//! `sluice cluster status`: the live brokers and every partition's leader, replicas and ISR.

use clap::Subcommand;
use kafka_protocol::ResponseError;

use crate::client::Client;

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Show the brokers, the controller and the log directories with their sizes.
    Describe {
        #[arg(long, default_value = super::DEFAULT_BOOTSTRAP)]
        bootstrap: String,
    },
    /// Move a partition to the brokers listed (the first is its preferred leader), or cancel
    /// its move: its new replicas catch up, and only then do the old ones leave.
    Reassign {
        #[arg(long)]
        topic: String,
        #[arg(long)]
        partition: i32,
        /// Broker ids, comma-separated.
        #[arg(long, value_delimiter = ',', required_unless_present = "cancel", conflicts_with = "cancel")]
        replicas: Vec<i32>,
        /// Cancel the partition's reassignment in progress: back to its old replicas.
        #[arg(long)]
        cancel: bool,
        #[arg(long, default_value = super::DEFAULT_BOOTSTRAP)]
        bootstrap: String,
    },
    /// List the reassignments in progress.
    Reassignments {
        #[arg(long, default_value = super::DEFAULT_BOOTSTRAP)]
        bootstrap: String,
    },
    /// Show the live brokers and each partition's leader, replicas and in-sync replicas.
    Status {
        #[arg(long, default_value = super::DEFAULT_BOOTSTRAP)]
        bootstrap: String,
        /// Only this topic's partitions.
        #[arg(long)]
        topic: Option<String>,
    },
    /// Elect leaders: the preferred replica where it is in sync and live (preferred), or any
    /// live replica for partitions without a leader (unclean: may lose acknowledged records).
    ElectLeaders {
        #[arg(long, default_value = super::DEFAULT_BOOTSTRAP)]
        bootstrap: String,
        /// One partition, with --partition; every partition that needs an election without.
        #[arg(long, requires = "partition")]
        topic: Option<String>,
        #[arg(long, requires = "topic")]
        partition: Option<i32>,
        #[arg(long = "type", value_enum, default_value = "preferred")]
        election: ElectionType,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ElectionType {
    Preferred,
    Unclean,
}

pub fn run(command: ClusterCommand) -> anyhow::Result<()> {
    let ids = |ids: &[i32]| ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
    match command {
        ClusterCommand::Reassign { topic, partition, replicas, cancel, bootstrap } => {
            let target = (!cancel).then_some(replicas.as_slice());
            Client::connect(&bootstrap)?.reassign(&topic, partition, target)?;
            match target {
                Some(replicas) => println!("Reassigning {topic}-{partition} to {}", ids(replicas)),
                None => println!("Cancelled the reassignment of {topic}-{partition}"),
            }
        }
        ClusterCommand::Reassignments { bootstrap } => {
            let reassignments = Client::connect(&bootstrap)?.reassignments()?;
            if reassignments.is_empty() {
                println!("No reassignment in progress");
            }
            for r in reassignments {
                println!(
                    "{}\t{}\tReplicas: {}\tAdding: {}\tRemoving: {}",
                    r.topic,
                    r.partition,
                    ids(&r.replicas),
                    ids(&r.adding),
                    ids(&r.removing)
                );
            }
        }
        ClusterCommand::Describe { bootstrap } => {
            let mut client = Client::connect(&bootstrap)?;
            let (cluster_id, controller, brokers) = client.describe_cluster()?;
            println!("Cluster: {cluster_id}\tController: {controller}");
            for broker in brokers {
                println!("Broker: {}\t{}:{}", broker.node_id, broker.host, broker.port);
            }
            for dir in client.describe_log_dirs()? {
                let used: i64 = dir.partitions.iter().map(|p| p.2).sum();
                println!(
                    "Log dir: {}\tPartitions: {}\tBytes: {used}\tTotal bytes: {}\tUsable bytes: {}",
                    dir.path,
                    dir.partitions.len(),
                    dir.total_bytes,
                    dir.usable_bytes
                );
                for (topic, partition, size) in dir.partitions {
                    println!("\t{topic}-{partition}\t{size}");
                }
            }
        }
        ClusterCommand::Status { bootstrap, topic } => {
            let mut client = Client::connect(&bootstrap)?;
            let (_, controller, brokers) = client.describe_cluster()?;
            for broker in brokers {
                let role = if broker.node_id == controller { "\tController" } else { "" };
                println!("Broker: {}\t{}:{}{role}", broker.node_id, broker.host, broker.port);
            }
            let ids = |ids: &[i32]| ids.iter().map(|id| id.to_string()).collect::<Vec<_>>().join(",");
            let only: Vec<&str> = topic.iter().map(String::as_str).collect();
            for t in client.metadata(topic.is_some().then_some(only.as_slice()))? {
                for p in t.partitions {
                    let leader = match p.leader {
                        -1 => "none".to_string(),
                        id if p.replicas.first() != Some(&id) => format!("{id} (not preferred)"),
                        id => id.to_string(),
                    };
                    println!(
                        "{}-{}\tLeader: {leader}\tReplicas: {}\tIsr: {}\tOffline: {}",
                        t.name,
                        p.partition,
                        ids(&p.replicas),
                        ids(&p.isr),
                        ids(&p.offline_replicas)
                    );
                }
            }
        }
        ClusterCommand::ElectLeaders { bootstrap, topic, partition, election } => {
            let mut client = Client::connect(&bootstrap)?;
            let election_type = match election {
                ElectionType::Preferred => 0,
                ElectionType::Unclean => 1,
            };
            let one = topic.as_deref().zip(partition);
            let outcomes = client.elect_leaders(election_type, one)?;
            let mut failed = 0;
            for (topic, partition, error, message) in &outcomes {
                match ResponseError::try_from_code(*error) {
                    None => println!("{topic}-{partition}\telected"),
                    Some(ResponseError::ElectionNotNeeded) => println!("{topic}-{partition}\tnot needed"),
                    Some(error) => {
                        failed += 1;
                        println!("{topic}-{partition}\t{error:?}: {message}");
                    }
                }
            }
            if outcomes.is_empty() {
                println!("No partition needed an election");
            }
            if failed > 0 {
                anyhow::bail!("{failed} of {} elections failed", outcomes.len());
            }
        }
    }
    Ok(())
}
