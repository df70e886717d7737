//! `webui logs [open-webui|ollama|postgres|redis|all] [--replica K] [-f] [--tail N]
//! [--since T] [--timestamps]`:
//! the containers' output through the Docker API. Container stdout goes to stdout,
//! stderr to stderr; with several containers each line starts with `service | `, like
//! compose (`open-webui-2` for replica 2 of `up --replicas`). Without `-f` the services are shown one after the other; with `-f` lines
//! are interleaved as they come, until SIGINT/SIGTERM or the containers stop.

use std::io::Write;
use std::time::SystemTime;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cli::{GlobalArgs, LogService, LogsCmd};
use crate::config::up::Project;
use crate::docker::logs::{self, Line, Options, Source};
use crate::docker::replicas::LABEL_REPLICA;
use crate::docker::spec::{LABEL_ROLE, Names};
use crate::docker::{self, Role, ensure};
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
    };
    if cmd.replica.is_some() && wanted != [Role::OpenWebui] {
        return Err(
            UserError::new("--replica picks one of the Open WebUI replicas")
                .hint("webui logs open-webui --replica 2")
                .into(),
        );
    }
    let targets: Vec<(String, String)> = containers
        .iter()
        .filter(|(role, replica, _, _)| {
            wanted.contains(role) && cmd.replica.is_none_or(|k| replica.unwrap_or(1) == k)
        })
        .map(|(_, _, name, shown)| (shown.clone(), name.clone()))
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
    let groups: Vec<Vec<(String, String)>> = if opts.follow {
        vec![targets.clone()]
    } else {
        targets.iter().map(|t| vec![t.clone()]).collect()
    };
    for group in groups {
        let mut tasks = Vec::new();
        for (shown, name) in group {
            tasks.push(tokio::spawn(logs::stream_lines(
                docker.clone(),
                shown,
                name,
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
