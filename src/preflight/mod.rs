//! Preflight: pure checks of every host's [`Facts`] against what its roles need.
//!
//! kubeadm's checks where they apply (swap, ports free or ours, `ip_forward`,
//! `br_netfilter`, required tools, CPU and memory on control planes, supported OS), the
//! cross-host ones kubeadm cannot see (unique hostnames and machine-ids, clock skew
//! against the operator), and capstan's own needs (systemd, root, its tools). Names follow
//! kubeadm's (`Swap`, `Port-6443`, `FileExisting-conntrack`...), and
//! `--ignore-preflight-errors=NAME,...` (case-insensitive, `all`) turns matching errors
//! into warnings, as kubeadm does.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::facts::{CgroupVersion, Facts};
use crate::inventory::Role;

/// One host to check.
#[derive(Debug, Clone)]
pub struct PreflightInput {
    /// The inventory name (the Kubernetes node name).
    pub name: String,
    pub roles: BTreeSet<Role>,
    pub facts: Facts,
    /// The operator's clock (seconds since the epoch) when this host's probe output
    /// arrived; the clock-skew check uses it, else `operator_epoch`.
    pub received_at: Option<f64>,
}

/// How bad a check's outcome is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warning,
    Error,
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Ok => "ok",
            Self::Warning => "warning",
            Self::Error => "error",
        })
    }
}

/// The outcome of one check on one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// kubeadm-like name, usable in `--ignore-preflight-errors`.
    pub name: &'static str,
    pub level: Level,
    /// What was found and, when it is not ok, what to do.
    pub message: String,
    /// An error turned into a warning by `--ignore-preflight-errors`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ignored: bool,
}

/// Every check of one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostReport {
    pub host: String,
    pub checks: Vec<Check>,
}

impl HostReport {
    pub fn has_errors(&self) -> bool {
        self.checks.iter().any(|c| c.level == Level::Error)
    }

    pub fn errors(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.level == Level::Error)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.level == Level::Warning)
    }

    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }
}

/// Who needs a port, a tool or a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Every host.
    All,
    /// Hosts that run a kubelet: control planes and workers.
    Nodes,
    ControlPlanes,
    /// Hosts that run an etcd member (control planes under stacked etcd, `etcd` hosts).
    EtcdMembers,
}

struct PortRule {
    port: u16,
    check: &'static str,
    scope: Scope,
    /// The process names that may hold it (a running cluster's own).
    ours: &'static [&'static str],
    /// The component listens on the host's own address only, never on loopback: a
    /// loopback listener (the local API proxy on 127.0.0.1:6443) does not conflict.
    loopback_free: bool,
}

/// The ports kubeadm checks, by who needs them.
const PORTS: &[PortRule] = &[
    PortRule {
        port: 6443,
        check: "Port-6443",
        scope: Scope::ControlPlanes,
        ours: &["kube-apiserver"],
        loopback_free: true,
    },
    PortRule {
        port: 10257,
        check: "Port-10257",
        scope: Scope::ControlPlanes,
        ours: &["kube-controller-manager"],
        loopback_free: false,
    },
    PortRule {
        port: 10259,
        check: "Port-10259",
        scope: Scope::ControlPlanes,
        ours: &["kube-scheduler"],
        loopback_free: false,
    },
    PortRule {
        port: 2379,
        check: "Port-2379",
        scope: Scope::EtcdMembers,
        ours: &["etcd"],
        loopback_free: false,
    },
    PortRule {
        port: 2380,
        check: "Port-2380",
        scope: Scope::EtcdMembers,
        ours: &["etcd"],
        loopback_free: false,
    },
    PortRule {
        port: 10250,
        check: "Port-10250",
        scope: Scope::Nodes,
        ours: &["kubelet"],
        loopback_free: false,
    },
];

struct ToolRule {
    tool: &'static str,
    check: &'static str,
    scope: Scope,
    /// Error when missing (kubeadm's `mandatory`), else a warning.
    mandatory: bool,
    why: &'static str,
}

