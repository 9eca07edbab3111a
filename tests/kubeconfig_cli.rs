//! `capstan kubeconfig` through the real binary, checked with openssl and kubectl: the admin
//! kubeconfig is the PKI's, a `--user` one carries a fresh certificate signed by the cluster
//! CA with the right subject and validity and is never stored, and bad input is refused
//! with exit 2 before anything is read.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use base64::Engine;
use support::lab::capstan;

const SINGLE: &str = "cluster:
  name: demo
  kubernetes_version: v1.32.3
hosts:
  - name: cp1
    address: 10.0.0.11
    roles: [control-plane]
  - name: w1
    address: 10.0.0.21
    roles: [worker]
";

const LOCAL_PROXY: &str = "cluster:
  name: ha
  kubernetes_version: v1.32.3
  api_endpoint:
    mode: local-proxy
hosts:
  - name: cp1
    address: 192.0.2.11
    internal_address: 10.0.0.11
    roles: [control-plane]
  - name: cp2
    address: 192.0.2.12
    roles: [control-plane]
  - name: cp3
    address: 192.0.2.13
    roles: [control-plane]
";

fn run(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = capstan()
        .args(args)
        .arg("-i")
        .arg(dir)
        .output()
        .expect("run capstan");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        !stderr.contains("PRIVATE KEY") && !stderr.contains("client-key-data"),
        "key material on stderr of {args:?}: {stderr}"
    );
    (out.status.code().unwrap_or(-1), stdout, flat(&stderr))
}

/// stderr with miette's line wrapping undone: words joined by single spaces.
fn flat(text: &str) -> String {
    text.split_whitespace()
        .filter(|w| *w != "|")
        .collect::<Vec<_>>()
        .join(" ")
}

fn inventory(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("cluster.yaml"), text).expect("write inventory");
    dir
}

fn generate(dir: &Path) {
    let (code, out, err) = run(dir, &["certs", "generate"]);
    assert_eq!(code, 0, "{out}{err}");
}

/// Every file under the pki folder with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("list") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir).expect("rel").display().to_string();
                out.insert(rel, std::fs::read(&path).expect("read"));
            }
        }
    }
    out
}

/// The kubeconfig's embedded client certificate and key and its server, written to files.
struct Parts {
    server: String,
    user: String,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    ca: std::path::PathBuf,
}

fn parts(text: &str, out: &Path) -> Parts {
    let doc: serde_yaml::Value = serde_yaml::from_str(text).expect("kubeconfig is YAML");
    let b64 = |v: &serde_yaml::Value| {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("string"))
            .expect("base64")
    };
    let user = &doc["users"][0];
    let cert = out.join("client.crt");
    let key = out.join("client.key");
    let ca = out.join("embedded-ca.crt");
    std::fs::write(&cert, b64(&user["user"]["client-certificate-data"])).expect("write");
    std::fs::write(&key, b64(&user["user"]["client-key-data"])).expect("write");
    std::fs::write(
        &ca,
        b64(&doc["clusters"][0]["cluster"]["certificate-authority-data"]),
    )
    .expect("write");
    Parts {
        server: doc["clusters"][0]["cluster"]["server"]
            .as_str()
            .expect("server")
            .to_string(),
        user: user["name"].as_str().expect("user name").to_string(),
        cert,
        key,
        ca,
    }
}

fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// openssl says the cert is signed by the CA file, for client auth, and its key pairs with it.
fn assert_signed_and_paired(p: &Parts, ca: &Path) {
    let (ok, out) = openssl(&[
        "verify",
        "-CAfile",
        path(ca),
        "-purpose",
        "sslclient",
        path(&p.cert),
    ]);
    assert!(ok && out.contains(": OK"), "{out}");
    let (_, from_cert) = openssl(&["x509", "-in", path(&p.cert), "-noout", "-pubkey"]);
    let (_, from_key) = openssl(&["pkey", "-in", path(&p.key), "-pubout"]);
    assert!(from_cert.contains("BEGIN PUBLIC KEY"), "{from_cert}");
    assert_eq!(
        from_cert, from_key,
        "the key does not belong to the certificate"
    );
}

