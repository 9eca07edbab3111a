//! The container lab: Docker containers as hosts for trying capstan, for tests and for CI.
//!
//! Each host is a container of the lab image (`tests/lab/build-image.sh`) running systemd as
//! PID 1 and OpenSSH, made exactly as DESIGN.md "The test bed" says: no `--privileged`, a
//! private cgroup namespace, Docker volumes for containerd's and kubelet's state, all hosts on
//! one internal network (no egress). [`up`] also makes a fresh SSH key pair, installs it for
//! `root`, `ops` and `deploy`, collects every host's ed25519 host key into the lab's
//! `known_hosts` and writes a ready inventory; [`down`] removes all of it.
//!
//! Everything the lab creates carries the label `capstan.lab=<name>`.

mod docker;
mod files;
mod inventory_text;

use std::fmt::{self, Write as _};
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use serde::Serialize;

use crate::inventory::Role;

/// The image lab hosts run unless told otherwise (built by `tests/lab/build-image.sh`).
pub const DEFAULT_IMAGE: &str = "capstan-lab:bookworm-3";
/// The label on every container, volume and network of a lab; its value is the lab's name.
pub const LABEL: &str = "capstan.lab";
/// The label naming the inventory host a container is.
pub const HOST_LABEL: &str = "capstan.lab.host";
/// The Kubernetes version written into a lab's inventory.
pub const KUBERNETES_VERSION: &str = "v1.32.3";
/// The inventory file a lab writes into its output folder.
pub const INVENTORY_FILE: &str = "cluster.yaml";
/// The private key a lab writes into its output folder (the public key is beside it, `.pub`).
pub const KEY_FILE: &str = "id_ed25519";
/// Labs bigger than this need raised inotify limits on the Docker host.
pub const BIG_LAB: usize = 20;
/// The `fs.inotify.max_user_instances` a big lab needs (kind documents the same).
pub const INOTIFY_INSTANCES: u64 = 8192;

/// How long one host may take from `docker run` to answering SSH.
const HOST_READY_TIMEOUT: Duration = Duration::from_secs(180);
/// Hosts brought up at once (docker run + readiness wait).
const PARALLEL: usize = 16;
/// The capabilities lab hosts get instead of `--privileged` (which does not work here).
const CAPABILITIES: [&str; 5] = ["SYS_ADMIN", "NET_ADMIN", "SYS_PTRACE", "SYS_NICE", "SYSLOG"];

/// What lab to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabSpec {
    /// The lab's name: prefix of its containers, volumes and network, and the cluster's name.
    pub name: String,
    pub control_planes: u32,
    pub workers: u32,
    /// Dedicated etcd hosts; more than 0 means the external etcd topology.
    pub etcd: u32,
    pub load_balancers: u32,
    /// The image the hosts run.
    pub image: String,
    /// Folders of this machine bind-mounted read-only into every host (source, target).
    pub mounts: Vec<(PathBuf, String)>,
    /// Where the key pair, the `known_hosts` and the inventory are written.
    pub out: PathBuf,
    /// A local artifact mirror (dl.k8s.io's layout) the inventory points at, with the
    /// node software versions it holds.
    pub mirror: Option<PathBuf>,
}

impl LabSpec {
    /// A lab of one control plane with the default image, written to `lab/<name>/`.
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        Self {
            out: default_out(&name),
            name,
            control_planes: 1,
            workers: 0,
            etcd: 0,
            load_balancers: 0,
            image: DEFAULT_IMAGE.to_string(),
            mounts: Vec::new(),
            mirror: None,
        }
    }

    /// The hosts of this lab, in inventory order: control planes, etcd, load balancers, workers.
    pub fn host_names(&self) -> Vec<(String, Role)> {
        planned_hosts(self)
            .into_iter()
            .map(|h| (h.name, h.role))
            .collect()
    }

    fn total(&self) -> usize {
        [
            self.control_planes,
            self.workers,
            self.etcd,
            self.load_balancers,
        ]
        .iter()
        .map(|n| *n as usize)
        .sum()
    }
}

/// The version of each node software component a lab's inventory names, by the inventory's
/// `versions` keys (`containerd`, `runc`, `etcd`, ...): the one the mirror's `lab-versions`
/// file names (`KEY vX.Y.Z` lines, `#` comments; tests/lab/build-mirror.sh writes the builds
/// the default lab image runs there), else the newest version the mirror holds.
pub fn mirror_versions(mirror: &Path) -> std::collections::BTreeMap<&'static str, String> {
    use crate::artifacts::catalog::{Component, mirror_releases};
    let named = std::fs::read_to_string(mirror.join("lab-versions")).unwrap_or_default();
    let named: std::collections::BTreeMap<&str, &str> = named
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(char::is_whitespace))
        .map(|(k, v)| (k, v.trim()))
        .filter(|(_, v)| crate::inventory::Version::parse(v).is_some())
        .collect();
    let mut out = std::collections::BTreeMap::new();
    for c in [
        Component::Containerd,
        Component::Runc,
        Component::Etcd,
        Component::Crictl,
        Component::CniPlugins,
    ] {
        let key = c.key();
        if let Some(v) = named.get(key) {
            out.insert(key, (*v).to_string());
            continue;
        }
        if let Some(v) = mirror_releases(mirror, c).last() {
            out.insert(key, v.to_string());
        }
    }
    out
}

