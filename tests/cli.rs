//! The command line as an operator meets it: help with examples on every command,
//! version, exit codes for usage errors, shell completions and the man page.

mod support;

use std::process::Command;
use std::time::Duration;

use support::webui;

#[test]
fn every_command_has_help_with_an_example() {
    let state = webui::state_dir();
    let top = webui::run(state.path(), &["--help"], Duration::from_secs(10));
    assert_eq!(top.status.code(), Some(0));
    let commands: Vec<String> = top
        .stdout
        .split("Commands:")
        .nth(1)
        .unwrap()
        .split("Options:")
        .next()
        .unwrap()
        .lines()
        // A command line is indented by exactly two spaces; deeper lines are wrapped text.
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect();
    assert!(commands.len() >= 5, "{commands:?}");
    for c in commands {
        let out = webui::run(state.path(), &[&c, "--help"], Duration::from_secs(10));
        assert_eq!(out.status.code(), Some(0), "{c} --help");
        assert!(
            out.stdout.contains("Example"),
            "`webui {c} --help` shows an example:\n{}",
            out.stdout
        );
    }
}

#[test]
fn version_names_the_commit_and_usage_errors_exit_1() {
    let state = webui::state_dir();
    let out = webui::run(state.path(), &["--version"], Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(0));
    assert!(
        out.stdout.starts_with("webui ") && out.stdout.contains("commit "),
        "{}",
        out.stdout
    );
    let out = webui::run(
        state.path(),
        &["up", "--network", "overlay"],
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr.contains("possible values: bridge, host"),
        "{}",
        out.stderr
    );
    let out = webui::run(state.path(), &[], Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(1), "no command is a usage error");
}

#[test]
fn bash_completions_load_and_the_man_page_renders() {
    let state = webui::state_dir();
    let out = webui::run(
        state.path(),
        &["completions", "bash"],
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(0));
    let script = state.path().join("webui.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    let check = Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && complete -p webui", script.display()))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(String::from_utf8_lossy(&check.stdout).contains("_webui"));

    let out = webui::run(state.path(), &["manpage"], Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(0));
    let page = state.path().join("webui.1");
    std::fs::write(&page, &out.stdout).unwrap();
    if Command::new("man").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "man is required in CI (man-db)"
        );
        eprintln!("skipping man -l: man is not installed");
        return;
    }
    let man = Command::new("man")
        .arg("-l")
        .arg(&page)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "80")
        .output()
        .unwrap();
    assert!(
        man.status.success(),
        "{}",
        String::from_utf8_lossy(&man.stderr)
    );
    let text = String::from_utf8_lossy(&man.stdout);
    assert!(text.contains("NAME") && text.contains("webui"), "{text}");
}
