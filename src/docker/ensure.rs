//! Making the engine match the specs, idempotently, in two steps.
//!
//! [`preflight`] only looks: it finds what exists under the project's names and
//! refuses, before anything is changed, a container, volume or network that webui
//! did not make (the Open WebUI docs' manual `docker run`) unless `--adopt` was given.
//! [`apply`] then creates the network and volumes, and for each container: creates
//! it; keeps it when its `webui.spec-hash` matches (starting it if stopped);
//! recreates it when the spec changed (volume kept, changes printed); or takes over
//! an unmanaged one (stopped, renamed `<name>-pre-webui`, restart policy `no`, kept
//! for the user to remove).
//!
//! Architecture Invariant: nothing here removes a volume; [`down`] does only with
//! `purge` set, which `webui down --purge-data --yes` alone passes.

use std::collections::{BTreeMap, HashMap};

use bollard::Docker;
use bollard::models::{
    ContainerSummary, ContainerUpdateBody, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    DownloadFromContainerOptions, ListContainersOptions, ListVolumesOptions,
    RemoveContainerOptions, RenameContainerOptions, StopContainerOptions,
};
use futures_util::StreamExt;

use super::spec::{
    self, ContainerSpec, LABEL_HASH, LABEL_MANAGED, LABEL_PROJECT, LABEL_SPEC, Names,
};
use super::{Role, engine_message, is_not_found};
use crate::cli::NetworkMode;
use crate::config::up::Project;
use crate::error::UserError;
use crate::output::Printer;

/// Seconds a container gets to stop before it is killed. Open WebUI may be writing
/// its database; give it time.
pub const STOP_TIMEOUT_SECS: i32 = 30;

/// Where a container keeps the data directory of its role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataMount {
    Volume(String),
    Bind(String),
}

/// A container found under one of the project's names.
#[derive(Debug, Clone)]
pub struct Existing {
    pub id: String,
    pub name: String,
    pub labels: HashMap<String, String>,
    pub running: bool,
    pub status: String,
    pub image: String,
    pub env: Vec<String>,
    pub data_mount: Option<DataMount>,
    /// Host ports it publishes.
    pub published: Vec<u16>,
    /// `host` or the network it is attached to.
    pub network_mode: String,
    pub restart_count: i64,
}

impl Existing {
    /// True when this running container may be what holds `port` on the host: it
    /// publishes it, or it uses the host's network.
    pub fn may_hold_port(&self, port: u16) -> bool {
        self.running && (self.published.contains(&port) || self.network_mode == "host")
    }

    /// The project label, when webui made this container.
    pub fn managed_by(&self) -> Option<&str> {
        (self.labels.get(LABEL_MANAGED).map(String::as_str) == Some("true")).then(|| {
            self.labels
                .get(LABEL_PROJECT)
                .map(String::as_str)
                .unwrap_or("")
        })
    }

    pub fn hash(&self) -> Option<&str> {
        self.labels.get(LABEL_HASH).map(String::as_str)
    }

    pub fn summary(&self) -> BTreeMap<String, String> {
        self.labels
            .get(LABEL_SPEC)
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default()
    }

    pub fn env_value(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .find_map(|e| e.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
    }
}

/// Inspects the container `name`; `data_target` is where its role keeps data.
pub async fn inspect_container(
    docker: &Docker,
    name: &str,
    data_target: &str,
) -> anyhow::Result<Option<Existing>> {
    let c = match docker.inspect_container(name, None).await {
        Ok(c) => c,
        Err(e) if is_not_found(&e) => return Ok(None),
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!("cannot inspect container {name}")));
        }
    };
    let config = c.config.unwrap_or_default();
    let host_config = c.host_config.unwrap_or_default();
    let mut published: Vec<u16> = host_config
        .port_bindings
        .unwrap_or_default()
        .into_values()
        .flatten()
        .flatten()
        .filter_map(|b| b.host_port.and_then(|p| p.parse().ok()))
        .collect();
    published.sort_unstable();
    published.dedup();
    let state = c.state.unwrap_or_default();
    let data_mount = c.mounts.unwrap_or_default().into_iter().find_map(|m| {
        if m.destination.as_deref() != Some(data_target) {
            return None;
        }
        match m.name {
            Some(n) if !n.is_empty() => Some(DataMount::Volume(n)),
            _ => Some(DataMount::Bind(m.source.unwrap_or_default())),
        }
    });
    Ok(Some(Existing {
        id: c.id.unwrap_or_default(),
        name: name.to_string(),
        labels: config.labels.unwrap_or_default(),
        running: state.running.unwrap_or(false),
        status: state.status.map(|s| s.to_string()).unwrap_or_default(),
        image: config.image.unwrap_or_default(),
        env: config.env.unwrap_or_default(),
        data_mount,
        published,
        network_mode: host_config.network_mode.unwrap_or_default(),
        restart_count: c.restart_count.unwrap_or(0),
    }))
}

