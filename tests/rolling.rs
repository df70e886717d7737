//! `webui update` across replicas (`webui up --replicas 3`): a rolling update, one
//! replica at a time, health-gated, with a steady client through the proxy.
//!
//! Real dockerd, the local registry's stand-in Open WebUI (`:v1`, `:v2`, `:broken`
//! never healthy) and the Postgres/Redis test images (`WEBUI_TEST_POSTGRES_IMAGE`,
//! `WEBUI_TEST_REDIS_IMAGE` from /var/lib/webui-ci/env). Each test has its own
//! project (`t-roll-<name>-<pid>`), state dir and ports, removed by a guard. Without
//! dockerd or the images the tests skip with a reason, except in CI.

mod support;
#[path = "supervision_support/mod.rs"]
mod sv;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::webui::{self, Finished, Webui};
use sv::{Cleanup, docker, inspect};

const N: u32 = 3;
const RUN: Duration = Duration::from_secs(400);

struct Images {
    repo: String,
    postgres: String,
    redis: String,
}

fn images() -> Option<Images> {
    let repo = sv::docker_available()?.openwebui;
    match (
        std::env::var("WEBUI_TEST_POSTGRES_IMAGE"),
        std::env::var("WEBUI_TEST_REDIS_IMAGE"),
    ) {
        (Ok(p), Ok(r)) if !p.is_empty() && !r.is_empty() => Some(Images {
            repo,
            postgres: p,
            redis: r,
        }),
        _ => {
            sv::skip(
                "WEBUI_TEST_POSTGRES_IMAGE / WEBUI_TEST_REDIS_IMAGE are not set (source /var/lib/webui-ci/env)",
            );
            None
        }
    }
}

/// A loopback port with the next N-1 free too (replica k listens on port + k - 1).
fn free_ports() -> u16 {
    loop {
        let port = sv::free_port();
        let rest_free = (1..N).all(|k| {
            port.checked_add(k as u16)
                .is_some_and(|p| TcpListener::bind(("127.0.0.1", p)).is_ok())
        });
        if rest_free {
            return port;
        }
    }
}

fn replica(p: &Cleanup, k: u32) -> String {
    if k == 1 {
        p.n("open-webui")
    } else {
        p.n(&format!("open-webui-{k}"))
    }
}

/// `webui up --replicas 3` on `:v1`, waited for until it serves.
fn up(state: &Path, p: &Cleanup, im: &Images, port: u16) -> Webui {
    let n = N.to_string();
    let w = sv::up(
        state,
        p,
        &format!("{}:v1", im.repo),
        port,
        "127.0.0.1:0",
        &[
            "--replicas",
            &n,
            "--postgres-image",
            &im.postgres,
            "--redis-image",
            &im.redis,
        ],
    );
    sv::wait_ready(&w);
    w
}

fn both(f: &Finished) -> String {
    format!("{}\n{}", f.stdout, f.stderr)
}

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn text(port: u16, path: &str) -> String {
    http()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .send()
        .await
        .expect("request to a replica")
        .text()
        .await
        .unwrap_or_default()
}

fn image_id(reference: &str) -> String {
    let (ok, id) = docker(&["image", "inspect", "-f", "{{.Id}}", reference]);
    assert!(ok, "docker image inspect {reference}");
    id
}

/// One control-socket request to the running `webui up`.
fn ask(socket: &Path, line: &str) -> Option<serde_json::Value> {
    let mut s = UnixStream::connect(socket).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("{line}\n").as_bytes()).ok()?;
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer).ok()?;
    serde_json::from_str(&answer).ok()
}

/// What a steady client through the proxy saw.
#[derive(Default, Debug)]
struct Seen {
    ok: u64,
    /// (what, status or error)
    failed: Vec<(String, String)>,
    versions: std::collections::BTreeSet<String>,
    hosts: std::collections::BTreeSet<String>,
    streams: u64,
}

