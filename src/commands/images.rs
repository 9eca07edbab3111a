//! `capstan images list`: every image a cluster of the inventory's version (or `--to`) needs,
//! as `kubeadm config images list` prints them, from the sources the roles render the
//! manifests from: the catalog's images of the minor under `image_repository`
//! (control plane, kube-proxy, CoreDNS, pause) and the roles' `*_image` vars (the CNI's).

use std::process::ExitCode;

use serde::Serialize;

use crate::cli::{GlobalArgs, ImagesCommand};
use crate::engine::library::Library;
use crate::engine::role;
use crate::inventory::{Inventory, Version};

#[derive(Debug, Serialize)]
struct ImageList {
    kubernetes_version: String,
    images: Vec<Image>,
}

#[derive(Debug, Serialize)]
struct Image {
    /// What runs it: `kube-apiserver`, `pause`, `flannel_image` (a role var) …
    name: String,
    image: String,
}

pub fn run(global: &GlobalArgs, cmd: &ImagesCommand) -> miette::Result<ExitCode> {
    let ImagesCommand::List(args) = cmd;
    let to = match &args.to {
        Some(text) => Some(Version::parse(text).ok_or_else(|| {
            crate::error::BadInput::new(
                format!("`{text}` is not a Kubernetes version"),
                "write it as vMAJOR.MINOR.PATCH, e.g. v1.36.4",
            )
        })?),
        None => None,
    };
    let inventory = super::load_inventory(global)?;
    let list = list(&inventory, to)?;
    if crate::ui::ui().json {
        crate::ui::emit_json(&list)?;
    } else {
        let text: Vec<&str> = list.images.iter().map(|i| i.image.as_str()).collect();
        crate::ui::emit(&format!("{}\n", text.join("\n")));
    }
    Ok(ExitCode::SUCCESS)
}

fn list(inventory: &Inventory, to: Option<Version>) -> miette::Result<ImageList> {
    let cluster = &inventory.cluster;
    let version = to.unwrap_or(cluster.kubernetes_version);
    let catalog = &cluster.artifacts.catalog;
    if catalog.minor(&version).is_none() {
        let (message, help) = catalog.unknown_minor(&version);
        return Err(crate::error::BadInput::new(message, help).into());
    }
    let images =
        crate::artifacts::catalog::images(catalog, &version, Some(&cluster.image_repository))
            .map_err(miette::Report::new)?;
    // etcd runs from its release binaries as a systemd service: no image.
    let mut out: Vec<Image> = [
        ("kube-apiserver", images.kube_apiserver),
        ("kube-controller-manager", images.kube_controller_manager),
        ("kube-scheduler", images.kube_scheduler),
        ("kube-proxy", images.kube_proxy),
        ("coredns", images.coredns),
        ("pause", images.pause),
    ]
    .into_iter()
    .map(|(name, image)| Image {
        name: name.to_string(),
        image,
    })
    .collect();
    // The roles' own images (flannel's), beside the inventory or built in; an empty var
    // means "the catalog's" (the control plane's upgrade overrides).
    let library = Library::for_inventory(inventory.dir());
    for name in library.role_names() {
        let role = role::load(&library, &name)?;
        for (var, value) in &role.spec.vars {
            if var.ends_with("_image")
                && !value.is_empty()
                && !out.iter().any(|i| i.image == *value)
            {
                out.push(Image {
                    name: var.clone(),
                    image: value.clone(),
                });
            }
        }
    }
    Ok(ImageList {
        kubernetes_version: version.to_string(),
        images: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_image_a_cluster_pulls() {
        let inv = crate::inventory::load_str(
            "cluster: {name: a, kubernetes_version: v1.32.4}\nhosts:\n  - {name: cp1, address: 10.0.0.1, roles: [control-plane]}\n",
            std::path::Path::new("/nonexistent/cluster.yaml"),
            None,
        )
        .unwrap();
        let l = list(&inv, None).unwrap();
        let images: Vec<&str> = l.images.iter().map(|i| i.image.as_str()).collect();
        let computed = crate::engine::context::Computed::new(&inv).unwrap();
        assert_eq!(
            images[..6],
            [
                "registry.k8s.io/kube-apiserver:v1.32.4",
                "registry.k8s.io/kube-controller-manager:v1.32.4",
                "registry.k8s.io/kube-scheduler:v1.32.4",
                "registry.k8s.io/kube-proxy:v1.32.4",
                computed.images.coredns.as_str(),
                computed.sandbox_image.as_str(),
            ]
        );
        assert!(
            images
                .iter()
                .any(|i| i.starts_with("ghcr.io/flannel-io/flannel:")),
            "{images:?}"
        );
        assert!(
            images
                .iter()
                .any(|i| i.starts_with("ghcr.io/flannel-io/flannel-cni-plugin:")),
            "{images:?}"
        );
        assert_eq!(images.len(), 8, "{images:?}");
        let next = list(&inv, Version::parse("v1.33.1")).unwrap();
        assert_eq!(next.kubernetes_version, "v1.33.1");
        assert_eq!(
            next.images[0].image,
            "registry.k8s.io/kube-apiserver:v1.33.1"
        );
        assert!(list(&inv, Version::parse("v1.99.0")).is_err());
    }
}
