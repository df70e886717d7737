//! What webui asks Docker to create, as pure functions of the settings: names,
//! labels, environment, mounts, networking, the spec hash. Unit-tested without Docker.
//!
//! # Names
//! The Open WebUI docs' names, so an existing install is found: container and volume
//! `open-webui` (mounted at `/app/backend/data`), container and volume `ollama`
//! (`/root/.ollama`), bridge network `webui`. `--project p` prefixes each: `p-webui`.
//! The bundled Ollama has the network alias `ollama` on the project's network, so
//! `OLLAMA_BASE_URL=http://ollama:11434` is the same in every project.
//!
//! # Labels
//! - `webui.managed=true` on everything webui creates (containers, volumes, network);
//! - `webui.project=<project>` (`default` without `--project`);
//! - `webui.role=open-webui|ollama` on containers and volumes;
//! - `webui.spec-hash`: SHA-256 (first 32 hex digits) of the whole [`ContainerSpec`],
//!   secrets and the image id included. Same hash -> the container is kept as is;
//!   different -> recreated;
//! - `webui.spec`: the spec as a flat JSON object with secret values replaced by a
//!   short hash, so a recreate can print what changed;
//! - `webui.upstream=http://127.0.0.1:PORT` on Open WebUI: where it answers on the host;
//! - `webui.image-digest`: the repository digest of the image that was run.
//!
//! # Networking
//! - bridge (default): container port 8080 published on 127.0.0.1:`--port` only;
//! - host: nothing published, `HOST=127.0.0.1` and `PORT=--port`, so Open WebUI
//!   listens on loopback only. A bundled Ollama then also uses the host network with
//!   `OLLAMA_HOST=127.0.0.1:11434`.
//!
//! Ollama's port is never published, except on 127.0.0.1 for the proxy when its API is
//! served (`--ollama-only`, `--ollama-domain`; [`served_ollama`]).
//!
//! # Open WebUI's environment
//! `WEBUI_URL` (public https URL), `WEBUI_SECRET_KEY` (generated once, kept in the
//! state dir), `CORS_ALLOW_ORIGIN` (the `https://` origin of each `--domain`; left at
//! Open WebUI's default `*` without a domain, since the names a LAN box is reached by
//! are unknown), `WEBUI_SESSION_COOKIE_SECURE=true`, `WEBUI_AUTH_COOKIE_SECURE=true`
//! (the site is only served over TLS), `ENABLE_WEBSOCKET_SUPPORT=true`,
//! `AIOHTTP_CLIENT_TIMEOUT`, `OLLAMA_BASE_URL`, `OPENAI_API_BASE_URL` /
//! `OPENAI_API_KEY`, then the user's `--env-file` and `--env` entries (later wins).
//!
//! # PersistentConfig
//! Open WebUI copies `WEBUI_URL`, `OLLAMA_BASE_URL(S)` and the OpenAI URLs/keys into
//! its database on first start and ignores the variables afterwards, unless
//! `ENABLE_PERSISTENT_CONFIG=false`, which makes the environment win on *every* start
//! and so silently throws away whatever the admin changed in the admin panel at each
//! restart or update. webui leaves `ENABLE_PERSISTENT_CONFIG` at Open WebUI's default
//! (true) and instead detects a change of these values ([`persistent_values`]) and
//! tells the user where to change them (Admin Panel > Settings), or to pass
//! `--env ENABLE_PERSISTENT_CONFIG=false` if they want the environment to rule.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};

use bollard::models::{
    ContainerCreateBody, DeviceRequest, EndpointSettings, HostConfig, Mount, MountType,
    NetworkCreateRequest, NetworkingConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum,
    VolumeCreateRequest,
};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::Role;
use crate::cli::NetworkMode;
use crate::config::up::{Project, UpSettings};

pub const LABEL_MANAGED: &str = "webui.managed";
pub const LABEL_PROJECT: &str = "webui.project";
pub const LABEL_ROLE: &str = "webui.role";
pub const LABEL_HASH: &str = "webui.spec-hash";
pub const LABEL_SPEC: &str = "webui.spec";
pub const LABEL_UPSTREAM: &str = "webui.upstream";
pub const LABEL_DIGEST: &str = "webui.image-digest";

