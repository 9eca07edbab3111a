//! The kubelet stand-in against the API server stand-in (real etcd): registration, Ready,
//! static pods from the image store, mirror pods, missing images.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;
use std::time::Duration;
use support::*;

fn jsonpath(bed: &Bed, args: &[&str]) -> String {
    String::from_utf8_lossy(&kubectl(&bed.admin, args).stdout).into_owned()
}

#[test]
fn kubelet_registers_and_runs_static_pods() {
    let bed = Bed::start();
    let d = bed.dir.path();
    let node = bed
        .ca
        .issue("system:node:lab-n1", &["system:nodes"], &[], false, true);
    let kc = kubeconfig(d, "kubelet.conf", &bed.api_url, &bed.ca.pem, &node);
    let serving = bed.ca.issue("lab-n1", &[], &["127.0.0.1"], true, false);
    let cert = write(d, "kubelet.crt", &serving.cert);
    let key = write(d, "kubelet.key", &serving.key);
    let manifests = d.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let store = d.join("images");
    let img = store.join("example.org/sleeper/1.0");
    std::fs::create_dir_all(&img).unwrap();
    std::fs::copy("/bin/sleep", img.join("sleep")).unwrap();
    let (port, hz) = (free_port(), free_port());
    let cfg = write(
        d,
        "config.yaml",
        &format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nstaticPodPath: {}\ncgroupDriver: systemd\n\
         clusterDNS: [10.96.0.10]\nclusterDomain: cluster.local\ntlsCertFile: {cert}\ntlsPrivateKeyFile: {key}\n\
         authentication:\n  x509:\n    clientCAFile: {}\nport: {port}\nhealthzPort: {hz}\n",
            manifests.display(),
            bed.path("ca.crt")
        ),
    );
    // HTTPS probes (the control plane's static pods use them) against the kubelet's own
    // :10250, whose certificate the prober does not verify, as the real one.
    std::fs::write(manifests.join("sleeper.yaml"), format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: sleeper, namespace: kube-system}}\n\
        spec:\n  hostNetwork: true\n  containers:\n  - name: sleeper\n    image: example.org/sleeper:1.0\n    command: [/usr/bin/sleep, \"300\"]\n\
        \x20   startupProbe: {{httpGet: {{host: 127.0.0.1, path: /healthz, port: {port}, scheme: HTTPS}}, periodSeconds: 1}}\n\
        \x20   readinessProbe: {{httpGet: {{host: localhost, path: /healthz, port: {port}, scheme: HTTPS}}, periodSeconds: 1}}\n")).unwrap();
    std::fs::write(manifests.join("missing.yaml"), "apiVersion: v1\nkind: Pod\nmetadata: {name: missing, namespace: kube-system}\n\
        spec:\n  containers:\n  - name: m\n    image: example.org/nothing:2.0\n    command: [nothing]\n").unwrap();
    let bin = stamped(d, "kubelet", "v1.32.5");
    let _kubelet = Proc::spawn(
        Command::new(bin)
            .env("CAPSTAN_STANDIN_IMAGE_STORE", &store)
            .env("CAPSTAN_STANDIN_POD_LOG_DIR", d.join("pod-logs"))
            .args([
                format!("--config={cfg}"),
                format!("--kubeconfig={kc}"),
                "--hostname-override=lab-n1".into(),
                "--node-ip=127.0.0.1".into(),
                "--container-runtime-endpoint=unix:///run/containerd/containerd.sock".into(),
                format!("--root-dir={}", d.join("kubelet-root").display()),
            ]),
        d.join("kubelet.log"),
    );
    wait_for("node lab-n1 Ready", Duration::from_secs(20), || {
        jsonpath(
            &bed,
            &[
                "get",
                "node",
                "lab-n1",
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ],
        ) == "True"
    });
    assert_eq!(
        jsonpath(
            &bed,
            &[
                "get",
                "node",
                "lab-n1",
                "-o",
                "jsonpath={.status.nodeInfo.kubeletVersion}"
            ]
        ),
        "v1.32.5"
    );
    wait_for("the node lease", Duration::from_secs(20), || {
        jsonpath(
            &bed,
            &[
                "get",
                "lease",
                "-n",
                "kube-node-lease",
                "lab-n1",
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ],
        ) == "lab-n1"
    });
    wait_for(
        "mirror pod sleeper-lab-n1 Running",
        Duration::from_secs(20),
        || {
            jsonpath(
                &bed,
                &[
                    "get",
                    "pod",
                    "-n",
                    "kube-system",
                    "sleeper-lab-n1",
                    "-o",
                    "jsonpath={.status.phase}",
                ],
            ) == "Running"
        },
    );
    wait_for(
        "mirror pod sleeper-lab-n1 Ready",
        Duration::from_secs(20),
        || {
            jsonpath(
                &bed,
                &[
                    "get",
                    "pod",
                    "-n",
                    "kube-system",
                    "sleeper-lab-n1",
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                ],
            ) == "True"
        },
    );
    wait_for(
        "mirror pod missing-lab-n1 shows ErrImagePull",
        Duration::from_secs(20),
        || {
            jsonpath(
                &bed,
                &[
                    "get",
                    "pod",
                    "-n",
                    "kube-system",
                    "missing-lab-n1",
                    "-o",
                    "jsonpath={.status.containerStatuses[0].state.waiting.reason}",
                ],
            ) == "ErrImagePull"
        },
    );
    let out = ok(
        &kubectl(&bed.admin, &["get", "pods", "-n", "kube-system"]),
        "get pods",
    );
    assert!(
        (out.contains("ErrImagePull") || out.contains("ImagePullBackOff"))
            && out.contains("Running"),
        "{out}"
    );
    // healthz on its port.
    let hz_ok = std::net::TcpStream::connect(("127.0.0.1", hz)).is_ok();
    assert!(hz_ok);
    // Removing the manifest stops the process and removes the mirror pod.
    std::fs::remove_file(manifests.join("sleeper.yaml")).unwrap();
    wait_for(
        "mirror pod sleeper-lab-n1 gone",
        Duration::from_secs(20),
        || {
            !kubectl(
                &bed.admin,
                &["get", "pod", "-n", "kube-system", "sleeper-lab-n1"],
            )
            .status
            .success()
        },
    );
    let ps = Command::new("pgrep")
        .args(["-f", &format!("{} 300", img.join("sleep").display())])
        .output()
        .unwrap();
    assert!(ps.stdout.is_empty(), "the static pod's process still runs");
}

