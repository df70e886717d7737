//! A light stand-in upstream that plays Open WebUI (and a fake Ollama) for
//! the proxy's and the Docker layer's tests.
//!
//! This is test support code, not product code. It is used two ways:
//!
//! * in-process by integration tests (`mod support;` then
//!   `support::standin::spawn().await`), bound on `127.0.0.1:0`;
//! * as the program `examples/standin.rs`, which includes this file with
//!   `#[path]` and is copied into Docker images as a stand-in `open-webui`
//!   or `ollama` container. It is configured by environment variables, see
//!   [`settings_from_env`].
//!
//! The endpoints exist to make proxy behaviour observable: `/echo` shows
//! what headers reached the upstream, `/sse` and `/ndjson` show whether
//! streamed frames are passed on promptly, `/ws` echoes WebSocket messages,
//! `/upload` and `/download` move large bodies without buffering them, and
//! `/data/*`, `/env` and `/fetch` let Docker tests look inside a container.
//! With `REPLICA` set, every answer carries it in an `x-replica` header, so a
//! test of the proxy's balancing sees which of several stand-ins answered.
//!
//! Nothing here may panic on bad input: a malformed request gets a 4xx.

// Each test binary uses a different subset of this module; the example uses
// yet another. Unused items are expected.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt, stream};
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role as WsRole, WebSocketConfig};

/// Response body type: everything we send is either a full buffer or a
/// paced stream of frames.
type Body = UnsyncBoxBody<Bytes, Infallible>;

/// What the stand-in pretends to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Open WebUI: generic test endpoints, `/api/version` reports
    /// [`Config::version`].
    OpenWebUi,
    /// Ollama: generic test endpoints plus the Ollama API
    /// (`/api/version`, `/api/tags`, `/api/chat`, `/api/generate`).
    Ollama,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::OpenWebUi => "openwebui",
            Role::Ollama => "ollama",
        }
    }
}

/// How one stand-in server behaves.
#[derive(Clone, Debug)]
pub struct Config {
    pub role: Role,
    /// Reported by `/api/version` (role openwebui) and as `version` in the
    /// `/health` body, so upgrade tests can tell which image is running.
    pub version: String,
    /// Where `/data/write` and `/data/read` keep their files.
    pub data_dir: PathBuf,
    /// `/health` answers 503 until this long after the server started.
    pub health_delay: Duration,
    /// `/health` always answers 503.
    pub never_healthy: bool,
    /// Print one line per request to stdout (the program does; tests
    /// usually don't want the noise).
    pub log: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            role: Role::OpenWebUi,
            version: "v1".to_string(),
            // Per-process so parallel test binaries don't share files;
            // tests that care should point this at a tempdir.
            data_dir: std::env::temp_dir().join(format!("webui-standin-{}", std::process::id())),
            health_delay: Duration::ZERO,
            never_healthy: false,
            log: false,
        }
    }
}

impl Config {
    /// The default config with role ollama.
    pub fn ollama() -> Self {
        Config {
            role: Role::Ollama,
            ..Config::default()
        }
    }
}

/// State shared between the server and its [`Standin`] handle.
struct Shared {
    config: Config,
    started: Instant,
    forced_unhealthy: AtomicBool,
    requests: AtomicU64,
}

impl Shared {
    fn new(config: Config) -> Arc<Self> {
        Arc::new(Shared {
            config,
            started: Instant::now(),
            forced_unhealthy: AtomicBool::new(false),
            requests: AtomicU64::new(0),
        })
    }

    fn healthy(&self) -> bool {
        !self.config.never_healthy
            && !self.forced_unhealthy.load(Ordering::Relaxed)
            && self.started.elapsed() >= self.config.health_delay
    }
}

