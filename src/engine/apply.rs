//! Apply: one archive of the changed files and one script that installs it, per host.
//!
//! The script runs as root (through `become`) with the archive on its standard input, so a
//! host's whole apply is a single exec. Files are staged, then installed beside their target
//! and renamed into place (atomic on one file system), so an interrupted run never leaves a
//! half-written file. Handlers (restart/reload) run once each, after a single daemon-reload.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::path::Path;

use super::desired::{Content, Desired, DesiredFile};
use super::plan::{Action, HostPlan};
use crate::facts::{INSTALLED_STATE, sh_quote as q};

/// Where staged files wait for the install step. Cleaned at the start of every apply, so a
/// killed run leaves nothing behind for long.
pub const STAGING_DIR: &str = "/var/lib/capstan/staging";
/// Temporary name beside a target while it is written.
pub const NEW_SUFFIX: &str = ".capstan-new";
/// The marker apply prints before each step, so a failure names its step.
pub const STEP_MARKER: &str = "::capstan:: step ";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackageManager {
    Apt,
    Dnf,
}

impl PackageManager {
    /// From /etc/os-release's ID and ID_LIKE.
    pub fn detect(os_id: &str, id_like: &[String]) -> Option<Self> {
        let ids = std::iter::once(os_id).chain(id_like.iter().map(String::as_str));
        for id in ids {
            match id {
                "debian" | "ubuntu" => return Some(Self::Apt),
                "rhel" | "fedora" | "centos" | "rocky" | "almalinux" | "amzn" => {
                    return Some(Self::Dnf);
                }
                _ => {}
            }
        }
        None
    }
}

/// The files to upload for a plan, keyed by sha256 (hosts needing the same files get the
/// same archive, which the caller can share).
pub fn uploads<'a>(desired: &'a [Desired], plan: &HostPlan) -> BTreeMap<&'a str, &'a DesiredFile> {
    plan.uploads()
        .filter_map(|i| match &desired[i] {
            Desired::File(f) => Some((f.sha256.as_str(), f)),
            _ => None,
        })
        .collect()
}

/// A tar archive of `files`, each named by its sha256.
pub fn archive(files: &BTreeMap<&str, &DesiredFile>) -> io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.mode(tar::HeaderMode::Deterministic);
    for (sha, f) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(f.size);
        header.set_mode(0o600);
        header.set_entry_type(tar::EntryType::Regular);
        match &f.content {
            Content::Inline(bytes) => builder.append_data(&mut header, sha, bytes.as_slice())?,
            Content::Cached(path) => {
                let file = std::fs::File::open(path)?;
                builder.append_data(&mut header, sha, file)?;
            }
        }
    }
    builder.into_inner()
}

/// Facts the script needs besides the plan.
pub struct ScriptInputs<'a> {
    pub run_id: &'a str,
    pub package_manager: Option<PackageManager>,
    /// Managed files already right on the host, with their (size, mtime, inode), to add
    /// to the installed-files record.
    pub already_right: Vec<(&'a DesiredFile, u64, i64, u64)>,
}

