//! The `webui` binary: parse, run, map errors to exit codes. No logic here.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match webui::cli::Cli::try_parse() {
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
    match webui::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("{}", webui::error::render(&err));
            ExitCode::from(webui::error::exit_code(&err))
        }
    }
}
