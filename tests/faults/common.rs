//! What every row of the fault matrix shares: the row record and the table, the
//! steady client counting failed requests, and many WebSockets through the proxy.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::support::webui;

/// One line of the fault table.
#[derive(Clone, Debug)]
pub struct Row {
    pub fault: String,
    pub sent: u64,
    pub failed: u64,
    /// "none" when every byte written before the fault reads back the same after it.
    pub data_lost: String,
    /// From the fault to the first good answer after it (or "-" when nothing failed).
    pub recovery: String,
    /// What the failed requests were, and anything a reader needs to trust the line.
    pub notes: String,
}

impl Row {
    pub fn new(fault: &str) -> Row {
        Row {
            fault: fault.to_string(),
            sent: 0,
            failed: 0,
            data_lost: "none".into(),
            recovery: "-".into(),
            notes: String::new(),
        }
    }

    pub fn counts(mut self, s: &Steady) -> Row {
        self.sent = s.sent();
        self.failed = s.failed();
        self
    }

    pub fn recovery(mut self, d: Option<Duration>) -> Row {
        self.recovery = d.map_or("-".into(), |d| format!("{:.2} s", d.as_secs_f64()));
        self
    }

    pub fn note(mut self, n: impl Into<String>) -> Row {
        self.notes = n.into();
        self
    }
}

/// The fault table as Markdown (the same text goes into docs/RELIABILITY.md).
pub fn table(rows: &[Result<Row, (String, String)>]) -> String {
    let mut t = String::from(
        "| fault | requests sent | failed | data lost | recovery time | notes |\n\
         |---|---:|---:|---|---:|---|\n",
    );
    for r in rows {
        match r {
            Ok(r) => t.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                r.fault, r.sent, r.failed, r.data_lost, r.recovery, r.notes
            )),
            Err((fault, why)) => {
                let why = why.replace('\n', " ").replace('|', "/");
                let why: String = why.chars().take(300).collect();
                t.push_str(&format!("| {fault} | - | - | - | - | FAILED: {why} |\n"));
            }
        }
    }
    t
}

/// One answer the steady client got: when, and the status (0: no answer at all).
#[derive(Clone, Copy, Debug)]
pub struct Answer {
    pub at: Instant,
    pub status: u16,
}

/// A client sending one request every 20 ms until stopped, recording every answer.
pub struct Steady {
    stop: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<Vec<Answer>>>,
    answers: Vec<Answer>,
}

/// How the steady client reaches the proxy.
#[derive(Clone)]
pub struct Target {
    pub tls: rustls::ClientConfig,
    /// Name in the URL (resolved to `addr`): matches the served certificate.
    pub host: String,
    pub addr: SocketAddr,
}

impl Target {
    /// The local CA of `state` (self-signed mode), addressed by IP like a LAN user.
    pub fn local(state: &Path, addr: SocketAddr) -> Target {
        Target {
            tls: webui::client_tls(&[&webui::local_ca(state)], &[b"http/1.1"]),
            host: addr.ip().to_string(),
            addr,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://{}:{}{path}", self.host, self.addr.port())
    }

    pub fn client(&self) -> reqwest::Client {
        let mut b = reqwest::Client::builder()
            .tls_backend_preconfigured(self.tls.clone())
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none());
        if self.host.parse::<std::net::IpAddr>().is_err() {
            b = b.resolve(&self.host, self.addr);
        }
        b.build().expect("client")
    }
}

impl Steady {
    /// Starts GETs of `path`; with `new_conn` every request makes its own connection
    /// (and TLS handshake), else one keep-alive client is reused.
    pub fn start(target: &Target, path: &str, new_conn: bool) -> Steady {
        let stop = Arc::new(AtomicBool::new(false));
        let (t, url, s) = (target.clone(), target.url(path), stop.clone());
        let task = tokio::spawn(async move {
            let mut answers = Vec::new();
            let mut client = t.client();
            while !s.load(Ordering::Relaxed) {
                if new_conn {
                    client = t.client();
                }
                let status = match client.get(&url).send().await {
                    Ok(r) => {
                        let st = r.status().as_u16();
                        // The whole body, so a cut response counts as failed.
                        if r.bytes().await.is_ok() { st } else { 0 }
                    }
                    Err(_) => 0,
                };
                answers.push(Answer {
                    at: Instant::now(),
                    status,
                });
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            answers
        });
        Steady {
            stop,
            task: Some(task),
            answers: Vec::new(),
        }
    }

    pub async fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.task.take() {
            self.answers = t.await.expect("steady client");
        }
    }

    pub fn answers(&self) -> &[Answer] {
        &self.answers
    }

    pub fn sent(&self) -> u64 {
        self.answers.len() as u64
    }

    pub fn failed(&self) -> u64 {
        self.answers.iter().filter(|a| a.status != 200).count() as u64
    }

