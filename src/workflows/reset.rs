//! `capstan reset --hosts a,b`: take nodes out of the cluster and clean their hosts.
//!
//! Per host, one at a time: drain and delete its Node (through the API, from a control
//! plane that stays), `etcdctl member remove` before its etcd stops (refused when quorum
//! would be lost, unless `--force`), then one exec that stops and disables its units and
//! removes every path its roles and PKI put there (the roles say which, so nothing is
//! forgotten). Then the rest of the cluster is converged without those hosts, as `init`
//! would: certificates without their names, `--etcd-servers` without the member, every
//! load balancer and local proxy reloaded without the backend. Idempotent: a host already
//! gone is skipped, a clean host stays clean.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::cluster::{ClusterRun, RunReport, Stop};
use super::converge::{self, ConvergeOptions, Selection};
use super::gates::{self, EtcdMember};
use super::init::{self, InitOptions};
use super::membership::peer_url;
use super::{SessionOptions, membership};
use crate::artifacts::cache::Cache;
use crate::engine::desired::{self, Desired};
use crate::inventory::{Host, Inventory, Role};
use crate::ssh;
use crate::ui::{self, Color};

#[derive(Debug, Clone, Default)]
pub struct ResetOptions {
    pub hosts: Vec<String>,
    pub dry_run: bool,
    /// Go on when etcd would lose quorum, or when no control plane would remain.
    pub force: bool,
}

/// Folders whose contents are state capstan's services made (wiped, the folder kept:
/// it may be a mount).
const STATE_DIRS: &[&str] = &["/var/lib/etcd", "/var/lib/kubelet", "/var/lib/containerd"];

pub async fn run(
    inventory: &Inventory,
    session: &SessionOptions,
    cache: Cache,
    opts: &ResetOptions,
) -> miette::Result<(RunReport, Option<RunReport>)> {
    let prepared = converge::prepare(inventory, &ConvergeOptions::default(), cache.clone())?;
    let mut run =
        ClusterRun::connect("reset", inventory, session, prepared, opts.dry_run, false).await;
    let stopped = remove_hosts(&mut run, opts).await.err();
    let ok = stopped.is_none() && run.hosts.iter().all(|h| h.error.is_none());
    let report = run.finish(stopped).await;
    if !ok {
        return Ok((report, None));
    }
    // The rest of the cluster, converged without the hosts that left.
    let mut rest = inventory.clone();
    rest.hosts.retain(|h| !opts.hosts.contains(&h.name));
    if !rest.hosts.iter().any(|h| h.has_role(Role::ControlPlane)) {
        return Ok((report, None));
    }
    let converged = init::run(
        &rest,
        session,
        cache,
        &InitOptions {
            dry_run: opts.dry_run,
            ..InitOptions::default()
        },
    )
    .await?;
    Ok((report, Some(converged)))
}

