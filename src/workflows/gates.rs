//! Health gates: the commands a workflow runs on a host to see that what it just started
//! works, and pure parsers of their output (tested with fixtures).
//!
//! Every gate runs through the tools capstan installed on the host (etcdctl, kubectl) with
//! the certificates it distributed, so a gate that passes proves the wiring: TLS, the
//! endpoint, the load balancer.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::ssh;

/// Where the roles install the client tools.
const PATH: &str = "PATH=/usr/local/bin:/usr/local/sbin:/usr/bin:/usr/sbin:/bin:/sbin";
/// The host's admin kubeconfig (control planes): it points at the API endpoint.
pub const ADMIN_CONF: &str = "/etc/kubernetes/admin.conf";

/// etcdctl against the local member, with the healthcheck client cert.
pub fn etcdctl(args: &str) -> String {
    format!(
        "{PATH} ETCDCTL_API=3 etcdctl --endpoints=https://127.0.0.1:2379 \
         --cacert=/etc/kubernetes/pki/etcd/ca.crt \
         --cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt \
         --key=/etc/kubernetes/pki/etcd/healthcheck-client.key \
         --command-timeout=5s {args}"
    )
}

/// Every member's health as the cluster sees it (`endpoint health --cluster`).
pub fn etcd_health_script() -> String {
    etcdctl("endpoint health --cluster -w json")
}

#[derive(Debug, Deserialize)]
struct EndpointHealth {
    endpoint: String,
    health: bool,
    #[serde(default)]
    error: Option<String>,
}

/// `endpoint -> healthy` from `endpoint health --cluster -w json`.
pub fn parse_etcd_health(stdout: &str) -> Result<BTreeMap<String, Result<(), String>>, String> {
    let list: Vec<EndpointHealth> = serde_json::from_str(stdout.trim())
        .map_err(|e| format!("unexpected etcdctl output ({e}): {}", first_line(stdout)))?;
    Ok(list
        .into_iter()
        .map(|e| {
            let state = if e.health {
                Ok(())
            } else {
                Err(e.error.unwrap_or_else(|| "unhealthy".into()))
            };
            (e.endpoint, state)
        })
        .collect())
}

/// The local member's status (`endpoint status -w json`).
pub fn etcd_status_script() -> String {
    etcdctl("endpoint status -w json")
}

#[derive(Debug, Deserialize)]
struct EndpointStatus {
    #[serde(rename = "Status")]
    status: EtcdStatus,
}

#[derive(Debug, Deserialize)]
struct EtcdStatus {
    version: String,
}

/// The server version the first endpoint of `endpoint status -w json` reports (`3.5.30`).
pub fn parse_etcd_version(stdout: &str) -> Result<String, String> {
    let list: Vec<EndpointStatus> = serde_json::from_str(stdout.trim())
        .map_err(|e| format!("unexpected etcdctl output ({e})"))?;
    list.into_iter()
        .next()
        .map(|e| e.status.version)
        .ok_or_else(|| "etcdctl listed no endpoint".to_string())
}

/// etcd's `/version` of the local member (`{"etcdserver":"3.5.30","etcdcluster":"3.5.0"}`),
/// over TLS with the healthcheck client cert: the cluster version is the lowest minor every
/// member runs, which etcd raises once all of them run a newer one.
pub fn etcd_version_script() -> String {
    format!(
        "{PATH} curl -sS --fail --max-time 5 --cacert /etc/kubernetes/pki/etcd/ca.crt \
         --cert /etc/kubernetes/pki/etcd/healthcheck-client.crt \
         --key /etc/kubernetes/pki/etcd/healthcheck-client.key https://127.0.0.1:2379/version"
    )
}

#[derive(Debug, Deserialize)]
struct EtcdVersions {
    etcdcluster: String,
}

/// The cluster version (`3.5.0`) from `/version`.
pub fn parse_etcd_cluster_version(stdout: &str) -> Result<String, String> {
    serde_json::from_str::<EtcdVersions>(stdout.trim())
        .map(|v| v.etcdcluster)
        .map_err(|e| {
            format!(
                "unexpected etcd /version answer ({e}): {}",
                first_line(stdout)
            )
        })
}

