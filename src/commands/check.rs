//! `capstan check`: validate, connect, gather facts, preflight.

use std::process::ExitCode;

use crate::cli::{CheckArgs, GlobalArgs};
use crate::workflows::{self, check};

pub fn run(global: &GlobalArgs, args: &CheckArgs) -> miette::Result<ExitCode> {
    let inventory = super::load_inventory(global)?;
    super::check_ignores(&args.ignore_preflight_errors)?;
    let session = workflows::SessionOptions::from_flags(global, &inventory)?;
    let report = super::runtime()?.block_on(check::run(
        &inventory,
        &session,
        &args.ignore_preflight_errors,
    ))?;
    check::print(&inventory, &report)?;
    Ok(report.exit_code())
}
