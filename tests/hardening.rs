//! Hostile and broken clients against `webui proxy`, and a TLS audit with testssl.sh:
//! each is rejected cleanly, and the proxy keeps serving everyone else.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::standin;
use support::webui::{self, Webui};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn proxy(state: &Path, upstream: &str, extra: &[&str]) -> Webui {
    let mut args = vec![
        "proxy",
        "--upstream",
        upstream,
        "--listen",
        "127.0.0.1:0",
        "--no-http",
    ];
    args.extend_from_slice(extra);
    Webui::start(state, &args, Duration::from_secs(20))
}

async fn tls_conn(p: &Webui, ca: &Path) -> webui::Tls {
    webui::tls_connect(p.https[0], ca, b"http/1.1").await
}

/// Sends raw bytes and reads until the server closes or 5 s pass.
async fn raw(p: &Webui, ca: &Path, bytes: &[u8]) -> String {
    webui::tls_exchange(p.https[0], ca, bytes).await
}

fn status_of(response: &str) -> Option<u16> {
    response.split_whitespace().nth(1)?.parse().ok()
}

async fn still_serves(p: &Webui, ca: &Path) {
    let c = webui::https_client(ca, false);
    let res = c.get(p.https_url("/health")).send().await.unwrap();
    assert_eq!(res.status(), 200, "the proxy keeps serving");
}

