//! The upgrade policy, pure: which versions a cluster may go to, what refuses a target (with
//! the reason and the path that is allowed), and the ordered steps of an upgrade.
//!
//! It follows the Kubernetes version-skew policy (DESIGN.md, "Upgrade rules"):
//!
//! - one minor at a time: from v1.31.z the targets are the newest v1.31 patch and the newest
//!   v1.32 patch that the catalog/mirror has; v1.33 needs v1.32 first;
//! - never down: a target older than any API server is refused;
//! - the cluster must already be inside the policy: every kubelet no newer than the oldest
//!   API server and at most three minors older than the newest; kube-controller-manager and
//!   kube-scheduler no newer than the oldest API server and at most one minor older than the
//!   newest; the API servers themselves within one minor of each other;
//! - the steps: an etcd snapshot before the first control plane changes, control planes one
//!   at a time, then the workers in batches of `--max-unavailable`.
//!
//! `upgrade plan` renders these; `upgrade apply` executes the same [`Step`]s.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use crate::inventory::Version;

/// A component whose version the upgrade reads and changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Part {
    #[serde(rename = "kube-apiserver")]
    ApiServer,
    #[serde(rename = "kube-controller-manager")]
    ControllerManager,
    #[serde(rename = "kube-scheduler")]
    Scheduler,
    Kubelet,
    Kubectl,
    Etcd,
    Containerd,
}

impl Part {
    pub const ALL: [Part; 7] = [
        Part::ApiServer,
        Part::ControllerManager,
        Part::Scheduler,
        Part::Kubelet,
        Part::Kubectl,
        Part::Etcd,
        Part::Containerd,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Part::ApiServer => "kube-apiserver",
            Part::ControllerManager => "kube-controller-manager",
            Part::Scheduler => "kube-scheduler",
            Part::Kubelet => "kubelet",
            Part::Kubectl => "kubectl",
            Part::Etcd => "etcd",
            Part::Containerd => "containerd",
        }
    }

    /// Whether the part follows the Kubernetes version (the others have their own).
    pub fn follows_kubernetes(self) -> bool {
        !matches!(self, Part::Etcd | Part::Containerd)
    }
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a reading came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// The API server's `/version`, asked directly on its host.
    Version,
    /// The image tag in the static pod's manifest.
    Manifest,
    /// The Node's `status.nodeInfo.kubeletVersion`, from the API.
    Node,
    /// The binary's own `--version` on the host.
    Binary,
    /// `etcdctl endpoint status` of the member.
    EndpointStatus,
}

impl Source {
    pub fn describe(self) -> &'static str {
        match self {
            Source::Version => "/version",
            Source::Manifest => "manifest image tag",
            Source::Node => "Node kubeletVersion",
            Source::Binary => "binary --version",
            Source::EndpointStatus => "etcdctl endpoint status",
        }
    }
}

/// One component on one host, as read from the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reading {
    pub part: Part,
    pub host: String,
    pub source: Source,
    /// The version as printed (`v1.32.4`, `3.4.23`, `1.6.20~ds1`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
    /// `MAJOR.MINOR.PATCH` read from `raw`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<Version>,
    /// Why it could not be read (the component is absent, its host unreachable…).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Reading {
    pub fn ok(part: Part, host: &str, source: Source, raw: &str, version: Option<Version>) -> Self {
        Reading {
            part,
            host: host.to_string(),
            source,
            raw: Some(raw.to_string()),
            version,
            error: None,
        }
    }

    pub fn failed(part: Part, host: &str, source: Source, error: impl Into<String>) -> Self {
        Reading {
            part,
            host: host.to_string(),
            source,
            raw: None,
            version: None,
            error: Some(error.into()),
        }
    }

    /// The version, or what stands for it in a table.
    pub fn shown(&self) -> String {
        match (&self.raw, &self.error) {
            (Some(raw), _) => raw.clone(),
            (None, Some(e)) => format!("? ({e})"),
            (None, None) => "?".to_string(),
        }
    }
}

/// Every version read from a cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LiveVersions {
    pub readings: Vec<Reading>,
}

impl LiveVersions {
    /// The versions read for `part`, with their hosts and sources.
    pub fn versions(&self, part: Part) -> impl Iterator<Item = (&str, Source, Version)> {
        self.readings
            .iter()
            .filter(move |r| r.part == part)
            .filter_map(|r| r.version.map(|v| (r.host.as_str(), r.source, v)))
    }

    /// The readings of one host.
    pub fn of_host<'a>(&'a self, host: &'a str) -> impl Iterator<Item = &'a Reading> {
        self.readings.iter().filter(move |r| r.host == host)
    }

    /// The oldest and the newest API server, as they answer `/version` (their manifests'
    /// tags only when no API server answered: a manifest may name an image that never ran).
    pub fn api_servers(&self) -> Option<(Version, Version)> {
        let of = |source: Source| -> Vec<Version> {
            self.versions(Part::ApiServer)
                .filter(|(_, s, _)| *s == source)
                .map(|(_, _, v)| v)
                .collect()
        };
        let mut all = of(Source::Version);
        if all.is_empty() {
            all = of(Source::Manifest);
        }
        Some((*all.iter().min()?, *all.iter().max()?))
    }

    /// The cluster's version: its oldest API server (the one every other component must
    /// stay compatible with), as kubeadm reports it.
    pub fn cluster_version(&self) -> Option<Version> {
        self.api_servers().map(|(oldest, _)| oldest)
    }

    /// Whether every Kubernetes part read on `host` is at `target`.
    pub fn host_at(&self, host: &str, target: Version) -> bool {
        self.of_host(host)
            .filter(|r| r.part.follows_kubernetes())
            .all(|r| r.version == Some(target))
    }
}

/// A component outside the version-skew policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub part: Part,
    pub host: String,
    pub source: Source,
    pub version: Version,
    /// What the policy says and how this breaks it.
    pub reason: String,
    /// How to bring it back inside the policy.
    pub fix: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} on {} is {} ({}): {}",
            self.part,
            self.host,
            self.version,
            self.source.describe(),
            self.reason
        )
    }
}

/// Minor versions from `a` up to `b` (negative when `b` is older); majors count as far apart.
fn minors(a: Version, b: Version) -> i64 {
    match a.major.cmp(&b.major) {
        std::cmp::Ordering::Equal => i64::from(b.minor) - i64::from(a.minor),
        std::cmp::Ordering::Less => i64::MAX / 2,
        std::cmp::Ordering::Greater => i64::MIN / 2,
    }
}

fn minor_of(v: Version) -> String {
    format!("v{}.{}", v.major, v.minor)
}

/// Every component outside the version-skew policy. The policy counts minor versions
/// (a kubelet one patch ahead of its API server is inside it).
pub fn skew_violations(live: &LiveVersions) -> Vec<Violation> {
    let Some((oldest, newest)) = live.api_servers() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if minors(oldest, newest) > 1 {
        for (host, source, v) in live.versions(Part::ApiServer) {
            if v == oldest {
                out.push(Violation {
                    part: Part::ApiServer,
                    host: host.to_string(),
                    source,
                    version: v,
                    reason: format!(
                        "the API servers must be within one minor of each other, and another runs {newest}"
                    ),
                    fix: format!(
                        "bring the API servers to one minor: the oldest at {oldest} cannot serve next to {newest}"
                    ),
                });
            }
        }
    }
    let rules: [(Part, i64); 3] = [
        (Part::Kubelet, 3),
        (Part::ControllerManager, 1),
        (Part::Scheduler, 1),
    ];
    for (part, max_older) in rules {
        for (host, source, v) in live.versions(part) {
            let (reason, fix) = if minors(oldest, v) > 0 {
                (
                    format!(
                        "it is newer than the API server ({oldest}); {part} must never be newer than the API server"
                    ),
                    format!(
                        "put {part} on {host} back to {} (or first upgrade every API server to {})",
                        minor_of(oldest),
                        minor_of(v)
                    ),
                )
            } else if minors(v, newest) > max_older {
                (
                    format!(
                        "it is {} minors older than the API server ({newest}); {part} may be at most {max_older} minor{} older",
                        minors(v, newest),
                        if max_older == 1 { "" } else { "s" }
                    ),
                    format!(
                        "upgrade {part} on {host} to at least v{}.{} first",
                        newest.major,
                        i64::from(newest.minor) - max_older
                    ),
                )
            } else {
                continue;
            };
            out.push(Violation {
                part,
                host: host.to_string(),
                source,
                version: v,
                reason,
                fix,
            });
        }
    }
    out
}

