//! Defaults and validation: [`resolve`] turns the file's model into an [`Inventory`],
//! collecting every problem with the position of the offending node.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use ipnet::IpNet;

use super::model::{
    ApiEndpointMode, BastionSpec, Become, ChecksumSource, EtcdTopology, InventoryFile, LbSoftware,
    Role, SshSpec,
};
use super::{
    ApiEndpoint, Artifacts, Bastion, Cluster, Host, Inventory, Problem, SshSettings, Version,
};
use crate::yaml::Node;

pub const DEFAULT_POD_SUBNET: &str = "10.244.0.0/16";
pub const DEFAULT_SERVICE_SUBNET: &str = "10.96.0.0/12";
pub const DEFAULT_DNS_DOMAIN: &str = "cluster.local";
pub const DEFAULT_API_PORT: u16 = 6443;
pub const OFFICIAL_MIRROR: &str = "https://dl.k8s.io";

pub(super) struct Collector<'a> {
    pub(super) root: &'a Node,
    pub(super) home: Option<PathBuf>,
    pub(super) problems: Vec<Problem>,
}

impl Collector<'_> {
    /// A problem at the value found at `path` (or its nearest existing ancestor).
    pub(super) fn at(
        &mut self,
        path: &[&str],
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        let loc = self.root.locate(path);
        self.problems.push(Problem {
            line: loc.line,
            col: loc.col,
            message: message.into(),
            help: Some(help.into()),
        });
    }
}

