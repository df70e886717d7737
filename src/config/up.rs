//! Resolves what `webui up` runs in Docker: the project name, images, networking,
//! Ollama and OpenAI connections, GPUs, extra environment, timeouts.
//!
//! Pure like `resolve`: flags (env already merged by clap) > config file > default.
//! Files named by flags (`--env-file`, `--openai-key-file`) are read by the command;
//! their text is checked here by [`parse_env_file`] and [`openai_key`].

use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;
use http::Uri;

use super::file::FileConfig;
use super::values;
use crate::cli::{GpuMode, NetworkMode, PullPolicy, UpCmd};
use crate::error::UserError;

pub const DEFAULT_IMAGE: &str = "ghcr.io/open-webui/open-webui:main";
pub const DEFAULT_OLLAMA_IMAGE: &str = "ollama/ollama:latest";
pub const DEFAULT_BRIDGE_PORT: u16 = 3000;
pub const DEFAULT_HOST_PORT: u16 = 8080;
pub const DEFAULT_AIOHTTP_TIMEOUT_SECS: u64 = 300;
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The project name reserved for "no --project" (names without a prefix).
pub const DEFAULT_PROJECT: &str = "default";

fn err(msg: impl Into<String>) -> anyhow::Error {
    UserError::new(msg).into()
}

/// Which instance of webui's containers a command works on. Without `--project` the
/// names are the Open WebUI docs' own (`open-webui`, `ollama`, network `webui`), so an
/// install made by hand is found; with `--project p` every name is `p-<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Project {
    name: Option<String>,
}

impl Project {
    /// Validates `--project`: lower-case letters, digits, `-` and `_`, starting with a
    /// letter or digit, at most 40 characters (Docker names must stay valid).
    pub fn resolve(flag: Option<&str>) -> anyhow::Result<Self> {
        let Some(raw) = flag.map(str::trim).filter(|s| !s.is_empty()) else {
            return Ok(Self::default());
        };
        if raw == DEFAULT_PROJECT {
            return Err(UserError::new(
                "--project default is the name of the unprefixed project; omit --project instead",
            )
            .into());
        }
        let valid = raw.len() <= 40
            && raw
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && raw
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !valid {
            return Err(UserError::new(format!(
                "--project `{raw}` is not a valid name; use lower-case letters, digits, `-` and `_` (at most 40), e.g. --project staging"
            ))
            .into());
        }
        Ok(Self {
            name: Some(raw.to_string()),
        })
    }

    pub fn named(name: &str) -> anyhow::Result<Self> {
        Self::resolve(Some(name))
    }

    /// The `--project` value, if any.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The value of the `webui.project` label and the state-dir key: the name, or
    /// `default`.
    pub fn key(&self) -> &str {
        self.name.as_deref().unwrap_or(DEFAULT_PROJECT)
    }

    /// `base` with the project prefix: `open-webui` or `p-open-webui`.
    pub fn prefixed(&self, base: &str) -> String {
        match &self.name {
            Some(p) => format!("{p}-{base}"),
            None => base.to_string(),
        }
    }

    /// ` --project p` for commands printed as hints, empty without a project.
    pub fn flag(&self) -> String {
        match &self.name {
            Some(p) => format!(" --project {p}"),
            None => String::new(),
        }
    }
}

/// Where Open WebUI finds Ollama.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OllamaMode {
    /// `--ollama`: run this image as a container on the project's network.
    Bundled { image: String },
    /// `--ollama-url`: an existing server.
    Url(String),
    /// Neither: use the host's Ollama if it answers on 127.0.0.1:11434.
    ProbeHost,
}

/// Everything `webui up` runs in Docker, resolved and validated.
#[derive(Debug, Clone, PartialEq)]
pub struct UpSettings {
    /// Full image reference with a tag (or digest).
    pub image: String,
    pub pull: PullPolicy,
    pub network: NetworkMode,
    /// The loopback port the proxy forwards to: published host port (bridge) or
    /// Open WebUI's own port (host).
    pub port: u16,
    pub ollama: OllamaMode,
    /// `OPENAI_API_BASE_URL`, without a trailing slash.
    pub openai_url: Option<String>,
    pub openai_key_file: Option<PathBuf>,
    pub gpu: GpuMode,
    /// `--env` entries in order (later ones win), already checked.
    pub env: Vec<(String, String)>,
    pub env_file: Option<PathBuf>,
    pub aiohttp_timeout_secs: u64,
    pub health_timeout: Duration,
    pub adopt: bool,
    /// The served Ollama API (`--ollama-only`, `--ollama-domain`), if any.
    pub serve_ollama: Option<ServeOllama>,
    /// `--ollama-token` / `--ollama-token-file`: the remote Ollama's bearer token.
    pub ollama_token: Option<TokenSource>,
    /// `--ollama-ca`: CA certificates (PEM) the forwarder trusts for the remote Ollama,
    /// besides the system's and the local CA.
    pub ollama_ca: Option<PathBuf>,
    /// `--replicas`: Open WebUI containers, 1 (today's single one) or more.
    pub replicas: u32,
    /// Images of Postgres and Redis (used with replicas > 1 or a Postgres database).
    /// Postgres: the default unless `postgres_image_set`; when not set, `up` keeps
    /// the image the existing container runs (its data directory belongs to that
    /// major version).
    pub postgres_image: String,
    pub postgres_image_set: bool,
    pub redis_image: String,
    /// `--backup-every`: backups made by the running `up`.
    pub backups: Option<BackupSchedule>,
    /// `--notify-url-file`: the webhook problems are sent to.
    pub notify_url_file: Option<PathBuf>,
}

/// `--backup-every`, `--backup-keep`, `--backup-dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSchedule {
    pub every: Duration,
    pub keep: usize,
    /// None: `<state-dir>/backups/scheduled`.
    pub dir: Option<PathBuf>,
}

/// How many scheduled backups are kept unless `--backup-keep` says otherwise.
pub const DEFAULT_BACKUP_KEEP: usize = 7;

