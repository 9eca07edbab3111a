//! Facts: what a host looks like, gathered with ONE exec per host.
//!
//! [`probe_script`] builds a POSIX `sh` script from a [`ProbeRequest`] (the paths to stat
//! and hash, the systemd units to query). The script prints clearly delimited sections:
//!
//! ```text
//! ::capstan:: probe 1
//! ::capstan:: begin basics
//! machine=x86_64
//! ...
//! ::capstan:: end basics
//! ::capstan:: begin version-containerd
//! containerd github.com/containerd/containerd v1.7.24 88bf19b2105c8b17560993bee28a01ddc2f97182
//! ::capstan:: end version-containerd 0
//! ...
//! ::capstan:: done
//! ```
//!
//! An `end` marker may carry the exit status of the command that produced the section.
//! [`parse`] is a pure function from that text to typed [`Facts`]; a truncated or corrupt
//! output is an error that names the section.
//!
//! The probe is built to grow: the engine will add stat/hash requests for many managed
//! paths (with a state file so that big unchanged files are not re-hashed); sections that a
//! parser does not know are kept in [`Facts::extra_sections`] rather than rejected, and every
//! per-path fact is optional.

mod parse;
mod script;

use std::collections::BTreeMap;

use serde::{Serialize, Serializer};

use crate::inventory::Version;

pub use parse::parse;
pub(crate) use parse::{lenient_semver, parse_version_output};
pub use script::{probe_script, sh_quote};

/// The probe output format version (first line: `::capstan:: probe 1`).
pub const PROBE_FORMAT: u32 = 1;

/// The prefix of every marker line in the probe output.
pub const MARKER: &str = "::capstan::";

/// Tools whose presence the probe reports (searched in `PATH`, with the sbin folders added).
///
/// capstan's own needs (`sh`, `tar`, `sha256sum`, `stat`, `mktemp`, `systemctl`, `sudo`) and
/// kubeadm's node checks (`ip`, `iptables`, `mount`, `nsenter`, `conntrack`, `ebtables`,
/// `ethtool`, `socat`, `tc`, `touch`). See `crate::preflight` for which are errors.
pub const PROBED_TOOLS: &[&str] = &[
    "sh",
    "tar",
    "sha256sum",
    "stat",
    "mktemp",
    "systemctl",
    "sudo",
    "ip",
    "iptables",
    "mount",
    "nsenter",
    "conntrack",
    "ebtables",
    "ethtool",
    "socat",
    "tc",
    "touch",
];

/// The components whose presence and version the probe reports.
pub const COMPONENTS: &[Component] = &[
    Component::Containerd,
    Component::Runc,
    Component::Kubelet,
    Component::Etcd,
    Component::Kubectl,
];

/// Kernel modules whose state the probe reports.
pub const PROBED_MODULES: &[&str] = &["br_netfilter", "overlay"];

/// What to probe beyond the fixed facts.
///
/// Every path must be absolute and free of control characters and backslashes; every unit
/// name must be a plausible systemd unit name. Everything is shell-quoted in the script
/// regardless; [`probe_script`] rejects what the output format could not carry unambiguously.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProbeRequest {
    /// Files (or folders) to stat; regular files are also hashed (sha256).
    pub paths: Vec<String>,
    /// systemd units whose states to report (`kubelet`, `containerd.service`, ...).
    pub units: Vec<String>,
    /// Hash every requested file, ignoring the record of what capstan installed.
    pub verify: bool,
    /// More sections: (name, shell code whose output is the section). Their output is
    /// kept in [`Facts::extra_sections`] under the name.
    pub extra: Vec<(String, String)>,
    /// The record of installed files; [`INSTALLED_STATE`] when `None` (tests point it elsewhere).
    pub installed_state: Option<String>,
    /// Leave out what the engine's plans never need and costs the most: addresses,
    /// listening sockets and the components' versions (their paths stay).
    pub light: bool,
}

/// Where capstan records what it installed on a host (sha256, size, mtime, inode, path;
/// tab-separated), so that later probes hash only files whose stat changed.
pub const INSTALLED_STATE: &str = "/var/lib/capstan/installed.tsv";

/// A software component capstan installs and whose version it reads from `--version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Component {
    Containerd,
    Runc,
    Kubelet,
    Etcd,
    Kubectl,
}

