//! Scheduled etcd snapshots on a real etcd member (one control plane, stacked etcd, real
//! systemd): `cluster.etcd.snapshots` gives the member a timer (a second `init` changes
//! nothing); its service, started by hand, takes a snapshot that etcd verified, with its
//! sha256 beside it, and keeps only the `keep` newest; `etcd snapshot --list` (text and
//! JSON) shows them, a damaged one as not verified; `--fetch` copies the newest verified one
//! into .capstan/backups/ where this machine's real etcdctl reads it and `etcd restore`
//! accepts it; without the key, `init` removes the timer and leaves the snapshots.

mod support;

use std::path::{Path, PathBuf};

use support::lab::{Lab, Run, run_capstan, sh};

const DIR: &str = "/var/lib/capstan/etcd-snapshots";
const SERVICE: &str = "capstan-etcd-snapshot.service";
const TIMER: &str = "capstan-etcd-snapshot.timer";

/// Sets (or, with `None`, removes) `cluster.etcd.snapshots` in the lab's inventory.
fn set_snapshots(inv: &Path, value: Option<&str>) {
    let text = std::fs::read_to_string(inv).expect("inventory");
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with("    snapshots:") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if line.starts_with("    topology:")
            && let Some(v) = value
        {
            out.push_str(&format!("    snapshots: {v}\n"));
        }
    }
    std::fs::write(inv, out).expect("write inventory");
}

fn ok(run: &Run) {
    assert_eq!(run.code, 0, "{}", run.all());
}

/// The snapshots in the member's dir, oldest first.
fn snapshots_on(lab: &Lab) -> Vec<String> {
    let (_, out) = sh(lab, "cp1", &format!("cd {DIR} && ls -1 etcd-*.db"));
    out.lines().map(str::to_string).collect()
}

fn take(lab: &Lab) {
    let (code, out) = sh(lab, "cp1", &format!("systemctl start {SERVICE}"));
    assert_eq!(code, 0, "{out}");
}

fn listing(inv: &Path) -> serde_json::Value {
    let run = run_capstan(&["etcd", "snapshot", "--list", "--output", "json"], inv);
    ok(&run);
    serde_json::from_str(&run.stdout).expect("--list --output json is JSON")
}

