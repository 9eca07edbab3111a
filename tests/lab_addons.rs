//! "The cluster is up" means it: the addons (kube-proxy, flannel, CoreDNS) really run on lab
//! hosts (the kubelet stand-in runs them from the image store, and their stand-ins keep the
//! real contracts: kube-proxy exits where it may not set nf_conntrack_max, CoreDNS exits on a
//! loopback upstream), init waits until they are rolled out and the cluster DNS answers
//! through its Service, and a hand edit of an addon object is seen and reverted.
//!
//! The hosts run systemd-resolved as Ubuntu does: /etc/resolv.conf names its stub at
//! 127.0.0.53, which CoreDNS must never be handed.

mod support;

use std::path::Path;

use support::lab::{Lab, Run, bed_lab, docker, kubectl_admin, run_capstan};

/// systemd-resolved on, with an upstream server on the lab network, and /etc/resolv.conf
/// naming its stub: a stock Ubuntu VM's resolver.
fn resolved_as_on_ubuntu(lab: &Lab, host: &str, upstream: &str) {
    let c = lab.container(host);
    docker(&[
        "exec",
        &c,
        "sh",
        "-c",
        &format!(
            "set -e; mkdir -p /etc/systemd/resolved.conf.d; \
             printf '[Resolve]\\nDNS={upstream}\\n' > /etc/systemd/resolved.conf.d/lab.conf; \
             systemctl start systemd-resolved; \
             printf 'nameserver 127.0.0.53\\noptions edns0 trust-ad\\nsearch .\\n' > /etc/resolv.conf; \
             for i in $(seq 50); do grep -q '^nameserver {upstream}' /run/systemd/resolve/resolv.conf 2>/dev/null && exit 0; sleep 0.2; done; \
             echo 'resolved did not write its upstream file' >&2; exit 1"
        ),
    ]);
}

fn init(inv: &Path) -> Run {
    run_capstan(&["init"], inv)
}

fn assert_unchanged(run: &Run) {
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stdout.contains(" 0 changed,") && run.stdout.contains(" 0 changes"),
        "a second run changed something:\n{}",
        run.all()
    );
}

fn kubectl(inv: &Path, args: &[&str]) -> String {
    kubectl_admin(inv, args).unwrap_or_else(|e| panic!("kubectl {args:?}: {e}"))
}

fn corefile(inv: &Path) -> String {
    kubectl(
        inv,
        &[
            "-n",
            "kube-system",
            "get",
            "configmap",
            "coredns",
            "-o",
            "jsonpath={.data.Corefile}",
        ],
    )
}

fn set_cluster_key(inv: &Path, key_line: &str) {
    let text = std::fs::read_to_string(inv).expect("inventory");
    let mut out = String::new();
    let mut done = false;
    for line in text.lines() {
        if line.trim_start().starts_with("kube_proxy:") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if !done && line.starts_with("cluster:") {
            out.push_str(key_line);
            out.push('\n');
            done = true;
        }
    }
    std::fs::write(inv, out).expect("write inventory");
}

