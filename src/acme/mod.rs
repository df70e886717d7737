//! Certificates from an ACME CA (Let's Encrypt, or any RFC 8555 CA) with instant-acme:
//! account, orders, HTTP-01 and TLS-ALPN-01 challenges, renewal, backoff.
//!
//! Architecture Invariant: a certificate problem never takes the site down. The last
//! good certificate (or the local CA's until the first arrives) keeps being served
//! while orders are retried with exponential backoff; a new certificate is swapped into
//! the [`CertStore`] without a restart.
//!
//! This module knows nothing of the proxy or Docker: it writes challenge answers into
//! [`Challenges`] and [`CertStore`], which the listeners read.

pub mod preflight;
pub mod schedule;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};
use rcgen::{CertificateParams, KeyPair};
use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::challenge::Challenges;
use crate::config::resolve::{AcmeSettings, ChallengeMode};
use crate::state::StateDir;
use crate::tls::{self, CertInfo, CertStore};
pub use store::{CertStatus, Store};

/// Why an order failed, for the log, `status` and the backoff.
#[derive(Debug)]
pub struct OrderFailure {
    pub message: String,
    pub rate_limited: bool,
}

impl std::fmt::Display for OrderFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for OrderFailure {}

fn failure(e: impl std::fmt::Display) -> OrderFailure {
    let message = e.to_string();
    OrderFailure {
        rate_limited: message.contains("rateLimited"),
        message,
    }
}

/// How often the renewal loop wakes to ask the CA's renewal window again.
const ARI_RECHECK: Duration = Duration::from_secs(6 * 3600);

/// The ACME client for one set of names.
pub struct Acme {
    settings: AcmeSettings,
    store: Store,
    certs: Arc<CertStore>,
    challenges: Challenges,
    /// Wakes the renewal loop for an immediate order (`webui cert renew --force`).
    pub renew_now: Arc<Notify>,
}

impl Acme {
    pub fn new(
        settings: AcmeSettings,
        state: &StateDir,
        certs: Arc<CertStore>,
        challenges: Challenges,
    ) -> Self {
        let primary = settings.domains.first().cloned().unwrap_or_default();
        let store = Store::new(state, &primary, &settings.directory);
        Self {
            settings,
            store,
            certs,
            challenges,
            renew_now: Arc::new(Notify::new()),
        }
    }

    /// The stored certificate, if still good for the configured names and CA.
    pub fn stored(
        settings: &AcmeSettings,
        state: &StateDir,
    ) -> Option<(Arc<rustls::sign::CertifiedKey>, CertInfo)> {
        let primary = settings.domains.first()?;
        Store::new(state, primary, &settings.directory).load_cert(&settings.domains)
    }

    pub fn status(&self) -> CertStatus {
        self.store.load_status()
    }

