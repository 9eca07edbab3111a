//! `capstan etcd snapshot --list`: the snapshots in `.capstan/backups/` and those the
//! members' timers took (`cluster.etcd.snapshots.dir`), each with its time, revision, size
//! and sha256, and whether it is verified: its sha256 is the one recorded when it was taken
//! and etcd read it then (`snapshot status`).
//!
//! On the hosts: one command per member ([`host_script`]) and a pure parser of its output
//! ([`parse_host`]), tested with fixtures.

use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::snapshot;
use crate::inventory::Inventory;
use crate::ssh;

/// One snapshot, local or on a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Entry {
    pub name: String,
    /// Local: the file; on a member: its path there.
    pub path: String,
    /// When it was taken (RFC 3339, UTC).
    pub taken_at: String,
    /// The etcd revision it holds; `None` when unknown (never verified).
    pub revision: Option<i64>,
    pub total_keys: Option<i64>,
    pub size: u64,
    /// The sha256 of the file as it is now.
    pub sha256: String,
    /// Its sha256 is the one recorded when it was taken, and etcd read it then.
    pub verified: bool,
    /// Why it is not verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// The etcd cluster ID when it was taken (member snapshots; local ones: their description).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
}

impl Entry {
    /// A snapshot not verified (yet): what its file says.
    fn new(name: String, path: String, taken_at: String, size: u64, sha256: String) -> Entry {
        Entry {
            name,
            path,
            taken_at,
            revision: None,
            total_keys: None,
            size,
            sha256,
            verified: false,
            problem: None,
            cluster_id: None,
        }
    }
}

/// The snapshots on one member.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct HostSnapshots {
    pub host: String,
    pub dir: String,
    pub snapshots: Vec<Entry>,
    /// The member could not be read (unreachable, the command failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Listing {
    pub local_dir: PathBuf,
    /// Oldest first.
    pub local: Vec<Entry>,
    pub hosts: Vec<HostSnapshots>,
}

/// Where scheduled snapshots are on the members: the inventory's dir, else the default (a
/// timer removed from the inventory leaves its snapshots there).
pub(crate) fn host_dir(inv: &Inventory) -> String {
    inv.cluster.etcd_snapshots.as_ref().map_or_else(
        || crate::inventory::DEFAULT_SNAPSHOT_DIR.to_string(),
        |s| s.dir.clone(),
    )
}

/// The command that describes every snapshot in `dir` on a member: per `etcd-*.db`, its
/// size and mtime, its sha256 now, the one recorded beside it and its recorded status.
pub(crate) fn host_script(dir: &str) -> String {
    let d = ssh::quote(dir);
    format!(
        "d={d}\n\
         if [ ! -d \"$d\" ]; then echo 'no-dir'; exit 0; fi\n\
         cd \"$d\" || exit 1\n\
         for f in etcd-*.db; do\n\
         [ -f \"$f\" ] || continue\n\
         echo \"snapshot $(stat -c '%s %Y' \"$f\") $f\"\n\
         echo \"sha256 $(sha256sum \"$f\" | cut -d' ' -f1)\"\n\
         [ -f \"$f.sha256\" ] && echo \"recorded $(cut -d' ' -f1 \"$f.sha256\")\"\n\
         [ -f \"$f.status\" ] && sed 's/^/status /' \"$f.status\"\n\
         done\n\
         echo end\n"
    )
}

