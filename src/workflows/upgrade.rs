//! `capstan upgrade apply --to V`: a rolling upgrade, one minor at a time.
//!
//! preflight (every host reachable, etcd healthy, every API server ready, every node Ready)
//! → etcd snapshot in `.capstan/backups/` → control planes one at a time (cordon, drain, the
//! API server's manifest first, gate on its `/readyz` and `/version`, then controller-manager
//! and scheduler, then kubelet and kubectl, gate on the Node, uncordon) → workers in batches
//! of `--max-unavailable` (cordon, drain through the eviction API, kubelet, Ready, uncordon)
//! → addons at the target → the inventory's `kubernetes_version` set to the target.
//!
//! Every step is the engine's converge against the inventory at the target version, so a
//! host already at the target has nothing to do and is skipped: re-running after a failure
//! resumes where it stopped, and re-running after success changes nothing. Each host step
//! is appended to `.capstan/journal.log`.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::Duration;

use super::cluster::{ClusterRun, RunReport, Stop, wait_for};
use super::converge::{self, ConvergeOptions};
use super::init::{self, nodes_ready};
use super::{SessionOptions, gates, snapshot};
use crate::artifacts::cache::Cache;
use crate::inventory::{Inventory, Role, Version};
use crate::pki;
use crate::ssh;

#[derive(Debug, Clone)]
pub struct UpgradeOptions {
    pub to: Version,
    /// Workers upgraded at once.
    pub max_unavailable: usize,
    pub drain_timeout: Duration,
    pub dry_run: bool,
    /// Nodes that may be NotReady at the start.
    pub allow_not_ready: Vec<String>,
}

/// The running cluster's version: `/version` of the API through the endpoint.
pub async fn cluster_version(run: &ClusterRun<'_>, on: usize) -> Result<Version, Stop> {
    let out = run
        .exec(on, &gates::kubectl(None, "version -o json"))
        .await
        .map_err(|e| Stop(format!("cannot ask the API for its version: {e}")))?;
    let v: serde_json::Value = serde_json::from_str(out.stdout_text().trim()).map_err(|e| {
        Stop(format!(
            "the API did not say its version ({e}): {}",
            out.stderr_text().trim()
        ))
    })?;
    let text = v["serverVersion"]["gitVersion"]
        .as_str()
        .unwrap_or_default();
    Version::parse(text).ok_or_else(|| Stop(format!("the API reports version `{text}`")))
}

/// Refuses what the version-skew policy forbids: a downgrade, a skipped minor.
pub fn check_target(current: &Version, to: &Version) -> Result<(), String> {
    if to < current {
        return Err(format!(
            "{to} is older than the cluster ({current}): capstan does not downgrade"
        ));
    }
    if to.major != current.major || to.minor > current.minor + 1 {
        return Err(format!(
            "{current} → {to} skips a minor version; upgrade to v{}.{}.z first",
            current.major,
            current.minor + 1
        ));
    }
    Ok(())
}

pub async fn apply(
    inventory: &Inventory,
    session: &SessionOptions,
    cache: Cache,
    opts: &UpgradeOptions,
) -> miette::Result<RunReport> {
    // Every converge is against the inventory at the target version.
    let target = inventory.at_version(opts.to);
    let prepared = converge::prepare(&target, &ConvergeOptions::default(), cache)?;
    let mut run =
        ClusterRun::connect("upgrade", &target, session, prepared, opts.dry_run, false).await;
    let stopped = steps(&mut run, inventory, opts).await.err();
    let report = run.finish(stopped).await;
    if report.ok() && !opts.dry_run {
        set_inventory_version(inventory, &opts.to)?;
    }
    Ok(report)
}

