//! Site configurations for nginx, Apache and Caddy that match webui's own settings, for
//! servers that already run one of them on 80/443 (`webui config export`).
//!
//! [`Site::new`] turns resolved [`ProxySettings`] and the upstream into the handful of
//! facts every generator needs (names, addresses, certificate files, limits, timeouts);
//! [`render`] and the per-server modules turn a [`Site`] into text. Everything here is
//! pure: no file system, no network, no environment.
//!
//! Every generated site does what webui's own proxy does: websocket upgrade on every
//! path (Open WebUI's socket.io lives at `/ws/socket.io`), `X-Forwarded-For`/`-Proto`/
//! `-Host` and `X-Real-IP` set by the server (client values overwritten), no buffering
//! in either direction so chat replies stream token by token, long read/send timeouts,
//! no body limit unless `--max-body`, TLS 1.2+, HSTS, and a 301 from plain HTTP that
//! leaves `/.well-known/acme-challenge/` answerable for certbot.

pub mod apache;
pub mod caddy;
pub mod nginx;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Uri;
use ipnet::IpNet;

use crate::config::resolve::{LETS_ENCRYPT, ProxySettings, TlsSource};
use crate::error::UserError;

/// The web servers a site configuration can be exported for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    Nginx,
    Apache,
    Caddy,
}

impl Server {
    pub fn name(self) -> &'static str {
        match self {
            Server::Nginx => "nginx",
            Server::Apache => "apache",
            Server::Caddy => "caddy",
        }
    }
}

/// Where certbot serves HTTP-01 challenge files from (`certbot --webroot -w`).
pub const ACME_WEBROOT: &str = "/var/www/letsencrypt";
/// The challenge path that stays on plain HTTP.
pub const ACME_PATH: &str = "/.well-known/acme-challenge/";
/// Value of `Strict-Transport-Security`, the same as webui's own proxy sends.
pub const HSTS: &str = "max-age=31536000";

/// Where the exported site's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SiteTls {
    /// Let's Encrypt (or the configured ACME CA): certbot's files for nginx and Apache,
    /// Caddy's own ACME client for Caddy.
    Acme {
        email: Option<String>,
        /// The ACME directory URL; `None` for Let's Encrypt production.
        directory: Option<String>,
        /// A CA certificate to trust for the ACME server's own HTTPS.
        ca_file: Option<PathBuf>,
    },
    /// A certificate chain and key the operator manages (`--tls-cert`/`--tls-key`).
    Files { cert: PathBuf, key: PathBuf },
}

/// Everything a generator needs, checked and normalised.
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    /// The site's names; the first is the primary. Never empty.
    pub domains: Vec<String>,
    /// HTTPS listen addresses.
    pub https: Vec<SocketAddr>,
    /// Plain-HTTP listen addresses (redirect + ACME challenges); empty with `--no-http`.
    pub http: Vec<SocketAddr>,
    /// `host:port` of Open WebUI.
    pub upstream: String,
    pub tls: SiteTls,
    pub max_body: Option<u64>,
    pub hsts: bool,
    pub connect_timeout: Duration,
    /// Read/send timeout towards Open WebUI and for idle websockets.
    pub stream_timeout: Duration,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    /// Networks of proxies in front whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
}

