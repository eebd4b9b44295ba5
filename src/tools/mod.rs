//! External programs: one runner (timeouts, captured output, errors that show the command, its exit
//! code and the tail of its stderr, install hints), and thin wrappers for kind, docker and istioctl.

pub mod docker;
pub mod istioctl;
pub mod kind;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::io::AsyncWriteExt;

use crate::versions;

impl ToolError {
    /// What happened, without the install hint a `NotFound` carries: for callers that show the
    /// hint on a line of its own (`doctor`), so it is not said twice.
    pub fn without_hint(&self) -> String {
        match self {
            ToolError::NotFound { program, .. } => format!("`{program}` was not found on PATH"),
            other => other.to_string(),
        }
    }
}

/// Why a program did not do its job.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("`{program}` was not found on PATH\nhint: {hint}")]
    NotFound {
        program: String,
        /// How to install it.
        hint: String,
    },
    /// It ran and failed.
    #[error("`{command}` exited with {code}{}", if .stderr_tail.is_empty() { String::new() } else { format!(":\n{}", .stderr_tail) })]
    Failed {
        command: String,
        /// Its exit code (-1 when killed by a signal).
        code: i32,
        /// The last lines of its stderr.
        stderr_tail: String,
    },
    /// It did not finish in time (and was killed).
    #[error("`{command}` did not finish within {}s", after.as_secs())]
    Timeout { command: String, after: Duration },
    /// It could not be started or its output is not what was expected.
    #[error("`{command}`: {reason}")]
    Other { command: String, reason: String },
}

/// How to run a program.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub cwd: Option<PathBuf>,
    pub stdin: Option<Vec<u8>>,
    /// Killed after this long.
    pub timeout: Option<Duration>,
    pub env: Vec<(String, String)>,
}

/// How long a question to a tool (its version, a listing) may take: a hung daemon or binary must
/// not hold a command that only asks.
pub const QUERY_BOUND: std::time::Duration = std::time::Duration::from_secs(30);

/// [`RunOptions`] of such a question.
pub fn query() -> RunOptions {
    RunOptions {
        timeout: Some(QUERY_BOUND),
        ..RunOptions::default()
    }
}

/// What a program printed.
#[derive(Debug, Clone, Default)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
}

/// What running a program comes to: its output, or why it did not do its job.
pub type Ran<'a> = BoxFuture<'a, Result<Output, ToolError>>;

/// What runs external programs: the one seam between meshctl and kind, docker, istioctl and curl
/// (kind's `exec.Cmder`). [`ProcessRunner`] runs real processes; a test can stand in for a
/// program by answering here, without a script on PATH.
pub trait ToolRunner: Send + Sync {
    /// Runs `program args...`; a non-zero exit is an error.
    fn run<'a>(&'a self, program: &'a str, args: &'a [String], options: &'a RunOptions) -> Ran<'a>;
}

/// Runs one program from a chosen file (an istioctl of the chosen release) and every other
/// program through `inner`: the phases keep naming `istioctl`.
pub struct WithProgram {
    pub inner: std::sync::Arc<dyn ToolRunner>,
    pub program: &'static str,
    pub path: String,
}

impl ToolRunner for WithProgram {
    fn run<'a>(&'a self, program: &'a str, args: &'a [String], options: &'a RunOptions) -> Ran<'a> {
        let program = if program == self.program {
            self.path.as_str()
        } else {
            program
        };
        self.inner.run(program, args, options)
    }
}

/// Runs real processes found on PATH.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessRunner;

impl ToolRunner for ProcessRunner {
    fn run<'a>(&'a self, program: &'a str, args: &'a [String], options: &'a RunOptions) -> Ran<'a> {
        Box::pin(ProcessRunner::run(self, program, args, options))
    }
}

/// The install hint for a program meshctl calls.
pub fn install_hint(program: &str) -> String {
    match program {
        "kind" => format!(
            "install kind {}: https://kind.sigs.k8s.io/docs/user/quick-start/#installation",
            versions::KIND_VERSION
        ),
        "istioctl" => format!(
            "install istioctl {}: curl -L https://istio.io/downloadIstio | ISTIO_VERSION={} sh - (then add istio-{}/bin to PATH)",
            versions::ISTIO_VERSION,
            versions::ISTIO_VERSION,
            versions::ISTIO_VERSION
        ),
        "docker" => "install Docker and start its daemon: https://docs.docker.com/engine/install/".into(),
        "curl" => "install curl with your package manager (e.g. apt-get install curl)".into(),
        other => format!("install `{other}` and make sure it is on PATH"),
    }
}

