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
