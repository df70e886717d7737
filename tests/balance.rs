//! `webui proxy` in front of several Open WebUI replicas: the real binary, real TLS,
//! stand-in replicas each in its own process (this test binary run again as the
//! ignored test `standin_replica`), told apart by the `x-replica` header the
//! stand-in sends back from its `REPLICA` variable.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use support::webui::{self, Webui};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const START: Duration = Duration::from_secs(20);

/// Not a test: the body of a stand-in replica process (see [`Replica`]).
#[test]
#[ignore = "run by the other tests as a stand-in replica process"]
fn standin_replica() {
    if std::env::var_os("BALANCE_STANDIN").is_none() {
        return;
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    std::process::exit(rt.block_on(support::standin::main_from_env()));
}

/// A stand-in Open WebUI in its own process, killed on drop.
struct Replica {
    child: Option<Child>,
    name: String,
    host: String,
    port: u16,
    data: tempfile::TempDir,
}

impl Replica {
    fn start(name: &str) -> Replica {
        Replica::start_on(name, "127.0.0.1", support::pebble::free_port())
    }

    fn start_on(name: &str, host: &str, port: u16) -> Replica {
        let data = tempfile::tempdir().expect("tempdir");
        let child = Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", "standin_replica", "--ignored", "--nocapture"])
            .env("BALANCE_STANDIN", "1")
            .env("REPLICA", name)
            .env("HOST", host)
            .env("PORT", port.to_string())
            .env("DATA_DIR", data.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn stand-in replica");
        let r = Replica {
            child: Some(child),
            name: name.to_string(),
            host: host.to_string(),
            port,
            data,
        };
        let deadline = Instant::now() + START;
        while std::net::TcpStream::connect((host, port)).is_err() {
            assert!(Instant::now() < deadline, "replica {name} did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        r
    }

    fn url(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn has_data(&self, name: &str) -> bool {
        self.data.path().join(name).exists()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `webui proxy` in front of every upstream URL given.
fn proxy(state: &Path, upstreams: &[String], extra: &[&str]) -> Webui {
    let mut args = vec![
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
    ];
    for u in upstreams {
        args.extend(["--upstream", u.as_str()]);
    }
    args.extend_from_slice(extra);
    Webui::start(state, &args, START)
}

fn urls(replicas: &[&Replica]) -> Vec<String> {
    replicas.iter().map(|r| r.url()).collect()
}

fn replica_of(res: &reqwest::Response) -> String {
    res.headers()
        .get("x-replica")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("(none)")
        .to_string()
}

async fn who(c: &reqwest::Client, url: &str) -> String {
    let res = c.get(url).send().await.expect("request");
    assert_eq!(res.status(), 200, "{url}");
    replica_of(&res)
}

fn tally(names: &[String]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for n in names {
        *m.entry(n.clone()).or_default() += 1;
    }
    m
}

fn client(state: &Path) -> reqwest::Client {
    webui::https_client(&webui::local_ca(state), false)
}

/// Stand-in replicas named `names`, and `webui proxy` in front of all of them.
/// Bind every field when taking it apart: a dropped replica is a killed one.
struct Site {
    replicas: Vec<Replica>,
    p: Webui,
    cl: reqwest::Client,
    state: tempfile::TempDir,
}

fn site(names: &[&str]) -> Site {
    let replicas: Vec<Replica> = names.iter().map(|n| Replica::start(n)).collect();
    let state = webui::state_dir();
    let p = proxy(
        state.path(),
        &urls(&replicas.iter().collect::<Vec<_>>()),
        &[],
    );
    let cl = client(state.path());
    Site {
        replicas,
        p,
        cl,
        state,
    }
}

#[tokio::test]
async fn requests_spread_over_three_replicas_and_the_access_log_names_each() {
    let Site {
        replicas,
        p,
        cl,
        state: _state,
    } = site(&["a", "b", "c"]);
    let t = round(&cl, &p, 30).await;
    for r in ["a", "b", "c"] {
        assert!(
            t.get(r).copied().unwrap_or(0) >= 5,
            "each replica gets a share of an idle site's requests: {t:?}"
        );
    }
    assert!(
        p.wait_for_output(
            &format!("upstream=http://127.0.0.1:{}/", replicas[1].port),
            START
        ),
        "the access log names the replica that answered:\n{}",
        p.output_text()
    );
}

#[tokio::test]
async fn a_replica_busy_with_a_slow_request_or_a_stream_gets_no_new_one_while_others_are_idle() {
    let Site {
        replicas: _replicas,
        p,
        cl,
        state: _state,
    } = site(&["a", "b", "c"]);
    let slow = tokio::spawn({
        let cl = cl.clone();
        let url = p.https_url("/slow?delay_ms=4000");
        async move {
            let res = cl.get(url).send().await.expect("slow request");
            assert_eq!(res.status(), 200);
            replica_of(&res)
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut seen = Vec::new();
    for _ in 0..12 {
        seen.push(who(&cl, &p.https_url("/api/version")).await);
    }
    let busy = slow.await.expect("slow task");
    let t = tally(&seen);
    assert!(
        !t.contains_key(&busy),
        "least outstanding: nothing went to {busy}, busy with the slow request: {t:?}"
    );
    assert_eq!(t.len(), 2, "the two idle replicas share the rest: {t:?}");

    // A response still streaming its body counts as outstanding too (a generation).
    let mut stream = cl
        .get(p.https_url("/ndjson?n=8&interval_ms=500"))
        .send()
        .await
        .expect("stream");
    let streaming = replica_of(&stream);
    stream.chunk().await.expect("first line").expect("a line");
    let t = round(&cl, &p, 12).await;
    assert!(
        !t.contains_key(&streaming) && t.len() == 2,
        "nothing went to {streaming}, streaming a response: {t:?}"
    );
    // Once the stream is done (read to its end), it is back in rotation.
    while stream.chunk().await.expect("line").is_some() {}
    assert!(round(&cl, &p, 6).await.contains_key(&streaming));
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A websocket through the proxy with an optional Cookie; the stream, the replica
/// that answered the handshake and the Set-Cookie it carried.
async fn ws_connect(
    p: &Webui,
    ca: &Path,
    path: &str,
    cookie: Option<&str>,
) -> (Ws, String, Option<String>) {
    let tls = webui::client_tls(&[ca], &[b"http/1.1"]);
    let mut req = format!("wss://{}{}", p.https[0], path)
        .into_client_request()
        .expect("request");
    if let Some(c) = cookie {
        req.headers_mut()
            .insert("cookie", c.parse().expect("cookie header"));
    }
    let (ws, res) = tokio_tungstenite::connect_async_tls_with_config(
        req,
        None,
        false,
        Some(tokio_tungstenite::Connector::Rustls(std::sync::Arc::new(
            tls,
        ))),
    )
    .await
    .expect("websocket handshake through the proxy");
    assert_eq!(res.status(), 101);
    let header = |n: &str| {
        res.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    (
        ws,
        header("x-replica").unwrap_or_default(),
        header("set-cookie"),
    )
}

#[tokio::test]
async fn socket_io_polling_and_websocket_stay_on_one_replica_while_other_paths_spread() {
    let Site {
        replicas,
        p,
        cl,
        state,
    } = site(&["a", "b", "c"]);
    let ca = webui::local_ca(state.path());
    let polling = p.https_url("/ws/socket.io/?EIO=4&transport=polling");

    // The handshake (polling, no cookie yet) pins the session to whoever answers.
    let res = cl.get(&polling).send().await.expect("handshake");
    let home = replica_of(&res);
    let set = res
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("a /ws/ answer carries the replica cookie")
        .to_string();
    assert!(
        set.contains("Path=/ws/")
            && set.contains("HttpOnly")
            && set.contains("Secure")
            && set.contains("SameSite=Lax"),
        "{set}"
    );
    let cookie = set.split(';').next().expect("name=value").to_string();
    assert!(cookie.starts_with("webui_replica="), "{cookie}");
    for r in &replicas {
        assert!(
            !cookie.contains(&r.port.to_string()) && !cookie.contains("127.0.0.1"),
            "no internal address in the cookie: {cookie}"
        );
    }

    // Polling GETs and POSTs (socket.io sends packets by POST) with it: same replica.
    for i in 0..9 {
        let req = if i % 2 == 0 {
            cl.get(&polling)
        } else {
            cl.post(&polling).body("40")
        };
        let res = req.header("cookie", &cookie).send().await.expect("poll");
        assert_eq!(replica_of(&res), home, "poll {i} stays on {home}");
        assert!(
            !res.headers().contains_key("set-cookie"),
            "a request already on its replica is not re-pinned"
        );
    }
    // The upgrade to websocket, and a reconnect: same replica.
    let ws_path = "/ws/socket.io/?EIO=4&transport=websocket";
    for _ in 0..3 {
        let (mut ws, at, _) = ws_connect(&p, &ca, ws_path, Some(&cookie)).await;
        assert_eq!(
            at, home,
            "the websocket joins the polling session's replica"
        );
        ws.send(Message::text("2probe")).await.expect("send");
        let echoed = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("echo in time")
            .expect("open")
            .expect("message");
        assert_eq!(echoed, Message::text("2probe"));
    }
    // Everything else spreads, cookie or not.
    let mut seen = Vec::new();
    for _ in 0..9 {
        let res = cl
            .get(p.https_url("/api/version"))
            .header("cookie", &cookie)
            .send()
            .await
            .expect("request");
        seen.push(replica_of(&res));
    }
    assert!(tally(&seen).len() >= 2, "other paths spread: {seen:?}");
    // A new browser (no cookie) opening a websocket is pinned too.
    let (_ws, _, set) = ws_connect(&p, &ca, ws_path, None).await;
    assert!(
        set.is_some_and(|s| s.starts_with("webui_replica=")),
        "the 101 carries the cookie"
    );
}

/// GETs sent back to back until `until`: the status of each (0 when the request
/// failed outright) and who answered.
async fn steady_gets(cl: reqwest::Client, url: String, until: Instant) -> Vec<(u16, String)> {
    let mut out = Vec::new();
    while Instant::now() < until {
        match cl.get(&url).send().await {
            Ok(res) => {
                let who = replica_of(&res);
                out.push((res.status().as_u16(), who));
            }
            Err(e) => out.push((0, e.to_string())),
        }
    }
    out
}

#[tokio::test]
async fn killing_a_replica_under_a_steady_client_fails_no_get() {
    let Site {
        mut replicas,
        p,
        cl,
        state: _state,
    } = site(&["a", "b", "c"]);
    let until = Instant::now() + Duration::from_secs(4);
    let workers: Vec<_> = (0..4)
        .map(|_| tokio::spawn(steady_gets(cl.clone(), p.https_url("/api/version"), until)))
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    replicas[1].kill();
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.expect("worker"));
    }
    let failed: Vec<_> = all.iter().filter(|(s, _)| *s != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} GETs failed when replica b was killed: {:?}",
        failed.len(),
        all.len(),
        &failed[..failed.len().min(5)]
    );
    let t = tally(&all.iter().map(|(_, w)| w.clone()).collect::<Vec<_>>());
    assert!(
        t.get("b").copied().unwrap_or(0) > 0,
        "b served before: {t:?}"
    );
    assert!(
        all.len() > 20,
        "the client was steady: {} requests",
        all.len()
    );
}

#[tokio::test]
async fn requests_whose_connection_fails_go_to_another_replica_bodies_included() {
    let (a, c) = (Replica::start("a"), Replica::start("c"));
    // A replica that is down: nothing listens on its port.
    let down = format!("http://127.0.0.1:{}", support::pebble::free_port());
    let state = webui::state_dir();
    let p = proxy(state.path(), &[a.url(), down.clone(), c.url()], &[]);
    let cl = client(state.path());
    let ca = webui::local_ca(state.path());
    let tried_down = |what: &str| {
        p.output_text()
            .lines()
            .filter(|l| l.contains("upstream request failed") && l.contains(&down[7..]))
            .filter(|l| l.contains(what))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    // Uploads, paced so that the down replica comes out of ejection (1 s, then 2 s)
    // and is picked again: each time the body goes to a live one instead.
    for i in 0..12 {
        let name = format!("post-{i}");
        let res = cl
            .post(p.https_url(&format!("/data/write?name={name}")))
            .body(vec![7u8; 64 << 10])
            .send()
            .await
            .expect("post");
        assert_eq!(res.status(), 200, "POST {i} with a body");
        let on: Vec<_> = [&a, &c].into_iter().filter(|r| r.has_data(&name)).collect();
        assert_eq!(on.len(), 1, "POST {i} reached exactly one replica");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let posts = tried_down("/data/write");
    assert!(
        posts.len() >= 2 && posts.iter().all(|l| l.contains("retry=true")),
        "uploads were sent to the down replica and retried: {posts:?}"
    );
    // Then GETs and websockets back to back.
    for i in 0..12 {
        let res = cl
            .get(p.https_url("/api/version"))
            .send()
            .await
            .expect("get");
        assert_eq!(res.status(), 200, "GET {i}");
    }
    for _ in 0..6 {
        let (mut ws, _, _) = ws_connect(&p, &ca, "/ws/socket.io/?EIO=4", None).await;
        ws.send(Message::text("ping")).await.expect("send");
        let got = tokio::time::timeout(Duration::from_secs(10), ws.next()).await;
        assert!(matches!(got, Ok(Some(Ok(_)))), "websocket works: {got:?}");
    }
    // Ejection: tried again only when its ejection ran out, not once per request.
    let all = tried_down("");
    assert!(
        all.len() <= 5,
        "a refusing replica is skipped after a failure ({} tries for 42 requests): {all:?}",
        all.len()
    );
}

#[tokio::test]
async fn a_post_whose_body_was_sent_to_a_dying_replica_is_not_sent_again() {
    let Site {
        mut replicas,
        p,
        cl,
        state: _state,
    } = site(&["a", "c"]);
    // An upload whose first part is sent, then the rest waits.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let upload = tokio::spawn({
        let (cl, url) = (cl.clone(), p.https_url("/data/write?name=upload"));
        let body = reqwest::Body::wrap_stream(stream_of(rx));
        async move {
            let res = cl.post(url).body(body).send().await;
            res.map(|r| r.status().as_u16()).unwrap_or(0)
        }
    });
    tx.send(Ok(vec![1u8; 1024])).await.expect("first part");
    let deadline = Instant::now() + Duration::from_secs(10);
    let receiver = loop {
        if let Some(i) = replicas.iter().position(|r| r.has_data("upload")) {
            break i;
        }
        assert!(Instant::now() < deadline, "the upload reached a replica");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    replicas[receiver].kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = tx.send(Ok(vec![2u8; 1024])).await;
    drop(tx);
    let status = tokio::time::timeout(Duration::from_secs(15), upload)
        .await
        .expect("the upload ends")
        .expect("task");
    assert_eq!(status, 502, "the client is told the upstream broke off");
    let other = &replicas[1 - receiver];
    assert!(
        !other.has_data("upload"),
        "a body already sent to replica {} is never sent to {}",
        replicas[receiver].name,
        other.name
    );
    // The surviving replica serves the next request.
    assert_eq!(who(&cl, &p.https_url("/api/version")).await, other.name);
}

/// A stream of the body parts received on `rx`.
fn stream_of(
    rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

/// `webui proxy` with `upstream`, in a mount namespace where `/etc/hosts` is `hosts`
/// (a file the test rewrites in place to change what names resolve to); None when
/// namespaces are not available here (not root).
fn proxy_with_hosts(state: &Path, hosts: &Path, upstream: &str) -> Option<Webui> {
    let works = Command::new("unshare")
        .args(["-m", "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !works {
        return None;
    }
    let mut cmd = Command::new("unshare");
    cmd.args([
        "-m",
        "sh",
        "-c",
        r#"mount --bind "$0" /etc/hosts && exec "$@""#,
    ])
    .arg(hosts)
    .arg(webui::bin())
    .arg("--state-dir")
    .arg(state)
    .args(["proxy", "--upstream", upstream])
    .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"]);
    for (k, _) in std::env::vars() {
        if k.starts_with("WEBUI_") {
            cmd.env_remove(k);
        }
    }
    Some(Webui::start_cmd(cmd, START))
}

/// Who answers `n` GETs.
async fn round(cl: &reqwest::Client, p: &Webui, n: usize) -> BTreeMap<String, usize> {
    let mut seen = Vec::new();
    for _ in 0..n {
        seen.push(who(cl, &p.https_url("/api/version")).await);
    }
    tally(&seen)
}

/// Rounds of GETs until `want` answer them (and nobody else), for up to 15 s.
async fn until_answered_by(cl: &reqwest::Client, p: &Webui, want: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let t = round(cl, p, 4 * want.len()).await;
        if t.keys().map(String::as_str).eq(want.iter().copied()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still answered by {t:?}, want {want:?}:\n{}",
            p.output_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn a_name_is_balanced_over_all_its_addresses_as_they_change() {
    const NAME: &str = "replicas.webui-balance.test";
    let port = support::pebble::free_port();
    let _r2 = Replica::start_on("r2", "127.0.0.2", port);
    let _r3 = Replica::start_on("r3", "127.0.0.3", port);
    let dir = tempfile::tempdir().expect("tempdir");
    let hosts = dir.path().join("hosts");
    // Rewritten in place (same inode), so the bind mount shows every version.
    let set_hosts = |addrs: &[&str]| {
        let mut text = String::from("127.0.0.1 localhost\n");
        for a in addrs {
            text.push_str(&format!("{a} {NAME}\n"));
        }
        std::fs::write(&hosts, text).expect("write hosts");
    };
    set_hosts(&["127.0.0.2"]);
    let state = webui::state_dir();
    let Some(p) = proxy_with_hosts(state.path(), &hosts, &format!("http://{NAME}:{port}")) else {
        let why = "no mount namespace (unshare -m) here: run as root";
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("skipped: {why}");
        return;
    };
    let cl = client(state.path());
    assert_eq!(round(&cl, &p, 6).await.keys().collect::<Vec<_>>(), ["r2"]);
    // The service scales out: a second address; both get requests within seconds.
    set_hosts(&["127.0.0.2", "127.0.0.3"]);
    until_answered_by(&cl, &p, &["r2", "r3"]).await;
    assert!(p.wait_for_output("upstream addresses changed", START));
    // A DNS hiccup (no address at all) keeps the last set.
    set_hosts(&[]);
    assert!(
        p.wait_for_output("keeping the last known ones", START),
        "{}",
        p.output_text()
    );
    assert_eq!(round(&cl, &p, 8).await.len(), 2, "both still in rotation");
    // A task replaced: only the new address.
    set_hosts(&["127.0.0.3"]);
    until_answered_by(&cl, &p, &["r3"]).await;
}
