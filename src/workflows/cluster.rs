//! A cluster run: one SSH connection and one probe per host, then phases that each
//! converge some roles on some hosts (plan against the probe's view, apply the difference,
//! update the view), with health gates between them. `init`, `join` and `reset` are lists
//! of phases over this.
//!
//! Dry runs go through one gate: [`ClusterRun::converge`] plans and stops there, and
//! [`ClusterRun::gate`] reports what it would wait for instead of waiting.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::converge::{
    self, Archives, HostOutcome, PKI_ROLE, Prepared, ProbeKind, Probed, Selection,
};
use super::{SessionOptions, target};
use crate::engine::desired;
use crate::engine::plan::HostPlan;
use crate::inventory::{Host, Inventory};
use crate::ssh::{self, Connection, ExecOutput};
use crate::ui::{self, Color};

/// One host of the run.
pub struct HostSlot {
    pub conn: Option<Connection>,
    pub probed: Option<Probed>,
    /// Why the host is out of the run (unreachable, failed probe, failed phase).
    pub error: Option<String>,
}

/// What one phase did on one host.
#[derive(Debug, Serialize)]
pub struct PhaseHost {
    pub host: String,
    pub roles: Vec<String>,
    pub plan: HostPlan,
    pub applied: bool,
}

/// One phase's outcome.
#[derive(Debug, Serialize)]
pub struct PhaseReport {
    pub phase: String,
    pub hosts: Vec<PhaseHost>,
    /// Health gates passed (or, on a dry run, that would be waited for).
    pub gates: Vec<String>,
    pub failed: BTreeMap<String, String>,
    pub seconds: f64,
}

/// The whole run's outcome.
#[derive(Debug, Serialize)]
pub struct RunReport {
    pub command: String,
    pub dry_run: bool,
    pub phases: Vec<PhaseReport>,
    /// Hosts that failed, with why (the first failure of each).
    pub failed: BTreeMap<String, String>,
    /// Set when the run stopped before its last phase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// Set when the run was interrupted (Ctrl-C, SIGTERM, lost lock): why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interrupted: Option<String>,
    /// Phases that did not start because the run was interrupted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_started: Vec<String>,
    /// SSH round trips per host (execs after the handshake).
    pub round_trips: BTreeMap<String, u64>,
    /// Preflight warnings (each said once before the run, with its hosts) and how many
    /// hosts they were on; the last line repeats only the count.
    pub preflight_warnings: usize,
    #[serde(skip)]
    pub preflight_warned_hosts: usize,
    pub seconds: f64,
}

impl RunReport {
    pub fn changes(&self) -> usize {
        self.phases
            .iter()
            .flat_map(|p| &p.hosts)
            .map(|h| h.plan.changes.len())
            .sum()
    }

    /// Hosts with at least one change.
    pub fn changed_hosts(&self) -> usize {
        self.changed_host_names().len()
    }

    /// The hosts with at least one change, sorted.
    fn changed_host_names(&self) -> Vec<&str> {
        let mut hosts: Vec<&str> = self
            .phases
            .iter()
            .flat_map(|p| &p.hosts)
            .filter(|h| !h.plan.is_empty())
            .map(|h| h.host.as_str())
            .collect();
        hosts.sort_unstable();
        hosts.dedup();
        hosts
    }

    /// The hosts a phase planned (whether or not it changed them).
    fn planned_host_names(&self) -> Vec<&str> {
        let mut hosts: Vec<&str> = self
            .phases
            .iter()
            .flat_map(|p| &p.hosts)
            .map(|h| h.host.as_str())
            .collect();
        hosts.sort_unstable();
        hosts.dedup();
        hosts
    }

    /// The hosts some phase planned that neither changed nor failed (a failed host may have
    /// changed something before it failed). A host no phase reached is not "unchanged":
    /// it was never compared ([`RunReport::not_converged_hosts`]).
    fn unchanged_hosts(&self) -> usize {
        let changed = self.changed_host_names();
        self.planned_host_names()
            .into_iter()
            .filter(|h| !changed.contains(h) && !self.failed.contains_key(*h))
            .count()
    }

