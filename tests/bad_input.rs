//! The bad-input battery (issue #11): malformed `webui.toml` files, bad flag values
//! and combinations, the applicable items of PITFALLS.md's "Faults and bad inputs"
//! that are not tested where their feature lives, and odd but legal clients. Each
//! case: exit 1 with a message naming what was wrong and what to do, and nothing
//! started or written; or, for a running proxy, a clean answer and the proxy still
//! serving. Hostile HTTP (oversized heads, smuggling, slowloris, HTTP/2 rapid reset)
//! is in `tests/hardening.rs`; busy ports and certificate files in `tests/proxy.rs`;
//! Docker faults in `tests/docker.rs`; ACME and domain preflight in `tests/acme.rs`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::standin;
use support::webui::{self, Finished, Webui};

/// A proxy command that would start (so a failure is the input's fault).
const PROXY: [&str; 6] = [
    "proxy",
    "--upstream",
    "http://127.0.0.1:9",
    "--listen",
    "127.0.0.1:0",
    "--no-http",
];

fn run(state: &Path, args: &[&str]) -> Finished {
    webui::run(state, args, Duration::from_secs(20))
}

/// Runs `webui` expecting exit 1 with every needle in stderr, a hint when `hint`,
/// and nothing left in the state dir (no local CA, no ACME account).
fn refused(state: &Path, args: &[&str], needles: &[&str], hint: bool) -> String {
    let out = run(state, args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "webui {args:?} must exit 1:\n{}{}",
        out.stdout,
        out.stderr
    );
    for n in needles {
        assert!(
            out.stderr.contains(n),
            "webui {args:?}: stderr should mention `{n}`:\n{}",
            out.stderr
        );
    }
    if hint {
        assert!(
            out.stderr.contains("hint: "),
            "webui {args:?}: says what to do:\n{}",
            out.stderr
        );
    }
    assert!(
        !state.join("ca").exists() && !state.join("acme").exists(),
        "webui {args:?}: a refused start writes nothing"
    );
    out.stderr
}

fn with<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
    base.iter().chain(extra).copied().collect()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// Runs the binary as `nobody` (needs root and setpriv); None when that is impossible.
