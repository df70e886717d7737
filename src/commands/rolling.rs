//! The rolling update of `webui update` across replicas (`webui up --replicas N`,
//! N > 1): one replica at a time, health-gated, the others serving meanwhile.
//!
//! Two halves meet over the control socket of the running `webui up`:
//!
//! - [`Handover`] lives in `webui up`, which owns the replicas' route tables. It
//!   answers three requests, one line each:
//!   - `replica-updating K`: replica K leaves rotation (its inner route holds
//!     `Phase::Updating`, so `route::merge` drops it while the others serve) and its
//!     monitor stops watching it (the roll stops and replaces it on purpose). Refused
//!     while another replica is being updated, and when another replica is out of
//!     rotation already (that would leave fewer than N-1 serving) unless K itself is
//!     not serving.
//!   - `replica-state K`: `{"state", "inflight"}`: the replica's route state
//!     (`supervisor::upstream_state`) and its in-flight proxied requests.
//!   - `replica-updated K`: the monitor watches it again; it forwards (rejoins the
//!     rotation) after its first healthy probe.
//! - [`Roll`] runs in `webui update` and does the Docker side, like the single update:
//!   the image is pulled once (by the caller); the shared database is dumped
//!   ([`dump_database`]: the first new replica runs the new version's migrations on
//!   it); then for each replica in index order,
//!   skipping replicas already on the target image: take it out of rotation, wait
//!   until its in-flight requests are answered (at most [`DRAIN`]; websockets are
//!   cut, socket.io clients reconnect to another replica), stop it (gracefully,
//!   `ensure::STOP_TIMEOUT_SECS`), rename it `<name>-pre-update`, create the new one
//!   from its own spec with the new image (same environment, secret, volume, port,
//!   labels), start it, wait for `/health` and [`SETTLE`] more without a crash, remove
//!   the old one, and wait until `webui up` has it back in rotation; then the next.
//! - A replica whose new version does not become healthy stops the roll: its logs are
//!   saved to `<project dir>/update-failed-<time>.log`, it is removed, the old
//!   container is renamed back, started and put back in rotation, and the command
//!   exits 1 naming what runs where and how to retry or go back. Replicas not reached
//!   yet were never touched. Postgres and Redis are never touched; no volume is.
//!
//! Without a running `webui up` the replicas are still replaced one at a time (there
//! is no proxy to take them out of).
//!
//! SIGINT/SIGTERM: the replica being replaced is finished (back in rotation) and no
//! other one is started (exit 1); a second signal quits at once. A roll killed outright
//! leaves its replica out of rotation in `webui up`: the next roll hands it back first.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::Docker;
use http::Uri;
use serde_json::{Value, json};

use crate::config::up::Project;
use crate::docker::Role;
use crate::docker::health;
use crate::docker::pin::now_rfc3339;
use crate::docker::project::ProjectState;
use crate::docker::spec::{ContainerSpec, LABEL_PROJECT, LABEL_ROLE, LABEL_UPSTREAM};
use crate::docker::update::{self as dupdate, ASIDE_SUFFIX};
use crate::error::UserError;
use crate::output::Printer;
use crate::route::{Inflight, Phase, RouteTx};
use crate::supervisor::{self, SharedLive};

/// The label carrying a replica's number (1..N) when N > 1.
pub const LABEL_REPLICA: &str = "webui.replica";

/// How long a replica out of rotation is given to finish its in-flight requests.
pub const DRAIN: Duration = Duration::from_secs(30);

/// How long the new version must stay up and healthy after its first healthy answer.
pub const SETTLE: Duration = Duration::from_secs(10);

/// How long a healthy new replica may take to be back in the running proxy's rotation
/// (the monitor probes at once, then every 0.5 s while waiting).
const REJOIN: Duration = Duration::from_secs(60);

/// How often `webui update` asks the running `webui up` while it waits.
const POLL: Duration = Duration::from_millis(100);

// ------------------------------------------------------------------ webui up's side

/// One replica as `webui up` supervises it.
pub struct ReplicaHandle {
    /// 1..N.
    pub index: u32,
    pub container: String,
    /// Where the proxy sends its requests (as in the route's `Upstreams`).
    pub upstream: Uri,
    /// The replica's inner route table (merged into the site's).
    pub routes: RouteTx,
    /// The replica monitor's live state: `updating` makes it watch nothing.
    pub live: SharedLive,
}

/// The control-socket requests of a rolling update, answered by `webui up`. Made
/// before the control socket is served (clones share it); the replicas are attached
/// once their monitors exist. Until then, and for a single Open WebUI, `replica-*`
/// requests are refused.
#[derive(Clone, Default)]
pub struct Handover(Arc<Shared>);

#[derive(Default)]
struct Shared {
    replicas: std::sync::OnceLock<Vec<ReplicaHandle>>,
    /// The proxy's counts (`Proxy::inflight`); None without a proxy (`--behind-proxy`).
    inflight: Option<Inflight>,
    /// Serialises `replica-updating` (its check and its change are one step).
    leaving: std::sync::Mutex<()>,
}

/// A parsed `replica-*` request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    Updating(u32),
    State(u32),
    Updated(u32),
}