pub const OPENWEBUI_DATA: &str = "/app/backend/data";
pub const OLLAMA_DATA: &str = "/root/.ollama";
pub const OPENWEBUI_PORT: u16 = 8080;
pub const OLLAMA_PORT: u16 = 11434;
pub const OLLAMA_ALIAS: &str = "ollama";
pub const NETWORK_BASE: &str = "webui";

/// The environment variables Open WebUI persists in its database on first start and
/// ignores afterwards (PersistentConfig), among those webui sets.
pub const PERSISTENT_KEYS: &[&str] = &[
    "WEBUI_URL",
    "OLLAMA_BASE_URL",
    "OPENAI_API_BASE_URL",
    "OPENAI_API_KEY",
];

/// The names of everything in one project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub network: String,
    pub open_webui: String,
    pub open_webui_volume: String,
    pub ollama: String,
    pub ollama_volume: String,
    /// `up --replicas`: Postgres and Redis (container and volume share the name).
    pub postgres: String,
    pub redis: String,
}

impl Names {
    pub fn new(project: &Project) -> Self {
        Self {
            network: project.prefixed(NETWORK_BASE),
            open_webui: project.prefixed(Role::OpenWebui.as_str()),
            open_webui_volume: project.prefixed(Role::OpenWebui.as_str()),
            ollama: project.prefixed(Role::Ollama.as_str()),
            ollama_volume: project.prefixed(Role::Ollama.as_str()),
            postgres: project.prefixed(Role::Postgres.as_str()),
            redis: project.prefixed(Role::Redis.as_str()),
        }
    }

    pub fn container(&self, role: Role) -> &str {
        match role {
            Role::OpenWebui => &self.open_webui,
            Role::Ollama => &self.ollama,
            Role::Postgres => &self.postgres,
            Role::Redis => &self.redis,
        }
    }

    pub fn volume(&self, role: Role) -> &str {
        match role {
            Role::OpenWebui => &self.open_webui_volume,
            Role::Ollama => &self.ollama_volume,
            Role::Postgres => &self.postgres,
            Role::Redis => &self.redis,
        }
    }
}

/// How a container is attached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Net {
    Host,
    Bridge {
        network: String,
        aliases: Vec<String>,
    },
}

/// A port published on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Publish {
    pub host_ip: String,
    pub host_port: u16,
    pub container_port: u16,
}

/// Everything about one container that webui decides. Its hash is the
/// `webui.spec-hash` label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerSpec {
    pub name: String,
    pub role: Role,
    pub image: String,
    /// The local image id (`sha256:...`) the container is created from, so a newer
    /// pull of the same tag counts as a change.
    pub image_id: String,
    pub env: BTreeMap<String, String>,
    /// Names in `env` whose values are secret: shown as a hash, never printed.
    #[serde(skip)]
    pub secret_env: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub volume: String,
    pub mount_target: String,
    pub net: Net,
    pub publish: Option<Publish>,
    pub extra_hosts: Vec<String>,
    pub gpus: bool,
}

/// What `spec` needs beyond the settings; found at run time by `webui up`.
#[derive(Debug, Clone)]
pub struct OpenWebuiInputs<'a> {
    pub project: &'a Project,
    pub settings: &'a UpSettings,
    pub image_id: String,
    pub image_digest: Option<String>,
    pub secret_key: String,
    pub public_url: String,
    pub cors: Option<String>,
    /// `OLLAMA_BASE_URL`, when there is an Ollama to use.
    pub ollama_url: Option<String>,
    /// Map `host.docker.internal` to the host (for a host Ollama in bridge mode).
    pub host_gateway: bool,
    pub openai_key: Option<String>,
    /// `--env-file` entries then `--env` entries, in order.
    pub extra_env: Vec<(String, String)>,
    pub gpus: bool,
}

fn base_labels(project: &Project, role: Option<Role>) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    l.insert(LABEL_MANAGED.to_string(), "true".to_string());
    l.insert(LABEL_PROJECT.to_string(), project.key().to_string());
    if let Some(r) = role {
        l.insert(LABEL_ROLE.to_string(), r.as_str().to_string());
    }
    l
}

