//! Converge: roles → desired state → one probe → plan → (unless a dry run) one apply.
//!
//! Per host: one SSH connection, one exec for the probe, and for a host with changes one
//! more exec that carries the archive of changed files on stdin and installs them (plus
//! one to read the current text of changed files, for diffs). A converged host costs one
//! round trip after the handshake.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::{SessionOptions, target};
use crate::artifacts::cache::Cache;
use crate::artifacts::catalog::Arch;
use crate::engine::apply::{self, PackageManager, ScriptInputs};
use crate::engine::context::{CacheSource, Computed, context};
use crate::engine::desired::{self, ArtifactSource, Desired};
use crate::engine::library::Library;
use crate::engine::plan::{self, HostPlan};
use crate::engine::probe;
use crate::engine::render::Renderer;
use crate::engine::role::{self, Role};
use crate::facts::{self, Facts};
use crate::inventory::{Host, Inventory};
use crate::pki::{HostFile, PkiState};
use crate::ssh::{self, Connection};
use crate::ui::HostProgress;

/// What to converge and how.
#[derive(Debug, Clone, Default)]
pub struct ConvergeOptions {
    /// Only these roles (default: every role the host's inventory roles imply).
    pub roles: Vec<String>,
    /// Only these hosts (default: all).
    pub hosts: Vec<String>,
    /// Plan only: read the hosts, change nothing.
    pub dry_run: bool,
    /// Hash every managed file instead of trusting the installed-files record.
    pub verify: bool,
}

#[derive(Debug, Serialize)]
pub struct HostOutcome {
    pub host: String,
    pub roles: Vec<String>,
    /// `None` when the host failed before a plan existed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<HostPlan>,
    /// The changes were carried out (false on a dry run or when there were none).
    pub applied: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// SSH round trips (execs and uploads) spent on this host after the handshake.
    pub round_trips: u64,
    pub seconds: f64,
}

impl HostOutcome {
    pub fn changes(&self) -> usize {
        self.plan.as_ref().map_or(0, |p| p.changes.len())
    }
}

#[derive(Debug, Serialize)]
pub struct ConvergeReport {
    pub dry_run: bool,
    pub hosts: Vec<HostOutcome>,
    pub seconds: f64,
}

impl ConvergeReport {
    pub fn failed(&self) -> usize {
        self.hosts.iter().filter(|h| h.error.is_some()).count()
    }

    pub fn changes(&self) -> usize {
        self.hosts.iter().map(HostOutcome::changes).sum()
    }

    pub fn changed_hosts(&self) -> usize {
        self.hosts
            .iter()
            .filter(|h| h.error.is_none() && h.changes() > 0)
            .count()
    }
}

/// Archives already packed, by the sorted sha256s of their files.
pub type Archives = tokio::sync::Mutex<BTreeMap<Vec<String>, Arc<Vec<u8>>>>;

/// The virtual role that stands for each host's PKI files (src/pki/hosts.rs).
pub const PKI_ROLE: &str = "pki";

/// Everything the per-host work shares, prepared once before the first connection.
pub struct Prepared {
    pub renderer: Renderer,
    pub roles: BTreeMap<String, Role>,
    pub computed: Computed,
    pub cache: Cache,
    /// The operator's PKI, when it exists: its files are the `pki` role.
    pub pki: Option<PkiState>,
}

impl Prepared {
    /// True when `pki` is selected by `only` (empty: everything) and there is a PKI.
    pub fn wants_pki(&self, only: &[String]) -> bool {
        self.pki.is_some() && (only.is_empty() || only.iter().any(|r| r == PKI_ROLE))
    }
}

/// The roles `host` carries: those whose `hosts` name one of its inventory roles and
/// whose `when` holds, narrowed to `only` when given.
pub fn roles_for<'a>(
    inventory: &Inventory,
    host: &Host,
    prepared: &'a Prepared,
    only: &[String],
) -> Result<Vec<&'a Role>, String> {
    let renderer = &prepared.renderer;
    let ctx = context(inventory, host, None, &prepared.computed);
    let mut out = Vec::new();
    for r in prepared.roles.values() {
        if !(only.is_empty() || only.contains(&r.name))
            || !r.spec.hosts.iter().any(|ir| host.has_role(*ir))
        {
            continue;
        }
        if let Some(expr) = &r.spec.when {
            let origin = format!("{}:{} (when)", r.file.display(), r.tree.locate(&["when"]));
            if !renderer
                .condition(&origin, expr, &ctx)
                .map_err(|e| e.to_string())?
            {
                continue;
            }
        }
        out.push(r);
    }
    Ok(ordered(out))
}

