//! The broker's life whatever clients do: a panic ends the process at once (a supervisor
//! restarts it), SIGTERM finishes in bounded time, and a restart right after a stop binds
//! its port even while a client that was connected at the stop still holds its end.

mod common;

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::{Broker, Raw, batch, metric_total, wait_until};
use kafka_protocol::messages::{ApiVersionsRequest, RequestHeader};
use kafka_protocol::protocol::{Encodable, Request, StrBytes};

/// How long the broker may take to exit once it should.
const EXIT_DEADLINE: Duration = Duration::from_secs(20);

/// One request frame body (without its size) from client `client_id`.
fn request_body<R: Request>(request: &R, version: i16, correlation_id: i32, client_id: &str) -> Bytes {
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_string(client_id.to_string())));
    let mut body = BytesMut::new();
    header.encode(&mut body, R::header_version(version)).unwrap();
    request.encode(&mut body, version).unwrap();
    body.freeze()
}

#[test]
fn a_panic_ends_the_process_at_once() {
    for cores in [1, 2] {
        let mut broker = Broker::start_with_env(cores, &[], &[("SLUICE_TEST_PANIC_CLIENT_ID", "panic-please")]);
        // A connection on every shard, so that one of them is served by a shard that lives on.
        let mut bystanders: Vec<Raw> = (0..4 * cores).map(|_| Raw::connect(broker.addr())).collect();
        for raw in &mut bystanders {
            raw.send(&ApiVersionsRequest::default(), 3);
        }
        let mut culprit = Raw::connect(broker.addr());
        culprit.send_frame(&request_body(&ApiVersionsRequest::default(), 3, 1, "panic-please"));
        let status = broker.wait_exit(EXIT_DEADLINE).unwrap_or_else(|| {
            panic!("--cores {cores}: the broker stayed up after a panic; stderr:\n{}", broker.stderr_text())
        });
        assert_eq!(status.code(), Some(101), "--cores {cores}: exit status; stderr:\n{}", broker.stderr_text());
        assert!(broker.stderr_text().contains("test hook: panicking"), "{}", broker.stderr_text());
        assert!(!broker.data_dir().join(".clean-shutdown").exists(), "a panic is not a clean shutdown");
        // Every connection ends with the process: none hangs.
        for raw in &mut bystanders {
            assert!(raw.is_closed_by_broker());
        }
    }
}

#[test]
fn sigterm_finishes_when_a_client_vanishes_with_pipelined_requests() {
    let mut broker = Broker::start(1, &[]);
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(raw.create_topic("quiet", 1, &[]), 0);

    // Long polls on an empty partition, pipelined; then the client resets the connection, so
    // that writing the first answer fails while the others are still queued.
    let vanishing = std::net::TcpStream::connect(broker.addr()).unwrap();
    let mut frames = BytesMut::new();
    let requests = 10;
    for correlation_id in 0..requests {
        let body = request_body(&common::fetch_request("quiet", 1 << 20, 1_000), 11, correlation_id, "vanishing");
        frames.extend_from_slice(&(body.len() as i32).to_be_bytes());
        frames.extend_from_slice(&body);
    }
    let bytes_in = metric_total(&broker, "sluice_bytes_in_total");
    std::io::Write::write_all(&mut &vanishing, &frames).unwrap();
    wait_until(Duration::from_secs(10), "the broker read the pipelined requests", || {
        metric_total(&broker, "sluice_bytes_in_total") >= bytes_in + frames.len() as f64
    });
    socket2::SockRef::from(&vanishing).set_linger(Some(Duration::ZERO)).unwrap();
    drop(vanishing);
    // The long polls end; the first answer fails to go out, and the connection ends with the
    // others queued (or still running).
    wait_until(Duration::from_secs(10), "a long poll ended", || {
        metric_total(&broker, "sluice_requests_total{api=\"Fetch\"") >= 1.0
    });

    let start = Instant::now();
    broker.terminate();
    assert!(
        !broker.stderr_text().contains("did not drain in time"),
        "requests of the vanished client stayed counted in flight; stderr:\n{}",
        broker.stderr_text()
    );
    assert!(start.elapsed() < EXIT_DEADLINE);
    assert!(broker.data_dir().join(".clean-shutdown").exists());
}

