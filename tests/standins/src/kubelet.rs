//! kubelet stand-in: registers its Node, keeps it Ready (status + Lease), runs the static pods
//! of staticPodPath and the pods bound to it as host processes from the image store (the pod
//! runtime is kubelet_pods.rs), posts mirror pods and pod status, serves :10250 (TLS,
//! /containerLogs) and :10248 (/healthz).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use serde_yaml::Value as Y;

use crate::client::Api;
use crate::common::{self, log};
use crate::flags::Kind::{Bool as B, Value as V};
use crate::flags::{Kind, Parsed};
use crate::kubelet_pods::{self, Node, PodRun};
use crate::timefmt;

const NAME: &str = "kubelet";
/// Where the lab puts the image store (the stand-in of images pulled into the runtime).
pub const IMAGE_STORE: &str = "/var/lib/standin-images";

pub const FLAGS: &[(&str, Kind)] = &[
    ("address", V),
    ("anonymous-auth", B),
    ("authentication-token-webhook", B),
    ("authorization-mode", V),
    ("bootstrap-kubeconfig", V),
    ("cert-dir", V),
    ("cgroup-driver", V),
    ("client-ca-file", V),
    ("cloud-provider", V),
    ("cluster-dns", V),
    ("cluster-domain", V),
    ("config", V),
    ("config-dir", V),
    ("container-runtime-endpoint", V),
    ("enforce-node-allocatable", V),
    ("eviction-hard", V),
    ("exit-on-lock-contention", B),
    ("fail-swap-on", B),
    ("healthz-bind-address", V),
    ("healthz-port", V),
    ("hostname-override", V),
    ("image-credential-provider-bin-dir", V),
    ("image-credential-provider-config", V),
    ("kube-reserved", V),
    ("kubeconfig", V),
    ("lock-file", V),
    ("max-pods", V),
    ("node-ip", V),
    ("node-labels", V),
    ("pod-infra-container-image", V),
    ("pod-manifest-path", V),
    ("port", V),
    ("protect-kernel-defaults", B),
    ("provider-id", V),
    ("read-only-port", V),
    ("register-node", B),
    ("register-with-taints", V),
    ("resolv-conf", V),
    ("root-dir", V),
    ("rotate-certificates", B),
    ("runtime-cgroups", V),
    ("runtime-request-timeout", V),
    ("seccomp-default", B),
    ("serialize-image-pulls", B),
    ("system-reserved", V),
    ("tls-cert-file", V),
    ("tls-private-key-file", V),
    ("volume-plugin-dir", V),
];

/// Flags a kubelet release no longer has: (flag, first minor without it). A real kubelet
/// of that minor or later exits with "unknown flag".
pub const REMOVED_FLAGS: &[(&str, u32)] = &[
    // kubernetes/kubernetes#133779: the sandbox image is the runtime's (containerd's) to pin.
    ("pod-infra-container-image", 35),
];

/// The kubelet's flags at `minor` (1.minor).
pub fn flags_at(minor: u32) -> Vec<(&'static str, Kind)> {
    FLAGS
        .iter()
        .filter(|(name, _)| {
            !REMOVED_FLAGS
                .iter()
                .any(|(removed, since)| removed == name && minor >= *since)
        })
        .copied()
        .collect()
}

/// The minor of a stamped version (`v1.35.2` → 35).
fn minor_of(version: &str) -> u32 {
    crate::version::major_minor(version).1.parse().unwrap_or(0)
}

/// Does this host run cgroup v2 alone (the unified hierarchy at /sys/fs/cgroup)? A hybrid
/// host counts as cgroup v1, as for the real kubelet (`IsCgroup2UnifiedMode`).
fn cgroup_v2_unified() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// From 1.35 `failCgroupV1` defaults to true: on a cgroup v1 host the kubelet refuses to
/// start unless the configuration sets it false (KEP-5573).
fn check_cgroup_v1(doc: &Y, minor: u32, unified: bool) -> Result<(), String> {
    let fail = doc
        .get("failCgroupV1")
        .and_then(Y::as_bool)
        .unwrap_or(minor >= 35);
    if !unified && fail {
        return Err(
            "failed to run Kubelet: kubelet is configured to not run on a host using cgroup v1. cgroup v1 support is unsupported and will be removed in a future release"
                .into(),
        );
    }
    Ok(())
}

