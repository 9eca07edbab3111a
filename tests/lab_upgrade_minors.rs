//! Today's minors for real: a cluster built at v1.34.5 on bookworm's containerd 1.6 is walked
//! by `capstan upgrade apply` to v1.35.2, v1.36.4 and v1.37.1, one minor a run; the first run
//! also takes every node to containerd 2 (forky's 2.1.9, config format 3), drained, before
//! its kubelet. Every step is refused when it skips a minor; every run is repeated and the
//! repeat changes nothing. The stand-ins are stamped at those versions and keep each
//! release's contract (a kubelet from 1.35 refuses cgroup v1 hosts unless `failCgroupV1:
//! false`, and knows no `--pod-infra-container-image`); kubectl is upstream's of each minor.

mod support;

use support::lab::{Lab, bed_lab, docker, run_capstan, set_node_version};
use support::upgrade::{assert_all_at, assert_converged, init, set_version};

fn containerd_version(lab: &Lab, host: &str) -> String {
    docker(&[
        "exec",
        &lab.container(host),
        "/usr/local/bin/containerd",
        "--version",
    ])
}

#[test]
fn apply_walks_v1_34_to_v1_37_one_minor_a_run_on_containerd_2() {
    let lab = bed_lab("minors", &["--control-planes", "1", "--workers", "1"]);
    let inv = lab.inventory();
    set_version(&inv, "v1.34.5");
    init(&inv);
    let again = run_capstan(&["init"], &inv);
    assert_eq!(again.code, 0, "{}", again.all());
    assert!(again.stdout.contains(" 0 changed"), "{}", again.all());
    assert_all_at(&lab, &inv, "v1.34.5", &["cp1"]);
    for host in ["cp1", "w1"] {
        let v = containerd_version(&lab, host);
        assert!(v.contains("1.6.20"), "{host}: {v}");
        // A cgroup v1 host: the kubelet config allows it explicitly, which 1.35+ require.
        let cfg = docker(&[
            "exec",
            &lab.container(host),
            "cat",
            "/var/lib/kubelet/config.yaml",
        ]);
        assert!(cfg.contains("failCgroupV1: false"), "{host}: {cfg}");
    }

    for (from, to, skip) in [
        ("v1.34.5", "v1.35.2", "v1.36.4"),
        ("v1.35.2", "v1.36.4", "v1.37.1"),
        ("v1.36.4", "v1.37.1", ""),
    ] {
        if !skip.is_empty() {
            let refused = run_capstan(&["upgrade", "apply", "--to", skip, "--yes"], &inv);
            assert_eq!(refused.code, 2, "{from} → {skip}: {}", refused.all());
            assert!(
                refused.stdout.contains("skips a minor")
                    && refused.stdout.contains(&format!("upgrade to {to} first"))
                    && refused.stdout.contains("nothing was changed"),
                "{}",
                refused.all()
            );
        }
        if from == "v1.34.5" {
            // containerd 2 with the next minor: the plan shows it as a component with its target.
            set_node_version(&inv, "containerd", "v2.1.9");
            let plan = run_capstan(&["upgrade", "plan", "--to", to, "--output", "json"], &inv);
            assert_eq!(plan.code, 0, "{}", plan.all());
            let json: serde_json::Value = serde_json::from_str(&plan.stdout).expect("plan JSON");
            let rows = json["components"].as_array().expect("components");
            for host in ["cp1", "w1"] {
                let row = rows
                    .iter()
                    .find(|r| r["component"] == "containerd" && r["host"] == host)
                    .unwrap_or_else(|| panic!("no containerd row for {host}: {json:#}"));
                assert!(
                    row["current"].as_str().unwrap_or("").contains("1.6.20"),
                    "{row}"
                );
                assert_eq!(row["target"], "v2.1.9", "{row}");
            }
        }
        if from == "v1.35.2" {
            // A containerd the target minor does not run on (v1.35 does: 2.1.5+ within 2.1;
            // v1.36 needs 2.2+) is refused before any connection.
            set_node_version(&inv, "containerd", "v2.1.6");
            let refused = run_capstan(&["upgrade", "apply", "--to", to, "--yes"], &inv);
            assert_eq!(refused.code, 2, "{}", refused.all());
            // (miette wraps the message: join its lines again.)
            let said = refused.stderr.replace("\n  | ", " ");
            assert!(
                said.contains("Kubernetes v1.36 does not run on containerd v2.1.6")
                    && said.contains("v2.2.0+ within v2.2"),
                "{}",
                refused.all()
            );
            set_node_version(&inv, "containerd", "v2.1.9");
        }
        let run = run_capstan(&["upgrade", "apply", "--to", to, "--yes"], &inv);
        assert_eq!(run.code, 0, "{from} → {to}:\n{}", run.all());
        for host in ["cp1", "w1"] {
            let v = containerd_version(&lab, host);
            assert!(v.contains("2.1.9"), "{host} after {to}: {v}");
            let cfg = docker(&[
                "exec",
                &lab.container(host),
                "cat",
                "/etc/containerd/config.toml",
            ]);
            assert!(cfg.contains("\nversion = 3\n"), "{host}: {cfg}");
        }
        assert_all_at(&lab, &inv, to, &["cp1"]);
        // The addons are at the images the target pairs (CoreDNS's tag per minor).
        let coredns = docker(&[
            "exec",
            &lab.container("cp1"),
            "/usr/local/bin/kubectl",
            "--kubeconfig=/etc/kubernetes/admin.conf",
            "-n",
            "kube-system",
            "get",
            "deployment",
            "coredns",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ]);
        let want = match to {
            "v1.35.2" => "v1.13.1",
            "v1.36.4" => "v1.14.2",
            _ => "v1.14.4",
        };
        assert!(coredns.ends_with(want), "{to}: {coredns}");
        assert_converged(&inv, to);
    }
    for host in ["cp1", "w1"] {
        let kubectl = docker(&[
            "exec",
            &lab.container(host),
            "/usr/local/bin/kubectl",
            "version",
            "--client",
        ]);
        assert!(kubectl.contains("v1.37.1"), "{host}: {kubectl}");
    }
}
