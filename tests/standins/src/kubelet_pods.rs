//! The kubelet stand-in's pod runtime, shared by static pods and pods bound to the node: each
//! container is a host process (executable from the image store) in its own mount namespace
//! (util-linux `unshare --mount` + `mount --bind`) where its volumes and /etc/resolv.conf
//! appear; init containers, restarts with back-off, httpGet/tcpSocket probes, logs under
//! /var/log/pods and the pod status the real kubelet reports.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

use crate::client::Api;
use crate::common::log;
use crate::timefmt;

const NAME: &str = "kubelet";
/// Where the real kubelet keeps container logs.
pub const POD_LOG_DIR: &str = "/var/log/pods";
const SA_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The pod log root: /var/log/pods, or CAPSTAN_STANDIN_POD_LOG_DIR (tests).
pub fn pod_log_dir() -> PathBuf {
    std::env::var_os("CAPSTAN_STANDIN_POD_LOG_DIR")
        .map_or_else(|| PathBuf::from(POD_LOG_DIR), PathBuf::from)
}

/// What every pod of this kubelet shares.
pub struct Node {
    pub api: Api,
    pub name: String,
    pub ip: String,
    /// --root-dir: volumes live under <root>/pods/<uid>/volumes.
    pub root: PathBuf,
    pub log_root: PathBuf,
    /// The kubelet config's resolvConf ("" = none).
    pub resolv_conf: String,
    pub cluster_dns: Vec<String>,
    pub cluster_domain: String,
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The executable for a container: `<store>/<repo>/<tag>/<basename of command[0]>`, or of
/// the image's `.entrypoint` when the container has no command; `args` follow.
pub fn resolve(container: &Value) -> Result<(PathBuf, Vec<String>), String> {
    let image = container["image"]
        .as_str()
        .ok_or("container has no image")?;
    let (repo, tag) = crate::kubelet::split_image(image);
    let dir = crate::kubelet::image_store().join(&repo).join(&tag);
    let mut command = strs(&container["command"]);
    let args = strs(&container["args"]);
    if !dir.is_dir() {
        return Err(format!(
            "failed to pull image {image:?}: not found in the image store ({} does not exist)",
            dir.display()
        ));
    }
    if command.is_empty() {
        let ep = std::fs::read_to_string(dir.join(".entrypoint")).unwrap_or_default();
        let ep = ep.trim();
        if ep.is_empty() {
            return Err(format!(
                "image {image:?}: no command specified (the container has no command and the image no entrypoint: {} is missing or empty)",
                dir.join(".entrypoint").display()
            ));
        }
        command.push(ep.to_string());
    }
    let first = command.remove(0);
    let base = Path::new(&first)
        .file_name()
        .map_or_else(|| first.clone(), |b| b.to_string_lossy().into_owned());
    let exe = dir.join(&base);
    if !exe.is_file() {
        return Err(format!(
            "image {image:?} has no executable {base:?} ({} is missing): exec: \"{first}\": executable file not found in $PATH",
            exe.display()
        ));
    }
    command.extend(args);
    Ok((exe, command))
}

/// Kubernetes' `$(VAR)` expansion: known names are replaced, `$$` is a literal `$`, unknown
/// references stay as written.
pub fn expand(s: &str, vars: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(a) = after.strip_prefix('$') {
            out.push('$');
            rest = a;
        } else if let Some(body) = after.strip_prefix('(')
            && let Some(end) = body.find(')')
        {
            let name = &body[..end];
            match vars.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => out.push_str(&format!("$({name})")),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The resolv.conf the real kubelet writes for a pod.
pub fn resolv_conf(pod: &Value, node: &Node) -> Result<String, String> {
    let spec = &pod["spec"];
    let host_net = spec["hostNetwork"].as_bool().unwrap_or(false);
    let policy = spec["dnsPolicy"].as_str().unwrap_or("ClusterFirst");
    let host = if node.resolv_conf.is_empty() {
        String::new()
    } else {
        std::fs::read_to_string(&node.resolv_conf)
            .map_err(|e| format!("open {}: {e}", node.resolv_conf))?
    };
    let host_search: Vec<String> = host
        .lines()
        .filter_map(|l| l.trim().strip_prefix("search"))
        .flat_map(|s| s.split_whitespace().map(String::from).collect::<Vec<_>>())
        .collect();
    let cluster = match policy {
        "ClusterFirstWithHostNet" => true,
        "ClusterFirst" => !host_net,
        "None" => {
            let c = &spec["dnsConfig"];
            let mut t = String::new();
            for n in strs(&c["nameservers"]) {
                t.push_str(&format!("nameserver {n}\n"));
            }
            let s = strs(&c["searches"]);
            if !s.is_empty() {
                t.push_str(&format!("search {}\n", s.join(" ")));
            }
            let opts: Vec<String> = c["options"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .filter_map(|o| {
                    let n = o["name"].as_str()?;
                    Some(
                        o["value"]
                            .as_str()
                            .map_or(n.to_string(), |v| format!("{n}:{v}")),
                    )
                })
                .collect();
            if !opts.is_empty() {
                t.push_str(&format!("options {}\n", opts.join(" ")));
            }
            return Ok(t);
        }
        _ => false,
    };
    if !cluster || node.cluster_dns.is_empty() {
        return Ok(host);
    }
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("default");
    let d = &node.cluster_domain;
    let mut search = vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.clone()];
    search.extend(host_search);
    let mut t: String = node
        .cluster_dns
        .iter()
        .map(|n| format!("nameserver {n}\n"))
        .collect();
    t.push_str(&format!("search {}\noptions ndots:5\n", search.join(" ")));
    Ok(t)
}

/// The TokenRequest the kubelet posts for a pod's service account token.
pub fn token_request(pod: &Value, audiences: &[String], expiration: u64) -> Value {
    json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"audiences": audiences, "expirationSeconds": expiration,
                 "boundObjectRef": {"apiVersion": "v1", "kind": "Pod",
                     "name": pod["metadata"]["name"], "uid": pod["metadata"]["uid"]}}})
}

