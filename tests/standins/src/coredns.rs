//! CoreDNS stand-in (`/coredns -conf /etc/coredns/Corefile`): parses the Corefile (unknown
//! directives refused as Caddy's parser does), sets up the plugins capstan's Corefile uses
//! (kubernetes, forward, loop, health, ready, prometheus; the others are accepted and have
//! no behaviour here: errors, cache, reload, loadbalance, log), and serves DNS over UDP and TCP
//! on the pod IP (SO_REUSEPORT: two replicas may share a node's address), /health on :8080
//! and /ready on :8181 (200 once the kubernetes plugin has synced).

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::OwnedFd;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::Value;

use crate::dns::{self, Data, Query, Record};
use crate::kubeclient::{Client, ServiceView, go_err};

/// The plugins of CoreDNS's plugin.cfg (1.11/1.12), in their execution order.
const PLUGINS: &[&str] = &[
    "root",
    "metadata",
    "geoip",
    "cancel",
    "tls",
    "timeouts",
    "multisocket",
    "reload",
    "nsid",
    "bufsize",
    "bind",
    "debug",
    "trace",
    "ready",
    "health",
    "pprof",
    "prometheus",
    "errors",
    "log",
    "dnstap",
    "local",
    "dns64",
    "acl",
    "any",
    "chaos",
    "loadbalance",
    "tsig",
    "cache",
    "rewrite",
    "header",
    "dnssec",
    "autopath",
    "minimal",
    "template",
    "transfer",
    "hosts",
    "route53",
    "azure",
    "clouddns",
    "k8s_external",
    "kubernetes",
    "file",
    "auto",
    "secondary",
    "etcd",
    "loop",
    "forward",
    "grpc",
    "erratic",
    "whoami",
    "on",
    "sign",
    "view",
];

fn fatal(msg: &str) -> ! {
    eprintln!("{msg}");
    std::process::exit(1);
}

fn log(level: &str, msg: &str) {
    println!("[{level}] {msg}");
}

#[derive(Debug, Clone, PartialEq)]
struct Token {
    text: String,
    line: usize,
}

fn tokenize(text: &str) -> Vec<Token> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let mut chars = raw.chars().peekable();
        let mut cur = String::new();
        let mut quoted = false;
        while let Some(c) = chars.next() {
            if quoted {
                match c {
                    '"' => {
                        quoted = false;
                    }
                    '\\' => {
                        if let Some(n) = chars.next() {
                            cur.push(n);
                        }
                    }
                    c => cur.push(c),
                }
                continue;
            }
            match c {
                '"' => quoted = true,
                '#' if cur.is_empty() => break,
                c if c.is_whitespace() => {
                    if !cur.is_empty() {
                        out.push(Token {
                            text: std::mem::take(&mut cur),
                            line,
                        });
                    }
                }
                c => cur.push(c),
            }
        }
        if !cur.is_empty() {
            out.push(Token { text: cur, line });
        }
    }
    out
}

/// A directive line: name, arguments, and the lines of its block.
#[derive(Debug, Clone, Default)]
pub struct Directive {
    pub name: String,
    pub args: Vec<String>,
    pub line: usize,
    pub block: Vec<Directive>,
}

#[derive(Debug, Clone)]
pub struct ServerBlock {
    pub keys: Vec<String>,
    pub directives: Vec<Directive>,
}

fn perr(file: &str, line: usize, msg: &str) -> String {
    format!("{file}:{line} - Error during parsing: {msg}")
}

/// Lines of a `{ ... }` block starting after the opening brace at `toks[*i - 1]`.
fn parse_block(
    toks: &[Token],
    i: &mut usize,
    file: &str,
    top: bool,
) -> Result<Vec<Directive>, String> {
    let mut out = Vec::new();
    loop {
        let Some(t) = toks.get(*i) else {
            let line = toks.last().map_or(0, |t| t.line);
            return Err(perr(file, line, "Unexpected EOF"));
        };
        *i += 1;
        if t.text == "}" {
            return Ok(out);
        }
        let mut d = Directive {
            name: t.text.clone(),
            line: t.line,
            ..Directive::default()
        };
        if top && !PLUGINS.contains(&d.name.as_str()) {
            return Err(perr(
                file,
                t.line,
                &format!("Unknown directive '{}'", d.name),
            ));
        }
        while let Some(n) = toks.get(*i) {
            if n.line != t.line {
                break;
            }
            *i += 1;
            if n.text == "{" {
                d.block = parse_block(toks, i, file, false)?;
                break;
            }
            if n.text == "}" {
                *i -= 1;
                break;
            }
            d.args.push(n.text.clone());
        }
        out.push(d);
    }
}

