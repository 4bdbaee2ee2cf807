//! `sluice consume TOPIC`.
#[derive(clap::Args)]
pub struct ConsumeArgs {}

pub fn run(_args: ConsumeArgs) -> anyhow::Result<()> {
    todo!()
}