/// The member list (`member list -w json`).
pub fn etcd_members_script() -> String {
    etcdctl("member list -w json")
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct EtcdMember {
    #[serde(rename = "ID", default)]
    pub id: u64,
    /// Empty for a member added but not started yet.
    #[serde(default)]
    pub name: String,
    #[serde(rename = "peerURLs", default)]
    pub peer_urls: Vec<String>,
    #[serde(rename = "clientURLs", default)]
    pub client_urls: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct MemberList {
    #[serde(default)]
    members: Vec<EtcdMember>,
}

pub fn parse_etcd_members(stdout: &str) -> Result<Vec<EtcdMember>, String> {
    let list: MemberList = serde_json::from_str(stdout.trim())
        .map_err(|e| format!("unexpected etcdctl output ({e}): {}", first_line(stdout)))?;
    Ok(list.members)
}

/// kubectl with the host's admin kubeconfig; `server` overrides the endpoint (to ask one
/// API server directly).
pub fn kubectl(server: Option<&str>, args: &str) -> String {
    let server = server
        .map(|s| format!(" --server={}", ssh::quote(s)))
        .unwrap_or_default();
    format!("{PATH} kubectl --kubeconfig={ADMIN_CONF} --request-timeout=5s{server} {args}")
}

/// `/readyz` of the API (through the endpoint, or of one server).
pub fn readyz_script(server: Option<&str>) -> String {
    kubectl(server, "get --raw=/readyz")
}

pub fn readyz_ok(stdout: &str) -> bool {
    stdout.trim() == "ok"
}

/// The nodes as the API lists them.
pub fn nodes_script() -> String {
    kubectl(None, "get nodes -o json")
}

/// One node's readiness and kubelet version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    pub ready: bool,
    pub kubelet_version: String,
    pub labels: BTreeMap<String, String>,
}

pub fn parse_nodes(stdout: &str) -> Result<BTreeMap<String, NodeStatus>, String> {
    let v: serde_json::Value = serde_json::from_str(stdout.trim())
        .map_err(|e| format!("unexpected kubectl output ({e}): {}", first_line(stdout)))?;
    let items = v["items"]
        .as_array()
        .ok_or("kubectl get nodes: no items in the answer")?;
    Ok(items
        .iter()
        .filter_map(|n| {
            let name = n["metadata"]["name"].as_str()?.to_string();
            let ready = is_ready(n);
            let kubelet_version = n["status"]["nodeInfo"]["kubeletVersion"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let labels = n["metadata"]["labels"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default();
            Some((
                name,
                NodeStatus {
                    ready,
                    kubelet_version,
                    labels,
                },
            ))
        })
        .collect())
}

/// A Node's or a Pod's `Ready` condition is `True`.
pub fn is_ready(object: &serde_json::Value) -> bool {
    object["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// The first line of `text` that is not blank, for error messages.
pub fn first_line(text: &str) -> &str {
    text.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("(empty)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_health_is_read_per_endpoint() {
        let out = r#"[{"endpoint":"https://10.0.0.1:2379","health":true,"took":"1.5ms"},
            {"endpoint":"https://10.0.0.2:2379","health":false,"took":"5s","error":"context deadline exceeded"}]"#;
        let h = parse_etcd_health(out).unwrap();
        assert_eq!(h["https://10.0.0.1:2379"], Ok(()));
        assert_eq!(
            h["https://10.0.0.2:2379"],
            Err("context deadline exceeded".to_string())
        );
        assert!(parse_etcd_health("Error: context deadline exceeded").is_err());
    }

    #[test]
    fn etcd_status_gives_the_server_version() {
        let out = r#"[{"Endpoint":"https://127.0.0.1:2379","Status":{"header":{"cluster_id":1},"version":"3.5.30","dbSize":20480}}]"#;
        assert_eq!(parse_etcd_version(out), Ok("3.5.30".to_string()));
        assert_eq!(
            parse_etcd_version("[]"),
            Err("etcdctl listed no endpoint".to_string())
        );
        assert!(
            parse_etcd_version("Error: context deadline exceeded")
                .unwrap_err()
                .starts_with("unexpected etcdctl output")
        );
        assert!(etcd_status_script().contains("endpoint status -w json"));
    }

    #[test]
    fn etcd_cluster_version_from_version() {
        assert_eq!(
            parse_etcd_cluster_version(r#"{"etcdserver":"3.5.30","etcdcluster":"3.5.0"}"#),
            Ok("3.5.0".to_string())
        );
        assert!(parse_etcd_cluster_version("curl: (7) Failed to connect").is_err());
        assert!(etcd_version_script().contains("healthcheck-client.crt"));
        assert!(etcd_version_script().contains("https://127.0.0.1:2379/version"));
    }

    #[test]
    fn etcd_members_include_unstarted_ones() {
        let out = r#"{"header":{"cluster_id":1},"members":[
            {"ID":3319814642761637952,"name":"cp1","peerURLs":["https://10.0.0.1:2380"],"clientURLs":["https://10.0.0.1:2379"]},
            {"ID":42,"peerURLs":["https://10.0.0.2:2380"]}]}"#;
        let m = parse_etcd_members(out).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].name, "cp1");
        assert_eq!(m[1].name, "");
        assert!(m[1].client_urls.is_empty());
    }

    #[test]
    fn nodes_ready_and_versions() {
        let out = r#"{"items":[
          {"metadata":{"name":"cp1","labels":{"node-role.kubernetes.io/control-plane":"","disk":"ssd"}},"status":{"conditions":[{"type":"MemoryPressure","status":"False"},{"type":"Ready","status":"True"}],"nodeInfo":{"kubeletVersion":"v1.32.4"}}},
          {"metadata":{"name":"w1"},"status":{"conditions":[{"type":"Ready","status":"Unknown"}],"nodeInfo":{"kubeletVersion":"v1.32.4"}}}]}"#;
        let n = parse_nodes(out).unwrap();
        assert!(n["cp1"].ready);
        assert!(!n["w1"].ready);
        assert_eq!(n["cp1"].kubelet_version, "v1.32.4");
        assert_eq!(n["cp1"].labels["disk"], "ssd");
        assert_eq!(n["cp1"].labels["node-role.kubernetes.io/control-plane"], "");
        assert!(n["w1"].labels.is_empty());
    }

    #[test]
    fn scripts_use_the_installed_tools_and_certs() {
        assert!(etcd_health_script().contains("healthcheck-client.crt"));
        assert!(
            readyz_script(Some("https://10.0.0.1:6443")).contains("--server=https://10.0.0.1:6443")
        );
        assert!(readyz_ok("ok\n"));
        assert!(!readyz_ok("[-]etcd failed"));
    }
}