/// The Kubernetes version for a lab's inventory: with a local mirror, the newest release
/// it holds both the kubelet and kubectl of (so that `init` finds them), else
/// [`KUBERNETES_VERSION`].
pub fn kubernetes_version(mirror: Option<&Path>) -> String {
    let Some(mirror) = mirror else {
        return KUBERNETES_VERSION.to_string();
    };
    let arch = match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "amd64",
    };
    std::fs::read_dir(mirror.join("release"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|v| {
            let bin = mirror.join("release").join(v).join("bin/linux").join(arch);
            bin.join("kubelet").is_file() && bin.join("kubectl").is_file()
        })
        .filter_map(|v| crate::inventory::Version::parse(&v).map(|p| (p, v)))
        .max()
        .map_or_else(|| KUBERNETES_VERSION.to_string(), |(_, v)| v)
}

/// Where a lab's files go unless told otherwise: `lab/<name>/` under the current folder.
pub fn default_out(name: &str) -> PathBuf {
    Path::new("lab").join(name)
}

/// Parses `--mount SRC:DST`: SRC an existing folder or file of this machine, DST an absolute path.
pub fn parse_mount(text: &str) -> Result<(PathBuf, String), LabError> {
    let bad = |why: &str| LabError::BadMount {
        mount: text.to_string(),
        why: why.to_string(),
    };
    let (src, dst) = text
        .split_once(':')
        .ok_or_else(|| bad("expected SRC:DST, e.g. ./mirror:/srv/mirror"))?;
    if src.is_empty() || dst.is_empty() {
        return Err(bad("expected SRC:DST, e.g. ./mirror:/srv/mirror"));
    }
    if !dst.starts_with('/') {
        return Err(bad("DST must be an absolute path inside the hosts"));
    }
    if dst.contains([',', ':']) || src.contains(',') {
        return Err(bad("paths with `,` or `:` cannot be mounted"));
    }
    let src =
        std::fs::canonicalize(src).map_err(|e| bad(&format!("SRC `{src}` cannot be used: {e}")))?;
    Ok((src, dst.to_string()))
}

/// One host of a lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LabHost {
    /// The inventory host name, also the container's hostname.
    pub name: String,
    /// The container's address on the lab network (where SSH reaches it).
    pub address: Ipv4Addr,
    pub roles: Vec<Role>,
    /// The container's name (`<lab>-<host>`).
    pub container: String,
    /// `running` or `degraded` (`systemctl is-system-running`).
    pub system_state: String,
    /// What `up` did to the container.
    pub action: HostAction,
}

/// What `up` did to a host's container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostAction {
    Created,
    /// It existed, stopped, and was started.
    Started,
    /// It existed and was running.
    Kept,
}

/// What `up` built.
#[derive(Debug, Clone, Serialize)]
pub struct LabSummary {
    pub name: String,
    pub hosts: Vec<LabHost>,
    /// The inventory written (`OUT/cluster.yaml`).
    pub inventory: PathBuf,
    /// The private key every host accepts for root, ops and deploy.
    pub identity_file: PathBuf,
    /// The hosts' ed25519 host keys (`OUT/.capstan/known_hosts`).
    pub known_hosts: PathBuf,
    /// The lab network's subnet.
    pub subnet: String,
    /// Things worth knowing that did not stop the lab (other image, extra containers...).
    pub warnings: Vec<String>,
    pub elapsed_secs: f64,
}

impl LabSummary {
    fn count(&self, action: HostAction) -> usize {
        self.hosts.iter().filter(|h| h.action == action).count()
    }
}

impl fmt::Display for LabSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "lab `{}`: {} hosts on {} ({} created, {} started, {} already running) in {:.1} s",
            self.name,
            self.hosts.len(),
            self.subnet,
            self.count(HostAction::Created),
            self.count(HostAction::Started),
            self.count(HostAction::Kept),
            self.elapsed_secs
        )?;
        // One line per set of roles: `  control-plane  cp1 172.24.1.1, cp2 172.24.1.2`.
        let mut by_roles: Vec<(String, Vec<String>)> = Vec::new();
        for h in &self.hosts {
            let roles: Vec<&str> = h.roles.iter().map(|r| r.as_str()).collect();
            let roles = roles.join(",");
            let host = if h.system_state == "running" {
                format!("{} {}", h.name, h.address)
            } else {
                format!("{} {} (systemd: {})", h.name, h.address, h.system_state)
            };
            match by_roles.iter_mut().find(|(r, _)| *r == roles) {
                Some((_, hosts)) => hosts.push(host),
                None => by_roles.push((roles, vec![host])),
            }
        }
        let width = by_roles.iter().map(|(r, _)| r.len()).max().unwrap_or(0);
        for (roles, hosts) in &by_roles {
            writeln!(f, "  {roles:width$}  {}", hosts.join(", "))?;
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        let dir = self.inventory.parent().unwrap_or_else(|| Path::new("."));
        writeln!(f, "inventory:   {}", self.inventory.display())?;
        writeln!(
            f,
            "ssh key:     {} (root, ops, deploy)",
            self.identity_file.display()
        )?;
        writeln!(f, "host keys:   {}", self.known_hosts.display())?;
        writeln!(f, "next:        capstan check -i {}", dir.display())?;
        write!(
            f,
            "remove:      capstan lab down --name {}{}",
            self.name,
            if dir == default_out(&self.name) {
                String::new()
            } else {
                format!(" --out {}", dir.display())
            }
        )
    }
}

/// What `down` removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DownSummary {
    pub name: String,
    pub containers: Vec<String>,
    pub volumes: Vec<String>,
    pub networks: Vec<String>,
    pub files: Vec<PathBuf>,
}

