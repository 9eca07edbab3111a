//! The API server stand-in with a real etcd and the machine's real kubectl.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;
use support::*;

#[test]
fn kubectl_smoke() {
    let bed = Bed::start();
    let k = |args: &[&str]| kubectl(&bed.admin, args);
    assert_eq!(
        ok(&k(&["get", "--raw", "/readyz"]), "readyz").trim(),
        "ok",
        "{}",
        bed.logs()
    );
    let out = ok(&k(&["get", "nodes"]), "get nodes");
    println!("{out}");
    let out = ok(&k(&["version", "-o", "json"]), "version");
    assert!(out.contains("\"gitVersion\": \"v1.32.4\""), "{out}");
    let ns = ok(&k(&["get", "namespaces", "-o", "name"]), "get ns");
    assert!(ns.contains("namespace/kube-system"), "{ns}");
}

const NODES: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: n1, labels: {kubernetes.io/hostname: n1}}
status:
  conditions: [{type: Ready, status: "True", reason: KubeletReady}]
---
apiVersion: v1
kind: Node
metadata: {name: n2, labels: {kubernetes.io/hostname: n2}}
status:
  conditions: [{type: Ready, status: "True", reason: KubeletReady}]
"#;

const WORKLOADS: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: "registry.k8s.io/pause:3.10", ports: [{containerPort: 80}]}]
      volumes: [{name: scratch, emptyDir: {}}]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent, namespace: kube-system}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers: [{name: agent, image: "registry.k8s.io/pause:3.10"}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: reader}
rules: [{apiGroups: [""], resources: [pods], verbs: [get, list]}]
"#;

fn pods_on(bed: &Bed, node: &str) -> Vec<String> {
    let out = ok(
        &kubectl(
            &bed.admin,
            &[
                "get",
                "pods",
                "-A",
                "--field-selector",
                &format!("spec.nodeName={node}"),
                "-o",
                "name",
            ],
        ),
        "get pods",
    );
    out.lines().map(String::from).collect()
}

#[test]
fn apply_cordon_drain_uncordon() {
    let bed = Bed::start();
    let d = bed.dir.path();
    let k = |args: &[&str]| kubectl(&bed.admin, args);
    // The controller-manager and the scheduler run beside it, with their own identities.
    let cm = bed
        .ca
        .issue("system:kube-controller-manager", &[], &[], false, true);
    let cm_kc = kubeconfig(d, "controller-manager.conf", &bed.api_url, &bed.ca.pem, &cm);
    let sc = bed.ca.issue("system:kube-scheduler", &[], &[], false, true);
    let sc_kc = kubeconfig(d, "scheduler.conf", &bed.api_url, &bed.ca.pem, &sc);
    let cm_bin = stamped(d, "kube-controller-manager", VERSION);
    let sc_bin = stamped(d, "kube-scheduler", VERSION);
    let cm_port = free_port().to_string();
    let sc_port = free_port().to_string();
    let _cm = Proc::spawn(
        std::process::Command::new(cm_bin).args([
            "--bind-address=127.0.0.1",
            &format!("--secure-port={cm_port}"),
            &format!("--kubeconfig={cm_kc}"),
            &format!("--authentication-kubeconfig={cm_kc}"),
            &format!("--authorization-kubeconfig={cm_kc}"),
            "--leader-elect=true",
            "--use-service-account-credentials=true",
            "--controllers=*,bootstrapsigner,tokencleaner",
        ]),
        d.join("cm.log"),
    );
    let _sc = Proc::spawn(
        std::process::Command::new(sc_bin).args([
            "--bind-address=127.0.0.1",
            &format!("--secure-port={sc_port}"),
            &format!("--kubeconfig={sc_kc}"),
            "--leader-elect=true",
        ]),
        d.join("sc.log"),
    );

    let nodes = write(d, "nodes.yaml", NODES);
    ok(&k(&["apply", "-f", &nodes]), "apply nodes");
    let out = ok(&k(&["get", "nodes"]), "get nodes");
    assert!(out.contains("n1") && out.contains("Ready"), "{out}");
    let w = write(d, "workloads.yaml", WORKLOADS);
    let out = ok(&k(&["apply", "-f", &w]), "apply workloads");
    assert!(out.contains("deployment.apps/web created"), "{out}");
    // Applying again changes nothing; a changed image is patched in.
    let out = ok(&k(&["apply", "-f", &w]), "re-apply");
    assert!(out.contains("deployment.apps/web unchanged"), "{out}");
    assert!(
        bed.etcd_get("/registry/deployments/default/web", false)
            .contains("\"replicas\":2")
    );

    // The controller-manager makes the pods, the scheduler spreads them.
    wait_for(
        "2 web pods and 2 agent pods bound to nodes",
        Duration::from_secs(30),
        || pods_on(&bed, "n1").len() == 2 && pods_on(&bed, "n2").len() == 2,
    );

    ok(&k(&["cordon", "n1"]), "cordon");
    assert!(
        bed.etcd_get("/registry/nodes/n1", false)
            .contains("\"unschedulable\":true")
    );
    let out = k(&[
        "drain",
        "n1",
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--timeout=60s",
    ]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "drain failed:\n{text}\n{}",
        bed.logs()
    );
    assert!(text.contains("evicting pod default/web-"), "{text}");
    assert!(text.contains("node/n1 drained"), "{text}");
    // Only the DaemonSet's pod stays; the replacement web pod lands on n2.
    let left = pods_on(&bed, "n1");
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].contains("agent-"), "{left:?}");
    wait_for(
        "the evicted web pod replaced on n2",
        Duration::from_secs(30),
        || pods_on(&bed, "n2").len() == 3,
    );
    ok(&k(&["uncordon", "n1"]), "uncordon");
    assert!(
        !bed.etcd_get("/registry/nodes/n1", false)
            .contains("\"unschedulable\":true")
    );
    let stored = bed.etcd_get("/registry/pods/", true);
    assert_eq!(stored.matches("\"nodeName\":\"n2\"").count(), 3, "{stored}");
    // Generic kinds are stored as sent.
    assert!(
        bed.etcd_get("/registry/clusterroles/reader", false)
            .contains("\"resources\":[\"pods\"]")
    );
}

