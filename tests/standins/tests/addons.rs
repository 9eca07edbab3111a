//! What the cluster workflows apply through the API, with the machine's real kubectl against
//! the API server stand-in (real etcd): kubeadm's node RBAC, the kube-proxy and CoreDNS
//! addons and flannel's manifest (tests/fixtures/addons), applied client-side from a folder
//! by kubeadm's admin identity (group `kubeadm:cluster-admins`, bound to cluster-admin the
//! way kubeadm binds it), idempotently; `kubectl get -f` as the gate that they all exist;
//! and the node fields a readiness gate reads.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use support::*;

const CLUSTER_ADMINS: &str = "apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: kubeadm:cluster-admins
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: cluster-admin
subjects:
- apiGroup: rbac.authorization.k8s.io
  kind: Group
  name: kubeadm:cluster-admins
";

fn fixtures() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/addons")
        .to_string_lossy()
        .into_owned()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `kind/name` of every object in the fixtures, as `kubectl ... -o name` prints them.
fn expected_names() -> Vec<String> {
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v: Value = serde::Deserialize::deserialize(doc).unwrap();
            let kind = v["kind"].as_str().unwrap().to_ascii_lowercase();
            let group = v["apiVersion"]
                .as_str()
                .unwrap()
                .rsplit_once('/')
                .map(|(g, _)| format!(".{g}"))
                .unwrap_or_default();
            out.push(format!(
                "{kind}{group}/{}",
                v["metadata"]["name"].as_str().unwrap()
            ));
        }
    }
    out
}

#[test]
fn addons_apply_idempotently_with_kubeadms_admin() {
    let bed = Bed::start();
    let d = bed.dir.path();
    let dir = fixtures();
    let expected = expected_names();
    assert_eq!(expected.len(), 30, "{expected:?}");

    // kubeadm's admin.conf identity: not system:masters, only what RBAC grants its group.
    let admin = bed.ca.issue(
        "kubernetes-admin",
        &["kubeadm:cluster-admins"],
        &[],
        false,
        true,
    );
    let admin = kubeconfig(d, "kubeadm-admin.conf", &bed.api_url, &bed.ca.pem, &admin);
    let k = |args: &[&str]| kubectl(&admin, args);

    assert_eq!(ok(&k(&["get", "--raw", "/readyz"]), "readyz").trim(), "ok");
    let denied = k(&["get", "nodes"]);
    assert!(!denied.status.success());
    assert!(
        text(&denied).contains("User \"kubernetes-admin\" cannot list resource \"nodes\""),
        "{}",
        text(&denied)
    );
    // What kubeadm does with super-admin.conf (system:masters) before using admin.conf.
    let binding = write(d, "cluster-admins.yaml", CLUSTER_ADMINS);
    ok(&kubectl(&bed.admin, &["apply", "-f", &binding]), "bind");
    ok(&k(&["get", "nodes"]), "get nodes as a cluster admin");

    // The gate fails while objects are missing.
    let before = k(&["get", "-f", &dir, "-o", "name"]);
    assert!(!before.status.success(), "{}", text(&before));
    assert!(text(&before).contains("NotFound"), "{}", text(&before));

    let out = ok(&k(&["apply", "-f", &dir]), "apply addons");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), expected.len(), "{out}");
    for name in &expected {
        assert!(
            lines.contains(&format!("{name} created").as_str()),
            "{name} not created:\n{out}\n{}",
            bed.logs()
        );
    }

    // Again: nothing changes. kubectl reports a PodDisruptionBudget `configured` on every
    // client-side apply, against the real API server too: its selector's patch strategy is
    // `replace`, so the computed patch is never empty. The server writes nothing for it: its
    // resourceVersion stays.
    let rv = |what: &str| {
        ok(
            &k(&[
                "get",
                what,
                "-n",
                "kube-system",
                "-o",
                "jsonpath={.metadata.resourceVersion}",
            ]),
            "resourceVersion",
        )
    };
    let pdb_rv = rv("poddisruptionbudget/coredns");
    let ds_rv = rv("daemonset/kube-proxy");
    let out = ok(&k(&["apply", "-f", &dir]), "re-apply addons");
    for line in out.lines() {
        assert!(
            line.ends_with(" unchanged") || line == "poddisruptionbudget.policy/coredns configured",
            "{line}\n{out}"
        );
    }
    assert_eq!(out.lines().count(), expected.len(), "{out}");
    assert_eq!(
        rv("poddisruptionbudget/coredns"),
        pdb_rv,
        "a no-op patch is not written"
    );
    assert_eq!(rv("daemonset/kube-proxy"), ds_rv);

    // The gate passes and names every object.
    let got = ok(&k(&["get", "-f", &dir, "-o", "name"]), "get -f");
    let mut got: Vec<&str> = got.lines().collect();
    let mut want: Vec<&str> = expected.iter().map(String::as_str).collect();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want);

    // What landed in etcd is what was applied.
    let svc = bed.etcd_get("/registry/services/kube-system/kube-dns", false);
    assert!(svc.contains("\"clusterIP\":\"10.96.0.10\""), "{svc}");
    let cm = bed.etcd_get("/registry/configmaps/kube-flannel/kube-flannel-cfg", false);
    assert!(cm.contains("10.244.0.0/16"), "{cm}");
    let secret = bed.etcd_get(
        "/registry/secrets/kube-system/bootstrap-token-abcdef",
        false,
    );
    assert!(secret.contains("bootstrap.kubernetes.io/token"), "{secret}");

    // One object gone: the gate fails, and applying again restores only that one.
    ok(
        &k(&["delete", "configmap", "coredns", "-n", "kube-system"]),
        "delete",
    );
    let gate = k(&["get", "-f", &dir, "-o", "name"]);
    assert!(!gate.status.success(), "{}", text(&gate));
    assert!(
        text(&gate).contains("configmaps \"coredns\" not found"),
        "{}",
        text(&gate)
    );
    let out = ok(&k(&["apply", "-f", &dir]), "repair");
    for line in out.lines() {
        if line == "configmap/coredns created"
            || line == "poddisruptionbudget.policy/coredns configured"
        {
            continue;
        }
        assert!(line.ends_with(" unchanged"), "{line}\n{out}");
    }
    assert!(out.contains("configmap/coredns created"), "{out}");
    ok(
        &k(&["get", "-f", &dir, "-o", "name"]),
        "get -f after repair",
    );
}

