//! kube-proxy stand-in (iptables mode): the real flags, the KubeProxyConfiguration file, the
//! conntrack sysctls exactly as the real one sets them (read, write only when different, and
//! fail when the kernel refuses, as it does in a container), Service routing with real
//! iptables in the nat table from Services and EndpointSlices, and healthz on :10256.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use serde_yaml::Value as Y;

use crate::flags::Kind;
use crate::flags::Kind::{Bool as B, Value as V};
use crate::klog;
use crate::kubeclient::{Client, ServiceView, go_err};

const NAME: &str = "kube-proxy";
const SYSCTL: &str = "/proc/sys";

pub const FLAGS: &[(&str, Kind)] = &[
    ("add_dir_header", B),
    ("alsologtostderr", B),
    ("bind-address", V),
    ("bind-address-hard-fail", B),
    ("boot-id-file", V),
    ("cleanup", B),
    ("cluster-cidr", V),
    ("config", V),
    ("config-sync-period", V),
    ("conntrack-max-per-core", V),
    ("conntrack-min", V),
    ("conntrack-tcp-be-liberal", B),
    ("conntrack-tcp-timeout-close-wait", V),
    ("conntrack-tcp-timeout-established", V),
    ("conntrack-udp-timeout", V),
    ("conntrack-udp-timeout-stream", V),
    ("detect-local-mode", V),
    ("healthz-bind-address", V),
    ("hostname-override", V),
    ("init-only", B),
    ("iptables-localhost-nodeports", B),
    ("iptables-masquerade-bit", V),
    ("iptables-min-sync-period", V),
    ("iptables-sync-period", V),
    ("ipvs-exclude-cidrs", V),
    ("ipvs-min-sync-period", V),
    ("ipvs-scheduler", V),
    ("ipvs-strict-arp", B),
    ("ipvs-sync-period", V),
    ("ipvs-tcp-timeout", V),
    ("ipvs-tcpfin-timeout", V),
    ("ipvs-udp-timeout", V),
    ("kube-api-burst", V),
    ("kube-api-content-type", V),
    ("kube-api-qps", V),
    ("kubeconfig", V),
    ("log_backtrace_at", V),
    ("log_dir", V),
    ("log_file", V),
    ("log_file_max_size", V),
    ("logtostderr", B),
    ("machine-id-file", V),
    ("masquerade-all", B),
    ("master", V),
    ("metrics-bind-address", V),
    ("nodeport-addresses", V),
    ("one_output", B),
    ("oom-score-adj", V),
    ("pod-bridge-interface", V),
    ("pod-interface-name-prefix", V),
    ("profiling", B),
    ("proxy-mode", V),
    ("proxy-port-range", V),
    ("show-hidden-metrics-for-version", V),
    ("skip_headers", B),
    ("skip_log_headers", B),
    ("stderrthreshold", V),
    ("write-config-to", V),
];

/// The fields of kubeproxy.config.k8s.io/v1alpha1 KubeProxyConfiguration (dotted paths);
/// the `*` entries are maps with free keys.
const FIELDS: &[&str] = &[
    "apiVersion",
    "kind",
    "featureGates*",
    "clientConnection",
    "clientConnection.kubeconfig",
    "clientConnection.acceptContentTypes",
    "clientConnection.contentType",
    "clientConnection.qps",
    "clientConnection.burst",
    "logging",
    "logging.format",
    "logging.flushFrequency",
    "logging.verbosity",
    "logging.vmodule*",
    "logging.options*",
    "hostnameOverride",
    "bindAddress",
    "healthzBindAddress",
    "metricsBindAddress",
    "bindAddressHardFail",
    "enableProfiling",
    "showHiddenMetricsForVersion",
    "mode",
    "iptables",
    "iptables.masqueradeBit",
    "iptables.masqueradeAll",
    "iptables.localhostNodePorts",
    "iptables.syncPeriod",
    "iptables.minSyncPeriod",
    "ipvs",
    "ipvs.syncPeriod",
    "ipvs.minSyncPeriod",
    "ipvs.scheduler",
    "ipvs.excludeCIDRs",
    "ipvs.strictARP",
    "ipvs.tcpTimeout",
    "ipvs.tcpFinTimeout",
    "ipvs.udpTimeout",
    "nftables",
    "nftables.masqueradeBit",
    "nftables.masqueradeAll",
    "nftables.syncPeriod",
    "nftables.minSyncPeriod",
    "winkernel*",
    "detectLocalMode",
    "detectLocal",
    "detectLocal.bridgeInterface",
    "detectLocal.interfaceNamePrefix",
    "clusterCIDR",
    "nodePortAddresses",
    "oomScoreAdj",
    "conntrack",
    "conntrack.maxPerCore",
    "conntrack.min",
    "conntrack.tcpEstablishedTimeout",
    "conntrack.tcpCloseWaitTimeout",
    "conntrack.tcpBeLiberal",
    "conntrack.udpTimeout",
    "conntrack.udpStreamTimeout",
    "configSyncPeriod",
    "portRange",
    "windowsRunAsService",
];

