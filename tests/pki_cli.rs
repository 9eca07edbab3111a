//! The local `certs` commands through the real binary: what they print, their exit codes,
//! and that no output ever holds key material.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use support::lab::capstan;

const INVENTORY: &str = "cluster:
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
        !stdout.contains("PRIVATE KEY") && !stderr.contains("PRIVATE KEY"),
        "key material in the output of {args:?}"
    );
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

#[test]
fn local_certs_commands() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("cluster.yaml"), INVENTORY).expect("write");
    let pki = dir.path().join(".capstan/pki");

    let (code, out, _) = run(dir.path(), &["certs", "generate", "--dry-run"]);
    assert_eq!(code, 0);
    assert!(out.contains("would create 26"), "{out}");
    assert!(!pki.exists(), "a dry run writes nothing");

    let (code, out, _) = run(dir.path(), &["certs", "generate"]);
    assert_eq!(code, 0);
    assert!(out.contains("create 26, re-issue 0"), "{out}");
    assert!(dir.path().join(".capstan/admin.conf").is_file());

    let (code, out, _) = run(dir.path(), &["certs", "generate", "-v"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("create 0, re-issue 0, update 0 kubeconfigs, keep 26"),
        "{out}"
    );

    let (code, out, _) = run(dir.path(), &["certs", "generate", "--output", "json"]);
    assert_eq!(code, 0);
    let doc: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(doc["written"].as_array().map(Vec::len), Some(0));

    let (code, out, _) = run(
        dir.path(),
        &["certs", "renew", "apiserver", "--dry-run", "--local"],
    );
    assert_eq!(code, 0);
    assert!(
        out.contains("renewal requested") && out.contains("would re-issue 1"),
        "{out}"
    );

    let (code, out, _) = run(dir.path(), &["certs", "renew", "--local"]);
    assert_eq!(code, 0);
    assert!(out.contains("re-issue 15"), "{out}");
    assert!(out.contains("local PKI only (--local)"), "{out}");

    let (code, _, err) = run(dir.path(), &["certs", "renew", "apiservr", "--local"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("apiservr"), "{err}");

    std::fs::set_permissions(&pki, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let (code, _, err) = run(dir.path(), &["certs", "generate"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("readable by group or others"), "{err}");
    assert!(err.contains("chmod -R go-rwx"), "{err}");
}