const fn tool(
    tool: &'static str,
    check: &'static str,
    scope: Scope,
    mandatory: bool,
    why: &'static str,
) -> ToolRule {
    ToolRule {
        tool,
        check,
        scope,
        mandatory,
        why,
    }
}

/// Required tools: capstan's own on every host, kubeadm's `InPathCheck`s on nodes
/// (conntrack is optional since Kubernetes 1.32: kube-proxy no longer execs it).
const TOOLS: &[ToolRule] = &[
    tool(
        "sh",
        "FileExisting-sh",
        Scope::All,
        true,
        "capstan runs every step with it",
    ),
    tool(
        "tar",
        "FileExisting-tar",
        Scope::All,
        true,
        "capstan unpacks artifacts with it",
    ),
    tool(
        "sha256sum",
        "FileExisting-sha256sum",
        Scope::All,
        true,
        "capstan verifies files with it",
    ),
    tool(
        "stat",
        "FileExisting-stat",
        Scope::All,
        true,
        "capstan compares files with it",
    ),
    tool(
        "mktemp",
        "FileExisting-mktemp",
        Scope::All,
        true,
        "capstan writes files atomically with it",
    ),
    tool(
        "systemctl",
        "FileExisting-systemctl",
        Scope::All,
        true,
        "capstan manages its services with it",
    ),
    tool(
        "sudo",
        "FileExisting-sudo",
        Scope::All,
        false,
        "needed only with `ssh.become: sudo`",
    ),
    tool(
        "ip",
        "FileExisting-ip",
        Scope::Nodes,
        true,
        "the kubelet and CNI plugins use it",
    ),
    tool(
        "iptables",
        "FileExisting-iptables",
        Scope::Nodes,
        true,
        "kube-proxy and the kubelet use it",
    ),
    tool(
        "mount",
        "FileExisting-mount",
        Scope::Nodes,
        true,
        "the kubelet mounts volumes with it",
    ),
    tool(
        "nsenter",
        "FileExisting-nsenter",
        Scope::Nodes,
        true,
        "the kubelet uses it for port forwarding",
    ),
    tool(
        "conntrack",
        "FileExisting-conntrack",
        Scope::Nodes,
        false,
        "kube-proxy before 1.32 needs it",
    ),
    tool(
        "ebtables",
        "FileExisting-ebtables",
        Scope::Nodes,
        false,
        "some CNI plugins use it",
    ),
    tool(
        "ethtool",
        "FileExisting-ethtool",
        Scope::Nodes,
        false,
        "some CNI plugins use it",
    ),
    tool(
        "socat",
        "FileExisting-socat",
        Scope::Nodes,
        false,
        "`kubectl port-forward` uses it",
    ),
    tool(
        "tc",
        "FileExisting-tc",
        Scope::Nodes,
        false,
        "some CNI plugins use it",
    ),
    tool(
        "touch",
        "FileExisting-touch",
        Scope::Nodes,
        false,
        "kubeadm-style hosts expect it",
    ),
];

const CHECK_PRIVILEGED: &str = "IsPrivilegedUser";
const CHECK_SYSTEMD: &str = "SystemdInit";
const CHECK_SYSTEM: &str = "SystemVerification";
const CHECK_KERNEL: &str = "KernelVersion";
const CHECK_CGROUPS: &str = "Cgroups";
const CHECK_SWAP: &str = "Swap";
const CHECK_IP_FORWARD: &str = "FileContent--proc-sys-net-ipv4-ip_forward";
const CHECK_BRIDGE_NF: &str = "FileContent--proc-sys-net-bridge-bridge-nf-call-iptables";
const CHECK_OVERLAY: &str = "KernelModule-overlay";
const CHECK_CPU: &str = "NumCPU";
const CHECK_MEM: &str = "Mem";
const CHECK_DUP_HOSTNAME: &str = "DuplicateHostname";
const CHECK_DUP_MACHINE_ID: &str = "DuplicateMachineID";
const CHECK_CLOCK: &str = "ClockSkew";
const CHECK_RESOLV_CONF: &str = "ResolvConf";
const CHECK_CONNTRACK: &str = "KubeProxyConntrack";

