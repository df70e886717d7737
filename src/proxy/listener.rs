//! Listening sockets and connections: bind (before anything else happens), accept
//! within the connection limit, TLS handshake with a timeout, HTTP/1.1 or HTTP/2 with
//! header-read timeout and size limit, graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::FutureExt;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::headers::Peer;
use super::streams::{Exec, WithStreams};
use super::{Shared, forward, plain};
use crate::config::ProxySettings;
use crate::error::UserError;

/// Listening sockets, bound but not yet serving.
#[derive(Debug)]
pub struct Bound {
    https: Vec<TcpListener>,
    http: Vec<TcpListener>,
}

impl Bound {
    /// Binds every HTTPS and plain-HTTP address. A busy or forbidden port is a user
    /// error naming the address (and, when it can be found, the process holding it).
    /// With the default addresses, an IPv6 wildcard on a host without IPv6 is skipped.
    pub fn bind(settings: &ProxySettings) -> anyhow::Result<Self> {
        let bind_all = |addrs: &[SocketAddr], flag: &str| -> anyhow::Result<Vec<TcpListener>> {
            let mut out = Vec::new();
            for addr in addrs {
                match bind_one(*addr) {
                    Ok(l) => out.push(l),
                    Err(e)
                        if settings.listen_is_default
                            && addr.is_ipv6()
                            && matches!(e.raw_os_error(), Some(97) | Some(99)) =>
                    {
                        tracing::warn!("IPv6 is not available here; not listening on {addr}");
                    }
                    Err(e) => return Err(bind_error(*addr, flag, e)),
                }
            }
            Ok(out)
        };
        let https = bind_all(&settings.listen, "--listen")?;
        let http = bind_all(&settings.http_listen, "--http-listen")?;
        for addr in super::inherited::unused() {
            tracing::warn!(
                "the service manager passed a socket for {addr}, which no --listen or --http-listen names; not using it"
            );
        }
        Ok(Self { https, http })
    }

    pub fn https_addrs(&self) -> Vec<SocketAddr> {
        self.https
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    pub fn http_addrs(&self) -> Vec<SocketAddr> {
        self.http
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }
}

fn bind_one(addr: SocketAddr) -> std::io::Result<TcpListener> {
    if let Some(passed) = super::inherited::take(addr) {
        tracing::debug!(%addr, "using the socket passed by the service manager");
        passed.set_nonblocking(true)?;
        return TcpListener::from_std(passed);
    }
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        // Without this, [::]:443 also claims 0.0.0.0:443 and the second bind fails.
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    TcpListener::from_std(socket.into())
}

fn bind_error(addr: SocketAddr, flag: &str, e: std::io::Error) -> anyhow::Error {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            let holder = port_holder(addr.port())
                .map(|h| format!(" (held by {h})"))
                .unwrap_or_default();
            UserError::new(format!("cannot listen on {addr}: the port is already in use{holder}"))
                .hint(format!(
                    "stop the other server (often nginx or apache: `ss -ltnp 'sport = :{}'` shows it), or choose another address with {flag}; to keep that server in front, run `webui up --behind-proxy` and give it the site from `webui config export nginx|apache|caddy`",
                    addr.port()
                ))
                .into()
        }
        std::io::ErrorKind::PermissionDenied => {
            UserError::new(format!("cannot listen on {addr}: permission denied"))
                .hint(format!(
                    "ports below 1024 need root or CAP_NET_BIND_SERVICE (`sudo setcap cap_net_bind_service=+ep $(command -v webui)`), or choose a port above 1023 with {flag}"
                ))
                .into()
        }
        std::io::ErrorKind::AddrNotAvailable => {
            UserError::new(format!("cannot listen on {addr}: no such address on this host"))
                .hint(format!("give one of this host's addresses, or 0.0.0.0, with {flag}"))
                .into()
        }
        _ => anyhow::Error::new(e).context(format!("cannot listen on {addr}")),
    }
}

