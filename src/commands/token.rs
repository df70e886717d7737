//! `webui token show|rotate`: the bearer token of the Ollama API served by
//! `webui up --ollama-only` / `--ollama-domain` (see `ollama::token`).

use crate::cli::{GlobalArgs, TokenAction, TokenCmd};
use crate::config::Paths;
use crate::config::up::Project;
use crate::error::UserError;
use crate::ollama::token;
use crate::output::Printer;

pub async fn run(global: &GlobalArgs, cmd: &TokenCmd, printer: Printer) -> anyhow::Result<u8> {
    let paths = Paths::resolve(global);
    let project = Project::resolve(global.project.as_deref())?;
    let path = token::path(&paths.state_dir, &project);
    let (tok, json, rotated) = match cmd.action {
        TokenAction::Show { json } => match token::read(&path)? {
            Some(t) => (t, json, false),
            None => {
                return Err(UserError::new(format!(
                    "no Ollama API token yet ({} does not exist)",
                    path.display()
                ))
                .hint(format!(
                    "`webui{} up --ollama-only --domain NAME` creates it on its first start (or `webui{} token rotate` now)",
                    project.flag(),
                    project.flag()
                ))
                .into());
            }
        },
        TokenAction::Rotate { json } => (token::rotate(&path)?, json, true),
    };
    if json {
        let v = serde_json::json!({ "token": tok, "path": path.display().to_string() });
        println!("{v}");
    } else {
        // The command's data: printed even with -q.
        println!("{tok}");
        // Only the token when captured (`TOKEN=$(webui token rotate)`).
        if rotated && printer.is_terminal() {
            printer.line(format!(
                "new token stored in {}; a running `webui up` accepts only this one from now on: give it to the UI server (`webui up ... --ollama-token-file FILE`)",
                path.display()
            ));
        }
    }
    Ok(0)
}