pub fn parse_corefile(text: &str, file: &str) -> Result<Vec<ServerBlock>, String> {
    let toks = tokenize(text);
    let mut i = 0;
    let mut blocks = Vec::new();
    while i < toks.len() {
        let mut keys = Vec::new();
        while let Some(t) = toks.get(i) {
            i += 1;
            if t.text == "{" {
                break;
            }
            keys.push(t.text.trim_end_matches(',').to_string());
        }
        if keys.is_empty() {
            return Err(perr(file, toks[i - 1].line, "Unexpected '{'"));
        }
        let directives = parse_block(&toks, &mut i, file, true)?;
        blocks.push(ServerBlock { keys, directives });
    }
    Ok(blocks)
}

/// `zone[:port]` -> (zone with a trailing dot, port).
fn split_key(key: &str, default_port: u16) -> (String, u16) {
    let key = key.strip_prefix("dns://").unwrap_or(key);
    let (zone, port) = match key.rsplit_once(':') {
        Some((z, p)) if p.parse::<u16>().is_ok() => (z, p.parse().unwrap_or(default_port)),
        _ => (key, default_port),
    };
    let zone = zone.to_lowercase();
    let zone = if zone.ends_with('.') {
        zone
    } else {
        format!("{zone}.")
    };
    (zone, port)
}

fn in_zone(name: &str, zone: &str) -> bool {
    zone == "." || name == zone || name.ends_with(&format!(".{zone}"))
}

#[derive(Debug, Clone, Default)]
struct KubeSetup {
    zones: Vec<String>,
    kubeconfig: Option<String>,
    endpoint: Option<String>,
    pods_insecure: bool,
    fallthrough: Option<Vec<String>>,
    ttl: u32,
}

#[derive(Debug, Clone)]
struct ForwardSetup {
    from: String,
    to: Vec<SocketAddr>,
}

#[derive(Debug, Clone, Default)]
struct Setup {
    zones: Vec<String>,
    port: u16,
    kube: Option<KubeSetup>,
    forward: Option<ForwardSetup>,
    loop_detect: bool,
    health: Option<String>,
    ready: Option<String>,
    prometheus: Option<String>,
    bind: Vec<String>,
}

fn plugin_err(name: &str, file: &str, line: usize, msg: &str) -> String {
    format!("plugin/{name}: {}", perr(file, line, msg))
}

/// Nameservers of a resolv.conf-style file.
fn resolv_nameservers(path: &str) -> Result<Vec<SocketAddr>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("open {path}: {}", go_err(&e)))?;
    Ok(text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect())
}

fn setup_block(b: &ServerBlock, file: &str, default_port: u16) -> Result<Setup, String> {
    let mut s = Setup::default();
    for k in &b.keys {
        let (z, p) = split_key(k, default_port);
        s.zones.push(z);
        s.port = p;
    }
    for d in &b.directives {
        match d.name.as_str() {
            "kubernetes" => {
                let mut k = KubeSetup {
                    zones: if d.args.is_empty() {
                        s.zones.clone()
                    } else {
                        d.args.iter().map(|z| split_key(z, 0).0).collect()
                    },
                    ttl: 5,
                    ..KubeSetup::default()
                };
                for o in &d.block {
                    let err = |m: &str| plugin_err("kubernetes", file, o.line, m);
                    match o.name.as_str() {
                        "pods" => match o.args.first().map(String::as_str) {
                            Some("insecure") => k.pods_insecure = true,
                            Some("disabled" | "verified") => {}
                            Some(v) => {
                                return Err(err(&format!(
                                    "wrong value for pods: {v},  must be one of: disabled, verified, insecure"
                                )));
                            }
                            None => {
                                return Err(err(
                                    "Wrong argument count or unexpected line ending after 'pods'",
                                ));
                            }
                        },
                        "fallthrough" => {
                            k.fallthrough =
                                Some(o.args.iter().map(|z| split_key(z, 0).0).collect());
                        }
                        "ttl" => {
                            let v = o.args.first().and_then(|t| t.parse::<u32>().ok());
                            match v {
                                Some(t) if t <= 3600 => k.ttl = t,
                                _ => return Err(err("ttl must be in range [0, 3600]")),
                            }
                        }
                        "kubeconfig" => {
                            k.kubeconfig = Some(o.args.first().cloned().ok_or_else(|| {
                                err("Wrong argument count or unexpected line ending after 'kubeconfig'")
                            })?);
                        }
                        "endpoint" => k.endpoint = o.args.first().cloned(),
                        "namespaces"
                        | "labels"
                        | "namespace_labels"
                        | "noendpoints"
                        | "endpoint_pod_names"
                        | "ignore"
                        | "tls"
                        | "startup_timeout"
                        | "multicluster"
                        | "apiserver_qps"
                        | "apiserver_burst"
                        | "apiserver_max_inflight" => {}
                        other => return Err(err(&format!("unknown property '{other}'"))),
                    }
                }
                s.kube = Some(k);
            }
            "forward" => {
                let from = d.args.first().cloned().unwrap_or_default();
                let mut to = Vec::new();
                for a in d.args.iter().skip(1) {
                    if let Ok(ip) = a.parse::<IpAddr>() {
                        to.push(SocketAddr::new(ip, 53));
                    } else if let Ok(sa) = a.trim_start_matches("dns://").parse::<SocketAddr>() {
                        to.push(sa);
                    } else {
                        to.extend(
                            resolv_nameservers(a).map_err(|e| format!("plugin/forward: {e}"))?,
                        );
                    }
                }
                if d.args.len() < 2 {
                    return Err(plugin_err(
                        "forward",
                        file,
                        d.line,
                        "Wrong argument count or unexpected line ending after 'forward'",
                    ));
                }
                if to.is_empty() {
                    return Err("plugin/forward: no nameservers found".into());
                }
                for o in &d.block {
                    match o.name.as_str() {
                        "max_concurrent"
                        | "policy"
                        | "except"
                        | "force_tcp"
                        | "prefer_udp"
                        | "expire"
                        | "health_check"
                        | "max_fails"
                        | "tls"
                        | "tls_servername"
                        | "next"
                        | "failfast_all_unhealthy_upstreams" => {}
                        other => {
                            return Err(plugin_err(
                                "forward",
                                file,
                                o.line,
                                &format!("unknown property '{other}'"),
                            ));
                        }
                    }
                }
                s.forward = Some(ForwardSetup {
                    from: split_key(&from, 0).0,
                    to,
                });
            }
            "loop" => s.loop_detect = true,
            "health" => s.health = Some(d.args.first().cloned().unwrap_or_else(|| ":8080".into())),
            "ready" => s.ready = Some(d.args.first().cloned().unwrap_or_else(|| ":8181".into())),
            "prometheus" => {
                s.prometheus = Some(
                    d.args
                        .first()
                        .cloned()
                        .unwrap_or_else(|| "localhost:9153".into()),
                );
            }
            "bind" => s.bind.clone_from(&d.args),
            _ => {}
        }
    }
    Ok(s)
}