async fn remove_hosts(run: &mut ClusterRun<'_>, opts: &ResetOptions) -> Result<(), Stop> {
    let inv = run.inventory;
    let gone: Vec<usize> = opts
        .hosts
        .iter()
        .map(|n| {
            run.index(n).ok_or_else(|| {
                Stop(format!(
                    "--hosts names `{n}`, which is not in the inventory"
                ))
            })
        })
        .collect::<Result<_, _>>()?;
    if let Some(&lb) = gone
        .iter()
        .find(|&&i| run.host(i).has_role(Role::LoadBalancer))
    {
        return Err(Stop(format!(
            "{} is a load balancer: reset takes nodes out of the cluster. Remove it from the \
             inventory and point the endpoint elsewhere instead",
            run.host(lb).name
        )));
    }
    let staying_cps: Vec<usize> = (0..inv.hosts.len())
        .filter(|i| !gone.contains(i) && run.host(*i).has_role(Role::ControlPlane))
        .collect();
    let teardown = staying_cps.is_empty();
    if teardown && !opts.force {
        return Err(Stop(
            "this would remove every control plane, and with them the cluster. Nothing was \
             changed; add --force to tear the whole cluster down"
                .into(),
        ));
    }
    for &i in &gone {
        if !run.alive(i) {
            return Err(Stop(format!(
                "{} cannot be reached ({}): nothing was changed",
                run.host(i).name,
                run.hosts[i].error.as_deref().unwrap_or("not connected")
            )));
        }
    }
    run.probe().await;

    // etcd: who is a member now, and whether removing ours keeps quorum.
    let members: Vec<usize> = (0..inv.hosts.len())
        .filter(|&i| inv.etcd_members().any(|m| m.name == run.host(i).name))
        .collect();
    let etcd = if teardown {
        None
    } else {
        let asked: Vec<usize> = members
            .iter()
            .copied()
            .filter(|i| !gone.contains(i))
            .collect();
        membership::etcd(run, &asked).await?
    };
    let api = staying_cps.iter().copied().find(|&i| run.alive(i));

    // Quorum first, for every member that goes: a refusal must come before any Node is
    // drained. (Checked again before each removal, against the members of that moment;
    // with --force only there, where it warns.)
    if let Some(cluster) = etcd.as_ref().filter(|_| !opts.force) {
        for &i in gone.iter().filter(|i| members.contains(i)) {
            let host = run.host(i);
            if let Some(member) = cluster
                .members
                .iter()
                .find(|m| m.name == host.name || m.peer_urls.contains(&peer_url(host)))
            {
                quorum_check(run, cluster.asked, &cluster.members, member, opts.force).await?;
            }
        }
    }

    for &i in &gone {
        let host = run.host(i);
        let mut notes: Vec<String> = Vec::new();
        // The Node: drained (DaemonSets and mirror pods stay, as kubectl drain does) and
        // deleted, from a control plane that stays.
        if crate::pki::spec::runs_kubelet(host)
            && let Some(cp) = api
        {
            let name = ssh::quote(&host.name);
            let script = format!(
                "if {get} >/dev/null 2>&1; then {drain} >&2 && {delete} >&2 && echo removed; else echo absent; fi",
                get = gates::kubectl(None, &format!("get node {name}")),
                drain = gates::kubectl(
                    None,
                    &format!(
                        "drain {name} --ignore-daemonsets --delete-emptydir-data --force --timeout=120s"
                    )
                ),
                delete = gates::kubectl(None, &format!("delete node {name} --wait=false")),
            );
            if run.dry_run {
                notes.push(format!("would drain and delete Node {}", host.name));
            } else {
                let out = run
                    .exec(cp, &script)
                    .await
                    .map_err(|e| Stop(format!("drain {}: {e}", host.name)))?;
                if !out.success() {
                    return Err(Stop(format!(
                        "draining {} failed; nothing else was changed on it: {}",
                        host.name,
                        out.stderr_text().trim()
                    )));
                }
                if out.stdout_text().trim() == "removed" {
                    notes.push(format!("Node {} drained and deleted", host.name));
                }
            }
        }
        // The etcd member: removed while the others still have quorum without it.
        if let Some(cluster) = etcd.as_ref().filter(|_| members.contains(&i))
            && let Some(member) = cluster
                .members
                .iter()
                .find(|m| m.name == host.name || m.peer_urls.contains(&peer_url(host)))
        {
            quorum_check(run, cluster.asked, &cluster.members, member, opts.force).await?;
            if run.dry_run {
                notes.push(format!(
                    "would run etcdctl member remove {:x} ({})",
                    member.id, host.name
                ));
            } else {
                let out = run
                    .exec(
                        cluster.asked,
                        &gates::etcdctl(&format!("member remove {:x}", member.id)),
                    )
                    .await
                    .map_err(|e| Stop(format!("etcd member remove {}: {e}", host.name)))?;
                if !out.success() {
                    return Err(Stop(format!(
                        "etcd member remove {} failed: {}",
                        host.name,
                        out.stderr_text().trim()
                    )));
                }
                notes.push(format!("etcd member {} removed", host.name));
            }
        }
        // The host itself: units stopped and disabled, every managed path removed.
        let script = clean_script(run, i)?;
        if run.dry_run {
            notes.push(format!(
                "would stop capstan's units and remove its paths on {}",
                host.name
            ));
        } else {
            let out = run
                .exec(i, &script)
                .await
                .map_err(|e| Stop(format!("clean {}: {e}", host.name)))?;
            if !out.success() {
                let e = format!("cleaning failed: {}", out.stderr_text().trim());
                run.hosts[i].error = Some(e.clone());
                return Err(Stop(format!("{}: {e}", host.name)));
            }
            let removed = out
                .stdout_text()
                .lines()
                .filter(|l| l.starts_with("removed "))
                .count();
            notes.push(format!("{} cleaned ({removed} paths removed)", host.name));
        }
        if !ui::ui().quiet && !ui::ui().json {
            let mut out = format!("{} reset {}\n", ui::paint("==>", Color::Bold), host.name);
            for n in &notes {
                let _ = writeln!(out, "  {n}");
            }
            ui::emit(&out);
        }
        run.record_note(&format!("reset {}", host.name), notes);
    }
    Ok(())
}

