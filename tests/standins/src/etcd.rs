//! A real etcd v3 client over TLS, through etcd's JSON gRPC gateway (`/v3/kv/*`): base64 keys
//! and values, int64s as strings.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rustls::pki_types::CertificateDer;
use serde_json::{Value, json};
use ureq::tls::PrivateKey;

#[derive(Clone)]
pub struct Etcd {
    agent: ureq::Agent,
    endpoints: Vec<String>,
    /// The endpoint that answered last: calls start there (etcd's client balances
    /// away from a member that is down instead of trying it first every time).
    preferred: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

#[derive(Debug)]
pub struct Kv {
    pub key: String,
    pub value: Vec<u8>,
    pub mod_revision: i64,
}

#[derive(Debug)]
pub enum EtcdError {
    /// No endpoint answered.
    Unavailable(String),
    /// An endpoint answered with an error.
    Failed(String),
}

impl std::fmt::Display for EtcdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EtcdError::Unavailable(m) => write!(f, "etcd unavailable: {m}"),
            EtcdError::Failed(m) => write!(f, "etcd error: {m}"),
        }
    }
}

fn int(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

fn b64(s: &[u8]) -> String {
    B64.encode(s)
}

/// The end of the range of keys with `prefix`.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl Etcd {
    pub fn new(
        endpoints: Vec<String>,
        ca: &[CertificateDer<'static>],
        chain: &[CertificateDer<'static>],
        key: PrivateKey<'static>,
    ) -> Self {
        Etcd {
            agent: crate::client::agent(ca, Some((chain, key)), Duration::from_secs(5)),
            endpoints: endpoints
                .into_iter()
                .map(|e| e.trim_end_matches('/').to_string())
                .collect(),
            preferred: std::sync::Arc::default(),
        }
    }

    fn call(&self, path: &str, body: &Value) -> Result<Value, EtcdError> {
        let data = serde_json::to_vec(body).map_err(|e| EtcdError::Failed(e.to_string()))?;
        let mut errors = Vec::new();
        let n = self.endpoints.len();
        let first = self.preferred.load(std::sync::atomic::Ordering::Relaxed) % n.max(1);
        for k in 0..n {
            let at = (first + k) % n;
            let ep = &self.endpoints[at];
            let url = format!("{ep}{path}");
            match self
                .agent
                .post(&url)
                .header("Content-Type", "application/json")
                .send(&data[..])
            {
                Ok(mut res) => {
                    let status = res.status().as_u16();
                    let text = res.body_mut().read_to_string().unwrap_or_default();
                    if status != 200 {
                        if status >= 500 {
                            errors.push(format!("{url}: HTTP {status}: {text}"));
                            continue;
                        }
                        return Err(EtcdError::Failed(format!("{url}: HTTP {status}: {text}")));
                    }
                    self.preferred
                        .store(at, std::sync::atomic::Ordering::Relaxed);
                    return serde_json::from_str(&text)
                        .map_err(|e| EtcdError::Failed(format!("{url}: bad JSON: {e}")));
                }
                Err(e) => errors.push(format!("{url}: {e}")),
            }
        }
        Err(EtcdError::Unavailable(errors.join("; ")))
    }

    fn kvs(v: &Value) -> Vec<Kv> {
        v.get("kvs")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|kv| Kv {
                        key: String::from_utf8_lossy(
                            &B64.decode(kv.get("key").and_then(Value::as_str).unwrap_or(""))
                                .unwrap_or_default(),
                        )
                        .into_owned(),
                        value: B64
                            .decode(kv.get("value").and_then(Value::as_str).unwrap_or(""))
                            .unwrap_or_default(),
                        mod_revision: kv.get("mod_revision").map_or(0, int),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The cluster's current revision (also a health probe).
    pub fn revision(&self) -> Result<i64, EtcdError> {
        let r = self.call(
            "/v3/kv/range",
            &json!({"key": b64(b"/registry/health"), "count_only": true}),
        )?;
        Ok(r.get("header")
            .and_then(|h| h.get("revision"))
            .map_or(0, int))
    }

    pub fn get(&self, key: &str) -> Result<Option<Kv>, EtcdError> {
        let r = self.call("/v3/kv/range", &json!({"key": b64(key.as_bytes())}))?;
        Ok(Self::kvs(&r).into_iter().next())
    }

    /// All keys under `prefix`, and the revision of the read.
    pub fn list(&self, prefix: &str) -> Result<(Vec<Kv>, i64), EtcdError> {
        let r = self.call(
            "/v3/kv/range",
            &json!({"key": b64(prefix.as_bytes()), "range_end": b64(&prefix_end(prefix))}),
        )?;
        let rev = r
            .get("header")
            .and_then(|h| h.get("revision"))
            .map_or(0, int);
        Ok((Self::kvs(&r), rev))
    }

    /// Puts `value` at `key` if its mod_revision is `expect` (0: the key must not exist).
    /// Returns the new revision, or None when the comparison failed.
    pub fn put_if(&self, key: &str, value: &[u8], expect: i64) -> Result<Option<i64>, EtcdError> {
        let compare = if expect == 0 {
            json!({"key": b64(key.as_bytes()), "target": "CREATE", "result": "EQUAL", "create_revision": "0"})
        } else {
            json!({"key": b64(key.as_bytes()), "target": "MOD", "result": "EQUAL", "mod_revision": expect.to_string()})
        };
        let r = self.call(
            "/v3/kv/txn",
            &json!({
                "compare": [compare],
                "success": [{"request_put": {"key": b64(key.as_bytes()), "value": b64(value)}}],
            }),
        )?;
        if r.get("succeeded").and_then(Value::as_bool) == Some(true) {
            Ok(Some(
                r.get("header")
                    .and_then(|h| h.get("revision"))
                    .map_or(0, int),
            ))
        } else {
            Ok(None)
        }
    }

    /// Deletes `key` if its mod_revision is `expect`; true when deleted.
    pub fn delete_if(&self, key: &str, expect: i64) -> Result<bool, EtcdError> {
        let r = self.call(
            "/v3/kv/txn",
            &json!({
                "compare": [{"key": b64(key.as_bytes()), "target": "MOD", "result": "EQUAL", "mod_revision": expect.to_string()}],
                "success": [{"request_delete_range": {"key": b64(key.as_bytes())}}],
            }),
        )?;
        Ok(r.get("succeeded").and_then(Value::as_bool) == Some(true))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn prefix_end() {
        assert_eq!(
            super::prefix_end("/registry/pods/"),
            b"/registry/pods0".to_vec()
        );
    }
}
