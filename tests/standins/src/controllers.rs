//! kube-controller-manager and kube-scheduler stand-ins: leader election on a Lease in
//! kube-system, /healthz on their secure ports, and the little work the lab needs (pods for
//! Deployments/ReplicaSets/DaemonSets; binding pending pods to Ready, schedulable nodes).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::client::Api;
use crate::common::{self, log};
use crate::flags::Kind::{Bool as B, Value as V};
use crate::flags::{Kind, Parsed};
use crate::selectors::LabelSelector;
use crate::timefmt;

const SHARED: &[(&str, Kind)] = &[
    ("authentication-kubeconfig", V),
    ("authorization-kubeconfig", V),
    ("authentication-skip-lookup", B),
    ("authorization-always-allow-paths", V),
    ("bind-address", V),
    ("cert-dir", V),
    ("client-ca-file", V),
    ("kube-api-burst", V),
    ("kube-api-content-type", V),
    ("kube-api-qps", V),
    ("kubeconfig", V),
    ("leader-elect", B),
    ("leader-elect-lease-duration", V),
    ("leader-elect-renew-deadline", V),
    ("leader-elect-resource-lock", V),
    ("leader-elect-resource-name", V),
    ("leader-elect-resource-namespace", V),
    ("leader-elect-retry-period", V),
    ("master", V),
    ("permit-address-sharing", B),
    ("permit-port-sharing", B),
    ("profiling", B),
    ("requestheader-allowed-names", V),
    ("requestheader-client-ca-file", V),
    ("requestheader-extra-headers-prefix", V),
    ("requestheader-group-headers", V),
    ("requestheader-username-headers", V),
    ("secure-port", V),
    ("tls-cert-file", V),
    ("tls-cipher-suites", V),
    ("tls-min-version", V),
    ("tls-private-key-file", V),
];

const CM_ONLY: &[(&str, Kind)] = &[
    ("allocate-node-cidrs", B),
    ("cloud-provider", V),
    ("cluster-cidr", V),
    ("cluster-name", V),
    ("cluster-signing-cert-file", V),
    ("cluster-signing-key-file", V),
    ("cluster-signing-duration", V),
    ("concurrent-deployment-syncs", V),
    ("concurrent-replicaset-syncs", V),
    ("configure-cloud-routes", B),
    ("controllers", V),
    ("node-cidr-mask-size", V),
    ("node-cidr-mask-size-ipv4", V),
    ("node-cidr-mask-size-ipv6", V),
    ("node-monitor-grace-period", V),
    ("node-monitor-period", V),
    ("root-ca-file", V),
    ("service-account-private-key-file", V),
    ("service-cluster-ip-range", V),
    ("terminated-pod-gc-threshold", V),
    ("use-service-account-credentials", B),
];

const SCHED_ONLY: &[(&str, Kind)] = &[("config", V), ("write-config-to", V)];

/// A Go duration: 15s, 1m30s, 500ms, 2h.
pub fn go_duration(s: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    if s.is_empty() {
        return None;
    }
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        if c == 'm' && chars.peek() == Some(&'s') {
            unit.push('s');
            chars.next();
        }
        let n: f64 = num.parse().ok()?;
        num.clear();
        let secs = match unit.as_str() {
            "h" => n * 3600.0,
            "m" => n * 60.0,
            "s" => n,
            "ms" => n / 1000.0,
            _ => return None,
        };
        total += Duration::from_secs_f64(secs);
    }
    if !num.is_empty() {
        return if num == "0" {
            Some(Duration::ZERO)
        } else {
            None
        };
    }
    Some(total)
}

fn duration_flag(p: &Parsed, name: &str, default: u64) -> Result<Duration, String> {
    match p.get(name) {
        None => Ok(Duration::from_secs(default)),
        Some(v) => go_duration(v).ok_or_else(|| {
            format!("invalid argument {v:?} for \"--{name}\" flag: time: invalid duration {v:?}")
        }),
    }
}

struct Election {
    api: Api,
    namespace: String,
    name: String,
    identity: String,
    lease: Duration,
    renew_deadline: Duration,
    retry: Duration,
    component: &'static str,
}

impl Election {
    fn path(&self) -> String {
        format!(
            "/apis/coordination.k8s.io/v1/namespaces/{}/leases/{}",
            self.namespace, self.name
        )
    }

    fn record(&self, transitions: i64, acquire: &str) -> Value {
        json!({"holderIdentity": self.identity, "leaseDurationSeconds": self.lease.as_secs(),
               "acquireTime": acquire, "renewTime": timefmt::now_micro(), "leaseTransitions": transitions})
    }

