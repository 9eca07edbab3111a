//! HTTPS clients with client certificates: to the API server (from a kubeconfig) and to etcd.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use serde_json::Value;
use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig, TlsProvider};

/// A blocking HTTPS agent trusting `ca` and presenting `client`.
pub fn agent(
    ca: &[CertificateDer<'static>],
    client: Option<(&[CertificateDer<'static>], PrivateKey<'static>)>,
    timeout: Duration,
) -> ureq::Agent {
    let roots: Vec<Certificate<'static>> = ca
        .iter()
        .map(|c| Certificate::from_der(c).to_owned())
        .collect();
    let mut tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .root_certs(RootCerts::Specific(Arc::new(roots)));
    if let Some((chain, key)) = client {
        let chain: Vec<Certificate<'static>> = chain
            .iter()
            .map(|c| Certificate::from_der(c).to_owned())
            .collect();
        tls = tls.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
    }
    ureq::Agent::config_builder()
        .tls_config(tls.build())
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        // A peer that went away (no RST, packets dropped) must not hold a call for the
        // whole timeout: the next endpoint gets its turn quickly, as etcd's client does.
        .timeout_connect(Some(timeout.min(Duration::from_secs(1))))
        .build()
        .new_agent()
}

/// A client of the API server.
#[derive(Clone)]
pub struct Api {
    agent: ureq::Agent,
    pub server: String,
}

pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
    pub fn message(&self) -> String {
        self.body
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(
                || format!("HTTP {}", self.status),
                |m| format!("HTTP {}: {m}", self.status),
            )
    }
}

impl Api {
    pub fn from_kubeconfig(
        kc: &crate::kubeconfig::Kubeconfig,
        key_pem: &[u8],
    ) -> Result<Self, String> {
        let key = PrivateKey::from_pem(key_pem).map_err(|e| format!("client key: {e}"))?;
        Ok(Api {
            agent: agent(
                &kc.ca,
                Some((&kc.client.cert, key)),
                Duration::from_secs(10),
            ),
            server: kc.server.clone(),
        })
    }

    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &Value)>,
    ) -> Result<Reply, String> {
        let url = format!("{}{path}", self.server);
        let res = match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
            ("DELETE", _) => self.agent.delete(&url).call(),
            (m, Some((ct, b))) => {
                let data = serde_json::to_vec(b).map_err(|e| e.to_string())?;
                let req = match m {
                    "POST" => self.agent.post(&url),
                    "PUT" => self.agent.put(&url),
                    _ => self.agent.patch(&url),
                };
                req.header("Content-Type", ct).send(&data[..])
            }
            (m, None) => return Err(format!("{m} needs a body")),
        };
        let mut res = res.map_err(|e| format!("{method} {url}: {e}"))?;
        let status = res.status().as_u16();
        let text = res.body_mut().read_to_string().unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(Reply { status, body })
    }

    /// A client of a plain-HTTP server (the controllers' unit tests).
    #[cfg(test)]
    pub fn plain(server: &str) -> Self {
        Api {
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(5)))
                .build()
                .new_agent(),
            server: server.to_string(),
        }
    }

    pub fn get(&self, path: &str) -> Result<Reply, String> {
        self.call("GET", path, None)
    }
    pub fn post(&self, path: &str, body: &Value) -> Result<Reply, String> {
        self.call("POST", path, Some(("application/json", body)))
    }
    pub fn put(&self, path: &str, body: &Value) -> Result<Reply, String> {
        self.call("PUT", path, Some(("application/json", body)))
    }
    pub fn merge_patch(&self, path: &str, body: &Value) -> Result<Reply, String> {
        self.call("PATCH", path, Some(("application/merge-patch+json", body)))
    }
    pub fn delete(&self, path: &str) -> Result<Reply, String> {
        self.call("DELETE", path, None)
    }
}

/// Loads a kubeconfig and builds its client.
pub fn api_from_kubeconfig(
    path: &str,
    flag: &str,
) -> Result<(crate::kubeconfig::Kubeconfig, Api), String> {
    let kc = crate::kubeconfig::load(path, flag)?;
    let api = Api::from_kubeconfig(&kc, &kc.key_pem)?;
    Ok((kc, api))
}
