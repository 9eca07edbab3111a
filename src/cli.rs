//! The command line: global flags and one subcommand per verb.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "capstan",
    version,
    about = "Declarative, SSH-driven Kubernetes cluster provisioning",
    long_about = "capstan reads an inventory of hosts, connects to all of them over SSH in \
                  parallel and converges them into a Kubernetes cluster.\n\n\
                  Exit codes: 0 ok, 1 some host or step failed, 2 bad input, 3 changes pending \
                  (plan --detailed-exitcode), 4 the cluster is locked by another run, 130 \
                  interrupted by Ctrl-C (143 by SIGTERM).",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Inventory file, or a folder holding `cluster.yaml`
    #[arg(
        short = 'i',
        long = "inventory",
        env = "CAPSTAN_INVENTORY",
        global = true
    )]
    pub inventory: Option<PathBuf>,

    /// How many hosts to connect to and work on at once
    #[arg(long, default_value_t = 50, global = true, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub forks: u32,

    /// Output format
    #[arg(long, value_enum, default_value_t = OutputFormat::Text, global = true)]
    pub output: OutputFormat,

    /// More detail (repeat for more: -v, -vv, -vvv)
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Only errors and the final summary
    #[arg(short = 'q', long = "quiet", global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// No colours in the output
    #[arg(long, global = true, env = "NO_COLOR", value_parser = clap::builder::FalseyValueParser::new())]
    pub no_color: bool,

    /// Learn the host keys of hosts not yet known (trust on first use) into the
    /// inventory's own known_hosts; a changed key is always refused
    #[arg(long, global = true)]
    pub accept_new_host_keys: bool,

    /// Seconds to wait for a host's SSH connection and authentication
    #[arg(long, default_value_t = 10, global = true, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub connect_timeout: u64,

    /// Ask for the sudo password on the terminal (else CAPSTAN_BECOME_PASSWORD, else none)
    #[arg(long, global = true)]
    pub ask_become_pass: bool,

    /// Take over a stale cluster lock (one whose heartbeat stopped: its run was killed or
    /// lost its network); a live lock is never broken
    #[arg(long, global = true)]
    pub break_lock: bool,

    /// Where downloaded artifacts are cached (default ~/.cache/capstan)
    #[arg(long, global = true, env = "CAPSTAN_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the inventory, connect to every host, gather facts and run preflight checks
    Check(CheckArgs),
    /// Converge hosts to their roles (no cluster gates): the verb the workflows build on
    Apply(ApplyArgs),
    /// Show what apply would change, per host, with diffs; changes nothing
    Plan(PlanArgs),
    /// Build the cluster: every host of the inventory, phase by phase with health gates
    Init(InitArgs),
    /// Add the hosts of the inventory that are not in the cluster yet (etcd members first)
    Join(JoinArgs),
    /// Take nodes out of the cluster (drain, etcd member remove) and clean their hosts
    Reset(ResetArgs),
    /// etcd: snapshots and restore
    #[command(subcommand)]
    Etcd(EtcdCommand),
    /// Upgrade the cluster's Kubernetes version, one minor at a time (version-skew policy)
    #[command(subcommand)]
    Upgrade(UpgradeCommand),
    /// Container hosts on this machine, for trying capstan and for tests
    #[command(subcommand)]
    Lab(LabCommand),
    /// Certificates: the local PKI, its distribution to the hosts, expiry, renewal
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Print a kubeconfig for the API endpoint: the admin's, or one for `--user` with a fresh
    /// client certificate signed by the cluster CA (never stored)
    Kubeconfig(KubeconfigArgs),
    /// The container images a cluster of the inventory needs
    #[command(subcommand)]
    Images(ImagesCommand),
    /// capstan's version and the newest Kubernetes its catalog knows
    Version,
    /// The version catalog: the Kubernetes minors capstan knows, their dates and support
    /// today, paired images, node software and pinned sums, and what a new inventory gets
    /// (with `-i`, the inventory's catalog.yaml laid over the built-in one)
    Versions,
    /// A shell completion script on stdout (`source <(capstan completion bash)`)
    Completion(CompletionArgs),
    /// The man page (roff) on stdout, from the same definitions as --help
    /// (`capstan man > capstan.1`)
    Man,
}

#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// Every image reference the inventory's Kubernetes version (or `--to`) needs: control
    /// plane, kube-proxy, CoreDNS, pause and the CNI, as `kubeadm config images list`
    List(ImagesListArgs),
}

#[derive(Debug, Args)]
pub struct ImagesListArgs {
    /// Another Kubernetes version, vX.Y.Z (an upgrade's target)
    #[arg(long)]
    pub to: Option<String>,
}

