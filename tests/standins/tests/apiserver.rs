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
    // --token on the command line works the same.
    let out = kubectl(&bed.admin, &["--token", &token, "get", "nodes"]);
    // (a client certificate in the kubeconfig wins over a token, as kubectl sends both)
    assert!(out.status.success(), "{}", stderr(&out));
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
}
