//! `check`: connect to every host, gather facts with one probe each, run preflight.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::{SessionOptions, target};
use crate::facts::{self, Facts, ProbeRequest};
use crate::inventory::Inventory;
use crate::preflight::{self, HostReport, Level, PreflightInput};
use crate::ssh;
use crate::ui::{self, Color, HostProgress};

#[derive(Debug, Serialize)]
pub struct CheckReport {
    pub cluster: String,
    pub hosts: Vec<HostResult>,
    pub summary: Summary,
}

#[derive(Debug, Serialize)]
pub struct HostResult {
    pub name: String,
    pub address: String,
    pub roles: Vec<String>,
    /// Why the host could not be checked (connection, authentication, probe).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub facts: Option<Facts>,
    pub checks: Vec<preflight::Check>,
}

#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub hosts: usize,
    pub unreachable: usize,
    pub errors: usize,
    pub warnings: usize,
    pub seconds: f64,
}

impl CheckReport {
    pub fn passed(&self) -> bool {
        self.summary.unreachable == 0 && self.summary.errors == 0
    }

    pub fn exit_code(&self) -> ExitCode {
        if self.passed() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(crate::error::EXIT_FAILED)
        }
    }
}

fn now_epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// Connects to every host, probes it once, and evaluates preflight on what answered.
pub async fn run(
    inventory: &Inventory,
    session: &SessionOptions,
    ignore: &[String],
) -> miette::Result<CheckReport> {
    let started = Instant::now();
    let targets: Vec<ssh::Target> = inventory.hosts.iter().map(target).collect();
    let progress = HostProgress::new("checking", targets.iter().map(|t| &t.name));

    let request = ProbeRequest {
        paths: Vec::new(),
        units: ["containerd.service", "kubelet.service", "etcd.service"]
            .map(String::from)
            .to_vec(),
        ..ProbeRequest::default()
    };
    let script = facts::probe_script(&request)
        .map_err(|e| miette::miette!("cannot build the facts probe: {e}"))?;
    // Each host is probed as soon as its own connection is up.
    let results: Vec<Result<(Facts, f64), String>> =
        ssh::for_each_host(&targets, &session.ssh, session.forks, |i, conn| {
            let host = &inventory.hosts[i];
            let script = &script;
            let progress = &progress;
            async move {
                let result = match conn {
                    Err(e) => Err(e.to_string()),
                    Ok(conn) => {
                        let sent = now_epoch();
                        let out = conn.exec(script).await;
                        let received = now_epoch();
                        conn.close().await;
                        match out {
                            Err(e) => Err(e.to_string()),
                            Ok(out) if out.exit_status != 0 => Err(format!(
                                "the facts probe exited with status {}: {}",
                                out.exit_status,
                                String::from_utf8_lossy(&out.stderr).trim()
                            )),
                            // The host's clock is compared with ours at the midpoint of the
                            // round trip.
                            Ok(out) => facts::parse(&String::from_utf8_lossy(&out.stdout))
                                .map(|f| (f, f64::midpoint(sent, received)))
                                .map_err(|e| format!("facts probe: {e}")),
                        }
                    }
                };
                progress.host_done(&host.name);
                result
            }
        })
        .await;
    progress.finish();

    let inputs: Vec<PreflightInput> = inventory
        .hosts
        .iter()
        .zip(&results)
        .filter_map(|(host, r)| {
            r.as_ref().ok().map(|(facts, at)| PreflightInput {
                name: host.name.clone(),
                roles: host.roles.clone(),
                facts: facts.clone(),
                received_at: Some(*at),
            })
        })
        .collect();
    let settings = preflight::Settings::of(inventory);
    let mut reports: BTreeMap<String, HostReport> =
        preflight::evaluate(&inputs, now_epoch(), ignore, &settings)
            .into_iter()
            .map(|r| (r.host.clone(), r))
            .collect();

    let mut summary = Summary {
        hosts: inventory.hosts.len(),
        ..Summary::default()
    };
    let hosts = inventory
        .hosts
        .iter()
        .zip(results)
        .map(|(host, result)| {
            let (facts, error) = match result {
                Ok((f, _)) => (Some(f), None),
                Err(e) => {
                    summary.unreachable += 1;
                    (None, Some(e))
                }
            };
            let checks = reports
                .remove(&host.name)
                .map(|r| r.checks)
                .unwrap_or_default();
            for c in &checks {
                match c.level {
                    Level::Error => summary.errors += 1,
                    Level::Warning => summary.warnings += 1,
                    Level::Ok => {}
                }
            }
            HostResult {
                name: host.name.clone(),
                address: host.address.clone(),
                roles: host.roles.iter().map(|r| r.as_str().to_string()).collect(),
                error,
                facts,
                checks,
            }
        })
        .collect();
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(CheckReport {
        cluster: inventory.cluster.name.clone(),
        hosts,
        summary,
    })
}

