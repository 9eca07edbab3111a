//! `capstan versions`: what the catalog knows, what is supported today, what a new
//! inventory gets, and where each entry came from. Pure: a report from a catalog and a date.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use time::Date;

use crate::artifacts::Catalog;
use crate::artifacts::catalog::Component;
use crate::artifacts::data::Support;

#[derive(Debug, Serialize)]
pub struct Report {
    pub today: String,
    /// What an inventory without `versions:` gets today.
    pub defaults: Option<Defaults>,
    pub minors: Vec<MinorRow>,
    pub pins: BTreeMap<String, Vec<PinRow>>,
    pub sources: BTreeMap<String, String>,
    /// The override file laid over the built-in catalog, if any.
    pub override_file: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Defaults {
    pub minor: String,
    /// The newest patch of that minor (what to write as `kubernetes_version`).
    pub kubernetes_version: Option<String>,
    /// Whether its kubelet and kubectl are pinned (else `checksums: published` installs it).
    pub pinned: bool,
    /// The newest release whose kubelet and kubectl are pinned.
    pub newest_pinned: Option<String>,
    pub node: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
pub struct MinorRow {
    pub minor: String,
    pub released: Option<String>,
    pub end_of_life: Option<String>,
    pub support: Support,
    pub newest_patch: Option<String>,
    pub coredns: String,
    pub pause: String,
    pub etcd_image: String,
    pub containerd: Vec<String>,
    pub containerd_matrix: String,
    pub node: BTreeMap<String, String>,
    /// `built in`, or the override file's path.
    pub from: String,
}

#[derive(Debug, Serialize)]
pub struct PinRow {
    pub version: String,
    pub amd64: bool,
    pub arm64: bool,
    pub from: String,
}

fn node_of(catalog: &Catalog, v: &crate::inventory::Version) -> BTreeMap<String, String> {
    [
        Component::Containerd,
        Component::Runc,
        Component::Etcd,
        Component::Crictl,
        Component::CniPlugins,
    ]
    .into_iter()
    .filter_map(|c| {
        catalog
            .node_default(v, c)
            .map(|s| (c.key().to_string(), s.to_string()))
    })
    .collect()
}

pub fn report(catalog: &Catalog, today: Date) -> Report {
    let minors = catalog
        .minors
        .values()
        .rev()
        .map(|m| {
            let probe = crate::inventory::Version {
                major: m.major,
                minor: m.minor,
                patch: 0,
            };
            MinorRow {
                minor: m.name.clone(),
                released: m.released.map(|d| d.to_string()),
                end_of_life: m.end_of_life.map(|d| d.to_string()),
                support: m.support(today),
                newest_patch: m.newest_patch.map(|v| v.to_string()),
                coredns: m.images.coredns.clone(),
                pause: m.images.pause.clone(),
                etcd_image: m.images.etcd.clone(),
                containerd: m.containerd.iter().map(ToString::to_string).collect(),
                containerd_matrix: m.containerd_matrix(),
                node: node_of(catalog, &probe),
                from: m.origin.to_string(),
            }
        })
        .collect();
    let defaults = catalog.default_minor(today).map(|m| {
        let probe = crate::inventory::Version {
            major: m.major,
            minor: m.minor,
            patch: 0,
        };
        let pinned = |v: &str| {
            [Component::Kubelet, Component::Kubectl]
                .iter()
                .all(|c| catalog.pin(*c, v).is_some())
        };
        let newest_pinned = catalog
            .known_versions(Component::Kubelet)
            .into_iter()
            .filter(|v| pinned(v))
            .filter_map(crate::inventory::Version::parse)
            .max()
            .map(|v| v.to_string());
        Defaults {
            minor: m.name.clone(),
            kubernetes_version: m.newest_patch.map(|v| v.to_string()),
            pinned: m.newest_patch.is_some_and(|v| pinned(&v.to_string())),
            newest_pinned,
            node: node_of(catalog, &probe),
        }
    });
    let pins = catalog
        .pins
        .iter()
        .map(|(c, pins)| {
            let rows = pins
                .iter()
                .map(|p| PinRow {
                    version: p.version.clone(),
                    amd64: p.amd64.is_some(),
                    arm64: p.arm64.is_some(),
                    from: p.origin.to_string(),
                })
                .collect();
            (c.key().to_string(), rows)
        })
        .collect();
    Report {
        today: today.to_string(),
        defaults,
        minors,
        pins,
        sources: catalog.sources.clone(),
        override_file: catalog
            .override_file
            .as_ref()
            .map(|p| p.display().to_string()),
    }
}

fn support_word(s: Support) -> &'static str {
    match s {
        Support::Unreleased => "not released",
        Support::Supported => "supported",
        Support::EndOfLife => "end of life",
    }
}

/// The text a user reads.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let _ = writeln!(
        out,
        "Kubernetes minors in capstan's catalog (today is {}):\n",
        r.today
    );
    let mut rows = vec![[
        "MINOR".to_string(),
        "RELEASED".into(),
        "END OF LIFE".into(),
        "STATUS".into(),
        "NEWEST".into(),
        "COREDNS".into(),
        "PAUSE".into(),
        "ETCD".into(),
        "FROM".into(),
    ]];
    for m in &r.minors {
        rows.push([
            m.minor.clone(),
            dash(&m.released),
            dash(&m.end_of_life),
            support_word(m.support).into(),
            dash(&m.newest_patch),
            m.coredns.clone(),
            m.pause.clone(),
            m.etcd_image.clone(),
            m.from.clone(),
        ]);
    }
    table(&mut out, &rows);
    let _ = writeln!(
        out,
        "\nNode software per minor (a new inventory's defaults) and the containerd each runs on:\n"
    );
    let mut rows = vec![[
        "MINOR".to_string(),
        "CONTAINERD".into(),
        "RUNC".into(),
        "ETCD".into(),
        "CRICTL".into(),
        "CNI_PLUGINS".into(),
        "RUNS ON CONTAINERD".into(),
    ]];
    for m in &r.minors {
        let get = |k: &str| m.node.get(k).cloned().unwrap_or_else(|| "-".into());
        rows.push([
            m.minor.clone(),
            get("containerd"),
            get("runc"),
            get("etcd"),
            get("crictl"),
            get("cni_plugins"),
            m.containerd_matrix.clone(),
        ]);
    }
    table(&mut out, &rows);
    match &r.defaults {
        Some(d) => {
            let node: Vec<String> = d.node.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = writeln!(
                out,
                "\nA new inventory: kubernetes_version {} (the newest supported minor, {}); without `versions:` it gets {}.",
                d.kubernetes_version
                    .as_deref()
                    .unwrap_or("(no patch known)"),
                d.minor,
                node.join(", ")
            );
            if !d.pinned {
                let _ = writeln!(
                    out,
                    "Its kubelet and kubectl have no pins yet: install it with `checksums: published`, or pin them in catalog.yaml; with `checksums: pinned` the newest release is {}.",
                    d.newest_pinned.as_deref().unwrap_or("none")
                );
            }
        }
        None => {
            let _ = writeln!(out, "\nNo minor in the catalog is supported today.");
        }
    }
    let _ = writeln!(
        out,
        "\nPinned sha256 sums (checksums: pinned installs only these):"
    );
    for (c, pins) in &r.pins {
        let versions: Vec<&str> = pins.iter().map(|p| p.version.as_str()).collect();
        let _ = writeln!(
            out,
            "  {c:<12} {}",
            if versions.is_empty() {
                "none".to_string()
            } else {
                versions.join(" ")
            }
        );
    }
    let _ = writeln!(out, "\nSources:");
    for (k, v) in &r.sources {
        let _ = writeln!(out, "  {k}: {v}");
    }
    let _ = writeln!(
        out,
        "\nCatalog: built in{}.",
        r.override_file.as_ref().map_or_else(
            || " (a catalog.yaml beside the inventory is laid over it)".to_string(),
            |p| format!(", with {p} laid over it")
        )
    );
    out
}

