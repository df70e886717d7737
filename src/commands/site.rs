//! The certificate side of serving a site, shared by `proxy` and `up`: which
//! certificate to start with (operator files, the local CA, or ACME) and what keeps it
//! fresh (file reload, ACME renewal).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::acme::{self, Acme};
use crate::challenge::Challenges;
use crate::config::{Paths, ProxySettings, TlsSource, resolve::AcmeSettings};
use crate::output::Printer;
use crate::state::StateDir;
use crate::tls::{self, CertInfo, CertStore, LocalCa};

/// Certificates ready to serve, and what keeps them fresh once serving.
pub struct Site {
    pub certs: Arc<CertStore>,
    pub challenges: Challenges,
    keeper: Keeper,
}

enum Keeper {
    None,
    Files {
        cert: std::path::PathBuf,
        key: std::path::PathBuf,
    },
    Acme {
        settings: AcmeSettings,
        state: StateDir,
        issued: Option<CertInfo>,
    },
}

/// Validates what can be validated without side effects: operator certificate files.
/// Call before binding.
pub fn validate(
    settings: &ProxySettings,
) -> anyhow::Result<Option<(Arc<rustls::sign::CertifiedKey>, CertInfo)>> {
    match &settings.tls {
        TlsSource::Files { cert, key } => Ok(Some(tls::load_pem_files(cert, key)?)),
        _ => Ok(None),
    }
}

/// Picks the first certificate. Call after binding: this may create the local CA.
pub fn prepare(
    paths: &Paths,
    settings: &ProxySettings,
    validated: Option<(Arc<rustls::sign::CertifiedKey>, CertInfo)>,
    printer: &Printer,
) -> anyhow::Result<Site> {
    let challenges = Challenges::default();
    let (key, info, keeper) = match (&settings.tls, validated) {
        (TlsSource::Files { cert, key }, Some((k, info))) => (
            k,
            info,
            Keeper::Files {
                cert: cert.clone(),
                key: key.clone(),
            },
        ),
        (TlsSource::Files { cert, key }, None) => {
            let (k, info) = tls::load_pem_files(cert, key)?;
            (
                k,
                info,
                Keeper::Files {
                    cert: cert.clone(),
                    key: key.clone(),
                },
            )
        }
        (TlsSource::SelfSigned, _) => {
            let state = StateDir::open(&paths.state_dir)?;
            let ca = LocalCa::load_or_create(&state)?;
            let (dns, ips) = tls::self_signed_names(&settings.domains);
            let (k, info) = ca.issue(&dns, &ips)?;
            printer.line(format!(
                "serving a certificate from the local CA; trust {} on your devices to avoid browser warnings",
                state.ca_dir().join("ca.pem").display()
            ));
            (k, info, Keeper::None)
        }
        (TlsSource::Acme(acme_settings), _) => {
            let state = StateDir::open(&paths.state_dir)?;
            let (k, info, stored) = acme::initial_certificate(acme_settings, &state)?;
            if stored {
                printer.line(format!(
                    "serving the stored certificate for {} (valid until {})",
                    info.names.join(", "),
                    info.not_after.date()
                ));
            } else {
                printer.line(format!(
                    "ordering a certificate for {} from {}; serving a temporary local-CA certificate meanwhile",
                    acme_settings.domains.join(", "),
                    acme_settings.directory
                ));
            }
            let issued = stored.then(|| info.clone());
            (
                k,
                info,
                Keeper::Acme {
                    settings: acme_settings.clone(),
                    state,
                    issued,
                },
            )
        }
    };
    Ok(Site {
        certs: CertStore::new(key, info),
        challenges,
        keeper,
    })
}

impl Site {
    /// Once the listeners serve: runs the ACME preflight when an order is due (its
    /// failure is returned, nothing ordered), then spawns on `tracker` what keeps the
    /// certificate fresh until `shutdown`. With ACME, returns the handle that wakes the
    /// renewal loop for an immediate order (`webui cert renew`).
    pub async fn start(
        self,
        http_port: Option<u16>,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) -> anyhow::Result<Option<Arc<Notify>>> {
        match self.keeper {
            Keeper::None => Ok(None),
            Keeper::Files { cert, key } => {
                tracker.spawn(reload_files(cert, key, self.certs, shutdown));
                Ok(None)
            }
            Keeper::Acme {
                settings,
                state,
                issued,
            } => {
                if issued.is_none() && !settings.skip_preflight {
                    let Some(port) = http_port else {
                        return Err(crate::error::UserError::new(
                            "cannot check the domain before ordering: no plain-HTTP listener (--no-http)",
                        )
                        .hint("use --challenge tls-alpn-01 with --skip-preflight, or drop --no-http")
                        .into());
                    };
                    acme::preflight::check(&settings.domains, port, &self.challenges).await?;
                }
                let acme = Acme::new(settings, &state, self.certs, self.challenges);
                let renew_now = acme.renew_now.clone();
                tracker.spawn(acme.run(issued, shutdown));
                Ok(Some(renew_now))
            }
        }
    }
}

/// Reloads operator certificate files when they change (e.g. renewed by certbot).
async fn reload_files(
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    certs: Arc<CertStore>,
    shutdown: CancellationToken,
) {
    let stamp = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut seen: (Option<SystemTime>, Option<SystemTime>) = (stamp(&cert), stamp(&key));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
        let now = (stamp(&cert), stamp(&key));
        if now == seen {
            continue;
        }
        match tls::load_pem_files(&cert, &key) {
            Ok((k, info)) => {
                tracing::info!(names = ?info.names, not_after = %info.not_after, "certificate files changed; now serving the new certificate");
                certs.swap(k, info);
                seen = now;
            }
            // Mid-rename or mismatched for a moment: keep the old one, try again.
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "certificate files changed but cannot be loaded; still serving the previous certificate")
            }
        }
    }
}