impl fmt::Display for DownSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.containers.is_empty()
            && self.volumes.is_empty()
            && self.networks.is_empty()
            && self.files.is_empty()
        {
            return write!(f, "lab `{}`: nothing to remove", self.name);
        }
        write!(
            f,
            "lab `{}` removed: {} containers, {} volumes, {} networks, {} files",
            self.name,
            self.containers.len(),
            self.volumes.len(),
            self.networks.len(),
            self.files.len()
        )
    }
}

/// A host that could not be brought up.
#[derive(Debug)]
pub struct HostFailure {
    pub host: String,
    pub error: LabError,
}

/// Why the lab could not be built or removed.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum LabError {
    #[error("invalid lab: {0}")]
    #[diagnostic(code(capstan::lab::spec))]
    Spec(String),

    #[error("invalid --mount `{mount}`: {why}")]
    #[diagnostic(
        code(capstan::lab::mount),
        help(
            "give --mount SRC:DST, SRC a path on this machine, DST an absolute path in the hosts"
        )
    )]
    BadMount { mount: String, why: String },

    #[error("the `docker` command is not installed")]
    #[diagnostic(
        code(capstan::lab::docker_missing),
        help("install Docker (Debian: apt-get install docker.io) and start dockerd")
    )]
    DockerMissing,

    #[error("Docker is not reachable: {stderr}")]
    #[diagnostic(
        code(capstan::lab::docker_unreachable),
        help(
            "start dockerd (systemctl start docker), and check that you may use it (root or the docker group)"
        )
    )]
    DockerUnreachable { stderr: String },

    #[error("the lab image `{image}` is missing")]
    #[diagnostic(
        code(capstan::lab::image_missing),
        help("build it with tests/lab/build-image.sh {image} (about 2 minutes)")
    )]
    ImageMissing { image: String },

    #[error(
        "a lab of {hosts} hosts needs more inotify instances than this machine allows \
         (fs.inotify.max_user_instances = {current}; systemd in new containers would die)"
    )]
    #[diagnostic(
        code(capstan::lab::inotify),
        help(
            "raise the limits first: sysctl -w fs.inotify.max_user_instances=8192 fs.inotify.max_user_watches=524288"
        )
    )]
    InotifyLimit { hosts: usize, current: u64 },

    #[error("`{name}` belongs to something else: {why}")]
    #[diagnostic(
        code(capstan::lab::conflict),
        help("remove it, or choose another lab name with --name")
    )]
    Conflict { name: String, why: String },

    #[error("`{command}` failed (exit status {}): {stderr}", status.map_or_else(|| "none".to_string(), |s| s.to_string()))]
    #[diagnostic(code(capstan::lab::docker))]
    Docker {
        command: String,
        status: Option<i32>,
        stderr: String,
    },

    #[error("cannot run `{command}`: {source}")]
    #[diagnostic(code(capstan::lab::spawn))]
    Spawn {
        command: String,
        source: std::io::Error,
    },

    #[error("host {host} is not ready: {what}")]
    #[diagnostic(
        code(capstan::lab::host),
        help("see `docker logs {container}` and `docker exec {container} systemctl --failed`")
    )]
    HostNotReady {
        host: String,
        container: String,
        what: String,
    },

    #[error("{} of the lab's hosts failed:{}", failures.len(), list_failures(failures))]
    #[diagnostic(
        code(capstan::lab::hosts),
        help("`capstan lab up` again retries them; `capstan lab down` removes the lab")
    )]
    Hosts { failures: Vec<HostFailure> },

    #[error("{path}: {source}")]
    #[diagnostic(code(capstan::lab::io))]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{path}: not a usable SSH key: {detail}")]
    #[diagnostic(
        code(capstan::lab::key),
        help("remove it; `capstan lab up` then makes a new key pair")
    )]
    Key { path: PathBuf, detail: String },

    #[error("the inventory the lab wrote does not load:\n{0}")]
    #[diagnostic(code(capstan::lab::inventory))]
    Inventory(String),
}

fn list_failures(failures: &[HostFailure]) -> String {
    failures.iter().fold(String::new(), |mut s, f| {
        let _ = write!(s, "\n  {}: {}", f.host, f.error);
        s
    })
}

impl LabError {
    /// True when the user's input was wrong (exit code 2), nothing having been touched.
    pub fn is_bad_input(&self) -> bool {
        matches!(self, Self::Spec(_) | Self::BadMount { .. })
    }
}

/// A host the spec asks for.
#[derive(Debug, Clone)]
struct PlannedHost {
    name: String,
    role: Role,
    /// Address = subnet base + 256 * block + index: stable whatever the start order.
    block: u32,
    index: u32,
}

fn planned_hosts(spec: &LabSpec) -> Vec<PlannedHost> {
    let groups = [
        ("cp", Role::ControlPlane, spec.control_planes, 1),
        ("etcd", Role::Etcd, spec.etcd, 3),
        ("lb", Role::LoadBalancer, spec.load_balancers, 4),
        ("w", Role::Worker, spec.workers, 2),
    ];
    groups
        .iter()
        .flat_map(|&(prefix, role, count, block)| {
            (1..=count).map(move |index| PlannedHost {
                name: format!("{prefix}{index}"),
                role,
                block,
                index,
            })
        })
        .collect()
}

/// Largest count of one role: addresses are `base + 256 * block + index`, index < 255.
const MAX_PER_ROLE: u32 = 250;

