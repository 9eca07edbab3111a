//! The inventory: loading, defaults, validation.
//!
//! [`load`] reads the YAML file, reports every problem at once with file:line:col, and
//! returns a validated [`Inventory`] whose values are all filled in. Nothing connects to a
//! host before this succeeds.

mod cron;
pub mod fuzz;
mod model;
mod preload;
mod registries;
mod snapshots;
mod validate;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;

use crate::yaml;
use serde::Serialize;

pub use model::{
    ApiEndpointMode, Become, ChecksumSource, EtcdTopology, InventoryFile, KeyAlgorithm, LbSoftware,
    Role, TaintEffect,
};
pub use preload::PreloadArchive;
pub use registries::{Endpoint, Registry};
pub use snapshots::{DEFAULT_DIR as DEFAULT_SNAPSHOT_DIR, EtcdSnapshots};
pub use validate::{DEFAULT_SERVICE_SUBNET, resolve};

/// The file name looked up when `-i` names a folder.
pub const DEFAULT_FILE_NAME: &str = "cluster.yaml";
/// capstan's state folder beside the inventory.
pub const STATE_DIR: &str = ".capstan";

/// A validated inventory with every default filled in.
#[derive(Debug, Clone, Serialize)]
pub struct Inventory {
    /// The inventory file.
    pub path: PathBuf,
    pub cluster: Cluster,
    pub hosts: Vec<Host>,
}

impl Inventory {
    /// The folder that holds the inventory file.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or_else(|| Path::new("."))
    }

    /// This inventory at another Kubernetes version (the kubelet and kubectl follow it):
    /// what `upgrade apply` converges to.
    #[must_use]
    pub fn at_version(&self, version: Version) -> Inventory {
        let mut out = self.clone();
        out.cluster.kubernetes_version = version;
        // The node software the inventory does not name follows the catalog to the target.
        out.cluster.versions = self.cluster.versions_at(&version);
        out
    }

    /// capstan's state folder (`.capstan/` beside the inventory).
    pub fn state_dir(&self) -> PathBuf {
        self.dir().join(STATE_DIR)
    }

    /// capstan's own known_hosts, where `--accept-new-host-keys` records keys.
    pub fn known_hosts_path(&self) -> PathBuf {
        self.state_dir().join("known_hosts")
    }

    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    pub fn hosts_with(&self, role: Role) -> impl Iterator<Item = &Host> {
        self.hosts.iter().filter(move |h| h.has_role(role))
    }

    /// The hosts that run an etcd member under the inventory's topology.
    pub fn etcd_members(&self) -> impl Iterator<Item = &Host> {
        let role = match self.cluster.etcd_topology {
            EtcdTopology::Stacked => Role::ControlPlane,
            EtcdTopology::External => Role::Etcd,
        };
        self.hosts_with(role)
    }
}

