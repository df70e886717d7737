//! The first admin account, created before the site opens (PITFALLS 15).
//!
//! Open WebUI makes the first account that signs up its admin. On a fresh public site
//! whoever reaches the signup page first would own it, so `webui up` claims it first:
//! the route the proxy serves goes through a [`gate`] that holds the "starting" page
//! until the admin exists, then passes every route on.
//!
//! How (checked against Open WebUI's `main.py` and `routers/auths.py`; the pinned
//! 0.12.4 and older releases alike):
//! - `GET /api/config` without a token carries `"onboarding": true` exactly while
//!   there is no user;
//! - `POST /api/v1/auths/signup {name, email, password}` makes the first user `admin`
//!   (also when `ENABLE_SIGNUP=false`, as long as the login form is on) and turns
//!   public signup off.
//!
//! Both are asked on the container's loopback port, never through the proxy, so this
//! works for any version. Open WebUI's own `WEBUI_ADMIN_EMAIL`/`WEBUI_ADMIN_PASSWORD`
//! variables (newer releases only) are not used: they would put the password in the
//! container's environment, visible to `docker inspect`.
//!
//! An existing account is never changed: when `onboarding` is absent, nothing is
//! sent. With `WEBUI_AUTH=false` (`features.auth` false in `/api/config`) Open WebUI
//! has no accounts to claim (everyone is let in as its built-in admin): nothing is
//! created and the summary says so. The password is `WEBUI_ADMIN_PASSWORD` from webui's environment, else 24
//! random letters and digits (about 143 bits), written to
//! `<project dir>/admin_password` (0600) *before* the signup, so it cannot be lost,
//! and shown once on a terminal. `<project dir>/admin.json` records what was created.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config::up::AdminSettings;
use crate::docker::health;
use crate::docker::project::ProjectState;
use crate::error::UserError;
use crate::route::{Hold, Phase, Route, RouteRx, RouteTx};
use crate::state::{create_private_dir, write_private};

/// The environment variable holding the admin password to use.
pub const PASSWORD_ENV: &str = "WEBUI_ADMIN_PASSWORD";
/// Public text of the starting page while the account is created.
pub const SETTING_UP: &str = "Setting up the administrator account.";
/// How long Open WebUI may take to answer `/api/config` once healthy.
const PATIENCE: Duration = Duration::from_secs(60);

/// What `webui up` found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Created now. `password` is the generated one (None: WEBUI_ADMIN_PASSWORD).
    Created {
        email: String,
        password: Option<String>,
        password_file: Option<PathBuf>,
    },
    /// Open WebUI already had accounts; `record` is what an earlier `webui up`
    /// created, if it did.
    Existing { record: Option<Record> },
    /// `WEBUI_AUTH=false`: no sign-in at all.
    AuthOff,
}

/// What `GET /api/config` says about accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Accounts {
    None,
    Some,
    AuthOff,
}

/// Whether a `GET /api/config` answer says Open WebUI has no account at all (and runs
/// with sign-in on: with `WEBUI_AUTH=false` its data belongs to an implicit user).
pub(crate) fn has_no_accounts(config: &serde_json::Value) -> bool {
    accounts_of(config) == Accounts::None
}

fn accounts_of(config: &serde_json::Value) -> Accounts {
    if config["features"]["auth"].as_bool() == Some(false) {
        Accounts::AuthOff
    } else if config["onboarding"].as_bool() == Some(true) {
        Accounts::None
    } else {
        Accounts::Some
    }
}

/// `<project dir>/admin.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub email: String,
    pub name: String,
    pub created_at: String,
    /// Where the generated password is, or null when it came from
    /// WEBUI_ADMIN_PASSWORD.
    pub password_file: Option<PathBuf>,
}

/// Shared between the gate and the summary.
pub type SharedOutcome = Arc<Mutex<Option<Outcome>>>;

pub fn record_path(state: &ProjectState) -> PathBuf {
    state.dir().join("admin.json")
}

pub fn password_path(state: &ProjectState) -> PathBuf {
    state.dir().join("admin_password")
}