/// Several concurrent GET loops and an SSE stream loop through the proxy until `stop`.
fn steady_client(w: &Webui, state: &Path, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Seen> {
    let c = sv::client(state);
    let version = w.https_url("/api/version");
    let host = w.https_url("/env?name=HOSTNAME");
    let sse = w.https_url("/sse?n=8&interval_ms=150");
    tokio::spawn(async move {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let mut tasks = Vec::new();
        for i in 0..6 {
            let (c, stop, seen) = (c.clone(), stop.clone(), seen.clone());
            let url = if i % 2 == 0 {
                version.clone()
            } else {
                host.clone()
            };
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let r = c
                        .get(&url)
                        .header("accept", "application/json")
                        .send()
                        .await;
                    let outcome = match r {
                        Ok(r) => {
                            let s = r.status().as_u16();
                            match r.text().await {
                                Ok(body) if s == 200 => Ok(body),
                                Ok(body) => Err(format!(
                                    "{s} {}",
                                    body.chars().take(200).collect::<String>()
                                )),
                                Err(e) => Err(format!("{s} body: {e}")),
                            }
                        }
                        Err(e) => Err(format!("{e:?}")),
                    };
                    {
                        let mut g = seen.lock().unwrap();
                        match outcome {
                            Ok(body) => {
                                g.ok += 1;
                                if i % 2 == 0 {
                                    g.versions.insert(body);
                                } else {
                                    g.hosts.insert(body);
                                }
                            }
                            Err(e) => g.failed.push((url.clone(), e)),
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }));
        }
        {
            let (c, stop, seen) = (c.clone(), stop.clone(), seen.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let r = c
                        .get(&sse)
                        .header("accept", "text/event-stream")
                        .send()
                        .await;
                    let outcome = match r {
                        Ok(r) if r.status().as_u16() == 200 => match r.text().await {
                            Ok(body) if body.matches("data: ").count() == 8 => Ok(()),
                            Ok(body) => Err(format!("cut stream: {body:?}")),
                            Err(e) => Err(format!("stream body: {e}")),
                        },
                        Ok(r) => Err(format!("{}", r.status())),
                        Err(e) => Err(format!("{e:?}")),
                    };
                    let mut g = seen.lock().unwrap();
                    match outcome {
                        Ok(()) => g.streams += 1,
                        Err(e) => g.failed.push((sse.clone(), e)),
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        Arc::try_unwrap(seen).unwrap().into_inner().unwrap()
    })
}

/// Samples every replica's state on the control socket until `stop`: the fewest
/// replicas in rotation at once, and which replicas were seen out for the update.
fn watch_rotation(
    socket: PathBuf,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(u32, Vec<u32>, u64)> {
    std::thread::spawn(move || {
        let mut fewest = N;
        let mut updating = Vec::new();
        let mut samples = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let states: Vec<Option<String>> = (1..=N)
                .map(|k| {
                    ask(&socket, &format!("replica-state {k}"))
                        .and_then(|v| v["state"].as_str().map(str::to_string))
                })
                .collect();
            if states.iter().all(Option::is_some) {
                samples += 1;
                let healthy = states
                    .iter()
                    .filter(|s| s.as_deref() == Some("healthy"))
                    .count() as u32;
                fewest = fewest.min(healthy);
                for (k, s) in (1..=N).zip(&states) {
                    if s.as_deref() == Some("updating") && !updating.contains(&k) {
                        updating.push(k);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(30));
        }
        (fewest, updating, samples)
    })
}

/// Follows the replicas' `die`/`start` events from now on (a `docker events` child:
/// the engine keeps only its last 256 events for `--since`, too few while other tests
/// run); `finish` stops it and returns them in order as (replica, action).
struct Events {
    child: std::process::Child,
    reader: std::thread::JoinHandle<Vec<String>>,
}

impl Events {
    fn follow(p: &Cleanup) -> Events {
        let mut child = std::process::Command::new(sv::docker_cli())
            .args([
                "events",
                "--filter",
                &format!("label=webui.project={}", p.name),
                "--filter",
                "label=webui.role=open-webui",
                "--filter",
                "event=start",
                "--filter",
                "event=die",
                "--format",
                "{{.Action}} {{.Actor.Attributes.name}}",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("docker events");
        let out = child.stdout.take().expect("piped");
        let reader =
            std::thread::spawn(move || BufReader::new(out).lines().map_while(Result::ok).collect());
        // `docker events` subscribes as it starts: give it that moment.
        std::thread::sleep(Duration::from_millis(500));
        Events { child, reader }
    }

    fn finish(mut self, p: &Cleanup) -> Vec<(u32, String)> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let lines = self.reader.join().expect("reader");
        lines
            .iter()
            .filter_map(|l| {
                let (action, name) = l.split_once(' ')?;
                let k = (1..=N).find(|k| replica(p, *k) == name)?;
                Some((k, action.to_string()))
            })
            .collect()
    }
}

fn started_at(p: &Cleanup) -> Vec<String> {
    (1..=N)
        .map(|k| inspect(&replica(p, k), "{{.State.StartedAt}}"))
        .collect()
}

/// The first word after `prefix` on the line of `stdout` that starts with it.
fn line_after(stdout: &str, prefix: &str, all: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|l| l.split(' ').next())
        .unwrap_or_else(|| panic!("no `{prefix}` line: {all}"))
        .to_string()
}

/// `webui update --image IMAGE EXTRA…` of project `p` on a blocking thread, so that
/// the test's clients and watchers keep running meanwhile.
fn update_in_background(
    state: &Path,
    p: &Cleanup,
    image: &str,
    extra: &[&str],
) -> tokio::task::JoinHandle<Finished> {
    let (st, pr) = (state.to_path_buf(), p.name.clone());
    let mut args: Vec<String> = ["--project", &pr, "update", "--image", image]
        .iter()
        .map(|a| a.to_string())
        .collect();
    args.extend(extra.iter().map(|a| a.to_string()));
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        webui::run(&st, &args, RUN)
    })
}

/// The database dump named on the line of `stdout` that starts with `prefix`: a
/// pg_dump custom-format file, mode 0600.
fn dump_named(stdout: &str, prefix: &str, all: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dump = PathBuf::from(line_after(stdout, prefix, all));
    let bytes = std::fs::read(&dump).expect("the dump file");
    assert!(bytes.starts_with(b"PGDMP"), "a pg_dump custom-format file");
    assert_eq!(
        std::fs::metadata(&dump).unwrap().permissions().mode() & 0o777,
        0o600
    );
    dump
}

#[tokio::test(flavor = "multi_thread")]
async fn rolling_update_of_three_replicas_fails_no_request_and_keeps_two_serving() {
    let Some(im) = images() else { return };
    let p = Cleanup::new("roll-ok");
    let state = webui::state_dir();
    let port = free_ports();
    let w = up(state.path(), &p, &im, port);
    let socket = state.path().join("run").join(format!("{}.sock", p.name));
    let v1 = image_id(&format!("{}:v1", im.repo));

    // Data in the shared volume, written through replica 1, read through replica 3.
    let r = http()
        .post(format!("http://127.0.0.1:{port}/data/write?name=keep.txt"))
        .body("kept across the roll")
        .send()
        .await
        .expect("/data/write");
    assert_eq!(r.status().as_u16(), 200);
    for k in 1..=N {
        assert_eq!(inspect(&replica(&p, k), "{{.Image}}"), v1);
    }

    let dbs_started = [p.n("postgres"), p.n("redis")].map(|c| inspect(&c, "{{.State.StartedAt}}"));
    let stop = Arc::new(AtomicBool::new(false));
    let client = steady_client(&w, state.path(), stop.clone());
    let rotation = watch_rotation(socket.clone(), stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let events = Events::follow(&p);
    let v2 = format!("{}:v2", im.repo);
    let f = update_in_background(state.path(), &p, &v2, &[])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let seen = client.await.unwrap();
    let (fewest, out, samples) = rotation.join().unwrap();
    let all = both(&f);

    assert_eq!(f.status.code(), Some(0), "{all}");
    for k in 1..=N {
        assert!(
            all.contains(&format!("replica {k}/{N}")),
            "progress line for replica {k}: {all}"
        );
    }
    assert_eq!(all.matches("back in rotation").count(), N as usize, "{all}");
    assert!(all.contains("updated all 3 replicas"), "{all}");
    // The shared database was dumped before the first replica left.
    dump_named(&f.stdout, "database backup: ", &all);
    assert!(
        all.find("database backup: ") < all.find("replica 1/3"),
        "dumped before the first replica left: {all}"
    );

    // Zero failed requests, and the client really ran through the roll.
    assert!(
        seen.failed.is_empty(),
        "failed requests: {:#?}",
        seen.failed
    );
    assert!(seen.ok > 100, "too few requests to mean anything: {seen:?}");
    assert!(seen.streams >= 5, "SSE streams completed: {seen:?}");
    assert!(
        seen.versions.iter().any(|v| v.contains("v1"))
            && seen.versions.iter().any(|v| v.contains("v2")),
        "both versions answered during the roll: {:?}",
        seen.versions
    );

    // One at a time: the supervisor never had fewer than N-1 in rotation, and each
    // replica was taken out.
    assert!(samples > 50, "rotation samples: {samples}");
    assert_eq!(fewest, N - 1, "fewest replicas in rotation at once");
    let mut out_sorted = out.clone();
    out_sorted.sort();
    assert_eq!(out_sorted, vec![1, 2, 3], "each replica left rotation once");
    // Docker's view: each replica died and started once, never two down together.
    let events = events.finish(&p);
    let mut down = 0i32;
    let mut worst = 0i32;
    for (_, action) in &events {
        match action.as_str() {
            "die" => down += 1,
            "start" => down -= 1,
            _ => {}
        }
        worst = worst.max(down);
    }
    assert_eq!(worst, 1, "at most one replica down at a time: {events:?}");
    assert_eq!(
        events.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
        vec![1, 1, 2, 2, 3, 3],
        "replicas replaced in order, one after the other: {events:?}"
    );

    // All on the new image, data and volumes kept, nothing left aside.
    let v2_id = image_id(&v2);
    for k in 1..=N {
        let name = replica(&p, k);
        assert_eq!(inspect(&name, "{{.Image}}"), v2_id, "{name}");
        assert_eq!(inspect(&name, "{{.Config.Image}}"), v2, "{name}");
        assert_eq!(inspect(&name, "{{.State.Status}}"), "running");
        let rport = port + (k as u16) - 1;
        assert!(text(rport, "/api/version").await.contains("v2"));
    }
    assert_eq!(
        text(port + 2, "/data/read?name=keep.txt").await,
        "kept across the roll"
    );
    let (_, names) = docker(&["ps", "-a", "--format", "{{.Names}}"]);
    assert!(
        !names
            .lines()
            .any(|l| l.starts_with(&p.name) && l.ends_with("-pre-update")),
        "no old container left aside: {names}"
    );
    assert_eq!(
        [p.n("postgres"), p.n("redis")].map(|c| inspect(&c, "{{.State.StartedAt}}")),
        dbs_started,
        "Postgres and Redis were not restarted by the roll"
    );
    let (_, vols) = docker(&["volume", "ls", "--format", "{{.Name}}"]);
    for v in ["open-webui", "postgres", "redis"] {
        assert!(vols.lines().any(|l| l == p.n(v)), "volume {v} kept: {vols}");
    }
    let f = sv::run(state.path(), &p, &["status"]);
    assert!(f.stdout.contains("last update: "), "{}", both(&f));
    // `webui up` knew the stops were the update's: no crash or stop reported.
    let out = w.output_text();
    assert!(
        !out.contains("exited (code") && !out.contains("was stopped (not by a crash)"),
        "the roll's stops reported as crashes or stops: {out}"
    );
    sv::stop(w);

    // A later `webui up` still configured with :v1 keeps what the roll chose.
    let w = up(state.path(), &p, &im, port);
    for k in 1..=N {
        let name = replica(&p, k);
        assert_eq!(inspect(&name, "{{.Image}}"), v2_id, "{name} after up");
    }
    sv::stop(w);
}

/// Runs `q` with psql in the Postgres container `pg`, as its own user; the output.
fn psql(pg: &str, q: &str) -> String {
    let (ok, out) = docker(&[
        "exec",
        pg,
        "sh",
        "-c",
        r#"PGPASSWORD="$POSTGRES_PASSWORD" psql -h 127.0.0.1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" -tAc "$0""#,
        q,
    ]);
    assert!(ok, "psql {q}: {out}");
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn on_postgres_the_backup_holds_the_database_and_restore_puts_it_back() {
    let Some(im) = images() else { return };
    let p = Cleanup::new("pg-restore");
    let state = webui::state_dir();
    let port = free_ports();
    let _w = up(state.path(), &p, &im, port);
    let pg = p.n("postgres");
    let sql = |q: &str| psql(&pg, q);
    sql("create table webui_test (v text); insert into webui_test values ('before')");

    // On Postgres the volume holds files only: `webui backup` dumps the database into
    // the archive, so that the one file holds everything.
    let out_dir = state.path().join("my-backups");
    std::fs::create_dir_all(&out_dir).unwrap();
    let b = webui::run(
        state.path(),
        &[
            "--project",
            &p.name,
            "backup",
            "--output",
            out_dir.to_str().unwrap(),
        ],
        RUN,
    );
    let all = both(&b);
    assert_eq!(b.status.code(), Some(0), "{all}");
    assert!(
        all.contains("database (Postgres): in the archive as postgres.dump"),
        "{all}"
    );
    let archive = line_after(&b.stdout, "backup written: ", &all);
    let dumps = |dir: &Path| {
        std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().contains(".dump"))
                    .count()
            })
            .unwrap_or(0)
    };
    assert_eq!(dumps(&out_dir), 0, "no dump left beside the archive: {all}");
    assert_eq!(
        dumps(&state.path().join("backups")),
        0,
        "no temporary dump left: {all}"
    );
    // The dump in it is a pg_dump custom-format file (taken out here to be given
    // with --database below, as a dump made apart would be).
    let apart = state.path().join("apart");
    std::fs::create_dir_all(&apart).unwrap();
    let x = std::process::Command::new("tar")
        .args(["-xzf", &archive, "-C"])
        .arg(&apart)
        .arg("postgres.dump")
        .status()
        .unwrap();
    assert!(x.success(), "the archive holds postgres.dump: {all}");
    let dump = apart.join("postgres.dump");
    assert!(std::fs::read(&dump).unwrap().starts_with(b"PGDMP"));

    sql("update webui_test set v = 'after'");
    let restore = |extra: &[&str]| {
        let mut args = vec!["--project", p.name.as_str(), "restore", archive.as_str()];
        args.extend_from_slice(extra);
        webui::run(state.path(), &args, RUN)
    };
    // Without --yes, restore says what it would replace, the database included.
    let r = restore(&[]);
    let all = both(&r);
    assert_eq!(
        r.status.code(),
        Some(1),
        "without --yes nothing is changed: {all}"
    );
    assert!(
        all.contains("the Postgres database in") && all.contains("from the backup's postgres.dump"),
        "names the database: {all}"
    );
    assert_eq!(sql("select v from webui_test"), "after");
    // A --database file that is not a dump is refused before anything changes.
    let r = restore(&["--yes", "--database", &archive]);
    let all = both(&r);
    assert_eq!(r.status.code(), Some(1), "{all}");
    assert!(all.contains("not a pg_dump"), "{all}");
    assert_eq!(sql("select v from webui_test"), "after");

    // A dump made apart, given with --database.
    let r = restore(&["--yes", "--database", dump.to_str().unwrap()]);
    let all = both(&r);
    assert_eq!(r.status.code(), Some(0), "{all}");
    assert_eq!(
        sql("select v from webui_test"),
        "before",
        "the database is as it was at the backup: {all}"
    );

    // The archive alone puts the database back too.
    sql("update webui_test set v = 'after again'");
    let r = restore(&["--yes"]);
    let all = both(&r);
    assert_eq!(r.status.code(), Some(0), "{all}");
    assert_eq!(
        sql("select v from webui_test"),
        "before",
        "the archive's database is put back: {all}"
    );
    assert_eq!(
        dumps(&state.path().join("backups")),
        0,
        "the temporary copy of the dump is removed: {all}"
    );
    for k in 1..=N {
        assert_eq!(
            inspect(&replica(&p, k), "{{.State.Running}}"),
            "true",
            "replica {k} runs again: {all}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_update_of_one_container_on_postgres_puts_the_database_back() {
    let Some(im) = images() else { return };
    let p = Cleanup::new("pg-upd");
    let state = webui::state_dir();
    // One container whose data is in Postgres, as after `webui migrate-db`.
    let dir = state.path().join("projects").join(&p.name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("database.json"), r#"{"engine":"postgres"}"#).unwrap();
    let v1 = format!("{}:v1", im.repo);
    let w = sv::up(
        state.path(),
        &p,
        &v1,
        sv::free_port(),
        "127.0.0.1:0",
        &["--postgres-image", &im.postgres],
    );
    sv::wait_ready(&w);
    let pg = p.n("postgres");
    psql(
        &pg,
        "create table webui_test (v text); insert into webui_test values ('before')",
    );

    // An update to a version that never gets healthy. While it waits for it, the
    // database changes, as the new version's migrations would change it.
    let broken = format!("{}:broken", im.repo);
    let f = update_in_background(state.path(), &p, &broken, &["--health-timeout", "10s"]);
    // The new container is made after the backup and its database dump.
    let name = p.n("open-webui");
    let v1_id = image_id(&v1);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (ok, id) = docker(&["container", "inspect", "-f", "{{.Image}}", &name]);
        if ok && id != v1_id {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new container never appeared"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    psql(&pg, "update webui_test set v = 'after'");
    let f = f.await.unwrap();
    let all = both(&f);
    assert_eq!(f.status.code(), Some(1), "{all}");
    assert!(all.contains("was rolled back"), "{all}");
    assert_eq!(
        psql(&pg, "select v from webui_test"),
        "before",
        "the database is as the old version left it: {all}"
    );
    assert!(all.contains("restored the Postgres database from"), "{all}");
    assert_eq!(inspect(&name, "{{.Image}}"), v1_id, "{all}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_restored_into_replicas_gives_every_replica_its_secret() {
    let Some(im) = images() else { return };
    // The backup: of one container of another project, with a secret of its own.
    let from = Cleanup::new("sec-from");
    let state = webui::state_dir();
    let from_port = sv::free_port();
    let wf = sv::up(
        state.path(),
        &from,
        &format!("{}:v1", im.repo),
        from_port,
        "127.0.0.1:0",
        &[],
    );
    sv::wait_ready(&wf);
    let secret = text(from_port, "/env?name=WEBUI_SECRET_KEY").await;
    assert!(secret.len() >= 16, "{secret}");
    let b = webui::run(state.path(), &["--project", &from.name, "backup"], RUN);
    let all = both(&b);
    assert_eq!(b.status.code(), Some(0), "{all}");
    let archive = line_after(&b.stdout, "backup written: ", &all);

    // Restored into a project of three replicas: each signs sessions with the secret,
    // so each must run with the restored one.
    let p = Cleanup::new("sec-into");
    let port = free_ports();
    let _w = up(state.path(), &p, &im, port);
    assert_ne!(text(port + 1, "/env?name=WEBUI_SECRET_KEY").await, secret);
    let r = webui::run(
        state.path(),
        &["--project", &p.name, "restore", &archive, "--yes"],
        RUN,
    );
    let all = both(&r);
    assert_eq!(r.status.code(), Some(0), "{all}");
    // Restore returns once every replica is healthy again, each with the secret.
    for k in 0..N as u16 {
        assert_eq!(
            text(port + k, "/env?name=WEBUI_SECRET_KEY").await,
            secret,
            "replica {} runs with the restored secret: {all}",
            k + 1
        );
        assert!(
            all.contains(&format!("{} is healthy", replica(&p, u32::from(k) + 1))),
            "{all}"
        );
    }

    // The other way round: a backup of the replicas holds their Postgres database,
    // which a project on SQLite has no place for. Refused, nothing changed.
    let b = webui::run(state.path(), &["--project", &p.name, "backup"], RUN);
    let all = both(&b);
    assert_eq!(b.status.code(), Some(0), "{all}");
    let archive = line_after(&b.stdout, "backup written: ", &all);
    let r = webui::run(
        state.path(),
        &["--project", &from.name, "restore", &archive, "--yes"],
        RUN,
    );
    let all = both(&r);
    assert_eq!(r.status.code(), Some(1), "{all}");
    assert!(
        all.contains("holds a Postgres database") && all.contains("migrate-db"),
        "says why and what to do: {all}"
    );
    assert_eq!(
        inspect(&from.n("open-webui"), "{{.State.Running}}"),
        "true",
        "{all}"
    );
    assert_eq!(text(from_port, "/env?name=WEBUI_SECRET_KEY").await, secret);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_version_that_never_gets_healthy_stops_the_roll_and_the_old_replicas_keep_serving() {
    let Some(im) = images() else { return };
    let p = Cleanup::new("roll-bad");
    let state = webui::state_dir();
    let port = free_ports();
    let w = up(state.path(), &p, &im, port);
    let v1 = image_id(&format!("{}:v1", im.repo));
    let before = started_at(&p);

    let stop = Arc::new(AtomicBool::new(false));
    let client = steady_client(&w, state.path(), stop.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let broken = format!("{}:broken", im.repo);
    let started = Instant::now();
    let f = update_in_background(
        state.path(),
        &p,
        &broken,
        &["--health-timeout", "10s", "--json"],
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let seen = client.await.unwrap();
    let all = both(&f);

    assert_eq!(f.status.code(), Some(1), "{all}");
    assert!(
        f.stderr.contains("stopped at replica 1"),
        "says where the roll stopped: {all}"
    );
    assert!(
        f.stderr.contains("did not become healthy"),
        "and why: {all}"
    );
    assert!(
        f.stderr.contains("update-failed-"),
        "where the failed version's logs are: {all}"
    );
    assert!(
        f.stderr
            .contains(&format!("update --image {broken}` again")),
        "how to retry: {all}"
    );
    // --json: the report on stdout (progress lines left out), the error on stderr.
    let j: serde_json::Value = serde_json::from_str(&f.stdout).expect("--json report");
    assert_eq!(j["outcome"], "stopped", "{j}");
    let outcomes: Vec<&str> = j["replicas"]
        .as_array()
        .expect("replicas")
        .iter()
        .map(|r| r["outcome"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        outcomes,
        ["rolled-back", "not-reached", "not-reached"],
        "{j}"
    );
    assert!(
        j["backup"].as_str().is_some_and(|b| b.ends_with(".dump")),
        "the database dump: {j}"
    );
    assert!(started.elapsed() < Duration::from_secs(300));

    assert!(
        seen.failed.is_empty(),
        "failed requests: {:#?}",
        seen.failed
    );
    assert!(seen.ok > 50, "{seen:?}");
    assert!(
        seen.versions.iter().all(|v| v.contains("v1")),
        "only the old version answered: {:?}",
        seen.versions
    );

    // Replica 1 is its old container again; 2 and 3 were never touched.
    let after = started_at(&p);
    for k in 1..=N {
        let name = replica(&p, k);
        assert_eq!(inspect(&name, "{{.Image}}"), v1, "{name}");
        assert_eq!(inspect(&name, "{{.State.Status}}"), "running", "{name}");
        assert!(
            text(port + (k as u16) - 1, "/api/version")
                .await
                .contains("v1"),
            "{name}"
        );
    }
    assert_ne!(
        after[0], before[0],
        "replica 1 was stopped and started again"
    );
    assert_eq!(after[1..], before[1..], "replicas 2 and 3 never stopped");
    let st = sv::run(state.path(), &p, &["status"]);
    assert!(
        st.stdout.contains("last update: ") && st.stdout.contains("stopped"),
        "status tells the stopped roll: {}",
        both(&st)
    );
    let (_, names) = docker(&["ps", "-a", "--format", "{{.Names}}"]);
    assert!(
        !names
            .lines()
            .any(|l| l.starts_with(&p.name) && l.ends_with("-pre-update")),
        "no old container left aside: {names}"
    );

    // An update killed after taking replica 2 out of rotation leaves it out and
    // unwatched in `webui up`; the next update hands it back first, then rolls.
    let socket = state.path().join("run").join(format!("{}.sock", p.name));
    let v = ask(&socket, "replica-updating 2").expect("the control socket answers");
    assert_eq!(v["ok"], true, "{v}");
    let stop = Arc::new(AtomicBool::new(false));
    let client = steady_client(&w, state.path(), stop.clone());
    let v2 = format!("{}:v2", im.repo);
    let f = update_in_background(state.path(), &p, &v2, &[])
        .await
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    let seen = client.await.unwrap();
    let all = both(&f);
    assert_eq!(f.status.code(), Some(0), "{all}");
    assert!(
        all.contains("replica 2 was left out of rotation by an interrupted update"),
        "{all}"
    );
    assert!(all.contains("updated all 3 replicas"), "{all}");
    assert!(
        seen.failed.is_empty(),
        "failed requests: {:#?}",
        seen.failed
    );
    for k in 1..=N {
        let v = ask(&socket, &format!("replica-state {k}")).expect("answer");
        assert_eq!(v["state"], "healthy", "replica {k}: {v}");
        assert_eq!(v["updating"], false, "replica {k}: {v}");
    }
    sv::stop(w);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_roll_finishes_the_replica_in_hand_and_stops_with_all_in_rotation() {
    let Some(im) = images() else { return };
    let p = Cleanup::new("roll-int");
    let state = webui::state_dir();
    let port = free_ports();
    let w = up(state.path(), &p, &im, port);
    let socket = state.path().join("run").join(format!("{}.sock", p.name));
    let v1 = image_id(&format!("{}:v1", im.repo));
    let before = started_at(&p);

    let stop = Arc::new(AtomicBool::new(false));
    let client = steady_client(&w, state.path(), stop.clone());
    let v2 = format!("{}:v2", im.repo);
    let mut cmd = webui::command(state.path());
    cmd.args(["--project", &p.name, "update", "--image", &v2]);
    let mut u = Webui::spawn(cmd);
    // SIGINT while replica 1 is being replaced.
    assert!(
        u.wait_for_output("replica 1/3", Duration::from_secs(120)),
        "{}",
        u.output_text()
    );
    u.signal("INT");
    let status = tokio::task::spawn_blocking(move || {
        let s = u.wait(Duration::from_secs(180));
        (s, u.output_text())
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    let seen = client.await.unwrap();
    let (status, out) = status;
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{out}");
    assert!(out.contains("was interrupted"), "{out}");
    assert!(
        out.contains("replica 1/3 (") && out.contains("back in rotation"),
        "replica 1 was finished: {out}"
    );
    assert!(
        !out.contains("replica 2/3"),
        "replica 2 was not started: {out}"
    );
    assert!(
        out.contains(&format!("update --image {v2}` continues")),
        "{out}"
    );
    assert!(
        seen.failed.is_empty(),
        "failed requests: {:#?}",
        seen.failed
    );

    let v2_id = image_id(&v2);
    assert_eq!(inspect(&replica(&p, 1), "{{.Image}}"), v2_id);
    let after = started_at(&p);
    for k in 2..=N {
        assert_eq!(inspect(&replica(&p, k), "{{.Image}}"), v1, "replica {k}");
    }
    assert_eq!(after[1..], before[1..], "replicas 2 and 3 never stopped");
    for k in 1..=N {
        let v = ask(&socket, &format!("replica-state {k}")).expect("answer");
        assert_eq!(v["state"], "healthy", "replica {k}: {v}");
        assert_eq!(v["updating"], false, "replica {k}: {v}");
    }
    sv::stop(w);
}
