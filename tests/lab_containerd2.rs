//! containerd 2 on a real lab host: an inventory naming the test mirror's forky builds
//! (containerd v2.1.9, etcd v3.5.30, CNI plugins v1.9.1; bookworm's runc, since forky's needs
//! glibc 2.38) converges `common,containerd,etcd,kubelet,control-plane`. The real containerd
//! 2.1.9 daemon runs with a config of format version 3 that it takes as it is (no migration),
//! its CRI plugins load, its effective config has the systemd cgroup driver, the sandbox image,
//! the registry hosts folder and the container host's restrict_oom_score_adj; the real etcd
//! 3.5.30 is healthy behind the API server stand-in, the kubelet stand-in's Node is Ready and
//! its static pods run; a second run changes nothing. On the lab's trixie image, forky's runc
//! 1.3.6 (glibc 2.38) runs a real container through containerd 2.1.9.

mod support;

use std::path::Path;

use support::lab::{
    assert_control_plane_pods, bed, bed_lab, run_capstan_cached, sh, wait_api_ready, wait_for,
};

/// `apply --roles ROLES` succeeds with `summary` (`1 host, 1 changed, …`); its stdout.
fn apply(inv: &Path, cache: &Path, roles: &str, summary: &str) -> String {
    let r = run_capstan_cached(&["apply", "--roles", roles], inv, cache);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains(summary), "{}", r.stdout);
    r.stdout
}

const ROLES: &str = "common,containerd,etcd,kubelet,control-plane";
const KUBECTL: &str = "kubectl --kubeconfig /etc/kubernetes/super-admin.conf";
const ETCDCTL: &str = "set -a; . /etc/etcd/etcdctl.env; set +a; etcdctl";

/// The lab's second image (tests/lab/build-image.sh with LAB_SUITE=trixie).
const TRIXIE_IMAGE: &str = "capstan-lab:trixie-3";

/// The inventory's `versions` with `versions` (key, version) in place of the lab's
/// (bookworm's builds).
fn set_versions(inv: &Path, versions: &[(&str, &str)]) {
    let text = std::fs::read_to_string(inv).expect("inventory");
    let mut edited = String::new();
    let mut replaced = 0;
    for line in text.lines() {
        let key = line.trim_start().split(':').next().unwrap_or("");
        match versions.iter().find(|(k, _)| *k == key) {
            Some((_, v)) if line.starts_with("    ") => {
                edited.push_str(&format!("    {key}: {v}\n"));
                replaced += 1;
            }
            _ => {
                edited.push_str(line);
                edited.push('\n');
            }
        }
    }
    assert_eq!(
        replaced,
        versions.len(),
        "the lab's inventory does not name them all:\n{text}"
    );
    std::fs::write(inv, edited).expect("write inventory");
}

#[test]
fn containerd_2_with_config_version_3_runs_a_control_plane() {
    let bed = bed();
    assert!(
        bed.join("mirror/github.com/containerd/containerd/releases/download/v2.1.9")
            .is_dir(),
        "the test mirror has no containerd v2.1.9 (tests/lab/build-mirror.sh)"
    );
    let lab = bed_lab("ctrd2", &["--control-planes", "1"]);
    let inv = lab.inventory();
    set_versions(
        &inv,
        &[
            ("containerd", "v2.1.9"),
            ("etcd", "v3.5.30"),
            ("cni_plugins", "v1.9.1"),
        ],
    );
    let cache = tempfile::tempdir().expect("temp dir");
    let cache = cache.path();

    for step in [["certs", "generate"], ["certs", "distribute"]] {
        let r = run_capstan_cached(&step, &inv, cache);
        assert_eq!(r.code, 0, "{step:?}:\n{}", r.all());
    }
    let out = apply(
        &inv,
        cache,
        ROLES,
        "1 host, 1 changed, 0 unchanged, 0 failed",
    );
    assert!(
        out.contains("create directory /etc/containerd/certs.d"),
        "{out}"
    );

    // The written config: format 3, containerd 2's plugin ids.
    let (_, cfg) = sh(&lab, "cp1", "cat /etc/containerd/config.toml");
    assert!(cfg.contains("\nversion = 3\n"), "{cfg}");
    assert!(!cfg.contains("io.containerd.grpc.v1.cri"), "{cfg}");
    let sandbox = cfg
        .lines()
        .find_map(|l| l.trim().strip_prefix("sandbox = \""))
        .and_then(|l| l.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no pinned sandbox image in {cfg}"))
        .to_string();
    assert!(sandbox.starts_with("registry.k8s.io/pause:"), "{sandbox}");

    // The real daemon: containerd 2.1.9 serving, its CRI plugins loaded.
    let (code, version) = sh(&lab, "cp1", "ctr version");
    assert_eq!(code, 0, "{version}");
    let server = version.split("Server:").nth(1).unwrap_or("");
    assert!(server.contains("2.1.9"), "{version}");
    let (code, plugins) = sh(&lab, "cp1", "ctr plugins ls");
    assert_eq!(code, 0, "{plugins}");
    for (kind, id) in [
        ("io.containerd.cri.v1", "images"),
        ("io.containerd.cri.v1", "runtime"),
        ("io.containerd.grpc.v1", "cri"),
    ] {
        let line = plugins.lines().find(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.first() == Some(&kind) && f.get(1) == Some(&id)
        });
        assert!(
            line.is_some_and(|l| l.trim_end().ends_with(" ok")),
            "{kind} {id} not ok in:\n{plugins}"
        );
    }
    // It took the file as version 3 (a version 2 file is migrated, and containerd says so).
    let (_, journal) = sh(&lab, "cp1", "journalctl --no-pager -u containerd");
    assert!(
        journal.contains("containerd successfully booted"),
        "{journal}"
    );
    assert!(!journal.contains("migrated from version"), "{journal}");
    // Its effective config has what capstan wrote.
    let (code, dump) = sh(&lab, "cp1", "containerd config dump");
    assert_eq!(code, 0, "{dump}");
    for want in [
        "version = 3".to_string(),
        format!("sandbox = '{sandbox}'"),
        "SystemdCgroup = true".to_string(),
        "restrict_oom_score_adj = true".to_string(),
        "config_path = '/etc/containerd/certs.d'".to_string(),
        "default_runtime_name = 'runc'".to_string(),
    ] {
        assert!(dump.contains(&want), "`{want}` not in:\n{dump}");
    }
    let (code, out) = sh(
        &lab,
        "cp1",
        "test -d /etc/containerd/certs.d && stat -c %a /etc/containerd/certs.d",
    );
    assert_eq!((code, out.trim()), (0, "755"), "{out}");

    // The rest of the node on forky's builds: etcd 3.5.30 healthy, the API server ready,
    // the kubelet's Node Ready with its static pods, the CNI plugins 1.9.1.
    let health = wait_for(
        &lab,
        "cp1",
        &format!("{ETCDCTL} endpoint status -w json"),
        |o| o.contains("\"version\":\"3.5.30\""),
        "etcd 3.5.30 serving",
    );
    assert!(health.contains("https://"), "{health}");
    wait_api_ready(&lab, "cp1");
    wait_for(
        &lab,
        "cp1",
        &format!(
            "{KUBECTL} get node cp1 -o jsonpath='{{.status.conditions[?(@.type==\"Ready\")].status}}'"
        ),
        |o| o.trim() == "True",
        "node Ready",
    );
    assert_control_plane_pods(&lab, "cp1", KUBECTL);
    // Debian's plugins print no version of their own; 1.9 speaks CNI 1.1.0, 1.1 does not.
    let (code, out) = sh(&lab, "cp1", "CNI_COMMAND=VERSION /opt/cni/bin/bridge");
    assert!(
        code == 0 && out.contains("\"cniVersion\":\"1.1.0\""),
        "{out}"
    );

    // Converged: a second run changes nothing.
    apply(
        &inv,
        cache,
        ROLES,
        "1 host, 0 changed, 1 unchanged, 0 failed",
    );
}

