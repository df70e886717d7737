//! Upstreams given by host name, balanced across every address the name has.
//!
//! Docker Swarm's `tasks.<service>` resolves to one address per running task, so
//! `webui proxy --upstream http://tasks.open-webui:8080` follows the service as it
//! scales and as tasks are replaced: each name is resolved again every [`REFRESH`]
//! and the route is rewritten only when the set of addresses changed. An answer with
//! no address (or a failed lookup) keeps the last set, so a DNS hiccup never empties
//! the route; until a name has resolved once, the name itself is the upstream (the
//! connector resolves it on each connection).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http::Uri;
use tokio_util::sync::CancellationToken;

use crate::route::{Route, RouteTx, Upstreams};

/// How often names are resolved again.
pub const REFRESH: Duration = Duration::from_secs(2);

/// True when `uri`'s host is a name to resolve, false for an IP address.
pub fn is_name(uri: &Uri) -> bool {
    uri.host()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
        .is_some_and(|h| h.parse::<IpAddr>().is_err())
}

/// The addresses `uri`'s host resolves to (with its port), sorted and each once;
/// empty when the lookup failed or found nothing.
pub async fn lookup(uri: &Uri) -> Vec<SocketAddr> {
    let (Some(host), Some(port)) = (uri.host(), uri.port_u16()) else {
        return Vec::new();
    };
    match tokio::net::lookup_host((host, port)).await {
        Ok(addrs) => {
            let mut v: Vec<SocketAddr> = addrs.collect();
            v.sort();
            v.dedup();
            v
        }
        Err(e) => {
            tracing::debug!(target: "webui::proxy", %uri, error = %e, "lookup failed");
            Vec::new()
        }
    }
}

/// The upstreams for what is known: each configured upstream in order, a name
/// replaced by its addresses when it has any, each upstream once.
pub fn upstreams(configured: &[Uri], known: &[Vec<SocketAddr>]) -> Option<Upstreams> {
    let mut out: Vec<Uri> = Vec::new();
    for (i, uri) in configured.iter().enumerate() {
        let addrs = known.get(i).map(Vec::as_slice).unwrap_or_default();
        if addrs.is_empty() {
            if !out.contains(uri) {
                out.push(uri.clone());
            }
            continue;
        }
        for addr in addrs {
            // SocketAddr's Display brackets IPv6 (`[::1]:8080`), as a URI wants.
            if let Ok(u) = format!("http://{addr}/").parse::<Uri>()
                && !out.contains(&u)
            {
                out.push(u);
            }
        }
    }
    Upstreams::many(out)
}

/// The addresses of each configured upstream now: a lookup for names, nothing for
/// IP addresses (they stand for themselves).
pub async fn resolve_all(configured: &[Uri]) -> Vec<Vec<SocketAddr>> {
    let mut known = Vec::with_capacity(configured.len());
    for uri in configured {
        known.push(if is_name(uri) {
            lookup(uri).await
        } else {
            Vec::new()
        });
    }
    known
}

/// What a new answer for one name does to what is known of it: a non-empty answer
/// replaces it, an empty one keeps the last (true when that happened, to log it).
pub fn merge_answer(known: &mut Vec<SocketAddr>, answer: Vec<SocketAddr>) -> bool {
    if answer.is_empty() {
        return !known.is_empty();
    }
    *known = answer;
    false
}

/// Keeps `tx` forwarding to every address of `configured` (starting from `known`, as
/// [`resolve_all`] returned it) until `cancel`, resolving names every [`REFRESH`] and
/// writing the route only when it changed.
pub async fn follow(
    configured: Vec<Uri>,
    mut known: Vec<Vec<SocketAddr>>,
    tx: RouteTx,
    cancel: CancellationToken,
) {
    known.resize(configured.len(), Vec::new());
    let mut kept_last = vec![false; configured.len()];
    loop {
        tokio::select! {
            _ = tokio::time::sleep(REFRESH) => {}
            _ = cancel.cancelled() => return,
        }
        for (i, uri) in configured.iter().enumerate() {
            if !is_name(uri) {
                continue;
            }
            let kept = merge_answer(&mut known[i], lookup(uri).await);
            if kept && !kept_last[i] {
                tracing::warn!(
                    target: "webui::proxy",
                    %uri,
                    "the upstream's name resolves to no address now; keeping the last known ones"
                );
            }
            kept_last[i] = kept;
        }
        let Some(ups) = upstreams(&configured, &known) else {
            continue;
        };
        let route = Route::Forward(ups);
        tx.send_if_modified(|r| {
            let changed = *r != route;
            if changed {
                tracing::info!(target: "webui::proxy", upstreams = ?upstream_list(&route), "upstream addresses changed");
                *r = route.clone();
            }
            changed
        });
    }
}

fn upstream_list(route: &Route) -> Vec<String> {
    match route {
        Route::Forward(ups) => ups.as_slice().iter().map(|u| u.to_string()).collect(),
        Route::Hold(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> Uri {
        s.parse().expect("uri")
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    #[test]
    fn names_expand_to_their_addresses_and_ip_upstreams_stay() {
        assert!(is_name(&uri("http://tasks.open-webui:8080/")));
        assert!(!is_name(&uri("http://10.0.0.1:8080/")));
        assert!(!is_name(&uri("http://[::1]:8080/")));
        let configured = [
            uri("http://10.0.0.1:8080/"),
            uri("http://tasks.owui:8080/"),
            uri("http://other:8080/"),
        ];
        let known = vec![
            vec![],
            vec![addr("10.0.1.2:8080"), addr("[fd00::3]:8080")],
            vec![],
        ];
        let ups = upstreams(&configured, &known).expect("some");
        let got: Vec<String> = ups.as_slice().iter().map(|u| u.to_string()).collect();
        assert_eq!(
            got,
            [
                "http://10.0.0.1:8080/",
                "http://10.0.1.2:8080/",
                "http://[fd00::3]:8080/",
                "http://other:8080/", // not resolved yet: the name itself
            ]
        );
    }

    #[test]
    fn an_empty_answer_keeps_the_last_addresses() {
        let mut known = vec![addr("10.0.1.2:8080")];
        assert!(merge_answer(&mut known, vec![]), "kept, to be logged");
        assert_eq!(known, [addr("10.0.1.2:8080")]);
        assert!(!merge_answer(&mut known, vec![addr("10.0.1.3:8080")]));
        assert_eq!(known, [addr("10.0.1.3:8080")]);
        let mut none = Vec::new();
        assert!(!merge_answer(&mut none, vec![]), "nothing to keep");
    }

    #[tokio::test]
    async fn follow_writes_the_route_only_when_addresses_change() {
        // `localhost` resolves (from /etc/hosts) to the same addresses every time:
        // after the first write nothing changes, so nothing is written again.
        let configured = vec![uri("http://localhost:8080/")];
        let known = resolve_all(&configured).await;
        assert!(!known[0].is_empty(), "localhost resolves");
        let first = Route::Forward(upstreams(&configured, &known).expect("some"));
        let (tx, mut rx) = crate::route::table(Route::forward(uri("http://stale:1/")));
        rx.borrow_and_update();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(follow(configured, Vec::new(), tx, cancel.clone()));
        tokio::time::timeout(REFRESH * 3, rx.changed())
            .await
            .expect("written after a refresh")
            .expect("open");
        assert_eq!(*rx.borrow_and_update(), first);
        assert!(
            tokio::time::timeout(REFRESH * 2, rx.changed())
                .await
                .is_err(),
            "unchanged addresses are not written again"
        );
        cancel.cancel();
        task.await.expect("ends on cancel");
    }
}
