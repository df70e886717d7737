//! `webui config show|init|export` end to end: the real binary, and for `export` the real
//! nginx, Apache httpd and Caddy, checked with their own tools and then started on
//! loopback in front of the stand-in upstream, with websockets and SSE run through them.
//!
//! The web servers come from Debian's packages `nginx`, `apache2` and `caddy`. Outside
//! CI a missing one is skipped with a printed reason; with `CI` set it is a failure.

mod support;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use support::standin;
use support::webui;
use tokio_tungstenite::tungstenite::Message;

const RUN: Duration = Duration::from_secs(20);
const NAME: &str = "chat.webui.test";

// ---------------------------------------------------------------- helpers

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The path of `name` in PATH or the sbin directories, if installed.
fn find_bin(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin", "/usr/bin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// The binary, or `None` after printing why the test is skipped. In CI a missing
/// binary fails the test.
fn require(name: &str, package: &str) -> Option<PathBuf> {
    let found = find_bin(name);
    if found.is_none() {
        let why = format!("`{name}` is not installed (Debian package `{package}`)");
        if std::env::var_os("CI").is_some() {
            panic!("{why}; tests/infra/setup.sh must install it");
        }
        eprintln!("SKIPPED: {why}");
    }
    found
}

/// A port free right now on 127.0.0.1.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A self-signed certificate for NAME and its key, as PEM files in `dir`.
fn cert_for_name(dir: &Path) -> (PathBuf, PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![NAME.to_string()]).unwrap();
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(30);
    let cert = params.self_signed(&key).unwrap();
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

/// `webui config export SERVER --domain NAME --tls-cert --tls-key` plus `extra`; the
/// configuration text.
fn export(state: &Path, server: &str, cert: &Path, key: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "config",
        "export",
        server,
        "--domain",
        NAME,
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = webui::run(state, &args, RUN);
    assert_eq!(
        out.status.code(),
        Some(0),
        "webui {args:?} failed:\n{}",
        out.stderr
    );
    out.stdout
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// Runs a checking command; panics with its output when it fails.
fn check(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} refused the exported configuration:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A started web server, killed on drop.
struct Server {
    child: Child,
    name: &'static str,
    log: PathBuf,
}

impl Server {
    fn start(name: &'static str, mut cmd: Command, log: PathBuf, port: u16) -> Server {
        let child = cmd
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir_of(&log).join(format!("{name}.stderr"))).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let mut s = Server { child, name, log };
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!("{name} exited with {status}:\n{}", s.logs());
            }
            if start.elapsed() > Duration::from_secs(15) {
                panic!("{name} did not listen on {port} within 15 s:\n{}", s.logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    fn logs(&self) -> String {
        let stderr = dir_of(&self.log).join(format!("{}.stderr", self.name));
        format!(
            "{}\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default(),
            std::fs::read_to_string(stderr).unwrap_or_default()
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM first so a server with helper processes takes them along.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dir_of(p: &Path) -> &Path {
    p.parent().unwrap()
}

// ---------------------------------------------------------------- wrappers

/// An nginx.conf that includes the site, with every path inside `dir`.
fn nginx_wrapper(dir: &Path, site: &Path) -> PathBuf {
    let d = dir.display();
    let tmp = dir.join("ngx");
    std::fs::create_dir_all(&tmp).unwrap();
    let user = if is_root() { "user root;\n" } else { "" };
    let conf = format!(
        "{user}worker_processes 1;\n\
         daemon off;\n\
         master_process off;\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/nginx-error.log info;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n  \
             access_log {d}/nginx-access.log;\n  \
             client_body_temp_path {d}/ngx/body;\n  \
             proxy_temp_path {d}/ngx/proxy;\n  \
             fastcgi_temp_path {d}/ngx/fastcgi;\n  \
             uwsgi_temp_path {d}/ngx/uwsgi;\n  \
             scgi_temp_path {d}/ngx/scgi;\n  \
             include {};\n\
         }}\n",
        site.display()
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    path
}

fn nginx_cmd(bin: &Path, dir: &Path, conf: &Path) -> Command {
    let mut c = Command::new(bin);
    c.arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("nginx-error.log"))
        .arg("-c")
        .arg(conf);
    c
}

/// Debian keeps Apache's modules here; the site's modules plus what any server needs.
const APACHE_MODULES: &str = "/usr/lib/apache2/modules";

/// An apache2.conf that loads the modules the export asks for and includes the site.
fn apache_wrapper(dir: &Path, site: &Path, site_text: &str) -> PathBuf {
    let d = dir.display();
    let mut modules = vec![
        "mpm_event",
        "authz_core",
        "alias",
        "socache_shmcb",
        "reqtimeout",
    ];
    // The site names what to enable: `#   a2enmod proxy proxy_http ...`.
    let a2enmod = site_text
        .lines()
        .find_map(|l| l.trim_start_matches('#').trim().strip_prefix("a2enmod "))
        .expect("the Apache export lists its modules");
    modules.extend(a2enmod.split_whitespace());
    let mut conf = format!(
        "ServerRoot {d}\n\
         DefaultRuntimeDir {d}\n\
         PidFile {d}/apache.pid\n\
         ErrorLog {d}/apache-error.log\n\
         LogLevel warn\n\
         ServerName localhost\n\
         User nobody\n\
         Group nogroup\n"
    );
    for m in modules {
        conf.push_str(&format!(
            "LoadModule {m}_module {APACHE_MODULES}/mod_{m}.so\n"
        ));
    }
    conf.push_str(&format!("Include {}\n", site.display()));
    let path = dir.join("apache2.conf");
    std::fs::write(&path, conf).unwrap();
    path
}

/// The Caddyfile with the admin endpoint off (tests run side by side).
fn caddy_for_test(site_text: &str) -> String {
    assert!(
        site_text.contains("\n{\n"),
        "the export starts with a global options block"
    );
    site_text.replacen("\n{\n", "\n{\n\tadmin off\n", 1)
}

fn caddy_cmd(bin: &Path, dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin);
    c.args(args)
        .env("HOME", dir)
        .env("XDG_DATA_HOME", dir.join("data"))
        .env("XDG_CONFIG_HOME", dir.join("config"));
    c
}

// ---------------------------------------------------------------- traffic

fn tls_client(cert: &Path, http2: bool) -> rustls::ClientConfig {
    let alpn: &[&[u8]] = if http2 {
        &[b"h2", b"http/1.1"]
    } else {
        &[b"http/1.1"]
    };
    webui::client_tls(&[cert], alpn)
}

fn https_client(cert: &Path, https: SocketAddr, http2: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .tls_backend_preconfigured(tls_client(cert, http2))
        .resolve(NAME, https)
        .redirect(reqwest::redirect::Policy::none());
    if !http2 {
        b = b.http1_only();
    }
    b.build().unwrap()
}

async fn arrivals(res: reqwest::Response) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut buf = String::new();
    let mut stream = res.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let arrived = now_ms();
        buf.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        while let Some(nl) = buf.find('\n') {
            let line: String = buf.drain(..=nl).collect();
            let json = line.trim().trim_start_matches("data:").trim();
            if let Ok(v) = serde_json::from_str::<Value>(json)
                && let Some(sent) = v["sent_ms"].as_u64()
            {
                out.push((sent, arrived));
            }
        }
    }
    out
}

/// Every event arrives before the next one is even emitted: nothing is held back.
fn assert_unbuffered(server: &str, events: &[(u64, u64)], n: usize) {
    assert_eq!(events.len(), n, "{server}: all events arrive");
    for w in events.windows(2) {
        let ((_, arrived), (next_sent, _)) = (w[0], w[1]);
        assert!(
            arrived < next_sent,
            "{server}: an event arrived at {arrived}, after the next one was emitted at {next_sent}: it buffers; {events:?}"
        );
    }
}

/// What a user of Open WebUI would notice, through `server` at `https`/`http`:
/// forwarded headers set by the server, SSE unbuffered (over h2 too when `h2`), a
/// socket.io websocket echoing, a 301 from plain HTTP that spares ACME challenges.
async fn exercise(server: &str, cert: &Path, https: SocketAddr, http: SocketAddr, h2: bool) {
    let c = https_client(cert, https, false);
    let base = format!("https://{NAME}:{}", https.port());

    let res = c
        .get(format!("{base}/echo?x=1"))
        .header("X-Forwarded-For", "6.6.6.6")
        .header("X-Real-IP", "6.6.6.6")
        .header("X-Forwarded-Proto", "http")
        .header("X-Forwarded-Host", "evil.example")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{server}: GET /echo: {e}"));
    assert_eq!(res.status(), 200, "{server}: /echo");
    assert_eq!(
        res.headers()
            .get("strict-transport-security")
            .map(|v| v.to_str().unwrap()),
        Some("max-age=31536000"),
        "{server}: HSTS"
    );
    let v: Value = res.json().await.unwrap();
    let h = &v["headers"];
    assert_eq!(
        h["x-forwarded-for"], "127.0.0.1",
        "{server}: XFF replaced: {h}"
    );
    assert_eq!(h["x-real-ip"], "127.0.0.1", "{server}: X-Real-IP: {h}");
    assert_eq!(h["x-forwarded-proto"], "https", "{server}: proto: {h}");
    let fwd_host = h["x-forwarded-host"].as_str().unwrap_or_default();
    assert!(
        fwd_host.starts_with(NAME),
        "{server}: X-Forwarded-Host {fwd_host}"
    );
    assert!(
        h["host"].as_str().unwrap_or_default().starts_with(NAME),
        "{server}: Host kept: {h}"
    );
    assert_eq!(v["query"], "x=1");

    for http2 in if h2 { vec![false, true] } else { vec![false] } {
        let c = https_client(cert, https, http2);
        let res = c
            .get(format!("{base}/sse?n=6&interval_ms=250"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        if http2 {
            assert_eq!(res.version(), reqwest::Version::HTTP_2, "{server}: h2");
        }
        assert_unbuffered(server, &arrivals(res).await, 6);
    }

    // A socket.io websocket, over TLS with the name the certificate carries.
    let tcp = tokio::net::TcpStream::connect(https).await.unwrap();
    let url = format!(
        "wss://{NAME}:{}/ws/socket.io/?EIO=4&transport=websocket",
        https.port()
    );
    let (mut ws, res) = tokio_tungstenite::client_async_tls_with_config(
        url,
        tcp,
        None,
        Some(tokio_tungstenite::Connector::Rustls(Arc::new(tls_client(
            cert, false,
        )))),
    )
    .await
    .unwrap_or_else(|e| panic!("{server}: websocket handshake: {e}"));
    assert_eq!(res.status(), 101);
    for msg in [
        Message::text(format!("hello through {server}")),
        Message::binary(vec![0u8, 1, 2, 255]),
        Message::binary(
            (0..(256 << 10))
                .map(|i| (i % 251) as u8)
                .collect::<Vec<u8>>(),
        ),
    ] {
        ws.send(msg.clone()).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .unwrap_or_else(|_| panic!("{server}: websocket echo within 10 s"))
            .expect("stream open")
            .unwrap();
        assert_eq!(got, msg, "{server}: websocket echo");
    }
    let _ = ws.close(None).await;

    // Plain HTTP: 301 to https on the right port; the ACME path is not redirected.
    let plain = reqwest::Client::builder()
        .resolve(NAME, http)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = plain
        .get(format!("http://{NAME}:{}/c/abc?q=1", http.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 301, "{server}: plain HTTP redirects");
    assert_eq!(
        res.headers()["location"],
        format!("https://{NAME}:{}/c/abc?q=1", https.port()).as_str(),
        "{server}: redirect target"
    );
    let res = plain
        .get(format!(
            "http://{NAME}:{}/.well-known/acme-challenge/token",
            http.port()
        ))
        .send()
        .await
        .unwrap();
    assert_ne!(
        res.status(),
        301,
        "{server}: ACME challenges stay on plain HTTP"
    );
}

// ---------------------------------------------------------------- show

fn show_json(cmd: &mut Command) -> Value {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "config show failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "config show --json is not JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn setting<'a>(v: &'a Value, key: &str) -> &'a Value {
    v["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["key"] == key)
        .unwrap_or_else(|| panic!("no setting {key} in {v}"))
}

#[test]
fn config_show_json_names_where_each_value_came_from() {
    let state = webui::state_dir();
    std::fs::write(
        state.path().join("webui.toml"),
        "max_body = \"10M\"\nheader_timeout = \"20s\"\nconnect_timeout = \"7s\"\n",
    )
    .unwrap();
    let v = show_json(
        webui::command(state.path())
            .args([
                "config",
                "show",
                "--json",
                "--listen",
                "127.0.0.1:8443",
                "--connect-timeout",
                "3s",
            ])
            .env("WEBUI_WS_IDLE_TIMEOUT", "2h")
            .env("WEBUI_HEADER_TIMEOUT", "40s")
            .env("WEBUI_CONNECT_TIMEOUT", "9s"),
    );
    let expect = |key: &str, value: Value, source: &str| {
        let s = setting(&v, key);
        assert_eq!(s["value"], value, "{key}: {s}");
        assert_eq!(s["source"], source, "{key}: {s}");
    };
    expect("listen", serde_json::json!(["127.0.0.1:8443"]), "flag");
    expect("connect_timeout", "3s".into(), "flag"); // flag > env > file
    expect("ws_idle_timeout", "2h".into(), "env");
    expect("header_timeout", "40s".into(), "env"); // env > file
    expect("max_body", (10u64 << 20).into(), "file");
    expect("upstream", "http://127.0.0.1:3000".into(), "default");
    expect(
        "http_listen",
        serde_json::json!(["0.0.0.0:80", "[::]:80"]),
        "default",
    );
    expect("drain_timeout", "10s".into(), "default");
    let explicit = [
        "listen",
        "connect_timeout",
        "ws_idle_timeout",
        "header_timeout",
        "max_body",
    ];
    for s in v["settings"].as_array().unwrap() {
        if !explicit.contains(&s["key"].as_str().unwrap()) {
            assert_eq!(s["source"], "default", "{s}");
        }
    }
    assert_eq!(
        v["config_file"],
        state.path().join("webui.toml").to_str().unwrap()
    );
    assert_eq!(v["state_dir"], state.path().to_str().unwrap());

    // The text form shows the same.
    let out = webui::command(state.path())
        .args(["config", "show", "--listen", "127.0.0.1:8443"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{key} ")))
            .unwrap_or_else(|| panic!("no {key} line in\n{text}"))
            .to_string()
    };
    assert!(line("listen").ends_with(" flag"), "{text}");
    assert!(line("max_body").ends_with(" file"), "{text}");
    assert!(line("no_hsts").ends_with(" default"), "{text}");
}

// ---------------------------------------------------------------- init

#[test]
fn config_init_writes_a_commented_file_and_never_overwrites_without_force() {
    let root = webui::state_dir();
    let state = root.path().join("new-state");
    let out = webui::run(&state, &["config", "init"], RUN);
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    let path = state.join("webui.toml");
    assert!(state.is_dir(), "the state directory is created");
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o644);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("# listen = [\":443\"]"), "{text}");
    assert!(text.contains("# max_body = "), "{text}");
    assert!(text.contains("# image = "), "{text}");
    let file = ::webui::config::FileConfig::parse(&text, &path).unwrap();
    assert_eq!(
        file,
        ::webui::config::FileConfig::default(),
        "all commented out"
    );
    ::webui::config::resolve::proxy(&::webui::cli::ProxyArgs::default(), &file).unwrap();
    let v = show_json(webui::command(&state).args(["config", "show", "--json"]));
    assert!(
        v["settings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["source"] == "default"),
        "{v}"
    );

    std::fs::write(&path, "max_body = \"1M\"\n").unwrap();
    let out = webui::run(&state, &["config", "init"], RUN);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("already exists") && out.stderr.contains("--force"),
        "{}",
        out.stderr
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "max_body = \"1M\"\n",
        "left alone"
    );

    let out = webui::run(&state, &["config", "init", "--force"], RUN);
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o644
    );

    // --config names another file.
    let other = root.path().join("etc/webui/webui.toml");
    let out = webui::run(
        &state,
        &["--config", other.to_str().unwrap(), "config", "init"],
        RUN,
    );
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert_eq!(std::fs::read_to_string(&other).unwrap(), text);
}

// ---------------------------------------------------------------- export

#[test]
fn export_without_a_domain_exits_1_with_a_hint() {
    let state = webui::state_dir();
    for server in ["nginx", "apache", "caddy"] {
        let out = webui::run(state.path(), &["config", "export", server], RUN);
        assert_eq!(out.status.code(), Some(1), "{server}: {}", out.stderr);
        assert!(
            out.stderr.contains("error: ")
                && out.stderr.contains("needs a domain")
                && out.stderr.contains("hint: ")
                && out.stderr.contains("--domain chat.example.com"),
            "{server}: {}",
            out.stderr
        );
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn export_reads_the_config_file_and_env() {
    let state = webui::state_dir();
    std::fs::write(
        state.path().join("webui.toml"),
        "domain = [\"chat.example.com\"]\nmax_body = \"1M\"\nport = 4000\n",
    )
    .unwrap();
    let out = webui::command(state.path())
        .args(["config", "export", "nginx"])
        .env("WEBUI_WS_IDLE_TIMEOUT", "2h")
        .output()
        .unwrap();
    assert!(out.status.success());
    let c = String::from_utf8_lossy(&out.stdout);
    assert!(c.contains("server_name chat.example.com;"), "{c}");
    assert!(c.contains("client_max_body_size 1048576;"), "{c}");
    assert!(c.contains("proxy_read_timeout 7200s;"), "{c}");
    assert!(c.contains("server 127.0.0.1:4000;"), "{c}");
    assert!(
        c.contains("/etc/letsencrypt/live/chat.example.com/fullchain.pem"),
        "{c}"
    );
}

#[test]
fn exported_configs_pass_each_servers_own_check() {
    let state = webui::state_dir();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = cert_for_name(dir.path());
    let d = dir.path();

    if let Some(nginx) = require("nginx", "nginx") {
        for extra in [
            &[][..],
            &[
                "--max-body",
                "100M",
                "--trusted-proxy",
                "10.0.0.0/8",
                "--no-hsts",
            ][..],
            &["--no-http", "--listen", "127.0.0.1:8443"][..],
        ] {
            let site = d.join("site.nginx");
            std::fs::write(&site, export(state.path(), "nginx", &cert, &key, extra)).unwrap();
            let conf = nginx_wrapper(d, &site);
            check(
                nginx_cmd(&nginx, d, &conf).arg("-t"),
                &format!("nginx -t ({extra:?})"),
            );
        }
    }
    if let Some(apache) = require("apache2", "apache2") {
        for extra in [
            &[][..],
            &[
                "--max-body",
                "100M",
                "--trusted-proxy",
                "10.0.0.0/8",
                "--no-hsts",
            ][..],
            &["--no-http", "--listen", "127.0.0.1:8443"][..],
        ] {
            let text = export(state.path(), "apache", &cert, &key, extra);
            let site = d.join("site.apache");
            std::fs::write(&site, &text).unwrap();
            let conf = apache_wrapper(d, &site, &text);
            check(
                Command::new(&apache).arg("-t").arg("-f").arg(&conf),
                &format!("apache2 -t ({extra:?})"),
            );
        }
    }
    if let Some(caddy) = require("caddy", "caddy") {
        for extra in [
            &[][..],
            &[
                "--max-body",
                "100M",
                "--trusted-proxy",
                "10.0.0.0/8",
                "--no-hsts",
            ][..],
            &["--no-http", "--listen", "127.0.0.1:8443"][..],
        ] {
            let site = d.join("Caddyfile");
            std::fs::write(&site, export(state.path(), "caddy", &cert, &key, extra)).unwrap();
            check(
                caddy_cmd(
                    &caddy,
                    d,
                    &["validate", "--adapter", "caddyfile", "--config"],
                )
                .arg(&site),
                &format!("caddy validate ({extra:?})"),
            );
        }
        // Caddy managing the certificate itself (no --tls-cert): still valid.
        let out = webui::run(
            state.path(),
            &[
                "config",
                "export",
                "caddy",
                "--domain",
                "chat.example.com",
                "--email",
                "admin@example.com",
            ],
            RUN,
        );
        let site = d.join("Caddyfile.acme");
        std::fs::write(&site, out.stdout).unwrap();
        check(
            caddy_cmd(
                &caddy,
                d,
                &["validate", "--adapter", "caddyfile", "--config"],
            )
            .arg(&site),
            "caddy validate (ACME)",
        );
    }
}

/// Exports for `server` on fresh loopback ports in front of the stand-in; returns the
/// text and the HTTPS and HTTP addresses.
fn export_on_loopback(
    state: &Path,
    server: &str,
    cert: &Path,
    key: &Path,
    upstream: &str,
) -> (String, SocketAddr, SocketAddr) {
    let https: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let text = export(
        state,
        server,
        cert,
        key,
        &[
            "--listen",
            &https.to_string(),
            "--http-listen",
            &http.to_string(),
            "--upstream",
            upstream,
        ],
    );
    (text, https, http)
}

#[tokio::test]
async fn nginx_started_from_the_export_carries_websockets_and_sse() {
    let Some(nginx) = require("nginx", "nginx") else {
        return;
    };
    let up = standin::spawn().await;
    let state = webui::state_dir();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (cert, key) = cert_for_name(d);
    let (text, https, http) = export_on_loopback(state.path(), "nginx", &cert, &key, &up.url(""));
    let site = d.join("site.nginx");
    std::fs::write(&site, text).unwrap();
    let conf = nginx_wrapper(d, &site);
    let server = Server::start(
        "nginx",
        nginx_cmd(&nginx, d, &conf),
        d.join("nginx-error.log"),
        https.port(),
    );
    exercise("nginx", &cert, https, http, true).await;
    drop(server);
}

#[tokio::test]
async fn caddy_started_from_the_export_carries_websockets_and_sse() {
    let Some(caddy) = require("caddy", "caddy") else {
        return;
    };
    let up = standin::spawn().await;
    let state = webui::state_dir();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (cert, key) = cert_for_name(d);
    let (text, https, http) = export_on_loopback(state.path(), "caddy", &cert, &key, &up.url(""));
    let site = d.join("Caddyfile");
    std::fs::write(&site, caddy_for_test(&text)).unwrap();
    let mut cmd = caddy_cmd(&caddy, d, &["run", "--adapter", "caddyfile", "--config"]);
    cmd.arg(&site);
    let server = Server::start("caddy", cmd, d.join("caddy.log"), https.port());
    exercise("caddy", &cert, https, http, true).await;
    drop(server);
}

#[tokio::test]
async fn apache_started_from_the_export_carries_websockets_and_sse() {
    let Some(apache) = require("apache2", "apache2") else {
        return;
    };
    let up = standin::spawn().await;
    let state = webui::state_dir();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Apache's worker runs as `nobody`; it only needs the directory to be reachable.
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (cert, key) = cert_for_name(d);
    let (text, https, http) = export_on_loopback(state.path(), "apache", &cert, &key, &up.url(""));
    let site = d.join("site.apache");
    std::fs::write(&site, &text).unwrap();
    let conf = apache_wrapper(d, &site, &text);
    let mut cmd = Command::new(&apache);
    // -X: one process in the foreground.
    cmd.arg("-X").arg("-f").arg(&conf);
    let server = Server::start("apache", cmd, d.join("apache-error.log"), https.port());
    exercise("apache", &cert, https, http, false).await;
    drop(server);
}
