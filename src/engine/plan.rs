//! The plan: a pure function of desired state and the host's state.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::desired::{Desired, DesiredFile};
use super::role::UnitState;

/// What the probe found at a managed path.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct PathState {
    pub kind: PathKind,
    pub sha256: Option<String>,
    pub mode: u32,
    pub owner: String,
    pub group: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PathKind {
    #[default]
    Missing,
    File,
    Directory,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct UnitFacts {
    /// `active`, `inactive`, `failed`, ...
    pub active_state: String,
    /// `enabled`, `disabled`, `static`, ...
    pub unit_file_state: String,
}

/// Everything the plan needs to know about one host, from one probe.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct HostState {
    pub paths: BTreeMap<String, PathState>,
    pub units: BTreeMap<String, UnitFacts>,
    /// Live sysctl values; `None` when the key does not exist on this kernel.
    pub sysctls: BTreeMap<String, Option<String>>,
    /// Modules loaded or built in.
    pub modules: BTreeSet<String>,
    pub packages: BTreeMap<String, bool>,
    /// Commands whose guard says they are already done.
    pub commands_done: BTreeSet<String>,
    /// Commands whose `diff` guard failed: its exit status and output (1: the output is
    /// the difference, as `kubectl diff` and `diff` answer; other: it could not compare).
    pub command_diffs: BTreeMap<String, (i32, String)>,
    /// Paths changed earlier in this run (by an earlier phase): units that restart or
    /// commands that run on them react as if they had changed in this plan.
    pub changed_earlier: BTreeSet<String>,
    /// Per unit or command: the paths of `changed_earlier` it already reacted to (it was
    /// restarted, started or run after they changed), so a later phase does not repeat it.
    pub handled: BTreeMap<String, BTreeSet<String>>,
}

