//! The probe output parser: a pure function from text to [`Facts`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{
    Address, Arch, COMPONENTS, Cgroup, CgroupVersion, Component, ComponentInfo, Facts, FactsError,
    InitSystem, ListeningPort, MARKER, ModuleState, OsRelease, PROBE_FORMAT, PROBED_MODULES,
    PathFacts, Process, Swap, SwapArea, Sysctls, UnitState,
};
use crate::inventory::Version;

/// One section of the output.
#[derive(Debug)]
struct Section<'a> {
    /// Line number (1-based) of the first content line.
    first_line: usize,
    lines: Vec<&'a str>,
    /// The exit status recorded on the end marker, when the section came from a command.
    status: Option<i32>,
}

impl Section<'_> {
    fn malformed(&self, name: &str, idx: usize, reason: impl Into<String>) -> FactsError {
        FactsError::Malformed {
            section: name.to_owned(),
            line_no: self.first_line + idx,
            line: self.lines.get(idx).copied().unwrap_or_default().to_owned(),
            reason: reason.into(),
        }
    }

    /// `key=value` lines (later keys win); lines without `=` are errors.
    fn key_values(&self, name: &str) -> Result<HashMap<&str, &str>, FactsError> {
        let mut kv = HashMap::new();
        for (i, line) in self.lines.iter().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| self.malformed(name, i, "expected KEY=VALUE"))?;
            kv.insert(k.trim(), v.trim());
        }
        Ok(kv)
    }

    fn text(&self) -> String {
        self.lines.join("\n")
    }
}

struct Sections<'a> {
    map: BTreeMap<&'a str, Section<'a>>,
}

impl<'a> Sections<'a> {
    fn split(output: &'a str) -> Result<Self, FactsError> {
        let mut lines = output
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim_end_matches('\r')));
        // Skip anything a login shell printed before the probe (motd, banners).
        let mut header = None;
        let mut first_line = None;
        for (_, line) in lines.by_ref() {
            if first_line.is_none() && !line.trim().is_empty() {
                first_line = Some(line);
            }
            if let Some(rest) = line.strip_prefix(MARKER) {
                header = Some(rest.trim());
                break;
            }
        }
        let Some(header) = header else {
            return Err(FactsError::NotProbeOutput {
                first_line: first_line.unwrap_or_default().chars().take(200).collect(),
            });
        };
        let format = header
            .strip_prefix("probe ")
            .ok_or_else(|| FactsError::NotProbeOutput {
                first_line: header.to_owned(),
            })?;
        if format.trim() != PROBE_FORMAT.to_string() {
            return Err(FactsError::UnsupportedFormat {
                found: format.trim().to_owned(),
            });
        }

        let mut map: BTreeMap<&str, Section<'_>> = BTreeMap::new();
        let mut current: Option<(&str, Section<'_>)> = None;
        let mut last = "probe";
        let mut done = false;
        for (no, line) in lines {
            let Some(marker) = line.strip_prefix(MARKER) else {
                // Text between sections (a warning from sudo or the shell on a merged
                // stream) carries no facts; truncation is caught by the markers.
                if let Some((_, sec)) = current.as_mut() {
                    sec.lines.push(line);
                }
                continue;
            };
            let mut words = marker.split_whitespace();
            let in_section = current.as_ref().map_or(last, |(n, _)| n);
            let bad = |reason: &str| FactsError::Malformed {
                section: in_section.to_owned(),
                line_no: no,
                line: line.to_owned(),
                reason: reason.to_owned(),
            };
            match (words.next(), words.next(), words.next()) {
                (Some("begin"), Some(name), None) => {
                    if let Some((open, _)) = &current {
                        return Err(FactsError::Truncated {
                            section: (*open).to_owned(),
                        });
                    }
                    if map.contains_key(name) {
                        return Err(bad("section appears twice"));
                    }
                    current = Some((
                        name,
                        Section {
                            first_line: no + 1,
                            lines: Vec::new(),
                            status: None,
                        },
                    ));
                }
                (Some("end"), Some(name), status) => {
                    let Some((open, mut sec)) = current.take() else {
                        return Err(bad("end marker without a begin"));
                    };
                    if open != name {
                        return Err(bad(&format!("end of `{name}` inside section `{open}`")));
                    }
                    if let Some(st) = status {
                        sec.status = Some(
                            st.parse()
                                .map_err(|_| bad("the exit status is not a number"))?,
                        );
                    }
                    map.insert(open, sec);
                    last = open;
                }
                (Some("done"), None, None) => {
                    if let Some((open, _)) = current {
                        return Err(FactsError::Truncated {
                            section: open.to_owned(),
                        });
                    }
                    done = true;
                    break;
                }
                _ => return Err(bad("unknown marker")),
            }
        }
        if let Some((open, _)) = current {
            return Err(FactsError::Truncated {
                section: open.to_owned(),
            });
        }
        if !done {
            return Err(FactsError::Unfinished {
                after: last.to_owned(),
            });
        }
        Ok(Self { map })
    }

    fn take(&mut self, name: &str) -> Option<Section<'a>> {
        self.map.remove(name)
    }

    fn require(&mut self, name: &str) -> Result<Section<'a>, FactsError> {
        self.take(name).ok_or_else(|| FactsError::MissingSection {
            section: name.to_owned(),
        })
    }
}

