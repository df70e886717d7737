//! `webui up`: Open WebUI (and optionally Ollama) in Docker, behind the HTTPS proxy.
//!
//! 1. Resolve and validate every setting (pure), read the files flags name.
//! 2. Bind the proxy's listeners: a busy port fails here, before Docker is touched.
//! 3. Start serving at once with the "starting" page (`Route::Hold`), and print the
//!    `listening on ...` lines.
//! 4. Docker: connect, check GPUs, look at what exists (refusing what webui did not
//!    make unless `--adopt`), check the loopback port, find Ollama, pull, then create,
//!    keep or recreate network, volumes and containers, printing what happened.
//! 5. Wait for `/health`, then switch the route to `Route::Forward`.
//! 6. Serve until SIGINT/SIGTERM; the containers keep running (`webui down` stops
//!    them). While serving, Open WebUI's health is polled; when it stops answering the
//!    starting page is shown instead of proxy errors.
//!
//! The PersistentConfig choice (`ENABLE_PERSISTENT_CONFIG` left at Open WebUI's
//! default, changes detected and explained) is described in `docker::spec`.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::site;
use crate::cli::{GlobalArgs, NetworkMode, UpCmd};
use crate::config::up::{self as upcfg, OllamaMode, Project, UpSettings};
use crate::config::{Paths, ProxySettings, resolve};
use crate::docker::ensure::{self, Plan};
use crate::docker::health::{self, Health};
use crate::docker::host::{self, ListenScope};
use crate::docker::project::{ProjectState, RunInfo, SecretOrigin};
use crate::docker::spec::{self, OpenWebuiInputs};
use crate::docker::{self, Role, gpu, pull};
use crate::error::UserError;
use crate::output::Printer;
use crate::proxy::{Bound, Proxy};
use crate::route::{self, Hold, Phase, Route, RouteTx};

/// How often Open WebUI's health is checked while serving, and after how many
/// failures in a row the starting page replaces it.
const WATCH_INTERVAL: Duration = Duration::from_secs(5);
const WATCH_FAILURES: u32 = 3;

