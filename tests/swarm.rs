//! `webui up --swarm` against the real dockerd as a one-node swarm: the services
//! converge, the site serves through the proxy service (requests spread over the
//! Open WebUI tasks), `status` lists the tasks per node, a second `up` converges
//! (unchanged, then a changed replica count), `down` removes the services and keeps
//! the volumes.
//!
//! The engine is made a swarm manager (`docker swarm init --advertise-addr
//! 127.0.0.1`) when it is in no swarm, and left again at the end only then, and
//! only when no other container runs: swarm mode leaves bridge networks, published
//! ports and host networking as they are, but `docker swarm leave` drops the
//! embedded-DNS records of bridge containers made while it was on (dockerd 20.10),
//! which would break tests running beside this one. (`cargo test` runs the test
//! binaries one after another, so in CI nothing else runs and the swarm is left.)

mod support;
#[path = "supervision_support/mod.rs"]
mod sv;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use support::webui::{self, Finished};

const DEPLOY: Duration = Duration::from_secs(300);

/// Makes the engine a swarm manager for the test; leaves the swarm on drop only
/// when this test created it.
struct SwarmMode {
    created: bool,
}

impl SwarmMode {
    fn ensure() -> Self {
        let (_, state) = sv::docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"]);
        if state == "active" {
            return Self { created: false };
        }
        let (ok, out) = sv::docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
        assert!(ok, "docker swarm init failed: {out}");
        Self { created: true }
    }
}

impl Drop for SwarmMode {
    fn drop(&mut self) {
        if !self.created {
            return;
        }
        // `docker swarm leave` drops the embedded-DNS records of bridge containers
        // created while the engine was a swarm node (dockerd 20.10: their names stop
        // resolving until they restart), so with other containers running (tests
        // beside this one) the engine stays a one-node swarm without services.
        let (_, running) = sv::docker(&["ps", "-q"]);
        if !running.is_empty() {
            eprintln!(
                "left the engine in swarm mode: other containers run, which `docker swarm leave` would disturb"
            );
            return;
        }
        sv::docker(&["swarm", "leave", "--force"]);
        // Made by `swarm init`; left behind by `leave`.
        sv::docker(&["network", "rm", "docker_gwbridge"]);
    }
}

/// Removes the project's services, then its networks, secrets and volumes, by
/// label (dropped before `sv::Cleanup`, which removes the rest by name).
struct SwarmCleanup {
    project: String,
}

impl SwarmCleanup {
    fn label(&self) -> String {
        format!("label=webui.project={}", self.project)
    }

    fn remove_all(&self) {
        let label = self.label();
        let ids = |args: &[&str]| -> Vec<String> {
            sv::docker(args).1.lines().map(str::to_string).collect()
        };
        for s in ids(&["service", "ls", "-q", "--filter", &label]) {
            sv::docker(&["service", "rm", &s]);
        }
        // Task containers stop asynchronously.
        let relay = format!("{}-swarm-admin-relay", self.project);
        sv::docker(&["rm", "-f", &relay]);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            let left = ids(&[
                "ps",
                "-aq",
                "--filter",
                &format!("label=webui.swarm-project={}", self.project),
            ]);
            if left.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        for n in ids(&["network", "ls", "-q", "--filter", &label]) {
            sv::docker(&["network", "rm", &n]);
        }
        for s in ids(&["secret", "ls", "-q", "--filter", &label]) {
            sv::docker(&["secret", "rm", &s]);
        }
        for v in ids(&["volume", "ls", "-q", "--filter", &label]) {
            sv::docker(&["volume", "rm", "-f", &v]);
        }
        // The proxy image made from the test build (one per binary: do not pile
        // them up); one still in use by another project stays.
        for i in ids(&["image", "ls", "-q", "webui.invalid/proxy"]) {
            sv::docker(&["image", "rm", &i]);
        }
    }
}

impl Drop for SwarmCleanup {
    fn drop(&mut self) {
        self.remove_all();
    }
}