/// Finds which process listens on a TCP port, from /proc (best effort, Linux only).
pub fn port_holder(port: u16) -> Option<String> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // local_address is "IP:PORT" in hex; state 0A is LISTEN.
            let (Some(local), Some(state), Some(inode)) = (cols.get(1), cols.get(3), cols.get(9))
            else {
                continue;
            };
            let p = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if p == Some(port) && *state == "0A" {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let pid = entry.file_name().to_string_lossy().to_string();
        if !pid.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path())
                && inodes.iter().any(|i| target.as_os_str() == i.as_str())
            {
                let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
                return Some(format!("{} pid {pid}", comm.trim()));
            }
        }
    }
    None
}

#[derive(Clone, Copy)]
enum Kind {
    Https,
    Http,
}

/// An accepted connection on its way to a worker thread.
struct Job {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    kind: Kind,
    ticket: Ticket,
}

/// A connection's place in the connection limit and in its worker's count, given back
/// when the connection ends (or is dropped unserved).
struct Ticket {
    _permit: OwnedSemaphorePermit,
    load: Arc<AtomicUsize>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.load.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The accepting side's handle on one worker thread.
struct Worker {
    jobs: mpsc::UnboundedSender<Job>,
    /// Connections the worker is serving.
    load: Arc<AtomicUsize>,
}

/// What a worker thread serves its connections with.
struct Serving {
    shared: Arc<Shared>,
    max_header_size: usize,
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
    header_timeout: Duration,
    idle_timeout: Duration,
    shutdown: CancellationToken,
}

/// Serves until `shutdown`, then drains (bounded by the drain timeout).
///
/// Layout, as nginx and HAProxy do it: worker threads (`--proxy-workers`, by default
/// one per CPU), each running a single-threaded runtime, and each connection lives on
/// one worker from its TLS handshake to its end, with its HTTP/2 streams, its upstream
/// requests (every worker has its own upstream pool) and its WebSocket tunnel. Nothing
/// of a request wakes another thread. The accept loops run on the caller's runtime and
/// hand each connection to the worker serving the fewest, so long-lived connections
/// spread evenly whatever order they arrive in.
pub(super) async fn serve(
    bound: Bound,
    shared: Shared,
    tls: Arc<rustls::ServerConfig>,
    settings: &ProxySettings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    let mut workers = Vec::new();
    let mut finished = Vec::new();
    for i in 0..settings.proxy_workers {
        let serving = Arc::new(Serving {
            shared: Arc::new(shared.for_worker(settings)),
            max_header_size: settings.max_header_size,
            acceptor: acceptor.clone(),
            handshake_timeout: settings.handshake_timeout,
            header_timeout: settings.header_timeout,
            idle_timeout: settings.idle_timeout,
            shutdown: shutdown.clone(),
        });
        let (worker, done) = start_worker(i, serving, settings.drain_timeout)?;
        workers.push(worker);
        finished.push(done);
    }
    let workers: Arc<[Worker]> = workers.into();
    let limit = Arc::new(Semaphore::new(settings.max_connections));
    let mut loops = tokio::task::JoinSet::new();
    let listeners = bound
        .https
        .into_iter()
        .map(|l| (l, Kind::Https))
        .chain(bound.http.into_iter().map(|l| (l, Kind::Http)));
    for (listener, kind) in listeners {
        loops.spawn(accept_loop(
            listener,
            kind,
            workers.clone(),
            limit.clone(),
            shutdown.clone(),
        ));
    }
    while loops.join_next().await.is_some() {}
    // The workers' job queues close with the last sender; each then drains.
    drop(workers);
    let mut cut = false;
    for done in finished {
        cut |= done.await.unwrap_or(false);
    }
    if cut {
        tracing::warn!(
            "drain timeout ({:?}) reached with connections still open; closing them",
            settings.drain_timeout
        );
    }
    Ok(())
}

/// One connection's server, with `exec` running its HTTP/2 streams (see `streams`).
fn server_builder(s: &Serving, exec: Exec) -> auto::Builder<Exec> {
    let mut builder = auto::Builder::new(exec);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(s.header_timeout)
        .max_buf_size(s.max_header_size)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(s.max_header_size as u32)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .max_concurrent_streams(250)
        // HTTP/2 rapid reset (CVE-2023-44487): a client opening and cancelling streams
        // at once. Past 20 streams reset before they were accepted, h2 ends the
        // connection with GOAWAY ENHANCE_YOUR_CALM; past 1024 streams the server itself
        // had to reset (protocol errors), likewise. These are hyper's defaults, pinned
        // here so an upgrade cannot loosen them unnoticed; tests/hardening.rs
        // `http2_rapid_reset_is_cut_off_and_others_are_served` holds them.
        .max_pending_accept_reset_streams(20)
        .max_local_error_reset_streams(1024);
    builder
}

/// Starts worker thread `i`. The receiver reports when it has stopped: true when the
/// drain timeout cut connections.
fn start_worker(
    i: usize,
    serving: Arc<Serving>,
    drain_timeout: Duration,
) -> anyhow::Result<(Worker, oneshot::Receiver<bool>)> {
    let (jobs, queue) = mpsc::unbounded_channel();
    let (done_tx, done) = oneshot::channel();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(format!("webui-proxy-{i}"))
        .spawn(move || {
            let cut = runtime.block_on(run_worker(queue, serving, drain_timeout));
            // Whatever outlived the drain is dropped (closed) with the runtime.
            drop(runtime);
            let _ = done_tx.send(cut);
        })?;
    let load = Arc::new(AtomicUsize::new(0));
    Ok((Worker { jobs, load }, done))
}

/// One worker thread: serves the connections it is handed until the queue closes,
/// then waits for them within the drain timeout. Returns true when that ran out.
async fn run_worker(
    mut queue: mpsc::UnboundedReceiver<Job>,
    serving: Arc<Serving>,
    drain_timeout: Duration,
) -> bool {
    let tracker = serving.shared.tracker.clone();
    while let Some(job) = queue.recv().await {
        tracker.spawn(serve_job(job, serving.clone()));
    }
    tracker.close();
    tokio::time::timeout(drain_timeout, tracker.wait())
        .await
        .is_err()
}

async fn serve_job(job: Job, s: Arc<Serving>) {
    let Job {
        stream,
        peer,
        kind,
        ticket,
    } = job;
    let stream = match TcpStream::from_std(stream) {
        Ok(stream) => stream,
        Err(e) => {
            tracing::warn!(target: "webui::proxy", %peer, error = %e, "could not take over an accepted connection");
            return;
        }
    };
    match kind {
        Kind::Https => serve_https(stream, peer, &s).await,
        Kind::Http => {
            let shared = s.shared.clone();
            let svc = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, std::convert::Infallible>(plain::handle(&shared, req, peer)) }
            });
            serve_conn(&s, TokioIo::new(stream), svc).await;
        }
    }
    drop(ticket);
}

