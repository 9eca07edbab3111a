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
use crate::ui::{self, Color, HostProgress, Table};

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

/// Prints the report as text tables or one JSON document on stdout.
pub fn print(_inventory: &Inventory, report: &CheckReport) -> miette::Result<()> {
    if ui::ui().json {
        return crate::ui::emit_json(report);
    }
    let quiet = ui::ui().quiet;
    let mut out = String::new();
    for host in &report.hosts {
        if quiet && host.error.is_none() && host.checks.iter().all(|c| c.level == Level::Ok) {
            continue;
        }
        out.push_str(&format!(
            "{} ({}) [{}]\n",
            ui::paint(&host.name, Color::Bold),
            host.address,
            host.roles.join(", ")
        ));
        if let Some(error) = &host.error {
            out.push_str(&format!(
                "  {} {error}\n\n",
                ui::paint("unreachable:", Color::Red)
            ));
            continue;
        }
        if let Some(f) = &host.facts {
            out.push_str(&format!("  {}\n", summary_line(f)));
        }
        // Passing checks are one line unless -v: what needs attention stands out.
        let verbose = ui::ui().verbose > 0;
        let mut table = Table::new(["  CHECK", "RESULT", "DETAIL"]);
        let mut passed = 0;
        for c in &host.checks {
            if c.level == Level::Ok && !verbose {
                passed += 1;
                continue;
            }
            let level = match c.level {
                Level::Ok => ui::paint("ok", Color::Green),
                Level::Warning => ui::paint("warning", Color::Yellow),
                Level::Error => ui::paint("error", Color::Red),
            };
            table.row([format!("  {}", c.name), level, c.message.clone()]);
        }
        if passed > 0 && !quiet {
            table.row([
                format!("  {passed} more"),
                ui::paint("ok", Color::Green),
                "(-v lists them)".to_string(),
            ]);
        }
        out.push_str(&table.render());
        out.push('\n');
    }
    let s = &report.summary;
    let verdict = if report.passed() {
        ui::paint("passed", Color::Green)
    } else {
        ui::paint("failed", Color::Red)
    };
    out.push_str(&format!(
        "check {verdict}: {} hosts, {} unreachable, {} errors, {} warnings ({:.2}s)\n",
        s.hosts, s.unreachable, s.errors, s.warnings, s.seconds
    ));
    crate::ui::emit(&out);
    Ok(())
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
