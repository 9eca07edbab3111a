//! The controller-manager's controllers around Services and namespaces: EndpointSlices for
//! Services with a selector, the `kube-root-ca.crt` ConfigMap and the `default`
//! ServiceAccount of every namespace, and node podCIDR allocation (node IPAM).

use serde_json::{Value, json};

use crate::cidr::Cidr;
use crate::client::Api;
use crate::common::log;
use crate::selectors::LabelSelector;

const CM: &str = "kube-controller-manager";
const MANAGED_BY: &str = "endpointslice-controller.k8s.io";

/// What these controllers take from the flags.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// --root-ca-file's content (else the kubeconfig's CA), PEM.
    pub root_ca: String,
    /// With --allocate-node-cidrs: each --cluster-cidr with its node mask size.
    pub cluster_cidrs: Vec<(Cidr, u8)>,
}

fn items(api: &Api, path: &str) -> Option<Vec<Value>> {
    match api.get(path) {
        Ok(r) if r.ok() => r.body["items"].as_array().cloned(),
        _ => None,
    }
}

/// The pod's Ready condition (what "ready" means everywhere, not phase Running).
pub fn pod_ready(p: &Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|x| x["type"] == "Ready" && x["status"] == "True")
    })
}

fn report(what: &str, r: Result<crate::client::Reply, String>) {
    match r {
        Ok(r) if r.ok() => {}
        Ok(r) => log(CM, &format!("{what}: {}", r.message())),
        Err(e) => log(CM, &format!("{what}: {e}")),
    }
}

/// The slice the EndpointSlice controller keeps for `svc` from `pods` (its namespace's).
pub fn desired_slice(svc: &Value, pods: &[Value]) -> Option<Value> {
    let sel = svc["spec"]["selector"]
        .as_object()
        .filter(|s| !s.is_empty())?;
    let ns = svc["metadata"]["namespace"].as_str().unwrap_or("default");
    let name = svc["metadata"]["name"].as_str().unwrap_or("");
    let selector = LabelSelector::from_object(&json!({"matchLabels": sel}));
    let publish_not_ready = svc["spec"]["publishNotReadyAddresses"] == true;
    let mut matching: Vec<&Value> = pods
        .iter()
        .filter(|p| p["metadata"]["namespace"] == ns && selector.matches(p))
        .filter(|p| {
            p["status"]["podIP"]
                .as_str()
                .is_some_and(|ip| !ip.is_empty())
        })
        .filter(|p| !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")))
        .collect();
    matching.sort_by_key(|p| p["metadata"]["name"].as_str().unwrap_or("").to_string());
    let v6 = matching.first().is_some_and(|p| {
        p["status"]["podIP"]
            .as_str()
            .is_some_and(|ip| ip.contains(':'))
    });
    let endpoints: Vec<Value> = matching
        .iter()
        .map(|p| {
            let terminating = !p["metadata"]["deletionTimestamp"].is_null();
            let serving = pod_ready(p);
            let mut e = json!({"addresses": [p["status"]["podIP"]],
                "conditions": {"ready": (serving || publish_not_ready) && !terminating, "serving": serving || publish_not_ready, "terminating": terminating},
                "targetRef": {"kind": "Pod", "namespace": ns, "name": p["metadata"]["name"], "uid": p["metadata"]["uid"]}});
            if let Some(n) = p["spec"]["nodeName"].as_str() {
                e["nodeName"] = json!(n);
            }
            e
        })
        .collect();
    let ports: Vec<Value> = svc["spec"]["ports"]
        .as_array()
        .map(|ports| {
            ports
                .iter()
                .map(|sp| {
                    let target = &sp["targetPort"];
                    let number = match target {
                        Value::Number(n) => n.as_i64(),
                        Value::String(named) => matching.iter().find_map(|p| {
                            p["spec"]["containers"].as_array()?.iter().find_map(|c| {
                                c["ports"].as_array()?.iter().find_map(|cp| {
                                    (cp["name"] == named.as_str())
                                        .then(|| cp["containerPort"].as_i64())
                                        .flatten()
                                })
                            })
                        }),
                        _ => sp["port"].as_i64(),
                    };
                    let mut out = json!({"name": sp["name"].as_str().unwrap_or(""),
                        "protocol": sp["protocol"].as_str().unwrap_or("TCP"), "port": number});
                    if let Some(a) = sp.get("appProtocol") {
                        out["appProtocol"] = a.clone();
                    }
                    out
                })
                .collect()
        })
        .unwrap_or_default();
    let suffix = crate::controllers::short_hash(svc["metadata"]["uid"].as_str().unwrap_or(name));
    Some(
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{name}-{suffix}"), "namespace": ns,
            "labels": {"kubernetes.io/service-name": name, "endpointslice.kubernetes.io/managed-by": MANAGED_BY},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": name, "uid": svc["metadata"]["uid"],
                                 "controller": true, "blockOwnerDeletion": true}]},
        "addressType": if v6 { "IPv6" } else { "IPv4" }, "endpoints": endpoints, "ports": ports}),
    )
}