async fn serve_https(stream: TcpStream, peer: SocketAddr, s: &Serving) {
    let tls = match tokio::time::timeout(s.handshake_timeout, s.acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(target: "webui::proxy", %peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(target: "webui::proxy", %peer, "TLS handshake timed out");
            return;
        }
    };
    if tls.get_ref().1.alpn_protocol() == Some(crate::tls::ACME_TLS_ALPN) {
        // A TLS-ALPN-01 validation: the handshake was the answer; no HTTP follows.
        tracing::info!(target: "webui::acme", %peer, "answered TLS-ALPN-01 challenge");
        return;
    }
    let peer = Peer::new(peer.ip(), "https");
    let shared = s.shared.clone();
    let svc = service_fn(move |req| {
        let shared = shared.clone();
        // Boxed: the executor boxes each HTTP/2 stream again (`streams`), and a small
        // stream is cheap to move there (the ~2.6 KB request future is not copied
        // with it). `map`, not an `async` block around it, which would hold the
        // arguments a second time.
        Box::pin(forward::handle(shared, req, peer.clone()).map(infallible))
    });
    serve_conn(s, TokioIo::new(tls), svc).await;
}

/// The service's result: the proxy answers every request, errors included.
fn infallible(
    res: http::Response<super::Body>,
) -> Result<http::Response<super::Body>, std::convert::Infallible> {
    Ok(res)
}