/// An Ollama API served over HTTPS with a bearer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeOllama {
    /// `--ollama-only`: no Open WebUI, the whole site is the API.
    pub only: bool,
    /// `--ollama-domain`: the second name (None with `--ollama-only`).
    pub domain: Option<String>,
    /// Loopback port the bundled Ollama is published on for the proxy.
    pub port: u16,
    /// `--allow-origin`, without trailing `/`.
    pub origins: Vec<String>,
}

/// Where the remote Ollama's token comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    Value(String),
    File(PathBuf),
}

impl UpSettings {
    /// `http://127.0.0.1:PORT`: where Open WebUI answers on this host.
    pub fn upstream(&self) -> Uri {
        let port = match (&self.serve_ollama, &self.ollama) {
            // `--ollama-only --ollama-url`: the native Ollama itself.
            (Some(s), OllamaMode::Url(u)) if s.only => {
                return format!("{u}/")
                    .parse()
                    .unwrap_or_else(|_| Uri::from_static("http://127.0.0.1/"));
            }
            (Some(s), _) if s.only => s.port,
            _ => self.port,
        };
        // A u16 port on a literal address always parses.
        format!("http://127.0.0.1:{port}/")
            .parse()
            .unwrap_or_else(|_| Uri::from_static("http://127.0.0.1/"))
    }
}

fn pick<T: Clone>(cli: &Option<T>, file: &Option<T>) -> Option<T> {
    cli.clone().or_else(|| file.clone())
}

fn enum_value<T: ValueEnum>(key: &str, s: &str) -> anyhow::Result<T> {
    T::from_str(s.trim(), true).map_err(|_| {
        let names: Vec<String> = T::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value())
            .map(|v| v.get_name().to_string())
            .collect();
        err(format!("{key}: `{s}` is not one of: {}", names.join(", ")))
    })
}

/// Resolves `webui up`'s Docker settings. `cli` already holds env values.
pub fn up(cli: &UpCmd, file: &FileConfig) -> anyhow::Result<UpSettings> {
    up_settings(cli, file).map_err(|e| file.blame(e))
}

