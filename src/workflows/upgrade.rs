//! `capstan upgrade apply --to V`: a rolling upgrade, one minor at a time.
//!
//! preflight (every host reachable, the versions read live and the target checked against
//! the version-skew policy, etcd healthy, every API server ready, every node Ready) → etcd
//! snapshot in `.capstan/backups/` → etcd, when the target needs a newer one than the
//! members run: one member at a time (its etcd role alone, then gate on `endpoint health
//! --cluster` and on the member reporting the new version), through every etcd minor between
//! (see [`policy::etcd_path`]) → control planes one at a time (cordon, drain, the API
//! server's manifest first, gate on its `/readyz` and `/version`, then controller-manager
//! and scheduler, then kubelet and kubectl, gate on the Node, uncordon) → workers in batches
//! of `--max-unavailable` (cordon, drain through the eviction API, kubelet, Ready, uncordon)
//! → addons at the target → the inventory's `kubernetes_version` set to the target.
//!
//! Every step is the engine's converge against the inventory at the target version, so a
//! host already at the target has nothing to do and is skipped: re-running after a failure
//! resumes where it stopped, and re-running after success changes nothing. Each host step
//! (start, skipped, done, failed with why) is appended to `.capstan/journal.log`.
//!
//! Progress: a bar per phase (its hosts) and, above it, a line per finished host step;
//! the summary gives the time of every phase and every host.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::cluster::{self, ClusterRun, RunReport, Stop, wait_for};
use super::converge::{self, ConvergeOptions};
use super::{SessionOptions, gates, init, snapshot, upgrade_plan};
use crate::artifacts::cache::Cache;
use crate::inventory::{Inventory, Role, Version};
use crate::ui::{self, Color, PhaseProgress, Table};
use crate::upgrade::{Refusal, available, live, policy};
use crate::{pki, ssh};

#[derive(Debug, Clone)]
pub struct UpgradeOptions {
    pub to: Version,
    /// Workers upgraded at once.
    pub max_unavailable: usize,
    pub drain_timeout: Duration,
    /// How long each health gate of the rollout waits (an API server ready at the target,
    /// the API through the endpoint, Nodes Ready) before the rollout stops.
    pub gate_timeout: Duration,
    pub dry_run: bool,
    /// Nodes that may be NotReady at the start.
    pub allow_not_ready: Vec<String>,
}

/// The default of `--gate-timeout`, in seconds.
pub const GATE_TIMEOUT_SECS: u64 = 120;

/// What `upgrade apply` did: the run, the timings, and a refused target.
#[derive(Debug, Serialize)]
pub struct UpgradeReport {
    /// The target version.
    pub to: Version,
    #[serde(flatten)]
    pub run: RunReport,
    pub timings: Timings,
    /// Set when the target was refused by the version-skew policy (nothing was changed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<Refusal>,
    /// The inventory file whose `kubernetes_version` was set to the target (absent when it
    /// said the target already).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inventory_updated: Option<std::path::PathBuf>,
}

impl UpgradeReport {
    pub fn ok(&self) -> bool {
        self.run.ok() && self.refused.is_none()
    }
}

/// How long each phase and each host took.
#[derive(Debug, Default, Serialize)]
pub struct Timings {
    pub phases: Vec<Timed>,
    pub hosts: Vec<Timed>,
}

#[derive(Debug, Serialize)]
pub struct Timed {
    pub name: String,
    pub seconds: f64,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Done,
    /// Already at the target: nothing to do.
    Skipped,
    Failed,
}

impl Outcome {
    fn word(self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Skipped => "skipped",
            Outcome::Failed => "failed",
        }
    }
}

/// The phase and the hosts under way: their bar, their clocks, the journal.
struct Track {
    to: String,
    timings: Timings,
    phase: Option<(String, Instant, PhaseProgress)>,
    hosts: Vec<(String, Instant)>,
}

impl Track {
    fn new(to: &Version) -> Self {
        Track {
            to: to.to_string(),
            timings: Timings::default(),
            phase: None,
            hosts: Vec::new(),
        }
    }

    /// Closes the phase under way (done) and opens `name`, with `steps` steps on its bar.
    fn phase(&mut self, name: &str, steps: usize) {
        self.end_phase(Outcome::Done);
        self.phase = Some((
            name.to_string(),
            Instant::now(),
            PhaseProgress::new(name, steps),
        ));
    }

    fn end_phase(&mut self, outcome: Outcome) {
        if let Some((name, t0, bar)) = self.phase.take() {
            bar.finish();
            self.timings.phases.push(Timed {
                name,
                seconds: t0.elapsed().as_secs_f64(),
                outcome,
            });
        }
    }

