//! `capstan apply`: converge roles on hosts, no cluster gates.

use std::process::ExitCode;

use crate::cli::{ApplyArgs, GlobalArgs};

pub fn run(global: &GlobalArgs, args: &ApplyArgs) -> miette::Result<ExitCode> {
    super::converge(global, &args.selection, args.dry_run, |report| {
        if report.failed() > 0 {
            ExitCode::from(crate::error::EXIT_FAILED)
        } else {
            ExitCode::SUCCESS
        }
    })
}