#[test]
fn client_cert_from_another_ca_is_refused() {
    let bed = Bed::start();
    let other = Ca::new("kubernetes");
    let intruder = other.issue("kubernetes-admin", &["system:masters"], &[], false, true);
    let kc = kubeconfig(
        bed.dir.path(),
        "intruder.conf",
        &bed.api_url,
        &bed.ca.pem,
        &intruder,
    );
    let out = kubectl(&kc, &["get", "nodes"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("You must be logged in to the server"), "{err}");
    // A valid user outside system:masters is forbidden.
    let nobody = bed.ca.issue("jane", &["developers"], &[], false, true);
    let kc = kubeconfig(
        bed.dir.path(),
        "jane.conf",
        &bed.api_url,
        &bed.ca.pem,
        &nobody,
    );
    let out = kubectl(&kc, &["get", "pods"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("forbidden") && err.contains("User \"jane\" cannot list resource \"pods\""),
        "{err}"
    );
}

/// A kubeconfig with only a bearer token (no client certificate).
fn token_kubeconfig(bed: &Bed, name: &str, token: &str) -> String {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(&bed.ca.pem);
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\n\
         contexts:\n- name: ctx\n  context:\n    cluster: c\n    user: u\ncurrent-context: ctx\nusers:\n- name: u\n  user:\n    token: {token}\n",
        bed.api_url
    );
    write(bed.dir.path(), name, &text)
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn service_account_tokens_are_authorized_by_rbac() {
    let bed = Bed::start();
    let k = |args: &[&str]| kubectl(&bed.admin, args);
    let sa = write(
        bed.dir.path(),
        "sa.yaml",
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: kube-proxy, namespace: kube-system}\n",
    );
    ok(&k(&["apply", "-f", &sa]), "create sa");
    // A real authentication.k8s.io/v1 TokenRequest (kubectl create token speaks protobuf,
    // which the stand-in does not).
    let tr_file = write(
        bed.dir.path(),
        "tr.json",
        r#"{"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3600}}"#,
    );
    let raw = ok(
        &k(&[
            "create",
            "--raw",
            "/api/v1/namespaces/kube-system/serviceaccounts/kube-proxy/token",
            "-f",
            &tr_file,
        ]),
        "create token",
    );
    let tr: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(tr["kind"], "TokenRequest", "{raw}");
    assert_eq!(tr["spec"]["expirationSeconds"], 3600, "{raw}");
    let token = tr["status"]["token"].as_str().unwrap().to_string();
    let kc = token_kubeconfig(&bed, "sa.conf", &token);
    // Without a binding: authenticated as the service account, forbidden.
    let out = kubectl(&kc, &["get", "services", "-A"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            "User \"system:serviceaccount:kube-system:kube-proxy\" cannot list resource \"services\""
        ),
        "{}\n{}",
        stderr(&out),
        bed.logs()
    );
    // The binding kube-proxy's manifest makes, to the bootstrap policy's system:node-proxier.
    let binding = write(
        bed.dir.path(),
        "proxier.yaml",
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: kubeadm:node-proxier}\n\
         roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: system:node-proxier}\n\
         subjects: [{kind: ServiceAccount, name: kube-proxy, namespace: kube-system}]\n",
    );
    ok(&k(&["apply", "-f", &binding]), "bind");
    let out = ok(
        &kubectl(&kc, &["get", "services", "-A", "-o", "name"]),
        "list services as kube-proxy",
    );
    assert!(out.contains("service/kubernetes"), "{out}");
    ok(
        &kubectl(&kc, &["get", "endpointslices", "-A"]),
        "list slices as kube-proxy",
    );
    // --token on the command line, with a kubeconfig that has no credentials.
    let bare = token_kubeconfig(&bed, "bare.conf", "");
    let out = ok(
        &kubectl(&bare, &["--token", &token, "get", "nodes", "-o", "name"]),
        "get nodes with --token",
    );
    assert!(out.is_empty(), "{out}");
    let out = kubectl(&bare, &["--token", &token, "get", "pods", "-A"]);
    assert!(
        stderr(&out).contains(
            "system:serviceaccount:kube-system:kube-proxy\" cannot list resource \"pods\""
        ),
        "{}",
        stderr(&out)
    );
    let out = kubectl(&kc, &["get", "secrets", "-n", "kube-system"]);
    assert!(
        stderr(&out).contains("cannot list resource \"secrets\""),
        "{}",
        stderr(&out)
    );
    // A token signed by another key is 401, as is garbage.
    let mut parts: Vec<&str> = token.split('.').collect();
    let forged_sig = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 64])
    };
    parts[2] = &forged_sig;
    let forged = parts.join(".");
    for bad in [forged.as_str(), "not-a-token"] {
        let kc = token_kubeconfig(&bed, "forged.conf", bad);
        let out = kubectl(&kc, &["get", "services", "-A"]);
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("You must be logged in to the server (Unauthorized)"),
            "{}",
            stderr(&out)
        );
    }
    // A node gets tokens only for the pods bound to it (the Node authorizer's rule).
    let pods = write(
        bed.dir.path(),
        "pods.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: mine, namespace: kube-system}\n\
         spec: {nodeName: n1, serviceAccountName: kube-proxy, containers: [{name: c, image: x}]}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {name: theirs, namespace: kube-system}\n\
         spec: {nodeName: n2, serviceAccountName: kube-proxy, containers: [{name: c, image: x}]}\n",
    );
    ok(&k(&["apply", "-f", &pods]), "pods");
    let node = bed
        .ca
        .issue("system:node:n1", &["system:nodes"], &[], false, true);
    let node_kc = kubeconfig(bed.dir.path(), "n1.conf", &bed.api_url, &bed.ca.pem, &node);
    let bound = |pod: &str| {
        let uid = ok(
            &k(&[
                "get",
                "pod",
                pod,
                "-n",
                "kube-system",
                "-o",
                "jsonpath={.metadata.uid}",
            ]),
            "uid",
        );
        write(
            bed.dir.path(),
            &format!("tr-{pod}.json"),
            &format!(
                r#"{{"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {{"audiences": [], "expirationSeconds": 3607, "boundObjectRef": {{"apiVersion": "v1", "kind": "Pod", "name": "{pod}", "uid": "{uid}"}}}}}}"#
            ),
        )
    };
    let url = "/api/v1/namespaces/kube-system/serviceaccounts/kube-proxy/token";
    let raw = ok(
        &kubectl(&node_kc, &["create", "--raw", url, "-f", &bound("mine")]),
        "node token for its pod",
    );
    let pod_token: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let pod_token = pod_token["status"]["token"].as_str().unwrap().to_string();
    let out = kubectl(&node_kc, &["create", "--raw", url, "-f", &bound("theirs")]);
    assert!(
        stderr(&out).contains("Forbidden") || stderr(&out).contains("forbidden"),
        "{}",
        stderr(&out)
    );
    let pod_kc = token_kubeconfig(&bed, "pod.conf", &pod_token);
    ok(
        &kubectl(&pod_kc, &["get", "services", "-A"]),
        "the pod's token",
    );
    // A token bound to a pod dies with it.
    ok(
        &k(&["delete", "pod", "mine", "-n", "kube-system"]),
        "delete pod",
    );
    let out = kubectl(&pod_kc, &["get", "services", "-A"]);
    assert!(stderr(&out).contains("Unauthorized"), "{}", stderr(&out));

    // A deleted service account's tokens stop working.
    ok(
        &k(&[
            "delete",
            "serviceaccount",
            "kube-proxy",
            "-n",
            "kube-system",
        ]),
        "delete sa",
    );
    let out = kubectl(&kc, &["get", "services", "-A"]);
    assert!(stderr(&out).contains("Unauthorized"), "{}", stderr(&out));
    // A TokenRequest for a missing service account is 404.
    let out = k(&[
        "create",
        "--raw",
        "/api/v1/namespaces/kube-system/serviceaccounts/nobody/token",
        "-f",
        &tr_file,
    ]);
    assert!(
        stderr(&out).contains("serviceaccounts \"nobody\" not found"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_kubernetes_service_and_cluster_ips() {
    let bed = Bed::start();
    let k = |args: &[&str]| kubectl(&bed.admin, args);
    let port = bed.api_url.rsplit(':').next().unwrap().to_string();
    wait_for("the kubernetes Service", Duration::from_secs(20), || {
        k(&["get", "service", "kubernetes", "-n", "default"])
            .status
            .success()
    });
    let svc: serde_json::Value = serde_json::from_str(&ok(
        &k(&[
            "get",
            "service",
            "kubernetes",
            "-n",
            "default",
            "-o",
            "json",
        ]),
        "get svc",
    ))
    .unwrap();
    assert_eq!(svc["spec"]["clusterIP"], "10.96.0.1", "{svc}");
    assert_eq!(svc["spec"]["ports"][0]["port"], 443);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"].to_string(), port);
    let slice: serde_json::Value = serde_json::from_str(&ok(
        &k(&[
            "get",
            "endpointslice",
            "kubernetes",
            "-n",
            "default",
            "-o",
            "json",
        ]),
        "get slice",
    ))
    .unwrap();
    assert_eq!(
        slice["metadata"]["labels"]["kubernetes.io/service-name"],
        "kubernetes"
    );
    assert_eq!(
        slice["endpoints"][0]["addresses"][0], "127.0.0.1",
        "{slice}"
    );
    assert_eq!(slice["ports"][0]["port"].to_string(), port);
    let ep = ok(
        &k(&[
            "get",
            "endpoints",
            "kubernetes",
            "-n",
            "default",
            "-o",
            "jsonpath={.subsets[0].addresses[0].ip}:{.subsets[0].ports[0].port}",
        ]),
        "get ep",
    );
    assert_eq!(ep, format!("127.0.0.1:{port}"));

    let svcs = write(
        bed.dir.path(),
        "svcs.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: dns, namespace: kube-system}\n\
         spec: {clusterIP: 10.96.0.10, selector: {k8s-app: kube-dns}, ports: [{name: dns, port: 53, protocol: UDP}]}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\n\
         spec: {selector: {app: web}, ports: [{port: 80}]}\n",
    );
    ok(&k(&["apply", "-f", &svcs]), "apply services");
    let ip = ok(
        &k(&["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"]),
        "web ip",
    );
    let addr: std::net::Ipv4Addr = ip.parse().unwrap();
    assert!(
        addr.octets()[0] == 10 && (96..112).contains(&addr.octets()[1]),
        "{ip}"
    );
    assert_ne!(ip, "10.96.0.1");
    assert_ne!(ip, "10.96.0.10");
    // Re-applying keeps the allocated address (kubectl diff sees nothing).
    ok(&k(&["apply", "-f", &svcs]), "re-apply services");
    let again = ok(
        &k(&["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"]),
        "ip",
    );
    assert_eq!(again, ip);
    // A replace without the address keeps it; changing it is refused.
    let mut web: serde_json::Value =
        serde_json::from_str(&ok(&k(&["get", "service", "web", "-o", "json"]), "get web")).unwrap();
    web["spec"].as_object_mut().unwrap().remove("clusterIP");
    web["spec"].as_object_mut().unwrap().remove("clusterIPs");
    let f = write(bed.dir.path(), "web.json", &web.to_string());
    ok(&k(&["replace", "-f", &f]), "replace without clusterIP");
    let kept = ok(
        &k(&["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"]),
        "ip",
    );
    assert_eq!(kept, ip);
    let out = k(&[
        "patch",
        "service",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec": {"clusterIP": "10.96.0.99", "clusterIPs": ["10.96.0.99"]}}"#,
    ]);
    assert!(
        stderr(&out).contains("may not change once set"),
        "{}",
        stderr(&out)
    );
    // Taken or out of range: 422.
    let svc = |name: &str, ip: &str| {
        write(
            bed.dir.path(),
            &format!("{name}.yaml"),
            &format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec: {{clusterIP: \"{ip}\", ports: [{{port: 80}}]}}\n"
            ),
        )
    };
    let out = k(&["apply", "-f", &svc("dup", "10.96.0.10")]);
    assert!(
        stderr(&out).contains("provided IP is already allocated"),
        "{}",
        stderr(&out)
    );
    let out = k(&["apply", "-f", &svc("far", "192.168.0.1")]);
    assert!(
        stderr(&out).contains("is not in the valid range"),
        "{}",
        stderr(&out)
    );
    let out = ok(&k(&["apply", "-f", &svc("hl", "None")]), "headless");
    assert!(out.contains("created"), "{out}");

    // Every live API server keeps its entry; one that stops is dropped.
    let port2 = free_port();
    let args: Vec<String> = bed
        .apiserver_args(port2)
        .into_iter()
        .map(|a| {
            if a.starts_with("--advertise-address=") {
                "--advertise-address=127.0.0.2".to_string()
            } else {
                a
            }
        })
        .collect();
    let mut api2 = Proc::spawn(
        std::process::Command::new(stamped(bed.dir.path(), "kube-apiserver", VERSION)).args(&args),
        bed.dir.path().join("apiserver2.log"),
    );
    let addrs = || {
        ok(
            &k(&[
                "get",
                "endpointslice",
                "kubernetes",
                "-n",
                "default",
                "-o",
                "jsonpath={.endpoints[*].addresses[0]}",
            ]),
            "slice addresses",
        )
    };
    wait_for("both servers in the slice", Duration::from_secs(30), || {
        addrs() == "127.0.0.1 127.0.0.2"
    });
    api2.kill();
    wait_for(
        "the stopped server dropped",
        Duration::from_secs(40),
        || addrs() == "127.0.0.1",
    );
}

/// What a kubelet reports for a pod: running on `ip`, Ready or not.
fn report_pod(bed: &Bed, ns: &str, pod: &str, ip: &str, ready: bool) {
    let cond = if ready { "True" } else { "False" };
    let patch = format!(
        r#"{{"status": {{"phase": "Running", "podIP": "{ip}", "podIPs": [{{"ip": "{ip}"}}], "conditions": [{{"type": "Ready", "status": "{cond}"}}]}}}}"#
    );
    ok(
        &kubectl(
            &bed.admin,
            &[
                "patch",
                "pod",
                pod,
                "-n",
                ns,
                "--subresource=status",
                "--type=merge",
                "-p",
                &patch,
            ],
        ),
        "report pod status",
    );
}

fn get_json(bed: &Bed, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&ok(&kubectl(&bed.admin, &a), "get -o json")).unwrap()
}

fn pod_names(bed: &Bed, ns: &str, selector: &str) -> Vec<String> {
    let v = get_json(bed, &["pods", "-n", ns, "-l", selector]);
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn controller_manager_networking_and_rollouts() {
    let bed = Bed::start();
    let dir = bed.dir.path();
    let k = |args: &[&str]| kubectl(&bed.admin, args);
    let cm = bed
        .ca
        .issue("system:kube-controller-manager", &[], &[], false, true);
    let cm_kc = kubeconfig(
        dir,
        "controller-manager.conf",
        &bed.api_url,
        &bed.ca.pem,
        &cm,
    );
    let cm_bin = stamped(dir, "kube-controller-manager", VERSION);
    let _cm = Proc::spawn(
        std::process::Command::new(cm_bin).args([
            "--bind-address=127.0.0.1".to_string(),
            format!("--secure-port={}", free_port()),
            format!("--kubeconfig={cm_kc}"),
            "--leader-elect=false".into(),
            "--allocate-node-cidrs=true".into(),
            "--cluster-cidr=10.244.0.0/16".into(),
            format!("--root-ca-file={}", bed.path("ca.crt")),
        ]),
        dir.join("cm.log"),
    );
    let nodes = write(dir, "nodes.yaml", NODES);
    ok(&k(&["apply", "-f", &nodes]), "apply nodes");

    // Node IPAM: a /24 each, distinct.
    wait_for("podCIDRs", Duration::from_secs(20), || {
        let v = get_json(&bed, &["nodes"]);
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["spec"]["podCIDR"].is_string())
    });
    let v = get_json(&bed, &["nodes"]);
    let mut cidrs: Vec<String> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["spec"]["podCIDR"].as_str().unwrap().to_string())
        .collect();
    cidrs.sort();
    assert_eq!(cidrs, ["10.244.0.0/24", "10.244.1.0/24"]);

    // The root CA and the default service account in every namespace, new ones too.
    let ns = write(
        dir,
        "ns.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: apps}\n",
    );
    ok(&k(&["apply", "-f", &ns]), "create ns");
    wait_for("kube-root-ca.crt in apps", Duration::from_secs(20), || {
        k(&["get", "configmap", "kube-root-ca.crt", "-n", "apps"])
            .status
            .success()
            && k(&["get", "serviceaccount", "default", "-n", "apps"])
                .status
                .success()
    });
    let ca = ok(
        &k(&[
            "get",
            "configmap",
            "kube-root-ca.crt",
            "-n",
            "kube-system",
            "-o",
            "jsonpath={.data.ca\\.crt}",
        ]),
        "root ca",
    );
    assert_eq!(ca.trim(), bed.ca.pem.trim());

    // EndpointSlices follow the pods' Ready condition.
    let manifests = write(
        dir,
        "web.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: apps}\n\
         spec: {selector: {app: web}, ports: [{name: http, port: 80, targetPort: http}]}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {name: web-a, namespace: apps, labels: {app: web}}\n\
         spec: {nodeName: n1, containers: [{name: web, image: nginx, ports: [{name: http, containerPort: 8080}]}]}\n",
    );
    ok(&k(&["apply", "-f", &manifests]), "apply web");
    report_pod(&bed, "apps", "web-a", "10.244.0.5", false);
    let slice = || {
        let v = get_json(
            &bed,
            &[
                "endpointslices",
                "-n",
                "apps",
                "-l",
                "kubernetes.io/service-name=web",
            ],
        );
        v["items"][0].clone()
    };
    wait_for(
        "a slice with the not-ready pod",
        Duration::from_secs(20),
        || slice()["endpoints"][0]["conditions"]["ready"] == false,
    );
    let s = slice();
    assert_eq!(s["endpoints"][0]["addresses"][0], "10.244.0.5", "{s}");
    assert_eq!(s["endpoints"][0]["nodeName"], "n1", "{s}");
    assert_eq!(s["ports"][0]["port"], 8080, "{s}");
    report_pod(&bed, "apps", "web-a", "10.244.0.5", true);
    wait_for(
        "the pod ready in the slice",
        Duration::from_secs(20),
        || slice()["endpoints"][0]["conditions"]["ready"] == true,
    );
    ok(&k(&["delete", "pod", "web-a", "-n", "apps"]), "delete pod");
    wait_for("the slice emptied", Duration::from_secs(20), || {
        slice()["endpoints"].as_array().is_some_and(Vec::is_empty)
    });

    // A Deployment is Available once its pod is Ready.
    let dep = write(
        dir,
        "dep.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api, namespace: apps}\n\
         spec: {replicas: 1, selector: {matchLabels: {app: api}}, template: {metadata: {labels: {app: api}}, spec: {containers: [{name: c, image: x}]}}}\n",
    );
    ok(&k(&["apply", "-f", &dep]), "apply deployment");
    wait_for("the deployment's pod", Duration::from_secs(20), || {
        pod_names(&bed, "apps", "app=api").len() == 1
    });
    let dstatus = || get_json(&bed, &["deployment", "api", "-n", "apps"])["status"].clone();
    wait_for("Available=False", Duration::from_secs(20), || {
        dstatus()["conditions"][0]["status"] == "False"
    });
    report_pod(
        &bed,
        "apps",
        &pod_names(&bed, "apps", "app=api")[0],
        "10.244.1.7",
        true,
    );
    wait_for("Available=True", Duration::from_secs(20), || {
        let st = dstatus();
        st["conditions"][0]["type"] == "Available"
            && st["conditions"][0]["status"] == "True"
            && st["availableReplicas"] == 1
    });
    let st = dstatus();
    assert_eq!(st["readyReplicas"], 1, "{st}");
    assert_eq!(st["updatedReplicas"], 1, "{st}");
    assert_eq!(st["observedGeneration"], 1, "{st}");
    // A new template rolls: the old pod serves until the new one is ready (maxSurge 1,
    // maxUnavailable 0 for one replica).
    let dep2 = std::fs::read_to_string(&dep)
        .unwrap()
        .replace("image: x", "image: x2");
    ok(
        &k(&["apply", "-f", &write(dir, "dep2.yaml", &dep2)]),
        "change the deployment",
    );
    let api_pods = || {
        get_json(&bed, &["pods", "-n", "apps", "-l", "app=api"])["items"]
            .as_array()
            .unwrap()
            .clone()
    };
    wait_for("a surge pod", Duration::from_secs(20), || {
        api_pods().len() == 2
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        api_pods().len(),
        2,
        "the old pod stays while the new one is not ready"
    );
    let new_pod = api_pods()
        .into_iter()
        .find(|p| p["spec"]["containers"][0]["image"] == "x2")
        .unwrap();
    report_pod(
        &bed,
        "apps",
        new_pod["metadata"]["name"].as_str().unwrap(),
        "10.244.1.8",
        true,
    );
    wait_for("the old pod gone", Duration::from_secs(20), || {
        let p = api_pods();
        p.len() == 1 && p[0]["spec"]["containers"][0]["image"] == "x2"
    });
    wait_for("the rollout reported", Duration::from_secs(20), || {
        let st = dstatus();
        st["observedGeneration"] == 2
            && st["updatedReplicas"] == 1
            && st["availableReplicas"] == 1
            && st["replicas"] == 1
    });
    // The old ReplicaSet stays, at 0 replicas (the revision history).
    let rs = get_json(&bed, &["replicasets", "-n", "apps"]);
    let mut counts: Vec<i64> = rs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["spec"]["replicas"].as_i64().unwrap())
        .collect();
    counts.sort_unstable();
    assert_eq!(counts, [0, 1], "{rs}");

    // A DaemonSet rolls a changed template one node at a time.
    let ds = |image: &str| {
        write(
            dir,
            "ds.yaml",
            &format!(
                "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {{name: agent, namespace: apps}}\n\
                 spec: {{selector: {{matchLabels: {{app: agent}}}}, template: {{metadata: {{labels: {{app: agent}}}}, spec: {{containers: [{{name: c, image: {image}}}]}}}}}}\n"
            ),
        )
    };
    ok(&k(&["apply", "-f", &ds("agent:v1")]), "apply ds");
    wait_for("2 agent pods", Duration::from_secs(20), || {
        pod_names(&bed, "apps", "app=agent").len() == 2
    });
    let image_of = |p: &serde_json::Value| {
        p["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let mark_all_ready = || {
        for (i, p) in pod_names(&bed, "apps", "app=agent").iter().enumerate() {
            report_pod(&bed, "apps", p, &format!("10.244.{i}.2"), true);
        }
    };
    mark_all_ready();
    let dsst = || get_json(&bed, &["daemonset", "agent", "-n", "apps"])["status"].clone();
    wait_for("the DaemonSet ready", Duration::from_secs(20), || {
        let st = dsst();
        st["numberReady"] == 2 && st["numberAvailable"] == 2 && st["updatedNumberScheduled"] == 2
    });
    ok(&k(&["apply", "-f", &ds("agent:v2")]), "change the template");
    let pods = || {
        get_json(&bed, &["pods", "-n", "apps", "-l", "app=agent"])["items"]
            .as_array()
            .unwrap()
            .clone()
    };
    wait_for("one pod replaced", Duration::from_secs(20), || {
        let p = pods();
        p.len() == 2 && p.iter().filter(|p| image_of(p) == "agent:v2").count() == 1
    });
    // The new pod is not ready yet: the other old one stays.
    std::thread::sleep(Duration::from_secs(3));
    let p = pods();
    assert_eq!(
        p.iter().filter(|p| image_of(p) == "agent:v1").count(),
        1,
        "{p:?}"
    );
    let st = dsst();
    assert_eq!(st["updatedNumberScheduled"], 1, "{st}");
    assert_eq!(st["observedGeneration"], 2, "{st}");
    assert_eq!(st["numberUnavailable"], 1, "{st}");
    mark_all_ready();
    wait_for("both pods replaced", Duration::from_secs(20), || {
        let p = pods();
        p.len() == 2 && p.iter().all(|p| image_of(p) == "agent:v2")
    });
    mark_all_ready();
    wait_for("the rollout done", Duration::from_secs(20), || {
        let st = dsst();
        st["updatedNumberScheduled"] == 2
            && st["numberAvailable"] == 2
            && st["desiredNumberScheduled"] == 2
            && st["currentNumberScheduled"] == 2
    });
}

/// A kubelet's :10250 for the logs: TLS with a serving cert from `ca`, client certs of
/// `ca` required; answers every request with `body` and records the request lines.
fn fake_kubelet(
    ca: &Ca,
    body: &'static str,
) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::io::{BufRead, BufReader, Write};
    let serving = ca.issue("n1", &[], &["127.0.0.1"], true, false);
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap())
        .unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        std::sync::Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let cfg = std::sync::Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![CertificateDer::from_pem_slice(serving.cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(serving.key.as_bytes()).unwrap(),
            )
            .unwrap(),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let conn = rustls::ServerConnection::new(cfg.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let mut reader = BufReader::new(&mut tls);
            let mut first = String::new();
            if reader.read_line(&mut first).is_err() {
                continue;
            }
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() || line.trim().is_empty() {
                    break;
                }
            }
            log.lock().unwrap().push(first.trim().to_string());
            let _ = write!(
                tls,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tls.flush();
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    (port, seen)
}

#[test]
fn pod_logs_are_proxied_to_the_kubelet() {
    let bed = Bed::start();
    let dir = bed.dir.path();
    let (kport, seen) = fake_kubelet(&bed.ca, "line 1\nline 2\n");
    // A second API server, with the kubelet client flags, on the same etcd.
    let client = bed.ca.issue(
        "kube-apiserver-kubelet-client",
        &["kubeadm:cluster-admins"],
        &[],
        false,
        true,
    );
    let cert = write(dir, "kubelet-client.crt", &client.cert);
    let key = write(dir, "kubelet-client.key", &client.key);
    let port = free_port();
    let mut args = bed.apiserver_args(port);
    args.extend([
        format!("--kubelet-client-certificate={cert}"),
        format!("--kubelet-client-key={key}"),
        format!("--kubelet-certificate-authority={}", bed.path("ca.crt")),
        "--kubelet-preferred-address-types=InternalIP,Hostname".into(),
    ]);
    let _api2 = Proc::spawn(
        std::process::Command::new(stamped(dir, "kube-apiserver", VERSION)).args(&args),
        dir.join("apiserver2.log"),
    );
    let admin = bed
        .ca
        .issue("kubernetes-admin", &["system:masters"], &[], false, true);
    let kc = kubeconfig(
        dir,
        "admin2.conf",
        &format!("https://127.0.0.1:{port}"),
        &bed.ca.pem,
        &admin,
    );
    wait_for("the second API server", Duration::from_secs(30), || {
        kubectl(&kc, &["get", "--raw", "/readyz"]).status.success()
    });
    let objects = write(
        dir,
        "logs.yaml",
        &format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: n1}}\n\
             status: {{addresses: [{{type: Hostname, address: n1}}, {{type: InternalIP, address: 127.0.0.1}}], daemonEndpoints: {{kubeletEndpoint: {{Port: {kport}}}}}}}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {{name: web, namespace: default}}\n\
             spec: {{nodeName: n1, containers: [{{name: app, image: \"x\"}}, {{name: side, image: \"y\"}}]}}\n"
        ),
    );
    ok(&kubectl(&kc, &["apply", "-f", &objects]), "apply");
    let out = ok(
        &kubectl(&kc, &["logs", "web", "-c", "app", "--tail=5", "--previous"]),
        "kubectl logs",
    );
    assert_eq!(out, "line 1\nline 2\n");
    let reqs = seen.lock().unwrap().clone();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert!(
        reqs[0].starts_with("GET /containerLogs/default/web/app?"),
        "{reqs:?}"
    );
    assert!(
        reqs[0].contains("tailLines=5") && reqs[0].contains("previous=true"),
        "{reqs:?}"
    );
    // Two containers and none named: the real error.
    let out = kubectl(
        &kc,
        &["get", "--raw", "/api/v1/namespaces/default/pods/web/log"],
    );
    assert!(
        stderr(&out)
            .contains("a container name must be specified for pod web, choose one of: [app side]"),
        "{}",
        stderr(&out)
    );
    // A container that is not the pod's.
    let out = kubectl(&kc, &["logs", "web", "-c", "nope"]);
    assert!(
        stderr(&out).contains("container nope is not valid for pod web"),
        "{}",
        stderr(&out)
    );
    // The first server has no kubelet client certificate: the kubelet refuses it.
    let out = kubectl(&bed.admin, &["logs", "web", "-c", "app"]);
    assert!(!out.status.success(), "{}", stderr(&out));
}
