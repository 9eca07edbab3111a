//! Key material of a lab cluster, and the check that a run's output holds none of it.

use std::path::Path;

use super::lab::{Lab, Run, docker, read};

/// The base64 body of a PEM file: every line between the armour lines, long enough to be
/// unmistakable in output.
pub fn pem_lines(pem: &str) -> Vec<String> {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 40)
        .map(str::to_string)
        .collect()
}

/// Everything secret capstan knows for this lab: the local CA and service-account keys,
/// the SSH private key of the lab, and the bootstrap tokens / private keys on the hosts.
pub fn secrets(lab: &Lab, inv: &Path) -> Vec<String> {
    let dir = inv.parent().expect("the inventory's folder");
    let mut out = Vec::new();
    for key in ["ca.key", "sa.key", "etcd/ca.key", "front-proxy-ca.key"] {
        let path = dir.join(".capstan/pki").join(key);
        if path.is_file() {
            out.extend(pem_lines(&read(&path)));
        }
    }
    for entry in std::fs::read_dir(dir).expect("list the lab folder") {
        let path = entry.expect("a lab folder entry").path();
        if path.is_file() && read(&path).contains("PRIVATE KEY") {
            out.extend(pem_lines(&read(&path)));
        }
    }
    // Keys only the hosts hold (the kubelet's, the API server's).
    let on_host = docker(&[
        "exec",
        &lab.container("cp1"),
        "sh",
        "-c",
        "cat /etc/kubernetes/pki/apiserver.key /var/lib/kubelet/pki/*.key 2>/dev/null || true",
    ]);
    out.extend(pem_lines(&on_host));
    // A private key's encoding carries its public key too (EC and Ed25519 keys at the end,
    // RSA keys' modulus at the start), and certificates show that public key: a key line
    // that shares a run of base64 with public material is not secret.
    let public = public_text(lab, dir);
    out.retain(|line| {
        !line
            .as_bytes()
            .windows(24)
            .any(|w| public.contains(std::str::from_utf8(w).expect("base64 is ASCII")))
    });
    assert!(out.len() >= 6, "found too few secrets to look for: {out:?}");
    out
}

/// The base64 of every certificate and public key of this lab, lines joined, so that a run
/// across a line break matches too.
pub fn public_text(lab: &Lab, dir: &Path) -> String {
    let mut text = docker(&[
        "exec",
        &lab.container("cp1"),
        "sh",
        "-c",
        "cat /etc/kubernetes/pki/*.crt /etc/kubernetes/pki/etcd/*.crt /var/lib/kubelet/pki/*.crt \
         /etc/kubernetes/pki/sa.pub 2>/dev/null || true",
    ]);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            for entry in std::fs::read_dir(&p).expect("list a folder") {
                stack.push(entry.expect("a folder entry").path());
            }
        } else if p
            .extension()
            .is_some_and(|e| e == "crt" || e == "pub" || e == "pem")
        {
            text.push_str(&read(&p));
        }
    }
    text.lines()
        .filter(|l| !l.starts_with("-----"))
        .flat_map(|l| l.split_whitespace())
        .collect()
}

pub fn assert_no_secret(run: &Run, what: &str, secrets: &[String]) {
    let all = run.all();
    assert!(!all.contains("PRIVATE KEY"), "{what} printed a private key");
    for s in secrets {
        if let Some(line) = all.lines().find(|l| l.contains(s.as_str())) {
            let shown: String = line.chars().take(160).collect();
            panic!(
                "{what} printed key material ({}…) in the line:\n{}",
                &s[..12],
                shown.replace(s.as_str(), "<KEY MATERIAL>")
            );
        }
    }
}

/// A private registry with a password beside the inventory (issue 16): gives the inventory
/// `cluster.registries` with that password as `password_file` and returns what must never
/// be printed: the password and the `Authorization` header capstan makes of it.
pub fn with_registry_credentials(inv: &Path) -> Vec<String> {
    use base64::Engine as _;
    const PASSWORD: &str = "registry-pw-5f2c81d0e9";
    let dir = inv.parent().expect("the inventory's folder");
    std::fs::write(dir.join("registry.pass"), format!("{PASSWORD}\n")).expect("write");
    let text = read(inv);
    let with = text.replacen(
        "\nssh:\n",
        "\n  registries:\n    registry.capstan.test:5443:\n      server: {username: capstan, password_file: registry.pass}\nssh:\n",
        1,
    );
    assert_ne!(with, text, "no ssh block in {}", inv.display());
    std::fs::write(inv, with).expect("write the inventory");
    vec![
        PASSWORD.to_string(),
        base64::engine::general_purpose::STANDARD.encode(format!("capstan:{PASSWORD}")),
    ]
}
