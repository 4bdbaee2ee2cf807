//! What the bench reads off the host: a broker's CPU time (from /proc), the time the
//! hypervisor withheld this machine's CPUs, and which local process listens on the bootstrap
//! port, so that a local broker is found without a pid.

use std::net::SocketAddr;

use anyhow::Context;

/// User + system CPU seconds `pid` has used so far.
pub fn cpu_seconds(pid: i32) -> anyhow::Result<f64> {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name may hold spaces and parentheses: fields are counted after the last ')'.
    let after_name = &stat[stat.rfind(')').context("malformed /proc stat")? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // After the name: state is field 3 of proc(5), so utime (14) and stime (15) are at 11, 12.
    let ticks = |i: usize| -> anyhow::Result<u64> {
        fields.get(i).context("short /proc stat")?.parse::<u64>().context("malformed /proc stat")
    };
    let ticks_per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.context("no CLK_TCK")? as f64;
    Ok((ticks(11)? + ticks(12)?) as f64 / ticks_per_second)
}

/// This machine's CPU time since boot, all CPUs together, in clock ticks: in all, and stolen
/// (the CPUs wanted to run but the hypervisor ran something else, or held the whole machine
/// back once its CPU quota was spent, which freezes every process in it at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    pub total: u64,
    pub steal: u64,
}

impl CpuTimes {
    pub fn now() -> anyhow::Result<CpuTimes> {
        parse_cpu_times(&std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?)
    }

    /// The share of the CPU time between `earlier` and `self` that was stolen.
    pub fn steal_share_since(&self, earlier: &CpuTimes) -> f64 {
        let total = self.total.saturating_sub(earlier.total);
        self.steal.saturating_sub(earlier.steal) as f64 / total.max(1) as f64
    }
}

/// The first line of /proc/stat: `cpu user nice system idle iowait irq softirq steal guest
/// guest_nice`. Guest time is already counted in user and nice, so the total is the first eight.
fn parse_cpu_times(stat: &str) -> anyhow::Result<CpuTimes> {
    let line = stat.lines().find(|l| l.starts_with("cpu ")).context("no cpu line in /proc/stat")?;
    let ticks = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|t| t.parse::<u64>().context("malformed /proc/stat"))
        .collect::<anyhow::Result<Vec<u64>>>()?;
    anyhow::ensure!(ticks.len() == 8, "/proc/stat's cpu line has no steal time");
    Ok(CpuTimes { total: ticks.iter().sum(), steal: ticks[7] })
}

/// The process (other than this one) listening on `address`'s port on this host, if
/// `address` is local and the process is readable by this user.
pub fn local_listener(address: SocketAddr) -> Option<i32> {
    let local = address.ip().is_loopback() || address.ip().is_unspecified() || is_own_address(address);
    if !local {
        return None;
    }
    let inodes: Vec<u64> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|table| listening_inodes(&table, address.port()))
        .collect();
    let me = std::process::id() as i32;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else { continue };
            let target = target.to_string_lossy();
            let inode = target.strip_prefix("socket:[").and_then(|t| t.strip_suffix(']')).and_then(|t| t.parse().ok());
            if inode.is_some_and(|inode| inodes.contains(&inode)) {
                return Some(pid);
            }
        }
    }
    None
}

fn is_own_address(address: SocketAddr) -> bool {
    // Binding succeeds only for an address of this host (or fails with "in use" for one).
    match std::net::TcpListener::bind(SocketAddr::new(address.ip(), 0)) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::AddrInUse,
    }
}

/// Socket inodes of the LISTEN entries for `port` in a /proc/net/tcp table.
fn listening_inodes(table: &str, port: u16) -> Vec<u64> {
    const LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields.get(1)?.rsplit(':').next()?;
            let matches = u16::from_str_radix(local_port, 16).ok()? == port && *fields.get(3)? == LISTEN;
            matches.then(|| fields.get(9)?.parse().ok()).flatten()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_listeners_in_a_proc_table() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
             0: 0100007F:2384 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0 100 0 0 10 0\n   \
             1: 0100007F:2384 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000  1000        0 4343 1 0 20 4 30 10 -1\n";
        assert_eq!(listening_inodes(table, 9092), vec![4242]);
        assert!(listening_inodes(table, 9093).is_empty());
    }

    #[test]
    fn reads_steal_from_the_cpu_line() {
        let stat = "cpu  100 5 40 800 20 1 2 32 7 0\ncpu0 50 2 20 400 10 0 1 16 3 0\nintr 12345\n";
        let earlier = parse_cpu_times(stat).unwrap();
        assert_eq!(earlier, CpuTimes { total: 1000, steal: 32 });
        let later = CpuTimes { total: 1400, steal: 132 };
        assert_eq!(later.steal_share_since(&earlier), 0.25);
        assert!(parse_cpu_times("cpu  1 2 3 4\n").is_err(), "a kernel without steal time is not read as none stolen");
    }

    #[test]
    fn cpu_time_grows_while_this_process_spins() {
        let pid = std::process::id() as i32;
        let before = cpu_seconds(pid).unwrap();
        let start = std::time::Instant::now();
        while cpu_seconds(pid).unwrap() <= before {
            assert!(start.elapsed() < std::time::Duration::from_secs(10), "no CPU time accounted while spinning");
        }
    }
}
