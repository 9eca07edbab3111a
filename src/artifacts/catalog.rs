//! The catalog: what capstan installs, where each file lives on a mirror, what is inside
//! archives, pinned sha256 sums, and the images of the static pods and addons.

use std::fmt;

use serde::Serialize;

use super::ArtifactError;
use super::data::Catalog;
use crate::inventory::{self, ChecksumSource, Version};

/// The official mirror: Kubernetes binaries from dl.k8s.io, everything else from GitHub
/// releases.
pub const OFFICIAL_MIRROR: &str = "https://dl.k8s.io";

/// Where the other artifacts live when the mirror is [`OFFICIAL_MIRROR`].
pub const GITHUB: &str = "https://github.com";

/// The default registry of the control-plane, kube-proxy, coredns and pause images.
pub const DEFAULT_IMAGE_REPOSITORY: &str = "registry.k8s.io";

/// A binary (or bundle of binaries) that capstan installs on hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Component {
    Kubelet,
    Kubectl,
    /// etcd and etcdctl, from one tarball.
    Etcd,
    /// containerd, containerd-shim-runc-v2 and ctr, from one tarball.
    Containerd,
    Runc,
    Crictl,
    /// The standard CNI plugins, from one tarball.
    CniPlugins,
}

impl Component {
    pub const ALL: [Component; 7] = [
        Component::Kubelet,
        Component::Kubectl,
        Component::Etcd,
        Component::Containerd,
        Component::Runc,
        Component::Crictl,
        Component::CniPlugins,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Component::Kubelet => "kubelet",
            Component::Kubectl => "kubectl",
            Component::Etcd => "etcd",
            Component::Containerd => "containerd",
            Component::Runc => "runc",
            Component::Crictl => "crictl",
            Component::CniPlugins => "cni-plugins",
        }
    }

    pub fn parse(text: &str) -> Option<Component> {
        Component::ALL.into_iter().find(|c| c.name() == text)
    }

    /// The GitHub `(org, repo)` a non-Kubernetes component is released from.
    fn github_repo(self) -> Option<(&'static str, &'static str)> {
        match self {
            Component::Kubelet | Component::Kubectl => None,
            Component::Etcd => Some(("etcd-io", "etcd")),
            Component::Containerd => Some(("containerd", "containerd")),
            Component::Runc => Some(("opencontainers", "runc")),
            Component::Crictl => Some(("kubernetes-sigs", "cri-tools")),
            Component::CniPlugins => Some(("containernetworking", "plugins")),
        }
    }

    /// Its key in the catalog file and in `cluster.versions`.
    pub fn key(self) -> &'static str {
        match self {
            Component::CniPlugins => "cni_plugins",
            other => other.name(),
        }
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A CPU architecture, in Go/Kubernetes naming.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    /// From Kubernetes naming (`amd64`, `arm64`) or `uname -m` (`x86_64`, `aarch64`).
    pub fn parse(text: &str) -> Option<Arch> {
        match text.trim() {
            "amd64" | "x86_64" => Some(Arch::Amd64),
            "arm64" | "aarch64" => Some(Arch::Arm64),
            _ => None,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to fetch: one component at one version for one architecture.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ArtifactRef {
    pub component: Component,
    /// `v1.32.4` or `1.32.4`; the leading `v` is added when missing.
    pub version: String,
    pub arch: Arch,
}

impl ArtifactRef {
    pub fn new(component: Component, version: impl Into<String>, arch: Arch) -> Self {
        Self {
            component,
            version: version.into(),
            arch,
        }
    }
}

impl fmt::Display for ArtifactRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} ({})", self.component, self.version, self.arch)
    }
}

/// Where the expected sha256 of a download comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExpectedChecksum {
    /// capstan's catalog (lowercase hex).
    Pinned(String),
    /// The `.sha256` file beside the download on the mirror (its URL).
    MirrorFile(String),
    /// The checksum file upstream publishes with the release (its URL on the mirror):
    /// `kubelet.sha256`, etcd's `SHA256SUMS`, containerd's `.sha256sum`, runc's `runc.sha256sum`.
    Published(String),
}

/// One binary an artifact provides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BinarySpec {
    /// The installed file name (`etcd`, `containerd-shim-runc-v2`, `runc`).
    pub name: String,
    /// Its path inside the archive; `None` when the download is the binary itself.
    pub member: Option<String>,
}

