//! `webui doctor` against a real stack (dockerd, the stand-in images): all clear when
//! healthy, and the matching FAIL with its fix when Ollama is down, port 80 is taken
//! by another server, or a name does not resolve; DNS answers checked against a
//! resolver the test controls (pebble-challtestsrv).

mod support;
#[path = "supervision_support/mod.rs"]
mod sv;

use serde_json::Value;
use sv::*;

fn doctor(state: &std::path::Path, p: &Cleanup, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["doctor", "--json"];
    all.extend_from_slice(args);
    let f = run(state, p, &all);
    let v: Value = serde_json::from_str(&f.stdout)
        .unwrap_or_else(|e| panic!("doctor --json: {e}\n{}\n{}", f.stdout, f.stderr));
    (f.status.code().unwrap_or(-1), v)
}

fn status_of<'a>(v: &'a Value, name: &str) -> (&'a str, String) {
    let c = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str().is_some_and(|n| n.starts_with(name)))
        .unwrap_or_else(|| panic!("no check `{name}` in {v:#}"));
    (c["status"].as_str().unwrap(), format!("{c}"))
}

#[tokio::test]
async fn doctor_passes_a_healthy_stack_and_names_what_breaks() {
    let Some(images) = docker_available() else {
        return;
    };
    let ollama = std::env::var("WEBUI_TEST_OLLAMA_IMAGE").unwrap_or_default();
    if ollama.is_empty() {
        skip("WEBUI_TEST_OLLAMA_IMAGE not set");
        return;
    }
    let state = support::webui::state_dir();
    let p = Cleanup::new("doctor");
    let (https, http) = (free_port(), free_port());
    let listen = format!("127.0.0.1:{https}");
    let http_listen = format!("127.0.0.1:{http}");
    let port = free_port().to_string();
    let image = images.tag("v1");
    let mut args = up_args(&p, &image, &port, &listen);
    // up_args binds plain HTTP to port 0; doctor needs a known port.
    if let Some(i) = args.iter().position(|a| *a == "127.0.0.1:0") {
        args[i] = &http_listen;
    }
    args.extend_from_slice(&["--ollama", "--ollama-image", &ollama]);
    let w = support::webui::Webui::start(state.path(), &args, START);
    wait_ready(&w);

    let ports = [
        "--listen",
        listen.as_str(),
        "--http-listen",
        http_listen.as_str(),
    ];
    let (code, v) = doctor(state.path(), &p, &ports);
    let fails: Vec<&Value> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "fail")
        .collect();
    assert!(fails.is_empty(), "a healthy stack has no FAIL: {fails:#?}");
    assert_eq!(code, 0);
    for name in [
        "docker engine",
        "HTTP -> HTTPS redirect",
        "websocket through the proxy",
        "Open WebUI /health through the proxy",
        "Open WebUI /health directly",
        "Ollama from open-webui",
        "timeouts",
    ] {
        let (s, c) = status_of(&v, name);
        assert_eq!(s, "pass", "{c}");
    }
    let (s, c) = status_of(&v, &format!("port {https}"));
    assert_eq!(s, "pass", "the HTTPS port is webui's: {c}");
    let (s, c) = status_of(&v, "certificate");
    assert_eq!(
        s, "warn",
        "a local-CA certificate is a warning, not a failure: {c}"
    );

    // Ollama stopped: FAIL naming it, with a fix.
    docker(&["stop", "-t", "1", &p.n("ollama")]);
    let (code, v) = doctor(state.path(), &p, &ports);
    assert_eq!(code, 3);
    let (s, c) = status_of(&v, "Ollama from open-webui");
    assert_eq!(s, "fail", "{c}");
    assert!(c.contains("ollama:11434") && c.contains("fix"), "{c}");
    docker(&["start", &p.n("ollama")]);

    // A port held by another server, and a name that does not resolve.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = squatter.local_addr().unwrap().to_string();
    let (code, v) = doctor(
        state.path(),
        &p,
        &[
            "--listen",
            &listen,
            "--http-listen",
            &busy,
            "--domain",
            "nowhere.invalid",
            "--self-signed",
        ],
    );
    assert_eq!(code, 3);
    let (s, c) = status_of(
        &v,
        &format!("port {}", squatter.local_addr().unwrap().port()),
    );
    assert_eq!(s, "fail", "{c}");
    // The holder is named: this test process.
    assert!(
        c.contains("held by ") && c.contains(&format!("pid {}", std::process::id())),
        "{c}"
    );
    assert!(
        c.contains("--behind-proxy") && c.contains("config export"),
        "{c}"
    );
    let (s, c) = status_of(&v, "DNS nowhere.invalid");
    assert_eq!(s, "fail", "{c}");
    assert!(c.contains("A (and AAAA) record"), "{c}");

    // Human output: PASS/WARN/FAIL lines with fixes.
    let f = run(
        state.path(),
        &p,
        &["doctor", "--listen", &listen, "--http-listen", &http_listen],
    );
    assert!(f.stdout.contains("PASS  docker engine"), "{}", f.stdout);
    assert!(
        f.stdout.contains("WARN  certificate") && f.stdout.contains("fix: "),
        "{}",
        f.stdout
    );
    drop(squatter);
    stop(w);
}

