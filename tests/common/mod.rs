//! Shared test harness: start, stop, `kill -9`, pause and resume the real `sluice` binary on
//! an ephemeral loopback port with a temporary data directory, run the Python client driver and
//! the Java one (`tests/java`, with Kafka's tools and broker on its classpath), and speak the
//! Kafka protocol raw from Rust. `cluster` starts several nodes as one metadata quorum,
//! `netns` puts them in network namespaces whose links can be cut, `jepsen` runs a workload
//! and checks what it produced and read.
#![allow(dead_code)] // Each test file uses its own subset.

pub mod cluster;
pub mod jepsen;
pub mod netns;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

const READY_DEADLINE: Duration = Duration::from_secs(60);
const STOP_DEADLINE: Duration = Duration::from_secs(30);

/// Fresh ports a first start is tried on when another process took one of them in between.
const PORT_ATTEMPTS: usize = 5;

/// A loopback port free now that the kernel never hands out by itself: outside its ephemeral
/// range (`net.ipv4.ip_local_port_range`), from which it picks the local port of every
/// connecting socket and of every bind to port 0. A broker restarted on a port from that range
/// may find it taken by any connection made on the machine meanwhile (a restart in CI was
/// refused so: "Address already in use"); a port picked here stays free while its broker is
/// down, unless a process binds it by number. No port is handed out twice in one test process.
pub fn unassigned_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    static HANDED_OUT: Mutex<std::collections::BTreeSet<u16>> = Mutex::new(std::collections::BTreeSet::new());
    // Above the ports well-known services are configured on.
    const LOWEST: u32 = 10_000;
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let bounds: Vec<u32> = range.split_whitespace().filter_map(|p| p.parse().ok()).collect();
    let (ephemeral_low, ephemeral_high) = match bounds[..] {
        [low, high] => (low.max(LOWEST), high.max(LOWEST - 1)),
        _ => (32768, 60999),
    };
    // The ports below the range, then those above it, numbered from 0.
    let below = ephemeral_low - LOWEST;
    let candidates = below + (65535 - ephemeral_high);
    assert!(candidates > 1000, "hardly a port outside the kernel's ephemeral range ({range})");
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    for _ in 0..1000 {
        let nth =
            (std::collections::hash_map::RandomState::new().build_hasher().finish() % u64::from(candidates)) as u32;
        let port = u16::try_from(if nth < below { LOWEST + nth } else { ephemeral_high + 1 + (nth - below) })
            .expect("a port number");
        if !handed_out.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.insert(port);
            return port;
        }
    }
    panic!("no free loopback port outside the kernel's ephemeral range ({range}) in 1000 tries")
}

/// Serialises the tests of one file that run several client processes each: on a 2-core CI
/// machine, many at once starve them of CPU until sessions time out.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A running broker process. Dropping it kills the process.
pub struct Broker {
    child: Option<Child>,
    addr: String,
    admin_addr: Option<String>,
    data_dir: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    wrapper: Vec<String>,
    stderr: Arc<Mutex<Vec<u8>>>,
    _temp: Option<tempfile::TempDir>,
}

/// Where a broker listens and what it runs under, when not the defaults (loopback, ports
/// picked by the kernel, run directly): the cluster harness places nodes in network namespaces.
#[derive(Clone, Debug, Default)]
pub struct Placement {
    /// `--listen` of the first start (a restart binds the address the first start bound).
    pub listen: Option<String>,
    /// `--admin` of the first start.
    pub admin: Option<String>,
    /// A command the broker runs under, e.g. `ip netns exec NAME`.
    pub wrapper: Vec<String>,
}

impl Broker {
    /// Starts a broker with `--cores cores` and `extra` flags on a fresh data directory.
    pub fn start(cores: usize, extra: &[&str]) -> Broker {
        Broker::start_with_env(cores, extra, &[])
    }

    /// Like [`Broker::start`], with environment variables for the broker process.
    pub fn start_with_env(cores: usize, extra: &[&str], env: &[(&str, &str)]) -> Broker {
        let temp = tempfile::tempdir().expect("temp dir");
        let mut broker = Broker::new(temp.path(), cores, extra, env, Placement::default());
        broker._temp = Some(temp);
        broker.spawn();
        broker
    }