struct Config {
    static_pod_path: Option<String>,
    tls_cert: Option<String>,
    tls_key: Option<String>,
    client_ca: Option<String>,
    port: u16,
    address: String,
    healthz_port: u16,
    healthz_bind: String,
    resolv_conf: String,
    cluster_dns: Vec<String>,
    cluster_domain: String,
}

fn ystr(v: &Y, path: &[&str]) -> Option<String> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    cur.as_str()
        .map(String::from)
        .or_else(|| cur.as_u64().map(|n| n.to_string()))
}

fn load_config(p: &Parsed, minor: u32) -> Result<Config, String> {
    let doc: Y = match p.get("config") {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                format!("failed to load kubelet config file, path: {path}, error: open {path}: {e}")
            })?;
            let doc: Y = serde_yaml::from_str(&text).map_err(|e| {
                format!("failed to load kubelet config file, path: {path}, error: {e}")
            })?;
            let kind = ystr(&doc, &["kind"]).unwrap_or_default();
            let av = ystr(&doc, &["apiVersion"]).unwrap_or_default();
            if kind != "KubeletConfiguration" || av != "kubelet.config.k8s.io/v1beta1" {
                return Err(format!(
                    "failed to load kubelet config file, path: {path}, error: no kind \"{kind}\" is registered for version \"{av}\" (want KubeletConfiguration, kubelet.config.k8s.io/v1beta1)"
                ));
            }
            doc
        }
        None => Y::Null,
    };
    let num = |key: &str, flag: &str, default: u16| -> Result<u16, String> {
        p.get(flag)
            .map(String::from)
            .or_else(|| ystr(&doc, &[key]))
            .map_or(Ok(default), |v| {
                v.parse().map_err(|e| format!("{key}/{flag} {v:?}: {e}"))
            })
    };
    let cfg = Config {
        static_pod_path: p
            .get("pod-manifest-path")
            .map(String::from)
            .or_else(|| ystr(&doc, &["staticPodPath"])),
        tls_cert: p
            .get("tls-cert-file")
            .map(String::from)
            .or_else(|| ystr(&doc, &["tlsCertFile"])),
        tls_key: p
            .get("tls-private-key-file")
            .map(String::from)
            .or_else(|| ystr(&doc, &["tlsPrivateKeyFile"])),
        client_ca: p
            .get("client-ca-file")
            .map(String::from)
            .or_else(|| ystr(&doc, &["authentication", "x509", "clientCAFile"])),
        port: num("port", "port", 10250)?,
        address: p
            .get("address")
            .map(String::from)
            .or_else(|| ystr(&doc, &["address"]))
            .unwrap_or_else(|| "0.0.0.0".into()),
        healthz_port: num("healthzPort", "healthz-port", 10248)?,
        healthz_bind: p
            .get("healthz-bind-address")
            .map(String::from)
            .or_else(|| ystr(&doc, &["healthzBindAddress"]))
            .unwrap_or_else(|| "127.0.0.1".into()),
        resolv_conf: p
            .get("resolv-conf")
            .map(String::from)
            .or_else(|| ystr(&doc, &["resolvConf"]))
            .unwrap_or_else(|| "/etc/resolv.conf".into()),
        cluster_dns: p.get("cluster-dns").map_or_else(
            || {
                doc.get("clusterDNS")
                    .and_then(Y::as_sequence)
                    .map(|s| {
                        s.iter()
                            .filter_map(|x| x.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default()
            },
            |f| {
                f.split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            },
        ),
        cluster_domain: p
            .get("cluster-domain")
            .map(String::from)
            .or_else(|| ystr(&doc, &["clusterDomain"]))
            .unwrap_or_default(),
    };
    check_cgroup_v1(&doc, minor, cgroup_v2_unified())?;
    if let Some(d) = ystr(&doc, &["cgroupDriver"])
        && d != "systemd"
        && d != "cgroupfs"
    {
        return Err(format!(
            "invalid configuration: cgroupDriver {d:?}: must be systemd or cgroupfs"
        ));
    }
    if let Some(ca) = &cfg.client_ca {
        crate::tls::load_certs(ca, "authentication.x509.clientCAFile")?;
    }
    Ok(cfg)
}

/// An image reference split into (repository, tag).
pub fn split_image(image: &str) -> (String, String) {
    if let Some((repo, digest)) = image.split_once('@') {
        return (repo.to_string(), digest.to_string());
    }
    let slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[slash..].rfind(':') {
        Some(i) => (
            image[..slash + i].to_string(),
            image[slash + i + 1..].to_string(),
        ),
        None => (image.to_string(), "latest".to_string()),
    }
}

pub fn image_store() -> PathBuf {
    std::env::var_os("CAPSTAN_STANDIN_IMAGE_STORE")
        .map_or_else(|| PathBuf::from(IMAGE_STORE), PathBuf::from)
}

/// The executable for a container: `<store>/<repo>/<tag>/<basename of command[0]>`.
struct StaticPod {
    hash: String,
    run: PodRun,
    posted: bool,
}

struct Kubelet {
    api: Api,
    node: String,
    version: String,
    node_ip: String,
    cfg: Config,
    rt: Node,
    pods: HashMap<PathBuf, StaticPod>,
    bound: HashMap<String, PodRun>,
    node_uid: String,
}

impl Kubelet {
    fn node_object(&self, p: &Parsed) -> Value {
        let mut labels = json!({"kubernetes.io/hostname": self.node, "kubernetes.io/os": "linux", "kubernetes.io/arch": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
            "beta.kubernetes.io/os": "linux"});
        for kv in p
            .get("node-labels")
            .unwrap_or("")
            .split(',')
            .filter(|s| !s.is_empty())
        {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            labels[k] = json!(v);
        }
        let taints: Vec<Value> = p
            .get("register-with-taints")
            .unwrap_or("")
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|t| {
                let (kv, effect) = t.split_once(':').unwrap_or((t, "NoSchedule"));
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                if v.is_empty() {
                    json!({"key": k, "effect": effect})
                } else {
                    json!({"key": k, "value": v, "effect": effect})
                }
            })
            .collect();
        let mut node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.node, "labels": labels}, "spec": {}, "status": self.status()});
        if !taints.is_empty() {
            node["spec"]["taints"] = json!(taints);
        }
        node
    }

    fn status(&self) -> Value {
        let now = timefmt::now();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string();
        json!({
            "conditions": [
                {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory", "lastHeartbeatTime": now, "lastTransitionTime": now},
                {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure", "lastHeartbeatTime": now, "lastTransitionTime": now},
                {"type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID", "lastHeartbeatTime": now, "lastTransitionTime": now},
                {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status", "lastHeartbeatTime": now, "lastTransitionTime": now},
            ],
            "addresses": [{"type": "InternalIP", "address": self.node_ip}, {"type": "Hostname", "address": self.node}],
            "nodeInfo": {"kubeletVersion": self.version, "kubeProxyVersion": self.version, "containerRuntimeVersion": "standin://1.0.0",
                         "osImage": "capstan lab", "kernelVersion": kernel, "operatingSystem": "linux", "architecture": "amd64",
                         "machineID": std::fs::read_to_string("/etc/machine-id").unwrap_or_default().trim(), "systemUUID": "", "bootID": ""},
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.cfg.port}},
            "capacity": {"cpu": "2", "memory": "2Gi", "pods": "110"}, "allocatable": {"cpu": "2", "memory": "2Gi", "pods": "110"},
        })
    }

    fn register(&mut self, p: &Parsed) {
        loop {
            match self.api.post("/api/v1/nodes", &self.node_object(p)) {
                Ok(r) if r.ok() || r.status == 409 => {
                    log(NAME, &format!("successfully registered node {}", self.node));
                    if let Ok(r) = self.api.get(&format!("/api/v1/nodes/{}", self.node)) {
                        self.node_uid =
                            r.body["metadata"]["uid"].as_str().unwrap_or("").to_string();
                    }
                    return;
                }
                Ok(r) => log(
                    NAME,
                    &format!(
                        "unable to register node {} with API server: {}",
                        self.node,
                        r.message()
                    ),
                ),
                Err(e) => log(
                    NAME,
                    &format!("unable to register node {} with API server: {e}", self.node),
                ),
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    }

    fn heartbeat(&self) {
        let path = format!("/api/v1/nodes/{}/status", self.node);
        match self
            .api
            .merge_patch(&path, &json!({"status": self.status()}))
        {
            Ok(r) if r.ok() => {}
            Ok(r) => log(
                NAME,
                &format!("error updating node status: {}", r.message()),
            ),
            Err(e) => log(NAME, &format!("error updating node status: {e}")),
        }
        let lp = format!(
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{}",
            self.node
        );
        let spec = json!({"holderIdentity": self.node, "leaseDurationSeconds": 40, "renewTime": timefmt::now_micro()});
        let res = match self.api.get(&lp) {
            Ok(r) if r.status == 404 => self.api.post("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", &json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.node, "namespace": "kube-node-lease", "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": self.node, "uid": self.node_uid}]},
                "spec": spec})),
            Ok(r) if r.ok() => {
                let mut l = r.body;
                l["spec"] = spec;
                self.api.put(&lp, &l)
            }
            other => other,
        };
        if let Ok(r) = res
            && !r.ok()
        {
            log(NAME, &format!("failed to update lease: {}", r.message()));
        }
    }

    fn mirror_name(&self, pod: &Value) -> (String, String) {
        (
            pod["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string(),
            format!(
                "{}-{}",
                pod["metadata"]["name"].as_str().unwrap_or("pod"),
                self.node
            ),
        )
    }

    fn sync_static(&mut self) {
        let Some(dir) = self.cfg.static_pod_path.clone() else {
            return;
        };
        let mut seen = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                let path = e.path();
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if name.starts_with('.')
                    || !(name.ends_with(".yaml")
                        || name.ends_with(".yml")
                        || name.ends_with(".json"))
                {
                    continue;
                }
                let Ok(text) = std::fs::read_to_string(&path) else {
                    continue;
                };
                seen.push(path.clone());
                let hash = format!(
                    "{:x}",
                    text.bytes()
                        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b))
                            .wrapping_mul(0x0100_0000_01b3))
                );
                if self.pods.get(&path).is_some_and(|p| p.hash == hash) {
                    continue;
                }
                let pod: Value = match serde_yaml::from_str::<Value>(&text) {
                    Ok(v) if v["kind"] == "Pod" => v,
                    Ok(_) => {
                        log(
                            NAME,
                            &format!("static pod manifest {}: not a Pod", path.display()),
                        );
                        continue;
                    }
                    Err(e) => {
                        log(
                            NAME,
                            &format!("static pod manifest {}: invalid: {e}", path.display()),
                        );
                        continue;
                    }
                };
                if let Some(old) = self.pods.remove(&path) {
                    log(
                        NAME,
                        &format!("static pod manifest {} changed: restarting", path.display()),
                    );
                    self.stop_static(old);
                }
                let (_, mirror) = self.mirror_name(&pod);
                let run = PodRun::new(pod, &hash, &mirror, false);
                self.pods.insert(
                    path,
                    StaticPod {
                        hash,
                        run,
                        posted: false,
                    },
                );
            }
        }
        let gone: Vec<PathBuf> = self
            .pods
            .keys()
            .filter(|p| !seen.contains(p))
            .cloned()
            .collect();
        for p in gone {
            if let Some(old) = self.pods.remove(&p) {
                log(
                    NAME,
                    &format!("static pod manifest {} removed: stopping", p.display()),
                );
                self.stop_static(old);
            }
        }
        // Run, restart with back-off, report.
        let files: Vec<PathBuf> = self.pods.keys().cloned().collect();
        for f in files {
            let Some(mut sp) = self.pods.remove(&f) else {
                continue;
            };
            sp.run.step(&self.rt);
            self.post_mirror(&mut sp);
            self.pods.insert(f, sp);
        }
    }

    /// Stops a static pod's processes (waiting for them, so that its replacement finds its
    /// ports free) and deletes its mirror pod.
    fn stop_static(&self, old: StaticPod) {
        let grace = Duration::from_secs(
            old.run.pod["spec"]["terminationGracePeriodSeconds"]
                .as_u64()
                .unwrap_or(30),
        );
        let (ns, n) = (old.run.ns.clone(), old.run.name.clone());
        let done = old.run.stop(&self.rt, grace);
        let _ = done.recv_timeout(grace + Duration::from_secs(5));
        let _ = self
            .api
            .delete(&format!("/api/v1/namespaces/{ns}/pods/{n}"));
    }

    fn post_mirror(&self, sp: &mut StaticPod) {
        let (ns, name) = (sp.run.ns.clone(), sp.run.name.clone());
        if !sp.posted {
            let mut m = sp.run.pod.clone();
            m["metadata"]["name"] = json!(name);
            m["metadata"]["namespace"] = json!(ns);
            let ann = json!({"kubernetes.io/config.hash": sp.hash, "kubernetes.io/config.mirror": sp.hash, "kubernetes.io/config.source": "file", "kubernetes.io/config.seen": timefmt::now()});
            if let (Some(a), Some(x)) = (
                m["metadata"]["annotations"].as_object_mut(),
                ann.as_object(),
            ) {
                a.extend(x.clone());
            } else {
                m["metadata"]["annotations"] = ann;
            }
            m["metadata"]["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "Node", "name": self.node, "uid": self.node_uid, "controller": true}]);
            m["spec"]["nodeName"] = json!(self.node);
            match self.api.post(&format!("/api/v1/namespaces/{ns}/pods"), &m) {
                Ok(r) if r.ok() => {
                    sp.posted = true;
                    sp.run.posted_status = Value::Null;
                }
                Ok(r) if r.status == 409 => {
                    let _ = self
                        .api
                        .delete(&format!("/api/v1/namespaces/{ns}/pods/{name}"));
                }
                Ok(r) => log(
                    NAME,
                    &format!("failed creating a mirror pod {ns}/{name}: {}", r.message()),
                ),
                Err(e) => log(
                    NAME,
                    &format!("failed creating a mirror pod {ns}/{name}: {e}"),
                ),
            }
        }
        if !sp.posted {
            return;
        }
        if self.patch_status(&mut sp.run) == Some(404) {
            sp.posted = false;
        }
    }

    /// Posts the pod's status when it changed; the HTTP status of the patch, if sent.
    fn patch_status(&self, run: &mut PodRun) -> Option<u16> {
        let status = run.status(&self.rt);
        if status == run.posted_status {
            return None;
        }
        let path = format!("/api/v1/namespaces/{}/pods/{}/status", run.ns, run.name);
        match self.api.merge_patch(&path, &json!({"status": status})) {
            Ok(r) if r.ok() => {
                run.posted_status = status;
                Some(r.status)
            }
            Ok(r) => Some(r.status),
            Err(_) => None,
        }
    }

    /// Pods the scheduler bound here: run as host processes, stopped once deleted or
    /// replaced (another UID under the same name).
    fn sync_bound(&mut self) {
        let sel = format!("spec.nodeName%3D{}", self.node);
        let r = match self.api.get(&format!("/api/v1/pods?fieldSelector={sel}")) {
            Ok(r) if r.ok() => r,
            Ok(r) => {
                log(
                    NAME,
                    &format!("failed to list pods bound to this node: {}", r.message()),
                );
                return;
            }
            Err(e) => {
                log(
                    NAME,
                    &format!("failed to list pods bound to this node: {e}"),
                );
                return;
            }
        };
        let mut live = Vec::new();
        for p in r.body["items"].as_array().cloned().unwrap_or_default() {
            if p["metadata"]["annotations"]["kubernetes.io/config.mirror"].is_string()
                || p["spec"]["nodeName"].as_str() != Some(self.node.as_str())
            {
                continue;
            }
            let uid = p["metadata"]["uid"].as_str().unwrap_or("").to_string();
            if uid.is_empty() {
                continue;
            }
            if !p["metadata"]["deletionTimestamp"].is_null() {
                // Graceful deletion: stop, then finish the deletion as the real kubelet does.
                if let Some(run) = self.bound.remove(&uid) {
                    let grace = Duration::from_secs(
                        p["metadata"]["deletionGracePeriodSeconds"]
                            .as_u64()
                            .unwrap_or(30),
                    );
                    let done = run.stop(&self.rt, grace);
                    let api = self.api.clone();
                    let path = format!(
                        "/api/v1/namespaces/{}/pods/{}?gracePeriodSeconds=0",
                        p["metadata"]["namespace"].as_str().unwrap_or("default"),
                        p["metadata"]["name"].as_str().unwrap_or("")
                    );
                    std::thread::spawn(move || {
                        let _ = done.recv();
                        let _ = api.delete(&path);
                    });
                }
                continue;
            }
            live.push(uid.clone());
            if !self.bound.contains_key(&uid) {
                let phase = p["status"]["phase"].as_str().unwrap_or("");
                if phase == "Succeeded" || phase == "Failed" {
                    continue;
                }
                let name = p["metadata"]["name"].as_str().unwrap_or("").to_string();
                log(
                    NAME,
                    &format!(
                        "SyncLoop ADD: pod {}/{name} ({uid})",
                        p["metadata"]["namespace"].as_str().unwrap_or("")
                    ),
                );
                self.bound
                    .insert(uid.clone(), PodRun::new(p, &uid, &name, true));
            }
        }
        let gone: Vec<String> = self
            .bound
            .keys()
            .filter(|u| !live.contains(u))
            .cloned()
            .collect();
        for u in gone {
            if let Some(run) = self.bound.remove(&u) {
                log(
                    NAME,
                    &format!("SyncLoop REMOVE: pod {}/{} ({u})", run.ns, run.name),
                );
                let grace = Duration::from_secs(
                    run.pod["spec"]["terminationGracePeriodSeconds"]
                        .as_u64()
                        .unwrap_or(30),
                );
                drop(run.stop(&self.rt, grace));
            }
        }
        let uids: Vec<String> = self.bound.keys().cloned().collect();
        for u in uids {
            let Some(mut run) = self.bound.remove(&u) else {
                continue;
            };
            run.step(&self.rt);
            let _ = self.patch_status(&mut run);
            self.bound.insert(u, run);
        }
    }
}

