//! The running `webui`'s control socket and single-instance lock.
//!
//! - [`InstanceLock`]: an exclusive `flock` on `<state-dir>/run/<project>.lock`, with
//!   the holder's pid written inside, so a second `webui up` on the same state dir
//!   says who runs and exits 1 instead of fighting over ports and containers. The
//!   kernel drops the lock when the process dies, even by SIGKILL.
//! - [`serve`] / [`request`]: a Unix socket `<state-dir>/run/<project>.sock` (mode
//!   0600, so only the owner — root for the service — can talk to it) speaking one
//!   line in, one JSON line out: `status` returns the live state, `renew` asks for an
//!   immediate certificate order, `updating` / `updated` bracket `webui update`'s
//!   container swap (the "updating" page is shown and nothing is restarted
//!   meanwhile). Commands such as `webui status` use it when a supervisor runs and
//!   fall back to Docker alone when none does.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::UserError;
use crate::state;

/// Where the lock and the socket of a project live.
pub fn run_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("run")
}

pub fn lock_path(state_dir: &Path, project: &str) -> PathBuf {
    run_dir(state_dir).join(format!("{project}.lock"))
}

/// The lock and socket name `webui proxy` uses: it has no Docker project, and no
/// `--project` can be named so (names start with a letter or digit).
pub const PROXY_PROJECT: &str = "_proxy";

pub fn socket_path(state_dir: &Path, project: &str) -> PathBuf {
    run_dir(state_dir).join(format!("{project}.sock"))
}

/// Held for as long as this process supervises the project.
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
}

impl InstanceLock {
    /// Takes the lock or says which process holds it.
    pub fn acquire(state_dir: &Path, project: &str) -> anyhow::Result<Self> {
        state::create_private_dir(&run_dir(state_dir))?;
        let path = lock_path(state_dir, project);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                let who = if pid.is_empty() {
                    "another process".to_string()
                } else {
                    format!("pid {pid}")
                };
                return Err(UserError::new(format!(
                    "webui is already running for project `{project}` with this state directory ({who})"
                ))
                .hint("stop it first (Ctrl-C, `kill <pid>`, or `systemctl stop webui`), or use another --project / --state-dir")
                .into());
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{}", std::process::id())?;
        file.flush()?;
        Ok(Self { _file: file })
    }
}

/// Answers one request line.
pub type Handler = Arc<dyn Fn(&str) -> serde_json::Value + Send + Sync>;

/// Serves the control socket until `shutdown`. A stale socket file left by a killed
/// process is replaced (the instance lock proves nobody else serves it).
pub fn serve(
    path: &Path,
    handler: Handler,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)
        .with_context(|| format!("cannot create control socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", path.display()))?;
    let path = path.to_path_buf();
    tracker.spawn(async move {
        loop {
            let conn = tokio::select! {
                _ = shutdown.cancelled() => break,
                c = listener.accept() => c,
            };
            let Ok((stream, _)) = conn else { continue };
            let handler = handler.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                if let Ok(Ok(Some(line))) =
                    tokio::time::timeout(Duration::from_secs(5), lines.next_line()).await
                {
                    let answer = handler(line.trim());
                    let _ = write.write_all(format!("{answer}\n").as_bytes()).await;
                }
            });
        }
        let _ = std::fs::remove_file(&path);
    });
    Ok(())
}

/// Asks the running supervisor; None when nothing answers (not running).
pub async fn request(path: &Path, line: &str) -> Option<serde_json::Value> {
    let fut = async {
        let mut stream = UnixStream::connect(path).await.ok()?;
        stream
            .write_all(format!("{line}\n").as_bytes())
            .await
            .ok()?;
        let mut lines = BufReader::new(stream).lines();
        let answer = lines.next_line().await.ok()??;
        serde_json::from_str(&answer).ok()
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .ok()?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let _first = InstanceLock::acquire(dir.path(), "p").unwrap();
        let e = InstanceLock::acquire(dir.path(), "p").unwrap_err();
        let text = crate::error::render(&e);
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        assert_eq!(crate::error::exit_code(&e), 1);
        assert!(
            InstanceLock::acquire(dir.path(), "other").is_ok(),
            "projects are independent"
        );
    }

    #[tokio::test]
    async fn socket_answers_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(run_dir(dir.path())).unwrap();
        let path = socket_path(dir.path(), "p");
        let token = CancellationToken::new();
        serve(
            &path,
            Arc::new(|line| serde_json::json!({ "echo": line })),
            token.clone(),
            &TaskTracker::new(),
        )
        .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let v = request(&path, "status").await.unwrap();
        assert_eq!(v["echo"], "status");
        token.cancel();
        assert!(
            request(&dir.path().join("nothing.sock"), "status")
                .await
                .is_none()
        );
    }
}
