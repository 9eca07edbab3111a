//! `capstan init`: the whole inventory into a cluster, phase by phase with health gates.
//!
//! preflight → PKI ensured (adopted from the cluster when the local copy is missing) →
//! `pki` + `common` + `containerd` everywhere → etcd members, all at once → gate: every
//! member healthy → load balancers / local proxies → first control plane → gate: `/readyz`
//! through the API endpoint → other control planes one at a time, each gated → kubelets on
//! workers → addons → gates: every node Ready, the addons rolled out and the cluster DNS
//! answering → the operator's admin.conf.
//!
//! Every phase plans against the one probe taken at the start, updated as phases apply; a
//! converged cluster costs one handshake and one probe per host, plus the gates.

use std::collections::BTreeMap;
use std::time::Duration;

use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::cluster::{ClusterRun, RunReport, Stop, wait_for};
use super::converge::{self, ConvergeOptions};
use super::{SessionOptions, certs, gates, membership, node_labels};
use crate::artifacts::cache::Cache;
use crate::inventory::{EtcdTopology, Inventory, Role};
use crate::pki::{self, Store, adopt};
use crate::preflight::{self, Level, PreflightInput};
use crate::ui;

/// What the run is for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Mode {
    /// Build the cluster, or converge it again; refuses hosts that must be joined.
    #[default]
    Init,
    /// Add the hosts of the inventory that are not in the cluster yet (only these, when
    /// named).
    Join { hosts: Vec<String> },
}

#[derive(Debug, Clone)]
pub struct InitOptions {
    pub mode: Mode,
    pub dry_run: bool,
    pub verify: bool,
    /// `--ignore-preflight-errors` names.
    pub ignore_preflight: Vec<String>,
    /// How long the addons gate waits.
    pub addons_timeout: Duration,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            mode: Mode::default(),
            dry_run: false,
            verify: false,
            ignore_preflight: Vec::new(),
            addons_timeout: super::addons_gate::ADDONS_TIMEOUT,
        }
    }
}

/// How long gates wait.
const ETCD_TIMEOUT: Duration = Duration::from_secs(90);
const API_TIMEOUT: Duration = Duration::from_secs(120);
const NODES_TIMEOUT: Duration = Duration::from_secs(120);

pub async fn run(
    inventory: &Inventory,
    session: &SessionOptions,
    cache: Cache,
    opts: &InitOptions,
) -> miette::Result<RunReport> {
    let prepared = converge::prepare(inventory, &ConvergeOptions::default(), cache)?;
    let command = match opts.mode {
        Mode::Init => "init",
        Mode::Join { .. } => "join",
    };
    let mut run = ClusterRun::connect(
        command,
        inventory,
        session,
        prepared,
        opts.dry_run,
        opts.verify,
    )
    .await;
    let stopped = phases(&mut run, opts).await.err();
    Ok(run.finish(stopped).await)
}