/// A running in-process stand-in. The server (and every connection it
/// accepted) is aborted when this is dropped.
pub struct Standin {
    pub addr: SocketAddr,
    pub config: Config,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Standin {
    /// `http://<addr><path>`; `path` should start with `/`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// `ws://<addr><path>`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// Number of requests served so far (WebSocket upgrades included).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// Force `/health` to 503 (`false`) or back to its configured behaviour.
    pub fn set_healthy(&self, healthy: bool) {
        self.shared
            .forced_unhealthy
            .store(!healthy, Ordering::Relaxed);
    }

    /// Stop the server, close all its connections and wait until the port is
    /// released. Returns the address so the caller can restart on it with
    /// [`spawn_at`].
    pub async fn stop(mut self) -> SocketAddr {
        self.task.abort();
        // Awaiting the aborted task means its future (listener included) has
        // been dropped. Drop aborts again afterwards, which is harmless.
        let _ = (&mut self.task).await;
        self.addr
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Start a stand-in with the default config on `127.0.0.1:0`.
pub async fn spawn() -> Standin {
    spawn_with(Config::default()).await
}

/// Start a stand-in with `config` on `127.0.0.1:0`.
pub async fn spawn_with(config: Config) -> Standin {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("standin: bind 127.0.0.1:0");
    spawn_on(listener, config)
}

/// Start a stand-in on `addr` (e.g. the address of one that was just
/// stopped, to simulate "upstream down, then back"). Retries for a few
/// seconds while the port is still held by the previous instance.
pub async fn spawn_at(addr: SocketAddr, config: Config) -> io::Result<Standin> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match bind_reuse(addr) {
            Ok(listener) => return Ok(spawn_on(listener, config)),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

fn bind_reuse(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // Old connections of a stopped instance may sit in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Start a stand-in on an already bound listener.
pub fn spawn_on(listener: TcpListener, config: Config) -> Standin {
    let addr = listener.local_addr().expect("standin: local_addr");
    let shared = Shared::new(config.clone());
    let task = tokio::spawn(serve_shared(
        listener,
        shared.clone(),
        std::future::pending(),
    ));
    Standin {
        addr,
        config,
        shared,
        task,
    }
}

/// Serve on `listener` until `shutdown` resolves (or this future is
/// dropped); then every connection, WebSocket included, is closed at once,
/// like a crashed upstream.
pub async fn serve(listener: TcpListener, config: Config, shutdown: impl Future<Output = ()>) {
    serve_shared(listener, Shared::new(config), shutdown).await
}

async fn serve_shared(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
) {
    // Every spawned task watches this; dropping the sender (when this
    // future ends or is aborted) makes all of them stop.
    let (_stop_tx, stop_rx) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    // E.g. EMFILE: don't spin, don't die.
                    eprintln!("standin: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Small SSE frames must leave at once, not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let conn_stop = stop.clone();
            let service = service_fn(move |req| {
                let shared = shared.clone();
                let stop = conn_stop.clone();
                async move { Ok::<_, Infallible>(handle(shared, peer, stop, req).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = stop.changed() => {}
            }
        });
    }
}

/// Route one request and log it.
async fn handle(
    shared: Arc<Shared>,
    peer: SocketAddr,
    stop: watch::Receiver<()>,
    req: Request<Incoming>,
) -> Response<Body> {
    shared.requests.fetch_add(1, Ordering::Relaxed);
    let method = req.method().clone();
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".to_string());
    let log = shared.config.log;
    let mut resp = route(shared, peer, stop, req).await;
    // Which of several stand-in replicas answered (tests of the proxy's balancing).
    if let Some(v) = std::env::var("REPLICA")
        .ok()
        .and_then(|r| header::HeaderValue::from_str(&r).ok())
    {
        resp.headers_mut().insert("x-replica", v);
    }
    if log {
        println!("{} {} {}", method, target, resp.status().as_u16());
    }
    resp
}

async fn route(
    shared: Arc<Shared>,
    peer: SocketAddr,
    stop: watch::Receiver<()>,
    req: Request<Incoming>,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let role = shared.config.role;
    let get = method == Method::GET || method == Method::HEAD;

    if path == "/echo" || path.starts_with("/echo/") {
        return echo(peer, req).await;
    }
    if path == "/ws" || path.starts_with("/ws/") {
        return websocket(stop, req);
    }
    if let Some(code) = path.strip_prefix("/status/") {
        return status(code);
    }

    match (role, path.as_str()) {
        (_, "/health" | "/health/db") if get => health(&shared),
        (_, "/sse") if get => paced(&req, Paced::Sse),
        (_, "/ndjson") if get => paced(&req, Paced::Ndjson),
        (_, "/upload") if method == Method::POST || method == Method::PUT => upload(req).await,
        (_, "/download") if get => download(&req),
        (_, "/slow") if get => slow(&req).await,
        (_, "/data/write") if method == Method::POST || method == Method::PUT => {
            data_write(&shared, req).await
        }
        (_, "/data/read") if get => data_read(&shared, &req).await,
        (_, "/env") if get => env_var(&req),
        (_, "/fetch") if get => fetch(&req).await,

        (Role::OpenWebUi, "/") if get => {
            html("<!doctype html><title>Open WebUI (stand-in)</title><p>Open WebUI stand-in</p>\n")
        }
        (Role::OpenWebUi, "/api/version") if get => {
            json_response(StatusCode::OK, &json!({"version": shared.config.version}))
        }
        (Role::OpenWebUi, "/api/config") if get => accounts::config(&shared, &req),
        (Role::OpenWebUi, "/api/v1/auths/signup") if method == Method::POST => {
            accounts::signup(&shared, peer, req).await
        }
        (Role::OpenWebUi, "/api/v1/auths/signin") if method == Method::POST => {
            accounts::signin(&shared, req).await
        }
        (Role::OpenWebUi, "/api/v1/auths/" | "/api/v1/auths") if get => {
            accounts::session(&shared, &req)
        }
        (Role::OpenWebUi, "/standin/users") if get => accounts::list(&shared),
        (Role::OpenWebUi, p) if p.starts_with("/ollama/") && method == Method::POST => {
            ollama_passthrough(req).await
        }

        (Role::Ollama, "/") if get => text(StatusCode::OK, "Ollama is running"),
        (Role::Ollama, "/api/version") if get => json_response(
            StatusCode::OK,
            &json!({"version": "0.0.0-standin", "standin_version": shared.config.version}),
        ),
        (Role::Ollama, "/api/tags") if get => json_response(
            StatusCode::OK,
            &json!({"models": [{
                "name": "standin:latest",
                "model": "standin:latest",
                "size": 1,
                "digest": "0",
                "details": {},
            }]}),
        ),
        (Role::Ollama, "/api/pull") if method == Method::POST => ollama_pull(req).await,
        (Role::Ollama, "/api/chat") if method == Method::POST => ollama(req, OllamaApi::Chat).await,
        (Role::Ollama, "/api/generate") if method == Method::POST => {
            ollama(req, OllamaApi::Generate).await
        }

        _ => json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": "not found", "method": method.as_str(), "path": path}),
        ),
    }
}

// ---------------------------------------------------------------------------
// Response helpers

fn full(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()).boxed_unsync());
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    full(status, "application/json", value.to_string())
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    full(status, "text/plain; charset=utf-8", body)
}

fn html(body: &'static str) -> Response<Body> {
    full(StatusCode::OK, "text/html; charset=utf-8", body)
}

fn bad_request(msg: impl Into<String>) -> Response<Body> {
    json_response(StatusCode::BAD_REQUEST, &json!({"error": msg.into()}))
}

fn stream_response<S>(content_type: &'static str, frames: S) -> Response<Body>
where
    S: futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + 'static,
{
    let mut resp = Response::new(StreamBody::new(frames).boxed_unsync());
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Tell intermediaries (and nginx-style proxies) not to buffer.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// RFC 3339 UTC timestamp, as Ollama puts in `created_at` (no chrono here).
fn rfc3339_now() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_nanos()
    )
}

// ---------------------------------------------------------------------------
// Query strings

/// The first value of query parameter `name`, percent-decoded.
fn query_param(req: &Request<Incoming>, name: &str) -> Option<String> {
    let query = req.uri().query()?;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == name).then(|| percent_decode(v))
    })
}

