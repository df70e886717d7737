//! Real web servers (Debian's nginx, Apache httpd, Caddy) started from
//! `webui config export` in front of an upstream, and the traffic a user of Open WebUI
//! would notice through them (forwarded headers, SSE unbuffered, a socket.io
//! websocket, the HTTP -> HTTPS redirect). Shared by `tests/config_cmd.rs` (in front
//! of the in-process stand-in) and `tests/behind_proxy.rs` (in front of
//! `webui up --behind-proxy`); included with `#[path]` next to `mod support;`.
//! Outside CI a missing server is skipped with a printed reason; with `CI` set it is a
//! failure.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::support::webui;

pub const RUN: Duration = Duration::from_secs(20);
pub const NAME: &str = "chat.webui.test";

// ---------------------------------------------------------------- helpers

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The path of `name` in PATH or the sbin directories, if installed.
pub fn find_bin(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin", "/usr/bin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// The binary, or `None` after printing why the test is skipped. In CI a missing
/// binary fails the test.
pub fn require(name: &str, package: &str) -> Option<PathBuf> {
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
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A self-signed certificate for NAME and its key, as PEM files in `dir`.
pub fn cert_for_name(dir: &Path) -> (PathBuf, PathBuf) {
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
pub fn export(state: &Path, server: &str, cert: &Path, key: &Path, extra: &[&str]) -> String {
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

pub fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// Runs a checking command; panics with its output when it fails.
pub fn check(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} refused the exported configuration:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A started web server, killed on drop.
pub struct Server {
    child: Child,
    name: &'static str,
    log: PathBuf,
}

impl Server {
    pub fn start(name: &'static str, mut cmd: Command, log: PathBuf, port: u16) -> Server {
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

    pub fn logs(&self) -> String {
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

pub fn dir_of(p: &Path) -> &Path {
    p.parent().unwrap()
}

// ---------------------------------------------------------------- wrappers

/// An nginx.conf that includes the site, with every path inside `dir`.
pub fn nginx_wrapper(dir: &Path, site: &Path) -> PathBuf {
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

pub fn nginx_cmd(bin: &Path, dir: &Path, conf: &Path) -> Command {
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
pub const APACHE_MODULES: &str = "/usr/lib/apache2/modules";

/// An apache2.conf that loads the modules the export asks for and includes the site.
pub fn apache_wrapper(dir: &Path, site: &Path, site_text: &str) -> PathBuf {
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
pub fn caddy_for_test(site_text: &str) -> String {
    assert!(
        site_text.contains("\n{\n"),
        "the export starts with a global options block"
    );
    site_text.replacen("\n{\n", "\n{\n\tadmin off\n", 1)
}

pub fn caddy_cmd(bin: &Path, dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin);
    c.args(args)
        .env("HOME", dir)
        .env("XDG_DATA_HOME", dir.join("data"))
        .env("XDG_CONFIG_HOME", dir.join("config"));
    c
}

// ---------------------------------------------------------------- traffic

pub fn tls_client(cert: &Path, http2: bool) -> rustls::ClientConfig {
    let alpn: &[&[u8]] = if http2 {
        &[b"h2", b"http/1.1"]
    } else {
        &[b"http/1.1"]
    };
    webui::client_tls(&[cert], alpn)
}

pub fn https_client(cert: &Path, https: SocketAddr, http2: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .tls_backend_preconfigured(tls_client(cert, http2))
        .resolve(NAME, https)
        .redirect(reqwest::redirect::Policy::none());
    if !http2 {
        b = b.http1_only();
    }
    b.build().unwrap()
}

pub async fn arrivals(res: reqwest::Response) -> Vec<(u64, u64)> {
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
pub fn assert_unbuffered(server: &str, events: &[(u64, u64)], n: usize) {
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
pub async fn exercise(server: &str, cert: &Path, https: SocketAddr, http: SocketAddr, h2: bool) {
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

/// Exports for `server` on fresh loopback ports in front of the stand-in; returns the
/// text and the HTTPS and HTTP addresses.
pub fn export_on_loopback(
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
