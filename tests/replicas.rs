//! `webui up --replicas N` against the real Docker engine: the stand-in Open WebUI
//! (it answers `GET /env?name=HOSTNAME` with its container's hostname, so a test sees
//! which replica answered) and the Postgres and Redis test images of
//! `tests/infra/setup.sh` (`WEBUI_TEST_POSTGRES_IMAGE`, `WEBUI_TEST_REDIS_IMAGE`).
//!
//! Each test has its own project, state dir and ports and a `Cleanup` guard; without
//! dockerd or the images the tests skip with a reason, except in CI.

mod support;
#[path = "supervision_support/mod.rs"]
mod sv;

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::webui;

use sv::{Cleanup, client, docker, docker_available, inspect, run, stop, up, wait_ready};

struct DbImages {
    postgres: String,
    redis: String,
}

fn db_images() -> Option<DbImages> {
    match (
        std::env::var("WEBUI_TEST_POSTGRES_IMAGE"),
        std::env::var("WEBUI_TEST_REDIS_IMAGE"),
    ) {
        (Ok(p), Ok(r)) if !p.is_empty() && !r.is_empty() => Some(DbImages {
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

/// A loopback port with `n - 1` free ports after it (replica k uses port + k - 1).
fn free_ports(n: u16) -> u16 {
    loop {
        let base = sv::free_port();
        if base > 65000 {
            continue;
        }
        let all_free = (1..n).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if all_free {
            return base;
        }
    }
}

/// The container's environment as a map (docker inspect).
fn env_of(name: &str) -> BTreeMap<String, String> {
    let list: Vec<String> = serde_json::from_str(&inspect(name, "{{json .Config.Env}}")).unwrap();
    list.into_iter()
        .filter_map(|e| {
            e.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

fn hostname_of(name: &str) -> String {
    inspect(name, "{{.Config.Hostname}}")
}

fn volumes(p: &Cleanup) -> BTreeSet<String> {
    docker(&["volume", "ls", "--format", "{{.Name}}"])
        .1
        .lines()
        .filter(|l| l.starts_with(&format!("{}-", p.name)))
        .map(str::to_string)
        .collect()
}

fn containers(p: &Cleanup) -> BTreeSet<String> {
    docker(&["ps", "-a", "--format", "{{.Names}}"])
        .1
        .lines()
        .filter(|l| l.starts_with(&format!("{}-", p.name)))
        .map(str::to_string)
        .collect()
}

fn status_json(state: &Path, p: &Cleanup) -> Value {
    let f = run(state, p, &["status", "--json"]);
    serde_json::from_str(&f.stdout)
        .unwrap_or_else(|e| panic!("status --json: {e}\n{}{}", f.stdout, f.stderr))
}

/// Waits until `status --json` says `ok` of the report, up to `limit`.
fn wait_status(state: &Path, p: &Cleanup, limit: Duration, ok: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let v = status_json(state, p);
        if ok(&v) {
            return v;
        }
        assert!(start.elapsed() < limit, "status never got there: {v:#}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `webui up --replicas n` with the test images of Postgres and Redis.
fn up_replicas(
    state: &Path,
    p: &Cleanup,
    image: &str,
    port: u16,
    listen: &str,
    n: u32,
    db: &DbImages,
) -> webui::Webui {
    let n = n.to_string();
    let args = [
        "--replicas",
        n.as_str(),
        "--postgres-image",
        &db.postgres,
        "--redis-image",
        &db.redis,
    ];
    up(state, p, image, port, listen, &args)
}

fn replicas_healthy(v: &Value, n: usize) -> bool {
    let r = v["supervisor"]["replicas"].as_array();
    r.is_some_and(|r| r.len() == n && r.iter().all(|x| x["state"] == "healthy"))
}

#[tokio::test(flavor = "multi_thread")]
async fn three_replicas_share_postgres_redis_and_survive_a_killed_replica() {
    let Some(img) = docker_available() else {
        return;
    };
    let Some(db) = db_images() else {
        return;
    };
    let p = Cleanup::new("h2-rep3");
    let state = webui::state_dir();
    let image = img.tag("v1");
    let port = free_ports(3);
    // One HTTPS port for every run: it is part of WEBUI_URL, a change would recreate.
    let listen = format!("127.0.0.1:{}", sv::free_port());
    let w = up_replicas(state.path(), &p, &image, port, &listen, 3, &db);
    wait_ready(&w);
    let out = w.output_text();
    let names = [p.n("open-webui"), p.n("open-webui-2"), p.n("open-webui-3")];
    for want in [
        format!("created {} ({})", p.n("postgres"), db.postgres),
        format!("created {} ({})", p.n("redis"), db.redis),
        format!("created {} ({image})", names[0]),
        format!("created {} ({image})", names[2]),
    ] {
        assert!(out.contains(&want), "`{want}` in:\n{out}");
    }

    // Postgres and Redis: on the project's network only, their data in volumes.
    for (svc, target) in [("postgres", "/var/lib/postgresql/data"), ("redis", "/data")] {
        let name = p.n(svc);
        assert_eq!(inspect(&name, "{{.State.Running}}"), "true", "{name}");
        let published = inspect(&name, "{{json .HostConfig.PortBindings}}");
        assert!(
            published == "null" || published == "{}",
            "{name}: {published}"
        );
        assert_eq!(inspect(&name, "{{.HostConfig.NetworkMode}}"), p.n("webui"));
        let mounts = inspect(&name, "{{range .Mounts}}{{.Name}}:{{.Destination}} {{end}}");
        assert_eq!(mounts.trim(), format!("{name}:{target}"));
    }
    let password = std::fs::read_to_string(
        state
            .path()
            .join("projects")
            .join(&p.name)
            .join("postgres_password"),
    )
    .unwrap();
    let password = password.trim();
    let pg_env = env_of(&p.n("postgres"));
    assert_eq!(pg_env["POSTGRES_PASSWORD"], password);
    assert_eq!(pg_env["POSTGRES_USER"], "openwebui");

    // Every replica: the same secret, database, Redis and volume; its own port.
    let secret = env_of(&names[0])["WEBUI_SECRET_KEY"].clone();
    assert_eq!(secret.len(), 64);
    for (k, name) in names.iter().enumerate() {
        let env = env_of(name);
        assert_eq!(env["WEBUI_SECRET_KEY"], secret, "{name}");
        assert_eq!(
            env["DATABASE_URL"],
            format!("postgresql+psycopg://openwebui:{password}@postgres:5432/openwebui"),
            "{name}"
        );
        // Only replica 1 runs Open WebUI's migrations.
        assert_eq!(
            env.get("ENABLE_DB_MIGRATIONS").map(String::as_str),
            (k > 0).then_some("false"),
            "{name}"
        );
        assert_eq!(env["REDIS_URL"], "redis://redis:6379/0", "{name}");
        assert_eq!(env["WEBSOCKET_MANAGER"], "redis", "{name}");
        assert_eq!(env["WEBSOCKET_REDIS_URL"], "redis://redis:6379/0", "{name}");
        let bindings: Value =
            serde_json::from_str(&inspect(name, "{{json .HostConfig.PortBindings}}")).unwrap();
        assert_eq!(
            bindings,
            serde_json::json!({"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": (port + k as u16).to_string()}]}),
            "{name}"
        );
        let mounts = inspect(name, "{{range .Mounts}}{{.Name}} {{end}}");
        assert_eq!(
            mounts.trim(),
            p.n("open-webui"),
            "{name}: the shared volume"
        );
        assert_eq!(
            inspect(name, "{{index .Config.Labels \"webui.replica\"}}"),
            (k + 1).to_string()
        );
    }

    // Requests through the proxy reach all three.
    let c = client(state.path());
    let hosts: BTreeMap<String, &String> = names.iter().map(|n| (hostname_of(n), n)).collect();
    let mut seen = BTreeSet::new();
    for _ in 0..60 {
        let r = c
            .get(w.https_url("/env?name=HOSTNAME"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let h = r.text().await.unwrap();
        let name = hosts.get(&h).unwrap_or_else(|| panic!("unknown host {h}"));
        seen.insert(name.to_string());
    }
    assert_eq!(seen.len(), 3, "requests reached only {seen:?}");

    // status lists the three replicas, Postgres and Redis.
    let v = wait_status(state.path(), &p, Duration::from_secs(30), |v| {
        replicas_healthy(v, 3)
    });
    let listed: Vec<(String, Value)> = v["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["service"].as_str().unwrap().to_string(),
                c["replica"].clone(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![
            ("open-webui".to_string(), Value::from(1)),
            ("open-webui".to_string(), Value::from(2)),
            ("open-webui".to_string(), Value::from(3)),
            ("postgres".to_string(), Value::Null),
            ("redis".to_string(), Value::Null),
        ],
        "{v:#}"
    );
    assert_eq!(v["healthy"], true, "{v:#}");
    let text = run(state.path(), &p, &["status"]).stdout;
    for want in [
        "open-webui replica 2".to_string(),
        format!("postgres ({})", p.n("postgres")),
        format!("replica 3 ({}", names[2]),
    ] {
        assert!(text.contains(&want), "`{want}` in:\n{text}");
    }

    // logs: one replica alone, or every container with its service in front.
    let f = run(state.path(), &p, &["logs", "open-webui", "--replica", "3"]);
    assert!(f.status.success(), "{}", f.stderr);
    assert!(f.stdout.contains("standin openwebui"), "{}", f.stdout);
    assert!(
        !f.stdout.contains(" | "),
        "one container, no prefix: {}",
        f.stdout
    );
    let f = run(state.path(), &p, &["logs"]);
    assert!(f.status.success(), "{}", f.stderr);
    for prefix in ["open-webui   | ", "open-webui-2 | ", "open-webui-3 | "] {
        assert!(f.stdout.contains(prefix), "`{prefix}` in:\n{}", f.stdout);
    }
    let f = run(state.path(), &p, &["logs", "open-webui", "--replica", "4"]);
    assert_eq!(f.status.code(), Some(1), "{}", f.stderr);
    assert!(f.stderr.contains("no Open WebUI replica 4"), "{}", f.stderr);

    // Killing a replica while a client keeps asking: no request fails, and the
    // replica comes back.
    let stop_flag = Arc::new(AtomicBool::new(false));
    let client_task = {
        let c = c.clone();
        let url = w.https_url("/env?name=HOSTNAME");
        let stop_flag = stop_flag.clone();
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop_flag.load(Ordering::Relaxed) {
                match c.get(&url).send().await {
                    Ok(r) if r.status().is_success() => ok += 1,
                    Ok(r) => failed.push(r.status().as_u16().to_string()),
                    Err(e) => failed.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (ok, failed)
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let killed_id = inspect(&names[1], "{{.Id}}");
    assert!(docker(&["kill", &names[1]]).0);
    let back = Instant::now();
    loop {
        if inspect(&names[1], "{{.State.Running}}") == "true" {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(60),
            "the killed replica was not restarted:\n{}",
            w.output_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        inspect(&names[1], "{{.Id}}"),
        killed_id,
        "restarted, not replaced"
    );
    let v = wait_status(state.path(), &p, Duration::from_secs(60), |v| {
        replicas_healthy(v, 3)
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_flag.store(true, Ordering::Relaxed);
    let (ok, failed) = client_task.await.unwrap();
    assert!(ok > 50, "the client got {ok} answers");
    assert!(
        failed.is_empty(),
        "{} of {} requests failed while a replica was killed: {failed:?}",
        failed.len(),
        ok as usize + failed.len()
    );
    let restarted = v["supervisor"]["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["container"] == names[1].as_str())
        .cloned()
        .unwrap_or_default();
    assert!(restarted["exits"].as_u64() >= Some(1), "{v:#}");

    // Postgres and Redis are supervised too: killed, they are started again.
    for svc in ["postgres", "redis"] {
        let name = p.n(svc);
        assert!(docker(&["kill", &name]).0);
        let t = Instant::now();
        while inspect(&name, "{{.State.Running}}") != "true" {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "{name} was not restarted:\n{}",
                w.output_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // The supervisor says so once its start call has returned, which can be a moment
    // after the container shows as running.
    for svc in ["postgres", "redis"] {
        let line = format!("restarted {}", p.n(svc));
        let t = Instant::now();
        while !w.output_text().contains(&line) {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "no `{line}`:\n{}",
                w.output_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // A second `up` with the same settings keeps every container as it is.
    stop(w);
    let ids: Vec<String> = names.iter().map(|n| inspect(n, "{{.Id}}")).collect();
    let w = up_replicas(state.path(), &p, &image, port, &listen, 3, &db);
    wait_ready(&w);
    let out = w.output_text();
    for name in names.iter().chain([&p.n("postgres"), &p.n("redis")]) {
        assert!(
            out.contains(&format!("{name} is up to date")),
            "{name} in:\n{out}"
        );
    }
    assert!(!out.contains("recreated"), "{out}");
    let again: Vec<String> = names.iter().map(|n| inspect(n, "{{.Id}}")).collect();
    assert_eq!(ids, again);

    // Back to one replica: the others and Redis go, Postgres (the data) stays, and
    // replica 1 stays on it; no volume is deleted.
    stop(w);
    let w = up(
        state.path(),
        &p,
        &image,
        port,
        &listen,
        &["--postgres-image", &db.postgres, "--redis-image", &db.redis],
    );
    wait_ready(&w);
    let out = w.output_text();
    for gone in [&names[1], &names[2], &p.n("redis")] {
        assert!(
            out.contains(&format!("removed {gone} (no longer wanted")),
            "{gone} in:\n{out}"
        );
    }
    assert_eq!(
        containers(&p),
        BTreeSet::from([names[0].clone(), p.n("postgres")])
    );
    let env = env_of(&names[0]);
    assert!(env["DATABASE_URL"].contains("@postgres:5432/"), "{env:?}");
    assert!(!env.contains_key("REDIS_URL"), "{env:?}");
    assert_eq!(env["WEBUI_SECRET_KEY"], secret);
    let want_volumes = BTreeSet::from([p.n("open-webui"), p.n("postgres"), p.n("redis")]);
    assert_eq!(volumes(&p), want_volumes);
    stop(w);

    // down removes every container and keeps every volume.
    let f = run(state.path(), &p, &["down"]);
    assert!(f.status.success(), "{}{}", f.stdout, f.stderr);
    assert!(containers(&p).is_empty(), "{:?}", containers(&p));
    assert_eq!(volumes(&p), want_volumes);
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_refuse_a_single_install_with_accounts_in_sqlite() {
    let Some(img) = docker_available() else {
        return;
    };
    let Some(db) = db_images() else {
        return;
    };
    let p = Cleanup::new("h2-populated");
    let state = webui::state_dir();
    let image = img.tag("v1");
    let port = free_ports(3);
    // A single install; `up` creates its admin account.
    let w = up(state.path(), &p, &image, port, "127.0.0.1:0", &[]);
    wait_ready(&w);
    stop(w);
    let id = inspect(&p.n("open-webui"), "{{.Id}}");

    let mut w = up_replicas(state.path(), &p, &image, port, "127.0.0.1:0", 3, &db);
    let status = w
        .wait(Duration::from_secs(120))
        .expect("up --replicas exits");
    let out = w.output_text();
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(out.contains("has accounts in its SQLite database"), "{out}");
    assert!(out.contains("webui migrate-db --to postgres"), "{out}");
    // Nothing changed: the same container, running, no Postgres, Redis or replicas.
    assert_eq!(inspect(&p.n("open-webui"), "{{.Id}}"), id);
    assert_eq!(inspect(&p.n("open-webui"), "{{.State.Running}}"), "true");
    assert_eq!(containers(&p), BTreeSet::from([p.n("open-webui")]));
    assert!(
        !state
            .path()
            .join("projects")
            .join(&p.name)
            .join("postgres_password")
            .exists()
    );
}

#[test]
fn bad_replica_settings_exit_1_before_anything_starts() {
    let state = webui::state_dir();
    for (args, want) in [
        (vec!["--replicas", "0"], "--replicas 0 is out of range"),
        (vec!["--replicas", "17"], "--replicas 17 is out of range"),
        (
            vec!["--replicas", "2", "--network", "host"],
            "--replicas 2 needs --network bridge",
        ),
        (
            vec!["--replicas", "3", "--port", "65534"],
            "--port 65534 leaves no room for 3 replicas",
        ),
        (
            vec!["--replicas", "2", "--postgres-image", "Bad Image"],
            "--postgres-image",
        ),
        (
            vec!["--replicas", "2", "--behind-proxy"],
            "--replicas 2 needs webui's own proxy",
        ),
    ] {
        let mut all = vec!["--project", "t-h2-bad", "up"];
        // Behind a proxy there is no listener of webui's own to move off 443/80.
        if !args.contains(&"--behind-proxy") {
            all.extend(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"]);
        }
        all.extend_from_slice(&args);
        let f = webui::run(state.path(), &all, Duration::from_secs(30));
        assert_eq!(
            f.status.code(),
            Some(1),
            "{args:?}: {}{}",
            f.stdout,
            f.stderr
        );
        assert!(
            f.stderr.contains(want),
            "{args:?}: `{want}` in {}",
            f.stderr
        );
    }
    // Nothing was written for the project.
    assert!(!state.path().join("projects").join("t-h2-bad").exists());
}