/// Warnings that do not refuse an upgrade (kubectl outside its ±1 minor, readings missing).
pub fn warnings(live: &LiveVersions) -> Vec<String> {
    let mut out = Vec::new();
    if let Some((oldest, newest)) = live.api_servers() {
        for (host, _, v) in live.versions(Part::Kubectl) {
            if minors(v, oldest) > 1 || minors(newest, v) > 1 {
                out.push(format!(
                    "kubectl on {host} is {v}: kubectl is supported within one minor of the API server ({oldest}); the upgrade replaces it"
                ));
            }
        }
    }
    for r in &live.readings {
        if let Some(e) = &r.error
            && r.part.follows_kubernetes()
        {
            out.push(format!(
                "{} on {} ({}): not read: {e}",
                r.part,
                r.host,
                r.source.describe()
            ));
        }
    }
    out
}

/// A target the plan recommends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AllowedTarget {
    pub version: Version,
    pub kind: TargetKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetKind {
    /// The newest patch of the cluster's minor.
    Patch,
    /// The newest patch of the next minor.
    Minor,
}

/// The newest available patch of `minor` (of `major`).
fn latest_of(available: &[Version], major: u32, minor: u32) -> Option<Version> {
    available
        .iter()
        .copied()
        .filter(|v| v.major == major && v.minor == minor)
        .max()
}

/// The recommended targets from `current`: the newest patch of its minor (when newer than
/// `current`) and the newest patch of the next minor, among `available`.
pub fn allowed_targets(current: Version, available: &[Version]) -> Vec<AllowedTarget> {
    let mut out = Vec::new();
    if let Some(v) = latest_of(available, current.major, current.minor).filter(|v| *v > current) {
        out.push(AllowedTarget {
            version: v,
            kind: TargetKind::Patch,
        });
    }
    if let Some(v) = latest_of(available, current.major, current.minor + 1) {
        out.push(AllowedTarget {
            version: v,
            kind: TargetKind::Minor,
        });
    }
    out
}

/// Why a target is refused, with the path that is allowed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Refusal {
    /// The target is older than an API server.
    Downgrade { current: Version, target: Version },
    /// Another major version.
    OtherMajor { current: Version, target: Version },
    /// More than one minor ahead.
    SkipsMinor {
        current: Version,
        target: Version,
        /// The next minor's newest available patch (`None`: the catalog/mirror has none).
        next: Option<Version>,
    },
    /// Not a version the catalog/mirror has.
    Unknown {
        target: Version,
        available: Vec<Version>,
        /// Where the available versions came from.
        source: String,
    },
    /// The cluster is already outside the version-skew policy.
    OutsideSkew { violations: Vec<Violation> },
    /// etcd cannot go to the version the target needs (see [`etcd_path`]).
    Etcd(EtcdRefusal),
}

impl Refusal {
    /// What is wrong.
    pub fn reason(&self) -> String {
        match self {
            Refusal::Downgrade { current, target } => format!(
                "{target} is older than the cluster's API server ({current}): capstan does not downgrade"
            ),
            Refusal::OtherMajor { current, target } => format!(
                "{target} is another major version than the cluster's {current}: the version-skew policy only covers upgrades within a major"
            ),
            Refusal::SkipsMinor {
                current, target, ..
            } => format!(
                "{target} skips a minor version: the cluster runs {current}, and Kubernetes upgrades one minor at a time"
            ),
            Refusal::Unknown { target, source, .. } => {
                format!("{target} is not available from {source}")
            }
            Refusal::OutsideSkew { violations } => {
                let list: Vec<String> = violations.iter().map(ToString::to_string).collect();
                format!(
                    "the cluster is already outside the version-skew policy: {}",
                    list.join("; ")
                )
            }
            Refusal::Etcd(e) => e.reason(),
        }
    }

    /// The path that is allowed instead.
    pub fn path(&self) -> String {
        match self {
            Refusal::Downgrade { current, .. } => format!(
                "stay at {current} (or upgrade: see the allowed targets of `capstan upgrade plan`); to go back, restore the etcd snapshot taken before the upgrade"
            ),
            Refusal::OtherMajor { .. } => {
                "choose a target of the same major version (see `capstan upgrade plan`)".into()
            }
            Refusal::SkipsMinor {
                current,
                target,
                next,
            } => {
                let step = match next {
                    Some(v) => format!("upgrade to {v} first"),
                    None => format!(
                        "upgrade to v{}.{}.z first (the catalog/mirror has no v{}.{} release: add one)",
                        current.major,
                        current.minor + 1,
                        current.major,
                        current.minor + 1
                    ),
                };
                let rest = if target.minor > current.minor + 2 {
                    format!(", then one minor at a time up to {}", minor_of(*target))
                } else {
                    format!(", then to {target}")
                };
                format!("{step}{rest}")
            }
            Refusal::Unknown { available, .. } => {
                if available.is_empty() {
                    "the mirror has no Kubernetes release capstan can install: add one in dl.k8s.io's layout".into()
                } else {
                    let list: Vec<String> = available.iter().map(ToString::to_string).collect();
                    format!(
                        "choose one of {} (or add the release to the mirror in dl.k8s.io's layout)",
                        list.join(", ")
                    )
                }
            }
            Refusal::OutsideSkew { violations } => {
                let fixes: BTreeSet<&str> = violations.iter().map(|v| v.fix.as_str()).collect();
                format!(
                    "{}; then plan again",
                    fixes.into_iter().collect::<Vec<_>>().join("; ")
                )
            }
            Refusal::Etcd(e) => e.path(),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}. Allowed path: {}", self.reason(), self.path())
    }
}

/// Checks `target` against the cluster and what is available. Re-running to the version the
/// cluster already has is allowed (it finishes an interrupted upgrade, or changes nothing).
pub fn check_target(
    live: &LiveVersions,
    target: Version,
    available: &[Version],
    source: &str,
) -> Result<(), Refusal> {
    let Some((oldest, newest)) = live.api_servers() else {
        // Without an API server version there is nothing to compare with: the caller
        // reports that as a failure to read the cluster, not as a refusal.
        return Ok(());
    };
    if target.major != oldest.major {
        return Err(Refusal::OtherMajor {
            current: oldest,
            target,
        });
    }
    if target < newest {
        return Err(Refusal::Downgrade {
            current: newest,
            target,
        });
    }
    if minors(oldest, target) > 1 {
        return Err(Refusal::SkipsMinor {
            current: oldest,
            target,
            next: latest_of(available, oldest.major, oldest.minor + 1),
        });
    }
    if !available.contains(&target) {
        return Err(Refusal::Unknown {
            target,
            available: available.to_vec(),
            source: source.to_string(),
        });
    }
    let violations = violations_toward(live, target);
    if !violations.is_empty() {
        return Err(Refusal::OutsideSkew { violations });
    }
    Ok(())
}

