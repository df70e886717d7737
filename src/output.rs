//! All user-facing output goes through [`Printer`]: it knows whether stdout and stderr
//! are terminals, whether the user asked for quiet, and whether colour is wanted, and
//! decides what is shown.
//!
//! Conventions (README "Output and exit codes"):
//! - colour only on a terminal, never with `NO_COLOR` set (non-empty) or `TERM=dumb`,
//!   unless `--color always`; `--color never` turns it off everywhere. Colour is used
//!   sparingly: PASS/WARN/FAIL words, the `error:`/`warning:`/`hint:` prefixes, and a
//!   few headings;
//! - progress bars and spinners only on a terminal, plain lines otherwise, none with
//!   `-q`;
//! - `-q`: only errors, warnings and the one result a command exists for (`up`: the
//!   URL).

use std::io::IsTerminal;

use crate::cli::ColorWhen;

/// What a piece of text is, for its colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    /// PASS, "ready": green.
    Good,
    /// WARN, `warning:`: yellow.
    Warn,
    /// FAIL, `error:`: red.
    Bad,
    /// `hint:`: cyan.
    Hint,
    /// Headings and the URL: bold.
    Strong,
    /// Secondary detail: dimmed.
    Dim,
}

impl Tone {
    /// The SGR parameters (ECMA-48) of the tone. Six fixed sequences do not need a
    /// crate, and adding one would touch the shared lock file for nothing.
    fn sgr(self) -> &'static str {
        match self {
            Tone::Good => "1;32",
            Tone::Warn => "1;33",
            Tone::Bad => "1;31",
            Tone::Hint => "1;36",
            Tone::Strong => "1",
            Tone::Dim => "2",
        }
    }
}

/// `text` wrapped in the escape codes of `tone` when `color`, else unchanged.
pub fn paint(color: bool, tone: Tone, text: &str) -> String {
    if color {
        format!("\x1b[{}m{text}\x1b[0m", tone.sgr())
    } else {
        text.to_string()
    }
}

/// `s` without CSI escape sequences (colour, cursor movement): what a reader sees.
pub fn strip(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // ESC [ parameters... final byte (a letter).
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether to colour a stream: `--color`, then `NO_COLOR` (set and non-empty: no),
/// `TERM=dumb` (no), then whether the stream is a terminal.
pub fn color_enabled(when: ColorWhen, is_terminal: bool) -> bool {
    match when {
        ColorWhen::Always => true,
        ColorWhen::Never => false,
        ColorWhen::Auto => {
            let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
            let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
            is_terminal && !no_color && !dumb
        }
    }
}

/// Whether stderr gets colour (errors, warnings, log lines).
pub fn stderr_color(when: ColorWhen) -> bool {
    color_enabled(when, std::io::stderr().is_terminal())
}

#[derive(Debug, Clone, Copy)]
pub struct Printer {
    quiet: bool,
    terminal: bool,
    color_out: bool,
    color_err: bool,
}

impl Printer {
    /// A printer with automatic colour (`--color auto`).
    pub fn new(quiet: bool) -> Self {
        Self::with_color(quiet, ColorWhen::Auto)
    }

    pub fn with_color(quiet: bool, when: ColorWhen) -> Self {
        let terminal = std::io::stdout().is_terminal();
        Self {
            quiet,
            terminal,
            color_out: color_enabled(when, terminal),
            color_err: stderr_color(when),
        }
    }

    /// True when progress bars and spinners may be used: stdout is a terminal and
    /// the user did not ask for quiet.
    pub fn is_terminal(&self) -> bool {
        self.terminal && !self.quiet
    }

    pub fn is_quiet(&self) -> bool {
        self.quiet
    }

    /// Whether stdout gets colour.
    pub fn color(&self) -> bool {
        self.color_out
    }

    /// `text` in `tone` when stdout gets colour.
    pub fn paint(&self, tone: Tone, text: &str) -> String {
        paint(self.color_out, tone, text)
    }

    /// A spinner for a wait, on a terminal only; None means: print plain lines.
    pub fn spinner(&self) -> Option<indicatif::ProgressBar> {
        self.is_terminal().then(|| {
            let pb = indicatif::ProgressBar::new_spinner();
            pb.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            pb.enable_steady_tick(std::time::Duration::from_millis(120));
            pb
        })
    }

    /// A line of normal output (suppressed by -q).
    pub fn line(&self, msg: impl AsRef<str>) {
        if !self.quiet {
            println!("{}", msg.as_ref());
        }
    }

    /// The one result a command exists for (e.g. `up`'s URL): shown even with -q.
    pub fn result(&self, msg: impl AsRef<str>) {
        println!("{}", msg.as_ref());
    }

    /// A warning, always shown, on stderr.
    pub fn warn(&self, msg: impl AsRef<str>) {
        eprintln!(
            "{} {}",
            paint(self.color_err, Tone::Warn, "warning:"),
            msg.as_ref()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paint_adds_escape_codes_only_when_asked() {
        assert_eq!(paint(false, Tone::Bad, "FAIL"), "FAIL");
        let red = paint(true, Tone::Bad, "FAIL");
        assert!(red.starts_with("\x1b[") && red.contains("FAIL") && red.ends_with("\x1b[0m"));
        assert_eq!(strip(&red), "FAIL");
    }

    #[test]
    fn explicit_choices_win() {
        assert!(color_enabled(ColorWhen::Always, false));
        assert!(!color_enabled(ColorWhen::Never, true));
        assert!(!color_enabled(ColorWhen::Auto, false));
    }
}
