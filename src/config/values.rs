//! Parsers for the value types of flags and config keys: durations, sizes, listen
//! addresses, domains, upstream URLs. Each returns a message that shows the right form.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use http::Uri;

/// `10s`, `5m`, `1h`, `1h30m`, `250ms`; a bare number is seconds.
pub fn duration(key: &str, s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("{key}: `{s}` is not a duration ({e}); write it like 30s, 5m or 1h"))
}

/// `1048576`, `512K`, `100M`, `2G`, `1GiB`; powers of 1024.
pub fn size(key: &str, s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || format!("{key}: `{s}` is not a size; write it like 512K, 100M or 2G");
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

/// A listen address: `0.0.0.0:443`, `[::1]:8443`, `127.0.0.1:0`, or `:443` for every
/// address (IPv4 and IPv6).
pub fn listen(key: &str, s: &str) -> Result<Vec<SocketAddr>, String> {
    let s = s.trim();
    if let Some(port) = s.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{key}: `{s}` has no valid port; write it like :443"))?;
        return Ok(vec![
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
        ]);
    }
    s.parse::<SocketAddr>().map(|a| vec![a]).map_err(|_| {
        format!("{key}: `{s}` is not an address with a port; write it like 0.0.0.0:443, [::]:443 or :443")
    })
}

/// A public DNS name as certificates need it: lower case, punycode, no trailing dot.
/// URLs, ports, paths, IP addresses and wildcards are refused with the right form.
pub fn domain(s: &str) -> Result<String, String> {
    let raw = s.trim();
    let right = |name: &str| format!("give the bare name, e.g. --domain {name}");
    if raw.is_empty() {
        return Err(
            "--domain is empty; give the site's name, e.g. --domain chat.example.com".into(),
        );
    }
    if let Some(idx) = raw.find("://") {
        let rest = &raw[idx + 3..];
        let host = rest.split(['/', ':', '?', '#']).next().unwrap_or(rest);
        return Err(format!(
            "--domain `{raw}` is a URL, not a name; {}",
            right(host)
        ));
    }
    if raw.contains('/') {
        let host = raw.split('/').next().unwrap_or(raw);
        return Err(format!(
            "--domain `{raw}` has a path; Open WebUI can only be served at the root of a name, not under a path; {}",
            right(host)
        ));
    }
    if raw.starts_with('*') {
        return Err(format!(
            "--domain `{raw}` is a wildcard; name each host instead, e.g. --domain {}",
            raw.trim_start_matches("*.")
        ));
    }
    if raw.parse::<IpAddr>().is_ok() || raw.trim_matches(['[', ']']).parse::<IpAddr>().is_ok() {
        return Err(format!(
            "--domain `{raw}` is an IP address; certificates from Let's Encrypt need a DNS name pointing at this host (use --self-signed for an address-only LAN box)"
        ));
    }
    if let Some((host, port)) = raw.rsplit_once(':')
        && port.chars().all(|c| c.is_ascii_digit())
    {
        return Err(format!(
            "--domain `{raw}` has a port; ports are set with --listen, {}",
            right(host)
        ));
    }
    let trimmed = raw.strip_suffix('.').unwrap_or(raw);
    let ascii = idna::domain_to_ascii(trimmed)
        .map_err(|_| format!("--domain `{raw}` is not a valid DNS name"))?;
    if ascii.len() > 253 {
        return Err(format!("--domain `{raw}` is longer than 253 characters"));
    }
    let labels: Vec<&str> = ascii.split('.').collect();
    if labels.len() < 2 {
        return Err(format!(
            "--domain `{raw}` is a single label; give a full name such as {ascii}.example.com"
        ));
    }
    // Found by the `domain` fuzz target: `a.example.9` and `03.0x` passed here, then
    // rustls and every CA refuse them: a name whose last label is a decimal or hex
    // number looks like an IPv4 address (WHATWG URL's "ends in a number").
    let numeric = |l: &str| {
        l.chars().all(|c| c.is_ascii_digit())
            || l.strip_prefix("0x")
                .is_some_and(|h| h.chars().all(|c| c.is_ascii_hexdigit()))
    };
    if labels.last().is_some_and(|tld| numeric(tld)) {
        return Err(format!(
            "--domain `{raw}` ends in a number; a DNS name ends in a top-level domain such as .com or .org"
        ));
    }
    for label in &labels {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !ok {
            return Err(format!(
                "--domain `{raw}` is not a valid DNS name (label `{label}`: letters, digits and inner hyphens only, 1-63 characters)"
            ));
        }
    }
    Ok(ascii)
}

