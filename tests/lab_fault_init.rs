//! Fault test: a worker's container stops in the middle of `init`. init reports that host
//! failed (exit 1) and builds the rest of the cluster, which serves; once the container runs
//! again, `init` completes it, and a further run changes nothing.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::lab::{bed_lab, capstan, docker, kubectl_admin, run_capstan, said_of};

/// Real kubectl on this machine with the operator's admin.conf: the nodes' names and whether
/// each is Ready.
fn nodes(inv: &Path) -> Vec<(String, bool)> {
    let out = kubectl_admin(inv, &["get", "nodes", "-o", "json"])
        .unwrap_or_else(|e| panic!("kubectl get nodes: {e}"));
    let doc: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    doc["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|n| {
            let ready = n["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            });
            (
                n["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                ready,
            )
        })
        .collect()
}

fn ready(inv: &Path, name: &str) -> bool {
    nodes(inv).iter().any(|(n, r)| n == name && *r)
}

#[test]
fn a_worker_stopped_during_init_fails_alone_and_a_later_init_completes_it() {
    let lab = bed_lab("fault-init", &["--control-planes", "1", "--workers", "2"]);
    let inv = lab.inventory();
    let cache = inv.parent().expect("well-formed").join("cache");
    let mut init = capstan()
        .args(["init", "-i"])
        .arg(&inv)
        .arg("--cache-dir")
        .arg(&cache)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start capstan init");

    // Stop w1 while the control plane is being built: it is connected and past its base
    // phase, its kubelet still ahead.
    let deadline = Instant::now() + Duration::from_secs(400);
    loop {
        let written = Command::new("docker")
            .args(["exec", &lab.container("cp1"), "test", "-f"])
            .arg("/etc/kubernetes/manifests/kube-apiserver.yaml")
            .status()
            .expect("docker exec")
            .success();
        if written {
            break;
        }
        if let Some(status) = init.try_wait().expect("wait for init") {
            let out = init.wait_with_output().expect("init output");
            panic!(
                "init ended ({status}) before the control plane phase:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(
            Instant::now() < deadline,
            "init never reached the control plane"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    docker(&["stop", "-t", "1", &lab.container("w1")]);

    let out = init.wait_with_output().expect("init output");
    let all = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{all}");
    let failed: Vec<&str> = all.lines().filter(|l| l.contains("failed")).collect();
    assert!(
        failed.iter().any(|l| l.contains("w1")),
        "w1 is not reported failed:\n{all}"
    );
    assert!(
        !failed.iter().any(|l| l.contains("w2") || l.contains("cp1")),
        "a host other than w1 is reported failed:\n{all}"
    );
    // The rest of the cluster is up and serves through the API endpoint.
    assert!(ready(&inv, "cp1") && ready(&inv, "w2"), "{:?}", nodes(&inv));
    assert!(!ready(&inv, "w1"), "{:?}", nodes(&inv));

    // The container runs again: init completes it, and then has nothing left to do.
    lab.bring_up();
    let again = run_capstan(&["init"], &inv);
    assert_eq!(again.code, 0, "{}", again.all());
    assert!(
        said_of(&again.stdout, "w1", "changed"),
        "w1 was not completed:\n{}",
        again.all()
    );
    for node in ["cp1", "w1", "w2"] {
        assert!(ready(&inv, node), "{node}: {:?}", nodes(&inv));
    }
    let third = run_capstan(&["init"], &inv);
    assert_eq!(third.code, 0, "{}", third.all());
    assert!(
        third.stdout.contains(" 0 changed,") && third.stdout.contains(" 0 changes"),
        "the third init changed something:\n{}",
        third.all()
    );
}