/// The skew violations that block an upgrade to `target`: every one of
/// [`skew_violations`] but those of components that already run `target` itself. Those are
/// the mark of an upgrade to `target` that stopped half-way (the first control plane's
/// kubelet at the target beside an API server not upgraded yet): finishing it is the way
/// back inside the policy, so it is allowed. Only meaningful for a target within one minor
/// of the oldest API server (see [`check_target`]).
pub fn violations_toward(live: &LiveVersions, target: Version) -> Vec<Violation> {
    skew_violations(live)
        .into_iter()
        .filter(|v| v.version != target)
        .collect()
}

// ---- etcd ---------------------------------------------------------------------------------
//
// etcd's own upgrade rules (etcd-io/website, content/en/docs/*/upgrades/upgrade_3_5.md and
// upgrade_3_6.md): a rolling upgrade replaces one member at a time, on a healthy cluster;
// minors are never skipped (3.4 → 3.5 → 3.6), so every member runs the previous minor before
// any member starts the next; the newest patch of a minor comes before the next minor; and
// before 3.6 every 3.5 member runs 3.5.26 or later (the patches that fix the upgrade
// blockers). capstan does not downgrade etcd.

/// The oldest 3.5 patch from which etcd's guide allows the upgrade to 3.6.
pub const ETCD_3_6_NEEDS: Version = Version {
    major: 3,
    minor: 5,
    patch: 26,
};

/// An etcd version of the inventory or the catalog (`3.5.30` or `v3.5.30`).
pub fn etcd_version(text: &str) -> Option<Version> {
    Version::parse(&format!("v{}", text.trim().trim_start_matches('v')))
}

/// Why etcd cannot go to its target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "etcd", rename_all = "kebab-case")]
pub enum EtcdRefusal {
    /// A member's version could not be read.
    Unread { member: String, why: String },
    /// A member runs a newer etcd than the target.
    Downgrade {
        member: String,
        current: Version,
        target: Version,
    },
    /// Another major version.
    OtherMajor { current: Version, target: Version },
    /// The members run more than one minor apart (outside etcd's rolling upgrade).
    MembersApart { oldest: Version, newest: Version },
    /// A version the walk needs is not on the catalog/mirror: the minor between the
    /// members and the target (`at_least` unset), or 3.5.26+ before 3.6.
    Missing {
        /// `v3.5` in the text.
        major: u32,
        minor: u32,
        /// The oldest patch of that minor that will do.
        #[serde(skip_serializing_if = "Option::is_none")]
        at_least: Option<Version>,
        /// The newest patch of that minor that is available, if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        newest: Option<Version>,
        target: Version,
        source: String,
    },
    /// The target itself is not on the catalog/mirror.
    Unknown {
        target: Version,
        available: Vec<Version>,
        source: String,
    },
}

impl EtcdRefusal {
    pub fn reason(&self) -> String {
        match self {
            EtcdRefusal::Unread { member, why } => {
                format!("the etcd version of member {member} could not be read ({why})")
            }
            EtcdRefusal::Downgrade {
                member,
                current,
                target,
            } => format!(
                "etcd member {member} runs {current}, newer than the etcd target {target}: capstan does not downgrade etcd"
            ),
            EtcdRefusal::OtherMajor { current, target } => {
                format!("etcd {target} is another major version than the members' {current}")
            }
            EtcdRefusal::MembersApart { oldest, newest } => format!(
                "the etcd members run {oldest} and {newest}, more than one minor apart: etcd supports mixed versions only one minor apart"
            ),
            EtcdRefusal::Missing {
                major,
                minor,
                at_least,
                newest,
                target,
                source,
            } => {
                let have = newest.map_or_else(
                    || format!("{source} has no v{major}.{minor} release"),
                    |n| format!("the newest v{major}.{minor} of {source} is {n}"),
                );
                match at_least {
                    Some(min) => format!(
                        "etcd {target} needs every member at {min} or later first (etcd's upgrade guide), and {have}"
                    ),
                    None => format!(
                        "etcd {target} needs every member at v{major}.{minor} first (etcd upgrades one minor at a time), and {have}"
                    ),
                }
            }
            EtcdRefusal::Unknown { target, source, .. } => {
                format!("etcd {target} is not available from {source}")
            }
        }
    }

    pub fn path(&self) -> String {
        match self {
            EtcdRefusal::Unread { member, .. } => {
                format!("bring etcd on {member} back to health (`capstan check`), then plan again")
            }
            EtcdRefusal::Downgrade { current, .. } => format!(
                "set `cluster.versions.etcd` in the inventory to {current} or newer (to go back, restore an etcd snapshot)"
            ),
            EtcdRefusal::OtherMajor { current, .. } => format!(
                "set `cluster.versions.etcd` to a v{}.x release",
                current.major
            ),
            EtcdRefusal::MembersApart { newest, .. } => format!(
                "bring every member to v{}.{} by hand first, then plan again",
                newest.major, newest.minor
            ),
            EtcdRefusal::Missing {
                major,
                minor,
                at_least,
                ..
            } => match at_least {
                Some(min) => format!(
                    "add etcd {min} or a later v{major}.{minor} patch to the mirror (etcd-v{major}.{minor}.Z-linux-ARCH.tar.gz in GitHub's release layout), then run again: the members go through it first"
                ),
                None => format!(
                    "add an etcd v{major}.{minor}.z release to the mirror (etcd-v{major}.{minor}.Z-linux-ARCH.tar.gz in GitHub's release layout), then run again: the members go through it first"
                ),
            },
            EtcdRefusal::Unknown { available, .. } => {
                let list: Vec<String> = available.iter().map(ToString::to_string).collect();
                format!(
                    "set `cluster.versions.etcd` to one of {} (or add the release to the mirror)",
                    if list.is_empty() {
                        "the releases you add".to_string()
                    } else {
                        list.join(", ")
                    }
                )
            }
        }
    }
}

/// The etcd versions the members go through to reach `target`, in order (the last is
/// `target`; empty when every member runs it). `members` are the etcd members in inventory
/// order; their versions are those `etcdctl endpoint status` reported in `live`;
/// `available` are the etcd releases of the catalog/mirror (`source` names it).
///
/// Each minor between the members and the target is passed at its newest available patch;
/// when every member runs one minor, its newest patch comes first; 3.6 needs 3.5.26+ first.
/// A stopped rollout (members one minor apart) is finished before the next minor.
pub fn etcd_path(
    live: &LiveVersions,
    members: &[String],
    target: Version,
    available: &[Version],
    source: &str,
) -> Result<Vec<Version>, EtcdRefusal> {
    let mut at = Vec::new();
    for m in members {
        let reading = live
            .readings
            .iter()
            .find(|r| r.part == Part::Etcd && r.host == *m);
        match reading.and_then(|r| r.version) {
            Some(v) => at.push((m.as_str(), v)),
            None => {
                return Err(EtcdRefusal::Unread {
                    member: m.clone(),
                    why: reading
                        .and_then(|r| r.error.clone())
                        .unwrap_or_else(|| "no reading".into()),
                });
            }
        }
    }
    let Some(&(_, oldest)) = at.iter().min_by_key(|(_, v)| *v) else {
        return Ok(Vec::new());
    };
    let &(newest_member, newest) = at.iter().max_by_key(|(_, v)| *v).unwrap_or(&at[0]);
    if target.major != oldest.major || newest.major != oldest.major {
        return Err(EtcdRefusal::OtherMajor {
            current: oldest,
            target,
        });
    }
    if newest > target {
        return Err(EtcdRefusal::Downgrade {
            member: newest_member.to_string(),
            current: newest,
            target,
        });
    }
    if minors(oldest, newest) > 1 {
        return Err(EtcdRefusal::MembersApart { oldest, newest });
    }
    if oldest == target {
        return Ok(Vec::new());
    }
    if !available.contains(&target) {
        return Err(EtcdRefusal::Unknown {
            target,
            available: available
                .iter()
                .copied()
                .filter(|v| v.major == target.major)
                .collect(),
            source: source.to_string(),
        });
    }
    let missing = |minor: u32, at_least: Option<Version>| EtcdRefusal::Missing {
        major: target.major,
        minor,
        at_least,
        newest: latest_of(available, target.major, minor),
        target,
        source: source.to_string(),
    };
    let mut hops: Vec<Version> = Vec::new();
    // The lowest version any member runs after the hops so far.
    let mut floor = oldest;
    for minor in oldest.minor..=target.minor {
        let hop = if minor == target.minor {
            target
        } else if minor == oldest.minor {
            // The newest patch of the members' minor first, unless a rollout to the next
            // minor is under way (some member runs it already).
            match latest_of(available, target.major, minor) {
                Some(v) if v > floor && newest.minor == oldest.minor => v,
                _ => floor,
            }
        } else {
            latest_of(available, target.major, minor).ok_or_else(|| missing(minor, None))?
        };
        if minor == 6 && target.major == 3 && minor > oldest.minor {
            // Into 3.6: every member at 3.5.26 or later first.
            if floor < ETCD_3_6_NEEDS {
                return Err(missing(5, Some(ETCD_3_6_NEEDS)));
            }
        }
        // Members already at the hop (a stopped rollout) are skipped by the steps; a hop
        // no member is below is no hop.
        if hop > floor {
            hops.push(hop);
            floor = hop;
        }
    }
    Ok(hops)
}

