//! `webui update [--version vX.Y.Z | --image REF] [--check] [--json]`.
//!
//! 1. Target: `--image REF`; `--version V` (that tag of the running image's
//!    repository); default: the reference the project is configured with (the pin's,
//!    else the container's), pulled anew (with progress).
//! 2. Same image id as the running container: "up to date", exit 0. `--check` stops
//!    here either way (exit 0; "update available: OLD -> NEW").
//! 3. Stop Open WebUI (from here the proxy of a running `webui up` shows its
//!    "restarting" page, after its next failed health checks), back up the stopped
//!    container's volume (consistent by construction), rename the old container
//!    `<name>-pre-update`, create the new one from the same spec (volume,
//!    environment, secret, ports, network, labels) with the new image, and wait for
//!    `/health` (`--health-timeout`, default 30 min: migrations can be slow), then
//!    for 10 s more it must neither exit, restart nor turn unhealthy.
//! 4. Healthy: the old container is removed; `history.json` records the update, the
//!    pin (so `webui up` keeps the new image) and the backup among the update
//!    backups, of which the newest `--keep-backups` (default 3, or `all`) are kept
//!    and older ones removed. Backups made with `webui backup` are never removed.
//!    Not healthy in time, stopped, or crash-looping: its last log lines are printed
//!    and saved to `<project dir>/update-failed-<time>.log`, it is removed, the data
//!    volume is restored from the backup (byte-identical), the old container is
//!    renamed back and started, and the command exits 1 with that report.
//!
//! With replicas (`webui up --replicas N`, N > 1) steps 3-4 are a rolling update
//! instead (`commands::rolling`): the shared database is dumped, then one replica at a
//! time leaves the running proxy's rotation, is drained, replaced and health-checked,
//! and rejoins; the others serve throughout. A replica that fails is put back and the
//! roll stops (exit 1); nothing is restored from the dump automatically.
//!
//! `--json` prints one object: `{"project", "running": {"image", "image_id",
//! "digest"}, "target": {...}, "update_available", "outcome": "up-to-date" |
//! "update-available" | "updated" | "rolled-back" | "stopped" (a roll that stopped),
//! "backup": FILE | null (the data volume's archive, or the roll's database dump),
//! "database_in_backup": true (when the archive holds the Postgres database),
//! "replicas": [{"replica", "container", "outcome": "updated" | "up-to-date" |
//! "rolled-back" | "failed" | "not-reached"}] (with replicas only),
//! "removed_backups": [FILE] (older update backups removed; when there were any)}`.
//!
//! A running `webui up` is told over its control socket: `updating` / `updated`
//! around the single container's swap (its "being updated" page), `replica-*` per
//! replica during a roll.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::cli::{GlobalArgs, PullPolicy, UpdateCmd};
use crate::config::Paths;
use crate::config::up::{self as upcfg, Project};
use crate::docker::backup;
use crate::docker::pin::{History, Pin, UpdateRecord, now_rfc3339};
use crate::docker::spec::{LABEL_DIGEST, LABEL_UPSTREAM, Names, short_id};
use crate::docker::update::{self as dupdate, ASIDE_SUFFIX};
use crate::docker::{self, health, logs, pull};
use crate::error::UserError;
use crate::output::Printer;

use super::rolling;

