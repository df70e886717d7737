//! A webhook on loopback for `--notify-url-file`: a plain HTTP/1.1 server that keeps
//! the JSON body of each POST to its URL (whose path stands in for a webhook's secret)
//! and answers 200.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use serde_json::Value;

/// Starts it; its URL and the bodies received so far.
pub fn start() -> (String, Arc<Mutex<Vec<Value>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook/secret-part", listener.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut length = 0;
            let mut request_line = String::new();
            let _ = reader.read_line(&mut request_line);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((k, v)) = line.split_once(':')
                    && k.eq_ignore_ascii_case("content-length")
                {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            if request_line.starts_with("POST /hook/secret-part ")
                && let Ok(v) = serde_json::from_slice::<Value>(&body)
            {
                sink.lock().unwrap().push(v);
            }
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, got)
}

/// Whether a message containing `needle` arrives within `limit`.
pub fn heard(posted: &Mutex<Vec<Value>>, needle: &str, limit: std::time::Duration) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if posted
            .lock()
            .unwrap()
            .iter()
            .any(|v| v["message"].as_str().is_some_and(|m| m.contains(needle)))
        {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    false
}