async fn phases(run: &mut ClusterRun<'_>, opts: &InitOptions) -> Result<(), Stop> {
    let inv = run.inventory;
    let all: Vec<usize> = (0..inv.hosts.len()).collect();
    let cps = run.with_role(Role::ControlPlane);
    let members = run.etcd_members();
    let workers = run.workers();

    // Control planes and etcd members are the cluster: without one of them there is none.
    critical(run, &cps, "connect")?;
    critical(run, &members, "connect")?;

    ensure_pki(run).await?;
    run.probe().await;
    critical(run, &cps, "probe")?;
    critical(run, &members, "probe")?;
    same_ca(run)?;
    preflight_gate(run, &opts.ignore_preflight)?;

    // Who is in the cluster already: etcd's member list, the API's nodes. Decided before
    // any change, so that a refusal touches nothing.
    let etcd = membership::etcd(run, &members).await?;
    let joining: Vec<usize> = members
        .iter()
        .copied()
        .filter(|&i| {
            etcd.as_ref()
                .is_some_and(|e| !e.has(run.inventory, run.host(i)))
        })
        .collect();
    let skipped = match &opts.mode {
        Mode::Init => {
            if !joining.is_empty() {
                return Err(Stop(format!(
                    "{} {} in the inventory but not a member of the running etcd cluster:                      `capstan join` adds {}. Nothing was changed",
                    names(run, &joining),
                    if joining.len() == 1 { "is" } else { "are" },
                    if joining.len() == 1 { "it" } else { "them" },
                )));
            }
            Vec::new()
        }
        Mode::Join { hosts } => {
            membership::check_join(run, etcd.as_ref(), &joining, &cps, hosts).await?
        }
    };
    let keep = |list: &[usize]| -> Vec<usize> {
        list.iter()
            .copied()
            .filter(|i| !skipped.contains(i))
            .collect()
    };
    let all = keep(&all);
    let cps = keep(&cps);
    let members = keep(&members);
    let workers = keep(&workers);
    let joining = keep(&joining);

    let none = BTreeMap::new();
    let failed = run
        .converge(
            "hosts: certificates, base system, containerd",
            &all,
            &["pki", "common", "containerd"],
            &none,
        )
        .await;
    stop_if_critical(run, &failed, "hosts")?;

    match etcd {
        None => {
            // A new cluster: every member at once, state `new`.
            let failed = run.converge("etcd", &members, &["etcd"], &none).await;
            stop_if_critical(run, &failed, "etcd")?;
            etcd_gate(run, members[0], members.len()).await?;
        }
        Some(mut current) => {
            let settled: Vec<usize> = members
                .iter()
                .copied()
                .filter(|i| !joining.contains(i))
                .collect();
            let failed = run.converge("etcd", &settled, &["etcd"], &none).await;
            stop_if_critical(run, &failed, "etcd")?;
            // New members one at a time: `member add` on a healthy member, then the new one
            // starts with state `existing` and the members of that moment.
            for &new in &joining {
                let overrides = membership::add_member(run, &mut current, new).await?;
                let name = run.host(new).name.clone();
                let failed = run
                    .converge(
                        &format!("etcd member {name} joins"),
                        &[new],
                        &["etcd"],
                        &overrides,
                    )
                    .await;
                stop_if_critical(run, &failed, "etcd")?;
                etcd_gate(run, current.asked, current.count()).await?;
            }
        }
    }

    let failed = run
        .converge(
            "API endpoint: load balancers and local proxies",
            &all,
            &["lb-haproxy", "lb-nginx", "local-proxy"],
            &none,
        )
        .await;
    stop_if_critical(run, &failed, "API endpoint")?;

    let first = cps[0];
    for (n, &cp) in cps.iter().enumerate() {
        let name = &run.host(cp).name;
        let failed = run
            .converge(
                &format!("control plane {name}"),
                &[cp],
                &["kubelet", "control-plane"],
                &none,
            )
            .await;
        stop_if_critical(run, &failed, "control plane")?;
        if n == 0 {
            // The first one proves the endpoint: LB or local proxy, certs, etcd.
            api_gate(run, first, None, "the API through the endpoint").await?;
        } else {
            let server = pki::spec::local_api_url(inv, run.host(cp));
            api_gate(run, cp, Some(server), &format!("the API server of {name}")).await?;
        }
    }

    // A worker that fails is reported; the cluster goes on without it.
    run.converge("workers", &workers, &["kubelet"], &none).await;

    let failed = run.converge("addons", &[first], &["addons"], &none).await;
    stop_if_critical(run, &failed, "addons")?;

    let (nodes, listed) = nodes_gate(run, first).await?;
    // Ready nodes are not yet a working cluster: kube-proxy, flannel and CoreDNS rolled out
    // and the cluster DNS answering through its Service.
    super::addons_gate::gate(run, first, nodes.len(), opts.addons_timeout).await?;
    node_labels::apply(run, first, &nodes, listed).await?;
    write_admin_conf(run)?;
    Ok(())
}