/// The etcd steps over `hops` (see [`etcd_path`]): for each hop, each member below it, one
/// at a time, in inventory order.
pub fn etcd_steps(live: &LiveVersions, members: &[String], hops: &[Version]) -> Vec<Step> {
    let mut out = Vec::new();
    let mut now: Vec<(String, Option<Version>)> = members
        .iter()
        .map(|m| {
            (
                m.clone(),
                live.versions(Part::Etcd)
                    .find(|(h, _, _)| *h == m.as_str())
                    .map(|(_, _, v)| v),
            )
        })
        .collect();
    for &hop in hops {
        for (member, version) in &mut now {
            if version.is_some_and(|v| v >= hop) {
                continue;
            }
            out.push(Step::EtcdMember {
                member: member.clone(),
                from: *version,
                to: hop,
            });
            *version = Some(hop);
        }
    }
    out
}

/// How many workers may be down at once: `N` or `P%` of the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MaxUnavailable {
    Count(u32),
    Percent(u32),
}

impl Default for MaxUnavailable {
    fn default() -> Self {
        MaxUnavailable::Count(1)
    }
}

impl MaxUnavailable {
    /// Parses `2` or `25%`.
    pub fn parse(text: &str) -> Result<MaxUnavailable, String> {
        let t = text.trim();
        let bad = || {
            format!(
                "--max-unavailable `{text}` is not a number of workers (1, 2, …) or a percentage of them (1% to 100%)"
            )
        };
        if let Some(p) = t.strip_suffix('%') {
            let p: u32 = p.parse().map_err(|_| bad())?;
            if (1..=100).contains(&p) {
                Ok(MaxUnavailable::Percent(p))
            } else {
                Err(bad())
            }
        } else {
            let n: u32 = t.parse().map_err(|_| bad())?;
            if n >= 1 {
                Ok(MaxUnavailable::Count(n))
            } else {
                Err(bad())
            }
        }
    }

    /// The batch size for `workers` workers: at least one, at most all of them (so a single
    /// worker is always upgraded alone); a percentage rounds down.
    pub fn batch_size(self, workers: usize) -> usize {
        let n = match self {
            MaxUnavailable::Count(n) => n as usize,
            MaxUnavailable::Percent(p) => workers * p as usize / 100,
        };
        n.clamp(1, workers.max(1))
    }
}

impl fmt::Display for MaxUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaxUnavailable::Count(n) => write!(f, "{n}"),
            MaxUnavailable::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// A host as the steps see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepHost {
    pub name: String,
    pub control_plane: bool,
    /// Runs a kubelet (has a Node to cordon and drain).
    pub kubelet: bool,
    /// An etcd member.
    pub etcd: bool,
}

/// One host's upgrade within a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostUpgrade {
    pub host: String,
    /// The host's current Kubernetes version (its API server on a control plane, else its
    /// kubelet); `None` when it could not be read.
    pub from: Option<Version>,
    pub to: Version,
    /// Cordon and drain before, uncordon after (hosts with a kubelet).
    pub drain: bool,
}

/// One step of an upgrade, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum Step {
    /// `etcdctl snapshot save` on `member`, verified, copied to `.capstan/backups/`.
    EtcdSnapshot {
        member: String,
        cluster_version: Version,
    },
    /// One etcd member to `to`: the etcd role on that host only (new etcd and etcdctl, the
    /// unit restarted), then gate on `etcdctl endpoint health --cluster` and on the member
    /// reporting `to` in `etcdctl endpoint status`.
    EtcdMember {
        member: String,
        /// What it runs before this step (`None`: not read).
        from: Option<Version>,
        to: Version,
    },
    /// One control plane: new manifests (API server first, then controller-manager and
    /// scheduler), gate on its `/readyz` and `/version`, then its kubelet and kubectl.
    ControlPlane(HostUpgrade),
    /// Workers upgraded together (at most `--max-unavailable`).
    Workers {
        batch: usize,
        hosts: Vec<HostUpgrade>,
    },
}

impl Step {
    /// One line for a text plan.
    pub fn describe(&self) -> String {
        let from = |h: &HostUpgrade| h.from.map_or("?".to_string(), |v| v.to_string());
        match self {
            Step::EtcdSnapshot {
                member,
                cluster_version,
            } => format!(
                "etcd snapshot on {member} (etcdctl snapshot save, verified), copied to .capstan/backups/ as of {cluster_version}"
            ),
            Step::EtcdMember { member, from, to } => format!(
                "etcd member {member} ({} → {to}): etcd and etcdctl {to}, restart etcd (gate: endpoint health --cluster, endpoint status = {to})",
                from.map_or("?".to_string(), |v| v.to_string())
            ),
            Step::ControlPlane(h) => format!(
                "control plane {} ({} → {}): {}kube-apiserver, then kube-controller-manager and kube-scheduler (gate: /readyz and /version = {}), then kubelet and kubectl, wait Ready{}",
                h.host,
                from(h),
                h.to,
                if h.drain { "cordon, drain; " } else { "" },
                h.to,
                if h.drain { ", uncordon" } else { "" }
            ),
            Step::Workers { batch, hosts } => {
                let names: Vec<String> = hosts
                    .iter()
                    .map(|h| format!("{} ({} → {})", h.host, from(h), h.to))
                    .collect();
                format!(
                    "workers batch {batch}: {}: cordon, drain (eviction API), kubelet and kubectl, restart, wait Ready, uncordon",
                    names.join(", ")
                )
            }
        }
    }
}

