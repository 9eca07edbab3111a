//! `cluster.images.preload` (issue 16): image archives beside the inventory reach every
//! node's real containerd without a registry. The test packs a one-layer OCI image as an
//! OCI layout archive (what `ctr images export` writes); `init` sends it once to each node
//! and imports it into containerd's k8s.io namespace (the kubelet's) before the kubelet
//! starts; a second run changes nothing; an image removed on one node is live drift that
//! `plan` shows and the next run imports again, on that node only, without sending the
//! archive again. Bad preload folders are refused before any connection.

mod support;

use std::path::Path;

use support::lab::{Lab, bed_lab, run_capstan, said_of, sh};
use support::oci::oci_archive;

const IMAGE: &str = "registry.capstan.test/air-gapped/hello:1";
const NODES: [&str; 2] = ["cp1", "w1"];

/// The inventory with `cluster.images.preload: images`, inserted before its `ssh:` block.
fn with_preload(inv: &Path) {
    let text = std::fs::read_to_string(inv).expect("the inventory");
    let with = text.replacen("\nssh:\n", "\n  images: {preload: images}\nssh:\n", 1);
    assert_ne!(with, text, "no ssh block in the lab's inventory");
    std::fs::write(inv, with).expect("write the inventory");
}

/// The images containerd's k8s.io namespace has on `host`.
fn images_on(lab: &Lab, host: &str) -> String {
    let (code, out) = sh(lab, host, "/usr/local/bin/ctr -n k8s.io images ls -q");
    assert_eq!(code, 0, "{host}: {out}");
    out
}

#[test]
fn preloaded_archives_reach_every_node_without_a_registry() {
    let lab = bed_lab("preload", &["--control-planes", "1", "--workers", "1"]);
    let inv = lab.inventory();
    let dir = inv.parent().expect("the lab's folder");
    std::fs::create_dir_all(dir.join("images")).expect("mkdir");
    let archive = oci_archive(
        Some(IMAGE),
        "hello",
        b"#!/bin/sh\necho capstan preload test\n",
    );
    std::fs::write(dir.join("images/hello.tar"), &archive).expect("write the archive");
    with_preload(&inv);

    // A dry run names the archive and the import on each node, and changes nothing.
    let dry = run_capstan(&["init", "--dry-run"], &inv);
    assert_eq!(dry.code, 0, "{}", dry.all());
    assert!(
        dry.stdout.contains("/var/lib/capstan/images/hello.tar")
            && dry.stdout.contains("import-images-hello.tar"),
        "{}",
        dry.all()
    );

    let first = run_capstan(&["init"], &inv);
    assert_eq!(first.code, 0, "{}", first.all());
    let sha = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(&archive))
    };
    for host in NODES {
        assert!(
            images_on(&lab, host).lines().any(|l| l == IMAGE),
            "{host} lacks {IMAGE}:\n{}",
            images_on(&lab, host)
        );
        // The archive stays, whole and private, so that a re-run compares it.
        let (code, out) = sh(
            &lab,
            host,
            "stat -c %a /var/lib/capstan/images/hello.tar && sha256sum /var/lib/capstan/images/hello.tar",
        );
        assert_eq!(code, 0, "{out}");
        assert!(
            out.starts_with("600\n") && out.contains(&sha),
            "{host}: {out}"
        );
    }

    // Second run: nothing to do.
    let again = run_capstan(&["init"], &inv);
    assert_eq!(again.code, 0, "{}", again.all());
    assert!(again.stdout.contains(" 0 changes"), "{}", again.all());

    // The image removed on w1: the plan sees it live, and only there; the next run imports
    // it again without sending the archive.
    let (code, out) = sh(
        &lab,
        "w1",
        &format!("/usr/local/bin/ctr -n k8s.io images rm {IMAGE}"),
    );
    assert_eq!(code, 0, "{out}");
    let plan = run_capstan(&["plan", "--detailed-exitcode"], &inv);
    assert_eq!(plan.code, 3, "{}", plan.all());
    assert!(said_of(&plan.stdout, "cp1", "no changes"), "{}", plan.all());
    let w1 = plan
        .stdout
        .split("w1 would change")
        .nth(1)
        .expect("w1 would change");
    assert!(w1.contains("import-images-hello.tar"), "{}", plan.all());
    assert!(
        !w1.contains("file /var/lib/capstan/images/hello.tar"),
        "{}",
        plan.all()
    );
    let repaired = run_capstan(&["init"], &inv);
    assert_eq!(repaired.code, 0, "{}", repaired.all());
    assert!(
        said_of(&repaired.stdout, "w1", "changed (kubelet): 1 change"),
        "{}",
        repaired.all()
    );
    assert!(images_on(&lab, "w1").lines().any(|l| l == IMAGE));
    let last = run_capstan(&["init"], &inv);
    assert!(last.stdout.contains(" 0 changes"), "{}", last.all());
}

/// A preload folder that is missing, empty, or holds an archive without an image name is
/// bad input at the key's line and column, before any connection (the hosts do not exist).
#[test]
fn bad_preload_folders_are_refused_before_connecting() {
    let dir = tempfile::tempdir().expect("temp dir");
    let inv = dir.path().join("cluster.yaml");
    std::fs::write(
        &inv,
        "cluster:\n  name: a\n  kubernetes_version: v1.36.4\n  images: {preload: images}\nhosts:\n  - {name: cp1, address: 192.0.2.1, roles: [control-plane]}\n",
    )
    .expect("write");
    let refused = |what: &str| {
        let r = run_capstan(&["plan"], &inv);
        assert_eq!(r.code, 2, "{what}: {}", r.all());
        // miette folds long lines: read the words.
        let flat = r
            .stderr
            .split_whitespace()
            .filter(|w| *w != "|")
            .collect::<Vec<_>>()
            .join(" ");
        assert!(flat.contains("cluster.yaml:4:"), "{what}: {}", r.all());
        flat
    };
    let err = refused("missing");
    assert!(err.contains("cannot read the preload folder"), "{err}");
    std::fs::create_dir(dir.path().join("images")).expect("mkdir");
    let err = refused("empty");
    assert!(err.contains("holds no image archive"), "{err}");
    std::fs::write(
        dir.path().join("images/anon.tar"),
        oci_archive(None, "x", b"x"),
    )
    .expect("write");
    let err = refused("unnamed");
    assert!(err.contains("names no image"), "{err}");
    std::fs::write(dir.path().join("images/anon.tar"), b"not an archive at all").expect("write");
    let err = refused("not a tar");
    assert!(err.contains("is not an image archive"), "{err}");
}
