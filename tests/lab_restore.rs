//! `capstan etcd restore` on a real 3-member stacked etcd (three control planes, real etcd
//! and etcdctl over TLS): objects made before a snapshot come back, objects made after it do
//! not. In one lab, in sequence: snapshots of unknown or foreign origin and a run without a
//! terminal are refused with exit 2 before anything changes; a dry run changes nothing; then
//! two of three members are stopped and wiped (quorum lost, the API fails), the restore is
//! interrupted with SIGINT once etcd is being stopped, and a re-run finishes it; the API
//! serves the first ConfigMap and not the second, etcd has three healthy members of a new
//! cluster, the old data is kept aside, and `capstan init` afterwards changes nothing. A
//! second lab restores on external etcd hosts (the API server on a host that is no member).

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::lab::{Lab, Run, capstan, docker, etcdctl_on, run_capstan, sh};

const MEMBERS: [&str; 3] = ["cp1", "cp2", "cp3"];

fn kubectl(lab: &Lab, args: &str) -> (i32, String) {
    sh(
        lab,
        "cp1",
        &format!("kubectl --kubeconfig /etc/kubernetes/admin.conf --request-timeout=5s {args}"),
    )
}

/// `kubectl apply` of one object (JSON), on cp1 through the endpoint.
fn apply(lab: &Lab, object: &str) {
    let (code, out) = sh(
        lab,
        "cp1",
        &format!(
            "printf '%s' '{object}' | kubectl --kubeconfig /etc/kubernetes/admin.conf --request-timeout=10s apply -f -"
        ),
    );
    assert_eq!(code, 0, "{out}");
}

fn config_map(name: &str, value: &str) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}","namespace":"dr"}},"data":{{"k":"{value}"}}}}"#
    )
}

fn etcdctl(lab: &Lab, host: &str, args: &[&str]) -> String {
    let container = lab.container(host);
    let mut all = etcdctl_on(&container);
    all.extend_from_slice(args);
    docker(&all)
}

fn says(run: &Run, text: &str) {
    assert!(
        run.stdout.contains(text) || run.stderr.contains(text),
        "no `{text}` in\n{}",
        run.all()
    );
}

/// After a restore: what was there at the snapshot is back, what came after is not, and
/// etcd (asked on `member`) has three healthy members.
fn assert_restored(lab: &Lab, member: &str) {
    let (code, out) = kubectl(lab, "-n dr get configmap first -o jsonpath={.data.k}");
    assert_eq!((code, out.trim()), (0, "before"), "{out}");
    let (code, out) = kubectl(lab, "-n dr get configmap second");
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("NotFound") || out.contains("not found"),
        "{out}"
    );
    let health = etcdctl(
        lab,
        member,
        &["endpoint", "health", "--cluster", "-w", "json"],
    );
    let health: serde_json::Value = serde_json::from_str(&health).expect("JSON");
    let health = health.as_array().expect("list");
    assert_eq!(health.len(), 3, "{health:?}");
    assert!(health.iter().all(|e| e["health"] == true), "{health:?}");
}

/// A state of the cluster to compare before and after a refused or dry run: the
/// ConfigMaps the API serves, the static pod manifests and etcd's data on every member.
fn fingerprint(lab: &Lab) -> String {
    let (code, cms) = kubectl(lab, "-n dr get configmaps -o name");
    assert_eq!(code, 0, "{cms}");
    let mut s = cms;
    for h in MEMBERS {
        let (_, out) = sh(
            lab,
            h,
            "ls /etc/kubernetes/manifests; ls /var/lib/etcd/member; systemctl is-active etcd; ls -d /var/lib/etcd-before-restore-* 2>&1",
        );
        s.push_str(&format!("{h}:\n{out}"));
    }
    s
}

