//! `webui up --swarm`, and the swarm side of `webui status` and `webui down`.
//!
//! `up --swarm` validates everything first (flags that make no sense on a swarm are
//! refused, the ports must be wildcard ones, certificate files are checked), then
//! on a manager node: the proxy image (from this binary), the overlay network, the
//! certificate secrets, and the services in order, each created, updated (spec
//! changed) or left alone: Postgres and Redis, then Open WebUI (a new service
//! starts with one task, so only one runs the database migrations, then scales to
//! `--replicas`), then the first admin account through a short-lived relay
//! container on the overlay (published on 127.0.0.1 only), and only then the proxy,
//! so the site never opens on an Open WebUI without its admin (PITFALLS 15). It
//! returns once every service runs all its tasks and the proxy accepts connections;
//! the swarm keeps them running (no `webui` process stays behind).
//!
//! # `webui status --json` for a swarm project
//! ```json
//! {
//!   "project": "default", "swarm": true,
//!   "healthy": true,                  // every service runs all its tasks (exit 0, else 3)
//!   "services": [{
//!     "service": "open-webui",        // postgres | redis | open-webui | proxy
//!     "name": "open-webui", "id": "0123456789ab", "image": "...",
//!     "replicas": 3, "running": 3,    // desired tasks, tasks running (healthy)
//!     "published": [],                // host-mode ports (the proxy's)
//!     "update": null,                 // a rolling update's state, e.g. "completed"
//!     "tasks": [{"id": "...", "slot": 1, "node": "host-a", "node_id": "...",
//!                "desired_state": "running", "state": "running",
//!                "since": "...", "message": "started", "error": null,
//!                "container_id": "0123456789ab"}]   // Swarm's task history included
//!   }]
//! }
//! ```

use std::time::Duration;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{CreateContainerOptions, RemoveContainerOptions};
use serde::Serialize;

use super::site;
use crate::cli::{GlobalArgs, GpuMode, NetworkMode, SwarmRelayCmd, UpCmd};
use crate::config::up::{self as upcfg, OllamaMode, Project};
use crate::config::{Paths, TlsSource, resolve};
use crate::control::InstanceLock;
use crate::docker::project::ProjectState;
use crate::docker::swarm::{self, Change, Ports, ProxyTls, ServiceDef, SwarmNames, image};
use crate::docker::{self, engine_message, ensure, host, replicas, spec};
use crate::error::UserError;
use crate::output::Printer;
use crate::state::StateDir;
use crate::tls::{self, LocalCa};

/// The local-CA leaf handed to the proxy is replaced when it has less than this left.
const LEAF_MIN_LEFT: time::Duration = time::Duration::days(30);