/// Who owns an object with one of the project's names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    Absent,
    /// Made by webui for this project.
    Ours,
    /// Not made by webui (no `webui.managed` label).
    Unmanaged,
    /// Made by webui for another project.
    OtherProject(String),
}

fn owner_of(labels: Option<&HashMap<String, String>>, project: &Project) -> Owner {
    let Some(labels) = labels else {
        return Owner::Unmanaged;
    };
    if labels.get(LABEL_MANAGED).map(String::as_str) != Some("true") {
        return Owner::Unmanaged;
    }
    match labels.get(LABEL_PROJECT) {
        Some(p) if p == project.key() => Owner::Ours,
        Some(p) => Owner::OtherProject(p.clone()),
        None => Owner::Unmanaged,
    }
}

pub async fn volume_owner(docker: &Docker, name: &str, project: &Project) -> anyhow::Result<Owner> {
    match docker.inspect_volume(name).await {
        Ok(v) => Ok(owner_of(Some(&v.labels), project)),
        Err(e) if is_not_found(&e) => Ok(Owner::Absent),
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot inspect volume {name}"))),
    }
}

pub async fn network_owner(
    docker: &Docker,
    name: &str,
    project: &Project,
) -> anyhow::Result<Owner> {
    match docker.inspect_network(name, None).await {
        Ok(n) => Ok(owner_of(n.labels.as_ref(), project)),
        Err(e) if is_not_found(&e) => Ok(Owner::Absent),
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot inspect network {name}"))),
    }
}

/// What [`preflight`] found, and what [`apply`] will do about it.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub create_network: bool,
    /// Volumes to create, by role.
    pub create_volumes: Vec<Role>,
    /// The existing container per wanted role (managed or, with --adopt, not).
    pub containers: BTreeMap<Role, Existing>,
    /// Names of unmanaged volumes and networks used because of --adopt (to record).
    pub adopted: Vec<String>,
    /// Existing replicas 2..N (`up --replicas`), by container name.
    pub replicas: BTreeMap<String, Existing>,
    /// Managed containers no longer wanted: Ollama without --ollama now, Postgres or
    /// Redis without replicas, replicas beyond --replicas. Removed; volumes stay.
    pub unwanted: Vec<Existing>,
    /// True when Open WebUI's data volume existed before this run.
    pub data_existed: bool,
}

fn refuse(kind: &str, name: &str, what: &str, project: &Project) -> anyhow::Error {
    let other = if project.name().is_some() {
        "another --project name"
    } else {
        "--project NAME"
    };
    UserError::new(format!(
        "a {kind} named `{name}` exists that webui did not create{what}"
    ))
    .hint(format!(
        "to take it over and keep its data, run again with --adopt; to run a separate instance beside it, use {other}"
    ))
    .into()
}

fn other_project(kind: &str, name: &str, p: &str) -> anyhow::Error {
    UserError::new(format!(
        "the {kind} `{name}` belongs to webui project `{p}`"
    ))
    .hint("pick another --project name")
    .into()
}

