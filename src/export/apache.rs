//! Apache httpd 2.4: a file for `/etc/apache2/sites-available/` (Debian layout).

use std::collections::BTreeSet;
use std::fmt::Write;
use std::net::SocketAddr;

use super::{ACME_PATH, ACME_WEBROOT, HSTS, Server, Site, SiteTls, banner, secs};
use crate::error::UserError;

/// Same list as nginx's; Apache spells it the same (OpenSSL names).
pub use super::nginx::CIPHERS;

/// `LimitRequestBody` cannot exceed this (2 GiB - 1).
pub const MAX_LIMIT_REQUEST_BODY: u64 = 2_147_483_647;

/// The modules the site needs, for `a2enmod`.
pub fn modules(site: &Site) -> Vec<&'static str> {
    let mut m = vec![
        "proxy",
        "proxy_http",
        "proxy_wstunnel",
        "ssl",
        "headers",
        "rewrite",
    ];
    if !site.trusted_proxies.is_empty() {
        m.push("remoteip");
    }
    m
}

/// `<VirtualHost>` addresses: the wildcard addresses of a port become `*:PORT`.
fn vhost_addrs(addrs: &[SocketAddr]) -> String {
    let set: BTreeSet<String> = addrs
        .iter()
        .map(|a| {
            if a.ip().is_unspecified() {
                format!("*:{}", a.port())
            } else {
                a.to_string()
            }
        })
        .collect();
    set.into_iter().collect::<Vec<_>>().join(" ")
}

/// `Listen` lines for ports Debian's ports.conf does not open already (80 and 443).
fn listen_lines(addrs: &[SocketAddr], https: bool) -> String {
    let mut out = String::new();
    let mut seen = BTreeSet::new();
    for a in addrs {
        if matches!(a.port(), 80 | 443) {
            continue;
        }
        let addr = if a.ip().is_unspecified() {
            a.port().to_string()
        } else {
            a.to_string()
        };
        if seen.insert(addr.clone()) {
            let proto = if https { " https" } else { "" };
            let _ = writeln!(out, "Listen {addr}{proto}");
        }
    }
    out
}

