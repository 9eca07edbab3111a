//! Adopting a cluster's CAs when the local PKI is lost, over bytes fetched from a host.
//!
//! For each CA (and the service-account key): the host has it and the local PKI does not →
//! adopt it (its key is required); both have it and the certificates differ → stop with an
//! error naming the CA and both fingerprints. Every check runs before anything is changed,
//! so a refusal leaves the local state exactly as it was.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::inspect;
use super::spec::CaKind;
use super::{KeyPem, KeyedCert, PkiError, PkiState, SaKeys};

/// Files read from a host's `/etc/kubernetes/pki`, by path relative to it (`ca.crt`,
/// `etcd/ca.key`, `sa.pub`, …).
pub type RemoteFiles = BTreeMap<String, Vec<u8>>;

/// The files [`adopt`] looks at.
pub const ADOPTABLE: [&str; 8] = [
    "ca.crt",
    "ca.key",
    "front-proxy-ca.crt",
    "front-proxy-ca.key",
    "etcd/ca.crt",
    "etcd/ca.key",
    "sa.key",
    "sa.pub",
];

/// One item taken over from the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Adopted {
    pub what: String,
    pub host: String,
    pub fingerprint: String,
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn cert_fingerprint(pem: &[u8]) -> String {
    inspect::pem_to_der(pem).map_or_else(
        |_| format!("unreadable (sha256 of the file {})", sha256_hex(pem)),
        |der| inspect::fingerprint(&der),
    )
}

/// The fingerprint of a public key PEM: sha256 of its base64 body.
fn public_key_fingerprint(pem: &[u8]) -> String {
    let body: String = String::from_utf8_lossy(pem)
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<String>()
        .split_whitespace()
        .collect();
    sha256_hex(body.as_bytes())
}

/// Compares what `host` holds with the local PKI; adopts what is missing locally.
/// `dir` names the local pki folder in messages.
#[allow(clippy::single_match_else)]
pub fn adopt(
    state: &mut PkiState,
    host: &str,
    remote: &RemoteFiles,
    dir: &Path,
) -> Result<Vec<Adopted>, PkiError> {
    let mut take_cas: Vec<(CaKind, KeyedCert)> = Vec::new();
    for kind in CaKind::ALL {
        let id = kind.id();
        let Some(remote_cert) = remote.get(&format!("{id}.crt")) else {
            continue;
        };
        let remote_fp = cert_fingerprint(remote_cert);
        match state.cas.get(&kind) {
            Some(local) => {
                let local_fp = cert_fingerprint(&local.cert_pem);
                if local_fp != remote_fp {
                    return Err(PkiError::CaMismatch {
                        ca: kind.label().to_string(),
                        host: host.to_string(),
                        local: local_fp,
                        remote: remote_fp,
                        dir: dir.to_path_buf(),
                    });
                }
            }
            None => {
                let key_path = format!("/etc/kubernetes/pki/{id}.key");
                let key = remote
                    .get(&format!("{id}.key"))
                    .and_then(|k| String::from_utf8(k.clone()).ok())
                    .ok_or_else(|| PkiError::AdoptIncomplete {
                        host: host.to_string(),
                        what: format!("the {kind} certificate"),
                        path: key_path.clone(),
                    })?;
                let info = inspect::parse_pem(remote_cert).map_err(|e| PkiError::Unreadable {
                    path: format!("{host}:/etc/kubernetes/pki/{id}.crt").into(),
                    message: e.to_string(),
                })?;
                if !info.is_ca || !inspect::key_matches(&info, &key) {
                    return Err(PkiError::Unreadable {
                        path: format!("{host}:{key_path}").into(),
                        message: format!(
                            "it is not the key of the {kind} certificate (or that is not a CA)"
                        ),
                    });
                }
                take_cas.push((
                    kind,
                    KeyedCert {
                        cert_pem: remote_cert.clone(),
                        key_pem: KeyPem::new(key),
                    },
                ));
            }
        }
    }
    let mut take_sa: Option<SaKeys> = None;
    if let Some(remote_pub) = remote.get("sa.pub") {
        let remote_fp = public_key_fingerprint(remote_pub);
        match &state.sa {
            Some(local) => {
                let local_fp = public_key_fingerprint(&local.public_pem);
                if local_fp != remote_fp {
                    return Err(PkiError::CaMismatch {
                        ca: "service-account key (sa.pub)".into(),
                        host: host.to_string(),
                        local: local_fp,
                        remote: remote_fp,
                        dir: dir.to_path_buf(),
                    });
                }
            }
            None => {
                let key = remote
                    .get("sa.key")
                    .and_then(|k| String::from_utf8(k.clone()).ok())
                    .ok_or_else(|| PkiError::AdoptIncomplete {
                        host: host.to_string(),
                        what: "sa.pub".into(),
                        path: "/etc/kubernetes/pki/sa.key".into(),
                    })?;
                take_sa = Some(SaKeys {
                    key_pem: KeyPem::new(key),
                    public_pem: remote_pub.clone(),
                });
            }
        }
    }
    let mut adopted = Vec::new();
    for (kind, pair) in take_cas {
        adopted.push(Adopted {
            what: kind.label().to_string(),
            host: host.to_string(),
            fingerprint: cert_fingerprint(&pair.cert_pem),
        });
        state.cas.insert(kind, pair);
    }
    if let Some(sa) = take_sa {
        adopted.push(Adopted {
            what: "sa".into(),
            host: host.to_string(),
            fingerprint: public_key_fingerprint(&sa.public_pem),
        });
        state.sa = Some(sa);
    }
    Ok(adopted)
}
