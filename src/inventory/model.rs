//! The inventory file as written by the user: every key optional where a default exists.
//!
//! These types mirror the YAML one to one (`deny_unknown_fields` everywhere). Defaults are
//! filled in one place, [`super::resolve`], which turns this into the validated
//! [`super::Inventory`].

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryFile {
    pub cluster: ClusterSpec,
    #[serde(default)]
    pub ssh: SshSpec,
    pub hosts: Vec<HostSpec>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    pub name: String,
    pub kubernetes_version: String,
    pub pod_subnet: Option<String>,
    pub service_subnet: Option<String>,
    pub dns_domain: Option<String>,
    #[serde(default)]
    pub etcd: EtcdSpec,
    #[serde(default)]
    pub api_endpoint: ApiEndpointSpec,
    #[serde(default)]
    pub artifacts: ArtifactsSpec,
    /// Where control-plane and addon images come from (default registry.k8s.io).
    pub image_repository: Option<String>,
    /// Versions of the node software; each defaults to the newest the catalog pins.
    #[serde(default)]
    pub versions: VersionsSpec,
    /// Certificates: key algorithm and renewal threshold.
    #[serde(default)]
    pub pki: PkiSpec,
    /// Leader election of kube-controller-manager and kube-scheduler.
    #[serde(default)]
    pub leader_election: LeaderElectionSpec,
    /// Name resolution outside the cluster (CoreDNS's upstream, pods with `dnsPolicy: Default`).
    #[serde(default)]
    pub dns: DnsSpec,
    /// kube-proxy's settings that depend on the site.
    #[serde(default)]
    pub kube_proxy: KubeProxySpec,
    /// containerd's registry hosts (`certs.d/<host>/hosts.toml`), by registry host:
    /// `docker.io`, `registry.example:5000`, `_default`.
    #[serde(default)]
    pub registries: std::collections::BTreeMap<String, RegistrySpec>,
    /// Images without a registry: archives imported into every node's containerd.
    #[serde(default)]
    pub images: ImagesSpec,
}

/// `cluster.images`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ImagesSpec {
    /// A folder of image archives (`*.tar`: OCI layouts or `docker save`), relative to the
    /// inventory's folder.
    pub preload: Option<String>,
}

/// One registry host of `cluster.registries`: its mirrors, tried in order, then the
/// registry itself (`server`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySpec {
    #[serde(default)]
    pub mirrors: Vec<EndpointSpec>,
    /// The registry itself: its URL (default `https://<host>`) and how to reach it.
    pub server: Option<EndpointSpec>,
}

/// A mirror, or the registry's own server: where, how to trust it, how to log in.
/// Credentials are never written here: only where to read them.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    /// `https://HOST[:PORT][/PATH]`, or `http://…` for plain http.
    pub url: Option<String>,
    /// What containerd may do with it (default `[pull, resolve]`).
    pub capabilities: Option<Vec<String>>,
    /// A CA bundle (PEM) beside the inventory that the endpoint's certificate chains to.
    pub ca_file: Option<String>,
    /// A client certificate and its key (PEM), beside the inventory.
    pub client_cert_file: Option<String>,
    pub client_key_file: Option<String>,
    #[serde(default)]
    pub skip_verify: bool,
    pub username: Option<String>,
    pub password_file: Option<String>,
    pub password_env: Option<String>,
    pub token_file: Option<String>,
    pub token_env: Option<String>,
    /// Refused: credentials in the inventory's own text (validation says where instead).
    #[serde(skip_serializing)]
    pub password: Option<String>,
    #[serde(skip_serializing)]
    pub token: Option<String>,
}

/// `cluster.dns`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSpec {
    /// Nameservers for nodes whose own resolv.conf has only loopback ones (systemd-resolved
    /// off, Docker's 127.0.0.11): capstan writes them into the kubelet's resolv.conf there.
    pub upstream: Option<Vec<String>>,
}

/// `cluster.kube_proxy`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KubeProxySpec {
    /// `conntrack.maxPerCore`; 0 leaves nf_conntrack_max alone (needed where kube-proxy
    /// cannot write it: container hosts). Default: 0 on container hosts, else upstream's.
    pub conntrack_max_per_core: Option<u32>,
}

/// `--leader-elect-lease-duration`, `-renew-deadline` and `-retry-period` of
/// kube-controller-manager and kube-scheduler, as Go durations (`15s`, `1m30s`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LeaderElectionSpec {
    pub lease_duration: Option<String>,
    pub renew_deadline: Option<String>,
    pub retry_period: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PkiSpec {
    pub key_algorithm: Option<KeyAlgorithm>,
    pub renew_before_days: Option<u32>,
}