pub async fn up(global: &GlobalArgs, cmd: &UpCmd, printer: Printer) -> anyhow::Result<u8> {
    // 1. Everything validated before any side effect.
    let paths = Paths::resolve(global);
    let file = paths.load_file()?;
    let project = Project::resolve(global.project.as_deref())?;
    let proxy = resolve::proxy(&cmd.proxy, &file)?;
    let up = upcfg::up(cmd, &file)?;
    refuse_unsupported(cmd, &up)?;
    let ports = Ports::of(&proxy)?;
    let extra_env = super::up::load_env(&up)?;
    let openai_key = super::up::load_openai_key(&up, &printer)?;
    site::validate(&proxy)?;
    let admin_settings = upcfg::admin(cmd, &file, &proxy.domains)?;
    let admin_password = crate::admin::password_from_env()?;
    let docker = docker::connect().await?;
    let node = swarm::manager_node(&docker).await?;
    let _lock = InstanceLock::acquire(&paths.state_dir, project.key())?;
    refuse_single_host(&docker, &project).await?;
    let names = SwarmNames::new(&project);
    refuse_sqlite_data(&docker, &project, &names, &up).await?;

    let state = ProjectState::new(&paths.state_dir, &project);
    let (secret_key, _) = state.secret_key(None)?;
    let pg_password = state.postgres_password()?;

    // 2. What the proxy needs: its image, its certificate.
    let proxy_image = image::ensure(&docker, &printer).await?;
    let tls = proxy_tls(&docker, &paths, &project, &state, &proxy, &printer).await?;
    swarm::ensure_network(&docker, &project, &names, &printer).await?;

    // 3. Postgres and Redis, pinned to this node (their volumes are local).
    let pin = format!("node.id=={node}");
    let pg = replicas::postgres(&project, &up.postgres_image, "", None, &pg_password);
    let mut pg = ServiceDef::from_container(&names.postgres, &pg, 1);
    pg.constraints = vec![pin.clone()];
    pg.health = Some(swarm::postgres_health(
        replicas::POSTGRES_USER,
        replicas::POSTGRES_DB,
    ));
    pg.health_start = Duration::from_secs(120);
    pg.start_first = false; // never two servers on one data directory
    let rd = replicas::redis(&project, &up.redis_image, "", None);
    let mut rd = ServiceDef::from_container(&names.redis, &rd, 1);
    rd.constraints = vec![pin];
    rd.health = Some(swarm::redis_health());
    rd.health_start = Duration::from_secs(60);
    rd.start_first = false;
    let timeout = up.health_timeout;
    for d in [&pg, &rd] {
        apply(&docker, &project, &names, d, &printer).await?;
    }
    swarm::wait_running(
        &docker,
        &project,
        &[&names.postgres, &names.redis],
        timeout,
        &printer,
    )
    .await?;

    // 4. Open WebUI: one task first when the service is new (migrations run once).
    let public_url = spec::public_url(
        &proxy.domains,
        &[std::net::SocketAddr::from(([0, 0, 0, 0], ports.https))],
        host::lan_ipv4(),
    );
    let ollama_url = match &up.ollama {
        OllamaMode::Url(u) => Some(u.clone()),
        _ => None,
    };
    let ow = spec::open_webui(&spec::OpenWebuiInputs {
        project: &project,
        settings: &up,
        image_id: String::new(),
        image_digest: None,
        secret_key,
        public_url: public_url.clone(),
        cors: spec::cors(
            &proxy.domains,
            &[std::net::SocketAddr::from(([0, 0, 0, 0], ports.https))],
        ),
        ollama_url,
        host_gateway: false,
        openai_key,
        extra_env,
        gpus: false,
    });
    let ow = replicas::with_scale_env(ow, &replicas::scale_env(&pg_password, true));
    let mut ow = ServiceDef::from_container(&names.open_webui, &ow, u64::from(up.replicas));
    ow.health = Some(swarm::open_webui_health());
    ow.health_start = timeout;
    let existing = swarm::services(&docker, &project).await?;
    let fresh = !existing
        .iter()
        .any(|s| s.spec.as_ref().and_then(|s| s.name.as_deref()) == Some(&names.open_webui));
    if fresh && ow.replicas > 1 {
        let mut first = ow.clone();
        first.replicas = 1;
        apply(&docker, &project, &names, &first, &printer).await?;
        swarm::wait_running(&docker, &project, &[&names.open_webui], timeout, &printer).await?;
    }
    apply(&docker, &project, &names, &ow, &printer).await?;
    swarm::wait_running(&docker, &project, &[&names.open_webui], timeout, &printer).await?;

    // 5. The admin account, before the site opens.
    let admin = crate::admin::Job {
        settings: admin_settings,
        password: admin_password,
        state: ProjectState::new(&paths.state_dir, &project),
        outcome: crate::admin::SharedOutcome::default(),
    };
    let admin_outcome = match crate::admin::record(&state) {
        Some(r) => crate::admin::Outcome::Existing { record: Some(r) },
        None => {
            let o = create_admin(&docker, &project, &names, &proxy_image, &admin).await?;
            printer.line("the admin account exists; now the proxy opens the site");
            o
        }
    };

    // 6. The proxy.
    let args = swarm::proxy_args(&proxy, ports, &names.upstream(), &tls);
    let secrets = match &tls {
        ProxyTls::Files { cert, key } => vec![cert.clone(), key.clone()],
        ProxyTls::Acme { ca } => ca.iter().cloned().collect(),
    };
    let keep: Vec<String> = secrets.iter().map(|s| s.name.clone()).collect();
    let pd = swarm::proxy_def(&names, &proxy_image, &node, args, ports, secrets);
    apply(&docker, &project, &names, &pd, &printer).await?;
    swarm::wait_running(&docker, &project, &[&names.proxy], timeout, &printer).await?;
    wait_listening(ports.https, timeout).await?;
    swarm::prune_secrets(&docker, &project, &keep).await;

    // 7. Summary.
    printer.result(format!(
        "Open WebUI is served at {public_url} by the proxy on this node ({} task(s) of {} across the swarm)",
        ow.replicas, names.open_webui
    ));
    if matches!(tls, ProxyTls::Files { .. }) && matches!(proxy.tls, TlsSource::SelfSigned) {
        printer.result(format!(
            "the certificate is from the local CA; trust {} on your devices",
            StateDir::open(&paths.state_dir)?
                .ca_dir()
                .join("ca.pem")
                .display()
        ));
    }
    for line in crate::admin::describe(Some(&admin_outcome)) {
        printer.result(line);
    }
    printer.result(format!(
        "`webui{0} status` lists the services and their tasks per node; `webui{0} down` removes the services (volumes kept). Add nodes with `docker swarm join-token worker` (docs/SWARM.md)",
        project.flag()
    ));
    Ok(0)
}