/// Numeric query parameter: default when absent, clamped to `max`,
/// `Err` (a message for a 400) when present but not a number.
fn query_num(req: &Request<Incoming>, name: &str, default: u64, max: u64) -> Result<u64, String> {
    match query_param(req, name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .map(|n| n.min(max))
            .map_err(|_| format!("query parameter {name} must be a non-negative integer")),
    }
}

fn percent_decode(s: &str) -> String {
    fn hex_val(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                // A malformed escape is kept literally rather than rejected.
                let hi = bytes.get(i + 1).copied().and_then(hex_val);
                let lo = bytes.get(i + 2).copied().and_then(hex_val);
                match (hi, lo) {
                    (Some(hi), Some(lo)) => {
                        out.push(hi << 4 | lo);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------
// Endpoints

fn health(shared: &Shared) -> Response<Body> {
    let healthy = shared.healthy();
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(
        status,
        &json!({"status": healthy, "version": shared.config.version}),
    )
}

/// Describe the request as the upstream saw it.
async fn echo(peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let mut headers = serde_json::Map::new();
    for name in parts.headers.keys() {
        let values: Vec<Value> = parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let value = if values.len() == 1 {
            values.into_iter().next().unwrap_or(Value::Null)
        } else {
            Value::Array(values)
        };
        headers.insert(name.as_str().to_string(), value);
    }
    // Count the whole body but keep only a prefix: echo must not buffer
    // arbitrarily large uploads.
    const KEEP: usize = 64 * 1024;
    let mut kept = BytesMut::new();
    let mut body_len: u64 = 0;
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Ok(data) = frame.into_data() {
            body_len += data.len() as u64;
            let room = KEEP.saturating_sub(kept.len());
            kept.extend_from_slice(&data[..data.len().min(room)]);
        }
    }
    json_response(
        StatusCode::OK,
        &json!({
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query(),
            "version": format!("{:?}", parts.version),
            "headers": headers,
            "remote_addr": peer.to_string(),
            "body_len": body_len,
            "body": String::from_utf8_lossy(&kept),
        }),
    )
}

fn status(code: &str) -> Response<Body> {
    match code
        .parse::<u16>()
        .ok()
        .and_then(|c| StatusCode::from_u16(c).ok())
    {
        // 1xx can't be a final response.
        Some(s) if !s.is_informational() => json_response(s, &json!({"status": s.as_u16()})),
        _ => bad_request(format!("bad status code {code:?}")),
    }
}

#[derive(Clone, Copy)]
enum Paced {
    Sse,
    Ndjson,
}

/// `/sse` and `/ndjson`: one event per body frame, `interval_ms` apart, the
/// first one at once. Each frame says when it was produced so tests can
/// tell a buffering proxy from a streaming one.
fn paced(req: &Request<Incoming>, kind: Paced) -> Response<Body> {
    let n = match query_num(req, "n", 20, 100_000) {
        Ok(n) => n,
        Err(e) => return bad_request(e),
    };
    let interval = match query_num(req, "interval_ms", 50, 60_000) {
        Ok(ms) => Duration::from_millis(ms),
        Err(e) => return bad_request(e),
    };
    let frames = stream::unfold(0u64, move |i| async move {
        if i >= n {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(interval).await;
        }
        let event = json!({"i": i, "sent_ms": unix_ms()});
        let line = match kind {
            Paced::Sse => format!("data: {event}\n\n"),
            Paced::Ndjson => format!("{event}\n"),
        };
        Some((Ok(Frame::data(Bytes::from(line))), i + 1))
    });
    let content_type = match kind {
        Paced::Sse => "text/event-stream",
        Paced::Ndjson => "application/x-ndjson",
    };
    stream_response(content_type, frames)
}

/// Hash the request body frame by frame; never hold it whole.
async fn upload(req: Request<Incoming>) -> Response<Body> {
    let mut body = req.into_body();
    let mut hasher = Sha256::new();
    let mut bytes: u64 = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    bytes += data.len() as u64;
                    hasher.update(&data);
                }
            }
            Err(e) => return bad_request(format!("reading body: {e}")),
        }
    }
    json_response(
        StatusCode::OK,
        &json!({"bytes": bytes, "sha256": hex::encode(hasher.finalize())}),
    )
}

