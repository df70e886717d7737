//! `webui doctor`: the deployment guide's troubleshooting section, automated. Each
//! check prints PASS / WARN / FAIL / SKIP with its evidence and, unless it passed, a
//! one-line fix. Exit 0 when nothing failed, 3 otherwise.
//!
//! JSON schema (`--json`): `{"checks": [{"name", "status": "pass|warn|fail|skip",
//! "evidence", "fix"}], "failed": N}`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecResults};
use futures_util::StreamExt;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cli::{DoctorCmd, GlobalArgs};
use crate::config::up::Project;
use crate::config::{Paths, resolve};
use crate::docker::project::ProjectState;
use crate::docker::spec::Names;
use crate::docker::{self, Role, health, host};
use crate::error::UserError;
use crate::output::{Printer, Tone};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Pass,
    Warn,
    Fail,
    Skip,
}

#[derive(Debug, Serialize)]
struct Check {
    name: String,
    status: Status,
    evidence: String,
    fix: Option<String>,
}

fn check(name: &str, status: Status, evidence: impl Into<String>, fix: Option<&str>) -> Check {
    Check {
        name: name.to_string(),
        status,
        evidence: evidence.into(),
        fix: fix.map(str::to_string),
    }
}

pub async fn run(global: &GlobalArgs, cmd: &DoctorCmd, printer: Printer) -> anyhow::Result<u8> {
    let paths = Paths::resolve(global);
    let file = paths.load_file()?;
    let settings = resolve::proxy(&cmd.proxy, &file)?;
    let project = Project::resolve(global.project.as_deref())?;
    let names = Names::new(&project);
    let run = ProjectState::new(&paths.state_dir, &project).run_info();
    let resolver = cmd.resolver.as_deref().map(parse_resolver).transpose()?;
    let mut checks = Vec::new();

    // Docker.
    let docker = match tokio::time::timeout(Duration::from_secs(10), docker::connect()).await {
        Ok(Ok(d)) => {
            let v = d.version().await.ok();
            let info = d.info().await.ok();
            let runtimes: Vec<String> = info
                .as_ref()
                .and_then(|i| i.runtimes.as_ref())
                .map(|r| r.keys().cloned().collect())
                .unwrap_or_default();
            checks.push(check(
                "docker engine",
                Status::Pass,
                format!(
                    "version {}, API {}, runtimes {}",
                    v.as_ref()
                        .and_then(|v| v.version.clone())
                        .unwrap_or_default(),
                    v.as_ref()
                        .and_then(|v| v.api_version.clone())
                        .unwrap_or_default(),
                    runtimes.join(", ")
                ),
                None,
            ));
            let root = info.as_ref().and_then(|i| i.docker_root_dir.clone());
            if let Some(root) = root {
                checks.push(disk("free disk under the Docker data root", &root));
            }
            Some(d)
        }
        Ok(Err(e)) => {
            checks.push(check(
                "docker engine",
                Status::Fail,
                format!("{e:#}"),
                Some("start Docker (`systemctl start docker`), or install it with install.sh"),
            ));
            None
        }
        Err(_) => {
            checks.push(check(
                "docker engine",
                Status::Fail,
                "no answer within 10 s",
                Some("restart Docker"),
            ));
            None
        }
    };
    checks.push(disk(
        "free disk under the state directory",
        &paths.state_dir.to_string_lossy(),
    ));

    // Ports: ours, someone else's, or free.
    let ours = run.as_ref().map(|r| r.pid);
    // `webui up --behind-proxy`: 80/443 belong to the web server in front.
    let behind = run.as_ref().is_some_and(|r| r.behind_proxy);
    for (addr, what) in settings
        .listen
        .iter()
        .map(|a| (a, "HTTPS"))
        .chain(settings.http_listen.iter().map(|a| (a, "HTTP")))
    {
        if addr.ip().is_ipv6() && addr.ip().is_unspecified() {
            continue; // one check per port is enough; the IPv4 twin speaks for it
        }
        let name = format!("port {} ({what})", addr.port());
        match crate::proxy::port_holder(addr.port()) {
            Some(holder) if ours.is_some_and(|pid| holder.ends_with(&format!("pid {pid}"))) || holder.starts_with("webui ") => {
                checks.push(check(&name, Status::Pass, format!("served by webui ({holder})"), None));
            }
            Some(holder) if behind => checks.push(check(
                &name,
                Status::Pass,
                format!("held by {holder}, the web server in front of webui (--behind-proxy)"),
                None,
            )),
            None if behind => checks.push(check(
                &name,
                Status::Fail,
                "nothing listens, but webui runs --behind-proxy: the web server in front is not running",
                Some("start nginx/Apache/Caddy with the site from `webui config export nginx|apache|caddy --domain NAME`"),
            )),
            Some(holder) => checks.push(check(
                &name,
                Status::Fail,
                format!("held by {holder}"),
                Some("stop that server, or keep it in front: `webui up --behind-proxy` runs Open WebUI without a listener of its own, and `webui config export nginx|apache|caddy --domain NAME` prints the site for that server"),
            )),
            None => checks.push(check(
                &name,
                Status::Warn,
                "nothing listens",
                Some("start the site with `webui up` (or `webui up -d` as a service)"),
            )),
        }
    }

    // DNS for each domain.
    for d in &settings.domains {
        checks.push(dns(d, resolver, &settings, run.as_ref()).await);
    }

    // Through the proxy: redirect, certificate, websocket, health.
    let https = first_local(&settings.listen, run.as_ref().map(|r| r.https.as_slice()));
    let http = first_local(
        &settings.http_listen,
        run.as_ref().map(|r| r.http.as_slice()),
    );
    let host_name = settings
        .domains
        .first()
        .cloned()
        .unwrap_or_else(|| "localhost".into());
    if let Some(addr) = http {
        match raw_http(
            addr,
            &format!("GET /doctor HTTP/1.1\r\nHost: {host_name}\r\nConnection: close\r\n\r\n"),
        )
        .await
        {
            Ok(r)
                if r.starts_with("HTTP/1.1 301")
                    && r.to_ascii_lowercase().contains("location: https://") =>
            {
                checks.push(check(
                    "HTTP -> HTTPS redirect",
                    Status::Pass,
                    format!("http://{addr}/ answers 301 to https"),
                    None,
                ));
            }
            Ok(r) => checks.push(check(
                "HTTP -> HTTPS redirect",
                Status::Fail,
                format!(
                    "http://{addr}/ answers `{}`",
                    r.lines().next().unwrap_or("")
                ),
                Some("let webui own port 80, or add the redirect to the server that holds it"),
            )),
            Err(e) => checks.push(check(
                "HTTP -> HTTPS redirect",
                Status::Skip,
                format!("{addr}: {e}"),
                None,
            )),
        }
    }
    if let Some(addr) = https {
        checks.push(certificate(addr, &host_name, &paths.state_dir).await);
        let ws = raw_tls(
            addr,
            &host_name,
            &format!(
                "GET /ws/socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {host_name}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ),
        )
        .await;
        checks.push(match ws {
            Ok(r) if r.starts_with("HTTP/1.1 101") => check("websocket through the proxy", Status::Pass, "/ws/socket.io answers 101 Switching Protocols", None),
            Ok(r) => check(
                "websocket through the proxy",
                Status::Fail,
                format!("/ws/socket.io answers `{}`", r.lines().next().unwrap_or("")),
                Some("Open WebUI needs websockets since 0.5; check `webui status` and `webui logs open-webui`"),
            ),
            Err(e) => check("websocket through the proxy", Status::Fail, format!("{e}"), Some("check `webui status`")),
        });
        let h = raw_tls(
            addr,
            &host_name,
            &format!("GET /health HTTP/1.1\r\nHost: {host_name}\r\nConnection: close\r\n\r\n"),
        )
        .await;
        checks.push(match h {
            Ok(r) if r.starts_with("HTTP/1.1 200") => check(
                "Open WebUI /health through the proxy",
                Status::Pass,
                "200",
                None,
            ),
            Ok(r) => check(
                "Open WebUI /health through the proxy",
                Status::Fail,
                r.lines().next().unwrap_or("").to_string(),
                Some("see `webui status` and `webui logs open-webui`"),
            ),
            Err(e) => check(
                "Open WebUI /health through the proxy",
                Status::Fail,
                format!("{e}"),
                Some("is `webui up` running?"),
            ),
        });
    }
    if let Some(run) = &run {
        let base = run.upstream.trim_end_matches('/');
        checks.push(
            match health::http_get(&format!("{base}/health"), Duration::from_secs(5)).await {
                Ok((s, _)) if s.is_success() => check(
                    "Open WebUI /health directly",
                    Status::Pass,
                    format!("{base}/health answers {s}"),
                    None,
                ),
                Ok((s, _)) => check(
                    "Open WebUI /health directly",
                    Status::Fail,
                    format!("{base}/health answers {s}"),
                    Some("see `webui logs open-webui`; first starts run migrations for minutes"),
                ),
                Err(e) => check(
                    "Open WebUI /health directly",
                    Status::Fail,
                    format!("{e:#}"),
                    Some("see `webui status`"),
                ),
            },
        );
    }

    // Inside the open-webui container: Ollama and the timeouts.
    if let Some(d) = &docker {
        checks.extend(container_checks(d, names.container(Role::OpenWebui)).await);
    }

    // `up --ollama-url … --ollama-token…`: the remote Ollama, asked from this host as
    // the forwarder asks it (inside the container a failure is only the forwarder's answer).
    let project_state = ProjectState::new(&paths.state_dir, &project);
    if let (Some(remote), Some(token)) = (
        run.as_ref().and_then(|r| r.remote_ollama.clone()),
        crate::ollama::serve::stored_remote_token(&project_state),
    ) {
        checks.push(remote_ollama(&paths.state_dir, &remote, token).await);
    }

    // Backups of Open WebUI's data: the running `up`'s schedule, else the last one made.
    if let Some(d) = &docker
        && d.inspect_container(names.container(Role::OpenWebui), None)
            .await
            .is_ok()
    {
        let socket = crate::control::socket_path(&paths.state_dir, project.key());
        let live = crate::control::request(&socket, "status").await;
        let last = crate::docker::pin::History::load(&project_state).last_backup;
        checks.push(backups(
            live.as_ref()
                .and_then(crate::supervisor::BackupsLive::from_live)
                .as_ref(),
            last.as_ref(),
            std::time::SystemTime::now(),
        ));
    }

    // A host Ollama on every address, unauthenticated.
    match host::listen_scope(11434) {
        Some(host::ListenScope::Everywhere) => checks.push(check(
            "host Ollama exposure",
            Status::Warn,
            "an Ollama on this host listens on 0.0.0.0:11434 without authentication",
            Some("set OLLAMA_HOST=127.0.0.1:11434 in its systemd unit, or front it with `webui up --ollama-only --domain ...`"),
        )),
        Some(_) => checks.push(check("host Ollama exposure", Status::Pass, "a host Ollama listens on loopback/specific addresses only", None)),
        None => {}
    }

    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    if cmd.json {
        println!(
            "{}",
            serde_json::json!({ "checks": checks, "failed": failed })
        );
    } else {
        for c in &checks {
            let tag = match c.status {
                Status::Pass => printer.paint(Tone::Good, "PASS"),
                Status::Warn => printer.paint(Tone::Warn, "WARN"),
                Status::Fail => printer.paint(Tone::Bad, "FAIL"),
                Status::Skip => printer.paint(Tone::Dim, "SKIP"),
            };
            printer.line(format!("{tag}  {}: {}", c.name, c.evidence));
            if let Some(fix) = &c.fix
                && c.status != Status::Pass
            {
                printer.line(format!("      fix: {fix}"));
            }
        }
        printer.line(if failed == 0 {
            "no problems found".to_string()
        } else {
            format!("{failed} check(s) failed")
        });
    }
    Ok(if failed == 0 { 0 } else { 3 })
}

/// `--resolver IP:PORT` (a DNS server), e.g. `127.0.0.1:8053` or `[::1]:53`.
fn parse_resolver(s: &str) -> anyhow::Result<SocketAddr> {
    s.parse::<SocketAddr>()
        .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| {
            UserError::new(format!(
                "--resolver `{s}` is not a DNS server address; write it like 127.0.0.1:53 or [::1]:5353"
            ))
            .into()
        })
}

