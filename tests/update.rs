//! `webui update`, `webui backup`, `webui restore` against the real Docker engine and
//! the local registry's stand-in images (`:v1`, `:v2`, `:broken` never healthy,
//! `:crashloop` exits after 2 s).
//!
//! Each test has its own project (`t-upd-<name>-<pid>`), state dir and ports, and a
//! guard removing the project's containers, network and volumes at the end. Without
//! dockerd or the test images the tests skip with a reason, except in CI.

mod support;
#[path = "supervision_support/mod.rs"]
mod sv;

use std::io::Read;
use std::path::{Path, PathBuf};

use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::webui::{self, Finished, Webui};
use sv::{Cleanup, docker, free_port, inspect};

const RUN: Duration = Duration::from_secs(240);

/// The stand-in Open WebUI repository, or None (skipped; a failure in CI).
fn image_repo() -> Option<String> {
    sv::docker_available().map(|i| i.openwebui)
}

/// The project guard, named `t-upd-<what>-<pid>`.
fn project(what: &str) -> Cleanup {
    Cleanup::new(&format!("upd-{what}"))
}

/// `webui up` on the stand-in `image`, waited for until it serves.
fn up(state: &Path, p: &Cleanup, image: &str, port: u16) -> Webui {
    let w = sv::up(state, p, image, port, "127.0.0.1:0", &[]);
    sv::wait_ready(&w);
    w
}

fn stop(mut w: Webui) -> String {
    w.signal("TERM");
    w.wait(Duration::from_secs(20))
        .expect("webui exits on SIGTERM");
    w.output_text()
}

fn run(state: &Path, p: &Cleanup, args: &[&str]) -> Finished {
    let mut all = vec!["--project", p.name.as_str()];
    all.extend_from_slice(args);
    webui::run(state, &all, RUN)
}

fn code(f: &Finished) -> i32 {
    f.status.code().unwrap_or(-1)
}

fn both(f: &Finished) -> String {
    format!("{}\n{}", f.stdout, f.stderr)
}

/// Plain HTTP to the container's loopback port (the stand-in's test endpoints).
fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn write(port: u16, name: &str, body: &[u8]) {
    let r = http()
        .post(format!("http://127.0.0.1:{port}/data/write?name={name}"))
        .body(body.to_vec())
        .send()
        .await
        .expect("/data/write");
    assert_eq!(r.status().as_u16(), 200, "{:?}", r.text().await);
}

async fn read(port: u16, name: &str) -> (u16, Vec<u8>) {
    let r = http()
        .get(format!("http://127.0.0.1:{port}/data/read?name={name}"))
        .send()
        .await
        .expect("/data/read");
    let s = r.status().as_u16();
    (s, r.bytes().await.unwrap_or_default().to_vec())
}

async fn text(port: u16, path: &str) -> String {
    http()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .send()
        .await
        .expect("request to the container")
        .text()
        .await
        .unwrap_or_default()
}

/// Bytes that compress badly, so a flipped byte is a real change.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn backup_path(f: &Finished) -> PathBuf {
    let line = f
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("backup written: "))
        .unwrap_or_else(|| panic!("no `backup written:` line in:\n{}", both(f)));
    PathBuf::from(line.trim())
}