fn names(run: &ClusterRun<'_>, hosts: &[usize]) -> String {
    hosts
        .iter()
        .map(|&i| run.host(i).name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Stops when one of `hosts` is out of the run.
pub(crate) fn critical(run: &ClusterRun<'_>, hosts: &[usize], step: &str) -> Result<(), Stop> {
    let down: Vec<String> = hosts
        .iter()
        .filter(|&&i| !run.alive(i))
        .map(|&i| {
            format!(
                "{} ({})",
                run.host(i).name,
                run.hosts[i].error.as_deref().unwrap_or("not connected")
            )
        })
        .collect();
    if down.is_empty() {
        Ok(())
    } else {
        Err(Stop(format!(
            "{step}: control planes and etcd members must all be reachable: {}",
            down.join("; ")
        )))
    }
}

pub(crate) fn stop_if_critical(
    run: &ClusterRun<'_>,
    failed: &[usize],
    phase: &str,
) -> Result<(), Stop> {
    let critical: Vec<&str> = failed
        .iter()
        .map(|&i| run.host(i))
        .filter(|h| {
            h.has_role(Role::ControlPlane)
                || h.has_role(Role::Etcd)
                || h.has_role(Role::LoadBalancer)
        })
        .map(|h| h.name.as_str())
        .collect();
    if critical.is_empty() {
        Ok(())
    } else {
        Err(Stop(format!(
            "{phase} failed on {}: the cluster cannot be built without it; fix it and run init again",
            critical.join(", ")
        )))
    }
}

/// The local PKI, completed: adopted from the cluster when missing locally, then every
/// missing or expiring certificate issued. Saved unless this is a dry run.
pub(crate) async fn ensure_pki(run: &mut ClusterRun<'_>) -> Result<(), Stop> {
    let inv = run.inventory;
    let store = Store::for_inventory(inv);
    let mut state = store.load().map_err(|e| Stop(e.to_string()))?;
    if state.cas.is_empty() {
        for role in [Role::ControlPlane, Role::Etcd] {
            if role == Role::Etcd && inv.cluster.etcd_topology != EtcdTopology::External {
                continue;
            }
            let Some(i) =
                (0..inv.hosts.len()).find(|&i| run.host(i).has_role(role) && run.alive(i))
            else {
                continue;
            };
            let out = run
                .exec(i, &certs::fetch_script())
                .await
                .map_err(|e| Stop(format!("cannot read the cluster's CAs: {e}")))?;
            let mut files = certs::parse_fetch(&out.stdout_text());
            if role == Role::Etcd {
                files.retain(|k, _| k.starts_with("etcd/"));
            }
            let adopted = adopt::adopt(&mut state, &run.host(i).name, &files, store.root())
                .map_err(|e| Stop(e.to_string()))?;
            for a in adopted {
                ui::emit(&format!(
                    "adopted {} from {} ({})\n",
                    a.what, a.host, a.fingerprint
                ));
            }
        }
    }
    let now = OffsetDateTime::now_utc();
    let plan = pki::ensure(inv, &mut state, now).map_err(|e| Stop(e.to_string()))?;
    if plan.has_changes() && !run.dry_run {
        store.save(&state).map_err(|e| Stop(e.to_string()))?;
    }
    run.set_pki(state)
}

/// Refuses to touch a cluster whose CA is not the local one (before any change).
pub(crate) fn same_ca(run: &ClusterRun<'_>) -> Result<(), Stop> {
    let Some(state) = run.prepared.pki.as_ref() else {
        return Ok(());
    };
    for kind in pki::CaKind::ALL {
        let Some(ca) = state.cas.get(&kind) else {
            continue;
        };
        let path = format!("{}/{}.crt", pki::hosts::PKI_DIR, kind.id());
        let local = hex::encode(Sha256::digest(&ca.cert_pem));
        for (i, slot) in run.hosts.iter().enumerate() {
            let Some(remote) = slot
                .probed
                .as_ref()
                .and_then(|p| p.state.paths.get(&path))
                .and_then(|p| p.sha256.as_deref())
            else {
                continue;
            };
            if remote != local {
                return Err(Stop(format!(
                    "{host} has another {label} in {path} than the local PKI in {dir}: this inventory \
                     does not belong to that cluster, or its PKI was replaced. Nothing was changed. \
                     Point -i at the inventory of that cluster, or move {dir} away to adopt the \
                     cluster's CA",
                    host = run.host(i).name,
                    label = kind.label(),
                    dir = Store::for_inventory(run.inventory).root().display(),
                )));
            }
        }
    }
    Ok(())
}

/// kubeadm's preflight on the probe's facts; errors stop the run before any change.
pub(crate) fn preflight_gate(run: &mut ClusterRun<'_>, ignore: &[String]) -> Result<(), Stop> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default();
    let inputs: Vec<PreflightInput> = run
        .hosts
        .iter()
        .enumerate()
        .filter_map(|(i, slot)| {
            let host = run.host(i);
            slot.probed.as_ref().map(|p| PreflightInput {
                name: host.name.clone(),
                roles: host.roles.clone(),
                facts: p.facts.clone(),
                received_at: None,
            })
        })
        .collect();
    let reports = preflight::evaluate(
        &inputs,
        now,
        ignore,
        &preflight::Settings::of(run.inventory),
    );
    // A finding shared by several hosts is said once, with the hosts.
    let errors: Vec<String> = preflight::grouped(&reports, Level::Error)
        .into_iter()
        .map(|(c, hosts)| {
            format!(
                "[{}] on {}: {}",
                c.name,
                super::check::host_list(&hosts, reports.len()),
                c.message
            )
        })
        .collect();
    let warnings = preflight::grouped(&reports, Level::Warning);
    run.preflight_warnings = warnings.len();
    run.preflight_warned_hosts = warnings
        .iter()
        .flat_map(|(_, hosts)| hosts.iter().copied())
        .collect::<std::collections::BTreeSet<&str>>()
        .len();
    if !ui::ui().quiet && !ui::ui().json {
        ui::emit(&super::check::findings(&reports, &[Level::Warning]));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Stop(format!(
            "preflight found errors (nothing was changed):\n  {}\n  fix them, or skip named checks with --ignore-preflight-errors NAME",
            errors.join("\n  ")
        )))
    }
}

pub(crate) async fn etcd_gate(
    run: &mut ClusterRun<'_>,
    on: usize,
    expected: usize,
) -> Result<(), Stop> {
    let what = format!("etcd: {expected} members healthy");
    let run_ref = &*run;
    let check = || etcd_healthy(run_ref, on, expected);
    let result = wait_for(run_ref, on, ETCD_TIMEOUT, check).await;
    run.record_gate(&what, result)
}

/// Every member healthy as the cluster sees it (`endpoint health --cluster`), asked on host
/// `on`: `Ok(true)` when all `expected` members answer healthy, an error naming the
/// unhealthy ones.
pub(crate) async fn etcd_healthy(
    run: &ClusterRun<'_>,
    on: usize,
    expected: usize,
) -> Result<bool, String> {
    let out = run.exec(on, &gates::etcd_health_script()).await?;
    let health = gates::parse_etcd_health(&out.stdout_text())
        .map_err(|e| format!("{e} {}", out.stderr_text().trim()))?;
    let bad: Vec<String> = health
        .iter()
        .filter_map(|(ep, h)| h.as_ref().err().map(|e| format!("{ep}: {e}")))
        .collect();
    if !bad.is_empty() {
        return Err(bad.join("; "));
    }
    Ok(health.len() == expected)
}

pub(crate) async fn api_gate(
    run: &mut ClusterRun<'_>,
    on: usize,
    server: Option<String>,
    what: &str,
) -> Result<(), Stop> {
    api_gate_within(run, on, server, what, API_TIMEOUT).await
}

/// [`api_gate`] waiting at most `timeout`.
pub(crate) async fn api_gate_within(
    run: &mut ClusterRun<'_>,
    on: usize,
    server: Option<String>,
    what: &str,
    timeout: Duration,
) -> Result<(), Stop> {
    let what = format!("{what} ready (/readyz)");
    let run_ref = &*run;
    let script = gates::readyz_script(server.as_deref());
    let check = || {
        let script = script.clone();
        async move {
            let out = run_ref.exec(on, &script).await?;
            if gates::readyz_ok(&out.stdout_text()) {
                Ok(true)
            } else {
                Err(format!(
                    "{}{}",
                    out.stdout_text().trim(),
                    out.stderr_text().trim()
                ))
            }
        }
    };
    let result = wait_for(run_ref, on, timeout, check).await;
    run.record_gate(&what, result)
}

/// Every node that is still in the run is Ready with the cluster's kubelet version.
/// Every live host that runs a kubelet has its Node Ready at the inventory's version.
/// Returns those hosts, and the Nodes as the API listed them last (none on a dry run).
async fn nodes_gate(run: &mut ClusterRun<'_>, on: usize) -> Result<NodeList, Stop> {
    let version = run.inventory.cluster.kubernetes_version.to_string();
    let hosts: Vec<usize> = (0..run.inventory.hosts.len())
        .filter(|&i| run.alive(i) && pki::spec::runs_kubelet(run.host(i)))
        .collect();
    let expected: Vec<String> = hosts.iter().map(|&i| run.host(i).name.clone()).collect();
    let listed = nodes_ready(run, on, &expected, Some(&version), NODES_TIMEOUT).await?;
    Ok((hosts, listed))
}

type NodeList = (Vec<usize>, Option<BTreeMap<String, gates::NodeStatus>>);

/// `expected` nodes Ready (with kubelet `version` when given), asked on host `on`, within
/// `timeout`. Returns the Nodes as the API listed them when the gate passed (`None` on a
/// dry run, which waits for nothing).
pub(crate) async fn nodes_ready(
    run: &mut ClusterRun<'_>,
    on: usize,
    expected: &[String],
    version: Option<&str>,
    timeout: Duration,
) -> Result<Option<BTreeMap<String, gates::NodeStatus>>, Stop> {
    let who = if expected.len() == 1 {
        format!("node {}", expected[0])
    } else {
        format!("{} nodes", expected.len())
    };
    let what = match version {
        Some(v) => format!("{who} Ready with kubelet {v}"),
        None => format!("{who} Ready"),
    };
    let run_ref = &*run;
    let last = std::sync::Mutex::new(None);
    let last_ref = &last;
    let check = || async move {
        let out = run_ref.exec(on, &gates::nodes_script()).await?;
        let nodes = gates::parse_nodes(&out.stdout_text())
            .map_err(|e| format!("{e} {}", out.stderr_text().trim()))?;
        let waiting: Vec<String> = expected
            .iter()
            .filter_map(|n| match nodes.get(n) {
                None => Some(format!("{n} not registered")),
                Some(s) if !s.ready => Some(format!("{n} not Ready")),
                Some(s) if version.is_some_and(|v| s.kubelet_version != v) => {
                    Some(format!("{n} runs kubelet {}", s.kubelet_version))
                }
                Some(_) => None,
            })
            .collect();
        if waiting.is_empty() {
            if let Ok(mut l) = last_ref.lock() {
                *l = Some(nodes);
            }
            Ok(true)
        } else {
            Err(waiting.join(", "))
        }
    };
    let result = wait_for(run_ref, on, timeout, check).await;
    run.record_gate(&what, result)?;
    Ok(last.into_inner().ok().flatten())
}

/// The operator's kubeconfig beside the inventory, and how to use it.
fn write_admin_conf(run: &ClusterRun<'_>) -> Result<(), Stop> {
    let Some(state) = run.prepared.pki.as_ref() else {
        return Ok(());
    };
    let Some(conf) = state.kubeconfigs.get("admin.conf") else {
        return Err(Stop("the local PKI has no admin.conf".into()));
    };
    let path = run.inventory.state_dir().join("admin.conf");
    if run.dry_run {
        return Ok(());
    }
    crate::fsutil::write_atomic(&path, conf, 0o600)
        .map_err(|e| Stop(format!("cannot write {}: {e}", path.display())))?;
    if !ui::ui().quiet && !ui::ui().json {
        ui::emit(&format!(
            "The cluster is up: kubectl --kubeconfig {} get nodes\n",
            path.display()
        ));
    }
    Ok(())
}
