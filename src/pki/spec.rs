//! What the inventory needs: every certificate (subject, SANs, usages, issuer) and every
//! kubeconfig, derived from the inventory alone. Pure; the names, subjects and usages are
//! kubeadm's (cmd/kubeadm/app/phases/certs/certlist.go and the kubeconfig phase, v1.29+).

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

use crate::inventory::{ApiEndpointMode, Host, Inventory, Role};

/// The three certificate authorities of a kubeadm cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum CaKind {
    /// `ca`: the cluster CA (API server, kubelets, kubeconfigs).
    Ca,
    /// `front-proxy-ca`: the aggregation layer's client CA.
    FrontProxyCa,
    /// `etcd/ca`: etcd's own CA.
    EtcdCa,
}

impl CaKind {
    pub const ALL: [CaKind; 3] = [CaKind::Ca, CaKind::FrontProxyCa, CaKind::EtcdCa];

    /// Path under the pki folder without extension, as kubeadm names it.
    pub fn id(self) -> &'static str {
        match self {
            CaKind::Ca => "ca",
            CaKind::FrontProxyCa => "front-proxy-ca",
            CaKind::EtcdCa => "etcd/ca",
        }
    }

    /// The name kubeadm shows (`kubeadm certs check-expiration`).
    pub fn label(self) -> &'static str {
        match self {
            CaKind::Ca => "ca",
            CaKind::FrontProxyCa => "front-proxy-ca",
            CaKind::EtcdCa => "etcd-ca",
        }
    }

    /// The CA certificate's common name (kubeadm's).
    pub fn common_name(self) -> &'static str {
        match self {
            CaKind::Ca => "kubernetes",
            CaKind::FrontProxyCa => "front-proxy-ca",
            CaKind::EtcdCa => "etcd-ca",
        }
    }
}

impl fmt::Display for CaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// A subject alternative name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum San {
    Dns(String),
    Ip(IpAddr),
}

impl San {
    /// An IP address when `text` parses as one, else a DNS name (lowercased).
    pub fn parse(text: &str) -> San {
        match text.parse::<IpAddr>() {
            Ok(ip) => San::Ip(ip),
            Err(_) => San::Dns(text.to_ascii_lowercase()),
        }
    }
}

impl fmt::Display for San {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            San::Dns(d) => write!(f, "DNS:{d}"),
            San::Ip(ip) => write!(f, "IP:{ip}"),
        }
    }
}

impl Serialize for San {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Extended key usages kubeadm uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Usage {
    ServerAuth,
    ClientAuth,
}

/// One leaf certificate the cluster needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeafSpec {
    /// Where it lives under `.capstan/pki/` (without `.crt`/`.key`), e.g. `apiserver`,
    /// `etcd/healthcheck-client`, `nodes/cp1/etcd/server`, `kubeconfig/admin`.
    pub id: String,
    /// The name a user reads (kubeadm's where it has one).
    pub name: String,
    pub ca: CaKind,
    pub common_name: String,
    pub organization: Vec<String>,
    pub sans: BTreeSet<San>,
    pub usages: Vec<Usage>,
}

/// One kubeconfig file capstan writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KubeconfigSpec {
    /// Path under `.capstan/pki/`, e.g. `admin.conf` or `nodes/cp1/kubelet.conf`.
    pub file: String,
    /// The file name on a host (`admin.conf`, `kubelet.conf`, …).
    pub name: String,
    /// The client certificate it embeds (a [`LeafSpec::id`]).
    pub cert_id: String,
    /// The user name inside the kubeconfig.
    pub user: String,
    /// The API server URL.
    pub server: String,
}

/// kubeadm's group bound to cluster-admin (v1.29+), used by admin.conf.
pub const CLUSTER_ADMINS_GROUP: &str = "kubeadm:cluster-admins";
/// The group that bypasses RBAC, used by super-admin.conf only.
pub const MASTERS_GROUP: &str = "system:masters";
pub const NODES_GROUP: &str = "system:nodes";

/// The host's pki subfolder for per-node material.
pub fn node_dir(host: &str) -> String {
    format!("nodes/{host}")
}

/// `https://ADDR:PORT`, with IPv6 addresses in brackets.
pub fn url(address: &str, port: u16) -> String {
    if address.parse::<Ipv6Addr>().is_ok() {
        format!("https://[{address}]:{port}")
    } else {
        format!("https://{address}:{port}")
    }
}

/// The API endpoint every node and the host copies of admin.conf use.
pub fn endpoint_url(inv: &Inventory) -> String {
    url(
        &inv.cluster.api_endpoint.address,
        inv.cluster.api_endpoint.port,
    )
}