/// The A and AAAA answers for `name`: from `resolver` when given (one DNS server, UDP
/// then TCP, no /etc/hosts), else from the system's resolver.
async fn lookup(name: &str, resolver: Option<SocketAddr>) -> anyhow::Result<Vec<IpAddr>> {
    use hickory_resolver::Resolver;
    use hickory_resolver::config::{NameServerConfig, ResolverConfig};
    use hickory_resolver::net::runtime::TokioRuntimeProvider;

    let Some(server) = resolver else {
        let addrs = tokio::net::lookup_host((name, 443)).await?;
        let mut ips: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
        ips.dedup();
        return Ok(ips);
    };
    let mut ns = NameServerConfig::udp_and_tcp(server.ip());
    for c in &mut ns.connections {
        c.port = server.port();
    }
    let mut builder = Resolver::builder_with_config(
        ResolverConfig::from_parts(None, Vec::new(), vec![ns]),
        TokioRuntimeProvider::default(),
    );
    builder.options_mut().timeout = Duration::from_secs(3);
    builder.options_mut().attempts = 2;
    let r = builder.build()?;
    let fqdn = format!("{}.", name.trim_end_matches('.'));
    let (a, aaaa) = tokio::join!(r.ipv4_lookup(fqdn.as_str()), r.ipv6_lookup(fqdn.as_str()));
    let mut ips = Vec::new();
    let mut errors = Vec::new();
    for l in [a, aaaa] {
        match l {
            Ok(l) => ips.extend(l.answers().iter().filter_map(|r| r.data.ip_addr())),
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => {}
            Err(e) => errors.push(format!("{e}")),
        }
    }
    match errors.first() {
        Some(e) if ips.is_empty() => Err(anyhow::anyhow!("{server}: {e}")),
        _ => Ok(ips),
    }
}

