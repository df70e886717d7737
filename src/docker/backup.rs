//! Backups of one project: Open WebUI's data volume, the secret key, the config and
//! the certificates, in one `.tar.gz` with a manifest of checksums; and putting such
//! an archive back.
//!
//! # Archive
//! `webui-backup-<project>-<UTC YYYYMMDDTHHMMSSZ>.tar.gz`, mode 0600, holding:
//! ```text
//! data/...          the volume mounted at /app/backend/data, as Docker's archive API
//!                   gives it (modes, owners and times kept)
//! secret_key        <project dir>/secret_key
//! webui.toml        the config file, when there is one
//! certs/... acme/... ca/...   certificates, the ACME account, the local CA
//! postgres.dump     for a project whose data is in Postgres (`migrate-db`,
//!                   `--replicas`): `pg_dump -Fc` of its database, made just before
//!                   the volume is read (format 2)
//! manifest.json     last: format, webui version, project, created, method, image,
//!                   image id, digest, and {path: {sha256, bytes}} of every file
//! ```
//! Format 1 is an archive without `postgres.dump`; this webui reads both, and writes
//! 2 only when the dump is in it, so that an older webui refuses such an archive
//! instead of restoring it without its database.
//! [`verify`] reads the whole archive before anything is changed: a truncated or
//! tampered archive (a file missing, added, or not matching its checksum) is refused.
//!
//! # Consistency (the SQLite database)
//! The volume is read through the Docker API (`GET /containers/{id}/archive`), never
//! from host paths. Open WebUI may write `webui.db` meanwhile, so:
//! - container stopped (as during `webui update`): read as is;
//! - the image has `python3` (the real Open WebUI image does): SQLite's online backup
//!   API makes a consistent copy of the database inside the container while it keeps
//!   serving; that copy replaces `webui.db` (and its `-wal`/`-shm`) in the archive.
//!   No downtime;
//! - otherwise: the container is paused (`docker pause`, the cgroup freezer) while the
//!   volume is read; requests stall for those seconds, nothing restarts. The database
//!   files are then a crash-consistent set, which SQLite recovers from.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::query_parameters::{DownloadFromContainerOptions, UploadToContainerOptions};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::project::ProjectState;
use super::spec::{LABEL_DIGEST, Names, OPENWEBUI_DATA};
use crate::config::up::Project;
use crate::error::UserError;
use crate::output::Printer;

pub const MANIFEST: &str = "manifest.json";
pub const FORMAT: u32 = 1;
/// The format of an archive holding [`DATABASE`].
pub const FORMAT_WITH_DATABASE: u32 = 2;
/// The Postgres dump's name in the archive.
pub const DATABASE: &str = "postgres.dump";
/// The database file inside the data volume.
const DB: &str = "webui.db";
/// Where the online backup API writes its copy, inside the volume.
const ONLINE_COPY: &str = ".webui-backup.db";

/// One file in the archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSum {
    pub sha256: String,
    pub bytes: u64,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub webui_version: String,
    pub project: String,
    /// RFC 3339 UTC.
    pub created: String,
    /// `stopped`, `sqlite-online-backup` or `paused`.
    pub method: String,
    pub image: String,
    pub image_id: String,
    pub digest: Option<String>,
    pub files: BTreeMap<String, FileSum>,
}

impl Manifest {
    /// Files of the data volume, and their total size.
    pub fn data_files(&self) -> (usize, u64) {
        self.files
            .iter()
            .filter(|(p, _)| p.starts_with("data/"))
            .fold((0, 0), |(n, b), (_, f)| (n + 1, b + f.bytes))
    }
}

/// Where the state files of a backup come from and go back to.
#[derive(Debug, Clone)]
pub struct StateFiles {
    pub state_dir: PathBuf,
    pub config_file: PathBuf,
    pub project: ProjectState,
}

impl StateFiles {
    /// (name in the archive, path on the host) of each state file that exists.
    fn present(&self) -> Vec<(String, PathBuf)> {
        let mut out = Vec::new();
        let secret = self.project.secret_path();
        if secret.is_file() {
            out.push(("secret_key".to_string(), secret));
        }
        if self.config_file.is_file() {
            out.push(("webui.toml".to_string(), self.config_file.clone()));
        }
        for dir in ["certs", "acme", "ca"] {
            walk(&self.state_dir.join(dir), dir, &mut out);
        }
        out
    }