/// The EndpointSlice controller, one round.
fn endpoint_slices(api: &Api) {
    let (Some(services), Some(pods), Some(slices)) = (
        items(api, "/api/v1/services"),
        items(api, "/api/v1/pods"),
        items(api, "/apis/discovery.k8s.io/v1/endpointslices"),
    ) else {
        return;
    };
    let mut wanted = Vec::new();
    for svc in &services {
        let Some(want) = desired_slice(svc, &pods) else {
            continue;
        };
        let ns = want["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let name = want["metadata"]["name"].as_str().unwrap_or("").to_string();
        wanted.push(format!("{ns}/{name}"));
        let cur = slices.iter().find(|s| {
            s["metadata"]["namespace"] == ns.as_str() && s["metadata"]["name"] == name.as_str()
        });
        match cur {
            None => report(
                &format!("creating endpointslice {ns}/{name}"),
                api.post(
                    &format!("/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices"),
                    &want,
                ),
            ),
            Some(c)
                if c["endpoints"] != want["endpoints"]
                    || c["ports"] != want["ports"]
                    || c["addressType"] != want["addressType"] =>
            {
                let mut new = want.clone();
                new["metadata"]["resourceVersion"] = c["metadata"]["resourceVersion"].clone();
                report(
                    &format!("updating endpointslice {ns}/{name}"),
                    api.put(
                        &format!("/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices/{name}"),
                        &new,
                    ),
                );
            }
            Some(_) => {}
        }
    }
    for s in &slices {
        if s["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] != MANAGED_BY {
            continue;
        }
        let ns = s["metadata"]["namespace"].as_str().unwrap_or("");
        let name = s["metadata"]["name"].as_str().unwrap_or("");
        if !wanted.contains(&format!("{ns}/{name}")) {
            report(
                &format!("deleting endpointslice {ns}/{name}"),
                api.delete(&format!(
                    "/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices/{name}"
                )),
            );
        }
    }
}

const ROOT_CA_DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

/// The root-CA publisher and the service account controller: `kube-root-ca.crt` and the
/// `default` ServiceAccount in every active namespace.
fn namespaces(api: &Api, cfg: &Config) {
    let (Some(nss), Some(cms), Some(sas)) = (
        items(api, "/api/v1/namespaces"),
        items(
            api,
            "/api/v1/configmaps?fieldSelector=metadata.name%3Dkube-root-ca.crt",
        ),
        items(
            api,
            "/api/v1/serviceaccounts?fieldSelector=metadata.name%3Ddefault",
        ),
    ) else {
        return;
    };
    for n in &nss {
        if !n["metadata"]["deletionTimestamp"].is_null() {
            continue;
        }
        let ns = n["metadata"]["name"].as_str().unwrap_or("");
        let data = json!({"ca.crt": cfg.root_ca});
        match cms.iter().find(|c| c["metadata"]["namespace"] == ns) {
            None => report(
                &format!("creating configmap {ns}/kube-root-ca.crt"),
                api.post(
                    &format!("/api/v1/namespaces/{ns}/configmaps"),
                    &json!({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": "kube-root-ca.crt", "namespace": ns,
                                     "annotations": {"kubernetes.io/description": ROOT_CA_DESCRIPTION}},
                        "data": data}),
                ),
            ),
            Some(c) if c["data"] != data => report(
                &format!("updating configmap {ns}/kube-root-ca.crt"),
                api.merge_patch(
                    &format!("/api/v1/namespaces/{ns}/configmaps/kube-root-ca.crt"),
                    &json!({"data": data}),
                ),
            ),
            Some(_) => {}
        }
        if !sas.iter().any(|s| s["metadata"]["namespace"] == ns) {
            report(
                &format!("creating serviceaccount {ns}/default"),
                api.post(
                    &format!("/api/v1/namespaces/{ns}/serviceaccounts"),
                    &json!({"apiVersion": "v1", "kind": "ServiceAccount",
                        "metadata": {"name": "default", "namespace": ns}}),
                ),
            );
        }
    }
}