/// The addresses the server binds: the `bind` plugin's, else the pod IP (POD_IP), else every
/// non-loopback address of the host (the stand-ins' pods share the host's network, where a
/// wildcard bind would collide with a local stub resolver on 127.0.0.53:53).
fn listen_ips(s: &Setup) -> Vec<IpAddr> {
    let bound: Vec<IpAddr> = s.bind.iter().filter_map(|b| b.parse().ok()).collect();
    if !bound.is_empty() {
        return bound;
    }
    if let Some(ip) = std::env::var("POD_IP").ok().and_then(|p| p.parse().ok()) {
        return vec![ip];
    }
    let mut ips: Vec<IpAddr> = nix::ifaddrs::getifaddrs()
        .map(|it| {
            it.filter(|i| i.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP))
                .filter_map(|i| i.address)
                .filter_map(|a| {
                    a.as_sockaddr_in()
                        .map(|v4| IpAddr::V4(v4.ip()))
                        .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
                })
                .filter(|ip| {
                    !ip.is_loopback() && !matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local())
                })
                .collect()
        })
        .unwrap_or_default();
    ips.sort();
    ips.dedup();
    if ips.is_empty() {
        ips.push(IpAddr::from([127, 0, 0, 1]));
    }
    ips
}

fn reuseport_socket(addr: SocketAddr, tcp: bool) -> Result<OwnedFd, String> {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, bind, listen, setsockopt,
        socket, sockopt,
    };
    use std::os::fd::AsRawFd;
    let fam = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let ty = if tcp {
        SockType::Stream
    } else {
        SockType::Datagram
    };
    let what = if tcp { "tcp" } else { "udp" };
    let e = |err: nix::Error| {
        format!(
            "listen {what} {addr}: {}",
            go_err(&std::io::Error::from(err))
        )
    };
    let fd = socket(fam, ty, SockFlag::SOCK_CLOEXEC, None).map_err(e)?;
    setsockopt(&fd, sockopt::ReusePort, &true).map_err(e)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(e)?;
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr)).map_err(e)?;
    if tcp {
        listen(&fd, Backlog::new(128).map_err(e)?).map_err(e)?;
    }
    Ok(fd)
}

/// The addresses of the health/ready/prometheus plugins: `[host]:port`, on each of `ips`
/// when the host is empty.
fn http_addrs(spec: &str, ips: &[IpAddr]) -> Result<Vec<SocketAddr>, String> {
    let (h, p) = spec
        .rsplit_once(':')
        .ok_or_else(|| format!("invalid address {spec:?}"))?;
    let port: u16 = p.parse().map_err(|_| format!("invalid port in {spec:?}"))?;
    let host = h.trim_start_matches('[').trim_end_matches(']');
    Ok(match host {
        "" => ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect(),
        "localhost" => vec![SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port)],
        h => vec![SocketAddr::new(
            h.parse().map_err(|_| format!("invalid host in {spec:?}"))?,
            port,
        )],
    })
}

