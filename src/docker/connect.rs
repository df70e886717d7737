//! Finding and greeting the Docker engine.
//!
//! `DOCKER_HOST` is honoured for `unix://` and `tcp://` (plain, no TLS); otherwise the
//! default socket `/var/run/docker.sock`. The API version is negotiated down to the
//! engine's, and an engine older than [`MIN_API`] is refused before anything is
//! created. Each way of failing becomes a [`UserError`] with a hint.

use std::time::Duration;

use bollard::{API_DEFAULT_VERSION, Docker};

use crate::error::UserError;

pub const DEFAULT_SOCKET: &str = "unix:///var/run/docker.sock";

/// API 1.40 (Docker 19.03) is the first with `DeviceRequests` (GPUs).
pub const MIN_API: (usize, usize) = (1, 40);

/// bollard's per-request timeout, in seconds. It covers the response headers only,
/// so long pulls and followed logs are not cut off by it.
const REQUEST_TIMEOUT_SECS: u64 = 120;

/// How long the first request (version negotiation) may take.
const GREETING_TIMEOUT: Duration = Duration::from_secs(15);

const START_HINT: &str = "start it with `systemctl start docker` (or `service docker start`); if Docker is not installed, install.sh installs it";
const PERMISSION_HINT: &str = "run webui as root (sudo), or add your user to the docker group (`sudo usermod -aG docker $USER`, then log in again)";

/// Connects to the engine named by `DOCKER_HOST` (or the default socket) and
/// negotiates the API version.
pub async fn connect() -> anyhow::Result<Docker> {
    let host = std::env::var("DOCKER_HOST")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty());
    let from_env = host.is_some();
    let host = host.unwrap_or_else(|| DEFAULT_SOCKET.to_string());
    connect_to(&host, from_env).await
}

/// Connects to `host` (`unix://PATH` or `tcp://HOST:PORT`).
pub async fn connect_to(host: &str, from_env: bool) -> anyhow::Result<Docker> {
    let origin = if from_env {
        format!("{host} (from DOCKER_HOST)")
    } else {
        host.to_string()
    };
    let docker = if host.starts_with("unix://") {
        Docker::connect_with_unix(host, REQUEST_TIMEOUT_SECS, API_DEFAULT_VERSION)
    } else if host.starts_with("tcp://") || host.starts_with("http://") {
        if std::env::var_os("DOCKER_TLS_VERIFY").is_some_and(|v| !v.is_empty()) {
            return Err(UserError::new(format!(
                "DOCKER_TLS_VERIFY is set for {origin}, but webui talks to a TCP engine without TLS only"
            ))
            .hint("run webui on the Docker host itself (unix socket), or reach the engine through an SSH tunnel to its socket")
            .into());
        }
        Docker::connect_with_http(host, REQUEST_TIMEOUT_SECS, API_DEFAULT_VERSION)
    } else {
        return Err(UserError::new(format!(
            "DOCKER_HOST `{host}` is not supported; webui speaks to unix:// sockets and plain tcp:// engines"
        ))
        .hint("unset DOCKER_HOST to use /var/run/docker.sock")
        .into());
    }
    .map_err(|e| classify(e, &origin))?;

    let docker = match tokio::time::timeout(GREETING_TIMEOUT, docker.negotiate_version()).await {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => return Err(classify(e, &origin)),
        Err(_) => {
            return Err(UserError::new(format!(
                "the Docker engine at {origin} did not answer within {}s",
                GREETING_TIMEOUT.as_secs()
            ))
            .hint("check it with `systemctl status docker` and `docker info`")
            .into());
        }
    };
    let v = docker.client_version();
    check_version((v.major_version, v.minor_version))?;
    Ok(docker)
}

/// Refuses an engine whose API is older than [`MIN_API`].
pub fn check_version(api: (usize, usize)) -> anyhow::Result<()> {
    if api < MIN_API {
        return Err(UserError::new(format!(
            "the Docker engine speaks API {}.{}; webui needs at least {}.{} (Docker 19.03)",
            api.0, api.1, MIN_API.0, MIN_API.1
        ))
        .hint("upgrade Docker (install.sh installs a current one)")
        .into());
    }
    Ok(())
}

