//! The `webui` binary: parse, run, map errors to exit codes. No logic here.

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are not errors; a bad flag is the user's to fix (1),
            // not an unexpected failure (2, clap's own default).
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(webui::error::EXIT_USER),
            };
        }
    };
    let color = webui::output::stderr_color(cli.global.color);
    match webui::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("{}", webui::error::render_styled(&err, color));
            ExitCode::from(webui::error::exit_code(&err))
        }
    }
}

/// Parses the command line; clap's own help and errors follow `--color` too (it is
/// looked for before parsing, since it decides how a parse error is shown).
fn parse() -> Result<webui::cli::Cli, clap::Error> {
    use clap::{CommandFactory, FromArgMatches};
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let mut when = None;
    for (i, a) in args.iter().enumerate() {
        let a = a.to_string_lossy();
        let value = match a.strip_prefix("--color=") {
            Some(v) => Some(v.to_string()),
            None if a == "--color" => args.get(i + 1).map(|v| v.to_string_lossy().into_owned()),
            None => None,
        };
        when = value.or(when);
    }
    let choice = match when.as_deref() {
        Some("always") => clap::ColorChoice::Always,
        Some("never") => clap::ColorChoice::Never,
        _ if std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()) => {
            clap::ColorChoice::Never
        }
        _ => clap::ColorChoice::Auto,
    };
    let matches = webui::cli::Cli::command()
        .color(choice)
        .try_get_matches_from(args)?;
    webui::cli::Cli::from_arg_matches(&matches)
}
