//! What webui keeps about one project in the state directory.
//!
//! ```text
//! <state-dir>/projects/<project>/     mode 0700; <project> is `default` without --project
//!     secret_key        WEBUI_SECRET_KEY, one line, mode 0600; generated once (64 hex
//!                       digits from 32 random bytes), or taken over from an existing
//!                       container; never regenerated while it exists
//!     adopted           volumes and networks taken over with --adopt, one per line
//!                       (Docker cannot relabel them, so this is how webui knows)
//!     persistent.json   the PersistentConfig values (WEBUI_URL, OLLAMA_BASE_URL, OpenAI
//!                       URL, key hash) Open WebUI was last started with
//!     run.json          the running `webui up`: pid, listeners, upstream, remote Ollama; removed on exit
//!     postgres_password the Postgres password of `up --replicas` (and `migrate-db`), one
//!                       line, mode 0600; generated once, never regenerated
//!     database.json     written by `webui migrate-db`: {"engine": "postgres", "image": ...};
//!                       `up` then runs Open WebUI on the project's Postgres
//! ```
//!
//! Nothing here deletes anything except [`ProjectState::purge`], which only
//! `webui down --purge-data --yes` calls.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::config::up::Project;
use crate::error::UserError;
use crate::state::{create_private_dir, read_private, write_private};

/// Where a secret key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretOrigin {
    /// Read from `secret_key`.
    Stored,
    /// Taken over from a running container (state dir new or moved) and stored.
    Recovered,
    /// Generated now and stored.
    Generated,
}

/// The running `webui up`, for `webui status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInfo {
    pub pid: u32,
    pub https: Vec<String>,
    pub http: Vec<String>,
    pub upstream: String,
    /// `webui up --behind-proxy`: no listener of webui's own; another web server
    /// fronts `upstream`.
    #[serde(default)]
    pub behind_proxy: bool,
    /// `--ollama-url` with a token: where webui's forwarder sends Open WebUI's Ollama
    /// requests, for `webui doctor` (the token is in `ollama_remote_token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_ollama: Option<RemoteOllama>,
}

/// The remote Ollama of a running `webui up --ollama-url … --ollama-token…`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteOllama {
    pub url: String,
    /// `--ollama-ca`, absolute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
}

/// `database.json` (its other fields are `webui migrate-db`'s).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RecordedDatabase {
    pub engine: String,
    #[serde(default)]
    pub image: Option<String>,
}

/// The state-dir directory of one project.
#[derive(Debug, Clone)]
pub struct ProjectState {
    dir: PathBuf,
}