#[test]
#[allow(clippy::too_many_lines)]
fn scheduled_snapshots_are_taken_listed_fetched_pruned_and_removed() {
    let lab = support::lab::bed_lab("snaps", &["--control-planes", "1"]);
    let inv = lab.inventory();
    set_snapshots(&inv, Some("{schedule: \"30 */6 * * *\", keep: 2}"));
    ok(&run_capstan(&["init"], &inv));
    let again = run_capstan(&["init"], &inv);
    ok(&again);
    assert!(again.stdout.contains(" 0 changes"), "{}", again.all());

    let (code, timers) = sh(&lab, "cp1", "systemctl list-timers --all --no-pager");
    assert_eq!(code, 0, "{timers}");
    assert!(timers.contains(TIMER), "{timers}");
    let (_, calendar) = sh(
        &lab,
        "cp1",
        &format!("systemctl show -p TimersCalendar {TIMER}"),
    );
    assert!(calendar.contains("00/6:30:00"), "{calendar}");
    let (_, enabled) = sh(&lab, "cp1", &format!("systemctl is-enabled {TIMER}"));
    assert_eq!(enabled.trim(), "enabled");

    // Nothing yet: no dir on the member, no .capstan/backups/: no snapshots, no error.
    let empty = run_capstan(&["etcd", "snapshot", "--list"], &inv);
    ok(&empty);
    assert_eq!(
        empty.stdout.matches("no snapshots").count(),
        2,
        "{}",
        empty.all()
    );

    // The timer's service, by hand: a snapshot etcd verified, its sha256 beside it.
    take(&lab);
    let first = snapshots_on(&lab);
    assert_eq!(first.len(), 1, "{first:?}");
    let (code, out) = sh(
        &lab,
        "cp1",
        &format!(
            "cd {DIR} && sha256sum -c {0}.sha256 && cat {0}.status && stat -c %a .",
            first[0]
        ),
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(": OK") && out.contains("\"revision\""),
        "{out}"
    );
    assert!(out.trim_end().ends_with("700"), "the dir is 0700: {out}");

    let text = run_capstan(&["etcd", "snapshot", "--list"], &inv);
    ok(&text);
    let line = text
        .stdout
        .lines()
        .find(|l| l.contains(&first[0]))
        .unwrap_or_else(|| panic!("{} not listed:\n{}", first[0], text.all()));
    assert!(line.contains("verified") && !line.contains("NOT"), "{line}");
    let json = listing(&inv);
    let on_cp1 = &json["hosts"][0];
    assert_eq!(on_cp1["host"], "cp1");
    assert_eq!(on_cp1["dir"], DIR);
    let snap = &on_cp1["snapshots"][0];
    assert_eq!(snap["name"], first[0].as_str());
    assert_eq!(snap["verified"], true, "{snap}");
    assert!(snap["revision"].as_i64().unwrap_or(0) > 0, "{snap}");
    assert!(snap["size"].as_u64().unwrap_or(0) > 0, "{snap}");
    assert_eq!(snap["sha256"].as_str().map(str::len), Some(64), "{snap}");

    // Pruning: keep + 1 more runs leave the 2 newest, with their files.
    for _ in 0..3 {
        take(&lab);
    }
    let kept = snapshots_on(&lab);
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(!kept.contains(&first[0]), "the oldest went: {kept:?}");
    let (_, files) = sh(&lab, "cp1", &format!("ls -1 {DIR}"));
    assert_eq!(
        files.lines().count(),
        6,
        "a .db, .sha256 and .status each:\n{files}"
    );

    // A damaged snapshot is listed as such, and --fetch takes the newest verified one.
    sh(&lab, "cp1", &format!("printf x >> {DIR}/{}", kept[1]));
    let json = listing(&inv);
    let snaps = json["hosts"][0]["snapshots"].as_array().expect("snapshots");
    assert_eq!(snaps.len(), 2);
    assert_eq!(snaps[1]["verified"], false, "{}", snaps[1]);
    assert!(
        snaps[1]["problem"]
            .as_str()
            .unwrap_or("")
            .contains("damaged"),
        "{}",
        snaps[1]
    );
    let fetch = run_capstan(&["etcd", "snapshot", "--fetch", "--output", "json"], &inv);
    ok(&fetch);
    let fetched: serde_json::Value = serde_json::from_str(&fetch.stdout).expect("JSON");
    assert_eq!(fetched["source"], format!("cp1:{DIR}/{}", kept[0]).as_str());
    assert_eq!(fetched["already_here"], false);
    let path = PathBuf::from(fetched["path"].as_str().expect("path"));
    assert!(
        path.starts_with(lab.dir.path().join(".capstan/backups")),
        "{path:?}"
    );
    support::lab::assert_snapshot_readable(&path);
    assert_eq!(fetched["sha256"], snaps[0]["sha256"]);
    let again = run_capstan(&["etcd", "snapshot", "--fetch"], &inv);
    ok(&again);
    assert!(again.stdout.contains("is here already"), "{}", again.all());
    // `etcd restore` takes it as a snapshot of this cluster (a dry run changes nothing).
    let restore = run_capstan(
        &[
            "etcd",
            "restore",
            "--dry-run",
            "--snapshot",
            path.to_str().expect("utf-8"),
        ],
        &inv,
    );
    ok(&restore);
    // The local copy is listed, verified.
    let json = listing(&inv);
    assert_eq!(json["local"][0]["verified"], true, "{json}");
    assert_eq!(json["local"][0]["sha256"], fetched["sha256"]);

    // Without the key: the timer and capstan's files go, the snapshots stay.
    set_snapshots(&inv, None);
    ok(&run_capstan(&["init"], &inv));
    let (_, timers) = sh(&lab, "cp1", "systemctl list-timers --all --no-pager");
    assert!(!timers.contains(TIMER), "{timers}");
    let (code, out) = sh(
        &lab,
        "cp1",
        "ls /etc/systemd/system/capstan-etcd-snapshot.timer /etc/systemd/system/capstan-etcd-snapshot.service /usr/local/sbin/capstan-etcd-snapshot",
    );
    assert_ne!(code, 0, "removed: {out}");
    assert_eq!(snapshots_on(&lab).len(), 2);
    let settled = run_capstan(&["init"], &inv);
    ok(&settled);
    assert!(settled.stdout.contains(" 0 changes"), "{}", settled.all());
}