const SIMPLE_CHECKS: &[&str] = &[
    CHECK_PRIVILEGED,
    CHECK_SYSTEMD,
    CHECK_SYSTEM,
    CHECK_KERNEL,
    CHECK_CGROUPS,
    CHECK_SWAP,
    CHECK_IP_FORWARD,
    CHECK_BRIDGE_NF,
    CHECK_OVERLAY,
    CHECK_CPU,
    CHECK_MEM,
    CHECK_DUP_HOSTNAME,
    CHECK_DUP_MACHINE_ID,
    CHECK_CLOCK,
    CHECK_RESOLV_CONF,
    CHECK_CONNTRACK,
];

/// Control planes need at least this many CPUs (kubeadm's `NumCPU`).
pub const MIN_CONTROL_PLANE_CPUS: u32 = 2;
/// Control planes need at least this much memory: kubeadm's 1700 MB (MiB in fact).
pub const MIN_CONTROL_PLANE_MEMORY_MIB: u64 = 1700;
/// Clock skew against the operator above this is a warning (seconds). etcd members warn
/// among themselves past 1 s; certificates and tokens tolerate seconds, not minutes.
pub const CLOCK_SKEW_WARNING_SECS: f64 = 5.0;
/// Clock skew above this is an error: freshly issued certificates would look not yet
/// valid, and etcd leases and leader election misbehave.
pub const CLOCK_SKEW_ERROR_SECS: f64 = 30.0;

/// OS ids capstan supports (`ID` in `/etc/os-release`).
pub const SUPPORTED_OS: &[&str] = &[
    "debian",
    "ubuntu",
    "rhel",
    "centos",
    "rocky",
    "almalinux",
    "ol",
    "fedora",
    "amzn",
];
/// Architectures Kubernetes and capstan's artifacts cover.
pub const SUPPORTED_ARCH: &[&str] = &["amd64", "arm64"];

/// Every check name (for `--ignore-preflight-errors` validation and help).
pub fn known_check_names() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = SIMPLE_CHECKS.to_vec();
    v.extend(PORTS.iter().map(|p| p.check));
    v.extend(TOOLS.iter().map(|t| t.check));
    v
}

/// The entries of an ignore list that name no check (typos), as given.
pub fn unknown_ignores(ignore: &[String]) -> Vec<String> {
    let known = known_check_names();
    ignore
        .iter()
        .filter(|i| {
            let i = i.trim();
            !i.eq_ignore_ascii_case("all") && !known.iter().any(|k| k.eq_ignore_ascii_case(i))
        })
        .cloned()
        .collect()
}

/// What of the inventory the checks need.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settings {
    /// The etcd topology is stacked (members on control planes). Hosts with the `etcd`
    /// role always run a member.
    pub etcd_on_control_planes: bool,
    /// `cluster.dns.upstream` is given.
    pub dns_upstream: bool,
    /// `cluster.kube_proxy.conntrack_max_per_core` is given.
    pub conntrack_set: bool,
}

impl Settings {
    pub fn of(inventory: &crate::inventory::Inventory) -> Self {
        let c = &inventory.cluster;
        Settings {
            etcd_on_control_planes: c.etcd_topology == crate::inventory::EtcdTopology::Stacked,
            dns_upstream: !c.dns.upstream.is_empty(),
            conntrack_set: c.kube_proxy.conntrack_max_per_core.is_some(),
        }
    }

    /// Nothing set but the topology.
    pub fn stacked(etcd_on_control_planes: bool) -> Self {
        Settings {
            etcd_on_control_planes,
            ..Settings::default()
        }
    }
}

