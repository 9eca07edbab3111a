//! What each host gets, with kubeadm's paths, modes and owners:
//!
//! - every node (control plane or worker): `/etc/kubernetes/pki/ca.crt`,
//!   `/etc/kubernetes/kubelet.conf` (its own client cert, embedded) and its kubelet serving
//!   pair in `/var/lib/kubelet/pki/kubelet.{crt,key}`;
//! - control planes: the cluster and front-proxy CAs with their keys, `sa.{key,pub}`, the API
//!   server's certificates, `etcd/ca.crt`, and `admin.conf`, `controller-manager.conf`,
//!   `scheduler.conf` (the first control plane also `super-admin.conf`, as `kubeadm init`);
//! - etcd members (control planes when stacked, etcd hosts when external): the etcd CA with
//!   its key, their own server and peer pairs, the healthcheck client.
//!
//! Workers get no CA key. Certificates and public files are 0644 (sa.pub 0600, as kubeadm),
//! keys and kubeconfigs 0600, all root:root; keys and kubeconfigs are secret.
//!
//! [`host_files`] is pure; the engine turns each entry into `Desired::File` (see
//! [`HostFile::to_desired`]).

use std::collections::BTreeSet;

use serde::Serialize;

use super::spec::{self, CaKind};
use super::{PkiError, PkiState};
use crate::inventory::{Host, Inventory, Role};

pub const PKI_DIR: &str = "/etc/kubernetes/pki";
pub const KUBERNETES_DIR: &str = "/etc/kubernetes";
pub const KUBELET_PKI_DIR: &str = "/var/lib/kubelet/pki";

/// Where a host file's bytes come from in the local PKI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    CaCert(CaKind),
    CaKey(CaKind),
    LeafCert(String),
    LeafKey(String),
    SaKey,
    SaPub,
    Kubeconfig(String),
}

/// One file a host gets, before its bytes are known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub source: Source,
    pub mode: u32,
    pub secret: bool,
}

/// One file a host gets.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct HostFile {
    pub path: String,
    #[serde(skip)]
    pub bytes: Vec<u8>,
    pub mode: u32,
    pub owner: String,
    pub group: String,
    /// Keys and kubeconfigs: never shown in plans, diffs or logs.
    pub secret: bool,
}

impl std::fmt::Debug for HostFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostFile")
            .field("path", &self.path)
            .field("bytes", &format_args!("<{} bytes>", self.bytes.len()))
            .field("mode", &format_args!("{:o}", self.mode))
            .field("secret", &self.secret)
            .finish_non_exhaustive()
    }
}

impl HostFile {
    /// The engine's desired state for this file.
    pub fn to_desired(&self) -> crate::engine::desired::DesiredFile {
        crate::engine::desired::inline_file(
            self.path.clone(),
            self.bytes.clone(),
            self.owner.clone(),
            self.group.clone(),
            self.mode,
            self.secret,
        )
    }
}

fn cert(path: String, source: Source) -> Entry {
    Entry {
        path,
        source,
        mode: 0o644,
        secret: false,
    }
}

fn key(path: String, source: Source) -> Entry {
    Entry {
        path,
        source,
        mode: 0o600,
        secret: true,
    }
}

fn pair(out: &mut Vec<Entry>, path: &str, id: &str) {
    out.push(cert(
        format!("{path}.crt"),
        Source::LeafCert(id.to_string()),
    ));
    out.push(key(format!("{path}.key"), Source::LeafKey(id.to_string())));
}