/// Fills defaults and validates; returns every problem found.
pub fn resolve(
    file: &InventoryFile,
    root: &Node,
    path: &Path,
    home: Option<&Path>,
    catalog: &std::sync::Arc<crate::artifacts::Catalog>,
) -> Result<Inventory, Vec<Problem>> {
    let mut c = Collector {
        root,
        home: home.map(Path::to_path_buf),
        problems: Vec::new(),
    };
    let base_dir = path.parent().unwrap_or_else(|| Path::new("."));
    let spec = &file.cluster;

    if !is_dns_label(&spec.name) {
        c.at(
            &["cluster", "name"],
            format!("cluster name `{}` is not a valid name", spec.name),
            "use lowercase letters, digits and '-', at most 63, starting and ending with a letter or digit",
        );
    }

    let version = Version::parse(&spec.kubernetes_version);
    if version.is_none() {
        c.at(
            &["cluster", "kubernetes_version"],
            format!("`{}` is not a Kubernetes version", spec.kubernetes_version),
            "write it as vMAJOR.MINOR.PATCH, e.g. v1.32.3",
        );
    }

    let pod_subnet = parse_subnet(
        &mut c,
        spec.pod_subnet.as_deref(),
        DEFAULT_POD_SUBNET,
        "pod_subnet",
    );
    let service_subnet = parse_subnet(
        &mut c,
        spec.service_subnet.as_deref(),
        DEFAULT_SERVICE_SUBNET,
        "service_subnet",
    );
    if let (Some(pods), Some(services)) = (pod_subnet, service_subnet)
        && (pods.contains(&services.network()) || services.contains(&pods.network()))
    {
        c.at(
                &["cluster", "service_subnet"],
                format!("service_subnet {services} overlaps pod_subnet {pods}"),
                "pod and service addresses must not collide: pick disjoint ranges, e.g. 10.244.0.0/16 and 10.96.0.0/12",
            );
    }

    if let Some(services) = service_subnet
        && services.prefix_len() + 4 > services.max_prefix_len()
    {
        c.at(
            &["cluster", "service_subnet"],
            format!("service_subnet {services} is too small: cluster DNS takes its 10th address"),
            "give a /28 or larger (IPv6: /124 or larger), e.g. 10.96.0.0/12",
        );
    }

    let dns_domain = spec
        .dns_domain
        .clone()
        .unwrap_or_else(|| DEFAULT_DNS_DOMAIN.to_string());
    if !is_dns_name(&dns_domain) {
        c.at(
            &["cluster", "dns_domain"],
            format!("`{dns_domain}` is not a DNS domain"),
            "use dot-separated lowercase labels, e.g. cluster.local",
        );
    }

    // Hosts, with the global ssh block merged into each host's.
    if file.hosts.is_empty() {
        c.at(
            &["hosts"],
            "the inventory lists no hosts",
            "add at least one host with role control-plane under `hosts:`",
        );
    }
    let mut hosts = Vec::with_capacity(file.hosts.len());
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut ssh_addresses: HashMap<(String, Option<u16>), usize> = HashMap::new();
    let mut internal_addresses: HashMap<String, usize> = HashMap::new();
    for (i, h) in file.hosts.iter().enumerate() {
        let idx = i.to_string();
        let at = |field: &str| vec!["hosts".to_string(), idx.clone(), field.to_string()];
        if !is_dns_subdomain(&h.name) {
            c.at(
                &strs(&at("name")),
                format!("host name `{}` is not a valid node name", h.name),
                "node names are DNS-1123 subdomains: lowercase letters, digits, '-' and '.', at most 253, starting and ending with a letter or digit",
            );
        } else if let Some(first) = names.insert(&h.name, i) {
            c.at(
                &strs(&at("name")),
                format!(
                    "host name `{}` is used twice (first by hosts[{first}])",
                    h.name
                ),
                "every host needs its own name: it becomes the Kubernetes node name",
            );
        }
        if !is_address(&h.address) {
            c.at(
                &strs(&at("address")),
                format!("`{}` is not an IP address or host name", h.address),
                "give the address SSH reaches the host at, e.g. 192.0.2.11 or cp1.example.com",
            );
        }
        let internal = h
            .internal_address
            .clone()
            .unwrap_or_else(|| h.address.clone());
        if let Some(addr) = &h.internal_address
            && !is_address(addr)
        {
            c.at(
                &strs(&at("internal_address")),
                format!("`{addr}` is not an IP address or host name"),
                "give the address cluster traffic uses, e.g. 10.0.0.11",
            );
        }
        if h.roles.is_empty() {
            c.at(
                &strs(&at("name")),
                format!("host `{}` has no roles", h.name),
                "add `roles: [...]` with one or more of control-plane, worker, etcd, load-balancer",
            );
        }
        let mut roles = BTreeSet::new();
        for (j, role) in h.roles.iter().enumerate() {
            if !roles.insert(*role) {
                c.at(
                    &["hosts", &idx, "roles", &j.to_string()],
                    format!("role `{role}` is listed twice for host `{}`", h.name),
                    "list each role once",
                );
            }
        }
        // The kubelet's --node-ip, the API server's --advertise-address and etcd's URLs take
        // an IP address; only a load balancer may be known by name alone.
        if roles.iter().any(|r| *r != Role::LoadBalancer)
            && is_address(&internal)
            && !super::is_ip(&internal)
        {
            let (field, given) = if h.internal_address.is_some() {
                ("internal_address", "internal address")
            } else {
                ("address", "address (also its internal address)")
            };
            c.at(
                &strs(&at(field)),
                format!(
                    "host `{}`: {given} `{internal}` is not an IP address",
                    h.name
                ),
                "the internal address becomes the kubelet's --node-ip, the API server's --advertise-address and etcd's URLs, which take IPs: add `internal_address: <IP>` (cluster traffic), keep the name in `address` for SSH",
            );
        }
        let (labels, taints) = check_labels_and_taints(&mut c, h, &idx);
        let ssh = merge_ssh(&mut c, &file.ssh, h.ssh.as_ref(), &idx, base_dir);
        if let Some(first) = ssh_addresses.insert((h.address.clone(), ssh.port), i) {
            c.at(
                &strs(&at("address")),
                format!("address `{}` is used by hosts[{first}] too", h.address),
                "every host needs its own SSH address (or its own ssh.port)",
            );
        }
        if let Some(first) = internal_addresses.insert(internal.clone(), i)
            && h.internal_address.is_some()
        {
            c.at(
                &strs(&at("internal_address")),
                format!("internal address `{internal}` is used by hosts[{first}] too"),
                "every host needs its own internal address",
            );
        }
        hosts.push(Host {
            name: h.name.clone(),
            address: h.address.clone(),
            internal_address: internal,
            roles,
            ssh,
            labels,
            taints,
        });
    }

    let control_planes: Vec<&Host> = hosts
        .iter()
        .filter(|h| h.has_role(Role::ControlPlane))
        .collect();
    let etcd_hosts: Vec<usize> = hosts
        .iter()
        .enumerate()
        .filter(|(_, h)| h.has_role(Role::Etcd))
        .map(|(i, _)| i)
        .collect();
    let lb_hosts: Vec<&Host> = hosts
        .iter()
        .filter(|h| h.has_role(Role::LoadBalancer))
        .collect();
    if !file.hosts.is_empty() && control_planes.is_empty() {
        c.at(
            &["hosts"],
            "no host has the role control-plane",
            "a cluster needs at least one control plane: add `control-plane` to a host's roles",
        );
    }

    let topology = spec.etcd.topology.unwrap_or(EtcdTopology::Stacked);
    match topology {
        EtcdTopology::Stacked => {
            for &i in &etcd_hosts {
                c.at(
                    &["hosts", &i.to_string(), "roles"],
                    format!(
                        "host `{}` has role etcd but cluster.etcd.topology is stacked",
                        hosts[i].name
                    ),
                    "under stacked topology etcd runs on the control planes; set `etcd: {topology: external}` to use etcd hosts, or remove the role",
                );
            }
            check_member_count(
                &mut c,
                control_planes.len(),
                "control planes (stacked etcd)",
            );
        }
        EtcdTopology::External => {
            if etcd_hosts.is_empty() {
                c.at(
                    &["cluster", "etcd", "topology"],
                    "external etcd topology but no host has the role etcd",
                    "add `etcd` to the roles of 1, 3 or 5 hosts, or use `topology: stacked`",
                );
            } else {
                check_member_count(&mut c, etcd_hosts.len(), "etcd hosts");
            }
        }
    }

    let api_endpoint = resolve_api_endpoint(&mut c, file, &control_planes, &lb_hosts);
    let artifacts = resolve_artifacts(&mut c, file, catalog);
    let (versions, versions_given) = resolve_versions(&mut c, file, version, catalog);
    let pki = resolve_pki(&mut c, file);
    let leader_election = resolve_leader_election(&mut c, file);
    let dns = resolve_dns(&mut c, file);
    let registries = super::registries::resolve(&mut c, file, base_dir);
    let etcd_snapshots = super::snapshots::resolve(&mut c, file);
    let preload = super::preload::resolve(&mut c, file, base_dir);
    let kube_proxy = super::KubeProxy {
        conntrack_max_per_core: spec.kube_proxy.conntrack_max_per_core,
    };
    let image_repository = spec
        .image_repository
        .clone()
        .unwrap_or_else(|| crate::artifacts::catalog::DEFAULT_IMAGE_REPOSITORY.to_string())
        .trim_end_matches('/')
        .to_string();
    if image_repository.is_empty()
        || !image_repository
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'/' | b':'))
    {
        c.at(
            &["cluster", "image_repository"],
            format!("`{image_repository}` is not an image repository"),
            "write it as HOST[/PATH], e.g. registry.k8s.io",
        );
    }

    if c.problems.is_empty() {
        Ok(Inventory {
            path: path.to_path_buf(),
            cluster: Cluster {
                name: spec.name.clone(),
                kubernetes_version: version.unwrap_or(Version {
                    major: 0,
                    minor: 0,
                    patch: 0,
                }),
                pod_subnet: pod_subnet.unwrap_or_default(),
                service_subnet: service_subnet.unwrap_or_default(),
                dns_domain,
                etcd_topology: topology,
                etcd_snapshots,
                api_endpoint,
                artifacts,
                image_repository,
                versions,
                versions_given,
                pki,
                leader_election,
                dns,
                kube_proxy,
                registries,
                preload,
            },
            hosts,
        })
    } else {
        Err(c.problems)
    }
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn check_member_count(c: &mut Collector<'_>, count: usize, what: &str) {
    if count > 0 && count.is_multiple_of(2) {
        let quorum = count / 2 + 1;
        c.at(
            &["hosts"],
            format!(
                "{count} {what} give an even number of etcd members: quorum is {quorum} of {count}, which survives {} failure{}, the same as {} member{}",
                count - quorum,
                if count - quorum == 1 { "" } else { "s" },
                count - 1,
                if count - 1 == 1 { "" } else { "s" },
            ),
            format!(
                "use an odd number of etcd members ({} or {}): an extra even member adds a failure point without adding tolerance",
                count - 1,
                count + 1
            ),
        );
    }
}

