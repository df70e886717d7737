//! `webui logs [open-webui|ollama|postgres|redis|all] [--replica K] [-f] [--tail N]
//! [--since T] [--timestamps]`:
//! the containers' output through the Docker API. Container stdout goes to stdout,
//! stderr to stderr; with several containers each line starts with `service | `, like
//! compose (`open-webui-2` for replica 2 of `up --replicas`). Without `-f` the services are shown one after the other; with `-f` lines
//! are interleaved as they come, until SIGINT/SIGTERM or the containers stop. On a
//! swarm project (`up --swarm`) the same for the services' tasks, through the manager,
//! each named `service.slot@node`; `proxy` is a service there.

use std::io::Write;
use std::time::SystemTime;

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
    };
    let docker = docker::connect().await?;
    // `up --swarm`: the services' tasks, on whichever node they run.
    if let Ok(services) = swarm::services(&docker, &project).await
        && !services.is_empty()
    {
        let targets = swarm_targets(&docker, &project, cmd).await?;
        return show(&docker, targets, &opts).await;
    }
    if cmd.service == Some(LogService::Proxy) {
        return Err(UserError::new(
            "the proxy is the `webui up` process itself, not a container",
        )
        .hint(format!(
            "its log is where that process writes: `journalctl -u {}` under systemd, else the terminal it runs in",
            super::service::unit_name(&project)
        ))
        .into());
    }
    let names = Names::new(&project);

    let managed = ensure::list_managed(&docker, &project).await?;
    // (role, replica, container name, shown service) of every container, in order.
    let mut containers: Vec<(Role, Option<u32>, String, String)> = managed
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
            Some((role, replica, name, shown))
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
    let targets: Vec<(String, Target)> = containers
        .iter()
        .filter(|(role, replica, _, _)| {
            wanted.contains(role) && cmd.replica.is_none_or(|k| replica.unwrap_or(1) == k)
        })
        .map(|(_, _, name, shown)| (shown.clone(), Target::Container(name.clone())))
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
    show(&docker, targets, &opts).await
}

/// The tasks whose logs `webui logs` shows for a swarm project, named
/// `service.slot@node`: those meant to run now, or a service's latest one when none is
/// (a task that keeps failing is what one looks for).
async fn swarm_targets(
    docker: &bollard::Docker,
    project: &Project,
    cmd: &LogsCmd,
) -> anyhow::Result<Vec<(String, Target)>> {
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
            targets.push((
                format!("{}{slot}{node}", s.service),
                Target::Task(t.full_id.clone()),
            ));
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

/// Prints the targets' lines: one after the other, or interleaved with `-f`.
async fn show(
    docker: &bollard::Docker,
    targets: Vec<(String, Target)>,
    opts: &Options,
) -> anyhow::Result<u8> {
    let width = targets.iter().map(|t| t.0.len()).max().unwrap_or(0);
    let prefix = |service: &str| {
        if targets.len() > 1 {
            format!("{service:<width$} | ")
        } else {
            String::new()
        }
    };

    let shutdown = CancellationToken::new();
    crate::signal::cancel_on_signal(shutdown.clone())?;
    let (tx, mut rx) = mpsc::channel::<Line>(1024);
    let groups: Vec<Vec<(String, Target)>> = if opts.follow {
        vec![targets.clone()]
    } else {
        targets.iter().map(|t| vec![t.clone()]).collect()
    };
    for group in groups {
        let mut tasks = Vec::new();
        for (shown, target) in group {
            tasks.push(tokio::spawn(logs::stream_target(
                docker.clone(),
                shown,
                target,
                opts.clone(),
                tx.clone(),
            )));
        }
        let done = async {
            for t in tasks {
                let _ = t.await;
            }
        };
        tokio::pin!(done);
        loop {
            tokio::select! {
                line = rx.recv() => {
                    let Some(line) = line else { break };
                    if !print(&line, &prefix(&line.service)) {
                        return Ok(0);
                    }
                }
                _ = &mut done => {
                    // Drain what the tasks sent before they ended.
                    while let Ok(line) = rx.try_recv() {
                        if !print(&line, &prefix(&line.service)) {
                            return Ok(0);
                        }
                    }
                    break;
                }
                _ = shutdown.cancelled() => return Ok(0),
            }
        }
    }
    Ok(0)
}

/// Prints one line; false when the reader went away (broken pipe), which ends the
/// command with success like other Unix tools.
fn print(line: &Line, prefix: &str) -> bool {
    let result = match line.source {
        Source::Stdout => writeln!(std::io::stdout().lock(), "{prefix}{}", line.text),
        Source::Stderr => writeln!(std::io::stderr().lock(), "{prefix}{}", line.text),
    };
    result.is_ok()
}