/// A domain's A/AAAA records against this host: each answer must be an address of this
/// host, or (behind NAT) lead to a server presenting the same certificate as this
/// host's HTTPS listener.
async fn dns(
    domain: &str,
    resolver: Option<SocketAddr>,
    settings: &crate::config::ProxySettings,
    run: Option<&crate::docker::project::RunInfo>,
) -> Check {
    let name = format!("DNS {domain}");
    let asked = match resolver {
        Some(r) => format!(" (asked {r})"),
        None => String::new(),
    };
    let ips = match tokio::time::timeout(Duration::from_secs(10), lookup(domain, resolver)).await {
        Ok(Ok(ips)) if !ips.is_empty() => ips,
        Ok(Ok(_)) => {
            return check(
                &name,
                Status::Fail,
                format!("no A or AAAA record{asked}"),
                Some("create an A (and AAAA) record for the name pointing at this server"),
            );
        }
        Ok(Err(e)) => {
            return check(
                &name,
                Status::Fail,
                format!("does not resolve{asked}: {e:#}"),
                Some("create an A (and AAAA) record for the name pointing at this server"),
            );
        }
        Err(_) => {
            return check(
                &name,
                Status::Fail,
                format!("no DNS answer within 10 s{asked}"),
                Some("check /etc/resolv.conf (or --resolver) and the name's DNS servers"),
            );
        }
    };
    let local: Vec<IpAddr> = if_addrs::get_if_addrs()
        .map(|v| v.into_iter().map(|i| i.ip()).collect())
        .unwrap_or_default();
    let list = ips
        .iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let elsewhere: Vec<IpAddr> = ips
        .iter()
        .copied()
        .filter(|ip| !local.contains(ip))
        .collect();
    if elsewhere.is_empty() {
        return check(
            &name,
            Status::Pass,
            format!("resolves to {list}{asked}, addresses of this host"),
            None,
        );
    }
    // Behind NAT the public address is not on an interface: it is right when it leads
    // here, i.e. serves the very certificate this host serves.
    let https = first_local(&settings.listen, run.map(|r| r.https.as_slice()))
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 443)));
    let ours = leaf(https, domain).await.ok();
    let mut wrong = Vec::new();
    for ip in &elsewhere {
        let theirs = leaf(SocketAddr::new(*ip, https.port()), domain).await.ok();
        if ours.is_none() || theirs != ours {
            wrong.push(ip.to_string());
        }
    }
    if wrong.is_empty() {
        return check(
            &name,
            Status::Pass,
            format!(
                "resolves to {list}{asked}; reaches this host through NAT (same certificate on port {})",
                https.port()
            ),
            None,
        );
    }
    check(
        &name,
        Status::Fail,
        format!(
            "resolves to {list}{asked}; {} is not an address of this host and does not lead here (no matching certificate on port {})",
            wrong.join(", "),
            https.port()
        ),
        Some(
            "point the A/AAAA records at this server's public address (behind NAT: forward ports 80 and 443 to it); old answers may be cached for the record's TTL",
        ),
    )
}