impl Component {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Containerd => "containerd",
            Self::Runc => "runc",
            Self::Kubelet => "kubelet",
            Self::Etcd => "etcd",
            Self::Kubectl => "kubectl",
        }
    }

    /// The command (after the binary name) that prints the version.
    pub fn version_args(self) -> &'static str {
        match self {
            Self::Kubectl => "version --client",
            _ => "--version",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        COMPONENTS.iter().copied().find(|c| c.as_str() == name)
    }
}

impl std::fmt::Display for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything the probe learned about one host.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Facts {
    /// The numeric user id the probe ran as (0 when `become` worked or the user is root).
    pub uid: Option<u32>,
    pub os: OsRelease,
    /// `uname -m` as printed (`x86_64`, `aarch64`).
    pub machine: String,
    /// The machine normalised to Go/Kubernetes names (`amd64`, `arm64`).
    pub arch: Arch,
    /// `uname -r`.
    pub kernel: String,
    pub init: InitSystem,
    pub cpus: u32,
    pub memory_bytes: u64,
    pub swap: Swap,
    pub hostname: String,
    /// `/etc/machine-id`; `None` when missing or empty.
    pub machine_id: Option<String>,
    pub addresses: Vec<Address>,
    /// Listening TCP sockets; `None` when neither `ss` nor `/proc/net/tcp` could be read.
    pub listening: Option<Vec<ListeningPort>>,
    pub cgroup: Cgroup,
    /// The container technology the host runs in (`docker`, `lxc`, `podman`...), `None` on
    /// a VM or bare metal.
    pub container: Option<String>,
    /// The host's nameservers, as the kubelet would hand them to pods.
    pub dns: Dns,
    /// Presence and version of each component; absent components are `None`.
    pub components: BTreeMap<Component, Option<ComponentInfo>>,
    /// Each probed tool: its path, or `None` when not in `PATH`.
    pub tools: BTreeMap<String, Option<String>>,
    pub sysctls: Sysctls,
    pub modules: BTreeMap<String, ModuleState>,
    /// The host's clock when the probe finished (seconds since the epoch, sub-second when
    /// `date +%N` works).
    pub clock_epoch: f64,
    /// Each requested path: `None` when it does not exist.
    pub paths: BTreeMap<String, Option<PathFacts>>,
    /// Each requested unit: `None` when systemd could not be asked.
    pub units: BTreeMap<String, Option<UnitState>>,
    /// Sections this parser does not know (from a newer probe), kept verbatim.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub extra_sections: BTreeMap<String, String>,
}

impl Facts {
    /// Whether `tool` was found in `PATH`.
    pub fn has_tool(&self, tool: &str) -> bool {
        self.tools.get(tool).is_some_and(Option::is_some)
    }

    /// The component's facts, when it is installed.
    pub fn component(&self, c: Component) -> Option<&ComponentInfo> {
        self.components.get(&c).and_then(Option::as_ref)
    }

    /// Every listener on `port` (any address).
    pub fn listeners_on(&self, port: u16) -> Vec<&ListeningPort> {
        self.listening
            .iter()
            .flatten()
            .filter(|l| l.port == port)
            .collect()
    }
}

/// Where the host's name resolution points (the `dns` section).
///
/// The kubelet gives pods with `dnsPolicy: Default` (CoreDNS among them) a resolv.conf; one
/// listing a loopback nameserver (systemd-resolved's 127.0.0.53, Docker's 127.0.0.11) makes
/// CoreDNS forward to itself inside its pod and exit (`plugin/loop`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Dns {
    /// The probe had a dns section (older probes do not).
    pub probed: bool,
    /// The nameservers of /etc/resolv.conf.
    pub host_nameservers: Vec<String>,
    /// systemd-resolved runs (its varlink socket exists).
    pub resolved_running: bool,
    /// The nameservers of /run/systemd/resolve/resolv.conf (resolved's upstream servers);
    /// `None` when there is no such file.
    pub resolved_nameservers: Option<Vec<String>>,
    /// The file the kubelet should hand pods: `/run/systemd/resolve/resolv.conf` when
    /// resolved runs with real upstream servers (kubeadm's rule), `/etc/resolv.conf` when it
    /// lists nameservers none of which is loopback, `None` when neither holds.
    pub usable: Option<String>,
}

/// systemd-resolved's file of upstream servers (kubeadm points the kubelet at it).
pub const RESOLVED_UPSTREAM_FILE: &str = "/run/systemd/resolve/resolv.conf";
/// The host's own resolver configuration.
pub const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";

