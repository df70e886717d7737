//! Entry points for the `cargo fuzz` targets in `fuzz/`; not an API for anything else.
//!
//! Each function takes the fuzzer's raw bytes, runs one part of webui that reads
//! untrusted input on them, and panics when an invariant the rest of the program
//! relies on is broken (a panic is what libFuzzer reports as a finding):
//! - [`headers`]: hop-by-hop stripping and `X-Forwarded-*` rewriting
//!   (`proxy::headers`), the client-controlled part of every forwarded request;
//! - [`route`]: which certificate a TLS ClientHello gets (`tls::CertStore`, by SNI
//!   and ALPN) and where plain HTTP redirects a Host to (`proxy` https_location);
//! - [`config`]: `webui.toml` parsing (`config::file`) and resolving it into settings;
//! - [`domain`]: the `--domain` validator (`config::values::domain`);
//! - [`upstream_response`]: reading an upstream's response head and body framing
//!   (`proxy::h1`), what a broken or hostile upstream sends back.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use http::header::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::{FileConfig, resolve, up, values};
use crate::proxy::headers::{self, Peer};
use crate::tls::{ACME_TLS_ALPN, CertStore};

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
];

/// Splits `data` at the first `\n` (the rest may be empty).
fn line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// Headers from `name: value` lines, skipping what hyper would never hand over.
fn header_map(data: &[u8]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for l in data.split(|&b| b == b'\n') {
        let Some(colon) = l.iter().position(|&b| b == b':') else {
            continue;
        };
        let value = l[colon + 1..].trim_ascii();
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(&l[..colon]),
            HeaderValue::from_bytes(value),
        ) {
            h.append(n, v);
        }
    }
    h
}

fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// Input: a flags byte, 16 address bytes, the Host line, then header lines.
pub fn headers(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    if rest.len() < 16 {
        return;
    }
    let (addr, rest) = rest.split_at(16);
    let mut a16 = [0u8; 16];
    a16.copy_from_slice(addr);
    let ip = if flags & 1 == 0 {
        IpAddr::V4(Ipv4Addr::new(a16[0], a16[1], a16[2], a16[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(a16))
    };
    let keep_upgrade = flags & 2 != 0;
    let proto = if flags & 4 != 0 { "https" } else { "http" };
    // Bits 3..: a trusted network around the peer, or one from the address bytes.
    let trusted: Vec<IpNet> = match flags >> 3 {
        0 => Vec::new(),
        n => IpNet::new(unmapped(ip), (n * 4).min(32))
            .or_else(|_| IpNet::new(IpAddr::V4(Ipv4Addr::new(a16[4], a16[5], 0, 0)), 16))
            .map(|n| vec![n.trunc()])
            .unwrap_or_default(),
    };
    let (host_line, rest) = line(rest);
    let host = HeaderValue::from_bytes(host_line.trim_ascii()).ok();
    let original = header_map(rest);
    let mut h = original.clone();

    headers::strip_hop_by_hop(&mut h, keep_upgrade);
    let was_upgrade = keep_upgrade && original.contains_key(http::header::UPGRADE);
    let named: Vec<String> = original
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    for name in HOP_BY_HOP.iter().map(|s| s.to_string()).chain(named) {
        if was_upgrade && (name == "connection" || name == "upgrade") {
            continue;
        }
        assert!(
            !h.contains_key(name.as_str()),
            "hop-by-hop header `{name}` survived stripping"
        );
    }
    if was_upgrade {
        assert_eq!(h.get_all("connection").iter().count(), 1);
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h.get("upgrade"), original.get("upgrade"));
        assert!(
            headers::is_upgrade(&h),
            "a kept upgrade is still an upgrade"
        );
    }

    headers::set_forwarded(&mut h, &Peer::new(ip, proto), host.as_ref(), &trusted);
    let peer = unmapped(ip).to_string();
    let one = |name: &str| -> String {
        let all: Vec<&HeaderValue> = h.get_all(name).iter().collect();
        assert_eq!(all.len(), 1, "exactly one {name} is sent: {all:?}");
        all[0].to_str().expect("visible ASCII").to_string()
    };
    let is_trusted = trusted.iter().any(|n| n.contains(&unmapped(ip)));
    if is_trusted {
        let xff = one("x-forwarded-for");
        assert!(
            xff.rsplit(", ").next() == Some(peer.as_str()),
            "the trusted peer ends the chain: {xff}"
        );
        one("x-real-ip")
            .parse::<IpAddr>()
            .expect("X-Real-IP is an address");
        // A trusted proxy's own X-Forwarded-Proto is passed on as it sent it.
        assert!(h.contains_key("x-forwarded-proto"));
    } else {
        assert_eq!(one("x-forwarded-for"), peer, "a client cannot spoof XFF");
        assert_eq!(one("x-real-ip"), peer, "a client cannot spoof X-Real-IP");
        assert_eq!(one("x-forwarded-proto"), proto);
        assert!(!h.contains_key("forwarded"), "Forwarded is dropped");
        assert_eq!(
            h.get("x-forwarded-host"),
            host.as_ref(),
            "X-Forwarded-Host is the Host asked for"
        );
    }
}

/// Certificates for [`route`]: the site's and an ACME challenge's, made once.
struct Certs {
    store: Arc<CertStore>,
    site: Arc<CertifiedKey>,
    challenge: Arc<CertifiedKey>,
}

fn certs() -> &'static Certs {
    static CERTS: OnceLock<Certs> = OnceLock::new();
    CERTS.get_or_init(|| {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["chat.example.com".into()])
            .expect("params")
            .self_signed(&key)
            .expect("self-signed");
        let der = rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("key der");
        let signer = crate::tls::provider()
            .key_provider
            .load_private_key(der)
            .expect("load key");
        let site = Arc::new(CertifiedKey::new(vec![cert.der().clone()], signer));
        let info = crate::tls::CertInfo::from_der(cert.der()).expect("cert info");
        let challenge =
            crate::tls::alpn_challenge_cert("chat.example.com", &[7; 32]).expect("challenge");
        let store = CertStore::new(site.clone(), info);
        store.set_alpn_challenge("chat.example.com", challenge.clone());
        Certs {
            store,
            site,
            challenge,
        }
    })
}

