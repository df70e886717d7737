//! Turns flags (already merged with `WEBUI_*` env vars by clap) and the config file into
//! resolved settings. The one place where precedence CLI > env > file > default lives.
//! Pure: no file system, no network; every rule here is unit-tested.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::Uri;
use ipnet::IpNet;

use super::file::FileConfig;
use super::values;
use crate::cli::ProxyArgs;
use crate::error::UserError;

/// Where the served certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// A certificate chain and key the operator manages (e.g. certbot).
    Files { cert: PathBuf, key: PathBuf },
    /// A leaf issued by the local CA in the state directory.
    SelfSigned,
    /// Certificates ordered from an ACME CA for the configured domains.
    Acme(AcmeSettings),
}

pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// How to prove control of a domain to the ACME CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeMode {
    /// HTTP-01, falling back to TLS-ALPN-01 when it fails.
    Auto,
    Http01,
    TlsAlpn01,
}

/// What the ACME client needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeSettings {
    /// The names on the certificate; the first is the primary.
    pub domains: Vec<String>,
    pub email: Option<String>,
    pub directory: String,
    /// A CA to trust for the ACME server's own HTTPS (pebble, step-ca).
    pub ca_file: Option<PathBuf>,
    pub challenge: ChallengeMode,
    pub skip_preflight: bool,
}

/// Everything the proxy needs, resolved and validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxySettings {
    /// HTTPS listeners.
    pub listen: Vec<SocketAddr>,
    /// Plain-HTTP listeners (redirect + ACME challenges); empty with `--no-http`.
    pub http_listen: Vec<SocketAddr>,
    /// True when the addresses are the built-in defaults, so an address family the
    /// host lacks (no IPv6) may be skipped with a warning instead of failing.
    pub listen_is_default: bool,
    pub domains: Vec<String>,
    pub tls: TlsSource,
    pub max_body: Option<u64>,
    pub trusted_proxies: Vec<IpNet>,
    pub hsts: bool,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub ws_idle_timeout: Duration,
    pub handshake_timeout: Duration,
    pub header_timeout: Duration,
    /// A client connection without a new request for this long is closed
    /// (gracefully: in-flight responses finish).
    pub idle_timeout: Duration,
    pub max_header_size: usize,
    pub max_connections: usize,
    /// Worker threads serving connections (see `proxy::listener`).
    pub proxy_workers: usize,
    pub drain_timeout: Duration,
}

pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longer than Open WebUI's own wait for a model provider (AIOHTTP_CLIENT_TIMEOUT,
/// 5 min by default), so its answer, even an error, arrives first.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(3600);
pub const DEFAULT_WS_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// nginx's `keepalive_timeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(75);
pub const DEFAULT_MAX_HEADER_SIZE: usize = 64 << 10;
pub const DEFAULT_MAX_CONNECTIONS: usize = 20_000;
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
pub const MAX_PROXY_WORKERS: usize = 256;

fn err(msg: impl Into<String>) -> anyhow::Error {
    UserError::new(msg).into()
}

/// CLI/env value if given, else the file's, else nothing.
fn pick<T: Clone>(cli: &Option<T>, file: &Option<T>) -> Option<T> {
    cli.clone().or_else(|| file.clone())
}

/// Same for repeatable flags: an empty list means "not given".
fn pick_list(cli: &[String], file: &Option<Vec<String>>) -> Option<Vec<String>> {
    if cli.is_empty() {
        file.clone()
    } else {
        Some(cli.to_vec())
    }
}

fn duration_or(
    key: &str,
    cli: &Option<String>,
    file: &Option<String>,
    default: Duration,
) -> anyhow::Result<Duration> {
    match pick(cli, file) {
        Some(s) => {
            let d = values::duration(key, &s).map_err(err)?;
            // Zero would time out every handshake, request or upstream connection at
            // once; only the drain may be zero (exit without waiting).
            if d.is_zero() && key != "--drain-timeout" {
                return Err(err(format!(
                    "{key} `{s}` must be more than 0; write it like 30s, 5m or 1h"
                )));
            }
            Ok(d)
        }
        None => Ok(default),
    }
}