impl HostState {
    /// Updates this view as if `plan` had been carried out, so that a later phase of the
    /// same run plans against what the host now has (and a dry run stays honest across
    /// phases).
    pub fn assume_applied(&mut self, desired: &[Desired], plan: &HostPlan) {
        for c in &plan.changes {
            match (&desired[c.index], c.action) {
                (
                    Desired::Directory {
                        owner, group, mode, ..
                    },
                    _,
                ) => {
                    self.paths.insert(
                        c.target.clone(),
                        PathState {
                            kind: PathKind::Directory,
                            sha256: None,
                            mode: *mode,
                            owner: owner.clone(),
                            group: group.clone(),
                        },
                    );
                }
                (Desired::File(f), action) => {
                    if matches!(action, Action::Create | Action::Update) {
                        self.changed_earlier.insert(f.path.clone());
                    }
                    let sha256 = self
                        .paths
                        .get(&f.path)
                        .filter(|_| f.create_only && action == Action::Fix)
                        .and_then(|p| p.sha256.clone())
                        .unwrap_or_else(|| f.sha256.clone());
                    self.paths.insert(
                        f.path.clone(),
                        PathState {
                            kind: PathKind::File,
                            sha256: Some(sha256),
                            mode: f.mode,
                            owner: f.owner.clone(),
                            group: f.group.clone(),
                        },
                    );
                }
                (Desired::Sysctl { key, value }, _) => {
                    self.sysctls.insert(key.clone(), Some(value.clone()));
                }
                (Desired::Module { name }, _) => {
                    self.modules.insert(name.clone());
                }
                (Desired::Package { name }, _) => {
                    self.packages.insert(name.clone(), true);
                }
                (Desired::Command { name, .. }, _) => {
                    self.commands_done.insert(name.clone());
                }
                (Desired::Unit { name, .. }, action) => {
                    let unit = self.units.entry(name.clone()).or_default();
                    match action {
                        Action::Enable => unit.unit_file_state = "enabled".into(),
                        Action::Start | Action::Restart | Action::Reload => {
                            unit.active_state = "active".into();
                        }
                        Action::Stop => unit.active_state = "inactive".into(),
                        _ => {}
                    }
                }
            }
        }
        // What reacted in this plan has seen every change so far.
        for c in &plan.changes {
            let reacted = match (&desired[c.index], c.action) {
                (Desired::Unit { name, .. }, Action::Start | Action::Restart | Action::Reload)
                | (Desired::Command { name, .. }, Action::Run) => Some(name),
                _ => None,
            };
            if let Some(name) = reacted {
                self.handled
                    .entry(name.clone())
                    .or_default()
                    .extend(self.changed_earlier.iter().cloned());
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Create,
    Update,
    /// Owner, group or mode only.
    Fix,
    Set,
    Load,
    Install,
    Run,
    Enable,
    Start,
    Stop,
    Restart,
    Reload,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Fix => "fix",
            Action::Set => "set",
            Action::Load => "load",
            Action::Install => "install",
            Action::Run => "run",
            Action::Enable => "enable",
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Restart => "restart",
            Action::Reload => "reload",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub kind: &'static str,
    pub target: String,
    pub action: Action,
    /// What differs, in words (`mode 0600 -> 0644`, `0 -> 1`, `because /etc/x changed`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
    /// A unified diff for text files; never for secrets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    pub secret: bool,
    /// Index of the desired resource this change applies.
    #[serde(skip)]
    pub index: usize,
}

/// The changes for one host, in the order apply carries them out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HostPlan {
    pub changes: Vec<Change>,
    /// `systemctl daemon-reload` before touching units (a unit file changed).
    pub daemon_reload: bool,
}

impl HostPlan {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Indexes of desired files whose bytes must be uploaded.
    pub fn uploads(&self) -> impl Iterator<Item = usize> + '_ {
        self.changes
            .iter()
            .filter(|c| c.kind == "file" && matches!(c.action, Action::Create | Action::Update))
            .map(|c| c.index)
    }
}

/// Text files whose current content the plan wants, to show a diff (only differing ones).
pub fn wanted_contents(desired: &[Desired], state: &HostState) -> Vec<String> {
    desired
        .iter()
        .filter_map(|d| match d {
            Desired::File(f) if f.text().is_some() => {
                let now = state.paths.get(&f.path)?;
                (now.kind == PathKind::File && now.sha256.as_deref() != Some(f.sha256.as_str()))
                    .then(|| f.path.clone())
            }
            _ => None,
        })
        .collect()
}

/// Compares desired state with the host's; `old` holds current contents of differing text
/// files (see [`wanted_contents`]) for diffs.
pub fn plan(desired: &[Desired], state: &HostState, old: &BTreeMap<String, Vec<u8>>) -> HostPlan {
    let mut changes: Vec<Change> = Vec::new();
    let mut changed_paths: BTreeSet<&str> = BTreeSet::new();
    let change =
        |index: usize, kind: &'static str, target: &str, action: Action, details: Vec<String>| {
            Change {
                kind,
                target: target.to_string(),
                action,
                details,
                diff: None,
                secret: false,
                index,
            }
        };