const DOWNLOAD_FRAME: usize = 64 * 1024;

/// `bytes` bytes where byte i is `i % 251`, in 64 KiB frames, with
/// Content-Length.
fn download(req: &Request<Incoming>) -> Response<Body> {
    let total = match query_num(req, "bytes", 0, u64::MAX) {
        Ok(n) => n,
        Err(e) => return bad_request(e),
    };
    // One pattern buffer long enough that any frame is a zero-copy slice of
    // it starting at (offset % 251).
    let pattern: Bytes = (0..DOWNLOAD_FRAME + 251)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    let frames = stream::unfold(0u64, move |offset| {
        let pattern = pattern.clone();
        async move {
            if offset >= total {
                return None;
            }
            let len = (total - offset).min(DOWNLOAD_FRAME as u64) as usize;
            let start = (offset % 251) as usize;
            let chunk = pattern.slice(start..start + len);
            Some((Ok(Frame::data(chunk)), offset + len as u64))
        }
    });
    let mut resp = stream_response("application/octet-stream", frames);
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(total));
    resp.headers_mut().remove(header::CACHE_CONTROL);
    resp
}

async fn slow(req: &Request<Incoming>) -> Response<Body> {
    let ms = match query_num(req, "delay_ms", 1000, 600_000) {
        Ok(ms) => ms,
        Err(e) => return bad_request(e),
    };
    tokio::time::sleep(Duration::from_millis(ms)).await;
    text(StatusCode::OK, "ok")
}

/// A plain file name under DATA_DIR: no separators, no dot-files, so no
/// path traversal.
fn data_name(req: &Request<Incoming>) -> Result<String, String> {
    let name = query_param(req, "name").unwrap_or_default();
    let ok = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(name)
    } else {
        Err("name must be a plain file name ([A-Za-z0-9._-], not starting with '.')".into())
    }
}

async fn data_write(shared: &Shared, req: Request<Incoming>) -> Response<Body> {
    let name = match data_name(&req) {
        Ok(n) => n,
        Err(e) => return bad_request(e),
    };
    let dir = &shared.config.data_dir;
    let path = dir.join(&name);
    let result: io::Result<u64> = async {
        tokio::fs::create_dir_all(dir).await?;
        let mut file = tokio::fs::File::create(&path).await?;
        let mut written = 0u64;
        let mut body = req.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(io::Error::other)?;
            if let Ok(data) = frame.into_data() {
                file.write_all(&data).await?;
                written += data.len() as u64;
            }
        }
        // The point is to survive container recreation: make it durable.
        file.sync_all().await?;
        Ok(written)
    }
    .await;
    match result {
        Ok(bytes) => json_response(
            StatusCode::OK,
            &json!({"name": name, "bytes": bytes, "path": path.display().to_string()}),
        ),
        Err(e) => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"error": format!("writing {}: {e}", path.display())}),
        ),
    }
}

async fn data_read(shared: &Shared, req: &Request<Incoming>) -> Response<Body> {
    let name = match data_name(req) {
        Ok(n) => n,
        Err(e) => return bad_request(e),
    };
    let path = shared.config.data_dir.join(&name);
    match tokio::fs::read(&path).await {
        Ok(data) => full(StatusCode::OK, "application/octet-stream", data),
        Err(e) if e.kind() == io::ErrorKind::NotFound => json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": "no such file", "name": name}),
        ),
        Err(e) => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"error": format!("reading {}: {e}", path.display())}),
        ),
    }
}

/// The raw value of an environment variable, as text. Exposing the
/// environment is fine for a test stand-in and nothing else.
fn env_var(req: &Request<Incoming>) -> Response<Body> {
    let Some(name) = query_param(req, "name").filter(|n| !n.is_empty() && !n.contains('=')) else {
        return bad_request("name is required");
    };
    match std::env::var_os(&name) {
        Some(v) => text(StatusCode::OK, v.to_string_lossy().into_owned()),
        None => json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": "not set", "name": name}),
        ),
    }
}

/// `/fetch?url=http://host:port/path`: GET it from here and report what
/// came back, to prove container-to-container reachability.
async fn fetch(req: &Request<Incoming>) -> Response<Body> {
    let Some(url) = query_param(req, "url") else {
        return bad_request("url is required");
    };
    match tokio::time::timeout(Duration::from_secs(10), fetch_url(&url)).await {
        Ok(Ok((status, body))) => json_response(
            StatusCode::OK,
            &json!({"status": status, "body": String::from_utf8_lossy(&body)}),
        ),
        Ok(Err(e)) => json_response(StatusCode::BAD_GATEWAY, &json!({"error": e, "url": url})),
        Err(_) => json_response(
            StatusCode::BAD_GATEWAY,
            &json!({"error": "timed out after 10s", "url": url}),
        ),
    }
}

