//! The version catalog as data: `catalog/catalog.yaml`, built into capstan, with a
//! `catalog.yaml` beside the inventory laid over it entry by entry (a field of a minor, a
//! pin of a version), so a new Kubernetes patch or minor is an edit to a file, never Rust.
//!
//! What it holds, per Kubernetes minor: release and end-of-life dates, the newest patch,
//! kubeadm's paired images (CoreDNS, pause, etcd), the containerd releases the minor runs
//! on, and the node software a new inventory gets; per component, version and architecture:
//! the pinned sha256 of upstream's download.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};
use time::Date;

use super::catalog::{Arch, Component};
use crate::inventory::{Problem, Version};
use crate::yaml;

/// The built-in catalog's path in the embedded files.
pub const BUILTIN_PATH: &str = "catalog/catalog.yaml";
/// The override's file name, beside the inventory.
pub const OVERRIDE_NAME: &str = "catalog.yaml";

const BUILTIN_TEXT: &str = include_str!("../../catalog/catalog.yaml");

// --- the file as written ------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(default)]
    sources: BTreeMap<String, String>,
    #[serde(default)]
    kubernetes: BTreeMap<String, MinorSpec>,
    #[serde(default)]
    pins: PinsSpec,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct MinorSpec {
    released: Option<String>,
    end_of_life: Option<String>,
    newest_patch: Option<String>,
    #[serde(default)]
    images: ImagesSpec,
    containerd: Option<Vec<String>>,
    #[serde(default)]
    node: NodeSpec,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImagesSpec {
    coredns: Option<String>,
    pause: Option<String>,
    etcd: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeSpec {
    containerd: Option<String>,
    runc: Option<String>,
    etcd: Option<String>,
    crictl: Option<String>,
    cni_plugins: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PinsSpec {
    #[serde(default)]
    kubelet: BTreeMap<String, PinSpec>,
    #[serde(default)]
    kubectl: BTreeMap<String, PinSpec>,
    #[serde(default)]
    etcd: BTreeMap<String, PinSpec>,
    #[serde(default)]
    containerd: BTreeMap<String, PinSpec>,
    #[serde(default)]
    runc: BTreeMap<String, PinSpec>,
    #[serde(default)]
    crictl: BTreeMap<String, PinSpec>,
    #[serde(default)]
    cni_plugins: BTreeMap<String, PinSpec>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PinSpec {
    amd64: Option<String>,
    arm64: Option<String>,
}

// --- the catalog as capstan uses it -------------------------------------------------------

/// Where an entry came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "path")]
pub enum Origin {
    BuiltIn,
    /// The override file (its path); also when it changed only some fields.
    Override(PathBuf),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::BuiltIn => f.write_str("built in"),
            Origin::Override(p) => write!(f, "{}", p.display()),
        }
    }
}

/// The images kubeadm pairs with a minor (kubeadm's constants.go).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PairedImages {
    pub coredns: String,
    pub pause: String,
    /// kubeadm's `SupportedEtcdVersion` (an image tag: `3.6.6-0`).
    pub etcd: String,
}

/// One Kubernetes minor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Minor {
    /// `v1.35`.
    pub name: String,
    #[serde(skip)]
    pub major: u32,
    #[serde(skip)]
    pub minor: u32,
    pub released: Option<Date>,
    pub end_of_life: Option<Date>,
    /// The newest patch: the file's `newest_patch` or the newest pinned kubelet of the
    /// minor, whichever is newer.
    pub newest_patch: Option<Version>,
    pub images: PairedImages,
    /// Per containerd minor the oldest patch this minor runs on; the newest entry also
    /// stands for every later release of its major.
    pub containerd: Vec<Version>,
    /// The node software a new inventory on this minor gets, by component.
    pub node: BTreeMap<Component, String>,
    pub origin: Origin,
}

