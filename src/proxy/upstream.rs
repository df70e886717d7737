//! The upstream side: HTTP/1.1 connections to the upstreams, kept alive in a pool of
//! this worker thread's own.
//!
//! Each proxy worker has one [`Pool`] (see `Shared::for_worker`), so a request, the
//! upstream connection it goes out on and that connection's task all run on one
//! thread, and checking a connection out or in takes an uncontended lock.
//!
//! A request with no body and no upgrade (most of them) goes out through `h1`, a
//! small client run inside the request's own task; one with a body, or an upgrade,
//! through hyper's (`hyper::client::conn::http1`), whose connection is a task of its
//! own. Each kind keeps its own idle connections. This module decides which
//! connection a request goes out on:
//! - the most recently used idle one that is ready (LIFO: warm, and the rest can time
//!   out when load drops), else a new one;
//! - a connection goes back to the pool the moment its response has been read to the
//!   end (the response body hands it back), not from a task of its own;
//! - a request that a pooled connection could not even start to send (the upstream
//!   had closed it while idle) goes out again on another connection, since the
//!   upstream never saw it;
//! - a bodiless GET, HEAD or OPTIONS lost on a connection that had been idle for
//!   [`REPLAY_IDLE`] or more (the upstream's keep-alive timeout closed it as the
//!   request arrived) goes out once more, on a new connection;
//! - idle connections are not used after [`IDLE_TIMEOUT`] (checked at checkout) and
//!   closed within [`REAP_EVERY`] after it by a task of the pool's own; beyond
//!   [`MAX_IDLE`] per upstream the oldest goes.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Response};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::Body;
use super::h1;

/// An idle connection is not used again after this long unused. Below uvicorn's
/// keep-alive timeout (5 s, Open WebUI's server): a request sent on a connection just
/// as the upstream closes it for idleness fails with nothing to retry on (the
/// upstream may have read it), so connections the upstream is about to close are not
/// used. Under load every connection is reused long before this.
const IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// At most this many idle connections per upstream and worker; more than that are
/// only needed in a burst, and are closed when it is over.
const MAX_IDLE: usize = 1024;
/// A connection reused after this long idle may be closed by the upstream's keep-alive
/// timeout just as the request reaches it (gunicorn's is 2 s; uvicorn's 5 s is what
/// [`IDLE_TIMEOUT`] stays below): a request that can safely be sent twice keeps a
/// copy of its head to go out again on a new connection. Under load connections are
/// reused within milliseconds and no copy is made.
const REPLAY_IDLE: Duration = Duration::from_secs(1);
/// How often expired idle connections are closed when no request comes along.
const REAP_EVERY: Duration = Duration::from_secs(1);
/// TCP keepalive on upstream connections (a dead peer is noticed while idle).
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// One worker's upstream connections.
pub struct Pool {
    connect_timeout: Duration,
    /// Whether the task closing expired idle connections runs (started with the
    /// first connection, on the worker's runtime).
    reaping: std::sync::atomic::AtomicBool,
    /// Idle connections per upstream, oldest first.
    idle: Mutex<Vec<(Authority, Idles)>>,
}

#[derive(Default)]
struct Idles {
    /// hyper's, for requests with a body and upgrades.
    hyper: Vec<Idle<http1::SendRequest<Body>>>,
    /// `h1`'s, for the rest.
    plain: Vec<Idle<h1::Conn>>,
}

impl Idles {
    fn is_empty(&self) -> bool {
        self.hyper.is_empty() && self.plain.is_empty()
    }
}

struct Idle<C> {
    conn: C,
    since: Instant,
}

/// Where an `h1` connection goes back to once its response has been read.
pub struct Home {
    pool: Arc<Pool>,
    to: Authority,
}

impl Home {
    #[cfg(test)]
    pub(super) fn new(pool: Arc<Pool>, to: Authority) -> Home {
        Home { pool, to }
    }

    pub fn put(self, conn: h1::Conn) {
        self.pool.checkin(self.to, |idles| &mut idles.plain, conn);
    }
}

/// Why a request got no response from the upstream.
#[derive(Debug)]
pub enum Error {
    /// No connection: refused, unreachable, timed out (`io::ErrorKind::TimedOut`), or
    /// the name did not resolve. Nothing was sent.
    Connect(std::io::Error),
    /// The connection failed or the upstream broke the protocol, after (part of) the
    /// request may have been sent.
    Http(hyper::Error),
    /// The same, on a request without a body (`h1`).
    Plain(std::io::Error),
}

