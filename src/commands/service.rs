//! `webui service install|uninstall|status` and `webui up --detach`: webui as a
//! systemd service.
//!
//! The unit is `assets/webui.service` (the same file install.sh installs), with only
//! its `ExecStart=` line replaced by this binary and the current command line:
//! `--state-dir`, `--config` and `--project` made explicit, and for `up -d` the `up`
//! flags as given (minus `-d`). A project other than the default gets its own unit,
//! `webui-<project>.service`.
//!
//! `--unit-dir DIR` (install/uninstall) only writes or removes the unit file there and
//! leaves systemd alone: for images and packaging, and for the tests, since CI has no
//! systemd. Without it, and without a running systemd (`/run/systemd/system`), every
//! action says so and exits 1 before changing anything.
//!
//! `up -d` installs the unit (enabled), restarts the service, then follows the new
//! supervisor over its control socket, printing each phase, until Open WebUI is
//! healthy (bounded by `--health-timeout`), prints the URL and returns.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::cli::{GlobalArgs, ServiceAction, ServiceCmd, UpCmd};
use crate::config::up::Project;
use crate::config::{Paths, resolve};
use crate::control;
use crate::error::UserError;
use crate::output::Printer;

const TEMPLATE: &str = include_str!("../../assets/webui.service");
const SYSTEM_UNIT_DIR: &str = "/etc/systemd/system";

/// True when systemd runs this host (what `sd_booted()` checks).
pub fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

fn no_systemd(what: &str) -> anyhow::Error {
    UserError::new(format!(
        "systemd is not running on this host (/run/systemd/system does not exist), so {what} is not possible"
    ))
    .hint("run `webui up` in the foreground (under tmux, screen or your own init system); `webui service install --unit-dir DIR` only writes the unit file")
    .into()
}

/// The unit's name for a project.
pub fn unit_name(project: &Project) -> String {
    match project.name() {
        Some(p) => format!("webui-{p}.service"),
        None => "webui.service".to_string(),
    }
}