pub async fn fetch_url(url: &str) -> Result<(u16, Bytes), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| "only http:// URLs are supported".to_string())?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err("missing host".into());
    }
    // host, [v6]:port, host:port
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or("bad IPv6 literal")?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse::<u16>().map_err(|_| format!("bad port {p:?}"))?,
            None => 80,
        };
        (h, port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().map_err(|_| format!("bad port {p:?}"))?),
            None => (authority, 80),
        }
    };

    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("resolving {host}: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{host} resolved to no addresses"));
    }
    let mut last_err = String::new();
    let mut tcp = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last_err = format!("connecting to {addr}: {e}"),
        }
    }
    let tcp = tcp.ok_or(last_err)?;

    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let request = Request::get(path)
        .header(header::HOST, authority)
        .header(header::USER_AGENT, "webui-standin")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("building request: {e}"))?;
    let resp = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = resp.status().as_u16();
    let body = Limited::new(resp.into_body(), 1 << 20)
        .collect()
        .await
        .map_err(|e| format!("reading body: {e}"))?
        .to_bytes();
    Ok((status, body))
}

/// WebSocket echo. The upgrade is done by hand with hyper so the stand-in
/// sees exactly what the proxy forwarded.
fn websocket(stop: watch::Receiver<()>, mut req: Request<Incoming>) -> Response<Body> {
    let headers = req.headers();
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
                .unwrap_or(false)
        })
    };
    if req.method() != Method::GET
        || !has_token(header::CONNECTION, "upgrade")
        || !has_token(header::UPGRADE, "websocket")
    {
        return json_response(
            StatusCode::UPGRADE_REQUIRED,
            &json!({"error": "expected a WebSocket upgrade (GET, Connection: Upgrade, Upgrade: websocket)"}),
        );
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes() != b"13")
        .unwrap_or(true)
    {
        return bad_request("Sec-WebSocket-Version must be 13");
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return bad_request("missing Sec-WebSocket-Key");
    };
    let accept = derive_accept_key(key.as_bytes());
    // Accept the first offered subprotocol, if any: a client that asked for
    // one rejects a handshake that names none.
    let protocol = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.split(',').next())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());

    let on_upgrade = hyper::upgrade::on(&mut req);
    let mut stop = stop;
    tokio::spawn(async move {
        tokio::select! {
            _ = async {
                match on_upgrade.await {
                    Ok(upgraded) => {
                        let config = WebSocketConfig::default()
                            .max_message_size(Some(64 << 20))
                            .max_frame_size(Some(64 << 20));
                        let ws = WebSocketStream::from_raw_socket(
                            TokioIo::new(upgraded),
                            WsRole::Server,
                            Some(config),
                        )
                        .await;
                        ws_echo(ws).await;
                    }
                    Err(e) => eprintln!("standin: websocket upgrade failed: {e}"),
                }
            } => {}
            _ = stop.changed() => {}
        }
    });

    let mut resp = Response::new(Empty::new().boxed_unsync());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(p) = protocol.and_then(|p| HeaderValue::from_str(&p).ok()) {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, p);
    }
    resp
}

async fn ws_echo<S>(mut ws: WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(msg @ (Message::Text(_) | Message::Binary(_))) => {
                if ws.send(msg).await.is_err() {
                    break;
                }
            }
            // tungstenite queues the pong itself; flush so it leaves now.
            Ok(Message::Ping(_)) => {
                if ws.flush().await.is_err() {
                    break;
                }
            }
            // The close reply is queued by tungstenite too; keep polling
            // until the stream ends so it gets sent.
            Ok(Message::Close(_) | Message::Pong(_) | Message::Frame(_)) => {}
            Err(_) => break,
        }
    }
}

#[derive(Clone, Copy)]
enum OllamaApi {
    Chat,
    Generate,
}

const OLLAMA_TOKENS: &[&str] = &["Hello ", "from ", "the ", "stand-in ", "model."];

/// Pause between streamed tokens: `STANDIN_TOKEN_DELAY_MS` (default 50), so that a
/// browser test can see every token as its own state of the page.
fn token_delay() -> Duration {
    std::env::var("STANDIN_TOKEN_DELAY_MS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::from_millis(50), Duration::from_millis)
}

/// `/api/chat` and `/api/generate`: ndjson chunks 50 ms apart like real
/// Ollama, or one object with `"stream": false`.
async fn ollama(req: Request<Incoming>, api: OllamaApi) -> Response<Body> {
    let body = match Limited::new(req.into_body(), 16 << 20).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return bad_request(format!("reading body: {e}")),
    };
    let request: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return bad_request(format!("invalid JSON: {e}")),
        }
    };
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("standin:latest")
        .to_string();
    let streaming = request
        .get("stream")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    // `options.num_predict`: how many tokens to stream (default: the five of
    // OLLAMA_TOKENS), so a test can kill Ollama in the middle of a long generation.
    let tokens = request
        .pointer("/options/num_predict")
        .and_then(Value::as_u64)
        .map_or(OLLAMA_TOKENS.len(), |n| n.clamp(1, 100_000) as usize);

    let chunk = move |content: &str, done: bool| -> Value {
        let mut v = json!({
            "model": model,
            "created_at": rfc3339_now(),
            "done": done,
        });
        match api {
            OllamaApi::Chat => {
                v["message"] = json!({"role": "assistant", "content": content});
            }
            OllamaApi::Generate => v["response"] = json!(content),
        }
        if done {
            v["done_reason"] = json!("stop");
            v["total_duration"] = json!(OLLAMA_TOKENS.len() as u64 * 50_000_000);
            v["load_duration"] = json!(0);
            v["prompt_eval_count"] = json!(1);
            v["prompt_eval_duration"] = json!(0);
            v["eval_count"] = json!(OLLAMA_TOKENS.len());
            v["eval_duration"] = json!(OLLAMA_TOKENS.len() as u64 * 50_000_000);
        }
        v
    };

    if !streaming {
        return json_response(StatusCode::OK, &chunk(&OLLAMA_TOKENS.concat(), true));
    }
    // Tokens, then a final empty `done: true` chunk.
    let frames = stream::unfold(0usize, move |i| {
        let chunk = chunk.clone();
        async move {
            if i > tokens {
                return None;
            }
            if i > 0 {
                tokio::time::sleep(token_delay()).await;
            }
            let v = if i < tokens {
                chunk(OLLAMA_TOKENS[i % OLLAMA_TOKENS.len()], false)
            } else {
                chunk("", true)
            };
            Some((Ok(Frame::data(Bytes::from(format!("{v}\n")))), i + 1))
        }
    });
    stream_response("application/x-ndjson", frames)
}