fn up_settings(cli: &UpCmd, file: &FileConfig) -> anyhow::Result<UpSettings> {
    let image = pick(&cli.image, &file.image).unwrap_or_else(|| DEFAULT_IMAGE.to_string());
    check_image("--image", &image)?;
    let image = match pick(&cli.version, &file.version) {
        Some(v) => with_version(&image, &v)?,
        None => image,
    };

    let pull = match (cli.pull, &file.pull) {
        (Some(p), _) => p,
        (None, Some(s)) => enum_value("pull", s)?,
        (None, None) => PullPolicy::Missing,
    };
    let network = match (cli.network, &file.network) {
        (Some(n), _) => n,
        (None, Some(s)) => enum_value("network", s)?,
        (None, None) => NetworkMode::Bridge,
    };
    let gpu = match (cli.gpu, &file.gpu) {
        (Some(g), _) => g,
        (None, Some(s)) => enum_value("gpu", s)?,
        (None, None) => GpuMode::Auto,
    };
    let port = pick(&cli.port, &file.port).unwrap_or(match network {
        NetworkMode::Bridge => DEFAULT_BRIDGE_PORT,
        NetworkMode::Host => DEFAULT_HOST_PORT,
    });
    if port == 0 {
        return Err(err("--port 0 is not a port; give e.g. --port 3000"));
    }

    // The Ollama choice is one setting: the command line's choice replaces the file's.
    let cli_choice = match (cli.ollama, &cli.ollama_url) {
        (Some(true), Some(_)) => {
            return Err(err(
                "--ollama and --ollama-url contradict each other; give one of them",
            ));
        }
        (Some(true), None) => Some(true),
        (_, Some(_)) => Some(false),
        (Some(false), None) => Some(false),
        (None, None) => None,
    };
    let ollama_image = pick(&cli.ollama_image, &file.ollama_image);
    let only = cli.ollama_only == Some(true);
    // A token means webui's own forwarder on this host talks to the URL, and so does
    // the proxy in front of a native Ollama: a host-side URL, loopback allowed.
    // The file's Ollama keys go with the file's choice: the command line's replaces all.
    let from_file = cli_choice.is_none() && !only;
    let file_token = file.ollama_token_file.as_ref().filter(|_| from_file);
    let host_side = only
        || cli.ollama_token.is_some()
        || cli.ollama_token_file.is_some()
        || file_token.is_some();
    let url_network = if host_side {
        NetworkMode::Host
    } else {
        network
    };
    let cli_choice = if only {
        Some(cli.ollama_url.is_none())
    } else {
        cli_choice
    };
    let ollama = match cli_choice {
        Some(true) => bundled(ollama_image)?,
        Some(false) => match &cli.ollama_url {
            Some(u) => OllamaMode::Url(service_url("--ollama-url", u, url_network)?),
            None => OllamaMode::ProbeHost,
        },
        None => match (file.ollama, &file.ollama_url) {
            (Some(true), Some(_)) => {
                return Err(err(
                    "config file: `ollama = true` and `ollama_url` contradict each other; keep one of them",
                ));
            }
            (Some(true), None) => bundled(ollama_image)?,
            (_, Some(u)) => OllamaMode::Url(service_url("ollama_url", u, url_network)?),
            _ => OllamaMode::ProbeHost,
        },
    };
    if cli.ollama_image.is_some() && !matches!(ollama, OllamaMode::Bundled { .. }) {
        return Err(err(
            "--ollama-image is only used with --ollama (the bundled Ollama container)",
        ));
    }

    let serve_ollama = serve_ollama(cli, &ollama)?;
    let ollama_token = ollama_token(cli, file_token, &ollama)?;
    let ollama_ca = match (&cli.ollama_ca, &file.ollama_ca) {
        (Some(f), _) => Some(f.clone()),
        (None, Some(f)) if from_file => Some(f.clone()),
        _ => None,
    };
    if ollama_ca.is_some() && ollama_token.is_none() {
        let what = match cli.ollama_ca {
            Some(_) => "--ollama-ca",
            None => "`ollama_ca` in the config file",
        };
        return Err(UserError::new(format!(
            "{what} is for the token-protected Ollama that webui's forwarder reaches (--ollama-url with --ollama-token-file)"
        ))
        .hint("webui up --ollama-url https://models.example.com --ollama-token-file /root/ollama.token --ollama-ca /root/models-ca.pem")
        .into());
    }

    let openai_url = match pick(&cli.openai_url, &file.openai_url) {
        Some(u) => Some(service_url("--openai-url", &u, network)?),
        None => None,
    };
    let openai_key_file = pick(&cli.openai_key_file, &file.openai_key_file);

    let env_list = if cli.env.is_empty() {
        file.env.clone().unwrap_or_default()
    } else {
        cli.env.clone()
    };
    let mut env = Vec::new();
    for entry in env_list {
        let (k, v) = entry.split_once('=').ok_or_else(|| {
            err(format!(
                "--env `{entry}` has no `=`; write it like --env ENABLE_SIGNUP=false"
            ))
        })?;
        check_env_key("--env", k)?;
        env.push((k.to_string(), v.to_string()));
    }

    let aiohttp_timeout_secs = match pick(&cli.aiohttp_timeout, &file.aiohttp_timeout) {
        Some(s) => {
            let d = values::duration("--aiohttp-timeout", &s).map_err(err)?;
            if d.as_secs() == 0 {
                return Err(err("--aiohttp-timeout must be at least 1s"));
            }
            d.as_secs()
        }
        None => DEFAULT_AIOHTTP_TIMEOUT_SECS,
    };
    let health_timeout = match pick(&cli.health_timeout, &file.health_timeout) {
        Some(s) => {
            let d = values::duration("--health-timeout", &s).map_err(err)?;
            if d.is_zero() {
                return Err(err("--health-timeout must be longer than 0s"));
            }
            d
        }
        None => DEFAULT_HEALTH_TIMEOUT,
    };

    let replicas = pick(&cli.replicas, &file.replicas).unwrap_or(1);
    if replicas == 0 || replicas > crate::docker::replicas::MAX_REPLICAS {
        return Err(err(format!(
            "--replicas {replicas} is out of range: give 1 (one Open WebUI, the default) up to {} on one host",
            crate::docker::replicas::MAX_REPLICAS
        )));
    }
    if replicas > 1 && network == NetworkMode::Host {
        return Err(UserError::new(format!(
            "--replicas {replicas} needs --network bridge: with the host network every replica would listen on the same port"
        ))
        .hint("drop --network host (replicas are published on 127.0.0.1 only), or run one replica")
        .into());
    }
    if replicas > 1 && serve_ollama.as_ref().is_some_and(|s| s.only) {
        return Err(err(
            "--replicas runs several Open WebUI containers; --ollama-only runs none",
        ));
    }
    if replicas > 1 && u32::from(port) + replicas - 1 > u32::from(u16::MAX) {
        return Err(err(format!(
            "--port {port} leaves no room for {replicas} replicas (they use --port, --port + 1, ...); pick a lower --port"
        )));
    }
    let postgres_image = pick(&cli.postgres_image, &file.postgres_image);
    let postgres_image_set = postgres_image.is_some();
    let postgres_image = postgres_image
        .unwrap_or_else(|| crate::docker::replicas::DEFAULT_POSTGRES_IMAGE.to_string());
    check_image("--postgres-image", &postgres_image)?;
    let redis_image = pick(&cli.redis_image, &file.redis_image)
        .unwrap_or_else(|| crate::docker::replicas::DEFAULT_REDIS_IMAGE.to_string());
    check_image("--redis-image", &redis_image)?;
    let backups = backup_schedule(cli, file, serve_ollama.as_ref())?;

    Ok(UpSettings {
        image,
        pull,
        network,
        port,
        ollama,
        openai_url,
        openai_key_file,
        gpu,
        env,
        env_file: pick(&cli.env_file, &file.env_file),
        aiohttp_timeout_secs,
        health_timeout,
        adopt: cli.adopt,
        serve_ollama,
        ollama_token,
        ollama_ca,
        replicas,
        postgres_image,
        postgres_image_set,
        redis_image,
        backups,
        notify_url_file: pick(&cli.notify_url_file, &file.notify_url_file),
    })
}

fn backup_schedule(
    cli: &UpCmd,
    file: &FileConfig,
    serve_ollama: Option<&ServeOllama>,
) -> anyhow::Result<Option<BackupSchedule>> {
    let keep = pick(&cli.backup_keep, &file.backup_keep);
    let dir = pick(&cli.backup_dir, &file.backup_dir);
    let Some(every) = pick(&cli.backup_every, &file.backup_every) else {
        // Flags that would do nothing are refused; the file may keep dormant values.
        if cli.backup_keep.is_some() || cli.backup_dir.is_some() {
            return Err(UserError::new(
                "--backup-keep and --backup-dir are for scheduled backups, which are off",
            )
            .hint("add --backup-every, e.g. --backup-every 1d (or `backup_every = \"1d\"` in webui.toml)")
            .into());
        }
        return Ok(None);
    };
    let every = values::duration("--backup-every", &every).map_err(UserError::new)?;
    if every.is_zero() {
        return Err(UserError::new("--backup-every must be longer than 0s")
            .hint("e.g. --backup-every 1d; leave it out for no scheduled backups")
            .into());
    }
    let keep = keep.unwrap_or(DEFAULT_BACKUP_KEEP);
    if keep == 0 {
        return Err(UserError::new("--backup-keep 0 would delete each backup once made")
            .hint("keep at least 1 (default 7); leave out --backup-every for no scheduled backups")
            .into());
    }
    if serve_ollama.is_some_and(|s| s.only) {
        return Err(UserError::new(
            "--backup-every backs up Open WebUI's data; --ollama-only runs no Open WebUI",
        )
        .hint("drop --backup-every on the Ollama box")
        .into());
    }
    Ok(Some(BackupSchedule { every, keep, dir }))
}