#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct KubeconfigArgs {
    /// Issue a client certificate for this user name (its CN) instead of printing the admin's
    #[arg(long)]
    pub user: Option<String>,
    /// A group of that user (its O); repeat or separate with commas
    #[arg(long = "group", value_delimiter = ',', requires = "user")]
    pub groups: Vec<String>,
    /// How long that certificate is valid: 30m, 24h, 7d, 1d12h … (5m to 365d, never past the CA)
    #[arg(long, default_value = "24h", requires = "user")]
    pub validity: String,
}

#[derive(Debug, Clone, Args)]
pub struct Selection {
    /// Only these roles (default: every role the hosts' inventory roles imply)
    #[arg(long, value_delimiter = ',')]
    pub roles: Vec<String>,
    /// Only these hosts (default: all)
    #[arg(long, value_delimiter = ',')]
    pub hosts: Vec<String>,
    /// Hash every managed file instead of trusting the record of what capstan installed
    #[arg(long)]
    pub verify: bool,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub selection: Selection,
    /// Show the plan and change nothing (the same as `capstan plan`)
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Show every phase's changes, with diffs, and the gates it would wait for; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Hash every managed file instead of trusting the record of what capstan installed
    #[arg(long)]
    pub verify: bool,
    /// Preflight checks to report as warnings instead of errors (names as printed, or `all`)
    #[arg(long, value_delimiter = ',')]
    pub ignore_preflight_errors: Vec<String>,
    /// Seconds the addons gate waits for kube-proxy, flannel and CoreDNS to roll out and the
    /// cluster DNS to answer (image pulls on a slow link take longer)
    #[arg(long, default_value_t = crate::workflows::addons_gate::ADDONS_TIMEOUT_SECS)]
    pub addons_timeout: u64,
}

#[derive(Debug, Args)]
pub struct JoinArgs {
    /// Only these new hosts (default: every host not in the cluster yet)
    #[arg(long, value_delimiter = ',')]
    pub hosts: Vec<String>,
    #[command(flatten)]
    pub init: InitArgs,
}

#[derive(Debug, Args)]
pub struct ResetArgs {
    /// The hosts to take out (required: reset never guesses)
    #[arg(long, value_delimiter = ',', required = true)]
    pub hosts: Vec<String>,
    /// Say what would be done; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Go on even when etcd would lose quorum or no control plane would remain
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Subcommand)]
pub enum UpgradeCommand {
    /// The versions every component runs now, the allowed targets, and what an upgrade
    /// would do, in order; changes nothing (exit 2 when `--to` is refused)
    Plan(UpgradePlanArgs),
    /// Upgrade the cluster: snapshot, control planes one by one, workers in batches
    Apply(UpgradeApplyArgs),
}

#[derive(Debug, Args)]
pub struct UpgradePlanArgs {
    /// The version to check and plan for, vX.Y.Z (default: the newest allowed target)
    #[arg(long)]
    pub to: Option<String>,
    /// Workers upgraded at once: a count, or a percentage of the workers (25%)
    #[arg(long, default_value = "1")]
    pub max_unavailable: String,
}

#[derive(Debug, Args)]
pub struct UpgradeApplyArgs {
    /// The target version (vX.Y.Z): the current minor's or the next one's
    #[arg(long)]
    pub to: String,
    /// Workers upgraded at once: a number or a percentage of the workers (at least 1)
    #[arg(long, default_value = "1")]
    pub max_unavailable: String,
    /// How long a drain may wait for evictions (PodDisruptionBudgets), in seconds
    #[arg(long, default_value_t = 300)]
    pub drain_timeout: u64,
    /// How long each health gate of the rollout waits, in seconds (an upgraded API server
    /// ready at the target, the API through the endpoint, Nodes Ready) before it stops
    #[arg(long, default_value_t = crate::workflows::upgrade::GATE_TIMEOUT_SECS)]
    pub gate_timeout: u64,
    /// Nodes that may be NotReady when the upgrade starts
    #[arg(long, value_delimiter = ',')]
    pub allow_not_ready: Vec<String>,
    /// Print the whole sequence with the changes per host; touch nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation
    #[arg(long)]
    pub yes: bool,
}

#[derive(Debug, Subcommand)]
pub enum EtcdCommand {
    /// Snapshot etcd on a healthy member, verify it, copy it to .capstan/backups/ (with a
    /// description beside it: NAME.db.json); or list the snapshots (--list), or copy the
    /// newest scheduled one from the members (--fetch)
    Snapshot(EtcdSnapshotArgs),
    /// Put the whole etcd cluster back to a snapshot (quorum lost for good, data to undo):
    /// API servers and etcd stopped, each member's data moved aside (kept), the snapshot
    /// restored on every member as a new cluster, etcd and the API servers started again
    Restore(EtcdRestoreArgs),
}