fn refuse_unsupported(cmd: &UpCmd, up: &upcfg::UpSettings) -> anyhow::Result<()> {
    let no = |what: &str, hint: &str| -> anyhow::Result<()> {
        Err(UserError::new(format!("{what} does not go with --swarm"))
            .hint(hint.to_string())
            .into())
    };
    if cmd.detach {
        return no(
            "--detach",
            "`webui up --swarm` returns once deployed and the swarm keeps the services running; drop -d",
        );
    }
    if cmd.behind_proxy == Some(true) {
        return no(
            "--behind-proxy",
            "with --swarm the proxy runs as a service on the manager; run without --swarm beside another web server",
        );
    }
    if matches!(up.ollama, OllamaMode::Bundled { .. })
        || up.serve_ollama.is_some()
        || cmd.ollama_only == Some(true)
    {
        return no(
            "a bundled or served Ollama (--ollama, --ollama-only, --ollama-domain)",
            "run Ollama where the GPUs are and give its address with --ollama-url",
        );
    }
    if up.ollama_token.is_some() {
        return no(
            "a token for --ollama-url (--ollama-token, --ollama-token-file)",
            "the token is added by a forwarder beside a single-host `webui up`, which swarm tasks on other nodes cannot reach; give the swarm an Ollama its tasks reach without one, or run `webui up` on one host",
        );
    }
    if up.network == NetworkMode::Host {
        return no(
            "--network host",
            "services reach each other over the swarm's overlay network; drop --network",
        );
    }
    if up.gpu == GpuMode::All {
        return no(
            "--gpu all",
            "GPUs belong to Ollama; run it on a GPU node and give --ollama-url",
        );
    }
    if up.notify_url_file.is_some() {
        return no(
            "--notify-url-file",
            "problems are sent by a running single-host `webui up`, and a swarm runs without one; watch the swarm with its own monitoring",
        );
    }
    if up.backups.is_some() {
        return no(
            "--backup-every",
            "scheduled backups are made by a running single-host `webui up`, and a swarm runs without one; back up the swarm's Postgres with its own tools",
        );
    }
    if up.adopt {
        return no(
            "--adopt",
            "adopt the install with a plain `webui up --adopt` first, `webui down`, then `webui up --swarm` (the data volume is kept)",
        );
    }
    Ok(())
}