/// `POST /ollama/...` (role openwebui): passed on to `$OLLAMA_BASE_URL/...` and the
/// answer streamed back frame by frame, like Open WebUI's own Ollama proxy route.
/// When Ollama goes away mid-stream the response simply ends (no final `done`).
async fn ollama_passthrough(req: Request<Incoming>) -> Response<Body> {
    let Some(base) = std::env::var("OLLAMA_BASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"error": "OLLAMA_BASE_URL is not set"}),
        );
    };
    let rest = req.uri().path().trim_start_matches("/ollama").to_string();
    let authority = base
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let body = match Limited::new(req.into_body(), 16 << 20).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return bad_request(format!("reading body: {e}")),
    };
    let upstream = async {
        let tcp = TcpStream::connect(authority.as_str())
            .await
            .map_err(|e| format!("connecting to {authority}: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let request = Request::post(rest.as_str())
            .header(header::HOST, authority.as_str())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| format!("building request: {e}"))?;
        sender
            .send_request(request)
            .await
            .map_err(|e| format!("request: {e}"))
    };
    let resp = match upstream.await {
        Ok(r) => r,
        Err(e) => return json_response(StatusCode::BAD_GATEWAY, &json!({"error": e})),
    };
    let status = resp.status();
    let frames = stream::unfold(resp.into_body(), |mut body| async move {
        loop {
            match body.frame().await? {
                Ok(f) => match f.into_data() {
                    Ok(data) => return Some((Ok(Frame::data(data)), body)),
                    Err(_) => continue,
                },
                Err(_) => return None,
            }
        }
    });
    let mut resp = stream_response("application/x-ndjson", frames);
    *resp.status_mut() = status;
    resp
}

/// `/api/pull`: a long NDJSON progress stream like a model download. The request
/// may carry `steps` (progress lines, default 5) and `interval_ms` (pause before
/// each, default 200), so a test can make it outlast a timeout.
async fn ollama_pull(req: Request<Incoming>) -> Response<Body> {
    let body = match Limited::new(req.into_body(), 1 << 20).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return bad_request(format!("reading body: {e}")),
    };
    let request: Value = serde_json::from_slice(&body).unwrap_or_else(|_| json!({}));
    let steps = request
        .get("steps")
        .and_then(Value::as_u64)
        .unwrap_or(5)
        .min(10_000);
    let pause = Duration::from_millis(
        request
            .get("interval_ms")
            .and_then(Value::as_u64)
            .unwrap_or(200)
            .min(60_000),
    );
    let total = steps.max(1) * 1000;
    let frames = stream::unfold(0u64, move |i| async move {
        let line = match i {
            0 => json!({"status": "pulling manifest"}),
            i if i <= steps => {
                tokio::time::sleep(pause).await;
                json!({"status": "pulling standin", "digest": "sha256:0", "total": total, "completed": i * 1000})
            }
            i if i == steps + 1 => json!({"status": "success"}),
            _ => return None,
        };
        Some((Ok(Frame::data(Bytes::from(format!("{line}\n")))), i + 1))
    });
    stream_response("application/x-ndjson", frames)
}

// ---------------------------------------------------------------------------
// Accounts (role openwebui)

/// Open WebUI's accounts as far as `webui up` sees them (checked against Open WebUI's
/// `main.py` and `routers/auths.py`): `GET /api/config` carries `"onboarding": true`
/// exactly while there is no user (and the caller is not signed in);
/// `POST /api/v1/auths/signup {name, email, password}` makes the first user `admin`
/// and turns public signup off, later ones get `pending` (403 once signup is off);
/// `POST /api/v1/auths/signin {email, password}` answers a token or 400;
/// `GET /api/v1/auths/` with `Authorization: Bearer` is the session user.
///
/// Users live in `DATA_DIR/standin-users.json` so they survive a recreated
/// container. `GET /standin/users` (test hook, no real counterpart) lists them with
/// how each signup arrived: its `X-Forwarded-For` (set by the proxy, absent for a
/// request made on loopback by webui itself), `User-Agent` and peer address.
/// `STANDIN_REFUSE_SIGNUP=1` in the environment makes every signup a 403.
mod accounts {
    use super::*;

    /// Serialises read-modify-write of the users file.
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn path(shared: &Shared) -> PathBuf {
        shared.config.data_dir.join("standin-users.json")
    }

