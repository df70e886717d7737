//! `webui version [--check] [--json]`: the version, git commit and build date (as
//! `webui --version`), and with `--check` whether a newer release exists.
//!
//! # Never phones home by itself
//! `--check` asks only the release URL the operator configured (`--release-url`, env
//! `WEBUI_RELEASE_URL`, or `release_url` in webui.toml). Without one it says "no
//! release URL configured" and makes no network call at all.
//!
//! # The release document
//! The release URL (http or https) answers `200` with a JSON object:
//! ```json
//! {"version": "0.2.0", "url": "https://example.com/webui/v0.2.0", "date": "2026-11-20"}
//! ```
//! `version` (required) is the latest release, semver with an optional leading `v`;
//! `url` (optional) is where to read about or get it; `date` (optional) is shown as
//! given. Unknown keys are ignored, so the document can carry more. The body is read
//! up to 64 KiB; the whole check gives up after 10 s.
//!
//! # `--json` schema
//! ```json
//! {"version": "0.1.0", "commit": "9f704e6abc12", "build_date": "2026-11-24",
//!  "check": null}
//! ```
//! With `--check`, `check` is `{"release_url": null | "...", "latest": null | "0.2.0",
//! "newer": false | true, "url": null | "...", "date": null | "..."}` (`release_url` null:
//! nothing configured, nothing asked).
//!
//! # Exit status
//! 0: printed; with `--check` also when a newer release exists (read `newer`) and when
//! no release URL is configured. 1: the release URL is not a URL, cannot be reached,
//! or does not answer the document above (the message says which).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use serde::{Deserialize, Serialize};

use crate::cli::{GlobalArgs, VersionCmd};
use crate::config::Paths;
use crate::error::UserError;
use crate::output::Printer;

/// This build's version, commit and date.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const COMMIT: &str = env!("WEBUI_GIT_COMMIT");
pub const BUILD_DATE: &str = env!("WEBUI_BUILD_DATE");

const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_DOCUMENT: usize = 64 << 10;

/// The release document (see the module docs).
#[derive(Debug, Deserialize)]
struct Release {
    version: String,
    url: Option<String>,
    date: Option<String>,
}

#[derive(Debug, Default, Serialize)]
struct Check {
    release_url: Option<String>,
    latest: Option<String>,
    newer: bool,
    url: Option<String>,
    date: Option<String>,
}

pub async fn run(global: &GlobalArgs, cmd: &VersionCmd, _printer: Printer) -> anyhow::Result<u8> {
    let check = if cmd.check {
        let paths = Paths::resolve(global);
        let file = paths.load_file()?;
        let configured = crate::config::release::release_url(cmd.release_url.as_deref(), &file);
        Some(match configured {
            None => Check::default(),
            Some(url) => check(&url).await?,
        })
    } else {
        None
    };
    if cmd.json {
        println!(
            "{}",
            serde_json::json!({
                "version": VERSION,
                "commit": COMMIT,
                "build_date": BUILD_DATE,
                "check": check,
            })
        );
        return Ok(0);
    }
    // The result of the command: printed even with --quiet.
    println!("webui {}", crate::VERSION_LONG);
    let Some(c) = check else { return Ok(0) };
    let (Some(from), Some(latest)) = (&c.release_url, &c.latest) else {
        println!(
            "no release URL configured: nothing was checked (set WEBUI_RELEASE_URL or release_url in webui.toml)"
        );
        return Ok(0);
    };
    let mut about = String::new();
    if let Some(d) = &c.date {
        about.push_str(&format!(", released {d}"));
    }
    if let Some(u) = &c.url {
        about.push_str(&format!(": {u}"));
    }
    if c.newer {
        println!("a newer release exists: {latest} (this is {VERSION}){about}");
    } else {
        println!("up to date: the latest release is {latest} (asked {from})");
    }
    Ok(0)
}

/// Asks `url` for the release document and compares it with this build.
async fn check(url: &str) -> anyhow::Result<Check> {
    let uri: http::Uri = url
        .parse()
        .ok()
        .filter(|u: &http::Uri| {
            matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some()
        })
        .ok_or_else(|| {
            UserError::new(format!("release URL `{url}` is not an http(s) URL"))
                .hint("write it like https://example.com/webui/latest.json (WEBUI_RELEASE_URL or release_url)")
        })?;
    let unreachable = |why: String| -> anyhow::Error {
        UserError::new(format!("cannot check for a newer release at {url}: {why}"))
            .hint("check the address (WEBUI_RELEASE_URL or release_url in webui.toml) and that this host can reach it")
            .into()
    };
    let body = tokio::time::timeout(CHECK_TIMEOUT, fetch(uri))
        .await
        .map_err(|_| unreachable(format!("no answer within {}s", CHECK_TIMEOUT.as_secs())))?
        .map_err(|e| unreachable(format!("{e:#}")))?;
    let release: Release = serde_json::from_slice(&body).map_err(|e| {
        UserError::new(format!(
            "the release URL {url} did not answer a release document: {e}"
        ))
        .hint(r#"it must serve JSON like {"version": "0.2.0", "url": "https://..."}"#)
    })?;
    let latest = parse_version(&release.version).ok_or_else(|| {
        UserError::new(format!(
            "the release URL {url} names version `{}`, which is not a version like 0.2.0",
            release.version
        ))
    })?;
    let ours = parse_version(VERSION).unwrap_or_else(|| semver::Version::new(0, 0, 0));
    Ok(Check {
        release_url: Some(url.to_string()),
        latest: Some(latest.to_string()),
        newer: latest > ours,
        url: release.url,
        date: release.date,
    })
}

/// `0.2.0` or `v0.2.0`.
fn parse_version(s: &str) -> Option<semver::Version> {
    semver::Version::parse(s.trim().trim_start_matches('v')).ok()
}

/// GET over http or https (the system's trusted roots); the body of a 2xx answer.
async fn fetch(uri: http::Uri) -> anyhow::Result<Bytes> {
    let client = crate::web::client::<Empty<Bytes>>()?;
    let req = http::Request::get(uri)
        .header(http::header::USER_AGENT, crate::web::USER_AGENT)
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::new())?;
    let resp = client.request(req).await?;
    let status = resp.status();
    if !status.is_success() {
        anyhow::bail!("it answered {status}");
    }
    Limited::new(resp.into_body(), MAX_DOCUMENT)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| anyhow::anyhow!("reading the answer: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_with_and_without_v() {
        assert_eq!(parse_version("v0.2.0"), Some(semver::Version::new(0, 2, 0)));
        assert_eq!(
            parse_version(" 1.2.3 "),
            Some(semver::Version::new(1, 2, 3))
        );
        assert!(parse_version("latest").is_none());
        assert!(parse_version("1.2").is_none());
        assert!(parse_version("0.10.0") > parse_version("0.9.0"));
        assert!(parse_version(VERSION).is_some(), "Cargo's version parses");
    }

    #[tokio::test]
    async fn a_bad_url_is_a_user_error_without_a_request() {
        let e = check("ftp://example.com/x").await.unwrap_err();
        assert_eq!(crate::error::exit_code(&e), 1);
        assert!(e.to_string().contains("not an http(s) URL"), "{e}");
    }
}
