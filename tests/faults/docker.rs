//! Rows against the real dockerd: the open-webui container and the bundled Ollama
//! killed with SIGKILL, the launcher (`webui up`) SIGKILLed and SIGTERMed with live
//! SSE streams and 500 WebSockets, then adopted by a new `up`.

use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::common::{Row, Sockets, Steady, Target, data_lost, pattern, row_task, write_data};
use crate::support::webui::{self, Webui};
use crate::sv::{self, Cleanup};

type Rows = Vec<Result<Row, (String, String)>>;

/// How many WebSockets the launcher rows hold open.
const SOCKETS: usize = 500;

fn kill9(container: &str) {
    let pid = sv::inspect(container, "{{.State.Pid}}");
    let ok = std::process::Command::new("kill")
        .args(["-9", &pid])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -9 {pid} ({container})");
}

/// Polls `/health` until it failed at least once and then answers 200 again.
async fn through_outage(c: &reqwest::Client, t: &Target, limit: Duration) {
    let start = Instant::now();
    let mut down = false;
    while start.elapsed() < limit {
        let ok = matches!(c.get(t.url("/health")).send().await, Ok(r) if r.status() == 200);
        if !ok {
            down = true;
        } else if down {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no outage and recovery seen within {limit:?}");
}

async fn until_ok(c: &reqwest::Client, t: &Target, limit: Duration) {
    let start = Instant::now();
    while !matches!(c.get(t.url("/health")).send().await, Ok(r) if r.status() == 200) {
        assert!(start.elapsed() < limit, "not serving within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn rows() -> Rows {
    let Some(img) = sv::docker_available() else {
        return vec![];
    };
    let image = img.tag("v1");
    let mut out = Vec::new();
    let (name, i) = ("kill -9 the open-webui container", image.clone());
    out.extend(
        row_task(name, async move {
            vec![kill_open_webui(&i).await.map_err(|e| (name.into(), e))]
        })
        .await,
    );
    let (name, i) = ("kill -9 the bundled Ollama mid-generation", image.clone());
    out.extend(
        row_task(name, async move {
            vec![kill_ollama(&i).await.map_err(|e| (name.into(), e))]
        })
        .await,
    );
    out.extend(row_task("launcher rows", async move { launcher(&image).await }).await);
    out
}

async fn kill_open_webui(image: &str) -> Result<Row, String> {
    let p = Cleanup::new("flt-kill");
    let state = webui::state_dir();
    let w = sv::up(state.path(), &p, image, sv::free_port(), "127.0.0.1:0", &[]);
    sv::wait_ready(&w);
    let t = Target::local(state.path(), w.https[0]);
    let c = t.client();
    let data = pattern(1 << 20, 1);
    write_data(&c, &t, "before-kill", &data).await;

    let mut steady = Steady::start(&t, "/health", false);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fault_at = Instant::now();
    kill9(&p.n("open-webui"));
    through_outage(&c, &t, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    steady.stop().await;
    let lost = data_lost(&c, &t, "before-kill", &data).await;
    sv::stop(w);

    // Only the "restarting" page (503) while it is down; a request racing the death
    // (before the engine's `die` event reached the supervisor) may get a 502.
    let bad: Vec<u16> = steady
        .answers()
        .iter()
        .map(|a| a.status)
        .filter(|s| *s != 200 && *s != 503 && *s != 502)
        .collect();
    if !bad.is_empty() || steady.failed() == 0 || lost != "none" {
        return Err(format!(
            "unexpected answers {bad:?} ({}), data lost: {lost}",
            steady.failures()
        ));
    }
    Ok(Row::new("kill -9 the open-webui container")
        .counts(&steady)
        .recovery(steady.recovery(fault_at))
        .note(format!(
            "failed = {} (the 503 restarting page while Docker restarts it); 1 MiB written before, read back after",
            steady.failures()
        )))
}

async fn kill_ollama(image: &str) -> Result<Row, String> {
    let ollama_image = std::env::var("WEBUI_TEST_OLLAMA_IMAGE")
        .map_err(|_| "WEBUI_TEST_OLLAMA_IMAGE is not set".to_string())?;
    let p = Cleanup::new("flt-ollama");
    let state = webui::state_dir();
    let w = sv::up(
        state.path(),
        &p,
        image,
        sv::free_port(),
        "127.0.0.1:0",
        &["--ollama", "--ollama-image", &ollama_image],
    );
    sv::wait_ready(&w);
    let t = Target::local(state.path(), w.https[0]);
    let c = t.client();
    let data = pattern(64 << 10, 2);
    write_data(&c, &t, "before-ollama", &data).await;

    let mut steady = Steady::start(&t, "/health", false);
    // 2,000 tokens 50 ms apart: 100 s if nothing happened.
    let body = serde_json::json!({"model": "standin", "options": {"num_predict": 2000}});
    let r = c
        .post(t.url("/ollama/api/chat"))
        .json(&body)
        .timeout(Duration::from_secs(300))
        .send()
        .await
        .map_err(|e| format!("generation: {e}"))?;
    if r.status() != 200 {
        return Err(format!("generation: HTTP {}", r.status()));
    }
    let mut stream = r.bytes_stream();
    let mut got = String::new();
    while got.matches('\n').count() < 5 {
        match stream.next().await {
            Some(Ok(b)) => got.push_str(&String::from_utf8_lossy(&b)),
            other => return Err(format!("stream ended early: {other:?}")),
        }
    }
    let fault_at = Instant::now();
    kill9(&p.n("ollama"));
    let ended = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(b) => got.push_str(&String::from_utf8_lossy(&b)),
                Err(_) => return "error",
            }
        }
        "end"
    })
    .await;
    let ended_after = fault_at.elapsed();
    let Ok(how) = ended else {
        return Err("the stream hung for 15 s after Ollama died".into());
    };
    if got.contains("\"done\":true") {
        return Err("the cut stream claims to be done".into());
    }
    // Ollama comes back (Docker's restart policy): a new generation completes.
    let start = Instant::now();
    let recovered = loop {
        let r = c
            .post(t.url("/ollama/api/chat"))
            .json(&serde_json::json!({"model": "standin"}))
            .send()
            .await;
        if let Ok(r) = r
            && r.status() == 200
            && r.text().await.is_ok_and(|b| b.contains("\"done\":true"))
        {
            break fault_at.elapsed();
        }
        if start.elapsed() > Duration::from_secs(60) {
            return Err("no complete generation within 60 s after the kill".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    steady.stop().await;
    let lost = data_lost(&c, &t, "before-ollama", &data).await;
    sv::stop(w);
    if steady.failed() > 0 || lost != "none" {
        return Err(format!(
            "steady client failures: {}; data lost: {lost}",
            steady.failures()
        ));
    }
    Ok(Row::new("kill -9 the bundled Ollama mid-generation")
        .counts(&steady)
        .recovery(Some(recovered))
        .note(format!(
            "the cut generation ends ({}) {:.2} s after the kill, without `done`; Open WebUI keeps answering; recovery = a new generation completes",
            if how == "end" { "clean end of the stream" } else { "stream error" },
            ended_after.as_secs_f64()
        )))
}

/// SSE streams through the proxy: (events wanted, task returning the body and
/// whether it ended with an error).
fn sse(
    c: &reqwest::Client,
    t: &Target,
    n: u32,
    interval_ms: u32,
) -> tokio::task::JoinHandle<(String, bool)> {
    let req = c
        .get(t.url(&format!("/sse?n={n}&interval_ms={interval_ms}")))
        .timeout(Duration::from_secs(120));
    tokio::spawn(async move {
        let Ok(r) = req.send().await else {
            return (String::new(), true);
        };
        let mut s = r.bytes_stream();
        let mut body = String::new();
        while let Some(c) = s.next().await {
            match c {
                Ok(b) => body.push_str(&String::from_utf8_lossy(&b)),
                Err(_) => return (body, true),
            }
        }
        (body, false)
    })
}

/// A new `up` that adopts the running containers; returns it and when it listened.
fn relaunch(state: &std::path::Path, p: &Cleanup, image: &str, port: u16, listen: &str) -> Webui {
    sv::up(state, p, image, port, listen, &["--drain-timeout", "3s"])
}

async fn launcher(image: &str) -> Rows {
    let kill_name = "SIGKILL of the launcher (500 websockets, SSE streams open)";
    let term_name = "SIGTERM of the launcher (500 websockets, SSE streams open)";
    let p = Cleanup::new("flt-launch");
    let state = webui::state_dir();
    let port = sv::free_port();
    let listen = format!("127.0.0.1:{}", sv::free_port());
    let w = relaunch(state.path(), &p, image, port, &listen);
    sv::wait_ready(&w);
    let t = Target::local(state.path(), w.https[0]);
    let c = t.client();
    let data = pattern(1 << 20, 3);
    write_data(&c, &t, "before-launcher", &data).await;
    let id = sv::inspect(&p.n("open-webui"), "{{.Id}}");

    // SIGKILL: everything the process held goes with it; the containers stay.
    let mut sockets = Sockets::open(&t, SOCKETS).await;
    let streams: Vec<_> = (0..5).map(|_| sse(&c, &t, 1000, 100)).collect();
    let mut steady = Steady::start(&t, "/health", false);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fault_at = Instant::now();
    w.signal("KILL");
    let ws_ended = sockets.ended_within(Duration::from_secs(5)).await;
    let mut sse_cut = 0;
    for s in streams {
        if let Ok(Ok((_, true))) = tokio::time::timeout(Duration::from_secs(5), s).await {
            sse_cut += 1;
        }
    }
    drop(w);
    let running = sv::inspect(&p.n("open-webui"), "{{.State.Running}}");
    let w = relaunch(state.path(), &p, image, port, &listen);
    let listening_at = Instant::now();
    sv::wait_ready(&w);
    until_ok(&c, &t, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut sockets = Sockets::open(&t, SOCKETS).await;
    let echoed = sockets.echoing("after adoption").await;
    steady.stop().await;
    let lost = data_lost(&c, &t, "before-launcher", &data).await;
    let same = sv::inspect(&p.n("open-webui"), "{{.Id}}") == id;
    let mut out = Vec::new();
    let while_listening = steady.failed_after(listening_at);
    let gap = steady.failed() - while_listening;
    out.push(
        if ws_ended == SOCKETS
            && sse_cut == 5
            && running == "true"
            && same
            && echoed == SOCKETS
            && while_listening == 0
            && lost == "none"
        {
            Ok(Row::new(kill_name)
                .counts(&steady)
                .recovery(steady.recovery(fault_at))
                .note(format!(
                    "all {gap} failed while no launcher ran (refused), 0 once the new `up` listened; the containers kept running and were adopted (same id); 500 websockets and 5 SSE streams ended at once (no hang), 500 reopened"
                )))
        } else {
            Err((
                kill_name.to_string(),
                format!(
                    "websockets ended {ws_ended}/{SOCKETS}, SSE cut {sse_cut}/5, running {running}, same container {same}, echoed after {echoed}/{SOCKETS}, failed while listening {while_listening} ({}), data lost {lost}",
                    steady.failures()
                ),
            ))
        },
    );

    // SIGTERM: open requests drain within --drain-timeout (3 s), the rest is closed;
    // the process exits 0; the containers stay.
    let short: Vec<_> = (0..5).map(|_| sse(&c, &t, 15, 100)).collect();
    let long = sse(&c, &t, 1000, 100);
    let mut steady = Steady::start(&t, "/health", false);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fault_at = Instant::now();
    let mut w = w;
    w.signal("TERM");
    let ws_ended = sockets.ended_within(Duration::from_secs(10)).await;
    let mut drained = 0;
    for s in short {
        if let Ok(Ok((body, false))) = tokio::time::timeout(Duration::from_secs(10), s).await
            && body.contains("\"i\":14")
        {
            drained += 1;
        }
    }
    let long_ended = tokio::time::timeout(Duration::from_secs(10), long)
        .await
        .is_ok();
    let exit = w.wait(Duration::from_secs(15));
    let exited_after = fault_at.elapsed();
    let running = sv::inspect(&p.n("open-webui"), "{{.State.Running}}");
    let w = relaunch(state.path(), &p, image, port, &listen);
    let listening_at = Instant::now();
    sv::wait_ready(&w);
    until_ok(&c, &t, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    steady.stop().await;
    let lost = data_lost(&c, &t, "before-launcher", &data).await;
    let same = sv::inspect(&p.n("open-webui"), "{{.Id}}") == id;
    let while_listening = steady.failed_after(listening_at);
    let gap = steady.failed() - while_listening;
    sv::stop(w);
    out.push(
        if ws_ended == SOCKETS
            && drained == 5
            && long_ended
            && exit.is_some_and(|s| s.success())
            && running == "true"
            && same
            && while_listening == 0
            && lost == "none"
        {
            Ok(Row::new(term_name)
                .counts(&steady)
                .recovery(steady.recovery(fault_at))
                .note(format!(
                    "5 short SSE streams ran to their end, the long one and 500 websockets were closed at the 3 s drain timeout; exit 0 after {:.1} s; all {gap} failed while no launcher listened, 0 once the new `up` did (adopted, same id)",
                    exited_after.as_secs_f64()
                )))
        } else {
            Err((
                term_name.to_string(),
                format!(
                    "websockets ended {ws_ended}/{SOCKETS}, drained {drained}/5, long ended {long_ended}, exit {exit:?}, running {running}, same {same}, failed while listening {while_listening} ({}), data lost {lost}",
                    steady.failures()
                ),
            ))
        },
    );
    out
}