    fn doing(&self, what: &str) {
        if let Some((_, _, bar)) = &self.phase {
            bar.doing(what);
        }
    }

    fn line(&self, text: &str) {
        if let Some((_, _, bar)) = &self.phase {
            bar.line(text);
        }
    }

    fn host_start(&mut self, name: &str) {
        self.journal(name, "start");
        self.hosts.push((name.to_string(), Instant::now()));
    }

    /// A host already at the target.
    fn host_skipped(&mut self, name: &str) {
        self.journal(name, "skipped: at the target already");
        self.line(&format!(
            "  {} {name}: runs {} already, skipped",
            ui::paint("-", Color::Dim),
            self.to
        ));
        self.timings.hosts.push(Timed {
            name: name.to_string(),
            seconds: 0.0,
            outcome: Outcome::Skipped,
        });
        if let Some((_, _, bar)) = &self.phase {
            bar.inc();
        }
    }

    fn host_done(&mut self, name: &str) {
        let Some(at) = self.hosts.iter().position(|(h, _)| h == name) else {
            return;
        };
        let (name, t0) = self.hosts.remove(at);
        self.journal(&name, "done");
        let seconds = t0.elapsed().as_secs_f64();
        self.line(&format!(
            "  {} {name} at {} ({seconds:.1}s)",
            ui::paint("done", Color::Green),
            self.to
        ));
        self.timings.hosts.push(Timed {
            name,
            seconds,
            outcome: Outcome::Done,
        });
        if let Some((_, _, bar)) = &self.phase {
            bar.inc();
        }
    }

    /// The run stopped: the phase and the hosts under way failed, the journal says why.
    fn stopped(&mut self, why: &str) {
        let first_line = why.lines().next().unwrap_or_default().to_string();
        for (name, t0) in std::mem::take(&mut self.hosts) {
            self.journal(&name, &format!("failed: {first_line}"));
            self.timings.hosts.push(Timed {
                name,
                seconds: t0.elapsed().as_secs_f64(),
                outcome: Outcome::Failed,
            });
        }
        self.end_phase(Outcome::Failed);
    }

    /// Appends one line to `.capstan/journal.log`: when, the target, the host, the step
    /// (through [`crate::journal`], which a dry run does not open, and which keeps the host
    /// in flight until its next step, for a second Ctrl-C to name).
    fn journal(&self, host: &str, step: &str) {
        crate::journal::append_as(Some(&format!("upgrade {}", self.to)), host, step);
    }
}

pub async fn apply(
    inventory: &Inventory,
    session: &SessionOptions,
    cache: Cache,
    opts: &UpgradeOptions,
) -> miette::Result<UpgradeReport> {
    // Every converge is against the inventory at the target version.
    let target = inventory.at_version(opts.to);
    let prepared = converge::prepare(&target, &ConvergeOptions::default(), cache)?;
    let mut run =
        ClusterRun::connect("upgrade", &target, session, prepared, opts.dry_run, false).await;
    let mut track = Track::new(&opts.to);
    let mut refused = None;
    let stopped = match steps(&mut run, &mut track, inventory, opts).await {
        Ok(()) => {
            track.end_phase(Outcome::Done);
            None
        }
        Err(Halt::Refused(r)) => {
            track.end_phase(Outcome::Failed);
            let why = format!(
                "upgrade to {} refused: {}; nothing was changed. Allowed path: {}",
                opts.to,
                r.reason(),
                r.path()
            );
            refused = Some(r);
            Some(Stop(why))
        }
        Err(Halt::Stop(stop)) => {
            // The hosts under way failed: the report counts and names them.
            for (name, _) in &track.hosts {
                run.mark_failed(name, &stop.0);
            }
            track.stopped(&stop.0);
            Some(stop)
        }
    };
    let report = run.finish(stopped).await;
    let inventory_updated = if report.ok() && !opts.dry_run {
        set_inventory_version(inventory, &opts.to)?
    } else {
        None
    };
    Ok(UpgradeReport {
        to: opts.to,
        run: report,
        timings: track.timings,
        refused,
        inventory_updated,
    })
}

/// Prints the report: the timings and the run's last lines, or the JSON document.
pub fn print(report: &UpgradeReport) -> miette::Result<()> {
    if ui::ui().json {
        return ui::emit_json(report);
    }
    if !ui::ui().quiet {
        ui::emit(&render_timings(&report.timings));
        if let Some(path) = &report.inventory_updated {
            ui::emit(&format!(
                "{}: kubernetes_version is now {}\n",
                path.display(),
                report.to
            ));
        }
    }
    cluster::print_report(&report.run)
}