    /// One attempt to acquire or renew; true while we hold the lease.
    fn try_acquire_or_renew(&self, observed: &mut Option<(String, Instant)>) -> bool {
        let cur = match self.api.get(&self.path()) {
            Ok(r) => r,
            Err(e) => {
                log(
                    self.component,
                    &format!(
                        "error retrieving resource lock {}/{}: {e}",
                        self.namespace, self.name
                    ),
                );
                return false;
            }
        };
        if cur.status == 404 {
            let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self.record(0, &timefmt::now_micro())});
            return match self.api.post(
                &format!(
                    "/apis/coordination.k8s.io/v1/namespaces/{}/leases",
                    self.namespace
                ),
                &lease,
            ) {
                Ok(r) if r.ok() => true,
                Ok(r) => {
                    log(
                        self.component,
                        &format!("error initially creating lease lock: {}", r.message()),
                    );
                    false
                }
                Err(e) => {
                    log(
                        self.component,
                        &format!("error initially creating lease lock: {e}"),
                    );
                    false
                }
            };
        }
        if !cur.ok() {
            log(
                self.component,
                &format!(
                    "error retrieving resource lock {}/{}: {}",
                    self.namespace,
                    self.name,
                    cur.message()
                ),
            );
            return false;
        }
        let spec = &cur.body["spec"];
        let holder = spec["holderIdentity"].as_str().unwrap_or("").to_string();
        let renew = spec["renewTime"].as_str().unwrap_or("").to_string();
        let dur = Duration::from_secs(
            spec["leaseDurationSeconds"]
                .as_u64()
                .unwrap_or(self.lease.as_secs()),
        );
        let key = format!("{holder}@{renew}");
        let changed = observed.as_ref().is_none_or(|(k, _)| *k != key);
        if changed {
            *observed = Some((key, Instant::now()));
        }
        let seen_at = observed.as_ref().map_or_else(Instant::now, |(_, t)| *t);
        let transitions = spec["leaseTransitions"].as_i64().unwrap_or(0);
        let mut lease = cur.body.clone();
        if holder == self.identity {
            let acquire = spec["acquireTime"].as_str().unwrap_or("").to_string();
            lease["spec"] = self.record(transitions, &acquire);
        } else if holder.is_empty() || seen_at.elapsed() > dur {
            lease["spec"] = self.record(transitions + 1, &timefmt::now_micro());
        } else {
            return false;
        }
        match self.api.put(&self.path(), &lease) {
            Ok(r) if r.ok() => {
                if holder != self.identity {
                    log(
                        self.component,
                        &format!(
                            "successfully acquired lease {}/{}",
                            self.namespace, self.name
                        ),
                    );
                }
                true
            }
            Ok(r) => {
                log(
                    self.component,
                    &format!("failed to update lock: {}", r.message()),
                );
                false
            }
            Err(e) => {
                log(self.component, &format!("failed to update lock: {e}"));
                false
            }
        }
    }

    fn run(self, leader: Arc<AtomicBool>) {
        log(
            self.component,
            &format!(
                "attempting to acquire leader lease {}/{}...",
                self.namespace, self.name
            ),
        );
        let mut observed = None;
        let mut last_renew: Option<Instant> = None;
        loop {
            let ok = self.try_acquire_or_renew(&mut observed);
            if ok {
                last_renew = Some(Instant::now());
                leader.store(true, Ordering::SeqCst);
            } else if leader.load(Ordering::SeqCst)
                && last_renew.is_some_and(|t| t.elapsed() > self.renew_deadline)
            {
                common::fatal(self.component, "leaderelection lost");
            }
            std::thread::sleep(self.retry);
        }
    }
}

/// Starts the health server on --bind-address:--secure-port.
fn serve_health(component: &'static str, p: &Parsed, default_port: &str) -> Result<(), String> {
    let port = p.get("secure-port").unwrap_or(default_port).to_string();
    port.parse::<u16>()
        .map_err(|e| format!("--secure-port={port}: {e}"))?;
    let bind = p.get("bind-address").unwrap_or("0.0.0.0").to_string();
    let key = match (p.get("tls-cert-file"), p.get("tls-private-key-file")) {
        (Some(c), Some(k)) => {
            crate::tls::load_pair(c, "--tls-cert-file", k, "--tls-private-key-file")?
        }
        (None, None) => crate::tls::self_signed(&["localhost".into(), "127.0.0.1".into()])?,
        _ => {
            return Err("--tls-cert-file and --tls-private-key-file must be given together".into());
        }
    };
    for f in ["client-ca-file", "requestheader-client-ca-file"] {
        if let Some(path) = p.get(f) {
            crate::tls::load_certs(path, &format!("--{f}"))?;
        }
    }
    let cfg = crate::tls::server_config(key, None)?;
    let addr = crate::server::join_host_port(&bind, &port);
    let listener = std::net::TcpListener::bind(&addr)
        .map_err(|e| format!("failed to listen on {addr} (--bind-address/--secure-port): {e}"))?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            let Ok(l) = tokio::net::TcpListener::from_std(listener) else {
                return;
            };
            crate::server::serve(
                l,
                Some(cfg),
                Arc::new(|r: crate::server::Request| match r.path.as_str() {
                    "/healthz" | "/livez" | "/readyz" | "/healthz/leaderElection" => {
                        crate::server::Response::text(200, "ok")
                    }
                    _ => crate::server::Response::text(404, "404 page not found"),
                }),
            )
            .await;
        });
    });
    log(component, &format!("serving securely on {addr}"));
    Ok(())
}

fn setup(
    component: &'static str,
    args: &[String],
    own: &[(&str, Kind)],
    default_port: &str,
) -> (Parsed, Api, Arc<AtomicBool>) {
    let specs: Vec<(&str, Kind)> = SHARED.iter().chain(own.iter()).copied().collect();
    let (p, version) = common::start(component, args, &specs);
    let run = || -> Result<(Api, Arc<AtomicBool>), String> {
        let kc_path = p.required("kubeconfig").map_err(|_| {
            "--kubeconfig is required (this stand-in has no in-cluster config)".to_string()
        })?;
        let (_, api) = crate::client::api_from_kubeconfig(kc_path, "--kubeconfig")?;
        for f in ["authentication-kubeconfig", "authorization-kubeconfig"] {
            if let Some(path) = p.get(f) {
                crate::kubeconfig::load(path, &format!("--{f}"))?;
            }
        }
        if component == "kube-controller-manager" {
            check_signing(&p)?;
        }
        if let Some(c) = p.get("config") {
            let text =
                std::fs::read_to_string(c).map_err(|e| format!("--config={c}: open {c}: {e}"))?;
            serde_yaml::from_str::<serde_yaml::Value>(&text)
                .map_err(|e| format!("--config={c}: {e}"))?;
        }
        let lease = duration_flag(&p, "leader-elect-lease-duration", 15)?;
        let renew = duration_flag(&p, "leader-elect-renew-deadline", 10)?;
        let retry = duration_flag(&p, "leader-elect-retry-period", 2)?;
        if lease <= renew {
            return Err(format!(
                "leaseDuration must be greater than renewDeadline ({lease:?} <= {renew:?})"
            ));
        }
        serve_health(component, &p, default_port)?;
        log(component, &format!("version {version}"));
        let leader = Arc::new(AtomicBool::new(false));
        if p.bool("leader-elect", true) {
            let e = Election {
                api: api.clone(),
                namespace: p
                    .get("leader-elect-resource-namespace")
                    .unwrap_or("kube-system")
                    .to_string(),
                name: p
                    .get("leader-elect-resource-name")
                    .unwrap_or(component)
                    .to_string(),
                identity: format!("{}_{}", common::hostname(), common::uid()),
                lease,
                renew_deadline: renew,
                retry,
                component,
            };
            let l = leader.clone();
            std::thread::spawn(move || e.run(l));
        } else {
            leader.store(true, Ordering::SeqCst);
        }
        Ok((api, leader))
    };
    match run() {
        Ok((api, leader)) => (p, api, leader),
        Err(e) => common::fatal(component, &e),
    }
}

