//! `webui up --behind-proxy` against the real dockerd and the stand-in image: webui
//! listens nowhere (no 80/443, no port at all), Open WebUI answers on 127.0.0.1:PORT
//! only, `status` says so, the printed `webui config export` commands are exact, and
//! a real nginx started from that export in front of it carries a websocket and SSE.
//! Flags that configure webui's own HTTPS are refused with exit 1.

#[path = "support/frontends.rs"]
mod frontends;
mod support;
#[path = "supervision_support/mod.rs"]
mod sv;

use std::net::TcpStream;
use std::time::Duration;

use frontends::NAME;
use support::webui::{self, Webui};

/// The TCP ports process `pid` listens on (its sockets in LISTEN state).
fn listening_ports(pid: u32) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                .filter_map(|t| {
                    let t = t.to_string_lossy().to_string();
                    Some(t.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() > 9 && cols[3] == "0A" && inodes.iter().any(|i| i == cols[9]) {
                let port = cols[1].rsplit(':').next().unwrap_or("0");
                ports.push(u16::from_str_radix(port, 16).unwrap_or(0));
            }
        }
    }
    ports
}

/// This host's non-loopback IPv4 addresses.
fn other_addresses() -> Vec<String> {
    let out = std::process::Command::new("hostname")
        .arg("-I")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    out.split_whitespace()
        .filter(|a| {
            a.parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| !ip.is_loopback())
        })
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn behind_proxy_listens_nowhere_and_nginx_from_its_export_carries_ws_and_sse() {
    let Some(images) = sv::docker_available() else {
        return;
    };
    let Some(nginx) = frontends::require("nginx", "nginx") else {
        return;
    };
    let state = webui::state_dir();
    let p = sv::Cleanup::new("bp");
    let port = sv::free_port();
    let port_s = port.to_string();
    let image = images.tag("v1");
    let upstream = format!("http://127.0.0.1:{port}");

    // Refused: settings of webui's own HTTPS, before anything is started.
    for (extra, flag) in [
        (vec!["--listen", "127.0.0.1:8443"], "--listen"),
        (vec!["--self-signed"], "--self-signed"),
        (
            vec!["--acme-directory", "https://127.0.0.1:14000/dir"],
            "--acme-directory",
        ),
    ] {
        let mut args = vec!["up", "--behind-proxy", "--image", &image, "--port", &port_s];
        args.extend_from_slice(&extra);
        let f = sv::run(state.path(), &p, &args);
        assert_eq!(f.status.code(), Some(1), "{args:?}: {}", f.stderr);
        assert!(
            f.stderr
                .contains(&format!("{flag} cannot be used with --behind-proxy"))
                && f.stderr.contains("hint:"),
            "{}",
            f.stderr
        );
    }
    let (_, running) = sv::docker(&["ps", "-a", "--format", "{{.Names}}"]);
    assert!(
        !running.contains(&p.n("open-webui")),
        "a refused start created nothing"
    );

    let mut cmd = webui::command(state.path());
    cmd.args(["--project", &p.name, "up", "--behind-proxy"])
        .args(["--domain", NAME, "--image", &image, "--port", &port_s]);
    let w = Webui::spawn(cmd);
    sv::wait_output(&w, "Open WebUI is ready at", sv::READY);
    let out = w.output_text();
    assert!(
        out.contains(&format!(
            "Open WebUI is ready at {upstream} (loopback only)"
        )),
        "{out}"
    );
    for server in ["nginx", "apache", "caddy"] {
        let hint = format!(
            " --state-dir {} config export {server} --domain {NAME} --upstream {upstream} > ",
            state.path().display()
        );
        assert!(
            out.contains(&hint),
            "the exact export command `{hint}`:\n{out}"
        );
    }
    assert!(!out.contains("listening on"), "{out}");

    // webui itself listens on no TCP port at all (so neither 80 nor 443).
    assert_eq!(listening_ports(w.pid()), Vec::<u16>::new(), "{out}");
    // Open WebUI: published on loopback only, answering there and nowhere else.
    let bindings = sv::inspect(&p.n("open-webui"), "{{json .HostConfig.PortBindings}}");
    assert!(
        bindings.contains("\"HostIp\":\"127.0.0.1\"") && !bindings.contains("0.0.0.0"),
        "{bindings}"
    );
    let c = reqwest::Client::builder()
        .tls_backend_preconfigured(webui::client_tls(&[], &[b"http/1.1"]))
        .build()
        .unwrap();
    let res = c.get(format!("{upstream}/health")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    for addr in other_addresses() {
        assert!(
            TcpStream::connect_timeout(
                &format!("{addr}:{port}").parse().unwrap(),
                Duration::from_secs(2)
            )
            .is_err(),
            "Open WebUI must not answer on {addr}:{port}"
        );
    }

    // `status`: behind a proxy, in text and JSON.
    let v = sv::status_json(state.path(), &p);
    assert_eq!(v["proxy"]["behind_proxy"], true, "{v:#}");
    assert_eq!(v["proxy"]["https"], serde_json::json!([]), "{v:#}");
    assert_eq!(v["healthy"], true, "{v:#}");
    let f = sv::run(state.path(), &p, &["status"]);
    assert!(
        f.stdout.contains("proxy: behind a proxy (--behind-proxy)"),
        "{}",
        f.stdout
    );

    // nginx, from the export, in front of it: websocket, SSE, headers, redirect.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (cert, key) = frontends::cert_for_name(d);
    let (text, https, http) =
        frontends::export_on_loopback(state.path(), "nginx", &cert, &key, &upstream);
    let site = d.join("site.nginx");
    std::fs::write(&site, text).unwrap();
    let conf = frontends::nginx_wrapper(d, &site);
    let server = frontends::Server::start(
        "nginx",
        frontends::nginx_cmd(&nginx, d, &conf),
        d.join("nginx-error.log"),
        https.port(),
    );
    frontends::exercise("nginx", &cert, https, http, true).await;
    drop(server);
    sv::stop(w);
}