/// `--ollama-only`, `--ollama-domain`, `--ollama-port`, `--allow-origin`.
fn serve_ollama(cli: &UpCmd, ollama: &OllamaMode) -> anyhow::Result<Option<ServeOllama>> {
    let only = cli.ollama_only == Some(true);
    let domain = match &cli.ollama_domain {
        None => None,
        Some(_) if only => {
            return Err(err(
                "--ollama-domain is for one box serving both Open WebUI and Ollama; with --ollama-only give the name with --domain",
            ));
        }
        Some(_) if !matches!(ollama, OllamaMode::Bundled { .. }) => {
            return Err(UserError::new(
                "--ollama-domain serves the bundled Ollama's API, so it needs --ollama",
            )
            .hint("webui up --domain chat.example.com --ollama --ollama-domain models.example.com")
            .into());
        }
        Some(d) => {
            Some(values::domain(d).map_err(|e| err(e.replace("--domain", "--ollama-domain")))?)
        }
    };
    let serving = only || domain.is_some();
    if !serving {
        if !cli.allow_origin.is_empty() {
            return Err(err(
                "--allow-origin sets who may call a served Ollama API; it needs --ollama-only or --ollama-domain",
            ));
        }
        if cli.ollama_port.is_some() {
            return Err(err(
                "--ollama-port is the loopback port of a served Ollama API; it needs --ollama-only or --ollama-domain",
            ));
        }
        return Ok(None);
    }
    let port = cli
        .ollama_port
        .unwrap_or(super::super::docker::spec::OLLAMA_PORT);
    if port == 0 {
        return Err(err(
            "--ollama-port 0 is not a port; give e.g. --ollama-port 11434",
        ));
    }
    if only && matches!(ollama, OllamaMode::Url(_)) && cli.ollama_port.is_some() {
        return Err(err(
            "--ollama-port is where webui publishes its own Ollama container; with --ollama-url the port is the URL's",
        ));
    }
    let mut origins = Vec::new();
    for o in &cli.allow_origin {
        origins.push(origin(o)?);
    }
    Ok(Some(ServeOllama {
        only,
        domain,
        port,
        origins,
    }))
}

/// A browser origin: `https://chat.example.com[:port]`, or `*`.
pub fn origin(s: &str) -> anyhow::Result<String> {
    let t = s.trim().trim_end_matches('/');
    if t == "*" {
        return Ok(t.to_string());
    }
    let bad = || {
        err(format!(
            "--allow-origin `{s}` is not an origin; write it like --allow-origin https://chat.example.com (scheme, host, optional port, no path)"
        ))
    };
    let uri: Uri = t.parse().map_err(|_| bad())?;
    let path_ok = uri
        .path_and_query()
        .is_none_or(|p| p.as_str().is_empty() || p.as_str() == "/");
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() || !path_ok {
        return Err(bad());
    }
    Ok(t.to_ascii_lowercase())
}

/// `--ollama-token` / `--ollama-token-file`: only with `--ollama-url`, and never sent in
/// clear text beyond this host.
/// `file_token`: the file's `ollama_token_file` when the file's `ollama_url` is the choice.
fn ollama_token(
    cli: &UpCmd,
    file_token: Option<&PathBuf>,
    ollama: &OllamaMode,
) -> anyhow::Result<Option<TokenSource>> {
    let source = match (&cli.ollama_token, &cli.ollama_token_file) {
        (Some(t), _) if t.trim().is_empty() => {
            return Err(err(
                "--ollama-token is empty; give the token `webui token show` prints on the Ollama server",
            ));
        }
        (Some(_), _) if cli.detach => {
            return Err(UserError::new(
                "--ollama-token with -d would write the token into the systemd unit (and an environment value would not reach the service)",
            )
            .hint("put the token in a file (chmod 600) and give --ollama-token-file FILE")
            .into());
        }
        (Some(t), _) => TokenSource::Value(t.trim().to_string()),
        (None, Some(f)) => TokenSource::File(f.clone()),
        (None, None) => match file_token {
            Some(f) => TokenSource::File(f.clone()),
            None => return Ok(None),
        },
    };
    let OllamaMode::Url(url) = ollama else {
        let what = match (&cli.ollama_token, &cli.ollama_token_file) {
            (None, None) => {
                "`ollama_token_file` in the config file is for a remote Ollama given with `ollama_url` there"
            }
            _ => "--ollama-token is for a remote Ollama given with --ollama-url",
        };
        return Err(UserError::new(what)
            .hint("webui up --ollama-url https://models.example.com --ollama-token-file /root/ollama.token")
            .into());
    };
    let uri: Uri = url
        .parse()
        .map_err(|_| err(format!("--ollama-url `{url}` is not a URL")))?;
    let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if uri.scheme_str() != Some("https") && !loopback {
        return Err(UserError::new(format!(
            "--ollama-url `{url}` is plain http: the token would cross the network in clear text"
        ))
        .hint("use the https:// address of the Ollama server (`webui up --ollama-only --domain NAME` serves one)")
        .into());
    }
    Ok(Some(source))
}

/// The token's text from a `--ollama-token-file` file.
pub fn token_text(text: &str, origin: &str) -> anyhow::Result<String> {
    let t = text.trim();
    if t.is_empty() || t.contains(char::is_whitespace) {
        return Err(err(format!(
            "{origin} must hold just the token (one word, as `webui token show` prints it)"
        )));
    }
    Ok(t.to_string())
}

fn bundled(image: Option<String>) -> anyhow::Result<OllamaMode> {
    let image = image.unwrap_or_else(|| DEFAULT_OLLAMA_IMAGE.to_string());
    check_image("--ollama-image", &image)?;
    Ok(OllamaMode::Bundled { image })
}

