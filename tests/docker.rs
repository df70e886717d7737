//! `webui up`, `status`, `logs`, `down` against the real Docker engine and the local
//! registry holding the stand-in images (`tests/infra/setup.sh`).
//!
//! Each test has its own project (`t-<name>-<pid>`, so names never clash between
//! parallel tests or runs), its own state dir and ports, and a [`Cleanup`] guard that
//! removes the project's containers, network and volumes when the test ends, passed
//! or not. Without dockerd or the test images the tests skip with a reason, except in
//! CI (`CI` set), where that is a failure.

mod support;
#[path = "supervision_support/mod.rs"]
mod sv;

use std::net::{IpAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::webui::{self, Finished, Webui};

use sv::{
    Cleanup, client, docker, docker_available, free_port, inspect, run, stop, up, wait_ready,
};

async fn get(c: &reqwest::Client, url: &str) -> (u16, String) {
    let r = c.get(url).send().await.expect("request through the proxy");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

async fn env_of(c: &reqwest::Client, w: &Webui, name: &str) -> String {
    let (status, body) = get(c, &w.https_url(&format!("/env?name={name}"))).await;
    assert_eq!(status, 200, "/env?name={name}: {body}");
    body
}

fn exit_code(f: &Finished) -> i32 {
    f.status.code().unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread")]
async fn up_from_nothing_pulls_creates_waits_and_serves_https() {
    let Some(img) = docker_available() else {
        return;
    };
    let p = Cleanup::new("fresh");
    let state = webui::state_dir();
    // A tag only this test uses, removed locally so that `up` really pulls it. It
    // answers 503 on /health for its first 5 s, like a real first start.
    let image = img.tag("slowstart");
    docker(&["rmi", &image]);
    let port = free_port();

    let w = up(state.path(), &p, &image, port, "127.0.0.1:0", &[]);
    let c = client(state.path());
    // Served at once: the starting page while pulling and starting.
    let r = c.get(w.https_url("/health")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .starts_with("upstream_"),
        "the starting page, not a proxy error: {body}"
    );

    wait_ready(&w);
    let out = w.output_text();
    for want in [
        format!("pulling {image}"),
        format!("pulled {image} ("),
        format!("created network {}", p.n("webui")),
        format!("created volume {}", p.n("open-webui")),
        format!("created {}", p.n("open-webui")),
        "generated WEBUI_SECRET_KEY".to_string(),
    ] {
        assert!(out.contains(&want), "`{want}` in:\n{out}");
    }
    let (status, body) = get(&c, &w.https_url("/health")).await;
    assert_eq!(
        (status, body.contains("\"status\":true")),
        (200, true),
        "{body}"
    );

    // Published on loopback only.
    let name = p.n("open-webui");
    let bindings: Value =
        serde_json::from_str(&inspect(&name, "{{json .HostConfig.PortBindings}}")).unwrap();
    assert_eq!(
        bindings,
        serde_json::json!({"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": port.to_string()}]})
    );
    let actual: Value =
        serde_json::from_str(&inspect(&name, "{{json .NetworkSettings.Ports}}")).unwrap();
    for b in actual["8080/tcp"].as_array().unwrap() {
        assert_eq!(b["HostIp"], "127.0.0.1", "{actual}");
    }
    assert_eq!(
        inspect(&name, "{{.HostConfig.RestartPolicy.Name}}"),
        "unless-stopped"
    );
    assert_eq!(
        inspect(&name, "{{index .Config.Labels \"webui.managed\"}}"),
        "true"
    );
    assert_eq!(
        inspect(&name, "{{index .Config.Labels \"webui.project\"}}"),
        p.name
    );
    assert_eq!(
        inspect(&name, "{{index .Config.Labels \"webui.role\"}}"),
        "open-webui"
    );
    assert_eq!(
        inspect(&name, "{{index .Config.Labels \"webui.spec-hash\"}}").len(),
        32
    );

    // The environment Open WebUI gets.
    let https_port = w.https[0].port();
    assert_eq!(
        env_of(&c, &w, "WEBUI_URL").await,
        format!("https://127.0.0.1:{https_port}")
    );
    assert_eq!(env_of(&c, &w, "WEBUI_SESSION_COOKIE_SECURE").await, "true");
    assert_eq!(env_of(&c, &w, "WEBUI_AUTH_COOKIE_SECURE").await, "true");
    assert_eq!(env_of(&c, &w, "ENABLE_WEBSOCKET_SUPPORT").await, "true");
    assert_eq!(env_of(&c, &w, "AIOHTTP_CLIENT_TIMEOUT").await, "300");
    let secret = env_of(&c, &w, "WEBUI_SECRET_KEY").await;
    assert_eq!(secret.len(), 64);
    let stored = std::fs::read_to_string(
        state
            .path()
            .join("projects")
            .join(&p.name)
            .join("secret_key"),
    )
    .unwrap();
    assert_eq!(stored.trim(), secret);

    let out = stop(w);
    assert!(out.contains("the containers keep running"), "{out}");
    assert_eq!(
        inspect(&name, "{{.State.Running}}"),
        "true",
        "exiting leaves the container running"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn host_mode_listens_on_loopback_only() {
    let Some(img) = docker_available() else {
        return;
    };
    let p = Cleanup::new("host");
    let state = webui::state_dir();
    let port = free_port();
    let w = up(
        state.path(),
        &p,
        &img.tag("v1"),
        port,
        "127.0.0.1:0",
        &["--network", "host"],
    );
    wait_ready(&w);
    let c = client(state.path());
    assert_eq!(env_of(&c, &w, "HOST").await, "127.0.0.1");
    assert_eq!(env_of(&c, &w, "PORT").await, port.to_string());
    let name = p.n("open-webui");
    assert_eq!(inspect(&name, "{{.HostConfig.NetworkMode}}"), "host");
    let bindings = inspect(&name, "{{json .HostConfig.PortBindings}}");
    assert!(
        bindings == "{}" || bindings == "null",
        "nothing published: {bindings}"
    );
    assert!(
        !w.output_text().contains("created network"),
        "no network in host mode"
    );

    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "answers on loopback"
    );
    let out = Command::new("hostname").arg("-I").output().ok();
    let other: Option<IpAddr> = out.and_then(|o| {
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .filter_map(|a| a.parse::<IpAddr>().ok())
            .find(|a| a.is_ipv4() && !a.is_loopback())
    });
    match other {
        Some(ip) => {
            let r = TcpStream::connect_timeout(&(ip, port).into(), Duration::from_secs(2));
            assert!(r.is_err(), "Open WebUI must not answer on {ip}:{port}");
        }
        None => eprintln!("no non-loopback IPv4 address here; skipping the outside check"),
    }
    stop(w);
}

#[tokio::test(flavor = "multi_thread")]
async fn second_up_keeps_the_container_and_a_change_recreates_it_with_data_and_secret() {
    let Some(img) = docker_available() else {
        return;
    };
    let p = Cleanup::new("again");
    let state = webui::state_dir();
    let port = free_port();
    // A fixed HTTPS port: WEBUI_URL (part of the spec) names it.
    let listen = format!("127.0.0.1:{}", free_port());
    let image = img.tag("v1");
    let name = p.n("open-webui");

    let w = up(state.path(), &p, &image, port, &listen, &[]);
    wait_ready(&w);
    let c = client(state.path());
    let r = c
        .post(w.https_url("/data/write?name=kept.txt"))
        .body("written before the recreate")
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success(),
        "{}",
        r.text().await.unwrap_or_default()
    );
    let secret = env_of(&c, &w, "WEBUI_SECRET_KEY").await;
    let id = inspect(&name, "{{.Id}}");
    stop(w);

    let w = up(state.path(), &p, &image, port, &listen, &[]);
    wait_ready(&w);
    assert_eq!(
        inspect(&name, "{{.Id}}"),
        id,
        "same settings: nothing recreated"
    );
    assert!(
        w.output_text().contains(&format!("{name} is up to date")),
        "{}",
        w.output_text()
    );
    stop(w);

    let w = up(
        state.path(),
        &p,
        &image,
        port,
        &listen,
        &["--env", "FOO=bar"],
    );
    wait_ready(&w);
    let out = w.output_text();
    assert!(out.contains(&format!("recreated {name}")), "{out}");
    assert!(
        out.contains("env FOO: (unset) -> bar"),
        "the change is named: {out}"
    );
    assert!(!out.contains(&secret), "the secret is never printed: {out}");
    assert_ne!(inspect(&name, "{{.Id}}"), id);
    assert_eq!(env_of(&c, &w, "FOO").await, "bar");
    assert_eq!(
        env_of(&c, &w, "WEBUI_SECRET_KEY").await,
        secret,
        "same secret key"
    );
    let (status, body) = get(&c, &w.https_url("/data/read?name=kept.txt")).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "written before the recreate")
    );
    stop(w);
}