    /// Starts a broker on the data directory `data_dir`, which the caller owns.
    pub fn start_in(data_dir: &Path, cores: usize, extra: &[&str]) -> Broker {
        let mut broker = Broker::new(data_dir, cores, extra, &[], Placement::default());
        broker.spawn();
        broker
    }

    /// Starts a broker on a fresh data directory as `placement` says; `Err` holds the reason
    /// (and stderr) when it exited before it was ready.
    pub fn try_start_placed(cores: usize, extra: &[&str], placement: Placement) -> Result<Broker, String> {
        let temp = tempfile::tempdir().expect("temp dir");
        let mut broker = Broker::new(temp.path(), cores, extra, &[], placement);
        broker._temp = Some(temp);
        broker.try_spawn()?;
        Ok(broker)
    }

    fn new(data_dir: &Path, cores: usize, extra: &[&str], env: &[(&str, &str)], placement: Placement) -> Broker {
        let mut args = vec!["--cores".to_string(), cores.to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        Broker {
            child: None,
            addr: placement.listen.unwrap_or_default(),
            admin_addr: placement.admin,
            data_dir: data_dir.to_path_buf(),
            args,
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            wrapper: placement.wrapper,
            stderr: Arc::new(Mutex::new(Vec::new())),
            _temp: None,
        }
    }

    fn spawn(&mut self) {
        if let Err(reason) = self.try_spawn() {
            panic!("{reason}")
        }
    }

    /// Starts the process. A first start picks the ports not given (see [`unassigned_port`]),
    /// and picks new ones if another process took one before the broker bound it; a restart
    /// binds the ports of the first start, as a supervisor's restart would.
    fn try_spawn(&mut self) -> Result<(), String> {
        let (pick_listen, pick_admin) = (self.addr.is_empty(), self.admin_addr.is_none());
        let mut attempt = 1;
        loop {
            if pick_listen {
                self.addr = format!("127.0.0.1:{}", unassigned_port());
            }
            if pick_admin {
                self.admin_addr = Some(format!("127.0.0.1:{}", unassigned_port()));
            }
            match self.try_spawn_once() {
                // Not the controller listener's: its port is the cluster's to pick again.
                Err(reason)
                    if (pick_listen || pick_admin)
                        && reason.contains("Address already in use")
                        && !reason.contains("binding the controller listener")
                        && attempt < PORT_ATTEMPTS =>
                {
                    attempt += 1
                }
                result => return result,
            }
        }
    }

    fn try_spawn_once(&mut self) -> Result<(), String> {
        // A controller-only node has no client listener to be given.
        let controller_only = self.args.windows(2).any(|w| w == ["--role", "controller"]);
        let listen: &[&str] = if controller_only { &[] } else { &["--listen", &self.addr] };
        let admin = self.admin_addr.as_deref().expect("the admin port is picked before a start");
        let mut command = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(env!("CARGO_BIN_EXE_sluice"));
                command
            }
            None => Command::new(env!("CARGO_BIN_EXE_sluice")),
        };
        let mut child = command
            .arg("serve")
            .args(listen)
            .args(["--admin", admin, "--data-dir"])
            .arg(&self.data_dir)
            .args(&self.args)
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting sluice");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        self.stderr = log.clone();
        let stderr_reader = std::thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut line = Vec::new();
            while reader.read_until(b'\n', &mut line).map(|n| n > 0).unwrap_or(false) {
                log.lock().unwrap().extend_from_slice(&line);
                line.clear();
            }
        });
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("sluice ready: ") {
                    // A controller-only node has no Kafka address.
                    let kafka = rest.strip_prefix("listening on ").unwrap_or_default();
                    let kafka = kafka.split(',').next().unwrap_or_default().trim().to_string();
                    let admin = rest.split_once(", admin on ").map(|(_, a)| a.trim().to_string());
                    let _ = ready_tx.send((kafka, admin));
                }
            }
        });
        // A broker that exits before it is ready (a busy port, bad settings) fails at once.
        let start = Instant::now();
        let (addr, admin) = loop {
            match ready_rx.recv_timeout(Duration::from_millis(50)) {
                Ok(ready) => break ready,
                Err(_) if start.elapsed() > READY_DEADLINE => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("broker did not become ready; stderr:\n{}", self.stderr_text()));
                }
                Err(_) => {
                    if let Some(status) = child.try_wait().expect("try_wait") {
                        // Its last words may still be in the pipe, which its exit closed.
                        let _ = stderr_reader.join();
                        return Err(format!(
                            "broker exited with {status} before it was ready; stderr:\n{}",
                            self.stderr_text()
                        ));
                    }
                }
            }
        };
        self.child = Some(child);
        self.addr = addr;
        self.admin_addr = admin;
        Ok(())
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The admin HTTP address (Prometheus `/metrics`).
    pub fn admin_addr(&self) -> &str {
        self.admin_addr.as_deref().expect("the broker serves an admin listener")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the broker is running").id()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn terminate(&mut self) {
        let status = self.stop();
        assert!(status.success(), "broker exited with {status}; stderr:\n{}", self.stderr_text());
    }

    /// SIGTERM, then waits for the process to exit, however it does.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("broker running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        wait_with_deadline(&mut child, STOP_DEADLINE)
            .unwrap_or_else(|| panic!("broker ignored SIGTERM; stderr:\n{}", self.stderr_text()))
    }

    /// GET `path` from the admin listener: (status line, body).
    pub fn http_get(&self, path: &str) -> (String, String) {
        let mut stream = TcpStream::connect(self.admin_addr()).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
        (head.lines().next().unwrap().to_string(), body.to_string())
    }

    /// Waits up to `deadline` for the broker to exit on its own; `None` if it is still running
    /// (it is then killed).
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take().expect("broker running");
        wait_with_deadline(&mut child, deadline)
    }

    /// SIGKILL: no chance to flush or mark anything.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("broker running");
        child.kill().expect("SIGKILL");
        child.wait().expect("reaping the broker");
    }

    /// SIGSTOP: the process freezes with its sockets open, as a long GC pause or a stalled VM.
    /// Returns once every thread of it has stopped (the signal is delivered asynchronously: a
    /// request sent right after `kill` returned could otherwise still be read and answered).
    pub fn pause(&self) {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
        let tasks = format!("/proc/{}/task", self.pid());
        wait_until(Duration::from_secs(10), "every thread of the broker stopped", || {
            std::fs::read_dir(&tasks).expect("the broker's threads").all(|task| {
                let stat = std::fs::read_to_string(task.expect("a thread").path().join("stat")).unwrap_or_default();
                // `pid (comm) state ...`: T is stopped by a signal.
                stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
            })
        });
    }

    /// SIGCONT after [`Broker::pause`].
    pub fn resume(&self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        nix::sys::signal::kill(pid, signal).unwrap_or_else(|e| panic!("{signal}: {e}"));
    }

    /// Starts the broker again on the same data directory (after `terminate` or `kill9`).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the broker before restarting it");
        self.spawn();
    }

    /// Sets an environment variable for the broker's next starts (a test hook, say).
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.push((key.to_string(), value.to_string()));
    }

    /// Adds flags to the broker's next starts (later ones win: `--set` a setting again).
    pub fn add_args(&mut self, args: &[&str]) {
        self.args.extend(args.iter().map(|a| a.to_string()));
    }

    /// Whether the process is still running (it must survive bad input).
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().expect("try_wait").is_none())
    }
}

