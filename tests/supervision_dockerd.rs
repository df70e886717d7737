//! `webui up` survives a restart of dockerd itself: the event stream ends, the
//! supervisor reconnects with backoff, re-inspects, and the site serves again.
//!
//! Restarting the engine disturbs every other user of it, so this is its own test
//! binary (cargo runs test binaries one after another, so no other test of this crate
//! runs meanwhile) and runs only in CI or with `WEBUI_TEST_RESTART_DOCKERD=1`. It must
//! run as root (it signals dockerd). dockerd is started again with the command line it
//! had, by a guard, even when the test fails.

mod support;
#[path = "supervision_support/mod.rs"]
mod sv;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::webui;
use sv::*;

/// The running dockerd: its pid and command line.
fn dockerd() -> Option<(u32, Vec<String>)> {
    let out = Command::new("pgrep")
        .args(["-x", "dockerd"])
        .output()
        .ok()?;
    let pid: u32 = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()?;
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let argv = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    Some((pid, argv))
}

fn docker_answers() -> bool {
    Command::new(docker_cli())
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Starts dockerd again (as tests/infra/setup.sh does) if it is not running.
struct Restore {
    argv: Vec<String>,
}

impl Restore {
    fn start(&self) {
        if docker_answers() {
            return;
        }
        if dockerd().is_none() {
            let _ = std::fs::remove_file("/var/run/docker.pid");
            // As tests/infra/setup.sh does: detached, so the daemon outlives the test.
            let status = Command::new("sh")
                .arg("-c")
                .arg("setsid nohup \"$@\" >>/var/log/webui-ci-dockerd.log 2>&1 </dev/null &")
                .arg("sh")
                .args(&self.argv)
                .status()
                .expect("start dockerd");
            assert!(status.success(), "starting dockerd: {status}");
        }
        let start = Instant::now();
        while !docker_answers() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "dockerd did not come back"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        self.start();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn up_reconnects_after_dockerd_restarts_and_serves_again() {
    let ci = std::env::var_os("CI").is_some();
    if !ci && std::env::var_os("WEBUI_TEST_RESTART_DOCKERD").is_none() {
        eprintln!(
            "skipping: restarts dockerd for everyone; set WEBUI_TEST_RESTART_DOCKERD=1 (always runs in CI)"
        );
        return;
    }
    let Some(img) = docker_available() else {
        return;
    };
    let Some((pid, argv)) = dockerd() else {
        panic!("no dockerd process found (pgrep -x dockerd)");
    };
    let p = Cleanup::new("sv-dockerd");
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
    assert_eq!(fetch(&c, &w.https_url("/health"), false).await.0, 200);

    // Declared after the project guard, so dropped first: dockerd is back before the
    // guard removes the containers.
    let restore = Restore { argv };
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let start = Instant::now();
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "dockerd did not stop"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_output(&w, "lost the Docker engine", Duration::from_secs(20));
    // Without the engine the containers are gone: the starting page, not a 502.
    let start = Instant::now();
    loop {
        let (s, _, _, body) = fetch(&c, &w.https_url("/health"), false).await;
        if s == 503 {
            assert!(body.contains("upstream_"), "{body}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "still {s} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    restore.start();
    wait_output(
        &w,
        "reconnected to the Docker engine",
        Duration::from_secs(60),
    );
    until_ok(&c, &w.https_url("/health"), Duration::from_secs(60)).await;
    let s = status_json(state.path(), &p);
    assert_eq!(s["supervisor"]["docker"]["connected"], true, "{s}");
    assert!(
        s["supervisor"]["docker"]["reconnects"]
            .as_u64()
            .unwrap_or(0)
            >= 1,
        "{s}"
    );
    assert_eq!(s["supervisor"]["pid"], w.pid(), "the same launcher");
    stop(w);
}