impl Error {
    pub fn is_connect(&self) -> bool {
        matches!(self, Error::Connect(_))
    }

    /// No connection within the connect timeout (ours, or the kernel's).
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Connect(e) if e.kind() == std::io::ErrorKind::TimedOut)
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Connect(_) => f.write_str("could not connect to the upstream"),
            Error::Http(_) | Error::Plain(_) => f.write_str("upstream connection failed"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Connect(e) => Some(e),
            Error::Http(e) => Some(e),
            Error::Plain(e) => Some(e),
        }
    }
}

impl Pool {
    pub fn new(connect_timeout: Duration) -> Arc<Pool> {
        Arc::new(Pool {
            connect_timeout,
            reaping: std::sync::atomic::AtomicBool::new(false),
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Sends `req` (origin-form target, `Host` set) to the upstream at `to` and
    /// returns its response head; the body hands the connection back when read to
    /// its end. A 101 response's connection is the caller's, through
    /// `hyper::upgrade::on`.
    pub async fn request(
        self: &Arc<Self>,
        to: &Authority,
        req: Request<Body>,
    ) -> Result<Response<UpstreamBody>, Error> {
        if req.body().is_end_stream() && !req.headers().contains_key(http::header::UPGRADE) {
            self.request_plain(to, req).await
        } else {
            self.request_hyper(to, req).await
        }
    }

    /// A request without a body: `h1`, in this task.
    async fn request_plain(
        self: &Arc<Self>,
        to: &Authority,
        req: Request<Body>,
    ) -> Result<Response<UpstreamBody>, Error> {
        let head = h1::encode_head(&req);
        let head_request = req.method() == http::Method::HEAD;
        let safe = matches!(
            *req.method(),
            http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
        );
        drop(req);
        let mut pooled = true;
        loop {
            let (conn, idle_for) = match pooled.then(|| self.checkout_plain(to)).flatten() {
                Some((conn, idle_for)) => (conn, Some(idle_for)),
                None => {
                    let stream = Box::pin(self.open(to)).await?;
                    (h1::Conn::new(stream), None)
                }
            };
            let home = Home {
                pool: self.clone(),
                to: to.clone(),
            };
            match conn.send(&head, head_request, home).await {
                Ok((parts, body)) => {
                    return Ok(Response::from_parts(parts, UpstreamBody::Plain(body)));
                }
                // The pooled connection was closed under the request: never read
                // by the upstream when even the head could not be written, and
                // safe to send twice after a long idle (see the module's doc).
                Err(h1::Fail::Lost { error, unsent })
                    if idle_for.is_some_and(|d| unsent || (safe && d >= REPLAY_IDLE)) =>
                {
                    tracing::debug!(target: "webui::proxy", upstream = %to, %error, "pooled connection was closed under the request; sending it again on a new one");
                    pooled = false;
                }
                Err(e) => return Err(Error::Plain(e.into_error())),
            }
        }
    }

    /// A request with a body, or an upgrade: hyper's client connection.
    async fn request_hyper(
        self: &Arc<Self>,
        to: &Authority,
        mut req: Request<Body>,
    ) -> Result<Response<UpstreamBody>, Error> {
        let mut pooled = true;
        loop {
            let (mut tx, idle_for) = match pooled.then(|| self.checkout(to)).flatten() {
                Some((tx, idle_for)) => (tx, Some(idle_for)),
                // Boxed: the connect future (name lookup, TCP, handshake) is large
                // and would otherwise be part of every request's state, also when
                // a pooled connection is used.
                None => (Box::pin(self.connect(to)).await?, None),
            };
            let replay = idle_for
                .is_some_and(|d| d >= REPLAY_IDLE)
                .then(|| replayable(&req))
                .flatten();
            match tx.try_send_request(req).await {
                Ok(res) => {
                    let (parts, body) = res.into_parts();
                    let upgraded = parts.status == http::StatusCode::SWITCHING_PROTOCOLS;
                    let mut body = HyperBody {
                        inner: body,
                        back: (!upgraded).then(|| Back {
                            pool: self.clone(),
                            to: to.clone(),
                            tx,
                        }),
                    };
                    if body.inner.is_end_stream() {
                        body.release();
                    }
                    return Ok(Response::from_parts(parts, UpstreamBody::Hyper(body)));
                }
                Err(mut e) => match (e.take_message(), replay) {
                    // Not sent: the pooled connection had been closed meanwhile.
                    (Some(unsent), _) if idle_for.is_some() => req = unsent,
                    (None, Some(again)) if connection_lost(e.error()) => {
                        tracing::debug!(target: "webui::proxy", upstream = %to, error = %e.error(), "connection idle for a while was closed under the request; sending it again on a new one");
                        req = again;
                        pooled = false;
                    }
                    _ => return Err(Error::Http(e.into_error())),
                },
            }
        }
    }

    /// The most recently used idle connection to `to` that can take a request now, and
    /// how long it had been idle.
    fn checkout(&self, to: &Authority) -> Option<(http1::SendRequest<Body>, Duration)> {
        // Closed (or, which does not happen once a response was read to its end,
        // still busy) connections are dropped.
        self.take_idle(to, |idles| &mut idles.hyper, http1::SendRequest::is_ready)
    }

    /// The same for `h1`'s connections: one the upstream closed while it was idle
    /// is dropped.
    fn checkout_plain(&self, to: &Authority) -> Option<(h1::Conn, Duration)> {
        self.take_idle(to, |idles| &mut idles.plain, h1::Conn::is_open)
    }

    /// The idle `h1` connection to `to` that the next request would get.
    #[cfg(test)]
    pub(super) fn take_plain(&self, to: &Authority) -> Option<h1::Conn> {
        self.checkout_plain(to).map(|(conn, _)| conn)
    }

    fn take_idle<C>(
        &self,
        to: &Authority,
        list: impl FnOnce(&mut Idles) -> &mut Vec<Idle<C>>,
        usable: impl Fn(&C) -> bool,
    ) -> Option<(C, Duration)> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = list(&mut idle.iter_mut().find(|(a, _)| a == to)?.1);
        let now = Instant::now();
        while let Some(c) = list.pop() {
            let idle_for = now.duration_since(c.since);
            if idle_for >= IDLE_TIMEOUT {
                // Everything before it is older still.
                list.clear();
                return None;
            }
            if usable(&c.conn) {
                return Some((c.conn, idle_for));
            }
        }
        None
    }

    /// Expired connections are the reaper's (and checkout skips them); here only the
    /// cap applies.
    fn checkin<C>(
        &self,
        to: Authority,
        list: impl FnOnce(&mut Idles) -> &mut Vec<Idle<C>>,
        conn: C,
    ) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let i = match idle.iter().position(|(a, _)| *a == to) {
            Some(i) => i,
            None => {
                idle.push((to, Idles::default()));
                idle.len() - 1
            }
        };
        let list = list(&mut idle[i].1);
        if list.len() >= MAX_IDLE {
            list.remove(0);
        }
        list.push(Idle {
            conn,
            since: Instant::now(),
        });
    }

    /// Closes idle connections once expired, forgets the ones that ended, and the
    /// upstreams left with none (a replica replaced, a name resolved anew), even when
    /// no request comes to notice: after a burst, hundreds of connections would
    /// otherwise stay open (an upstream that, unlike uvicorn, never closes idle
    /// connections keeps them forever). Ends with the pool.
    fn start_reaper(self: &Arc<Self>) {
        if self
            .reaping
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            return;
        }
        let pool = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REAP_EVERY).await;
                let Some(pool) = pool.upgrade() else { return };
                let now = Instant::now();
                let mut idle = pool.idle.lock().unwrap_or_else(|p| p.into_inner());
                for (_, idles) in idle.iter_mut() {
                    expire(&mut idles.hyper, now, |tx| !tx.is_closed());
                    expire(&mut idles.plain, now, h1::Conn::is_open);
                }
                idle.retain(|(_, list)| !list.is_empty());
            }
        });
    }

    /// A new hyper connection to `to`, its task spawned on this worker.
    async fn connect(self: &Arc<Self>, to: &Authority) -> Result<http1::SendRequest<Body>, Error> {
        let stream = self.open(to).await?;
        let (tx, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(Error::Http)?;
        tokio::spawn(async move {
            // Errors reach the request that was on the connection; an idle one that
            // the upstream closed just ends.
            let _ = conn.with_upgrades().await;
        });
        Ok(tx)
    }

    /// A new TCP connection to `to`, within the connect timeout.
    async fn open(self: &Arc<Self>, to: &Authority) -> Result<TcpStream, Error> {
        self.start_reaper();
        let stream = tokio::time::timeout(self.connect_timeout, tcp_connect(to))
            .await
            .map_err(|_| {
                Error::Connect(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "connecting to {to} timed out after {:?}",
                        self.connect_timeout
                    ),
                ))
            })?
            .map_err(Error::Connect)?;
        let _ = stream.set_nodelay(true);
        let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        Ok(stream)
    }
}

