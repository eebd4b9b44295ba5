//! Telling the user what happens. The only module that knows about terminals, colours and progress.
//!
//! Step lines look like kind's and cargo's: `✓ cluster1  istiod ready (34s)`. Colour only on a
//! terminal, never with `NO_COLOR` set or under `CI=true`. Messages go to stderr; stdout is for data.

use std::io::{IsTerminal, Write};

/// Writes step lines to stderr.
#[derive(Debug, Clone)]
pub struct Reporter {
    color: bool,
}

impl Reporter {
    /// A reporter for stderr, coloured only where that is welcome.
    pub fn for_stderr() -> Reporter {
        Reporter {
            color: color_wanted(std::io::stderr().is_terminal()),
        }
    }

    /// A finished step.
    pub fn ok(&self, subject: &str, message: &str) {
        self.line("✓", "32", subject, message);
    }

    /// A failed step.
    pub fn fail(&self, subject: &str, message: &str) {
        self.line("✗", "31", subject, message);
    }

    /// A note that is neither success nor failure.
    pub fn note(&self, subject: &str, message: &str) {
        self.line("•", "36", subject, message);
    }

    fn line(&self, mark: &str, color: &str, subject: &str, message: &str) {
        let mark = if self.color {
            format!("\x1b[{color}m{mark}\x1b[0m")
        } else {
            mark.to_string()
        };
        let _ = writeln!(std::io::stderr().lock(), "{mark} {subject:<10} {message}");
    }
}

/// Whether to colour output that goes to a terminal (`is_terminal`), given the environment.
pub fn color_wanted(is_terminal: bool) -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    is_terminal && !no_color && !ci
}