fn parse_subnet(
    c: &mut Collector<'_>,
    given: Option<&str>,
    default: &str,
    key: &str,
) -> Option<IpNet> {
    let text = given.unwrap_or(default);
    match text.parse::<IpNet>() {
        Ok(net) if net.trunc() == net => Some(net),
        Ok(net) => {
            c.at(
                &["cluster", key],
                format!("`{text}` has host bits set"),
                format!("write the network address: {}", net.trunc()),
            );
            None
        }
        Err(_) => {
            c.at(
                &["cluster", key],
                format!("`{text}` is not a CIDR range"),
                format!("write it as ADDRESS/PREFIX, e.g. {default}"),
            );
            None
        }
    }
}

fn resolve_api_endpoint(
    c: &mut Collector<'_>,
    file: &InventoryFile,
    control_planes: &[&Host],
    lb_hosts: &[&Host],
) -> ApiEndpoint {
    let spec = &file.cluster.api_endpoint;
    let mode = spec.mode.unwrap_or(if !lb_hosts.is_empty() {
        ApiEndpointMode::ExternalLb
    } else if control_planes.len() == 1 {
        ApiEndpointMode::Single
    } else {
        ApiEndpointMode::LocalProxy
    });
    let port = spec.port.unwrap_or(DEFAULT_API_PORT);
    if port == 0 {
        c.at(
            &["cluster", "api_endpoint", "port"],
            "port 0 is not a port",
            "use 1-65535; the default is 6443",
        );
    }
    if let Some(addr) = &spec.address
        && !is_address(addr)
    {
        c.at(
            &["cluster", "api_endpoint", "address"],
            format!("`{addr}` is not an IP address or host name"),
            "give the address clients reach the API at",
        );
    }
    if mode != ApiEndpointMode::ExternalLb && !lb_hosts.is_empty() {
        c.at(
            &["cluster", "api_endpoint", "mode"],
            format!(
                "host `{}` has role load-balancer but api_endpoint.mode is {}",
                lb_hosts[0].name,
                mode.as_str()
            ),
            "load-balancer hosts serve mode external-lb: set `mode: external-lb`, or remove the role",
        );
    }
    let address = match mode {
        ApiEndpointMode::ExternalLb => match (&spec.address, lb_hosts) {
            (Some(addr), _) => addr.clone(),
            (None, [one]) => one.internal_address.clone(),
            (None, []) => {
                c.at(
                    &["cluster", "api_endpoint"],
                    "api_endpoint.mode external-lb needs a load balancer",
                    "give a host the role load-balancer, or set api_endpoint.address to a load balancer or VIP",
                );
                String::new()
            }
            (None, _) => {
                c.at(
                    &["cluster", "api_endpoint"],
                    format!("{} load-balancer hosts but no api_endpoint.address", lb_hosts.len()),
                    "with several load balancers, set api_endpoint.address to the VIP or DNS name in front of them",
                );
                String::new()
            }
        },
        ApiEndpointMode::Existing => spec.address.clone().unwrap_or_else(|| {
            c.at(
                &["cluster", "api_endpoint"],
                "api_endpoint.mode existing needs an address",
                "set api_endpoint.address to the load balancer capstan does not manage",
            );
            String::new()
        }),
        ApiEndpointMode::Single => {
            if control_planes.len() > 1 {
                c.at(
                    &["cluster", "api_endpoint", "mode"],
                    format!(
                        "api_endpoint.mode single with {} control planes",
                        control_planes.len()
                    ),
                    "several control planes need a load balancer: use external-lb or local-proxy",
                );
            }
            spec.address.clone().unwrap_or_else(|| {
                control_planes
                    .first()
                    .map(|h| h.internal_address.clone())
                    .unwrap_or_default()
            })
        }
        ApiEndpointMode::LocalProxy => {
            if spec.address.as_deref().is_some_and(|a| a != "127.0.0.1") {
                c.at(
                    &["cluster", "api_endpoint", "address"],
                    "api_endpoint.mode local-proxy listens on 127.0.0.1 on every node",
                    "remove api_endpoint.address, or use mode external-lb/existing for a shared address",
                );
            }
            "127.0.0.1".to_string()
        }
    };
    for (i, san) in spec.extra_sans.iter().enumerate() {
        let name = san.strip_prefix("*.").unwrap_or(san.as_str());
        if !is_address(name) || (name.len() != san.len() && super::is_ip(name)) {
            c.at(
                &["cluster", "api_endpoint", "extra_sans", &i.to_string()],
                format!("`{san}` is not an IP address or DNS name"),
                "list names and addresses clients use for the API server, e.g. api.example.com or 203.0.113.7",
            );
        }
    }
    ApiEndpoint {
        mode,
        address,
        port,
        software: spec.software.unwrap_or(LbSoftware::Haproxy),
        extra_sans: spec.extra_sans.clone(),
    }
}

pub const DEFAULT_RENEW_BEFORE_DAYS: u32 = 30;