/// Parses the output of [`super::probe_script`] into [`Facts`].
///
/// Text before the first marker (a login banner) is ignored. A missing `end` or `done`
/// marker, a missing section or a value of the wrong shape is an error that names the
/// section and the line.
pub fn parse(output: &str) -> Result<Facts, FactsError> {
    let mut s = Sections::split(output)?;

    let basics_sec = s.require("basics")?;
    let basics = basics_sec.key_values("basics")?;
    let get = |k: &str| basics.get(k).copied().unwrap_or_default();
    let need = |k: &str| -> Result<&str, FactsError> {
        basics
            .get(k)
            .copied()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| FactsError::Malformed {
                section: "basics".into(),
                line_no: basics_sec.first_line,
                line: String::new(),
                reason: format!("`{k}` is missing"),
            })
    };
    let machine = need("machine")?.to_owned();
    let kernel = need("kernel")?.to_owned();
    let cpus_text = need("cpus")?;
    let cpus: u32 = cpus_text.parse().map_err(|_| FactsError::Malformed {
        section: "basics".into(),
        line_no: basics_sec.first_line,
        line: format!("cpus={cpus_text}"),
        reason: "the CPU count is not a number".into(),
    })?;
    let uid = get("uid").parse().ok();
    let hostname = get("hostname").to_owned();
    let machine_id = Some(get("machine_id").to_owned()).filter(|m| !m.is_empty());
    let init = InitSystem {
        systemd: get("systemd_booted") == "1",
        pid1: Some(get("pid1").to_owned()).filter(|p| !p.is_empty()),
    };
    let container = detect_container(&basics);

    let os = parse_os(&s.require("os")?);
    let (memory_bytes, swap_total) = parse_meminfo(&s.require("meminfo")?)?;
    let swap = Swap {
        total_bytes: swap_total,
        active: parse_swaps(&s.require("swaps")?)?,
    };
    let cgroup = parse_cgroup(&s.require("cgroup")?, init.systemd);
    // A light probe has neither addresses nor listening sockets (see ProbeRequest::light).
    let addresses = if let Some(sec) = s.take("addrs-ip") {
        parse_ip_addr(&sec)?
    } else if let Some(inet6) = s.take("addrs-proc-inet6") {
        let fib = s.require("addrs-proc-fib")?;
        let mut v = parse_fib_trie(&fib);
        v.extend(parse_if_inet6(&inet6)?);
        v
    } else {
        Vec::new()
    };
    let listening = if let Some(sec) = s.take("listen-ss") {
        (sec.status == Some(0) || sec.status.is_none())
            .then(|| parse_ss(&sec))
            .transpose()?
    } else if let Some(tcp) = s.take("listen-proc-tcp") {
        let fds = s.take("listen-proc-fds");
        let comm = s.take("listen-proc-comm");
        parse_proc_tcp(&tcp, fds.as_ref(), comm.as_ref())?
    } else {
        None
    };
    let tools = parse_tools(&s.require("tools")?)?;
    let components = parse_components(&mut s)?;
    // Probes older than the dns section have none: nothing known.
    let dns = s
        .take("dns")
        .map(|sec| crate::facts::Dns::from_lines(sec.lines.iter().copied()))
        .unwrap_or_default();
    let sysctl = s.require("sysctl")?;
    let sysctls = parse_sysctl(&sysctl.key_values("sysctl")?);
    let modules = parse_modules(&s.require("modules")?);
    let paths = parse_paths(&mut s)?;
    let units = parse_units(&mut s)?;
    let clock_epoch = parse_clock(&s.require("clock")?)?;

    let extra_sections = std::mem::take(&mut s.map)
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.text()))
        .collect();

    Ok(Facts {
        uid,
        os,
        arch: Arch::from_uname(&machine),
        machine,
        kernel,
        init,
        cpus,
        memory_bytes,
        swap,
        hostname,
        machine_id,
        addresses,
        listening,
        cgroup,
        container,
        dns,
        components,
        tools,
        sysctls,
        modules,
        clock_epoch,
        paths,
        units,
        extra_sections,
    })
}

