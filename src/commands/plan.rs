//! `capstan plan`: what apply would change, with diffs; touches nothing.

use std::process::ExitCode;

use crate::cli::{GlobalArgs, PlanArgs};
use crate::error::{EXIT_CHANGES_PENDING, EXIT_FAILED};

pub fn run(global: &GlobalArgs, args: &PlanArgs) -> miette::Result<ExitCode> {
    super::converge(global, &args.selection, true, |report| {
        if report.failed() > 0 {
            ExitCode::from(EXIT_FAILED)
        } else if args.detailed_exitcode && report.changes() > 0 {
            ExitCode::from(EXIT_CHANGES_PENDING)
        } else {
            ExitCode::SUCCESS
        }
    })
}