fn validate(spec: &LabSpec) -> Result<(), LabError> {
    let name = &spec.name;
    let name_ok = !name.is_empty()
        && name.len() <= 40
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !name_ok {
        return Err(LabError::Spec(format!(
            "name `{name}`: use 1-40 lowercase letters, digits and `-`, not at either end"
        )));
    }
    if spec.control_planes == 0 {
        return Err(LabError::Spec(
            "a cluster needs at least one control plane (--control-planes 1 or more)".into(),
        ));
    }
    for (what, n) in [
        ("control planes", spec.control_planes),
        ("workers", spec.workers),
        ("etcd hosts", spec.etcd),
        ("load balancers", spec.load_balancers),
    ] {
        if n > MAX_PER_ROLE {
            return Err(LabError::Spec(format!(
                "{n} {what}: a lab holds at most {MAX_PER_ROLE} hosts of each role"
            )));
        }
    }
    let (members, flag) = if spec.etcd > 0 {
        (spec.etcd, "--etcd")
    } else {
        (spec.control_planes, "--control-planes (stacked etcd)")
    };
    if members.is_multiple_of(2) {
        return Err(LabError::Spec(format!(
            "{members} etcd members: etcd needs a majority to agree, and {members} members tolerate no more \
             failures than {}; give {flag} an odd number",
            members - 1
        )));
    }
    if spec.image.trim().is_empty() {
        return Err(LabError::Spec("the image name is empty".into()));
    }
    for (src, dst) in &spec.mounts {
        if !dst.starts_with('/') {
            return Err(LabError::BadMount {
                mount: format!("{}:{dst}", src.display()),
                why: "DST must be an absolute path inside the hosts".into(),
            });
        }
        if !src.exists() {
            return Err(LabError::BadMount {
                mount: format!("{}:{dst}", src.display()),
                why: "SRC does not exist".into(),
            });
        }
    }
    Ok(())
}

fn check_docker(image: &str) -> Result<(), LabError> {
    let out = docker::run(&["version", "--format", "{{.Server.Version}}"], None)?;
    if !out.success() {
        let stderr = docker::tail(&out.stderr);
        return Err(LabError::DockerUnreachable {
            stderr: if stderr.is_empty() {
                "`docker version` failed".into()
            } else {
                stderr
            },
        });
    }
    let out = docker::run(&["image", "inspect", "--format", "{{.Id}}", image], None)?;
    if !out.success() {
        return Err(LabError::ImageMissing {
            image: image.to_string(),
        });
    }
    Ok(())
}

fn check_inotify(hosts: usize) -> Result<(), LabError> {
    if hosts <= BIG_LAB {
        return Ok(());
    }
    let path = Path::new("/proc/sys/fs/inotify/max_user_instances");
    let current = std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    match current {
        Some(current) if current < INOTIFY_INSTANCES => {
            Err(LabError::InotifyLimit { hosts, current })
        }
        _ => Ok(()),
    }
}

fn network_name(lab: &str) -> String {
    format!("{lab}-net")
}

fn container_name(lab: &str, host: &str) -> String {
    format!("{lab}-{host}")
}

fn label(lab: &str) -> String {
    format!("{LABEL}={lab}")
}

/// The lab's network: created `--internal` with an explicit subnet (so hosts get fixed
/// addresses), or checked to be the lab's own when it exists.
fn ensure_network(lab: &str) -> Result<Ipv4Net, LabError> {
    let net = network_name(lab);
    if let Some(info) = inspect_network(&net)? {
        if info.label.as_deref() != Some(lab) {
            return Err(LabError::Conflict {
                name: net,
                why: "a Docker network of that name exists without this lab's label".into(),
            });
        }
        if !info.internal {
            return Err(LabError::Conflict {
                name: net,
                why: "the network is not internal (it would give the hosts egress)".into(),
            });
        }
        return info.subnet.ok_or_else(|| LabError::Conflict {
            name: net,
            why: "the network has no IPv4 subnet".into(),
        });
    }
    // Let Docker choose a free subnet, then re-create the network with that subnet given
    // explicitly: Docker only honours `--ip` on networks with a user-configured subnet.
    let lab_label = label(lab);
    let create = |subnet: Option<&str>| -> Result<(), LabError> {
        let mut args = vec!["network", "create", "--internal", "--label", &lab_label];
        let subnet_flag;
        if let Some(s) = subnet {
            subnet_flag = format!("--subnet={s}");
            args.push(&subnet_flag);
        }
        args.push(&net);
        docker::check(&args).map(|_| ())
    };
    create(None)?;
    let chosen = inspect_network(&net)?.and_then(|i| i.subnet);
    docker::check(&["network", "rm", &net])?;
    let subnet = chosen.ok_or_else(|| LabError::Conflict {
        name: net.clone(),
        why: "Docker gave the network no IPv4 subnet".into(),
    })?;
    if subnet.prefix_len() > 20 {
        return Err(LabError::Conflict {
            name: net,
            why: format!(
                "Docker chose the subnet {subnet}; the lab needs a /20 or larger (check dockerd's default-address-pools)"
            ),
        });
    }
    create(Some(&subnet.to_string()))?;
    Ok(subnet)
}

struct NetworkInfo {
    label: Option<String>,
    internal: bool,
    subnet: Option<Ipv4Net>,
}