fn detect_container(basics: &HashMap<&str, &str>) -> Option<String> {
    fn clean<'a>(v: Option<&&'a str>) -> Option<&'a str> {
        v.map(|v| v.trim())
            .filter(|v| !v.is_empty() && *v != "none")
    }
    if let Some(v) = clean(basics.get("detect_virt")) {
        return Some(v.to_owned());
    }
    if let Some(v) = clean(basics.get("container_file")) {
        return Some(v.to_owned());
    }
    if basics.get("dockerenv") == Some(&"1") {
        return Some("docker".into());
    }
    if basics.get("containerenv") == Some(&"1") {
        return Some("podman".into());
    }
    None
}

fn unquote(v: &str) -> String {
    let v = v.trim();
    for q in ['"', '\''] {
        if let Some(inner) = v.strip_prefix(q).and_then(|r| r.strip_suffix(q)) {
            return inner.replace("\\\"", "\"").replace("\\\\", "\\");
        }
    }
    v.to_owned()
}

fn parse_os(sec: &Section<'_>) -> OsRelease {
    let mut os = OsRelease::default();
    for line in &sec.lines {
        let Some((k, v)) = line.split_once('=') else {
            continue; // comments and blank lines
        };
        let v = unquote(v);
        match k.trim() {
            "ID" => os.id = v.to_ascii_lowercase(),
            "ID_LIKE" => {
                os.id_like = v.split_whitespace().map(str::to_ascii_lowercase).collect();
            }
            "VERSION_ID" => os.version_id = v,
            "PRETTY_NAME" => os.pretty_name = v,
            _ => {}
        }
    }
    if os.id.is_empty() {
        // os-release(5): ID defaults to "linux".
        "linux".clone_into(&mut os.id);
    }
    os
}

fn parse_meminfo(sec: &Section<'_>) -> Result<(u64, u64), FactsError> {
    let mut mem = None;
    let mut swap = None;
    for (i, line) in sec.lines.iter().enumerate() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let slot = match k.trim() {
            "MemTotal" => &mut mem,
            "SwapTotal" => &mut swap,
            _ => continue,
        };
        let mut words = v.split_whitespace();
        let n: u64 = words
            .next()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| sec.malformed("meminfo", i, "expected a number of kB"))?;
        let scale = match words.next() {
            Some("kB") => 1024,
            None => 1,
            Some(_) => return Err(sec.malformed("meminfo", i, "unknown unit")),
        };
        *slot = Some(n.saturating_mul(scale));
    }
    let mem = mem.ok_or_else(|| FactsError::Malformed {
        section: "meminfo".into(),
        line_no: sec.first_line,
        line: String::new(),
        reason: "MemTotal is missing".into(),
    })?;
    Ok((mem, swap.unwrap_or(0)))
}

fn parse_swaps(sec: &Section<'_>) -> Result<Vec<SwapArea>, FactsError> {
    let mut out = Vec::new();
    for (i, line) in sec.lines.iter().enumerate() {
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.is_empty() || w[0] == "Filename" {
            continue;
        }
        let num = |j: usize| -> Result<u64, FactsError> {
            w.get(j)
                .and_then(|n| n.parse::<u64>().ok())
                .map(|n| n.saturating_mul(1024))
                .ok_or_else(|| sec.malformed("swaps", i, "expected: name type size used priority"))
        };
        out.push(SwapArea {
            // /proc/swaps escapes spaces in names as \040.
            name: w[0].replace("\\040", " "),
            kind: w.get(1).copied().unwrap_or_default().to_owned(),
            size_bytes: num(2)?,
            used_bytes: num(3)?,
        });
    }
    Ok(out)
}