/// Lines of a broker's log that a failing test prints: its last words are what explain it.
const LOG_LINES_ON_PANIC: usize = 200;

impl Drop for Broker {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.stderr_text();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_LINES_ON_PANIC)..];
            eprintln!(
                "broker at {} ({}), last {} lines of its log:\n{}",
                self.addr,
                self.data_dir.display(),
                tail.len(),
                tail.join("\n")
            );
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Polls `child` until it exits or `deadline` passes.
fn wait_with_deadline(child: &mut Child, deadline: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a command with a deadline, feeding `stdin`; returns (success, stdout, stderr). The
/// command runs in its own process group, killed whole at the end, so that a helper process it
/// left behind can neither outlive the test nor hold its output open.
pub fn run_with_deadline(command: Command, stdin: &[u8], deadline: Duration) -> (bool, String, String) {
    let mut running = Running::spawn(command);
    let mut input = running.child.stdin.take().expect("piped stdin");
    let stdin = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let result = running.finish(deadline);
    let _ = writer.join();
    result
}

/// A command running in its own process group while the test does other things, its output
/// collected; [`Running::finish`] closes its stdin and waits for it. Dropped unfinished (a test
/// that panicked), it kills the whole group.
pub struct Running {
    child: Child,
    /// Its stdout and stderr as they arrive; taken by `finish`.
    output: Option<(Collected, Collected)>,
}

/// The bytes a pipe delivered so far, read on a thread of its own until it closes.
struct Collected {
    bytes: Arc<Mutex<Vec<u8>>>,
    reader: std::thread::JoinHandle<()>,
}

impl Collected {
    fn start(mut stream: impl Read + Send + 'static) -> Collected {
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let sink = bytes.clone();
        let reader = std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            while let Ok(n @ 1..) = stream.read(&mut chunk) {
                sink.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
        Collected { bytes, reader }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes.lock().unwrap()).into_owned()
    }

    /// Everything, once the pipe has closed.
    fn finish(self) -> String {
        let _ = self.reader.join();
        String::from_utf8_lossy(&self.bytes.lock().unwrap()).into_owned()
    }
}

impl Running {
    pub fn spawn(mut command: Command) -> Running {
        use std::os::unix::process::CommandExt;
        let mut child = command
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning command");
        let out = Collected::start(child.stdout.take().expect("piped stdout"));
        let err = Collected::start(child.stderr.take().expect("piped stderr"));
        Running { child, output: Some((out, err)) }
    }

    /// What the command printed on stdout so far (it keeps running).
    pub fn stdout_so_far(&self) -> String {
        self.output.as_ref().expect("still running").0.text()
    }

    fn kill_group(&mut self) {
        let group = nix::unistd::Pid::from_raw(-(self.child.id() as i32));
        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
    }

    /// Closes stdin (if still open), waits until `deadline` for an exit, then kills the whole
    /// process group; returns (success, stdout, stderr) and panics on a timeout.
    pub fn finish(mut self, deadline: Duration) -> (bool, String, String) {
        drop(self.child.stdin.take());
        let status = wait_with_deadline(&mut self.child, deadline);
        self.kill_group();
        let (out, err) = self.output.take().expect("finished once");
        let (out, err) = (out.finish(), err.finish());
        let Some(status) = status else {
            panic!("command timed out after {deadline:?}\nstdout:\n{out}\nstderr:\n{err}");
        };
        (status.success(), out, err)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.output.is_some() {
            self.kill_group();
            let _ = self.child.wait();
        }
    }
}

/// Which Python venv (set up by `scripts/test`) a driver runs in.
#[derive(Clone, Copy)]
pub enum Clients {
    /// Current kafka-python and confluent-kafka.
    Current,
    /// The older kafka-python that Linux distributions still ship.
    Old,
}

fn python(clients: Clients) -> PathBuf {
    let (variable, venv) = match clients {
        Clients::Current => ("SLUICE_PYTHON", ".venv"),
        Clients::Old => ("SLUICE_PYTHON_OLD", ".venv-old"),
    };
    std::env::var_os(variable)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(venv).join("bin/python"))
}