fn inspect_network(net: &str) -> Result<Option<NetworkInfo>, LabError> {
    let out = docker::run(&["network", "inspect", "--format", "{{json .}}", net], None)?;
    if !out.success() {
        if out.stderr.contains("No such network") || out.stderr.contains("not found") {
            return Ok(None);
        }
        return Err(docker::failed(&["network", "inspect", net], &out));
    }
    let v: serde_json::Value =
        serde_json::from_str(out.stdout.trim()).map_err(|e| LabError::Docker {
            command: format!("docker network inspect {net}"),
            status: out.status,
            stderr: format!("unexpected output: {e}"),
        })?;
    let label = v["Labels"][LABEL].as_str().map(str::to_string);
    let internal = v["Internal"].as_bool().unwrap_or(false);
    let subnet = v["IPAM"]["Config"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["Subnet"].as_str())
        .find_map(|s| s.parse::<Ipv4Net>().ok());
    Ok(Some(NetworkInfo {
        label,
        internal,
        subnet,
    }))
}

fn host_address(subnet: Ipv4Net, host: &PlannedHost) -> Result<Ipv4Addr, LabError> {
    let base = u32::from(subnet.network());
    let addr = Ipv4Addr::from(base + 256 * host.block + host.index);
    if subnet.contains(&addr) && addr != subnet.broadcast() {
        Ok(addr)
    } else {
        Err(LabError::Spec(format!(
            "host {} does not fit in the lab's subnet {subnet}",
            host.name
        )))
    }
}

/// A container of the lab as `docker ps` lists it.
#[derive(Debug, Clone)]
struct Existing {
    running: bool,
    image: String,
}

/// The lab's containers (by name), from one `docker ps`.
fn existing_containers(
    lab: &str,
) -> Result<std::collections::BTreeMap<String, Existing>, LabError> {
    let out = docker::check(&[
        "ps",
        "--all",
        "--no-trunc",
        "--filter",
        &format!("label={}", label(lab)),
        "--format",
        "{{.Names}}\t{{.State}}\t{{.Image}}",
    ])?;
    Ok(out
        .lines()
        .filter_map(|line| {
            let mut f = line.split('\t');
            let name = f.next()?.trim();
            let state = f.next()?.trim();
            let image = f.next().unwrap_or_default().trim();
            (!name.is_empty()).then(|| {
                (
                    name.to_string(),
                    Existing {
                        running: state == "running",
                        image: image.to_string(),
                    },
                )
            })
        })
        .collect())
}

/// Everything the per-host workers share.
struct Context<'a> {
    spec: &'a LabSpec,
    network: String,
    public_key: String,
    existing: std::collections::BTreeMap<String, Existing>,
}

/// Creates, starts or keeps one host's container, then waits until it is usable.
fn bring_up(
    ctx: &Context<'_>,
    host: &PlannedHost,
    address: Ipv4Addr,
    warnings: &Mutex<Vec<String>>,
) -> Result<(HostAction, Ready), LabError> {
    let lab = &ctx.spec.name;
    let container = container_name(lab, &host.name);
    let action = if let Some(info) = ctx.existing.get(&container) {
        if info.image != ctx.spec.image
            && let Ok(mut w) = warnings.lock()
        {
            w.push(format!(
                "{container} runs the image {} (not {}): kept; `capstan lab down` and `up` again to change it",
                info.image, ctx.spec.image
            ));
        }
        if info.running {
            HostAction::Kept
        } else {
            docker::check(&["start", &container])?;
            HostAction::Started
        }
    } else {
        create_container(ctx, host, &container, address)?;
        HostAction::Created
    };
    let ready = wait_ready(ctx, &host.name, &container, address)?;
    Ok((action, ready))
}

fn create_container(
    ctx: &Context<'_>,
    host: &PlannedHost,
    container: &str,
    address: Ipv4Addr,
) -> Result<(), LabError> {
    let lab = &ctx.spec.name;
    let lab_label = label(lab);
    let host_label = format!("{HOST_LABEL}={}", host.name);
    let mut owned: Vec<String> = Vec::new();
    for (suffix, target) in [
        ("containerd", "/var/lib/containerd"),
        ("kubelet", "/var/lib/kubelet"),
    ] {
        // Docker creates the volume with these labels the first time.
        owned.push("--mount".into());
        owned.push(format!(
            "type=volume,source={container}-{suffix},target={target},\
             volume-label={lab_label},volume-label={host_label}"
        ));
    }
    for (src, dst) in &ctx.spec.mounts {
        owned.push("--mount".into());
        owned.push(format!(
            "type=bind,source={},target={dst},readonly",
            src.display()
        ));
    }
    let address = address.to_string();
    let mut args: Vec<&str> = vec![
        "run",
        "--detach",
        "--name",
        container,
        "--hostname",
        &host.name,
        "--label",
        &lab_label,
        "--label",
        &host_label,
        "--network",
        &ctx.network,
        "--ip",
        &address,
    ];
    for cap in CAPABILITIES {
        args.extend(["--cap-add", cap]);
    }
    args.extend([
        "--security-opt",
        "seccomp=unconfined",
        "--security-opt",
        "apparmor=unconfined",
        "--device",
        "/dev/kmsg",
        // runc opens the devices cgroup of every privileged container (kube-proxy, flannel)
        // with `a *:* rwm`: the host's own rule must allow it.
        "--device-cgroup-rule",
        "a *:* rwm",
        "--tmpfs",
        "/run",
        "--tmpfs",
        "/run/lock",
        "--tmpfs",
        "/tmp",
        "--env",
        "container=docker",
        "--env",
        "CAPSTAN_LAB_NO_DEFAULT_ROUTE=1",
        "--cgroupns=private",
        "--stop-signal",
        "SIGRTMIN+3",
    ]);
    args.extend(owned.iter().map(String::as_str));
    args.push(&ctx.spec.image);
    let out = docker::run(&args, None)?;
    if out.success() {
        Ok(())
    } else if out.stderr.contains("is already in use") {
        Err(LabError::Conflict {
            name: container.to_string(),
            why: "a container of that name exists without this lab's label".into(),
        })
    } else {
        Err(docker::failed(&args, &out))
    }
}

