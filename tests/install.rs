//! `install.sh` on a fresh Debian server (issue 8).
//!
//! The fresh server is a container of a `debootstrap --variant=minbase bookworm`
//! root filesystem (plus curl), built once and imported into the real dockerd by
//! `tests/install/image.sh`, then reused. The release location is a small HTTP
//! server on 127.0.0.1 in this process, serving the layout `scripts/dist.sh`
//! produces, made from the `webui` binary this `cargo test` built (no release
//! build: the debug binary is the artifact). Containers run with `--network host`
//! to reach it, are labelled `webui.test=1` and removed on drop.
//!
//! Needs root, dockerd, debootstrap and shellcheck (tests/infra/setup.sh installs
//! them). Without them a test prints why it skips, unless `CI` is set: then it fails.

#[path = "support/debian.rs"]
mod debian;

use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::Duration;

use debian::*;

const WEBUI: &str = env!("CARGO_BIN_EXE_webui");
const BIN_PATH: &str = "/usr/local/bin/webui";
const UNIT_PATH: &str = "/etc/systemd/system/webui.service";

/// Skip (return from the test) with a reason, or fail under CI.
macro_rules! skip {
    ($($arg:tt)*) => {{
        let reason = format!($($arg)*);
        if in_ci() {
            panic!("cannot run under CI: {reason}");
        }
        eprintln!("SKIP: {reason}");
        return;
    }};
}

// ------------------------------------------------------------------ environment

macro_rules! require_env {
    () => {
        match env() {
            Ok(env) => env,
            Err(reason) => skip!("{reason}"),
        }
    };
}

// ------------------------------------------------------------------ release location

/// The release location: `scripts/dist.sh`'s files in install.sh's layout
/// (`latest/download/LATEST`, `download/v<version>/<file>`), plus `install.sh`.
struct Releases {
    dir: tempfile::TempDir,
}

impl Releases {
    fn new() -> Releases {
        let dir = tempfile::Builder::new()
            .prefix("webui-install-test")
            .tempdir()
            .unwrap();
        fs::copy(
            Path::new(REPO).join("install.sh"),
            dir.path().join("install.sh"),
        )
        .unwrap();
        Releases { dir }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn set_latest(&self, version: &str) {
        let d = self.root().join("latest/download");
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("LATEST"), format!("{version}\n")).unwrap();
    }

    fn release_dir(&self, version: &str) -> PathBuf {
        let d = self.root().join(format!("download/v{version}"));
        fs::create_dir_all(&d).unwrap();
        d
    }

    /// Publish `binary` as `version`; returns the binary's sha256.
    fn publish(&self, version: &str, binary: &Path) -> String {
        let d = self.release_dir(version);
        let name = asset_name(version);
        let dest = d.join(&name);
        let _ = fs::remove_file(&dest);
        symlink(binary, &dest).unwrap();
        let sha = sha256_file(binary);
        fs::write(d.join(format!("{name}.sha256")), format!("{sha}  {name}\n")).unwrap();
        let unit = Path::new(REPO).join("assets/webui.service");
        fs::copy(&unit, d.join("webui.service")).unwrap();
        fs::write(
            d.join("webui.service.sha256"),
            format!("{}  webui.service\n", sha256_file(&unit)),
        )
        .unwrap();
        sha
    }

    /// Replace the published binary of `version` by one with a changed byte,
    /// keeping its `.sha256` (a tampered or corrupted download).
    fn tamper(&self, version: &str) {
        let dest = self.release_dir(version).join(asset_name(version));
        let mut bytes = fs::read(&dest).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x5a;
        fs::remove_file(&dest).unwrap();
        fs::write(&dest, bytes).unwrap();
    }
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "x86_64",
        "aarch64" => "aarch64",
        other => panic!("no webui release artifacts for {other}"),
    }
}

fn asset_name(version: &str) -> String {
    format!("webui-{version}-{}-linux", arch())
}