fn local_ip_towards(server: &str) -> String {
    let hostport = server
        .trim_start_matches("https://")
        .split('/')
        .next()
        .unwrap_or("");
    let target = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:443")
    };
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect(&target)?;
            s.local_addr()
        })
        .map_or_else(|_| "127.0.0.1".into(), |a| a.ip().to_string())
}

/// `GET /containerLogs/NS/POD/CONTAINER?tailLines=N&previous=true`, for a client whose
/// certificate the clientCAFile issued (anonymous requests are refused, as with
/// anonymous-auth false).
fn container_logs(
    r: &crate::server::Request,
    roots: Option<&Arc<rustls::RootCertStore>>,
    log_root: &Path,
) -> crate::server::Response {
    use crate::server::Response;
    if let Some(roots) = roots
        && crate::tls::verify_client_chain(roots, &r.peer_certs).is_err()
    {
        return Response::text(401, "Unauthorized");
    }
    let parts: Vec<&str> = r
        .path
        .trim_start_matches("/containerLogs/")
        .split('/')
        .collect();
    let [ns, pod, ctr] = parts[..] else {
        return Response::text(404, "404 page not found");
    };
    let previous = r.q("previous") == Some("true");
    let tail = r.q("tailLines").and_then(|n| n.parse().ok());
    match kubelet_pods::container_log(log_root, ns, pod, ctr, previous) {
        Ok(f) => {
            let text = std::fs::read(&f).unwrap_or_default();
            let text = String::from_utf8_lossy(&text);
            Response::text(200, &kubelet_pods::tail_lines(&text, tail))
        }
        Err(e) => Response::text(404, &e),
    }
}

