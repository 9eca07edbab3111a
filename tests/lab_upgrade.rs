//! `capstan upgrade plan` against real clusters built by `capstan init` on lab hosts: the
//! versions are read live (the API server's /version, the manifests, the Nodes, the
//! binaries, etcd's endpoint status), the allowed targets come from the test mirror
//! (v1.31.9, v1.32.4, v1.32.5, v1.33.1, then one release of each minor to v1.37.1), and
//! refused targets exit 2 with the reason and the allowed path.

mod support;

use std::path::Path;

use support::lab::{Lab, Run, bed, docker, run_capstan};
use support::upgrade::{
    assert_all_at, assert_converged, assert_not_redone, assert_snapshot, assert_watched,
    deploy_web, host_outcome, init, journal, kubectl_lb, running_web_pods, set_version,
    unschedulable, watch_api,
};

fn lab(what: &str, flags: &[&str]) -> Lab {
    support::lab::bed_lab(what, flags)
}

fn plan(inv: &Path, extra: &[&str]) -> Run {
    let mut args = vec!["upgrade", "plan"];
    args.extend_from_slice(extra);
    run_capstan(&args, inv)
}

fn plan_json(inv: &Path, extra: &[&str]) -> (Run, serde_json::Value) {
    let mut args = vec!["--output", "json"];
    args.extend_from_slice(extra);
    let run = plan(inv, &args);
    let json = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", run.all()));
    (run, json)
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|x| x.as_str().expect("a string").to_string())
        .collect()
}

/// The table row of `component` on `host`: (current, target).
fn row(json: &serde_json::Value, component: &str, host: &str) -> (String, String) {
    let rows = json["components"].as_array().expect("components");
    let r = rows
        .iter()
        .find(|r| r["component"] == component && r["host"] == host)
        .unwrap_or_else(|| panic!("no row {component} on {host}: {json:#}"));
    (
        r["current"].as_str().unwrap_or_default().to_string(),
        r["target"].as_str().unwrap_or("-").to_string(),
    )
}