impl Cluster {
    /// The node software at Kubernetes `target`: what the inventory names, else the
    /// catalog's default for the target's minor (an upgrade moves the defaults with it).
    pub fn versions_at(&self, target: &Version) -> std::collections::BTreeMap<String, String> {
        use crate::artifacts::catalog::Component;
        let mut out = self.versions.clone();
        for c in [
            Component::Containerd,
            Component::Runc,
            Component::Etcd,
            Component::Crictl,
            Component::CniPlugins,
        ] {
            if self.versions_given.contains_key(c.name()) {
                continue;
            }
            if let Some(v) = self.artifacts.catalog.node_default(target, c) {
                out.insert(c.name().to_string(), v.to_string());
            }
        }
        out.insert("kubelet".into(), target.to_string());
        out.insert("kubectl".into(), target.to_string());
        out
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Cluster {
    pub name: String,
    pub kubernetes_version: Version,
    pub pod_subnet: IpNet,
    pub service_subnet: IpNet,
    pub dns_domain: String,
    pub etcd_topology: EtcdTopology,
    /// Scheduled snapshots on every etcd member (`cluster.etcd.snapshots`); `None`: no timer.
    pub etcd_snapshots: Option<EtcdSnapshots>,
    pub api_endpoint: ApiEndpoint,
    pub artifacts: Artifacts,
    pub image_repository: String,
    /// Node software versions by catalog component name (`containerd`, `runc`, `etcd`,
    /// `crictl`, `cni-plugins`; `kubelet` and `kubectl` follow `kubernetes_version`).
    pub versions: std::collections::BTreeMap<String, String>,
    /// Those of `versions` the inventory itself names (the rest are the catalog's defaults
    /// for the minor, and move with it on an upgrade: [`Cluster::versions_at`]).
    pub versions_given: std::collections::BTreeMap<String, String>,
    pub pki: Pki,
    pub leader_election: LeaderElection,
    pub dns: Dns,
    pub kube_proxy: KubeProxy,
    /// containerd's registry hosts, by host (sorted).
    pub registries: Vec<registries::Registry>,
    /// `cluster.images.preload`: the archives, each with the images it holds.
    pub preload: Vec<preload::PreloadArchive>,
}

/// `cluster.dns`: nameservers for nodes that have no usable one of their own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Dns {
    /// Empty when not given.
    pub upstream: Vec<String>,
}

/// `cluster.kube_proxy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KubeProxy {
    /// `None`: decided from the facts (0 on container hosts, else upstream's default).
    pub conntrack_max_per_core: Option<u32>,
}

/// Leader election of kube-controller-manager and kube-scheduler (`cluster.leader_election`),
/// as the Go durations the components take (`15s`, `1m30s`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaderElection {
    /// How long a non-leader waits after the last renewal before it takes the lease
    /// (default 15s).
    pub lease_duration: String,
    /// How long the leader keeps retrying to renew before it gives up leading (default 10s).
    pub renew_deadline: String,
    /// How often candidates try to acquire or renew (default 2s).
    pub retry_period: String,
}

/// Certificate settings (`cluster.pki`).
#[derive(Debug, Clone, Serialize)]
pub struct Pki {
    /// Key type of every generated key (default ecdsa-p256).
    pub key_algorithm: KeyAlgorithm,
    /// Leaf certificates expiring within this many days are re-issued (default 30).
    pub renew_before_days: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct ApiEndpoint {
    pub mode: ApiEndpointMode,
    /// The address clients use: the LB/VIP, the single control plane, or 127.0.0.1 for
    /// local proxies.
    pub address: String,
    pub port: u16,
    pub software: LbSoftware,
    /// More names and addresses for the API server's certificate.
    pub extra_sans: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Artifacts {
    pub mirror: String,
    pub checksums: ChecksumSource,
    /// The version catalog: built in, with `catalog.yaml` beside the inventory over it.
    #[serde(skip)]
    pub catalog: std::sync::Arc<crate::artifacts::Catalog>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Host {
    /// The Kubernetes node name.
    pub name: String,
    /// Where SSH reaches it.
    pub address: String,
    /// Cluster traffic (defaults to `address`).
    pub internal_address: String,
    pub roles: BTreeSet<Role>,
    pub ssh: SshSettings,
    /// Node labels (validated against Kubernetes' rules for label keys and values).
    pub labels: std::collections::BTreeMap<String, String>,
    /// Node taints.
    pub taints: Vec<Taint>,
}

/// A validated node taint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Taint {
    pub key: String,
    pub value: Option<String>,
    pub effect: TaintEffect,
}

impl fmt::Display for Taint {
    /// The kubelet's `--register-with-taints` form: `key[=value]:Effect`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)?;
        if let Some(v) = &self.value {
            write!(f, "={v}")?;
        }
        write!(f, ":{}", self.effect.as_str())
    }
}

/// The label a control plane's Node carries, as kubeadm sets it.
pub const CONTROL_PLANE_LABEL: &str = "node-role.kubernetes.io/control-plane";

impl Host {
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// The labels the kubelet registers the Node with (`--node-labels`): those a kubelet
    /// may set on itself. A real kubelet refuses to start with any other label in the
    /// `kubernetes.io` or `k8s.io` namespaces.
    pub fn kubelet_labels(&self) -> impl Iterator<Item = (&String, &String)> {
        self.labels.iter().filter(|(k, _)| kubelet_may_set(k))
    }

