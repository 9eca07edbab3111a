//! The API server stand-in with a real etcd and the machine's real kubectl.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;
use support::*;

#[test]
fn kubectl_smoke() {
    let bed = Bed::start();
    let k = |args: &[&str]| kubectl(&bed.admin, args);
    assert_eq!(
        ok(&k(&["get", "--raw", "/readyz"]), "readyz").trim(),
        "ok",
        "{}",
        bed.logs()
    );
    let out = ok(&k(&["get", "nodes"]), "get nodes");
    println!("{out}");
    let out = ok(&k(&["version", "-o", "json"]), "version");
    assert!(out.contains("\"gitVersion\": \"v1.32.4\""), "{out}");
    let ns = ok(&k(&["get", "namespaces", "-o", "name"]), "get ns");
    assert!(ns.contains("namespace/kube-system"), "{ns}");
}

const NODES: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: n1, labels: {kubernetes.io/hostname: n1}}
status:
  conditions: [{type: Ready, status: "True", reason: KubeletReady}]
---
apiVersion: v1
kind: Node
metadata: {name: n2, labels: {kubernetes.io/hostname: n2}}
status:
  conditions: [{type: Ready, status: "True", reason: KubeletReady}]
"#;

const WORKLOADS: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: "registry.k8s.io/pause:3.10", ports: [{containerPort: 80}]}]
      volumes: [{name: scratch, emptyDir: {}}]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent, namespace: kube-system}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers: [{name: agent, image: "registry.k8s.io/pause:3.10"}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: reader}
rules: [{apiGroups: [""], resources: [pods], verbs: [get, list]}]
"#;

fn pods_on(bed: &Bed, node: &str) -> Vec<String> {
    let out = ok(
        &kubectl(
            &bed.admin,
            &[
                "get",
                "pods",
                "-A",
                "--field-selector",
                &format!("spec.nodeName={node}"),
                "-o",
                "name",
            ],
        ),
        "get pods",
    );
    out.lines().map(String::from).collect()
}

#[test]
fn apply_cordon_drain_uncordon() {
    let bed = Bed::start();
    let d = bed.dir.path();
    let k = |args: &[&str]| kubectl(&bed.admin, args);
    // The controller-manager and the scheduler run beside it, with their own identities.
    let cm = bed
        .ca
        .issue("system:kube-controller-manager", &[], &[], false, true);
    let cm_kc = kubeconfig(d, "controller-manager.conf", &bed.api_url, &bed.ca.pem, &cm);
    let sc = bed.ca.issue("system:kube-scheduler", &[], &[], false, true);
    let sc_kc = kubeconfig(d, "scheduler.conf", &bed.api_url, &bed.ca.pem, &sc);
    let cm_bin = stamped(d, "kube-controller-manager", VERSION);
    let sc_bin = stamped(d, "kube-scheduler", VERSION);
    let cm_port = free_port().to_string();
    let sc_port = free_port().to_string();
    let _cm = Proc::spawn(
        std::process::Command::new(cm_bin).args([
            "--bind-address=127.0.0.1",
            &format!("--secure-port={cm_port}"),
            &format!("--kubeconfig={cm_kc}"),
            &format!("--authentication-kubeconfig={cm_kc}"),
            &format!("--authorization-kubeconfig={cm_kc}"),
            "--leader-elect=true",
            "--use-service-account-credentials=true",
            "--controllers=*,bootstrapsigner,tokencleaner",
        ]),
        d.join("cm.log"),
    );
    let _sc = Proc::spawn(
        std::process::Command::new(sc_bin).args([
            "--bind-address=127.0.0.1",
            &format!("--secure-port={sc_port}"),
            &format!("--kubeconfig={sc_kc}"),
            "--leader-elect=true",
        ]),
        d.join("sc.log"),
    );

    let nodes = write(d, "nodes.yaml", NODES);
    ok(&k(&["apply", "-f", &nodes]), "apply nodes");
    let out = ok(&k(&["get", "nodes"]), "get nodes");
    assert!(out.contains("n1") && out.contains("Ready"), "{out}");
    let w = write(d, "workloads.yaml", WORKLOADS);
    let out = ok(&k(&["apply", "-f", &w]), "apply workloads");
    assert!(out.contains("deployment.apps/web created"), "{out}");
    // Applying again changes nothing; a changed image is patched in.
    let out = ok(&k(&["apply", "-f", &w]), "re-apply");
    assert!(out.contains("deployment.apps/web unchanged"), "{out}");
    assert!(
        bed.etcd_get("/registry/deployments/default/web", false)
            .contains("\"replicas\":2")
    );

    // The controller-manager makes the pods, the scheduler spreads them.
    wait_for(
        "2 web pods and 2 agent pods bound to nodes",
        Duration::from_secs(30),
        || pods_on(&bed, "n1").len() == 2 && pods_on(&bed, "n2").len() == 2,
    );

    ok(&k(&["cordon", "n1"]), "cordon");
    assert!(
        bed.etcd_get("/registry/nodes/n1", false)
            .contains("\"unschedulable\":true")
    );
    let out = k(&[
        "drain",
        "n1",
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--timeout=60s",
    ]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "drain failed:\n{text}\n{}",
        bed.logs()
    );
    assert!(text.contains("evicting pod default/web-"), "{text}");
    assert!(text.contains("node/n1 drained"), "{text}");
    // Only the DaemonSet's pod stays; the replacement web pod lands on n2.
    let left = pods_on(&bed, "n1");
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].contains("agent-"), "{left:?}");
    wait_for(
        "the evicted web pod replaced on n2",
        Duration::from_secs(30),
        || pods_on(&bed, "n2").len() == 3,
    );
    ok(&k(&["uncordon", "n1"]), "uncordon");
    assert!(
        !bed.etcd_get("/registry/nodes/n1", false)
            .contains("\"unschedulable\":true")
    );
    let stored = bed.etcd_get("/registry/pods/", true);
    assert_eq!(stored.matches("\"nodeName\":\"n2\"").count(), 3, "{stored}");
    // Generic kinds are stored as sent.
    assert!(
        bed.etcd_get("/registry/clusterroles/reader", false)
            .contains("\"resources\":[\"pods\"]")
    );
}

#[test]
fn client_cert_from_another_ca_is_refused() {
    let bed = Bed::start();
    let other = Ca::new("kubernetes");
    let intruder = other.issue("kubernetes-admin", &["system:masters"], &[], false, true);
    let kc = kubeconfig(
        bed.dir.path(),
        "intruder.conf",
        &bed.api_url,
        &bed.ca.pem,
        &intruder,
    );
    let out = kubectl(&kc, &["get", "nodes"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("You must be logged in to the server"), "{err}");
    // A valid user outside system:masters is forbidden.
    let nobody = bed.ca.issue("jane", &["developers"], &[], false, true);
    let kc = kubeconfig(
        bed.dir.path(),
        "jane.conf",
        &bed.api_url,
        &bed.ca.pem,
        &nobody,
    );
    let out = kubectl(&kc, &["get", "pods"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("forbidden") && err.contains("User \"jane\" cannot list resource \"pods\""),
        "{err}"
    );
}