fn check_signing(p: &Parsed) -> Result<(), String> {
    match (
        p.get("cluster-signing-cert-file"),
        p.get("cluster-signing-key-file"),
    ) {
        (Some(c), Some(k)) => {
            crate::tls::load_pair(
                c,
                "--cluster-signing-cert-file",
                k,
                "--cluster-signing-key-file",
            )?;
        }
        (None, None) => {}
        _ => {
            return Err(
                "--cluster-signing-cert-file and --cluster-signing-key-file must be given together"
                    .into(),
            );
        }
    }
    if let Some(f) = p.get("root-ca-file") {
        crate::tls::load_certs(f, "--root-ca-file")?;
    }
    if let Some(f) = p.get("service-account-private-key-file") {
        crate::tls::load_key(f, "--service-account-private-key-file")?;
    }
    Ok(())
}

/// A list's items, or `None` when the list failed: a failed list is never an empty one
/// (a controller that took it for one would delete what it owns).
fn items(api: &Api, path: &str) -> Option<Vec<Value>> {
    match api.get(path) {
        Ok(r) if r.ok() => r.body["items"].as_array().cloned(),
        _ => None,
    }
}

fn enc(s: &str) -> String {
    s.replace('%', "%25")
        .replace('=', "%3D")
        .replace(',', "%2C")
        .replace(' ', "%20")
        .replace('!', "%21")
}

fn node_ready(n: &Value) -> bool {
    n["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|x| x["type"] == "Ready" && x["status"] == "True")
    })
}

fn tolerates(pod: &Value, taint: &Value) -> bool {
    pod["spec"]["tolerations"].as_array().is_some_and(|ts| {
        ts.iter().any(|t| {
            let key_ok =
                t["key"].is_null() && t["operator"] == "Exists" || t["key"] == taint["key"];
            let effect_ok = t["effect"].is_null() || t["effect"] == taint["effect"];
            key_ok && effect_ok
        })
    })
}

fn fits(pod: &Value, node: &Value) -> bool {
    if !node_ready(node) || node["spec"]["unschedulable"].as_bool() == Some(true) {
        return false;
    }
    let taints_ok = node["spec"]["taints"].as_array().is_none_or(|ts| {
        ts.iter()
            .filter(|t| t["effect"] == "NoSchedule" || t["effect"] == "NoExecute")
            .all(|t| tolerates(pod, t))
    });
    let labels = &node["metadata"]["labels"];
    let selector_ok = pod["spec"]["nodeSelector"]
        .as_object()
        .is_none_or(|sel| sel.iter().all(|(k, v)| labels.get(k) == Some(v)));
    taints_ok && selector_ok
}

fn schedule_once(api: &Api) {
    let Some(pending) = items(
        api,
        &format!("/api/v1/pods?fieldSelector={}", enc("spec.nodeName=")),
    ) else {
        return;
    };
    let pending: Vec<Value> = pending
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect();
    if pending.is_empty() {
        return;
    }
    let (Some(nodes), Some(all_pods)) = (items(api, "/api/v1/nodes"), items(api, "/api/v1/pods"))
    else {
        return;
    };
    let mut load: HashMap<String, usize> = HashMap::new();
    for p in all_pods {
        if let Some(n) = p["spec"]["nodeName"].as_str() {
            *load.entry(n.to_string()).or_default() += 1;
        }
    }
    for pod in pending {
        let ns = pod["metadata"]["namespace"].as_str().unwrap_or("default");
        let name = pod["metadata"]["name"].as_str().unwrap_or("");
        let best = nodes
            .iter()
            .filter(|n| fits(&pod, n))
            .filter_map(|n| n["metadata"]["name"].as_str())
            .min_by_key(|n| load.get(*n).copied().unwrap_or(0));
        let Some(node) = best else {
            log(
                "kube-scheduler",
                &format!("0/{} nodes are available for pod {ns}/{name}", nodes.len()),
            );
            continue;
        };
        let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name, "namespace": ns},
                             "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
        match api.post(
            &format!("/api/v1/namespaces/{ns}/pods/{name}/binding"),
            &binding,
        ) {
            Ok(r) if r.ok() => {
                log(
                    "kube-scheduler",
                    &format!("successfully bound pod {ns}/{name} to {node}"),
                );
                *load.entry(node.to_string()).or_default() += 1;
            }
            Ok(r) => log(
                "kube-scheduler",
                &format!("binding {ns}/{name}: {}", r.message()),
            ),
            Err(e) => log("kube-scheduler", &format!("binding {ns}/{name}: {e}")),
        }
    }
}

pub fn scheduler_main(args: &[String]) -> ! {
    let (_p, api, leader) = setup("kube-scheduler", args, SCHED_ONLY, "10259");
    loop {
        if leader.load(Ordering::SeqCst) {
            schedule_once(&api);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn owned_by<'a>(pods: &'a [Value], uid: &str) -> Vec<&'a Value> {
    pods.iter()
        .filter(|p| {
            p["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|o| o.iter().any(|r| r["uid"] == uid && r["controller"] == true))
        })
        .collect()
}

fn controller_uid(o: &Value) -> Option<(String, String)> {
    o["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"] == true)
        .map(|r| {
            (
                r["kind"].as_str().unwrap_or("").to_string(),
                r["uid"].as_str().unwrap_or("").to_string(),
            )
        })
}

fn owner_ref(o: &Value, kind: &str, api_version: &str) -> Value {
    json!([{"apiVersion": api_version, "kind": kind, "name": o["metadata"]["name"], "uid": o["metadata"]["uid"],
            "controller": true, "blockOwnerDeletion": true}])
}

/// A short, stable name suffix from `s` (the generateName alphabet).
pub fn short_hash(s: &str) -> String {
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (0..5)
        .map(|i| ALPHA[usize::try_from((h >> (i * 8)) % ALPHA.len() as u64).unwrap_or(0)] as char)
        .collect()
}

fn fnv(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:x}", h & 0xff_ffff_ffff)
}

