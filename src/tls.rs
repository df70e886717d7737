//! TLS: the certificate store the HTTPS listener serves from, loading operator-managed
//! PEM files, and the local CA behind `--self-signed`.
//!
//! Architecture Invariant: the listener never holds a certificate itself; it asks
//! [`CertStore`] on every handshake, so a renewed certificate is served by the next
//! handshake without a restart and without touching open connections.
//! This module knows nothing of ACME or the proxy.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use arc_swap::ArcSwap;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::{Duration as TimeDuration, OffsetDateTime};

use crate::error::UserError;
use crate::state::{self, StateDir};

/// The crypto provider used everywhere (ring: small, fast, no C toolchain beyond cc).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What an operator wants to know about a served certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub names: Vec<String>,
    pub issuer: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl CertInfo {
    /// Reads names, issuer and validity from a DER leaf certificate.
    pub fn from_der(der: &[u8]) -> anyhow::Result<Self> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| anyhow::anyhow!("not an X.509 certificate: {e}"))?;
        let mut names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    x509_parser::extensions::GeneralName::DNSName(d) => names.push(d.to_string()),
                    x509_parser::extensions::GeneralName::IPAddress(b) => {
                        let ip = match b.len() {
                            4 => <[u8; 4]>::try_from(*b).ok().map(IpAddr::from),
                            16 => <[u8; 16]>::try_from(*b).ok().map(IpAddr::from),
                            _ => None,
                        };
                        if let Some(ip) = ip {
                            names.push(ip.to_string());
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(Self {
            names,
            issuer: cert.issuer().to_string(),
            not_before: cert.validity().not_before.to_datetime(),
            not_after: cert.validity().not_after.to_datetime(),
        })
    }
}

/// The ALPN protocol of ACME's TLS-ALPN-01 challenge (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The certificate the HTTPS listener serves, swappable at runtime, plus the
/// TLS-ALPN-01 challenge certificates an ACME order asks it to present.
pub struct CertStore {
    current: ArcSwap<CertifiedKey>,
    info: ArcSwap<CertInfo>,
    alpn_challenges: std::sync::RwLock<std::collections::HashMap<String, Arc<CertifiedKey>>>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("info", &self.info())
            .finish()
    }
}

impl CertStore {
    pub fn new(key: Arc<CertifiedKey>, info: CertInfo) -> Arc<Self> {
        Arc::new(Self {
            current: ArcSwap::from(key),
            info: ArcSwap::from_pointee(info),
            alpn_challenges: Default::default(),
        })
    }

    /// Replaces the served certificate; handshakes after this call get the new one.
    pub fn swap(&self, key: Arc<CertifiedKey>, info: CertInfo) {
        self.current.store(key);
        self.info.store(Arc::new(info));
    }

    pub fn info(&self) -> CertInfo {
        (**self.info.load()).clone()
    }

    /// The served leaf certificate (DER).
    pub fn leaf_der(&self) -> Option<Vec<u8>> {
        self.current.load().cert.first().map(|c| c.to_vec())
    }

    /// Presents `key` to ACME validation connections (ALPN `acme-tls/1`) for `domain`.
    pub fn set_alpn_challenge(&self, domain: &str, key: Arc<CertifiedKey>) {
        if let Ok(mut map) = self.alpn_challenges.write() {
            map.insert(domain.to_string(), key);
        }
    }

    pub fn clear_alpn_challenge(&self, domain: &str) {
        if let Ok(mut map) = self.alpn_challenges.write() {
            map.remove(domain);
        }
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // A validator offers acme-tls/1 alone (RFC 8737 section 4). Found by the
        // `route` fuzz target: with `h2, acme-tls/1` the challenge certificate was
        // served and h2 negotiated, so HTTP would flow under it.
        let wants_acme = hello.alpn().is_some_and(|mut protocols| {
            protocols.next() == Some(ACME_TLS_ALPN) && protocols.next().is_none()
        });
        if wants_acme {
            // Only a validation connection gets the challenge certificate, and only for
            // a name with a pending challenge; it is never served to browsers.
            let name = hello.server_name()?.to_ascii_lowercase();
            return self.alpn_challenges.read().ok()?.get(&name).cloned();
        }
        Some(self.current.load_full())
    }
}

/// A TLS-ALPN-01 challenge certificate for `domain` (RFC 8737): self-signed, with the
/// critical acmeIdentifier extension holding SHA-256 of the key authorization.
pub fn alpn_challenge_cert(
    domain: &str,
    key_auth_digest: &[u8],
) -> anyhow::Result<Arc<CertifiedKey>> {
    let key = KeyPair::generate().context("generating a challenge key")?;
    let mut params = CertificateParams::new(vec![domain.to_string()])
        .with_context(|| format!("bad name {domain}"))?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(key_auth_digest)];
    let cert = params
        .self_signed(&key)
        .context("signing the challenge certificate")?;
    let key_der = PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|e| anyhow::anyhow!("challenge key: {e}"))?;
    // Not CertifiedKey::from_der: its key check parses the certificate with webpki,
    // which rejects the (critical, and required) acmeIdentifier extension.
    let signing_key = provider().key_provider.load_private_key(key_der)?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signing_key,
    )))
}