/// Names that look like they hold a secret, among user-given variables.
fn looks_secret(key: &str) -> bool {
    let k = key.to_ascii_uppercase();
    ["KEY", "SECRET", "PASSWORD", "TOKEN", "CREDENTIAL"]
        .iter()
        .any(|w| k.contains(w))
}

/// The Open WebUI container.
pub fn open_webui(i: &OpenWebuiInputs) -> ContainerSpec {
    let names = Names::new(i.project);
    let s = i.settings;
    let mut env = BTreeMap::new();
    let mut set = |k: &str, v: String| {
        env.insert(k.to_string(), v);
    };
    set("WEBUI_URL", i.public_url.clone());
    set("WEBUI_SECRET_KEY", i.secret_key.clone());
    if let Some(c) = &i.cors {
        set("CORS_ALLOW_ORIGIN", c.clone());
    }
    set("WEBUI_SESSION_COOKIE_SECURE", "true".into());
    set("WEBUI_AUTH_COOKIE_SECURE", "true".into());
    set("ENABLE_WEBSOCKET_SUPPORT", "true".into());
    set("AIOHTTP_CLIENT_TIMEOUT", s.aiohttp_timeout_secs.to_string());
    if let Some(u) = &i.ollama_url {
        set("OLLAMA_BASE_URL", u.clone());
    }
    if let Some(u) = &s.openai_url {
        set("OPENAI_API_BASE_URL", u.clone());
    }
    if let Some(k) = &i.openai_key {
        set("OPENAI_API_KEY", k.clone());
    }
    let (net, publish) = match s.network {
        NetworkMode::Bridge => {
            set("PORT", OPENWEBUI_PORT.to_string());
            (
                Net::Bridge {
                    network: names.network.clone(),
                    aliases: vec![],
                },
                Some(Publish {
                    host_ip: "127.0.0.1".into(),
                    host_port: s.port,
                    container_port: OPENWEBUI_PORT,
                }),
            )
        }
        NetworkMode::Host => {
            set("HOST", "127.0.0.1".into());
            set("PORT", s.port.to_string());
            (Net::Host, None)
        }
    };
    let mut secret_env = vec!["WEBUI_SECRET_KEY".to_string(), "OPENAI_API_KEY".to_string()];
    for (k, v) in &i.extra_env {
        env.insert(k.clone(), v.clone());
        if looks_secret(k) && !secret_env.contains(k) {
            secret_env.push(k.clone());
        }
    }

    let mut labels = base_labels(i.project, Some(Role::OpenWebui));
    labels.insert(
        LABEL_UPSTREAM.to_string(),
        format!("http://127.0.0.1:{}", s.port),
    );
    if let Some(d) = &i.image_digest {
        labels.insert(LABEL_DIGEST.to_string(), d.clone());
    }
    ContainerSpec {
        name: names.open_webui.clone(),
        role: Role::OpenWebui,
        image: s.image.clone(),
        image_id: i.image_id.clone(),
        env,
        secret_env,
        labels,
        volume: names.open_webui_volume.clone(),
        mount_target: OPENWEBUI_DATA.to_string(),
        net,
        publish,
        extra_hosts: if i.host_gateway {
            vec!["host.docker.internal:host-gateway".to_string()]
        } else {
            vec![]
        },
        gpus: i.gpus,
    }
}

/// The bundled Ollama container: on the project's network with the alias `ollama`,
/// never published (host mode: on the host network, loopback only).
pub fn ollama(
    project: &Project,
    network: NetworkMode,
    image: &str,
    image_id: &str,
    image_digest: Option<&str>,
    gpus: bool,
) -> ContainerSpec {
    let names = Names::new(project);
    let mut env = BTreeMap::new();
    let net = match network {
        NetworkMode::Bridge => Net::Bridge {
            network: names.network.clone(),
            aliases: vec![OLLAMA_ALIAS.to_string()],
        },
        NetworkMode::Host => {
            env.insert(
                "OLLAMA_HOST".to_string(),
                format!("127.0.0.1:{OLLAMA_PORT}"),
            );
            Net::Host
        }
    };
    let mut labels = base_labels(project, Some(Role::Ollama));
    if let Some(d) = image_digest {
        labels.insert(LABEL_DIGEST.to_string(), d.to_string());
    }
    ContainerSpec {
        name: names.ollama.clone(),
        role: Role::Ollama,
        image: image.to_string(),
        image_id: image_id.to_string(),
        env,
        secret_env: vec![],
        labels,
        volume: names.ollama_volume.clone(),
        mount_target: OLLAMA_DATA.to_string(),
        net,
        publish: None,
        extra_hosts: vec![],
        gpus,
    }
}

