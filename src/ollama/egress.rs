//! The UI server's side of a token-protected Ollama (`webui up --ollama-url
//! https://models.example.com --ollama-token ...`).
//!
//! Open WebUI keeps a per-connection Ollama key in its database
//! (`ollama.api_configs`); older releases take it from no environment variable, and
//! 0.12.4 reads `OLLAMA_API_CONFIGS` only as the database's first value (a rotated
//! token would be ignored on existing data) and would show it in `docker inspect`.
//! Instead webui runs this small forwarder: Open WebUI's
//! `OLLAMA_BASE_URL` points at it, and it sends each request on to the remote server
//! over HTTPS (system CAs, webui's local CA and `--ollama-ca`) with
//! `Authorization: Bearer TOKEN` added, streaming both ways, on a connection kept
//! from the request before when one is open (see [`Idle`]). The token never enters
//! the container, its environment or its logs.
//!
//! Where it listens: with `--network host` on 127.0.0.1; on a bridge network on the
//! Docker host-gateway address (`host.docker.internal` in the container), which only
//! this host routes. Connections from any peer other than loopback or a Docker
//! network's subnet are closed unanswered, so a LAN neighbour routing to that
//! address gets nothing. The port is chosen once per project and kept
//! (`<project dir>/ollama_egress_port`) so Open WebUI's spec does not change between
//! runs.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use ipnet::IpNet;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::error::UserError;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::proxy::{Body, BoxError, headers};

const PORT_FILE: &str = "ollama_egress_port";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the remote Ollama is and how to reach it.
pub struct Remote {
    /// `https://models.example.com[:port][/prefix]`, no trailing slash.
    pub base: Uri,
    pub token: String,
    pub tls: Arc<rustls::ClientConfig>,
    idle: Idle,
}

/// The certificates of an `--ollama-ca` file: PEM, at least one.
pub fn read_ca(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let hint = "give a PEM file with the CA certificate that signed the Ollama server's certificate (for a `--self-signed` webui there, its <state-dir>/ca/ca.pem)";
    let pem = std::fs::read(path).map_err(|e| {
        UserError::new(format!("cannot read --ollama-ca {}: {e}", path.display())).hint(hint)
    })?;
    let mut certs = Vec::new();
    for c in CertificateDer::pem_slice_iter(&pem) {
        let c = c.map_err(|e| {
            UserError::new(format!(
                "--ollama-ca {} is not a valid PEM file: {e}",
                path.display()
            ))
            .hint(hint)
        })?;
        certs.push(c);
    }
    if certs.is_empty() {
        return Err(UserError::new(format!(
            "--ollama-ca {} holds no certificate (no `-----BEGIN CERTIFICATE-----`)",
            path.display()
        ))
        .hint(hint)
        .into());
    }
    let mut roots = rustls::RootCertStore::empty();
    let (_, unusable) = roots.add_parsable_certificates(certs.iter().cloned());
    if unusable > 0 {
        return Err(UserError::new(format!(
            "--ollama-ca {}: {unusable} of its {} certificate(s) cannot be used as a trust anchor",
            path.display(),
            certs.len()
        ))
        .hint(hint)
        .into());
    }
    Ok(certs)
}

