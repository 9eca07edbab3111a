//! `capstan etcd snapshot`: an etcd snapshot taken on a healthy member, verified there
//! (`etcdctl snapshot status`), copied to `.capstan/backups/` on the operator machine and
//! checked against the member's sha256. `upgrade apply` takes one before the first control
//! plane changes.
//!
//! Beside each snapshot, `NAME.db.json` ([`Meta`]) says where it came from: the cluster, its
//! etcd cluster ID and the sha256 of its etcd CA, so that `etcd restore` can refuse a
//! snapshot of another cluster before it stops anything.

use std::path::PathBuf;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::gates;
use crate::inventory::Inventory;
use crate::ssh::{self, Connection};

/// Where the member keeps a snapshot until it is copied (removed afterwards).
const REMOTE_DIR: &str = "/var/lib/capstan/snapshots";

#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// The copy on the operator machine.
    pub path: PathBuf,
    #[serde(flatten)]
    pub meta: Meta,
}

/// What is known of a snapshot: written beside it as `NAME.db.json` (its sidecar).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Meta {
    /// The inventory's cluster name.
    pub cluster: String,
    pub kubernetes_version: String,
    /// When it was taken (RFC 3339, UTC).
    pub taken_at: String,
    /// The member it was taken on.
    pub host: String,
    pub size: u64,
    pub sha256: String,
    /// etcd's view of the file (`snapshot status`).
    pub revision: i64,
    pub total_keys: i64,
    /// The etcd cluster ID (hex) when it was taken; a restore makes a new one.
    pub cluster_id: String,
    /// sha256 of the etcd CA certificate (`/etc/kubernetes/pki/etcd/ca.crt`): what a
    /// restore compares, as it survives restores.
    pub etcd_ca_sha256: String,
}

/// Where the sidecar of the snapshot at `path` is.
pub fn meta_path(path: &std::path::Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".json");
    PathBuf::from(name)
}

/// The sidecar of the snapshot at `path`: `Ok(None)` when there is none.
pub fn read_meta(path: &std::path::Path) -> Result<Option<Meta>, String> {
    let meta = meta_path(path);
    match std::fs::read(&meta) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{} is not a snapshot description: {e}", meta.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", meta.display())),
    }
}

/// `snapshot status -w json`.
#[derive(Debug, serde::Deserialize)]
pub struct Status {
    pub revision: i64,
    #[serde(rename = "totalKey")]
    pub total_key: i64,
}

/// The snapshot's status from the first line of `text` (`snapshot status -w json`).
pub fn parse_status(text: &str) -> Result<Status, String> {
    let line = gates::first_line(text);
    serde_json::from_str(line)
        .map_err(|e| format!("unexpected `snapshot status` output ({e}): {line}"))
}

/// sha256 of the etcd CA certificate on a member.
pub const ETCD_CA: &str = "/etc/kubernetes/pki/etcd/ca.crt";

#[derive(Debug, serde::Deserialize)]
struct EndpointStatus {
    #[serde(rename = "Status")]
    status: StatusHeader,
}

#[derive(Debug, serde::Deserialize)]
struct StatusHeader {
    header: Header,
}

#[derive(Debug, serde::Deserialize)]
struct Header {
    cluster_id: u64,
}

/// The cluster ID (hex, as etcdctl prints it in tables) from `endpoint status -w json`.
pub(crate) fn parse_cluster_id(line: &str) -> Option<String> {
    let list: Vec<EndpointStatus> = serde_json::from_str(line.trim()).ok()?;
    list.first()
        .map(|e| format!("{:x}", e.status.header.cluster_id))
}