/// The leaf certificate served at `addr` for `name`, whatever its trust.
async fn leaf(addr: SocketAddr, name: &str) -> anyhow::Result<Vec<u8>> {
    let cfg = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(addr))
        .await??;
    let server_name = rustls_pki_types::ServerName::try_from(name.to_string())?;
    let s =
        tokio::time::timeout(Duration::from_secs(5), connector.connect(server_name, tcp)).await??;
    s.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
        .ok_or_else(|| anyhow::anyhow!("no certificate"))
}

/// A loopback address to reach a listener on: the running supervisor's actual
/// listeners first (they may be port 0 in settings), else the configured ones.
fn first_local(configured: &[SocketAddr], running: Option<&[String]>) -> Option<SocketAddr> {
    let pick = |a: SocketAddr| -> SocketAddr {
        if a.ip().is_unspecified() {
            SocketAddr::new(IpAddr::from([127, 0, 0, 1]), a.port())
        } else {
            a
        }
    };
    if let Some(r) = running
        .and_then(|r| r.first())
        .and_then(|s| s.parse::<SocketAddr>().ok())
    {
        return Some(pick(r));
    }
    configured.iter().find(|a| a.port() != 0).map(|a| pick(*a))
}

fn disk(name: &str, path: &str) -> Check {
    match rustix::fs::statvfs(path) {
        Ok(s) => {
            let free = s.f_bavail.saturating_mul(s.f_frsize);
            let gib = free as f64 / (1u64 << 30) as f64;
            if gib < 2.0 {
                check(
                    name,
                    Status::Fail,
                    format!("{path}: {gib:.1} GiB free"),
                    Some("free space: `docker system prune` removes unused images"),
                )
            } else if gib < 10.0 {
                check(
                    name,
                    Status::Warn,
                    format!("{path}: {gib:.1} GiB free"),
                    Some("Open WebUI images and updates need several GiB"),
                )
            } else {
                check(
                    name,
                    Status::Pass,
                    format!("{path}: {gib:.1} GiB free"),
                    None,
                )
            }
        }
        Err(e) => check(name, Status::Skip, format!("{path}: {e}"), None),
    }
}

