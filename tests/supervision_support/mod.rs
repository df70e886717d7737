//! What every Docker-backed test shares (included with `#[path]`, so it is not a
//! test binary of its own): the Docker checks and test images, the per-test project
//! guard, and `webui up` runners.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::webui::{self, Finished, Webui};

pub const START: Duration = Duration::from_secs(30);
pub const READY: Duration = Duration::from_secs(120);
pub const RUN: Duration = Duration::from_secs(120);

pub struct Images {
    /// Stand-in Open WebUI repository without a tag (:v1 :crashloop ...).
    pub openwebui: String,
    /// Stand-in Ollama image, with its tag.
    pub ollama: String,
}

impl Images {
    pub fn tag(&self, tag: &str) -> String {
        format!("{}:{tag}", self.openwebui)
    }
}

pub fn docker_cli() -> String {
    std::env::var("WEBUI_TEST_DOCKER_CLI").unwrap_or_else(|_| {
        if Path::new("/usr/bin/docker").exists() {
            "/usr/bin/docker".into()
        } else {
            "docker".into()
        }
    })
}

pub fn skip(reason: &str) -> Option<Images> {
    if std::env::var_os("CI").is_some() {
        panic!("dockerd required in CI: {reason}");
    }
    eprintln!("skipping: {reason}");
    None
}

pub fn docker_available() -> Option<Images> {
    let ok = Command::new(docker_cli())
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        return skip(
            "`docker info` fails: dockerd is not running (bash tests/infra/setup.sh starts it)",
        );
    }
    match (
        std::env::var("WEBUI_TEST_OPENWEBUI_IMAGE"),
        std::env::var("WEBUI_TEST_OLLAMA_IMAGE"),
    ) {
        (Ok(o), Ok(l)) if !o.is_empty() && !l.is_empty() => Some(Images {
            openwebui: o,
            ollama: l,
        }),
        _ => skip(
            "WEBUI_TEST_OPENWEBUI_IMAGE / WEBUI_TEST_OLLAMA_IMAGE are not set (source /var/lib/webui-ci/env)",
        ),
    }
}

/// Runs the docker CLI; returns (success, stdout).
pub fn docker(args: &[&str]) -> (bool, String) {
    let out = Command::new(docker_cli())
        .args(args)
        .output()
        .expect("run docker");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

pub fn inspect(name: &str, format: &str) -> String {
    let (ok, out) = docker(&["container", "inspect", "-f", format, name]);
    assert!(ok, "docker container inspect {name} failed");
    out
}

/// A project name and the guard removing its containers, networks and volumes.
pub struct Cleanup {
    pub name: String,
}

impl Cleanup {
    pub fn new(what: &str) -> Self {
        let c = Self {
            name: format!("t-{what}-{}", std::process::id()),
        };
        c.remove_all();
        c
    }

    pub fn n(&self, base: &str) -> String {
        format!("{}-{base}", self.name)
    }

    /// What of this project is still there: "ps NAME", "network NAME", "volume NAME".
    pub fn leftovers(&self) -> Vec<String> {
        let prefix = format!("{}-", self.name);
        let mut out = Vec::new();
        for args in [
            vec!["ps", "-a", "--format", "{{.Names}}"],
            vec!["network", "ls", "--format", "{{.Name}}"],
            vec!["volume", "ls", "--format", "{{.Name}}"],
        ] {
            let (_, list) = docker(&args);
            out.extend(
                list.lines()
                    .filter(|l| l.starts_with(&prefix))
                    .map(|l| format!("{} {l}", args[0])),
            );
        }
        out
    }

    pub fn remove_all(&self) {
        let prefix = format!("{}-", self.name);
        let names = |args: &[&str]| -> Vec<String> {
            docker(args)
                .1
                .lines()
                .filter(|l| l.starts_with(&prefix))
                .map(str::to_string)
                .collect()
        };
        for c in names(&["ps", "-a", "--format", "{{.Names}}"]) {
            docker(&["rm", "-f", &c]);
        }
        for n in names(&["network", "ls", "--format", "{{.Name}}"]) {
            docker(&["network", "rm", &n]);
        }
        for v in names(&["volume", "ls", "--format", "{{.Name}}"]) {
            docker(&["volume", "rm", "-f", &v]);
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.remove_all();
    }
}

/// A loopback port free right now and not handed out before in this test process:
/// the kernel may offer a just-released port again, and two "free" ports of one test
/// (the container's and the proxy's) being the same made `up` refuse to start.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

pub fn up_args<'a>(p: &'a Cleanup, image: &'a str, port: &'a str, listen: &'a str) -> Vec<&'a str> {
    vec![
        "--project",
        p.name.as_str(),
        "up",
        "--listen",
        listen,
        "--http-listen",
        "127.0.0.1:0",
        "--image",
        image,
        "--port",
        port,
    ]
}

pub fn up(
    state: &Path,
    p: &Cleanup,
    image: &str,
    port: u16,
    listen: &str,
    extra: &[&str],
) -> Webui {
    let port = port.to_string();
    let mut args = up_args(p, image, &port, listen);
    args.extend_from_slice(extra);
    Webui::start(state, &args, START)
}

/// Waits for `needle` in the output, failing early on `error:`.
pub fn wait_output(w: &Webui, needle: &str, limit: Duration) {
    let start = Instant::now();
    while start.elapsed() < limit {
        let out = w.output_text();
        if out.contains(needle) {
            return;
        }
        if out.contains("error:") {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("`{needle}` never printed:\n{}", w.output_text());
}

pub fn wait_ready(w: &Webui) {
    wait_output(w, "Open WebUI is ready at", READY);
}

pub fn stop(mut w: Webui) -> String {
    w.signal("TERM");
    let status = w
        .wait(Duration::from_secs(30))
        .expect("webui exits on SIGTERM");
    assert!(
        status.success(),
        "webui up exits 0 on SIGTERM:\n{}",
        w.output_text()
    );
    w.output_text()
}

pub fn run(state: &Path, p: &Cleanup, args: &[&str]) -> Finished {
    let mut all = vec!["--project", p.name.as_str()];
    all.extend_from_slice(args);
    webui::run(state, &all, RUN)
}

pub fn status_json(state: &Path, p: &Cleanup) -> serde_json::Value {
    let f = run(state, p, &["status", "--json"]);
    serde_json::from_str(&f.stdout)
        .unwrap_or_else(|e| panic!("status --json: {e}\n{}{}", f.stdout, f.stderr))
}

pub fn client(state: &Path) -> reqwest::Client {
    webui::https_client(&webui::local_ca(state), false)
}

/// One request: (status, content-type, retry-after, body); status 0 when it failed.
pub async fn fetch(c: &reqwest::Client, url: &str, html: bool) -> (u16, String, String, String) {
    let accept = if html {
        "text/html"
    } else {
        "application/json"
    };
    match c.get(url).header("accept", accept).send().await {
        Ok(r) => {
            let h = |n: &str| {
                r.headers()
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string()
            };
            let (ct, ra) = (h("content-type"), h("retry-after"));
            (
                r.status().as_u16(),
                ct,
                ra,
                r.text().await.unwrap_or_default(),
            )
        }
        Err(_) => (0, String::new(), String::new(), String::new()),
    }
}

/// Polls `url` until it answers 200, up to `limit`.
pub async fn until_ok(c: &reqwest::Client, url: &str, limit: Duration) {
    let start = Instant::now();
    loop {
        let (s, _, _, body) = fetch(c, url, false).await;
        if s == 200 {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "{url} did not answer 200 within {limit:?}; last: {s} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