/// The summary's timings: each phase, then each host.
pub fn render_timings(t: &Timings) -> String {
    let mut out = String::new();
    if t.phases.is_empty() {
        return out;
    }
    let _ = writeln!(out, "{}", ui::paint("Timings:", Color::Bold));
    let mut table = Table::new(["PHASE", "SECONDS", ""]);
    for p in &t.phases {
        table.row([
            p.name.clone(),
            format!("{:.1}", p.seconds),
            if p.outcome == Outcome::Done {
                String::new()
            } else {
                p.outcome.word().to_string()
            },
        ]);
    }
    out.push_str(&table.render());
    if !t.hosts.is_empty() {
        let mut table = Table::new(["HOST", "SECONDS", ""]);
        for h in &t.hosts {
            table.row([
                h.name.clone(),
                format!("{:.1}", h.seconds),
                h.outcome.word().to_string(),
            ]);
        }
        out.push_str(&table.render());
    }
    out
}

/// Why the steps ended early.
enum Halt {
    /// The target is refused by the version-skew policy: nothing was touched.
    Refused(Refusal),
    Stop(Stop),
}

impl From<Stop> for Halt {
    fn from(s: Stop) -> Self {
        Halt::Stop(s)
    }
}

/// The versions every host runs (one exec per host over the run's connections), checked
/// against the target with the version-skew policy; returns what was read.
async fn check_versions(run: &ClusterRun<'_>, to: Version) -> Result<live::LiveRead, Halt> {
    let inv = run.inventory;
    let conns: Vec<Option<&ssh::Connection>> =
        run.hosts.iter().map(|slot| slot.conn.as_ref()).collect();
    let read = live::read_over(inv, &conns, upgrade_plan::apiserver_port(inv)).await;
    if !read.unreachable.is_empty() {
        let list: Vec<String> = read
            .unreachable
            .iter()
            .map(|(h, e)| format!("{h}: {e}"))
            .collect();
        return Err(Stop(format!(
            "cannot read the versions of every host ({}); nothing was changed",
            list.join("; ")
        ))
        .into());
    }
    if read.versions.cluster_version().is_none() {
        return Err(Stop(
            "no API server reported its version: check the control planes (`capstan check`); nothing was changed"
                .into(),
        )
        .into());
    }
    let arches = read.distinct_arches();
    let available = available::available(&inv.cluster.artifacts, &arches).map_err(|e| {
        Stop(format!(
            "cannot tell which Kubernetes releases are available ({e}); check \
             `cluster.artifacts.mirror` in the inventory"
        ))
    })?;
    policy::check_target(&read.versions, to, &available.versions, &available.source)
        .map_err(Halt::Refused)?;
    Ok(read)
}

/// The etcd steps of an upgrade to `to`: every member to the etcd version the target needs
/// ([`upgrade_plan::etcd_target`]), one at a time, through every minor between (refused, with
/// the version to add, when the catalog/mirror lacks one). Members already there are not in
/// them: a re-run resumes.
fn etcd_steps(
    run: &ClusterRun<'_>,
    current: &Inventory,
    to: Version,
    read: &live::LiveRead,
) -> Result<Vec<policy::Step>, Halt> {
    let Some(etcd_to) = upgrade_plan::etcd_target(current, to) else {
        return Ok(Vec::new());
    };
    let inv = run.inventory;
    let available =
        available::etcd(&inv.cluster.artifacts, &read.distinct_arches()).map_err(|e| {
            Stop(format!(
                "cannot tell which etcd releases are available ({e}); check \
             `cluster.artifacts.mirror` in the inventory"
            ))
        })?;
    let members = upgrade_plan::etcd_members(inv);
    let hops = policy::etcd_path(
        &read.versions,
        &members,
        etcd_to,
        &available.versions,
        &available.source,
    )
    .map_err(|e| Halt::Refused(Refusal::Etcd(e)))?;
    Ok(policy::etcd_steps(&read.versions, &members, &hops))
}

