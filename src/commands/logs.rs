//! `webui logs [open-webui|ollama|postgres|redis|all] [--replica K] [-f] [--tail N]
//! [--since T] [--timestamps]`:
//! the containers' output through the Docker API. Container stdout goes to stdout,
//! stderr to stderr; with several containers each line starts with `service | `, like
//! compose (`open-webui-2` for replica 2 of `up --replicas`). Without `-f` the
//! services are shown one after the other. With `-f` lines are interleaved as they
//! come, until SIGINT/SIGTERM or what is followed has been gone for 10 s (`webui
//! down`): a container that restarts or is recreated (the supervisor, `webui update`)
//! is followed on from the line after the last one shown. On a swarm project (`up
//! --swarm`) the same for the services' tasks, through the manager, each named
//! `service.slot@node`; a task that replaces another is followed as it starts.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cli::{GlobalArgs, LogService, LogsCmd};
use crate::config::up::Project;
use crate::docker::logs::{self, Line, Options, Source, Target};
use crate::docker::replicas::LABEL_REPLICA;
use crate::docker::spec::{LABEL_ROLE, Names};
use crate::docker::{self, Role, ensure, swarm};
use crate::error::UserError;
use crate::output::Printer;
use bollard::models::ContainerSummaryStateEnum;

pub async fn run(global: &GlobalArgs, cmd: &LogsCmd, _printer: Printer) -> anyhow::Result<u8> {
    let project = Project::resolve(global.project.as_deref())?;
    let opts = Options {
        follow: cmd.follow,
        tail: match &cmd.tail {
            Some(t) => logs::parse_tail(t)?,
            None => "all".into(),
        },
        since: match &cmd.since {
            Some(s) => logs::parse_since(s, SystemTime::now())?,
            None => 0,
        },
        timestamps: cmd.timestamps,
        after: None,
    };
    let docker = docker::connect().await?;
    // `up --swarm`: the services' tasks, on whichever node they run.
    let on_swarm = matches!(swarm::services(&docker, &project).await, Ok(s) if !s.is_empty());
    if !on_swarm && cmd.service == Some(LogService::Proxy) {
        return Err(UserError::new(
            "the proxy is the `webui up` process itself, not a container",
        )
        .hint(format!(
            "its log is where that process writes: `journalctl -u {}` under systemd, else the terminal it runs in",
            super::service::unit_name(&project)
        ))
        .into());
    }
    let targets = find(&docker, &project, cmd, on_swarm).await?;
    if opts.follow {
        follow(&docker, &project, cmd, on_swarm, targets, &opts).await
    } else {
        show(&docker, targets, &opts).await
    }
}

/// One log `webui logs` shows: its name in the output, whose it is, and whether that
/// container or task runs now.
#[derive(Debug, Clone)]
struct Found {
    shown: String,
    target: Target,
    running: bool,
}

async fn find(
    docker: &bollard::Docker,
    project: &Project,
    cmd: &LogsCmd,
    on_swarm: bool,
) -> anyhow::Result<Vec<Found>> {
    if on_swarm {
        swarm_targets(docker, project, cmd).await
    } else {
        host_targets(docker, project, cmd).await
    }
}

