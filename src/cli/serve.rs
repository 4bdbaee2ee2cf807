//! `sluice serve`: load settings and metadata, recover, start one shard per core, print the
//! ready line, and shut down cleanly on SIGINT/SIGTERM.

use std::path::PathBuf;
use std::rc::Rc;

use anyhow::Context;

use crate::cluster::MetadataImage;
use crate::cluster::brokers::{BrokerAnswer, BrokerCall, Controller, Identity, Lifecycle};
use crate::cluster::quorum::store::DurableLog;
use crate::cluster::quorum::{self, QuorumConfig};
use crate::cluster::replicas::Candidate;
use crate::config::BrokerConfig;
use crate::group;
use crate::runtime::{self, MeshBuilder, bind_reuseport, spawn_local};
use crate::shard::router::PartitionsOffline;
use crate::shard::{CONTROLLER_SHARD, Shard, ShardRequest, controller, ops};

/// Left in the data directory by a clean shutdown; its absence at start means recovery.
const CLEAN_SHUTDOWN_MARKER: &str = ".clean-shutdown";
/// Envelopes in flight from one shard to another before the sender waits.
const MESH_CHANNEL_CAPACITY: usize = 1024;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// TOML file of settings with Kafka's names (`num.partitions = 3`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to accept clients on (port 0 picks a free one).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// HOST:PORT handed to clients in Metadata (default: the listen address).
    #[arg(long)]
    advertise: Option<String>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Admin HTTP address serving Prometheus `/metrics` (default 127.0.0.1:9644; "off": none).
    #[arg(long)]
    admin: Option<String>,
    /// Number of shards (one pinned executor each); default: one per available core.
    #[arg(long)]
    cores: Option<usize>,
    /// This node's id (`node.id`), unique in the cluster.
    #[arg(long)]
    node_id: Option<i32>,
    /// The controller quorum, `ID@HOST:PORT,...` (`controller.quorum.voters`): every node that
    /// votes, with the address of its controller listener. Default: this node alone.
    #[arg(long)]
    controller_quorum: Option<String>,
    /// `broker`, `controller` or `both` (`process.roles`; default both). A controller votes in
    /// the quorum (its id must be in `--controller-quorum`); a broker-only node, not listed
    /// there, follows it and serves clients; a controller-only node has no client listener.
    #[arg(long)]
    role: Option<String>,
    /// Any setting as key=value with its Kafka name; repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    settings: Vec<String>,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    exit_on_panic();
    match crate::runtime::raise_open_file_limit() {
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }

    let mut config = BrokerConfig::default();
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        config.load_toml(&text)?;
    }
    for setting in &args.settings {
        let (key, value) = setting.split_once('=').with_context(|| format!("--set {setting}: expected KEY=VALUE"))?;
        config.set(key.trim(), value.trim())?;
    }
    if let Some(node_id) = args.node_id {
        config.set("node.id", &node_id.to_string())?;
    }
    if let Some(voters) = &args.controller_quorum {
        config.set("controller.quorum.voters", voters)?;
    }
    if let Some(role) = &args.role {
        let roles = match role.as_str() {
            "both" => "broker,controller",
            "broker" | "controller" => role,
            other => anyhow::bail!("--role {other}: expected broker, controller or both"),
        };
        config.set("process.roles", roles)?;
    }
    if let Some(listen) = args.listen {
        config.set("listeners", &listen.to_string())?;
    }
    if let Some(admin) = &args.admin {
        config.set("admin.listen", admin)?;
    }
    if let Some(advertise) = args.advertise {
        config.advertise = Some(advertise);
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if let Some(cores) = args.cores {
        config.cores = cores;
    }
    config.validate()?;
    serve(config)
}

