//! Supervision of `webui up` against the real dockerd (issue #5): containers that
//! die, crash loops, the launcher killed and started again, SIGTERM with a stream
//! open, a second instance, live status over the control socket.
//!
//! Same rules as `tests/docker.rs`: a project `t-<name>-<pid>` per test removed by a
//! guard, skipped with a reason without dockerd outside CI, a failure in CI. Restarting
//! dockerd itself is in `tests/supervision_dockerd.rs`, a separate binary cargo runs
//! after this one.

mod support;
#[path = "supervision_support/mod.rs"]
mod sv;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::webui::{self, Webui};
use sv::*;

/// The open-webui entry of the supervisor's live state.
fn live_ow(s: &Value) -> Value {
    s["supervisor"]["services"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["service"] == "open-webui").cloned())
        .unwrap_or(Value::Null)
}

/// Requests during an outage: returns what was seen until `/health` is 200 again.
async fn through_outage(
    c: &reqwest::Client,
    w: &Webui,
    limit: Duration,
) -> Vec<(u16, String, String, String, bool)> {
    let start = Instant::now();
    let mut seen = Vec::new();
    let mut saw_outage = false;
    loop {
        let html = seen.len() % 2 == 0;
        let (s, ct, ra, body) = fetch(c, &w.https_url("/health"), html).await;
        if s != 200 {
            saw_outage = true;
            seen.push((s, ct, ra, body, html));
        } else if saw_outage {
            return seen;
        }
        assert!(
            start.elapsed() < limit,
            "not serving again within {limit:?}; seen {:?}\n{}",
            seen.iter().map(|x| x.0).collect::<Vec<_>>(),
            w.output_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn assert_starting_pages(seen: &[(u16, String, String, String, bool)], text: &str) {
    assert!(!seen.is_empty());
    for (s, ct, ra, body, html) in seen {
        assert_eq!(
            *s, 503,
            "only the starting page during the outage, never a proxy error: {body}"
        );
        assert_eq!(ra, "5", "Retry-After");
        if *html {
            assert!(ct.starts_with("text/html"), "{ct}");
            assert!(
                !body.contains("127.0.0.1"),
                "no internal address on the public page"
            );
        } else {
            assert!(ct.starts_with("application/json"), "{ct}");
            let v: Value = serde_json::from_str(body).unwrap();
            assert!(v["error"].as_str().unwrap().starts_with("upstream_"), "{v}");
        }
    }
    assert!(
        seen.iter().any(|x| x.4 && x.3.contains(text)),
        "a page says `{text}`: {:?}",
        seen.iter().map(|x| &x.3).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_container_is_restarted_and_requests_meanwhile_get_the_starting_page() {
    let Some(img) = docker_available() else {
        return;
    };
    let p = Cleanup::new("sv-kill");
    let state = webui::state_dir();
    let (hook, posted) = support::webhook::start();
    let hook_file = state.path().join("notify.url");
    std::fs::write(&hook_file, &hook).unwrap();
    let w = up(
        state.path(),
        &p,
        &img.tag("v1"),
        free_port(),
        "127.0.0.1:0",
        &["--notify-url-file", hook_file.to_str().unwrap()],
    );
    wait_ready(&w);
    let c = client(state.path());
    let name = p.n("open-webui");
    let id = inspect(&name, "{{.Id}}");
    let heard = |needle: &str| support::webhook::heard(&posted, needle, Duration::from_secs(20));
    assert!(
        heard(&format!("Open WebUI is ready at {}", w.https_url(""))),
        "the webhook heard of the start: {:?}",
        posted.lock().unwrap()
    );
    let f = run(state.path(), &p, &["status"]);
    assert!(
        f.stdout
            .contains("problems are sent to the webhook at 127.0.0.1\n"),
        "{}",
        f.stdout
    );

    // SIGKILL of its process: Docker's own policy (unless-stopped) restarts it; the
    // supervisor shows the starting page until /health answers again.
    let pid = inspect(&name, "{{.State.Pid}}");
    assert!(
        std::process::Command::new("kill")
            .args(["-9", &pid])
            .status()
            .unwrap()
            .success()
    );
    let seen = through_outage(&c, &w, Duration::from_secs(30)).await;
    assert!(
        heard(&format!("{name} exited with code 137")) && heard("answers again"),
        "the webhook heard of the kill and the recovery: {:?}",
        posted.lock().unwrap()
    );
    // A request racing the death (before the engine's `die` event reached the
    // supervisor) can still get the proxy's 502; once the supervisor knows, only the
    // starting page until the container answers again.
    let codes: Vec<u16> = seen.iter().map(|x| x.0).collect();
    let first_hold = codes
        .iter()
        .position(|&c| c == 503)
        .expect("the starting page was shown");
    assert!(codes[first_hold..].iter().all(|&c| c == 503), "{codes:?}");
    assert!(codes[..first_hold].iter().all(|&c| c == 502), "{codes:?}");
    assert_starting_pages(&seen[first_hold..], "");

    // `docker kill`: Docker treats it as a manual stop and does not restart it; the
    // supervisor does, after its grace period. Meanwhile: starting page, JSON 503, and
    // a 503 for a WebSocket upgrade.
    assert!(docker(&["kill", "-s", "KILL", &name]).0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = c
        .get(w.https_url("/ws/socket.io/?EIO=4&transport=websocket"))
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        503,
        "a WebSocket upgrade gets 503 while down"
    );
    let seen = through_outage(&c, &w, Duration::from_secs(30)).await;
    assert_starting_pages(&seen, "Restarting after a crash");
    assert_eq!(
        inspect(&name, "{{.Id}}"),
        id,
        "the same container, restarted"
    );
    assert!(
        w.output_text().contains(&format!("restarted {name}")),
        "{}",
        w.output_text()
    );

    // The live state from a second process (control socket).
    let s = status_json(state.path(), &p);
    assert_eq!(s["supervisor"]["pid"], w.pid(), "{s}");
    assert_eq!(s["supervisor"]["state"], "healthy", "{s}");
    let ow = live_ow(&s);
    assert_eq!(
        ow["restarts"], 1,
        "one restart by webui (the docker kill): {ow}"
    );
    assert_eq!(ow["exits"], 2, "{ow}");
    assert_eq!(ow["id"], &id[..12], "{ow}");
    assert_eq!(s["supervisor"]["https"][0], w.https[0].to_string());
    assert_eq!(s["healthy"], true);
    let f = run(state.path(), &p, &["status"]);
    assert!(
        f.stdout.contains(&format!("supervisor: pid {}", w.pid())),
        "{}",
        f.stdout
    );
    stop(w);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_loop_stops_the_restarts_and_status_says_why() {
    let Some(img) = docker_available() else {
        return;
    };
    let p = Cleanup::new("sv-loop");
    let state = webui::state_dir();
    let (hook, posted) = support::webhook::start();
    let hook_file = state.path().join("notify.url");
    std::fs::write(&hook_file, format!("{hook}\n")).unwrap();
    // This image exits with code 1 two seconds after each start.
    let w = up(
        state.path(),
        &p,
        &img.tag("crashloop"),
        free_port(),
        "127.0.0.1:0",
        &[
            "--crash-loop",
            "3/5m",
            "--notify-url-file",
            hook_file.to_str().unwrap(),
        ],
    );
    wait_output(&w, "restarts stopped (crash loop)", Duration::from_secs(90));
    let name = p.n("open-webui");

    // The webhook heard of it: the first exit once (the same message is not
    // repeated), then the crash loop; the URL's secret path is not printed.
    let messages = || -> Vec<String> {
        posted
            .lock()
            .unwrap()
            .iter()
            .map(|v| v["message"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let start = Instant::now();
    while !messages().iter().any(|m| m.contains("crash loop"))
        && start.elapsed() < Duration::from_secs(20)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = messages();
    assert!(
        got.iter().any(|m| m.contains("crash loop")),
        "the webhook got: {got:?}"
    );
    let exits = format!("{name} exited with code 1");
    assert_eq!(
        got.iter().filter(|m| **m == exits).count(),
        1,
        "one exit message, not one per exit: {got:?}"
    );
    let first = posted.lock().unwrap()[0].clone();
    assert_eq!(first["project"], p.name.as_str(), "{first}");
    assert!(first["text"].as_str().unwrap().contains(&p.name), "{first}");
    assert!(
        !w.output_text().contains("secret-part"),
        "{}",
        w.output_text()
    );
    let c = client(state.path());
    let (s, _, _, body) = fetch(&c, &w.https_url("/"), true).await;
    assert_eq!(s, 503);
    assert!(body.contains("crashing repeatedly"), "{body}");
    assert!(
        !body.contains("exiting with code"),
        "no log lines on the public page"
    );

    // Stopped for good: Docker's policy does not bring it back either.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(inspect(&name, "{{.State.Running}}"), "false");
    assert_eq!(inspect(&name, "{{.State.Restarting}}"), "false");

    let f = run(state.path(), &p, &["status", "--json"]);
    assert_eq!(f.status.code(), Some(3), "{}{}", f.stdout, f.stderr);
    let s: Value = serde_json::from_str(&f.stdout).unwrap();
    assert_eq!(s["supervisor"]["state"], "stopped", "{s}");
    let ow = live_ow(&s);
    let reason = ow["crash_loop"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("exited 3 times") && reason.contains("crash loop"),
        "{ow}"
    );
    let lines = ow["crash_loop"]["last_lines"].as_array().unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.as_str().unwrap().contains("STANDIN_EXIT_AFTER_SECS")),
        "the last log lines say why: {ow}"
    );
    let f = run(state.path(), &p, &["status"]);
    assert!(f.stdout.contains("CRASH LOOP"), "{}", f.stdout);
    stop(w);
}

#[tokio::test(flavor = "multi_thread")]
async fn after_sigkill_of_the_launcher_the_next_up_adopts_and_serves_quickly() {
    let Some(img) = docker_available() else {
        return;
    };
    let p = Cleanup::new("sv-adopt");
    let state = webui::state_dir();
    let port = free_port();
    let listen = format!("127.0.0.1:{}", free_port());
    let image = img.tag("v1");
    let w = up(state.path(), &p, &image, port, &listen, &[]);
    wait_ready(&w);
    let name = p.n("open-webui");
    let id = inspect(&name, "{{.Id}}");
    w.signal("KILL");
    drop(w);
    assert_eq!(
        inspect(&name, "{{.State.Running}}"),
        "true",
        "the container outlives the launcher"
    );

    let started = Instant::now();
    let w = up(state.path(), &p, &image, port, &listen, &[]);
    wait_ready(&w);
    let took = started.elapsed();
    let c = client(state.path());
    let (s, _, _, _) = fetch(&c, &w.https_url("/health"), false).await;
    assert_eq!(s, 200);
    assert_eq!(inspect(&name, "{{.Id}}"), id, "adopted, not recreated");
    let out = w.output_text();
    assert!(out.contains(&format!("{name} is up to date")), "{out}");
    assert!(
        !out.contains("waiting for"),
        "no health wait when already healthy: {out}"
    );
    eprintln!("adoption after SIGKILL: serving after {took:?}");
    assert!(
        took < Duration::from_secs(3),
        "serving again after {took:?}:\n{out}"
    );
    stop(w);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_an_open_sse_stream_complete_and_leaves_the_container_running() {
    let Some(img) = docker_available() else {
        return;
    };
    let p = Cleanup::new("sv-term");
    let state = webui::state_dir();
    let w = up(
        state.path(),
        &p,
        &img.tag("v1"),
        free_port(),
        "127.0.0.1:0",
        &[],
    );
    wait_ready(&w);
    let c = client(state.path());
    // 20 events, 100 ms apart: about 2 s, well within the drain timeout.
    let mut r = c
        .get(w.https_url("/sse?n=20&interval_ms=100"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let first = r.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("\"i\":0"));
    w.signal("TERM");
    let mut body = String::from_utf8_lossy(&first).into_owned();
    while let Some(chunk) = r.chunk().await.expect("the stream is not cut") {
        body.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(body.contains("\"i\":19"), "the stream completed: {body}");
    let out = stop(w);
    assert!(out.contains("the containers keep running"), "{out}");
    assert_eq!(inspect(&p.n("open-webui"), "{{.State.Running}}"), "true");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_up_on_the_same_state_dir_exits_1_naming_the_pid() {
    let Some(img) = docker_available() else {
        return;
    };
    let p = Cleanup::new("sv-twice");
    let state = webui::state_dir();
    let port = free_port();
    let listen = format!("127.0.0.1:{}", free_port());
    let image = img.tag("v1");
    let w = up(state.path(), &p, &image, port, &listen, &[]);
    wait_ready(&w);
    // Same listen address: the lock is checked first, so the answer names the pid
    // rather than a busy port.
    let port_s = port.to_string();
    let out = webui::command(state.path())
        .args(up_args(&p, &image, &port_s, &listen))
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(
        e.contains(&format!("pid {}", w.pid())) && e.contains("already running"),
        "{e}"
    );
    assert!(!e.contains("already in use"), "{e}");
    let c = client(state.path());
    assert_eq!(
        fetch(&c, &w.https_url("/health"), false).await.0,
        200,
        "the first keeps serving"
    );
    stop(w);
}

#[test]
fn without_systemd_service_and_detach_say_so_and_exit_1() {
    if std::path::Path::new("/run/systemd/system").exists() {
        eprintln!("skipping: this host runs systemd");
        return;
    }
    let state = webui::state_dir();
    for args in [
        &["service", "install"][..],
        &["service", "status"][..],
        &["up", "-d", "--listen", "127.0.0.1:0"][..],
    ] {
        let f = webui::run(state.path(), args, Duration::from_secs(30));
        assert_eq!(
            f.status.code(),
            Some(1),
            "{args:?}: {}{}",
            f.stdout,
            f.stderr
        );
        assert!(
            f.stderr.contains("systemd is not running on this host"),
            "{args:?}: {}",
            f.stderr
        );
    }
    assert!(!state.path().join("run").exists(), "nothing started");
}

#[test]
fn service_install_writes_the_unit_with_this_state_dir_config_and_project() {
    let state = webui::state_dir();
    let units = tempfile::tempdir().unwrap();
    let dir = units.path().to_str().unwrap();
    let f = webui::run(
        state.path(),
        &[
            "--project",
            "stage",
            "service",
            "install",
            "--unit-dir",
            dir,
        ],
        Duration::from_secs(30),
    );
    assert_eq!(f.status.code(), Some(0), "{}{}", f.stdout, f.stderr);
    let unit = std::fs::read_to_string(units.path().join("webui-stage.service")).unwrap();
    let template = include_str!("../assets/webui.service");
    let exec: Vec<&str> = unit
        .lines()
        .filter(|l| l.starts_with("ExecStart="))
        .collect();
    let state_s = state.path().display().to_string();
    assert_eq!(
        exec,
        vec![format!(
            "ExecStart={} --state-dir {state_s} --config {state_s}/webui.toml --project stage up",
            webui::bin()
        )]
    );
    // Every other line is the template's.
    let others = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| !l.starts_with("ExecStart="))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(others(&unit), others(template));

    let f = webui::run(
        state.path(),
        &[
            "--project",
            "stage",
            "service",
            "uninstall",
            "--unit-dir",
            dir,
        ],
        Duration::from_secs(30),
    );
    assert_eq!(f.status.code(), Some(0), "{}", f.stderr);
    assert!(!units.path().join("webui-stage.service").exists());
}

#[test]
fn cert_renew_without_a_running_webui_says_so() {
    let state = webui::state_dir();
    let f = webui::run(state.path(), &["cert", "renew"], Duration::from_secs(30));
    assert_eq!(f.status.code(), Some(1), "{}{}", f.stdout, f.stderr);
    assert!(f.stderr.contains("no running webui"), "{}", f.stderr);
}
