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
    webui status --json\n\n\
    Exit status: 0 ok; 1 a user or configuration error (the message says what to fix);\n\
    2 an unexpected failure; 3 unhealthy (`status`, `doctor`, `cert status`).")]
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
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "WEBUI_STATE_DIR",
        value_name = "DIR"
    )]
    pub state_dir: Option<PathBuf>,

    /// Configuration file [default: <state-dir>/webui.toml]
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "WEBUI_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,

    /// More log output (-v debug, -vv trace)
    #[arg(short, long, global = true, help_heading = "Global options", action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Only errors and warnings; no progress bars
    #[arg(
        short,
        long,
        global = true,
        help_heading = "Global options",
        conflicts_with = "verbose"
    )]
    pub quiet: bool,

    /// Name of this instance: prefixes every container, volume and network name
    /// (`NAME-open-webui`), so several instances can share one Docker engine
    /// [default: none, names as in the Open WebUI docs]
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "WEBUI_PROJECT",
        value_name = "NAME"
    )]
    pub project: Option<String>,

    /// When to use colour: auto (on a terminal, unless NO_COLOR is set or TERM=dumb),
    /// always, never
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_enum,
        value_name = "WHEN",
        default_value_t = ColorWhen::Auto
    )]
    pub color: ColorWhen,

    /// Log line format
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "WEBUI_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum ColorWhen {
    /// Colour on a terminal, unless NO_COLOR is set (non-empty) or TERM=dumb
    #[default]
    Auto,
    /// Always colour, even when piped or with NO_COLOR
    Always,
    /// Never colour
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

