//! The route table: where the proxy sends requests right now. Written by whoever owns
//! the upstream (the `proxy` command once, the supervisor as containers come and go),
//! read by the proxy on every request through a `watch` channel.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::Uri;
use tokio::sync::{Notify, watch};

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

/// HTTP requests and WebSocket tunnels in flight to each upstream, shared by the proxy
/// (which counts them) and whoever takes a replica out of rotation (which waits for it
/// to go quiet before stopping it). Clones share the same counts; `Default` starts
/// empty. Upstreams are matched by scheme and authority (`http://10.0.0.5:8080` and
/// `http://10.0.0.5:8080/` are the same upstream); one never seen counts 0.
///
/// Counting is lock-free on the request path: the proxy looks an upstream's counters
/// up once per route snapshot and then only touches atomics.
#[derive(Clone, Default)]
pub struct Inflight(Arc<ArcSwap<HashMap<String, Arc<Counts>>>>);

/// One upstream's counters (see [`Inflight`]).
#[derive(Default)]
pub struct Counts {
    requests: AtomicUsize,
    tunnels: AtomicUsize,
    /// Woken whenever `requests` drops to 0.
    idle: Notify,
}

impl Counts {
    /// HTTP requests in flight (see [`Inflight::count`]).
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }
}

impl Inflight {
    /// HTTP requests in flight to `upstream`: each counts from the moment the proxy
    /// sends it until its response body has been passed on in full or dropped (client
    /// gone, upstream failed). A WebSocket upgrade counts as a request until the
    /// upstream's `101` arrives, then as a tunnel (see [`Inflight::tunnels`]) instead.
    pub fn count(&self, upstream: &Uri) -> usize {
        self.get(upstream).map_or(0, |c| c.requests())
    }

    /// WebSocket (upgrade) tunnels open to `upstream`, from the upstream's `101` until
    /// either side closes or the idle timeout. Not part of [`Inflight::count`]: a
    /// browser tab holds one for hours, and socket.io reconnects elsewhere when it is
    /// cut, so a drain waits for requests only and then stops the replica.
    pub fn tunnels(&self, upstream: &Uri) -> usize {
        self.get(upstream)
            .map_or(0, |c| c.tunnels.load(Ordering::Relaxed))
    }

    /// Waits until no HTTP request is in flight to `upstream` ([`Inflight::count`] is
    /// 0), for at most `max`. True when it got there (at once when already idle),
    /// false when `max` ran out first. Take the upstream out of the route before
    /// waiting, or new requests keep arriving.
    pub async fn wait_idle(&self, upstream: &Uri, max: Duration) -> bool {
        let counts = self.counts(upstream);
        let deadline = tokio::time::Instant::now() + max;
        loop {
            let woken = counts.idle.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if counts.requests() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, woken).await.is_err() {
                return counts.requests() == 0;
            }
        }
    }

    fn get(&self, upstream: &Uri) -> Option<Arc<Counts>> {
        self.0.load().get(&upstream_key(upstream)).cloned()
    }

    /// The counters of `upstream`, created on first use (the proxy calls this once per
    /// route snapshot, not per request).
    pub fn counts(&self, upstream: &Uri) -> Arc<Counts> {
        if let Some(c) = self.get(upstream) {
            return c;
        }
        let key = upstream_key(upstream);
        let mut made = None;
        self.0.rcu(|map| {
            let mut map = HashMap::clone(map);
            let c = map.entry(key.clone()).or_default().clone();
            made = Some(c);
            map
        });
        made.unwrap_or_default()
    }
}

/// A request in flight: counted from creation until dropped.
pub struct RequestGuard(Arc<Counts>);

