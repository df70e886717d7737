//! `webui up`: Open WebUI (and optionally Ollama) in Docker, behind the HTTPS proxy,
//! supervised.
//!
//! 1. Resolve and validate every setting (pure), read the files flags name.
//! 2. Take the instance lock (`control::InstanceLock`): a second `webui up` on the same
//!    state dir and project exits 1 naming the running pid, before any port is bound.
//! 3. Bind the proxy's listeners: a busy port fails here, before Docker is touched.
//! 4. Start serving at once with the "starting" page (`Route::Hold`), print the
//!    `listening on ...` lines, start certificate renewal and the control socket, all
//!    as tasks of one [`Supervisor`].
//! 5. Docker: connect, check GPUs, look at what exists (refusing what webui did not
//!    make unless `--adopt`), check the loopback port, find Ollama, pull, then create,
//!    keep or recreate network, volumes and containers, printing what happened.
//! 6. The supervisor's [`Monitor`] takes over the route: it polls `/health`, follows the
//!    containers' Docker events, restarts what dies and stops a crash loop. `up` waits
//!    for the first healthy answer (`--health-timeout`, an error when it never comes).
//!    Adopting running, healthy containers needs no wait: the first probe forwards.
//! 7. Serve until SIGINT/SIGTERM (or a fatal error); drain; the containers keep
//!    running (`webui down` stops them).
//!
//! The PersistentConfig choice (`ENABLE_PERSISTENT_CONFIG` left at Open WebUI's
//! default, changes detected and explained) is described in `docker::spec`.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use tokio::sync::Notify;

use super::site;
use crate::cli::{GlobalArgs, NetworkMode, UpCmd};
use crate::config::up::{self as upcfg, OllamaMode, Project, UpSettings};
use crate::config::{Paths, ProxySettings, resolve};
use crate::control::{self, InstanceLock};
use crate::docker::ensure::{self, Plan};
use crate::docker::health::{self, Health};
use crate::docker::host::{self, ListenScope};
use crate::docker::project::{ProjectState, RunInfo, SecretOrigin};
use crate::docker::replicas::{self, Replica};
use crate::docker::spec::{self, OpenWebuiInputs};
use crate::docker::{self, Role, gpu, logs, pull};
use crate::error::UserError;
use crate::ollama::serve;
use crate::output::Printer;
use crate::proxy::{Bound, Proxy};
use crate::route::{self, Hold, Phase, Route, RouteTx};
use crate::supervisor::{self, CrashLoop, Live, Monitor, SharedLive, Supervisor};

