//! Keeps `webui up` running: tasks, shutdown, container restarts, health and routing.
//!
//! - [`Supervisor`]: one root [`CancellationToken`]; every task (proxy listeners,
//!   certificate renewal, control socket, Docker event watcher, container monitor)
//!   gets a child token and runs on one [`TaskTracker`]. The first fatal error cancels
//!   the root and is what [`Supervisor::wait`] returns; SIGINT/SIGTERM cancel the root
//!   too, and then it returns `Ok`. Either way the tasks get a bounded time to drain.
//!   Containers are never stopped on exit (restart policy `unless-stopped`).
//! - [`monitor`]: the one task that decides what the proxy does with requests. It
//!   reads the project's Docker events ([`crate::docker::events`]) and polls Open
//!   WebUI's `/health` on loopback (PITFALLS 17), and writes the route table:
//!   `Forward` while healthy, `Hold` (the starting page, JSON 503 for API clients,
//!   503 for WebSocket upgrades) otherwise, with a public phase text that never holds
//!   log lines or internal addresses.
//! - Restarts: a container that dies is usually brought back by Docker's own
//!   `unless-stopped` policy (a crash, or SIGKILL of its process); the monitor only
//!   watches then. When Docker does not (after `docker kill`, or a policy that gave
//!   up), the monitor starts it itself after [`RESTART_GRACE`], with exponential
//!   backoff. A `docker stop` (a `stop` event) is deliberate and respected. A crash
//!   loop — [`CrashLoop::limit`] exits within [`CrashLoop::window`] — stops the
//!   container (so Docker's policy stops too), keeps its last log lines for
//!   `webui status`, and shows a "stopped" page until the next `webui up`.
//! - [`Live`]: what the monitor knows, shared with the control socket (`webui status`
//!   of a running supervisor).
//!
//! This module wires `docker`, `route` and the control socket; the proxy and ACME
//! only see their own small types.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::up::Project;
use crate::docker::events::{self, Action, Event};
use crate::docker::health::{self, Health};
use crate::docker::spec::{Names, short_id};
use crate::docker::{self, Role, logs};
use crate::error::UserError;
use crate::output::Printer;
use crate::route::{Hold, Phase, Route, RouteTx};

/// How long after a container died the monitor lets Docker's restart policy bring it
/// back before starting it itself.
pub const RESTART_GRACE: Duration = Duration::from_secs(3);
/// `/health` polling: while healthy, and while waiting for it to come (back) up.
const POLL_HEALTHY: Duration = Duration::from_secs(5);
const POLL_WAITING: Duration = Duration::from_millis(500);
/// Failed polls in a row before a healthy upstream is taken out of the route. Events
/// (a container dying) take it out at once.
const POLL_FAILURES: u32 = 3;
/// A `stop` this close before losing the engine is taken for the engine's shutdown.
const ENGINE_STOP: Duration = Duration::from_secs(15);
/// Log lines kept for a crash loop's report.
const CRASH_LINES: usize = 20;

// ------------------------------------------------------------------ tasks

/// Tasks, their cancellation, and the first fatal error.
#[derive(Clone)]
pub struct Supervisor {
    root: CancellationToken,
    tracker: TaskTracker,
    failure: Arc<Mutex<Option<anyhow::Error>>>,
}

impl Default for Supervisor {
    fn default() -> Self {
        Self::new()
    }
}

impl Supervisor {
    pub fn new() -> Self {
        Self {
            root: CancellationToken::new(),
            tracker: TaskTracker::new(),
            failure: Arc::new(Mutex::new(None)),
        }
    }

    /// The root token: cancelling it (a signal, a failure) stops every task.
    pub fn token(&self) -> CancellationToken {
        self.root.clone()
    }

    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// Records a fatal error (the first one wins) and cancels everything.
    pub fn fail(&self, e: anyhow::Error) {
        if let Ok(mut f) = self.failure.lock()
            && f.is_none()
        {
            *f = Some(e);
        }
        self.root.cancel();
    }

    /// Runs a task with its own child token. An error is fatal. When `critical`,
    /// returning before shutdown is fatal too (the proxy must not just stop).
    pub fn spawn<F, Fut>(&self, name: &'static str, critical: bool, task: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let token = self.root.child_token();
        let fut = task(token);
        let me = self.clone();
        self.tracker.spawn(async move {
            match fut.await {
                Err(e) => me.fail(e.context(format!("{name} failed"))),
                Ok(()) if critical && !me.root.is_cancelled() => {
                    me.fail(anyhow::anyhow!("{name} stopped unexpectedly"));
                }
                Ok(()) => {}
            }
        });
    }