#[derive(Debug, Clone)]
pub struct Config {
    pub kubeconfig: String,
    pub master: String,
    pub hostname_override: String,
    pub healthz_bind_address: String,
    pub mode: String,
    pub cluster_cidr: String,
    pub masquerade_all: bool,
    pub masquerade_bit: u32,
    pub sync_period: Duration,
    pub max_per_core: i64,
    pub min: i64,
    pub tcp_established: Duration,
    pub tcp_close_wait: Duration,
    pub tcp_be_liberal: bool,
    pub udp_timeout: Duration,
    pub udp_stream_timeout: Duration,
    pub oom_score_adj: i64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            kubeconfig: String::new(),
            master: String::new(),
            hostname_override: String::new(),
            healthz_bind_address: "0.0.0.0:10256".into(),
            mode: String::new(),
            cluster_cidr: String::new(),
            masquerade_all: false,
            masquerade_bit: 14,
            sync_period: Duration::from_secs(30),
            max_per_core: 32768,
            min: 131_072,
            tcp_established: Duration::from_secs(24 * 3600),
            tcp_close_wait: Duration::from_secs(3600),
            tcp_be_liberal: false,
            udp_timeout: Duration::ZERO,
            udp_stream_timeout: Duration::ZERO,
            oom_score_adj: -999,
        }
    }
}

/// Go's time.ParseDuration for the units configs use (h, m, s, ms, us, ns).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("time: invalid duration {}", klog::quote(s));
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("time: missing unit in duration {}", klog::quote(s)))?;
        let num: f64 = rest[..n].parse().map_err(|_| bad())?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mul = match &rest[..u] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            unit => {
                return Err(format!(
                    "time: unknown unit {} in duration {}",
                    klog::quote(unit),
                    klog::quote(s)
                ));
            }
        };
        total += num * mul;
        rest = &rest[u..];
    }
    Ok(Duration::from_secs_f64(total))
}

fn unknown_fields(v: &Y, prefix: &str, out: &mut Vec<String>) {
    let Some(m) = v.as_mapping() else { return };
    for (k, val) in m {
        let key = k.as_str().unwrap_or_default();
        let path = if prefix.is_empty() {
            key.to_string()
        } else {
            format!("{prefix}.{key}")
        };
        if FIELDS.contains(&format!("{path}*").as_str()) {
            continue;
        }
        if FIELDS.contains(&path.as_str()) {
            unknown_fields(val, &path, out);
        } else {
            out.push(format!("unknown field {}", klog::quote(&path)));
        }
    }
}

fn type_err(path: &str, want: &str, v: &Y) -> String {
    let got = match v {
        Y::String(_) => "string",
        Y::Number(_) => "number",
        Y::Bool(_) => "bool",
        Y::Sequence(_) => "array",
        Y::Mapping(_) => "object",
        _ => "null",
    };
    format!(
        "json: cannot unmarshal {got} into Go struct field KubeProxyConfiguration.{path} of type {want}"
    )
}

fn at<'a>(doc: &'a Y, path: &str) -> Option<&'a Y> {
    let mut cur = doc;
    for p in path.split('.') {
        cur = cur.get(p)?;
    }
    (!cur.is_null()).then_some(cur)
}

