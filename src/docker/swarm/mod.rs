//! `webui up --swarm`: the same stack as `up --replicas` as Docker Swarm services,
//! deployed from a manager node through the Swarm API. Specs are pure
//! ([`ServiceDef`] -> [`ServiceSpec`]) and unit-tested; the engine calls follow.
//!
//! # What runs (names for project `p`; without `--project` no prefix)
//! - overlay network `p-webui-swarm`: attachable, encrypted (IPsec between nodes),
//!   labelled as the project's;
//! - service `p-postgres` (1 task, pinned to this node: its volume is a local one),
//!   alias `postgres`, volume `p-postgres`; `p-redis` likewise (alias `redis`);
//! - service `p-open-webui`: `--replicas` tasks anywhere in the swarm, environment
//!   as `up --replicas` (`docker::replicas::scale_env`), volume `p-open-webui` on each
//!   node, health check `curl /health`, nothing published; rolling updates one task
//!   at a time, start-first, rolled back on failure;
//! - service `p-proxy`: this very binary (`image::ensure`) running `webui proxy
//!   --upstream http://tasks.p-open-webui:8080`, pinned to this node, publishing the
//!   HTTPS (and HTTP) port in `host` mode, i.e. on this node only and not through the
//!   routing mesh; its state (ACME account, certificates) in the volume
//!   `p-proxy-state`. Certificate files (`--tls-cert/--tls-key`, or a leaf from the
//!   local CA on this host) and `--acme-ca` reach it as Docker secrets named
//!   `p-<what>-<sha256 prefix>` (secrets are immutable: new content, new name).
//!
//! Every service uses DNS round robin (`endpoint_mode: dnsrr`) rather than a virtual
//! IP: a service name or alias resolves to its tasks' addresses, which works without
//! IPVS on the nodes, and the proxy balances over `tasks.<service>` itself.
//!
//! Open WebUI is never published: Swarm cannot publish on 127.0.0.1 only (a
//! published port is on every address of every node), so only the proxy, inside
//! the overlay, reaches it.
//!
//! # Labels
//! Services, the network, secrets and volumes carry `webui.managed=true`,
//! `webui.project=<p>`, and `webui.role=<role>` where it applies; services also
//! `webui.swarm=true`, `webui.spec-hash` (the [`ServiceDef`] hash: same hash, service
//! left alone; different, `service update`) and `webui.spec` (a summary with secrets
//! redacted, so an update prints what changed).

pub mod image;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bollard::Docker;
use bollard::models::{
    EndpointPortConfig, EndpointPortConfigPublishModeEnum, EndpointSpec, EndpointSpecModeEnum,
    HealthConfig, LocalNodeState, Mount, MountType, MountVolumeOptions, NetworkAttachmentConfig,
    NetworkCreateRequest, SecretSpec, Service, ServiceSpec, ServiceSpecMode,
    ServiceSpecModeReplicated, ServiceSpecUpdateConfig, ServiceSpecUpdateConfigFailureActionEnum,
    ServiceSpecUpdateConfigOrderEnum, Task, TaskSpec, TaskSpecContainerSpec,
    TaskSpecContainerSpecFile, TaskSpecContainerSpecSecrets, TaskSpecPlacement,
    TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::query_parameters::{
    InspectServiceOptions, ListNodesOptions, ListSecretsOptions, ListServicesOptions,
    ListTasksOptions, UpdateServiceOptions,
};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::spec::{
    self, ContainerSpec, LABEL_HASH, LABEL_MANAGED, LABEL_PROJECT, LABEL_ROLE, LABEL_SPEC, Net,
};
use super::{engine_message, is_not_found};
use crate::config::up::Project;
use crate::config::{ProxySettings, TlsSource};
use crate::error::UserError;
use crate::output::Printer;

pub const LABEL_SWARM: &str = "webui.swarm";
/// On task containers (not `webui.project`: the single-host code must not take them
/// for its own).
pub const LABEL_TASK_PROJECT: &str = "webui.swarm-project";
pub const ROLE_PROXY: &str = "proxy";
/// Where Docker mounts a service's secrets.
pub const SECRETS_DIR: &str = "/run/secrets";
const SECOND: i64 = 1_000_000_000;

/// The names of one project's swarm objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwarmNames {
    pub network: String,
    pub postgres: String,
    pub redis: String,
    pub open_webui: String,
    pub proxy: String,
    pub proxy_volume: String,
}

impl SwarmNames {
    pub fn new(project: &Project) -> Self {
        Self {
            network: project.prefixed("webui-swarm"),
            postgres: project.prefixed("postgres"),
            redis: project.prefixed("redis"),
            open_webui: project.prefixed("open-webui"),
            proxy: project.prefixed(ROLE_PROXY),
            proxy_volume: project.prefixed("proxy-state"),
        }
    }