async fn raw_http(addr: SocketAddr, request: &str) -> anyhow::Result<String> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(request.as_bytes()).await?;
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).await?;
        anyhow::Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within 10 s"))?
}

/// One request over TLS without verifying the certificate (the certificate check is
/// separate and says what is wrong with it); returns the first bytes of the answer.
async fn raw_tls(addr: SocketAddr, name: &str, request: &str) -> anyhow::Result<String> {
    let fut = async {
        let cfg = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny))
            .with_no_client_auth();
        let mut cfg = cfg;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let server_name = rustls_pki_types::ServerName::try_from(name.to_string())?;
        let mut s = connector.connect(server_name, tcp).await?;
        s.write_all(request.as_bytes()).await?;
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).await?;
        anyhow::Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within 10 s"))?
}

/// The served certificate: trusted by the system store (or only by webui's local CA),
/// valid for the name, with its intermediate, and how long it has left.
async fn certificate(addr: SocketAddr, name: &str, state_dir: &std::path::Path) -> Check {
    let title = format!("certificate for {name}");
    let mut system = rustls::RootCertStore::empty();
    for path in [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
    ] {
        if let Ok(pem) = std::fs::read(path) {
            for c in rustls_pki_types::pem::PemObject::pem_slice_iter(&pem).flatten() {
                let c: rustls_pki_types::CertificateDer = c;
                let _ = system.add(c);
            }
        }
    }
    let mut local = rustls::RootCertStore::empty();
    if let Ok(pem) = std::fs::read(state_dir.join("ca").join("ca.pem")) {
        for c in rustls_pki_types::pem::PemObject::pem_slice_iter(&pem).flatten() {
            let c: rustls_pki_types::CertificateDer = c;
            let _ = local.add(c);
        }
    }
    let chain = match handshake(addr, name, system).await {
        Ok(chain) => Ok(("a public CA", chain)),
        Err(public_err) => match handshake(addr, name, local).await {
            Ok(chain) => Ok(("webui's local CA only", chain)),
            Err(_) => Err(public_err),
        },
    };
    match chain {
        Ok((trust, chain)) => {
            let Some(info) = chain
                .first()
                .and_then(|c| crate::tls::CertInfo::from_der(c).ok())
            else {
                return check(
                    &title,
                    Status::Fail,
                    "no certificate in the handshake",
                    None,
                );
            };
            let days = (info.not_after - time::OffsetDateTime::now_utc()).whole_days();
            let evidence = format!(
                "issued by {}, trusted through {trust}, {} certificate(s) in the chain, {days} days left",
                info.issuer,
                chain.len()
            );
            if days < 7 {
                check(
                    &title,
                    Status::Fail,
                    evidence,
                    Some("renewal is failing: see `webui cert status`"),
                )
            } else if trust != "a public CA" {
                check(
                    &title,
                    Status::Warn,
                    evidence,
                    Some(
                        "browsers warn unless the local CA is imported; give --domain for a Let's Encrypt certificate",
                    ),
                )
            } else if days < 20 {
                check(
                    &title,
                    Status::Warn,
                    evidence,
                    Some("renewal should have happened: see `webui cert status`"),
                )
            } else {
                check(&title, Status::Pass, evidence, None)
            }
        }
        Err(e) => check(
            &title,
            Status::Fail,
            format!("{e:#}"),
            Some(
                "wrong name or missing intermediate: serve the full chain (fullchain.pem), or let webui get one with --domain",
            ),
        ),
    }
}

