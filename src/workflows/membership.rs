//! Who is in the cluster already, and adding etcd members: what `join` decides before it
//! changes anything, and the `member add` that comes before a new member starts.

use std::collections::{BTreeMap, BTreeSet};

use super::cluster::{ClusterRun, Stop};
use super::gates::{self, EtcdMember};
use crate::inventory::{Host, Inventory};

/// The running etcd cluster, as one of its members lists it.
#[derive(Debug, Clone)]
pub struct EtcdCluster {
    pub members: Vec<EtcdMember>,
    /// The host that answered (a healthy member): later etcdctl calls go there.
    pub asked: usize,
}

/// The peer URL of an inventory host as an etcd member.
pub fn peer_url(host: &Host) -> String {
    crate::pki::spec::url(&host.internal_address, 2380)
}

impl EtcdCluster {
    /// The host is a member (by name, or by peer URL for one added but not started yet).
    pub fn has(&self, _inv: &Inventory, host: &Host) -> bool {
        let url = peer_url(host);
        self.members
            .iter()
            .any(|m| m.name == host.name || m.peer_urls.contains(&url))
    }

    pub fn count(&self) -> usize {
        self.members.len()
    }

    /// `--initial-cluster` for a member joining now: every member, the new one by its name.
    pub fn initial_cluster(&self, joining: &Host) -> String {
        let url = peer_url(joining);
        self.members
            .iter()
            .filter_map(|m| {
                let name = if m.peer_urls.contains(&url) {
                    joining.name.as_str()
                } else {
                    m.name.as_str()
                };
                let peer = m.peer_urls.first()?;
                (!name.is_empty()).then(|| format!("{name}={peer}"))
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The etcd cluster the members of the inventory run, if any runs: asked of the first
/// member whose etcd answers (one exec per member tried). `None` when no member runs etcd.
pub async fn etcd(run: &ClusterRun<'_>, members: &[usize]) -> Result<Option<EtcdCluster>, Stop> {
    let running: Vec<usize> = members
        .iter()
        .copied()
        .filter(|&i| {
            run.hosts[i].probed.as_ref().is_some_and(|p| {
                p.state
                    .units
                    .get("etcd.service")
                    .is_some_and(|u| u.active_state == "active")
            })
        })
        .collect();
    let mut errors = Vec::new();
    for &i in &running {
        match run.exec(i, &gates::etcd_members_script()).await {
            Ok(out) if out.success() => match gates::parse_etcd_members(&out.stdout_text()) {
                Ok(members) => return Ok(Some(EtcdCluster { members, asked: i })),
                Err(e) => errors.push(format!("{}: {e}", run.host(i).name)),
            },
            Ok(out) => errors.push(format!(
                "{}: {}",
                run.host(i).name,
                out.stderr_text().trim()
            )),
            Err(e) => errors.push(format!("{}: {e}", run.host(i).name)),
        }
    }
    if running.is_empty() {
        Ok(None)
    } else {
        Err(Stop(format!(
            "etcd runs on {} but no member answers its member list, so the cluster's \
             membership is unknown and nothing was changed: {}",
            running
                .iter()
                .map(|&i| run.host(i).name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            errors.join("; ")
        )))
    }
}

/// Decides what `join` may do, before any change: there must be a cluster, every member of
/// it healthy, and the member count at the end odd. Returns the hosts to leave out (not in
/// the cluster and not named with `--hosts`).
pub async fn check_join(
    run: &ClusterRun<'_>,
    etcd: Option<&EtcdCluster>,
    joining: &[usize],
    cps: &[usize],
    named: &[String],
) -> Result<Vec<usize>, Stop> {
    let Some(etcd) = etcd else {
        return Err(Stop(
            "there is no cluster to join: no etcd member of the inventory runs etcd. \
             `capstan init` builds the cluster"
                .into(),
        ));
    };
    // Every member that has started must be healthy: adding one to a sick cluster can
    // cost its quorum.
    let out = run
        .exec(etcd.asked, &gates::etcd_health_script())
        .await
        .map_err(|e| Stop(format!("cannot ask etcd for its health: {e}")))?;
    let health = gates::parse_etcd_health(&out.stdout_text()).map_err(|e| {
        Stop(format!(
            "cannot read etcd's health: {e} {}",
            out.stderr_text().trim()
        ))
    })?;
    let started: Vec<&EtcdMember> = etcd.members.iter().filter(|m| !m.name.is_empty()).collect();
    let mut sick = Vec::new();
    for m in &started {
        let ok = m
            .client_urls
            .iter()
            .any(|u| health.get(u).is_some_and(Result::is_ok));
        if !ok {
            let why = m
                .client_urls
                .iter()
                .find_map(|u| health.get(u).and_then(|h| h.as_ref().err().cloned()))
                .unwrap_or_else(|| "does not answer".into());
            sick.push(format!("{} ({why})", m.name));
        }
    }
    if !sick.is_empty() {
        return Err(Stop(format!(
            "etcd is not healthy: {}. Adding a member now could cost the cluster its quorum; \
             nothing was changed. Bring the member back (or `capstan reset` it), then join",
            sick.join(", ")
        )));
    }

    // Hosts that are not in the cluster yet: new etcd members, and kubelet hosts whose
    // Node is not registered.
    let nodes = registered_nodes(run, cps).await;
    let inv = run.inventory;
    let new_hosts: BTreeSet<usize> = (0..inv.hosts.len())
        .filter(|&i| {
            joining.contains(&i)
                || (crate::pki::spec::runs_kubelet(run.host(i))
                    && nodes
                        .as_ref()
                        .is_some_and(|n| !n.contains(&run.host(i).name)))
        })
        .collect();
    for name in named {
        let Some(i) = run.index(name) else {
            return Err(Stop(format!(
                "--hosts names `{name}`, which is not in the inventory"
            )));
        };
        if !new_hosts.contains(&i) {
            return Err(Stop(format!(
                "{name} is in the cluster already; `join` adds hosts that are not (use `init` to converge it)"
            )));
        }
    }
    let skipped: Vec<usize> = if named.is_empty() {
        Vec::new()
    } else {
        new_hosts
            .iter()
            .copied()
            .filter(|&i| !named.contains(&run.host(i).name))
            .collect()
    };
    let added = joining.iter().filter(|i| !skipped.contains(i)).count();
    let end = started.len() + added;
    if end.is_multiple_of(2) {
        return Err(Stop(format!(
            "after this join etcd would have {end} members: an even count tolerates no more \
             failures than one member fewer. Join members so that the count stays odd"
        )));
    }
    Ok(skipped)
}

/// Node names the API lists (asked of the first control plane that answers), or `None`
/// when no API answers.
async fn registered_nodes(run: &ClusterRun<'_>, cps: &[usize]) -> Option<BTreeSet<String>> {
    for &i in cps {
        if !run.alive(i) {
            continue;
        }
        if let Ok(out) = run.exec(i, &gates::nodes_script()).await
            && out.success()
            && let Ok(nodes) = gates::parse_nodes(&out.stdout_text())
        {
            return Some(nodes.into_keys().collect());
        }
    }
    None
}

/// `etcdctl member add` for host `new` (unless a previous run added it already), and the
/// vars its etcd role starts with. On a dry run, only says what it would do.
pub async fn add_member(
    run: &mut ClusterRun<'_>,
    current: &mut EtcdCluster,
    new: usize,
) -> Result<BTreeMap<usize, BTreeMap<String, String>>, Stop> {
    let host = run.host(new);
    let url = peer_url(host);
    let already = current.members.iter().any(|m| m.peer_urls.contains(&url));
    if !already {
        if run.dry_run {
            current.members.push(EtcdMember {
                id: 0,
                name: String::new(),
                peer_urls: vec![url.clone()],
                client_urls: Vec::new(),
            });
            run.record_gate(
                &format!("etcd member add {} --peer-urls={url}", host.name),
                Ok(None),
            )?;
        } else {
            let script = gates::etcdctl(&format!(
                "member add {} --peer-urls={} -w json",
                crate::ssh::quote(&host.name),
                crate::ssh::quote(&url)
            ));
            // etcd refuses a new member ("unhealthy cluster") until every started member
            // has been connected for a few seconds (its strict reconfiguration check): a
            // member that joined a moment ago needs that time.
            let started = std::time::Instant::now();
            let out = loop {
                let out = run
                    .exec(current.asked, &script)
                    .await
                    .map_err(|e| Stop(format!("etcd member add {}: {e}", host.name)))?;
                if out.success()
                    || !out.stderr_text().contains("unhealthy cluster")
                    || started.elapsed() > std::time::Duration::from_secs(60)
                {
                    break out;
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            };
            if !out.success() {
                return Err(Stop(format!(
                    "etcd member add {} failed: {}",
                    host.name,
                    out.stderr_text().trim()
                )));
            }
            current.members = gates::parse_etcd_members(&out.stdout_text())
                .map_err(|e| Stop(format!("etcd member add {}: {e}", host.name)))?;
            run.record_gate(&format!("etcd member {} added", host.name), Ok(Some(0.0)))?;
        }
    }
    let vars = BTreeMap::from([
        ("initial_cluster_state".to_string(), "existing".to_string()),
        ("initial_cluster".to_string(), current.initial_cluster(host)),
    ]);
    Ok(BTreeMap::from([(new, vars)]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, peer: &str) -> EtcdMember {
        EtcdMember {
            id: 1,
            name: name.into(),
            peer_urls: vec![peer.into()],
            client_urls: Vec::new(),
        }
    }

    #[test]
    fn initial_cluster_names_the_joining_member() {
        let inv = crate::inventory::load_str(
            "cluster: {name: t, kubernetes_version: v1.32.4}\nhosts:\n- {name: cp1, address: 10.0.0.1, roles: [control-plane]}\n- {name: cp2, address: 10.0.0.2, roles: [control-plane]}\n- {name: cp3, address: 10.0.0.3, roles: [control-plane]}\n",
            std::path::Path::new("/tmp/x/cluster.yaml"),
            Some(std::path::Path::new("/root")),
        )
        .expect("valid inventory");
        let c = EtcdCluster {
            members: vec![
                member("cp1", "https://10.0.0.1:2380"),
                member("", "https://10.0.0.2:2380"),
            ],
            asked: 0,
        };
        let cp2 = inv.host("cp2").expect("cp2");
        assert!(c.has(&inv, cp2));
        assert!(!c.has(&inv, inv.host("cp3").expect("cp3")));
        assert_eq!(
            c.initial_cluster(cp2),
            "cp1=https://10.0.0.1:2380,cp2=https://10.0.0.2:2380"
        );
    }
}