fn as_nobody(state: &Path, args: &[&str]) -> Option<Finished> {
    if !is_root() || !Path::new("/usr/bin/setpriv").exists() {
        eprintln!("not root or no setpriv: skipping a case that needs an unprivileged user");
        return None;
    }
    std::os::unix::fs::chown(state, Some(65534), Some(65534)).unwrap();
    let out = Command::new("/usr/bin/setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            webui::bin(),
        ])
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .env_remove("WEBUI_CONFIG")
        .output()
        .unwrap();
    Some(Finished {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

// ---------------------------------------------------------------- config files

fn config_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn malformed_config_files_exit_1_naming_the_file_the_line_and_the_fix() {
    let state = webui::state_dir();
    let dir = tempfile::tempdir().unwrap();
    let up = "upstream = \"http://127.0.0.1:9\"\n";
    // (file name, content, what stderr must name)
    let cases: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
        (
            "wrong-type.toml",
            format!("{up}no_http = \"yes\"\n").into_bytes(),
            vec!["line 2", "no_http", "invalid type", "true or false"],
        ),
        (
            "wrong-type-list.toml",
            format!("{up}listen = \"127.0.0.1:8443\"\n").into_bytes(),
            vec!["line 2", "listen", "invalid type", "[\"...\"]"],
        ),
        (
            "out-of-range.toml",
            format!("{up}max_connections = -1\n").into_bytes(),
            vec!["line 2", "max_connections", "-1"],
        ),
        (
            "unknown-key.toml",
            format!("{up}listen_port = 443\n").into_bytes(),
            vec!["line 2", "unknown field `listen_port`", "long flag name"],
        ),
        (
            "duplicate-key.toml",
            format!("{up}upstream = \"http://127.0.0.1:10\"\n").into_bytes(),
            vec!["line 2", "duplicate key", "upstream", "once"],
        ),
        (
            "unterminated.toml",
            b"upstream = \"http://127.0.0.1:9\n".to_vec(),
            vec!["line 1", "upstream"],
        ),
        (
            "non-utf8.toml",
            [up.as_bytes(), b"# caf\xe9 latin-1\n"].concat(),
            vec!["not valid UTF-8", "line 2", "UTF-8"],
        ),
        (
            "bad-value.toml",
            format!("{up}max_body = \"lots\"\n").into_bytes(),
            vec!["max_body", "lots", "100M"],
        ),
    ];
    for (name, bytes, needles) in cases {
        let path = config_file(dir.path(), name, &bytes);
        let p = path.to_str().unwrap();
        let args = with(&["--config", p], &PROXY[..1]);
        let args = with(&args, &["--listen", "127.0.0.1:0", "--no-http"]);
        let mut all = vec![p];
        all.extend(needles);
        refused(state.path(), &args, &all, true);
    }

    // A bad value for `webui up`, refused before Docker is asked anything.
    let path = config_file(
        dir.path(),
        "up-image.toml",
        b"# up\nimage = \"Open WebUI:latest\"\n",
    );
    let p = path.to_str().unwrap();
    refused(
        state.path(),
        &[
            "--config",
            p,
            "--project",
            "t-bad-image",
            "up",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ],
        &[p, "`image` on line 2", "Open WebUI:latest"],
        true,
    );

    // A config file that cannot be read: named explicitly but missing, a directory,
    // and (as an unprivileged user) one without read permission.
    let missing = dir.path().join("absent.toml");
    let missing = missing.to_str().unwrap();
    refused(
        state.path(),
        &with(&["--config", missing], &PROXY),
        &[missing, "cannot read config file", "--config"],
        true,
    );
    let d = dir.path().to_str().unwrap();
    refused(
        state.path(),
        &with(&["--config", d], &PROXY),
        &[d, "cannot read config file", "directory"],
        true,
    );
    let locked = config_file(dir.path(), "locked.toml", up.as_bytes());
    std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    let nobody_state = webui::state_dir();
    let locked = locked.to_str().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    if let Some(out) = as_nobody(nobody_state.path(), &with(&["--config", locked], &PROXY)) {
        assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
        assert!(
            out.stderr.contains(locked)
                && out.stderr.contains("ermission denied")
                && out.stderr.contains("hint: "),
            "{}",
            out.stderr
        );
    }
}

// ---------------------------------------------------------------- flags

#[test]
fn bad_flag_values_and_combinations_exit_1_with_the_right_form() {
    let state = webui::state_dir();
    let s = state.path();
    let p = |extra: &[&'static str]| with(&PROXY, extra);
    // (arguments, what stderr must name)
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        // durations
        (
            p(&["--connect-timeout", "soon"]),
            vec!["--connect-timeout", "30s"],
        ),
        (
            p(&["--drain-timeout", "10 parsecs"]),
            vec!["--drain-timeout", "30s"],
        ),
        (
            p(&["--handshake-timeout", "0"]),
            vec!["--handshake-timeout", "more than 0"],
        ),
        (
            p(&["--header-timeout", "0s"]),
            vec!["--header-timeout", "more than 0"],
        ),
        (
            p(&["--idle-timeout", "0s"]),
            vec!["--idle-timeout", "more than 0"],
        ),
        (
            p(&["--idle-timeout", "a while"]),
            vec!["--idle-timeout", "write it like 30s"],
        ),
        (
            p(&["--connect-timeout", "0"]),
            vec!["--connect-timeout", "more than 0"],
        ),
        (
            p(&["--ws-idle-timeout", "0ms"]),
            vec!["--ws-idle-timeout", "more than 0"],
        ),
        // sizes and counts
        (p(&["--max-body", "lots"]), vec!["--max-body", "100M"]),
        (
            p(&["--max-body", "99999999999T"]),
            vec!["--max-body", "100M"],
        ),
        (
            p(&["--max-header-size", "1K"]),
            vec!["--max-header-size", "8K to 16M"],
        ),
        (
            p(&["--max-connections", "0"]),
            vec!["--max-connections", "at least 1"],
        ),
        (
            p(&["--max-connections", "many"]),
            vec!["--max-connections", "many"],
        ),
        // addresses and ports
        (p(&["--listen", "443"]), vec!["--listen", ":443"]),
        (
            p(&["--listen", "127.0.0.1:65536"]),
            vec!["--listen", "0.0.0.0:443"],
        ),
        (
            p(&["--listen", "localhost:8443"]),
            vec!["--listen", "0.0.0.0:443"],
        ),
        (
            p(&["--trusted-proxy", "10.0.0.0/33"]),
            vec!["--trusted-proxy", "10.0.0.0/8"],
        ),
        // URLs
        (
            vec!["proxy", "--upstream", "127.0.0.1:8080"],
            vec!["--upstream", "http://127.0.0.1:8080"],
        ),
        (
            vec!["proxy", "--upstream", "https://127.0.0.1:8080"],
            vec!["scheme `https`", "http://127.0.0.1:8080"],
        ),
        (
            vec!["proxy", "--upstream", "http://127.0.0.1:99999"],
            vec!["--upstream", "99999", "http://127.0.0.1:8080"],
        ),
        (
            vec!["proxy", "--upstream", "http://127.0.0.1:8080/webui"],
            vec!["--upstream", "path"],
        ),
        (
            p(&[
                "--domain",
                "a.example.com",
                "--acme-directory",
                "http://ca.example/dir",
            ]),
            vec!["--acme-directory", "https://"],
        ),
        (
            p(&["--domain", "a.example.com", "--email", "admin"]),
            vec!["--email", "admin@example.com"],
        ),
        // every --domain form from PITFALLS.md that is not a DNS name
        (
            p(&["--domain", "https://x.example.com/"]),
            vec!["URL", "--domain x.example.com"],
        ),
        (
            p(&["--domain", "x.example.com/chat"]),
            vec!["path", "--domain x.example.com"],
        ),
        (
            p(&["--domain", "x.example.com:8443"]),
            vec!["port", "--domain x.example.com"],
        ),
        (
            p(&["--domain", "203.0.113.9"]),
            vec!["IP address", "--self-signed"],
        ),
        (p(&["--domain", "[2001:db8::1]"]), vec!["IP address"]),
        (
            p(&["--domain", "*.example.com"]),
            vec!["wildcard", "--domain example.com"],
        ),
        (p(&["--domain", "localhost"]), vec!["single label"]),
        (
            p(&["--domain", "under_score.example.com"]),
            vec!["not a valid DNS name"],
        ),
        (p(&["--domain", ""]), vec!["--domain is empty"]),
        // contradictions
        (
            p(&["--self-signed", "--tls-cert", "c.pem", "--tls-key", "k.pem"]),
            vec!["--self-signed", "--tls-cert"],
        ),
        (p(&["--tls-cert", "c.pem"]), vec!["--tls-key"]),
        (
            p(&[
                "--domain",
                "a.example.com",
                "--staging",
                "--acme-directory",
                "https://ca/dir",
            ]),
            vec!["--staging", "--acme-directory"],
        ),
        (
            vec![
                "proxy",
                "--upstream",
                "http://127.0.0.1:9",
                "--no-http",
                "--http-listen",
                "127.0.0.1:0",
            ],
            vec!["--no-http", "--http-listen"],
        ),
        (
            vec![
                "proxy",
                "--upstream",
                "http://127.0.0.1:9",
                "--listen",
                "127.0.0.1:18080",
                "--http-listen",
                "127.0.0.1:18080",
            ],
            vec!["127.0.0.1:18080", "two ports"],
        ),
        (
            p(&["--challenge", "dns-01"]),
            vec!["dns-01", "http-01", "tls-alpn-01"],
        ),
        (p(&["--no-such-flag"]), vec!["--no-such-flag"]),
        (
            vec!["up", "--ollama", "--ollama-url", "http://127.0.0.1:11434"],
            vec!["--ollama", "--ollama-url"],
        ),
        (
            vec!["up", "--network", "overlay"],
            vec!["overlay", "bridge", "host"],
        ),
        (vec!["up", "--port", "70000"], vec!["--port", "70000"]),
        (
            vec!["up", "--notify-url-file", "/nonexistent/notify.url"],
            vec![
                "cannot read --notify-url-file",
                "/nonexistent/notify.url",
                "hint:",
            ],
        ),
        (
            vec!["up", "--backup-every", "0s"],
            vec!["--backup-every", "longer than 0s"],
        ),
        (
            vec!["up", "--backup-keep", "3"],
            vec!["--backup-keep", "--backup-every 1d"],
        ),
        (
            vec![
                "up",
                "--backup-every",
                "1d",
                "--backup-dir",
                "/proc/webui-backups",
            ],
            vec!["--backup-dir /proc/webui-backups", "hint:"],
        ),
        (
            vec!["update", "--version", "v1", "--image", "x:y"],
            vec!["--version", "--image"],
        ),
        (vec!["down", "--yes"], vec!["--purge-data"]),
    ];
    for (args, needles) in cases {
        let out = run(s, &args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "webui {args:?} must exit 1:\n{}{}",
            out.stdout,
            out.stderr
        );
        assert!(out.stderr.contains("error: "), "{args:?}:\n{}", out.stderr);
        for n in needles {
            assert!(
                out.stderr.contains(n),
                "webui {args:?}: stderr should mention `{n}`:\n{}",
                out.stderr
            );
        }
    }
    assert!(!s.join("ca").exists(), "a refused start writes nothing");

    // --help is not an error, wherever it appears.
    for args in [
        vec!["--help"],
        vec!["proxy", "--help"],
        vec!["up", "--help"],
        vec!["proxy", "--listen", "nonsense", "--help"],
        vec!["help", "up"],
    ] {
        let out = run(s, &args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", out.stderr);
        assert!(out.stdout.contains("Usage:"), "{args:?}: {}", out.stdout);
    }
}

/// `--ollama-ca` (the CA of a `--self-signed` Ollama server on another box): without a
/// token it has nothing to do, and a file that is not a CA certificate is named.
#[test]
fn a_bad_ollama_ca_is_refused_before_anything_starts() {
    let state = webui::state_dir();
    let s = state.path();
    let files = tempfile::tempdir().unwrap();
    let token = files.path().join("ollama.token");
    std::fs::write(&token, "t0k\n").unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let not_pem = files.path().join("ca.txt");
    std::fs::write(&not_pem, "copy ca.pem from the GPU box here\n").unwrap();
    let missing = files.path().join("missing.pem");
    let (token, not_pem, missing) = (
        token.to_str().unwrap(),
        not_pem.to_str().unwrap(),
        missing.to_str().unwrap(),
    );
    let url = ["up", "--ollama-url", "https://models.example.com"];
    refused(
        s,
        &with(&url, &["--ollama-ca", not_pem]),
        &["--ollama-ca", "--ollama-token-file"],
        true,
    );
    let with_token = with(&url, &["--ollama-token-file", token]);
    refused(
        s,
        &with(&with_token, &["--ollama-ca", not_pem]),
        &[not_pem, "holds no certificate"],
        true,
    );
    refused(
        s,
        &with(&with_token, &["--ollama-ca", missing]),
        &[missing, "cannot read --ollama-ca"],
        true,
    );
}

#[test]
fn valid_but_unusual_domains_are_normalised() {
    // `X.COM.` and an IDN are names, written the way certificates need them.
    let state = webui::state_dir();
    let out = run(
        state.path(),
        &[
            "config",
            "show",
            "--json",
            "--upstream",
            "http://127.0.0.1:9",
            "--domain",
            "Chat.Example.COM.",
            "--domain",
            "bücher.example",
            "--domain",
            "chat.example.com",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    let domains = v["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["key"] == "domain")
        .map(|s| s["value"].clone())
        .unwrap();
    assert_eq!(
        domains,
        serde_json::json!(["chat.example.com", "xn--bcher-kva.example"]),
        "lower case, no trailing dot, punycode, duplicates dropped"
    );
}

// ---------------------------------------------------------------- environment faults

#[test]
fn a_port_below_1024_without_privilege_exits_1_with_the_fix() {
    let state = webui::state_dir();
    let args = [
        "proxy",
        "--upstream",
        "http://127.0.0.1:9",
        "--listen",
        "127.0.0.1:443",
        "--no-http",
    ];
    if let Some(out) = as_nobody(state.path(), &args) {
        assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
        assert!(
            out.stderr.contains("127.0.0.1:443")
                && out.stderr.contains("permission denied")
                && out.stderr.contains("CAP_NET_BIND_SERVICE"),
            "{}",
            out.stderr
        );
        assert!(!state.path().join("ca").exists(), "nothing written");
    }
}

#[test]
fn a_port_held_by_another_server_names_the_holder() {
    let state = webui::state_dir();
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap().to_string();
    let stderr = refused(
        state.path(),
        &[
            "proxy",
            "--upstream",
            "http://127.0.0.1:9",
            "--listen",
            &addr,
            "--no-http",
        ],
        &[&addr, "already in use", "config export nginx"],
        true,
    );
    assert!(
        stderr.contains(&format!("pid {}", std::process::id())),
        "the holder is named: {stderr}"
    );
}

#[test]
fn local_ca_key_readable_by_others_or_corrupt_is_refused() {
    let state = webui::state_dir();
    // A first start creates the CA.
    let mut p = Webui::start(state.path(), &PROXY, Duration::from_secs(20));
    p.signal("TERM");
    p.wait(Duration::from_secs(10));
    let key = state.path().join("ca").join("ca.key");
    assert!(key.exists());
    let good = std::fs::read(&key).unwrap();

    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let out = run(state.path(), &PROXY);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    let k = key.to_str().unwrap();
    assert!(
        out.stderr.contains(k) && out.stderr.contains(&format!("chmod 600 {k}")),
        "{}",
        out.stderr
    );

    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    std::fs::write(&key, b"-----BEGIN PRIVATE KEY-----\ngarbage\n").unwrap();
    let out = run(state.path(), &PROXY);
    assert_eq!(out.status.code(), Some(1), "a corrupt CA key is refused");
    assert!(
        out.stderr.contains(k)
            && out.stderr.contains("not a valid key")
            && out.stderr.contains("hint: restore it from a backup"),
        "{}",
        out.stderr
    );
    assert_eq!(
        std::fs::read(state.path().join("ca").join("ca.key")).unwrap(),
        b"-----BEGIN PRIVATE KEY-----\ngarbage\n",
        "the broken key is left for the operator, not silently replaced"
    );
    drop(good);
}

// ---------------------------------------------------------------- odd clients

async fn exchange(p: &Webui, ca: &Path, bytes: &[u8]) -> String {
    webui::tls_exchange(p.https[0], ca, bytes).await
}

#[tokio::test]
async fn http10_clients_and_a_websocket_to_a_down_upstream_get_clean_answers() {
    let up = standin::spawn().await;
    let state = webui::state_dir();
    let p = Webui::start(
        state.path(),
        &[
            "proxy",
            "--upstream",
            &up.url(""),
            "--listen",
            "127.0.0.1:0",
            "--no-http",
        ],
        Duration::from_secs(20),
    );
    let ca = webui::local_ca(state.path());

    // HTTP/1.0 with a Host: answered in HTTP/1.x and closed (no keep-alive asked).
    let r = exchange(&p, &ca, b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.") && r.contains(" 200 "), "{r}");
    // HTTP/1.0 without a Host: there is no name to forward; a clean 400.
    let r = exchange(&p, &ca, b"GET /health HTTP/1.0\r\n\r\n").await;
    assert!(r.contains(" 400 "), "{r}");

    // A WebSocket upgrade while the upstream is down: a 502, not a hang or a 101.
    let addr = up.stop().await;
    let r = exchange(
        &p,
        &ca,
        b"GET /ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAccept: application/json\r\n\r\n",
    )
    .await;
    // upstream_unreachable, or upstream_broken when a pooled connection to the
    // stopped upstream was tried first: a 502 either way.
    assert!(r.contains(" 502 ") && r.contains("\"upstream_"), "{r}");
    assert!(!r.contains(" 101 "), "{r}");

    let _up = standin::spawn_at(addr, standin::Config::default())
        .await
        .unwrap();
    let c = webui::https_client(&ca, false);
    let res = c.get(p.https_url("/health")).send().await.unwrap();
    assert_eq!(res.status(), 200, "the proxy serves again");
}