/// An [`ArtifactRef`] resolved against a mirror: what to download, how to verify it and
/// which binaries come out of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResolvedArtifact {
    pub component: Component,
    /// Normalised, with the leading `v`.
    pub version: String,
    pub arch: Arch,
    pub url: String,
    /// The file name of the download (the last segment of `url`).
    pub file_name: String,
    pub checksum: ExpectedChecksum,
    /// True when the download is a `.tar.gz` whose members are the binaries.
    pub archive: bool,
    pub binaries: Vec<BinarySpec>,
}

/// Resolves `r` against the inventory's mirror and checksum policy.
pub fn resolve(
    r: &ArtifactRef,
    artifacts: &inventory::Artifacts,
) -> Result<ResolvedArtifact, ArtifactError> {
    let version = normalize_version(r.component, &r.version)?;
    let mirror = artifacts.mirror.trim_end_matches('/');
    let (path, file_name, archive, binaries) = layout(r.component, &version, r.arch);
    let url = match r.component.github_repo() {
        None => format!("{mirror}/{path}"),
        Some(_) if mirror == OFFICIAL_MIRROR => format!("{GITHUB}/{path}"),
        Some(_) => format!("{mirror}/github.com/{path}"),
    };
    let catalog = &artifacts.catalog;
    let checksum = match artifacts.checksums {
        ChecksumSource::Pinned => {
            let known = catalog.known_versions(r.component);
            if !known.contains(&version.as_str()) {
                return Err(ArtifactError::UnknownVersion {
                    component: r.component,
                    version,
                    known: known.join(", "),
                    file: catalog.override_hint(),
                    key: r.component.key(),
                });
            }
            let Some(sha) = catalog.pinned_sha256(r.component, &version, r.arch) else {
                return Err(ArtifactError::NotPinned {
                    component: r.component,
                    version,
                    arch: r.arch,
                    file: catalog.override_hint(),
                    key: r.component.key(),
                });
            };
            ExpectedChecksum::Pinned(sha.to_string())
        }
        ChecksumSource::Mirror => ExpectedChecksum::MirrorFile(format!("{url}.sha256")),
        ChecksumSource::Published => ExpectedChecksum::Published(published_sums(r.component, &url)),
    };
    Ok(ResolvedArtifact {
        component: r.component,
        version,
        arch: r.arch,
        url,
        file_name,
        checksum,
        archive,
        binaries,
    })
}

/// The folder of `component`'s release `version` below a mirror (upstream's layout):
/// `release/v1.35.2` for the Kubernetes binaries, `github.com/ORG/REPO/releases/download/vX`
/// for the rest. Its parent lists the releases a `file://` mirror holds.
pub fn release_dir(component: Component, version: &str) -> String {
    format!("{}/{version}", releases_dir(component))
}

/// The folder below a mirror holding one folder per release of `component`.
pub fn releases_dir(component: Component) -> String {
    match component.github_repo() {
        None => "release".to_string(),
        Some((org, repo)) => format!("github.com/{org}/{repo}/releases/download"),
    }
}

/// The releases of `component` a mirror folder `root` holds (folders named vX.Y.Z), oldest
/// first; none when it cannot be read.
pub fn mirror_releases(root: &std::path::Path, component: Component) -> Vec<Version> {
    let mut out: Vec<Version> = std::fs::read_dir(root.join(releases_dir(component)))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(Version::parse))
        .collect();
    out.sort_unstable();
    out
}

/// What a `file://` mirror lacks of the releases `wanted` (component, version): for each
/// missing one, the versions of that component it does hold. Other mirrors cannot be
/// listed: nothing is reported for them.
pub fn missing_on_mirror(
    mirror: &str,
    wanted: &[(Component, String)],
) -> Vec<(Component, String, Vec<String>)> {
    let Some(root) = mirror.trim_end_matches('/').strip_prefix("file://") else {
        return Vec::new();
    };
    let root = std::path::Path::new(root);
    let mut out = Vec::new();
    for (c, v) in wanted {
        let Ok(version) = normalize_version(*c, v) else {
            continue;
        };
        if root.join(release_dir(*c, &version)).is_dir() {
            continue;
        }
        let held = mirror_releases(root, *c)
            .iter()
            .map(ToString::to_string)
            .collect();
        out.push((*c, version, held));
    }
    out
}