/// What the resolver was asked and what it answered.
#[derive(Debug)]
struct Asked {
    sni: Option<String>,
    alpn: Vec<Vec<u8>>,
    answer: Option<Arc<CertifiedKey>>,
}

#[derive(Debug)]
struct Recording {
    store: Arc<CertStore>,
    asked: Mutex<Option<Asked>>,
}

impl ResolvesServerCert for Recording {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = hello.server_name().map(str::to_string);
        let alpn = hello
            .alpn()
            .map(|p| p.map(<[u8]>::to_vec).collect())
            .unwrap_or_default();
        let answer = self.store.resolve(hello);
        if let Ok(mut a) = self.asked.lock() {
            *a = Some(Asked {
                sni,
                alpn,
                answer: answer.clone(),
            });
        }
        answer
    }
}

/// Input: a flags byte and, for the TLS half, the bytes a client sends first (a
/// ClientHello); for the HTTP half, a Host line then a request target.
pub fn route(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    if flags & 1 == 0 {
        sni(rest);
    } else {
        redirect(flags, rest);
    }
}

/// The SNI/ALPN decision: the challenge certificate goes only to a validation
/// connection (ALPN `acme-tls/1`) for a name with a pending challenge; everyone else
/// gets the site's certificate.
fn sni(hello: &[u8]) {
    let c = certs();
    let rec = Arc::new(Recording {
        store: c.store.clone(),
        asked: Mutex::new(None),
    });
    let Ok(cfg) = crate::tls::server_config(c.store.clone()) else {
        panic!("server config");
    };
    let mut cfg = cfg;
    cfg.cert_resolver = rec.clone();
    let Ok(mut conn) = rustls::ServerConnection::new(Arc::new(cfg)) else {
        panic!("server connection");
    };
    let mut input = hello;
    while !input.is_empty() {
        match conn.read_tls(&mut input) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                if conn.process_new_packets().is_err() {
                    break;
                }
            }
        }
    }
    let Some(asked) = rec.asked.lock().ok().and_then(|mut a| a.take()) else {
        return;
    };
    let is = |a: &Option<Arc<CertifiedKey>>, b: &Arc<CertifiedKey>| {
        a.as_ref().is_some_and(|a| Arc::ptr_eq(a, b))
    };
    let offers_acme = asked.alpn.iter().any(|p| p == ACME_TLS_ALPN);
    if is(&asked.answer, &c.challenge) {
        // Only a validator for the name with a pending challenge, and the connection
        // must not negotiate anything else: the listener serves no HTTP only when
        // the negotiated protocol is acme-tls/1.
        assert!(
            asked
                .sni
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case("chat.example.com")),
            "challenge certificate for {asked:?}"
        );
        if let Some(p) = conn.alpn_protocol() {
            assert_eq!(p, ACME_TLS_ALPN, "challenge certificate with ALPN {p:?}");
        }
    } else if asked.answer.is_none() {
        assert!(offers_acme, "only a validator may be refused: {asked:?}");
    } else {
        assert!(is(&asked.answer, &c.site), "{asked:?}");
    }
    if !offers_acme {
        assert!(
            is(&asked.answer, &c.site),
            "browsers get the site: {asked:?}"
        );
    }
}