/// The install script for `plan`; it reads the archive on stdin when there are uploads.
pub fn script(
    desired: &[Desired],
    plan: &HostPlan,
    inputs: &ScriptInputs<'_>,
) -> Result<String, String> {
    let staging = format!("{STAGING_DIR}/{}", inputs.run_id);
    let mut s = String::from(
        "set -eu\numask 077\nPATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nexport PATH\n",
    );
    let step = |s: &mut String, what: &str| {
        let _ = writeln!(s, "printf '%s\\n' {}", q(&format!("{STEP_MARKER}{what}")));
    };
    let uploads = uploads(desired, plan);
    // Leftovers of an interrupted run: staging and half-written targets.
    let _ = writeln!(s, "rm -rf {STAGING_DIR}");
    for f in uploads.values() {
        let _ = writeln!(s, "rm -f {}", q(&format!("{}{NEW_SUFFIX}", f.path)));
    }
    if !uploads.is_empty() {
        step(&mut s, "unpack uploaded files");
        let _ = writeln!(
            s,
            "mkdir -p -m 0700 {st}\ntar -x -f - -C {st}",
            st = q(&staging)
        );
    }

    let packages: Vec<&str> = plan
        .changes
        .iter()
        .filter(|c| c.action == Action::Install)
        .map(|c| c.target.as_str())
        .collect();
    if !packages.is_empty() {
        let list = packages.iter().map(|p| q(p)).collect::<Vec<_>>().join(" ");
        step(&mut s, &format!("install packages {}", packages.join(" ")));
        match inputs.package_manager {
            Some(PackageManager::Apt) => {
                let _ = writeln!(
                    s,
                    "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends {list} >&2"
                );
            }
            Some(PackageManager::Dnf) => {
                let _ = writeln!(s, "dnf install -y -q {list} >&2");
            }
            None => {
                return Err(format!(
                    "no known package manager on this host to install {}",
                    packages.join(", ")
                ));
            }
        }
    }

    for c in &plan.changes {
        let d = &desired[c.index];
        match (d, c.action) {
            (
                Desired::Directory {
                    path,
                    owner,
                    group,
                    mode,
                },
                _,
            ) => {
                step(&mut s, &format!("directory {path}"));
                if c.action == Action::Update {
                    let _ = writeln!(s, "rm -f {}", q(path));
                }
                let _ = writeln!(
                    s,
                    "install -d -o {} -g {} -m {mode:04o} {}",
                    q(owner),
                    q(group),
                    q(path)
                );
            }
            (Desired::File(f), Action::Create | Action::Update) => {
                step(&mut s, &format!("file {}", f.path));
                let tmp = format!("{}{NEW_SUFFIX}", f.path);
                if let Some(parent) = Path::new(&f.path).parent().and_then(Path::to_str) {
                    let _ = writeln!(s, "[ -d {p} ] || mkdir -p {p}", p = q(parent));
                }
                let _ = writeln!(
                    s,
                    "install -o {} -g {} -m {:04o} {} {}\nmv -fT {} {}",
                    q(&f.owner),
                    q(&f.group),
                    f.mode,
                    q(&format!("{staging}/{}", f.sha256)),
                    q(&tmp),
                    q(&tmp),
                    q(&f.path)
                );
            }
            (Desired::File(f), _) => {
                step(&mut s, &format!("file {} owner and mode", f.path));
                let _ = writeln!(
                    s,
                    "chown {}:{} {p}\nchmod {:04o} {p}",
                    q(&f.owner),
                    q(&f.group),
                    f.mode,
                    p = q(&f.path)
                );
            }
            (Desired::Sysctl { key, value }, _) => {
                step(&mut s, &format!("sysctl {key}"));
                let _ = writeln!(
                    s,
                    "printf '%s\\n' {} > {}",
                    q(value),
                    q(&format!("/proc/sys/{}", key.replace('.', "/")))
                );
            }
            (Desired::Module { name }, _) => {
                step(&mut s, &format!("module {name}"));
                let _ = writeln!(s, "modprobe {}", q(name));
            }
            (Desired::Command { name, run, .. }, _) => {
                step(&mut s, &format!("command {name}"));
                let _ = writeln!(s, "( {run} ) >&2 </dev/null");
            }
            (Desired::Package { .. } | Desired::Unit { .. }, _) => {}
        }
    }

    // Record what is installed now, so that later probes hash only what changed.
    let mut record = String::new();
    for f in uploads.values() {
        let _ = writeln!(
            record,
            "printf '%s\\t%s\\t%s\\n' {} \"$(stat -c '%s\t%Y\t%i' {})\" {}",
            q(&f.sha256),
            q(&f.path),
            q(&f.path)
        );
    }
    for (f, size, mtime, inode) in &inputs.already_right {
        let _ = writeln!(
            record,
            "printf '%s\\n' {}",
            q(&format!(
                "{}\t{size}\t{mtime}\t{inode}\t{}",
                f.sha256, f.path
            ))
        );
    }
    if !record.is_empty() {
        step(&mut s, "record installed files");
        let state = INSTALLED_STATE;
        let _ = write!(
            s,
            "mkdir -p -m 0700 /var/lib/capstan\n{{\n{record}}} > {state}.new-entries\n\
             touch {state}\n\
             awk -F'\\t' 'NR == FNR {{ seen[$5] = 1; print; next }} !($5 in seen)' {state}.new-entries {state} > {state}{NEW_SUFFIX}\n\
             mv -f {state}{NEW_SUFFIX} {state}\nrm -f {state}.new-entries\n"
        );
    }

    // Units: one daemon-reload, then enable/start/stop, then each handler once.
    if plan.daemon_reload {
        step(&mut s, "systemctl daemon-reload");
        s.push_str("systemctl daemon-reload\n");
    }
    for action in [
        Action::Enable,
        Action::Start,
        Action::Stop,
        Action::Restart,
        Action::Reload,
    ] {
        for c in plan
            .changes
            .iter()
            .filter(|c| c.kind == "unit" && c.action == action)
        {
            step(&mut s, &format!("unit {} {}", c.target, action.as_str()));
            let _ = writeln!(s, "systemctl {} {}", action.as_str(), q(&c.target));
        }
    }
    let _ = writeln!(s, "rm -rf {STAGING_DIR}");
    step(&mut s, "done");
    Ok(s)
}