fn serve(mut config: BrokerConfig) -> anyhow::Result<()> {
    runtime::alloc::keep_freed_memory();
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    config.data_dir = config.data_dir.canonicalize()?;
    let roles = config.roles;
    // The ports first: a start refused for a busy port must leave the marker where it is.
    let port_guard = match roles.broker {
        true => {
            let (listen, guard) = runtime::reserve_port(config.listen)
                .with_context(|| format!("the listen address {}", config.listen))?;
            config.listen = listen;
            Some(guard)
        }
        false => None,
    };
    let admin = config.admin.map(runtime::reserve_port).transpose().context("the admin listener")?;
    config.admin = admin.as_ref().map(|(address, _)| *address);
    let advertised = advertised_address(&config)?;

    let marker = config.data_dir.join(CLEAN_SHUTDOWN_MARKER);
    let clean_shutdown = marker.exists();
    if clean_shutdown {
        // From here until the next clean stop, a crash must lead to recovery.
        std::fs::remove_file(&marker)?;
        std::fs::File::open(&config.data_dir)?.sync_all()?;
    } else {
        tracing::info!("the last stop was not clean (or this is the first start): recovering the logs");
    }

    // The metadata log: bootstrapped on a first start, migrated from `metadata.json` if an
    // older Sluice wrote one. Reading it writes nothing, so that a broker restarted on a full
    // disk serves what is there. Shard 0 opens it again for its Raft task.
    let quorum_config = quorum_config(&config)?;
    let several = quorum_config.voters.len() > 1;
    let recovered = match roles.controller {
        true => Some(recover_metadata_log(&config, &quorum_config)?),
        // A broker-only node keeps no metadata log: it fetches the image from the voters.
        false if MetadataImage::legacy_exists(&config.data_dir) => anyhow::bail!(
            "{} holds a single-node Sluice's metadata.json: it can only be opened as a one-node cluster",
            config.data_dir.display()
        ),
        false => None,
    };
    // Directories of partitions deleted before a crash are removed in the background.
    crate::storage::deleter::remove_leftovers(&crate::storage::fs::os(), &config.data_dir)?;
    let mut image = recovered.unwrap_or_default();
    // Shard placement is this node's own affair: not in the log, redone at every start.
    image.place_orphans(config.cores);
    if !several {
        // Partitions from before brokers were in the log are this node's.
        image.adopt_unplaced(config.node_id);
    }

    let shutdowns = runtime::shutdown::install(config.cores)?;
    let (bound_tx, bound_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
    let mesh = MeshBuilder::<ShardRequest, _>::full(config.cores, MESH_CHANNEL_CAPACITY);
    let cores = config.cores;
    let shard_config = config.clone();

    let shards = std::thread::spawn(move || {
        runtime::executor::run_pinned(shutdowns, config.spin_before_park, move |shard_id, shutdown| {
            let config = shard_config.clone();
            let mesh = mesh.clone();
            let image = image.clone();
            let advertised = advertised.clone();
            let quorum_config = quorum_config.clone();
            let bound_tx = bound_tx.clone();
            async move {
                runtime::executor::set_file_io_workers(config.num_io_threads).with_context(|| {
                    format!(
                        "num.io.threads={}: setting the shard's io_uring workers (Linux 5.15 or later)",
                        config.num_io_threads
                    )
                })?;
                let ticks = runtime::tick_while_connecting();
                let (senders, receivers) = mesh.join().await.map_err(|e| anyhow::anyhow!("joining the mesh: {e}"))?;
                let shard = Rc::new(Shard::new(shard_id, config.clone(), advertised.clone(), image.clone(), senders));
                let alone = quorum_config.voters.len() == 1;
                // A lone controller's log is the quorum's: its image is caught up. Any other node
                // leads nothing until its broker hears that it has caught up since this start.
                shard.caught_up.set(alone && roles.controller);
                let offline = ops::apply_metadata(&shard, image.clone(), clean_shutdown).await;
                let (quorum_task, broker, controller_duties) = match shard_id == CONTROLLER_SHARD {
                    true => {
                        let quorum_task = match roles.controller {
                            true => start_quorum(&shard, quorum_config.clone(), image)?,
                            false => start_observer(&shard, &quorum_config)?,
                        };
                        let broker = roles.broker.then(|| start_broker(&shard, &quorum_config));
                        // The active controller's duties, on any node that may become it.
                        let duties = roles.controller.then(|| {
                            let shard = shard.clone();
                            spawn_local(async move {
                                let fencing = controller::fence_silent_brokers(shard.clone());
                                let balancing = controller::balance_leaders(shard.clone());
                                futures::join!(fencing, balancing, controller::complete_reassignments(shard));
                            })
                        });
                        (Some(quorum_task), broker, duties)
                    }
                    false => (None, None, None),
                };
                // Before this shard accepts clients, it knows its groups' committed offsets.
                group::follow_leadership(&shard).await;
                let mesh_task = spawn_local(shard.clone().serve_mesh(receivers));
                // ...and every shard's Metadata knows which of its partitions are offline (the
                // controller reaches this shard through the mesh, so that serves first).
                if !offline.is_empty() {
                    let report = PartitionsOffline { partitions: offline };
                    shard.invoke_on(CONTROLLER_SHARD, report).await;
                }
                let upkeep_task = spawn_local(ops::maintain_partitions(shard.clone()));
                let isr_task = spawn_local(crate::replication::isr::maintain(shard.clone()));
                let group_task = spawn_local(group::maintain(shard.clone()));
                // A controller-only node serves no clients.
                let listener = match roles.broker.then(|| bind_reuseport(config.listen)).transpose() {
                    Ok(listener) => listener,
                    Err(e) => {
                        let _ = bound_tx.send(Err(e.into()));
                        return Ok(());
                    }
                };
                // Shard 0 also serves the admin listener.
                let admin_task = match config.admin.filter(|_| shard_id == 0).map(bind_reuseport).transpose() {
                    Ok(admin) => {
                        admin.map(|listener| spawn_local(crate::server::admin::serve(shard.clone(), listener)))
                    }
                    Err(e) => {
                        let _ = bound_tx.send(Err(anyhow::Error::from(e).context("the admin listener")));
                        return Ok(());
                    }
                };
                let (lifecycle, broker_tasks) = match broker {
                    Some((lifecycle, first_unfenced, tasks)) => {
                        // Alone, the node is its own controller: it is ready once it can lead
                        // partitions (its new registration fences its old one, its first
                        // heartbeat unfences it). If the image still lists it unfenced at this
                        // address, a failed write of its metadata log (a full disk, where the
                        // registration cannot be written) makes it ready at once, serving what
                        // the image says: reads must not wait for space. In a quorum of several
                        // it waits for no one; but a broker-only node waits until it has the
                        // image and is unfenced: it knows nothing before.
                        let listed = shard.metadata().unfenced_brokers().any(|b| {
                            b.node_id == config.node_id
                                && (b.host.as_str(), b.port) == (advertised.0.as_str(), advertised.1)
                        });
                        if alone && listed && roles.controller {
                            let quorum = shard.quorum.get().expect("a controller runs the quorum").clone();
                            let write_failed = quorum.write_failed();
                            futures::pin_mut!(write_failed);
                            if let futures::future::Either::Right(_) =
                                futures::future::select(first_unfenced, write_failed).await
                            {
                                tracing::warn!("the metadata log cannot be written: serving what the image says");
                            }
                        } else if alone || !roles.controller {
                            let _ = first_unfenced.await;
                        }
                        (Some(lifecycle), Some(tasks))
                    }
                    None => (None, None),
                };
                let _ = bound_tx.send(Ok(()));
                drop((bound_tx, ticks));
                let closed = run_shard(shard, listener, shutdown, lifecycle).await;
                drop((
                    mesh_task,
                    upkeep_task,
                    isr_task,
                    group_task,
                    admin_task,
                    broker_tasks,
                    controller_duties,
                    quorum_task,
                ));
                closed
            }
        })
    });

    // Recovery may take long, so there is no deadline; but a shard that failed to start must
    // not leave the process waiting forever for the others.
    let mut bound = 0;
    while bound < cores {
        match bound_rx.recv_timeout(std::time::Duration::from_secs(1)) {
            Ok(result) => {
                result.context("binding the listener")?;
                bound += 1;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) if !shards.is_finished() => {}
            Err(_) => {
                let outcome = shards.join().map_err(|_| anyhow::anyhow!("shard thread panicked"))?;
                return Err(outcome.err().unwrap_or_else(|| anyhow::anyhow!("a shard stopped before binding")));
            }
        }
    }
    drop((port_guard, admin));
    let serving = match roles.broker {
        true => format!("listening on {}", config.listen),
        false => "controller only, no client listener".to_string(),
    };
    match config.admin {
        Some(admin) => println!("sluice ready: {serving}, admin on {admin}"),
        None => println!("sluice ready: {serving}"),
    }
    use std::io::Write;
    std::io::stdout().flush()?;

    // A shard whose partitions did not all close and sync returns an error here, and then no
    // marker is written: the next start recovers.
    shards.join().map_err(|_| anyhow::anyhow!("shard thread panicked"))??;
    std::fs::File::create(&marker)?.sync_all()?;
    std::fs::File::open(&config.data_dir)?.sync_all()?;
    tracing::info!("clean shutdown");
    Ok(())
}

/// Exit status of a broker that panicked (the one Rust gives a panicking main thread).
const PANIC_EXIT_STATUS: i32 = 101;

/// Makes any panic end the process at once with [`PANIC_EXIT_STATUS`]. A panic is a broken
/// invariant; left alone it would kill only its shard, and the others would serve on beside a
/// dead one whose partitions never answer and whose connections hang. Exiting leaves no
/// `.clean-shutdown` marker, so the supervisor's restart recovers the logs.
fn exit_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        tracing::error!(%info, "panic: exiting");
        std::process::exit(PANIC_EXIT_STATUS);
    }));
}

