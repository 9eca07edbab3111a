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
}

impl<'a> From<&'a Host> for HostView<'a> {
    fn from(h: &'a Host) -> Self {
        HostView {
            name: &h.name,
            address: &h.address,
            internal_address: &h.internal_address,
            roles: h.roles.iter().map(|r| r.as_str()).collect(),
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
    pub images: catalog::Images,
    /// `address:port` clients use for the API.
    pub api_endpoint: String,
}

impl Computed {
    pub fn new(inventory: &Inventory) -> Result<Computed, crate::artifacts::ArtifactError> {
        let c = &inventory.cluster;
        let images = catalog::images(&c.kubernetes_version, Some(&c.image_repository))?;
        Ok(Computed {
            sandbox_image: images.pause.clone(),
            images,
            api_endpoint: format!("{}:{}", c.api_endpoint.address, c.api_endpoint.port),
        })
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
    let base = minijinja::context! {
        cluster => v(&inventory.cluster),
        host => v(HostView::from(host)),
        hosts => v(hosts),
        versions => v(&inventory.cluster.versions),
        pki => minijinja::context! { dir => PKI_DIR },
        computed => minijinja::context! {
            sandbox_image => &computed.sandbox_image,
            images => v(&computed.images),
            api_endpoint => &computed.api_endpoint,
            etcd_members => v(members),
            lb_backends => v(backends),
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

    fn lab_inventory() -> Inventory {
        let text = "cluster: {name: t, kubernetes_version: v1.32.4}\nhosts:\n  - {name: cp1, address: 10.0.0.1, roles: [control-plane]}\n  - {name: w1, address: 10.0.0.2, roles: [worker]}\n";
        crate::inventory::load_str(
            text,
            std::path::Path::new("/nonexistent/cluster.yaml"),
            None,
        )
        .unwrap()
    }

    /// The shipped roles render for a lab host from a captured probe, twice to the same
    /// bytes, with what containerd on such a host needs.
    #[test]
    fn shipped_roles_render_deterministically() {
        let inventory = lab_inventory();
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
        let computed = Computed::new(&inventory).unwrap();
        let host = &inventory.hosts[1];
        let build = || {
            let ctx = context(&inventory, host, Some(&facts), &computed);
            desired::build(&roles, &renderer, &ctx, &FakeArtifacts, Mode::Full).unwrap()
        };
        let first = build();
        assert_eq!(first, build());
        let files: BTreeMap<&str, &str> = first
            .iter()
            .filter_map(|d| match d {
                Desired::File(f) => match &f.content {
                    Content::Inline(b) => Some((f.path.as_str(), std::str::from_utf8(b).unwrap())),
                    Content::Cached(_) => None,
                },
                _ => None,
            })
            .collect();
        let cfg = files["/etc/containerd/config.toml"];
        assert!(cfg.contains("SystemdCgroup = true"), "{cfg}");
        assert!(
            cfg.contains("sandbox_image = \"registry.k8s.io/pause:3.10\""),
            "{cfg}"
        );
        assert!(
            cfg.contains("restrict_oom_score_adj = true"),
            "a container host: {cfg}"
        );
        assert!(files["/etc/sysctl.d/99-capstan.conf"].contains("net.ipv4.ip_forward = 1"));
        assert!(files["/etc/modules-load.d/capstan.conf"].contains("br_netfilter"));
        // The shape pass names the same things, without contents.
        let ctx = context(&inventory, host, None, &computed);
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
    }
}