// Parsed once per process; boxing the flag structs would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run only the HTTPS + WebSocket reverse proxy in front of an Open WebUI you already run
    #[command(after_help = "Examples:\n  \
        # in front of `pip install open-webui; open-webui serve` on this box\n  \
        webui proxy --upstream http://127.0.0.1:8080\n  \
        # with your own certificate (full chain) on non-default ports\n  \
        webui proxy --upstream http://127.0.0.1:3000 --tls-cert fullchain.pem --tls-key key.pem \\\n      \
        --listen 0.0.0.0:8443 --http-listen 0.0.0.0:8080\n  \
        # balanced across three Open WebUI replicas (or every task of a Swarm service)\n  \
        webui proxy --upstream http://10.0.0.11:8080 --upstream http://10.0.0.12:8080 \\\n      \
        --upstream http://10.0.0.13:8080\n  \
        webui proxy --upstream http://tasks.open-webui:8080")]
    Proxy(ProxyCmd),

    /// Forward TCP connections (the admin-account relay of `up --swarm`, run inside
    /// a container on the swarm's overlay network)
    #[command(hide = true)]
    SwarmRelay(SwarmRelayCmd),

    /// Run Open WebUI (and optionally Ollama) in Docker and serve it over HTTPS
    #[command(after_help = "Examples:\n  \
        # on a LAN box: self-signed HTTPS on :443, Open WebUI on 127.0.0.1:3000\n  \
        webui up\n  \
        # a public site with the bundled Ollama and every GPU\n  \
        webui up --domain chat.example.com --ollama --gpu all\n  \
        # beside an nginx/Apache that keeps 80/443: no listener, prints its site config\n  \
        webui up --behind-proxy --domain chat.example.com\n  \
        # a fixed release, an OpenAI-compatible provider, one extra setting\n  \
        webui up --version v0.6.5 --openai-url https://api.openai.com/v1 \\\n      \
        --openai-key-file /root/openai.key --env ENABLE_SIGNUP=false\n  \
        # three Open WebUI replicas on Postgres + Redis (an install with SQLite accounts:\n  \
        # `webui migrate-db --to postgres` first)\n  \
        webui up --domain chat.example.com --replicas 3\n  \
        # the same stack as Docker Swarm services, from a manager node (docs/SWARM.md)\n  \
        webui up --swarm --domain chat.example.com --replicas 6\n\n\
        Containers keep running when webui exits (restart policy unless-stopped); the next\n\
        `webui up` adopts them and recreates them only when a setting changed. Data volumes\n\
        are never deleted. The WEBUI_SECRET_KEY is generated once and kept (mode 0600) in\n\
        <state-dir>/projects/<project>/secret_key.\n\n\
        Open WebUI stores WEBUI_URL, OLLAMA_BASE_URL and the OpenAI connection in its\n\
        database on first start (PersistentConfig) and ignores later changes of these\n\
        variables; webui warns when they change. Change them in Admin Panel > Settings,\n\
        or pass --env ENABLE_PERSISTENT_CONFIG=false to make the environment win on every\n\
        start (settings saved in the admin panel are then lost at each restart).\n\n\
        When Open WebUI has no account yet, the admin account is created before the site\n\
        opens (nobody else can claim it): --admin-email, password from WEBUI_ADMIN_PASSWORD\n\
        or generated, shown once and kept (mode 0600) in\n\
        <state-dir>/projects/<project>/admin_password. Existing accounts are never changed.")]
    Up(UpCmd),

    /// Show the containers, their health, image digest, uptime and restarts
    #[command(after_help = "Examples:\n  \
        webui status\n  \
        webui status --json | jq '.containers[] | {service, state, health}'\n  \
        webui --project staging status\n\n\
        Exit status: 0 when every container is running and healthy, 3 otherwise.")]
    Status(StatusCmd),

    /// Show the containers' logs (stdout and stderr); with `up --swarm`, the services'
    /// tasks on every node
    #[command(after_help = "Examples:\n  \
        webui logs --tail 100\n  \
        webui logs open-webui -f --since 10m\n  \
        webui logs ollama --since 2024-05-01T12:00:00Z --timestamps\n  \
        webui logs open-webui --replica 2 --tail 50\n  \
        webui logs proxy --tail 20        # up --swarm: the proxy service")]
    Logs(LogsCmd),

    /// Stop and remove the containers and network; data volumes and the secret stay
    #[command(after_help = "Examples:\n  \
        webui down\n  \
        # also delete the data volumes and the secret key (asks for --yes)\n  \
        webui down --purge-data --yes")]
    Down(DownCmd),

    /// Show the effective settings, write a starter webui.toml, or export a site
    /// configuration for nginx, Apache or Caddy
    #[command(after_help = "Examples:\n  \
        webui config show\n  \
        webui config init\n  \
        webui config export nginx --domain chat.example.com")]
    Config(ConfigCmd),

    /// Show or renew the site's certificates
    #[command(after_help = "Examples:\n  \
        webui cert status\n  \
        webui cert status --json | jq '.certificates[0].not_after'")]
    Cert(CertCmd),

    /// Run webui as a systemd service: install (enable), uninstall, status
    #[command(after_help = "Examples:\n  \
        webui service install\n  \
        webui --project staging service status\n  \
        # start (or restart) it and wait until Open WebUI is healthy\n  \
        webui up -d --domain chat.example.com\n\n\
        The unit runs `webui up` with this state dir, config file and project. Needs a\n\
        running systemd; --unit-dir only writes the unit file (images, packaging).")]
    Service(ServiceCmd),

    /// Update Open WebUI: pull, back up, recreate with the same data and secret, wait
    /// for health; roll back automatically when the new version does not come up
    #[command(after_help = "Examples:\n  \
        webui update --check\n  \
        webui update\n  \
        webui update --version v0.6.6 --health-timeout 1h\n  \
        webui update --keep-backups 10                # keep more of its backups\n\n\
        Without --version/--image the image the container was made from is pulled anew\n\
        (a newer build of its tag). `webui up` never switches images by itself: a moved\n\
        tag is ignored until `webui update`. --check exits 0 both when up to date and\n\
        when an update is available (read the output, or `update_available` in --json).\n\
        A failed update exits 1 after rolling back; the failed start's logs are saved.\n\
        With replicas (`up --replicas N`) the update rolls: the database is dumped, then\n\
        one replica at a time leaves rotation, finishes its requests, is replaced and\n\
        health-checked, and rejoins while the others serve; a replica that fails is put\n\
        back and the roll stops (exit 1).")]
    Update(UpdateCmd),

    /// Back up Open WebUI's data volume, the secret key, the config and certificates
    #[command(after_help = "Examples:\n  \
        webui backup\n  \
        webui backup --output /srv/backups/\n  \
        webui backup --list\n\n\
        Default file: <state-dir>/backups/webui-backup-<project>-<UTC time>.tar.gz (0600).\n\
        The SQLite database is copied consistently: with SQLite's online backup inside the\n\
        container when it has python3, else by pausing the container for the copy.\n\
        On Postgres (after `migrate-db`, or with `up --replicas N`) the database is dumped\n\
        into the archive too (postgres.dump, pg_dump custom format); `webui restore`\n\
        puts it back with the files.")]
    Backup(BackupCmd),

    /// Put a backup back: data volume, secret key, config, certificates
    #[command(after_help = "Examples:\n  \
        webui restore webui-backup-default-20240501T120000Z.tar.gz\n  \
        webui restore webui-backup-default-20240501T120000Z.tar.gz --yes\n  \
        webui restore webui-backup-default-20240501T120000Z.tar.gz --yes \\\n      \
          --database webui-db-default-20240501T120001Z.dump   # a dump made apart\n\n\
        Every file is checked against the manifest first; a damaged archive changes\n\
        nothing. Without --yes, prints what would be replaced and exits 1. Needs the\n\
        project's open-webui container (`webui up` creates it). Replicas are stopped\n\
        meanwhile too. An archive of a project on Postgres holds its database: it is put\n\
        back first, in one transaction (when that fails nothing is changed). --database\n\
        puts back a dump made apart instead (e.g. by an older webui, beside the archive).")]
    Restore(RestoreCmd),

    /// Move Open WebUI's database from its SQLite file to the project's Postgres (for
    /// `up --replicas`); the SQLite file is kept untouched as the fallback
    #[command(after_help = "Examples:\n  \
        webui migrate-db --to postgres\n  \
        webui --project team migrate-db --to postgres --json\n  \
        webui migrate-db --to postgres --backup /srv/backups/webui-backup-default-20240501T120000Z.tar.gz\n\n\
        Stop `webui up` first. A fresh backup is required: without --backup, migrate-db\n\
        stops Open WebUI and then takes one itself (like `webui backup`), so it holds\n\
        exactly what is moved; --backup FILE is accepted only when it verifies, is of this\n\
        project and was made after Open WebUI last wrote its database. The tables are made\n\
        by Open WebUI's own migrations (the same image), then every row is copied in one\n\
        transaction and counted. Refused: already on Postgres, a Postgres that holds data,\n\
        a schema the SQLite file does not match. Open WebUI stays stopped afterwards:\n\
        start it with `webui up --replicas N`. To go back, delete <state-dir>/projects/\n\
        <project>/database.json; the SQLite file is as it was.")]
    MigrateDb(MigrateDbCmd),

    /// Check the deployment end to end and say what to fix (DNS, ports, certificate, websocket, Ollama, disk, backups)
    #[command(after_help = "Examples:\n  \
        webui doctor\n  \
        webui doctor --domain chat.example.com --json\n  \
        # ask the domain's DNS server itself, not a stale local cache\n  \
        webui doctor --domain chat.example.com --resolver 1.1.1.1:53")]
    Doctor(DoctorCmd),

    /// Print the version, git commit and build date; with --check, whether a newer
    /// release exists (only when a release URL is configured)
    #[command(after_help = "Examples:\n  \
        webui version\n  \
        WEBUI_RELEASE_URL=https://example.com/webui/latest.json webui version --check\n  \
        webui version --check --json | jq .check.newer\n\n\
        The release URL answers JSON like {\"version\": \"0.2.0\", \"url\": \"https://...\"}. Without\n\
        one, --check says so and makes no network call. Exit status: 0, also when a newer\n\
        release exists (read the output or `check.newer`); 1 when the release URL cannot\n\
        be reached or does not answer that document.")]
    Version(VersionCmd),

    /// Show or rotate the bearer token of the Ollama API served by `up --ollama-only`
    /// or `up --ollama-domain`
    #[command(after_help = "Examples:\n  \
        webui token show\n  \
        webui token show --json | jq -r .token\n  \
        # a new token; the running proxy accepts only the new one from now on\n  \
        webui token rotate\n\n\
        The token is kept (mode 0600) in <state-dir>/projects/<project>/ollama_token.\n\
        Clients send it as `Authorization: Bearer TOKEN`; on the UI server give it to\n\
        `webui up --ollama-url https://models.example.com --ollama-token-file FILE`.")]
    Token(TokenCmd),

    /// Print a shell completion script
    #[command(after_help = "Examples:\n  \
        webui completions bash > /etc/bash_completion.d/webui\n  \
        webui completions zsh > \"${fpath[1]}/_webui\"\n  \
        webui completions fish > ~/.config/fish/completions/webui.fish")]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },

    /// Print the man page (roff), e.g. `webui manpage > /usr/share/man/man1/webui.1`
    #[command(hide = true)]
    Manpage,
}