#[tokio::test]
async fn hostile_requests_are_rejected_cleanly() {
    let up = standin::spawn().await;
    let state = webui::state_dir();
    let p = proxy(state.path(), &up.url(""), &[]);
    let ca = webui::local_ca(state.path());

    // Oversized head and too many headers: 431, not a crash.
    let big = format!(
        "GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100_000)
    );
    let r = raw(&p, &ca, big.as_bytes()).await;
    assert!(
        matches!(status_of(&r), Some(431) | Some(400)) || r.is_empty(),
        "{r}"
    );
    let mut many = String::from("GET /echo HTTP/1.1\r\nHost: x\r\n");
    for i in 0..300 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let r = raw(&p, &ca, many.as_bytes()).await;
    assert!(
        matches!(status_of(&r), Some(431) | Some(400)) || r.is_empty(),
        "{r}"
    );
    still_serves(&p, &ca).await;

    // Invalid chunked encoding.
    let r = raw(
        &p,
        &ca,
        b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nnot hex\r\n0\r\n\r\n",
    )
    .await;
    assert!(
        !r.contains("200 OK"),
        "a broken chunked body is not accepted: {r}"
    );
    still_serves(&p, &ca).await;

    // Request smuggling: Content-Length and Transfer-Encoding together. Whatever the
    // proxy does, the upstream must never see both framings, and no request hidden in
    // the body may reach it as a request of its own.
    let before = up.requests();
    let r = raw(
        &p,
        &ca,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 45\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\nGET /status/299 HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    if status_of(&r) == Some(200) {
        let body = &r[r.find("\r\n\r\n").unwrap() + 4..];
        let json = body.find('{').map(|i| &body[i..]).unwrap_or(body);
        let end = json.rfind('}').map(|i| &json[..=i]).unwrap_or(json);
        let v: Value = serde_json::from_str(end).unwrap_or(Value::Null);
        let h = &v["headers"];
        assert!(
            !(h.get("content-length").is_some() && h.get("transfer-encoding").is_some()),
            "upstream saw both framings: {h}"
        );
    }
    assert!(
        !r.contains("299"),
        "the smuggled request was not executed: {r}"
    );
    assert!(
        up.requests() - before <= 1,
        "at most the one outer request reached the upstream"
    );
    still_serves(&p, &ca).await;
}

/// Answers `/health` with a fresh client, returning how long it took.
async fn health_time(p: &Webui, ca: &Path, http2: bool) -> Duration {
    let c = webui::https_client(ca, http2);
    let t = Instant::now();
    let res = tokio::time::timeout(
        Duration::from_secs(10),
        c.get(p.https_url("/health")).send(),
    )
    .await
    .expect("answered within 10 s")
    .unwrap();
    assert_eq!(res.status(), 200);
    t.elapsed()
}

/// How many of `conns` (each with when it was opened) the server closed, or answered
/// 408 (hyper may, before closing), by `deadline(opened)`. All are watched at once, so
/// a slow read of one does not eat into another's time.
async fn closed_by_deadline<S: tokio::io::AsyncRead + Unpin>(
    conns: Vec<(Instant, S)>,
    deadline: impl Fn(Instant) -> tokio::time::Instant,
) -> usize {
    let deadline = &deadline;
    futures_util::future::join_all(conns.into_iter().map(|(t, mut s)| async move {
        let mut b = [0u8; 512];
        match tokio::time::timeout_at(deadline(t), s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => true,
            Ok(Ok(n)) => String::from_utf8_lossy(&b[..n]).contains("408"),
            Err(_) => false,
        }
    }))
    .await
    .into_iter()
    .filter(|c| *c)
    .count()
}

/// An HTTP/2 response's status and its body read to the end.
async fn h2_body(res: h2::client::ResponseFuture) -> (u16, String) {
    let res = res.await.expect("response");
    let status = res.status().as_u16();
    let mut body = res.into_body();
    let mut out = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("body");
        let _ = body.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
    }
    (status, String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout_and_a_long_stream_is_not_cut() {
    let up = standin::spawn().await;
    let state = webui::state_dir();
    let p = proxy(state.path(), &up.url(""), &["--idle-timeout", "2s"]);
    let ca = webui::local_ca(state.path());

    // HTTP/1.1 keep-alive: one request, then silence.
    let mut h1 = tls_conn(&p, &ca).await;
    h1.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    h1.flush().await.unwrap();
    let mut b = [0u8; 4096];
    let n = h1.read(&mut b).await.unwrap();
    assert_eq!(status_of(&String::from_utf8_lossy(&b[..n])), Some(200));
    let answered = Instant::now();

    // HTTP/2: one request, then silence; and on a second connection a stream that
    // goes on for 6 s, three times the idle timeout.
    let h2_conn = |tls| async move {
        let (client, conn) = h2::client::handshake(tls).await.unwrap();
        (client, tokio::spawn(conn))
    };
    let (client, idle_conn) = h2_conn(webui::tls_connect(p.https[0], &ca, b"h2").await).await;
    let mut client = client.ready().await.unwrap();
    let req = http::Request::get(p.https_url("/health")).body(()).unwrap();
    let (res, _) = client.send_request(req, true).unwrap();
    assert_eq!(h2_body(res).await.0, 200);
    let (client, streaming_conn) = h2_conn(webui::tls_connect(p.https[0], &ca, b"h2").await).await;
    let mut client = client.ready().await.unwrap();
    let req = http::Request::get(p.https_url("/sse?n=30&interval_ms=200"))
        .body(())
        .unwrap();
    let (res, _) = client.send_request(req, true).unwrap();
    let stream = tokio::spawn(h2_body(res));

    // Open while within the idle timeout.
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), h1.read(&mut b))
            .await
            .is_err(),
        "an HTTP/1.1 connection is kept between requests"
    );
    // Closed within twice the idle timeout of the last request (plus slack).
    let closed =
        tokio::time::timeout_at((answered + Duration::from_secs(6)).into(), h1.read(&mut b)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "an idle HTTP/1.1 connection is closed after --idle-timeout: {closed:?}"
    );
    let ended =
        tokio::time::timeout_at((answered + Duration::from_secs(6)).into(), idle_conn).await;
    assert!(
        ended.is_ok(),
        "an idle HTTP/2 connection is closed after --idle-timeout"
    );
    // The stream outlived the idle timeout and arrived whole.
    let (status, events) = stream.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(events.matches("data: ").count(), 30, "{events}");
    drop(client);
    let _ = tokio::time::timeout(Duration::from_secs(5), streaming_conn).await;
    still_serves(&p, &ca).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_do_not_starve_real_clients() {
    let up = standin::spawn().await;
    let state = webui::state_dir();
    let p = proxy(
        state.path(),
        &up.url(""),
        &["--header-timeout", "10s", "--handshake-timeout", "10s"],
    );
    let ca = webui::local_ca(state.path());
    let addr = p.https[0];

    // 500 connections that never start TLS; 200 that finish the handshake and then
    // say nothing; 1,000 that send half a request line (opened 50 at a time). Each is
    // noted with when it was opened: the timeouts run from there.
    let mut idle = Vec::new();
    for _ in 0..500 {
        let s = tokio::net::TcpStream::connect(addr).await.unwrap();
        idle.push((Instant::now(), s));
    }
    let mut silent = Vec::new();
    while silent.len() < 200 {
        let batch = futures_util::future::join_all(
            (0..50).map(|_| async { (Instant::now(), tls_conn(&p, &ca).await) }),
        )
        .await;
        silent.extend(batch);
    }
    let opened = Instant::now();
    let mut slow = Vec::new();
    while slow.len() < 1000 {
        let batch = futures_util::future::join_all((0..50).map(|_| async {
            let mut s = tls_conn(&p, &ca).await;
            s.write_all(b"GET /health HT").await.unwrap();
            // tokio-rustls may keep a write in its buffer; flush sends it.
            s.flush().await.unwrap();
            (Instant::now(), s)
        }))
        .await;
        slow.extend(batch);
    }
    let opened = opened.elapsed();
    assert!(
        opened < Duration::from_secs(8),
        "1,000 slow connections opened before the header timeout ({opened:?})"
    );
    let last_opened = slow.iter().map(|(t, _)| *t).max().unwrap();

    // A real client is still answered promptly, over and over, on new connections.
    for _ in 0..20 {
        let t = health_time(&p, &ca, false).await;
        assert!(
            t < Duration::from_secs(2),
            "answered within 2 s under slowloris ({t:?})"
        );
    }
    // Trickling a byte does not buy more time: the header timeout is for the whole
    // head. The byte goes out 6 s after the last connection opened, so a timeout that
    // restarted on it would keep every connection open past the deadline below.
    tokio::time::sleep_until((last_opened + Duration::from_secs(6)).into()).await;
    for (_, s) in slow.iter_mut() {
        let _ = s.write_all(b"T").await;
        let _ = s.flush().await;
    }

    // And the slow ones are cut off after the 10 s timeouts, counted from when each
    // was opened (3 s of slack for a loaded machine).
    let deadline = |t: Instant| tokio::time::Instant::from(t + Duration::from_secs(13));
    let closed = closed_by_deadline(idle, deadline).await;
    assert!(
        closed >= 490,
        "idle pre-TLS connections are closed by the handshake timeout ({closed}/500)"
    );
    let closed = closed_by_deadline(silent, deadline).await;
    assert!(
        closed >= 198,
        "connections silent after the TLS handshake are closed by the header timeout ({closed}/200)"
    );
    let closed = closed_by_deadline(slow, deadline).await;
    assert!(
        closed >= 990,
        "half-sent requests are cut off by the header timeout ({closed}/1000)"
    );
    health_time(&p, &ca, false).await;
}