/// Drops the connections of `list` (oldest first) idle for [`IDLE_TIMEOUT`], and
/// those no longer `open`.
fn expire<C>(list: &mut Vec<Idle<C>>, now: Instant, open: impl Fn(&C) -> bool) {
    let stale = list
        .iter()
        .take_while(|c| now.duration_since(c.since) >= IDLE_TIMEOUT)
        .count();
    list.drain(..stale);
    list.retain(|c| open(&c.conn));
}

/// A copy of `req` to send again if its connection is lost under it: only for a
/// bodiless GET, HEAD or OPTIONS, which the upstream may see twice without harm.
fn replayable(req: &Request<Body>) -> Option<Request<Body>> {
    let safe = matches!(
        *req.method(),
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
    );
    if !safe || !req.body().is_end_stream() {
        return None;
    }
    let mut again = Request::new(super::empty_body());
    *again.method_mut() = req.method().clone();
    *again.uri_mut() = req.uri().clone();
    *again.version_mut() = req.version();
    *again.headers_mut() = req.headers().clone();
    Some(again)
}

/// The connection closed or broke before the response head: the request may or may
/// not have reached the upstream. Not an upstream that answered nonsense.
fn connection_lost(e: &hyper::Error) -> bool {
    use std::error::Error as _;
    e.is_incomplete_message()
        || e.is_closed()
        || e.source().is_some_and(|s| s.is::<std::io::Error>())
}