/// Validates the options against the inventory and loads every role: all before any
/// connection, so a typo costs nothing.
pub fn prepare(
    inventory: &Inventory,
    opts: &ConvergeOptions,
    cache: Cache,
) -> miette::Result<Prepared> {
    let library = Library::for_inventory(inventory.dir());
    let available = library.role_names();
    for name in &opts.roles {
        if !available.contains(name) && name != PKI_ROLE {
            return Err(crate::error::BadInput::new(
                format!("there is no role `{name}`"),
                format!("roles: {PKI_ROLE}, {}", available.join(", ")),
            )
            .into());
        }
    }
    let store = crate::pki::Store::for_inventory(inventory);
    let pki = if store.exists() {
        let state = store.load()?;
        (!state.cas.is_empty()).then_some(state)
    } else {
        None
    };
    if pki.is_none() && opts.roles.iter().any(|r| r == PKI_ROLE) {
        return Err(crate::error::BadInput::new(
            format!(
                "the role `{PKI_ROLE}` installs the cluster's certificates, but there is no PKI in {}",
                store.root().display()
            ),
            "run `capstan certs generate` (or `capstan init`, which makes it) first",
        )
        .into());
    }
    for name in &opts.hosts {
        if inventory.host(name).is_none() {
            return Err(crate::error::BadInput::new(
                format!("there is no host `{name}` in the inventory"),
                format!(
                    "hosts: {}",
                    inventory
                        .hosts
                        .iter()
                        .map(|h| h.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
            .into());
        }
    }
    let mut roles = BTreeMap::new();
    for name in &available {
        roles.insert(name.clone(), role::load(&library, name)?);
    }
    check_mirror(inventory, &roles, &opts.roles)?;
    let computed = Computed::new(inventory).map_err(miette::Report::new)?;
    Ok(Prepared {
        renderer: Renderer::new(&library),
        roles,
        computed,
        cache,
        pki,
    })
}

/// Every release the run would install must be on a `file://` mirror: one error, before any
/// connection, naming each missing component and version, where the version came from
/// (the inventory's `versions:` or the catalog's default for the minor), what the mirror
/// has, and the key to set.
fn check_mirror(
    inventory: &Inventory,
    roles: &BTreeMap<String, Role>,
    only: &[String],
) -> Result<(), crate::error::BadInput> {
    use crate::artifacts::catalog::{Component, missing_on_mirror};
    let mut wanted: Vec<(Component, String)> = Vec::new();
    for r in roles.values() {
        let used = (only.is_empty() || only.contains(&r.name))
            && inventory
                .hosts
                .iter()
                .any(|h| r.spec.hosts.iter().any(|ir| h.has_role(*ir)));
        if !used {
            continue;
        }
        for res in &r.spec.resources {
            if let crate::engine::role::ResourceSpec::Binary { artifact, .. } = res
                && let Some(c) = Component::parse(artifact)
                && let Some(v) = inventory.cluster.versions.get(c.name())
                && !wanted.iter().any(|(w, _)| *w == c)
            {
                wanted.push((c, v.clone()));
            }
        }
    }
    let missing = missing_on_mirror(&inventory.cluster.artifacts.mirror, &wanted);
    if missing.is_empty() {
        return Ok(());
    }
    let cluster = &inventory.cluster;
    let mut lines = Vec::new();
    let mut keys = Vec::new();
    for (c, v, held) in &missing {
        let source = match c {
            Component::Kubelet | Component::Kubectl => "cluster.kubernetes_version".to_string(),
            _ if cluster.versions_given.contains_key(c.name()) => {
                format!("cluster.versions.{}", c.key())
            }
            _ => format!(
                "the catalog's default for v{}.{}",
                cluster.kubernetes_version.major, cluster.kubernetes_version.minor
            ),
        };
        let has = if held.is_empty() {
            "none".to_string()
        } else {
            held.join(", ")
        };
        lines.push(format!("{c} {v} ({source}; the mirror has: {has})"));
        keys.push(match c {
            Component::Kubelet | Component::Kubectl => "cluster.kubernetes_version".to_string(),
            _ => format!("cluster.versions.{}", c.key()),
        });
    }
    keys.dedup();
    Err(crate::error::BadInput::new(
        format!(
            "the mirror {} lacks what this run installs: {}",
            cluster.artifacts.mirror,
            lines.join("; ")
        ),
        format!(
            "set {} to a version the mirror has, or add the releases to the mirror in upstream's layout (release/vX.Y.Z/bin/linux/ARCH/, github.com/ORG/REPO/releases/download/vX.Y.Z/)",
            keys.join(", ")
        ),
    ))
}

/// Orders roles so that each comes after those it builds on (a fixed list; unknown roles
/// after, by name).
/// Roles in the order they build on each other (`pki`, the virtual role, comes first).
pub const ORDER: &[&str] = &[
    "common",
    "containerd",
    "etcd",
    "lb-haproxy",
    "lb-nginx",
    "local-proxy",
    "kubelet",
    "control-plane",
    "addons",
];

fn ordered(roles: Vec<&Role>) -> Vec<&Role> {
    let mut roles = roles;
    roles.sort_by_key(|r| {
        (
            ORDER
                .iter()
                .position(|n| *n == r.name)
                .unwrap_or(ORDER.len()),
            r.name.clone(),
        )
    });
    roles
}

/// Converges the selected hosts: probe, plan and (unless `dry_run`) apply, in parallel.
pub async fn run(
    inventory: &Inventory,
    session: &SessionOptions,
    cache: Cache,
    opts: &ConvergeOptions,
) -> miette::Result<ConvergeReport> {
    run_prepared(inventory, session, prepare(inventory, opts, cache)?, opts).await
}

/// [`run`] with the shared work already [`prepare`]d (and so the selection validated), e.g.
/// before taking the cluster lock.
pub async fn run_prepared(
    inventory: &Inventory,
    session: &SessionOptions,
    prepared: Prepared,
    opts: &ConvergeOptions,
) -> miette::Result<ConvergeReport> {
    let started = Instant::now();
    let prepared = Arc::new(prepared);
    let hosts: Vec<&Host> = inventory
        .hosts
        .iter()
        .filter(|h| opts.hosts.is_empty() || opts.hosts.contains(&h.name))
        .collect();
    let targets: Vec<ssh::Target> = hosts.iter().map(|h| target(h)).collect();
    let progress = HostProgress::new(
        if opts.dry_run {
            "planning"
        } else {
            "converging"
        },
        hosts.iter().map(|h| &h.name),
    );
    // Hosts that need the same files get the same archive, built once.
    let archives: Arc<Archives> = Arc::default();

    // Each host is worked on as soon as its own connection is up.
    let outcomes = ssh::for_each_host(&targets, &session.ssh, session.forks, |i, conn| {
        let host = hosts[i];
        let prepared = Arc::clone(&prepared);
        let archives = Arc::clone(&archives);
        let progress = &progress;
        async move {
            let t0 = Instant::now();
            let roles = roles_for(inventory, host, &prepared, &opts.roles);
            let mut outcome = HostOutcome {
                host: host.name.clone(),
                roles: roles
                    .as_ref()
                    .map(|rs| rs.iter().map(|r| r.name.clone()).collect())
                    .unwrap_or_default(),
                plan: None,
                applied: false,
                error: None,
                round_trips: 0,
                seconds: 0.0,
            };
            match (conn, roles) {
                (_, Err(e)) => outcome.error = Some(e),
                (Err(e), _) => outcome.error = Some(e.to_string()),
                (Ok(conn), Ok(roles)) => {
                    // The lock host's connection also carried the lock's exec: count
                    // this host's own work only.
                    let before = conn.round_trips();
                    let run = RunShared {
                        inventory,
                        prepared: &prepared,
                        opts,
                        archives: &archives,
                        progress,
                    };
                    if let Err(e) = converge_host(&run, host, &roles, &conn, &mut outcome).await {
                        outcome.error = Some(e);
                    }
                    outcome.round_trips = conn.round_trips() - before;
                    conn.close().await;
                }
            }
            outcome.seconds = t0.elapsed().as_secs_f64();
            progress.host_done(&host.name);
            outcome
        }
    })
    .await;
    progress.finish();
    Ok(ConvergeReport {
        dry_run: opts.dry_run,
        hosts: outcomes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// What every host of one converge run shares.
struct RunShared<'a> {
    inventory: &'a Inventory,
    prepared: &'a Prepared,
    opts: &'a ConvergeOptions,
    archives: &'a Archives,
    progress: &'a HostProgress,
}

async fn converge_host(
    run: &RunShared<'_>,
    host: &Host,
    roles: &[&Role],
    conn: &Connection,
    outcome: &mut HostOutcome,
) -> Result<(), String> {
    let RunShared {
        inventory,
        prepared,
        opts,
        archives,
        progress,
    } = *run;
    let with_pki = prepared.wants_pki(&opts.roles);
    if with_pki {
        outcome.roles.insert(0, PKI_ROLE.to_string());
    }
    let what = Selection {
        roles,
        with_pki,
        overrides: None,
    };
    // The shape of the desired state (paths, units, keys) decides what to probe; it
    // cannot depend on facts, which the probe is about to gather.
    let shape = desired_for(inventory, host, &what, prepared, None, desired::Mode::Shape)?;
    progress.step(&host.name, "probing");
    let probed = probe_host(conn, &shape, opts.verify, ProbeKind::Light, !opts.dry_run).await?;
    let desired = desired_for(
        inventory,
        host,
        &what,
        prepared,
        Some(&probed.facts),
        desired::Mode::Full,
    )?;
    progress.step(
        &host.name,
        if opts.dry_run { "planning" } else { "applying" },
    );
    let (host_plan, applied) = plan_apply(conn, &desired, &probed, opts.dry_run, archives).await?;
    outcome.plan = Some(host_plan);
    outcome.applied = applied;
    Ok(())
}

/// What to build the desired state of a host from.
pub struct Selection<'a> {
    pub roles: &'a [&'a Role],
    /// The host's PKI files first (the virtual role `pki`).
    pub with_pki: bool,
    /// Per-host values that replace the roles' `vars` (a joining etcd member's state).
    pub overrides: Option<&'a BTreeMap<String, String>>,
}

/// The desired state of `host`: its PKI files (when selected), then each role's resources.
/// Without facts only the shape is built ([`desired::Mode::Shape`]).
pub fn desired_for(
    inventory: &Inventory,
    host: &Host,
    what: &Selection<'_>,
    prepared: &Prepared,
    facts: Option<&Facts>,
    mode: desired::Mode,
) -> Result<Vec<Desired>, String> {
    let mut out = Vec::new();
    if what.with_pki {
        out.extend(pki_desired(inventory, host, prepared.pki.as_ref(), mode)?);
    }
    let mut ctx = context(inventory, host, facts, &prepared.computed);
    // Per static pod, the fingerprint of the PKI files it uses: its manifest carries it,
    // so the kubelet restarts exactly the pods whose certificates were renewed.
    if mode == desired::Mode::Full
        && let Some(state) = &prepared.pki
    {
        let files = crate::pki::host_files(inventory, host, state).map_err(|e| e.to_string())?;
        ctx = minijinja::context! { pki_fingerprints => pki_fingerprints(&files), ..ctx };
    }
    if let Some(o) = what.overrides {
        ctx = minijinja::context! { var_overrides => o.clone(), ..ctx };
    }
    let built = match (mode, facts) {
        (desired::Mode::Full, Some(f)) => {
            let arch = Arch::parse(f.arch.as_str())
                .ok_or_else(|| format!("no artifacts for architecture {}", f.machine))?;
            tokio::task::block_in_place(|| {
                let source = CacheSource::new(&prepared.cache, inventory, arch);
                desired::build(what.roles, &prepared.renderer, &ctx, &source, mode)
            })
        }
        _ => desired::build(
            what.roles,
            &prepared.renderer,
            &ctx,
            &NoArtifacts,
            desired::Mode::Shape,
        ),
    };
    out.extend(built.map_err(|e| e.to_string())?);
    Ok(out)
}

/// The host's PKI files and their folders as desired state (kubeadm's paths and modes).
pub fn pki_desired(
    inventory: &Inventory,
    host: &Host,
    state: Option<&PkiState>,
    mode: desired::Mode,
) -> Result<Vec<Desired>, String> {
    // The shape needs only the paths, which the inventory decides (so a run can probe
    // before its PKI exists).
    let files: Vec<HostFile> = if mode == desired::Mode::Full {
        let state = state.ok_or("there is no PKI to install (run `capstan certs generate`)")?;
        crate::pki::host_files(inventory, host, state).map_err(|e| e.to_string())?
    } else {
        crate::pki::hosts::layout(inventory, host)
            .into_iter()
            .map(|e| HostFile {
                path: e.path,
                bytes: Vec::new(),
                mode: e.mode,
                owner: "root".into(),
                group: "root".into(),
                secret: e.secret,
            })
            .collect()
    };
    let mut out: Vec<Desired> = crate::pki::hosts::host_dirs(&files)
        .into_iter()
        .map(|(path, mode)| Desired::Directory {
            path,
            owner: "root".into(),
            group: "root".into(),
            mode,
        })
        .collect();
    out.extend(files.iter().map(|f| Desired::File(f.to_desired())));
    Ok(out)
}

/// How much the probe gathers besides what the plan needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    /// Only what the plan needs (apply, plan).
    Light,
    /// Also what preflight needs: addresses, listening sockets, versions (init, join).
    Full,
}

/// A host's facts and the plan's view of them, from one probe.
#[derive(Debug, Clone)]
pub struct Probed {
    pub facts: Facts,
    pub state: plan::HostState,
}

/// Probes `conn` once for everything `shape` needs (one exec).
pub async fn probe_host(
    conn: &Connection,
    shape: &[Desired],
    verify: bool,
    kind: ProbeKind,
    clean_leftovers: bool,
) -> Result<Probed, String> {
    let mut request = probe::request(shape, verify);
    if kind == ProbeKind::Full {
        request.light = false;
        for unit in ["containerd.service", "kubelet.service", "etcd.service"] {
            if !request.units.iter().any(|u| u == unit) {
                request.units.push(unit.to_string());
            }
        }
    }
    let mut script =
        facts::probe_script(&request).map_err(|e| format!("cannot build the probe: {e}"))?;
    if clean_leftovers {
        // A run that changes hosts (under the cluster lock) first removes what an
        // interrupted run left: no extra round trip.
        script = format!("{}{script}", apply::leftovers_cleanup(shape));
    }
    let out = conn.exec(&script).await.map_err(|e| e.to_string())?;
    if out.exit_status != 0 {
        return Err(format!(
            "the probe failed (exit {}): {}",
            out.exit_status,
            tail(&out.stderr)
        ));
    }
    let facts: Facts = facts::parse(&String::from_utf8_lossy(&out.stdout))
        .map_err(|e| format!("probe output: {e}"))?;
    let state = probe::host_state(&facts);
    Ok(Probed { facts, state })
}

/// Plans `desired` against what the probe found and, unless `dry_run`, carries the plan
/// out (one exec with the archive of changed files on stdin; one more to read the current
/// text of changed files, for diffs). Returns the plan and whether it was applied.
pub async fn plan_apply(
    conn: &Connection,
    desired: &[Desired],
    probed: &Probed,
    dry_run: bool,
    archives: &Archives,
) -> Result<(HostPlan, bool), String> {
    let state = &probed.state;
    // Current text of files that differ, for the diff (hosts with such changes only).
    let wanted = plan::wanted_contents(desired, state);
    let old = if wanted.is_empty() {
        BTreeMap::new()
    } else {
        read_files(conn, &wanted).await?
    };
    let host_plan = plan::plan(desired, state, &old);
    if dry_run || host_plan.is_empty() {
        return Ok((host_plan, false));
    }
    // Cancelled (Ctrl-C): a host whose apply has not started does not start it.
    crate::interrupt::check()?;

    let files = apply::uploads(desired, &host_plan);
    let key: Vec<String> = files.keys().map(|k| (*k).to_string()).collect();
    let archive = if files.is_empty() {
        Arc::new(Vec::new())
    } else {
        let mut cache = archives.lock().await;
        if let Some(a) = cache.get(&key) {
            Arc::clone(a)
        } else {
            let a = Arc::new(
                tokio::task::block_in_place(|| apply::archive(&files))
                    .map_err(|e| format!("cannot pack the files to upload: {e}"))?,
            );
            cache.insert(key, Arc::clone(&a));
            a
        }
    };
    let already_right = already_right(desired, &probed.facts, &host_plan);
    let inputs = ScriptInputs {
        run_id: &run_id(),
        package_manager: PackageManager::detect(&probed.facts.os.id, &probed.facts.os.id_like),
        already_right,
    };
    let script = apply::script(desired, &host_plan, &inputs)?;
    let out = conn
        .exec_with_stdin(&script, &archive)
        .await
        .map_err(|e| e.to_string())?;
    if out.exit_status != 0 {
        let stdout = String::from_utf8_lossy(&out.stdout);
        let step = apply::last_step(&stdout).unwrap_or("start");
        return Err(format!(
            "apply failed at step `{step}` (exit {}): {}",
            out.exit_status,
            tail(&out.stderr)
        ));
    }
    Ok((host_plan, true))
}

/// Managed files whose content is already right, with their stat, to record them.
fn already_right<'a>(
    desired: &'a [Desired],
    facts: &Facts,
    plan: &HostPlan,
) -> Vec<(&'a desired::DesiredFile, u64, i64, u64)> {
    let uploading: BTreeSet<usize> = plan.uploads().collect();
    desired
        .iter()
        .enumerate()
        .filter(|(i, _)| !uploading.contains(i))
        .filter_map(|(_, d)| match d {
            Desired::File(f) => {
                let p = facts.paths.get(&f.path)?.as_ref()?;
                (p.sha256.as_deref() == Some(f.sha256.as_str()) && p.kind.starts_with("regular"))
                    .then_some((f, p.size, p.mtime, p.inode))
            }
            _ => None,
        })
        .collect()
}

/// Reads text files in one exec (base64, one line each) for diffs.
async fn read_files(
    conn: &Connection,
    paths: &[String],
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    use base64::Engine as _;
    let mut script = String::from(
        "for f do printf '%s\\n' \"$f\"; base64 -w0 -- \"$f\" 2>/dev/null; echo; done",
    );
    script = format!(
        "sh -c {} capstan-read {}",
        ssh::quote(&script),
        paths
            .iter()
            .map(|p| ssh::quote(p))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out = conn.exec(&script).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let mut files = BTreeMap::new();
    while let (Some(name), Some(data)) = (lines.next(), lines.next()) {
        if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(data.trim()) {
            files.insert(name.to_string(), bytes);
        }
    }
    Ok(files)
}

pub fn tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(5);
    let t = lines[start..].join(" | ");
    if t.is_empty() {
        "(no error output)".to_string()
    } else {
        t
    }
}

fn run_id() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    format!("{now}-{}", std::process::id())
}