/// Runs every check on every host.
///
/// `operator_epoch` is the operator's clock (seconds since the epoch) for hosts without
/// `received_at`; `ignore` holds `--ignore-preflight-errors` names (case-insensitive, `all`).
pub fn evaluate(
    hosts: &[PreflightInput],
    operator_epoch: f64,
    ignore: &[String],
    settings: &Settings,
) -> Vec<HostReport> {
    let ignore_all = ignore.iter().any(|i| i.trim().eq_ignore_ascii_case("all"));
    let ignored =
        |name: &str| ignore_all || ignore.iter().any(|i| i.trim().eq_ignore_ascii_case(name));
    hosts
        .iter()
        .map(|h| {
            let mut checks = Vec::new();
            host_checks(h, hosts, operator_epoch, *settings, &mut checks);
            for c in &mut checks {
                if c.level == Level::Error && ignored(c.name) {
                    c.level = Level::Warning;
                    c.ignored = true;
                    c.message.push_str(" (ignored: --ignore-preflight-errors)");
                }
            }
            HostReport {
                host: h.name.clone(),
                checks,
            }
        })
        .collect()
}

/// The checks at `level`, each (name and message) once with the hosts that share it, in the
/// order they first appear.
pub fn grouped(reports: &[HostReport], level: Level) -> Vec<(&Check, Vec<&str>)> {
    let mut out: Vec<(&Check, Vec<&str>)> = Vec::new();
    for r in reports {
        for c in r.checks.iter().filter(|c| c.level == level) {
            match out
                .iter_mut()
                .find(|(seen, _)| seen.name == c.name && seen.message == c.message)
            {
                Some((_, hosts)) => hosts.push(&r.host),
                None => out.push((c, vec![&r.host])),
            }
        }
    }
    out
}

fn in_scope(h: &PreflightInput, scope: Scope, etcd_on_control_planes: bool) -> bool {
    let cp = h.roles.contains(&Role::ControlPlane);
    match scope {
        Scope::All => true,
        Scope::Nodes => cp || h.roles.contains(&Role::Worker),
        Scope::ControlPlanes => cp,
        Scope::EtcdMembers => h.roles.contains(&Role::Etcd) || (cp && etcd_on_control_planes),
    }
}

fn push(out: &mut Vec<Check>, name: &'static str, level: Level, message: impl Into<String>) {
    out.push(Check {
        name,
        level,
        message: message.into(),
        ignored: false,
    });
}

#[allow(clippy::cast_precision_loss)]
fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn host_checks(
    h: &PreflightInput,
    all: &[PreflightInput],
    operator_epoch: f64,
    settings: Settings,
    out: &mut Vec<Check>,
) {
    let etcd_on_cp = settings.etcd_on_control_planes;
    let f = &h.facts;
    let node = in_scope(h, Scope::Nodes, etcd_on_cp);
    let cp = in_scope(h, Scope::ControlPlanes, etcd_on_cp);

    // Root.
    match f.uid {
        Some(0) => push(out, CHECK_PRIVILEGED, Level::Ok, "commands run as root"),
        Some(uid) => push(
            out,
            CHECK_PRIVILEGED,
            Level::Error,
            format!(
                "commands run as uid {uid}, not root: connect as root or set `ssh.become: sudo` \
                 (passwordless sudo, or give the password with --ask-become-pass or \
                 CAPSTAN_BECOME_PASSWORD)"
            ),
        ),
        None => push(
            out,
            CHECK_PRIVILEGED,
            Level::Warning,
            "could not tell which user commands run as (`id -u` failed)",
        ),
    }

    // systemd.
    if f.init.systemd {
        push(out, CHECK_SYSTEMD, Level::Ok, "systemd is the init system");
    } else {
        push(
            out,
            CHECK_SYSTEMD,
            Level::Error,
            format!(
                "systemd is not running as init (PID 1 is {}): capstan runs containerd, etcd \
                 and the kubelet as systemd services; use a host (or lab container) booted with systemd",
                f.init.pid1.as_deref().unwrap_or("unknown")
            ),
        );
    }

    system_verification(f, out);
    kernel_version(f, out);

    if node {
        cgroups(f, out);
        swap(f, out);
        ip_forward(f, out);
        bridge_nf(f, out);
        overlay(f, out);
        // The addons are rendered with the first control plane's facts.
        let first = all
            .iter()
            .find(|x| x.roles.contains(&Role::ControlPlane))
            .map(|x| &x.facts);
        resolv_conf(f, first, settings, out);
        conntrack(f, first, settings, out);
    }

    for rule in PORTS {
        if in_scope(h, rule.scope, etcd_on_cp) {
            port(f, rule, out);
        }
    }

    for rule in TOOLS {
        if !in_scope(h, rule.scope, etcd_on_cp) {
            continue;
        }
        match f.tools.get(rule.tool).and_then(Option::as_deref) {
            Some(path) => push(
                out,
                rule.check,
                Level::Ok,
                format!("{} is {path}", rule.tool),
            ),
            None => push(
                out,
                rule.check,
                if rule.mandatory {
                    Level::Error
                } else {
                    Level::Warning
                },
                format!(
                    "{} not found in the system path ({}): install the package that provides it",
                    rule.tool, rule.why
                ),
            ),
        }
    }

    if cp {
        if f.cpus >= MIN_CONTROL_PLANE_CPUS {
            push(out, CHECK_CPU, Level::Ok, format!("{} CPUs", f.cpus));
        } else {
            push(
                out,
                CHECK_CPU,
                Level::Error,
                format!(
                    "the number of available CPUs {} is less than the required {MIN_CONTROL_PLANE_CPUS} \
                     for a control plane: give the host more CPUs",
                    f.cpus
                ),
            );
        }
        let have = mib(f.memory_bytes);
        if f.memory_bytes >= MIN_CONTROL_PLANE_MEMORY_MIB * 1024 * 1024 {
            push(
                out,
                CHECK_MEM,
                Level::Ok,
                format!("{have:.0} MiB of memory"),
            );
        } else {
            push(
                out,
                CHECK_MEM,
                Level::Error,
                format!(
                    "the system RAM ({have:.0} MiB) is less than the minimum \
                     {MIN_CONTROL_PLANE_MEMORY_MIB} MiB for a control plane: give the host more memory"
                ),
            );
        }
    }

    duplicates(h, all, out);
    clock(h, operator_epoch, out);
}

