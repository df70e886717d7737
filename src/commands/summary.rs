//! What `webui up` prints once Open WebUI is healthy and the site is open: the URL,
//! the certificate (trusted or the local CA, and how to trust that), the admin
//! account, where data and secrets live, and the next useful commands.
//!
//! The same lines on a terminal and piped; only the colour differs (none when piped,
//! with `NO_COLOR`, `TERM=dumb` or `--color never`). A generated admin password is
//! shown on a terminal only: piped output usually ends in a log (journald), so there
//! the summary names the 0600 file that holds it. With `-q` only the URL is printed.

use std::path::{Path, PathBuf};

use crate::admin::{self, Outcome, PASSWORD_ENV};
use crate::config::TlsSource;
use crate::config::up::Project;
use crate::output::{Printer, Tone};
use crate::tls::CertInfo;

/// Everything the summary reports.
pub struct Summary<'a> {
    pub url: &'a str,
    pub tls: &'a TlsSource,
    /// The certificate served right now; None when webui serves no TLS itself (a
    /// proxy in front terminates it).
    pub cert: Option<CertInfo>,
    pub state_dir: &'a Path,
    pub project: &'a Project,
    pub volume: &'a str,
    pub secret_key: PathBuf,
    pub admin: Option<Outcome>,
}

/// The first line; tests and scripts look for it.
pub fn ready_line(url: &str) -> String {
    format!("Open WebUI is ready at {url}")
}