/// The snapshots in `dir` from [`host_script`]'s output, oldest first.
pub(crate) fn parse_host(dir: &str, text: &str) -> Result<Vec<Entry>, String> {
    let mut out: Vec<Entry> = Vec::new();
    let mut ended = false;
    // Per snapshot: the recorded sha256 and status lines, checked when the next one starts.
    let mut recorded: Option<String> = None;
    let mut status: Vec<String> = Vec::new();
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        let (tag, rest) = line.split_once(' ').unwrap_or((line, ""));
        match tag {
            "no-dir" => return Ok(Vec::new()),
            "end" => {
                ended = true;
                break;
            }
            "snapshot" => {
                if let Some(last) = out.last_mut() {
                    finish_entry(last, recorded.take().as_deref(), &status);
                }
                status.clear();
                let mut parts = rest.splitn(3, ' ');
                let (Some(size), Some(mtime), Some(name)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return Err(format!("unexpected line in the snapshot listing: {line}"));
                };
                let size = size
                    .parse()
                    .map_err(|_| format!("unexpected size in the snapshot listing: {line}"))?;
                let mtime: i64 = mtime
                    .parse()
                    .map_err(|_| format!("unexpected time in the snapshot listing: {line}"))?;
                out.push(Entry::new(
                    name.to_string(),
                    format!("{dir}/{name}"),
                    crate::lock::rfc3339(mtime),
                    size,
                    String::new(),
                ));
            }
            "sha256" if !out.is_empty() => {
                if let Some(last) = out.last_mut() {
                    last.sha256 = rest.to_string();
                }
            }
            "recorded" if !out.is_empty() => recorded = Some(rest.to_string()),
            "status" if !out.is_empty() => status.push(rest.to_string()),
            _ => return Err(format!("unexpected line in the snapshot listing: {line}")),
        }
    }
    if !ended {
        return Err("the snapshot listing ended early (no `end` line)".into());
    }
    if let Some(last) = out.last_mut() {
        finish_entry(last, recorded.take().as_deref(), &status);
    }
    out.sort_by(|a, b| (&a.taken_at, &a.name).cmp(&(&b.taken_at, &b.name)));
    Ok(out)
}

/// Fills what the recorded sha256 and status say, and whether the snapshot is verified.
fn finish_entry(e: &mut Entry, recorded: Option<&str>, status: &[String]) {
    let snap = status.first().map(|l| snapshot::parse_status(l));
    if let Some(Ok(s)) = &snap {
        e.revision = Some(s.revision);
        e.total_keys = Some(s.total_key);
    }
    e.cluster_id = status.get(1).and_then(|l| snapshot::parse_cluster_id(l));
    e.problem = match (recorded, &snap) {
        _ if e.sha256.len() != 64 => Some("unreadable: no sha256 could be computed".into()),
        (None, _) => {
            Some("no sha256 recorded beside it: unfinished, or not taken by capstan".into())
        }
        (Some(r), _) if r != e.sha256 => Some(format!(
            "its sha256 is not the one recorded when it was taken ({r}): damaged or changed"
        )),
        (_, None) => Some("no status recorded: etcd never read it".into()),
        (_, Some(Err(why))) => Some(format!("its recorded status does not parse: {why}")),
        (Some(_), Some(Ok(_))) => None,
    };
    e.verified = e.problem.is_none();
}

/// The snapshots in `dir` on this machine (`.capstan/backups/`), oldest first; a missing
/// dir has none.
pub(crate) fn local(dir: &Path) -> Result<Vec<Entry>, String> {
    let read = match std::fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", dir.display())),
    };
    let mut out = Vec::new();
    for item in read {
        let item = item.map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        let path = item.path();
        let name = item.file_name().to_string_lossy().into_owned();
        if path.extension().and_then(|e| e.to_str()) != Some("db") || !path.is_file() {
            continue;
        }
        out.push(local_entry(&path, name));
    }
    out.sort_by(|a, b| (&a.taken_at, &a.name).cmp(&(&b.taken_at, &b.name)));
    Ok(out)
}