/// The API server URL for the operator's own admin.conf: the endpoint, except under
/// local-proxy (127.0.0.1 is the laptop there), where it is the first control plane's
/// SSH address.
pub fn operator_url(inv: &Inventory) -> String {
    if inv.cluster.api_endpoint.mode == ApiEndpointMode::LocalProxy
        && let Some(cp) = inv.hosts_with(Role::ControlPlane).next()
    {
        return url(&cp.address, inv.cluster.api_endpoint.port);
    }
    endpoint_url(inv)
}

/// The control plane's own API server (controller-manager.conf and scheduler.conf), as
/// kubeadm does: its advertise address on the API port.
pub fn local_api_url(inv: &Inventory, host: &Host) -> String {
    url(&host.internal_address, inv.cluster.api_endpoint.port)
}

fn host_sans(host: &Host) -> impl Iterator<Item = San> {
    [
        San::parse(&host.name),
        San::parse(&host.address),
        San::parse(&host.internal_address),
    ]
    .into_iter()
}

/// The API server certificate's SANs: every control plane's name and addresses, the API
/// endpoint, the extra SANs, loopback, the `kubernetes` service names and the first address of
/// the service subnet.
pub fn apiserver_sans(inv: &Inventory) -> BTreeSet<San> {
    let mut sans: BTreeSet<San> = inv
        .hosts_with(Role::ControlPlane)
        .flat_map(host_sans)
        .collect();
    let domain = &inv.cluster.dns_domain;
    for name in [
        "localhost".to_string(),
        "kubernetes".to_string(),
        "kubernetes.default".to_string(),
        "kubernetes.default.svc".to_string(),
        format!("kubernetes.default.svc.{domain}"),
    ] {
        sans.insert(San::Dns(name));
    }
    sans.insert(San::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    if !inv.cluster.api_endpoint.address.is_empty() {
        sans.insert(San::parse(&inv.cluster.api_endpoint.address));
    }
    for extra in &inv.cluster.api_endpoint.extra_sans {
        sans.insert(San::parse(extra));
    }
    sans.insert(San::Ip(first_service_ip(inv)));
    sans
}

/// The first address of the service subnet: the `kubernetes` service's ClusterIP.
pub fn first_service_ip(inv: &Inventory) -> IpAddr {
    let net = inv.cluster.service_subnet;
    match net.network() {
        IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4).wrapping_add(1))),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6).wrapping_add(1))),
    }
}

