//! The addons gate: "the cluster is up" means its DNS and Service routing work.
//!
//! One exec on the first control plane reads every object of the addon manifests
//! (`kubectl get -f`), the pods, and asks the cluster DNS through the kube-dns Service
//! address for `kubernetes.default.svc.<domain>` (DNS over TCP with bash's /dev/tcp: no tool
//! beyond bash, and the query crosses kube-proxy's Service rules and CoreDNS's kubernetes
//! plugin). Pure parsers below judge the answer, so fixtures test them without SSH.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::Duration;

use serde_json::Value;

use super::cluster::{ClusterRun, Stop, wait_for};
use super::gates;

/// Where the addons role puts its manifests.
pub const ADDONS_DIR: &str = "/etc/kubernetes/addons/";
/// How long the addons get to roll out and answer, by default (`--addons-timeout`).
pub const ADDONS_TIMEOUT_SECS: u64 = 180;
pub const ADDONS_TIMEOUT: Duration = Duration::from_secs(ADDONS_TIMEOUT_SECS);

const SECTION: &str = "::capstan-gate::";
/// A fixed query id: one query per connection, so it only tells our answer from garbage.
const QUERY_ID: u16 = 0x6361;

/// The gate's script: objects, pods, then the DNS answer as hex bytes.
pub fn script(dns_ip: &str, name: &str) -> String {
    format!(
        "{objects}\necho '{SECTION} pods'\n{pods}\n{dns}",
        objects = gates::kubectl(None, &format!("get -f {ADDONS_DIR} -o json")),
        pods = gates::kubectl(None, "get pods -A -o json"),
        dns = dns_script(dns_ip, 53, name),
    )
}

/// Asks `ip:port` over TCP for `name`; prints the answer as hex bytes (`od`), then its
/// status: 3 no connection, 4 closed without an answer, 124 no answer within 5 s.
fn dns_script(ip: &str, port: u16, name: &str) -> String {
    let query = tcp_query(QUERY_ID, name);
    let printf = query.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "\\{b:03o}");
        s
    });
    format!(
        "echo '{SECTION} dns'\n\
         timeout 5 bash -c 'exec 3<>/dev/tcp/{ip}/{port} || exit 3; printf \"{printf}\" >&3; \
         set -- $(head -c 2 <&3 | od -An -tu1); [ $# = 2 ] || exit 4; \
         head -c $(( $1 * 256 + $2 )) <&3 | od -An -tx1 -v' 2>&1; echo \"{SECTION} dns-exit $?\""
    )
}

