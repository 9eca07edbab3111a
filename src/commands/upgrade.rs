//! `capstan upgrade plan` (versions now, allowed targets, what an upgrade would do) and
//! `capstan upgrade apply` (the rolling upgrade).

use std::process::ExitCode;
use std::time::Duration;

use crate::cli::{GlobalArgs, UpgradeApplyArgs, UpgradeCommand, UpgradePlanArgs};
use crate::error::{BadInput, EXIT_BAD_INPUT, EXIT_FAILED};
use crate::inventory::{Role, Version};
use crate::upgrade::MaxUnavailable;
use crate::workflows::{SessionOptions, upgrade, upgrade_plan};

pub fn run(global: &GlobalArgs, cmd: UpgradeCommand) -> miette::Result<ExitCode> {
    match cmd {
        UpgradeCommand::Plan(args) => plan(global, &args),
        UpgradeCommand::Apply(args) => apply(global, &args),
    }
}

/// `--to`: a release version, `vMAJOR.MINOR.PATCH`.
pub(crate) fn parse_target(text: &str) -> Result<Version, BadInput> {
    Version::parse(text.trim()).ok_or_else(|| {
        BadInput::new(
            format!("--to `{text}` is not a Kubernetes release version"),
            "write it as vMAJOR.MINOR.PATCH, e.g. --to v1.33.1 (`capstan upgrade plan` lists the allowed targets)",
        )
    })
}

/// The node software at `to` must suit `to`'s minor, as the inventory's own does: refused
/// before any connection, with the matrix and what to set.
pub(crate) fn check_target(
    inventory: &crate::inventory::Inventory,
    to: Version,
) -> Result<(), BadInput> {
    let catalog = &inventory.cluster.artifacts.catalog;
    let minor = catalog.minor(&to).ok_or_else(|| {
        let (message, help) = catalog.unknown_minor(&to);
        BadInput::new(message, help)
    })?;
    let at = inventory.at_version(to);
    let containerd = &at.cluster.versions["containerd"];
    match crate::artifacts::data::component_version(containerd) {
        Some(v) if !minor.supports_containerd(&v) => Err(BadInput::new(
            minor.containerd_refusal(&format!("containerd {containerd}")),
            "set `cluster.versions.containerd` to one of those (or remove it for the catalog's default); upgrade apply then upgrades containerd node by node, drained, before the kubelet",
        )),
        _ => Ok(()),
    }
}

fn plan(global: &GlobalArgs, args: &UpgradePlanArgs) -> miette::Result<ExitCode> {
    let inventory = super::load_inventory(global)?;
    let to = args.to.as_deref().map(parse_target).transpose()?;
    if let Some(to) = to {
        check_target(&inventory, to)?;
    }
    let max_unavailable = MaxUnavailable::parse(&args.max_unavailable)
        .map_err(|e| BadInput::new(e, "e.g. --max-unavailable 2, or --max-unavailable 25%"))?;
    let session = SessionOptions::from_flags(global, &inventory)?;
    let opts = upgrade_plan::PlanOptions {
        to,
        max_unavailable,
    };
    let plan = super::runtime()?.block_on(upgrade_plan::run(&inventory, &session, &opts))?;
    upgrade_plan::print(&plan)?;
    if let Some(r) = &plan.refused {
        eprintln!(
            "capstan: upgrade to {} refused: {}\n  allowed path: {}",
            r.target, r.reason, r.path
        );
        return Ok(ExitCode::from(EXIT_BAD_INPUT));
    }
    if !plan.complete() {
        eprintln!(
            "capstan: the plan is incomplete: some hosts or every API server could not be read (see above)"
        );
        return Ok(ExitCode::from(EXIT_FAILED));
    }
    Ok(ExitCode::SUCCESS)
}

fn apply(global: &GlobalArgs, args: &UpgradeApplyArgs) -> miette::Result<ExitCode> {
    let inventory = super::load_inventory(global)?;
    let to = parse_target(&args.to)?;
    check_target(&inventory, to)?;
    let workers = inventory
        .hosts
        .iter()
        .filter(|h| h.has_role(Role::Worker) && !h.has_role(Role::ControlPlane))
        .count();
    let max_unavailable = MaxUnavailable::parse(&args.max_unavailable)
        .map_err(|e| BadInput::new(e, "e.g. --max-unavailable 2, or --max-unavailable 25%"))?
        .batch_size(workers);
    if args.gate_timeout == 0 {
        return Err(BadInput::new(
            "--gate-timeout 0 would let no health gate pass",
            "give the seconds each gate may wait, e.g. --gate-timeout 60",
        )
        .into());
    }
    for name in &args.allow_not_ready {
        if inventory.host(name).is_none() {
            return Err(BadInput::new(
                format!("--allow-not-ready names `{name}`, which is not in the inventory"),
                "name hosts as the inventory does",
            )
            .into());
        }
    }
    if !args.dry_run && !args.yes {
        confirm(&inventory.cluster.name, &to)?;
    }
    let session = SessionOptions::from_flags(global, &inventory)?;
    let opts = upgrade::UpgradeOptions {
        to,
        max_unavailable,
        drain_timeout: Duration::from_secs(args.drain_timeout),
        gate_timeout: Duration::from_secs(args.gate_timeout),
        dry_run: args.dry_run,
        allow_not_ready: args.allow_not_ready.clone(),
    };
    super::mutating(
        global,
        &inventory,
        &session,
        "upgrade apply",
        args.dry_run,
        &super::all_hosts(&inventory),
        |rt| {
            let report = rt.block_on(upgrade::apply(
                &inventory,
                &session,
                super::cache(global),
                &opts,
            ))?;
            upgrade::print(&report)?;
            Ok(super::run_exit_code(report.refused.is_some(), report.ok()))
        },
    )
}

/// Asks before a real upgrade; without a terminal, `--yes` is required.
fn confirm(cluster: &str, to: &Version) -> Result<(), BadInput> {
    if !crate::ui::can_ask() {
        return Err(BadInput::new(
            format!(
                "upgrading cluster {cluster} to {to} needs a confirmation, and there is no terminal to ask"
            ),
            "add --yes (or look first with --dry-run)",
        ));
    }
    if crate::ui::confirm(&format!("Upgrade cluster {cluster} to {to}?")) {
        Ok(())
    } else {
        Err(BadInput::new(
            "not confirmed: nothing was changed",
            "answer y, or pass --yes",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_must_be_release_versions() {
        assert_eq!(parse_target(" v1.33.1").unwrap().to_string(), "v1.33.1");
        for bad in ["1.33.1", "v1.33", "latest", "v1.33.1-rc.0"] {
            let err = parse_target(bad).unwrap_err();
            assert!(err.message.contains(bad), "{bad}: {err}");
        }
    }
}
