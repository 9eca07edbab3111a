//! Exit codes and the classification of top-level errors.

use std::process::ExitCode;

/// Exit code for success.
pub const EXIT_OK: u8 = 0;
/// Exit code when some host or step failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code for bad input (inventory, flags, files): nothing was attempted.
pub const EXIT_BAD_INPUT: u8 = 2;
/// Exit code of `plan --detailed-exitcode` when changes are pending.
pub const EXIT_CHANGES_PENDING: u8 = 3;
/// Exit code when another run holds the cluster lock (live or stale): nothing was changed.
pub const EXIT_LOCKED: u8 = 4;
/// Exit code of a run stopped by SIGINT (Ctrl-C); SIGTERM gives 143 (128 + the signal).
pub const EXIT_INTERRUPTED: u8 = 130;

/// An error in what the user gave us: nothing has been touched, fix the input and re-run.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("{message}")]
#[diagnostic(code(capstan::bad_input))]
pub struct BadInput {
    pub message: String,
    #[help]
    pub help: Option<String>,
}

impl BadInput {
    pub fn new(message: impl Into<String>, help: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            help: Some(help.into()),
        }
    }
}

/// Exit code for an error that reached `main`: 2 for bad input, 4 for a cluster locked by
/// another run, 1 otherwise.
pub fn exit_code_for(report: &miette::Report) -> ExitCode {
    if matches!(
        report.downcast_ref::<crate::lock::LockError>(),
        Some(crate::lock::LockError::Held { .. } | crate::lock::LockError::Stale { .. })
    ) {
        ExitCode::from(EXIT_LOCKED)
    } else if report.downcast_ref::<BadInput>().is_some()
        || report
            .downcast_ref::<crate::inventory::InventoryErrors>()
            .is_some()
    {
        ExitCode::from(EXIT_BAD_INPUT)
    } else {
        ExitCode::from(EXIT_FAILED)
    }
}