/// A kubelet for pods bound to `lab-b1`: an image store with shell-script images, a
/// resolvConf of its own, pod logs under the test's folder. Returns the kubelet, its
/// :10250 port, the image store and the pod log root.
fn bound_kubelet(bed: &Bed) -> (Proc, u16, std::path::PathBuf, std::path::PathBuf) {
    let d = bed.dir.path().join("b1");
    std::fs::create_dir_all(&d).unwrap();
    let node = bed
        .ca
        .issue("system:node:lab-b1", &["system:nodes"], &[], false, true);
    let kc = kubeconfig(&d, "kubelet.conf", &bed.api_url, &bed.ca.pem, &node);
    let serving = bed.ca.issue("lab-b1", &[], &["127.0.0.1"], true, false);
    let cert = write(&d, "kubelet.crt", &serving.cert);
    let key = write(&d, "kubelet.key", &serving.key);
    let resolv = write(
        &d,
        "resolv.conf",
        "nameserver 192.0.2.99\nsearch lab.test\n",
    );
    let store = d.join("images");
    let logs = d.join("pod-logs");
    let (port, hz) = (free_port(), free_port());
    let cfg = write(
        &d,
        "config.yaml",
        &format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncgroupDriver: systemd\n\
             clusterDNS: [10.96.0.10]\nclusterDomain: cluster.local\nresolvConf: {resolv}\n\
             tlsCertFile: {cert}\ntlsPrivateKeyFile: {key}\nauthentication:\n  x509:\n    clientCAFile: {}\n\
             port: {port}\nhealthzPort: {hz}\n",
            bed.path("ca.crt")
        ),
    );
    let bin = stamped(&d, "kubelet", "v1.32.5");
    let k = Proc::spawn(
        Command::new(bin)
            .env("CAPSTAN_STANDIN_IMAGE_STORE", &store)
            .env("CAPSTAN_STANDIN_POD_LOG_DIR", &logs)
            .args([
                format!("--config={cfg}"),
                format!("--kubeconfig={kc}"),
                "--hostname-override=lab-b1".into(),
                "--node-ip=127.0.0.1".into(),
                format!("--root-dir={}", d.join("root").display()),
            ]),
        d.join("kubelet.log"),
    );
    (k, port, store, logs)
}