pub async fn run(global: &GlobalArgs, cmd: &UpCmd, printer: Printer) -> anyhow::Result<u8> {
    if cmd.swarm == Some(true) {
        return super::swarm::up(global, cmd, printer).await;
    }
    if cmd.detach {
        return super::service::detach(global, cmd, printer).await;
    }
    // 1. Everything validated before any side effect.
    let paths = Paths::resolve(global);
    let file = paths.load_file()?;
    let project = Project::resolve(global.project.as_deref())?;
    let proxy_settings = resolve::proxy(&cmd.proxy, &file)?;
    let up = upcfg::up(cmd, &file)?;
    // `--ollama-domain`: one certificate for both names.
    let proxy_settings = serve::with_ollama_domain(proxy_settings, &up);
    let remote_token = serve::read_remote_token(&up, &printer)?;
    let remote_ca = serve::read_remote_ca(&up)?;
    let crash_loop = match &cmd.crash_loop {
        Some(s) => CrashLoop::parse(s)?,
        None => CrashLoop::default(),
    };
    let extra_env = load_env(&up)?;
    let openai_key = load_openai_key(&up, &printer)?;
    let validated = site::validate(&proxy_settings)?;
    let behind = crate::config::behind::behind_proxy(cmd, &file)?;
    if behind && up.replicas > 1 {
        return Err(UserError::new(format!(
            "--replicas {} needs webui's own proxy to balance across the replicas; with --behind-proxy your web server would reach only the first one",
            up.replicas
        ))
        .hint("drop --behind-proxy (webui then serves HTTPS itself), or run one replica behind your web server")
        .into());
    }
    let admin_settings = upcfg::admin(cmd, &file, &proxy_settings.domains)?;
    let admin_password = crate::admin::password_from_env()?;
    let notify_host = crate::notify::setup(up.notify_url_file.as_deref(), project.key())?;

    // 2. One supervisor per project and state dir. Taken before binding so that a
    //    second `webui up` names the running one instead of reporting a busy port.
    let _lock = InstanceLock::acquire(&paths.state_dir, project.key())?;
    let backup_dir = match &up.backups {
        Some(s) => Some(super::scheduled::prepare(s, &paths.state_dir)?),
        None => None,
    };
    if let Some(host) = &notify_host {
        printer.line(format!(
            "problems are sent to the webhook at {host} as they happen"
        ));
    }

    // 3. Bind (nothing with --behind-proxy: the web server in front listens).
    let bound = match behind {
        true => None,
        false => Some(Bound::bind(&proxy_settings)?),
    };
    let https_addrs = bound.as_ref().map(Bound::https_addrs).unwrap_or_default();
    let http_addrs = bound.as_ref().map(Bound::http_addrs).unwrap_or_default();

    // 4. Serve the starting page right away.
    let site = match behind {
        true => None,
        false => Some(site::prepare(&paths, &proxy_settings, validated, &printer)?),
    };
    let (gate, ollama_routes) = serve::gate(&paths.state_dir, &project, &up, &printer)?;
    let upstream = up.upstream();
    let upstream_base = upstream.to_string().trim_end_matches('/').to_string();
    let first_route = Route::Hold(Hold {
        phase: Phase::Starting,
        detail: "Preparing.".into(),
    });
    // Everything that sets the route (bring_up, the monitor, the control socket)
    // writes `route_tx`; the proxy serves `routes`, which `admin::gate` keeps on the
    // starting page until Open WebUI has its admin account (PITFALLS 15).
    let (route_tx, written) = route::table(first_route.clone());
    let (open_tx, routes) = route::table(first_route);
    let certs = site.as_ref().map(|s| s.certs.clone());
    let sup = Supervisor::new();
    crate::signal::cancel_on_signal(sup.token())?;
    let admin_outcome = crate::admin::SharedOutcome::default();
    let admin_job =
        (!up.serve_ollama.as_ref().is_some_and(|s| s.only)).then(|| crate::admin::Job {
            settings: admin_settings,
            password: admin_password,
            state: ProjectState::new(&paths.state_dir, &project),
            outcome: admin_outcome.clone(),
        });
    sup.spawn("creating the admin account", true, |token| {
        crate::admin::gate(written, open_tx.clone(), admin_job, token)
    });
    let drain = proxy_settings.drain_timeout + DRAIN_MARGIN;
    let live: SharedLive = Arc::new(Mutex::new(Live {
        pid: std::process::id(),
        project: project.key().to_string(),
        started_at: supervisor::now_text(),
        state: "starting".into(),
        upstream: upstream_base.clone(),
        https: https_addrs.iter().map(|a| a.to_string()).collect(),
        http: http_addrs.iter().map(|a| a.to_string()).collect(),
        crash_loop_limit: crash_loop.to_string(),
        notify: notify_host,
        ..Default::default()
    }));
    for addr in &https_addrs {
        printer.line(format!("listening on https://{addr} -> {upstream}"));
    }
    for addr in &http_addrs {
        printer.line(format!("listening on http://{addr} (redirects to https)"));
    }
    if behind {
        printer.line(format!(
            "behind a proxy: no listener of webui's own; Open WebUI will answer on {upstream_base} (loopback only)"
        ));
    }
    let mut renew = None;
    // The proxy's in-flight counts, shared with the rolling update's handover (which
    // drains a replica before `webui update` stops it); none behind a proxy.
    let inflight = bound.as_ref().map(|_| crate::route::Inflight::default());
    let handover = super::rolling::Handover::new(inflight.clone());
    if let (Some(bound), Some(site)) = (bound, site) {
        let http_port = http_addrs.first().map(|a| a.port());
        let proxy = Proxy {
            settings: proxy_settings.clone(),
            certs: site.certs.clone(),
            routes,
            challenges: site.challenges.clone(),
            supervised: !serve::native(&up),
            ollama: gate,
            inflight: inflight.clone().unwrap_or_default(),
        };
        sup.spawn("the proxy", true, |token| proxy.run(bound, token));
        // Certificate checks (ACME preflight) fail here, before Docker is touched.
        renew = match site
            .start(http_port, sup.token().child_token(), sup.tracker())
            .await
        {
            Ok(r) => r,
            Err(e) => return abort(&sup, e, drain).await,
        };
    }
    let socket = control::socket_path(&paths.state_dir, project.key());
    if let Err(e) = control::serve(
        &socket,
        control_handler_with(
            live.clone(),
            renew,
            paths.state_dir.clone(),
            Some(route_tx.clone()),
            Some(handover.clone()),
        ),
        sup.token().child_token(),
        sup.tracker(),
    ) {
        printer.warn(format!(
            "no control socket, so `webui status` shows Docker's view only: {e:#}"
        ));
    }
    let state = ProjectState::new(&paths.state_dir, &project);
    let run_info = RunInfo {
        pid: std::process::id(),
        https: https_addrs.iter().map(|a| a.to_string()).collect(),
        http: http_addrs.iter().map(|a| a.to_string()).collect(),
        upstream: upstream_base.clone(),
        behind_proxy: behind,
        remote_ollama: match (&up.ollama, &remote_token) {
            (upcfg::OllamaMode::Url(url), Some(_)) => Some(crate::docker::project::RemoteOllama {
                url: url.clone(),
                ca: up
                    .ollama_ca
                    .as_deref()
                    .map(|c| std::path::absolute(c).unwrap_or_else(|_| c.to_path_buf())),
            }),
            _ => None,
        },
    };
    if let Err(e) = state.write_run(&run_info) {
        tracing::debug!("cannot record the running proxy for `webui status`: {e:#}");
    }

    // 5. Docker.
    let ctx = Ctx {
        project: &project,
        up: &up,
        proxy: &proxy_settings,
        https: &https_addrs,
        state: &state,
        printer: &printer,
        routes: &route_tx,
        live: &live,
        extra_env,
        openai_key,
        remote_token,
        remote_ca,
        shutdown: sup.token().child_token(),
        _ollama_routes: ollama_routes,
    };
    let root = sup.token();
    let only = up.serve_ollama.as_ref().is_some_and(|s| s.only);
    let outcome = tokio::select! {
        r = async { if only { bring_up_ollama(&ctx).await } else { bring_up(&ctx).await } } => Some(r),
        _ = root.cancelled() => None,
    };
    match outcome {
        Some(Ok(ready)) => {
            // 6. From here the monitor owns the route: health, events, restarts.
            let primary = if only { Role::Ollama } else { Role::OpenWebui };
            if !ready.replicas.is_empty() {
                let site = SiteTables {
                    routes: &route_tx,
                    live: &live,
                    handover: &handover,
                };
                supervise_replicas(&sup, &ready, &project, crash_loop, site, printer).await;
            } else if !serve::native(&up) {
                // A native Ollama (`--ollama-only --ollama-url`) has no container to watch.
                let monitor = Monitor {
                    project: project.clone(),
                    roles: ready.roles.clone(),
                    primary: Some(primary),
                    replica: None,
                    upstream: upstream.clone(),
                    crash_loop,
                    routes: route_tx.clone(),
                    live: live.clone(),
                    printer,
                };
                sup.spawn("the container monitor", false, |token| monitor.run(token));
            }
            let first = tokio::select! {
                r = first_health(&ready, &up, &route_tx, &open_tx, &live, &printer) => Some(r),
                _ = root.cancelled() => None,
            };
            if let Some(Ok(true)) = first {
                // Also shows at once that the webhook of --notify-url-file works.
                let what = if only { "the Ollama API" } else { "Open WebUI" };
                crate::notify::send(&format!("{what} is ready at {}", ready.public_url));
            }
            match first {
                Some(Ok(true)) if only => printer.line(format!(
                    "the Ollama API is ready at {} (clients send `Authorization: Bearer TOKEN`; `webui{} token show` prints it)",
                    ready.public_url,
                    project.flag()
                )),
                Some(Ok(true)) if behind => {
                    behind_proxy_ready(&upstream_base, &proxy_settings.domains, global, &printer)
                }
                Some(Ok(true)) => super::summary::Summary {
                    url: &ready.public_url,
                    tls: &proxy_settings.tls,
                    cert: certs.as_ref().map(|c| c.info()),
                    state_dir: &paths.state_dir,
                    project: &project,
                    volume: &spec::Names::new(&project).open_webui_volume,
                    secret_key: state.secret_path(),
                    admin: admin_outcome.lock().ok().and_then(|o| o.clone()),
                }
                .print(&printer),
                Some(Ok(false)) => {}
                Some(Err(e)) => {
                    state.clear_run();
                    return abort(&sup, e, drain).await;
                }
                None => printer.line("interrupted; containers that were started keep running"),
            }
            if let (Some(schedule), Some(dir)) = (&up.backups, backup_dir)
                && !root.is_cancelled()
            {
                printer.line(format!(
                    "backups: {}",
                    crate::supervisor::BackupsLive::new(schedule, &dir).schedule_text()
                ));
                let scheduler = super::scheduled::Scheduler {
                    project: project.clone(),
                    files: super::backup::state_files(&paths, &project),
                    schedule: schedule.clone(),
                    dir,
                    live: live.clone(),
                    printer,
                };
                sup.spawn("scheduled backups", false, |token| scheduler.run(token));
            }
        }
        Some(Err(e)) => {
            state.clear_run();
            return abort(&sup, e, drain).await;
        }
        None => {
            printer.line("interrupted; containers that were started keep running");
        }
    }

    // 7. Serve until a signal or a fatal error; drain; the containers keep running.
    let result = sup.wait(drain).await;
    state.clear_run();
    result?;
    printer.line(format!(
        "stopped serving; the containers keep running (`webui{} down` stops them)",
        project.flag()
    ));
    Ok(0)
}

