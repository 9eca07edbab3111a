//! `capstan init` builds real clusters on lab hosts: real etcd over TLS, real containerd,
//! haproxy/nginx, real kubectl through the API endpoint; the four Kubernetes server
//! binaries are the test-only stand-ins (DESIGN.md, "The test bed"). Each scenario runs
//! init twice and asserts that the second run changes nothing.

mod support;

use std::path::Path;
use std::process::Command;

use support::lab::{Lab, Run, bed_flags, docker, etcdctl_on, kubectl_admin, run_capstan, said_of};

fn lab(what: &str, flags: &[&str]) -> Lab {
    support::lab::bed_lab(what, flags)
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

/// Real kubectl on this machine with the operator's admin.conf; `None` when it fails.
fn try_kubectl(inv: &Path, args: &[&str]) -> Option<String> {
    kubectl_admin(inv, args).ok()
}

/// Real kubectl on this machine with the operator's admin.conf.
fn kubectl(inv: &Path, args: &[&str]) -> String {
    kubectl_admin(inv, args).unwrap_or_else(|e| panic!("kubectl {args:?}: {e}"))
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
    let container = lab.container(host);
    let mut args = etcdctl_on(&container);
    args.extend(["endpoint", "health", "--cluster", "-w", "json"]);
    let out = docker(&args);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("well-formed");
    let list = v.as_array().expect("well-formed");
    assert_eq!(list.len(), members, "{out}");
    assert!(list.iter().all(|e| e["health"] == true), "{out}");
}

/// The controller-manager and the scheduler each have one lease holder, a control plane.
fn assert_leases(inv: &Path, cps: &[&str]) {
    for lease in ["kube-controller-manager", "kube-scheduler"] {
        let holder = lease_holder(inv, lease);
        assert!(
            cps.iter().any(|cp| holder.starts_with(cp)),
            "{lease} lease held by `{holder}`"
        );
    }
}

/// haproxy's own view of its backends (its stats socket): every one UP. A reload or an API
/// server restart resets a server's checks, so this waits (at most 30 s) for them to pass.
fn assert_haproxy_backends_up(lab: &Lab, lb: &str, backends: usize) {
    let script = "import socket; s=socket.socket(socket.AF_UNIX); s.connect('/run/haproxy/admin.sock'); \
                  s.sendall(b'show stat\\n'); d=b''\n\
                  while True:\n  c=s.recv(65536)\n  if not c: break\n  d+=c\n\
                  print(d.decode())";
    let started = std::time::Instant::now();
    loop {
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
        if servers.iter().all(|l| l.contains(",UP,")) {
            return;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "not every backend is UP after 30 s:\n{stat}"
        );
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

#[test]
fn stacked_etcd_three_control_planes_two_workers_haproxy_then_failover_and_reset() {
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
    // Today's cluster: the newest minor on containerd 2 hosts (forky's 2.1.9).
    support::upgrade::set_version(&inv, "v1.37.1");
    support::lab::set_node_version(&inv, "containerd", "v2.1.9");
    let first = init_twice(&inv);
    assert!(first.stdout.contains("gate"), "{}", first.all());
    for host in ["cp1", "w1"] {
        let v = docker(&[
            "exec",
            &lab.container(host),
            "/usr/local/bin/containerd",
            "--version",
        ]);
        assert!(v.contains("2.1.9"), "{host}: {v}");
    }
    let nodes = kubectl(
        &inv,
        &[
            "get",
            "nodes",
            "-o",
            "jsonpath={.items[*].status.nodeInfo.kubeletVersion}",
        ],
    );
    assert_eq!(
        nodes.split_whitespace().collect::<Vec<_>>(),
        ["v1.37.1"; 5],
        "{nodes}"
    );
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

    failover(&lab, &inv);
    reset_a_worker_and_a_control_plane(&lab, &inv);
}

fn lease_holder(inv: &Path, lease: &str) -> String {
    kubectl(
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
    )
}

/// The control plane holding the controller-manager lease goes away: the API stays
/// reachable through the LB, another control plane takes the lease within the lease
/// duration (15 s, plus retry periods), etcd keeps quorum. Then the host comes back.
fn failover(lab: &Lab, inv: &Path) {
    let holder = lease_holder(inv, "kube-controller-manager");
    let host = holder
        .split('_')
        .next()
        .expect("holder names its host")
        .to_string();
    assert!(host.starts_with("cp"), "{holder}");
    let stopped = std::time::Instant::now();
    docker(&["stop", "-t", "1", &lab.container(&host)]);
    let taken = loop {
        // Requests in flight to the stopped host may fail until the LB's checks mark it
        // down; the lease must still move in time.
        let now = try_kubectl(
            inv,
            &[
                "-n",
                "kube-system",
                "get",
                "lease",
                "kube-controller-manager",
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ],
        )
        .unwrap_or_else(|| host.clone());
        if !now.starts_with(&host) {
            break now;
        }
        assert!(
            stopped.elapsed() < std::time::Duration::from_secs(20),
            "no other control plane took the lease in 20 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    assert!(taken.starts_with("cp"), "{taken}");
    let survivor = ["cp1", "cp2", "cp3"]
        .into_iter()
        .find(|c| *c != host)
        .expect("another control plane");
    // etcd keeps quorum: 2 of 3 healthy, writes go through (the lease moved).
    let container = lab.container(survivor);
    let out = Command::new("docker")
        .args(etcdctl_on(&container))
        .args(["endpoint", "health"])
        .output()
        .expect("etcdctl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    kubectl(inv, &["get", "--raw", "/readyz"]);
    lab.bring_up();
    // Back in the cluster: init converges it (nothing to change) and every node is Ready.
    let again = init(inv);
    assert_eq!(again.code, 0, "{}", again.all());
    assert_nodes_ready(inv, &["cp1", "cp2", "cp3", "w1", "w2"]);
}

/// Paths capstan puts on a node; after reset none is left.
const NODE_PATHS: &[&str] = &[
    "/etc/kubernetes",
    "/var/lib/capstan",
    "/usr/local/bin/kubelet",
    "/usr/local/bin/kubectl",
    "/etc/systemd/system/kubelet.service",
    "/usr/local/bin/containerd",
    "/usr/local/sbin/runc",
    "/etc/containerd",
    "/etc/systemd/system/containerd.service",
    "/etc/sysctl.d/99-capstan.conf",
    "/etc/etcd",
    "/usr/local/bin/etcd",
    "/etc/systemd/system/etcd.service",
    "/var/lib/etcd/member",
];

fn left_over(lab: &Lab, host: &str) -> Vec<String> {
    NODE_PATHS
        .iter()
        .filter(|p| {
            Command::new("docker")
                .args(["exec", &lab.container(host), "test", "-e", p])
                .status()
                .expect("docker exec")
                .success()
        })
        .map(|p| (*p).to_string())
        .collect()
}

fn reset_a_worker_and_a_control_plane(lab: &Lab, inv: &Path) {
    let dry = run_capstan(&["reset", "--hosts", "w2,cp3", "--dry-run"], inv);
    assert_eq!(dry.code, 0, "{}", dry.all());
    assert!(
        dry.stdout.contains("would run etcdctl member remove"),
        "{}",
        dry.all()
    );
    assert!(
        left_over(lab, "cp3").len() > 5,
        "the dry run removed something"
    );

    let reset = run_capstan(&["reset", "--hosts", "w2,cp3"], inv);
    assert_eq!(reset.code, 0, "{}", reset.all());
    assert!(
        reset.stdout.contains("etcd member cp3 removed"),
        "{}",
        reset.all()
    );
    assert_nodes_ready(inv, &["cp1", "cp2", "w1"]);
    assert_etcd_healthy(lab, "cp1", 2);
    assert_haproxy_backends_up(lab, "lb1", 2);
    for host in ["w2", "cp3"] {
        assert_eq!(
            left_over(lab, host),
            Vec::<String>::new(),
            "{host} is not clean"
        );
    }
    let again = run_capstan(&["reset", "--hosts", "w2,cp3"], inv);
    assert_eq!(again.code, 0, "{}", again.all());
    assert!(
        again.stdout.contains("(0 paths removed)"),
        "{}",
        again.all()
    );
    assert!(again.stdout.contains(" 0 changes"), "{}", again.all());
}

/// nginx's view: every control plane is a backend of its stream proxy, and every one
/// answers. Open-source nginx has no upstream-state API; its error log is where it says a
/// backend failed, so: a clean log, twice as many connections through it as there are
/// backends (round robin reaches each), all answered, and still a clean log.
fn assert_nginx_backends(lab: &Lab, lb: &str, backends: usize) {
    let c = lab.container(lb);
    let conf = docker(&["exec", &c, "cat", "/etc/nginx/nginx.conf"]);
    let servers = conf
        .lines()
        .filter(|l| l.trim_start().starts_with("server ") && l.contains(":6443"))
        .count();
    assert_eq!(servers, backends, "{conf}");
    docker(&["exec", &c, "sh", "-c", ": > /var/log/nginx/error.log"]);
    for _ in 0..backends * 2 {
        let code = docker(&[
            "exec",
            &c,
            "sh",
            "-c",
            "curl -sk -o /dev/null -w '%{http_code}' https://$(hostname -i | cut -d' ' -f1):6443/healthz",
        ]);
        assert_eq!(code.trim(), "200", "through nginx: {code}");
    }
    let errors = docker(&["exec", &c, "cat", "/var/log/nginx/error.log"]);
    assert!(
        !errors.contains("upstream"),
        "nginx reports a backend failing:\n{errors}"
    );
}

fn edit_inventory(inv: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(inv).expect("read the inventory");
    assert!(text.contains(from), "{text}");
    std::fs::write(inv, text.replace(from, to)).expect("write the inventory");
}

#[test]
fn external_etcd_two_control_planes_one_worker_nginx() {
    let lab = lab(
        "init2",
        &[
            "--control-planes",
            "2",
            "--workers",
            "1",
            "--etcd",
            "3",
            "--load-balancers",
            "1",
        ],
    );
    let inv = lab.inventory();
    edit_inventory(
        &inv,
        "    mode: external-lb\n",
        "    mode: external-lb\n    software: nginx\n",
    );
    // One label the kubelet sets itself (--node-labels), one it may not (a real kubelet
    // refuses to start with it, and so does the stand-in): capstan sets that through the API.
    edit_inventory(
        &inv,
        "    roles: [worker]\n",
        "    roles: [worker]\n    labels: {disk: ssd, node-role.kubernetes.io/worker: \"\"}\n",
    );
    let first = init_twice(&inv);
    assert!(
        first.stdout.contains("node labels"),
        "no node labels phase:\n{}",
        first.all()
    );
    assert_etcd_healthy(&lab, "etcd1", 3);
    assert_nodes_ready(&inv, &["cp1", "cp2", "w1"]);
    let with = |label: &str| {
        let mut nodes: Vec<String> = kubectl(&inv, &["get", "nodes", "-l", label, "-o", "name"])
            .lines()
            .map(String::from)
            .collect();
        nodes.sort();
        nodes
    };
    assert_eq!(
        with("node-role.kubernetes.io/control-plane"),
        ["node/cp1", "node/cp2"]
    );
    assert_eq!(with("node-role.kubernetes.io/worker"), ["node/w1"]);
    assert_eq!(with("disk=ssd"), ["node/w1"]);
    let kubelet = docker(&[
        "exec",
        &lab.container("w1"),
        "cat",
        "/etc/systemd/system/kubelet.service",
    ]);
    assert!(
        kubelet.contains("--node-labels=disk=ssd") && !kubelet.contains("node-role"),
        "{kubelet}"
    );
    assert_leases(&inv, &["cp1", "cp2"]);
    assert_nginx_backends(&lab, "lb1", 2);
    // No etcd on the control planes under the external topology.
    let unit = Command::new("docker")
        .args([
            "exec",
            &lab.container("cp1"),
            "test",
            "-e",
            "/etc/systemd/system/etcd.service",
        ])
        .status()
        .expect("docker exec");
    assert!(
        !unit.success(),
        "cp1 has an etcd unit under the external topology"
    );
}

#[test]
fn local_proxy_on_every_node_three_control_planes_one_worker() {
    let lab = lab("init3", &["--control-planes", "3", "--workers", "1"]);
    let inv = lab.inventory();
    assert!(
        std::fs::read_to_string(&inv)
            .expect("inventory")
            .contains("mode: local-proxy")
    );
    init_twice(&inv);
    assert_etcd_healthy(&lab, "cp2", 3);
    assert_nodes_ready(&inv, &["cp1", "cp2", "cp3", "w1"]);
    assert_leases(&inv, &["cp1", "cp2", "cp3"]);
    // The worker's kubelet reaches the API through its own proxy on 127.0.0.1:6443.
    let conf = docker(&[
        "exec",
        &lab.container("w1"),
        "cat",
        "/etc/kubernetes/kubelet.conf",
    ]);
    assert!(conf.contains("server: https://127.0.0.1:6443"), "{conf}");
    let readyz = docker(&[
        "exec",
        &lab.container("w1"),
        "curl",
        "-sk",
        "https://127.0.0.1:6443/readyz",
    ]);
    assert!(!readyz.is_empty());
}

#[test]
fn single_control_plane_one_worker_and_a_foreign_ca_is_refused() {
    let lab = lab("init4", &["--control-planes", "1", "--workers", "1"]);
    let inv = lab.inventory();
    init_twice(&inv);
    assert_nodes_ready(&inv, &["cp1", "w1"]);
    assert_leases(&inv, &["cp1"]);

    // Drift on one host: init repairs only that (and restarts what depends on it).
    docker(&[
        "exec",
        &lab.container("w1"),
        "sh",
        "-c",
        "echo '# drift' >> /var/lib/kubelet/config.yaml",
    ]);
    let repaired = init(&inv);
    assert_eq!(repaired.code, 0, "{}", repaired.all());
    assert!(
        repaired.stdout.contains(" 1 changed,"),
        "{}",
        repaired.all()
    );
    assert!(
        said_of(&repaired.stdout, "w1", "changed (kubelet)"),
        "{}",
        repaired.all()
    );
    assert!(
        !said_of(&repaired.stdout, "cp1", "changed"),
        "{}",
        repaired.all()
    );
    assert_nodes_ready(&inv, &["cp1", "w1"]);

    // A snapshot of etcd, verified, in .capstan/backups/; this machine's etcdctl reads it.
    let snap = run_capstan(&["etcd", "snapshot", "--output", "json"], &inv);
    assert_eq!(snap.code, 0, "{}", snap.all());
    let doc: serde_json::Value = serde_json::from_str(&snap.stdout).expect("JSON");
    let path = doc["path"].as_str().expect("path");
    assert!(path.contains("/.capstan/backups/etcd-"), "{path}");
    support::lab::assert_snapshot_readable(Path::new(path));
    assert!(doc["total_keys"].as_i64().expect("keys") > 10, "{doc}");

    // certs renew: re-issued, installed, and the API server restarted with it (the serial
    // it serves changes); init afterwards has nothing to do.
    let serial = || {
        docker(&[
            "exec",
            &lab.container("cp1"),
            "sh",
            "-c",
            // Empty while the API server restarts.
            "echo | openssl s_client -connect $(hostname -i | cut -d' ' -f1):6443 2>/dev/null | openssl x509 -noout -serial 2>/dev/null || true",
        ])
    };
    let before = serial();
    let renewed = run_capstan(&["certs", "renew", "apiserver"], &inv);
    assert_eq!(renewed.code, 0, "{}", renewed.all());
    assert!(
        renewed.stdout.contains("cp1: certificates"),
        "{}",
        renewed.all()
    );
    let started = std::time::Instant::now();
    assert!(
        before.contains("serial="),
        "no certificate served: {before}"
    );
    while !serial().contains("serial=") || serial() == before {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "the API server still serves the old certificate ({before})"
        );
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    assert!(!renewed.all().contains("PRIVATE KEY"));
    let settled = init(&inv);
    assert_eq!(settled.code, 0, "{}", settled.all());
    assert!(settled.stdout.contains(" 0 changes"), "{}", settled.all());

    // Another PKI (another cluster's inventory): init refuses before changing anything.
    let state = inv.parent().expect("dir").join(".capstan");
    std::fs::rename(state.join("pki"), state.join("pki.mine")).expect("move the PKI");
    let generated = run_capstan(&["certs", "generate"], &inv);
    assert_eq!(generated.code, 0, "{}", generated.all());
    let before = docker(&[
        "exec",
        &lab.container("cp1"),
        "sha256sum",
        "/etc/kubernetes/pki/ca.crt",
    ]);
    let refused = init(&inv);
    assert_eq!(refused.code, 1, "{}", refused.all());
    assert!(
        refused.all().contains("another cluster CA") || refused.all().contains("another"),
        "{}",
        refused.all()
    );
    assert!(
        refused.all().contains("Nothing was changed"),
        "{}",
        refused.all()
    );
    let after = docker(&[
        "exec",
        &lab.container("cp1"),
        "sha256sum",
        "/etc/kubernetes/pki/ca.crt",
    ]);
    assert_eq!(before, after);
    std::fs::remove_dir_all(state.join("pki")).expect("drop the foreign PKI");
    std::fs::rename(state.join("pki.mine"), state.join("pki")).expect("restore the PKI");
    let again = init(&inv);
    assert_eq!(again.code, 0, "{}", again.all());
    assert!(again.stdout.contains(" 0 changes"), "{}", again.all());
}

#[test]
fn join_two_control_planes_and_a_worker_then_refuse_a_join_with_a_member_down() {
    let small = [
        "--control-planes",
        "1",
        "--workers",
        "1",
        "--load-balancers",
        "1",
    ];
    let lab = lab("join", &small);
    let inv = lab.inventory();
    init_twice(&inv);
    let haproxy_pid = |lab: &Lab| {
        docker(&[
            "exec",
            &lab.container("lb1"),
            "systemctl",
            "show",
            "-p",
            "MainPID",
            "--value",
            "haproxy.service",
        ])
        .trim()
        .to_string()
    };
    let pid = haproxy_pid(&lab);

    // The same lab with two more control planes and one more worker; the inventory grows.
    let mut flags: Vec<String> = [
        "--control-planes",
        "3",
        "--workers",
        "2",
        "--load-balancers",
        "1",
    ]
    .iter()
    .map(|f| (*f).to_string())
    .collect();
    flags.extend(bed_flags());
    let out = support::lab::capstan()
        .args(["lab", "up", "--name", &lab.name, "--out"])
        .arg(lab.dir.path())
        .args(&flags)
        .output()
        .expect("lab up");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // init refuses: the new members must be joined.
    let refused = init(&inv);
    assert_eq!(refused.code, 1, "{}", refused.all());
    assert!(refused.all().contains("capstan join"), "{}", refused.all());

    let dry = run_capstan(&["join", "--dry-run"], &inv);
    assert_eq!(dry.code, 0, "{}", dry.all());
    assert!(dry.stdout.contains("etcd member add cp2"), "{}", dry.all());

    let joined = run_capstan(&["join"], &inv);
    assert_eq!(joined.code, 0, "{}", joined.all());
    let again = run_capstan(&["join"], &inv);
    assert_eq!(again.code, 0, "{}", again.all());
    assert!(again.stdout.contains(" 0 changes"), "{}", again.all());

    assert_etcd_healthy(&lab, "cp1", 3);
    assert_nodes_ready(&inv, &["cp1", "cp2", "cp3", "w1", "w2"]);
    assert_haproxy_backends_up(&lab, "lb1", 3);
    assert_eq!(
        haproxy_pid(&lab),
        pid,
        "haproxy was restarted, not reloaded"
    );

    // A member down: join refuses before any change.
    docker(&["exec", &lab.container("cp3"), "systemctl", "stop", "etcd"]);
    let refused = run_capstan(&["join"], &inv);
    assert_eq!(refused.code, 1, "{}", refused.all());
    assert!(
        refused.all().contains("etcd is not healthy"),
        "{}",
        refused.all()
    );
    assert!(refused.all().contains("cp3"), "{}", refused.all());
    assert!(!refused.stdout.contains(" changed ("), "{}", refused.all());

    // Still with cp3's member down, taking cp2 out would leave one healthy member of two:
    // reset refuses without --force, before any change.
    let refused = run_capstan(&["reset", "--hosts", "cp2"], &inv);
    assert_eq!(refused.code, 1, "{}", refused.all());
    assert!(
        refused.all().contains("below the quorum of 2"),
        "{}",
        refused.all()
    );
    assert!(refused.all().contains("--force"), "{}", refused.all());
    docker(&[
        "exec",
        &lab.container("cp2"),
        "test",
        "-f",
        "/etc/kubernetes/manifests/kube-apiserver.yaml",
    ]);
    docker(&["exec", &lab.container("cp3"), "systemctl", "start", "etcd"]);
    assert_etcd_healthy(&lab, "cp1", 3);
}