/// Looks at everything under the project's names and decides, without changing
/// anything. `adopted_before` are names recorded by earlier `--adopt` runs.
pub async fn preflight(
    docker: &Docker,
    project: &Project,
    network: NetworkMode,
    roles: &[Role],
    extra_replicas: &[String],
    adopt: bool,
    adopted_before: &[String],
) -> anyhow::Result<Plan> {
    let names = Names::new(project);
    let mut plan = Plan::default();
    let known = |n: &str| adopted_before.iter().any(|a| a == n);

    if network == NetworkMode::Bridge {
        match network_owner(docker, &names.network, project).await? {
            Owner::Absent => plan.create_network = true,
            Owner::Ours => {}
            Owner::Unmanaged if adopt || known(&names.network) => {
                plan.adopted.push(names.network.clone());
            }
            Owner::Unmanaged => return Err(refuse("network", &names.network, "", project)),
            Owner::OtherProject(p) => return Err(other_project("network", &names.network, &p)),
        }
    }

    for &role in roles {
        let cname = names.container(role);
        let target = data_target(role);
        if let Some(c) = inspect_container(docker, cname, target).await? {
            match c.managed_by() {
                Some(p) if p == project.key() => {}
                Some(p) => return Err(other_project("container", cname, p)),
                None if !adopt => {
                    let what = format!(" (image {}, {})", c.image, c.status);
                    return Err(refuse("container", cname, &what, project));
                }
                None => check_adoptable(&c, names.volume(role), target)?,
            }
            plan.containers.insert(role, c);
        }
        let vname = names.volume(role);
        match volume_owner(docker, vname, project).await? {
            Owner::Absent => plan.create_volumes.push(role),
            Owner::Ours => {}
            Owner::Unmanaged if adopt || known(vname) => plan.adopted.push(vname.to_string()),
            Owner::Unmanaged => {
                return Err(refuse(
                    "volume",
                    vname,
                    " (it may hold the data of an earlier install)",
                    project,
                ));
            }
            Owner::OtherProject(p) => return Err(other_project("volume", vname, &p)),
        }
        if role == Role::OpenWebui {
            plan.data_existed = !plan.create_volumes.contains(&Role::OpenWebui);
        }
    }

    for role in [Role::OpenWebui, Role::Ollama, Role::Postgres, Role::Redis] {
        if roles.contains(&role) {
            continue;
        }
        if let Some(c) = inspect_container(docker, names.container(role), data_target(role)).await?
            && c.managed_by() == Some(project.key())
        {
            plan.unwanted.push(c);
        }
    }

    // Replicas 2..N: only ever webui's own (they have no name from the docs).
    for name in extra_replicas {
        if let Some(c) = inspect_container(docker, name, spec::OPENWEBUI_DATA).await? {
            match c.managed_by() {
                Some(p) if p == project.key() => {}
                Some(p) => return Err(other_project("container", name, p)),
                None => {
                    let what = format!(" (image {}, {})", c.image, c.status);
                    return Err(refuse("container", name, &what, project));
                }
            }
            plan.replicas.insert(name.clone(), c);
        }
    }
    // Replicas beyond --replicas (scaling down): removed, the shared volume stays.
    for c in list_managed(docker, project).await? {
        let labels = c.labels.unwrap_or_default();
        let name = c
            .names
            .and_then(|n| n.first().cloned())
            .map(|n| n.trim_start_matches('/').to_string())
            .unwrap_or_default();
        if labels.get(spec::LABEL_ROLE).map(String::as_str) == Some(Role::OpenWebui.as_str())
            && labels.contains_key(super::replicas::LABEL_REPLICA)
            && name != names.open_webui
            && !extra_replicas.contains(&name)
            && let Some(e) = inspect_container(docker, &name, spec::OPENWEBUI_DATA).await?
        {
            plan.unwanted.push(e);
        }
    }
    Ok(plan)
}

pub fn data_target(role: Role) -> &'static str {
    match role {
        Role::OpenWebui => spec::OPENWEBUI_DATA,
        Role::Ollama => spec::OLLAMA_DATA,
        Role::Postgres => super::replicas::POSTGRES_DATA,
        Role::Redis => super::replicas::REDIS_DATA,
    }
}

