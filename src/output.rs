//! All user-facing output goes through [`Printer`]: it knows whether stdout is a
//! terminal and whether the user asked for quiet, and decides what is shown.

use std::io::IsTerminal;

#[derive(Debug, Clone, Copy)]
pub struct Printer {
    quiet: bool,
    terminal: bool,
}

impl Printer {
    pub fn new(quiet: bool) -> Self {
        Self {
            quiet,
            terminal: std::io::stdout().is_terminal(),
        }
    }

    /// True when progress bars and colour may be used.
    pub fn is_terminal(&self) -> bool {
        self.terminal && !self.quiet
    }

    /// A line of normal output (suppressed by -q).
    pub fn line(&self, msg: impl AsRef<str>) {
        if !self.quiet {
            println!("{}", msg.as_ref());
        }
    }

    /// A warning, always shown, on stderr.
    pub fn warn(&self, msg: impl AsRef<str>) {
        eprintln!("warning: {}", msg.as_ref());
    }
}