/// The URL of the checksum file upstream publishes beside the download at `url`.
fn published_sums(component: Component, url: &str) -> String {
    let dir = url.rsplit_once('/').map_or(url, |(d, _)| d);
    match component {
        Component::Kubelet | Component::Kubectl | Component::Crictl | Component::CniPlugins => {
            format!("{url}.sha256")
        }
        Component::Etcd => format!("{dir}/SHA256SUMS"),
        Component::Containerd => format!("{url}.sha256sum"),
        Component::Runc => format!("{dir}/runc.sha256sum"),
    }
}

/// `1.32.4` → `v1.32.4`; rejects anything that is not a plain release name, since the
/// version goes into URLs and cache paths.
fn normalize_version(component: Component, text: &str) -> Result<String, ArtifactError> {
    let text = text.trim();
    let bare = text.strip_prefix('v').unwrap_or(text);
    let ok = !bare.is_empty()
        && bare.starts_with(|c: char| c.is_ascii_digit())
        && bare
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'))
        && !bare.contains("..");
    if ok {
        Ok(format!("v{bare}"))
    } else {
        Err(ArtifactError::BadVersion {
            component,
            version: text.to_string(),
        })
    }
}

/// Upstream's layout: (path below the mirror or github.com, file name, archive?, binaries).
fn layout(
    component: Component,
    version: &str,
    arch: Arch,
) -> (String, String, bool, Vec<BinarySpec>) {
    let bare = version.trim_start_matches('v');
    let plain = |name: &str| BinarySpec {
        name: name.to_string(),
        member: None,
    };
    let member = |name: &str, path: String| BinarySpec {
        name: name.to_string(),
        member: Some(path),
    };
    let github = |file: &str| {
        let (org, repo) = component.github_repo().unwrap_or(("", ""));
        format!("{org}/{repo}/releases/download/{version}/{file}")
    };
    match component {
        Component::Kubelet | Component::Kubectl => {
            let name = component.name();
            (
                format!("release/{version}/bin/linux/{arch}/{name}"),
                name.to_string(),
                false,
                vec![plain(name)],
            )
        }
        Component::Etcd => {
            let dir = format!("etcd-{version}-linux-{arch}");
            let file = format!("{dir}.tar.gz");
            (
                github(&file),
                file,
                true,
                vec![
                    member("etcd", format!("{dir}/etcd")),
                    member("etcdctl", format!("{dir}/etcdctl")),
                ],
            )
        }
        Component::Containerd => {
            let file = format!("containerd-{bare}-linux-{arch}.tar.gz");
            let bins = ["containerd", "containerd-shim-runc-v2", "ctr"]
                .iter()
                .map(|n| member(n, format!("bin/{n}")))
                .collect();
            (github(&file), file, true, bins)
        }
        Component::Runc => {
            let file = format!("runc.{arch}");
            (github(&file), file, false, vec![plain("runc")])
        }
        Component::Crictl => {
            let file = format!("crictl-{version}-linux-{arch}.tar.gz");
            (
                github(&file),
                file,
                true,
                vec![member("crictl", "crictl".to_string())],
            )
        }
        Component::CniPlugins => {
            let file = format!("cni-plugins-linux-{arch}-{version}.tgz");
            let bins = CNI_PLUGINS
                .iter()
                .map(|n| member(n, format!("./{n}")))
                .collect();
            (github(&file), file, true, bins)
        }
    }
}

/// The CNI plugins capstan installs into /opt/cni/bin (present in every 1.x release).
pub const CNI_PLUGINS: &[&str] = &[
    "bandwidth",
    "bridge",
    "firewall",
    "host-device",
    "host-local",
    "loopback",
    "portmap",
    "ptp",
    "tuning",
];

/// Image references for static pods and addons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Images {
    pub kube_apiserver: String,
    pub kube_controller_manager: String,
    pub kube_scheduler: String,
    pub kube_proxy: String,
    pub coredns: String,
    pub pause: String,
    /// etcd as a static pod (capstan runs etcd as a systemd service; kept for kubeadm parity).
    pub etcd: String,
}

