//! kubelet stand-in: registers its Node, keeps it Ready (status + Lease), runs the static pods
//! of staticPodPath as host processes from the image store, posts their mirror pods, marks
//! pods bound to it Running, serves :10250 (TLS) and :10248 (/healthz).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use serde_yaml::Value as Y;

use crate::client::Api;
use crate::common::{self, log};
use crate::flags::Kind::{Bool as B, Value as V};
use crate::flags::{Kind, Parsed};
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

struct Config {
    static_pod_path: Option<String>,
    tls_cert: Option<String>,
    tls_key: Option<String>,
    client_ca: Option<String>,
    port: u16,
    address: String,
    healthz_port: u16,
    healthz_bind: String,
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

fn load_config(p: &Parsed) -> Result<Config, String> {
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
    };
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
fn resolve(container: &Value) -> Result<(PathBuf, Vec<String>), String> {
    let image = container["image"]
        .as_str()
        .ok_or("container has no image")?;
    let (repo, tag) = split_image(image);
    let dir = image_store().join(&repo).join(&tag);
    let strs = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut command = strs(&container["command"]);
    let args = strs(&container["args"]);
    if !dir.is_dir() {
        return Err(format!(
            "failed to pull image {image:?}: not found in the image store ({} does not exist)",
            dir.display()
        ));
    }
    if command.is_empty() {
        return Err(format!(
            "image {image:?}: the container has no command (the image store has no entrypoints)"
        ));
    }
    let first = command.remove(0);
    let base = Path::new(&first)
        .file_name()
        .map(|b| b.to_string_lossy().into_owned())
        .unwrap_or(first.clone());
    let exe = dir.join(&base);
    if !exe.is_file() {
        return Err(format!(
            "image {image:?} has no executable {base:?} ({} is missing): exec: \"{first}\": executable file not found",
            exe.display()
        ));
    }
    command.extend(args);
    Ok((exe, command))
}

struct Ctr {
    name: String,
    child: Option<Child>,
    restarts: u32,
    next_start: Instant,
    waiting: Option<(String, String)>,
    started: String,
}

struct StaticPod {
    hash: String,
    pod: Value,
    ctrs: Vec<Ctr>,
    posted: bool,
}

fn stop(c: &mut Ctr) {
    if let Some(mut ch) = c.child.take() {
        if let Ok(pid) = i32::try_from(ch.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            if matches!(ch.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = ch.kill();
        let _ = ch.wait();
    }
}

struct Kubelet {
    api: Api,
    node: String,
    version: String,
    node_ip: String,
    cfg: Config,
    log_dir: PathBuf,
    pods: HashMap<PathBuf, StaticPod>,
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

    fn start(&self, file: &Path, pod: &Value, c: &mut Ctr, spec: &Value) {
        match resolve(spec) {
            Err(e) => {
                if c.waiting.as_ref().is_none_or(|(_, m)| *m != e) {
                    log(
                        NAME,
                        &format!("static pod {}: container {}: {e}", file.display(), c.name),
                    );
                }
                c.waiting = Some(("ErrImagePull".into(), e));
                c.next_start = Instant::now() + Duration::from_secs(5);
            }
            Ok((exe, args)) => {
                let log_path = self.log_dir.join(format!(
                    "{}_{}.log",
                    pod["metadata"]["name"].as_str().unwrap_or("pod"),
                    c.name
                ));
                let out = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log_path);
                let mut cmd = Command::new(&exe);
                cmd.args(&args).stdin(Stdio::null());
                use std::os::unix::process::CommandExt;
                cmd.process_group(0);
                if let Some(wd) = spec["workingDir"].as_str() {
                    cmd.current_dir(wd);
                }
                for e in spec["env"].as_array().cloned().unwrap_or_default() {
                    if let (Some(k), Some(v)) = (e["name"].as_str(), e["value"].as_str()) {
                        cmd.env(k, v);
                    }
                }
                if let Ok(f) = out
                    && let Ok(f2) = f.try_clone()
                {
                    cmd.stdout(f).stderr(f2);
                }
                match cmd.spawn() {
                    Ok(ch) => {
                        log(
                            NAME,
                            &format!(
                                "started container {} of static pod {} ({})",
                                c.name,
                                file.display(),
                                exe.display()
                            ),
                        );
                        c.child = Some(ch);
                        c.waiting = None;
                        c.started = timefmt::now();
                    }
                    Err(e) => {
                        c.waiting = Some((
                            "RunContainerError".into(),
                            format!("{}: {e}", exe.display()),
                        ));
                        c.next_start = Instant::now() + Duration::from_secs(10);
                    }
                }
            }
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
                if let Some(mut old) = self.pods.remove(&path) {
                    log(
                        NAME,
                        &format!("static pod manifest {} changed: restarting", path.display()),
                    );
                    for c in &mut old.ctrs {
                        stop(c);
                    }
                    let (ns, n) = self.mirror_name(&old.pod);
                    let _ = self
                        .api
                        .delete(&format!("/api/v1/namespaces/{ns}/pods/{n}"));
                }
                let ctrs = pod["spec"]["containers"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|c| Ctr {
                        name: c["name"].as_str().unwrap_or("c").to_string(),
                        child: None,
                        restarts: 0,
                        next_start: Instant::now(),
                        waiting: None,
                        started: String::new(),
                    })
                    .collect();
                self.pods.insert(
                    path,
                    StaticPod {
                        hash,
                        pod,
                        ctrs,
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
            if let Some(mut old) = self.pods.remove(&p) {
                log(
                    NAME,
                    &format!("static pod manifest {} removed: stopping", p.display()),
                );
                for c in &mut old.ctrs {
                    stop(c);
                }
                let (ns, n) = self.mirror_name(&old.pod);
                let _ = self
                    .api
                    .delete(&format!("/api/v1/namespaces/{ns}/pods/{n}"));
            }
        }
        // Run, restart with back-off, report.
        let files: Vec<PathBuf> = self.pods.keys().cloned().collect();
        for f in files {
            let Some(mut sp) = self.pods.remove(&f) else {
                continue;
            };
            let specs = sp.pod["spec"]["containers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for (c, spec) in sp.ctrs.iter_mut().zip(specs.iter()) {
                if let Some(ch) = c.child.as_mut()
                    && let Ok(Some(st)) = ch.try_wait()
                {
                    c.child = None;
                    c.restarts += 1;
                    let backoff = Duration::from_secs(
                        (10u64 << c.restarts.min(5).saturating_sub(1)).min(300),
                    );
                    c.next_start = Instant::now() + backoff;
                    let msg = format!(
                        "back-off {}s restarting failed container={} ({st})",
                        backoff.as_secs(),
                        c.name
                    );
                    log(NAME, &format!("static pod {}: {msg}", f.display()));
                    c.waiting = Some(("CrashLoopBackOff".into(), msg));
                }
                if c.child.is_none() && Instant::now() >= c.next_start {
                    self.start(&f, &sp.pod, c, spec);
                }
            }
            self.post_mirror(&mut sp);
            self.pods.insert(f, sp);
        }
    }

    fn post_mirror(&self, sp: &mut StaticPod) {
        let (ns, name) = self.mirror_name(&sp.pod);
        if !sp.posted {
            let mut m = sp.pod.clone();
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
                Ok(r) if r.ok() => sp.posted = true,
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
        let statuses: Vec<Value> = sp.ctrs.iter().map(|c| {
            let state = match (&c.child, &c.waiting) {
                (Some(_), _) => json!({"running": {"startedAt": c.started}}),
                (None, Some((r, m))) => json!({"waiting": {"reason": r, "message": m}}),
                (None, None) => json!({"waiting": {"reason": "ContainerCreating"}}),
            };
            let image = sp.pod["spec"]["containers"].as_array().and_then(|a| a.iter().find(|x| x["name"] == c.name.as_str())).map(|x| x["image"].clone()).unwrap_or_default();
            json!({"name": c.name, "ready": c.child.is_some(), "started": c.child.is_some(), "restartCount": c.restarts, "image": image, "imageID": "", "state": state})
        }).collect();
        let all = sp.ctrs.iter().all(|c| c.child.is_some());
        let phase = if all { "Running" } else { "Pending" };
        let cond = if all { "True" } else { "False" };
        let status = json!({"status": {"phase": phase, "hostIP": self.node_ip, "podIP": self.node_ip, "podIPs": [{"ip": self.node_ip}],
            "conditions": [{"type": "Ready", "status": cond}, {"type": "ContainersReady", "status": cond}, {"type": "PodScheduled", "status": "True"}],
            "containerStatuses": statuses}});
        match self.api.merge_patch(
            &format!("/api/v1/namespaces/{ns}/pods/{name}/status"),
            &status,
        ) {
            Ok(r) if r.status == 404 => sp.posted = false,
            _ => {}
        }
    }

    /// Pods the scheduler bound here: reported Running (nothing is run for them).
    fn sync_bound(&self) {
        let sel = format!("spec.nodeName%3D{}", self.node);
        let Ok(r) = self.api.get(&format!("/api/v1/pods?fieldSelector={sel}")) else {
            return;
        };
        for p in r.body["items"].as_array().cloned().unwrap_or_default() {
            if p["metadata"]["annotations"]["kubernetes.io/config.mirror"].is_string()
                || p["status"]["phase"] == "Running"
            {
                continue;
            }
            let ns = p["metadata"]["namespace"].as_str().unwrap_or("default");
            let name = p["metadata"]["name"].as_str().unwrap_or("");
            let statuses: Vec<Value> = p["spec"]["containers"].as_array().cloned().unwrap_or_default().iter().map(|c| json!({
                "name": c["name"], "ready": true, "started": true, "restartCount": 0, "image": c["image"], "imageID": "",
                "state": {"running": {"startedAt": timefmt::now()}}})).collect();
            let st = json!({"status": {"phase": "Running", "hostIP": self.node_ip, "startTime": timefmt::now(),
                "conditions": [{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}], "containerStatuses": statuses}});
            let _ = self
                .api
                .merge_patch(&format!("/api/v1/namespaces/{ns}/pods/{name}/status"), &st);
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

fn serve(cfg: &Config) -> Result<(), String> {
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
    let tls = crate::tls::server_config(key, roots)?;
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
            let h: crate::server::Handler =
                Arc::new(|r: crate::server::Request| match r.path.as_str() {
                    "/healthz" | "/healthz/ping" | "/healthz/syncloop" => {
                        crate::server::Response::text(200, "ok")
                    }
                    _ => crate::server::Response::text(404, "404 page not found"),
                });
            tokio::join!(
                crate::server::serve(a, Some(tls), h.clone()),
                crate::server::serve(b, None, h)
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
    let (p, version) = common::start(NAME, args, FLAGS);
    let setup = || -> Result<Kubelet, String> {
        check_node_labels(p.get("node-labels").unwrap_or(""))?;
        let cfg = load_config(&p)?;
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
        let log_dir = Path::new(root).join("standin-logs");
        std::fs::create_dir_all(&log_dir).map_err(|e| format!("--root-dir {root}: {e}"))?;
        serve(&cfg)?;
        Ok(Kubelet {
            api,
            node,
            version: version.clone(),
            node_ip,
            cfg,
            log_dir,
            pods: HashMap::new(),
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
            k.sync_bound();
            last_beat = Some(Instant::now());
        }
        k.sync_static();
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