    for (i, d) in desired.iter().enumerate() {
        match d {
            Desired::Directory {
                path,
                owner,
                group,
                mode,
            } => {
                let now = state.paths.get(path).cloned().unwrap_or_default();
                match now.kind {
                    PathKind::Directory => {
                        let details = meta_drift(&now, owner, group, *mode);
                        if !details.is_empty() {
                            changes.push(change(i, "directory", path, Action::Fix, details));
                        }
                    }
                    PathKind::Missing => {
                        changes.push(change(i, "directory", path, Action::Create, vec![]));
                    }
                    PathKind::File | PathKind::Other => changes.push(change(
                        i,
                        "directory",
                        path,
                        Action::Update,
                        vec!["is not a directory now; it will be replaced".into()],
                    )),
                }
            }
            Desired::File(f) => {
                let now = state.paths.get(&f.path).cloned().unwrap_or_default();
                if let Some(c) = file_change(i, f, &now, old.get(&f.path)) {
                    if matches!(c.action, Action::Create | Action::Update) {
                        changed_paths.insert(f.path.as_str());
                    }
                    changes.push(c);
                }
            }
            Desired::Sysctl { key, value } => {
                let now = state.sysctls.get(key).cloned().flatten();
                if now.as_deref().map(normalize_sysctl) != Some(normalize_sysctl(value)) {
                    let from = now.unwrap_or_else(|| "(absent)".into());
                    changes.push(change(
                        i,
                        "sysctl",
                        key,
                        Action::Set,
                        vec![format!("{from} -> {value}")],
                    ));
                }
            }
            Desired::Module { name } => {
                if !state.modules.contains(name) {
                    changes.push(change(i, "module", name, Action::Load, vec![]));
                }
            }
            Desired::Package { name } => {
                if !state.packages.get(name).copied().unwrap_or(false) {
                    changes.push(change(i, "package", name, Action::Install, vec![]));
                }
            }
            Desired::Command { .. } | Desired::Unit { .. } => {}
        }
    }

    // A unit file written by an earlier phase has been daemon-reloaded there already.
    let daemon_reload = changed_paths
        .iter()
        .any(|p| p.starts_with("/etc/systemd/system/"));
    // Paths an earlier phase changed count for a unit or command that has not reacted to
    // them yet.
    let changed_in_plan = changed_paths;
    let changed_for = |name: &str| -> BTreeSet<&str> {
        let handled = state.handled.get(name);
        changed_in_plan
            .iter()
            .copied()
            .chain(
                state
                    .changed_earlier
                    .iter()
                    .filter(|p| !handled.is_some_and(|h| h.contains(*p)))
                    .map(String::as_str),
            )
            .collect()
    };

    // Commands after every file, so that `on_change` sees all of them and the command runs
    // with the new files in place. A command runs when its guard says it is not done (one
    // without any guard or trigger runs every time), or when a path it watches changed.
    for (i, d) in desired.iter().enumerate() {
        let Desired::Command {
            name,
            creates,
            unless,
            diff,
            on_change,
            ..
        } = d
        else {
            continue;
        };
        let changed_paths = changed_for(name);
        let because: Vec<&str> = on_change
            .iter()
            .map(String::as_str)
            .filter(|p| changed_paths.contains(p))
            .collect();
        let guarded = creates.is_some() || unless.is_some() || diff.is_some();
        let mut run = if !because.is_empty() {
            Some(change(
                i,
                "command",
                name,
                Action::Run,
                vec![format!("because {} changed", because.join(", "))],
            ))
        } else if !state.commands_done.contains(name) && (guarded || on_change.is_empty()) {
            Some(change(i, "command", name, Action::Run, vec![]))
        } else {
            None
        };
        if let (Some(c), Some((status, out))) = (run.as_mut(), state.command_diffs.get(name)) {
            if *status == 1 {
                c.details.push("the live state differs".into());
                c.diff = Some(out.clone());
            } else {
                let last = out
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("");
                c.details
                    .push(format!("could not compare (exit {status}): {last}"));
            }
        }
        changes.extend(run);
    }

    // Units last: they react to the files above. Any changed unit file or drop-in needs
    // systemd to re-read its configuration, once (`daemon_reload` above).

