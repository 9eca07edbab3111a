//! The one context every template and role string renders from, and the artifact source
//! that backs `binary` resources with the operator's verified cache.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use minijinja::Value;
use serde::Serialize;

use super::desired::ArtifactSource;
use crate::artifacts::cache::Cache;
use crate::artifacts::catalog::{self, Arch, ArtifactRef, Component};
use crate::facts::Facts;
use crate::inventory::{Host, Inventory};

/// Where the PKI lives on hosts (kubeadm's paths).
pub const PKI_DIR: &str = "/etc/kubernetes/pki";

#[derive(Debug, Clone, Serialize)]
struct HostView<'a> {
    name: &'a str,
    address: &'a str,
    internal_address: &'a str,
    roles: Vec<&'static str>,
    /// The kubelet's `--node-labels` value (`k=v,…`; empty: none).
    node_labels: String,
    /// The kubelet's `--register-with-taints` value (`k=v:Effect,…`; empty: none).
    node_taints: String,
}

impl<'a> From<&'a Host> for HostView<'a> {
    fn from(h: &'a Host) -> Self {
        HostView {
            name: &h.name,
            address: &h.address,
            internal_address: &h.internal_address,
            roles: h.roles.iter().map(|r| r.as_str()).collect(),
            node_labels: h
                .kubelet_labels()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(","),
            node_taints: h
                .taints
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
struct Member<'a> {
    name: &'a str,
    address: &'a str,
}

/// Values computed from the inventory, the same for every host.
#[derive(Debug, Clone, Serialize)]
pub struct Computed {
    pub sandbox_image: String,
    /// The format of /etc/containerd/config.toml for the containerd being installed:
    /// 2 for containerd 1.x, 3 for containerd 2.x (whose CRI plugin ids differ).
    pub containerd_config_version: u8,
    pub images: catalog::Images,
    /// `address:port` clients use for the API.
    pub api_endpoint: String,
    /// `https://address:port`, the API endpoint as a URL.
    pub api_server_url: String,
    /// The port each API server listens on: 6443 (what load balancers and local proxies
    /// forward to), or the endpoint's port when the endpoint is the single control plane.
    pub apiserver_port: u16,
    /// The first control plane of the inventory: it applies the addons.
    pub first_control_plane: String,
    /// The `kubernetes` Service's address: the service subnet's first.
    pub kubernetes_service_ip: String,
    /// The cluster DNS (the `kube-dns` Service): the service subnet's 10th address, as kubeadm.
    pub cluster_dns: String,
    /// Every etcd member's client URL, comma-separated (`--etcd-servers`).
    pub etcd_servers: String,
    /// Every etcd member as `name=https://address:2380`, comma-separated (a new cluster's
    /// `--initial-cluster`).
    pub etcd_initial_cluster: String,
    /// `--service-account-issuer`, as kubeadm: `https://kubernetes.default.svc.<dns_domain>`.
    pub service_account_issuer: String,
}

/// etcd's client and peer ports.
pub const ETCD_CLIENT_PORT: u16 = 2379;
pub const ETCD_PEER_PORT: u16 = 2380;
/// The API server's port behind a load balancer or local proxy (kubeadm's bindPort).
pub const APISERVER_PORT: u16 = 6443;

impl Computed {
    pub fn new(inventory: &Inventory) -> Result<Computed, crate::artifacts::ArtifactError> {
        let c = &inventory.cluster;
        let images = catalog::images(
            &c.artifacts.catalog,
            &c.kubernetes_version,
            Some(&c.image_repository),
        )?;
        let members: Vec<&Host> = inventory.etcd_members().collect();
        let join = |f: &dyn Fn(&Host) -> String| {
            members.iter().map(|h| f(h)).collect::<Vec<_>>().join(",")
        };
        Ok(Computed {
            sandbox_image: images.pause.clone(),
            containerd_config_version: containerd_config_version(
                c.versions.get("containerd").map_or("", String::as_str),
            ),
            images,
            api_endpoint: host_port(&c.api_endpoint.address, c.api_endpoint.port),
            api_server_url: format!(
                "https://{}",
                host_port(&c.api_endpoint.address, c.api_endpoint.port)
            ),
            apiserver_port: if c.api_endpoint.mode == crate::inventory::ApiEndpointMode::Single {
                c.api_endpoint.port
            } else {
                APISERVER_PORT
            },
            first_control_plane: inventory
                .hosts_with(crate::inventory::Role::ControlPlane)
                .next()
                .map(|h| h.name.clone())
                .unwrap_or_default(),
            // Validation keeps the service subnet big enough for both (/28 at least).
            kubernetes_service_ip: nth_address(&c.service_subnet, 1)
                .map(|a| a.to_string())
                .unwrap_or_default(),
            cluster_dns: nth_address(&c.service_subnet, 10)
                .map(|a| a.to_string())
                .unwrap_or_default(),
            etcd_servers: join(&|h| {
                format!(
                    "https://{}",
                    host_port(&h.internal_address, ETCD_CLIENT_PORT)
                )
            }),
            etcd_initial_cluster: join(&|h| {
                format!(
                    "{}=https://{}",
                    h.name,
                    host_port(&h.internal_address, ETCD_PEER_PORT)
                )
            }),
            service_account_issuer: format!("https://kubernetes.default.svc.{}", c.dns_domain),
        })
    }
}

/// The config.toml format version of containerd `version` (`v2.1.9` or `2.1.9`): 3 from
/// containerd 2.0 on, else 2 (containerd 1.x, and a version that does not parse).
pub fn containerd_config_version(version: &str) -> u8 {
    let major = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok())
        .unwrap_or(1);
    if major >= 2 { 3 } else { 2 }
}

/// `address:port`, with brackets around an IPv6 address.
pub fn host_port(address: &str, port: u16) -> String {
    if address.parse::<std::net::Ipv6Addr>().is_ok() {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    }
}

/// The `n`th address of `net` (the network address is the 0th), when it is inside `net`
/// and not its last (broadcast) address.
pub fn nth_address(net: &ipnet::IpNet, n: u32) -> Option<std::net::IpAddr> {
    use std::net::IpAddr;
    match net {
        ipnet::IpNet::V4(v4) => {
            let base = u32::from(v4.network());
            let last = u32::from(v4.broadcast());
            let addr = base.checked_add(n).filter(|a| *a < last)?;
            Some(IpAddr::V4(addr.into()))
        }
        ipnet::IpNet::V6(v6) => {
            let base = u128::from(v6.network());
            let last = u128::from(v6.broadcast());
            let addr = base.checked_add(u128::from(n)).filter(|a| *a < last)?;
            Some(IpAddr::V6(addr.into()))
        }
    }
}