/// HTTP/2 "rapid reset" (CVE-2023-44487): a client opens streams and cancels each at
/// once, so the server starts work it never gets to finish while the client's stream
/// count stays low. The proxy must bound it (hyper/h2 answer GOAWAY
/// ENHANCE_YOUR_CALM past `max_pending_accept_reset_streams`, and the listener caps
/// reset streams per connection) while clients on other connections are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_rapid_reset_is_cut_off_and_others_are_served() {
    let up = standin::spawn().await;
    let state = webui::state_dir();
    let p = proxy(state.path(), &up.url(""), &[]);
    let ca = webui::local_ca(state.path());
    let before = up.requests();

    const STREAMS: usize = 20_000;
    let attack = {
        let tls = webui::tls_connect(p.https[0], &ca, b"h2").await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (client, conn) = h2::client::Builder::new()
            .max_concurrent_reset_streams(STREAMS)
            .handshake::<_, bytes::Bytes>(tls)
            .await
            .unwrap();
        let conn = tokio::spawn(conn);
        let url = p.https_url("/slow?delay_ms=2000");
        tokio::spawn(async move {
            let mut client = client;
            let mut sent = 0usize;
            while sent < STREAMS {
                client = match client.ready().await {
                    Ok(c) => c,
                    Err(_) => break,
                };
                let req = http::Request::get(url.as_str()).body(()).unwrap();
                match client.send_request(req, false) {
                    Ok((res, mut body)) => {
                        body.send_reset(h2::Reason::CANCEL);
                        drop(res);
                        sent += 1;
                    }
                    Err(_) => break,
                }
                if sent.is_multiple_of(100) {
                    tokio::task::yield_now().await;
                }
            }
            let ended = tokio::time::timeout(Duration::from_secs(30), conn).await;
            (sent, ended)
        })
    };

    // Meanwhile clients on their own connections, HTTP/2 and HTTP/1.1, get answers.
    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        slowest = slowest.max(health_time(&p, &ca, i % 2 == 0).await);
    }
    let (sent, ended) = attack.await.unwrap();
    assert!(
        slowest < Duration::from_secs(2),
        "others answered within 2 s during the attack ({slowest:?})"
    );
    // The attacking connection was closed by the server long before its streams ran
    // out, and only a bounded number of its requests reached the upstream.
    let ended = ended.expect("the server closed the attacking connection");
    let err = ended
        .unwrap()
        .expect_err("closed with GOAWAY, not as a clean end");
    assert!(
        err.is_go_away() || err.is_io(),
        "the connection ends with GOAWAY: {err}"
    );
    if let Some(reason) = err.reason() {
        assert_eq!(reason, h2::Reason::ENHANCE_YOUR_CALM, "{err}");
    }
    assert!(
        sent < STREAMS,
        "cut off before all {STREAMS} streams ({sent} sent)"
    );
    let reached = up.requests() - before;
    assert!(
        reached < 2_000,
        "work per attacking connection is bounded: {reached} requests reached the upstream ({sent} streams sent)"
    );
    eprintln!(
        "rapid reset: {sent} streams sent before GOAWAY ({err}); {reached} reached the upstream"
    );
    still_serves(&p, &ca).await;
}

