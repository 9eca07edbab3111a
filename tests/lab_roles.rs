//! The cluster roles on real lab hosts (one control plane, one worker): `apply --roles
//! common,containerd,etcd,kubelet,control-plane` after `certs generate` + `certs distribute`
//! gives a real etcd healthy over TLS (real etcdctl with the healthcheck client cert), the API
//! server stand-in ready behind it, both kubelets' Nodes Ready with the inventory's version,
//! one lease holder each for kube-controller-manager and kube-scheduler with the inventory's
//! leader-election timings; `--roles addons` applies kube-proxy, CoreDNS, flannel and the
//! nodes' RBAC through the API with real kubectl; a second run changes nothing; a changed
//! etcd.env restarts etcd, the create-only initial cluster is never rewritten, and an addon
//! object deleted from the cluster is applied again.

mod support;

use std::path::Path;

use support::lab::{
    Lab, Run, assert_control_plane_pods, bed, run_capstan_cached, sh, wait_api_ready, wait_for,
};

fn run(args: &[&str], inv: &Path, cache: &Path) -> Run {
    let r = run_capstan_cached(args, inv, cache);
    assert!(
        !r.stdout.contains("PRIVATE KEY") && !r.stderr.contains("PRIVATE KEY"),
        "key material in the output of {args:?}"
    );
    r
}

/// Reads before the addons use super-admin.conf (system:masters): admin.conf's group
/// kubeadm:cluster-admins gets cluster-admin only through the binding the addons role makes.
const KUBECTL: &str = "kubectl --kubeconfig /etc/kubernetes/super-admin.conf";
const ETCDCTL: &str = "set -a; . /etc/etcd/etcdctl.env; set +a; etcdctl";
const CLUSTER_ROLES: &str = "common,containerd,etcd,kubelet,control-plane";
const ALL_ROLES: &str = "common,containerd,etcd,kubelet,control-plane,addons";

