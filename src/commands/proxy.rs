//! `webui proxy`: the proxy alone, in front of an Open WebUI that runs elsewhere.

use tokio_util::sync::CancellationToken;

use super::site;
use crate::cli::{GlobalArgs, ProxyCmd};
use crate::config::{Paths, resolve};
use crate::output::Printer;
use crate::proxy::{Bound, Proxy};
use crate::route::{self, Route};

pub async fn run(global: &GlobalArgs, cmd: &ProxyCmd, printer: Printer) -> anyhow::Result<u8> {
    let paths = Paths::resolve(global);
    let file = paths.load_file()?;
    let upstream = resolve::upstream(cmd.upstream.as_deref(), &file)?;
    let settings = resolve::proxy(&cmd.proxy, &file)?;

    // Validate operator-provided files, then bind, before writing anything anywhere.
    let validated = site::validate(&settings)?;
    let bound = Bound::bind(&settings)?;
    let site = site::prepare(&paths, &settings, validated, &printer)?;

    for addr in bound.https_addrs() {
        printer.line(format!("listening on https://{addr} -> {upstream}"));
    }
    let http_port = bound.http_addrs().first().map(|a| a.port());
    for addr in bound.http_addrs() {
        printer.line(format!("listening on http://{addr} (redirects to https)"));
    }

    let (_tx, routes) = route::table(Route::Forward(upstream));
    let shutdown = CancellationToken::new();
    crate::signal::cancel_on_signal(shutdown.clone())?;
    let proxy = Proxy {
        settings,
        certs: site.certs.clone(),
        routes,
        challenges: site.challenges.clone(),
    };
    let serving = tokio::spawn(proxy.run(bound, shutdown.clone()));
    if let Err(e) = site.start(http_port, shutdown.clone()).await {
        shutdown.cancel();
        let _ = serving.await;
        return Err(e);
    }
    serving.await??;
    Ok(0)
}
