//! Roles: `roles/<name>/role.yaml`, data that says what a host of that role must have.
//!
//! ```yaml
//! description: Kernel settings every node needs.
//! hosts: [control-plane, worker]        # inventory roles whose hosts carry this role
//! when: cluster.api_endpoint.mode == "local-proxy"   # optional: and only where this holds
//! vars:                                 # defaults; templates see them as `vars.NAME`
//!   sandbox_image: registry.k8s.io/pause:3.10
//! resources:
//!   - sysctl: {key: net.ipv4.ip_forward, value: "1"}
//!   - module: {name: br_netfilter}
//!   - directory: {path: /etc/containerd}
//!   - file: {path: /etc/containerd/config.toml, template: containerd/config.toml.j2}
//!   - file: {path: "/etc/containerd/certs.d/{{ item.dir }}/hosts.toml",      # one per item
//!            template: containerd/hosts.toml.j2, for_each: computed.registries}
//!   - binary: {artifact: containerd, file: ctr, path: /usr/local/bin/ctr}
//!   - unit: {name: containerd.service, template: containerd/containerd.service.j2,
//!            restart_on: [/etc/containerd/config.toml, /usr/local/bin/containerd]}
//!   - package: {name: conntrack}
//!   - command: {name: swap-off, run: "swapoff -a", unless: "test -z \"$(tail -n +2 /proc/swaps)\""}
//!   - command: {name: apply, run: "kubectl apply -f m/", diff: "kubectl diff -f m/"}   # drift shown as a diff
//!   - unit: {name: "x.timer", template: x/x.timer.j2, for_each: "[1] if cluster.x else []"}   # conditional
//! ```
//!
//! `for_each` (directories, files, units, commands) repeats a resource per item of a list;
//! an empty list leaves it out, which is how a role carries what only some inventories ask for.
//!
//! Every string value may use minijinja expressions (`{{ cluster.name }}`), rendered from
//! the same context as the templates.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::library::Library;
use crate::inventory::Role as InventoryRole;
use crate::yaml;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoleFile {
    pub description: String,
    /// Inventory roles whose hosts carry this role.
    pub hosts: Vec<InventoryRole>,
    /// A minijinja expression that must also hold for the host (e.g.
    /// `cluster.api_endpoint.mode == "local-proxy"`); it sees the context without facts.
    pub when: Option<String>,
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    pub resources: Vec<ResourceSpec>,
}

/// One resource as declared in a role.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum ResourceSpec {
    Directory {
        path: String,
        #[serde(default = "root")]
        owner: String,
        #[serde(default = "root")]
        group: String,
        #[serde(default = "dir_mode")]
        mode: String,
        /// An expression giving a list: one directory per item, rendered with `item`.
        for_each: Option<String>,
    },
    File {
        path: String,
        /// Literal content (exclusive with `template`).
        content: Option<String>,
        /// A template under templates/ (exclusive with `content`).
        template: Option<String>,
        /// A file on the operator's machine, uploaded as it is (an image archive of
        /// `cluster.images.preload`); exclusive with `content` and `template`.
        source: Option<String>,
        #[serde(default = "root")]
        owner: String,
        #[serde(default = "root")]
        group: String,
        #[serde(default = "file_mode")]
        mode: String,
        /// Never shown in plans, diffs or logs.
        #[serde(default)]
        secret: bool,
        /// Written when missing, never replaced afterwards (only owner and mode are kept
        /// right): for what must stay as it was first written, like etcd's initial cluster.
        #[serde(default)]
        create_only: bool,
        /// An expression giving a list: one file per item, rendered with `item` (the
        /// inventory's registries: a hosts.toml each).
        for_each: Option<String>,
    },
    Binary {
        /// A component of the artifact catalog (its version comes from the inventory).
        artifact: String,
        /// Which of the artifact's binaries (`ctr` of containerd); default: the one named
        /// like the artifact.
        file: Option<String>,
        path: String,
        #[serde(default = "exec_mode")]
        mode: String,
    },
    Unit {
        /// The systemd unit name, e.g. `containerd.service`.
        name: String,
        /// Unit file template, installed as /etc/systemd/system/<name>.
        template: Option<String>,
        #[serde(default = "yes")]
        enabled: bool,
        #[serde(default)]
        state: UnitState,
        /// Paths of resources whose change restarts the unit.
        #[serde(default)]
        restart_on: Vec<String>,
        /// Paths of resources whose change reloads the unit (no restart).
        #[serde(default)]
        reload_on: Vec<String>,
        /// An expression giving a list: one unit per item, rendered with `item` (an empty
        /// list: none, for what only some inventories have).
        for_each: Option<String>,
    },
    Sysctl {
        key: String,
        value: String,
    },
    Module {
        name: String,
    },
    Package {
        name: String,
    },
    Command {
        /// A stable name: the plan shows it, the probe keys its guard by it.
        name: String,
        run: String,
        /// Skip when this path exists.
        creates: Option<String>,
        /// Skip when this command exits 0.
        unless: Option<String>,
        /// Skip when this command exits 0; otherwise its output is the change's diff in the
        /// plan (`kubectl diff`: live objects against the manifests).
        diff: Option<String>,
        /// Also run when one of these managed paths changes in the same apply.
        #[serde(default)]
        on_change: Vec<String>,
        /// An expression giving a list: one command per item, rendered with `item` (its
        /// name too, which must then differ per item).
        for_each: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnitState {
    #[default]
    Started,
    Stopped,
}

fn root() -> String {
    "root".to_string()
}
fn dir_mode() -> String {
    "0755".to_string()
}
fn file_mode() -> String {
    "0644".to_string()
}
fn exec_mode() -> String {
    "0755".to_string()
}
fn yes() -> bool {
    true
}

/// A role loaded from disk.
#[derive(Debug, Clone)]
pub struct Role {
    pub name: String,
    pub file: PathBuf,
    pub spec: RoleFile,
    /// Parsed role.yaml, to point at the line of a problem found later (e.g. rendering).
    pub tree: yaml::Node,
}

/// A problem in a role file.
#[derive(Debug, Clone, thiserror::Error, miette::Diagnostic)]
#[diagnostic(code(capstan::role))]
pub struct RoleError {
    pub file: PathBuf,
    pub problems: Vec<(yaml::Loc, String, Option<String>)>,
}

impl fmt::Display for RoleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "role file {} is not valid:", self.file.display())?;
        for (loc, msg, help) in &self.problems {
            write!(f, "\n  {}:{loc}: {msg}", self.file.display())?;
            if let Some(help) = help {
                write!(f, "\n      help: {help}")?;
            }
        }
        Ok(())
    }
}

