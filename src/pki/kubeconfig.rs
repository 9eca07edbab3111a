//! Kubeconfig files as kubeadm writes them: one cluster (the CA and the server), one user
//! (an embedded client certificate and key), one context `USER@CLUSTER`. The text is a
//! pure function of its inputs, so an unchanged PKI renders byte-identical files.

use base64::Engine;

use super::KeyedCert;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Renders a kubeconfig for `user` of `cluster` at `server`.
pub fn render(
    cluster: &str,
    server: &str,
    user: &str,
    ca_pem: &[u8],
    client: &KeyedCert,
) -> Vec<u8> {
    let context = format!("{user}@{cluster}");
    format!(
        "apiVersion: v1\n\
         clusters:\n\
         - cluster:\n    certificate-authority-data: {ca}\n    server: {server}\n  name: {cluster}\n\
         contexts:\n\
         - context:\n    cluster: {cluster}\n    user: {user}\n  name: {context}\n\
         current-context: {context}\n\
         kind: Config\n\
         preferences: {{}}\n\
         users:\n\
         - name: {user}\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\n",
        ca = b64(ca_pem),
        cert = b64(&client.cert_pem),
        key = b64(client.key_pem.expose().as_bytes()),
        server = yaml_scalar(server),
        cluster = yaml_scalar(cluster),
        user = yaml_scalar(user),
        context = yaml_scalar(&context),
    )
    .into_bytes()
}

/// Quotes a scalar when plain YAML would misread it (user names hold ':').
fn yaml_scalar(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'/'))
        && !s.starts_with(['-', '.']);
    if plain || s.starts_with("https://") && !s.contains(' ') {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// The client certificate (PEM) embedded in a kubeconfig, if any.
pub fn client_certificate(kubeconfig: &[u8]) -> Option<Vec<u8>> {
    embedded(kubeconfig, "client-certificate-data")
}

/// The CA (PEM) embedded in a kubeconfig, if any.
pub fn certificate_authority(kubeconfig: &[u8]) -> Option<Vec<u8>> {
    embedded(kubeconfig, "certificate-authority-data")
}

fn embedded(kubeconfig: &[u8], key: &str) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(kubeconfig).ok()?;
    let value: serde_yaml::Value = serde_yaml::from_str(text).ok()?;
    let (list, inner) = if key == "certificate-authority-data" {
        ("clusters", "cluster")
    } else {
        ("users", "user")
    };
    let data = value.get(list)?.get(0)?.get(inner)?.get(key)?.as_str()?;
    base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .ok()
}