fn db_images() -> Option<(String, String)> {
    match (
        std::env::var("WEBUI_TEST_POSTGRES_IMAGE"),
        std::env::var("WEBUI_TEST_REDIS_IMAGE"),
    ) {
        (Ok(p), Ok(r)) if !p.is_empty() && !r.is_empty() => Some((p, r)),
        _ => {
            sv::skip(
                "WEBUI_TEST_POSTGRES_IMAGE / WEBUI_TEST_REDIS_IMAGE are not set (source /var/lib/webui-ci/env)",
            );
            None
        }
    }
}

/// `webui ARGS` with the binary at `bin` (as `webui::run` does with the built one).
fn pinned_run(bin: &std::path::Path, state: &std::path::Path, args: &[&str]) -> Finished {
    let mut cmd = std::process::Command::new(bin);
    for (k, _) in std::env::vars() {
        if k.starts_with("WEBUI_") && !k.starts_with("WEBUI_TEST_") {
            cmd.env_remove(k);
        }
    }
    cmd.arg("--state-dir").arg(state).args(args);
    webui::finish(cmd, DEPLOY)
}

fn ok(f: &Finished, what: &str) {
    assert!(
        f.status.success(),
        "{what} failed ({:?}):\n{}\n{}",
        f.status,
        f.stdout,
        f.stderr
    );
}

fn service<'a>(status: &'a serde_json::Value, role: &str) -> &'a serde_json::Value {
    status["services"]
        .as_array()
        .unwrap_or_else(|| panic!("no services in {status}"))
        .iter()
        .find(|s| s["service"] == role)
        .unwrap_or_else(|| panic!("no {role} service in {status:#}"))
}