/// The upstream Open WebUI: `http://host:port` with no path.
pub fn upstream(s: &str) -> Result<Uri, String> {
    let form = "write it like http://127.0.0.1:8080";
    let uri: Uri = s
        .trim()
        .parse()
        .map_err(|_| format!("--upstream `{s}` is not a URL; {form}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => {
            return Err(format!(
                "--upstream `{s}`: scheme `{other}` is not supported; the upstream is spoken to in plain HTTP on a trusted network, {form}"
            ));
        }
        None => return Err(format!("--upstream `{s}` is not a URL; {form}")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("--upstream `{s}` has no host; {form}"));
    }
    if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
        return Err(format!(
            "--upstream `{s}` has a path; Open WebUI is served from its root, {form}"
        ));
    }
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    // `http://x:99999` parses, with no port: it must not quietly become port 80.
    let port_text = authority
        .rsplit_once(']')
        .map_or(authority, |(_, after)| after)
        .rsplit_once(':')
        .map(|(_, p)| p);
    if let Some(p) = port_text
        && uri.port_u16().is_none_or(|n| n == 0)
    {
        return Err(format!(
            "--upstream `{s}`: `{p}` is not a port (1-65535); {form}"
        ));
    }
    let authority = if uri.port().is_none() {
        format!("{authority}:80")
    } else {
        authority.to_string()
    };
    Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query("/")
        .build()
        .map_err(|e| format!("--upstream `{s}`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration("k", "10s"), Ok(Duration::from_secs(10)));
        assert_eq!(duration("k", "1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(duration("k", "45"), Ok(Duration::from_secs(45)));
        assert!(duration("k", "soon").unwrap_err().contains("30s"));
    }

    #[test]
    fn sizes() {
        assert_eq!(size("k", "100M"), Ok(100 << 20));
        assert_eq!(size("k", "2GiB"), Ok(2 << 30));
        assert_eq!(size("k", "512"), Ok(512));
        assert!(size("k", "lots").is_err());
        assert!(size("k", "99999999999T").is_err());
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(listen("k", "127.0.0.1:0").unwrap().len(), 1);
        assert_eq!(listen("k", ":443").unwrap().len(), 2);
        assert!(listen("k", "443").unwrap_err().contains(":443"));
        assert!(listen("k", "localhost:443").is_err());
    }

    #[test]
    fn domains_are_normalised() {
        assert_eq!(domain("Chat.Example.COM.").unwrap(), "chat.example.com");
        assert_eq!(domain("bücher.example").unwrap(), "xn--bcher-kva.example");
    }

    #[test]
    fn bad_domains_show_the_right_form() {
        let e = domain("https://x.com/").unwrap_err();
        assert!(e.contains("URL") && e.contains("--domain x.com"), "{e}");
        let e = domain("x.com/chat").unwrap_err();
        assert!(e.contains("path") && e.contains("--domain x.com"), "{e}");
        let e = domain("x.com:8443").unwrap_err();
        assert!(e.contains("port") && e.contains("--domain x.com"), "{e}");
        assert!(domain("203.0.113.7").unwrap_err().contains("IP address"));
        assert!(domain("*.x.com").unwrap_err().contains("wildcard"));
        assert!(domain("-bad-.com").unwrap_err().contains("not a valid"));
        assert!(
            domain("under_score.com")
                .unwrap_err()
                .contains("not a valid")
        );
        assert!(domain("localhost").unwrap_err().contains("single label"));
        assert!(
            domain("a.example.9")
                .unwrap_err()
                .contains("ends in a number")
        );
        assert!(
            domain("203.0.113")
                .unwrap_err()
                .contains("ends in a number")
        );
        for numeric in ["03.0x", "a.0xbeef"] {
            assert!(domain(numeric).unwrap_err().contains("ends in a number"));
        }
        assert!(domain("a.0xbeefy").is_ok());
    }

    #[test]
    fn upstreams() {
        assert_eq!(
            upstream("http://127.0.0.1:8080").unwrap().to_string(),
            "http://127.0.0.1:8080/"
        );
        assert_eq!(
            upstream("http://openwebui")
                .unwrap()
                .authority()
                .unwrap()
                .as_str(),
            "openwebui:80"
        );
        assert!(
            upstream("127.0.0.1:8080")
                .unwrap_err()
                .contains("not a URL")
        );
        assert!(upstream("not a url").unwrap_err().contains("not a URL"));
        assert!(upstream("ftp://x:1").unwrap_err().contains("scheme"));
        assert!(upstream("http://x:1/webui").unwrap_err().contains("path"));
        assert!(
            upstream("http://x:99999")
                .unwrap_err()
                .contains("not a port")
        );
        assert!(upstream("http://x:0").unwrap_err().contains("not a port"));
        assert!(upstream("http://[::1]:8080").is_ok());
        assert!(upstream("http://[::1]").is_ok());
    }
}
