//! Errors as the user reads them, and the exit codes they map to.
//!
//! Modules return `anyhow::Error` with `.context()`; an error the user can fix (bad
//! flag, busy port, unreadable file) carries a [`UserError`] somewhere in its chain,
//! optionally with a hint. `main` prints `error: ...`, `caused by: ...` lines and the
//! hint, and exits 1 for user errors and 2 for everything unexpected.

use std::fmt;

/// Exit code for an error the user can fix (bad input, busy port, missing file).
pub const EXIT_USER: u8 = 1;
/// Exit code for everything unexpected.
pub const EXIT_UNEXPECTED: u8 = 2;
/// Exit code of `status`, `doctor` and `cert status` when what they check is not
/// healthy (the command itself worked).
pub const EXIT_UNHEALTHY: u8 = 3;

/// An error caused by the user's input or environment, with an optional hint on what
/// to do about it.
#[derive(Debug)]
pub struct UserError {
    message: String,
    hint: Option<String>,
}

impl UserError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UserError {}

/// Shorthand for `Err(UserError::new(msg).into())`.
pub fn user<T>(message: impl Into<String>) -> anyhow::Result<T> {
    Err(UserError::new(message).into())
}

/// The exit code for an error: 1 when the user can fix it, else 2.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if err.chain().any(|c| c.is::<UserError>()) {
        EXIT_USER
    } else {
        EXIT_UNEXPECTED
    }
}

/// Renders an error for the terminal: `error:`, `caused by:` lines, then any hint.
pub fn render(err: &anyhow::Error) -> String {
    render_styled(err, false)
}

/// [`render`], with the `error:` and `hint:` prefixes coloured when `color`.
pub fn render_styled(err: &anyhow::Error, color: bool) -> String {
    use crate::output::{Tone, paint};
    let mut out = format!("{} {err}", paint(color, Tone::Bad, "error:"));
    for cause in err.chain().skip(1) {
        out.push_str(&format!("\n  caused by: {cause}"));
    }
    for hint in err
        .chain()
        .filter_map(|c| c.downcast_ref::<UserError>())
        .filter_map(|u| u.hint.as_deref())
    {
        out.push_str(&format!("\n  {} {hint}", paint(color, Tone::Hint, "hint:")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn user_errors_exit_1_with_hint_and_causes() {
        let err: anyhow::Error = UserError::new("port 443 is busy").hint("stop nginx").into();
        let err = Err::<(), _>(err)
            .context("cannot start the proxy")
            .unwrap_err();
        assert_eq!(exit_code(&err), EXIT_USER);
        let text = render(&err);
        assert!(text.starts_with("error: cannot start the proxy"));
        assert!(text.contains("caused by: port 443 is busy"));
        assert!(text.contains("hint: stop nginx"));
    }

    #[test]
    fn colour_only_on_the_prefixes() {
        let err: anyhow::Error = UserError::new("bad").hint("do this").into();
        assert!(!render_styled(&err, false).contains('\x1b'));
        let text = render_styled(&err, true);
        assert!(text.contains("\x1b[") && text.contains("error:") && text.contains(" bad"));
        assert_eq!(crate::output::strip(&text), render(&err));
    }

    #[test]
    fn other_errors_exit_2() {
        let err = anyhow::anyhow!("boom");
        assert_eq!(exit_code(&err), EXIT_UNEXPECTED);
    }
}