fn field_ref(pod: &Value, node: &Node, path: &str) -> Result<String, String> {
    let m = &pod["metadata"];
    Ok(match path {
        "metadata.name" => m["name"].as_str().unwrap_or("").into(),
        "metadata.namespace" => m["namespace"].as_str().unwrap_or("default").into(),
        "metadata.uid" => m["uid"].as_str().unwrap_or("").into(),
        "spec.nodeName" => node.name.clone(),
        "spec.serviceAccountName" => pod["spec"]["serviceAccountName"]
            .as_str()
            .unwrap_or("default")
            .into(),
        "status.podIP" | "status.hostIP" => node.ip.clone(),
        p => {
            if let Some(k) = p
                .strip_prefix("metadata.labels['")
                .and_then(|k| k.strip_suffix("']"))
            {
                return Ok(m["labels"][k].as_str().unwrap_or("").into());
            }
            if let Some(k) = p
                .strip_prefix("metadata.annotations['")
                .and_then(|k| k.strip_suffix("']"))
            {
                return Ok(m["annotations"][k].as_str().unwrap_or("").into());
            }
            return Err(format!("unsupported fieldRef fieldPath {p:?}"));
        }
    })
}

fn get_object(api: &Api, ns: &str, kind: &str, name: &str) -> Result<Option<Value>, String> {
    let r = api.get(&format!("/api/v1/namespaces/{ns}/{kind}/{name}"))?;
    match r.status {
        404 => Ok(None),
        s if (200..300).contains(&s) => Ok(Some(r.body)),
        _ => Err(r.message()),
    }
}

/// The string data of a ConfigMap (`data` and `binaryData`) or Secret (`data`, base64).
fn object_data(obj: &Value, secret: bool) -> Vec<(String, Vec<u8>)> {
    let b64 = |s: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    if let Some(d) = obj["data"].as_object() {
        for (k, v) in d {
            let s = v.as_str().unwrap_or("");
            out.push((
                k.clone(),
                if secret {
                    b64(s)
                } else {
                    s.as_bytes().to_vec()
                },
            ));
        }
    }
    if !secret && let Some(d) = obj["binaryData"].as_object() {
        for (k, v) in d {
            out.push((k.clone(), b64(v.as_str().unwrap_or(""))));
        }
    }
    out
}

/// Picks `items` (key -> path) or every key.
fn select_items(
    data: &[(String, Vec<u8>)],
    items: &Value,
    what: &str,
) -> Result<Vec<(String, Vec<u8>)>, String> {
    let Some(items) = items.as_array() else {
        return Ok(data.to_vec());
    };
    items
        .iter()
        .map(|it| {
            let key = it["key"].as_str().unwrap_or("");
            let path = it["path"].as_str().unwrap_or(key);
            data.iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| (path.to_string(), v.clone()))
                .ok_or_else(|| format!("configuration error: {what} has no key {key:?}"))
        })
        .collect()
}

fn write_files(dir: &Path, files: &[(String, Vec<u8>)]) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for (p, data) in files {
        let f = dir.join(p);
        if let Some(parent) = f.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        let tmp = f.with_extension("standin-tmp");
        std::fs::write(&tmp, data).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &f).map_err(|e| format!("{}: {e}", f.display()))?;
    }
    Ok(())
}

struct Probe {
    failures: u32,
    successes: u32,
    next: Instant,
}

/// One container: its spec, its process and what its status reports.
pub struct Ctr {
    pub name: String,
    spec: Value,
    child: Option<Child>,
    pid: u32,
    pub restarts: u32,
    runs: u32,
    next_start: Instant,
    waiting: Option<(String, String)>,
    started: String,
    started_at: Instant,
    last: Option<Value>,
    /// Exit code of a container that will not run again (init containers, restartPolicy).
    done: Option<i32>,
    ready: bool,
    /// The startupProbe passed (or there is none).
    started_ok: bool,
    readiness: Probe,
    liveness: Probe,
    startup: Probe,
}

impl Ctr {
    fn new(spec: &Value) -> Ctr {
        let now = Instant::now();
        let p = || Probe {
            failures: 0,
            successes: 0,
            next: now,
        };
        Ctr {
            name: spec["name"].as_str().unwrap_or("c").to_string(),
            spec: spec.clone(),
            child: None,
            pid: 0,
            restarts: 0,
            runs: 0,
            next_start: now,
            waiting: None,
            started: String::new(),
            started_at: now,
            last: None,
            done: None,
            ready: false,
            started_ok: false,
            readiness: p(),
            liveness: p(),
            startup: p(),
        }
    }

    fn status(&self) -> Value {
        let state = match (&self.child, &self.done, &self.waiting) {
            (Some(_), _, _) => json!({"running": {"startedAt": self.started}}),
            (None, Some(_), _) => json!({"terminated": self.last.clone().unwrap_or(json!({}))}),
            (None, None, Some((r, m))) => json!({"waiting": {"reason": r, "message": m}}),
            (None, None, None) => json!({"waiting": {"reason": "ContainerCreating"}}),
        };
        let mut s = json!({"name": self.name, "ready": self.ready, "started": self.child.is_some() && self.started_ok,
            "restartCount": self.restarts, "image": self.spec["image"], "imageID": "", "state": state,
            "lastState": {}});
        if self.runs > 0 {
            s["containerID"] = json!(format!("standin://{}", self.pid));
        }
        if let Some(l) = &self.last
            && self.done.is_none()
        {
            s["lastState"] = json!({"terminated": l});
        }
        s
    }
}