/// Serves until shutdown, then drains in-flight requests and closes this shard's partitions;
/// fails when any of them could not be closed and synced.
async fn run_shard(
    shard: Rc<Shard>,
    listener: Option<runtime::TcpListener>,
    mut shutdown: runtime::shutdown::ShardShutdown,
    lifecycle: Option<Rc<Lifecycle>>,
) -> anyhow::Result<()> {
    use futures::FutureExt;
    let accept = match listener {
        Some(listener) => crate::server::accept_loop(shard.clone(), listener).left_future(),
        None => futures::future::pending().right_future(),
    }
    .fuse();
    futures::pin_mut!(accept);
    futures::select! {
        _ = accept => {},
        _ = shutdown.stop_requested().fuse() => {},
    }
    shard.stopping.set(true);
    // Controlled shutdown: fenced first, so that the controller stops naming this broker.
    if let Some(lifecycle) = lifecycle {
        match shard.config.controlled_shutdown_enable {
            true => lifecycle.shut_down().await,
            false => lifecycle.stop_heartbeats(),
        }
    }
    // Connections still open when this returns (a client that never reads its response, say)
    // are dropped with the executor.
    shutdown.drain(shard.id, || shard.in_flight.get() == 0).await;
    // Every partition of the shard at once: their fsyncs are in flight together on the ring.
    let partitions: Vec<_> = shard.partitions.borrow_mut().drain().collect();
    let closes = partitions.into_iter().map(|(tp, partition)| async move { (tp, partition.close().await) });
    let mut failed = 0;
    for (tp, closed) in futures::future::join_all(closes).await {
        if let Err(e) = closed {
            tracing::error!(topic = %tp.topic, partition = tp.partition, error = %e, "closing partition");
            failed += 1;
        }
    }
    match failed {
        0 => Ok(()),
        n => Err(anyhow::anyhow!("{n} partitions could not be closed; the next start recovers them")),
    }
}