impl RequestGuard {
    pub fn new(counts: Arc<Counts>) -> RequestGuard {
        counts.requests.fetch_add(1, Ordering::Relaxed);
        RequestGuard(counts)
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        if self.0.requests.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// A tunnel open: counted from creation until dropped.
pub struct TunnelGuard(Arc<Counts>);

impl TunnelGuard {
    pub fn new(counts: Arc<Counts>) -> TunnelGuard {
        counts.tunnels.fetch_add(1, Ordering::Relaxed);
        TunnelGuard(counts)
    }
}

impl Drop for TunnelGuard {
    fn drop(&mut self) {
        self.0.tunnels.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Scheme and authority, lowercased: what identifies an upstream.
fn upstream_key(upstream: &Uri) -> String {
    let scheme = upstream.scheme_str().unwrap_or("http");
    let authority = upstream.authority().map_or("", |a| a.as_str());
    format!("{scheme}://{authority}").to_ascii_lowercase()
}

pub type RouteTx = watch::Sender<Route>;
pub type RouteRx = watch::Receiver<Route>;

/// A route table starting at `initial`.
pub fn table(initial: Route) -> (RouteTx, RouteRx) {
    watch::channel(initial)
}

/// What several route tables (one per replica) add up to: `Forward` to every upstream
/// that some table forwards to, in table order, when at least one does; otherwise the
/// first table's `Hold` (replica 1 speaks for the site).
pub fn combine(routes: &[Route]) -> Option<Route> {
    let up: Vec<Uri> = routes
        .iter()
        .filter_map(|r| match r {
            Route::Forward(ups) => Some(ups.as_slice().iter().cloned()),
            Route::Hold(_) => None,
        })
        .flatten()
        .collect();
    match Upstreams::many(up) {
        Some(ups) => Some(Route::Forward(ups)),
        None => routes.first().cloned(),
    }
}

/// Keeps `out` equal to [`combine`] of `inners` until `cancel` (or until every inner
/// table's writer is gone). Writers of the inner tables (one supervisor per replica)
/// never see each other; readers of `out` (the proxy, through `admin::gate`) see one
/// site. `out` is only written when the combination changes.
pub async fn merge(
    mut inners: Vec<RouteRx>,
    out: RouteTx,
    cancel: tokio_util::sync::CancellationToken,
) {
    let mut open: Vec<bool> = vec![true; inners.len()];
    loop {
        let now: Vec<Route> = inners
            .iter_mut()
            .map(|rx| rx.borrow_and_update().clone())
            .collect();
        if let Some(route) = combine(&now) {
            out.send_if_modified(|r| {
                let changed = *r != route;
                if changed {
                    *r = route;
                }
                changed
            });
        }
        let waits: Vec<_> = inners
            .iter_mut()
            .zip(&open)
            .enumerate()
            .filter(|(_, (_, open))| **open)
            .map(|(i, (rx, _))| Box::pin(async move { (i, rx.changed().await.is_ok()) }))
            .collect();
        if waits.is_empty() {
            return;
        }
        tokio::select! {
            ((i, alive), _, _) = futures_util::future::select_all(waits) => {
                if !alive {
                    open[i] = false;
                }
            }
            _ = cancel.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(phase: Phase) -> Route {
        Route::Hold(Hold {
            phase,
            detail: String::new(),
        })
    }

    fn up(n: u16) -> Uri {
        format!("http://127.0.0.1:{n}/").parse().expect("uri")
    }

    #[test]
    fn combine_forwards_to_every_forwarding_table_in_order_else_the_first_hold() {
        let routes = [
            Route::forward(up(1)),
            hold(Phase::Restarting),
            Route::forward(up(3)),
        ];
        assert_eq!(
            combine(&routes),
            Some(Route::Forward(
                Upstreams::many(vec![up(1), up(3)]).expect("two")
            ))
        );
        let held = [hold(Phase::Restarting), hold(Phase::Starting)];
        assert_eq!(combine(&held), Some(hold(Phase::Restarting)));
        assert_eq!(combine(&[]), None);
    }

    #[tokio::test]
    async fn wait_idle_returns_when_the_last_request_ends_or_false_after_max() {
        use std::time::Duration;
        let inflight = Inflight::default();
        let a: Uri = "http://10.0.0.5:8080".parse().expect("uri");
        let a_slash: Uri = "http://10.0.0.5:8080/".parse().expect("uri");
        assert!(
            inflight.wait_idle(&a, Duration::ZERO).await,
            "unknown is idle"
        );
        let first = RequestGuard::new(inflight.counts(&a));
        let second = RequestGuard::new(inflight.counts(&a_slash));
        let tunnel = TunnelGuard::new(inflight.counts(&a));
        assert_eq!(
            inflight.count(&a_slash),
            2,
            "same upstream with or without /"
        );
        assert_eq!(inflight.tunnels(&a), 1);
        assert!(!inflight.wait_idle(&a, Duration::from_millis(50)).await);
        drop(first);
        let waiter = {
            let inflight = inflight.clone();
            let a = a.clone();
            tokio::spawn(async move { inflight.wait_idle(&a, Duration::from_secs(10)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "one request still in flight");
        drop(second);
        let idle = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken when the count reached 0")
            .expect("task");
        assert!(idle);
        // Tunnels are not requests: idle with a tunnel open.
        assert_eq!(inflight.tunnels(&a), 1);
        drop(tunnel);
        assert_eq!(inflight.tunnels(&a), 0);
    }

    #[tokio::test]
    async fn merge_follows_each_replica_and_writes_only_changes() {
        let (a_tx, a_rx) = table(hold(Phase::Starting));
        let (b_tx, b_rx) = table(hold(Phase::Starting));
        let (out_tx, mut out_rx) = table(hold(Phase::Pulling));
        let cancel = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(merge(vec![a_rx, b_rx], out_tx, cancel.clone()));
        let next = |rx: &mut RouteRx| {
            let mut rx = rx.clone();
            async move {
                tokio::time::timeout(std::time::Duration::from_secs(5), rx.changed())
                    .await
                    .expect("merge wrote in time")
                    .expect("merge alive");
                rx.borrow_and_update().clone()
            }
        };
        assert_eq!(next(&mut out_rx).await, hold(Phase::Starting));
        out_rx.borrow_and_update();
        b_tx.send_replace(Route::forward(up(2)));
        assert_eq!(next(&mut out_rx).await, Route::forward(up(2)));
        out_rx.borrow_and_update();
        a_tx.send_replace(Route::forward(up(1)));
        assert_eq!(
            next(&mut out_rx).await,
            Route::Forward(Upstreams::many(vec![up(1), up(2)]).expect("two"))
        );
        out_rx.borrow_and_update();
        // Replica 1 restarting: only replica 2 is left in rotation.
        a_tx.send_replace(hold(Phase::Restarting));
        assert_eq!(next(&mut out_rx).await, Route::forward(up(2)));
        cancel.cancel();
        task.await.expect("merge ends on cancel");
    }
}
