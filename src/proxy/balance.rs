//! Which upstream a request goes to when the route lists several (replicas).
//!
//! - Least outstanding requests: the upstream with the fewest HTTP requests in flight
//!   ([`route::Inflight`]) wins; ties go round-robin from a rotating start, so an idle
//!   site still spreads its requests.
//! - Passive ejection: an upstream that refused, reset or timed out a connection is
//!   skipped for a short period that grows with each failure in a row (1 s doubling
//!   to 30 s) and is forgotten on its first answer. When every upstream is ejected
//!   they are tried anyway: the route says they are there.
//! - Stickiness: Open WebUI's socket.io (`/ws/`) keeps per-connection state in the
//!   process that answered the handshake (the polling transport and reconnects must
//!   come back to it), so with several upstreams `/ws/` answers carry a cookie naming
//!   the upstream by an opaque id (a keyed hash, never the address) and `/ws/`
//!   requests carrying it go back there while it is in the route and not ejected.
//!   Open WebUI's default (`ENABLE_WEBSOCKET_SUPPORT=true`) is websocket-only, where a
//!   connection stays on its replica anyway; the cookie is what keeps the polling
//!   transport (`ENABLE_WEBSOCKET_SUPPORT=false`) working, and costs nothing otherwise.
//!
//! No lock is taken per request: a route's upstreams are resolved to their counters
//! once per route snapshot ([`Snapshot`]), after that it is atomics only.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use http::{HeaderMap, HeaderValue, Uri, header};

use crate::route::{Counts, Inflight, Upstreams};

/// The cookie naming the upstream a socket.io session lives on.
pub const COOKIE: &str = "webui_replica";
/// Requests under this path are sticky (Open WebUI's socket.io is `/ws/socket.io/`).
pub const STICKY_PREFIX: &str = "/ws/";

/// The first ejection after a connect failure; doubled per further failure in a row.
const EJECT_BASE: Duration = Duration::from_secs(1);
const EJECT_MAX: Duration = Duration::from_secs(30);

pub(crate) struct Balancer {
    inflight: Inflight,
    /// Ejection state per upstream, kept across route changes (touched only when a
    /// new route snapshot is built).
    health: Mutex<HashMap<Uri, Arc<Health>>>,
    /// The last snapshots built: two, because a site serving the Ollama API as well
    /// alternates between two routes.
    recent: [ArcSwapOption<Snapshot>; 2],
    /// Which of `recent` the next new snapshot replaces.
    oldest: AtomicUsize,
    /// Where the round-robin tie-break starts next.
    turn: AtomicUsize,
    /// Key of the cookie ids: random per process, so ids say nothing of addresses.
    ids: std::hash::RandomState,
    epoch: Instant,
}

/// One route's upstreams with their counters, built when the route changes.
pub(crate) struct Snapshot {
    ups: Upstreams,
    pub slots: Vec<Slot>,
}

pub(crate) struct Slot {
    pub uri: Uri,
    pub counts: Arc<Counts>,
    health: Arc<Health>,
    /// The cookie value naming this upstream.
    pub id: String,
}

#[derive(Default)]
struct Health {
    /// Connect failures in a row.
    failures: AtomicU32,
    /// Milliseconds since the balancer's epoch until which it is skipped.
    ejected_until: AtomicU64,
}

impl Balancer {
    pub fn new(inflight: Inflight) -> Balancer {
        Balancer {
            inflight,
            health: Mutex::default(),
            recent: [ArcSwapOption::empty(), ArcSwapOption::empty()],
            oldest: AtomicUsize::new(0),
            turn: AtomicUsize::new(0),
            ids: std::hash::RandomState::new(),
            epoch: Instant::now(),
        }
    }

    /// The snapshot for `ups`: the cached one while the route is unchanged.
    pub fn snapshot(&self, ups: &Upstreams) -> Arc<Snapshot> {
        for recent in &self.recent {
            if let Some(s) = &*recent.load()
                && s.ups == *ups
            {
                return s.clone();
            }
        }
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        let slots = ups
            .as_slice()
            .iter()
            .map(|uri| Slot {
                uri: uri.clone(),
                counts: self.inflight.counts(uri),
                health: health.entry(uri.clone()).or_default().clone(),
                id: format!("{:016x}", self.ids.hash_one(uri.to_string())),
            })
            .collect();
        drop(health);
        let snap = Arc::new(Snapshot {
            ups: ups.clone(),
            slots,
        });
        let i = self.oldest.fetch_add(1, Ordering::Relaxed) % self.recent.len();
        self.recent[i].store(Some(snap.clone()));
        snap
    }