fn addresses(key: &str, list: Vec<String>) -> anyhow::Result<Vec<SocketAddr>> {
    let mut out = Vec::new();
    for s in list {
        out.extend(values::listen(key, &s).map_err(err)?);
    }
    Ok(out)
}

/// Resolves the upstream URL of `webui proxy`.
pub fn upstream(cli: Option<&str>, file: &FileConfig) -> anyhow::Result<Uri> {
    let Some(s) = cli.map(str::to_string).or_else(|| file.upstream.clone()) else {
        return Err(UserError::new("no upstream given")
            .hint("say where Open WebUI answers, e.g. --upstream http://127.0.0.1:8080")
            .into());
    };
    values::upstream(&s).map_err(err)
}

/// Resolves the upstreams of `webui proxy`: every `--upstream` given (in order, each
/// once), else the file's `upstream`.
pub fn upstreams(cli: &[String], file: &FileConfig) -> anyhow::Result<Vec<Uri>> {
    if cli.is_empty() {
        return Ok(vec![upstream(None, file)?]);
    }
    let mut out: Vec<Uri> = Vec::with_capacity(cli.len());
    for s in cli {
        let u = values::upstream(s.trim()).map_err(err)?;
        if !out.contains(&u) {
            out.push(u);
        }
    }
    Ok(out)
}

/// Resolves the proxy's settings. `cli` already holds env values (clap merges them).
pub fn proxy(cli: &ProxyArgs, file: &FileConfig) -> anyhow::Result<ProxySettings> {
    proxy_settings(cli, file).map_err(|e| file.blame(e))
}

