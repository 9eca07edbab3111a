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
    std::fs::write(manifests.join("sleeper.yaml"), "apiVersion: v1\nkind: Pod\nmetadata: {name: sleeper, namespace: kube-system}\n\
        spec:\n  hostNetwork: true\n  containers:\n  - name: sleeper\n    image: example.org/sleeper:1.0\n    command: [/usr/bin/sleep, \"300\"]\n").unwrap();
    std::fs::write(manifests.join("missing.yaml"), "apiVersion: v1\nkind: Pod\nmetadata: {name: missing, namespace: kube-system}\n\
        spec:\n  containers:\n  - name: m\n    image: example.org/nothing:2.0\n    command: [nothing]\n").unwrap();
    let bin = stamped(d, "kubelet", "v1.32.5");
    let _kubelet = Proc::spawn(
        Command::new(bin)
            .env("CAPSTAN_STANDIN_IMAGE_STORE", &store)
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
        out.contains("ErrImagePull") && out.contains("Running"),
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