/// An image whose entrypoint is a shell script.
fn script_image(store: &std::path::Path, repo: &str, script: &str) {
    use std::os::unix::fs::PermissionsExt;
    let dir = store.join(repo).join("1.0");
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("run.sh");
    std::fs::write(&f, format!("#!/bin/sh\n{script}")).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.join(".entrypoint"), "/usr/local/bin/run.sh\n").unwrap();
}

fn apply(bed: &Bed, yaml: &str) {
    let f = write(bed.dir.path(), &format!("obj-{}.yaml", free_port()), yaml);
    ok(&kubectl(&bed.admin, &["apply", "-f", &f]), "kubectl apply");
}

/// Container processes outlive a killed kubelet (as containers outlive the real one): on drop
/// (the test's end or its failure) the pods are deleted and their processes waited for while
/// the kubelet still runs.
struct DeletePods<'a> {
    bed: &'a Bed,
    patterns: Vec<String>,
}

impl Drop for DeletePods<'_> {
    fn drop(&mut self) {
        let _ = kubectl(
            &self.bed.admin,
            &["delete", "pods", "--all", "--wait=false"],
        );
        let t = std::time::Instant::now();
        while t.elapsed() < Duration::from_secs(30)
            && self.patterns.iter().any(|p| {
                !Command::new("pgrep")
                    .args(["-f", p])
                    .output()
                    .unwrap()
                    .stdout
                    .is_empty()
            })
        {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn pod_field(bed: &Bed, pod: &str, path: &str) -> String {
    jsonpath(
        bed,
        &["get", "pod", pod, "-o", &format!("jsonpath={{{path}}}")],
    )
}

#[test]
fn kubelet_runs_bound_pods_with_volumes_dns_logs_probes_and_stops_deleted_ones() {
    let bed = Bed::start();
    let d = bed.dir.path().to_path_buf();
    let (kubelet, port, store, logs) = bound_kubelet(&bed);
    wait_for("node lab-b1 registered", Duration::from_secs(20), || {
        kubectl(&bed.admin, &["get", "node", "lab-b1"])
            .status
            .success()
    });
    let out = d.join("out");
    let inpod = d.join("inpod").join("config");
    let cleanup = DeletePods {
        bed: &bed,
        patterns: vec![
            format!("http.server.*{}", d.join("www").display()),
            "^sleep 373$".into(),
            "^sleep 374$".into(),
        ],
    };

    // 1. A ConfigMap volume and dnsPolicy Default, seen by the process itself.
    script_image(
        &store,
        "example.org/see",
        "cat \"$CONF/greeting\" > /out/greeting\ncat /etc/resolv.conf > /out/resolv.conf\n\
         echo \"$MY_NODE $MY_POD\" > /out/env\nexec sleep 373\n",
    );
    apply(
        &bed,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: greet, namespace: default}\ndata: {greeting: hello from the configmap}\n",
    );
    apply(
        &bed,
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: see, namespace: default}}\nspec:\n  nodeName: lab-b1\n\
             \x20 automountServiceAccountToken: false\n  dnsPolicy: Default\n  containers:\n  - name: see\n\
             \x20   image: example.org/see:1.0\n    env:\n    - {{name: CONF, value: {}}}\n\
             \x20   - name: MY_NODE\n      valueFrom: {{fieldRef: {{fieldPath: spec.nodeName}}}}\n\
             \x20   - {{name: MY_POD, value: \"pod-$(MY_NODE)\"}}\n\
             \x20   volumeMounts:\n    - {{name: cfg, mountPath: {}}}\n    - {{name: out, mountPath: /out}}\n\
             \x20 volumes:\n  - name: cfg\n    configMap: {{name: greet}}\n\
             \x20 - name: out\n    hostPath: {{path: {}, type: DirectoryOrCreate}}\n",
            inpod.display(),
            inpod.display(),
            out.display()
        ),
    );
    wait_for("pod see Running", Duration::from_secs(30), || {
        pod_field(&bed, "see", ".status.phase") == "Running" && out.join("env").exists()
    });
    std::thread::sleep(Duration::from_millis(300));
    let read = |n: &str| std::fs::read_to_string(out.join(n)).unwrap_or_default();
    assert_eq!(
        read("greeting"),
        "hello from the configmap",
        "{}",
        kubelet.log_text()
    );
    assert_eq!(
        read("resolv.conf"),
        "nameserver 192.0.2.99\nsearch lab.test\n"
    );
    assert_eq!(read("env"), "lab-b1 pod-lab-b1\n");
    // The mounts were the container's own: the host sees neither the ConfigMap file nor
    // the pod's resolv.conf.
    assert!(!inpod.join("greeting").exists());
    assert_ne!(
        std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        read("resolv.conf")
    );
    assert_eq!(
        pod_field(
            &bed,
            "see",
            ".status.conditions[?(@.type==\"Ready\")].status"
        ),
        "True"
    );
    assert_eq!(pod_field(&bed, "see", ".status.podIP"), "127.0.0.1");

    // 2. A crashing container: CrashLoopBackOff, restarts, logs over :10250.
    script_image(
        &store,
        "example.org/crash",
        "echo starting\necho \"last words of run $RUN\"\nexit 3\n",
    );
    apply(
        &bed,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: crash, namespace: default}\nspec:\n  nodeName: lab-b1\n\
         \x20 automountServiceAccountToken: false\n  containers:\n  - name: c\n    image: example.org/crash:1.0\n\
         \x20   env: [{name: RUN, value: one}]\n",
    );
    wait_for(
        "pod crash in CrashLoopBackOff, restarted",
        Duration::from_secs(45),
        || {
            pod_field(
                &bed,
                "crash",
                ".status.containerStatuses[0].state.waiting.reason",
            ) == "CrashLoopBackOff"
                && pod_field(&bed, "crash", ".status.containerStatuses[0].restartCount")
                    .parse::<u32>()
                    .unwrap_or(0)
                    > 0
        },
    );
    assert_eq!(
        pod_field(
            &bed,
            "crash",
            ".status.containerStatuses[0].lastState.terminated.exitCode"
        ),
        "3"
    );
    assert_eq!(
        pod_field(
            &bed,
            "crash",
            ".status.containerStatuses[0].lastState.terminated.reason"
        ),
        "Error"
    );
    let uid = pod_field(&bed, "crash", ".metadata.uid");
    assert!(logs.join(format!("default_crash_{uid}/c/0.log")).is_file());
    let client = bed.ca.issue(
        "kube-apiserver-kubelet-client",
        &["kubeadm:cluster-admins"],
        &[],
        false,
        true,
    );
    let cc = write(&d, "kc.crt", &client.cert);
    let ck = write(&d, "kc.key", &client.key);
    let url = format!("https://127.0.0.1:{port}/containerLogs/default/crash/c?tailLines=1");
    let curl = |extra: &[&str]| {
        let o = Command::new("curl")
            .args([
                "-sS",
                "--cacert",
                &bed.path("ca.crt"),
                "-w",
                "\n%{http_code}",
            ])
            .args(extra)
            .arg(&url)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert_eq!(
        curl(&["--cert", &cc, "--key", &ck]),
        "last words of run one\n\n200"
    );
    assert!(
        curl(&[]).ends_with("401"),
        "anonymous log access must be refused"
    );

    // 3. Readiness follows an httpGet probe.
    let www = d.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let py = String::from_utf8(
        Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let hport = free_port();
    script_image(
        &store,
        "example.org/web",
        &format!(
            "exec {} -m http.server --bind 127.0.0.1 --directory {} {hport}\n",
            py.trim(),
            www.display()
        ),
    );
    apply(
        &bed,
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: web, namespace: default}}\nspec:\n  nodeName: lab-b1\n\
             \x20 automountServiceAccountToken: false\n  containers:\n  - name: web\n    image: example.org/web:1.0\n\
             \x20   ports: [{{name: http, containerPort: {hport}}}]\n\
             \x20   readinessProbe: {{httpGet: {{path: /ready, port: http}}, periodSeconds: 1, failureThreshold: 1}}\n"
        ),
    );
    let ready = || {
        pod_field(
            &bed,
            "web",
            ".status.conditions[?(@.type==\"Ready\")].status",
        )
    };
    wait_for("pod web Running", Duration::from_secs(30), || {
        pod_field(&bed, "web", ".status.phase") == "Running"
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(ready(), "False", "no /ready yet: not Ready");
    std::fs::write(www.join("ready"), "ok").unwrap();
    wait_for("pod web Ready", Duration::from_secs(20), || {
        ready() == "True"
    });
    std::fs::remove_file(www.join("ready")).unwrap();
    wait_for("pod web not Ready again", Duration::from_secs(20), || {
        ready() == "False"
    });

    // 4. A pod whose ConfigMap is missing stays ContainerCreating with a FailedMount event,
    // and starts once it exists; its init container runs first, sharing an emptyDir.
    let work = d.join("inpod").join("work");
    let late_cfg = d.join("inpod").join("late");
    script_image(
        &store,
        "example.org/init",
        "echo init-ran > \"$WORK/marker\"\n",
    );
    script_image(
        &store,
        "example.org/late",
        "cat \"$WORK/marker\" > /out/late-marker\ncat \"$LATE/k\" > /out/late-cm\nexec sleep 374\n",
    );
    let env = format!(
        "    env: [{{name: WORK, value: {w}}}, {{name: LATE, value: {l}}}]\n    volumeMounts:\n\
         \x20   - {{name: work, mountPath: {w}}}\n    - {{name: late, mountPath: {l}}}\n    - {{name: out, mountPath: /out}}\n",
        w = work.display(),
        l = late_cfg.display()
    );
    apply(
        &bed,
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: late, namespace: default}}\nspec:\n  nodeName: lab-b1\n\
             \x20 automountServiceAccountToken: false\n  initContainers:\n  - name: init\n    image: example.org/init:1.0\n{env}\
             \x20 containers:\n  - name: main\n    image: example.org/late:1.0\n{env}\
             \x20 volumes:\n  - {{name: work, emptyDir: {{}}}}\n  - name: late\n    configMap: {{name: late-cm}}\n\
             \x20 - name: out\n    hostPath: {{path: {}, type: DirectoryOrCreate}}\n",
            out.display()
        ),
    );
    wait_for(
        "a FailedMount event for pod late",
        Duration::from_secs(20),
        || {
            jsonpath(
                &bed,
                &["get", "events", "-o", "jsonpath={.items[*].reason}"],
            )
            .contains("FailedMount")
        },
    );
    assert_eq!(pod_field(&bed, "late", ".status.phase"), "Pending");
    assert_eq!(
        pod_field(
            &bed,
            "late",
            ".status.containerStatuses[0].state.waiting.reason"
        ),
        "ContainerCreating"
    );
    apply(
        &bed,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: late-cm, namespace: default}\ndata: {k: arrived}\n",
    );
    wait_for("pod late Running", Duration::from_secs(30), || {
        pod_field(&bed, "late", ".status.phase") == "Running" && out.join("late-cm").exists()
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(read("late-marker"), "init-ran\n");
    assert_eq!(read("late-cm"), "arrived");
    assert_eq!(
        pod_field(
            &bed,
            "late",
            ".status.initContainerStatuses[0].state.terminated.reason"
        ),
        "Completed"
    );

    // 5. A deleted pod's process is gone, and so are its volumes.
    let see_uid = pod_field(&bed, "see", ".metadata.uid");
    let vols = d.join("b1/root/pods").join(&see_uid);
    assert!(
        vols.join("volumes/kubernetes.io~configmap/cfg/greeting")
            .is_file()
    );
    ok(
        &kubectl(&bed.admin, &["delete", "pod", "see", "--wait=false"]),
        "delete pod see",
    );
    let sleeper = "^sleep 373$";
    assert!(
        !Command::new("pgrep")
            .args(["-f", sleeper])
            .output()
            .unwrap()
            .stdout
            .is_empty(),
        "pod see's process is not running"
    );
    wait_for(
        "the deleted pod's process gone",
        Duration::from_secs(40),
        || {
            Command::new("pgrep")
                .args(["-f", sleeper])
                .output()
                .unwrap()
                .stdout
                .is_empty()
                && !vols.exists()
        },
    );
    drop(cleanup);
    drop(kubelet);
}