fn parse_cgroup(sec: &Section<'_>, systemd_booted: bool) -> Cgroup {
    let mut mounts = Vec::new();
    let mut v1_controllers = BTreeSet::new();
    let mut v1_systemd = false;
    let mut v2_controllers = Vec::new();
    let mut unified_controllers = Vec::new();
    for line in &sec.lines {
        let mut w = line.split_whitespace();
        match w.next() {
            Some("mount") => {
                let (Some(mp), Some(fs)) = (w.next(), w.next()) else {
                    continue;
                };
                let opts = w.next().unwrap_or_default();
                if fs == "cgroup" {
                    for o in opts.split(',') {
                        match o {
                            "name=systemd" => v1_systemd = true,
                            "cpu" | "cpuacct" | "cpuset" | "memory" | "pids" | "blkio"
                            | "devices" | "freezer" | "hugetlb" | "perf_event" | "net_cls"
                            | "net_prio" | "rdma" | "misc" => {
                                v1_controllers.insert(o.to_owned());
                            }
                            _ => {}
                        }
                    }
                }
                mounts.push((mp.to_owned(), fs.to_owned()));
            }
            Some(l) if l.starts_with("controllers=") => {
                v2_controllers = words_after_eq(line);
            }
            Some(l) if l.starts_with("unified_controllers=") => {
                unified_controllers = words_after_eq(line);
            }
            _ => {}
        }
    }
    let root_v2 = mounts
        .iter()
        .any(|(mp, fs)| mp == "/sys/fs/cgroup" && fs == "cgroup2");
    let any_v1 = mounts.iter().any(|(_, fs)| fs == "cgroup");
    let any_v2 = mounts.iter().any(|(_, fs)| fs == "cgroup2");
    let version = if root_v2 || (any_v2 && !any_v1) {
        CgroupVersion::V2
    } else if any_v1 && any_v2 {
        CgroupVersion::Hybrid
    } else if any_v1 {
        CgroupVersion::V1
    } else {
        CgroupVersion::None
    };
    let controllers = match version {
        CgroupVersion::V2 => v2_controllers,
        CgroupVersion::V1 | CgroupVersion::Hybrid => {
            let _ = unified_controllers;
            v1_controllers.into_iter().collect()
        }
        CgroupVersion::None => Vec::new(),
    };
    Cgroup {
        version,
        controllers,
        systemd_managed: v1_systemd || (version == CgroupVersion::V2 && systemd_booted),
        mounts,
    }
}