/// One etcd member to `to`: the etcd role on that host alone, against the inventory at that
/// etcd version (new etcd and etcdctl; the role restarts the unit), then the gate. A failure
/// stops the rollout with the other members serving.
async fn etcd_member(
    run: &mut ClusterRun<'_>,
    track: &mut Track,
    member: usize,
    to: Version,
    timeout: Duration,
) -> Result<(), Stop> {
    let name = run.host(member).name.clone();
    let mut at = run.inventory.clone();
    at.cluster
        .versions
        .insert("etcd".to_string(), to.to_string());
    let title = format!("{name}: etcd {to}");
    track.journal(&name, &format!("etcd {to}: start"));
    track.doing(&title);
    let t0 = Instant::now();
    let failed = run
        .converge_in(&at, &title, &[member], &["etcd"], &BTreeMap::new())
        .await;
    if !failed.is_empty() {
        let why = format!(
            "{title} failed; the other etcd members serve. Fix it and run `capstan upgrade \
             apply` again: members already at {to} are skipped"
        );
        track.journal(&name, &format!("etcd {to}: failed"));
        return Err(Stop(why));
    }
    track.doing(&format!("{name}: etcd healthy at {to}"));
    let members = run.etcd_members().len();
    if let Err(stop) = etcd_member_gate(run, member, to, members, timeout).await {
        track.journal(&name, &format!("etcd {to}: failed: {}", stop.0));
        return Err(stop);
    }
    track.journal(&name, &format!("etcd {to}: done"));
    let seconds = t0.elapsed().as_secs_f64();
    track.line(&format!(
        "  {} {name} etcd at {to} ({seconds:.1}s)",
        ui::paint("done", Color::Green)
    ));
    track.timings.hosts.push(Timed {
        name: format!("{name} (etcd {to})"),
        seconds,
        outcome: Outcome::Done,
    });
    if let Some((_, _, bar)) = &track.phase {
        bar.inc();
    }
    Ok(())
}

/// The etcd cluster version (asked on `member`) is at least the minor before `to`'s: every
/// member made it to that minor, so one may go to `to`.
async fn etcd_cluster_version_gate(
    run: &mut ClusterRun<'_>,
    member: usize,
    to: Version,
    timeout: Duration,
) -> Result<(), Stop> {
    let need = (to.major, to.minor.saturating_sub(1));
    let what = format!("etcd cluster version {}.{} or later", need.0, need.1);
    let run_ref = &*run;
    let check = || async move {
        let out = run_ref.exec(member, &gates::etcd_version_script()).await?;
        if !out.success() {
            return Err(out.stderr_text().trim().to_string());
        }
        let got = gates::parse_etcd_cluster_version(&out.stdout_text())?;
        match policy::etcd_version(&got) {
            Some(v) if (v.major, v.minor) >= need => Ok(true),
            _ => Err(format!("the cluster version is {got}")),
        }
    };
    let result = wait_for(run_ref, member, timeout, check).await;
    run.record_gate(&what, result)
}

/// Every member healthy as the cluster sees it (`endpoint health --cluster`, all `members`
/// of them) and `member` itself reporting `to` (`endpoint status`), asked on `member`.
async fn etcd_member_gate(
    run: &mut ClusterRun<'_>,
    member: usize,
    to: Version,
    members: usize,
    timeout: Duration,
) -> Result<(), Stop> {
    let name = run.host(member).name.clone();
    let what = format!("etcd: {members} members healthy, {name} at {to}");
    let name = name.as_str();
    let run_ref = &*run;
    let check = || async move {
        if !init::etcd_healthy(run_ref, member, members).await? {
            return Ok(false);
        }
        let out = run_ref.exec(member, &gates::etcd_status_script()).await?;
        let got = gates::parse_etcd_version(&out.stdout_text())
            .map_err(|e| format!("{e} {}", out.stderr_text().trim()))?;
        if policy::etcd_version(&got) == Some(to) {
            Ok(true)
        } else {
            Err(format!("{name} reports etcd {got}"))
        }
    };
    let result = wait_for(run_ref, member, timeout, check).await;
    run.record_gate(&what, result)
}

