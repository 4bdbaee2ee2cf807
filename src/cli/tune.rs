//! `sluice tune check`: inspects the host a broker runs on and prints, for each setting that
//! matters to it, the value found, what `tuning/README.md` recommends and why. It only reads;
//! what it cannot read it reports as unknown, and it always exits 0.

use std::path::{Path, PathBuf};

use clap::Subcommand;

#[derive(Subcommand)]
pub enum TuneCommand {
    /// Report this host's settings against the recommendations.
    Check {
        /// The broker's data directory, to find the disk it lives on.
        #[arg(long, default_value = "sluice-data")]
        data_dir: PathBuf,
        /// Shards the broker will run (for the locked-memory estimate).
        #[arg(long)]
        cores: Option<usize>,
    },
}

/// What a check concluded.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Ok,
    Advice,
    Unknown,
}

struct Finding {
    setting: String,
    value: String,
    recommended: String,
    verdict: Verdict,
    why: &'static str,
}

fn read(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

fn sysctl(name: &str) -> Option<String> {
    read(Path::new("/proc/sys").join(name.replace('.', "/")))
}

/// A numeric setting that should be at least / at most `target`.
fn numeric(setting: &str, value: Option<String>, target: u64, at_least: bool, why: &'static str) -> Finding {
    let parsed = value.as_deref().and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok());
    let verdict = match parsed {
        None => Verdict::Unknown,
        Some(v) if (at_least && v >= target) || (!at_least && v <= target) => Verdict::Ok,
        Some(_) => Verdict::Advice,
    };
    Finding {
        setting: setting.to_string(),
        value: value.unwrap_or_else(|| "unreadable".into()),
        recommended: format!("{} {target}", if at_least { ">=" } else { "<=" }),
        verdict,
        why,
    }
}

/// A setting whose value should be one of `good`.
fn choice(setting: &str, value: Option<String>, good: &[&str], why: &'static str) -> Finding {
    let verdict = match &value {
        None => Verdict::Unknown,
        Some(v) if good.contains(&v.as_str()) => Verdict::Ok,
        Some(_) => Verdict::Advice,
    };
    Finding {
        setting: setting.to_string(),
        value: value.unwrap_or_else(|| "unreadable".into()),
        recommended: good.join(" or "),
        verdict,
        why,
    }
}

/// The active entry of a sysfs list such as "always [madvise] never".
fn bracketed(text: Option<String>) -> Option<String> {
    let text = text?;
    let start = text.find('[')? + 1;
    let end = text[start..].find(']')? + start;
    Some(text[start..end].to_string())
}

/// The scheduler of the block device holding `dir` (the whole disk for a partition).
fn io_scheduler(dir: &Path) -> Option<(String, String)> {
    use std::os::unix::fs::MetadataExt;
    let existing = dir.ancestors().find(|d| d.exists())?;
    let dev = std::fs::metadata(existing).ok()?.dev();
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    let device = std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}")).ok()?;
    let queue =
        [device.join("queue/scheduler"), device.parent()?.join("queue/scheduler")].into_iter().find(|p| p.exists())?;
    let name = queue.parent()?.parent()?.file_name()?.to_string_lossy().to_string();
    Some((name, bracketed(read(queue))?))
}

/// The name of the file system holding `dir`, as `sluice tune check` reports it.
fn file_system(dir: &Path) -> Option<String> {
    use nix::sys::statfs::{BTRFS_SUPER_MAGIC, EXT4_SUPER_MAGIC, TMPFS_MAGIC, XFS_SUPER_MAGIC, statfs};
    let existing = dir.ancestors().find(|d| d.exists())?;
    let kind = statfs(existing).ok()?.filesystem_type();
    let named =
        [(XFS_SUPER_MAGIC, "xfs"), (EXT4_SUPER_MAGIC, "ext4"), (BTRFS_SUPER_MAGIC, "btrfs"), (TMPFS_MAGIC, "tmpfs")];
    Some(
        named.iter().find(|(magic, _)| *magic == kind).map_or_else(|| format!("{:#x}", kind.0), |(_, n)| n.to_string()),
    )
}

/// Where the kernel lists the virtio balloon devices its driver is bound to.
const BALLOON_DRIVER: &str = "/sys/bus/virtio/drivers/virtio_balloon";
/// VIRTIO_BALLOON_F_REPORTING: the guest reports its free pages to the host.
const BALLOON_F_REPORTING: usize = 5;

/// Whether a virtio device's `features` (one '0' or '1' per feature bit, bit 0 first) include
/// free page reporting.
fn reports_free_pages(features: &str) -> bool {
    features.as_bytes().get(BALLOON_F_REPORTING) == Some(&b'1')
}

/// "on" when a bound virtio balloon reports this guest's free pages to its host, "off" when
/// none does (or there is no balloon: not a VM, or a VM without one).
fn free_page_reporting() -> Option<String> {
    let Ok(bound) = std::fs::read_dir(BALLOON_DRIVER) else {
        return Some("off".into());
    };
    let mut reporting = false;
    for entry in bound.flatten() {
        if entry.file_name().to_string_lossy().starts_with("virtio") {
            reporting |= reports_free_pages(&read(entry.path().join("features"))?);
        }
    }
    Some(if reporting { "on" } else { "off" }.into())
}

/// The soft limit of `resource`, or its hard limit with `hard`.
fn rlimit(resource: nix::sys::resource::Resource, hard: bool) -> Option<String> {
    let (soft, hard_limit) = nix::sys::resource::getrlimit(resource).ok()?;
    let limit = if hard { hard_limit } else { soft };
    Some(if limit == nix::sys::resource::RLIM_INFINITY { u64::MAX.to_string() } else { limit.to_string() })
}

