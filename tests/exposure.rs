//! Exposure check (issue #11): after `webui up` with everything that opens something
//! (HTTPS and the HTTP redirect listener on every address, the bundled Ollama with its
//! API served on `--ollama-domain`, the local CA, the control socket), only the
//! proxy's own two listeners accept connections on non-loopback addresses.
//! Containers publish on 127.0.0.1 only (Ollama only its `--ollama-port`, for the
//! proxy); the control socket and every secret are mode 0600.
//!
//! Looked at three ways: the kernel's listening sockets (`/proc/net/tcp{,6}`, mapped
//! to their processes through `/proc/PID/fd`), the containers' port bindings (Docker
//! API through bollard), and connection attempts to this host's LAN address.

mod support;
#[path = "supervision_support/mod.rs"]
mod sv;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use support::webui;

/// One listening TCP socket: address, port, socket inode.
#[derive(Debug, Clone)]
struct Listener {
    ip: IpAddr,
    port: u16,
    inode: u64,
}

/// `/proc/net/tcp` and `tcp6` sockets in state LISTEN.
fn listeners() -> Vec<Listener> {
    let mut out = Vec::new();
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 10 || fields[3] != "0A" {
                continue;
            }
            let Some((addr, port)) = fields[1].split_once(':') else {
                continue;
            };
            let (Some(ip), Ok(port), Ok(inode)) = (
                proc_addr(addr),
                u16::from_str_radix(port, 16),
                fields[9].parse::<u64>(),
            ) else {
                continue;
            };
            out.push(Listener { ip, port, inode });
        }
    }
    out
}

/// `/proc/net/tcp` addresses: 32-bit words in host (little-endian) byte order.
fn proc_addr(hex: &str) -> Option<IpAddr> {
    let words: Vec<u32> = (0..hex.len() / 8)
        .map(|i| u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok())
        .collect::<Option<_>>()?;
    match words.as_slice() {
        [w] => Some(IpAddr::V4(Ipv4Addr::from(w.swap_bytes()))),
        [_, _, _, _] => {
            let mut b = [0u8; 16];
            for (i, w) in words.iter().enumerate() {
                b[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
            }
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

/// Which process holds each socket inode (this host's processes, as root).
fn socket_owners() -> BTreeMap<u64, (u32, String)> {
    let mut out = BTreeMap::new();
    for p in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(p.path().join("comm"))
            .unwrap_or_default()
            .trim()
            .to_string();
        for fd in std::fs::read_dir(p.path().join("fd"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let t = target.to_string_lossy();
            if let Some(inode) = t
                .strip_prefix("socket:[")
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|i| i.parse().ok())
            {
                out.insert(inode, (pid, comm.clone()));
            }
        }
    }
    out
}

fn is_loopback(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v| v.is_loopback()),
    }
}

/// This host's address on its default route, if it has one besides loopback.
fn lan_ip() -> Option<IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
}