#[tokio::test(flavor = "multi_thread")]
async fn data_survives_down_and_purge_needs_yes() {
    let Some(img) = docker_available() else {
        return;
    };
    let p = Cleanup::new("down");
    let state = webui::state_dir();
    let port = free_port();
    let listen = format!("127.0.0.1:{}", free_port());
    let image = img.tag("v1");
    let volume = p.n("open-webui");

    let w = up(state.path(), &p, &image, port, &listen, &[]);
    wait_ready(&w);
    let c = client(state.path());
    let r = c
        .post(w.https_url("/data/write?name=d.txt"))
        .body("survives down")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    stop(w);

    let f = run(state.path(), &p, &["down"]);
    assert_eq!(exit_code(&f), 0, "{}{}", f.stdout, f.stderr);
    assert!(
        f.stdout
            .contains(&format!("removed container {}", p.n("open-webui"))),
        "{}",
        f.stdout
    );
    assert!(
        f.stdout.contains(&format!("kept the volumes {volume}")),
        "{}",
        f.stdout
    );
    assert!(
        !docker(&["container", "inspect", &p.n("open-webui")]).0,
        "container removed"
    );
    assert!(
        !docker(&["network", "inspect", &p.n("webui")]).0,
        "network removed"
    );
    assert!(docker(&["volume", "inspect", &volume]).0, "volume kept");

    let w = up(state.path(), &p, &image, port, &listen, &[]);
    wait_ready(&w);
    let (status, body) = get(&c, &w.https_url("/data/read?name=d.txt")).await;
    assert_eq!((status, body.as_str()), (200, "survives down"));
    stop(w);

    let f = run(state.path(), &p, &["down", "--purge-data"]);
    assert_eq!(exit_code(&f), 1, "{}{}", f.stdout, f.stderr);
    assert!(
        f.stderr.contains(&volume) && f.stderr.contains("--yes"),
        "{}",
        f.stderr
    );
    assert_eq!(
        inspect(&p.n("open-webui"), "{{.State.Running}}"),
        "true",
        "refused: nothing touched"
    );
    assert!(docker(&["volume", "inspect", &volume]).0);

    let f = run(state.path(), &p, &["down", "--purge-data", "--yes"]);
    assert_eq!(exit_code(&f), 0, "{}{}", f.stdout, f.stderr);
    assert!(
        f.stdout.contains(&format!("deleted volume {volume}")),
        "{}",
        f.stdout
    );
    assert!(!docker(&["volume", "inspect", &volume]).0, "volume deleted");
    assert!(
        !state.path().join("projects").join(&p.name).exists(),
        "secret deleted"
    );
    assert!(p.leftovers().is_empty(), "{:?}", p.leftovers());
}

