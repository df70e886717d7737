//! Command-line types only: what the user can type, with help text and examples.
//!
//! Nothing here resolves defaults or validates combinations; that happens in
//! `config::resolve`, which is pure and unit-tested. Every value flag is an `Option`
//! without a clap default so that the resolver can tell "not given" from "given",
//! which the CLI > env > file > default precedence needs.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Put Open WebUI on a server, properly, with one command.
#[derive(Debug, Parser)]
#[command(name = "webui", version = crate::VERSION_LONG, about, long_about = None)]
#[command(after_help = "Examples:\n  \
    webui up --domain chat.example.com --email admin@example.com\n  \
    webui proxy --upstream http://127.0.0.1:8080 --self-signed\n  \
    webui status --json")]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Where webui keeps its state: secrets, certificates, the local CA, the config
    /// [default: /var/lib/webui as root, else $XDG_DATA_HOME/webui]
    #[arg(long, global = true, env = "WEBUI_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Configuration file [default: <state-dir>/webui.toml]
    #[arg(long, global = true, env = "WEBUI_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// More log output (-v debug, -vv trace)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Only errors and warnings; no progress bars
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Log line format
    #[arg(
        long,
        global = true,
        env = "WEBUI_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
// Parsed once per run; boxing the large variants would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Run only the HTTPS + WebSocket reverse proxy in front of an Open WebUI you already run
    #[command(after_help = "Examples:\n  \
        # in front of `pip install open-webui; open-webui serve` on this box\n  \
        webui proxy --upstream http://127.0.0.1:8080\n  \
        # with your own certificate (full chain) on non-default ports\n  \
        webui proxy --upstream http://127.0.0.1:3000 --tls-cert fullchain.pem --tls-key key.pem \\\n      \
        --listen 0.0.0.0:8443 --http-listen 0.0.0.0:8080")]
    Proxy(ProxyCmd),

    /// Show or renew the site's certificates
    #[command(after_help = "Examples:\n  \
        webui cert status\n  \
        webui cert status --json | jq '.certificates[0].not_after'")]
    Cert(CertCmd),
}

#[derive(Debug, Args)]
pub struct ProxyCmd {
    /// Where Open WebUI answers, e.g. http://127.0.0.1:8080
    #[arg(long, env = "WEBUI_UPSTREAM", value_name = "URL")]
    pub upstream: Option<String>,

    #[command(flatten)]
    pub proxy: ProxyArgs,
}

/// Listener, TLS and limit flags shared by every command that serves the site.
#[derive(Debug, Clone, Default, Args)]
pub struct ProxyArgs {
    /// HTTPS listen address, repeatable [default: 0.0.0.0:443 and [::]:443]
    #[arg(long, env = "WEBUI_LISTEN", value_name = "ADDR", value_delimiter = ',')]
    pub listen: Vec<String>,

