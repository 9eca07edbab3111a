//! flanneld stand-in (`/opt/bin/flanneld --ip-masq --kube-subnet-mgr`): finds its node (NODE_NAME,
//! or its pod's spec.nodeName from POD_NAME/POD_NAMESPACE), reads the network config, takes
//! the node's podCIDR as its lease (failing as the real one when none is assigned), records
//! its annotations on the Node, writes the subnet file the CNI plugin reads, and stays up.
//! There is no VXLAN device or masquerade rule: the stand-ins' pods share the host network.

use std::net::Ipv4Addr;
use std::time::Duration;

use serde_json::{Value, json};

use crate::klog::plain;
use crate::kubeclient::{Client, go_err};

/// Go `flag` definitions: (name, is bool, default).
const FLAGS: &[(&str, bool, &str)] = &[
    (
        "etcd-endpoints",
        false,
        "http://127.0.0.1:4001,http://127.0.0.1:2379",
    ),
    ("etcd-prefix", false, "/coreos.com/network"),
    ("etcd-keyfile", false, ""),
    ("etcd-certfile", false, ""),
    ("etcd-cafile", false, ""),
    ("etcd-username", false, ""),
    ("etcd-password", false, ""),
    ("v", false, "0"),
    ("version", true, "false"),
    ("kube-subnet-mgr", true, "false"),
    ("kube-api-url", false, ""),
    ("kube-annotation-prefix", false, "flannel.alpha.coreos.com"),
    ("kubeconfig-file", false, ""),
    ("iface", false, ""),
    ("iface-regex", false, ""),
    ("iface-can-reach", false, ""),
    ("subnet-file", false, "/run/flannel/subnet.env"),
    ("public-ip", false, ""),
    ("public-ipv6", false, ""),
    ("subnet-lease-renew-margin", false, "60"),
    ("ip-masq", true, "false"),
    ("healthz-ip", false, "0.0.0.0"),
    ("healthz-port", false, "0"),
    ("iptables-resync", false, "5"),
    ("iptables-forward-rules", true, "true"),
    ("net-config-path", false, "/etc/kube-flannel/net-conf.json"),
    ("set-node-network-unavailable", true, "true"),
];

fn usage_exit(msg: &str) -> ! {
    eprintln!("{msg}");
    eprintln!("Usage of /opt/bin/flanneld:");
    for (n, b, d) in FLAGS {
        eprintln!(
            "  -{n}{}\n    \t(default {d:?})",
            if *b { "" } else { " string" }
        );
    }
    std::process::exit(2);
}

fn parse(args: &[String]) -> std::collections::HashMap<String, String> {
    let mut out: std::collections::HashMap<String, String> = FLAGS
        .iter()
        .map(|(n, _, d)| ((*n).to_string(), (*d).to_string()))
        .collect();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        let Some(body) = a.strip_prefix("--").or_else(|| a.strip_prefix('-')) else {
            // Go's flag stops at the first non-flag argument; flanneld ignores the rest.
            break;
        };
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        let Some((_, is_bool, _)) = FLAGS.iter().find(|(n, _, _)| *n == name) else {
            usage_exit(&format!("flag provided but not defined: -{name}"));
        };
        let v = if *is_bool {
            match inline.as_deref() {
                None | Some("true" | "1" | "t" | "T" | "TRUE" | "True") => "true".to_string(),
                Some("false" | "0" | "f" | "F" | "FALSE" | "False") => "false".to_string(),
                Some(v) => usage_exit(&format!(
                    "invalid boolean value {v:?} for -{name}: parse error"
                )),
            }
        } else if let Some(v) = inline {
            v
        } else if let Some(v) = args.get(i) {
            i += 1;
            v.clone()
        } else {
            usage_exit(&format!("flag needs an argument: -{name}"));
        };
        out.insert(name.to_string(), v);
    }
    out
}

fn fail(at: &str, msg: &str) -> ! {
    plain('E', at, msg);
    std::process::exit(1);
}

/// The lease's gateway address: the first address of the subnet (10.244.1.0/24 -> 10.244.1.1/24).
pub fn subnet_gateway(cidr: &str) -> Option<String> {
    let (ip, len) = cidr.split_once('/')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    Some(format!("{}/{len}", Ipv4Addr::from(u32::from(ip) + 1)))
}

/// The subnet.env the flannel CNI plugin reads.
pub fn subnet_env(network: &str, pod_cidr: &str, mtu: u32, ipmasq: bool) -> Option<String> {
    Some(format!(
        "FLANNEL_NETWORK={network}\nFLANNEL_SUBNET={}\nFLANNEL_MTU={mtu}\nFLANNEL_IPMASQ={ipmasq}\n",
        subnet_gateway(pod_cidr)?
    ))
}

