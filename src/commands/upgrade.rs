//! `capstan upgrade plan`: versions now, allowed targets, what an upgrade would do.

use std::process::ExitCode;

use crate::cli::{GlobalArgs, UpgradeCommand, UpgradePlanArgs};
use crate::error::{BadInput, EXIT_BAD_INPUT, EXIT_FAILED};
use crate::inventory::Version;
use crate::upgrade::MaxUnavailable;
use crate::workflows::{SessionOptions, upgrade_plan};

pub fn run(global: &GlobalArgs, cmd: UpgradeCommand) -> miette::Result<ExitCode> {
    match cmd {
        UpgradeCommand::Plan(args) => plan(global, &args),
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

fn plan(global: &GlobalArgs, args: &UpgradePlanArgs) -> miette::Result<ExitCode> {
    let inventory = super::load_inventory(global)?;
    let to = args.to.as_deref().map(parse_target).transpose()?;
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
