//! The state directory: its layout, and how secrets are written into it.
//!
//! Architecture Invariant: every secret (keys, tokens, `WEBUI_SECRET_KEY`) is written
//! through [`write_private`], which creates the file with mode 0600 before any byte
//! lands in it and replaces the old file atomically. Nothing here ever deletes data.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::error::UserError;

/// The state directory and the paths inside it.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// Opens the state directory, creating it (mode 0700) if needed, and checks that it
    /// is writable before anything is started.
    pub fn open(root: &Path) -> anyhow::Result<Self> {
        create_private_dir(root)?;
        let probe = root.join(".write-test");
        fs::write(&probe, b"")
            .and_then(|()| fs::remove_file(&probe))
            .map_err(|e| {
                UserError::new(format!(
                    "state directory {} is not writable: {e}",
                    root.display()
                ))
                .hint("run as root, or pick another directory with --state-dir")
            })?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The local CA that signs self-signed leaf certificates.
    pub fn ca_dir(&self) -> PathBuf {
        self.root.join("ca")
    }
}

/// Creates a directory readable only by its owner (0700), with its parents.
pub fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(dir).map_err(|e| {
        UserError::new(format!("cannot create directory {}: {e}", dir.display()))
            .hint("run as root, or pick another directory with --state-dir")
    })?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot restrict permissions of {}", dir.display()))
}

/// Writes a secret: mode 0600 from the first byte, fsync, atomic rename over the old file.
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("secret")
    ));
    let write = || -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().with_context(|| format!("cannot write {}", path.display()))
}

/// Reads a secret, refusing one that others can read: a leaked key must be noticed,
/// not silently used.
pub fn read_private(path: &Path) -> anyhow::Result<Vec<u8>> {
    let meta = fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(UserError::new(format!(
            "{} has mode {mode:o}; secrets must be readable by their owner only",
            path.display()
        ))
        .hint(format!("chmod 600 {}", path.display()))
        .into());
    }
    fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_0600_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(&dir.path().join("s")).unwrap();
        let mode = fs::metadata(state.root()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let p = state.root().join("key.pem");
        write_private(&p, b"one").unwrap();
        write_private(&p, b"two").unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(read_private(&p).unwrap(), b"two");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_private(&p).unwrap_err();
        assert!(crate::error::render(&e).contains("chmod 600"));
    }
}