    /// The upstream for the next attempt: `sticky` (a cookie id) when it names one in
    /// the snapshot that is neither ejected nor tried, else the least loaded. `tried`
    /// has bit `i` set for each slot already tried. None when every slot was tried.
    pub fn pick(&self, snap: &Snapshot, tried: u64, sticky: Option<&str>) -> Option<usize> {
        let now = self.now_ms();
        let ejected = |i: usize| snap.slots[i].health.ejected_until.load(Ordering::Relaxed) > now;
        let is_tried = |i: usize| i < 64 && tried & (1 << i) != 0;
        if let Some(id) = sticky
            && let Some(i) = snap.slots.iter().position(|s| s.id == id)
            && !ejected(i)
            && !is_tried(i)
        {
            return Some(i);
        }
        let start = if snap.slots.len() > 1 {
            self.turn.fetch_add(1, Ordering::Relaxed)
        } else {
            0
        };
        choose(snap.slots.len(), start, |i| Candidate {
            load: snap.slots[i].counts.requests(),
            ejected: ejected(i),
            tried: is_tried(i),
        })
    }

    /// The slot could not be connected to (refused, reset, timed out): skip it for a
    /// while, longer each time in a row.
    pub fn connect_failed(&self, slot: &Slot) {
        let n = slot.health.failures.fetch_add(1, Ordering::Relaxed).min(16);
        let period = EJECT_BASE.saturating_mul(1 << n).min(EJECT_MAX);
        let until = self.now_ms() + period.as_millis() as u64;
        slot.health.ejected_until.store(until, Ordering::Relaxed);
    }

    /// The slot answered: it is in good standing again.
    pub fn answered(&self, slot: &Slot) {
        // Read first: most answers come from healthy upstreams, and a store per
        // request would bounce the cache line between cores.
        if slot.health.failures.load(Ordering::Relaxed) != 0 {
            slot.health.failures.store(0, Ordering::Relaxed);
            slot.health.ejected_until.store(0, Ordering::Relaxed);
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

/// What [`choose`] knows of one upstream.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate {
    /// Requests in flight.
    pub load: usize,
    pub ejected: bool,
    /// Already tried for this request.
    pub tried: bool,
}

/// The least loaded untried candidate among those not ejected, or among the ejected
/// ones when no other is left; ties go to the first from `start` (mod `n`) on.
pub(crate) fn choose(n: usize, start: usize, at: impl Fn(usize) -> Candidate) -> Option<usize> {
    let best = |want_ejected: bool| {
        let mut best: Option<(usize, usize)> = None;
        for k in 0..n {
            let i = (start.wrapping_add(k)) % n;
            let c = at(i);
            if c.tried || c.ejected != want_ejected {
                continue;
            }
            if best.is_none_or(|(_, load)| c.load < load) {
                best = Some((i, c.load));
            }
        }
        best.map(|(i, _)| i)
    };
    best(false).or_else(|| best(true))
}

/// The sticky cookie's value in the request, if any.
pub(crate) fn sticky_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE).then_some(value)
        })
}

