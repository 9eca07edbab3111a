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

/// Exit code for an error that reached `main`: 2 for bad input, 1 otherwise.
pub fn exit_code_for(report: &miette::Report) -> ExitCode {
    if report.downcast_ref::<BadInput>().is_some()
        || report
            .downcast_ref::<crate::inventory::InventoryErrors>()
            .is_some()
    {
        ExitCode::from(EXIT_BAD_INPUT)
    } else {
        ExitCode::from(EXIT_FAILED)
    }
}
