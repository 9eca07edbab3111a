//! The catalog: what capstan installs, where each file lives on a mirror, what is inside
//! archives, pinned sha256 sums, and the images of the static pods and addons.

use std::fmt;

use serde::Serialize;

use super::ArtifactError;
use super::pins::{self, Pin};
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

    fn pins(self) -> &'static [Pin] {
        match self {
            Component::Kubelet => pins::KUBELET,
            Component::Kubectl => pins::KUBECTL,
            Component::Etcd => pins::ETCD,
            Component::Containerd => pins::CONTAINERD,
            Component::Runc => pins::RUNC,
            Component::Crictl => pins::CRICTL,
            Component::CniPlugins => pins::CNI_PLUGINS,
        }
    }

    /// The versions the catalog knows, oldest first (pinned or not).
    pub fn known_versions(self) -> Vec<&'static str> {
        self.pins().iter().map(|p| p.version).collect()
    }

    /// The pinned sha256 of `version` for `arch`, when the catalog has one.
    pub fn pinned_sha256(self, version: &str, arch: Arch) -> Option<&'static str> {
        let pin = self.pins().iter().find(|p| p.version == version)?;
        match arch {
            Arch::Amd64 => pin.amd64,
            Arch::Arm64 => pin.arm64,
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
    let checksum = match artifacts.checksums {
        ChecksumSource::Pinned => {
            let known = r.component.known_versions();
            if !known.contains(&version.as_str()) {
                return Err(ArtifactError::UnknownVersion {
                    component: r.component,
                    version,
                    known: known.join(", "),
                });
            }
            let Some(sha) = r.component.pinned_sha256(&version, r.arch) else {
                return Err(ArtifactError::NotPinned {
                    component: r.component,
                    version,
                    arch: r.arch,
                });
            };
            ExpectedChecksum::Pinned(sha.to_string())
        }
        ChecksumSource::Mirror => ExpectedChecksum::MirrorFile(format!("{url}.sha256")),
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

/// The versions kubeadm pairs with one Kubernetes minor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MinorDefaults {
    pub minor: u32,
    /// CoreDNS image tag.
    pub coredns: &'static str,
    /// pause (sandbox) image tag.
    pub pause: &'static str,
    /// etcd image tag (kubeadm's `SupportedEtcdVersion`); the release is this without `-0`.
    pub etcd: &'static str,
}

/// kubeadm's constants (cmd/kubeadm/app/constants/constants.go) per minor, from the newest
/// patch branch of each: `CoreDNSVersion`, `PauseVersion` and `SupportedEtcdVersion`
/// (release-1.34: 31-33 → 3.5.24-0, 34 → 3.6.5-0; CoreDNS v1.11.3 for 1.31/1.32, v1.12.0
/// for 1.33, v1.12.1 for 1.34; pause 3.10, 3.10.1 from 1.34).
pub const KUBEADM_DEFAULTS: &[MinorDefaults] = &[
    MinorDefaults {
        minor: 31,
        coredns: "v1.11.3",
        pause: "3.10",
        etcd: "3.5.24-0",
    },
    MinorDefaults {
        minor: 32,
        coredns: "v1.11.3",
        pause: "3.10",
        etcd: "3.5.24-0",
    },
    MinorDefaults {
        minor: 33,
        coredns: "v1.12.0",
        pause: "3.10",
        etcd: "3.5.24-0",
    },
    MinorDefaults {
        minor: 34,
        coredns: "v1.12.1",
        pause: "3.10.1",
        etcd: "3.6.5-0",
    },
];

/// kubeadm's paired versions for the minor of `version`.
pub fn kubeadm_defaults(version: &Version) -> Result<MinorDefaults, ArtifactError> {
    KUBEADM_DEFAULTS
        .iter()
        .find(|d| version.major == 1 && d.minor == version.minor)
        .copied()
        .ok_or_else(|| ArtifactError::UnknownMinor {
            version: version.to_string(),
            known: KUBEADM_DEFAULTS
                .iter()
                .map(|d| format!("v1.{}", d.minor))
                .collect::<Vec<_>>()
                .join(", "),
        })
}

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
pub fn images(version: &Version, image_repository: Option<&str>) -> Result<Images, ArtifactError> {
    let d = kubeadm_defaults(version)?;
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
    fn every_pin_is_a_sha256_and_versions_are_unique() {
        for c in Component::ALL {
            let versions = c.known_versions();
            let mut sorted = versions.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), versions.len(), "{c}");
            for v in versions {
                assert!(normalize_version(c, v).unwrap() == v, "{c} {v}");
                for arch in [Arch::Amd64, Arch::Arm64] {
                    if let Some(sha) = c.pinned_sha256(v, arch) {
                        assert_eq!(sha.len(), 64, "{c} {v} {arch}");
                        assert!(
                            sha.bytes()
                                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                        );
                    }
                }
            }
        }
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
        let i = images(&v, None).unwrap();
        assert_eq!(i.kube_apiserver, "registry.k8s.io/kube-apiserver:v1.32.4");
        assert_eq!(i.coredns, "registry.k8s.io/coredns/coredns:v1.11.3");
        assert_eq!(i.pause, "registry.k8s.io/pause:3.10");
        assert_eq!(i.etcd, "registry.k8s.io/etcd:3.5.24-0");
        let i = images(&v, Some("mirror.example:5000/k8s/")).unwrap();
        assert_eq!(i.coredns, "mirror.example:5000/k8s/coredns:v1.11.3");
        assert_eq!(i.kube_proxy, "mirror.example:5000/k8s/kube-proxy:v1.32.4");
        let v = Version::parse("v1.34.2").unwrap();
        assert_eq!(
            images(&v, None).unwrap().pause,
            "registry.k8s.io/pause:3.10.1"
        );
        let err = images(&Version::parse("v1.29.0").unwrap(), None).unwrap_err();
        assert!(err.to_string().contains("v1.31"), "{err}");
    }
}