impl Summary<'_> {
    /// The lines to print: (label, text, tone of the text). A label of "" continues
    /// the previous entry.
    fn lines(&self, terminal: bool) -> Vec<(&'static str, String, Option<Tone>)> {
        let mut out = Vec::new();
        let ca_pem = self.state_dir.join("ca").join("ca.pem");
        let flag = self.project.flag();
        let issuer = self.cert.as_ref().map_or("", |c| c.issuer.as_str());
        match self.tls {
            _ if self.cert.is_none() => {
                out.push((
                    "certificate",
                    "none served by webui: the proxy in front of it terminates TLS".into(),
                    None,
                ));
            }
            TlsSource::Acme(a) if issuer.contains("webui local CA") => {
                out.push((
                    "certificate",
                    format!(
                        "being ordered from {} (ACME); until it arrives a temporary certificate from webui's local CA is served",
                        a.directory
                    ),
                    Some(Tone::Warn),
                ));
                out.push((
                    "",
                    format!("follow it with `webui{flag} cert status`"),
                    None,
                ));
            }
            TlsSource::Acme(_) => {
                out.push((
                    "certificate",
                    format!(
                        "trusted, issued by {} (ACME), renewed automatically; `webui{flag} cert status`",
                        issuer
                    ),
                    Some(Tone::Good),
                ));
            }
            TlsSource::SelfSigned => {
                out.push((
                    "certificate",
                    "self-signed by webui's local CA: browsers warn until you trust the CA".into(),
                    Some(Tone::Warn),
                ));
                out.push((
                    "",
                    format!("its root certificate: {}", ca_pem.display()),
                    None,
                ));
                out.push((
                    "",
                    format!(
                        "trust it on a Debian/Ubuntu machine: sudo cp {} /usr/local/share/ca-certificates/webui-local-ca.crt && sudo update-ca-certificates",
                        ca_pem.display()
                    ),
                    None,
                ));
                out.push((
                    "",
                    "elsewhere import that file as a trusted root (browser or OS certificate settings)".into(),
                    None,
                ));
            }
            TlsSource::Files { cert, .. } => {
                out.push((
                    "certificate",
                    format!(
                        "your files ({}), issued by {}; reloaded when they change",
                        cert.display(),
                        issuer
                    ),
                    None,
                ));
            }
        }

        let mut admin_lines = admin::describe(self.admin.as_ref()).into_iter();
        if let Some(first) = admin_lines.next() {
            let tone = matches!(self.admin, Some(Outcome::AuthOff)).then_some(Tone::Warn);
            out.push(("admin", first, tone));
        }
        for l in admin_lines {
            out.push(("", l, None));
        }
        if let Some(Outcome::Created {
            password: Some(p),
            password_file,
            ..
        }) = &self.admin
        {
            if terminal {
                out.push((
                    "",
                    format!("password: {p}   (shown once; sign in and change it)"),
                    Some(Tone::Strong),
                ));
            } else {
                let place = password_file
                    .as_deref()
                    .map_or("the state directory".to_string(), |f| {
                        f.display().to_string()
                    });
                out.push((
                    "",
                    format!("password: not printed (not a terminal): read it from {place}"),
                    None,
                ));
            }
        } else if matches!(&self.admin, Some(Outcome::Created { password: None, .. })) {
            out.push(("", format!("password: the value of {PASSWORD_ENV}"), None));
        }

        out.push((
            "data",
            format!(
                "Docker volume {} (chats, users, uploads); `webui down` keeps it",
                self.volume
            ),
            None,
        ));
        out.push((
            "secrets",
            format!(
                "WEBUI_SECRET_KEY in {} (mode 0600; back it up with the data)",
                self.secret_key.display()
            ),
            None,
        ));
        out.push((
            "",
            format!(
                "certificates, local CA and config under {}",
                self.state_dir.display()
            ),
            None,
        ));
        out.push((
            "next",
            ["status", "logs -f", "backup", "down"]
                .iter()
                .map(|c| format!("webui{flag} {c}"))
                .collect::<Vec<_>>()
                .join("  |  "),
            None,
        ));
        out
    }

    /// Prints the summary through `printer`.
    pub fn print(&self, printer: &Printer) {
        if printer.is_quiet() {
            printer.result(self.url);
            return;
        }
        printer.line(format!(
            "{}{}",
            printer.paint(Tone::Good, "Open WebUI is ready at "),
            printer.paint(Tone::Strong, self.url)
        ));
        for (label, text, tone) in self.lines(printer.is_terminal()) {
            let label = if label.is_empty() {
                " ".repeat(13)
            } else {
                format!("{:<13}", format!("{label}:"))
            };
            let text = match tone {
                Some(t) => printer.paint(t, &text),
                None => text,
            };
            printer.line(format!("  {}{text}", printer.paint(Tone::Dim, &label)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary<'a>(
        tls: &'a TlsSource,
        project: &'a Project,
        admin: Option<Outcome>,
    ) -> Summary<'a> {
        Summary {
            url: "https://chat.example.com",
            tls,
            cert: Some(CertInfo {
                names: vec!["chat.example.com".into()],
                issuer: "webui local CA (box)".into(),
                not_before: time::OffsetDateTime::UNIX_EPOCH,
                not_after: time::OffsetDateTime::UNIX_EPOCH,
            }),
            state_dir: Path::new("/var/lib/webui"),
            project,
            volume: "open-webui",
            secret_key: PathBuf::from("/var/lib/webui/projects/default/secret_key"),
            admin,
        }
    }

    fn text(lines: &[(&str, String, Option<Tone>)]) -> String {
        lines
            .iter()
            .map(|(l, t, _)| format!("{l} {t}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn self_signed_site_says_how_to_trust_the_ca_and_where_things_are() {
        let p = Project::named("staging").unwrap();
        let created = Outcome::Created {
            email: "admin@chat.example.com".into(),
            password: Some("Secret123Secret123Secret".into()),
            password_file: Some(PathBuf::from(
                "/var/lib/webui/projects/staging/admin_password",
            )),
        };
        let s = summary(&TlsSource::SelfSigned, &p, Some(created));
        let t = text(&s.lines(true));
        for want in [
            "/var/lib/webui/ca/ca.pem",
            "update-ca-certificates",
            "created admin@chat.example.com",
            "password: Secret123Secret123Secret",
            "Docker volume open-webui",
            "secret_key",
            "webui --project staging status",
            "webui --project staging logs -f",
            "webui --project staging backup",
            "webui --project staging down",
        ] {
            assert!(t.contains(want), "`{want}` in:\n{t}");
        }
        // Piped: the password stays in its file.
        let t = text(&s.lines(false));
        assert!(!t.contains("Secret123"), "{t}");
        assert!(
            t.contains("/var/lib/webui/projects/staging/admin_password"),
            "{t}"
        );
    }

    #[test]
    fn existing_accounts_are_reported_unchanged() {
        let p = Project::default();
        let s = summary(
            &TlsSource::SelfSigned,
            &p,
            Some(Outcome::Existing { record: None }),
        );
        let t = text(&s.lines(true));
        assert!(t.contains("already has accounts"), "{t}");
        assert!(t.contains("webui status"), "{t}");
    }
}