/// `doctor --json` for `domain` with the given resolver setting, on ports where
/// nothing listens; the DNS check's status and JSON.
fn dns_check(state: &std::path::Path, domain: &str, resolver: (&str, &str)) -> (String, String) {
    let (https, http) = (free_port().to_string(), free_port().to_string());
    let mut cmd = support::webui::command(state);
    cmd.args([
        "--project",
        "t-doctor-dns",
        "doctor",
        "--json",
        "--self-signed",
    ])
    .args(["--domain", domain, "--listen"])
    .arg(format!("127.0.0.1:{https}"))
    .arg("--http-listen")
    .arg(format!("127.0.0.1:{http}"));
    match resolver {
        ("flag", r) => {
            cmd.args(["--resolver", r]);
        }
        (_, r) => {
            cmd.env("WEBUI_DNS_RESOLVER", r);
        }
    }
    let f = support::webui::finish(cmd, RUN);
    let v: Value = serde_json::from_str(&f.stdout)
        .unwrap_or_else(|e| panic!("doctor --json: {e}\n{}\n{}", f.stdout, f.stderr));
    assert_eq!(
        v["failed"].as_u64().map(|n| n > 0),
        Some(f.status.code() == Some(3)),
        "exit 3 exactly when a check failed: {v}"
    );
    let (s, c) = status_of(&v, &format!("DNS {domain}"));
    (s.to_string(), c)
}

#[tokio::test]
async fn doctor_checks_dns_answers_from_a_resolver_the_test_controls() {
    let Some(dns) = support::pebble::DnsServer::start() else {
        return;
    };
    let state = support::webui::state_dir();
    let resolver = dns.dns.to_string();
    let name = "chat.doctor.test";

    // A wrong answer: an address of no interface here, where nothing serves this site.
    dns.set_a(name, &["198.51.100.7"]).await;
    let (s, c) = dns_check(state.path(), name, ("flag", &resolver));
    assert_eq!(s, "fail", "{c}");
    assert!(
        c.contains("198.51.100.7") && c.contains("not an address of this host"),
        "the evidence names the wrong answer: {c}"
    );
    assert!(c.contains("point the A/AAAA records"), "with the fix: {c}");
    assert!(c.contains(&resolver), "and the resolver asked: {c}");

    // The right answer (an address of this host), through WEBUI_DNS_RESOLVER.
    dns.set_a(name, &["127.0.0.1"]).await;
    let (s, c) = dns_check(state.path(), name, ("env", &resolver));
    assert_eq!(s, "pass", "{c}");
    assert!(c.contains("resolves to 127.0.0.1"), "{c}");

    // One good and one wrong AAAA: the wrong one fails the check.
    dns.set_aaaa(name, &["2001:db8::7"]).await;
    let (s, c) = dns_check(state.path(), name, ("flag", &resolver));
    assert_eq!(s, "fail", "{c}");
    assert!(c.contains("2001:db8::7"), "{c}");

    // A resolver that is not an address: exit 1, before any check.
    let f = support::webui::run(
        state.path(),
        &["doctor", "--resolver", "dns.example.com"],
        RUN,
    );
    assert_eq!(f.status.code(), Some(1), "{}", f.stderr);
    assert!(f.stderr.contains("127.0.0.1:53"), "{}", f.stderr);
}