async fn handshake(
    addr: SocketAddr,
    name: &str,
    roots: rustls::RootCertStore,
) -> anyhow::Result<Vec<rustls_pki_types::CertificateDer<'static>>> {
    let cfg = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect(addr),
    )
    .await??;
    let server_name = rustls_pki_types::ServerName::try_from(name.to_string())?;
    let s = tokio::time::timeout(Duration::from_secs(10), connector.connect(server_name, tcp))
        .await??;
    Ok(s.get_ref()
        .1
        .peer_certificates()
        .map(|c| c.iter().map(|d| d.clone().into_owned()).collect())
        .unwrap_or_default())
}

/// What Open WebUI sees from inside its container: Ollama and its own timeout.
async fn container_checks(docker: &Docker, container: &str) -> Vec<Check> {
    let mut out = Vec::new();
    let Ok(inspect) = docker.inspect_container(container, None).await else {
        out.push(check(
            "open-webui container",
            Status::Fail,
            format!("no container named {container}"),
            Some("run `webui up`"),
        ));
        return out;
    };
    let env: Vec<String> = inspect.config.and_then(|c| c.env).unwrap_or_default();
    let var = |k: &str| {
        env.iter()
            .find_map(|e| e.strip_prefix(&format!("{k}=")).map(str::to_string))
    };
    let running = inspect.state.and_then(|s| s.running).unwrap_or(false);
    if !running {
        out.push(check(
            "open-webui container",
            Status::Fail,
            format!("{container} is not running"),
            Some("`webui up` starts it; `webui logs open-webui` says why it stopped"),
        ));
        return out;
    }
    match var("AIOHTTP_CLIENT_TIMEOUT").and_then(|v| v.parse::<u64>().ok()) {
        Some(t) if t < 60 => out.push(check(
            "timeouts",
            Status::Warn,
            format!(
                "AIOHTTP_CLIENT_TIMEOUT={t}s cuts long generations; the proxy has no read timeout"
            ),
            Some("raise it: `webui up --aiohttp-timeout 300`"),
        )),
        Some(t) => out.push(check(
            "timeouts",
            Status::Pass,
            format!("AIOHTTP_CLIENT_TIMEOUT={t}s; the proxy never times out a stream"),
            None,
        )),
        None => out.push(check(
            "timeouts",
            Status::Pass,
            "Open WebUI's default AIOHTTP_CLIENT_TIMEOUT; the proxy never times out a stream",
            None,
        )),
    }
    let Some(ollama) = var("OLLAMA_BASE_URL") else {
        out.push(check(
            "Ollama from open-webui",
            Status::Skip,
            "no OLLAMA_BASE_URL set",
            None,
        ));
        return out;
    };
    let url = format!("{}/api/tags", ollama.trim_end_matches('/'));
    // Each prints the body, a newline and the HTTP status: an error answer (the
    // forwarder's 502, a refused token) says more than a failed fetch.
    let attempts: [Vec<String>; 2] = [
        vec![
            "curl".into(),
            "-sS".into(),
            "--max-time".into(),
            "10".into(),
            "-w".into(),
            "\n%{http_code}".into(),
            url.clone(),
        ],
        vec![
            "python3".into(),
            "-c".into(),
            format!(
                "import urllib.request,urllib.error,sys\n\
                 try:\n r=urllib.request.urlopen('{url}',timeout=10);b,c=r.read(),r.status\n\
                 except urllib.error.HTTPError as e:\n b,c=e.read(),e.code\n\
                 sys.stdout.write(b.decode(errors='replace')+'\\n'+str(c))"
            ),
        ],
    ];
    let mut last = String::from("no tool to fetch with inside the container");
    for cmd in attempts {
        match exec(docker, container, cmd).await {
            Ok((0, out_text)) => {
                let (body, code) = out_text.rsplit_once('\n').unwrap_or(("", &out_text));
                if code.trim() != "200" {
                    out.push(http_refused(&ollama, container, code.trim(), body));
                    return out;
                }
                let models = serde_json::from_str::<serde_json::Value>(body)
                    .ok()
                    .and_then(|v| {
                        v["models"].as_array().map(|m| {
                            m.iter()
                                .filter_map(|x| x["name"].as_str().map(str::to_string))
                                .collect::<Vec<_>>()
                        })
                    });
                out.push(match models {
                    Some(m) if !m.is_empty() => check(
                        "Ollama from open-webui",
                        Status::Pass,
                        format!("{ollama} answers; models: {}", m.join(", ")),
                        None,
                    ),
                    Some(_) => check(
                        "Ollama from open-webui",
                        Status::Warn,
                        format!("{ollama} answers but has no models"),
                        Some("pull one: `docker exec <ollama> ollama pull llama3.2`"),
                    ),
                    None => check(
                        "Ollama from open-webui",
                        Status::Fail,
                        format!("{ollama}/api/tags did not answer JSON"),
                        Some("check OLLAMA_BASE_URL (no trailing path)"),
                    ),
                });
                return out;
            }
            Ok((code, body)) => last = format!("exit {code}: {}", body.trim()),
            Err(e) => last = format!("{e:#}"),
        }
    }
    out.push(check(
        "Ollama from open-webui",
        Status::Fail,
        format!("{ollama} not reachable from inside {container}: {last}"),
        Some("bundled: `webui up --ollama`; on the host: listen on an address containers reach; remote: --ollama-url"),
    ));
    out
}

