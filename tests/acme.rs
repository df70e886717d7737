//! Certificates from a real ACME server (pebble) through `webui proxy --domain`.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::pebble::{Pebble, free_port};
use support::standin;
use support::webui::{self, Webui};

/// Handshakes with `addr` for `name`, trusting only the PEM roots given; returns the
/// served leaf certificate when it verifies.
async fn served_leaf(addr: SocketAddr, name: &str, roots_pem: &[u8]) -> Option<Vec<u8>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::pem::PemObject::pem_slice_iter(roots_pem) {
        let c: rustls_pki_types::CertificateDer = c.ok()?;
        roots.add(c).ok()?;
    }
    let mut cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let server_name = rustls_pki_types::ServerName::try_from(name.to_string()).ok()?;
    let tls = tokio::time::timeout(Duration::from_secs(5), connector.connect(server_name, tcp))
        .await
        .ok()?
        .ok()?;
    let leaf = tls.get_ref().1.peer_certificates()?.first()?.to_vec();
    Some(leaf)
}

/// Waits until the proxy serves a certificate for `name` that chains to `roots_pem`.
async fn wait_for_issued(p: &Webui, name: &str, roots_pem: &[u8], timeout: Duration) -> Vec<u8> {
    let start = Instant::now();
    loop {
        if let Some(leaf) = served_leaf(p.https[0], name, roots_pem).await {
            return leaf;
        }
        if start.elapsed() > timeout {
            panic!(
                "no certificate for {name} within {timeout:?}; webui said:\n{}",
                p.output_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A client TLS config trusting `root_pem` only, and the file holding it.
fn trusting(root_pem: &str) -> (tempfile::NamedTempFile, rustls::ClientConfig) {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut file, root_pem.as_bytes()).unwrap();
    let tls = webui::client_tls(&[file.path()], &[b"http/1.1"]);
    (file, tls)
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// A websocket to the stand-in's echo through the proxy, verified for `domain`.
async fn wss(p: &Webui, domain: &str, tls: &rustls::ClientConfig) -> Ws {
    let tcp = tokio::net::TcpStream::connect(p.https[0]).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from(domain.to_string()).unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls.clone()))
        .connect(name, tcp)
        .await
        .unwrap();
    let url = format!("wss://{domain}:{}/ws", p.https[0].port());
    tokio_tungstenite::client_async(url, stream)
        .await
        .unwrap()
        .0
}

fn acme_proxy(
    state: &Path,
    upstream: &str,
    pebble: &Pebble,
    https: u16,
    http: u16,
    domain: &str,
    extra: &[&str],
) -> Webui {
    let listen = format!("127.0.0.1:{https}");
    let http_listen = format!("127.0.0.1:{http}");
    let ca = pebble.listener_ca.to_str().unwrap().to_string();
    let mut args = vec![
        "proxy",
        "--upstream",
        upstream,
        "--listen",
        &listen,
        "--http-listen",
        &http_listen,
        "--domain",
        domain,
        "--acme-directory",
        &pebble.directory,
        "--acme-ca",
        &ca,
        "--email",
        "admin@webui.test",
    ];
    args.extend_from_slice(extra);
    Webui::start(state, &args, Duration::from_secs(20))
}

#[tokio::test]
async fn http01_issues_a_certificate_and_a_restart_reuses_it() {
    let (https, http) = (free_port(), free_port());
    let Some(pebble) = Pebble::start(http, https) else {
        return;
    };
    let up = standin::spawn().await;
    let state = webui::state_dir();
    let domain = "chat-http.webui.test";
    let mut p = acme_proxy(
        state.path(),
        &up.url(""),
        &pebble,
        https,
        http,
        domain,
        &["--challenge", "http-01", "--skip-preflight"],
    );
    let root = pebble.root_pem().await;
    let leaf = wait_for_issued(&p, domain, root.as_bytes(), Duration::from_secs(60)).await;
    assert!(p.wait_for_output("answered HTTP-01 challenge", Duration::from_secs(1)));

    // Through the issued certificate, the site works.
    let (_roots, tls) = trusting(&root);
    let c = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .resolve(domain, p.https[0])
        .build()
        .unwrap();
    let res = c
        .get(format!("https://{domain}:{https}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // Secrets on disk are private.
    use std::os::unix::fs::PermissionsExt;
    for f in std::fs::read_dir(state.path().join("acme"))
        .unwrap()
        .flatten()
    {
        assert_eq!(
            f.metadata().unwrap().permissions().mode() & 0o777,
            0o600,
            "{:?}",
            f.path()
        );
    }
    let key = state.path().join("certs").join(domain).join("privkey.pem");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let out = webui::run(
        state.path(),
        &["cert", "status", "--json"],
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let c = &v["certificates"][0];
    assert_eq!(c["name"], domain);
    assert!(c["issuer"].as_str().unwrap().contains("Pebble"), "{c}");
    assert!(c["days_left"].as_i64().unwrap() >= 0);
    assert!(
        c["next_renewal"].is_string() && c["last_error"].is_null(),
        "{c}"
    );

    p.signal("TERM");
    assert_eq!(
        p.wait(Duration::from_secs(15)).and_then(|s| s.code()),
        Some(0)
    );
    let p = acme_proxy(
        state.path(),
        &up.url(""),
        &pebble,
        https,
        http,
        domain,
        &["--challenge", "http-01", "--skip-preflight"],
    );
    let again = served_leaf(p.https[0], domain, root.as_bytes()).await;
    assert_eq!(
        again.as_deref(),
        Some(leaf.as_slice()),
        "the stored certificate is served at once after a restart"
    );
    assert!(p.output_text().contains("serving the stored certificate"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !p.output_text().contains("registered ACME account"),
        "the account is reused"
    );
}

#[tokio::test]
async fn tls_alpn01_issues_a_certificate_without_port_80() {
    let (https, http) = (free_port(), free_port());
    let Some(pebble) = Pebble::start(http, https) else {
        return;
    };
    let up = standin::spawn().await;
    let state = webui::state_dir();
    let domain = "chat-alpn.webui.test";
    let p = acme_proxy(
        state.path(),
        &up.url(""),
        &pebble,
        https,
        http,
        domain,
        &["--challenge", "tls-alpn-01", "--skip-preflight"],
    );
    let root = pebble.root_pem().await;
    wait_for_issued(&p, domain, root.as_bytes(), Duration::from_secs(60)).await;
    assert!(p.output_text().contains("answered TLS-ALPN-01 challenge"));
    assert!(!p.output_text().contains("answered HTTP-01 challenge"));
}

#[tokio::test]
async fn a_failing_challenge_keeps_serving_and_says_why() {
    let (https, http) = (free_port(), free_port());
    // Pebble validates HTTP-01 on a port where nothing listens.
    let Some(pebble) = Pebble::start(free_port(), https) else {
        return;
    };
    let up = standin::spawn().await;
    let state = webui::state_dir();
    let domain = "chat-fail.webui.test";
    let (hook, posted) = support::webhook::start();
    let hook_file = state.path().join("notify.url");
    std::fs::write(&hook_file, &hook).unwrap();
    let p = acme_proxy(
        state.path(),
        &up.url(""),
        &pebble,
        https,
        http,
        domain,
        &[
            "--challenge",
            "http-01",
            "--skip-preflight",
            "--notify-url-file",
            hook_file.to_str().unwrap(),
        ],
    );
    assert!(
        p.wait_for_output(
            "certificate order for chat-fail.webui.test failed",
            Duration::from_secs(60)
        ),
        "the failure is logged:\n{}",
        p.output_text()
    );
    let out = p.output_text();
    assert!(
        out.contains("retrying in 1m"),
        "backoff is announced:\n{out}"
    );
    assert!(
        support::webhook::heard(
            &posted,
            "the certificate order for chat-fail.webui.test failed",
            Duration::from_secs(10)
        ),
        "the webhook heard of it: {:?}",
        posted.lock().unwrap()
    );
    assert!(
        out.contains("connection refused")
            || out.contains("Connection refused")
            || out.contains("connection"),
        "{out}"
    );
    // The site still serves, with the temporary certificate from the local CA.
    let ca = std::fs::read(webui::local_ca(state.path())).unwrap();
    assert!(served_leaf(p.https[0], domain, &ca).await.is_some());
    let status: serde_json::Value = serde_json::from_slice(
        &std::fs::read(state.path().join("certs").join(domain).join("status.json")).unwrap(),
    )
    .unwrap();
    assert!(
        status["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{status}"
    );
    assert!(status["next_try"].as_str().is_some(), "{status}");
    let out = webui::run(state.path(), &["cert", "status"], Duration::from_secs(10));
    assert_eq!(
        out.status.code(),
        Some(3),
        "a failing certificate is reported as unhealthy"
    );
    assert!(
        out.stdout.contains("last error:") && out.stdout.contains("next try:"),
        "{}",
        out.stdout
    );
}

#[test]
fn invalid_domains_and_failed_preflight_exit_1_without_ordering() {
    let state = webui::state_dir();
    for (domain, needle) in [
        ("https://chat.example.com/", "--domain chat.example.com"),
        ("chat.example.com:8443", "has a port"),
        ("203.0.113.9", "IP address"),
        ("*.example.com", "wildcard"),
    ] {
        let out = webui::run(
            state.path(),
            &[
                "proxy",
                "--upstream",
                "http://127.0.0.1:9",
                "--listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
                "--domain",
                domain,
            ],
            Duration::from_secs(20),
        );
        assert_eq!(out.status.code(), Some(1), "{domain}: {}", out.stderr);
        assert!(out.stderr.contains(needle), "{domain}: {}", out.stderr);
    }
    // A name that does not resolve: the preflight says so before any order.
    let out = webui::run(
        state.path(),
        &[
            "proxy",
            "--upstream",
            "http://127.0.0.1:9",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--domain",
            "nowhere.invalid",
            "--acme-directory",
            "https://127.0.0.1:9/dir",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("DNS: nowhere.invalid does not resolve"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("hint: create an A"), "{}", out.stderr);
    assert!(
        !state.path().join("acme").exists(),
        "no account was registered"
    );
}

#[tokio::test]
async fn renewal_by_lifetime_swaps_the_certificate_without_dropping_anyone() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let (https, http) = (free_port(), free_port());
    // 18-second certificates: renewal is due when a third (6 s) remains.
    let Some(pebble) = Pebble::start_with_validity(http, https, Some(18)) else {
        return;
    };
    let up = standin::spawn().await;
    let state = webui::state_dir();
    let domain = "chat-renew.webui.test";
    let p = acme_proxy(
        state.path(),
        &up.url(""),
        &pebble,
        https,
        http,
        domain,
        &["--challenge", "http-01", "--skip-preflight"],
    );
    let root = pebble.root_pem().await;
    let first = wait_for_issued(&p, domain, root.as_bytes(), Duration::from_secs(60)).await;

    let (_roots, tls) = trusting(&root);

    // A websocket and an SSE stream opened on the first certificate.
    let mut ws = wss(&p, domain, &tls).await;
    let stream_client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls.clone())
        .resolve(domain, p.https[0])
        .build()
        .unwrap();
    let sse = stream_client
        .get(format!(
            "https://{domain}:{https}/sse?n=150&interval_ms=200"
        ))
        .send()
        .await
        .unwrap();
    let sse_reader = tokio::spawn(async move {
        let mut bytes = 0usize;
        let mut s = sse.bytes_stream();
        while let Some(c) = s.next().await {
            bytes += c.unwrap().len();
        }
        bytes
    });

    // A steady client, new connection (and handshake) for every request.
    let steady_tls = tls.clone();
    let steady = tokio::spawn(async move {
        let (mut ok, mut failed) = (0u32, 0u32);
        let until = Instant::now() + Duration::from_secs(25);
        while Instant::now() < until {
            let c = reqwest::Client::builder()
                .tls_backend_preconfigured(steady_tls.clone())
                .resolve(domain, SocketAddr::from(([127, 0, 0, 1], https)))
                .build()
                .unwrap();
            match c
                .get(format!("https://{domain}:{https}/health"))
                .send()
                .await
            {
                Ok(r) if r.status() == 200 => ok += 1,
                _ => failed += 1,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (ok, failed)
    });

    let start = Instant::now();
    let renewed = loop {
        if let Some(leaf) = served_leaf(p.https[0], domain, root.as_bytes()).await
            && leaf != first
        {
            break leaf;
        }
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "no renewal; webui said:\n{}",
            p.output_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_ne!(renewed, first);

    // The connections opened before the swap still work.
    ws.send(Message::text("after renewal")).await.unwrap();
    let echo = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echo, Message::text("after renewal"));
    let (ok, failed) = steady.await.unwrap();
    assert_eq!(
        failed, 0,
        "no request failed during renewal ({ok} succeeded)"
    );
    assert!(ok > 50);
    let sse_bytes = sse_reader.await.unwrap();
    assert!(
        sse_bytes > 150 * 20,
        "the SSE stream ran to its end across the swap ({sse_bytes} bytes)"
    );
}

#[tokio::test]
async fn ca_unreachable_at_start_serves_the_local_ca_then_switches_when_it_is_back() {
    let (https, http, acme) = (free_port(), free_port(), free_port());
    if !support::pebble::available() {
        return;
    }
    let up = standin::spawn().await;
    let state = webui::state_dir();
    let domain = "chat-later.webui.test";
    let ca = std::env::var("WEBUI_TEST_PEBBLE_LISTENER_CA")
        .unwrap_or_else(|_| "/var/lib/webui-ci/pebble/ca.pem".into());
    let listen = format!("127.0.0.1:{https}");
    let http_listen = format!("127.0.0.1:{http}");
    let directory = Pebble::directory_on(acme);
    let p = Webui::start(
        state.path(),
        &[
            "proxy",
            "--upstream",
            &up.url(""),
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
    assert!(
        p.wait_for_output(
            "certificate order for chat-later.webui.test failed",
            Duration::from_secs(30)
        ),
        "{}",
        p.output_text()
    );
    let local = std::fs::read(webui::local_ca(state.path())).unwrap();
    assert!(
        served_leaf(p.https[0], domain, &local).await.is_some(),
        "the site serves meanwhile"
    );

    // The CA comes back; the next try (one minute after the failure) gets the certificate.
    let Some(pebble) = Pebble::start_full(http, https, None, acme) else {
        return;
    };
    let root = pebble.root_pem().await;
    wait_for_issued(&p, domain, root.as_bytes(), Duration::from_secs(100)).await;
}

#[tokio::test]
async fn cert_renew_force_swaps_the_certificate_while_a_websocket_stays_open() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let (https, http) = (free_port(), free_port());
    let Some(pebble) = Pebble::start(http, https) else {
        return;
    };
    let up = standin::spawn().await;
    let state = webui::state_dir();
    let domain = "chat-force.webui.test";
    let p = acme_proxy(
        state.path(),
        &up.url(""),
        &pebble,
        https,
        http,
        domain,
        &["--challenge", "http-01", "--skip-preflight"],
    );
    let root = pebble.root_pem().await;
    let first = wait_for_issued(&p, domain, root.as_bytes(), Duration::from_secs(60)).await;

    let (_roots, tls) = trusting(&root);
    let mut ws = wss(&p, domain, &tls).await;

    let out = webui::run(
        state.path(),
        &["cert", "renew", "--force"],
        Duration::from_secs(90),
    );
    assert_eq!(out.status.code(), Some(0), "{}\n{}", out.stdout, out.stderr);
    let again = served_leaf(p.https[0], domain, root.as_bytes())
        .await
        .unwrap();
    assert_ne!(
        again, first,
        "a new certificate is served after `cert renew --force`"
    );
    ws.send(Message::text("still open")).await.unwrap();
    let echo = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echo, Message::text("still open"));
}
