//! The raw TOML configuration file, exactly as written by the user.
//!
//! These types only mirror the file; they carry no defaults and no validation beyond
//! types. `deny_unknown_fields` makes a typo an error that names the key and its line
//! instead of a setting that silently does nothing.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

use crate::error::UserError;

/// Every key of `webui.toml`. Keys are the long flag names with `-` written as `_`.
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub upstream: Option<String>,
    pub listen: Option<Vec<String>>,
    pub http_listen: Option<Vec<String>>,
    pub no_http: Option<bool>,
    pub domain: Option<Vec<String>>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub self_signed: Option<bool>,
    pub max_body: Option<String>,
    pub trusted_proxy: Option<Vec<String>>,
    pub no_hsts: Option<bool>,
    pub connect_timeout: Option<String>,
    pub response_timeout: Option<String>,
    pub ws_idle_timeout: Option<String>,
    pub handshake_timeout: Option<String>,
    pub header_timeout: Option<String>,
    pub max_header_size: Option<String>,
    pub max_connections: Option<usize>,
    pub drain_timeout: Option<String>,
    pub email: Option<String>,
    pub acme_directory: Option<String>,
    pub staging: Option<bool>,
    pub acme_ca: Option<PathBuf>,
    pub challenge: Option<crate::cli::ChallengeArg>,
    pub skip_preflight: Option<bool>,
    // `webui up`
    pub image: Option<String>,
    pub version: Option<String>,
    pub pull: Option<String>,
    pub network: Option<String>,
    pub port: Option<u16>,
    pub ollama: Option<bool>,
    pub ollama_image: Option<String>,
    pub ollama_url: Option<String>,
    pub openai_url: Option<String>,
    pub openai_key_file: Option<PathBuf>,
    pub gpu: Option<String>,
    pub env: Option<Vec<String>>,
    pub env_file: Option<PathBuf>,
    pub aiohttp_timeout: Option<String>,
    pub health_timeout: Option<String>,
    pub behind_proxy: Option<bool>,
    pub admin_email: Option<String>,
    pub admin_name: Option<String>,
    // `webui version --check`
    pub release_url: Option<String>,
}

impl FileConfig {
    /// Parses the text of a config file; `origin` names it in error messages.
    pub fn parse(text: &str, origin: &Path) -> anyhow::Result<Self> {
        toml::from_str(text).map_err(|e| {
            UserError::new(format!("invalid config file {}: {e}", origin.display()))
                .hint("every key is a long flag name with `-` written as `_`; see `webui --help`")
                .into()
        })
    }

    /// Reads the config file. A missing file is an error only when the user named it.
    pub fn load(path: &Path, explicit: bool) -> anyhow::Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let text = String::from_utf8(bytes).map_err(|_| {
                    UserError::new(format!(
                        "config file {} is not valid UTF-8 text",
                        path.display()
                    ))
                })?;
                Self::parse(&text, path)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read config file {}", path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_names_key_and_line() {
        let text = "upstream = \"http://127.0.0.1:8080\"\nlisten_port = 443\n";
        let err = FileConfig::parse(text, Path::new("webui.toml")).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("listen_port"), "{msg}");
        assert!(msg.contains("line 2"), "{msg}");
        assert!(msg.contains("webui.toml"), "{msg}");
    }

    #[test]
    fn wrong_type_is_an_error() {
        let err = FileConfig::parse("no_http = \"yes\"\n", Path::new("c.toml")).unwrap_err();
        assert!(format!("{err:#}").contains("no_http"));
    }

    #[test]
    fn known_keys_parse() {
        let c = FileConfig::parse(
            "upstream = \"http://x:1\"\nlisten = [\"127.0.0.1:8443\"]\nmax_body = \"10M\"\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(c.upstream.as_deref(), Some("http://x:1"));
        assert_eq!(c.listen, Some(vec!["127.0.0.1:8443".to_string()]));
    }

    #[test]
    fn missing_default_file_is_empty_but_named_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("absent.toml");
        assert_eq!(FileConfig::load(&p, false).unwrap(), FileConfig::default());
        assert!(FileConfig::load(&p, true).is_err());
    }
}