impl Dns {
    /// From the section's lines: `host ADDR`, `resolved ADDR`, `resolved_running`,
    /// `resolved_file`.
    pub fn from_lines<'a>(lines: impl IntoIterator<Item = &'a str>) -> Self {
        let mut d = Dns {
            probed: true,
            ..Dns::default()
        };
        let mut resolved = Vec::new();
        let mut resolved_file = false;
        for line in lines {
            match line.trim().split_once(' ') {
                Some(("host", a)) => d.host_nameservers.push(a.trim().to_owned()),
                Some(("resolved", a)) => resolved.push(a.trim().to_owned()),
                _ if line.trim() == "resolved_running" => d.resolved_running = true,
                _ if line.trim() == "resolved_file" => resolved_file = true,
                _ => {}
            }
        }
        if resolved_file {
            d.resolved_nameservers = Some(resolved);
        }
        let good = |list: &[String]| !list.is_empty() && list.iter().all(|a| !is_loopback(a));
        // resolved's stub at 127.0.0.53 in /etc/resolv.conf also tells that it runs (older
        // systemd has no varlink socket).
        let stub = d.host_nameservers.iter().any(|a| a == "127.0.0.53");
        d.usable = match &d.resolved_nameservers {
            Some(r) if (d.resolved_running || stub) && good(r) => {
                Some(RESOLVED_UPSTREAM_FILE.to_owned())
            }
            _ if good(&d.host_nameservers) => Some(HOST_RESOLV_CONF.to_owned()),
            _ => None,
        };
        d
    }

    /// The loopback nameservers of /etc/resolv.conf.
    pub fn loopback_nameservers(&self) -> Vec<&str> {
        self.host_nameservers
            .iter()
            .filter(|a| is_loopback(a))
            .map(String::as_str)
            .collect()
    }
}

/// A nameserver on a loopback address (what a pod's own network namespace would answer).
fn is_loopback(addr: &str) -> bool {
    addr.split('%')
        .next()
        .and_then(|a| a.parse::<std::net::IpAddr>().ok())
        .is_some_and(|a| a.is_loopback())
}

/// `/etc/os-release`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OsRelease {
    /// `ID` (`debian`, `ubuntu`, `rhel`, `rocky`...), lowercase.
    pub id: String,
    /// `ID_LIKE`, split on whitespace.
    pub id_like: Vec<String>,
    /// `VERSION_ID` (`12`, `22.04`, `9.4`); empty on rolling releases.
    pub version_id: String,
    /// `PRETTY_NAME`.
    pub pretty_name: String,
}

/// A CPU architecture, named as Go and Kubernetes release artifacts name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Arch {
    Amd64,
    Arm64,
    Arm,
    I386,
    Ppc64le,
    S390x,
    Riscv64,
    /// Anything else, as `uname -m` printed it.
    Other(String),
}

