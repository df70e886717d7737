//! The bearer token of a served Ollama API (`up --ollama-only`, `--ollama-domain`).
//!
//! One token per project, 32 random bytes in hex, in
//! `<state-dir>/projects/<project>/ollama_token` (mode 0600, written only through
//! `state::write_private`, never regenerated silently). `webui token rotate` replaces
//! the file atomically; the running proxy notices on the next request (the file's
//! inode, size and mtime are compared on each check, a `stat` call) and from then on
//! accepts only the new token. No restart, no control-socket round trip.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;

use crate::config::up::Project;
use crate::docker::project::ProjectState;
use crate::error::UserError;
use crate::state;

pub const FILE_NAME: &str = "ollama_token";

/// Where the project's token lives.
pub fn path(state_dir: &Path, project: &Project) -> PathBuf {
    ProjectState::new(state_dir, project).dir().join(FILE_NAME)
}

/// A new random token: 32 bytes from the OS, hex.
pub fn generate() -> anyhow::Result<String> {
    crate::docker::project::generate_secret()
}

/// Reads the token; `None` when there is none yet.
pub fn read(path: &Path) -> anyhow::Result<Option<String>> {
    if !path.exists() {
        return Ok(None);
    }
    let bytes = state::read_private(path)?;
    let text = String::from_utf8_lossy(&bytes).trim().to_string();
    if text.is_empty() {
        return Err(UserError::new(format!("{} is empty", path.display()))
            .hint("run `webui token rotate` to write a new token")
            .into());
    }
    Ok(Some(text))
}

/// The stored token, or a new one written with mode 0600. `true` when it was created
/// now (the caller prints it once).
pub fn load_or_create(path: &Path) -> anyhow::Result<(String, bool)> {
    if let Some(t) = read(path)? {
        return Ok((t, false));
    }
    if let Some(dir) = path.parent() {
        state::create_private_dir(dir)?;
    }
    let t = generate()?;
    state::write_private(path, t.as_bytes())?;
    Ok((t, true))
}

/// Replaces the token with a new one.
pub fn rotate(path: &Path) -> anyhow::Result<String> {
    if let Some(dir) = path.parent() {
        state::create_private_dir(dir)?;
    }
    let t = generate()?;
    state::write_private(path, t.as_bytes())
        .with_context(|| format!("cannot write the new token to {}", path.display()))?;
    Ok(t)
}

/// Equal in constant time (for equal lengths; the length is not secret).
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token as the proxy checks it, reloaded when the file is replaced.
#[derive(Debug)]
pub struct TokenCheck {
    path: PathBuf,
    cached: Mutex<Cached>,
}

#[derive(Debug, Default)]
struct Cached {
    stamp: Option<(u64, u64, i64, i64)>,
    token: Option<String>,
}

fn stamp(path: &Path) -> Option<(u64, u64, i64, i64)> {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

impl TokenCheck {
    pub fn new(path: PathBuf) -> Self {
        let c = Self {
            path,
            cached: Mutex::new(Cached::default()),
        };
        c.current();
        c
    }

    /// The token in force: the file's content, re-read when the file changed. A file
    /// that cannot be read (removed, wrong mode) accepts no token at all.
    fn current(&self) -> Option<String> {
        let now = stamp(&self.path);
        let mut c = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if c.stamp != now || now.is_none() {
            c.token = match read(&self.path) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "cannot read the Ollama API token; refusing every request until it is readable");
                    None
                }
            };
            c.stamp = now;
        }
        c.token.clone()
    }

    /// Whether `presented` (the part after `Bearer `) is the token in force.
    pub fn accepts(&self, presented: &str) -> bool {
        self.current()
            .is_some_and(|t| same(t.as_bytes(), presented.trim().as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_once_private_and_rotation_is_seen_by_the_check() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("projects/x").join(FILE_NAME);
        let (t1, created) = load_or_create(&p).unwrap();
        assert!(created);
        assert_eq!(t1.len(), 64);
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (again, created) = load_or_create(&p).unwrap();
        assert_eq!((again.as_str(), created), (t1.as_str(), false));

        let check = TokenCheck::new(p.clone());
        assert!(check.accepts(&t1));
        assert!(!check.accepts("wrong"));
        assert!(!check.accepts(""));
        let t2 = rotate(&p).unwrap();
        assert_ne!(t1, t2);
        assert!(check.accepts(&t2));
        assert!(!check.accepts(&t1));
    }

    #[test]
    fn constant_time_compare() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
    }
}