/// Sends SIGTERM to a container's process group, then SIGKILL after `grace`; waits in a
/// thread of its own, then runs `after`.
fn kill_later(child: Option<Child>, grace: Duration, after: impl FnOnce() + Send + 'static) {
    std::thread::spawn(move || {
        if let Some(mut ch) = child {
            let pg = i32::try_from(ch.id()).map(nix::unistd::Pid::from_raw);
            if let Ok(pg) = pg {
                let _ = nix::sys::signal::killpg(pg, nix::sys::signal::Signal::SIGTERM);
            }
            let t = Instant::now();
            while t.elapsed() < grace {
                if matches!(ch.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if let Ok(pg) = pg {
                let _ = nix::sys::signal::killpg(pg, nix::sys::signal::Signal::SIGKILL);
            }
            let _ = ch.kill();
            let _ = ch.wait();
        }
        after();
    });
}

/// The shell run inside the new mount namespace: binds each `KIND SRC DST RO` quadruple, then
/// execs what follows `--`.
const MOUNT_SCRIPT: &str = r#"set -e
while [ "$1" != -- ]; do
  kind=$1 src=$2 dst=$3 ro=$4; shift 4
  if [ "$kind" = f ]; then mkdir -p "$(dirname "$dst")"; [ -e "$dst" ] || : > "$dst"; else mkdir -p "$dst"; fi
  mount --bind "$src" "$dst"
  if [ "$ro" = ro ]; then mount -o remount,bind,ro "$dst"; fi
done
shift
exec "$@"
"#;

/// A pod the kubelet runs.
pub struct PodRun {
    pub pod: Value,
    /// The UID its volumes and logs are kept under (a static pod's config hash).
    pub uid: String,
    pub ns: String,
    /// The name it is reported under (a static pod's mirror name).
    pub name: String,
    /// From the API server (may use ConfigMaps, Secrets, tokens) or a static manifest.
    from_api: bool,
    init: Vec<Ctr>,
    pub ctrs: Vec<Ctr>,
    volumes: Option<HashMap<String, PathBuf>>,
    next_prepare: Instant,
    next_refresh: Instant,
    prepare_error: Option<String>,
    start_time: String,
    transitions: HashMap<String, (String, String)>,
    pub posted_status: Value,
}

impl PodRun {
    pub fn new(pod: Value, uid: &str, name: &str, from_api: bool) -> PodRun {
        let list = |k: &str| -> Vec<Ctr> {
            pod["spec"][k]
                .as_array()
                .map(|a| a.iter().map(Ctr::new).collect())
                .unwrap_or_default()
        };
        let now = Instant::now();
        PodRun {
            ns: pod["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string(),
            name: name.to_string(),
            uid: uid.to_string(),
            from_api,
            init: list("initContainers"),
            ctrs: list("containers"),
            pod,
            volumes: None,
            next_prepare: now,
            next_refresh: now + Duration::from_secs(30),
            prepare_error: None,
            start_time: timefmt::now(),
            transitions: HashMap::new(),
            posted_status: Value::Null,
        }
    }

    fn pod_dir(&self, node: &Node) -> PathBuf {
        node.root.join("pods").join(&self.uid)
    }

    pub fn log_dir(&self, node: &Node) -> PathBuf {
        node.log_root
            .join(format!("{}_{}_{}", self.ns, self.name, self.uid))
    }

    fn event(&self, node: &Node, reason: &str, msg: &str, warning: bool) {
        log(
            NAME,
            &format!("pod {}/{}: {reason}: {msg}", self.ns, self.name),
        );
        if !self.from_api {
            return;
        }
        let now = timefmt::now();
        let ev = json!({"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": format!("{}.{}", self.name, crate::common::random_hex(16)), "namespace": self.ns},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": self.ns, "name": self.name, "uid": self.pod["metadata"]["uid"]},
            "reason": reason, "message": msg, "type": if warning { "Warning" } else { "Normal" },
            "source": {"component": "kubelet", "host": node.name}, "reportingComponent": "kubelet", "reportingInstance": node.name,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1});
        let _ = node
            .api
            .post(&format!("/api/v1/namespaces/{}/events", self.ns), &ev);
    }

    /// Whether the pod gets the service account projection the real admission adds.
    fn wants_sa_token(&self) -> bool {
        self.from_api && self.pod["spec"]["automountServiceAccountToken"].as_bool() != Some(false)
    }

    fn sa_token(&self, node: &Node, audiences: &[String], exp: u64) -> Result<Vec<u8>, String> {
        let sa = self.pod["spec"]["serviceAccountName"]
            .as_str()
            .unwrap_or("default");
        let path = format!("/api/v1/namespaces/{}/serviceaccounts/{sa}/token", self.ns);
        let r = node
            .api
            .post(&path, &token_request(&self.pod, audiences, exp))?;
        if !r.ok() {
            return Err(format!(
                "failed to fetch token for service account {}/{sa}: {}",
                self.ns,
                r.message()
            ));
        }
        r.body["status"]["token"]
            .as_str()
            .map(|t| t.as_bytes().to_vec())
            .ok_or_else(|| format!("TokenRequest for {}/{sa}: no status.token", self.ns))
    }

    fn configmap_files(
        &self,
        node: &Node,
        src: &Value,
        secret: bool,
    ) -> Result<Vec<(String, Vec<u8>)>, String> {
        let (kind, key) = if secret {
            ("secrets", "secretName")
        } else {
            ("configmaps", "name")
        };
        let name = src[key].as_str().unwrap_or("");
        let what = format!("{} {}/{name}", &kind[..kind.len() - 1], self.ns);
        match get_object(&node.api, &self.ns, kind, name)? {
            Some(o) => select_items(&object_data(&o, secret), &src["items"], &what),
            None if src["optional"].as_bool() == Some(true) => Ok(Vec::new()),
            None => Err(format!("{kind} {name:?} not found")),
        }
    }

    fn projected_files(
        &self,
        node: &Node,
        sources: &Value,
    ) -> Result<Vec<(String, Vec<u8>)>, String> {
        let mut files = Vec::new();
        for s in sources.as_array().cloned().unwrap_or_default() {
            if let Some(t) = s.get("serviceAccountToken") {
                let aud = t["audience"].as_str().map(String::from);
                let exp = t["expirationSeconds"].as_u64().unwrap_or(3607);
                let tok = self.sa_token(node, &aud.into_iter().collect::<Vec<_>>(), exp)?;
                files.push((t["path"].as_str().unwrap_or("token").to_string(), tok));
            } else if let Some(c) = s.get("configMap") {
                files.extend(self.configmap_files(node, c, false)?);
            } else if let Some(c) = s.get("secret") {
                files.extend(self.configmap_files(node, c, true)?);
            } else if let Some(d) = s.get("downwardAPI") {
                for it in d["items"].as_array().cloned().unwrap_or_default() {
                    let fp = it["fieldRef"]["fieldPath"].as_str().unwrap_or("");
                    let v = field_ref(&self.pod, node, fp)?;
                    files.push((
                        it["path"].as_str().unwrap_or("").to_string(),
                        v.into_bytes(),
                    ));
                }
            }
        }
        Ok(files)
    }

    /// Sets up every volume under <root>/pods/<uid>/volumes (and the resolv.conf); the map
    /// is volume name -> host path.
    fn prepare(&self, node: &Node) -> Result<HashMap<String, PathBuf>, String> {
        let vdir = self.pod_dir(node).join("volumes");
        let mut out = HashMap::new();
        for v in self.pod["spec"]["volumes"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let name = v["name"].as_str().unwrap_or("").to_string();
            let fail = |e: String| format!("MountVolume.SetUp failed for volume {name:?} : {e}");
            let path = if let Some(h) = v.get("hostPath") {
                let p = PathBuf::from(h["path"].as_str().unwrap_or(""));
                let ty = h["type"].as_str().unwrap_or("");
                match ty {
                    "DirectoryOrCreate" => std::fs::create_dir_all(&p)
                        .map_err(|e| fail(format!("{}: {e}", p.display())))?,
                    "FileOrCreate" if !p.exists() => {
                        if let Some(d) = p.parent() {
                            std::fs::create_dir_all(d).map_err(|e| fail(e.to_string()))?;
                        }
                        std::fs::write(&p, b"").map_err(|e| fail(e.to_string()))?;
                    }
                    "Directory" if !p.is_dir() => {
                        return Err(fail(format!(
                            "hostPath type check failed: {} is not a directory",
                            p.display()
                        )));
                    }
                    "File" if !p.is_file() => {
                        return Err(fail(format!(
                            "hostPath type check failed: {} is not a file",
                            p.display()
                        )));
                    }
                    "Socket" | "CharDevice" | "BlockDevice" if !p.exists() => {
                        return Err(fail(format!(
                            "hostPath type check failed: {} is not a {ty}",
                            p.display()
                        )));
                    }
                    // No type: as containerd's CRI does, a missing path becomes a folder.
                    "" if !p.exists() => std::fs::create_dir_all(&p)
                        .map_err(|e| fail(format!("{}: {e}", p.display())))?,
                    _ => {}
                }
                p
            } else if v.get("emptyDir").is_some() {
                let p = vdir.join("kubernetes.io~empty-dir").join(&name);
                std::fs::create_dir_all(&p).map_err(|e| fail(e.to_string()))?;
                p
            } else if !self.from_api {
                return Err(fail(
                    "static pods may only use hostPath and emptyDir volumes".into(),
                ));
            } else if let Some(c) = v.get("configMap") {
                let p = vdir.join("kubernetes.io~configmap").join(&name);
                write_files(&p, &self.configmap_files(node, c, false).map_err(fail)?)
                    .map_err(fail)?;
                p
            } else if let Some(c) = v.get("secret") {
                let p = vdir.join("kubernetes.io~secret").join(&name);
                write_files(&p, &self.configmap_files(node, c, true).map_err(fail)?)
                    .map_err(fail)?;
                p
            } else if let Some(c) = v.get("projected") {
                let p = vdir.join("kubernetes.io~projected").join(&name);
                write_files(
                    &p,
                    &self.projected_files(node, &c["sources"]).map_err(fail)?,
                )
                .map_err(fail)?;
                p
            } else if let Some(d) = v.get("downwardAPI") {
                let p = vdir.join("kubernetes.io~downward-api").join(&name);
                let src = json!([{"downwardAPI": d}]);
                write_files(&p, &self.projected_files(node, &src).map_err(fail)?).map_err(fail)?;
                p
            } else {
                return Err(fail(
                    "volume type not supported by this stand-in kubelet".into(),
                ));
            };
            out.insert(name, path);
        }
        if self.wants_sa_token() && !self.mounts_sa_path() {
            let name = "kube-api-access-standin";
            let p = vdir.join("kubernetes.io~projected").join(name);
            let src = json!([
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]);
            let fail = |e: String| format!("MountVolume.SetUp failed for volume {name:?} : {e}");
            write_files(&p, &self.projected_files(node, &src).map_err(fail)?).map_err(fail)?;
            out.insert(name.to_string(), p);
        }
        let rc = resolv_conf(&self.pod, node)?;
        let dir = self.pod_dir(node);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        std::fs::write(dir.join("resolv.conf"), rc).map_err(|e| e.to_string())?;
        Ok(out)
    }

    fn mounts_sa_path(&self) -> bool {
        self.init.iter().chain(&self.ctrs).any(|c| {
            c.spec["volumeMounts"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["mountPath"] == SA_PATH))
        })
    }

    fn env(&self, node: &Node, spec: &Value) -> Result<Vec<(String, String)>, String> {
        let mut vars = Vec::new();
        if self.from_api
            && let Ok(Some(svc)) = get_object(&node.api, "default", "services", "kubernetes")
            && let Some(ip) = svc["spec"]["clusterIP"].as_str()
        {
            let port = svc["spec"]["ports"]
                .as_array()
                .and_then(|p| p.iter().find(|p| p["name"] == "https").or(p.first()))
                .and_then(|p| p["port"].as_u64())
                .unwrap_or(443);
            vars.push(("KUBERNETES_SERVICE_HOST".into(), ip.to_string()));
            vars.push(("KUBERNETES_SERVICE_PORT".into(), port.to_string()));
            vars.push(("KUBERNETES_SERVICE_PORT_HTTPS".into(), port.to_string()));
            vars.push(("KUBERNETES_PORT".into(), format!("tcp://{ip}:{port}")));
        }
        for e in spec["env"].as_array().cloned().unwrap_or_default() {
            let Some(k) = e["name"].as_str() else {
                continue;
            };
            let vf = &e["valueFrom"];
            let v = if let Some(v) = e["value"].as_str() {
                expand(v, &vars)
            } else if let Some(p) = vf["fieldRef"]["fieldPath"].as_str() {
                field_ref(&self.pod, node, p)?
            } else if vf["configMapKeyRef"].is_object() || vf["secretKeyRef"].is_object() {
                let secret = vf["secretKeyRef"].is_object();
                let r = if secret {
                    &vf["secretKeyRef"]
                } else {
                    &vf["configMapKeyRef"]
                };
                let (name, key) = (
                    r["name"].as_str().unwrap_or(""),
                    r["key"].as_str().unwrap_or(""),
                );
                let kind = if secret { "secrets" } else { "configmaps" };
                let obj = get_object(&node.api, &self.ns, kind, name)?;
                let val = obj.and_then(|o| {
                    object_data(&o, secret)
                        .into_iter()
                        .find(|(kk, _)| kk == key)
                        .map(|(_, v)| String::from_utf8_lossy(&v).into_owned())
                });
                match val {
                    Some(v) => v,
                    None if r["optional"].as_bool() == Some(true) => continue,
                    None => {
                        return Err(format!(
                            "couldn't find key {key} in {} {}/{name}",
                            &kind[..kind.len() - 1],
                            self.ns
                        ));
                    }
                }
            } else {
                String::new()
            };
            vars.push((k.to_string(), v));
        }
        Ok(vars)
    }

    /// Starts `c` in its own mount namespace.
    fn launch(&self, node: &Node, c: &Ctr) -> Result<Child, (String, String)> {
        let (exe, args) = resolve(&c.spec).map_err(|e| ("ErrImagePull".to_string(), e))?;
        let cfg = |e: String| ("CreateContainerConfigError".to_string(), e);
        let vars = self.env(node, &c.spec).map_err(cfg)?;
        let args: Vec<String> = args.iter().map(|a| expand(a, &vars)).collect();
        let vols = self
            .volumes
            .as_ref()
            .ok_or_else(|| cfg("volumes not ready".into()))?;
        let mut mounts: Vec<(String, PathBuf, String, bool)> = Vec::new();
        let mut vm = c.spec["volumeMounts"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if let Some(p) = vols.get("kube-api-access-standin") {
            mounts.push(("d".into(), p.clone(), SA_PATH.into(), true));
        }
        vm.sort_by_key(|m| m["mountPath"].as_str().unwrap_or("").len());
        for m in vm {
            let name = m["name"].as_str().unwrap_or("");
            let dst = m["mountPath"].as_str().unwrap_or("").to_string();
            let mut src = vols
                .get(name)
                .cloned()
                .ok_or_else(|| cfg(format!("volumeMount {name:?}: no volume of that name")))?;
            if let Some(sp) = m["subPath"].as_str().filter(|s| !s.is_empty()) {
                src = src.join(sp);
            }
            let kind = if src.is_dir() { "d" } else { "f" };
            mounts.push((kind.into(), src, dst, m["readOnly"].as_bool() == Some(true)));
        }
        mounts.push((
            "f".into(),
            self.pod_dir(node).join("resolv.conf"),
            "/etc/resolv.conf".into(),
            false,
        ));
        let dir = self.log_dir(node).join(&c.name);
        let ctr_err = |e: String| ("RunContainerError".to_string(), e);
        std::fs::create_dir_all(&dir).map_err(|e| ctr_err(format!("{}: {e}", dir.display())))?;
        let log_path = dir.join(format!("{}.log", c.restarts));
        let out = std::fs::File::create(&log_path)
            .map_err(|e| ctr_err(format!("{}: {e}", log_path.display())))?;
        let err = out.try_clone().map_err(|e| ctr_err(e.to_string()))?;
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--mount",
            "--propagation",
            "private",
            "/bin/sh",
            "-c",
            MOUNT_SCRIPT,
            "sh",
        ]);
        for (kind, src, dst, ro) in &mounts {
            cmd.arg(kind)
                .arg(src)
                .arg(dst)
                .arg(if *ro { "ro" } else { "rw" });
        }
        cmd.arg("--").arg(&exe).args(&args);
        cmd.env_clear()
            .env("PATH", DEFAULT_PATH)
            .env("HOSTNAME", self.hostname());
        for (k, v) in std::env::vars() {
            if k.starts_with("CAPSTAN_STANDIN_") {
                cmd.env(k, v);
            }
        }
        cmd.envs(vars);
        if let Some(wd) = c.spec["workingDir"].as_str() {
            let _ = std::fs::create_dir_all(wd);
            cmd.current_dir(wd);
        }
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let ch = cmd
            .spawn()
            .map_err(|e| ctr_err(format!("unshare (util-linux): {e}")))?;
        log(
            NAME,
            &format!(
                "started container {} of pod {}/{} ({}), pid {}",
                c.name,
                self.ns,
                self.name,
                exe.display(),
                ch.id()
            ),
        );
        Ok(ch)
    }

    /// A hostNetwork pod sees the node's hostname, others their pod name (or spec.hostname).
    fn hostname(&self) -> String {
        if self.pod["spec"]["hostNetwork"].as_bool() == Some(true) {
            return crate::common::hostname();
        }
        self.pod["spec"]["hostname"]
            .as_str()
            .or_else(|| self.pod["metadata"]["name"].as_str())
            .unwrap_or("")
            .to_string()
    }

    fn restart_policy(&self) -> &str {
        self.pod["spec"]["restartPolicy"]
            .as_str()
            .unwrap_or("Always")
    }

    /// Runs one round: volumes, init containers in order, containers, probes.
    pub fn step(&mut self, node: &Node) {
        let now = Instant::now();
        if self.volumes.is_none() {
            if now < self.next_prepare {
                return;
            }
            match self.prepare(node) {
                Ok(v) => {
                    self.volumes = Some(v);
                    self.prepare_error = None;
                }
                Err(e) => {
                    if self.prepare_error.as_deref() != Some(&e) {
                        self.event(node, "FailedMount", &e, true);
                    }
                    self.prepare_error = Some(e);
                    self.next_prepare = now + Duration::from_secs(5);
                    return;
                }
            }
        } else if now >= self.next_refresh && self.from_api {
            // ConfigMaps, Secrets and tokens are kept current, as the real kubelet does.
            self.next_refresh = now + Duration::from_secs(30);
            if let Ok(v) = self.prepare(node) {
                self.volumes = Some(v);
            }
        }
        let policy = self.restart_policy().to_string();
        // Init containers, in order, each to completion.
        let mut init = std::mem::take(&mut self.init);
        let mut blocked = false;
        for c in &mut init {
            if c.done == Some(0) {
                continue;
            }
            blocked = true;
            if c.done.is_some() {
                break;
            }
            let init_policy = if policy == "Always" {
                "OnFailure"
            } else {
                policy.as_str()
            };
            self.run_ctr(node, c, init_policy, false);
            if c.done != Some(0) {
                break;
            }
            blocked = false;
        }
        self.init = init;
        if blocked {
            return;
        }
        let mut ctrs = std::mem::take(&mut self.ctrs);
        for c in &mut ctrs {
            self.run_ctr(node, c, &policy, true);
        }
        self.ctrs = ctrs;
    }

    fn run_ctr(&self, node: &Node, c: &mut Ctr, policy: &str, probes: bool) {
        if c.done.is_some() {
            return;
        }
        let now = Instant::now();
        if let Some(ch) = c.child.as_mut()
            && let Ok(Some(st)) = ch.try_wait()
        {
            c.child = None;
            c.ready = false;
            let code = st.code().unwrap_or_else(|| {
                use std::os::unix::process::ExitStatusExt;
                128 + st.signal().unwrap_or(9)
            });
            c.last = Some(
                json!({"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" },
                "startedAt": c.started, "finishedAt": timefmt::now(), "containerID": format!("standin://{}", c.pid)}),
            );
            let restart = match policy {
                "Never" => false,
                "OnFailure" => code != 0,
                _ => true,
            };
            if !restart {
                c.done = Some(code);
                return;
            }
            // The back-off doubles from 10s up to 5 minutes, reset after 10 minutes of running.
            let ran = now.duration_since(c.started_at);
            let n = if ran > Duration::from_secs(600) {
                0
            } else {
                c.restarts.min(5)
            };
            let backoff = Duration::from_secs((10u64 << n).min(300));
            c.next_start = now + backoff;
            let msg = format!(
                "back-off {}s restarting failed container={} pod={}_{}({})",
                backoff.as_secs(),
                c.name,
                self.name,
                self.ns,
                self.uid
            );
            self.event(
                node,
                "BackOff",
                &format!("Back-off restarting failed container {} ({st})", c.name),
                true,
            );
            c.waiting = Some(("CrashLoopBackOff".into(), msg));
        }
        if c.child.is_none() && now >= c.next_start {
            if c.runs > 0 {
                c.restarts += 1;
            }
            match self.launch(node, c) {
                Ok(ch) => {
                    c.pid = ch.id();
                    c.child = Some(ch);
                    c.runs += 1;
                    c.waiting = None;
                    c.started = timefmt::now();
                    c.started_at = now;
                    c.ready = false;
                    c.readiness = Probe {
                        failures: 0,
                        successes: 0,
                        next: now,
                    };
                    c.liveness = Probe {
                        failures: 0,
                        successes: 0,
                        next: now,
                    };
                    c.startup = Probe {
                        failures: 0,
                        successes: 0,
                        next: now,
                    };
                    c.started_ok = !c.spec["startupProbe"].is_object();
                }
                Err((reason, e)) => {
                    if c.runs > 0 {
                        c.restarts -= 1;
                    }
                    if c.waiting.as_ref().is_none_or(|(_, m)| *m != e) {
                        self.event(node, "Failed", &e, true);
                    }
                    // As the real kubelet: each failed pull shows ErrImagePull, the
                    // back-off after it ImagePullBackOff.
                    let reason = if reason == "ErrImagePull"
                        && c.waiting.as_ref().is_some_and(|(r, _)| r == "ErrImagePull")
                    {
                        "ImagePullBackOff".to_string()
                    } else {
                        reason
                    };
                    c.waiting = Some((reason, e));
                    c.next_start = now + Duration::from_secs(5);
                }
            }
        }
        if probes && c.child.is_some() {
            self.probe_ctr(node, c);
        }
    }

    fn probe_ctr(&self, node: &Node, c: &mut Ctr) {
        let now = Instant::now();
        let since = now.duration_since(c.started_at);
        let spec = c.spec.clone();
        // Until the startupProbe passes, no other probe runs.
        let sp = &spec["startupProbe"];
        if !c.started_ok {
            if due(sp, &mut c.startup, since, now) {
                let (fail_t, _) = thresholds(sp);
                match run_probe(sp, &spec, &node.ip) {
                    Ok(()) => c.started_ok = true,
                    Err(e) => {
                        c.startup.failures += 1;
                        if c.startup.failures >= fail_t {
                            self.event(
                                node,
                                "Unhealthy",
                                &format!(
                                    "Startup probe failed: {e}; container {} will be restarted",
                                    c.name
                                ),
                                true,
                            );
                            c.startup.failures = 0;
                            kill_later_ref(c, self.grace());
                        }
                    }
                }
            }
            if !c.started_ok {
                return;
            }
        }
        let rp = &spec["readinessProbe"];
        if rp.is_object() {
            if due(rp, &mut c.readiness, since, now) {
                let (fail_t, succ_t) = thresholds(rp);
                match run_probe(rp, &spec, &node.ip) {
                    Ok(()) => {
                        c.readiness.failures = 0;
                        c.readiness.successes += 1;
                        if c.readiness.successes >= succ_t {
                            c.ready = true;
                        }
                    }
                    Err(e) => {
                        c.readiness.successes = 0;
                        c.readiness.failures += 1;
                        if c.readiness.failures >= fail_t {
                            if c.ready || c.readiness.failures == fail_t {
                                self.event(
                                    node,
                                    "Unhealthy",
                                    &format!("Readiness probe failed: {e}"),
                                    true,
                                );
                            }
                            c.ready = false;
                        }
                    }
                }
            }
        } else {
            c.ready = true;
        }
        let lp = &spec["livenessProbe"];
        if lp.is_object() && due(lp, &mut c.liveness, since, now) {
            let (fail_t, _) = thresholds(lp);
            match run_probe(lp, &spec, &node.ip) {
                Ok(()) => c.liveness.failures = 0,
                Err(e) => {
                    c.liveness.failures += 1;
                    if c.liveness.failures >= fail_t {
                        self.event(
                            node,
                            "Unhealthy",
                            &format!(
                                "Liveness probe failed: {e}; container {} will be restarted",
                                c.name
                            ),
                            true,
                        );
                        c.liveness.failures = 0;
                        let grace = self.grace();
                        kill_later_ref(c, grace);
                    }
                }
            }
        }
    }

    fn grace(&self) -> Duration {
        Duration::from_secs(
            self.pod["metadata"]["deletionGracePeriodSeconds"]
                .as_u64()
                .or_else(|| self.pod["spec"]["terminationGracePeriodSeconds"].as_u64())
                .unwrap_or(30),
        )
    }

    /// The pod's status, as the real kubelet reports it.
    pub fn status(&mut self, node: &Node) -> Value {
        let init_ok = self.init.iter().all(|c| c.done == Some(0));
        let running = self.ctrs.iter().filter(|c| c.child.is_some()).count();
        let all_done = !self.ctrs.is_empty() && self.ctrs.iter().all(|c| c.done.is_some());
        let init_failed = self.init.iter().any(|c| c.done.is_some_and(|x| x != 0));
        let phase = if init_failed || (all_done && self.ctrs.iter().any(|c| c.done != Some(0))) {
            "Failed"
        } else if all_done {
            "Succeeded"
        } else if init_ok && (running > 0 || self.ctrs.iter().any(|c| c.runs > 0)) {
            "Running"
        } else {
            "Pending"
        };
        let ready = init_ok && self.ctrs.iter().all(|c| c.child.is_some() && c.ready);
        let b = |x: bool| if x { "True" } else { "False" };
        let mut conds = Vec::new();
        for (ty, st) in [
            ("PodReadyToStartContainers", b(self.volumes.is_some())),
            ("Initialized", b(init_ok)),
            ("Ready", b(ready)),
            ("ContainersReady", b(ready)),
            ("PodScheduled", "True"),
        ] {
            let e = self
                .transitions
                .entry(ty.to_string())
                .or_insert_with(|| (st.to_string(), timefmt::now()));
            if e.0 != st {
                *e = (st.to_string(), timefmt::now());
            }
            let mut c =
                json!({"type": ty, "status": st, "lastProbeTime": null, "lastTransitionTime": e.1});
            if st == "False" && (ty == "Ready" || ty == "ContainersReady") {
                let not: Vec<&str> = self
                    .ctrs
                    .iter()
                    .filter(|c| !(c.child.is_some() && c.ready))
                    .map(|c| c.name.as_str())
                    .collect();
                c["reason"] = json!("ContainersNotReady");
                c["message"] = json!(format!(
                    "containers with unready status: [{}]",
                    not.join(" ")
                ));
            }
            if st == "False" && ty == "Initialized" {
                c["reason"] = json!("ContainersNotInitialized");
            }
            conds.push(c);
        }
        let mut st = json!({"phase": phase, "hostIP": node.ip, "hostIPs": [{"ip": node.ip}],
            "podIP": node.ip, "podIPs": [{"ip": node.ip}], "startTime": self.start_time,
            "qosClass": "BestEffort", "conditions": conds,
            "containerStatuses": self.ctrs.iter().map(Ctr::status).collect::<Vec<_>>()});
        if !self.init.is_empty() {
            st["initContainerStatuses"] = json!(
                self.init
                    .iter()
                    .map(|c| {
                        let mut s = c.status();
                        s["ready"] = json!(c.done == Some(0));
                        s
                    })
                    .collect::<Vec<_>>()
            );
        }
        if let Some(e) = &self.prepare_error
            && phase == "Pending"
        {
            st["message"] = json!(e);
        }
        st
    }

    /// Stops every process (SIGTERM, SIGKILL after `grace`) and removes the pod's volumes;
    /// the receiver hears once all is gone.
    pub fn stop(mut self, node: &Node, grace: Duration) -> std::sync::mpsc::Receiver<()> {
        log(
            NAME,
            &format!(
                "killing pod {}/{} (grace period {}s)",
                self.ns,
                self.name,
                grace.as_secs()
            ),
        );
        let children: Vec<Child> = self
            .init
            .iter_mut()
            .chain(self.ctrs.iter_mut())
            .filter_map(|c| c.child.take())
            .collect();
        let dir = self.pod_dir(node);
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let n = children.len();
        for ch in children {
            let tx = tx.clone();
            kill_later(Some(ch), grace, move || {
                let _ = tx.send(());
            });
        }
        std::thread::spawn(move || {
            for _ in 0..n {
                let _ = rx.recv();
            }
            let _ = std::fs::remove_dir_all(&dir);
            let _ = done_tx.send(());
        });
        done_rx
    }
}