fn resolve_pki(c: &mut Collector<'_>, file: &InventoryFile) -> super::Pki {
    let spec = &file.cluster.pki;
    let renew_before_days = spec.renew_before_days.unwrap_or(DEFAULT_RENEW_BEFORE_DAYS);
    if renew_before_days == 0 || renew_before_days > 180 {
        c.at(
            &["cluster", "pki", "renew_before_days"],
            format!("renew_before_days {renew_before_days} is out of range"),
            "give 1-180 days (leaf certificates last 365 days; the default is 30)",
        );
    }
    super::Pki {
        key_algorithm: spec.key_algorithm.unwrap_or(super::KeyAlgorithm::EcdsaP256),
        renew_before_days,
    }
}

/// `cluster.dns.upstream`: IP addresses, none of them loopback (CoreDNS would forward
/// to itself), at most three (the resolver reads no more).
fn resolve_dns(c: &mut Collector<'_>, file: &InventoryFile) -> super::Dns {
    let given = file.cluster.dns.upstream.clone().unwrap_or_default();
    let path = ["cluster", "dns", "upstream"];
    for ns in &given {
        match ns.parse::<std::net::IpAddr>() {
            Err(_) => c.at(
                &path,
                format!("`{ns}` is not an IP address"),
                "list the nameservers' addresses, e.g. [192.0.2.53, 2001:db8::53]",
            ),
            Ok(ip) if ip.is_loopback() => c.at(
                &path,
                format!("{ns} is a loopback address: CoreDNS would forward to itself and exit (plugin/loop)"),
                "list nameservers reachable from the nodes' own addresses",
            ),
            Ok(_) => {}
        }
    }
    if given.len() > 3 {
        c.at(
            &path,
            format!("{} nameservers given", given.len()),
            "give at most 3: the resolver (and the kubelet) read no more",
        );
    }
    super::Dns { upstream: given }
}

pub const DEFAULT_LEASE_DURATION: &str = "15s";
pub const DEFAULT_RENEW_DEADLINE: &str = "10s";
pub const DEFAULT_RETRY_PERIOD: &str = "2s";

/// client-go refuses a renew deadline within `JitterFactor` (1.2) retry periods.
const LEADER_ELECTION_JITTER: f64 = 1.2;

fn resolve_leader_election(c: &mut Collector<'_>, file: &InventoryFile) -> super::LeaderElection {
    let spec = &file.cluster.leader_election;
    let mut parse = |key: &str, given: Option<&String>, default: &str| {
        let text = given.map_or(default, String::as_str).to_string();
        let parsed = parse_go_duration(&text);
        match parsed {
            None => c.at(
                &["cluster", "leader_election", key],
                format!("`{text}` is not a duration"),
                "write a Go duration: a number and a unit (ms, s, m, h), e.g. 15s or 1m30s",
            ),
            Some(d) if d.is_zero() => c.at(
                &["cluster", "leader_election", key],
                format!("{key} must be longer than 0"),
                format!("the default is {default}"),
            ),
            Some(_) => {}
        }
        (text, parsed.filter(|d| !d.is_zero()))
    };
    let (lease_duration, lease) = parse(
        "lease_duration",
        spec.lease_duration.as_ref(),
        DEFAULT_LEASE_DURATION,
    );
    let (renew_deadline, renew) = parse(
        "renew_deadline",
        spec.renew_deadline.as_ref(),
        DEFAULT_RENEW_DEADLINE,
    );
    let (retry_period, retry) = parse(
        "retry_period",
        spec.retry_period.as_ref(),
        DEFAULT_RETRY_PERIOD,
    );
    if let (Some(lease), Some(renew)) = (lease, renew)
        && renew >= lease
    {
        c.at(
            &["cluster", "leader_election", "renew_deadline"],
            format!(
                "renew_deadline {renew_deadline} is not shorter than lease_duration {lease_duration}"
            ),
            "the leader must give up before others may take the lease: keep renew_deadline < lease_duration (defaults 10s and 15s)",
        );
    }
    if let (Some(renew), Some(retry)) = (renew, retry)
        && renew.as_secs_f64() <= retry.as_secs_f64() * LEADER_ELECTION_JITTER
    {
        c.at(
            &["cluster", "leader_election", "retry_period"],
            format!(
                "retry_period {retry_period} leaves no room to retry within renew_deadline {renew_deadline}"
            ),
            "keep renew_deadline longer than 1.2 x retry_period, as client-go requires (defaults 10s and 2s)",
        );
    }
    super::LeaderElection {
        lease_duration,
        renew_deadline,
        retry_period,
    }
}

/// Parses a Go duration (`time.ParseDuration`): `300ms`, `1.5h`, `2h45m`; no sign.
pub fn parse_go_duration(text: &str) -> Option<std::time::Duration> {
    if text == "0" {
        return Some(std::time::Duration::ZERO);
    }
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|ch: char| !(ch.is_ascii_digit() || ch == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return None;
        }
        let value: f64 = num.parse().ok()?;
        let unit_len = tail
            .find(|ch: char| ch.is_ascii_digit() || ch == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += value * scale;
        rest = tail;
    }
    std::time::Duration::try_from_secs_f64(total).ok()
}

fn resolve_artifacts(
    c: &mut Collector<'_>,
    file: &InventoryFile,
    catalog: &std::sync::Arc<crate::artifacts::Catalog>,
) -> Artifacts {
    let spec = &file.cluster.artifacts;
    let mirror = spec
        .mirror
        .clone()
        .unwrap_or_else(|| OFFICIAL_MIRROR.to_string())
        .trim_end_matches('/')
        .to_string();
    if !(mirror.starts_with("https://")
        || mirror.starts_with("http://")
        || mirror.starts_with("file:///"))
        || mirror
            .chars()
            .any(|ch| ch.is_whitespace() || ch.is_control() || "'\"`$\\;|&<>(){}".contains(ch))
    {
        c.at(
            &["cluster", "artifacts", "mirror"],
            format!("`{mirror}` is not a mirror URL"),
            "use https://HOST/PATH or file:///ABSOLUTE/PATH (dl.k8s.io's layout either way)",
        );
    }
    let checksums = spec.checksums.unwrap_or(if mirror == OFFICIAL_MIRROR {
        ChecksumSource::Pinned
    } else {
        ChecksumSource::Mirror
    });
    Artifacts {
        mirror,
        checksums,
        catalog: catalog.clone(),
    }
}