fn proxy_settings(cli: &ProxyArgs, file: &FileConfig) -> anyhow::Result<ProxySettings> {
    let listen_given = pick_list(&cli.listen, &file.listen);
    let http_given = pick_list(&cli.http_listen, &file.http_listen);
    let listen_is_default = listen_given.is_none() && http_given.is_none();
    let listen = addresses(
        "--listen",
        listen_given.unwrap_or_else(|| vec![":443".to_string()]),
    )?;
    let no_http = pick(&cli.no_http, &file.no_http).unwrap_or(false);
    let http_listen = if no_http {
        if http_given.is_some() {
            return Err(err(
                "--no-http and --http-listen contradict each other; give one of them",
            ));
        }
        Vec::new()
    } else {
        addresses(
            "--http-listen",
            http_given.unwrap_or_else(|| vec![":80".to_string()]),
        )?
    };
    if let Some(clash) = listen
        .iter()
        .find(|a| a.port() != 0 && http_listen.contains(a))
    {
        return Err(err(format!(
            "{clash} is given both as an HTTPS (--listen) and a plain-HTTP (--http-listen) address; use two ports"
        )));
    }

    let mut domains = Vec::new();
    for d in pick_list(&cli.domain, &file.domain).unwrap_or_default() {
        let d = values::domain(&d).map_err(err)?;
        if !domains.contains(&d) {
            domains.push(d);
        }
    }

    let cert = pick(&cli.tls_cert, &file.tls_cert);
    let key = pick(&cli.tls_key, &file.tls_key);
    let self_signed = pick(&cli.self_signed, &file.self_signed).unwrap_or(false);
    let tls = match (cert, key) {
        (Some(cert), Some(key)) => {
            if self_signed {
                return Err(err(
                    "--self-signed and --tls-cert/--tls-key contradict each other; give one of them",
                ));
            }
            TlsSource::Files { cert, key }
        }
        (Some(_), None) => {
            return Err(err(
                "--tls-cert needs --tls-key (the certificate's private key)",
            ));
        }
        (None, Some(_)) => return Err(err("--tls-key needs --tls-cert (the certificate chain)")),
        (None, None) if self_signed || domains.is_empty() => TlsSource::SelfSigned,
        (None, None) => TlsSource::Acme(acme(cli, file, &domains)?),
    };

    let max_body = match pick(&cli.max_body, &file.max_body) {
        Some(s) => Some(values::size("--max-body", &s).map_err(err)?),
        None => None,
    };
    let mut trusted_proxies = Vec::new();
    for s in pick_list(&cli.trusted_proxy, &file.trusted_proxy).unwrap_or_default() {
        let net = s
            .parse::<IpNet>()
            .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
            .map_err(|_| {
                err(format!(
                    "--trusted-proxy `{s}` is not a network; write it like 10.0.0.0/8 or 192.0.2.10"
                ))
            })?;
        trusted_proxies.push(net);
    }
    let max_header_size = match pick(&cli.max_header_size, &file.max_header_size) {
        Some(s) => {
            let n = values::size("--max-header-size", &s).map_err(err)?;
            if !(8192..=(16 << 20)).contains(&n) {
                return Err(err(format!(
                    "--max-header-size {s} is out of range; give 8K to 16M"
                )));
            }
            n as usize
        }
        None => DEFAULT_MAX_HEADER_SIZE,
    };
    let max_connections =
        pick(&cli.max_connections, &file.max_connections).unwrap_or(DEFAULT_MAX_CONNECTIONS);
    if max_connections == 0 {
        return Err(err("--max-connections must be at least 1"));
    }
    let proxy_workers = pick(&cli.proxy_workers, &file.proxy_workers)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if !(1..=MAX_PROXY_WORKERS).contains(&proxy_workers) {
        return Err(err(format!(
            "--proxy-workers {proxy_workers} is out of range; give 1 to {MAX_PROXY_WORKERS}, or leave it out for one per CPU"
        )));
    }

    Ok(ProxySettings {
        listen,
        http_listen,
        listen_is_default,
        domains,
        tls,
        max_body,
        trusted_proxies,
        hsts: !pick(&cli.no_hsts, &file.no_hsts).unwrap_or(false),
        connect_timeout: duration_or(
            "--connect-timeout",
            &cli.connect_timeout,
            &file.connect_timeout,
            DEFAULT_CONNECT_TIMEOUT,
        )?,
        response_timeout: duration_or(
            "--response-timeout",
            &cli.response_timeout,
            &file.response_timeout,
            DEFAULT_RESPONSE_TIMEOUT,
        )?,
        ws_idle_timeout: duration_or(
            "--ws-idle-timeout",
            &cli.ws_idle_timeout,
            &file.ws_idle_timeout,
            DEFAULT_WS_IDLE_TIMEOUT,
        )?,
        handshake_timeout: duration_or(
            "--handshake-timeout",
            &cli.handshake_timeout,
            &file.handshake_timeout,
            DEFAULT_HANDSHAKE_TIMEOUT,
        )?,
        header_timeout: duration_or(
            "--header-timeout",
            &cli.header_timeout,
            &file.header_timeout,
            DEFAULT_HEADER_TIMEOUT,
        )?,
        idle_timeout: duration_or(
            "--idle-timeout",
            &cli.idle_timeout,
            &file.idle_timeout,
            DEFAULT_IDLE_TIMEOUT,
        )?,
        max_header_size,
        max_connections,
        proxy_workers,
        drain_timeout: duration_or(
            "--drain-timeout",
            &cli.drain_timeout,
            &file.drain_timeout,
            DEFAULT_DRAIN_TIMEOUT,
        )?,
    })
}