/// Rewrites a backup with `data/<file>` changed (one byte flipped), the manifest kept.
fn tamper(from: &Path, to: &Path, file: &str) {
    let mut input = tar::Archive::new(flate2::read::GzDecoder::new(
        std::fs::File::open(from).unwrap(),
    ));
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(to).unwrap(),
        flate2::Compression::default(),
    );
    let mut b = tar::Builder::new(gz);
    let mut hit = false;
    for e in input.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut body = Vec::new();
        e.read_to_end(&mut body).unwrap();
        if name == format!("data/{file}") {
            let mid = body.len() / 2;
            body[mid] ^= 0x20;
            hit = true;
        }
        let mut h = e.header().clone();
        b.append_data(&mut h, &name, body.as_slice()).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap();
    assert!(hit, "data/{file} in the backup");
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_then_restore_is_byte_identical_and_damaged_archives_change_nothing() {
    let Some(repo) = image_repo() else { return };
    let p = project("br");
    let state = webui::state_dir();
    let port = free_port();
    let w = up(state.path(), &p, &format!("{repo}:v1"), port);
    stop(w);

    let a = noise(300_000, 1);
    let b = b"second file\n".to_vec();
    write(port, "a.bin", &a).await;
    write(port, "b.txt", &b).await;

    let out_dir = tempfile::tempdir().unwrap();
    let out_arg = out_dir.path().display().to_string();
    let f = run(state.path(), &p, &["backup", "--output", &out_arg]);
    assert_eq!(code(&f), 0, "{}", both(&f));
    let archive = backup_path(&f);
    let fname = archive.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        fname.starts_with(&format!("webui-backup-{}-", p.name)) && fname.ends_with("Z.tar.gz"),
        "{fname}"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&archive).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        f.stdout.contains("paused") || f.stdout.contains("online"),
        "the consistency method is named: {}",
        f.stdout
    );
    assert_eq!(inspect(&p.n("open-webui"), "{{.State.Status}}"), "running");

    // Change everything after the backup.
    write(port, "a.bin", b"overwritten").await;
    write(port, "b.txt", b"").await;
    write(port, "c.txt", b"made after the backup").await;

    // Damaged archives are refused and change nothing.
    let cut = out_dir.path().join("cut.tar.gz");
    let bytes = std::fs::read(&archive).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let tampered = out_dir.path().join("tampered.tar.gz");
    tamper(&archive, &tampered, "a.bin");
    let started = inspect(&p.n("open-webui"), "{{.State.StartedAt}}");
    for bad in [&cut, &tampered] {
        let f = run(
            state.path(),
            &p,
            &["restore", &bad.display().to_string(), "--yes"],
        );
        assert_eq!(code(&f), 1, "{}", both(&f));
        assert!(
            f.stderr.contains("is damaged") && f.stderr.contains("nothing was changed"),
            "{}",
            both(&f)
        );
        if bad == &tampered {
            assert!(
                f.stderr.contains("data/a.bin does not match"),
                "{}",
                f.stderr
            );
        }
        assert_eq!(read(port, "a.bin").await.1, b"overwritten");
        assert_eq!(read(port, "c.txt").await.1, b"made after the backup");
        assert_eq!(
            inspect(&p.n("open-webui"), "{{.State.StartedAt}}"),
            started,
            "the container was not touched"
        );
    }

    // Without --yes: what would happen, exit 1, nothing changed.
    let arg = archive.display().to_string();
    let f = run(state.path(), &p, &["restore", &arg]);
    assert_eq!(code(&f), 1, "{}", both(&f));
    assert!(f.stdout.contains("every checksum matches"), "{}", f.stdout);
    assert!(f.stdout.contains("--yes"), "{}", f.stdout);
    assert!(f.stdout.contains("secret_key"), "{}", f.stdout);
    assert_eq!(read(port, "a.bin").await.1, b"overwritten");

    let f = run(state.path(), &p, &["restore", &arg, "--yes"]);
    assert_eq!(code(&f), 0, "{}", both(&f));
    assert!(f.stdout.contains("is healthy"), "{}", f.stdout);
    assert_eq!(read(port, "a.bin").await.1, a, "byte-identical");
    assert_eq!(read(port, "b.txt").await.1, b);
    // The stand-in image has no shell: a file made after the backup is emptied (the
    // real image removes it).
    let (_, c) = read(port, "c.txt").await;
    assert!(c.is_empty(), "c.txt after restore: {c:?}");

    let f = run(state.path(), &p, &["status"]);
    assert!(f.stdout.contains("last backup: "), "{}", f.stdout);
    assert!(f.stdout.contains(&fname), "{}", f.stdout);
}