#[test]
fn plan_on_a_v1_32_cluster_lists_targets_refuses_downgrades_and_reports_skew() {
    let lab = lab("upg32", &["--control-planes", "1", "--workers", "1"]);
    let inv = lab.inventory();
    set_version(&inv, "v1.32.4");
    init(&inv);

    // Text: the cluster version, both targets, the table, the steps, what to do next.
    let run = plan(&inv, &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    let out = &run.stdout;
    assert!(out.contains("Cluster version: v1.32.4"), "{}", run.all());
    assert!(
        out.contains("Allowed targets: v1.32.5 (newest patch of v1.32), v1.33.1 (next minor"),
        "{}",
        run.all()
    );
    assert!(out.contains("COMPONENT"), "{}", run.all());
    assert!(out.contains("1. etcd snapshot on cp1"), "{}", run.all());
    assert!(out.contains("2. control plane cp1"), "{}", run.all());
    assert!(out.contains("3. workers batch 1: w1"), "{}", run.all());
    assert!(
        out.contains("capstan upgrade apply -i") && out.contains("--to v1.33.1"),
        "{}",
        run.all()
    );

    // JSON: the same, with every component read live.
    let (run, json) = plan_json(&inv, &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(json["cluster_version"], "v1.32.4");
    let allowed: Vec<&str> = json["allowed_targets"]
        .as_array()
        .expect("allowed")
        .iter()
        .map(|t| t["version"].as_str().expect("version"))
        .collect();
    assert_eq!(allowed, ["v1.32.5", "v1.33.1"]);
    assert_eq!(
        strings(&json["available"]["versions"]),
        [
            "v1.31.9", "v1.32.4", "v1.32.5", "v1.33.1", "v1.34.5", "v1.35.2", "v1.36.4", "v1.37.1"
        ]
    );
    assert_eq!(json["target"], "v1.33.1");
    let steps: Vec<&str> = json["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["step"].as_str().expect("step"))
        .collect();
    assert_eq!(steps, ["etcd-snapshot", "control-plane", "workers"]);
    for (component, host) in [
        ("kube-apiserver", "cp1"),
        ("kube-controller-manager", "cp1"),
        ("kube-scheduler", "cp1"),
        ("kubelet", "cp1"),
        ("kubelet", "w1"),
        ("kubectl", "cp1"),
        ("kubectl", "w1"),
    ] {
        // kubectl is the machine's build: its version may carry a suffix (v1.32.4-dispatcher).
        let (current, target) = row(&json, component, host);
        assert!(
            current.starts_with("v1.32.4"),
            "{component} on {host}: {current}"
        );
        assert_eq!(target, "v1.33.1", "{component} on {host}");
    }
    // etcd (Debian's 3.4 in the test mirror) and containerd are read too.
    let (etcd, _) = row(&json, "etcd", "cp1");
    assert!(etcd.starts_with("3."), "{etcd}");
    let (containerd, _) = row(&json, "containerd", "w1");
    assert!(
        containerd.starts_with(|c: char| c.is_ascii_digit()),
        "{containerd}"
    );
    // Both readings of each kubelet: the binary and the Node.
    let readings = json["readings"]["readings"].as_array().expect("readings");
    for source in ["binary", "node"] {
        assert!(
            readings.iter().any(|r| r["part"] == "kubelet"
                && r["host"] == "w1"
                && r["source"] == source
                && r["raw"] == "v1.32.4"),
            "{source}: {json:#}"
        );
    }
    assert!(json["unreachable"].as_object().expect("map").is_empty());

    // --to the next minor: allowed.
    let run = plan(&inv, &["--to", "v1.33.1"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stdout.contains("What will happen, in order"),
        "{}",
        run.all()
    );
    // --to the next patch: allowed.
    let run = plan(&inv, &["--to", "v1.32.5", "--max-unavailable", "50%"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stdout.contains("--max-unavailable 50%"),
        "{}",
        run.all()
    );

    // A downgrade: refused, exit 2, with the reason; JSON says the same.
    let run = plan(&inv, &["--to", "v1.31.9"]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains("does not downgrade"), "{}", run.all());
    assert!(
        run.stdout.contains("Refused: --to v1.31.9"),
        "{}",
        run.all()
    );
    let (run, json) = plan_json(&inv, &["--to", "v1.31.9"]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert_eq!(json["refused"]["detail"]["kind"], "downgrade");

    // A version the mirror lacks: refused with the choices.
    let run = plan(&inv, &["--to", "v1.33.0"]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr.contains("not available from the mirror"),
        "{}",
        run.all()
    );
    assert!(run.stderr.contains("v1.32.5, v1.33.1"), "{}", run.all());

    // Bad input: not a version.
    let run = plan(&inv, &["--to", "1.33"]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains("vMAJOR.MINOR.PATCH"), "{}", run.all());

    // (docker cp cannot write below the tmpfs mounted at /tmp: the file goes beside the
    // kubelet and is renamed over it.)
    // A hand-made skew violation: w1's kubelet binary replaced by v1.33.1's (newer than
    // the API server). The plan reports it and refuses every target.
    let newer = bed().join("mirror/release/v1.33.1/bin/linux/amd64/kubelet");
    let w1 = lab.container("w1");
    docker(&[
        "cp",
        &newer.display().to_string(),
        &format!("{w1}:/usr/local/bin/kubelet.test-new"),
    ]);
    docker(&[
        "exec",
        &w1,
        "sh",
        "-c",
        "chmod 0755 /usr/local/bin/kubelet.test-new && mv -f /usr/local/bin/kubelet.test-new /usr/local/bin/kubelet",
    ]);
    let (run, json) = plan_json(&inv, &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    let violations = json["violations"].as_array().expect("violations");
    assert_eq!(violations.len(), 1, "{json:#}");
    assert_eq!(violations[0]["host"], "w1");
    assert_eq!(violations[0]["part"], "kubelet");
    assert!(
        json["allowed_targets"]
            .as_array()
            .expect("allowed")
            .is_empty()
    );
    let run = plan(&inv, &["--to", "v1.32.5"]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr.contains("outside the version-skew policy")
            && run.stderr.contains("kubelet on w1 is v1.33.1"),
        "{}",
        run.all()
    );
}

#[test]
fn plan_on_a_v1_31_cluster_refuses_skipping_a_minor() {
    let lab = lab("upg31", &["--control-planes", "1"]);
    let inv = lab.inventory();
    set_version(&inv, "v1.31.9");
    init(&inv);

    let (run, json) = plan_json(&inv, &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(json["cluster_version"], "v1.31.9");
    // v1.31.9 is the newest v1.31 on the mirror: only v1.32.5.
    let allowed: Vec<&str> = json["allowed_targets"]
        .as_array()
        .expect("allowed")
        .iter()
        .map(|t| t["version"].as_str().expect("version"))
        .collect();
    assert_eq!(allowed, ["v1.32.5"]);

    let run = plan(&inv, &["--to", "v1.33.1"]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains("skips a minor"), "{}", run.all());
    assert!(
        run.stderr
            .contains("upgrade to v1.32.5 first, then to v1.33.1"),
        "{}",
        run.all()
    );
    let (run, json) = plan_json(&inv, &["--to", "v1.33.1"]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert_eq!(json["refused"]["detail"]["kind"], "skips-minor");
    assert_eq!(json["refused"]["detail"]["next"], "v1.32.5");
}

/// The image store's folder of the v1.32.5 kube-apiserver image, inside the lab hosts.
const APISERVER_IMAGE: &str = "/var/lib/standin-images/registry.k8s.io/kube-apiserver/v1.32.5";

/// Makes `image` unavailable on `host` (an empty folder mounted over it: what the kubelet
/// sees when a pull fails), or available again.
fn shadow_image(lab: &Lab, host: &str, image: &str, shadow: bool) {
    let script = if shadow {
        format!("mkdir -p /run/capstan-test-empty && mount --bind /run/capstan-test-empty {image}")
    } else {
        format!("umount {image}")
    };
    docker(&["exec", &lab.container(host), "sh", "-c", &script]);
}

/// 3 control planes, 2 workers and an LB; a Deployment of 4 and a PDB (minAvailable 3).
/// v1.31.9 → v1.32.5 with a fault: cp2's target kube-apiserver image is unavailable, so
/// the rollout stops there (cp2 named, exit 1, cp2 cordoned, the journal says where, the
/// cluster serving); with the image back a re-run skips cp1 and completes. Then
/// v1.32.5 → v1.33.1. All along a background poll checks the API through the LB, the
/// cordoned workers and the PDB.
#[test]
#[allow(clippy::too_many_lines)]
fn apply_rolls_v1_31_to_v1_32_to_v1_33_with_the_api_serving_and_resumes() {
    const WORKERS: &[&str] = &["w1", "w2"];
    let lab = lab(
        "upapply",
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
    set_version(&inv, "v1.31.9");
    init(&inv);
    deploy_web(&inv);

    // The dry run shows the sequence and changes nothing.
    let managed = "sha256sum /etc/kubernetes/manifests/* /usr/local/bin/kubelet /usr/local/bin/kubectl; \
                   ls -a /var/lib/capstan; kubectl --kubeconfig /etc/kubernetes/admin.conf get nodes \
                   -o jsonpath='{.items[*].spec.unschedulable}'";
    let before: Vec<String> = ["cp1", "cp2", "cp3"]
        .iter()
        .map(|h| docker(&["exec", &lab.container(h), "sh", "-c", managed]))
        .collect();
    let dry = run_capstan(&["upgrade", "apply", "--to", "v1.32.5", "--dry-run"], &inv);
    assert_eq!(dry.code, 0, "{}", dry.all());
    let after: Vec<String> = ["cp1", "cp2", "cp3"]
        .iter()
        .map(|h| docker(&["exec", &lab.container(h), "sh", "-c", managed]))
        .collect();
    assert_eq!(before, after, "the dry run changed a control plane");
    assert!(
        dry.stdout.contains("would wait for etcd snapshot"),
        "{}",
        dry.all()
    );
    assert!(
        dry.stdout.contains("kube-apiserver:v1.32.5"),
        "{}",
        dry.all()
    );
    // Without a terminal a real run needs --yes; a skipped minor is refused (exit 2) by
    // the version-skew policy, with the path, before anything changes.
    let refused = run_capstan(&["upgrade", "apply", "--to", "v1.32.5"], &inv);
    assert_eq!(refused.code, 2, "{}", refused.all());
    let skip = run_capstan(&["upgrade", "apply", "--to", "v1.33.1", "--yes"], &inv);
    assert_eq!(skip.code, 2, "{}", skip.all());
    assert!(
        skip.stdout
            .contains("upgrade to v1.32.5 first, then to v1.33.1"),
        "{}",
        skip.all()
    );

    // v1.31.9 → v1.32.5, stopped at cp2 by a real fault, then resumed.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = watch_api(&inv, WORKERS, 3, std::sync::Arc::clone(&stop));
    shadow_image(&lab, "cp2", APISERVER_IMAGE, true);
    let failed = run_capstan(
        &[
            "upgrade",
            "apply",
            "--to",
            "v1.32.5",
            "--yes",
            "--gate-timeout",
            "30",
        ],
        &inv,
    );
    assert_eq!(failed.code, 1, "{}", failed.all());
    assert!(
        failed
            .stdout
            .contains("stopped: gate `the API server of cp2 ready at v1.32.5`"),
        "{}",
        failed.all()
    );
    assert!(
        failed.stdout.contains("not reached after 30s"),
        "{}",
        failed.all()
    );
    // The cluster serves through the LB (cp1 at the target, cp3 not yet), cp2 stays
    // cordoned, and the journal says where the rollout stopped.
    assert!(kubectl_lb(&inv, &["get", "nodes"]).is_some());
    assert!(unschedulable(&inv, "cp2"));
    let j = journal(&inv);
    assert!(j.contains("upgrade v1.32.5\tcp1\tdone"), "{j}");
    assert!(
        j.contains("upgrade v1.32.5\tcp2\tfailed: gate `the API server of cp2"),
        "{j}"
    );
    assert!(!j.contains("upgrade v1.32.5\tcp3"), "{j}");
    // The image back: the re-run skips cp1 (no change on it), retries cp2, completes.
    shadow_image(&lab, "cp2", APISERVER_IMAGE, false);
    let resumed = run_capstan(
        &[
            "upgrade", "apply", "--to", "v1.32.5", "--yes", "--output", "json",
        ],
        &inv,
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let watched = watcher.join().expect("watcher");
    assert_eq!(resumed.code, 0, "{}", resumed.all());
    let report: serde_json::Value = serde_json::from_str(&resumed.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", resumed.all()));
    assert_not_redone(&report, "cp1");
    assert!(
        report["phases"]
            .as_array()
            .expect("phases")
            .iter()
            .any(|p| p["phase"] == "cp2: kube-apiserver v1.32.5"),
        "{report:#}"
    );
    let outcome = |host: &str| host_outcome(&report, host);
    assert_eq!(outcome("cp1").as_deref(), Some("skipped"), "{report:#}");
    assert_eq!(outcome("cp2").as_deref(), Some("done"), "{report:#}");
    assert_eq!(outcome("w2").as_deref(), Some("done"), "{report:#}");
    let phases: Vec<&str> = report["timings"]["phases"]
        .as_array()
        .expect("phases")
        .iter()
        .map(|p| p["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        phases,
        [
            "preflight",
            "etcd snapshot",
            "control planes",
            "workers",
            "final converge"
        ]
    );
    assert!(journal(&inv).contains("upgrade v1.32.5\tcp1\tskipped"));
    assert_watched(&watched, 1);
    assert_all_at(&lab, &inv, "v1.32.5", &["cp1", "cp2", "cp3"]);
    assert_snapshot(&inv, "v1.31.9");
    assert_converged(&inv, "v1.32.5");

    // v1.32.5 → v1.33.1 in one go; the summary gives per-phase and per-host times.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = watch_api(&inv, WORKERS, 3, std::sync::Arc::clone(&stop));
    let run = run_capstan(&["upgrade", "apply", "--to", "v1.33.1", "--yes"], &inv);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let watched = watcher.join().expect("watcher");
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stdout.contains("Timings:"), "{}", run.all());
    assert!(run.stdout.contains("control planes"), "{}", run.all());
    assert_watched(&watched, 1);
    assert_all_at(&lab, &inv, "v1.33.1", &["cp1", "cp2", "cp3"]);
    assert_snapshot(&inv, "v1.32.5");
    assert_converged(&inv, "v1.33.1");
    // The upgrade ended when the addons ran at the target: every kube-proxy pod at v1.33.1
    // and Ready as apply returns, none left of the old image.
    let proxies = kubectl_lb(
        &inv,
        &[
            "-n",
            "kube-system",
            "get",
            "pods",
            "-l",
            "k8s-app=kube-proxy",
            "-o",
            "json",
        ],
    )
    .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
    .expect("kube-proxy pods");
    let items = proxies["items"].as_array().expect("items");
    assert_eq!(items.len(), 5, "one per node: {proxies:#}");
    for p in items {
        assert_eq!(
            p["spec"]["containers"][0]["image"].as_str(),
            Some("registry.k8s.io/kube-proxy:v1.33.1"),
            "{p:#}"
        );
        assert!(
            p["status"]["conditions"].as_array().is_some_and(|cs| cs
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")),
            "{p:#}"
        );
    }
    let j = journal(&inv);
    assert!(j.contains("upgrade v1.33.1\tw2\tdone"), "{j}");
    // The workload survived both upgrades.
    let pods = kubectl_lb(&inv, &["get", "pods", "-l", "app=web", "-o", "json"])
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .expect("pods");
    assert!(running_web_pods(&pods) >= 3, "{pods:#}");
}