/// The Apache site configuration.
pub fn render(site: &Site) -> anyhow::Result<String> {
    if let Some(n) = site.max_body
        && n > MAX_LIMIT_REQUEST_BODY
    {
        return Err(UserError::new(format!(
            "--max-body {n} is larger than Apache's LimitRequestBody allows (2 GiB)"
        ))
        .hint("give at most --max-body 2047M, or leave it out for no limit")
        .into());
    }
    let mut o = banner(site, Server::Apache, "#");
    let primary = site.primary();
    let (cert, key) = site.cert_files();
    let upstream = &site.upstream;
    let stream = secs(site.stream_timeout);

    let _ = writeln!(
        o,
        "#\n\
         # Modules it needs:\n\
         #   a2enmod {}\n\
         # Install (Debian/Ubuntu):\n\
         #   webui config export apache ... > /etc/apache2/sites-available/{primary}.conf\n\
         #   a2ensite {primary}",
        modules(site).join(" ")
    );
    if let Some(certbot) = site.certbot_command("--apache") {
        let _ = writeln!(
            o,
            "#   {certbot}\n\
             #     (before enabling the site: the configuration test fails while the certificate\n\
             #     is missing; needs python3-certbot-apache; or use --webroot -w {ACME_WEBROOT},\n\
             #     which the plain-HTTP virtual host below serves)"
        );
    }
    o.push_str("#   apache2ctl configtest && systemctl reload apache2\n\n");

    let listens = format!(
        "{}{}",
        listen_lines(&site.http, false),
        listen_lines(&site.https, true)
    );
    if !listens.is_empty() {
        let _ = writeln!(
            o,
            "# Ports beyond the 80 and 443 of /etc/apache2/ports.conf.\n{listens}"
        );
    }

    let server_names = |o: &mut String| {
        let _ = writeln!(o, "    ServerName {primary}");
        if site.domains.len() > 1 {
            let _ = writeln!(o, "    ServerAlias {}", site.domains[1..].join(" "));
        }
    };

    if !site.http.is_empty() {
        let _ = writeln!(o, "<VirtualHost {}>", vhost_addrs(&site.http));
        server_names(&mut o);
        let _ = writeln!(
            o,
            "\n    # ACME HTTP-01 challenges (certbot --webroot -w {ACME_WEBROOT}) stay on plain HTTP.\n    \
             Alias {ACME_PATH} {ACME_WEBROOT}{ACME_PATH}\n    \
             <Directory {ACME_WEBROOT}{ACME_PATH}>\n        \
                 Require all granted\n    \
             </Directory>\n\n    \
             RewriteEngine On\n    \
             RewriteCond %{{REQUEST_URI}} !^/\\.well-known/acme-challenge/\n    \
             RewriteRule ^ https://%{{SERVER_NAME}}{}%{{REQUEST_URI}} [R=301,L]\n\
             </VirtualHost>\n",
            site.https_port_suffix()
        );
    }

    let _ = writeln!(o, "<VirtualHost {}>", vhost_addrs(&site.https));
    server_names(&mut o);
    o.push('\n');
    if let SiteTls::Acme { .. } = site.tls {
        o.push_str("    # Let's Encrypt, renewed by certbot's timer.\n");
    }
    let _ = writeln!(
        o,
        "    SSLEngine on\n    \
         SSLCertificateFile {}\n    \
         SSLCertificateKeyFile {}\n    \
         SSLProtocol -all +TLSv1.2 +TLSv1.3\n    \
         SSLCipherSuite {CIPHERS}\n    \
         SSLHonorCipherOrder off\n    \
         SSLSessionTickets off\n    \
         <IfModule http2_module>\n        \
             Protocols h2 http/1.1\n    \
         </IfModule>\n",
        cert.display(),
        key.display()
    );
    if site.hsts {
        let _ = writeln!(
            o,
            "    Header always set Strict-Transport-Security \"{HSTS}\"\n"
        );
    }
    match site.max_body {
        None => o.push_str(
            "    # No limit on uploads, like webui (--max-body sets one).\n    LimitRequestBody 0\n",
        ),
        Some(n) => {
            let _ = writeln!(o, "    LimitRequestBody {n}");
        }
    }
    let _ = writeln!(
        o,
        "    <IfModule reqtimeout_module>\n        \
             RequestReadTimeout header={}\n    \
         </IfModule>\n    KeepAliveTimeout {}\n",
        secs(site.header_timeout),
        secs(site.idle_timeout)
    );
    if !site.trusted_proxies.is_empty() {
        o.push_str(
            "    # Clients' addresses as told by the proxies in front (--trusted-proxy).\n    \
             RemoteIPHeader X-Forwarded-For\n",
        );
        for net in &site.trusted_proxies {
            let _ = writeln!(o, "    RemoteIPTrustedProxy {net}");
        }
        o.push('\n');
    }
    let _ = writeln!(
        o,
        "    ProxyRequests Off\n    \
         ProxyPreserveHost On\n    \
         # Long generations and idle websockets.\n    \
         ProxyTimeout {stream}\n    \
         # Set here, never taken from the client (mod_proxy would append to theirs).\n    \
         ProxyAddHeaders Off\n    \
         RequestHeader set X-Forwarded-For \"expr=%{{REMOTE_ADDR}}\"\n    \
         RequestHeader set X-Real-IP \"expr=%{{REMOTE_ADDR}}\"\n    \
         RequestHeader set X-Forwarded-Proto \"https\"\n    \
         RequestHeader set X-Forwarded-Host \"expr=%{{HTTP_HOST}}\"\n\n    \
         # Websocket upgrades on any path (socket.io at /ws/socket.io) go through the tunnel.\n    \
         RewriteEngine On\n    \
         RewriteCond %{{HTTP:Upgrade}} websocket [NC]\n    \
         RewriteCond %{{HTTP:Connection}} upgrade [NC]\n    \
         RewriteRule ^/?(.*) \"ws://{upstream}/$1\" [P,L]\n\n    \
         # Everything else; flushpackets=on passes streamed replies on as they come.\n    \
         ProxyPass / http://{upstream}/ nocanon flushpackets=on connectiontimeout={} timeout={stream}\n    \
         ProxyPassReverse / http://{upstream}/\n\
         </VirtualHost>",
        secs(site.connect_timeout)
    );
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::tests::site;

    #[test]
    fn default_site() {
        let s = site(&[
            ("domain", "chat.example.com"),
            ("domain", "www.example.com"),
        ])
        .unwrap();
        let c = render(&s).unwrap();
        for needle in [
            "#   a2enmod proxy proxy_http proxy_wstunnel ssl headers rewrite\n",
            "<VirtualHost *:80>",
            "<VirtualHost *:443>",
            "ServerName chat.example.com",
            "ServerAlias www.example.com",
            "Alias /.well-known/acme-challenge/ /var/www/letsencrypt/.well-known/acme-challenge/",
            "RewriteRule ^ https://%{SERVER_NAME}%{REQUEST_URI} [R=301,L]",
            "SSLCertificateFile /etc/letsencrypt/live/chat.example.com/fullchain.pem",
            "SSLCertificateKeyFile /etc/letsencrypt/live/chat.example.com/privkey.pem",
            "SSLProtocol -all +TLSv1.2 +TLSv1.3",
            "Header always set Strict-Transport-Security \"max-age=31536000\"",
            "LimitRequestBody 0",
            "ProxyPreserveHost On",
            "ProxyTimeout 3600",
            "ProxyAddHeaders Off",
            "RequestHeader set X-Forwarded-For \"expr=%{REMOTE_ADDR}\"",
            "RequestHeader set X-Real-IP \"expr=%{REMOTE_ADDR}\"",
            "RequestHeader set X-Forwarded-Proto \"https\"",
            "RewriteCond %{HTTP:Upgrade} websocket [NC]",
            "RewriteRule ^/?(.*) \"ws://127.0.0.1:3000/$1\" [P,L]",
            "ProxyPass / http://127.0.0.1:3000/ nocanon flushpackets=on connectiontimeout=5 timeout=3600",
            "ProxyPassReverse / http://127.0.0.1:3000/",
            "certbot certonly --apache -d chat.example.com -d www.example.com",
        ] {
            assert!(c.contains(needle), "missing `{needle}` in\n{c}");
        }
        assert!(!c.contains("\nListen "), "80/443 come from ports.conf");
        assert_eq!(
            c.matches("<VirtualHost").count(),
            c.matches("</VirtualHost>").count()
        );
    }

    #[test]
    fn settings_carry_over() {
        let s = site(&[
            ("domain", "chat.example.com"),
            ("listen", "127.0.0.1:8443"),
            ("listen", "[::1]:8443"),
            ("http_listen", "127.0.0.1:8080"),
            ("tls_cert", "/c/full.pem"),
            ("tls_key", "/c/key.pem"),
            ("max_body", "100M"),
            ("trusted_proxy", "192.0.2.0/24"),
            ("no_hsts", ""),
        ])
        .unwrap();
        let c = render(&s).unwrap();
        for needle in [
            "Listen 127.0.0.1:8080\n",
            "Listen 127.0.0.1:8443 https\n",
            "Listen [::1]:8443 https\n",
            "<VirtualHost 127.0.0.1:8080>",
            "<VirtualHost 127.0.0.1:8443 [::1]:8443>",
            "SSLCertificateFile /c/full.pem",
            "LimitRequestBody 104857600",
            "https://%{SERVER_NAME}:8443%{REQUEST_URI}",
            "a2enmod proxy proxy_http proxy_wstunnel ssl headers rewrite remoteip",
            "RemoteIPTrustedProxy 192.0.2.0/24",
        ] {
            assert!(c.contains(needle), "missing `{needle}` in\n{c}");
        }
        assert!(!c.contains("Strict-Transport-Security"));
        assert!(!c.contains("ServerAlias"));
    }

    #[test]
    fn bodies_over_2g_cannot_be_limited() {
        let s = site(&[("domain", "chat.example.com"), ("max_body", "3G")]).unwrap();
        let e = render(&s).unwrap_err();
        assert_eq!(crate::error::exit_code(&e), 1);
        assert!(crate::error::render(&e).contains("2047M"));
    }

    #[test]
    fn no_http_means_one_vhost() {
        let s = site(&[("domain", "chat.example.com"), ("no_http", "")]).unwrap();
        assert_eq!(render(&s).unwrap().matches("<VirtualHost").count(), 1);
    }
}