/// The template with its `ExecStart=` line replaced. Pure.
pub fn render(exec_start: &[String]) -> String {
    let line = format!(
        "ExecStart={}",
        exec_start
            .iter()
            .map(|a| quote(a))
            .collect::<Vec<_>>()
            .join(" ")
    );
    TEMPLATE
        .lines()
        .map(|l| {
            if l.starts_with("ExecStart=") {
                line.as_str()
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// systemd's command-line quoting: words with spaces, quotes, `\` `$` `%` or `;` in
/// double quotes, with `\`, `"` escaped, `$` doubled and `%` as `%%`.
fn quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+".contains(c));
    if plain {
        return arg.to_string();
    }
    let mut out = String::from("\"");
    for c in arg.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '$' => out.push_str("$$"),
            '%' => out.push_str("%%"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// `webui --state-dir S --config C [--project P] up ARGS...`, with this binary.
fn exec_start(paths: &Paths, project: &Project, up_args: &[String]) -> anyhow::Result<Vec<String>> {
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let mut v = vec![
        exe.display().to_string(),
        "--state-dir".into(),
        absolute(&paths.state_dir).display().to_string(),
        "--config".into(),
        absolute(&paths.config).display().to_string(),
    ];
    if let Some(p) = project.name() {
        v.extend(["--project".into(), p.to_string()]);
    }
    v.push("up".into());
    v.extend(up_args.iter().cloned());
    Ok(v)
}

/// The `up` arguments of this process's command line, without `-d`/`--detach` and
/// without the global flags made explicit by [`exec_start`], plus the `WEBUI_*` values
/// this process took from its environment as flags (systemd passes no shell
/// environment on, and the service must run what was validated here); path values
/// made absolute (the service runs in `/`, not where `up -d` was typed).
fn up_args_from_argv() -> Vec<String> {
    use clap::CommandFactory;
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some(pos) = argv.iter().position(|a| a == "up") else {
        return Vec::new();
    };
    let mut args: Vec<String> = argv[pos + 1..]
        .iter()
        .filter(|a| *a != "-d" && *a != "--detach")
        .cloned()
        .collect();
    let cli = crate::cli::Cli::command();
    if let Ok(m) = cli.clone().try_get_matches_from(std::env::args_os())
        && let (Some(up), Some(upm)) = (cli.find_subcommand("up"), m.subcommand_matches("up"))
    {
        args.extend(env_args(up, upm));
    }
    absolute_paths(args, &path_flags())
}

/// `--flag=VALUE` for each argument of `cmd` that `m` took from the environment, except
/// those whose values are hidden (secrets, refused with `-d` where they are read).
fn env_args(cmd: &clap::Command, m: &clap::ArgMatches) -> Vec<String> {
    let mut out = Vec::new();
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        if m.value_source(id) != Some(clap::parser::ValueSource::EnvVariable)
            || arg.is_hide_env_values_set()
        {
            continue;
        }
        let Some(long) = arg.get_long() else { continue };
        for v in m.get_raw(id).into_iter().flatten() {
            out.push(format!("--{long}={}", v.to_string_lossy()));
        }
    }
    out
}

/// The long flags of `up` whose value is a path (`--tls-cert`, `--ollama-token-file`...).
fn path_flags() -> Vec<String> {
    use clap::CommandFactory;
    let path = clap::value_parser!(PathBuf).type_id();
    crate::cli::Cli::command()
        .find_subcommand("up")
        .map(|up| {
            up.get_arguments()
                .filter(|a| a.get_value_parser().type_id() == path)
                .filter_map(|a| a.get_long())
                .map(|l| format!("--{l}"))
                .collect()
        })
        .unwrap_or_default()
}

/// `args` with the values of `flags` (`--f VALUE` or `--f=VALUE`) made absolute.
fn absolute_paths(args: Vec<String>, flags: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut value_next = false;
    for a in args {
        if value_next {
            value_next = false;
            out.push(absolute(Path::new(&a)).display().to_string());
            continue;
        }
        if flags.contains(&a) {
            value_next = true;
            out.push(a);
            continue;
        }
        match a.split_once('=') {
            Some((f, v)) if flags.iter().any(|p| p == f) => {
                out.push(format!("{f}={}", absolute(Path::new(v)).display()));
            }
            _ => out.push(a),
        }
    }
    out
}

fn systemctl(args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new("systemctl")
        .args(args)
        .status()
        .with_context(|| format!("cannot run systemctl {}", args.join(" ")))?;
    if !status.success() {
        return Err(
            UserError::new(format!("`systemctl {}` failed ({status})", args.join(" ")))
                .hint("see `journalctl -xe`")
                .into(),
        );
    }
    Ok(())
}

fn write_unit(dir: &Path, name: &str, text: &str) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(name);
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

pub async fn run(global: &GlobalArgs, cmd: &ServiceCmd, printer: Printer) -> anyhow::Result<u8> {
    let paths = Paths::resolve(global);
    let project = Project::resolve(global.project.as_deref())?;
    let name = unit_name(&project);
    match &cmd.action {
        ServiceAction::Install { unit_dir } => {
            if unit_dir.is_none() && !systemd_running() {
                return Err(no_systemd("installing the service"));
            }
            let text = render(&exec_start(&paths, &project, &[])?);
            let dir = unit_dir.clone().unwrap_or_else(|| SYSTEM_UNIT_DIR.into());
            let path = write_unit(&dir, &name, &text)?;
            printer.line(format!("wrote {}", path.display()));
            if unit_dir.is_none() {
                systemctl(&["daemon-reload"])?;
                systemctl(&["enable", &name])?;
                printer.line(format!(
                    "enabled {name}; start it with `systemctl start {name}` or `webui up -d`"
                ));
            }
            Ok(0)
        }
        ServiceAction::Uninstall { unit_dir } => {
            if unit_dir.is_none() && !systemd_running() {
                return Err(no_systemd("removing the service"));
            }
            if unit_dir.is_none() {
                let _ = systemctl(&["disable", "--now", &name]);
            }
            let dir = unit_dir.clone().unwrap_or_else(|| SYSTEM_UNIT_DIR.into());
            let path = dir.join(&name);
            match std::fs::remove_file(&path) {
                Ok(()) => printer.line(format!("removed {}", path.display())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    printer.line(format!("{} was not installed", path.display()))
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot remove {}", path.display()));
                }
            }
            if unit_dir.is_none() {
                systemctl(&["daemon-reload"])?;
            }
            printer.line("the containers keep running; `webui down` stops them");
            Ok(0)
        }
        ServiceAction::Status => {
            if !systemd_running() {
                return Err(no_systemd("a service status"));
            }
            let q = |what: &str| {
                Command::new("systemctl")
                    .args([what, &name])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                    .unwrap_or_default()
            };
            let (enabled, active) = (q("is-enabled"), q("is-active"));
            printer.line(format!("{name}: {enabled}, {active}"));
            Ok(if active == "active" { 0 } else { 3 })
        }
    }
}

/// `webui up --detach`.
pub async fn detach(global: &GlobalArgs, cmd: &UpCmd, printer: Printer) -> anyhow::Result<u8> {
    if !systemd_running() {
        return Err(no_systemd("`webui up --detach`"));
    }
    let paths = Paths::resolve(global);
    let file = paths.load_file()?;
    let project = Project::resolve(global.project.as_deref())?;
    // Validated here so that a typo fails now, not in the journal.
    let proxy = resolve::proxy(&cmd.proxy, &file)?;
    let up = crate::config::up::up(cmd, &file)?;
    if std::env::var_os(crate::admin::PASSWORD_ENV).is_some() {
        return Err(UserError::new(format!(
            "{} does not reach the service `webui up -d` starts (systemd does not pass this shell's environment on, and a unit file is no place for a password)",
            crate::admin::PASSWORD_ENV
        ))
        .hint(
            "run `webui up` once in the foreground with it to create the admin account (Ctrl-C once it is ready; the containers keep their data), then `webui up -d` without it; or leave it unset and -d generates one, kept 0600 in the project's directory",
        )
        .into());
    }
    let name = unit_name(&project);
    let text = render(&exec_start(&paths, &project, &up_args_from_argv())?);
    let path = write_unit(Path::new(SYSTEM_UNIT_DIR), &name, &text)?;
    printer.line(format!("wrote {}", path.display()));
    systemctl(&["daemon-reload"])?;
    systemctl(&["enable", &name])?;
    systemctl(&["restart", &name])?;
    printer.line(format!(
        "started {name}; following it (`journalctl -fu {name}` shows its log)"
    ));

    let socket = control::socket_path(&paths.state_dir, project.key());
    let start = Instant::now();
    let mut last = String::new();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Some(v) = control::request(&socket, "status").await
            && v["pid"].as_u64().is_some()
        {
            let state = v["state"].as_str().unwrap_or("").to_string();
            let now = format!("{state}: {}", v["detail"].as_str().unwrap_or(""));
            if now != last {
                printer.line(&now);
                last = now;
            }
            if state == "healthy" {
                let https: Vec<std::net::SocketAddr> = v["https"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a.as_str()?.parse().ok())
                    .collect();
                let url = crate::docker::spec::public_url(
                    &proxy.domains,
                    &https,
                    crate::docker::host::lan_ipv4(),
                );
                printer.line(format!("Open WebUI is ready at {url}"));
                // The service's own summary went to the journal; the admin account
                // and where its generated password is are what the operator needs.
                let state = crate::docker::project::ProjectState::new(&paths.state_dir, &project);
                if let Some(r) = crate::admin::record(&state) {
                    printer.line(format!(
                        "admin: {}{}; the full summary: `journalctl -u {name}`",
                        r.email,
                        r.password_file
                            .filter(|f| f.exists())
                            .map(|f| format!(" (password in {}, mode 0600)", f.display()))
                            .unwrap_or_default(),
                    ));
                }
                return Ok(0);
            }
            if v["services"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| !s["crash_loop"].is_null())
            {
                return Err(UserError::new(
                    "Open WebUI keeps crashing; the service stopped restarting it",
                )
                .hint(format!(
                    "`webui{} status` shows its last log lines",
                    project.flag()
                ))
                .into());
            }
        }
        if start.elapsed() > up.health_timeout {
            return Err(UserError::new(format!(
                "{name} is not healthy after {}; it keeps running and trying",
                humantime::format_duration(up.health_timeout)
            ))
            .hint(format!(
                "see `webui{} status` and `journalctl -u {name}`",
                project.flag()
            ))
            .into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exec_start_is_replaced() {
        let args: Vec<String> = [
            "/usr/bin/webui",
            "--state-dir",
            "/srv/web ui",
            "up",
            "--env",
            "A=$x%",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let unit = render(&args);
        let exec: Vec<&str> = unit
            .lines()
            .filter(|l| l.starts_with("ExecStart="))
            .collect();
        assert_eq!(
            exec,
            vec![r#"ExecStart=/usr/bin/webui --state-dir "/srv/web ui" up --env "A=$$x%%""#]
        );
        assert_eq!(unit.lines().count(), TEMPLATE.lines().count());
        assert!(unit.contains("Restart=on-failure"));
    }

    #[test]
    fn file_flags_reach_the_unit_as_absolute_paths() {
        let flags = path_flags();
        for f in [
            "--ollama-token-file",
            "--ollama-ca",
            "--tls-cert",
            "--env-file",
        ] {
            assert!(flags.iter().any(|p| p == f), "{f} takes a path: {flags:?}");
        }
        assert!(!flags.iter().any(|p| p == "--domain"));
        let cwd = std::env::current_dir().unwrap();
        let args: Vec<String> = [
            "--domain",
            "chat.example.com",
            "--ollama-token-file",
            "ollama.token",
            "--tls-cert=certs/site.pem",
            "--env-file",
            "/etc/webui/env",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let out = absolute_paths(args, &flags);
        assert_eq!(
            out,
            vec![
                "--domain".to_string(),
                "chat.example.com".into(),
                "--ollama-token-file".into(),
                cwd.join("ollama.token").display().to_string(),
                format!("--tls-cert={}", cwd.join("certs/site.pem").display()),
                "--env-file".into(),
                "/etc/webui/env".into(),
            ]
        );
    }

    #[test]
    fn values_from_the_environment_become_flags() {
        // Cargo sets these for the test process; nothing here changes the environment.
        let cmd = clap::Command::new("up")
            .arg(clap::Arg::new("name").long("name").env("CARGO_PKG_NAME"))
            .arg(clap::Arg::new("dir").long("dir").env("CARGO_MANIFEST_DIR"))
            .arg(
                clap::Arg::new("secret")
                    .long("secret")
                    .env("CARGO_PKG_VERSION")
                    .hide_env_values(true),
            )
            .arg(
                clap::Arg::new("unset")
                    .long("unset")
                    .env("WEBUI_TEST_NEVER_SET_X"),
            );
        let m = cmd
            .clone()
            .try_get_matches_from(["up", "--dir", "/given"])
            .unwrap();
        // The flag given wins and is not repeated; a hidden value stays out.
        assert_eq!(
            env_args(&cmd, &m),
            vec![format!("--name={}", env!("CARGO_PKG_NAME"))]
        );
    }

    #[test]
    fn unit_names() {
        assert_eq!(unit_name(&Project::default()), "webui.service");
        assert_eq!(
            unit_name(&Project::named("staging").unwrap()),
            "webui-staging.service"
        );
    }
}