/// Shell lines that remove what an interrupted apply left on a host: the staging folder
/// and the half-written `<target>.capstan-new` beside any managed file of `shape` (and of
/// the installed-files record). Built-ins only (no process) unless something is left.
/// Runs at the start of the probe of every run that changes hosts, under the cluster lock,
/// so a killed run's leftovers go at the next run even on a host with nothing to change.
pub fn leftovers_cleanup(shape: &[Desired]) -> String {
    let state = INSTALLED_STATE;
    let mut s = format!(
        "[ -e {STAGING_DIR} ] && rm -rf {STAGING_DIR} >/dev/null 2>&1\n         for f in {state}{NEW_SUFFIX} {state}.new-entries"
    );
    for d in shape {
        if let Desired::File(f) = d {
            let _ = write!(s, " {}", q(&format!("{}{NEW_SUFFIX}", f.path)));
        }
    }
    s.push_str("; do [ -e \"$f\" ] && rm -f \"$f\" >/dev/null 2>&1; done; f=\n");
    s
}

/// The step a failed apply was in: the last marker it printed.
pub fn last_step(stdout: &str) -> Option<&str> {
    stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(STEP_MARKER))
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::engine::desired::inline_file;
    use crate::engine::plan::{HostState, plan};
    use crate::engine::role::UnitState;

    /// Applies a plan for real into a temp dir with `sh`: files land with their content,
    /// nothing is left in staging, and a second plan is empty.
    #[test]
    fn the_script_installs_files_atomically_here() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap();
        let user = String::from_utf8(
            std::process::Command::new("id")
                .arg("-un")
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
        .trim()
        .to_string();
        let group = String::from_utf8(
            std::process::Command::new("id")
                .arg("-gn")
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
        .trim()
        .to_string();
        let desired = vec![
            Desired::Directory {
                path: format!("{root}/etc/app"),
                owner: user.clone(),
                group: group.clone(),
                mode: 0o750,
            },
            Desired::File(inline_file(
                format!("{root}/etc/app/app.conf"),
                b"a = 1\n".to_vec(),
                user.clone(),
                group.clone(),
                0o640,
                false,
            )),
            Desired::File(inline_file(
                format!("{root}/etc/app/secret.key"),
                b"KEY\n".to_vec(),
                user.clone(),
                group.clone(),
                0o600,
                true,
            )),
        ];
        let p = plan(&desired, &HostState::default(), &BTreeMap::new());
        let files = uploads(&desired, &p);
        assert_eq!(files.len(), 2);
        let tar = archive(&files).unwrap();
        let inputs = ScriptInputs {
            run_id: "test",
            package_manager: None,
            already_right: vec![],
        };
        let script = script(&desired, &p, &inputs).unwrap();
        // Staging and the record live under fixed paths; point them into the temp dir.
        let script = script
            .replace(STAGING_DIR, &format!("{root}/staging"))
            .replace("/var/lib/capstan", &format!("{root}/var"))
            .replace(INSTALLED_STATE, &format!("{root}/var/installed.tsv"));
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&tar).unwrap();
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(last_step(&stdout), Some("done"));
        assert_eq!(
            std::fs::read_to_string(format!("{root}/etc/app/app.conf")).unwrap(),
            "a = 1\n"
        );
        let mode = std::fs::metadata(format!("{root}/etc/app/secret.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777;
        assert_eq!(mode, 0o600);
        assert!(!Path::new(&format!("{root}/staging")).exists());
        assert!(!Path::new(&format!("{root}/etc/app/app.conf{NEW_SUFFIX}")).exists());
        let record = std::fs::read_to_string(format!("{root}/var/installed.tsv")).unwrap();
        assert_eq!(record.lines().count(), 2, "{record}");
        assert!(
            !script.contains("KEY"),
            "secret bytes travel in the archive, never in the script"
        );

        // Probing after the apply finds nothing left to do.
        let req = crate::engine::probe::request(&desired, false);
        let req = crate::facts::ProbeRequest {
            installed_state: Some(format!("{root}/var/installed.tsv")),
            ..req
        };
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(crate::facts::probe_script(&req).unwrap())
            .output()
            .unwrap();
        let facts = crate::facts::parse(&String::from_utf8(out.stdout).unwrap()).unwrap();
        let state = crate::engine::probe::host_state(&facts);
        let again = plan(&desired, &state, &BTreeMap::new());
        assert!(again.is_empty(), "{:?}", again.changes);
    }

    #[test]
    fn units_reload_once_then_handlers_run_once() {
        let desired = vec![
            Desired::File(inline_file(
                "/etc/systemd/system/a.service".into(),
                b"[Unit]\n".to_vec(),
                "root".into(),
                "root".into(),
                0o644,
                false,
            )),
            Desired::Unit {
                name: "a.service".into(),
                unit_file: Some("/etc/systemd/system/a.service".into()),
                enabled: true,
                state: UnitState::Started,
                restart_on: vec![],
                reload_on: vec![],
            },
        ];
        let mut state = HostState::default();
        state.units.insert(
            "a.service".into(),
            crate::engine::plan::UnitFacts {
                active_state: "active".into(),
                unit_file_state: "enabled".into(),
            },
        );
        let p = plan(&desired, &state, &BTreeMap::new());
        let inputs = ScriptInputs {
            run_id: "r",
            package_manager: None,
            already_right: vec![],
        };
        let s = script(&desired, &p, &inputs).unwrap();
        assert_eq!(s.matches("systemctl daemon-reload\n").count(), 1);
        assert_eq!(s.matches("systemctl restart 'a.service'").count(), 1);
        let reload_at = s.find("systemctl daemon-reload\n").unwrap();
        assert!(s.find("systemctl restart").unwrap() > reload_at);
    }

    #[test]
    fn packages_need_a_package_manager() {
        let desired = vec![Desired::Package {
            name: "conntrack".into(),
        }];
        let p = plan(&desired, &HostState::default(), &BTreeMap::new());
        let mut inputs = ScriptInputs {
            run_id: "r",
            package_manager: None,
            already_right: vec![],
        };
        assert!(
            script(&desired, &p, &inputs)
                .unwrap_err()
                .contains("conntrack")
        );
        inputs.package_manager = Some(PackageManager::Apt);
        assert!(
            script(&desired, &p, &inputs)
                .unwrap()
                .contains("apt-get install -y -q --no-install-recommends 'conntrack'")
        );
        assert_eq!(
            PackageManager::detect("rocky", &[]),
            Some(PackageManager::Dnf)
        );
        assert_eq!(
            PackageManager::detect("linuxmint", &["ubuntu".into()]),
            Some(PackageManager::Apt)
        );
    }

    /// The leftovers of a killed apply (staging, `.capstan-new` beside targets) go; the
    /// targets and unrelated files stay.
    #[test]
    fn leftovers_of_a_killed_apply_are_removed_here() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap();
        let staging = format!("{root}/staging");
        std::fs::create_dir_all(format!("{staging}/run1")).unwrap();
        std::fs::write(format!("{staging}/run1/abc"), b"half").unwrap();
        let target = format!("{root}/app.conf");
        std::fs::write(&target, b"old\n").unwrap();
        std::fs::write(format!("{target}{NEW_SUFFIX}"), b"ne").unwrap();
        std::fs::write(format!("{root}/other{NEW_SUFFIX}"), b"not ours").unwrap();
        let shape = vec![
            Desired::File(inline_file(
                target.clone(),
                b"new\n".to_vec(),
                "root".into(),
                "root".into(),
                0o644,
                false,
            )),
            Desired::File(inline_file(
                format!("{root}/absent"),
                b"x".to_vec(),
                "root".into(),
                "root".into(),
                0o644,
                false,
            )),
        ];
        let script = leftovers_cleanup(&shape).replace(STAGING_DIR, &staging);
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{script}echo probe-goes-on"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "probe-goes-on\n");
        assert!(!std::path::Path::new(&staging).exists());
        assert!(!std::path::Path::new(&format!("{target}{NEW_SUFFIX}")).exists());
        assert_eq!(std::fs::read(&target).unwrap(), b"old\n");
        assert!(std::path::Path::new(&format!("{root}/other{NEW_SUFFIX}")).exists());
    }
}