#[tokio::test(flavor = "multi_thread")]
async fn bundled_ollama_is_reachable_from_open_webui_and_never_published() {
    let Some(img) = docker_available() else {
        return;
    };
    let p = Cleanup::new("ollama");
    let state = webui::state_dir();
    let port = free_port();
    let w = up(
        state.path(),
        &p,
        &img.tag("v1"),
        port,
        "127.0.0.1:0",
        &["--ollama", "--ollama-image", &img.ollama],
    );
    wait_ready(&w);
    let c = client(state.path());
    assert_eq!(
        env_of(&c, &w, "OLLAMA_BASE_URL").await,
        "http://ollama:11434"
    );
    let (status, body) = get(
        &c,
        &w.https_url("/fetch?url=http://ollama:11434/api/version"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], 200, "{v}");
    assert!(v["body"].as_str().unwrap().contains("standin"), "{v}");

    let ollama = p.n("ollama");
    let bindings = inspect(&ollama, "{{json .HostConfig.PortBindings}}");
    assert!(
        bindings == "{}" || bindings == "null",
        "nothing published: {bindings}"
    );
    let ports: Value =
        serde_json::from_str(&inspect(&ollama, "{{json .NetworkSettings.Ports}}")).unwrap();
    for (port, bindings) in ports.as_object().cloned().unwrap_or_default() {
        assert!(bindings.is_null(), "{port} is published: {bindings}");
    }
    assert_eq!(
        inspect(&ollama, "{{index .Config.Labels \"webui.role\"}}"),
        "ollama"
    );
    let mounts = inspect(
        &ollama,
        "{{range .Mounts}}{{.Name}}:{{.Destination}} {{end}}",
    );
    assert!(
        mounts.contains(&format!("{ollama}:/root/.ollama")),
        "{mounts}"
    );

    let f = run(state.path(), &p, &["status", "--json"]);
    assert_eq!(exit_code(&f), 0, "{}{}", f.stdout, f.stderr);
    let s: Value = serde_json::from_str(&f.stdout).unwrap();
    let services: Vec<&str> = s["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["service"].as_str().unwrap())
        .collect();
    assert_eq!(services, vec!["ollama", "open-webui"]);

    // Several services: each line says whose it is.
    let f = run(state.path(), &p, &["logs", "--tail", "1"]);
    assert_eq!(exit_code(&f), 0, "{}", f.stderr);
    assert!(
        f.stdout.lines().any(|l| l.starts_with("ollama     | ")),
        "{}",
        f.stdout
    );
    assert!(
        f.stdout.lines().any(|l| l.starts_with("open-webui | ")),
        "{}",
        f.stdout
    );
    stop(w);
}

#[tokio::test(flavor = "multi_thread")]
async fn status_logs_and_a_stopped_container() {
    let Some(img) = docker_available() else {
        return;
    };
    let p = Cleanup::new("status");
    let state = webui::state_dir();
    let port = free_port();
    let w = up(state.path(), &p, &img.tag("v1"), port, "127.0.0.1:0", &[]);
    wait_ready(&w);
    let c = client(state.path());

    let f = run(state.path(), &p, &["status", "--json"]);
    assert_eq!(exit_code(&f), 0, "{}{}", f.stdout, f.stderr);
    let s: Value = serde_json::from_str(&f.stdout).unwrap();
    assert_eq!(s["project"], p.name.as_str());
    assert_eq!(s["healthy"], true);
    let ow = &s["containers"][0];
    assert_eq!(
        (
            ow["service"].as_str(),
            ow["state"].as_str(),
            ow["health"].as_str()
        ),
        (Some("open-webui"), Some("running"), Some("healthy"))
    );
    assert!(ow["digest"].as_str().unwrap().contains("@sha256:"), "{ow}");
    assert_eq!(ow["ports"][0]["host_ip"], "127.0.0.1");
    assert_eq!(ow["ports"][0]["host_port"], port);
    assert_eq!(s["proxy"]["https"][0], w.https[0].to_string());
    assert!(!f.stdout.contains("WEBUI_SECRET_KEY"));

    // logs --tail 5 shows the stand-in's request lines.
    get(&c, &w.https_url("/echo?marker=tail-check")).await;
    let f = run(state.path(), &p, &["logs", "--tail", "5"]);
    assert_eq!(exit_code(&f), 0, "{}", f.stderr);
    assert!(
        f.stdout.contains("GET /echo?marker=tail-check 200"),
        "{}",
        f.stdout
    );
    assert!(f.stdout.lines().count() <= 5, "{}", f.stdout);

    // logs -f streams a new line as it is written.
    let mut follow = Webui::spawn(logs_cmd(
        state.path(),
        &p,
        &["open-webui", "-f", "--tail", "0", "--timestamps"],
    ));
    let lines = follow.output.clone();
    let start = Instant::now();
    let mut seen = false;
    while start.elapsed() < Duration::from_secs(20) && !seen {
        get(&c, &w.https_url("/echo?marker=follow-check")).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        seen = lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("/echo?marker=follow-check"));
    }
    assert!(seen, "logs -f showed: {:?}", lines.lock().unwrap());

    // A restart does not end it: the container's next start is shown, and nothing
    // shown before it is shown again.
    let marked = |lines: &[String]| {
        lines
            .iter()
            .filter(|l| l.contains("/echo?marker=follow-check"))
            .count()
    };
    let starting = |lines: &[String]| {
        lines
            .iter()
            .filter(|l| l.contains("standin openwebui v1 listening on"))
            .count()
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = marked(&lines.lock().unwrap());
    assert!(docker(&["restart", "-t", "2", &p.n("open-webui")]).0);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) && starting(&lines.lock().unwrap()) == 0 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20)
        && !lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("marker=after-restart"))
    {
        let _ = c
            .get(w.https_url("/echo?marker=after-restart"))
            .send()
            .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    {
        let lines = lines.lock().unwrap();
        assert_eq!(starting(&lines), 1, "logs -f after a restart: {lines:?}");
        assert_eq!(marked(&lines), before, "lines shown again: {lines:?}");
        // Each line carries Docker's time (ns): none may be there twice.
        let mut seen = std::collections::HashSet::new();
        for l in lines.iter() {
            assert!(seen.insert(l), "{l:?} shown twice: {lines:?}");
        }
        assert!(
            lines.iter().any(|l| l.contains("marker=after-restart")),
            "logs -f after a restart: {lines:?}"
        );
    }
    assert!(
        follow.wait(Duration::from_millis(200)).is_none(),
        "logs -f ended with the restart"
    );
    drop(follow);

    // A stopped container shows in status, with a non-zero exit.
    assert!(docker(&["stop", "-t", "2", &p.n("open-webui")]).0);
    let f = run(state.path(), &p, &["status", "--json"]);
    assert_eq!(exit_code(&f), 3, "{}{}", f.stdout, f.stderr);
    let s: Value = serde_json::from_str(&f.stdout).unwrap();
    assert_eq!(s["healthy"], false);
    assert_eq!(s["containers"][0]["running"], false);
    assert_eq!(s["containers"][0]["state"], "exited");
    assert_eq!(s["containers"][0]["health"], "stopped");
    let f = run(state.path(), &p, &["status"]);
    assert_eq!(exit_code(&f), 3);
    assert!(
        f.stdout.contains("exited") && f.stdout.contains("NOT healthy"),
        "{}",
        f.stdout
    );
    stop(w);

    // `webui down` ends a `logs -f` (which waits through a stopped container).
    let mut follow = Webui::spawn(logs_cmd(state.path(), &p, &["-f", "--tail", "1"]));
    let start = Instant::now();
    while follow.output_text().is_empty() && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !follow.output_text().is_empty(),
        "logs -f printed the stopped container's last line"
    );
    let f = run(state.path(), &p, &["down"]);
    assert_eq!(exit_code(&f), 0, "{}{}", f.stdout, f.stderr);
    let status = follow
        .wait(Duration::from_secs(30))
        .expect("logs -f ends after down");
    let out = follow.output_text();
    assert_eq!(status.code(), Some(0), "{out}");
    assert!(out.contains("nothing left to follow"), "{out}");
}

