//! `webui backup [--output FILE]`: the project's data volume, secret key, config and
//! certificates in one verified archive (format and consistency method in
//! `docker::backup`); for a project on Postgres (`migrate-db`, `--replicas`) also a
//! `pg_dump` of its database in it, since the volume then holds files only.

use std::path::Path;

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