fn serve(cfg: &Config, log_root: PathBuf) -> Result<(), String> {
    let key = match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(c), Some(k)) => crate::tls::load_pair(c, "tlsCertFile", k, "tlsPrivateKeyFile")?,
        (None, None) => crate::tls::self_signed(&[common::hostname(), "localhost".into()])?,
        _ => return Err("tlsCertFile and tlsPrivateKeyFile must be given together".into()),
    };
    let roots = match &cfg.client_ca {
        Some(ca) => Some(crate::tls::roots(
            &crate::tls::load_certs(ca, "clientCAFile")?,
            "clientCAFile",
        )?),
        None => None,
    };
    let tls = crate::tls::server_config(key, roots.clone())?;
    let main_addr = crate::server::join_host_port(&cfg.address, &cfg.port.to_string());
    let hz_addr = crate::server::join_host_port(&cfg.healthz_bind, &cfg.healthz_port.to_string());
    let l1 = std::net::TcpListener::bind(&main_addr)
        .map_err(|e| format!("failed to listen on {main_addr}: {e}"))?;
    let l2 = std::net::TcpListener::bind(&hz_addr)
        .map_err(|e| format!("failed to listen on {hz_addr} (healthz): {e}"))?;
    for l in [&l1, &l2] {
        l.set_nonblocking(true).map_err(|e| e.to_string())?;
    }
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            let (Ok(a), Ok(b)) = (
                tokio::net::TcpListener::from_std(l1),
                tokio::net::TcpListener::from_std(l2),
            ) else {
                return;
            };
            let health = |r: &crate::server::Request| match r.path.as_str() {
                "/healthz" | "/healthz/ping" | "/healthz/syncloop" => {
                    crate::server::Response::text(200, "ok")
                }
                _ => crate::server::Response::text(404, "404 page not found"),
            };
            let main: crate::server::Handler = Arc::new(move |r: crate::server::Request| {
                if r.path.starts_with("/containerLogs/") && r.method == "GET" {
                    container_logs(&r, roots.as_ref(), &log_root)
                } else {
                    health(&r)
                }
            });
            let hz: crate::server::Handler = Arc::new(move |r: crate::server::Request| health(&r));
            tokio::join!(
                crate::server::serve(a, Some(tls), main),
                crate::server::serve(b, None, hz)
            );
        });
    });
    log(
        NAME,
        &format!("serving on {main_addr} (TLS) and healthz on {hz_addr}"),
    );
    Ok(())
}