    /// Waits until the root is cancelled, then gives the tasks up to `drain` to
    /// finish. Returns the fatal error, if one caused the stop.
    pub async fn wait(&self, drain: Duration) -> anyhow::Result<()> {
        self.root.cancelled().await;
        self.tracker.close();
        if tokio::time::timeout(drain, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "tasks still running after {}; exiting anyway",
                humantime::format_duration(drain)
            );
        }
        match self.failure.lock().ok().and_then(|mut f| f.take()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

// ------------------------------------------------------------------ crash loops

/// When restarts stop: `limit` exits within `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashLoop {
    pub limit: u32,
    pub window: Duration,
}

impl Default for CrashLoop {
    fn default() -> Self {
        Self {
            limit: 5,
            window: Duration::from_secs(600),
        }
    }
}

impl std::fmt::Display for CrashLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}",
            self.limit,
            humantime::format_duration(self.window)
        )
    }
}

impl CrashLoop {
    /// Parses `N/DURATION` (`5/10m`); `N` >= 1.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        let bad = || {
            UserError::new(format!("--crash-loop `{s}` is not EXITS/DURATION"))
                .hint("e.g. --crash-loop 5/10m: stop restarting after 5 exits within 10 minutes")
        };
        let (n, d) = s.trim().split_once('/').ok_or_else(bad)?;
        let limit: u32 = n.trim().parse().map_err(|_| bad())?;
        let window = humantime::parse_duration(d.trim()).map_err(|_| bad())?;
        if limit == 0 || window.is_zero() {
            return Err(bad().into());
        }
        Ok(Self { limit, window })
    }
}

/// Exit times within the crash-loop window.
#[derive(Debug, Default)]
struct Exits(VecDeque<Instant>);

impl Exits {
    /// Records an exit at `now`; returns how many fall within `window`.
    fn record(&mut self, now: Instant, window: Duration) -> u32 {
        self.0.push_back(now);
        self.count(now, window)
    }

    fn count(&mut self, now: Instant, window: Duration) -> u32 {
        while self
            .0
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            self.0.pop_front();
        }
        u32::try_from(self.0.len()).unwrap_or(u32::MAX)
    }

    /// A deliberate stop is not a crash.
    fn forget_last(&mut self) {
        self.0.pop_back();
    }
}

/// Delay before the monitor's `n`-th restart in a row (from 0): 1 s doubling, at most
/// 1 min.
pub fn restart_delay(n: u32) -> Duration {
    Duration::from_secs((1u64 << n.min(6)).min(60))
}

// ------------------------------------------------------------------ live state

/// `starting` | `healthy` | `unhealthy` | `stopped` | `updating`.
pub fn upstream_state(route: &Route) -> &'static str {
    match route {
        Route::Forward(_) => "healthy",
        Route::Hold(h) => match h.phase {
            Phase::Pulling | Phase::Starting => "starting",
            Phase::Restarting => "unhealthy",
            Phase::Stopped => "stopped",
            Phase::Updating => "updating",
        },
    }
}

/// The running supervisor's view, served on the control socket (`status`). Times are
/// RFC 3339.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Live {
    pub pid: u32,
    pub project: String,
    pub started_at: String,
    /// `starting` | `healthy` | `unhealthy` | `stopped` | `updating`.
    pub state: String,
    /// The public page's phase and text while not healthy.
    pub phase: Option<String>,
    pub detail: Option<String>,
    pub upstream: String,
    pub https: Vec<String>,
    pub http: Vec<String>,
    /// The last `/health` probe.
    pub health: Option<HealthLive>,
    pub services: Vec<ServiceLive>,
    pub docker: DockerLive,
    /// The crash-loop limit, `N/DURATION`.
    pub crash_loop_limit: String,
    /// The most recent problems, newest last (at most 10).
    pub last_errors: Vec<ErrorLive>,
    /// Open WebUI was healthy at least once under this supervisor.
    pub ever_healthy: bool,
    /// `webui update` is swapping the container: the "updating" page is shown and
    /// nothing is restarted until it says `updated`.
    pub updating: bool,
    /// `up --replicas N` (N > 1): each replica's own view, replica 1 first (empty for
    /// a single Open WebUI). `state` above is then the site's (any replica healthy).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<ReplicaLive>,
    /// `--backup-every`: the schedule and how it went (absent without one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backups: Option<BackupsLive>,
    /// `--notify-url-file`: the webhook's host (its path may hold its secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify: Option<String>,
}

/// Scheduled backups in [`Live`] (`commands::scheduled`); `status` and `doctor` read
/// it back from the control socket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BackupsLive {
    /// The interval, e.g. `1day`.
    pub every: String,
    pub keep: usize,
    pub dir: String,
    /// The last archive written by this `up`, and when.
    pub last: Option<String>,
    pub last_at: Option<String>,
    pub next_at: Option<String>,
    /// Why the last attempt failed; cleared by a success.
    pub last_error: Option<String>,
    /// Backups written since this `up` started.
    pub made: u64,
}

impl BackupsLive {
    pub fn new(schedule: &crate::config::up::BackupSchedule, dir: &std::path::Path) -> Self {
        Self {
            every: humantime::format_duration(schedule.every).to_string(),
            keep: schedule.keep,
            dir: dir.display().to_string(),
            ..Default::default()
        }
    }