impl Arch {
    /// Normalises `uname -m` output.
    pub fn from_uname(machine: &str) -> Self {
        match machine {
            "x86_64" | "amd64" => Self::Amd64,
            "aarch64" | "arm64" | "aarch64_be" => Self::Arm64,
            "armv7l" | "armv6l" | "armv8l" | "arm" | "armhf" => Self::Arm,
            "i386" | "i486" | "i586" | "i686" | "x86" => Self::I386,
            "ppc64le" => Self::Ppc64le,
            "s390x" => Self::S390x,
            "riscv64" => Self::Riscv64,
            other => Self::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Amd64 => "amd64",
            Self::Arm64 => "arm64",
            Self::Arm => "arm",
            Self::I386 => "386",
            Self::Ppc64le => "ppc64le",
            Self::S390x => "s390x",
            Self::Riscv64 => "riscv64",
            Self::Other(s) => s,
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Arch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The init system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InitSystem {
    /// systemd is PID 1 and booted the host (`/run/systemd/system` exists, as `sd_booted()`
    /// tests).
    pub systemd: bool,
    /// The name of PID 1 (`systemd`, `init`, `tini`...), when readable.
    pub pid1: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Swap {
    /// `SwapTotal` from `/proc/meminfo`.
    pub total_bytes: u64,
    /// The active swap areas (`/proc/swaps`).
    pub active: Vec<SwapArea>,
}

impl Swap {
    /// Whether any swap is on.
    pub fn is_on(&self) -> bool {
        self.total_bytes > 0 || !self.active.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SwapArea {
    pub name: String,
    /// `partition` or `file`.
    pub kind: String,
    pub size_bytes: u64,
    pub used_bytes: u64,
}

/// One address on an interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Address {
    /// The interface, when known (the `/proc/net/fib_trie` fallback does not say).
    pub interface: Option<String>,
    pub address: std::net::IpAddr,
    pub prefix_len: Option<u8>,
}

/// A listening TCP socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListeningPort {
    /// The local address as the kernel reports it (`0.0.0.0`, `::`, `127.0.0.1`, `*`).
    pub address: String,
    pub port: u16,
    /// The processes holding the socket; empty when they could not be seen.
    pub processes: Vec<Process>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Process {
    /// The process name (`comm`: at most 15 characters, e.g. `kube-controller`).
    pub name: String,
    pub pid: Option<u32>,
}

/// The cgroup setup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cgroup {
    pub version: CgroupVersion,
    /// Controllers available: cgroup v2's `cgroup.controllers`, or the v1 hierarchies.
    pub controllers: Vec<String>,
    /// systemd manages the cgroup tree (a v1 `name=systemd` hierarchy or v2 under systemd):
    /// the kubelet and containerd must then use the `systemd` cgroup driver.
    pub systemd_managed: bool,
    /// The cgroup mounts: (mount point, file system type).
    pub mounts: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupVersion {
    /// Legacy hierarchies only.
    V1,
    /// The unified hierarchy at `/sys/fs/cgroup`.
    V2,
    /// Legacy hierarchies at `/sys/fs/cgroup`, v2 only at `/sys/fs/cgroup/unified`.
    Hybrid,
    /// No cgroup file system is mounted.
    None,
}

impl std::fmt::Display for CgroupVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
            Self::Hybrid => "hybrid",
            Self::None => "none",
        })
    }
}

/// An installed component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComponentInfo {
    /// Where it was found in `PATH`.
    pub path: String,
    /// The version token as the binary printed it (`v1.32.3`, `3.5.17`, `1.6.20~ds1`);
    /// `None` when the output could not be understood.
    pub version: Option<String>,
    /// `MAJOR.MINOR.PATCH` read from it, when it has that shape.
    pub semver: Option<Version>,
    /// The exit status of the version command.
    pub exit_status: Option<i32>,
    /// The version command's output (trimmed to 500 characters).
    pub output: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Sysctls {
    /// `net.ipv4.ip_forward`.
    pub ip_forward: Option<String>,
    /// `net.ipv6.conf.all.forwarding`.
    pub ipv6_forwarding: Option<String>,
    /// `net.bridge.bridge-nf-call-iptables` (`None` when `/proc/sys/net/bridge` is missing).
    pub bridge_nf_call_iptables: Option<String>,
    /// `net.bridge.bridge-nf-call-ip6tables`.
    pub bridge_nf_call_ip6tables: Option<String>,
    /// `/proc/sys/net/bridge` exists (`br_netfilter` is loaded or built in).
    pub bridge_dir: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[allow(clippy::struct_excessive_bools)] // four independent observations
pub struct ModuleState {
    /// Listed in `/proc/modules`.
    pub loaded: bool,
    /// Listed in the kernel's `modules.builtin`.
    pub builtin: bool,
    /// Present under `/sys/module` (loaded, or built in with parameters).
    pub sysfs: bool,
    /// Registered in `/proc/filesystems` (for `overlay`: usable, module or built in).
    pub filesystem: bool,
}

impl ModuleState {
    /// Whether the module's function is available now.
    pub fn available(&self) -> bool {
        self.loaded || self.builtin || self.sysfs || self.filesystem
    }
}

/// `stat` (and sha256) of a requested path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathFacts {
    /// `regular file`, `regular empty file`, `directory`, `symbolic link`...
    pub kind: String,
    pub size: u64,
    /// Permission bits, e.g. `0o644` (serialised as the octal string `"644"`).
    #[serde(serialize_with = "octal")]
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub owner: String,
    pub group: String,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    pub inode: u64,
    /// sha256 (lowercase hex) of a regular file's content; `None` for anything else.
    pub sha256: Option<String>,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's serialize_with signature
fn octal<S: Serializer>(mode: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{mode:o}"))
}

/// `systemctl show` of a requested unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnitState {
    /// The unit's canonical name (`ssh.service` for `sshd`).
    pub id: String,
    /// `loaded`, `not-found`, `masked`...
    pub load_state: String,
    /// `active`, `inactive`, `failed`, `activating`...
    pub active_state: String,
    pub sub_state: String,
    /// `enabled`, `disabled`, `static`, `masked`...; empty when the unit has no file.
    pub unit_file_state: String,
}

impl UnitState {
    pub fn exists(&self) -> bool {
        self.load_state != "not-found"
    }