/// `None` for lines that are not `replica-*` requests; `Some(Err)` for a malformed one.
fn parse(line: &str) -> Option<Result<Request, String>> {
    let (verb, arg) = line.split_once(' ').unwrap_or((line, ""));
    let make: fn(u32) -> Request = match verb {
        "replica-updating" => Request::Updating,
        "replica-state" => Request::State,
        "replica-updated" => Request::Updated,
        v if v.starts_with("replica-") => {
            return Some(Err(format!(
                "unknown request `{v}`; known: replica-updating K, replica-state K, replica-updated K"
            )));
        }
        _ => return None,
    };
    Some(
        arg.trim()
            .parse::<u32>()
            .ok()
            .filter(|k| *k >= 1)
            .map(make)
            .ok_or_else(|| format!("`{verb}` needs a replica number (1, 2, ...), not `{arg}`")),
    )
}

fn refused(why: impl Into<String>) -> Value {
    json!({ "ok": false, "error": why.into() })
}

/// Refused for now: asking again later may succeed (another replica is not serving).
fn busy(why: impl Into<String>) -> Value {
    json!({ "ok": false, "error": why.into(), "busy": true })
}

impl Handover {
    pub fn new(inflight: Option<Inflight>) -> Self {
        Self(Arc::new(Shared {
            inflight,
            ..Default::default()
        }))
    }

    /// The replicas `webui up --replicas N` supervises (once; later calls are ignored).
    pub fn attach(&self, replicas: Vec<ReplicaHandle>) {
        let _ = self.0.replicas.set(replicas);
    }

    fn updating(r: &ReplicaHandle) -> bool {
        supervisor::snapshot(&r.live).updating
    }

    fn state(r: &ReplicaHandle) -> &'static str {
        supervisor::upstream_state(&r.routes.borrow())
    }

    /// The answer to `line` when it is a `replica-*` request, else None (the caller's
    /// other requests).
    pub fn answer(&self, line: &str) -> Option<Value> {
        let req = match parse(line)? {
            Ok(r) => r,
            Err(e) => return Some(refused(e)),
        };
        let k = match req {
            Request::Updating(k) | Request::State(k) | Request::Updated(k) => k,
        };
        let Some(all) = self.0.replicas.get() else {
            return Some(refused(
                "this webui up runs a single Open WebUI (no --replicas), or its replicas are still starting",
            ));
        };
        let Some(r) = all.iter().find(|r| r.index == k) else {
            return Some(refused(format!(
                "there is no replica {k}; this webui up runs {} (1..{})",
                all.len(),
                all.len()
            )));
        };
        let inflight = self.0.inflight.as_ref();
        Some(match req {
            Request::State(_) => json!({
                "ok": true,
                "replica": k,
                "container": r.container,
                "state": Self::state(r),
                "updating": Self::updating(r),
                "inflight": inflight.map_or(0, |i| i.count(&r.upstream)),
                "tunnels": inflight.map_or(0, |i| i.tunnels(&r.upstream)),
            }),
            Request::Updating(_) => {
                let _one_at_a_time = self.0.leaving.lock().unwrap_or_else(|p| p.into_inner());
                let others: Vec<&ReplicaHandle> = all.iter().filter(|o| o.index != k).collect();
                if let Some(o) = others.iter().find(|o| Self::updating(o)) {
                    return Some(busy(format!(
                        "replica {} is being updated; one replica at a time",
                        o.index
                    )));
                }
                let serving = Self::state(r) == "healthy";
                let out: Vec<String> = others
                    .iter()
                    .filter(|o| Self::state(o) != "healthy")
                    .map(|o| format!("replica {} is {}", o.index, Self::state(o)))
                    .collect();
                if serving && !out.is_empty() {
                    return Some(busy(format!(
                        "{}: taking replica {k} out too would leave fewer than {} of {} serving",
                        out.join(", "),
                        all.len() - 1,
                        all.len()
                    )));
                }
                supervisor::edit(&r.live, |l| l.updating = true);
                supervisor::hold(
                    &r.routes,
                    &r.live,
                    Phase::Updating,
                    supervisor::text::UPDATING,
                );
                json!({ "ok": true, "replica": k })
            }
            Request::Updated(_) => {
                supervisor::edit(&r.live, |l| l.updating = false);
                json!({ "ok": true, "replica": k })
            }
        })
    }
}

// ------------------------------------------------------------------ webui update's side

/// One replica found in Docker.
#[derive(Debug, Clone)]
pub struct Found {
    pub index: u32,
    pub name: String,
    pub spec: ContainerSpec,
    /// `http://127.0.0.1:PORT` (no trailing slash), for `/health`.
    pub upstream: String,
}

