//! Checks the test stand-in upstream (tests/support/standin.rs) directly,
//! without the proxy, so proxy test failures can't be blamed on it.

mod support;

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use sha2::{Digest, Sha256};
use support::standin::{self, Config};
use tokio_tungstenite::tungstenite::Message;

fn client() -> reqwest::Client {
    // reqwest is built with `rustls-no-provider`: it wants a process-wide
    // crypto provider even for plain http://.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().build().expect("reqwest client")
}

#[tokio::test]
async fn health_and_not_found() {
    let s = standin::spawn().await;
    let c = client();
    let r = c.get(s.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], true);
    assert_eq!(v["version"], "v1");

    s.set_healthy(false);
    let r = c.get(s.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    s.set_healthy(true);

    let r = c.get(s.url("/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = c.get(s.url("/status/418")).send().await.unwrap();
    assert_eq!(r.status(), 418);
    let r = c.get(s.url("/status/abc")).send().await.unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn health_delay_and_restart_on_same_port() {
    let config = Config {
        health_delay: Duration::from_millis(300),
        ..Config::default()
    };
    let s = standin::spawn_with(config.clone()).await;
    let c = client();
    assert_eq!(c.get(s.url("/health")).send().await.unwrap().status(), 503);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(c.get(s.url("/health")).send().await.unwrap().status(), 200);

    // Stopping also drops live connections, WebSockets included, like a
    // crashed upstream.
    let tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(s.ws_url("/ws"), tcp)
        .await
        .unwrap();
    let addr = s.stop().await;
    assert!(c.get(format!("http://{addr}/health")).send().await.is_err());
    let end = tokio::time::timeout(Duration::from_secs(2), ws.next())
        .await
        .expect("websocket still open after stop");
    assert!(!matches!(end, Some(Ok(Message::Text(_)))));

    let s = standin::spawn_at(addr, Config::default()).await.unwrap();
    assert_eq!(s.addr, addr);
    assert_eq!(c.get(s.url("/health")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn echo_shows_request() {
    let s = standin::spawn().await;
    let v: Value = client()
        .post(s.url("/echo/a/b?x=1&y=2"))
        .header("X-Forwarded-For", "10.0.0.1")
        .header("X-Multi", "one")
        .header("X-Multi", "two")
        .body("hello")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["method"], "POST");
    assert_eq!(v["path"], "/echo/a/b");
    assert_eq!(v["query"], "x=1&y=2");
    assert_eq!(v["version"], "HTTP/1.1");
    assert_eq!(v["headers"]["host"], s.addr.to_string());
    assert_eq!(v["headers"]["x-forwarded-for"], "10.0.0.1");
    assert_eq!(v["headers"]["x-multi"], serde_json::json!(["one", "two"]));
    assert_eq!(v["body"], "hello");
    assert_eq!(v["body_len"], 5);
}

#[tokio::test]
async fn sse_frames_arrive_spaced() {
    let s = standin::spawn().await;
    let r = client()
        .get(s.url("/sse?n=5&interval_ms=100"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let start = Instant::now();
    let mut arrivals = Vec::new();
    let mut text = String::new();
    let mut body = r.bytes_stream();
    while let Some(chunk) = body.next().await {
        arrivals.push(start.elapsed());
        text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    assert_eq!(text.matches("data: ").count(), 5, "{text}");
    assert!(arrivals.len() > 1, "all events arrived in one chunk");
    let spread = *arrivals.last().unwrap() - arrivals[0];
    assert!(spread >= Duration::from_millis(300), "{arrivals:?}");
}

#[tokio::test]
async fn websocket_echo_text_and_large_binary() {
    let s = standin::spawn().await;
    for path in ["/ws", "/ws/socket.io/?EIO=4&transport=websocket"] {
        let tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        let (mut ws, resp) = tokio_tungstenite::client_async(s.ws_url(path), tcp)
            .await
            .unwrap();
        assert_eq!(resp.status(), 101);

        ws.send(Message::text("hello")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));

        let big: Vec<u8> = (0..(1 << 20)).map(|i| (i % 253) as u8).collect();
        ws.send(Message::binary(big.clone())).await.unwrap();
        match ws.next().await.unwrap().unwrap() {
            Message::Binary(b) => assert!(b[..] == big[..], "binary echo differs"),
            other => panic!("expected binary, got {other:?}"),
        }

        ws.send(Message::Ping("p".into())).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::Pong("p".into()));

        ws.close(None).await.unwrap();
    }
}

#[tokio::test]
async fn upload_hash_and_download_pattern() {
    let s = standin::spawn().await;
    let c = client();
    let data: Vec<u8> = (0..(3 << 20) + 17).map(|i| (i * 7 % 256) as u8).collect();
    let v: Value = c
        .post(s.url("/upload"))
        .body(data.clone())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["bytes"], data.len() as u64);
    assert_eq!(v["sha256"], hex::encode(Sha256::digest(&data)));

    let n = 200_000u64;
    let r = c
        .get(s.url(&format!("/download?bytes={n}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.content_length(), Some(n));
    let body = r.bytes().await.unwrap();
    assert_eq!(body.len() as u64, n);
    assert!(body.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
}

#[tokio::test]
async fn data_env_and_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let s = standin::spawn_with(Config {
        data_dir: dir.path().join("data"),
        ..Config::default()
    })
    .await;
    let c = client();
    let r = c
        .post(s.url("/data/write?name=f.txt"))
        .body("kept")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c.get(s.url("/data/read?name=f.txt")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "kept");
    let r = c
        .get(s.url("/data/read?name=missing"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = c.get(s.url("/data/read?name=..%2Fx")).send().await.unwrap();
    assert_eq!(r.status(), 400);

    let r = c.get(s.url("/env?name=PATH")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(s.url("/env?name=STANDIN_SURELY_UNSET_VAR"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let ollama = standin::spawn_with(Config::ollama()).await;
    let v: Value = c
        .get(s.url(&format!(
            "/fetch?url=http://localhost:{}/api/version",
            ollama.addr.port()
        )))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["status"], 200, "{v}");
    assert!(v["body"].as_str().unwrap().contains("0.0.0-standin"), "{v}");

    // Nothing listens on the stopped instance's port any more.
    let dead = ollama.stop().await;
    let r = c
        .get(s.url(&format!("/fetch?url=http://{dead}/")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
}

#[tokio::test]
async fn ollama_chat_streams_lines() {
    let s = standin::spawn_with(Config::ollama()).await;
    let c = client();
    let tags: Value = c
        .get(s.url("/api/tags"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tags["models"][0]["name"], "standin:latest");

    let r = c
        .post(s.url("/api/chat"))
        .body(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let mut body = r.bytes_stream();
    let mut chunks = 0;
    let mut text = String::new();
    while let Some(chunk) = body.next().await {
        chunks += 1;
        text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 3, "{text}");
    assert!(chunks > 1, "all lines arrived in one chunk");
    assert_eq!(lines[0]["model"], "m");
    assert_eq!(lines[0]["message"]["role"], "assistant");
    assert_eq!(lines.last().unwrap()["done"], true);

    let v: Value = c
        .post(s.url("/api/generate"))
        .body(r#"{"prompt":"hi","stream":false}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["done"], true);
    assert!(v["response"].as_str().unwrap().len() > 1);

    let r = c
        .post(s.url("/api/chat"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}