/// The template context of `host`. Without facts (when only the shape of the desired
/// state is wanted, before the probe), `facts` is absent and templates that use it fail.
pub fn context(
    inventory: &Inventory,
    host: &Host,
    facts: Option<&Facts>,
    computed: &Computed,
) -> Value {
    let hosts: Vec<HostView<'_>> = inventory.hosts.iter().map(HostView::from).collect();
    let members: Vec<Member<'_>> = inventory
        .etcd_members()
        .map(|h| Member {
            name: &h.name,
            address: &h.internal_address,
        })
        .collect();
    // Every control plane's API server, as load balancers and local proxies list them.
    let backends: Vec<Member<'_>> = inventory
        .hosts_with(crate::inventory::Role::ControlPlane)
        .map(|h| Member {
            name: &h.name,
            address: &h.internal_address,
        })
        .collect();
    let (registries, registry_files) = super::registry_hosts::views(inventory);
    let base = minijinja::context! {
        cluster => v(&inventory.cluster),
        host => v(HostView::from(host)),
        hosts => v(hosts),
        versions => v(&inventory.cluster.versions),
        pki => minijinja::context! { dir => PKI_DIR },
        computed => minijinja::context! {
            sandbox_image => &computed.sandbox_image,
            containerd_config_version => computed.containerd_config_version,
            images => v(&computed.images),
            api_endpoint => &computed.api_endpoint,
            api_server_url => &computed.api_server_url,
            apiserver_port => computed.apiserver_port,
            first_control_plane => &computed.first_control_plane,
            kubernetes_service_ip => &computed.kubernetes_service_ip,
            cluster_dns => &computed.cluster_dns,
            etcd_servers => &computed.etcd_servers,
            etcd_initial_cluster => &computed.etcd_initial_cluster,
            service_account_issuer => &computed.service_account_issuer,
            etcd_members => v(members),
            lb_backends => v(backends),
            registries => v(registries),
            registry_files => v(registry_files),
        },
    };
    match facts {
        Some(f) => minijinja::context! { facts => v(f), ..base },
        None => base,
    }
}

fn v<T: Serialize>(x: T) -> Value {
    Value::from(minijinja::value::Serde(x))
}

/// Binaries from the artifact cache, fetched (and verified) once per artifact and arch.
pub struct CacheSource<'a> {
    pub cache: &'a Cache,
    pub inventory: &'a Inventory,
    pub arch: Arch,
    fetched: Mutex<HashMap<(Component, Arch), Result<crate::artifacts::cache::Fetched, String>>>,
}

impl<'a> CacheSource<'a> {
    pub fn new(cache: &'a Cache, inventory: &'a Inventory, arch: Arch) -> Self {
        CacheSource {
            cache,
            inventory,
            arch,
            fetched: Mutex::new(HashMap::new()),
        }
    }
}

