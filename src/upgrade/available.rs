//! The Kubernetes releases an upgrade may target: those whose kubelet and kubectl capstan
//! can install on every architecture of the cluster, and whose images it knows (kubeadm's
//! paired versions, [`crate::artifacts::kubeadm_defaults`]).
//!
//! - A `file://` mirror is listed: `release/vX.Y.Z/bin/linux/{arch}/{kubelet,kubectl}`, with
//!   the `.sha256` beside each file when the checksums come from the mirror, and, when they
//!   are pinned, only the versions capstan's catalog pins.
//! - An `http(s)://` mirror cannot be listed: the catalog's versions (pinned for every
//!   architecture when the checksums are pinned) stand for it.

use std::path::Path;

use serde::Serialize;

use crate::artifacts::{Arch, Catalog, Component};
use crate::inventory::{Artifacts, ChecksumSource, Version};

/// The releases a target may be, newest last, and where that list came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Available {
    pub versions: Vec<Version>,
    /// `the mirror file:///…` or `capstan's catalog …`, for messages.
    pub source: String,
}

/// Whether `c` at `v` can be verified on every arch of `arches` under `checksums`.
fn verifiable(
    catalog: &Catalog,
    checksums: ChecksumSource,
    arches: &[Arch],
    c: Component,
    v: &str,
) -> bool {
    match checksums {
        ChecksumSource::Pinned => arches
            .iter()
            .all(|a| catalog.pinned_sha256(c, v, *a).is_some()),
        ChecksumSource::Mirror | ChecksumSource::Published => true,
    }
}