/// How long since the last backup before doctor says so, without a schedule.
const BACKUP_AGE: Duration = Duration::from_secs(7 * 86_400);

/// Backups: `schedule` is the running `up`'s `backups` (with `--backup-every`),
/// `last` the last backup made of this project by any command.
fn backups(
    schedule: Option<&crate::supervisor::BackupsLive>,
    last: Option<&crate::docker::pin::BackupRecord>,
    now: std::time::SystemTime,
) -> Check {
    const NAME: &str = "backups";
    if let Some(s) = schedule {
        let what = s.schedule_text();
        if let Some(e) = &s.last_error {
            return check(
                NAME,
                Status::Fail,
                format!("scheduled {what}; the last attempt failed: {e}"),
                Some(
                    "free space or permissions in that directory usually; `webui status` shows the next attempt, `webui backup` tries one now",
                ),
            );
        }
        let when = match (&s.last_at, &s.next_at) {
            (Some(at), _) => format!("last {at}"),
            (None, Some(next)) => format!("the first at {next}"),
            (None, None) => "the first one is being made".to_string(),
        };
        return check(
            NAME,
            Status::Pass,
            format!("scheduled {what}; {when}"),
            None,
        );
    }
    const FIX: &str = "`webui backup` makes one now; `webui up --backup-every 1d` (or `backup_every = \"1d\"` in webui.toml) keeps making them";
    let Some(last) = last else {
        return check(
            NAME,
            Status::Warn,
            "no backup of this project yet, and none scheduled",
            Some(FIX),
        );
    };
    let age = humantime::parse_rfc3339_weak(&last.at)
        .ok()
        .and_then(|at| now.duration_since(at).ok());
    match age {
        Some(age) if age > BACKUP_AGE => check(
            NAME,
            Status::Warn,
            format!(
                "the last backup is {} days old ({}), and none is scheduled",
                age.as_secs() / 86_400,
                last.file
            ),
            Some(FIX),
        ),
        _ => check(
            NAME,
            Status::Pass,
            format!("last {} ({}); none scheduled", last.at, last.file),
            None,
        ),
    }
}

/// An error answer to `/api/tags` from inside the container: its status, the start
/// of its body (the forwarder's 502 names the cause), and what to do.
fn http_refused(ollama: &str, container: &str, code: &str, body: &str) -> Check {
    let mut said: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if said.chars().count() > 300 {
        said = said.chars().take(300).collect::<String>() + "…";
    }
    let fix = match code {
        "401" | "403" => {
            "the Ollama wants a token: give webui the one it serves (`webui up --ollama-url URL --ollama-token-file FILE`; `webui token show` on that box)"
        }
        "502" | "503" | "504" => {
            "the Ollama behind it does not answer; the remote Ollama check below, or `webui logs ollama` for a bundled one, says why"
        }
        "404" => "check OLLAMA_BASE_URL: it is the server's root, no path",
        _ => "check that OLLAMA_BASE_URL is an Ollama server",
    };
    check(
        "Ollama from open-webui",
        Status::Fail,
        format!("{ollama}/api/tags answered HTTP {code} inside {container}: {said}"),
        Some(fix),
    )
}