impl Remote {
    /// Trusts the system's CAs, webui's local CA in `state_dir` (a self-signed
    /// `--ollama-only` server on the same state dir) and `extra` (`--ollama-ca`).
    pub fn new(
        base: &str,
        token: String,
        state_dir: &Path,
        extra: &[CertificateDer<'static>],
    ) -> anyhow::Result<Self> {
        let base: Uri = base.parse()?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(extra.iter().cloned());
        for path in [
            "/etc/ssl/certs/ca-certificates.crt".into(),
            "/etc/pki/tls/certs/ca-bundle.crt".into(),
            state_dir.join("ca").join("ca.pem"),
        ] {
            if let Ok(pem) = std::fs::read(&path) {
                for c in CertificateDer::pem_slice_iter(&pem).flatten() {
                    let _ = roots.add(c);
                }
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            base,
            token,
            tls: Arc::new(tls),
            idle: Idle::default(),
        })
    }

    /// The host (without IPv6 brackets) and port to connect to.
    fn host_port(&self) -> Result<(String, u16), Failure> {
        let host = self
            .base
            .host()
            .ok_or_else(|| Failure::Other(anyhow::anyhow!("--ollama-url has no host")))?
            .trim_matches(['[', ']'])
            .to_string();
        let https = self.base.scheme_str() == Some("https");
        let port = self.base.port_u16().unwrap_or(if https { 443 } else { 80 });
        Ok((host, port))
    }
}

/// Which peers may use the forwarder: loopback and the subnets of Docker's networks
/// (re-read from the engine, at most every 5 s, when an unknown peer connects).
#[derive(Clone)]
pub struct Peers {
    nets: Arc<Mutex<(Vec<IpNet>, Option<Instant>)>>,
}

impl Default for Peers {
    fn default() -> Self {
        Self {
            nets: Arc::new(Mutex::new((Vec::new(), None))),
        }
    }
}

impl Peers {
    async fn allows(&self, ip: IpAddr) -> bool {
        if ip.is_loopback() {
            return true;
        }
        let stale = {
            let g = self.nets.lock().unwrap_or_else(|p| p.into_inner());
            if g.0.iter().any(|n| n.contains(&ip)) {
                return true;
            }
            g.1.is_none_or(|t| t.elapsed() > Duration::from_secs(5))
        };
        if !stale {
            return false;
        }
        let nets = docker_subnets().await;
        let ok = nets.iter().any(|n| n.contains(&ip));
        *self.nets.lock().unwrap_or_else(|p| p.into_inner()) = (nets, Some(Instant::now()));
        ok
    }
}

async fn docker_subnets() -> Vec<IpNet> {
    let Ok(d) = crate::docker::connect().await else {
        return Vec::new();
    };
    let Ok(list) = d.list_networks(None).await else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|n| n.ipam.as_ref()?.config.as_ref())
        .flatten()
        .filter_map(|c| c.subnet.as_deref()?.parse().ok())
        .collect()
}

/// The address containers reach the host at (`host-gateway`): the default bridge's
/// gateway.
pub async fn host_gateway(docker: &bollard::Docker) -> anyhow::Result<IpAddr> {
    let n = docker.inspect_network("bridge", None).await.map_err(|e| {
        anyhow::Error::new(e).context("cannot inspect Docker's default bridge network")
    })?;
    let configs = n.ipam.and_then(|i| i.config).unwrap_or_default();
    ipv4_gateway(&configs).ok_or_else(|| {
        UserError::new("Docker's default bridge network has no IPv4 subnet, so Open WebUI's container cannot reach the Ollama forwarder on this host")
            .hint("check `docker network inspect bridge`; dockerd must not run with `--bridge=none` (or `\"bridge\": \"none\"` in /etc/docker/daemon.json)")
            .into()
    })
}

/// The bridge's IPv4 gateway from its IPAM configuration: the one given, else the
/// first host of its subnet, which is where Docker puts the gateway when none is
/// configured. Debian 12's dockerd (20.10) does not always report it for the default
/// bridge: a fresh one answered `"Config": [{"Subnet": "172.17.0.0/16"}]`, with
/// `docker0` at 172.17.0.1, and `webui up --ollama-url` failed on it. Pure.
fn ipv4_gateway(configs: &[bollard::models::IpamConfig]) -> Option<IpAddr> {
    let given = configs
        .iter()
        .filter_map(|c| c.gateway.as_deref()?.parse::<IpAddr>().ok())
        .find(IpAddr::is_ipv4);
    given.or_else(|| {
        configs
            .iter()
            .filter_map(|c| c.subnet.as_deref()?.parse::<ipnet::Ipv4Net>().ok())
            .find_map(|net| net.hosts().next())
            .map(IpAddr::V4)
    })
}