    /// The labels capstan sets through the API once the Node exists: the inventory's
    /// labels a kubelet may not set on itself (`node-role.kubernetes.io/…`, …), and the
    /// control-plane role label on control planes.
    pub fn api_labels(&self) -> BTreeMap<String, String> {
        let mut labels: BTreeMap<String, String> = self
            .labels
            .iter()
            .filter(|(k, _)| !kubelet_may_set(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if self.has_role(Role::ControlPlane) {
            labels.entry(CONTROL_PLANE_LABEL.to_string()).or_default();
        }
        labels
    }
}

/// Whether a kubelet may register its Node with label `key` (the kubelet's own rule:
/// keys outside the `kubernetes.io` and `k8s.io` namespaces, the `kubelet.kubernetes.io`
/// and `node.kubernetes.io` namespaces, and a fixed set of well-known keys).
pub fn kubelet_may_set(key: &str) -> bool {
    const WELL_KNOWN: [&str; 11] = [
        "kubernetes.io/hostname",
        "kubernetes.io/os",
        "kubernetes.io/arch",
        "beta.kubernetes.io/os",
        "beta.kubernetes.io/arch",
        "beta.kubernetes.io/instance-type",
        "node.kubernetes.io/instance-type",
        "topology.kubernetes.io/region",
        "topology.kubernetes.io/zone",
        "failure-domain.beta.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/zone",
    ];
    let Some((namespace, _)) = key.split_once('/') else {
        return true;
    };
    let within = |ns: &str| namespace == ns || namespace.ends_with(&format!(".{ns}"));
    if !within("kubernetes.io") && !within("k8s.io") {
        return true;
    }
    WELL_KNOWN.contains(&key) || within("kubelet.kubernetes.io") || within("node.kubernetes.io")
}

/// SSH settings of one host: the global `ssh` block with the host's overrides applied.
///
/// `user`, `port` and `identity_file` stay unset when the inventory does not give them, so
/// that `~/.ssh/config` can supply them; the SSH layer falls back to root, 22 and the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SshSettings {
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity_file: Option<PathBuf>,
    pub become_method: Become,
    pub bastion: Option<Bastion>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bastion {
    pub address: String,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub identity_file: Option<PathBuf>,
}

/// A Kubernetes version, `vMAJOR.MINOR.PATCH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    /// Parses `vX.Y.Z` (the leading `v` is required, as in Kubernetes release names).
    pub fn parse(text: &str) -> Option<Version> {
        let rest = text.strip_prefix('v')?;
        let mut parts = rest.split('.');
        let mut next = || -> Option<u32> {
            let p = parts.next()?;
            if p.is_empty()
                || !p.bytes().all(|b| b.is_ascii_digit())
                || (p.len() > 1 && p.starts_with('0'))
            {
                return None;
            }
            p.parse().ok()
        };
        let v = Version {
            major: next()?,
            minor: next()?,
            patch: next()?,
        };
        parts.next().is_none().then_some(v)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One problem found in an inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub line: usize,
    pub col: usize,
    pub message: String,
    pub help: Option<String>,
}

impl Problem {
    /// What serde found wrong with a node of a YAML file, at its place.
    pub fn from_de(e: &yaml::DeError) -> Problem {
        let (message, help) = e.message();
        let loc = e.loc.unwrap_or_default();
        Problem {
            line: loc.line,
            col: loc.col,
            message,
            help,
        }
    }
}

/// Every problem found in an inventory file; nothing was contacted.
#[derive(Debug, Clone, thiserror::Error, miette::Diagnostic)]
#[diagnostic(
    code(capstan::inventory),
    help("fix the inventory and run again; nothing was contacted")
)]
pub struct InventoryErrors {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for InventoryErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "{} has {n} problem{}:",
            self.file.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(
                f,
                "\n  {}:{}:{}: {}",
                self.file.display(),
                p.line,
                p.col,
                p.message
            )?;
            if let Some(help) = &p.help {
                write!(f, "\n      help: {help}")?;
            }
        }
        Ok(())
    }
}

