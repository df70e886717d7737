//! The raw TOML configuration file, exactly as written by the user.
//!
//! These types only mirror the file; they carry no defaults and no validation beyond
//! types. `deny_unknown_fields` makes a typo an error that names the key and its line
//! instead of a setting that silently does nothing.

use std::path::{Path, PathBuf};

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
    pub idle_timeout: Option<String>,
    pub max_header_size: Option<String>,
    pub max_connections: Option<usize>,
    pub proxy_workers: Option<usize>,
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
    pub ollama_token_file: Option<PathBuf>,
    pub ollama_ca: Option<PathBuf>,
    pub openai_url: Option<String>,
    pub openai_key_file: Option<PathBuf>,
    pub gpu: Option<String>,
    pub env: Option<Vec<String>>,
    pub env_file: Option<PathBuf>,
    pub aiohttp_timeout: Option<String>,
    pub health_timeout: Option<String>,
    pub backup_every: Option<String>,
    pub backup_keep: Option<usize>,
    pub backup_dir: Option<PathBuf>,
    pub notify_url_file: Option<PathBuf>,
    pub behind_proxy: Option<bool>,
    pub admin_email: Option<String>,
    pub admin_name: Option<String>,
    pub replicas: Option<u32>,
    pub postgres_image: Option<String>,
    pub redis_image: Option<String>,
    // `webui update`
    pub keep_backups: Option<CountOrAll>,
    // `webui version --check`
    pub release_url: Option<String>,
    /// The file this came from and the keys it set, so a bad value can be traced
    /// back to its line ([`FileConfig::blame`]). Not a key.
    #[serde(skip)]
    pub source: Source,
}

/// A count written as a number, or a word such as `all` (`keep_backups = 5`,
/// `keep_backups = "all"`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
// The message starts as serde's own type errors do, so it gets their hint.
#[serde(
    untagged,
    expecting = "invalid type: keep_backups takes a number, or \"all\""
)]
pub enum CountOrAll {
    Count(i64),
    Word(String),
}

impl CountOrAll {
    /// As it would be given on the command line.
    pub fn as_flag_value(&self) -> String {
        match self {
            CountOrAll::Count(n) => n.to_string(),
            CountOrAll::Word(w) => w.clone(),
        }
    }
}

/// Where a [`FileConfig`] was read from: the file and each key with its line (1-based,
/// 0 when not found). Equal whatever it holds: configs compare by their values.
#[derive(Debug, Default, Clone)]
pub struct Source(pub Option<(PathBuf, Vec<(String, usize)>)>);

impl PartialEq for Source {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl FileConfig {
    /// Parses the text of a config file; `origin` names it in error messages.
    pub fn parse(text: &str, origin: &Path) -> anyhow::Result<Self> {
        let mut parsed: Self = toml::from_str(text).map_err(|e: toml::de::Error| {
            let hint = parse_hint(e.message());
            anyhow::Error::from(
                UserError::new(format!("invalid config file {}: {e}", origin.display())).hint(hint),
            )
        })?;
        let keys = toml::from_str::<toml::Table>(text)
            .map(|t| {
                t.keys()
                    .map(|k| {
                        let at = text.lines().position(|l| {
                            l.trim_start()
                                .strip_prefix(k.as_str())
                                .is_some_and(|r| r.trim_start().starts_with('='))
                        });
                        (k.clone(), at.map_or(0, |i| i + 1))
                    })
                    .collect()
            })
            .unwrap_or_default();
        parsed.source = Source(Some((origin.to_path_buf(), keys)));
        // Relative to the file, not to wherever a command (or systemd, in `/`) runs.
        if let Some(dir) = origin.parent().filter(|d| !d.as_os_str().is_empty()) {
            for p in [
                &mut parsed.tls_cert,
                &mut parsed.tls_key,
                &mut parsed.acme_ca,
                &mut parsed.ollama_token_file,
                &mut parsed.ollama_ca,
                &mut parsed.openai_key_file,
                &mut parsed.env_file,
                &mut parsed.backup_dir,
                &mut parsed.notify_url_file,
            ]
            .into_iter()
            .flatten()
            {
                if p.is_relative() {
                    *p = dir.join(&*p);
                }
            }
        }
        Ok(parsed)
    }

    /// Names the file and line of a value the resolver refused (`--max-body: `lots`
    /// is not a size...`) when that key is set in this file.
    pub fn blame(&self, err: anyhow::Error) -> anyhow::Error {
        let Source(Some((path, keys))) = &self.source else {
            return err;
        };
        let msg = err.to_string();
        // Only the value errors: `--flag: `value` ...` or `--flag `value` ...`.
        let Some((flag, rest)) = msg.split_once(' ') else {
            return err;
        };
        if !flag.starts_with("--") || !rest.starts_with('`') {
            return err;
        }
        let flag = flag.trim_end_matches(':');
        let key = flag.trim_start_matches('-').replace('-', "_");
        let Some((key, line)) = keys.iter().find(|(k, _)| *k == key) else {
            return err;
        };
        let place = match line {
            0 => format!("`{key}` in {}", path.display()),
            n => format!("`{key}` on line {n} of {}", path.display()),
        };
        UserError::new(format!("{msg} ({place}, unless {flag} was given)"))
            .hint(format!(
                "correct it in {}, or give {flag} on the command line",
                path.display()
            ))
            .into()
    }