/// Whether a minor is upstream-supported on a day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Support {
    /// Not released yet (or no release date known).
    Unreleased,
    Supported,
    EndOfLife,
}

impl Minor {
    pub fn support(&self, today: Date) -> Support {
        match (self.released, self.end_of_life) {
            (Some(r), _) if r > today => Support::Unreleased,
            (None, _) => Support::Unreleased,
            (_, Some(eol)) if eol < today => Support::EndOfLife,
            _ => Support::Supported,
        }
    }

    /// Does this minor run on containerd `c`?
    pub fn supports_containerd(&self, c: &Version) -> bool {
        let newest = self.containerd.iter().max();
        self.containerd.iter().any(|e| {
            (e.major == c.major && e.minor == c.minor && c.patch >= e.patch)
                || (Some(e) == newest && e.major == c.major && c > e)
        })
    }

    /// Why this minor refuses `what` (`containerd v1.7.29`), with the matrix.
    pub fn containerd_refusal(&self, what: &str) -> String {
        format!(
            "Kubernetes {} does not run on {what}: it runs on containerd {} (containerd's RELEASES.md)",
            self.name,
            self.containerd_matrix()
        )
    }

    /// The containerd matrix, for messages: `v2.2.0+, v2.1.5+ (v2.1.x) or v1.7.28+ (v1.7.x)`.
    pub fn containerd_matrix(&self) -> String {
        let mut entries = self.containerd.clone();
        entries.sort_unstable_by(|a, b| b.cmp(a));
        let parts: Vec<String> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                if i == 0 {
                    format!("{e}+")
                } else {
                    format!("{e}+ within v{}.{}", e.major, e.minor)
                }
            })
            .collect();
        match parts.split_last() {
            None => "none listed".into(),
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        }
    }
}

/// One pinned version of a component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pin {
    pub version: String,
    pub amd64: Option<String>,
    pub arm64: Option<String>,
    pub origin: Origin,
}

/// The whole catalog: built in, with the override laid over it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Catalog {
    pub sources: BTreeMap<String, String>,
    /// By (major, minor), oldest first.
    #[serde(skip)]
    pub minors: BTreeMap<(u32, u32), Minor>,
    /// By component, oldest version first.
    #[serde(skip)]
    pub pins: BTreeMap<Component, Vec<Pin>>,
    /// The override file, when there is one.
    pub override_file: Option<PathBuf>,
}

/// A catalog file's problems, each at its line and column.
#[derive(Debug)]
pub struct CatalogProblems {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl Catalog {
    /// The catalog built into capstan.
    pub fn builtin() -> Arc<Catalog> {
        static BUILTIN: OnceLock<Arc<Catalog>> = OnceLock::new();
        BUILTIN
            .get_or_init(|| match Catalog::from_texts(BUILTIN_TEXT, None) {
                Ok(c) => Arc::new(c),
                // A test (builtin_catalog_is_valid) keeps the shipped file valid.
                Err(e) => panic!("the built-in catalog is invalid: {:?}", e.problems),
            })
            .clone()
    }

    /// The built-in catalog, with `dir/catalog.yaml` over it when that file exists.
    pub fn for_inventory_dir(dir: &Path) -> Result<Arc<Catalog>, CatalogProblems> {
        let path = dir.join(OVERRIDE_NAME);
        match std::fs::read_to_string(&path) {
            Ok(text) => Catalog::from_texts(BUILTIN_TEXT, Some((&text, &path))).map(Arc::new),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Catalog::builtin()),
            Err(e) => Err(CatalogProblems {
                file: path,
                problems: vec![Problem {
                    line: 1,
                    col: 1,
                    message: format!("cannot read the catalog override: {e}"),
                    help: Some("make it readable, or remove it to use the built-in catalog".into()),
                }],
            }),
        }
    }

