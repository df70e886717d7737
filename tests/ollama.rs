//! Ollama on its own domain with a bearer token (issue #7 part 1): `webui up
//! --ollama-only`, `webui token show|rotate`, a UI server using it through HTTPS with
//! the token, one box serving both names, and a native Ollama fronted without Docker.
//!
//! Against the real dockerd and the local registry's stand-in images
//! (`tests/infra/setup.sh`); each test's projects are `t-oll-<what>-<pid>`, removed by
//! a guard. Without dockerd or the images the Docker tests skip with a reason, except
//! in CI (`CI` set), where that is a failure.

mod support;
#[path = "supervision_support/mod.rs"]
mod sv;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;
use support::webui::{self, Webui};
use sv::{Cleanup, RUN, START, docker, free_port, run, stop};

/// The stand-in images (`:v1` Open WebUI, Ollama), or `None` (skip outside CI).
fn images() -> Option<(String, String)> {
    let ui = sv::docker_available()?;
    match std::env::var("WEBUI_TEST_OLLAMA_IMAGE") {
        Ok(o) if !o.is_empty() => Some((ui.tag("v1"), o)),
        _ => {
            sv::skip("WEBUI_TEST_OLLAMA_IMAGE is not set (source /var/lib/webui-ci/env)");
            None
        }
    }
}

fn start(state: &Path, project: &str, args: &[&str]) -> Webui {
    let mut all = vec![
        "--project",
        project,
        "up",
        "--listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
    ];
    all.extend_from_slice(args);
    Webui::start(state, &all, START)
}

fn wait_for(w: &Webui, needle: &str) {
    sv::wait_output(w, needle, sv::READY);
}

fn token_of(state: &Path, project: &str) -> String {
    let f = webui::run(
        state,
        &["--project", project, "token", "show", "--json"],
        RUN,
    );
    assert!(f.status.success(), "token show: {}{}", f.stdout, f.stderr);
    let v: Value = serde_json::from_str(&f.stdout).expect("token show --json");
    v["token"].as_str().expect("token").to_string()
}

/// A client trusting the state dir's local CA, resolving `names` to `addr`.
fn client(state: &Path, names: &[&str], addr: SocketAddr) -> reqwest::Client {
    let tls = webui::client_tls(&[&webui::local_ca(state)], &[b"http/1.1"]);
    let mut b = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .http1_only()
        .redirect(reqwest::redirect::Policy::none());
    for n in names {
        b = b.resolve(n, addr);
    }
    b.build().expect("client")
}

