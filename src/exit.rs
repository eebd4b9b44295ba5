//! How a command ends, as its exit code says (docs/exit-codes.md). Below every other module, so any
//! of them can say "this is the user's mistake" without importing the command layer.

use std::process::ExitCode;

/// Exit codes (documented in docs/exit-codes.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    Success = 0,
    /// A phase, command or check failed.
    Failure = 1,
    /// The command line or the topology is invalid; nothing was changed.
    Usage = 2,
    /// `status`/`verify`: the mesh is not (yet) ready or traffic did not pass.
    NotReady = 3,
    /// Interrupted (Ctrl-C); state is kept for resuming.
    Interrupted = 130,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e as u8)
    }
}

/// The command line or the topology asks for something meshctl cannot do; nothing was changed.
/// The one error type behind exit code 2 (clap's own parse errors exit 2 as well).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

impl UsageError {
    /// A usage error from any displayable cause.
    pub fn from_display(cause: impl std::fmt::Display) -> UsageError {
        UsageError(cause.to_string())
    }
}
