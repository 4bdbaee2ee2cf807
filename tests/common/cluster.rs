//! A cluster of `sluice` processes on this machine: nodes 1..=N, each with its own data dir and
//! ports, all voters of one metadata quorum (`--node-id`, `--controller-quorum`), or
//! controller-only voters followed by broker-only nodes ([`Cluster::start_roles`]). Either on
//! loopback (ports that the kernel never hands out by itself; a start that lost a port to
//! another process is redone on fresh ones) or each node in its own network namespace
//! ([`super::netns::Network`]), where links can be cut. Nodes are `kill -9`ed, paused, resumed
//! and restarted on their data dirs one at a time through [`Cluster::node_mut`]; dropping the
//! cluster kills every node, then tears the network down.
//!
//! Who leads the metadata quorum is read from each node's log: the Raft task logs
//! `metadata quorum leader=.. role=.. term=..` at every change of its role or leader.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::netns::Network;
use super::{Broker, Placement, Raw};

pub const NOT_CONTROLLER: i16 = 41;
pub const REQUEST_TIMED_OUT: i16 = 7;
const TOPIC_ALREADY_EXISTS: i16 = 36;
pub const INVALID_REPLICATION_FACTOR: i16 = 38;
const LEADER_NOT_AVAILABLE: i16 = 5;

/// Broker sessions short enough that a broker gone silent is fenced within a test.
pub const FAST_SESSIONS: [&str; 4] =
    ["--set", "broker.heartbeat.interval.ms=200", "--set", "broker.session.timeout.ms=2000"];

/// Fresh starts whose controller port another process took in between before giving up.
const START_ATTEMPTS: usize = 5;
/// A node's ports inside its own network namespace: nothing else binds there.
const NAMESPACE_KAFKA_PORT: u16 = 9092;
const NAMESPACE_CONTROLLER_PORT: u16 = 9093;
const NAMESPACE_ADMIN_PORT: u16 = 9644;

pub struct Cluster {
    /// Declared before `network`: the nodes are killed before their namespaces go.
    nodes: Vec<Broker>,
    /// Every voter's controller listener, started or not.
    controllers: Vec<String>,
    network: Option<Network>,
}

/// A partition as one node's Metadata describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct PartitionView {
    pub partition: i32,
    /// The leader's node id (-1: none).
    pub leader: i32,
    pub leader_epoch: i32,
    /// The replicas' node ids, in the image's order.
    pub replicas: Vec<i32>,
    /// The in-sync replicas' node ids, sorted.
    pub isr: Vec<i32>,
}

/// What a node's latest `metadata quorum` log line says.
#[derive(Clone, Debug, PartialEq)]
pub struct QuorumView {
    pub role: String,
    pub term: u64,
}

impl Cluster {
    /// `n` nodes on loopback, each with `cores` shards and the `extra` flags.
    pub fn start(n: usize, cores: usize, extra: &[&str]) -> Cluster {
        Cluster::start_voters(n, n, cores, extra)
    }

    /// A quorum of `voters` on loopback of which only the first `started` run.
    pub fn start_voters(voters: usize, started: usize, cores: usize, extra: &[&str]) -> Cluster {
        let mut last_failure = String::new();
        for _ in 0..START_ATTEMPTS {
            let controllers: Vec<String> = free_ports(voters).iter().map(|p| format!("127.0.0.1:{p}")).collect();
            match Cluster::start_nodes(&controllers, started, cores, extra, |_| Placement::default()) {
                Ok(nodes) => return Cluster { nodes, controllers, network: None },
                // Between our probe and the node's bind, another process took the port.
                Err(failure) if failure.contains("binding the controller listener") => last_failure = failure,
                Err(failure) => panic!("{failure}"),
            }
        }
        panic!("no free controller ports after {START_ATTEMPTS} attempts: {last_failure}")
    }

    /// `controllers` controller-only voters (nodes 1..=controllers, `--role controller`) and
    /// `brokers` broker-only nodes after them (`--role broker`), on loopback.
    pub fn start_roles(controllers: usize, brokers: usize, cores: usize, extra: &[&str]) -> Cluster {
        let mut last_failure = String::new();
        for _ in 0..START_ATTEMPTS {
            let ports = free_ports(controllers);
            let addresses: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
            let quorum = quorum_flag(&addresses);
            let started = (0..controllers + brokers)
                .map(|i| {
                    let id = (i + 1).to_string();
                    let role = if i < controllers { "controller" } else { "broker" };
                    let mut args = vec!["--node-id", &id, "--controller-quorum", &quorum, "--role", role];
                    args.extend_from_slice(extra);
                    Broker::try_start_placed(cores, &args, Placement::default())
                        .map_err(|failure| format!("node {}: {failure}", i + 1))
                })
                .collect();
            match started {
                Ok(nodes) => return Cluster { nodes, controllers: addresses, network: None },
                Err(failure) if failure.contains("binding the controller listener") => last_failure = failure,
                Err(failure) => panic!("{failure}"),
            }
        }
        panic!("no free controller ports after {START_ATTEMPTS} attempts: {last_failure}")
    }