/// What went wrong reaching the engine, in the user's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    NotRunning,
    PermissionDenied,
    TimedOut,
    Other,
}

/// Finds the cause of a connection error: walks the error's sources for an I/O error.
pub fn failure_of(e: &bollard::errors::Error) -> Failure {
    use bollard::errors::Error as B;
    match e {
        B::SocketNotFoundError(_) => return Failure::NotRunning,
        B::RequestTimeoutError => return Failure::TimedOut,
        _ => {}
    }
    // `IOError` is a transparent wrapper: its io::Error is not in the source chain.
    let mut cur: Option<&(dyn std::error::Error + 'static)> = match e {
        B::IOError { err } => Some(err),
        other => Some(other),
    };
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::PermissionDenied => Failure::PermissionDenied,
                std::io::ErrorKind::ConnectionRefused
                | std::io::ErrorKind::NotFound
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::AddrNotAvailable => Failure::NotRunning,
                std::io::ErrorKind::TimedOut => Failure::TimedOut,
                _ => Failure::Other,
            };
        }
        cur = err.source();
    }
    // hyper-util hides the io::Error of a failed connect behind its own type in some
    // versions; its text still says what happened.
    let text = format!("{e:?}").to_ascii_lowercase();
    if text.contains("permission denied") {
        Failure::PermissionDenied
    } else if text.contains("connection refused") || text.contains("no such file") {
        Failure::NotRunning
    } else {
        Failure::Other
    }
}

fn classify(e: bollard::errors::Error, origin: &str) -> anyhow::Error {
    match failure_of(&e) {
        Failure::NotRunning => UserError::new(format!(
            "cannot reach the Docker engine at {origin}: it is not running or not installed"
        ))
        .hint(START_HINT)
        .into(),
        Failure::PermissionDenied => {
            UserError::new(format!("permission denied on the Docker socket {origin}"))
                .hint(PERMISSION_HINT)
                .into()
        }
        Failure::TimedOut => UserError::new(format!(
            "the Docker engine at {origin} did not answer in time"
        ))
        .hint("check it with `systemctl status docker` and `docker info`")
        .into(),
        Failure::Other => {
            anyhow::Error::new(e).context(format!("cannot talk to the Docker engine at {origin}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_engines_are_refused() {
        assert!(check_version((1, 41)).is_ok());
        assert!(check_version((1, 53)).is_ok());
        let e = check_version((1, 39)).unwrap_err();
        assert_eq!(crate::error::exit_code(&e), 1);
        assert!(crate::error::render(&e).contains("upgrade Docker"));
    }

    #[test]
    fn failures_are_found_in_the_source_chain() {
        let e = bollard::errors::Error::SocketNotFoundError("/x.sock".into());
        assert_eq!(failure_of(&e), Failure::NotRunning);
        let e = bollard::errors::Error::IOError {
            err: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        assert_eq!(failure_of(&e), Failure::PermissionDenied);
        let e = bollard::errors::Error::IOError {
            err: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        assert_eq!(failure_of(&e), Failure::NotRunning);
    }

    #[tokio::test]
    async fn missing_socket_is_not_running_with_hint() {
        let e = connect_to("unix:///nonexistent/docker.sock", true)
            .await
            .unwrap_err();
        assert_eq!(crate::error::exit_code(&e), 1);
        let text = crate::error::render(&e);
        assert!(
            text.contains("not running") && text.contains("systemctl start docker"),
            "{text}"
        );
        assert!(text.contains("DOCKER_HOST"), "{text}");
    }

    #[tokio::test]
    async fn unsupported_hosts_are_refused() {
        let e = connect_to("ssh://me@box", true).await.unwrap_err();
        assert!(crate::error::render(&e).contains("not supported"));
    }
}