impl ProjectState {
    pub fn new(state_dir: &Path, project: &Project) -> Self {
        Self {
            dir: state_dir.join("projects").join(project.key()),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn secret_path(&self) -> PathBuf {
        self.dir.join("secret_key")
    }

    fn ensure_dir(&self) -> anyhow::Result<()> {
        if let Some(parent) = self.dir.parent() {
            create_private_dir(parent)?;
        }
        create_private_dir(&self.dir)
    }

    /// The stored secret key, if there is one; a corrupt or world-readable file is an
    /// error, never silently replaced.
    pub fn stored_secret(&self) -> anyhow::Result<Option<String>> {
        let path = self.secret_path();
        if !path.exists() {
            return Ok(None);
        }
        let bytes = read_private(&path)?;
        let text = String::from_utf8(bytes).unwrap_or_default();
        let key = text.trim_end_matches(['\n', '\r']);
        if !valid_secret(key) {
            return Err(UserError::new(format!(
                "{} is corrupt: it must hold WEBUI_SECRET_KEY on one line",
                path.display()
            ))
            .hint("restore it from your backup; only if it is lost, delete the file to generate a new key (everyone is logged out and stored API keys cannot be decrypted)")
            .into());
        }
        Ok(Some(key.to_string()))
    }

    /// The project's `WEBUI_SECRET_KEY`: the stored one; else `from_container` (a
    /// running container's key, so moving the state dir logs nobody out); else a new
    /// one from 32 random bytes. A key not read from the file is written (0600).
    pub fn secret_key(
        &self,
        from_container: Option<&str>,
    ) -> anyhow::Result<(String, SecretOrigin)> {
        if let Some(k) = self.stored_secret()? {
            return Ok((k, SecretOrigin::Stored));
        }
        let (key, origin) = match from_container.filter(|k| valid_secret(k)) {
            Some(k) => (k.to_string(), SecretOrigin::Recovered),
            None => (generate_secret()?, SecretOrigin::Generated),
        };
        self.ensure_dir()?;
        write_private(&self.secret_path(), format!("{key}\n").as_bytes())?;
        Ok((key, origin))
    }

    pub fn postgres_password_path(&self) -> PathBuf {
        self.dir.join("postgres_password")
    }

    /// The project's Postgres password: the stored one, else 32 random bytes in hex,
    /// written once (0600). A corrupt or world-readable file is an error, never
    /// replaced: the database was initialised with it.
    pub fn postgres_password(&self) -> anyhow::Result<String> {
        let path = self.postgres_password_path();
        if path.exists() {
            let text = String::from_utf8(read_private(&path)?).unwrap_or_default();
            let pw = text.trim_end_matches(['\n', '\r']);
            if !valid_secret(pw) || !pw.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(UserError::new(format!(
                    "{} is corrupt: it must hold the Postgres password on one line",
                    path.display()
                ))
                .hint("restore it from your backup: the database in the postgres volume was initialised with it")
                .into());
            }
            return Ok(pw.to_string());
        }
        let pw = generate_secret()?;
        self.ensure_dir()?;
        write_private(&path, format!("{pw}\n").as_bytes())?;
        Ok(pw)
    }

    /// `database.json`, written by `webui migrate-db`: which database Open WebUI's data
    /// is in (`postgres` after a migration) and the Postgres image it was moved with.
    pub fn recorded_database(&self) -> Option<RecordedDatabase> {
        let text = fs::read_to_string(self.dir.join("database.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Names taken over with `--adopt`.
    pub fn adopted(&self) -> Vec<String> {
        fs::read_to_string(self.dir.join("adopted"))
            .map(|t| {
                t.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn record_adopted(&self, names: &[String]) -> anyhow::Result<()> {
        let mut all = self.adopted();
        let before = all.len();
        for n in names {
            if !all.contains(n) {
                all.push(n.clone());
            }
        }
        if all.len() == before {
            return Ok(());
        }
        self.ensure_dir()?;
        let path = self.dir.join("adopted");
        fs::write(&path, all.join("\n") + "\n")
            .with_context(|| format!("cannot write {}", path.display()))
    }

    pub fn persistent_values(&self) -> Option<BTreeMap<String, String>> {
        let text = fs::read_to_string(self.dir.join("persistent.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    pub fn record_persistent_values(&self, v: &BTreeMap<String, String>) -> anyhow::Result<()> {
        self.ensure_dir()?;
        let path = self.dir.join("persistent.json");
        // Values are public settings; the OpenAI key appears only as a hash.
        fs::write(&path, serde_json::to_string_pretty(v)?)
            .with_context(|| format!("cannot write {}", path.display()))
    }

    pub fn write_run(&self, info: &RunInfo) -> anyhow::Result<()> {
        self.ensure_dir()?;
        let path = self.dir.join("run.json");
        fs::write(&path, serde_json::to_string_pretty(info)?)
            .with_context(|| format!("cannot write {}", path.display()))
    }

    /// The `webui up` serving this project, if its process is still alive.
    pub fn run_info(&self) -> Option<RunInfo> {
        let text = fs::read_to_string(self.dir.join("run.json")).ok()?;
        let info: RunInfo = serde_json::from_str(&text).ok()?;
        Path::new(&format!("/proc/{}", info.pid))
            .exists()
            .then_some(info)
    }

    /// Removes run.json if it is ours.
    pub fn clear_run(&self) {
        let path = self.dir.join("run.json");
        let ours = fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str::<RunInfo>(&t).ok())
            .is_some_and(|i| i.pid == std::process::id());
        if ours {
            let _ = fs::remove_file(path);
        }
    }

    /// Deletes the project's directory: the secret key, adoption records, run info.
    pub fn purge(&self) -> anyhow::Result<()> {
        match fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot remove {}", self.dir.display())),
        }
    }
}

/// A usable `WEBUI_SECRET_KEY`: one line of printable characters, at least 16 long.
pub fn valid_secret(key: &str) -> bool {
    key.len() >= 16 && key.chars().all(|c| c.is_ascii_graphic())
}

/// 32 random bytes from the OS, hex-encoded.
pub fn generate_secret() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("cannot get random bytes from the OS: {e}"))?;
    Ok(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn secret_is_generated_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let ps = ProjectState::new(dir.path(), &Project::named("t-s").unwrap());
        assert_eq!(ps.dir(), dir.path().join("projects/t-s"));
        let (k1, o1) = ps.secret_key(None).unwrap();
        assert_eq!(o1, SecretOrigin::Generated);
        assert_eq!(k1.len(), 64);
        let mode = fs::metadata(ps.secret_path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (k2, o2) = ps.secret_key(Some("another-key-from-a-container")).unwrap();
        assert_eq!((k2.as_str(), o2), (k1.as_str(), SecretOrigin::Stored));
    }

    #[test]
    fn secret_is_recovered_from_a_container() {
        let dir = tempfile::tempdir().unwrap();
        let ps = ProjectState::new(dir.path(), &Project::default());
        assert_eq!(ps.dir(), dir.path().join("projects/default"));
        let (k, o) = ps.secret_key(Some("0123456789abcdef0123")).unwrap();
        assert_eq!(
            (k.as_str(), o),
            ("0123456789abcdef0123", SecretOrigin::Recovered)
        );
        assert_eq!(
            ps.stored_secret().unwrap().as_deref(),
            Some("0123456789abcdef0123")
        );
    }

    #[test]
    fn corrupt_secret_is_an_error_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let ps = ProjectState::new(dir.path(), &Project::default());
        ps.ensure_dir().unwrap();
        write_private(&ps.secret_path(), b"short\n").unwrap();
        let e = ps.secret_key(None).unwrap_err();
        assert_eq!(crate::error::exit_code(&e), 1);
        assert!(crate::error::render(&e).contains("corrupt"));
        assert_eq!(fs::read(ps.secret_path()).unwrap(), b"short\n");
    }

    #[test]
    fn adopted_names_accumulate() {
        let dir = tempfile::tempdir().unwrap();
        let ps = ProjectState::new(dir.path(), &Project::default());
        assert!(ps.adopted().is_empty());
        ps.record_adopted(&["open-webui".into()]).unwrap();
        ps.record_adopted(&["open-webui".into(), "webui".into()])
            .unwrap();
        assert_eq!(ps.adopted(), vec!["open-webui", "webui"]);
    }

    #[test]
    fn run_info_only_while_alive() {
        let dir = tempfile::tempdir().unwrap();
        let ps = ProjectState::new(dir.path(), &Project::default());
        let info = RunInfo {
            pid: std::process::id(),
            https: vec!["127.0.0.1:1".into()],
            http: vec![],
            upstream: "http://127.0.0.1:3000".into(),
            behind_proxy: false,
            remote_ollama: Some(RemoteOllama {
                url: "https://models.example.com".into(),
                ca: None,
            }),
        };
        ps.write_run(&info).unwrap();
        assert_eq!(ps.run_info(), Some(info.clone()));
        ps.clear_run();
        assert_eq!(ps.run_info(), None);
        ps.write_run(&RunInfo {
            pid: u32::MAX - 1,
            ..info
        })
        .unwrap();
        assert_eq!(ps.run_info(), None, "a dead pid is not running");
    }
}