/// The node IPAM range allocator: a podCIDR per cluster CIDR for every node without one.
fn node_ipam(api: &Api, cfg: &Config) {
    if cfg.cluster_cidrs.is_empty() {
        return;
    }
    let Some(nodes) = items(api, "/api/v1/nodes") else {
        return;
    };
    let mut used: Vec<String> = nodes
        .iter()
        .filter_map(|n| n["spec"]["podCIDRs"].as_array())
        .flatten()
        .filter_map(|c| c.as_str().map(String::from))
        .collect();
    for n in &nodes {
        let has = n["spec"]["podCIDR"].as_str().is_some_and(|c| !c.is_empty());
        if has {
            continue;
        }
        let name = n["metadata"]["name"].as_str().unwrap_or("");
        let mut cidrs = Vec::new();
        for (range, mask) in &cfg.cluster_cidrs {
            let free = (0u128..)
                .map_while(|i| range.subnet(*mask, i))
                .map(|c| c.to_string())
                .find(|c| !used.contains(c));
            let Some(c) = free else {
                log(
                    CM,
                    &format!(
                        "failed to allocate cidr from cluster cidr at idx:0: CIDR allocation failed; there are no remaining CIDRs left to allocate in the accepted range (node {name})"
                    ),
                );
                return;
            };
            used.push(c.clone());
            cidrs.push(c);
        }
        log(CM, &format!("set node {name} PodCIDR to {cidrs:?}"));
        report(
            &format!("patching node {name}'s podCIDR"),
            api.merge_patch(
                &format!("/api/v1/nodes/{name}"),
                &json!({"spec": {"podCIDR": cidrs[0], "podCIDRs": cidrs}}),
            ),
        );
    }
}

/// One round of these controllers; each skips its round when one of its lists fails.
pub fn run_once(api: &Api, cfg: &Config) {
    endpoint_slices(api);
    namespaces(api, cfg);
    node_ipam(api, cfg);
}

/// --allocate-node-cidrs, --cluster-cidr, --node-cidr-mask-size(-ipv4/-ipv6), as the
/// node IPAM controller reads them; errors as the real one fails to start.
pub fn cluster_cidrs(p: &crate::flags::Parsed) -> Result<Vec<(Cidr, u8)>, String> {
    if !p.bool("allocate-node-cidrs", false) {
        return Ok(Vec::new());
    }
    let raw = p.get("cluster-cidr").unwrap_or("").trim();
    if raw.is_empty() {
        return Err("error starting controllers: failed to start the node-ipam-controller: kube-controller-manager missing --cluster-cidr flag".into());
    }
    let mut out = Vec::new();
    for c in raw.split(',') {
        let cidr = Cidr::parse(c).map_err(|e| {
            format!("error starting controllers: failed to start the node-ipam-controller: {e}")
        })?;
        let flag = if cidr.v6 {
            "node-cidr-mask-size-ipv6"
        } else {
            "node-cidr-mask-size-ipv4"
        };
        let default = if cidr.v6 { "64" } else { "24" };
        let mask = p
            .get(flag)
            .or_else(|| p.get("node-cidr-mask-size"))
            .unwrap_or(default);
        let mask: u8 = mask
            .parse()
            .map_err(|_| format!("invalid argument {mask:?} for \"--{flag}\" flag: strconv.ParseInt: parsing {mask:?}: invalid syntax"))?;
        if mask < cidr.bits {
            return Err("Controller: Invalid --cluster-cidr, mask size of cluster CIDR must be less than or equal to --node-cidr-mask-size configured for CIDR family".into());
        }
        if cidr.subnet(mask, 0).is_none() {
            return Err(format!(
                "error starting controllers: --node-cidr-mask-size {mask} is too large for {cidr}"
            ));
        }
        out.push((cidr, mask));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_follow_pod_readiness_and_resolve_named_ports() {
        let svc = json!({"metadata": {"name": "dns", "namespace": "kube-system", "uid": "s1"},
            "spec": {"selector": {"app": "dns"}, "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": "dns"},
                                                          {"name": "metrics", "port": 9153, "targetPort": 9153}]}});
        let pod = |n: &str, ready: &str, ip: &str| {
            json!({"metadata": {"name": n, "namespace": "kube-system", "uid": n, "labels": {"app": "dns"}},
                "spec": {"nodeName": "w1", "containers": [{"name": "c", "ports": [{"name": "dns", "containerPort": 5353}]}]},
                "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": ready}]}})
        };
        let pods = vec![
            pod("b", "False", "10.0.0.2"),
            pod("a", "True", "10.0.0.1"),
            pod("c", "True", ""),
            json!({"metadata": {"name": "x", "namespace": "default", "labels": {"app": "dns"}}, "status": {"podIP": "10.0.0.9"}}),
        ];
        let s = desired_slice(&svc, &pods).unwrap();
        assert_eq!(s["metadata"]["labels"]["kubernetes.io/service-name"], "dns");
        let eps = s["endpoints"].as_array().unwrap();
        assert_eq!(eps.len(), 2, "{s}");
        assert_eq!(eps[0]["addresses"][0], "10.0.0.1");
        assert_eq!(eps[0]["conditions"]["ready"], true);
        assert_eq!(eps[1]["conditions"]["ready"], false);
        assert_eq!(s["ports"][0]["port"], 5353);
        assert_eq!(s["ports"][0]["protocol"], "UDP");
        assert_eq!(s["ports"][1]["port"], 9153);
        assert!(desired_slice(&json!({"metadata": {"name": "k"}, "spec": {}}), &pods).is_none());
    }
}