/// Loads `roles/<name>/role.yaml` from `library`.
pub fn load(library: &Library, name: &str) -> Result<Role, RoleError> {
    let rel = format!("roles/{name}/role.yaml");
    let Some((text, origin)) = library.read(&rel) else {
        return Err(RoleError {
            file: PathBuf::from(rel),
            problems: vec![(
                yaml::Loc { line: 1, col: 1 },
                format!("there is no role `{name}`"),
                Some(format!("roles: {}", library.role_names().join(", "))),
            )],
        });
    };
    let file = PathBuf::from(origin);
    let fail = |loc: yaml::Loc, msg: String, help: Option<String>| RoleError {
        file: file.clone(),
        problems: vec![(loc, msg, help)],
    };
    let tree = yaml::parse(&text).map_err(|e| fail(e.loc, e.message, None))?;
    let collected = yaml::from_node_collecting::<RoleFile>(&tree);
    let mut problems: Vec<(yaml::Loc, String, Option<String>)> = collected
        .errors
        .iter()
        .map(|e| {
            let (msg, help) = e.message();
            (e.loc.unwrap_or_default(), msg, help)
        })
        .collect();
    if let Some(spec) = &collected.value {
        for (i, r) in spec.resources.iter().enumerate() {
            let at = || tree.locate(&["resources", &i.to_string()]);
            match r {
                ResourceSpec::File {
                    content,
                    template,
                    source,
                    ..
                } if [content, template, source].iter().filter(|x| x.is_some()).count() != 1 => problems.push((
                    at(),
                    "a file needs exactly one of `content`, `template` and `source`".into(),
                    Some(
                        "use `content:` for a literal, `template:` for a file under templates/, \
                         `source:` for a file of the operator's"
                            .into(),
                    ),
                )),
                ResourceSpec::Directory { mode, .. }
                | ResourceSpec::File { mode, .. }
                | ResourceSpec::Binary { mode, .. }
                    if parse_mode(mode).is_none() =>
                {
                    problems.push((
                        at(),
                        format!("mode `{mode}` is not an octal file mode"),
                        Some("write it as a quoted octal string, e.g. \"0644\"".into()),
                    ));
                }
                _ => {}
            }
        }
    }
    match collected.value {
        Some(spec) if problems.is_empty() => Ok(Role {
            name: name.to_string(),
            file,
            spec,
            tree,
        }),
        _ => Err(RoleError { file, problems }),
    }
}

/// Parses an octal mode such as `0644` or `755`.
pub fn parse_mode(text: &str) -> Option<u32> {
    if text.is_empty() || text.len() > 5 {
        return None;
    }
    u32::from_str_radix(text, 8).ok().filter(|m| *m <= 0o7777)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_roles_load() {
        let lib = Library::builtin();
        let names = lib.role_names();
        assert!(names.len() >= 2, "{names:?}");
        for name in names {
            let role = load(&lib, &name).unwrap_or_else(|e| panic!("{e}"));
            assert!(!role.spec.resources.is_empty(), "{name}");
        }
        assert!(
            load(&lib, "nope")
                .unwrap_err()
                .to_string()
                .contains("there is no role `nope`")
        );
    }

    #[test]
    fn bad_role_reports_positions() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("roles/x")).unwrap();
        let lib = Library::for_inventory(dir.path());
        std::fs::write(
            dir.path().join("roles/x/role.yaml"),
            "description: x\nhosts: [worker]\nresources:\n  - file: {path: /a}\n  - directory: {path: /b, mode: \"0999\"}\n  - sysctl: {key: a}\n",
        )
        .unwrap();
        let err = load(&lib, "x").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("role.yaml:6:13: missing key `value`"),
            "{text}"
        );
        assert!(
            !text.contains("0999"),
            "semantic checks wait for a sound file: {text}"
        );
        std::fs::write(
            dir.path().join("roles/x/role.yaml"),
            "description: x\nhosts: [worker]\nresources:\n  - file: {path: /a}\n  - directory: {path: /b, mode: \"0999\"}\n",
        )
        .unwrap();
        let text = load(&lib, "x").unwrap_err().to_string();
        assert!(
            text.contains("role.yaml:4:9: a file needs exactly one of"),
            "{text}"
        );
        assert!(text.contains("role.yaml:5:14: mode `0999`"), "{text}");
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0644"), Some(0o644));
        assert_eq!(parse_mode("755"), Some(0o755));
        assert_eq!(parse_mode("0999"), None);
        assert_eq!(parse_mode(""), None);
    }
}