    for (i, d) in desired.iter().enumerate() {
        let Desired::Unit {
            name,
            unit_file,
            enabled,
            state: want,
            restart_on,
            reload_on,
        } = d
        else {
            continue;
        };
        let changed_paths = changed_for(name);
        let now = state.units.get(name).cloned().unwrap_or_default();
        if *enabled
            && !matches!(
                now.unit_file_state.as_str(),
                "enabled" | "static" | "enabled-runtime" | "alias"
            )
        {
            changes.push(change(i, "unit", name, Action::Enable, vec![]));
        }
        let active = matches!(
            now.active_state.as_str(),
            "active" | "activating" | "reloading"
        );
        match want {
            UnitState::Started if !active => {
                changes.push(change(i, "unit", name, Action::Start, vec![]));
            }
            UnitState::Started => {
                let mut because: Vec<&str> = restart_on
                    .iter()
                    .map(String::as_str)
                    .chain(unit_file.as_deref())
                    .filter(|p| changed_paths.contains(p))
                    .collect();
                because.dedup();
                if because.is_empty() {
                    let because: Vec<&str> = reload_on
                        .iter()
                        .map(String::as_str)
                        .filter(|p| changed_paths.contains(p))
                        .collect();
                    if !because.is_empty() {
                        changes.push(change(
                            i,
                            "unit",
                            name,
                            Action::Reload,
                            vec![format!("because {} changed", because.join(", "))],
                        ));
                    }
                } else {
                    changes.push(change(
                        i,
                        "unit",
                        name,
                        Action::Restart,
                        vec![format!("because {} changed", because.join(", "))],
                    ));
                }
            }
            UnitState::Stopped if active => {
                changes.push(change(i, "unit", name, Action::Stop, vec![]));
            }
            UnitState::Stopped => {}
        }
    }
    HostPlan {
        changes,
        daemon_reload,
    }
}

