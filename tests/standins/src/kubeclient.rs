//! The API client of the addons (kube-proxy, CoreDNS, flanneld), as client-go builds it: from
//! a kubeconfig whose user has a `token`/`tokenFile` or a client certificate, or in-cluster
//! (KUBERNETES_SERVICE_HOST/PORT and the service account's token and ca.crt).

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use serde_json::Value;
use serde_yaml::Value as Y;
use ureq::tls::PrivateKey;

/// Where the kubelet projects the service account.
pub const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

enum Auth {
    None,
    Token(String),
    /// Re-read on every request, as client-go does (the kubelet rotates it).
    TokenFile(String),
}

pub struct Client {
    agent: ureq::Agent,
    pub server: String,
    auth: Auth,
}

fn data_or_file(
    m: &Y,
    data_key: &str,
    file_key: &str,
    dir: &Path,
) -> Result<Option<Vec<u8>>, String> {
    if let Some(d) = m.get(data_key).and_then(Y::as_str) {
        return base64::engine::general_purpose::STANDARD
            .decode(d.trim())
            .map(Some)
            .map_err(|e| format!("{data_key}: illegal base64 data: {e}"));
    }
    if let Some(f) = m.get(file_key).and_then(Y::as_str) {
        let p = dir.join(f);
        return std::fs::read(&p)
            .map(Some)
            .map_err(|e| format!("open {}: {}", p.display(), go_err(&e)));
    }
    Ok(None)
}

/// An OS error as Go prints it (`permission denied`, `no such file or directory`).
pub fn go_err(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => {
            let d = nix::errno::Errno::from_raw(n).desc();
            let mut c = d.chars();
            c.next().map_or_else(String::new, |f| {
                f.to_lowercase().collect::<String>() + c.as_str()
            })
        }
        None => e.to_string(),
    }
}

fn named<'a>(doc: &'a Y, list: &str, name: &str) -> Option<&'a Y> {
    doc.get(list)?
        .as_sequence()?
        .iter()
        .find(|i| i.get("name").and_then(Y::as_str) == Some(name))
}

impl Client {
    fn build(
        server: &str,
        ca_pem: &[u8],
        cert: Option<(Vec<u8>, Vec<u8>)>,
        auth: Auth,
    ) -> Result<Client, String> {
        let ca = crate::tls::certs_from_pem(ca_pem, "certificate-authority")?;
        let agent = match cert {
            Some((c, k)) => {
                let chain = crate::tls::certs_from_pem(&c, "client-certificate")?;
                let key = PrivateKey::from_pem(&k).map_err(|e| format!("client-key: {e}"))?;
                crate::client::agent(&ca, Some((&chain, key)), Duration::from_secs(10))
            }
            None => crate::client::agent(&ca, None, Duration::from_secs(10)),
        };
        Ok(Client {
            agent,
            server: server.trim_end_matches('/').to_string(),
            auth,
        })
    }

