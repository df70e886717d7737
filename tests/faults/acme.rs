//! Rows against pebble, through a small fault-injecting forwarder in front of it:
//! certificate renewal with 500 WebSockets open, the CA unreachable, answering
//! rate-limited, answering badNonce; and the state dir full or read-only.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::common::{Row, Sockets, Steady, Target};
use crate::support::pebble::{Pebble, free_port};
use crate::support::standin;
use crate::support::webui::{self, Webui};

type Rows = Vec<Result<Row, (String, String)>>;

const PASS: u32 = 0;
const RATE_LIMITED: u32 = 2;
/// From BAD_NONCE up: answer badNonce to the next `mode - BAD_NONCE` POSTs.
const BAD_NONCE: u32 = 100;

/// Forwards ACME requests to pebble, rewriting pebble's address in every answer to
/// its own so the client keeps coming back through it; a mode makes it misbehave.
struct Forwarder {
    port: u16,
    mode: Arc<AtomicU32>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    pebble: SocketAddr,
    new_order: String,
}

impl Forwarder {
    async fn start(pebble: &Pebble) -> Forwarder {
        let pebble_addr: SocketAddr = pebble
            .directory
            .trim_start_matches("https://")
            .trim_end_matches("/dir")
            .parse()
            .unwrap();
        let dir: serde_json::Value = reqwest_to(pebble)
            .get(&pebble.directory)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let new_order = dir["newOrder"]
            .as_str()
            .unwrap()
            .replace(&format!("https://{pebble_addr}"), "");
        let f = Forwarder {
            port: free_port(),
            mode: Arc::new(AtomicU32::new(PASS)),
            task: std::sync::Mutex::new(None),
            pebble: pebble_addr,
            new_order,
        };
        f.listen(pebble).await;
        f
    }

    fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    fn set(&self, mode: u32) {
        self.mode.store(mode, Ordering::SeqCst);
    }

    /// Unreachable: the port is closed (connection refused).
    fn down(&self) {
        if let Some(t) = self.task.lock().unwrap().take() {
            t.abort();
        }
    }