#[allow(clippy::too_many_lines)]
async fn steps(
    run: &mut ClusterRun<'_>,
    track: &mut Track,
    current_inventory: &Inventory,
    opts: &UpgradeOptions,
) -> Result<(), Halt> {
    let inv = run.inventory;
    let all: Vec<usize> = (0..inv.hosts.len()).collect();
    let cps = run.with_role(Role::ControlPlane);
    let workers = run.workers();
    let members = run.etcd_members();
    let to = opts.to.to_string();
    let gate_timeout = opts.gate_timeout;

    // 1. Preflight: everything reachable and healthy before anything changes.
    track.phase("preflight", 1);
    init::critical(run, &all, "connect")?;
    init::ensure_pki(run).await?;
    run.probe().await;
    init::critical(run, &all, "probe")?;
    init::same_ca(run)?;
    let first = cps[0];
    track.doing("versions and the skew policy");
    let read = check_versions(run, opts.to).await?;
    let etcd = etcd_steps(run, current_inventory, opts.to, &read)?;
    track.doing("etcd");
    init::etcd_gate(run, members[0], members.len()).await?;
    for &cp in &cps {
        let server = pki::spec::local_api_url(inv, run.host(cp));
        let name = run.host(cp).name.clone();
        track.doing(&format!("the API server of {name}"));
        init::api_gate_within(
            run,
            cp,
            Some(server),
            &format!("the API server of {name}"),
            gate_timeout,
        )
        .await?;
    }
    let nodes: Vec<String> = all
        .iter()
        .filter(|&&i| pki::spec::runs_kubelet(run.host(i)))
        .map(|&i| run.host(i).name.clone())
        .filter(|n| !opts.allow_not_ready.contains(n))
        .collect();
    track.doing("nodes Ready");
    nodes_gate(run, first, &nodes, None, gate_timeout).await?;

    // 2. A snapshot before the first control plane changes (a cluster already at the target
    // needs none).
    let pending: Vec<usize> = all
        .iter()
        .copied()
        .filter(|&i| host_pending(run, i, false))
        .collect();
    if pending.is_empty() {
        run.record_note("upgrade", vec![format!("every host runs {to} already")]);
        return Ok(());
    }
    track.phase("etcd snapshot", 1);
    take_snapshot(run, current_inventory, members[0]).await?;

    // 3. etcd, one member at a time, each healthy at its new version before the next, every
    // member at one minor before any goes to the next (the steps are in that order).
    if !etcd.is_empty() {
        track.phase("etcd", etcd.len());
        for s in &etcd {
            if let policy::Step::EtcdMember { member, from, to } = s {
                let i = run
                    .index(member)
                    .ok_or_else(|| Stop(format!("etcd member {member} is not in the inventory")))?;
                // Into a new minor: the cluster runs the one before it (etcd raises the
                // cluster version once every member runs a newer minor).
                if from.is_some_and(|f| (f.major, f.minor) < (to.major, to.minor)) {
                    etcd_cluster_version_gate(run, i, *to, gate_timeout).await?;
                }
                etcd_member(run, track, i, *to, gate_timeout).await?;
            }
        }
    }

    // 4. Control planes, one at a time.
    track.phase("control planes", cps.len());
    for &cp in &cps {
        let name = run.host(cp).name.clone();
        if !host_pending(run, cp, true) {
            track.host_skipped(&name);
            continue;
        }
        track.host_start(&name);
        track.doing(&format!("{name}: cordon, drain"));
        cordon_drain(run, first, cp, opts.drain_timeout).await?;
        let keep_old = BTreeMap::from([(
            cp,
            BTreeMap::from([
                (
                    "controller_manager_image".to_string(),
                    image_of(current_inventory, "kube_controller_manager")?,
                ),
                (
                    "scheduler_image".to_string(),
                    image_of(current_inventory, "kube_scheduler")?,
                ),
            ]),
        )]);
        // The API server first, unless it runs the target already (a resumed run): then
        // writing the old controller-manager and scheduler back would be a step backwards.
        let apiserver = "/etc/kubernetes/manifests/kube-apiserver.yaml";
        let overrides =
            if pending_paths(run, cp, &["control-plane"]).contains(&apiserver.to_string()) {
                keep_old
            } else {
                BTreeMap::new()
            };
        step(
            run,
            track,
            &format!("{name}: kube-apiserver {to}"),
            cp,
            &["pki", "control-plane"],
            &overrides,
        )
        .await?;
        track.doing(&format!("{name}: waiting for its API server at {to}"));
        let server = pki::spec::local_api_url(inv, run.host(cp));
        api_version_gate(run, cp, &server, &to, gate_timeout).await?;
        track.doing("the API through the endpoint");
        init::api_gate_within(
            run,
            first,
            None,
            "the API through the endpoint",
            gate_timeout,
        )
        .await?;
        step(
            run,
            track,
            &format!("{name}: controller-manager, scheduler {to}"),
            cp,
            &["control-plane"],
            &BTreeMap::new(),
        )
        .await?;
        step(
            run,
            track,
            &format!("{name}: kubelet, kubectl {to}"),
            cp,
            &["containerd", "kubelet"],
            &BTreeMap::new(),
        )
        .await?;
        track.doing(&format!("{name}: waiting for the Node at {to}"));
        nodes_gate(
            run,
            first,
            std::slice::from_ref(&name),
            Some(&to),
            gate_timeout,
        )
        .await?;
        uncordon(run, first, cp).await?;
        track.host_done(&name);
    }

    // 5. Workers, in batches.
    track.phase("workers", workers.len());
    let batch = if workers.len() <= 1 {
        1
    } else {
        opts.max_unavailable.max(1)
    };
    let mut todo = Vec::new();
    for &w in &workers {
        if host_pending(run, w, true) {
            todo.push(w);
        } else {
            track.host_skipped(&run.host(w).name);
        }
    }
    for chunk in todo.chunks(batch) {
        let names: Vec<String> = chunk.iter().map(|&i| run.host(i).name.clone()).collect();
        for &w in chunk {
            let name = run.host(w).name.clone();
            track.host_start(&name);
            track.doing(&format!("{name}: cordon, drain"));
            cordon_drain(run, first, w, opts.drain_timeout).await?;
        }
        let title = format!("workers {}: kubelet {to}", names.join(", "));
        track.doing(&title);
        let t0 = Instant::now();
        let failed = run
            .converge(
                &title,
                chunk,
                &["pki", "containerd", "kubelet"],
                &BTreeMap::new(),
            )
            .await;
        if let Some(&f) = failed.first() {
            let name = &run.host(f).name;
            let why = run.hosts[f]
                .error
                .clone()
                .unwrap_or_else(|| format!("the upgrade of {name} failed"));
            return Err(Stop(format!(
                "{why}; {name} stays cordoned and the cluster serves. Fix it and run \
                 `capstan upgrade apply --to {to}` again: finished hosts are skipped"
            ))
            .into());
        }
        track.line(&format!(
            "  {} {title} ({:.1}s)",
            ui::paint("ok", Color::Green),
            t0.elapsed().as_secs_f64()
        ));
        track.doing(&format!(
            "{}: waiting for the Nodes at {to}",
            names.join(", ")
        ));
        nodes_gate(run, first, &names, Some(&to), gate_timeout).await?;
        for &w in chunk {
            uncordon(run, first, w).await?;
            track.host_done(&run.host(w).name);
        }
    }

    // 6. The rest at the target: addons (kube-proxy's image), proxies, everything else.
    track.phase("final converge", 1);
    track.doing("addons");
    run.converge("addons", &[first], &["addons"], &BTreeMap::new())
        .await;
    // Every role but the addons (done above), with the hosts' PKI files.
    let everything: Vec<&str> = std::iter::once(converge::PKI_ROLE)
        .chain(converge::ORDER.iter().copied().filter(|r| *r != "addons"))
        .collect();
    track.doing("every host at the target");
    let failed = run
        .converge(
            "every host at the target",
            &all,
            &everything,
            &BTreeMap::new(),
        )
        .await;
    init::stop_if_critical(run, &failed, "final converge")?;
    // The upgrade ends when the addons run at the target, not when they were applied.
    track.doing("addons rolled out");
    let nodes = (0..run.inventory.hosts.len())
        .filter(|&i| pki::spec::runs_kubelet(run.host(i)))
        .count();
    super::addons_gate::gate(
        run,
        first,
        nodes,
        gate_timeout.max(super::addons_gate::ADDONS_TIMEOUT),
    )
    .await?;
    Ok(())
}