/// The project's replicas (containers of role open-webui with a replica label), in
/// index order. Empty when the project does not run replicas (N = 1: today's single
/// update). An interrupted earlier roll (a `-pre-update` container) is refused.
pub async fn find(docker: &Docker, project: &Project) -> anyhow::Result<Vec<Found>> {
    let mut filters = std::collections::HashMap::new();
    filters.insert(
        "label".to_string(),
        vec![
            format!("{LABEL_PROJECT}={}", project.key()),
            format!("{LABEL_ROLE}={}", Role::OpenWebui.as_str()),
            LABEL_REPLICA.to_string(),
        ],
    );
    let list = docker
        .list_containers(Some(bollard::query_parameters::ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .map_err(|e| anyhow::Error::new(e).context("cannot list the project's replicas"))?;
    let mut found = Vec::new();
    for c in list {
        let name = c
            .names
            .as_ref()
            .and_then(|n| n.first())
            .map(|n| n.trim_start_matches('/').to_string())
            .unwrap_or_default();
        if let Some(base) = name.strip_suffix(ASIDE_SUFFIX) {
            return Err(interrupted(project, base, &name));
        }
        let labels = c.labels.clone().unwrap_or_default();
        let Some(index) = labels.get(LABEL_REPLICA).and_then(|v| v.parse().ok()) else {
            continue;
        };
        let inspect = docker
            .inspect_container(&name, None)
            .await
            .map_err(|e| anyhow::Error::new(e).context(format!("cannot inspect {name}")))?;
        let (spec, _) = dupdate::spec_of(&inspect)?;
        let upstream = labels
            .get(LABEL_UPSTREAM)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("{name} has no {LABEL_UPSTREAM} label"))?;
        found.push(Found {
            index,
            name,
            spec,
            upstream: upstream.trim_end_matches('/').to_string(),
        });
    }
    found.sort_by_key(|f| f.index);
    Ok(found)
}

fn interrupted(project: &Project, name: &str, aside: &str) -> anyhow::Error {
    UserError::new(format!(
        "a container {aside} exists: an earlier update was interrupted"
    ))
    .hint(format!(
        "if {name} runs fine, remove it with `docker rm {aside}`; otherwise `docker rm -f {name}` and `docker rename {aside} {name}`; then run `webui{} update` again",
        project.flag()
    ))
    .into()
}

/// The image the roll moves every replica to.
#[derive(Debug, Clone)]
pub struct Target {
    pub image: String,
    pub image_id: String,
    pub digest: Option<String>,
    /// How it is shown (digest, else `image (short id)`).
    pub shown: String,
}

/// What one replica went through.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReplicaReport {
    pub replica: u32,
    pub container: String,
    /// `updated` | `up-to-date` | `rolled-back` | `failed` | `not-reached`.
    pub outcome: &'static str,
}

/// How the roll talks to a running `webui up`, if any.
enum Link {
    /// No `webui up` answers: nothing is in rotation to take out.
    Alone,
    Up(std::path::PathBuf),
}

pub struct Roll<'a> {
    pub docker: &'a Docker,
    pub project: &'a Project,
    pub state: &'a ProjectState,
    pub socket: std::path::PathBuf,
    /// Where the database dump made before the roll goes (`<state-dir>/backups`).
    pub backups: std::path::PathBuf,
    pub target: Target,
    pub timeout: Duration,
    pub printer: &'a Printer,
}

/// The order replicas are replaced in: index order, the ones not yet on the target.
pub fn pending<'f>(found: &'f [Found], target_id: &str) -> Vec<&'f Found> {
    found
        .iter()
        .filter(|f| f.spec.image_id != target_id)
        .collect()
}