/// Runs `tests/driver/<script>.py --bootstrap ADDR args...` with the current clients.
pub fn driver(broker: &Broker, script: &str, args: &[&str], deadline: Duration) -> serde_json::Value {
    driver_with(Clients::Current, broker, script, args, deadline)
}

/// Runs a driver script; panics unless it succeeds. Returns the JSON summary it prints last.
pub fn driver_with(
    clients: Clients,
    broker: &Broker,
    script: &str,
    args: &[&str],
    deadline: Duration,
) -> serde_json::Value {
    let mut command = script_command(clients, script);
    command.args(["--bootstrap", broker.addr()]).args(args);
    json_summary(&format!("driver {script}"), run_with_deadline(command, b"", deadline), || {
        format!("broker stderr:\n{}", broker.stderr_text())
    })
}

/// `python tests/driver/<script>.py` in the venv of `clients`.
fn script_command(clients: Clients, script: &str) -> Command {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/driver").join(format!("{script}.py"));
    let mut command = Command::new(python(clients));
    command.arg(path).env("PYTHONUNBUFFERED", "1");
    command
}

/// The JSON summary a driver run (`run_with_deadline`'s result) printed last; panics, with its
/// output and `context()` (e.g. a broker's log), unless it succeeded.
fn json_summary(
    what: &str,
    (ok, out, err): (bool, String, String),
    context: impl FnOnce() -> String,
) -> serde_json::Value {
    assert!(ok, "{what} failed\nstdout:\n{out}\nstderr:\n{err}\n{}", context());
    let last = out.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{what} printed no JSON summary ({e}):\n{out}"))
}