    async fn listen(&self, pebble: &Pebble) {
        let var = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
        let cert = std::fs::read(var(
            "WEBUI_TEST_PEBBLE_LISTENER_CERT",
            "/var/lib/webui-ci/pebble/localhost.pem",
        ))
        .unwrap();
        let key = std::fs::read(var(
            "WEBUI_TEST_PEBBLE_LISTENER_KEY",
            "/var/lib/webui-ci/pebble/localhost.key",
        ))
        .unwrap();
        use rustls_pki_types::pem::PemObject;
        let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_slice_iter(&cert)
            .map(|c| c.unwrap())
            .collect();
        let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(&key).unwrap();
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tls = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = loop {
            // The port was just released by `down`; rebinding may take a moment.
            match tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let (mode, client) = (self.mode.clone(), reqwest_to(pebble));
        let (from, to) = (self.pebble.to_string(), format!("127.0.0.1:{}", self.port));
        let new_order = self.new_order.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, mode, client) = (acceptor.clone(), mode.clone(), client.clone());
                let (from, to, new_order) = (from.clone(), to.clone(), new_order.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                        let (mode, client) = (mode.clone(), client.clone());
                        let (from, to, new_order) = (from.clone(), to.clone(), new_order.clone());
                        async move {
                            Ok::<_, std::convert::Infallible>(
                                forward(req, &mode, &client, &from, &to, &new_order).await,
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        *self.task.lock().unwrap() = Some(task);
    }
}

fn reqwest_to(pebble: &Pebble) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(webui::client_tls(&[&pebble.listener_ca], &[b"http/1.1"]))
        .build()
        .unwrap()
}

fn problem(status: u16, kind: &str, detail: &str) -> hyper::Response<Full<bytes::Bytes>> {
    let body = serde_json::json!({
        "type": format!("urn:ietf:params:acme:error:{kind}"),
        "detail": detail,
        "status": status,
    });
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/problem+json")
        // No Replay-Nonce: the client fetches a fresh one from pebble's newNonce.
        .header("retry-after", "3600")
        .body(Full::new(body.to_string().into()))
        .unwrap()
}

async fn forward(
    req: hyper::Request<Incoming>,
    mode: &AtomicU32,
    client: &reqwest::Client,
    from: &str,
    to: &str,
    new_order: &str,
) -> hyper::Response<Full<bytes::Bytes>> {
    let post = req.method() == hyper::Method::POST;
    let path = req.uri().path().to_string();
    let m = mode.load(Ordering::SeqCst);
    if post && m == RATE_LIMITED && path == new_order {
        return problem(
            429,
            "rateLimited",
            "too many certificates already issued for this name (fault injected)",
        );
    }
    if post && m > BAD_NONCE {
        mode.fetch_sub(1, Ordering::SeqCst);
        return problem(
            400,
            "badNonce",
            "JWS has an invalid anti-replay nonce (fault injected)",
        );
    }
    let pq = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let method = req.method().clone();
    let ct = req.headers().get("content-type").cloned();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    // Pebble builds its URLs, and checks each JWS `url`, from the Host header: the
    // forwarder's own address keeps every URL pointing back through it.
    let mut out = client
        .request(method, format!("https://{from}{pq}"))
        .header("host", to)
        .body(body);
    if let Some(ct) = ct {
        out = out.header("content-type", ct);
    }
    let Ok(res) = out.send().await else {
        return problem(500, "serverInternal", "pebble did not answer the forwarder");
    };
    let mut b = hyper::Response::builder().status(res.status().as_u16());
    for (k, v) in res.headers() {
        if matches!(
            k.as_str(),
            "content-length" | "transfer-encoding" | "connection"
        ) {
            continue;
        }
        let v = v.to_str().unwrap_or_default().replace(from, to);
        b = b.header(k.as_str(), v);
    }
    let body = res.bytes().await.unwrap_or_default();
    let body = String::from_utf8_lossy(&body).replace(from, to);
    b.body(Full::new(body.into())).unwrap()
}

/// The leaf certificate the proxy serves for `name`, verified against `root`.
async fn served_leaf(t: &Target) -> Option<Vec<u8>> {
    let tcp = tokio::net::TcpStream::connect(t.addr).await.ok()?;
    let name = rustls_pki_types::ServerName::try_from(t.host.clone()).ok()?;
    // A full handshake: a resumed session would show the certificate it began with.
    let mut cfg = t.tls.clone();
    cfg.resumption = rustls::client::Resumption::disabled();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let s = tokio::time::timeout(Duration::from_secs(5), tls.connect(name, tcp))
        .await
        .ok()?
        .ok()?;
    Some(s.get_ref().1.peer_certificates()?.first()?.to_vec())
}

async fn wait_issued(t: &Target, p: &Webui) -> Vec<u8> {
    let start = Instant::now();
    loop {
        if let Some(l) = served_leaf(t).await {
            return l;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no certificate from pebble:\n{}",
            p.output_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn renew(state: &Path, wait: &'static str) -> webui::Finished {
    let state = state.to_path_buf();
    tokio::task::spawn_blocking(move || {
        webui::run(
            &state,
            &["cert", "renew", "--force", "--timeout", wait],
            Duration::from_secs(60),
        )
    })
    .await
    .expect("cert renew")
}

fn status(state: &Path, domain: &str) -> serde_json::Value {
    let f = state.join("certs").join(domain).join("status.json");
    serde_json::from_slice(&std::fs::read(f).unwrap_or_default()).unwrap_or_default()
}

fn ts(v: &serde_json::Value) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(v.as_str()?, &time::format_description::well_known::Rfc3339).ok()
}

/// Seconds from the last error to the next try recorded in status.json.
fn backoff_secs(state: &Path, domain: &str) -> i64 {
    let s = status(state, domain);
    match (ts(&s["last_error_at"]), ts(&s["next_try"])) {
        (Some(a), Some(b)) => (b - a).whole_seconds(),
        _ => -1,
    }
}

/// A proxy with an ACME certificate from pebble through `directory`.
struct Site {
    _upstream: standin::Standin,
    _pebble: Pebble,
    proxy: Webui,
    target: Target,
    _root: tempfile::NamedTempFile,
    root_pem: String,
}

async fn site(state: &Path, domain: &str, forwarder: bool) -> (Site, Option<Forwarder>) {
    let (https, http) = (free_port(), free_port());
    let pebble = Pebble::start(http, https).expect("pebble");
    let fwd = if forwarder {
        Some(Forwarder::start(&pebble).await)
    } else {
        None
    };
    let directory = fwd
        .as_ref()
        .map_or(pebble.directory.clone(), |f| f.directory());
    let up = standin::spawn().await;
    let (listen, http_listen) = (format!("127.0.0.1:{https}"), format!("127.0.0.1:{http}"));
    let ca = pebble.listener_ca.to_str().unwrap().to_string();
    let upstream = up.url("");
    let proxy = Webui::start(
        state,
        &[
            "proxy",
            "--upstream",
            &upstream,
            "--listen",
            &listen,
            "--http-listen",
            &http_listen,
            "--domain",
            domain,
            "--acme-directory",
            &directory,
            "--acme-ca",
            &ca,
            "--challenge",
            "http-01",
            "--skip-preflight",
        ],
        Duration::from_secs(20),
    );
    let root_pem = pebble.root_pem().await;
    let mut root = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut root, root_pem.as_bytes()).unwrap();
    // No session resumption: every new connection sees the certificate served now.
    let mut tls = webui::client_tls(&[root.path()], &[b"http/1.1"]);
    tls.resumption = rustls::client::Resumption::disabled();
    let target = Target {
        tls,
        host: domain.to_string(),
        addr: proxy.https[0],
    };
    wait_issued(&target, &proxy).await;
    let s = Site {
        _upstream: up,
        _pebble: pebble,
        proxy,
        target,
        _root: root,
        root_pem,
    };
    (s, fwd)
}

pub async fn rows() -> Rows {
    if !crate::support::pebble::available() {
        return vec![];
    }
    let mut out = crate::common::row_task("ACME CA rows", ca_rows()).await;
    out.extend(
        crate::common::row_task("state dir full, then read-only", async {
            vec![
                state_dir_full()
                    .await
                    .map_err(|e| ("state dir full, then read-only".to_string(), e)),
            ]
        })
        .await,
    );
    out
}

/// One forced renewal; the served leaf before and after, and `cert renew`'s result.
async fn forced(s: &Site, state: &Path, wait: &'static str) -> (Vec<u8>, webui::Finished, Vec<u8>) {
    let before = served_leaf(&s.target).await.unwrap_or_default();
    let f = renew(state, wait).await;
    let after = served_leaf(&s.target).await.unwrap_or_default();
    (before, f, after)
}

async fn ca_rows() -> Rows {
    let state = webui::state_dir();
    let domain = "chat-faults.webui.test";
    let (s, fwd) = site(state.path(), domain, true).await;
    let fwd = fwd.unwrap();
    let t = &s.target;
    let mut out = Vec::new();

    // Renewal with 500 websockets open and a client making a new connection (and TLS
    // handshake) for every request.
    let name = "certificate renewal (`cert renew --force`), 500 websockets open";
    let mut sockets = Sockets::open(t, 500).await;
    let mut steady = Steady::start(t, "/health", true);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (before, f, after) = forced(&s, state.path(), "30s").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let echoed = sockets.echoing("after renewal").await;
    steady.stop().await;
    out.push(
        if f.status.success() && before != after && echoed == 500 && steady.failed() == 0 {
            Ok(Row::new(name).counts(&steady).note(
                "a new certificate is served; all 500 websockets opened before it still echo; every request made its own TLS handshake",
            ))
        } else {
            Err((
                name.to_string(),
                format!(
                    "renew exit {:?} ({}), new cert {}, echoed {echoed}/500, failed {} ({})",
                    f.status.code(),
                    f.stderr.trim(),
                    before != after,
                    steady.failed(),
                    steady.failures()
                ),
            ))
        },
    );
    drop(sockets);

    // Each CA fault: the forced order fails and says so, the next try is backed off,
    // the site keeps serving the certificate it has; then the CA is healthy again and
    // the next order succeeds.
    type Inject = Box<dyn Fn(&Forwarder) + Send + Sync>;
    let faults: [(&str, Inject, Inject, i64, &str); 3] = [
        (
            "ACME CA unreachable (connection refused)",
            Box::new(|f: &Forwarder| f.down()),
            Box::new(|_: &Forwarder| {}),
            60,
            "",
        ),
        (
            "ACME CA answers 429 rateLimited",
            Box::new(|f: &Forwarder| f.set(RATE_LIMITED)),
            Box::new(|f: &Forwarder| f.set(PASS)),
            3600,
            "rateLimited",
        ),
        (
            "ACME CA answers badNonce to every request",
            Box::new(|f: &Forwarder| f.set(BAD_NONCE + 1_000_000)),
            // Two more: the ACME client retries a badNonce with the fresh nonce.
            Box::new(|f: &Forwarder| f.set(BAD_NONCE + 2)),
            60,
            "badNonce",
        ),
    ];
    for (name, inject, heal, min_backoff, says) in faults {
        let mut steady = Steady::start(t, "/health", true);
        tokio::time::sleep(Duration::from_millis(300)).await;
        inject(&fwd);
        let (before, failed, during) = forced(&s, state.path(), "30s").await;
        let backoff = backoff_secs(state.path(), domain);
        let last_error = status(state.path(), domain)["last_error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let healed_at = Instant::now();
        heal(&fwd);
        if name.contains("unreachable") {
            fwd.listen(&s._pebble).await;
        }
        let (_, renewed, after) = forced(&s, state.path(), "30s").await;
        let recovery = healed_at.elapsed();
        tokio::time::sleep(Duration::from_millis(300)).await;
        steady.stop().await;
        let ok = !failed.status.success()
            && failed.stderr.contains("the order failed")
            && last_error.contains(says)
            && backoff >= min_backoff - 2
            && before == during
            && renewed.status.success()
            && after != during
            && steady.failed() == 0;
        out.push(if ok {
            Ok(Row::new(name).counts(&steady).recovery(Some(recovery)).note(format!(
                "the forced order fails and says so (`cert renew` exit {}), next try backed off {} min; the certificate it had kept serving; recovery = `cert renew --force` once the CA is healthy{}",
                failed.status.code().unwrap_or(-1),
                (backoff + 30) / 60,
                if name.contains("badNonce") {
                    " (2 more badNonce answers on the way, retried by the ACME client)"
                } else {
                    ""
                }
            )))
        } else {
            Err((
                name.to_string(),
                format!(
                    "backoff {backoff} s; kept cert {}; new cert after {}; steady failures {}; renew during fault: exit {:?} {:?}; last_error {last_error:?}; renew after: exit {:?} {:?}",
                    before == during,
                    after != during,
                    steady.failures(),
                    failed.status.code(),
                    failed.stderr.trim(),
                    renewed.status.code(),
                    renewed.stderr.trim(),
                ),
            ))
        });
    }
    let _ = &s.root_pem;
    out
}

/// A small tmpfs mounted for the test and unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let ok = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err("mount -t tmpfs failed (needs root)".into());
        }
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// `dir` made read-only by a read-only bind mount over itself, undone on drop. (The
/// whole state dir cannot be remounted read-only while the running proxy holds its
/// instance lock open for writing.)
struct ReadOnly(std::path::PathBuf);

impl ReadOnly {
    fn bind(dir: &Path) -> ReadOnly {
        let mount = |args: &[&str]| {
            std::process::Command::new("mount")
                .args(args)
                .arg(dir)
                .arg(dir)
                .status()
                .is_ok_and(|s| s.success())
        };
        assert!(mount(&["--bind"]), "mount --bind {dir:?}");
        let ro = ReadOnly(dir.to_path_buf());
        assert!(
            mount(&["-o", "remount,bind,ro"]),
            "remount {dir:?} read-only"
        );
        ro
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fills the filesystem at `dir` with one file until it is full.
fn fill(dir: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join("filler")).unwrap();
    let block = vec![0u8; 64 << 10];
    while f.write_all(&block).is_ok() {}
    let _ = f.flush();
    // Whatever the page cache held back.
    while f.write_all(&block[..1]).is_ok() {}
}

async fn state_dir_full() -> Result<Row, String> {
    let fs = match Tmpfs::mount("4m") {
        Ok(fs) => fs,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("skipping the state dir row: {e}");
            return Ok(Row::new("state dir full, then read-only").note(format!("skipped: {e}")));
        }
        Err(e) => return Err(e),
    };
    let state = fs.path().join("state");
    let domain = "chat-full.webui.test";
    let (s, _) = site(&state, domain, false).await;
    let t = &s.target;
    let cert_dir = state.join("certs").join(domain);
    let stored = |f: &str| std::fs::read(cert_dir.join(f)).unwrap_or_default();
    let (chain, key) = (stored("fullchain.pem"), stored("privkey.pem"));

    let mut steady = Steady::start(t, "/health", true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let root = fs.path().to_path_buf();
    tokio::task::spawn_blocking(move || fill(&root))
        .await
        .unwrap();
    // `cert renew` learns of a new certificate from status.json, which cannot be
    // written either: it gives up after 5 s (the log says why).
    let (before, full, after_full) = forced(&s, &state, "5s").await;
    let _ = std::fs::remove_file(fs.path().join("filler"));
    let read_only = ReadOnly::bind(&state.join("certs"));
    let (_, ro, after_ro) = forced(&s, &state, "5s").await;
    drop(read_only);
    let intact = stored("fullchain.pem") == chain && stored("privkey.pem") == key;
    let (_, healed, after_heal) = forced(&s, &state, "30s").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    steady.stop().await;
    let out = s.proxy.output_text();
    let said_full = out.contains("No space left on device");
    let said_ro = out.contains("Read-only file system");
    let exits = (full.status.code(), ro.status.code(), healed.status.code());
    if steady.failed() == 0
        && said_full
        && said_ro
        && intact
        && exits == (Some(1), Some(1), Some(0))
        && before != after_full
        && after_full != after_ro
        && after_ro != after_heal
    {
        Ok(Row::new("state dir full, then read-only")
            .counts(&steady)
            .note(format!(
                "renewals while full / read-only: new certificate served {} / {}, the log names the write error, `cert renew` exits 1 / 1 after its timeout (it reads the result from the same dir); the stored certificate and key stay the last complete pair; writable again: exit {:?}, new certificate {}",
                before != after_full,
                after_full != after_ro,
                healed.status.code().unwrap_or(-1),
                after_ro != after_heal,
            )))
    } else {
        Err(format!(
            "steady failures {} ({}); log says full {said_full}, read-only {said_ro}; stored pair intact {intact}; renew exits {:?} {:?} {:?}: {} | {} | {}",
            steady.failed(),
            steady.failures(),
            full.status.code(),
            ro.status.code(),
            healed.status.code(),
            full.stderr.trim(),
            ro.stderr.trim(),
            healed.stderr.trim()
        ))
    }
}