/// The real kubelet's refusal of `--node-labels` it may not set on its own Node (the
/// NodeRestriction rule), with its message.
fn check_node_labels(flag: &str) -> Result<(), String> {
    const ALLOWED: [&str; 11] = [
        "beta.kubernetes.io/arch",
        "beta.kubernetes.io/instance-type",
        "beta.kubernetes.io/os",
        "failure-domain.beta.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/zone",
        "kubernetes.io/arch",
        "kubernetes.io/hostname",
        "kubernetes.io/os",
        "node.kubernetes.io/instance-type",
        "topology.kubernetes.io/region",
        "topology.kubernetes.io/zone",
    ];
    let in_ns = |ns: &str, suffix: &str| ns == suffix || ns.ends_with(&format!(".{suffix}"));
    let unknown: Vec<&str> = flag
        .split(',')
        .filter_map(|kv| kv.split('=').next())
        .filter(|k| {
            let Some((ns, _)) = k.split_once('/') else {
                return false;
            };
            (in_ns(ns, "kubernetes.io") || in_ns(ns, "k8s.io"))
                && !ALLOWED.contains(k)
                && !in_ns(ns, "kubelet.kubernetes.io")
                && !in_ns(ns, "node.kubernetes.io")
        })
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(format!(
        "failed to validate kubelet flags: unknown 'kubernetes.io' or 'k8s.io' labels specified with --node-labels: [{}]\n\
         --node-labels in the 'kubernetes.io' namespace must begin with an allowed prefix (kubelet.kubernetes.io, node.kubernetes.io) or be in the specifically allowed set ({})",
        unknown.join(" "),
        ALLOWED.join(", ")
    ))
}

