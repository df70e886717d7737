//! nginx: a file for `/etc/nginx/sites-available/` (included inside `http { }`).

use std::fmt::Write;

use super::{ACME_PATH, ACME_WEBROOT, HSTS, Server, Site, SiteTls, banner, listen_addr, secs};

/// Modern TLS 1.2 ciphers (Mozilla "intermediate"); TLS 1.3 suites are not configurable
/// here and are all good.
pub const CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:\
ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

/// The nginx site configuration.
pub fn render(site: &Site) -> String {
    let mut o = banner(site, Server::Nginx, "#");
    let primary = site.primary();
    let names = site.domains.join(" ");
    let ident = site.ident();
    let (cert, key) = site.cert_files();

    o.push_str("#\n# Install (Debian/Ubuntu):\n");
    let _ = writeln!(
        o,
        "#   webui config export nginx ... > /etc/nginx/sites-available/{primary}.conf\n\
         #   ln -s ../sites-available/{primary}.conf /etc/nginx/sites-enabled/"
    );
    if let Some(certbot) = site.certbot_command("--nginx") {
        let _ = writeln!(
            o,
            "#   {certbot}\n\
             #     (before enabling the site: `nginx -t` fails while the certificate is missing;\n\
             #     needs python3-certbot-nginx; or use --webroot -w {ACME_WEBROOT}, which the\n\
             #     plain-HTTP server below serves)"
        );
    }
    o.push_str("#   nginx -t && systemctl reload nginx\n\n");

    o.push_str(
        "# Connection header towards Open WebUI: `upgrade` for websockets, else empty\n\
         # (keeps the upstream connection alive).\n\
         map $http_upgrade $webui_connection_upgrade {\n    \
             default upgrade;\n    \
             ''      '';\n\
         }\n\n",
    );
    let _ = writeln!(
        o,
        "upstream {ident} {{\n    server {};\n    keepalive 16;\n}}\n",
        site.upstream
    );

    if !site.http.is_empty() {
        o.push_str("server {\n");
        for a in &site.http {
            let _ = writeln!(o, "    listen {};", listen_addr(a));
        }
        let _ = writeln!(o, "    server_name {names};\n");
        let _ = writeln!(
            o,
            "    # ACME HTTP-01 challenges (certbot --webroot -w {ACME_WEBROOT}) stay on plain HTTP.\n    \
             location ^~ {ACME_PATH} {{\n        \
                 root {ACME_WEBROOT};\n        \
                 default_type text/plain;\n    \
             }}\n    \
             location / {{\n        \
                 return 301 https://$host{}$request_uri;\n    \
             }}\n\
             }}\n",
            site.https_port_suffix()
        );
    }

    o.push_str("server {\n");
    for a in &site.https {
        // `listen ... http2` works on every nginx in use; 1.25.1+ merely warns that the
        // `http2 on;` directive is preferred.
        let _ = writeln!(o, "    listen {} ssl http2;", listen_addr(a));
    }
    let _ = writeln!(o, "    server_name {names};\n");
    if let SiteTls::Acme { .. } = site.tls {
        let _ = writeln!(o, "    # Let's Encrypt, renewed by certbot's timer.");
    }
    let _ = writeln!(
        o,
        "    ssl_certificate     {};\n    \
         ssl_certificate_key {};\n    \
         ssl_protocols TLSv1.2 TLSv1.3;\n    \
         ssl_ciphers {CIPHERS};\n    \
         ssl_prefer_server_ciphers off;\n    \
         ssl_session_timeout 1d;\n    \
         ssl_session_cache shared:webui_ssl:10m;\n    \
         ssl_session_tickets off;\n",
        cert.display(),
        key.display()
    );
    if site.hsts {
        let _ = writeln!(
            o,
            "    add_header Strict-Transport-Security \"{HSTS}\" always;\n"
        );
    }
    if !site.trusted_proxies.is_empty() {
        o.push_str("    # Clients' addresses as told by the proxies in front (--trusted-proxy).\n");
        for net in &site.trusted_proxies {
            let _ = writeln!(o, "    set_real_ip_from {net};");
        }
        o.push_str("    real_ip_header X-Forwarded-For;\n    real_ip_recursive on;\n\n");
    }
    match site.max_body {
        None => o.push_str("    # No limit on uploads, like webui (--max-body sets one).\n    client_max_body_size 0;\n"),
        Some(n) => {
            let _ = writeln!(o, "    client_max_body_size {n};");
        }
    }
    let _ = writeln!(
        o,
        "    client_header_timeout {}s;\n    keepalive_timeout {}s;\n",
        secs(site.header_timeout),
        secs(site.idle_timeout)
    );

    let stream = secs(site.stream_timeout);
    let _ = writeln!(
        o,
        "    location / {{\n        \
             proxy_pass http://{ident};\n        \
             proxy_http_version 1.1;\n        \
             proxy_set_header Upgrade $http_upgrade;\n        \
             proxy_set_header Connection $webui_connection_upgrade;\n        \
             proxy_set_header Host $host;\n        \
             # Set here, never taken from the client.\n        \
             proxy_set_header X-Real-IP $remote_addr;\n        \
             proxy_set_header X-Forwarded-For $remote_addr;\n        \
             proxy_set_header X-Forwarded-Proto https;\n        \
             proxy_set_header X-Forwarded-Host $host;\n\n        \
             # Streams (chat replies as SSE, uploads) pass through as they come.\n        \
             proxy_buffering off;\n        \
             proxy_request_buffering off;\n        \
             proxy_cache off;\n        \
             # ... whatever the upstream's X-Accel-Buffering says.\n        \
             proxy_ignore_headers X-Accel-Buffering;\n\n        \
             proxy_connect_timeout {}s;\n        \
             # Long generations and idle websockets.\n        \
             proxy_read_timeout {stream}s;\n        \
             proxy_send_timeout {stream}s;\n    \
         }}\n\
         }}",
        secs(site.connect_timeout)
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::tests::site;

    #[test]
    fn default_site() {
        let s = site(&[("domain", "chat.example.com")]).unwrap();
        let c = render(&s);
        for needle in [
            "listen 443 ssl http2;",
            "listen [::]:443 ssl http2;",
            "listen 80;",
            "listen [::]:80;",
            "server_name chat.example.com;",
            "server 127.0.0.1:3000;",
            "proxy_pass http://webui_chat_example_com;",
            "proxy_set_header Upgrade $http_upgrade;",
            "proxy_set_header Connection $webui_connection_upgrade;",
            "proxy_set_header X-Forwarded-For $remote_addr;",
            "proxy_set_header X-Real-IP $remote_addr;",
            "proxy_set_header X-Forwarded-Proto https;",
            "proxy_set_header X-Forwarded-Host $host;",
            "proxy_buffering off;",
            "proxy_request_buffering off;",
            "proxy_cache off;",
            "proxy_ignore_headers X-Accel-Buffering;",
            "proxy_read_timeout 3600s;",
            "proxy_send_timeout 3600s;",
            "proxy_connect_timeout 5s;",
            "client_max_body_size 0;",
            "ssl_protocols TLSv1.2 TLSv1.3;",
            "ssl_certificate     /etc/letsencrypt/live/chat.example.com/fullchain.pem;",
            "ssl_certificate_key /etc/letsencrypt/live/chat.example.com/privkey.pem;",
            "add_header Strict-Transport-Security \"max-age=31536000\" always;",
            "location ^~ /.well-known/acme-challenge/ {",
            "root /var/www/letsencrypt;",
            "return 301 https://$host$request_uri;",
            "certbot certonly --nginx -d chat.example.com",
        ] {
            assert!(c.contains(needle), "missing `{needle}` in\n{c}");
        }
        assert!(!c.contains("$proxy_add_x_forwarded_for"));
        assert!(!c.contains("set_real_ip_from"));
        assert_eq!(c.matches('{').count(), c.matches('}').count());
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
            ("max_body", "100M"),
            ("no_hsts", ""),
            ("trusted_proxy", "10.0.0.0/8"),
            ("ws_idle_timeout", "2h"),
            ("upstream", "http://10.1.2.3:8080"),
        ])
        .unwrap();
        let c = render(&s);
        for needle in [
            "listen 127.0.0.1:8443 ssl http2;",
            "listen 127.0.0.1:8080;",
            "server_name chat.example.com www.example.com;",
            "server 10.1.2.3:8080;",
            "ssl_certificate     /c/full.pem;",
            "ssl_certificate_key /c/key.pem;",
            "client_max_body_size 104857600;",
            "return 301 https://$host:8443$request_uri;",
            "set_real_ip_from 10.0.0.0/8;",
            "real_ip_header X-Forwarded-For;",
            "proxy_read_timeout 7200s;",
        ] {
            assert!(c.contains(needle), "missing `{needle}` in\n{c}");
        }
        assert!(!c.contains("Strict-Transport-Security"));
        assert!(!c.contains("certbot certonly"));
        assert!(!c.contains("listen 443"));
    }

    #[test]
    fn no_http_means_no_plain_server() {
        let s = site(&[("domain", "chat.example.com"), ("no_http", "")]).unwrap();
        let c = render(&s);
        assert!(!c.contains("return 301"));
        assert!(!c.contains("listen 80"));
        assert_eq!(c.matches("server {").count(), 1);
    }
}