    /// `http://tasks.<open-webui service>:8080`: every healthy task's address
    /// (Swarm's DNS), which the proxy re-resolves.
    pub fn upstream(&self) -> String {
        format!("http://tasks.{}:{}", self.open_webui, spec::OPENWEBUI_PORT)
    }
}

/// A secret file handed to a service (mounted at `/run/secrets/<name>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretFile {
    pub id: String,
    pub name: String,
}

impl SecretFile {
    pub fn path(&self) -> String {
        format!("{SECRETS_DIR}/{}", self.name)
    }
}

/// Everything webui decides about one service; its hash is `webui.spec-hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceDef {
    pub name: String,
    pub role: String,
    pub image: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    #[serde(skip)]
    pub secret_env: Vec<String>,
    pub volume: String,
    pub mount_target: String,
    pub aliases: Vec<String>,
    pub replicas: u64,
    pub constraints: Vec<String>,
    pub health: Option<Vec<String>>,
    /// Health check grace after start (first starts run migrations).
    pub health_start: Duration,
    /// Published on the node running the task (`mode: host`), same port inside.
    pub ports: Vec<u16>,
    pub secrets: Vec<SecretFile>,
    /// Rolling updates start the new task before stopping the old one (not
    /// possible with host-mode ports: the old task holds them).
    pub start_first: bool,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl ServiceDef {
    /// A service running what `spec` describes for one container (image,
    /// environment, volume, network aliases).
    pub fn from_container(name: &str, c: &ContainerSpec, replicas: u64) -> Self {
        let aliases = match &c.net {
            Net::Bridge { aliases, .. } => aliases.clone(),
            Net::Host => vec![],
        };
        Self {
            name: name.to_string(),
            role: c.role.as_str().to_string(),
            image: c.image.clone(),
            args: vec![],
            env: c.env.clone(),
            secret_env: c.secret_env.clone(),
            volume: c.volume.clone(),
            mount_target: c.mount_target.clone(),
            aliases,
            replicas,
            constraints: vec![],
            health: None,
            health_start: Duration::ZERO,
            ports: vec![],
            secrets: vec![],
            start_first: true,
        }
    }

    pub fn hash(&self) -> String {
        let bytes = serde_json::to_vec(&(self, &self.secret_env)).unwrap_or_default();
        sha256_hex(&bytes)[..32].to_string()
    }

    /// A flat description with secret values redacted, for `webui.spec` and diffs.
    pub fn summary(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        m.insert("image".into(), self.image.clone());
        if !self.args.is_empty() {
            m.insert("args".into(), self.args.join(" "));
        }
        for (k, v) in &self.env {
            let shown = if self.secret_env.contains(k) {
                format!("(secret, sha256 {})", &sha256_hex(v.as_bytes())[..8])
            } else {
                v.clone()
            };
            m.insert(format!("env {k}"), shown);
        }
        m.insert(
            "volume".into(),
            format!("{} at {}", self.volume, self.mount_target),
        );
        m.insert("replicas".into(), self.replicas.to_string());
        if !self.constraints.is_empty() {
            m.insert("constraints".into(), self.constraints.join(", "));
        }
        if !self.aliases.is_empty() {
            m.insert("aliases".into(), self.aliases.join(", "));
        }
        m.insert(
            "published".into(),
            match self.ports.is_empty() {
                true => "nothing".into(),
                false => self
                    .ports
                    .iter()
                    .map(|p| format!("{p} (host mode)"))
                    .collect::<Vec<_>>()
                    .join(", "),
            },
        );
        if !self.secrets.is_empty() {
            let names: Vec<&str> = self.secrets.iter().map(|s| s.name.as_str()).collect();
            m.insert("secrets".into(), names.join(", "));
        }
        m
    }

    fn labels(&self, project: &Project) -> HashMap<String, String> {
        let mut l = project_labels(project);
        l.insert(LABEL_ROLE.to_string(), self.role.clone());
        l.insert(LABEL_SWARM.to_string(), "true".to_string());
        l.insert(LABEL_HASH.to_string(), self.hash());
        l.insert(
            LABEL_SPEC.to_string(),
            serde_json::to_string(&self.summary()).unwrap_or_default(),
        );
        l
    }

    /// The body of `POST /services/create` (and `/update`).
    pub fn service_spec(&self, project: &Project, network: &str) -> ServiceSpec {
        let mut volume_labels = project_labels(project);
        volume_labels.insert(LABEL_ROLE.to_string(), self.role.clone());
        let health_check = self.health.as_ref().map(|test| HealthConfig {
            test: Some(test.clone()),
            interval: Some(10 * SECOND),
            timeout: Some(6 * SECOND),
            retries: Some(3),
            start_period: Some(i64::try_from(self.health_start.as_nanos()).unwrap_or(i64::MAX)),
            start_interval: None,
        });
        let secrets = self
            .secrets
            .iter()
            .map(|s| TaskSpecContainerSpecSecrets {
                file: Some(TaskSpecContainerSpecFile {
                    name: Some(s.name.clone()),
                    uid: Some("0".into()),
                    gid: Some("0".into()),
                    mode: Some(0o400),
                }),
                secret_id: Some(s.id.clone()),
                secret_name: Some(s.name.clone()),
            })
            .collect::<Vec<_>>();
        let mut container_labels = HashMap::new();
        container_labels.insert(LABEL_TASK_PROJECT.to_string(), project.key().to_string());
        let container = TaskSpecContainerSpec {
            image: Some(self.image.clone()),
            labels: Some(container_labels),
            args: (!self.args.is_empty()).then(|| self.args.clone()),
            env: Some(self.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            mounts: Some(vec![Mount {
                target: Some(self.mount_target.clone()),
                source: Some(self.volume.clone()),
                typ: Some(MountType::VOLUME),
                volume_options: Some(MountVolumeOptions {
                    labels: Some(volume_labels),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            health_check,
            secrets: (!secrets.is_empty()).then_some(secrets),
            ..Default::default()
        };
        let ports = self
            .ports
            .iter()
            .map(|p| EndpointPortConfig {
                protocol: Some(bollard::models::EndpointPortConfigProtocolEnum::TCP),
                target_port: Some(i64::from(*p)),
                published_port: Some(i64::from(*p)),
                publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
                ..Default::default()
            })
            .collect::<Vec<_>>();
        ServiceSpec {
            name: Some(self.name.clone()),
            labels: Some(self.labels(project)),
            task_template: Some(TaskSpec {
                container_spec: Some(container),
                restart_policy: Some(TaskSpecRestartPolicy {
                    condition: Some(TaskSpecRestartPolicyConditionEnum::ANY),
                    delay: Some(5 * SECOND),
                    ..Default::default()
                }),
                placement: (!self.constraints.is_empty()).then(|| TaskSpecPlacement {
                    constraints: Some(self.constraints.clone()),
                    ..Default::default()
                }),
                networks: Some(vec![NetworkAttachmentConfig {
                    target: Some(network.to_string()),
                    aliases: (!self.aliases.is_empty()).then(|| self.aliases.clone()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            mode: Some(ServiceSpecMode {
                replicated: Some(ServiceSpecModeReplicated {
                    replicas: Some(i64::try_from(self.replicas).unwrap_or(1)),
                }),
                ..Default::default()
            }),
            update_config: Some(ServiceSpecUpdateConfig {
                parallelism: Some(1),
                delay: Some(0),
                failure_action: Some(ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK),
                monitor: Some(15 * SECOND),
                order: Some(match self.start_first {
                    true => ServiceSpecUpdateConfigOrderEnum::START_FIRST,
                    false => ServiceSpecUpdateConfigOrderEnum::STOP_FIRST,
                }),
                ..Default::default()
            }),
            // DNS round robin, no virtual IP: names (and aliases) resolve to the
            // tasks' own addresses, so nothing depends on IPVS in the kernel
            // (absent on some hosts, where a virtual IP answers "no route to host").
            endpoint_spec: Some(EndpointSpec {
                mode: Some(EndpointSpecModeEnum::DNSRR),
                ports: (!ports.is_empty()).then_some(ports),
            }),
            ..Default::default()
        }
    }
}

fn project_labels(project: &Project) -> HashMap<String, String> {
    let mut l = HashMap::new();
    l.insert(LABEL_MANAGED.to_string(), "true".to_string());
    l.insert(LABEL_PROJECT.to_string(), project.key().to_string());
    l
}

fn project_filter(project: &Project) -> HashMap<String, Vec<String>> {
    let mut f = HashMap::new();
    f.insert(
        "label".to_string(),
        vec![
            format!("{LABEL_MANAGED}=true"),
            format!("{LABEL_PROJECT}={}", project.key()),
        ],
    );
    f
}

/// The ports the proxy publishes: one HTTPS port and at most one HTTP port, from
/// `--listen`/`--http-listen`, which must be wildcard addresses (a host-mode port is
/// published on every address of the node).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    pub https: u16,
    pub http: Option<u16>,
}

impl Ports {
    pub fn of(s: &ProxySettings) -> anyhow::Result<Self> {
        let one = |flag: &str, addrs: &[std::net::SocketAddr]| -> anyhow::Result<Option<u16>> {
            if let Some(a) = addrs.iter().find(|a| !a.ip().is_unspecified()) {
                return Err(UserError::new(format!(
                    "{flag} {a}: with --swarm the proxy publishes its port on every address of this node (Swarm's host mode cannot pick one address)"
                ))
                .hint(format!("give {flag} 0.0.0.0:{0} (or :{0}), and firewall the port if it must not be public", a.port()))
                .into());
            }
            let mut ports: Vec<u16> = addrs.iter().map(|a| a.port()).collect();
            ports.dedup();
            match ports.as_slice() {
                [] => Ok(None),
                [p] if *p != 0 => Ok(Some(*p)),
                [0] => Err(UserError::new(format!(
                    "{flag}: port 0 cannot be published; give a port"
                ))
                .into()),
                _ => Err(UserError::new(format!(
                    "{flag}: with --swarm the proxy publishes one port, not {}",
                    ports
                        .iter()
                        .map(u16::to_string)
                        .collect::<Vec<_>>()
                        .join(" and ")
                ))
                .into()),
            }
        };
        let https = one("--listen", &s.listen)?.ok_or_else(|| {
            anyhow::Error::from(UserError::new("--swarm needs an HTTPS port (--listen)"))
        })?;
        let http = one("--http-listen", &s.http_listen)?;
        if http == Some(https) {
            return Err(UserError::new(format!(
                "--listen and --http-listen both name port {https}"
            ))
            .into());
        }
        Ok(Self { https, http })
    }
}

/// How the proxy service gets its certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyTls {
    /// A chain and key as secrets: the operator's files, or a leaf from this host's
    /// local CA.
    Files { cert: SecretFile, key: SecretFile },
    /// ACME inside the proxy (state on its volume); `--acme-ca` as a secret.
    Acme { ca: Option<SecretFile> },
}

/// `webui proxy` arguments for the proxy service: the resolved settings written
/// back as flags (so values from webui.toml reach it too).
pub fn proxy_args(s: &ProxySettings, ports: Ports, upstream: &str, tls: &ProxyTls) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "--state-dir".into(),
        image::STATE_DIR.into(),
        "proxy".into(),
        "--upstream".into(),
        upstream.into(),
        "--listen".into(),
        format!("0.0.0.0:{}", ports.https),
    ];
    match ports.http {
        Some(p) => a.extend(["--http-listen".into(), format!("0.0.0.0:{p}")]),
        None => a.push("--no-http".into()),
    }
    for d in &s.domains {
        a.extend(["--domain".into(), d.clone()]);
    }
    match (tls, &s.tls) {
        (ProxyTls::Files { cert, key }, _) => {
            a.extend([
                "--tls-cert".into(),
                cert.path(),
                "--tls-key".into(),
                key.path(),
            ]);
        }
        (ProxyTls::Acme { ca }, TlsSource::Acme(acme)) => {
            a.extend(["--acme-directory".into(), acme.directory.clone()]);
            if let Some(e) = &acme.email {
                a.extend(["--email".into(), e.clone()]);
            }
            if let Some(ca) = ca {
                a.extend(["--acme-ca".into(), ca.path()]);
            }
            let challenge = match acme.challenge {
                crate::config::resolve::ChallengeMode::Auto => "auto",
                crate::config::resolve::ChallengeMode::Http01 => "http-01",
                crate::config::resolve::ChallengeMode::TlsAlpn01 => "tls-alpn-01",
            };
            a.extend(["--challenge".into(), challenge.into()]);
            if acme.skip_preflight {
                a.push("--skip-preflight".into());
            }
        }
        (ProxyTls::Acme { .. }, _) => {}
    }
    let dur = |d: Duration| format!("{}ms", d.as_millis());
    if let Some(b) = s.max_body {
        a.extend(["--max-body".into(), b.to_string()]);
    }
    for t in &s.trusted_proxies {
        a.extend(["--trusted-proxy".into(), t.to_string()]);
    }
    if !s.hsts {
        a.push("--no-hsts".into());
    }
    for (flag, d) in [
        ("--connect-timeout", s.connect_timeout),
        ("--response-timeout", s.response_timeout),
        ("--ws-idle-timeout", s.ws_idle_timeout),
        ("--handshake-timeout", s.handshake_timeout),
        ("--header-timeout", s.header_timeout),
        ("--idle-timeout", s.idle_timeout),
        ("--drain-timeout", s.drain_timeout),
    ] {
        a.extend([flag.into(), dur(d)]);
    }
    a.extend([
        "--max-header-size".into(),
        s.max_header_size.to_string(),
        "--max-connections".into(),
        s.max_connections.to_string(),
    ]);
    a
}

/// The proxy service: this binary, pinned to `node_id`, publishing `ports`.
pub fn proxy_def(
    names: &SwarmNames,
    image: &str,
    node_id: &str,
    args: Vec<String>,
    ports: Ports,
    secrets: Vec<SecretFile>,
) -> ServiceDef {
    ServiceDef {
        name: names.proxy.clone(),
        role: ROLE_PROXY.to_string(),
        image: image.to_string(),
        args,
        env: BTreeMap::new(),
        secret_env: vec![],
        volume: names.proxy_volume.clone(),
        mount_target: image::STATE_DIR.to_string(),
        aliases: vec![],
        replicas: 1,
        constraints: vec![format!("node.id=={node_id}")],
        health: None,
        health_start: Duration::ZERO,
        ports: std::iter::once(ports.https).chain(ports.http).collect(),
        secrets,
        start_first: false,
    }
}

/// The health checks: the commands the official images (and the test stand-ins)
/// carry.
pub fn open_webui_health() -> Vec<String> {
    [
        "CMD",
        "curl",
        "-fsS",
        "--max-time",
        "5",
        &format!("http://127.0.0.1:{}/health", spec::OPENWEBUI_PORT),
    ]
    .map(String::from)
    .to_vec()
}

pub fn postgres_health(user: &str, db: &str) -> Vec<String> {
    ["CMD", "pg_isready", "-U", user, "-d", db]
        .map(String::from)
        .to_vec()
}

pub fn redis_health() -> Vec<String> {
    ["CMD", "redis-cli", "ping"].map(String::from).to_vec()
}

// ------------------------------------------------------------------ engine

/// This node's id when it is a swarm manager; otherwise what to do.
pub async fn manager_node(docker: &Docker) -> anyhow::Result<String> {
    let info = docker.info().await.map_err(|e| {
        anyhow::anyhow!("cannot ask Docker about its swarm: {}", engine_message(&e))
    })?;
    let swarm = info.swarm.unwrap_or_default();
    let state = swarm.local_node_state.unwrap_or(LocalNodeState::INACTIVE);
    if state != LocalNodeState::ACTIVE {
        return Err(UserError::new(format!(
            "--swarm needs this Docker engine to be a swarm manager, and it is not in a swarm (state: {})",
            if state.to_string().is_empty() { "none".to_string() } else { state.to_string() }
        ))
        .hint("make this machine the manager of a new swarm with `docker swarm init` (add `--advertise-addr IP` when it has several addresses), then run this again; docs/SWARM.md tells how to add worker nodes")
        .into());
    }
    if swarm.control_available != Some(true) {
        return Err(UserError::new(
            "--swarm must run on a manager node, and this Docker engine is a swarm worker",
        )
        .hint("run `webui up --swarm` on a manager (`docker node ls` there lists the nodes), or promote this node with `docker node promote` on a manager")
        .into());
    }
    swarm
        .node_id
        .filter(|n| !n.is_empty())
        .ok_or_else(|| anyhow::anyhow!("Docker reports a swarm but no node id"))
}

/// True when the engine is a swarm manager (so services can be listed).
pub async fn is_manager(docker: &Docker) -> bool {
    docker
        .info()
        .await
        .ok()
        .and_then(|i| i.swarm)
        .is_some_and(|s| {
            s.local_node_state == Some(LocalNodeState::ACTIVE) && s.control_available == Some(true)
        })
}

/// Creates the project's overlay network unless it exists (refusing one webui did
/// not make).
pub async fn ensure_network(
    docker: &Docker,
    project: &Project,
    names: &SwarmNames,
    printer: &Printer,
) -> anyhow::Result<()> {
    match docker
        .inspect_network(
            &names.network,
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
    {
        Ok(n) => {
            let labels = n.labels.unwrap_or_default();
            let ours = labels.get(LABEL_PROJECT).map(String::as_str) == Some(project.key());
            if !ours || n.driver.as_deref() != Some("overlay") {
                return Err(UserError::new(format!(
                    "a network named {} exists and webui did not make it for this project",
                    names.network
                ))
                .hint("remove or rename it, or use another --project")
                .into());
            }
            Ok(())
        }
        Err(e) if is_not_found(&e) => {
            let mut options = HashMap::new();
            options.insert("encrypted".to_string(), String::new());
            docker
                .create_network(NetworkCreateRequest {
                    name: names.network.clone(),
                    driver: Some("overlay".into()),
                    attachable: Some(true),
                    options: Some(options),
                    labels: Some(project_labels(project)),
                    ..Default::default()
                })
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "cannot create the overlay network {}: {}",
                        names.network,
                        engine_message(&e)
                    )
                })?;
            printer.line(format!(
                "created overlay network {} (encrypted)",
                names.network
            ));
            Ok(())
        }
        Err(e) => Err(anyhow::anyhow!(
            "cannot inspect network {}: {}",
            names.network,
            engine_message(&e)
        )),
    }
}

/// A secret holding `data`, named `<prefix><what>-<sha256 prefix>`: created unless
/// one with that name exists.
pub async fn ensure_secret(
    docker: &Docker,
    project: &Project,
    what: &str,
    data: &[u8],
) -> anyhow::Result<SecretFile> {
    let name = project.prefixed(&format!("{what}-{}", &sha256_hex(data)[..12]));
    let mut filters = HashMap::new();
    filters.insert("name".to_string(), vec![name.clone()]);
    let existing = docker
        .list_secrets(Some(ListSecretsOptions {
            filters: Some(filters),
        }))
        .await
        .map_err(|e| anyhow::anyhow!("cannot list secrets: {}", engine_message(&e)))?;
    if let Some(id) = existing
        .into_iter()
        .find(|s| s.spec.as_ref().and_then(|s| s.name.as_deref()) == Some(name.as_str()))
        .and_then(|s| s.id)
    {
        return Ok(SecretFile { id, name });
    }
    let id = docker
        .create_secret(SecretSpec {
            name: Some(name.clone()),
            labels: Some(project_labels(project)),
            data: Some(base64::engine::general_purpose::STANDARD.encode(data)),
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("cannot create the secret {name}: {}", engine_message(&e)))?
        .id;
    Ok(SecretFile { id, name })
}

/// Deletes the project's secrets no service uses any more (in use: left alone).
pub async fn prune_secrets(docker: &Docker, project: &Project, keep: &[String]) {
    let Ok(all) = docker
        .list_secrets(Some(ListSecretsOptions {
            filters: Some(project_filter(project)),
        }))
        .await
    else {
        return;
    };
    for s in all {
        let name = s.spec.and_then(|s| s.name).unwrap_or_default();
        if let Some(id) = s.id.filter(|_| !keep.contains(&name)) {
            let _ = docker.delete_secret(&id).await;
        }
    }
}

/// What [`converge`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Created,
    Updated(Vec<String>),
    Unchanged,
}

/// Creates the service, updates it when its spec hash differs, else leaves it.
pub async fn converge(
    docker: &Docker,
    project: &Project,
    network: &str,
    def: &ServiceDef,
) -> anyhow::Result<Change> {
    let spec = def.service_spec(project, network);
    let current = match docker
        .inspect_service(&def.name, None::<InspectServiceOptions>)
        .await
    {
        Ok(s) => Some(s),
        Err(e) if is_not_found(&e) => None,
        Err(e) => {
            return Err(anyhow::anyhow!(
                "cannot inspect service {}: {}",
                def.name,
                engine_message(&e)
            ));
        }
    };
    let Some(current) = current else {
        docker.create_service(spec, None).await.map_err(|e| {
            anyhow::anyhow!("cannot create service {}: {}", def.name, engine_message(&e))
        })?;
        return Ok(Change::Created);
    };
    let labels = current
        .spec
        .as_ref()
        .and_then(|s| s.labels.clone())
        .unwrap_or_default();
    if labels.get(LABEL_PROJECT).map(String::as_str) != Some(project.key()) {
        return Err(UserError::new(format!(
            "a service named {} exists and webui did not make it for this project",
            def.name
        ))
        .hint("remove it (`docker service rm`), or use another --project")
        .into());
    }
    if labels.get(LABEL_HASH) == Some(&def.hash()) {
        return Ok(Change::Unchanged);
    }
    let old: BTreeMap<String, String> = labels
        .get(LABEL_SPEC)
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    let version = current
        .version
        .and_then(|v| v.index)
        .and_then(|i| i32::try_from(i).ok())
        .unwrap_or_default();
    docker
        .update_service(
            &def.name,
            spec,
            UpdateServiceOptions {
                version,
                ..Default::default()
            },
            None,
        )
        .await
        .map_err(|e| {
            anyhow::anyhow!("cannot update service {}: {}", def.name, engine_message(&e))
        })?;
    Ok(Change::Updated(spec::diff(&old, &def.summary())))
}

/// One task as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TaskReport {
    pub id: String,
    /// The whole id (`webui logs` asks for the task's logs by it).
    #[serde(skip)]
    pub full_id: String,
    pub slot: Option<i64>,
    pub node: String,
    pub node_id: String,
    pub desired_state: String,
    pub state: String,
    pub since: Option<String>,
    pub message: Option<String>,
    pub error: Option<String>,
    pub container_id: Option<String>,
}

/// One service as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceReport {
    pub service: String,
    pub name: String,
    pub id: String,
    pub image: String,
    pub replicas: u64,
    pub running: u64,
    pub published: Vec<u16>,
    pub update: Option<String>,
    pub tasks: Vec<TaskReport>,
}

impl ServiceReport {
    pub fn converged(&self) -> bool {
        self.running >= self.replicas
    }
}

/// The project's services (empty when none or the engine is not a manager).
pub async fn services(docker: &Docker, project: &Project) -> anyhow::Result<Vec<Service>> {
    let opts = ListServicesOptions {
        filters: Some(project_filter(project)),
        ..Default::default()
    };
    docker
        .list_services(Some(opts))
        .await
        .map_err(|e| anyhow::anyhow!("cannot list services: {}", engine_message(&e)))
}

async fn node_names(docker: &Docker) -> HashMap<String, String> {
    docker
        .list_nodes(None::<ListNodesOptions>)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|n| {
            let host = n.description.and_then(|d| d.hostname).unwrap_or_default();
            Some((n.id?, host))
        })
        .collect()
}

fn task_report(t: Task, nodes: &HashMap<String, String>) -> TaskReport {
    let status = t.status.unwrap_or_default();
    let node_id = t.node_id.unwrap_or_default();
    let full_id = t.id.unwrap_or_default();
    TaskReport {
        id: spec::short_id(&full_id),
        full_id,
        slot: t.slot,
        node: nodes.get(&node_id).cloned().unwrap_or_default(),
        node_id: spec::short_id(&node_id),
        desired_state: t.desired_state.map(|s| s.to_string()).unwrap_or_default(),
        state: status.state.map(|s| s.to_string()).unwrap_or_default(),
        since: status.timestamp.map(|t| t.to_string()),
        message: status.message.filter(|m| !m.is_empty()),
        error: status.err.filter(|m| !m.is_empty()),
        container_id: status
            .container_status
            .and_then(|c| c.container_id)
            .map(|c| spec::short_id(&c)),
    }
}

/// Services and their tasks, in the order postgres, redis, open-webui, proxy.
pub async fn report(docker: &Docker, project: &Project) -> anyhow::Result<Vec<ServiceReport>> {
    let nodes = node_names(docker).await;
    let mut out = Vec::new();
    for s in services(docker, project).await? {
        let spec = s.spec.unwrap_or_default();
        let name = spec.name.clone().unwrap_or_default();
        let labels = spec.labels.clone().unwrap_or_default();
        let mut filters = HashMap::new();
        filters.insert("service".to_string(), vec![name.clone()]);
        let tasks = docker
            .list_tasks(Some(ListTasksOptions {
                filters: Some(filters),
            }))
            .await
            .map_err(|e| {
                anyhow::anyhow!("cannot list the tasks of {name}: {}", engine_message(&e))
            })?;
        let mut tasks: Vec<TaskReport> = tasks
            .into_iter()
            // The service filter matches by prefix too (`p-proxy` and `p-proxy2`).
            .filter(|t| t.service_id == s.id)
            .map(|t| task_report(t, &nodes))
            .collect();
        tasks.sort_by(|a, b| {
            (b.desired_state == "running")
                .cmp(&(a.desired_state == "running"))
                .then(a.slot.cmp(&b.slot))
                .then(b.since.cmp(&a.since))
        });
        let running = tasks
            .iter()
            .filter(|t| t.desired_state == "running" && t.state == TaskState::RUNNING.to_string())
            .count() as u64;
        let replicas = spec
            .mode
            .and_then(|m| m.replicated)
            .and_then(|r| r.replicas)
            .and_then(|r| u64::try_from(r).ok())
            .unwrap_or(0);
        let published = spec
            .endpoint_spec
            .and_then(|e| e.ports)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|p| p.published_port.and_then(|p| u16::try_from(p).ok()))
            .collect();
        let image = spec
            .task_template
            .and_then(|t| t.container_spec)
            .and_then(|c| c.image)
            .unwrap_or_default();
        let update = s.update_status.and_then(|u| {
            let state = u.state.map(|s| s.to_string())?;
            Some(match u.message {
                Some(m) if !m.is_empty() => format!("{state}: {m}"),
                _ => state,
            })
        });
        out.push(ServiceReport {
            service: labels.get(LABEL_ROLE).cloned().unwrap_or_default(),
            name,
            id: spec::short_id(&s.id.unwrap_or_default()),
            image,
            replicas,
            running,
            published,
            update,
            tasks,
        });
    }
    let order = |r: &str| match r {
        "postgres" => 0,
        "redis" => 1,
        "open-webui" => 2,
        _ => 3,
    };
    out.sort_by_key(|r| order(&r.service));
    Ok(out)
}

/// Waits until each named service runs all its tasks (a task with a health check
/// counts once healthy). Prints progress when the counts change; on timeout, the
/// error names what is missing and the tasks' last errors.
pub async fn wait_running(
    docker: &Docker,
    project: &Project,
    names: &[&str],
    timeout: Duration,
    printer: &Printer,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut last_line = String::new();
    loop {
        let all = report(docker, project).await?;
        let these: Vec<&ServiceReport> = all
            .iter()
            .filter(|r| names.contains(&r.name.as_str()))
            .collect();
        let line = these
            .iter()
            .map(|r| format!("{} {}/{}", r.service, r.running, r.replicas))
            .collect::<Vec<_>>()
            .join(", ");
        if line != last_line {
            printer.line(format!("tasks running: {line}"));
            last_line = line;
        }
        if these.len() == names.len() && these.iter().all(|r| r.converged()) {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            let why: Vec<String> = these
                .iter()
                .filter(|r| !r.converged())
                .flat_map(|r| {
                    r.tasks.iter().take(3).map(move |t| {
                        format!(
                            "{} task {}: {} ({})",
                            r.name,
                            t.id,
                            t.state,
                            t.error.clone().or(t.message.clone()).unwrap_or_default()
                        )
                    })
                })
                .collect();
            return Err(UserError::new(format!(
                "the services did not converge within {}: {last_line}{}{}",
                crate::docker::health::elapsed_text(timeout),
                if why.is_empty() { "" } else { "; " },
                why.join("; ")
            ))
            .hint("see `webui status` and `docker service ps --no-trunc SERVICE`; the services keep trying, and `webui up --swarm` may be run again")
            .into());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// This node's containers of the project's tasks, running or not (label set by
/// [`ServiceDef::service_spec`]).
async fn task_containers(docker: &Docker, project: &Project) -> Vec<String> {
    let mut filters = HashMap::new();
    filters.insert(
        "label".to_string(),
        vec![format!("{LABEL_TASK_PROJECT}={}", project.key())],
    );
    docker
        .list_containers(Some(bollard::query_parameters::ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| c.id)
        .collect()
}

async fn network_exists(docker: &Docker, name: &str) -> bool {
    !matches!(
        docker
            .inspect_network(name, None::<bollard::query_parameters::InspectNetworkOptions>)
            .await,
        Err(e) if is_not_found(&e)
    )
}

/// `webui down` on a swarm project: removes its services, then (once their tasks
/// are gone) its overlay network and secrets. Volumes stay, on every node.
/// Returns false when the project has no services.
pub async fn remove(docker: &Docker, project: &Project, printer: &Printer) -> anyhow::Result<bool> {
    let services = services(docker, project).await?;
    if services.is_empty() {
        return Ok(false);
    }
    for s in &services {
        let name = s
            .spec
            .as_ref()
            .and_then(|s| s.name.clone())
            .unwrap_or_default();
        match docker.delete_service(&name).await {
            Ok(()) => printer.line(format!("removed service {name}")),
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                return Err(anyhow::anyhow!(
                    "cannot remove service {name}: {}",
                    engine_message(&e)
                ));
            }
        }
    }
    // Task containers (the running ones and Swarm's history of stopped ones) go
    // asynchronously; they hold the volumes and the network. Those still there after
    // a while belong to services that no longer exist: removed here.
    let start = Instant::now();
    loop {
        let left = task_containers(docker, project).await;
        if left.is_empty() || start.elapsed() > Duration::from_secs(60) {
            break;
        }
        if start.elapsed() > Duration::from_secs(15) {
            for id in &left {
                let _ = docker
                    .remove_container(
                        id,
                        Some(bollard::query_parameters::RemoveContainerOptions {
                            force: true,
                            ..Default::default()
                        }),
                    )
                    .await;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The network goes once they are gone (the
    // swarm may also accept the removal and finish it later: until then it is still
    // listed, and a new `up --swarm` would find it).
    let names = SwarmNames::new(project);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last_error = None;
    let existed = network_exists(docker, &names.network).await;
    loop {
        if !network_exists(docker, &names.network).await {
            if existed {
                printer.line(format!("removed network {}", names.network));
            }
            break;
        }
        if Instant::now() >= deadline {
            printer.warn(format!(
                "could not remove network {}: {}",
                names.network,
                last_error.unwrap_or_else(|| "it is still there".to_string())
            ));
            break;
        }
        match docker.remove_network(&names.network).await {
            Ok(()) => last_error = None,
            Err(e) if is_not_found(&e) => {}
            Err(e) => last_error = Some(engine_message(&e)),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    prune_secrets(docker, project, &[]).await;
    Ok(true)
}

#[cfg(test)]
mod tests;
