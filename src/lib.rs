//! `webui`: put Open WebUI on a server, properly, with one command.
//!
//! # Layout
//! - [`cli`]: clap types only.
//! - [`config`]: the TOML file, value parsers, and the one pure resolver from flags +
//!   env + file to settings.
//! - [`commands`]: one module per subcommand; orchestration and output.
//! - [`docker`]: the containers through bollard: connect, specs, pull, ensure, health,
//!   logs. It does not know the proxy; `commands::up` wires them through [`route`].
//! - [`proxy`]: the HTTPS + WebSocket reverse proxy.
//! - [`tls`]: the hot-swappable certificate store, PEM loading, the local CA.
//! - [`route`], [`challenge`]: the small shared types through which the proxy is told
//!   where to forward and what to answer to ACME challenges.
//! - [`state`]: the state directory and how secrets are written.
//! - [`output`], [`error`], [`signal`]: printing, errors and exit codes, shutdown.
//! - [`supervisor`]: tasks and shutdown of `webui up`, container restarts, health and
//!   routing; [`control`]: its instance lock and control socket.
//!
//! See `docs/ARCHITECTURE.md` for the code map and its invariants.

pub mod acme;
pub mod admin;
pub mod challenge;
pub mod cli;
pub mod commands;
pub mod config;
pub mod control;
pub mod docker;
pub mod error;
pub mod export;
#[doc(hidden)]
pub mod fuzzing;
pub mod notify;
pub mod ollama;
pub mod output;
pub mod proxy;
pub mod route;
pub mod signal;
pub mod state;
pub mod supervisor;
pub mod tls;
pub mod web;

use tracing_subscriber::EnvFilter;

/// `webui --version`: version, git commit, build date.
pub const VERSION_LONG: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("WEBUI_GIT_COMMIT"),
    ", built ",
    env!("WEBUI_BUILD_DATE"),
    ")"
);

/// Runs a parsed command line; returns the process exit code.
pub fn run(cli: cli::Cli) -> anyhow::Result<u8> {
    init_tracing(&cli.global);
    raise_open_file_limit();
    let printer = output::Printer::with_color(cli.global.quiet, cli.global.color);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(commands::run(cli, printer))
}

/// Every proxied connection costs one descriptor and a websocket two (client and
/// upstream), so the common soft limit of 1,024 caps a busy site, or a slowloris, at a
/// few hundred clients. Raise the soft limit to the hard one, as Go's runtime does for
/// Caddy; systemd's unit default hard limit is 524,288. Failure only costs headroom.
fn raise_open_file_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let (Some(current), hard) = (limit.current, limit.maximum) else {
        return; // already unlimited
    };
    let wanted = hard.unwrap_or(u64::MAX).min(1 << 20);
    if wanted <= current {
        return;
    }
    let raised = rustix::process::Rlimit {
        current: Some(wanted),
        maximum: hard,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => tracing::debug!(from = current, to = wanted, "raised the open-file limit"),
        Err(e) => tracing::debug!(%e, current, "could not raise the open-file limit"),
    }
}

fn init_tracing(global: &cli::GlobalArgs) {
    let default = match (global.quiet, global.verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    // RUST_LOG wins when set, for targeted debugging (e.g. RUST_LOG=webui::access=off).
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{default},hyper=warn,rustls=error,bollard=warn,h2=warn"
        ))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(output::stderr_color(global.color))
        .with_writer(std::io::stderr);
    let _ = match global.log_format {
        cli::LogFormat::Text => builder.try_init(),
        cli::LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
