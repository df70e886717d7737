//! One module per subcommand: each resolves its settings, does its work, and prints
//! through the [`Printer`](crate::output::Printer).

pub mod backup;
pub mod cert;
pub mod config;
pub mod doctor;
pub mod down;
pub mod logs;
pub mod migrate;
pub mod proxy;
pub mod restore;
pub mod rolling;
pub mod scheduled;
pub mod service;
pub mod site;
pub mod status;
pub mod summary;
pub mod swarm;
pub mod token;
pub mod up;
pub mod update;
pub mod version;

use crate::cli::{Cli, Command};
use crate::output::Printer;

/// Dispatches a parsed command line; returns the exit code.
pub async fn run(cli: Cli, printer: Printer) -> anyhow::Result<u8> {
    match &cli.command {
        Command::Proxy(cmd) => proxy::run(&cli.global, cmd, printer).await,
        Command::SwarmRelay(cmd) => swarm::relay(cmd).await,
        Command::Up(cmd) => up::run(&cli.global, cmd, printer).await,
        Command::Status(cmd) => status::run(&cli.global, cmd, printer).await,
        Command::Logs(cmd) => logs::run(&cli.global, cmd, printer).await,
        Command::Down(cmd) => down::run(&cli.global, cmd, printer).await,
        Command::Config(cmd) => config::run(&cli.global, cmd, printer).await,
        Command::Cert(cmd) => cert::run(&cli.global, cmd, printer).await,
        Command::Service(cmd) => service::run(&cli.global, cmd, printer).await,
        Command::Update(cmd) => update::run(&cli.global, cmd, printer).await,
        Command::Backup(cmd) => backup::run(&cli.global, cmd, printer).await,
        Command::Restore(cmd) => restore::run(&cli.global, cmd, printer).await,
        Command::MigrateDb(cmd) => migrate::run(&cli.global, cmd, printer).await,
        Command::Doctor(cmd) => doctor::run(&cli.global, cmd, printer).await,
        Command::Version(cmd) => version::run(&cli.global, cmd, printer).await,
        Command::Token(cmd) => token::run(&cli.global, cmd, printer).await,
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut cmd, "webui", &mut std::io::stdout());
            Ok(0)
        }
        Command::Manpage => {
            let cmd = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?;
            Ok(0)
        }
    }
}