fn table<const N: usize>(out: &mut String, rows: &[[String; N]]) {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in rows {
        let mut line = String::from(" ");
        for (i, (w, cell)) in widths.iter().zip(row).enumerate() {
            line.push(' ');
            if i + 1 == N {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}");
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifacts::data::parse_date;

    #[test]
    fn report_tells_what_is_supported_and_the_defaults() {
        let catalog = Catalog::builtin();
        let r = report(&catalog, parse_date("2026-12-07").unwrap());
        let text = render(&r);
        for m in &r.minors {
            assert!(text.contains(&m.minor), "{text}");
        }
        let d = r.defaults.as_ref().expect("a supported minor today");
        let minor = catalog.minors.values().find(|m| m.name == d.minor).unwrap();
        assert_eq!(
            minor.support(parse_date("2026-12-07").unwrap()),
            Support::Supported
        );
        // Nothing newer is supported: the default is the newest supported minor.
        assert!(
            r.minors
                .iter()
                .take_while(|m| m.minor != d.minor)
                .all(|m| m.support != Support::Supported)
        );
        assert!(
            text.contains(&format!("the newest supported minor, {}", d.minor)),
            "{text}"
        );
        assert!(text.contains("built in"), "{text}");
        // Honest about what installs with pinned sums.
        let newest = d.newest_pinned.as_deref().expect("a pinned release");
        assert!(catalog.pin(Component::Kubelet, newest).is_some());
        if !d.pinned {
            assert!(
                text.contains(&format!("the newest release is {newest}")),
                "{text}"
            );
        }
    }
}