impl InventoryErrors {
    fn single(file: &Path, message: String, help: Option<String>) -> Self {
        InventoryErrors {
            file: file.to_path_buf(),
            problems: vec![Problem {
                line: 1,
                col: 1,
                message,
                help,
            }],
        }
    }
}

/// Where the inventory is: `-i`, else `$CAPSTAN_INVENTORY` (clap fills both into one flag).
pub fn locate(given: Option<&Path>) -> Result<PathBuf, crate::error::BadInput> {
    let Some(path) = given else {
        return Err(crate::error::BadInput::new(
            "no inventory given",
            "pass -i PATH (a cluster.yaml, or a folder holding one) or set CAPSTAN_INVENTORY",
        ));
    };
    if path.is_dir() {
        let file = path.join(DEFAULT_FILE_NAME);
        if !file.is_file() {
            return Err(crate::error::BadInput::new(
                format!("{} has no {DEFAULT_FILE_NAME}", path.display()),
                "pass the inventory file itself with -i, or create cluster.yaml in that folder \
                 (see inventory/sample/cluster.yaml)",
            ));
        }
        return Ok(file);
    }
    Ok(path.to_path_buf())
}

/// Reads and validates an inventory file.
pub fn load(path: &Path) -> Result<Inventory, InventoryErrors> {
    load_with_home(path, dirs::home_dir().as_deref())
}

/// Inventories larger than this are refused unread (a 1000-host inventory is ~150 KB).
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// [`load`], with `~/` in paths expanded against `home`.
pub fn load_with_home(path: &Path, home: Option<&Path>) -> Result<Inventory, InventoryErrors> {
    let unreadable = |e: std::io::Error| {
        InventoryErrors::single(
            path,
            format!("cannot read the inventory: {e}"),
            Some("check the path given with -i or CAPSTAN_INVENTORY".to_string()),
        )
    };
    let meta = std::fs::metadata(path).map_err(unreadable)?;
    if !meta.is_file() {
        return Err(InventoryErrors::single(
            path,
            "the inventory is not a regular file".to_string(),
            Some("pass a cluster.yaml (or a folder holding one) with -i".to_string()),
        ));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(InventoryErrors::single(
            path,
            format!(
                "the inventory is {} bytes, more than the {MAX_FILE_BYTES} capstan reads",
                meta.len()
            ),
            Some("check that -i names the inventory and not another file".to_string()),
        ));
    }
    let bytes = std::fs::read(path).map_err(unreadable)?;
    load_bytes(&bytes, path, home)
}

/// Validates inventory bytes: UTF-8 text, see [`load_str`].
pub fn load_bytes(
    bytes: &[u8],
    path: &Path,
    home: Option<&Path>,
) -> Result<Inventory, InventoryErrors> {
    match std::str::from_utf8(bytes) {
        Ok(text) => load_str(text, path, home),
        Err(e) => {
            let good = &bytes[..e.valid_up_to()];
            let line = good.split(|b| *b == b'\n').count();
            let line_start = good.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            let col = String::from_utf8_lossy(&good[line_start..]).chars().count() + 1;
            let byte = bytes.get(e.valid_up_to()).copied().unwrap_or_default();
            Err(InventoryErrors {
                file: path.to_path_buf(),
                problems: vec![Problem {
                    line,
                    col,
                    message: format!("not UTF-8 text: byte 0x{byte:02x} is not valid here"),
                    help: Some(
                        "save the inventory as UTF-8 (e.g. `iconv -f LATIN1 -t UTF-8`)".into(),
                    ),
                }],
            })
        }
    }
}