    fn load(shared: &Shared) -> Value {
        std::fs::read(path(shared))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .filter(|v| v["users"].is_array())
            .unwrap_or_else(|| json!({"users": [], "enable_signup": true}))
    }

    fn save(shared: &Shared, v: &Value) -> io::Result<()> {
        std::fs::create_dir_all(&shared.config.data_dir)?;
        let tmp = path(shared).with_extension("tmp");
        std::fs::write(&tmp, v.to_string())?;
        std::fs::rename(tmp, path(shared))
    }

    fn hash(password: &str) -> String {
        hex_of(&Sha256::digest(format!("standin:{password}").as_bytes()))
    }

    fn hex_of(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn token_of(user: &Value) -> String {
        let seed = format!("{}:{}", user["id"], user["password_hash"]);
        format!("standin-{}", hex_of(&Sha256::digest(seed.as_bytes())))
    }

    fn public(user: &Value) -> Value {
        json!({
            "id": user["id"], "email": user["email"], "name": user["name"],
            "role": user["role"],
        })
    }

    fn with_token(user: &Value) -> Value {
        let mut v = public(user);
        v["token"] = json!(token_of(user));
        v["token_type"] = json!("Bearer");
        v
    }

    fn detail(status: StatusCode, msg: &str) -> Response<Body> {
        json_response(status, &json!({"detail": msg}))
    }

    fn bearer_user(users: &Value, req: &Request<Incoming>) -> Option<Value> {
        let token = req
            .headers()
            .get(header::AUTHORIZATION)?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")?
            .trim()
            .to_string();
        users["users"]
            .as_array()?
            .iter()
            .find(|u| token_of(u) == token)
            .cloned()
    }

    async fn form(req: Request<Incoming>) -> Result<Value, Response<Body>> {
        let body = Limited::new(req.into_body(), 64 * 1024)
            .collect()
            .await
            .map_err(|e| bad_request(format!("reading body: {e}")))?
            .to_bytes();
        serde_json::from_slice::<Value>(&body)
            .ok()
            .filter(|v| v["email"].is_string() && v["password"].is_string())
            .ok_or_else(|| {
                json_response(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &json!({"detail": "email and password are required"}),
                )
            })
    }

    pub(super) fn config(shared: &Shared, req: &Request<Incoming>) -> Response<Body> {
        let v = load(shared);
        let signed_in = bearer_user(&v, req).is_some();
        let none = v["users"].as_array().is_none_or(|u| u.is_empty());
        let mut out = json!({
            "status": true,
            "name": "Open WebUI",
            "version": shared.config.version,
            "features": {
                "auth": true,
                "enable_signup": v["enable_signup"].as_bool().unwrap_or(true),
                "enable_login_form": true,
            },
        });
        if none && !signed_in {
            out["onboarding"] = json!(true);
        }
        json_response(StatusCode::OK, &out)
    }

    pub(super) async fn signup(
        shared: &Shared,
        peer: SocketAddr,
        req: Request<Incoming>,
    ) -> Response<Body> {
        let header_text = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        };
        let forwarded_for = header_text("x-forwarded-for");
        let user_agent = header_text("user-agent");
        let f = match form(req).await {
            Ok(f) => f,
            Err(r) => return r,
        };
        let email = f["email"].as_str().unwrap_or("").trim().to_lowercase();
        let password = f["password"].as_str().unwrap_or("");
        if !email.contains('@') || email.starts_with('@') || email.ends_with('@') {
            return detail(StatusCode::BAD_REQUEST, "Invalid email format");
        }
        if password.len() > 72 {
            return detail(StatusCode::BAD_REQUEST, "Password too long");
        }
        // For tests of a refused signup (`webui up --env STANDIN_REFUSE_SIGNUP=1`).
        if std::env::var_os("STANDIN_REFUSE_SIGNUP").is_some_and(|v| v == "1") {
            return detail(
                StatusCode::FORBIDDEN,
                "Signup refused (STANDIN_REFUSE_SIGNUP)",
            );
        }
        let _g = LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let mut v = load(shared);
        let users = v["users"].as_array().cloned().unwrap_or_default();
        if !users.is_empty() && !v["enable_signup"].as_bool().unwrap_or(true) {
            return detail(
                StatusCode::FORBIDDEN,
                "You do not have permission to access this resource.",
            );
        }
        if users.iter().any(|u| u["email"] == json!(email)) {
            return detail(
                StatusCode::BAD_REQUEST,
                "Uh-oh! This email is already registered.",
            );
        }
        let user = json!({
            "id": format!("user-{}", users.len() + 1),
            "email": email,
            "name": f["name"].as_str().unwrap_or(""),
            "role": if users.is_empty() { "admin" } else { "pending" },
            "password_hash": hash(password),
            "created_at_ms": unix_ms(),
            "via": {
                "x_forwarded_for": forwarded_for,
                "user_agent": user_agent,
                "peer": peer.to_string(),
            },
        });
        if users.is_empty() {
            // Like Open WebUI: public signup closes once the admin exists.
            v["enable_signup"] = json!(false);
        }
        if let Some(list) = v["users"].as_array_mut() {
            list.push(user.clone());
        }
        if let Err(e) = save(shared, &v) {
            return detail(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("saving users: {e}"),
            );
        }
        json_response(StatusCode::OK, &with_token(&user))
    }

