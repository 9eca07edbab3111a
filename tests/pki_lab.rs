//! The PKI on real lab hosts: `certs distribute` installs kubeadm's files with kubeadm's modes
//! and owners, `openssl verify` on each host accepts every certificate against its CA, a
//! second run changes nothing, a lost local PKI adopts the cluster's CA back (same
//! fingerprint), a foreign local CA is refused without touching the hosts, and
//! `check-expiration` lists every certificate the hosts hold. No output shows a private key.

mod support;

use std::path::Path;

use support::lab::{Lab, capstan, docker};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(args: &[&str], inv: &Path) -> Run {
    let out = capstan()
        .args(args)
        .arg("-i")
        .arg(inv)
        .output()
        .expect("run capstan");
    let r = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(
        !r.stdout.contains("PRIVATE KEY") && !r.stderr.contains("PRIVATE KEY"),
        "key material in the output of {args:?}"
    );
    r
}

fn sh(lab: &Lab, host: &str, script: &str) -> String {
    docker(&["exec", &lab.container(host), "sh", "-c", script])
}

/// (path, CA it verifies against) on a control plane.
const CP_CERTS: &[(&str, &str)] = &[
    ("apiserver.crt", "ca.crt"),
    ("apiserver-kubelet-client.crt", "ca.crt"),
    ("front-proxy-client.crt", "front-proxy-ca.crt"),
    ("apiserver-etcd-client.crt", "etcd/ca.crt"),
    ("etcd/server.crt", "etcd/ca.crt"),
    ("etcd/peer.crt", "etcd/ca.crt"),
    ("etcd/healthcheck-client.crt", "etcd/ca.crt"),
];

