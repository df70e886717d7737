//! Measuring client for `bench/run.sh`: what wrk and h2load don't measure.
//!
//! Every subcommand prints one line of `key=value` pairs on stdout, for `bench/run.py`.
//!
//! - `handshakes URL SECS CONC [resume]`: new TCP + TLS connections, one `GET` each
//!   (`Connection: close`), from CONC loops for SECS seconds. Without `resume` every
//!   handshake is a full one (client session cache disabled); with it, the client keeps
//!   and offers the server's session tickets / ids (TLS 1.3 PSK resumption).
//! - `sse URL STREAMS EVENTS INTERVAL_MS`: STREAMS concurrent `GET /sse?n=..`; for each
//!   event, arrival time minus the `sent_ms` it carries (the stand-in's wall clock).
//! - `ws URL CONNS SECS SIZE`: CONNS websockets, each sending a SIZE-byte message and
//!   waiting for its echo, for SECS seconds: messages/s and round trip percentiles.
//! - `ws-idle URL CONNS HOLD_SECS`: opens CONNS websockets, prints `ready=N`, holds them
//!   until stdin closes (or HOLD_SECS), then closes them.
//! - `download URL` / `upload URL BYTES`: one large body over one connection.
//!
//! Certificates are not verified (the bench uses one self-signed certificate); the
//! client does no signature checks so the server's handshake cost dominates.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

#[derive(Clone)]
struct Target {
    tls: bool,
    addr: SocketAddr,
    host: String,
    path: String,
}

fn parse(url: &str) -> Target {
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("wss://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("ws://") {
        (false, r)
    } else {
        panic!("unsupported url {url}")
    };
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    Target {
        tls,
        addr: hostport.parse().expect("url host must be IP:PORT"),
        host: hostport.to_string(),
        path: path.to_string(),
    }
}

#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn tls_config(resume: bool, alpn_h1: bool) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
        .with_no_client_auth();
    if !resume {
        cfg.resumption = rustls::client::Resumption::disabled();
    }
    if alpn_h1 {
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    }
    Arc::new(cfg)
}

