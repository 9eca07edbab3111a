//! `capstan reset --hosts a,b`: take nodes out of the cluster and clean their hosts.

use std::process::ExitCode;

use crate::cli::{GlobalArgs, ResetArgs};
use crate::workflows::{SessionOptions, cluster, reset};

pub fn run(global: &GlobalArgs, args: &ResetArgs) -> miette::Result<ExitCode> {
    let inventory = super::load_inventory(global)?;
    for name in &args.hosts {
        if inventory.host(name).is_none() {
            return Err(crate::error::BadInput::new(
                format!("--hosts names `{name}`, which is not in the inventory"),
                "name hosts as the inventory does",
            )
            .into());
        }
    }
    let session = SessionOptions::from_flags(global, &inventory)?;
    let opts = reset::ResetOptions {
        hosts: args.hosts.clone(),
        dry_run: args.dry_run,
        force: args.force,
    };
    let hosts = super::all_hosts(&inventory);
    super::mutating(
        global,
        &inventory,
        &session,
        "reset",
        args.dry_run,
        &hosts,
        |rt| {
            let (removed, rest) = rt.block_on(reset::run(
                &inventory,
                &session,
                super::cache(global),
                &opts,
            ))?;
            cluster::print_report(&removed)?;
            let mut ok = removed.ok();
            if let Some(rest) = rest {
                cluster::print_report(&rest)?;
                ok &= rest.ok();
            }
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(crate::error::EXIT_FAILED)
            })
        },
    )
}
