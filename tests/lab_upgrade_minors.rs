//! Today's minors for real: a cluster on containerd 2 hosts (forky's containerd 2.1.9) built
//! at v1.34.5 is walked by `capstan upgrade apply` to v1.35.2, v1.36.4 and v1.37.1, one
//! minor a run. Every step is refused when it skips a minor; every run is repeated and the
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
    set_node_version(&inv, "containerd", "v2.1.9");
    init(&inv);
    let again = run_capstan(&["init"], &inv);
    assert_eq!(again.code, 0, "{}", again.all());
    assert!(again.stdout.contains(" 0 changed"), "{}", again.all());
    assert_all_at(&lab, &inv, "v1.34.5", &["cp1"]);
    for host in ["cp1", "w1"] {
        let v = containerd_version(&lab, host);
        assert!(v.contains("2.1.9"), "{host}: {v}");
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
        let run = run_capstan(&["upgrade", "apply", "--to", to, "--yes"], &inv);
        assert_eq!(run.code, 0, "{from} → {to}:\n{}", run.all());
        assert_all_at(&lab, &inv, to, &["cp1"]);
        // The control plane's static pods run the target's stand-ins; the addons (CoreDNS,
        // kube-proxy) are at the images the target pairs, and the cluster DNS answers.
        assert!(
            run.stdout.contains("addons") || run.stderr.contains("addons"),
            "{}",
            run.all()
        );
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