impl ArtifactSource for CacheSource<'_> {
    fn verified_by(&self, artifact: &str) -> Option<String> {
        let component = Component::parse(artifact)?;
        let version = self.inventory.cluster.versions.get(component.name())?;
        let r = ArtifactRef::new(component, version.clone(), self.arch);
        let resolved = catalog::resolve(&r, &self.inventory.cluster.artifacts).ok()?;
        let name = |url: &str| url.rsplit('/').next().unwrap_or(url).to_string();
        // A mirror's own .sha256 is the mirror's operator's choice (and the test bed's);
        // upstream's file instead of capstan's pin is worth a word in every plan.
        match resolved.checksum {
            catalog::ExpectedChecksum::Published(url) => Some(format!(
                "{component} {version}: sha256 from upstream's published {}, not pinned by capstan",
                name(&url)
            )),
            catalog::ExpectedChecksum::Pinned(_) | catalog::ExpectedChecksum::MirrorFile(_) => None,
        }
    }

    fn fetch(&self, artifact: &str, file: &str) -> Result<(PathBuf, String, u64), String> {
        let component = Component::parse(artifact).ok_or_else(|| {
            let known: Vec<&str> = Component::ALL.iter().map(|c| c.name()).collect();
            format!(
                "`{artifact}` is not an artifact capstan knows (known: {})",
                known.join(", ")
            )
        })?;
        let version = self
            .inventory
            .cluster
            .versions
            .get(component.name())
            .cloned()
            .ok_or_else(|| format!("no version of {artifact} in the inventory"))?;
        let mut fetched = self
            .fetched
            .lock()
            .map_err(|_| "the artifact cache lock is poisoned".to_string())?;
        let entry = fetched.entry((component, self.arch)).or_insert_with(|| {
            let r = ArtifactRef::new(component, version, self.arch);
            catalog::resolve(&r, &self.inventory.cluster.artifacts)
                .and_then(|resolved| self.cache.fetch(&resolved))
                .map_err(|e| e.to_string())
        });
        let f = entry.as_ref().map_err(Clone::clone)?;
        let b = f.binary(file).ok_or_else(|| {
            let names: Vec<&str> = f.binaries.iter().map(|b| b.name.as_str()).collect();
            format!(
                "{artifact} has no binary `{file}` (it has {})",
                names.join(", ")
            )
        })?;
        Ok((b.path.clone(), b.sha256.clone(), b.size))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::engine::desired::{self, Content, Desired, Mode};
    use crate::engine::library::Library;
    use crate::engine::render::Renderer;
    use crate::engine::role;

    struct FakeArtifacts;

    impl ArtifactSource for FakeArtifacts {
        fn fetch(&self, artifact: &str, file: &str) -> Result<(PathBuf, String, u64), String> {
            Ok((
                PathBuf::from(format!("/cache/{artifact}/{file}")),
                format!("{:0>64}", file.len()),
                1,
            ))
        }
    }

    /// The lab inventory with `cluster` keys added (`versions: {containerd: v1.7.29}`).
    fn lab_inventory_with(cluster: &str) -> Inventory {
        let extra = if cluster.is_empty() {
            String::new()
        } else {
            format!(", {cluster}")
        };
        let text = format!(
            "cluster: {{name: t, kubernetes_version: v1.32.4{extra}}}\nhosts:\n  - {{name: cp1, address: 10.0.0.1, roles: [control-plane]}}\n  - {{name: w1, address: 10.0.0.2, roles: [worker]}}\n"
        );
        crate::inventory::load_str(
            &text,
            std::path::Path::new("/nonexistent/cluster.yaml"),
            None,
        )
        .unwrap()
    }

    /// The inline files `common` + `containerd` give a lab host (from a captured probe),
    /// by path; rendered twice to the same bytes, and the shape pass names the same things.
    fn lab_host_files(inventory: &Inventory) -> BTreeMap<String, String> {
        let facts = crate::facts::parse(include_str!(
            "../../tests/fixtures/facts/debian12-amd64-lab-systemd.txt"
        ))
        .unwrap();
        let lib = Library::builtin();
        let roles: Vec<role::Role> = ["common", "containerd"]
            .iter()
            .map(|n| role::load(&lib, n).unwrap())
            .collect();
        let roles: Vec<&role::Role> = roles.iter().collect();
        let renderer = Renderer::new(&lib);
        let computed = Computed::new(inventory).unwrap();
        let host = &inventory.hosts[1];
        let build = || {
            let ctx = context(inventory, host, Some(&facts), &computed);
            desired::build(&roles, &renderer, &ctx, &FakeArtifacts, Mode::Full).unwrap()
        };
        let first = build();
        assert_eq!(first, build());
        let ctx = context(inventory, host, None, &computed);
        let shape = desired::build(&roles, &renderer, &ctx, &FakeArtifacts, Mode::Shape).unwrap();
        let labels = |d: &[Desired]| {
            d.iter()
                .map(|x| {
                    let (k, n) = x.label();
                    format!("{k} {n}")
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(labels(&shape), labels(&first));
        assert!(
            labels(&first).contains(&"directory /etc/containerd/certs.d".to_string()),
            "{:?}",
            labels(&first)
        );
        first
            .iter()
            .filter_map(|d| match d {
                Desired::File(f) => match &f.content {
                    Content::Inline(b) => {
                        Some((f.path.clone(), std::str::from_utf8(b).unwrap().to_string()))
                    }
                    Content::Cached(_) => None,
                },
                _ => None,
            })
            .collect()
    }

    /// The shipped roles render for a lab host deterministically, with what containerd 2.x
    /// on such a host needs: config format 3.
    #[test]
    fn shipped_roles_render_deterministically() {
        let files = lab_host_files(&lab_inventory_with("versions: {containerd: v2.2.1}"));
        let cfg = &files["/etc/containerd/config.toml"];
        for want in [
            "\nversion = 3\n",
            "[plugins.'io.containerd.cri.v1.images'.pinned_images]\n  sandbox = \"registry.k8s.io/pause:3.10\"\n",
            "[plugins.'io.containerd.cri.v1.images'.registry]\n  # Registry hosts (mirrors, CAs, auth) as hosts.toml files, one folder per registry.\n  config_path = \"/etc/containerd/certs.d\"\n",
            // A container host.
            "[plugins.'io.containerd.cri.v1.runtime']\n  # This host is a container",
            "  restrict_oom_score_adj = true\n",
            "[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]\n  SystemdCgroup = true\n",
        ] {
            assert!(cfg.contains(want), "`{want}` not in {cfg}");
        }
        assert!(!cfg.contains("grpc.v1.cri"), "no 1.x plugin ids: {cfg}");
        assert!(files["/etc/sysctl.d/99-capstan.conf"].contains("net.ipv4.ip_forward = 1"));
        assert!(files["/etc/modules-load.d/capstan.conf"].contains("br_netfilter"));
    }

    /// Each registry of the inventory gets its hosts.toml (the same for containerd 1.7 and 2.x),
    /// with the files it names beside it; credentials only in 0600 files shown as secrets.
    #[test]
    fn registries_become_hosts_toml_files() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap().pem();
        std::fs::write(dir.path().join("ca.pem"), &ca).unwrap();
        std::fs::write(dir.path().join("client.key"), key.serialize_pem()).unwrap();
        std::fs::write(dir.path().join("reg.pass"), "pw\n").unwrap();
        let text = "cluster:\n  name: t\n  kubernetes_version: v1.32.4\n  registries:\n    docker.io:\n      mirrors:\n        - {url: https://mirror.lab:5443, ca_file: ca.pem, username: u, password_file: reg.pass}\n        - {url: http://cache.lab:5000, capabilities: [pull]}\n    registry.lab:5000:\n      server: {url: http://registry.lab:5000}\n    secure.lab:\n      server: {ca_file: ca.pem, client_cert_file: ca.pem, client_key_file: client.key, skip_verify: true}\nhosts:\n  - {name: cp1, address: 10.0.0.1, roles: [control-plane]}\n  - {name: w1, address: 10.0.0.2, roles: [worker]}\n";
        let inv = crate::inventory::load_str(text, &dir.path().join("cluster.yaml"), None)
            .unwrap_or_else(|e| panic!("{e}"));
        for containerd in ["v1.7.29", "v2.1.9"] {
            let mut inv = inv.clone();
            inv.cluster
                .versions
                .insert("containerd".into(), containerd.into());
            let files = lab_host_files(&inv);
            let d = "/etc/containerd/certs.d";
            assert_eq!(
                files[&format!("{d}/docker.io/hosts.toml")],
                format!(
                    "# Managed by capstan (cluster.registries); local changes are reverted on the next run.\n\
                     # containerd reads this file on every pull: changing it restarts nothing.\n\
                     server = \"https://registry-1.docker.io\"\n\
                     capabilities = [\"pull\", \"resolve\"]\n\
                     \n\
                     # Mirror 1, tried before the server.\n\
                     [host.\"https://mirror.lab:5443\"]\n\
                     \x20 capabilities = [\"pull\", \"resolve\"]\n\
                     \x20 ca = \"{d}/docker.io/mirror-1-ca.crt\"\n\
                     \x20 [host.\"https://mirror.lab:5443\".header]\n\
                     \x20   Authorization = \"Basic dTpwdw==\"\n\
                     \n\
                     # Mirror 2, tried before the server.\n\
                     [host.\"http://cache.lab:5000\"]\n\
                     \x20 capabilities = [\"pull\"]\n"
                )
            );
            assert_eq!(files[&format!("{d}/docker.io/mirror-1-ca.crt")], ca);
            assert_eq!(
                files[&format!("{d}/registry.lab:5000/hosts.toml")],
                "# Managed by capstan (cluster.registries); local changes are reverted on the next run.\n\
                 # containerd reads this file on every pull: changing it restarts nothing.\n\
                 server = \"http://registry.lab:5000\"\n\
                 capabilities = [\"pull\", \"resolve\"]\n\
                 \n\
                 # The server itself as a host too: over plain http, so that no pull tries https first;\n\
                 # without mirrors, because containerd 1.x refuses a hosts.toml with no host table.\n\
                 [host.\"http://registry.lab:5000\"]\n\
                 \x20 capabilities = [\"pull\", \"resolve\"]\n"
            );
            let secure = &files[&format!("{d}/secure.lab/hosts.toml")];
            assert!(
                secure.contains(&format!(
                    "server = \"https://secure.lab\"\ncapabilities = [\"pull\", \"resolve\"]\nca = \"{d}/secure.lab/server-ca.crt\"\nclient = [[\"{d}/secure.lab/server.cert\", \"{d}/secure.lab/server.key\"]]\nskip_verify = true\n"
                )),
                "{secure}"
            );
        }
        // Modes and secrecy: the hosts.toml with a credential and the client key.
        let facts = lab_facts();
        let (_, desired) = files_of(&inv, "w1", &facts, None);
        let file = |path: &str| {
            desired
                .iter()
                .find_map(|x| match x {
                    Desired::File(f) if f.path == path => Some(f.clone()),
                    _ => None,
                })
                .unwrap_or_else(|| panic!("no {path}"))
        };
        let d = "/etc/containerd/certs.d";
        for (path, mode, secret) in [
            (format!("{d}/docker.io/hosts.toml"), 0o600, true),
            (format!("{d}/registry.lab:5000/hosts.toml"), 0o644, false),
            (format!("{d}/secure.lab/hosts.toml"), 0o644, false),
            (format!("{d}/secure.lab/server.key"), 0o600, true),
            (format!("{d}/secure.lab/server.cert"), 0o644, false),
        ] {
            let f = file(&path);
            assert_eq!((f.mode, f.secret), (mode, secret), "{path}");
        }
        for dir in ["docker.io", "registry.lab:5000", "secure.lab"] {
            assert!(desired.iter().any(|x| matches!(x, Desired::Directory { path, .. } if *path == format!("{d}/{dir}"))), "{dir}");
        }
        // Folders of registries no longer in the inventory go (those capstan wrote only).
        let prune = desired
            .iter()
            .find_map(|x| match x {
                Desired::Command {
                    name, run, unless, ..
                } if name == "remove-registries-not-in-the-inventory" => {
                    Some((run.clone(), unless.clone().unwrap_or_default()))
                }
                _ => None,
            })
            .unwrap();
        assert!(prune.0.starts_with("keep='docker.io registry.lab:5000 secure.lab'; for f in /etc/containerd/certs.d/*/hosts.toml; do"), "{}", prune.0);
        assert!(prune.1.contains("test -z"), "{}", prune.1);
    }

    /// containerd 1.x hosts keep config format 2 and its plugin ids.
    #[test]
    fn containerd_1_hosts_get_config_format_2() {
        // (The oldest 1.6 and 1.7 patches v1.32 runs on.)
        for v in ["v1.6.36", "1.7.24"] {
            let files = lab_host_files(&lab_inventory_with(&format!(
                "versions: {{containerd: {v}}}"
            )));
            let cfg = &files["/etc/containerd/config.toml"];
            for want in [
                "\nversion = 2\n",
                "[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"registry.k8s.io/pause:3.10\"\n",
                "  restrict_oom_score_adj = true\n",
                "[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  # Registry hosts (mirrors, CAs, auth) as hosts.toml files, one folder per registry.\n  config_path = \"/etc/containerd/certs.d\"\n",
                "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n  SystemdCgroup = true\n",
            ] {
                assert!(cfg.contains(want), "{v}: `{want}` not in {cfg}");
            }
            assert!(!cfg.contains("cri.v1."), "no 2.x plugin ids: {v}: {cfg}");
        }
    }

    #[test]
    fn containerd_config_version_follows_the_major_version() {
        for (v, want) in [
            ("v1.6.20", 2),
            ("1.7.29", 2),
            ("v2.0.0", 3),
            ("v2.1.9", 3),
            ("2.1.5", 3),
            ("v3.0.0", 3),
            ("", 2),
        ] {
            assert_eq!(containerd_config_version(v), want, "{v}");
        }
        let inv = lab_inventory_with("versions: {containerd: v1.7.29}");
        assert_eq!(Computed::new(&inv).unwrap().containerd_config_version, 2);
        let inv = lab_inventory_with("versions: {containerd: v2.1.9}");
        assert_eq!(Computed::new(&inv).unwrap().containerd_config_version, 3);
    }

    /// Three stacked control planes, a worker, a load balancer, custom leader election.
    fn ha_inventory() -> Inventory {
        let text = "\
cluster:
  name: ha
  kubernetes_version: v1.32.4
  service_subnet: 10.96.0.0/12
  pod_subnet: 10.244.0.0/16
  dns_domain: k8s.example
  leader_election: {lease_duration: 30s, renew_deadline: 20s, retry_period: 4s}
hosts:
  - {name: lb1, address: 192.0.2.10, roles: [load-balancer]}
  - {name: cp1, address: 192.0.2.11, internal_address: 10.0.0.11, roles: [control-plane]}
  - {name: cp2, address: 192.0.2.12, internal_address: 10.0.0.12, roles: [control-plane]}
  - {name: cp3, address: 192.0.2.13, internal_address: 10.0.0.13, roles: [control-plane]}
  - {name: w1, address: 192.0.2.21, internal_address: 10.0.0.21, roles: [worker]}
";
        crate::inventory::load_str(
            text,
            std::path::Path::new("/nonexistent/cluster.yaml"),
            None,
        )
        .unwrap()
    }

    const CLUSTER_ROLES: [&str; 6] = [
        "common",
        "containerd",
        "etcd",
        "kubelet",
        "control-plane",
        "addons",
    ];

    /// The files the cluster roles give `host` (by path), rendered with `facts` and the
    /// workflow's per-host `overrides` of role vars.
    fn files_of(
        inventory: &Inventory,
        host: &str,
        facts: &Facts,
        overrides: Option<Value>,
    ) -> (BTreeMap<String, String>, Vec<Desired>) {
        let lib = Library::builtin();
        let roles: Vec<role::Role> = CLUSTER_ROLES
            .iter()
            .map(|n| role::load(&lib, n).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        let renderer = Renderer::new(&lib);
        let computed = Computed::new(inventory).unwrap();
        let host = inventory.host(host).unwrap();
        let mut ctx = context(inventory, host, Some(facts), &computed);
        if let Some(o) = overrides {
            ctx = minijinja::context! { var_overrides => o, ..ctx };
        }
        // Only the roles whose hosts and `when` take this host, as the engine selects them.
        let selected: Vec<&role::Role> = roles
            .iter()
            .filter(|r| {
                r.spec.hosts.iter().any(|h| host.has_role(*h))
                    && r.spec.when.as_deref().is_none_or(|w| {
                        renderer
                            .condition(&r.name, w, &context(inventory, host, None, &computed))
                            .unwrap()
                    })
            })
            .collect();
        let desired =
            desired::build(&selected, &renderer, &ctx, &FakeArtifacts, Mode::Full).unwrap();
        let files = desired
            .iter()
            .filter_map(|d| match d {
                Desired::File(f) => match &f.content {
                    Content::Inline(b) => {
                        Some((f.path.clone(), String::from_utf8(b.clone()).unwrap()))
                    }
                    Content::Cached(_) => None,
                },
                _ => None,
            })
            .collect();
        (files, desired)
    }

    fn lab_facts() -> Facts {
        crate::facts::parse(include_str!(
            "../../tests/fixtures/facts/debian12-amd64-lab-systemd.txt"
        ))
        .unwrap()
    }

    fn yaml(text: &str) -> serde_yaml::Value {
        serde_yaml::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    /// A static pod's command line (`command` of its only container).
    fn command_of(manifest: &str) -> Vec<String> {
        let pod = yaml(manifest);
        assert_eq!(pod["kind"].as_str(), Some("Pod"), "{manifest}");
        pod["spec"]["containers"][0]["command"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect()
    }

    fn flag<'a>(cmd: &'a [String], name: &str) -> Option<&'a str> {
        let prefix = format!("--{name}=");
        cmd.iter().find_map(|a| a.strip_prefix(&prefix))
    }

    #[test]
    fn computed_values() {
        let inv = ha_inventory();
        let c = Computed::new(&inv).unwrap();
        assert_eq!(c.cluster_dns, "10.96.0.10");
        assert_eq!(c.kubernetes_service_ip, "10.96.0.1");
        assert_eq!(c.first_control_plane, "cp1");
        assert_eq!(c.apiserver_port, 6443);
        assert_eq!(
            c.etcd_servers,
            "https://10.0.0.11:2379,https://10.0.0.12:2379,https://10.0.0.13:2379"
        );
        assert_eq!(
            c.etcd_initial_cluster,
            "cp1=https://10.0.0.11:2380,cp2=https://10.0.0.12:2380,cp3=https://10.0.0.13:2380"
        );
        assert_eq!(c.api_server_url, "https://192.0.2.10:6443");
        assert_eq!(
            c.service_account_issuer,
            "https://kubernetes.default.svc.k8s.example"
        );
        let net: ipnet::IpNet = "fd00:10:96::/112".parse().unwrap();
        assert_eq!(nth_address(&net, 10).unwrap().to_string(), "fd00:10:96::a");
        let small: ipnet::IpNet = "10.0.0.0/29".parse().unwrap();
        assert_eq!(nth_address(&small, 10), None);
        assert_eq!(host_port("fd00::1", 2379), "[fd00::1]:2379");
        // A single control plane serves the endpoint's own port.
        let single = crate::inventory::load_str(
            "cluster: {name: s, kubernetes_version: v1.32.4, api_endpoint: {mode: single, port: 8443}}\nhosts:\n  - {name: cp1, address: 10.0.0.1, roles: [control-plane]}\n",
            std::path::Path::new("/nonexistent/cluster.yaml"),
            None,
        )
        .unwrap();
        assert_eq!(Computed::new(&single).unwrap().apiserver_port, 8443);
    }

    #[test]
    fn control_plane_manifests_carry_kubeadms_flags() {
        let inv = ha_inventory();
        let (files, _) = files_of(&inv, "cp2", &lab_facts(), None);
        let api = command_of(&files["/etc/kubernetes/manifests/kube-apiserver.yaml"]);
        assert_eq!(api[0], "kube-apiserver");
        for (name, want) in [
            ("advertise-address", "10.0.0.12"),
            ("authorization-mode", "Node,RBAC"),
            (
                "etcd-servers",
                "https://10.0.0.11:2379,https://10.0.0.12:2379,https://10.0.0.13:2379",
            ),
            ("etcd-cafile", "/etc/kubernetes/pki/etcd/ca.crt"),
            (
                "etcd-certfile",
                "/etc/kubernetes/pki/apiserver-etcd-client.crt",
            ),
            (
                "etcd-keyfile",
                "/etc/kubernetes/pki/apiserver-etcd-client.key",
            ),
            ("client-ca-file", "/etc/kubernetes/pki/ca.crt"),
            ("tls-cert-file", "/etc/kubernetes/pki/apiserver.crt"),
            ("tls-private-key-file", "/etc/kubernetes/pki/apiserver.key"),
            ("service-account-key-file", "/etc/kubernetes/pki/sa.pub"),
            (
                "service-account-signing-key-file",
                "/etc/kubernetes/pki/sa.key",
            ),
            (
                "service-account-issuer",
                "https://kubernetes.default.svc.k8s.example",
            ),
            ("service-cluster-ip-range", "10.96.0.0/12"),
            ("secure-port", "6443"),
            (
                "requestheader-client-ca-file",
                "/etc/kubernetes/pki/front-proxy-ca.crt",
            ),
            (
                "proxy-client-cert-file",
                "/etc/kubernetes/pki/front-proxy-client.crt",
            ),
            ("requestheader-allowed-names", "front-proxy-client"),
        ] {
            assert_eq!(flag(&api, name), Some(want), "--{name} in {api:?}");
        }
        // Behind an external LB the API server binds every address.
        assert_eq!(flag(&api, "bind-address"), None);
        let pod = yaml(&files["/etc/kubernetes/manifests/kube-apiserver.yaml"]);
        assert_eq!(
            pod["spec"]["containers"][0]["image"].as_str(),
            Some("registry.k8s.io/kube-apiserver:v1.32.4")
        );
        assert_eq!(pod["spec"]["hostNetwork"].as_bool(), Some(true));
        assert_eq!(
            pod["spec"]["containers"][0]["livenessProbe"]["httpGet"]["host"].as_str(),
            Some("10.0.0.12")
        );
        let mounts: Vec<&str> = pod["spec"]["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|v| v["hostPath"]["path"].as_str().unwrap())
            .collect();
        assert!(mounts.contains(&"/etc/kubernetes/pki"), "{mounts:?}");

        let cm = command_of(&files["/etc/kubernetes/manifests/kube-controller-manager.yaml"]);
        let sched = command_of(&files["/etc/kubernetes/manifests/kube-scheduler.yaml"]);
        for (cmd, conf) in [
            (&cm, "/etc/kubernetes/controller-manager.conf"),
            (&sched, "/etc/kubernetes/scheduler.conf"),
        ] {
            assert_eq!(flag(cmd, "kubeconfig"), Some(conf), "{cmd:?}");
            assert_eq!(flag(cmd, "authentication-kubeconfig"), Some(conf));
            assert_eq!(flag(cmd, "leader-elect"), Some("true"));
            assert_eq!(flag(cmd, "leader-elect-lease-duration"), Some("30s"));
            assert_eq!(flag(cmd, "leader-elect-renew-deadline"), Some("20s"));
            assert_eq!(flag(cmd, "leader-elect-retry-period"), Some("4s"));
            assert_eq!(flag(cmd, "bind-address"), Some("127.0.0.1"));
        }
        assert_eq!(flag(&cm, "cluster-cidr"), Some("10.244.0.0/16"));
        assert_eq!(
            flag(&cm, "service-account-private-key-file"),
            Some("/etc/kubernetes/pki/sa.key")
        );
        assert_eq!(flag(&cm, "cluster-name"), Some("ha"));
    }

    /// Every flag the manifests pass is one the stand-ins (which take upstream's names and
    /// refuse unknown ones) accept: the flag lists are shared text, so compare names.
    #[test]
    fn manifest_flags_are_known_to_the_standins() {
        let inv = ha_inventory();
        let (files, _) = files_of(&inv, "cp1", &lab_facts(), None);
        let apiserver = include_str!("../../tests/standins/src/apiserver.rs");
        let controllers = include_str!("../../tests/standins/src/controllers.rs");
        for (manifest, source) in [
            ("kube-apiserver", apiserver),
            ("kube-controller-manager", controllers),
            ("kube-scheduler", controllers),
        ] {
            let cmd = command_of(&files[&format!("/etc/kubernetes/manifests/{manifest}.yaml")]);
            for arg in &cmd[1..] {
                let name = arg
                    .strip_prefix("--")
                    .and_then(|a| a.split('=').next())
                    .unwrap();
                assert!(
                    source.contains(&format!("(\"{name}\", ")),
                    "{manifest} --{name} is not in the stand-in's FLAGS"
                );
            }
        }
    }

    #[test]
    fn kubelet_config_follows_role_and_facts() {
        let inv = ha_inventory();
        let (cp, _) = files_of(&inv, "cp1", &lab_facts(), None);
        let cfg = yaml(&cp["/var/lib/kubelet/config.yaml"]);
        assert_eq!(cfg["kind"].as_str(), Some("KubeletConfiguration"));
        assert_eq!(cfg["cgroupDriver"].as_str(), Some("systemd"));
        assert_eq!(cfg["clusterDNS"][0].as_str(), Some("10.96.0.10"));
        assert_eq!(cfg["clusterDomain"].as_str(), Some("k8s.example"));
        assert_eq!(cfg["rotateCertificates"].as_bool(), Some(false));
        assert_eq!(cfg["serverTLSBootstrap"].as_bool(), Some(false));
        assert_eq!(
            cfg["staticPodPath"].as_str(),
            Some("/etc/kubernetes/manifests")
        );
        assert_eq!(
            cfg["tlsCertFile"].as_str(),
            Some("/var/lib/kubelet/pki/kubelet.crt")
        );
        assert_eq!(
            cfg["authentication"]["x509"]["clientCAFile"].as_str(),
            Some("/etc/kubernetes/pki/ca.crt")
        );
        // The lab host runs cgroup v1.
        assert_eq!(cfg["failCgroupV1"].as_bool(), Some(false));
        let unit = &cp["/etc/systemd/system/kubelet.service"];
        for f in [
            "--kubeconfig=/etc/kubernetes/kubelet.conf",
            "--config=/var/lib/kubelet/config.yaml",
            "--container-runtime-endpoint=unix:///run/containerd/containerd.sock",
            "--node-ip=10.0.0.11",
            "--hostname-override=cp1",
        ] {
            assert!(unit.contains(f), "{f} in {unit}");
        }
        // A worker on cgroup v2: no static pods, no cgroup v1 exception.
        let v2 = crate::facts::parse(include_str!(
            "../../tests/fixtures/facts/rocky9-amd64-cgroupv2-cluster.txt"
        ))
        .unwrap();
        let (w, _) = files_of(&inv, "w1", &v2, None);
        let cfg = yaml(&w["/var/lib/kubelet/config.yaml"]);
        assert!(cfg.get("staticPodPath").is_none(), "{cfg:?}");
        assert!(cfg.get("failCgroupV1").is_none(), "{cfg:?}");
        assert!(!w.contains_key("/etc/etcd/etcd.env"));
        // Every standard CNI plugin from the artifact, on every node.
        let (_, desired) = files_of(&inv, "w1", &v2, None);
        for plugin in crate::artifacts::catalog::CNI_PLUGINS {
            let path = format!("/opt/cni/bin/{plugin}");
            assert!(
                desired.iter().any(|d| matches!(d, Desired::File(f)
                    if f.path == path && f.content == Content::Cached(PathBuf::from(format!("/cache/cni-plugins/{plugin}"))))),
                "{path}"
            );
        }
        assert!(!w.contains_key("/etc/kubernetes/manifests/kube-apiserver.yaml"));
    }

    #[test]
    fn etcd_member_and_its_initial_cluster() {
        let inv = ha_inventory();
        let (files, desired) = files_of(&inv, "cp3", &lab_facts(), None);
        let env = &files["/etc/etcd/etcd.env"];
        for line in [
            "ETCD_NAME=cp3",
            "ETCD_LISTEN_CLIENT_URLS=https://127.0.0.1:2379,https://10.0.0.13:2379",
            "ETCD_ADVERTISE_CLIENT_URLS=https://10.0.0.13:2379",
            "ETCD_INITIAL_ADVERTISE_PEER_URLS=https://10.0.0.13:2380",
            "ETCD_CERT_FILE=/etc/kubernetes/pki/etcd/server.crt",
            "ETCD_PEER_CERT_FILE=/etc/kubernetes/pki/etcd/peer.crt",
            "ETCD_CLIENT_CERT_AUTH=true",
        ] {
            assert!(env.lines().any(|l| l == line), "{line} in {env}");
        }
        assert!(!env.contains("INITIAL_CLUSTER="), "{env}");
        let initial = &files["/etc/etcd/initial-cluster.env"];
        assert!(initial.contains(
            "ETCD_INITIAL_CLUSTER=cp1=https://10.0.0.11:2380,cp2=https://10.0.0.12:2380,cp3=https://10.0.0.13:2380\n"
        ), "{initial}");
        assert!(initial.contains("ETCD_INITIAL_CLUSTER_STATE=new\n"));
        let create_only: Vec<&str> = desired
            .iter()
            .filter_map(|d| match d {
                Desired::File(f) if f.create_only => Some(f.path.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(create_only, ["/etc/etcd/initial-cluster.env"]);
        let unit = &files["/etc/systemd/system/etcd.service"];
        assert!(unit.contains("EnvironmentFile=-/etc/etcd/initial-cluster.env"));
        let data_dir = desired.iter().find_map(|d| match d {
            Desired::Directory { path, mode, .. } if path == "/var/lib/etcd" => Some(*mode),
            _ => None,
        });
        assert_eq!(data_dir, Some(0o700));
        let restart_on = desired
            .iter()
            .find_map(|d| match d {
                Desired::Unit {
                    name, restart_on, ..
                } if name == "etcd.service" => Some(restart_on.clone()),
                _ => None,
            })
            .unwrap();
        for p in [
            "/etc/etcd/etcd.env",
            "/usr/local/bin/etcd",
            "/etc/kubernetes/pki/etcd/server.crt",
            "/etc/kubernetes/pki/etcd/peer.key",
        ] {
            assert!(restart_on.iter().any(|r| r == p), "{p} in {restart_on:?}");
        }
        // A joining member: the workflow's overrides.
        let overrides = minijinja::context! {
            initial_cluster_state => "existing",
            initial_cluster => "cp1=https://10.0.0.11:2380,cp3=https://10.0.0.13:2380",
        };
        let (files, _) = files_of(&inv, "cp3", &lab_facts(), Some(overrides));
        let initial = &files["/etc/etcd/initial-cluster.env"];
        assert!(
            initial.contains(
                "ETCD_INITIAL_CLUSTER=cp1=https://10.0.0.11:2380,cp3=https://10.0.0.13:2380\n"
            ),
            "{initial}"
        );
        assert!(initial.contains("ETCD_INITIAL_CLUSTER_STATE=existing\n"));
    }

    #[test]
    fn external_etcd_members_are_the_etcd_hosts() {
        let text = "cluster: {name: x, kubernetes_version: v1.32.4, etcd: {topology: external}}\nhosts:\n  - {name: cp1, address: 10.0.0.1, roles: [control-plane]}\n  - {name: e1, address: 10.0.0.5, roles: [etcd]}\n";
        let inv = crate::inventory::load_str(
            text,
            std::path::Path::new("/nonexistent/cluster.yaml"),
            None,
        )
        .unwrap();
        let (cp, _) = files_of(&inv, "cp1", &lab_facts(), None);
        assert!(!cp.contains_key("/etc/etcd/etcd.env"));
        let api = command_of(&cp["/etc/kubernetes/manifests/kube-apiserver.yaml"]);
        assert_eq!(flag(&api, "etcd-servers"), Some("https://10.0.0.5:2379"));
        let (e, _) = files_of(&inv, "e1", &lab_facts(), None);
        assert!(e["/etc/etcd/etcd.env"].contains("ETCD_NAME=e1\n"));
        assert!(!e.contains_key("/var/lib/kubelet/config.yaml"));
    }

    #[test]
    fn addons_on_the_first_control_plane_only() {
        let inv = ha_inventory();
        let (cp2, _) = files_of(&inv, "cp2", &lab_facts(), None);
        assert!(!cp2.keys().any(|p| p.starts_with("/etc/kubernetes/addons/")));
        let (files, desired) = files_of(&inv, "cp1", &lab_facts(), None);
        let docs = |path: &str| -> Vec<serde_yaml::Value> {
            let text = &files[path];
            serde_yaml::Deserializer::from_str(text)
                .map(|d| {
                    serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{path}: {e}"))
                })
                .collect()
        };
        let find = |docs: &[serde_yaml::Value], kind: &str, name: &str| {
            docs.iter()
                .find(|d| {
                    d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name)
                })
                .unwrap_or_else(|| panic!("no {kind} {name}"))
                .clone()
        };
        let rbac = docs("/etc/kubernetes/addons/00-node-rbac.yaml");
        let admins = yaml(&files["/etc/kubernetes/cluster-admins.yaml"]);
        assert_eq!(admins["roleRef"]["name"].as_str(), Some("cluster-admin"));
        assert_eq!(
            admins["subjects"][0]["name"].as_str(),
            Some(crate::pki::spec::CLUSTER_ADMINS_GROUP)
        );
        let node = find(&rbac, "ClusterRoleBinding", "capstan:system:node");
        assert_eq!(node["roleRef"]["name"].as_str(), Some("system:node"));
        assert_eq!(node["subjects"][0]["name"].as_str(), Some("system:nodes"));

        let proxy = docs("/etc/kubernetes/addons/10-kube-proxy.yaml");
        let cfg = find(&proxy, "ConfigMap", "kube-proxy");
        let conf = yaml(cfg["data"]["config.conf"].as_str().unwrap());
        assert_eq!(conf["kind"].as_str(), Some("KubeProxyConfiguration"));
        assert_eq!(conf["clusterCIDR"].as_str(), Some("10.244.0.0/16"));
        let kc = yaml(cfg["data"]["kubeconfig.conf"].as_str().unwrap());
        assert_eq!(
            kc["clusters"][0]["cluster"]["server"].as_str(),
            Some("https://192.0.2.10:6443")
        );
        let ds = find(&proxy, "DaemonSet", "kube-proxy");
        assert_eq!(
            ds["spec"]["template"]["spec"]["containers"][0]["image"].as_str(),
            Some("registry.k8s.io/kube-proxy:v1.32.4")
        );
        find(&proxy, "ServiceAccount", "kube-proxy");

        let dns = docs("/etc/kubernetes/addons/20-coredns.yaml");
        let svc = find(&dns, "Service", "kube-dns");
        assert_eq!(svc["spec"]["clusterIP"].as_str(), Some("10.96.0.10"));
        let corefile = find(&dns, "ConfigMap", "coredns")["data"]["Corefile"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            corefile.contains("kubernetes k8s.example in-addr.arpa ip6.arpa"),
            "{corefile}"
        );
        find(&dns, "Deployment", "coredns");
        find(&dns, "ClusterRoleBinding", "system:coredns");

        let flannel = docs("/etc/kubernetes/addons/30-flannel.yaml");
        find(&flannel, "Namespace", "kube-flannel");
        let net: serde_json::Value = serde_json::from_str(
            find(&flannel, "ConfigMap", "kube-flannel-cfg")["data"]["net-conf.json"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(net["Network"], "10.244.0.0/16");
        find(&flannel, "DaemonSet", "kube-flannel-ds");

        let (run, diff, on_change) = desired
            .iter()
            .find_map(|d| match d {
                Desired::Command {
                    name,
                    run,
                    diff,
                    on_change,
                    ..
                } if name == "apply-addons" => Some((run, diff, on_change)),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            run,
            "/usr/local/bin/kubectl --kubeconfig /etc/kubernetes/admin.conf apply -f /etc/kubernetes/addons/"
        );
        // Live objects against the manifests: drift by hand is a change with its diff.
        assert_eq!(
            diff.as_deref(),
            Some(
                "/usr/local/bin/kubectl --kubeconfig /etc/kubernetes/admin.conf diff -f /etc/kubernetes/addons/"
            )
        );
        let addon_files: Vec<&String> = files
            .keys()
            .filter(|p| p.starts_with("/etc/kubernetes/addons/"))
            .collect();
        assert_eq!(on_change.iter().collect::<Vec<_>>(), addon_files);
    }

    /// The kubelet's resolvConf, CoreDNS's forward and kube-proxy's conntrack follow the
    /// facts: a container host with Docker's resolver (the lab), an Ubuntu VM with
    /// systemd-resolved, and a site that names its nameservers.
    #[test]
    fn dns_and_conntrack_follow_the_hosts() {
        // config.conf -> the DaemonSet's config hash: one hash per configuration.
        let hashes = std::cell::RefCell::new(std::collections::BTreeMap::new());
        let render = |inv: &Inventory, facts: &Facts| {
            let (files, _) = files_of(inv, "cp1", facts, None);
            let kubelet = yaml(&files["/var/lib/kubelet/config.yaml"]);
            let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(
                &files["/etc/kubernetes/addons/10-kube-proxy.yaml"],
            )
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
            let cm = docs
                .iter()
                .find(|d| d["kind"].as_str() == Some("ConfigMap"))
                .unwrap();
            let proxy = yaml(cm["data"]["config.conf"].as_str().unwrap());
            let ds = docs
                .iter()
                .find(|d| d["kind"].as_str() == Some("DaemonSet"))
                .unwrap();
            let hash = ds["spec"]["template"]["metadata"]["annotations"]["capstan.io/config-hash"]
                .as_str()
                .unwrap()
                .to_string();
            assert_eq!(hash.len(), 16);
            hashes.borrow_mut().insert(
                cm["data"]["config.conf"].as_str().unwrap().to_string(),
                hash,
            );
            let coredns = files["/etc/kubernetes/addons/20-coredns.yaml"].clone();
            (
                kubelet["resolvConf"].as_str().map(str::to_string),
                proxy["conntrack"]["maxPerCore"].as_u64(),
                proxy["conntrack"]["tcpEstablishedTimeout"]
                    .as_str()
                    .map(str::to_string),
                coredns.contains("forward . /etc/resolv.conf"),
                files["/etc/kubernetes/resolv.conf"].clone(),
            )
        };
        let inv = ha_inventory();
        // The lab: a Docker container whose resolv.conf names Docker's 127.0.0.11.
        let mut lab = lab_facts();
        lab.dns = crate::facts::Dns::from_lines(["host 127.0.0.11"]);
        assert_eq!(lab.container.as_deref(), Some("docker"));
        let (resolv, conntrack, timeouts, forward, file) = render(&inv, &lab);
        assert_eq!(resolv.as_deref(), Some(""));
        assert_eq!(conntrack, Some(0));
        assert_eq!(timeouts.as_deref(), Some("0s"), "as kind sets it");
        assert!(!forward, "no upstream anywhere: CoreDNS must not forward");
        assert!(!file.lines().any(|l| l.starts_with("nameserver")), "{file}");

        // Ubuntu: systemd-resolved's stub in /etc/resolv.conf, real servers upstream; a VM.
        let mut ubuntu = lab_facts();
        ubuntu.container = None;
        ubuntu.dns = crate::facts::Dns::from_lines([
            "host 127.0.0.53",
            "resolved_running",
            "resolved_file",
            "resolved 10.0.2.3",
        ]);
        let (resolv, conntrack, timeouts, forward, _) = render(&inv, &ubuntu);
        assert_eq!(resolv.as_deref(), Some("/run/systemd/resolve/resolv.conf"));
        assert_eq!(conntrack, None, "a VM keeps kube-proxy's default");
        assert_eq!(timeouts, None);
        assert!(forward);

        // A host file without loopback entries is used as it is.
        let mut plain = ubuntu.clone();
        plain.dns = crate::facts::Dns::from_lines(["host 10.0.2.3", "host 10.0.2.4"]);
        assert_eq!(render(&inv, &plain).0.as_deref(), Some("/etc/resolv.conf"));

        // The inventory names the nameservers and kube-proxy's setting.
        let with = crate::inventory::load_str(
            "cluster:\n  name: ha\n  kubernetes_version: v1.32.4\n  dns: {upstream: [192.0.2.53, 192.0.2.54]}\n  kube_proxy: {conntrack_max_per_core: 0}\n\
             hosts:\n  - {name: lb1, address: 192.0.2.10, roles: [load-balancer]}\n  - {name: cp1, address: 192.0.2.11, roles: [control-plane]}\n",
            std::path::Path::new("/nonexistent/cluster.yaml"),
            None,
        )
        .unwrap();
        let (resolv, conntrack, _, forward, file) = render(&with, &lab);
        assert_eq!(resolv.as_deref(), Some("/etc/kubernetes/resolv.conf"));
        assert!(
            file.contains("nameserver 192.0.2.53\nnameserver 192.0.2.54\n"),
            "{file}"
        );
        assert!(forward);
        assert_eq!(conntrack, Some(0));
        assert_eq!(
            render(&with, &ubuntu).1,
            Some(0),
            "set explicitly, also on a VM"
        );
        // Each kube-proxy configuration rolls the DaemonSet with its own hash.
        let hashes = hashes.into_inner();
        let distinct: std::collections::BTreeSet<&String> = hashes.values().collect();
        assert!(hashes.len() >= 3, "{hashes:?}");
        assert_eq!(distinct.len(), hashes.len(), "{hashes:?}");
    }

    #[test]
    fn local_proxy_mode_frees_loopback_for_the_proxy() {
        let text = "cluster: {name: x, kubernetes_version: v1.32.4, api_endpoint: {mode: local-proxy}}\nhosts:\n  - {name: cp1, address: 10.0.0.1, roles: [control-plane]}\n";
        let inv = crate::inventory::load_str(
            text,
            std::path::Path::new("/nonexistent/cluster.yaml"),
            None,
        )
        .unwrap();
        let (files, _) = files_of(&inv, "cp1", &lab_facts(), None);
        let api = command_of(&files["/etc/kubernetes/manifests/kube-apiserver.yaml"]);
        assert_eq!(flag(&api, "bind-address"), Some("10.0.0.1"));
    }

    const SNAP_TIMER: &str = "/etc/systemd/system/capstan-etcd-snapshot.timer";
    const SNAP_SERVICE: &str = "/etc/systemd/system/capstan-etcd-snapshot.service";
    const SNAP_SCRIPT: &str = "/usr/local/sbin/capstan-etcd-snapshot";

    fn snapshot_inventory(etcd: &str) -> crate::inventory::Inventory {
        crate::inventory::load_str(
            &format!("cluster: {{name: t, kubernetes_version: v1.32.4, etcd: {etcd}}}\nhosts:\n  - {{name: cp1, address: 10.0.0.1, roles: [control-plane]}}\n  - {{name: w1, address: 10.0.0.2, roles: [worker]}}\n"),
            std::path::Path::new("/nonexistent/cluster.yaml"),
            None,
        )
        .unwrap()
    }

    #[test]
    fn the_schedule_becomes_a_timer_on_members_only() {
        let inv = snapshot_inventory(
            "{snapshots: {schedule: \"15 3 * * sun\", keep: 4, dir: /srv/snaps}}",
        );
        let (files, desired) = files_of(&inv, "cp1", &lab_facts(), None);
        let timer = &files[SNAP_TIMER];
        assert!(timer.contains("OnCalendar=Sun *-*-* 03:15:00\n"), "{timer}");
        assert!(timer.contains("WantedBy=timers.target"), "{timer}");
        let service = &files[SNAP_SERVICE];
        assert!(service.contains("Type=oneshot"), "{service}");
        assert!(
            service.contains("EnvironmentFile=/etc/etcd/etcdctl.env"),
            "{service}"
        );
        assert!(
            service.contains(&format!("ExecStart={SNAP_SCRIPT}")),
            "{service}"
        );
        let script = &files[SNAP_SCRIPT];
        assert!(script.contains("dir=/srv/snaps\nkeep=4\n"), "{script}");
        assert!(script.contains("name=etcd-t-$(date -u"), "{script}");
        assert!(
            desired.iter().any(|d| matches!(d, Desired::Unit { name, enabled: true, .. } if name == "capstan-etcd-snapshot.timer")),
            "{desired:?}"
        );
        assert!(
            !desired.iter().any(|d| matches!(d, Desired::Command { name, .. } if name == "remove-etcd-snapshot-timer")),
            "{desired:?}"
        );
        let (worker, _) = files_of(&inv, "w1", &lab_facts(), None);
        assert!(
            !worker.contains_key(SNAP_TIMER),
            "a worker is no etcd member"
        );
    }

    #[test]
    fn without_the_key_only_the_removal_is_there() {
        let (files, desired) = files_of(
            &snapshot_inventory("{topology: stacked}"),
            "cp1",
            &lab_facts(),
            None,
        );
        assert!(
            !files.contains_key(SNAP_TIMER) && !files.contains_key(SNAP_SCRIPT),
            "{files:?}"
        );
        assert!(
            !desired
                .iter()
                .any(|d| matches!(d, Desired::Unit { name, .. } if name.starts_with("capstan-"))),
            "{desired:?}"
        );
        let remove = desired
            .iter()
            .find_map(|d| match d {
                Desired::Command {
                    name, run, unless, ..
                } if name == "remove-etcd-snapshot-timer" => Some((run.clone(), unless.clone())),
                _ => None,
            })
            .expect("the removal command");
        assert!(
            remove
                .0
                .contains("systemctl disable --now capstan-etcd-snapshot.timer"),
            "{remove:?}"
        );
        assert!(
            remove
                .0
                .contains("'^# Managed by capstan (cluster.etcd.snapshots)'"),
            "{remove:?}"
        );
        assert_eq!(
            remove.1.as_deref(),
            Some(format!("[ ! -e {SNAP_TIMER} ]").as_str())
        );
    }
}
