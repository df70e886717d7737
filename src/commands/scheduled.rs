//! `webui up --backup-every DURATION [--backup-keep N] [--backup-dir DIR]`: backups
//! made by the running `up`, as `webui backup` makes them (online where the image has
//! python3, with the Postgres dump on Postgres), into a directory of their own
//! (default `<state-dir>/backups/scheduled`, mode 0700), the newest N kept.
//!
//! - When: the newest archive of this project in that directory plus the interval, so
//!   a restart of `up` neither skips nor repeats one; with none there, as soon as the
//!   scheduler starts (Open WebUI's first health check done), which also shows at once
//!   whether backups work.
//! - Not while `webui update` swaps the container (it backs up itself): the backup
//!   waits until the update is over.
//! - A failed backup is logged, kept for `webui status` (and its last errors), and
//!   tried again after the interval or an hour, whichever is sooner.
//! - Removing: each new archive is read back whole ([`backup::verify`]) first (one
//!   that fails is renamed `<name>.unverified` and counts as a failed backup); then
//!   the oldest of this project's archives in the directory beyond N are removed. Only
//!   names this schedule writes (`webui-backup-<project>-<YYYYMMDDTHHMMSSZ>.tar.gz`)
//!   count: other files, other projects' archives, `webui backup`'s and `webui
//!   update`'s (elsewhere) are never touched.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::config::up::{BackupSchedule, Project};
use crate::docker::backup::{self, StateFiles};
use crate::docker::pin::History;
use crate::output::Printer;
use crate::supervisor::{self, BackupsLive, SharedLive};

/// The longest wait before a failed backup is tried again.
const RETRY: Duration = Duration::from_secs(3600);
/// How often a backup held back by an update looks again.
const UPDATE_WAIT: Duration = Duration::from_secs(5);

/// Where scheduled backups go without `--backup-dir`.
pub fn default_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("backups").join("scheduled")
}

/// The directory scheduled backups go to.
pub fn dir(schedule: &BackupSchedule, state_dir: &Path) -> PathBuf {
    schedule
        .dir
        .clone()
        .unwrap_or_else(|| default_dir(state_dir))
}

/// Makes the directory (0700, like the state dir) before anything starts, so a path
/// that cannot be written is refused up front.
pub fn prepare(schedule: &BackupSchedule, state_dir: &Path) -> anyhow::Result<PathBuf> {
    let dir = dir(schedule, state_dir);
    crate::state::create_private_dir(&dir).map_err(|e| {
        crate::error::UserError::new(format!(
            "--backup-dir {}: cannot make or use it: {e:#}",
            dir.display()
        ))
        .hint("give a directory root (or the user running webui) can write, e.g. on another disk")
    })?;
    Ok(dir)
}

/// Removes the oldest of `project`'s archives in `dir` beyond `keep`; returns them.
pub fn prune(dir: &Path, project: &str, keep: usize) -> Vec<PathBuf> {
    let all = backup::archives(dir, project);
    let extra = all.len().saturating_sub(keep);
    let mut removed = Vec::new();
    for (_, path) in all.into_iter().take(extra) {
        match std::fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(e) => tracing::warn!("cannot remove the old backup {}: {e}", path.display()),
        }
    }
    removed
}

/// Renames a backup that failed its check to `<name>.unverified`; the new path.
fn set_aside(path: &Path) -> PathBuf {
    let mut aside = path.as_os_str().to_owned();
    aside.push(".unverified");
    let aside = PathBuf::from(aside);
    match std::fs::rename(path, &aside) {
        Ok(()) => aside,
        Err(_) => path.to_path_buf(),
    }
}

