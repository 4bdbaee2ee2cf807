//! A private network for a test's nodes: one Linux network namespace per node, each with a
//! veth pair whose host end is a port of one bridge in the test's own namespace, and an
//! address of its own in a /24 of 198.18.0.0/15 (the range set aside for network tests). A
//! node's link is cut by taking the host end of its pair down: the node keeps its address
//! and its loopback, the others and the test no longer reach it over the bridge.
//!
//! Needs root and `ip` (iproute2; `scripts/test` installs it in CI, which runs as root). A
//! test that uses it fails, never skips, without them. Names carry the test process's pid and
//! a counter, so parallel tests never collide; dropping the network removes its namespaces and
//! bridge (also when a test panics), and a new network first removes those left by processes
//! that no longer run (a test killed with its harness).

use std::net::{Ipv4Addr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The prefix of every bridge and veth name (interface names are at most 15 bytes).
const LINK_PREFIX: &str = "slc-";
/// The prefix of every namespace name.
const NAMESPACE_PREFIX: &str = "sluice-";

pub struct Network {
    namespaces: Vec<String>,
    host_ends: Vec<String>,
    bridge: String,
    subnet: [u8; 3],
}

impl Network {
    /// A bridge and `nodes` namespaces, each linked to it, all up.
    pub fn new(nodes: usize) -> Network {
        assert!(effective_uid() == 0, "network-namespace tests need root (CI runs as root); run them with sudo");
        assert!(
            Command::new("ip").arg("-V").output().is_ok_and(|o| o.status.success()),
            "`ip` (iproute2) is missing: scripts/test installs it (apt-get install iproute2)"
        );
        remove_stale();
        static NETWORKS: AtomicUsize = AtomicUsize::new(0);
        let tag =
            format!("{}-{}", base36(std::process::id() as usize), base36(NETWORKS.fetch_add(1, Ordering::Relaxed)));
        // One network at a time picks its subnet and claims it (the bridge's address), so that
        // two tests of this process never pick the same one.
        static CLAIMING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let claiming = CLAIMING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let subnet = free_subnet(&tag);
        let network = Network {
            namespaces: (0..nodes).map(|i| format!("{NAMESPACE_PREFIX}{tag}-{i}")).collect(),
            host_ends: (0..nodes).map(|i| format!("{LINK_PREFIX}{tag}h{i}")).collect(),
            bridge: format!("{LINK_PREFIX}{tag}b"),
            subnet,
        };
        // Built step by step with `network` already owning the names: a failed step drops it,
        // which removes what the earlier steps made.
        ip(&["link", "add", &network.bridge, "type", "bridge"]);
        ip(&["addr", "add", &format!("{}/24", network.host_address()), "dev", &network.bridge]);
        drop(claiming);
        ip(&["link", "set", &network.bridge, "up"]);
        for i in 0..nodes {
            let (namespace, host_end) = (&network.namespaces[i], &network.host_ends[i]);
            let node_end = format!("{LINK_PREFIX}{tag}n{i}");
            ip(&["netns", "add", namespace]);
            ip(&["link", "add", host_end, "type", "veth", "peer", "name", &node_end, "netns", namespace]);
            ip(&["link", "set", host_end, "master", &network.bridge]);
            ip(&["link", "set", host_end, "up"]);
            ip(&["-n", namespace, "addr", "add", &format!("{}/24", network.address(i)), "dev", &node_end]);
            ip(&["-n", namespace, "link", "set", &node_end, "up"]);
            ip(&["-n", namespace, "link", "set", "lo", "up"]);
        }
        network
    }

    /// Node `i`'s address, in its namespace.
    pub fn address(&self, i: usize) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, i as u8 + 1)
    }

    /// The bridge's address, the test's own on this network.
    pub fn host_address(&self) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, 254)
    }

    /// The command prefix that runs a program in node `i`'s namespace.
    pub fn wrapper(&self, i: usize) -> Vec<String> {
        ["ip", "netns", "exec", &self.namespaces[i]].iter().map(|s| s.to_string()).collect()
    }

    /// Takes node `i`'s link down: nothing crosses between it and the bridge.
    pub fn cut(&self, i: usize) {
        ip(&["link", "set", &self.host_ends[i], "down"]);
    }

    /// Brings node `i`'s link back up.
    pub fn heal(&self, i: usize) {
        ip(&["link", "set", &self.host_ends[i], "up"]);
    }

    /// A TCP connection to `addr` made from inside node `i`'s namespace (a socket stays in the
    /// namespace it was made in): it reaches the node's own address while its link is cut.
    pub fn connect(&self, i: usize, addr: &str) -> TcpStream {
        let path = format!("/run/netns/{}", self.namespaces[i]);
        let namespace = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let addr = addr.to_string();
        // setns moves only the calling thread: a thread of its own, which ends with the call.
        std::thread::spawn(move || {
            nix::sched::setns(&namespace, nix::sched::CloneFlags::CLONE_NEWNET).expect("entering the namespace");
            TcpStream::connect(&addr).unwrap_or_else(|e| panic!("connecting to {addr} in its namespace: {e}"))
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end in it, and with it the pair.
        for namespace in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", namespace]).output();
        }
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).output();
    }
}

/// Runs `ip args`; panics with its error output if it fails.
fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("running ip");
    assert!(output.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr));
}

fn ip_output(args: &[&str]) -> String {
    let output = Command::new("ip").args(args).output().expect("running ip");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A /24 of 198.18.0.0/15 that no interface of this namespace has an address in, starting from
/// one drawn from `tag`.
fn free_subnet(tag: &str) -> [u8; 3] {
    let addresses = ip_output(&["-4", "-o", "addr", "show"]);
    let start = tag.bytes().fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize)) % 512;
    (0..512)
        .map(|k| {
            let n = (start + k) % 512;
            [198, 18 + (n / 256) as u8, (n % 256) as u8]
        })
        .find(|[a, b, c]| !addresses.contains(&format!(" {a}.{b}.{c}.")))
        .expect("a free /24 in 198.18.0.0/15")
}

/// Removes the namespaces and bridges whose creating process no longer runs.
fn remove_stale() {
    let dead = |owner: &str| {
        usize::from_str_radix(owner, 36).is_ok_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
    };
    for line in ip_output(&["netns", "list"]).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        if let Some(owner) = name.strip_prefix(NAMESPACE_PREFIX).and_then(|rest| rest.split('-').next())
            && dead(owner)
        {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
    for line in ip_output(&["-o", "link", "show", "type", "bridge"]).lines() {
        // "7: slc-abc-0b: <BROADCAST,...": the name is the second field.
        let name = line.split(": ").nth(1).unwrap_or_default().split('@').next().unwrap_or_default();
        if let Some(owner) = name.strip_prefix(LINK_PREFIX).and_then(|rest| rest.split('-').next())
            && dead(owner)
        {
            let _ = Command::new("ip").args(["link", "del", name]).output();
        }
    }
}

/// The test process's effective user id (`Uid:` in /proc/self/status: real, effective, ...).
fn effective_uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let uids = status.lines().find_map(|l| l.strip_prefix("Uid:")).expect("a Uid line");
    uids.split_whitespace().nth(1).and_then(|uid| uid.parse().ok()).expect("an effective uid")
}

fn base36(mut n: usize) -> String {
    let mut digits = Vec::new();
    loop {
        digits.push(std::char::from_digit((n % 36) as u32, 36).expect("a digit"));
        n /= 36;
        if n == 0 {
            return digits.iter().rev().collect();
        }
    }
}