/// Each node software version: the inventory's, else the one the catalog gives a new
/// cluster on the Kubernetes minor. The minor must be in the catalog, and the containerd one
/// it runs on. Also returns those the inventory names itself.
fn resolve_versions(
    c: &mut Collector<'_>,
    file: &InventoryFile,
    kubernetes: Option<Version>,
    catalog: &crate::artifacts::Catalog,
) -> (
    std::collections::BTreeMap<String, String>,
    std::collections::BTreeMap<String, String>,
) {
    use crate::artifacts::catalog::Component;
    use crate::artifacts::data::component_version;
    let given = &file.cluster.versions;
    let mut out = std::collections::BTreeMap::new();
    let mut named = std::collections::BTreeMap::new();
    let minor = kubernetes.and_then(|k| {
        let m = catalog.minor(&k);
        if m.is_none() {
            let (message, help) = catalog.unknown_minor(&k);
            c.at(&["cluster", "kubernetes_version"], message, help);
        }
        m
    });
    for (component, value) in [
        (Component::Containerd, &given.containerd),
        (Component::Runc, &given.runc),
        (Component::Etcd, &given.etcd),
        (Component::Crictl, &given.crictl),
        (Component::CniPlugins, &given.cni_plugins),
    ] {
        let key = component.key();
        let version = match value {
            Some(v) => {
                named.insert(component.name().to_string(), v.clone());
                if component_version(v).is_none() {
                    c.at(
                        &["cluster", "versions", key],
                        format!("`{v}` is not a version"),
                        "write it as MAJOR.MINOR.PATCH, with or without a leading v",
                    );
                }
                v.clone()
            }
            None => kubernetes
                .filter(|_| minor.is_some())
                .and_then(|k| catalog.node_default(&k, component))
                .unwrap_or_default()
                .to_string(),
        };
        if component == Component::Containerd
            && let (Some(m), Some(cv)) = (minor, component_version(&version))
            && !m.supports_containerd(&cv)
        {
            let (at, what): (&[&str], String) = if value.is_some() {
                (
                    &["cluster", "versions", "containerd"],
                    format!("containerd {version}"),
                )
            } else {
                (
                    &["cluster", "kubernetes_version"],
                    format!("the catalog's default containerd {version}"),
                )
            };
            c.at(
                at,
                m.containerd_refusal(&what),
                format!(
                    "set `cluster.versions.containerd` to one of those; or, where a newer containerd is known to work, add it to `kubernetes.{}.containerd` in {}",
                    m.name,
                    catalog.override_hint()
                ),
            );
        }
        out.insert(component.name().to_string(), version);
    }
    if let Some(k) = kubernetes {
        out.insert("kubelet".into(), k.to_string());
        out.insert("kubectl".into(), k.to_string());
    }
    (out, named)
}

fn merge_ssh(
    c: &mut Collector<'_>,
    global: &SshSpec,
    host: Option<&SshSpec>,
    idx: &str,
    base_dir: &Path,
) -> SshSettings {
    let over = host.cloned().unwrap_or_default();
    let (user_path, user) = pick(&over.user, &global.user, idx, "user");
    let (port_path, port) = pick(&over.port, &global.port, idx, "port");
    let (id_path, identity) = pick(
        &over.identity_file,
        &global.identity_file,
        idx,
        "identity_file",
    );
    let (_, become_method) = pick(&over.become_method, &global.become_method, idx, "become");
    let (bastion_path, bastion) = pick(&over.bastion, &global.bastion, idx, "bastion");

    if let Some(user) = &user
        && !is_user_name(user)
    {
        c.at(
            &strs(&user_path),
            format!("`{user}` is not a user name"),
            "use a POSIX user name: letters, digits, '_', '-', '.'",
        );
    }
    if port == Some(0) {
        c.at(
            &strs(&port_path),
            "port 0 is not a port",
            "use 1-65535; SSH's default is 22",
        );
    }
    let identity_file = identity.map(|f| check_identity_file(c, &f, &id_path, base_dir));
    let bastion = bastion.map(|b: BastionSpec| {
        let mut at = bastion_path.clone();
        if !is_address(&b.address) {
            at.push("address".into());
            c.at(
                &strs(&at),
                format!("`{}` is not an IP address or host name", b.address),
                "give the bastion's address",
            );
            at.pop();
        }
        let identity_file = b.identity_file.as_ref().map(|f| {
            at.push("identity_file".into());
            let p = check_identity_file(c, f, &at, base_dir);
            at.pop();
            p
        });
        if let Some(user) = &b.user
            && !is_user_name(user)
        {
            at.push("user".into());
            c.at(
                &strs(&at),
                format!("`{user}` is not a user name"),
                "use a POSIX user name: letters, digits, '_', '-', '.'",
            );
            at.pop();
        }
        Bastion {
            address: b.address,
            port: b.port,
            user: b.user,
            identity_file,
        }
    });
    // root needs no elevation; anyone else is elevated with sudo unless told otherwise.
    let become_method = become_method.unwrap_or(match user.as_deref() {
        None | Some("root") => Become::None,
        Some(_) => Become::Sudo,
    });
    SshSettings {
        user,
        port,
        identity_file,
        become_method,
        bastion,
    }
}

/// The host's value if set, else the global one, with the path it came from.
fn pick<T: Clone>(
    host: &Option<T>,
    global: &Option<T>,
    idx: &str,
    key: &str,
) -> (Vec<String>, Option<T>) {
    match (host, global) {
        (Some(v), _) => (
            vec!["hosts".into(), idx.into(), "ssh".into(), key.into()],
            Some(v.clone()),
        ),
        (None, v) => (vec!["ssh".into(), key.into()], v.clone()),
    }
}

