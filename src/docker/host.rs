//! Small probes of the host webui runs on: is a loopback port free, does an Ollama
//! answer on it, on which addresses does that Ollama listen, what is this host's LAN
//! address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use super::health;

/// True when something listens on 127.0.0.1:`port` (a bind there fails).
pub fn port_in_use(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(socket) = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    ) else {
        return false;
    };
    // Like a real server would: connections in TIME_WAIT do not make a port busy.
    let _ = socket.set_reuse_address(true);
    socket.bind(&addr.into()).is_err()
}

/// The version of the Ollama answering on 127.0.0.1:`port`, if one does.
pub async fn probe_ollama(port: u16) -> Option<String> {
    let url = format!("http://127.0.0.1:{port}/api/version");
    let (status, body) = health::http_get(&url, Duration::from_secs(2)).await.ok()?;
    if !status.is_success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    v.get("version")
        .and_then(|v| v.as_str())
        .map(str::to_string)
}

/// Where a host server listens, from the containers' point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenScope {
    /// Only 127.0.0.1 / ::1: containers on a bridge cannot reach it.
    LoopbackOnly,
    /// 0.0.0.0 or [::]: reachable from containers, and from the network unless a
    /// firewall stops it.
    Everywhere,
    /// Specific addresses.
    Some,
}

/// Listening addresses on `port` found in the text of `/proc/net/tcp` or `tcp6`.
pub fn listening_addrs(proc_net_tcp: &str, port: u16) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for line in proc_net_tcp.lines().skip(1) {
        let mut fields = line.split_whitespace();
        let (Some(_sl), Some(local), Some(_remote), Some(state)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        // 0A is TCP_LISTEN.
        if state != "0A" {
            continue;
        }
        let Some((addr_hex, port_hex)) = local.split_once(':') else {
            continue;
        };
        if u16::from_str_radix(port_hex, 16).ok() != Some(port) {
            continue;
        }
        if let Some(ip) = parse_proc_addr(addr_hex) {
            out.push(ip);
        }
    }
    out
}

/// `/proc/net/tcp` addresses: 32-bit words in host (little-endian) byte order.
fn parse_proc_addr(hex: &str) -> Option<IpAddr> {
    let words: Option<Vec<u32>> = (0..hex.len() / 8)
        .map(|i| u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok())
        .collect();
    let words = words?;
    match words.len() {
        1 => Some(IpAddr::V4(Ipv4Addr::from(words[0].swap_bytes()))),
        4 => {
            let mut bytes = [0u8; 16];
            for (i, w) in words.iter().enumerate() {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

/// Classifies listening addresses.
pub fn scope(addrs: &[IpAddr]) -> Option<ListenScope> {
    if addrs.is_empty() {
        None
    } else if addrs.iter().any(|a| a.is_unspecified()) {
        Some(ListenScope::Everywhere)
    } else if addrs.iter().all(|a| a.is_loopback()) {
        Some(ListenScope::LoopbackOnly)
    } else {
        Some(ListenScope::Some)
    }
}

/// Where this host's server on `port` listens, read from `/proc/net/tcp{,6}`.
pub fn listen_scope(port: u16) -> Option<ListenScope> {
    let mut addrs = Vec::new();
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(f) {
            addrs.extend(listening_addrs(&text, port));
        }
    }
    scope(&addrs)
}

/// This host's first LAN IPv4 address (not loopback, not a Docker bridge).
pub fn lan_ipv4() -> Option<IpAddr> {
    let ifaces = if_addrs::get_if_addrs().ok()?;
    ifaces
        .into_iter()
        .filter(|i| {
            !i.is_loopback()
                && !i.name.starts_with("docker")
                && !i.name.starts_with("br-")
                && !i.name.starts_with("veth")
        })
        .map(|i| i.ip())
        .find(|ip| ip.is_ipv4())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:2CAA 00000000:0000 0A 00000000:00000000 00:00000000 00000000   998        0 1 1 0000000000000000 100 0 0 10 0
   1: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 100 0 0 10 0
   2: 0100007F:2CAA 0100007F:A000 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 100 0 0 10 0
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st
   0: 00000000000000000000000000000000:2CAA 00000000000000000000000000000000:0000 0A 00000000:00000000
   1: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000
";

    #[test]
    fn proc_net_tcp_is_parsed() {
        assert_eq!(
            listening_addrs(TCP, 11434),
            vec![IpAddr::from([127, 0, 0, 1])]
        );
        assert_eq!(listening_addrs(TCP, 80), vec![IpAddr::from([0, 0, 0, 0])]);
        assert_eq!(
            listening_addrs(TCP6, 11434),
            vec![IpAddr::V6(Ipv6Addr::UNSPECIFIED)]
        );
        assert_eq!(
            listening_addrs(TCP6, 80),
            vec![IpAddr::V6(Ipv6Addr::LOCALHOST)]
        );
        assert!(listening_addrs(TCP, 1).is_empty());
    }

    #[test]
    fn scopes() {
        assert_eq!(scope(&[]), None);
        assert_eq!(
            scope(&[IpAddr::from([127, 0, 0, 1])]),
            Some(ListenScope::LoopbackOnly)
        );
        assert_eq!(
            scope(&[IpAddr::from([127, 0, 0, 1]), IpAddr::from([0, 0, 0, 0])]),
            Some(ListenScope::Everywhere)
        );
        assert_eq!(
            scope(&[IpAddr::from([172, 17, 0, 1])]),
            Some(ListenScope::Some)
        );
    }

    #[test]
    fn busy_ports_are_seen() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(port_in_use(port));
        drop(l);
        assert!(!port_in_use(port));
    }
}
