//! Docker, through bollard: connect, pure container specs, pulls with progress,
//! idempotent ensure/adopt/recreate, health waiting, logs.
//!
//! - `connect`: find the engine (`DOCKER_HOST` or the unix socket), negotiate the API
//!   version, turn "not running", "permission denied" and "too old" into errors
//!   that say what to do.
//! - `spec`: settings -> network, volume and container create bodies. Pure; the
//!   names, labels, environment and spec hash are decided here and unit-tested.
//! - `gpu`: what the engine offers for `--gpu`, decided from `docker info`.
//! - `pull`: pulls with a progress bar per layer (plain lines when not on a
//!   terminal); errors inside the stream reported as what they are.
//! - `ensure`: inspects what exists, refuses or adopts what webui did not make, then
//!   creates, keeps or recreates; never deletes a volume.
//! - `events`: the project's container events, reconnecting when the engine restarts.
//! - `health`: the HTTP probe of Open WebUI's `/health` and the wait for it.
//! - `logs`: container logs, stdout/stderr demultiplexed, split into lines.
//! - `project`: what webui keeps about a project in the state dir (secret key, ...).
//! - `host`: small probes of the host itself (free ports, a host Ollama, LAN address).
//! - `backup`: backup archives of a project (data volume, secret, config, certificates)
//!   with a manifest of checksums, verified before anything is restored.
//! - `pin`: `webui up` keeps the running image unless told otherwise; `history.json`.
//! - `replicas`: `up --replicas N`: replica names and ports, the Postgres and Redis
//!   specs, the replicas' shared environment, the SQLite-accounts refusal.
//! - `swarm`: `up --swarm`: the stack as Swarm services (specs, converge, status,
//!   removal) and the proxy image made from this binary.
//! - `update`: a container's spec read back from its labels, and the swap steps of
//!   `webui update`.
//!
//! Architecture Invariant: this module does not know the proxy or ACME. `webui up`
//! wires them together through `route.rs`.

pub mod backup;
pub mod connect;
pub mod ensure;
pub mod events;
pub mod gpu;
pub mod health;
pub mod host;
pub mod logs;
pub mod pin;
pub mod project;
pub mod pull;
pub mod replicas;
pub mod spec;
pub mod swarm;
pub mod update;

pub use connect::connect;

/// The services webui runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    OpenWebui,
    Ollama,
    /// `up --replicas N` (N > 1) or a database moved by `migrate-db`.
    Postgres,
    /// `up --replicas N` (N > 1): websockets and shared state.
    Redis,
}

impl Role {
    /// The service name, also the unprefixed container and volume name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::OpenWebui => "open-webui",
            Role::Ollama => "ollama",
            Role::Postgres => "postgres",
            Role::Redis => "redis",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "open-webui" => Some(Role::OpenWebui),
            "ollama" => Some(Role::Ollama),
            "postgres" => Some(Role::Postgres),
            "redis" => Some(Role::Redis),
            _ => None,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// True when the engine answered 404 (no such container, image, volume, network).
pub fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// The message of an engine error without bollard's "Docker responded with status
/// code ..." wrapper.
pub fn engine_message(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        bollard::errors::Error::DockerStreamError { error } => error.clone(),
        other => other.to_string(),
    }
}
