//! `webui cert status`: what the stored certificates are and when they renew, read
//! from the state directory (`certs/<name>/`, laid out by `acme::store`), so it works
//! whether or not `webui` runs.
//!
//! `webui cert renew [--force]`: asks the running supervisor over its control socket
//! (`renew`: the project's `webui up`, else a `webui proxy` on the same state dir) to
//! order now, then polls the stored status until the certificate or its last error
//! changed (bounded by `--timeout`). Without a running webui there is nobody to serve
//! the new certificate, so it says so and exits 1.
//!
//! JSON schema (`--json`):
//! `{"certificates": [{"name", "names": [..], "issuer", "not_after", "days_left",
//! "next_renewal", "last_error", "last_error_at", "next_try", "directory"}]}`;
//! times are RFC 3339, absent values are null. Exit 0 when every certificate is valid
//! and its last order succeeded, 3 otherwise.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::acme::CertStatus;
use crate::cli::{CertAction, CertCmd, GlobalArgs};
use crate::config::Paths;
use crate::config::up::Project;
use crate::control;
use crate::error::UserError;
use crate::output::Printer;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub name: String,
    pub names: Vec<String>,
    pub issuer: Option<String>,
    pub not_after: Option<String>,
    pub days_left: Option<i64>,
    pub next_renewal: Option<String>,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    pub next_try: Option<String>,
    pub directory: String,
}

fn fmt(t: Option<OffsetDateTime>) -> Option<String> {
    t.and_then(|t| t.format(&Rfc3339).ok())
}