fn get_str(doc: &Y, path: &str) -> Result<Option<String>, String> {
    match at(doc, path) {
        None => Ok(None),
        Some(Y::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(type_err(path, "string", v)),
    }
}

fn get_int(doc: &Y, path: &str) -> Result<Option<i64>, String> {
    match at(doc, path) {
        None => Ok(None),
        Some(Y::Number(n)) if n.as_i64().is_some() => Ok(n.as_i64()),
        Some(v) => Err(type_err(path, "int32", v)),
    }
}

fn get_bool(doc: &Y, path: &str) -> Result<Option<bool>, String> {
    match at(doc, path) {
        None => Ok(None),
        Some(Y::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(type_err(path, "bool", v)),
    }
}

fn get_dur(doc: &Y, path: &str) -> Result<Option<Duration>, String> {
    match get_str(doc, path)? {
        None => Ok(None),
        Some(s) => parse_duration(&s).map(Some),
    }
}

/// Decodes a KubeProxyConfiguration file as kube-proxy's `loadConfig` does: strictly, and
/// when only the strictness fails (unknown fields), leniently with a logged warning. Returns
/// the config and the strict-decoding error that was forgiven, if any.
pub fn decode(text: &str) -> Result<(Config, Option<String>), String> {
    let doc: Y = serde_yaml::from_str(text)
        .map_err(|e| format!("failed to decode: error converting YAML to JSON: yaml: {e}"))?;
    let api = doc
        .get("apiVersion")
        .and_then(Y::as_str)
        .unwrap_or_default();
    let kind = doc.get("kind").and_then(Y::as_str).unwrap_or_default();
    if api.is_empty() || kind.is_empty() {
        return Err(format!(
            "failed to decode: Object 'Kind' is missing in '{}'",
            text.trim()
        ));
    }
    if api != "kubeproxy.config.k8s.io/v1alpha1" || kind != "KubeProxyConfiguration" {
        return Err(format!(
            "failed to decode: no kind \"{kind}\" is registered for version \"{api}\" in scheme \"pkg/proxy/apis/config/scheme/scheme.go:29\""
        ));
    }
    let mut unknown = Vec::new();
    unknown_fields(&doc, "", &mut unknown);
    let strict =
        (!unknown.is_empty()).then(|| format!("strict decoding error: {}", unknown.join(", ")));
    let wrap = |e: String| format!("failed to decode: {e}");
    let mut c = Config::default();
    if let Some(v) = get_str(&doc, "clientConnection.kubeconfig").map_err(wrap)? {
        c.kubeconfig = v;
    }
    if let Some(v) = get_str(&doc, "hostnameOverride").map_err(wrap)? {
        c.hostname_override = v;
    }
    if let Some(v) = get_str(&doc, "healthzBindAddress").map_err(wrap)? {
        c.healthz_bind_address = v;
    }
    if let Some(v) = get_str(&doc, "mode").map_err(wrap)? {
        c.mode = v;
    }
    if let Some(v) = get_str(&doc, "clusterCIDR").map_err(wrap)? {
        c.cluster_cidr = v;
    }
    if let Some(v) = get_bool(&doc, "iptables.masqueradeAll").map_err(wrap)? {
        c.masquerade_all = v;
    }
    if let Some(v) = get_int(&doc, "iptables.masqueradeBit").map_err(wrap)? {
        c.masquerade_bit = u32::try_from(v).unwrap_or(14);
    }
    if let Some(v) = get_dur(&doc, "iptables.syncPeriod").map_err(wrap)? {
        c.sync_period = v;
    }
    if let Some(v) = get_int(&doc, "conntrack.maxPerCore").map_err(wrap)? {
        c.max_per_core = v;
    }
    if let Some(v) = get_int(&doc, "conntrack.min").map_err(wrap)? {
        c.min = v;
    }
    if let Some(v) = get_dur(&doc, "conntrack.tcpEstablishedTimeout").map_err(wrap)? {
        c.tcp_established = v;
    }
    if let Some(v) = get_dur(&doc, "conntrack.tcpCloseWaitTimeout").map_err(wrap)? {
        c.tcp_close_wait = v;
    }
    if let Some(v) = get_bool(&doc, "conntrack.tcpBeLiberal").map_err(wrap)? {
        c.tcp_be_liberal = v;
    }
    if let Some(v) = get_dur(&doc, "conntrack.udpTimeout").map_err(wrap)? {
        c.udp_timeout = v;
    }
    if let Some(v) = get_dur(&doc, "conntrack.udpStreamTimeout").map_err(wrap)? {
        c.udp_stream_timeout = v;
    }
    if let Some(v) = get_int(&doc, "oomScoreAdj").map_err(wrap)? {
        c.oom_score_adj = v;
    }
    Ok((c, strict))
}

fn command_failed(err: &str) -> ! {
    klog::error("run.go:72", "command failed", &[("err", err.to_string())]);
    std::process::exit(1);
}

fn run_failed(err: &str) -> ! {
    klog::error(
        "server.go:558",
        "Error running ProxyServer",
        &[("err", err.to_string())],
    );
    command_failed(err);
}

/// Flags given on the command line override the file, as kube-proxy's options do.
fn apply_flags(c: &mut Config, p: &crate::flags::Parsed) -> Result<(), String> {
    let int = |n: &str, v: &str| {
        v.parse::<i64>().map_err(|_| {
            format!("invalid argument {v:?} for \"--{n}\" flag: strconv.ParseInt: parsing {v:?}: invalid syntax")
        })
    };
    let dur = |n: &str, v: &str| {
        parse_duration(v).map_err(|e| format!("invalid argument {v:?} for \"--{n}\" flag: {e}"))
    };
    if let Some(v) = p.get("kubeconfig") {
        c.kubeconfig = v.into();
    }
    if let Some(v) = p.get("master") {
        c.master = v.into();
    }
    if let Some(v) = p.get("hostname-override") {
        c.hostname_override = v.into();
    }
    if let Some(v) = p.get("healthz-bind-address") {
        c.healthz_bind_address = v.into();
    }
    if let Some(v) = p.get("proxy-mode") {
        c.mode = v.into();
    }
    if let Some(v) = p.get("cluster-cidr") {
        c.cluster_cidr = v.into();
    }
    if p.has("masquerade-all") {
        c.masquerade_all = p.bool("masquerade-all", false);
    }
    if let Some(v) = p.get("conntrack-max-per-core") {
        c.max_per_core = int("conntrack-max-per-core", v)?;
    }
    if let Some(v) = p.get("conntrack-min") {
        c.min = int("conntrack-min", v)?;
    }
    if let Some(v) = p.get("conntrack-tcp-timeout-established") {
        c.tcp_established = dur("conntrack-tcp-timeout-established", v)?;
    }
    if let Some(v) = p.get("conntrack-tcp-timeout-close-wait") {
        c.tcp_close_wait = dur("conntrack-tcp-timeout-close-wait", v)?;
    }
    if let Some(v) = p.get("iptables-sync-period") {
        c.sync_period = dur("iptables-sync-period", v)?;
    }
    if let Some(v) = p.get("oom-score-adj") {
        c.oom_score_adj = int("oom-score-adj", v)?;
    }
    Ok(())
}

fn sysctl_path(entry: &str) -> String {
    format!("{SYSCTL}/{entry}")
}

/// The real `setIntSysCtl`: read the value, and write it only when it differs.
fn set_int_sysctl(name: &str, value: i64) -> Result<(), String> {
    let entry = format!("net/netfilter/{name}");
    let path = sysctl_path(&entry);
    let current = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok());
    if current != Some(value) {
        klog::info(
            "conntrack.go:60",
            "Set sysctl",
            &[("entry", entry.clone()), ("value", value.to_string())],
        );
        std::fs::write(&path, value.to_string())
            .map_err(|e| format!("open {path}: {}", go_err(&e)))?;
    }
    Ok(())
}

fn ncpu() -> i64 {
    std::thread::available_parallelism().map_or(1, |n| i64::try_from(n.get()).unwrap_or(1))
}

/// `getConntrackMax`: 0 (leave the kernel's value alone) unless maxPerCore > 0.
pub fn conntrack_max(c: &Config) -> i64 {
    if c.max_per_core > 0 {
        (c.max_per_core * ncpu()).max(c.min.max(0))
    } else {
        0
    }
}

fn setup_conntrack(c: &Config) -> Result<(), String> {
    let max = conntrack_max(c);
    if max > 0 {
        set_int_sysctl("nf_conntrack_max", max)?;
        klog::info(
            "conntrack.go:69",
            "Setting nf_conntrack_max",
            &[("nfConntrackMax", max.to_string())],
        );
        // The hash table only needs growing when it is smaller than max/4; a read-only
        // sysfs (docker#24000) is reported and tolerated, as the real proxy does.
        let hs = "/sys/module/nf_conntrack/parameters/hashsize";
        let size = std::fs::read_to_string(hs)
            .map_err(|e| format!("open {hs}: {}", go_err(&e)))?
            .trim()
            .parse::<i64>()
            .unwrap_or(0);
        if size < max / 4 {
            klog::info(
                "conntrack.go:95",
                "Setting conntrack hashsize",
                &[("conntrackHashsize", (max / 4).to_string())],
            );
            if let Err(e) = std::fs::write(hs, (max / 4).to_string()) {
                if e.raw_os_error() == Some(30) {
                    klog::info(
                        "server_linux.go:230",
                        "CRI error: /sys is read-only: cannot modify conntrack limits, problems may arise later (If running Docker, see docker issue #24000)",
                        &[],
                    );
                } else {
                    return Err(format!("open {hs}: {}", go_err(&e)));
                }
            }
        }
    }
    let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    if c.tcp_established > Duration::ZERO {
        set_int_sysctl(
            "nf_conntrack_tcp_timeout_established",
            secs(c.tcp_established),
        )?;
    }
    if c.tcp_close_wait > Duration::ZERO {
        set_int_sysctl(
            "nf_conntrack_tcp_timeout_close_wait",
            secs(c.tcp_close_wait),
        )?;
    }
    if c.tcp_be_liberal {
        set_int_sysctl("nf_conntrack_tcp_be_liberal", 1)?;
    }
    if c.udp_timeout > Duration::ZERO {
        set_int_sysctl("nf_conntrack_udp_timeout", secs(c.udp_timeout))?;
    }
    if c.udp_stream_timeout > Duration::ZERO {
        set_int_sysctl(
            "nf_conntrack_udp_timeout_stream",
            secs(c.udp_stream_timeout),
        )?;
    }
    Ok(())
}

/// A stable chain-name suffix (16 characters of [A-Z2-7], as the real base32 ones).
fn chain_hash(s: &str) -> String {
    const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut out = String::new();
    for round in 0..2u8 {
        for b in s.bytes().chain(std::iter::once(round)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        let mut x = h;
        for _ in 0..8 {
            out.push(ALPHA[usize::try_from(x % 32).unwrap_or(0)] as char);
            x /= 32;
        }
    }
    out
}

/// The iptables-restore input: in the nat table every KUBE chain rewritten and the stale
/// service/endpoint chains (`existing`) deleted; in the filter table the REJECT rules of
/// Services without endpoints.
pub fn nat_rules(c: &Config, view: &ServiceView, existing: &BTreeSet<String>) -> String {
    let mark = format!("{:#x}", 1u32 << c.masquerade_bit);
    let mut chains: Vec<String> = vec![
        "KUBE-SERVICES".into(),
        "KUBE-POSTROUTING".into(),
        "KUBE-MARK-MASQ".into(),
    ];
    let mut rules = String::new();
    let mut reject = String::new();
    let _ = writeln!(
        rules,
        "-A KUBE-POSTROUTING -m mark ! --mark {mark}/{mark} -j RETURN"
    );
    let _ = writeln!(rules, "-A KUBE-POSTROUTING -j MARK --xor-mark {mark}");
    let _ = writeln!(
        rules,
        "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully"
    );
    let _ = writeln!(rules, "-A KUBE-MARK-MASQ -j MARK --or-mark {mark}");
    let mut svcs: Vec<&Value> = view.services.iter().collect();
    svcs.sort_by_key(|s| {
        (
            s["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            s["metadata"]["name"].as_str().unwrap_or("").to_string(),
        )
    });
    for s in svcs {
        let ns = s["metadata"]["namespace"].as_str().unwrap_or("default");
        let name = s["metadata"]["name"].as_str().unwrap_or("");
        let ip = s["spec"]["clusterIP"].as_str().unwrap_or("");
        if ip.is_empty() || ip == "None" || s["spec"]["type"].as_str() == Some("ExternalName") {
            continue;
        }
        for p in s["spec"]["ports"].as_array().into_iter().flatten() {
            let pname = p["name"].as_str().unwrap_or("");
            let proto = p["protocol"].as_str().unwrap_or("TCP");
            let Some(port) = p["port"].as_u64() else {
                continue;
            };
            let lproto = proto.to_lowercase();
            let spn = if pname.is_empty() {
                format!("{ns}/{name}")
            } else {
                format!("{ns}/{name}:{pname}")
            };
            let eps = view.endpoints(ns, name, Some(pname), proto);
            if eps.is_empty() {
                // No endpoints: connections are refused at once (filter table), not dropped.
                let _ = writeln!(
                    reject,
                    "-A KUBE-SERVICES -d {ip}/32 -p {lproto} -m comment --comment \"{spn} has no endpoints\" -m {lproto} --dport {port} -j REJECT --reject-with icmp-port-unreachable"
                );
                continue;
            }
            let svc_chain = format!("KUBE-SVC-{}", chain_hash(&format!("{spn}{lproto}")));
            chains.push(svc_chain.clone());
            let _ = writeln!(
                rules,
                "-A KUBE-SERVICES -d {ip}/32 -p {lproto} -m comment --comment \"{spn} cluster IP\" -m {lproto} --dport {port} -j {svc_chain}"
            );
            if c.masquerade_all {
                let _ = writeln!(
                    rules,
                    "-A {svc_chain} -d {ip}/32 -p {lproto} -m comment --comment \"{spn} cluster IP\" -m {lproto} --dport {port} -j KUBE-MARK-MASQ"
                );
            } else if !c.cluster_cidr.is_empty() {
                let _ = writeln!(
                    rules,
                    "-A {svc_chain} ! -s {} -d {ip}/32 -p {lproto} -m comment --comment \"{spn} cluster IP\" -m {lproto} --dport {port} -j KUBE-MARK-MASQ",
                    c.cluster_cidr
                );
            }
            let n = eps.len();
            for (i, (addr, eport)) in eps.iter().enumerate() {
                let Some(eport) = eport else { continue };
                let dest = format!("{addr}:{eport}");
                let sep = format!("KUBE-SEP-{}", chain_hash(&format!("{spn}{lproto}{dest}")));
                chains.push(sep.clone());
                let stat = if i + 1 < n {
                    #[allow(clippy::cast_precision_loss)]
                    let prob = 1.0 / (n - i) as f64;
                    format!(" -m statistic --mode random --probability {prob:.11}")
                } else {
                    String::new()
                };
                let _ = writeln!(
                    rules,
                    "-A {svc_chain} -m comment --comment \"{spn} -> {dest}\"{stat} -j {sep}"
                );
                let _ = writeln!(
                    rules,
                    "-A {sep} -s {addr}/32 -m comment --comment \"{spn}\" -j KUBE-MARK-MASQ"
                );
                let _ = writeln!(
                    rules,
                    "-A {sep} -p {lproto} -m comment --comment \"{spn}\" -m {lproto} -j DNAT --to-destination {dest}"
                );
            }
        }
    }
    let mut out = String::from("*nat\n");
    for ch in &chains {
        let _ = writeln!(out, ":{ch} - [0:0]");
    }
    let stale: Vec<&String> = existing
        .iter()
        .filter(|e| {
            (e.starts_with("KUBE-SVC-") || e.starts_with("KUBE-SEP-")) && !chains.contains(e)
        })
        .collect();
    for ch in &stale {
        let _ = writeln!(out, ":{ch} - [0:0]");
    }
    out.push_str(&rules);
    for ch in &stale {
        let _ = writeln!(out, "-X {ch}");
    }
    out.push_str("COMMIT\n*filter\n:KUBE-SERVICES - [0:0]\n");
    out.push_str(&reject);
    out.push_str("COMMIT\n");
    out
}

fn run(cmd: &str, args: &[&str], input: Option<&str>) -> Result<String, String> {
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("exec {cmd}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        if let Some(i) = input {
            stdin
                .write_all(i.as_bytes())
                .map_err(|e| format!("{cmd}: writing input: {e}"))?;
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd} {}: {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn existing_chains(table: &str) -> Result<BTreeSet<String>, String> {
    let save = run("iptables-save", &["-t", table], None)?;
    Ok(save
        .lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| c.starts_with("KUBE-"))
        .map(ToString::to_string)
        .collect())
}

/// The jumps from the built-in chains: (table, chain, only new connections, comment, target).
const JUMPS: &[(&str, &str, bool, &str, &str)] = &[
    (
        "nat",
        "PREROUTING",
        false,
        "kubernetes service portals",
        "KUBE-SERVICES",
    ),
    (
        "nat",
        "OUTPUT",
        false,
        "kubernetes service portals",
        "KUBE-SERVICES",
    ),
    (
        "nat",
        "POSTROUTING",
        false,
        "kubernetes postrouting rules",
        "KUBE-POSTROUTING",
    ),
    (
        "filter",
        "FORWARD",
        true,
        "kubernetes service portals",
        "KUBE-SERVICES",
    ),
    (
        "filter",
        "OUTPUT",
        true,
        "kubernetes service portals",
        "KUBE-SERVICES",
    ),
];

fn jump_args(op: &str, jump: &(&str, &str, bool, &str, &str)) -> Vec<String> {
    let (table, chain, new_only, comment, target) = *jump;
    let mut v: Vec<String> = ["-w", "5", "-t", table, op, chain]
        .iter()
        .map(ToString::to_string)
        .collect();
    if new_only {
        v.extend(["-m", "conntrack", "--ctstate", "NEW"].map(String::from));
    }
    v.extend(["-m", "comment", "--comment", comment, "-j", target].map(String::from));
    v
}

fn iptables(args: &[String]) -> Result<String, String> {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    run("iptables", &a, None)
}

/// One full sync: the chains, then the jumps into them from the built-in chains.
fn sync(c: &Config, view: &ServiceView) -> Result<(), String> {
    let existing = existing_chains("nat")?;
    let rules = nat_rules(c, view, &existing);
    run("iptables-restore", &["-w", "5", "--noflush"], Some(&rules))?;
    for j in JUMPS {
        if iptables(&jump_args("-C", j)).is_err() {
            iptables(&jump_args("-I", j))?;
        }
    }
    Ok(())
}

/// `--cleanup`: every rule and chain of the iptables proxier removed.
fn cleanup() -> Result<(), String> {
    for j in JUMPS {
        while iptables(&jump_args("-C", j)).is_ok() {
            iptables(&jump_args("-D", j))?;
        }
    }
    for table in ["nat", "filter"] {
        let existing = existing_chains(table)?;
        if existing.is_empty() {
            continue;
        }
        let mut input = format!("*{table}\n");
        for ch in &existing {
            let _ = writeln!(input, ":{ch} - [0:0]");
        }
        for ch in &existing {
            let _ = writeln!(input, "-X {ch}");
        }
        input.push_str("COMMIT\n");
        run("iptables-restore", &["-w", "5", "--noflush"], Some(&input))?;
    }
    Ok(())
}

#[derive(Default)]
struct Health {
    last_updated: Option<std::time::SystemTime>,
}

pub fn main(args: &[String]) {
    let (parsed, version) = crate::common::start(NAME, args, FLAGS);
    klog::info(
        "server.go:220",
        "Starting",
        &[("version", version.clone()), ("component", NAME.into())],
    );
    if parsed.bool("cleanup", false) {
        if let Err(e) = cleanup() {
            command_failed(&e);
        }
        std::process::exit(0);
    }
    let mut cfg = Config::default();
    if let Some(path) = parsed.get("config").filter(|p| !p.is_empty()) {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
            command_failed(&format!("failed complete: open {path}: {}", go_err(&e)))
        });
        match decode(&text) {
            Ok((c, strict)) => {
                if let Some(err) = strict {
                    klog::info(
                        "server.go:509",
                        "Using lenient decoding as strict decoding failed",
                        &[("err", err)],
                    );
                }
                cfg = c;
            }
            Err(e) => command_failed(&format!("failed complete: {e}")),
        }
    }
    if let Err(e) = apply_flags(&mut cfg, &parsed) {
        eprintln!("Error: {e}");
        std::process::exit(1);
    }
    match cfg.mode.as_str() {
        "" | "iptables" => {}
        "ipvs" | "nftables" => command_failed(&format!(
            "the capstan stand-in implements the iptables proxy mode only, not {:?}",
            cfg.mode
        )),
        m => command_failed(&format!(
            "failed validate: KubeProxyConfiguration.Mode: Invalid value: {}: must be iptables, ipvs, nftables or blank (blank means the best-available proxy [currently iptables])",
            klog::quote(m)
        )),
    }
    let node = if cfg.hostname_override.is_empty() {
        crate::common::hostname()
    } else {
        cfg.hostname_override.trim().to_lowercase()
    };
    let client = if cfg.kubeconfig.is_empty() && cfg.master.is_empty() {
        klog::info(
            "server.go:337",
            "Neither kubeconfig file nor master URL was specified, falling back to in-cluster config",
            &[],
        );
        Client::in_cluster()
    } else {
        Client::from_kubeconfig(&cfg.kubeconfig)
    }
    .unwrap_or_else(|e| run_failed(&e));
    if let Err(e) = setup_conntrack(&cfg) {
        run_failed(&e);
    }
    klog::info("server_linux.go:66", "Using iptables proxy", &[]);
    if let Err(e) = std::fs::write("/proc/self/oom_score_adj", cfg.oom_score_adj.to_string()) {
        klog::info(
            "server.go:584",
            "Failed to apply OOMScore",
            &[
                ("oomScoreAdj", cfg.oom_score_adj.to_string()),
                ("err", go_err(&e)),
            ],
        );
    }
    let health = Arc::new(Mutex::new(Health::default()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| run_failed(&e.to_string()));
    let addr = cfg.healthz_bind_address.clone();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(&addr))
        .unwrap_or_else(|e| {
            run_failed(&format!(
                "healthz server failed: listen tcp {addr}: {}",
                go_err(&e)
            ))
        });
    let h = health.clone();
    let period = cfg.sync_period;
    let node_name = node.clone();
    let handler: crate::server::Handler = Arc::new(move |req| {
        if req.path != "/healthz" && req.path != "/livez" {
            return crate::server::Response::text(404, "404 page not found\n");
        }
        let now = std::time::SystemTime::now();
        let last = h.lock().ok().and_then(|g| g.last_updated);
        let healthy = last.is_some_and(|t| now.duration_since(t).unwrap_or_default() < 2 * period);
        let body = json!({
            "lastUpdated": last.map(crate::timefmt::micro).unwrap_or_default(),
            "currentTime": crate::timefmt::micro(now),
            "nodeName": node_name,
            "nodeHealthy": true,
            "healthy": healthy,
        });
        crate::server::Response::json(if healthy { 200 } else { 503 }, &body)
    });
    rt.spawn(crate::server::serve(listener, None, handler));
    klog::info(
        "server.go:690",
        "Starting proxy",
        &[("node", node), ("healthz", addr)],
    );
    let mut last: Option<ServiceView> = None;
    let mut last_sync = Instant::now();
    loop {
        match ServiceView::fetch(&client) {
            Ok(view) => {
                let due = last.as_ref() != Some(&view) || last_sync.elapsed() >= cfg.sync_period;
                if due {
                    let start = Instant::now();
                    match sync(&cfg, &view) {
                        Ok(()) => {
                            klog::info(
                                "proxier.go:1494",
                                "SyncProxyRules complete",
                                &[("elapsed", format!("{:?}", start.elapsed()))],
                            );
                            if let Ok(mut g) = health.lock() {
                                g.last_updated = Some(std::time::SystemTime::now());
                            }
                            last = Some(view);
                            last_sync = Instant::now();
                        }
                        Err(e) => klog::error(
                            "proxier.go:1520",
                            "Failed to execute iptables-restore",
                            &[("err", e)],
                        ),
                    }
                } else if let Ok(mut g) = health.lock() {
                    g.last_updated = Some(std::time::SystemTime::now());
                }
            }
            Err(e) => klog::error("reflector.go:158", "Failed to watch", &[("err", e)]),
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_capstans_config_and_defaults() {
        let (c, strict) = decode(
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nbindAddress: 0.0.0.0\n\
             clientConnection:\n  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf\nclusterCIDR: 10.244.0.0/16\nmode: \"\"\n\
             conntrack:\n  maxPerCore: 0\n",
        )
        .unwrap();
        assert!(strict.is_none());
        assert_eq!(c.kubeconfig, "/var/lib/kube-proxy/kubeconfig.conf");
        assert_eq!(c.max_per_core, 0);
        assert_eq!(conntrack_max(&c), 0);
        assert_eq!(c.healthz_bind_address, "0.0.0.0:10256");
        let d = Config::default();
        assert_eq!(conntrack_max(&d), (32768 * ncpu()).max(131_072));
    }

    #[test]
    fn unknown_fields_are_a_strict_error_forgiven_and_bad_types_fail() {
        let (_, strict) = decode(
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nudpIdleTimeout: 250ms\nconntrack:\n  max: 0\n",
        )
        .unwrap();
        assert_eq!(
            strict.unwrap(),
            "strict decoding error: unknown field \"udpIdleTimeout\", unknown field \"conntrack.max\""
        );
        let e = decode(
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nconntrack:\n  maxPerCore: lots\n",
        )
        .unwrap_err();
        assert!(
            e.starts_with("failed to decode: json: cannot unmarshal string"),
            "{e}"
        );
        let e = decode("apiVersion: v1\nkind: KubeProxyConfiguration\n").unwrap_err();
        assert!(
            e.contains("no kind \"KubeProxyConfiguration\" is registered"),
            "{e}"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("24h0m0s").unwrap(),
            Duration::from_secs(86400)
        );
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("5").is_err());
    }

    #[test]
    fn rules_dnat_to_ready_endpoints_with_statistic_and_drop_stale_chains() {
        let view = ServiceView {
            services: vec![json!({
                "metadata": {"namespace": "default", "name": "web"},
                "spec": {"clusterIP": "10.96.0.50", "type": "ClusterIP",
                         "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
            })],
            slices: vec![json!({
                "metadata": {"namespace": "default", "name": "web-x",
                             "labels": {"kubernetes.io/service-name": "web"}},
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                "endpoints": [
                    {"addresses": ["10.244.0.5"], "conditions": {"ready": true}},
                    {"addresses": ["10.244.0.6"]},
                    {"addresses": ["10.244.0.7"], "conditions": {"ready": false}}
                ]
            })],
        };
        let existing: BTreeSet<String> = ["KUBE-SVC-OLDOLDOLDOLDOLD1".to_string()].into();
        let c = Config {
            cluster_cidr: "10.244.0.0/16".into(),
            ..Config::default()
        };
        let r = nat_rules(&c, &view, &existing);
        assert!(r.contains("-A KUBE-SERVICES -d 10.96.0.50/32 -p tcp -m comment --comment \"default/web:http cluster IP\" -m tcp --dport 80 -j KUBE-SVC-"), "{r}");
        assert!(r.contains("--probability 0.50000000000"), "{r}");
        assert!(
            r.contains("-j DNAT --to-destination 10.244.0.5:8080"),
            "{r}"
        );
        assert!(
            r.contains("-j DNAT --to-destination 10.244.0.6:8080"),
            "{r}"
        );
        assert!(!r.contains("10.244.0.7"), "{r}");
        assert!(r.contains("! -s 10.244.0.0/16"), "{r}");
        assert!(r.contains("-X KUBE-SVC-OLDOLDOLDOLDOLD1"), "{r}");
        // Idempotent: the same view gives the same rules.
        assert_eq!(r, nat_rules(&c, &view, &existing));
    }
}