async fn steps(
    run: &mut ClusterRun<'_>,
    current_inventory: &Inventory,
    opts: &UpgradeOptions,
) -> Result<(), Stop> {
    let inv = run.inventory;
    let all: Vec<usize> = (0..inv.hosts.len()).collect();
    let cps = run.with_role(Role::ControlPlane);
    let workers = run.workers();
    let members = run.etcd_members();
    let to = opts.to.to_string();

    // 1. Preflight: everything reachable and healthy before anything changes.
    init::critical(run, &all, "connect")?;
    init::ensure_pki(run).await?;
    run.probe().await;
    init::critical(run, &all, "probe")?;
    init::same_ca(run)?;
    let first = cps[0];
    let current = cluster_version(run, first).await?;
    check_target(&current, &opts.to).map_err(Stop)?;
    init::etcd_gate(run, members[0], members.len()).await?;
    for &cp in &cps {
        let server = pki::spec::local_api_url(inv, run.host(cp));
        let name = run.host(cp).name.clone();
        init::api_gate(run, cp, Some(server), &format!("the API server of {name}")).await?;
    }
    let nodes: Vec<String> = all
        .iter()
        .filter(|&&i| pki::spec::runs_kubelet(run.host(i)))
        .map(|&i| run.host(i).name.clone())
        .filter(|n| !opts.allow_not_ready.contains(n))
        .collect();
    nodes_ready_any_version(run, first, &nodes).await?;

    // 2. A snapshot before the first control plane changes (a cluster already at the target
    // needs none).
    let pending: Vec<usize> = all
        .iter()
        .copied()
        .filter(|&i| host_pending(run, i))
        .collect();
    if pending.is_empty() {
        run.record_note("upgrade", vec![format!("every host runs {to} already")]);
        return Ok(());
    }
    take_snapshot(run, current_inventory, members[0]).await?;

    // 3. Control planes, one at a time.
    for &cp in &cps {
        if !host_pending(run, cp) {
            continue;
        }
        let name = run.host(cp).name.clone();
        journal(inv, &name, "start", &to);
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
            &format!("{name}: kube-apiserver {to}"),
            cp,
            &["pki", "control-plane"],
            &overrides,
        )
        .await?;
        let server = pki::spec::local_api_url(inv, run.host(cp));
        api_version_gate(run, cp, &server, &to).await?;
        init::api_gate(run, first, None, "the API through the endpoint").await?;
        step(
            run,
            &format!("{name}: controller-manager, scheduler {to}"),
            cp,
            &["control-plane"],
            &BTreeMap::new(),
        )
        .await?;
        step(
            run,
            &format!("{name}: kubelet, kubectl {to}"),
            cp,
            &["containerd", "kubelet"],
            &BTreeMap::new(),
        )
        .await?;
        nodes_ready(run, first, std::slice::from_ref(&name), &to).await?;
        uncordon(run, first, cp).await?;
        journal(inv, &name, "done", &to);
    }

    // 4. Workers, in batches.
    let batch = if workers.len() <= 1 {
        1
    } else {
        opts.max_unavailable.max(1)
    };
    let todo: Vec<usize> = workers
        .iter()
        .copied()
        .filter(|&i| host_pending(run, i))
        .collect();
    for chunk in todo.chunks(batch) {
        let names: Vec<String> = chunk.iter().map(|&i| run.host(i).name.clone()).collect();
        for &w in chunk {
            journal(inv, &run.host(w).name, "start", &to);
            cordon_drain(run, first, w, opts.drain_timeout).await?;
        }
        let failed = run
            .converge(
                &format!("workers {}: kubelet {to}", names.join(", ")),
                chunk,
                &["pki", "containerd", "kubelet"],
                &BTreeMap::new(),
            )
            .await;
        if let Some(&f) = failed.first() {
            return Err(Stop(format!(
                "the upgrade of {} failed; it stays cordoned and the cluster serves. Fix it \
                 and run `capstan upgrade apply --to {to}` again: finished hosts are skipped",
                run.host(f).name
            )));
        }
        nodes_ready(run, first, &names, &to).await?;
        for &w in chunk {
            uncordon(run, first, w).await?;
            journal(inv, &run.host(w).name, "done", &to);
        }
    }

    // 5. The rest at the target: addons (kube-proxy's image), proxies, everything else.
    run.converge("addons", &[first], &["addons"], &BTreeMap::new())
        .await;
    // Every role but the addons (done above), with the hosts' PKI files.
    let everything: Vec<&str> = std::iter::once(converge::PKI_ROLE)
        .chain(converge::ORDER.iter().copied().filter(|r| *r != "addons"))
        .collect();
    let failed = run
        .converge(
            "every host at the target",
            &all,
            &everything,
            &BTreeMap::new(),
        )
        .await;
    init::stop_if_critical(run, &failed, "final converge")?;
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