pub async fn run(global: &GlobalArgs, cmd: &UpCmd, printer: Printer) -> anyhow::Result<u8> {
    // 1. Everything validated before any side effect.
    let paths = Paths::resolve(global);
    let file = paths.load_file()?;
    let project = Project::resolve(global.project.as_deref())?;
    let proxy_settings = resolve::proxy(&cmd.proxy, &file)?;
    let up = upcfg::up(cmd, &file)?;
    let extra_env = load_env(&up)?;
    let openai_key = load_openai_key(&up, &printer)?;
    let validated = site::validate(&proxy_settings)?;

    // 2. Bind.
    let bound = Bound::bind(&proxy_settings)?;
    let https_addrs = bound.https_addrs();
    let http_addrs = bound.http_addrs();

    // 3. Serve the starting page right away.
    let site = site::prepare(&paths, &proxy_settings, validated, &printer)?;
    let upstream = up.upstream();
    let upstream_base = upstream.to_string().trim_end_matches('/').to_string();
    let (route_tx, routes) = route::table(Route::Hold(Hold {
        phase: Phase::Starting,
        detail: "preparing".into(),
    }));
    let shutdown = CancellationToken::new();
    crate::signal::cancel_on_signal(shutdown.clone())?;
    for addr in &https_addrs {
        printer.line(format!("listening on https://{addr} -> {upstream}"));
    }
    for addr in &http_addrs {
        printer.line(format!("listening on http://{addr} (redirects to https)"));
    }
    let http_port = http_addrs.first().map(|a| a.port());
    let proxy = Proxy {
        settings: proxy_settings.clone(),
        certs: site.certs.clone(),
        routes,
        challenges: site.challenges.clone(),
    };
    let mut proxy_task = tokio::spawn(proxy.run(bound, shutdown.child_token()));
    // Certificate checks (ACME preflight) fail here, before Docker is touched.
    if let Err(e) = site.start(http_port, shutdown.clone()).await {
        shutdown.cancel();
        let _ = proxy_task.await;
        return Err(e);
    }
    let state = ProjectState::new(&paths.state_dir, &project);
    let run_info = RunInfo {
        pid: std::process::id(),
        https: https_addrs.iter().map(|a| a.to_string()).collect(),
        http: http_addrs.iter().map(|a| a.to_string()).collect(),
        upstream: upstream_base.clone(),
    };
    if let Err(e) = state.write_run(&run_info) {
        tracing::debug!("cannot record the running proxy for `webui status`: {e:#}");
    }

    // 4-5. Docker, then health.
    let ctx = Ctx {
        project: &project,
        up: &up,
        proxy: &proxy_settings,
        https: &https_addrs,
        state: &state,
        printer: &printer,
        routes: &route_tx,
        extra_env,
        openai_key,
    };
    let outcome = tokio::select! {
        r = bring_up(&ctx) => Some(r),
        _ = shutdown.cancelled() => None,
        r = &mut proxy_task => {
            state.clear_run();
            return match r {
                Ok(Ok(())) => Err(anyhow::anyhow!("the proxy stopped unexpectedly")),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(anyhow::anyhow!("the proxy task failed: {e}")),
            };
        }
    };
    match outcome {
        Some(Ok(public_url)) => {
            route_tx.send_replace(Route::Forward(upstream.clone()));
            printer.line(format!("Open WebUI is ready at {public_url}"));
        }
        Some(Err(e)) => {
            shutdown.cancel();
            let _ = proxy_task.await;
            state.clear_run();
            return Err(e);
        }
        None => {
            printer.line("interrupted; containers that were started keep running");
        }
    }

    // 6. Serve until a signal.
    let watcher = tokio::spawn(watch(route_tx, upstream, shutdown.clone(), printer));
    let result = proxy_task.await;
    shutdown.cancel();
    let _ = watcher.await;
    state.clear_run();
    match result {
        Ok(r) => r?,
        Err(e) => return Err(anyhow::anyhow!("the proxy task failed: {e}")),
    }
    printer.line(format!(
        "stopped serving; the containers keep running (`webui{} down` stops them)",
        project.flag()
    ));
    Ok(0)
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
    extra_env: Vec<(String, String)>,
    openai_key: Option<String>,
}

fn hold(routes: &RouteTx, phase: Phase, detail: impl Into<String>) {
    routes.send_replace(Route::Hold(Hold {
        phase,
        detail: detail.into(),
    }));
}

