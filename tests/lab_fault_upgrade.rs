//! Fault test (issue 8): the network of a control plane is cut (`docker network disconnect`)
//! in the middle of `upgrade apply`, at the moment capstan has cordoned and drained cp2 and
//! written its new kube-apiserver manifest. The rollout stops at cp2 within a bounded time
//! (exit 1, cp2 and the step named, no secret printed), never goes on to cp3, and the
//! cluster keeps its etcd quorum and serves through the load balancer all along. Once cp2
//! is reconnected with its address, the same command resumes (cp1 is not redone), finishes
//! with every Node Ready at the target, and a further run changes nothing.
//!
//! Why that moment: cp2 is then half-upgraded (cordoned, its API server restarting at the
//! target) and its etcd member and API server vanish together, so the test proves that the
//! LB and etcd ride over a lost control plane, that capstan neither hangs on the dead
//! connection nor goes on to cp3, and that the re-run finishes a host left half-way.

mod support;

use std::io::Read as _;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::lab::{Lab, Run, bed_lab, capstan, docker, etcdctl_on, run_capstan};
use support::secrets::{assert_no_secret, secrets};
use support::upgrade::{
    assert_all_at, assert_converged, assert_not_redone, assert_watched, deploy_web, host_outcome,
    init, journal, kubectl_lb, set_version, watch_api,
};

/// The versions of the test mirror the rollout goes between (one minor).
const FROM: &str = "v1.31.9";
const TO: &str = "v1.32.5";
/// How long the cut run may take after the cut: the SSH keepalive (every 15 s, 3 missed)
/// finds the connection dead, and the gate waiting on cp2 then fails at once instead of
/// waiting out `--gate-timeout` (120 s by default). Longer is a hang.
const STOP_WITHIN: Duration = Duration::from_secs(100);

const KUBE_APISERVER: &str = "/etc/kubernetes/manifests/kube-apiserver.yaml";

/// A capstan run in the background; its output is collected by threads so that a full
/// pipe never blocks it.
struct Background {
    child: Child,
    stdout: std::thread::JoinHandle<String>,
    stderr: std::thread::JoinHandle<String>,
}

impl Background {
    fn start(args: &[&str], inv: &Path) -> Background {
        let mut child = capstan()
            .args(args)
            .arg("-i")
            .arg(inv)
            .arg("--cache-dir")
            .arg(
                inv.parent()
                    .expect("the inventory is in a folder")
                    .join("cache"),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn capstan");
        let collect = |mut r: Box<dyn std::io::Read + Send>| {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = r.read_to_string(&mut s);
                s
            })
        };
        let stdout = collect(Box::new(child.stdout.take().expect("piped")));
        let stderr = collect(Box::new(child.stderr.take().expect("piped")));
        Background {
            child,
            stdout,
            stderr,
        }
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().expect("wait for capstan").is_none()
    }

    /// Waits for the run to end, at most `limit`; a run still going then is killed and the
    /// test fails with what it printed.
    fn wait_within(mut self, limit: Duration) -> (Run, Duration) {
        let t0 = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for capstan") {
                break status;
            }
            if t0.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let run = self.output(-1);
                panic!(
                    "`upgrade apply` still ran {limit:?} after the cut (a hang):\n{}",
                    run.all()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let took = t0.elapsed();
        (self.output(status.code().unwrap_or(-1)), took)
    }

    fn output(self, code: i32) -> Run {
        Run {
            code,
            stdout: self.stdout.join().unwrap_or_default(),
            stderr: self.stderr.join().unwrap_or_default(),
        }
    }
}

fn sh(lab: &Lab, host: &str, script: &str) -> String {
    docker(&["exec", &lab.container(host), "sh", "-c", script])
}

/// The lab network a host is on and its address there.
fn network_of(lab: &Lab, host: &str) -> (String, String) {
    let out = docker(&[
        "inspect",
        "-f",
        "{{range $net, $cfg := .NetworkSettings.Networks}}{{$net}} {{$cfg.IPAddress}}\n{{end}}",
        &lab.container(host),
    ]);
    let nets: Vec<(String, String)> = out
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(n, ip)| (n.to_string(), ip.to_string()))
        .collect();
    assert_eq!(nets.len(), 1, "{host} is on one network: {out}");
    nets.into_iter().next().expect("one network")
}