/// Accepts until `shutdown`, within the connection limit, handing each connection to
/// the least busy worker.
async fn accept_loop(
    listener: TcpListener,
    kind: Kind,
    workers: Arc<[Worker]>,
    limit: Arc<Semaphore>,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: wait a moment, keep serving.
                tracing::warn!(target: "webui::proxy", error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!(target: "webui::proxy", %peer, "connection limit reached; refusing connection");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!(target: "webui::proxy", %peer, error = %e, "accepted connection lost");
                continue;
            }
        };
        let Some(worker) = workers
            .iter()
            .min_by_key(|w| w.load.load(Ordering::Relaxed))
        else {
            return;
        };
        worker.load.fetch_add(1, Ordering::Relaxed);
        let ticket = Ticket {
            _permit: permit,
            load: worker.load.clone(),
        };
        let job = Job {
            stream,
            peer,
            kind,
            ticket,
        };
        if worker.jobs.send(job).is_err() {
            tracing::warn!(target: "webui::proxy", %peer, "proxy worker thread is gone; refusing connection");
        }
    }
}

/// How long, on shutdown, a connection that has not sent its first request yet is
/// given to send it.
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);

async fn serve_conn<I, S>(s: &Serving, io: I, svc: S)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<super::Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    // Noted when the connection's first request (or stream) reaches the service.
    let asked = Arc::new(tokio::sync::Notify::new());
    // Requests (HTTP/2 streams) started on the connection.
    let started = Arc::new(AtomicU64::new(0));
    let svc = {
        let asked = asked.clone();
        let started = started.clone();
        service_fn(move |req| {
            if started.fetch_add(1, Ordering::Relaxed) == 0 {
                asked.notify_one();
            }
            hyper::service::Service::call(&svc, req)
        })
    };
    let exec = Exec::default();
    let builder = server_builder(s, exec.clone());
    let conn = WithStreams::new(builder.serve_connection_with_upgrades(io, svc), &exec);
    tokio::pin!(conn);
    // One timer, checked against the requests started:
    // - the first request's head must be in within the header timeout of the
    //   connection's start, as nginx's `client_header_timeout` counts it. hyper's own
    //   header timeout starts only with the first byte, and nothing bounds the wait
    //   for it: a client that finished the TLS handshake and then kept silent would
    //   hold its connection (and a descriptor) for good;
    // - then the connection is closed once no request has started on it for the idle
    //   timeout (nginx's `keepalive_timeout`): hyper has no such limit, and a client
    //   could otherwise keep any number of idle keep-alive connections, HTTP/2 ones
    //   answering pings included. Checked each idle timeout, so it closes between one
    //   and two of them after the last request started; gracefully, so a response
    //   still streaming (a long generation) finishes first. The first idle timeout
    //   counts from the first request.
    let check = tokio::time::sleep(s.header_timeout);
    tokio::pin!(check);
    let mut seen = 0;
    let mut first = true;
    let idled = loop {
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(target: "webui::proxy", error = %e, "connection ended with an error");
                }
                return;
            }
            _ = asked.notified(), if first => {
                first = false;
                check.as_mut().reset(tokio::time::Instant::now() + s.idle_timeout);
            }
            _ = check.as_mut() => {
                let now = started.load(Ordering::Relaxed);
                if now == 0 {
                    tracing::debug!(target: "webui::proxy", "no request within the header timeout; closing");
                    return;
                }
                if now == seen {
                    break true;
                }
                seen = now;
                check.as_mut().reset(tokio::time::Instant::now() + s.idle_timeout);
            }
            _ = s.shutdown.cancelled() => break false,
        }
    };
    if idled {
        tracing::debug!(target: "webui::proxy", "no new request within the idle timeout; closing");
        conn.as_mut().conn().graceful_shutdown();
        let _ = conn.await;
        return;
    }
    // Shutting down. A connection accepted just before has a client sending the
    // request it came for; closing it as idle would fail that request (with socket
    // activation the next process takes over only what was not accepted yet). Let its
    // first request arrive, briefly, then finish what is in flight (open streams
    // included) and accept nothing new.
    if started.load(Ordering::Relaxed) == 0 {
        tokio::select! {
            _ = asked.notified() => {}
            _ = tokio::time::sleep(FIRST_REQUEST_GRACE) => {}
            _ = conn.as_mut() => return,
        }
    }
    conn.as_mut().conn().graceful_shutdown();
    let _ = conn.await;
}