    /// Parses the built-in text and an optional override, merges and validates them.
    pub fn from_texts(
        builtin: &str,
        overlay: Option<(&str, &Path)>,
    ) -> Result<Catalog, CatalogProblems> {
        let base_path = PathBuf::from(BUILTIN_PATH);
        let (base, base_tree) = parse_file(builtin, &base_path)?;
        let mut merged = Merged::default();
        merged.add(base, &base_tree, &Origin::BuiltIn);
        let override_file = match overlay {
            Some((text, path)) => {
                let (over, tree) = parse_file(text, path)?;
                merged.add(over, &tree, &Origin::Override(path.to_path_buf()));
                Some(path.to_path_buf())
            }
            None => None,
        };
        merged.finish(override_file)
    }

    /// The minor of `v`.
    pub fn minor(&self, v: &Version) -> Option<&Minor> {
        self.minors.get(&(v.major, v.minor))
    }

    /// The minor of `v`, or the error that lists the known ones.
    pub fn minor_or_err(&self, v: &Version) -> Result<&Minor, super::ArtifactError> {
        self.minor(v)
            .ok_or_else(|| super::ArtifactError::UnknownMinor {
                version: v.to_string(),
                known: self.minor_names().join(", "),
                file: self.override_hint(),
            })
    }

    /// The refusal of `v`, a release of a minor the catalog does not know: (message, help).
    pub fn unknown_minor(&self, v: &Version) -> (String, String) {
        (
            format!(
                "capstan's catalog does not know Kubernetes {v}'s minor (known: {})",
                self.minor_names().join(", ")
            ),
            format!(
                "use a known minor (see `capstan versions`), or add v{}.{} under `kubernetes:` in {}",
                v.major,
                v.minor,
                self.override_hint()
            ),
        )
    }

    pub fn minor_names(&self) -> Vec<String> {
        self.minors.values().map(|m| m.name.clone()).collect()
    }

    /// Where a user adds entries: the override in use, else `catalog.yaml` beside the inventory.
    pub fn override_hint(&self) -> String {
        self.override_file.as_ref().map_or_else(
            || format!("{OVERRIDE_NAME} beside the inventory"),
            |p| p.display().to_string(),
        )
    }

    /// The versions of `c` the catalog knows, oldest first.
    pub fn known_versions(&self, c: Component) -> Vec<&str> {
        self.pins
            .get(&c)
            .map(|p| p.iter().map(|p| p.version.as_str()).collect())
            .unwrap_or_default()
    }

    pub fn pin(&self, c: Component, version: &str) -> Option<&Pin> {
        self.pins.get(&c)?.iter().find(|p| p.version == version)
    }

    /// The pinned sha256 of `c` at `version` for `arch`.
    pub fn pinned_sha256(&self, c: Component, version: &str, arch: Arch) -> Option<&str> {
        let pin = self.pin(c, version)?;
        match arch {
            Arch::Amd64 => pin.amd64.as_deref(),
            Arch::Arm64 => pin.arm64.as_deref(),
        }
    }

    /// The newest minor supported on `today`, else the newest released one.
    pub fn default_minor(&self, today: Date) -> Option<&Minor> {
        self.minors
            .values()
            .rev()
            .find(|m| m.support(today) == Support::Supported)
            .or_else(|| {
                self.minors
                    .values()
                    .rev()
                    .find(|m| m.support(today) != Support::Unreleased)
            })
    }

    /// The node software a new inventory on `v` gets: the minor's `node`, each missing
    /// component taken from the nearest older minor that names it.
    pub fn node_default(&self, v: &Version, c: Component) -> Option<&str> {
        self.minors
            .range(..=(v.major, v.minor))
            .rev()
            .find_map(|(_, m)| m.node.get(&c))
            .map(String::as_str)
    }
}

/// Today's date (UTC).
pub fn today() -> Date {
    time::OffsetDateTime::now_utc().date()
}