/// What an earlier `webui up` created, if anything.
pub fn record(state: &ProjectState) -> Option<Record> {
    let bytes = std::fs::read(record_path(state)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// `WEBUI_ADMIN_PASSWORD`, checked: 8 to 72 bytes (Open WebUI's bcrypt limit).
pub fn password_from_env() -> anyhow::Result<Option<String>> {
    let Ok(p) = std::env::var(PASSWORD_ENV) else {
        return Ok(None);
    };
    check_password(&p).map(Some)
}

fn check_password(p: &str) -> anyhow::Result<String> {
    if p.len() < 8 || p.len() > 72 || p.chars().any(char::is_control) {
        return Err(UserError::new(format!(
            "{PASSWORD_ENV} must be 8 to 72 bytes without control characters (it has {} bytes)",
            p.len()
        ))
        .hint(format!(
            "unset {PASSWORD_ENV} to have a strong password generated, shown once and stored"
        ))
        .into());
    }
    Ok(p.to_string())
}

/// 24 letters and digits from the OS's random source (rejection sampling, so every
/// character is equally likely): about 143 bits.
pub fn generate_password() -> anyhow::Result<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(24);
    while out.len() < 24 {
        let mut buf = [0u8; 64];
        getrandom::fill(&mut buf)
            .map_err(|e| anyhow::anyhow!("cannot get random bytes from the OS: {e}"))?;
        for b in buf {
            // 248 = 4 * 62: bytes above would favour the first letters.
            if b < 248 && out.len() < 24 {
                out.push(ALPHABET[usize::from(b) % ALPHABET.len()] as char);
            }
        }
    }
    Ok(out)
}

/// What the gate needs to create the account.
pub struct Job {
    pub settings: AdminSettings,
    /// From WEBUI_ADMIN_PASSWORD; None: generate one.
    pub password: Option<String>,
    pub state: ProjectState,
    pub outcome: SharedOutcome,
}

/// Passes routes from `inner` (everything that writes routes) to `outer` (what the
/// proxy serves), except that the first `Forward` waits until the admin account
/// exists; meanwhile the starting page says so. Without a job (no Open WebUI behind
/// the site) everything passes at once. Runs until `cancel`; an account that cannot
/// be created is an error (the site stays closed).
pub async fn gate(
    mut inner: RouteRx,
    outer: RouteTx,
    job: Option<Job>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let mut open = job.is_none();
    loop {
        let route = inner.borrow_and_update().clone();
        match (route, &job) {
            (Route::Forward(upstream), Some(job)) if !open => {
                outer.send_replace(Route::Hold(Hold {
                    phase: Phase::Starting,
                    detail: SETTING_UP.into(),
                }));
                let base = upstream
                    .first()
                    .to_string()
                    .trim_end_matches('/')
                    .to_string();
                let outcome = tokio::select! {
                    r = ensure(&base, job) => r?,
                    _ = cancel.cancelled() => return Ok(()),
                };
                if let Ok(mut o) = job.outcome.lock() {
                    *o = Some(outcome);
                }
                open = true;
                // Whatever the route is now (the container may have died meanwhile).
                outer.send_replace(inner.borrow_and_update().clone());
            }
            (other, _) => {
                outer.send_if_modified(|r| {
                    let changed = *r != other;
                    *r = other;
                    changed
                });
            }
        }
        tokio::select! {
            r = inner.changed() => if r.is_err() { return Ok(()) },
            _ = cancel.cancelled() => return Ok(()),
        }
    }
}

/// Creates the admin account on Open WebUI at `base` (loopback) unless it has
/// accounts already.
pub async fn ensure(base: &str, job: &Job) -> anyhow::Result<Outcome> {
    match accounts(base).await? {
        Accounts::None => {}
        Accounts::Some => {
            return Ok(Outcome::Existing {
                record: record(&job.state),
            });
        }
        Accounts::AuthOff => return Ok(Outcome::AuthOff),
    }
    let (password, password_file) = match &job.password {
        Some(p) => (p.clone(), None),
        None => {
            let p = generate_password()?;
            let path = password_path(&job.state);
            if let Some(parent) = path.parent() {
                create_private_dir(parent)?;
            }
            // Before the signup: once the account exists, its password must be kept.
            write_private(&path, format!("{p}\n").as_bytes())?;
            (p, Some(path))
        }
    };
    let body = serde_json::json!({
        "name": job.settings.name,
        "email": job.settings.email,
        "password": password,
        "profile_image_url": "/user.png",
    });
    let (status, answer) = post_json(&format!("{base}/api/v1/auths/signup"), &body).await?;
    let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap_or_default();
    if !status.is_success() {
        let detail = answer["detail"].as_str().unwrap_or("(no detail)");
        return Err(UserError::new(format!(
            "Open WebUI refused to create the admin account {}: {status} {detail}",
            job.settings.email
        ))
        .hint(
            "see `webui logs open-webui`; the site was not opened: fix the cause and run `webui up` again (Open WebUI keeps running, reachable on this host's loopback port only)",
        )
        .into());
    }
    if answer["role"].as_str() != Some("admin") {
        return Err(UserError::new(format!(
            "the account {} was created as `{}`, not admin: another account was made first, on this host's loopback port",
            job.settings.email,
            answer["role"].as_str().unwrap_or("?")
        ))
        .hint("check the users in Open WebUI's Admin Panel; webui never changes existing accounts")
        .into());
    }
    let rec = Record {
        email: job.settings.email.clone(),
        name: job.settings.name.clone(),
        created_at: crate::supervisor::now_text(),
        password_file: password_file.clone(),
    };
    let json = serde_json::to_vec_pretty(&rec)?;
    write_private(&record_path(&job.state), &json)?;
    Ok(Outcome::Created {
        email: job.settings.email.clone(),
        password: job.password.is_none().then_some(password),
        password_file,
    })
}

/// Whether Open WebUI at `base` has no account yet. Retries for a while: it can be
/// healthy a moment before its API answers.
async fn accounts(base: &str) -> anyhow::Result<Accounts> {
    let url = format!("{base}/api/config");
    let start = Instant::now();
    let last = loop {
        let why = match health::http_get(&url, Duration::from_secs(10)).await {
            Ok((s, body)) if s.is_success() => {
                match serde_json::from_slice::<serde_json::Value>(&body) {
                    Ok(v) if v.is_object() => {
                        return Ok(accounts_of(&v));
                    }
                    _ => "it did not answer JSON".to_string(),
                }
            }
            Ok((s, _)) => format!("it answered {s}"),
            Err(e) => format!("{e:#}"),
        };
        if start.elapsed() >= PATIENCE {
            break why;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    Err(UserError::new(format!(
        "cannot tell whether Open WebUI has an admin account yet: GET {url}: {last}"
    ))
    .hint("is the image Open WebUI? see `webui logs open-webui`; the site was not opened: fix the cause and run `webui up` again")
    .into())
}

/// POST a JSON body to a plain-http loopback URL; the answer's status and body
/// (capped at 1 MiB).
async fn post_json(url: &str, body: &serde_json::Value) -> anyhow::Result<(StatusCode, Bytes)> {
    let uri: http::Uri = url.parse()?;
    let authority = uri
        .authority()
        .ok_or_else(|| anyhow::anyhow!("{url} has no host"))?
        .clone();
    let host = authority.host().trim_matches(['[', ']']).to_string();
    let port = uri.port_u16().unwrap_or(80);
    let call = async {
        let stream = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = http::Request::post(uri.path())
            .header(http::header::HOST, authority.as_str())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                http::header::USER_AGENT,
                concat!("webui/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(Bytes::from(body.to_string())))?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), 1 << 20)
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("reading the answer of {url}: {e}"))?
            .to_bytes();
        anyhow::Ok((status, body))
    };
    tokio::time::timeout(Duration::from_secs(30), call)
        .await
        .map_err(|_| anyhow::anyhow!("no answer from {url} within 30s"))?
        .map_err(|e| e.context(format!("POST {url}")))
}

/// The admin state in words, for the summary: a headline, then detail lines.
pub fn describe(outcome: Option<&Outcome>) -> Vec<String> {
    let shown = |p: &Path| format!("{} (mode 0600)", p.display());
    match outcome {
        Some(Outcome::Created {
            email,
            password: Some(_),
            password_file,
        }) => {
            let mut v = vec![format!(
                "created {email} before the site opened, with a generated password"
            )];
            if let Some(p) = password_file {
                v.push(format!("its password is also kept in {}", shown(p)));
            }
            v
        }
        Some(Outcome::Created { email, .. }) => vec![format!(
            "created {email} before the site opened, with the password in {PASSWORD_ENV}"
        )],
        Some(Outcome::Existing { record: Some(r) }) => {
            let mut v = vec![format!(
                "{} (created by webui {}; existing accounts are never changed)",
                r.email, r.created_at
            )];
            if let Some(p) = r.password_file.as_deref().filter(|p| p.exists()) {
                v.push(format!(
                    "its first password is in {} (change it in Settings > Account)",
                    shown(p)
                ));
            }
            v
        }
        Some(Outcome::AuthOff) => vec![
            "none: sign-in is off (WEBUI_AUTH=false), everyone who reaches the site is let in"
                .to_string(),
        ],
        Some(Outcome::Existing { record: None }) => {
            vec!["Open WebUI already has accounts; webui left them unchanged".to_string()]
        }
        None => vec!["unknown (Open WebUI was not reached)".to_string()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_passwords_are_long_random_and_alphanumeric() {
        let a = generate_password().unwrap();
        let b = generate_password().unwrap();
        assert_eq!(a.len(), 24);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn accounts_from_api_config() {
        use serde_json::json;
        let fresh = json!({"onboarding": true, "status": true, "features": {"auth": true}});
        assert_eq!(accounts_of(&fresh), Accounts::None);
        let used = json!({"status": true, "features": {"auth": true}});
        assert_eq!(accounts_of(&used), Accounts::Some);
        let off = json!({"onboarding": true, "features": {"auth": false}});
        assert_eq!(accounts_of(&off), Accounts::AuthOff);
    }

    #[test]
    fn given_passwords_are_checked() {
        assert!(check_password("short").is_err());
        assert!(check_password(&"x".repeat(73)).is_err());
        assert!(check_password("line\nbreak!").is_err());
        assert_eq!(check_password("good-Passw0rd").unwrap(), "good-Passw0rd");
    }
}