    /// Keeps a valid certificate in the store until `shutdown`: orders when none is
    /// served or renewal is due, retries failures with backoff.
    pub async fn run(self, mut current: Option<CertInfo>, shutdown: CancellationToken) {
        let mut failures = 0u32;
        let mut status = self.store.load_status();
        status.domains = self.settings.domains.clone();
        status.directory = self.settings.directory.clone();
        loop {
            let now = OffsetDateTime::now_utc();
            // The CA's renewal window (ARI, RFC 9773) when it offers one, asked anew on
            // every pass: a CA that plans a mass revocation moves the window earlier.
            let ari = match (&current, failures) {
                (Some(_), 0) => self.ari_window().await,
                _ => None,
            };
            let due = match (&current, status.next_try) {
                (_, Some(next)) if failures > 0 => next,
                (None, _) => now,
                (Some(info), _) => schedule::renew_at(info.not_before, info.not_after, ari),
            };
            if let Some(info) = &current {
                status.not_after = Some(info.not_after);
                status.issuer = Some(info.issuer.clone());
                status.next_renewal =
                    Some(schedule::renew_at(info.not_before, info.not_after, ari));
            }
            let _ = self.store.save_status(&status);
            let until_due = Duration::try_from(due - now).unwrap_or(Duration::ZERO);
            // Wake at least every few hours to ask the CA's renewal window again.
            let wait = until_due.min(ARI_RECHECK);
            if !until_due.is_zero() {
                tracing::info!(target: "webui::acme", "next certificate order in {}", humantime::format_duration(Duration::from_secs(until_due.as_secs())));
            }
            let forced = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => false,
                _ = self.renew_now.notified() => {
                    tracing::info!(target: "webui::acme", "renewal requested");
                    true
                }
            };
            if !forced && OffsetDateTime::now_utc() < due {
                continue;
            }
            status.orders += 1;
            let ordered = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = self.order() => r,
            };
            match ordered {
                Ok((chain, key_pem)) => {
                    match store::parse_pair(chain.as_bytes(), key_pem.as_bytes()) {
                        Ok((key, info)) => {
                            if let Err(e) = self.store.save_cert(&chain, &key_pem) {
                                tracing::warn!(target: "webui::acme", error = %format!("{e:#}"), "could not store the new certificate; serving it anyway");
                            }
                            tracing::info!(
                                target: "webui::acme",
                                names = ?info.names,
                                not_after = %info.not_after,
                                "certificate issued by {}; now serving it", info.issuer
                            );
                            failures = 0;
                            status.last_error = None;
                            status.next_try = None;
                            status.not_after = Some(info.not_after);
                            status.issuer = Some(info.issuer.clone());
                            status.next_renewal =
                                Some(schedule::renew_at(info.not_before, info.not_after, None));
                            // Status on disk first: whoever sees the new certificate
                            // finds the status current.
                            let _ = self.store.save_status(&status);
                            self.certs.swap(key, info.clone());
                            current = Some(info);
                        }
                        Err(e) => {
                            failures += 1;
                            self.record_failure(
                                &mut status,
                                failures,
                                &failure(format!("the CA returned an unusable certificate: {e:#}")),
                            );
                        }
                    }
                }
                Err(f) => {
                    failures += 1;
                    self.record_failure(&mut status, failures, &f);
                }
            }
        }
    }

    /// The CA's suggested renewal window for the served certificate, if it has ARI.
    async fn ari_window(&self) -> Option<(OffsetDateTime, OffsetDateTime)> {
        let leaf = self.certs.leaf_der()?;
        let leaf = rustls_pki_types::CertificateDer::from(leaf);
        let id = instant_acme::CertificateIdentifier::try_from(&leaf).ok()?;
        let ask = async {
            let account = self.account().await.ok()?;
            account.renewal_info(&id).await.ok()
        };
        let (info, _) = tokio::time::timeout(Duration::from_secs(15), ask)
            .await
            .ok()??;
        tracing::debug!(target: "webui::acme", start = %info.suggested_window.start, end = %info.suggested_window.end, "ARI renewal window");
        Some((info.suggested_window.start, info.suggested_window.end))
    }

    fn record_failure(&self, status: &mut CertStatus, failures: u32, f: &OrderFailure) {
        let delay = schedule::backoff(failures, f.rate_limited, None);
        let next = OffsetDateTime::now_utc() + delay;
        status.last_error = Some(f.message.clone());
        status.last_error_at = Some(OffsetDateTime::now_utc());
        status.next_try = Some(next);
        // Saved before the log line, so whoever reads the log finds the status current.
        let _ = self.store.save_status(status);
        crate::notify::send(&format!(
            "the certificate order for {} failed: {}; still serving the previous certificate",
            self.settings.domains.join(", "),
            f.message
        ));
        tracing::warn!(
            target: "webui::acme",
            error = %f.message,
            next_try = %next,
            "certificate order for {} failed; still serving the previous certificate; retrying in {}",
            self.settings.domains.join(", "),
            humantime::format_duration(delay)
        );
    }

    async fn account(&self) -> Result<Account, OrderFailure> {
        let builder = || match &self.settings.ca_file {
            Some(ca) => Account::builder_with_root(ca),
            None => Account::builder(),
        };
        if let Some(creds) = self
            .store
            .load_account()
            .map_err(|e| failure(format!("{e:#}")))?
        {
            return builder()
                .map_err(|e| failure(format!("ACME client: {e}")))?
                .from_credentials(creds)
                .await
                .map_err(|e| {
                    failure(format!(
                        "cannot reach the ACME CA at {}: {e}",
                        self.settings.directory
                    ))
                });
        }
        let contact = self.settings.email.as_ref().map(|e| format!("mailto:{e}"));
        let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
        let (account, creds) = builder()
            .map_err(|e| failure(format!("ACME client: {e}")))?
            .create(
                &NewAccount {
                    contact: &contacts,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.settings.directory.clone(),
                None,
            )
            .await
            .map_err(|e| {
                failure(format!(
                    "cannot register with the ACME CA at {}: {e}",
                    self.settings.directory
                ))
            })?;
        self.store
            .save_account(&creds)
            .map_err(|e| failure(format!("{e:#}")))?;
        tracing::info!(target: "webui::acme", "registered ACME account at {}", self.settings.directory);
        Ok(account)
    }

    /// Places one order, trying the challenge types the settings allow; returns the
    /// PEM chain and the PEM private key.
    async fn order(&self) -> Result<(String, String), OrderFailure> {
        let account = self.account().await?;
        let types: &[ChallengeType] = match self.settings.challenge {
            ChallengeMode::Auto => &[ChallengeType::Http01, ChallengeType::TlsAlpn01],
            ChallengeMode::Http01 => &[ChallengeType::Http01],
            ChallengeMode::TlsAlpn01 => &[ChallengeType::TlsAlpn01],
        };
        let mut last = None;
        for ty in types {
            match self.order_with(&account, ty.clone()).await {
                Ok(pair) => return Ok(pair),
                Err(f) => {
                    tracing::warn!(target: "webui::acme", challenge = ?ty, error = %f.message, "challenge failed");
                    let rate_limited = f.rate_limited;
                    last = Some(f);
                    if rate_limited {
                        break;
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| failure("no challenge type to try")))
    }

    async fn order_with(
        &self,
        account: &Account,
        ty: ChallengeType,
    ) -> Result<(String, String), OrderFailure> {
        let ids: Vec<Identifier> = self
            .settings
            .domains
            .iter()
            .cloned()
            .map(Identifier::Dns)
            .collect();
        let mut order = account
            .new_order(&NewOrder::new(&ids))
            .await
            .map_err(|e| failure(format!("new order: {e}")))?;
        let mut tokens = Vec::new();
        let mut alpn_names = Vec::new();
        let result = async {
            let mut authzs = order.authorizations();
            while let Some(authz) = authzs.next().await {
                let mut authz = authz.map_err(|e| failure(format!("authorization: {e}")))?;
                match authz.status {
                    AuthorizationStatus::Pending => {}
                    AuthorizationStatus::Valid => continue,
                    other => return Err(failure(format!("authorization is {other:?}"))),
                }
                let domain = authz.identifier().to_string();
                let mut challenge = authz.challenge(ty.clone()).ok_or_else(|| {
                    failure(format!("the CA offers no {ty:?} challenge for {domain}"))
                })?;
                let key_auth = challenge.key_authorization();
                match ty {
                    ChallengeType::Http01 => {
                        self.challenges
                            .insert(challenge.token.clone(), key_auth.as_str());
                        tokens.push(challenge.token.clone());
                    }
                    _ => {
                        let cert = tls::alpn_challenge_cert(&domain, key_auth.digest().as_ref())
                            .map_err(|e| failure(format!("{e:#}")))?;
                        self.certs.set_alpn_challenge(&domain, cert);
                        alpn_names.push(domain.clone());
                    }
                }
                challenge
                    .set_ready()
                    .await
                    .map_err(|e| failure(format!("challenge for {domain}: {e}")))?;
            }
            let retry = RetryPolicy::new().timeout(Duration::from_secs(120));
            let state = order
                .poll_ready(&retry)
                .await
                .map_err(|e| failure(format!("validation: {e}")))?;
            if state != OrderStatus::Ready {
                return Err(self.explain_invalid(&mut order).await);
            }
            Ok(())
        }
        .await;
        for t in &tokens {
            self.challenges.remove(t);
        }
        for n in &alpn_names {
            self.certs.clear_alpn_challenge(n);
        }
        result?;

        let key = KeyPair::generate().map_err(|e| failure(format!("certificate key: {e}")))?;
        let csr = CertificateParams::new(self.settings.domains.clone())
            .and_then(|p| p.serialize_request(&key))
            .map_err(|e| failure(format!("certificate request: {e}")))?;
        order
            .finalize_csr(csr.der())
            .await
            .map_err(|e| failure(format!("finalize: {e}")))?;
        let chain = order
            .poll_certificate(&RetryPolicy::new().timeout(Duration::from_secs(120)))
            .await
            .map_err(|e| failure(format!("certificate download: {e}")))?;
        Ok((chain, key.serialize_pem()))
    }

    /// The CA's reasons for an invalid order, from its authorizations' challenges.
    async fn explain_invalid(&self, order: &mut instant_acme::Order) -> OrderFailure {
        let mut reasons = Vec::new();
        let mut authzs = order.authorizations();
        while let Some(Ok(authz)) = authzs.next().await {
            let name = authz.identifier().to_string();
            for c in &authz.challenges {
                if let Some(err) = &c.error {
                    reasons.push(format!("{name} ({:?}): {err}", c.r#type));
                }
            }
        }
        if reasons.is_empty() {
            failure("the CA marked the order invalid without a reason")
        } else {
            failure(format!("validation failed: {}", reasons.join("; ")))
        }
    }
}

/// Starts with the stored certificate or a temporary one from the local CA.
pub fn initial_certificate(
    settings: &AcmeSettings,
    state: &StateDir,
) -> anyhow::Result<(Arc<rustls::sign::CertifiedKey>, CertInfo, bool)> {
    if let Some((key, info)) = Acme::stored(settings, state) {
        return Ok((key, info, true));
    }
    let ca =
        tls::LocalCa::load_or_create(state).context("local CA for the temporary certificate")?;
    let (dns, ips) = tls::self_signed_names(&settings.domains);
    let (key, info) = ca.issue(&dns, &ips)?;
    Ok((key, info, false))
}