fn local_entry(path: &Path, name: String) -> Entry {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path);
    let (size, sha256) = match &bytes {
        Ok(b) => (b.len() as u64, hex::encode(Sha256::digest(b))),
        Err(_) => (0, String::new()),
    };
    let meta = snapshot::read_meta(path);
    let mtime = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let mut e = Entry::new(name, shown, crate::lock::rfc3339(mtime), size, sha256);
    e.problem = match (&bytes, meta) {
        (Err(err), _) => Some(format!("unreadable: {err}")),
        (_, Err(why)) => Some(why),
        (_, Ok(None)) => Some(format!(
            "no description beside it ({})",
            snapshot::meta_path(path).display()
        )),
        (_, Ok(Some(m))) => {
            e.taken_at.clone_from(&m.taken_at);
            e.revision = Some(m.revision);
            e.total_keys = Some(m.total_keys);
            e.cluster_id = Some(m.cluster_id.clone());
            (m.sha256 != e.sha256 || m.size != e.size).then(|| {
                format!(
                    "its sha256 is not the one its description records ({}): damaged or changed",
                    m.sha256
                )
            })
        }
    };
    e.verified = e.problem.is_none();
    e
}

/// `capstan etcd snapshot --list`.
pub(crate) async fn run(
    inv: &Inventory,
    session: &super::SessionOptions,
) -> miette::Result<Listing> {
    let local_dir = inv.state_dir().join("backups");
    let local =
        local(&local_dir).map_err(|e| miette::miette!(help = "check its permissions", "{e}"))?;
    let dir = host_dir(inv);
    let members: Vec<&crate::inventory::Host> = inv.etcd_members().collect();
    let targets: Vec<ssh::Target> = members.iter().map(|h| super::target(h)).collect();
    let conns = ssh::connect_all(&targets, &session.ssh, session.forks, |_, _| {}).await;
    let script = host_script(&dir);
    let reads = members.iter().zip(&conns).map(|(host, conn)| {
        let (script, dir) = (&script, &dir);
        async move {
            let result = match conn {
                Err(e) => Err(e.to_string()),
                Ok(c) => match c.exec(script).await {
                    Err(e) => Err(e.to_string()),
                    Ok(out) if !out.success() => Err(format!(
                        "listing {dir} failed: {}",
                        out.stderr_text().trim()
                    )),
                    Ok(out) => parse_host(dir, &out.stdout_text()),
                },
            };
            let (snapshots, error) = match result {
                Ok(s) => (s, None),
                Err(e) => (Vec::new(), Some(e)),
            };
            HostSnapshots {
                host: host.name.clone(),
                dir: dir.clone(),
                snapshots,
                error,
            }
        }
    });
    let hosts = futures::future::join_all(reads).await;
    for c in conns.into_iter().flatten() {
        c.close().await;
    }
    Ok(Listing {
        local_dir,
        local,
        hosts,
    })
}

