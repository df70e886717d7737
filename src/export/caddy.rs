//! Caddy 2: a Caddyfile. Caddy obtains and renews Let's Encrypt certificates itself,
//! so with a domain and no `--tls-cert` nothing else is needed.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::net::SocketAddr;

use super::{ACME_PATH, ACME_WEBROOT, HSTS, Server, Site, SiteTls, banner, secs};
use crate::error::UserError;

/// The one port and the `bind` hosts of a set of listen addresses. Caddy gives a site
/// a single port; the wildcard pair (`:443`) needs no `bind`.
fn port_and_bind(flag: &str, addrs: &[SocketAddr]) -> anyhow::Result<(u16, Option<String>)> {
    let ports: BTreeSet<u16> = addrs.iter().map(|a| a.port()).collect();
    if ports.len() > 1 {
        let list: Vec<String> = ports.iter().map(u16::to_string).collect();
        return Err(UserError::new(format!(
            "{flag} names several ports ({}); a Caddy site listens on one",
            list.join(", ")
        ))
        .hint(format!("give every {flag} address the same port"))
        .into());
    }
    let port = ports.into_iter().next().unwrap_or(0);
    let all_wildcards = addrs.iter().all(|a| a.ip().is_unspecified())
        && addrs.iter().any(|a| a.is_ipv4())
        && addrs.iter().any(|a| a.is_ipv6());
    if all_wildcards {
        return Ok((port, None));
    }
    let hosts: BTreeSet<String> = addrs
        .iter()
        .map(|a| match a {
            SocketAddr::V4(v4) => v4.ip().to_string(),
            SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
        })
        .collect();
    Ok((port, Some(hosts.into_iter().collect::<Vec<_>>().join(" "))))
}

