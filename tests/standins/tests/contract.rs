//! The contract every stand-in shares: strict flags, the version stamp, loud failures on bad
//! files; and leader election handover.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

const ALL: [&str; 4] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
];

#[test]
fn unknown_flag_exits_1_and_version_is_stamped() {
    let dir = tempfile::tempdir().unwrap();
    for name in ALL {
        let a = stamped(dir.path(), name, "v1.31.9");
        let out = Command::new(&a).arg("--no-such-flag=1").output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{name}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("unknown flag: --no-such-flag"),
            "{name}"
        );
        let out = Command::new(&a).arg("--version").output().unwrap();
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "Kubernetes v1.31.9\n",
            "{name}"
        );
    }
    // Each version has its own bytes.
    let d2 = tempfile::tempdir().unwrap();
    let b = stamped(d2.path(), "kubelet", "v1.32.5");
    assert_ne!(
        std::fs::read(dir.path().join("kubelet")).unwrap(),
        std::fs::read(&b).unwrap()
    );
    let out = Command::new(&b).arg("--version=raw").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Kubernetes v1.32.5\n");
    // An unstamped copy refuses to pretend.
    let raw = d2.path().join("kube-scheduler");
    std::fs::copy(env!("CARGO_BIN_EXE_standin"), &raw).unwrap();
    let out = Command::new(&raw).arg("--version").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no version stamp"));
}