/// How long the new version must stay up and healthy after its first healthy answer
/// (a crash loop can answer once before it exits).
const SETTLE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Serialize)]
struct ImageReport {
    image: String,
    image_id: String,
    digest: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
struct Report {
    project: String,
    running: ImageReport,
    target: ImageReport,
    update_available: bool,
    outcome: &'static str,
    backup: Option<String>,
    /// Whether `backup` holds the Postgres database (a single container on Postgres).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    database_in_backup: bool,
    /// With replicas (`up --replicas N`): what each went through.
    #[serde(skip_serializing_if = "Option::is_none")]
    replicas: Option<Vec<rolling::ReplicaReport>>,
    /// Older update backups removed by `--keep-backups`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    removed_backups: Vec<String>,
}

impl ImageReport {
    fn shown(&self) -> String {
        self.digest
            .clone()
            .unwrap_or_else(|| format!("{} ({})", self.image, short_id(&self.image_id)))
    }
}

pub async fn run(global: &GlobalArgs, cmd: &UpdateCmd, printer: Printer) -> anyhow::Result<u8> {
    let paths = Paths::resolve(global);
    let project = Project::resolve(global.project.as_deref())?;
    let timeout = super::restore::health_timeout(cmd.health_timeout.as_deref(), &paths)?;
    let keep = match &cmd.keep_backups {
        Some(flag) => keep_backups(Some(flag))?,
        None => {
            // A config file that does not parse is `up`'s to report; here it only
            // means no setting from it.
            let file = paths.load_file().unwrap_or_default();
            let from_file = file.keep_backups.as_ref().map(|v| v.as_flag_value());
            keep_backups(from_file.as_deref()).map_err(|e| file.blame(e))?
        }
    };
    let files = super::backup::state_files(&paths, &project);
    let state = files.project.clone();
    let docker = docker::connect().await?;
    let name = Names::new(&project).open_webui;
    let aside = format!("{name}{ASIDE_SUFFIX}");
    // Under --json stdout is for the report: progress lines are left out.
    let printer = if cmd.json {
        Printer::new(true)
    } else {
        printer
    };

    if dupdate::exists(&docker, &aside).await {
        return Err(UserError::new(format!(
            "a container {aside} exists: an earlier update was interrupted"
        ))
        .hint(format!(
            "if {name} runs fine, remove it with `docker rm {aside}`; otherwise `docker rm -f {name}` and `docker rename {aside} {name}`, then `webui{} up`",
            project.flag()
        ))
        .into());
    }
    // `up --replicas N`: a rolling update (an interrupted one is refused here).
    let replicas = rolling::find(&docker, &project).await?;
    let rolling = replicas.len() > 1;
    let c = match docker.inspect_container(&name, None).await {
        Ok(c) => c,
        Err(e) if docker::is_not_found(&e) => {
            return Err(
                UserError::new(format!("there is no container {name} to update"))
                    .hint(format!("start it with `webui{} up`", project.flag()))
                    .into(),
            );
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot inspect {name}"))),
    };
    let (old_spec, exact) = dupdate::spec_of(&c)?;
    let labels = c
        .config
        .as_ref()
        .and_then(|c| c.labels.clone())
        .unwrap_or_default();
    let running = ImageReport {
        image: old_spec.image.clone(),
        image_id: old_spec.image_id.clone(),
        digest: labels.get(LABEL_DIGEST).cloned(),
    };
    let history = History::load(&state);
    let pin = history
        .pin
        .clone()
        .filter(|p| p.image_id == running.image_id);
    // What `webui up` is configured with, as far as webui knows.
    let configured = pin
        .as_ref()
        .map(|p| p.configured.clone())
        .unwrap_or_else(|| running.image.clone());
    let target_ref = match (&cmd.image, &cmd.version) {
        (Some(i), _) => {
            upcfg::check_image("--image", i)?;
            i.clone()
        }
        (None, Some(v)) => upcfg::with_version(&configured, v)?,
        (None, None) => configured.clone(),
    };

    let mut ignore = |_: u8| {};
    let img = pull::ensure(
        &docker,
        &target_ref,
        PullPolicy::Always,
        &printer,
        &mut ignore,
    )
    .await?;
    let target = ImageReport {
        image: target_ref.clone(),
        image_id: img.id.clone(),
        digest: img.digest.clone(),
    };
    let available = target.image_id != running.image_id
        || replicas.iter().any(|r| r.spec.image_id != target.image_id);
    let mut report = Report {
        project: project.key().to_string(),
        running: running.clone(),
        target: target.clone(),
        update_available: available,
        outcome: if available {
            "update-available"
        } else {
            "up-to-date"
        },
        backup: None,
        database_in_backup: false,
        removed_backups: Vec::new(),
        replicas: None,
    };
    if !available || cmd.check {
        if !cmd.json {
            if available {
                printer.line(format!(
                    "update available: {} -> {}",
                    running.shown(),
                    target.shown()
                ));
                printer.line(format!(
                    "`webui{} update{}` applies it (backup first, rollback if it fails)",
                    project.flag(),
                    match (&cmd.image, &cmd.version) {
                        (Some(i), _) => format!(" --image {i}"),
                        (None, Some(v)) => format!(" --version {v}"),
                        _ => String::new(),
                    }
                ));
            } else {
                printer.line(format!(
                    "up to date: {name} runs {} ({})",
                    target_ref,
                    running.shown()
                ));
            }
        }
        print_json(cmd.json, &report)?;
        return Ok(0);
    }
    if !exact {
        printer.line(format!(
            "note: {name} was made by another webui version; its settings are read back from its labels"
        ));
    }

    // Recorded when the update succeeds, with the backup it made.
    let success = Success {
        running: &running,
        target: &target,
        configured,
        img: &img,
        backup: None,
        keep,
    };
    if rolling {
        let roll = rolling::Roll {
            docker: &docker,
            project: &project,
            state: &state,
            socket: crate::control::socket_path(&paths.state_dir, project.key()),
            backups: paths.state_dir.join("backups"),
            target: rolling::Target {
                image: target_ref.clone(),
                image_id: img.id.clone(),
                digest: img.digest.clone(),
                shown: target.shown(),
            },
            timeout,
            printer: &printer,
        };
        let mut reports = Vec::new();
        let mut dump = None;
        let result = roll.run(&replicas, &mut reports, &mut dump).await;
        report.replicas = Some(reports);
        report.backup = dump.as_ref().map(|d| d.display().to_string());
        if let Err(e) = result {
            report.outcome = "stopped";
            let _ = print_json(cmd.json, &report);
            return Err(e);
        }
        let backup = dump.as_deref();
        report.removed_backups = record_success(&state, Success { backup, ..success }, &printer);
        printer.line(format!(
            "updated all {} replicas to {}",
            replicas.len(),
            target.shown()
        ));
        report.outcome = "updated";
        print_json(cmd.json, &report)?;
        return Ok(0);
    }

    // Swap.
    printer.line(format!(
        "updating {name}: {} -> {}",
        running.shown(),
        target.shown()
    ));
    // A running `webui up` shows the "updating" page and leaves the containers alone
    // until told `updated`, whatever happens below.
    let socket = crate::control::socket_path(&paths.state_dir, project.key());
    let supervised = crate::control::request(&socket, "updating")
        .await
        .is_some_and(|v| v["ok"] == true);
    let result = async {
        printer.line(format!("stopping {name}"));
        dupdate::stop(&docker, &name).await?;
        let made = match super::backup::make(&docker, &project, &files, None, &printer).await {
            Ok(m) => m,
            Err(e) => {
                let _ = dupdate::start(&docker, &name).await;
                return Err(e.context(format!(
                    "the backup failed, so nothing was updated; {name} was started again"
                )));
            }
        };
        report.backup = Some(made.path.display().to_string());
        report.database_in_backup = backup::has_database(&made.manifest);
        printer.line(format!("backup: {}", made.path.display()));
        dupdate::rename(&docker, &name, &aside).await?;
        let new_spec = dupdate::with_image(
            old_spec.clone(),
            &target_ref,
            &img.id,
            img.digest.as_deref(),
        );
        let upstream = labels
            .get(LABEL_UPSTREAM)
            .cloned()
            .unwrap_or_else(|| "http://127.0.0.1:3000".into());
        let attempt = async {
            dupdate::create(&docker, &new_spec).await?;
            dupdate::start(&docker, &name).await?;
            printer.line(format!(
                "started {name} from {target_ref}; waiting for it to become healthy (up to {}; migrations can take long)",
                health::elapsed_text(timeout)
            ));
            let mut tick = |_: Duration| {};
            let took = health::wait(&docker, &name, &upstream, timeout, &printer, &mut tick).await?;
            printer.line(format!(
                "{name} answered healthy after {}; watching it for {} more",
                health::elapsed_text(took),
                health::elapsed_text(SETTLE)
            ));
            dupdate::stays_up(&docker, &name, &upstream, SETTLE).await?;
            Ok::<Duration, anyhow::Error>(took)
        }
        .await;

        match attempt {
            Ok(took) => {
                dupdate::remove(&docker, &aside).await?;
                let backup = Some(made.path.as_path());
                report.removed_backups =
                    record_success(&state, Success { backup, ..success }, &printer);
                printer.line(format!(
                    "updated {name} to {} (healthy after {}); backup of the data before: {}",
                    target.shown(),
                    health::elapsed_text(took),
                    made.path.display()
                ));
                report.outcome = "updated";
                print_json(cmd.json, &report)?;
                Ok(0)
            }
            Err(why) => {
                let why_text = crate::error::render(&why)
                    .trim_start_matches("error: ")
                    .to_string();
                printer.warn(format!("the new version did not come up: {why_text}"));
                let log_file = save_logs(&docker, &name, &state).await;
                printer.line(format!(
                    "rolling back to {} and restoring the data{} from {}",
                    running.shown(),
                    if backup::has_database(&made.manifest) {
                        " and the Postgres database"
                    } else {
                        ""
                    },
                    made.path.display(),
                ));
                let rolled = rollback(
                    &docker, &project, &name, &aside, &made, &files, &upstream, timeout, &printer,
                )
                .await;
                let (outcome, detail) = match &rolled {
                    Ok(()) => ("rolled-back", why_text.clone()),
                    Err(e) => ("failed", format!("{why_text}; rollback failed: {e:#}")),
                };
                let rec = UpdateRecord {
                    at: now_rfc3339(),
                    from: running.shown(),
                    to: target.shown(),
                    outcome: outcome.into(),
                    detail: Some(detail),
                };
                let _ = History::update(&state, |h| h.last_update = Some(rec));
                let logs_hint = match &log_file {
                    Some(p) => format!("the failed start's logs are in {}", p.display()),
                    None => "the failed start's logs could not be saved".to_string(),
                };
                report.outcome = if rolled.is_ok() {
                    "rolled-back"
                } else {
                    "failed"
                };
                let _ = print_json(cmd.json, &report);
                match rolled {
                    Ok(()) => Err(UserError::new(format!(
                        "update of {name} to {} failed and was rolled back: {} runs again with the data from before the update ({})",
                        target.shown(),
                        running.shown(),
                        made.path.display()
                    ))
                    .hint(format!(
                        "{logs_hint}; `webui{} logs open-webui` shows the running version",
                        project.flag()
                    ))
                    .into()),
                    Err(e) => Err(e.context(format!(
                        "update of {name} to {} failed ({why_text}) and the rollback failed too; the backup is {} (`webui restore` it); {logs_hint}",
                        target.shown(),
                        made.path.display()
                    ))),
                }
            }
        }
    }
    .await;
    if supervised {
        let _ = crate::control::request(&socket, "updated").await;
    }
    result
}

/// What [`record_success`] records.
struct Success<'a> {
    running: &'a ImageReport,
    target: &'a ImageReport,
    configured: String,
    img: &'a pull::Image,
    /// The backup this update made.
    backup: Option<&'a Path>,
    /// `--keep-backups`: how many update backups to keep (`None`: all).
    keep: Option<usize>,
}

/// Records a successful update in `history.json`: the update, the pin (so that
/// `webui up` keeps the new image) and its backup; then removes the update backups
/// beyond `keep`, oldest first, and returns them. A failure to write is a warning (and
/// nothing is removed).
fn record_success(
    state: &crate::docker::project::ProjectState,
    s: Success<'_>,
    printer: &Printer,
) -> Vec<String> {
    let at = now_rfc3339();
    let rec = UpdateRecord {
        at: at.clone(),
        from: s.running.shown(),
        to: s.target.shown(),
        outcome: "updated".into(),
        detail: None,
    };
    let pin = Pin {
        configured: s.configured,
        image: s.target.image.clone(),
        image_id: s.img.id.clone(),
        digest: s.img.digest.clone(),
        at,
    };
    let mut old = Vec::new();
    if let Err(e) = History::update(state, |h| {
        h.last_update = Some(rec);
        h.pin = Some(pin);
        if let Some(b) = s.backup {
            h.update_backups.push(b.display().to_string());
        }
        if let Some(keep) = s.keep {
            let extra = h.update_backups.len().saturating_sub(keep);
            old = h.update_backups.drain(..extra).collect();
        }
    }) {
        printer.warn(format!("cannot record the update in history.json: {e:#}"));
        return Vec::new();
    }
    let mut removed = Vec::new();
    for file in old {
        let path = Path::new(&file);
        // Only what `webui update` writes, whatever history.json says.
        let ours = path
            .file_name()
            .map(|n| n.to_string_lossy())
            .is_some_and(|n| n.starts_with("webui-backup-") || n.starts_with("webui-db-"));
        if !ours {
            continue;
        }
        match std::fs::remove_file(path) {
            Ok(()) => removed.push(file),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => printer.warn(format!("cannot remove the old update backup {file}: {e}")),
        }
    }
    if !removed.is_empty() {
        printer.line(format!(
            "removed {} older update backup{} (--keep-backups {}): {}",
            removed.len(),
            if removed.len() == 1 { "" } else { "s" },
            s.keep.map_or("all".to_string(), |k| k.to_string()),
            removed.join(", ")
        ));
    }
    removed
}

/// `--keep-backups` (or `keep_backups` in the config file): a number of backups (1 or
/// more), or `all` (`None`); 3 when not given.
fn keep_backups(flag: Option<&str>) -> anyhow::Result<Option<usize>> {
    let Some(v) = flag else {
        return Ok(Some(DEFAULT_KEEP_BACKUPS));
    };
    if v.eq_ignore_ascii_case("all") {
        return Ok(None);
    }
    match v.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(Some(n)),
        _ => Err(UserError::new(format!(
            "--keep-backups `{v}` is not a number of backups (1 or more) or `all`"
        ))
        .hint("e.g. --keep-backups 5; `all` never removes an update's backup")
        .into()),
    }
}