/// An image reference: no spaces, no scheme, something before any tag.
pub fn check_image(key: &str, image: &str) -> anyhow::Result<()> {
    let bad = |why: &str| {
        err(format!(
            "{key} `{image}` {why}; write it like ghcr.io/open-webui/open-webui:main"
        ))
    };
    if image.is_empty() {
        return Err(bad("is empty"));
    }
    if image.contains("://") {
        return Err(bad("is a URL, not an image reference"));
    }
    if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("contains spaces"));
    }
    let (repo, _) = split_tag(image);
    if repo.is_empty() || repo.ends_with('/') || repo.starts_with('/') {
        return Err(bad("has no repository name"));
    }
    if repo.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(bad("has upper-case letters in its repository name"));
    }
    Ok(())
}

/// Splits `repo[:tag][@digest]` into the repository and the rest (`:tag`, `@digest`
/// or empty). A `:` before the last `/` is a registry port, not a tag.
pub fn split_tag(image: &str) -> (&str, &str) {
    if let Some(at) = image.find('@') {
        let (before, digest) = image.split_at(at);
        let (repo, tag) = split_tag(before);
        if tag.is_empty() {
            return (repo, digest);
        }
        // repo:tag@digest: keep both as "the rest".
        return (repo, &image[repo.len()..]);
    }
    let slash = image.rfind('/').map(|i| i + 1).unwrap_or(0);
    match image[slash..].rfind(':') {
        Some(i) => image.split_at(slash + i),
        None => (image, ""),
    }
}

/// `--version v0.6.5` on `ghcr.io/open-webui/open-webui:main` ->
/// `ghcr.io/open-webui/open-webui:v0.6.5`.
pub fn with_version(image: &str, version: &str) -> anyhow::Result<String> {
    let v = version.trim();
    let digits = v.strip_prefix('v').unwrap_or(v);
    let looks_like_version = digits
        .split(['.', '-', '+'])
        .next()
        .is_some_and(|major| !major.is_empty() && major.chars().all(|c| c.is_ascii_digit()))
        && digits.contains('.')
        && digits
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+' | '_'));
    if !looks_like_version {
        return Err(err(format!(
            "--version `{version}` is not a release version; write it like --version v0.6.5 (or pick a tag with --image)"
        )));
    }
    let (repo, rest) = split_tag(image);
    if rest.contains('@') {
        return Err(err(format!(
            "--image `{image}` is pinned by digest; --version cannot change it, give one of them"
        )));
    }
    Ok(format!("{repo}:{}", v.replace('+', "_")))
}

/// A URL Open WebUI calls (Ollama, OpenAI-compatible): http(s), with a host, no
/// query, trailing `/` dropped (Ollama answers 404 to `//api/...`). In bridge mode a
/// loopback host would be the container itself, which is refused with the fix.
pub fn service_url(key: &str, s: &str, network: NetworkMode) -> anyhow::Result<String> {
    let form = "write it like http://192.168.1.20:11434";
    let uri: Uri = s
        .trim()
        .parse()
        .map_err(|_| err(format!("{key} `{s}` is not a URL; {form}")))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => {
            return Err(err(format!(
                "{key} `{s}` must start with http:// or https://; {form}"
            )));
        }
    }
    let Some(host) = uri.host().filter(|h| !h.is_empty()) else {
        return Err(err(format!("{key} `{s}` has no host; {form}")));
    };
    if uri.query().is_some() {
        return Err(err(format!(
            "{key} `{s}` has a query string; give only scheme, host, port and path"
        )));
    }
    let loopback = host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback && network == NetworkMode::Bridge {
        let port = uri.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
        return Err(UserError::new(format!(
            "{key} `{s}` points at the container itself: inside Open WebUI's container, {host} is the container, not this host"
        ))
        .hint(format!(
            "use http://host.docker.internal{port} (webui maps it to this host; the server must listen on an address containers reach), or --network host"
        ))
        .into());
    }
    Ok(s.trim().trim_end_matches('/').to_string())
}

/// Environment names Open WebUI's container gets from webui itself; overriding them
/// would break the loopback-only listening or the secret handling.
fn reserved(key: &str) -> Option<&'static str> {
    match key {
        "HOST" | "PORT" => Some(
            "it is set by webui from --network and --port so Open WebUI listens where the proxy expects it; use --port",
        ),
        "WEBUI_SECRET_KEY" | "WEBUI_JWT_SECRET_KEY" => Some(
            "the key is generated once and kept in <state-dir>/projects/<project>/secret_key; to use your own, write it into that file (mode 0600)",
        ),
        _ => None,
    }
}

/// An environment variable name: letters, digits, `_`, not starting with a digit.
pub fn check_env_key(origin: &str, key: &str) -> anyhow::Result<()> {
    let valid = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(err(format!(
            "{origin}: `{key}` is not an environment variable name (letters, digits and `_`)"
        )));
    }
    if let Some(why) = reserved(key) {
        return Err(err(format!("{origin}: {key} cannot be set: {why}")));
    }
    Ok(())
}

/// Parses an env file like `docker run --env-file`: `KEY=VALUE` lines, taken
/// literally (no quotes removed), blank lines and `#` comments skipped.
pub fn parse_env_file(text: &str, origin: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let where_ = format!("{origin} line {}", i + 1);
        let Some((k, v)) = trimmed.split_once('=') else {
            return Err(err(format!(
                "{where_}: `{}` has no `=`; write KEY=VALUE",
                trimmed.trim_end()
            )));
        };
        check_env_key(&where_, k)?;
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

/// The OpenAI API key from its file: the first line, trimmed; empty is an error.
pub fn openai_key(text: &str, origin: &str) -> anyhow::Result<String> {
    let key = text.lines().next().unwrap_or("").trim();
    if key.is_empty() {
        return Err(err(format!("--openai-key-file {origin} is empty")));
    }
    if key.chars().any(char::is_control) {
        return Err(err(format!(
            "--openai-key-file {origin} holds control characters; it must contain just the key"
        )));
    }
    Ok(key.to_string())
}

/// The admin account `webui up` creates when Open WebUI has none (PITFALLS 15).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    pub email: String,
    pub name: String,
}