fn parse_file(text: &str, path: &Path) -> Result<(CatalogFile, yaml::Node), CatalogProblems> {
    let fail = |problems| CatalogProblems {
        file: path.to_path_buf(),
        problems,
    };
    let tree = yaml::parse(text).map_err(|e| {
        fail(vec![Problem {
            line: e.loc.line,
            col: e.loc.col,
            message: format!("not valid YAML: {}", e.message),
            help: Some("compare with capstan's catalog/catalog.yaml".into()),
        }])
    })?;
    // An empty override is allowed: nothing to lay over.
    if matches!(&tree.kind, yaml::NodeKind::Scalar { value, .. } if value.is_empty() || value == "~" || value == "null")
    {
        return Ok((CatalogFile::default(), tree));
    }
    let collected = yaml::from_node_collecting::<CatalogFile>(&tree);
    let problems: Vec<Problem> = collected
        .errors
        .iter()
        .map(|e| {
            let mut p = Problem::from_de(e);
            p.help = p
                .help
                .map(|h| h.replace("inventory/sample/cluster.yaml", "catalog/catalog.yaml"));
            p
        })
        .collect();
    match collected.value {
        Some(file) if problems.is_empty() => Ok((file, tree)),
        _ => Err(fail(problems)),
    }
}

/// A field with where it was written.
#[derive(Debug, Clone)]
struct At<T> {
    value: T,
    loc: yaml::Loc,
    file: PathBuf,
}

#[derive(Debug, Default)]
struct MergedMinor {
    key_at: Option<(yaml::Loc, PathBuf)>,
    fields: BTreeMap<&'static str, At<String>>,
    containerd: Option<At<Vec<String>>>,
    origin: Option<Origin>,
}

/// A pin as merged: the sums, where it was written, and which file it came from.
type MergedPin = (PinSpec, yaml::Loc, PathBuf, Origin);

#[derive(Debug, Default)]
struct Merged {
    sources: BTreeMap<String, String>,
    minors: BTreeMap<String, MergedMinor>,
    pins: BTreeMap<Component, BTreeMap<String, MergedPin>>,
}

fn file_of(origin: &Origin) -> PathBuf {
    match origin {
        Origin::BuiltIn => PathBuf::from(BUILTIN_PATH),
        Origin::Override(p) => p.clone(),
    }
}