fn kill_later_ref(c: &mut Ctr, grace: Duration) {
    // The process is signalled now; try_wait in the next round sees it exit.
    if let Some(ch) = &c.child
        && let Ok(pg) = i32::try_from(ch.id())
    {
        let pg = nix::unistd::Pid::from_raw(pg);
        let _ = nix::sys::signal::killpg(pg, nix::sys::signal::Signal::SIGTERM);
        std::thread::spawn(move || {
            std::thread::sleep(grace);
            let _ = nix::sys::signal::killpg(pg, nix::sys::signal::Signal::SIGKILL);
        });
    }
}

fn thresholds(p: &Value) -> (u32, u32) {
    let g = |k: &str, d: u64| u32::try_from(p[k].as_u64().unwrap_or(d).max(1)).unwrap_or(1);
    (g("failureThreshold", 3), g("successThreshold", 1))
}

/// Whether a probe is due now (after initialDelaySeconds, every periodSeconds).
fn due(p: &Value, st: &mut Probe, since: Duration, now: Instant) -> bool {
    if since < Duration::from_secs(p["initialDelaySeconds"].as_u64().unwrap_or(0)) || now < st.next
    {
        return false;
    }
    st.next = now + Duration::from_secs(p["periodSeconds"].as_u64().unwrap_or(10).max(1));
    true
}