#[tokio::test]
async fn testssl_finds_only_modern_tls_forward_secrecy_and_hsts() {
    if std::process::Command::new("testssl")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "testssl is required in CI (Debian testssl.sh)"
        );
        eprintln!("skipping: testssl not installed (apt-get install testssl.sh)");
        return;
    }
    let up = standin::spawn().await;
    let state = webui::state_dir();
    let p = proxy(state.path(), &up.url(""), &[]);
    let json = state.path().join("testssl.json");
    let target = p.https[0].to_string();
    let out = tokio::task::spawn_blocking({
        let json = json.clone();
        move || {
            std::process::Command::new("testssl")
                .args([
                    "--warnings",
                    "off",
                    "--quiet",
                    "--color",
                    "0",
                    "--ip",
                    "one",
                ])
                .args(["-p", "-s", "-f", "-h", "-U", "--jsonfile"])
                .arg(&json)
                .arg(&target)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let findings: Vec<Value> = serde_json::from_slice(&std::fs::read(&json).unwrap_or_default())
        .unwrap_or_else(|e| {
            panic!(
                "testssl wrote no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
    let get = |id: &str| {
        findings
            .iter()
            .find(|f| f["id"] == id)
            .map(|f| f["finding"].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    for old in ["SSLv2", "SSLv3", "TLS1", "TLS1_1"] {
        assert!(get(old).contains("not offered"), "{old}: {}", get(old));
    }
    assert!(
        get("TLS1_2").starts_with("offered"),
        "TLS 1.2: {}",
        get("TLS1_2")
    );
    assert!(
        get("TLS1_3").starts_with("offered"),
        "TLS 1.3: {}",
        get("TLS1_3")
    );
    assert!(
        get("HSTS_time").contains("365 days"),
        "HSTS: {}",
        get("HSTS_time")
    );
    // No weak cipher class (testssl 3.0 names them cipherlist_*), and forward secrecy.
    for weak in [
        "cipherlist_NULL",
        "cipherlist_aNULL",
        "cipherlist_EXPORT",
        "cipherlist_LOW",
        "cipherlist_3DES_IDEA",
        "cipherlist_AVERAGE",
    ] {
        assert!(get(weak).contains("not offered"), "{weak}: {}", get(weak));
    }
    assert!(get("PFS").starts_with("offered"), "PFS: {}", get("PFS"));
    // Forward secrecy *only*: no TLS 1.2 suite without an ephemeral key exchange is
    // accepted (TLS 1.3 has none). testssl's `-P` would also report "no cipher order
    // configured" as HIGH; that is deliberate: every suite offered is AEAD with
    // forward secrecy, so the client picks (Mozilla's intermediate profile), which
    // lets phones without AES hardware choose ChaCha20. `-P` is therefore not run.
    let cipher_with = |ciphers: &str| -> String {
        let out = std::process::Command::new("openssl")
            .args(["s_client", "-connect", &p.https[0].to_string(), "-tls1_2"])
            .args(["-cipher", ciphers, "-servername", "localhost"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find_map(|l| l.split("Cipher is ").nth(1))
            .unwrap_or("(NONE)")
            .to_string()
    };
    let fs = cipher_with("ECDHE");
    assert!(
        fs.starts_with("ECDHE"),
        "an ECDHE suite is negotiated: {fs}"
    );
    let no_fs = cipher_with("kRSA:kDHr:kDHd:kECDHr:kECDHe:kPSK:aNULL");
    assert_eq!(
        no_fs, "(NONE)",
        "a TLS 1.2 suite without forward secrecy was accepted"
    );
    let bad: Vec<String> = findings
        .iter()
        .filter(|f| {
            matches!(
                f["severity"].as_str(),
                Some("HIGH") | Some("CRITICAL") | Some("MEDIUM")
            )
        })
        .map(|f| format!("{} {}: {}", f["id"], f["severity"], f["finding"]))
        .collect();
    assert!(bad.is_empty(), "testssl findings: {bad:#?}");
}

/// A host whose soft open-file limit is low (1,024 is common; here 256) still takes
/// more clients than that: `webui` raises its soft limit to the hard one at start,
/// where a proxy that does not would fail its accepts with EMFILE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_open_file_limit_does_not_cap_clients() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    use std::os::unix::process::CommandExt;
    const SOFT: u64 = 256;
    const CLIENTS: usize = 600;
    let hard = getrlimit(Resource::Nofile).maximum;
    if hard.is_some_and(|h| h < 2 * CLIENTS as u64) {
        assert!(
            std::env::var_os("CI").is_none(),
            "the hard open-file limit ({hard:?}) is too low for this test"
        );
        eprintln!(
            "skipping: the hard open-file limit ({hard:?}) is below {}",
            2 * CLIENTS
        );
        return;
    }
    let up = standin::spawn().await;
    let state = webui::state_dir();
    let mut cmd = webui::command(state.path());
    cmd.args([
        "proxy",
        "--upstream",
        &up.url(""),
        "--listen",
        "127.0.0.1:0",
        "--no-http",
    ]);
    // SAFETY: only an async-signal-safe system call between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let limit = Rlimit {
                current: Some(SOFT),
                maximum: hard,
            };
            setrlimit(Resource::Nofile, limit).map_err(std::io::Error::from)
        });
    }
    let p = Webui::start_cmd(cmd, Duration::from_secs(20));
    let ca = webui::local_ca(state.path());
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", p.pid())).unwrap();
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_default()
        .to_string();
    // Each client is answered at once (a proxy out of descriptors leaves it waiting
    // until an idle connection times out and frees one).
    let mut held = Vec::new();
    for i in 0..CLIENTS {
        let answered = tokio::time::timeout(Duration::from_secs(5), async {
            let mut c = tls_conn(&p, &ca).await;
            c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                .await?;
            c.flush().await?;
            let mut buf = [0u8; 12];
            c.read_exact(&mut buf).await?;
            std::io::Result::Ok((c, buf))
        })
        .await;
        match answered {
            Ok(Ok((c, buf))) => {
                assert_eq!(&buf, b"HTTP/1.1 200", "client {i}");
                held.push(c);
            }
            Ok(Err(e)) => panic!("client {i}: {e} ({open_files})"),
            Err(_) => panic!("client {i} not answered within 5 s ({open_files})"),
        }
    }
    still_serves(&p, &ca).await;
    drop(held);
}