/// The bundled Ollama when its API is served to other machines (`--ollama-only`,
/// `--ollama-domain`): published on 127.0.0.1:`port` only (bridge) or listening there
/// (host), for the proxy; `OLLAMA_ORIGINS` from `--allow-origin`.
pub fn served_ollama(
    mut spec: ContainerSpec,
    network: NetworkMode,
    port: u16,
    origins: &[String],
) -> ContainerSpec {
    match network {
        NetworkMode::Bridge => {
            spec.publish = Some(Publish {
                host_ip: "127.0.0.1".to_string(),
                host_port: port,
                container_port: OLLAMA_PORT,
            })
        }
        NetworkMode::Host => {
            spec.env
                .insert("OLLAMA_HOST".to_string(), format!("127.0.0.1:{port}"));
        }
    }
    if !origins.is_empty() {
        spec.env
            .insert("OLLAMA_ORIGINS".to_string(), origins.join(","));
    }
    // Where it answers on this host, for `status`.
    spec.labels.insert(
        LABEL_UPSTREAM.to_string(),
        format!("http://127.0.0.1:{port}"),
    );
    spec
}

/// `OLLAMA_BASE_URL` for the bundled Ollama.
pub fn bundled_ollama_url(network: NetworkMode) -> String {
    match network {
        NetworkMode::Bridge => format!("http://{OLLAMA_ALIAS}:{OLLAMA_PORT}"),
        NetworkMode::Host => format!("http://127.0.0.1:{OLLAMA_PORT}"),
    }
}

