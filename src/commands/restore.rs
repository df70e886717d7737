//! `webui restore FILE [--yes] [--database DUMP]`: verifies every checksum of a
//! backup, then (with `--yes`) stops Open WebUI (replicas too), puts the Postgres
//! database back when the archive holds one (or from `--database`, for a dump made
//! apart; `pg_restore --clean` in one transaction, first: when it fails nothing is
//! changed), replaces the data volume's content through the Docker
//! API, writes the secret key, config and certificates back (0600), starts them again
//! (recreated when the restored secret differs from the one it ran with) and waits
//! for health. Without `--yes` it prints what would be replaced and exits 1.

use std::time::Duration;

use crate::cli::{GlobalArgs, RestoreCmd};
use crate::config::Paths;
use crate::config::up::{self as upcfg, Project};
use crate::config::values;
use crate::docker::backup::{self, StateFiles};
use crate::docker::spec::{LABEL_UPSTREAM, Names};
use crate::docker::{self, health, update as dupdate};
use crate::error::UserError;
use crate::output::Printer;

pub async fn run(global: &GlobalArgs, cmd: &RestoreCmd, printer: Printer) -> anyhow::Result<u8> {
    let paths = Paths::resolve(global);
    let project = Project::resolve(global.project.as_deref())?;
    let timeout = health_timeout(cmd.health_timeout.as_deref(), &paths)?;
    let files = super::backup::state_files(&paths, &project);
    let file = cmd.file.clone();
    let manifest = tokio::task::spawn_blocking(move || backup::verify(&file)).await??;
    let (n, bytes) = manifest.data_files();
    printer.line(format!(
        "{}: every checksum matches ({} files; made {} by webui {} from {}{})",
        cmd.file.display(),
        manifest.files.len(),
        manifest.created,
        manifest.webui_version,
        manifest.image,
        manifest
            .digest
            .as_deref()
            .map(|d| format!(", {d}"))
            .unwrap_or_default()
    ));
    if manifest.project != project.key() {
        printer.warn(format!(
            "this backup is of project `{}`; it would be restored into project `{}`",
            manifest.project,
            project.key()
        ));
    }
    let docker = docker::connect().await?;
    let names = Names::new(&project);
    let name = names.open_webui.clone();
    let c = match docker.inspect_container(&name, None).await {
        Ok(c) => c,
        Err(e) if docker::is_not_found(&e) => {
            return Err(UserError::new(format!(
                "there is no container {name} to restore into"
            ))
            .hint(format!(
                "create it first with `webui{} up` (a new install is fine: its data is replaced), then restore",
                project.flag()
            ))
            .into());
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot inspect {name}"))),
    };
    let on_postgres = super::backup::on_postgres(&docker, &project, &files.project).await;
    let pg = project.prefixed("postgres");
    let archived = backup::has_database(&manifest);
    if archived && !on_postgres {
        return Err(UserError::new(format!(
            "{} holds a Postgres database (its project kept its data in Postgres), but project `{}` \
             is not on Postgres; nothing was changed",
            cmd.file.display(),
            project.key()
        ))
        .hint(format!(
            "move the project to Postgres first (`webui{0} migrate-db`, or `webui{0} up --replicas N`), then restore",
            project.flag()
        ))
        .into());
    }
    if let Some(dump) = &cmd.database {
        if !on_postgres {
            return Err(UserError::new(format!(
                "--database puts a Postgres dump back, but project `{}` is not on Postgres",
                project.key()
            ))
            .hint("leave --database out: the archive holds the SQLite database")
            .into());
        }
        let d = dump.clone();
        if !tokio::task::spawn_blocking(move || super::rolling::is_pg_dump(&d)).await? {
            return Err(UserError::new(format!(
                "{} is not a pg_dump custom-format file (it does not start with PGDMP)",
                dump.display()
            ))
            .hint(format!(
                "give a pg_dump -Fc file (such as webui-db-{}-<time>.dump, which older webui \
                 versions wrote beside the archive), or leave --database out to use the archive's",
                project.key()
            ))
            .into());
        }
    }
    // Replicas share the volume and the database: they are stopped meanwhile too.
    let others: Vec<String> = super::rolling::find(&docker, &project)
        .await?
        .into_iter()
        .map(|f| f.name)
        .filter(|n| *n != name)
        .collect();
    let state_names = backup::state_names(&manifest);
    printer.line("restoring replaces:");
    if let Some(dump) = &cmd.database {
        printer.line(format!(
            "  the Postgres database in {pg}, from {} (pg_restore --clean, in one transaction)",
            dump.display()
        ));
    } else if archived {
        printer.line(format!(
            "  the Postgres database in {pg}, from the backup's {} (pg_restore --clean, in one transaction)",
            backup::DATABASE
        ));
    }
    printer.line(format!(
        "  the content of volume {} ({n} files, {}); files made since the backup are removed",
        names.open_webui_volume,
        super::backup::human_bytes(bytes)
    ));
    if !state_names.is_empty() {
        printer.line(format!(
            "  in {}: {}",
            paths.state_dir.display(),
            state_names.join(", ")
        ));
    }
    let stopped = std::iter::once(name.as_str())
        .chain(others.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(", ");
    printer.line(format!("  {stopped} stopped meanwhile and started again"));
    if on_postgres && !archived && cmd.database.is_none() {
        printer.warn(format!(
            "this project's data (chats, users, settings) is in Postgres ({pg}), and this backup \
             holds no database (it was made without one, or by a webui that wrote the dump \
             beside the archive): the database is left as it is; to put one back too, add \
             `--database webui-db-{}-<time>.dump` (it goes in with `pg_restore --clean`)",
            project.key()
        ));
    }
    if !cmd.yes {
        printer.line("nothing was changed; run again with --yes to restore");
        return Ok(1);
    }
    // No backup of this project (a scheduled one of a running `up`) reads the data
    // while it is being replaced: it would archive, as verified, a half-restored state.
    let _data = super::backup::data_lock(&files.project).await?;
    for o in &others {
        dupdate::stop(&docker, o).await?;
    }
    if cmd.database.is_some() || archived {
        dupdate::stop(&docker, &name).await?;
        let put_back = match &cmd.database {
            Some(dump) => super::rolling::restore_database(&docker, &project, dump).await,
            None => restore_archived_database(&docker, &project, &cmd.file, &files).await,
        };
        if let Err(e) = put_back {
            for n in std::iter::once(&name).chain(&others) {
                let _ = dupdate::start(&docker, n).await;
            }
            return Err(e.context("nothing was restored; Open WebUI was started again"));
        }
        printer.line(format!(
            "restored the Postgres database from {}",
            cmd.database.as_ref().unwrap_or(&cmd.file).display()
        ));
    }
    restore(&docker, &name, &cmd.file, &files, &printer).await?;
    let current_env = c.config.and_then(|c| c.env).unwrap_or_default();
    recreate_if_secret_changed(&docker, &name, &cmd.file, &current_env, &printer).await?;
    // Every replica signs sessions with the secret: all get the restored one.
    for o in &others {
        let env = docker
            .inspect_container(o, None)
            .await
            .map_err(|e| anyhow::Error::new(e).context(format!("cannot inspect {o}")))?
            .config
            .and_then(|c| c.env)
            .unwrap_or_default();
        recreate_if_secret_changed(&docker, o, &cmd.file, &env, &printer).await?;
    }
    dupdate::start(&docker, &name).await?;
    for o in &others {
        dupdate::start(&docker, o).await?;
    }
    // Every container must answer again, replicas included: a restore that leaves one
    // of them failing is not done.
    let mut healthy = Vec::new();
    for n in std::iter::once(&name).chain(&others) {
        let upstream = docker
            .inspect_container(n, None)
            .await
            .ok()
            .and_then(|c| c.config?.labels?.get(LABEL_UPSTREAM).cloned());
        if let Some(u) = upstream {
            let mut ignore = |_: Duration| {};
            let took = health::wait(&docker, n, &u, timeout, &printer, &mut ignore).await?;
            healthy.push(format!(
                "{n} is healthy (after {})",
                health::elapsed_text(took)
            ));
        } else {
            healthy.push(format!("started {n}"));
        }
    }
    printer.line(format!(
        "restored {}; {}",
        cmd.file.display(),
        healthy.join(", ")
    ));
    Ok(0)
}

/// Puts the Postgres dump a verified `archive` holds back into the project's database
/// (`pg_restore --clean`, one transaction), through a temporary copy (0600) in the
/// state dir's `backups/`.
pub async fn restore_archived_database(
    docker: &bollard::Docker,
    project: &Project,
    archive: &std::path::Path,
    files: &StateFiles,
) -> anyhow::Result<()> {
    let (a, dir) = (archive.to_path_buf(), files.state_dir.join("backups"));
    let dump = tokio::task::spawn_blocking(move || backup::extract_database(&a, &dir)).await??;
    super::rolling::restore_database(docker, project, &dump.path).await
}

/// `--health-timeout`, else the config file's, else 30 min.
pub fn health_timeout(flag: Option<&str>, paths: &Paths) -> anyhow::Result<Duration> {
    let from_file = paths.load_file().ok().and_then(|f| f.health_timeout);
    match flag.map(str::to_string).or(from_file) {
        Some(s) => {
            let d = values::duration("--health-timeout", &s).map_err(UserError::new)?;
            if d.is_zero() {
                return Err(UserError::new("--health-timeout must be longer than 0s").into());
            }
            Ok(d)
        }
        None => Ok(upcfg::DEFAULT_HEALTH_TIMEOUT),
    }
}

/// Stops `name` and puts the verified archive's data and state files back.
pub async fn restore(
    docker: &bollard::Docker,
    name: &str,
    archive: &std::path::Path,
    files: &StateFiles,
    printer: &Printer,
) -> anyhow::Result<()> {
    dupdate::stop(docker, name).await?;
    crate::state::create_private_dir(files.project.dir())?;
    backup::restore_volume(docker, name, archive, files.project.dir(), printer).await?;
    let (a, f) = (archive.to_path_buf(), files.clone());
    let written =
        tokio::task::spawn_blocking(move || backup::restore_state_files(&a, &f)).await??;
    if !written.is_empty() {
        printer.line(format!(
            "restored {} state files (mode 0600)",
            written.len()
        ));
    }
    Ok(())
}

/// A container runs with the secret in its environment: when the restored
/// `secret_key` differs, recreate it (same spec, restored secret).
async fn recreate_if_secret_changed(
    docker: &bollard::Docker,
    name: &str,
    archive: &std::path::Path,
    env: &[String],
    printer: &Printer,
) -> anyhow::Result<()> {
    let a = archive.to_path_buf();
    let Some(secret) = tokio::task::spawn_blocking(move || backup::archived_secret(&a)).await??
    else {
        return Ok(());
    };
    let current = env.iter().find_map(|e| e.strip_prefix("WEBUI_SECRET_KEY="));
    if current == Some(secret.as_str()) {
        return Ok(());
    }
    let c = docker
        .inspect_container(name, None)
        .await
        .map_err(|e| anyhow::Error::new(e).context(format!("cannot inspect {name}")))?;
    let (mut spec, _) = dupdate::spec_of(&c)?;
    spec.env.insert("WEBUI_SECRET_KEY".into(), secret);
    dupdate::remove(docker, name).await?;
    dupdate::create(docker, &spec).await?;
    printer.line(format!(
        "recreated {name} with the restored WEBUI_SECRET_KEY"
    ));
    Ok(())
}
