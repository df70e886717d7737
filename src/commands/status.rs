//! `webui status [--json]`: the project's containers and the proxy serving them.
//!
//! Exit status: 0 when Open WebUI's container exists and every container of the
//! project is running and healthy; [`EXIT_NOT_HEALTHY`] (3) otherwise; 1 when Docker
//! cannot be reached.
//!
//! # JSON schema (`--json`, on stdout)
//! ```json
//! {
//!   "project": "default",            // the --project name, "default" without one
//!   "healthy": true,                  // the exit status is 0 exactly when true
//!   "containers": [{
//!     "service": "open-webui",        // "open-webui" | "ollama" | "postgres" | "redis"
//!     "name": "open-webui",           // container name
//!     "replica": null,                // `up --replicas N` (N > 1): 1..N, else null
//!     "id": "0123456789ab",           // short container id
//!     "state": "running",             // Docker's state: created, running, restarting,
//!                                     // exited, paused, dead, ...
//!     "running": true,
//!     "health": "healthy",            // "healthy" | "unhealthy" | "unreachable" (its
//!                                     // /health probed on loopback), "stopped" (not
//!                                     // running), "not-checked" (Ollama: not
//!                                     // reachable from the host by design)
//!     "health_detail": null,          // why not healthy, when known
//!     "image": "ghcr.io/open-webui/open-webui:main",
//!     "image_id": "sha256:...",
//!     "digest": "ghcr.io/open-webui/open-webui@sha256:...",   // or null
//!     "started_at": "2024-05-01T12:00:00.123Z",               // or null
//!     "uptime_secs": 187,             // null when not running
//!     "restart_count": 0,
//!     "ports": [{"host_ip": "127.0.0.1", "host_port": 3000, "container_port": "8080/tcp"}],
//!     "network": "webui",             // network mode: "host" or the bridge network
//!     "upstream": "http://127.0.0.1:3000"   // where the proxy forwards (Open WebUI, served Ollama)
//!   }],
//!   "proxy": {                        // null when no `webui up` serves this project
//!     "pid": 1234,
//!     "https": ["0.0.0.0:443"],
//!     "http": ["0.0.0.0:80"],
//!     "upstream": "http://127.0.0.1:3000",
//!     "behind_proxy": false           // `up --behind-proxy`: https/http empty, another
//!                                     // web server forwards to upstream
//!   },
//!   "supervisor": {                   // the running `webui up`'s live state, read from
//!                                     // its control socket; null when none answers
//!     "pid": 1234, "project": "default", "started_at": "...",
//!     "state": "healthy",             // starting | healthy | unhealthy | stopped | updating
//!     "phase": null, "detail": null,  // the public page's phase and text when not healthy
//!     "upstream": "http://127.0.0.1:3000", "https": [...], "http": [...],
//!     "health": {"status": "healthy", "detail": null, "checked_at": "...",
//!                "failures_in_a_row": 0},
//!     "services": [{"service": "open-webui", "container": "open-webui",
//!                   "id": "0123456789ab", "running": true, "exits": 0,
//!                   "recent_exits": 0, "restarts": 0, "stopped_deliberately": false,
//!                   "crash_loop": null}],   // or {"reason", "at", "last_lines": [...]}
//!     "docker": {"connected": true, "reconnects": 0},
//!     "crash_loop_limit": "5/10m",
//!     "last_errors": [{"at": "...", "message": "..."}],
//!     "ever_healthy": true,
//!     "replicas": [{"replica": 1, "container": "open-webui",   // only with --replicas N > 1:
//!                   "upstream": "http://127.0.0.1:3000",       // each replica's view, and
//!                   "state": "healthy", "detail": null,        // `state` above is the
//!                   "health": {...}}],                         // site's (any replica healthy)
//!     "backups": {"every": "1day", "keep": 7,  // only with --backup-every
//!                 "dir": "/var/lib/webui/backups/scheduled",
//!                 "last": "/var/lib/.../webui-backup-default-20261125T080032Z.tar.gz",
//!                 "last_at": "...", "next_at": "...",
//!                 "last_error": null,          // why the last attempt failed, if it did
//!                 "made": 1},                  // written since this `up` started
//!     "notify": "hooks.slack.com",    // only with --notify-url-file: the webhook's host
//!     "certificates": [...]           // as in `webui cert status --json`
//!   }
//! }
//! ```
//! Without Docker but with a running supervisor, `containers` is empty and `healthy`
//! is the supervisor's view.
//! Secrets (`WEBUI_SECRET_KEY`, `OPENAI_API_KEY`) never appear.