fn http_servers(
    rt: &tokio::runtime::Runtime,
    plugin: &str,
    spec: &str,
    ips: &[IpAddr],
    handler: &crate::server::Handler,
) {
    let addrs = http_addrs(spec, ips).unwrap_or_else(|e| fatal(&format!("plugin/{plugin}: {e}")));
    for a in addrs {
        http_server(rt, a, handler.clone())
            .unwrap_or_else(|e| fatal(&format!("plugin/{plugin}: {e}")));
    }
}

struct State {
    view: RwLock<Option<ServiceView>>,
}

fn soa(zone: &str, ttl: u32) -> Record {
    Record {
        name: zone.to_string(),
        rtype: dns::SOA,
        ttl,
        data: Data::Soa {
            mname: format!("ns.dns.{zone}"),
            rname: format!("hostmaster.{zone}"),
            serial: u32::try_from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs()
                    % 4_000_000_000,
            )
            .unwrap_or(1),
        },
    }
}

enum Answer {
    Reply(Vec<u8>),
    Forward,
}

fn service_ips(view: &ServiceView, svc: &Value) -> Vec<IpAddr> {
    let ns = svc["metadata"]["namespace"].as_str().unwrap_or("");
    let name = svc["metadata"]["name"].as_str().unwrap_or("");
    let ip = svc["spec"]["clusterIP"].as_str().unwrap_or("");
    if ip == "None" {
        view.endpoints(ns, name, None, "TCP")
            .into_iter()
            .chain(view.endpoints(ns, name, None, "UDP"))
            .filter_map(|(a, _)| a.parse().ok())
            .collect::<std::collections::BTreeSet<IpAddr>>()
            .into_iter()
            .collect()
    } else {
        ip.parse().into_iter().collect()
    }
}

/// The kubernetes plugin's answer for `q` in `zone`.
fn kube_answer(k: &KubeSetup, zone: &str, view: &ServiceView, q: &Query) -> Option<Vec<u8>> {
    let ttl = k.ttl;
    let rel = q.name.strip_suffix(zone)?.trim_end_matches('.');
    let labels: Vec<&str> = if rel.is_empty() {
        Vec::new()
    } else {
        rel.split('.').collect()
    };
    let nx = || dns::reply(q, dns::NXDOMAIN, true, &[], &[soa(zone, ttl)], &[]);
    let nodata = || dns::reply(q, dns::NOERROR, true, &[], &[soa(zone, ttl)], &[]);
    let find = |ns: &str, name: &str| {
        view.services.iter().find(|s| {
            s["metadata"]["namespace"].as_str() == Some(ns)
                && s["metadata"]["name"].as_str() == Some(name)
        })
    };
    match labels.as_slice() {
        [] => Some(if q.qtype == dns::SOA {
            dns::reply(q, dns::NOERROR, true, &[soa(zone, ttl)], &[], &[])
        } else {
            nodata()
        }),
        ["svc"] => Some(nodata()),
        [ns, "svc"] => Some(
            if view
                .services
                .iter()
                .any(|s| s["metadata"]["namespace"].as_str() == Some(ns))
            {
                nodata()
            } else {
                nx()
            },
        ),
        [name, ns, "svc"] => {
            let Some(svc) = find(ns, name) else {
                return Some(nx());
            };
            if svc["spec"]["type"].as_str() == Some("ExternalName") {
                let target = svc["spec"]["externalName"].as_str().unwrap_or("");
                return Some(dns::reply(
                    q,
                    dns::NOERROR,
                    true,
                    &[Record {
                        name: q.name.clone(),
                        rtype: dns::CNAME,
                        ttl,
                        data: Data::Name(format!("{}.", target.trim_end_matches('.'))),
                    }],
                    &[],
                    &[],
                ));
            }
            let ips = service_ips(view, svc);
            match q.qtype {
                dns::A | dns::AAAA => {
                    let want_v4 = q.qtype == dns::A;
                    let ans: Vec<Record> = ips
                        .into_iter()
                        .filter(|ip| ip.is_ipv4() == want_v4)
                        .map(|ip| Record {
                            name: q.name.clone(),
                            rtype: q.qtype,
                            ttl,
                            data: Data::Ip(ip),
                        })
                        .collect();
                    Some(if ans.is_empty() {
                        nodata()
                    } else {
                        dns::reply(q, dns::NOERROR, true, &ans, &[], &[])
                    })
                }
                dns::SRV => {
                    let ports: Vec<u16> = svc["spec"]["ports"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|p| p["port"].as_u64().and_then(|n| u16::try_from(n).ok()))
                        .collect();
                    Some(srv_reply(q, ttl, &q.name, &ports, &ips))
                }
                _ => Some(nodata()),
            }
        }
        [port, proto, name, ns, "svc"] if port.starts_with('_') && proto.starts_with('_') => {
            let Some(svc) = find(ns, name) else {
                return Some(nx());
            };
            let (pn, pr) = (&port[1..], proto[1..].to_uppercase());
            let ports: Vec<u16> = svc["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| {
                    p["name"].as_str().unwrap_or("") == pn
                        && p["protocol"].as_str().unwrap_or("TCP") == pr
                })
                .filter_map(|p| p["port"].as_u64().and_then(|n| u16::try_from(n).ok()))
                .collect();
            if ports.is_empty() {
                return Some(nx());
            }
            if q.qtype != dns::SRV {
                return Some(nodata());
            }
            let target = format!("{name}.{ns}.svc.{zone}");
            Some(srv_reply(q, ttl, &target, &ports, &service_ips(view, svc)))
        }
        [ip, _ns, "pod"] if k.pods_insecure => {
            let addr: Option<IpAddr> = ip.replace('-', ".").parse().ok();
            match (addr, q.qtype) {
                (Some(a), dns::A) if a.is_ipv4() => Some(dns::reply(
                    q,
                    dns::NOERROR,
                    true,
                    &[Record {
                        name: q.name.clone(),
                        rtype: dns::A,
                        ttl,
                        data: Data::Ip(a),
                    }],
                    &[],
                    &[],
                )),
                (Some(_), _) => Some(nodata()),
                (None, _) => Some(nx()),
            }
        }
        _ => Some(nx()),
    }
}

