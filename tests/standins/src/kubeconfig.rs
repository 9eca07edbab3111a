//! Kubeconfig files: the cluster (server, CA) and the user (client certificate) of the
//! current context, with clear errors for what a component cannot work without.

use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use rustls::pki_types::CertificateDer;
use rustls::sign::CertifiedKey;
use serde_yaml::Value;

use crate::tls;

pub struct Kubeconfig {
    pub path: String,
    pub server: String,
    pub ca: Vec<CertificateDer<'static>>,
    pub client: Arc<CertifiedKey>,
    pub user: tls::User,
    pub key_pem: Vec<u8>,
}

fn find<'a>(doc: &'a Value, list: &str, name: &str, path: &str) -> Result<&'a Value, String> {
    let items = doc
        .get(list)
        .and_then(Value::as_sequence)
        .ok_or_else(|| format!("kubeconfig {path}: no {list:?} list"))?;
    items
        .iter()
        .find(|i| i.get("name").and_then(Value::as_str) == Some(name))
        .ok_or_else(|| format!("kubeconfig {path}: no entry named {name:?} in {list}"))
}

fn data_or_file(
    m: &Value,
    data_key: &str,
    file_key: &str,
    dir: &Path,
    what: &str,
) -> Result<Option<Vec<u8>>, String> {
    if let Some(d) = m.get(data_key).and_then(Value::as_str) {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(d.trim())
            .map_err(|e| format!("{what}: {data_key} is not valid base64: {e}"))?;
        return Ok(Some(raw));
    }
    if let Some(f) = m.get(file_key).and_then(Value::as_str) {
        let p = dir.join(f);
        let raw = std::fs::read(&p)
            .map_err(|e| format!("{what}: {file_key}: open {}: {e}", p.display()))?;
        return Ok(Some(raw));
    }
    Ok(None)
}

/// Loads `path` (flag name `flag` for messages).
pub fn load(path: &str, flag: &str) -> Result<Kubeconfig, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("{flag}={path}: open {path}: {e}"))?;
    let doc: Value = serde_yaml::from_str(&text)
        .map_err(|e| format!("{flag}={path}: invalid kubeconfig: {e}"))?;
    let dir = Path::new(path).parent().unwrap_or(Path::new("."));
    let ctx_name = doc
        .get("current-context")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("kubeconfig {path}: no current-context"))?;
    let ctx = find(&doc, "contexts", ctx_name, path)?
        .get("context")
        .ok_or_else(|| format!("kubeconfig {path}: context {ctx_name:?} is empty"))?;
    let cluster_name = ctx
        .get("cluster")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("kubeconfig {path}: context {ctx_name:?} names no cluster"))?;
    let user_name = ctx
        .get("user")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("kubeconfig {path}: context {ctx_name:?} names no user"))?;
    let cluster = find(&doc, "clusters", cluster_name, path)?
        .get("cluster")
        .ok_or_else(|| format!("kubeconfig {path}: cluster {cluster_name:?} is empty"))?;
    let server = cluster
        .get("server")
        .and_then(Value::as_str)
        .filter(|s| s.starts_with("https://"))
        .ok_or_else(|| {
            format!("kubeconfig {path}: cluster {cluster_name:?} has no https:// server")
        })?
        .trim_end_matches('/')
        .to_string();
    let what = format!("kubeconfig {path}: cluster {cluster_name:?}");
    let ca_pem = data_or_file(
        cluster,
        "certificate-authority-data",
        "certificate-authority",
        dir,
        &what,
    )?
    .ok_or_else(|| format!("{what}: no certificate-authority(-data)"))?;
    let ca = tls::certs_from_pem(&ca_pem, &format!("{what}: certificate-authority"))?;
    let user = find(&doc, "users", user_name, path)?
        .get("user")
        .ok_or_else(|| format!("kubeconfig {path}: user {user_name:?} is empty"))?;
    let what = format!("kubeconfig {path}: user {user_name:?}");
    let cert_pem = data_or_file(
        user,
        "client-certificate-data",
        "client-certificate",
        dir,
        &what,
    )?
    .ok_or_else(|| {
        format!("{what}: no client-certificate(-data): a client certificate is required")
    })?;
    let key_pem = data_or_file(user, "client-key-data", "client-key", dir, &what)?
        .ok_or_else(|| format!("{what}: no client-key(-data)"))?;
    let certs = tls::certs_from_pem(&cert_pem, &format!("{what}: client certificate"))?;
    let key = tls::key_from_pem(&key_pem.clone(), &format!("{what}: client key"))?;
    tls::check_signed_by(
        &certs,
        &format!("{what}: client certificate"),
        &ca,
        &format!("kubeconfig {path}: certificate-authority"),
    )?;
    let ident = tls::identity(&certs[0])?;
    let client = tls::certified_key(certs, key, &what)?;
    Ok(Kubeconfig {
        path: path.to_string(),
        server,
        ca,
        client,
        user: ident,
        key_pem,
    })
}