/// The rustls server configuration: TLS 1.2 and 1.3 only (ring's suites are all
/// AEAD with forward secrecy), ALPN h2 then http/1.1.
pub fn server_config(store: Arc<CertStore>) -> anyhow::Result<rustls::ServerConfig> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(store);
    // acme-tls/1 last: only an ACME validator offers it, and then it is the only one.
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()];
    // Resumption: stateless tickets (keys rotated every 6 hours by rustls), so a
    // returning browser skips the certificate signature however many clients there
    // are; the default would be a 256-entry server-side cache only. The cache is kept
    // (larger) for TLS 1.2 clients that resume by session id.
    cfg.ticketer = rustls::crypto::ring::Ticketer::new().context("TLS session tickets")?;
    cfg.session_storage = rustls::server::ServerSessionMemoryCache::new(4096);
    Ok(cfg)
}

/// Loads an operator-managed certificate chain and key, refusing files that would
/// only fail later in a browser: unreadable, not PEM, mismatched, expired.
pub fn load_pem_files(cert: &Path, key: &Path) -> anyhow::Result<(Arc<CertifiedKey>, CertInfo)> {
    let read = |p: &Path, what: &str| {
        std::fs::read(p).map_err(|e| {
            anyhow::Error::from(
                UserError::new(format!("cannot read {what} {}: {e}", p.display()))
                    .hint("check the path and that webui may read it"),
            )
        })
    };
    let cert_pem = read(cert, "certificate")?;
    let key_pem = read(key, "private key")?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            UserError::new(format!(
                "{} is not a PEM certificate chain: {e}",
                cert.display()
            ))
        })?;
    if chain.is_empty() {
        return Err(UserError::new(format!("{} holds no certificate", cert.display()))
            .hint("give the full chain in PEM (BEGIN CERTIFICATE blocks, leaf first), e.g. certbot's fullchain.pem")
            .into());
    }
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        UserError::new(format!("{} is not a PEM private key: {e}", key.display()))
            .hint("give the key in PEM, e.g. certbot's privkey.pem")
    })?;
    let info = CertInfo::from_der(&chain[0])
        .map_err(|e| UserError::new(format!("{}: {e}", cert.display())))?;
    let certified = CertifiedKey::from_der(chain, key_der, &provider()).map_err(|e| {
        UserError::new(format!(
            "{} does not belong to the certificate in {}: {e}",
            key.display(),
            cert.display()
        ))
        .hint("give the private key that was issued together with this certificate")
    })?;
    let now = OffsetDateTime::now_utc();
    if info.not_after < now {
        return Err(UserError::new(format!(
            "certificate {} expired on {}",
            cert.display(),
            info.not_after.date()
        ))
        .hint("renew it (e.g. `certbot renew`) or drop --tls-cert/--tls-key to let webui get one")
        .into());
    }
    if info.not_before > now {
        return Err(UserError::new(format!(
            "certificate {} is not valid before {}; check the system clock",
            cert.display(),
            info.not_before
        ))
        .into());
    }
    Ok((Arc::new(certified), info))
}

/// A certificate authority kept in the state directory so that a LAN user trusts it
/// once, instead of clicking through a new warning on every restart.
pub struct LocalCa {
    issuer: Issuer<'static, KeyPair>,
    /// PEM of the CA certificate, for users to import into their trust store.
    pub cert_pem: String,
}

const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca.key";

impl LocalCa {
    /// Loads the CA from the state directory, creating it on first use.
    pub fn load_or_create(state: &StateDir) -> anyhow::Result<Self> {
        let dir = state.ca_dir();
        let cert_path = dir.join(CA_CERT);
        let key_path = dir.join(CA_KEY);
        if cert_path.exists() && key_path.exists() {
            // A damaged CA is the operator's to repair (exit 1), never replaced
            // silently: devices that trust it would stop trusting the site.
            let damaged = |what: &Path, why: String| {
                anyhow::Error::from(
                    UserError::new(format!("{} is not a valid {why}", what.display())).hint(
                        format!(
                            "restore it from a backup, or move {} away to create a new local CA (devices must then trust the new ca.pem)",
                            dir.display()
                        ),
                    ),
                )
            };
            let key_pem = String::from_utf8(state::read_private(&key_path)?)
                .map_err(|_| damaged(&key_path, "key (not text)".into()))?;
            let cert_pem = std::fs::read_to_string(&cert_path)
                .with_context(|| format!("cannot read {}", cert_path.display()))?;
            let key =
                KeyPair::from_pem(&key_pem).map_err(|e| damaged(&key_path, format!("key: {e}")))?;
            let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
                .map_err(|e| damaged(&cert_path, format!("CA certificate: {e}")))?;
            return Ok(Self { issuer, cert_pem });
        }
        state::create_private_dir(&dir)?;
        let key = KeyPair::generate().context("generating the local CA key")?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        let host = hostname();
        dn.push(DnType::CommonName, format!("webui local CA ({host})"));
        dn.push(DnType::OrganizationName, "webui");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - TimeDuration::days(1);
        params.not_after = now + TimeDuration::days(3650);
        let cert = params.self_signed(&key).context("signing the local CA")?;
        let cert_pem = cert.pem();
        state::write_private(&key_path, key.serialize_pem().as_bytes())?;
        std::fs::write(&cert_path, &cert_pem)
            .with_context(|| format!("cannot write {}", cert_path.display()))?;
        let issuer = Issuer::new(params, key);
        Ok(Self { issuer, cert_pem })
    }

