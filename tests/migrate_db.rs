//! `webui migrate-db` refusals that need no Open WebUI image: each exits 1 with what
//! was wrong and what to do, and creates nothing (no Postgres container, volume or
//! password file). The migration itself, against the real Open WebUI, is
//! `tests/e2e/migrate.sh`.

mod support;
#[path = "supervision_support/mod.rs"]
mod sv;

use std::path::Path;
use std::time::Duration;

use support::webui::{self, Finished};

fn migrate(state: &Path, project: &str, extra: &[&str]) -> Finished {
    let mut args = vec!["--project", project, "migrate-db", "--to", "postgres"];
    args.extend_from_slice(extra);
    webui::run(state, &args, Duration::from_secs(60))
}

fn assert_refused(f: &Finished, needle: &str) {
    assert_eq!(
        f.status.code(),
        Some(1),
        "stdout: {}\nstderr: {}",
        f.stdout,
        f.stderr
    );
    assert!(f.stderr.contains(needle), "`{needle}` not in: {}", f.stderr);
}

fn nothing_made(state: &Path, project: &str) {
    let dir = state.join("projects").join(project);
    assert!(
        !dir.join("postgres_password").exists(),
        "a password file was written"
    );
    assert!(!dir.join("database.json").exists() || project == "t-h4-mig-done");
    let (_, out) = sv::docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("name=^{project}-postgres$"),
    ]);
    assert!(out.trim().is_empty(), "a Postgres container was made");
    let (_, out) = sv::docker(&[
        "volume",
        "ls",
        "-q",
        "--filter",
        &format!("name=^{project}-postgres$"),
    ]);
    assert!(out.trim().is_empty(), "a Postgres volume was made");
}

#[test]
fn a_project_already_on_postgres_is_refused_before_anything() {
    let state = webui::state_dir();
    let project = "t-h4-mig-done";
    let dir = state.path().join("projects").join(project);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("database.json"),
        r#"{"engine":"postgres","image":"postgres:17","migrated_at":"2026-01-01T00:00:00Z","backup":"b.tar.gz","rows":{}}"#,
    )
    .unwrap();
    let f = migrate(state.path(), project, &[]);
    assert_refused(&f, "is already on postgres");
    assert!(
        f.stderr.contains("up --replicas"),
        "the hint names the next step: {}",
        f.stderr
    );
}

#[test]
fn a_project_without_open_webui_is_refused() {
    if sv::docker_available().is_none() {
        return;
    }
    let state = webui::state_dir();
    let project = "t-h4-mig-none";
    let f = migrate(state.path(), project, &[]);
    assert_refused(&f, "nothing to migrate");
    assert!(
        f.stderr.contains("--project"),
        "the hint says how: {}",
        f.stderr
    );
    nothing_made(state.path(), project);
}

#[test]
fn a_backup_that_is_not_one_is_refused_before_anything() {
    let state = webui::state_dir();
    let project = "t-h4-mig-bad";
    let bogus = state.path().join("not-a-backup.tar.gz");
    std::fs::write(&bogus, b"this is not a webui backup").unwrap();
    let f = migrate(
        state.path(),
        project,
        &["--backup", bogus.to_str().unwrap()],
    );
    assert_refused(&f, "not-a-backup.tar.gz");
    assert!(
        f.stderr.contains("damaged"),
        "says what is wrong: {}",
        f.stderr
    );
    if sv::docker_available().is_some() {
        nothing_made(state.path(), project);
    }
}
