//! Configuration: the raw TOML file (`file`), value parsers (`values`) and the pure
//! resolver from flags + env + file to settings (`resolve`).
//!
//! Architecture Invariant: only `resolve` applies defaults and precedence; commands
//! never read `FileConfig` fields or env vars themselves.

pub mod behind;
pub mod file;
pub mod release;
pub mod resolve;
pub mod up;
pub mod values;

use std::path::{Path, PathBuf};

pub use file::FileConfig;
pub use resolve::{ProxySettings, TlsSource};

use crate::cli::GlobalArgs;

/// The default state directory: `/var/lib/webui` as root, else `$XDG_DATA_HOME/webui`
/// (falling back to `~/.local/share/webui`).
pub fn default_state_dir(
    is_root: bool,
    xdg_data_home: Option<&str>,
    home: Option<&str>,
) -> PathBuf {
    if is_root {
        return PathBuf::from("/var/lib/webui");
    }
    match (xdg_data_home.filter(|s| !s.is_empty()), home) {
        (Some(x), _) => Path::new(x).join("webui"),
        (None, Some(h)) => Path::new(h).join(".local/share/webui"),
        (None, None) => PathBuf::from(".webui"),
    }
}

/// State dir and config file location, resolved from the global flags.
#[derive(Debug, Clone)]
pub struct Paths {
    pub state_dir: PathBuf,
    pub config: PathBuf,
    pub config_explicit: bool,
}

impl Paths {
    pub fn resolve(global: &GlobalArgs) -> Self {
        let state_dir = global.state_dir.clone().unwrap_or_else(|| {
            // /proc/self belongs to the process's effective user: root without libc calls.
            let is_root = std::fs::metadata("/proc/self")
                .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
                .unwrap_or(false);
            default_state_dir(
                is_root,
                std::env::var("XDG_DATA_HOME").ok().as_deref(),
                std::env::var("HOME").ok().as_deref(),
            )
        });
        let config_explicit = global.config.is_some();
        let config = global
            .config
            .clone()
            .unwrap_or_else(|| state_dir.join("webui.toml"));
        Self {
            state_dir,
            config,
            config_explicit,
        }
    }

    pub fn load_file(&self) -> anyhow::Result<FileConfig> {
        FileConfig::load(&self.config, self.config_explicit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_dir_defaults() {
        assert_eq!(
            default_state_dir(true, Some("/x"), Some("/h")),
            PathBuf::from("/var/lib/webui")
        );
        assert_eq!(
            default_state_dir(false, Some("/x"), Some("/h")),
            PathBuf::from("/x/webui")
        );
        assert_eq!(
            default_state_dir(false, None, Some("/h")),
            PathBuf::from("/h/.local/share/webui")
        );
    }
}
