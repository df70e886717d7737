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

    /// A warning, always shown, on stderr.
    pub fn warn(&self, msg: impl AsRef<str>) {
        eprintln!("warning: {}", msg.as_ref());
    }
}