/// Run in a host once sshd answers: waits for the end of boot, prints systemd's state, installs
/// the lab key for every user and prints the host's ed25519 host key.
const FINISH_HOST: &str = r#"set -eu
key=$(cat)
state=$(timeout 120 systemctl is-system-running --wait || true)
echo "state: $state"
case "$state" in running | degraded) ;; *)
    systemctl --failed --no-legend --plain | sed 's/^/failed: /'
    exit 0 ;;
esac
for user in root ops deploy; do
    home=$(getent passwd "$user" | cut -d: -f6)
    [ -n "$home" ] || { echo "no user $user" >&2; exit 1; }
    install -d -m 0700 -o "$user" -g "$user" "$home/.ssh"
    printf '%s\n' "$key" >"$home/.ssh/authorized_keys.capstan-lab"
    chown "$user:$user" "$home/.ssh/authorized_keys.capstan-lab"
    chmod 0600 "$home/.ssh/authorized_keys.capstan-lab"
    mv -f "$home/.ssh/authorized_keys.capstan-lab" "$home/.ssh/authorized_keys"
done
# A VM reaches Service addresses through its default route, which a lab host has not (its
# network has no way out): without a route, a local connect to a Service fails before
# kube-proxy's DNAT can apply. A route for the lab's service subnet onto lo (no dummy
# device: the kernel here may lack the module) survives network reconnects.
ip route replace SERVICE_SUBNET dev lo
cat /etc/ssh/ssh_host_ed25519_key.pub
"#;

/// A host that answers: systemd's state and its ed25519 host key (`ssh-ed25519 AAAA…`).
struct Ready {
    system_state: String,
    host_key: String,
}

type HostResult = Result<(HostAction, Ready), LabError>;

/// Waits until sshd answers on the lab network (polling TCP is cheap; polling with `docker exec`
/// is not, and slows down the boot of every other host), then, in one `docker exec`, waits for
/// the end of boot, installs the key and collects the host key.
fn wait_ready(
    ctx: &Context<'_>,
    host: &str,
    container: &str,
    address: Ipv4Addr,
) -> Result<Ready, LabError> {
    let deadline = Instant::now() + HOST_READY_TIMEOUT;
    let not_ready = |what: String| LabError::HostNotReady {
        host: host.to_string(),
        container: container.to_string(),
        what,
    };
    let mut polls = 0u32;
    loop {
        match ssh_banner(SocketAddr::from((address, 22))) {
            Ok(()) => break,
            Err(e) if Instant::now() > deadline => {
                return Err(not_ready(format!(
                    "sshd does not answer on {address}:22 within {} s ({e})",
                    HOST_READY_TIMEOUT.as_secs()
                )));
            }
            Err(_) => {
                polls += 1;
                // Now and then, make sure the container has not died meanwhile.
                if polls.is_multiple_of(30) {
                    let running = docker::check(&[
                        "container",
                        "inspect",
                        "--format",
                        "{{.State.Running}}",
                        container,
                    ])?;
                    if running.trim() != "true" {
                        let logs = docker::run(&["logs", "--tail", "20", container], None)
                            .map(|o| docker::tail(&format!("{}{}", o.stdout, o.stderr)))
                            .unwrap_or_default();
                        return Err(not_ready(format!("the container stopped: {logs}")));
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    // The lab's inventory keeps the default service subnet.
    let finish = FINISH_HOST.replace("SERVICE_SUBNET", crate::inventory::DEFAULT_SERVICE_SUBNET);
    let stdout = docker::check_with_input(
        &["exec", "--interactive", container, "sh", "-c", &finish],
        Some(format!("{}\n", ctx.public_key).as_bytes()),
    )?;
    let state = stdout
        .lines()
        .find_map(|l| l.strip_prefix("state: "))
        .unwrap_or_default()
        .trim()
        .to_string();
    if state != "running" && state != "degraded" {
        let failed: Vec<&str> = stdout
            .lines()
            .filter_map(|l| l.strip_prefix("failed: "))
            .collect();
        return Err(not_ready(format!(
            "systemd is `{state}` (failed units: {})",
            if failed.is_empty() {
                "none".to_string()
            } else {
                failed.join("; ")
            }
        )));
    }
    let host_key = parse_host_key(&stdout)
        .ok_or_else(|| not_ready(format!("no ed25519 host key in `{}`", stdout.trim())))?;
    Ok(Ready {
        system_state: state,
        host_key,
    })
}

/// `ssh-ed25519 AAAA…` from the contents of `ssh_host_ed25519_key.pub` (comment dropped).
fn parse_host_key(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next()) {
            (Some("ssh-ed25519"), Some(blob)) if blob.starts_with("AAAA") => {
                Some(format!("ssh-ed25519 {blob}"))
            }
            _ => None,
        }
    })
}

/// Connects and reads the SSH identification string.
fn ssh_banner(addr: SocketAddr) -> std::io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    let mut buf = [0u8; 8];
    stream.read_exact(&mut buf)?;
    if buf.starts_with(b"SSH-") {
        Ok(())
    } else {
        Err(std::io::Error::other("no SSH identification string"))
    }
}

/// Builds the lab (or completes it) and writes its inventory. Idempotent.
pub fn up(spec: &LabSpec) -> Result<LabSummary, LabError> {
    let started = Instant::now();
    validate(spec)?;
    check_docker(&spec.image)?;
    let planned = planned_hosts(spec);
    check_inotify(planned.len().max(spec.total()))?;

    files::ensure_dir(&spec.out, 0o755)?;
    let key = files::ensure_key_pair(&spec.out, &spec.name)?;
    let subnet = ensure_network(&spec.name)?;
    let addresses = planned
        .iter()
        .map(|h| host_address(subnet, h))
        .collect::<Result<Vec<_>, _>>()?;

    let ctx = Context {
        spec,
        network: network_name(&spec.name),
        public_key: key.public,
        existing: existing_containers(&spec.name)?,
    };
    let warnings = Mutex::new(Vec::new());
    let results: Vec<Mutex<Option<HostResult>>> =
        planned.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..PARALLEL.min(planned.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(host) = planned.get(i) else { break };
                    let result = bring_up(&ctx, host, addresses[i], &warnings);
                    if let Ok(mut slot) = results[i].lock() {
                        *slot = Some(result);
                    }
                }
            });
        }
    });

    let mut hosts = Vec::new();
    let mut known_hosts = String::new();
    let mut failures = Vec::new();
    for ((host, address), slot) in planned.iter().zip(&addresses).zip(results) {
        let result = slot.into_inner().ok().flatten().unwrap_or_else(|| {
            Err(LabError::HostNotReady {
                host: host.name.clone(),
                container: container_name(&spec.name, &host.name),
                what: "its worker thread stopped".into(),
            })
        });
        match result {
            Ok((action, ready)) => {
                let _ = writeln!(known_hosts, "{address} {}", ready.host_key);
                hosts.push(LabHost {
                    name: host.name.clone(),
                    address: *address,
                    roles: vec![host.role],
                    container: container_name(&spec.name, &host.name),
                    system_state: ready.system_state,
                    action,
                });
            }
            Err(error) => failures.push(HostFailure {
                host: host.name.clone(),
                error,
            }),
        }
    }
    if !failures.is_empty() {
        return Err(LabError::Hosts { failures });
    }

    let mut warnings = warnings.into_inner().unwrap_or_default();
    warnings.extend(extra_containers(&ctx, &planned));

    let state_dir = spec.out.join(crate::inventory::STATE_DIR);
    files::ensure_dir(&state_dir, 0o700)?;
    let known_hosts_path = state_dir.join("known_hosts");
    files::write_if_changed(&known_hosts_path, known_hosts.as_bytes(), 0o600)?;
    let inventory_path = spec.out.join(INVENTORY_FILE);
    let text = inventory_text::render(spec, &hosts);
    files::write_if_changed(&inventory_path, text.as_bytes(), 0o644)?;
    let catalog_path = spec.out.join(crate::artifacts::data::OVERRIDE_NAME);
    match spec
        .mirror
        .as_deref()
        .and_then(inventory_text::render_catalog)
    {
        Some(text) => {
            files::write_if_changed(&catalog_path, text.as_bytes(), 0o644)?;
        }
        None => match std::fs::remove_file(&catalog_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(LabError::Io {
                    path: catalog_path,
                    source,
                });
            }
        },
    }
    crate::inventory::load(&inventory_path).map_err(|e| LabError::Inventory(e.to_string()))?;

    Ok(LabSummary {
        name: spec.name.clone(),
        hosts,
        inventory: inventory_path,
        identity_file: spec.out.join(KEY_FILE),
        known_hosts: known_hosts_path,
        subnet: subnet.to_string(),
        warnings,
        elapsed_secs: started.elapsed().as_secs_f64(),
    })
}