pub const DEFAULT_ADMIN_NAME: &str = "Administrator";

/// `--admin-email` (env `WEBUI_ADMIN_EMAIL`) > `admin_email` > `admin@<first domain>`
/// (`admin@localhost` without a domain; Open WebUI accepts that address). `domains`
/// are the resolved ones of `resolve::proxy`.
pub fn admin(cli: &UpCmd, file: &FileConfig, domains: &[String]) -> anyhow::Result<AdminSettings> {
    let email = match pick(&cli.admin_email, &file.admin_email) {
        Some(e) => {
            let e = e.trim().to_lowercase();
            check_email(&e)?;
            e
        }
        None => format!(
            "admin@{}",
            domains.first().map_or("localhost", String::as_str)
        ),
    };
    let name = pick(&cli.admin_name, &file.admin_name)
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| DEFAULT_ADMIN_NAME.to_string());
    if name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(err(
            "--admin-name must be a display name of at most 100 printable characters",
        ));
    }
    Ok(AdminSettings { email, name })
}

fn check_email(e: &str) -> anyhow::Result<()> {
    let ok = match e.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && e.len() <= 254
                && !e.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(UserError::new(format!("--admin-email `{e}` is not an email address"))
            .hint("give the address the admin signs in with, e.g. --admin-email admin@chat.example.com")
            .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_email_from_flag_file_or_domain() {
        let none = UpCmd::default();
        let a = admin(&none, &FileConfig::default(), &["chat.example.com".into()]).unwrap();
        assert_eq!(a.email, "admin@chat.example.com");
        assert_eq!(a.name, DEFAULT_ADMIN_NAME);
        let a = admin(&none, &FileConfig::default(), &[]).unwrap();
        assert_eq!(a.email, "admin@localhost");
        let f = file("admin_email = \"ops@example.org\"\nadmin_name = \"Ops\"\n");
        let a = admin(&none, &f, &["x.example".into()]).unwrap();
        assert_eq!(
            (a.email.as_str(), a.name.as_str()),
            ("ops@example.org", "Ops")
        );
        let flag = UpCmd {
            admin_email: Some(" Boss@Example.org ".into()),
            ..UpCmd::default()
        };
        assert_eq!(admin(&flag, &f, &[]).unwrap().email, "boss@example.org");
        for bad in ["admin", "@x.org", "a@", "a b@x.org", "a@b@c", "a@.x"] {
            let c = UpCmd {
                admin_email: Some(bad.into()),
                ..UpCmd::default()
            };
            let e = admin(&c, &FileConfig::default(), &[]).unwrap_err();
            assert!(e.to_string().contains("not an email address"), "{bad}: {e}");
        }
    }

    fn file(text: &str) -> FileConfig {
        FileConfig::parse(text, std::path::Path::new("t.toml")).unwrap()
    }

    fn msg(e: anyhow::Error) -> String {
        assert_eq!(crate::error::exit_code(&e), 1, "{e:#}");
        crate::error::render(&e)
    }

    #[test]
    fn defaults() {
        let s = up(&UpCmd::default(), &FileConfig::default()).unwrap();
        assert_eq!(s.image, DEFAULT_IMAGE);
        assert_eq!(s.pull, PullPolicy::Missing);
        assert_eq!(s.network, NetworkMode::Bridge);
        assert_eq!(s.port, 3000);
        assert_eq!(s.ollama, OllamaMode::ProbeHost);
        assert_eq!(s.gpu, GpuMode::Auto);
        assert_eq!(s.aiohttp_timeout_secs, 300);
        assert_eq!(s.health_timeout, Duration::from_secs(1800));
        assert_eq!(s.upstream().to_string(), "http://127.0.0.1:3000/");
        let host = UpCmd {
            network: Some(NetworkMode::Host),
            ..Default::default()
        };
        assert_eq!(up(&host, &FileConfig::default()).unwrap().port, 8080);
    }

    #[test]
    fn the_files_ollama_token_and_ca_go_with_its_ollama_url() {
        let f = file(
            "ollama_url = \"https://models.example.com\"\nollama_token_file = \"/etc/webui/t\"\nollama_ca = \"/etc/webui/ca.pem\"\n",
        );
        let s = up(&UpCmd::default(), &f).unwrap();
        assert_eq!(
            s.ollama_token,
            Some(TokenSource::File("/etc/webui/t".into()))
        );
        assert_eq!(s.ollama_ca, Some(PathBuf::from("/etc/webui/ca.pem")));
        // The command line's Ollama choice replaces the file's, token and CA too.
        let bundled = UpCmd {
            ollama: Some(true),
            ..UpCmd::default()
        };
        let s = up(&bundled, &f).unwrap();
        assert_eq!((s.ollama_token, s.ollama_ca), (None, None));
        // A token flag goes with the file's URL; a CA flag needs a token.
        let flag = UpCmd {
            ollama_token_file: Some("/root/t".into()),
            ..UpCmd::default()
        };
        let s = up(&flag, &f).unwrap();
        assert_eq!(s.ollama_token, Some(TokenSource::File("/root/t".into())));
        assert_eq!(
            s.ollama,
            OllamaMode::Url("https://models.example.com".into())
        );
        let lone_ca = UpCmd {
            ollama_url: Some("https://models.example.com".into()),
            ollama_ca: Some("/root/ca.pem".into()),
            ..UpCmd::default()
        };
        let m = msg(up(&lone_ca, &FileConfig::default()).unwrap_err());
        assert!(
            m.contains("--ollama-ca is for") && m.contains("hint:"),
            "{m}"
        );
        let m = msg(up(&UpCmd::default(), &file("ollama_token_file = \"/t\"\n")).unwrap_err());
        assert!(m.contains("`ollama_token_file` in the config file"), "{m}");
        let m = msg(up(&UpCmd::default(), &file("ollama_ca = \"/c\"\n")).unwrap_err());
        assert!(m.contains("`ollama_ca` in the config file"), "{m}");
    }

    #[test]
    fn cli_beats_file() {
        let f = file(
            "image = \"r.example/x:1\"\nport = 4000\nnetwork = \"host\"\npull = \"always\"\nenv = [\"A=1\"]\n",
        );
        let s = up(&UpCmd::default(), &f).unwrap();
        assert_eq!(
            (s.image.as_str(), s.port, s.network, s.pull),
            ("r.example/x:1", 4000, NetworkMode::Host, PullPolicy::Always)
        );
        assert_eq!(s.env, vec![("A".into(), "1".into())]);
        let cli = UpCmd {
            port: Some(5000),
            network: Some(NetworkMode::Bridge),
            env: vec!["B=2".into()],
            ..Default::default()
        };
        let s = up(&cli, &f).unwrap();
        assert_eq!((s.port, s.network), (5000, NetworkMode::Bridge));
        assert_eq!(
            s.env,
            vec![("B".into(), "2".into())],
            "CLI list replaces file list"
        );
        let e = up(&UpCmd::default(), &file("gpu = \"some\"\n")).unwrap_err();
        assert!(msg(e).contains("auto, all, none"));
    }

    #[test]
    fn versions_pick_the_tag() {
        assert_eq!(
            with_version(DEFAULT_IMAGE, "v0.6.5").unwrap(),
            "ghcr.io/open-webui/open-webui:v0.6.5"
        );
        assert_eq!(
            with_version("127.0.0.1:5000/w/o:v1", "0.6.5").unwrap(),
            "127.0.0.1:5000/w/o:0.6.5"
        );
        assert_eq!(
            with_version("localhost:5000/o", "v1.2").unwrap(),
            "localhost:5000/o:v1.2"
        );
        assert!(msg(with_version(DEFAULT_IMAGE, "latest").unwrap_err()).contains("v0.6.5"));
        assert!(msg(with_version("o@sha256:abc", "v1.0.0").unwrap_err()).contains("digest"));
    }

    #[test]
    fn image_references() {
        assert_eq!(split_tag("a/b:c"), ("a/b", ":c"));
        assert_eq!(split_tag("h:5000/b"), ("h:5000/b", ""));
        assert_eq!(
            split_tag("h:5000/b:t@sha256:1"),
            ("h:5000/b", ":t@sha256:1")
        );
        assert!(check_image("--image", "https://ghcr.io/x").is_err());
        assert!(check_image("--image", "Open/WebUI").is_err());
        assert!(check_image("--image", "a b").is_err());
        assert!(check_image("--image", "ollama/ollama").is_ok());
    }

    #[test]
    fn served_ollama_and_remote_tokens() {
        let only = UpCmd {
            ollama_only: Some(true),
            allow_origin: vec!["https://Chat.example.com/".into()],
            ..UpCmd::default()
        };
        let s = up(&only, &FileConfig::default()).unwrap();
        let served = s.serve_ollama.clone().unwrap();
        assert!(served.only && served.domain.is_none());
        assert_eq!(served.port, 11434);
        assert_eq!(served.origins, vec!["https://chat.example.com"]);
        assert!(matches!(s.ollama, OllamaMode::Bundled { .. }));
        assert_eq!(s.upstream().to_string(), "http://127.0.0.1:11434/");

        // A native Ollama on this host's loopback is fine for --ollama-only.
        let native = UpCmd {
            ollama_only: Some(true),
            ollama_url: Some("http://127.0.0.1:11434/".into()),
            ..UpCmd::default()
        };
        let s = up(&native, &FileConfig::default()).unwrap();
        assert_eq!(s.upstream().to_string(), "http://127.0.0.1:11434/");

        let remote = |url: &str, detach: bool| UpCmd {
            ollama_url: Some(url.into()),
            ollama_token: Some("t0k".into()),
            detach,
            ..UpCmd::default()
        };
        let none = FileConfig::default();
        let s = up(&remote("https://models.example.com", false), &none).unwrap();
        assert_eq!(s.ollama_token, Some(TokenSource::Value("t0k".into())));
        // Loopback http is this host: no clear text on the network.
        assert!(up(&remote("http://127.0.0.1:8443", false), &none).is_ok());
        for (cli, needle) in [
            (remote("http://10.0.0.5:11434", false), "clear text"),
            (remote("https://models.example.com", true), "systemd unit"),
        ] {
            let e = format!("{:#}", up(&cli, &none).unwrap_err());
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn ollama_modes() {
        let cli = UpCmd {
            ollama: Some(true),
            ollama_image: Some("r/ollama:1".into()),
            ..Default::default()
        };
        assert_eq!(
            up(&cli, &FileConfig::default()).unwrap().ollama,
            OllamaMode::Bundled {
                image: "r/ollama:1".into()
            }
        );
        let cli = UpCmd {
            ollama_url: Some("http://10.0.0.5:11434/".into()),
            ..Default::default()
        };
        let f = file("ollama = true\n");
        assert_eq!(
            up(&cli, &f).unwrap().ollama,
            OllamaMode::Url("http://10.0.0.5:11434".into()),
            "the command line's choice replaces the file's, trailing slash dropped"
        );
        assert!(matches!(
            up(&UpCmd::default(), &f).unwrap().ollama,
            OllamaMode::Bundled { .. }
        ));
        let cli = UpCmd {
            ollama_image: Some("x".into()),
            ..Default::default()
        };
        assert!(msg(up(&cli, &FileConfig::default()).unwrap_err()).contains("--ollama"));
    }

    #[test]
    fn loopback_urls_are_refused_in_bridge_mode_only() {
        let e = service_url(
            "--ollama-url",
            "http://localhost:11434",
            NetworkMode::Bridge,
        )
        .unwrap_err();
        let m = msg(e);
        assert!(
            m.contains("container itself") && m.contains("host.docker.internal:11434"),
            "{m}"
        );
        assert!(
            service_url(
                "--openai-url",
                "http://127.0.0.1:8000/v1",
                NetworkMode::Bridge
            )
            .is_err()
        );
        assert_eq!(
            service_url(
                "--openai-url",
                "http://127.0.0.1:8000/v1/",
                NetworkMode::Host
            )
            .unwrap(),
            "http://127.0.0.1:8000/v1"
        );
        assert!(service_url("k", "ftp://x", NetworkMode::Host).is_err());
        assert!(service_url("k", "10.0.0.1:11434", NetworkMode::Host).is_err());
    }

    #[test]
    fn env_entries_are_checked() {
        let cli = UpCmd {
            env: vec!["FOO=a=b".into(), "EMPTY=".into()],
            ..Default::default()
        };
        assert_eq!(
            up(&cli, &FileConfig::default()).unwrap().env,
            vec![
                ("FOO".into(), "a=b".into()),
                ("EMPTY".into(), String::new())
            ]
        );
        for (entry, needle) in [
            ("NOEQUALS", "no `=`"),
            ("1X=1", "not an environment variable"),
            ("PORT=9", "--port"),
            ("WEBUI_SECRET_KEY=x", "secret_key"),
        ] {
            let cli = UpCmd {
                env: vec![entry.into()],
                ..Default::default()
            };
            let m = msg(up(&cli, &FileConfig::default()).unwrap_err());
            assert!(m.contains(needle), "{entry}: {m}");
        }
    }

    #[test]
    fn env_files() {
        let text = "# comment\n\nA=1\nB = x\nC=\"quoted\"\n  D=2\n";
        let m = msg(parse_env_file(text, "f.env").unwrap_err());
        assert!(
            m.contains("line 4") && m.contains("`B `"),
            "like docker: no spaces around the key: {m}"
        );
        let text = "# comment\n\nA=1\nC=\"quoted\"\n  D=2 \n";
        assert_eq!(
            parse_env_file(text, "f.env").unwrap(),
            vec![
                ("A".into(), "1".into()),
                ("C".into(), "\"quoted\"".into()),
                ("D".into(), "2 ".into())
            ]
        );
        let m = msg(parse_env_file("A=1\nbroken\n", "f.env").unwrap_err());
        assert!(m.contains("f.env line 2"), "{m}");
        let m = msg(parse_env_file("HOST=0.0.0.0\n", "f.env").unwrap_err());
        assert!(m.contains("HOST"), "{m}");
    }

    #[test]
    fn openai_keys() {
        assert_eq!(openai_key("sk-abc\n", "k").unwrap(), "sk-abc");
        assert!(openai_key("\n", "k").is_err());
    }

    #[test]
    fn projects() {
        let p = Project::resolve(Some("t-a_1")).unwrap();
        assert_eq!(p.prefixed("open-webui"), "t-a_1-open-webui");
        assert_eq!(p.key(), "t-a_1");
        let d = Project::resolve(None).unwrap();
        assert_eq!(d.prefixed("open-webui"), "open-webui");
        assert_eq!(d.key(), "default");
        assert_eq!(Project::resolve(Some("")).unwrap(), d);
        for bad in ["default", "Big", "-x", "a b", "a.b"] {
            assert!(Project::resolve(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn timeouts() {
        let cli = UpCmd {
            aiohttp_timeout: Some("10m".into()),
            health_timeout: Some("90s".into()),
            ..Default::default()
        };
        let s = up(&cli, &FileConfig::default()).unwrap();
        assert_eq!(
            (s.aiohttp_timeout_secs, s.health_timeout),
            (600, Duration::from_secs(90))
        );
        let cli = UpCmd {
            health_timeout: Some("0s".into()),
            ..Default::default()
        };
        assert!(up(&cli, &FileConfig::default()).is_err());
    }

    #[test]
    fn backup_schedules() {
        let none = up(&UpCmd::default(), &FileConfig::default()).unwrap();
        assert_eq!(none.backups, None);
        let cli = UpCmd {
            backup_every: Some("12h".into()),
            ..Default::default()
        };
        assert_eq!(
            up(&cli, &FileConfig::default()).unwrap().backups,
            Some(BackupSchedule {
                every: Duration::from_secs(12 * 3600),
                keep: DEFAULT_BACKUP_KEEP,
                dir: None
            })
        );
        let s = up(
            &UpCmd::default(),
            &file("backup_every = \"1d\"\nbackup_keep = 3\nbackup_dir = \"b\"\n"),
        )
        .unwrap();
        assert_eq!(
            s.backups,
            Some(BackupSchedule {
                every: Duration::from_secs(86_400),
                keep: 3,
                dir: Some("b".into())
            }),
            "relative to the file's directory (here none)"
        );
        // A file may hold dormant values; flags that would do nothing are refused.
        assert_eq!(
            up(&UpCmd::default(), &file("backup_keep = 3\n"))
                .unwrap()
                .backups,
            None
        );
        let m = msg(up(
            &UpCmd {
                backup_keep: Some(3),
                ..Default::default()
            },
            &FileConfig::default(),
        )
        .unwrap_err());
        assert!(m.contains("--backup-every 1d"), "{m}");
        for (every, keep, needle) in [
            ("0s", None, "longer than 0s"),
            ("soon", None, "--backup-every"),
            ("1d", Some(0), "--backup-keep 0"),
        ] {
            let cli = UpCmd {
                backup_every: Some(every.into()),
                backup_keep: keep,
                ..Default::default()
            };
            let m = msg(up(&cli, &FileConfig::default()).unwrap_err());
            assert!(m.contains(needle), "{every}: {m}");
        }
        let cli = UpCmd {
            backup_every: Some("1d".into()),
            ollama_only: Some(true),
            ..Default::default()
        };
        let m = msg(up(&cli, &FileConfig::default()).unwrap_err());
        assert!(m.contains("--ollama-only runs no Open WebUI"), "{m}");
    }
}