pub fn main(args: &[String]) -> ! {
    // The flags of this copy's release: a flag removed in it is an unknown flag.
    let minor = crate::version::current().map_or(0, |v| minor_of(&v));
    let flags = flags_at(minor);
    let (p, version) = common::start(NAME, args, &flags);
    let setup = || -> Result<Kubelet, String> {
        check_node_labels(p.get("node-labels").unwrap_or(""))?;
        let cfg = load_config(&p, minor)?;
        let kc = p
            .get("kubeconfig")
            .ok_or("--kubeconfig is required (TLS bootstrap is not supported by this stand-in)")?;
        if !Path::new(kc).exists() {
            return Err(format!(
                "--kubeconfig={kc}: open {kc}: no such file or directory (TLS bootstrap with --bootstrap-kubeconfig is not supported by this stand-in)"
            ));
        }
        let (kcfg, api) = crate::client::api_from_kubeconfig(kc, "--kubeconfig")?;
        let node = p
            .get("hostname-override")
            .map_or_else(common::hostname, str::to_lowercase);
        if kcfg.user.in_group("system:nodes") && kcfg.user.name != format!("system:node:{node}") {
            log(
                NAME,
                &format!(
                    "warning: kubeconfig user {} does not match node name {node}: the API server's node authorizer will refuse it",
                    kcfg.user.name
                ),
            );
        }
        if let Some(sp) = &cfg.static_pod_path {
            std::fs::create_dir_all(sp).map_err(|e| format!("staticPodPath {sp}: {e}"))?;
        }
        let node_ip = p
            .get("node-ip")
            .map_or_else(|| local_ip_towards(&kcfg.server), String::from);
        let root = p.get("root-dir").unwrap_or("/var/lib/kubelet");
        std::fs::create_dir_all(root).map_err(|e| format!("--root-dir {root}: {e}"))?;
        let log_root = kubelet_pods::pod_log_dir();
        std::fs::create_dir_all(&log_root).map_err(|e| format!("{}: {e}", log_root.display()))?;
        serve(&cfg, log_root.clone())?;
        let rt = Node {
            api: api.clone(),
            name: node.clone(),
            ip: node_ip.clone(),
            root: PathBuf::from(root),
            log_root,
            resolv_conf: cfg.resolv_conf.clone(),
            cluster_dns: cfg.cluster_dns.clone(),
            cluster_domain: cfg.cluster_domain.clone(),
        };
        Ok(Kubelet {
            api,
            node,
            version: version.clone(),
            node_ip,
            cfg,
            rt,
            pods: HashMap::new(),
            bound: HashMap::new(),
            node_uid: String::new(),
        })
    };
    let mut k = match setup() {
        Ok(k) => k,
        Err(e) => common::fatal(NAME, &e),
    };
    log(NAME, &format!("kubelet version {version}, node {}", k.node));
    k.sync_static();
    if p.bool("register-node", true) {
        k.register(&p);
    }
    let mut last_beat: Option<Instant> = None;
    loop {
        if last_beat.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            k.heartbeat();
            last_beat = Some(Instant::now());
        }
        k.sync_static();
        k.sync_bound();
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flag_removed_in_a_release_is_unknown_to_it() {
        let args = vec!["--pod-infra-container-image=registry.k8s.io/pause:3.10".to_string()];
        assert!(crate::flags::parse(&args, &flags_at(34)).is_ok());
        let err = crate::flags::parse(&args, &flags_at(35)).unwrap_err();
        assert!(err.contains("pod-infra-container-image"), "{err}");
        assert_eq!(flags_at(37).len(), FLAGS.len() - 1);
    }

    #[test]
    fn from_1_35_cgroup_v1_needs_fail_cgroup_v1_false() {
        let doc = |text: &str| -> Y { serde_yaml::from_str(text).unwrap() };
        let plain = doc("kind: KubeletConfiguration\n");
        let allowed = doc("failCgroupV1: false\n");
        let refused = doc("failCgroupV1: true\n");
        assert!(check_cgroup_v1(&plain, 34, false).is_ok());
        let err = check_cgroup_v1(&plain, 35, false).unwrap_err();
        assert!(err.contains("cgroup v1"), "{err}");
        assert!(check_cgroup_v1(&allowed, 37, false).is_ok());
        assert!(check_cgroup_v1(&refused, 34, false).is_err());
        // cgroup v2 hosts are never refused.
        assert!(check_cgroup_v1(&plain, 37, true).is_ok());
    }

    #[test]
    fn node_labels_the_kubelet_may_not_set_are_refused() {
        assert!(check_node_labels("").is_ok());
        assert!(
            check_node_labels("disk=ssd,topology.kubernetes.io/zone=a,node.kubernetes.io/pool=b")
                .is_ok()
        );
        let e = check_node_labels("disk=ssd,node-role.kubernetes.io/worker=").unwrap_err();
        assert!(e.contains("[node-role.kubernetes.io/worker]"), "{e}");
    }

    #[test]
    fn images() {
        assert_eq!(
            split_image("registry.k8s.io/kube-apiserver:v1.32.4"),
            ("registry.k8s.io/kube-apiserver".into(), "v1.32.4".into())
        );
        assert_eq!(
            split_image("localhost:5000/x"),
            ("localhost:5000/x".into(), "latest".into())
        );
        assert_eq!(
            split_image("r/x@sha256:ab"),
            ("r/x".into(), "sha256:ab".into())
        );
    }
}