#[derive(Debug, Args)]
pub struct EtcdSnapshotArgs {
    /// List the snapshots in .capstan/backups/ and those the members' timers took
    /// (cluster.etcd.snapshots.dir): time, revision, size, sha256, verified or not
    #[arg(long, conflicts_with = "fetch")]
    pub list: bool,
    /// Copy the newest verified scheduled snapshot from the members into .capstan/backups/
    /// (with its description, so `etcd restore` takes it), checked by sha256
    #[arg(long)]
    pub fetch: bool,
}

#[derive(Debug, Args)]
pub struct EtcdRestoreArgs {
    /// The snapshot file (`capstan etcd snapshot` writes them to .capstan/backups/)
    #[arg(long)]
    pub snapshot: PathBuf,
    /// Check the snapshot and show the plan; change nothing on any host or locally
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation (required when stdin is not a terminal)
    #[arg(long)]
    pub yes: bool,
    /// Restore a snapshot that cannot be shown to be of this cluster (no description beside
    /// it, another cluster name or etcd CA): a cluster rebuilt with a new PKI, say
    #[arg(long)]
    pub allow_foreign_snapshot: bool,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub selection: Selection,
    /// Exit 0 when nothing would change, 3 when changes are pending, 1 on error
    #[arg(long)]
    pub detailed_exitcode: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Preflight checks to report as warnings instead of errors (names as printed, or `all`)
    #[arg(long, value_delimiter = ',')]
    pub ignore_preflight_errors: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Create (or complete) a lab: containers with systemd and sshd on an internal network
    Up(LabUpArgs),
    /// Remove a lab's containers, volumes, network and inventory
    Down(LabDownArgs),
}

#[derive(Debug, Args)]
pub struct LabUpArgs {
    /// Lab name (prefix of every container, volume and network)
    #[arg(long, default_value = "capstan")]
    pub name: String,
    /// Control-plane hosts
    #[arg(long, default_value_t = 1)]
    pub control_planes: u32,
    /// Worker hosts
    #[arg(long, default_value_t = 0)]
    pub workers: u32,
    /// Dedicated etcd hosts (external etcd topology)
    #[arg(long, default_value_t = 0)]
    pub etcd: u32,
    /// Load-balancer hosts
    #[arg(long, default_value_t = 0)]
    pub load_balancers: u32,
    /// Image the hosts run (built by tests/lab/build-image.sh)
    #[arg(long, default_value = crate::lab::DEFAULT_IMAGE)]
    pub image: String,
    /// Bind-mount a folder of this machine into every host (SRC:DST, repeatable)
    #[arg(long = "mount")]
    pub mounts: Vec<String>,
    /// Where to write the inventory (default: lab/<name>/)
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A local artifact mirror (built by tests/lab/build-mirror.sh) for the inventory to use
    #[arg(long)]
    pub mirror: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct LabDownArgs {
    /// Lab name
    #[arg(long, default_value = "capstan")]
    pub name: String,
    /// Where the lab's inventory was written (default: lab/<name>/)
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create or complete the local PKI and kubeconfigs in .capstan/pki (touches no host)
    Generate(CertsGenerateArgs),
    /// Expiry of every certificate and kubeconfig on every host, read from the hosts
    CheckExpiration,
    /// Re-issue certificates in the local PKI: all, or by name (apiserver, admin.conf, etcd-server, …)
    Renew(CertsRenewArgs),
    /// Adopt the cluster's CAs when the local PKI lacks them, complete the PKI, and install
    /// each host's certificates, keys and kubeconfigs
    Distribute(CertsDistributeArgs),
}

#[derive(Debug, Args)]
pub struct CertsGenerateArgs {
    /// Show what would be created or re-issued and why; write nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct CertsRenewArgs {
    /// Certificates to renew (default: all)
    pub names: Vec<String>,
    /// Show what would be renewed; write nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Renew in the local PKI only: no host is contacted (install later with `init`,
    /// `apply --roles pki` or `certs distribute`)
    #[arg(long)]
    pub local: bool,
}

#[derive(Debug, Args)]
pub struct CertsDistributeArgs {
    /// Only these hosts (default: all)
    #[arg(long, value_delimiter = ',')]
    pub hosts: Vec<String>,
    /// Show what would change on each host; write nothing, locally or remotely
    #[arg(long)]
    pub dry_run: bool,
}
