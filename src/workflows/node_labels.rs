//! Node labels a kubelet may not set on itself: the control-plane role label (as kubeadm's
//! mark-control-plane phase sets it) and the inventory's labels in the `kubernetes.io`
//! namespaces outside the kubelet's allowed set (`node-role.kubernetes.io/…`). A real kubelet
//! refuses to start with them in `--node-labels`, so they are set through the API once the
//! Node exists. Labels are added or corrected, never removed: capstan cannot tell which
//! labels someone else set.

use std::collections::BTreeMap;

use super::cluster::{ClusterRun, PhaseHost, PhaseReport, Stop};
use super::gates::{self, NodeStatus};
use crate::engine::plan::{Action, Change, HostPlan};
use crate::inventory::Host;
use crate::ssh::quote;

const PHASE: &str = "node labels";

/// The label changes each host's Node needs, given the Nodes as the API lists them (a
/// Node not listed yet needs all its labels). Hosts without changes are left out.
pub fn plan(hosts: &[&Host], nodes: &BTreeMap<String, NodeStatus>) -> BTreeMap<String, HostPlan> {
    let mut plans = BTreeMap::new();
    for host in hosts {
        let current = nodes.get(&host.name).map(|n| &n.labels);
        let changes: Vec<Change> = host
            .api_labels()
            .into_iter()
            .filter_map(|(key, value)| {
                let now = current.and_then(|labels| labels.get(&key));
                if now == Some(&value) {
                    return None;
                }
                let show =
                    |v: Option<&String>| v.map_or_else(|| "(none)".into(), |v| format!("{v:?}"));
                Some(Change {
                    kind: "node-label",
                    details: vec![format!("{} -> {}", show(now), show(Some(&value)))],
                    target: format!("{key}={value}"),
                    action: Action::Set,
                    diff: None,
                    secret: false,
                    index: 0,
                })
            })
            .collect();
        if !changes.is_empty() {
            plans.insert(
                host.name.clone(),
                HostPlan {
                    changes,
                    daemon_reload: false,
                },
            );
        }
    }
    plans
}

/// One `kubectl label` per Node that needs labels, in one script.
pub fn script(plans: &BTreeMap<String, HostPlan>) -> String {
    plans
        .iter()
        .map(|(node, plan)| {
            let labels: Vec<String> = plan.changes.iter().map(|c| quote(&c.target)).collect();
            gates::kubectl(
                None,
                &format!(
                    "label node {} --overwrite {}",
                    quote(node),
                    labels.join(" ")
                ),
            )
        })
        .collect::<Vec<_>>()
        .join(" && \\\n")
}

/// Sets the labels of the Nodes of `hosts` that lack them, through the API on host `on`.
/// `nodes` is the API's list when the caller has it (the nodes gate just read it); a dry
/// run reads it (read-only) when the API answers, and otherwise shows every label.
pub async fn apply(
    run: &mut ClusterRun<'_>,
    on: usize,
    hosts: &[usize],
    nodes: Option<BTreeMap<String, NodeStatus>>,
) -> Result<(), Stop> {
    let t0 = std::time::Instant::now();
    let nodes = match nodes {
        Some(nodes) => nodes,
        None => match run.exec(on, &gates::nodes_script()).await {
            Ok(out) if out.success() => gates::parse_nodes(&out.stdout_text()).unwrap_or_default(),
            _ if run.dry_run => BTreeMap::new(),
            Ok(out) => {
                return Err(Stop(format!(
                    "{PHASE}: listing the Nodes on {} failed: {}",
                    run.host(on).name,
                    out.stderr_text().trim()
                )));
            }
            Err(e) => return Err(Stop(format!("{PHASE}: {e}"))),
        },
    };
    let selected: Vec<&Host> = hosts.iter().map(|&i| run.host(i)).collect();
    let plans = plan(&selected, &nodes);
    if plans.is_empty() {
        return Ok(());
    }
    let applied = !run.dry_run;
    if applied {
        let out = run
            .exec(on, &script(&plans))
            .await
            .map_err(|e| Stop(format!("{PHASE}: {e}")))?;
        if !out.success() {
            return Err(Stop(format!(
                "{PHASE}: kubectl label on {} failed (exit status {}): {}",
                run.host(on).name,
                out.exit_status,
                out.stderr_text().trim()
            )));
        }
    }
    run.record_phase(PhaseReport {
        phase: PHASE.to_string(),
        hosts: plans
            .into_iter()
            .map(|(host, plan)| PhaseHost {
                host,
                roles: vec!["node".to_string()],
                plan,
                applied,
            })
            .collect(),
        gates: Vec::new(),
        failed: BTreeMap::new(),
        seconds: t0.elapsed().as_secs_f64(),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Role;

    fn host(name: &str, role: Role, labels: &[(&str, &str)]) -> Host {
        Host {
            name: name.into(),
            address: "10.0.0.1".into(),
            internal_address: "10.0.0.1".into(),
            roles: [role].into_iter().collect(),
            ssh: crate::inventory::SshSettings {
                user: None,
                port: None,
                identity_file: None,
                become_method: crate::inventory::Become::Sudo,
                bastion: None,
            },
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            taints: Vec::new(),
        }
    }

    fn node(labels: &[(&str, &str)]) -> NodeStatus {
        NodeStatus {
            ready: true,
            kubelet_version: "v1.32.4".into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
        }
    }

    #[test]
    fn control_planes_get_their_role_label_and_workers_their_restricted_labels() {
        let cp = host("cp1", Role::ControlPlane, &[("disk", "ssd")]);
        let w = host(
            "w1",
            Role::Worker,
            &[("node-role.kubernetes.io/worker", ""), ("disk", "hdd")],
        );
        let nodes = BTreeMap::from([
            ("cp1".to_string(), node(&[("disk", "ssd")])),
            ("w1".to_string(), node(&[("disk", "hdd")])),
        ]);
        let plans = plan(&[&cp, &w], &nodes);
        let targets = |h: &str| -> Vec<String> {
            plans[h].changes.iter().map(|c| c.target.clone()).collect()
        };
        // `disk` is the kubelet's to set (--node-labels), not the API's.
        assert_eq!(targets("cp1"), ["node-role.kubernetes.io/control-plane="]);
        assert_eq!(targets("w1"), ["node-role.kubernetes.io/worker="]);
        assert_eq!(plans["w1"].changes[0].details, ["(none) -> \"\""]);
        let s = script(&plans);
        assert!(
            s.contains("label node cp1 --overwrite node-role.kubernetes.io/control-plane="),
            "{s}"
        );
        assert!(
            s.contains("label node w1 --overwrite node-role.kubernetes.io/worker="),
            "{s}"
        );
    }

    #[test]
    fn labelled_nodes_need_nothing_and_a_wrong_value_is_corrected() {
        let w = host(
            "w1",
            Role::Worker,
            &[("node-role.kubernetes.io/infra", "yes")],
        );
        let right = BTreeMap::from([(
            "w1".to_string(),
            node(&[("node-role.kubernetes.io/infra", "yes"), ("other", "kept")]),
        )]);
        assert!(plan(&[&w], &right).is_empty());
        let wrong = BTreeMap::from([(
            "w1".to_string(),
            node(&[("node-role.kubernetes.io/infra", "no")]),
        )]);
        let plans = plan(&[&w], &wrong);
        assert_eq!(plans["w1"].changes[0].details, ["\"no\" -> \"yes\""]);
        // A Node not registered yet (a dry run of a new cluster) needs every label.
        assert_eq!(plan(&[&w], &BTreeMap::new())["w1"].changes.len(), 1);
    }
}