/// The containers whose logs `webui logs` shows on a single host.
async fn host_targets(
    docker: &bollard::Docker,
    project: &Project,
    cmd: &LogsCmd,
) -> anyhow::Result<Vec<Found>> {
    let names = Names::new(project);
    let managed = ensure::list_managed(docker, project).await?;
    // (role, replica, container name, shown service, running) of every container, in order.
    let mut containers: Vec<(Role, Option<u32>, String, String, bool)> = managed
        .iter()
        .filter_map(|c| {
            let labels = c.labels.as_ref()?;
            let role = labels.get(LABEL_ROLE).and_then(|r| Role::parse(r))?;
            let replica: Option<u32> = labels.get(LABEL_REPLICA).and_then(|r| r.parse().ok());
            let name = c
                .names
                .as_ref()?
                .first()?
                .trim_start_matches('/')
                .to_string();
            let shown = match replica {
                Some(k) if k > 1 => format!("{role}-{k}"),
                _ => role.as_str().to_string(),
            };
            let running = c.state == Some(ContainerSummaryStateEnum::RUNNING);
            Some((role, replica, name, shown, running))
        })
        .collect();
    containers.sort();
    let present: Vec<Role> = containers.iter().map(|c| c.0).collect();
    let wanted: Vec<Role> = match cmd.service.unwrap_or(LogService::All) {
        LogService::All if cmd.replica.is_some() => vec![Role::OpenWebui],
        LogService::All => {
            let mut all = present.clone();
            all.dedup();
            all
        }
        LogService::OpenWebui => vec![Role::OpenWebui],
        LogService::Ollama => vec![Role::Ollama],
        LogService::Postgres => vec![Role::Postgres],
        LogService::Redis => vec![Role::Redis],
        LogService::Proxy => Vec::new(),
    };
    if cmd.replica.is_some() && wanted != [Role::OpenWebui] {
        return Err(
            UserError::new("--replica picks one of the Open WebUI replicas")
                .hint("webui logs open-webui --replica 2")
                .into(),
        );
    }
    let targets: Vec<Found> = containers
        .iter()
        .filter(|(role, replica, ..)| {
            wanted.contains(role) && cmd.replica.is_none_or(|k| replica.unwrap_or(1) == k)
        })
        .map(|(_, _, name, shown, running)| Found {
            shown: shown.clone(),
            target: Target::Container(name.clone()),
            running: *running,
        })
        .collect();
    if let Some(k) = cmd.replica
        && targets.is_empty()
    {
        return Err(UserError::new(format!(
            "project {} has no Open WebUI replica {k}",
            project.key()
        ))
        .hint("`webui status` lists the replicas")
        .into());
    }
    if let Some(missing) = wanted.iter().find(|r| !present.contains(r)) {
        return Err(UserError::new(format!(
            "there is no {} container in project {}",
            names.container(*missing),
            project.key()
        ))
        .hint(format!("start it with `webui{} up`", project.flag()))
        .into());
    }
    if wanted.is_empty() {
        return Err(
            UserError::new(format!("project {} has no containers", project.key()))
                .hint(format!("start them with `webui{} up`", project.flag()))
                .into(),
        );
    }
    Ok(targets)
}

/// The tasks whose logs `webui logs` shows for a swarm project, named
/// `service.slot@node`: those meant to run now, or a service's latest one when none is
/// (a task that keeps failing is what one looks for).
async fn swarm_targets(
    docker: &bollard::Docker,
    project: &Project,
    cmd: &LogsCmd,
) -> anyhow::Result<Vec<Found>> {
    let role = match cmd.service.unwrap_or(LogService::All) {
        LogService::All if cmd.replica.is_some() => Some("open-webui"),
        LogService::All => None,
        LogService::OpenWebui => Some("open-webui"),
        LogService::Postgres => Some("postgres"),
        LogService::Redis => Some("redis"),
        LogService::Proxy => Some("proxy"),
        LogService::Ollama => {
            return Err(UserError::new(format!(
                "project {} runs on Docker Swarm, which runs no Ollama",
                project.key()
            ))
            .hint("see the logs where Ollama runs (`webui logs ollama` on the GPU box)")
            .into());
        }
    };
    if cmd.replica.is_some() && role != Some("open-webui") {
        return Err(
            UserError::new("--replica picks one of the Open WebUI tasks (its slot)")
                .hint("webui logs open-webui --replica 2")
                .into(),
        );
    }
    let mut targets = Vec::new();
    for s in swarm::report(docker, project).await? {
        if role.is_some_and(|r| r != s.service) {
            continue;
        }
        let mut tasks: Vec<&swarm::TaskReport> = s
            .tasks
            .iter()
            .filter(|t| t.desired_state == "running")
            .filter(|t| cmd.replica.is_none_or(|k| t.slot == Some(i64::from(k))))
            .collect();
        if tasks.is_empty() && cmd.replica.is_none() {
            // Sorted newest first after the running ones.
            tasks.extend(s.tasks.first());
        }
        for t in tasks {
            let slot = t.slot.map(|n| format!(".{n}")).unwrap_or_default();
            let node = match t.node.as_str() {
                "" => String::new(),
                n => format!("@{n}"),
            };
            targets.push(Found {
                shown: format!("{}{slot}{node}", s.service),
                target: Target::Task(t.full_id.clone()),
                running: t.state == "running",
            });
        }
    }
    if targets.is_empty() {
        let what = match (role, cmd.replica) {
            (_, Some(k)) => format!("no Open WebUI task in slot {k}"),
            (Some(r), None) => format!("no {r} service"),
            (None, None) => "no tasks".into(),
        };
        return Err(
            UserError::new(format!("project {} has {what}", project.key()))
                .hint(format!(
                    "`webui{} status` lists the services and their tasks",
                    project.flag()
                ))
                .into(),
        );
    }
    Ok(targets)
}

