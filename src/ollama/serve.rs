//! `webui up`'s Ollama pieces, kept out of `commands/up.rs`: the second name of
//! `--ollama-domain`, the gate and its token, the forwarder for `--ollama-token`, and
//! the checks of a native Ollama (`--ollama-only --ollama-url`).

use std::path::Path;
use std::sync::Arc;

use http::Uri;
use rustls_pki_types::CertificateDer;
use tokio_util::sync::CancellationToken;

use super::{egress, token};
use crate::cli::NetworkMode;
use crate::config::up::{OllamaMode, Project, TokenSource, UpSettings};
use crate::config::{ProxySettings, TlsSource};
use crate::docker::health::{self, Health};
use crate::docker::project::ProjectState;
use crate::output::Printer;
use crate::proxy::auth::OllamaGate;
use crate::route::{self, Route, RouteTx};

/// The remote token's copy in the project dir (0600).
const REMOTE_TOKEN_FILE: &str = "ollama_remote_token";

/// `--ollama-domain` is a name of the site too: on the certificate (local CA or ACME,
/// one certificate with both names) and accepted by SNI.
pub fn with_ollama_domain(mut settings: ProxySettings, up: &UpSettings) -> ProxySettings {
    let Some(d) = up.serve_ollama.as_ref().and_then(|s| s.domain.clone()) else {
        return settings;
    };
    if !settings.domains.contains(&d) {
        settings.domains.push(d.clone());
    }
    if let TlsSource::Acme(a) = &mut settings.tls
        && !a.domains.contains(&d)
    {
        a.domains.push(d);
    }
    settings
}

/// `--ollama-only --ollama-url`: a native Ollama, no container.
pub fn native(up: &UpSettings) -> bool {
    up.serve_ollama.as_ref().is_some_and(|s| s.only) && matches!(up.ollama, OllamaMode::Url(_))
}

/// The remote token a running `up` stored for its forwarder (`webui doctor` asks the
/// remote Ollama with it).
pub fn stored_remote_token(state: &ProjectState) -> Option<String> {
    let text = std::fs::read_to_string(state.dir().join(REMOTE_TOKEN_FILE)).ok()?;
    Some(text.trim().to_string()).filter(|t| !t.is_empty())
}

/// Reads `--ollama-ca` (validation only).
pub fn read_remote_ca(up: &UpSettings) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    match &up.ollama_ca {
        Some(p) => egress::read_ca(p),
        None => Ok(Vec::new()),
    }
}

/// Reads `--ollama-token` / `--ollama-token-file` (validation only; nothing written).
pub fn read_remote_token(up: &UpSettings, printer: &Printer) -> anyhow::Result<Option<String>> {
    match &up.ollama_token {
        None => Ok(None),
        Some(TokenSource::Value(t)) => Ok(Some(t.clone())),
        Some(TokenSource::File(p)) => {
            let text = crate::commands::up::read_flag_file("--ollama-token-file", p, printer)?;
            crate::config::up::token_text(&text, &p.display().to_string()).map(Some)
        }
    }
}

/// The gate for a served Ollama API, creating the token on the first start (printed
/// once). With `--ollama-domain` also the route table of its upstream (kept by the
/// caller). Call after binding: this writes the token file.
pub fn gate(
    state_dir: &Path,
    project: &Project,
    up: &UpSettings,
    printer: &Printer,
) -> anyhow::Result<(Option<OllamaGate>, Option<RouteTx>)> {
    let Some(served) = &up.serve_ollama else {
        return Ok((None, None));
    };
    let path = token::path(state_dir, project);
    let (tok, created) = token::load_or_create(&path)?;
    if created {
        printer.line(format!(
            "created the Ollama API token (shown once; `webui{} token show` prints it again, stored in {}):\n  {tok}",
            project.flag(),
            path.display()
        ));
    }
    let check = Arc::new(token::TokenCheck::new(path));
    let (hosts, routes, tx) = match &served.domain {
        Some(d) => {
            let upstream: Uri = format!("http://127.0.0.1:{}/", served.port)
                .parse()
                .unwrap_or_else(|_| Uri::from_static("http://127.0.0.1:11434/"));
            let (tx, rx) = route::table(Route::forward(upstream));
            (vec![d.clone()], Some(rx), Some(tx))
        }
        None => (Vec::new(), None, None),
    };
    Ok((
        Some(OllamaGate {
            hosts,
            routes,
            token: check,
            origins: served.origins.clone(),
        }),
        tx,
    ))
}

/// Starts the forwarder that adds the remote token; returns `OLLAMA_BASE_URL` for
/// the container and whether `host.docker.internal` must be mapped.
pub async fn start_forwarder(
    docker: &bollard::Docker,
    up: &UpSettings,
    tok: &str,
    ca: &[CertificateDer<'static>],
    state: &ProjectState,
    shutdown: CancellationToken,
    printer: &Printer,
) -> anyhow::Result<(Option<String>, bool)> {
    let OllamaMode::Url(remote_url) = &up.ollama else {
        return Ok((None, false));
    };
    // Kept like every secret (0600); never printed, never in the container.
    crate::state::create_private_dir(state.dir())?;
    crate::state::write_private(&state.dir().join(REMOTE_TOKEN_FILE), tok.as_bytes())?;
    let state_dir = state
        .dir()
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("/"));
    let remote = Arc::new(egress::Remote::new(
        remote_url,
        tok.to_string(),
        state_dir,
        ca,
    )?);
    // Told now rather than as "network problem" in Open WebUI's settings later; not an
    // error: the server may come up after this one, and the UI serves without it. In
    // the background, so a GPU box that is down does not hold up the UI's start.
    let (checked, url, out) = (remote.clone(), remote_url.clone(), *printer);
    tokio::spawn(async move {
        match egress::check(&checked).await {
            egress::Check::Answers(version) => {
                out.line(egress::Check::answered(&url, version.as_deref()))
            }
            egress::Check::Problem { what, hint } => out.warn(format!(
                "{what}; Open WebUI will not see its models until this is fixed: {hint}"
            )),
        }
    });
    let bridge = up.network == NetworkMode::Bridge;
    let ip = if bridge {
        egress::host_gateway(docker).await?
    } else {
        std::net::IpAddr::from([127, 0, 0, 1])
    };
    let listener = egress::bind(ip, state.dir())?;
    let addr = listener.local_addr()?;
    tokio::spawn(egress::serve(
        listener,
        remote,
        egress::Peers::default(),
        shutdown,
    ));
    printer.line(format!(
        "Open WebUI reaches the Ollama at {remote_url} through webui's forwarder on {addr}, which adds the token"
    ));
    Ok((Some(egress::container_url(addr, bridge)), bridge))
}

/// A native Ollama: does it answer, and does it listen beyond loopback?
pub async fn check_native(upstream: &str, printer: &Printer) {
    match health::probe_ollama(upstream).await {
        Health::Healthy => printer.line(format!("the Ollama at {upstream} answers")),
        h => printer.warn(format!(
            "the Ollama at {upstream} does not answer yet ({}); requests get 502 until it does",
            h.detail().unwrap_or(h.as_str())
        )),
    }
    let uri: Option<Uri> = upstream.parse().ok();
    let port = uri.as_ref().and_then(|u| u.port_u16()).unwrap_or(80);
    if let Some(w) = super::exposure_warning(port) {
        printer.warn(w);
    }
}
