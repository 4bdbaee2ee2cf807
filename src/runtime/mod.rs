//! The runtime seam: the only module that imports glommio.
//!
//! Everything the broker needs from the executor (pinned shards, the cross-core channel mesh,
//! sockets, timers, task spawning, files on the shard's io_uring) is re-exported or wrapped here, so that filling a gap of
//! glommio 0.9 (it has no public sendfile/splice) or swapping the runtime touches one folder.

pub mod alloc;
pub mod executor;
pub mod file;
pub mod page_cache;
pub mod receive;
pub mod shutdown;
pub mod zero_copy;

pub use glommio::channels::channel_mesh::{Full, MeshBuilder, Receivers, Senders};
pub use glommio::net::{TcpListener, TcpStream};
pub use glommio::sync::{Permit, Semaphore, StaticPermit};
pub use glommio::timer::sleep;
pub use glommio::{Task, spawn_local, yield_if_needed};

/// How often a starting shard's reactor wakes while its mesh channels connect.
const CONNECT_TICK: std::time::Duration = std::time::Duration::from_millis(1);

/// Wakes this shard's reactor every millisecond until the returned task is dropped.
///
/// glommio 0.9 loses a wake-up when the two ends of a shared channel connect at about the same
/// time: the end that connected first waits for the other to wake it, which it never does, and
/// an executor with nothing else to do then sleeps for ever (seen as a start that hung in the
/// mesh join, about once in a hundred starts on a loaded machine). Any wake-up of the reactor
/// polls pending connections again, so shards tick while they join the mesh and start; after
/// that their periodic upkeep tasks wake them often enough.
pub fn tick_while_connecting() -> Task<()> {
    spawn_local(async {
        loop {
            sleep(CONNECT_TICK).await;
        }
    })
}

/// Wall-clock milliseconds since the Unix epoch, as Kafka timestamps are.
pub fn now_ms() -> i64 {
    let since_epoch =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("system clock before 1970");
    i64::try_from(since_epoch.as_millis()).expect("timestamp fits i64")
}

/// Lets a client command die quietly of SIGPIPE, like other Unix tools, when its output is
/// cut short (`sluice consume ... | head`). The broker keeps Rust's default (ignored), so that
/// a vanished peer is an error on that socket alone.
pub fn restore_default_sigpipe() {
    // SAFETY: installs the default disposition; no handler code runs in this process.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Raises this process's open-file limit to its hard limit, as brokers do: each partition
/// keeps its segments' logs open, and every client takes a socket. Returns the new limit.
pub fn raise_open_file_limit() -> std::io::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(hard)
}

/// Binds a listening socket with SO_REUSEPORT, so that every shard can accept on the same
/// address (the kernel spreads incoming connections over the shards), and SO_REUSEADDR, so
/// that a broker restarted at once is not refused while the sockets it accepted before the
/// stop sit in TIME-WAIT or FIN-WAIT (those inherit the option from this listener, and the
/// kernel lets a new bind past them only when both sides set it).
pub fn bind_reuseport(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_port(true)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    // SAFETY: the descriptor is a bound, listening TCP socket whose ownership moves to the
    // listener; nothing else closes it.
    Ok(unsafe { TcpListener::from_raw_fd(socket.into_raw_fd()) })
}

/// Connections the kernel queues per shard before the shard accepts them (glommio's own
/// bind uses the same).
const LISTEN_BACKLOG: i32 = 1024;

/// How long a start waits for a busy listen port to be released.
const PORT_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Reserves a concrete port for `addr` when it asks for port 0, so that all shards bind the
/// same one. The returned guard keeps the port reserved until the shards have bound.
pub fn reserve_port(addr: std::net::SocketAddr) -> std::io::Result<(std::net::SocketAddr, Option<socket2::Socket>)> {
    if addr.port() != 0 {
        // Shards bind with SO_REUSEPORT, which would silently share the port with another
        // process of this user: a plain bind first tells whether it is really free. (It sets
        // SO_REUSEADDR, which passes sockets of an earlier run in TIME-WAIT but never a
        // listener.) The listeners of a process that has just exited can outlive it briefly
        // (io_uring releases the files its requests hold after the exit), so a busy port is
        // tried again for a moment before the start is refused.
        let deadline = std::time::Instant::now() + PORT_RELEASE_WAIT;
        loop {
            match std::net::TcpListener::bind(addr) {
                Ok(_) => return Ok((addr, None)),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        }
    }
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_port(true)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    let bound = socket.local_addr()?.as_socket().expect("an IP socket has an IP address");
    // Never listen on the guard: connections must only queue on the shards' sockets.
    Ok((bound, Some(socket)))
}

/// Serves every item `next` yields with `serve`, each in its own task, at most `limit` at a
/// time: the next item is taken only when one of them has finished, so that whatever feeds
/// `next` (a bounded channel) fills up and its sender waits. Returns when `next` yields
/// `None`.
pub async fn serve_bounded<T, N, S>(limit: usize, mut next: impl FnMut() -> N, serve: impl Fn(T) -> S)
where
    N: std::future::Future<Output = Option<T>>,
    S: std::future::Future<Output = ()> + 'static,
{
    let serving = std::rc::Rc::new(Semaphore::new(limit as u64));
    loop {
        let Ok(permit) = serving.acquire_static_permit(1).await else { return };
        let Some(item) = next().await else { return };
        let served = serve(item);
        spawn_local(async move {
            served.await;
            drop(permit);
        })
        .detach();
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use futures::channel::oneshot;

    #[test]
    fn serve_bounded_takes_no_more_than_its_limit() {
        glommio::LocalExecutor::default().run(async {
            let (items, queue) = glommio::channels::local_channel::new_bounded::<oneshot::Receiver<()>>(10);
            let mut finish = Vec::new();
            for _ in 0..10 {
                let (done, wait) = oneshot::channel();
                items.try_send(wait).unwrap();
                finish.push(done);
            }
            drop(items);
            let taken = Rc::new(Cell::new(0));
            let counted = taken.clone();
            let queue = &queue;
            let serving = super::serve_bounded(
                3,
                move || {
                    counted.set(counted.get() + 1);
                    queue.recv()
                },
                |wait| async move {
                    let _ = wait.await;
                },
            );
            let driving = async {
                super::sleep(std::time::Duration::from_millis(1)).await;
                assert_eq!(taken.get(), 3, "three served at once, the rest left queued");
                finish.remove(0).send(()).unwrap();
                super::sleep(std::time::Duration::from_millis(1)).await;
                assert_eq!(taken.get(), 4, "one more once one has finished");
                for done in finish {
                    let _ = done.send(());
                }
            };
            futures::join!(serving, driving);
            assert_eq!(taken.get(), 11, "all ten served, then the end of the queue");
        });
    }
}