/// An etcd member's server and peer SANs (kubeadm's: name, localhost, its address,
/// 127.0.0.1, ::1).
pub fn etcd_sans(host: &Host) -> BTreeSet<San> {
    let mut sans: BTreeSet<San> = host_sans(host).collect();
    sans.insert(San::Dns("localhost".into()));
    sans.insert(San::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    sans.insert(San::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    sans
}

fn leaf(
    id: impl Into<String>,
    name: impl Into<String>,
    ca: CaKind,
    cn: impl Into<String>,
    org: &[&str],
    sans: BTreeSet<San>,
    usages: &[Usage],
) -> LeafSpec {
    LeafSpec {
        id: id.into(),
        name: name.into(),
        ca,
        common_name: cn.into(),
        organization: org.iter().map(|s| (*s).to_string()).collect(),
        sans,
        usages: usages.to_vec(),
    }
}

/// Every leaf certificate the inventory needs, in a stable order.
pub fn leaves(inv: &Inventory) -> Vec<LeafSpec> {
    use Usage::{ClientAuth, ServerAuth};
    let none = BTreeSet::new;
    let mut out = vec![
        leaf(
            "apiserver",
            "apiserver",
            CaKind::Ca,
            "kube-apiserver",
            &[],
            apiserver_sans(inv),
            &[ServerAuth],
        ),
        leaf(
            "apiserver-kubelet-client",
            "apiserver-kubelet-client",
            CaKind::Ca,
            "kube-apiserver-kubelet-client",
            &[CLUSTER_ADMINS_GROUP],
            none(),
            &[ClientAuth],
        ),
        leaf(
            "front-proxy-client",
            "front-proxy-client",
            CaKind::FrontProxyCa,
            "front-proxy-client",
            &[],
            none(),
            &[ClientAuth],
        ),
        leaf(
            "apiserver-etcd-client",
            "apiserver-etcd-client",
            CaKind::EtcdCa,
            "kube-apiserver-etcd-client",
            &[],
            none(),
            &[ClientAuth],
        ),
        leaf(
            "etcd/healthcheck-client",
            "etcd-healthcheck-client",
            CaKind::EtcdCa,
            "kube-etcd-healthcheck-client",
            &[],
            none(),
            &[ClientAuth],
        ),
        leaf(
            "kubeconfig/admin",
            "admin.conf",
            CaKind::Ca,
            "kubernetes-admin",
            &[CLUSTER_ADMINS_GROUP],
            none(),
            &[ClientAuth],
        ),
        leaf(
            "kubeconfig/super-admin",
            "super-admin.conf",
            CaKind::Ca,
            "kubernetes-super-admin",
            &[MASTERS_GROUP],
            none(),
            &[ClientAuth],
        ),
        leaf(
            "kubeconfig/controller-manager",
            "controller-manager.conf",
            CaKind::Ca,
            "system:kube-controller-manager",
            &[],
            none(),
            &[ClientAuth],
        ),
        leaf(
            "kubeconfig/scheduler",
            "scheduler.conf",
            CaKind::Ca,
            "system:kube-scheduler",
            &[],
            none(),
            &[ClientAuth],
        ),
    ];
    let members: BTreeSet<&str> = inv.etcd_members().map(|h| h.name.as_str()).collect();
    for host in &inv.hosts {
        let dir = node_dir(&host.name);
        let n = &host.name;
        if members.contains(n.as_str()) {
            out.push(leaf(
                format!("{dir}/etcd/server"),
                format!("etcd-server ({n})"),
                CaKind::EtcdCa,
                n.clone(),
                &[],
                etcd_sans(host),
                &[ServerAuth, ClientAuth],
            ));
            out.push(leaf(
                format!("{dir}/etcd/peer"),
                format!("etcd-peer ({n})"),
                CaKind::EtcdCa,
                n.clone(),
                &[],
                etcd_sans(host),
                &[ServerAuth, ClientAuth],
            ));
        }
        if runs_kubelet(host) {
            out.push(leaf(
                format!("{dir}/kubelet-client"),
                format!("kubelet.conf ({n})"),
                CaKind::Ca,
                format!("system:node:{n}"),
                &[NODES_GROUP],
                none(),
                &[ClientAuth],
            ));
            out.push(leaf(
                format!("{dir}/kubelet"),
                format!("kubelet ({n})"),
                CaKind::Ca,
                format!("system:node:{n}"),
                &[NODES_GROUP],
                host_sans(host).collect(),
                &[ServerAuth],
            ));
        }
    }
    out
}

/// Control planes and workers run a kubelet; dedicated etcd and load-balancer hosts do not.
pub fn runs_kubelet(host: &Host) -> bool {
    host.has_role(Role::ControlPlane) || host.has_role(Role::Worker)
}

/// Every kubeconfig the inventory needs: the operator's admin.conf, and per host those
/// kubeadm writes there.
pub fn kubeconfigs(inv: &Inventory) -> Vec<KubeconfigSpec> {
    let endpoint = endpoint_url(inv);
    let mut out = vec![KubeconfigSpec {
        file: "admin.conf".into(),
        name: "admin.conf".into(),
        cert_id: "kubeconfig/admin".into(),
        user: "kubernetes-admin".into(),
        server: operator_url(inv),
    }];
    let first_cp = inv.hosts_with(Role::ControlPlane).next().map(|h| &h.name);
    for host in &inv.hosts {
        let dir = node_dir(&host.name);
        let mut add = |name: &str, cert_id: &str, user: &str, server: &str| {
            out.push(KubeconfigSpec {
                file: format!("{dir}/{name}"),
                name: name.to_string(),
                cert_id: cert_id.to_string(),
                user: user.to_string(),
                server: server.to_string(),
            });
        };
        if host.has_role(Role::ControlPlane) {
            let local = local_api_url(inv, host);
            add(
                "admin.conf",
                "kubeconfig/admin",
                "kubernetes-admin",
                &endpoint,
            );
            if Some(&host.name) == first_cp {
                add(
                    "super-admin.conf",
                    "kubeconfig/super-admin",
                    "kubernetes-super-admin",
                    &endpoint,
                );
            }
            add(
                "controller-manager.conf",
                "kubeconfig/controller-manager",
                "system:kube-controller-manager",
                &local,
            );
            add(
                "scheduler.conf",
                "kubeconfig/scheduler",
                "system:kube-scheduler",
                &local,
            );
        }
        if runs_kubelet(host) {
            add(
                "kubelet.conf",
                &format!("{dir}/kubelet-client"),
                &format!("system:node:{}", host.name),
                &endpoint,
            );
        }
    }
    out
}