#[test]
fn cluster_roles_on_a_control_plane_and_a_worker() {
    let bed = bed();
    let images = format!("{}:/var/lib/standin-images", bed.join("images").display());
    let mirror = bed.join("mirror");
    let lab = Lab::up(
        "roles",
        &[
            "--control-planes",
            "1",
            "--workers",
            "1",
            "--mirror",
            mirror.to_str().expect("utf-8 path"),
            "--mount",
            &images,
        ],
    );
    let inv = lab.inventory();
    let cache = tempfile::tempdir().expect("temp dir");
    let cache = cache.path();

    // A version the bed has stand-ins (and kubectl) for, and leader-election timings of our
    // own, to see them reach the leases.
    let versions = std::fs::read_to_string(bed.join("standins/versions")).expect("versions");
    let version = versions
        .split_whitespace()
        .find(|v| v.starts_with("v1.32."))
        .or_else(|| versions.split_whitespace().next())
        .expect("a stand-in version")
        .to_string();
    let text = std::fs::read_to_string(&inv).expect("inventory");
    let mut edited = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("kubernetes_version:") {
            edited.push_str(&format!("  kubernetes_version: {version}\n"));
            edited.push_str(
                "  leader_election: {lease_duration: 8s, renew_deadline: 6s, retry_period: 1s}\n",
            );
        } else {
            edited.push_str(line);
            edited.push('\n');
        }
    }
    std::fs::write(&inv, edited).expect("write inventory");

    for step in [["certs", "generate"], ["certs", "distribute"]] {
        let r = run(&step, &inv, cache);
        assert_eq!(r.code, 0, "{step:?}:\n{}\n{}", r.stdout, r.stderr);
    }

    let r = run(&["apply", "--roles", CLUSTER_ROLES], &inv, cache);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("2 hosts, 2 changed, 0 unchanged, 0 failed"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("create file /etc/etcd/initial-cluster.env"),
        "{}",
        r.stdout
    );

    // etcd: real, healthy over TLS, with the healthcheck client cert; the worker has none.
    let health = wait_for(
        &lab,
        "cp1",
        &format!("{ETCDCTL} endpoint health --cluster"),
        |o| o.contains("is healthy"),
        "etcd healthy",
    );
    assert!(health.contains("https://"), "{health}");
    let (_, members) = sh(&lab, "cp1", &format!("{ETCDCTL} member list"));
    assert!(members.contains(", started, cp1, https://"), "{members}");
    let (_, mode) = sh(&lab, "cp1", "stat -c %a /var/lib/etcd");
    assert_eq!(mode.trim(), "700");
    let (code, out) = sh(
        &lab,
        "w1",
        "/opt/cni/bin/bridge 2>&1; /opt/cni/bin/portmap 2>&1; true",
    );
    assert!(
        code == 0 && out.contains("CNI bridge plugin") && out.contains("CNI portmap plugin"),
        "{out}"
    );
    let (code, _) = sh(&lab, "w1", "test -e /etc/etcd");
    assert_ne!(code, 0, "a worker got etcd");

    // The API server (stand-in) behind it, ready, through admin.conf as the brief's check.
    wait_api_ready(&lab, "cp1");

    // Both kubelets register and stay Ready, with the inventory's version.
    let nodes = wait_for(
        &lab,
        "cp1",
        &format!(
            "{KUBECTL} get nodes -o jsonpath='{{range .items[*]}}{{.metadata.name}} {{.status.nodeInfo.kubeletVersion}} {{.status.conditions[?(@.type==\"Ready\")].status}}{{\"\\n\"}}{{end}}'"
        ),
        |o| o.lines().filter(|l| l.ends_with(" True")).count() == 2,
        "both nodes Ready",
    );
    for node in ["cp1", "w1"] {
        assert!(nodes.contains(&format!("{node} {version} True")), "{nodes}");
    }

    // One holder each, with the inventory's lease duration.
    for lease in ["kube-controller-manager", "kube-scheduler"] {
        let out = wait_for(
            &lab,
            "cp1",
            &format!(
                "{KUBECTL} -n kube-system get lease {lease} -o jsonpath='{{.spec.holderIdentity}} {{.spec.leaseDurationSeconds}}'"
            ),
            |o| o.starts_with("cp1"),
            &format!("{lease} lease held"),
        );
        assert!(out.ends_with(" 8"), "{lease}: {out}");
    }
    assert_control_plane_pods(&lab, "cp1", KUBECTL);

    // Addons through the API, from the first control plane only.
    let r = run(&["apply", "--roles", "addons"], &inv, cache);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("run command apply-addons"),
        "{}",
        r.stdout
    );
    let (code, objects) = sh(
        &lab,
        "cp1",
        &format!("{KUBECTL} get -f /etc/kubernetes/addons/ -o name"),
    );
    assert_eq!(code, 0, "{objects}");
    for o in [
        "clusterrolebinding.rbac.authorization.k8s.io/capstan:system:node",
        "daemonset.apps/kube-proxy",
        "configmap/kube-proxy",
        "deployment.apps/coredns",
        "service/kube-dns",
        "namespace/kube-flannel",
        "configmap/kube-flannel-cfg",
        "daemonset.apps/kube-flannel-ds",
    ] {
        assert!(objects.lines().any(|l| l == o), "{o} in {objects}");
    }
    // admin.conf now works through RBAC (kubeadm:cluster-admins -> cluster-admin).
    let (code, out) = sh(
        &lab,
        "cp1",
        "kubectl --kubeconfig /etc/kubernetes/admin.conf get nodes -o name",
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("node/w1"), "{out}");
    let (_, ip) = sh(
        &lab,
        "cp1",
        &format!("{KUBECTL} -n kube-system get service kube-dns -o jsonpath='{{.spec.clusterIP}}'"),
    );
    assert_eq!(ip.trim(), "10.96.0.10");
    let (code, _) = sh(&lab, "w1", "test -e /etc/kubernetes/addons");
    assert_ne!(code, 0, "the worker got the addons");

    // Idempotent: everything converged, nothing to do.
    let r = run(&["apply", "--roles", ALL_ROLES], &inv, cache);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("2 hosts, 0 changed, 2 unchanged, 0 failed"),
        "{}",
        r.stdout
    );

    // Drift: etcd.env edited restarts etcd (new main PID) and it is healthy again; the
    // initial cluster, written once, is left as the host has it.
    let pid = |lab: &Lab| sh(lab, "cp1", "systemctl show -p MainPID --value etcd").1;
    let before = pid(&lab);
    sh(
        &lab,
        "cp1",
        "echo ETCD_SNAPSHOT_COUNT=5 >> /etc/etcd/etcd.env; echo '# kept' >> /etc/etcd/initial-cluster.env",
    );
    let r = run(&["apply", "--roles", "etcd"], &inv, cache);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("restart unit etcd.service"),
        "{}",
        r.stdout
    );
    assert!(
        !r.stdout.contains("/etc/etcd/initial-cluster.env"),
        "a create-only file was planned: {}",
        r.stdout
    );
    assert_ne!(pid(&lab), before, "etcd was not restarted");
    let (_, initial) = sh(&lab, "cp1", "cat /etc/etcd/initial-cluster.env");
    assert!(initial.ends_with("# kept\n"), "{initial}");
    wait_for(
        &lab,
        "cp1",
        &format!("{ETCDCTL} endpoint health"),
        |o| o.contains("is healthy"),
        "etcd healthy after its restart",
    );

    // An addon object deleted from the cluster: the guard sees it and kubectl applies again.
    sh(
        &lab,
        "cp1",
        &format!("{KUBECTL} -n kube-system delete configmap coredns"),
    );
    let r = run(&["apply", "--roles", "addons"], &inv, cache);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("run command apply-addons"),
        "{}",
        r.stdout
    );
    let (code, out) = sh(
        &lab,
        "cp1",
        &format!("{KUBECTL} -n kube-system get configmap coredns -o name"),
    );
    assert_eq!(code, 0, "{out}");
    let r = run(&["apply", "--roles", ALL_ROLES], &inv, cache);
    assert!(
        r.stdout
            .contains("2 hosts, 0 changed, 2 unchanged, 0 failed"),
        "{}",
        r.stdout
    );
}