/// Prints the targets' lines, one after the other.
async fn show(docker: &bollard::Docker, targets: Vec<Found>, opts: &Options) -> anyhow::Result<u8> {
    let width = targets.iter().map(|t| t.shown.len()).max().unwrap_or(0);
    let several = targets.len() > 1;
    let shutdown = CancellationToken::new();
    crate::signal::cancel_on_signal(shutdown.clone())?;
    for found in targets {
        let (tx, mut rx) = mpsc::channel::<Line>(1024);
        let task = tokio::spawn(logs::stream_target(
            docker.clone(),
            found.shown,
            found.target,
            opts.clone(),
            tx,
        ));
        loop {
            tokio::select! {
                line = rx.recv() => {
                    let Some(line) = line else { break };
                    if !print(&line, several, width) {
                        return Ok(0);
                    }
                }
                _ = shutdown.cancelled() => return Ok(0),
            }
        }
        task.await??;
    }
    Ok(0)
}

/// How many seconds `-f` waits on a project without containers before it ends.
const GONE_FOR: u32 = 10;

/// One followed log: its stream while it runs, and the time of the last line shown.
struct Followed {
    stream: Option<tokio::task::JoinHandle<anyhow::Result<Option<SystemTime>>>>,
    started: SystemTime,
    last: Option<SystemTime>,
}

/// `-f`: the targets' lines interleaved as they come. Once a second the project is
/// looked at again: a log whose stream ended (its container stopped) is read again
/// from after its last line once the container runs again, and a new target (a
/// recreated container, a swarm task replacing another) is followed from its start.
async fn follow(
    docker: &bollard::Docker,
    project: &Project,
    cmd: &LogsCmd,
    on_swarm: bool,
    first: Vec<Found>,
    opts: &Options,
) -> anyhow::Result<u8> {
    let shutdown = CancellationToken::new();
    crate::signal::cancel_on_signal(shutdown.clone())?;
    let (tx, mut rx) = mpsc::channel::<Line>(1024);
    let several = first.len() > 1;
    let mut width = first.iter().map(|t| t.shown.len()).max().unwrap_or(0);
    let mut followed: HashMap<Target, Followed> = HashMap::new();
    let start = |found: &Found, opts: Options| Followed {
        stream: Some(tokio::spawn(logs::stream_target(
            docker.clone(),
            found.shown.clone(),
            found.target.clone(),
            opts,
            tx.clone(),
        ))),
        started: SystemTime::now(),
        last: None,
    };
    for found in &first {
        followed.insert(found.target.clone(), start(found, opts.clone()));
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut gone = 0;
    loop {
        tokio::select! {
            line = rx.recv() => {
                let Some(line) = line else { continue };
                width = width.max(line.service.len());
                if !print(&line, several, width) {
                    return Ok(0);
                }
            }
            _ = tick.tick() => {
                for f in followed.values_mut() {
                    if let Some(stream) = f.stream.take_if(|s| s.is_finished()) {
                        match stream.await {
                            Ok(Ok(last)) => f.last = last.or(f.last),
                            Ok(Err(e)) => tracing::debug!("a log stream ended: {e:#}"),
                            Err(e) => tracing::debug!("a log stream failed: {e}"),
                        }
                    }
                }
                // Gone for now (an update recreating containers) reads as none.
                let found = find(docker, project, cmd, on_swarm).await.unwrap_or_default();
                if found.is_empty() && followed.values().all(|f| f.stream.is_none()) {
                    gone += 1;
                    if gone >= GONE_FOR {
                        eprintln!(
                            "webui logs: nothing left to follow in project {} for {GONE_FOR} s (removed, e.g. by `webui down`); stopping",
                            project.key()
                        );
                        return Ok(0);
                    }
                    continue;
                }
                gone = 0;
                for found in found {
                    match followed.get_mut(&found.target) {
                        None => {
                            // New since `-f` began: all of it.
                            let new = Options { tail: "all".into(), ..opts.clone() };
                            followed.insert(found.target.clone(), start(&found, new));
                        }
                        Some(f) if f.stream.is_none() && found.running => {
                            // Running again: on from the last line shown.
                            let again = Options {
                                tail: "all".into(),
                                after: Some(f.last.unwrap_or(f.started)),
                                ..opts.clone()
                            };
                            *f = Followed { last: f.last, ..start(&found, again) };
                        }
                        Some(_) => {}
                    }
                }
            }
            _ = shutdown.cancelled() => return Ok(0),
        }
    }
}

/// Prints one line, after `service | ` when several logs are shown; false when the
/// reader went away (broken pipe), which ends the command with success like other
/// Unix tools.
fn print(line: &Line, several: bool, width: usize) -> bool {
    let prefix = if several {
        format!("{:<width$} | ", line.service)
    } else {
        String::new()
    };
    let result = match line.source {
        Source::Stdout => writeln!(std::io::stdout().lock(), "{prefix}{}", line.text),
        Source::Stderr => writeln!(std::io::stderr().lock(), "{prefix}{}", line.text),
    };
    result.is_ok()
}