#[derive(Debug, Clone, Args)]
pub struct TokenCmd {
    #[command(subcommand)]
    pub action: TokenAction,
}

#[derive(Debug, Clone, Subcommand)]
pub enum TokenAction {
    /// Print the token (created on the first `webui up --ollama-only`)
    Show {
        /// Machine-readable output: {"token", "path"}
        #[arg(long)]
        json: bool,
    },
    /// Replace the token with a new random one; the old one stops working at once
    Rotate {
        /// Machine-readable output: {"token", "path"}
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct SwarmRelayCmd {
    #[arg(long, value_name = "ADDR")]
    pub listen: String,
    #[arg(long, value_name = "HOST:PORT")]
    pub to: String,
}

#[derive(Debug, Args)]
pub struct ProxyCmd {
    /// Where Open WebUI answers, e.g. http://127.0.0.1:8080. Repeat it (or separate
    /// with commas) for replicas: requests are balanced across them. A host name that
    /// resolves to several addresses (Swarm's tasks.<service>) counts as one upstream
    /// per address, re-resolved every 2 s
    #[arg(
        long,
        env = "WEBUI_UPSTREAM",
        value_name = "URL",
        value_delimiter = ','
    )]
    pub upstream: Vec<String>,

    /// File holding a webhook URL to POST a failed certificate order to (as `up
    /// --notify-url-file`) [default: none]
    #[arg(long, env = "WEBUI_NOTIFY_URL_FILE", value_name = "FILE")]
    pub notify_url_file: Option<PathBuf>,

    #[command(flatten)]
    pub proxy: ProxyArgs,
}