/// Prints the report as text or one JSON document on stdout.
pub fn print(_inventory: &Inventory, report: &CheckReport) -> miette::Result<()> {
    if ui::ui().json {
        return crate::ui::emit_json(report);
    }
    let u = ui::ui();
    crate::ui::emit(&render(report, u.verbose > 0, u.quiet));
    Ok(())
}

/// The text report: what the hosts are (hosts that are alike said once; each host with
/// its address and roles under -v), the unreachable ones each with why, then every finding
/// once with the hosts that share it, errors first, then the verdict.
fn render(report: &CheckReport, verbose: bool, quiet: bool) -> String {
    let mut out = String::new();
    let attention =
        |h: &HostResult| h.error.is_some() || h.checks.iter().any(|c| c.level != Level::Ok);
    let shown = report.hosts.iter().filter(|h| !quiet || attention(h));
    if verbose {
        for host in shown {
            out.push_str(&format!(
                "{} ({}) [{}]\n",
                ui::paint(&host.name, Color::Bold),
                host.address,
                host.roles.join(", ")
            ));
            match (&host.error, &host.facts) {
                (Some(error), _) => out.push_str(&format!(
                    "  {} {error}\n",
                    ui::paint("unreachable:", Color::Red)
                )),
                (None, Some(f)) => out.push_str(&format!("  {}\n", summary_line(f))),
                (None, None) => {}
            }
        }
    } else {
        let shown: Vec<&HostResult> = shown.collect();
        let alike = ui::group_hosts(
            shown
                .iter()
                .filter_map(|h| Some((h.name.as_str(), summary_line(h.facts.as_ref()?)))),
        );
        for (hosts, line) in alike {
            out.push_str(&format!(
                "{}: {line}\n",
                // Named, not counted: this is where a user sees which hosts were read.
                ui::paint(&hosts.join(", "), Color::Bold)
            ));
        }
        for host in shown.iter().filter(|h| h.error.is_some()) {
            out.push_str(&format!(
                "{} ({}) {} {}\n",
                ui::paint(&host.name, Color::Bold),
                host.address,
                ui::paint("unreachable:", Color::Red),
                host.error.as_deref().unwrap_or_default()
            ));
        }
    }
    let checked: Vec<HostReport> = report
        .hosts
        .iter()
        .filter(|h| h.error.is_none())
        .map(|h| HostReport {
            host: h.name.clone(),
            checks: h.checks.clone(),
        })
        .collect();
    // Passing checks are one line unless -v: what needs attention stands out.
    let levels: &[Level] = if verbose {
        &[Level::Error, Level::Warning, Level::Ok]
    } else {
        &[Level::Error, Level::Warning]
    };
    let mut findings = findings(&checked, levels);
    if !verbose && !quiet {
        let passed: std::collections::BTreeSet<&str> = checked
            .iter()
            .flat_map(|r| &r.checks)
            .filter(|c| c.level == Level::Ok)
            .map(|c| c.name)
            .collect();
        let on: Vec<&str> = checked
            .iter()
            .filter(|r| r.checks.iter().any(|c| c.level == Level::Ok))
            .map(|r| r.host.as_str())
            .collect();
        if !passed.is_empty() {
            findings.push_str(&format!(
                "{} {} more {} on {} (-v lists them)\n",
                ui::paint("ok", Color::Green),
                passed.len(),
                if passed.len() == 1 { "check" } else { "checks" },
                host_list(&on, checked.len())
            ));
        }
    }
    if !findings.is_empty() {
        out.push('\n');
        out.push_str(&findings);
    }
    let s = &report.summary;
    let verdict = if report.passed() {
        ui::paint("passed", Color::Green)
    } else {
        ui::paint("failed", Color::Red)
    };
    out.push_str(&format!(
        "check {verdict}: {}, {} unreachable, {}, {} ({:.2}s)\n",
        ui::count(s.hosts, "host"),
        s.unreachable,
        ui::count(s.errors, "error"),
        ui::count(s.warnings, "warning"),
        s.seconds
    ));
    out
}

/// Preflight findings at `levels`, each said once with the hosts that share it:
/// `warning [Cgroups] on cp1, w1, w2: …`. `check`, `plan` and every workflow say them so.
pub(crate) fn findings(reports: &[HostReport], levels: &[Level]) -> String {
    let mut out = String::new();
    for &level in levels {
        let color = match level {
            Level::Ok => Color::Green,
            Level::Warning => Color::Yellow,
            Level::Error => Color::Red,
        };
        for (c, hosts) in preflight::grouped(reports, level) {
            out.push_str(&format!(
                "{} [{}] on {}: {}\n",
                ui::paint(&level.to_string(), color),
                c.name,
                host_list(&hosts, reports.len()),
                c.message
            ));
        }
    }
    out
}