    /// Plain-HTTP listen address (redirects to https, answers ACME challenges), repeatable
    /// [default: 0.0.0.0:80 and [::]:80]
    #[arg(
        long,
        env = "WEBUI_HTTP_LISTEN",
        value_name = "ADDR",
        value_delimiter = ','
    )]
    pub http_listen: Vec<String>,

    /// Do not listen for plain HTTP at all
    #[arg(long, env = "WEBUI_NO_HTTP", num_args = 0..=1, default_missing_value = "true")]
    pub no_http: Option<bool>,

    /// Public domain name of the site, repeatable; the first is the primary
    #[arg(long, env = "WEBUI_DOMAIN", value_name = "NAME", value_delimiter = ',')]
    pub domain: Vec<String>,

    /// Certificate chain (PEM, leaf first) to serve instead of ACME or self-signed
    #[arg(
        long,
        env = "WEBUI_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// Private key (PEM) of --tls-cert
    #[arg(
        long,
        env = "WEBUI_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// Serve a certificate from a local CA kept in the state directory
    #[arg(long, env = "WEBUI_SELF_SIGNED", num_args = 0..=1, default_missing_value = "true",
          conflicts_with_all = ["tls_cert", "tls_key"])]
    pub self_signed: Option<bool>,

    /// Largest request body accepted, e.g. 100M or 2G; larger ones get 413 [default: no limit]
    #[arg(long, env = "WEBUI_MAX_BODY", value_name = "SIZE")]
    pub max_body: Option<String>,

    /// Trust X-Forwarded-* from clients in this network (a proxy in front of webui), repeatable
    #[arg(
        long,
        env = "WEBUI_TRUSTED_PROXY",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    pub trusted_proxy: Vec<String>,

    /// Do not send Strict-Transport-Security
    #[arg(long, env = "WEBUI_NO_HSTS", num_args = 0..=1, default_missing_value = "true")]
    pub no_hsts: Option<bool>,

    /// Time allowed to connect to the upstream [default: 5s]
    #[arg(long, env = "WEBUI_CONNECT_TIMEOUT", value_name = "DURATION")]
    pub connect_timeout: Option<String>,

    /// Close a WebSocket after this long without traffic in either direction [default: 1h]
    #[arg(long, env = "WEBUI_WS_IDLE_TIMEOUT", value_name = "DURATION")]
    pub ws_idle_timeout: Option<String>,

    /// Time allowed for a client's TLS handshake [default: 10s]
    #[arg(long, env = "WEBUI_HANDSHAKE_TIMEOUT", value_name = "DURATION")]
    pub handshake_timeout: Option<String>,

    /// Time allowed for a client to send its request headers (slowloris guard) [default: 30s]
    #[arg(long, env = "WEBUI_HEADER_TIMEOUT", value_name = "DURATION")]
    pub header_timeout: Option<String>,

    /// Largest request head (request line and headers) accepted [default: 64K]
    #[arg(long, env = "WEBUI_MAX_HEADER_SIZE", value_name = "SIZE")]
    pub max_header_size: Option<String>,

    /// Most client connections open at once [default: 20000]
    #[arg(long, env = "WEBUI_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,

    /// On SIGINT/SIGTERM, how long open requests and streams may take to finish [default: 10s]
    #[arg(long, env = "WEBUI_DRAIN_TIMEOUT", value_name = "DURATION")]
    pub drain_timeout: Option<String>,

    /// Contact address for the ACME account (expiry warnings from the CA)
    #[arg(long, env = "WEBUI_EMAIL", value_name = "ADDRESS")]
    pub email: Option<String>,

    /// ACME directory URL [default: Let's Encrypt production]
    #[arg(long, env = "WEBUI_ACME_DIRECTORY", value_name = "URL")]
    pub acme_directory: Option<String>,

    /// Use Let's Encrypt's staging CA (untrusted certificates, generous rate limits)
    #[arg(long, env = "WEBUI_STAGING", num_args = 0..=1, default_missing_value = "true",
          conflicts_with = "acme_directory")]
    pub staging: Option<bool>,

    /// Trust this CA certificate (PEM) for the ACME server's own HTTPS, e.g. pebble, step-ca
    #[arg(long, env = "WEBUI_ACME_CA", value_name = "FILE")]
    pub acme_ca: Option<std::path::PathBuf>,

    /// ACME challenge: http-01 on port 80, tls-alpn-01 on port 443, or auto (http-01, then tls-alpn-01)
    #[arg(long, env = "WEBUI_CHALLENGE", value_enum)]
    pub challenge: Option<ChallengeArg>,

    /// Order certificates without first checking DNS and that the challenge path is reachable
    #[arg(long, env = "WEBUI_SKIP_PREFLIGHT", num_args = 0..=1, default_missing_value = "true")]
    pub skip_preflight: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChallengeArg {
    Auto,
    #[value(name = "http-01")]
    #[serde(rename = "http-01")]
    Http01,
    #[value(name = "tls-alpn-01")]
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
}

#[derive(Debug, Args)]
pub struct CertCmd {
    #[command(subcommand)]
    pub action: CertAction,
}

#[derive(Debug, Subcommand)]
pub enum CertAction {
    /// Names, issuer, expiry, next renewal and last error of each stored certificate
    Status {
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
}
