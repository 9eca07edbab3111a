//! One file per subcommand; each is a few lines that delegate to a workflow.

mod apply;
mod certs;
mod check;
mod etcd;
mod images;
mod init;
mod join;
mod kubeconfig;
mod lab;
mod plan;
mod reset;
mod upgrade;
mod version;
mod versions;

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
        Command::Images(cmd) => images::run(&cli.global, &cmd),
        Command::Version => version::run(),
        Command::Versions => versions::run(&cli.global),
        Command::Completion(args) => Ok(version::completion(args.shell)),
        Command::Man => version::man(),
    }
}

/// Loads and validates the inventory named by the global flags.
pub(crate) fn load_inventory(
    global: &crate::cli::GlobalArgs,
) -> miette::Result<crate::inventory::Inventory> {
    let path = crate::inventory::locate(global.inventory.as_deref())?;
    let inventory = crate::inventory::load(&path)?;
    // The cluster's private keys: every command refuses a PKI others can read, also those
    // that never open it, so that the operator hears of it at once.
    crate::pki::store::Store::for_inventory(&inventory).check_permissions()?;
    Ok(inventory)
}

/// A runtime for the async SSH work of one command.
pub(crate) fn runtime() -> miette::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| miette::miette!("cannot start the async runtime: {e}"))
}

/// Runs `body`, a command that changes hosts, under the cluster lock (see [`crate::lock`]):
/// takes the lock before any change (refused: exit 4), handles Ctrl-C and SIGTERM (see
/// [`crate::interrupt`]), journals the run, releases the lock at the end, also on failure
/// or interrupt, and maps an interrupt to its exit code (130 for SIGINT, 143 for SIGTERM).
/// A dry run changes nothing and takes no lock.
///
/// `hosts` (names) are connected to first, all at once, every host key checked: the lock
/// is then taken over the lock host's own connection, and `body` works over the same
/// connections (see [`crate::ssh::Pool`]). When a host key has changed, nothing is sent
/// to any host, the lock included: `body` reports it for every host.
pub(crate) fn mutating(
    global: &crate::cli::GlobalArgs,
    inventory: &crate::inventory::Inventory,
    session: &crate::workflows::SessionOptions,
    command: &str,
    dry_run: bool,
    hosts: &[&str],
    body: impl FnOnce(&tokio::runtime::Runtime) -> miette::Result<ExitCode>,
) -> miette::Result<ExitCode> {
    let rt = runtime()?;
    if dry_run {
        return body(&rt);
    }
    let result = locked(global, inventory, session, command, hosts, &rt, body);
    rt.block_on(session.ssh.pool.close_all());
    result
}

/// Connects to `hosts`, then runs `body` under the cluster lock (see [`mutating`]).
fn locked(
    global: &crate::cli::GlobalArgs,
    inventory: &crate::inventory::Inventory,
    session: &crate::workflows::SessionOptions,
    command: &str,
    hosts: &[&str],
    rt: &tokio::runtime::Runtime,
    body: impl FnOnce(&tokio::runtime::Runtime) -> miette::Result<ExitCode>,
) -> miette::Result<ExitCode> {
    let targets: Vec<crate::ssh::Target> = inventory
        .hosts
        .iter()
        .filter(|h| hosts.contains(&h.name.as_str()))
        .map(crate::workflows::target)
        .collect();
    let progress = crate::ui::HostProgress::new("connecting", targets.iter().map(|t| &t.name));
    let connected = rt.block_on(crate::ssh::connect_all(
        &targets,
        &session.ssh,
        session.forks,
        |name, _| progress.host_done(name),
    ));
    progress.finish();
    for (t, result) in targets.iter().zip(connected) {
        session.ssh.pool.put(&t.name, result);
    }
    if session.ssh.pool.stopped_by_host_key() {
        return body(rt);
    }
    crate::journal::open(inventory.state_dir(), command);
    crate::interrupt::install(
        rt,
        format!(
            "The cluster lock stays until it turns stale ({}s without heartbeat); then `capstan {command} --break-lock`. \
             The journal, {}, says where the run got to.",
            crate::lock::stale_after().as_secs(),
            inventory.state_dir().join("journal.log").display()
        ),
    );
    let lock = rt.block_on(crate::lock::ClusterLock::acquire(
        inventory,
        session,
        command,
        global.break_lock,
    ))?;
    crate::journal::append(
        "-",
        &format!(
            "start, by {} (pid {}), lock on {}",
            crate::lock::holder(),
            std::process::id(),
            lock.host()
        ),
    );
    let result = body(rt);
    rt.block_on(lock.release());
    if let Some(why) = crate::interrupt::interrupted() {
        crate::journal::append("-", &format!("stopped: {}; lock released", why.reason));
        if let Err(e) = &result {
            eprintln!("{e:?}");
        }
        eprintln!(
            "capstan: {command} {}: stopped between steps, the cluster lock is released; \
             re-run `capstan {command}` to finish",
            why.reason
        );
        return Ok(ExitCode::from(why.exit_code()));
    }
    crate::journal::append(
        "-",
        match &result {
            Ok(code) if *code == ExitCode::SUCCESS => "end: ok",
            _ => "end: failed",
        },
    );
    result
}

/// Every host of the inventory, by name: what a cluster run connects to.
pub(crate) fn all_hosts(inventory: &crate::inventory::Inventory) -> Vec<&str> {
    inventory.hosts.iter().map(|h| h.name.as_str()).collect()
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
    exit: impl Fn(&crate::workflows::converge::ConvergeReport) -> ExitCode,
) -> miette::Result<ExitCode> {
    use crate::workflows::converge;
    let inventory = load_inventory(global)?;
    let session = crate::workflows::SessionOptions::from_flags(global, &inventory)?;
    let opts = converge::ConvergeOptions {
        roles: selection.roles.clone(),
        hosts: selection.hosts.clone(),
        dry_run,
        verify: selection.verify,
    };
    // Roles and hosts are checked here, before the lock's first connection.
    let prepared = converge::prepare(&inventory, &opts, cache(global))?;
    let hosts: Vec<&str> = inventory
        .hosts
        .iter()
        .map(|h| h.name.as_str())
        .filter(|h| opts.hosts.is_empty() || opts.hosts.iter().any(|s| s == h))
        .collect();
    mutating(
        global,
        &inventory,
        &session,
        "apply",
        dry_run,
        &hosts,
        |rt| {
            let report = rt.block_on(converge::run_prepared(
                &inventory, &session, prepared, &opts,
            ))?;
            converge::print(&report)?;
            Ok(exit(&report))
        },
    )
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

/// A cluster run's exit code: refused before any change (bad input), ok, or failed.
fn run_exit_code(refused: bool, ok: bool) -> ExitCode {
    if refused {
        ExitCode::from(crate::error::EXIT_BAD_INPUT)
    } else if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::error::EXIT_FAILED)
    }
}