/// Listener, TLS and limit flags shared by every command that serves the site.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Proxy and TLS")]
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

    /// Time allowed for the upstream to start answering once the request was sent;
    /// then 504 [default: 1h]
    #[arg(long, env = "WEBUI_RESPONSE_TIMEOUT", value_name = "DURATION")]
    pub response_timeout: Option<String>,

    /// Close a WebSocket after this long without traffic in either direction [default: 1h]
    #[arg(long, env = "WEBUI_WS_IDLE_TIMEOUT", value_name = "DURATION")]
    pub ws_idle_timeout: Option<String>,

    /// Time allowed for a client's TLS handshake [default: 10s]
    #[arg(long, env = "WEBUI_HANDSHAKE_TIMEOUT", value_name = "DURATION")]
    pub handshake_timeout: Option<String>,

    /// Time allowed for a client to send its request headers, the first request's
    /// counted from the connection's start (slowloris guard) [default: 30s]
    #[arg(long, env = "WEBUI_HEADER_TIMEOUT", value_name = "DURATION")]
    pub header_timeout: Option<String>,

    /// Close a client connection after this long without a new request on it; what
    /// is in flight finishes first (HTTP/2: GOAWAY) [default: 75s]
    #[arg(long, env = "WEBUI_IDLE_TIMEOUT", value_name = "DURATION")]
    pub idle_timeout: Option<String>,

    /// Largest request head (request line and headers) accepted [default: 64K]
    #[arg(long, env = "WEBUI_MAX_HEADER_SIZE", value_name = "SIZE")]
    pub max_header_size: Option<String>,

    /// Most client connections open at once [default: 20000]
    #[arg(long, env = "WEBUI_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,

    /// Threads serving the proxy's connections, each with its own event loop and
    /// upstream pool [default: one per CPU]
    #[arg(long, env = "WEBUI_PROXY_WORKERS", value_name = "N")]
    pub proxy_workers: Option<usize>,

    /// On SIGINT/SIGTERM, how long open requests and streams may take to finish [default: 10s]
    #[arg(long, env = "WEBUI_DRAIN_TIMEOUT", value_name = "DURATION")]
    pub drain_timeout: Option<String>,

    /// Contact address for the ACME account (expiry warnings from the CA)
    #[arg(
        long,
        env = "WEBUI_EMAIL",
        help_heading = "Certificates (ACME)",
        value_name = "ADDRESS"
    )]
    pub email: Option<String>,

    /// ACME directory URL [default: Let's Encrypt production]
    #[arg(
        long,
        env = "WEBUI_ACME_DIRECTORY",
        help_heading = "Certificates (ACME)",
        value_name = "URL"
    )]
    pub acme_directory: Option<String>,

    /// Use Let's Encrypt's staging CA (untrusted certificates, generous rate limits)
    #[arg(long, env = "WEBUI_STAGING", help_heading = "Certificates (ACME)", num_args = 0..=1, default_missing_value = "true",
          conflicts_with = "acme_directory")]
    pub staging: Option<bool>,

    /// Trust this CA certificate (PEM) for the ACME server's own HTTPS, e.g. pebble, step-ca
    #[arg(
        long,
        env = "WEBUI_ACME_CA",
        help_heading = "Certificates (ACME)",
        value_name = "FILE"
    )]
    pub acme_ca: Option<std::path::PathBuf>,

    /// ACME challenge: http-01 on port 80, tls-alpn-01 on port 443, or auto (http-01, then tls-alpn-01)
    #[arg(
        long,
        env = "WEBUI_CHALLENGE",
        help_heading = "Certificates (ACME)",
        value_enum
    )]
    pub challenge: Option<ChallengeArg>,

    /// Order certificates without first checking DNS and that the challenge path is reachable
    #[arg(long, env = "WEBUI_SKIP_PREFLIGHT", help_heading = "Certificates (ACME)", num_args = 0..=1, default_missing_value = "true")]
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

/// `webui up`: everything of `webui proxy` plus what to run in Docker.
#[derive(Debug, Clone, Default, Args)]
pub struct UpCmd {
    #[command(flatten)]
    pub proxy: ProxyArgs,

    /// Open WebUI image [default: ghcr.io/open-webui/open-webui:main]
    #[arg(long, env = "WEBUI_IMAGE", value_name = "IMAGE")]
    pub image: Option<String>,

    /// Run this Open WebUI release, e.g. v0.6.5 (the image's tag)
    #[arg(long, env = "WEBUI_OPENWEBUI_VERSION", value_name = "VERSION")]
    pub version: Option<String>,

    /// When to pull images [default: missing]
    #[arg(long, env = "WEBUI_PULL", value_enum, value_name = "WHEN")]
    pub pull: Option<PullPolicy>,

    /// bridge: publish Open WebUI on 127.0.0.1:--port; host: Open WebUI listens on
    /// 127.0.0.1:--port of the host itself [default: bridge]
    #[arg(long, env = "WEBUI_NETWORK", value_enum, value_name = "MODE")]
    pub network: Option<NetworkMode>,

