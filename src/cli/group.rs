//! `sluice group list|describe|reset-offsets|delete`: consumer-group administration over the
//! Kafka protocol.

use anyhow::{Context, bail};
use bytes::Buf;
use clap::{Args, Subcommand};
use kafka_protocol::messages::ConsumerProtocolAssignment;
use kafka_protocol::protocol::Decodable;

use crate::client::{Client, EARLIEST, LATEST};

#[derive(Subcommand)]
pub enum GroupCommand {
    /// List groups, one per line with its state.
    List {
        #[arg(long, default_value = super::DEFAULT_BOOTSTRAP)]
        bootstrap: String,
    },
    /// Show a group's state, members, assignment, committed offsets and lag.
    Describe {
        group: String,
        #[arg(long, default_value = super::DEFAULT_BOOTSTRAP)]
        bootstrap: String,
    },
    /// Move a stopped group's committed offsets on one topic.
    ResetOffsets(ResetArgs),
    /// Delete an empty group and its committed offsets.
    Delete {
        group: String,
        #[arg(long, default_value = super::DEFAULT_BOOTSTRAP)]
        bootstrap: String,
    },
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["to_earliest", "to_latest", "to_offset", "to_datetime"])))]
pub struct ResetArgs {
    group: String,
    #[arg(long)]
    topic: String,
    #[arg(long)]
    to_earliest: bool,
    #[arg(long)]
    to_latest: bool,
    #[arg(long, value_name = "N")]
    to_offset: Option<i64>,
    /// ISO 8601, e.g. 2026-01-31T12:00:00Z (UTC when no offset is given).
    #[arg(long, value_name = "ISO8601")]
    to_datetime: Option<String>,
    #[arg(long, default_value = super::DEFAULT_BOOTSTRAP)]
    bootstrap: String,
}

pub fn run(command: GroupCommand) -> anyhow::Result<()> {
    match command {
        GroupCommand::List { bootstrap } => {
            for (group, state) in Client::connect(&bootstrap)?.list_groups()? {
                println!("{group}\t{state}");
            }
            Ok(())
        }
        GroupCommand::Describe { group, bootstrap } => describe(&group, &bootstrap),
        GroupCommand::ResetOffsets(args) => reset(args),
        GroupCommand::Delete { group, bootstrap } => {
            Client::group_coordinator(&bootstrap, &group)?.delete_group(&group)?;
            println!("Deleted group {group}.");
            Ok(())
        }
    }
}

/// (topic, partition) pairs of a member's consumer-protocol assignment.
fn assigned_partitions(mut assignment: bytes::Bytes) -> Vec<(String, i32)> {
    if assignment.len() < 2 {
        return Vec::new();
    }
    let version = assignment.get_i16();
    ConsumerProtocolAssignment::decode(&mut assignment, version)
        .map(|a| {
            a.assigned_partitions
                .into_iter()
                .flat_map(|tp| tp.partitions.into_iter().map(move |p| (tp.topic.0.to_string(), p)))
                .collect()
        })
        .unwrap_or_default()
}

fn describe(group_id: &str, bootstrap: &str) -> anyhow::Result<()> {
    let mut coordinator = Client::group_coordinator(bootstrap, group_id)?;
    let group = coordinator.describe_group(group_id)?;
    if group.group_state.as_str() == "Dead" {
        bail!("group {group_id} does not exist");
    }
    println!(
        "Group: {group_id}\tState: {}\tProtocol: {}\tMembers: {}",
        group.group_state,
        group.protocol_data,
        group.members.len()
    );
    // Every partition that is assigned or has a committed offset, with who owns it.
    let mut rows: std::collections::BTreeMap<(String, i32), (Option<i64>, String)> = Default::default();
    for member in &group.members {
        let owner = format!("{}\t{}\t{}", member.member_id, member.client_host, member.client_id);
        let assigned = assigned_partitions(member.member_assignment.clone());
        println!(
            "\tMember: {}\tHost: {}\tClient: {}\tPartitions: {}",
            member.member_id,
            member.client_host,
            member.client_id,
            assigned.len()
        );
        for tp in assigned {
            rows.insert(tp, (None, owner.clone()));
        }
    }
    for (topic, partition, offset, _) in coordinator.committed_offsets(group_id)? {
        rows.entry((topic, partition)).or_insert((None, "-\t-\t-".into())).0 = Some(offset);
    }
    let mut data = Client::connect(bootstrap)?;
    println!("TOPIC\tPARTITION\tCURRENT-OFFSET\tLOG-END-OFFSET\tLAG\tMEMBER-ID\tHOST\tCLIENT-ID");
    for ((topic, partition), (committed, owner)) in rows {
        let log_end = data.list_offset(&topic, partition, LATEST)?;
        let (current, lag) = match committed {
            Some(offset) => (offset.to_string(), (log_end - offset).max(0).to_string()),
            None => ("-".to_string(), "-".to_string()),
        };
        println!("{topic}\t{partition}\t{current}\t{log_end}\t{lag}\t{owner}");
    }
    Ok(())
}

fn reset(args: ResetArgs) -> anyhow::Result<()> {
    let mut coordinator = Client::group_coordinator(&args.bootstrap, &args.group)?;
    let group = coordinator.describe_group(&args.group)?;
    if !group.members.is_empty() {
        bail!(
            "group {} has {} active members (state {}): stop its consumers before resetting offsets",
            args.group,
            group.members.len(),
            group.group_state
        );
    }
    let mut data = Client::connect(&args.bootstrap)?;
    let partitions = data.partition_count(&args.topic)?;
    let timestamp = args.to_datetime.as_deref().map(parse_datetime).transpose()?;
    let mut targets = Vec::new();
    for partition in 0..partitions {
        let offset = match (args.to_earliest, args.to_latest, args.to_offset, timestamp) {
            (true, _, _, _) => data.list_offset(&args.topic, partition, EARLIEST)?,
            (_, true, _, _) => data.list_offset(&args.topic, partition, LATEST)?,
            (_, _, Some(offset), _) => {
                // Kafka's tool clamps a requested offset into what the partition holds.
                let earliest = data.list_offset(&args.topic, partition, EARLIEST)?;
                let latest = data.list_offset(&args.topic, partition, LATEST)?;
                offset.clamp(earliest, latest)
            }
            (_, _, _, Some(ms)) => match data.list_offset(&args.topic, partition, ms)? {
                // Nothing that late: the end of the partition.
                -1 => data.list_offset(&args.topic, partition, LATEST)?,
                offset => offset,
            },
            _ => unreachable!("clap requires one target"),
        };
        targets.push((partition, offset));
    }
    coordinator.commit_offsets(&args.group, &args.topic, &targets)?;
    println!("TOPIC\tPARTITION\tNEW-OFFSET");
    for (partition, offset) in targets {
        println!("{}\t{partition}\t{offset}", args.topic);
    }
    Ok(())
}

/// Milliseconds since the epoch of an ISO 8601 date-time; UTC when it names no offset.
fn parse_datetime(text: &str) -> anyhow::Result<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_millis());
    }
    let naive = chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .with_context(|| format!("{text:?} is not an ISO 8601 date-time like 2026-01-31T12:00:00Z"))?;
    Ok(naive.and_utc().timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_with_and_without_offsets() {
        assert_eq!(parse_datetime("1970-01-01T00:00:01Z").unwrap(), 1000);
        assert_eq!(parse_datetime("1970-01-01T01:00:00+01:00").unwrap(), 0);
        assert_eq!(parse_datetime("1970-01-01T00:00:00.250").unwrap(), 250);
        assert!(parse_datetime("yesterday").is_err());
    }
}
