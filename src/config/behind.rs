//! `webui up --behind-proxy`: webui runs the containers and supervises them, but serves
//! no HTTP(S) of its own; an existing web server (nginx, Apache, Caddy) in front
//! forwards to Open WebUI on 127.0.0.1:`--port`, configured from `webui config export`.
//!
//! Pure like `resolve`: decides whether the mode is on (flag > env > file) and refuses
//! the settings that only configure webui's own listeners and certificates.
//! `--domain` stays allowed: it names the site (WEBUI_URL, CORS, the export hints).

use super::file::FileConfig;
use crate::cli::UpCmd;
use crate::error::UserError;

/// True when `webui up` runs behind another web server. An error (exit 1) names the
/// first setting that makes no sense without webui's own listener.
pub fn behind_proxy(cli: &UpCmd, file: &FileConfig) -> anyhow::Result<bool> {
    if !cli.behind_proxy.or(file.behind_proxy).unwrap_or(false) {
        return Ok(false);
    }
    // The served Ollama API is protected by webui's own proxy (its bearer token): with
    // no proxy it would have no protection at all.
    for (flag, given) in [
        ("--ollama-only", cli.ollama_only == Some(true)),
        ("--ollama-domain", cli.ollama_domain.is_some()),
    ] {
        if given {
            return Err(UserError::new(format!(
                "{flag} cannot be used with --behind-proxy: the Ollama API is served token-protected by webui's own HTTPS proxy, which --behind-proxy does not run"
            ))
            .hint("run the Ollama server without --behind-proxy (on its own box, or with its own --domain and ports)")
            .into());
        }
    }
    let p = &cli.proxy;
    // (flag, file key, given on the command line or env, set in the file)
    let own_listener = [
        (
            "--listen",
            "listen",
            !p.listen.is_empty(),
            file.listen.is_some(),
        ),
        (
            "--http-listen",
            "http_listen",
            !p.http_listen.is_empty(),
            file.http_listen.is_some(),
        ),
        (
            "--no-http",
            "no_http",
            p.no_http.is_some(),
            file.no_http.is_some(),
        ),
        (
            "--tls-cert",
            "tls_cert",
            p.tls_cert.is_some(),
            file.tls_cert.is_some(),
        ),
        (
            "--tls-key",
            "tls_key",
            p.tls_key.is_some(),
            file.tls_key.is_some(),
        ),
        (
            "--self-signed",
            "self_signed",
            p.self_signed.is_some(),
            file.self_signed.is_some(),
        ),
        ("--email", "email", p.email.is_some(), file.email.is_some()),
        (
            "--acme-directory",
            "acme_directory",
            p.acme_directory.is_some(),
            file.acme_directory.is_some(),
        ),
        (
            "--staging",
            "staging",
            p.staging.is_some(),
            file.staging.is_some(),
        ),
        (
            "--acme-ca",
            "acme_ca",
            p.acme_ca.is_some(),
            file.acme_ca.is_some(),
        ),
        (
            "--challenge",
            "challenge",
            p.challenge.is_some(),
            file.challenge.is_some(),
        ),
        (
            "--skip-preflight",
            "skip_preflight",
            p.skip_preflight.is_some(),
            file.skip_preflight.is_some(),
        ),
    ];
    for (flag, key, in_cli, in_file) in own_listener {
        let what = if in_cli {
            flag.to_string()
        } else if in_file {
            format!("`{key}` in the config file")
        } else {
            continue;
        };
        return Err(UserError::new(format!(
            "{what} cannot be used with --behind-proxy: webui then has no listener or certificate of its own, the web server in front has them"
        ))
        .hint(if in_cli {
            format!(
                "drop {flag}; put addresses and certificates in the front server's site from `webui config export nginx|apache|caddy --domain NAME`, or run without --behind-proxy"
            )
        } else {
            format!(
                "remove `{key}` from the config file (it configures webui's own HTTPS), or run without --behind-proxy"
            )
        })
        .into());
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::ProxyArgs;
    use std::path::Path;

    fn on(proxy: ProxyArgs) -> UpCmd {
        UpCmd {
            behind_proxy: Some(true),
            proxy,
            ..Default::default()
        }
    }

    #[test]
    fn off_unless_asked_and_file_or_flag_turns_it_on() {
        let none = FileConfig::default();
        assert!(!behind_proxy(&UpCmd::default(), &none).unwrap());
        assert!(behind_proxy(&on(ProxyArgs::default()), &none).unwrap());
        let f = FileConfig::parse("behind_proxy = true\n", Path::new("t")).unwrap();
        assert!(behind_proxy(&UpCmd::default(), &f).unwrap());
        let off = UpCmd {
            behind_proxy: Some(false),
            ..Default::default()
        };
        assert!(!behind_proxy(&off, &f).unwrap(), "the flag beats the file");
    }

    #[test]
    fn a_domain_is_allowed_but_own_listeners_and_acme_are_not() {
        let none = FileConfig::default();
        let named = ProxyArgs {
            domain: vec!["chat.example.com".into()],
            ..Default::default()
        };
        assert!(behind_proxy(&on(named), &none).unwrap());
        let cases: Vec<(ProxyArgs, &str)> = vec![
            (
                ProxyArgs {
                    listen: vec!["127.0.0.1:8443".into()],
                    ..Default::default()
                },
                "--listen",
            ),
            (
                ProxyArgs {
                    self_signed: Some(true),
                    ..Default::default()
                },
                "--self-signed",
            ),
            (
                ProxyArgs {
                    acme_directory: Some("https://ca/dir".into()),
                    ..Default::default()
                },
                "--acme-directory",
            ),
            (
                ProxyArgs {
                    email: Some("a@example.com".into()),
                    ..Default::default()
                },
                "--email",
            ),
        ];
        for (p, flag) in cases {
            let e = behind_proxy(&on(p), &none).unwrap_err();
            assert_eq!(crate::error::exit_code(&e), 1);
            let text = crate::error::render(&e);
            assert!(
                text.contains(flag) && text.contains("--behind-proxy"),
                "{text}"
            );
            assert!(text.contains("config export"), "{text}");
        }
        let only = UpCmd {
            ollama_only: Some(true),
            ..on(ProxyArgs::default())
        };
        let text = crate::error::render(&behind_proxy(&only, &none).unwrap_err());
        assert!(text.contains("--ollama-only cannot be used"), "{text}");
        let f = FileConfig::parse("listen = [\":8443\"]\n", Path::new("t")).unwrap();
        let text = crate::error::render(&behind_proxy(&on(ProxyArgs::default()), &f).unwrap_err());
        assert!(text.contains("`listen` in the config file"), "{text}");
    }
}
