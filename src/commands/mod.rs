//! One file per subcommand; each is a few lines that delegate to a workflow.

mod apply;
mod certs;
mod check;
mod etcd;
mod init;
mod join;
mod kubeconfig;
mod lab;
mod plan;
mod reset;
mod upgrade;

use std::process::ExitCode;

use crate::cli::{Cli, Command};

pub fn dispatch(cli: Cli) -> miette::Result<ExitCode> {
    match cli.command {
        Command::Check(args) => check::run(&cli.global, &args),
        Command::Apply(args) => apply::run(&cli.global, &args),
        Command::Plan(args) => plan::run(&cli.global, &args),
        Command::Init(args) => init::run(&cli.global, &args),
        Command::Join(args) => join::run(&cli.global, &args),
        Command::Reset(args) => reset::run(&cli.global, &args),
        Command::Etcd(cmd) => etcd::run(&cli.global, &cmd),
        Command::Upgrade(cmd) => upgrade::run(&cli.global, cmd),
        Command::Lab(cmd) => lab::run(&cli.global, cmd),
        Command::Certs(cmd) => certs::run(&cli.global, cmd),
        Command::Kubeconfig(args) => kubeconfig::run(&cli.global, &args),
    }
}

/// Loads and validates the inventory named by the global flags.
pub(crate) fn load_inventory(
    global: &crate::cli::GlobalArgs,
) -> miette::Result<crate::inventory::Inventory> {
    let path = crate::inventory::locate(global.inventory.as_deref())?;
    Ok(crate::inventory::load(&path)?)
}

/// A runtime for the async SSH work of one command.
pub(crate) fn runtime() -> miette::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| miette::miette!("cannot start the async runtime: {e}"))
}

/// The artifact cache chosen by `--cache-dir`, else the default.
pub(crate) fn cache(global: &crate::cli::GlobalArgs) -> crate::artifacts::cache::Cache {
    crate::artifacts::cache::Cache::new(
        global
            .cache_dir
            .clone()
            .unwrap_or_else(crate::artifacts::cache::Cache::default_dir),
    )
}

/// Loads the inventory, converges the selection (or plans it, when `dry_run`) and prints
/// the report: what `apply` and `plan` share.
pub(crate) fn converge(
    global: &crate::cli::GlobalArgs,
    selection: &crate::cli::Selection,
    dry_run: bool,
) -> miette::Result<crate::workflows::converge::ConvergeReport> {
    use crate::workflows::converge;
    let inventory = load_inventory(global)?;
    let session = crate::workflows::SessionOptions::from_flags(global, &inventory)?;
    let opts = converge::ConvergeOptions {
        roles: selection.roles.clone(),
        hosts: selection.hosts.clone(),
        dry_run,
        verify: selection.verify,
    };
    let report = runtime()?.block_on(converge::run(&inventory, &session, cache(global), &opts))?;
    converge::print(&report)?;
    Ok(report)
}

/// `--ignore-preflight-errors` names, checked before connecting: a misspelt name would
/// silently ignore nothing.
pub(crate) fn check_ignores(names: &[String]) -> Result<(), crate::error::BadInput> {
    let unknown = crate::preflight::unknown_ignores(names);
    if unknown.is_empty() {
        return Ok(());
    }
    Err(crate::error::BadInput::new(
        format!(
            "--ignore-preflight-errors names unknown checks: {}",
            unknown.join(", ")
        ),
        format!(
            "known checks: all, {}",
            crate::preflight::known_check_names().join(", ")
        ),
    ))
}