/// Refuses to remove `member` when the members left would not have a quorum of healthy
/// ones (unless `force`, with a loud warning).
async fn quorum_check(
    run: &ClusterRun<'_>,
    asked: usize,
    all: &[EtcdMember],
    member: &EtcdMember,
    force: bool,
) -> Result<(), Stop> {
    let out = run
        .exec(asked, &gates::etcd_health_script())
        .await
        .map_err(|e| Stop(format!("cannot ask etcd for its health: {e}")))?;
    let health = gates::parse_etcd_health(&out.stdout_text()).unwrap_or_default();
    let healthy = |m: &EtcdMember| {
        m.client_urls
            .iter()
            .any(|u| health.get(u).is_some_and(Result::is_ok))
    };
    let left: Vec<&EtcdMember> = all.iter().filter(|m| m.id != member.id).collect();
    let healthy_left = left.iter().filter(|m| healthy(m)).count();
    let quorum = left.len() / 2 + 1;
    if left.is_empty() || healthy_left < quorum {
        let why = format!(
            "removing etcd member {} leaves {} members of which {healthy_left} are healthy, \
             below the quorum of {quorum}: the cluster would stop accepting writes",
            member.name,
            left.len()
        );
        if !force {
            return Err(Stop(format!(
                "{why}. Nothing was changed; --force does it anyway"
            )));
        }
        ui::emit(&format!(
            "{} {why} (--force given: going on)\n",
            ui::paint("WARNING", Color::Red)
        ));
    }
    Ok(())
}

/// One script that leaves the host as capstan found it: static pods stopped first (the
/// kubelet stops them), then every unit capstan manages stopped and disabled, their
/// containers gone, and every path of the host's roles and PKI removed.
fn clean_script(run: &ClusterRun<'_>, i: usize) -> Result<String, Stop> {
    let inv = run.inventory;
    let host: &Host = run.host(i);
    let prepared = &run.prepared;
    let roles = converge::roles_for(inv, host, prepared, &[]).map_err(Stop)?;
    let shape = converge::desired_for(
        inv,
        host,
        &Selection {
            roles: &roles,
            with_pki: true,
            overrides: None,
        },
        prepared,
        None,
        desired::Mode::Shape,
    )
    .map_err(Stop)?;
    let mut files: BTreeSet<String> = BTreeSet::new();
    let mut dirs: BTreeSet<String> = BTreeSet::new();
    let mut units: Vec<String> = Vec::new();
    for d in &shape {
        match d {
            Desired::File(f) => {
                files.insert(f.path.clone());
            }
            Desired::Directory { path, .. } => {
                dirs.insert(path.clone());
            }
            // Units capstan only configures (a packaged haproxy) are not its to stop.
            Desired::Unit {
                name,
                unit_file: Some(_),
                ..
            } => units.push(name.clone()),
            _ => {}
        }
    }
    let mut s =
        String::from("set -u\nPATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n");
    // Static pods first: the kubelet stops them when their manifests go.
    s.push_str(
        "if [ -d /etc/kubernetes/manifests ] && systemctl is-active -q kubelet.service 2>/dev/null; then\n  \
         rm -f /etc/kubernetes/manifests/*.yaml\n  sleep 3\nfi\n",
    );
    // The kubelet before containerd; etcd last (its member is gone already).
    units.sort_by_key(|u| match u.as_str() {
        "kubelet.service" => 0,
        "containerd.service" => 2,
        "etcd.service" => 3,
        _ => 1,
    });
    for u in &units {
        let _ = writeln!(
            s,
            "systemctl disable --now {u} >/dev/null 2>&1 || true",
            u = ssh::quote(u)
        );
    }
    // Containers the runtime still holds.
    s.push_str(
        "if command -v ctr >/dev/null 2>&1 && [ -S /run/containerd/containerd.sock ]; then\n  \
         for t in $(ctr -n k8s.io task ls -q 2>/dev/null); do ctr -n k8s.io task kill -s KILL \"$t\" >/dev/null 2>&1; done\nfi\n",
    );
    for f in &files {
        let _ = writeln!(
            s,
            "if [ -e {p} ] || [ -L {p} ]; then rm -f {p} && echo removed {p}; fi",
            p = ssh::quote(f)
        );
    }
    for d in STATE_DIRS {
        let _ = writeln!(
            s,
            "if [ -d {d} ]; then find {d} -mindepth 1 -delete 2>/dev/null || true; fi",
            d = ssh::quote(d)
        );
    }
    // Folders deepest first; only when empty (shared ones like /usr/local/bin stay), and
    // never a state folder (it may be a mount).
    let mut dirs: Vec<&String> = dirs
        .iter()
        .filter(|d| !STATE_DIRS.contains(&d.as_str()))
        .collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.matches('/').count()));
    for d in dirs {
        let _ = writeln!(
            s,
            "if [ -d {p} ]; then rmdir {p} 2>/dev/null && echo removed {p}; fi",
            p = ssh::quote(d)
        );
    }
    s.push_str(
        "rm -rf /var/lib/capstan /etc/kubernetes/addons /etc/kubernetes/manifests 2>/dev/null\n\
         rmdir /etc/kubernetes/pki/etcd /etc/kubernetes/pki /etc/kubernetes 2>/dev/null\n\
         systemctl daemon-reload\nsysctl --system >/dev/null 2>&1 || true\nexit 0\n",
    );
    Ok(s)
}