/// The running tasks' container ids (12 hex digits), which are the containers'
/// host names.
fn running_containers(s: &serde_json::Value) -> BTreeSet<String> {
    s["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["desired_state"] == "running" && t["state"] == "running")
        .filter_map(|t| t["container_id"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn swarm_up_converges_serves_across_tasks_and_status_lists_them() {
    let Some(images) = sv::docker_available() else {
        return;
    };
    let Some((pg, rd)) = db_images() else {
        return;
    };
    let p = sv::Cleanup::new("swarm");
    let state = webui::state_dir();
    let (https, http) = (sv::free_port(), sv::free_port());
    let listen = format!("0.0.0.0:{https}");
    let http_listen = format!("0.0.0.0:{http}");
    let image = images.tag("v1");
    // The proxy image is made from the binary that runs `up`: a copy, so a rebuild
    // of target/debug/webui meanwhile does not count as a new proxy version.
    let bin_dir = tempfile::tempdir().unwrap();
    let bin = bin_dir.path().join("webui");
    std::fs::copy(webui::bin(), &bin).unwrap();
    // Not a swarm manager: refused with the way to make one, nothing created.
    let (_, swarm_state) = sv::docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"]);
    if swarm_state != "active" {
        let args = [
            "--project",
            p.name.as_str(),
            "up",
            "--swarm",
            "--listen",
            &listen,
            "--image",
            &image,
        ];
        let f = webui::run(state.path(), &args, Duration::from_secs(60));
        assert_eq!(f.status.code(), Some(1), "{}{}", f.stdout, f.stderr);
        assert!(f.stderr.contains("docker swarm init"), "{}", f.stderr);
        assert!(p.leftovers().is_empty(), "{:?}", p.leftovers());
    }
    let _swarm = SwarmMode::ensure();
    let _services = SwarmCleanup {
        project: p.name.clone(),
    };
    let up = |replicas: &'static str| {
        let args = [
            "--project",
            p.name.as_str(),
            "up",
            "--swarm",
            "--replicas",
            replicas,
            "--listen",
            &listen,
            "--http-listen",
            &http_listen,
            "--image",
            &image,
            "--postgres-image",
            &pg,
            "--redis-image",
            &rd,
            "--health-timeout",
            "4m",
        ];
        pinned_run(&bin, state.path(), &args)
    };

    // 0. A single install's data volume not on Postgres yet: refused, nothing made.
    let (made, _) = sv::docker(&["volume", "create", &p.n("open-webui")]);
    assert!(made);
    let refused = up("3");
    assert_eq!(
        refused.status.code(),
        Some(1),
        "{}{}",
        refused.stdout,
        refused.stderr
    );
    assert!(refused.stderr.contains("migrate-db"), "{}", refused.stderr);
    let (_, services) = sv::docker(&[
        "service",
        "ls",
        "-q",
        "--filter",
        &format!("label=webui.project={}", p.name),
    ]);
    assert!(services.is_empty(), "nothing deployed: {services}");
    sv::docker(&["volume", "rm", &p.n("open-webui")]);

    // 1. Deploy: every service created, the admin account made before the proxy.
    let first = up("3");
    eprintln!("--- webui up --swarm:\n{}{}", first.stdout, first.stderr);
    ok(&first, "webui up --swarm");
    for svc in ["postgres", "redis", "open-webui", "proxy"] {
        let name = p.n(svc);
        assert!(
            first.stdout.contains(&format!("created service {name}")),
            "{name} created:\n{}",
            first.stdout
        );
    }
    let out = format!("{}{}", first.stdout, first.stderr);
    assert!(out.contains("Open WebUI is served at"), "{out}");
    // The admin account was created (through the relay) before the proxy existed.
    let admin = out
        .find("the admin account exists; now the proxy opens the site")
        .unwrap_or_else(|| panic!("admin account line:\n{out}"));
    let proxy_created = out
        .find(&format!("created service {}", p.n("proxy")))
        .unwrap();
    assert!(admin < proxy_created, "admin first:\n{out}");
    assert!(
        state
            .path()
            .join("projects")
            .join(&p.name)
            .join("admin.json")
            .exists(),
        "admin.json recorded"
    );

    // 2. The site serves through the proxy service, with the local CA's certificate,
    //    on the host-mode port; requests reach several Open WebUI tasks.
    let client = sv::client(state.path());
    let base = format!("https://127.0.0.1:{https}");
    sv::until_ok(&client, &format!("{base}/health"), Duration::from_secs(60)).await;
    let status = sv::status_json(state.path(), &p);
    assert_eq!(status["swarm"], true, "{status:#}");
    assert_eq!(status["healthy"], true, "{status:#}");
    let ow = service(&status, "open-webui");
    assert_eq!(ow["replicas"], 3, "{ow:#}");
    assert_eq!(ow["running"], 3, "{ow:#}");
    assert_eq!(
        ow["published"],
        serde_json::json!([]),
        "Open WebUI is never published"
    );
    let tasks = running_containers(ow);
    assert_eq!(tasks.len(), 3, "{ow:#}");
    let proxy = service(&status, "proxy");
    assert_eq!(
        proxy["published"],
        serde_json::json!([https, http]),
        "{proxy:#}"
    );
    let (_, node) = sv::docker(&["info", "--format", "{{.Name}}"]);
    for svc in ["postgres", "redis", "open-webui", "proxy"] {
        let s = service(&status, svc);
        for t in s["tasks"].as_array().unwrap() {
            if t["desired_state"] == "running" {
                assert_eq!(t["node"], node.as_str(), "{svc} task on this node: {t:#}");
            }
        }
    }
    let mut seen = BTreeSet::new();
    let start = Instant::now();
    while seen.len() < 3 && start.elapsed() < Duration::from_secs(30) {
        let (code, _, _, body) =
            sv::fetch(&client, &format!("{base}/env?name=HOSTNAME"), false).await;
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let host = v["value"].as_str().unwrap_or(body.trim()).to_string();
        seen.insert(host);
    }
    eprintln!("--- task host names answering through the proxy: {seen:?}");
    assert!(
        seen.len() >= 2,
        "requests reached only {seen:?} of the tasks {tasks:?}"
    );
    for h in &seen {
        assert!(
            tasks
                .iter()
                .any(|t| h.starts_with(t.as_str()) || t.starts_with(h.as_str())),
            "{h} is one of the running tasks {tasks:?}"
        );
    }
    // Plain HTTP redirects to https.
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = plain
        .get(format!("http://127.0.0.1:{http}/"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_redirection(), "{}", r.status());

    // 3. The text status lists every service and its tasks on this node.
    let text = sv::run(state.path(), &p, &["status"]);
    eprintln!("--- webui status:\n{}", text.stdout);
    ok(&text, "webui status");
    assert!(text.stdout.contains("Docker Swarm"), "{}", text.stdout);
    assert_eq!(
        text.stdout
            .lines()
            .filter(|l| l.contains("task ") && l.contains(&format!("on {node}")))
            .count(),
        6,
        "3 + postgres + redis + proxy tasks:\n{}",
        text.stdout
    );

    // 3b. `webui logs` reaches the tasks through the manager, each line named
    // `service.slot@node`; one service alone has no prefix.
    let logs = sv::run(state.path(), &p, &["logs", "--tail", "20"]);
    ok(&logs, "webui logs");
    let both = format!("{}{}", logs.stdout, logs.stderr);
    for slot in 1..=3 {
        let needle = format!("open-webui.{slot}@{node}");
        assert!(
            both.lines()
                .any(|l| l.starts_with(&needle) && l.contains("| standin openwebui")),
            "{needle}'s start line:\n{both}"
        );
    }
    assert!(
        both.lines()
            .any(|l| l.starts_with(&format!("proxy.1@{node}"))
                && l.contains("| listening on https://")),
        "the proxy's start line:\n{both}"
    );
    let proxy = sv::run(state.path(), &p, &["logs", "proxy", "--tail", "20"]);
    ok(&proxy, "webui logs proxy");
    assert!(
        proxy
            .stdout
            .lines()
            .any(|l| l.starts_with("listening on https://")),
        "{}",
        proxy.stdout
    );
    let two = sv::run(state.path(), &p, &["logs", "open-webui", "--replica", "2"]);
    ok(&two, "webui logs open-webui --replica 2");
    assert!(two.stdout.contains("standin openwebui"), "{}", two.stdout);

    // 3c. `logs -f` follows the task that replaces a removed one.
    let mut cmd = webui::command(state.path());
    cmd.args(["--project", &p.name, "logs", "open-webui", "--replica", "2"])
        .args(["-f", "--tail", "0"]);
    let follow = webui::Webui::spawn(cmd);
    std::thread::sleep(Duration::from_secs(2));
    let (found, task2) = sv::docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=com.docker.swarm.service.name={}", p.n("open-webui")),
        "--filter",
        &format!("name={}.2.", p.n("open-webui")),
    ]);
    assert!(found && !task2.is_empty(), "slot 2's container: {task2}");
    assert!(sv::docker(&["rm", "-f", &task2]).0);
    assert!(
        follow.wait_for_output("standin openwebui", Duration::from_secs(90)),
        "logs -f --replica 2 did not show the new task's start:\n{}",
        follow.output_text()
    );
    drop(follow);
    for (args, needle) in [
        (
            vec!["logs", "open-webui", "--replica", "9"],
            "no Open WebUI task in slot 9",
        ),
        (vec!["logs", "ollama"], "runs no Ollama"),
    ] {
        let f = sv::run(state.path(), &p, &args);
        assert_eq!(
            f.status.code(),
            Some(1),
            "{args:?}: {}{}",
            f.stdout,
            f.stderr
        );
        assert!(
            f.stderr.contains(needle) && f.stderr.contains("hint:"),
            "{}",
            f.stderr
        );
    }

    // 4. Again: converged, nothing changes; then 2 replicas: an update.
    let again = up("3");
    ok(&again, "second webui up --swarm");
    assert_eq!(
        again.stdout.matches("unchanged").count(),
        4,
        "{}",
        again.stdout
    );
    let fewer = up("2");
    ok(&fewer, "webui up --swarm --replicas 2");
    assert!(
        fewer.stdout.contains("replicas: 3 -> 2"),
        "{}",
        fewer.stdout
    );
    let status = sv::status_json(state.path(), &p);
    assert_eq!(service(&status, "open-webui")["replicas"], 2);
    sv::until_ok(&client, &format!("{base}/health"), Duration::from_secs(30)).await;

    // 5. Down: services and network gone, volumes kept.
    let down = sv::run(state.path(), &p, &["down"]);
    ok(&down, "webui down");
    let (_, left) = sv::docker(&[
        "service",
        "ls",
        "-q",
        "--filter",
        &format!("label=webui.project={}", p.name),
    ]);
    assert!(left.is_empty(), "services left: {left}");
    let (_, vols) = sv::docker(&["volume", "ls", "--format", "{{.Name}}"]);
    for v in ["open-webui", "postgres", "redis"] {
        assert!(
            vols.lines().any(|l| l == p.n(v)),
            "volume {} kept:\n{vols}",
            p.n(v)
        );
    }
    let label = format!("label=webui.project={}", p.name);
    for kind in ["network", "secret"] {
        let (_, left) = sv::docker(&[kind, "ls", "-q", "--filter", &label]);
        assert!(left.is_empty(), "{kind}s left: {left}");
    }
    let status = sv::run(state.path(), &p, &["status", "--json"]);
    assert!(
        !status.stdout.contains("\"swarm\": true"),
        "{}",
        status.stdout
    );
    // Up again after down: the same site back on the kept volumes, the admin
    // account found, not made again.
    let back = up("2");
    ok(&back, "webui up --swarm after down");
    assert!(
        back.stdout.contains("existing accounts are never changed"),
        "{}",
        back.stdout
    );
    sv::until_ok(&client, &format!("{base}/health"), Duration::from_secs(60)).await;
    ok(&sv::run(state.path(), &p, &["down"]), "webui down again");
    // --purge-data --yes deletes this node's volumes (the proxy's state too).
    let purge = sv::run(state.path(), &p, &["down", "--purge-data", "--yes"]);
    ok(&purge, "webui down --purge-data --yes");
    let (_, vols) = sv::docker(&["volume", "ls", "-q", "--filter", &label]);
    assert!(vols.is_empty(), "volumes left: {vols}");
}

/// A port only the proxy's host could publish on one address is refused before
/// anything is touched.
#[test]
fn swarm_refuses_a_loopback_listen_address_and_flags_that_do_not_fit() {
    let state = webui::state_dir();
    for (args, want) in [
        (
            vec!["up", "--swarm", "--listen", "127.0.0.1:8443"],
            "every address",
        ),
        (
            vec!["up", "--swarm", "--ollama"],
            "does not go with --swarm",
        ),
        (
            vec!["up", "--swarm", "--network", "host"],
            "does not go with --swarm",
        ),
        (
            vec!["up", "--swarm", "--backup-every", "1d"],
            "--backup-every does not go with --swarm",
        ),
        (
            vec![
                "up",
                "--swarm",
                "--notify-url-file",
                "/etc/webui/notify.url",
            ],
            "--notify-url-file does not go with --swarm",
        ),
        (
            vec![
                "up",
                "--swarm",
                "--ollama-url",
                "https://models.example.com",
                "--ollama-token",
                "t0k",
            ],
            "does not go with --swarm",
        ),
    ] {
        let mut all = vec!["--project", "t-swarm-refuse"];
        all.extend(args.iter().copied());
        let f = webui::run(state.path(), &all, Duration::from_secs(30));
        assert_eq!(
            f.status.code(),
            Some(1),
            "{args:?}: {}{}",
            f.stdout,
            f.stderr
        );
        assert!(f.stderr.contains(want), "{args:?}: {}", f.stderr);
    }
}