/// Waits until cp2's kube-apiserver manifest names the target image (checked inside the
/// host every 20 ms, so the cut follows the write closely), while the run goes on.
fn wait_for_cp2_manifest(lab: &Lab, run: &mut Background) {
    let deadline = Instant::now() + Duration::from_secs(600);
    let test = format!("grep -q 'kube-apiserver:{TO}' {KUBE_APISERVER}");
    loop {
        // One docker exec polls for 5 s.
        let hit = sh(
            lab,
            "cp2",
            &format!(
                "i=0; until {test}; do i=$((i+1)); [ $i -lt 250 ] || {{ echo no; exit 0; }}; \
                 sleep 0.02; done; echo yes"
            ),
        );
        if hit.trim() == "yes" {
            return;
        }
        assert!(
            run.running(),
            "upgrade apply ended before cp2's API server manifest changed"
        );
        assert!(
            Instant::now() < deadline,
            "cp2's API server manifest never named {TO}"
        );
    }
}

/// etcd answers a quorum read (`endpoint health` gets a key through raft) on `host`'s
/// member.
fn assert_etcd_quorum_on(lab: &Lab, host: &str) {
    let container = lab.container(host);
    let mut args = etcdctl_on(&container);
    args.extend(["endpoint", "health", "-w", "json"]);
    let out = docker(&args);
    let v: serde_json::Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("etcdctl endpoint health on {host} ({e}): {out}"));
    assert_eq!(v[0]["health"], true, "etcd on {host}: {out}");
}

/// What `host`'s control-plane parts run: the API server's image and the kubelet binary.
fn cp_versions(lab: &Lab, host: &str) -> (String, String) {
    let manifest = sh(lab, host, &format!("cat {KUBE_APISERVER}"));
    let image = manifest
        .lines()
        .find_map(|l| l.trim().strip_prefix("image: "))
        .unwrap_or_default()
        .to_string();
    let kubelet = sh(lab, host, "/usr/local/bin/kubelet --version");
    (image, kubelet.trim().to_string())
}