/// An unmanaged container can be taken over when its data is in the volume webui
/// would use; anything else would leave its data behind.
fn check_adoptable(c: &Existing, volume: &str, target: &str) -> anyhow::Result<()> {
    let problem = match &c.data_mount {
        Some(DataMount::Volume(v)) if v == volume => return Ok(()),
        Some(DataMount::Volume(v)) => format!("keeps {target} in the volume `{v}`, not `{volume}`"),
        Some(DataMount::Bind(path)) => {
            format!("keeps {target} in the host directory {path}, not in the volume `{volume}`")
        }
        None => format!("keeps {target} inside the container itself, not in a volume"),
    };
    Err(UserError::new(format!(
        "cannot adopt the container `{}`: it {problem}; webui would start without its data",
        c.name
    ))
    .hint(format!(
        "copy the data into a volume named `{volume}` first (e.g. with `docker run --rm -v ...:/from -v {volume}:/to alpine cp -a /from/. /to/`), then run `webui up --adopt` again"
    ))
    .into())
}

/// What happened to one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Created,
    /// Same spec; `started` when it had been stopped.
    Kept {
        started: bool,
    },
    Recreated {
        changes: Vec<String>,
    },
    /// An unmanaged container was taken over; the old one is kept stopped under
    /// `renamed_to`.
    Adopted {
        renamed_to: String,
    },
}

/// Makes the engine match `specs` (Ollama before Open WebUI), per `plan`.
pub async fn apply(
    docker: &Docker,
    project: &Project,
    plan: &Plan,
    specs: &[ContainerSpec],
    printer: &Printer,
) -> anyhow::Result<Vec<(String, Outcome)>> {
    let names = Names::new(project);
    for c in &plan.unwanted {
        stop_and_remove(docker, &c.name).await?;
        let volume = match &c.data_mount {
            Some(DataMount::Volume(_)) if c.labels.contains_key(super::replicas::LABEL_REPLICA) => {
                "the shared data volume stays"
            }
            _ => "its volume stays",
        };
        printer.line(format!("removed {} (no longer wanted; {volume})", c.name));
    }
    if plan.create_network {
        docker
            .create_network(spec::network_body(project))
            .await
            .map_err(|e| {
                anyhow::Error::new(e).context(format!("cannot create network {}", names.network))
            })?;
        printer.line(format!("created network {}", names.network));
    }
    for &role in &plan.create_volumes {
        docker
            .create_volume(spec::volume_body(project, role))
            .await
            .map_err(|e| {
                anyhow::Error::new(e)
                    .context(format!("cannot create volume {}", names.volume(role)))
            })?;
        printer.line(format!("created volume {}", names.volume(role)));
    }
    for name in &plan.adopted {
        printer.line(format!(
            "using {name}, which webui did not create (--adopt)"
        ));
    }

    let mut outcomes = Vec::new();
    for s in specs {
        let existing = match plan.containers.get(&s.role) {
            Some(c) if c.name == s.name => Some(c),
            _ => plan.replicas.get(&s.name),
        };
        let outcome = ensure_container(docker, s, existing).await?;
        let short = |id: &str| spec::short_id(id);
        match &outcome {
            Outcome::Created => printer.line(format!("created {} ({})", s.name, s.image)),
            Outcome::Kept { started: false } => {
                printer.line(format!("{} is up to date", s.name));
            }
            Outcome::Kept { started: true } => {
                printer.line(format!("{} is up to date; started it", s.name));
            }
            Outcome::Recreated { changes } => {
                printer.line(format!("recreated {} because its settings changed:", s.name));
                for c in changes {
                    printer.line(format!("  {c}"));
                }
            }
            Outcome::Adopted { renamed_to } => printer.line(format!(
                "took over {}: the old container is stopped and kept as {renamed_to} (remove it with `docker rm {renamed_to}` once all is well); the new one ({}) uses the same volume",
                s.name,
                short(&s.image_id)
            )),
        }
        outcomes.push((s.name.clone(), outcome));
    }
    Ok(outcomes)
}