/// The host still has something to change at the target version.
fn host_pending(run: &ClusterRun<'_>, i: usize) -> bool {
    let inv = run.inventory;
    let host = run.host(i);
    let Some(probed) = run.hosts[i].probed.as_ref() else {
        return true;
    };
    let Ok(roles) = converge::roles_for(inv, host, &run.prepared, &[]) else {
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
    title: &str,
    host: usize,
    roles: &[&str],
    overrides: &BTreeMap<usize, BTreeMap<String, String>>,
) -> Result<(), Stop> {
    let failed = run.converge(title, &[host], roles, overrides).await;
    if failed.is_empty() {
        Ok(())
    } else {
        let name = &run.host(host).name;
        Err(Stop(format!(
            "{title} failed; {name} stays cordoned and the cluster serves. Fix it and run \
             `capstan upgrade apply` again: finished hosts are skipped, {name} is retried"
        )))
    }
}

/// The image a component runs at the inventory's (current) version.
fn image_of(inv: &Inventory, component: &str) -> Result<String, Stop> {
    let images = crate::artifacts::catalog::images(
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
            snap.total_keys,
            snap.revision
        )],
    );
    Ok(())
}

/// Every listed node Ready, whatever its version (the preflight of an upgrade).
async fn nodes_ready_any_version(
    run: &mut ClusterRun<'_>,
    on: usize,
    expected: &[String],
) -> Result<(), Stop> {
    let what = format!("{} nodes Ready", expected.len());
    let run_ref = &*run;
    let check = || async move {
        let out = run_ref.exec(on, &gates::nodes_script()).await?;
        let nodes = gates::parse_nodes(&out.stdout_text())?;
        let bad: Vec<&String> = expected
            .iter()
            .filter(|n| !nodes.get(*n).is_some_and(|s| s.ready))
            .collect();
        if bad.is_empty() {
            Ok(true)
        } else {
            Err(format!(
                "not Ready: {}",
                bad.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
    };
    let result = wait_for(run.dry_run, Duration::from_secs(30), check).await;
    run.record_gate(&what, result)
}

/// That host's API server is ready and reports the target version.
async fn api_version_gate(
    run: &mut ClusterRun<'_>,
    on: usize,
    server: &str,
    to: &str,
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
    let result = wait_for(run.dry_run, Duration::from_secs(120), check).await;
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
    run.record_gate(&format!("{name} cordoned and drained"), Ok(Some(0.0)))
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

/// Appends one line to `.capstan/journal.log`: when, which host, which step, which target.
fn journal(inv: &Inventory, host: &str, step: &str, to: &str) {
    let path = inv.state_dir().join("journal.log");
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
    {
        let _ = writeln!(f, "{now}\tupgrade {to}\t{host}\t{step}");
    }
}

/// Sets `kubernetes_version:` in the inventory file to the version the cluster now runs
/// (one line changed; comments and everything else stay).
fn set_inventory_version(inv: &Inventory, to: &Version) -> miette::Result<()> {
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
    crate::fsutil::write_atomic(path, out.as_bytes(), 0o644)
        .map_err(|e| miette::miette!("cannot write {}: {e}", path.display()))?;
    crate::ui::emit(&format!(
        "{}: kubernetes_version is now {to}\n",
        path.display()
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).expect("version")
    }

    #[test]
    fn targets_follow_the_skew_policy() {
        assert!(check_target(&v("v1.31.9"), &v("v1.32.4")).is_ok());
        assert!(check_target(&v("v1.32.4"), &v("v1.32.5")).is_ok());
        assert!(check_target(&v("v1.32.4"), &v("v1.32.4")).is_ok());
        let skip = check_target(&v("v1.31.9"), &v("v1.33.1")).unwrap_err();
        assert!(skip.contains("upgrade to v1.32.z first"), "{skip}");
        let down = check_target(&v("v1.32.5"), &v("v1.32.4")).unwrap_err();
        assert!(down.contains("does not downgrade"), "{down}");
    }
}