/// The plain-HTTP redirect: a Location that stays on the asked host, never a header
/// injection or a redirect to somewhere else.
fn redirect(flags: u8, data: &[u8]) {
    let (host, target) = line(data);
    // hyper hands over only a valid Host value and a valid request target.
    let Ok(host) = HeaderValue::from_bytes(host) else {
        return;
    };
    let Ok(host) = host.to_str() else {
        return;
    };
    let Ok(uri) = http::Uri::try_from(target) else {
        return;
    };
    let port = if flags & 2 != 0 { 443 } else { 8443 };
    let Some(location) = crate::proxy::https_location(host, port, &uri) else {
        return;
    };
    let value = HeaderValue::from_str(&location).expect("Location is a valid header value");
    let parsed: http::Uri = value
        .to_str()
        .expect("visible ASCII")
        .parse()
        .unwrap_or_else(|e| panic!("Location {location:?} is not a URI: {e}"));
    assert_eq!(parsed.scheme_str(), Some("https"), "{location}");
    let authority = parsed.authority().expect("an authority").as_str();
    assert!(!authority.contains('@'), "no userinfo in {location}");
    let asked = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
    assert!(
        parsed
            .host()
            .is_some_and(|h| h.eq_ignore_ascii_case(asked) || host.starts_with('[')),
        "{location} redirects to the host asked for ({host})"
    );
    assert_eq!(
        parsed.port_u16().unwrap_or(443),
        port,
        "{location} uses the HTTPS port"
    );
}

/// Input: the text of a `webui.toml`.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let origin = Path::new("/etc/webui/webui.toml");
    let user_error = |e: &anyhow::Error| {
        assert_eq!(
            crate::error::exit_code(e),
            crate::error::EXIT_USER,
            "a bad config is the user's to fix: {e:#}"
        );
    };
    let file = match FileConfig::parse(text, origin) {
        Ok(f) => f,
        Err(e) => {
            user_error(&e);
            assert!(
                e.to_string().contains("/etc/webui/webui.toml"),
                "the error names the file: {e}"
            );
            return;
        }
    };
    if let Err(e) = resolve::proxy(&Default::default(), &file) {
        user_error(&e);
    }
    if let Err(e) = up::up(&Default::default(), &file) {
        user_error(&e);
    }
}

/// Input: a `--domain` value.
pub fn domain(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(name) = values::domain(s) else {
        return;
    };
    assert!(name.len() <= 253, "{name}");
    assert!(!name.ends_with('.'), "{name}");
    assert!(
        name.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'),
        "only lower-case LDH characters: {name:?}"
    );
    let labels: Vec<&str> = name.split('.').collect();
    assert!(labels.len() >= 2, "{name}");
    for l in labels {
        assert!(!l.is_empty() && l.len() <= 63, "label {l:?} of {name}");
        assert!(!l.starts_with('-') && !l.ends_with('-'), "{name}");
    }
    assert!(name.parse::<IpAddr>().is_err(), "{name} is not an address");
    assert_eq!(
        values::domain(&name).as_deref(),
        Ok(name.as_str()),
        "normalising is idempotent"
    );
    // What the certificate and the SNI match need: a valid DNS name for rustls.
    assert!(
        rustls_pki_types::ServerName::try_from(name.as_str()).is_ok(),
        "{name} is a valid server name"
    );
}

/// Input: a flags byte (bit 7: the request was a HEAD; bits 0 to 6: the size of each
/// read, 1 to 128 bytes), then the bytes an upstream sent in answer to a bodiless
/// request. Invariants (`proxy::h1`): no panic, a body never longer than its
/// Content-Length nor than the input, never an empty piece of body, a
/// close-delimited body never leaves its connection reusable, a chunked response
/// never keeps a Content-Length.
pub fn upstream_response(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    crate::proxy::fuzz_response(rest, usize::from(flags & 0x7f) + 1, flags & 0x80 != 0);
}

#[cfg(test)]
mod tests {
    /// Every input kept in `fuzz/corpus/` (seeds and past findings) still holds the
    /// invariants: the fuzz findings' regression tests, run without cargo-fuzz.
    #[test]
    fn corpus_inputs_hold_the_invariants() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        type Target = fn(&[u8]);
        let targets: [(&str, Target); 4] = [
            ("headers", super::headers),
            ("route", super::route),
            ("config", super::config),
            ("domain", super::domain),
        ];
        for (name, run) in targets {
            let mut n = 0;
            for entry in std::fs::read_dir(root.join(name)).unwrap().flatten() {
                run(&std::fs::read(entry.path()).unwrap());
                n += 1;
            }
            assert!(n > 0, "fuzz/corpus/{name} has seeds");
        }
    }

    #[test]
    fn a_validator_offering_more_than_acme_tls_gets_no_challenge_certificate() {
        // The first `route` finding, kept as fuzz/corpus/route/hello-both.
        let hello = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/route/hello-both"),
        )
        .unwrap();
        super::route(&hello);
    }
}