async fn connect(t: &Target, cfg: &Arc<ClientConfig>) -> Res<Box<dyn Io>> {
    let tcp = TcpStream::connect(t.addr).await?;
    tcp.set_nodelay(true)?;
    if !t.tls {
        return Ok(Box::new(tcp));
    }
    let name = ServerName::IpAddress(t.addr.ip().into());
    let tls = tokio_rustls::TlsConnector::from(cfg.clone())
        .connect(name, tcp)
        .await?;
    Ok(Box::new(tls))
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn unix_ms_f() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

async fn handshakes(t: Target, secs: u64, conc: usize, resume: bool) -> Res<()> {
    let cfg = tls_config(resume, true);
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let resumed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (t, cfg, done, errors, resumed, stop) = (
            t.clone(),
            cfg.clone(),
            done.clone(),
            errors.clone(),
            resumed.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let req = format!(
                "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                t.path, t.host
            );
            let mut buf = vec![0u8; 16 << 10];
            while !stop.load(Ordering::Relaxed) {
                let one = async {
                    let tcp = TcpStream::connect(t.addr).await?;
                    tcp.set_nodelay(true)?;
                    let name = ServerName::IpAddress(t.addr.ip().into());
                    let mut tls = tokio_rustls::TlsConnector::from(cfg.clone())
                        .connect(name, tcp)
                        .await?;
                    if tls.get_ref().1.handshake_kind()
                        == Some(rustls::HandshakeKind::Resumed)
                    {
                        resumed.fetch_add(1, Ordering::Relaxed);
                    }
                    tls.write_all(req.as_bytes()).await?;
                    let mut got = 0;
                    loop {
                        match tls.read(&mut buf).await {
                            Ok(0) => break,
                            Ok(n) => got += n,
                            // Some servers close without close_notify.
                            Err(_) if got > 0 => break,
                            Err(e) => return Err(e.into()),
                        }
                    }
                    if !buf.starts_with(b"HTTP/1.1 200") {
                        return Err::<(), Box<dyn std::error::Error + Send + Sync>>(
                            "not 200".into(),
                        );
                    }
                    Ok(())
                };
                match one.await {
                    Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                    Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
    }
    println!(
        "conns_per_s={:.1} conns={} errors={} resumed={}",
        n as f64 / elapsed,
        n,
        errors.load(Ordering::Relaxed),
        resumed.load(Ordering::Relaxed)
    );
    Ok(())
}

/// Finds `"sent_ms":<digits>` occurrences in `buf[from..]`; returns them and where
/// scanning may resume (an incomplete match at the end is kept for the next read).
fn scan_sent(buf: &[u8], out: &mut Vec<u64>) -> usize {
    const KEY: &[u8] = b"\"sent_ms\":";
    let mut i = 0;
    let mut keep = buf.len().saturating_sub(KEY.len() + 20);
    while let Some(p) = find(&buf[i..], KEY) {
        let s = i + p + KEY.len();
        let mut e = s;
        while e < buf.len() && buf[e].is_ascii_digit() {
            e += 1;
        }
        if e == buf.len() {
            // Number may continue in the next read.
            return i + p;
        }
        if let Ok(v) = std::str::from_utf8(&buf[s..e]).unwrap().parse() {
            out.push(v);
        }
        i = e;
        keep = keep.max(e);
    }
    keep.max(i)
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

async fn sse(t: Target, streams: usize, events: u64, interval: u64) -> Res<()> {
    let cfg = tls_config(false, true);
    let mut tasks = Vec::new();
    for k in 0..streams {
        let (t, cfg) = (t.clone(), cfg.clone());
        tasks.push(tokio::spawn(async move {
            // Spread the streams over the interval so events don't all coincide.
            tokio::time::sleep(Duration::from_micros(
                interval * 1000 * k as u64 / streams as u64,
            ))
            .await;
            let mut io = connect(&t, &cfg).await?;
            let req = format!(
                "GET /sse?n={events}&interval_ms={interval} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                t.host
            );
            io.write_all(req.as_bytes()).await?;
            let mut lat = Vec::new();
            let mut buf = Vec::with_capacity(64 << 10);
            let mut chunk = vec![0u8; 16 << 10];
            let mut seen = Vec::new();
            while (lat.len() as u64) < events {
                let n = io.read(&mut chunk).await?;
                if n == 0 {
                    break;
                }
                let now = unix_ms_f();
                buf.extend_from_slice(&chunk[..n]);
                seen.clear();
                let consumed = scan_sent(&buf, &mut seen);
                for s in &seen {
                    lat.push(now - *s as f64);
                }
                buf.drain(..consumed);
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(lat)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        match t.await? {
            Ok(l) => all.extend(l),
            Err(_) => errors += 1,
        }
    }
    all.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "events={} errors={} p50_ms={:.3} p90_ms={:.3} p99_ms={:.3} max_ms={:.3} mean_ms={:.3}",
        all.len(),
        errors,
        pct(&all, 0.5),
        pct(&all, 0.9),
        pct(&all, 0.99),
        all.last().copied().unwrap_or(f64::NAN),
        all.iter().sum::<f64>() / all.len().max(1) as f64
    );
    Ok(())
}

async fn ws_open(
    t: &Target,
    cfg: &Arc<ClientConfig>,
) -> Res<tokio_tungstenite::WebSocketStream<Box<dyn Io>>> {
    let io = connect(t, cfg).await?;
    let scheme = if t.tls { "wss" } else { "ws" };
    let url = format!("{scheme}://{}{}", t.host, t.path);
    let (ws, _) = tokio_tungstenite::client_async(url, io).await?;
    Ok(ws)
}

async fn ws(t: Target, conns: usize, secs: u64, size: usize) -> Res<()> {
    let cfg = tls_config(false, true);
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let payload = "x".repeat(size);
    // Open them all first, then start the clock.
    let mut sockets = Vec::new();
    for _ in 0..conns {
        sockets.push(ws_open(&t, &cfg).await?);
    }
    let start = Instant::now();
    for mut ws in sockets {
        let (stop, payload) = (stop.clone(), payload.clone());
        tasks.push(tokio::spawn(async move {
            let mut rtts: Vec<f64> = Vec::with_capacity(1 << 16);
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                if ws.send(Message::text(payload.clone())).await.is_err() {
                    break;
                }
                match ws.next().await {
                    Some(Ok(Message::Text(_))) => {
                        rtts.push(t0.elapsed().as_secs_f64() * 1e6);
                    }
                    _ => break,
                }
            }
            let _ = ws.close(None).await;
            rtts
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    let mut all = Vec::new();
    for t in tasks {
        if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(3), t).await {
            all.extend(r);
        }
    }
    all.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "msgs_per_s={:.1} msgs={} p50_us={:.1} p99_us={:.1}",
        all.len() as f64 / elapsed,
        all.len(),
        pct(&all, 0.5),
        pct(&all, 0.99)
    );
    Ok(())
}

async fn ws_idle(t: Target, conns: usize, hold: u64) -> Res<()> {
    let cfg = tls_config(false, true);
    let sem = Arc::new(tokio::sync::Semaphore::new(50));
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (t, cfg, sem) = (t.clone(), cfg.clone(), sem.clone());
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire().await;
            let mut ws = ws_open(&t, &cfg).await?;
            // One echo proves the tunnel is up end to end.
            ws.send(Message::text("hi")).await?;
            ws.next().await.ok_or("closed")??;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(ws)
        }));
    }
    let mut open = Vec::new();
    let mut errors = 0;
    for t in tasks {
        match t.await? {
            Ok(ws) => open.push(ws),
            Err(_) => errors += 1,
        }
    }
    println!("ready={} errors={}", open.len(), errors);
    std::io::stdout().flush()?;
    let mut stdin = tokio::io::stdin();
    let mut b = [0u8; 1];
    let _ = tokio::time::timeout(Duration::from_secs(hold), stdin.read(&mut b)).await;
    drop(open);
    Ok(())
}

async fn download(t: Target) -> Res<()> {
    let cfg = tls_config(false, true);
    let mut io = connect(&t, &cfg).await?;
    let start = Instant::now();
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        t.path, t.host
    );
    io.write_all(req.as_bytes()).await?;
    let mut buf = vec![0u8; 256 << 10];
    let mut total: u64 = 0;
    loop {
        match io.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(_) if total > 0 => break,
            Err(e) => return Err(e.into()),
        }
    }
    let s = start.elapsed().as_secs_f64();
    println!(
        "bytes={} secs={:.3} mb_per_s={:.1}",
        total,
        s,
        total as f64 / s / 1e6
    );
    Ok(())
}

async fn upload(t: Target, bytes: u64) -> Res<()> {
    let cfg = tls_config(false, true);
    let mut io = connect(&t, &cfg).await?;
    let start = Instant::now();
    let req = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Length: {bytes}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
        t.path, t.host
    );
    io.write_all(req.as_bytes()).await?;
    let block = vec![7u8; 256 << 10];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        io.write_all(&block[..n]).await?;
        left -= n as u64;
    }
    io.flush().await?;
    let mut resp = Vec::new();
    let mut buf = vec![0u8; 16 << 10];
    loop {
        match io.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => resp.extend_from_slice(&buf[..n]),
            Err(_) if !resp.is_empty() => break,
            Err(e) => return Err(e.into()),
        }
    }
    let s = start.elapsed().as_secs_f64();
    let ok = resp.starts_with(b"HTTP/1.1 200")
        && find(&resp, format!("\"bytes\":{bytes}").as_bytes()).is_some();
    println!(
        "bytes={} secs={:.3} mb_per_s={:.1} ok={}",
        bytes,
        s,
        bytes as f64 / s / 1e6,
        ok
    );
    Ok(())
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| -> &str { args.get(i).map(String::as_str).unwrap_or("") };
    let num = |i: usize| -> u64 { arg(i).parse().unwrap_or_else(|_| panic!("arg {i}")) };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let t = parse(arg(2));
    rt.block_on(async {
        match arg(1) {
            "handshakes" => handshakes(t, num(3), num(4) as usize, arg(5) == "resume").await,
            "sse" => sse(t, num(3) as usize, num(4), num(5)).await,
            "ws" => ws(t, num(3) as usize, num(4), num(5) as usize).await,
            "ws-idle" => ws_idle(t, num(3) as usize, num(4)).await,
            "download" => download(t).await,
            "upload" => upload(t, num(3)).await,
            other => Err(format!("unknown subcommand {other:?}").into()),
        }
    })
}