/// Every stored certificate's status, read from `<state_dir>/certs`.
pub fn entries(state_dir: &Path) -> Vec<Entry> {
    let dir = state_dir.join("certs");
    let mut entries = Vec::new();
    if let Ok(read) = std::fs::read_dir(&dir) {
        let mut dirs: Vec<_> = read.flatten().filter(|e| e.path().is_dir()).collect();
        dirs.sort_by_key(|e| e.file_name());
        for d in dirs {
            let name = d.file_name().to_string_lossy().into_owned();
            let status: CertStatus = std::fs::read(d.path().join("status.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
            let chain = std::fs::read(d.path().join("fullchain.pem")).ok();
            let info = chain.as_deref().and_then(|pem| {
                let der = rustls_pki_types::pem::PemObject::pem_slice_iter(pem)
                    .next()?
                    .ok()?;
                let der: rustls_pki_types::CertificateDer = der;
                crate::tls::CertInfo::from_der(&der).ok()
            });
            let now = OffsetDateTime::now_utc();
            entries.push(Entry {
                names: info
                    .as_ref()
                    .map(|i| i.names.clone())
                    .unwrap_or(status.domains.clone()),
                issuer: info.as_ref().map(|i| i.issuer.clone()),
                not_after: fmt(info.as_ref().map(|i| i.not_after)),
                days_left: info.as_ref().map(|i| (i.not_after - now).whole_days()),
                next_renewal: fmt(status.next_renewal),
                last_error: status.last_error.clone(),
                last_error_at: fmt(status.last_error_at),
                next_try: fmt(status.next_try),
                directory: status.directory.clone(),
                name,
            });
        }
    }
    entries
}

pub async fn run(global: &GlobalArgs, cmd: &CertCmd, printer: Printer) -> anyhow::Result<u8> {
    let paths = Paths::resolve(global);
    let json = match &cmd.action {
        CertAction::Status { json } => *json,
        CertAction::Renew { force, timeout } => {
            return renew(global, &paths, *force, timeout.as_deref(), &printer).await;
        }
    };
    let dir = paths.state_dir.join("certs");
    let entries = entries(&paths.state_dir);
    let healthy = entries
        .iter()
        .all(|e| e.days_left.is_some_and(|d| d >= 0) && e.last_error.is_none());
    if json {
        println!("{}", serde_json::json!({ "certificates": entries }));
    } else if entries.is_empty() {
        printer.line(format!(
            "no ACME certificates in {} (a site without --domain serves the local CA's)",
            dir.display()
        ));
    } else {
        for e in &entries {
            printer.line(&e.name);
            printer.line(format!("  names:        {}", e.names.join(", ")));
            printer.line(format!(
                "  issuer:       {}",
                e.issuer.as_deref().unwrap_or("(none yet)")
            ));
            if let (Some(na), Some(d)) = (&e.not_after, e.days_left) {
                printer.line(format!("  valid until:  {na} ({d} days)"));
            }
            if let Some(n) = &e.next_renewal {
                printer.line(format!("  renews:       {n}"));
            }
            if let Some(err) = &e.last_error {
                printer.line(format!(
                    "  last error:   {err} (at {})",
                    e.last_error_at.as_deref().unwrap_or("?")
                ));
                printer.line(format!(
                    "  next try:     {}",
                    e.next_try.as_deref().unwrap_or("?")
                ));
            }
        }
    }
    Ok(if healthy { 0 } else { 3 })
}

/// `webui cert renew`.
async fn renew(
    global: &GlobalArgs,
    paths: &Paths,
    force: bool,
    timeout: Option<&str>,
    printer: &Printer,
) -> anyhow::Result<u8> {
    let timeout = match timeout {
        Some(t) => humantime::parse_duration(t).map_err(|_| {
            UserError::new(format!("--timeout `{t}` is not a duration")).hint("e.g. --timeout 5m")
        })?,
        None => Duration::from_secs(180),
    };
    let project = Project::resolve(global.project.as_deref())?;
    let mut socket = None;
    for key in [project.key(), control::PROXY_PROJECT] {
        let path = control::socket_path(&paths.state_dir, key);
        if control::request(&path, "status").await.is_some() {
            socket = Some(path);
            break;
        }
    }
    let Some(socket) = socket else {
        return Err(UserError::new(
            "no running webui answers on this state directory's control socket; a certificate is renewed by the running `webui up` or `webui proxy`",
        )
        .hint("start it (`webui up`, or `systemctl start webui`); it renews by itself when due")
        .into());
    };
    let before = entries(&paths.state_dir);
    if !force {
        let due: Vec<&Entry> = before
            .iter()
            .filter(|e| {
                e.next_renewal
                    .as_deref()
                    .and_then(|n| OffsetDateTime::parse(n, &Rfc3339).ok())
                    .is_none_or(|n| n <= OffsetDateTime::now_utc())
                    || e.last_error.is_some()
            })
            .collect();
        if !before.is_empty() && due.is_empty() {
            for e in &before {
                printer.line(format!(
                    "{}: not due (renews {}); use --force to order now",
                    e.name,
                    e.next_renewal.as_deref().unwrap_or("?")
                ));
            }
            return Ok(0);
        }
    }
    let answer = control::request(&socket, "renew").await.unwrap_or_default();
    if answer["ok"] != true {
        let why = answer["error"].as_str().unwrap_or("no answer").to_string();
        return Err(UserError::new(format!("the running webui cannot renew: {why}")).into());
    }
    printer.line("renewal requested; waiting for the CA");
    let start = Instant::now();
    while start.elapsed() < timeout {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = entries(&paths.state_dir);
        let changed: Vec<&Entry> = now
            .iter()
            .filter(|e| {
                let old = before.iter().find(|b| b.name == e.name);
                old.is_none_or(|o| {
                    o.not_after != e.not_after
                        || o.next_renewal != e.next_renewal
                        || o.last_error_at != e.last_error_at
                })
            })
            .collect();
        if changed.is_empty() {
            continue;
        }
        let mut ok = true;
        for e in changed {
            match &e.last_error {
                // A successful order clears the last error.
                Some(err) => {
                    ok = false;
                    printer.warn(format!(
                        "{}: the order failed: {err}; still serving the previous certificate (next try {})",
                        e.name,
                        e.next_try.as_deref().unwrap_or("?")
                    ));
                }
                _ => printer.line(format!(
                    "{}: new certificate from {}, valid until {}",
                    e.name,
                    e.issuer.as_deref().unwrap_or("?"),
                    e.not_after.as_deref().unwrap_or("?")
                )),
            }
        }
        return Ok(if ok { 0 } else { 3 });
    }
    Err(UserError::new(format!(
        "no new certificate within {}; the running webui keeps trying",
        humantime::format_duration(timeout)
    ))
    .hint("see `webui cert status` and the log of `webui up`")
    .into())
}