impl Roll<'_> {
    /// Rolls every replica to the target. Ok with the per-replica outcomes when all
    /// run it; an error (exit 1) naming what failed when one did not come up, with
    /// `reports` filled in for `--json`.
    pub async fn run(
        &self,
        found: &[Found],
        reports: &mut Vec<ReplicaReport>,
        dump: &mut Option<PathBuf>,
    ) -> anyhow::Result<()> {
        let n = found.len();
        let link = self.link(found).await?;
        if matches!(link, Link::Alone) {
            self.printer.line(format!(
                "no webui{} up is running: the {n} replicas are replaced one at a time with no proxy in front",
                self.project.flag()
            ));
        }
        reports.clear();
        reports.extend(found.iter().map(|f| ReplicaReport {
            replica: f.index,
            container: f.name.clone(),
            outcome: if f.spec.image_id == self.target.image_id {
                "up-to-date"
            } else {
                "not-reached"
            },
        }));
        // A roll killed midway (Ctrl-C, SIGKILL) left its replica out of rotation and
        // unwatched in `webui up`: the containers are in place again (`find` checked),
        // so hand such replicas back first.
        if matches!(link, Link::Up(_)) {
            for f in found {
                let v = self
                    .ask(&link, format!("replica-state {}", f.index))
                    .await?;
                if v["updating"] == true {
                    self.printer.line(format!(
                        "replica {} was left out of rotation by an interrupted update; putting it back",
                        f.index
                    ));
                    self.rejoin(&link, f, &format!("replica {}/{n} ({})", f.index, f.name))
                        .await?;
                }
            }
        }
        let todo = pending(found, &self.target.image_id);
        self.printer.line(format!(
            "rolling update of {} of {n} replicas to {}, one at a time",
            todo.len(),
            self.target.shown
        ));
        // The first new replica migrates the shared database: keep what it was.
        if !todo.is_empty() {
            let made = dump_database(self.docker, self.project, &self.backups)
                .await
                .map_err(|e| {
                    e.context("the database could not be backed up, so nothing was updated")
                })?;
            self.printer.line(format!(
                "database backup: {} (pg_dump custom format; `pg_restore --clean` puts it back)",
                made.display()
            ));
            *dump = Some(made);
        }
        let interrupt = stop_after_this_replica();
        for f in todo {
            if interrupt.is_cancelled() {
                return Err(self.interrupted(reports));
            }
            let who = format!("replica {}/{n} ({})", f.index, f.name);
            let result = self.one(&link, f, &who).await;
            let slot = reports
                .iter_mut()
                .find(|r| r.replica == f.index)
                .ok_or_else(|| anyhow::anyhow!("replica {} vanished from the report", f.index))?;
            match result {
                Ok(()) => slot.outcome = "updated",
                Err(failed) => {
                    let rolled_back = &failed.rolled_back;
                    slot.outcome = if rolled_back.is_ok() {
                        "rolled-back"
                    } else {
                        "failed"
                    };
                    return Err(self.stopped(found, reports, f, failed, dump.as_deref()));
                }
            }
        }
        Ok(())
    }

    /// Finds out whether a `webui up` serves these replicas and can hand them over.
    async fn link(&self, found: &[Found]) -> anyhow::Result<Link> {
        let first = found.first().map_or(1, |f| f.index);
        match crate::control::request(&self.socket, &format!("replica-state {first}")).await {
            None => Ok(Link::Alone),
            Some(v) if v["ok"] == true => Ok(Link::Up(self.socket.clone())),
            Some(v) => Err(UserError::new(format!(
                "the running webui{} up cannot take replicas out of rotation one at a time: {}",
                self.project.flag(),
                v["error"].as_str().unwrap_or("it did not say why")
            ))
            .hint(
                "it is an older webui or runs a single replica: restart it with this webui (`webui up --replicas N`), then update",
            )
            .into()),
        }
    }

    async fn ask(&self, link: &Link, line: String) -> anyhow::Result<Value> {
        let Link::Up(socket) = link else {
            return Ok(json!({ "ok": true }));
        };
        let v = crate::control::request(socket, &line)
            .await
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "the running webui up stopped answering on {} (`{line}`)",
                    socket.display()
                )
            })?;
        if v["ok"] != true {
            return Err(UserError::new(format!(
                "the running webui up refused `{line}`: {}",
                v["error"].as_str().unwrap_or("no reason given")
            ))
            .into());
        }
        Ok(v)
    }

    /// Out of rotation, then waits (at most [`DRAIN`]) for its in-flight requests.
    async fn leave(&self, link: &Link, f: &Found, who: &str) -> anyhow::Result<()> {
        let Link::Up(socket) = link else {
            return Ok(());
        };
        // While another replica is not serving (still starting, restarting), wait for
        // it rather than go below N-1.
        let line = format!("replica-updating {}", f.index);
        let start = Instant::now();
        let mut said = false;
        loop {
            let v = crate::control::request(socket, &line).await;
            match v {
                Some(v) if v["ok"] == true => break,
                Some(v) if v["busy"] == true && start.elapsed() < REJOIN => {
                    if !said {
                        said = true;
                        self.printer.line(format!(
                            "{who}: waiting before taking it out: {}",
                            v["error"]
                                .as_str()
                                .unwrap_or("another replica is not serving")
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                _ => {
                    self.ask(link, line.clone()).await?;
                    break;
                }
            }
        }
        self.printer
            .line(format!("{who}: out of rotation; the others serve"));
        // A request that chose this replica just before the route changed is counted
        // a moment later: look after a short grace.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let start = Instant::now();
        let spinner = self.printer.spinner();
        let mut said = false;
        let left = loop {
            let v = self.ask(link, format!("replica-state {}", f.index)).await?;
            let inflight = v["inflight"].as_u64().unwrap_or(0);
            if inflight == 0 || start.elapsed() >= DRAIN {
                break inflight;
            }
            let msg = format!("{who}: waiting for {inflight} request(s) in flight to finish");
            match &spinner {
                Some(pb) => pb.set_message(msg),
                None if !said => {
                    said = true;
                    self.printer.line(msg);
                }
                None => {}
            }
            tokio::time::sleep(POLL).await;
        };
        if let Some(pb) = spinner {
            pb.finish_and_clear();
        }
        if left > 0 {
            self.printer.warn(format!(
                "{who}: {left} request(s) still running after {}; stopping it cuts them",
                health::elapsed_text(DRAIN)
            ));
        }
        Ok(())
    }

    /// Back in rotation: the monitor watches it again and forwards once healthy.
    async fn rejoin(&self, link: &Link, f: &Found, who: &str) -> anyhow::Result<()> {
        self.ask(link, format!("replica-updated {}", f.index))
            .await?;
        if matches!(link, Link::Alone) {
            return Ok(());
        }
        let start = Instant::now();
        loop {
            let v = self.ask(link, format!("replica-state {}", f.index)).await?;
            if v["state"] == "healthy" {
                self.printer.line(format!("{who}: back in rotation"));
                return Ok(());
            }
            if start.elapsed() >= REJOIN {
                return Err(UserError::new(format!(
                    "{who} answers healthy, but the running webui up did not put it back in rotation within {} (it says {})",
                    health::elapsed_text(REJOIN),
                    v["state"].as_str().unwrap_or("nothing")
                ))
                .hint("`webui status` shows every replica; the roll stopped here so that no more replicas leave")
                .into());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Replaces one replica. On failure the old container runs again (when possible).
    async fn one(&self, link: &Link, f: &Found, who: &str) -> Result<(), Failed> {
        let aside = format!("{}{ASIDE_SUFFIX}", f.name);
        // Nothing has changed yet when leaving fails: the roll just stops.
        if let Err(e) = self.leave(link, f, who).await {
            let _ = self.ask(link, format!("replica-updated {}", f.index)).await;
            return Err(Failed {
                why: e,
                logs: None,
                rolled_back: Ok(()),
            });
        }
        let swap = async {
            self.printer.line(format!("{who}: stopping"));
            dupdate::stop(self.docker, &f.name).await?;
            dupdate::rename(self.docker, &f.name, &aside).await?;
            Ok::<(), anyhow::Error>(())
        }
        .await;
        if let Err(e) = swap {
            let back = self.restore(link, f, &aside, who).await;
            return Err(Failed {
                why: e,
                logs: None,
                rolled_back: back,
            });
        }
        let new_spec = dupdate::with_image(
            f.spec.clone(),
            &self.target.image,
            &self.target.image_id,
            self.target.digest.as_deref(),
        );
        let attempt = async {
            dupdate::create(self.docker, &new_spec).await?;
            dupdate::start(self.docker, &f.name).await?;
            self.printer.line(format!(
                "{who}: started from {}; waiting for it to become healthy (up to {})",
                self.target.image,
                health::elapsed_text(self.timeout)
            ));
            let took = self.healthy(f).await?;
            self.printer.line(format!(
                "{who}: healthy after {}; watching it for {} more",
                health::elapsed_text(took),
                health::elapsed_text(SETTLE)
            ));
            dupdate::stays_up(self.docker, &f.name, &f.upstream, SETTLE).await?;
            Ok::<(), anyhow::Error>(())
        }
        .await;
        if let Err(why) = attempt {
            // The full reason with the last log lines once; the error says it short.
            self.printer.warn(format!(
                "{who}: the new version did not come up: {}",
                why.root_cause()
            ));
            let logs = super::update::save_logs(self.docker, &f.name, self.state).await;
            let back = async {
                dupdate::stop(self.docker, &f.name).await?;
                dupdate::remove(self.docker, &f.name).await?;
                self.restore(link, f, &aside, who).await
            }
            .await;
            return Err(Failed {
                why,
                logs,
                rolled_back: back,
            });
        }
        if let Err(e) = dupdate::remove(self.docker, &aside).await {
            self.printer.warn(format!(
                "{who}: the old container {aside} could not be removed ({e:#}); remove it with `docker rm {aside}`"
            ));
        }
        self.rejoin(link, f, who).await.map_err(|e| Failed {
            why: e,
            logs: None,
            rolled_back: Ok(()),
        })?;
        self.printer
            .line(format!("{who}: updated to {}", self.target.shown));
        Ok(())
    }

    /// Waits (up to `--health-timeout`) for the replica's `/health`.
    async fn healthy(&self, f: &Found) -> anyhow::Result<Duration> {
        let mut tick = |_: Duration| {};
        health::wait(
            self.docker,
            &f.name,
            &f.upstream,
            self.timeout,
            self.printer,
            &mut tick,
        )
        .await
    }

    /// The old container back under its name, started, healthy, in rotation.
    async fn restore(&self, link: &Link, f: &Found, aside: &str, who: &str) -> anyhow::Result<()> {
        if dupdate::exists(self.docker, aside).await {
            dupdate::rename(self.docker, aside, &f.name).await?;
        }
        dupdate::start(self.docker, &f.name).await?;
        self.healthy(f).await?;
        self.printer
            .line(format!("{who}: the old version runs again"));
        self.rejoin(link, f, who).await
    }

    /// The error for a roll stopped by SIGINT/SIGTERM between two replicas.
    fn interrupted(&self, reports: &[ReplicaReport]) -> anyhow::Error {
        let list = |outcomes: &[&str]| -> String {
            reports
                .iter()
                .filter(|r| outcomes.contains(&r.outcome))
                .map(|r| r.replica.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let msg = format!(
            "the rolling update to {} was interrupted: replica(s) {} run it, replica(s) {} were not reached and run their old image; every replica is in rotation",
            self.target.shown,
            list(&["updated", "up-to-date"]),
            list(&["not-reached"]),
        );
        let rec = crate::docker::pin::UpdateRecord {
            at: now_rfc3339(),
            from: String::new(),
            to: self.target.shown.clone(),
            outcome: "interrupted".into(),
            detail: Some(msg.clone()),
        };
        let _ = crate::docker::pin::History::update(self.state, |h| h.last_update = Some(rec));
        UserError::new(msg)
            .hint(format!(
                "`webui{} update --image {}` continues with the replicas not on it yet",
                self.project.flag(),
                self.target.image
            ))
            .into()
    }

    /// The error that ends a stopped roll: what failed, what runs where, what next.
    fn stopped(
        &self,
        found: &[Found],
        reports: &[ReplicaReport],
        f: &Found,
        failed: Failed,
        dump: Option<&Path>,
    ) -> anyhow::Error {
        let why_text = short(&failed.why);
        let logs = failed
            .logs
            .as_ref()
            .map(|p| format!("the failed version's logs are in {}; ", p.display()))
            .unwrap_or_default();
        let on_target: Vec<String> = reports
            .iter()
            .filter(|r| matches!(r.outcome, "updated" | "up-to-date"))
            .map(|r| r.replica.to_string())
            .collect();
        let old: Vec<String> = reports
            .iter()
            .filter(|r| matches!(r.outcome, "not-reached" | "rolled-back"))
            .map(|r| r.replica.to_string())
            .collect();
        let from = found
            .iter()
            .find(|o| o.index == f.index)
            .map(|o| o.spec.image.clone())
            .unwrap_or_default();
        let mut runs = Vec::new();
        if !on_target.is_empty() {
            runs.push(format!(
                "replica(s) {} run {}",
                on_target.join(", "),
                self.target.image
            ));
        }
        if !old.is_empty() {
            runs.push(format!(
                "replica(s) {} run {from} as before",
                old.join(", ")
            ));
        }
        let flag = self.project.flag();
        let before = dump
            .map(|d| {
                format!(
                    "; the database as it was before the roll is in {}",
                    d.display()
                )
            })
            .unwrap_or_default();
        let back = match reports.iter().any(|r| r.outcome == "updated") {
            true => format!(", or go back with `webui{flag} update --image {from}`"),
            false => String::new(),
        };
        let hint = format!(
            "{logs}fix the cause and run `webui{flag} update --image {}` again (replicas already on it are skipped){back}; `webui{flag} status` shows every replica{before}",
            self.target.image
        );
        let record = |outcome: &str, detail: String| {
            let rec = crate::docker::pin::UpdateRecord {
                at: now_rfc3339(),
                from: from.clone(),
                to: self.target.shown.clone(),
                outcome: outcome.into(),
                detail: Some(detail),
            };
            let _ = crate::docker::pin::History::update(self.state, |h| h.last_update = Some(rec));
        };
        match failed.rolled_back {
            Ok(()) => {
                let msg = format!(
                    "the rolling update to {} stopped at replica {} ({}): {why_text}; {}",
                    self.target.shown,
                    f.index,
                    f.name,
                    runs.join("; ")
                );
                record("stopped", msg.clone());
                UserError::new(msg).hint(hint).into()
            }
            Err(e) => {
                let msg = format!(
                    "the rolling update to {} stopped at replica {} ({}): {why_text}; putting the old container back failed too: {e:#}; {}",
                    self.target.shown,
                    f.index,
                    f.name,
                    runs.join("; ")
                );
                record("failed", msg.clone());
                UserError::new(msg)
                    .hint(format!(
                        "the old container may be `{}{ASIDE_SUFFIX}` (`docker rename` it back and start it); {hint}",
                        f.name
                    ))
                    .into()
            }
        }
    }
}

/// The project's running Postgres container and the credentials from its environment.
struct Postgres {
    name: String,
    user: String,
    db: String,
    password: String,
}

impl Postgres {
    async fn running(docker: &Docker, project: &Project) -> anyhow::Result<Postgres> {
        let name = project.prefixed("postgres");
        let c = docker.inspect_container(&name, None).await.map_err(|e| {
            anyhow::Error::new(e).context(format!("cannot inspect the database container {name}"))
        })?;
        if !c.state.as_ref().and_then(|s| s.running).unwrap_or(false) {
            return Err(
                UserError::new(format!("the database container {name} is not running"))
                    .hint(format!("start it with `webui{} up`", project.flag()))
                    .into(),
            );
        }
        let env = c.config.and_then(|c| c.env).unwrap_or_default();
        let var = |k: &str| {
            env.iter()
                .find_map(|e| e.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
                .map(str::to_string)
        };
        let user = var("POSTGRES_USER").unwrap_or_else(|| "postgres".into());
        let db = var("POSTGRES_DB").unwrap_or_else(|| user.clone());
        let password = var("POSTGRES_PASSWORD").unwrap_or_default();
        Ok(Postgres {
            name,
            user,
            db,
            password,
        })
    }

    /// Starts `tool` (pg_dump, pg_restore) in the container against the database, with
    /// `args` after the connection options, output attached, stdin too with `stdin`.
    /// Returns the exec's id (for its exit code) and its attached streams.
    async fn exec(
        &self,
        docker: &Docker,
        tool: &str,
        args: &[&str],
        stdin: bool,
    ) -> anyhow::Result<(String, bollard::exec::StartExecResults)> {
        let name = &self.name;
        let mut cmd = vec![tool, "-h", "127.0.0.1", "-U", &self.user, "-d", &self.db];
        cmd.extend_from_slice(args);
        let exec = docker
            .create_exec(
                name,
                bollard::exec::CreateExecOptions {
                    cmd: Some(cmd.into_iter().map(str::to_string).collect()),
                    env: Some(vec![format!("PGPASSWORD={}", self.password)]),
                    attach_stdin: Some(stdin),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| anyhow::Error::new(e).context(format!("cannot run {tool} in {name}")))?;
        let started = docker.start_exec(&exec.id, None).await?;
        if let bollard::exec::StartExecResults::Detached = started {
            anyhow::bail!("{tool} in {name} did not attach");
        }
        Ok((exec.id, started))
    }
}

/// True when `path` starts like a `pg_dump -Fc` file.
pub fn is_pg_dump(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 5];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == b"PGDMP"
}

/// Puts a [`dump_database`] file back into the project's Postgres: `pg_restore --clean
/// --if-exists --single-transaction`, the file streamed to it through `docker exec`.
/// In one transaction: when it fails, the database is as it was.
pub async fn restore_database(
    docker: &Docker,
    project: &Project,
    dump: &Path,
) -> anyhow::Result<()> {
    use bollard::container::LogOutput;
    use bollard::exec::StartExecResults;
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;

    let pg = Postgres::running(docker, project).await?;
    let name = &pg.name;
    let mut file = tokio::fs::File::open(dump)
        .await
        .map_err(|e| anyhow::Error::new(e).context(format!("cannot open {}", dump.display())))?;
    let args = [
        "--clean",
        "--if-exists",
        "--single-transaction",
        "--no-owner",
    ];
    let (
        id,
        StartExecResults::Attached {
            mut output,
            mut input,
        },
    ) = pg.exec(docker, "pg_restore", &args, true).await?
    else {
        anyhow::bail!("pg_restore in {name} did not attach");
    };
    // Written and read at once: pg_restore may report while it reads.
    let send = async {
        tokio::io::copy(&mut file, &mut input).await?;
        input.shutdown().await
    };
    let read = async {
        let mut said = String::new();
        while let Some(item) = output.next().await {
            if let LogOutput::StdErr { message } | LogOutput::StdOut { message } = item? {
                said.push_str(&String::from_utf8_lossy(&message));
            }
        }
        Ok::<String, anyhow::Error>(said)
    };
    let (sent, said) = tokio::join!(send, read);
    let said = said?;
    let code = docker.inspect_exec(&id).await?.exit_code;
    if code != Some(0) {
        anyhow::bail!(
            "pg_restore in {name} failed (exit code {}); the database is as it was: {}",
            code.map_or("unknown".into(), |c| c.to_string()),
            said.trim()
        );
    }
    sent.map_err(|e| {
        anyhow::Error::new(e).context(format!("cannot send {} to pg_restore", dump.display()))
    })?;
    Ok(())
}

/// `pg_dump -Fc` of the project's Postgres (`<prefix>postgres`, the credentials from
/// its own environment) into `<dir>/webui-db-<project>-<UTC time>.dump` (0600 from the
/// first byte), streamed; checked for pg_dump's exit code and the format's magic.
pub async fn dump_database(
    docker: &Docker,
    project: &Project,
    dir: &Path,
) -> anyhow::Result<PathBuf> {
    use bollard::container::LogOutput;
    use bollard::exec::StartExecResults;
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;

    let pg = Postgres::running(docker, project).await?;
    let name = &pg.name;

    crate::state::create_private_dir(dir)?;
    let stamp: String = now_rfc3339()
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    let path = dir.join(format!("webui-db-{}-{stamp}.dump", project.key()));
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .await
        .map_err(|e| anyhow::Error::new(e).context(format!("cannot create {}", path.display())))?;
    let result = async {
        let (id, started) = pg.exec(docker, "pg_dump", &["-Fc"], false).await?;
        let mut errors = String::new();
        let mut magic = Vec::new();
        match started {
            StartExecResults::Attached { mut output, .. } => {
                while let Some(item) = output.next().await {
                    match item? {
                        LogOutput::StdOut { message } => {
                            if magic.len() < 5 {
                                magic.extend_from_slice(&message[..message.len().min(5)]);
                            }
                            file.write_all(&message).await?;
                        }
                        LogOutput::StdErr { message } => {
                            errors.push_str(&String::from_utf8_lossy(&message));
                        }
                        _ => {}
                    }
                }
            }
            StartExecResults::Detached => anyhow::bail!("pg_dump in {name} did not attach"),
        }
        file.flush().await?;
        file.sync_all().await?;
        let code = docker.inspect_exec(&id).await?.exit_code;
        if code != Some(0) {
            anyhow::bail!(
                "pg_dump in {name} failed (exit code {}): {}",
                code.map_or("unknown".into(), |c| c.to_string()),
                errors.trim()
            );
        }
        if !magic.starts_with(b"PGDMP") {
            anyhow::bail!("pg_dump in {name} wrote no custom-format dump");
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok(path)
}

/// The first SIGINT/SIGTERM during a roll cancels the returned token: the replica
/// being replaced is finished (back in rotation, new or old) and no other one is
/// started. A second one exits at once (130), as an impatient operator expects.
fn stop_after_this_replica() -> tokio_util::sync::CancellationToken {
    use tokio::signal::unix::{SignalKind, signal};
    let token = tokio_util::sync::CancellationToken::new();
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return token;
    };
    let t = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        eprintln!(
            "interrupted: stopping once the replica being replaced is back in rotation (interrupt again to quit at once)"
        );
        t.cancel();
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        std::process::exit(130);
    });
    token
}

/// An error in one line: its chain without hints, before any log lines.
fn short(e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    let first = text.lines().next().unwrap_or_default();
    first
        .split_once("; its last log lines")
        .map_or(first, |(head, _)| head)
        .trim_end_matches(':')
        .to_string()
}

/// A replica that did not make it, and whether its old container runs again.
struct Failed {
    why: anyhow::Error,
    /// Where the failed new container's last log lines were saved.
    logs: Option<PathBuf>,
    rolled_back: anyhow::Result<()>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::{self, Hold, Route};
    use std::sync::Mutex;

    fn handle(k: u32, route: Route) -> ReplicaHandle {
        let (tx, _rx) = route::table(route);
        // The route table needs a receiver for send_replace to keep values; watch
        // keeps the value regardless.
        ReplicaHandle {
            index: k,
            container: format!("p-open-webui-{k}"),
            upstream: format!("http://127.0.0.1:{}/", 3000 + k)
                .parse()
                .expect("uri"),
            routes: tx,
            live: Arc::new(Mutex::new(supervisor::Live::default())),
        }
    }

    fn fwd(k: u32) -> Route {
        Route::forward(
            format!("http://127.0.0.1:{}/", 3000 + k)
                .parse()
                .expect("uri"),
        )
    }

    fn held(phase: Phase) -> Route {
        Route::Hold(Hold {
            phase,
            detail: String::new(),
        })
    }

    #[test]
    fn failures_are_told_in_one_line_without_log_lines_or_hints() {
        let e: anyhow::Error = UserError::new(
            "p-open-webui did not become healthy within 10s; its last log lines:\n    GET /health 503",
        )
        .hint("see its logs")
        .into();
        assert_eq!(short(&e), "p-open-webui did not become healthy within 10s");
        let e = anyhow::anyhow!("engine said no").context("cannot stop container p-open-webui-2");
        assert_eq!(
            short(&e),
            "cannot stop container p-open-webui-2: engine said no"
        );
    }

    #[test]
    fn requests_are_parsed_and_others_left_alone() {
        assert_eq!(parse("status"), None);
        assert_eq!(parse("updating"), None);
        assert_eq!(parse("replica-updating 2"), Some(Ok(Request::Updating(2))));
        assert_eq!(parse("replica-state 1"), Some(Ok(Request::State(1))));
        assert_eq!(parse("replica-updated 3"), Some(Ok(Request::Updated(3))));
        assert!(matches!(parse("replica-updating"), Some(Err(_))));
        assert!(matches!(parse("replica-updating 0"), Some(Err(_))));
        assert!(matches!(parse("replica-updating x"), Some(Err(_))));
        assert!(matches!(parse("replica-drop 1"), Some(Err(_))));
    }

    #[test]
    fn one_replica_leaves_rotation_at_a_time_and_never_below_n_minus_1() {
        let inflight = Inflight::default();
        let busy: Uri = "http://127.0.0.1:3002".parse().expect("uri");
        let _guards: Vec<_> = (0..4)
            .map(|_| route::RequestGuard::new(inflight.counts(&busy)))
            .collect();
        let h = Handover::new(Some(inflight.clone()));
        let v = h.answer("replica-state 1").expect("answered");
        assert_eq!(v["ok"], false, "no replicas attached yet: {v}");
        h.attach(vec![
            handle(1, fwd(1)),
            handle(2, fwd(2)),
            handle(3, fwd(3)),
        ]);
        let replicas = h.0.replicas.get().expect("attached");
        let v = h.answer("replica-state 2").expect("answered");
        assert_eq!(
            (v["state"].as_str(), v["inflight"].as_u64()),
            (Some("healthy"), Some(4))
        );

        let v = h.answer("replica-updating 2").expect("answered");
        assert_eq!(v["ok"], true, "{v}");
        let r2 = &replicas[1];
        assert!(supervisor::snapshot(&r2.live).updating);
        assert!(matches!(&*r2.routes.borrow(), Route::Hold(x) if x.phase == Phase::Updating));
        assert_eq!(h.answer("replica-state 2").expect("a")["state"], "updating");

        // A second one while 2 is out: refused, nothing changed.
        let v = h.answer("replica-updating 3").expect("answered");
        assert_eq!(v["ok"], false, "{v}");
        assert!(
            v["error"].as_str().unwrap_or("").contains("replica 2"),
            "{v}"
        );
        assert_eq!(v["busy"], true, "worth asking again later: {v}");
        assert!(matches!(&*replicas[2].routes.borrow(), Route::Forward(_)));

        // Back: the monitor watches again (it forwards after a healthy probe).
        assert_eq!(h.answer("replica-updated 2").expect("a")["ok"], true);
        assert!(!supervisor::snapshot(&r2.live).updating);
        r2.routes.send_replace(fwd(2));

        // Replica 3 crashed: taking a serving one out would leave 1 of 3.
        replicas[2].routes.send_replace(held(Phase::Restarting));
        let v = h.answer("replica-updating 1").expect("answered");
        assert_eq!(v["ok"], false, "{v}");
        assert!(
            v["error"]
                .as_str()
                .unwrap_or("")
                .contains("fewer than 2 of 3"),
            "{v}"
        );
        // ... but the one not serving may be replaced.
        assert_eq!(h.answer("replica-updating 3").expect("a")["ok"], true);

        assert_eq!(h.answer("replica-state 9").expect("a")["ok"], false);
        assert_eq!(h.answer("status"), None);
    }
}