async fn ensure_container(
    docker: &Docker,
    spec: &ContainerSpec,
    existing: Option<&Existing>,
) -> anyhow::Result<Outcome> {
    let Some(old) = existing else {
        create_and_start(docker, spec).await?;
        return Ok(Outcome::Created);
    };
    if old.managed_by().is_none() {
        let renamed_to = set_aside(docker, old).await?;
        create_and_start(docker, spec).await?;
        return Ok(Outcome::Adopted { renamed_to });
    }
    if old.hash() == Some(spec.hash().as_str()) {
        let started = if old.running || old.status == "restarting" {
            false
        } else {
            start(docker, &spec.name).await?;
            true
        };
        return Ok(Outcome::Kept { started });
    }
    let mut changes = spec::diff(&old.summary(), &spec.summary());
    if changes.is_empty() {
        changes.push("labels or internal settings of an older webui".to_string());
    }
    stop_and_remove(docker, &old.name).await?;
    create_and_start(docker, spec).await?;
    Ok(Outcome::Recreated { changes })
}

/// Stops an unmanaged container, renames it out of the way and turns its restart
/// policy off so it cannot come back beside ours after a reboot.
async fn set_aside(docker: &Docker, old: &Existing) -> anyhow::Result<String> {
    let mut new_name = format!("{}-pre-webui", old.name);
    if docker.inspect_container(&new_name, None).await.is_ok() {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        new_name = format!("{}-pre-webui-{secs}", old.name);
    }
    stop(docker, &old.name).await?;
    docker
        .update_container(
            &old.name,
            ContainerUpdateBody {
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::NO),
                    maximum_retry_count: None,
                }),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| {
            anyhow::Error::new(e).context(format!(
                "cannot turn off the restart policy of {}",
                old.name
            ))
        })?;
    docker
        .rename_container(
            &old.name,
            RenameContainerOptions {
                name: new_name.clone(),
            },
        )
        .await
        .map_err(|e| {
            anyhow::Error::new(e).context(format!("cannot rename {} to {new_name}", old.name))
        })?;
    Ok(new_name)
}

async fn create_and_start(docker: &Docker, spec: &ContainerSpec) -> anyhow::Result<()> {
    create(docker, spec).await?;
    start(docker, &spec.name).await
}

/// Creates the container `spec` describes (not started); engine warnings are logged.
pub async fn create(docker: &Docker, spec: &ContainerSpec) -> anyhow::Result<()> {
    let opts = bollard::query_parameters::CreateContainerOptions {
        name: Some(spec.name.clone()),
        ..Default::default()
    };
    let resp = docker
        .create_container(Some(opts), spec.create_body())
        .await
        .map_err(|e| {
            anyhow::Error::new(e).context(format!("cannot create container {}", spec.name))
        })?;
    for w in resp.warnings {
        tracing::warn!("docker: {w}");
    }
    Ok(())
}

/// Starts a container; one already running is fine (the engine's 304). A failure the
/// user can fix (port taken, GPU driver missing) becomes a [`UserError`].
pub async fn start(docker: &Docker, name: &str) -> anyhow::Result<()> {
    match docker.start_container(name, None).await {
        Ok(())
        | Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 304, ..
        }) => Ok(()),
        Err(e) => Err(start_error(name, &engine_message(&e)).unwrap_or_else(|| {
            anyhow::Error::new(e).context(format!("cannot start container {name}"))
        })),
    }
}

/// A start failure the user can fix, from the engine's message.
pub fn start_error(name: &str, message: &str) -> Option<anyhow::Error> {
    let m = message.to_ascii_lowercase();
    if m.contains("port is already allocated") || m.contains("address already in use") {
        return Some(
            UserError::new(format!(
                "cannot start {name}: its port is taken ({message})"
            ))
            .hint("pick another port with --port, or stop what holds it")
            .into(),
        );
    }
    if m.contains("could not select device driver") {
        return Some(
            UserError::new(format!(
                "cannot start {name}: the engine cannot give it GPUs ({message})"
            ))
            .hint("install nvidia-container-toolkit and restart Docker, or use --gpu none")
            .into(),
        );
    }
    None
}

/// Stops a container; already stopped or gone is fine.
pub async fn stop(docker: &Docker, name: &str) -> anyhow::Result<()> {
    let opts = StopContainerOptions {
        t: Some(STOP_TIMEOUT_SECS),
        signal: None,
    };
    match docker.stop_container(name, Some(opts)).await {
        Ok(()) => Ok(()),
        // 304: already stopped.
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 304, ..
        }) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot stop container {name}"))),
    }
}