    /// Reads the config file. A missing file is an error only when the user named it.
    pub fn load(path: &Path, explicit: bool) -> anyhow::Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let text = String::from_utf8(bytes).map_err(|e| {
                    // Where the first bad byte is, as an editor shows it.
                    let bytes = e.as_bytes();
                    let at = e.utf8_error().valid_up_to();
                    let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;
                    let column = at - bytes[..at].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1) + 1;
                    UserError::new(format!(
                        "config file {} is not valid UTF-8 text (line {line}, column {column})",
                        path.display()
                    ))
                    .hint(format!(
                        "save it as UTF-8, e.g. `iconv -f latin1 -t utf-8 {0} > {0}.new` and move that over it",
                        path.display()
                    ))
                })?;
                Self::parse(&text, path)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(Self::default()),
            // The user named this file (or the state dir holds one): theirs to fix.
            Err(e) => {
                let hint = if e.kind() == std::io::ErrorKind::NotFound {
                    "check the path given with --config (or WEBUI_CONFIG), or write a commented one with `webui --config PATH config init`".to_string()
                } else {
                    format!(
                        "--config must name a file webui may read; check it with `ls -l {}`",
                        path.display()
                    )
                };
                Err(
                    UserError::new(format!("cannot read config file {}: {e}", path.display()))
                        .hint(hint)
                        .into(),
                )
            }
        }
    }
}

/// What to do about a TOML error, by the kind of mistake toml reports.
fn parse_hint(message: &str) -> &'static str {
    if message.starts_with("unknown field") {
        "every key is a long flag name with `-` written as `_` (see `webui --help`); `webui config init` writes a commented file with every key"
    } else if message.starts_with("duplicate key") {
        "each key may appear once; keep one of the two lines"
    } else if message.starts_with("invalid type") || message.starts_with("invalid value") {
        "write each value as its type: text in double quotes (\"30s\"), true or false, numbers without quotes, lists as [\"...\"]; `webui config init` shows every key with an example"
    } else {
        "fix the TOML at that line: one `key = value` per line, text in double quotes; `webui config init` shows every key with an example"
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
    fn each_kind_of_mistake_gets_its_own_hint() {
        let hint = |text: &str| {
            let err = FileConfig::parse(text, Path::new("w.toml")).unwrap_err();
            crate::error::render(&err)
        };
        assert!(hint("upstrem = \"x\"\n").contains("long flag name"));
        assert!(hint("upstream = \"x\"\nupstream = \"y\"\n").contains("appear once"));
        assert!(hint("no_http = \"yes\"\n").contains("true or false"));
        let count = hint("keep_backups = true\n");
        assert!(
            count.contains("keep_backups takes a number, or \"all\""),
            "{count}"
        );
        assert!(count.contains("numbers without quotes"), "{count}");
        assert!(hint("upstream = \"x\n").contains("fix the TOML at that line"));
    }

    #[test]
    fn a_bad_value_is_traced_to_its_key_and_line() {
        let file = FileConfig::parse(
            "upstream = \"http://x:1\"\n\nmax_body = \"lots\"\n",
            Path::new("/etc/w.toml"),
        )
        .unwrap();
        let err = crate::config::resolve::proxy(&Default::default(), &file).unwrap_err();
        let text = crate::error::render(&err);
        assert!(
            text.contains("`max_body` on line 3 of /etc/w.toml") && text.contains("100M"),
            "{text}"
        );
        assert_eq!(crate::error::exit_code(&err), crate::error::EXIT_USER);
    }

    #[test]
    fn non_utf8_and_unreadable_files_are_user_errors_with_the_place() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("latin1.toml");
        std::fs::write(&p, b"upstream = \"x\"\n# caf\xe9\n").unwrap();
        let err = FileConfig::load(&p, true).unwrap_err();
        assert_eq!(crate::error::exit_code(&err), crate::error::EXIT_USER);
        assert!(format!("{err}").contains("line 2, column 6"), "{err}");
        let err = FileConfig::load(dir.path(), true).unwrap_err();
        assert_eq!(crate::error::exit_code(&err), crate::error::EXIT_USER);
        let err = FileConfig::load(&dir.path().join("absent.toml"), true).unwrap_err();
        assert!(crate::error::render(&err).contains("config init"), "{err}");
    }

    #[test]
    fn missing_default_file_is_empty_but_named_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("absent.toml");
        assert_eq!(FileConfig::load(&p, false).unwrap(), FileConfig::default());
        assert!(FileConfig::load(&p, true).is_err());
    }

    #[test]
    fn relative_paths_are_relative_to_the_file() {
        let text = "tls_cert = \"certs/site.pem\"\ntls_key = \"/etc/ssl/site.key\"\nollama_ca = \"gpu-ca.pem\"\n";
        let c = FileConfig::parse(text, Path::new("/var/lib/webui/webui.toml")).unwrap();
        assert_eq!(
            c.tls_cert,
            Some(PathBuf::from("/var/lib/webui/certs/site.pem"))
        );
        assert_eq!(c.tls_key, Some(PathBuf::from("/etc/ssl/site.key")));
        assert_eq!(
            c.ollama_ca,
            Some(PathBuf::from("/var/lib/webui/gpu-ca.pem"))
        );
    }
}
