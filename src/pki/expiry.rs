//! `check-expiration` over what the hosts hold: the one command each host runs
//! ([`DUMP_SCRIPT`]: the certificates under /etc/kubernetes and the kubelet's serving cert,
//! and only the client certificate line of each kubeconfig, never a key), and the parsing of
//! its output into kubeadm's table.

use std::collections::BTreeSet;

use base64::Engine;
use serde::Serialize;
use time::OffsetDateTime;

use super::inspect::{self, CertInfo};

/// Prints `==> PATH` then the certificate PEM (`.crt`) or the base64 client certificate
/// (`.conf`), for every such file. Private keys are never read.
pub const DUMP_SCRIPT: &str = r#"set -u
for f in $(find /etc/kubernetes /var/lib/kubelet/pki -type f \( -name '*.crt' -o -name '*.conf' \) 2>/dev/null | LC_ALL=C sort); do
  printf '==> %s\n' "$f"
  case "$f" in
    *.conf) sed -n 's/^ *client-certificate-data: *//p' "$f" ;;
    *) sed -n '/-----BEGIN CERTIFICATE-----/,/-----END CERTIFICATE-----/p' "$f" ;;
  esac
done
"#;

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExpiryRow {
    pub certificate: String,
    pub host: String,
    pub path: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
    pub residual_time: String,
    pub certificate_authority: String,
    pub externally_managed: bool,
    pub is_ca: bool,
}

/// A file the dump showed that is not a readable certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unreadable {
    pub host: String,
    pub path: String,
    pub message: String,
}

/// kubeadm's name for a file: `admin.conf`, `apiserver`, `etcd-server`, `ca`, `etcd-ca`, …
pub fn display_name(path: &str) -> String {
    if let Some(rest) = path.strip_prefix("/etc/kubernetes/pki/etcd/") {
        return format!("etcd-{}", rest.trim_end_matches(".crt"));
    }
    if let Some(rest) = path.strip_prefix("/etc/kubernetes/pki/") {
        return rest.trim_end_matches(".crt").to_string();
    }
    if path == "/var/lib/kubelet/pki/kubelet.crt" {
        return "kubelet".into();
    }
    if let Some(rest) = path.strip_prefix("/etc/kubernetes/")
        && !rest.contains('/')
    {
        return rest.to_string();
    }
    path.to_string()
}

/// Parses one host's dump into rows; `managed` lists the paths capstan installs there.
pub fn parse_dump(
    host: &str,
    stdout: &str,
    managed: &BTreeSet<String>,
    now: OffsetDateTime,
) -> (Vec<ExpiryRow>, Vec<Unreadable>) {
    let mut files: Vec<(String, String)> = Vec::new();
    for line in stdout.lines() {
        if let Some(path) = line.strip_prefix("==> ") {
            files.push((path.to_string(), String::new()));
        } else if let Some((_, body)) = files.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    let mut parsed: Vec<(String, CertInfo)> = Vec::new();
    let mut bad = Vec::new();
    for (path, body) in files {
        let pem = if path.to_ascii_lowercase().ends_with(".conf") {
            let b64: String = body.split_whitespace().collect();
            if b64.is_empty() {
                // A kubeconfig with a client-certificate file instead of data: not ours.
                continue;
            }
            match base64::engine::general_purpose::STANDARD.decode(b64) {
                Ok(p) => p,
                Err(e) => {
                    bad.push(Unreadable {
                        host: host.into(),
                        path,
                        message: format!("client-certificate-data is not base64: {e}"),
                    });
                    continue;
                }
            }
        } else {
            body.into_bytes()
        };
        match inspect::parse_pem(&pem) {
            Ok(info) => parsed.push((path, info)),
            Err(e) => bad.push(Unreadable {
                host: host.into(),
                path,
                message: e.to_string(),
            }),
        }
    }
    let cas: Vec<(String, Vec<u8>)> = parsed
        .iter()
        .filter(|(_, i)| i.is_ca)
        .filter_map(|(p, i)| i.subject_key_id.clone().map(|k| (display_name(p), k)))
        .collect();
    let rows = parsed
        .into_iter()
        .map(|(path, info)| {
            let authority = if info.is_ca {
                String::new()
            } else {
                info.authority_key_id
                    .as_ref()
                    .and_then(|aki| {
                        cas.iter()
                            .find(|(_, ski)| ski == aki)
                            .map(|(n, _)| n.clone())
                    })
                    .unwrap_or_else(|| match info.issuer_common_name.as_str() {
                        "kubernetes" => "ca".into(),
                        other => other.to_string(),
                    })
            };
            ExpiryRow {
                certificate: display_name(&path),
                host: host.into(),
                externally_managed: !managed.contains(&path),
                expires: info.not_after,
                residual_time: residual(info.not_after - now),
                certificate_authority: authority,
                is_ca: info.is_ca,
                path,
            }
        })
        .collect();
    (rows, bad)
}

/// kubeadm's short human duration: `45s`, `12m`, `36h`, `364d`, `9y`, `<invalid>`.
pub fn residual(d: time::Duration) -> String {
    let secs = d.whole_seconds();
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    if secs < 60 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 60 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    format!("{}y", hours / 24 / 365)
}

/// `Jan 02, 2006 15:04 UTC`, as kubeadm prints expiry dates.
pub fn format_date(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let month = t.month().to_string();
    format!(
        "{} {:02}, {} {:02}:{:02} UTC",
        &month[..3.min(month.len())],
        t.day(),
        t.year(),
        t.hour(),
        t.minute()
    )
}
