//! Runs the real `webui` binary as a subprocess for integration tests: started with
//! arguments, its "listening on ..." lines parsed for the bound addresses, killed on
//! drop so a failed test leaves no process behind. Also HTTPS/WebSocket clients that
//! trust the certificate the proxy serves.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `webui` process.
pub struct Webui {
    child: Option<Child>,
    /// Every line it printed on stdout and stderr so far.
    pub output: Arc<Mutex<Vec<String>>>,
    pub https: Vec<SocketAddr>,
    pub http: Vec<SocketAddr>,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_webui")
}

/// A command for the `webui` binary with a private state dir and no inherited
/// `WEBUI_*` environment.
pub fn command(state_dir: &Path) -> Command {
    let mut cmd = Command::new(bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("WEBUI_") && !k.starts_with("WEBUI_TEST_") {
            cmd.env_remove(k);
        }
    }
    cmd.arg("--state-dir").arg(state_dir);
    cmd
}

/// Output of a command that ran to completion.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `webui` to completion (bounded), for commands that exit. Output is read
/// while the command runs, so a long output cannot fill the pipe and stall it.
pub fn run(state_dir: &Path, args: &[&str], timeout: Duration) -> Finished {
    let mut cmd = command(state_dir);
    cmd.args(args);
    finish(cmd, timeout)
}

/// Runs a prepared command (e.g. from [`command`] with extra environment) to
/// completion, bounded like [`run`].
pub fn finish(mut cmd: Command, timeout: Duration) -> Finished {
    let what = format!("{:?}", cmd.get_args().collect::<Vec<_>>());
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn webui");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(timeout) {
        Ok(out) => out.expect("output"),
        Err(_) => {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
            panic!("webui {what} did not exit within {timeout:?}");
        }
    };
    Finished {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl Webui {
    /// Starts `webui` with `args` and waits until it reports its listeners (it prints
    /// `listening on https://ADDR` / `http://ADDR`), up to `timeout`.
    pub fn start(state_dir: &Path, args: &[&str], timeout: Duration) -> Webui {
        let mut cmd = command(state_dir);
        cmd.args(args);
        Self::start_cmd(cmd, timeout)
    }

    pub fn start_cmd(cmd: Command, timeout: Duration) -> Webui {
        let mut w = Self::spawn(cmd);
        let start = Instant::now();
        loop {
            w.parse_listeners();
            if !w.https.is_empty() {
                // The http listener line follows right after the https ones.
                std::thread::sleep(Duration::from_millis(50));
                w.parse_listeners();
                return w;
            }
            if let Some(status) = w.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("webui exited early with {status}:\n{}", w.output_text());
            }
            if start.elapsed() > timeout {
                panic!(
                    "webui did not start listening within {timeout:?}:\n{}",
                    w.output_text()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Starts `webui` without waiting for anything (e.g. `up --behind-proxy`, which
    /// listens nowhere); its output is collected as it comes.
    pub fn spawn(mut cmd: Command) -> Webui {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn webui");
        let output = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let out = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if std::env::var_os("WEBUI_TEST_ECHO").is_some() {
                        eprintln!("[webui] {line}");
                    }
                    out.lock().unwrap().push(line);
                }
            });
        }
        Webui {
            child: Some(child),
            output,
            https: vec![],
            http: vec![],
        }
    }

    fn parse_listeners(&mut self) {
        let lines = self.output.lock().unwrap().clone();
        self.https.clear();
        self.http.clear();
        for l in lines {
            if let Some(rest) = l.split("listening on https://").nth(1) {
                if let Some(a) = rest.split_whitespace().next().and_then(|a| a.parse().ok()) {
                    self.https.push(a);
                }
            } else if let Some(rest) = l.split("listening on http://").nth(1)
                && let Some(a) = rest.split_whitespace().next().and_then(|a| a.parse().ok())
            {
                self.http.push(a);
            }
        }
    }

    pub fn output_text(&self) -> String {
        self.output.lock().unwrap().join("\n")
    }

    /// Waits until a line containing `needle` was printed.
    pub fn wait_for_output(&self, needle: &str, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self
                .output
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains(needle))
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        false
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends a signal (e.g. "TERM", "KILL") to the process.
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status();
    }

    /// Waits for the process to exit, up to `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(status) = self.child.as_mut()?.try_wait().ok().flatten() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The first HTTPS address as a URL base, e.g. `https://127.0.0.1:PORT`.
    pub fn https_url(&self, path: &str) -> String {
        format!("https://{}{}", self.https[0], path)
    }
}

impl Drop for Webui {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A fresh temporary state directory.
pub fn state_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// The local CA certificate `webui` created in a state dir.
pub fn local_ca(state_dir: &Path) -> PathBuf {
    state_dir.join("ca").join("ca.pem")
}

/// A rustls client config trusting the given PEM CA file(s), with ALPN as given.
pub fn client_tls(ca_files: &[&Path], alpn: &[&[u8]]) -> rustls::ClientConfig {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for f in ca_files {
        let pem = std::fs::read(f).expect("read CA");
        for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(&pem) {
            let cert: rustls_pki_types::CertificateDer = cert.expect("CA PEM");
            roots.add(cert).expect("add CA");
        }
    }
    let mut cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    cfg
}

/// A reqwest client trusting `ca`, resolving `name` to `addr` so SNI and certificate
/// names match what a real user would type.
pub fn https_client(ca: &Path, http2: bool) -> reqwest::Client {
    let alpn: &[&[u8]] = if http2 {
        &[b"h2", b"http/1.1"]
    } else {
        &[b"http/1.1"]
    };
    let tls = client_tls(&[ca], alpn);
    let mut b = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none());
    if !http2 {
        b = b.http1_only();
    }
    b.build().expect("https client")
}

/// A client TLS stream over TCP.
pub type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A TLS connection to `addr` as a browser typing `https://localhost` would open it,
/// trusting `ca`, offering the one ALPN protocol given.
pub async fn tls_connect(addr: SocketAddr, ca: &Path, alpn: &[u8]) -> Tls {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_tls(&[ca], &[alpn])));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    connector.connect(name, tcp).await.expect("TLS handshake")
}

/// Sends raw bytes on a fresh HTTP/1.1 TLS connection and returns what comes back
/// until the server closes or 5 s pass: for requests no client library would send.
pub async fn tls_exchange(addr: SocketAddr, ca: &Path, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tls_connect(addr, ca, b"http/1.1").await;
    s.write_all(bytes).await.expect("write");
    // tokio-rustls may keep a write in its buffer until flushed.
    s.flush().await.expect("flush");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}