/// Containers of this lab that the spec no longer asks for.
fn extra_containers(ctx: &Context<'_>, planned: &[PlannedHost]) -> Vec<String> {
    let wanted: Vec<String> = planned
        .iter()
        .map(|h| container_name(&ctx.spec.name, &h.name))
        .collect();
    ctx.existing
        .keys()
        .filter(|c| !wanted.contains(c))
        .map(|c| {
            format!("{c} belongs to the lab but not to this spec: left as it is and not in the inventory")
        })
        .collect()
}

/// Removes the lab's containers, volumes and network, and the files `up` wrote into `out`.
/// Removing a lab that does not exist succeeds and removes nothing.
pub fn down(name: &str, out: &Path) -> Result<DownSummary, LabError> {
    let out_ok = docker::run(&["version", "--format", "{{.Server.Version}}"], None)?;
    if !out_ok.success() {
        return Err(LabError::DockerUnreachable {
            stderr: docker::tail(&out_ok.stderr),
        });
    }
    let filter = format!("label={}", label(name));
    let mut summary = DownSummary {
        name: name.to_string(),
        ..DownSummary::default()
    };
    let containers = docker::lines(&docker::check(&[
        "ps",
        "--all",
        "--filter",
        &filter,
        "--format",
        "{{.Names}}",
    ])?);
    if !containers.is_empty() {
        let mut args = vec!["rm", "--force", "--volumes"];
        args.extend(containers.iter().map(String::as_str));
        docker::check(&args)?;
    }
    summary.containers = containers;
    let volumes = docker::lines(&docker::check(&[
        "volume", "ls", "--quiet", "--filter", &filter,
    ])?);
    if !volumes.is_empty() {
        let mut args = vec!["volume", "rm", "--force"];
        args.extend(volumes.iter().map(String::as_str));
        docker::check(&args)?;
    }
    summary.volumes = volumes;
    let networks = docker::lines(&docker::check(&[
        "network",
        "ls",
        "--filter",
        &filter,
        "--format",
        "{{.Name}}",
    ])?);
    for net in &networks {
        remove_network(net)?;
    }
    summary.networks = networks;
    summary.files = files::remove_lab_files(out)?;
    Ok(summary)
}