fn text(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The scheduler: runs until `token` is cancelled.
pub struct Scheduler {
    pub project: Project,
    pub files: StateFiles,
    pub schedule: BackupSchedule,
    pub dir: PathBuf,
    pub live: SharedLive,
    pub printer: Printer,
}

impl Scheduler {
    pub async fn run(self, token: CancellationToken) -> anyhow::Result<()> {
        let every = self.schedule.every;
        let key = self.project.key().to_string();
        let dir = self.dir.display().to_string();
        if let Err(e) = History::update(&self.files.project, |h| h.scheduled_dir = Some(dir)) {
            tracing::debug!("cannot record the backup directory in history.json: {e:#}");
        }
        supervisor::edit(&self.live, |l| {
            l.backups = Some(BackupsLive::new(&self.schedule, &self.dir))
        });
        // A newest archive stamped ahead of the clock (it was wrong then) waits no
        // longer than one interval.
        let mut next = backup::archives(&self.dir, &key)
            .last()
            .map_or(SystemTime::now(), |(at, _)| *at + every)
            .min(SystemTime::now() + every);
        loop {
            self.show(|b| b.next_at = Some(text(next)));
            let wait = next
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            tokio::select! {
                _ = token.cancelled() => return Ok(()),
                _ = tokio::time::sleep(wait) => {}
            }
            if supervisor::snapshot(&self.live).updating {
                next = SystemTime::now() + UPDATE_WAIT;
                continue;
            }
            let outcome = tokio::select! {
                _ = token.cancelled() => return Ok(()),
                r = self.once() => r,
            };
            next = match outcome {
                Ok(()) => SystemTime::now() + every,
                Err(e) => {
                    let message = format!("scheduled backup failed: {e:#}");
                    self.printer.warn(&message);
                    supervisor::record_error(&self.live, message.clone());
                    self.show(|b| b.last_error = Some(message));
                    SystemTime::now() + every.min(RETRY)
                }
            };
        }
    }

    /// One backup, verified, then the old ones pruned.
    async fn once(&self) -> anyhow::Result<()> {
        let docker = crate::docker::connect().await?;
        let made = super::backup::make(
            &docker,
            &self.project,
            &self.files,
            Some(&self.dir),
            &self.printer,
        )
        .await?;
        let path = made.path.clone();
        let checked = tokio::task::spawn_blocking(move || backup::verify(&path))
            .await
            .map_err(|e| anyhow::anyhow!("the check of the new backup failed: {e}"))?;
        if let Err(e) = checked {
            // Out of the schedule's names, so that it neither counts as the newest
            // backup nor pushes a good one out; kept for a look.
            let aside = set_aside(&made.path);
            return Err(e.context(format!(
                "the new backup does not read back whole (kept as {}); older ones are kept",
                aside.display()
            )));
        }
        let removed = prune(&self.dir, self.project.key(), self.schedule.keep);
        let mut line = format!("scheduled backup written: {}", made.path.display());
        if !removed.is_empty() {
            line.push_str(&format!(
                " (removed {} older, keeping {})",
                removed.len(),
                self.schedule.keep
            ));
        }
        self.printer.line(line);
        self.show(|b| {
            b.last = Some(made.path.display().to_string());
            b.last_at = Some(made.manifest.created.clone());
            b.last_error = None;
            b.made += 1;
        });
        Ok(())
    }

    fn show(&self, f: impl FnOnce(&mut BackupsLive)) {
        supervisor::edit(&self.live, |l| {
            if let Some(b) = l.backups.as_mut() {
                f(b);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_projects_archives_count_and_the_oldest_go() {
        let dir = tempfile::tempdir().unwrap();
        let names = [
            "webui-backup-p-20261123T010000Z.tar.gz",
            "webui-backup-p-20261125T010000Z.tar.gz",
            "webui-backup-p-20261124T010000Z.tar.gz",
            // Another project whose name starts like this one's.
            "webui-backup-p-2-20261120T010000Z.tar.gz",
            // Not a name the schedule writes.
            "webui-backup-p-latest.tar.gz",
            "notes.txt",
        ];
        for n in names {
            std::fs::write(dir.path().join(n), b"x").unwrap();
        }
        let found: Vec<String> = backup::archives(dir.path(), "p")
            .iter()
            .map(|(_, p)| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(found, [names[0], names[2], names[1]]);

        let removed = prune(dir.path(), "p", 2);
        assert_eq!(removed, [dir.path().join(names[0])]);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let mut expected: Vec<&str> = names[1..].to_vec();
        expected.sort();
        assert_eq!(left, expected);
        assert!(prune(dir.path(), "p", 2).is_empty());
    }

    #[test]
    fn a_backup_that_fails_its_check_leaves_the_schedules_names() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("webui-backup-p-20261123T010000Z.tar.gz");
        let bad = dir.path().join("webui-backup-p-20261124T010000Z.tar.gz");
        std::fs::write(&good, b"x").unwrap();
        std::fs::write(&bad, b"x").unwrap();
        let aside = set_aside(&bad);
        assert!(aside.exists() && !bad.exists());
        let left: Vec<PathBuf> = backup::archives(dir.path(), "p")
            .into_iter()
            .map(|(_, p)| p)
            .collect();
        assert_eq!(left, [good], "the good one stays the newest");
        assert!(prune(dir.path(), "p", 1).is_empty());
    }
}