/// `webui --project P logs ARGS`, for [`Webui::spawn`] (lines collected as they come).
fn logs_cmd(state: &Path, p: &Cleanup, args: &[&str]) -> Command {
    let mut cmd = webui::command(state);
    cmd.args(["--project", &p.name, "logs"]).args(args);
    cmd
}

/// Runs `webui up` expecting it to fail with exit 1; returns its stderr.
fn refused(state: &Path, p: &Cleanup, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut all = vec![
        "--project",
        p.name.as_str(),
        "up",
        "--listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
    ];
    all.extend_from_slice(args);
    let mut cmd = webui::command(state);
    cmd.args(&all);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run webui");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "webui {all:?} must exit 1:\n{}{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_inputs_exit_1_and_create_nothing() {
    let Some(img) = docker_available() else {
        return;
    };
    let p = Cleanup::new("bad");
    let state = webui::state_dir();
    let v1 = img.tag("v1");
    let port = free_port().to_string();
    let base = ["--image", v1.as_str(), "--port", port.as_str()];

    // Engine down.
    let e = refused(
        state.path(),
        &p,
        &base,
        &[("DOCKER_HOST", "unix:///nonexistent.sock")],
    );
    assert!(
        e.contains("not running") && e.contains("systemctl start docker"),
        "{e}"
    );
    assert!(p.leftovers().is_empty(), "{:?}", p.leftovers());

    // Image not in the registry.
    let missing = img.tag("does-not-exist");
    let e = refused(
        state.path(),
        &p,
        &["--image", &missing, "--port", &port],
        &[],
    );
    assert!(e.contains(&missing) && e.contains("not found"), "{e}");
    assert!(p.leftovers().is_empty(), "{:?}", p.leftovers());

    // HTTPS port already in use.
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let held_addr = held.local_addr().unwrap().to_string();
    let out = webui::command(state.path())
        .args([
            "--project",
            &p.name,
            "up",
            "--listen",
            &held_addr,
            "--http-listen",
            "127.0.0.1:0",
        ])
        .args(base)
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(
        e.contains(&held_addr) && e.contains("already in use"),
        "{e}"
    );
    // Open WebUI's loopback port already in use.
    let held_port = held.local_addr().unwrap().port().to_string();
    let e = refused(
        state.path(),
        &p,
        &["--image", &v1, "--port", &held_port],
        &[],
    );
    assert!(
        e.contains(&format!("port {held_port} on 127.0.0.1 is already in use"))
            && e.contains("--port"),
        "{e}"
    );
    drop(held);
    assert!(p.leftovers().is_empty(), "{:?}", p.leftovers());

    // --gpu all without a GPU runtime.
    let e = refused(
        state.path(),
        &p,
        &[&base[..], &["--gpu", "all"]].concat(),
        &[],
    );
    assert!(
        e.contains("[[gpu]]") && e.contains("nvidia-container-toolkit"),
        "{e}"
    );
    assert!(p.leftovers().is_empty(), "{:?}", p.leftovers());

    // --network with an unknown value: refused by the argument parser.
    let out = webui::command(state.path())
        .args(["--project", &p.name, "up", "--network", "overlay"])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        e.contains("overlay") && e.contains("bridge") && e.contains("host"),
        "{e}"
    );
    assert!(p.leftovers().is_empty(), "{:?}", p.leftovers());

    // Socket not permitted: an unprivileged user (needs root to switch to nobody).
    let am_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let setpriv = Path::new("/usr/bin/setpriv").exists();
    if am_root && setpriv {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).unwrap();
        let out = Command::new("/usr/bin/setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                webui::bin(),
            ])
            .args([
                "--state-dir",
                dir.path().to_str().unwrap(),
                "--project",
                &p.name,
                "up",
                "--listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
            ])
            .args(base)
            .env_remove("DOCKER_HOST")
            .output()
            .unwrap();
        let e = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{e}");
        assert!(
            e.contains("permission denied") && e.contains("docker group"),
            "{e}"
        );
        assert!(p.leftovers().is_empty(), "{:?}", p.leftovers());
    } else {
        eprintln!("not root or no setpriv: skipping the socket-permission case");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unmanaged_container_is_refused_then_adopted_with_its_data_and_secret() {
    let Some(img) = docker_available() else {
        return;
    };
    let p = Cleanup::new("adopt");
    let state = webui::state_dir();
    let v1 = img.tag("v1");
    let name = p.n("open-webui");
    let volume = p.n("open-webui");
    let manual_port = free_port();
    // The Open WebUI docs' install, by hand.
    let (ok, id) = docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "-p",
        &format!("127.0.0.1:{manual_port}:8080"),
        "-v",
        &format!("{volume}:/app/backend/data"),
        "-e",
        "WEBUI_SECRET_KEY=a-key-set-by-hand-0123456789",
        "--restart",
        "always",
        &v1,
    ]);
    assert!(ok, "docker run");
    // Its data, written through its own port.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let plain = reqwest::Client::new();
    let start = Instant::now();
    loop {
        let r = plain
            .post(format!(
                "http://127.0.0.1:{manual_port}/data/write?name=manual.txt"
            ))
            .body("from the manual install")
            .send()
            .await;
        if r.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "manual container never answered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let port = free_port();
    let port_s = port.to_string();
    let e = refused(state.path(), &p, &["--image", &v1, "--port", &port_s], &[]);
    assert!(
        e.contains(&format!("`{name}`")) && e.contains("--adopt"),
        "{e}"
    );
    assert_eq!(inspect(&name, "{{.Id}}"), id, "untouched");
    assert_eq!(inspect(&name, "{{.State.Running}}"), "true");
    assert!(
        !docker(&["network", "inspect", &p.n("webui")]).0,
        "nothing created"
    );

    let w = up(state.path(), &p, &v1, port, "127.0.0.1:0", &["--adopt"]);
    wait_ready(&w);
    let out = w.output_text();
    let set_aside = format!("{name}-pre-webui");
    assert!(
        out.contains(&format!("took over {name}")) && out.contains(&set_aside),
        "{out}"
    );
    let c = client(state.path());
    let (status, body) = get(&c, &w.https_url("/data/read?name=manual.txt")).await;
    assert_eq!((status, body.as_str()), (200, "from the manual install"));
    assert_eq!(
        env_of(&c, &w, "WEBUI_SECRET_KEY").await,
        "a-key-set-by-hand-0123456789"
    );
    assert_eq!(
        inspect(&name, "{{index .Config.Labels \"webui.managed\"}}"),
        "true"
    );
    assert_eq!(inspect(&set_aside, "{{.State.Running}}"), "false");
    assert_eq!(
        inspect(&set_aside, "{{.HostConfig.RestartPolicy.Name}}"),
        "no"
    );
    stop(w);

    // The adopted volume is remembered: the next `up` needs no --adopt.
    let w = up(state.path(), &p, &v1, port, "127.0.0.1:0", &[]);
    wait_ready(&w);
    stop(w);
}

#[tokio::test(flavor = "multi_thread")]
async fn never_healthy_fails_after_the_health_timeout_and_leaves_it_running() {
    let Some(img) = docker_available() else {
        return;
    };
    let p = Cleanup::new("broken");
    let state = webui::state_dir();
    let port = free_port().to_string();
    // This image answers 503 on /health forever.
    let e = refused(
        state.path(),
        &p,
        &[
            "--image",
            &img.tag("broken"),
            "--port",
            &port,
            "--health-timeout",
            "3s",
        ],
        &[],
    );
    assert!(e.contains("did not become healthy within 3s"), "{e}");
    assert!(
        e.contains("GET /health 503"),
        "its last log lines are shown: {e}"
    );
    assert!(e.contains("--health-timeout"), "{e}");
    assert_eq!(
        inspect(&p.n("open-webui"), "{{.State.Running}}"),
        "true",
        "a slow start is never killed"
    );
}