/// Stops and removes a container; its volumes stay (`v=false`).
pub async fn stop_and_remove(docker: &Docker, name: &str) -> anyhow::Result<()> {
    stop(docker, name).await?;
    let opts = RemoveContainerOptions {
        v: false,
        force: true,
        link: false,
    };
    match docker.remove_container(name, Some(opts)).await {
        Ok(()) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot remove container {name}"))),
    }
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

/// The project's containers, running or not.
pub async fn list_managed(
    docker: &Docker,
    project: &Project,
) -> anyhow::Result<Vec<ContainerSummary>> {
    let opts = ListContainersOptions {
        all: true,
        filters: Some(project_filter(project)),
        ..Default::default()
    };
    docker
        .list_containers(Some(opts))
        .await
        .map_err(|e| anyhow::Error::new(e).context("cannot list containers"))
}

/// The project's volumes: labelled ones plus `adopted` names that exist.
pub async fn project_volumes(
    docker: &Docker,
    project: &Project,
    adopted: &[String],
) -> anyhow::Result<Vec<String>> {
    let opts = ListVolumesOptions {
        filters: Some(project_filter(project)),
    };
    let mut names: Vec<String> = docker
        .list_volumes(Some(opts))
        .await
        .map_err(|e| anyhow::Error::new(e).context("cannot list volumes"))?
        .volumes
        .unwrap_or_default()
        .into_iter()
        .map(|v| v.name)
        .collect();
    for a in adopted {
        if !names.contains(a) && docker.inspect_volume(a).await.is_ok() {
            names.push(a.clone());
        }
    }
    names.sort();
    Ok(names)
}

/// `webui down`: stops and removes the project's containers and its network; with
/// `purge_volumes`, also removes these volumes.
pub async fn down(
    docker: &Docker,
    project: &Project,
    purge_volumes: &[String],
    printer: &Printer,
) -> anyhow::Result<()> {
    let names = Names::new(project);
    let containers = list_managed(docker, project).await?;
    if containers.is_empty() {
        printer.line("no containers to remove");
    }
    for c in containers {
        let name = c
            .names
            .and_then(|n| n.first().cloned())
            .map(|n| n.trim_start_matches('/').to_string())
            .or(c.id)
            .unwrap_or_default();
        stop_and_remove(docker, &name).await?;
        printer.line(format!("removed container {name}"));
    }
    if network_owner(docker, &names.network, project).await? == Owner::Ours {
        match docker.remove_network(&names.network).await {
            Ok(()) => printer.line(format!("removed network {}", names.network)),
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                return Err(UserError::new(format!(
                    "cannot remove network {}: {}",
                    names.network,
                    engine_message(&e)
                ))
                .hint("another container is still attached to it; see `docker network inspect`")
                .into());
            }
        }
    }
    for v in purge_volumes {
        match docker
            .remove_volume(v, None::<bollard::query_parameters::RemoveVolumeOptions>)
            .await
        {
            Ok(()) => printer.line(format!("deleted volume {v}")),
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!("cannot delete volume {v}")));
            }
        }
    }
    Ok(())
}

/// The `WEBUI_SECRET_KEY` an unmanaged Open WebUI container runs with: from its
/// environment, else the file the image's start script generated inside the
/// container (`/app/backend/.webui_secret_key`).
pub async fn secret_of(docker: &Docker, c: &Existing) -> Option<String> {
    if let Some(k) = c.env_value("WEBUI_SECRET_KEY").filter(|k| !k.is_empty()) {
        return Some(k.to_string());
    }
    let opts = DownloadFromContainerOptions {
        path: "/app/backend/.webui_secret_key".to_string(),
    };
    let mut stream = docker.download_from_container(&c.name, Some(opts));
    let mut tar = Vec::new();
    while let Some(chunk) = stream.next().await {
        tar.extend_from_slice(&chunk.ok()?);
        if tar.len() > 1 << 20 {
            return None;
        }
    }
    let body = first_file_in_tar(&tar)?;
    let key = String::from_utf8(body).ok()?.trim().to_string();
    (!key.is_empty()).then_some(key)
}

