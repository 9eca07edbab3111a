//! What the plan asks the facts probe for, and how the answer becomes a [`HostState`].
//!
//! Everything rides on the one facts probe exec: managed paths (stat + hash, with the
//! quick check), units, and extra sections for sysctls, modules, packages and command
//! guards. Reading never changes the host.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::desired::Desired;
use super::plan::{HostState, PathKind, PathState, UnitFacts};
use crate::facts::{Facts, ProbeRequest, sh_quote};

const SYSCTLS: &str = "engine-sysctls";
const MODULES: &str = "engine-modules";
const PACKAGES: &str = "engine-packages";
const DONE: &str = "engine-commands-done";
const DIFFS: &str = "engine-command-diffs";

/// The probe request covering everything `desired` manages.
pub fn request(desired: &[Desired], verify: bool) -> ProbeRequest {
    let mut paths: BTreeSet<String> = BTreeSet::new();
    let mut units: BTreeSet<String> = BTreeSet::new();
    let mut sysctls = String::new();
    let mut modules = String::new();
    let mut packages: Vec<&str> = Vec::new();
    let mut guards = String::new();
    let mut diffs = String::new();
    for d in desired {
        match d {
            Desired::Directory { path, .. } => {
                paths.insert(path.clone());
            }
            Desired::File(f) => {
                paths.insert(f.path.clone());
            }
            Desired::Unit { name, .. } => {
                units.insert(name.clone());
            }
            Desired::Sysctl { key, .. } => {
                // `read` is a builtin: no fork per key. /proc/sys answers a read at an offset
                // past 0 with end of file, so dash (which reads byte by byte) never sees
                // the newline and `read` fails although it got the value: keep what it got.
                let file = format!("/proc/sys/{}", key.replace('.', "/"));
                let _ = writeln!(
                    sysctls,
                    "v=; if [ -r {f} ] && {{ IFS= read -r v < {f} || [ -n \"$v\" ]; }}; then printf '%s\\t%s\\n' {k} \"$v\"; fi",
                    f = sh_quote(&file),
                    k = sh_quote(key)
                );
            }
            Desired::Module { name } => {
                // Loaded modules show in /proc/modules or /sys/module; built-ins in
                // modules.builtin. A kernel without loadable modules (no /proc/modules) has
                // everything it will ever have built in: nothing to load. Some built-ins
                // only show through what they provide.
                let provides = match name.as_str() {
                    "br_netfilter" => " || [ -d /proc/sys/net/bridge ]",
                    "overlay" => " || grep -qw overlay /proc/filesystems 2>/dev/null",
                    _ => "",
                };
                let _ = writeln!(
                    modules,
                    "if [ ! -e /proc/modules ] || [ -d /sys/module/{m} ] || grep -q {b} /proc/modules 2>/dev/null || grep -q {bi} \"/lib/modules/${{kv:-$(uname -r)}}/modules.builtin\" 2>/dev/null{provides}; then echo {m}; fi",
                    m = sh_quote(name),
                    b = sh_quote(&format!("^{name} ")),
                    bi = sh_quote(&format!("/{name}.ko")),
                );
            }
            Desired::Package { name } => packages.push(name),
            Desired::Command {
                name,
                creates,
                unless,
                diff,
                ..
            } => {
                // `@ NAME STATUS`, then (when it failed) its output, each line behind `| `
                // so that no line of it can pass for a marker.
                if let Some(cmd) = diff {
                    let _ = writeln!(
                        diffs,
                        "o=$( ( {cmd} ) 2>&1 </dev/null ); s=$?; printf '@ %s %s\\n' {n} \"$s\"; \
                         [ \"$s\" = 0 ] || printf '%s\\n' \"$o\" | while IFS= read -r l; do printf '| %s\\n' \"$l\"; done",
                        n = sh_quote(name)
                    );
                }
                let mut tests = Vec::new();
                if let Some(path) = creates {
                    tests.push(format!("[ -e {} ]", sh_quote(path)));
                }
                if let Some(cmd) = unless {
                    tests.push(format!("( {cmd} ) >/dev/null 2>&1 </dev/null"));
                }
                if !tests.is_empty() {
                    let _ = writeln!(
                        guards,
                        "if {}; then echo {}; fi",
                        tests.join(" || "),
                        sh_quote(name)
                    );
                }
            }
        }
    }
    let mut extra = Vec::new();
    if !sysctls.is_empty() {
        extra.push((SYSCTLS.to_string(), sysctls));
    }
    if !modules.is_empty() {
        extra.push((MODULES.to_string(), modules));
    }
    if !packages.is_empty() {
        let list: Vec<String> = packages.iter().map(|p| sh_quote(p)).collect();
        let list = list.join(" ");
        extra.push((
            PACKAGES.to_string(),
            format!(
                "if command -v dpkg-query >/dev/null 2>&1; then dpkg-query -W -f='${{Package}}\\t${{db:Status-Status}}\\n' {list} 2>/dev/null; \
                 elif command -v rpm >/dev/null 2>&1; then for p in {list}; do rpm -q \"$p\" >/dev/null 2>&1 && printf '%s\\tinstalled\\n' \"$p\"; done; fi"
            ),
        ));
    }
    if !guards.is_empty() {
        extra.push((DONE.to_string(), guards));
    }
    if !diffs.is_empty() {
        extra.push((DIFFS.to_string(), diffs));
    }
    ProbeRequest {
        paths: paths.into_iter().collect(),
        units: units.into_iter().collect(),
        verify,
        extra,
        installed_state: None,
        light: true,
    }
}

