//! The inventory a lab writes (`OUT/cluster.yaml`), in DESIGN.md's format.

use std::fmt::Write;

use crate::inventory::Role;

use super::{KEY_FILE, LabHost, LabSpec};

/// Renders the inventory for `hosts`. Deterministic: the same lab gives the same bytes.
pub(crate) fn render(spec: &LabSpec, hosts: &[LabHost]) -> String {
    let control_planes = hosts
        .iter()
        .filter(|h| h.roles.contains(&Role::ControlPlane))
        .count();
    let lb = hosts.iter().find(|h| h.roles.contains(&Role::LoadBalancer));
    let topology = if spec.etcd > 0 { "external" } else { "stacked" };
    let mut s = String::new();
    // Writing into a String cannot fail.
    let _ = writeln!(
        s,
        "# Written by `capstan lab up` for the lab `{name}` (image {image}).\n\
         # The hosts are containers on the internal Docker network {name}-net; root, ops and deploy\n\
         # accept the key {KEY_FILE} beside this file, and .capstan/known_hosts holds their host keys.\n\
         # `capstan lab down --name {name}` removes the lab and these files.",
        name = spec.name,
        image = spec.image,
    );
    let _ = writeln!(s, "cluster:");
    let _ = writeln!(s, "  name: {}", spec.name);
    let _ = writeln!(
        s,
        "  kubernetes_version: {}",
        super::kubernetes_version(spec.mirror.as_deref())
    );
    let _ = writeln!(s, "  etcd:");
    let _ = writeln!(s, "    topology: {topology}");
    let _ = writeln!(s, "  api_endpoint:");
    match lb {
        Some(lb) => {
            let _ = writeln!(s, "    mode: external-lb");
            let _ = writeln!(s, "    address: {}", lb.address);
        }
        None if control_planes == 1 => {
            let _ = writeln!(s, "    mode: single");
        }
        None => {
            let _ = writeln!(s, "    mode: local-proxy");
        }
    }
    if let Some(mirror) = &spec.mirror {
        let _ = writeln!(s, "  artifacts:");
        let _ = writeln!(s, "    mirror: file://{}", mirror.display());
        let _ = writeln!(s, "    checksums: mirror");
        let versions = super::mirror_versions(mirror);
        if !versions.is_empty() {
            let _ = writeln!(s, "  versions:");
            for (key, v) in versions {
                let _ = writeln!(s, "    {key}: {v}");
            }
        }
    }
    let _ = writeln!(s, "ssh:");
    let _ = writeln!(s, "  user: root");
    let _ = writeln!(s, "  identity_file: {KEY_FILE}");
    let _ = writeln!(s, "hosts:");
    for h in hosts {
        let roles: Vec<&str> = h.roles.iter().map(|r| r.as_str()).collect();
        let _ = writeln!(s, "  - name: {}", h.name);
        let _ = writeln!(s, "    address: {}", h.address);
        let _ = writeln!(s, "    roles: [{}]", roles.join(", "));
    }
    s
}