impl Merged {
    fn add(&mut self, file: CatalogFile, tree: &yaml::Node, origin: &Origin) {
        let path = file_of(origin);
        self.sources.extend(file.sources);
        for (key, spec) in file.kubernetes {
            let m = self.minors.entry(key.clone()).or_default();
            let loc = |sub: &[&str]| {
                let mut p = vec!["kubernetes", key.as_str()];
                p.extend_from_slice(sub);
                tree.locate(&p)
            };
            if m.key_at.is_none() {
                m.key_at = Some((tree.locate_key(&["kubernetes"], &key), path.clone()));
            }
            m.origin = Some(origin.clone());
            let mut set = |name: &'static str, sub: &[&str], value: Option<String>| {
                if let Some(value) = value {
                    m.fields.insert(
                        name,
                        At {
                            value,
                            loc: loc(sub),
                            file: path.clone(),
                        },
                    );
                }
            };
            set("released", &["released"], spec.released);
            set("end_of_life", &["end_of_life"], spec.end_of_life);
            set("newest_patch", &["newest_patch"], spec.newest_patch);
            set(
                "images.coredns",
                &["images", "coredns"],
                spec.images.coredns,
            );
            set("images.pause", &["images", "pause"], spec.images.pause);
            set("images.etcd", &["images", "etcd"], spec.images.etcd);
            for (c, value) in [
                ("node.containerd", spec.node.containerd),
                ("node.runc", spec.node.runc),
                ("node.etcd", spec.node.etcd),
                ("node.crictl", spec.node.crictl),
                ("node.cni_plugins", spec.node.cni_plugins),
            ] {
                let sub = c.split('.').collect::<Vec<_>>();
                set(c, &sub, value);
            }
            if let Some(list) = spec.containerd {
                m.containerd = Some(At {
                    value: list,
                    loc: loc(&["containerd"]),
                    file: path.clone(),
                });
            }
        }
        for (component, pins) in [
            (Component::Kubelet, file.pins.kubelet),
            (Component::Kubectl, file.pins.kubectl),
            (Component::Etcd, file.pins.etcd),
            (Component::Containerd, file.pins.containerd),
            (Component::Runc, file.pins.runc),
            (Component::Crictl, file.pins.crictl),
            (Component::CniPlugins, file.pins.cni_plugins),
        ] {
            let key = component.key();
            let entry = self.pins.entry(component).or_default();
            for (version, spec) in pins {
                let loc = tree.locate(&["pins", key, &version]);
                let merged = match entry.remove(&version) {
                    Some((old, ..)) => PinSpec {
                        amd64: spec.amd64.or(old.amd64),
                        arm64: spec.arm64.or(old.arm64),
                    },
                    None => spec,
                };
                entry.insert(version, (merged, loc, path.clone(), origin.clone()));
            }
        }
    }

    fn finish(self, override_file: Option<PathBuf>) -> Result<Catalog, CatalogProblems> {
        let mut problems: Vec<(PathBuf, Problem)> = Vec::new();
        let mut bad = |file: &Path, loc: yaml::Loc, message: String, help: &str| {
            problems.push((
                file.to_path_buf(),
                Problem {
                    line: loc.line,
                    col: loc.col,
                    message,
                    help: Some(help.to_string()),
                },
            ));
        };

        let mut pins: BTreeMap<Component, Vec<Pin>> = BTreeMap::new();
        for (component, entries) in self.pins {
            let mut list = Vec::new();
            for (version, (spec, loc, file, origin)) in entries {
                if component_version(&version).is_none() {
                    bad(
                        &file,
                        loc,
                        format!(
                            "`{version}` under pins.{} is not a version",
                            component.key()
                        ),
                        "write it as vMAJOR.MINOR.PATCH, e.g. v1.37.4",
                    );
                    continue;
                }
                for (arch, sum) in [("amd64", &spec.amd64), ("arm64", &spec.arm64)] {
                    if let Some(sum) = sum
                        && !is_sha256(sum)
                    {
                        bad(
                            &file,
                            loc,
                            format!(
                                "the {arch} sum of {} {version} is not a sha256 (64 lowercase hex digits)",
                                component.name()
                            ),
                            "copy the sum from upstream's published .sha256 file",
                        );
                    }
                }
                list.push(Pin {
                    version,
                    amd64: spec.amd64,
                    arm64: spec.arm64,
                    origin,
                });
            }
            list.sort_by_key(|p| component_version(&p.version));
            pins.insert(component, list);
        }

        let mut minors = BTreeMap::new();
        for (key, m) in self.minors {
            let (key_loc, key_file) = m
                .key_at
                .clone()
                .unwrap_or((yaml::Loc::default(), PathBuf::from(BUILTIN_PATH)));
            let Some((major, minor)) = parse_minor(&key) else {
                bad(
                    &key_file,
                    key_loc,
                    format!("`{key}` under kubernetes is not a Kubernetes minor"),
                    "write it as vMAJOR.MINOR, e.g. v1.38",
                );
                continue;
            };
            let text = |name: &str| m.fields.get(name);
            let date = |name: &str, bad: &mut dyn FnMut(&Path, yaml::Loc, String, &str)| {
                let at = text(name)?;
                let parsed = parse_date(&at.value);
                if parsed.is_none() {
                    bad(
                        &at.file,
                        at.loc,
                        format!("`{}` is not a date ({key} {name})", at.value),
                        "write it as YYYY-MM-DD",
                    );
                }
                parsed
            };
            let released = date("released", &mut bad);
            let end_of_life = date("end_of_life", &mut bad);
            let mut newest_patch = None;
            if let Some(at) = text("newest_patch") {
                match Version::parse(&at.value) {
                    Some(v) if v.major == major && v.minor == minor => newest_patch = Some(v),
                    _ => bad(
                        &at.file,
                        at.loc,
                        format!("`{}` is not a patch release of {key}", at.value),
                        &format!("write it as {key}.PATCH"),
                    ),
                }
            }
            let pinned_newest = pins
                .get(&Component::Kubelet)
                .into_iter()
                .flatten()
                .filter_map(|p| Version::parse(&p.version))
                .filter(|v| v.major == major && v.minor == minor)
                .max();
            newest_patch = newest_patch.max(pinned_newest);
            let mut image = |name: &str| {
                if let Some(at) = text(name) {
                    return at.value.clone();
                }
                bad(
                    &key_file,
                    key_loc,
                    format!("{key} has no `{name}`"),
                    "add kubeadm's paired version (cmd/kubeadm/app/constants/constants.go on the minor's release branch)",
                );
                String::new()
            };
            let images = PairedImages {
                coredns: image("images.coredns"),
                pause: image("images.pause"),
                etcd: image("images.etcd"),
            };
            let mut containerd = Vec::new();
            match &m.containerd {
                Some(at) => {
                    for entry in &at.value {
                        match component_version(entry) {
                            Some(v) => containerd.push(v),
                            None => bad(
                                &at.file,
                                at.loc,
                                format!("`{entry}` in {key}'s containerd list is not a version"),
                                "list the oldest supported patch of each containerd minor, e.g. [v2.2.0, v2.1.5]",
                            ),
                        }
                    }
                }
                None => bad(
                    &key_file,
                    key_loc,
                    format!("{key} has no `containerd` list"),
                    "add the containerd releases it runs on (containerd's RELEASES.md), e.g. containerd: [v2.2.0]",
                ),
            }
            let mut node = BTreeMap::new();
            for (field, c) in [
                ("node.containerd", Component::Containerd),
                ("node.runc", Component::Runc),
                ("node.etcd", Component::Etcd),
                ("node.crictl", Component::Crictl),
                ("node.cni_plugins", Component::CniPlugins),
            ] {
                if let Some(at) = text(field) {
                    if component_version(&at.value).is_none() {
                        bad(
                            &at.file,
                            at.loc,
                            format!("`{}` is not a version ({key} {field})", at.value),
                            "write it as vMAJOR.MINOR.PATCH",
                        );
                    } else {
                        node.insert(c, normalize(&at.value));
                    }
                }
            }
            minors.insert(
                (major, minor),
                Minor {
                    name: format!("v{major}.{minor}"),
                    major,
                    minor,
                    released,
                    end_of_life,
                    newest_patch,
                    images,
                    containerd,
                    node,
                    origin: m.origin.unwrap_or(Origin::BuiltIn),
                },
            );
        }
        if minors.is_empty() {
            bad(
                Path::new(BUILTIN_PATH),
                yaml::Loc { line: 1, col: 1 },
                "the catalog knows no Kubernetes minor".into(),
                "add one under `kubernetes:`",
            );
        }
        if problems.is_empty() {
            return Ok(Catalog {
                sources: self.sources,
                minors,
                pins,
                override_file,
            });
        }
        // Problems of the override are the user's to fix; report those first.
        let file = problems
            .iter()
            .map(|(f, _)| f.clone())
            .find(|f| f != Path::new(BUILTIN_PATH))
            .unwrap_or_else(|| PathBuf::from(BUILTIN_PATH));
        let mut problems: Vec<Problem> = problems
            .into_iter()
            .filter(|(f, _)| *f == file)
            .map(|(_, p)| p)
            .collect();
        problems.sort_by_key(|p| (p.line, p.col));
        Err(CatalogProblems { file, problems })
    }
}