    pub(super) async fn signin(shared: &Shared, req: Request<Incoming>) -> Response<Body> {
        let f = match form(req).await {
            Ok(f) => f,
            Err(r) => return r,
        };
        let email = f["email"].as_str().unwrap_or("").trim().to_lowercase();
        let h = hash(f["password"].as_str().unwrap_or(""));
        let v = load(shared);
        let found = v["users"].as_array().and_then(|u| {
            u.iter()
                .find(|u| u["email"] == json!(email) && u["password_hash"] == json!(h))
        });
        match found {
            Some(u) => json_response(StatusCode::OK, &with_token(u)),
            None => detail(
                StatusCode::BAD_REQUEST,
                "The email or password provided is incorrect. Please check for typos and try logging in again.",
            ),
        }
    }

    pub(super) fn session(shared: &Shared, req: &Request<Incoming>) -> Response<Body> {
        match bearer_user(&load(shared), req) {
            Some(u) => json_response(StatusCode::OK, &public(&u)),
            None => detail(StatusCode::UNAUTHORIZED, "Not authenticated"),
        }
    }

    pub(super) fn list(shared: &Shared) -> Response<Body> {
        let v = load(shared);
        let users: Vec<Value> = v["users"]
            .as_array()
            .map(|u| {
                u.iter()
                    .map(|u| {
                        let mut p = public(u);
                        p["created_at_ms"] = u["created_at_ms"].clone();
                        p["via"] = u["via"].clone();
                        p
                    })
                    .collect()
            })
            .unwrap_or_default();
        json_response(
            StatusCode::OK,
            &json!({"users": users, "enable_signup": v["enable_signup"]}),
        )
    }
}

// ---------------------------------------------------------------------------
// The program (examples/standin.rs)

/// Settings of the stand-in program, read from the environment.
#[derive(Clone, Debug)]
pub struct EnvSettings {
    /// `HOST`, default `0.0.0.0`.
    pub host: String,
    /// `PORT`, default 8080 (11434 for role ollama).
    pub port: u16,
    /// `STANDIN_ROLE`, `STANDIN_VERSION`, `DATA_DIR`,
    /// `STANDIN_HEALTH_DELAY_SECS`, `STANDIN_NEVER_HEALTHY`.
    pub config: Config,
    /// `STANDIN_EXIT_AFTER_SECS`: exit with code 1 after this long.
    pub exit_after: Option<Duration>,
}

/// Read [`EnvSettings`]; `Err` describes the first bad variable.
pub fn settings_from_env() -> Result<EnvSettings, String> {
    fn var(name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.trim().is_empty())
    }
    fn secs(name: &str) -> Result<Option<Duration>, String> {
        var(name)
            .map(|v| {
                v.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e9)
                    .map(Duration::from_secs_f64)
                    .ok_or_else(|| format!("{name} must be a number of seconds, got {v:?}"))
            })
            .transpose()
    }

    let role = match var("STANDIN_ROLE").as_deref().map(str::trim) {
        None | Some("openwebui") | Some("open-webui") => Role::OpenWebUi,
        Some("ollama") => Role::Ollama,
        Some(other) => {
            return Err(format!(
                "STANDIN_ROLE must be openwebui or ollama, got {other:?}"
            ));
        }
    };
    let port = match var("PORT") {
        None => match role {
            Role::OpenWebUi => 8080,
            Role::Ollama => 11434,
        },
        Some(p) => p
            .trim()
            .parse::<u16>()
            .map_err(|_| format!("PORT must be a port number, got {p:?}"))?,
    };
    let never_healthy = matches!(
        var("STANDIN_NEVER_HEALTHY").as_deref().map(str::trim),
        Some("1" | "true" | "yes")
    );
    Ok(EnvSettings {
        host: var("HOST").unwrap_or_else(|| "0.0.0.0".to_string()),
        port,
        config: Config {
            role,
            version: var("STANDIN_VERSION").unwrap_or_else(|| "v1".to_string()),
            data_dir: var("DATA_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/app/backend/data")),
            health_delay: secs("STANDIN_HEALTH_DELAY_SECS")?.unwrap_or(Duration::ZERO),
            never_healthy,
            log: true,
        },
        exit_after: secs("STANDIN_EXIT_AFTER_SECS")?,
    })
}

/// Run the program until SIGTERM/SIGINT (exit code 0), or until
/// `STANDIN_EXIT_AFTER_SECS` (exit code 1). Returns the process exit code.
pub async fn main_from_env() -> i32 {
    let settings = match settings_from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("standin: {e}");
            return 2;
        }
    };
    let listener = match TcpListener::bind((settings.host.as_str(), settings.port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "standin: cannot listen on {}:{}: {e}",
                settings.host, settings.port
            );
            return 2;
        }
    };
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| format!("{}:{}", settings.host, settings.port));
    println!(
        "standin {} {} listening on {}",
        settings.config.role.as_str(),
        settings.config.version,
        addr
    );

    let exit_after = async {
        match settings.exit_after {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    // As PID 1 in a container nobody else handles SIGTERM; without this
    // `docker stop` would wait for its timeout.
    let signalled = async {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = tokio::signal::ctrl_c() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    };

    tokio::select! {
        _ = serve(listener, settings.config, std::future::pending()) => 0,
        _ = signalled => {
            println!("standin: signal received, exiting");
            0
        }
        _ = exit_after => {
            println!("standin: exiting with code 1 (STANDIN_EXIT_AFTER_SECS)");
            1
        }
    }
}