    /// Issues a leaf for the given DNS names and IP addresses, valid 90 days.
    pub fn issue(
        &self,
        dns: &[String],
        ips: &[IpAddr],
    ) -> anyhow::Result<(Arc<CertifiedKey>, CertInfo)> {
        let (cert, key) = self.leaf(dns, ips)?;
        let ca_der = CertificateDer::from_pem_slice(self.cert_pem.as_bytes())
            .context("local CA certificate is not PEM")?;
        let chain = vec![cert.der().clone(), ca_der];
        let key_der = PrivateKeyDer::try_from(key.serialize_der())
            .map_err(|e| anyhow::anyhow!("certificate key: {e}"))?;
        let info = CertInfo::from_der(cert.der())?;
        let certified = CertifiedKey::from_der(chain, key_der, &provider())?;
        Ok((Arc::new(certified), info))
    }

    /// [`issue`](Self::issue) as PEM: the chain (leaf, then the CA) and the key, for a
    /// proxy that runs elsewhere (`up --swarm` hands them over as Docker secrets).
    pub fn issue_pem(&self, dns: &[String], ips: &[IpAddr]) -> anyhow::Result<(String, String)> {
        let (cert, key) = self.leaf(dns, ips)?;
        Ok((
            format!("{}{}", cert.pem(), self.cert_pem),
            key.serialize_pem(),
        ))
    }

    fn leaf(
        &self,
        dns: &[String],
        ips: &[IpAddr],
    ) -> anyhow::Result<(rcgen::Certificate, KeyPair)> {
        let key = KeyPair::generate().context("generating a certificate key")?;
        let mut params = CertificateParams::default();
        let primary = dns.first().cloned().unwrap_or_else(|| "localhost".into());
        params.distinguished_name.push(DnType::CommonName, primary);
        let mut sans = Vec::new();
        for d in dns {
            sans.push(SanType::DnsName(
                d.clone()
                    .try_into()
                    .with_context(|| format!("bad name {d}"))?,
            ));
        }
        sans.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - TimeDuration::hours(1);
        params.not_after = now + TimeDuration::days(90);
        let cert = params
            .signed_by(&key, &self.issuer)
            .context("signing a certificate with the local CA")?;
        Ok((cert, key))
    }
}

/// The names a self-signed leaf covers: the configured domains, localhost, this
/// host's name, and its addresses (so `https://192.168.1.20` works on a LAN box).
pub fn self_signed_names(domains: &[String]) -> (Vec<String>, Vec<IpAddr>) {
    let mut dns: Vec<String> = domains.to_vec();
    for extra in ["localhost".to_string(), hostname()] {
        if !extra.is_empty() && !dns.contains(&extra) {
            dns.push(extra);
        }
    }
    let mut ips: Vec<IpAddr> = vec![
        IpAddr::from([127, 0, 0, 1]),
        IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
    ];
    if let Ok(ifaces) = if_addrs::get_if_addrs() {
        for i in ifaces {
            let ip = i.ip();
            if !ips.contains(&ip) && !ip.is_unspecified() {
                ips.push(ip);
            }
        }
    }
    (dns, ips)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_ca_is_created_once_and_issues_valid_leaves() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let ca = LocalCa::load_or_create(&state).unwrap();
        let again = LocalCa::load_or_create(&state).unwrap();
        assert_eq!(
            ca.cert_pem, again.cert_pem,
            "the CA is kept, not regenerated"
        );
        let (_, info) = again
            .issue(
                &["chat.example.com".into()],
                &["127.0.0.1".parse().unwrap()],
            )
            .unwrap();
        assert!(info.names.contains(&"chat.example.com".to_string()));
        assert!(info.names.contains(&"127.0.0.1".to_string()));
        assert!(info.issuer.contains("webui local CA"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(state.ca_dir().join(CA_KEY))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
