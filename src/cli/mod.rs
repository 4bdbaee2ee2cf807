//! The `sluice` command line: `serve` runs a broker; `topic`, `produce` and `consume`
//! speak the Kafka protocol (through [`crate::client`]) to any broker; `bench` generates load
//! (through [`crate::bench`]).

mod bench;
mod cluster;
mod consume;
mod group;
mod produce;
mod serve;
mod topic;
mod tune;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Where client commands find a broker unless told otherwise.
const DEFAULT_BOOTSTRAP: &str = "127.0.0.1:9092";

#[derive(Parser)]
#[command(name = "sluice", version, about = "A Kafka-compatible streaming broker, thread-per-core on io_uring")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker (defaults: 127.0.0.1:9092, data in ./sluice-data, one shard per core).
    Serve(serve::ServeArgs),
    /// Create, list, describe, grow, configure, trim and delete topics.
    Topic {
        #[command(subcommand)]
        command: topic::TopicCommand,
    },
    /// Describe the cluster (brokers, controller, log directories and their sizes); move
    /// partitions between brokers.
    Cluster {
        #[command(subcommand)]
        command: cluster::ClusterCommand,
    },
    /// List, describe, reset and delete consumer groups.
    Group {
        #[command(subcommand)]
        command: group::GroupCommand,
    },
    /// Inspect this host's settings for running a broker.
    Tune {
        #[command(subcommand)]
        command: tune::TuneCommand,
    },
    /// Generate load against any Kafka-compatible broker and measure it.
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
    /// Produce one record per stdin line.
    Produce(produce::ProduceArgs),
    /// Consume records and print one per line.
    Consume(consume::ConsumeArgs),
}

/// Entry point of the binary; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_)) {
        crate::runtime::restore_default_sigpipe();
    }
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Topic { command } => topic::run(command),
        Command::Group { command } => group::run(command),
        Command::Cluster { command } => cluster::run(command),
        Command::Produce(args) => produce::run(args),
        Command::Tune { command } => tune::run(command),
        Command::Consume(args) => consume::run(args),
        Command::Bench { command } => bench::run(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sluice: {error:#}");
            ExitCode::FAILURE
        }
    }
}