/// For the shape pass, where binaries' contents do not matter yet.
struct NoArtifacts;

impl ArtifactSource for NoArtifacts {
    fn fetch(
        &self,
        _artifact: &str,
        _file: &str,
    ) -> Result<(std::path::PathBuf, String, u64), String> {
        Ok((std::path::PathBuf::new(), String::new(), 0))
    }
}

/// Prints a plan (or the result of a run) per host, then the summary line.
pub fn print(report: &ConvergeReport) -> miette::Result<()> {
    use crate::ui;
    if ui::ui().json {
        return ui::emit_json(report);
    }
    ui::emit(&render(report, ui::ui().quiet, ui::ui().verbose > 0));
    Ok(())
}

/// A plan or a run's result as text: hosts that print the same said once, then the counts.
fn render(report: &ConvergeReport, quiet: bool, verbose: bool) -> String {
    use crate::ui::{self, Color};
    let diffs = |h: &HostOutcome| !h.applied || verbose;
    // What each host would print after its name; hosts that print the same are one line.
    let lines = report.hosts.iter().filter_map(|h| {
        if let Some(e) = &h.error {
            return Some((
                h.host.as_str(),
                format!("{}\n  {e}\n", ui::paint("failed", Color::Red)),
            ));
        }
        let p = h.plan.as_ref()?;
        if p.is_empty() {
            return (!quiet).then(|| {
                (
                    h.host.as_str(),
                    format!("{}\n", ui::paint("no changes", Color::Dim)),
                )
            });
        }
        let verb = if h.applied { "changed" } else { "would change" };
        let mut line = format!("{verb} ({})\n", h.roles.join(", "));
        if !quiet {
            line.push_str(&render_changes(p, diffs(h), "  "));
        }
        Some((h.host.as_str(), line))
    });
    let mut out = String::new();
    for (hosts, line) in ui::group_hosts(lines) {
        out.push_str(&format!(
            "{} {line}",
            ui::paint(&hosts.join(", "), Color::Bold)
        ));
    }
    let n = report.hosts.len();
    let failed = report.failed();
    if report.dry_run {
        out.push_str(&format!(
            "{}, {}",
            crate::ui::count(n, "host"),
            crate::ui::count(report.changes(), "change")
        ));
        if failed > 0 {
            out.push_str(&format!(", {failed} failed"));
        }
        out.push('\n');
    } else {
        let changed = report.changed_hosts();
        out.push_str(&format!(
            "{}, {changed} changed, {} unchanged, {failed} failed ({:.2}s)\n",
            crate::ui::count(n, "host"),
            n - changed - failed,
            report.seconds
        ));
    }
    out
}