/// `2.2.1` or `v2.2.1` → the version.
pub fn component_version(text: &str) -> Option<Version> {
    Version::parse(&normalize(text))
}

fn normalize(text: &str) -> String {
    format!("v{}", text.trim().trim_start_matches('v'))
}

fn parse_minor(text: &str) -> Option<(u32, u32)> {
    let v = Version::parse(&format!("{}.0", text.trim()))?;
    Some((v.major, v.minor))
}

/// `YYYY-MM-DD`.
pub fn parse_date(text: &str) -> Option<Date> {
    let mut parts = text.trim().splitn(3, '-');
    let year: i32 = parts.next()?.parse().ok()?;
    let month: u8 = parts.next()?.parse().ok()?;
    let day: u8 = parts.next()?.parse().ok()?;
    Date::from_calendar_date(year, time::Month::try_from(month).ok()?, day).ok()
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    fn date(s: &str) -> Date {
        parse_date(s).unwrap()
    }

    #[test]
    fn builtin_catalog_is_valid() {
        let c = Catalog::from_texts(BUILTIN_TEXT, None).unwrap_or_else(|e| {
            panic!("{:?}", e.problems);
        });
        assert!(!c.minors.is_empty());
        for m in c.minors.values() {
            // Every default node version of every minor is pinned and runs with the minor.
            for (comp, version) in &m.node {
                let pin = c.pin(*comp, version);
                assert!(
                    pin.is_some_and(|p| p.amd64.is_some() && p.arm64.is_some()),
                    "{} default {comp} {version} has no pin for both arches",
                    m.name
                );
            }
            if let Some(cd) = m.node.get(&Component::Containerd) {
                assert!(
                    m.supports_containerd(&component_version(cd).unwrap()),
                    "{}: {cd}",
                    m.name
                );
            }
            assert!(
                m.released.is_some() || m.newest_patch.is_none(),
                "{}",
                m.name
            );
        }
    }

    const BASE: &str = r#"
sources:
  kubeadm: test
kubernetes:
  v1.35:
    released: 2025-12-17
    end_of_life: 2027-02-28
    newest_patch: v1.35.2
    images: {coredns: v1.13.1, pause: "3.10.1", etcd: 3.6.6-0}
    containerd: [v2.2.0, v2.1.5, v1.7.28]
    node: {containerd: v2.2.1, runc: v1.3.4, etcd: v3.6.6, crictl: v1.35.0, cni_plugins: v1.9.0}
  v1.36:
    released: 2026-04-22
    end_of_life: 2027-06-28
    images: {coredns: v1.13.1, pause: "3.10.1", etcd: 3.6.6-0}
    containerd: [v2.3.0, v2.2.0]
    node: {crictl: v1.36.0}
pins:
  kubelet:
    v1.35.1: {amd64: 1111111111111111111111111111111111111111111111111111111111111111}
    v1.36.0: {amd64: 2222222222222222222222222222222222222222222222222222222222222222}
"#;

    #[test]
    fn override_lays_entries_over_the_builtin() {
        let over = "pins:\n  kubelet:\n    v1.36.4: {amd64: 3333333333333333333333333333333333333333333333333333333333333333}\n    v1.35.1: {arm64: 4444444444444444444444444444444444444444444444444444444444444444}\nkubernetes:\n  v1.36:\n    newest_patch: v1.36.1\n";
        let path = Path::new("/inv/catalog.yaml");
        let c = Catalog::from_texts(BASE, Some((over, path))).unwrap();
        // A new pin is added, and the newest patch follows the newest pinned kubelet.
        assert_eq!(
            c.minor(&v("v1.36.0")).unwrap().newest_patch,
            Some(v("v1.36.4"))
        );
        // A pin's other architecture is kept when the override adds one.
        let p = c.pin(Component::Kubelet, "v1.35.1").unwrap();
        assert!(p.amd64.is_some() && p.arm64.is_some());
        assert_eq!(p.origin, Origin::Override(path.to_path_buf()));
        // Fields not in the override stay as built in.
        let m = c.minor(&v("v1.36.0")).unwrap();
        assert_eq!(m.images.coredns, "v1.13.1");
        assert_eq!(m.origin, Origin::Override(path.to_path_buf()));
        assert_eq!(c.minor(&v("v1.35.0")).unwrap().origin, Origin::BuiltIn);
        // Node defaults fall back to the nearest older minor that names them.
        assert_eq!(
            c.node_default(&v("v1.36.0"), Component::Containerd),
            Some("v2.2.1")
        );
        assert_eq!(
            c.node_default(&v("v1.36.0"), Component::Crictl),
            Some("v1.36.0")
        );
        assert_eq!(c.override_file.as_deref(), Some(path));
    }

    #[test]
    fn containerd_matrix() {
        let c = Catalog::from_texts(BASE, None).unwrap();
        let m35 = c.minor(&v("v1.35.0")).unwrap();
        for ok in [
            "v2.2.0", "v2.2.3", "v2.3.0", "v2.1.5", "v2.1.9", "v1.7.28", "v1.7.30",
        ] {
            assert!(m35.supports_containerd(&v(ok)), "{ok}");
        }
        for no in ["v2.1.4", "v2.0.7", "v1.7.27", "v1.6.20", "v3.0.0"] {
            assert!(!m35.supports_containerd(&v(no)), "{no}");
        }
        assert_eq!(
            m35.containerd_matrix(),
            "v2.2.0+, v2.1.5+ within v2.1 or v1.7.28+ within v1.7"
        );
        let m36 = c.minor(&v("v1.36.0")).unwrap();
        assert!(!m36.supports_containerd(&v("v2.1.9")));
        assert!(!m36.supports_containerd(&v("v1.7.29")));
        assert!(m36.supports_containerd(&v("v2.2.0")));
    }

    #[test]
    fn support_follows_the_dates() {
        let c = Catalog::from_texts(BASE, None).unwrap();
        let m = c.minor(&v("v1.36.0")).unwrap();
        assert_eq!(m.support(date("2026-04-21")), Support::Unreleased);
        assert_eq!(m.support(date("2026-12-07")), Support::Supported);
        assert_eq!(m.support(date("2027-06-29")), Support::EndOfLife);
        assert_eq!(c.default_minor(date("2026-12-07")).unwrap().name, "v1.36");
        assert_eq!(c.default_minor(date("2026-01-01")).unwrap().name, "v1.35");
    }

    fn messages(err: &CatalogProblems) -> Vec<String> {
        err.problems
            .iter()
            .map(|p| format!("{}:{} {}", p.line, p.col, p.message))
            .collect()
    }

    #[test]
    fn problems_name_the_override_file_line_and_column() {
        let over = "kubernetes:\n  v1.39:\n    released: tomorrow\npins:\n  kubelet:\n    v1.39.0: {amd64: ABC}\n  kubeproxy: {}\n";
        let path = Path::new("/inv/catalog.yaml");
        let err = Catalog::from_texts(BASE, Some((over, path))).unwrap_err();
        assert_eq!(err.file, path);
        let msgs = messages(&err);
        assert!(
            msgs.iter()
                .any(|m| m.starts_with("7:3 unknown key `kubeproxy`")),
            "{msgs:?}"
        );
        let over = "kubernetes:\n  v1.39:\n    released: tomorrow\npins:\n  kubelet:\n    v1.39.0: {amd64: ABC}\n";
        let err = Catalog::from_texts(BASE, Some((over, path))).unwrap_err();
        let msgs = messages(&err);
        assert!(
            msgs.iter()
                .any(|m| m.starts_with("3:15 `tomorrow` is not a date")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.contains("amd64 sum of kubelet v1.39.0")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.contains("v1.39 has no `images.coredns`")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.contains("v1.39 has no `containerd` list")),
            "{msgs:?}"
        );
    }
}