/// The files `host` gets and where each comes from (no bytes: pure on the inventory).
pub fn layout(inv: &Inventory, host: &Host) -> Vec<Entry> {
    let mut out = Vec::new();
    let node = spec::node_dir(&host.name);
    let is_cp = host.has_role(Role::ControlPlane);
    let is_member = inv.etcd_members().any(|h| h.name == host.name);
    if spec::runs_kubelet(host) || is_cp {
        out.push(cert(
            format!("{PKI_DIR}/ca.crt"),
            Source::CaCert(CaKind::Ca),
        ));
    }
    if is_cp {
        out.push(key(format!("{PKI_DIR}/ca.key"), Source::CaKey(CaKind::Ca)));
        pair(&mut out, &format!("{PKI_DIR}/apiserver"), "apiserver");
        pair(
            &mut out,
            &format!("{PKI_DIR}/apiserver-kubelet-client"),
            "apiserver-kubelet-client",
        );
        out.push(cert(
            format!("{PKI_DIR}/front-proxy-ca.crt"),
            Source::CaCert(CaKind::FrontProxyCa),
        ));
        out.push(key(
            format!("{PKI_DIR}/front-proxy-ca.key"),
            Source::CaKey(CaKind::FrontProxyCa),
        ));
        pair(
            &mut out,
            &format!("{PKI_DIR}/front-proxy-client"),
            "front-proxy-client",
        );
        out.push(key(format!("{PKI_DIR}/sa.key"), Source::SaKey));
        out.push(Entry {
            path: format!("{PKI_DIR}/sa.pub"),
            source: Source::SaPub,
            mode: 0o600,
            secret: false,
        });
        pair(
            &mut out,
            &format!("{PKI_DIR}/apiserver-etcd-client"),
            "apiserver-etcd-client",
        );
    }
    if is_cp || is_member {
        out.push(cert(
            format!("{PKI_DIR}/etcd/ca.crt"),
            Source::CaCert(CaKind::EtcdCa),
        ));
    }
    if is_member {
        out.push(key(
            format!("{PKI_DIR}/etcd/ca.key"),
            Source::CaKey(CaKind::EtcdCa),
        ));
        pair(
            &mut out,
            &format!("{PKI_DIR}/etcd/server"),
            &format!("{node}/etcd/server"),
        );
        pair(
            &mut out,
            &format!("{PKI_DIR}/etcd/peer"),
            &format!("{node}/etcd/peer"),
        );
        pair(
            &mut out,
            &format!("{PKI_DIR}/etcd/healthcheck-client"),
            "etcd/healthcheck-client",
        );
    }
    for kc in spec::kubeconfigs(inv) {
        if let Some(rest) = kc.file.strip_prefix(&format!("{node}/")) {
            out.push(key(
                format!("{KUBERNETES_DIR}/{rest}"),
                Source::Kubeconfig(kc.file.clone()),
            ));
        }
    }
    if spec::runs_kubelet(host) {
        pair(
            &mut out,
            &format!("{KUBELET_PKI_DIR}/kubelet"),
            &format!("{node}/kubelet"),
        );
    }
    out
}

/// The paths capstan manages on `host` (what `check-expiration` calls not externally managed).
pub fn managed_paths(inv: &Inventory, host: &Host) -> BTreeSet<String> {
    layout(inv, host).into_iter().map(|e| e.path).collect()
}

/// The folders the files go into, with kubeadm's modes.
pub fn host_dirs(files: &[HostFile]) -> Vec<(String, u32)> {
    let mut dirs: BTreeSet<String> = BTreeSet::new();
    for f in files {
        if let Some((dir, _)) = f.path.rsplit_once('/') {
            dirs.insert(dir.to_string());
        }
    }
    dirs.into_iter().map(|d| (d, 0o755)).collect()
}

/// Every file `host` gets, with its bytes from `state`. Fails when the local PKI lacks
/// something the host needs (run `certs generate` first).
pub fn host_files(
    inv: &Inventory,
    host: &Host,
    state: &PkiState,
) -> Result<Vec<HostFile>, PkiError> {
    let missing = |what: &str| PkiError::Missing {
        what: what.to_string(),
    };
    layout(inv, host)
        .into_iter()
        .map(|e| {
            let bytes = match &e.source {
                Source::CaCert(k) => state
                    .cas
                    .get(k)
                    .ok_or_else(|| missing(k.label()))?
                    .cert_pem
                    .clone(),
                Source::CaKey(k) => state
                    .cas
                    .get(k)
                    .ok_or_else(|| missing(k.label()))?
                    .key_pem
                    .expose()
                    .as_bytes()
                    .to_vec(),
                Source::LeafCert(id) => state
                    .leaves
                    .get(id)
                    .ok_or_else(|| missing(id))?
                    .cert_pem
                    .clone(),
                Source::LeafKey(id) => {
                    let k = state
                        .leaves
                        .get(id)
                        .ok_or_else(|| missing(id))?
                        .key_pem
                        .expose();
                    if k.is_empty() {
                        return Err(missing(&format!("key of {id}")));
                    }
                    k.as_bytes().to_vec()
                }
                Source::SaKey => state
                    .sa
                    .as_ref()
                    .ok_or_else(|| missing("sa.key"))?
                    .key_pem
                    .expose()
                    .as_bytes()
                    .to_vec(),
                Source::SaPub => state
                    .sa
                    .as_ref()
                    .ok_or_else(|| missing("sa.pub"))?
                    .public_pem
                    .clone(),
                Source::Kubeconfig(file) => state
                    .kubeconfigs
                    .get(file)
                    .ok_or_else(|| missing(file))?
                    .clone(),
            };
            Ok(HostFile {
                path: e.path,
                bytes,
                mode: e.mode,
                owner: "root".into(),
                group: "root".into(),
                secret: e.secret,
            })
        })
        .collect()
}