/// The lab's second image, Debian trixie (`LAB_SUITE=trixie tests/lab/build-image.sh`, glibc
/// 2.41): forky's runc 1.3.6, which bookworm's glibc cannot run, converges with containerd
/// 2.1.9 and runs a real container through the daemon and its shim.
#[test]
fn runc_1_3_on_a_trixie_host_runs_a_container_through_containerd_2() {
    let bed = bed();
    assert!(
        bed.join("mirror/github.com/opencontainers/runc/releases/download/v1.3.6")
            .is_dir(),
        "the test mirror has no runc v1.3.6 (tests/lab/build-mirror.sh)"
    );
    let lab = bed_lab(
        "trixie",
        &["--control-planes", "1", "--image", TRIXIE_IMAGE],
    );
    let (_, os) = sh(&lab, "cp1", ". /etc/os-release; echo $VERSION_CODENAME");
    assert_eq!(os.trim(), "trixie");
    let inv = lab.inventory();
    set_versions(&inv, &[("containerd", "v2.1.9"), ("runc", "v1.3.6")]);
    let cache = tempfile::tempdir().expect("temp dir");
    let cache = cache.path();
    let roles = "common,containerd";
    apply(
        &inv,
        cache,
        roles,
        "1 host, 1 changed, 0 unchanged, 0 failed",
    );

    let (code, out) = sh(&lab, "cp1", "runc --version");
    assert!(code == 0 && out.contains("runc version 1.3.6"), "{out}");
    let (code, out) = sh(&lab, "cp1", "ctr version");
    assert!(
        code == 0 && out.split("Server:").nth(1).unwrap_or("").contains("2.1.9"),
        "{out}"
    );
    // A container from a bare rootfs (dash and the libraries it loads): containerd 2.1.9,
    // its runc v2 shim and runc 1.3.6 create, start and reap it.
    let (code, out) = sh(
        &lab,
        "cp1",
        "set -e; r=/root/rootfs; mkdir -p $r; \
         cp --parents /bin/dash $(ldd /bin/dash | grep -o '/[^ ]*') $r; \
         ctr run --rm --rootfs $r probe /bin/dash -c 'read c < /proc/1/comm; echo hello from $c in pid $$'",
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("hello from dash in pid 1"), "{out}");
    // Again with runc's systemd cgroup driver (what SystemdCgroup = true gives the kubelet's
    // pods): the container's cgroup is a systemd scope in system.slice.
    let (code, out) = sh(
        &lab,
        "cp1",
        "ctr run --rm --rootfs --runc-systemd-cgroup --cgroup system.slice:capstan:probe2 \
         /root/rootfs probe2 /bin/dash -c 'while read l; do echo \"cgroup $l\"; done < /proc/self/cgroup'",
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("cgroup ") && l.ends_with("/system.slice/capstan-probe2.scope")),
        "{out}"
    );

    apply(
        &inv,
        cache,
        roles,
        "1 host, 0 changed, 1 unchanged, 0 failed",
    );
}