fn srv_reply(q: &Query, ttl: u32, target: &str, ports: &[u16], ips: &[IpAddr]) -> Vec<u8> {
    let weight = u16::try_from(100 / ports.len().max(1)).unwrap_or(100);
    let ans: Vec<Record> = ports
        .iter()
        .map(|p| Record {
            name: q.name.clone(),
            rtype: dns::SRV,
            ttl,
            data: Data::Srv {
                priority: 0,
                weight,
                port: *p,
                target: target.to_string(),
            },
        })
        .collect();
    let extra: Vec<Record> = ips
        .iter()
        .filter(|ip| ip.is_ipv4())
        .map(|ip| Record {
            name: target.to_string(),
            rtype: dns::A,
            ttl,
            data: Data::Ip(*ip),
        })
        .collect();
    dns::reply(q, dns::NOERROR, true, &ans, &[], &extra)
}

/// PTR for a Service's ClusterIP.
fn kube_ptr(k: &KubeSetup, view: &ServiceView, q: &Query) -> Option<Vec<u8>> {
    let rel = q.name.strip_suffix("in-addr.arpa.")?.trim_end_matches('.');
    let mut octets: Vec<&str> = rel.split('.').collect();
    octets.reverse();
    let ip = octets.join(".");
    let cluster_zone = k.zones.iter().find(|z| !z.ends_with("arpa."))?;
    let svc = view
        .services
        .iter()
        .find(|s| s["spec"]["clusterIP"].as_str() == Some(ip.as_str()))?;
    let target = format!(
        "{}.{}.svc.{cluster_zone}",
        svc["metadata"]["name"].as_str().unwrap_or(""),
        svc["metadata"]["namespace"].as_str().unwrap_or("")
    );
    Some(dns::reply(
        q,
        dns::NOERROR,
        true,
        &[Record {
            name: q.name.clone(),
            rtype: dns::PTR,
            ttl: k.ttl,
            data: Data::Name(target),
        }],
        &[],
        &[],
    ))
}

fn answer(s: &Setup, st: &State, q: &Query) -> Answer {
    if let Some(k) = &s.kube
        && let Some(zone) = k
            .zones
            .iter()
            .filter(|z| in_zone(&q.name, z))
            .max_by_key(|z| z.len())
    {
        let guard = st.view.read().ok();
        let Some(view) = guard.as_ref().and_then(|g| g.as_ref()) else {
            return Answer::Reply(dns::reply(q, dns::SERVFAIL, false, &[], &[], &[]));
        };
        let found = if zone.ends_with("arpa.") {
            kube_ptr(k, view, q)
        } else {
            kube_answer(k, zone, view, q)
        };
        let falls = k
            .fallthrough
            .as_ref()
            .is_some_and(|f| f.is_empty() || f.iter().any(|z| in_zone(&q.name, z)));
        match found {
            Some(r) if !(falls && dns::parse_reply(&r).is_ok_and(|p| p.rcode == dns::NXDOMAIN)) => {
                return Answer::Reply(r);
            }
            None if !falls => {
                return Answer::Reply(dns::reply(
                    q,
                    dns::NXDOMAIN,
                    true,
                    &[],
                    &[soa(zone, k.ttl)],
                    &[],
                ));
            }
            _ => {}
        }
    }
    if s.forward
        .as_ref()
        .is_some_and(|f| in_zone(&q.name, &f.from))
    {
        return Answer::Forward;
    }
    Answer::Reply(dns::reply(q, dns::REFUSED, false, &[], &[], &[]))
}