    /// Loopback port Open WebUI answers on, for the proxy
    /// [default: 3000 with --network bridge, 8080 with --network host]
    #[arg(long, env = "WEBUI_PORT", value_name = "PORT")]
    pub port: Option<u16>,

    /// Also run Ollama in a container, reachable by Open WebUI only
    #[arg(long, env = "WEBUI_OLLAMA", num_args = 0..=1, default_missing_value = "true",
          conflicts_with = "ollama_url")]
    pub ollama: Option<bool>,

    /// Ollama image for --ollama [default: ollama/ollama:latest]
    #[arg(long, env = "WEBUI_OLLAMA_IMAGE", value_name = "IMAGE")]
    pub ollama_image: Option<String>,

    /// Use the Ollama server at this URL [default: --ollama, else this host's Ollama if
    /// it answers on 127.0.0.1:11434]
    #[arg(long, env = "WEBUI_OLLAMA_URL", value_name = "URL")]
    pub ollama_url: Option<String>,

    /// Run only Ollama (no Open WebUI) and serve its API on --domain, protected by a
    /// bearer token (`webui token show`); with --ollama-url, front that Ollama instead
    #[arg(long, env = "WEBUI_OLLAMA_ONLY", num_args = 0..=1, default_missing_value = "true",
          conflicts_with_all = ["ollama", "image", "version", "openai_url", "openai_key_file", "ollama_token", "ollama_token_file", "ollama_ca"])]
    pub ollama_only: Option<bool>,

    /// With --ollama: also serve the bundled Ollama's API on this name, token-protected
    #[arg(long, env = "WEBUI_OLLAMA_DOMAIN", value_name = "NAME")]
    pub ollama_domain: Option<String>,

    /// Loopback port the served Ollama API is published on, for the proxy
    /// (--ollama-only, --ollama-domain) [default: 11434]
    #[arg(long, env = "WEBUI_OLLAMA_PORT", value_name = "PORT")]
    pub ollama_port: Option<u16>,

    /// A browser origin allowed to call the served Ollama API (CORS and OLLAMA_ORIGINS),
    /// repeatable, e.g. https://chat.example.com
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    pub allow_origin: Vec<String>,

    /// Bearer token for --ollama-url (a `webui up --ollama-only` server); prefer
    /// --ollama-token-file, a flag is visible in `ps`
    #[arg(
        long,
        env = "WEBUI_OLLAMA_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true,
        conflicts_with = "ollama_token_file"
    )]
    pub ollama_token: Option<String>,

    /// File holding the bearer token for --ollama-url
    #[arg(long, env = "WEBUI_OLLAMA_TOKEN_FILE", value_name = "FILE")]
    pub ollama_token_file: Option<PathBuf>,

    /// CA certificate (PEM) to trust for --ollama-url besides the system's, e.g. the
    /// `<state-dir>/ca/ca.pem` of a `--self-signed` Ollama server
    #[arg(long, env = "WEBUI_OLLAMA_CA", value_name = "FILE")]
    pub ollama_ca: Option<PathBuf>,

    /// An OpenAI-compatible API, e.g. https://api.openai.com/v1
    #[arg(long, env = "WEBUI_OPENAI_URL", value_name = "URL")]
    pub openai_url: Option<String>,

    /// File holding the API key of --openai-url (kept out of `ps` and logs)
    #[arg(long, env = "WEBUI_OPENAI_KEY_FILE", value_name = "FILE")]
    pub openai_key_file: Option<PathBuf>,

    /// GPUs for the containers: auto uses them when the engine has an NVIDIA runtime
    /// [default: auto]
    #[arg(long, env = "WEBUI_GPU", value_enum, value_name = "WHICH")]
    pub gpu: Option<GpuMode>,

    /// Extra environment variable for Open WebUI, repeatable
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    pub env: Vec<String>,

    /// File of KEY=VALUE lines for Open WebUI (`#` comments), like `docker run --env-file`
    #[arg(long, env = "WEBUI_ENV_FILE", value_name = "FILE")]
    pub env_file: Option<PathBuf>,

    /// Open WebUI's timeout for requests to model providers (AIOHTTP_CLIENT_TIMEOUT)
    /// [default: 300s]
    #[arg(long, env = "WEBUI_AIOHTTP_TIMEOUT", value_name = "DURATION")]
    pub aiohttp_timeout: Option<String>,

    /// How long Open WebUI may take to become healthy (first starts run migrations and
    /// download models) [default: 30m]
    #[arg(long, env = "WEBUI_HEALTH_TIMEOUT", value_name = "DURATION")]
    pub health_timeout: Option<String>,

    /// Take over an `open-webui`/`ollama` container or volume not made by webui
    /// (e.g. from the Open WebUI docs' `docker run`), keeping its data
    #[arg(long)]
    pub adopt: bool,

    /// Stop restarting a container after this many exits within this time, e.g. 5/10m
    /// (its last log lines are kept for `webui status`) [default: 5/10m]
    #[arg(long, env = "WEBUI_CRASH_LOOP", value_name = "EXITS/DURATION")]
    pub crash_loop: Option<String>,

    /// Back up Open WebUI's data this often while `up` runs, e.g. 1d or 12h (as
    /// `webui backup` does: online, verified); the first one as soon as Open WebUI is
    /// ready when --backup-dir has none of this project's [default: off]
    #[arg(long, env = "WEBUI_BACKUP_EVERY", value_name = "DURATION")]
    pub backup_every: Option<String>,

    /// How many of those backups to keep: after each one, older ones of this project
    /// in --backup-dir are removed (nothing else there is touched) [default: 7]
    #[arg(long, env = "WEBUI_BACKUP_KEEP", value_name = "N")]
    pub backup_keep: Option<usize>,

    /// Where those backups go (another disk is better) [default:
    /// <state-dir>/backups/scheduled]
    #[arg(long, env = "WEBUI_BACKUP_DIR", value_name = "DIR")]
    pub backup_dir: Option<PathBuf>,

    /// File holding a webhook URL (Slack, Discord, Mattermost, or any that takes JSON)
    /// to POST each problem to as it happens: a container exit, a crash loop, the
    /// Docker engine lost, a failed backup or certificate order [default: none]
    #[arg(long, env = "WEBUI_NOTIFY_URL_FILE", value_name = "FILE")]
    pub notify_url_file: Option<PathBuf>,

    /// Email of the admin account created before the site opens when Open WebUI has
    /// no account yet (the password: env WEBUI_ADMIN_PASSWORD, else generated and
    /// shown once) [default: admin@<first --domain>, else admin@localhost]
    #[arg(long, env = "WEBUI_ADMIN_EMAIL", value_name = "EMAIL")]
    pub admin_email: Option<String>,

    /// Display name of that admin account [default: Administrator]
    #[arg(long, env = "WEBUI_ADMIN_NAME", value_name = "NAME")]
    pub admin_name: Option<String>,

    /// Beside an existing web server: no HTTPS listener (nothing on 80/443, no ACME),
    /// Open WebUI on 127.0.0.1:--port only; prints the `webui config export` commands
    /// for nginx, Apache or Caddy (--domain names the site)
    #[arg(long, env = "WEBUI_BEHIND_PROXY", num_args = 0..=1, default_missing_value = "true")]
    pub behind_proxy: Option<bool>,

    /// Run this many Open WebUI containers behind the proxy (N > 1 adds a Postgres
    /// and a Redis container; an install with SQLite users needs
    /// `webui migrate-db --to postgres` first) [default: 1]
    #[arg(long, env = "WEBUI_REPLICAS", value_name = "N")]
    pub replicas: Option<u32>,

    /// Postgres image for --replicas [default: postgres:17]
    #[arg(long, env = "WEBUI_POSTGRES_IMAGE", value_name = "IMAGE")]
    pub postgres_image: Option<String>,

    /// Redis image for --replicas [default: redis:7]
    #[arg(long, env = "WEBUI_REDIS_IMAGE", value_name = "IMAGE")]
    pub redis_image: Option<String>,

    /// Deploy as Docker Swarm services from this manager node (Postgres, Redis,
    /// --replicas Open WebUI tasks and the proxy, which publishes the --listen and
    /// --http-listen ports on this node) and return; the swarm keeps them running.
    /// See docs/SWARM.md
    #[arg(long, env = "WEBUI_SWARM", num_args = 0..=1, default_missing_value = "true")]
    pub swarm: Option<bool>,

    /// Run as the systemd service instead of in the foreground: install or restart it,
    /// wait until Open WebUI is healthy, print the URL and return
    #[arg(short = 'd', long)]
    pub detach: bool,
}