/// The classpath of the Java test driver: its classes, then Kafka's jars (client, Streams,
/// tools, broker) as `scripts/test` resolved them with Maven.
pub fn java_classpath() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/java/target");
    let jars = std::fs::read_to_string(root.join("classpath.txt"))
        .unwrap_or_else(|e| panic!("{}/classpath.txt: {e}; run scripts/test to build the Java driver", root.display()));
    format!("{}:{}", root.join("classes").display(), jars.trim())
}

/// A `java` command running `main_class` on the driver's classpath. The JVM is sized for short
/// test runs on a small machine: serial GC, the quick compiler only.
pub fn java_command(main_class: &str) -> Command {
    let mut command = Command::new(std::env::var_os("SLUICE_JAVA").unwrap_or_else(|| "java".into()));
    command
        .args(["-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xmx512m", "-cp"])
        .arg(java_classpath())
        .arg(main_class);
    command
}

/// Runs a scenario of the Java driver (`tests/java`, `sluice.Driver SCENARIO --bootstrap ADDR
/// args...`); panics unless it succeeds. Returns the JSON summary it prints last.
pub fn java_driver(broker: &Broker, scenario: &str, args: &[&str], deadline: Duration) -> serde_json::Value {
    let mut command = java_command("sluice.Driver");
    command.arg(scenario).args(["--bootstrap", broker.addr()]).args(args);
    json_summary(&format!("java driver {scenario}"), run_with_deadline(command, b"", deadline), || {
        format!("broker stderr:\n{}", broker.stderr_text())
    })
}

/// Runs the `sluice` CLI with `args`, feeding `stdin`; returns (success, stdout, stderr).
pub fn cli(args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command.args(args);
    run_with_deadline(command, stdin.as_bytes(), Duration::from_secs(60))
}

/// The sum of every sample of the broker's `/metrics` whose series starts with `prefix`.
pub fn metric_total(broker: &Broker, prefix: &str) -> f64 {
    let (_, body) = broker.http_get("/metrics");
    body.lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Polls `condition` every 20 ms until it holds; panics with `what` after `deadline`.
pub fn wait_until(deadline: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < deadline, "timed out after {deadline:?} waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A raw Kafka protocol connection for tests that need exact requests or bad bytes.
pub struct Raw {
    pub stream: TcpStream,
    correlation_id: i32,
}

impl Raw {
    pub fn connect(addr: &str) -> Raw {
        Raw::from_stream(TcpStream::connect(addr).expect("connecting"))
    }

    /// A connection made elsewhere (e.g. inside a network namespace).
    pub fn from_stream(stream: TcpStream) -> Raw {
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        stream.set_nodelay(true).unwrap();
        Raw { stream, correlation_id: 0 }
    }

    /// Sends `request` at `version` without reading an answer (acks=0 produces get none).
    pub fn send_only<R: Request>(&mut self, request: &R, version: i16) {
        self.correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("sluice-tests")));
        let mut body = BytesMut::new();
        header.encode(&mut body, R::header_version(version)).unwrap();
        request.encode(&mut body, version).unwrap();
        self.send_frame(&body);
    }

    /// Sends `request` at `version` and decodes the response.
    pub fn send<R: Request>(&mut self, request: &R, version: i16) -> R::Response {
        self.send_only(request, version);
        self.receive::<R>(version)
    }

    /// Reads and decodes the response to the last request sent with [`Raw::send_only`].
    pub fn receive<R: Request>(&mut self, version: i16) -> R::Response {
        let mut response = self.read_frame().expect("a response frame");
        let header = ResponseHeader::decode(&mut response, R::Response::header_version(version)).unwrap();
        assert_eq!(header.correlation_id, self.correlation_id);
        let decoded = R::Response::decode(&mut response, version).unwrap();
        assert_eq!(response.remaining(), 0, "bytes left after the response");
        decoded
    }

    pub fn send_frame(&mut self, body: &[u8]) {
        let mut frame = BytesMut::with_capacity(4 + body.len());
        frame.put_i32(body.len() as i32);
        frame.extend_from_slice(body);
        self.stream.write_all(&frame).expect("writing frame");
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("writing bytes");
    }

    /// Reads one frame; `None` when the broker closed the connection.
    pub fn read_frame(&mut self) -> Option<Bytes> {
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size).ok()?;
        let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
        self.stream.read_exact(&mut body).ok()?;
        Some(Bytes::from(body))
    }

    /// True when the broker closed the connection (EOF or reset), false when it answered.
    /// Panics when it did neither within the read timeout: a broker that hangs is not one
    /// that closed.
    pub fn is_closed_by_broker(&mut self) -> bool {
        let mut byte = [0u8; 1];
        match self.stream.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                panic!("the broker neither answered nor closed the connection: it hangs")
            }
            Err(_) => true,
        }
    }
}