/// This node in the controller quorum: alone by default, else the voters of
/// `controller.quorum.voters`, whose addresses are resolved once, here.
fn quorum_config(config: &BrokerConfig) -> anyhow::Result<QuorumConfig> {
    let node_id = quorum::raft_id(config.node_id);
    let mut quorum = QuorumConfig {
        node_id,
        voters: vec![node_id],
        peers: Vec::new(),
        listen: None,
        snapshot_after_bytes: config.metadata_log_max_record_bytes_between_snapshots,
        bootstrap: Vec::new(),
    };
    if config.controller_quorum_voters.is_empty() {
        return Ok(quorum);
    }
    quorum.voters.clear();
    for (id, address) in &config.controller_quorum_voters {
        let resolved = std::net::ToSocketAddrs::to_socket_addrs(address.as_str())
            .with_context(|| format!("resolving controller {id}@{address}"))?
            .next()
            .with_context(|| format!("controller {id}@{address} has no address"))?;
        let voter = quorum::raft_id(*id);
        quorum.voters.push(voter);
        match voter == node_id {
            true => quorum.listen = Some(resolved),
            false => quorum.peers.push((voter, resolved)),
        }
    }
    quorum.voters.sort_unstable();
    let mut first = MetadataImage { cluster_id: uuid::Uuid::new_v4().simple().to_string(), ..MetadataImage::default() };
    ensure_offsets_topic(&mut first, config);
    quorum.bootstrap = crate::cluster::records::changes(&MetadataImage::default(), &first);
    Ok(quorum)
}