fn local_ca_fingerprint(inv: &Path) -> String {
    let ca = inv
        .parent()
        .expect("inventory folder")
        .join(".capstan/pki/ca.crt");
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(&ca)
        .output()
        .expect("openssl");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn pki_on_lab_hosts() {
    let lab = Lab::up("pki", &["--control-planes", "1", "--workers", "1"]);
    let inv = lab.inventory();

    // Dry run: nothing is written, locally or on the hosts.
    let r = run(&["certs", "distribute", "--dry-run"], &inv);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("would change"), "{}", r.stdout);
    assert!(
        !inv.parent()
            .expect("inventory folder")
            .join(".capstan/pki")
            .exists()
    );
    assert!(sh(&lab, "cp1", "ls /etc/kubernetes/pki 2>&1 || true").contains("No such file"));

    let r = run(&["certs", "distribute"], &inv);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("2 hosts, 2 changed, 0 failed"),
        "{}",
        r.stdout
    );

    // openssl on the hosts verifies every certificate against its CA.
    for (cert, ca) in CP_CERTS {
        let out = sh(
            &lab,
            "cp1",
            &format!("cd /etc/kubernetes/pki && openssl verify -CAfile {ca} {cert}"),
        );
        assert!(out.contains(": OK"), "{cert}: {out}");
    }
    let out = sh(
        &lab,
        "w1",
        "openssl verify -CAfile /etc/kubernetes/pki/ca.crt /var/lib/kubelet/pki/kubelet.crt",
    );
    assert!(out.contains(": OK"), "{out}");
    // The kubeconfigs' client certs too (extracted on the host).
    for conf in [
        "admin.conf",
        "super-admin.conf",
        "controller-manager.conf",
        "scheduler.conf",
        "kubelet.conf",
    ] {
        let out = sh(
            &lab,
            "cp1",
            &format!(
                "sed -n 's/^ *client-certificate-data: *//p' /etc/kubernetes/{conf} | base64 -d > /tmp/c.crt && \
                 openssl verify -CAfile /etc/kubernetes/pki/ca.crt /tmp/c.crt"
            ),
        );
        assert!(out.contains(": OK"), "{conf}: {out}");
    }

    // kubeadm's modes and owners; workers hold no CA key.
    let modes = sh(
        &lab,
        "cp1",
        "cd /etc/kubernetes && stat -c '%n %a %U:%G' pki pki/ca.crt pki/ca.key pki/sa.key pki/sa.pub pki/etcd pki/etcd/ca.key pki/etcd/server.crt admin.conf kubelet.conf /var/lib/kubelet/pki/kubelet.key",
    );
    for want in [
        "pki 755 root:root",
        "pki/ca.crt 644 root:root",
        "pki/ca.key 600 root:root",
        "pki/sa.key 600 root:root",
        "pki/sa.pub 600 root:root",
        "pki/etcd 755 root:root",
        "pki/etcd/ca.key 600 root:root",
        "pki/etcd/server.crt 644 root:root",
        "admin.conf 600 root:root",
        "kubelet.conf 600 root:root",
        "/var/lib/kubelet/pki/kubelet.key 600 root:root",
    ] {
        assert!(
            modes.lines().any(|l| l == want),
            "want `{want}` in\n{modes}"
        );
    }
    let w1 = sh(
        &lab,
        "w1",
        "find /etc/kubernetes /var/lib/kubelet/pki -type f | sort",
    );
    assert_eq!(
        w1.lines().collect::<Vec<_>>(),
        vec![
            "/etc/kubernetes/kubelet.conf",
            "/etc/kubernetes/pki/ca.crt",
            "/var/lib/kubelet/pki/kubelet.crt",
            "/var/lib/kubelet/pki/kubelet.key",
        ]
    );

    // Idempotent.
    let r = run(&["certs", "distribute"], &inv);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("2 hosts, 0 changed, 0 failed"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("create 0, re-issue 0"), "{}", r.stdout);
    // distribute installs through the engine: the `pki` role of `plan` agrees nothing is left.
    let r = run(&["plan", "--roles", "pki", "--detailed-exitcode"], &inv);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    // A key left readable by others and a changed certificate are put back, and named.
    sh(
        &lab,
        "cp1",
        "chmod 644 /etc/kubernetes/pki/ca.key && echo x >> /etc/kubernetes/pki/front-proxy-ca.crt",
    );
    let r = run(&["certs", "distribute"], &inv);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("cp1 changed 2 files"), "{}", r.stdout);
    for path in [
        "/etc/kubernetes/pki/ca.key",
        "/etc/kubernetes/pki/front-proxy-ca.crt",
    ] {
        assert!(r.stdout.contains(path), "{path}:\n{}", r.stdout);
    }
    assert!(
        sh(&lab, "cp1", "stat -c %a /etc/kubernetes/pki/ca.key").trim() == "600",
        "the key's mode is not back"
    );
    let r = run(&["certs", "distribute"], &inv);
    assert!(
        r.stdout.contains("2 hosts, 0 changed, 0 failed"),
        "{}",
        r.stdout
    );

    // check-expiration reads every certificate on every host.
    let r = run(&["certs", "check-expiration"], &inv);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    for name in [
        "apiserver ",
        "etcd-server ",
        "admin.conf ",
        "super-admin.conf ",
        "kubelet ",
        "front-proxy-ca ",
    ] {
        assert!(r.stdout.contains(name), "{name} missing:\n{}", r.stdout);
    }
    assert!(r.stdout.contains("CERTIFICATE AUTHORITY"), "{}", r.stdout);
    let r = run(&["certs", "check-expiration", "--output", "json"], &inv);
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    let rows = doc["certificates"].as_array().expect("rows");
    let on = |h: &str| rows.iter().filter(|r| r["host"] == h).count();
    // cp1: 11 certificate files (3 CAs) + 5 kubeconfigs; w1: ca, kubelet serving, kubelet.conf.
    assert_eq!((on("cp1"), on("w1")), (16, 3), "{}", r.stdout);
    assert!(
        rows.iter().all(|r| r["externally_managed"] == false),
        "{}",
        r.stdout
    );
    assert!(
        rows.iter()
            .any(|r| r["certificate"] == "etcd-peer" && r["certificate_authority"] == "etcd-ca")
    );

    // Lose the local PKI: the next run adopts the cluster's CA (same fingerprint).
    let before = local_ca_fingerprint(&inv);
    let state = inv.parent().expect("inventory folder").join(".capstan");
    std::fs::remove_dir_all(state.join("pki")).expect("rm pki");
    std::fs::remove_file(state.join("admin.conf")).expect("rm admin.conf");
    let r = run(&["certs", "distribute"], &inv);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("adopted ca from cp1"), "{}", r.stdout);
    assert!(
        r.stdout.contains("adopted etcd-ca from cp1"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("adopted sa from cp1"), "{}", r.stdout);
    assert_eq!(local_ca_fingerprint(&inv), before);
    let out = sh(
        &lab,
        "cp1",
        "cd /etc/kubernetes/pki && openssl verify -CAfile ca.crt apiserver.crt",
    );
    assert!(out.contains(": OK"), "{out}");

    // A foreign local CA is refused, naming the CA, and the hosts are untouched.
    let host_ca = sh(
        &lab,
        "cp1",
        "sha256sum /etc/kubernetes/pki/ca.crt /etc/kubernetes/pki/apiserver.crt",
    );
    std::fs::remove_dir_all(state.join("pki")).expect("rm pki");
    let r = run(&["certs", "generate"], &inv);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = run(&["certs", "distribute"], &inv);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("the ca on cp1 differs"), "{}", r.stderr);
    assert_eq!(
        sh(
            &lab,
            "cp1",
            "sha256sum /etc/kubernetes/pki/ca.crt /etc/kubernetes/pki/apiserver.crt"
        ),
        host_ca
    );
}
