//! The versions a cluster runs now, read with ONE exec per host (connect and read overlap:
//! each host's exec starts as soon as its own connection is up).
//!
//! On every host: `uname -m`, `kubelet --version` (hosts with a kubelet), `kubectl version
//! --client` and `containerd --version` (where installed). On control planes also: the API
//! server's `/version` asked on that host directly (`--server https://INTERNAL:PORT`, with
//! the host's admin.conf), the image tags in the kube-apiserver, kube-controller-manager and
//! kube-scheduler manifests, and the Nodes as the API lists them (their kubeletVersion; the
//! first control plane that answers is used). On etcd members: `etcdctl endpoint status`.
//!
//! The script prints framed sections (`::capstan-upgrade:: begin NAME`, the command's
//! stdout, `… stderr NAME`, its stderr, `… end NAME STATUS`); [`parse_output`] reads them
//! (pure, tested with fixtures).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::policy::{LiveVersions, Part, Reading, Source};
use crate::artifacts::Arch;
use crate::facts::{self, lenient_semver, parse_version_output};
use crate::inventory::{Host, Inventory, Role};
use crate::ssh;
use crate::workflows::gates::{self, NodeStatus};
use crate::workflows::{SessionOptions, target};

const MARK: &str = "::capstan-upgrade::";
const PATH: &str = "PATH=/usr/local/bin:/usr/local/sbin:/usr/bin:/usr/sbin:/bin:/sbin";
/// The exit status of a shell command that was not found.
const NOT_FOUND: i32 = 127;

/// What a host is, for reading its versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveHost {
    pub name: String,
    pub control_plane: bool,
    pub kubelet: bool,
    pub etcd: bool,
    /// `https://INTERNAL:PORT` of its API server (control planes).
    pub api_server: Option<String>,
}

impl LiveHost {
    pub fn for_inventory(inventory: &Inventory, apiserver_port: u16) -> Vec<LiveHost> {
        inventory
            .hosts
            .iter()
            .map(|h| LiveHost {
                name: h.name.clone(),
                control_plane: h.has_role(Role::ControlPlane),
                kubelet: crate::pki::spec::runs_kubelet(h),
                etcd: inventory.etcd_members().any(|m| m.name == h.name),
                api_server: h
                    .has_role(Role::ControlPlane)
                    .then(|| api_server_url(h, apiserver_port)),
            })
            .collect()
    }
}

fn api_server_url(h: &Host, port: u16) -> String {
    if h.internal_address.contains(':') {
        format!("https://[{}]:{port}", h.internal_address)
    } else {
        format!("https://{}:{port}", h.internal_address)
    }
}

/// The one script for `host`.
pub fn host_script(host: &LiveHost) -> String {
    let mut s = String::from(
        "S() { e=$(mktemp 2>/dev/null || echo /tmp/capstan-upgrade.$$); \
         printf '\\n%s begin %s\\n' \"$M\" \"$1\"; ( eval \"$2\" ) 2>\"$e\" </dev/null; rc=$?; \
         printf '\\n%s stderr %s\\n' \"$M\" \"$1\"; head -c 2000 \"$e\"; rm -f \"$e\"; \
         printf '\\n%s end %s %s\\n' \"$M\" \"$1\" \"$rc\"; }\n",
    );
    let _ = writeln!(s, "M={MARK}; export {PATH}");
    let mut section = |name: &str, cmd: &str| {
        let _ = writeln!(s, "S {name} {}", ssh::quote(cmd));
    };
    section("arch", "uname -m");
    let tool = |bin: &str, args: &str| {
        format!(
            "command -v {bin} >/dev/null || {{ echo '{bin} is not installed' >&2; exit {NOT_FOUND}; }}; {bin} {args}"
        )
    };
    if host.kubelet {
        section("kubelet", &tool("kubelet", "--version"));
    }
    section("kubectl", &tool("kubectl", "version --client"));
    section("containerd", &tool("containerd", "--version"));
    if host.etcd {
        section("etcd", &gates::etcd_status_script());
    }
    if let Some(server) = &host.api_server {
        section(
            "kube-apiserver",
            &gates::kubectl(Some(server), "get --raw=/version"),
        );
        for c in [
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
        ] {
            section(
                &format!("manifest-{c}"),
                &format!(
                    "sed -n 's/^[[:space:]]*image:[[:space:]]*//p' /etc/kubernetes/manifests/{c}.yaml"
                ),
            );
        }
        section("nodes", &gates::nodes_script());
    }
    s
}