fn sha256_file(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    assert!(out.status.success(), "sha256sum {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// A private copy of the binary this `cargo test` built, the artifact every test
/// publishes (a copy: a concurrent `cargo build` may replace the original mid-test).
fn built_binary() -> &'static Path {
    static COPY: OnceLock<PathBuf> = OnceLock::new();
    COPY.get_or_init(|| {
        let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("install-artifacts");
        // Copies of earlier test processes (named by pid) that are gone.
        if let Ok(entries) = fs::read_dir(&base) {
            for e in entries.flatten() {
                if !Path::new("/proc").join(e.file_name()).exists() {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
        let dir = base.join(std::process::id().to_string());
        fs::create_dir_all(&dir).unwrap();
        let copy = dir.join("webui");
        fs::copy(WEBUI, &copy).unwrap();
        copy
    })
}

/// The version the built binary reports: `webui <semver> (commit <sha>, built <date>)`.
fn built_version() -> String {
    let out = Command::new(built_binary())
        .arg("--version")
        .output()
        .expect("run webui --version");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut words = text.split_whitespace();
    assert_eq!(
        words.next(),
        Some("webui"),
        "webui --version printed {text:?}"
    );
    let version = words.next().unwrap_or_default().to_string();
    assert!(
        text.contains("(commit "),
        "webui --version printed {text:?}"
    );
    version
}

/// A newer-looking release of the built binary: the same program with its version
/// string changed in place (same length, so the ELF file stays valid); returns the
/// new version and the file.
fn newer_binary(dir: &Path, v1: &str) -> (String, PathBuf) {
    let last = v1
        .chars()
        .last()
        .and_then(|c| c.to_digit(10))
        .expect("version ends in a digit");
    let v2 = format!("{}{}", &v1[..v1.len() - 1], (last + 1) % 10);
    let mut bytes = fs::read(built_binary()).unwrap();
    let from = format!("{v1} (commit ").into_bytes();
    let to = format!("{v2} (commit ").into_bytes();
    let mut patched = 0;
    let mut i = 0;
    while i + from.len() <= bytes.len() {
        if bytes[i] == from[0] && bytes[i..i + from.len()] == from[..] {
            bytes[i..i + from.len()].copy_from_slice(&to);
            patched += 1;
            i += from.len();
        } else {
            i += 1;
        }
    }
    assert!(patched > 0, "no `{v1} (commit ` in the binary to patch");
    let path = dir.join(format!("webui-{v2}"));
    fs::write(&path, bytes).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new(&path).arg("--version").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!("webui {v2} (")),
        "patched binary says {text:?}"
    );
    (v2, path)
}

// ------------------------------------------------------------------ HTTP server

/// A GET-only static file server on 127.0.0.1 that records the paths asked for.
struct Server {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Server {
    fn start(root: &Path) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (root, log, halt) = (root.to_path_buf(), requests.clone(), stop.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if halt.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (root, log) = (root.clone(), log.clone());
                thread::spawn(move || {
                    let _ = serve(conn, &root, &log);
                });
            }
        });
        Server {
            port,
            requests,
            stop,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The paths requested since the last call.
    fn take_requests(&self) -> Vec<String> {
        std::mem::take(&mut *self.requests.lock().unwrap())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(conn: TcpStream, root: &Path, log: &Mutex<Vec<String>>) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" || header == "\n" {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    let path = target.split('?').next().unwrap_or("/").to_string();
    log.lock().unwrap().push(path.clone());
    let rel = path.trim_start_matches('/');
    let file = root.join(rel);
    let mut conn = conn;
    if (method == "GET" || method == "HEAD") && !rel.split('/').any(|c| c == "..") && file.is_file()
    {
        let mut f = fs::File::open(&file)?;
        let len = f.metadata()?.len();
        write!(
            conn,
            "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
        )?;
        if method == "GET" {
            io::copy(&mut f, &mut conn)?;
        }
    } else {
        let body = "not found\n";
        write!(
            conn,
            "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
    }
    conn.flush()
}

// ------------------------------------------------------------------ container

/// What only the install.sh tests do with a fresh server.
impl Container {
    /// `curl -fsSL <server>/install.sh | sh -s -- ARGS`, as the one-line install does.
    fn install(&self, server: &Server, user: Option<&str>, args: &str) -> Run {
        let url = server.url();
        self.exec(
            user,
            &[("WEBUI_DOWNLOAD_URL", &url)],
            &format!("cd /tmp && curl -fsSL {url}/install.sh | sh -s -- {args}"),
        )
    }

    /// Leftovers of an interrupted or refused install: staged files and temp dirs.
    fn assert_no_leftovers(&self) {
        let run = self
            .sh("ls -A /usr/local/bin /etc/systemd/system; ls -d /tmp/webui-install.* 2>/dev/null || true")
            .ok();
        assert!(
            !run.stdout.contains(".webui"),
            "staged file left behind:\n{}",
            run.stdout
        );
        assert!(
            !run.stdout.contains("/tmp/webui-install."),
            "temp dir left behind:\n{}",
            run.stdout
        );
    }
}

fn binary_requests(requests: &[String]) -> Vec<&String> {
    requests.iter().filter(|p| p.ends_with("-linux")).collect()
}

// ------------------------------------------------------------------ tests

#[test]
fn fresh_install_rerun_upgrade_pin_and_refused_tampered_download() {
    let env = require_env!();
    let rel = Releases::new();
    let v1 = built_version();
    let sha1 = rel.publish(&v1, built_binary());
    rel.set_latest(&v1);
    let server = Server::start(rel.root());
    let c = Container::start(env, "upgrade");
    assert!(!c.exists(BIN_PATH), "the fresh image already has webui");

    // Fresh install: verified, installed, runs, unit in place.
    c.install(&server, None, "--no-docker")
        .ok()
        .says(&format!("sha256 verified: {sha1}"))
        .says(&format!("installed {BIN_PATH}: webui {v1} ("))
        .says(&format!("installed the systemd unit {UNIT_PATH}"))
        .says("webui up -d --domain");
    assert_eq!(c.sha256(BIN_PATH), sha1);
    assert!(
        c.stat(BIN_PATH).contains(" 755 "),
        "mode of {BIN_PATH}: {}",
        c.stat(BIN_PATH)
    );
    c.sh("webui --version")
        .ok()
        .says(&format!("webui {v1} (commit "));
    let unit = c.sh(&format!("cat {UNIT_PATH}")).ok().stdout;
    assert_eq!(
        unit,
        fs::read_to_string(Path::new(REPO).join("assets/webui.service")).unwrap()
    );
    assert!(c.stat(UNIT_PATH).contains(" 644 "));
    c.assert_no_leftovers();
    let asked = server.take_requests();
    assert_eq!(binary_requests(&asked).len(), 1, "requests: {asked:?}");

    // Re-run: nothing changes, not even a download of the binary.
    let (bin_before, unit_before) = (c.stat(BIN_PATH), c.stat(UNIT_PATH));
    c.install(&server, None, "--no-docker")
        .ok()
        .says(&format!("webui {v1} is already installed, nothing to do"));
    assert_eq!(c.stat(BIN_PATH), bin_before, "re-run touched {BIN_PATH}");
    assert_eq!(c.stat(UNIT_PATH), unit_before, "re-run touched {UNIT_PATH}");
    let asked = server.take_requests();
    assert!(
        binary_requests(&asked).is_empty(),
        "re-run downloaded the binary: {asked:?}"
    );

    // A newer release whose binary does not match its checksum: refused.
    let (v2, v2_bin) = newer_binary(rel.root(), &v1);
    let sha2 = rel.publish(&v2, &v2_bin);
    rel.tamper(&v2);
    rel.set_latest(&v2);
    c.install(&server, None, "--no-docker")
        .failed()
        .says(&format!("checksum mismatch for {}", asset_name(&v2)))
        .says(&format!("expected sha256 {sha2}"))
        .says("nothing was changed");
    assert_eq!(
        c.stat(BIN_PATH),
        bin_before,
        "tampered download touched {BIN_PATH}"
    );
    assert_eq!(c.sha256(BIN_PATH), sha1);
    c.sh("webui --version").ok().says(&format!("webui {v1} ("));
    c.assert_no_leftovers();

    // A version that does not exist: refused, nothing touched.
    c.install(&server, None, "--no-docker --version 99.0.0")
        .failed()
        .says("could not download")
        .says("nothing was changed");
    assert_eq!(c.stat(BIN_PATH), bin_before);

    // The newer release, intact: upgraded in place (a new file renamed over the old).
    rel.publish(&v2, &v2_bin);
    c.install(&server, None, "--no-docker")
        .ok()
        .says(&format!("sha256 verified: {sha2}"))
        .says(&format!("upgraded {BIN_PATH}: webui {v1} ("))
        .says(&format!("-> webui {v2} ("));
    assert_eq!(c.sha256(BIN_PATH), sha2);
    c.sh("webui --version")
        .ok()
        .says(&format!("webui {v2} (commit "));
    let inode = |stat: &str| stat.split(' ').next().unwrap().to_string();
    assert_ne!(
        inode(&c.stat(BIN_PATH)),
        inode(&bin_before),
        "upgrade was not a rename"
    );
    assert_eq!(
        c.stat(UNIT_PATH),
        unit_before,
        "upgrade touched the unchanged unit"
    );
    c.assert_no_leftovers();

    // --version pins (here: back to the first release), and `v` prefixes are fine.
    c.install(&server, None, &format!("--no-docker --version v{v1}"))
        .ok()
        .says(&format!("webui {v1} (pinned)"));
    assert_eq!(c.sha256(BIN_PATH), sha1);
    c.install(&server, None, &format!("--no-docker --version {v1}"))
        .ok()
        .says("nothing to do");

    // --domain/--email: ends by handing over to `webui up -d` (which needs the Docker
    // engine this container lacks; either way webui stays installed).
    let pinned = c.stat(BIN_PATH);
    let run = c.install(
        &server,
        None,
        &format!("--no-docker --version {v1} --domain chat.example.org --email admin@example.org"),
    );
    run.says("nothing to do").says(
        "starting: /usr/local/bin/webui up -d --domain chat.example.org --email admin@example.org",
    );
    if run.code != Some(0) {
        run.says("webui itself is installed");
    }
    assert_eq!(c.stat(BIN_PATH), pinned);
}

#[test]
fn truncated_script_does_nothing() {
    let env = require_env!();
    let rel = Releases::new();
    let v1 = built_version();
    rel.publish(&v1, built_binary());
    rel.set_latest(&v1);
    let server = Server::start(rel.root());
    let c = Container::start(env, "truncated");
    let url = server.url();

    // Every prefix of the script through sh and bash, as `curl | sh` after a dropped
    // connection would run it: nothing installed, nothing written, nothing fetched.
    let run = c
        .exec(
            None,
            &[("WEBUI_DOWNLOAD_URL", &url)],
            &format!("curl -fsSL {url}/install.sh -o /tmp/install.sh && sh /t/truncate-check.sh /tmp/install.sh"),
        )
        .ok();
    run.says("nothing changed");
    assert_eq!(
        server.take_requests(),
        vec!["/install.sh".to_string()],
        "a truncated script fetched something"
    );

    // Control: the whole script, run the same way, does install (so the check above
    // would have seen it).
    c.exec(
        None,
        &[("WEBUI_DOWNLOAD_URL", &url)],
        "sh -s -- --no-docker </tmp/install.sh",
    )
    .ok()
    .says("installed");
    assert!(c.exists(BIN_PATH));
}

#[test]
fn non_root_without_sudo_is_refused() {
    let env = require_env!();
    let rel = Releases::new();
    let v1 = built_version();
    rel.publish(&v1, built_binary());
    rel.set_latest(&v1);
    let server = Server::start(rel.root());
    let c = Container::start(env, "nonroot");
    assert_ne!(
        c.sh("command -v sudo").code,
        Some(0),
        "the fresh image has sudo"
    );

    c.install(&server, Some("nobody"), "--no-docker")
        .failed()
        .says("needs root")
        .says("sudo is not installed");
    assert!(!c.exists(BIN_PATH));
    assert!(!c.exists(UNIT_PATH));
    assert_eq!(
        server.take_requests(),
        vec!["/install.sh".to_string()],
        "downloaded before the root check"
    );
}

#[test]
fn wget_instead_of_curl_and_a_clear_message_without_either() {
    let env = require_env!();
    let rel = Releases::new();
    let v1 = built_version();
    let sha1 = rel.publish(&v1, built_binary());
    rel.set_latest(&v1);
    let server = Server::start(rel.root());
    let c = Container::start(env, "wget");
    let url = server.url();
    let envs = [("WEBUI_DOWNLOAD_URL", url.as_str())];

    // Neither: a clear message before anything happens.
    c.sh("mv /usr/bin/curl /usr/bin/curl.hidden && mv /usr/bin/wget /usr/bin/wget.hidden")
        .ok();
    c.exec(
        None,
        &envs,
        &format!("/usr/bin/wget.hidden -qO /tmp/install.sh {url}/install.sh"),
    )
    .ok();
    c.exec(None, &envs, "sh /tmp/install.sh --no-docker")
        .failed()
        .says("neither curl nor wget is installed")
        .says("apt-get install curl");
    assert!(!c.exists(BIN_PATH));

    // wget only: the whole install works with it.
    c.sh("mv /usr/bin/wget.hidden /usr/bin/wget").ok();
    c.exec(
        None,
        &envs,
        &format!("wget -qO- {url}/install.sh | sh -s -- --no-docker"),
    )
    .ok()
    .says(&format!("sha256 verified: {sha1}"))
    .says(&format!("installed {BIN_PATH}: webui {v1} ("));
    assert_eq!(c.sha256(BIN_PATH), sha1);
    assert!(c.exists(UNIT_PATH));
    // ...and wget's failures are failures too.
    c.exec(
        None,
        &envs,
        "sh /tmp/install.sh --no-docker --version 99.0.0",
    )
    .failed()
    .says("could not download");
}

#[test]
fn dry_run_prints_docker_install_per_distribution_and_changes_nothing() {
    let env = require_env!();
    let rel = Releases::new();
    let v1 = built_version();
    rel.publish(&v1, built_binary());
    rel.set_latest(&v1);
    let server = Server::start(rel.root());
    let c = Container::start(env, "dryrun");
    c.sh("touch /tmp/before-dry-run && sleep 1").ok();
    let args = "--dry-run --domain chat.example.org --email admin@example.org";
    let up =
        "would run: /usr/local/bin/webui up -d --domain chat.example.org --email admin@example.org";

    // The image's own Debian 12.
    c.install(&server, None, args)
        .ok()
        .says("dry run: printing the steps, changing nothing")
        .says("Debian GNU/Linux 12")
        .says("would run: env DEBIAN_FRONTEND=noninteractive apt-get update")
        .says("would run: env DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io")
        .says("would run: service docker start")
        .says(&format!(
            "would download {}/download/v{v1}/{}",
            server.url(),
            asset_name(&v1)
        ))
        .says(&format!("would install the systemd unit {UNIT_PATH}"))
        .says(up)
        .says("dry run finished: nothing was changed");

    let cases: &[(&str, &[&str])] = &[
        (
            "ubuntu",
            &["Ubuntu 24.04.1 LTS", "apt-get install -y -q docker.io"],
        ),
        (
            "fedora",
            &["Fedora Linux 40", "would run: dnf install -y moby-engine"],
        ),
        (
            "rocky",
            &[
                "Rocky Linux 9.4",
                "https://download.docker.com/linux/centos/docker-ce.repo",
                "would run: dnf install -y docker-ce docker-ce-cli containerd.io",
            ],
        ),
        (
            "rhel",
            &[
                "Red Hat Enterprise Linux 9.4",
                "https://download.docker.com/linux/rhel/docker-ce.repo",
            ],
        ),
    ];
    for (distro, expected) in cases {
        c.sh(&format!(
            "cp /t/fixtures/os-release.{distro} /usr/lib/os-release"
        ))
        .ok();
        let run = c.install(&server, None, args).ok();
        for needle in *expected {
            run.says(needle);
        }
        run.says(up).says("nothing was changed");
    }

    // Unsupported: a clear message, unless only the binary is wanted.
    c.sh("cp /t/fixtures/os-release.alpine /usr/lib/os-release")
        .ok();
    c.install(&server, None, "--dry-run")
        .failed()
        .says("Alpine Linux v3.20 is not supported")
        .says("--no-docker");
    c.install(&server, None, "--dry-run --no-docker")
        .ok()
        .says("installing only the webui binary");

    // Nothing installed, nothing written outside /tmp but the swapped os-release, no
    // binary downloaded.
    assert!(!c.exists(BIN_PATH));
    assert!(!c.exists(UNIT_PATH));
    assert_ne!(c.sh("command -v docker").code, Some(0));
    let changed = c
        .sh("find / -xdev -newer /tmp/before-dry-run -not -path '/tmp*' -not -path /usr/lib/os-release -not -path /usr/lib")
        .ok();
    assert_eq!(changed.stdout.trim(), "", "dry runs changed files");
    let asked = server.take_requests();
    assert!(
        binary_requests(&asked).is_empty(),
        "a dry run downloaded the binary: {asked:?}"
    );
}

#[test]
fn install_sh_is_shellcheck_clean_and_wholly_inside_one_function() {
    let script = fs::read_to_string(Path::new(REPO).join("install.sh")).unwrap();
    assert!(
        script.starts_with("#!/bin/sh\n"),
        "install.sh must be POSIX sh"
    );

    // Structure: only comments and blank lines, then `webui_install() {` ... `}`, then
    // the call on the last line. (truncated_script_does_nothing checks the effect.)
    let lines: Vec<&str> = script.lines().collect();
    let start = lines
        .iter()
        .position(|l| *l == "webui_install() {")
        .expect("webui_install() {");
    assert!(
        lines[..start]
            .iter()
            .all(|l| l.is_empty() || l.starts_with('#')),
        "code before webui_install()"
    );
    let n = lines.len();
    assert_eq!(
        lines[n - 1],
        r#"webui_install "$@" --webui-install-script-end"#
    );
    assert_eq!(lines[n - 2], "");
    assert_eq!(lines[n - 3], "}");
    assert!(
        lines[start + 1..n - 3]
            .iter()
            .all(|l| l.is_empty() || l.starts_with('\t')),
        "a line inside webui_install() is not indented: the function ends early"
    );
    assert!(lines[start + 1].trim() == "set -eu", "set -eu first");

    let help = Command::new("sh")
        .args(["install.sh", "--help"])
        .current_dir(REPO)
        .output()
        .unwrap();
    let help_text = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.status.success() && help_text.contains("--dry-run"),
        "install.sh --help:\n{help_text}"
    );

    let files = [
        "install.sh",
        "scripts/dist.sh",
        "tests/install/image.sh",
        "tests/install/truncate-check.sh",
    ];
    for shell in ["sh", "bash"] {
        let out = Command::new(shell)
            .args(["-n", "install.sh"])
            .current_dir(REPO)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{shell} -n install.sh: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    match Command::new("shellcheck").arg("--version").output() {
        Ok(o) if o.status.success() => {}
        _ => skip!(
            "shellcheck is not installed (apt-get install shellcheck); structure checked, lint skipped"
        ),
    }
    let out = Command::new("shellcheck")
        .args(files)
        .current_dir(REPO)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "shellcheck {}:\n{}{}",
        files.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // And as plain POSIX sh explicitly, whatever the shebang says.
    let out = Command::new("shellcheck")
        .args(["--shell=sh", "install.sh"])
        .current_dir(REPO)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "shellcheck --shell=sh install.sh:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn unit_file_works_as_is() {
    let unit = fs::read_to_string(Path::new(REPO).join("assets/webui.service")).unwrap();
    let directives: Vec<&str> = unit
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for section in ["[Unit]", "[Service]", "[Install]"] {
        assert!(directives.contains(&section), "no {section}");
    }
    let exec: Vec<&&str> = directives
        .iter()
        .filter(|l| l.starts_with("ExecStart="))
        .collect();
    assert_eq!(
        exec.len(),
        1,
        "exactly one ExecStart (the placeholder line)"
    );
    assert!(
        exec[0].starts_with("ExecStart=/usr/local/bin/webui up"),
        "{}",
        exec[0]
    );
    assert!(exec[0].contains("/var/lib/webui/webui.toml"), "{}", exec[0]);
    // Works without substitution: no template markers anywhere.
    for marker in ["{{", "}}", "@WEBUI", "${", "%i", "%I"] {
        assert!(
            !unit.contains(marker),
            "template marker {marker:?} in the unit"
        );
    }
    assert!(
        unit.starts_with('#') && unit.contains("ExecStart"),
        "documented at the top"
    );
    assert!(directives.contains(&"WantedBy=multi-user.target"));

    // systemd's own parser, where there is one (it wants the binary to exist).
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("webui.service");
        fs::write(&path, &unit).unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr).to_string();
        let problems: Vec<&str> = text
            .lines()
            .filter(|l| !l.contains("/usr/local/bin/webui") && !l.trim().is_empty())
            .filter(|l| {
                !l.contains("Failed to prepare filename") && !l.contains("Cannot add dependency")
            })
            .collect();
        assert!(problems.is_empty(), "systemd-analyze verify:\n{text}");
    }
}