/// Fetch v11 of partition 0 of `topic` from offset 0, up to `max_bytes`, waiting up to
/// `max_wait_ms` for data.
pub fn fetch_request(topic: &str, max_bytes: i32, max_wait_ms: i32) -> kafka_protocol::messages::FetchRequest {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    kafka_protocol::messages::FetchRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(max_bytes)
        .with_session_epoch(-1)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(topic_name(topic))
                .with_partitions(vec![FetchPartition::default().with_partition(0).with_partition_max_bytes(max_bytes)]),
        ])
}

/// One v2 batch of uncompressed records with the given values, stamped now (records stamped
/// long ago are past the default 7-day retention, and may be deleted once their segment closes).
pub fn batch(values: &[&[u8]]) -> Bytes {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970");
    batch_at(values, now.as_millis() as i64)
}

/// Like [`batch`], every record stamped `timestamp`.
pub fn batch_at(values: &[&[u8]], timestamp: i64) -> Bytes {
    let records: Vec<(Option<Bytes>, Option<Bytes>)> =
        values.iter().map(|v| (None, Some(Bytes::copy_from_slice(v)))).collect();
    sluice::protocol::records::encode_batch(&records, timestamp)
}

/// Records with the given offset deltas and values `v<i>`, as a batch payload (uncompressed).
pub fn record_payload(deltas: &[i32]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, &delta) in deltas.iter().enumerate() {
        sluice::storage::records::write_record(&mut out, 0, delta, None, Some(format!("v{i}").as_bytes()), &[0]);
    }
    out
}

/// A CRC-valid batch with these header fields around `payload`, for bad-input tests: the
/// CRC passes, so whatever is refused is refused for what the header or records say.
pub fn craft_batch(attributes: i16, last_offset_delta: i32, records_count: i32, payload: &[u8]) -> Bytes {
    let mut header = sluice::storage::batch::BatchHeader::parse(&batch(&[b"x"])).expect("a valid batch");
    header.attributes = attributes;
    header.last_offset_delta = last_offset_delta;
    header.records_count = records_count;
    Bytes::from(sluice::storage::batch::assemble(&header, payload))
}

/// Decodes every batch in `bytes`, checking each CRC; returns (offset, value) per record.
pub fn decode(bytes: &Bytes) -> Vec<(i64, Vec<u8>)> {
    let mut rest = bytes.clone();
    let mut out = Vec::new();
    while rest.has_remaining() {
        let size = 12 + i32::from_be_bytes(rest[8..12].try_into().unwrap()) as usize;
        assert!(size <= rest.len(), "partial batch returned: {size} > {}", rest.len());
        let batch = rest.split_to(size);
        let crc = u32::from_be_bytes(batch[17..21].try_into().unwrap());
        assert_eq!(crc32c::crc32c(&batch[21..]), crc, "batch CRC");
        let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut batch.clone()).unwrap();
        out.extend(set.records.into_iter().map(|r| (r.offset, r.value.unwrap_or_default().to_vec())));
    }
    out
}

