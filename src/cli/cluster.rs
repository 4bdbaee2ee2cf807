//! `sluice cluster describe`: the cluster id, its brokers and controller, and each log
//! directory with its free space and the size of every partition in it.

use clap::Subcommand;

use crate::client::Client;

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Show the brokers, the controller and the log directories with their sizes.
    Describe {
        #[arg(long, default_value = super::DEFAULT_BOOTSTRAP)]
        bootstrap: String,
    },
}

pub fn run(command: ClusterCommand) -> anyhow::Result<()> {
    match command {
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
