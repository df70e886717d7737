//! `webui proxy`: the proxy alone, in front of an Open WebUI that runs elsewhere.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::challenge::Challenges;
use crate::cli::{GlobalArgs, ProxyCmd};
use crate::config::{Paths, ProxySettings, TlsSource, resolve};
use crate::output::Printer;
use crate::proxy::{Bound, Proxy};
use crate::route::{self, Route};
use crate::state::StateDir;
use crate::tls::{self, CertInfo, CertStore, LocalCa};

pub async fn run(global: &GlobalArgs, cmd: &ProxyCmd, printer: Printer) -> anyhow::Result<u8> {
    let paths = Paths::resolve(global);
    let file = paths.load_file()?;
    let upstream = resolve::upstream(cmd.upstream.as_deref(), &file)?;
    let settings = resolve::proxy(&cmd.proxy, &file)?;

    // Validate operator-provided files, then bind, before writing anything anywhere.
    let files = match &settings.tls {
        TlsSource::Files { cert, key } => Some(tls::load_pem_files(cert, key)?),
        TlsSource::SelfSigned => None,
    };
    let bound = Bound::bind(&settings)?;
    let (key, info) = match files {
        Some(pair) => pair,
        None => self_signed(&paths, &settings, &printer)?,
    };
    let certs = CertStore::new(key, info);

    for addr in bound.https_addrs() {
        printer.line(format!("listening on https://{addr} -> {upstream}"));
    }
    for addr in bound.http_addrs() {
        printer.line(format!("listening on http://{addr} (redirects to https)"));
    }

    let (_tx, routes) = route::table(Route::Forward(upstream));
    let shutdown = CancellationToken::new();
    crate::signal::cancel_on_signal(shutdown.clone())?;
    let proxy = Proxy {
        settings,
        certs: Arc::clone(&certs),
        routes,
        challenges: Challenges::default(),
    };
    proxy.run(bound, shutdown).await?;
    Ok(0)
}

/// A leaf from the local CA for the configured names and this host.
pub fn self_signed(
    paths: &Paths,
    settings: &ProxySettings,
    printer: &Printer,
) -> anyhow::Result<(Arc<rustls::sign::CertifiedKey>, CertInfo)> {
    let state = StateDir::open(&paths.state_dir)?;
    let ca = LocalCa::load_or_create(&state)?;
    let (dns, ips) = tls::self_signed_names(&settings.domains);
    let issued = ca.issue(&dns, &ips)?;
    printer.line(format!(
        "serving a certificate from the local CA; trust {} on your devices to avoid browser warnings",
        state.ca_dir().join("ca.pem").display()
    ));
    Ok(issued)
}
