//! `sluice cluster describe`: the cluster id, its brokers and controller, and each log
//! directory with its free space and the size of every partition in it. `sluice cluster
//! reassign` moves a partition to other brokers (AlterPartitionReassignments) or cancels its
//! move; `sluice cluster reassignments` lists the moves in progress.

use clap::Subcommand;

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
    }
    Ok(())
}