/// The targets `roles` would change on host `i` now (by the run's current view).
fn pending_paths(run: &ClusterRun<'_>, i: usize, only: &[&str]) -> Vec<String> {
    let inv = run.inventory;
    let host = run.host(i);
    let only: Vec<String> = only.iter().map(|r| (*r).to_string()).collect();
    let Some(probed) = run.hosts[i].probed.as_ref() else {
        return Vec::new();
    };
    let Ok(roles) = converge::roles_for(inv, host, &run.prepared, &only) else {
        return Vec::new();
    };
    converge::desired_for(
        inv,
        host,
        &converge::Selection {
            roles: &roles,
            with_pki: false,
            overrides: None,
        },
        &run.prepared,
        Some(&probed.facts),
        crate::engine::desired::Mode::Full,
    )
    .map(|d| {
        crate::engine::plan::plan(&d, &probed.state, &BTreeMap::new())
            .changes
            .into_iter()
            .map(|c| c.target)
            .collect()
    })
    .unwrap_or_default()
}

/// The roles a host's own upgrade step converges (with its PKI files); the others
/// (common, the API endpoint, the addons) follow in the final converge.
const UPGRADE_ROLES: &[&str] = &["control-plane", "containerd", "kubelet"];

/// The host still has something to change at the target version: in every role, or
/// only in those of its upgrade step (`step_only`). A host whose step has nothing to do is
/// skipped by the rollout (not cordoned, not drained).
fn host_pending(run: &ClusterRun<'_>, i: usize, step_only: bool) -> bool {
    let inv = run.inventory;
    let host = run.host(i);
    let Some(probed) = run.hosts[i].probed.as_ref() else {
        return true;
    };
    let only: Vec<String> = if step_only {
        UPGRADE_ROLES.iter().map(|r| (*r).to_string()).collect()
    } else {
        Vec::new()
    };
    let Ok(roles) = converge::roles_for(inv, host, &run.prepared, &only) else {
        return true;
    };
    let Ok(desired) = converge::desired_for(
        inv,
        host,
        &converge::Selection {
            roles: &roles,
            with_pki: true,
            overrides: None,
        },
        &run.prepared,
        Some(&probed.facts),
        crate::engine::desired::Mode::Full,
    ) else {
        return true;
    };
    !crate::engine::plan::plan(&desired, &probed.state, &BTreeMap::new()).is_empty()
}