use std::io::Write;
use std::time::SystemTime;

use bollard::Docker;
use serde::Serialize;

use crate::cli::{GlobalArgs, StatusCmd};
use crate::config::Paths;
use crate::config::up::Project;
use crate::control;
use crate::docker::health;
use crate::docker::project::{ProjectState, RunInfo};
use crate::docker::spec::{LABEL_DIGEST, LABEL_ROLE, LABEL_UPSTREAM, short_id};
use crate::docker::{self, Role, ensure};
use crate::output::Printer;

/// Exit status when something is not running or not healthy.
pub const EXIT_NOT_HEALTHY: u8 = 3;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub project: String,
    pub healthy: bool,
    pub containers: Vec<ContainerReport>,
    pub proxy: Option<RunInfo>,
    pub supervisor: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ContainerReport {
    pub service: String,
    pub name: String,
    pub replica: Option<u32>,
    pub id: String,
    pub state: String,
    pub running: bool,
    pub health: String,
    pub health_detail: Option<String>,
    pub image: String,
    pub image_id: String,
    pub digest: Option<String>,
    pub started_at: Option<String>,
    pub uptime_secs: Option<u64>,
    pub restart_count: i64,
    pub ports: Vec<PortReport>,
    pub network: String,
    pub upstream: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PortReport {
    pub host_ip: String,
    pub host_port: u16,
    pub container_port: String,
}

pub async fn run(global: &GlobalArgs, cmd: &StatusCmd, printer: Printer) -> anyhow::Result<u8> {
    let paths = Paths::resolve(global);
    let project = Project::resolve(global.project.as_deref())?;
    let state = ProjectState::new(&paths.state_dir, &project);
    // `up --swarm`: services and their tasks per node (commands/swarm.rs).
    if let Some(code) = super::swarm::status(&project, cmd.json, &printer).await? {
        return Ok(code);
    }
    // The running supervisor's live view first; Docker's for the containers.
    let live = control::request(
        &control::socket_path(&paths.state_dir, project.key()),
        "status",
    )
    .await;
    let report = match (docker::connect().await, live) {
        (Ok(docker), live) => {
            let mut r = collect(&docker, &project, state.run_info()).await?;
            if let Some(v) = &live {
                r.healthy &= v["state"] == "healthy";
            }
            r.supervisor = live;
            r
        }
        (Err(e), Some(live)) => {
            printer.warn(format!("{e:#}"));
            Report {
                project: project.key().to_string(),
                healthy: live["state"] == "healthy",
                containers: Vec::new(),
                proxy: state.run_info(),
                supervisor: Some(live),
            }
        }
        (Err(e), None) => return Err(e),
    };
    if cmd.json {
        let text = serde_json::to_string_pretty(&report)?;
        let mut out = std::io::stdout().lock();
        if let Err(e) = writeln!(out, "{text}")
            && e.kind() != std::io::ErrorKind::BrokenPipe
        {
            return Err(e.into());
        }
    } else {
        print_text(&report, &project, &printer);
        print_versions_and_history(&report, &state, &printer).await;
    }
    Ok(if report.healthy { 0 } else { EXIT_NOT_HEALTHY })
}

/// Builds the report for `project`.
pub async fn collect(
    docker: &Docker,
    project: &Project,
    proxy: Option<RunInfo>,
) -> anyhow::Result<Report> {
    let mut containers = Vec::new();
    for summary in ensure::list_managed(docker, project).await? {
        let Some(id) = summary.id else { continue };
        let c = match docker.inspect_container(&id, None).await {
            Ok(c) => c,
            Err(e) if docker::is_not_found(&e) => continue,
            Err(e) => return Err(anyhow::Error::new(e).context("cannot inspect a container")),
        };
        let config = c.config.clone().unwrap_or_default();
        let labels = config.labels.clone().unwrap_or_default();
        let state = c.state.clone().unwrap_or_default();
        let running = state.running.unwrap_or(false);
        let role = labels.get(LABEL_ROLE).and_then(|r| Role::parse(r));
        let upstream = labels.get(LABEL_UPSTREAM).cloned();
        let (health, detail) = match (running, role, &upstream) {
            (false, _, _) => (
                "stopped".to_string(),
                state.error.clone().filter(|e| !e.is_empty()),
            ),
            (true, Some(Role::OpenWebui), Some(u)) => {
                let h = health::probe(u).await;
                (h.as_str().to_string(), h.detail().map(str::to_string))
            }
            // A served Ollama (`up --ollama-only` / `--ollama-domain`) is published
            // for the proxy: probe it too.
            (true, Some(Role::Ollama), Some(u)) => {
                let h = health::probe_ollama(u).await;
                (h.as_str().to_string(), h.detail().map(str::to_string))
            }
            (true, _, _) => ("not-checked".to_string(), None),
        };
        let image_id = c.image.clone().unwrap_or_default();
        let digest = match labels.get(LABEL_DIGEST) {
            Some(d) => Some(d.clone()),
            None => docker
                .inspect_image(&image_id)
                .await
                .ok()
                .and_then(|i| i.repo_digests)
                .and_then(|d| d.first().cloned()),
        };
        let started_at = state.started_at.clone().filter(|s| !s.starts_with("0001-"));
        let uptime_secs = match (&started_at, running) {
            (Some(s), true) => uptime(s, SystemTime::now()),
            _ => None,
        };
        let mut ports = Vec::new();
        for (cport, bindings) in c
            .network_settings
            .as_ref()
            .and_then(|n| n.ports.clone())
            .unwrap_or_default()
        {
            for b in bindings.unwrap_or_default() {
                if let Some(hp) = b.host_port.as_deref().and_then(|p| p.parse().ok()) {
                    ports.push(PortReport {
                        host_ip: b.host_ip.clone().unwrap_or_default(),
                        host_port: hp,
                        container_port: cport.clone(),
                    });
                }
            }
        }
        ports.sort_by(|a, b| (a.host_port, &a.host_ip).cmp(&(b.host_port, &b.host_ip)));
        containers.push(ContainerReport {
            service: role
                .map(|r| r.as_str().to_string())
                .unwrap_or_else(|| "?".into()),
            replica: labels
                .get(crate::docker::replicas::LABEL_REPLICA)
                .and_then(|r| r.parse().ok()),
            name: c
                .name
                .clone()
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_string(),
            id: short_id(&id),
            state: state.status.map(|s| s.to_string()).unwrap_or_default(),
            running,
            health,
            health_detail: detail,
            image: config.image.clone().unwrap_or_default(),
            image_id,
            digest,
            started_at,
            uptime_secs,
            restart_count: c.restart_count.unwrap_or(0),
            ports,
            network: c
                .host_config
                .as_ref()
                .and_then(|h| h.network_mode.clone())
                .unwrap_or_default(),
            upstream,
        });
    }
    containers.sort_by(|a, b| (&a.service, a.replica).cmp(&(&b.service, b.replica)));
    // Open WebUI, or for `up --ollama-only` the served Ollama, must be there.
    let healthy = containers.iter().any(|c| {
        c.service == Role::OpenWebui.as_str()
            || (c.service == Role::Ollama.as_str() && c.upstream.is_some())
    }) && containers
        .iter()
        .all(|c| c.running && (c.health == "healthy" || c.health == "not-checked"));
    Ok(Report {
        project: project.key().to_string(),
        healthy,
        containers,
        proxy,
        supervisor: None,
    })
}

/// Seconds since Docker's `StartedAt` (RFC 3339 with nanoseconds).
pub fn uptime(started_at: &str, now: SystemTime) -> Option<u64> {
    let t = humantime::parse_rfc3339_weak(started_at).ok()?;
    now.duration_since(t).ok().map(|d| d.as_secs())
}

fn print_text(r: &Report, project: &Project, printer: &Printer) {
    if r.containers.is_empty() {
        printer.line(format!(
            "no containers for project {}; start them with `webui{} up`",
            r.project,
            project.flag()
        ));
    }
    for c in &r.containers {
        let health = match &c.health_detail {
            Some(d) => format!("{} ({d})", c.health),
            None => c.health.clone(),
        };
        let service = match c.replica {
            Some(k) => format!("{} replica {k}", c.service),
            None => c.service.clone(),
        };
        printer.line(format!("{service} ({}): {}, {health}", c.name, c.state));
        printer.line(format!("  image     {}", c.image));
        printer.line(format!(
            "  digest    {}",
            c.digest.clone().unwrap_or_else(|| short_id(&c.image_id))
        ));
        let up = match c.uptime_secs {
            Some(s) => format!(
                "up {}",
                health::elapsed_text(std::time::Duration::from_secs(s))
            ),
            None => "not running".to_string(),
        };
        printer.line(format!("  uptime    {up}, {} restarts", c.restart_count));
        let ports = if c.ports.is_empty() {
            "none published".to_string()
        } else {
            c.ports
                .iter()
                .map(|p| format!("{}:{} -> {}", p.host_ip, p.host_port, p.container_port))
                .collect::<Vec<_>>()
                .join(", ")
        };
        printer.line(format!("  ports     {ports} (network {})", c.network));
    }
    match &r.proxy {
        Some(p) if p.behind_proxy => printer.line(format!(
            "proxy: behind a proxy (--behind-proxy): no listener of webui's own; your web server forwards to {} (pid {})",
            p.upstream, p.pid
        )),
        Some(p) => {
            let mut addrs: Vec<String> = p.https.iter().map(|a| format!("https://{a}")).collect();
            addrs.extend(p.http.iter().map(|a| format!("http://{a}")));
            printer.line(format!(
                "proxy: {} -> {} (pid {})",
                addrs.join(", "),
                p.upstream,
                p.pid
            ));
        }
        None => printer.line(format!(
            "proxy: not running (`webui{} up` serves the site)",
            project.flag()
        )),
    }
    if let Some(v) = &r.supervisor {
        print_live(v, printer);
    }
    printer.line(if r.healthy {
        "all healthy"
    } else {
        "NOT healthy"
    });
}

/// `webui update` / `webui backup` (issue #6): the running Open WebUI version (its
/// `/api/version`), the pin, the last update and the last backup (`history.json`).
async fn print_versions_and_history(r: &Report, state: &ProjectState, printer: &Printer) {
    use crate::docker::pin::History;
    if let Some(u) = r
        .containers
        .iter()
        .find(|c| c.service == Role::OpenWebui.as_str() && c.running)
        .and_then(|c| c.upstream.as_deref())
    {
        let url = format!("{}/api/version", u.trim_end_matches('/'));
        let version = health::http_get(&url, std::time::Duration::from_secs(3))
            .await
            .ok()
            .and_then(|(_, body)| serde_json::from_slice::<serde_json::Value>(&body).ok())
            .and_then(|v| v.get("version")?.as_str().map(str::to_string));
        if let Some(v) = version {
            printer.line(format!("open-webui version {v}"));
        }
    }
    let h = History::load(state);
    if let Some(p) = &h.pin {
        printer.line(format!(
            "pinned: {} ({}) since {}; `webui up` keeps it instead of {} (`webui update` moves)",
            p.image,
            p.digest.as_deref().unwrap_or(&p.image_id),
            p.at,
            p.configured
        ));
    }
    match &h.last_update {
        Some(u) => printer.line(format!(
            "last update: {} {} -> {}: {}{}",
            u.at,
            u.from,
            u.to,
            u.outcome,
            u.detail
                .as_deref()
                .map(|d| format!(" ({})", d.lines().next().unwrap_or("")))
                .unwrap_or_default()
        )),
        None => printer.line("last update: never (by webui)"),
    }
    match &h.last_backup {
        Some(b) => printer.line(format!(
            "last backup: {} {} ({} bytes)",
            b.at, b.file, b.bytes
        )),
        None => printer.line("last backup: never (`webui backup` makes one)"),
    }
}

/// The running supervisor's state, from its control socket.
fn print_live(v: &serde_json::Value, printer: &Printer) {
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
    let mut head = format!(
        "supervisor: pid {}, Open WebUI {}",
        v["pid"],
        s(&v["state"])
    );
    if let Some(d) = v["detail"].as_str() {
        head.push_str(&format!(" ({d})"));
    }
    if v["docker"]["connected"] == false {
        head.push_str(", Docker engine not reachable");
    }
    printer.line(head);
    for r in v["replicas"].as_array().into_iter().flatten() {
        let mut line = format!(
            "  replica {} ({}, {}): {}",
            r["replica"],
            s(&r["container"]),
            s(&r["upstream"]),
            s(&r["state"])
        );
        if let Some(d) = r["detail"].as_str() {
            line.push_str(&format!(" ({d})"));
        }
        printer.line(line);
    }
    for svc in v["services"].as_array().into_iter().flatten() {
        printer.line(format!(
            "  {}: {} exits ({} within the crash-loop limit {}), {} restarts by webui",
            s(&svc["container"]),
            svc["exits"],
            svc["recent_exits"],
            s(&v["crash_loop_limit"]),
            svc["restarts"]
        ));
        if let Some(c) = svc["crash_loop"].as_object() {
            printer.line(format!(
                "  CRASH LOOP: {} (at {})",
                c.get("reason").map(s).unwrap_or_default(),
                c.get("at").map(s).unwrap_or_default()
            ));
            for l in c
                .get("last_lines")
                .and_then(|l| l.as_array())
                .into_iter()
                .flatten()
            {
                printer.line(format!("    | {}", s(l)));
            }
        }
    }
    for c in v["certificates"].as_array().into_iter().flatten() {
        printer.line(format!(
            "  certificate {}: valid until {}, renews {}{}",
            s(&c["name"]),
            c["not_after"].as_str().unwrap_or("?"),
            c["next_renewal"].as_str().unwrap_or("?"),
            c["last_error"]
                .as_str()
                .map(|e| format!(", last error: {e}"))
                .unwrap_or_default()
        ));
    }
    if let Some(host) = v["notify"].as_str() {
        printer.line(format!("  problems are sent to the webhook at {host}"));
    }
    if let Some(b) = crate::supervisor::BackupsLive::from_live(v) {
        let mut line = format!("  backups: {}; ", b.schedule_text());
        match (&b.last, &b.last_at) {
            (Some(last), Some(at)) => line.push_str(&format!("last {at} ({last})")),
            _ => line.push_str("none yet by this run"),
        }
        if let Some(next) = &b.next_at {
            line.push_str(&format!(", next {next}"));
        }
        printer.line(line);
        if let Some(e) = &b.last_error {
            printer.line(format!("  BACKUP FAILED: {e}"));
        }
    }
    for e in v["last_errors"].as_array().into_iter().flatten() {
        printer.line(format!("  {}  {}", s(&e["at"]), s(&e["message"])));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn uptime_from_docker_timestamps() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_100);
        assert_eq!(uptime("2023-11-14T22:13:20.123456789Z", now), Some(99));
        assert_eq!(uptime("2023-11-14T22:13:20Z", now), Some(100));
        assert_eq!(uptime("garbage", now), None);
    }
}