/// Polls `/` through the proxy as a browser; records (status, body) of non-200s.
fn poll_pages(
    c: reqwest::Client,
    url: String,
    stop: Arc<Mutex<bool>>,
) -> tokio::task::JoinHandle<Vec<(u16, String)>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        while !*stop.lock().unwrap() {
            if let Ok(r) = c.get(&url).header("Accept", "text/html").send().await {
                let s = r.status().as_u16();
                let body = r.text().await.unwrap_or_default();
                if s != 200 {
                    seen.push((s, body));
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        seen
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn update_v1_to_v2_keeps_data_and_secret_and_up_keeps_the_new_version() {
    let Some(repo) = image_repo() else { return };
    let p = project("v2");
    let state = webui::state_dir();
    let port = free_port();
    let w = up(state.path(), &p, &format!("{repo}:v1"), port);
    let data = noise(50_000, 7);
    write(port, "keep.bin", &data).await;
    let secret = text(port, "/env?name=WEBUI_SECRET_KEY").await;
    assert!(secret.len() >= 16, "{secret}");
    let v1_digest = inspect(
        &p.n("open-webui"),
        "{{index .Config.Labels \"webui.image-digest\"}}",
    );

    let f = run(state.path(), &p, &["update", "--check"]);
    assert_eq!(code(&f), 0, "{}", both(&f));
    assert!(f.stdout.contains("up to date"), "{}", both(&f));
    let v2 = format!("{repo}:v2");
    let f = run(
        state.path(),
        &p,
        &["update", "--check", "--image", &v2, "--json"],
    );
    assert_eq!(code(&f), 0, "{}", both(&f));
    let j: serde_json::Value = serde_json::from_str(&f.stdout).expect("json");
    assert_eq!(j["update_available"], true, "{j}");
    assert_eq!(j["outcome"], "update-available");

    // The page during the swap.
    let c = webui::https_client(&webui::local_ca(state.path()), false);
    let stop_flag = Arc::new(Mutex::new(false));
    let poller = poll_pages(c.clone(), w.https_url("/"), stop_flag.clone());
    let (st, pr) = (state.path().to_path_buf(), p.name.clone());
    let f = tokio::task::spawn_blocking(move || {
        webui::run(&st, &["--project", &pr, "update", "--image", &v2], RUN)
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    *stop_flag.lock().unwrap() = true;
    let pages = poller.await.unwrap();
    assert_eq!(code(&f), 0, "{}", both(&f));
    assert!(f.stdout.contains("updated "), "{}", f.stdout);
    assert!(f.stdout.contains("backup: "), "{}", f.stdout);
    // `webui update` tells the running supervisor: the page during the swap is the
    // "being updated" one, a 503 in HTML, never a proxy error.
    assert!(
        pages
            .iter()
            .any(|(s, b)| *s == 503 && b.contains("Open WebUI is being updated")),
        "the updating page during the swap: {pages:?}"
    );
    assert!(
        pages.iter().all(|(s, _)| *s == 503),
        "only hold pages, no proxy errors: {pages:?}"
    );

    assert!(text(port, "/api/version").await.contains("v2"));
    assert_eq!(read(port, "keep.bin").await.1, data, "data intact");
    assert_eq!(
        text(port, "/env?name=WEBUI_SECRET_KEY").await,
        secret,
        "same secret: sessions stay valid"
    );
    let v2_digest = inspect(
        &p.n("open-webui"),
        "{{index .Config.Labels \"webui.image-digest\"}}",
    );
    assert_ne!(v1_digest, v2_digest);
    let (_, list) = docker(&["ps", "-a", "--format", "{{.Names}}"]);
    assert!(!list.contains(&p.n("open-webui-pre-update")), "{list}");
    let f = run(state.path(), &p, &["status"]);
    assert!(f.stdout.contains("last update: "), "{}", f.stdout);
    assert!(f.stdout.contains("updated"), "{}", f.stdout);
    assert!(f.stdout.contains("open-webui version v2"), "{}", f.stdout);
    stop(w);

    // A later `up` configured with :v1 keeps what `webui update` chose.
    let w = up(state.path(), &p, &format!("{repo}:v1"), port);
    let out = w.output_text();
    assert!(out.contains("set by `webui update`"), "{out}");
    assert!(text(port, "/api/version").await.contains("v2"));
    assert_eq!(
        inspect(
            &p.n("open-webui"),
            "{{index .Config.Labels \"webui.image-digest\"}}"
        ),
        v2_digest
    );
    stop(w);
}

#[tokio::test(flavor = "multi_thread")]
async fn update_to_a_broken_image_rolls_back_with_identical_data() {
    let Some(repo) = image_repo() else { return };
    let p = project("rb");
    let state = webui::state_dir();
    let port = free_port();
    let w = up(state.path(), &p, &format!("{repo}:v1"), port);
    stop(w);
    let data = noise(200_000, 42);
    write(port, "webui.db", &data).await;
    let secret = text(port, "/env?name=WEBUI_SECRET_KEY").await;
    let name = p.n("open-webui");
    let v1_digest = inspect(&name, "{{index .Config.Labels \"webui.image-digest\"}}");
    let v1_image = inspect(&name, "{{.Image}}");

    for (tag, why) in [("broken", "did not become healthy"), ("crashloop", "crash")] {
        let f = run(
            state.path(),
            &p,
            &[
                "update",
                "--image",
                &format!("{repo}:{tag}"),
                "--health-timeout",
                "10s",
            ],
        );
        let all = both(&f);
        assert_eq!(code(&f), 1, "{all}");
        assert!(f.stderr.contains("failed and was rolled back"), "{all}");
        assert!(all.contains(why), "{all}");
        assert!(
            f.stderr.contains("update-failed-"),
            "where the logs are: {all}"
        );
        assert!(f.stdout.contains("rolled back: "), "{all}");
        assert_eq!(inspect(&name, "{{.Image}}"), v1_image, "v1 runs again");
        assert_eq!(
            inspect(&name, "{{index .Config.Labels \"webui.image-digest\"}}"),
            v1_digest
        );
        assert_eq!(inspect(&name, "{{.State.Status}}"), "running");
        assert!(text(port, "/api/version").await.contains("v1"));
        assert_eq!(read(port, "webui.db").await.1, data, "byte-identical");
        assert_eq!(text(port, "/env?name=WEBUI_SECRET_KEY").await, secret);
        let (_, list) = docker(&["ps", "-a", "--format", "{{.Names}}"]);
        assert!(!list.contains(&p.n("open-webui-pre-update")), "{list}");
    }
    let f = run(state.path(), &p, &["status"]);
    assert!(f.stdout.contains("rolled-back"), "{}", f.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn updates_keep_their_newest_backups_and_never_remove_a_manual_one() {
    let Some(repo) = image_repo() else { return };
    let p = project("keep");
    let state = webui::state_dir();
    let port = free_port();
    let w = up(state.path(), &p, &format!("{repo}:v1"), port);
    stop(w);
    let backups = state.path().join("backups");
    let names = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&backups)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    // `webui update --image <repo>:<tag> --keep-backups <keep> [--json]`; file names
    // carry the time to the second, so each waits for the next second first.
    let update = |tag: &str, keep: &str, json: bool| {
        std::thread::sleep(Duration::from_millis(1100));
        let image = format!("{repo}:{tag}");
        let mut args = vec!["update", "--image", &image, "--keep-backups", keep];
        if json {
            args.push("--json");
        }
        run(state.path(), &p, &args)
    };

    // Bad input changes nothing.
    let f = update("v2", "0", false);
    assert_eq!(code(&f), 1, "{}", both(&f));
    assert!(
        f.stderr.contains("1 or more") && f.stderr.contains("`all`"),
        "{}",
        both(&f)
    );
    assert!(names().is_empty(), "{:?}", names());
    assert!(text(port, "/api/version").await.contains("v1"));

    // A backup of the operator's own, in the same directory.
    let f = run(state.path(), &p, &["backup"]);
    assert_eq!(code(&f), 0, "{}", both(&f));
    let manual = backup_path(&f);

    // Three updates keeping two: the first update's backup goes, the manual one stays.
    let mut made = Vec::new();
    for (i, tag) in ["v2", "v1", "v2"].into_iter().enumerate() {
        let f = update(tag, "2", true);
        assert_eq!(code(&f), 0, "{}", both(&f));
        let j: serde_json::Value = serde_json::from_str(&f.stdout).expect("json");
        made.push(PathBuf::from(j["backup"].as_str().expect("a backup")));
        let removed: Vec<&str> = j["removed_backups"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        if i < 2 {
            assert!(removed.is_empty(), "update {}: {j}", i + 1);
        } else {
            assert_eq!(removed, vec![made[0].to_str().unwrap()], "{j}");
        }
    }
    assert!(!made[0].exists(), "the oldest update backup is removed");
    assert!(
        made[1].exists() && made[2].exists(),
        "the newest two are kept"
    );
    assert!(
        manual.exists(),
        "a backup made with `webui backup` is never removed"
    );
    assert!(text(port, "/api/version").await.contains("v2"));

    // `all` removes nothing.
    let f = update("v1", "all", false);
    assert_eq!(code(&f), 0, "{}", both(&f));
    assert!(made[1].exists() && made[2].exists() && manual.exists());
    assert_eq!(names().len(), 4, "{:?}", names());

    // Keeping one: every older update backup goes, said so; the manual one stays.
    let f = update("v2", "1", false);
    assert_eq!(code(&f), 0, "{}", both(&f));
    assert!(
        f.stdout.contains("removed 3 older update backups"),
        "{}",
        both(&f)
    );
    let left = names();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(manual.exists(), "{left:?}");

    // The same from webui.toml, without the flag; a bad value there names its line and
    // changes nothing.
    let config = state.path().join("webui.toml");
    let update_by_config = |tag: &str| {
        std::thread::sleep(Duration::from_millis(1100));
        let image = format!("{repo}:{tag}");
        run(state.path(), &p, &["update", "--image", &image])
    };
    std::fs::write(&config, "# kept by the operator\nkeep_backups = 0\n").unwrap();
    let f = update_by_config("v1");
    assert_eq!(code(&f), 1, "{}", both(&f));
    assert!(
        f.stderr.contains("`keep_backups` on line 2") && f.stderr.contains("1 or more"),
        "{}",
        both(&f)
    );
    assert_eq!(names(), left, "a refused update touches no backup");
    assert!(text(port, "/api/version").await.contains("v2"));
    std::fs::write(&config, "keep_backups = \"all\"\n").unwrap();
    let f = update_by_config("v1");
    assert_eq!(code(&f), 0, "{}", both(&f));
    assert_eq!(names().len(), 3, "`all` in the file keeps every one");
    std::fs::write(&config, "keep_backups = 1\n").unwrap();
    let f = update_by_config("v2");
    assert_eq!(code(&f), 0, "{}", both(&f));
    assert!(
        f.stdout.contains("removed 2 older update backups"),
        "{}",
        both(&f)
    );
    assert_eq!(names().len(), 2, "{:?}", names());
    assert!(manual.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn up_makes_scheduled_backups_and_keeps_only_the_newest_of_its_own() {
    let Some(repo) = image_repo() else { return };
    let p = project("sched");
    let state = webui::state_dir();
    let port = free_port();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("nightly");
    std::fs::create_dir(&dir).unwrap();
    // Not the schedule's to remove: other files, another project's archive whose name
    // starts like this one's. This project's stale archive is, once two newer exist.
    let foreign = [
        dir.join("notes.txt"),
        dir.join(format!("webui-backup-{}-2-20200101T000000Z.tar.gz", p.name)),
    ];
    for f in &foreign {
        std::fs::write(f, b"keep me").unwrap();
    }
    let stale = dir.join(format!("webui-backup-{}-20200101T000000Z.tar.gz", p.name));
    std::fs::write(&stale, b"old").unwrap();

    let dir_arg = dir.display().to_string();
    let w = sv::up(
        state.path(),
        &p,
        &format!("{repo}:v1"),
        port,
        "127.0.0.1:0",
        &[
            "--backup-every",
            "3s",
            "--backup-keep",
            "2",
            "--backup-dir",
            &dir_arg,
        ],
    );
    sv::wait_ready(&w);
    write(port, "marker.txt", b"in the scheduled backup").await;
    let written = |w: &Webui| {
        w.output_text()
            .matches("scheduled backup written: ")
            .count()
    };
    let start = std::time::Instant::now();
    while written(&w) < 3 && start.elapsed() < Duration::from_secs(90) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        written(&w) >= 3,
        "three scheduled backups:\n{}",
        w.output_text()
    );

    let f = run(state.path(), &p, &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&f.stdout).unwrap();
    let b = &v["supervisor"]["backups"];
    assert!(b["made"].as_u64().unwrap() >= 3, "{b}");
    assert_eq!(
        (b["keep"].as_u64(), b["last_error"].is_null()),
        (Some(2), true),
        "{b}"
    );
    let f = run(state.path(), &p, &["status"]);
    assert!(
        f.stdout.contains(&format!(
            "backups: every 3s, the newest 2 kept in {dir_arg}; last "
        )),
        "{}",
        both(&f)
    );
    // doctor: the schedule counts as backed up.
    let f = run(state.path(), &p, &["doctor", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&f.stdout).unwrap();
    let c = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "backups")
        .unwrap_or_else(|| panic!("no backups check: {v}"));
    assert_eq!(c["status"], "pass", "{c}");
    assert!(
        c["evidence"]
            .as_str()
            .unwrap()
            .contains("scheduled every 3s"),
        "{c}"
    );
    let out = stop(w);

    let mine: Vec<PathBuf> = {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|path| !foreign.contains(path))
            .collect();
        v.sort();
        v
    };
    assert_eq!(mine.len(), 2, "the newest two are kept: {mine:?}\n{out}");
    assert!(
        !stale.exists(),
        "the stale archive of this project is removed"
    );
    for f in &foreign {
        assert_eq!(std::fs::read(f).unwrap(), b"keep me", "{}", f.display());
    }
    // `backup --list` finds them after `up` stopped (the directory was recorded), and
    // not the other project's.
    let f = run(state.path(), &p, &["backup", "--list", "--json"]);
    assert_eq!(code(&f), 0, "{}", both(&f));
    let v: serde_json::Value = serde_json::from_str(&f.stdout).unwrap();
    let listed: Vec<(String, String)> = v["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["file"].as_str().unwrap().to_string(),
                b["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = mine
        .iter()
        .rev()
        .map(|m| (m.display().to_string(), "scheduled".to_string()))
        .collect();
    assert_eq!(listed, expected, "newest first");
    let f = run(state.path(), &p, &["backup", "--list"]);
    assert!(
        f.stdout.contains("2 backups; put one back with"),
        "{}",
        both(&f)
    );

    // The newest is a whole backup holding what was written before it.
    let newest = mine.last().unwrap();
    let tar = std::process::Command::new("tar")
        .arg("-xzOf")
        .arg(newest)
        .arg("data/marker.txt")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&tar.stdout),
        "in the scheduled backup",
        "{}",
        String::from_utf8_lossy(&tar.stderr)
    );
}
