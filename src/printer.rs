//! All terminal output goes through here: data that scripts pipe goes to
//! stdout, everything else (progress, warnings, errors) to stderr.
//! `NO_COLOR` is respected; colour is only used on a terminal.

use std::io::{IsTerminal, Write};

/// Where and how to print.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    color: bool,
    stderr_tty: bool,
}

impl Default for Printer {
    fn default() -> Self {
        Self::detect()
    }
}

impl Printer {
    pub fn detect() -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let stderr_tty = std::io::stderr().is_terminal();
        Printer {
            color: !no_color && stderr_tty,
            stderr_tty,
        }
    }

    /// True when stderr is an interactive terminal (progress bars, prompts).
    pub fn interactive(&self) -> bool {
        self.stderr_tty && std::io::stdin().is_terminal()
    }

    pub fn color(&self) -> bool {
        self.color
    }

    /// Pipeable output.
    pub fn out(&self, text: &str) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        if !text.ends_with('\n') {
            let _ = out.write_all(b"\n");
        }
        let _ = out.flush();
    }

    /// A message for the human.
    pub fn info(&self, text: &str) {
        eprintln!("{text}");
    }

    pub fn warn(&self, text: &str) {
        eprintln!("{}: {text}", self.paint("warning", "33"));
    }

    /// An error: one `error:` line, a `Caused by:` line only for a cause
    /// that says something the lines above do not, then the hints (the
    /// AWS layer's for the failure, then the command's own).
    pub fn error(&self, err: &anyhow::Error) {
        eprintln!("{}", self.render_error(err));
    }

    /// The text [`Printer::error`] prints.
    pub fn render_error(&self, err: &anyhow::Error) -> String {
        let top = err.to_string();
        let mut shown = vec![top.clone()];
        let mut lines = format!("{}: {top}", self.paint("error", "31"));
        for cause in err.chain().skip(1) {
            let text = cause.to_string();
            if text.trim().is_empty() || shown.iter().any(|s| s.contains(text.as_str())) {
                continue;
            }
            lines.push_str(&format!("\n  Caused by: {text}"));
            shown.push(text);
        }
        let mut hints = crate::aws::errors::hints_for(&shown.join("\n"));
        for cause in err.chain() {
            if let Some(h) = cause
                .downcast_ref::<crate::exit::CodedError>()
                .and_then(|e| e.hint.as_ref())
            {
                if !hints.contains(h) {
                    hints.push(h.clone());
                }
            }
        }
        for hint in hints {
            lines.push_str(&format!("\n{}: {hint}", self.paint("hint", "36")));
        }
        lines
    }

    pub fn paint(&self, text: &str, ansi: &str) -> String {
        if self.color {
            format!("\x1b[{ansi}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}