/// A TCP connection to the first of `to`'s addresses that accepts one.
async fn tcp_connect(to: &Authority) -> std::io::Result<TcpStream> {
    let host = to.host().trim_start_matches('[').trim_end_matches(']');
    let port = to.port_u16().unwrap_or(80);
    if let Ok(ip) = host.parse::<IpAddr>() {
        return TcpStream::connect(SocketAddr::new(ip, port)).await;
    }
    let mut last = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        match TcpStream::connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{host} resolved to no address"),
        )
    }))
}

/// Where a connection goes back to once its response has been read.
struct Back {
    pool: Arc<Pool>,
    to: Authority,
    tx: http1::SendRequest<Body>,
}

/// An upstream response body. Read to its end, it hands its connection back to the
/// pool; dropped before that, the connection is closed (what was left of the response
/// can not be told from the next one).
pub enum UpstreamBody {
    /// From hyper's client (a request with a body, or an upgrade).
    Hyper(HyperBody),
    /// From `h1` (a request without a body).
    Plain(h1::Body),
}

impl HttpBody for UpstreamBody {
    type Data = Bytes;
    type Error = super::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, super::BoxError>>> {
        match self.get_mut() {
            UpstreamBody::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            UpstreamBody::Plain(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Hyper(b) => b.is_end_stream(),
            UpstreamBody::Plain(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Hyper(b) => b.size_hint(),
            UpstreamBody::Plain(b) => b.size_hint(),
        }
    }
}

/// A response body from hyper's client connection.
pub struct HyperBody {
    inner: Incoming,
    back: Option<Back>,
}

impl HyperBody {
    fn release(&mut self) {
        let Some(Back { pool, to, mut tx }) = self.back.take() else {
            return;
        };
        if tx.is_ready() {
            pool.checkin(to, |idles| &mut idles.hyper, tx);
        } else if !tx.is_closed() {
            // The connection's task has not yet seen the end of the response it just
            // delivered: it is pooled once it has.
            tokio::spawn(async move {
                if tx.ready().await.is_ok() {
                    pool.checkin(to, |idles| &mut idles.hyper, tx);
                }
            });
        }
    }
}

impl HttpBody for HyperBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.release(),
            Poll::Ready(Some(Err(_))) => this.back = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
