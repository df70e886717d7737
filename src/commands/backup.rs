//! `webui backup [--output FILE]`: the project's data volume, secret key, config and
//! certificates in one verified archive (format and consistency method in
//! `docker::backup`); for a project on Postgres (`migrate-db`, `--replicas`) also a
//! `pg_dump` of its database in it, since the volume then holds files only.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::cli::{BackupCmd, GlobalArgs};
use crate::config::Paths;
use crate::config::up::Project;
use crate::docker::backup::{self, StateFiles};
use crate::docker::pin::{BackupRecord, History};
use crate::docker::project::ProjectState;
use crate::docker::{self, health};
use crate::output::Printer;

pub async fn run(global: &GlobalArgs, cmd: &BackupCmd, printer: Printer) -> anyhow::Result<u8> {
    let paths = Paths::resolve(global);
    let project = Project::resolve(global.project.as_deref())?;
    let files = state_files(&paths, &project);
    if cmd.list {
        return list(&paths, &project, &files, cmd.json, &printer).await;
    }
    let docker = docker::connect().await?;
    let made = make(&docker, &project, &files, cmd.output.as_deref(), &printer).await?;
    printer.line(format!("backup written: {}", made.path.display()));
    Ok(0)
}

/// What a backup takes from the state dir.
pub fn state_files(paths: &Paths, project: &Project) -> StateFiles {
    StateFiles {
        state_dir: paths.state_dir.clone(),
        config_file: paths.config.clone(),
        project: ProjectState::new(&paths.state_dir, project),
    }
}

/// Makes a backup, prints what it holds, records it in `history.json`.
pub async fn make(
    docker: &bollard::Docker,
    project: &Project,
    files: &StateFiles,
    output: Option<&Path>,
    printer: &Printer,
) -> anyhow::Result<backup::Created> {
    // One backup of a project at a time: two would share the online copy's file in the
    // volume (and pause the container twice). `webui backup` during a scheduled one
    // waits for it, as a scheduled one waits for a restore.
    let _data = data_lock(&files.project).await?;
    // On Postgres, Open WebUI's chats, users and settings are not in the volume: an
    // archive without them would be a backup in name only. The dump goes into the
    // archive, so that one file restores everything.
    let dump = if on_postgres(docker, project, &files.project).await {
        let dir = files.state_dir.join("backups");
        let path = super::rolling::dump_database(docker, project, &dir)
            .await
            .map_err(|e| {
                e.context(
                    "the Postgres database, which holds Open WebUI's chats, users and settings, \
                     could not be dumped, so no backup was written",
                )
            })?;
        Some(backup::TempFile { path })
    } else {
        None
    };
    let database = dump.as_ref().map(|d| d.path.as_path());
    let made = backup::create(docker, project, files, output, database, printer).await?;
    drop(dump);
    let (n, bytes) = made.manifest.data_files();
    let how = match (made.manifest.method.as_str(), made.paused_for) {
        ("paused", Some(d)) => format!(
            "Open WebUI paused for {} during the copy",
            health::elapsed_text(d)
        ),
        ("sqlite-online-backup", _) => "database copied with SQLite's online backup".into(),
        ("stopped", _) => "copied while stopped".into(),
        (m, _) => m.to_string(),
    };
    printer.line(format!(
        "backed up {n} data files ({}) and {} state files; {how}; {} bytes compressed",
        human_bytes(bytes),
        backup::state_names(&made.manifest).len(),
        made.bytes
    ));
    if let Some(sum) = made.manifest.files.get(backup::DATABASE) {
        printer.line(format!(
            "database (Postgres): in the archive as {} ({}, pg_dump custom format); \
             `webui restore` puts it back",
            backup::DATABASE,
            human_bytes(sum.bytes)
        ));
    }
    let record = BackupRecord {
        at: made.manifest.created.clone(),
        file: made.path.display().to_string(),
        bytes: made.bytes,
    };
    if let Err(e) = History::update(&files.project, |h| h.last_backup = Some(record)) {
        printer.warn(format!("cannot record the backup in history.json: {e:#}"));
    }
    Ok(made)
}

/// Holds `<project dir>/backup.lock` (an exclusive `flock`, dropped with the file),
/// waiting for another backup or a restore of the project to finish: each reads or
/// replaces all of its data.
pub async fn data_lock(project: &ProjectState) -> anyhow::Result<std::fs::File> {
    crate::state::create_private_dir(project.dir())?;
    let path = project.dir().join("backup.lock");
    tokio::task::spawn_blocking(move || -> anyhow::Result<std::fs::File> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        file.lock()
            .with_context(|| format!("cannot lock {}", path.display()))?;
        Ok(file)
    })
    .await
    .map_err(|e| anyhow::anyhow!("waiting for another backup failed: {e}"))?
}

/// One archive `webui backup --list` shows.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Listed {
    pub file: String,
    /// When it was made (from its name), RFC 3339.
    pub created: String,
    pub bytes: u64,
    /// `manual` (`webui backup`), `update` (`webui update`), `scheduled` (`up
    /// --backup-every`).
    pub kind: &'static str,
}