/// The words of an error report, which may wrap its lines (`|` margins dropped).
fn flat(text: &str) -> String {
    text.split_whitespace()
        .filter(|w| *w != "|")
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
#[allow(clippy::too_many_lines)]
fn a_control_plane_cut_off_mid_upgrade_stops_the_rollout_and_a_rerun_resumes() {
    let lab = bed_lab(
        "netcut",
        &[
            "--control-planes",
            "3",
            "--workers",
            "1",
            "--load-balancers",
            "1",
        ],
    );
    let inv = lab.inventory();
    set_version(&inv, FROM);
    init(&inv);
    deploy_web(&inv);
    let secrets = secrets(&lab, &inv);
    let (network, cp2_ip) = network_of(&lab, "cp2");
    let old_cp3 = cp_versions(&lab, "cp3");
    assert!(old_cp3.0.ends_with(&format!(":{FROM}")), "{old_cp3:?}");

    // The API through the LB and the PodDisruptionBudget, watched from here to the end.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_api(&inv, &["w1"], 3, Arc::clone(&stop));

    // The rollout reaches cp2: cp1 is done, cp2 cordoned, drained and its API server's
    // manifest written. Then cp2's network goes.
    let mut upgrade = Background::start(&["upgrade", "apply", "--to", TO, "--yes"], &inv);
    wait_for_cp2_manifest(&lab, &mut upgrade);
    docker(&["network", "disconnect", &network, &lab.container("cp2")]);
    let j = journal(&inv);
    assert!(j.contains(&format!("upgrade {TO}\tcp1\tdone")), "{j}");
    assert!(j.contains(&format!("upgrade {TO}\tcp2\tstart")), "{j}");

    // The run stops at cp2, in bounded time, with the "some hosts failed" code.
    let (cut, took) = upgrade.wait_within(STOP_WITHIN);
    eprintln!(
        "the cut run ended {:.1}s after the cut:\n{}",
        took.as_secs_f64(),
        cut.all()
    );
    assert_eq!(cut.code, 1, "{}", cut.all());
    assert!(!cut.all().contains("panicked"), "{}", cut.all());
    let said = flat(&cut.all());
    let stop_line = said
        .split("stopped: ")
        .nth(1)
        .unwrap_or_else(|| panic!("no `stopped:` in the output:\n{}", cut.all()));
    assert!(stop_line.contains("cp2"), "{}", cut.all());
    assert!(
        stop_line.contains("kube-apiserver") || stop_line.contains("API server"),
        "the step is not named:\n{}",
        cut.all()
    );
    // Cut during a gate or during the apply's exec: either way the lost connection is named.
    assert!(
        (stop_line.contains("the SSH connection to cp2") && stop_line.contains("is lost"))
            || (stop_line.contains("cp2: the SSH connection to")
                && stop_line.contains("failed during exec")),
        "the lost connection is not named:\n{}",
        cut.all()
    );
    // The summary counts cp2 as failed and names it.
    assert!(
        cut.stdout.lines().any(|l| l.starts_with("cp2 failed")),
        "{}",
        cut.all()
    );
    assert!(cut.stdout.contains(" 1 failed,"), "{}", cut.all());
    assert_no_secret(&cut, "the cut run", &secrets);

    // Not one step on cp3: its manifests and kubelet are the old version, and the journal
    // never mentions it.
    assert_eq!(cp_versions(&lab, "cp3"), old_cp3);
    let j = journal(&inv);
    assert!(
        j.contains(&format!("upgrade {TO}\tcp2\tfailed: ")),
        "the journal does not say where the rollout stopped:\n{j}"
    );
    assert!(!j.contains(&format!("upgrade {TO}\tcp3")), "{j}");

    // The cluster keeps its quorum (2 of 3 members) and serves through the LB.
    assert_etcd_quorum_on(&lab, "cp1");
    assert_etcd_quorum_on(&lab, "cp3");
    let nodes = kubectl_lb(&inv, &["get", "nodes"]);
    assert!(nodes.is_some(), "kubectl through the LB did not answer");

    // cp2 back on the lab network with its address: the same command resumes.
    docker(&[
        "network",
        "connect",
        "--ip",
        &cp2_ip,
        &network,
        &lab.container("cp2"),
    ]);
    let resumed = run_capstan(
        &["upgrade", "apply", "--to", TO, "--yes", "--output", "json"],
        &inv,
    );
    stop.store(true, Ordering::Relaxed);
    let watched = watcher.join().expect("watcher");
    assert_eq!(resumed.code, 0, "{}", resumed.all());
    assert_no_secret(&resumed, "the resumed run", &secrets);
    let report: serde_json::Value = serde_json::from_str(&resumed.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", resumed.all()));
    // cp1 is not redone: no step of its own, not cordoned, nothing changed on it before
    // the final converge; cp2 is finished, then cp3 and w1.
    assert_not_redone(&report, "cp1");
    let outcome = |host: &str| host_outcome(&report, host);
    assert_eq!(outcome("cp1").as_deref(), Some("skipped"), "{report:#}");
    assert_eq!(outcome("cp2").as_deref(), Some("done"), "{report:#}");
    assert_eq!(outcome("cp3").as_deref(), Some("done"), "{report:#}");
    assert_eq!(outcome("w1").as_deref(), Some("done"), "{report:#}");
    assert!(journal(&inv).contains(&format!("upgrade {TO}\tcp1\tskipped")));

    // Every Node Ready at the target, the API served all along, and one more run changes
    // nothing.
    assert_watched(&watched, 1);
    assert_all_at(&lab, &inv, TO, &["cp1", "cp2", "cp3"]);
    assert_etcd_quorum_on(&lab, "cp2");
    assert_converged(&inv, TO);
}
