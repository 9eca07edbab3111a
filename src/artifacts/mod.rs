//! Artifacts: the binaries capstan installs, where they come from, and the download cache.
//!
//! [`catalog`] knows the components (kubelet, kubectl, etcd + etcdctl, containerd, runc,
//! crictl, CNI plugins), their upstream file layouts, the members to take out of each
//! archive, pinned sha256 sums for the versions it knows, and the images of the static
//! pods and addons. [`cache`] downloads once per operator machine, verifies, extracts, and
//! keeps everything content-addressed by sha256.
//!
//! # Mirror layout
//!
//! `cluster.artifacts.mirror` is `https://…`, `http://…` or `file:///…`; the layout is the
//! same for all three:
//!
//! ```text
//! {mirror}/release/{version}/bin/linux/{arch}/{kubelet,kubectl}          dl.k8s.io's layout
//! {mirror}/github.com/{org}/{repo}/releases/download/{tag}/{file}        kubespray's files_repo layout
//! ```
//!
//! with, for checksums `mirror`, a `{file}.sha256` beside every file holding the hex sha256,
//! alone or followed by the file name (`sha256sum`'s output). The second form covers:
//!
//! | component  | org/repo                       | tag       | file                                  | binaries taken out                     |
//! |------------|--------------------------------|-----------|---------------------------------------|----------------------------------------|
//! | etcd       | etcd-io/etcd                   | v3.5.24   | etcd-v3.5.24-linux-amd64.tar.gz       | etcd-v3.5.24-linux-amd64/{etcd,etcdctl} |
//! | containerd | containerd/containerd          | v2.0.7    | containerd-2.0.7-linux-amd64.tar.gz   | bin/{containerd,containerd-shim-runc-v2,ctr} |
//! | runc       | opencontainers/runc            | v1.2.6    | runc.amd64                            | (the file itself, installed as runc)   |
//! | crictl     | kubernetes-sigs/cri-tools      | v1.33.0   | crictl-v1.33.0-linux-amd64.tar.gz     | crictl                                 |
//! | cni-plugins| containernetworking/plugins    | v1.6.2    | cni-plugins-linux-amd64-v1.6.2.tgz    | ./bridge, ./host-local, ./loopback, …  |
//!
//! When the mirror is the official `https://dl.k8s.io`, the second form resolves to the real
//! `https://github.com/{org}/{repo}/releases/download/{tag}/{file}`.
//!
//! # Checksums
//!
//! With `checksums: pinned` (the default for the official mirror) the expected sha256 comes
//! from the catalog, so only versions the catalog pins can be installed. With
//! `checksums: mirror` (the default for any other mirror) it comes from the `.sha256` file
//! beside each download, so any version in the mirror's layout works — that is how the test
//! mirror, built from Debian's packages and the machine's kubectl builds, is verified.
//!
//! # Cache
//!
//! See [`cache`]: `~/.cache/capstan` (or `--cache-dir`), `blobs/sha256/{hex}` for every
//! download and every extracted binary, `index/…` mapping names to hashes. Everything is
//! written to a temporary file and renamed into place only after its hash checked out.

pub mod cache;
pub mod catalog;
pub mod data;

use std::path::PathBuf;

pub use cache::{Cache, CachedBinary, Fetched, parse_sha256_file};
pub use catalog::{
    Arch, ArtifactRef, BinarySpec, Component, ExpectedChecksum, Images, ResolvedArtifact, images,
    resolve,
};
pub use data::{Catalog, Minor};

/// Everything that can go wrong resolving or fetching an artifact.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ArtifactError {
    #[error("{component} version `{version}` is not a release version")]
    #[diagnostic(
        code(capstan::artifacts::bad_version),
        help("use a release version such as v1.32.4 (letters, digits, '.', '-', '+')")
    )]
    BadVersion {
        component: Component,
        version: String,
    },

    #[error(
        "{component} {version} has no pinned sha256 in capstan's catalog (pinned versions: {known})"
    )]
    #[diagnostic(
        code(capstan::artifacts::unknown_version),
        help(
            "use a pinned version; or pin it in {file}: `pins: {{{key}: {{{version}: {{amd64: SHA256, arm64: SHA256}}}}}}` with the sums upstream publishes; or set `cluster.artifacts.checksums: published` to verify against the .sha256 file upstream publishes beside each download"
        )
    )]
    UnknownVersion {
        component: Component,
        version: String,
        known: String,
        file: String,
        key: &'static str,
    },

    #[error("capstan's catalog has no pinned sha256 for {component} {version} on {arch}")]
    #[diagnostic(
        code(capstan::artifacts::not_pinned),
        help(
            "add `{arch}: SHA256` to `pins.{key}.{version}` in {file}, or set `cluster.artifacts.checksums: published` to verify against the .sha256 file upstream publishes beside each download"
        )
    )]
    NotPinned {
        component: Component,
        version: String,
        arch: Arch,
        file: String,
        key: &'static str,
    },

    #[error(
        "capstan's catalog does not know Kubernetes {version}'s minor, so not the images kubeadm pairs with it (known minors: {known})"
    )]
    #[diagnostic(
        code(capstan::artifacts::unknown_minor),
        help(
            "use a Kubernetes version of a known minor, or add the minor under `kubernetes:` in {file} (see `capstan versions`)"
        )
    )]
    UnknownMinor {
        version: String,
        known: String,
        file: String,
    },

    #[error("cannot download {url}: {reason}")]
    #[diagnostic(
        code(capstan::artifacts::download),
        help(
            "check `cluster.artifacts.mirror` and that the file exists there in the documented layout"
        )
    )]
    Download { url: String, reason: String },

    #[error("{url} is not a usable sha256 file: {reason}")]
    #[diagnostic(
        code(capstan::artifacts::checksum_file),
        help("a .sha256 file holds the hex sha256, optionally followed by the file name")
    )]
    BadChecksumFile { url: String, reason: String },

    #[error("checksum mismatch for {file} ({url}): expected sha256 {expected}, got {actual}")]
    #[diagnostic(
        code(capstan::artifacts::checksum_mismatch),
        help(
            "nothing was cached or installed; the mirror serves other bytes than the checksum names — fix the mirror (or its .sha256 file) and run again"
        )
    )]
    ChecksumMismatch {
        file: String,
        url: String,
        expected: String,
        actual: String,
    },

    #[error("{archive} has no file `{member}` (it holds: {found})")]
    #[diagnostic(
        code(capstan::artifacts::missing_member),
        help("the archive is not in upstream's layout; rebuild it the way upstream packs it")
    )]
    MissingMember {
        archive: String,
        member: String,
        found: String,
    },

    #[error("cannot read archive {archive}: {reason}")]
    #[diagnostic(code(capstan::artifacts::archive))]
    Archive { archive: String, reason: String },

    #[error("cannot {action} {}: {source}", path.display())]
    #[diagnostic(code(capstan::artifacts::io))]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