    /// Where an archive name goes back to; `None` for names that are not state files.
    fn target(&self, name: &str) -> Option<PathBuf> {
        match name {
            "secret_key" => Some(self.project.secret_path()),
            "webui.toml" => Some(self.config_file.clone()),
            _ => {
                let (top, _) = name.split_once('/')?;
                if !["certs", "acme", "ca"].contains(&top) || !safe_relative(name) {
                    return None;
                }
                Some(self.state_dir.join(name))
            }
        }
    }
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = format!("{prefix}/{}", e.file_name().to_string_lossy());
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            walk(&e.path(), &name, out);
        } else if ft.is_file() {
            out.push((name, e.path()));
        }
    }
}

/// A relative path without `..`, absolute parts or empty components.
fn safe_relative(name: &str) -> bool {
    !name.starts_with('/')
        && name
            .split('/')
            .all(|c| !c.is_empty() && c != ".." && c != ".")
}

/// `webui-backup-<project>-<YYYYMMDDTHHMMSSZ>.tar.gz`.
pub fn default_name(project: &str, rfc3339: &str) -> String {
    let stamp: String = rfc3339.chars().filter(|c| *c != '-' && *c != ':').collect();
    format!("webui-backup-{project}-{stamp}.tar.gz")
}

/// The archives of `project` in `dir` named as [`default_name`] names them, with the
/// time in the name, oldest first.
pub fn archives(dir: &Path, project: &str) -> Vec<(SystemTime, PathBuf)> {
    let prefix = format!("webui-backup-{project}-");
    let mut found: Vec<(SystemTime, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let stamp = name.strip_prefix(&prefix)?.strip_suffix(".tar.gz")?;
            Some((stamp_time(stamp)?, e.path()))
        })
        .collect();
    found.sort();
    found
}

/// `20261125T080032Z` (what [`default_name`] writes) as a time.
fn stamp_time(stamp: &str) -> Option<SystemTime> {
    let b = stamp.as_bytes();
    let shape = b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit);
    if !shape {
        return None;
    }
    let s = |r: std::ops::Range<usize>| &stamp[r];
    humantime::parse_rfc3339(&format!(
        "{}-{}-{}T{}:{}:{}Z",
        s(0..4),
        s(4..6),
        s(6..8),
        s(9..11),
        s(11..13),
        s(13..15)
    ))
    .ok()
}

/// What [`create`] made.
#[derive(Debug, Clone)]
pub struct Created {
    pub path: PathBuf,
    pub bytes: u64,
    pub manifest: Manifest,
    /// How long Open WebUI was paused, when it was.
    pub paused_for: Option<Duration>,
}

/// Backs up `project` into `output` (a file, or a directory for the default name;
/// `None`: `<state-dir>/backups/`). With `database` (a `pg_dump -Fc` file), it goes
/// in as [`DATABASE`].
pub async fn create(
    docker: &Docker,
    project: &Project,
    files: &StateFiles,
    output: Option<&Path>,
    database: Option<&Path>,
    printer: &Printer,
) -> anyhow::Result<Created> {
    let name = Names::new(project).open_webui;
    let c = match docker.inspect_container(&name, None).await {
        Ok(c) => c,
        Err(e) if super::is_not_found(&e) => {
            return Err(UserError::new(format!(
                "there is no container {name} to back up (project {})",
                project.key()
            ))
            .hint(format!(
                "start it with `webui{} up`; backups read the data volume through the container",
                project.flag()
            ))
            .into());
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot inspect {name}"))),
    };
    let config = c.config.clone().unwrap_or_default();
    let labels = config.labels.clone().unwrap_or_default();
    let state = c.state.clone().unwrap_or_default();
    let created = super::pin::now_rfc3339();
    let path = output_path(output, &files.state_dir, project.key(), &created)?;
    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let base = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "backup".into());
    let spool = TempFile::new(dir.join(format!(".{base}.volume.tmp")))?;

    // Read the volume, consistently.
    let running = state.running.unwrap_or(false) && !state.paused.unwrap_or(false);
    let mut paused_for = None;
    let method = if !running {
        download(docker, &name, OPENWEBUI_DATA, &spool.path).await?;
        "stopped"
    } else if online_copy(docker, &name).await {
        let r = download(docker, &name, OPENWEBUI_DATA, &spool.path).await;
        remove_online_copy(docker, &name).await;
        r?;
        "sqlite-online-backup"
    } else {
        printer.line(format!(
            "pausing {name} while its data is copied (requests wait meanwhile)"
        ));
        docker
            .pause_container(&name)
            .await
            .map_err(|e| anyhow::Error::new(e).context(format!("cannot pause {name}")))?;
        let start = Instant::now();
        let r = download(docker, &name, OPENWEBUI_DATA, &spool.path).await;
        let unpaused = docker.unpause_container(&name).await;
        paused_for = Some(start.elapsed());
        r?;
        unpaused.map_err(|e| {
            anyhow::Error::new(e).context(format!(
                "cannot unpause {name}; run `docker unpause {name}`"
            ))
        })?;
        "paused"
    };

    let mut manifest = Manifest {
        format: if database.is_some() {
            FORMAT_WITH_DATABASE
        } else {
            FORMAT
        },
        webui_version: env!("CARGO_PKG_VERSION").to_string(),
        project: project.key().to_string(),
        created,
        method: method.to_string(),
        image: config.image.clone().unwrap_or_default(),
        image_id: c.image.clone().unwrap_or_default(),
        digest: labels.get(LABEL_DIGEST).cloned(),
        files: BTreeMap::new(),
    };
    let mut state_files = files.present();
    if let Some(dump) = database {
        state_files.push((DATABASE.to_string(), dump.to_path_buf()));
    }
    let spool_path = spool.path.clone();
    let out = path.clone();
    let online = method == "sqlite-online-backup";
    manifest = tokio::task::spawn_blocking(move || {
        write_archive(&spool_path, &state_files, &out, manifest, online)
    })
    .await
    .context("the backup task failed")??;
    drop(spool);
    let bytes = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    Ok(Created {
        path,
        bytes,
        manifest,
        paused_for,
    })
}