fn subject(cert: &Path) -> String {
    let (ok, out) = openssl(&[
        "x509",
        "-in",
        path(cert),
        "-noout",
        "-subject",
        "-nameopt",
        "RFC2253",
    ]);
    assert!(ok, "{out}");
    out.trim().to_string()
}

/// Whether the certificate is still valid `secs` seconds from now.
fn valid_in(cert: &Path, secs: u64) -> bool {
    openssl(&[
        "x509",
        "-in",
        path(cert),
        "-noout",
        "-checkend",
        &secs.to_string(),
    ])
    .0
}

#[test]
fn missing_pki_is_refused_clearly() {
    let dir = inventory(SINGLE);
    for args in [
        &["kubeconfig"][..],
        &["kubeconfig", "--user", "jane", "--group", "dev"][..],
    ] {
        let (code, out, err) = run(dir.path(), args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(out.is_empty(), "nothing on stdout: {out}");
        assert!(
            err.contains(".capstan/pki") && err.contains("capstan certs generate"),
            "{err}"
        );
    }
    assert!(
        !dir.path().join(".capstan").exists(),
        "a refused run creates nothing"
    );

    // A PKI whose admin certificate was removed names what is missing.
    generate(dir.path());
    std::fs::remove_file(dir.path().join(".capstan/pki/kubeconfig/admin.key")).expect("rm");
    let (code, _, err) = run(dir.path(), &["kubeconfig"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("admin client certificate"), "{err}");
}

#[test]
fn admin_kubeconfig_is_the_pkis() {
    let dir = inventory(SINGLE);
    generate(dir.path());
    let pki = dir.path().join(".capstan/pki");
    let before = snapshot(&pki);

    let (code, out, err) = run(dir.path(), &["kubeconfig"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("kubernetes-admin") && err.contains("valid until"),
        "{err}"
    );
    // The same bytes `certs generate` wrote for the operator.
    assert_eq!(
        out.as_bytes(),
        std::fs::read(dir.path().join(".capstan/admin.conf")).expect("admin.conf")
    );
    let work = tempfile::tempdir().expect("temp dir");
    let p = parts(&out, work.path());
    assert_eq!(p.server, "https://10.0.0.11:6443");
    assert_eq!(p.user, "kubernetes-admin");
    assert_eq!(
        std::fs::read(&p.ca).ok(),
        std::fs::read(pki.join("ca.crt")).ok()
    );
    assert_signed_and_paired(&p, &pki.join("ca.crt"));
    assert_eq!(
        subject(&p.cert),
        "subject=CN=kubernetes-admin,O=kubeadm:cluster-admins"
    );
    assert_eq!(snapshot(&pki), before, "printing changes nothing");

    // kubectl reads it.
    let file = work.path().join("admin.conf");
    std::fs::write(&file, &out).expect("write");
    let kubectl = Command::new("kubectl")
        .args(["config", "view", "--kubeconfig", path(&file)])
        .args([
            "-o",
            "jsonpath={.current-context} {.clusters[0].cluster.server}",
        ])
        .output()
        .expect("kubectl");
    assert!(kubectl.status.success(), "{kubectl:?}");
    assert_eq!(
        String::from_utf8_lossy(&kubectl.stdout),
        "kubernetes-admin@demo https://10.0.0.11:6443"
    );

    // JSON is the same document.
    let (code, json, err) = run(dir.path(), &["kubeconfig", "--output", "json"]);
    assert_eq!(code, 0, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&json).expect("json");
    let yaml: serde_json::Value = serde_yaml::from_str(&out).expect("yaml");
    assert_eq!(doc, yaml);
}

#[test]
fn user_kubeconfig_has_a_fresh_cert_signed_by_the_ca() {
    let dir = inventory(SINGLE);
    generate(dir.path());
    let pki = dir.path().join(".capstan/pki");
    let before = snapshot(&pki);
    let work = tempfile::tempdir().expect("temp dir");

    let (code, out, err) = run(
        dir.path(),
        &[
            "kubeconfig",
            "--user",
            "jane@example.com",
            "--group",
            "dev,ops",
            "--group",
            "dev",
            "--validity",
            "2h",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("jane@example.com") && err.contains("groups dev, ops"),
        "{err}"
    );
    assert!(!err.contains("shortened"), "{err}");
    let p = parts(&out, work.path());
    assert_eq!(p.user, "jane@example.com");
    assert_eq!(p.server, "https://10.0.0.11:6443");
    assert_signed_and_paired(&p, &pki.join("ca.crt"));
    assert_eq!(subject(&p.cert), "subject=CN=jane@example.com,O=ops,O=dev");
    assert!(valid_in(&p.cert, 2 * 3600 - 120), "valid for the 2h asked");
    assert!(!valid_in(&p.cert, 2 * 3600 + 120), "and not longer");
    assert!(
        out.contains("name: jane@example.com@demo") || out.contains("\"jane@example.com@demo\"")
    );
    assert_eq!(snapshot(&pki), before, "the new certificate is not stored");

    // Each run issues a new key; without --group the certificate has no O; 24h by default.
    let (code, again, err) = run(dir.path(), &["kubeconfig", "--user", "ci:deployer"]);
    assert_eq!(code, 0, "{err}");
    let work2 = tempfile::tempdir().expect("temp dir");
    let q = parts(&again, work2.path());
    assert_ne!(std::fs::read(&q.key).ok(), std::fs::read(&p.key).ok());
    assert_signed_and_paired(&q, &pki.join("ca.crt"));
    assert_eq!(subject(&q.cert), "subject=CN=ci:deployer");
    assert!(valid_in(&q.cert, 24 * 3600 - 120));
    assert!(!valid_in(&q.cert, 24 * 3600 + 120));
}

#[test]
fn local_proxy_points_at_the_first_control_plane() {
    let dir = inventory(LOCAL_PROXY);
    generate(dir.path());
    let work = tempfile::tempdir().expect("temp dir");
    for args in [&["kubeconfig"][..], &["kubeconfig", "--user", "jane"][..]] {
        let (code, out, err) = run(dir.path(), args);
        assert_eq!(code, 0, "{err}");
        // 127.0.0.1 would be the operator's own machine: the first control plane's SSH address.
        assert_eq!(parts(&out, work.path()).server, "https://192.0.2.11:6443");
    }
}

#[test]
fn bad_names_and_validities_are_refused() {
    let dir = inventory(SINGLE);
    generate(dir.path());
    let cases: &[(&[&str], &str)] = &[
        (&["--user", ""], "--user is empty"),
        (&["--user", "jane doe"], "holds a space at position 5"),
        (&["--user", "x;reboot"], "holds `;` at position 2"),
        (&["--user", "$(id)"], "holds `$` at position 1"),
        (&["--user=-rf"], "starts with `-`"),
        (
            &["--user", "jane", "--group", "a'b"],
            "--group `a'b` holds `'`",
        ),
        (&["--user", "jane", "--group", "dev,"], "--group is empty"),
        (
            &["--user", "jane", "--validity", "400d"],
            "longer than a year",
        ),
        (&["--user", "jane", "--validity", "24"], "without a unit"),
        (
            &["--user", "jane", "--validity", "1m"],
            "shorter than 5 minutes",
        ),
        (&["--group", "dev"], "--user"),
    ];
    for (args, expect) in cases {
        let mut full = vec!["kubeconfig"];
        full.extend_from_slice(args);
        let (code, out, err) = run(dir.path(), &full);
        assert_eq!(code, 2, "{full:?}: {err}");
        assert!(out.is_empty(), "{full:?} printed {out}");
        assert!(
            err.contains(expect),
            "{full:?}: expected `{expect}` in {err}"
        );
    }
}