fn system_verification(f: &Facts, out: &mut Vec<Check>) {
    let os = &f.os;
    let name = if os.pretty_name.is_empty() {
        format!("{} {}", os.id, os.version_id)
    } else {
        os.pretty_name.clone()
    };
    let arch_ok = SUPPORTED_ARCH.contains(&f.arch.as_str());
    let os_ok = SUPPORTED_OS.contains(&os.id.as_str());
    let family = os
        .id_like
        .iter()
        .find(|l| SUPPORTED_OS.contains(&l.as_str()));
    let mut problems = Vec::new();
    if !arch_ok {
        problems.push(format!(
            "the architecture {} ({}) is not supported (supported: {})",
            f.arch,
            f.machine,
            SUPPORTED_ARCH.join(", ")
        ));
    }
    if !os_ok && family.is_none() {
        problems.push(format!(
            "the OS {name} (ID={}) is not supported (supported: {} and their derivatives)",
            os.id,
            SUPPORTED_OS.join(", ")
        ));
    }
    if !problems.is_empty() {
        push(
            out,
            CHECK_SYSTEM,
            Level::Error,
            format!("{}: use a supported host", problems.join("; ")),
        );
    } else if let (false, Some(family)) = (os_ok, family) {
        push(
            out,
            CHECK_SYSTEM,
            Level::Warning,
            format!(
                "{name} on {} is not tested; it derives from {family}, so it should work",
                f.arch
            ),
        );
    } else {
        push(
            out,
            CHECK_SYSTEM,
            Level::Ok,
            format!("{name} on {}", f.arch),
        );
    }
}

fn kernel_version(f: &Facts, out: &mut Vec<Check>) {
    let mut parts = f
        .kernel
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next(), parts.next());
    match (major, minor) {
        (Some(maj), Some(min)) if (maj, min) >= (4, 19) => {
            push(out, CHECK_KERNEL, Level::Ok, format!("kernel {}", f.kernel));
        }
        (Some(_), Some(_)) => push(
            out,
            CHECK_KERNEL,
            Level::Warning,
            format!(
                "kernel {} is older than 4.19, the oldest LTS kernel Kubernetes supports: \
                 upgrade the kernel",
                f.kernel
            ),
        ),
        _ => push(
            out,
            CHECK_KERNEL,
            Level::Warning,
            format!("could not read the kernel version from {:?}", f.kernel),
        ),
    }
}