/// The lines of a plan: one per change, with its diff when `diffs` (never for secrets),
/// each line starting with `indent`.
pub fn render_changes(p: &HostPlan, diffs: bool, indent: &str) -> String {
    use crate::ui::{self, Color};
    let mut out = String::new();
    for c in &p.changes {
        let action = ui::paint(
            c.action.as_str(),
            match c.action {
                plan::Action::Create
                | plan::Action::Install
                | plan::Action::Load
                | plan::Action::Start
                | plan::Action::Enable => Color::Green,
                plan::Action::Restart | plan::Action::Stop => Color::Red,
                _ => Color::Yellow,
            },
        );
        out.push_str(&format!("{indent}{action} {} {}", c.kind, c.target));
        if !c.details.is_empty() {
            out.push_str(&format!(" ({})", c.details.join("; ")));
        }
        out.push('\n');
        if let Some(diff) = c.diff.as_ref().filter(|_| diffs) {
            for line in diff.lines() {
                let painted = match line.chars().next() {
                    Some('+') if !line.starts_with("+++") => ui::paint(line, Color::Green),
                    Some('-') if !line.starts_with("---") => ui::paint(line, Color::Red),
                    _ => line.to_string(),
                };
                out.push_str(&format!("{indent}  {painted}\n"));
            }
        }
    }
    out
}