impl Site {
    /// Builds the site from resolved settings. `cwd` makes relative certificate paths
    /// absolute (a web server resolves them against its own directory, not the shell's).
    pub fn new(settings: &ProxySettings, upstream: &Uri, cwd: &Path) -> anyhow::Result<Site> {
        if settings.domains.is_empty() {
            return Err(
                UserError::new("an exported site configuration needs a domain")
                    .hint(
                        "give the site's public name with --domain chat.example.com \
                     (or `domain = [\"chat.example.com\"]` in webui.toml, or WEBUI_DOMAIN)",
                    )
                    .into(),
            );
        }
        let tls = match &settings.tls {
            TlsSource::Files { cert, key } => SiteTls::Files {
                cert: cwd.join(cert),
                key: cwd.join(key),
            },
            TlsSource::Acme(a) => SiteTls::Acme {
                email: a.email.clone(),
                directory: (a.directory != LETS_ENCRYPT).then(|| a.directory.clone()),
                ca_file: a.ca_file.as_ref().map(|p| cwd.join(p)),
            },
            TlsSource::SelfSigned => {
                return Err(UserError::new(
                    "--self-signed cannot be exported: the local CA lives in webui's state directory",
                )
                .hint(
                    "drop --self-signed to use Let's Encrypt certificates from certbot, \
                     or give your own with --tls-cert and --tls-key",
                )
                .into());
            }
        };
        for (flag, addrs) in [
            ("--listen", &settings.listen),
            ("--http-listen", &settings.http_listen),
        ] {
            if let Some(a) = addrs.iter().find(|a| a.port() == 0) {
                return Err(UserError::new(format!(
                    "{flag} {a}: port 0 means \"any free port\", which a configuration file cannot name"
                ))
                .hint(format!(
                    "give a fixed port, e.g. {flag} {}",
                    SocketAddr::new(a.ip(), 8443)
                ))
                .into());
            }
        }
        let upstream = upstream
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_else(|| "127.0.0.1:3000".to_string());
        Ok(Site {
            domains: settings.domains.clone(),
            https: settings.listen.clone(),
            http: settings.http_listen.clone(),
            upstream,
            tls,
            max_body: settings.max_body,
            hsts: settings.hsts,
            connect_timeout: settings.connect_timeout,
            stream_timeout: settings.ws_idle_timeout,
            header_timeout: settings.header_timeout,
            idle_timeout: settings.idle_timeout,
            trusted_proxies: settings.trusted_proxies.clone(),
        })
    }

    pub fn primary(&self) -> &str {
        &self.domains[0]
    }

    /// Certificate chain and key files: the operator's, or where certbot puts them.
    pub fn cert_files(&self) -> (PathBuf, PathBuf) {
        match &self.tls {
            SiteTls::Files { cert, key } => (cert.clone(), key.clone()),
            SiteTls::Acme { .. } => {
                let live = Path::new("/etc/letsencrypt/live").join(self.primary());
                (live.join("fullchain.pem"), live.join("privkey.pem"))
            }
        }
    }

    /// The HTTPS port the plain-HTTP redirect points to.
    pub fn https_port(&self) -> u16 {
        self.https.first().map(|a| a.port()).unwrap_or(443)
    }

    /// `:PORT` when the HTTPS port is not 443, for redirect targets.
    pub fn https_port_suffix(&self) -> String {
        match self.https_port() {
            443 => String::new(),
            p => format!(":{p}"),
        }
    }

    /// An identifier derived from the primary name, for names that must be unique per
    /// site in the server's configuration (nginx upstream blocks).
    pub fn ident(&self) -> String {
        let mut s = String::from("webui_");
        s.extend(
            self.primary()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }),
        );
        s
    }

    /// The certbot command that obtains this site's certificate (ACME only).
    pub fn certbot_command(&self, plugin: &str) -> Option<String> {
        let SiteTls::Acme {
            email, directory, ..
        } = &self.tls
        else {
            return None;
        };
        let mut cmd = format!("certbot certonly {plugin}");
        for d in &self.domains {
            cmd.push_str(&format!(" -d {d}"));
        }
        match email {
            Some(e) => cmd.push_str(&format!(" --email {e}")),
            None => cmd.push_str(" --register-unsafely-without-email"),
        }
        if let Some(dir) = directory {
            cmd.push_str(&format!(" --server {dir}"));
        }
        Some(cmd)
    }
}

/// Prints a listen address the way nginx and Apache want it: the wildcard IPv4
/// address as a bare port, IPv6 in brackets.
pub fn listen_addr(a: &SocketAddr) -> String {
    match a.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => a.port().to_string(),
        _ => a.to_string(),
    }
}

/// Whole seconds, at least 1 (web servers take seconds).
pub fn secs(d: Duration) -> u64 {
    d.as_secs().max(1)
}

/// The site configuration for `server`.
pub fn render(server: Server, site: &Site) -> anyhow::Result<String> {
    match server {
        Server::Nginx => Ok(nginx::render(site)),
        Server::Apache => apache::render(site),
        Server::Caddy => caddy::render(site),
    }
}

