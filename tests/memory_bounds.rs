//! Memory stays bounded whatever clients send: hundreds of connections that announce large
//! frames and then stall or trickle hold no more than the request budget
//! (`queued.max.request.bytes`), are closed once idle (`connections.max.idle.ms`), and a
//! healthy client keeps working throughout.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Broker, Raw, batch, wait_until};

const ATTACKERS: usize = 200;
/// What each attacker announces: far more than it sends.
const ANNOUNCED_BYTES: i32 = 10_000_000;

/// The broker's resident memory.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// Connects and sends a size prefix announcing `ANNOUNCED_BYTES`, then `sent` bytes of it
/// (as many as the socket takes without waiting).
fn attacker(addr: &str, sent: usize) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_nonblocking(true).unwrap();
    let mut bytes = ANNOUNCED_BYTES.to_be_bytes().to_vec();
    bytes.resize(4 + sent, 0x5a);
    let mut written = 0;
    while written < bytes.len() {
        match (&stream).write(&bytes[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("attacker write: {e}"),
        }
    }
    stream
}

/// Whether the broker has closed `stream` (EOF or reset), without waiting.
fn closed_by_broker(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match (&*stream).read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != ErrorKind::WouldBlock,
    }
}

/// Produces one record to "steady" and reads the partition back whole.
fn healthy_round(healthy: &mut Raw, accepted: &mut Vec<(i64, Vec<u8>)>) {
    let value = format!("healthy-{}", accepted.len()).into_bytes();
    let (error, base) = healthy.produce("steady", 0, batch(&[&value]), -1);
    assert_eq!(error, 0);
    accepted.push((base, value));
    assert_eq!(&healthy.fetch_all("steady", 0), accepted);
}

#[test]
fn stalled_large_frames_hold_no_more_than_the_request_budget() {
    let budget = 16 << 20;
    let broker = Broker::start(
        2,
        &["--set", &format!("queued.max.request.bytes={budget}"), "--set", "connections.max.idle.ms=3000"],
    );
    let mut healthy = Raw::connect(broker.addr());
    assert_eq!(healthy.create_topic("steady", 1, &[]), 0);
    let mut accepted = Vec::new();
    healthy_round(&mut healthy, &mut accepted);
    let baseline = rss_bytes(broker.pid());

    // Each sends 1 MB of its 10 MB and stalls: 200 MB if the broker took it all.
    let attackers: Vec<TcpStream> = (0..ATTACKERS).map(|_| attacker(broker.addr(), 1 << 20)).collect();
    let mut peak = baseline;
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1500) {
        peak = peak.max(rss_bytes(broker.pid()));
        std::thread::sleep(Duration::from_millis(50));
    }
    let bound = budget as u64 + (32 << 20);
    assert!(peak - baseline < bound, "RSS grew by {} MiB (bound {} MiB)", (peak - baseline) >> 20, bound >> 20);

    // The stalled connections are closed as idle and give their budget back; then clients are
    // served as before. (Meanwhile the budget was spent: readers waited, as Kafka's do, and the
    // healthy connection, quiet as long, was closed as idle too.)
    wait_until(Duration::from_secs(20), "every stalled connection is closed", || {
        attackers.iter().all(closed_by_broker)
    });
    let mut healthy = Raw::connect(broker.addr());
    healthy_round(&mut healthy, &mut accepted);
}

#[test]
fn trickling_and_idle_connections_are_closed_while_a_healthy_client_works() {
    let broker = Broker::start(2, &["--set", "connections.max.idle.ms=2000"]);
    let mut healthy = Raw::connect(broker.addr());
    assert_eq!(healthy.create_topic("steady", 1, &[]), 0);
    let mut accepted = Vec::new();
    let silent = TcpStream::connect(broker.addr()).unwrap();
    silent.set_nonblocking(true).unwrap();
    let tricklers: Vec<TcpStream> = (0..ATTACKERS).map(|_| attacker(broker.addr(), 0)).collect();

    // One byte every 100 ms on each: a frame that would take days to complete.
    let baseline = rss_bytes(broker.pid());
    let start = Instant::now();
    let mut closed = false;
    while !closed {
        let grown = rss_bytes(broker.pid()).saturating_sub(baseline);
        assert!(grown < 64 << 20, "RSS grew by {} MiB", grown >> 20);
        assert!(start.elapsed() < Duration::from_secs(20), "trickling connections were never closed");
        for stream in &tricklers {
            let _ = (&*stream).write(&[0x5a]);
        }
        healthy_round(&mut healthy, &mut accepted);
        std::thread::sleep(Duration::from_millis(100));
        closed = tricklers.iter().all(closed_by_broker);
    }
    assert!(closed_by_broker(&silent), "a connection that never sent a byte is idle too");

    // A long poll longer than the idle time is not idleness.
    let (error, _, records) = healthy.fetch("steady", 0, accepted.len() as i64, 3000);
    assert_eq!((error, records.len()), (0, 0));
    healthy_round(&mut healthy, &mut accepted);
}

#[test]
fn a_client_that_stops_reading_its_responses_is_closed_as_idle() {
    let broker = Broker::start(1, &["--set", "connections.max.idle.ms=1500"]);
    let mut healthy = Raw::connect(broker.addr());
    assert_eq!(healthy.create_topic("big", 1, &[]), 0);
    let value = vec![7u8; 100_000];
    let values: Vec<&[u8]> = (0..9).map(|_| value.as_slice()).collect();
    for _ in 0..23 {
        assert_eq!(healthy.produce("big", 0, batch(&values), 1).0, 0);
    }
    drop(healthy);
    // About 20 MB in one response, which this client never reads: the socket fills up.
    let mut stalled = Raw::connect(broker.addr());
    stalled.send_only(&common::fetch_request("big", 64 << 20, 0), 11);
    wait_until(Duration::from_secs(20), "the stalled connection is closed as idle", || {
        broker.stderr_text().contains("closing idle connection")
    });
    drop(stalled);
}