fn run_fail(bin: &std::path::Path, args: &[String]) -> String {
    let mut child = Command::new(bin)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            assert_eq!(st.code(), Some(1));
            let out = child.wait_with_output().unwrap();
            return String::from_utf8_lossy(&out.stderr).into_owned();
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("{} did not fail with {args:?}", bin.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn bad_files_fail_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new("kubernetes");
    let other = Ca::new("other");
    write(d, "ca.crt", &ca.pem);
    let etcd_ca = Ca::new("etcd-ca");
    write(d, "etcd-ca.crt", &etcd_ca.pem);
    let good = etcd_ca.issue("apiserver-etcd-client", &[], &[], false, true);
    let foreign = other.issue("apiserver-etcd-client", &[], &[], false, true);
    write(d, "etcd.crt", &good.cert);
    write(d, "etcd.key", &good.key);
    write(d, "foreign.crt", &foreign.cert);
    write(d, "foreign.key", &foreign.key);
    write(d, "sa.key", &good.key);
    write(d, "sa.pub", &good.cert);
    let srv = ca.issue("kube-apiserver", &[], &["127.0.0.1"], true, false);
    write(d, "apiserver.crt", &srv.cert);
    write(d, "apiserver.key", &srv.key);
    let api = stamped(d, "kube-apiserver", VERSION);
    let p = |n: &str| d.join(n).to_string_lossy().into_owned();
    let base = |cert: &str, key: &str, etcd_cert: &str, etcd_key: &str| -> Vec<String> {
        vec![
            format!("--client-ca-file={}", p("ca.crt")),
            format!("--tls-cert-file={}", p(cert)),
            format!("--tls-private-key-file={}", p(key)),
            "--etcd-servers=https://127.0.0.1:1".into(),
            format!("--etcd-cafile={}", p("etcd-ca.crt")),
            format!("--etcd-certfile={}", p(etcd_cert)),
            format!("--etcd-keyfile={}", p(etcd_key)),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            format!("--service-account-key-file={}", p("sa.pub")),
            format!("--service-account-signing-key-file={}", p("sa.key")),
            "--secure-port=0".into(),
            "--bind-address=127.0.0.1".into(),
        ]
    };
    let err = run_fail(
        &api,
        &base("missing.crt", "apiserver.key", "etcd.crt", "etcd.key"),
    );
    assert!(
        err.contains("--tls-cert-file")
            && err.contains("missing.crt")
            && err.contains("No such file"),
        "{err}"
    );
    let err = run_fail(
        &api,
        &base("apiserver.crt", "etcd.key", "etcd.crt", "etcd.key"),
    );
    assert!(
        err.contains("private key does not match certificate"),
        "{err}"
    );
    let err = run_fail(
        &api,
        &base(
            "apiserver.crt",
            "apiserver.key",
            "foreign.crt",
            "foreign.key",
        ),
    );
    assert!(
        err.contains("not a valid client certificate signed by the CA in --etcd-cafile"),
        "{err}"
    );
    let err = run_fail(
        &api,
        &base("apiserver.crt", "apiserver.key", "etcd.crt", "etcd.key")[..3],
    );
    assert!(
        err.contains("service-account-issuer is a required flag"),
        "{err}"
    );
    // A kubeconfig without a user.
    let kc = write(
        d,
        "nouser.conf",
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:6443\ncontexts:\n- name: x\n  context:\n    cluster: c\ncurrent-context: x\n",
    );
    let sched = stamped(d, "kube-scheduler", VERSION);
    let err = run_fail(&sched, &[format!("--kubeconfig={kc}")]);
    assert!(err.contains("names no user"), "{err}");
    // A service range the allocator cannot hold; a signing key that is no key.
    let mut args = base("apiserver.crt", "apiserver.key", "etcd.crt", "etcd.key");
    args.push("--service-cluster-ip-range=10.0.0.0/8".into());
    let err = run_fail(&api, &args);
    assert!(
        err.contains("specified --service-cluster-ip-range is too large; for 32-bit addresses, the mask must be >= 12"),
        "{err}"
    );
    let mut args = base("apiserver.crt", "apiserver.key", "etcd.crt", "etcd.key");
    args.retain(|a| !a.starts_with("--service-account-signing-key-file="));
    args.push(format!(
        "--service-account-signing-key-file={}",
        p("ca.crt")
    ));
    let err = run_fail(&api, &args);
    assert!(err.contains("--service-account-signing-key-file"), "{err}");
    // Node CIDRs wanted without a cluster CIDR: the node IPAM controller cannot start.
    let admin = ca.issue("system:kube-controller-manager", &[], &[], false, true);
    let cm_kc = kubeconfig(d, "cm.conf", "https://127.0.0.1:1", &ca.pem, &admin);
    let cm = stamped(d, "kube-controller-manager", VERSION);
    let err = run_fail(
        &cm,
        &[
            format!("--kubeconfig={cm_kc}"),
            "--allocate-node-cidrs=true".into(),
            "--bind-address=127.0.0.1".into(),
            "--secure-port=0".into(),
            "--leader-elect=false".into(),
        ],
    );
    assert!(err.contains("missing --cluster-cidr"), "{err}");
}

fn lease_holder(bed: &Bed) -> String {
    let out = kubectl(
        &bed.admin,
        &[
            "get",
            "lease",
            "-n",
            "kube-system",
            "kube-controller-manager",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn leader_election_handover() {
    let bed = Bed::start();
    let d = bed.dir.path();
    let cm = bed
        .ca
        .issue("system:kube-controller-manager", &[], &[], false, true);
    let kc = kubeconfig(d, "cm.conf", &bed.api_url, &bed.ca.pem, &cm);
    let bin = stamped(d, "kube-controller-manager", VERSION);
    let spawn = |i: u32| {
        let port = free_port().to_string();
        Proc::spawn(
            Command::new(&bin).args([
                format!("--kubeconfig={kc}"),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={port}"),
                "--leader-elect=true".into(),
                "--leader-elect-lease-duration=15s".into(),
                "--leader-elect-renew-deadline=10s".into(),
                "--leader-elect-retry-period=2s".into(),
            ]),
            d.join(format!("cm{i}.log")),
        )
    };
    let mut first = spawn(1);
    wait_for(
        "the first controller-manager to take the lease",
        Duration::from_secs(15),
        || !lease_holder(&bed).is_empty(),
    );
    let holder = lease_holder(&bed);
    let _second = spawn(2);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        lease_holder(&bed),
        holder,
        "the standby must not steal a live lease"
    );
    first.kill();
    let t = Instant::now();
    wait_for("the standby to take over", Duration::from_secs(20), || {
        let h = lease_holder(&bed);
        !h.is_empty() && h != holder
    });
    assert!(
        t.elapsed() <= Duration::from_secs(17),
        "takeover took {:?}",
        t.elapsed()
    );
    let transitions = ok(
        &kubectl(
            &bed.admin,
            &[
                "get",
                "lease",
                "-n",
                "kube-system",
                "kube-controller-manager",
                "-o",
                "jsonpath={.spec.leaseTransitions}",
            ],
        ),
        "lease",
    );
    assert_eq!(transitions, "1");
}