/// A single-host `webui up` of this project must not run beside its swarm
/// services: they would share the data volume.
async fn refuse_single_host(docker: &Docker, project: &Project) -> anyhow::Result<()> {
    let running: Vec<String> = ensure::list_managed(docker, project)
        .await?
        .into_iter()
        .filter(|c| c.state.as_ref().is_some_and(|s| s.to_string() == "running"))
        .filter_map(|c| c.names.and_then(|n| n.first().cloned()))
        .map(|n| n.trim_start_matches('/').to_string())
        .collect();
    if running.is_empty() {
        return Ok(());
    }
    Err(UserError::new(format!(
        "this project runs on this host without the swarm (containers {})",
        running.join(", ")
    ))
    .hint(format!(
        "stop it with `webui{} down` (volumes are kept and the swarm services use the same data volume on this node), then run `webui up --swarm` again",
        project.flag()
    ))
    .into())
}

/// A first `up --swarm` over a single install's data volume that is not on
/// Postgres yet would show everyone an empty site (its accounts are in SQLite):
/// refused as for `up --replicas`, unless the user gives their own DATABASE_URL.
async fn refuse_sqlite_data(
    docker: &Docker,
    project: &Project,
    names: &SwarmNames,
    up: &upcfg::UpSettings,
) -> anyhow::Result<()> {
    let exists = |v: String| async move { docker.inspect_volume(&v).await.is_ok() };
    let deployed = swarm::services(docker, project)
        .await?
        .iter()
        .any(|s| s.spec.as_ref().and_then(|s| s.name.as_deref()) == Some(&names.open_webui));
    let own_db = up.env.iter().any(|(k, _)| k == "DATABASE_URL");
    let volume = spec::Names::new(project).open_webui_volume;
    if deployed || own_db || !exists(volume.clone()).await || exists(names.postgres.clone()).await {
        return Ok(());
    }
    replicas::refuse_sqlite_users(None, &volume, up.replicas).await
}

/// Creates, updates or keeps one service, saying which.
async fn apply(
    docker: &Docker,
    project: &Project,
    names: &SwarmNames,
    def: &ServiceDef,
    printer: &Printer,
) -> anyhow::Result<()> {
    match swarm::converge(docker, project, &names.network, def).await? {
        Change::Created => printer.line(format!(
            "created service {} ({} task{})",
            def.name,
            def.replicas,
            if def.replicas == 1 { "" } else { "s" }
        )),
        Change::Updated(diff) => printer.line(format!(
            "updating service {} (rolling, one task at a time): {}",
            def.name,
            diff.join("; ")
        )),
        Change::Unchanged => printer.line(format!("service {} unchanged", def.name)),
    }
    Ok(())
}

/// The proxy's certificate as secrets (files, or a local-CA leaf kept in the
/// project's state dir and reused while it has 30 days left), or ACME settings.
async fn proxy_tls(
    docker: &Docker,
    paths: &Paths,
    project: &Project,
    state: &ProjectState,
    proxy: &crate::config::ProxySettings,
    printer: &Printer,
) -> anyhow::Result<ProxyTls> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| {
            anyhow::Error::from(UserError::new(format!("cannot read {}: {e}", p.display())))
        })
    };
    let files = |cert: Vec<u8>, key: Vec<u8>| async move {
        anyhow::Ok(ProxyTls::Files {
            cert: swarm::ensure_secret(docker, project, "tls-cert", &cert).await?,
            key: swarm::ensure_secret(docker, project, "tls-key", &key).await?,
        })
    };
    match &proxy.tls {
        TlsSource::Files { cert, key } => files(read(cert)?, read(key)?).await,
        TlsSource::SelfSigned => {
            let (cert, key) = local_ca_leaf(paths, state, &proxy.domains, printer)?;
            files(cert, key).await
        }
        TlsSource::Acme(acme) => {
            let ca = match &acme.ca_file {
                Some(p) => Some(swarm::ensure_secret(docker, project, "acme-ca", &read(p)?).await?),
                None => None,
            };
            Ok(ProxyTls::Acme { ca })
        }
    }
}

