//! `capstan check`: validate, connect, gather facts, preflight.

use std::process::ExitCode;

use crate::cli::{CheckArgs, GlobalArgs};
use crate::workflows::{self, check};

pub fn run(global: &GlobalArgs, args: &CheckArgs) -> miette::Result<ExitCode> {
    let inventory = super::load_inventory(global)?;
    // A misspelt name would silently ignore nothing: refuse it before connecting.
    let unknown = crate::preflight::unknown_ignores(&args.ignore_preflight_errors);
    if !unknown.is_empty() {
        return Err(crate::error::BadInput::new(
            format!(
                "--ignore-preflight-errors names unknown checks: {}",
                unknown.join(", ")
            ),
            format!(
                "known checks: all, {}",
                crate::preflight::known_check_names().join(", ")
            ),
        )
        .into());
    }
    let session = workflows::SessionOptions::from_flags(global, &inventory)?;
    let report = super::runtime()?.block_on(check::run(
        &inventory,
        &session,
        &args.ignore_preflight_errors,
    ))?;
    check::print(&inventory, &report)?;
    Ok(report.exit_code())
}
