//! `webui config show|init|export` end to end: the real binary, and for `export` the real
//! nginx, Apache httpd and Caddy, checked with their own tools and then started on
//! loopback in front of the stand-in upstream, with websockets and SSE run through them.
//!
//! The web servers come from Debian's packages `nginx`, `apache2` and `caddy`. Outside
//! CI a missing one is skipped with a printed reason; with `CI` set it is a failure.

#[path = "support/frontends.rs"]
mod frontends;
mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use frontends::*;
use serde_json::Value;
use support::standin;
use support::webui;

// ---------------------------------------------------------------- show

fn show_json(cmd: &mut Command) -> Value {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "config show failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "config show --json is not JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn setting<'a>(v: &'a Value, key: &str) -> &'a Value {
    v["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["key"] == key)
        .unwrap_or_else(|| panic!("no setting {key} in {v}"))
}

#[test]
fn config_show_json_names_where_each_value_came_from() {
    let state = webui::state_dir();
    std::fs::write(
        state.path().join("webui.toml"),
        "max_body = \"10M\"\nheader_timeout = \"20s\"\nconnect_timeout = \"7s\"\n",
    )
    .unwrap();
    let v = show_json(
        webui::command(state.path())
            .args([
                "config",
                "show",
                "--json",
                "--listen",
                "127.0.0.1:8443",
                "--connect-timeout",
                "3s",
            ])
            .env("WEBUI_WS_IDLE_TIMEOUT", "2h")
            .env("WEBUI_HEADER_TIMEOUT", "40s")
            .env("WEBUI_CONNECT_TIMEOUT", "9s"),
    );
    let expect = |key: &str, value: Value, source: &str| {
        let s = setting(&v, key);
        assert_eq!(s["value"], value, "{key}: {s}");
        assert_eq!(s["source"], source, "{key}: {s}");
    };
    expect("listen", serde_json::json!(["127.0.0.1:8443"]), "flag");
    expect("connect_timeout", "3s".into(), "flag"); // flag > env > file
    expect("ws_idle_timeout", "2h".into(), "env");
    expect("header_timeout", "40s".into(), "env"); // env > file
    expect("max_body", (10u64 << 20).into(), "file");
    expect("upstream", "http://127.0.0.1:3000".into(), "default");
    expect(
        "http_listen",
        serde_json::json!(["0.0.0.0:80", "[::]:80"]),
        "default",
    );
    expect("drain_timeout", "10s".into(), "default");
    let explicit = [
        "listen",
        "connect_timeout",
        "ws_idle_timeout",
        "header_timeout",
        "max_body",
    ];
    for s in v["settings"].as_array().unwrap() {
        if !explicit.contains(&s["key"].as_str().unwrap()) {
            assert_eq!(s["source"], "default", "{s}");
        }
    }
    assert_eq!(
        v["config_file"],
        state.path().join("webui.toml").to_str().unwrap()
    );
    assert_eq!(v["state_dir"], state.path().to_str().unwrap());

    // The text form shows the same.
    let out = webui::command(state.path())
        .args(["config", "show", "--listen", "127.0.0.1:8443"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{key} ")))
            .unwrap_or_else(|| panic!("no {key} line in\n{text}"))
            .to_string()
    };
    assert!(line("listen").ends_with(" flag"), "{text}");
    assert!(line("max_body").ends_with(" file"), "{text}");
    assert!(line("no_hsts").ends_with(" default"), "{text}");
}

// ---------------------------------------------------------------- init

#[test]
fn config_init_writes_a_commented_file_and_never_overwrites_without_force() {
    let root = webui::state_dir();
    let state = root.path().join("new-state");
    let out = webui::run(&state, &["config", "init"], RUN);
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    let path = state.join("webui.toml");
    assert!(state.is_dir(), "the state directory is created");
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o644);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("# listen = [\":443\"]"), "{text}");
    assert!(text.contains("# max_body = "), "{text}");
    assert!(text.contains("# image = "), "{text}");
    let file = ::webui::config::FileConfig::parse(&text, &path).unwrap();
    assert_eq!(
        file,
        ::webui::config::FileConfig::default(),
        "all commented out"
    );
    ::webui::config::resolve::proxy(&::webui::cli::ProxyArgs::default(), &file).unwrap();
    let v = show_json(webui::command(&state).args(["config", "show", "--json"]));
    assert!(
        v["settings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["source"] == "default"),
        "{v}"
    );

    std::fs::write(&path, "max_body = \"1M\"\n").unwrap();
    let out = webui::run(&state, &["config", "init"], RUN);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("already exists") && out.stderr.contains("--force"),
        "{}",
        out.stderr
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "max_body = \"1M\"\n",
        "left alone"
    );

    let out = webui::run(&state, &["config", "init", "--force"], RUN);
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o644
    );

    // --config names another file.
    let other = root.path().join("etc/webui/webui.toml");
    let out = webui::run(
        &state,
        &["--config", other.to_str().unwrap(), "config", "init"],
        RUN,
    );
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert_eq!(std::fs::read_to_string(&other).unwrap(), text);
}