/// A DNS query for `name` (type A, class IN, recursion desired), framed for TCP.
pub fn tcp_query(id: u16, name: &str) -> Vec<u8> {
    let mut msg = Vec::new();
    msg.extend(id.to_be_bytes());
    msg.extend([0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        msg.push(u8::try_from(label.len()).unwrap_or(63).min(63));
        msg.extend(label.bytes().take(63));
    }
    msg.extend([0, 0, 1, 0, 1]);
    let mut out = u16::try_from(msg.len())
        .unwrap_or(u16::MAX)
        .to_be_bytes()
        .to_vec();
    out.extend(msg);
    out
}

/// The A records of a DNS answer (the message without its TCP length), or what is wrong.
pub fn parse_answer(msg: &[u8], id: u16) -> Result<Vec<Ipv4Addr>, String> {
    let short = || "the answer is cut short".to_string();
    if msg.len() < 12 {
        return Err(short());
    }
    if u16::from_be_bytes([msg[0], msg[1]]) != id {
        return Err("the answer is not for our query (id differs)".into());
    }
    let rcode = msg[3] & 0x0f;
    match rcode {
        0 => {}
        2 => return Err("SERVFAIL".into()),
        3 => return Err("NXDOMAIN".into()),
        5 => return Err("REFUSED".into()),
        n => return Err(format!("rcode {n}")),
    }
    let qd = u16::from_be_bytes([msg[4], msg[5]]);
    let an = u16::from_be_bytes([msg[6], msg[7]]);
    let mut at = 12;
    let skip_name = |mut at: usize| -> Result<usize, String> {
        loop {
            let len = *msg.get(at).ok_or_else(short)?;
            if len & 0xc0 == 0xc0 {
                return Ok(at + 2);
            }
            at += 1 + usize::from(len);
            if len == 0 {
                return Ok(at);
            }
        }
    };
    for _ in 0..qd {
        at = skip_name(at)? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..an {
        at = skip_name(at)?;
        let head = msg.get(at..at + 10).ok_or_else(short)?;
        let (kind, class) = (
            u16::from_be_bytes([head[0], head[1]]),
            u16::from_be_bytes([head[2], head[3]]),
        );
        let len = usize::from(u16::from_be_bytes([head[8], head[9]]));
        let data = msg.get(at + 10..at + 10 + len).ok_or_else(short)?;
        if kind == 1 && class == 1 && len == 4 {
            out.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        at += 10 + len;
    }
    if out.is_empty() {
        return Err("no A record in the answer".into());
    }
    Ok(out)
}

/// What the gate's script printed, split.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Output {
    pub objects: String,
    pub pods: String,
    pub dns: String,
    pub dns_exit: Option<i32>,
}

pub fn split(stdout: &str) -> Output {
    let mut out = Output::default();
    let mut part = 0;
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix(SECTION) {
            match rest.trim() {
                "pods" => part = 1,
                "dns" => part = 2,
                x => {
                    out.dns_exit = x
                        .strip_prefix("dns-exit ")
                        .and_then(|s| s.trim().parse().ok());
                    part = 3;
                }
            }
            continue;
        }
        let target = match part {
            0 => &mut out.objects,
            1 => &mut out.pods,
            2 => &mut out.dns,
            _ => continue,
        };
        target.push_str(line);
        target.push('\n');
    }
    out
}

/// The bytes of `od -An -tx1` output.
fn hex_bytes(text: &str) -> Option<Vec<u8>> {
    text.split_whitespace()
        .map(|h| u8::from_str_radix(h, 16).ok())
        .collect()
}

/// The DNS part: the answer's A records, or why there is none.
pub fn dns_result(out: &Output) -> Result<Vec<Ipv4Addr>, String> {
    let text = out.dns.trim();
    match out.dns_exit {
        Some(0) => {}
        Some(124) => return Err("no answer within 5 s".into()),
        Some(3) => {
            return Err(format!(
                "cannot connect: {}",
                text.lines().last().unwrap_or("refused")
            ));
        }
        Some(4) => return Err("the connection closed without an answer".into()),
        other => {
            return Err(format!(
                "the query failed ({}): {}",
                other.map_or("no status".into(), |s| format!("exit {s}")),
                text.lines().last().unwrap_or("")
            ));
        }
    }
    let bytes = hex_bytes(text).ok_or_else(|| format!("unexpected output: {text}"))?;
    parse_answer(&bytes, QUERY_ID)
}

/// A pod that keeps a rollout from completing, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodProblem {
    pub namespace: String,
    pub pod: String,
    pub container: Option<String>,
    /// `CrashLoopBackOff (3 restarts)`, `Pending`, `not Ready`.
    pub state: String,
    /// The container has exited before: its previous log tells why.
    pub restarted: bool,
}

/// The rollout state of every DaemonSet and Deployment of the manifests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rollout {
    /// What is not there yet, in words (`DaemonSet kube-system/kube-proxy: 2 of 3 updated`).
    pub waiting: Vec<String>,
    /// The pods behind it.
    pub pods: Vec<PodProblem>,
}