fn output_path(
    output: Option<&Path>,
    state_dir: &Path,
    project: &str,
    created: &str,
) -> anyhow::Result<PathBuf> {
    let name = default_name(project, created);
    let path = match output {
        None => {
            let dir = state_dir.join("backups");
            crate::state::create_private_dir(&dir)?;
            dir.join(name)
        }
        Some(p) if p.is_dir() => p.join(name),
        Some(p) => p.to_path_buf(),
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.is_dir()
    {
        return Err(UserError::new(format!(
            "cannot write the backup to {}: the directory {} does not exist",
            path.display(),
            parent.display()
        ))
        .into());
    }
    if path.exists() {
        return Err(UserError::new(format!("{} already exists", path.display()))
            .hint("name another file with --output")
            .into());
    }
    Ok(path)
}

/// A temporary file (0600) removed on drop: the volume's tar on its way into an
/// archive, a database dump on its way out of one.
pub struct TempFile {
    pub path: PathBuf,
}

impl TempFile {
    /// Creates (truncates) `path`, 0600.
    pub fn new(path: PathBuf) -> anyhow::Result<Self> {
        private_file(&path)?;
        Ok(Self { path })
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Creates (truncates) a file with mode 0600 from the first byte.
fn private_file(path: &Path) -> anyhow::Result<File> {
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))
}

/// Writes the tar Docker gives for `path` in `container` to `to`.
async fn download(docker: &Docker, container: &str, path: &str, to: &Path) -> anyhow::Result<()> {
    let opts = DownloadFromContainerOptions {
        path: path.to_string(),
    };
    let mut stream = docker.download_from_container(container, Some(opts));
    let mut file = tokio::fs::File::from_std(private_file(to)?);
    use tokio::io::AsyncWriteExt;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            anyhow::Error::new(e).context(format!("cannot read {path} from {container}"))
        })?;
        file.write_all(&chunk)
            .await
            .with_context(|| format!("cannot write {}", to.display()))?;
    }
    file.sync_all().await?;
    Ok(())
}

/// Runs `cmd` in the running `container`; its exit code, `None` when it could not run.
pub(crate) async fn exec(docker: &Docker, container: &str, cmd: Vec<&str>) -> Option<i64> {
    let created = docker
        .create_exec(
            container,
            CreateExecOptions {
                cmd: Some(cmd),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
        .ok()?;
    match docker.start_exec(&created.id, None).await.ok()? {
        StartExecResults::Attached { mut output, .. } => {
            let deadline = tokio::time::sleep(Duration::from_secs(600));
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    item = output.next() => if item.is_none() { break },
                    _ = &mut deadline => return None,
                }
            }
        }
        StartExecResults::Detached => return None,
    }
    docker.inspect_exec(&created.id).await.ok()?.exit_code
}

/// SQLite's online backup API, inside the container, into [`ONLINE_COPY`]. False
/// when the image has no python3 or there is no database.
async fn online_copy(docker: &Docker, container: &str) -> bool {
    let script = format!(
        "import os, sqlite3, sys\n\
         src = '{OPENWEBUI_DATA}/{DB}'\n\
         dst = '{OPENWEBUI_DATA}/{ONLINE_COPY}'\n\
         if not os.path.exists(src): sys.exit(3)\n\
         s = sqlite3.connect(src); d = sqlite3.connect(dst)\n\
         s.backup(d); d.close(); s.close()\n"
    );
    exec(docker, container, vec!["python3", "-c", &script]).await == Some(0)
}