pub fn main(args: &[String]) {
    let f = parse(args);
    let flag = |n: &str| f.get(n).cloned().unwrap_or_default();
    if flag("version") == "true" {
        let v = crate::version::current().unwrap_or_else(|e| fail("main.go:203", &e));
        println!("{v}");
        std::process::exit(0);
    }
    plain('I', "main.go:211", &format!("CLI flags config: {f:?}"));
    if flag("kube-subnet-mgr") != "true" {
        fail(
            "main.go:233",
            "the capstan stand-in implements --kube-subnet-mgr only (no etcd subnet manager)",
        );
    }
    let client = if flag("kubeconfig-file").is_empty() {
        Client::in_cluster()
    } else {
        Client::from_kubeconfig(&flag("kubeconfig-file"))
    }
    .unwrap_or_else(|e| {
        fail(
            "main.go:241",
            &format!("Failed to create SubnetManager: fail to create kubernetes config: {e}"),
        )
    });
    // --kube-api-url overrides the kubeconfig's server, as client-go's master override.
    let mut client = client;
    if !flag("kube-api-url").is_empty() {
        client.server = flag("kube-api-url").trim_end_matches('/').to_string();
    }
    let node = if let Some(n) = std::env::var("NODE_NAME").ok().filter(|n| !n.is_empty()) {
        n
    } else {
        let pod = std::env::var("POD_NAME").unwrap_or_default();
        let ns = std::env::var("POD_NAMESPACE").unwrap_or_default();
        if pod.is_empty() || ns.is_empty() {
            fail(
                "main.go:241",
                "Failed to create SubnetManager: env variables POD_NAME and POD_NAMESPACE must be set",
            );
        }
        let p = client
                .get(&format!("/api/v1/namespaces/{ns}/pods/{pod}"))
                .unwrap_or_else(|e| fail("main.go:241", &format!("Failed to create SubnetManager: error retrieving pod spec for '{ns}/{pod}': {e}")));
        p["spec"]["nodeName"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    if node.is_empty() {
        fail(
            "main.go:241",
            "Failed to create SubnetManager: node name not present in pod spec",
        );
    }
    let conf_path = flag("net-config-path");
    let conf_text = std::fs::read_to_string(&conf_path).unwrap_or_else(|e| {
        fail(
            "main.go:241",
            &format!(
                "Failed to create SubnetManager: failed to read net conf: open {conf_path}: {}",
                go_err(&e)
            ),
        )
    });
    let conf: Value = serde_json::from_str(&conf_text).unwrap_or_else(|e| {
        fail(
            "main.go:241",
            &format!("Failed to create SubnetManager: error parsing subnet config: {e}"),
        )
    });
    let network = conf["Network"].as_str().unwrap_or_default().to_string();
    if network.is_empty() && conf["IPv6Network"].as_str().is_none() {
        fail(
            "main.go:241",
            "Failed to create SubnetManager: error parsing subnet config: please define a correct Network or IPv6Network parameter in the flannel config",
        );
    }
    let backend = conf["Backend"]["Type"]
        .as_str()
        .unwrap_or("vxlan")
        .to_string();
    plain('I', "kube.go:469", "Starting kube subnet manager");
    plain(
        'I',
        "main.go:416",
        &format!("Found network config - Backend type: {backend}"),
    );
    let n = client
        .get(&format!("/api/v1/nodes/{node}"))
        .unwrap_or_else(|e| {
            fail(
                "main.go:359",
                &format!("Error registering network: failed to acquire lease: {e}"),
            )
        });
    let Some(pod_cidr) = n["spec"]["podCIDR"]
        .as_str()
        .filter(|c| !c.is_empty())
        .map(ToString::to_string)
    else {
        fail(
            "main.go:359",
            &format!(
                "Error registering network: failed to acquire lease: node {node:?} pod cidr not assigned"
            ),
        );
    };
    let public_ip = if flag("public-ip").is_empty() {
        n["status"]["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["type"] == "InternalIP")
            .and_then(|a| a["address"].as_str())
            .unwrap_or_default()
            .to_string()
    } else {
        flag("public-ip")
    };
    let prefix = flag("kube-annotation-prefix");
    let backend_data = if backend == "vxlan" {
        json!({"VNI": conf["Backend"]["VNI"].as_u64().unwrap_or(1), "VtepMAC": "00:00:00:00:00:00"})
            .to_string()
    } else {
        "null".to_string()
    };
    let patch = json!({"metadata": {"annotations": {
        format!("{prefix}/backend-data"): backend_data,
        format!("{prefix}/backend-type"): backend,
        format!("{prefix}/kube-subnet-manager"): "true",
        format!("{prefix}/public-ip"): public_ip,
    }}});
    if let Err(e) = client.patch(
        &format!("/api/v1/nodes/{node}/status"),
        "application/strategic-merge-patch+json",
        &patch,
    ) {
        fail(
            "main.go:359",
            &format!("Error registering network: failed to acquire lease: {e}"),
        );
    }
    let mtu = if backend == "vxlan" { 1450 } else { 1500 };
    let ipmasq = flag("ip-masq") == "true";
    let env = subnet_env(&network, &pod_cidr, mtu, ipmasq).unwrap_or_else(|| {
        fail(
            "main.go:359",
            &format!(
                "Error registering network: failed to acquire lease: invalid pod cidr {pod_cidr:?}"
            ),
        )
    });
    let file = flag("subnet-file");
    if let Some(dir) = std::path::Path::new(&file).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let tmp = format!("{file}.tmp");
    if let Err(e) = std::fs::write(&tmp, &env).and_then(|()| std::fs::rename(&tmp, &file)) {
        fail(
            "main.go:520",
            &format!("Failed to write subnet file: open {tmp}: {}", go_err(&e)),
        );
    }
    plain(
        'I',
        "kube.go:636",
        &format!("Acquired lease {pod_cidr} for node {node}"),
    );
    plain('I', "main.go:523", "Running backend.");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_file() {
        assert_eq!(
            subnet_env("10.244.0.0/16", "10.244.1.0/24", 1450, true).unwrap(),
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
        );
        assert!(subnet_gateway("nope").is_none());
    }
}