fn cgroups(f: &Facts, out: &mut Vec<Check>) {
    match f.cgroup.version {
        CgroupVersion::V2 => push(out, CHECK_CGROUPS, Level::Ok, "cgroup v2"),
        v @ (CgroupVersion::V1 | CgroupVersion::Hybrid) => push(
            out,
            CHECK_CGROUPS,
            Level::Warning,
            format!(
                "cgroup {v}: kubelets from 1.35 refuse cgroup v1 unless `failCgroupV1: false`, \
                 which capstan sets here; v1 is in maintenance mode: prefer cgroup v2 (boot \
                 with systemd.unified_cgroup_hierarchy=1)"
            ),
        ),
        CgroupVersion::None => push(
            out,
            CHECK_CGROUPS,
            Level::Error,
            "no cgroup file system is mounted at /sys/fs/cgroup: the kubelet and containerd \
             need one; boot the host with systemd, which mounts it",
        ),
    }
}

/// The kubelet hands pods with `dnsPolicy: Default` (CoreDNS) a resolv.conf: one naming a
/// loopback nameserver would be the pod itself, and CoreDNS exits on the loop.
fn resolv_conf(f: &Facts, first: Option<&Facts>, s: Settings, out: &mut Vec<Check>) {
    let dns = &f.dns;
    if !dns.probed {
        return;
    }
    if let Some(file) = &dns.usable {
        push(
            out,
            CHECK_RESOLV_CONF,
            Level::Ok,
            format!("pods with dnsPolicy Default get {file}"),
        );
        return;
    }
    let found = if dns.host_nameservers.is_empty() {
        "/etc/resolv.conf names no nameserver".to_string()
    } else {
        format!(
            "/etc/resolv.conf names only loopback nameservers ({}){}: in a pod they are the \
             pod itself (a DNS loop)",
            dns.loopback_nameservers().join(", "),
            if dns.resolved_running {
                ", and systemd-resolved has no upstream server"
            } else {
                ""
            }
        )
    };
    if s.dns_upstream {
        push(
            out,
            CHECK_RESOLV_CONF,
            Level::Ok,
            format!(
                "{found}: the kubelet gets /etc/kubernetes/resolv.conf with cluster.dns.upstream"
            ),
        );
        return;
    }
    let coredns = if first.is_some_and(|x| x.dns.usable.is_some()) {
        "; CoreDNS forwards to /etc/resolv.conf (the first control plane has an upstream), so \
         a CoreDNS pod placed on this node exits (no nameservers found)"
    } else {
        ""
    };
    push(
        out,
        CHECK_RESOLV_CONF,
        Level::Warning,
        format!(
            "{found}; pods get no resolv.conf here, so names outside the cluster do not resolve \
             in them{coredns}. Set cluster.dns.upstream to the site's nameservers (or give \
             systemd-resolved upstream servers)"
        ),
    );
}

/// kube-proxy writes the non-namespaced nf_conntrack_max unless `conntrack.maxPerCore` is 0,
/// and exits where it may not: on container hosts. capstan sets 0 when the first control
/// plane (whose facts render the addons) is a container.
fn conntrack(f: &Facts, first: Option<&Facts>, s: Settings, out: &mut Vec<Check>) {
    let Some(kind) = &f.container else {
        return;
    };
    if s.conntrack_set || first.is_some_and(|x| x.container.is_some()) {
        push(
            out,
            CHECK_CONNTRACK,
            Level::Ok,
            format!(
                "a {kind} container: kube-proxy leaves nf_conntrack_max alone (conntrack.maxPerCore 0)"
            ),
        );
    } else {
        push(
            out,
            CHECK_CONNTRACK,
            Level::Warning,
            format!(
                "a {kind} container, but the first control plane is not: kube-proxy would try to set \
                 the host kernel's nf_conntrack_max here and exit (permission denied). Set \
                 cluster.kube_proxy.conntrack_max_per_core: 0"
            ),
        );
    }
}