/// The hosts a finding is on: their names, or "all N hosts" when it is on every host
/// checked (a 50-host list says nothing a count does not).
pub(crate) fn host_list(hosts: &[&str], checked: usize) -> String {
    if hosts.len() == checked && checked > 2 {
        format!("all {checked} hosts")
    } else {
        hosts.join(", ")
    }
}

/// One line of what a host is: OS, arch, size, cgroups, runtime and Kubernetes versions.
fn summary_line(f: &Facts) -> String {
    let version = |c: facts::Component| {
        f.component(c)
            .and_then(|i| i.version.clone())
            .unwrap_or_else(|| "-".to_string())
    };
    format!(
        "{}, {} {}, kernel {}, {} CPUs, {:.1} GiB, cgroup {:?}{}; containerd {}, kubelet {}, etcd {}",
        f.os.pretty_name,
        f.arch.as_str(),
        f.machine,
        f.kernel,
        f.cpus,
        gib(f.memory_bytes),
        f.cgroup.version,
        f.container
            .as_deref()
            .map(|c| format!(", in {c}"))
            .unwrap_or_default(),
        version(facts::Component::Containerd),
        version(facts::Component::Kubelet),
        version(facts::Component::Etcd),
    )
}

#[allow(clippy::cast_precision_loss)] // a display value, to one decimal
fn gib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 30)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Role;

    const NOW: f64 = 1_795_380_065.0;

    fn facts(fixture: &str) -> Facts {
        let mut f = facts::parse(fixture).expect("fixture parses");
        f.clock_epoch = NOW;
        f
    }

    /// Three lab hosts alike and a stopped one, as `check` prints them: each finding
    /// shared by several hosts once, with the hosts; passing checks as one line.
    #[test]
    fn findings_are_said_once_with_their_hosts() {
        let lab = include_str!("../../tests/fixtures/facts/debian12-amd64-lab-systemd.txt");
        let hosts = [
            ("cp1", Role::ControlPlane),
            ("w1", Role::Worker),
            ("w2", Role::Worker),
        ];
        // Hosts of one image, each with its own name and machine-id; w2 has swap on.
        let host_facts = |i: usize, name: &str| {
            let mut f = facts(lab);
            f.hostname = name.into();
            f.machine_id = Some(format!("{i:032x}"));
            if name == "w2" {
                f.swap.total_bytes = 1 << 30;
                f.swap.active.push(facts::SwapArea {
                    name: "/swap.img".into(),
                    kind: "file".into(),
                    size_bytes: 1 << 30,
                    used_bytes: 0,
                });
            }
            f
        };
        let inputs: Vec<PreflightInput> = hosts
            .iter()
            .enumerate()
            .map(|(i, (name, role))| PreflightInput {
                name: (*name).into(),
                roles: [*role].into_iter().collect(),
                facts: host_facts(i, name),
                received_at: None,
            })
            .collect();
        let settings = preflight::Settings {
            etcd_on_control_planes: true,
            dns_upstream: false,
            conntrack_set: false,
        };
        let mut reports = preflight::evaluate(&inputs, NOW, &[], &settings);
        let mut summary = Summary {
            hosts: 4,
            unreachable: 1,
            seconds: 0.5,
            ..Summary::default()
        };
        let mut results: Vec<HostResult> = hosts
            .iter()
            .zip(reports.drain(..))
            .enumerate()
            .map(|(i, ((name, role), r))| {
                for c in &r.checks {
                    match c.level {
                        Level::Error => summary.errors += 1,
                        Level::Warning => summary.warnings += 1,
                        Level::Ok => {}
                    }
                }
                HostResult {
                    name: (*name).into(),
                    address: format!("10.0.0.{}", 11 + i),
                    roles: vec![role.as_str().into()],
                    error: None,
                    facts: Some(host_facts(i, name)),
                    checks: r.checks,
                }
            })
            .collect();
        results.push(HostResult {
            name: "w3".into(),
            address: "10.0.0.14".into(),
            roles: vec!["worker".into()],
            error: Some("cannot connect to 10.0.0.14:22: connection refused".into()),
            facts: None,
            checks: Vec::new(),
        });
        let report = CheckReport {
            cluster: "demo".into(),
            hosts: results,
            summary,
        };
        let text = render(&report, false, false);
        assert!(
            report.summary.warnings > 1,
            "the fixture gives every host the same warnings: {text}"
        );
        // Each warning once, however many hosts share it.
        for line in text.lines().filter(|l| l.starts_with("warning [")) {
            assert_eq!(text.matches(line).count(), 1, "{text}");
        }
        insta::assert_snapshot!(text);
        insta::assert_snapshot!("verbose", render(&report, true, false));
    }
}