/// One section of the output.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Section {
    pub stdout: String,
    pub stderr: String,
    /// `None` when the section did not end (the script was cut off).
    pub status: Option<i32>,
}

impl Section {
    fn ok(&self) -> bool {
        self.status == Some(0)
    }

    /// Why the section failed, in one line.
    fn why(&self) -> String {
        match self.status {
            None => "the read was cut off".into(),
            Some(NOT_FOUND) if self.stderr.contains("not installed") => "not installed".into(),
            Some(rc) => {
                let text = first_line(&self.stderr)
                    .or_else(|| first_line(&self.stdout))
                    .unwrap_or("no output");
                format!("exit status {rc}: {text}")
            }
        }
    }
}

fn first_line(text: &str) -> Option<&str> {
    text.lines().map(str::trim).find(|l| !l.is_empty())
}

/// Splits the script's output into its sections.
pub fn sections(output: &str) -> BTreeMap<String, Section> {
    let mut out = BTreeMap::new();
    let mut current: Option<(String, Section, bool)> = None;
    for line in output.lines() {
        if let Some(rest) = line.strip_prefix(MARK) {
            let mut words = rest.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some("begin"), Some(name), _) => {
                    current = Some((name.to_string(), Section::default(), false));
                }
                (Some("stderr"), Some(_), _) => {
                    if let Some(c) = current.as_mut() {
                        c.2 = true;
                    }
                }
                (Some("end"), Some(name), status) => {
                    if let Some((n, mut sec, _)) = current.take() {
                        sec.status = status.and_then(|s| s.parse().ok());
                        out.insert(n, sec);
                    } else {
                        out.insert(name.to_string(), Section::default());
                    }
                }
                _ => {}
            }
            continue;
        }
        if let Some((_, sec, in_stderr)) = current.as_mut() {
            let buf = if *in_stderr {
                &mut sec.stderr
            } else {
                &mut sec.stdout
            };
            buf.push_str(line);
            buf.push('\n');
        }
    }
    // A section that began but did not end is kept, without a status.
    if let Some((n, sec, _)) = current {
        out.insert(n, sec);
    }
    out
}

/// What one host's output says.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HostRead {
    pub readings: Vec<Reading>,
    pub arch: Option<Arch>,
    /// The Nodes (control planes): name → status, or why they could not be listed.
    pub nodes: Option<Result<BTreeMap<String, NodeStatus>, String>>,
}

/// The tag of an image reference (`registry.k8s.io/kube-scheduler:v1.32.4` → `v1.32.4`).
pub fn image_tag(image: &str) -> Option<&str> {
    let image = image.trim().trim_matches(|c| c == '"' || c == '\'');
    let image = image.split('@').next()?;
    let last = image.rsplit('/').next()?;
    let (_, tag) = last.split_once(':')?;
    (!tag.is_empty()).then_some(tag)
}

#[derive(Deserialize)]
struct ServerVersion {
    #[serde(rename = "gitVersion")]
    git_version: String,
}