fn new_pod(
    owner: &Value,
    kind: &str,
    api_version: &str,
    node: Option<&str>,
    extra_labels: &Value,
) -> Value {
    let tpl = &owner["spec"]["template"];
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": format!("{}-", owner["metadata"]["name"].as_str().unwrap_or("pod")),
                     "namespace": owner["metadata"]["namespace"], "labels": tpl["metadata"]["labels"].clone(),
                     "ownerReferences": owner_ref(owner, kind, api_version)},
        "spec": tpl["spec"].clone()});
    if let (Some(l), Some(x)) = (
        pod["metadata"]["labels"].as_object_mut(),
        extra_labels.as_object(),
    ) {
        for (k, v) in x {
            l.insert(k.clone(), v.clone());
        }
    }
    if let Some(n) = node {
        pod["spec"]["nodeName"] = json!(n);
    }
    pod
}

fn delete(api: &Api, path: &str) {
    if let Err(e) = api.delete(path) {
        log("kube-controller-manager", &format!("delete {path}: {e}"));
    }
}

fn controllers_once(api: &Api) {
    const CM: &str = "kube-controller-manager";
    // Every list first: a round with a failed list (an API server restarting) is skipped.
    let (Some(pods), Some(deployments), Some(mut rsets), Some(nodes), Some(daemonsets)) = (
        items(api, "/api/v1/pods"),
        items(api, "/apis/apps/v1/deployments"),
        items(api, "/apis/apps/v1/replicasets"),
        items(api, "/api/v1/nodes"),
        items(api, "/apis/apps/v1/daemonsets"),
    ) else {
        return;
    };
    // Deployments -> a ReplicaSet per template, rolled as the strategy says.
    for d in &deployments {
        let ns = d["metadata"]["namespace"].as_str().unwrap_or("default");
        let dname = d["metadata"]["name"].as_str().unwrap_or("");
        let uid = d["metadata"]["uid"].as_str().unwrap_or("");
        let hash = fnv(&d["spec"]["template"].to_string());
        let want = format!("{dname}-{hash}");
        let mine: Vec<Value> = rsets
            .iter()
            .filter(|r| controller_uid(r).is_some_and(|(_, u)| u == uid))
            .cloned()
            .collect();
        let new_rs = mine.iter().find(|r| r["metadata"]["name"] == want.as_str());
        let olds: Vec<&Value> = mine
            .iter()
            .filter(|r| r["metadata"]["name"] != want.as_str())
            .collect();
        let plan = rollout(d, new_rs, &olds, &pods);
        let rs_path = |n: &str| format!("/apis/apps/v1/namespaces/{ns}/replicasets/{n}");
        for (rname, n) in &plan.scale {
            log(CM, &format!("scaling replicaset {ns}/{rname} to {n}"));
            let _ = api.merge_patch(&rs_path(rname), &json!({"spec": {"replicas": n}}));
        }
        if new_rs.is_none() {
            let mut tpl = d["spec"]["template"].clone();
            tpl["metadata"]["labels"]["pod-template-hash"] = json!(hash);
            let mut sel = d["spec"]["selector"].clone();
            sel["matchLabels"]["pod-template-hash"] = json!(hash);
            let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": want, "namespace": ns, "labels": tpl["metadata"]["labels"].clone(),
                             "ownerReferences": owner_ref(d, "Deployment", "apps/v1")},
                "spec": {"replicas": plan.new_replicas, "selector": sel, "template": tpl}});
            match api.post(&format!("/apis/apps/v1/namespaces/{ns}/replicasets"), &rs) {
                Ok(r) if r.ok() => rsets.push(r.body),
                Ok(r) => log(
                    CM,
                    &format!("creating replicaset {ns}/{want}: {}", r.message()),
                ),
                Err(e) => log(CM, &format!("creating replicaset {ns}/{want}: {e}")),
            }
        }
        let all: Vec<&Value> = rsets
            .iter()
            .filter(|r| controller_uid(r).is_some_and(|(_, u)| u == uid))
            .flat_map(|r| owned_by(&pods, r["metadata"]["uid"].as_str().unwrap_or("")))
            .collect();
        let updated = rsets
            .iter()
            .filter(|r| r["metadata"]["name"] == want.as_str())
            .flat_map(|r| owned_by(&pods, r["metadata"]["uid"].as_str().unwrap_or("")))
            .count();
        let st = deployment_status(d, &want, &all, updated);
        if d["status"] != st["status"] {
            let _ = api.merge_patch(
                &format!("/apis/apps/v1/namespaces/{ns}/deployments/{dname}/status"),
                &st,
            );
        }
    }
    // ReplicaSets -> pods.
    let dep_uids: Vec<&str> = deployments
        .iter()
        .filter_map(|d| d["metadata"]["uid"].as_str())
        .collect();
    for r in &rsets {
        let ns = r["metadata"]["namespace"].as_str().unwrap_or("default");
        let rname = r["metadata"]["name"].as_str().unwrap_or("");
        if controller_uid(r)
            .is_some_and(|(k, u)| k == "Deployment" && !dep_uids.contains(&u.as_str()))
        {
            delete(
                api,
                &format!("/apis/apps/v1/namespaces/{ns}/replicasets/{rname}"),
            );
            continue;
        }
        let uid = r["metadata"]["uid"].as_str().unwrap_or("");
        let owned = owned_by(&pods, uid);
        let want = usize::try_from(r["spec"]["replicas"].as_i64().unwrap_or(1).max(0)).unwrap_or(0);
        for _ in owned.len()..want {
            let pod = new_pod(r, "ReplicaSet", "apps/v1", None, &json!({}));
            match api.post(&format!("/api/v1/namespaces/{ns}/pods"), &pod) {
                Ok(x) if x.ok() => log(
                    CM,
                    &format!(
                        "created pod {ns}/{} for replicaset {rname}",
                        x.body["metadata"]["name"].as_str().unwrap_or("")
                    ),
                ),
                Ok(x) => log(
                    CM,
                    &format!("creating pod for {ns}/{rname}: {}", x.message()),
                ),
                Err(e) => log(CM, &format!("creating pod for {ns}/{rname}: {e}")),
            }
        }
        let mut extra: Vec<&&Value> = owned.iter().collect();
        extra.sort_by_key(|p| (p["spec"]["nodeName"].as_str().is_some(), pod_ready(p)));
        for p in extra.iter().take(owned.len().saturating_sub(want)) {
            delete(
                api,
                &format!(
                    "/api/v1/namespaces/{ns}/pods/{}",
                    p["metadata"]["name"].as_str().unwrap_or("")
                ),
            );
        }
        let ready = owned.iter().filter(|p| pod_ready(p)).count();
        if r["status"]["replicas"].as_u64() != Some(owned.len() as u64)
            || r["status"]["readyReplicas"].as_u64() != Some(ready as u64)
            || r["status"]["observedGeneration"] != r["metadata"]["generation"]
        {
            let _ = api.merge_patch(&format!("/apis/apps/v1/namespaces/{ns}/replicasets/{rname}/status"), &json!({"status": {"replicas": owned.len(), "readyReplicas": ready, "availableReplicas": ready, "fullyLabeledReplicas": owned.len(), "observedGeneration": r["metadata"]["generation"]}}));
        }
    }
    // DaemonSets -> one pod per node, rolled to a new template.
    for ds in &daemonsets {
        daemonset(api, ds, &pods, &nodes);
    }
    // Garbage collection of pods whose ReplicaSet or DaemonSet is gone.
    let live: Vec<&str> = rsets
        .iter()
        .chain(daemonsets.iter())
        .filter_map(|o| o["metadata"]["uid"].as_str())
        .collect();
    for p in &pods {
        if let Some((kind, uid)) = controller_uid(p)
            && (kind == "ReplicaSet" || kind == "DaemonSet")
            && !live.contains(&uid.as_str())
        {
            let ns = p["metadata"]["namespace"].as_str().unwrap_or("default");
            delete(
                api,
                &format!(
                    "/api/v1/namespaces/{ns}/pods/{}",
                    p["metadata"]["name"].as_str().unwrap_or("")
                ),
            );
        }
    }
}