/// The catalog override a lab on `mirror` needs: a test mirror's containerd builds (Debian's)
/// may be older or newer than what a Kubernetes minor is known to run on, and the
/// inventory's validation would refuse them. The override adds each to the lists of the
/// minors that lack it, saying why; `None` when every minor already accepts them all.
pub(crate) fn render_catalog(mirror: &std::path::Path) -> Option<String> {
    use crate::artifacts::catalog::{Component, mirror_releases};
    let held = mirror_releases(mirror, Component::Containerd);
    let catalog = crate::artifacts::Catalog::builtin();
    let mut s = String::new();
    let mut added = std::collections::BTreeSet::new();
    for m in catalog.minors.values() {
        let missing: Vec<_> = held.iter().filter(|v| !m.supports_containerd(v)).collect();
        if missing.is_empty() {
            continue;
        }
        let mut list: Vec<String> = m.containerd.iter().map(ToString::to_string).collect();
        for v in missing {
            list.push(v.to_string());
            added.insert(v.to_string());
        }
        let _ = writeln!(s, "  {}:\n    containerd: [{}]", m.name, list.join(", "));
    }
    if s.is_empty() {
        return None;
    }
    let added: Vec<String> = added.into_iter().collect();
    Some(format!(
        "# Written by `capstan lab up`: the lab's mirror carries containerd {}, which\n\
         # containerd's RELEASES.md does not list for some Kubernetes minors; a lab runs them\n\
         # anyway (a test bed, not a production cluster). Laid over capstan's built-in catalog.\n\
         kubernetes:\n{s}",
        added.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::super::HostAction;
    use super::*;

    /// The override makes the inventory accept the mirror's containerd builds on every minor.
    #[test]
    fn the_catalog_override_admits_the_mirrors_containerd_builds() {
        let mirror = tempfile::tempdir().unwrap();
        for v in ["v1.6.20", "v2.1.9"] {
            std::fs::create_dir_all(
                mirror
                    .path()
                    .join("github.com/containerd/containerd/releases/download")
                    .join(v),
            )
            .unwrap();
        }
        let text = render_catalog(mirror.path()).expect("an override");
        assert!(text.contains("v1.6.20, v2.1.9"), "{text}");
        let path = mirror.path().join("catalog.yaml");
        let c = crate::artifacts::Catalog::from_texts(
            include_str!("../../catalog/catalog.yaml"),
            Some((&text, &path)),
        )
        .unwrap_or_else(|e| panic!("{:?}\n{text}", e.problems));
        for m in c.minors.values() {
            for v in ["v1.6.20", "v2.1.9"] {
                assert!(
                    m.supports_containerd(&crate::inventory::Version::parse(v).unwrap()),
                    "{} {v}",
                    m.name
                );
            }
        }
        // Nothing to add: no override.
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(render_catalog(empty.path()), None);
    }

    fn host(name: &str, last: u8, role: Role) -> LabHost {
        LabHost {
            name: name.into(),
            address: Ipv4Addr::new(172, 30, 1, last),
            roles: vec![role],
            container: format!("t-{name}"),
            system_state: "running".into(),
            action: HostAction::Created,
        }
    }

    fn load(text: &str) -> crate::inventory::Inventory {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(KEY_FILE), "key").unwrap();
        let path = dir.path().join("cluster.yaml");
        std::fs::write(&path, text).unwrap();
        crate::inventory::load(&path).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    #[test]
    fn one_control_plane_is_a_single_endpoint_and_loads() {
        let spec = LabSpec {
            workers: 1,
            ..LabSpec::new("demo")
        };
        let hosts = [
            host("cp1", 1, Role::ControlPlane),
            host("w1", 2, Role::Worker),
        ];
        let text = render(&spec, &hosts);
        assert!(text.contains("    mode: single\n"), "{text}");
        assert!(text.contains("  - name: w1\n    address: 172.30.1.2\n    roles: [worker]\n"));
        let inv = load(&text);
        assert_eq!(inv.cluster.name, "demo");
        assert_eq!(inv.hosts.len(), 2);
        assert_eq!(render(&spec, &hosts), text);
    }

    #[test]
    fn load_balancer_and_external_etcd() {
        let spec = LabSpec {
            control_planes: 3,
            etcd: 3,
            load_balancers: 1,
            ..LabSpec::new("big")
        };
        let mut hosts = vec![];
        for (i, n) in ["cp1", "cp2", "cp3"].iter().enumerate() {
            hosts.push(host(n, 10 + u8::try_from(i).unwrap(), Role::ControlPlane));
        }
        for (i, n) in ["etcd1", "etcd2", "etcd3"].iter().enumerate() {
            hosts.push(host(n, 20 + u8::try_from(i).unwrap(), Role::Etcd));
        }
        hosts.push(host("lb1", 30, Role::LoadBalancer));
        let text = render(&spec, &hosts);
        assert!(text.contains("    topology: external\n"));
        assert!(
            text.contains("    mode: external-lb\n    address: 172.30.1.30\n"),
            "{text}"
        );
        load(&text);
    }

    #[test]
    fn several_control_planes_without_lb_use_a_local_proxy() {
        let spec = LabSpec {
            control_planes: 3,
            ..LabSpec::new("ha")
        };
        let hosts: Vec<LabHost> = (1..=3)
            .map(|i| host(&format!("cp{i}"), i, Role::ControlPlane))
            .collect();
        let text = render(&spec, &hosts);
        assert!(text.contains("    mode: local-proxy\n"));
        load(&text);
    }
}

#[cfg(test)]
mod sample {
    use std::net::Ipv4Addr;

    use super::super::{HostAction, LabHost, LabSpec};
    use super::render;
    use crate::inventory::Role;

    /// inventory/lab/cluster.yaml is what `capstan lab up --workers 2` writes on a lab network
    /// of 172.18.0.0/16; this keeps the sample in step with the code.
    #[test]
    fn the_committed_sample_is_what_the_lab_writes() {
        let spec = LabSpec {
            workers: 2,
            ..LabSpec::new("capstan")
        };
        let hosts: Vec<LabHost> = [
            ("cp1", [172, 18, 1, 1], Role::ControlPlane),
            ("w1", [172, 18, 2, 1], Role::Worker),
            ("w2", [172, 18, 2, 2], Role::Worker),
        ]
        .into_iter()
        .map(|(name, ip, role)| LabHost {
            name: name.into(),
            address: Ipv4Addr::from(ip),
            roles: vec![role],
            container: format!("capstan-{name}"),
            system_state: "running".into(),
            action: HostAction::Created,
        })
        .collect();
        let sample = include_str!("../../inventory/lab/cluster.yaml");
        assert_eq!(render(&spec, &hosts), sample);
    }
}