/// The contents of the first regular file in a tar archive (pax headers skipped).
pub fn first_file_in_tar(tar: &[u8]) -> Option<Vec<u8>> {
    let mut pos = 0;
    while pos + 512 <= tar.len() {
        let header = &tar[pos..pos + 512];
        if header.iter().all(|&b| b == 0) {
            return None;
        }
        let size_field = std::str::from_utf8(&header[124..136]).ok()?;
        let size = u64::from_str_radix(size_field.trim_matches(|c: char| c == '\0' || c == ' '), 8)
            .ok()? as usize;
        let typeflag = header[156];
        let data_start = pos + 512;
        let data_end = data_start.checked_add(size)?;
        if data_end > tar.len() {
            return None;
        }
        if typeflag == b'0' || typeflag == 0 {
            return Some(tar[data_start..data_end].to_vec());
        }
        pos = data_start + size.div_ceil(512) * 512;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_entry(name: &str, typeflag: u8, body: &[u8]) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        let size = format!("{:011o}\0", body.len());
        h[124..136].copy_from_slice(size.as_bytes());
        h[156] = typeflag;
        let mut out = h;
        out.extend_from_slice(body);
        out.resize(512 + body.len().div_ceil(512) * 512, 0);
        out
    }

    #[test]
    fn tar_first_file() {
        let mut t = tar_entry("PaxHeaders/x", b'x', b"30 mtime=1.0\n");
        t.extend(tar_entry(".webui_secret_key", b'0', b"abc123\n"));
        t.extend(vec![0u8; 1024]);
        assert_eq!(first_file_in_tar(&t).unwrap(), b"abc123\n");
        assert_eq!(first_file_in_tar(&[0u8; 1024]), None);
        assert_eq!(first_file_in_tar(b"short"), None);
    }

    #[test]
    fn owners_from_labels() {
        let p = Project::named("t-a").unwrap();
        let mut l = HashMap::new();
        assert_eq!(owner_of(None, &p), Owner::Unmanaged);
        assert_eq!(owner_of(Some(&l), &p), Owner::Unmanaged);
        l.insert(LABEL_MANAGED.to_string(), "true".to_string());
        l.insert(LABEL_PROJECT.to_string(), "t-a".to_string());
        assert_eq!(owner_of(Some(&l), &p), Owner::Ours);
        l.insert(LABEL_PROJECT.to_string(), "t-b".to_string());
        assert_eq!(owner_of(Some(&l), &p), Owner::OtherProject("t-b".into()));
    }

    #[test]
    fn adoptable_only_with_the_data_volume() {
        let c = |m: Option<DataMount>| Existing {
            id: "1".into(),
            name: "open-webui".into(),
            labels: HashMap::new(),
            running: true,
            status: "running".into(),
            image: "x".into(),
            env: vec!["WEBUI_SECRET_KEY=k".into()],
            data_mount: m,
            published: vec![],
            network_mode: "bridge".into(),
            restart_count: 0,
        };
        assert!(
            check_adoptable(
                &c(Some(DataMount::Volume("open-webui".into()))),
                "open-webui",
                "/d"
            )
            .is_ok()
        );
        for m in [
            Some(DataMount::Volume("other".into())),
            Some(DataMount::Bind("/srv/x".into())),
            None,
        ] {
            let e = check_adoptable(&c(m), "open-webui", "/d").unwrap_err();
            assert_eq!(crate::error::exit_code(&e), 1);
        }
        assert_eq!(c(None).env_value("WEBUI_SECRET_KEY"), Some("k"));
        assert_eq!(c(None).managed_by(), None);
    }

    #[test]
    fn start_errors() {
        assert!(start_error("x", "driver failed programming external connectivity: Bind for 127.0.0.1:3000 failed: port is already allocated").is_some());
        assert!(
            start_error(
                "x",
                "could not select device driver \"\" with capabilities: [[gpu]]"
            )
            .is_some()
        );
        assert!(start_error("x", "odd").is_none());
    }
}