use crate::cm_network::pod_ready;

/// A taint a DaemonSet pod must tolerate to run on a node: NoSchedule/NoExecute ones,
/// except those the DaemonSet controller tolerates on its pods' behalf.
fn daemon_tolerates(pod: &Value, node: &Value) -> bool {
    const AUTO: &[&str] = &[
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
        "node.kubernetes.io/disk-pressure",
        "node.kubernetes.io/memory-pressure",
        "node.kubernetes.io/pid-pressure",
        "node.kubernetes.io/unschedulable",
        "node.kubernetes.io/network-unavailable",
    ];
    node["spec"]["taints"].as_array().is_none_or(|ts| {
        ts.iter()
            .filter(|t| t["effect"] == "NoSchedule" || t["effect"] == "NoExecute")
            .filter(|t| !t["key"].as_str().is_some_and(|k| AUTO.contains(&k)))
            .all(|t| tolerates(pod, t))
    })
}

/// The DaemonSet controller for one DaemonSet: a pod (of the current template, labelled
/// with its `controller-revision-hash`) on every eligible node; with RollingUpdate, old
/// pods replaced at most maxUnavailable (default 1) at a time, an old one deleted only when
/// the others are available; the status fields the real controller reports.
fn daemonset(api: &Api, ds: &Value, pods: &[Value], nodes: &[Value]) {
    const CM: &str = "kube-controller-manager";
    let ns = ds["metadata"]["namespace"].as_str().unwrap_or("default");
    let name = ds["metadata"]["name"].as_str().unwrap_or("");
    let owned = owned_by(pods, ds["metadata"]["uid"].as_str().unwrap_or(""));
    let hash = fnv(&ds["spec"]["template"].to_string());
    let tpl = json!({"spec": ds["spec"]["template"]["spec"].clone()});
    let sel = ds["spec"]["template"]["spec"]["nodeSelector"].clone();
    let eligible: Vec<&str> = nodes
        .iter()
        .filter(|n| {
            sel.as_object().is_none_or(|s| {
                s.iter()
                    .all(|(k, v)| n["metadata"]["labels"].get(k) == Some(v))
            })
        })
        .filter(|n| daemon_tolerates(&tpl, n))
        .filter_map(|n| n["metadata"]["name"].as_str())
        .collect();
    let on = |node: &str| -> Vec<&Value> {
        owned
            .iter()
            .copied()
            .filter(|p| p["spec"]["nodeName"] == node)
            .collect()
    };
    let is_new = |p: &Value| p["metadata"]["labels"]["controller-revision-hash"] == hash.as_str();
    let generation = ds["metadata"]["generation"].as_i64().unwrap_or(1);
    for node in &eligible {
        if on(node).is_empty() {
            let labels = json!({"controller-revision-hash": hash, "pod-template-generation": generation.to_string()});
            let pod = new_pod(ds, "DaemonSet", "apps/v1", Some(node), &labels);
            match api.post(&format!("/api/v1/namespaces/{ns}/pods"), &pod) {
                Ok(x) if x.ok() => {
                    log(CM, &format!("created daemon pod on {node} for {ns}/{name}"));
                }
                Ok(x) => log(
                    CM,
                    &format!("creating daemon pod for {ns}/{name}: {}", x.message()),
                ),
                Err(e) => log(CM, &format!("creating daemon pod for {ns}/{name}: {e}")),
            }
        }
    }
    let pod_path = |p: &Value| {
        format!(
            "/api/v1/namespaces/{ns}/pods/{}",
            p["metadata"]["name"].as_str().unwrap_or("")
        )
    };
    for p in &owned {
        if !p["spec"]["nodeName"]
            .as_str()
            .is_some_and(|n| eligible.contains(&n))
        {
            delete(api, &pod_path(p));
        }
    }
    // Rolling update.
    let desired = eligible.len();
    let strategy = &ds["spec"]["updateStrategy"];
    if strategy["type"].as_str().unwrap_or("RollingUpdate") == "RollingUpdate" {
        let max_unavailable = match &strategy["rollingUpdate"]["maxUnavailable"] {
            Value::Null => 1,
            v => int_or_percent_up(v, desired).unwrap_or(1),
        }
        .max(1);
        let mut unavailable = eligible
            .iter()
            .filter(|n| !on(n).iter().any(|p| pod_ready(p)))
            .count();
        for node in &eligible {
            let here = on(node);
            let Some(old) = here.iter().find(|p| !is_new(p)) else {
                continue;
            };
            let available = pod_ready(old);
            if available && unavailable >= max_unavailable {
                continue;
            }
            log(
                CM,
                &format!(
                    "rolling {ns}/{name}: deleting old pod {} on {node}",
                    old["metadata"]["name"].as_str().unwrap_or("")
                ),
            );
            delete(api, &pod_path(old));
            if available {
                unavailable += 1;
            }
        }
    }
    let scheduled: Vec<&&Value> = owned
        .iter()
        .filter(|p| {
            p["spec"]["nodeName"]
                .as_str()
                .is_some_and(|n| eligible.contains(&n))
        })
        .collect();
    let current = eligible.iter().filter(|n| !on(n).is_empty()).count();
    let ready = scheduled.iter().filter(|p| pod_ready(p)).count();
    let updated = eligible
        .iter()
        .filter(|n| on(n).iter().any(|p| is_new(p)))
        .count();
    let misscheduled = owned.len() - scheduled.len();
    let mut st = json!({"desiredNumberScheduled": desired, "currentNumberScheduled": current,
        "updatedNumberScheduled": updated, "numberReady": ready, "numberAvailable": ready,
        "numberMisscheduled": misscheduled, "observedGeneration": generation});
    if desired > ready {
        st["numberUnavailable"] = json!(desired - ready);
    }
    if ds["status"] != st {
        let mut body = json!({"status": st});
        if ds["status"]["numberUnavailable"].is_number() && desired <= ready {
            body["status"]["numberUnavailable"] = Value::Null;
        }
        let _ = api.merge_patch(
            &format!("/apis/apps/v1/namespaces/{ns}/daemonsets/{name}/status"),
            &body,
        );
    }
}

