//! `sluice produce TOPIC`.
#[derive(clap::Args)]
pub struct ProduceArgs {}

pub fn run(_args: ProduceArgs) -> anyhow::Result<()> {
    todo!()
}