/// `--replicas N` (N > 1): one monitor per replica, each writing its own route table
/// (replica 1's also watches Ollama, Postgres and Redis: restarts, crash loops),
/// `route::merge` making the site's table (`routes`, read by `admin::gate`) of them,
/// and `supervisor::aggregate` keeping `live` (the control socket's `status`) the sum
/// of the monitors' views. A replica that answers already starts out forwarded.
async fn supervise_replicas(
    sup: &Supervisor,
    ready: &Ready,
    project: &Project,
    crash_loop: CrashLoop,
    site: SiteTables<'_>,
    printer: Printer,
) {
    let SiteTables {
        routes,
        live,
        handover,
    } = site;
    let base = supervisor::snapshot(live);
    let mut handles = Vec::new();
    let mut inners = Vec::new();
    let mut parts = Vec::new();
    for r in &ready.replicas {
        let initial = match replicas::probe(&r.base()).await {
            Health::Healthy => Route::forward(r.upstream()),
            _ => Route::Hold(Hold {
                phase: Phase::Starting,
                detail: supervisor::text::WAITING.into(),
            }),
        };
        let (tx, rx) = route::table(initial.clone());
        let rlive: SharedLive = Arc::new(Mutex::new(Live {
            pid: base.pid,
            project: base.project.clone(),
            started_at: base.started_at.clone(),
            state: supervisor::upstream_state(&initial).to_string(),
            upstream: r.base(),
            crash_loop_limit: base.crash_loop_limit.clone(),
            ..Default::default()
        }));
        let roles = match r.index {
            1 => ready.roles.clone(),
            _ => vec![Role::OpenWebui],
        };
        handles.push(super::rolling::ReplicaHandle {
            index: r.index,
            container: r.name.clone(),
            upstream: r.upstream(),
            routes: tx.clone(),
            live: rlive.clone(),
        });
        let monitor = Monitor {
            project: project.clone(),
            roles,
            primary: Some(Role::OpenWebui),
            replica: Some(r.name.clone()),
            upstream: r.upstream(),
            crash_loop,
            routes: tx,
            live: rlive.clone(),
            printer,
        };
        sup.spawn("a replica's monitor", false, |token| monitor.run(token));
        inners.push(rx);
        parts.push(supervisor::ReplicaPart {
            replica: r.index,
            container: r.name.clone(),
            upstream: r.base(),
            live: rlive,
        });
    }
    handover.attach(handles);
    let out = routes.clone();
    sup.spawn("merging the replicas' routes", false, |token| async move {
        route::merge(inners, out, token).await;
        Ok(())
    });
    let (main, site) = (live.clone(), routes.subscribe());
    sup.spawn("the replicas' status", false, |token| {
        supervisor::aggregate(main, parts, site, token)
    });
}

/// What the site's replicas report to: the route table `admin::gate` reads, the live
/// state of the control socket, the rolling update's handover.
struct SiteTables<'a> {
    routes: &'a RouteTx,
    live: &'a SharedLive,
    handover: &'a super::rolling::Handover,
}

/// Beyond the proxy's own drain timeout, how long the other tasks may take to stop.
const DRAIN_MARGIN: Duration = Duration::from_secs(5);

/// Stops everything after a failed start and returns the error.
async fn abort(sup: &Supervisor, e: anyhow::Error, drain: Duration) -> anyhow::Result<u8> {
    sup.fail(e);
    sup.wait(drain).await?;
    Ok(0)
}

/// The control socket's answers: `status` (the live state plus the stored
/// certificates' schedule) and `renew` (an immediate ACME order). Also used by
/// `webui proxy`.
pub fn control_handler(
    live: SharedLive,
    renew: Option<Arc<Notify>>,
    state_dir: std::path::PathBuf,
    routes: Option<RouteTx>,
) -> control::Handler {
    control_handler_with(live, renew, state_dir, routes, None)
}