    /// Of `n` hosts, those that no phase reached and that did not fail (the run stopped
    /// before them: a preflight refusal, a gate).
    fn not_converged_hosts(&self, n: usize) -> usize {
        let changed = self.changed_host_names();
        let failed_unchanged = self
            .failed
            .keys()
            .filter(|h| !changed.contains(&h.as_str()))
            .count();
        n.saturating_sub(changed.len() + failed_unchanged + self.unchanged_hosts())
    }

    pub fn ok(&self) -> bool {
        self.failed.is_empty() && self.stopped.is_none()
    }
}

/// A problem that stops the run (a gate that does not pass, a critical host failing).
#[derive(Debug)]
pub struct Stop(pub String);

pub struct ClusterRun<'a> {
    pub inventory: &'a Inventory,
    pub prepared: Arc<Prepared>,
    pub hosts: Vec<HostSlot>,
    pub dry_run: bool,
    pub verify: bool,
    archives: Archives,
    pub phases: Vec<PhaseReport>,
    started: Instant,
    command: String,
    /// Phases skipped after an interrupt (see [`crate::interrupt`]).
    not_started: Vec<String>,
    /// Set by the preflight gate (see [`RunReport::preflight_warnings`]).
    pub preflight_warnings: usize,
    pub preflight_warned_hosts: usize,
}

