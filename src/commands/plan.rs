//! `capstan plan`: what apply would change, with diffs; touches nothing.

use std::process::ExitCode;

use crate::cli::{GlobalArgs, PlanArgs};
use crate::error::{EXIT_CHANGES_PENDING, EXIT_FAILED};
use crate::workflows::{self, converge};

pub fn run(global: &GlobalArgs, args: &PlanArgs) -> miette::Result<ExitCode> {
    let inventory = super::load_inventory(global)?;
    let session = workflows::SessionOptions::from_flags(global, &inventory)?;
    let opts = super::converge_options(&args.selection, true);
    let report = super::runtime()?.block_on(converge::run(
        &inventory,
        &session,
        super::cache(global),
        &opts,
    ))?;
    converge::print(&report)?;
    Ok(if report.failed() > 0 {
        ExitCode::from(EXIT_FAILED)
    } else if args.detailed_exitcode && report.changes() > 0 {
        ExitCode::from(EXIT_CHANGES_PENDING)
    } else {
        ExitCode::SUCCESS
    })
}
