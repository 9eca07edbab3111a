//! `capstan init` builds real clusters on lab hosts: real etcd over TLS, real containerd,
//! haproxy/nginx, real kubectl through the API endpoint; the four Kubernetes server
//! binaries are the test-only stand-ins (DESIGN.md, "The test bed"). Each scenario runs
//! init twice and asserts that the second run changes nothing.

mod support;

use std::path::Path;
use std::process::Command;

use support::lab::{Lab, Run, bed_flags, docker, run_capstan};

fn lab(what: &str, flags: &[&str]) -> Lab {
    let mut all: Vec<String> = flags.iter().map(|f| (*f).to_string()).collect();
    all.extend(bed_flags());
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    Lab::up(what, &refs)
}

fn init(inv: &Path) -> Run {
    run_capstan(&["init"], inv)
}

/// init, then init again: the second run must change nothing and say so.
fn init_twice(inv: &Path) -> Run {
    let first = init(inv);
    assert_eq!(first.code, 0, "init failed:\n{}", first.all());
    let second = init(inv);
    assert_eq!(second.code, 0, "second init failed:\n{}", second.all());
    assert!(
        second.stdout.contains(" 0 changed,") && second.stdout.contains(" 0 changes"),
        "the second init changed something:\n{}",
        second.all()
    );
    first
}

/// Real kubectl on this machine with the operator's admin.conf.
fn kubectl(inv: &Path, args: &[&str]) -> String {
    let conf = inv
        .parent()
        .expect("well-formed")
        .join(".capstan/admin.conf");
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&conf)
        .arg("--request-timeout=10s")
        .args(args)
        .output()
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn version(inv: &Path) -> String {
    let text = std::fs::read_to_string(inv).expect("well-formed");
    text.lines()
        .find_map(|l| l.trim().strip_prefix("kubernetes_version: "))
        .expect("well-formed")
        .trim()
        .to_string()
}

/// Every node listed, Ready, with the cluster's kubelet version.
fn assert_nodes_ready(inv: &Path, names: &[&str]) {
    let v: serde_json::Value =
        serde_json::from_str(&kubectl(inv, &["get", "nodes", "-o", "json"])).expect("well-formed");
    let want = version(inv);
    let items = v["items"].as_array().expect("well-formed");
    let mut seen: Vec<&str> = items
        .iter()
        .map(|n| n["metadata"]["name"].as_str().expect("well-formed"))
        .collect();
    seen.sort_unstable();
    let mut expected = names.to_vec();
    expected.sort_unstable();
    assert_eq!(seen, expected);
    for n in items {
        let ready = n["status"]["conditions"]
            .as_array()
            .expect("well-formed")
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        assert!(ready, "{} is not Ready", n["metadata"]["name"]);
        assert_eq!(n["status"]["nodeInfo"]["kubeletVersion"], want.as_str());
    }
}

/// Real etcdctl on `host`, over TLS with the healthcheck client cert: every member healthy.
fn assert_etcd_healthy(lab: &Lab, host: &str, members: usize) {
    let out = docker(&[
        "exec",
        &lab.container(host),
        "/usr/local/bin/etcdctl",
        "--endpoints=https://127.0.0.1:2379",
        "--cacert=/etc/kubernetes/pki/etcd/ca.crt",
        "--cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt",
        "--key=/etc/kubernetes/pki/etcd/healthcheck-client.key",
        "endpoint",
        "health",
        "--cluster",
        "-w",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("well-formed");
    let list = v.as_array().expect("well-formed");
    assert_eq!(list.len(), members, "{out}");
    assert!(list.iter().all(|e| e["health"] == true), "{out}");
}

/// The controller-manager and the scheduler each have one lease holder, a control plane.
fn assert_leases(inv: &Path, cps: &[&str]) {
    for lease in ["kube-controller-manager", "kube-scheduler"] {
        let holder = kubectl(
            inv,
            &[
                "-n",
                "kube-system",
                "get",
                "lease",
                lease,
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ],
        );
        assert!(
            cps.iter().any(|cp| holder.starts_with(cp)),
            "{lease} lease held by `{holder}`"
        );
    }
}

/// haproxy's own view of its backends (its stats socket): every one UP.
fn assert_haproxy_backends_up(lab: &Lab, lb: &str, backends: usize) {
    let script = "import socket; s=socket.socket(socket.AF_UNIX); s.connect('/run/haproxy/admin.sock'); \
                  s.sendall(b'show stat\\n'); d=b''\n\
                  while True:\n  c=s.recv(65536)\n  if not c: break\n  d+=c\n\
                  print(d.decode())";
    let stat = docker(&["exec", &lab.container(lb), "python3", "-c", script]);
    let servers: Vec<&str> = stat
        .lines()
        .filter(|l| {
            l.starts_with("kube-apiserver,")
                && !l.contains(",BACKEND,")
                && !l.contains(",FRONTEND,")
        })
        .collect();
    assert_eq!(servers.len(), backends, "{stat}");
    assert!(servers.iter().all(|l| l.contains(",UP,")), "{stat}");
}

#[test]
fn stacked_etcd_three_control_planes_two_workers_haproxy() {
    let lab = lab(
        "init1",
        &[
            "--control-planes",
            "3",
            "--workers",
            "2",
            "--load-balancers",
            "1",
        ],
    );
    let inv = lab.inventory();
    let first = init_twice(&inv);
    assert!(first.stdout.contains("gate"), "{}", first.all());
    assert_etcd_healthy(&lab, "cp1", 3);
    assert_nodes_ready(&inv, &["cp1", "cp2", "cp3", "w1", "w2"]);
    assert_leases(&inv, &["cp1", "cp2", "cp3"]);
    assert_haproxy_backends_up(&lab, "lb1", 3);
    // The addons are in the API.
    let ds = kubectl(
        &inv,
        &["-n", "kube-system", "get", "daemonset", "-o", "name"],
    );
    assert!(ds.contains("kube-proxy"), "{ds}");
    let svc = kubectl(
        &inv,
        &[
            "-n",
            "kube-system",
            "get",
            "service",
            "kube-dns",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ],
    );
    assert_eq!(svc, "10.96.0.10");
}