/// Binds on `ip`, on the project's recorded port when it is free, else on a new one
/// (recorded).
pub fn bind(ip: IpAddr, project_dir: &Path) -> anyhow::Result<TcpListener> {
    let file = project_dir.join(PORT_FILE);
    let recorded: Option<u16> = std::fs::read_to_string(&file)
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let std_listener = recorded
        .and_then(|p| std::net::TcpListener::bind((ip, p)).ok())
        .map_or_else(|| std::net::TcpListener::bind((ip, 0)), Ok)
        .map_err(|e| anyhow::anyhow!("cannot listen on {ip} for the Ollama forwarder: {e}"))?;
    let port = std_listener.local_addr()?.port();
    if recorded != Some(port) {
        crate::state::create_private_dir(project_dir)?;
        crate::state::write_private(&file, port.to_string().as_bytes())?;
    }
    std_listener.set_nonblocking(true)?;
    Ok(TcpListener::from_std(std_listener)?)
}

/// Serves until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    remote: Arc<Remote>,
    peers: Peers,
    shutdown: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "Ollama forwarder: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let remote = remote.clone();
        let peers = peers.clone();
        tokio::spawn(async move {
            if !peers.allows(peer.ip()).await {
                tracing::warn!(%peer, "Ollama forwarder: refused a connection from outside loopback and Docker's networks");
                return;
            }
            let svc = hyper::service::service_fn(move |req| {
                let remote = remote.clone();
                async move { Ok::<_, std::convert::Infallible>(forward(&remote, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn error(status: StatusCode, msg: String) -> Response<Body> {
    let body = serde_json::json!({ "error": msg }).to_string();
    let mut res = Response::new(Full::new(Bytes::from(body)).map_err(|n| match n {}).boxed());
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// One request to the remote server with the token, streamed back.
async fn forward(remote: &Remote, req: Request<Incoming>) -> Response<Body> {
    match try_forward(remote, req).await {
        Ok(res) => res,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "Ollama forwarder: the remote Ollama could not be reached");
            error(
                StatusCode::BAD_GATEWAY,
                format!("webui could not reach the remote Ollama: {e:#}"),
            )
        }
    }
}

/// `base`'s path prefix joined with the request's path and query.
fn target_path(base: &Uri, client: &Uri) -> String {
    let prefix = base.path().trim_end_matches('/');
    let pq = client.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    format!("{prefix}{pq}")
}

async fn try_forward(remote: &Remote, req: Request<Incoming>) -> anyhow::Result<Response<Body>> {
    let (parts, body) = req.into_parts();
    let mut hdrs = parts.headers;
    headers::strip_hop_by_hop(&mut hdrs, false);
    let mut out = Request::new(body.map_err(BoxError::from).boxed());
    *out.method_mut() = parts.method;
    *out.uri_mut() = target_path(&remote.base, &parts.uri).parse()?;
    *out.headers_mut() = hdrs;
    let res = exchange(remote, out).await?;
    let (mut parts, body) = res.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers, false);
    Ok(Response::from_parts(
        parts,
        body.map_err(BoxError::from).boxed(),
    ))
}

/// Sends `req` (origin-form target) to the remote server with its `Host` and the
/// token, replacing any `Authorization` it had: on an idle connection from an earlier
/// request when one is ready, else on a new one (TLS for https).
async fn exchange(remote: &Remote, mut req: Request<Body>) -> Result<Response<Incoming>, Failure> {
    let (host, port) = remote.host_port()?;
    let authority = remote
        .base
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or_else(|| host.clone());
    let hdrs = req.headers_mut();
    let bad = |e: http::header::InvalidHeaderValue| Failure::Other(e.into());
    hdrs.insert(
        header::HOST,
        HeaderValue::from_str(&authority).map_err(bad)?,
    );
    hdrs.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {}", remote.token)).map_err(bad)?,
    );
    if let Some(mut sender) = remote.idle.take() {
        match sender.try_send_request(req).await {
            Ok(res) => {
                remote.idle.keep_when_ready(sender);
                return Ok(res);
            }
            // Not written: the connection had closed meanwhile; a new one takes it.
            Err(mut e) => match e.take_message() {
                Some(back) => req = back,
                None => return Err(Failure::Other(e.into_error().into())),
            },
        }
    }
    let mut sender = connect(remote, &host, port).await?;
    let res = sender
        .send_request(req)
        .await
        .map_err(|e| Failure::Other(e.into()))?;
    remote.idle.keep_when_ready(sender);
    Ok(res)
}

/// A new connection to the remote server, ready for a request.
async fn connect(remote: &Remote, host: &str, port: u16) -> Result<SendRequest<Body>, Failure> {
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port))).await {
        Err(_) => {
            return Err(Failure::Connect(format!(
                "connecting to {host}:{port} timed out"
            )));
        }
        Ok(Err(e)) => {
            return Err(Failure::Connect(format!(
                "cannot connect to {host}:{port}: {e}"
            )));
        }
        Ok(Ok(tcp)) => tcp,
    };
    tcp.set_nodelay(true)
        .map_err(|e| Failure::Other(e.into()))?;
    let handshake = if remote.base.scheme_str() == Some("https") {
        let name = rustls_pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| Failure::Other(e.into()))?;
        let tls = match tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio_rustls::TlsConnector::from(remote.tls.clone()).connect(name, tcp),
        )
        .await
        {
            Err(_) => {
                return Err(Failure::Tls(format!(
                    "the TLS handshake with {host}:{port} timed out"
                )));
            }
            Ok(Err(e)) => return Err(Failure::tls(host, port, e)),
            Ok(Ok(tls)) => tls,
        };
        handshake(TokioIo::new(tls)).await
    } else {
        handshake(TokioIo::new(tcp)).await
    };
    handshake.map_err(Failure::Other)
}

