//! The API server stand-in with a real etcd and the machine's real kubectl.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;
use support::*;

#[test]
fn kubectl_smoke() {
    let bed = Bed::start();
    let k = |args: &[&str]| kubectl(&bed.admin, args);
    assert_eq!(ok(&k(&["get", "--raw", "/readyz"]), "readyz").trim(), "ok", "{}", bed.logs());
    let out = ok(&k(&["get", "nodes"]), "get nodes");
    println!("{out}");
    let out = ok(&k(&["version", "-o", "json"]), "version");
    assert!(out.contains("\"gitVersion\": \"v1.32.4\""), "{out}");
    let ns = ok(&k(&["get", "namespaces", "-o", "name"]), "get ns");
    assert!(ns.contains("namespace/kube-system"), "{ns}");
}