/// This project's archives in `<state-dir>/backups`, in the scheduled directory (the
/// running `up`'s, else the last one recorded, else `backup_dir` of the config, else
/// the default) and where the last `webui backup --output` wrote; newest first.
async fn list(
    paths: &Paths,
    project: &Project,
    files: &StateFiles,
    json: bool,
    printer: &Printer,
) -> anyhow::Result<u8> {
    let history = History::load(&files.project);
    let socket = crate::control::socket_path(&paths.state_dir, project.key());
    let live_dir = crate::control::request(&socket, "status")
        .await
        .and_then(|v| v["backups"]["dir"].as_str().map(PathBuf::from));
    let scheduled = live_dir
        .or_else(|| history.scheduled_dir.as_ref().map(PathBuf::from))
        .or_else(|| paths.load_file().ok().and_then(|f| f.backup_dir))
        .unwrap_or_else(|| super::scheduled::default_dir(&paths.state_dir));
    let mut dirs = vec![paths.state_dir.join("backups"), scheduled.clone()];
    if let Some(dir) = history
        .last_backup
        .as_ref()
        .and_then(|b| Path::new(&b.file).parent().map(Path::to_path_buf))
    {
        dirs.push(dir);
    }
    let listed = collect(&dirs, &scheduled, &history, project.key());
    if json {
        println!("{}", serde_json::json!({ "backups": listed }));
        return Ok(0);
    }
    if listed.is_empty() {
        printer.line(format!(
            "no backups of project {} (looked in {}); `webui{} backup` makes one",
            project.key(),
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            project.flag()
        ));
        return Ok(0);
    }
    for b in &listed {
        printer.line(format!(
            "{}  {:<9}  {:>9}  {}",
            b.created,
            b.kind,
            human_bytes(b.bytes),
            b.file
        ));
    }
    printer.line(format!(
        "{} backup{}; put one back with `webui{} restore FILE`",
        listed.len(),
        if listed.len() == 1 { "" } else { "s" },
        project.flag()
    ));
    Ok(0)
}

/// The archives of `project` in `dirs` (each once), newest first.
fn collect(dirs: &[PathBuf], scheduled: &Path, history: &History, project: &str) -> Vec<Listed> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out: Vec<(std::time::SystemTime, Listed)> = Vec::new();
    for dir in dirs {
        for (at, path) in backup::archives(dir, project) {
            let canonical = path.canonicalize().unwrap_or_else(|_| path.clone());
            if !seen.insert(canonical) {
                continue;
            }
            let file = path.display().to_string();
            let kind = if history.update_backups.contains(&file) {
                "update"
            } else if path.parent() == Some(scheduled) {
                "scheduled"
            } else {
                "manual"
            };
            out.push((
                at,
                Listed {
                    bytes: std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0),
                    created: humantime::format_rfc3339_seconds(at).to_string(),
                    file,
                    kind,
                },
            ));
        }
    }
    out.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
    out.into_iter().map(|(_, l)| l).collect()
}

/// Whether Open WebUI's data is in the project's Postgres: `migrate-db` recorded it,
/// or the Postgres container is there (`up --replicas N` made it).
pub async fn on_postgres(
    docker: &bollard::Docker,
    project: &Project,
    state: &ProjectState,
) -> bool {
    if state
        .recorded_database()
        .is_some_and(|d| d.engine == "postgres")
    {
        return true;
    }
    docker
        .inspect_container(&project.prefixed("postgres"), None)
        .await
        .is_ok()
}

pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_backup_waits_for_the_first() {
        let root = tempfile::tempdir().unwrap();
        let project = ProjectState::new(root.path(), &Project::resolve(Some("p")).unwrap());
        let first = data_lock(&project).await.unwrap();
        let second = tokio::spawn({
            let project = project.clone();
            async move { data_lock(&project).await.map(|_| ()) }
        });
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(
            !second.is_finished(),
            "waits while the first holds the lock"
        );
        drop(first);
        tokio::time::timeout(std::time::Duration::from_secs(5), second)
            .await
            .expect("goes on once the first is done")
            .unwrap()
            .unwrap();
    }

    #[test]
    fn listing_names_each_archive_once_with_its_kind_newest_first() {
        let root = tempfile::tempdir().unwrap();
        let backups = root.path().join("backups");
        let scheduled = backups.join("scheduled");
        std::fs::create_dir_all(&scheduled).unwrap();
        let manual = backups.join("webui-backup-p-20261101T000000Z.tar.gz");
        let update = backups.join("webui-backup-p-20261102T000000Z.tar.gz");
        let sched = scheduled.join("webui-backup-p-20261103T000000Z.tar.gz");
        for f in [&manual, &update, &sched] {
            std::fs::write(f, b"x").unwrap();
        }
        std::fs::write(backups.join("webui-backup-q-20261104T000000Z.tar.gz"), b"x").unwrap();
        std::fs::write(backups.join("notes.txt"), b"x").unwrap();
        let history = History {
            update_backups: vec![update.display().to_string()],
            ..Default::default()
        };
        // The state's backups dir given twice (also as the last --output's dir).
        let dirs = [backups.clone(), scheduled.clone(), backups.clone()];
        let got: Vec<(String, &str, String)> = collect(&dirs, &scheduled, &history, "p")
            .into_iter()
            .map(|l| (l.file, l.kind, l.created))
            .collect();
        assert_eq!(
            got,
            [
                (
                    sched.display().to_string(),
                    "scheduled",
                    "2026-11-03T00:00:00Z".to_string()
                ),
                (
                    update.display().to_string(),
                    "update",
                    "2026-11-02T00:00:00Z".to_string()
                ),
                (
                    manual.display().to_string(),
                    "manual",
                    "2026-11-01T00:00:00Z".to_string()
                ),
            ]
        );
    }
}