/// What the catalog offers for `arches` under `checksums`.
fn from_catalog(catalog: &Catalog, checksums: ChecksumSource, arches: &[Arch]) -> Vec<Version> {
    let ok = |c: Component, v: &str| verifiable(catalog, checksums, arches, c, v);
    let kubectl = catalog.known_versions(Component::Kubectl);
    let mut out: Vec<Version> = catalog
        .known_versions(Component::Kubelet)
        .into_iter()
        .filter(|v| kubectl.contains(v))
        .filter(|v| ok(Component::Kubelet, v) && ok(Component::Kubectl, v))
        .filter_map(Version::parse)
        .collect();
    // Not pinned: every minor's newest patch is there too (upstream's files verify it).
    if checksums != ChecksumSource::Pinned {
        out.extend(catalog.minors.values().filter_map(|m| m.newest_patch));
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// The releases a `file://` mirror at `root` holds for every arch of `arches`.
fn list_mirror(root: &Path, arches: &[Arch], with_sums: bool) -> Result<Vec<Version>, String> {
    let release = root.join("release");
    let entries = std::fs::read_dir(&release).map_err(|e| {
        format!(
            "cannot list the mirror's releases in {}: {e} (a mirror has dl.k8s.io's layout: release/vX.Y.Z/bin/linux/ARCH/kubelet)",
            release.display()
        )
    })?;
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(version) = name.to_str().and_then(Version::parse) else {
            continue;
        };
        let complete = arches.iter().all(|arch| {
            let dir = entry.path().join("bin/linux").join(arch.as_str());
            ["kubelet", "kubectl"].iter().all(|bin| {
                dir.join(bin).is_file()
                    && (!with_sums || dir.join(format!("{bin}.sha256")).is_file())
            })
        });
        if complete {
            out.push(version);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Minimal `%XX` decoding of a `file://` URL path.
fn decode(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (
                char::from(bytes[i + 1]).to_digit(16),
                char::from(bytes[i + 2]).to_digit(16),
            )
        {
            out.push(u8::try_from(h * 16 + l).unwrap_or(b'%'));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The releases available to the cluster whose hosts run on `arches`.
pub fn available(artifacts: &Artifacts, arches: &[Arch]) -> Result<Available, String> {
    let arches: Vec<Arch> = if arches.is_empty() {
        vec![Arch::Amd64]
    } else {
        arches.to_vec()
    };
    let catalog = &artifacts.catalog;
    let known_images = |v: &Version| catalog.minor(v).is_some();
    let mirror = artifacts.mirror.trim_end_matches('/');
    let (versions, source) = if let Some(path) = mirror.strip_prefix("file://") {
        let listed = list_mirror(
            Path::new(&decode(path)),
            &arches,
            artifacts.checksums != ChecksumSource::Pinned,
        )?;
        let versions = match artifacts.checksums {
            ChecksumSource::Mirror | ChecksumSource::Published => listed,
            ChecksumSource::Pinned => {
                let pinned = from_catalog(catalog, ChecksumSource::Pinned, &arches);
                listed.into_iter().filter(|v| pinned.contains(v)).collect()
            }
        };
        (versions, format!("the mirror {mirror}"))
    } else {
        (
            from_catalog(catalog, artifacts.checksums, &arches),
            format!("capstan's catalog (the mirror {mirror} cannot be listed)"),
        )
    };
    Ok(Available {
        versions: versions.into_iter().filter(known_images).collect(),
        source,
    })
}

/// The etcd releases the members may go to, oldest first: those of a `file://` mirror
/// (`github.com/etcd-io/etcd/releases/download/vX.Y.Z/etcd-vX.Y.Z-linux-ARCH.tar.gz` for
/// every arch, with its `.sha256` when the checksums come from the mirror, pinned by the
/// catalog when they are pinned), else the catalog's.
pub fn etcd(artifacts: &Artifacts, arches: &[Arch]) -> Result<Available, String> {
    let arches: Vec<Arch> = if arches.is_empty() {
        vec![Arch::Amd64]
    } else {
        arches.to_vec()
    };
    let checksums = artifacts.checksums;
    let catalog = &artifacts.catalog;
    let mirror = artifacts.mirror.trim_end_matches('/');
    let mut versions: Vec<Version>;
    let source;
    if let Some(path) = mirror.strip_prefix("file://") {
        let dir =
            Path::new(&decode(path)).join(crate::artifacts::catalog::releases_dir(Component::Etcd));
        let entries = std::fs::read_dir(&dir).map_err(|e| {
            format!(
                "cannot list the mirror's etcd releases in {}: {e} (GitHub's layout: vX.Y.Z/etcd-vX.Y.Z-linux-ARCH.tar.gz)",
                dir.display()
            )
        })?;
        versions = entries
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().to_str()?.to_string();
                let version = Version::parse(&name)?;
                let complete = arches.iter().all(|arch| {
                    let file = entry
                        .path()
                        .join(format!("etcd-{name}-linux-{}.tar.gz", arch.as_str()));
                    let sum = match checksums {
                        ChecksumSource::Pinned => None,
                        ChecksumSource::Mirror => Some(file.with_extension("gz.sha256")),
                        ChecksumSource::Published => Some(entry.path().join("SHA256SUMS")),
                    };
                    file.is_file() && sum.is_none_or(|s| s.is_file())
                });
                (complete && verifiable(catalog, checksums, &arches, Component::Etcd, &name))
                    .then_some(version)
            })
            .collect();
        source = format!("the mirror {mirror}");
    } else {
        versions = catalog
            .known_versions(Component::Etcd)
            .into_iter()
            .filter(|v| verifiable(catalog, checksums, &arches, Component::Etcd, v))
            .filter_map(Version::parse)
            .collect();
        source = format!("capstan's catalog (the mirror {mirror} cannot be listed)");
    }
    versions.sort_unstable();
    Ok(Available { versions, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Version {
        Version::parse(text).unwrap()
    }

    fn place(root: &Path, version: &str, arch: &str, sums: bool) {
        let dir = root
            .join("release")
            .join(version)
            .join("bin/linux")
            .join(arch);
        std::fs::create_dir_all(&dir).unwrap();
        for bin in ["kubelet", "kubectl"] {
            std::fs::write(dir.join(bin), b"x").unwrap();
            if sums {
                std::fs::write(dir.join(format!("{bin}.sha256")), b"y").unwrap();
            }
        }
    }

    fn arts(mirror: String, checksums: ChecksumSource) -> Artifacts {
        Artifacts {
            mirror,
            checksums,
            catalog: crate::artifacts::Catalog::builtin(),
        }
    }

    #[test]
    fn a_file_mirror_is_listed() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        for ver in ["v1.31.9", "v1.32.4", "v1.32.5", "v1.33.1"] {
            place(root, ver, "amd64", true);
        }
        // Incomplete or foreign entries are not releases.
        place(root, "v1.32.6", "arm64", true);
        place(root, "v1.32.7", "amd64", false);
        std::fs::create_dir_all(root.join("release/latest")).unwrap();
        // A release whose images capstan does not know.
        place(root, "v1.29.0", "amd64", true);
        let a = available(
            &arts(
                format!("file://{}/", root.display()),
                ChecksumSource::Mirror,
            ),
            &[Arch::Amd64],
        )
        .unwrap();
        assert_eq!(
            a.versions,
            ["v1.31.9", "v1.32.4", "v1.32.5", "v1.33.1"].map(v).to_vec()
        );
        assert!(a.source.contains("the mirror file://"), "{}", a.source);
        // Pinned checksums: only what the catalog pins (v1.31.9's kubectl is not pinned).
        let a = available(
            &arts(format!("file://{}", root.display()), ChecksumSource::Pinned),
            &[Arch::Amd64],
        )
        .unwrap();
        assert_eq!(
            a.versions,
            ["v1.32.4", "v1.32.5", "v1.33.1"].map(v).to_vec()
        );
        // Both architectures needed: none has arm64 but v1.32.6, which lacks amd64.
        let a = available(
            &arts(format!("file://{}", root.display()), ChecksumSource::Mirror),
            &[Arch::Amd64, Arch::Arm64],
        )
        .unwrap();
        assert!(a.versions.is_empty());
    }

    #[test]
    fn a_missing_mirror_says_where_it_looked() {
        let err = available(
            &arts("file:///nonexistent/mirror".into(), ChecksumSource::Mirror),
            &[Arch::Amd64],
        )
        .unwrap_err();
        assert!(err.contains("/nonexistent/mirror/release"), "{err}");
    }

    #[test]
    fn an_https_mirror_uses_the_catalog() {
        let a = available(
            &arts("https://dl.k8s.io".into(), ChecksumSource::Pinned),
            &[Arch::Amd64],
        )
        .unwrap();
        assert!(a.versions.contains(&v("v1.33.1")), "{a:?}");
        assert!(!a.versions.contains(&v("v1.31.9")), "{a:?}");
        assert!(a.source.contains("catalog"), "{}", a.source);
        assert!(a.versions.windows(2).all(|w| w[0] < w[1]));
        // Pinned: no unpinned release, however new; published: each minor's newest patch too.
        assert!(!a.versions.contains(&v("v1.37.0")), "{a:?}");
        let a = available(
            &arts("https://dl.k8s.io".into(), ChecksumSource::Published),
            &[Arch::Amd64],
        )
        .unwrap();
        assert!(a.versions.contains(&v("v1.37.0")), "{a:?}");
        assert!(a.versions.contains(&v("v1.35.1")), "{a:?}");
        assert!(a.versions.windows(2).all(|w| w[0] < w[1]));
    }

    fn place_etcd(root: &Path, version: &str, arch: &str, sums: bool) {
        let dir = root
            .join("github.com/etcd-io/etcd/releases/download")
            .join(version);
        std::fs::create_dir_all(&dir).unwrap();
        let file = format!("etcd-{version}-linux-{arch}.tar.gz");
        std::fs::write(dir.join(&file), b"x").unwrap();
        if sums {
            std::fs::write(dir.join(format!("{file}.sha256")), b"y").unwrap();
        }
    }

    #[test]
    fn the_etcd_releases_of_a_file_mirror_are_listed() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        place_etcd(root, "v3.4.23", "amd64", true);
        place_etcd(root, "v3.5.30", "amd64", true);
        place_etcd(root, "v3.5.21", "amd64", true);
        // Without its sum, or only for another arch: not a release of this cluster.
        place_etcd(root, "v3.5.31", "amd64", false);
        place_etcd(root, "v3.6.5", "arm64", true);
        std::fs::create_dir_all(root.join("github.com/etcd-io/etcd/releases/download/latest"))
            .unwrap();
        let mirror = format!("file://{}", root.display());
        let a = etcd(
            &arts(mirror.clone(), ChecksumSource::Mirror),
            &[Arch::Amd64],
        )
        .unwrap();
        assert_eq!(
            a.versions,
            ["v3.4.23", "v3.5.21", "v3.5.30"].map(v).to_vec()
        );
        assert!(a.source.contains("the mirror file://"), "{}", a.source);
        // Pinned: only what the catalog pins (v3.5.21 is; Debian's 3.4.23 and 3.5.30 are not).
        let a = etcd(
            &arts(mirror.clone(), ChecksumSource::Pinned),
            &[Arch::Amd64],
        )
        .unwrap();
        assert_eq!(a.versions, [v("v3.5.21")]);
        let err = etcd(
            &arts("file:///nonexistent".into(), ChecksumSource::Mirror),
            &[Arch::Amd64],
        )
        .unwrap_err();
        assert!(
            err.contains("/nonexistent/github.com/etcd-io/etcd"),
            "{err}"
        );
        // An https mirror: the catalog's pinned releases.
        let a = etcd(
            &arts("https://dl.k8s.io".into(), ChecksumSource::Pinned),
            &[Arch::Amd64, Arch::Arm64],
        )
        .unwrap();
        assert!(a.versions.contains(&v("v3.5.21")), "{a:?}");
        assert!(!a.versions.contains(&v("v3.4.23")), "{a:?}");
    }

    #[test]
    fn file_urls_are_decoded() {
        assert_eq!(decode("/srv/my%20mirror"), "/srv/my mirror");
        assert_eq!(decode("/srv/100%"), "/srv/100%");
    }
}