/// One converge step on one host; a failure stops the rollout with the host named.
async fn step(
    run: &mut ClusterRun<'_>,
    track: &Track,
    title: &str,
    host: usize,
    roles: &[&str],
    overrides: &BTreeMap<usize, BTreeMap<String, String>>,
) -> Result<(), Stop> {
    track.doing(title);
    let t0 = Instant::now();
    let failed = run.converge(title, &[host], roles, overrides).await;
    if failed.is_empty() {
        track.line(&format!(
            "  {} {title} ({:.1}s)",
            ui::paint("ok", Color::Green),
            t0.elapsed().as_secs_f64()
        ));
        Ok(())
    } else {
        let name = &run.host(host).name;
        // The stop says why (the host's own error), so that the last lines do not need
        // the failed host's line above them.
        let why = run.hosts[host]
            .error
            .clone()
            .unwrap_or_else(|| format!("{title} failed"));
        Err(Stop(format!(
            "{why}; {name} stays cordoned and the cluster serves. Fix it and run \
             `capstan upgrade apply` again: finished hosts are skipped, {name} is retried"
        )))
    }
}

/// The image a component runs at the inventory's (current) version.
fn image_of(inv: &Inventory, component: &str) -> Result<String, Stop> {
    let images = crate::artifacts::catalog::images(
        &inv.cluster.artifacts.catalog,
        &inv.cluster.kubernetes_version,
        Some(&inv.cluster.image_repository),
    )
    .map_err(|e| Stop(e.to_string()))?;
    Ok(match component {
        "kube_controller_manager" => images.kube_controller_manager,
        _ => images.kube_scheduler,
    })
}

async fn take_snapshot(
    run: &mut ClusterRun<'_>,
    current: &Inventory,
    member: usize,
) -> Result<(), Stop> {
    let name = snapshot::file_name(current, time::OffsetDateTime::now_utc());
    if run.dry_run {
        return run.record_gate(&format!("etcd snapshot {name}"), Ok(None));
    }
    let host = run.host(member).name.clone();
    let conn = run.hosts[member]
        .conn
        .as_ref()
        .ok_or_else(|| Stop(format!("{host} is not connected")))?;
    let snap = snapshot::take(current, conn, &host, &name)
        .await
        .map_err(|e| Stop(format!("etcd snapshot: {e}; nothing was changed")))?;
    run.record_note(
        "etcd snapshot",
        vec![format!(
            "{} ({} keys, revision {})",
            snap.path.display(),
            snap.meta.total_keys,
            snap.meta.revision
        )],
    );
    Ok(())
}

/// Every listed node Ready (with kubelet `version` when given), asked on host `on`.
async fn nodes_gate(
    run: &mut ClusterRun<'_>,
    on: usize,
    expected: &[String],
    version: Option<&str>,
    timeout: Duration,
) -> Result<(), Stop> {
    super::init::nodes_ready(run, on, expected, version, timeout)
        .await
        .map(|_| ())
}

/// That host's API server is ready and reports the target version.
async fn api_version_gate(
    run: &mut ClusterRun<'_>,
    on: usize,
    server: &str,
    to: &str,
    timeout: Duration,
) -> Result<(), Stop> {
    let what = format!("the API server of {} ready at {to}", run.host(on).name);
    let run_ref = &*run;
    let script = gates::kubectl(Some(server), "version -o json");
    let ready = gates::readyz_script(Some(server));
    let check = || {
        let script = script.clone();
        let ready = ready.clone();
        async move {
            let r = run_ref.exec(on, &ready).await?;
            if !gates::readyz_ok(&r.stdout_text()) {
                return Err(format!("not ready: {}", r.stderr_text().trim()));
            }
            let out = run_ref.exec(on, &script).await?;
            let v: serde_json::Value = serde_json::from_str(out.stdout_text().trim())
                .map_err(|e| format!("no version ({e})"))?;
            let got = v["serverVersion"]["gitVersion"]
                .as_str()
                .unwrap_or_default();
            if got == to {
                Ok(true)
            } else {
                Err(format!("reports {got}"))
            }
        }
    };
    let result = wait_for(run_ref, on, timeout, check).await;
    run.record_gate(&what, result)
}

