//! The in-process HTTPS + WebSocket reverse proxy in front of Open WebUI.
//!
//! - `listener`: binding (before any side effect), accepting, TLS, serving connections,
//!   bounded drain on shutdown.
//! - `forward`: one request to the upstream and back, streaming.
//! - `balance`: which upstream (replica) a request goes to: least outstanding,
//!   passive ejection, `/ws/` stickiness.
//! - `tunnel`: WebSocket upgrades, byte for byte, idle timeout only.
//! - `upstream`: HTTP/1.1 connections to the upstreams, pooled per worker thread.
//! - `h1`: the HTTP/1.1 client for requests without a body or upgrade (the rest go
//!   through hyper's).
//! - `headers`: hop-by-hop and `X-Forwarded-*` rewriting (pure).
//! - `plain`: the plain-HTTP listener's service (redirect, ACME HTTP-01).
//! - `respond`: every response the proxy makes up itself.
//!
//! The proxy knows nothing of Docker or ACME: it reads the upstream from a
//! [`RouteRx`], serves certificates from a [`CertStore`] and challenge answers from
//! [`Challenges`], all owned by whoever starts it.

pub mod auth;
mod balance;
pub mod dns;
mod forward;
mod h1;
pub mod headers;
mod inherited;
mod listener;
mod plain;
pub mod respond;
mod streams;
mod tunnel;
mod upstream;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use ipnet::IpNet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// For the fuzz target of the upstream response reader (`crate::fuzzing`).
pub(crate) use h1::fuzz_response;
pub use listener::{Bound, port_holder};
/// For the fuzz target of the Host -> redirect decision (`crate::fuzzing`).
pub(crate) use plain::https_location;

use crate::challenge::Challenges;
use crate::config::ProxySettings;
use crate::route::{Inflight, RouteRx};
use crate::tls::CertStore;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every body the proxy sends or receives, type-erased.
pub type Body = BoxBody<Bytes, BoxError>;

/// A body with nothing in it.
pub fn empty_body() -> Body {
    use http_body_util::BodyExt;
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}

/// What every connection task of one proxy worker thread shares. Each worker has its
/// own copy with its own upstream client (pool) and task tracker, so a request, its
/// upstream connection and its tunnel stay on one thread; the rest is shared state.
#[derive(Clone)]
pub(crate) struct Shared {
    routes: RouteRx,
    /// This worker's upstream connections.
    upstream: Arc<upstream::Pool>,
    max_body: Option<u64>,
    trusted_proxies: Vec<IpNet>,
    hsts: bool,
    ws_idle_timeout: Duration,
    /// From the end of the request body to the upstream's response head.
    response_timeout: Duration,
    /// Connection and tunnel tasks, waited for (bounded) on shutdown.
    tracker: TaskTracker,
    access_log: bool,
    challenges: Challenges,
    supervised: bool,
    /// Port of the first HTTPS listener, for redirects from plain HTTP.
    https_port: u16,
    /// The token-protected Ollama API, when served.
    ollama: Option<Arc<auth::OllamaGate>>,
    /// Picks the upstream per request; counts requests and tunnels in flight per
    /// upstream (shared with `Proxy::inflight`, and by every worker).
    balancer: Arc<balance::Balancer>,
}

impl Shared {
    /// This state for one more worker thread: an upstream connection pool and a
    /// tracker of its own, everything else shared.
    fn for_worker(&self, settings: &ProxySettings) -> Shared {
        Shared {
            upstream: upstream::Pool::new(settings.connect_timeout),
            tracker: TaskTracker::new(),
            ..self.clone()
        }
    }
}

/// Everything the proxy needs to run, besides its bound listeners.
pub struct Proxy {
    pub settings: ProxySettings,
    pub certs: Arc<CertStore>,
    pub routes: RouteRx,
    pub challenges: Challenges,
    /// The upstream is a container webui supervises: a refused connection means it is
    /// (re)starting, so clients get the starting page rather than a 502.
    pub supervised: bool,
    /// Serve a token-protected Ollama API (`up --ollama-only`, `--ollama-domain`).
    pub ollama: Option<auth::OllamaGate>,
    /// Requests and tunnels in flight per upstream: counted by the proxy, read by
    /// whoever drains a replica (`Default::default()` when nobody does).
    pub inflight: Inflight,
}

impl Proxy {
    /// The proxy's in-flight counts (shared: take it before `run` moves the proxy).
    pub fn inflight(&self) -> Inflight {
        self.inflight.clone()
    }

    /// Serves until `shutdown` is cancelled, then stops accepting and lets open
    /// requests, streams and WebSockets finish within the drain timeout.
    ///
    /// Connections are served on worker threads of their own (see `listener`), not on
    /// the runtime that calls this.
    pub async fn run(self, bound: Bound, shutdown: CancellationToken) -> anyhow::Result<()> {
        let s = &self.settings;
        let https_port = bound.https_addrs().first().map(|a| a.port()).unwrap_or(443);
        let shared = Shared {
            routes: self.routes,
            upstream: upstream::Pool::new(s.connect_timeout),
            max_body: s.max_body,
            trusted_proxies: s.trusted_proxies.clone(),
            hsts: s.hsts,
            ws_idle_timeout: s.ws_idle_timeout,
            response_timeout: s.response_timeout,
            tracker: TaskTracker::new(),
            access_log: tracing::enabled!(target: "webui::access", tracing::Level::INFO),
            challenges: self.challenges,
            supervised: self.supervised,
            https_port,
            ollama: self.ollama.map(Arc::new),
            balancer: Arc::new(balance::Balancer::new(self.inflight)),
        };
        let tls = Arc::new(crate::tls::server_config(self.certs)?);
        listener::serve(bound, shared, tls, &self.settings, shutdown).await
    }
}
