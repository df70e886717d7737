//! The route table: where the proxy sends requests right now. Written by whoever owns
//! the upstream (the `proxy` command once, the supervisor as containers come and go),
//! read by the proxy on every request through a `watch` channel.

use std::sync::Arc;

use http::Uri;
use tokio::sync::watch;

/// What the proxy does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Forward to one of these upstreams (`http://host:port/` each; one for a single
    /// Open WebUI, several for replicas, which the proxy balances across).
    Forward(Upstreams),
    /// No upstream to forward to: answer with the "starting" page (HTML for browsers,
    /// JSON 503 with Retry-After for API clients).
    Hold(Hold),
}

/// Why the site is not being forwarded, in words fit for the public page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub phase: Phase,
    /// Public detail such as "pulling 42%"; never log lines or internal addresses.
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Pulling,
    Starting,
    Restarting,
    Updating,
    Stopped,
}

impl Phase {
    /// A short headline for the page.
    pub fn headline(self) -> &'static str {
        match self {
            Phase::Pulling => "Downloading Open WebUI",
            Phase::Starting => "Open WebUI is starting",
            Phase::Restarting => "Open WebUI is restarting",
            Phase::Updating => "Open WebUI is being updated",
            Phase::Stopped => "Open WebUI is stopped",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pulling => "pulling",
            Phase::Starting => "starting",
            Phase::Restarting => "restarting",
            Phase::Updating => "updating",
            Phase::Stopped => "stopped",
        }
    }
}

impl Route {
    /// Forward to a single upstream.
    pub fn forward(upstream: Uri) -> Route {
        Route::Forward(Upstreams::one(upstream))
    }
}

/// The upstreams a `Forward` route may send a request to: never empty, in a stable
/// order (replica 1 first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstreams(Arc<[Uri]>);

impl Upstreams {
    pub fn one(upstream: Uri) -> Upstreams {
        Upstreams(Arc::from(vec![upstream]))
    }

    /// `None` when `upstreams` is empty.
    pub fn many(upstreams: Vec<Uri>) -> Option<Upstreams> {
        (!upstreams.is_empty()).then(|| Upstreams(Arc::from(upstreams)))
    }

    /// The first upstream (replica 1): where one-off calls such as the admin setup go.
    pub fn first(&self) -> &Uri {
        &self.0[0]
    }

    pub fn as_slice(&self) -> &[Uri] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

impl From<Uri> for Upstreams {
    fn from(upstream: Uri) -> Upstreams {
        Upstreams::one(upstream)
    }
}

pub type RouteTx = watch::Sender<Route>;
pub type RouteRx = watch::Receiver<Route>;

/// A route table starting at `initial`.
pub fn table(initial: Route) -> (RouteTx, RouteRx) {
    watch::channel(initial)
}
