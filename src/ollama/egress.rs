//! The UI server's side of a token-protected Ollama (`webui up --ollama-url
//! https://models.example.com --ollama-token ...`).
//!
//! Open WebUI keeps a per-connection Ollama key in its database
//! (`ollama.api_configs`); older releases take it from no environment variable, and
//! 0.12.4 reads `OLLAMA_API_CONFIGS` only as the database's first value (a rotated
//! token would be ignored on existing data) and would show it in `docker inspect`.
//! Instead webui runs this small forwarder: Open WebUI's
//! `OLLAMA_BASE_URL` points at it, and it sends each request on to the remote server
//! over HTTPS (system CAs plus webui's local CA) with `Authorization: Bearer TOKEN`
//! added, streaming both ways. The token never enters the container, its environment
//! or its logs.
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
use hyper_util::rt::TokioIo;
use ipnet::IpNet;

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
}

impl Remote {
    /// Trusts the system's CAs and webui's local CA in `state_dir` (a self-signed
    /// `--ollama-only` server on the same state dir, or its `ca.pem` copied there).
    pub fn new(base: &str, token: String, state_dir: &Path) -> anyhow::Result<Self> {
        let base: Uri = base.parse()?;
        let mut roots = rustls::RootCertStore::empty();
        for path in [
            "/etc/ssl/certs/ca-certificates.crt".into(),
            "/etc/pki/tls/certs/ca-bundle.crt".into(),
            state_dir.join("ca").join("ca.pem"),
        ] {
            if let Ok(pem) = std::fs::read(&path) {
                for c in rustls_pki_types::pem::PemObject::pem_slice_iter(&pem).flatten() {
                    let c: rustls_pki_types::CertificateDer = c;
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
        })
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
    let host = remote
        .base
        .host()
        .ok_or_else(|| anyhow::anyhow!("--ollama-url has no host"))?
        .trim_matches(['[', ']'])
        .to_string();
    let https = remote.base.scheme_str() == Some("https");
    let port = remote
        .base
        .port_u16()
        .unwrap_or(if https { 443 } else { 80 });
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host.as_str(), port)))
        .await
        .map_err(|_| anyhow::anyhow!("connecting to {host}:{port} timed out"))??;
    tcp.set_nodelay(true)?;

    let (parts, body) = req.into_parts();
    let mut hdrs = parts.headers;
    headers::strip_hop_by_hop(&mut hdrs, false);
    hdrs.remove(header::AUTHORIZATION);
    let authority = remote
        .base
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or_else(|| host.clone());
    hdrs.insert(header::HOST, HeaderValue::from_str(&authority)?);
    hdrs.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {}", remote.token))?,
    );
    let mut out = Request::new(body.map_err(BoxError::from).boxed());
    *out.method_mut() = parts.method;
    *out.uri_mut() = target_path(&remote.base, &parts.uri).parse()?;
    *out.headers_mut() = hdrs;

    let res = if https {
        let name = rustls_pki_types::ServerName::try_from(host.clone())?;
        let tls = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio_rustls::TlsConnector::from(remote.tls.clone()).connect(name, tcp),
        )
        .await
        .map_err(|_| anyhow::anyhow!("TLS handshake with {host}:{port} timed out"))??;
        send(TokioIo::new(tls), out).await?
    } else {
        send(TokioIo::new(tcp), out).await?
    };
    let (mut parts, body) = res.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers, false);
    Ok(Response::from_parts(
        parts,
        body.map_err(BoxError::from).boxed(),
    ))
}

async fn send<T>(io: T, req: Request<Body>) -> anyhow::Result<Response<Incoming>>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender.send_request(req).await?)
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
