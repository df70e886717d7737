//! Header rewriting between client and upstream, as pure functions.
//!
//! Architecture Invariant: `X-Forwarded-*`, `X-Real-IP` and `Forwarded` from a client
//! are overwritten, never appended to, unless the client is a `--trusted-proxy`.
//! Open WebUI's image runs uvicorn with `--forwarded-allow-ips '*'`, so whatever we
//! pass on here is believed.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static FORWARDED: HeaderName = HeaderName::from_static("forwarded");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Headers that describe one hop, not the message (RFC 9110 7.6.1).
fn hop_by_hop() -> [&'static HeaderName; 8] {
    [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
        &header::PROXY_AUTHENTICATE,
    ]
}

/// True when `value` (a comma-separated header: Connection, Transfer-Encoding) lists
/// `token`.
pub fn lists_token(value: &HeaderValue, token: &str) -> bool {
    value
        .to_str()
        .map(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        .unwrap_or(false)
}

/// True for an HTTP/1.1 protocol upgrade request (WebSocket): `Connection: upgrade`
/// plus an `Upgrade` header.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| lists_token(v, "upgrade"))
}

/// The request target as a path to pass on (upstream request, HTTPS redirect): path and
/// query as the client sent them, `/` for `OPTIONS *` or anything else not starting with
/// `/` (after a port, `*` would make the URL unparsable).
pub fn origin_form(uri: &http::Uri) -> http::uri::PathAndQuery {
    match uri.path_and_query() {
        Some(pq) if pq.as_str().starts_with('/') => pq.clone(),
        _ => http::uri::PathAndQuery::from_static("/"),
    }
}

/// Removes hop-by-hop headers, including those the Connection header names. With
/// `keep_upgrade`, `Connection: upgrade` and `Upgrade` survive: a WebSocket handshake
/// must reach the upstream intact.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let upgrade = if keep_upgrade {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in hop_by_hop() {
        headers.remove(name);
    }
    if let Some(up) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, up);
    }
}

/// What the proxy knows about the client connection.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The client's address, an IPv4-mapped IPv6 one as IPv4.
    pub ip: IpAddr,
    /// `https` on the TLS listener, `http` otherwise.
    pub proto: &'static str,
    /// `ip` as a header value, made once per connection (each request of it gets a
    /// copy of the handle, not of the text).
    ip_value: HeaderValue,
}

impl Peer {
    pub fn new(ip: IpAddr, proto: &'static str) -> Peer {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        let ip_value = HeaderValue::from_maybe_shared(bytes::Bytes::from(ip.to_string()))
            .unwrap_or_else(|_| HeaderValue::from_static(""));
        // Made shared now, so that the requests' copies are reference counts.
        drop(ip_value.clone());
        Peer {
            ip,
            proto,
            ip_value,
        }
    }
}

fn trusted(ip: IpAddr, nets: &[IpNet]) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    nets.iter().any(|n| n.contains(&ip))
}

/// Sets `X-Forwarded-For/-Proto/-Host` and `X-Real-IP` for the upstream. `host` is
/// the Host the client asked for. Client-sent values are replaced unless the peer is a
/// trusted proxy, in which case the chain is extended and the real client is the
/// right-most untrusted address in it.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    peer: &Peer,
    host: Option<&HeaderValue>,
    trusted_nets: &[IpNet],
) {
    let peer_ip = peer.ip;
    if trusted(peer_ip, trusted_nets) {
        let chain: Vec<String> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        let mut full = chain.clone();
        full.push(peer_ip.to_string());
        let real = full
            .iter()
            .rev()
            .filter_map(|s| s.parse::<IpAddr>().ok())
            .find(|ip| !trusted(*ip, trusted_nets))
            .unwrap_or(peer_ip);
        set(headers, &X_FORWARDED_FOR, &full.join(", "));
        set(headers, &X_REAL_IP, &real.to_string());
        if !headers.contains_key(&X_FORWARDED_PROTO) {
            headers.insert(
                X_FORWARDED_PROTO.clone(),
                HeaderValue::from_static(peer.proto),
            );
        }
        if !headers.contains_key(&X_FORWARDED_HOST)
            && let Some(h) = host
        {
            headers.insert(X_FORWARDED_HOST.clone(), h.clone());
        }
        return;
    }
    headers.remove(&FORWARDED);
    // insert() replaces every earlier value of the header, spoofed ones included.
    headers.insert(X_FORWARDED_FOR.clone(), peer.ip_value.clone());
    headers.insert(X_REAL_IP.clone(), peer.ip_value.clone());
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(peer.proto),
    );
    match host {
        Some(h) => {
            headers.insert(X_FORWARDED_HOST.clone(), h.clone());
        }
        None => {
            headers.remove(&X_FORWARDED_HOST);
        }
    }
}

fn set(headers: &mut HeaderMap, name: &HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        // insert() replaces every earlier value of the header, spoofed ones included.
        headers.insert(name.clone(), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn peer() -> Peer {
        Peer::new(
            IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 7)),
            "https",
        )
    }

    #[test]
    fn spoofed_forwarded_headers_are_replaced() {
        let mut h = map(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-for", "5.6.7.8"),
            ("x-real-ip", "1.2.3.4"),
            ("x-forwarded-proto", "http"),
            ("x-forwarded-host", "evil.example"),
            ("forwarded", "for=1.2.3.4"),
        ]);
        let host = HeaderValue::from_static("chat.example.com");
        set_forwarded(&mut h, &peer(), Some(&host), &[]);
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-for"], "198.51.100.7");
        assert_eq!(h["x-real-ip"], "198.51.100.7");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "chat.example.com");
        assert!(!h.contains_key("forwarded"));
    }

    #[test]
    fn trusted_proxy_extends_the_chain() {
        let mut h = map(&[
            ("x-forwarded-for", "203.0.113.9, 10.0.0.3"),
            ("x-forwarded-proto", "https"),
        ]);
        let nets: Vec<IpNet> = vec![
            "10.0.0.0/8".parse().unwrap(),
            "198.51.100.0/24".parse().unwrap(),
        ];
        set_forwarded(&mut h, &peer(), None, &nets);
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 10.0.0.3, 198.51.100.7");
        assert_eq!(h["x-real-ip"], "203.0.113.9");
    }

    #[test]
    fn hop_by_hop_headers_go_but_upgrade_survives_when_asked() {
        let base = [
            ("connection", "keep-alive, x-secret, Upgrade"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("upgrade", "websocket"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("sec-websocket-key", "abc"),
            ("cookie", "a=b"),
        ];
        let mut h = map(&base);
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, false);
        for gone in [
            "connection",
            "keep-alive",
            "x-secret",
            "upgrade",
            "te",
            "transfer-encoding",
        ] {
            assert!(!h.contains_key(gone), "{gone} should be removed");
        }
        assert_eq!(h["cookie"], "a=b");
        let mut h = map(&base);
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["sec-websocket-key"], "abc");
        assert!(!h.contains_key("x-secret"));
    }

    #[test]
    fn upgrade_needs_both_headers() {
        assert!(!is_upgrade(&map(&[("upgrade", "websocket")])));
        assert!(!is_upgrade(&map(&[("connection", "upgrade")])));
        assert!(is_upgrade(&map(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket")
        ])));
    }
}