fn file_change(
    index: usize,
    f: &DesiredFile,
    now: &PathState,
    old: Option<&Vec<u8>>,
) -> Option<Change> {
    let base = |action: Action, details: Vec<String>| Change {
        kind: "file",
        target: f.path.clone(),
        action,
        details,
        diff: None,
        secret: f.secret,
        index,
    };
    match now.kind {
        PathKind::Missing => {
            let mut c = base(
                Action::Create,
                vec![format!("{} bytes, mode {:04o}", f.size, f.mode)],
            );
            if f.secret {
                c.details = vec!["(secret, changed)".into()];
            } else if let Some(text) = f.text() {
                c.diff = Some(unified_diff(&f.path, "", text));
            }
            c.details.extend(f.verified_by.clone());
            Some(c)
        }
        PathKind::File if f.create_only || now.sha256.as_deref() == Some(f.sha256.as_str()) => {
            let details = meta_drift(now, &f.owner, &f.group, f.mode);
            (!details.is_empty()).then(|| base(Action::Fix, details))
        }
        _ => {
            let mut details = Vec::new();
            if now.kind != PathKind::File {
                details.push("is not a regular file now; it will be replaced".into());
            }
            let mut c = base(Action::Update, details);
            if f.secret {
                c.details.push("(secret, changed)".into());
            } else if let (Some(text), Some(old)) =
                (f.text(), old.and_then(|o| std::str::from_utf8(o).ok()))
            {
                c.diff = Some(unified_diff(&f.path, old, text));
            } else {
                c.details.push(format!(
                    "sha256 {} -> {}",
                    short(now.sha256.as_deref().unwrap_or("?")),
                    short(&f.sha256)
                ));
            }
            c.details
                .extend(meta_drift(now, &f.owner, &f.group, f.mode));
            c.details.extend(f.verified_by.clone());
            Some(c)
        }
    }
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

fn meta_drift(now: &PathState, owner: &str, group: &str, mode: u32) -> Vec<String> {
    let mut d = Vec::new();
    if now.owner != owner {
        d.push(format!("owner {} -> {owner}", now.owner));
    }
    if now.group != group {
        d.push(format!("group {} -> {group}", now.group));
    }
    if now.mode != mode {
        d.push(format!("mode {:04o} -> {mode:04o}", now.mode));
    }
    d
}

/// Sysctl values compare with whitespace folded (`/proc/sys` prints tabs for lists).
fn normalize_sysctl(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub fn unified_diff(path: &str, old: &str, new: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("{path} (now)"), &format!("{path} (wanted)"))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::desired::inline_file;

    fn file(path: &str, text: &str, mode: u32) -> Desired {
        Desired::File(inline_file(
            path.into(),
            text.as_bytes().to_vec(),
            "root".into(),
            "root".into(),
            mode,
            false,
        ))
    }

    fn present(d: &Desired) -> PathState {
        match d {
            Desired::File(f) => PathState {
                kind: PathKind::File,
                sha256: Some(f.sha256.clone()),
                mode: f.mode,
                owner: f.owner.clone(),
                group: f.group.clone(),
            },
            _ => unreachable!(),
        }
    }

    fn unit(restart_on: &[&str]) -> Desired {
        Desired::Unit {
            name: "containerd.service".into(),
            unit_file: Some("/etc/systemd/system/containerd.service".into()),
            enabled: true,
            state: UnitState::Started,
            restart_on: restart_on.iter().map(|s| (*s).to_string()).collect(),
            reload_on: vec![],
        }
    }

    fn running() -> UnitFacts {
        UnitFacts {
            active_state: "active".into(),
            unit_file_state: "enabled".into(),
        }
    }

    fn actions(p: &HostPlan) -> Vec<(String, &'static str)> {
        p.changes
            .iter()
            .map(|c| (c.target.clone(), c.action.as_str()))
            .collect()
    }

    #[test]
    fn converged_host_has_no_changes() {
        let cfg = file("/etc/containerd/config.toml", "a = 1\n", 0o644);
        let unit_file = file("/etc/systemd/system/containerd.service", "[Unit]\n", 0o644);
        let desired = vec![
            Desired::Directory {
                path: "/etc/containerd".into(),
                owner: "root".into(),
                group: "root".into(),
                mode: 0o755,
            },
            cfg.clone(),
            unit_file.clone(),
            unit(&["/etc/containerd/config.toml"]),
            Desired::Sysctl {
                key: "net.ipv4.ip_forward".into(),
                value: "1".into(),
            },
            Desired::Module {
                name: "overlay".into(),
            },
            Desired::Package {
                name: "conntrack".into(),
            },
            Desired::Command {
                name: "swap-off".into(),
                run: "swapoff -a".into(),
                creates: None,
                unless: Some("true".into()),
                diff: None,
                on_change: vec![],
            },
        ];
        let mut state = HostState::default();
        state.paths.insert(
            "/etc/containerd".into(),
            PathState {
                kind: PathKind::Directory,
                sha256: None,
                mode: 0o755,
                owner: "root".into(),
                group: "root".into(),
            },
        );
        state
            .paths
            .insert("/etc/containerd/config.toml".into(), present(&cfg));
        state.paths.insert(
            "/etc/systemd/system/containerd.service".into(),
            present(&unit_file),
        );
        state.units.insert("containerd.service".into(), running());
        state
            .sysctls
            .insert("net.ipv4.ip_forward".into(), Some("1".into()));
        state.modules.insert("overlay".into());
        state.packages.insert("conntrack".into(), true);
        state.commands_done.insert("swap-off".into());
        let p = plan(&desired, &state, &BTreeMap::new());
        assert!(p.is_empty(), "{:?}", p.changes);
        assert!(!p.daemon_reload);
    }

    #[test]
    fn fresh_host_gets_everything_in_apply_order() {
        let desired = vec![
            file("/etc/systemd/system/containerd.service", "[Unit]\n", 0o644),
            unit(&[]),
            Desired::Directory {
                path: "/etc/containerd".into(),
                owner: "root".into(),
                group: "root".into(),
                mode: 0o755,
            },
            Desired::Sysctl {
                key: "net.ipv4.ip_forward".into(),
                value: "1".into(),
            },
            Desired::Module {
                name: "br_netfilter".into(),
            },
            Desired::Package {
                name: "conntrack".into(),
            },
            Desired::Command {
                name: "swap-off".into(),
                run: "swapoff -a".into(),
                creates: None,
                unless: None,
                diff: None,
                on_change: vec![],
            },
        ];
        let p = plan(&desired, &HostState::default(), &BTreeMap::new());
        assert_eq!(
            actions(&p),
            vec![
                ("/etc/systemd/system/containerd.service".into(), "create"),
                ("/etc/containerd".into(), "create"),
                ("net.ipv4.ip_forward".into(), "set"),
                ("br_netfilter".into(), "load"),
                ("conntrack".into(), "install"),
                ("swap-off".into(), "run"),
                ("containerd.service".into(), "enable"),
                ("containerd.service".into(), "start"),
            ]
        );
        assert!(p.daemon_reload);
        assert_eq!(p.changes[2].details, vec!["(absent) -> 1"]);
        assert!(p.changes[0].diff.as_deref().unwrap().contains("+[Unit]"));
        assert_eq!(p.uploads().collect::<Vec<_>>(), vec![0]);
    }

    #[test]
    fn owner_and_mode_drift_only_fixes_metadata_and_restarts_nothing() {
        let cfg = file("/etc/containerd/config.toml", "a = 1\n", 0o644);
        let desired = vec![cfg.clone(), unit(&["/etc/containerd/config.toml"])];
        let mut state = HostState::default();
        let mut now = present(&cfg);
        now.mode = 0o600;
        now.owner = "nobody".into();
        state
            .paths
            .insert("/etc/containerd/config.toml".into(), now);
        state.paths.insert(
            "/etc/systemd/system/containerd.service".into(),
            PathState::default(),
        );
        state.units.insert("containerd.service".into(), running());
        let p = plan(&desired, &state, &BTreeMap::new());
        assert_eq!(
            actions(&p),
            vec![("/etc/containerd/config.toml".into(), "fix")]
        );
        assert_eq!(
            p.changes[0].details,
            vec!["owner nobody -> root", "mode 0600 -> 0644"]
        );
        assert_eq!(p.uploads().count(), 0);
    }

    #[test]
    fn changed_config_restarts_its_unit_once_with_a_diff() {
        let cfg = file("/etc/containerd/config.toml", "a = 1\nb = 2\n", 0o644);
        let shim = file("/usr/local/bin/shim", "x", 0o755);
        let desired = vec![
            cfg,
            shim,
            unit(&["/etc/containerd/config.toml", "/usr/local/bin/shim"]),
        ];
        let mut state = HostState::default();
        let stale = PathState {
            kind: PathKind::File,
            sha256: Some("0".repeat(64)),
            mode: 0o644,
            owner: "root".into(),
            group: "root".into(),
        };
        state
            .paths
            .insert("/etc/containerd/config.toml".into(), stale.clone());
        state.paths.insert(
            "/usr/local/bin/shim".into(),
            PathState {
                mode: 0o755,
                ..stale
            },
        );
        state.units.insert("containerd.service".into(), running());
        let old = BTreeMap::from([(
            "/etc/containerd/config.toml".to_string(),
            b"a = 1\nb = 3\n".to_vec(),
        )]);
        let p = plan(&desired, &state, &old);
        assert_eq!(
            actions(&p),
            vec![
                ("/etc/containerd/config.toml".into(), "update"),
                ("/usr/local/bin/shim".into(), "update"),
                ("containerd.service".into(), "restart"),
            ]
        );
        let diff = p.changes[0].diff.as_deref().unwrap();
        assert!(diff.contains("-b = 3\n+b = 2\n"), "{diff}");
        assert_eq!(
            p.changes[2].details,
            vec!["because /etc/containerd/config.toml, /usr/local/bin/shim changed"]
        );
        assert!(!p.daemon_reload, "the unit file itself did not change");
    }

    #[test]
    fn secret_files_never_show_content() {
        let key = Desired::File(inline_file(
            "/etc/kubernetes/pki/sa.key".into(),
            b"-----BEGIN PRIVATE KEY-----\nxyz\n".to_vec(),
            "root".into(),
            "root".into(),
            0o600,
            true,
        ));
        let p = plan(
            std::slice::from_ref(&key),
            &HostState::default(),
            &BTreeMap::new(),
        );
        assert_eq!(p.changes[0].details, vec!["(secret, changed)"]);
        assert!(p.changes[0].diff.is_none());
        let mut state = HostState::default();
        state.paths.insert(
            "/etc/kubernetes/pki/sa.key".into(),
            PathState {
                kind: PathKind::File,
                sha256: Some("1".repeat(64)),
                mode: 0o600,
                owner: "root".into(),
                group: "root".into(),
            },
        );
        let old = BTreeMap::from([(
            "/etc/kubernetes/pki/sa.key".to_string(),
            b"-----BEGIN PRIVATE KEY-----\nold\n".to_vec(),
        )]);
        let p = plan(std::slice::from_ref(&key), &state, &old);
        let shown = format!("{:?}", p.changes);
        assert!(
            !shown.contains("PRIVATE KEY") && !shown.contains("xyz"),
            "{shown}"
        );
        assert!(
            wanted_contents(&[key], &state).is_empty(),
            "a secret's content is never fetched"
        );
    }

    #[test]
    fn stopped_units_and_reloads() {
        let conf = file("/etc/haproxy/haproxy.cfg", "backend\n", 0o644);
        let desired = vec![
            conf,
            Desired::Unit {
                name: "haproxy.service".into(),
                unit_file: None,
                enabled: true,
                state: UnitState::Started,
                restart_on: vec![],
                reload_on: vec!["/etc/haproxy/haproxy.cfg".into()],
            },
            Desired::Unit {
                name: "old.service".into(),
                unit_file: None,
                enabled: false,
                state: UnitState::Stopped,
                restart_on: vec![],
                reload_on: vec![],
            },
        ];
        let mut state = HostState::default();
        state.units.insert("haproxy.service".into(), running());
        state.units.insert("old.service".into(), running());
        let p = plan(&desired, &state, &BTreeMap::new());
        assert_eq!(
            actions(&p),
            vec![
                ("/etc/haproxy/haproxy.cfg".into(), "create"),
                ("haproxy.service".into(), "reload"),
                ("old.service".into(), "stop"),
            ]
        );
    }

    #[test]
    fn sysctl_values_compare_without_whitespace_noise() {
        let desired = vec![Desired::Sysctl {
            key: "net.ipv4.ip_local_port_range".into(),
            value: "1024 65000".into(),
        }];
        let mut state = HostState::default();
        state.sysctls.insert(
            "net.ipv4.ip_local_port_range".into(),
            Some("1024\t65000".into()),
        );
        assert!(plan(&desired, &state, &BTreeMap::new()).is_empty());
    }

    #[test]
    fn a_binary_not_pinned_by_capstan_says_what_verified_it() {
        let mut f = inline_file(
            "/usr/local/bin/kubelet".into(),
            b"\x7fELF".to_vec(),
            "root".into(),
            "root".into(),
            0o755,
            false,
        );
        f.verified_by = Some("kubelet v1.37.1: sha256 from upstream's published kubelet.sha256, not pinned by capstan".into());
        let desired = vec![Desired::File(f.clone())];
        let p = plan(&desired, &HostState::default(), &BTreeMap::new());
        assert!(
            p.changes[0]
                .details
                .iter()
                .any(|d| d.contains("not pinned by capstan")),
            "{:?}",
            p.changes[0].details
        );
        // And when it replaces another binary.
        let mut state = HostState::default();
        let mut now = present(&desired[0]);
        now.sha256 = Some("0".repeat(64));
        state.paths.insert(f.path.clone(), now);
        let p = plan(&desired, &state, &BTreeMap::new());
        assert!(
            p.changes[0]
                .details
                .iter()
                .any(|d| d.contains("published kubelet.sha256")),
            "{:?}",
            p.changes[0].details
        );
    }

    #[test]
    fn create_only_files_are_written_once_and_never_replaced() {
        let mut f = inline_file(
            "/etc/etcd/initial-cluster.env".into(),
            b"ETCD_INITIAL_CLUSTER=a\n".to_vec(),
            "root".into(),
            "root".into(),
            0o644,
            false,
        );
        f.create_only = true;
        let desired = vec![Desired::File(f.clone())];
        let p = plan(&desired, &HostState::default(), &BTreeMap::new());
        assert_eq!(actions(&p), vec![(f.path.clone(), "create")]);

        // Another content on the host stays; only a mode drift is fixed.
        let mut state = HostState::default();
        let mut now = present(&desired[0]);
        now.sha256 = Some("0".repeat(64));
        state.paths.insert(f.path.clone(), now.clone());
        assert!(plan(&desired, &state, &BTreeMap::new()).is_empty());
        now.mode = 0o600;
        state.paths.insert(f.path.clone(), now);
        let p = plan(&desired, &state, &BTreeMap::new());
        assert_eq!(actions(&p), vec![(f.path.clone(), "fix")]);
    }

    #[test]
    fn commands_run_on_change_of_a_watched_file_or_when_their_guard_fails() {
        let manifest = file("/etc/kubernetes/addons/a.yaml", "kind: A\n", 0o644);
        let watched = |unless: Option<&str>| Desired::Command {
            name: "apply-addons".into(),
            run: "kubectl apply -f /etc/kubernetes/addons/".into(),
            creates: None,
            unless: unless.map(str::to_string),
            diff: None,
            on_change: vec!["/etc/kubernetes/addons/a.yaml".into()],
        };
        // Declared before the file it watches: still planned after it.
        let desired = vec![watched(None), manifest.clone()];
        let p = plan(&desired, &HostState::default(), &BTreeMap::new());
        assert_eq!(
            actions(&p),
            vec![
                ("/etc/kubernetes/addons/a.yaml".into(), "create"),
                ("apply-addons".into(), "run"),
            ]
        );
        assert_eq!(
            p.changes[1].details,
            vec!["because /etc/kubernetes/addons/a.yaml changed".to_string()]
        );

        // File in place: no trigger, and with no guard the command does not run.
        let mut state = HostState::default();
        state
            .paths
            .insert("/etc/kubernetes/addons/a.yaml".into(), present(&manifest));
        assert!(plan(&desired, &state, &BTreeMap::new()).is_empty());

        // With a guard that says not done (objects deleted), it runs; done, it does not.
        let desired = vec![manifest.clone(), watched(Some("kubectl get -f x"))];
        let p = plan(&desired, &state, &BTreeMap::new());
        assert_eq!(actions(&p), vec![("apply-addons".into(), "run")]);
        state.commands_done.insert("apply-addons".into());
        assert!(plan(&desired, &state, &BTreeMap::new()).is_empty());
    }

    #[test]
    fn a_later_phase_restarts_for_an_earlier_change_once() {
        // Phase 1 changes a config file only; phase 2 carries the unit that restarts on it.
        let cfg = file("/etc/containerd/config.toml", "v2\n", 0o644);
        let mut state = HostState::default();
        state.units.insert("containerd.service".into(), running());
        state.paths.insert(
            "/etc/systemd/system/containerd.service".into(),
            present(&file(
                "/etc/systemd/system/containerd.service",
                "[Unit]\n",
                0o644,
            )),
        );
        let phase1 = vec![cfg.clone()];
        let p1 = plan(&phase1, &state, &BTreeMap::new());
        state.assume_applied(&phase1, &p1);

        let phase2 = vec![
            file("/etc/systemd/system/containerd.service", "[Unit]\n", 0o644),
            unit(&["/etc/containerd/config.toml"]),
        ];
        let p2 = plan(&phase2, &state, &BTreeMap::new());
        assert_eq!(actions(&p2), vec![("containerd.service".into(), "restart")]);
        state.assume_applied(&phase2, &p2);

        // A third phase with the same unit: it has reacted already.
        let p3 = plan(&phase2, &state, &BTreeMap::new());
        assert!(p3.is_empty(), "{:?}", p3.changes);
    }
}
