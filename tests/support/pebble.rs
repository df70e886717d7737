//! Let's Encrypt's ACME test server (Debian's `pebble`) and its DNS stand-in
//! (`pebble-challtestsrv`, answering 127.0.0.1 for every name) as subprocesses killed on
//! drop, on ports picked per test. Locations come from the env file that
//! `tests/infra/setup.sh` writes; outside CI a missing pebble skips the test.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Pebble {
    children: Vec<Child>,
    pub directory: String,
    /// CA of pebble's own HTTPS listener (for `--acme-ca`).
    pub listener_ca: PathBuf,
    pub management: SocketAddr,
    _dir: tempfile::TempDir,
}

/// A free loopback port for a server the test starts later. Taken from 20000-29999,
/// below the kernel's ephemeral range, so that no outgoing connection or `:0` bind of
/// a parallel test can grab it between this check and the server's bind; an atomic
/// counter keeps the tests of one binary apart.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id() % 600 * 16;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (20000 + (seed + n) % 10000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Pebble's files, or None (with the reason printed) when absent outside CI.
fn files() -> Option<(PathBuf, PathBuf, PathBuf, PathBuf, PathBuf)> {
    let var = |k: &str, default: &str| {
        PathBuf::from(std::env::var(k).unwrap_or_else(|_| default.to_string()))
    };
    let bin = var("WEBUI_TEST_PEBBLE_BIN", "/usr/bin/pebble");
    let dns = var(
        "WEBUI_TEST_CHALLTESTSRV_BIN",
        "/usr/bin/pebble-challtestsrv",
    );
    let dir = "/var/lib/webui-ci/pebble";
    let ca = var("WEBUI_TEST_PEBBLE_LISTENER_CA", &format!("{dir}/ca.pem"));
    let cert = var(
        "WEBUI_TEST_PEBBLE_LISTENER_CERT",
        &format!("{dir}/localhost.pem"),
    );
    let key = var(
        "WEBUI_TEST_PEBBLE_LISTENER_KEY",
        &format!("{dir}/localhost.key"),
    );
    let missing: Vec<_> = [&bin, &dns, &ca, &cert, &key]
        .into_iter()
        .filter(|p| !p.exists())
        .collect();
    if missing.is_empty() {
        return Some((bin, dns, ca, cert, key));
    }
    if std::env::var_os("CI").is_some() {
        panic!("pebble is required in CI but missing: {missing:?} (run tests/infra/setup.sh)");
    }
    eprintln!(
        "skipping: pebble not installed ({missing:?}); `sudo bash tests/infra/setup.sh` installs it"
    );
    None
}

/// True when pebble is installed (outside CI a missing one prints why and skips).
pub fn available() -> bool {
    files().is_some()
}

impl Pebble {
    /// Starts pebble validating HTTP-01 on `http_port` and TLS-ALPN-01 on `tls_port`
    /// of 127.0.0.1. Returns None when pebble is not installed (outside CI only).
    pub fn start(http_port: u16, tls_port: u16) -> Option<Pebble> {
        Self::start_with_validity(http_port, tls_port, None)
    }

    /// Like [`Pebble::start`], issuing certificates valid for `validity_secs`.
    pub fn start_with_validity(
        http_port: u16,
        tls_port: u16,
        validity_secs: Option<u64>,
    ) -> Option<Pebble> {
        Self::start_full(http_port, tls_port, validity_secs, free_port())
    }

    /// The ACME directory URL pebble will have when started on `acme_port`.
    pub fn directory_on(acme_port: u16) -> String {
        format!("https://127.0.0.1:{acme_port}/dir")
    }