/// What one sync of a Deployment does to its ReplicaSets.
#[derive(Debug, Default, PartialEq, Eq)]
struct Rollout {
    /// Replicas of the current template's ReplicaSet (to create it with, if missing).
    new_replicas: i64,
    /// ReplicaSets to scale: (name, replicas).
    scale: Vec<(String, i64)>,
}

/// The deployment controller's rollout step: RollingUpdate scales the new ReplicaSet up
/// within maxSurge (default 25%, rounded up) and the old ones down keeping
/// replicas - maxUnavailable (default 25%, rounded down) pods ready; Recreate scales the old
/// ones to 0 and starts the new one when their pods are gone. Old ReplicaSets are kept at
/// 0 replicas (the revision history), and reused when their template comes back.
fn rollout(d: &Value, new_rs: Option<&Value>, olds: &[&Value], pods: &[Value]) -> Rollout {
    let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1).max(0);
    let spec_of = |r: &Value| r["spec"]["replicas"].as_i64().unwrap_or(0);
    let name_of = |r: &Value| r["metadata"]["name"].as_str().unwrap_or("").to_string();
    let uid_of = |r: &Value| r["metadata"]["uid"].as_str().unwrap_or("").to_string();
    let ready_of = |r: &Value| {
        i64::try_from(
            owned_by(pods, &uid_of(r))
                .iter()
                .filter(|p| pod_ready(p))
                .count(),
        )
        .unwrap_or(0)
    };
    let pods_of = |r: &Value| i64::try_from(owned_by(pods, &uid_of(r)).len()).unwrap_or(0);
    let mut out = Rollout::default();
    let new_cur = new_rs.map_or(0, spec_of);
    let strategy = &d["spec"]["strategy"];
    if strategy["type"] == "Recreate" {
        for o in olds {
            if spec_of(o) != 0 {
                out.scale.push((name_of(o), 0));
            }
        }
        let old_pods: i64 = olds.iter().map(|o| pods_of(o)).sum();
        let target = if old_pods == 0 {
            replicas
        } else {
            new_cur.min(replicas)
        };
        out.new_replicas = target;
        if let Some(n) = new_rs.filter(|_| target != new_cur) {
            out.scale.push((name_of(n), target));
        }
        return out;
    }
    let total = |v: &Value, round_up: bool, default_pct: i64| -> i64 {
        match v {
            Value::Number(n) => n.as_i64().unwrap_or(0),
            Value::String(s) => s
                .strip_suffix('%')
                .and_then(|p| p.parse::<i64>().ok())
                .map_or(0, |p| {
                    if round_up {
                        (p * replicas + 99) / 100
                    } else {
                        p * replicas / 100
                    }
                }),
            _ if round_up => (default_pct * replicas + 99) / 100,
            _ => default_pct * replicas / 100,
        }
    };
    let ru = &strategy["rollingUpdate"];
    let max_surge = total(&ru["maxSurge"], true, 25);
    let mut max_unavailable = total(&ru["maxUnavailable"], false, 25);
    if max_surge == 0 && max_unavailable == 0 {
        max_unavailable = 1;
    }
    let old_total: i64 = olds.iter().map(|o| spec_of(o)).sum();
    // Scale the new ReplicaSet up (or down to the wanted count).
    let new_target = if new_cur < replicas {
        let room = (replicas + max_surge - old_total - new_cur).max(0);
        new_cur + room.min(replicas - new_cur)
    } else {
        replicas
    };
    out.new_replicas = new_target;
    if let Some(n) = new_rs.filter(|_| new_target != new_cur) {
        out.scale.push((name_of(n), new_target));
    }
    if new_rs.is_none() || new_target > new_cur {
        return out;
    }
    // Scale the old ones down, keeping the minimum available.
    let min_available = replicas - max_unavailable;
    let new_unavailable = (new_cur - new_rs.map_or(0, ready_of)).max(0);
    let mut budget = old_total + new_cur - min_available - new_unavailable;
    if budget <= 0 {
        return out;
    }
    let mut olds: Vec<&&Value> = olds.iter().filter(|o| spec_of(o) > 0).collect();
    olds.sort_by_key(|o| {
        o["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap_or("")
            .to_string()
    });
    // Old pods that are not ready go first, then ready ones, within the budget.
    let mut target: Vec<i64> = olds.iter().map(|o| spec_of(o)).collect();
    for (o, t) in olds.iter().zip(target.iter_mut()) {
        let c = (spec_of(o) - ready_of(o)).max(0).min(budget);
        budget -= c;
        *t -= c;
    }
    for t in &mut target {
        let c = (*t).min(budget);
        budget -= c;
        *t -= c;
    }
    for (o, t) in olds.iter().zip(target) {
        if t != spec_of(o) {
            out.scale.push((name_of(o), t));
        }
    }
    out
}