fn swap(f: &Facts, out: &mut Vec<Check>) {
    if !f.swap.is_on() {
        push(out, CHECK_SWAP, Level::Ok, "swap is off");
        return;
    }
    let areas: Vec<&str> = f.swap.active.iter().map(|a| a.name.as_str()).collect();
    push(
        out,
        CHECK_SWAP,
        Level::Error,
        format!(
            "swap is on ({:.0} MiB{}{}): the kubelet refuses to start with swap by default; \
             run `swapoff -a` and remove the swap entries from /etc/fstab (or mask the swap unit)",
            mib(f.swap.total_bytes),
            if areas.is_empty() { "" } else { ": " },
            areas.join(", ")
        ),
    );
}

fn ip_forward(f: &Facts, out: &mut Vec<Check>) {
    match f.sysctls.ip_forward.as_deref() {
        Some("1") => push(out, CHECK_IP_FORWARD, Level::Ok, "net.ipv4.ip_forward is 1"),
        other => push(
            out,
            CHECK_IP_FORWARD,
            Level::Error,
            format!(
                "/proc/sys/net/ipv4/ip_forward contents are not set to 1 ({}): pods cannot \
                 reach other hosts; set net.ipv4.ip_forward = 1 in /etc/sysctl.d/ and run \
                 `sysctl --system`",
                other.map_or_else(|| "unreadable".to_owned(), |v| format!("it is {v}"))
            ),
        ),
    }
}

fn bridge_nf(f: &Facts, out: &mut Vec<Check>) {
    let s = &f.sysctls;
    if !s.bridge_dir {
        push(
            out,
            CHECK_BRIDGE_NF,
            Level::Error,
            "/proc/sys/net/bridge/bridge-nf-call-iptables does not exist: the br_netfilter \
             module is not loaded; run `modprobe br_netfilter` and add it to \
             /etc/modules-load.d/",
        );
        return;
    }
    match s.bridge_nf_call_iptables.as_deref() {
        Some("1") => push(
            out,
            CHECK_BRIDGE_NF,
            Level::Ok,
            "net.bridge.bridge-nf-call-iptables is 1",
        ),
        other => push(
            out,
            CHECK_BRIDGE_NF,
            Level::Error,
            format!(
                "/proc/sys/net/bridge/bridge-nf-call-iptables contents are not set to 1 ({}): \
                 bridged pod traffic would bypass iptables; set \
                 net.bridge.bridge-nf-call-iptables = 1 in /etc/sysctl.d/ and run `sysctl --system`",
                other.map_or_else(|| "unreadable".to_owned(), |v| format!("it is {v}"))
            ),
        ),
    }
}

fn overlay(f: &Facts, out: &mut Vec<Check>) {
    if f.modules
        .get("overlay")
        .is_some_and(crate::facts::ModuleState::available)
    {
        push(out, CHECK_OVERLAY, Level::Ok, "overlay is available");
    } else {
        push(
            out,
            CHECK_OVERLAY,
            Level::Warning,
            "the overlay module is not loaded (containerd's default snapshotter needs it): \
             run `modprobe overlay` and add it to /etc/modules-load.d/",
        );
    }
}

