//! Shutdown signals: SIGINT and SIGTERM both mean "stop accepting, drain, exit 0".

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first SIGINT or SIGTERM.
pub fn cancel_on_signal(token: CancellationToken) -> anyhow::Result<()> {
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
            _ = token.cancelled() => return,
        };
        tracing::info!("{name} received: finishing open requests, then exiting");
        token.cancel();
    });
    Ok(())
}
