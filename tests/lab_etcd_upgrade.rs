//! `capstan upgrade apply` upgrades real etcd: a 3-member stacked cluster (and a worker) made by
//! `capstan init` on Debian bookworm's etcd 3.4.23 goes to Debian forky's 3.5.30 (both in the test
//! mirror) when the inventory's `cluster.versions.etcd` says v3.5.30: a snapshot first, then
//! one member at a time, each healthy at 3.5.30 before the next. A background poll of every
//! member (real etcdctl on each host) sees quorum kept all along and the members upgraded in
//! inventory order, one at a time; the data written before is still there; a second run
//! changes nothing.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use support::lab::{Lab, docker, etcdctl_on, run_capstan};
use support::upgrade::{init, journal};

const MEMBERS: [&str; 3] = ["cp1", "cp2", "cp3"];
const FROM: &str = "3.4.23";
const TO: &str = "3.5.30";

/// Sets `cluster.versions.etcd` in the inventory.
fn set_etcd_version(inv: &Path, version: &str) {
    let text = std::fs::read_to_string(inv).expect("read the inventory");
    assert!(
        text.contains("\n    etcd: v"),
        "the lab inventory pins no etcd version:\n{text}"
    );
    let out: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with("    etcd: v") {
                format!("    etcd: {version}")
            } else {
                l.to_string()
            }
        })
        .collect();
    std::fs::write(inv, out.join("\n") + "\n").expect("write the inventory");
}

/// The inventory's Kubernetes version (the upgrade keeps it: only etcd changes).
fn kubernetes_version(inv: &Path) -> String {
    std::fs::read_to_string(inv)
        .expect("inventory")
        .lines()
        .find_map(|l| l.trim().strip_prefix("kubernetes_version:"))
        .expect("kubernetes_version")
        .trim()
        .to_string()
}

/// What the member on `container` reports as its version (real etcdctl on that host,
/// against its own endpoint), or `None` when it does not answer.
fn member_version(container: &str) -> Option<String> {
    let mut args = etcdctl_on(container);
    args.extend(["--command-timeout=3s", "endpoint", "status", "-w", "json"]);
    let out = std::process::Command::new("docker")
        .args(&args)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v[0]["Status"]["version"].as_str().map(str::to_string)
}

fn etcdctl(lab: &Lab, host: &str, args: &[&str]) -> String {
    let container = lab.container(host);
    let mut all = etcdctl_on(&container);
    all.extend_from_slice(args);
    docker(&all)
}

/// Polls every member until told to stop: per poll, each member's version (`None`: it did
/// not answer).
fn watch_members(
    lab: &Lab,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<Vec<Option<String>>>> {
    let containers: Vec<String> = MEMBERS.iter().map(|h| lab.container(h)).collect();
    std::thread::spawn(move || {
        let mut polls = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            polls.push(containers.iter().map(|c| member_version(c)).collect());
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        polls
    })
}

/// `text` is in the run's stdout.
fn says(run: &support::lab::Run, text: &str) {
    assert!(run.stdout.contains(text), "no `{text}` in\n{}", run.all());
}

/// The `--output json` report of a run.
fn report(run: &support::lab::Run) -> serde_json::Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", run.all()))
}