async fn cordon_drain(
    run: &mut ClusterRun<'_>,
    on: usize,
    host: usize,
    timeout: Duration,
) -> Result<(), Stop> {
    let name = run.host(host).name.clone();
    let q = ssh::quote(&name);
    if run.dry_run {
        return run.record_gate(&format!("cordon and drain {name}"), Ok(None));
    }
    // kubectl drain evicts through the eviction API: PodDisruptionBudgets hold it back
    // (it retries 429) until --timeout; DaemonSet and mirror pods stay.
    let script = gates::kubectl(
        None,
        &format!(
            "drain {q} --ignore-daemonsets --delete-emptydir-data --timeout={}s",
            timeout.as_secs()
        ),
    );
    let t0 = Instant::now();
    let out = run
        .exec(on, &script)
        .await
        .map_err(|e| Stop(format!("drain {name}: {e}")))?;
    if !out.success() {
        return Err(Stop(format!(
            "draining {name} did not finish ({}); it stays cordoned and nothing else changed. \
             Look at its pods and PodDisruptionBudgets, then run again",
            out.stderr_text().trim()
        )));
    }
    run.record_gate(
        &format!("{name} cordoned and drained"),
        Ok(Some(t0.elapsed().as_secs_f64())),
    )
}

async fn uncordon(run: &mut ClusterRun<'_>, on: usize, host: usize) -> Result<(), Stop> {
    let name = run.host(host).name.clone();
    if run.dry_run {
        return run.record_gate(&format!("uncordon {name}"), Ok(None));
    }
    let out = run
        .exec(
            on,
            &gates::kubectl(None, &format!("uncordon {}", ssh::quote(&name))),
        )
        .await
        .map_err(|e| Stop(format!("uncordon {name}: {e}")))?;
    if !out.success() {
        return Err(Stop(format!(
            "uncordon {name}: {}",
            out.stderr_text().trim()
        )));
    }
    run.record_gate(&format!("{name} uncordoned"), Ok(Some(0.0)))
}

/// Sets `kubernetes_version:` in the inventory file to the version the cluster now runs
/// (one line changed; comments and everything else stay).
/// Returns the file when it changed.
fn set_inventory_version(
    inv: &Inventory,
    to: &Version,
) -> miette::Result<Option<std::path::PathBuf>> {
    let path = &inv.path;
    let text = std::fs::read_to_string(path)
        .map_err(|e| miette::miette!("cannot read {}: {e}", path.display()))?;
    let mut done = false;
    let out: String = text
        .split_inclusive('\n')
        .map(|line| {
            let trimmed = line.trim_start();
            if !done && trimmed.starts_with("kubernetes_version:") {
                done = true;
                let indent = &line[..line.len() - trimmed.len()];
                let comment = trimmed
                    .find(" #")
                    .map(|at| &trimmed[at..])
                    .unwrap_or_default()
                    .trim_end_matches('\n');
                let nl = if line.ends_with('\n') { "\n" } else { "" };
                format!("{indent}kubernetes_version: {to}{comment}{nl}")
            } else {
                line.to_string()
            }
        })
        .collect();
    if !done {
        return Err(miette::miette!(
            "the cluster runs {to} now, but {} has no kubernetes_version line to update: set it by hand",
            path.display()
        ));
    }
    if out == text {
        return Ok(None);
    }
    crate::fsutil::write_atomic(path, out.as_bytes(), 0o644)
        .map_err(|e| miette::miette!("cannot write {}: {e}", path.display()))?;
    Ok(Some(path.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_gives_every_phase_and_host_with_its_outcome() {
        let t = Timings {
            phases: vec![
                Timed {
                    name: "preflight".into(),
                    seconds: 1.3,
                    outcome: Outcome::Done,
                },
                Timed {
                    name: "control planes".into(),
                    seconds: 31.0,
                    outcome: Outcome::Failed,
                },
            ],
            hosts: vec![
                Timed {
                    name: "cp1".into(),
                    seconds: 0.0,
                    outcome: Outcome::Skipped,
                },
                Timed {
                    name: "cp2".into(),
                    seconds: 30.5,
                    outcome: Outcome::Failed,
                },
            ],
        };
        let text = render_timings(&t);
        assert!(text.starts_with("Timings:"), "{text}");
        let line = |start: &str| {
            text.lines()
                .find(|l| l.starts_with(start))
                .unwrap_or_else(|| panic!("no {start} in {text}"))
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(line("preflight"), "preflight 1.3");
        assert_eq!(line("control planes"), "control planes 31.0 failed");
        assert_eq!(line("cp1"), "cp1 0.0 skipped");
        assert_eq!(line("cp2"), "cp2 30.5 failed");
        assert_eq!(render_timings(&Timings::default()), "");
        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(json["hosts"][0]["outcome"], "skipped");
    }
}