/// The `Set-Cookie` pinning the client's socket.io session to the upstream `id`.
pub(crate) fn set_cookie(id: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{COOKIE}={id}; Path={STICKY_PREFIX}; HttpOnly; Secure; SameSite=Lax"
    ))
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cands(list: &[(usize, bool, bool)]) -> impl Fn(usize) -> Candidate + '_ {
        |i| Candidate {
            load: list[i].0,
            ejected: list[i].1,
            tried: list[i].2,
        }
    }

    #[test]
    fn choose_takes_the_least_loaded_and_rotates_ties() {
        let idle = [(0, false, false); 3];
        let picks: Vec<_> = (0..6).map(|s| choose(3, s, cands(&idle))).collect();
        assert_eq!(
            picks,
            [0, 1, 2, 0, 1, 2].map(Some),
            "an idle site spreads round-robin"
        );
        let busy = [(2, false, false), (0, false, false), (1, false, false)];
        for s in 0..3 {
            assert_eq!(
                choose(3, s, cands(&busy)),
                Some(1),
                "least outstanding wins"
            );
        }
        let tie = [(1, false, false), (3, false, false), (1, false, false)];
        assert_eq!(choose(3, 1, cands(&tie)), Some(2));
        assert_eq!(choose(3, 0, cands(&tie)), Some(0));
    }

    #[test]
    fn choose_skips_ejected_and_tried_but_falls_back_to_ejected() {
        let one_down = [(0, true, false), (5, false, false), (9, false, false)];
        assert_eq!(
            choose(3, 0, cands(&one_down)),
            Some(1),
            "ejected skipped even if idle"
        );
        let tried = [(0, false, true), (5, false, false), (1, false, true)];
        assert_eq!(choose(3, 0, cands(&tried)), Some(1));
        let all_down = [(3, true, false), (1, true, false)];
        assert_eq!(
            choose(2, 0, cands(&all_down)),
            Some(1),
            "all ejected: tried anyway, least loaded first"
        );
        let done = [(0, false, true), (0, true, true)];
        assert_eq!(choose(2, 0, cands(&done)), None);
        assert_eq!(choose(0, 0, cands(&[])), None);
    }

    fn ups(ports: &[u16]) -> Upstreams {
        Upstreams::many(
            ports
                .iter()
                .map(|p| format!("http://10.0.0.1:{p}/").parse().expect("uri"))
                .collect(),
        )
        .expect("non-empty")
    }

    #[test]
    fn ejection_grows_and_ends_on_an_answer_and_sticky_follows_the_cookie() {
        let b = Balancer::new(Inflight::default());
        let snap = b.snapshot(&ups(&[1, 2]));
        assert!(
            Arc::ptr_eq(&snap, &b.snapshot(&ups(&[1, 2]))),
            "cached per route"
        );
        let other = b.snapshot(&ups(&[9]));
        assert!(
            Arc::ptr_eq(&snap, &b.snapshot(&ups(&[1, 2]))),
            "two routes cached"
        );
        assert!(Arc::ptr_eq(&other, &b.snapshot(&ups(&[9]))));
        b.connect_failed(&snap.slots[0]);
        for _ in 0..4 {
            assert_eq!(b.pick(&snap, 0, None), Some(1), "slot 0 ejected");
        }
        let first = snap.slots[0].health.ejected_until.load(Ordering::Relaxed);
        b.connect_failed(&snap.slots[0]);
        let second = snap.slots[0].health.ejected_until.load(Ordering::Relaxed);
        assert!(second >= first + 1000, "the second ejection is longer");
        // Ejection survives a route change that keeps the upstream.
        let snap2 = b.snapshot(&ups(&[1, 2, 3]));
        assert_ne!(b.pick(&snap2, 0, None), Some(0));
        b.answered(&snap2.slots[0]);
        let picks: Vec<_> = (0..3).filter_map(|_| b.pick(&snap2, 0, None)).collect();
        assert!(
            picks.contains(&0),
            "back in rotation after an answer: {picks:?}"
        );
        // Sticky: the cookie's upstream, unless tried (then the others).
        let id = snap2.slots[2].id.clone();
        assert!(
            !id.contains("10.0.0.1") && id.len() == 16,
            "opaque id: {id}"
        );
        for _ in 0..4 {
            assert_eq!(b.pick(&snap2, 0, Some(&id)), Some(2));
        }
        assert_ne!(b.pick(&snap2, 1 << 2, Some(&id)), Some(2));
        assert_eq!(
            b.snapshot(&ups(&[3])).slots[0].id,
            id,
            "stable per upstream"
        );
    }

    #[test]
    fn the_sticky_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("token=abc; lang=en"),
        );
        assert_eq!(sticky_cookie(&h), None);
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1;webui_replica=00ff; b=2"),
        );
        assert_eq!(sticky_cookie(&h), Some("00ff"));
        let set = set_cookie("00ff").expect("valid");
        assert_eq!(
            set.to_str().expect("ascii"),
            "webui_replica=00ff; Path=/ws/; HttpOnly; Secure; SameSite=Lax"
        );
    }
}