/// Resolves once, when the broker is first unfenced.
type Started = futures::channel::oneshot::Receiver<()>;

/// Brokers' calls answered by this node's controller (`shard`, the controller shard).
fn controller_calls(shard: &Rc<Shard>) -> Controller {
    let shard = shard.clone();
    Rc::new(move |call| {
        let shard = shard.clone();
        Box::pin(async move {
            match call {
                BrokerCall::Register(request) => {
                    BrokerAnswer::Register(controller::register_broker(&shard, request).await)
                }
                BrokerCall::Heartbeat(request) => {
                    BrokerAnswer::Heartbeat(controller::broker_heartbeat(&shard, request).await)
                }
                BrokerCall::AlterPartition(request) => {
                    BrokerAnswer::AlterPartition(controller::alter_partition(&shard, request).await)
                }
                BrokerCall::CreateTopics(request) => {
                    BrokerAnswer::CreateTopics(controller::forwarded_create_topics(&shard, request).await)
                }
                BrokerCall::CreatePartitions(request) => {
                    BrokerAnswer::CreatePartitions(controller::forwarded_create_partitions(&shard, request).await)
                }
            }
        })
    })
}

/// This node as a broker (on the controller shard, once its quorum or observer runs):
/// registration and heartbeats. Returns the lifecycle, what resolves once this broker is first
/// unfenced, and its task.
fn start_broker(shard: &Rc<Shard>, quorum_config: &QuorumConfig) -> (Rc<Lifecycle>, Started, runtime::Task<()>) {
    let identity = Identity {
        node_id: shard.config.node_id,
        host: shard.advertised_host.clone(),
        port: shard.advertised_port,
        rack: shard.config.broker_rack.clone(),
        heartbeat_interval: std::time::Duration::from_millis(shard.config.broker_heartbeat_interval_ms),
    };
    let quorum = shard.quorum.get().expect("the quorum runs").clone();
    let image = {
        let shard = shard.clone();
        Box::new(move || shard.metadata())
    };
    let voters = quorum_config.peers.iter().copied().collect();
    let caught_up: futures::future::LocalBoxFuture<'static, ()> = {
        let shard = shard.clone();
        Box::pin(async move { controller::caught_up(&shard).await })
    };
    let caught_up = (!shard.caught_up.get()).then_some(caught_up);
    let (lifecycle, first_unfenced) =
        Lifecycle::new(identity, quorum, quorum_config.node_id, voters, controller_calls(shard), image, caught_up);
    let task = spawn_local(lifecycle.clone().run());
    assert!(shard.lifecycle.set(lifecycle.clone()).is_ok(), "one broker lifecycle per node");
    (lifecycle, first_unfenced, task)
}

