//! `webui proxy`: the proxy alone, in front of an Open WebUI that runs elsewhere.
//!
//! It runs under the same [`Supervisor`] as `webui up` (tasks, bounded drain) and,
//! when it is the first `webui proxy` on this state dir, serves the control socket
//! `run/_proxy.sock` so that `webui cert renew` reaches it. It takes no Docker
//! project, so `webui status` does not show it.

use std::sync::{Arc, Mutex};

use super::site;
use crate::cli::{GlobalArgs, ProxyCmd};
use crate::config::{Paths, resolve};
use crate::control::{self, InstanceLock};
use crate::output::Printer;
use crate::proxy::{Bound, Proxy, dns};
use crate::route::{self, Route};
use crate::supervisor::{self, Live, SharedLive, Supervisor};

pub async fn run(global: &GlobalArgs, cmd: &ProxyCmd, printer: Printer) -> anyhow::Result<u8> {
    let paths = Paths::resolve(global);
    let file = paths.load_file()?;
    let upstreams = resolve::upstreams(&cmd.upstream, &file)?;
    let upstream = upstreams
        .iter()
        .map(|u| u.to_string().trim_end_matches('/').to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let settings = resolve::proxy(&cmd.proxy, &file)?;
    let notify_file = cmd
        .notify_url_file
        .as_ref()
        .or(file.notify_url_file.as_ref());
    let notify_host = crate::notify::setup(notify_file.map(|f| f.as_path()), "proxy")?;

    // Validate operator-provided files, then bind, before writing anything anywhere.
    let validated = site::validate(&settings)?;
    let bound = Bound::bind(&settings)?;
    let site = site::prepare(&paths, &settings, validated, &printer)?;
    if let Some(host) = notify_host {
        printer.line(format!(
            "a failed certificate order is sent to the webhook at {host}"
        ));
    }

    for addr in bound.https_addrs() {
        printer.line(format!("listening on https://{addr} -> {upstream}"));
    }
    let http_port = bound.http_addrs().first().map(|a| a.port());
    for addr in bound.http_addrs() {
        printer.line(format!("listening on http://{addr} (redirects to https)"));
    }

    // Names (Swarm's tasks.<service>) are balanced across all their addresses.
    let known = dns::resolve_all(&upstreams).await;
    let Some(first) = dns::upstreams(&upstreams, &known) else {
        anyhow::bail!("no upstream");
    };
    let (routes_tx, routes) = route::table(Route::Forward(first));
    let sup = Supervisor::new();
    crate::signal::cancel_on_signal(sup.token())?;
    let drain = settings.drain_timeout + std::time::Duration::from_secs(5);
    let live: SharedLive = Arc::new(Mutex::new(Live {
        pid: std::process::id(),
        project: control::PROXY_PROJECT.to_string(),
        started_at: supervisor::now_text(),
        state: "healthy".into(),
        upstream: upstream.clone(),
        https: bound.https_addrs().iter().map(|a| a.to_string()).collect(),
        http: bound.http_addrs().iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    }));
    let proxy = Proxy {
        settings,
        certs: site.certs.clone(),
        routes,
        challenges: site.challenges.clone(),
        supervised: false,
        ollama: None,
        inflight: route::Inflight::default(),
    };
    sup.spawn("the proxy", true, |token| proxy.run(bound, token));
    if upstreams.iter().any(dns::is_name) {
        let token = sup.token().child_token();
        sup.tracker().spawn(dns::follow(
            upstreams.clone(),
            known,
            routes_tx.clone(),
            token,
        ));
    }
    let renew = match site
        .start(http_port, sup.token().child_token(), sup.tracker())
        .await
    {
        Ok(r) => r,
        Err(e) => {
            sup.fail(e);
            sup.wait(drain).await?;
            return Ok(0);
        }
    };
    // The control socket (for `webui cert renew`), when no other `webui proxy` on this
    // state dir has it; a second proxy (another port, another upstream) is allowed.
    let _lock = match InstanceLock::acquire(&paths.state_dir, control::PROXY_PROJECT) {
        Ok(lock) => {
            let socket = control::socket_path(&paths.state_dir, control::PROXY_PROJECT);
            let handler = super::up::control_handler(live, renew, paths.state_dir.clone(), None);
            if let Err(e) =
                control::serve(&socket, handler, sup.token().child_token(), sup.tracker())
            {
                tracing::warn!("no control socket: {e:#}");
            }
            Some(lock)
        }
        Err(e) => {
            tracing::debug!("no control socket for this proxy: {e:#}");
            None
        }
    };
    sup.wait(drain).await?;
    Ok(0)
}