async fn remove_online_copy(docker: &Docker, container: &str) {
    let script = format!("import os; os.remove('{OPENWEBUI_DATA}/{ONLINE_COPY}')");
    let _ = exec(docker, container, vec!["python3", "-c", &script]).await;
}

/// A reader that hashes what passes through.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

impl<R> Hashing<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    fn sum(self) -> FileSum {
        FileSum {
            sha256: hex::encode(self.hasher.finalize()),
            bytes: self.bytes,
        }
    }
}

/// The volume's tar, the state files and the manifest into `out` (gzip, 0600),
/// written to a `.partial` file, synced, then renamed.
fn write_archive(
    volume_tar: &Path,
    state_files: &[(String, PathBuf)],
    out: &Path,
    mut manifest: Manifest,
    online: bool,
) -> anyhow::Result<Manifest> {
    let partial = out.with_file_name(format!(
        ".{}.partial",
        out.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    let result = (|| -> anyhow::Result<()> {
        let file = private_file(&partial)?;
        let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
        let mut builder = tar::Builder::new(gz);
        builder.follow_symlinks(false);

        let mut archive = tar::Archive::new(
            File::open(volume_tar)
                .with_context(|| format!("cannot read {}", volume_tar.display()))?,
        );
        let db = format!("data/{DB}");
        let copy = format!("data/{ONLINE_COPY}");
        for entry in archive
            .entries()
            .context("the volume archive from Docker is unreadable")?
        {
            let mut entry = entry.context("the volume archive from Docker is unreadable")?;
            let mut name = entry.path()?.to_string_lossy().into_owned();
            if online {
                if [
                    db.clone(),
                    format!("{db}-wal"),
                    format!("{db}-shm"),
                    format!("{db}-journal"),
                ]
                .contains(&name)
                {
                    continue;
                }
                if name == copy {
                    name = db.clone();
                }
            }
            let mut header = entry.header().clone();
            let kind = header.entry_type();
            if kind.is_file() {
                let mut h = Hashing::new(&mut entry);
                builder.append_data(&mut header, &name, &mut h)?;
                manifest.files.insert(name, h.sum());
            } else if kind.is_symlink() || kind.is_hard_link() {
                let target = entry
                    .link_name()?
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                builder.append_link(&mut header, &name, target)?;
            } else if kind.is_dir() {
                builder.append_data(&mut header, &name, io::empty())?;
            }
            // Other kinds (devices, fifos) have no place in a data volume.
        }

        for (name, path) in state_files {
            let f = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
            let len = f.metadata()?.len();
            let mut header = tar::Header::new_gnu();
            header.set_size(len);
            header.set_mode(0o600);
            header.set_mtime(
                fs::metadata(path)
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
            );
            header.set_entry_type(tar::EntryType::Regular);
            let mut h = Hashing::new(f.take(len));
            builder.append_data(&mut header, name, &mut h)?;
            manifest.files.insert(name.clone(), h.sum());
        }

        let json = serde_json::to_vec_pretty(&manifest)?;
        let mut header = tar::Header::new_gnu();
        header.set_size(json.len() as u64);
        header.set_mode(0o600);
        header.set_mtime(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        );
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, MANIFEST, json.as_slice())?;
        let gz = builder.into_inner()?;
        let file = gz.finish()?;
        file.sync_all()?;
        fs::rename(&partial, out)
            .with_context(|| format!("cannot rename {} to {}", partial.display(), out.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&partial);
    }
    result.with_context(|| format!("cannot write the backup {}", out.display()))?;
    Ok(manifest)
}

fn corrupt(path: &Path, why: impl std::fmt::Display) -> anyhow::Error {
    UserError::new(format!(
        "the backup {} is damaged: {why}; nothing was changed",
        path.display()
    ))
    .hint("use another backup; a backup is only restored when every file matches its checksum")
    .into()
}

/// Reads the whole archive and checks every file against the manifest. Blocking.
pub fn verify(path: &Path) -> anyhow::Result<Manifest> {
    let file = File::open(path)
        .map_err(|e| UserError::new(format!("cannot read the backup {}: {e}", path.display())))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(io::BufReader::new(file)));
    let mut found: BTreeMap<String, FileSum> = BTreeMap::new();
    let mut manifest: Option<Manifest> = None;
    let truncated =
        |e: io::Error| corrupt(path, format!("it is truncated or not a webui backup ({e})"));
    for entry in archive.entries().map_err(truncated)? {
        let mut entry = entry.map_err(truncated)?;
        let name = entry
            .path()
            .map_err(truncated)?
            .to_string_lossy()
            .into_owned();
        if !safe_relative(name.trim_end_matches('/')) {
            return Err(corrupt(path, format!("it holds an unsafe path `{name}`")));
        }
        if !entry.header().entry_type().is_file() {
            continue;
        }
        if name == MANIFEST {
            let mut text = String::new();
            (&mut entry)
                .take(64 << 20)
                .read_to_string(&mut text)
                .map_err(truncated)?;
            manifest = Some(
                serde_json::from_str(&text)
                    .map_err(|e| corrupt(path, format!("its manifest is unreadable ({e})")))?,
            );
            continue;
        }
        let mut h = Hashing::new(&mut entry);
        io::copy(&mut h, &mut io::sink()).map_err(truncated)?;
        found.insert(name, h.sum());
    }
    // The gzip trailer (length and CRC) comes after the tar's end.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(truncated)?;
    let Some(manifest) = manifest else {
        return Err(corrupt(path, "it has no manifest.json (truncated?)"));
    };
    if manifest.format != FORMAT && manifest.format != FORMAT_WITH_DATABASE {
        return Err(corrupt(
            path,
            format!("its format {} is not one this webui reads", manifest.format),
        ));
    }
    for (name, want) in &manifest.files {
        match found.get(name) {
            None => return Err(corrupt(path, format!("{name} is missing"))),
            Some(got) if got != want => {
                return Err(corrupt(
                    path,
                    format!("{name} does not match its checksum (changed or damaged)"),
                ));
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = found.keys().find(|k| !manifest.files.contains_key(*k)) {
        return Err(corrupt(path, format!("{extra} is not in the manifest")));
    }
    Ok(manifest)
}

/// Writes the `data/` entries of a verified archive as a plain tar to `to`. Blocking.
fn data_tar(archive: &Path, to: &Path) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    let mut input = tar::Archive::new(flate2::read::GzDecoder::new(io::BufReader::new(
        File::open(archive)?,
    )));
    let mut builder = tar::Builder::new(io::BufWriter::new(private_file(to)?));
    builder.follow_symlinks(false);
    for entry in input.entries()? {
        let mut entry = entry?;
        let name = entry.path()?.to_string_lossy().into_owned();
        if name != "data" && !name.starts_with("data/") {
            continue;
        }
        names.push(name.trim_end_matches('/').to_string());
        let mut header = entry.header().clone();
        let kind = header.entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name()?
                .map(|t| t.into_owned())
                .unwrap_or_default();
            builder.append_link(&mut header, &name, target)?;
        } else {
            builder.append_data(&mut header, &name, &mut entry)?;
        }
    }
    let mut w = builder.into_inner()?;
    w.flush()?;
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(names)
}

/// The names in a tar file (`data/...`) and their kinds. Blocking.
fn tar_names(path: &Path) -> anyhow::Result<BTreeMap<String, tar::EntryType>> {
    let mut a = tar::Archive::new(io::BufReader::new(File::open(path)?));
    let mut out = BTreeMap::new();
    for e in a.entries()? {
        let e = e?;
        out.insert(
            e.path()?
                .to_string_lossy()
                .trim_end_matches('/')
                .to_string(),
            e.header().entry_type(),
        );
    }
    Ok(out)
}

/// Replaces the content of the data volume of the stopped `container` with the
/// `data/` of a verified `archive`: files are written through the Docker API
/// (`PUT /containers/{id}/archive`); files the backup does not have are removed with a
/// helper container of the same image when it has `rm`, else emptied (and named).
/// `spool_dir` holds the temporary tars.
pub async fn restore_volume(
    docker: &Docker,
    container: &str,
    archive: &Path,
    spool_dir: &Path,
    printer: &Printer,
) -> anyhow::Result<()> {
    let dir = spool_dir.to_path_buf();
    let stamp = std::process::id();
    let upload = TempFile::new(dir.join(format!(".webui-restore-{stamp}.tar")))?;
    let current = TempFile::new(dir.join(format!(".webui-current-{stamp}.tar")))?;
    let (a, u) = (archive.to_path_buf(), upload.path.clone());
    let names = tokio::task::spawn_blocking(move || data_tar(&a, &u))
        .await
        .context("the restore task failed")??;
    download(docker, container, OPENWEBUI_DATA, &current.path).await?;
    let cur = current.path.clone();
    let now = tokio::task::spawn_blocking(move || tar_names(&cur))
        .await
        .context("the restore task failed")??;
    let extra: BTreeMap<String, tar::EntryType> = now
        .into_iter()
        .filter(|(n, _)| n.starts_with("data/") && !names.contains(n))
        .collect();
    if !extra.is_empty() {
        remove_extra(docker, container, &extra, printer).await?;
    }

    let file = tokio::fs::File::open(&upload.path).await?;
    let stream = futures_util::stream::unfold(file, |mut f| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 256 * 1024];
        match f.read(&mut buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Bytes::from(buf), f))
            }
        }
    });
    let parent = Path::new(OPENWEBUI_DATA)
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "/".into());
    docker
        .upload_to_container(
            container,
            Some(UploadToContainerOptions {
                path: parent,
                ..Default::default()
            }),
            bollard::body_stream(stream),
        )
        .await
        .map_err(|e| {
            anyhow::Error::new(e).context(format!("cannot write the data into {container}"))
        })?;
    Ok(())
}