#[derive(Debug, Clone, Default, Args)]
pub struct UpdateCmd {
    /// Update to this Open WebUI release, e.g. v0.6.6 (a tag of the running image's
    /// repository)
    #[arg(long, value_name = "VERSION", conflicts_with = "image")]
    pub version: Option<String>,

    /// Update to this image reference
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,

    /// Only report whether an update exists (exit 0 either way)
    #[arg(long)]
    pub check: bool,

    /// Machine-readable result on stdout
    #[arg(long)]
    pub json: bool,

    /// How long the new version may take to become healthy (migrations can be slow)
    /// before it is rolled back [default: 30m]
    #[arg(long, env = "WEBUI_HEALTH_TIMEOUT", value_name = "DURATION")]
    pub health_timeout: Option<String>,

    /// How many of the backups `webui update` made to keep: after a successful update
    /// the older ones are removed (backups made with `webui backup` never are); a
    /// number, or `all` [default: 3]
    #[arg(long, env = "WEBUI_KEEP_BACKUPS", value_name = "N|all")]
    pub keep_backups: Option<String>,
}

#[derive(Debug, Clone, Default, Args)]
pub struct BackupCmd {
    /// The archive to write, or a directory for the default name
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// List this project's backups instead (made by `webui backup`, `webui update` and
    /// `up --backup-every`), newest first
    #[arg(long, conflicts_with = "output")]
    pub list: bool,

