//! `capstan upgrade`: rolling upgrades.

use std::process::ExitCode;
use std::time::Duration;

use crate::cli::{GlobalArgs, UpgradeApplyArgs, UpgradeCommand};
use crate::error::BadInput;
use crate::inventory::{Role, Version};
use crate::workflows::{SessionOptions, cluster, upgrade};

pub fn run(global: &GlobalArgs, cmd: &UpgradeCommand) -> miette::Result<ExitCode> {
    match cmd {
        UpgradeCommand::Apply(args) => apply(global, args),
    }
}

/// `--max-unavailable`: `N` or `P%` of `workers`, at least 1.
pub fn max_unavailable(text: &str, workers: usize) -> Result<usize, BadInput> {
    let bad = || {
        BadInput::new(
            format!("--max-unavailable {text} is neither a number nor a percentage"),
            "give a count of workers (2) or a percentage of them (25%)",
        )
    };
    let n = if let Some(p) = text.strip_suffix('%') {
        let p: usize = p.trim().parse().map_err(|_| bad())?;
        if p == 0 || p > 100 {
            return Err(bad());
        }
        (workers * p).div_ceil(100)
    } else {
        text.trim().parse().map_err(|_| bad())?
    };
    Ok(n.max(1))
}

fn apply(global: &GlobalArgs, args: &UpgradeApplyArgs) -> miette::Result<ExitCode> {
    let inventory = super::load_inventory(global)?;
    let to = Version::parse(&args.to).ok_or_else(|| {
        BadInput::new(
            format!("--to {} is not a version", args.to),
            "versions look like v1.32.4",
        )
    })?;
    let workers = inventory
        .hosts
        .iter()
        .filter(|h| h.has_role(Role::Worker) && !h.has_role(Role::ControlPlane))
        .count();
    let max_unavailable = max_unavailable(&args.max_unavailable, workers)?;
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
        dry_run: args.dry_run,
        allow_not_ready: args.allow_not_ready.clone(),
    };
    let report = super::runtime()?.block_on(upgrade::apply(
        &inventory,
        &session,
        super::cache(global),
        &opts,
    ))?;
    cluster::print_report(&report)?;
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::error::EXIT_FAILED)
    })
}

/// Asks before a real upgrade; without a terminal, `--yes` is required.
fn confirm(cluster: &str, to: &Version) -> Result<(), BadInput> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        return Err(BadInput::new(
            format!(
                "upgrading cluster {cluster} to {to} needs a confirmation, and there is no terminal to ask"
            ),
            "add --yes (or look first with --dry-run)",
        ));
    }
    eprint!("Upgrade cluster {cluster} to {to}? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    if matches!(answer.trim(), "y" | "Y" | "yes") {
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
    fn max_unavailable_counts_or_percentages() {
        assert_eq!(max_unavailable("2", 5).unwrap(), 2);
        assert_eq!(max_unavailable("25%", 5).unwrap(), 2);
        assert_eq!(max_unavailable("0", 5).unwrap(), 1);
        assert!(max_unavailable("x", 5).is_err());
        assert!(max_unavailable("150%", 5).is_err());
    }
}