#[test]
fn nodes_json_has_what_a_readiness_gate_reads() {
    let bed = Bed::start();
    let _a = start_kubelet(&bed, "lab-cp1", "v1.32.4");
    let _b = start_kubelet(&bed, "lab-w1", "v1.31.9");
    let nodes = || -> Value {
        serde_json::from_str(&ok(
            &kubectl(&bed.admin, &["get", "nodes", "-o", "json"]),
            "get nodes -o json",
        ))
        .unwrap()
    };
    let ready = |n: &Value| {
        n["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    };
    wait_for("both nodes Ready", Duration::from_secs(30), || {
        let list = nodes();
        list["items"]
            .as_array()
            .is_some_and(|items| items.len() == 2 && items.iter().all(ready))
    });
    let list = nodes();
    assert_eq!(list["kind"], "List", "{list}");
    let mut versions: Vec<(String, String)> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["metadata"]["name"].as_str().unwrap().to_string(),
                n["status"]["nodeInfo"]["kubeletVersion"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    versions.sort();
    assert_eq!(
        versions,
        [
            ("lab-cp1".to_string(), "v1.32.4".to_string()),
            ("lab-w1".to_string(), "v1.31.9".to_string())
        ]
    );
    // The jsonpath a gate would use, over the list.
    let out = ok(
        &kubectl(
            &bed.admin,
            &[
                "get",
                "nodes",
                "-o",
                "jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type==\"Ready\")].status}/{.status.nodeInfo.kubeletVersion} {end}",
            ],
        ),
        "jsonpath",
    );
    assert_eq!(out.trim(), "lab-cp1=True/v1.32.4 lab-w1=True/v1.31.9");
}

/// `kubectl diff -f DIR`, capstan's drift check of the addons: a server-side dry run of
/// each object's client-side apply patch; exit 0 when the live objects are the
/// manifests', 1 with the diff once one was edited by hand.
#[test]
fn kubectl_diff_sees_drift_of_the_addons() {
    let bed = Bed::start();
    let dir = fixtures();
    let k = |args: &[&str]| kubectl(&bed.admin, args);
    ok(&k(&["apply", "-f", &dir]), "apply addons");
    let same = k(&["diff", "-f", &dir]);
    assert_eq!(
        same.status.code(),
        Some(0),
        "diff right after apply:\n{}\n{}",
        text(&same),
        bed.logs()
    );
    assert!(same.stdout.is_empty(), "{}", text(&same));
    // Applying again keeps it so (nothing was written by the dry runs).
    ok(&k(&["apply", "-f", &dir]), "re-apply addons");
    assert_eq!(k(&["diff", "-f", &dir]).status.code(), Some(0));
    // An edit by hand, as `kubectl edit` or `patch` make it.
    ok(
        &k(&[
            "patch",
            "configmap",
            "coredns",
            "-n",
            "kube-system",
            "--type=merge",
            "-p",
            r#"{"data": {"Corefile": ".:53 {\n    errors\n    forward . 9.9.9.9\n}\n"}}"#,
        ]),
        "patch coredns",
    );
    let drift = k(&["diff", "-f", &dir]);
    assert_eq!(drift.status.code(), Some(1), "{}", text(&drift));
    let out = String::from_utf8_lossy(&drift.stdout);
    assert!(out.contains("forward . 9.9.9.9"), "{out}");
    assert!(out.contains("ConfigMap.kube-system.coredns"), "{out}");
    // Only the edited object differs.
    assert!(!out.contains("kube-proxy"), "{out}");
    // Applying the manifests again repairs it.
    ok(&k(&["apply", "-f", &dir]), "repair");
    assert_eq!(k(&["diff", "-f", &dir]).status.code(), Some(0));
    // A missing object is a difference too (a dry-run create, which writes nothing).
    ok(
        &k(&["delete", "configmap", "kube-proxy", "-n", "kube-system"]),
        "delete",
    );
    let missing = k(&["diff", "-f", &dir]);
    assert_eq!(missing.status.code(), Some(1), "{}", text(&missing));
    assert!(
        String::from_utf8_lossy(&missing.stdout).contains("ConfigMap.kube-system.kube-proxy"),
        "{}",
        text(&missing)
    );
    assert!(
        !k(&["get", "configmap", "kube-proxy", "-n", "kube-system"])
            .status
            .success()
    );
}
