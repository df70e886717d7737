//! `webui up --notify-url-file FILE`: the problems the running `up` records (a
//! container exit, a crash loop that stopped the restarts, the Docker engine lost, a
//! failed scheduled backup, a failed certificate order) POSTed to a webhook as they
//! happen, so that nobody has to watch `webui status` to learn of them; "answers
//! again" when Open WebUI is back after an outage; and "ready at URL" once per start
//! (a restart is seen, and a wrong URL at once).
//!
//! The file holds the URL (webhook URLs are secrets, hence a file, like the tokens).
//! The body is JSON with the message under `text` (Slack, Mattermost, Google Chat),
//! `content` (Discord) and `message`, beside `project`, `host` and `at`.
//!
//! Sending never holds up the supervisor: each message is its own task with a 10 s
//! bound; a failure is logged and dropped. The same message is sent at most once in
//! 10 minutes, and at most 20 messages in 10 minutes in all, so a flapping container
//! cannot flood a channel.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Uri;
use http_body_util::Full;

use crate::error::UserError;

/// How long the same message is not sent again, and the window of [`BURST`].
const QUIET: Duration = Duration::from_secs(600);
/// At most this many messages per [`QUIET`] window.
const BURST: usize = 20;
const TIMEOUT: Duration = Duration::from_secs(10);

static NOTIFIER: OnceLock<Notifier> = OnceLock::new();

pub struct Notifier {
    url: Uri,
    project: String,
    host: String,
    /// When each message was last sent, and the send times in the window.
    sent: Mutex<(HashMap<String, Instant>, Vec<Instant>)>,
}

/// Reads and checks `--notify-url-file`: its first non-empty line, an http(s) URL.
fn read_url(path: &Path) -> anyhow::Result<Uri> {
    let hint = "put the webhook's URL (https://...) on the file's first line, e.g. `echo https://hooks.slack.com/services/... > /etc/webui/notify.url; chmod 600 /etc/webui/notify.url`";
    let text = std::fs::read_to_string(path).map_err(|e| {
        UserError::new(format!(
            "cannot read --notify-url-file {}: {e}",
            path.display()
        ))
        .hint(hint)
    })?;
    let line = text.lines().map(str::trim).find(|l| !l.is_empty());
    let url = line
        .and_then(|l| l.parse::<Uri>().ok())
        .filter(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
    url.ok_or_else(|| {
        UserError::new(format!(
            "--notify-url-file {} holds no http(s) URL",
            path.display()
        ))
        .hint(hint)
        .into()
    })
}

/// `--notify-url-file`, when given: reads and checks the URL, sends messages there
/// from now on, and returns the webhook's host (what may be printed of it).
pub fn setup(url_file: Option<&Path>, project: &str) -> anyhow::Result<Option<String>> {
    let Some(file) = url_file else {
        return Ok(None);
    };
    let url = read_url(file)?;
    let host = host_of(&url);
    install(url, project);
    Ok(Some(host))
}

/// Where messages go from now on (once per process).
fn install(url: Uri, project: &str) {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "this host".into());
    let _ = NOTIFIER.set(Notifier {
        url,
        project: project.to_string(),
        host,
        sent: Mutex::new((HashMap::new(), Vec::new())),
    });
}

/// Sends `message` if a webhook is set, in the background.
pub fn send(message: &str) {
    let Some(n) = NOTIFIER.get() else { return };
    if !n.admit(message, Instant::now()) {
        tracing::debug!("not notifying again so soon: {message}");
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let body = n.body(message);
    let url = n.url.clone();
    runtime.spawn(async move {
        match tokio::time::timeout(TIMEOUT, post(url.clone(), body)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("the notification to {} failed: {e:#}", host_of(&url)),
            Err(_) => tracing::warn!("the notification to {} timed out", host_of(&url)),
        }
    });
}

/// The webhook's host, for messages (its path may hold its secret).
fn host_of(url: &Uri) -> String {
    url.host().unwrap_or("?").to_string()
}

impl Notifier {
    /// Whether `message` may go now (and if so, counts it).
    fn admit(&self, message: &str, now: Instant) -> bool {
        let mut guard = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        let (last, window) = &mut *guard;
        if last
            .get(message)
            .is_some_and(|at| now.duration_since(*at) < QUIET)
        {
            return false;
        }
        window.retain(|at| now.duration_since(*at) < QUIET);
        if window.len() >= BURST {
            return false;
        }
        window.push(now);
        last.retain(|_, at| now.duration_since(*at) < QUIET);
        last.insert(message.to_string(), now);
        true
    }

    fn body(&self, message: &str) -> Bytes {
        let text = format!("webui ({} on {}): {message}", self.project, self.host);
        let at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        Bytes::from(
            serde_json::json!({
                "text": text,
                "content": text,
                "message": message,
                "project": self.project,
                "host": self.host,
                "at": at,
            })
            .to_string(),
        )
    }
}

async fn post(url: Uri, body: Bytes) -> anyhow::Result<()> {
    let client = crate::web::client::<Full<Bytes>>()?;
    let req = http::Request::post(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::USER_AGENT, crate::web::USER_AGENT)
        .body(Full::new(body))?;
    let status = client.request(req).await?.status();
    if !status.is_success() {
        anyhow::bail!("it answered {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notifier() -> Notifier {
        Notifier {
            url: "http://127.0.0.1:1/hook".parse().unwrap(),
            project: "p".into(),
            host: "h".into(),
            sent: Mutex::new((HashMap::new(), Vec::new())),
        }
    }

    #[test]
    fn the_same_message_waits_and_a_flood_is_cut() {
        let n = notifier();
        let t0 = Instant::now();
        assert!(n.admit("a exited", t0));
        assert!(!n.admit("a exited", t0 + Duration::from_secs(60)));
        assert!(n.admit("b exited", t0 + Duration::from_secs(60)));
        assert!(n.admit("a exited", t0 + QUIET + Duration::from_secs(1)));
        let later = t0 + QUIET * 3;
        let admitted = (0..BURST + 5)
            .filter(|i| n.admit(&format!("m{i}"), later))
            .count();
        assert_eq!(admitted, BURST);
        assert!(n.admit("after the window", later + QUIET + Duration::from_secs(1)));
    }

    #[test]
    fn the_body_carries_the_message_for_common_webhooks() {
        let v: serde_json::Value = serde_json::from_slice(&notifier().body("x crashed")).unwrap();
        assert_eq!(v["text"], "webui (p on h): x crashed");
        assert_eq!(v["content"], v["text"]);
        assert_eq!(
            (v["message"].as_str(), v["project"].as_str()),
            (Some("x crashed"), Some("p"))
        );
    }

    #[test]
    fn url_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("u");
        std::fs::write(&f, "\n  https://hooks.example.com/T/B/x  \n").unwrap();
        assert_eq!(
            read_url(&f).unwrap().to_string(),
            "https://hooks.example.com/T/B/x"
        );
        for bad in ["", "hooks.example.com/x", "ftp://a/b"] {
            std::fs::write(&f, bad).unwrap();
            let e = read_url(&f).unwrap_err();
            assert!(
                crate::error::render(&e).contains("holds no http(s) URL"),
                "{bad}"
            );
        }
        let e = read_url(&dir.path().join("missing")).unwrap_err();
        assert!(crate::error::render(&e).contains("cannot read --notify-url-file"));
    }
}
