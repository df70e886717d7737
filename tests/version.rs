//! `webui version [--check] [--json]` with the real binary: version, commit and build
//! date; `--check` against a release document served on 127.0.0.1 by this test
//! (newer, same, unreachable, not a release document), and no request at all
//! without a configured release URL.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use support::webui;

const T: Duration = Duration::from_secs(30);

/// Serves `body` as JSON to every GET on 127.0.0.1; counts the requests.
struct Release {
    url: String,
    hits: Arc<AtomicUsize>,
}

fn serve(body: String) -> Release {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://127.0.0.1:{}/webui/latest.json",
        listener.local_addr().unwrap().port()
    );
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            counter.fetch_add(1, Ordering::SeqCst);
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let mut conn = conn;
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    Release { url, hits }
}

fn version(state: &std::path::Path, url: Option<&str>, args: &[&str]) -> webui::Finished {
    let mut all = vec!["version"];
    all.extend_from_slice(args);
    let mut cmd = webui::command(state);
    cmd.args(&all).env_remove("WEBUI_RELEASE_URL");
    if let Some(u) = url {
        cmd.env("WEBUI_RELEASE_URL", u);
    }
    webui::finish(cmd, T)
}

fn ours() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

/// `ours` with the minor version raised: a release newer than this build.
fn newer() -> String {
    let v: Vec<u64> = ours().split('.').map(|p| p.parse().unwrap()).collect();
    format!("{}.{}.0", v[0], v[1] + 1)
}

#[test]
fn version_prints_what_dash_dash_version_prints() {
    let state = webui::state_dir();
    let out = version(state.path(), None, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    let long = webui::run(state.path(), &["--version"], T);
    assert_eq!(out.stdout.trim(), long.stdout.trim());
    assert!(
        out.stdout
            .starts_with(&format!("webui {} (commit ", ours()))
            && out.stdout.contains(", built 20"),
        "{}",
        out.stdout
    );
    let out = version(state.path(), None, &["--json"]);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["version"], ours());
    assert!(v["commit"].as_str().is_some_and(|c| !c.is_empty()), "{v}");
    assert!(
        v["build_date"].as_str().is_some_and(|d| d.len() == 10),
        "{v}"
    );
    assert!(v["check"].is_null(), "no --check, no check: {v}");
}

#[test]
fn check_without_a_release_url_asks_nobody() {
    let state = webui::state_dir();
    let out = version(state.path(), None, &["--check"]);
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains("no release URL configured"),
        "{}",
        out.stdout
    );
    let out = version(state.path(), None, &["--check", "--json"]);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(v["check"]["release_url"].is_null(), "{v}");
    assert_eq!(v["check"]["newer"], false);
}

#[test]
fn check_names_a_newer_release_and_says_when_up_to_date() {
    let state = webui::state_dir();
    let n = newer();
    let rel = serve(format!(
        r#"{{"version": "v{n}", "url": "https://example.com/webui/v{n}", "date": "2026-12-01", "extra": 1}}"#
    ));
    let out = version(state.path(), Some(&rel.url), &["--check"]);
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains(&format!("a newer release exists: {n}"))
            && out.stdout.contains("https://example.com/webui/v")
            && out.stdout.contains("2026-12-01"),
        "{}",
        out.stdout
    );
    let out = version(state.path(), Some(&rel.url), &["--check", "--json"]);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["check"]["newer"], true, "{v}");
    assert_eq!(v["check"]["latest"], n.as_str());
    assert_eq!(v["check"]["release_url"], rel.url.as_str());
    assert_eq!(rel.hits.load(Ordering::SeqCst), 2);

    // The same version, configured in webui.toml this time.
    let same = serve(format!(r#"{{"version": "{}"}}"#, ours()));
    std::fs::write(
        state.path().join("webui.toml"),
        format!("release_url = \"{}\"\n", same.url),
    )
    .unwrap();
    let out = version(state.path(), None, &["--check"]);
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert!(
        out.stdout
            .contains(&format!("up to date: the latest release is {}", ours())),
        "{}",
        out.stdout
    );
    assert_eq!(same.hits.load(Ordering::SeqCst), 1);
}

#[test]
fn check_against_an_unreachable_or_wrong_url_exits_1_saying_why() {
    let state = webui::state_dir();
    // A port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/latest.json");
    let out = version(state.path(), Some(&url), &["--check"]);
    assert_eq!(out.status.code(), Some(1), "{}", out.stdout);
    assert!(
        out.stderr
            .contains(&format!("cannot check for a newer release at {url}"))
            && out.stderr.contains("hint:"),
        "{}",
        out.stderr
    );

    let html = serve("<html>not json</html>".into());
    let out = version(state.path(), Some(&html.url), &["--check"]);
    assert_eq!(out.status.code(), Some(1), "{}", out.stdout);
    assert!(
        out.stderr.contains("did not answer a release document"),
        "{}",
        out.stderr
    );

    let out = version(state.path(), Some("not a url"), &["--check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stderr.contains("not an http(s) URL"), "{}", out.stderr);
}
