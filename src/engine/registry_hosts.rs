//! What templates see of `cluster.registries`: per registry host its certs.d folder, its
//! endpoints with the paths of their files on the host and their `Authorization` header,
//! and the files to copy there (CA bundles, client certificates and keys). Secrets reach
//! templates only through here, never through `cluster` (where they are not serialized).

use serde::Serialize;

use crate::inventory::{Endpoint, Inventory, Registry};

/// containerd's `config_path` (roles/containerd, templates/containerd/config.toml.j2).
pub(crate) const CERTS_D: &str = "/etc/containerd/certs.d";

#[derive(Debug, Clone, Serialize)]
pub(crate) struct RegistryView {
    /// The folder under certs.d: the registry host.
    dir: String,
    /// Its hosts.toml holds a credential: written 0600, never shown.
    secret: bool,
    server: Option<EndpointView>,
    mirrors: Vec<EndpointView>,
}

#[derive(Debug, Clone, Serialize)]
struct EndpointView {
    url: String,
    plain_http: bool,
    capabilities: Vec<String>,
    ca: Option<String>,
    client: Option<(String, String)>,
    skip_verify: bool,
    authorization: Option<String>,
}

/// A file to place in a registry's folder.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RegistryFile {
    path: String,
    content: String,
    secret: bool,
}

/// The views of every registry of the inventory, and the files they name.
pub(crate) fn views(inventory: &Inventory) -> (Vec<RegistryView>, Vec<RegistryFile>) {
    let mut files = Vec::new();
    let views = inventory
        .cluster
        .registries
        .iter()
        .map(|r| view(r, &mut files))
        .collect();
    (views, files)
}

fn view(r: &Registry, files: &mut Vec<RegistryFile>) -> RegistryView {
    let dir = format!("{CERTS_D}/{}", r.host);
    let mut endpoint = |e: &Endpoint, name: &str| {
        let mut place = |suffix: &str, content: &str, secret: bool| {
            let path = format!("{dir}/{name}{suffix}");
            files.push(RegistryFile {
                path: path.clone(),
                content: content.to_string(),
                secret,
            });
            path
        };
        EndpointView {
            url: e.url.clone(),
            plain_http: e.plain_http(),
            capabilities: e.capabilities.clone(),
            ca: e.ca.as_deref().map(|ca| place("-ca.crt", ca, false)),
            client: e
                .client_cert
                .as_deref()
                .zip(e.client_key.as_ref())
                .map(|(cert, key)| {
                    (
                        place(".cert", cert, false),
                        place(".key", key.expose(), true),
                    )
                }),
            skip_verify: e.skip_verify,
            authorization: e.authorization.as_ref().map(|a| a.expose().to_string()),
        }
    };
    let mirrors = r
        .mirrors
        .iter()
        .enumerate()
        .map(|(i, m)| endpoint(m, &format!("mirror-{}", i + 1)))
        .collect();
    let server = r.server.as_ref().map(|s| endpoint(s, "server"));
    RegistryView {
        dir: r.host.clone(),
        secret: r.has_credentials(),
        server,
        mirrors,
    }
}