    /// With --list: as JSON, `{"backups": [{"file", "created", "bytes", "kind"}]}`
    #[arg(long, requires = "list")]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct MigrateDbCmd {
    /// The database to move to
    #[arg(long, value_enum, value_name = "ENGINE")]
    pub to: MigrateTarget,

    /// A recent backup of this project to rely on instead of taking one now (must be
    /// newer than the database's last change)
    #[arg(long, value_name = "FILE")]
    pub backup: Option<PathBuf>,

    /// The Postgres image, when its container does not exist yet [default: the one
    /// `up --replicas` uses]
    #[arg(long, env = "WEBUI_POSTGRES_IMAGE", value_name = "IMAGE")]
    pub postgres_image: Option<String>,

    /// Machine-readable summary on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MigrateTarget {
    /// The project's Postgres container (the one `up --replicas` runs)
    Postgres,
}

#[derive(Debug, Clone, Default, Args)]
pub struct RestoreCmd {
    /// A backup made by `webui backup` or `webui update`
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Replace the current data without asking
    #[arg(long)]
    pub yes: bool,

    /// On Postgres: put this database dump back (a `pg_dump -Fc` file made apart from
    /// the archive), instead of the one the archive holds, with `pg_restore --clean` in
    /// one transaction
    #[arg(long, value_name = "DUMP")]
    pub database: Option<PathBuf>,

    /// How long Open WebUI may take to become healthy afterwards [default: 30m]
    #[arg(long, env = "WEBUI_HEALTH_TIMEOUT", value_name = "DURATION")]
    pub health_timeout: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PullPolicy {
    /// Pull only images that are not present locally
    Missing,
    /// Pull every time (newer `:main` builds are picked up)
    Always,
    /// Never pull; fail when an image is missing
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NetworkMode {
    /// A user-defined bridge network; the port is published on 127.0.0.1 only
    Bridge,
    /// The host's network; Open WebUI listens on 127.0.0.1 only
    Host,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GpuMode {
    /// Use GPUs when the engine has an NVIDIA runtime or CDI devices
    Auto,
    /// Request every GPU; fail when the engine has no GPU runtime
    All,
    /// No GPUs
    None,
}

#[derive(Debug, Clone, Default, Args)]
pub struct StatusCmd {
    /// Machine-readable output (schema in the `webui::commands::status` docs)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogService {
    #[value(name = "open-webui")]
    OpenWebui,
    Ollama,
    /// `up --replicas`: the database
    Postgres,
    /// `up --replicas`: websockets and shared state
    Redis,
    /// `up --swarm`: the proxy service (single host: the `webui up` process's own log)
    Proxy,
    All,
}

#[derive(Debug, Clone, Default, Args)]
pub struct LogsCmd {
    /// Whose logs [default: all]
    #[arg(value_enum, value_name = "SERVICE")]
    pub service: Option<LogService>,

    /// Keep printing new lines as they come, through restarts and recreated containers
    /// (no line twice), until Ctrl-C or 10 s after the containers followed are gone
    #[arg(short, long)]
    pub follow: bool,

    /// Only the last N lines of each container (or `all`) [default: all]
    #[arg(short = 'n', long, value_name = "N")]
    pub tail: Option<String>,

    /// Only lines newer than this: a duration (10m, 2h) or a time (2024-05-01T12:00:00Z)
    #[arg(long, value_name = "DURATION|TIME")]
    pub since: Option<String>,

    /// Prefix each line with the time Docker received it
    #[arg(short, long)]
    pub timestamps: bool,

    /// With `up --replicas`: only this Open WebUI replica (1 is the first)
    #[arg(long, value_name = "K")]
    pub replica: Option<u32>,
}

#[derive(Debug, Clone, Default, Args)]
pub struct DownCmd {
    /// Also delete the data volumes and the secret key: every chat, user and setting
    #[arg(long)]
    pub purge_data: bool,

    /// Confirm --purge-data
    #[arg(long, requires = "purge_data")]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct ConfigCmd {
    #[command(subcommand)]
    pub action: ConfigAction,
}

#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Show the effective settings of the site and where each came from (flag, env, file,
    /// default)
    #[command(after_help = "Examples:\n  \
        webui config show\n  \
        WEBUI_MAX_BODY=100M webui config show --listen 127.0.0.1:8443 --json\n  \
        webui config show --json | jq '.settings[] | select(.source != \"default\")'\n\n\
        Takes the same flags and WEBUI_* variables as `webui proxy`, so a command line can be\n\
        checked before it is run. JSON: {\"settings\": [{\"key\", \"value\", \"source\"}],\n\
        \"config_file\", \"state_dir\"}; source is one of flag, env, file, default.")]
    Show(ConfigShowCmd),

    /// Write a commented webui.toml with every key and its default
    #[command(after_help = "Examples:\n  \
        webui config init\n  \
        webui --config /etc/webui/webui.toml config init --force\n\n\
        Writes to --config, else <state-dir>/webui.toml. Every key is commented out, so the\n\
        file changes nothing until a line is uncommented.")]
    Init(ConfigInitCmd),

    /// Print a site configuration for nginx, Apache or Caddy matching the current settings
    #[command(after_help = "Examples:\n  \
        # beside an nginx that already serves other sites on 80/443\n  \
        webui config export nginx --domain chat.example.com \\\n      \
        > /etc/nginx/sites-available/chat.example.com.conf\n  \
        # Apache with your own certificate, Open WebUI from `webui up --network host`\n  \
        webui config export apache --domain chat.example.com --upstream http://127.0.0.1:8080 \\\n      \
        --tls-cert /etc/ssl/chat/fullchain.pem --tls-key /etc/ssl/chat/privkey.pem\n  \
        webui config export caddy --domain chat.example.com --email admin@example.com\n\n\
        Settings come from flags, WEBUI_* variables and webui.toml as for `webui proxy`:\n\
        listen addresses, timeouts, --max-body, --trusted-proxy, --no-hsts, --no-http.\n\
        Certificates: certbot's /etc/letsencrypt/live/<domain>/ for nginx and Apache, Caddy's\n\
        own ACME for Caddy, or --tls-cert/--tls-key.")]
    Export(ConfigExportCmd),
}

#[derive(Debug, Args)]
pub struct ConfigShowCmd {
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,