/// [`control_handler`] plus, with `up --replicas`, the rolling update's per-replica
/// requests (`replica-updating K`, `replica-state K`, `replica-updated K`:
/// `rolling::Handover`).
fn control_handler_with(
    live: SharedLive,
    renew: Option<Arc<Notify>>,
    state_dir: std::path::PathBuf,
    routes: Option<RouteTx>,
    handover: Option<super::rolling::Handover>,
) -> control::Handler {
    Arc::new(move |line: &str| match line {
        _ if let Some(v) = handover.as_ref().and_then(|h| h.answer(line)) => v,
        // `webui update` brackets its swap with these two.
        "updating" | "updated" => match &routes {
            Some(routes) => {
                let updating = line == "updating";
                supervisor::edit(&live, |l| l.updating = updating);
                if updating {
                    supervisor::hold(routes, &live, Phase::Updating, supervisor::text::UPDATING);
                }
                serde_json::json!({ "ok": true })
            }
            None => serde_json::json!({ "ok": false, "error": "this webui runs no containers" }),
        },
        "status" => {
            let mut v = serde_json::to_value(supervisor::snapshot(&live)).unwrap_or_default();
            v["certificates"] =
                serde_json::to_value(super::cert::entries(&state_dir)).unwrap_or_default();
            v
        }
        "renew" => match &renew {
            Some(n) => {
                n.notify_one();
                serde_json::json!({ "ok": true })
            }
            None => serde_json::json!({
                "ok": false,
                "error": "this site does not use ACME (it serves the local CA's certificate or --tls-cert files)",
            }),
        },
        other => serde_json::json!({
            "ok": false,
            "error": format!("unknown request `{other}`; known: status, renew, updating, updated"),
        }),
    })
}

/// Waits for the monitor's first `Forward` to reach the proxy (`open`: after the
/// admin account exists). Ok(false): the monitor gave up on a crash loop (it said why;
/// `webui up` keeps serving the "stopped" page). An error when Open WebUI is not
/// healthy within `--health-timeout` (it keeps running).
async fn first_health(
    ready: &Ready,
    up: &UpSettings,
    routes: &RouteTx,
    open: &RouteTx,
    live: &SharedLive,
    printer: &Printer,
) -> anyhow::Result<bool> {
    let start = Instant::now();
    let mut rx = routes.subscribe();
    let mut opened = open.subscribe();
    // Adopted and healthy already: only the admin check (`admin::gate`) is left, a
    // moment; nothing to announce unless Open WebUI stops answering meanwhile.
    while matches!(*rx.borrow_and_update(), Route::Forward(_)) {
        if matches!(*opened.borrow_and_update(), Route::Forward(_)) {
            return Ok(true);
        }
        let closed = tokio::select! {
            r = opened.changed() => r.is_err(),
            r = rx.changed() => r.is_err(),
        };
        if closed {
            break;
        }
    }
    if matches!(*opened.borrow_and_update(), Route::Forward(_)) {
        return Ok(true);
    }
    let spinner = printer.spinner();
    if spinner.is_none() {
        printer.line(format!(
            "waiting for {} to answer on {}/health",
            ready.container, ready.upstream
        ));
    }
    let docker = docker::connect().await.ok();
    let mut last_line = String::new();
    let mut last_plain = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let finish = |pb: &Option<ProgressBar>| {
        if let Some(pb) = pb {
            pb.finish_and_clear();
        }
    };
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = rx.changed() => {}
            _ = opened.changed() => {}
            _ = tick.tick() => {}
        }
        let route = rx.borrow_and_update().clone();
        let is_open = matches!(*opened.borrow_and_update(), Route::Forward(_));
        let elapsed = start.elapsed();
        match &route {
            // Healthy, and the admin account is being created: the site opens next.
            Route::Forward(_) if !is_open => {}
            Route::Forward(_) => {
                finish(&spinner);
                printer.line(format!(
                    "{} is healthy (after {})",
                    ready.container,
                    health::elapsed_text(elapsed)
                ));
                return Ok(true);
            }
            Route::Hold(h) if h.phase == Phase::Stopped => {
                let crashed = supervisor::snapshot(live)
                    .services
                    .iter()
                    .any(|s| s.crash_loop.is_some());
                if crashed {
                    finish(&spinner);
                    return Ok(false);
                }
            }
            Route::Hold(h) if h.phase == Phase::Starting => {
                // The public text with the time it has been starting.
                if n.is_multiple_of(2) {
                    supervisor::retext(
                        routes,
                        live,
                        Phase::Starting,
                        format!(
                            "{} ({})",
                            supervisor::text::WAITING.trim_end_matches('.'),
                            health::elapsed_text(elapsed)
                        ),
                    );
                    rx.borrow_and_update();
                }
            }
            Route::Hold(_) => {}
        }
        if elapsed >= up.health_timeout {
            finish(&spinner);
            let tail = match &docker {
                Some(d) => logs::tail_lines(d, &ready.container, 10)
                    .await
                    .unwrap_or_default(),
                None => Vec::new(),
            };
            let lines = if tail.is_empty() {
                String::new()
            } else {
                format!("; its last log lines:\n    {}", tail.join("\n    "))
            };
            return Err(UserError::new(format!(
                "{} did not become healthy within {}{lines}",
                ready.container,
                health::elapsed_text(up.health_timeout),
            ))
            .hint(
                "see its logs with `webui logs open-webui`; a first start can take long, allow more with --health-timeout 1h (the container keeps running)",
            )
            .into());
        }
        if n.is_multiple_of(4)
            && let Some(d) = &docker
            && let Ok(lines) = logs::tail_lines(d, &ready.container, 1).await
            && let Some(l) = lines.last()
        {
            last_line = l.clone();
        }
        let shown: String = last_line.chars().take(100).collect();
        if let Some(pb) = &spinner {
            pb.set_message(format!(
                "waiting for Open WebUI to become healthy ({}) | {shown}",
                health::elapsed_text(elapsed)
            ));
        } else if last_plain.elapsed() >= Duration::from_secs(30) {
            last_plain = Instant::now();
            printer.line(format!(
                "still waiting for {} ({}): {shown}",
                ready.container,
                health::elapsed_text(elapsed)
            ));
        }
        n += 1;
    }
}