/// The plan's view of the host, from the facts the [`request`] gathered.
pub fn host_state(facts: &Facts) -> HostState {
    let section = |name: &str| facts.extra_sections.get(name).map_or("", String::as_str);
    let mut state = HostState::default();
    for (path, found) in &facts.paths {
        let s = match found {
            None => PathState::default(),
            Some(p) => PathState {
                kind: if p.kind.starts_with("regular") {
                    PathKind::File
                } else if p.kind == "directory" {
                    PathKind::Directory
                } else {
                    PathKind::Other
                },
                sha256: p.sha256.clone(),
                mode: p.mode,
                owner: p.owner.clone(),
                group: p.group.clone(),
            },
        };
        state.paths.insert(path.clone(), s);
    }
    for (name, unit) in &facts.units {
        let u = unit
            .as_ref()
            .map_or_else(UnitFacts::default, |u| UnitFacts {
                active_state: u.active_state.clone(),
                unit_file_state: u.unit_file_state.clone(),
            });
        state.units.insert(name.clone(), u);
    }
    for line in section(SYSCTLS).lines() {
        if let Some((k, v)) = line.split_once('\t') {
            state.sysctls.insert(k.to_string(), Some(v.to_string()));
        }
    }
    state.modules = section(MODULES).lines().map(str::to_string).collect();
    for line in section(PACKAGES).lines() {
        if let Some((name, status)) = line.split_once('\t') {
            state
                .packages
                .insert(name.to_string(), status == "installed");
        }
    }
    state.commands_done = section(DONE).lines().map(str::to_string).collect();
    let mut current: Option<(String, i32, String)> = None;
    let finish = |c: Option<(String, i32, String)>, state: &mut HostState| {
        if let Some((name, status, text)) = c {
            if status == 0 {
                state.commands_done.insert(name);
            } else {
                state.command_diffs.insert(name, (status, text));
            }
        }
    };
    for line in section(DIFFS).lines() {
        if let Some(rest) = line.strip_prefix("@ ") {
            finish(current.take(), &mut state);
            let (name, status) = rest.rsplit_once(' ').unwrap_or((rest, "-1"));
            current = Some((
                name.to_string(),
                status.trim().parse().unwrap_or(-1),
                String::new(),
            ));
        } else if let (Some(text), Some((_, _, out))) = (
            line.strip_prefix("| ").or(line.strip_prefix('|')),
            current.as_mut(),
        ) {
            out.push_str(text);
            out.push('\n');
        }
    }
    finish(current.take(), &mut state);
    state
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::desired::inline_file;
    use crate::engine::role::UnitState;

    /// The request runs for real on this machine with `sh`, and its answer parses into the
    /// state the plan reads.
    #[test]
    fn probe_runs_here_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("managed.conf");
        std::fs::write(&file, "x = 1\n").unwrap();
        let marker = dir.path().join("marker");
        std::fs::write(&marker, "").unwrap();
        let desired = vec![
            Desired::File(inline_file(
                file.to_str().unwrap().into(),
                b"x = 1\n".to_vec(),
                "root".into(),
                "root".into(),
                0o644,
                false,
            )),
            Desired::Directory {
                path: dir.path().to_str().unwrap().into(),
                owner: "root".into(),
                group: "root".into(),
                mode: 0o700,
            },
            Desired::Sysctl {
                key: "kernel.ostype".into(),
                value: "Linux".into(),
            },
            // An integer sysctl: /proc/sys answers reads past offset 0 with end of file,
            // which dash's byte-by-byte `read` used to take for failure.
            Desired::Sysctl {
                key: "net.ipv4.ip_forward".into(),
                value: "1".into(),
            },
            Desired::Sysctl {
                key: "net.capstan.no_such_key".into(),
                value: "1".into(),
            },
            Desired::Module {
                name: "capstan_no_such_module".into(),
            },
            Desired::Package {
                name: "bash".into(),
            },
            Desired::Package {
                name: "capstan-no-such-package".into(),
            },
            Desired::Command {
                name: "done-by-creates".into(),
                run: "false".into(),
                creates: Some(marker.to_str().unwrap().into()),
                unless: None,
                diff: None,
                on_change: vec![],
            },
            Desired::Command {
                name: "done-by-unless".into(),
                run: "false".into(),
                creates: None,
                unless: Some("test 1 = 1".into()),
                diff: None,
                on_change: vec![],
            },
            Desired::Command {
                name: "pending".into(),
                run: "false".into(),
                creates: None,
                unless: Some("test 1 = 2".into()),
                diff: None,
                on_change: vec![],
            },
            Desired::Command {
                name: "in-step".into(),
                run: "false".into(),
                creates: None,
                unless: None,
                diff: Some("true".into()),
                on_change: vec![],
            },
            // Lines that look like the probe's own markers come back as text.
            Desired::Command {
                name: "drifted".into(),
                run: "false".into(),
                creates: None,
                unless: None,
                diff: Some("printf -- '-a: 1\\n+a: 2\\n::capstan:: end x\\n'; exit 1".into()),
                on_change: vec![],
            },
            Desired::Command {
                name: "cannot-compare".into(),
                run: "false".into(),
                creates: None,
                unless: None,
                diff: Some("echo 'error: the server is unreachable' >&2; exit 2".into()),
                on_change: vec![],
            },
            Desired::Unit {
                name: "capstan-none.service".into(),
                unit_file: None,
                enabled: true,
                state: UnitState::Started,
                restart_on: vec![],
                reload_on: vec![],
            },
        ];
        let script = crate::facts::probe_script(&request(&desired, false)).unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let facts = crate::facts::parse(&String::from_utf8(out.stdout).unwrap()).unwrap();
        let state = host_state(&facts);
        let f = &state.paths[file.to_str().unwrap()];
        assert_eq!(f.kind, PathKind::File);
        assert_eq!(
            f.sha256.as_deref(),
            Some(match &desired[0] {
                Desired::File(d) => d.sha256.as_str(),
                _ => unreachable!(),
            })
        );
        assert_eq!(
            state.paths[dir.path().to_str().unwrap()].kind,
            PathKind::Directory
        );
        assert_eq!(state.sysctls["kernel.ostype"].as_deref(), Some("Linux"));
        assert!(!state.sysctls.contains_key("net.capstan.no_such_key"));
        if let Ok(v) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward") {
            assert_eq!(
                state.sysctls["net.ipv4.ip_forward"].as_deref(),
                Some(v.trim())
            );
        }
        // A kernel without loadable modules has nothing to load: every module counts as there.
        let loadable = std::path::Path::new("/proc/modules").exists();
        assert_eq!(state.modules.is_empty(), loadable);
        assert_eq!(state.packages.get("bash"), Some(&true));
        assert_ne!(state.packages.get("capstan-no-such-package"), Some(&true));
        assert_eq!(
            state.commands_done,
            BTreeSet::from([
                "done-by-creates".to_string(),
                "done-by-unless".to_string(),
                "in-step".to_string()
            ])
        );
        assert_eq!(
            state.command_diffs["drifted"],
            (1, "-a: 1\n+a: 2\n::capstan:: end x\n".to_string())
        );
        assert_eq!(
            state.command_diffs["cannot-compare"],
            (2, "error: the server is unreachable\n".to_string())
        );
        // The plan shows the difference, or why it could not compare.
        let plan = crate::engine::plan::plan(&desired, &state, &std::collections::BTreeMap::new());
        let drifted = plan.changes.iter().find(|c| c.target == "drifted").unwrap();
        assert_eq!(
            drifted.diff.as_deref(),
            Some("-a: 1\n+a: 2\n::capstan:: end x\n")
        );
        let cannot = plan
            .changes
            .iter()
            .find(|c| c.target == "cannot-compare")
            .unwrap();
        assert!(
            cannot.details[0].contains("exit 2): error: the server is unreachable"),
            "{:?}",
            cannot.details
        );
        assert!(!plan.changes.iter().any(|c| c.target == "in-step"));
    }
}