    /// Statuses of the failed answers, e.g. `{503: 12, 0: 3}` as "503 x12, none x3".
    pub fn failures(&self) -> String {
        let mut counts = std::collections::BTreeMap::new();
        for a in self.answers.iter().filter(|a| a.status != 200) {
            *counts.entry(a.status).or_insert(0u64) += 1;
        }
        counts
            .iter()
            .map(|(s, n)| match s {
                0 => format!("no answer x{n}"),
                s => format!("{s} x{n}"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// From `since` to the first 200 after the last failure (None: nothing failed).
    pub fn recovery(&self, since: Instant) -> Option<Duration> {
        let last_bad = self.answers.iter().rposition(|a| a.status != 200)?;
        let ok = self.answers[last_bad + 1..]
            .iter()
            .find(|a| a.status == 200)?;
        Some(ok.at.saturating_duration_since(since))
    }

    /// Failed answers after `t`.
    pub fn failed_after(&self, t: Instant) -> u64 {
        self.answers
            .iter()
            .filter(|a| a.at > t && a.status != 200)
            .count() as u64
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// Many WebSockets to the stand-in's echo through the proxy.
pub struct Sockets {
    pub open: Vec<Ws>,
}

impl Sockets {
    /// Opens `n` websockets to `/ws`, 50 at a time.
    pub async fn open(target: &Target, n: usize) -> Sockets {
        let mut open = Vec::with_capacity(n);
        for batch in 0..n.div_ceil(50) {
            let k = 50.min(n - batch * 50);
            let opened =
                futures_util::future::join_all((0..k).map(|_| one_ws(target.clone()))).await;
            for (i, ws) in opened.into_iter().enumerate() {
                open.push(ws.unwrap_or_else(|e| panic!("websocket {}: {e}", batch * 50 + i)));
            }
        }
        Sockets { open }
    }

    /// Sends a message on every socket and counts the ones echoed back within 10 s.
    pub async fn echoing(&mut self, text: &str) -> usize {
        let rounds = self.open.iter_mut().enumerate().map(|(i, ws)| async move {
            let msg = format!("{text} {i}");
            let round = async {
                ws.send(Message::text(msg.clone())).await.ok()?;
                loop {
                    match ws.next().await? {
                        Ok(Message::Text(t)) if t.as_str() == msg => return Some(()),
                        Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                        _ => return None,
                    }
                }
            };
            tokio::time::timeout(Duration::from_secs(10), round)
                .await
                .ok()
                .flatten()
                .is_some()
        });
        futures_util::future::join_all(rounds)
            .await
            .into_iter()
            .filter(|ok| *ok)
            .count()
    }

    /// Waits until every socket has ended (close frame, EOF or error); returns how many
    /// ended within `limit` (the rest hang).
    pub async fn ended_within(&mut self, limit: Duration) -> usize {
        let ends = self.open.iter_mut().map(|ws| async move {
            let end = async { while let Some(Ok(_)) = ws.next().await {} };
            tokio::time::timeout(limit, end).await.is_ok()
        });
        futures_util::future::join_all(ends)
            .await
            .into_iter()
            .filter(|ok| *ok)
            .count()
    }
}

async fn one_ws(t: Target) -> Result<Ws, String> {
    let tcp = tokio::net::TcpStream::connect(t.addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls_pki_types::ServerName::try_from(t.host.clone()).map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(t.tls.clone()))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let url = format!("wss://{}:{}/ws", t.host, t.addr.port());
    tokio_tungstenite::client_async(url, tls)
        .await
        .map(|(ws, _)| ws)
        .map_err(|e| e.to_string())
}

/// Writes `bytes` through the proxy into the stand-in's data dir (the volume).
pub async fn write_data(c: &reqwest::Client, t: &Target, name: &str, bytes: &[u8]) {
    let r = c
        .post(t.url(&format!("/data/write?name={name}")))
        .body(bytes.to_vec())
        .send()
        .await
        .expect("data write");
    assert_eq!(r.status().as_u16(), 200, "{:?}", r.text().await);
}

/// Reads it back; "none" when identical, else what differs.
pub async fn data_lost(c: &reqwest::Client, t: &Target, name: &str, bytes: &[u8]) -> String {
    match c
        .get(t.url(&format!("/data/read?name={name}")))
        .send()
        .await
    {
        Ok(r) if r.status() == 200 => match r.bytes().await {
            Ok(b) if b.as_ref() == bytes => "none".into(),
            Ok(b) => format!("{name}: {} of {} bytes differ", b.len(), bytes.len()),
            Err(e) => format!("{name}: read failed: {e}"),
        },
        Ok(r) => format!("{name}: HTTP {}", r.status()),
        Err(e) => format!("{name}: {e}"),
    }
}

/// Bytes that tell themselves apart: a counter pattern of `len` bytes.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Runs rows as their own task, so a panic in one becomes a failed row of the table
/// instead of taking the rows before it along.
pub async fn row_task<F>(name: &str, rows: F) -> Vec<Result<Row, (String, String)>>
where
    F: std::future::Future<Output = Vec<Result<Row, (String, String)>>> + Send + 'static,
{
    match tokio::spawn(rows).await {
        Ok(rows) => rows,
        Err(e) => {
            let why = match e.try_into_panic() {
                Ok(p) => p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panicked".into()),
                Err(e) => e.to_string(),
            };
            vec![Err((name.to_string(), why))]
        }
    }
}