/// Removes files created after the backup (deepest first): with `rm` in a helper
/// container of the same image mounting the volume, else by emptying them.
async fn remove_extra(
    docker: &Docker,
    container: &str,
    extra: &BTreeMap<String, tar::EntryType>,
    printer: &Printer,
) -> anyhow::Result<()> {
    let c = docker
        .inspect_container(container, None)
        .await
        .map_err(|e| anyhow::Error::new(e).context(format!("cannot inspect {container}")))?;
    let image = c.image.unwrap_or_default();
    let volume = c
        .mounts
        .unwrap_or_default()
        .into_iter()
        .find(|m| m.destination.as_deref() == Some(OPENWEBUI_DATA))
        .and_then(|m| m.name);
    let base = Path::new(OPENWEBUI_DATA)
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let paths: Vec<String> = extra.keys().map(|n| format!("{base}/{n}")).collect();
    if let Some(volume) = volume
        && helper_rm(docker, &image, &volume, &paths).await
    {
        printer.line(format!(
            "removed {} file(s) created after the backup",
            paths.len()
        ));
        return Ok(());
    }
    // No shell in the image: overwrite regular files with empty ones (a directory
    // cannot be emptied this way and stays).
    let mut builder = tar::Builder::new(Vec::new());
    let mut emptied = Vec::new();
    for (n, kind) in extra {
        if kind.is_file() {
            let mut h = tar::Header::new_gnu();
            h.set_size(0);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            builder.append_data(&mut h, n, io::empty())?;
            emptied.push(n.clone());
        }
    }
    let body = builder.into_inner()?;
    docker
        .upload_to_container(
            container,
            Some(UploadToContainerOptions {
                path: base,
                ..Default::default()
            }),
            bollard::body_full(Bytes::from(body)),
        )
        .await
        .map_err(|e| anyhow::Error::new(e).context("cannot empty files"))?;
    if !emptied.is_empty() {
        printer.warn(format!(
            "the image has no shell to remove files created after the backup; emptied them instead: {}",
            emptied.join(", ")
        ));
    }
    Ok(())
}

