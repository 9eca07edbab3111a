//! `capstan certs generate | check-expiration | renew | distribute`.

use std::process::ExitCode;

use time::OffsetDateTime;

use crate::cli::{CertsCommand, GlobalArgs};
use crate::error::{BadInput, EXIT_FAILED};
use crate::pki::PkiError;
use crate::workflows::{self, certs};

/// Unknown certificate names are bad input (exit 2), like a typo in a flag.
fn classify(e: PkiError) -> miette::Report {
    match e {
        PkiError::Unknown { name, known } => {
            BadInput::new(format!("no certificate is called `{name}`"), known).into()
        }
        other => other.into(),
    }
}

pub fn run(global: &GlobalArgs, cmd: CertsCommand) -> miette::Result<ExitCode> {
    let inventory = super::load_inventory(global)?;
    let now = OffsetDateTime::now_utc();
    let as_json = crate::ui::ui().json;
    match cmd {
        CertsCommand::Generate(args) => {
            let report = certs::generate(&inventory, now, args.dry_run).map_err(classify)?;
            if as_json {
                crate::ui::emit_json(&report)?;
            } else {
                certs::print_pki(&report);
            }
            Ok(ExitCode::SUCCESS)
        }
        CertsCommand::Renew(args) => {
            let report =
                certs::renew(&inventory, &args.names, now, args.dry_run).map_err(classify)?;
            if as_json && args.local {
                crate::ui::emit_json(&report)?;
            } else if !as_json {
                certs::print_pki(&report);
                if args.local && !args.dry_run {
                    crate::ui::emit(
                        "The renewed certificates are in the local PKI only (--local). Install \
                         them, restarting what uses them, with `capstan certs renew` without \
                         --local, or `capstan init`.\n",
                    );
                }
            }
            if args.local {
                return Ok(ExitCode::SUCCESS);
            }
            // Install the renewed certificates and restart what uses them, control planes
            // and etcd members one at a time (on a dry run: what that would change).
            let session = crate::workflows::SessionOptions::from_flags(global, &inventory)?;
            super::mutating(
                global,
                &inventory,
                &session,
                "certs renew",
                args.dry_run,
                &super::all_hosts(&inventory),
                |rt| {
                    let rolled = rt.block_on(crate::workflows::renew::roll(
                        &inventory,
                        &session,
                        super::cache(global),
                        args.dry_run,
                    ))?;
                    crate::workflows::cluster::print_report(&rolled)?;
                    Ok(if rolled.ok() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(crate::error::EXIT_FAILED)
                    })
                },
            )
        }
        CertsCommand::Distribute(args) => {
            for name in &args.hosts {
                if inventory.host(name).is_none() {
                    return Err(BadInput::new(
                        format!("there is no host `{name}` in the inventory"),
                        "name hosts as the inventory does",
                    )
                    .into());
                }
            }
            let session = workflows::SessionOptions::from_flags(global, &inventory)?;
            super::mutating(
                global,
                &inventory,
                &session,
                "certs distribute",
                args.dry_run,
                &distribute_hosts(&inventory, &args.hosts),
                |rt| {
                    let report = rt.block_on(certs::distribute(
                        &inventory,
                        &session,
                        &args.hosts,
                        now,
                        args.dry_run,
                    ))?;
                    if as_json {
                        crate::ui::emit_json(&report)?;
                    } else {
                        certs::print_distribute(&report);
                    }
                    Ok(if report.failed() > 0 {
                        ExitCode::from(EXIT_FAILED)
                    } else {
                        ExitCode::SUCCESS
                    })
                },
            )
        }
        CertsCommand::CheckExpiration => {
            let session = workflows::SessionOptions::from_flags(global, &inventory)?;
            let report =
                super::runtime()?.block_on(certs::check_expiration(&inventory, &session, now));
            if as_json {
                crate::ui::emit_json(&report)?;
            } else {
                certs::print_expiration(&report, now);
            }
            Ok(if report.failed.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_FAILED)
            })
        }
    }
}

/// The hosts `certs distribute` connects to: the named ones (all when none is named), and
/// the control planes and etcd hosts, where CAs are adopted from.
fn distribute_hosts<'a>(
    inventory: &'a crate::inventory::Inventory,
    named: &[String],
) -> Vec<&'a str> {
    use crate::inventory::Role;
    inventory
        .hosts
        .iter()
        .filter(|h| {
            named.is_empty()
                || named.contains(&h.name)
                || h.has_role(Role::ControlPlane)
                || h.has_role(Role::Etcd)
        })
        .map(|h| h.name.as_str())
        .collect()
}