#[test]
fn addons_run_dns_answers_through_resolved_hosts_and_drift_is_reverted() {
    let lab = bed_lab("addons", &["--control-planes", "1", "--workers", "2"]);
    let inv = lab.inventory();
    // The upstream is any address on the lab network that is not loopback: the gate asks
    // for a cluster name, which CoreDNS answers itself.
    for h in ["cp1", "w1", "w2"] {
        resolved_as_on_ubuntu(&lab, h, "192.0.2.53");
    }

    // check sees resolved: the kubelet will get its upstream file.
    let check = run_capstan(&["check", "--output", "json"], &inv);
    assert_eq!(check.code, 0, "{}", check.all());
    assert!(
        check
            .stdout
            .contains("pods with dnsPolicy Default get /run/systemd/resolve/resolv.conf"),
        "{}",
        check.all()
    );

    let first = init(&inv);
    assert_eq!(first.code, 0, "init failed:\n{}", first.all());
    assert!(
        first
            .stdout
            .contains("cluster DNS answering kubernetes.default.svc.cluster.local"),
        "the addons gate did not run:\n{}",
        first.all()
    );
    assert_unchanged(&init(&inv));

    // What the kubelet and the addons were given.
    let cfg = docker(&[
        "exec",
        &lab.container("w1"),
        "cat",
        "/var/lib/kubelet/config.yaml",
    ]);
    assert!(
        cfg.contains("resolvConf: /run/systemd/resolve/resolv.conf"),
        "{cfg}"
    );
    assert!(corefile(&inv).contains("forward . /etc/resolv.conf"));
    let proxy = kubectl(
        &inv,
        &[
            "-n",
            "kube-system",
            "get",
            "configmap",
            "kube-proxy",
            "-o",
            "jsonpath={.data.config\\.conf}",
        ],
    );
    assert!(
        proxy.contains("maxPerCore: 0"),
        "lab hosts are containers:\n{proxy}"
    );
    // Every addon pod runs and is Ready (not merely scheduled).
    let pods: serde_json::Value =
        serde_json::from_str(&kubectl(&inv, &["get", "pods", "-A", "-o", "json"])).expect("json");
    let addon_pods: Vec<&serde_json::Value> = pods["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|p| {
            let ns = p["metadata"]["namespace"].as_str().unwrap_or("");
            (ns == "kube-system" || ns == "kube-flannel")
                && p["metadata"]["annotations"]["kubernetes.io/config.mirror"].is_null()
        })
        .collect();
    // kube-proxy and flannel on 3 nodes, CoreDNS twice.
    assert_eq!(addon_pods.len(), 8, "{pods:#}");
    for p in &addon_pods {
        let ready = p["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        });
        assert!(ready, "not Ready: {p:#}");
    }

    // A hand edit of the Corefile is drift: plan shows it and exits 3, init puts it back.
    let before = corefile(&inv);
    let edited = before.replace("    loop\n", "");
    assert_ne!(before, edited, "the Corefile has a loop line:\n{before}");
    let patch = serde_json::json!({"data": {"Corefile": edited}}).to_string();
    kubectl(
        &inv,
        &[
            "-n",
            "kube-system",
            "patch",
            "configmap",
            "coredns",
            "--type",
            "merge",
            "-p",
            &patch,
        ],
    );
    let plan = run_capstan(&["plan", "--detailed-exitcode"], &inv);
    assert_eq!(plan.code, 3, "{}", plan.all());
    let shows_loop_added = plan.stdout.lines().any(|l| {
        let l = l.trim_start();
        l.starts_with('+') && l[1..].trim() == "loop"
    });
    assert!(
        plan.stdout.contains("apply-addons") && shows_loop_added,
        "the plan does not show the drift:\n{}",
        plan.all()
    );
    let dry = run_capstan(&["init", "--dry-run"], &inv);
    assert!(dry.stdout.contains("apply-addons"), "{}", dry.all());
    assert_eq!(corefile(&inv), edited, "a dry run changed the cluster");
    let fixed = init(&inv);
    assert_eq!(fixed.code, 0, "{}", fixed.all());
    assert!(
        fixed.stdout.contains("cp1 changed (addons): 1 change\n"),
        "{}",
        fixed.all()
    );
    assert_eq!(corefile(&inv), before);
    assert_unchanged(&init(&inv));
    let plan = run_capstan(&["plan", "--detailed-exitcode"], &inv);
    assert_eq!(plan.code, 0, "{}", plan.all());

    // kube-proxy told to size nf_conntrack_max on container hosts exits, as the real one
    // does: the gate fails naming the pod and its last log line.
    set_cluster_key(&inv, "  kube_proxy: {conntrack_max_per_core: 32768}");
    let broken = run_capstan(&["init", "--addons-timeout", "60"], &inv);
    assert_eq!(broken.code, 1, "{}", broken.all());
    let all = broken.all();
    assert!(all.contains("pod kube-system/kube-proxy-"), "{all}");
    assert!(
        all.contains("nf_conntrack_max"),
        "the last log line is missing:\n{all}"
    );
    set_cluster_key(&inv, "  kube_proxy: {conntrack_max_per_core: 0}");
    let healed = init(&inv);
    assert_eq!(healed.code, 0, "{}", healed.all());
    assert_unchanged(&init(&inv));
}