/// `OLLAMA_BASE_URL` for an Ollama on the host, as seen from the container.
pub fn host_ollama_url(network: NetworkMode) -> String {
    match network {
        NetworkMode::Bridge => format!("http://host.docker.internal:{OLLAMA_PORT}"),
        NetworkMode::Host => format!("http://127.0.0.1:{OLLAMA_PORT}"),
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn redact(value: &str) -> String {
    format!("(secret, sha256 {})", &sha256_hex(value.as_bytes())[..8])
}

impl ContainerSpec {
    /// The `webui.spec-hash` label: stable over runs (maps are ordered), changes with
    /// any field, secrets included.
    pub fn hash(&self) -> String {
        // Serializing plain structs, strings and ordered maps cannot fail.
        let bytes = serde_json::to_vec(&(self, &self.secret_env)).unwrap_or_default();
        sha256_hex(&bytes)[..32].to_string()
    }

    /// A flat description of the spec with secret values redacted: stored as the
    /// `webui.spec` label and compared by [`diff`].
    pub fn summary(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        m.insert("image".into(), self.image.clone());
        m.insert("image-id".into(), short_id(&self.image_id));
        for (k, v) in &self.env {
            let shown = if self.secret_env.contains(k) {
                redact(v)
            } else {
                v.clone()
            };
            m.insert(format!("env {k}"), shown);
        }
        m.insert(
            "volume".into(),
            format!("{} at {}", self.volume, self.mount_target),
        );
        m.insert(
            "network".into(),
            match &self.net {
                Net::Host => "host".into(),
                Net::Bridge { network, aliases } if aliases.is_empty() => network.clone(),
                Net::Bridge { network, aliases } => {
                    format!("{network} (alias {})", aliases.join(", "))
                }
            },
        );
        m.insert(
            "published".into(),
            match &self.publish {
                Some(p) => format!("{}:{} -> {}", p.host_ip, p.host_port, p.container_port),
                None => "nothing".into(),
            },
        );
        if !self.extra_hosts.is_empty() {
            m.insert("extra hosts".into(), self.extra_hosts.join(", "));
        }
        m.insert("gpus".into(), if self.gpus { "all" } else { "none" }.into());
        for (k, v) in &self.labels {
            if ![LABEL_MANAGED, LABEL_PROJECT, LABEL_ROLE, LABEL_DIGEST].contains(&k.as_str()) {
                m.insert(format!("label {k}"), v.clone());
            }
        }
        m
    }

    /// The body of `POST /containers/create`.
    pub fn create_body(&self) -> ContainerCreateBody {
        let mut labels: HashMap<String, String> = self.labels.clone().into_iter().collect();
        labels.insert(LABEL_HASH.to_string(), self.hash());
        labels.insert(
            LABEL_SPEC.to_string(),
            serde_json::to_string(&self.summary()).unwrap_or_default(),
        );
        let env = self.env.iter().map(|(k, v)| format!("{k}={v}")).collect();

        let (exposed_ports, port_bindings) = match &self.publish {
            Some(p) => {
                let key = format!("{}/tcp", p.container_port);
                let mut map = HashMap::new();
                map.insert(
                    key.clone(),
                    Some(vec![PortBinding {
                        host_ip: Some(p.host_ip.clone()),
                        host_port: Some(p.host_port.to_string()),
                    }]),
                );
                (Some(vec![key]), Some(map))
            }
            None => (None, None),
        };
        let (network_mode, networking_config) = match &self.net {
            Net::Host => ("host".to_string(), None),
            Net::Bridge { network, aliases } => {
                let mut endpoints = HashMap::new();
                endpoints.insert(
                    network.clone(),
                    EndpointSettings {
                        aliases: (!aliases.is_empty()).then(|| aliases.clone()),
                        ..Default::default()
                    },
                );
                (
                    network.clone(),
                    Some(NetworkingConfig {
                        endpoints_config: Some(endpoints),
                    }),
                )
            }
        };
        let device_requests = self.gpus.then(|| {
            vec![DeviceRequest {
                driver: Some(String::new()),
                count: Some(-1),
                capabilities: Some(vec![vec!["gpu".to_string()]]),
                ..Default::default()
            }]
        });
        ContainerCreateBody {
            image: Some(self.image.clone()),
            env: Some(env),
            labels: Some(labels),
            exposed_ports,
            host_config: Some(HostConfig {
                mounts: Some(vec![Mount {
                    target: Some(self.mount_target.clone()),
                    source: Some(self.volume.clone()),
                    typ: Some(MountType::VOLUME),
                    ..Default::default()
                }]),
                network_mode: Some(network_mode),
                port_bindings,
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                    maximum_retry_count: None,
                }),
                extra_hosts: (!self.extra_hosts.is_empty()).then(|| self.extra_hosts.clone()),
                device_requests,
                ..Default::default()
            }),
            networking_config,
            ..Default::default()
        }
    }
}

/// The first 12 hex digits of an image or container id.
pub fn short_id(id: &str) -> String {
    id.trim_start_matches("sha256:").chars().take(12).collect()
}

/// The body of `POST /networks/create`: a user-defined bridge, so containers find
/// each other by name.
pub fn network_body(project: &Project) -> NetworkCreateRequest {
    NetworkCreateRequest {
        name: Names::new(project).network,
        driver: Some("bridge".to_string()),
        labels: Some(base_labels(project, None).into_iter().collect()),
        ..Default::default()
    }
}

/// The body of `POST /volumes/create`.
pub fn volume_body(project: &Project, role: Role) -> VolumeCreateRequest {
    VolumeCreateRequest {
        name: Some(Names::new(project).volume(role).to_string()),
        labels: Some(base_labels(project, Some(role)).into_iter().collect()),
        ..Default::default()
    }
}

/// What changed between two [`ContainerSpec::summary`]s, one line per setting.
pub fn diff(old: &BTreeMap<String, String>, new: &BTreeMap<String, String>) -> Vec<String> {
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut out = Vec::new();
    for k in keys {
        match (old.get(k), new.get(k)) {
            (Some(a), Some(b)) if a == b => {}
            (Some(a), Some(b)) => out.push(format!("{k}: {a} -> {b}")),
            (None, Some(b)) => out.push(format!("{k}: (unset) -> {b}")),
            (Some(a), None) => out.push(format!("{k}: {a} -> (unset)")),
            (None, None) => {}
        }
    }
    out
}