/// What `bring_up` leaves for the health wait.
struct Ready {
    public_url: String,
    container: String,
    upstream: String,
    /// The roles the monitor of replica 1 (or the single Open WebUI) watches.
    roles: Vec<Role>,
    /// `--replicas N` (N > 1): every replica, replica 1 first; empty otherwise.
    replicas: Vec<Replica>,
}

/// What `bring_up` works with.
struct Ctx<'a> {
    project: &'a Project,
    up: &'a UpSettings,
    proxy: &'a ProxySettings,
    https: &'a [std::net::SocketAddr],
    state: &'a ProjectState,
    printer: &'a Printer,
    routes: &'a RouteTx,
    live: &'a SharedLive,
    extra_env: Vec<(String, String)>,
    openai_key: Option<String>,
    /// The remote Ollama's bearer token (`--ollama-token`): sent by the forwarder.
    remote_token: Option<String>,
    /// `--ollama-ca`: trusted by the forwarder besides the system's CAs.
    remote_ca: Vec<rustls_pki_types::CertificateDer<'static>>,
    /// Stops what `bring_up` starts besides containers (the Ollama forwarder).
    shutdown: tokio_util::sync::CancellationToken,
    /// Keeps the `--ollama-domain` route table alive for the proxy.
    _ollama_routes: Option<RouteTx>,
}