/// Expands `~/` and anchors a relative path at the inventory's folder.
pub fn expand_path(given: &str, base_dir: &Path, home: Option<&Path>) -> PathBuf {
    if let Some(rest) = given.strip_prefix("~/")
        && let Some(home) = home
    {
        return home.join(rest);
    }
    let p = PathBuf::from(given);
    if p.is_absolute() { p } else { base_dir.join(p) }
}

fn check_identity_file(
    c: &mut Collector<'_>,
    given: &str,
    at: &[String],
    base_dir: &Path,
) -> PathBuf {
    let path = expand_path(given, base_dir, c.home.as_deref());
    // Not opened unless it is a regular file: opening a FIFO or a device could block.
    let readable = std::fs::metadata(&path).and_then(|m| {
        if m.is_file() {
            std::fs::File::open(&path).map(drop)
        } else {
            Err(std::io::Error::other("not a regular file"))
        }
    });
    if let Err(e) = readable {
        c.at(
            &strs(at),
            format!("identity file {} cannot be read: {e}", path.display()),
            "point identity_file at a readable private key (relative paths start at the inventory's folder), or remove it to use the ssh-agent",
        );
    }
    path
}

type Labels = std::collections::BTreeMap<String, String>;

/// Node labels and taints of host `idx`, checked against Kubernetes' rules.
fn check_labels_and_taints(
    c: &mut Collector<'_>,
    h: &super::model::HostSpec,
    idx: &str,
) -> (Labels, Vec<super::Taint>) {
    const KEY_HELP: &str = "a key is NAME or PREFIX/NAME: NAME has at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit; PREFIX is a lowercase DNS subdomain, e.g. topology.kubernetes.io/zone";
    const VALUE_HELP: &str = "a value is empty or at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit";
    for (key, value) in &h.labels {
        let loc = c.root.locate_key(&["hosts", idx, "labels"], key);
        let problem = if let Err(why) = check_qualified_name(key) {
            Some((format!("label key `{key}` {why}"), KEY_HELP))
        } else if !is_label_value(value) {
            Some((
                format!("label `{key}`: value `{value}` is not a label value"),
                VALUE_HELP,
            ))
        } else {
            None
        };
        if let Some((message, help)) = problem {
            c.problems.push(Problem {
                line: loc.line,
                col: loc.col,
                message,
                help: Some(help.into()),
            });
        }
    }
    let mut taints = Vec::new();
    for (j, t) in h.taints.iter().enumerate() {
        let j = j.to_string();
        if let Err(why) = check_qualified_name(&t.key) {
            c.at(
                &["hosts", idx, "taints", &j, "key"],
                format!("taint key `{}` {why}", t.key),
                KEY_HELP,
            );
        }
        if let Some(v) = &t.value
            && !is_label_value(v)
        {
            c.at(
                &["hosts", idx, "taints", &j, "value"],
                format!("taint `{}`: value `{v}` is not a taint value", t.key),
                VALUE_HELP,
            );
        }
        taints.push(super::Taint {
            key: t.key.clone(),
            value: t.value.clone().filter(|v| !v.is_empty()),
            effect: t.effect,
        });
    }
    (h.labels.clone(), taints)
}

/// Kubernetes' qualified name (label and taint keys): `[PREFIX/]NAME`.
fn check_qualified_name(key: &str) -> Result<(), &'static str> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && (p.is_empty() || !is_dns_subdomain(p))
    {
        return Err("has a prefix that is not a lowercase DNS subdomain");
    }
    if name.is_empty() || !is_label_value(name) {
        return Err("is not a valid key");
    }
    Ok(())
}

/// Kubernetes' label value: empty, or at most 63 of `[A-Za-z0-9_.-]`, alphanumeric at both ends.
fn is_label_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && v.starts_with(|ch: char| ch.is_ascii_alphanumeric())
            && v.ends_with(|ch: char| ch.is_ascii_alphanumeric()))
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// DNS-1123 subdomain, as Kubernetes requires of node names.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// A DNS name: labels may use upper case too (we only compare them, never create objects).
pub(super) fn is_dns_name(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(|l| is_dns_label(&l.to_ascii_lowercase()))
}

/// An IP address, or a host name that needs no quoting anywhere.
fn is_address(s: &str) -> bool {
    super::is_ip(s) || is_dns_name(s)
}