/// A carriage return not followed by a line feed, with its position. YAML counts a lone CR
/// as a line break, editors and `grep -n` do not: every later position would name a line
/// the operator cannot find (the fuzzer found `cluster.yaml:69:1` in a 13-line file). LF and
/// CRLF line ends are read as they are.
fn lone_carriage_return(text: &str) -> Option<Problem> {
    let at = text
        .match_indices('\r')
        .map(|(i, _)| i)
        .find(|&i| text.as_bytes().get(i + 1) != Some(&b'\n'))?;
    let before = &text[..at];
    let line = before.split('\n').count();
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Some(Problem {
        line,
        col: before[line_start..].chars().count() + 1,
        message: "a carriage return (\\r) without a line feed: capstan reads LF or CRLF line ends"
            .to_string(),
        help: Some(
            "convert the line ends to LF (e.g. `sed -i 's/\\r$//; s/\\r/\\n/g' cluster.yaml`) or remove the stray \\r"
                .into(),
        ),
    })
}

/// Validates inventory text; `path` names it in messages and anchors relative paths.
pub fn load_str(
    text: &str,
    path: &Path,
    home: Option<&Path>,
) -> Result<Inventory, InventoryErrors> {
    if let Some(problem) = lone_carriage_return(text) {
        return Err(InventoryErrors {
            file: path.to_path_buf(),
            problems: vec![problem],
        });
    }
    let root = yaml::parse(text).map_err(|e| InventoryErrors {
        file: path.to_path_buf(),
        problems: vec![Problem {
            line: e.loc.line,
            col: e.loc.col,
            message: format!("not valid YAML: {}", e.message),
            help: Some(
                "YAML is indentation-sensitive; compare with inventory/sample/cluster.yaml".into(),
            ),
        }],
    })?;
    // The catalog first: the inventory's defaults and checks come from it.
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let catalog =
        crate::artifacts::Catalog::for_inventory_dir(dir).map_err(|e| InventoryErrors {
            file: e.file,
            problems: e.problems,
        })?;
    let collected = yaml::from_node_collecting::<InventoryFile>(&root);
    let mut problems: Vec<Problem> = collected.errors.iter().map(Problem::from_de).collect();
    // Unknown keys leave the rest sound, so its semantic problems are reported too.
    let inventory = match &collected.value {
        Some(file) => match resolve(file, &root, path, home, &catalog) {
            Ok(inventory) => Some(inventory),
            Err(more) => {
                problems.extend(more);
                None
            }
        },
        None => None,
    };
    match inventory {
        Some(inventory) if problems.is_empty() => Ok(inventory),
        _ => {
            problems.sort_by_key(|p| (p.line, p.col));
            problems.dedup();
            Err(InventoryErrors {
                file: path.to_path_buf(),
                problems,
            })
        }
    }
}

/// Does `addr` parse as an IP address?
pub fn is_ip(addr: &str) -> bool {
    addr.parse::<IpAddr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::kubelet_may_set;

    #[test]
    fn kubelet_label_rule_matches_the_kubelets() {
        for key in [
            "disk",
            "example.com/tier",
            "kubernetes.io/hostname",
            "topology.kubernetes.io/zone",
            "node.kubernetes.io/instance-type",
            "node.kubernetes.io/pool",
            "team.node.kubernetes.io/x",
            "kubelet.kubernetes.io/x",
            "notkubernetes.io/x",
        ] {
            assert!(kubelet_may_set(key), "{key}");
        }
        for key in [
            "node-role.kubernetes.io/worker",
            "node-role.kubernetes.io/control-plane",
            "kubernetes.io/role",
            "node-restriction.kubernetes.io/pci",
            "example.k8s.io/x",
            "k8s.io/x",
        ] {
            assert!(!kubelet_may_set(key), "{key}");
        }
    }
}