/// Why a request did not reach the remote Ollama, as far as [`check`] tells the cases
/// apart.
#[derive(Debug)]
enum Failure {
    /// No TCP connection (address, port, firewall, server down).
    Connect(String),
    /// The TLS handshake failed (a name the certificate does not cover, expired, ...).
    Tls(String),
    /// The TLS handshake failed on a certificate whose issuer is not trusted here.
    TlsUntrusted(String),
    Other(anyhow::Error),
}

impl Failure {
    fn tls(host: &str, port: u16, e: std::io::Error) -> Failure {
        let rustls_err = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        let what = format!("the TLS handshake with {host}:{port} failed: {e}");
        match rustls_err {
            Some(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer | rustls::CertificateError::BadSignature,
            )) => Failure::TlsUntrusted(what),
            _ => Failure::Tls(what),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Connect(s) | Failure::Tls(s) | Failure::TlsUntrusted(s) => f.write_str(s),
            Failure::Other(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for Failure {}

/// What `webui up` found when it asked the remote Ollama for its version, with the
/// token, as the forwarder will ask it everything else.
#[derive(Debug, PartialEq, Eq)]
pub enum Check {
    /// It answered; the version it gave, if any.
    Answers(Option<String>),
    /// Something is wrong: what, and what to do.
    Problem { what: String, hint: String },
}

impl Check {
    /// The line that says the remote Ollama answered (`up`'s output, `doctor`'s
    /// evidence).
    pub fn answered(url: &str, version: Option<&str>) -> String {
        let version = version
            .map(|v| format!(" (version {v})"))
            .unwrap_or_default();
        format!("the Ollama at {url} answers with the token{version}")
    }
}

/// Asks `GET <base>/api/version` with the token (at most [`CONNECT_TIMEOUT`] per step).
pub async fn check(remote: &Remote) -> Check {
    let mut req = Request::new(crate::proxy::empty_body());
    let path = target_path(&remote.base, &Uri::from_static("/api/version"));
    match path.parse() {
        Ok(uri) => *req.uri_mut() = uri,
        Err(e) => {
            return Check::Problem {
                what: format!("--ollama-url gives no usable path: {e}"),
                hint: "write it like https://models.example.com".into(),
            };
        }
    }
    let url = remote.base.to_string();
    let url = url.trim_end_matches('/');
    let asked = tokio::time::timeout(CONNECT_TIMEOUT * 2, async {
        let res = exchange(remote, req).await?;
        let status = res.status();
        let body = tokio::time::timeout(CONNECT_TIMEOUT, res.into_body().collect())
            .await
            .ok()
            .and_then(Result::ok)
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Ok::<_, Failure>((status, body))
    })
    .await;
    let (status, body) = match asked {
        Err(_) => {
            return Check::Problem {
                what: format!(
                    "the Ollama at {url} did not answer within {}s",
                    CONNECT_TIMEOUT.as_secs() * 2
                ),
                hint: "check that it runs (`webui status` there) and that this host may reach it"
                    .into(),
            };
        }
        Ok(Err(Failure::Connect(what))) => {
            return Check::Problem {
                what,
                hint: "check the address and port of --ollama-url, that the server runs (`webui status` there) and that no firewall is in between".into(),
            };
        }
        Ok(Err(Failure::TlsUntrusted(what))) => {
            return Check::Problem {
                what: format!("{what}: its certificate is not signed by a CA this host trusts"),
                hint: "if that server is `--self-signed`, copy its <state-dir>/ca/ca.pem here and give --ollama-ca FILE".into(),
            };
        }
        Ok(Err(Failure::Tls(what))) => {
            return Check::Problem {
                what,
                hint: "--ollama-url must use a name the server's certificate covers: its --domain (`webui cert status` there), or for a `--self-signed` one its host name or one of its addresses".into(),
            };
        }
        Ok(Err(Failure::Other(e))) => {
            return Check::Problem {
                what: format!("the Ollama at {url} could not be asked: {e:#}"),
                hint: "check --ollama-url; it should be the https:// address `webui up --ollama-only` serves".into(),
            };
        }
        Ok(Ok(answer)) => answer,
    };
    match status {
        StatusCode::OK => {
            let version = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("version")?.as_str().map(str::to_string));
            Check::Answers(version)
        }
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Check::Problem {
            what: format!("the Ollama at {url} refused the token (HTTP {})", status.as_u16()),
            hint: "give the token `webui token show` prints on that server (it changes with `webui token rotate`)".into(),
        },
        s => Check::Problem {
            what: format!("the Ollama at {url} answered HTTP {} to GET /api/version", s.as_u16()),
            hint: "check that --ollama-url is the address of an Ollama (served by `webui up --ollama-only`), with no extra path".into(),
        },
    }
}

async fn handshake<T>(io: T) -> anyhow::Result<SendRequest<Body>>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Connections to the remote server between requests. Open WebUI asks in bursts (the
/// model list and version on a page load; a chat, then its title and tags), so a
/// connection kept for a few seconds saves the next request its TCP and TLS
/// handshakes (two round trips to a GPU box that may be far away). Kept [`IDLE_KEEP`]
/// at most, well inside any server's keep-alive (uvicorn's 5 s is the shortest
/// common one); a connection that closed meanwhile is not used, and a request it
/// refused unwritten goes on a new one.
#[derive(Clone, Default)]
struct Idle(Arc<Mutex<Vec<Kept>>>);

/// A connection and when it was last used.
type Kept = (SendRequest<Body>, Instant);

const IDLE_KEEP: Duration = Duration::from_secs(4);
const IDLE_MAX: usize = 8;

impl Idle {
    /// The most recently used connection that is still open and ready.
    fn take(&self) -> Option<SendRequest<Body>> {
        let mut idle = self.0.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((sender, since)) = idle.pop() {
            if since.elapsed() < IDLE_KEEP && sender.is_ready() {
                return Some(sender);
            }
        }
        None
    }

    /// Keeps `sender` once its response has been read to the end (HTTP/1.1: one
    /// request at a time); dropped when the connection closes first or enough wait.
    fn keep_when_ready(&self, mut sender: SendRequest<Body>) {
        let idle = self.clone();
        tokio::spawn(async move {
            if sender.ready().await.is_err() {
                return;
            }
            let mut list = idle.0.lock().unwrap_or_else(|p| p.into_inner());
            list.retain(|(s, since)| since.elapsed() < IDLE_KEEP && !s.is_closed());
            if list.len() < IDLE_MAX {
                list.push((sender, Instant::now()));
            }
        });
    }
}

/// The listener's address as Open WebUI sees it: `host.docker.internal` on a bridge.
pub fn container_url(addr: SocketAddr, bridge: bool) -> String {
    if bridge {
        format!("http://host.docker.internal:{}", addr.port())
    } else {
        format!("http://{addr}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_prefix_is_kept() {
        let base: Uri = "https://m.example.com/ollama".parse().unwrap();
        let c: Uri = "/api/tags?x=1".parse().unwrap();
        assert_eq!(target_path(&base, &c), "/ollama/api/tags?x=1");
        let base: Uri = "https://m.example.com".parse().unwrap();
        assert_eq!(target_path(&base, &c), "/api/tags?x=1");
    }

    /// A TLS server with a leaf from a fresh local CA for `localhost` only, answering
    /// `/api/version` as Ollama does when the bearer token is `good`, else 401; it
    /// counts the connections it accepted, and with `keep_alive` false closes each
    /// after one response.
    async fn ollama_server(
        keep_alive: bool,
    ) -> (
        tempfile::TempDir,
        SocketAddr,
        Arc<std::sync::atomic::AtomicUsize>,
    ) {
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        let dir = tempfile::tempdir().unwrap();
        let state = crate::state::StateDir::open(dir.path()).unwrap();
        let ca = crate::tls::LocalCa::load_or_create(&state).unwrap();
        let (key, info) = ca.issue(&["localhost".into()], &[]).unwrap();
        let store = crate::tls::CertStore::new(key, info);
        let tls =
            tokio_rustls::TlsAcceptor::from(Arc::new(crate::tls::server_config(store).unwrap()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let tls = tls.clone();
                tokio::spawn(async move {
                    let Ok(stream) = tls.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                        let authorized = req.headers().get(header::AUTHORIZATION)
                            == Some(&HeaderValue::from_static("Bearer good"));
                        let res = match (req.uri().path(), authorized) {
                            (_, false) => error(StatusCode::UNAUTHORIZED, "token".into()),
                            ("/api/version", true) => Response::new(
                                Full::new(Bytes::from_static(b"{\"version\":\"0.5.7\"}"))
                                    .map_err(|n| match n {})
                                    .boxed(),
                            ),
                            _ => error(StatusCode::NOT_FOUND, "no".into()),
                        };
                        Ok::<_, std::convert::Infallible>(res)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(keep_alive)
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        (dir, addr, accepted)
    }

    fn remote(url: &str, token: &str, ca: &[CertificateDer<'static>]) -> Remote {
        let empty = tempfile::tempdir().unwrap();
        Remote::new(url, token.into(), empty.path(), ca).unwrap()
    }

    #[tokio::test]
    async fn up_tells_what_keeps_it_from_the_remote_ollama() {
        let (server_state, addr, _) = ollama_server(true).await;
        let ca = read_ca(&server_state.path().join("ca").join("ca.pem")).unwrap();
        let url = format!("https://localhost:{}", addr.port());

        // Its own CA given: it answers, with its version.
        assert_eq!(
            check(&remote(&url, "good", &ca)).await,
            Check::Answers(Some("0.5.7".into()))
        );
        let problem = |c: Check| match c {
            Check::Problem { what, hint } => format!("{what} | {hint}"),
            other => panic!("expected a problem, got {other:?}"),
        };
        // Or a webui on the same state dir (its local CA): trusted too.
        let same_box = Remote::new(&url, "good".into(), server_state.path(), &[]).unwrap();
        assert_eq!(check(&same_box).await, Check::Answers(Some("0.5.7".into())));
        // Without either: the certificate is not trusted, and --ollama-ca is the fix.
        let p = problem(check(&remote(&url, "good", &[])).await);
        assert!(
            p.contains("not signed by a CA this host trusts") && p.contains("--ollama-ca"),
            "{p}"
        );
        // A wrong token.
        let p = problem(check(&remote(&url, "old", &ca)).await);
        assert!(
            p.contains("refused the token (HTTP 401)") && p.contains("webui token show"),
            "{p}"
        );
        // A name the certificate does not cover.
        let by_ip = format!("https://127.0.0.1:{}", addr.port());
        let p = problem(check(&remote(&by_ip, "good", &ca)).await);
        assert!(
            p.contains("TLS handshake") && p.contains("a name the server's certificate covers"),
            "{p}"
        );
        // Nothing listening.
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let p = problem(check(&remote(&format!("https://localhost:{port}"), "good", &ca)).await);
        assert!(
            p.contains("cannot connect") && p.contains("firewall"),
            "{p}"
        );
        // And the forwarder itself trusts --ollama-ca the same way.
        let peer = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let faddr = peer.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(serve(
            peer,
            Arc::new(remote(&url, "good", &ca)),
            Peers::default(),
            stop.clone(),
        ));
        let tcp = TcpStream::connect(faddr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = Request::get("/api/version")
            .header(header::HOST, "forwarder")
            .body(crate::proxy::empty_body())
            .unwrap();
        let res = sender.send_request(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"{\"version\":\"0.5.7\"}");
        stop.cancel();
    }

    #[tokio::test]
    async fn requests_in_a_burst_share_a_connection_and_a_closed_one_is_not_used() {
        use std::sync::atomic::Ordering::SeqCst;
        for keep_alive in [true, false] {
            let (state, addr, accepted) = ollama_server(keep_alive).await;
            let ca = read_ca(&state.path().join("ca").join("ca.pem")).unwrap();
            let r = remote(&format!("https://localhost:{}", addr.port()), "good", &ca);
            for _ in 0..3 {
                assert_eq!(check(&r).await, Check::Answers(Some("0.5.7".into())));
                // The connection goes back once its response has been read.
                for _ in 0..200 {
                    if !keep_alive || r.idle.0.lock().unwrap().len() == 1 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            let want = if keep_alive { 1 } else { 3 };
            assert_eq!(accepted.load(SeqCst), want, "keep-alive {keep_alive}");
        }
    }

    #[test]
    fn an_ollama_ca_file_must_hold_a_usable_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let rendered = |p: &Path| crate::error::render(&read_ca(p).unwrap_err());
        let missing = dir.path().join("missing.pem");
        let m = rendered(&missing);
        assert!(
            m.contains("cannot read --ollama-ca") && m.contains("hint:"),
            "{m}"
        );
        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "the CA is on the other box\n").unwrap();
        let m = rendered(&text);
        assert!(
            m.contains("holds no certificate") && m.contains("ca.pem"),
            "{m}"
        );
        let key_only = dir.path().join("key.pem");
        std::fs::write(
            &key_only,
            rcgen::KeyPair::generate().unwrap().serialize_pem(),
        )
        .unwrap();
        assert!(rendered(&key_only).contains("holds no certificate"));
        let broken = dir.path().join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let m = rendered(&broken);
        assert!(m.contains("broken.pem"), "{m}");
    }

    fn ipam(subnet: Option<&str>, gateway: Option<&str>) -> bollard::models::IpamConfig {
        bollard::models::IpamConfig {
            subnet: subnet.map(str::to_string),
            gateway: gateway.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn the_bridge_gateway_is_the_given_one_else_the_subnets_first_host() {
        // As a fresh dockerd reports it, with an IPv6 subnet beside it.
        let both = [
            ipam(Some("fd00::/64"), Some("fd00::1")),
            ipam(Some("172.17.0.0/16"), Some("172.17.0.1")),
        ];
        assert_eq!(ipv4_gateway(&both), Some("172.17.0.1".parse().unwrap()));
        // A configured `bip` that is not the first host is taken as given.
        let bip = [ipam(Some("10.5.0.0/24"), Some("10.5.0.9"))];
        assert_eq!(ipv4_gateway(&bip), Some("10.5.0.9".parse().unwrap()));
        // As Debian 12's dockerd may report it: the subnet only.
        let bare = [ipam(Some("172.17.0.0/16"), None)];
        assert_eq!(ipv4_gateway(&bare), Some("172.17.0.1".parse().unwrap()));
        assert_eq!(ipv4_gateway(&[ipam(Some("fd00::/64"), None)]), None);
        assert_eq!(ipv4_gateway(&[]), None);
    }
}