impl<'a> ClusterRun<'a> {
    /// Connects to every host of the inventory (at most `forks` handshakes at once).
    pub async fn connect(
        command: &str,
        inventory: &'a Inventory,
        session: &SessionOptions,
        prepared: Prepared,
        dry_run: bool,
        verify: bool,
    ) -> ClusterRun<'a> {
        let started = Instant::now();
        let targets: Vec<ssh::Target> = inventory.hosts.iter().map(target).collect();
        let progress = ui::HostProgress::new("connecting", targets.iter().map(|t| &t.name));
        let results = ssh::connect_all(&targets, &session.ssh, session.forks, |name, _| {
            progress.host_done(name);
        })
        .await;
        progress.finish();
        let hosts = results
            .into_iter()
            .map(|r| match r {
                Ok(c) => HostSlot {
                    conn: Some(c),
                    probed: None,
                    error: None,
                },
                Err(e) => HostSlot {
                    conn: None,
                    probed: None,
                    error: Some(e.to_string()),
                },
            })
            .collect();
        ClusterRun {
            inventory,
            prepared: Arc::new(prepared),
            hosts,
            dry_run,
            verify,
            archives: Archives::default(),
            phases: Vec::new(),
            started,
            command: command.to_string(),
            not_started: Vec::new(),
            preflight_warnings: 0,
            preflight_warned_hosts: 0,
        }
    }

    pub fn host(&self, i: usize) -> &'a Host {
        &self.inventory.hosts[i]
    }

    pub fn index(&self, name: &str) -> Option<usize> {
        self.inventory.hosts.iter().position(|h| h.name == name)
    }

    /// The hosts of the inventory that hold `role`, by index.
    pub fn with_role(&self, role: crate::inventory::Role) -> Vec<usize> {
        (0..self.inventory.hosts.len())
            .filter(|&i| self.host(i).has_role(role))
            .collect()
    }

    /// Workers that are not also control planes.
    pub fn workers(&self) -> Vec<usize> {
        use crate::inventory::Role;
        (0..self.inventory.hosts.len())
            .filter(|&i| {
                self.host(i).has_role(Role::Worker) && !self.host(i).has_role(Role::ControlPlane)
            })
            .collect()
    }

    /// The hosts that run an etcd member under the inventory's topology.
    pub fn etcd_members(&self) -> Vec<usize> {
        (0..self.inventory.hosts.len())
            .filter(|&i| {
                self.inventory
                    .etcd_members()
                    .any(|m| m.name == self.host(i).name)
            })
            .collect()
    }

    /// Hosts still in the run.
    pub fn alive(&self, i: usize) -> bool {
        self.hosts[i].error.is_none() && self.hosts[i].conn.is_some()
    }

    /// Replaces the PKI the `pki` role installs (after `init` ensured it).
    pub fn set_pki(&mut self, state: crate::pki::PkiState) -> Result<(), Stop> {
        let prepared = Arc::get_mut(&mut self.prepared)
            .ok_or_else(|| Stop("internal error: the prepared roles are shared".into()))?;
        prepared.pki = Some(state);
        Ok(())
    }

    /// One probe per reachable host for everything any phase will plan (every role the
    /// host carries, its PKI files) plus what preflight needs.
    pub async fn probe(&mut self) {
        let inventory = self.inventory;
        let prepared = Arc::clone(&self.prepared);
        let verify = self.verify;
        let dry_run = self.dry_run;
        let progress = ui::HostProgress::new("probing", inventory.hosts.iter().map(|h| &h.name));
        let work = self.hosts.iter().enumerate().map(|(i, slot)| {
            let prepared = Arc::clone(&prepared);
            let progress = &progress;
            async move {
                let host = &inventory.hosts[i];
                let result = match (&slot.conn, &slot.error) {
                    (Some(conn), None) => {
                        let shape = converge::roles_for(inventory, host, &prepared, &[]).and_then(
                            |roles| {
                                converge::desired_for(
                                    inventory,
                                    host,
                                    &Selection {
                                        roles: &roles,
                                        with_pki: true,
                                        overrides: None,
                                    },
                                    &prepared,
                                    None,
                                    desired::Mode::Shape,
                                )
                            },
                        );
                        match shape {
                            Ok(shape) => Some(
                                converge::probe_host(
                                    conn,
                                    &shape,
                                    verify,
                                    ProbeKind::Full,
                                    !dry_run,
                                )
                                .await,
                            ),
                            Err(e) => Some(Err(e)),
                        }
                    }
                    _ => None,
                };
                progress.host_done(&host.name);
                result
            }
        });
        let results = futures::future::join_all(work).await;
        progress.finish();
        for (slot, r) in self.hosts.iter_mut().zip(results) {
            match r {
                Some(Ok(p)) => slot.probed = Some(p),
                Some(Err(e)) => slot.error = Some(format!("probe: {e}")),
                None => {}
            }
        }
    }

    /// Converges `roles` (`pki` included by name) on `hosts`, in parallel, as phase `name`.
    /// Hosts already out of the run are skipped; a host that fails is taken out and named
    /// in the report. Returns the hosts that failed in this phase.
    pub async fn converge(
        &mut self,
        name: &str,
        hosts: &[usize],
        roles: &[&str],
        overrides: &BTreeMap<usize, BTreeMap<String, String>>,
    ) -> Vec<usize> {
        self.converge_in(self.inventory, name, hosts, roles, overrides)
            .await
    }

    /// [`Self::converge`] against `inventory`, a variant of the run's own with the same hosts
    /// (another version of a component: the etcd releases an upgrade goes through).
    pub async fn converge_in(
        &mut self,
        inventory: &Inventory,
        name: &str,
        hosts: &[usize],
        roles: &[&str],
        overrides: &BTreeMap<usize, BTreeMap<String, String>>,
    ) -> Vec<usize> {
        let t0 = Instant::now();
        let prepared = Arc::clone(&self.prepared);
        let only: Vec<String> = roles.iter().map(|r| (*r).to_string()).collect();
        let dry_run = self.dry_run;
        let archives = &self.archives;
        let selected: Vec<usize> = hosts.iter().copied().filter(|&i| self.alive(i)).collect();
        // Interrupted: this phase does not start; its hosts count as not done, so that
        // the workflow stops at its next critical step.
        if !dry_run && crate::interrupt::check().is_err() {
            self.not_started.push(name.to_string());
            return selected;
        }
        if !dry_run {
            crate::journal::append(name, "start");
        }
        let slots = &self.hosts;
        let work = selected.iter().map(|&i| {
            let prepared = Arc::clone(&prepared);
            let only = &only;
            async move {
                let host = &inventory.hosts[i];
                let slot = &slots[i];
                let (Some(conn), Some(probed)) = (&slot.conn, &slot.probed) else {
                    return (i, Err("not probed".to_string()));
                };
                let result = async {
                    let role_list = converge::roles_for(inventory, host, &prepared, only)?;
                    let with_pki = prepared.wants_pki(only) && only.iter().any(|r| r == PKI_ROLE);
                    let mut names: Vec<String> = role_list.iter().map(|r| r.name.clone()).collect();
                    if with_pki {
                        names.insert(0, PKI_ROLE.to_string());
                    }
                    if names.is_empty() {
                        return Ok(None);
                    }
                    let what = Selection {
                        roles: &role_list,
                        with_pki,
                        overrides: overrides.get(&i),
                    };
                    let desired = converge::desired_for(
                        inventory,
                        host,
                        &what,
                        &prepared,
                        Some(&probed.facts),
                        desired::Mode::Full,
                    )?;
                    let (plan, applied) =
                        converge::plan_apply(conn, &desired, probed, dry_run, archives).await?;
                    Ok(Some((names, desired, plan, applied)))
                }
                .await;
                (i, result)
            }
        });
        let results = futures::future::join_all(work).await;
        let mut report = PhaseReport {
            phase: name.to_string(),
            hosts: Vec::new(),
            gates: Vec::new(),
            failed: BTreeMap::new(),
            seconds: 0.0,
        };
        let mut failed = Vec::new();
        for (i, r) in results {
            let host = &inventory.hosts[i];
            match r {
                Ok(None) => {}
                Ok(Some((names, desired, plan, applied))) => {
                    if let Some(p) = self.hosts[i].probed.as_mut() {
                        p.state.assume_applied(&desired, &plan);
                    }
                    report.hosts.push(PhaseHost {
                        host: host.name.clone(),
                        roles: names,
                        plan,
                        applied,
                    });
                }
                Err(e) => {
                    // An exec cut off with its connection: say so, as a gate does.
                    let e = match self.connection_lost(i) {
                        Some(lost) => format!("{lost} ({e})"),
                        None => e,
                    };
                    report.failed.insert(host.name.clone(), e.clone());
                    self.hosts[i].error = Some(format!("{name}: {e}"));
                    failed.push(i);
                }
            }
        }
        report.seconds = t0.elapsed().as_secs_f64();
        if !dry_run {
            let event = if report.failed.is_empty() {
                format!(
                    "done ({} changes)",
                    report
                        .hosts
                        .iter()
                        .map(|h| h.plan.changes.len())
                        .sum::<usize>()
                )
            } else {
                format!(
                    "failed on {}",
                    report.failed.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            };
            crate::journal::append(name, &event);
        }
        print_phase(&report, dry_run);
        self.phases.push(report);
        failed
    }

    /// Why host `i` can no longer be reached in this run: its SSH connection ended (the
    /// keepalive found it dead, or the server closed it). A run does not reconnect.
    pub fn connection_lost(&self, i: usize) -> Option<String> {
        let conn = self.hosts[i].conn.as_ref()?;
        conn.is_closed().then(|| {
            format!(
                "the SSH connection to {} ({}) is lost; check the host and its network, then \
                 run the command again",
                conn.name(),
                conn.address()
            )
        })
    }

    /// Takes host `name` out of the run as failed, with `why`, unless it failed already
    /// (its first failure is the one reported).
    pub fn mark_failed(&mut self, name: &str, why: &str) {
        let inventory = self.inventory;
        if let Some(i) = inventory.hosts.iter().position(|h| h.name == name) {
            self.hosts[i].error.get_or_insert_with(|| why.to_string());
        }
    }

    /// Runs `script` on host `i` (a gate, a query): one exec.
    pub async fn exec(&self, i: usize, script: &str) -> Result<ExecOutput, String> {
        if !self.dry_run {
            crate::interrupt::check()?;
        }
        let conn = self.hosts[i]
            .conn
            .as_ref()
            .ok_or_else(|| format!("{} is not connected", self.host(i).name))?;
        conn.exec(script).await.map_err(|e| e.to_string())
    }

    /// Records a gate's outcome on the last phase (see [`wait_for`]): a gate that did not
    /// pass stops the run.
    pub fn record_gate(
        &mut self,
        what: &str,
        result: Result<Option<f64>, String>,
    ) -> Result<(), Stop> {
        let text = match result {
            Ok(None) => format!("would wait for {what}"),
            Ok(Some(secs)) => format!("{what} ({secs:.1}s)"),
            Err(e) => return Err(Stop(format!("gate `{what}`: {e}"))),
        };
        if !ui::ui().quiet && !ui::ui().json {
            ui::emit(&format!("  {} {text}\n", ui::paint("gate", Color::Dim)));
        }
        if let Some(p) = self.phases.last_mut() {
            p.gates.push(text);
        }
        Ok(())
    }

    /// Records a phase that is not a converge of roles (its changes done through the API,
    /// say) and prints it like one.
    pub fn record_phase(&mut self, report: PhaseReport) {
        print_phase(&report, self.dry_run);
        self.phases.push(report);
    }

    /// Records a step that is not a converge (a reset's drain, member removal, cleaning)
    /// as a phase of its own, with what it did in `notes`.
    pub fn record_note(&mut self, phase: &str, notes: Vec<String>) {
        self.phases.push(PhaseReport {
            phase: phase.to_string(),
            hosts: Vec::new(),
            gates: notes,
            failed: BTreeMap::new(),
            seconds: 0.0,
        });
    }

    /// Closes every connection and builds the report.
    pub async fn finish(self, stopped: Option<Stop>) -> RunReport {
        let mut failed = BTreeMap::new();
        let mut round_trips = BTreeMap::new();
        for (i, slot) in self.hosts.into_iter().enumerate() {
            let name = self.inventory.hosts[i].name.clone();
            if let Some(e) = slot.error {
                failed.insert(name.clone(), e);
            }
            if let Some(c) = slot.conn {
                round_trips.insert(name, c.round_trips());
                c.close().await;
            }
        }
        let interrupted = if self.dry_run {
            None
        } else {
            crate::interrupt::interrupted().map(|i| i.reason)
        };
        // After an interrupt, the stop is its consequence: say what is done and what not.
        let stopped = match (&interrupted, stopped) {
            (Some(why), stopped) => Some(interrupted_summary(
                &self.command,
                why,
                &self.phases,
                &self.not_started,
                stopped.map(|s| s.0),
            )),
            (None, stopped) => stopped.map(|s| s.0),
        };
        RunReport {
            command: self.command,
            dry_run: self.dry_run,
            phases: self.phases,
            failed,
            stopped,
            interrupted,
            not_started: self.not_started,
            round_trips,
            preflight_warnings: self.preflight_warnings,
            preflight_warned_hosts: self.preflight_warned_hosts,
            seconds: self.started.elapsed().as_secs_f64(),
        }
    }
}

