//! The `webui` binary: parse, run, map errors to exit codes. No logic here.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = webui::cli::Cli::parse();
    match webui::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("{}", webui::error::render(&err));
            ExitCode::from(webui::error::exit_code(&err))
        }
    }
}