fn acme(cli: &ProxyArgs, file: &FileConfig, domains: &[String]) -> anyhow::Result<AcmeSettings> {
    let staging = pick(&cli.staging, &file.staging).unwrap_or(false);
    let directory = match pick(&cli.acme_directory, &file.acme_directory) {
        Some(_) if staging => {
            return Err(err(
                "--staging and --acme-directory contradict each other; give one of them",
            ));
        }
        Some(url) => {
            let uri: Uri = url.parse().map_err(|_| {
                err(format!("--acme-directory `{url}` is not a URL; write it like https://acme.example.com/directory"))
            })?;
            if uri.scheme_str() != Some("https") || uri.host().is_none() {
                return Err(err(format!(
                    "--acme-directory `{url}` must be an https:// URL, e.g. https://acme.example.com/directory"
                )));
            }
            url
        }
        None if staging => LETS_ENCRYPT_STAGING.to_string(),
        None => LETS_ENCRYPT.to_string(),
    };
    let email = pick(&cli.email, &file.email);
    if let Some(e) = &email {
        let ok = e.split_once('@').is_some_and(|(user, host)| {
            !user.is_empty() && host.contains('.') && !e.contains(char::is_whitespace)
        });
        if !ok {
            return Err(err(format!(
                "--email `{e}` is not an email address; write it like admin@example.com"
            )));
        }
    }
    let challenge = match pick(&cli.challenge, &file.challenge) {
        None | Some(crate::cli::ChallengeArg::Auto) => ChallengeMode::Auto,
        Some(crate::cli::ChallengeArg::Http01) => ChallengeMode::Http01,
        Some(crate::cli::ChallengeArg::TlsAlpn01) => ChallengeMode::TlsAlpn01,
    };
    Ok(AcmeSettings {
        domains: domains.to_vec(),
        email,
        directory,
        ca_file: pick(&cli.acme_ca, &file.acme_ca),
        challenge,
        skip_preflight: pick(&cli.skip_preflight, &file.skip_preflight).unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> FileConfig {
        FileConfig::parse(text, std::path::Path::new("t.toml")).unwrap()
    }

    #[test]
    fn defaults() {
        let s = proxy(&ProxyArgs::default(), &FileConfig::default()).unwrap();
        assert_eq!(s.listen.len(), 2);
        assert!(s.listen.iter().all(|a| a.port() == 443));
        assert!(s.http_listen.iter().all(|a| a.port() == 80));
        assert!(s.listen_is_default);
        assert_eq!(s.tls, TlsSource::SelfSigned);
        assert!(s.hsts);
        assert_eq!(s.max_body, None);
        assert_eq!(s.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(s.ws_idle_timeout, Duration::from_secs(3600));
    }

    #[test]
    fn cli_beats_file_beats_default() {
        let f =
            file("listen = [\"127.0.0.1:9443\"]\nconnect_timeout = \"7s\"\nmax_body = \"1M\"\n");
        let cli = ProxyArgs {
            connect_timeout: Some("2s".into()),
            ..Default::default()
        };
        let s = proxy(&cli, &f).unwrap();
        assert_eq!(
            s.connect_timeout,
            Duration::from_secs(2),
            "CLI wins over file"
        );
        assert_eq!(
            s.listen,
            vec!["127.0.0.1:9443".parse().unwrap()],
            "file wins over default"
        );
        assert_eq!(s.max_body, Some(1 << 20));
        assert!(!s.listen_is_default);
        assert_eq!(
            s.drain_timeout, DEFAULT_DRAIN_TIMEOUT,
            "default when neither"
        );
    }

    #[test]
    fn cli_list_replaces_file_list() {
        let f = file("domain = [\"a.example.com\"]\n");
        let cli = ProxyArgs {
            domain: vec!["B.example.com".into(), "b.example.com".into()],
            ..Default::default()
        };
        assert_eq!(proxy(&cli, &f).unwrap().domains, vec!["b.example.com"]);
    }

    #[test]
    fn tls_sources() {
        let cli = ProxyArgs {
            tls_cert: Some("c.pem".into()),
            tls_key: Some("k.pem".into()),
            ..Default::default()
        };
        assert!(matches!(
            proxy(&cli, &FileConfig::default()).unwrap().tls,
            TlsSource::Files { .. }
        ));
        let f = file("self_signed = true\n");
        let e = proxy(&cli, &f).unwrap_err();
        assert!(e.to_string().contains("contradict"));
        let f = file("tls_cert = \"c.pem\"\n");
        assert!(
            proxy(&ProxyArgs::default(), &f)
                .unwrap_err()
                .to_string()
                .contains("--tls-key")
        );
    }

    #[test]
    fn bad_values_are_user_errors() {
        let cases: Vec<(ProxyArgs, &str)> = vec![
            (
                ProxyArgs {
                    listen: vec!["443".into()],
                    ..Default::default()
                },
                ":443",
            ),
            (
                ProxyArgs {
                    max_body: Some("big".into()),
                    ..Default::default()
                },
                "100M",
            ),
            (
                ProxyArgs {
                    proxy_workers: Some(0),
                    ..Default::default()
                },
                "give 1 to 256",
            ),
            (
                ProxyArgs {
                    trusted_proxy: vec!["nope".into()],
                    ..Default::default()
                },
                "10.0.0.0/8",
            ),
            (
                ProxyArgs {
                    domain: vec!["https://x.com".into()],
                    ..Default::default()
                },
                "--domain x.com",
            ),
            (
                ProxyArgs {
                    max_connections: Some(0),
                    ..Default::default()
                },
                "at least 1",
            ),
            (
                ProxyArgs {
                    listen: vec!["127.0.0.1:8443".into()],
                    http_listen: vec!["127.0.0.1:8443".into()],
                    ..Default::default()
                },
                "two ports",
            ),
            (
                ProxyArgs {
                    no_http: Some(true),
                    http_listen: vec!["127.0.0.1:80".into()],
                    ..Default::default()
                },
                "contradict",
            ),
        ];
        for (cli, needle) in cases {
            let e = proxy(&cli, &FileConfig::default()).unwrap_err();
            assert_eq!(crate::error::exit_code(&e), 1);
            assert!(
                e.to_string().contains(needle),
                "{e} should mention {needle}"
            );
        }
    }

    #[test]
    fn a_domain_means_acme_unless_self_signed() {
        let cli = ProxyArgs {
            domain: vec!["chat.example.com".into()],
            ..Default::default()
        };
        let TlsSource::Acme(a) = proxy(&cli, &FileConfig::default()).unwrap().tls else {
            panic!("expected ACME");
        };
        assert_eq!(a.directory, LETS_ENCRYPT);
        assert_eq!(a.challenge, ChallengeMode::Auto);
        assert_eq!(a.domains, vec!["chat.example.com"]);
        let cli = ProxyArgs {
            staging: Some(true),
            ..cli
        };
        let TlsSource::Acme(a) = proxy(&cli, &FileConfig::default()).unwrap().tls else {
            panic!("expected ACME");
        };
        assert_eq!(a.directory, LETS_ENCRYPT_STAGING);
        let cli = ProxyArgs {
            self_signed: Some(true),
            ..cli
        };
        assert_eq!(
            proxy(&cli, &FileConfig::default()).unwrap().tls,
            TlsSource::SelfSigned
        );
    }

    #[test]
    fn bad_acme_values() {
        let base = ProxyArgs {
            domain: vec!["chat.example.com".into()],
            ..Default::default()
        };
        let e = proxy(
            &ProxyArgs {
                email: Some("nobody".into()),
                ..base.clone()
            },
            &FileConfig::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("admin@example.com"));
        let e = proxy(
            &ProxyArgs {
                acme_directory: Some("http://ca/dir".into()),
                ..base.clone()
            },
            &FileConfig::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("https://"));
        let f = file("challenge = \"tls-alpn-01\"\n");
        let TlsSource::Acme(a) = proxy(&base, &f).unwrap().tls else {
            panic!()
        };
        assert_eq!(a.challenge, ChallengeMode::TlsAlpn01);
    }

    #[test]
    fn no_http_empties_http_listeners() {
        let cli = ProxyArgs {
            no_http: Some(true),
            ..Default::default()
        };
        assert!(
            proxy(&cli, &FileConfig::default())
                .unwrap()
                .http_listen
                .is_empty()
        );
    }

    #[test]
    fn upstream_from_cli_or_file() {
        let f = file("upstream = \"http://10.0.0.2:8080\"\n");
        assert_eq!(
            upstream(None, &f).unwrap().to_string(),
            "http://10.0.0.2:8080/"
        );
        assert_eq!(
            upstream(Some("http://127.0.0.1:3000"), &f)
                .unwrap()
                .to_string(),
            "http://127.0.0.1:3000/"
        );
        let e = upstream(None, &FileConfig::default()).unwrap_err();
        assert!(crate::error::render(&e).contains("--upstream http://"));
    }

    #[test]
    fn upstreams_are_every_flag_once_in_order_or_the_file() {
        let f = file("upstream = \"http://10.0.0.2:8080\"\n");
        let names = |v: Vec<Uri>| v.iter().map(|u| u.to_string()).collect::<Vec<_>>();
        assert_eq!(
            names(upstreams(&[], &f).unwrap()),
            ["http://10.0.0.2:8080/"]
        );
        let cli = ["http://a:1", "http://b:2", "http://a:1"].map(String::from);
        assert_eq!(
            names(upstreams(&cli, &f).unwrap()),
            ["http://a:1/", "http://b:2/"]
        );
        let bad = ["http://a:1", "b:2"].map(String::from);
        assert!(
            upstreams(&bad, &f)
                .unwrap_err()
                .to_string()
                .contains("--upstream `b:2`")
        );
    }
}
