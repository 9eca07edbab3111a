//! `capstan etcd snapshot --fetch`: the newest verified snapshot the members' timers took,
//! copied into `.capstan/backups/` with a description beside it (as `etcd snapshot` writes
//! one, so that `etcd restore` accepts it), and checked by sha256 after the copy.

use sha2::{Digest, Sha256};

use super::snapshot::{self, Meta, Snapshot};
use super::snapshot_list::{self, Entry};
use crate::inventory::Inventory;
use crate::ssh;

/// The newest verified snapshot of `listing` and the member it is on.
pub(crate) fn newest_verified(listing: &snapshot_list::Listing) -> Option<(&str, &Entry)> {
    listing
        .hosts
        .iter()
        .flat_map(|h| h.snapshots.iter().map(move |e| (h.host.as_str(), e)))
        .filter(|(_, e)| e.verified)
        .max_by(|(ha, a), (hb, b)| (&a.taken_at, *hb).cmp(&(&b.taken_at, *ha)))
}

/// Why nothing can be fetched, from what the listing found.
fn nothing_to_fetch(listing: &snapshot_list::Listing) -> String {
    let mut why: Vec<String> = Vec::new();
    for h in &listing.hosts {
        match &h.error {
            Some(e) => why.push(format!("{}: {e}", h.host)),
            None if h.snapshots.is_empty() => why.push(format!("{}: none in {}", h.host, h.dir)),
            None => why.push(format!(
                "{}: {} snapshot(s), none verified",
                h.host,
                h.snapshots.len()
            )),
        }
    }
    format!(
        "no verified snapshot on the etcd members ({})",
        why.join("; ")
    )
}

/// The local file name of a member's snapshot: as `etcd snapshot` names them, at the time
/// it was taken.
fn local_name(inv: &Inventory, e: &Entry) -> String {
    let taken =
        time::OffsetDateTime::parse(&e.taken_at, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    snapshot::file_name(inv, taken)
}

/// What `--fetch` did.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Fetched {
    #[serde(flatten)]
    pub snapshot: Snapshot,
    /// Where it was on the member.
    pub source: String,
    /// It was in .capstan/backups/ already (same sha256): nothing was written.
    pub already_here: bool,
}

/// `capstan etcd snapshot --fetch`.
pub(crate) async fn run(
    inv: &Inventory,
    session: &super::SessionOptions,
) -> miette::Result<Fetched> {
    let listing = snapshot_list::run(inv, session).await?;
    let Some((host_name, entry)) = newest_verified(&listing) else {
        return Err(miette::miette!(
            help = "set cluster.etcd.snapshots in the inventory and run `capstan init` (the timer takes them), or start capstan-etcd-snapshot.service on a member",
            "{}",
            nothing_to_fetch(&listing)
        ));
    };
    let host = inv
        .host(host_name)
        .ok_or_else(|| miette::miette!("{host_name} is not in the inventory"))?;
    let name = local_name(inv, entry);
    let dir = inv.state_dir().join("backups");
    let path = dir.join(&name);
    if let Ok(Some(m)) = snapshot::read_meta(&path)
        && m.sha256 == entry.sha256
        && std::fs::read(&path).is_ok_and(|b| hex::encode(Sha256::digest(&b)) == m.sha256)
    {
        return Ok(Fetched {
            snapshot: Snapshot { path, meta: m },
            source: format!("{host_name}:{}", entry.path),
            already_here: true,
        });
    }
    let target = super::target(host);
    let conns = ssh::connect_all(&[target], &session.ssh, 1, |_, _| {}).await;
    let conn = conns
        .into_iter()
        .next()
        .ok_or_else(|| miette::miette!("no connection to {host_name}"))?
        .map_err(|e| miette::miette!("{host_name}: {e}"))?;
    let result = copy(inv, &conn, host_name, entry, &path).await;
    conn.close().await;
    let meta = result.map_err(|e| {
        miette::miette!(
            help = "run again; `capstan etcd snapshot --list` shows what the members have",
            "{e}"
        )
    })?;
    Ok(Fetched {
        snapshot: Snapshot { path, meta },
        source: format!("{host_name}:{}", entry.path),
        already_here: false,
    })
}

