//! `webui cert status`: what the stored certificates are and when they renew, read
//! from the state directory (`certs/<name>/`, laid out by `acme::store`), so it works whether or not `webui` runs.
//!
//! JSON schema (`--json`):
//! `{"certificates": [{"name", "names": [..], "issuer", "not_after", "days_left",
//! "next_renewal", "last_error", "last_error_at", "next_try", "directory"}]}`;
//! times are RFC 3339, absent values are null. Exit 0 when every certificate is valid
//! and its last order succeeded, 3 otherwise.

use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::acme::CertStatus;
use crate::cli::{CertAction, CertCmd, GlobalArgs};
use crate::config::Paths;
use crate::output::Printer;

#[derive(Debug, Serialize)]
struct Entry {
    name: String,
    names: Vec<String>,
    issuer: Option<String>,
    not_after: Option<String>,
    days_left: Option<i64>,
    next_renewal: Option<String>,
    last_error: Option<String>,
    last_error_at: Option<String>,
    next_try: Option<String>,
    directory: String,
}

fn fmt(t: Option<OffsetDateTime>) -> Option<String> {
    t.and_then(|t| t.format(&Rfc3339).ok())
}

pub async fn run(global: &GlobalArgs, cmd: &CertCmd, printer: Printer) -> anyhow::Result<u8> {
    let CertAction::Status { json } = &cmd.action;
    let paths = Paths::resolve(global);
    let dir = paths.state_dir.join("certs");
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
    let healthy = entries
        .iter()
        .all(|e| e.days_left.is_some_and(|d| d >= 0) && e.last_error.is_none());
    if *json {
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