/// `etcd restore` in the background: its stdout lines on a channel.
fn restore_in_background(
    inv: &Path,
    snapshot: &Path,
) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut child = capstan()
        .args(["etcd", "restore", "--yes", "--snapshot"])
        .arg(snapshot)
        .arg("-i")
        .arg(inv)
        .arg("--cache-dir")
        .arg(inv.parent().expect("dir").join("cache"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn capstan");
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

#[test]
#[allow(clippy::too_many_lines)]
fn restore_brings_back_a_snapshot_after_quorum_loss() {
    let lab = support::lab::bed_lab("restore", &["--control-planes", "3"]);
    let inv = lab.inventory();
    support::upgrade::init(&inv);

    // Before the snapshot: a Namespace and a ConfigMap.
    apply(
        &lab,
        r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"dr"}}"#,
    );
    apply(&lab, &config_map("first", "before"));
    let snap = run_capstan(&["etcd", "snapshot", "--output", "json"], &inv);
    assert_eq!(snap.code, 0, "{}", snap.all());
    let json: serde_json::Value = serde_json::from_str(&snap.stdout).expect("JSON");
    let path = PathBuf::from(json["path"].as_str().expect("path"));
    let sidecar = PathBuf::from(format!("{}.json", path.display()));
    let meta: serde_json::Value =
        serde_json::from_str(&support::lab::read(&sidecar)).expect("the description is JSON");
    assert_eq!(meta["sha256"], json["sha256"]);
    assert_eq!(meta["cluster"], lab.name.as_str());
    let old_cluster_id = meta["cluster_id"].as_str().expect("cluster_id").to_string();
    assert!(!old_cluster_id.is_empty());
    // After it: a second ConfigMap, which the restore must take back.
    apply(&lab, &config_map("second", "after"));
    let before = fingerprint(&lab);

    // Refused before any connection (exit 2), nothing changed: no description beside it ...
    let dir = tempfile::tempdir().expect("temp dir");
    let bare = dir.path().join("bare.db");
    std::fs::copy(&path, &bare).expect("copy");
    let r = run_capstan(
        &[
            "etcd",
            "restore",
            "--yes",
            "--snapshot",
            &bare.display().to_string(),
        ],
        &inv,
    );
    assert_eq!(r.code, 2, "{}", r.all());
    says(&r, "cannot tell which cluster");
    // ... a snapshot taken under another cluster's etcd CA (another PKI, made for the same
    // cluster name) ...
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).expect("dir");
    // The lab's inventory, catalog override and key; not its .capstan/.
    for entry in std::fs::read_dir(lab.dir.path()).expect("lab dir") {
        let entry = entry.expect("entry");
        if entry.file_type().expect("type").is_file() {
            std::fs::copy(entry.path(), other.join(entry.file_name())).expect("copy");
        }
    }
    let g = run_capstan(&["certs", "generate"], &other.join("cluster.yaml"));
    assert_eq!(g.code, 0, "{}", g.all());
    let other_ca = std::fs::read(other.join(".capstan/pki/etcd/ca.crt")).expect("other etcd CA");
    let foreign = dir.path().join("foreign.db");
    std::fs::copy(&path, &foreign).expect("copy");
    let mut foreign_meta = meta.clone();
    foreign_meta["etcd_ca_sha256"] = sha256_hex(&other_ca).into();
    std::fs::write(
        format!("{}.json", foreign.display()),
        serde_json::to_vec(&foreign_meta).expect("JSON"),
    )
    .expect("write");
    let r = run_capstan(
        &[
            "etcd",
            "restore",
            "--yes",
            "--snapshot",
            &foreign.display().to_string(),
        ],
        &inv,
    );
    assert_eq!(r.code, 2, "{}", r.all());
    says(&r, "another etcd CA");
    says(&r, "--allow-foreign-snapshot");
    // ... and a real one without --yes and without a terminal.
    let r = run_capstan(
        &["etcd", "restore", "--snapshot", &path.display().to_string()],
        &inv,
    );
    assert_eq!(r.code, 2, "{}", r.all());
    says(&r, "add --yes");

    // A dry run checks and shows the plan, and changes nothing.
    let dry = run_capstan(
        &[
            "etcd",
            "restore",
            "--dry-run",
            "--snapshot",
            &path.display().to_string(),
        ],
        &inv,
    );
    assert_eq!(dry.code, 0, "{}", dry.all());
    says(&dry, "would do");
    says(&dry, "2. stop etcd on cp1, cp2, cp3");
    says(&dry, "dry run, nothing was changed");
    assert_eq!(
        fingerprint(&lab),
        before,
        "a refused or dry run changed something"
    );
    assert!(
        !inv.parent()
            .expect("dir")
            .join(".capstan/restore.json")
            .exists()
    );

    // Disaster: two of three members stopped and their data gone. Quorum is lost, the API
    // cannot read.
    for h in ["cp2", "cp3"] {
        let (code, out) = sh(
            &lab,
            h,
            "systemctl stop etcd && rm -rf /var/lib/etcd/member",
        );
        assert_eq!(code, 0, "{out}");
    }
    let (code, out) = kubectl(&lab, "-n dr get configmap first");
    assert_ne!(
        code, 0,
        "the API still read from etcd without quorum: {out}"
    );

    // The restore, interrupted by SIGINT as etcd is stopped: it stops between steps (130).
    let t0 = Instant::now();
    let (mut child, lines) = restore_in_background(&inv, &path);
    let mut seen = Vec::new();
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("no `==> stop etcd` line:\n{}", seen.join("\n")));
        let hit = line.starts_with("==> stop etcd");
        seen.push(line);
        if hit {
            break;
        }
    }
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let code = child.wait().expect("wait").code();
    seen.extend(lines.try_iter());
    assert_eq!(code, Some(130), "{}", seen.join("\n"));
    let progress = inv.parent().expect("dir").join(".capstan/restore.json");
    assert!(progress.exists(), "the unfinished restore is not recorded");
    let journal = support::upgrade::journal(&inv);
    assert!(
        journal.contains("\tetcd restore\tstop the API servers\tdone"),
        "{journal}"
    );

    // The same command finishes it.
    let r = run_capstan(
        &[
            "etcd",
            "restore",
            "--yes",
            "--snapshot",
            &path.display().to_string(),
        ],
        &inv,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    says(&r, "resuming the restore started at");
    says(&r, "etcd restore: cp1, cp2, cp3 restored from");
    let took = t0.elapsed();
    assert!(!progress.exists(), "the finished restore is still recorded");
    let journal = support::upgrade::journal(&inv);
    for step in [
        "stop etcd",
        "restore the snapshot",
        "start etcd",
        "start the API servers",
        "nodes",
    ] {
        assert!(
            journal.contains(&format!("\tetcd restore\t{step}\tdone")),
            "{step}: {journal}"
        );
    }

    assert_restored(&lab, "cp1");
    // Of a new cluster.
    let status = etcdctl(&lab, "cp3", &["endpoint", "status", "-w", "json"]);
    let status: serde_json::Value = serde_json::from_str(&status).expect("JSON");
    let new_id = format!(
        "{:x}",
        status[0]["Status"]["header"]["cluster_id"]
            .as_u64()
            .expect("id")
    );
    assert_ne!(
        new_id, old_cluster_id,
        "the restored cluster kept the old cluster ID"
    );
    // The data from before is kept on the member that still had it.
    let (code, out) = sh(&lab, "cp1", "ls /var/lib/etcd-before-restore-*/member");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("snap") && out.contains("wal"), "{out}");
    // Nothing of the restore is left behind on the hosts.
    for h in MEMBERS {
        let (_, out) = sh(
            &lab,
            h,
            "ls -A /var/lib/capstan/restore 2>&1; ls /etc/kubernetes/manifests",
        );
        assert!(
            out.contains("No such file") && out.contains("kube-apiserver.yaml"),
            "{h}: {out}"
        );
    }

    // Converged already: init changes nothing.
    let again = run_capstan(&["init"], &inv);
    assert_eq!(again.code, 0, "{}", again.all());
    assert!(
        again.stdout.contains(" 0 changed,") && again.stdout.contains(" 0 changes"),
        "{}",
        again.all()
    );
    eprintln!("restore (interrupted and resumed) took {took:?}");
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The external topology: etcd on three hosts of its own, the API server on a control
/// plane that is no member. The restore stops the API server on cp1, restores every etcd
/// host, and brings the API server back; what came after the snapshot is gone.
#[test]
fn restore_on_external_etcd_hosts() {
    let lab = support::lab::bed_lab("restore-ext", &["--control-planes", "1", "--etcd", "3"]);
    let inv = lab.inventory();
    support::upgrade::init(&inv);
    apply(
        &lab,
        r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"dr"}}"#,
    );
    apply(&lab, &config_map("first", "before"));
    let snap = run_capstan(&["etcd", "snapshot", "--output", "json"], &inv);
    assert_eq!(snap.code, 0, "{}", snap.all());
    let json: serde_json::Value = serde_json::from_str(&snap.stdout).expect("JSON");
    let path = json["path"].as_str().expect("path").to_string();
    apply(&lab, &config_map("second", "after"));

    let restored = run_capstan(&["etcd", "restore", "--yes", "--snapshot", &path], &inv);
    assert_eq!(restored.code, 0, "{}", restored.all());
    assert_restored(&lab, "etcd1");
    // Each member's data from before is kept aside; cp1 is no member and has none.
    for h in ["etcd1", "etcd2", "etcd3"] {
        let (code, out) = sh(&lab, h, "ls /var/lib/etcd-before-restore-*/member");
        assert_eq!(code, 0, "{h}: {out}");
    }
    let (code, _) = sh(&lab, "cp1", "ls -d /var/lib/etcd-before-restore-*");
    assert_ne!(code, 0, "cp1 is no etcd member");

    let again = run_capstan(&["init"], &inv);
    assert_eq!(again.code, 0, "{}", again.all());
    assert!(
        again.stdout.contains(" 0 changed,") && again.stdout.contains(" 0 changes"),
        "{}",
        again.all()
    );
}