/// Step 5: connect, check, pull, create or keep the containers. Open WebUI's health
/// is the monitor's business afterwards.
async fn bring_up(c: &Ctx<'_>) -> anyhow::Result<Ready> {
    let up = c.up;
    let printer = c.printer;
    let bundled = matches!(up.ollama, OllamaMode::Bundled { .. });
    // `--replicas N`: Postgres and Redis; a project once on Postgres stays there
    // (scaling back to 1 keeps the data where it is).
    let scaled = up.replicas > 1;
    let recorded = c.state.recorded_database();
    let postgres_before = c.state.postgres_password_path().exists()
        || recorded.as_ref().is_some_and(|d| d.engine == "postgres");
    let on_postgres = scaled || postgres_before;
    let mut roles = vec![Role::OpenWebui];
    if scaled {
        roles.insert(0, Role::Redis);
    }
    if on_postgres {
        roles.insert(0, Role::Postgres);
    }
    if bundled {
        roles.insert(0, Role::Ollama);
    }
    let layout = replicas::layout(c.project, up.port, up.replicas)
        .ok_or_else(|| UserError::new("--port leaves no room for the replicas' ports"))?;
    let extra: Vec<String> = layout.iter().skip(1).map(|r| r.name.clone()).collect();
    let (docker, gpus, plan) = engine(c, &roles, &extra, bundled).await?;
    check_port(
        up.port,
        "Open WebUI (--port)",
        plan.containers.get(&Role::OpenWebui),
    )?;
    for r in layout.iter().skip(1) {
        check_port(
            r.port,
            &format!("Open WebUI replica {} (--port + {})", r.index, r.index - 1),
            plan.replicas.get(&r.name),
        )?;
    }
    if scaled && !postgres_before && plan.data_existed {
        replicas::refuse_sqlite_users(
            plan.containers.get(&Role::OpenWebui),
            &spec::Names::new(c.project).open_webui_volume,
            up.replicas,
        )
        .await?;
    }
    if bundled && up.network == NetworkMode::Host {
        check_port(
            spec::OLLAMA_PORT,
            "the bundled Ollama (host network)",
            plan.containers.get(&Role::Ollama),
        )?;
    }
    let (ollama_url, host_gateway) = match &c.remote_token {
        Some(token) => {
            serve::start_forwarder(
                &docker,
                up,
                token,
                &c.remote_ca,
                c.state,
                c.shutdown.clone(),
                printer,
            )
            .await?
        }
        None => ollama_url(up, printer).await,
    };
    if let Some(s) = up
        .serve_ollama
        .as_ref()
        .filter(|s| up.network == NetworkMode::Bridge || s.port != spec::OLLAMA_PORT)
    {
        check_port(
            s.port,
            "the served Ollama API (--ollama-port)",
            plan.containers.get(&Role::Ollama),
        )?;
    }

    let (routes, live) = (c.routes, c.live);
    let image = pull_showing(c, &docker, &up.image, "Open WebUI").await?;
    let ollama_image = match &up.ollama {
        OllamaMode::Bundled { image } => Some(pull_showing(c, &docker, image, "Ollama").await?),
        _ => None,
    };
    // Postgres keeps the image its container runs unless one is given: its data
    // directory belongs to that major version.
    let postgres_ref = match (plan.containers.get(&Role::Postgres), &recorded) {
        _ if up.postgres_image_set => up.postgres_image.clone(),
        (Some(old), _) if old.managed_by().is_some() => old.image.clone(),
        (_, Some(d)) if d.image.is_some() => d.image.clone().unwrap_or_default(),
        _ => up.postgres_image.clone(),
    };
    let postgres_image = match on_postgres {
        true => Some(pull_showing(c, &docker, &postgres_ref, "Postgres").await?),
        false => None,
    };
    let redis_image = match scaled {
        true => Some(pull_showing(c, &docker, &up.redis_image, "Redis").await?),
        false => None,
    };

    let from_container = match plan.containers.get(&Role::OpenWebui) {
        Some(old) if old.managed_by().is_some() => {
            old.env_value("WEBUI_SECRET_KEY").map(str::to_string)
        }
        Some(old) => ensure::secret_of(&docker, old).await,
        None => None,
    };
    let (secret_key, origin) = c.state.secret_key(from_container.as_deref())?;
    let secret_path = c.state.secret_path();
    match origin {
        SecretOrigin::Stored => {}
        SecretOrigin::Recovered => printer.line(format!(
            "kept the WEBUI_SECRET_KEY of the existing container; stored in {}",
            secret_path.display()
        )),
        SecretOrigin::Generated if plan.data_existed => printer.warn(format!(
            "no WEBUI_SECRET_KEY was found for the existing data in volume {}; generated a new one ({}): everyone must log in again and API keys stored encrypted in Open WebUI must be re-entered",
            spec::Names::new(c.project).open_webui_volume,
            secret_path.display()
        )),
        SecretOrigin::Generated => printer.line(format!(
            "generated WEBUI_SECRET_KEY in {} (back it up with the data)",
            secret_path.display()
        )),
    }

    // The UI's own names: not the `--ollama-domain`.
    let ui_domains: Vec<String> = c
        .proxy
        .domains
        .iter()
        .filter(|d| up.serve_ollama.as_ref().and_then(|s| s.domain.as_ref()) != Some(*d))
        .cloned()
        .collect();
    let public_url = spec::public_url(&ui_domains, c.https, host::lan_ipv4());
    let ow = spec::open_webui(&OpenWebuiInputs {
        project: c.project,
        settings: up,
        image_id: image.id.clone(),
        image_digest: image.digest.clone(),
        secret_key,
        public_url: public_url.clone(),
        cors: spec::cors(&ui_domains, c.https),
        ollama_url,
        host_gateway,
        openai_key: c.openai_key.clone(),
        extra_env: c.extra_env.clone(),
        gpus: gpus && (up.gpu == crate::cli::GpuMode::All || up.image.contains("cuda")),
    });
    let postgres_password = match on_postgres {
        true => Some(c.state.postgres_password()?),
        false => None,
    };
    let ow = match &postgres_password {
        Some(pw) => replicas::with_scale_env(ow, &replicas::scale_env(pw, scaled)),
        None => ow,
    };
    let ow = docker::pin::keep_running(
        &docker,
        c.state,
        ow,
        plan.containers.get(&Role::OpenWebui),
        printer,
    )
    .await?;
    let mut specs = Vec::new();
    if let (OllamaMode::Bundled { image: name }, Some(img)) = (&up.ollama, &ollama_image) {
        let o = spec::ollama(
            c.project,
            up.network,
            name,
            &img.id,
            img.digest.as_deref(),
            gpus,
        );
        specs.push(match &up.serve_ollama {
            Some(s) => spec::served_ollama(o, up.network, s.port, &s.origins),
            None => o,
        });
    }
    if let (Some(img), Some(pw)) = (&postgres_image, &postgres_password) {
        specs.push(replicas::postgres(
            c.project,
            &postgres_ref,
            &img.id,
            img.digest.as_deref(),
            pw,
        ));
    }
    if let Some(img) = &redis_image {
        specs.push(replicas::redis(
            c.project,
            &up.redis_image,
            &img.id,
            img.digest.as_deref(),
        ));
    }
    // Replica 1 is today's container; with N > 1 labelled as replica 1.
    let ow = replicas::replica_spec(&ow, &layout[0], scaled);

    warn_persistent_config(c, &plan, &ow);
    let_running_start_finish(&docker, &plan, &ow, up, printer).await;

    supervisor::hold(routes, live, Phase::Starting, supervisor::text::WAITING);
    // Ollama, Postgres and Redis first (with the network and volumes); Open WebUI
    // once its database accepts connections.
    let mut outcomes = ensure::apply(&docker, c.project, &plan, &specs, printer).await?;
    let pg = spec::Names::new(c.project).postgres;
    // A Postgres that was running already and is kept accepts connections: no wait
    // (a relaunched `up` serves sooner).
    let pg_kept_running = plan
        .containers
        .get(&Role::Postgres)
        .is_some_and(|c| c.running && c.status == "running")
        && outcomes
            .iter()
            .any(|(name, o)| *name == pg && *o == ensure::Outcome::Kept { started: false });
    if on_postgres && !pg_kept_running {
        replicas::wait_postgres(&docker, &pg, POSTGRES_START).await?;
    }
    let later = Plan {
        containers: plan.containers.clone(),
        replicas: plan.replicas.clone(),
        ..Default::default()
    };
    outcomes.extend(
        ensure::apply(
            &docker,
            c.project,
            &later,
            std::slice::from_ref(&ow),
            printer,
        )
        .await?,
    );
    if scaled {
        // Replica 1 runs the migrations; the others start once it is healthy.
        let mut ignore = |_: Duration| {};
        health::wait(
            &docker,
            &ow.name,
            &layout[0].base(),
            up.health_timeout,
            printer,
            &mut ignore,
        )
        .await?;
        let rest: Vec<spec::ContainerSpec> = layout
            .iter()
            .skip(1)
            .map(|r| replicas::replica_spec(&ow, r, true))
            .collect();
        ensure::apply(&docker, c.project, &later, &rest, printer).await?;
    }
    c.state.record_adopted(&plan.adopted)?;
    c.state
        .record_persistent_values(&spec::persistent_values(&ow))?;
    let upstream = format!("http://127.0.0.1:{}", up.port);
    // Adopting a running container (e.g. after the launcher was killed): when it
    // already answers, forward at once instead of waiting for the monitor's first
    // probe.
    let kept_running = outcomes
        .iter()
        .any(|(name, o)| *name == ow.name && *o == ensure::Outcome::Kept { started: false });
    if !scaled && kept_running && health::probe(&upstream).await == Health::Healthy {
        supervisor::set_route(routes, live, Route::forward(up.upstream()));
    }
    Ok(Ready {
        public_url,
        container: ow.name.clone(),
        upstream,
        roles,
        replicas: if scaled { layout } else { Vec::new() },
    })
}

/// How long a new Postgres may take to accept connections (its first start
/// initialises the database).
const POSTGRES_START: Duration = Duration::from_secs(120);