    /// Where Open WebUI answers [default: where `webui up` publishes it, http://127.0.0.1:3000]
    #[arg(long, env = "WEBUI_UPSTREAM", value_name = "URL")]
    pub upstream: Option<String>,

    #[command(flatten)]
    pub proxy: ProxyArgs,
}

#[derive(Debug, Clone, Default, Args)]
pub struct ConfigInitCmd {
    /// Replace an existing file
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportServer {
    Nginx,
    Apache,
    Caddy,
}

#[derive(Debug, Args)]
pub struct ConfigExportCmd {
    /// The web server to write the configuration for
    #[arg(value_enum, value_name = "SERVER")]
    pub server: ExportServer,

    /// Where Open WebUI answers [default: where `webui up` publishes it, http://127.0.0.1:3000]
    #[arg(long, env = "WEBUI_UPSTREAM", value_name = "URL")]
    pub upstream: Option<String>,

    #[command(flatten)]
    pub proxy: ProxyArgs,
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
    /// Ask the running `webui up`/`webui proxy` to order the certificate now and wait
    /// for the result
    #[command(after_help = "Examples:\n  \
        webui cert renew\n  \
        webui cert renew --force --timeout 5m\n\n\
        Talks to the running webui over its control socket; without one it says so and\n\
        exits 1. Without --force, a certificate that is not yet due is left alone.")]
    Renew {
        /// Order even when the certificate is not due for renewal
        #[arg(long)]
        force: bool,
        /// How long to wait for the new certificate [default: 3m]
        #[arg(long, value_name = "DURATION")]
        timeout: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct ServiceCmd {
    #[command(subcommand)]
    pub action: ServiceAction,
}

#[derive(Debug, Subcommand)]
pub enum ServiceAction {
    /// Write the systemd unit and enable it (does not start it; `webui up -d` does)
    Install {
        /// Only write the unit file into this directory; do not call systemctl
        #[arg(long, value_name = "DIR")]
        unit_dir: Option<PathBuf>,
    },
    /// Stop and disable the service and remove its unit; the containers keep running
    Uninstall {
        /// Only remove the unit file from this directory; do not call systemctl
        #[arg(long, value_name = "DIR")]
        unit_dir: Option<PathBuf>,
    },
    /// Whether the service is enabled and running
    Status,
}

#[derive(Debug, Clone, Default, Args)]
pub struct VersionCmd {
    /// Say whether a newer release exists (asks the release URL, if one is configured)
    #[arg(long)]
    pub check: bool,

    /// Machine-readable output (schema in the `webui::commands::version` docs)
    #[arg(long)]
    pub json: bool,

    /// Where --check reads the latest release (a JSON document) [default: none: no
    /// check is made]
    #[arg(long, env = "WEBUI_RELEASE_URL", value_name = "URL")]
    pub release_url: Option<String>,
}

#[derive(Debug, Args)]
pub struct DoctorCmd {
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
    /// Ask this DNS server (IP:PORT) for the domains' A/AAAA records instead of the
    /// system's resolver, e.g. the authoritative server, or 1.1.1.1:53 to skip a stale
    /// local cache
    #[arg(long, env = "WEBUI_DNS_RESOLVER", value_name = "IP:PORT")]
    pub resolver: Option<String>,

    #[command(flatten)]
    pub proxy: ProxyArgs,
}