    /// From a kubeconfig file (its current context).
    pub fn from_kubeconfig(path: &str) -> Result<Client, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("stat {path}: {}", go_err(&e)))?;
        let doc: Y = serde_yaml::from_str(&text)
            .map_err(|e| format!("error loading config file \"{path}\": {e}"))?;
        let dir = Path::new(path).parent().unwrap_or(Path::new("."));
        let ctx_name = doc
            .get("current-context")
            .and_then(Y::as_str)
            .unwrap_or_default();
        let ctx = named(&doc, "contexts", ctx_name)
            .and_then(|c| c.get("context"))
            .ok_or_else(|| {
                format!(
                    "invalid configuration: context was not found for specified context: {ctx_name}"
                )
            })?;
        let cluster_name = ctx.get("cluster").and_then(Y::as_str).unwrap_or_default();
        let cluster = named(&doc, "clusters", cluster_name)
            .and_then(|c| c.get("cluster"))
            .ok_or_else(|| {
                format!("invalid configuration: cluster has no server defined (cluster {cluster_name:?} not found)")
            })?;
        let server = cluster
            .get("server")
            .and_then(Y::as_str)
            .filter(|s| !s.is_empty())
            .ok_or("invalid configuration: no configuration has been provided")?;
        if !server.starts_with("https://") {
            return Err(format!(
                "the stand-ins speak HTTPS only; server {server:?} in {path}"
            ));
        }
        let ca = data_or_file(
            cluster,
            "certificate-authority-data",
            "certificate-authority",
            dir,
        )?
        .ok_or_else(|| format!("{path}: cluster {cluster_name:?} has no certificate-authority"))?;
        let user_name = ctx.get("user").and_then(Y::as_str).unwrap_or_default();
        let empty = Y::Mapping(serde_yaml::Mapping::new());
        let user = named(&doc, "users", user_name)
            .and_then(|u| u.get("user"))
            .unwrap_or(&empty);
        let cert = data_or_file(user, "client-certificate-data", "client-certificate", dir)?;
        let key = data_or_file(user, "client-key-data", "client-key", dir)?;
        let pair = match (cert, key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                return Err(
                    "invalid configuration: client-cert-data and client-key-data must be specified together"
                        .into(),
                );
            }
        };
        let auth = if let Some(t) = user.get("token").and_then(Y::as_str) {
            Auth::Token(t.to_string())
        } else if let Some(f) = user.get("tokenFile").and_then(Y::as_str) {
            let p = dir.join(f).to_string_lossy().into_owned();
            std::fs::read(&p).map_err(|e| format!("open {p}: {}", go_err(&e)))?;
            Auth::TokenFile(p)
        } else {
            Auth::None
        };
        Client::build(server, &ca, pair, auth)
    }

    /// client-go's InClusterConfig.
    pub fn in_cluster() -> Result<Client, String> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST").unwrap_or_default();
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_default();
        if host.is_empty() || port.is_empty() {
            return Err(
                "unable to load in-cluster configuration, KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be defined"
                    .into(),
            );
        }
        let token = format!("{SA_DIR}/token");
        std::fs::read(&token).map_err(|e| format!("open {token}: {}", go_err(&e)))?;
        let ca_path = format!("{SA_DIR}/ca.crt");
        let ca = std::fs::read(&ca_path).map_err(|e| format!("open {ca_path}: {}", go_err(&e)))?;
        let server = format!("https://{}", crate::server::join_host_port(&host, &port));
        Client::build(&server, &ca, None, Auth::TokenFile(token))
    }

    fn bearer(&self) -> Result<Option<String>, String> {
        Ok(match &self.auth {
            Auth::None => None,
            Auth::Token(t) => Some(t.clone()),
            Auth::TokenFile(p) => Some(
                std::fs::read_to_string(p)
                    .map_err(|e| format!("open {p}: {}", go_err(&e)))?
                    .trim()
                    .to_string(),
            ),
        })
    }

    /// GET `path`; the JSON body of a 2xx reply, else an error with the server's message.
    pub fn get(&self, path: &str) -> Result<Value, String> {
        let url = format!("{}{path}", self.server);
        let mut req = self.agent.get(&url).header("Accept", "application/json");
        if let Some(t) = self.bearer()? {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let mut res = req.call().map_err(|e| format!("Get \"{url}\": {e}"))?;
        let status = res.status().as_u16();
        let text = res.body_mut().read_to_string().unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if (200..300).contains(&status) {
            Ok(body)
        } else {
            let msg = body
                .get("message")
                .and_then(Value::as_str)
                .map_or_else(|| body.to_string(), ToString::to_string);
            Err(format!("{msg} (get {path}: HTTP {status})"))
        }
    }

    /// PATCH `path` with `body` as `content_type`; the JSON reply of a 2xx, else an error.
    pub fn patch(&self, path: &str, content_type: &str, body: &Value) -> Result<Value, String> {
        let url = format!("{}{path}", self.server);
        let mut req = self
            .agent
            .patch(&url)
            .header("Accept", "application/json")
            .header("Content-Type", content_type);
        if let Some(t) = self.bearer()? {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let data = serde_json::to_vec(body).map_err(|e| e.to_string())?;
        let mut res = req
            .send(&data[..])
            .map_err(|e| format!("Patch \"{url}\": {e}"))?;
        let status = res.status().as_u16();
        let text = res.body_mut().read_to_string().unwrap_or_default();
        let reply: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if (200..300).contains(&status) {
            Ok(reply)
        } else {
            let msg = reply
                .get("message")
                .and_then(Value::as_str)
                .map_or_else(|| reply.to_string(), ToString::to_string);
            Err(format!("{msg} (patch {path}: HTTP {status})"))
        }
    }

    /// The `items` of a list.
    pub fn list(&self, path: &str) -> Result<Vec<Value>, String> {
        let v = self.get(path)?;
        Ok(v.get("items")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default())
    }
}

/// Services and EndpointSlices of every namespace, as the proxies and CoreDNS watch them.
#[derive(Default, Clone, PartialEq)]
pub struct ServiceView {
    pub services: Vec<Value>,
    pub slices: Vec<Value>,
}

impl ServiceView {
    pub fn fetch(c: &Client) -> Result<ServiceView, String> {
        Ok(ServiceView {
            services: c.list("/api/v1/services")?,
            slices: c.list("/apis/discovery.k8s.io/v1/endpointslices")?,
        })
    }

    /// Ready endpoint addresses of service NS/NAME with, per endpoint, the port named `port`
    /// (`None`: any) and protocol.
    pub fn endpoints(
        &self,
        ns: &str,
        name: &str,
        port: Option<&str>,
        proto: &str,
    ) -> Vec<(String, Option<u16>)> {
        let mut out = Vec::new();
        for s in &self.slices {
            let m = &s["metadata"];
            if m["namespace"].as_str() != Some(ns)
                || m["labels"]["kubernetes.io/service-name"].as_str() != Some(name)
            {
                continue;
            }
            let p = s["ports"].as_array().and_then(|ps| {
                ps.iter().find(|p| {
                    port.is_none_or(|want| p["name"].as_str().unwrap_or("") == want)
                        && p["protocol"].as_str().unwrap_or("TCP") == proto
                })
            });
            let pnum = p
                .and_then(|p| p["port"].as_u64())
                .and_then(|n| u16::try_from(n).ok());
            if port.is_some() && pnum.is_none() {
                continue;
            }
            for e in s["endpoints"].as_array().into_iter().flatten() {
                if e["conditions"]["ready"].as_bool() == Some(false) {
                    continue;
                }
                for a in e["addresses"].as_array().into_iter().flatten() {
                    if let Some(a) = a.as_str() {
                        out.push((a.to_string(), pnum));
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A TLS server on loopback recording the Authorization header of each request; returns
    /// (url, CA PEM, the recorded headers).
    fn recording_server(rt: &tokio::runtime::Runtime) -> (String, String, Arc<Mutex<Vec<String>>>) {
        let key = crate::tls::self_signed(&["127.0.0.1".to_string()]).unwrap();
        let der = key.cert[0].as_ref().to_vec();
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            b64.as_bytes()
                .chunks(64)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect::<Vec<_>>()
                .join("\n")
        );
        let cfg = crate::tls::server_config(key, None).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let handler: crate::server::Handler = Arc::new(move |req| {
            s2.lock()
                .unwrap()
                .push(req.header("authorization").to_string());
            crate::server::Response::json(200, &serde_json::json!({"items": [{"n": 1}]}))
        });
        let l = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("https://{}", l.local_addr().unwrap());
        rt.spawn(crate::server::serve(l, Some(cfg), handler));
        (url, pem, seen)
    }

    #[test]
    fn token_file_kubeconfig_sends_the_current_token() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (url, ca, seen) = recording_server(&rt);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.crt"), ca).unwrap();
        std::fs::write(dir.path().join("token"), "tok-1\n").unwrap();
        let kc = dir.path().join("kubeconfig.conf");
        std::fs::write(
            &kc,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority: ca.crt\n    server: {url}\n  name: default\n\
                 contexts:\n- context:\n    cluster: default\n    namespace: default\n    user: default\n  name: default\n\
                 current-context: default\nusers:\n- name: default\n  user:\n    tokenFile: token\n"
            ),
        )
        .unwrap();
        let c = Client::from_kubeconfig(kc.to_str().unwrap()).unwrap();
        assert_eq!(c.list("/api/v1/services").unwrap().len(), 1);
        // Rotated by the kubelet: the next request carries the new token.
        std::fs::write(dir.path().join("token"), "tok-2\n").unwrap();
        c.get("/api/v1/services").unwrap();
        assert_eq!(*seen.lock().unwrap(), vec!["Bearer tok-1", "Bearer tok-2"]);
        // A kubeconfig whose token file is missing fails as client-go does.
        std::fs::remove_file(dir.path().join("token")).unwrap();
        let e = Client::from_kubeconfig(kc.to_str().unwrap()).err().unwrap();
        assert!(e.ends_with("token: no such file or directory"), "{e}");
    }
}