/// Recreating Open WebUI while it is still starting could interrupt a database
/// migration (PITFALLS 16): when its spec changed and the running container is not
/// healthy yet, wait for it first. A container that crashes (restarting, or restarted
/// a few times already) or never gets healthy is recreated anyway, since the new
/// settings may be the fix.
async fn let_running_start_finish(
    docker: &bollard::Docker,
    plan: &Plan,
    ow: &spec::ContainerSpec,
    up: &UpSettings,
    printer: &Printer,
) {
    let Some(old) = plan.containers.get(&Role::OpenWebui) else {
        return;
    };
    let old_upstream = old.labels.get(spec::LABEL_UPSTREAM);
    let (Some(_), true, Some(old_upstream)) = (old.managed_by(), old.running, old_upstream) else {
        return;
    };
    if old.status == "restarting" || old.restart_count >= 3 {
        return;
    }
    if old.hash() == Some(ow.hash().as_str())
        || health::probe(old_upstream).await == Health::Healthy
    {
        return;
    }
    printer.line(format!(
        "{} is still starting; waiting for it before recreating it (a restart during a migration can damage the database)",
        old.name
    ));
    let mut ignore = |_: Duration| {};
    if let Err(e) = health::wait(
        docker,
        &old.name,
        old_upstream,
        up.health_timeout,
        printer,
        &mut ignore,
    )
    .await
    {
        printer.line(format!("recreating it anyway: {e}"));
    }
}

/// The loopback port Open WebUI (or Ollama in host mode) needs must be free, unless
/// the existing container that will be kept, recreated or adopted holds it.
fn check_port(port: u16, what: &str, existing: Option<&ensure::Existing>) -> anyhow::Result<()> {
    if !host::port_in_use(port) || existing.is_some_and(|c| c.may_hold_port(port)) {
        return Ok(());
    }
    Err(UserError::new(format!(
        "port {port} on 127.0.0.1 is already in use by another program; {what} must answer there"
    ))
    .hint(format!(
        "pick another port with --port, or stop what holds it (`ss -ltnp 'sport = :{port}'` shows it)"
    ))
    .into())
}

/// `OLLAMA_BASE_URL` and whether `host.docker.internal` must be mapped.
async fn ollama_url(up: &UpSettings, printer: &Printer) -> (Option<String>, bool) {
    match &up.ollama {
        // Served on a second name with host networking: it listens on --ollama-port.
        OllamaMode::Bundled { .. } => match (&up.serve_ollama, up.network) {
            (Some(s), NetworkMode::Host) => (Some(format!("http://127.0.0.1:{}", s.port)), false),
            _ => (Some(spec::bundled_ollama_url(up.network)), false),
        },
        OllamaMode::Url(u) => (Some(u.clone()), u.contains("host.docker.internal")),
        OllamaMode::ProbeHost => {
            let Some(version) = host::probe_ollama(spec::OLLAMA_PORT).await else {
                printer.line(
                    "no Ollama answers on this host (127.0.0.1:11434); OLLAMA_BASE_URL stays unset (add connections in Admin Panel > Settings > Connections, or use --ollama / --ollama-url)",
                );
                return (None, false);
            };
            if up.network == NetworkMode::Host {
                printer.line(format!(
                    "using this host's Ollama {version} at 127.0.0.1:11434"
                ));
                return (Some(spec::host_ollama_url(up.network)), false);
            }
            match host::listen_scope(spec::OLLAMA_PORT) {
                Some(ListenScope::LoopbackOnly) => {
                    printer.warn(format!(
                        "this host's Ollama {version} listens on 127.0.0.1 only, which containers cannot reach; OLLAMA_BASE_URL stays unset. Use --network host, or --ollama for a bundled one, or let it listen on the Docker bridge address (OLLAMA_HOST=172.17.0.1)"
                    ));
                    (None, false)
                }
                scope => {
                    if scope == Some(ListenScope::Everywhere) {
                        printer.warn(
                            "this host's Ollama listens on every address without authentication; make sure a firewall blocks port 11434 from outside",
                        );
                    }
                    printer.line(format!(
                        "using this host's Ollama {version} through host.docker.internal:11434"
                    ));
                    (Some(spec::host_ollama_url(up.network)), true)
                }
            }
        }
    }
}

/// Open WebUI keeps the first values of some variables in its database; say so when
/// they change on existing data.
fn warn_persistent_config(c: &Ctx<'_>, plan: &Plan, ow: &spec::ContainerSpec) {
    let env_rules = ow
        .env
        .get("ENABLE_PERSISTENT_CONFIG")
        .is_some_and(|v| v.eq_ignore_ascii_case("false"));
    if !plan.data_existed || env_rules {
        return;
    }
    let now = spec::persistent_values(ow);
    let before: BTreeMap<String, String> = match c.state.persistent_values() {
        Some(b) => b,
        None => return,
    };
    let changed: Vec<String> = now
        .iter()
        .filter(|(k, v)| before.get(*k).is_some_and(|b| b != *v))
        .map(|(k, v)| {
            format!(
                "{k} ({} -> {v})",
                before.get(k).map(String::as_str).unwrap_or("?")
            )
        })
        .collect();
    if changed.is_empty() {
        return;
    }
    c.printer.warn(format!(
        "changed: {}. Open WebUI keeps the values from its first start in its database (PersistentConfig), so this change does not take effect by itself: set it in Admin Panel > Settings (General for WEBUI_URL, Connections for Ollama/OpenAI), or run with --env ENABLE_PERSISTENT_CONFIG=false to make the environment win on every start (settings saved in the admin panel are then reset at each restart)",
        changed.join(", ")
    ));
}

pub(crate) fn load_env(up: &UpSettings) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    if let Some(p) = &up.env_file {
        let text = std::fs::read_to_string(p)
            .map_err(|e| UserError::new(format!("cannot read --env-file {}: {e}", p.display())))?;
        out.extend(upcfg::parse_env_file(&text, &p.display().to_string())?);
    }
    out.extend(up.env.iter().cloned());
    Ok(out)
}