/// Starts the metadata log's Raft task on the controller shard, on the log as it is on disk
/// and `image`, the one this node installed at startup.
fn start_quorum(shard: &Rc<Shard>, config: QuorumConfig, image: MetadataImage) -> anyhow::Result<runtime::Task<()>> {
    let mut recovered =
        DurableLog::recover(shard.fs.clone(), &shard.config.data_dir, &config.voters, || unreachable!("bootstrapped"))?;
    recovered.image = image;
    let (handle, task) = quorum::start(config, recovered, install_on(shard), controller_calls(shard))?;
    shard.quorum.set(handle).map_err(|_| anyhow::anyhow!("the quorum started twice"))?;
    Ok(spawn_local(task))
}

/// A broker-only node's way to the quorum: its observer task fetches the committed image from
/// the voters and installs it on every shard (`quorum::observer`).
fn start_observer(shard: &Rc<Shard>, config: &QuorumConfig) -> anyhow::Result<runtime::Task<()>> {
    let (handle, task) = quorum::observer::start(config.node_id, config.peers.clone(), install_on(shard));
    shard.quorum.set(handle).map_err(|_| anyhow::anyhow!("the quorum started twice"))?;
    Ok(spawn_local(task))
}

/// Installs committed images on every shard of this node (from the controller shard).
fn install_on(shard: &Rc<Shard>) -> quorum::Install {
    let shard = shard.clone();
    Rc::new(move |image| {
        let shard = shard.clone();
        Box::pin(async move { controller::install_committed(&shard, image).await })
    })
}

/// Reads the metadata log, bootstrapping it on a first start (migrating a `metadata.json` an
/// older Sluice wrote, when alone). Writes nothing else.
fn recover_metadata_log(config: &BrokerConfig, quorum_config: &QuorumConfig) -> anyhow::Result<MetadataImage> {
    let several = quorum_config.voters.len() > 1;
    let recovered = DurableLog::recover(crate::storage::fs::os(), &config.data_dir, &quorum_config.voters, || {
        if !several {
            let mut image = MetadataImage::load_legacy_or_create(&config.data_dir)?;
            ensure_offsets_topic(&mut image, config);
            return Ok(image);
        }
        if MetadataImage::legacy_exists(&config.data_dir) {
            anyhow::bail!(
                "{} holds a single-node Sluice's metadata.json: it can only be opened as a one-node cluster (without --controller-quorum)",
                config.data_dir.display()
            );
        }
        // The same on every voter; the first leader proposes the cluster's first records.
        Ok(MetadataImage::default())
    })?;
    MetadataImage::retire_legacy(&config.data_dir)?;
    Ok(recovered.image)
}

/// Creates `__consumer_offsets` when the metadata log is bootstrapped, placed over this node
/// alone, or over the voters when this node is a broker as well (then they all are, as KRaft's
/// combined mode has it). A quorum of controller-only nodes leaves it to the active controller,
/// which creates it once a broker is unfenced (`controller::broker_heartbeat`).
fn ensure_offsets_topic(image: &mut MetadataImage, config: &BrokerConfig) {
    if image.topic(group::OFFSETS_TOPIC).is_some() || !config.roles.broker {
        return;
    }
    let brokers: Vec<Candidate> = match config.controller_quorum_voters.is_empty() {
        true => vec![Candidate { node_id: config.node_id, rack: None }],
        false => config.controller_quorum_voters.iter().map(|(id, _)| Candidate { node_id: *id, rack: None }).collect(),
    };
    let topic = controller::offsets_topic(config, &brokers);
    image.topics.insert(topic.name.clone(), topic);
}

fn advertised_address(config: &BrokerConfig) -> anyhow::Result<(String, i32)> {
    match &config.advertise {
        Some(advertise) => {
            let (host, port) =
                advertise.rsplit_once(':').with_context(|| format!("--advertise {advertise}: expected HOST:PORT"))?;
            Ok((host.to_string(), port.parse().with_context(|| format!("port of {advertise}"))?))
        }
        None => Ok((config.listen.ip().to_string(), i32::from(config.listen.port()))),
    }
}