/// The first comment lines every generated file starts with.
pub(crate) fn banner(site: &Site, server: Server, comment: &str) -> String {
    format!(
        "{comment} {} site for {}, generated by `webui config export {}` (webui {}).\n\
         {comment} Open WebUI answers at http://{}; everything is forwarded to it, websockets\n\
         {comment} included (socket.io at /ws/socket.io), unbuffered, so replies stream as written.\n",
        match server {
            Server::Nginx => "nginx",
            Server::Apache => "Apache",
            Server::Caddy => "Caddy",
        },
        site.domains.join(", "),
        server.name(),
        env!("CARGO_PKG_VERSION"),
        site.upstream,
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cli::ProxyArgs;
    use crate::config::{FileConfig, resolve};

    /// Resolves flags the way the command does, then builds the site.
    pub fn site(args: &[(&str, &str)]) -> anyhow::Result<Site> {
        let mut cli = ProxyArgs::default();
        let mut upstream = "http://127.0.0.1:3000".to_string();
        for (k, v) in args {
            let v = v.to_string();
            match *k {
                "domain" => cli.domain.push(v),
                "listen" => cli.listen.push(v),
                "http_listen" => cli.http_listen.push(v),
                "no_http" => cli.no_http = Some(true),
                "tls_cert" => cli.tls_cert = Some(v.into()),
                "tls_key" => cli.tls_key = Some(v.into()),
                "self_signed" => cli.self_signed = Some(true),
                "max_body" => cli.max_body = Some(v),
                "trusted_proxy" => cli.trusted_proxy.push(v),
                "no_hsts" => cli.no_hsts = Some(true),
                "email" => cli.email = Some(v),
                "staging" => cli.staging = Some(true),
                "ws_idle_timeout" => cli.ws_idle_timeout = Some(v),
                "upstream" => upstream = v,
                other => panic!("unknown test key {other}"),
            }
        }
        let settings = resolve::proxy(&cli, &FileConfig::default())?;
        let upstream = resolve::upstream(Some(&upstream), &FileConfig::default())?;
        Site::new(&settings, &upstream, Path::new("/srv"))
    }

    #[test]
    fn a_domain_is_required_with_a_hint() {
        let e = site(&[]).unwrap_err();
        assert_eq!(crate::error::exit_code(&e), 1);
        let text = crate::error::render(&e);
        assert!(text.contains("needs a domain"), "{text}");
        assert!(text.contains("hint: ") && text.contains("--domain chat.example.com"));
    }

    #[test]
    fn self_signed_and_port_zero_are_refused() {
        let e = site(&[("domain", "a.example.com"), ("self_signed", "")]).unwrap_err();
        assert!(crate::error::render(&e).contains("--tls-cert"));
        let e = site(&[("domain", "a.example.com"), ("listen", "127.0.0.1:0")]).unwrap_err();
        assert!(crate::error::render(&e).contains("127.0.0.1:8443"));
    }

    #[test]
    fn defaults_follow_webui() {
        let s = site(&[
            ("domain", "Chat.Example.com"),
            ("domain", "www.example.com"),
        ])
        .unwrap();
        assert_eq!(s.domains, vec!["chat.example.com", "www.example.com"]);
        assert_eq!(s.upstream, "127.0.0.1:3000");
        assert_eq!(s.https_port(), 443);
        assert_eq!(s.https_port_suffix(), "");
        assert_eq!(s.max_body, None);
        assert!(s.hsts);
        assert_eq!(s.stream_timeout, Duration::from_secs(3600));
        assert_eq!(
            s.cert_files(),
            (
                "/etc/letsencrypt/live/chat.example.com/fullchain.pem".into(),
                "/etc/letsencrypt/live/chat.example.com/privkey.pem".into()
            )
        );
        assert_eq!(s.ident(), "webui_chat_example_com");
        assert_eq!(
            s.certbot_command("--nginx").unwrap(),
            "certbot certonly --nginx -d chat.example.com -d www.example.com --register-unsafely-without-email"
        );
        let s = site(&[
            ("domain", "a.example.com"),
            ("tls_cert", "c.pem"),
            ("tls_key", "/k.pem"),
        ])
        .unwrap();
        assert_eq!(s.cert_files(), ("/srv/c.pem".into(), "/k.pem".into()));
        assert_eq!(s.certbot_command("--nginx"), None);
        let s = site(&[("domain", "a.example.com"), ("staging", "")]).unwrap();
        assert!(
            s.certbot_command("--webroot")
                .unwrap()
                .ends_with(&format!("--server {}", resolve::LETS_ENCRYPT_STAGING))
        );
    }

    #[test]
    fn listen_addresses_print_as_servers_want() {
        assert_eq!(listen_addr(&"0.0.0.0:443".parse().unwrap()), "443");
        assert_eq!(listen_addr(&"[::]:443".parse().unwrap()), "[::]:443");
        assert_eq!(
            listen_addr(&"127.0.0.1:8443".parse().unwrap()),
            "127.0.0.1:8443"
        );
    }
}