fn probe_port(port: &Value, ctr: &Value) -> Result<u16, String> {
    if let Some(n) = port.as_u64() {
        return u16::try_from(n).map_err(|e| e.to_string());
    }
    let name = port.as_str().unwrap_or("");
    if let Ok(n) = name.parse() {
        return Ok(n);
    }
    ctr["ports"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == name))
        .and_then(|p| p["containerPort"].as_u64())
        .and_then(|n| u16::try_from(n).ok())
        .ok_or_else(|| format!("port {name:?} is not a named port of the container"))
}

fn connect_to(host: &str, port: u16, timeout: Duration) -> Result<std::net::TcpStream, String> {
    use std::net::ToSocketAddrs;
    let hp = crate::server::join_host_port(host, &port.to_string());
    let addr = hp
        .to_socket_addrs()
        .map_err(|e| format!("dial tcp {hp}: {e}"))?
        .next()
        .ok_or_else(|| format!("dial tcp {hp}: no address"))?;
    let s = std::net::TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("dial tcp {addr}: connect: {e}"))?;
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    Ok(s)
}

/// Sends `req`, returns the status line.
fn exchange(s: &mut impl ReadWrite, req: &str) -> std::io::Result<String> {
    s.write_all(req.as_bytes())?;
    s.flush()?;
    let mut head = Vec::new();
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&head)
        .lines()
        .next()
        .unwrap_or("")
        .to_string())
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Accepts any server certificate (the handshake signature is still checked).
#[derive(Debug)]
struct NoVerify(std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn no_verify_client() -> Result<std::sync::Arc<rustls::ClientConfig>, String> {
    let provider = crate::tls::provider();
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(NoVerify(provider)))
        .with_no_client_auth();
    Ok(std::sync::Arc::new(cfg))
}