/// The snapshot's file name: cluster, Kubernetes version and UTC time, sortable.
pub fn file_name(inv: &Inventory, now: time::OffsetDateTime) -> String {
    format!(
        "etcd-{}-{}-{:04}{:02}{:02}T{:02}{:02}{:02}Z.db",
        inv.cluster.name,
        inv.cluster.kubernetes_version,
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

/// Takes, verifies and copies a snapshot through `conn` (an etcd member).
pub async fn take(
    inv: &Inventory,
    conn: &Connection,
    host: &str,
    name: &str,
) -> Result<Snapshot, String> {
    let remote = format!("{REMOTE_DIR}/{name}");
    let q = ssh::quote(&remote);
    let script = format!(
        "set -eu\nmkdir -p -m 0700 {REMOTE_DIR}\n{save} >&2\n{status}\nsha256sum {q}\n{endpoint}\nsha256sum {ETCD_CA}\n",
        save = gates::etcdctl(&format!("snapshot save {q}")),
        status = gates::etcdctl(&format!("snapshot status {q} -w json")),
        endpoint = gates::etcd_status_script(),
    );
    let out = conn.exec(&script).await.map_err(|e| e.to_string())?;
    if !out.success() {
        return Err(format!(
            "etcdctl snapshot on {host} failed: {}",
            out.stderr_text().trim()
        ));
    }
    let text = out.stdout_text();
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let status = parse_status(lines.next().unwrap_or_default())
        .map_err(|e| format!("etcdctl snapshot status on {host}: {e}"))?;
    let remote_sha = lines
        .next()
        .and_then(|l| l.split_whitespace().next())
        .ok_or_else(|| format!("no sha256 of the snapshot on {host}"))?
        .to_string();
    let cluster_id = lines
        .next()
        .and_then(parse_cluster_id)
        .ok_or_else(|| format!("etcdctl endpoint status on {host} gave no cluster ID"))?;
    let etcd_ca_sha256 = lines
        .next()
        .and_then(|l| l.split_whitespace().next())
        .ok_or_else(|| format!("no sha256 of {ETCD_CA} on {host}"))?
        .to_string();

    let copy = conn
        .exec(&format!("cat {q}"))
        .await
        .map_err(|e| e.to_string())?;
    if !copy.success() {
        return Err(format!(
            "cannot read the snapshot on {host}: {}",
            copy.stderr_text().trim()
        ));
    }
    let sha256 = hex::encode(Sha256::digest(&copy.stdout));
    if sha256 != remote_sha {
        return Err(format!(
            "the copy of the snapshot differs from the one on {host} (sha256 {sha256} vs {remote_sha}); nothing was kept"
        ));
    }
    let path = inv.state_dir().join("backups").join(name);
    let meta = Meta {
        cluster: inv.cluster.name.clone(),
        kubernetes_version: inv.cluster.kubernetes_version.to_string(),
        taken_at: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        host: host.to_string(),
        size: copy.stdout.len() as u64,
        sha256,
        revision: status.revision,
        total_keys: status.total_key,
        cluster_id,
        etcd_ca_sha256,
    };
    let kept = keep_locally(inv, &path, &copy.stdout, &meta);
    // The member's copy has served its purpose; a full disk on a member hurts etcd.
    let _ = conn.exec(&format!("rm -f {q}")).await;
    kept?;
    Ok(Snapshot { path, meta })
}

/// Writes a snapshot's bytes to `path` in `.capstan/backups/` (0600, the dir 0700) and its
/// description beside it.
pub(crate) fn keep_locally(
    inv: &Inventory,
    path: &std::path::Path,
    bytes: &[u8],
    meta: &Meta,
) -> Result<(), String> {
    let dir = inv.state_dir().join("backups");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    set_private(&dir);
    crate::fsutil::write_atomic(path, bytes, 0o600)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let text = serde_json::to_vec_pretty(meta).map_err(|e| e.to_string())?;
    let sidecar = meta_path(path);
    crate::fsutil::write_atomic(&sidecar, &text, 0o600)
        .map_err(|e| format!("cannot write {}: {e}", sidecar.display()))
}

#[cfg(unix)]
fn set_private(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
}

#[cfg(not(unix))]
fn set_private(_dir: &std::path::Path) {}

/// `capstan etcd snapshot`: on the first member that answers healthy.
pub async fn run(inv: &Inventory, session: &super::SessionOptions) -> miette::Result<Snapshot> {
    let members: Vec<&crate::inventory::Host> = inv.etcd_members().collect();
    let targets: Vec<ssh::Target> = members.iter().map(|h| super::target(h)).collect();
    let conns = ssh::connect_all(&targets, &session.ssh, session.forks, |_, _| {}).await;
    let name = file_name(inv, time::OffsetDateTime::now_utc());
    let mut errors = Vec::new();
    let mut result = None;
    for (host, conn) in members.iter().zip(&conns) {
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                errors.push(format!("{}: {e}", host.name));
                continue;
            }
        };
        let health = conn
            .exec(&gates::etcdctl("endpoint health"))
            .await
            .is_ok_and(|o| o.success());
        if !health {
            errors.push(format!("{}: etcd is not healthy there", host.name));
            continue;
        }
        match take(inv, conn, &host.name, &name).await {
            Ok(s) => {
                result = Some(s);
                break;
            }
            Err(e) => errors.push(e),
        }
    }
    for c in conns.into_iter().flatten() {
        c.close().await;
    }
    result.ok_or_else(|| {
        miette::miette!(
            help = "bring a member back to health, then run again",
            "no snapshot could be taken: {}",
            errors.join("; ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_names_carry_cluster_version_and_time() {
        let inv = crate::inventory::load_str(
            "cluster: {name: prod, kubernetes_version: v1.32.4}\nhosts:\n- {name: cp1, address: 10.0.0.1, roles: [control-plane]}\n",
            std::path::Path::new("/tmp/x/cluster.yaml"),
            Some(std::path::Path::new("/root")),
        )
        .expect("valid inventory");
        let t = time::OffsetDateTime::from_unix_timestamp(1_795_388_709).expect("a time");
        assert_eq!(file_name(&inv, t), "etcd-prod-v1.32.4-20261122T230509Z.db");
    }
}