/// Every file under `dir` with its mode, relative names.
fn files(dir: &Path, base: &Path, out: &mut Vec<(String, u32, bool)>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(meta) = e.path().symlink_metadata() else {
            continue;
        };
        let name = e.path().strip_prefix(base).unwrap().display().to_string();
        if meta.is_dir() {
            files(&e.path(), base, out);
        } else {
            let mode = meta.permissions().mode() & 0o777;
            out.push((name, mode, meta.file_type().is_socket()));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn after_up_with_everything_only_the_proxy_listens_beyond_loopback() {
    let Some(img) = sv::docker_available() else {
        return;
    };
    let Ok(ollama_image) = std::env::var("WEBUI_TEST_OLLAMA_IMAGE") else {
        sv::skip("WEBUI_TEST_OLLAMA_IMAGE is not set (source /var/lib/webui-ci/env)");
        return;
    };
    let p = sv::Cleanup::new("flt-expo");
    let state = webui::state_dir();
    let (https, http) = (sv::free_port(), sv::free_port());
    let (listen, http_listen) = (format!("0.0.0.0:{https}"), format!("0.0.0.0:{http}"));
    let port = sv::free_port().to_string();
    let ollama_port = sv::free_port().to_string();
    let w = webui::Webui::start(
        state.path(),
        &[
            "--project",
            &p.name,
            "up",
            "--listen",
            &listen,
            "--http-listen",
            &http_listen,
            "--image",
            &img.tag("v1"),
            "--port",
            &port,
            "--ollama",
            "--ollama-image",
            &ollama_image,
            // The bundled Ollama's API served (token-protected) by the proxy on a
            // name of its own: Ollama is then published, on loopback, for the proxy.
            "--ollama-domain",
            "ollama.exposure.test",
            "--ollama-port",
            &ollama_port,
        ],
        sv::START,
    );
    sv::wait_ready(&w);

    // 1. The kernel's listening sockets: beyond loopback, the webui process has its two
    //    listeners and nothing else; no other process listens on a port of this project.
    let owners = socket_owners();
    let all = listeners();
    let mine: Vec<&Listener> = all
        .iter()
        .filter(|l| owners.get(&l.inode).is_some_and(|(pid, _)| *pid == w.pid()))
        .collect();
    let public: BTreeSet<u16> = mine
        .iter()
        .filter(|l| !is_loopback(&l.ip))
        .map(|l| l.port)
        .collect();
    assert_eq!(
        public,
        BTreeSet::from([https, http]),
        "webui listens beyond loopback on exactly its HTTPS and HTTP listeners: {mine:?}"
    );

    // 2. The containers' port bindings, from the Docker API.
    let docker = bollard::Docker::connect_with_local_defaults().expect("docker");
    let mut published = Vec::new();
    for role in ["open-webui", "ollama"] {
        let c = docker
            .inspect_container(&p.n(role), None)
            .await
            .unwrap_or_else(|e| panic!("inspect {role}: {e}"));
        let host = c.host_config.unwrap_or_default();
        let mode = host.network_mode.clone().unwrap_or_default();
        let bindings = host.port_bindings.unwrap_or_default();
        let ports = c.network_settings.and_then(|n| n.ports).unwrap_or_default();
        for (what, map) in [("configured", bindings), ("active", ports)] {
            for (cport, b) in map {
                for b in b.unwrap_or_default() {
                    let ip = b.host_ip.unwrap_or_default();
                    let hport: u16 = b.host_port.unwrap_or_default().parse().unwrap_or(0);
                    assert!(
                        role != "ollama" || hport.to_string() == ollama_port,
                        "Ollama is published only on --ollama-port: {what} {cport} -> {ip}:{hport}"
                    );
                    assert!(
                        ip == "127.0.0.1" || ip == "::1",
                        "{role} {what} binding {cport} -> {ip:?}:{hport}: loopback only (an empty address means every interface)"
                    );
                    published.push(hport);
                }
            }
        }
        assert_ne!(
            mode, "host",
            "{role} uses the project network, not the host's"
        );
    }
    assert!(
        published.contains(&port.parse().unwrap()),
        "open-webui is published on 127.0.0.1:{port}: {published:?}"
    );
    // Whoever serves the published port on the host does so on loopback only.
    for l in all.iter().filter(|l| published.contains(&l.port)) {
        assert!(
            is_loopback(&l.ip),
            "port {} listens on {} ({:?})",
            l.port,
            l.ip,
            owners.get(&l.inode)
        );
    }

    // 3. From this host's LAN address: the proxy answers, the containers do not.
    if let Some(ip) = lan_ip() {
        assert!(accepts(SocketAddr::new(ip, https)), "HTTPS on {ip}");
        assert!(accepts(SocketAddr::new(ip, http)), "HTTP on {ip}");
        for port in &published {
            assert!(
                !accepts(SocketAddr::new(ip, *port)),
                "the container port {port} must not accept on {ip}"
            );
        }
        // Ollama's own port, should anything have published or forwarded it.
        assert!(!accepts(SocketAddr::new(ip, 11434)) || ollama_on_host());
    } else {
        eprintln!("no non-loopback address on this host: the connection checks are skipped");
    }

    // 4. The control socket and every secret (secret key, private keys, passwords,
    //    the Ollama API token) are 0600.
    let mut all_files = Vec::new();
    files(state.path(), state.path(), &mut all_files);
    let sock = all_files
        .iter()
        .find(|(n, _, s)| *s && n.ends_with(".sock"))
        .unwrap_or_else(|| panic!("a control socket in the state dir: {all_files:?}"));
    assert_eq!(sock.1, 0o600, "control socket {}", sock.0);
    let secrets: Vec<&(String, u32, bool)> = all_files
        .iter()
        .filter(|(n, _, _)| {
            ["secret", ".key", "key.pem", "password", "token"]
                .iter()
                .any(|k| n.contains(k))
        })
        .collect();
    assert!(
        secrets.iter().any(|(n, _, _)| n.contains("secret_key")),
        "the secret key is in the state dir: {all_files:?}"
    );
    assert!(
        secrets.iter().any(|(n, _, _)| n.contains("ollama_token")),
        "the served Ollama API's token is in the state dir: {all_files:?}"
    );
    assert!(
        secrets.iter().any(|(n, _, _)| n.starts_with("ca/")),
        "the local CA's key is in the state dir: {all_files:?}"
    );
    for (n, mode, _) in &secrets {
        assert_eq!(*mode, 0o600, "{n} is a secret");
    }
    eprintln!(
        "exposure: webui listens beyond loopback on {public:?} only; containers published on 127.0.0.1:{published:?}; LAN address checked: {:?}; state dir files {:?}",
        lan_ip(),
        all_files
            .iter()
            .map(|(n, m, _)| format!("{n} {m:o}"))
            .collect::<Vec<_>>()
    );
    sv::stop(w);
}

/// An Ollama of the host's own (not ours) on 11434: the check above does not apply.
fn ollama_on_host() -> bool {
    accepts(SocketAddr::from(([127, 0, 0, 1], 11434)))
}