/// Steps 4 and 5; returns the public URL once Open WebUI is healthy.
async fn bring_up(c: &Ctx<'_>) -> anyhow::Result<String> {
    let up = c.up;
    let printer = c.printer;
    let docker = docker::connect().await?;

    let info = docker
        .info()
        .await
        .map_err(|e| anyhow::Error::new(e).context("cannot read the Docker engine's info"))?;
    let bundled = matches!(up.ollama, OllamaMode::Bundled { .. });
    let (gpus, note) = gpu::decide(up.gpu, &gpu::detect(&info), bundled)?;
    if let Some(n) = note {
        printer.line(n);
    }

    let mut roles = vec![Role::OpenWebui];
    if bundled {
        roles.insert(0, Role::Ollama);
    }
    let plan = ensure::preflight(
        &docker,
        c.project,
        up.network,
        &roles,
        up.adopt,
        &c.state.adopted(),
    )
    .await?;
    check_port(
        up.port,
        "Open WebUI (--port)",
        plan.containers.get(&Role::OpenWebui),
    )?;
    if bundled && up.network == NetworkMode::Host {
        check_port(
            spec::OLLAMA_PORT,
            "the bundled Ollama (host network)",
            plan.containers.get(&Role::Ollama),
        )?;
    }
    let (ollama_url, host_gateway) = ollama_url(up, printer).await;

    hold(c.routes, Phase::Pulling, "downloading");
    let routes = c.routes;
    let mut progress = |p: u8| hold(routes, Phase::Pulling, format!("downloading {p}%"));
    let image = pull::ensure(&docker, &up.image, up.pull, printer, &mut progress).await?;
    let ollama_image = match &up.ollama {
        OllamaMode::Bundled { image } => {
            Some(pull::ensure(&docker, image, up.pull, printer, &mut progress).await?)
        }
        _ => None,
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

    let public_url = spec::public_url(&c.proxy.domains, c.https, host::lan_ipv4());
    let ow = spec::open_webui(&OpenWebuiInputs {
        project: c.project,
        settings: up,
        image_id: image.id.clone(),
        image_digest: image.digest.clone(),
        secret_key,
        public_url: public_url.clone(),
        cors: spec::cors(&c.proxy.domains, c.https),
        ollama_url,
        host_gateway,
        openai_key: c.openai_key.clone(),
        extra_env: c.extra_env.clone(),
        gpus: gpus && (up.gpu == crate::cli::GpuMode::All || up.image.contains("cuda")),
    });
    let mut specs = Vec::new();
    if let (OllamaMode::Bundled { image: name }, Some(img)) = (&up.ollama, &ollama_image) {
        specs.push(spec::ollama(
            c.project,
            up.network,
            name,
            &img.id,
            img.digest.as_deref(),
            gpus,
        ));
    }
    specs.push(ow.clone());

    warn_persistent_config(c, &plan, &ow);
    let_running_start_finish(&docker, &plan, &ow, up, printer).await;

    hold(c.routes, Phase::Starting, "starting");
    ensure::apply(&docker, c.project, &plan, &specs, printer).await?;
    c.state.record_adopted(&plan.adopted)?;
    c.state
        .record_persistent_values(&spec::persistent_values(&ow))?;

    let upstream = format!("http://127.0.0.1:{}", up.port);
    let mut tick = |elapsed: Duration| {
        hold(
            routes,
            Phase::Starting,
            format!("starting ({})", health::elapsed_text(elapsed)),
        )
    };
    let took = health::wait(
        &docker,
        &ow.name,
        &upstream,
        up.health_timeout,
        printer,
        &mut tick,
    )
    .await?;
    printer.line(format!(
        "{} is healthy (after {})",
        ow.name,
        health::elapsed_text(took)
    ));
    Ok(public_url)
}

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
        OllamaMode::Bundled { .. } => (Some(spec::bundled_ollama_url(up.network)), false),
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

fn load_env(up: &UpSettings) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    if let Some(p) = &up.env_file {
        let text = std::fs::read_to_string(p)
            .map_err(|e| UserError::new(format!("cannot read --env-file {}: {e}", p.display())))?;
        out.extend(upcfg::parse_env_file(&text, &p.display().to_string())?);
    }
    out.extend(up.env.iter().cloned());
    Ok(out)
}

fn load_openai_key(up: &UpSettings, printer: &Printer) -> anyhow::Result<Option<String>> {
    let Some(p) = &up.openai_key_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(p).map_err(|e| {
        UserError::new(format!(
            "cannot read --openai-key-file {}: {e}",
            p.display()
        ))
    })?;
    if std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
        printer.warn(format!(
            "{} is readable by other users; `chmod 600 {}`",
            p.display(),
            p.display()
        ));
    }
    upcfg::openai_key(&text, &p.display().to_string()).map(Some)
}

/// While serving: the starting page instead of proxy errors when Open WebUI stops
/// answering (restart, crash, `docker stop`), forwarding again when it is back.
async fn watch(
    routes: RouteTx,
    upstream: http::Uri,
    shutdown: CancellationToken,
    printer: Printer,
) {
    let base = upstream.to_string().trim_end_matches('/').to_string();
    let mut failures = 0u32;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(WATCH_INTERVAL) => {}
        }
        match health::probe(&base).await {
            Health::Healthy => {
                if failures >= WATCH_FAILURES {
                    printer.line("Open WebUI answers again; forwarding");
                    routes.send_replace(Route::Forward(upstream.clone()));
                }
                failures = 0;
            }
            other => {
                failures += 1;
                if failures == WATCH_FAILURES {
                    printer.warn(format!(
                        "Open WebUI is not answering ({}); showing the starting page until it is back",
                        other.as_str()
                    ));
                    hold(&routes, Phase::Restarting, "Open WebUI is not answering");
                }
            }
        }
    }
}