/// Runs an httpGet or tcpSocket probe against the pod IP.
fn run_probe(p: &Value, ctr: &Value, ip: &str) -> Result<(), String> {
    let timeout = Duration::from_secs(p["timeoutSeconds"].as_u64().unwrap_or(1).max(1));
    if let Some(h) = p.get("httpGet") {
        let https = match h["scheme"].as_str().unwrap_or("HTTP") {
            "HTTP" => false,
            "HTTPS" => true,
            other => return Err(format!("unsupported scheme {other:?}")),
        };
        let port = probe_port(&h["port"], ctr)?;
        let path = h["path"].as_str().unwrap_or("/");
        let host = h["host"].as_str().filter(|s| !s.is_empty()).unwrap_or(ip);
        let scheme = if https { "https" } else { "http" };
        let url = format!(
            "{scheme}://{}{path}",
            crate::server::join_host_port(host, &port.to_string())
        );
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: kube-probe/1.32\r\nAccept: */*\r\nConnection: close\r\n",
            crate::server::join_host_port(host, &port.to_string())
        );
        for hd in h["httpHeaders"].as_array().cloned().unwrap_or_default() {
            req.push_str(&format!(
                "{}: {}\r\n",
                hd["name"].as_str().unwrap_or(""),
                hd["value"].as_str().unwrap_or("")
            ));
        }
        req.push_str("\r\n");
        let tcp = connect_to(host, port, timeout)?;
        let head = if https {
            // The real prober does not verify the serving certificate.
            let name = rustls::pki_types::ServerName::try_from(host.to_string())
                .map_err(|e| format!("{url}: {e}"))?;
            let conn = rustls::ClientConnection::new(no_verify_client()?, name)
                .map_err(|e| format!("{url}: {e}"))?;
            let mut s = rustls::StreamOwned::new(conn, tcp);
            exchange(&mut s, &req).map_err(|e| format!("Get \"{url}\": {e}"))?
        } else {
            let mut s = tcp;
            exchange(&mut s, &req).map_err(|e| format!("Get \"{url}\": {e}"))?
        };
        let code: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("Get \"{url}\": malformed HTTP response"))?;
        if (200..400).contains(&code) {
            return Ok(());
        }
        return Err(format!("HTTP probe failed with statuscode: {code}"));
    }
    if let Some(t) = p.get("tcpSocket") {
        let host = t["host"].as_str().filter(|s| !s.is_empty()).unwrap_or(ip);
        connect_to(host, probe_port(&t["port"], ctr)?, timeout)?;
        return Ok(());
    }
    Err("only httpGet and tcpSocket probes are supported by this stand-in kubelet".into())
}

/// The log file `/containerLogs/NS/POD/CONTAINER` serves: the newest pod UID's folder, the
/// current (or, with `previous`, the previous) run.
pub fn container_log(
    log_root: &Path,
    ns: &str,
    pod: &str,
    ctr: &str,
    previous: bool,
) -> Result<PathBuf, String> {
    let prefix = format!("{ns}_{pod}_");
    let dir = std::fs::read_dir(log_root)
        .map_err(|e| format!("{}: {e}", log_root.display()))?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .filter(|e| e.path().join(ctr).is_dir())
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path().join(ctr))
        .ok_or_else(|| format!("container {ctr:?} in pod {pod:?} is not available"))?;
    let mut runs: Vec<u32> = std::fs::read_dir(&dir)
        .map_err(|e| e.to_string())?
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_suffix(".log")?
                .parse()
                .ok()
        })
        .collect();
    runs.sort_unstable();
    let pick = if previous {
        runs.iter().rev().nth(1)
    } else {
        runs.last()
    };
    pick.map(|n| dir.join(format!("{n}.log"))).ok_or_else(|| {
        if previous {
            format!("previous terminated container {ctr:?} in pod {pod:?} not found")
        } else {
            format!("container {ctr:?} in pod {pod:?} has no logs")
        }
    })
}

/// The last `tail` lines of `text` (all with None).
pub fn tail_lines(text: &str, tail: Option<usize>) -> String {
    let Some(n) = tail else {
        return text.to_string();
    };
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].iter().map(|l| format!("{l}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn var_expansion_follows_kubernetes() {
        let v = vec![("A".to_string(), "x".to_string()), ("B".into(), "y".into())];
        assert_eq!(expand("$(A)-$(B)", &v), "x-y");
        assert_eq!(expand("$(C) $$(A) $", &v), "$(C) $(A) $");
    }

    #[test]
    fn the_token_request_binds_the_pod() {
        let pod = json!({"metadata": {"name": "p", "uid": "u1"}});
        let r = token_request(&pod, &["aud".into()], 3607);
        assert_eq!(r["kind"], "TokenRequest");
        assert_eq!(r["spec"]["audiences"], json!(["aud"]));
        assert_eq!(r["spec"]["expirationSeconds"], 3607);
        assert_eq!(
            r["spec"]["boundObjectRef"],
            json!({"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "u1"})
        );
    }

    #[test]
    fn resolv_conf_per_dns_policy() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("resolv.conf");
        std::fs::write(&host, "nameserver 192.0.2.53\nsearch lab.example\n").unwrap();
        let node = Node {
            api: Api::plain("http://127.0.0.1:1"),
            name: "n".into(),
            ip: "127.0.0.1".into(),
            root: dir.path().into(),
            log_root: dir.path().into(),
            resolv_conf: host.to_string_lossy().into_owned(),
            cluster_dns: vec!["10.96.0.10".into()],
            cluster_domain: "cluster.local".into(),
        };
        let pod = |p: Value| json!({"metadata": {"namespace": "kube-system"}, "spec": p});
        let cf = resolv_conf(&pod(json!({})), &node).unwrap();
        assert_eq!(
            cf,
            "nameserver 10.96.0.10\nsearch kube-system.svc.cluster.local svc.cluster.local cluster.local lab.example\noptions ndots:5\n"
        );
        let host_text = "nameserver 192.0.2.53\nsearch lab.example\n";
        assert_eq!(
            resolv_conf(&pod(json!({"dnsPolicy": "Default"})), &node).unwrap(),
            host_text
        );
        assert_eq!(
            resolv_conf(&pod(json!({"hostNetwork": true})), &node).unwrap(),
            host_text
        );
        assert!(
            resolv_conf(
                &pod(json!({"hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"})),
                &node
            )
            .unwrap()
            .starts_with("nameserver 10.96.0.10\n")
        );
        let none = json!({"dnsPolicy": "None", "dnsConfig": {"nameservers": ["1.1.1.1"], "options": [{"name": "ndots", "value": "2"}]}});
        assert_eq!(
            resolv_conf(&pod(none), &node).unwrap(),
            "nameserver 1.1.1.1\noptions ndots:2\n"
        );
        let empty = Node {
            resolv_conf: String::new(),
            ..node
        };
        assert_eq!(
            resolv_conf(&pod(json!({"dnsPolicy": "Default"})), &empty).unwrap(),
            ""
        );
    }
}