// ---------------------------------------------------------------- export

#[test]
fn export_without_a_domain_exits_1_with_a_hint() {
    let state = webui::state_dir();
    for server in ["nginx", "apache", "caddy"] {
        let out = webui::run(state.path(), &["config", "export", server], RUN);
        assert_eq!(out.status.code(), Some(1), "{server}: {}", out.stderr);
        assert!(
            out.stderr.contains("error: ")
                && out.stderr.contains("needs a domain")
                && out.stderr.contains("hint: ")
                && out.stderr.contains("--domain chat.example.com"),
            "{server}: {}",
            out.stderr
        );
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn export_reads_the_config_file_and_env() {
    let state = webui::state_dir();
    std::fs::write(
        state.path().join("webui.toml"),
        "domain = [\"chat.example.com\"]\nmax_body = \"1M\"\nport = 4000\n",
    )
    .unwrap();
    let out = webui::command(state.path())
        .args(["config", "export", "nginx"])
        .env("WEBUI_WS_IDLE_TIMEOUT", "2h")
        .output()
        .unwrap();
    assert!(out.status.success());
    let c = String::from_utf8_lossy(&out.stdout);
    assert!(c.contains("server_name chat.example.com;"), "{c}");
    assert!(c.contains("client_max_body_size 1048576;"), "{c}");
    assert!(c.contains("proxy_read_timeout 7200s;"), "{c}");
    assert!(c.contains("server 127.0.0.1:4000;"), "{c}");
    assert!(
        c.contains("/etc/letsencrypt/live/chat.example.com/fullchain.pem"),
        "{c}"
    );
}

#[test]
fn exported_configs_pass_each_servers_own_check() {
    let state = webui::state_dir();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = cert_for_name(dir.path());
    let d = dir.path();

    if let Some(nginx) = require("nginx", "nginx") {
        for extra in [
            &[][..],
            &[
                "--max-body",
                "100M",
                "--trusted-proxy",
                "10.0.0.0/8",
                "--no-hsts",
            ][..],
            &["--no-http", "--listen", "127.0.0.1:8443"][..],
        ] {
            let site = d.join("site.nginx");
            std::fs::write(&site, export(state.path(), "nginx", &cert, &key, extra)).unwrap();
            let conf = nginx_wrapper(d, &site);
            check(
                nginx_cmd(&nginx, d, &conf).arg("-t"),
                &format!("nginx -t ({extra:?})"),
            );
        }
    }
    if let Some(apache) = require("apache2", "apache2") {
        for extra in [
            &[][..],
            &[
                "--max-body",
                "100M",
                "--trusted-proxy",
                "10.0.0.0/8",
                "--no-hsts",
            ][..],
            &["--no-http", "--listen", "127.0.0.1:8443"][..],
        ] {
            let text = export(state.path(), "apache", &cert, &key, extra);
            let site = d.join("site.apache");
            std::fs::write(&site, &text).unwrap();
            let conf = apache_wrapper(d, &site, &text);
            check(
                Command::new(&apache).arg("-t").arg("-f").arg(&conf),
                &format!("apache2 -t ({extra:?})"),
            );
        }
    }
    if let Some(caddy) = require("caddy", "caddy") {
        for extra in [
            &[][..],
            &[
                "--max-body",
                "100M",
                "--trusted-proxy",
                "10.0.0.0/8",
                "--no-hsts",
            ][..],
            &["--no-http", "--listen", "127.0.0.1:8443"][..],
        ] {
            let site = d.join("Caddyfile");
            std::fs::write(&site, export(state.path(), "caddy", &cert, &key, extra)).unwrap();
            check(
                caddy_cmd(
                    &caddy,
                    d,
                    &["validate", "--adapter", "caddyfile", "--config"],
                )
                .arg(&site),
                &format!("caddy validate ({extra:?})"),
            );
        }
        // Caddy managing the certificate itself (no --tls-cert): still valid.
        let out = webui::run(
            state.path(),
            &[
                "config",
                "export",
                "caddy",
                "--domain",
                "chat.example.com",
                "--email",
                "admin@example.com",
            ],
            RUN,
        );
        let site = d.join("Caddyfile.acme");
        std::fs::write(&site, out.stdout).unwrap();
        check(
            caddy_cmd(
                &caddy,
                d,
                &["validate", "--adapter", "caddyfile", "--config"],
            )
            .arg(&site),
            "caddy validate (ACME)",
        );
    }
}

#[tokio::test]
async fn nginx_started_from_the_export_carries_websockets_and_sse() {
    let Some(nginx) = require("nginx", "nginx") else {
        return;
    };
    let up = standin::spawn().await;
    let state = webui::state_dir();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (cert, key) = cert_for_name(d);
    let (text, https, http) = export_on_loopback(state.path(), "nginx", &cert, &key, &up.url(""));
    let site = d.join("site.nginx");
    std::fs::write(&site, text).unwrap();
    let conf = nginx_wrapper(d, &site);
    let server = Server::start(
        "nginx",
        nginx_cmd(&nginx, d, &conf),
        d.join("nginx-error.log"),
        https.port(),
    );
    exercise("nginx", &cert, https, http, true).await;
    drop(server);
}

#[tokio::test]
async fn caddy_started_from_the_export_carries_websockets_and_sse() {
    let Some(caddy) = require("caddy", "caddy") else {
        return;
    };
    let up = standin::spawn().await;
    let state = webui::state_dir();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (cert, key) = cert_for_name(d);
    let (text, https, http) = export_on_loopback(state.path(), "caddy", &cert, &key, &up.url(""));
    let site = d.join("Caddyfile");
    std::fs::write(&site, caddy_for_test(&text)).unwrap();
    let mut cmd = caddy_cmd(&caddy, d, &["run", "--adapter", "caddyfile", "--config"]);
    cmd.arg(&site);
    let server = Server::start("caddy", cmd, d.join("caddy.log"), https.port());
    exercise("caddy", &cert, https, http, true).await;
    drop(server);
}

#[tokio::test]
async fn apache_started_from_the_export_carries_websockets_and_sse() {
    let Some(apache) = require("apache2", "apache2") else {
        return;
    };
    let up = standin::spawn().await;
    let state = webui::state_dir();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Apache's worker runs as `nobody`; it only needs the directory to be reachable.
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (cert, key) = cert_for_name(d);
    let (text, https, http) = export_on_loopback(state.path(), "apache", &cert, &key, &up.url(""));
    let site = d.join("site.apache");
    std::fs::write(&site, &text).unwrap();
    let conf = apache_wrapper(d, &site, &text);
    let mut cmd = Command::new(&apache);
    // -X: one process in the foreground.
    cmd.arg("-X").arg("-f").arg(&conf);
    let server = Server::start("apache", cmd, d.join("apache-error.log"), https.port());
    exercise("apache", &cert, https, http, false).await;
    drop(server);
}