/// The steps from `live` to `target` over `hosts` (in inventory order), with etcd going
/// through `etcd_hops` first (see [`etcd_path`]), and the hosts that are already at the
/// target (skipped: re-running resumes).
pub fn steps(
    live: &LiveVersions,
    hosts: &[StepHost],
    target: Version,
    etcd_hops: &[Version],
    max_unavailable: MaxUnavailable,
) -> (Vec<Step>, Vec<String>) {
    let current = |h: &StepHost| -> Option<Version> {
        let part = if h.control_plane {
            Part::ApiServer
        } else {
            Part::Kubelet
        };
        live.versions(part)
            .filter(|(host, _, _)| *host == h.name)
            .map(|(_, _, v)| v)
            .min()
    };
    let upgrade = |h: &StepHost| HostUpgrade {
        host: h.name.clone(),
        from: current(h),
        to: target,
        drain: h.kubelet,
    };
    let mut done = Vec::new();
    let mut cps = Vec::new();
    let mut workers = Vec::new();
    for h in hosts.iter().filter(|h| h.control_plane || h.kubelet) {
        if live.host_at(&h.name, target) && live.of_host(&h.name).next().is_some() {
            done.push(h.name.clone());
        } else if h.control_plane {
            cps.push(upgrade(h));
        } else {
            workers.push(upgrade(h));
        }
    }
    let members: Vec<String> = hosts
        .iter()
        .filter(|h| h.etcd)
        .map(|h| h.name.clone())
        .collect();
    let etcd = etcd_steps(live, &members, etcd_hops);
    let mut out = Vec::new();
    if (!cps.is_empty() || !etcd.is_empty())
        && let Some(member) = members.first()
    {
        out.push(Step::EtcdSnapshot {
            member: member.clone(),
            cluster_version: live.cluster_version().unwrap_or(target),
        });
    }
    out.extend(etcd);
    out.extend(cps.into_iter().map(Step::ControlPlane));
    let all_workers = hosts
        .iter()
        .filter(|h| h.kubelet && !h.control_plane)
        .count();
    let size = max_unavailable.batch_size(all_workers);
    for (i, chunk) in workers.chunks(size).enumerate() {
        out.push(Step::Workers {
            batch: i + 1,
            hosts: chunk.to_vec(),
        });
    }
    (out, done)
}

