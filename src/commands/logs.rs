//! `webui logs [open-webui|ollama|all] [-f] [--tail N] [--since T] [--timestamps]`:
//! the containers' output through the Docker API. Container stdout goes to stdout,
//! stderr to stderr; with several services each line starts with `service | `, like
//! compose. Without `-f` the services are shown one after the other; with `-f` lines
//! are interleaved as they come, until SIGINT/SIGTERM or the containers stop.

use std::io::Write;
use std::time::SystemTime;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cli::{GlobalArgs, LogService, LogsCmd};
use crate::config::up::Project;
use crate::docker::logs::{self, Line, Options, Source};
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
    let mut present: Vec<Role> = managed
        .iter()
        .filter_map(|c| {
            c.labels
                .as_ref()?
                .get(LABEL_ROLE)
                .and_then(|r| Role::parse(r))
        })
        .collect();
    present.sort();
    present.dedup();
    let wanted: Vec<Role> = match cmd.service.unwrap_or(LogService::All) {
        LogService::All => present.clone(),
        LogService::OpenWebui => vec![Role::OpenWebui],
        LogService::Ollama => vec![Role::Ollama],
    };
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
    let width = wanted.iter().map(|r| r.as_str().len()).max().unwrap_or(0);
    let prefix = |service: &str| {
        if wanted.len() > 1 {
            format!("{service:<width$} | ")
        } else {
            String::new()
        }
    };

    let shutdown = CancellationToken::new();
    crate::signal::cancel_on_signal(shutdown.clone())?;
    let (tx, mut rx) = mpsc::channel::<Line>(1024);
    let groups: Vec<Vec<Role>> = if opts.follow {
        vec![wanted.clone()]
    } else {
        wanted.iter().map(|r| vec![*r]).collect()
    };
    for group in groups {
        let mut tasks = Vec::new();
        for role in group {
            tasks.push(tokio::spawn(logs::stream_lines(
                docker.clone(),
                role.as_str().to_string(),
                names.container(role).to_string(),
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