    pub fn is_active(&self) -> bool {
        self.active_state == "active"
    }
}

/// Why a probe request or a probe output was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FactsError {
    #[error("cannot probe {what} {value:?}: {reason}")]
    BadRequest {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error(
        "the probe output does not start with `{MARKER} probe N` (first line: {first_line:?}): the \
         login shell printed something else or the probe did not run; check that `sh` works \
         over SSH for this user"
    )]
    NotProbeOutput { first_line: String },
    #[error(
        "the probe output has format {found}, this capstan understands {PROBE_FORMAT}: \
         use the same capstan version for probe and parse"
    )]
    UnsupportedFormat { found: String },
    #[error(
        "the probe output is truncated inside section `{section}` (no end marker): the probe \
         was interrupted (connection lost, timeout, killed); run it again"
    )]
    Truncated { section: String },
    #[error(
        "the probe output is truncated after section `{after}` (no `{MARKER} done` line): the \
         probe was interrupted (connection lost, timeout, killed); run it again"
    )]
    Unfinished { after: String },
    #[error(
        "the probe output lacks section `{section}`: the probe output is corrupt; run it again"
    )]
    MissingSection { section: String },
    #[error(
        "the probe output is corrupt at line {line_no} (section `{section}`): {reason}: {line:?}"
    )]
    Malformed {
        section: String,
        line_no: usize,
        line: String,
        reason: String,
    },
}

#[cfg(test)]
mod dns_tests {
    use super::*;

    #[test]
    fn the_kubelets_resolv_conf_never_names_a_loopback_nameserver() {
        // Ubuntu: the stub in /etc/resolv.conf, the real servers in resolved's file.
        let ubuntu = Dns::from_lines([
            "host 127.0.0.53",
            "resolved_running",
            "resolved_file",
            "resolved 10.0.2.3",
        ]);
        assert_eq!(ubuntu.usable.as_deref(), Some(RESOLVED_UPSTREAM_FILE));
        assert_eq!(ubuntu.loopback_nameservers(), vec!["127.0.0.53"]);
        // Older systemd has no varlink socket: the stub says resolved runs.
        let focal = Dns::from_lines(["host 127.0.0.53", "resolved_file", "resolved 10.0.2.3"]);
        assert_eq!(focal.usable.as_deref(), Some(RESOLVED_UPSTREAM_FILE));
        // resolved with no upstream of its own (it would list none, or a loopback one).
        let lonely = Dns::from_lines(["host 127.0.0.53", "resolved_running", "resolved_file"]);
        assert_eq!(lonely.usable, None);
        // Docker's embedded resolver, IPv6 loopback, and a file with no nameserver at all.
        assert_eq!(Dns::from_lines(["host 127.0.0.11"]).usable, None);
        assert_eq!(Dns::from_lines(["host ::1"]).usable, None);
        assert_eq!(Dns::from_lines(Vec::<&str>::new()).usable, None);
        // One loopback entry among real ones is still a loop for CoreDNS.
        assert_eq!(
            Dns::from_lines(["host 10.0.0.2", "host 127.0.0.1"]).usable,
            None
        );
        assert_eq!(
            Dns::from_lines(["host 10.0.0.2", "host fe80::1%eth0"])
                .usable
                .as_deref(),
            Some(HOST_RESOLV_CONF)
        );
        // resolved stopped, its old file left in /run: the host file decides.
        let stopped = Dns::from_lines(["host 10.0.0.2", "resolved_file", "resolved 10.0.2.3"]);
        assert_eq!(stopped.usable.as_deref(), Some(HOST_RESOLV_CONF));
    }

    /// The probe's dns section, run here for real, reads this machine's resolv.conf.
    #[test]
    fn the_probe_reads_resolv_conf() {
        let script = probe_script(&ProbeRequest::default()).unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        let facts = parse(&String::from_utf8_lossy(&out.stdout)).unwrap();
        let want: Vec<String> = std::fs::read_to_string(HOST_RESOLV_CONF)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                (w.next() == Some("nameserver")).then(|| w.next().unwrap_or("").to_string())
            })
            .collect();
        assert_eq!(facts.dns.host_nameservers, want);
    }
}
