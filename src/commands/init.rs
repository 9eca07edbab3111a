//! `capstan init`: build the cluster, phase by phase with health gates.

use std::process::ExitCode;

use crate::cli::{GlobalArgs, InitArgs};
use crate::workflows::{SessionOptions, cluster, init};

pub fn run(global: &GlobalArgs, args: &InitArgs) -> miette::Result<ExitCode> {
    build(global, args, init::Mode::Init)
}

/// `init` and `join` share the workflow; `mode` says which.
pub(super) fn build(
    global: &GlobalArgs,
    args: &InitArgs,
    mode: init::Mode,
) -> miette::Result<ExitCode> {
    let inventory = super::load_inventory(global)?;
    super::check_ignores(&args.ignore_preflight_errors)?;
    let session = SessionOptions::from_flags(global, &inventory)?;
    let opts = init::InitOptions {
        mode,
        dry_run: args.dry_run,
        verify: args.verify,
        ignore_preflight: args.ignore_preflight_errors.clone(),
        addons_timeout: std::time::Duration::from_secs(args.addons_timeout),
    };
    let command = match opts.mode {
        init::Mode::Init => "init",
        init::Mode::Join { .. } => "join",
    };
    let hosts = super::all_hosts(&inventory);
    super::mutating(
        global,
        &inventory,
        &session,
        command,
        args.dry_run,
        &hosts,
        |rt| {
            let report =
                rt.block_on(init::run(&inventory, &session, super::cache(global), &opts))?;
            cluster::print_report(&report)?;
            Ok(if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(crate::error::EXIT_FAILED)
            })
        },
    )
}