#[test]
fn sigterm_finishes_when_a_client_never_reads_its_response() {
    let mut broker = Broker::start(1, &[]);
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(raw.create_topic("big", 1, &[]), 0);
    let value = vec![7u8; 100_000];
    let values: Vec<&[u8]> = (0..9).map(|_| value.as_slice()).collect();
    for _ in 0..23 {
        assert_eq!(raw.produce("big", 0, batch(&values), 1).0, 0);
    }
    // About 20 MB in one response, which this client never reads.
    let stalled = std::net::TcpStream::connect(broker.addr()).unwrap();
    let body = request_body(&common::fetch_request("big", 64 << 20, 0), 11, 1, "stalled");
    std::io::Write::write_all(&mut &stalled, &(body.len() as i32).to_be_bytes()).unwrap();
    std::io::Write::write_all(&mut &stalled, &body).unwrap();
    wait_until(Duration::from_secs(10), "the broker answered the fetch", || {
        metric_total(&broker, "sluice_requests_total{api=\"Fetch\"") >= 1.0
    });

    let start = Instant::now();
    broker.terminate();
    assert!(start.elapsed() < EXIT_DEADLINE, "shutdown took {:?}", start.elapsed());
    assert!(broker.data_dir().join(".clean-shutdown").exists());
    drop(stalled);
}

#[test]
fn a_restart_right_after_a_stop_binds_its_port_with_an_idle_client_connected() {
    let mut broker = Broker::start(2, &[]);
    let mut idle = Raw::connect(broker.addr());
    idle.send(&ApiVersionsRequest::default(), 3);
    broker.kill9();
    // The client neither reads nor closes: the broker's end of its connection lingers.
    broker.restart();

    let mut idle_again = Raw::connect(broker.addr());
    idle_again.send(&ApiVersionsRequest::default(), 3);
    broker.terminate();
    broker.restart();

    let mut raw = Raw::connect(broker.addr());
    assert_eq!(raw.create_topic("after", 1, &[]), 0);
    assert_eq!(raw.produce("after", 0, batch(&[b"works"]), 1), (0, 0));
    drop((idle, idle_again));
}

#[test]
fn a_start_refused_for_a_busy_port_keeps_the_clean_shutdown_marker() {
    let mut broker = Broker::start(1, &[]);
    broker.terminate();
    let marker = broker.data_dir().join(".clean-shutdown");
    assert!(marker.exists());

    // Another process's listener on a port: the broker must not share it. A port of its own,
    // not the one the broker just let go: a test running beside this one may take that.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = squatter.local_addr().unwrap().to_string();
    let data_dir = broker.data_dir().to_str().unwrap().to_string();
    let (ok, _, stderr) =
        common::cli(&["serve", "--listen", &addr, "--admin", "off", "--cores", "1", "--data-dir", &data_dir], "");
    assert!(!ok, "the broker started on a port another process listens on");
    assert!(stderr.contains("Address already in use"), "{stderr}");
    assert!(marker.exists(), "a refused start removed the clean-shutdown marker");
    drop(squatter);

    // The next start is a clean one: no recovery.
    broker.restart();
    assert!(!broker.stderr_text().contains("recovering"), "{}", broker.stderr_text());
}

/// The harness starts brokers on ports outside the kernel's ephemeral range, which no
/// connecting socket can take while a broker is down: a restart on a port the kernel handed
/// out by itself was refused in CI once a connection made meanwhile had taken it.
#[test]
fn brokers_get_ports_the_kernel_never_hands_out_by_itself() {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    let ephemeral: Vec<u16> = range.split_whitespace().map(|p| p.parse().unwrap()).collect();
    let mut broker = Broker::start(1, &[]);
    let port = |addr: &str| addr.rsplit(':').next().unwrap().parse::<u16>().unwrap();
    let ports = (port(broker.addr()), port(broker.admin_addr()));
    let outside = |p: u16| !(ephemeral[0]..=ephemeral[1]).contains(&p);
    assert!(outside(ports.0) && outside(ports.1), "{ports:?}, ephemeral {ephemeral:?}");
    assert_ne!(ports.0, ports.1);
    broker.kill9();
    broker.restart();
    assert_eq!((port(broker.addr()), port(broker.admin_addr())), ports, "a restart keeps its ports");
}