/// What an interrupted run did and did not do, for the report's `stopped` line.
fn interrupted_summary(
    command: &str,
    why: &str,
    phases: &[PhaseReport],
    not_started: &[String],
    stop: Option<String>,
) -> String {
    let done: Vec<&str> = phases
        .iter()
        .filter(|p| p.failed.is_empty())
        .map(|p| p.phase.as_str())
        .collect();
    let mut not_done: Vec<String> = phases
        .iter()
        .filter(|p| !p.failed.is_empty())
        .map(|p| {
            format!(
                "{} (unfinished on {})",
                p.phase,
                p.failed.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })
        .collect();
    not_done.extend(not_started.iter().cloned());
    if not_done.is_empty()
        && let Some(stop) = stop
    {
        not_done.push(stop);
    }
    not_done.push("every later step".into());
    format!(
        "{why}: the host steps in flight were finished and nothing new was started.\n  done: {}\n  not done: {}\n  re-run `capstan {command}` to finish",
        if done.is_empty() {
            "nothing".to_string()
        } else {
            done.join("; ")
        },
        not_done.join("; ")
    )
}

/// One phase as it finishes: its title, then per host what changed (or would).
fn print_phase(report: &PhaseReport, dry_run: bool) {
    let u = ui::ui();
    if u.json || u.quiet {
        return;
    }
    ui::emit(&render_phase(report, dry_run, u.verbose > 0));
}

/// A phase's lines: its title, then what it did per host, hosts that did the same said once.
fn render_phase(report: &PhaseReport, dry_run: bool, verbose: bool) -> String {
    let mut out = format!("{} {}\n", ui::paint("==>", Color::Bold), report.phase);
    // What each host would print after its name; hosts that print the same are one line.
    let lines = report.hosts.iter().filter_map(|h| {
        if h.plan.is_empty() {
            return (verbose).then(|| {
                (
                    h.host.as_str(),
                    format!("{}\n", ui::paint("no changes", Color::Dim)),
                )
            });
        }
        let outcome = HostOutcome {
            host: h.host.clone(),
            roles: h.roles.clone(),
            plan: Some(h.plan.clone()),
            applied: h.applied,
            error: None,
            round_trips: 0,
            seconds: 0.0,
        };
        let verb = if dry_run { "would change" } else { "changed" };
        let mut line = format!(
            "{verb} ({}): {}\n",
            h.roles.join(", "),
            ui::count(outcome.changes(), "change")
        );
        // Dry runs show every change with its diff; real runs only with -v.
        if dry_run || verbose {
            line.push_str(&converge::render_changes(
                &h.plan,
                !h.applied || verbose,
                "    ",
            ));
        }
        Some((h.host.as_str(), line))
    });
    for (hosts, line) in ui::group_hosts(lines) {
        out.push_str(&format!(
            "  {} {line}",
            ui::paint(&hosts.join(", "), Color::Bold)
        ));
    }
    for (host, e) in &report.failed {
        out.push_str(&format!(
            "  {} {}: {e}\n",
            ui::paint(host, Color::Bold),
            ui::paint("failed", Color::Red)
        ));
    }
    out
}

/// Prints the run's last lines (or the JSON report).
pub fn print_report(report: &RunReport) -> miette::Result<()> {
    if ui::ui().json {
        return ui::emit_json(report);
    }
    ui::emit(&render_report(report));
    Ok(())
}

/// The run's last lines as text: failed hosts, why it stopped, the counts.
fn render_report(report: &RunReport) -> String {
    let mut out = String::new();
    for (host, e) in &report.failed {
        // A host the run stopped at failed for the reason given once, below (the stop may
        // add what to do after it).
        let e = if report
            .stopped
            .as_ref()
            .is_some_and(|s| s.starts_with(e.as_str()))
        {
            "the run stopped at this host (see `stopped:`)"
        } else {
            e.as_str()
        };
        out.push_str(&format!(
            "{} {}: {e}\n",
            ui::paint(host, Color::Bold),
            ui::paint("failed", Color::Red)
        ));
    }
    if let Some(why) = &report.stopped {
        out.push_str(&format!("{} {why}\n", ui::paint("stopped:", Color::Red)));
    }
    let n = report.round_trips.len()
        + report
            .failed
            .keys()
            .filter(|h| !report.round_trips.contains_key(*h))
            .count();
    let changed = report.changed_hosts();
    let failed = report.failed.len();
    let not_converged = match report.not_converged_hosts(n) {
        0 => String::new(),
        k => format!(", {k} not converged"),
    };
    // Said in full before the run; here only how many, and where to look.
    let warned = match report.preflight_warnings {
        0 => String::new(),
        n => format!(
            "; {} on {} (above)",
            ui::count(n, "preflight warning"),
            ui::count(report.preflight_warned_hosts, "host")
        ),
    };
    if report.dry_run {
        out.push_str(&format!(
            "{}: {}, {} would be made on {}, {failed} failed{not_converged}{warned}\n",
            report.command,
            ui::count(n, "host"),
            ui::count(report.changes(), "change"),
            ui::count(changed, "host"),
        ));
    } else {
        out.push_str(&format!(
            "{}: {}, {changed} changed, {} unchanged, {failed} failed{not_converged}, {} ({:.2}s){warned}\n",
            report.command,
            ui::count(n, "host"),
            report.unchanged_hosts(),
            ui::count(report.changes(), "change"),
            report.seconds
        ));
    }
    out
}

/// A health gate run on host `on`: calls `check` until it returns `Ok(true)` or `timeout`
/// passes, and says how long it took. On a dry run nothing is waited for (`Ok(None)`): the
/// gate is only reported. When the SSH connection to `on` is lost (a run does not
/// reconnect), the gate fails at once, naming the host, instead of waiting out `timeout`.
pub async fn wait_for<F, Fut>(
    run: &ClusterRun<'_>,
    on: usize,
    timeout: Duration,
    check: F,
) -> Result<Option<f64>, String>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<bool, String>>,
{
    if run.dry_run {
        return Ok(None);
    }
    let t0 = Instant::now();
    let mut last = String::new();
    loop {
        crate::interrupt::check()?;
        match check().await {
            Ok(true) => return Ok(Some(t0.elapsed().as_secs_f64())),
            Ok(false) => {}
            Err(e) => last = e,
        }
        let why = if last.is_empty() {
            String::new()
        } else {
            format!(" (last answer: {last})")
        };
        if let Some(lost) = run.connection_lost(on) {
            return Err(format!(
                "not reached after {}s: {lost}{why}",
                t0.elapsed().as_secs()
            ));
        }
        if t0.elapsed() >= timeout {
            return Err(format!("not reached after {}s{why}", timeout.as_secs()));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::plan::{Action, Change};

    fn changed(host: &str) -> PhaseHost {
        PhaseHost {
            host: host.into(),
            roles: vec!["control-plane".into()],
            plan: HostPlan {
                changes: vec![Change {
                    kind: "file",
                    target: "/etc/kubernetes/manifests/kube-apiserver.yaml".into(),
                    action: Action::Update,
                    details: Vec::new(),
                    diff: None,
                    secret: false,
                    index: 0,
                }],
                daemon_reload: false,
            },
            applied: true,
        }
    }

    #[test]
    fn a_host_that_changed_then_failed_counts_once_and_is_not_unchanged() {
        let report = RunReport {
            command: "upgrade".into(),
            dry_run: false,
            phases: vec![PhaseReport {
                phase: "cp2: kube-apiserver v1.32.5".into(),
                hosts: vec![changed("cp1"), changed("cp2")],
                gates: Vec::new(),
                failed: BTreeMap::new(),
                seconds: 1.0,
            }],
            // cp2 changed, then the rollout stopped there; w9 failed without a change.
            failed: BTreeMap::from([
                ("cp2".to_string(), "gate `x`: not reached".to_string()),
                ("w9".to_string(), "connect: refused".to_string()),
            ]),
            stopped: Some("gate `x`: not reached".into()),
            interrupted: None,
            not_started: Vec::new(),
            round_trips: BTreeMap::new(),
            preflight_warnings: 0,
            preflight_warned_hosts: 0,
            seconds: 2.0,
        };
        assert_eq!(report.changed_hosts(), 2);
        // cp1, cp2, cp3, w9, lb1: cp3 and lb1 neither changed nor failed, but no phase
        // reached them: they are not converged, not "unchanged".
        assert_eq!(report.unchanged_hosts(), 0);
        assert_eq!(report.not_converged_hosts(5), 2);
        assert!(!report.ok());
    }

    fn unchanged(host: &str) -> PhaseHost {
        PhaseHost {
            plan: HostPlan {
                changes: Vec::new(),
                daemon_reload: false,
            },
            applied: false,
            ..changed(host)
        }
    }

    fn run_of(hosts: &[&str], phases: Vec<PhaseReport>) -> RunReport {
        RunReport {
            command: "init".into(),
            dry_run: false,
            phases,
            failed: BTreeMap::new(),
            stopped: None,
            interrupted: None,
            not_started: Vec::new(),
            round_trips: hosts.iter().map(|h| ((*h).to_string(), 1)).collect(),
            preflight_warnings: 0,
            preflight_warned_hosts: 0,
            seconds: 1.25,
        }
    }

    const SIX: [&str; 6] = ["cp1", "cp2", "cp3", "lb1", "w1", "w2"];

    /// The last lines of a run, as a user reads them: a warning said before the run is
    /// repeated only as a count; a preflight stop leaves hosts "not converged".
    #[test]
    fn last_lines_of_a_run() {
        let phase = |hosts: Vec<PhaseHost>| PhaseReport {
            phase: "hosts".into(),
            hosts,
            gates: Vec::new(),
            failed: BTreeMap::new(),
            seconds: 1.0,
        };
        let mut converged = run_of(&SIX, vec![phase(Vec::from(SIX.map(unchanged)))]);
        converged.preflight_warnings = 1;
        converged.preflight_warned_hosts = 5;
        let mut first = run_of(
            &SIX,
            vec![phase(vec![changed("cp1"), unchanged("cp2"), changed("w1")])],
        );
        first.preflight_warnings = 2;
        first.preflight_warned_hosts = 5;
        let mut stopped = run_of(&SIX, Vec::new());
        stopped.stopped = Some(
            "preflight found errors (nothing was changed):\n  [Swap] on w1: swap is on".into(),
        );
        let mut dry = run_of(&SIX, vec![phase(vec![changed("cp1")])]);
        dry.dry_run = true;
        dry.preflight_warnings = 1;
        dry.preflight_warned_hosts = 1;
        let text = [converged, first, stopped, dry]
            .iter()
            .map(render_report)
            .collect::<Vec<_>>()
            .join("---\n");
        insta::assert_snapshot!(text);
    }

    /// A phase as a user reads it: hosts that did the same are one line; a host whose
    /// changes differ has its own; hosts with nothing to do only with -v.
    #[test]
    fn a_phase_says_hosts_that_did_the_same_once() {
        let mut w3 = changed("w3");
        w3.roles = vec!["kubelet".into()];
        w3.plan.changes[0].target = "/var/lib/kubelet/config.yaml".into();
        let report = PhaseReport {
            phase: "control plane".into(),
            hosts: vec![
                changed("cp1"),
                unchanged("w1"),
                changed("cp2"),
                w3,
                unchanged("w2"),
                changed("cp3"),
            ],
            gates: Vec::new(),
            failed: BTreeMap::from([("lb1".to_string(), "connect: refused".to_string())]),
            seconds: 1.0,
        };
        let text = [
            render_phase(&report, false, false),
            render_phase(&report, false, true),
            render_phase(&report, true, false),
        ]
        .join("---\n");
        insta::assert_snapshot!(text);
    }

    /// A stop that starts with the host's error and adds what to do says the error once:
    /// the host's line points at it.
    #[test]
    fn a_stop_that_carries_the_hosts_error_says_it_once() {
        let mut report = run_of(&["cp1", "cp2"], Vec::new());
        let e = "cp2: kube-apiserver v1.32.5: the SSH connection to cp2 is lost".to_string();
        report.failed.insert("cp2".into(), e.clone());
        report.stopped = Some(format!("{e}; cp2 stays cordoned and the cluster serves"));
        let text = render_report(&report);
        assert_eq!(
            text.matches("the SSH connection to cp2 is lost").count(),
            1,
            "{text}"
        );
        assert!(
            text.contains("cp2 failed: the run stopped at this host (see `stopped:`)"),
            "{text}"
        );
    }
}