async fn get(c: &reqwest::Client, url: &str, token: Option<&str>) -> (u16, String) {
    let mut r = c.get(url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().await.expect("request");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

/// Without a token and with a wrong one: 401, JSON `{"error"}`, `WWW-Authenticate:
/// Bearer`.
async fn assert_refused(c: &reqwest::Client, url: &str, token: Option<&str>) {
    let mut r = c.get(url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().await.expect("request");
    assert_eq!(r.status().as_u16(), 401, "{url} with {token:?}");
    let www = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert!(www.starts_with("Bearer"), "WWW-Authenticate: {www}");
    let v: Value = r.json().await.expect("401 body is JSON");
    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
}

/// `/api/chat` streamed: the lines arrive one by one, spread over time as the
/// stand-in writes them (50 ms apart), not all at once at the end.
async fn assert_chat_streams(c: &reqwest::Client, url: &str, token: &str) {
    let r = c
        .post(url)
        .bearer_auth(token)
        .body(r#"{"model":"standin:latest","messages":[{"role":"user","content":"hi"}]}"#)
        .send()
        .await
        .expect("chat");
    assert_eq!(r.status().as_u16(), 200);
    let mut stream = r.bytes_stream();
    let mut buf = Vec::new();
    let mut arrivals = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("chunk");
        for b in chunk.iter() {
            buf.push(*b);
            if *b == b'\n' {
                arrivals.push(Instant::now());
            }
        }
    }
    let text = String::from_utf8_lossy(&buf).to_string();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("NDJSON line"))
        .collect();
    assert!(lines.len() >= 5, "{text}");
    assert_eq!(lines.last().unwrap()["done"], true, "{text}");
    let spread = *arrivals.last().unwrap() - arrivals[0];
    assert!(
        spread >= Duration::from_millis(150),
        "lines arrived together ({spread:?}): the stream was buffered"
    );
    let distinct = arrivals
        .windows(2)
        .filter(|w| w[1] - w[0] >= Duration::from_millis(20))
        .count();
    let offsets: Vec<u128> = arrivals
        .iter()
        .map(|a| (*a - arrivals[0]).as_millis())
        .collect();
    assert!(
        distinct >= 2,
        "only {distinct} gaps between lines (arrivals at {offsets:?} ms): not streamed line by line"
    );
}

/// Every address something listens on at `port` on this host.
fn listening(port: u16) -> Vec<std::net::IpAddr> {
    let mut out = Vec::new();
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(t) = std::fs::read_to_string(f) {
            out.extend(::webui::docker::host::listening_addrs(&t, port));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn ollama_only_needs_the_token_streams_rotates_and_serves_a_remote_ui() {
    let Some((ui_image, ollama_image)) = images() else {
        return;
    };
    let gpu = Cleanup::new("oll-gpu");
    let state = webui::state_dir();
    let oport = free_port();
    let oport_s = oport.to_string();
    let w = start(
        state.path(),
        &gpu.name,
        &[
            "--ollama-only",
            "--domain",
            "models.test",
            "--self-signed",
            "--ollama-image",
            &ollama_image,
            "--ollama-port",
            &oport_s,
            "--allow-origin",
            "https://chat.test",
        ],
    );
    wait_for(&w, "the Ollama API is ready at");
    let token = token_of(state.path(), &gpu.name);
    assert!(
        w.output_text().contains(&token),
        "the new token is shown once at creation"
    );
    let addr = w.https[0];
    let c = client(state.path(), &["models.test"], addr);
    let base = format!("https://models.test:{}", addr.port());
    let tags = format!("{base}/api/tags");

    // No token, a wrong one: 401 JSON. The right one: the models.
    assert_refused(&c, &tags, None).await;
    assert_refused(&c, &tags, Some("not-the-token")).await;
    let (status, body) = get(&c, &tags, Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("standin:latest"), "{body}");
    // Ollama never sees the token.
    let (status, echo) = get(&c, &format!("{base}/echo"), Some(&token)).await;
    assert_eq!(status, 200, "{echo}");
    assert!(
        !echo.to_ascii_lowercase().contains("authorization") && !echo.contains(&token),
        "{echo}"
    );
    assert_chat_streams(&c, &format!("{base}/api/chat"), &token).await;

    // CORS: a preflight from the allowed origin needs no token; ollama is told too.
    let pre = c
        .request(reqwest::Method::OPTIONS, &tags)
        .header("Origin", "https://chat.test")
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "authorization")
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status().as_u16(), 204);
    assert_eq!(
        pre.headers()["access-control-allow-origin"],
        "https://chat.test"
    );
    let (ok, env) = docker(&[
        "container",
        "inspect",
        "-f",
        "{{json .Config.Env}}",
        &gpu.n("ollama"),
    ]);
    assert!(
        ok && env.contains("OLLAMA_ORIGINS=https://chat.test"),
        "{env}"
    );

    // Nothing beyond loopback: the one binding is 127.0.0.1, and so is every socket
    // listening on the port.
    let (_, bindings) = docker(&[
        "container",
        "inspect",
        "-f",
        "{{json .HostConfig.PortBindings}}",
        &gpu.n("ollama"),
    ]);
    let b: Value = serde_json::from_str(&bindings).unwrap();
    let all: Vec<&Value> = b
        .as_object()
        .unwrap()
        .values()
        .flat_map(|v| v.as_array().unwrap())
        .collect();
    assert!(!all.is_empty(), "{bindings}");
    for x in all {
        assert_eq!(x["HostIp"], "127.0.0.1", "{bindings}");
    }
    let addrs = listening(oport);
    assert!(
        addrs.iter().all(|a| a.is_loopback()),
        "port {oport} listens on {addrs:?}"
    );

    // `status` knows the served Ollama is the project's service, and healthy.
    let st = run(state.path(), &gpu, &["status", "--json"]);
    assert!(st.status.success(), "{}{}", st.stdout, st.stderr);
    let v: Value = serde_json::from_str(&st.stdout).unwrap();
    assert_eq!(v["healthy"], true, "{v}");
    assert!(!st.stdout.contains(&token), "the token is not in status");

    // Rotation: the running proxy takes the new token and drops the old one.
    let f = run(state.path(), &gpu, &["token", "rotate", "--json"]);
    assert!(f.status.success(), "{}", f.stderr);
    let v: Value = serde_json::from_str(&f.stdout).unwrap();
    let new = v["token"].as_str().unwrap().to_string();
    assert_ne!(new, token);
    assert_refused(&c, &tags, Some(&token)).await;
    let (status, _) = get(&c, &tags, Some(&new)).await;
    assert_eq!(status, 200);

    // The UI server: a second `webui up`, on a state dir of its own as on another box,
    // reaches it over HTTPS with the token, through its forwarder, trusting the GPU
    // box's local CA with --ollama-ca.
    let ui = Cleanup::new("oll-ui");
    let ui_state = webui::state_dir();
    let gpu_ca = state.path().join("ca").join("ca.pem");
    let token_file = ui_state.path().join("remote.token");
    std::fs::write(&token_file, format!("{new}\n")).unwrap();
    std::fs::set_permissions(
        &token_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let remote = format!("https://localhost:{}", addr.port());
    let port = free_port().to_string();
    let u = start(
        ui_state.path(),
        &ui.name,
        &[
            "--image",
            &ui_image,
            "--port",
            &port,
            "--ollama-url",
            &remote,
            "--ollama-token-file",
            token_file.to_str().unwrap(),
            "--ollama-ca",
            gpu_ca.to_str().unwrap(),
        ],
    );
    wait_for(&u, "Open WebUI is ready at");
    // `up` checks the remote Ollama with the token (in the background).
    wait_for(
        &u,
        &format!("the Ollama at {remote} answers with the token"),
    );
    let uc = client(ui_state.path(), &[], u.https[0]);
    let (status, base_url) = get(&uc, &u.https_url("/env?name=OLLAMA_BASE_URL"), None).await;
    assert_eq!(status, 200);
    assert!(
        base_url.starts_with("http://host.docker.internal:"),
        "{base_url}"
    );
    let (status, body) = get(
        &uc,
        &u.https_url(&format!("/fetch?url={base_url}/api/tags")),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], 200, "{v}");
    assert!(
        v["body"].as_str().unwrap().contains("standin:latest"),
        "{v}"
    );
    // The token is in no container, no output, no status.
    let (_, env) = docker(&[
        "container",
        "inspect",
        "-f",
        "{{json .Config.Env}}",
        &ui.n("open-webui"),
    ]);
    assert!(!env.contains(&new), "token in the container's environment");
    let st = run(ui_state.path(), &ui, &["status", "--json"]);
    assert!(!st.stdout.contains(&new) && !st.stderr.contains(&new));
    assert!(!u.output_text().contains(&new), "token in up's output");
    let stored = ui_state
        .path()
        .join("projects")
        .join(&ui.name)
        .join("ollama_remote_token");
    let mode = std::fs::metadata(&stored).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );

    // `webui doctor` on the UI server asks the remote Ollama as the forwarder does:
    // pass; after a rotation on the GPU box that the UI server missed, the refused
    // token with its fix; inside the container, the refusal as Open WebUI gets it,
    // with the same fix. The token is in none of it.
    let doctor = || -> Value {
        let d = webui::run(
            ui_state.path(),
            &["--project", &ui.name, "doctor", "--json"],
            RUN,
        );
        serde_json::from_str(&d.stdout)
            .unwrap_or_else(|e| panic!("doctor --json: {e}\n{}{}", d.stdout, d.stderr))
    };
    let check = |v: &Value, name: &str| -> Value {
        v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"].as_str().is_some_and(|n| n.starts_with(name)))
            .cloned()
            .unwrap_or_else(|| panic!("no {name} check in {v:#}"))
    };
    let says = |c: &Value, status: &str, evidence: &str, fix: Option<&str>| {
        assert_eq!(c["status"], status, "{c}");
        assert!(c["evidence"].as_str().unwrap().contains(evidence), "{c}");
        if let Some(fix) = fix {
            assert!(c["fix"].as_str().unwrap().contains(fix), "{c}");
        }
        assert!(
            !c.to_string().contains(&new),
            "the token is not in doctor's output"
        );
    };
    let v = doctor();
    says(
        &check(&v, "remote Ollama"),
        "pass",
        "answers with the token",
        None,
    );
    let f = run(state.path(), &gpu, &["token", "rotate"]);
    assert!(f.status.success(), "{}", f.stderr);
    let v = doctor();
    let fix = Some("webui token show");
    says(
        &check(&v, "remote Ollama"),
        "fail",
        "refused the token",
        fix,
    );
    says(
        &check(&v, "Ollama from open-webui"),
        "fail",
        "answered HTTP 401",
        fix,
    );
    stop(u);
    stop(w);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_box_serves_the_ui_and_the_token_protected_ollama_on_two_names() {
    let Some((ui_image, ollama_image)) = images() else {
        return;
    };
    let p = Cleanup::new("oll-box");
    let state = webui::state_dir();
    let port = free_port().to_string();
    let oport = free_port().to_string();
    let w = start(
        state.path(),
        &p.name,
        &[
            "--domain",
            "chat.test",
            "--self-signed",
            "--image",
            &ui_image,
            "--port",
            &port,
            "--ollama",
            "--ollama-image",
            &ollama_image,
            "--ollama-domain",
            "models.test",
            "--ollama-port",
            &oport,
        ],
    );
    wait_for(&w, "Open WebUI is ready at https://chat.test");
    let token = token_of(state.path(), &p.name);
    let addr = w.https[0];
    // One proxy, both names on its certificate (the client checks them).
    let c = client(state.path(), &["chat.test", "models.test"], addr);
    let ui = format!("https://chat.test:{}", addr.port());
    let models = format!("https://models.test:{}", addr.port());

    let (status, body) = get(&c, &format!("{ui}/api/version"), None).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"v1\""),
        "Open WebUI answers on its name: {body}"
    );
    assert_refused(&c, &format!("{models}/api/tags"), None).await;
    let (status, body) = get(&c, &format!("{models}/api/tags"), Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("standin:latest"), "{body}");
    assert_chat_streams(&c, &format!("{models}/api/chat"), &token).await;
    // The UI's CORS origin is its own name only.
    let (_, cors) = get(&c, &format!("{ui}/env?name=CORS_ALLOW_ORIGIN"), None).await;
    assert!(!cors.contains("models.test"), "{cors}");
    stop(w);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_native_ollama_on_every_address_is_fronted_with_a_warning() {
    // A fake native Ollama listening on 0.0.0.0 (as with OLLAMA_HOST=0.0.0.0).
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let _ollama = support::standin::spawn_on(listener, support::standin::Config::ollama());
    let state = webui::state_dir();
    let project = format!("t-oll-native-{}", std::process::id());
    let url = format!("http://127.0.0.1:{port}");
    // Short proxy timeouts: a model pull that streams for longer must still pass.
    let w = start(
        state.path(),
        &project,
        &[
            "--ollama-only",
            "--ollama-url",
            &url,
            "--response-timeout",
            "1s",
        ],
    );
    wait_for(&w, "the Ollama API is ready at");
    let out = w.output_text();
    assert!(
        out.contains("also listens beyond loopback") && out.contains("OLLAMA_HOST=127.0.0.1"),
        "{out}"
    );
    let token = token_of(state.path(), &project);
    let c = client(state.path(), &[], w.https[0]);
    let tags = w.https_url("/api/tags");
    assert_refused(&c, &tags, None).await;
    let (status, body) = get(&c, &tags, Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    assert_chat_streams(&c, &w.https_url("/api/chat"), &token).await;

    // `/api/pull`: a long progress stream (4 pauses of 0.7 s) is not cut.
    let started = Instant::now();
    let r = c
        .post(w.https_url("/api/pull"))
        .bearer_auth(&token)
        .body(r#"{"model":"standin","steps":4,"interval_ms":700}"#)
        .send()
        .await
        .expect("pull");
    assert_eq!(r.status().as_u16(), 200);
    let text = r.text().await.expect("the whole pull stream");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("NDJSON"))
        .collect();
    assert_eq!(lines.len(), 6, "{text}");
    assert_eq!(lines.last().unwrap()["status"], "success", "{text}");
    assert!(started.elapsed() >= Duration::from_millis(2800));
    stop(w);

    // Loopback only: no warning.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let _quiet = support::standin::spawn_on(listener, support::standin::Config::ollama());
    let url = format!("http://127.0.0.1:{port}");
    let w = start(
        state.path(),
        &project,
        &["--ollama-only", "--ollama-url", &url],
    );
    wait_for(&w, "the Ollama API is ready at");
    assert!(
        !w.output_text().contains("beyond loopback"),
        "{}",
        w.output_text()
    );
    stop(w);
}

#[test]
fn bad_inputs_exit_1_with_the_fix_and_store_nothing() {
    let state = webui::state_dir();
    let p = format!("t-oll-bad-{}", std::process::id());
    let cases: &[(&[&str], &str)] = &[
        (&["up", "--ollama-only", "--ollama"], "--ollama"),
        (&["up", "--ollama-only", "--image", "x/y:1"], "--image"),
        (
            &["up", "--ollama-domain", "models.example.com"],
            "needs --ollama",
        ),
        (
            &[
                "up",
                "--ollama-only",
                "--ollama-domain",
                "models.example.com",
            ],
            "--domain",
        ),
        (
            &[
                "up",
                "--ollama-url",
                "http://10.0.0.5:11434",
                "--ollama-token",
                "abc",
            ],
            "clear text",
        ),
        (&["up", "--ollama-token", "abc"], "--ollama-url"),
        (
            &["up", "--allow-origin", "https://chat.example.com"],
            "--ollama-only",
        ),
        (
            &[
                "up",
                "--ollama-only",
                "--allow-origin",
                "chat.example.com/x",
            ],
            "is not an origin",
        ),
        (&["token", "show"], "no Ollama API token"),
    ];
    for (args, needle) in cases {
        let f = webui::run(
            state.path(),
            &[&["--project", p.as_str()], *args].concat(),
            RUN,
        );
        assert_eq!(
            f.status.code(),
            Some(1),
            "{args:?}: {}{}",
            f.stdout,
            f.stderr
        );
        assert!(f.stderr.contains(needle), "{args:?}: {}", f.stderr);
    }
    assert!(
        !state.path().join("projects").join(&p).exists(),
        "a refused start stores nothing"
    );
}
