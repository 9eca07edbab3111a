//! `capstan apply`: converge roles on hosts, no cluster gates.

use std::process::ExitCode;

use crate::cli::{ApplyArgs, GlobalArgs};
use crate::workflows::{self, converge};

pub fn run(global: &GlobalArgs, args: &ApplyArgs) -> miette::Result<ExitCode> {
    let inventory = super::load_inventory(global)?;
    let session = workflows::SessionOptions::from_flags(global, &inventory)?;
    let opts = super::converge_options(&args.selection, args.dry_run);
    let report = super::runtime()?.block_on(converge::run(
        &inventory,
        &session,
        super::cache(global),
        &opts,
    ))?;
    converge::print(&report)?;
    Ok(if report.failed() > 0 {
        ExitCode::from(crate::error::EXIT_FAILED)
    } else {
        ExitCode::SUCCESS
    })
}