/// Per part and host, what the upgrade will put there: the Kubernetes parts go to `target`;
/// etcd and containerd to the versions the inventory pins (`pinned`, by part).
pub fn target_of(part: Part, target: Version, pinned: &BTreeMap<Part, String>) -> Option<String> {
    if part.follows_kubernetes() {
        Some(target.to_string())
    } else {
        pinned.get(&part).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Version {
        Version::parse(text).unwrap()
    }

    fn reading(part: Part, host: &str, source: Source, version: &str) -> Reading {
        Reading::ok(part, host, source, version, Some(v(version)))
    }

    /// cp1 (control plane, etcd) and w1, w2 (workers), everything at `version`.
    fn cluster(version: &str) -> LiveVersions {
        let mut readings = vec![
            reading(Part::ApiServer, "cp1", Source::Version, version),
            reading(Part::ApiServer, "cp1", Source::Manifest, version),
            reading(Part::ControllerManager, "cp1", Source::Manifest, version),
            reading(Part::Scheduler, "cp1", Source::Manifest, version),
        ];
        for h in ["cp1", "w1", "w2"] {
            readings.push(reading(Part::Kubelet, h, Source::Node, version));
            readings.push(reading(Part::Kubelet, h, Source::Binary, version));
            readings.push(reading(Part::Kubectl, h, Source::Binary, version));
        }
        readings.push(Reading::ok(
            Part::Etcd,
            "cp1",
            Source::EndpointStatus,
            "3.4.23",
            Some(v("v3.4.23")),
        ));
        LiveVersions { readings }
    }

    fn set(live: &mut LiveVersions, part: Part, host: &str, source: Source, version: &str) {
        let r = live
            .readings
            .iter_mut()
            .find(|r| r.part == part && r.host == host && r.source == source)
            .unwrap();
        r.raw = Some(version.to_string());
        r.version = Some(v(version));
    }

    fn mirror() -> Vec<Version> {
        ["v1.31.9", "v1.32.4", "v1.32.5", "v1.33.1"].map(v).to_vec()
    }

    fn hosts() -> Vec<StepHost> {
        vec![
            StepHost {
                name: "cp1".into(),
                control_plane: true,
                kubelet: true,
                etcd: true,
            },
            StepHost {
                name: "w1".into(),
                control_plane: false,
                kubelet: true,
                etcd: false,
            },
            StepHost {
                name: "w2".into(),
                control_plane: false,
                kubelet: true,
                etcd: false,
            },
        ]
    }

    #[test]
    fn targets_are_the_newest_patch_of_this_minor_and_of_the_next() {
        let t = allowed_targets(v("v1.32.4"), &mirror());
        assert_eq!(
            t,
            vec![
                AllowedTarget {
                    version: v("v1.32.5"),
                    kind: TargetKind::Patch
                },
                AllowedTarget {
                    version: v("v1.33.1"),
                    kind: TargetKind::Minor
                },
            ]
        );
        // At the newest patch: only the next minor.
        let t = allowed_targets(v("v1.32.5"), &mirror());
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].version, v("v1.33.1"));
        // v1.31.9 is the newest v1.31: only v1.32.5, never v1.33.
        let t = allowed_targets(v("v1.31.9"), &mirror());
        assert_eq!(
            t.iter().map(|t| t.version).collect::<Vec<_>>(),
            [v("v1.32.5")]
        );
        // Nothing newer: nothing allowed.
        assert!(allowed_targets(v("v1.33.1"), &mirror()).is_empty());
    }

    #[test]
    fn the_cluster_version_is_the_oldest_api_server() {
        let mut live = cluster("v1.32.4");
        live.readings
            .push(reading(Part::ApiServer, "cp2", Source::Version, "v1.33.1"));
        assert_eq!(live.cluster_version(), Some(v("v1.32.4")));
        assert_eq!(LiveVersions::default().cluster_version(), None);
        // A manifest naming a newer image (its pod not running yet) does not count…
        let mut live = cluster("v1.32.4");
        set(
            &mut live,
            Part::ApiServer,
            "cp1",
            Source::Manifest,
            "v1.33.1",
        );
        assert_eq!(live.api_servers(), Some((v("v1.32.4"), v("v1.32.4"))));
        assert!(!live.host_at("cp1", v("v1.33.1")));
        // … unless no API server answered.
        live.readings
            .retain(|r| !(r.part == Part::ApiServer && r.source == Source::Version));
        assert_eq!(live.cluster_version(), Some(v("v1.33.1")));
    }

    #[test]
    fn allowed_targets_pass() {
        let live = cluster("v1.32.4");
        for t in ["v1.32.5", "v1.33.1", "v1.32.4"] {
            assert_eq!(
                check_target(&live, v(t), &mirror(), "the mirror"),
                Ok(()),
                "{t}"
            );
        }
    }

    #[test]
    fn a_downgrade_is_refused() {
        let live = cluster("v1.32.4");
        let err = check_target(&live, v("v1.31.9"), &mirror(), "the mirror").unwrap_err();
        assert!(matches!(err, Refusal::Downgrade { .. }), "{err:?}");
        assert!(err.reason().contains("older than"), "{err}");
        assert!(err.reason().contains("v1.32.4"), "{err}");
        // A patch down is a downgrade too; so is going below an API server already upgraded.
        let live = cluster("v1.32.5");
        assert!(matches!(
            check_target(&live, v("v1.32.4"), &mirror(), "m"),
            Err(Refusal::Downgrade { .. })
        ));
        let mut live = cluster("v1.32.4");
        live.readings
            .push(reading(Part::ApiServer, "cp2", Source::Version, "v1.32.5"));
        assert!(matches!(
            check_target(&live, v("v1.32.4"), &mirror(), "m"),
            Err(Refusal::Downgrade { .. })
        ));
    }

    #[test]
    fn skipping_a_minor_is_refused_with_the_path() {
        let live = cluster("v1.31.9");
        let err = check_target(&live, v("v1.33.1"), &mirror(), "the mirror").unwrap_err();
        assert_eq!(
            err,
            Refusal::SkipsMinor {
                current: v("v1.31.9"),
                target: v("v1.33.1"),
                next: Some(v("v1.32.5"))
            }
        );
        assert!(err.reason().contains("skips a minor"), "{err}");
        assert_eq!(err.path(), "upgrade to v1.32.5 first, then to v1.33.1");
        // Without a v1.32 on the mirror: the z stays open.
        let err = check_target(&live, v("v1.33.1"), &[v("v1.33.1")], "m").unwrap_err();
        assert!(err.path().starts_with("upgrade to v1.32.z first"), "{err}");
        // Three minors ahead: one at a time.
        let err = check_target(&live, v("v1.34.2"), &mirror(), "m").unwrap_err();
        assert!(
            err.path().contains("one minor at a time up to v1.34"),
            "{err}"
        );
    }

    #[test]
    fn another_major_is_refused() {
        let live = cluster("v1.32.4");
        let err = check_target(&live, v("v2.0.0"), &mirror(), "m").unwrap_err();
        assert!(matches!(err, Refusal::OtherMajor { .. }), "{err:?}");
    }

    #[test]
    fn a_version_the_mirror_lacks_is_refused_with_the_choices() {
        let live = cluster("v1.32.4");
        let err = check_target(&live, v("v1.33.0"), &mirror(), "the mirror file:///m").unwrap_err();
        assert!(matches!(err, Refusal::Unknown { .. }), "{err:?}");
        assert!(err.reason().contains("file:///m"), "{err}");
        assert!(err.path().contains("v1.32.5, v1.33.1"), "{err}");
        let err = check_target(&live, v("v1.33.0"), &[], "m").unwrap_err();
        assert!(err.path().contains("no Kubernetes release"), "{err}");
    }

    #[test]
    fn a_kubelet_newer_than_the_api_server_refuses_any_target() {
        let mut live = cluster("v1.31.9");
        set(&mut live, Part::Kubelet, "w1", Source::Binary, "v1.33.1");
        let found = skew_violations(&live);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].host, "w1");
        assert_eq!(found[0].source, Source::Binary);
        assert!(
            found[0].reason.contains("newer than the API server"),
            "{}",
            found[0]
        );
        let err = check_target(&live, v("v1.32.5"), &mirror(), "m").unwrap_err();
        assert!(matches!(err, Refusal::OutsideSkew { .. }), "{err:?}");
        assert!(err.reason().contains("kubelet on w1 is v1.33.1"), "{err}");
        assert!(
            err.path().contains("put kubelet on w1 back to v1.31"),
            "{err}"
        );
        // A patch ahead is inside the policy.
        let mut live = cluster("v1.32.4");
        set(&mut live, Part::Kubelet, "w1", Source::Node, "v1.32.5");
        assert!(skew_violations(&live).is_empty());
    }

    #[test]
    fn an_upgrade_stopped_half_way_may_be_finished_but_not_redirected() {
        // cp1 upgraded to v1.32.5 (API server, controller-manager, scheduler, kubelet),
        // cp2 not yet: cp1's parts are newer than cp2's API server.
        let mut live = cluster("v1.31.9");
        for (part, source) in [
            (Part::ApiServer, Source::Version),
            (Part::ApiServer, Source::Manifest),
            (Part::ControllerManager, Source::Manifest),
            (Part::Scheduler, Source::Manifest),
            (Part::Kubelet, Source::Binary),
            (Part::Kubelet, Source::Node),
        ] {
            set(&mut live, part, "cp1", source, "v1.32.5");
        }
        live.readings
            .push(reading(Part::ApiServer, "cp2", Source::Version, "v1.31.9"));
        assert!(!skew_violations(&live).is_empty());
        assert_eq!(live.cluster_version(), Some(v("v1.31.9")));
        // Finishing it is the way back inside the policy.
        assert_eq!(check_target(&live, v("v1.32.5"), &mirror(), "m"), Ok(()));
        assert!(violations_toward(&live, v("v1.32.5")).is_empty());
        // Another target is not: cp1's parts are outside the policy for it.
        let err = check_target(&live, v("v1.32.4"), &mirror(), "m").unwrap_err();
        assert!(matches!(err, Refusal::Downgrade { .. }), "{err:?}");
        let mut other = mirror();
        other.push(v("v1.32.6"));
        let err = check_target(&live, v("v1.32.6"), &other, "m").unwrap_err();
        assert!(matches!(err, Refusal::OutsideSkew { .. }), "{err:?}");
    }

    #[test]
    fn a_kubelet_more_than_three_minors_older_is_outside() {
        let mut live = cluster("v1.33.1");
        set(&mut live, Part::Kubelet, "w2", Source::Node, "v1.30.0");
        assert!(
            skew_violations(&live).is_empty(),
            "three minors older is allowed"
        );
        set(&mut live, Part::Kubelet, "w2", Source::Node, "v1.29.3");
        let found = skew_violations(&live);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].reason.contains("4 minors older"), "{}", found[0]);
        assert!(found[0].fix.contains("at least v1.30"), "{}", found[0].fix);
    }

    #[test]
    fn controller_manager_and_scheduler_stay_within_one_minor_below() {
        let mut live = cluster("v1.32.4");
        set(
            &mut live,
            Part::ControllerManager,
            "cp1",
            Source::Manifest,
            "v1.33.1",
        );
        set(
            &mut live,
            Part::Scheduler,
            "cp1",
            Source::Manifest,
            "v1.30.2",
        );
        let found = skew_violations(&live);
        assert_eq!(found.len(), 2, "{found:?}");
        let cm = found
            .iter()
            .find(|f| f.part == Part::ControllerManager)
            .unwrap();
        assert!(cm.reason.contains("newer than the API server"), "{cm}");
        let s = found.iter().find(|f| f.part == Part::Scheduler).unwrap();
        assert!(s.reason.contains("2 minors older"), "{s}");
        assert!(s.reason.contains("at most 1 minor older"), "{s}");
        // One minor older is inside (the middle of an upgrade).
        set(
            &mut live,
            Part::ControllerManager,
            "cp1",
            Source::Manifest,
            "v1.31.9",
        );
        set(
            &mut live,
            Part::Scheduler,
            "cp1",
            Source::Manifest,
            "v1.31.9",
        );
        assert!(skew_violations(&live).is_empty());
    }

    #[test]
    fn api_servers_two_minors_apart_are_outside() {
        let mut live = cluster("v1.31.9");
        live.readings
            .push(reading(Part::ApiServer, "cp2", Source::Version, "v1.33.1"));
        let found = skew_violations(&live);
        assert!(
            found
                .iter()
                .any(|f| f.part == Part::ApiServer && f.host == "cp1"),
            "{found:?}"
        );
    }

    #[test]
    fn kubectl_out_of_range_only_warns() {
        let mut live = cluster("v1.32.4");
        set(&mut live, Part::Kubectl, "w1", Source::Binary, "v1.30.1");
        assert!(skew_violations(&live).is_empty());
        let w = warnings(&live);
        assert!(w.iter().any(|w| w.contains("kubectl on w1")), "{w:?}");
        live.readings.push(Reading::failed(
            Part::Kubelet,
            "w2",
            Source::Binary,
            "not installed",
        ));
        assert!(warnings(&live).iter().any(|w| w.contains("not installed")));
    }

    #[test]
    fn max_unavailable_parses_counts_and_percentages() {
        assert_eq!(MaxUnavailable::parse("2"), Ok(MaxUnavailable::Count(2)));
        assert_eq!(
            MaxUnavailable::parse("25%"),
            Ok(MaxUnavailable::Percent(25))
        );
        for bad in ["0", "0%", "101%", "-1", "x", "", "1.5"] {
            let err = MaxUnavailable::parse(bad).unwrap_err();
            assert!(err.contains("--max-unavailable"), "{bad}: {err}");
        }
        assert_eq!(MaxUnavailable::Count(3).batch_size(10), 3);
        assert_eq!(MaxUnavailable::Count(3).batch_size(1), 1);
        assert_eq!(MaxUnavailable::Percent(25).batch_size(10), 2);
        assert_eq!(MaxUnavailable::Percent(10).batch_size(3), 1);
        assert_eq!(MaxUnavailable::Percent(100).batch_size(4), 4);
        assert_eq!(MaxUnavailable::Count(1).batch_size(0), 1);
    }

    #[test]
    fn steps_snapshot_then_control_planes_then_worker_batches() {
        let live = cluster("v1.32.4");
        let (steps, done) =
            super::steps(&live, &hosts(), v("v1.33.1"), &[], MaxUnavailable::Count(1));
        assert!(done.is_empty());
        assert_eq!(steps.len(), 4, "{steps:?}");
        assert!(matches!(&steps[0], Step::EtcdSnapshot { member, .. } if member == "cp1"));
        let Step::ControlPlane(cp) = &steps[1] else {
            panic!("{steps:?}")
        };
        assert_eq!(cp.host, "cp1");
        assert_eq!(cp.from, Some(v("v1.32.4")));
        assert!(cp.drain);
        assert!(
            matches!(&steps[2], Step::Workers { batch: 1, hosts } if hosts.len() == 1 && hosts[0].host == "w1")
        );
        assert!(matches!(&steps[3], Step::Workers { batch: 2, hosts } if hosts[0].host == "w2"));
        // Two at once: one batch.
        let (steps, _) = super::steps(&live, &hosts(), v("v1.33.1"), &[], MaxUnavailable::Count(2));
        assert!(
            matches!(steps.last(), Some(Step::Workers { batch: 1, hosts }) if hosts.len() == 2)
        );
        assert!(steps[1].describe().contains("cordon, drain"));
    }

    #[test]
    fn hosts_at_the_target_are_skipped_and_no_snapshot_without_control_planes() {
        // cp1 and w1 done (a rollout that stopped at w2): only w2 is left, no snapshot.
        let mut live = cluster("v1.33.1");
        for source in [Source::Node, Source::Binary] {
            set(&mut live, Part::Kubelet, "w2", source, "v1.32.4");
        }
        set(&mut live, Part::Kubectl, "w2", Source::Binary, "v1.32.4");
        let (steps, done) =
            super::steps(&live, &hosts(), v("v1.33.1"), &[], MaxUnavailable::Count(1));
        assert_eq!(done, ["cp1", "w1"]);
        assert_eq!(steps.len(), 1, "{steps:?}");
        assert!(
            matches!(&steps[0], Step::Workers { hosts, .. } if hosts[0].host == "w2" && hosts[0].from == Some(v("v1.32.4")))
        );
        // Everything at the target: nothing to do.
        let live = cluster("v1.33.1");
        let (steps, done) =
            super::steps(&live, &hosts(), v("v1.33.1"), &[], MaxUnavailable::Count(1));
        assert!(steps.is_empty());
        assert_eq!(done.len(), 3);
    }

    /// Three etcd members at the given versions (cp1, cp2, cp3).
    fn etcd_live(versions: [&str; 3]) -> (LiveVersions, Vec<String>) {
        let names: Vec<String> = ["cp1", "cp2", "cp3"].map(String::from).to_vec();
        let readings = names
            .iter()
            .zip(versions)
            .map(|(h, ver)| {
                Reading::ok(
                    Part::Etcd,
                    h,
                    Source::EndpointStatus,
                    ver,
                    etcd_version(ver),
                )
            })
            .collect();
        (LiveVersions { readings }, names)
    }

    fn etcd_mirror(list: &[&str]) -> Vec<Version> {
        list.iter().map(|t| etcd_version(t).unwrap()).collect()
    }

    fn e(t: &str) -> Version {
        etcd_version(t).unwrap()
    }

    #[test]
    fn etcd_versions_parse_with_or_without_v() {
        assert_eq!(etcd_version("3.5.30"), Some(e("v3.5.30")));
        assert_eq!(etcd_version("v3.4.23"), Version::parse("v3.4.23"));
        assert_eq!(etcd_version("3.5"), None);
    }

    #[test]
    fn etcd_one_minor_up_is_one_hop_one_member_at_a_time() {
        let (live, members) = etcd_live(["3.4.23"; 3]);
        let mirror = etcd_mirror(&["3.4.23", "3.5.30"]);
        let hops = etcd_path(&live, &members, e("3.5.30"), &mirror, "m").unwrap();
        assert_eq!(hops, [e("3.5.30")]);
        let steps = etcd_steps(&live, &members, &hops);
        let order: Vec<(&str, Option<Version>, Version)> = steps
            .iter()
            .map(|s| match s {
                Step::EtcdMember { member, from, to } => (member.as_str(), *from, *to),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            order,
            [
                ("cp1", Some(e("3.4.23")), e("3.5.30")),
                ("cp2", Some(e("3.4.23")), e("3.5.30")),
                ("cp3", Some(e("3.4.23")), e("3.5.30")),
            ]
        );
        assert!(
            steps[0]
                .describe()
                .contains("etcd member cp1 (v3.4.23 → v3.5.30)")
        );
        assert!(steps[0].describe().contains("endpoint health --cluster"));
    }

    #[test]
    fn etcd_at_the_target_has_no_hops() {
        let (live, members) = etcd_live(["3.5.30"; 3]);
        let hops = etcd_path(&live, &members, e("v3.5.30"), &[], "m").unwrap();
        assert!(hops.is_empty());
        assert!(etcd_steps(&live, &members, &hops).is_empty());
        // No members (nothing read for none): nothing to do.
        assert_eq!(etcd_path(&live, &[], e("3.6.5"), &[], "m"), Ok(Vec::new()));
    }

    #[test]
    fn etcd_3_4_to_3_6_goes_through_the_newest_3_5() {
        let (live, members) = etcd_live(["3.4.23"; 3]);
        let mirror = etcd_mirror(&["3.4.23", "3.5.21", "3.5.30", "3.6.5"]);
        let hops = etcd_path(&live, &members, e("3.6.5"), &mirror, "m").unwrap();
        assert_eq!(hops, [e("3.5.30"), e("3.6.5")]);
        let steps = etcd_steps(&live, &members, &hops);
        assert_eq!(steps.len(), 6);
        // Every member at 3.5 before any member goes to 3.6.
        let tos: Vec<Version> = steps
            .iter()
            .map(|s| match s {
                Step::EtcdMember { to, .. } => *to,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            tos,
            [
                e("3.5.30"),
                e("3.5.30"),
                e("3.5.30"),
                e("3.6.5"),
                e("3.6.5"),
                e("3.6.5")
            ]
        );
        assert!(
            matches!(&steps[3], Step::EtcdMember { member, from, .. } if member == "cp1" && *from == Some(e("3.5.30")))
        );
    }

    #[test]
    fn etcd_without_the_middle_minor_refuses_naming_the_version_to_add() {
        let (live, members) = etcd_live(["3.4.23"; 3]);
        let mirror = etcd_mirror(&["3.4.23", "3.6.5"]);
        let err =
            etcd_path(&live, &members, e("3.6.5"), &mirror, "the mirror file:///m").unwrap_err();
        assert!(
            matches!(
                err,
                EtcdRefusal::Missing {
                    minor: 5,
                    at_least: None,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.reason().contains("v3.5"), "{}", err.reason());
        assert!(
            err.reason().contains("has no v3.5 release"),
            "{}",
            err.reason()
        );
        assert!(
            err.path().contains("add an etcd v3.5.z release"),
            "{}",
            err.path()
        );
        // As a refusal of the upgrade: the same words.
        let r = Refusal::Etcd(err);
        assert!(r.to_string().contains("add an etcd v3.5.z release"), "{r}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["kind"], "etcd");
        assert_eq!(json["etcd"], "missing");
    }

    #[test]
    fn etcd_3_6_needs_3_5_26_first() {
        let (live, members) = etcd_live(["3.4.23"; 3]);
        let mirror = etcd_mirror(&["3.4.23", "3.5.16", "3.5.21", "3.6.5"]);
        let err = etcd_path(&live, &members, e("3.6.5"), &mirror, "m").unwrap_err();
        assert_eq!(
            err,
            EtcdRefusal::Missing {
                major: 3,
                minor: 5,
                at_least: Some(e("3.5.26")),
                newest: Some(e("3.5.21")),
                target: e("3.6.5"),
                source: "m".into(),
            }
        );
        assert!(err.reason().contains("3.5.26 or later"), "{}", err.reason());
        assert!(err.path().contains("add etcd v3.5.26"), "{}", err.path());
        // Members on 3.5.21 with 3.5.30 available: the newest 3.5 first, then 3.6.
        let (live, members) = etcd_live(["3.5.21"; 3]);
        let mirror = etcd_mirror(&["3.5.21", "3.5.30", "3.6.5"]);
        let hops = etcd_path(&live, &members, e("3.6.5"), &mirror, "m").unwrap();
        assert_eq!(hops, [e("3.5.30"), e("3.6.5")]);
    }

    #[test]
    fn etcd_stopped_half_way_resumes_with_the_members_left() {
        // cp1 upgraded to 3.5.30, cp2 and cp3 not yet.
        let (live, members) = etcd_live(["3.5.30", "3.4.23", "3.4.23"]);
        let mirror = etcd_mirror(&["3.4.23", "3.4.30", "3.5.30"]);
        let hops = etcd_path(&live, &members, e("3.5.30"), &mirror, "m").unwrap();
        // No detour through the newest 3.4 once the next minor is under way.
        assert_eq!(hops, [e("3.5.30")]);
        let steps = etcd_steps(&live, &members, &hops);
        let left: Vec<&str> = steps
            .iter()
            .filter_map(|s| match s {
                Step::EtcdMember { member, .. } => Some(member.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(left, ["cp2", "cp3"]);
        // All on one minor: its newest patch comes first.
        let (live, members) = etcd_live(["3.4.23"; 3]);
        let hops = etcd_path(&live, &members, e("3.5.30"), &mirror, "m").unwrap();
        assert_eq!(hops, [e("3.4.30"), e("3.5.30")]);
    }

    #[test]
    fn etcd_refuses_downgrades_spreads_unread_members_and_unknown_targets() {
        let (live, members) = etcd_live(["3.5.30", "3.4.23", "3.4.23"]);
        let err =
            etcd_path(&live, &members, e("3.4.23"), &etcd_mirror(&["3.4.23"]), "m").unwrap_err();
        assert!(
            matches!(&err, EtcdRefusal::Downgrade { member, .. } if member == "cp1"),
            "{err:?}"
        );
        assert!(
            err.reason().contains("does not downgrade"),
            "{}",
            err.reason()
        );
        let (live, members) = etcd_live(["3.6.5", "3.4.23", "3.6.5"]);
        let err = etcd_path(
            &live,
            &members,
            e("3.6.5"),
            &etcd_mirror(&["3.5.30", "3.6.5"]),
            "m",
        )
        .unwrap_err();
        assert!(matches!(err, EtcdRefusal::MembersApart { .. }), "{err:?}");
        let (mut live, members) = etcd_live(["3.4.23"; 3]);
        live.readings[1] = Reading::failed(
            Part::Etcd,
            "cp2",
            Source::EndpointStatus,
            "exit status 1: context deadline exceeded",
        );
        let err =
            etcd_path(&live, &members, e("3.5.30"), &etcd_mirror(&["3.5.30"]), "m").unwrap_err();
        assert!(
            matches!(&err, EtcdRefusal::Unread { member, .. } if member == "cp2"),
            "{err:?}"
        );
        assert!(
            err.reason().contains("context deadline exceeded"),
            "{}",
            err.reason()
        );
        let (live, members) = etcd_live(["3.4.23"; 3]);
        let err = etcd_path(
            &live,
            &members,
            e("3.5.31"),
            &etcd_mirror(&["3.4.23", "3.5.30"]),
            "m",
        )
        .unwrap_err();
        assert!(matches!(err, EtcdRefusal::Unknown { .. }), "{err:?}");
        assert!(err.path().contains("v3.4.23, v3.5.30"), "{}", err.path());
        let err = etcd_path(&live, &members, e("4.0.0"), &[], "m").unwrap_err();
        assert!(matches!(err, EtcdRefusal::OtherMajor { .. }), "{err:?}");
    }

    #[test]
    fn the_snapshot_comes_before_the_etcd_members_then_the_control_planes() {
        let mut live = cluster("v1.33.1");
        live.readings.retain(|r| r.part != Part::Etcd);
        // cp1 at the Kubernetes target already: etcd alone still takes a snapshot first.
        live.readings.push(Reading::ok(
            Part::Etcd,
            "cp1",
            Source::EndpointStatus,
            "3.4.23",
            etcd_version("3.4.23"),
        ));
        let (steps, done) = super::steps(
            &live,
            &hosts(),
            v("v1.33.1"),
            &[e("3.5.30")],
            MaxUnavailable::Count(1),
        );
        assert_eq!(done.len(), 3);
        assert_eq!(steps.len(), 2, "{steps:?}");
        assert!(matches!(&steps[0], Step::EtcdSnapshot { member, .. } if member == "cp1"));
        assert!(
            matches!(&steps[1], Step::EtcdMember { member, to, .. } if member == "cp1" && *to == e("3.5.30"))
        );
        // With a Kubernetes upgrade: snapshot, etcd, then the control plane.
        let live = cluster("v1.32.4");
        let (steps, _) = super::steps(
            &live,
            &hosts(),
            v("v1.33.1"),
            &[e("3.5.30")],
            MaxUnavailable::Count(1),
        );
        let kinds: Vec<&str> = steps
            .iter()
            .map(|s| match s {
                Step::EtcdSnapshot { .. } => "snapshot",
                Step::EtcdMember { .. } => "etcd",
                Step::ControlPlane(_) => "cp",
                Step::Workers { .. } => "workers",
            })
            .collect();
        assert_eq!(kinds, ["snapshot", "etcd", "cp", "workers", "workers"]);
        let json = serde_json::to_value(&steps[1]).unwrap();
        assert_eq!(json["step"], "etcd-member");
        assert_eq!(json["from"], "v3.4.23");
        assert_eq!(json["to"], "v3.5.30");
    }

    #[test]
    fn etcd_and_containerd_go_to_the_inventory_versions() {
        let pinned = BTreeMap::from([(Part::Etcd, "v3.4.23".to_string())]);
        assert_eq!(
            target_of(Part::Etcd, v("v1.33.1"), &pinned).as_deref(),
            Some("v3.4.23")
        );
        assert_eq!(target_of(Part::Containerd, v("v1.33.1"), &pinned), None);
        assert_eq!(
            target_of(Part::Kubelet, v("v1.33.1"), &pinned).as_deref(),
            Some("v1.33.1")
        );
    }
}