fn words_after_eq(line: &str) -> Vec<String> {
    line.split_once('=')
        .map(|(_, v)| v.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// `ip -o addr show`: `2: eth0    inet 10.0.0.5/24 brd ... scope global eth0\ ...`.
fn parse_ip_addr(sec: &Section<'_>) -> Result<Vec<Address>, FactsError> {
    let mut out = Vec::new();
    for (i, line) in sec.lines.iter().enumerate() {
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.len() < 4 || !w[0].ends_with(':') {
            continue; // an error message from ip; the status says the rest
        }
        if w[2] != "inet" && w[2] != "inet6" {
            continue;
        }
        let iface = w[1].split('@').next().unwrap_or(w[1]);
        let (addr, prefix) = w[3].split_once('/').unwrap_or((w[3], ""));
        let address: IpAddr = addr
            .parse()
            .map_err(|_| sec.malformed("addrs-ip", i, "not an IP address"))?;
        out.push(Address {
            interface: Some(iface.to_owned()),
            address,
            prefix_len: prefix.parse().ok(),
        });
    }
    Ok(out)
}

/// `/proc/net/if_inet6`: `fe800000000000000000000000000001 02 40 20 80 eth0`.
fn parse_if_inet6(sec: &Section<'_>) -> Result<Vec<Address>, FactsError> {
    let mut out = Vec::new();
    for (i, line) in sec.lines.iter().enumerate() {
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.is_empty() {
            continue;
        }
        if w.len() < 6 || w[0].len() != 32 {
            return Err(sec.malformed(
                "addrs-proc-inet6",
                i,
                "expected: address index prefix scope flags name",
            ));
        }
        let bits = u128::from_str_radix(w[0], 16)
            .map_err(|_| sec.malformed("addrs-proc-inet6", i, "not a hex IPv6 address"))?;
        out.push(Address {
            interface: Some(w[5].to_owned()),
            address: IpAddr::V6(Ipv6Addr::from(bits)),
            prefix_len: u8::from_str_radix(w[2], 16).ok(),
        });
    }
    Ok(out)
}

/// `/proc/net/fib_trie`: an address line followed by `/32 host LOCAL` is a local address.
fn parse_fib_trie(sec: &Section<'_>) -> Vec<Address> {
    let mut out: Vec<Address> = Vec::new();
    let mut prev: Option<Ipv4Addr> = None;
    for line in &sec.lines {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("|-- ").or_else(|| t.strip_prefix("+-- ")) {
            prev = rest.split_whitespace().next().and_then(|a| a.parse().ok());
        } else if t.starts_with("/32 host LOCAL")
            && let Some(a) = prev.take().map(IpAddr::V4)
            && !out.iter().any(|x| x.address == a)
        {
            out.push(Address {
                interface: None,
                address: a,
                prefix_len: None,
            });
        }
    }
    out
}

/// `ss -ltnp`: `LISTEN 0 4096 127.0.0.1:10248 0.0.0.0:* users:(("kubelet",pid=1234,fd=20))`.
fn parse_ss(sec: &Section<'_>) -> Result<Vec<ListeningPort>, FactsError> {
    let mut out: Vec<ListeningPort> = Vec::new();
    for (i, line) in sec.lines.iter().enumerate() {
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.is_empty() || w[0] == "State" {
            continue;
        }
        if w.len() < 5 {
            return Err(sec.malformed(
                "listen-ss",
                i,
                "expected: state recv-q send-q local peer [process]",
            ));
        }
        let (host, port) = w[3]
            .rsplit_once(':')
            .ok_or_else(|| sec.malformed("listen-ss", i, "the local address has no port"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| sec.malformed("listen-ss", i, "the port is not a number"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host = host.split('%').next().unwrap_or(host);
        let processes = w
            .get(5..)
            .map(|rest| parse_ss_users(&rest.join(" ")))
            .unwrap_or_default();
        add_listener(&mut out, host.to_owned(), port, processes);
    }
    Ok(out)
}

fn add_listener(out: &mut Vec<ListeningPort>, address: String, port: u16, processes: Vec<Process>) {
    if let Some(l) = out
        .iter_mut()
        .find(|l| l.address == address && l.port == port)
    {
        for p in processes {
            if !l.processes.contains(&p) {
                l.processes.push(p);
            }
        }
    } else {
        out.push(ListeningPort {
            address,
            port,
            processes,
        });
    }
}

/// `users:(("sshd",pid=812,fd=3),("sshd",pid=900,fd=3))`.
fn parse_ss_users(text: &str) -> Vec<Process> {
    let mut out: Vec<Process> = Vec::new();
    for part in text.split("(\"").skip(1) {
        let Some((name, rest)) = part.split_once('"') else {
            continue;
        };
        let pid = rest
            .split_once("pid=")
            .and_then(|(_, r)| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok());
        let p = Process {
            name: name.to_owned(),
            pid,
        };
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// `/proc/net/tcp{,6}` with the socket inodes mapped to processes through
/// `ls -l /proc/*/fd` and `/proc/*/comm`.
fn parse_proc_tcp(
    tcp: &Section<'_>,
    fds: Option<&Section<'_>>,
    comm: Option<&Section<'_>>,
) -> Result<Option<Vec<ListeningPort>>, FactsError> {
    // inode -> pids
    let mut owners: HashMap<&str, Vec<u32>> = HashMap::new();
    if let Some(fds) = fds {
        let mut pid = None;
        for line in &fds.lines {
            if let Some(p) = line
                .strip_prefix("/proc/")
                .and_then(|r| r.strip_suffix("/fd:"))
            {
                pid = p.parse().ok();
            } else if let (Some(pid), Some((_, rest))) = (pid, line.split_once("socket:[")) {
                let inode = rest.trim_end_matches(']');
                owners.entry(inode).or_default().push(pid);
            }
        }
    }
    let mut names: HashMap<u32, &str> = HashMap::new();
    if let Some(comm) = comm {
        for line in &comm.lines {
            if let Some((pid, name)) = line.split_once(' ')
                && let Ok(pid) = pid.parse()
            {
                names.insert(pid, name);
            }
        }
    }
    let mut out = Vec::new();
    let mut saw_table = false;
    for (i, line) in tcp.lines.iter().enumerate() {
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.first() == Some(&"sl") {
            saw_table = true;
            continue;
        }
        if w.len() < 10 {
            continue;
        }
        if w[3] != "0A" {
            continue; // not TCP_LISTEN
        }
        let (addr, port) = w[1]
            .split_once(':')
            .ok_or_else(|| tcp.malformed("listen-proc-tcp", i, "expected ADDR:PORT in hex"))?;
        let port = u16::from_str_radix(port, 16)
            .map_err(|_| tcp.malformed("listen-proc-tcp", i, "the port is not hex"))?;
        let address = proc_net_addr(addr)
            .ok_or_else(|| tcp.malformed("listen-proc-tcp", i, "the address is not hex"))?;
        let mut processes: Vec<Process> = owners
            .get(w[9])
            .into_iter()
            .flatten()
            .map(|pid| Process {
                name: names.get(pid).copied().unwrap_or("?").to_owned(),
                pid: Some(*pid),
            })
            .collect();
        processes.sort();
        processes.dedup();
        add_listener(&mut out, address.to_string(), port, processes);
    }
    Ok(saw_table.then_some(out))
}

/// A `/proc/net/tcp` address: 32-bit words in host byte order (little-endian hosts).
fn proc_net_addr(hex: &str) -> Option<IpAddr> {
    match hex.len() {
        8 => {
            let w = u32::from_str_radix(hex, 16).ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(w.to_le_bytes())))
        }
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                let w = u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok()?;
                chunk.copy_from_slice(&w.to_le_bytes());
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

fn parse_tools(sec: &Section<'_>) -> Result<BTreeMap<String, Option<String>>, FactsError> {
    let mut out = BTreeMap::new();
    for (i, line) in sec.lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (name, path) = line
            .split_once(' ')
            .ok_or_else(|| sec.malformed("tools", i, "expected: NAME PATH, or NAME -"))?;
        let path = path.trim();
        out.insert(
            name.to_owned(),
            (path != "-" && !path.is_empty()).then(|| path.to_owned()),
        );
    }
    Ok(out)
}

fn parse_components(
    s: &mut Sections<'_>,
) -> Result<BTreeMap<Component, Option<ComponentInfo>>, FactsError> {
    let sec = s.require("components")?;
    let mut out: BTreeMap<Component, Option<ComponentInfo>> =
        COMPONENTS.iter().map(|c| (*c, None)).collect();
    for (i, line) in sec.lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (name, path) = line
            .split_once(' ')
            .ok_or_else(|| sec.malformed("components", i, "expected: NAME PATH, or NAME -"))?;
        let Some(c) = Component::from_name(name) else {
            continue;
        };
        let path = path.trim();
        if path == "-" || path.is_empty() {
            continue;
        }
        let (output, exit_status) = match s.take(&format!("version-{c}")) {
            Some(v) => (v.text(), v.status),
            None => (String::new(), None),
        };
        let version = parse_version_output(c, &output);
        out.insert(
            c,
            Some(ComponentInfo {
                path: path.to_owned(),
                semver: version.as_deref().and_then(lenient_semver),
                version,
                exit_status,
                output: output.chars().take(500).collect(),
            }),
        );
    }
    Ok(out)
}

/// Reads the version token from a component's version output.
///
/// - containerd: `containerd github.com/containerd/containerd v1.7.24 88bf19b...`
///   (Debian: `containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1`)
/// - runc: `runc version 1.1.12` (then `commit:`, `spec:`, `go:`, `libseccomp:` lines)
/// - kubelet: `Kubernetes v1.32.3`
/// - etcd: `etcd Version: 3.5.17` (then `Git SHA:`, `Go Version:`, `Go OS/Arch:`)
/// - kubectl: `Client Version: v1.32.3`, before 1.28 also
///   `Client Version: version.Info{Major:"1", Minor:"27", GitVersion:"v1.27.4", ...}`
pub(crate) fn parse_version_output(c: Component, output: &str) -> Option<String> {
    let lines = || output.lines().map(str::trim);
    let token = match c {
        Component::Containerd => lines()
            .find_map(|l| l.strip_prefix("containerd "))
            .and_then(|rest| rest.split_whitespace().nth(1)),
        Component::Runc => lines()
            .find_map(|l| l.strip_prefix("runc version "))
            .and_then(|rest| rest.split_whitespace().next()),
        Component::Kubelet => lines()
            .find_map(|l| l.strip_prefix("Kubernetes "))
            .and_then(|rest| rest.split_whitespace().next()),
        Component::Etcd => lines()
            .find_map(|l| l.strip_prefix("etcd Version:"))
            .and_then(|rest| rest.split_whitespace().next()),
        Component::Kubectl => lines()
            .find_map(|l| l.strip_prefix("Client Version:"))
            .and_then(|rest| {
                let rest = rest.trim();
                if let Some((_, gv)) = rest.split_once("GitVersion:\"") {
                    gv.split('"').next()
                } else {
                    rest.split_whitespace().next()
                }
            }),
    };
    token
        .filter(|t| {
            t.trim_start_matches('v')
                .starts_with(|ch: char| ch.is_ascii_digit())
        })
        .map(str::to_owned)
}

/// `MAJOR.MINOR.PATCH` from the start of a version token (`v1.32.3`, `1.6.20~ds1`,
/// `1.1.5+ds1`, `v1.32.4-dispatcher`).
pub(crate) fn lenient_semver(token: &str) -> Option<Version> {
    let t = token.strip_prefix('v').unwrap_or(token);
    let mut parts = t.splitn(3, '.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let patch_text = parts.next()?;
    let digits: &str = &patch_text[..patch_text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(patch_text.len())];
    let patch = digits.parse().ok()?;
    Some(Version {
        major,
        minor,
        patch,
    })
}

fn parse_sysctl(kv: &HashMap<&str, &str>) -> Sysctls {
    let get = |k: &str| kv.get(k).map(|v| (*v).to_owned());
    Sysctls {
        ip_forward: get("ip_forward"),
        ipv6_forwarding: get("ipv6_forwarding"),
        bridge_nf_call_iptables: get("bridge_nf_call_iptables"),
        bridge_nf_call_ip6tables: get("bridge_nf_call_ip6tables"),
        bridge_dir: kv.get("bridge_dir") == Some(&"1"),
    }
}

fn parse_modules(sec: &Section<'_>) -> BTreeMap<String, ModuleState> {
    let mut out: BTreeMap<String, ModuleState> = PROBED_MODULES
        .iter()
        .map(|m| ((*m).to_owned(), ModuleState::default()))
        .collect();
    for line in &sec.lines {
        let Some((kind, name)) = line.trim().split_once(' ') else {
            continue;
        };
        let name = name.split('.').next().unwrap_or(name);
        let Some(state) = out.get_mut(name) else {
            continue;
        };
        match kind {
            "loaded" => state.loaded = true,
            "sysfs" => state.sysfs = true,
            "builtin" => state.builtin = true,
            "fs" => state.filesystem = true,
            _ => {}
        }
    }
    out
}

fn parse_paths(s: &mut Sections<'_>) -> Result<BTreeMap<String, Option<PathFacts>>, FactsError> {
    let req = s.require("request-paths")?;
    let mut out: BTreeMap<String, Option<PathFacts>> = req
        .lines
        .iter()
        .filter(|l| !l.is_empty())
        .map(|l| ((*l).to_owned(), None))
        .collect();
    if out.is_empty() {
        return Ok(out);
    }
    let stat = s.require("stat")?;
    for (i, line) in stat.lines.iter().enumerate() {
        let f: Vec<&str> = line.splitn(10, '\t').collect();
        if f.len() != 10 {
            return Err(stat.malformed("stat", i, "expected 10 tab-separated fields"));
        }
        let bad = |what: &str| stat.malformed("stat", i, format!("the {what} is not a number"));
        let facts = PathFacts {
            size: f[0].parse().map_err(|_| bad("size"))?,
            mode: u32::from_str_radix(f[1], 8).map_err(|_| bad("mode"))?,
            uid: f[2].parse().map_err(|_| bad("uid"))?,
            gid: f[3].parse().map_err(|_| bad("gid"))?,
            owner: f[4].to_owned(),
            group: f[5].to_owned(),
            mtime: f[6].parse().map_err(|_| bad("mtime"))?,
            inode: f[7].parse().map_err(|_| bad("inode"))?,
            kind: f[8].to_owned(),
            sha256: None,
        };
        match out.get_mut(f[9]) {
            Some(slot) => *slot = Some(facts),
            None => return Err(stat.malformed("stat", i, "a path that was not requested")),
        }
    }
    let sums = s.require("sha256")?;
    for (i, line) in sums.lines.iter().enumerate() {
        if line.is_empty() {
            continue;
        }
        let (hash, name) = (line.get(..64), line.get(66..));
        let (Some(hash), Some(name)) = (hash, name) else {
            return Err(sums.malformed("sha256", i, "expected: HASH  PATH"));
        };
        if !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(sums.malformed("sha256", i, "the hash is not hex"));
        }
        match out.get_mut(name) {
            Some(Some(p)) => p.sha256 = Some(hash.to_ascii_lowercase()),
            Some(None) => {} // vanished between stat and hash
            None => return Err(sums.malformed("sha256", i, "a path that was not requested")),
        }
    }
    Ok(out)
}

fn parse_units(s: &mut Sections<'_>) -> Result<BTreeMap<String, Option<UnitState>>, FactsError> {
    let req = s.require("request-units")?;
    let names: Vec<&str> = req
        .lines
        .iter()
        .copied()
        .filter(|l| !l.is_empty())
        .collect();
    let mut out: BTreeMap<String, Option<UnitState>> =
        names.iter().map(|n| ((*n).to_owned(), None)).collect();
    // Units with no unit file anywhere: what `systemctl show` would say of them, without
    // asking it; the others follow in `units`, in order.
    let mut absent: Vec<&str> = Vec::new();
    if let Some(sec) = s.take("units-absent") {
        for (i, name) in sec.lines.iter().enumerate() {
            if name.is_empty() {
                continue;
            }
            let Some(slot) = out.get_mut(*name) else {
                return Err(sec.malformed("units-absent", i, "a unit that was not requested"));
            };
            *slot = Some(UnitState {
                id: (*name).to_owned(),
                load_state: "not-found".into(),
                active_state: "inactive".into(),
                sub_state: "dead".into(),
                unit_file_state: String::new(),
            });
            absent.push(name);
        }
    }
    let names: Vec<&str> = names.into_iter().filter(|n| !absent.contains(n)).collect();
    let Some(sec) = s.take("units") else {
        return Ok(out); // no systemd, or nothing requested
    };
    let mut blocks: Vec<HashMap<&str, &str>> = vec![HashMap::new()];
    for line in &sec.lines {
        if line.trim().is_empty() {
            if blocks.last().is_some_and(|b| !b.is_empty()) {
                blocks.push(HashMap::new());
            }
            continue;
        }
        if let Some((k, v)) = line.split_once('=')
            && let Some(b) = blocks.last_mut()
        {
            b.insert(k, v);
        }
    }
    blocks.retain(|b| b.contains_key("Id") || b.contains_key("LoadState"));
    if blocks.len() != names.len() {
        if sec.status == Some(0) {
            return Err(FactsError::Malformed {
                section: "units".into(),
                line_no: sec.first_line,
                line: String::new(),
                reason: format!(
                    "systemctl show printed {} units for {} requested",
                    blocks.len(),
                    names.len()
                ),
            });
        }
        return Ok(out); // systemctl failed: states unknown
    }
    // systemctl show prints one block per argument, in order.
    for (name, b) in names.iter().zip(blocks) {
        let get = |k: &str| b.get(k).copied().unwrap_or_default().to_owned();
        out.insert(
            (*name).to_owned(),
            Some(UnitState {
                id: get("Id"),
                load_state: get("LoadState"),
                active_state: get("ActiveState"),
                sub_state: get("SubState"),
                unit_file_state: get("UnitFileState"),
            }),
        );
    }
    Ok(out)
}

fn parse_clock(sec: &Section<'_>) -> Result<f64, FactsError> {
    let line = sec
        .lines
        .iter()
        .find(|l| !l.trim().is_empty())
        .copied()
        .unwrap_or_default();
    let t = line.trim();
    let bad = || FactsError::Malformed {
        section: "clock".into(),
        line_no: sec.first_line,
        line: t.to_owned(),
        reason: "expected SECONDS.NANOSECONDS since the epoch".into(),
    };
    let (secs, frac) = t.split_once('.').unwrap_or((t, ""));
    let secs: i64 = secs.parse().map_err(|_| bad())?;
    // Without %N support, date prints `N` or `%N`: keep the whole seconds.
    let frac = if !frac.is_empty() && frac.bytes().all(|b| b.is_ascii_digit()) {
        format!("0.{frac}").parse::<f64>().unwrap_or(0.0)
    } else {
        0.0
    };
    #[allow(clippy::cast_precision_loss)]
    Ok(secs as f64 + frac)
}

#[cfg(test)]
mod tests;