/// The Caddyfile.
pub fn render(site: &Site) -> anyhow::Result<String> {
    let (https_port, https_bind) = port_and_bind("--listen", &site.https)?;
    let (http_port, http_bind) = if site.http.is_empty() {
        (80, None)
    } else {
        port_and_bind("--http-listen", &site.http)?
    };
    let mut o = banner(site, Server::Caddy, "#");
    let _ = writeln!(
        o,
        "#\n\
         # Install: save as /etc/caddy/Caddyfile (or merge the global options block below\n\
         # into yours and import the rest), then: caddy validate --config /etc/caddy/Caddyfile\n\
         # && systemctl reload caddy"
    );
    if let SiteTls::Acme { .. } = site.tls {
        o.push_str(
            "# Certificates: Caddy obtains and renews them itself (HTTP-01 on the plain-HTTP\n\
             # port, TLS-ALPN-01 on the HTTPS port).\n",
        );
    }
    o.push('\n');

    // Global options. Caddy's own HTTP->HTTPS redirect is a 308; the site below answers
    // plain HTTP itself with a 301, as webui does.
    o.push_str("{\n\tauto_https disable_redirects\n");
    if http_port != 80 {
        let _ = writeln!(o, "\thttp_port {http_port}");
    }
    if https_port != 443 {
        let _ = writeln!(o, "\thttps_port {https_port}");
    }
    if let SiteTls::Acme {
        email,
        directory,
        ca_file,
    } = &site.tls
    {
        if let Some(e) = email {
            let _ = writeln!(o, "\temail {e}");
        }
        if let Some(d) = directory {
            let _ = writeln!(o, "\tacme_ca {d}");
        }
        if let Some(ca) = ca_file {
            let _ = writeln!(o, "\tacme_ca_root {}", ca.display());
        }
    }
    let _ = writeln!(
        o,
        "\tservers {{\n\t\ttimeouts {{\n\t\t\tread_header {}s\n\t\t\tidle {}s\n\t\t}}\n\t}}\n}}\n",
        secs(site.header_timeout),
        secs(site.idle_timeout)
    );

    let names = site.domains.join(", ");
    if !site.http.is_empty() {
        let http_names: Vec<String> = site.domains.iter().map(|d| format!("http://{d}")).collect();
        let _ = writeln!(o, "{} {{", http_names.join(", "));
        if let Some(b) = &http_bind {
            let _ = writeln!(o, "\tbind {b}");
        }
        if let SiteTls::Files { .. } = site.tls {
            let _ = writeln!(
                o,
                "\t# ACME HTTP-01 challenges (certbot --webroot -w {ACME_WEBROOT}) stay on plain HTTP.\n\t\
                 handle {ACME_PATH}* {{\n\t\t\
                     root * {ACME_WEBROOT}\n\t\t\
                     file_server\n\t\
                 }}"
            );
        }
        let _ = writeln!(
            o,
            "\thandle {{\n\t\tredir https://{{host}}{}{{uri}} 301\n\t}}\n}}\n",
            site.https_port_suffix()
        );
    }

    let _ = writeln!(o, "{names} {{");
    if let Some(b) = &https_bind {
        let _ = writeln!(o, "\tbind {b}");
    }
    match &site.tls {
        SiteTls::Files { cert, key } => {
            let _ = writeln!(o, "\ttls {} {} {{", cert.display(), key.display());
        }
        SiteTls::Acme { .. } => o.push_str("\ttls {\n"),
    }
    o.push_str("\t\tprotocols tls1.2 tls1.3\n\t}\n");
    if site.hsts {
        let _ = writeln!(o, "\theader Strict-Transport-Security \"{HSTS}\"");
    }
    if let Some(n) = site.max_body {
        let _ = writeln!(o, "\trequest_body {{\n\t\tmax_size {n}\n\t}}");
    }
    let stream = secs(site.stream_timeout);
    let _ = writeln!(
        o,
        "\t# Websockets are proxied on every path. Caddy sets X-Forwarded-For, -Proto and\n\t\
         # -Host itself, replacing what clients send.\n\t\
         reverse_proxy {} {{\n\t\t\
             # Streams (chat replies as SSE) pass through as they come.\n\t\t\
             flush_interval -1\n\t\t\
             header_up X-Real-IP {{remote_host}}",
        site.upstream
    );
    if !site.trusted_proxies.is_empty() {
        let nets: Vec<String> = site.trusted_proxies.iter().map(|n| n.to_string()).collect();
        let _ = writeln!(
            o,
            "\t\t# Proxies in front whose X-Forwarded-For is kept (--trusted-proxy).\n\t\t\
             trusted_proxies {}",
            nets.join(" ")
        );
    }
    let _ = writeln!(
        o,
        "\t\ttransport http {{\n\t\t\t\
             dial_timeout {}s\n\t\t\t\
             # Long generations and idle websockets.\n\t\t\t\
             read_timeout {stream}s\n\t\t\t\
             write_timeout {stream}s\n\t\t\
         }}\n\t\
         }}\n\
         }}",
        secs(site.connect_timeout)
    );
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::tests::site;

    #[test]
    fn default_site_lets_caddy_manage_certificates() {
        let s = site(&[
            ("domain", "chat.example.com"),
            ("email", "admin@example.com"),
        ])
        .unwrap();
        let c = render(&s).unwrap();
        for needle in [
            "\tauto_https disable_redirects\n",
            "\temail admin@example.com\n",
            "\t\t\tread_header 30s\n",
            "http://chat.example.com {",
            "\t\tredir https://{host}{uri} 301\n",
            "chat.example.com {",
            "\ttls {\n\t\tprotocols tls1.2 tls1.3\n\t}",
            "header Strict-Transport-Security \"max-age=31536000\"",
            "reverse_proxy 127.0.0.1:3000 {",
            "flush_interval -1",
            "header_up X-Real-IP {remote_host}",
            "read_timeout 3600s",
            "write_timeout 3600s",
            "dial_timeout 5s",
        ] {
            assert!(c.contains(needle), "missing `{needle}` in\n{c}");
        }
        for absent in [
            "http_port",
            "https_port",
            "bind ",
            "acme_ca",
            "request_body",
            "root *",
        ] {
            assert!(!c.contains(absent), "unexpected `{absent}` in\n{c}");
        }
    }

    #[test]
    fn settings_carry_over() {
        let s = site(&[
            ("domain", "chat.example.com"),
            ("domain", "www.example.com"),
            ("listen", "127.0.0.1:8443"),
            ("http_listen", "127.0.0.1:8080"),
            ("tls_cert", "/c/full.pem"),
            ("tls_key", "/c/key.pem"),
            ("max_body", "1M"),
            ("trusted_proxy", "10.0.0.0/8"),
            ("no_hsts", ""),
        ])
        .unwrap();
        let c = render(&s).unwrap();
        for needle in [
            "\thttp_port 8080\n",
            "\thttps_port 8443\n",
            "http://chat.example.com, http://www.example.com {",
            "\tbind 127.0.0.1\n",
            "handle /.well-known/acme-challenge/* {",
            "redir https://{host}:8443{uri} 301",
            "chat.example.com, www.example.com {",
            "\ttls /c/full.pem /c/key.pem {",
            "max_size 1048576",
            "trusted_proxies 10.0.0.0/8",
        ] {
            assert!(c.contains(needle), "missing `{needle}` in\n{c}");
        }
        assert!(!c.contains("Strict-Transport-Security"));
        assert!(!c.contains("email"));
    }

    #[test]
    fn one_port_per_site() {
        let s = site(&[
            ("domain", "chat.example.com"),
            ("listen", "127.0.0.1:8443"),
            ("listen", "127.0.0.2:9443"),
        ])
        .unwrap();
        let e = render(&s).unwrap_err();
        assert_eq!(crate::error::exit_code(&e), 1);
        assert!(e.to_string().contains("8443, 9443"), "{e}");
    }
}
