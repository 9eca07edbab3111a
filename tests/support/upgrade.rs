//! Helpers of the `upgrade apply` lab tests: the inventory's version, a background poll of
//! the API through the load balancer, a Deployment with a PodDisruptionBudget, and the
//! checks of a finished rollout.

use std::path::Path;

use super::lab::{Lab, docker, kubectl_admin, run_capstan};

/// Sets the inventory's `kubernetes_version`.
pub fn set_version(inv: &Path, version: &str) {
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

pub fn init(inv: &Path) {
    let run = run_capstan(&["init"], inv);
    assert_eq!(run.code, 0, "init failed:\n{}", run.all());
}

/// What the background poll saw.
#[derive(Debug, Default)]
pub struct Watched {
    pub polls: usize,
    /// Polls where the API did not answer through the LB (twice in a row).
    pub failed: usize,
    /// The most workers unschedulable at once.
    pub most_cordoned: usize,
    /// The fewest Running pods of the Deployment at any poll.
    pub fewest_running: usize,
    /// Polls that broke the PodDisruptionBudget: (poll, running pods).
    pub violations: Vec<(usize, usize)>,
}

/// Real kubectl with the operator's admin.conf: through the load balancer.
pub fn kubectl_lb(inv: &Path, args: &[&str]) -> Option<String> {
    kubectl_admin(inv, args).ok()
}

/// The Deployment's pods that are Running and not being deleted.
pub fn running_web_pods(pods: &serde_json::Value) -> usize {
    pods["items"].as_array().map_or(0, |items| {
        items
            .iter()
            .filter(|p| {
                p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()
            })
            .count()
    })
}

/// Polls the API through the load balancer (real kubectl, the operator's admin.conf) until
/// told to stop: whether it answered, how many workers were unschedulable, and how many of
/// the Deployment's pods ran (the PodDisruptionBudget wants at least `min_available`).
pub fn watch_api(
    inv: &Path,
    workers: &'static [&'static str],
    min_available: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Watched> {
    let inv = inv.to_path_buf();
    std::thread::spawn(move || {
        let mut w = Watched {
            fewest_running: usize::MAX,
            ..Watched::default()
        };
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            w.polls += 1;
            // One retry: a connection cut by an API server's restart is retried by every
            // client; two failures in a row mean the API was not there.
            let get = |args: &[&str]| {
                kubectl_lb(&inv, args)
                    .or_else(|| kubectl_lb(&inv, args))
                    .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            };
            let (Some(nodes), Some(pods)) = (
                get(&["get", "nodes", "-o", "json"]),
                get(&[
                    "get", "pods", "-n", "default", "-l", "app=web", "-o", "json",
                ]),
            ) else {
                w.failed += 1;
                continue;
            };
            let cordoned = nodes["items"].as_array().map_or(0, |items| {
                items
                    .iter()
                    .filter(|n| {
                        workers.contains(&n["metadata"]["name"].as_str().unwrap_or(""))
                            && n["spec"]["unschedulable"] == true
                    })
                    .count()
            });
            w.most_cordoned = w.most_cordoned.max(cordoned);
            let running = running_web_pods(&pods);
            w.fewest_running = w.fewest_running.min(running);
            if running < min_available {
                w.violations.push((w.polls, running));
            }
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
        w
    })
}

/// The poll's verdict: the API always answered through the LB, at most `max_unavailable`
/// workers were unschedulable at once, and the PodDisruptionBudget always held.
pub fn assert_watched(w: &Watched, max_unavailable: usize) {
    assert!(w.polls > 5, "only {} polls", w.polls);
    assert_eq!(
        w.failed, 0,
        "the API did not answer through the LB {} of {} times",
        w.failed, w.polls
    );
    assert!(
        w.most_cordoned <= max_unavailable,
        "{} workers were unschedulable at once",
        w.most_cordoned
    );
    assert!(
        w.violations.is_empty(),
        "the PodDisruptionBudget (minAvailable 3) was broken at polls (poll, running): {:?}",
        w.violations
    );
    assert!(w.fewest_running >= 3, "{w:?}");
}

pub const WEB: &str = r"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
spec:
  replicas: 4
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
        - name: web
          image: registry.k8s.io/pause:3.10
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: web
  namespace: default
spec:
  minAvailable: 3
  selector:
    matchLabels:
      app: web
";

/// A Deployment of 4 replicas and a PodDisruptionBudget (minAvailable 3), applied with
/// real kubectl through the LB; returns when all 4 pods run.
pub fn deploy_web(inv: &Path) {
    let manifest = inv.parent().expect("dir").join("web.yaml");
    std::fs::write(&manifest, WEB).expect("write web.yaml");
    let path = manifest.display().to_string();
    let out = kubectl_lb(inv, &["apply", "-f", &path]);
    assert!(out.is_some(), "kubectl apply -f web.yaml failed");
    let t0 = std::time::Instant::now();
    loop {
        let pods = kubectl_lb(inv, &["get", "pods", "-l", "app=web", "-o", "json"])
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
        if pods.as_ref().map(running_web_pods) == Some(4) {
            return;
        }
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(90),
            "the Deployment's 4 pods did not run: {pods:#?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// Every Node at `version`, Ready and schedulable; the API server of every control plane
/// reports it.
pub fn assert_all_at(lab: &Lab, inv: &Path, version: &str, cps: &[&str]) {
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
        let ready = n["status"]["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        assert!(ready, "{n:#}");
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

pub fn journal(inv: &Path) -> String {
    std::fs::read_to_string(inv.parent().expect("dir").join(".capstan/journal.log"))
        .expect("journal")
}

/// Whether `node` is cordoned.
pub fn unschedulable(inv: &Path, node: &str) -> bool {
    let out = kubectl_lb(
        inv,
        &["get", "node", node, "-o", "jsonpath={.spec.unschedulable}"],
    )
    .unwrap_or_else(|| panic!("kubectl get node {node} through the LB failed"));
    out.trim() == "true"
}

/// The snapshot taken before the first control plane changed, named after the version it
/// holds, is readable by this machine's etcdctl.
pub fn assert_snapshot(inv: &Path, from: &str) {
    let backups = inv.parent().expect("dir").join(".capstan/backups");
    let snap = std::fs::read_dir(&backups)
        .expect("backups")
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            // `NAME.db.json` beside each snapshot describes it; the snapshot is `NAME.db`.
            p.extension().is_some_and(|e| e == "db") && p.display().to_string().contains(from)
        })
        .unwrap_or_else(|| panic!("no snapshot of {from} in {}", backups.display()));
    super::lab::assert_snapshot_readable(&snap);
}

/// The inventory says what runs now; a second apply changes nothing.
pub fn assert_converged(inv: &Path, to: &str) {
    assert!(
        std::fs::read_to_string(inv)
            .expect("inventory")
            .contains(&format!("kubernetes_version: {to}"))
    );
    let again = run_capstan(&["upgrade", "apply", "--to", to, "--yes"], inv);
    assert_eq!(again.code, 0, "{}", again.all());
    assert!(again.stdout.contains(" 0 changes"), "{}", again.all());
}

/// `host` was not redone by a resumed rollout (its `--output json` report): no step of its
/// own, not cordoned or drained, nothing changed on it before the final converge (which
/// brings the addons and the rest of every host to the target).
pub fn assert_not_redone(report: &serde_json::Value, host: &str) {
    for phase in report["phases"].as_array().expect("phases") {
        let name = phase["phase"].as_str().unwrap_or_default();
        assert!(!name.starts_with(&format!("{host}:")), "{phase:#}");
        let gates = phase["gates"].to_string();
        assert!(!gates.contains(&format!("{host} cordoned")), "{phase:#}");
        if name == "addons" || name == "every host at the target" {
            continue;
        }
        for h in phase["hosts"].as_array().expect("hosts") {
            if h["host"] == host {
                assert_eq!(h["plan"]["changes"], serde_json::json!([]), "{phase:#}");
            }
        }
    }
}

/// The outcome (`done`, `skipped`, `failed`) of `host` in an upgrade's `--output json`
/// report, if the rollout reached it.
pub fn host_outcome(report: &serde_json::Value, host: &str) -> Option<String> {
    report["timings"]["hosts"]
        .as_array()
        .expect("timings")
        .iter()
        .find(|t| t["name"] == host)
        .map(|t| t["outcome"].as_str().unwrap_or_default().to_string())
}