/// An int or a percentage of `total`, rounded up.
fn int_or_percent_up(v: &Value, total: usize) -> Option<usize> {
    match v {
        Value::Number(n) => n.as_u64().and_then(|n| usize::try_from(n).ok()),
        Value::String(s) => s
            .strip_suffix('%')
            .and_then(|p| p.parse::<usize>().ok())
            .map(|p| (p * total).div_ceil(100)),
        _ => None,
    }
}

/// A Deployment's status from its pods (`all`, of every ReplicaSet it owns; `updated` of
/// them from the current template's): the counts and the Available and Progressing
/// conditions, transition times kept while a condition's status holds.
fn deployment_status(d: &Value, current_rs: &str, all: &[&Value], updated: usize) -> Value {
    let replicas = usize::try_from(d["spec"]["replicas"].as_i64().unwrap_or(1).max(0)).unwrap_or(0);
    let ready = all.iter().filter(|p| pod_ready(p)).count();
    let max_unavailable = match &d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] {
        Value::Null if d["spec"]["strategy"]["type"] == "Recreate" => 0,
        // The default 25%, rounded down.
        Value::Null => replicas / 4,
        Value::String(s) => s
            .strip_suffix('%')
            .and_then(|p| p.parse::<usize>().ok())
            .map_or(0, |p| p * replicas / 100),
        v => v
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0),
    };
    let available_ok = ready + max_unavailable.min(replicas) >= replicas;
    let now = timefmt::now();
    let condition = |ty: &str, ok: bool, reason: &str, message: String| {
        let status = if ok { "True" } else { "False" };
        let prev = d["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == ty));
        let (transition, update) = match prev {
            Some(p) if p["status"] == status && p["reason"] == reason => {
                (p["lastTransitionTime"].clone(), p["lastUpdateTime"].clone())
            }
            Some(p) if p["status"] == status => (p["lastTransitionTime"].clone(), json!(now)),
            _ => (json!(now), json!(now)),
        };
        json!({"type": ty, "status": status, "reason": reason, "message": message,
               "lastTransitionTime": transition, "lastUpdateTime": update})
    };
    let available = if available_ok {
        condition(
            "Available",
            true,
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
        )
    } else {
        condition(
            "Available",
            false,
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
        )
    };
    let done = updated == replicas && ready >= replicas && all.len() == replicas;
    let progressing = if done {
        condition(
            "Progressing",
            true,
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{current_rs}\" has successfully progressed."),
        )
    } else {
        condition(
            "Progressing",
            true,
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{current_rs}\" is progressing."),
        )
    };
    let mut st = json!({"observedGeneration": d["metadata"]["generation"], "replicas": all.len(),
        "updatedReplicas": updated, "readyReplicas": ready, "availableReplicas": ready,
        "conditions": [available, progressing]});
    if replicas > ready {
        st["unavailableReplicas"] = json!(replicas - ready);
    }
    json!({"status": st})
}

