//! `capstan upgrade plan` against real clusters built by `capstan init` on lab hosts: the
//! versions are read live (the API server's /version, the manifests, the Nodes, the
//! binaries, etcd's endpoint status), the allowed targets come from the test mirror
//! (v1.31.9, v1.32.4, v1.32.5, v1.33.1), and refused targets exit 2 with the reason and the
//! allowed path.

mod support;

use std::path::Path;

use support::lab::{Lab, Run, bed, docker, run_capstan};

fn lab(what: &str, flags: &[&str]) -> Lab {
    support::lab::bed_lab(what, flags)
}

/// Sets the inventory's `kubernetes_version`.
fn set_version(inv: &Path, version: &str) {
    let text = std::fs::read_to_string(inv).expect("read the inventory");
    let out: Vec<String> = text
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("kubernetes_version:") {
                format!("  kubernetes_version: {version}")
            } else {
                l.to_string()
            }
        })
        .collect();
    std::fs::write(inv, out.join("\n") + "\n").expect("write the inventory");
}

fn init(inv: &Path) {
    let run = run_capstan(&["init"], inv);
    assert_eq!(run.code, 0, "init failed:\n{}", run.all());
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
        ["v1.31.9", "v1.32.4", "v1.32.5", "v1.33.1"]
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

/// Polls the API through the load balancer (real kubectl, the operator's admin.conf) until
/// told to stop: how many polls failed twice in a row, and the most workers ever cordoned.
fn watch_api(
    inv: &Path,
    workers: &'static [&'static str],
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(usize, usize, usize)> {
    let conf = inv.parent().expect("dir").join(".capstan/admin.conf");
    std::thread::spawn(move || {
        let kubectl = |args: &[&str]| {
            std::process::Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(&conf)
                .arg("--request-timeout=5s")
                .args(args)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        };
        let (mut polls, mut failed, mut most_cordoned) = (0, 0, 0);
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            polls += 1;
            // One retry: a connection cut by an API server's restart is retried by every
            // client; two failures in a row mean the API was not there.
            let nodes = kubectl(&["get", "nodes", "-o", "json"])
                .or_else(|| kubectl(&["get", "nodes", "-o", "json"]));
            match nodes.and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok()) {
                None => failed += 1,
                Some(v) => {
                    let cordoned = v["items"].as_array().map_or(0, |items| {
                        items
                            .iter()
                            .filter(|n| {
                                workers.contains(&n["metadata"]["name"].as_str().unwrap_or(""))
                                    && n["spec"]["unschedulable"] == true
                            })
                            .count()
                    });
                    most_cordoned = most_cordoned.max(cordoned);
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
        (polls, failed, most_cordoned)
    })
}

/// Every Node at `version`, Ready and schedulable; the API server of every control plane
/// reports it.
fn assert_all_at(lab: &Lab, inv: &Path, version: &str, cps: &[&str]) {
    let conf = inv.parent().expect("dir").join(".capstan/admin.conf");
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&conf)
        .args(["get", "nodes", "-o", "json"])
        .output()
        .expect("kubectl");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("nodes JSON");
    for n in v["items"].as_array().expect("items") {
        assert_eq!(n["status"]["nodeInfo"]["kubeletVersion"], version, "{n:#}");
        assert_ne!(n["spec"]["unschedulable"], true, "{n:#}");
    }
    for cp in cps {
        let got = docker(&[
            "exec",
            &lab.container(cp),
            "/usr/local/bin/kubectl",
            "--kubeconfig=/etc/kubernetes/admin.conf",
            "get",
            "--raw=/version",
        ]);
        let v: serde_json::Value = serde_json::from_str(&got).expect("version JSON");
        assert_eq!(v["gitVersion"], version, "{cp}: {got}");
        let manifest = docker(&[
            "exec",
            &lab.container(cp),
            "cat",
            "/etc/kubernetes/manifests/kube-scheduler.yaml",
        ]);
        assert!(
            manifest.contains(&format!("kube-scheduler:{version}")),
            "{manifest}"
        );
    }
}

#[test]
fn apply_rolls_v1_31_to_v1_32_to_v1_33_with_the_api_serving() {
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

    // The dry run shows the sequence and changes nothing.
    let dry = run_capstan(&["upgrade", "apply", "--to", "v1.32.5", "--dry-run"], &inv);
    assert_eq!(dry.code, 0, "{}", dry.all());
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
    // Without a terminal a real run needs --yes.
    let refused = run_capstan(&["upgrade", "apply", "--to", "v1.32.5"], &inv);
    assert_eq!(refused.code, 2, "{}", refused.all());

    for (to, from) in [("v1.32.5", "v1.31.9"), ("v1.33.1", "v1.32.5")] {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watcher = watch_api(&inv, WORKERS, std::sync::Arc::clone(&stop));
        let run = run_capstan(&["upgrade", "apply", "--to", to, "--yes"], &inv);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (polls, failed, most_cordoned) = watcher.join().expect("watcher");
        assert_eq!(run.code, 0, "{}", run.all());
        assert!(polls > 5, "only {polls} polls");
        assert_eq!(
            failed, 0,
            "the API did not answer through the LB {failed} of {polls} times"
        );
        assert!(
            most_cordoned <= 1,
            "{most_cordoned} workers were unschedulable at once"
        );
        assert_all_at(&lab, &inv, to, &["cp1", "cp2", "cp3"]);
        // The snapshot taken before the first control plane changed, named after the
        // version it holds, and readable by this machine's etcdctl.
        let backups = inv.parent().expect("dir").join(".capstan/backups");
        let snap = std::fs::read_dir(&backups)
            .expect("backups")
            .flatten()
            .map(|e| e.path())
            .find(|p| p.display().to_string().contains(from))
            .unwrap_or_else(|| panic!("no snapshot of {from} in {}", backups.display()));
        let status = std::process::Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["snapshot", "status", "-w", "json"])
            .arg(&snap)
            .output()
            .expect("etcdctl");
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
        // The inventory says what runs now; a second apply changes nothing.
        assert!(
            std::fs::read_to_string(&inv)
                .expect("inventory")
                .contains(&format!("kubernetes_version: {to}"))
        );
        let again = run_capstan(&["upgrade", "apply", "--to", to, "--yes"], &inv);
        assert_eq!(again.code, 0, "{}", again.all());
        assert!(again.stdout.contains(" 0 changes"), "{}", again.all());
    }
    let journal = std::fs::read_to_string(inv.parent().expect("dir").join(".capstan/journal.log"))
        .expect("journal");
    assert!(journal.contains("upgrade v1.33.1\tw2\tdone"), "{journal}");
}