/// Judges the objects of the manifests and the pods: each DaemonSet rolled out on the
/// `nodes` (updated, available, current generation, the manifests' images on its pods),
/// each Deployment's replicas updated and available with their pods Ready.
pub fn rollout(objects: &str, pods: &str, nodes: usize) -> Result<Rollout, String> {
    let parse = |t: &str, what: &str| -> Result<Value, String> {
        serde_json::from_str(t.trim()).map_err(|e| {
            format!(
                "unexpected kubectl output for {what} ({e}): {}",
                gates::first_line(t)
            )
        })
    };
    let objects = parse(objects, "the addon objects")?;
    let pods = parse(pods, "the pods")?;
    let list = |v: &Value| v["items"].as_array().cloned().unwrap_or_default();
    let pods = list(&pods);
    let mut r = Rollout::default();
    for o in list(&objects) {
        let kind = o["kind"].as_str().unwrap_or("");
        if kind != "DaemonSet" && kind != "Deployment" {
            continue;
        }
        let ns = o["metadata"]["namespace"].as_str().unwrap_or("default");
        let name = o["metadata"]["name"].as_str().unwrap_or("");
        let st = &o["status"];
        let n = |k: &str| st[k].as_u64().unwrap_or(0);
        let generation = o["metadata"]["generation"].as_u64().unwrap_or(0);
        let mut waiting = Vec::new();
        if st["observedGeneration"].as_u64().unwrap_or(0) < generation {
            waiting.push("its controller has not seen the current spec".to_string());
        }
        let want = if kind == "DaemonSet" {
            let desired = n("desiredNumberScheduled");
            if desired < nodes as u64 {
                waiting.push(format!("scheduled on {desired} of {nodes} nodes"));
            }
            for (k, what) in [
                ("updatedNumberScheduled", "updated"),
                ("numberAvailable", "available"),
            ] {
                if n(k) < desired {
                    waiting.push(format!("{} of {desired} {what}", n(k)));
                }
            }
            desired
        } else {
            let want = o["spec"]["replicas"].as_u64().unwrap_or(1);
            for (k, what) in [
                ("updatedReplicas", "updated"),
                ("availableReplicas", "available"),
            ] {
                if n(k) < want {
                    waiting.push(format!("{} of {want} {what}", n(k)));
                }
            }
            want
        };
        // Its pods: those its selector matches in its namespace.
        let selector = o["spec"]["selector"]["matchLabels"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let images: Vec<&str> = o["spec"]["template"]["spec"]["containers"]
            .as_array()
            .map(|cs| cs.iter().filter_map(|c| c["image"].as_str()).collect())
            .unwrap_or_default();
        let mine: Vec<&Value> = pods
            .iter()
            .filter(|p| {
                p["metadata"]["namespace"].as_str() == Some(ns)
                    && p["metadata"]["deletionTimestamp"].is_null()
                    && !selector.is_empty()
                    && selector
                        .iter()
                        .all(|(k, v)| p["metadata"]["labels"].get(k) == Some(v))
            })
            .collect();
        let mut ready = 0u64;
        for p in &mine {
            let ok = gates::is_ready(p);
            let at_image = p["spec"]["containers"].as_array().is_some_and(|cs| {
                cs.iter()
                    .all(|c| c["image"].as_str().is_some_and(|i| images.contains(&i)))
            });
            if ok && at_image {
                ready += 1;
            } else if let Some(problem) = pod_problem(p, ok) {
                r.pods.push(problem);
            }
        }
        if ready < want {
            waiting.push(format!(
                "{ready} of {want} pods Ready at {}",
                images.join(", ")
            ));
        }
        if !waiting.is_empty() {
            r.waiting
                .push(format!("{kind} {ns}/{name}: {}", waiting.join(", ")));
        }
    }
    Ok(r)
}

fn pod_problem(p: &Value, ready: bool) -> Option<PodProblem> {
    let ns = p["metadata"]["namespace"].as_str()?.to_string();
    let pod = p["metadata"]["name"].as_str()?.to_string();
    let phase = p["status"]["phase"].as_str().unwrap_or("Pending");
    let statuses = p["status"]["containerStatuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    // The first container that is not running and ready says most.
    let bad = statuses
        .iter()
        .find(|c| !c["ready"].as_bool().unwrap_or(false));
    let Some(c) = bad else {
        return Some(PodProblem {
            namespace: ns,
            pod,
            container: None,
            state: if ready {
                "at an old image".into()
            } else {
                format!("{phase}, not Ready")
            },
            restarted: false,
        });
    };
    let restarts = c["restartCount"].as_u64().unwrap_or(0);
    let state = &c["state"];
    let mut words = if let Some(w) = state["waiting"].as_object() {
        let reason = w.get("reason").and_then(Value::as_str).unwrap_or("Waiting");
        match w.get("message").and_then(Value::as_str) {
            Some(m) if !m.is_empty() && reason != "CrashLoopBackOff" => format!("{reason}: {m}"),
            _ => reason.to_string(),
        }
    } else if let Some(t) = state["terminated"].as_object() {
        format!(
            "terminated ({})",
            t.get("reason").and_then(Value::as_str).unwrap_or("exited")
        )
    } else if state["running"].is_object() {
        "running, not Ready".to_string()
    } else {
        phase.to_string()
    };
    if restarts > 0 {
        words.push_str(&format!(
            " ({restarts} restart{})",
            if restarts == 1 { "" } else { "s" }
        ));
    }
    Some(PodProblem {
        namespace: ns,
        pod,
        container: c["name"].as_str().map(str::to_string),
        state: words,
        restarted: restarts > 0,
    })
}

/// The last line of a container's log (its previous run's when it restarted).
fn logs_script(p: &PodProblem) -> String {
    let container = p
        .container
        .as_deref()
        .map(|c| format!(" -c {}", crate::ssh::quote(c)))
        .unwrap_or_default();
    gates::kubectl(
        None,
        &format!(
            "logs -n {} {}{container} --tail=1{}",
            crate::ssh::quote(&p.namespace),
            crate::ssh::quote(&p.pod),
            if p.restarted { " --previous" } else { "" }
        ),
    )
}

/// The gate: every addon rolled out on `nodes` nodes and the cluster DNS answering for
/// the `kubernetes` Service with its address, asked on host `on` within `timeout`.
pub async fn gate(
    run: &mut ClusterRun<'_>,
    on: usize,
    nodes: usize,
    timeout: Duration,
) -> Result<(), Stop> {
    let c = &run.inventory.cluster;
    let name = format!("kubernetes.default.svc.{}", c.dns_domain);
    let dns_ip = run.prepared.computed.cluster_dns.clone();
    let want: Ipv4Addr = run
        .prepared
        .computed
        .kubernetes_service_ip
        .parse()
        .map_err(|_| Stop("the addons gate needs an IPv4 service subnet".into()))?;
    let what =
        format!("addons rolled out on {nodes} nodes, cluster DNS answering {name} at {dns_ip}");
    let script = script(&dns_ip, &name);
    let run_ref = &*run;
    let check = || {
        let script = script.clone();
        let name = name.clone();
        let dns_ip = dns_ip.clone();
        async move {
            let out = run_ref.exec(on, &script).await?;
            let parts = split(&out.stdout_text());
            let r = rollout(&parts.objects, &parts.pods, nodes)
                .map_err(|e| format!("{e} {}", out.stderr_text().trim()))?;
            let mut problems = r.waiting.clone();
            for p in r.pods.iter().take(3) {
                let mut line = format!("pod {}/{}: {}", p.namespace, p.pod, p.state);
                if p.container.is_some()
                    && let Ok(log) = run_ref.exec(on, &logs_script(p)).await
                    && let Some(last) = log
                        .stdout_text()
                        .lines()
                        .rev()
                        .find(|l| !l.trim().is_empty())
                {
                    line.push_str(&format!("; last log line: {}", last.trim()));
                }
                problems.push(line);
            }
            match dns_result(&parts) {
                Ok(ips) if ips.contains(&want) => {}
                Ok(ips) => problems.push(format!(
                    "DNS answers {name} with {} instead of {want}",
                    ips.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                Err(e) => problems.push(format!("DNS {dns_ip}:53 for {name}: {e}")),
            }
            if problems.is_empty() {
                Ok(true)
            } else {
                Err(problems.join("; "))
            }
        }
    };
    let result = wait_for(run_ref, on, timeout, check).await;
    run.record_gate(&what, result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_and_its_answer() {
        let q = tcp_query(7, "kubernetes.default.svc.cluster.local");
        assert_eq!(usize::from(u16::from_be_bytes([q[0], q[1]])), q.len() - 2);
        assert_eq!(&q[2..4], &[0, 7]);
        assert_eq!(q[14], 10); // "kubernetes"
        assert_eq!(&q[15..25], b"kubernetes");
        // The answer CoreDNS gives: the question, then an A record behind a pointer.
        let mut a = q[2..].to_vec();
        a[2] = 0x85;
        a[3] = 0x00;
        a[7] = 1;
        a.extend([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 10, 96, 0, 1]);
        assert_eq!(parse_answer(&a, 7), Ok(vec![Ipv4Addr::new(10, 96, 0, 1)]));
        assert_eq!(
            parse_answer(&a, 8).unwrap_err(),
            "the answer is not for our query (id differs)"
        );
        let mut nx = a.clone();
        nx[3] = 0x03;
        assert_eq!(parse_answer(&nx, 7).unwrap_err(), "NXDOMAIN");
        assert_eq!(
            parse_answer(&a[..a.len() - 2], 7).unwrap_err(),
            "the answer is cut short"
        );
        // What the script prints, with the gate's own query id.
        a[0..2].copy_from_slice(&QUERY_ID.to_be_bytes());
        let hex: String = a
            .chunks(16)
            .map(|l| {
                l.iter().fold(String::new(), |mut s, b| {
                    let _ = write!(s, " {b:02x}");
                    s
                }) + "\n"
            })
            .collect();
        let out = split(&format!(
            "{{\"items\": []}}\n{SECTION} pods\n{{}}\n{SECTION} dns\n{hex}{SECTION} dns-exit 0\n"
        ));
        assert_eq!(out.objects, "{\"items\": []}\n");
        assert_eq!(out.pods, "{}\n");
        assert_eq!(out.dns_exit, Some(0));
        assert_eq!(dns_result(&out), Ok(vec![Ipv4Addr::new(10, 96, 0, 1)]));
    }

    /// The script's DNS part, run here with bash against a DNS-over-TCP server on loopback
    /// that answers as CoreDNS would (and keeps the connection open, as CoreDNS does).
    #[test]
    fn the_dns_query_runs_in_bash() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut len = [0u8; 2];
            conn.read_exact(&mut len).unwrap();
            let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
            conn.read_exact(&mut q).unwrap();
            let mut a = q.clone();
            a[2] = 0x85;
            a[7] = 1;
            a.extend([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 10, 96, 0, 1]);
            let mut framed = u16::try_from(a.len()).unwrap().to_be_bytes().to_vec();
            framed.extend(a);
            conn.write_all(&framed).unwrap();
            std::thread::sleep(Duration::from_secs(2));
            q
        });
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(dns_script(
                "127.0.0.1",
                port,
                "kubernetes.default.svc.cluster.local",
            ))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let parts = split(&text);
        assert_eq!(
            dns_result(&parts),
            Ok(vec![Ipv4Addr::new(10, 96, 0, 1)]),
            "{text}"
        );
        let asked = server.join().unwrap();
        assert_eq!(
            asked,
            tcp_query(QUERY_ID, "kubernetes.default.svc.cluster.local")[2..]
        );
        // Nobody listening: named as such.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(dns_script("127.0.0.1", port, "x.cluster.local"))
            .output()
            .unwrap();
        let e = dns_result(&split(&String::from_utf8_lossy(&out.stdout))).unwrap_err();
        assert!(e.starts_with("cannot connect"), "{e}");
    }

    #[test]
    fn dns_failures_are_named() {
        let o = |dns: &str, exit| Output {
            dns: dns.into(),
            dns_exit: Some(exit),
            ..Output::default()
        };
        assert_eq!(dns_result(&o("", 124)).unwrap_err(), "no answer within 5 s");
        assert!(
            dns_result(&o("bash: connect: Connection refused\n", 3))
                .unwrap_err()
                .contains("Connection refused")
        );
        assert_eq!(
            dns_result(&o("", 4)).unwrap_err(),
            "the connection closed without an answer"
        );
    }

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!(
            "{}/tests/fixtures/addons-gate/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    #[test]
    fn a_rolled_out_cluster_passes() {
        let r = rollout(&fixture("objects.json"), &fixture("pods-ready.json"), 2).unwrap();
        assert_eq!(r, Rollout::default());
    }

    #[test]
    fn crash_loops_and_rollouts_in_progress_are_named() {
        let r = rollout(&fixture("objects.json"), &fixture("pods-crashing.json"), 2).unwrap();
        assert_eq!(
            r.waiting,
            vec![
                "DaemonSet kube-system/kube-proxy: 1 of 2 pods Ready at registry.k8s.io/kube-proxy:v1.32.5".to_string(),
                "Deployment kube-system/coredns: 1 of 2 pods Ready at registry.k8s.io/coredns/coredns:v1.11.3".to_string(),
            ]
        );
        assert_eq!(
            r.pods,
            vec![
                PodProblem {
                    namespace: "kube-system".into(),
                    pod: "kube-proxy-old".into(),
                    container: None,
                    state: "at an old image".into(),
                    restarted: false,
                },
                PodProblem {
                    namespace: "kube-system".into(),
                    pod: "coredns-b".into(),
                    container: Some("coredns".into()),
                    state: "CrashLoopBackOff (4 restarts)".into(),
                    restarted: true,
                },
            ]
        );
        assert!(
            logs_script(&r.pods[1])
                .contains("logs -n kube-system coredns-b -c coredns --tail=1 --previous")
        );
        // A DaemonSet on fewer nodes than there are.
        let r = rollout(&fixture("objects.json"), &fixture("pods-ready.json"), 3).unwrap();
        assert_eq!(
            r.waiting,
            vec!["DaemonSet kube-system/kube-proxy: scheduled on 2 of 3 nodes".to_string()]
        );
    }

    #[test]
    fn the_script_asks_through_the_service_address() {
        let s = script("10.96.0.10", "kubernetes.default.svc.cluster.local");
        assert!(s.contains("/dev/tcp/10.96.0.10/53"), "{s}");
        assert!(s.contains("get -f /etc/kubernetes/addons/ -o json"), "{s}");
        assert!(s.contains(gates::ADMIN_CONF));
    }
}