fn local_ca_leaf(
    paths: &Paths,
    state: &ProjectState,
    domains: &[String],
    printer: &Printer,
) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let cert_path = state.dir().join("swarm-proxy-cert.pem");
    let key_path = state.dir().join("swarm-proxy-key.pem");
    let (dns, ips) = tls::self_signed_names(domains);
    if cert_path.exists()
        && key_path.exists()
        && let Ok((_, info)) = tls::load_pem_files(&cert_path, &key_path)
    {
        let fresh = info.not_after - time::OffsetDateTime::now_utc() > LEAF_MIN_LEFT;
        if fresh && dns.iter().all(|d| info.names.contains(d)) {
            return Ok((
                std::fs::read(&cert_path)?,
                crate::state::read_private(&key_path)?,
            ));
        }
    }
    let ca = LocalCa::load_or_create(&StateDir::open(&paths.state_dir)?)?;
    let (cert, key) = ca.issue_pem(&dns, &ips)?;
    crate::state::create_private_dir(state.dir())?;
    crate::state::write_private(&cert_path, cert.as_bytes())?;
    crate::state::write_private(&key_path, key.as_bytes())?;
    printer.line(format!(
        "issued a certificate from the local CA for {}",
        dns.join(", ")
    ));
    Ok((cert.into_bytes(), key.into_bytes()))
}

/// Creates the first admin account through a short-lived relay container on the
/// overlay network, published on 127.0.0.1 only, so the site opens with its admin.
async fn create_admin(
    docker: &Docker,
    project: &Project,
    names: &SwarmNames,
    proxy_image: &str,
    job: &crate::admin::Job,
) -> anyhow::Result<crate::admin::Outcome> {
    let relay = project.prefixed("swarm-admin-relay");
    let _ = remove_container(docker, &relay).await;
    let port = free_loopback_port()?;
    let mut bindings = std::collections::HashMap::new();
    bindings.insert(
        "8080/tcp".to_string(),
        Some(vec![PortBinding {
            host_ip: Some("127.0.0.1".into()),
            host_port: Some(port.to_string()),
        }]),
    );
    let mut labels = std::collections::HashMap::new();
    labels.insert(
        swarm::LABEL_TASK_PROJECT.to_string(),
        project.key().to_string(),
    );
    let body = ContainerCreateBody {
        image: Some(proxy_image.to_string()),
        cmd: Some(vec![
            "swarm-relay".into(),
            "--listen".into(),
            "0.0.0.0:8080".into(),
            "--to".into(),
            format!("{}:{}", names.open_webui, spec::OPENWEBUI_PORT),
        ]),
        exposed_ports: Some(vec!["8080/tcp".to_string()]),
        labels: Some(labels),
        host_config: Some(HostConfig {
            network_mode: Some(names.network.clone()),
            port_bindings: Some(bindings),
            auto_remove: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    };
    docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(relay.clone()),
                ..Default::default()
            }),
            body,
        )
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot create the relay container {relay}: {}",
                engine_message(&e)
            )
        })?;
    let result = async {
        ensure::start(docker, &relay).await?;
        crate::admin::ensure(&format!("http://127.0.0.1:{port}"), job).await
    }
    .await;
    let _ = remove_container(docker, &relay).await;
    result
}

