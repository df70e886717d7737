//! End-to-end suite with the real Open WebUI (issue #9), run by `cargo test`:
//! `tests/e2e/build-image.sh` (Open WebUI from PyPI as an image in the local
//! registry: built on the first run, then reused while its recipe is unchanged) and
//! `tests/e2e/run.sh` (`webui up` pulling it, a pebble certificate, Debian's chromium
//! driven by playwright-core through the proxy, `webui update`), their output
//! streamed as they go. See tests/e2e/README.md for what it checks.
//!
//! Outside CI the test skips, saying why, when something it needs is missing (root,
//! dockerd, the local registry, pebble, chromium, certutil, node, the browser driver
//! in tests/e2e/node_modules, free disk space); with `CI` set each of those is a
//! failure. `bash tests/infra/setup.sh` installs and starts all of it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Instant;

/// Exit code of the scripts for "not enough disk space" (the message says how much).
const NO_SPACE: i32 = 3;

/// A line on stderr as it happens (libtest captures `eprintln!` until the end).
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn in_ci() -> bool {
    std::env::var_os("CI").is_some()
}

/// Outside CI: prints why and returns (the caller skips). In CI: fails.
fn unavailable(reason: &str) {
    if in_ci() {
        panic!("e2e: {reason} (CI runs tests/infra/setup.sh first, which provides it)");
    }
    say(&format!(
        "skipping e2e: {reason}; `sudo bash tests/infra/setup.sh` sets up the machine"
    ));
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths)
            .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
            .any(|dir| dir.join(tool).is_file())
    })
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// What the suite needs and this machine lacks.
fn missing(e2e: &Path) -> Vec<String> {
    let mut missing = Vec::new();
    if !is_root() {
        missing.push("root (docker, pebble's ports, the image build)".to_string());
    }
    for tool in [
        "docker",
        "curl",
        "jq",
        "ss",
        "openssl",
        "certutil",
        "node",
        "npm",
        "debootstrap",
        "pigz",
        "unshare",
        "ip",
    ] {
        if !on_path(tool) {
            missing.push(format!("`{tool}` on PATH"));
        }
    }
    for file in [
        "/usr/bin/chromium",
        "/usr/bin/pebble",
        "/usr/bin/pebble-challtestsrv",
        "/var/lib/webui-ci/pebble/ca.pem",
    ] {
        if !Path::new(file).exists() {
            missing.push(file.to_string());
        }
    }
    if !e2e
        .join("node_modules/playwright-core/package.json")
        .is_file()
    {
        missing.push("tests/e2e/node_modules (npm ci)".to_string());
    }
    if on_path("docker") && !succeeds(Command::new("docker").arg("info")) {
        missing.push("a running dockerd (`docker info` fails)".to_string());
    }
    let registry = std::env::var("WEBUI_TEST_REGISTRY").unwrap_or("127.0.0.1:5000".into());
    if on_path("curl")
        && !succeeds(Command::new("curl").args([
            "-fsS",
            "--max-time",
            "5",
            &format!("http://{registry}/v2/"),
        ]))
    {
        missing.push(format!("the test registry on {registry}"));
    }
    missing
}

fn describe(status: ExitStatus) -> String {
    match status.code() {
        Some(c) => format!("exit code {c}"),
        None => format!("{status} (killed by a signal)"),
    }
}

#[test]
fn real_open_webui_behind_webui_in_a_real_browser() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let e2e = root.join("tests/e2e");
    let missing = missing(&e2e);
    if !missing.is_empty() {
        return unavailable(&format!("missing {}", missing.join(", ")));
    }
    let started = Instant::now();

    // The image: stdout's last line is its reference; progress goes to stderr.
    say("=== e2e: image (tests/e2e/build-image.sh)");
    let build = Command::new("bash")
        .arg(e2e.join("build-image.sh"))
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("running bash tests/e2e/build-image.sh");
    if build.status.code() == Some(NO_SPACE) {
        return unavailable("not enough free disk space to build the e2e image (see above)");
    }
    assert!(
        build.status.success(),
        "tests/e2e/build-image.sh failed ({}); its output is above",
        describe(build.status)
    );
    let stdout = String::from_utf8_lossy(&build.stdout);
    let image = stdout
        .lines()
        .last()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .expect("build-image.sh printed no image reference")
        .to_string();
    say(&format!(
        "=== e2e: image {image} ready after {}s",
        started.elapsed().as_secs()
    ));

    // The suite itself, with the webui binary cargo built for this test.
    let run = Command::new("bash")
        .arg(e2e.join("run.sh"))
        .arg(&image)
        .env("WEBUI_BIN", env!("CARGO_BIN_EXE_webui"))
        .stdin(Stdio::null())
        .status()
        .expect("running bash tests/e2e/run.sh");
    if run.code() == Some(NO_SPACE) {
        return unavailable("not enough free disk space to pull the e2e image (see above)");
    }
    assert!(
        run.success(),
        "the e2e suite failed ({}); its steps are above, logs and screenshots in {}",
        describe(run),
        e2e.join("artifacts").display()
    );
    say(&format!(
        "=== e2e: passed in {}s (image and suite)",
        started.elapsed().as_secs()
    ));
}
