//! `capstan etcd snapshot`: a verified etcd snapshot in .capstan/backups/;
//! `capstan etcd restore`: the whole etcd cluster back to one.

use std::process::ExitCode;

use crate::cli::{EtcdCommand, EtcdRestoreArgs, GlobalArgs};
use crate::error::BadInput;
use crate::workflows::{SessionOptions, restore, snapshot, snapshot_fetch, snapshot_list};

pub fn run(global: &GlobalArgs, cmd: &EtcdCommand) -> miette::Result<ExitCode> {
    match cmd {
        EtcdCommand::Snapshot(args) if args.list => list(global),
        EtcdCommand::Snapshot(args) if args.fetch => fetch(global),
        EtcdCommand::Snapshot(_) => {
            let inventory = super::load_inventory(global)?;
            let session = SessionOptions::from_flags(global, &inventory)?;
            let snap = super::runtime()?.block_on(snapshot::run(&inventory, &session))?;
            if crate::ui::ui().json {
                crate::ui::emit_json(&snap)?;
            } else {
                let m = &snap.meta;
                crate::ui::emit(&format!(
                    "snapshot of etcd taken on {} (revision {}, {} keys, {} bytes, sha256 {})\n  {}\n",
                    m.host,
                    m.revision,
                    m.total_keys,
                    m.size,
                    m.sha256,
                    snap.path.display()
                ));
            }
            Ok(ExitCode::SUCCESS)
        }
        EtcdCommand::Restore(args) => restore(global, args),
    }
}

/// `etcd snapshot --list`: what there is, here and on the members. A member that cannot be
/// read is said in the listing and makes the exit code 1.
fn list(global: &GlobalArgs) -> miette::Result<ExitCode> {
    let inventory = super::load_inventory(global)?;
    let session = SessionOptions::from_flags(global, &inventory)?;
    let listing = super::runtime()?.block_on(snapshot_list::run(&inventory, &session))?;
    if crate::ui::ui().json {
        crate::ui::emit_json(&listing)?;
    } else {
        crate::ui::emit(&snapshot_list::render(&listing));
    }
    Ok(if listing.hosts.iter().any(|h| h.error.is_some()) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `etcd snapshot --fetch`: the newest verified scheduled snapshot, copied here.
fn fetch(global: &GlobalArgs) -> miette::Result<ExitCode> {
    let inventory = super::load_inventory(global)?;
    let session = SessionOptions::from_flags(global, &inventory)?;
    let fetched = super::runtime()?.block_on(snapshot_fetch::run(&inventory, &session))?;
    if crate::ui::ui().json {
        crate::ui::emit_json(&fetched)?;
    } else {
        let m = &fetched.snapshot.meta;
        let how = if fetched.already_here {
            "is here already"
        } else {
            "copied"
        };
        crate::ui::emit(&format!(
            "{} {how} (taken {}, revision {}, {} keys, {} bytes, sha256 {})\n  {}\n",
            fetched.source,
            m.taken_at,
            m.revision,
            m.total_keys,
            m.size,
            m.sha256,
            fetched.snapshot.path.display()
        ));
    }
    Ok(ExitCode::SUCCESS)
}

fn restore(global: &GlobalArgs, args: &EtcdRestoreArgs) -> miette::Result<ExitCode> {
    let inventory = super::load_inventory(global)?;
    // Everything that can be checked here is, before any connection.
    let local = restore::check_local(&inventory, &args.snapshot, args.allow_foreign_snapshot)?;
    let ask = !args.dry_run && !args.yes;
    if ask && !crate::ui::can_ask() {
        return Err(BadInput::new(
            format!(
                "restoring etcd of cluster {} replaces all of its data and needs a confirmation, \
                 and there is no terminal to ask",
                inventory.cluster.name
            ),
            "add --yes (or look first with --dry-run)",
        )
        .into());
    }
    let session = SessionOptions::from_flags(global, &inventory)?;
    let opts = restore::RestoreOptions {
        dry_run: args.dry_run,
        confirm: ask,
        allow_foreign: args.allow_foreign_snapshot,
    };
    super::mutating(
        global,
        &inventory,
        &session,
        "etcd restore",
        args.dry_run,
        &super::all_hosts(&inventory),
        |rt| {
            let report = rt.block_on(restore::run(
                &inventory,
                &session,
                super::cache(global),
                &local,
                &opts,
            ))?;
            restore::print(&report)?;
            Ok(super::run_exit_code(report.refused.is_some(), report.ok()))
        },
    )
}