fn forward(f: &ForwardSetup, msg: &[u8]) -> Option<Vec<u8>> {
    for up in &f.to {
        let bind = if up.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
        let Ok(sock) = UdpSocket::bind(bind) else {
            continue;
        };
        let _ = sock.set_read_timeout(Some(Duration::from_secs(2)));
        if sock.send_to(msg, up).is_err() {
            continue;
        }
        let mut buf = vec![0u8; 65535];
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            buf.truncate(n);
            return Some(buf);
        }
    }
    None
}

fn handle(s: &Setup, st: &State, msg: &[u8]) -> Option<Vec<u8>> {
    let q = dns::parse_query(msg).ok()?;
    match answer(s, st, &q) {
        Answer::Reply(r) => Some(r),
        Answer::Forward => {
            let f = s.forward.as_ref()?;
            Some(forward(f, msg).unwrap_or_else(|| {
                log(
                    "ERROR",
                    &format!(
                        "plugin/errors: 2 {} {}: read udp: i/o timeout",
                        q.name,
                        dns::type_name(q.qtype)
                    ),
                );
                dns::reply(&q, dns::SERVFAIL, false, &[], &[], &[])
            }))
        }
    }
}

fn serve_udp(sock: UdpSocket, s: Arc<Setup>, st: Arc<State>) {
    let sock = Arc::new(sock);
    let mut buf = vec![0u8; 65535];
    loop {
        let Ok((n, peer)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let msg = buf[..n].to_vec();
        let (s, st, sock) = (s.clone(), st.clone(), sock.clone());
        std::thread::spawn(move || {
            if let Some(r) = handle(&s, &st, &msg) {
                let _ = sock.send_to(&r, peer);
            }
        });
    }
}

fn serve_tcp_conn(mut c: TcpStream, s: &Setup, st: &State) {
    let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
    loop {
        let mut len = [0u8; 2];
        if c.read_exact(&mut len).is_err() {
            return;
        }
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if c.read_exact(&mut msg).is_err() {
            return;
        }
        let Some(r) = handle(s, st, &msg) else { return };
        let l = u16::try_from(r.len()).unwrap_or(u16::MAX).to_be_bytes();
        if c.write_all(&l).and_then(|()| c.write_all(&r)).is_err() {
            return;
        }
    }
}

fn serve_tcp(l: TcpListener, s: Arc<Setup>, st: Arc<State>) {
    for c in l.incoming().flatten() {
        let (s, st) = (s.clone(), st.clone());
        std::thread::spawn(move || serve_tcp_conn(c, &s, &st));
    }
}

fn kube_client(k: &KubeSetup) -> Result<Client, String> {
    let mut c = match &k.kubeconfig {
        Some(p) => Client::from_kubeconfig(p),
        None => Client::in_cluster(),
    }
    .map_err(|e| format!("plugin/kubernetes: {e}"))?;
    if let Some(ep) = &k.endpoint {
        c.server = ep.trim_end_matches('/').to_string();
    }
    Ok(c)
}

fn http_server(
    rt: &tokio::runtime::Runtime,
    addr: SocketAddr,
    handler: crate::server::Handler,
) -> Result<(), String> {
    let fd = reuseport_socket(addr, true)?;
    let std_l = TcpListener::from(fd);
    std_l.set_nonblocking(true).map_err(|e| e.to_string())?;
    let _guard = rt.enter();
    let l = tokio::net::TcpListener::from_std(std_l).map_err(|e| e.to_string())?;
    rt.spawn(crate::server::serve(l, None, handler));
    Ok(())
}

fn random_u64() -> u64 {
    u64::from_str_radix(&crate::common::random_hex(15), 16).unwrap_or(1)
}

pub fn main(args: &[String]) {
    let mut conf = "Corefile".to_string();
    let mut dns_port: u16 = 53;
    let mut i = 0;
    while i < args.len() {
        let a = args[i].trim_start_matches('-');
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (a, None),
        };
        i += 1;
        let mut value = || {
            inline.clone().or_else(|| {
                i += 1;
                args.get(i - 1).cloned()
            })
        };
        match name {
            "conf" => conf = value().unwrap_or_else(|| fatal("flag needs an argument: -conf")),
            "dns.port" => {
                dns_port = value()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| fatal("invalid value for flag -dns.port"));
            }
            "pidfile" => {
                let _ = value();
            }
            "quiet" | "plugins" => {}
            "version" => {
                println!("CoreDNS-{}", version());
                println!("linux/amd64, go1.21.11, capstan-standin");
                std::process::exit(0);
            }
            _ => {
                eprintln!("flag provided but not defined: -{name}");
                eprintln!("Usage of /coredns:");
                std::process::exit(2);
            }
        }
    }
    let text = std::fs::read_to_string(&conf)
        .unwrap_or_else(|e| fatal(&format!("open {conf}: {}", go_err(&e))));
    let blocks = parse_corefile(&text, &conf).unwrap_or_else(|e| fatal(&e));
    let setups: Vec<Setup> = blocks
        .iter()
        .map(|b| setup_block(b, &conf, dns_port))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| fatal(&e));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| fatal(&e.to_string()));
    let mut ready_flags: Vec<Arc<State>> = Vec::new();
    let mut loops: Vec<(IpAddr, u16, String)> = Vec::new();
    for s in setups {
        let s = Arc::new(s);
        let st = Arc::new(State {
            view: RwLock::new(None),
        });
        let ips = listen_ips(&s);
        let mut sockets = Vec::new();
        for ip in &ips {
            let addr = SocketAddr::new(*ip, s.port);
            let udp = UdpSocket::from(reuseport_socket(addr, false).unwrap_or_else(|e| fatal(&e)));
            let tcp = TcpListener::from(reuseport_socket(addr, true).unwrap_or_else(|e| fatal(&e)));
            sockets.push((udp, tcp));
        }
        if let Some(k) = &s.kube {
            let client = kube_client(k).unwrap_or_else(|e| fatal(&e));
            let st2 = st.clone();
            std::thread::spawn(move || {
                let mut logged = String::new();
                loop {
                    match ServiceView::fetch(&client) {
                        Ok(v) => {
                            if let Ok(mut g) = st2.view.write() {
                                *g = Some(v);
                            }
                            logged.clear();
                        }
                        Err(e) if e != logged => {
                            log("ERROR", &format!("plugin/kubernetes: Failed to list: {e}"));
                            logged = e;
                        }
                        Err(_) => {}
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            });
            ready_flags.push(st.clone());
        }
        if let Some(h) = &s.health {
            let handler: crate::server::Handler = Arc::new(|req| {
                if req.path == "/health" {
                    crate::server::Response::text(200, "OK")
                } else {
                    crate::server::Response::text(404, "404 page not found\n")
                }
            });
            http_servers(&rt, "health", h, &ips, &handler);
        }
        if let Some(p) = &s.prometheus {
            let v = version();
            let handler: crate::server::Handler = Arc::new(move |req| {
                if req.path == "/metrics" {
                    crate::server::Response::text(
                        200,
                        &format!(
                            "coredns_build_info{{goversion=\"go1.21.11\",revision=\"capstan-standin\",version=\"{v}\"}} 1\n"
                        ),
                    )
                } else {
                    crate::server::Response::text(404, "404 page not found\n")
                }
            });
            http_servers(&rt, "prometheus", p, &ips, &handler);
        }
        if let Some(r) = &s.ready {
            let has_kube = s.kube.is_some();
            let st_r = st.clone();
            let handler: crate::server::Handler = Arc::new(move |req| {
                if req.path != "/ready" {
                    return crate::server::Response::text(404, "404 page not found\n");
                }
                let synced = !has_kube || st_r.view.read().is_ok_and(|v| v.is_some());
                if synced {
                    crate::server::Response::text(200, "OK")
                } else {
                    crate::server::Response::text(503, "kubernetes")
                }
            });
            http_servers(&rt, "ready", r, &ips, &handler);
        }
        for z in &s.zones {
            println!("{z}:{}", s.port);
        }
        for (udp, tcp) in sockets {
            let (s1, st1) = (s.clone(), st.clone());
            std::thread::spawn(move || serve_udp(udp, s1, st1));
            let (s2, st2) = (s.clone(), st.clone());
            std::thread::spawn(move || serve_tcp(tcp, s2, st2));
        }
        if s.loop_detect
            && let Some(f) = &s.forward
            && let Some(up) = f.to.iter().find(|a| a.ip().is_loopback())
        {
            let zone = s.zones.first().cloned().unwrap_or_else(|| ".".into());
            loops.push((up.ip(), s.port, zone));
        }
    }
    let digest = ring::digest::digest(&ring::digest::SHA512, text.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    log(
        "INFO",
        &format!("plugin/reload: Running configuration SHA512 = {hex}"),
    );
    println!("CoreDNS-{}", version());
    println!("linux/amd64, go1.21.11, capstan-standin");
    // In a pod's own network namespace a loopback upstream is the pod itself: the loop
    // plugin's probe, sent once the servers are up, comes straight back and CoreDNS stops.
    if let Some((ip, port, zone)) = loops.first() {
        let src = 32768 + random_u64() % 28000;
        log(
            "FATAL",
            &format!(
                "plugin/loop: Loop ({ip}:{src} -> :{port}) detected for zone {zone:?}, see https://coredns.io/plugins/loop#troubleshooting. Query: \"HINFO {}.{}.{}\"",
                random_u64() % 10_000_000_000_000_000_000,
                random_u64() % 10_000_000_000_000_000_000,
                if zone == "." { "" } else { zone.as_str() }
            ),
        );
        std::process::exit(1);
    }
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let waiting = ready_flags
            .iter()
            .any(|s| s.view.read().is_ok_and(|v| v.is_none()));
        if waiting {
            log("INFO", "plugin/ready: Still waiting on: \"kubernetes\"");
        }
    }
}

/// The CoreDNS version: the stamp's, without the `v` (`1.11.3`).
fn version() -> String {
    crate::version::current().map_or_else(
        |_| "1.11.3".into(),
        |v| v.trim_start_matches('v').to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPSTAN: &str = ".:53 {\n    errors\n    health {\n       lameduck 5s\n    }\n    ready\n    kubernetes cluster.local in-addr.arpa ip6.arpa {\n       pods insecure\n       fallthrough in-addr.arpa ip6.arpa\n       ttl 30\n    }\n    prometheus :9153\n    forward . 192.0.2.53 {\n       max_concurrent 1000\n    }\n    cache 30 {\n       disable success cluster.local\n       disable denial cluster.local\n    }\n    loop\n    reload\n    loadbalance\n}\n";

    #[test]
    fn capstans_corefile() {
        let b = parse_corefile(CAPSTAN, "/etc/coredns/Corefile").unwrap();
        assert_eq!(b.len(), 1);
        let s = setup_block(&b[0], "/etc/coredns/Corefile", 53).unwrap();
        assert_eq!(s.zones, vec![".".to_string()]);
        assert_eq!(s.port, 53);
        let k = s.kube.unwrap();
        assert_eq!(
            k.zones,
            vec!["cluster.local.", "in-addr.arpa.", "ip6.arpa."]
        );
        assert_eq!(k.ttl, 30);
        assert!(k.pods_insecure);
        assert_eq!(
            s.forward.unwrap().to,
            vec!["192.0.2.53:53".parse().unwrap()]
        );
        assert!(s.loop_detect);
        assert_eq!(s.prometheus.as_deref(), Some(":9153"));
    }

    #[test]
    fn unknown_directive_and_property() {
        let e = parse_corefile(
            ".:53 {\n    errors\n    bogus on\n}\n",
            "/etc/coredns/Corefile",
        )
        .unwrap_err();
        assert_eq!(
            e,
            "/etc/coredns/Corefile:3 - Error during parsing: Unknown directive 'bogus'"
        );
        let b = parse_corefile(
            ".:53 {\n    kubernetes cluster.local {\n       frobnicate\n    }\n}\n",
            "C",
        )
        .unwrap();
        let e = setup_block(&b[0], "C", 53).unwrap_err();
        assert_eq!(
            e,
            "plugin/kubernetes: C:3 - Error during parsing: unknown property 'frobnicate'"
        );
    }

    #[test]
    fn kubernetes_answers() {
        let view = ServiceView {
            services: vec![serde_json::json!({
                "metadata": {"namespace": "default", "name": "web"},
                "spec": {"clusterIP": "10.96.0.50", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
            })],
            slices: vec![],
        };
        let k = KubeSetup {
            zones: vec!["cluster.local.".into()],
            ttl: 5,
            ..KubeSetup::default()
        };
        let q = |n: &str, t: u16| dns::parse_query(&dns::build_query(1, n, t)).unwrap();
        let r = dns::parse_reply(
            &kube_answer(
                &k,
                "cluster.local.",
                &view,
                &q("web.default.svc.cluster.local.", dns::A),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(r.rcode, dns::NOERROR);
        assert_eq!(r.answers[0].data, Data::Ip("10.96.0.50".parse().unwrap()));
        let r = dns::parse_reply(
            &kube_answer(
                &k,
                "cluster.local.",
                &view,
                &q("nope.default.svc.cluster.local.", dns::A),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(r.rcode, dns::NXDOMAIN);
        let r = dns::parse_reply(
            &kube_answer(
                &k,
                "cluster.local.",
                &view,
                &q("_http._tcp.web.default.svc.cluster.local.", dns::SRV),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            r.answers[0].data,
            Data::Srv {
                priority: 0,
                weight: 100,
                port: 80,
                target: "web.default.svc.cluster.local.".into()
            }
        );
    }
}