/// The last `n` non-empty lines of `text`, indented.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl ProcessRunner {
    /// Runs `program args...`; a non-zero exit is an error.
    pub async fn run(
        &self,
        program: &str,
        args: &[String],
        options: &RunOptions,
    ) -> Result<Output, ToolError> {
        let command = std::iter::once(program.to_string())
            .chain(args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ");
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .stdin(if options.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Its own process group: a Ctrl-C at the terminal reaches meshctl alone, which
            // decides whether the tool finishes (a `kind delete` half done) or is stopped with it
            // (dropped, and killed on drop), rather than every tool dying at once.
            .process_group(0);
        if let Some(cwd) = &options.cwd {
            cmd.current_dir(cwd);
        }
        cmd.envs(options.env.iter().map(|(k, v)| (k, v)));
        let mut child = cmd.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ToolError::NotFound {
                program: program.into(),
                hint: install_hint(program),
            },
            _ => ToolError::Other {
                command: command.clone(),
                reason: e.to_string(),
            },
        })?;
        let mut group = ProcessGroup(child.id());
        if let (Some(input), Some(mut stdin)) = (&options.stdin, child.stdin.take()) {
            stdin.write_all(input).await.map_err(|e| ToolError::Other {
                command: command.clone(),
                reason: e.to_string(),
            })?;
        }
        let waited = child.wait_with_output();
        let output = match options.timeout {
            Some(limit) => tokio::time::timeout(limit, waited)
                .await
                .map_err(|_| ToolError::Timeout {
                    command: command.clone(),
                    after: limit,
                })?,
            None => waited.await,
        }
        .map_err(|e| ToolError::Other {
            command: command.clone(),
            reason: e.to_string(),
        })?;
        // It ended by itself: whatever it left in its group is its own business.
        group.0 = None;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        if !output.status.success() {
            return Err(ToolError::Failed {
                command,
                code: output.status.code().unwrap_or(-1),
                stderr_tail: tail(&stderr, 8),
            });
        }
        Ok(Output { stdout, stderr })
    }
}

/// The process group a tool runs in (its own: see [`ProcessRunner::run`]). Dropped while the tool
/// still runs (meshctl stopped it: a timeout, Ctrl-C), the whole group is killed, not only the
/// tool: what it started (kind's `docker` calls) must not go on alone.
struct ProcessGroup(Option<u32>);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if let Some(pid) = self.0.and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: killpg only sends a signal; the group is the one the tool leads.
            unsafe {
                libc::killpg(pid, libc::SIGKILL);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records each program it is asked to run.
    #[derive(Default)]
    struct Recording(std::sync::Mutex<Vec<String>>);

    impl ToolRunner for Recording {
        fn run<'a>(
            &'a self,
            program: &'a str,
            _args: &'a [String],
            _options: &'a RunOptions,
        ) -> BoxFuture<'a, Result<Output, ToolError>> {
            self.0.lock().unwrap().push(program.to_string());
            Box::pin(async { Ok(Output::default()) })
        }
    }

    #[tokio::test]
    async fn the_chosen_istioctl_runs_from_its_file_and_other_programs_as_before() {
        let inner = std::sync::Arc::new(Recording::default());
        let runner = WithProgram {
            inner: inner.clone(),
            program: "istioctl",
            path: "/cache/istioctl/1.31.1/istioctl".into(),
        };
        let none = RunOptions::default();
        runner.run("istioctl", &[], &none).await.unwrap();
        runner.run("kind", &[], &none).await.unwrap();
        assert_eq!(
            *inner.0.lock().unwrap(),
            ["/cache/istioctl/1.31.1/istioctl", "kind"]
        );
    }

    #[tokio::test]
    async fn a_failing_command_shows_its_exit_code_and_stderr_tail() {
        let args = vec![
            "-c".to_string(),
            "for i in 1 2 3 4 5 6 7 8 9 10; do echo line$i >&2; done; exit 3".into(),
        ];
        let err = ProcessRunner
            .run("sh", &args, &RunOptions::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("exited with 3") && err.contains("line10") && !err.contains("line1\n"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_missing_program_gets_an_install_hint() {
        let err = ProcessRunner
            .run("istioctl-definitely-missing", &[], &RunOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, ToolError::NotFound { .. }));
        assert!(install_hint("istioctl").contains(versions::ISTIO_VERSION));
    }

    #[tokio::test]
    async fn a_slow_command_times_out() {
        let options = RunOptions {
            timeout: Some(Duration::from_millis(100)),
            ..Default::default()
        };
        let err = ProcessRunner
            .run("sleep", &["5".to_string()], &options)
            .await
            .unwrap_err();
        assert!(matches!(err, ToolError::Timeout { .. }), "{err}");
    }
}
