//! The plain-HTTP listener: answers ACME HTTP-01 challenges from the challenge store
//! and sends everything else to https with a 301, path and query kept.

use std::net::SocketAddr;

use http::{Request, Response, StatusCode, header};

use super::{Body, Shared, respond};

const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

pub(super) fn handle<B>(shared: &Shared, req: Request<B>, peer: SocketAddr) -> Response<Body> {
    let path = req.uri().path();
    if let Some(token) = path.strip_prefix(CHALLENGE_PREFIX) {
        return match shared.challenges.get(token) {
            Some(answer) => {
                tracing::info!(target: "webui::acme", %peer, token, "answered HTTP-01 challenge");
                respond::text(StatusCode::OK, answer)
            }
            None => respond::text(StatusCode::NOT_FOUND, "no such challenge\n"),
        };
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().host());
    match host.and_then(|h| https_location(h, shared.https_port, req.uri())) {
        Some(location) => respond::redirect(&location),
        None => respond::error(
            respond::ProxyError::BadRequest,
            respond::wants_html(req.headers()),
        ),
    }
}

/// `https://<host>[:port]<path?query>` for a Host header, or None when the Host is not
/// a plausible name or address (it ends up in a Location header).
pub fn https_location(host: &str, https_port: u16, uri: &http::Uri) -> Option<String> {
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port; only an IPv6 address may stand in brackets.
        let v6 = rest.split(']').next()?;
        v6.parse::<std::net::Ipv6Addr>().ok()?;
        format!("[{v6}]")
    } else {
        host.rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(host)
            .to_string()
    };
    // Found by the `route` fuzz target: `a:b:c` made `https://a:b:8443/`, not a URL.
    let ok = !name.is_empty()
        && (name.starts_with('[')
            || name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-')));
    if !ok {
        return None;
    }
    let port = if https_port == 443 {
        String::new()
    } else {
        format!(":{https_port}")
    };
    // `OPTIONS *` goes to the root: `*` after the port made `https://host:8443*`, whose
    // port does not parse (fuzz finding).
    let pq = super::headers::origin_form(uri);
    // hyper passes raw UTF-8 in a request target; a Location is ASCII (fuzz finding).
    let pq: String = pq
        .as_str()
        .bytes()
        .map(|b| match b {
            b'!'..=b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    Some(format!("https://{name}{port}{pq}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_asterisk_target_redirects_to_the_root() {
        let uri: http::Uri = "*".parse().unwrap();
        assert_eq!(
            https_location(".haat.eat.", 8443, &uri).as_deref(),
            Some("https://.haat.eat.:8443/")
        );
    }

    #[test]
    fn locations() {
        let uri: http::Uri = "/c/abc?x=1".parse().unwrap();
        assert_eq!(
            https_location("chat.example.com", 443, &uri).unwrap(),
            "https://chat.example.com/c/abc?x=1"
        );
        assert_eq!(
            https_location("chat.example.com:80", 8443, &uri).unwrap(),
            "https://chat.example.com:8443/c/abc?x=1"
        );
        assert_eq!(
            https_location("[::1]:80", 443, &uri).unwrap(),
            "https://[::1]/c/abc?x=1"
        );
        assert!(https_location("evil.com/\r\n", 443, &uri).is_none());
        assert!(https_location("", 443, &uri).is_none());
        // Fuzz findings: a colon outside brackets, a name in brackets.
        assert!(https_location("a:b:c", 8443, &uri).is_none());
        assert!(https_location("[evil.example]", 443, &uri).is_none());
        let raw = http::Uri::try_from(&b"/\xd2\x88ell"[..]).unwrap();
        assert_eq!(
            https_location("x.example", 443, &raw).unwrap(),
            "https://x.example/%D2%88ell"
        );
    }
}
