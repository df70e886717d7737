//! Rows: an upstream that closes a response mid-stream, answers garbage, or accepts
//! and never answers, while a steady client keeps using the same proxy.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::common::{Row, Steady, Target};
use crate::support::webui::{self, Webui};

/// The part of a stream the upstream sends before it dies.
const BEFORE_CUT: &[&str] = &["data: one\n\n", "data: two\n\n", "data: three\n\n"];

/// A raw TCP upstream misbehaving by path: `/midstream` sends three SSE events then
/// closes without the last chunk, `/garbage` answers bytes that are not HTTP, `/hang`
/// reads the request and never answers; anything else is a small 200.
async fn faulty_upstream() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                loop {
                    let mut head = Vec::new();
                    let mut b = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match s.read(&mut b).await {
                            Ok(1) => head.push(b[0]),
                            _ => return,
                        }
                    }
                    let head = String::from_utf8_lossy(&head);
                    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                    match path.as_str() {
                        "/midstream" => {
                            let _ = s
                                .write_all(
                                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                                      transfer-encoding: chunked\r\n\r\n",
                                )
                                .await;
                            for ev in BEFORE_CUT {
                                let chunk = format!("{:x}\r\n{ev}\r\n", ev.len());
                                let _ = s.write_all(chunk.as_bytes()).await;
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                            return; // closed with no terminating chunk
                        }
                        "/garbage" => {
                            let _ = s.write_all(b"\x00\x17garbage, not HTTP\r\n\r\n").await;
                            return;
                        }
                        "/hang" => {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                            return;
                        }
                        _ => {
                            let _ = s
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                                .await;
                        }
                    }
                }
            });
        }
    });
    (addr, task)
}

/// The three upstream rows against one `webui proxy`.
pub async fn rows() -> Vec<Result<Row, (String, String)>> {
    let (up, server) = faulty_upstream().await;
    let state = webui::state_dir();
    let upstream = format!("http://{up}");
    let p = Webui::start(
        state.path(),
        &[
            "proxy",
            "--upstream",
            &upstream,
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--response-timeout",
            "2s",
        ],
        Duration::from_secs(20),
    );
    let t = Target::local(state.path(), p.https[0]);
    let c = t.client();
    let mut out = Vec::new();

    // Mid-stream close: the client gets what was sent, then a clean end of the stream
    // (an error, not a hang and not a silently "complete" response).
    let name = "upstream closes a response mid-stream".to_string();
    let mut steady = Steady::start(&t, "/ok", false);
    let fault_at = Instant::now();
    let r = c.get(t.url("/midstream")).send().await.unwrap();
    let status = r.status().as_u16();
    let mut got = String::new();
    let mut stream = r.bytes_stream();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        use futures_util::StreamExt;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(b) => got.push_str(&String::from_utf8_lossy(&b)),
                Err(_) => return "error",
            }
        }
        "end"
    })
    .await;
    let took = fault_at.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    steady.stop().await;
    let want = BEFORE_CUT.concat();
    out.push(
        match (status, ended, got == want, steady.failed()) {
            (200, Ok("error"), true, 0) => Ok(Row::new(&name)
                .counts(&steady)
                .recovery(None)
                .note(format!(
                    "the stream ends with an error {:.2} s after it started; all 3 events sent before the cut arrived",
                    took.as_secs_f64()
                ))),
            other => Err((name, format!("status/end/data/steady failures: {other:?}; got {got:?}"))),
        },
    );

    // Garbage: 502 at once.
    let name = "upstream answers garbage".to_string();
    let mut steady = Steady::start(&t, "/ok", false);
    let fault_at = Instant::now();
    let status = c
        .get(t.url("/garbage"))
        .header("accept", "application/json")
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    let took = fault_at.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    steady.stop().await;
    out.push(match (status, steady.failed()) {
        (502, 0) => Ok(Row::new(&name)
            .counts(&steady)
            .recovery(None)
            .note(format!("502 after {:.2} s", took.as_secs_f64()))),
        other => Err((name, format!("status, steady failures: {other:?}"))),
    });

    // Accepts, never answers: 504 after --response-timeout (2 s here).
    let name = "upstream accepts but never answers".to_string();
    let mut steady = Steady::start(&t, "/ok", false);
    let fault_at = Instant::now();
    let status = tokio::time::timeout(
        Duration::from_secs(15),
        c.get(t.url("/hang"))
            .header("accept", "application/json")
            .timeout(Duration::from_secs(20))
            .send(),
    )
    .await;
    let took = fault_at.elapsed();
    steady.stop().await;
    let status = match status {
        Ok(Ok(r)) => r.status().as_u16(),
        _ => 0,
    };
    out.push(match (status, steady.failed()) {
        (504, 0) => Ok(Row::new(&name)
            .counts(&steady)
            .recovery(None)
            .note(format!("504 after {:.2} s (--response-timeout 2s)", took.as_secs_f64()))),
        other => Err((
            name,
            format!(
                "no 504 within {:.0} s (status {}, steady failures {}) although --response-timeout is 2s",
                took.as_secs_f64(),
                other.0,
                other.1
            ),
        )),
    });
    drop(p);
    server.abort();
    out
}
