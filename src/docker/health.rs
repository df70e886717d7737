//! Is Open WebUI up? Its own `/health` (`{"status": true}`) polled on loopback, not
//! Docker's health state (PITFALLS 17). [`wait`] shows a spinner with the elapsed
//! time and the container's latest log line, and gives up early only when the
//! container stopped or keeps restarting; a slow first start (migrations, model
//! downloads) is waited for up to the limit and never restarted.

use std::time::{Duration, Instant};

use bollard::Docker;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;

use super::logs;
use crate::error::UserError;
use crate::output::Printer;

/// GET `url` (plain http, IP or name) with an overall `timeout`; the body is capped
/// at 1 MiB.
pub async fn http_get(url: &str, timeout: Duration) -> anyhow::Result<(StatusCode, Bytes)> {
    tokio::time::timeout(timeout, get(url))
        .await
        .map_err(|_| anyhow::anyhow!("no answer from {url} within {timeout:?}"))?
}

async fn get(url: &str) -> anyhow::Result<(StatusCode, Bytes)> {
    let uri: http::Uri = url.parse()?;
    let host = uri
        .host()
        .ok_or_else(|| anyhow::anyhow!("{url} has no host"))?
        .trim_matches(['[', ']'])
        .to_string();
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or(host);
    let req = http::Request::get(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
        .header(http::header::HOST, authority)
        .header(
            http::header::USER_AGENT,
            concat!("webui/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let body = Limited::new(resp.into_body(), 1 << 20)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the body of {url}: {e}"))?
        .to_bytes();
    Ok((status, body))
}

/// What `/health` said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Healthy,
    /// It answered, but not `{"status": true}` with 200.
    Unhealthy(String),
    /// No answer at all.
    Unreachable(String),
}

impl Health {
    pub fn as_str(&self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Unhealthy(_) => "unhealthy",
            Health::Unreachable(_) => "unreachable",
        }
    }

    /// Why it is not healthy.
    pub fn detail(&self) -> Option<&str> {
        match self {
            Health::Healthy => None,
            Health::Unhealthy(d) | Health::Unreachable(d) => Some(d),
        }
    }
}

/// Judges a `/health` answer.
pub fn judge(status: StatusCode, body: &[u8]) -> Health {
    let ok = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("status").and_then(|s| s.as_bool()))
        == Some(true);
    if status == StatusCode::OK && ok {
        Health::Healthy
    } else {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        Health::Unhealthy(format!("HTTP {}: {}", status.as_u16(), text.trim()))
    }
}

/// Probes `<upstream>/health` once; `upstream` is like `http://127.0.0.1:3000`.
pub async fn probe(upstream: &str) -> Health {
    let url = format!("{}/health", upstream.trim_end_matches('/'));
    match http_get(&url, Duration::from_secs(5)).await {
        Ok((status, body)) => judge(status, &body),
        Err(e) => Health::Unreachable(format!("{e:#}")),
    }
}

/// Probes Ollama (which has no `/health`): `<upstream>/api/version` answering 200.
pub async fn probe_ollama(upstream: &str) -> Health {
    let url = format!("{}/api/version", upstream.trim_end_matches('/'));
    match http_get(&url, Duration::from_secs(5)).await {
        Ok((StatusCode::OK, _)) => Health::Healthy,
        Ok((status, _)) => Health::Unhealthy(format!("HTTP {} from /api/version", status.as_u16())),
        Err(e) => Health::Unreachable(format!("{e:#}")),
    }
}