/// Reads one host's output (see [`host_script`]).
pub fn parse_output(host: &LiveHost, output: &str) -> HostRead {
    let secs = sections(output);
    let name = host.name.as_str();
    let get = |n: &str| {
        secs.get(n).cloned().unwrap_or(Section {
            stdout: String::new(),
            stderr: "the section is missing from the output".into(),
            status: None,
        })
    };
    let mut read = HostRead::default();
    let arch = get("arch");
    read.arch = arch.ok().then(|| Arch::parse(&arch.stdout)).flatten();

    // Binaries: kubelet (required where a kubelet runs), kubectl and containerd (where present).
    let binaries = [
        (Part::Kubelet, facts::Component::Kubelet, host.kubelet),
        (Part::Kubectl, facts::Component::Kubectl, false),
        (Part::Containerd, facts::Component::Containerd, false),
    ];
    for (part, component, required) in binaries {
        if part == Part::Kubelet && !host.kubelet {
            continue;
        }
        let sec = get(part.name());
        if sec.ok() {
            read.readings
                .push(match parse_version_output(component, &sec.stdout) {
                    Some(raw) => {
                        Reading::ok(part, name, Source::Binary, &raw, lenient_semver(&raw))
                    }
                    None => Reading::failed(
                        part,
                        name,
                        Source::Binary,
                        format!(
                            "unexpected version output: {}",
                            first_line(&sec.stdout).unwrap_or("(empty)")
                        ),
                    ),
                });
        } else if required || sec.why() != "not installed" {
            read.readings
                .push(Reading::failed(part, name, Source::Binary, sec.why()));
        }
    }

    if host.etcd {
        let sec = get("etcd");
        let reading = if sec.ok() {
            match gates::parse_etcd_version(&sec.stdout) {
                Ok(raw) => Reading::ok(
                    Part::Etcd,
                    name,
                    Source::EndpointStatus,
                    &raw,
                    lenient_semver(&raw),
                ),
                Err(e) => Reading::failed(Part::Etcd, name, Source::EndpointStatus, e),
            }
        } else {
            Reading::failed(Part::Etcd, name, Source::EndpointStatus, sec.why())
        };
        read.readings.push(reading);
    }

    if host.api_server.is_some() {
        let sec = get("kube-apiserver");
        let reading = if sec.ok() {
            match serde_json::from_str::<ServerVersion>(sec.stdout.trim()) {
                Ok(v) => Reading::ok(
                    Part::ApiServer,
                    name,
                    Source::Version,
                    &v.git_version,
                    lenient_semver(&v.git_version),
                ),
                Err(e) => Reading::failed(
                    Part::ApiServer,
                    name,
                    Source::Version,
                    format!("unexpected /version answer ({e})"),
                ),
            }
        } else {
            Reading::failed(Part::ApiServer, name, Source::Version, sec.why())
        };
        read.readings.push(reading);
        for part in [Part::ApiServer, Part::ControllerManager, Part::Scheduler] {
            let sec = get(&format!("manifest-{}", part.name()));
            let reading = if sec.ok() {
                match first_line(&sec.stdout).and_then(image_tag) {
                    Some(tag) => {
                        Reading::ok(part, name, Source::Manifest, tag, lenient_semver(tag))
                    }
                    None => Reading::failed(
                        part,
                        name,
                        Source::Manifest,
                        format!(
                            "no image tag in /etc/kubernetes/manifests/{}.yaml",
                            part.name()
                        ),
                    ),
                }
            } else {
                Reading::failed(part, name, Source::Manifest, sec.why())
            };
            read.readings.push(reading);
        }
        let sec = get("nodes");
        read.nodes = Some(if sec.ok() {
            gates::parse_nodes(&sec.stdout)
        } else {
            Err(sec.why())
        });
    }
    read
}

/// What [`read_live`] learned.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LiveRead {
    pub versions: LiveVersions,
    /// Each reachable host's architecture.
    pub arches: BTreeMap<String, Arch>,
    /// Hosts that could not be reached or read, with why.
    pub unreachable: BTreeMap<String, String>,
    /// Where the Nodes were listed (`None`: no control plane answered).
    pub nodes_from: Option<String>,
}

impl LiveRead {
    /// The architectures of the reachable hosts, each once, in order.
    pub fn distinct_arches(&self) -> Vec<Arch> {
        self.arches
            .values()
            .copied()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    }
}

