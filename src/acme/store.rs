//! What ACME keeps on disk, under the state directory:
//!
//! ```text
//! acme/account-<hash of directory URL>.json   account credentials (0600)
//! certs/<primary domain>/fullchain.pem        leaf first
//! certs/<primary domain>/privkey.pem          (0600)
//! certs/<primary domain>/status.json          names, CA, last error, next try
//! ```
//!
//! A certificate is reused at start when it covers every configured name, came from
//! the same CA directory, and has not expired.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::state::{self, StateDir};
use crate::tls::{self, CertInfo};

/// The persisted status of a certificate: what `webui status` and `cert status` show.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CertStatus {
    pub domains: Vec<String>,
    pub directory: String,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub not_after: Option<OffsetDateTime>,
    pub issuer: Option<String>,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub next_renewal: Option<OffsetDateTime>,
    pub last_error: Option<String>,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub last_error_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub next_try: Option<OffsetDateTime>,
    /// How many orders this state directory placed for these names (for diagnostics).
    #[serde(default)]
    pub orders: u32,
}

#[derive(Debug, Clone)]
pub struct Store {
    acme_dir: PathBuf,
    cert_dir: PathBuf,
    directory: String,
}

impl Store {
    pub fn new(state: &StateDir, primary: &str, directory: &str) -> Self {
        Self {
            acme_dir: state.root().join("acme"),
            cert_dir: state.root().join("certs").join(primary),
            directory: directory.to_string(),
        }
    }

    /// Where the stored certificates for `primary` live, without opening anything.
    pub fn cert_dir_of(state_root: &Path, primary: &str) -> PathBuf {
        state_root.join("certs").join(primary)
    }

    pub fn account_path(&self) -> PathBuf {
        let hash = hex::encode(Sha256::digest(self.directory.as_bytes()));
        self.acme_dir.join(format!("account-{}.json", &hash[..16]))
    }

    pub fn load_account(&self) -> anyhow::Result<Option<instant_acme::AccountCredentials>> {
        let path = self.account_path();
        if !path.exists() {
            return Ok(None);
        }
        let bytes = state::read_private(&path)?;
        let creds = serde_json::from_slice(&bytes).map_err(|e| {
            crate::error::UserError::new(format!(
                "ACME account file {} is corrupt: {e}",
                path.display()
            ))
            .hint(format!(
                "move it away to register a new account: mv {0} {0}.bad",
                path.display()
            ))
        })?;
        Ok(Some(creds))
    }

    pub fn save_account(&self, creds: &instant_acme::AccountCredentials) -> anyhow::Result<()> {
        state::create_private_dir(&self.acme_dir)?;
        let json = serde_json::to_vec_pretty(creds).context("serialising ACME account")?;
        state::write_private(&self.account_path(), &json)
    }

    fn chain_path(&self) -> PathBuf {
        self.cert_dir.join("fullchain.pem")
    }

    fn key_path(&self) -> PathBuf {
        self.cert_dir.join("privkey.pem")
    }

    fn status_path(&self) -> PathBuf {
        self.cert_dir.join("status.json")
    }

    /// The stored certificate, if it is usable for `domains` from this CA.
    pub fn load_cert(&self, domains: &[String]) -> Option<(Arc<CertifiedKey>, CertInfo)> {
        let status = self.load_status();
        if status.directory != self.directory {
            return None;
        }
        let chain_pem = std::fs::read(self.chain_path()).ok()?;
        let key_pem = state::read_private(&self.key_path()).ok()?;
        let (key, info) = parse_pair(&chain_pem, &key_pem).ok()?;
        let covers = domains.iter().all(|d| info.names.contains(d));
        (covers && info.not_after > OffsetDateTime::now_utc()).then_some((key, info))
    }

    pub fn save_cert(&self, chain_pem: &str, key_pem: &str) -> anyhow::Result<()> {
        state::create_private_dir(&self.cert_dir)?;
        state::write_private(&self.key_path(), key_pem.as_bytes())?;
        // The chain is public, but written the same atomic way so a reader never
        // sees half a file.
        state::write_private(&self.chain_path(), chain_pem.as_bytes())
    }

    pub fn load_status(&self) -> CertStatus {
        std::fs::read(self.status_path())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn save_status(&self, status: &CertStatus) -> anyhow::Result<()> {
        state::create_private_dir(&self.cert_dir)?;
        let json = serde_json::to_vec_pretty(status).context("serialising certificate status")?;
        state::write_private(&self.status_path(), &json)
    }
}

/// Parses a PEM chain and key into what the TLS store serves.
pub fn parse_pair(
    chain_pem: &[u8],
    key_pem: &[u8],
) -> anyhow::Result<(Arc<CertifiedKey>, CertInfo)> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<_, _>>()
        .context("certificate chain is not PEM")?;
    let leaf = chain.first().context("certificate chain is empty")?;
    let info = CertInfo::from_der(leaf)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).context("private key is not PEM")?;
    let certified = CertifiedKey::from_der(chain, key, &tls::provider())?;
    Ok((Arc::new(certified), info))
}