/// Copies `entry` from the member into `path`, checked against the sha256 recorded there.
async fn copy(
    inv: &Inventory,
    conn: &ssh::Connection,
    host: &str,
    entry: &Entry,
    path: &std::path::Path,
) -> Result<Meta, String> {
    let ca = conn
        .exec(&format!("sha256sum {}", snapshot::ETCD_CA))
        .await
        .map_err(|e| e.to_string())?;
    let etcd_ca_sha256 = ca
        .stdout_text()
        .split_whitespace()
        .next()
        .filter(|s| ca.success() && s.len() == 64)
        .ok_or_else(|| format!("no sha256 of {} on {host}", snapshot::ETCD_CA))?
        .to_string();
    let cluster_id = entry
        .cluster_id
        .clone()
        .ok_or_else(|| format!("{host}:{} records no etcd cluster ID", entry.path))?;
    let copy = conn
        .exec(&format!("cat {}", ssh::quote(&entry.path)))
        .await
        .map_err(|e| e.to_string())?;
    if !copy.success() {
        return Err(format!(
            "cannot read {} on {host}: {}",
            entry.path,
            copy.stderr_text().trim()
        ));
    }
    let sha256 = hex::encode(Sha256::digest(&copy.stdout));
    if sha256 != entry.sha256 {
        return Err(format!(
            "the copy of {host}:{} has sha256 {sha256}, the member recorded {}: nothing was kept",
            entry.path, entry.sha256
        ));
    }
    let meta = Meta {
        cluster: inv.cluster.name.clone(),
        kubernetes_version: inv.cluster.kubernetes_version.to_string(),
        taken_at: entry.taken_at.clone(),
        host: host.to_string(),
        size: copy.stdout.len() as u64,
        sha256,
        revision: entry.revision.unwrap_or_default(),
        total_keys: entry.total_keys.unwrap_or_default(),
        cluster_id,
        etcd_ca_sha256,
    };
    snapshot::keep_locally(inv, path, &copy.stdout, &meta)?;
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use snapshot_list::{HostSnapshots, Listing};

    fn entry(name: &str, taken_at: &str, verified: bool) -> Entry {
        Entry {
            name: name.into(),
            path: format!("/d/{name}"),
            taken_at: taken_at.into(),
            revision: Some(1),
            total_keys: Some(1),
            size: 1,
            sha256: "a".repeat(64),
            verified,
            problem: (!verified).then(|| "damaged".into()),
            cluster_id: Some("abc".into()),
        }
    }

    fn listing(hosts: Vec<(&str, Vec<Entry>)>) -> Listing {
        Listing {
            local_dir: "/x/.capstan/backups".into(),
            local: Vec::new(),
            hosts: hosts
                .into_iter()
                .map(|(h, s)| HostSnapshots {
                    host: h.into(),
                    dir: "/d".into(),
                    snapshots: s,
                    error: None,
                })
                .collect(),
        }
    }

    #[test]
    fn the_newest_verified_snapshot_of_any_member_is_fetched() {
        let l = listing(vec![
            (
                "cp1",
                vec![
                    entry("a", "2026-12-08T01:00:00Z", true),
                    entry("b", "2026-12-08T03:00:00Z", false),
                ],
            ),
            ("cp2", vec![entry("c", "2026-12-08T02:00:00Z", true)]),
            ("cp3", vec![]),
        ]);
        let (host, e) = newest_verified(&l).unwrap();
        assert_eq!((host, e.name.as_str()), ("cp2", "c"));
        let none = listing(vec![
            ("cp1", vec![entry("b", "2026-12-08T03:00:00Z", false)]),
            ("cp2", vec![]),
        ]);
        assert!(newest_verified(&none).is_none());
        assert_eq!(
            nothing_to_fetch(&none),
            "no verified snapshot on the etcd members (cp1: 1 snapshot(s), none verified; cp2: none in /d)"
        );
    }

    #[test]
    fn fetched_snapshots_are_named_like_taken_ones_at_their_time() {
        let inv = crate::inventory::load_str(
            "cluster: {name: prod, kubernetes_version: v1.32.4}\nhosts:\n- {name: cp1, address: 10.0.0.1, roles: [control-plane]}\n",
            std::path::Path::new("/tmp/x/cluster.yaml"),
            None,
        )
        .unwrap();
        assert_eq!(
            local_name(
                &inv,
                &entry(
                    "etcd-prod-20261208T010000Z.db",
                    "2026-12-08T01:00:00Z",
                    true
                )
            ),
            "etcd-prod-v1.32.4-20261208T010000Z.db"
        );
    }
}