/// Removes a lab network. Docker 20.10 sometimes still counts the endpoints of containers
/// it has just removed (its cleanup is asynchronous), so a refusal is retried for a while.
fn remove_network(net: &str) -> Result<(), LabError> {
    let mut last = None;
    for _ in 0..20 {
        match docker::check(&["network", "rm", net]) {
            Ok(_) => return Ok(()),
            Err(e) => {
                last = Some(e);
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
        }
    }
    Err(last.unwrap_or_else(|| LabError::Spec(format!("cannot remove network {net}"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(cp: u32, w: u32, etcd: u32, lb: u32) -> LabSpec {
        LabSpec {
            control_planes: cp,
            workers: w,
            etcd,
            load_balancers: lb,
            ..LabSpec::new("t")
        }
    }

    /// Without `lab-versions` the newest release of each component; with it, the version it
    /// names (bookworm's beside forky's newer builds), and the newest for a key it lacks.
    #[test]
    fn mirror_versions_prefer_the_lab_versions_file() {
        let mirror = tempfile::tempdir().unwrap();
        for rel in [
            "containerd/containerd/releases/download/v1.6.20",
            "containerd/containerd/releases/download/v2.1.9",
            "opencontainers/runc/releases/download/v1.1.5",
            "opencontainers/runc/releases/download/v1.3.6",
            "etcd-io/etcd/releases/download/v3.4.23",
            "etcd-io/etcd/releases/download/v3.5.30",
        ] {
            std::fs::create_dir_all(mirror.path().join("github.com").join(rel)).unwrap();
        }
        let got = |m: &Path| {
            mirror_versions(m)
                .into_iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            got(mirror.path()),
            ["containerd v2.1.9", "etcd v3.5.30", "runc v1.3.6"]
        );
        std::fs::write(
            mirror.path().join("lab-versions"),
            "# bookworm's\ncontainerd v1.6.20\nrunc  v1.1.5\netcd not-a-version\n",
        )
        .unwrap();
        assert_eq!(
            got(mirror.path()),
            ["containerd v1.6.20", "etcd v3.5.30", "runc v1.1.5"]
        );
    }

    #[test]
    fn hosts_are_named_by_role_in_inventory_order() {
        let names: Vec<String> = spec(3, 2, 3, 1)
            .host_names()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            names,
            [
                "cp1", "cp2", "cp3", "etcd1", "etcd2", "etcd3", "lb1", "w1", "w2"
            ]
        );
    }

    #[test]
    fn addresses_are_fixed_per_role_block() {
        let subnet: Ipv4Net = "172.20.0.0/16".parse().unwrap();
        let hosts = planned_hosts(&spec(1, 2, 0, 1));
        let addrs: Vec<String> = hosts
            .iter()
            .map(|h| host_address(subnet, h).unwrap().to_string())
            .collect();
        assert_eq!(
            addrs,
            ["172.20.1.1", "172.20.4.1", "172.20.2.1", "172.20.2.2"]
        );
        let small: Ipv4Net = "10.1.0.0/23".parse().unwrap();
        assert!(host_address(small, &hosts[1]).is_err());
    }

    #[test]
    fn specs_that_make_invalid_inventories_are_refused() {
        assert!(validate(&spec(1, 0, 0, 0)).is_ok());
        assert!(validate(&spec(3, 5, 3, 2)).is_ok());
        let err = validate(&spec(2, 0, 0, 0)).unwrap_err().to_string();
        assert!(
            err.contains("2 etcd members") && err.contains("odd"),
            "{err}"
        );
        assert!(validate(&spec(1, 0, 2, 0)).is_err());
        assert!(validate(&spec(0, 1, 0, 0)).is_err());
        for bad in ["", "Lab", "-x", "x-", "a_b", &"x".repeat(41)] {
            let s = LabSpec::new(bad);
            let err = validate(&s).unwrap_err();
            assert!(err.is_bad_input(), "{bad}");
        }
    }

    #[test]
    fn mounts_are_parsed_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().to_str().unwrap();
        let (p, d) = parse_mount(&format!("{src}:/srv/mirror")).unwrap();
        assert_eq!(p, std::fs::canonicalize(dir.path()).unwrap());
        assert_eq!(d, "/srv/mirror");
        for bad in [
            "nocolon".to_string(),
            format!("{src}:relative"),
            format!("{src}/missing:/x"),
            ":/x".to_string(),
            format!("{src}:/a,b"),
        ] {
            let err = parse_mount(&bad).unwrap_err();
            assert!(err.is_bad_input());
            assert!(err.to_string().contains(&bad), "{err}");
        }
    }

    #[test]
    fn host_key_is_taken_without_its_comment() {
        let text = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFoo root@cp1\n";
        assert_eq!(
            parse_host_key(text).unwrap(),
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFoo"
        );
        assert!(parse_host_key("ssh-rsa AAAAB3 x\n").is_none());
    }

    #[test]
    fn big_labs_need_inotify_instances() {
        assert!(check_inotify(BIG_LAB).is_ok());
        let current: u64 = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_instances")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let result = check_inotify(50);
        if current < INOTIFY_INSTANCES {
            let err = result.unwrap_err();
            let help = miette::Diagnostic::help(&err).unwrap().to_string();
            assert!(
                help.contains("fs.inotify.max_user_instances=8192"),
                "{help}"
            );
            assert!(err.to_string().contains("50 hosts"), "{err}");
        } else {
            assert!(result.is_ok());
        }
    }
}