/// The remote Ollama behind webui's forwarder, checked with the forwarder's token and
/// trust (system CAs, the local CA, `--ollama-ca`).
async fn remote_ollama(
    state_dir: &std::path::Path,
    remote: &crate::docker::project::RemoteOllama,
    token: String,
) -> Check {
    use crate::ollama::egress;
    const NAME: &str = "remote Ollama (through webui's forwarder)";
    let extra = match &remote.ca {
        Some(ca) => match egress::read_ca(ca) {
            Ok(c) => c,
            Err(e) => {
                return check(
                    NAME,
                    Status::Fail,
                    e.to_string(),
                    Some("restore the file, or start `webui up` with a good --ollama-ca"),
                );
            }
        },
        None => Vec::new(),
    };
    let checked = match egress::Remote::new(&remote.url, token, state_dir, &extra) {
        Ok(r) => egress::check(&r).await,
        Err(e) => {
            return check(
                NAME,
                Status::Fail,
                format!("{e:#}"),
                Some("check --ollama-url"),
            );
        }
    };
    match checked {
        egress::Check::Answers(version) => check(
            NAME,
            Status::Pass,
            egress::Check::answered(&remote.url, version.as_deref()),
            None,
        ),
        egress::Check::Problem { what, hint } => check(NAME, Status::Fail, what, Some(&hint)),
    }
}

async fn exec(docker: &Docker, container: &str, cmd: Vec<String>) -> anyhow::Result<(i64, String)> {
    let created = docker
        .create_exec(
            container,
            CreateExecOptions::<String> {
                cmd: Some(cmd),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await?;
    let mut text = String::new();
    if let StartExecResults::Attached { mut output, .. } =
        docker.start_exec(&created.id, None).await?
    {
        let collect = async {
            while let Some(Ok(chunk)) = output.next().await {
                text.push_str(&chunk.to_string());
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(15), collect).await;
    }
    let code = docker
        .inspect_exec(&created.id)
        .await?
        .exit_code
        .unwrap_or(-1);
    Ok((code, text))
}

/// Accepts any certificate: only for the probes whose subject is not the certificate.
#[derive(Debug)]
struct AcceptAny;

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &crate::tls::provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &crate::tls::provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        crate::tls::provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::pin::BackupRecord;
    use std::time::UNIX_EPOCH;

    #[test]
    fn backups_pass_when_scheduled_or_recent_and_say_what_is_missing() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000); // 2023-11-14T22:13:20Z
        let record = |at: &str| BackupRecord {
            at: at.into(),
            file: "/b/x.tar.gz".into(),
            bytes: 1,
        };
        let c = backups(None, None, now);
        assert_eq!(c.status, Status::Warn);
        assert!(c.fix.unwrap().contains("--backup-every 1d"));
        let recent = record("2023-11-13T22:13:20Z");
        assert_eq!(backups(None, Some(&recent), now).status, Status::Pass);
        let old = record("2023-11-01T22:13:20Z");
        let c = backups(None, Some(&old), now);
        assert_eq!(c.status, Status::Warn);
        assert!(c.evidence.contains("13 days old"), "{}", c.evidence);

        // As the control socket gives it (JSON), read back.
        let live = serde_json::json!({ "backups": {
            "every": "1day", "keep": 7, "dir": "/b", "last_at": "2023-11-14T00:00:00Z",
            "next_at": "2023-11-15T00:00:00Z", "last_error": null, "made": 1
        }});
        let schedule = crate::supervisor::BackupsLive::from_live(&live).unwrap();
        let c = backups(Some(&schedule), Some(&old), now);
        assert_eq!(c.status, Status::Pass, "a schedule is what counts");
        assert!(
            c.evidence
                .contains("every 1day, the newest 7 kept in /b; last 2023-11-14T00:00:00Z"),
            "{}",
            c.evidence
        );
        let failing = crate::supervisor::BackupsLive {
            last_error: Some("no space left on device".into()),
            ..schedule
        };
        let c = backups(Some(&failing), Some(&recent), now);
        assert_eq!(c.status, Status::Fail);
        assert!(c.evidence.contains("no space left"), "{}", c.evidence);
    }
}