#[test]
#[allow(clippy::too_many_lines)]
fn apply_upgrades_etcd_3_4_to_3_5_one_member_at_a_time() {
    let lab = support::lab::bed_lab("etcdup", &["--control-planes", "3", "--workers", "1"]);
    let inv = lab.inventory();
    set_etcd_version(&inv, &format!("v{FROM}"));
    init(&inv);
    let k8s = kubernetes_version(&inv);
    for h in MEMBERS {
        assert_eq!(
            member_version(&lab.container(h)).as_deref(),
            Some(FROM),
            "{h}"
        );
    }
    // Data written before the upgrade: a key of our own, and a Kubernetes object through
    // the API server (which stores it in etcd).
    etcdctl(&lab, "cp1", &["put", "/capstan-test/before", "kept"]);
    let nodes_before = etcdctl(
        &lab,
        "cp1",
        &["get", "--prefix", "--keys-only", "/registry/nodes/"],
    );
    assert!(
        nodes_before.contains("/registry/nodes/cp3"),
        "{nodes_before}"
    );

    // The target needs etcd 3.5.30.
    set_etcd_version(&inv, &format!("v{TO}"));

    // The plan shows etcd per member, the target, and the steps in order.
    let plan = run_capstan(&["upgrade", "plan", "--to", &k8s], &inv);
    assert_eq!(plan.code, 0, "{}", plan.all());
    says(
        &plan,
        &format!(
            "etcd: cp1 {FROM}, cp2 {FROM}, cp3 {FROM} → v{TO}: through v{TO}, one member at a time"
        ),
    );
    says(&plan, "1. etcd snapshot on cp1");
    for (i, h) in MEMBERS.iter().enumerate() {
        says(
            &plan,
            &format!("{}. etcd member {h} (v{FROM} → v{TO})", i + 2),
        );
    }
    let json = run_capstan(&["upgrade", "plan", "--to", &k8s, "--output", "json"], &inv);
    assert_eq!(json.code, 0, "{}", json.all());
    let json = report(&json);
    assert_eq!(json["etcd"]["target"], format!("v{TO}"));
    assert_eq!(json["etcd"]["path"], serde_json::json!([format!("v{TO}")]));
    let steps: Vec<(String, String)> = json["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap_or_default().to_string(),
                s["member"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("etcd-snapshot", "cp1"),
        ("etcd-member", "cp1"),
        ("etcd-member", "cp2"),
        ("etcd-member", "cp3"),
    ]
    .iter()
    .map(|(a, b)| ((*a).to_string(), (*b).to_string()))
    .collect();
    assert_eq!(steps, want, "{json:#}");
    let rows = json["components"].as_array().expect("components");
    for h in MEMBERS {
        let row = rows
            .iter()
            .find(|r| r["component"] == "etcd" && r["host"] == h)
            .unwrap_or_else(|| panic!("no etcd row for {h}: {json:#}"));
        assert_eq!(row["current"], FROM, "{row:#}");
        assert_eq!(row["target"], format!("v{TO}"), "{row:#}");
    }

    // The dry run shows the etcd steps and changes nothing.
    let binaries = "sha256sum /usr/local/bin/etcd /usr/local/bin/etcdctl";
    let before: Vec<String> = MEMBERS
        .iter()
        .map(|h| docker(&["exec", &lab.container(h), "sh", "-c", binaries]))
        .collect();
    let dry = run_capstan(&["upgrade", "apply", "--to", &k8s, "--dry-run"], &inv);
    assert_eq!(dry.code, 0, "{}", dry.all());
    says(
        &dry,
        &format!("would wait for etcd: 3 members healthy, cp2 at v{TO}"),
    );
    says(&dry, "would wait for etcd cluster version 3.4 or later");
    let after: Vec<String> = MEMBERS
        .iter()
        .map(|h| docker(&["exec", &lab.container(h), "sh", "-c", binaries]))
        .collect();
    assert_eq!(before, after, "the dry run changed an etcd binary");
    for h in MEMBERS {
        assert_eq!(member_version(&lab.container(h)).as_deref(), Some(FROM));
    }

    // The upgrade, watched, with a real fault: cp2's /usr/local/bin read-only, so that its
    // etcd cannot be replaced. The rollout stops at cp2 (cp1 at 3.5.30, cp2 and cp3 still at
    // 3.4.23, all healthy); with the fault gone a re-run skips cp1 and finishes.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_members(&lab, Arc::clone(&stop));
    let cp2 = lab.container("cp2");
    docker(&[
        "exec",
        &cp2,
        "sh",
        "-c",
        "mount --bind /usr/local/bin /usr/local/bin && mount -o remount,bind,ro /usr/local/bin",
    ]);
    let failed = run_capstan(&["upgrade", "apply", "--to", &k8s, "--yes"], &inv);
    docker(&["exec", &cp2, "umount", "/usr/local/bin"]);
    assert_eq!(failed.code, 1, "{}", failed.all());
    says(
        &failed,
        &format!("cp2: etcd v{TO} failed; the other etcd members serve"),
    );
    let versions: Vec<Option<String>> = MEMBERS
        .iter()
        .map(|h| member_version(&lab.container(h)))
        .collect();
    assert_eq!(
        versions,
        [
            Some(TO.to_string()),
            Some(FROM.to_string()),
            Some(FROM.to_string())
        ]
    );
    let health = etcdctl(
        &lab,
        "cp3",
        &["endpoint", "health", "--cluster", "-w", "json"],
    );
    assert_eq!(health.matches("\"health\":true").count(), 3, "{health}");
    assert!(journal(&inv).contains(&format!("\tcp2\tetcd v{TO}: failed")));
    let run = run_capstan(
        &[
            "upgrade", "apply", "--to", &k8s, "--yes", "--output", "json",
        ],
        &inv,
    );
    stop.store(true, Ordering::Relaxed);
    let polls = watcher.join().expect("watcher");
    assert_eq!(run.code, 0, "{}", run.all());
    let report = report(&run);

    // The re-run's report: one phase per member left (cp1 is skipped), in inventory order,
    // each with its gate (the cluster healthy, that member at 3.5.30) before the next
    // starts; no other phase touched etcd.
    let phases = report["phases"].as_array().expect("phases");
    let names: Vec<&str> = phases
        .iter()
        .map(|p| p["phase"].as_str().unwrap_or_default())
        .collect();
    let etcd_phases: Vec<usize> = names
        .iter()
        .enumerate()
        .filter(|(_, n)| n.contains(": etcd v"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(etcd_phases.len(), 2, "{names:?}");
    for (k, &i) in etcd_phases.iter().enumerate() {
        let h = MEMBERS[k + 1];
        let p = &phases[i];
        assert_eq!(p["phase"], format!("{h}: etcd v{TO}"), "{names:?}");
        let hosts = p["hosts"].as_array().expect("hosts");
        assert_eq!(hosts.len(), 1, "{p:#}");
        assert_eq!(hosts[0]["host"], h, "{p:#}");
        let changed: Vec<String> = hosts[0]["plan"]["changes"]
            .as_array()
            .expect("changes")
            .iter()
            .map(|c| c["target"].as_str().unwrap_or_default().to_string())
            .collect();
        assert!(
            changed.contains(&"/usr/local/bin/etcd".to_string()),
            "{p:#}"
        );
        let gates = p["gates"].to_string();
        assert!(
            gates.contains(&format!("etcd: 3 members healthy, {h} at v{TO}")),
            "{p:#}"
        );
    }
    for (i, p) in phases.iter().enumerate() {
        if etcd_phases.contains(&i) {
            continue;
        }
        for h in p["hosts"].as_array().into_iter().flatten() {
            for c in h["plan"]["changes"].as_array().into_iter().flatten() {
                assert!(
                    !c["target"]
                        .as_str()
                        .unwrap_or_default()
                        .starts_with("/usr/local/bin/etcd"),
                    "phase {} changed etcd: {p:#}",
                    names[i]
                );
            }
        }
    }
    let timings: Vec<&str> = report["timings"]["phases"]
        .as_array()
        .expect("timings")
        .iter()
        .map(|p| p["name"].as_str().unwrap_or_default())
        .collect();
    let at = |name: &str| timings.iter().position(|n| *n == name);
    assert!(
        at("etcd snapshot") < at("etcd") && at("etcd").is_some(),
        "{timings:?}"
    );
    // The journal: each member started (the first time) after the one before was done.
    let j = journal(&inv);
    let line = |h: &str, what: &str| {
        j.find(&format!("\t{h}\tetcd v{TO}: {what}"))
            .unwrap_or_else(|| panic!("no `{h} etcd {what}` in the journal:\n{j}"))
    };
    for w in MEMBERS.windows(2) {
        assert!(line(w[0], "done") < line(w[1], "start"), "{j}");
    }
    assert!(line("cp1", "start") < line("cp1", "done"), "{j}");

    // The poll: quorum all along; never a member at 3.5.30 while one before it in the
    // inventory still runs 3.4.23 (one at a time, in order); never a member back at 3.4.23
    // once seen at 3.5.30; and it saw the rollout happen, one member ahead of the others.
    assert!(polls.len() > 5, "only {} polls", polls.len());
    let mut seen_at_to = [false; 3];
    for (n, poll) in polls.iter().enumerate() {
        let answered = poll.iter().filter(|v| v.is_some()).count();
        assert!(answered >= 2, "poll {n}: quorum lost: {poll:?}");
        for (i, v) in poll.iter().enumerate() {
            match v.as_deref() {
                Some(TO) => seen_at_to[i] = true,
                Some(FROM) => {
                    assert!(
                        !seen_at_to[i],
                        "poll {n}: {} went back: {poll:?}",
                        MEMBERS[i]
                    );
                    assert!(
                        poll[i + 1..].iter().all(|w| w.as_deref() != Some(TO)),
                        "poll {n}: a member after {} upgraded before it: {poll:?}",
                        MEMBERS[i]
                    );
                }
                Some(other) => panic!("poll {n}: {} reports {other}: {poll:?}", MEMBERS[i]),
                None => {}
            }
        }
    }
    let at_to = |p: &Vec<Option<String>>| p.iter().filter(|v| v.as_deref() == Some(TO)).count();
    let at_from = |p: &Vec<Option<String>>| p.iter().filter(|v| v.as_deref() == Some(FROM)).count();
    assert!(polls.iter().any(|p| at_to(p) == 3), "{polls:?}");
    assert!(
        polls.iter().any(|p| at_to(p) == 1 && at_from(p) == 2),
        "no poll saw one member upgraded and the others not: {polls:?}"
    );

    // Every member reports 3.5.30; the data is all there; the API serves from it.
    for h in MEMBERS {
        assert_eq!(
            member_version(&lab.container(h)).as_deref(),
            Some(TO),
            "{h}"
        );
        let got = etcdctl(
            &lab,
            h,
            &["get", "--print-value-only", "/capstan-test/before"],
        );
        assert_eq!(got.trim(), "kept", "{h}");
    }
    let nodes_after = etcdctl(
        &lab,
        "cp2",
        &["get", "--prefix", "--keys-only", "/registry/nodes/"],
    );
    assert_eq!(nodes_before, nodes_after);
    let nodes = docker(&[
        "exec",
        &lab.container("cp2"),
        "/usr/local/bin/kubectl",
        "--kubeconfig=/etc/kubernetes/admin.conf",
        "get",
        "nodes",
        "-o",
        "name",
    ]);
    for h in MEMBERS {
        assert!(nodes.contains(&format!("node/{h}")), "{nodes}");
    }
    support::upgrade::assert_snapshot(&inv, &k8s);

    // A second run: nothing to change, etcd skipped.
    let again = run_capstan(&["upgrade", "apply", "--to", &k8s, "--yes"], &inv);
    assert_eq!(again.code, 0, "{}", again.all());
    says(&again, " 0 changes");
    assert!(!again.stdout.contains(": etcd v"), "{}", again.all());
    let plan = run_capstan(&["upgrade", "plan", "--to", &k8s], &inv);
    assert_eq!(plan.code, 0, "{}", plan.all());
    says(
        &plan,
        &format!("etcd: cp1 {TO}, cp2 {TO}, cp3 {TO} → v{TO}: nothing to do"),
    );

    // etcd never goes back, and an etcd the mirror lacks is refused (exit 2) before anything
    // changes, saying what to do.
    set_etcd_version(&inv, &format!("v{FROM}"));
    let down = run_capstan(&["upgrade", "apply", "--to", &k8s, "--yes"], &inv);
    assert_eq!(down.code, 2, "{}", down.all());
    says(&down, "capstan does not downgrade etcd");
    says(
        &down,
        &format!("set `cluster.versions.etcd` in the inventory to v{TO} or newer"),
    );
    set_etcd_version(&inv, "v3.6.0");
    let plan = run_capstan(&["upgrade", "plan", "--to", &k8s], &inv);
    assert_eq!(plan.code, 2, "{}", plan.all());
    says(&plan, "etcd v3.6.0 is not available from the mirror");
    says(
        &plan,
        &format!("set `cluster.versions.etcd` to one of v{FROM}, v{TO}"),
    );
    for h in MEMBERS {
        assert_eq!(
            member_version(&lab.container(h)).as_deref(),
            Some(TO),
            "{h}"
        );
    }
}