pub fn controller_manager_main(args: &[String]) -> ! {
    let (p, api, leader) = setup("kube-controller-manager", args, CM_ONLY, "10257");
    let cfg = match network_config(&p) {
        Ok(c) => c,
        Err(e) => common::fatal("kube-controller-manager", &e),
    };
    loop {
        if leader.load(Ordering::SeqCst) {
            controllers_once(&api);
            crate::cm_network::run_once(&api, &cfg);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The root CA to publish (--root-ca-file, else the kubeconfig's CA) and the node IPAM
/// settings.
fn network_config(p: &Parsed) -> Result<crate::cm_network::Config, String> {
    let root_ca = if let Some(f) = p.get("root-ca-file") {
        std::fs::read_to_string(f).map_err(|e| format!("--root-ca-file={f}: {e}"))?
    } else {
        use base64::Engine;
        {
            let kc = crate::kubeconfig::load(p.required("kubeconfig")?, "--kubeconfig")?;
            kc.ca
                .iter()
                .map(|c| {
                    let b = base64::engine::general_purpose::STANDARD.encode(c);
                    let body: Vec<String> = b
                        .as_bytes()
                        .chunks(64)
                        .map(|l| String::from_utf8_lossy(l).into_owned())
                        .collect();
                    format!(
                        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                        body.join("\n")
                    )
                })
                .collect()
        }
    };
    Ok(crate::cm_network::Config {
        root_ca,
        cluster_cidrs: crate::cm_network::cluster_cidrs(p)?,
    })
}

#[allow(dead_code)]
fn matches(sel: &Value, o: &Value) -> bool {
    LabelSelector::from_object(sel).matches(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(go_duration("15s"), Some(Duration::from_secs(15)));
        assert_eq!(go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(go_duration("15"), None);
        assert_eq!(go_duration("x"), None);
    }

    /// A plain-HTTP API for one round of the controllers: lists from `lists` (a path
    /// missing there answers 503), every other request 200; returns what was not a GET.
    fn one_round(lists: &[(&'static str, Value)]) -> Vec<String> {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let server = format!("http://{}", listener.local_addr().unwrap());
        let lists: Vec<(&'static str, Value)> = lists.to_vec();
        let writes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = std::sync::Arc::clone(&writes);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let mut conn = conn.unwrap();
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut first = String::new();
                reader.read_line(&mut first).unwrap();
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if line.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; length];
                std::io::Read::read_exact(&mut reader, &mut body).unwrap();
                let mut words = first.split_whitespace();
                let (method, path) = (words.next().unwrap(), words.next().unwrap());
                let (code, reply) = if method == "GET" {
                    lists.iter().find(|(p, _)| *p == path).map_or_else(
                        || {
                            (
                                503,
                                json!({"kind": "Status", "message": "etcd unavailable"}),
                            )
                        },
                        |(_, items)| (200, json!({"items": items})),
                    )
                } else {
                    seen.lock().unwrap().push(format!("{method} {path}"));
                    (200, json!({}))
                };
                let text = reply.to_string();
                let _ = write!(
                    conn,
                    "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    text.len()
                );
            }
        });
        controllers_once(&Api::plain(&server));
        writes.lock().unwrap().clone()
    }

    /// A Deployment's ReplicaSet and its 4 running pods, all in step.
    fn web() -> Vec<(&'static str, Value)> {
        let mut d = json!({"metadata": {"name": "web", "namespace": "default", "uid": "d1", "generation": 1},
            "spec": {"replicas": 4, "template": {"metadata": {"labels": {"app": "web"}}}}});
        let hash = fnv(&d["spec"]["template"].to_string());
        let rs = json!({"metadata": {"name": format!("web-{hash}"), "namespace": "default", "uid": "r1",
                "ownerReferences": owner_ref(&d, "Deployment", "apps/v1")},
            "spec": {"replicas": 4}, "status": {"replicas": 4, "readyReplicas": 4}});
        let pods: Vec<Value> = (0..4)
            .map(|i| {
                json!({"metadata": {"name": format!("web-{i}"), "namespace": "default",
                    "ownerReferences": owner_ref(&rs, "ReplicaSet", "apps/v1")},
                "spec": {"nodeName": "w1"}, "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}})
            })
            .collect();
        let refs: Vec<&Value> = pods.iter().collect();
        d["status"] = deployment_status(&d, &format!("web-{hash}"), &refs, 4)["status"].clone();
        assert_eq!(d["status"]["conditions"][0]["status"], "True");
        assert_eq!(d["status"]["availableReplicas"], 4);
        vec![
            ("/api/v1/pods", json!(pods)),
            ("/apis/apps/v1/deployments", json!([d])),
            ("/apis/apps/v1/replicasets", json!([rs])),
            ("/api/v1/nodes", json!([])),
            ("/apis/apps/v1/daemonsets", json!([])),
        ]
    }

    /// A failed list (an API server restarting) is not an empty one: a round that could not
    /// list Deployments deletes nothing. When the Deployment is really gone, its
    /// ReplicaSet and pods go.
    #[test]
    fn a_failed_list_deletes_nothing() {
        assert_eq!(one_round(&web()), Vec::<String>::new());
        let failed: Vec<_> = web()
            .into_iter()
            .filter(|(p, _)| *p != "/apis/apps/v1/deployments")
            .collect();
        assert_eq!(one_round(&failed), Vec::<String>::new());
        let gone: Vec<_> = web()
            .into_iter()
            .map(|(p, v)| {
                if p == "/apis/apps/v1/deployments" {
                    (p, json!([]))
                } else {
                    (p, v)
                }
            })
            .collect();
        let writes = one_round(&gone);
        assert!(
            writes
                .iter()
                .any(|w| w.starts_with("DELETE /apis/apps/v1/namespaces/default/replicasets/web-")),
            "{writes:?}"
        );
    }

    #[test]
    fn rolling_update_keeps_the_minimum_available() {
        let d = json!({"metadata": {"name": "dns", "uid": "d1"}, "spec": {"replicas": 4}});
        let rs = |name: &str, n: i64| json!({"metadata": {"name": name, "uid": name, "creationTimestamp": "2026-01-01T00:00:00Z"}, "spec": {"replicas": n}});
        let pods = |rs: &str, n: usize, ready: bool| -> Vec<Value> {
            (0..n)
                .map(|i| {
                    json!({"metadata": {"name": format!("{rs}-{i}"), "ownerReferences": [{"uid": rs, "controller": true}]},
                    "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
                })
                .collect()
        };
        let old = rs("old", 4);
        let p = pods("old", 4, true);
        // A new template: the new ReplicaSet starts at maxSurge (1 of 4).
        assert_eq!(rollout(&d, None, &[&old], &p).new_replicas, 1);
        // Its pod is not ready: one old pod may go (maxUnavailable 1), no more.
        let new = rs("new", 1);
        let mut all = p.clone();
        all.extend(pods("new", 1, false));
        let r = rollout(&d, Some(&new), &[&old], &all);
        assert_eq!(r.scale, vec![("old".to_string(), 3)]);
        let old3 = rs("old", 3);
        let mut all = pods("old", 3, true);
        all.extend(pods("new", 1, false));
        assert_eq!(
            rollout(&d, Some(&new), &[&old3], &all).scale,
            vec![("new".to_string(), 2)]
        );
        // New pods that never get ready stall the rollout: the old ones stay.
        let new2 = rs("new", 2);
        let mut stalled = pods("old", 3, true);
        stalled.extend(pods("new", 2, false));
        assert!(
            rollout(&d, Some(&new2), &[&old3], &stalled)
                .scale
                .is_empty()
        );
        // Once the new pods are ready, old ones go.
        let mut ready = pods("old", 3, true);
        ready.extend(pods("new", 2, true));
        assert_eq!(
            rollout(&d, Some(&new2), &[&old3], &ready).scale,
            vec![("old".to_string(), 1)]
        );
        // Recreate: old ones to 0 first, the new one once their pods are gone.
        let rec = json!({"metadata": {"name": "dns", "uid": "d1"}, "spec": {"replicas": 2, "strategy": {"type": "Recreate"}}});
        let r = rollout(&rec, None, &[&old], &p);
        assert_eq!((r.new_replicas, r.scale), (0, vec![("old".to_string(), 0)]));
        let gone = rs("old", 0);
        assert_eq!(rollout(&rec, None, &[&gone], &[]).new_replicas, 2);
    }

    #[test]
    fn fit() {
        let node = json!({"metadata": {"name": "n", "labels": {"a": "b"}}, "spec": {},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        assert!(fits(&json!({"spec": {}}), &node));
        let mut cordoned = node.clone();
        cordoned["spec"]["unschedulable"] = json!(true);
        assert!(!fits(&json!({"spec": {}}), &cordoned));
        let mut tainted = node.clone();
        tainted["spec"]["taints"] = json!([{"key": "k", "effect": "NoSchedule"}]);
        assert!(!fits(&json!({"spec": {}}), &tainted));
        assert!(fits(
            &json!({"spec": {"tolerations": [{"key": "k", "operator": "Exists"}]}}),
            &tainted
        ));
        assert!(!fits(&json!({"spec": {"nodeSelector": {"a": "c"}}}), &node));
    }
}
