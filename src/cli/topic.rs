//! `sluice topic create|list|describe|delete`.
use clap::Subcommand;

#[derive(Subcommand)]
pub enum TopicCommand {}

pub fn run(_command: TopicCommand) -> anyhow::Result<()> {
    todo!()
}