/// Adds the Nodes' kubeletVersions to the readings (from the first control plane whose
/// listing worked).
fn merge_nodes(hosts: &[LiveHost], reads: &[Option<HostRead>], live: &mut LiveRead) {
    let mut why = Vec::new();
    let listing = hosts.iter().zip(reads).find_map(|(h, r)| {
        match r.as_ref().and_then(|r| r.nodes.as_ref()) {
            Some(Ok(nodes)) => Some((h.name.clone(), nodes.clone())),
            Some(Err(e)) => {
                why.push(format!("{}: {e}", h.name));
                None
            }
            None => None,
        }
    });
    for h in hosts.iter().filter(|h| h.kubelet) {
        let reading = match &listing {
            Some((_, nodes)) => match nodes.get(&h.name) {
                Some(n) if !n.kubelet_version.is_empty() => Reading::ok(
                    Part::Kubelet,
                    &h.name,
                    Source::Node,
                    &n.kubelet_version,
                    lenient_semver(&n.kubelet_version),
                ),
                Some(_) => Reading::failed(
                    Part::Kubelet,
                    &h.name,
                    Source::Node,
                    "the Node reports no kubeletVersion",
                ),
                None => Reading::failed(
                    Part::Kubelet,
                    &h.name,
                    Source::Node,
                    "no Node of that name in the API",
                ),
            },
            None => Reading::failed(
                Part::Kubelet,
                &h.name,
                Source::Node,
                if why.is_empty() {
                    "no control plane could list the Nodes".to_string()
                } else {
                    format!("the Nodes could not be listed ({})", why.join("; "))
                },
            ),
        };
        live.versions.readings.push(reading);
    }
    live.nodes_from = listing.map(|(h, _)| h);
}

/// Connects to every host and reads its versions: one exec per host.
pub async fn read_live(
    inventory: &Inventory,
    session: &SessionOptions,
    apiserver_port: u16,
) -> LiveRead {
    let hosts = LiveHost::for_inventory(inventory, apiserver_port);
    let targets: Vec<ssh::Target> = inventory.hosts.iter().map(target).collect();
    let progress =
        crate::ui::HostProgress::new("reading versions", targets.iter().map(|t| &t.name));
    let hosts_ref = &hosts;
    let progress_ref = &progress;
    let results = ssh::for_each_host(
        &targets,
        &session.ssh,
        session.forks,
        |i, conn| async move {
            let host = &hosts_ref[i];
            let result = match conn {
                Err(e) => Err(e.to_string()),
                Ok(conn) => {
                    let out = conn.exec(&host_script(host)).await;
                    conn.close().await;
                    match out {
                        Ok(out) => Ok(parse_output(host, &out.stdout_text())),
                        Err(e) => Err(e.to_string()),
                    }
                }
            };
            progress_ref.host_done(&host.name);
            result
        },
    )
    .await;
    progress.finish();
    assemble(&hosts, results)
}

/// The same reading as [`read_live`] over connections a run already holds (`conns[i]` is
/// host `i` of the inventory, `None` when it is not connected: reported unreachable).
pub async fn read_over(
    inventory: &Inventory,
    conns: &[Option<&ssh::Connection>],
    apiserver_port: u16,
) -> LiveRead {
    let hosts = LiveHost::for_inventory(inventory, apiserver_port);
    let work = hosts.iter().zip(conns).map(|(host, conn)| async move {
        let Some(conn) = conn else {
            return Err(format!("{} is not connected", host.name));
        };
        match conn.exec(&host_script(host)).await {
            Ok(out) => Ok(parse_output(host, &out.stdout_text())),
            Err(e) => Err(e.to_string()),
        }
    });
    let results = futures::future::join_all(work).await;
    assemble(&hosts, results)
}

