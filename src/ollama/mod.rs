//! Serving an Ollama API to other machines (`webui up --ollama-only`, `--ollama-domain`)
//! and using one from the UI server (`--ollama-url https://... --ollama-token`).
//!
//! - `token`: the bearer token file and the proxy's check of it (rotation without a
//!   restart).
//! - `egress`: the forwarder on the UI server that adds the token to Open WebUI's
//!   requests (why not Open WebUI's own key setting: see its module doc).
//! - `exposure`: whether a native Ollama also listens beyond loopback.
//!
//! The gate itself (host routing, 401, CORS) is `proxy::auth`.

pub mod egress;
pub mod serve;
pub mod token;

use crate::docker::host::{self, ListenScope};

/// The WARN line when the Ollama on `port` listens beyond loopback, else `None`.
pub fn exposure_warning(port: u16) -> Option<String> {
    match host::listen_scope(port) {
        Some(ListenScope::LoopbackOnly) | None => None,
        Some(_) => Some(format!(
            "the Ollama on port {port} also listens beyond loopback, so anyone who reaches this host can use it without the token; fix: set OLLAMA_HOST=127.0.0.1:{port} for it (e.g. `systemctl edit ollama`, Environment=\"OLLAMA_HOST=127.0.0.1:{port}\", then `systemctl restart ollama`)"
        )),
    }
}