fn produce_request(topic: &str, partition: i32, records: Bytes, acks: i16) -> kafka_protocol::messages::ProduceRequest {
    produce_request_to(topic, vec![(partition, records)], acks)
}

/// A Produce request (10 s timeout) of one records blob to each partition named.
pub fn produce_request_to(
    topic: &str,
    partitions: Vec<(i32, Bytes)>,
    acks: i16,
) -> kafka_protocol::messages::ProduceRequest {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    let partition_data = partitions
        .into_iter()
        .map(|(partition, records)| PartitionProduceData::default().with_index(partition).with_records(Some(records)))
        .collect();
    kafka_protocol::messages::ProduceRequest::default().with_acks(acks).with_timeout_ms(10_000).with_topic_data(vec![
        TopicProduceData::default().with_name(topic_name(topic)).with_partition_data(partition_data),
    ])
}

pub fn topic_name(s: &str) -> kafka_protocol::messages::TopicName {
    kafka_protocol::messages::TopicName(StrBytes::from_string(s.to_string()))
}

impl Raw {
    /// CreateTopics v7 with one replica per partition; returns the error code.
    pub fn create_topic(&mut self, name: &str, partitions: i32, configs: &[(&str, &str)]) -> i16 {
        self.create_replicated_topic(name, partitions, 1, configs)
    }

    /// CreateTopics v7 with `replication_factor`; returns the error code.
    pub fn create_replicated_topic(
        &mut self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &[(&str, &str)],
    ) -> i16 {
        use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
        let topic = CreatableTopic::default()
            .with_name(topic_name(name))
            .with_num_partitions(partitions)
            .with_replication_factor(replication_factor)
            .with_configs(
                configs
                    .iter()
                    .map(|(k, v)| {
                        CreatableTopicConfig::default()
                            .with_name(StrBytes::from_string(k.to_string()))
                            .with_value(Some(StrBytes::from_string(v.to_string())))
                    })
                    .collect(),
            );
        let request =
            kafka_protocol::messages::CreateTopicsRequest::default().with_topics(vec![topic]).with_timeout_ms(10_000);
        self.send(&request, 7).topics[0].error_code
    }

    /// Produce v9 of one records blob to one partition: (error code, base offset).
    pub fn produce(&mut self, topic: &str, partition: i32, records: Bytes, acks: i16) -> (i16, i64) {
        assert_ne!(acks, 0, "acks=0 gets no answer: use produce_acks0");
        let response = self.send(&produce_request(topic, partition, records, acks), 9);
        let p = &response.responses[0].partition_responses[0];
        (p.error_code, p.base_offset)
    }

    /// Produce v9 with acks=0: the broker answers nothing.
    pub fn produce_acks0(&mut self, topic: &str, partition: i32, records: Bytes) {
        self.send_only(&produce_request(topic, partition, records, 0), 9);
    }