fn is_user_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && !s.starts_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::artifacts::catalog::Component;

    /// The sample inventory states every default; each must be what capstan really gives a
    /// new inventory on the sample's Kubernetes version (catalog/catalog.yaml).
    #[test]
    fn the_samples_versions_are_the_real_defaults() {
        // (Its identity file is the reader's own, not this machine's.)
        let text = include_str!("../../inventory/sample/cluster.yaml")
            .lines()
            .filter(|l| !l.trim_start().starts_with("identity_file:"))
            .collect::<Vec<_>>()
            .join("\n");
        let text = text.as_str();
        let stated = crate::inventory::load_str(text, Path::new("/sample/cluster.yaml"), None)
            .unwrap_or_else(|e| panic!("{e}"));
        // The same inventory without its `versions:` block: the defaults.
        let mut kept = Vec::new();
        let mut in_versions = false;
        for line in text.lines() {
            if line.starts_with("  versions:") {
                in_versions = true;
                continue;
            }
            if in_versions && line.starts_with("    ") {
                continue;
            }
            in_versions = false;
            kept.push(line);
        }
        let defaulted =
            crate::inventory::load_str(&kept.join("\n"), Path::new("/sample/cluster.yaml"), None)
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(stated.cluster.versions, defaulted.cluster.versions);
        assert_eq!(stated.cluster.versions.len(), 7);
        // And the sample's release is one capstan pins, so it installs with `pinned`.
        let catalog = &stated.cluster.artifacts.catalog;
        let k = stated.cluster.kubernetes_version.to_string();
        for c in [Component::Kubelet, Component::Kubectl] {
            assert!(catalog.pin(c, &k).is_some(), "{c} {k} is not pinned");
        }
    }

    #[test]
    fn versions_follow_the_minor_and_containerd_must_fit_it() {
        let load = |cluster: &str| {
            crate::inventory::load_str(
                &format!("cluster: {{name: a, {cluster}}}\n{HOSTS}"),
                Path::new("/x/cluster.yaml"),
                None,
            )
        };
        let inv = load("kubernetes_version: v1.35.1").unwrap();
        assert_eq!(inv.cluster.versions["containerd"], "v2.2.1");
        let inv = load("kubernetes_version: v1.32.4").unwrap();
        assert_eq!(inv.cluster.versions["containerd"], "v1.7.29");
        // 1.36 needs containerd 2.2+: 1.7 is refused before any connection, with the matrix.
        let err = load("kubernetes_version: v1.36.0, versions: {containerd: v1.7.29}")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("Kubernetes v1.36 does not run on containerd v1.7.29"),
            "{err}"
        );
        assert!(err.contains("v2.3.0+ or v2.2.0+ within v2.2"), "{err}");
        assert!(err.contains("cluster.yaml:1:"), "{err}");
        let err = load("kubernetes_version: v1.35.0, versions: {containerd: 2.1.4}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not run on containerd 2.1.4"), "{err}");
        // A minor the catalog does not know: refused, with the known ones and where to add it.
        let err = load("kubernetes_version: v1.39.0").unwrap_err().to_string();
        assert!(
            err.contains("does not know Kubernetes v1.39.0's minor"),
            "{err}"
        );
        assert!(err.contains("v1.37"), "{err}");
        assert!(err.contains("catalog.yaml beside the inventory"), "{err}");
    }

    #[test]
    fn an_upgrade_moves_the_defaults_and_keeps_what_the_inventory_names() {
        let inv = crate::inventory::load_str(
            &format!("cluster: {{name: a, kubernetes_version: v1.34.4, versions: {{runc: v1.3.3}}}}\n{HOSTS}"),
            Path::new("/x/cluster.yaml"),
            None,
        )
        .unwrap();
        assert_eq!(inv.cluster.versions["containerd"], "v2.1.6");
        let at = inv.cluster.versions_at(&Version::parse("v1.35.1").unwrap());
        assert_eq!(at["containerd"], "v2.2.1");
        assert_eq!(at["crictl"], "v1.35.0");
        assert_eq!(at["runc"], "v1.3.3");
        assert_eq!(at["kubelet"], "v1.35.1");
    }

    /// 1.38 the day it ships: a few lines in catalog.yaml beside the inventory, no new capstan.
    #[test]
    fn a_new_minor_is_a_catalog_override() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("catalog.yaml"),
            "kubernetes:\n  v1.38:\n    released: 2026-12-16\n    end_of_life: 2028-02-28\n    images: {coredns: v1.14.4, pause: \"3.10.2\", etcd: 3.7.0-0}\n    containerd: [v2.3.0]\npins:\n  kubelet:\n    v1.38.0: {amd64: 1111111111111111111111111111111111111111111111111111111111111111}\n",
        )
        .unwrap();
        let path = dir.path().join("cluster.yaml");
        let text = format!(
            "cluster: {{name: a, kubernetes_version: v1.38.0, versions: {{containerd: v2.3.0}}}}\n{HOSTS}"
        );
        let inv = crate::inventory::load_str(&text, &path, None).unwrap_or_else(|e| panic!("{e}"));
        let catalog = &inv.cluster.artifacts.catalog;
        let m = catalog.minor(&inv.cluster.kubernetes_version).unwrap();
        assert_eq!(m.images.etcd, "3.7.0-0");
        assert_eq!(m.newest_patch, Version::parse("v1.38.0"));
        // Node software it does not name comes from the minor before.
        assert_eq!(
            inv.cluster.versions["runc"],
            catalog
                .node_default(&Version::parse("v1.37.0").unwrap(), Component::Runc)
                .unwrap()
        );
        // A mistake in the override is reported at its line and column, before anything else.
        std::fs::write(
            dir.path().join("catalog.yaml"),
            "kubernetes:\n  v1.38:\n    relased: 2026-12-16\n",
        )
        .unwrap();
        let err = crate::inventory::load_str(&text, &path, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("catalog.yaml:3:5: unknown key `relased`"),
            "{err}"
        );
    }

    #[test]
    fn names_and_addresses() {
        assert!(is_dns_subdomain("cp1"));
        assert!(is_dns_subdomain("cp-1.example.com"));
        assert!(!is_dns_subdomain("a;rm -rf /"));
        assert!(!is_dns_subdomain("$(reboot)"));
        assert!(!is_dns_subdomain("CP1"));
        assert!(!is_dns_subdomain("-cp"));
        assert!(is_address("192.0.2.1"));
        assert!(is_address("fd00::1"));
        assert!(is_address("Host.Example.com"));
        assert!(!is_address("1.2.3.4; reboot"));
        assert!(is_user_name("ubuntu"));
        assert!(!is_user_name("a b"));
    }

    #[test]
    fn go_durations() {
        use std::time::Duration;
        for (text, want) in [
            ("15s", Duration::from_secs(15)),
            ("1m30s", Duration::from_secs(90)),
            ("500ms", Duration::from_millis(500)),
            ("1.5h", Duration::from_secs(5400)),
            ("2h45m", Duration::from_secs(9900)),
            ("0", Duration::ZERO),
        ] {
            assert_eq!(parse_go_duration(text), Some(want), "{text}");
        }
        for bad in ["", "15", "s", "-1s", "1x", "1..5s", "15 s", "1s2"] {
            assert_eq!(parse_go_duration(bad), None, "{bad}");
        }
    }

    /// Every problem of the inventory `text` as `LINE:COL: MESSAGE | HELP`; none when valid.
    pub(in crate::inventory) fn problems(text: &str) -> Vec<String> {
        match crate::inventory::load_str(text, Path::new("/x/cluster.yaml"), None) {
            Ok(_) => Vec::new(),
            Err(e) => e
                .problems
                .iter()
                .map(|p| {
                    format!(
                        "{}:{}: {} | {}",
                        p.line,
                        p.col,
                        p.message,
                        p.help.as_deref().unwrap_or("")
                    )
                })
                .collect(),
        }
    }

    const HOSTS: &str = "hosts:\n  - {name: cp1, address: 10.0.0.1, roles: [control-plane]}\n";

    #[test]
    fn dns_upstream_and_kube_proxy() {
        let inv = crate::inventory::load_str(
            &format!("cluster: {{name: a, kubernetes_version: v1.32.4}}\n{HOSTS}"),
            Path::new("/x/cluster.yaml"),
            None,
        )
        .unwrap();
        assert!(inv.cluster.dns.upstream.is_empty());
        assert_eq!(inv.cluster.kube_proxy.conntrack_max_per_core, None);
        let p = problems(&format!(
            "cluster:\n  name: a\n  kubernetes_version: v1.32.4\n  dns: {{upstream: [1.1.1.1, dns.example, 127.0.0.53, ::1]}}\n{HOSTS}"
        ));
        assert_eq!(p.len(), 4, "{p:?}");
        assert!(p[0].contains("`dns.example` is not an IP address"), "{p:?}");
        assert!(p[1].contains("127.0.0.53 is a loopback address"), "{p:?}");
        assert!(p[2].contains("::1 is a loopback address"), "{p:?}");
        assert!(p[3].contains("4 nameservers given"), "{p:?}");
        assert!(p[0].starts_with("4:"), "{p:?}");
        let p = problems(&format!(
            "cluster:\n  name: a\n  kubernetes_version: v1.32.4\n  kube_proxy: {{conntrack: 0}}\n{HOSTS}"
        ));
        assert!(p[0].contains("conntrack"), "{p:?}");
    }

    #[test]
    fn leader_election_defaults_and_checks() {
        let inv = crate::inventory::load_str(
            &format!("cluster: {{name: a, kubernetes_version: v1.32.4}}\n{HOSTS}"),
            Path::new("/x/cluster.yaml"),
            None,
        )
        .unwrap();
        assert_eq!(
            inv.cluster.leader_election,
            crate::inventory::LeaderElection {
                lease_duration: "15s".into(),
                renew_deadline: "10s".into(),
                retry_period: "2s".into(),
            }
        );
        let bad = |le: &str| {
            problems(&format!(
                "cluster:\n  name: a\n  kubernetes_version: v1.32.4\n  leader_election: {le}\n{HOSTS}"
            ))
        };
        let p = bad("{lease_duration: 15, renew_deadline: 1m, retry_period: 0s}");
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p[0].starts_with("4:37: `15` is not a duration | write a Go duration"),
            "{p:?}"
        );
        assert!(
            p[1].starts_with("4:75: retry_period must be longer than 0"),
            "{p:?}"
        );
        let p = bad("{lease_duration: 10s, renew_deadline: 10s}");
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].contains("renew_deadline 10s is not shorter than lease_duration 10s | the leader must give up"),
            "{p:?}"
        );
        let p = bad("{retry_period: 9s}");
        assert!(
            p[0].contains("retry_period 9s leaves no room to retry within renew_deadline 10s"),
            "{p:?}"
        );
        let p = bad("{lease_duration: 15s, renw_deadline: 10s}");
        assert!(p[0].contains("unknown key `renw_deadline`"), "{p:?}");
        assert!(bad("{lease_duration: 1m, renew_deadline: 40s, retry_period: 5s}").is_empty());
    }

    #[test]
    fn service_subnet_must_hold_the_dns_address() {
        let p = problems(&format!(
            "cluster:\n  name: a\n  kubernetes_version: v1.32.4\n  service_subnet: 10.96.0.0/29\n{HOSTS}"
        ));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with(
                "4:19: service_subnet 10.96.0.0/29 is too small: cluster DNS takes its 10th address"
            ),
            "{p:?}"
        );
        assert!(problems(&format!(
            "cluster:\n  name: a\n  kubernetes_version: v1.32.4\n  service_subnet: 10.96.0.0/28\n{HOSTS}"
        ))
        .is_empty());
    }

    #[test]
    fn cluster_hosts_need_an_internal_ip() {
        let p = problems(
            "cluster: {name: a, kubernetes_version: v1.32.4}\nhosts:\n  - {name: cp1, address: cp1.example.com, roles: [control-plane]}\n  - {name: w1, address: w1.example.com, internal_address: w1.lan, roles: [worker]}\n  - {name: lb1, address: lb.example.com, roles: [load-balancer]}\n",
        );
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p[0].starts_with("3:26: host `cp1`: address (also its internal address) `cp1.example.com` is not an IP address | the internal address becomes"),
            "{p:?}"
        );
        assert!(
            p[1].starts_with("4:59: host `w1`: internal address `w1.lan` is not an IP address"),
            "{p:?}"
        );
        assert!(problems(
            "cluster: {name: a, kubernetes_version: v1.32.4}\nhosts:\n  - {name: cp1, address: cp1.example.com, internal_address: 10.0.0.1, roles: [control-plane]}\n",
        )
        .is_empty());
    }

    #[test]
    fn pki_problems_are_reported() {
        let p = problems(&format!(
            "cluster:\n  name: a\n  kubernetes_version: v1.32.4\n  pki: {{renew_before_days: 0}}\n{HOSTS}"
        ));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].contains("renew_before_days 0 is out of range"),
            "{p:?}"
        );
    }

    #[test]
    fn versions() {
        assert_eq!(Version::parse("v1.32.3").unwrap().to_string(), "v1.32.3");
        for bad in [
            "1.32.3",
            "v1.32",
            "v1.32.3.4",
            "v1.032.3",
            "v1.32.x",
            "v1..3",
            "",
        ] {
            assert!(Version::parse(bad).is_none(), "{bad}");
        }
    }
}