/// The images of a Kubernetes `version` under `image_repository` (default
/// [`DEFAULT_IMAGE_REPOSITORY`]). As kubeadm does, CoreDNS sits at `coredns/coredns` under
/// the default registry and at `coredns` under any other repository.
pub fn images(
    catalog: &Catalog,
    version: &Version,
    image_repository: Option<&str>,
) -> Result<Images, ArtifactError> {
    let d = &catalog.minor_or_err(version)?.images;
    let repo = image_repository
        .map(|r| r.trim_end_matches('/'))
        .filter(|r| !r.is_empty())
        .unwrap_or(DEFAULT_IMAGE_REPOSITORY);
    let coredns_repo = if repo == DEFAULT_IMAGE_REPOSITORY {
        format!("{repo}/coredns/coredns")
    } else {
        format!("{repo}/coredns")
    };
    Ok(Images {
        kube_apiserver: format!("{repo}/kube-apiserver:{version}"),
        kube_controller_manager: format!("{repo}/kube-controller-manager:{version}"),
        kube_scheduler: format!("{repo}/kube-scheduler:{version}"),
        kube_proxy: format!("{repo}/kube-proxy:{version}"),
        coredns: format!("{coredns_repo}:{}", d.coredns),
        pause: format!("{repo}/pause:{}", d.pause),
        etcd: format!("{repo}/etcd:{}", d.etcd),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arts(mirror: &str, checksums: ChecksumSource) -> inventory::Artifacts {
        inventory::Artifacts {
            mirror: mirror.to_string(),
            checksums,
            catalog: Catalog::builtin(),
        }
    }

    #[test]
    fn official_mirror_urls_are_upstreams() {
        let a = arts(OFFICIAL_MIRROR, ChecksumSource::Pinned);
        let r = resolve(
            &ArtifactRef::new(Component::Kubelet, "v1.32.4", Arch::Amd64),
            &a,
        )
        .unwrap();
        assert_eq!(
            r.url,
            "https://dl.k8s.io/release/v1.32.4/bin/linux/amd64/kubelet"
        );
        let r = resolve(
            &ArtifactRef::new(Component::Etcd, "3.5.24", Arch::Arm64),
            &a,
        )
        .unwrap();
        assert_eq!(
            r.url,
            "https://github.com/etcd-io/etcd/releases/download/v3.5.24/etcd-v3.5.24-linux-arm64.tar.gz"
        );
        assert_eq!(
            r.binaries[1].member.as_deref(),
            Some("etcd-v3.5.24-linux-arm64/etcdctl")
        );
        let r = resolve(
            &ArtifactRef::new(Component::Containerd, "v2.0.7", Arch::Amd64),
            &a,
        )
        .unwrap();
        assert_eq!(
            r.url,
            "https://github.com/containerd/containerd/releases/download/v2.0.7/containerd-2.0.7-linux-amd64.tar.gz"
        );
        let r = resolve(
            &ArtifactRef::new(Component::Runc, "v1.2.6", Arch::Amd64),
            &a,
        )
        .unwrap();
        assert_eq!(
            r.url,
            "https://github.com/opencontainers/runc/releases/download/v1.2.6/runc.amd64"
        );
        let r = resolve(
            &ArtifactRef::new(Component::Crictl, "v1.33.0", Arch::Amd64),
            &a,
        )
        .unwrap();
        assert_eq!(
            r.url,
            "https://github.com/kubernetes-sigs/cri-tools/releases/download/v1.33.0/crictl-v1.33.0-linux-amd64.tar.gz"
        );
        let r = resolve(
            &ArtifactRef::new(Component::CniPlugins, "v1.6.2", Arch::Amd64),
            &a,
        )
        .unwrap();
        assert_eq!(
            r.url,
            "https://github.com/containernetworking/plugins/releases/download/v1.6.2/cni-plugins-linux-amd64-v1.6.2.tgz"
        );
    }

    #[test]
    fn other_mirrors_use_the_files_repo_layout() {
        let a = arts("https://mirror.example/k8s", ChecksumSource::Mirror);
        let r = resolve(
            &ArtifactRef::new(Component::Runc, "v1.1.5", Arch::Amd64),
            &a,
        )
        .unwrap();
        assert_eq!(
            r.url,
            "https://mirror.example/k8s/github.com/opencontainers/runc/releases/download/v1.1.5/runc.amd64"
        );
        assert_eq!(
            r.checksum,
            ExpectedChecksum::MirrorFile(format!("{}.sha256", r.url))
        );
    }

    #[test]
    fn every_pinned_version_is_a_release_name() {
        let catalog = Catalog::builtin();
        for c in Component::ALL {
            for v in catalog.known_versions(c) {
                assert!(normalize_version(c, v).unwrap() == v, "{c} {v}");
            }
        }
    }

    #[test]
    fn published_checksums_are_upstreams_files() {
        let a = arts(OFFICIAL_MIRROR, ChecksumSource::Published);
        let sums = |c: Component, v: &str| match resolve(&ArtifactRef::new(c, v, Arch::Amd64), &a)
            .unwrap()
            .checksum
        {
            ExpectedChecksum::Published(url) => url,
            other => panic!("{other:?}"),
        };
        // A version the catalog has no pin for still resolves: upstream's file verifies it.
        assert_eq!(
            sums(Component::Kubelet, "v1.37.1"),
            "https://dl.k8s.io/release/v1.37.1/bin/linux/amd64/kubelet.sha256"
        );
        assert_eq!(
            sums(Component::Etcd, "v3.6.6"),
            "https://github.com/etcd-io/etcd/releases/download/v3.6.6/SHA256SUMS"
        );
        assert_eq!(
            sums(Component::Containerd, "v2.2.1"),
            "https://github.com/containerd/containerd/releases/download/v2.2.1/containerd-2.2.1-linux-amd64.tar.gz.sha256sum"
        );
        assert_eq!(
            sums(Component::Runc, "v1.4.0"),
            "https://github.com/opencontainers/runc/releases/download/v1.4.0/runc.sha256sum"
        );
        assert_eq!(
            sums(Component::CniPlugins, "v1.9.0"),
            "https://github.com/containernetworking/plugins/releases/download/v1.9.0/cni-plugins-linux-amd64-v1.9.0.tgz.sha256"
        );
    }

    #[test]
    fn pinned_refuses_an_unpinned_version_and_says_what_to_add() {
        let a = arts(OFFICIAL_MIRROR, ChecksumSource::Pinned);
        let err = resolve(
            &ArtifactRef::new(Component::Kubelet, "v1.37.1", Arch::Amd64),
            &a,
        )
        .unwrap_err();
        let help = miette::Diagnostic::help(&err).unwrap().to_string();
        assert!(
            err.to_string()
                .contains("kubelet v1.37.1 has no pinned sha256"),
            "{err}"
        );
        assert!(help.contains("catalog.yaml beside the inventory"), "{help}");
        assert!(
            help.contains("pins: {kubelet: {v1.37.1: {amd64: SHA256, arm64: SHA256}}}"),
            "{help}"
        );
        assert!(help.contains("checksums: published"), "{help}");
    }

    #[test]
    fn versions_with_path_tricks_are_rejected() {
        let a = arts("file:///srv/mirror", ChecksumSource::Mirror);
        for bad in ["../../etc", "v1.2/../3", "", "latest", "v1.2.3 x"] {
            let err =
                resolve(&ArtifactRef::new(Component::Kubelet, bad, Arch::Amd64), &a).unwrap_err();
            assert!(matches!(err, ArtifactError::BadVersion { .. }), "{bad}");
        }
    }

    #[test]
    fn images_follow_kubeadm() {
        let v = Version::parse("v1.32.4").unwrap();
        let c = Catalog::builtin();
        let i = images(&c, &v, None).unwrap();
        assert_eq!(i.kube_apiserver, "registry.k8s.io/kube-apiserver:v1.32.4");
        assert_eq!(i.coredns, "registry.k8s.io/coredns/coredns:v1.11.3");
        assert_eq!(i.pause, "registry.k8s.io/pause:3.10");
        assert_eq!(i.etcd, "registry.k8s.io/etcd:3.5.24-0");
        let i = images(&c, &v, Some("mirror.example:5000/k8s/")).unwrap();
        assert_eq!(i.coredns, "mirror.example:5000/k8s/coredns:v1.11.3");
        assert_eq!(i.kube_proxy, "mirror.example:5000/k8s/kube-proxy:v1.32.4");
        let v = Version::parse("v1.34.2").unwrap();
        assert_eq!(
            images(&c, &v, None).unwrap().pause,
            "registry.k8s.io/pause:3.10.1"
        );
        let err = images(&c, &Version::parse("v1.29.0").unwrap(), None).unwrap_err();
        assert!(err.to_string().contains("v1.31"), "{err}");
    }
}