    /// Like [`Pebble::start`], with the ACME API on `acme_port` (e.g. one a client
    /// was already pointed at while nothing listened there).
    pub fn start_full(
        http_port: u16,
        tls_port: u16,
        validity_secs: Option<u64>,
        acme_port: u16,
    ) -> Option<Pebble> {
        let (bin, dns_bin, ca, cert, key) = files()?;
        let dir = tempfile::tempdir().unwrap();
        let dns_port = free_port();
        let dns_mgmt = free_port();
        let mgmt_port = free_port();
        let dns = challtestsrv(&dns_bin, dns_port, dns_mgmt);
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{acme_port}"),
                "managementListenAddress": format!("127.0.0.1:{mgmt_port}"),
                "certificate": cert,
                "privateKey": key,
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false
            }
        });
        let mut config = config;
        if let Some(v) = validity_secs {
            config["pebble"]["certificateValidityPeriod"] = serde_json::json!(v);
        }
        let cfg_path = dir.path().join("pebble.json");
        std::fs::write(&cfg_path, config.to_string()).unwrap();
        let log = std::fs::File::create(dir.path().join("pebble.log")).unwrap();
        let pebble = Command::new(&bin)
            .arg("-config")
            .arg(&cfg_path)
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start pebble");
        let p = Pebble {
            children: vec![dns, pebble],
            directory: Self::directory_on(acme_port),
            listener_ca: ca,
            management: format!("127.0.0.1:{mgmt_port}").parse().unwrap(),
            _dir: dir,
        };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", acme_port)).is_err()
            || std::net::TcpStream::connect(("127.0.0.1", dns_port)).is_err()
                && start.elapsed() < Duration::from_secs(1)
        {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "pebble did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(p)
    }

    /// The root that signs issued certificates (random per pebble start), as PEM.
    pub async fn root_pem(&self) -> String {
        let tls = super::webui::client_tls(&[&self.listener_ca], &[b"http/1.1"]);
        let c = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .build()
            .unwrap();
        c.get(format!("https://{}/roots/0", self.management))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("pebble.log")).unwrap_or_default()
    }
}

/// pebble-challtestsrv answering DNS on 127.0.0.1:`dns_port` (127.0.0.1 for every
/// name, no AAAA, unless told otherwise on `mgmt_port`), no challenge servers.
fn challtestsrv(bin: &std::path::Path, dns_port: u16, mgmt_port: u16) -> Child {
    Command::new(bin)
        .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
        .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
        .args(["-management", &format!("127.0.0.1:{mgmt_port}")])
        .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start pebble-challtestsrv")
}

/// pebble-challtestsrv alone: a DNS server whose answers the test sets through its
/// management API. Killed on drop.
pub struct DnsServer {
    child: Child,
    /// Where it answers DNS (UDP and TCP).
    pub dns: SocketAddr,
    management: SocketAddr,
}

impl DnsServer {
    /// None when pebble is not installed (outside CI only).
    pub fn start() -> Option<DnsServer> {
        let (_, bin, ..) = files()?;
        let (dns_port, mgmt_port) = (free_port(), free_port());
        let s = DnsServer {
            child: challtestsrv(&bin, dns_port, mgmt_port),
            dns: format!("127.0.0.1:{dns_port}").parse().unwrap(),
            management: format!("127.0.0.1:{mgmt_port}").parse().unwrap(),
        };
        let start = Instant::now();
        while std::net::TcpStream::connect(s.management).is_err()
            || std::net::TcpStream::connect(s.dns).is_err()
        {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "pebble-challtestsrv did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(s)
    }

    /// Answers `host`'s A queries with `addresses` from now on.
    pub async fn set_a(&self, host: &str, addresses: &[&str]) {
        self.manage("clear-a", serde_json::json!({ "host": host }))
            .await;
        self.manage(
            "add-a",
            serde_json::json!({ "host": host, "addresses": addresses }),
        )
        .await;
    }

    /// Answers `host`'s AAAA queries with `addresses` from now on.
    pub async fn set_aaaa(&self, host: &str, addresses: &[&str]) {
        self.manage("clear-aaaa", serde_json::json!({ "host": host }))
            .await;
        self.manage(
            "add-aaaa",
            serde_json::json!({ "host": host, "addresses": addresses }),
        )
        .await;
    }

    async fn manage(&self, what: &str, body: serde_json::Value) {
        let tls = super::webui::client_tls(&[], &[b"http/1.1"]);
        let res = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .build()
            .unwrap()
            .post(format!("http://{}/{what}", self.management))
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("challtestsrv /{what}: {e}"));
        assert!(
            res.status().is_success(),
            "challtestsrv /{what}: {}",
            res.status()
        );
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