fn findings(data_dir: &Path, cores: usize) -> Vec<Finding> {
    let governor = read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor");
    let mut out = vec![
        choice("cpu frequency governor", governor, &["performance"], "frequency ramps show up as latency spikes"),
        choice(
            "transparent huge pages",
            bracketed(read("/sys/kernel/mm/transparent_hugepage/enabled")),
            &["madvise", "never"],
            "`always` brings compaction stalls",
        ),
        numeric(
            "vm.swappiness",
            sysctl("vm.swappiness"),
            10,
            false,
            "swapping the broker hurts more than dropping page cache",
        ),
        numeric(
            "vm.dirty_background_ratio",
            sysctl("vm.dirty_background_ratio"),
            10,
            false,
            "start writeback early and smoothly",
        ),
        numeric("vm.dirty_ratio", sysctl("vm.dirty_ratio"), 20, true, "room for bursts before writers are throttled"),
        numeric("net.core.somaxconn", sysctl("net.core.somaxconn"), 4096, true, "connection storms from many clients"),
        numeric(
            "net.ipv4.tcp_max_syn_backlog",
            sysctl("net.ipv4.tcp_max_syn_backlog"),
            4096,
            true,
            "connection storms",
        ),
        numeric(
            "net.core.rmem_max",
            sysctl("net.core.rmem_max"),
            16 << 20,
            true,
            "large produce batches per connection",
        ),
        numeric(
            "net.core.wmem_max",
            sysctl("net.core.wmem_max"),
            16 << 20,
            true,
            "large fetch responses per connection",
        ),
        numeric(
            "kernel.io_uring_disabled",
            sysctl("kernel.io_uring_disabled"),
            0,
            false,
            "each shard runs on io_uring",
        ),
        numeric(
            "RLIMIT_MEMLOCK (bytes)",
            rlimit(nix::sys::resource::Resource::RLIMIT_MEMLOCK, false),
            (cores as u64) * (1 << 20),
            true,
            "io_uring buffers are locked memory, per shard",
        ),
        numeric(
            "RLIMIT_NOFILE (hard)",
            rlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, true),
            100_000,
            true,
            "one open file per segment, plus connections; serve raises its soft limit to this",
        ),
    ];
    out.push(choice(
        "data directory's file system",
        file_system(data_dir),
        &["xfs"],
        "XFS takes buffered writes without blocking, so io_uring writes appends inline; ext4 does not, so each goes to an io_uring kernel worker (two context switches per append)",
    ));
    out.push(choice(
        "free page reporting to a VM's host",
        free_page_reporting(),
        &["off"],
        "the host takes back the memory the guest frees (dropped caches, deleted segments) and may charge that work to the VM's CPU time: whole-VM stalls under load",
    ));
    match io_scheduler(data_dir) {
        Some((device, scheduler)) => out.push(choice(
            &format!("I/O scheduler ({device})"),
            Some(scheduler),
            &["none", "mq-deadline"],
            "sequential log writes gain nothing from fair queuing",
        )),
        None => out.push(choice(
            "I/O scheduler",
            None,
            &["none", "mq-deadline"],
            "could not find the data directory's disk",
        )),
    }
    out
}

pub fn run(command: TuneCommand) -> anyhow::Result<()> {
    let TuneCommand::Check { data_dir, cores } = command;
    let cores = cores.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    println!("SETTING\tVALUE\tRECOMMENDED\tSTATUS\tWHY");
    let findings = findings(&data_dir, cores);
    for f in &findings {
        let status = match f.verdict {
            Verdict::Ok => "ok",
            Verdict::Advice => "CHANGE",
            Verdict::Unknown => "unknown",
        };
        println!("{}\t{}\t{}\t{status}\t{}", f.setting, f.value, f.recommended, f.why);
    }
    let advice = findings.iter().filter(|f| f.verdict == Verdict::Advice).count();
    println!("{advice} of {} settings differ from the recommendations; see tuning/README.md.", findings.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        assert!(numeric("x", Some("1".into()), 10, false, "").verdict == Verdict::Ok);
        assert!(numeric("x", Some("60".into()), 10, false, "").verdict == Verdict::Advice);
        assert!(numeric("x", None, 10, false, "").verdict == Verdict::Unknown);
        assert_eq!(bracketed(Some("always [madvise] never".into())).as_deref(), Some("madvise"));
        assert!(choice("x", Some("never".into()), &["madvise", "never"], "").verdict == Verdict::Ok);
    }

    #[test]
    fn reads_free_page_reporting_from_a_balloon_s_feature_bits() {
        // The features of this project's development VM's balloon (Firecracker), reporting among them.
        let firecracker = format!("011001010000000000000000000000001{}", "0".repeat(95));
        assert!(reports_free_pages(&firecracker));
        // The same without reporting (bit 5), then with only the neighbouring bits set.
        assert!(!reports_free_pages(&firecracker.replacen("0110010", "0110000", 1)));
        assert!(!reports_free_pages("0000101"));
        assert!(!reports_free_pages(""));
    }

    #[test]
    fn names_the_file_system_of_a_directory_or_of_its_nearest_existing_parent() {
        assert_eq!(file_system(Path::new("/proc")).as_deref(), Some("0x9fa0"), "procfs has no name here");
        assert_eq!(file_system(Path::new("/dev/shm/not/yet/made")).as_deref(), Some("tmpfs"));
    }
}