/// Human elapsed time: `45s`, `3m 07s`, `1h 02m`.
pub fn elapsed_text(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// Why a container will not become healthy by waiting, from two inspections.
pub fn gave_up(
    running: bool,
    restarting: bool,
    exit_code: Option<i64>,
    restarts_since_start: i64,
) -> Option<String> {
    if restarts_since_start >= 3 {
        return Some(format!(
            "keeps crashing: restarted {restarts_since_start} times while webui waited for it"
        ));
    }
    if !running && !restarting {
        return Some(match exit_code {
            Some(c) => format!("stopped with exit code {c}"),
            None => "is not running".to_string(),
        });
    }
    None
}

/// Waits until `<upstream>/health` is healthy, up to `limit`. `on_tick` is called
/// about once a second with the elapsed time (for the starting page).
pub async fn wait(
    docker: &Docker,
    container: &str,
    upstream: &str,
    limit: Duration,
    printer: &Printer,
    on_tick: &mut (dyn FnMut(Duration) + Send),
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let restarts_at_start = restart_count(docker, container).await.unwrap_or(0);
    let spinner = printer.spinner();
    if spinner.is_none() {
        printer.line(format!(
            "waiting for {container} to answer on {upstream}/health"
        ));
    }
    let mut last_line = String::new();
    let mut last_plain = Instant::now();
    let mut tick = 0u64;
    loop {
        let elapsed = start.elapsed();
        if probe(upstream).await == Health::Healthy {
            if let Some(pb) = &spinner {
                pb.finish_and_clear();
            }
            return Ok(start.elapsed());
        }
        if elapsed >= limit {
            if let Some(pb) = &spinner {
                pb.finish_and_clear();
            }
            let tail = logs::tail_lines(docker, container, 10)
                .await
                .unwrap_or_default();
            return Err(UserError::new(format!(
                "{container} did not become healthy within {}{}",
                elapsed_text(limit),
                last_lines_text(&tail)
            ))
            .hint(
                "see its logs with `webui logs open-webui`; a first start can take long, allow more with --health-timeout 1h (the container keeps running)",
            )
            .into());
        }
        // Every ~2 s: the container's state and latest log line.
        if tick.is_multiple_of(4) {
            if let Ok(state) = docker.inspect_container(container, None).await {
                let s = state.state.clone().unwrap_or_default();
                let restarts = state.restart_count.unwrap_or(0) - restarts_at_start;
                if let Some(why) = gave_up(
                    s.running.unwrap_or(false),
                    s.restarting.unwrap_or(false),
                    s.exit_code,
                    restarts,
                ) {
                    if let Some(pb) = &spinner {
                        pb.finish_and_clear();
                    }
                    let tail = logs::tail_lines(docker, container, 10)
                        .await
                        .unwrap_or_default();
                    return Err(UserError::new(format!(
                        "{container} {why}{}",
                        last_lines_text(&tail)
                    ))
                    .hint("see `webui logs open-webui`; fix the cause and run `webui up` again")
                    .into());
                }
            }
            if let Ok(lines) = logs::tail_lines(docker, container, 1).await
                && let Some(l) = lines.last()
            {
                last_line = l.clone();
            }
        }
        let shown: String = last_line.chars().take(100).collect();
        if let Some(pb) = &spinner {
            pb.set_message(format!(
                "waiting for Open WebUI to become healthy ({}) | {shown}",
                elapsed_text(elapsed)
            ));
        } else if last_plain.elapsed() >= Duration::from_secs(30) {
            last_plain = Instant::now();
            printer.line(format!(
                "still waiting for {container} ({}): {shown}",
                elapsed_text(elapsed)
            ));
        }
        if tick.is_multiple_of(2) {
            on_tick(elapsed);
        }
        tick += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn last_lines_text(lines: &[String]) -> String {
    if lines.is_empty() {
        String::new()
    } else {
        format!("; its last log lines:\n    {}", lines.join("\n    "))
    }
}

async fn restart_count(docker: &Docker, container: &str) -> anyhow::Result<i64> {
    Ok(docker
        .inspect_container(container, None)
        .await?
        .restart_count
        .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_bodies() {
        assert_eq!(
            judge(StatusCode::OK, br#"{"status":true}"#),
            Health::Healthy
        );
        assert_eq!(
            judge(StatusCode::OK, br#"{"status": true, "version": "v1"}"#),
            Health::Healthy
        );
        assert!(matches!(
            judge(StatusCode::OK, br#"{"status":false}"#),
            Health::Unhealthy(_)
        ));
        assert!(matches!(
            judge(StatusCode::SERVICE_UNAVAILABLE, br#"{"status":true}"#),
            Health::Unhealthy(_)
        ));
        assert!(matches!(
            judge(StatusCode::OK, b"<html>"),
            Health::Unhealthy(_)
        ));
    }

    #[test]
    fn giving_up() {
        assert_eq!(gave_up(true, false, None, 0), None);
        assert_eq!(
            gave_up(false, true, Some(1), 1),
            None,
            "a restart is waited for"
        );
        assert!(
            gave_up(false, false, Some(1), 0)
                .unwrap()
                .contains("exit code 1")
        );
        assert!(gave_up(true, false, None, 3).unwrap().contains("crashing"));
    }

    #[test]
    fn elapsed() {
        assert_eq!(elapsed_text(Duration::from_secs(5)), "5s");
        assert_eq!(elapsed_text(Duration::from_secs(187)), "3m 07s");
        assert_eq!(elapsed_text(Duration::from_secs(3720)), "1h 02m");
    }

    #[tokio::test]
    async fn probe_unreachable() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        assert!(matches!(
            probe(&format!("http://127.0.0.1:{port}")).await,
            Health::Unreachable(_)
        ));
    }
}