/// Update backups kept when `--keep-backups` is not given.
const DEFAULT_KEEP_BACKUPS: usize = 3;

/// Removes the failed container, restores the data into the old one (stopped), puts
/// it back under its name and starts it.
#[allow(clippy::too_many_arguments)]
async fn rollback(
    docker: &bollard::Docker,
    project: &Project,
    name: &str,
    aside: &str,
    made: &backup::Created,
    files: &backup::StateFiles,
    upstream: &str,
    timeout: Duration,
    printer: &Printer,
) -> anyhow::Result<()> {
    dupdate::stop(docker, name).await?;
    dupdate::remove(docker, name).await?;
    let a = made.path.clone();
    tokio::task::spawn_blocking(move || backup::verify(&a)).await??;
    if backup::has_database(&made.manifest) {
        // The new version may have migrated the database already: back to the one
        // the old version knew, before anything of the old version starts.
        super::restore::restore_archived_database(docker, project, &made.path, files).await?;
        printer.line(format!(
            "restored the Postgres database from {}",
            made.path.display()
        ));
    }
    super::restore::restore(docker, aside, &made.path, files, printer).await?;
    dupdate::rename(docker, aside, name).await?;
    dupdate::start(docker, name).await?;
    let mut tick = |_: Duration| {};
    let took = health::wait(docker, name, upstream, timeout, printer, &mut tick).await?;
    printer.line(format!(
        "rolled back: {name} is healthy again (after {})",
        health::elapsed_text(took)
    ));
    Ok(())
}

/// The failed container's last lines: printed, and saved (0600) for later.
pub(super) async fn save_logs(
    docker: &bollard::Docker,
    name: &str,
    state: &crate::docker::project::ProjectState,
) -> Option<PathBuf> {
    let lines = logs::tail_lines(docker, name, 500).await.ok()?;
    let stamp: String = now_rfc3339()
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    let path = state.dir().join(format!("update-failed-{stamp}.log"));
    crate::state::create_private_dir(state.dir()).ok()?;
    crate::state::write_private(&path, (lines.join("\n") + "\n").as_bytes()).ok()?;
    Some(path)
}

fn print_json(json: bool, report: &Report) -> anyhow::Result<()> {
    if !json {
        return Ok(());
    }
    let text = serde_json::to_string_pretty(report)?;
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{text}")
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        return Err(e.into());
    }
    Ok(())
}
