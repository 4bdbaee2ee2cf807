//! What one small request costs the shard's io_uring rings, counted by the kernel: the
//! submission queue entries of each ring (`SqTail` in /proc/PID/fdinfo). Every entry is work
//! the shard prepares and the kernel takes in, and most come with a system call; glommio used
//! to cancel and re-arm its preemption timers at every turn of its loop, which cost more
//! entries than the request's own I/O (vendor/glommio/PATCHES.md, 6).

mod common;

use common::{Broker, Raw, batch};

/// Submission queue entries the broker's rings have taken in so far.
fn submissions(pid: u32) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let entry = entry.unwrap();
        if !std::fs::read_link(entry.path()).is_ok_and(|target| target.as_os_str() == "anon_inode:[io_uring]") {
            continue;
        }
        // A ring closed since the listing has no fdinfo left to read.
        let Ok(info) = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", entry.file_name().to_string_lossy()))
        else {
            continue;
        };
        let tail = info.lines().find_map(|line| line.strip_prefix("SqTail:")).expect("SqTail in a ring's fdinfo");
        total += tail.trim().parse::<u64>().unwrap();
    }
    total
}

#[test]
fn a_small_produce_request_costs_the_shard_few_ring_submissions() {
    let broker = Broker::start(1, &[]);
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(raw.create_topic("small", 1, &[]), 0);
    assert_eq!(raw.produce("small", 0, batch(&[b"first"]), 1).0, 0);
    let record = [7u8; 1024];

    // One request at a time, so that the shard goes to sleep between them, as it does under a
    // producer at 10,000 records/s with linger 0.
    const REQUESTS: u64 = 400;
    let before = submissions(broker.pid());
    for _ in 0..REQUESTS {
        assert_eq!(raw.produce("small", 0, batch(&[&record]), 1).0, 0);
    }
    let per_request = (submissions(broker.pid()) - before) as f64 / REQUESTS as f64;
    // Measured with this debug broker: 6.6 per request, 17.4 before glommio's timers and the
    // sleep's poll stayed armed (their cancellations and re-arms at every turn of its loop).
    assert!(per_request <= 10.0, "{per_request:.2} ring submissions per produce request");
}