/// The values of [`PERSISTENT_KEYS`] in a spec's environment, secrets hashed: what
/// Open WebUI would have copied into its database.
pub fn persistent_values(spec: &ContainerSpec) -> BTreeMap<String, String> {
    let summary = spec.summary();
    PERSISTENT_KEYS
        .iter()
        .map(|k| {
            let v = summary
                .get(&format!("env {k}"))
                .cloned()
                .unwrap_or_else(|| "(unset)".into());
            (k.to_string(), v)
        })
        .collect()
}

/// The public `https://` URL: the first `--domain`, else the first HTTPS listener
/// (a wildcard address replaced by this host's LAN address); the port only when it
/// is not 443.
pub fn public_url(domains: &[String], https: &[SocketAddr], lan: Option<IpAddr>) -> String {
    let port = https.first().map(|a| a.port()).unwrap_or(443);
    let suffix = if port == 443 {
        String::new()
    } else {
        format!(":{port}")
    };
    if let Some(d) = domains.first() {
        return format!("https://{d}{suffix}");
    }
    let ip = match https.first().map(|a| a.ip()) {
        Some(ip) if !ip.is_unspecified() => ip,
        _ => lan.unwrap_or(IpAddr::from([127, 0, 0, 1])),
    };
    match ip {
        IpAddr::V4(v4) => format!("https://{v4}{suffix}"),
        IpAddr::V6(v6) => format!("https://[{v6}]{suffix}"),
    }
}