/// The fingerprints (16 hex digits of a sha256) of the PKI files each control-plane static
/// pod reads, by component: what makes its manifest change when one of them is renewed.
pub fn pki_fingerprints(files: &[HostFile]) -> BTreeMap<&'static str, String> {
    const PKI: &str = "/etc/kubernetes/pki/";
    let uses = |component: &str, path: &str| -> bool {
        let rel = path.strip_prefix(PKI);
        match component {
            // Everything under pki/ but the etcd members' own pairs and the etcd CA key.
            "apiserver" => rel.is_some_and(|r| !r.starts_with("etcd/") || r == "etcd/ca.crt"),
            "controller_manager" => {
                path == "/etc/kubernetes/controller-manager.conf"
                    || matches!(
                        rel,
                        Some("ca.crt" | "ca.key" | "sa.key" | "front-proxy-ca.crt")
                    )
            }
            _ => path == "/etc/kubernetes/scheduler.conf",
        }
    };
    ["apiserver", "controller_manager", "scheduler"]
        .into_iter()
        .map(|component| {
            let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
            for f in files.iter().filter(|f| uses(component, &f.path)) {
                sha2::Digest::update(&mut hasher, f.path.as_bytes());
                sha2::Digest::update(&mut hasher, &f.bytes);
            }
            let hex = hex::encode(sha2::Digest::finalize(hasher));
            (component, hex[..16].to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, bytes: &str) -> HostFile {
        HostFile {
            path: path.into(),
            bytes: bytes.as_bytes().to_vec(),
            mode: 0o600,
            owner: "root".into(),
            group: "root".into(),
            secret: true,
        }
    }

    #[test]
    fn a_renewed_certificate_changes_the_fingerprint_of_its_users_only() {
        let base = vec![
            file("/etc/kubernetes/pki/apiserver.crt", "a1"),
            file("/etc/kubernetes/pki/ca.crt", "ca"),
            file("/etc/kubernetes/pki/etcd/server.crt", "s1"),
            file("/etc/kubernetes/pki/etcd/ca.crt", "eca"),
            file("/etc/kubernetes/scheduler.conf", "sc1"),
            file("/etc/kubernetes/controller-manager.conf", "cm1"),
            file("/var/lib/kubelet/pki/kubelet.crt", "k1"),
        ];
        let before = pki_fingerprints(&base);
        let with = |path: &str, bytes: &str| {
            let mut files = base.clone();
            for f in &mut files {
                if f.path == path {
                    f.bytes = bytes.as_bytes().to_vec();
                }
            }
            pki_fingerprints(&files)
        };
        let changed = |after: &BTreeMap<&str, String>| -> Vec<&str> {
            before
                .iter()
                .filter(|(k, v)| after.get(*k) != Some(*v))
                .map(|(k, _)| *k)
                .collect()
        };
        assert_eq!(
            changed(&with("/etc/kubernetes/pki/apiserver.crt", "a2")),
            ["apiserver"]
        );
        assert_eq!(
            changed(&with("/etc/kubernetes/pki/ca.crt", "ca2")),
            ["apiserver", "controller_manager"]
        );
        assert_eq!(
            changed(&with("/etc/kubernetes/scheduler.conf", "sc2")),
            ["scheduler"]
        );
        assert!(changed(&with("/etc/kubernetes/pki/etcd/server.crt", "s2")).is_empty());
        assert!(changed(&with("/var/lib/kubelet/pki/kubelet.crt", "k2")).is_empty());
        assert_eq!(
            changed(&with("/etc/kubernetes/pki/etcd/ca.crt", "e2")),
            ["apiserver"]
        );
    }

    /// A plan as a user reads it: hosts with nothing to do are one line, hosts with the
    /// same changes share theirs, a failed host has its own.
    #[test]
    fn a_plan_says_hosts_with_the_same_changes_once() {
        use crate::engine::plan::{Action, Change};
        let host = |name: &str, target: &str| HostOutcome {
            host: name.into(),
            roles: vec!["common".into(), "containerd".into()],
            plan: Some(HostPlan {
                changes: (!target.is_empty())
                    .then(|| Change {
                        kind: "file",
                        target: target.into(),
                        action: Action::Update,
                        details: Vec::new(),
                        diff: Some("-a\n+b\n".into()),
                        secret: false,
                        index: 0,
                    })
                    .into_iter()
                    .collect(),
                daemon_reload: false,
            }),
            applied: false,
            error: None,
            round_trips: 1,
            seconds: 0.1,
        };
        let mut lb1 = host("lb1", "");
        lb1.plan = None;
        lb1.error = Some("connect: refused".into());
        let report = ConvergeReport {
            dry_run: true,
            hosts: vec![
                host("cp1", ""),
                host("w1", "/etc/containerd/config.toml"),
                host("cp2", ""),
                host("w2", "/etc/containerd/config.toml"),
                host("w3", "/etc/sysctl.d/99-capstan.conf"),
                lb1,
            ],
            seconds: 1.5,
        };
        let text = [render(&report, false, false), render(&report, true, false)].join("---\n");
        insta::assert_snapshot!(text);
    }
}