    /// Fetch v11 of one partition from `offset`: (error code, high watermark, records blob).
    pub fn fetch(&mut self, topic: &str, partition: i32, offset: i64, max_wait_ms: i32) -> (i16, i64, Bytes) {
        use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
        let request = kafka_protocol::messages::FetchRequest::default()
            .with_replica_id(kafka_protocol::messages::BrokerId(-1))
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(4 << 20)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default().with_topic(topic_name(topic)).with_partitions(vec![
                        FetchPartition::default()
                            .with_partition(partition)
                            .with_fetch_offset(offset)
                            .with_partition_max_bytes(1 << 20),
                    ])]);
        let response = self.send(&request, 11);
        let p = &response.responses[0].partitions[0];
        (p.error_code, p.high_watermark, p.records.clone().unwrap_or_default())
    }

    /// OffsetForLeaderEpoch v4 for partition `partition` of `topic`: (error, epoch, end offset).
    pub fn end_offset_for_epoch(&mut self, topic: &str, partition: i32, leader_epoch: i32) -> (i16, i32, i64) {
        use kafka_protocol::messages::offset_for_leader_epoch_request::{
            OffsetForLeaderPartition, OffsetForLeaderTopic,
        };
        let request = kafka_protocol::messages::OffsetForLeaderEpochRequest::default()
            .with_replica_id(kafka_protocol::messages::BrokerId(-1))
            .with_topics(vec![OffsetForLeaderTopic::default().with_topic(topic_name(topic)).with_partitions(vec![
                OffsetForLeaderPartition::default().with_partition(partition).with_leader_epoch(leader_epoch),
            ])]);
        let p = self.send(&request, 4).topics[0].partitions[0].clone();
        (p.error_code, p.leader_epoch, p.end_offset)
    }

    /// Every record of a partition, from offset 0 to the high watermark, CRC-checked.
    pub fn fetch_all(&mut self, topic: &str, partition: i32) -> Vec<(i64, Vec<u8>)> {
        self.fetch_from(topic, partition, 0)
    }

    /// Every record of `topic`-`partition` from `start` up to the high watermark.
    pub fn fetch_from(&mut self, topic: &str, partition: i32, start: i64) -> Vec<(i64, Vec<u8>)> {
        let mut records: Vec<(i64, Vec<u8>)> = Vec::new();
        loop {
            let offset = records.last().map_or(start, |r| r.0 + 1);
            let (error, high_watermark, bytes) = self.fetch(topic, partition, offset, 0);
            assert_eq!(error, 0, "fetch {topic}-{partition} at {offset}");
            if offset >= high_watermark {
                return records;
            }
            let batch = decode(&bytes);
            assert!(!batch.is_empty(), "no progress at offset {offset} below high watermark {high_watermark}");
            records.extend(batch.into_iter().filter(|r| r.0 >= offset));
        }
    }
}

/// A TCP proxy that forwards connections to a broker and keeps every request frame the
/// clients send (the bytes after the size prefix): the fuzzers' seed corpora are captured
/// this way from the real clients. Start it before the broker, and start the broker with
/// `--advertise` set to [`Recorder::addr`], so that clients come back through it after
/// their bootstrap.
pub struct Recorder {
    listener: std::net::TcpListener,
    frames: Arc<Mutex<Vec<Bytes>>>,
}

impl Recorder {
    pub fn bind() -> Recorder {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding the recorder");
        Recorder { listener, frames: Arc::new(Mutex::new(Vec::new())) }
    }

    pub fn addr(&self) -> String {
        self.listener.local_addr().expect("recorder address").to_string()
    }

    /// Forwards every connection to `upstream` from now on, on background threads.
    pub fn forward_to(&self, upstream: &str) {
        let listener = self.listener.try_clone().expect("cloning the listener");
        let frames = self.frames.clone();
        let upstream = upstream.to_string();
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let Ok(broker) = TcpStream::connect(&upstream) else { continue };
                let (mut client_in, mut broker_in) = (client.try_clone().unwrap(), broker.try_clone().unwrap());
                let (mut client_out, mut broker_out) = (client, broker);
                let frames = frames.clone();
                std::thread::spawn(move || {
                    let mut size = [0u8; 4];
                    while client_in.read_exact(&mut size).is_ok() {
                        let mut body = vec![0u8; i32::from_be_bytes(size).max(0) as usize];
                        if client_in.read_exact(&mut body).is_err() {
                            break;
                        }
                        let forwarded = broker_out.write_all(&size).and_then(|()| broker_out.write_all(&body));
                        frames.lock().unwrap().push(Bytes::from(body));
                        if forwarded.is_err() {
                            break;
                        }
                    }
                    let _ = broker_out.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut broker_in, &mut client_out);
                    let _ = client_out.shutdown(std::net::Shutdown::Write);
                });
            }
        });
    }

    /// The request frames recorded so far, in arrival order per connection.
    pub fn frames(&self) -> Vec<Bytes> {
        self.frames.lock().unwrap().clone()
    }
}

/// The metadata image in a broker's data dir (its metadata log, read as it is, without
/// changing it), as JSON: what `metadata.json` held before the log.
pub fn metadata_image(data_dir: &Path) -> serde_json::Value {
    let image = sluice::cluster::quorum::store::read_image(data_dir).expect("reading the metadata log");
    serde_json::to_value(image).unwrap()
}
