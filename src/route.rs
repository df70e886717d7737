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