    /// `n` nodes, node `i` in namespace `i` of a fresh [`Network`] with fixed ports on its own
    /// address. Panics unless run as root.
    pub fn start_in_namespaces(n: usize, cores: usize, extra: &[&str]) -> Cluster {
        let network = Network::new(n);
        let controllers: Vec<String> =
            (0..n).map(|i| format!("{}:{NAMESPACE_CONTROLLER_PORT}", network.address(i))).collect();
        let nodes = Cluster::start_nodes(&controllers, n, cores, extra, |i| Placement {
            listen: Some(format!("{}:{NAMESPACE_KAFKA_PORT}", network.address(i))),
            admin: Some(format!("{}:{NAMESPACE_ADMIN_PORT}", network.address(i))),
            wrapper: network.wrapper(i),
        })
        .unwrap_or_else(|failure| panic!("{failure}"));
        // Clients (the Python drivers) reach the nodes from the test's namespace, over the bridge.
        for node in &nodes {
            let addr = node.addr().parse().expect("an IP address and port");
            if let Err(e) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
                panic!("{addr} is unreachable over the bridge from the test's namespace: {e}");
            }
        }
        Cluster { nodes, controllers, network: Some(network) }
    }

    /// Starts the first `started` nodes of the quorum whose controller listeners are
    /// `controllers`; on a failure, the nodes started so far are killed (dropped) and the
    /// failure returned.
    fn start_nodes(
        controllers: &[String],
        started: usize,
        cores: usize,
        extra: &[&str],
        placement: impl Fn(usize) -> Placement,
    ) -> Result<Vec<Broker>, String> {
        let quorum = quorum_flag(controllers);
        (0..started)
            .map(|i| {
                let id = (i + 1).to_string();
                let mut args = vec!["--node-id", &id, "--controller-quorum", &quorum];
                args.extend_from_slice(extra);
                Broker::try_start_placed(cores, &args, placement(i))
                    .map_err(|failure| format!("node {}: {failure}", i + 1))
            })
            .collect()
    }

    /// Starts a broker-only node joining the cluster (on loopback) with the next node id,
    /// following the voters; returns its index.
    pub fn add_broker(&mut self, extra: &[&str]) -> usize {
        let id = (self.nodes.len() + 1).to_string();
        let quorum = quorum_flag(&self.controllers);
        let mut args = vec!["--node-id", &id, "--controller-quorum", &quorum, "--role", "broker"];
        args.extend_from_slice(extra);
        let node =
            Broker::try_start_placed(1, &args, Placement::default()).unwrap_or_else(|f| panic!("node {id}: {f}"));
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Node `i` (0-based; its node id is `i + 1`).
    pub fn node(&self, i: usize) -> &Broker {
        &self.nodes[i]
    }

    pub fn node_mut(&mut self, i: usize) -> &mut Broker {
        &mut self.nodes[i]
    }

    /// Node `i`'s controller listener (Raft messages), started or not.
    pub fn controller_addr(&self, i: usize) -> &str {
        &self.controllers[i]
    }

    /// The network the nodes live in, when started with [`Cluster::start_in_namespaces`].
    pub fn network(&self) -> &Network {
        self.network.as_ref().expect("a cluster started in network namespaces")
    }

    /// Every node's Kafka address, as a client's `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.nodes.iter().map(|n| n.addr()).filter(|a| !a.is_empty()).collect::<Vec<_>>().join(",")
    }

    /// A Kafka connection to node `i`, made from inside its namespace when it has one, so that
    /// it reaches the node while its link is cut.
    pub fn connect(&self, i: usize) -> Raw {
        let stream = match &self.network {
            Some(network) => network.connect(i, self.nodes[i].addr()),
            None => TcpStream::connect(self.nodes[i].addr()).expect("connecting"),
        };
        Raw::from_stream(stream)
    }

    /// What node `i` last logged about the metadata quorum (`None` before its first word).
    pub fn quorum_view(&self, i: usize) -> Option<QuorumView> {
        let stderr = self.nodes[i].stderr_text();
        let line = stderr.lines().rfind(|l| l.contains("metadata quorum"))?;
        let field = |name: &str| {
            line.split_whitespace().find_map(|word| word.strip_prefix(name)?.strip_prefix('=')).map(str::to_string)
        };
        Some(QuorumView { role: field("role")?, term: field("term")?.parse().ok()? })
    }

    /// The node among `among` that says it leads the metadata quorum at a term no other of
    /// them has passed, waiting up to `deadline` for one (an isolated former leader that still
    /// says it leads is behind the others' term once they elected another).
    pub fn quorum_leader(&self, among: &[usize], deadline: Duration) -> usize {
        let mut leader = None;
        super::wait_until(deadline, &format!("one of nodes {among:?} leads the metadata quorum"), || {
            let views: Vec<(usize, QuorumView)> =
                among.iter().filter_map(|&i| Some((i, self.quorum_view(i)?))).collect();
            let newest = views.iter().map(|(_, v)| v.term).max();
            let leaders: Vec<usize> =
                views.iter().filter(|(_, v)| v.role == "Leader" && Some(v.term) == newest).map(|(i, _)| *i).collect();
            leader = (leaders.len() == 1).then(|| leaders[0]);
            leader.is_some()
        });
        leader.expect("found")
    }

    /// Creates `topic` through node `i`, retrying while the quorum has no leader (NOT_CONTROLLER,
    /// REQUEST_TIMED_OUT) or no broker has registered yet (INVALID_REPLICATION_FACTOR) up to
    /// `deadline`; returns how long it took.
    pub fn create_topic(&self, i: usize, topic: &str, partitions: i32, deadline: Duration) -> Duration {
        self.create_replicated_topic(i, topic, partitions, 1, &[], deadline)
    }

    /// [`Cluster::create_topic`] with `replication_factor` replicas per partition and `configs`.
    pub fn create_replicated_topic(
        &self,
        i: usize,
        topic: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &[(&str, &str)],
        deadline: Duration,
    ) -> Duration {
        let start = Instant::now();
        let mut retried = false;
        loop {
            match self.connect(i).create_replicated_topic(topic, partitions, replication_factor, configs) {
                0 => return start.elapsed(),
                // A proposal that timed out may still have committed: the retry finds the topic.
                TOPIC_ALREADY_EXISTS if retried => return start.elapsed(),
                NOT_CONTROLLER | REQUEST_TIMED_OUT | INVALID_REPLICATION_FACTOR if start.elapsed() < deadline => {
                    retried = true;
                    std::thread::sleep(Duration::from_millis(50))
                }
                other => panic!("creating {topic} through node {}: error {other} after {:?}", i + 1, start.elapsed()),
            }
        }
    }

    /// Waits up to `deadline` until every node's Metadata lists every node as a broker
    /// (each has registered and is unfenced, as every node's image shows).
    pub fn wait_for_every_broker(&self, deadline: Duration) {
        let everyone: Vec<i32> = (1..=self.nodes.len() as i32).collect();
        for i in 0..self.nodes.len() {
            super::wait_until(deadline, &format!("node {} lists every broker", i + 1), || {
                self.brokers_seen_by(i) == everyone
            });
        }
    }

    /// Creates `topic` through node 1 as [`Cluster::create_replicated_topic`] does, with
    /// `configs`, and waits until every node has it.
    pub fn create_topic_everywhere(
        &self,
        topic: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &[(&str, &str)],
    ) {
        self.create_replicated_topic(0, topic, partitions, replication_factor, configs, Duration::from_secs(30));
        for i in 0..self.nodes.len() {
            self.wait_for_topic(i, topic, Duration::from_secs(10));
        }
    }

    /// The node ids of the brokers node `i`'s Metadata lists (the unfenced ones), sorted.
    pub fn brokers_seen_by(&self, i: usize) -> Vec<i32> {
        let request = kafka_protocol::messages::MetadataRequest::default().with_topics(Some(vec![]));
        let mut ids: Vec<i32> = self.connect(i).send(&request, 12).brokers.iter().map(|b| b.node_id.0).collect();
        ids.sort();
        ids
    }

    /// Produces `records` to `partition` of `topic` on the leader that node `via`'s Metadata
    /// names (each node serves only the partitions it leads); the error code, or
    /// LEADER_NOT_AVAILABLE while `via` knows of no leader.
    pub fn produce_via(&self, via: usize, topic: &str, partition: i32, records: bytes::Bytes) -> i16 {
        let leader = self.leaders_seen_by(via, topic).into_iter().find(|&(p, _)| p == partition).map(|(_, id)| id);
        match leader.and_then(|id| usize::try_from(id - 1).ok()).filter(|&i| i < self.nodes.len()) {
            Some(leader) => self.connect(leader).produce(topic, partition, records, -1).0,
            None => LEADER_NOT_AVAILABLE,
        }
    }

    /// Each partition of `topic` with the node id of its leader (-1: none) as node `i`'s
    /// Metadata names them.
    pub fn leaders_seen_by(&self, i: usize, topic: &str) -> Vec<(i32, i32)> {
        self.partitions_seen_by(i, topic).iter().map(|p| (p.partition, p.leader)).collect()
    }

    /// Each partition of `topic` as node `i`'s Metadata describes it, in partition order.
    pub fn partitions_seen_by(&self, i: usize, topic: &str) -> Vec<PartitionView> {
        use kafka_protocol::messages::MetadataRequest;
        use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
        let wanted = MetadataRequestTopic::default().with_name(Some(super::topic_name(topic)));
        let request = MetadataRequest::default().with_topics(Some(vec![wanted])).with_allow_auto_topic_creation(false);
        let response = self.connect(i).send(&request, 12);
        let mut partitions: Vec<PartitionView> = response.topics[0]
            .partitions
            .iter()
            .map(|p| {
                let mut isr: Vec<i32> = p.isr_nodes.iter().map(|b| b.0).collect();
                isr.sort();
                PartitionView {
                    partition: p.partition_index,
                    leader: p.leader_id.0,
                    leader_epoch: p.leader_epoch,
                    replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                    isr,
                }
            })
            .collect();
        partitions.sort_by_key(|p| p.partition);
        partitions
    }

    /// The leader of `topic`-`partition` (-1: none) and its ISR, sorted, as node `i`'s Metadata
    /// names them.
    pub fn leader_and_isr_seen_by(&self, i: usize, topic: &str, partition: i32) -> (i32, Vec<i32>) {
        use kafka_protocol::messages::MetadataRequest;
        use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
        let wanted = MetadataRequestTopic::default().with_name(Some(super::topic_name(topic)));
        let request = MetadataRequest::default().with_topics(Some(vec![wanted])).with_allow_auto_topic_creation(false);
        let response = self.connect(i).send(&request, 12);
        let p = response.topics[0].partitions.iter().find(|p| p.partition_index == partition).expect("the partition");
        let mut isr: Vec<i32> = p.isr_nodes.iter().map(|b| b.0).collect();
        isr.sort();
        (p.leader_id.0, isr)
    }

    /// The node (index) that node `i`'s FindCoordinator names for consumer group `group`.
    pub fn coordinator(&self, i: usize, group: &str) -> usize {
        let request = kafka_protocol::messages::FindCoordinatorRequest::default()
            .with_key(kafka_protocol::protocol::StrBytes::from_string(group.to_string()));
        let response = self.connect(i).send(&request, 3);
        assert_eq!(response.error_code, 0, "FindCoordinator {group} through node {}", i + 1);
        usize::try_from(response.node_id.0 - 1).expect("a node of the cluster")
    }

    /// The topics in node `i`'s metadata log (read from its data dir).
    pub fn topics(&self, i: usize) -> Vec<String> {
        let image = super::metadata_image(self.nodes[i].data_dir());
        image["topics"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().to_string()).collect()
    }

    /// Waits up to `deadline` until node `i` has `topic`.
    pub fn wait_for_topic(&self, i: usize, topic: &str, deadline: Duration) {
        super::wait_until(deadline, &format!("node {} has topic {topic}", i + 1), || {
            self.topics(i).iter().any(|t| t == topic)
        });
    }
}

/// `--controller-quorum` for voters 1..=N listening at `controllers`.
fn quorum_flag(controllers: &[String]) -> String {
    controllers.iter().enumerate().map(|(i, at)| format!("{}@{at}", i + 1)).collect::<Vec<_>>().join(",")
}

/// Loopback ports free now that no connection can take while their node is down (see
/// [`super::unassigned_port`]; released before the nodes bind them: see [`Cluster::start`] for
/// the race).
fn free_ports(n: usize) -> Vec<u16> {
    (0..n).map(|_| super::unassigned_port()).collect()
}