/// `rm -rf -- PATHS` in a throwaway container of `image` mounting `volume`; false
/// when the image has no shell or it failed.
async fn helper_rm(docker: &Docker, image: &str, volume: &str, paths: &[String]) -> bool {
    use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType};
    let mut cmd = vec!["rm".to_string(), "-rf".to_string(), "--".to_string()];
    cmd.extend(paths.iter().cloned());
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        entrypoint: Some(vec![]),
        cmd: Some(cmd),
        network_disabled: Some(true),
        host_config: Some(HostConfig {
            mounts: Some(vec![Mount {
                target: Some(OPENWEBUI_DATA.to_string()),
                source: Some(volume.to_string()),
                typ: Some(MountType::VOLUME),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let Ok(created) = docker
        .create_container(
            None::<bollard::query_parameters::CreateContainerOptions>,
            body,
        )
        .await
    else {
        return false;
    };
    let id = created.id;
    let ok = async {
        docker.start_container(&id, None).await.ok()?;
        let mut wait =
            docker.wait_container(&id, None::<bollard::query_parameters::WaitContainerOptions>);
        let r = tokio::time::timeout(Duration::from_secs(120), wait.next())
            .await
            .ok()??;
        r.ok().map(|w| w.status_code == 0)
    }
    .await
    .unwrap_or(false);
    let _ = docker
        .remove_container(
            &id,
            Some(bollard::query_parameters::RemoveContainerOptions {
                force: true,
                v: false,
                link: false,
            }),
        )
        .await;
    ok
}

/// Writes the state files of a verified archive back (0600). Blocking.
pub fn restore_state_files(archive: &Path, files: &StateFiles) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let mut input = tar::Archive::new(flate2::read::GzDecoder::new(io::BufReader::new(
        File::open(archive)?,
    )));
    for entry in input.entries()? {
        let mut entry = entry?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry.path()?.to_string_lossy().into_owned();
        let Some(target) = files.target(&name) else {
            continue;
        };
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes)?;
        if let Some(parent) = target.parent() {
            crate::state::create_private_dir(parent)?;
        }
        crate::state::write_private(&target, &bytes)?;
        written.push(target);
    }
    Ok(written)
}

/// The state files a verified archive holds, by name.
pub fn state_names(m: &Manifest) -> Vec<String> {
    m.files
        .keys()
        .filter(|k| !k.starts_with("data/") && *k != DATABASE)
        .cloned()
        .collect()
}

/// Whether a verified archive holds a Postgres dump.
pub fn has_database(m: &Manifest) -> bool {
    m.files.contains_key(DATABASE)
}

/// Writes the [`DATABASE`] of a verified archive to a new file in `dir` (0600), removed
/// when the result is dropped. Blocking.
pub fn extract_database(archive: &Path, dir: &Path) -> anyhow::Result<TempFile> {
    crate::state::create_private_dir(dir)?;
    let out = TempFile::new(dir.join(format!(".restore-{}-{DATABASE}", std::process::id())))?;
    let mut input = tar::Archive::new(flate2::read::GzDecoder::new(io::BufReader::new(
        File::open(archive).with_context(|| format!("cannot read {}", archive.display()))?,
    )));
    for entry in input.entries()? {
        let mut entry = entry?;
        if entry.path()?.to_string_lossy() == DATABASE {
            let mut file = private_file(&out.path)?;
            io::copy(&mut entry, &mut file)
                .and_then(|_| file.sync_all())
                .with_context(|| format!("cannot write {}", out.path.display()))?;
            return Ok(out);
        }
    }
    anyhow::bail!("{} holds no {DATABASE}", archive.display())
}

/// The secret key a verified archive holds. Blocking.
pub fn archived_secret(archive: &Path) -> anyhow::Result<Option<String>> {
    let mut input = tar::Archive::new(flate2::read::GzDecoder::new(io::BufReader::new(
        File::open(archive)?,
    )));
    for entry in input.entries()? {
        let mut entry = entry?;
        if entry.path()?.to_string_lossy() == "secret_key" {
            let mut s = String::new();
            entry.read_to_string(&mut s)?;
            return Ok(Some(s.trim_end_matches(['\n', '\r']).to_string()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_back_as_times() {
        let t = stamp_time("20231114T221320Z").unwrap();
        assert_eq!(
            default_name("p", "2023-11-14T22:13:20Z"),
            "webui-backup-p-20231114T221320Z.tar.gz"
        );
        assert_eq!(
            t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(),
            1_700_000_000
        );
        assert_eq!(stamp_time("20231114T2213Z"), None);
        assert_eq!(stamp_time("2023111xT221320Z"), None);
    }

    #[test]
    fn names_and_paths() {
        assert_eq!(
            default_name("default", "2024-05-01T12:03:04Z"),
            "webui-backup-default-20240501T120304Z.tar.gz"
        );
        assert!(safe_relative("data/a/b"));
        assert!(!safe_relative("../x") && !safe_relative("/etc") && !safe_relative("a//b"));
    }

    fn sample(dir: &Path) -> (PathBuf, StateFiles) {
        // A volume tar as Docker gives it.
        let vol = dir.join("vol.tar");
        let mut b = tar::Builder::new(File::create(&vol).unwrap());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        b.append_data(&mut h, "data/", io::empty()).unwrap();
        for (n, body) in [("data/webui.db", &b"db-bytes"[..]), ("data/up/x.txt", b"x")] {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, n, body).unwrap();
        }
        b.finish().unwrap();
        let state_dir = dir.join("state");
        let ps = ProjectState::new(&state_dir, &Project::default());
        ps.secret_key(Some("0123456789abcdef0123")).unwrap();
        fs::create_dir_all(state_dir.join("certs/a")).unwrap();
        fs::write(state_dir.join("certs/a/fullchain.pem"), "pem").unwrap();
        let files = StateFiles {
            state_dir: state_dir.clone(),
            config_file: state_dir.join("webui.toml"),
            project: ps,
        };
        (vol, files)
    }

    fn manifest() -> Manifest {
        Manifest {
            format: FORMAT,
            webui_version: "0".into(),
            project: "default".into(),
            created: "2024-01-01T00:00:00Z".into(),
            method: "stopped".into(),
            image: "i".into(),
            image_id: "sha256:1".into(),
            digest: None,
            files: BTreeMap::new(),
        }
    }

    #[test]
    fn archive_round_trip_and_refusals() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (vol, files) = sample(dir.path());
        let out = dir.path().join("b.tar.gz");
        let m = write_archive(&vol, &files.present(), &out, manifest(), false).unwrap();
        assert_eq!(
            fs::metadata(&out).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            m.files.keys().cloned().collect::<Vec<_>>(),
            vec![
                "certs/a/fullchain.pem",
                "data/up/x.txt",
                "data/webui.db",
                "secret_key"
            ]
        );
        assert_eq!(verify(&out).unwrap(), m);
        assert_eq!(
            archived_secret(&out).unwrap().as_deref(),
            Some("0123456789abcdef0123")
        );

        // Truncated.
        let bytes = fs::read(&out).unwrap();
        let cut = dir.path().join("cut.tar.gz");
        fs::write(&cut, &bytes[..bytes.len() - 40]).unwrap();
        let e = verify(&cut).unwrap_err();
        assert_eq!(crate::error::exit_code(&e), 1);
        assert!(crate::error::render(&e).contains("damaged"), "{e:#}");

        // Tampered: a data file changed, the manifest kept.
        let tampered = dir.path().join("t.tar.gz");
        let mut input = tar::Archive::new(flate2::read::GzDecoder::new(File::open(&out).unwrap()));
        let gz = flate2::write::GzEncoder::new(
            File::create(&tampered).unwrap(),
            flate2::Compression::default(),
        );
        let mut b = tar::Builder::new(gz);
        for e in input.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut body = Vec::new();
            e.read_to_end(&mut body).unwrap();
            if name == "data/webui.db" {
                body[0] ^= 1;
            }
            let mut h = e.header().clone();
            b.append_data(&mut h, &name, body.as_slice()).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap();
        let text = crate::error::render(&verify(&tampered).unwrap_err());
        assert!(text.contains("data/webui.db does not match"), "{text}");

        // State files go back, 0600.
        fs::remove_file(files.project.secret_path()).unwrap();
        let written = restore_state_files(&out, &files).unwrap();
        assert_eq!(written.len(), 2);
        assert_eq!(
            fs::metadata(files.project.secret_path())
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }

    #[test]
    fn a_postgres_dump_goes_in_and_comes_out_unchanged() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (vol, files) = sample(dir.path());
        let dump = dir.path().join("db.dump");
        fs::write(&dump, b"PGDMP and the rest").unwrap();
        let mut present = files.present();
        present.push((DATABASE.to_string(), dump.clone()));
        let out = dir.path().join("b.tar.gz");
        let m = Manifest {
            format: FORMAT_WITH_DATABASE,
            ..manifest()
        };
        let m = write_archive(&vol, &present, &out, m, false).unwrap();
        let read = verify(&out).unwrap();
        assert_eq!(read, m);
        assert!(has_database(&read));
        assert_eq!(
            state_names(&read),
            vec!["certs/a/fullchain.pem", "secret_key"],
            "the dump is not a state file"
        );
        // Not written anywhere in the state dir by restore_state_files.
        assert_eq!(restore_state_files(&out, &files).unwrap().len(), 2);

        let backups = dir.path().join("state/backups");
        let copy = extract_database(&out, &backups).unwrap();
        assert_eq!(fs::read(&copy.path).unwrap(), b"PGDMP and the rest");
        assert_eq!(
            fs::metadata(&copy.path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let path = copy.path.clone();
        drop(copy);
        assert!(!path.exists(), "the temporary copy is removed");

        // An archive without one: nothing to extract, and format 1.
        let plain = dir.path().join("p.tar.gz");
        write_archive(&vol, &files.present(), &plain, manifest(), false).unwrap();
        assert!(!has_database(&verify(&plain).unwrap()));
        assert!(extract_database(&plain, &backups).is_err());
    }

    #[test]
    fn a_format_from_a_newer_webui_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (vol, files) = sample(dir.path());
        let out = dir.path().join("b.tar.gz");
        let m = Manifest {
            format: FORMAT_WITH_DATABASE + 1,
            ..manifest()
        };
        write_archive(&vol, &files.present(), &out, m, false).unwrap();
        let text = crate::error::render(&verify(&out).unwrap_err());
        assert!(
            text.contains("format 3 is not one this webui reads"),
            "{text}"
        );
    }

    #[test]
    fn online_copy_replaces_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("vol.tar");
        let mut b = tar::Builder::new(File::create(&vol).unwrap());
        for (n, body) in [
            ("data/webui.db", &b"live"[..]),
            ("data/webui.db-wal", b"wal"),
            ("data/.webui-backup.db", b"copy"),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, n, body).unwrap();
        }
        b.finish().unwrap();
        let out = dir.path().join("b.tar.gz");
        let m = write_archive(&vol, &[], &out, manifest(), true).unwrap();
        assert_eq!(m.files.keys().collect::<Vec<_>>(), vec!["data/webui.db"]);
        assert_eq!(m.files["data/webui.db"].bytes, 4);
    }
}