/// The listing as text: one line per snapshot.
pub(crate) fn render(l: &Listing) -> String {
    let line = |e: &Entry| {
        let state = match &e.problem {
            None => "verified".to_string(),
            Some(p) => format!("NOT verified: {p}"),
        };
        let revision = e
            .revision
            .map_or_else(|| "?".to_string(), |r| r.to_string());
        format!(
            "  {}  {}  revision {revision}  {} bytes  sha256 {}  {state}\n",
            e.taken_at, e.path, e.size, e.sha256
        )
    };
    let mut out = format!("{} (this machine):\n", l.local_dir.display());
    if l.local.is_empty() {
        out.push_str("  no snapshots\n");
    }
    out.extend(l.local.iter().map(line));
    for h in &l.hosts {
        out.push_str(&format!("{}:{}:\n", h.host, h.dir));
        match &h.error {
            Some(e) => out.push_str(&format!("  cannot list: {e}\n")),
            None if h.snapshots.is_empty() => out.push_str("  no snapshots\n"),
            None => out.extend(h.snapshots.iter().map(line)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIR: &str = "/var/lib/capstan/etcd-snapshots";

    fn fixture(name: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/etcd-snapshots")
            .join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn a_member_with_verified_damaged_and_unfinished_snapshots() {
        let list = parse_host(DIR, &fixture("member.txt")).unwrap();
        assert_eq!(list.len(), 3, "{list:#?}");
        let good = &list[0];
        assert_eq!(good.name, "etcd-lab-20261208T010000Z.db");
        assert_eq!(good.path, format!("{DIR}/etcd-lab-20261208T010000Z.db"));
        assert_eq!(good.taken_at, "2026-12-08T01:00:00Z");
        assert_eq!(
            (good.revision, good.total_keys, good.size),
            (Some(1234), Some(321), 2_125_856)
        );
        assert_eq!(good.cluster_id.as_deref(), Some("c9be114fc2da2776"));
        assert!(good.verified, "{good:?}");
        let damaged = &list[1];
        assert!(!damaged.verified);
        assert!(
            damaged
                .problem
                .as_deref()
                .unwrap()
                .contains("not the one recorded"),
            "{damaged:?}"
        );
        let unfinished = &list[2];
        assert!(!unfinished.verified);
        assert_eq!(unfinished.revision, None);
        assert!(
            unfinished
                .problem
                .as_deref()
                .unwrap()
                .contains("no sha256 recorded"),
            "{unfinished:?}"
        );
    }

    #[test]
    fn no_dir_is_no_snapshots_and_bad_output_is_an_error() {
        assert_eq!(parse_host(DIR, "no-dir\n"), Ok(Vec::new()));
        assert_eq!(parse_host(DIR, "end\n"), Ok(Vec::new()));
        let err = parse_host(DIR, &fixture("truncated.txt")).unwrap_err();
        assert!(err.contains("ended early"), "{err}");
        let err = parse_host(DIR, "snapshot x y etcd-a.db\nend\n").unwrap_err();
        assert!(err.contains("unexpected size"), "{err}");
        let err = parse_host(DIR, "bash: sha256sum: not found\n").unwrap_err();
        assert!(err.contains("unexpected line"), "{err}");
    }

    #[test]
    fn the_script_quotes_the_dir() {
        let s = host_script("/srv/my snaps");
        assert!(s.starts_with("d='/srv/my snaps'\n"), "{s}");
    }

    #[test]
    fn local_snapshots_are_checked_against_their_descriptions() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(local(&dir.path().join("missing")), Ok(Vec::new()));
        let bytes = b"not really etcd, but bytes";
        let sha = hex::encode(Sha256::digest(bytes));
        let meta = snapshot::Meta {
            cluster: "lab".into(),
            kubernetes_version: "v1.32.4".into(),
            taken_at: "2026-12-08T01:00:00Z".into(),
            host: "cp1".into(),
            size: bytes.len() as u64,
            sha256: sha.clone(),
            revision: 7,
            total_keys: 3,
            cluster_id: "abc".into(),
            etcd_ca_sha256: "def".into(),
        };
        let good = dir.path().join("etcd-lab-v1.32.4-20261208T010000Z.db");
        std::fs::write(&good, bytes).unwrap();
        std::fs::write(
            snapshot::meta_path(&good),
            serde_json::to_vec(&meta).unwrap(),
        )
        .unwrap();
        let changed = dir.path().join("etcd-lab-v1.32.4-20261208T020000Z.db");
        std::fs::write(&changed, b"other bytes").unwrap();
        let mut m2 = meta.clone();
        m2.taken_at = "2026-12-08T02:00:00Z".into();
        std::fs::write(
            snapshot::meta_path(&changed),
            serde_json::to_vec(&m2).unwrap(),
        )
        .unwrap();
        std::fs::write(dir.path().join("zz-foreign.db"), bytes).unwrap();
        let list = local(dir.path()).unwrap();
        assert_eq!(list.len(), 3, "{list:#?}");
        let by = |n: &str| list.iter().find(|e| e.name.starts_with(n)).unwrap();
        let g = by("etcd-lab-v1.32.4-20261208T01");
        assert!(g.verified, "{g:?}");
        assert_eq!((g.revision, g.sha256.as_str()), (Some(7), sha.as_str()));
        assert!(
            by("etcd-lab-v1.32.4-20261208T02")
                .problem
                .as_deref()
                .unwrap()
                .contains("damaged")
        );
        assert!(
            by("zz-foreign")
                .problem
                .as_deref()
                .unwrap()
                .contains("no description")
        );
    }
}