    /// The schedule in the control socket's `status` answer, if `up` has one.
    pub fn from_live(live: &serde_json::Value) -> Option<Self> {
        live.get("backups")
            .filter(|b| b.is_object())
            .and_then(|b| serde_json::from_value(b.clone()).ok())
    }

    /// `every 1day, the newest 7 kept in DIR`: how `up`, `status` and `doctor` name
    /// the schedule.
    pub fn schedule_text(&self) -> String {
        format!(
            "every {}, the newest {} kept in {}",
            self.every, self.keep, self.dir
        )
    }
}

/// One replica in [`Live::replicas`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplicaLive {
    pub replica: u32,
    pub container: String,
    pub upstream: String,
    /// `starting` | `healthy` | `unhealthy` | `stopped` | `updating`: whether the
    /// proxy sends it requests (`healthy`) and why not.
    pub state: String,
    pub detail: Option<String>,
    pub health: Option<HealthLive>,
}

/// One replica's monitor state, for [`aggregate`].
pub struct ReplicaPart {
    pub replica: u32,
    pub container: String,
    pub upstream: String,
    pub live: SharedLive,
}

/// `up --replicas N`: keeps the main [`Live`] (the control socket's `status`) the sum
/// of the per-replica monitors' (replica 1's also watches Postgres and Redis): services
/// and errors of all, the site's state from `site` (the merged route), each replica's
/// state in `replicas`; passes a change of `updating` down to every monitor. Until
/// `cancel`.
pub async fn aggregate(
    main: SharedLive,
    parts: Vec<ReplicaPart>,
    mut site: crate::route::RouteRx,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut last_updating = false;
    loop {
        let route = site.borrow_and_update().clone();
        // Passed down only when it changes: the rolling update sets one replica's own
        // `updating` (rolling::Handover), which must not be cleared under it.
        let updating = snapshot(&main).updating;
        let push = updating != last_updating;
        last_updating = updating;
        let mut services = Vec::new();
        let mut errors = Vec::new();
        let mut replicas = Vec::new();
        let mut ever = false;
        let mut first: Option<Live> = None;
        for p in &parts {
            if push {
                edit(&p.live, |l| l.updating = updating);
            }
            let l = snapshot(&p.live);
            services.extend(l.services.iter().cloned());
            errors.extend(l.last_errors.iter().cloned());
            ever |= l.ever_healthy;
            replicas.push(ReplicaLive {
                replica: p.replica,
                container: p.container.clone(),
                upstream: p.upstream.clone(),
                state: l.state.clone(),
                detail: l.detail.clone(),
                health: l.health.clone(),
            });
            first.get_or_insert(l);
        }
        edit(&main, |m| {
            m.state = upstream_state(&route).to_string();
            (m.phase, m.detail) = match &route {
                Route::Forward(_) => (None, None),
                Route::Hold(h) => (Some(h.phase.as_str().to_string()), Some(h.detail.clone())),
            };
            m.services = services;
            m.replicas = replicas;
            m.ever_healthy |= ever;
            if let Some(f) = &first {
                m.health = f.health.clone();
                m.docker = f.docker.clone();
            }
            for e in errors {
                if !m
                    .last_errors
                    .iter()
                    .any(|x| x.at == e.at && x.message == e.message)
                {
                    m.last_errors.push(e);
                }
            }
            m.last_errors.sort_by(|a, b| a.at.cmp(&b.at));
            let extra = m.last_errors.len().saturating_sub(10);
            m.last_errors.drain(..extra);
        });
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            r = site.changed() => if r.is_err() { return Ok(()) },
            _ = tick.tick() => {}
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct HealthLive {
    pub status: String,
    pub detail: Option<String>,
    pub checked_at: String,
    pub failures_in_a_row: u32,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ServiceLive {
    pub service: String,
    pub container: String,
    /// Short id; null when the container does not exist.
    pub id: Option<String>,
    pub running: bool,
    /// Exits seen while this supervisor ran.
    pub exits: u32,
    /// Exits within the crash-loop window.
    pub recent_exits: u32,
    /// Starts made by the supervisor itself (Docker's own restarts not counted).
    pub restarts: u32,
    /// Set when restarts stopped because of a crash loop.
    pub crash_loop: Option<CrashLive>,
    /// Stopped on purpose (`docker stop`, `webui down`): not restarted.
    pub stopped_deliberately: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CrashLive {
    pub reason: String,
    pub at: String,
    pub last_lines: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DockerLive {
    pub connected: bool,
    pub reconnects: u32,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ErrorLive {
    pub at: String,
    pub message: String,
}

pub type SharedLive = Arc<Mutex<Live>>;

pub fn now_text() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// Edits the shared state (a poisoned lock is recovered: the state is plain data).
pub fn edit(live: &SharedLive, f: impl FnOnce(&mut Live)) {
    let mut guard = live.lock().unwrap_or_else(|p| p.into_inner());
    f(&mut guard);
}

pub fn snapshot(live: &SharedLive) -> Live {
    live.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Keeps a problem for `webui status` (the last 10) and sends it to the webhook of
/// `--notify-url-file`, if any.
pub fn record_error(live: &SharedLive, message: impl Into<String>) {
    let message = message.into();
    crate::notify::send(&message);
    edit(live, |l| {
        l.last_errors.push(ErrorLive {
            at: now_text(),
            message,
        });
        let extra = l.last_errors.len().saturating_sub(10);
        l.last_errors.drain(..extra);
    });
}

/// Sets the route and mirrors it into the live state.
pub fn set_route(routes: &RouteTx, live: &SharedLive, route: Route) {
    edit(live, |l| {
        l.state = upstream_state(&route).to_string();
        match &route {
            Route::Forward(_) => {
                l.phase = None;
                l.detail = None;
            }
            Route::Hold(h) => {
                l.phase = Some(h.phase.as_str().to_string());
                l.detail = Some(h.detail.clone());
            }
        }
    });
    routes.send_replace(route);
}

/// Rewrites the text of the hold in `phase` if that is still the route, atomically: a
/// progress line (e.g. `up`'s "waiting (1m 30s)") must never undo a change another
/// writer made meanwhile. Before, `up` re-set the starting hold it had just read, and
/// when the monitor's `Forward` came in between, the site stayed on the starting page
/// for good while Open WebUI answered 200.
pub fn retext(routes: &RouteTx, live: &SharedLive, phase: Phase, detail: impl Into<String>) {
    let detail = detail.into();
    let changed = routes.send_if_modified(|r| match r {
        Route::Hold(h) if h.phase == phase && h.detail != detail => {
            h.detail = detail.clone();
            true
        }
        _ => false,
    });
    if changed {
        edit(live, |l| {
            if l.phase.as_deref() == Some(phase.as_str()) {
                l.detail = Some(detail);
            }
        });
    }
}

pub fn hold(routes: &RouteTx, live: &SharedLive, phase: Phase, detail: impl Into<String>) {
    set_route(
        routes,
        live,
        Route::Hold(Hold {
            phase,
            detail: detail.into(),
        }),
    );
}

// ------------------------------------------------------------------ the monitor

/// Public texts of the starting page. No log lines, no addresses.
pub mod text {
    pub const WAITING: &str = "Waiting for Open WebUI to start.";
    pub const CRASHED: &str = "Restarting after a crash.";
    pub const NOT_ANSWERING: &str = "Open WebUI is not answering; waiting for it to come back.";
    pub const STOPPED: &str = "Open WebUI was stopped by its administrator.";
    pub const CRASH_LOOP: &str = "Open WebUI stopped after crashing repeatedly. Its administrator can see why with `webui status`.";
    pub const ENGINE: &str = "Waiting for the container engine to come back.";
    pub const UPDATING: &str =
        "A new version is being installed; this page reloads by itself when it is ready.";
}

/// What the monitor watches and where it reports.
pub struct Monitor {
    pub project: Project,
    /// Services to watch; `primary` is the one whose health decides the route.
    pub roles: Vec<Role>,
    /// Open WebUI, or Ollama for `up --ollama-only` (probed on `/api/version`); `None`
    /// for the monitor of Postgres and Redis (`up --replicas`), which only restarts.
    pub primary: Option<Role>,
    /// `up --replicas N` (N > 1): the replica's Open WebUI container this monitor
    /// watches (named in its messages); `None` for a single Open WebUI.
    pub replica: Option<String>,
    pub upstream: http::Uri,
    pub crash_loop: CrashLoop,
    pub routes: RouteTx,
    pub live: SharedLive,
    pub printer: Printer,
}

struct Svc {
    role: Role,
    name: String,
    id: Option<String>,
    running: bool,
    exits: Exits,
    /// When to check whether Docker brought it back, after a death.
    check_at: Option<Instant>,
    restarts_in_a_row: u32,
    crash_loop: bool,
    stopped: bool,
    /// When the last `stop` event came: a stop right before the engine went away was
    /// the engine's shutdown, not an administrator's.
    stopped_at: Option<Instant>,
}

impl Monitor {
    /// Runs until `cancel`. Never fails: Docker errors are retried and reported in
    /// the live state.
    pub async fn run(self, cancel: CancellationToken) -> anyhow::Result<()> {
        let (tx, mut rx) = mpsc::channel(64);
        let watcher_cancel = cancel.child_token();
        // Dropped (and so cancelled) when the monitor returns.
        let _watcher_guard = watcher_cancel.clone().drop_guard();
        tokio::spawn(events::watch(self.project.clone(), tx, watcher_cancel));

        let names = Names::new(&self.project);
        let mut svcs: Vec<Svc> = self
            .roles
            .iter()
            .map(|&role| Svc {
                role,
                name: match (&self.replica, role) {
                    (Some(r), Role::OpenWebui) => r.clone(),
                    _ => names.container(role).to_string(),
                },
                id: None,
                running: false,
                exits: Exits::default(),
                check_at: None,
                restarts_in_a_row: 0,
                crash_loop: false,
                stopped: false,
                stopped_at: None,
            })
            .collect();
        let base = self.upstream.to_string().trim_end_matches('/').to_string();
        let mut docker = docker::connect().await.ok();
        let mut healthy = matches!(*self.routes.borrow(), Route::Forward(_));
        if healthy {
            edit(&self.live, |l| l.ever_healthy = true);
        }
        let mut failures = 0u32;
        let mut next_probe = Instant::now();
        let mut was_updating = false;
        self.publish(&svcs);
        loop {
            // While `webui update` swaps the container, watch nothing: it stops,
            // renames and replaces containers on purpose. Afterwards look again at
            // everything and forward once the new one answers.
            let updating = snapshot(&self.live).updating;
            if updating {
                was_updating = true;
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    _ = rx.recv() => {}
                    _ = tokio::time::sleep(POLL_WAITING) => {}
                }
                continue;
            }
            // The route holds the "updating" page while this monitor still thinks it
            // forwards: `updating` was set and cleared between two looks (a sleep of
            // up to POLL_HEALTHY), e.g. a rolling update handing back a replica it had
            // just taken out. Look again as after any update (once: `healthy` drops).
            let missed_update = healthy
                && matches!(
                    &*self.routes.borrow(),
                    Route::Hold(h) if h.phase == Phase::Updating
                );
            if was_updating || missed_update {
                was_updating = false;
                healthy = false;
                failures = 0;
                next_probe = Instant::now();
                if docker.is_none() {
                    docker = docker::connect().await.ok();
                }
                if let Some(d) = &docker {
                    for s in svcs.iter_mut() {
                        s.exits = Exits::default();
                        s.stopped = false;
                        s.stopped_at = None;
                        s.check_at = None;
                        self.reinspect(d, s, &mut healthy).await;
                    }
                }
                healthy = false;
            }
            let next_check = svcs.iter().filter_map(|s| s.check_at).min();
            let wake = next_check.map_or(next_probe, |c| c.min(next_probe));
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                ev = rx.recv() => {
                    let Some(ev) = ev else { return Ok(()) };
                    if docker.is_none() {
                        docker = docker::connect().await.ok();
                    }
                    self.on_event(ev, &mut svcs, docker.as_ref(), &mut healthy).await;
                    if !healthy {
                        next_probe = next_probe.min(Instant::now() + POLL_WAITING);
                    }
                }
                _ = tokio::time::sleep_until(wake.into()) => {
                    let now = Instant::now();
                    if docker.is_none() {
                        docker = docker::connect().await.ok();
                    }
                    for s in svcs.iter_mut().filter(|s| s.check_at.is_some_and(|t| t <= now)) {
                        s.check_at = None;
                        if let Some(d) = &docker {
                            self.check_restart(d, s).await;
                        }
                    }
                    if next_probe <= now {
                        let ow_blocked = svcs
                            .iter()
                            .any(|s| Some(s.role) == self.primary && (s.crash_loop || s.stopped));
                        if !ow_blocked && self.primary.is_some() {
                            self.probe(&base, &mut healthy, &mut failures, &mut svcs).await;
                        }
                        next_probe = Instant::now() + if healthy { POLL_HEALTHY } else { POLL_WAITING };
                    }
                }
            }
            self.publish(&svcs);
        }
    }

    /// "Open WebUI", or with replicas "Open WebUI replica <container>".
    fn who(&self) -> String {
        match &self.replica {
            Some(name) => format!("Open WebUI replica {name}"),
            None => "Open WebUI".to_string(),
        }
    }

    fn publish(&self, svcs: &[Svc]) {
        edit(&self.live, |l| {
            for s in svcs {
                let entry = match l.services.iter_mut().position(|x| x.container == s.name) {
                    Some(i) => &mut l.services[i],
                    None => {
                        l.services.push(ServiceLive {
                            service: s.role.as_str().to_string(),
                            container: s.name.clone(),
                            ..Default::default()
                        });
                        let last = l.services.len() - 1;
                        &mut l.services[last]
                    }
                };
                entry.container = s.name.clone();
                entry.id = s.id.as_deref().map(short_id);
                entry.running = s.running;
                entry.recent_exits = u32::try_from(s.exits.0.len()).unwrap_or(u32::MAX);
                entry.stopped_deliberately = s.stopped;
            }
        });
    }

    fn edit_svc(&self, name: &str, f: impl FnOnce(&mut ServiceLive)) {
        edit(&self.live, |l| {
            if let Some(s) = l.services.iter_mut().find(|s| s.container == name) {
                f(s);
            }
        });
    }

    async fn on_event(
        &self,
        ev: Event,
        svcs: &mut [Svc],
        docker: Option<&bollard::Docker>,
        healthy: &mut bool,
    ) {
        match ev {
            Event::Connected => {
                let again = edit_ret(&self.live, |l| {
                    l.docker.connected = true;
                    l.docker.reconnects > 0
                });
                if again {
                    self.printer.line("reconnected to the Docker engine");
                }
                // Events may have been missed: look at every container now.
                if let Some(d) = docker {
                    for s in svcs.iter_mut() {
                        self.reinspect(d, s, healthy).await;
                    }
                }
            }
            Event::Disconnected(why) => {
                let was = edit_ret(&self.live, |l| {
                    let was = l.docker.connected;
                    l.docker.connected = false;
                    if was {
                        l.docker.reconnects += 1;
                    }
                    was
                });
                if was {
                    self.printer
                        .warn(format!("lost the Docker engine ({why}); reconnecting"));
                    record_error(&self.live, format!("lost the Docker engine: {why}"));
                }
                // dockerd stops every container when it shuts down (`stop` events
                // just before the stream ends): not a deliberate stop.
                for s in svcs.iter_mut() {
                    if s.stopped && s.stopped_at.is_some_and(|t| t.elapsed() < ENGINE_STOP) {
                        s.stopped = false;
                        if Some(s.role) == self.primary {
                            hold(&self.routes, &self.live, Phase::Restarting, text::ENGINE);
                        }
                    }
                }
            }
            Event::Container {
                role,
                name,
                id,
                action,
            } => {
                // By name too: replicas share the role.
                let Some(s) = svcs.iter_mut().find(|s| s.role == role && s.name == name) else {
                    return;
                };
                self.on_container(s, id, action, docker, healthy).await;
            }
        }
    }

    async fn on_container(
        &self,
        s: &mut Svc,
        id: String,
        action: Action,
        docker: Option<&bollard::Docker>,
        healthy: &mut bool,
    ) {
        let is_ow = Some(s.role) == self.primary;
        match action {
            Action::Start => {
                s.id = Some(id);
                s.running = true;
                s.stopped = false;
                s.check_at = None;
                if is_ow && !s.crash_loop {
                    *healthy = false;
                    hold(&self.routes, &self.live, Phase::Starting, text::WAITING);
                }
            }
            Action::Die(code) => {
                if s.id.as_deref().is_some_and(|known| known != id) {
                    return;
                }
                s.running = false;
                if s.crash_loop {
                    return;
                }
                let now = Instant::now();
                let recent = s.exits.record(now, self.crash_loop.window);
                self.edit_svc(&s.name, |x| x.exits += 1);
                let code = code.map_or("unknown".to_string(), |c| c.to_string());
                if recent >= self.crash_loop.limit {
                    if let Some(d) = docker {
                        self.crash_loop(d, s, recent).await;
                    }
                    return;
                }
                self.printer.warn(format!(
                    "{} exited (code {code}); {} of {} exits allowed within {}",
                    s.name,
                    recent,
                    self.crash_loop.limit,
                    humantime::format_duration(self.crash_loop.window)
                ));
                record_error(&self.live, format!("{} exited with code {code}", s.name));
                s.check_at = Some(now + RESTART_GRACE);
                if is_ow {
                    *healthy = false;
                    hold(&self.routes, &self.live, Phase::Restarting, text::CRASHED);
                }
            }
            Action::Kill => {}
            Action::Stop => {
                if s.id.as_deref().is_some_and(|known| known != id) || s.crash_loop {
                    return;
                }
                // `docker stop` / `webui down`: deliberate, not a crash, not restarted.
                s.exits.forget_last();
                s.check_at = None;
                s.stopped = true;
                s.stopped_at = Some(Instant::now());
                s.running = false;
                self.printer.line(format!(
                    "{} was stopped (not by a crash); not restarting it",
                    s.name
                ));
                if is_ow {
                    *healthy = false;
                    hold(&self.routes, &self.live, Phase::Stopped, text::STOPPED);
                }
            }
            Action::Destroy => {
                if s.id.as_deref() == Some(id.as_str()) {
                    s.id = None;
                    s.running = false;
                }
            }
        }
    }

    /// After a (re)connection: what the engine says now.
    async fn reinspect(&self, d: &bollard::Docker, s: &mut Svc, healthy: &mut bool) {
        match d.inspect_container(&s.name, None).await {
            Ok(c) => {
                let st = c.state.unwrap_or_default();
                s.id = c.id;
                s.running = st.running.unwrap_or(false);
                let restarting = st.restarting.unwrap_or(false);
                if s.running {
                    // Back (e.g. Docker restarted it with the engine): the probe
                    // forwards once it answers.
                    s.stopped = false;
                    s.check_at = None;
                    if Some(s.role) == self.primary && !*healthy && !s.crash_loop {
                        hold(&self.routes, &self.live, Phase::Starting, text::WAITING);
                    }
                }
                if !s.running && !restarting && !s.stopped && !s.crash_loop {
                    // Died while nobody listened (e.g. the engine restarted): give
                    // Docker's policy its grace, then start it.
                    s.check_at = Some(Instant::now() + RESTART_GRACE);
                    if Some(s.role) == self.primary {
                        *healthy = false;
                        hold(&self.routes, &self.live, Phase::Restarting, text::CRASHED);
                    }
                }
            }
            Err(e) if docker::is_not_found(&e) => {
                s.id = None;
                s.running = false;
            }
            Err(e) => record_error(
                &self.live,
                format!("cannot inspect {}: {}", s.name, docker::engine_message(&e)),
            ),
        }
    }

    /// Docker had its chance; start the container when it is still down.
    async fn check_restart(&self, d: &bollard::Docker, s: &mut Svc) {
        if s.stopped || s.crash_loop {
            return;
        }
        let state = match d.inspect_container(&s.name, None).await {
            Ok(c) => c.state.unwrap_or_default(),
            Err(e) => {
                if !docker::is_not_found(&e) {
                    s.check_at = Some(Instant::now() + restart_delay(s.restarts_in_a_row));
                }
                return;
            }
        };
        if state.running.unwrap_or(false) || state.restarting.unwrap_or(false) {
            // Docker's restart policy did it.
            s.restarts_in_a_row = 0;
            return;
        }
        match d.start_container(&s.name, None).await {
            Ok(()) => {
                s.restarts_in_a_row = s.restarts_in_a_row.saturating_add(1);
                self.edit_svc(&s.name, |x| x.restarts += 1);
                self.printer.line(format!("restarted {}", s.name));
            }
            Err(e) => {
                let delay = restart_delay(s.restarts_in_a_row);
                s.restarts_in_a_row = s.restarts_in_a_row.saturating_add(1);
                let msg = format!(
                    "cannot restart {}: {}; trying again in {}",
                    s.name,
                    docker::engine_message(&e),
                    humantime::format_duration(delay)
                );
                self.printer.warn(&msg);
                record_error(&self.live, msg);
                s.check_at = Some(Instant::now() + delay);
            }
        }
    }

    async fn crash_loop(&self, d: &bollard::Docker, s: &mut Svc, recent: u32) {
        s.crash_loop = true;
        s.check_at = None;
        let reason = format!(
            "{} exited {recent} times within {}; restarts stopped (crash loop)",
            s.name,
            humantime::format_duration(self.crash_loop.window)
        );
        let lines = logs::tail_lines(d, &s.name, CRASH_LINES)
            .await
            .unwrap_or_default();
        // Stopping makes Docker's own policy stop restarting it too.
        let stop = d
            .stop_container(
                &s.name,
                Some(bollard::query_parameters::StopContainerOptions {
                    t: Some(5),
                    signal: None,
                }),
            )
            .await;
        if let Err(e) = stop
            && !docker::is_not_found(&e)
        {
            record_error(
                &self.live,
                format!("cannot stop {}: {}", s.name, docker::engine_message(&e)),
            );
        }
        self.printer.warn(format!(
            "{reason}. Its last log lines:\n    {}\nFix the cause, then run `webui up` again",
            lines.join("\n    ")
        ));
        record_error(&self.live, reason.clone());
        self.edit_svc(&s.name.clone(), |x| {
            x.crash_loop = Some(CrashLive {
                reason,
                at: now_text(),
                last_lines: lines,
            })
        });
        if Some(s.role) == self.primary {
            hold(&self.routes, &self.live, Phase::Stopped, text::CRASH_LOOP);
        }
    }

    async fn probe(&self, base: &str, healthy: &mut bool, failures: &mut u32, svcs: &mut [Svc]) {
        let h = match self.primary {
            Some(Role::Ollama) => health::probe_ollama(base).await,
            _ if self.replica.is_some() => crate::docker::replicas::probe(base).await,
            _ => health::probe(base).await,
        };
        edit(&self.live, |l| {
            let f = if h == Health::Healthy {
                0
            } else {
                *failures + 1
            };
            l.health = Some(HealthLive {
                status: h.as_str().to_string(),
                detail: h.detail().map(str::to_string),
                checked_at: now_text(),
                failures_in_a_row: f,
            });
        });
        if h == Health::Healthy {
            *failures = 0;
            if !*healthy {
                *healthy = true;
                // The first time is announced by `webui up` itself ("ready at ...").
                if snapshot(&self.live).ever_healthy {
                    let again = format!("{} answers again; forwarding", self.who());
                    crate::notify::send(&again);
                    self.printer.line(again);
                }
                edit(&self.live, |l| l.ever_healthy = true);
                set_route(
                    &self.routes,
                    &self.live,
                    Route::forward(self.upstream.clone()),
                );
                for s in svcs.iter_mut() {
                    s.restarts_in_a_row = 0;
                }
            }
            return;
        }
        *failures += 1;
        if *healthy && *failures >= POLL_FAILURES {
            *healthy = false;
            let what = match &self.replica {
                Some(_) => "no longer sending it requests",
                None => "showing the starting page until it is back",
            };
            self.printer.warn(format!(
                "{} is not answering ({}); {what}",
                self.who(),
                h.as_str()
            ));
            record_error(
                &self.live,
                format!(
                    "{} is not answering: {}",
                    self.who(),
                    h.detail().unwrap_or("")
                ),
            );
            hold(
                &self.routes,
                &self.live,
                Phase::Restarting,
                text::NOT_ANSWERING,
            );
        }
    }
}

fn edit_ret<T>(live: &SharedLive, f: impl FnOnce(&mut Live) -> T) -> T {
    let mut guard = live.lock().unwrap_or_else(|p| p.into_inner());
    f(&mut guard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retext_changes_only_the_hold_it_names_and_never_undoes_a_forward() {
        let live: SharedLive = Arc::new(Mutex::new(Live::default()));
        let (tx, rx) = crate::route::table(Route::Hold(Hold {
            phase: Phase::Starting,
            detail: "waiting".into(),
        }));
        hold(&tx, &live, Phase::Starting, "waiting");
        retext(&tx, &live, Phase::Starting, "waiting (30s)");
        assert!(matches!(&*rx.borrow(), Route::Hold(h) if h.detail == "waiting (30s)"));
        assert_eq!(snapshot(&live).detail.as_deref(), Some("waiting (30s)"));
        // The monitor forwards; a late progress line must not bring the page back.
        let up = http::Uri::from_static("http://127.0.0.1:8080/");
        set_route(&tx, &live, Route::forward(up.clone()));
        retext(&tx, &live, Phase::Starting, "waiting (1m 00s)");
        assert_eq!(*rx.borrow(), Route::forward(up));
        assert_eq!(snapshot(&live).state, "healthy");
        // A hold in another phase is left alone too.
        hold(&tx, &live, Phase::Restarting, "restarting");
        retext(&tx, &live, Phase::Starting, "waiting");
        assert!(matches!(&*rx.borrow(), Route::Hold(h) if h.phase == Phase::Restarting));
    }

    #[test]
    fn crash_loop_flag() {
        assert_eq!(CrashLoop::default().to_string(), "5/10m");
        let c = CrashLoop::parse("3/1m").unwrap();
        assert_eq!((c.limit, c.window), (3, Duration::from_secs(60)));
        for bad in ["", "5", "0/1m", "x/1m", "5/", "5/zz", "5/0s"] {
            let e = CrashLoop::parse(bad).unwrap_err();
            assert_eq!(crate::error::exit_code(&e), 1, "{bad}");
        }
    }

    #[test]
    fn exits_are_counted_within_the_window() {
        let mut e = Exits::default();
        let t0 = Instant::now();
        let w = Duration::from_secs(10);
        assert_eq!(e.record(t0, w), 1);
        assert_eq!(e.record(t0 + Duration::from_secs(5), w), 2);
        assert_eq!(
            e.record(t0 + Duration::from_secs(12), w),
            2,
            "the first fell out"
        );
        e.forget_last();
        assert_eq!(e.count(t0 + Duration::from_secs(12), w), 1);
    }

    #[test]
    fn restart_backoff() {
        assert_eq!(restart_delay(0), Duration::from_secs(1));
        assert_eq!(restart_delay(3), Duration::from_secs(8));
        assert_eq!(restart_delay(30), Duration::from_secs(60));
    }

    #[test]
    fn states_from_routes() {
        let hold = |phase| {
            Route::Hold(Hold {
                phase,
                detail: String::new(),
            })
        };
        assert_eq!(
            upstream_state(&Route::forward(http::Uri::from_static("http://x/"))),
            "healthy"
        );
        assert_eq!(upstream_state(&hold(Phase::Pulling)), "starting");
        assert_eq!(upstream_state(&hold(Phase::Restarting)), "unhealthy");
        assert_eq!(upstream_state(&hold(Phase::Stopped)), "stopped");
        assert_eq!(upstream_state(&hold(Phase::Updating)), "updating");
    }

    #[tokio::test]
    async fn first_failure_cancels_everything_and_is_returned() {
        let s = Supervisor::new();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        s.spawn("waiter", false, |token| async move {
            token.cancelled().await;
            let _ = tx.send(());
            Ok(())
        });
        s.spawn("failer", false, |_| async { Err(anyhow::anyhow!("boom")) });
        let e = s.wait(Duration::from_secs(5)).await.unwrap_err();
        assert!(format!("{e:#}").contains("failer failed: boom"), "{e:#}");
        assert!(rx.await.is_ok(), "the other task saw the cancellation");
    }

    #[tokio::test]
    async fn a_critical_task_ending_early_is_fatal_and_a_signal_is_not() {
        let s = Supervisor::new();
        s.spawn("proxy", true, |_| async { Ok(()) });
        let e = s.wait(Duration::from_secs(5)).await.unwrap_err();
        assert!(format!("{e:#}").contains("proxy stopped unexpectedly"));

        let s = Supervisor::new();
        s.spawn("proxy", true, |t| async move {
            t.cancelled().await;
            Ok(())
        });
        s.token().cancel();
        assert!(s.wait(Duration::from_secs(5)).await.is_ok());
    }

    #[tokio::test]
    async fn drain_is_bounded() {
        let s = Supervisor::new();
        s.spawn("stuck", false, |_| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        });
        s.token().cancel();
        let t = Instant::now();
        assert!(s.wait(Duration::from_millis(100)).await.is_ok());
        assert!(t.elapsed() < Duration::from_secs(2));
    }
}
