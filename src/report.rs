//! Telling the user what happens. The only module that knows about terminals, colours and progress.
//!
//! Three modes. On a terminal: one spinner line per cluster and phase (indicatif), finished as a step
//! line like kind's and cargo's, `✓ cluster1   istio          done (34.2s)`. Not on a terminal or
//! under `CI=true`: the same step lines, plain and timestamped. With `-o json`: one JSON event per
//! line on stdout. Colour only on a terminal and never with `NO_COLOR`. Messages go to stderr;
//! stdout is for data.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::{Value, json};

/// Output format of a reporting command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    /// JSON events for machines.
    Json,
}

pub struct Reporter {
    format: Format,
    color: bool,
    progress: Option<MultiProgress>,
    bars: Mutex<HashMap<(String, String), ProgressBar>>,
    /// Where lines and events go instead of stderr and stdout, when capturing.
    sink: Option<Captured>,
}

/// What a capturing reporter wrote: each text line (without its time stamp) or JSON event.
#[derive(Debug, Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<String>>>);

impl Captured {
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().expect("captured lock").clone()
    }

    fn push(&self, line: String) {
        self.0.lock().expect("captured lock").push(line);
    }
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter")
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

/// Whether to colour output that goes to a terminal (`is_terminal`), given the environment.
pub fn color_wanted(is_terminal: bool) -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    is_terminal && !no_color && !in_ci()
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// `34.2s`, `2m05s`.
pub fn elapsed(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

impl Reporter {
    /// A text reporter for stderr: progress and colour only where they are welcome.
    pub fn for_stderr() -> Reporter {
        Reporter::new(Format::Text)
    }

    /// A reporter in `format`.
    pub fn new(format: Format) -> Reporter {
        let tty = std::io::stderr().is_terminal();
        let progress = (format == Format::Text && tty && !in_ci()).then(MultiProgress::new);
        Reporter {
            format,
            color: color_wanted(tty),
            progress,
            bars: Mutex::default(),
            sink: None,
        }
    }

    /// A reporter in `format` that keeps what it would print (no colour, no spinner), for a caller
    /// that shows it elsewhere or checks it.
    pub fn capturing(format: Format) -> (Reporter, Captured) {
        let captured = Captured::default();
        let reporter = Reporter {
            format,
            color: false,
            progress: None,
            bars: Mutex::default(),
            sink: Some(captured.clone()),
        };
        (reporter, captured)
    }

    pub fn format(&self) -> Format {
        self.format
    }

    fn paint(&self, mark: &str, color: &str) -> String {
        if self.color {
            format!("\x1b[{color}m{mark}\x1b[0m")
        } else {
            mark.to_string()
        }
    }

    fn line(&self, mark: &str, color: &str, subject: &str, message: &str) {
        if let Some(sink) = &self.sink {
            sink.push(format!("{mark} {subject:<10} {message}"));
            return;
        }
        let stamp = if self.progress.is_some() {
            String::new()
        } else {
            format!("{} ", now())
        };
        let text = format!("{stamp}{} {subject:<10} {message}", self.paint(mark, color));
        match &self.progress {
            Some(multi) => {
                let _ = multi.println(text);
            }
            None => {
                let _ = writeln!(std::io::stderr().lock(), "{text}");
            }
        }
    }

    /// Emits a JSON event (JSON mode only).
    pub fn event(&self, kind: &str, fields: Value) {
        if self.format != Format::Json {
            return;
        }
        let mut event = json!({"event": kind, "time": now()});
        if let (Some(map), Value::Object(extra)) = (event.as_object_mut(), fields) {
            map.extend(extra);
        }
        match &self.sink {
            Some(sink) => sink.push(event.to_string()),
            None => {
                let _ = writeln!(std::io::stdout().lock(), "{event}");
            }
        }
    }

    pub fn ok(&self, subject: &str, message: &str) {
        match self.format {
            Format::Json => self.event("ok", json!({"subject": subject, "message": message})),
            Format::Text => self.line("✓", "32", subject, message),
        }
    }

    pub fn fail(&self, subject: &str, message: &str) {
        match self.format {
            Format::Json => self.event("failed", json!({"subject": subject, "message": message})),
            Format::Text => self.line("✗", "31", subject, message),
        }
    }

    /// Something the user should act on, though the command goes on.
    pub fn warn(&self, subject: &str, message: &str) {
        match self.format {
            Format::Json => self.event("warning", json!({"subject": subject, "message": message})),
            Format::Text => self.line("!", "33", subject, message),
        }
    }

    /// A note that is neither success nor failure.
    pub fn note(&self, subject: &str, message: &str) {
        match self.format {
            Format::Json => self.event("note", json!({"subject": subject, "message": message})),
            Format::Text => self.line("•", "36", subject, message),
        }
    }

    /// A phase started in a cluster.
    pub fn started(&self, phase: &str, cluster: &str) {
        match (&self.format, &self.progress) {
            (Format::Json, _) => self.event("phase-started", json!({"phase": phase, "cluster": cluster})),
            (Format::Text, Some(multi)) => {
                let bar = multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("static template"),
                );
                bar.set_message(format!("{cluster:<10} {phase:<14} running"));
                bar.enable_steady_tick(Duration::from_millis(120));
                self.bars
                    .lock()
                    .expect("bars lock")
                    .insert((phase.into(), cluster.into()), bar);
            }
            (Format::Text, None) => {}
        }
    }

    /// Progress inside a phase (the step being run).
    pub fn step(&self, phase: &str, cluster: &str, what: &str) {
        // One terminal line per spinner: long commands are cut.
        let what: String = if what.chars().count() > 72 {
            what.chars().take(71).chain(['…']).collect()
        } else {
            what.to_string()
        };
        if let Some(bar) = self
            .bars
            .lock()
            .expect("bars lock")
            .get(&(phase.into(), cluster.into()))
        {
            bar.set_message(format!("{cluster:<10} {phase:<14} {what}"));
        }
    }

    fn finish_bar(&self, phase: &str, cluster: &str) {
        if let Some(bar) = self
            .bars
            .lock()
            .expect("bars lock")
            .remove(&(phase.into(), cluster.into()))
        {
            bar.finish_and_clear();
        }
    }

    /// A phase finished in a cluster.
    pub fn finished(&self, phase: &str, cluster: &str, took: Duration, detail: &str) {
        self.finish_bar(phase, cluster);
        match self.format {
            Format::Json => self.event(
                "phase-finished",
                json!({"phase": phase, "cluster": cluster, "durationMs": took.as_millis() as u64, "detail": detail}),
            ),
            Format::Text => self.line("✓", "32", cluster, &format!("{phase:<14} {detail} ({})", elapsed(took))),
        }
    }

    /// Something a phase owns was missing or different in a cluster, and the phase's steps put it
    /// back.
    pub fn repaired(&self, phase: &str, cluster: &str, finding: &crate::probe::Finding) {
        match self.format {
            Format::Json => self.event(
                "repaired",
                json!({"phase": phase, "cluster": cluster, "object": finding.object,
                       "found": finding.found, "detail": finding.detail}),
            ),
            Format::Text => self.line(
                "↻",
                "33",
                cluster,
                &format!("{phase:<14} repaired: {}", finding.as_drift()),
            ),
        }
    }

    /// A phase was already done.
    pub fn skipped(&self, phase: &str, cluster: &str, reason: &str) {
        match self.format {
            Format::Json => self.event(
                "phase-skipped",
                json!({"phase": phase, "cluster": cluster, "reason": reason}),
            ),
            Format::Text => self.line("=", "90", cluster, &format!("{phase:<14} {reason}")),
        }
    }

    /// A phase failed in a cluster.
    pub fn failed(&self, phase: &str, cluster: &str, took: Duration, error: &str) {
        self.finish_bar(phase, cluster);
        match self.format {
            Format::Json => self.event(
                "phase-failed",
                json!({"phase": phase, "cluster": cluster, "durationMs": took.as_millis() as u64, "error": error}),
            ),
            Format::Text => self.line("✗", "31", cluster, &format!("{phase:<14} {}", error.replace('\n', "\n    "))),
        }
    }

    /// Prints a table (text mode) to stderr.
    pub fn table(&self, header: &[&str], rows: &[Vec<String>]) {
        if self.format != Format::Text {
            return;
        }
        let widths: Vec<usize> = (0..header.len())
            .map(|i| {
                rows.iter()
                    .map(|r| r[i].len())
                    .chain([header[i].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let fmt_row = |cells: Vec<&str>| {
            cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        };
        let mut text = format!("\n{}\n", fmt_row(header.to_vec()));
        for row in rows {
            text.push_str(&fmt_row(row.iter().map(String::as_str).collect()));
            text.push('\n');
        }
        match (&self.sink, &self.progress) {
            (Some(sink), _) => text.lines().skip(1).for_each(|l| sink.push(l.to_string())),
            (None, Some(multi)) => {
                let _ = multi.println(text.trim_end());
            }
            (None, None) => {
                let _ = write!(std::io::stderr().lock(), "{text}");
            }
        }
    }
}
