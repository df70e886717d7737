//! `webui down [--purge-data --yes]`: stop and remove the project's containers and
//! network. Volumes, the secret key and certificates stay, so `webui up` brings the
//! same site back. `--purge-data` also deletes the project's volumes (those webui
//! created and those it adopted) and its state directory (secret key); without
//! `--yes` it refuses, listing what would be deleted, and touches nothing. The local
//! CA is shared by all projects and is kept.

use crate::cli::{DownCmd, GlobalArgs};
use crate::config::Paths;
use crate::config::up::Project;
use crate::docker::project::ProjectState;
use crate::docker::{self, ensure};
use crate::error::UserError;
use crate::output::Printer;

pub async fn run(global: &GlobalArgs, cmd: &DownCmd, printer: Printer) -> anyhow::Result<u8> {
    let paths = Paths::resolve(global);
    let project = Project::resolve(global.project.as_deref())?;
    let state = ProjectState::new(&paths.state_dir, &project);
    let docker = docker::connect().await?;
    let volumes = ensure::project_volumes(&docker, &project, &state.adopted()).await?;

    if cmd.purge_data && !cmd.yes {
        let what = if volumes.is_empty() {
            "no volumes exist".to_string()
        } else {
            format!("the volumes {}", volumes.join(", "))
        };
        return Err(UserError::new(format!(
            "--purge-data deletes for good {what} (every chat, user, upload and model in them) and the secret key in {}; nothing was changed",
            state.dir().display()
        ))
        .hint(format!(
            "back them up first if unsure, then confirm with `webui{} down --purge-data --yes`",
            project.flag()
        ))
        .into());
    }

    // `up --swarm`: its services, overlay network and secrets (commands/swarm.rs).
    super::swarm::down(&docker, &project, &printer).await?;
    let purge: &[String] = if cmd.purge_data { &volumes } else { &[] };
    ensure::down(&docker, &project, purge, &printer).await?;
    if cmd.purge_data {
        state.purge()?;
        printer.line(format!("deleted {} (secret key)", state.dir().display()));
    } else if !volumes.is_empty() {
        printer.line(format!(
            "kept the volumes {} and the secret key; `webui{} up` brings the site back",
            volumes.join(", "),
            project.flag()
        ));
    }
    Ok(0)
}