async fn remove_container(docker: &Docker, name: &str) -> Result<(), bollard::errors::Error> {
    docker
        .remove_container(
            name,
            Some(RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await
}

fn free_loopback_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(l.local_addr()?.port())
}

/// Waits until something accepts connections on `port` on this node (the proxy
/// task has bound it).
async fn wait_listening(port: u16, timeout: Duration) -> anyhow::Result<()> {
    let start = std::time::Instant::now();
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            return Err(UserError::new(format!(
                "the proxy's task runs but nothing accepts connections on port {port}"
            ))
            .hint("see `docker service logs` of the proxy service")
            .into());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `webui swarm-relay` (hidden): forwards TCP connections from `--listen` to `--to`;
/// the admin-account relay of `up --swarm`.
pub async fn relay(cmd: &SwarmRelayCmd) -> anyhow::Result<u8> {
    let listener = tokio::net::TcpListener::bind(&cmd.listen).await?;
    let token = tokio_util::sync::CancellationToken::new();
    crate::signal::cancel_on_signal(token.clone())?;
    loop {
        let (mut inbound, _) = tokio::select! {
            r = listener.accept() => r?,
            _ = token.cancelled() => return Ok(0),
        };
        let to = cmd.to.clone();
        tokio::spawn(async move {
            if let Ok(mut out) = tokio::net::TcpStream::connect(&to).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
            }
        });
    }
}

#[derive(Serialize)]
struct StatusReport<'a> {
    project: &'a str,
    swarm: bool,
    healthy: bool,
    services: &'a [swarm::ServiceReport],
}

/// `webui status` on a swarm project: Some(exit code) when this engine is a
/// manager and the project has services, None otherwise (the caller goes on).
pub async fn status(
    project: &Project,
    json: bool,
    printer: &Printer,
) -> anyhow::Result<Option<u8>> {
    let Ok(docker) = docker::connect().await else {
        return Ok(None);
    };
    // Not a manager (or no swarm): the engine refuses to list services.
    match swarm::services(&docker, project).await {
        Ok(s) if !s.is_empty() => {}
        _ => return Ok(None),
    }
    let services = swarm::report(&docker, project).await?;
    let healthy = services.iter().all(|s| s.converged());
    if json {
        let r = StatusReport {
            project: project.key(),
            swarm: true,
            healthy,
            services: &services,
        };
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        printer.result(format!(
            "project {} on Docker Swarm: {}",
            project.key(),
            if healthy {
                "every service runs all its tasks"
            } else {
                "NOT every task is running"
            }
        ));
        for s in &services {
            let published = match s.published.is_empty() {
                true => String::new(),
                false => format!(
                    ", publishes {} on its node",
                    s.published
                        .iter()
                        .map(u16::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            printer.result(format!(
                "{:<10} {:<24} {}/{} running{}  {}",
                s.service, s.name, s.running, s.replicas, published, s.image
            ));
            if let Some(u) = &s.update {
                printer.result(format!("    update: {u}"));
            }
            for t in s
                .tasks
                .iter()
                .filter(|t| t.desired_state == "running" || t.error.is_some())
                .take(s.replicas as usize + 3)
            {
                printer.result(format!(
                    "    task {} slot {} on {}: {} (desired {}){}",
                    t.id,
                    t.slot.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
                    if t.node.is_empty() { "?" } else { &t.node },
                    t.state,
                    t.desired_state,
                    t.error
                        .as_ref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                ));
            }
        }
    }
    Ok(Some(if healthy {
        0
    } else {
        super::status::EXIT_NOT_HEALTHY
    }))
}

/// `webui down` on a swarm project: removes the services, network and secrets when
/// this engine is a manager with the project's services. True when it did.
pub async fn down(docker: &Docker, project: &Project, printer: &Printer) -> anyhow::Result<bool> {
    if !swarm::is_manager(docker).await {
        return Ok(false);
    }
    let removed = swarm::remove(docker, project, printer).await?;
    if removed {
        printer.line(
            "volumes are kept on every node that ran a task; `webui up --swarm` brings the site back",
        );
    }
    Ok(removed)
}