/// `CORS_ALLOW_ORIGIN`: every domain's `https://` origin, `;`-separated. `None` without
/// domains (Open WebUI's default `*` then stays).
pub fn cors(domains: &[String], https: &[SocketAddr]) -> Option<String> {
    if domains.is_empty() {
        return None;
    }
    let port = https.first().map(|a| a.port()).unwrap_or(443);
    let suffix = if port == 443 {
        String::new()
    } else {
        format!(":{port}")
    };
    Some(
        domains
            .iter()
            .map(|d| format!("https://{d}{suffix}"))
            .collect::<Vec<_>>()
            .join(";"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::UpCmd;
    use crate::config::FileConfig;

    fn settings(cli: UpCmd) -> UpSettings {
        crate::config::up::up(&cli, &FileConfig::default()).unwrap()
    }

    fn inputs<'a>(project: &'a Project, s: &'a UpSettings) -> OpenWebuiInputs<'a> {
        OpenWebuiInputs {
            project,
            settings: s,
            image_id: "sha256:0123456789abcdef".into(),
            image_digest: Some("r/x@sha256:aa".into()),
            secret_key: "s3cr3t".into(),
            public_url: "https://chat.example.com".into(),
            cors: Some("https://chat.example.com".into()),
            ollama_url: Some(bundled_ollama_url(s.network)),
            host_gateway: false,
            openai_key: Some("sk-1".into()),
            extra_env: vec![
                ("FOO".into(), "bar".into()),
                ("MY_TOKEN".into(), "t".into()),
            ],
            gpus: false,
        }
    }

    #[test]
    fn names_follow_the_docs_and_the_project() {
        let n = Names::new(&Project::default());
        assert_eq!(
            (
                n.open_webui.as_str(),
                n.open_webui_volume.as_str(),
                n.ollama.as_str(),
                n.network.as_str()
            ),
            ("open-webui", "open-webui", "ollama", "webui")
        );
        let n = Names::new(&Project::named("t-x").unwrap());
        assert_eq!(n.open_webui, "t-x-open-webui");
        assert_eq!(n.ollama_volume, "t-x-ollama");
        assert_eq!(n.network, "t-x-webui");
    }

    #[test]
    fn bridge_mode_publishes_on_loopback_only() {
        let p = Project::default();
        let s = settings(UpCmd::default());
        let spec = open_webui(&inputs(&p, &s));
        let body = spec.create_body();
        let hc = body.host_config.unwrap();
        let bindings = hc.port_bindings.unwrap();
        let b = bindings["8080/tcp"].as_ref().unwrap();
        assert_eq!(b[0].host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(b[0].host_port.as_deref(), Some("3000"));
        assert_eq!(hc.network_mode.as_deref(), Some("webui"));
        assert_eq!(
            hc.restart_policy.unwrap().name,
            Some(RestartPolicyNameEnum::UNLESS_STOPPED)
        );
        let m = &hc.mounts.unwrap()[0];
        assert_eq!(
            (m.source.as_deref(), m.target.as_deref()),
            (Some("open-webui"), Some("/app/backend/data"))
        );
        assert!(hc.device_requests.is_none());
        let labels = body.labels.unwrap();
        assert_eq!(labels["webui.managed"], "true");
        assert_eq!(labels["webui.project"], "default");
        assert_eq!(labels["webui.role"], "open-webui");
        assert_eq!(labels["webui.upstream"], "http://127.0.0.1:3000");
        assert_eq!(labels["webui.spec-hash"], spec.hash());
        let env = body.env.unwrap();
        for want in [
            "WEBUI_URL=https://chat.example.com",
            "WEBUI_SECRET_KEY=s3cr3t",
            "CORS_ALLOW_ORIGIN=https://chat.example.com",
            "WEBUI_SESSION_COOKIE_SECURE=true",
            "WEBUI_AUTH_COOKIE_SECURE=true",
            "ENABLE_WEBSOCKET_SUPPORT=true",
            "AIOHTTP_CLIENT_TIMEOUT=300",
            "OLLAMA_BASE_URL=http://ollama:11434",
            "OPENAI_API_KEY=sk-1",
            "FOO=bar",
        ] {
            assert!(env.contains(&want.to_string()), "{want} in {env:?}");
        }
        assert!(!env.iter().any(|e| e.starts_with("HOST=")));
        assert!(
            !env.iter()
                .any(|e| e.starts_with("ENABLE_PERSISTENT_CONFIG"))
        );
    }

    #[test]
    fn host_mode_listens_on_loopback_and_publishes_nothing() {
        let p = Project::default();
        let s = settings(UpCmd {
            network: Some(NetworkMode::Host),
            port: Some(8123),
            ..Default::default()
        });
        let spec = open_webui(&inputs(&p, &s));
        assert_eq!(spec.env["HOST"], "127.0.0.1");
        assert_eq!(spec.env["PORT"], "8123");
        let body = spec.create_body();
        assert!(body.exposed_ports.is_none());
        let hc = body.host_config.unwrap();
        assert!(hc.port_bindings.is_none());
        assert_eq!(hc.network_mode.as_deref(), Some("host"));
        assert!(body.networking_config.is_none());
        assert_eq!(s.upstream().to_string(), "http://127.0.0.1:8123/");
    }

    #[test]
    fn ollama_is_aliased_and_never_published() {
        let p = Project::named("t-o").unwrap();
        let spec = ollama(
            &p,
            NetworkMode::Bridge,
            "ollama/ollama",
            "sha256:1",
            None,
            true,
        );
        let body = spec.create_body();
        let hc = body.host_config.clone().unwrap();
        assert!(hc.port_bindings.is_none() && body.exposed_ports.is_none());
        assert_eq!(hc.network_mode.as_deref(), Some("t-o-webui"));
        let eps = body.networking_config.unwrap().endpoints_config.unwrap();
        assert_eq!(eps["t-o-webui"].aliases, Some(vec!["ollama".to_string()]));
        assert_eq!(
            hc.mounts.unwrap()[0].target.as_deref(),
            Some("/root/.ollama")
        );
        let dr = &hc.device_requests.unwrap()[0];
        assert_eq!(dr.count, Some(-1));
        assert_eq!(dr.capabilities, Some(vec![vec!["gpu".to_string()]]));
        let host = ollama(&p, NetworkMode::Host, "o", "sha256:1", None, false);
        assert_eq!(host.env["OLLAMA_HOST"], "127.0.0.1:11434");
    }

    #[test]
    fn hash_is_stable_and_sensitive() {
        let p = Project::default();
        let s = settings(UpCmd::default());
        let a = open_webui(&inputs(&p, &s));
        assert_eq!(a.hash(), open_webui(&inputs(&p, &s)).hash());
        assert_eq!(a.hash().len(), 32);
        let mut b = a.clone();
        b.env.insert("FOO".into(), "baz".into());
        assert_ne!(a.hash(), b.hash());
        let mut c = a.clone();
        c.env.insert("WEBUI_SECRET_KEY".into(), "other".into());
        assert_ne!(a.hash(), c.hash(), "a new secret recreates");
        let mut d = a.clone();
        d.image_id = "sha256:fedcba".into();
        assert_ne!(a.hash(), d.hash(), "a newer image recreates");
    }

    #[test]
    fn summary_redacts_secrets_and_diff_names_changes() {
        let p = Project::default();
        let s = settings(UpCmd::default());
        let a = open_webui(&inputs(&p, &s));
        let sum = a.summary();
        let text = serde_json::to_string(&sum).unwrap();
        assert!(!text.contains("s3cr3t") && !text.contains("sk-1"), "{text}");
        assert!(
            sum["env MY_TOKEN"].starts_with("(secret"),
            "user secrets too"
        );
        assert_eq!(sum["env FOO"], "bar");
        let mut b = a.clone();
        b.env.insert("FOO".into(), "baz".into());
        b.env.insert("NEW".into(), "1".into());
        b.env.insert("OPENAI_API_KEY".into(), "sk-2".into());
        let changes = diff(&a.summary(), &b.summary());
        assert!(
            changes.contains(&"env FOO: bar -> baz".to_string()),
            "{changes:?}"
        );
        assert!(changes.contains(&"env NEW: (unset) -> 1".to_string()));
        assert!(
            changes
                .iter()
                .any(|c| c.starts_with("env OPENAI_API_KEY: (secret"))
        );
        assert!(!changes.iter().any(|c| c.contains("sk-2")));
        assert_eq!(changes.len(), 3);
        assert!(diff(&sum, &sum).is_empty());
    }

    #[test]
    fn persistent_values_cover_the_seeded_keys() {
        let p = Project::default();
        let s = settings(UpCmd::default());
        let v = persistent_values(&open_webui(&inputs(&p, &s)));
        assert_eq!(v["WEBUI_URL"], "https://chat.example.com");
        assert_eq!(v["OPENAI_API_BASE_URL"], "(unset)");
        assert!(v["OPENAI_API_KEY"].starts_with("(secret"));
    }

    #[test]
    fn public_urls_and_cors() {
        let l443: Vec<SocketAddr> = vec!["0.0.0.0:443".parse().unwrap()];
        let l8443: Vec<SocketAddr> = vec!["127.0.0.1:8443".parse().unwrap()];
        let d = vec!["chat.example.com".to_string(), "ai.example.com".to_string()];
        assert_eq!(public_url(&d, &l443, None), "https://chat.example.com");
        assert_eq!(
            public_url(&d, &l8443, None),
            "https://chat.example.com:8443"
        );
        assert_eq!(public_url(&[], &l8443, None), "https://127.0.0.1:8443");
        assert_eq!(
            public_url(&[], &l443, Some("192.168.1.5".parse().unwrap())),
            "https://192.168.1.5"
        );
        assert_eq!(
            public_url(&[], &["[::1]:9443".parse().unwrap()], None),
            "https://[::1]:9443"
        );
        assert_eq!(
            cors(&d, &l443).as_deref(),
            Some("https://chat.example.com;https://ai.example.com")
        );
        assert_eq!(cors(&[], &l443), None);
    }

    #[test]
    fn volumes_and_networks_are_labelled() {
        let p = Project::named("t-v").unwrap();
        let v = volume_body(&p, Role::Ollama);
        assert_eq!(v.name.as_deref(), Some("t-v-ollama"));
        let l = v.labels.unwrap();
        assert_eq!(
            (l["webui.project"].as_str(), l["webui.role"].as_str()),
            ("t-v", "ollama")
        );
        let n = network_body(&p);
        assert_eq!(n.name, "t-v-webui");
        assert_eq!(n.driver.as_deref(), Some("bridge"));
        assert_eq!(n.labels.unwrap()["webui.managed"], "true");
    }
}