/// The key type of every key capstan generates (kubeadm's `encryptionAlgorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
pub enum KeyAlgorithm {
    #[serde(rename = "ecdsa-p256", alias = "ECDSA-P256")]
    EcdsaP256,
    #[serde(rename = "rsa-2048", alias = "RSA-2048")]
    Rsa2048,
    #[serde(rename = "rsa-3072", alias = "RSA-3072")]
    Rsa3072,
    #[serde(rename = "rsa-4096", alias = "RSA-4096")]
    Rsa4096,
}

impl KeyAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EcdsaP256 => "ecdsa-p256",
            Self::Rsa2048 => "rsa-2048",
            Self::Rsa3072 => "rsa-3072",
            Self::Rsa4096 => "rsa-4096",
        }
    }
}

impl std::fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VersionsSpec {
    pub containerd: Option<String>,
    pub runc: Option<String>,
    pub etcd: Option<String>,
    pub crictl: Option<String>,
    pub cni_plugins: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdSpec {
    pub topology: Option<EtcdTopology>,
    /// Scheduled snapshots on every member (a systemd timer); absent: none.
    pub snapshots: Option<EtcdSnapshotsSpec>,
}

/// `cluster.etcd.snapshots`: every key optional.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdSnapshotsSpec {
    /// A 5-field cron expression (default `0 */6 * * *`).
    pub schedule: Option<String>,
    /// How many snapshots each member keeps, newest first (default 12).
    pub keep: Option<u32>,
    /// Where on the member (default /var/lib/capstan/etcd-snapshots).
    pub dir: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EtcdTopology {
    /// Members on the control-plane hosts.
    Stacked,
    /// Members on the hosts with role `etcd`.
    External,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiEndpointSpec {
    pub mode: Option<ApiEndpointMode>,
    pub address: Option<String>,
    pub port: Option<u16>,
    pub software: Option<LbSoftware>,
    /// More names and addresses for the API server's certificate.
    #[serde(default)]
    pub extra_sans: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApiEndpointMode {
    /// haproxy/nginx on the load-balancer hosts (or a VIP in front of them).
    ExternalLb,
    /// A proxy on every node at 127.0.0.1 (kubespray's way).
    LocalProxy,
    /// A load balancer capstan does not manage.
    Existing,
    /// The one control plane's own address.
    Single,
}

impl ApiEndpointMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ExternalLb => "external-lb",
            Self::LocalProxy => "local-proxy",
            Self::Existing => "existing",
            Self::Single => "single",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LbSoftware {
    Haproxy,
    Nginx,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactsSpec {
    pub mirror: Option<String>,
    pub checksums: Option<ChecksumSource>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChecksumSource {
    /// capstan's own catalog of upstream sha256 sums.
    Pinned,
    /// The `.sha256` file beside each artifact on the mirror.
    Mirror,
    /// The checksum file upstream publishes beside each download (`kubelet.sha256`, etcd's
    /// `SHA256SUMS`, containerd's `.sha256sum`), found on the mirror in upstream's layout.
    Published,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SshSpec {
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity_file: Option<String>,
    #[serde(rename = "become")]
    pub become_method: Option<Become>,
    pub bastion: Option<BastionSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Become {
    /// Run as the SSH user (root, or a user that needs no elevation).
    None,
    /// Wrap every command in `sudo`.
    Sudo,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BastionSpec {
    pub address: String,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub identity_file: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    pub name: String,
    pub address: String,
    pub internal_address: Option<String>,
    #[serde(default)]
    pub roles: Vec<Role>,
    pub ssh: Option<SshSpec>,
    /// Node labels the kubelet registers the node with (`--node-labels`).
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Taints the kubelet registers the node with (`--register-with-taints`).
    #[serde(default)]
    pub taints: Vec<TaintSpec>,
}

/// A node taint: `{key: dedicated, value: gpu, effect: NoSchedule}`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TaintSpec {
    pub key: String,
    pub value: Option<String>,
    pub effect: TaintEffect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

impl TaintEffect {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoSchedule => "NoSchedule",
            Self::PreferNoSchedule => "PreferNoSchedule",
            Self::NoExecute => "NoExecute",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    ControlPlane,
    Worker,
    Etcd,
    LoadBalancer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ControlPlane => "control-plane",
            Self::Worker => "worker",
            Self::Etcd => "etcd",
            Self::LoadBalancer => "load-balancer",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