/// The readings of every host (in inventory order), the Nodes merged in, sorted.
fn assemble(hosts: &[LiveHost], results: Vec<Result<HostRead, String>>) -> LiveRead {
    let mut live = LiveRead::default();
    let mut reads = Vec::new();
    for (h, r) in hosts.iter().zip(results) {
        match r {
            Ok(read) => {
                if let Some(a) = read.arch {
                    live.arches.insert(h.name.clone(), a);
                }
                live.versions.readings.extend(read.readings.iter().cloned());
                reads.push(Some(read));
            }
            Err(e) => {
                live.unreachable.insert(h.name.clone(), e);
                reads.push(None);
            }
        }
    }
    merge_nodes(hosts, &reads, &mut live);
    // Readings in a stable order: by part, then inventory order, then source.
    let order: BTreeMap<&str, usize> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| (h.name.as_str(), i))
        .collect();
    live.versions.readings.sort_by_key(|r| {
        (
            r.part,
            order.get(r.host.as_str()).copied().unwrap_or(usize::MAX),
            r.source,
        )
    });
    live
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp() -> LiveHost {
        LiveHost {
            name: "cp1".into(),
            control_plane: true,
            kubelet: true,
            etcd: true,
            api_server: Some("https://10.0.0.11:6443".into()),
        }
    }

    fn worker() -> LiveHost {
        LiveHost {
            name: "w1".into(),
            control_plane: false,
            kubelet: true,
            etcd: false,
            api_server: None,
        }
    }

    fn sec(name: &str, stdout: &str, stderr: &str, rc: i32) -> String {
        format!(
            "\n{MARK} begin {name}\n{stdout}\n{MARK} stderr {name}\n{stderr}\n{MARK} end {name} {rc}\n"
        )
    }

    #[test]
    fn the_script_reads_everything_once() {
        let s = host_script(&cp());
        for want in [
            "uname -m",
            "kubelet --version",
            "kubectl version --client",
            "containerd --version",
            "endpoint status -w json",
            "--server=https://10.0.0.11:6443",
            "get --raw=/version",
            "/etc/kubernetes/manifests/kube-scheduler.yaml",
            "/etc/kubernetes/manifests/kube-controller-manager.yaml",
            "get nodes -o json",
        ] {
            assert!(s.contains(want), "{want} missing from\n{s}");
        }
        let w = host_script(&worker());
        assert!(!w.contains("manifests"), "{w}");
        assert!(!w.contains("etcdctl"), "{w}");
        assert!(w.contains("kubelet --version"));
    }

    #[test]
    fn the_script_runs_in_a_posix_shell() {
        // This machine's own sh: the framing survives, whatever the tools print or lack.
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(host_script(&worker()))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let secs = sections(&text);
        assert_eq!(secs["arch"].status, Some(0), "{text}");
        assert!(Arch::parse(&secs["arch"].stdout).is_some(), "{text}");
        for name in ["kubelet", "kubectl", "containerd"] {
            assert!(secs[name].status.is_some(), "{name}: {text}");
        }
        assert!(parse_output(&worker(), &text).arch.is_some());
    }

    #[test]
    fn image_tags() {
        assert_eq!(
            image_tag("registry.k8s.io/kube-scheduler:v1.32.4"),
            Some("v1.32.4")
        );
        assert_eq!(
            image_tag("mirror:5000/k8s/kube-scheduler:v1.33.1"),
            Some("v1.33.1")
        );
        assert_eq!(
            image_tag("\"registry.k8s.io/kube-scheduler:v1.32.4@sha256:abc\""),
            Some("v1.32.4")
        );
        assert_eq!(image_tag("mirror:5000/k8s/kube-scheduler"), None);
    }

    #[test]
    fn a_control_planes_output_gives_every_reading() {
        let out = [
            sec("arch", "x86_64", "", 0),
            sec("kubelet", "Kubernetes v1.32.4", "", 0),
            sec(
                "kubectl",
                "Client Version: v1.32.4\nKustomize Version: v5.5.0",
                "",
                0,
            ),
            sec(
                "containerd",
                "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1",
                "",
                0,
            ),
            sec(
                "etcd",
                r#"[{"Endpoint":"https://127.0.0.1:2379","Status":{"header":{"cluster_id":1},"version":"3.4.23","dbSize":20480}}]"#,
                "",
                0,
            ),
            sec(
                "kube-apiserver",
                r#"{"major":"1","minor":"32","gitVersion":"v1.32.4","platform":"linux/amd64"}"#,
                "",
                0,
            ),
            sec("manifest-kube-apiserver", "registry.k8s.io/kube-apiserver:v1.32.4", "", 0),
            sec(
                "manifest-kube-controller-manager",
                "registry.k8s.io/kube-controller-manager:v1.32.4",
                "",
                0,
            ),
            sec("manifest-kube-scheduler", "", "sed: can't read /etc/kubernetes/manifests/kube-scheduler.yaml: No such file or directory", 2),
            sec(
                "nodes",
                r#"{"items":[{"metadata":{"name":"cp1"},"status":{"conditions":[{"type":"Ready","status":"True"}],"nodeInfo":{"kubeletVersion":"v1.32.4"}}}]}"#,
                "",
                0,
            ),
        ]
        .concat();
        let read = parse_output(&cp(), &out);
        assert_eq!(read.arch, Some(Arch::Amd64));
        let get = |part: Part, source: Source| {
            read.readings
                .iter()
                .find(|r| r.part == part && r.source == source)
                .unwrap_or_else(|| panic!("{part} {source:?} missing: {:?}", read.readings))
        };
        let v = |t: &str| crate::inventory::Version::parse(t);
        assert_eq!(get(Part::Kubelet, Source::Binary).version, v("v1.32.4"));
        assert_eq!(get(Part::Kubectl, Source::Binary).version, v("v1.32.4"));
        assert_eq!(
            get(Part::Containerd, Source::Binary).raw.as_deref(),
            Some("1.6.20~ds1")
        );
        assert_eq!(
            get(Part::Etcd, Source::EndpointStatus).version,
            v("v3.4.23")
        );
        assert_eq!(get(Part::ApiServer, Source::Version).version, v("v1.32.4"));
        assert_eq!(get(Part::ApiServer, Source::Manifest).version, v("v1.32.4"));
        assert_eq!(
            get(Part::ControllerManager, Source::Manifest).version,
            v("v1.32.4")
        );
        let s = get(Part::Scheduler, Source::Manifest);
        assert_eq!(s.version, None);
        assert!(
            s.error.as_deref().unwrap().contains("No such file"),
            "{s:?}"
        );
        let nodes = read.nodes.unwrap().unwrap();
        assert_eq!(nodes["cp1"].kubelet_version, "v1.32.4");
    }

    #[test]
    fn absent_tools_and_failures_are_told_apart() {
        let out = [
            sec("arch", "aarch64", "", 0),
            sec("kubelet", "", "kubelet is not installed", 127),
            sec("kubectl", "", "kubectl is not installed", 127),
            sec(
                "containerd",
                "",
                "containerd: error while loading shared libraries",
                127,
            ),
        ]
        .concat();
        let read = parse_output(&worker(), &out);
        assert_eq!(read.arch, Some(Arch::Arm64));
        // The kubelet must be there; kubectl need not; a containerd that fails is reported.
        let kubelet = read
            .readings
            .iter()
            .find(|r| r.part == Part::Kubelet)
            .unwrap();
        assert_eq!(kubelet.error.as_deref(), Some("not installed"));
        assert!(!read.readings.iter().any(|r| r.part == Part::Kubectl));
        let c = read
            .readings
            .iter()
            .find(|r| r.part == Part::Containerd)
            .unwrap();
        assert!(
            c.error.as_deref().unwrap().contains("shared libraries"),
            "{c:?}"
        );
    }

    #[test]
    fn a_cut_off_output_says_so() {
        let out = format!("\n{MARK} begin arch\nx86_64\n");
        let read = parse_output(&worker(), &out);
        assert_eq!(read.arch, None);
        let kubelet = read
            .readings
            .iter()
            .find(|r| r.part == Part::Kubelet)
            .unwrap();
        assert!(kubelet.error.is_some());
    }

    #[test]
    fn node_versions_come_from_the_first_control_plane_that_lists_them() {
        let hosts = vec![cp(), worker()];
        let mut nodes = BTreeMap::new();
        nodes.insert(
            "cp1".to_string(),
            NodeStatus {
                ready: true,
                kubelet_version: "v1.32.4".into(),
                labels: BTreeMap::new(),
            },
        );
        let reads = vec![
            Some(HostRead {
                nodes: Some(Ok(nodes)),
                ..HostRead::default()
            }),
            Some(HostRead::default()),
        ];
        let mut live = LiveRead::default();
        merge_nodes(&hosts, &reads, &mut live);
        assert_eq!(live.nodes_from.as_deref(), Some("cp1"));
        let w1 = live
            .versions
            .readings
            .iter()
            .find(|r| r.host == "w1")
            .unwrap();
        assert_eq!(w1.error.as_deref(), Some("no Node of that name in the API"));
        // No control plane answered.
        let reads = vec![
            Some(HostRead {
                nodes: Some(Err("exit status 1: connection refused".into())),
                ..HostRead::default()
            }),
            None,
        ];
        let mut live = LiveRead::default();
        merge_nodes(&hosts, &reads, &mut live);
        assert!(
            live.versions.readings[0]
                .error
                .as_deref()
                .unwrap()
                .contains("connection refused")
        );
    }
}