fn is_loopback(address: &str) -> bool {
    address
        .trim_matches(['[', ']'])
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// Whether a process name (`comm`, cut at 15 characters) is one of `ours`.
fn is_ours(name: &str, ours: &[&str]) -> bool {
    ours.iter()
        .any(|o| *o == name || (name.len() == 15 && o.starts_with(name)))
}

fn port(f: &Facts, rule: &PortRule, out: &mut Vec<Check>) {
    let Some(_) = &f.listening else {
        push(
            out,
            rule.check,
            Level::Warning,
            format!(
                "could not list listening sockets (neither `ss` nor /proc/net/tcp worked): \
                 make sure port {} is free",
                rule.port
            ),
        );
        return;
    };
    let listeners: Vec<_> = f
        .listeners_on(rule.port)
        .into_iter()
        .filter(|l| !(rule.loopback_free && is_loopback(&l.address)))
        .collect();
    if listeners.is_empty() {
        push(
            out,
            rule.check,
            Level::Ok,
            format!("port {} is free", rule.port),
        );
        return;
    }
    let procs: BTreeSet<&str> = listeners
        .iter()
        .flat_map(|l| l.processes.iter().map(|p| p.name.as_str()))
        .collect();
    let unknown_holder = listeners.iter().any(|l| l.processes.is_empty());
    if !unknown_holder && procs.iter().all(|p| is_ours(p, rule.ours)) {
        push(
            out,
            rule.check,
            Level::Ok,
            format!(
                "port {} is held by {} (the cluster's own)",
                rule.port,
                procs.into_iter().collect::<Vec<_>>().join(", ")
            ),
        );
        return;
    }
    let holders = if procs.is_empty() {
        "a process capstan cannot see".to_owned()
    } else {
        procs.into_iter().collect::<Vec<_>>().join(", ")
    };
    push(
        out,
        rule.check,
        Level::Error,
        format!(
            "port {} is in use by {holders}, but {} must listen there: stop that service \
             or move it to another port (`ss -ltnp 'sport = :{}'` shows it)",
            rule.port,
            rule.ours.join("/"),
            rule.port
        ),
    );
}

fn duplicates(h: &PreflightInput, all: &[PreflightInput], out: &mut Vec<Check>) {
    let f = &h.facts;
    let same_host: Vec<&str> = all
        .iter()
        .filter(|o| o.name != h.name && o.facts.hostname.eq_ignore_ascii_case(&f.hostname))
        .map(|o| o.name.as_str())
        .collect();
    if same_host.is_empty() {
        push(
            out,
            CHECK_DUP_HOSTNAME,
            Level::Ok,
            format!("hostname {} is unique", f.hostname),
        );
    } else {
        push(
            out,
            CHECK_DUP_HOSTNAME,
            Level::Error,
            format!(
                "hostname {:?} is also the hostname of {}: give every host its own \
                 (`hostnamectl set-hostname {}`)",
                f.hostname,
                same_host.join(", "),
                h.name
            ),
        );
    }

    let Some(id) = &f.machine_id else {
        push(
            out,
            CHECK_DUP_MACHINE_ID,
            Level::Warning,
            "/etc/machine-id is missing or empty: run `systemd-machine-id-setup` \
             (the kubelet reports it as the node's machine ID)",
        );
        return;
    };
    let same_id: Vec<&str> = all
        .iter()
        .filter(|o| o.name != h.name && o.facts.machine_id.as_ref() == Some(id))
        .map(|o| o.name.as_str())
        .collect();
    if same_id.is_empty() {
        push(out, CHECK_DUP_MACHINE_ID, Level::Ok, "machine-id is unique");
    } else {
        push(
            out,
            CHECK_DUP_MACHINE_ID,
            Level::Error,
            format!(
                "machine-id {id} is also the machine-id of {} (a cloned image?): regenerate it \
                 with `rm /etc/machine-id && systemd-machine-id-setup` and reboot",
                same_id.join(", ")
            ),
        );
    }
}

fn clock(h: &PreflightInput, operator_epoch: f64, out: &mut Vec<Check>) {
    let reference = h.received_at.unwrap_or(operator_epoch);
    let skew = h.facts.clock_epoch - reference;
    let dir = if skew > 0.0 { "ahead of" } else { "behind" };
    let level = if skew.abs() > CLOCK_SKEW_ERROR_SECS {
        Level::Error
    } else if skew.abs() > CLOCK_SKEW_WARNING_SECS {
        Level::Warning
    } else {
        Level::Ok
    };
    let message = if level == Level::Ok {
        format!("clock within {:.1} s of this machine's", skew.abs())
    } else {
        format!(
            "the clock is {:.1} s {dir} this machine's (limit {CLOCK_SKEW_WARNING_SECS} s): \
             certificates may look not yet valid and etcd misbehaves; enable time sync on every \
             host and here (`timedatectl set-ntp true`, chrony)",
            skew.abs()
        )
    };
    push(out, CHECK_CLOCK, level, message);
}

#[cfg(test)]
mod tests;