pub(crate) fn load_openai_key(
    up: &UpSettings,
    printer: &Printer,
) -> anyhow::Result<Option<String>> {
    let Some(p) = &up.openai_key_file else {
        return Ok(None);
    };
    let text = read_flag_file("--openai-key-file", p, printer)?;
    upcfg::openai_key(&text, &p.display().to_string()).map(Some)
}

/// Reads a secret file a flag names, warning when others can read it.
pub(crate) fn read_flag_file(
    flag: &str,
    p: &std::path::Path,
    printer: &Printer,
) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(p)
        .map_err(|e| UserError::new(format!("cannot read {flag} {}: {e}", p.display())))?;
    if std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
        printer.warn(format!(
            "{} is readable by other users; `chmod 600 {}`",
            p.display(),
            p.display()
        ));
    }
    Ok(text)
}

/// Connects to the engine, decides GPUs (`ollama`: a bundled Ollama wants them) and
/// looks at what exists of `roles` (refusing what webui did not make unless --adopt).
async fn engine(
    c: &Ctx<'_>,
    roles: &[Role],
    extra_replicas: &[String],
    ollama: bool,
) -> anyhow::Result<(bollard::Docker, bool, Plan)> {
    let docker = docker::connect().await?;
    let info = docker
        .info()
        .await
        .map_err(|e| anyhow::Error::new(e).context("cannot read the Docker engine's info"))?;
    let (gpus, note) = gpu::decide(c.up.gpu, &gpu::detect(&info), ollama)?;
    if let Some(n) = note {
        c.printer.line(n);
    }
    let plan = ensure::preflight(
        &docker,
        c.project,
        c.up.network,
        roles,
        extra_replicas,
        c.up.adopt,
        &c.state.adopted(),
    )
    .await?;
    Ok((docker, gpus, plan))
}

/// Step 5 for `--ollama-only`: the Ollama container alone (published on
/// 127.0.0.1:--ollama-port for the proxy), or with `--ollama-url` no container at all:
/// the native Ollama is checked (answers? listens beyond loopback?) and forwarded to.
/// Pulls `image` as `--pull` says while the site shows "Downloading {what}: N%".
async fn pull_showing(
    c: &Ctx<'_>,
    docker: &bollard::Docker,
    image: &str,
    what: &str,
) -> anyhow::Result<pull::Image> {
    let (routes, live) = (c.routes, c.live);
    supervisor::hold(routes, live, Phase::Pulling, format!("Downloading {what}."));
    let mut progress = |p: u8| {
        supervisor::hold(
            routes,
            live,
            Phase::Pulling,
            format!("Downloading {what}: {p}%."),
        )
    };
    pull::ensure(docker, image, c.up.pull, c.printer, &mut progress).await
}

async fn bring_up_ollama(c: &Ctx<'_>) -> anyhow::Result<Ready> {
    let up = c.up;
    let printer = c.printer;
    let public_url = spec::public_url(&c.proxy.domains, c.https, host::lan_ipv4());
    let (OllamaMode::Bundled { image: name }, Some(served)) = (&up.ollama, &up.serve_ollama) else {
        let upstream = up.upstream().to_string().trim_end_matches('/').to_string();
        serve::check_native(&upstream, printer).await;
        supervisor::set_route(c.routes, c.live, Route::forward(up.upstream()));
        return Ok(Ready {
            public_url,
            container: upstream.clone(),
            upstream,
            roles: vec![],
            replicas: vec![],
        });
    };
    let (docker, gpus, plan) = engine(c, &[Role::Ollama], &[], true).await?;
    check_port(
        served.port,
        "Ollama (--ollama-port)",
        plan.containers.get(&Role::Ollama),
    )?;
    let (routes, live) = (c.routes, c.live);
    let img = pull_showing(c, &docker, name, "Ollama").await?;
    let o = spec::ollama(
        c.project,
        up.network,
        name,
        &img.id,
        img.digest.as_deref(),
        gpus,
    );
    let o = spec::served_ollama(o, up.network, served.port, &served.origins);
    supervisor::hold(
        routes,
        live,
        Phase::Starting,
        "Waiting for Ollama to start.",
    );
    ensure::apply(&docker, c.project, &plan, std::slice::from_ref(&o), printer).await?;
    c.state.record_adopted(&plan.adopted)?;
    let upstream = up.upstream().to_string().trim_end_matches('/').to_string();
    if health::probe_ollama(&upstream).await == Health::Healthy {
        supervisor::set_route(routes, live, Route::forward(up.upstream()));
    }
    Ok(Ready {
        public_url,
        container: o.name.clone(),
        upstream,
        roles: vec![Role::Ollama],
        replicas: vec![],
    })
}

/// `--behind-proxy`, once Open WebUI is healthy: where it answers and the exact
/// commands that print the front server's site for it.
fn behind_proxy_ready(upstream: &str, domains: &[String], global: &GlobalArgs, printer: &Printer) {
    let domain = domains.first().map(String::as_str).unwrap_or("YOUR.DOMAIN");
    let mut base = String::from("webui");
    if let Some(d) = &global.state_dir {
        base.push_str(&format!(" --state-dir {}", d.display()));
    }
    if let Some(c) = &global.config {
        base.push_str(&format!(" --config {}", c.display()));
    }
    printer.line(format!(
        "Open WebUI is ready at {upstream} (loopback only); webui serves no HTTPS itself (--behind-proxy)"
    ));
    printer.line("put your web server in front; its site configuration, generated:");
    for (server, target) in [
        ("nginx", format!("/etc/nginx/sites-available/{domain}.conf")),
        (
            "apache",
            format!("/etc/apache2/sites-available/{domain}.conf"),
        ),
        ("caddy", format!("/etc/caddy/sites/{domain}.caddy")),
    ] {
        printer.line(format!(
            "  {base} config export {server} --domain {domain} --upstream {upstream} > {target}"
        ));
    }
    if domains.is_empty() {
        printer.line("(give your site's name for YOUR.DOMAIN; `webui up --behind-proxy --domain NAME` also sets Open WebUI's WEBUI_URL to it)");
    }
}
