//! Reading certificates back (x509-parser): subject, SANs, usages, validity, key type,
//! key identifiers, fingerprint; signature and key-pair checks.

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde::Serialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;

use super::spec::{San, Usage};
use crate::inventory::KeyAlgorithm;

/// What capstan needs to know about one certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertInfo {
    pub common_name: String,
    pub organization: Vec<String>,
    pub issuer_common_name: String,
    pub sans: BTreeSet<San>,
    pub usages: Vec<Usage>,
    pub digital_signature: bool,
    pub key_encipherment: bool,
    pub key_cert_sign: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    pub is_ca: bool,
    /// `None` for a key type capstan does not generate.
    pub key_algorithm: Option<KeyAlgorithm>,
    #[serde(skip)]
    pub subject_key_id: Option<Vec<u8>>,
    #[serde(skip)]
    pub authority_key_id: Option<Vec<u8>>,
    /// SHA-256 of the DER, upper-case hex pairs joined by ':' (as `openssl x509 -fingerprint`).
    pub fingerprint: String,
    #[serde(skip)]
    pub serial: Vec<u8>,
    /// The SubjectPublicKeyInfo, DER.
    #[serde(skip)]
    pub public_key_der: Vec<u8>,
}

/// A certificate that cannot be read.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

/// The DER of the first `CERTIFICATE` block of a PEM text.
pub fn pem_to_der(pem_text: &[u8]) -> Result<Vec<u8>, ParseError> {
    let text =
        std::str::from_utf8(pem_text).map_err(|_| ParseError("not PEM text (not UTF-8)".into()))?;
    let begin = "-----BEGIN CERTIFICATE-----";
    let end = "-----END CERTIFICATE-----";
    let start = text
        .find(begin)
        .ok_or_else(|| ParseError("no CERTIFICATE block".into()))?;
    let rest = &text[start + begin.len()..];
    let stop = rest
        .find(end)
        .ok_or_else(|| ParseError("unterminated CERTIFICATE block".into()))?;
    let b64: String = rest[..stop].split_whitespace().collect();
    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64)
        .map_err(|e| ParseError(format!("CERTIFICATE block is not base64: {e}")))
}

/// Hex fingerprint of DER bytes.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn parse_der(der: &[u8]) -> Result<X509Certificate<'_>, ParseError> {
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| ParseError(format!("not an X.509 certificate: {e}")))?;
    Ok(cert)
}

/// Reads the first certificate of a PEM text.
pub fn parse_pem(pem_text: &[u8]) -> Result<CertInfo, ParseError> {
    let der = pem_to_der(pem_text)?;
    parse(&der)
}

/// Reads a DER certificate.
pub fn parse(der: &[u8]) -> Result<CertInfo, ParseError> {
    let cert = parse_der(der)?;
    let attr = |it: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue<'_>>| {
        it.filter_map(|a| a.as_str().ok().map(str::to_string))
            .collect::<Vec<_>>()
    };
    let common_name = attr(&mut cert.subject().iter_common_name())
        .into_iter()
        .next()
        .unwrap_or_default();
    let organization = attr(&mut cert.subject().iter_organization());
    let issuer_common_name = attr(&mut cert.issuer().iter_common_name())
        .into_iter()
        .next()
        .unwrap_or_default();
    let mut info = CertInfo {
        common_name,
        organization,
        issuer_common_name,
        sans: BTreeSet::new(),
        usages: Vec::new(),
        digital_signature: false,
        key_encipherment: false,
        key_cert_sign: false,
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
        is_ca: cert.is_ca(),
        key_algorithm: key_algorithm(&cert),
        subject_key_id: None,
        authority_key_id: None,
        fingerprint: fingerprint(der),
        serial: cert.raw_serial().to_vec(),
        public_key_der: cert.public_key().raw.to_vec(),
    };
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    match name {
                        GeneralName::DNSName(d) => {
                            info.sans.insert(San::Dns(d.to_ascii_lowercase()));
                        }
                        GeneralName::IPAddress(bytes) => {
                            let ip = match bytes.len() {
                                4 => <[u8; 4]>::try_from(*bytes).ok().map(IpAddr::from),
                                16 => <[u8; 16]>::try_from(*bytes).ok().map(IpAddr::from),
                                _ => None,
                            };
                            if let Some(ip) = ip {
                                info.sans.insert(San::Ip(ip));
                            }
                        }
                        _ => {}
                    }
                }
            }
            ParsedExtension::ExtendedKeyUsage(eku) => {
                if eku.server_auth {
                    info.usages.push(Usage::ServerAuth);
                }
                if eku.client_auth {
                    info.usages.push(Usage::ClientAuth);
                }
            }
            ParsedExtension::KeyUsage(ku) => {
                info.digital_signature = ku.digital_signature();
                info.key_encipherment = ku.key_encipherment();
                info.key_cert_sign = ku.key_cert_sign();
            }
            ParsedExtension::SubjectKeyIdentifier(id) => {
                info.subject_key_id = Some(id.0.to_vec());
            }
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                info.authority_key_id = aki.key_identifier.as_ref().map(|k| k.0.to_vec());
            }
            _ => {}
        }
    }
    Ok(info)
}

fn key_algorithm(cert: &X509Certificate<'_>) -> Option<KeyAlgorithm> {
    match cert.public_key().parsed().ok()? {
        PublicKey::RSA(rsa) => match rsa.key_size() {
            2048 => Some(KeyAlgorithm::Rsa2048),
            3072 => Some(KeyAlgorithm::Rsa3072),
            4096 => Some(KeyAlgorithm::Rsa4096),
            _ => None,
        },
        PublicKey::EC(ec) if ec.key_size() == 256 => Some(KeyAlgorithm::EcdsaP256),
        _ => None,
    }
}

/// Whether `cert_pem` carries a valid signature by `ca_pem`'s key.
pub fn signed_by(cert_pem: &[u8], ca_pem: &[u8]) -> bool {
    let (Ok(cert_der), Ok(ca_der)) = (pem_to_der(cert_pem), pem_to_der(ca_pem)) else {
        return false;
    };
    let (Ok(cert), Ok(ca)) = (parse_der(&cert_der), parse_der(&ca_der)) else {
        return false;
    };
    cert.issuer() == ca.subject() && cert.verify_signature(Some(ca.public_key())).is_ok()
}

/// The SubjectPublicKeyInfo (DER) of a PEM private key, or why it cannot be read.
pub fn key_public_der(key_pem: &str) -> Result<Vec<u8>, ParseError> {
    use rcgen::PublicKeyData;
    let pair = rcgen::KeyPair::from_pem(key_pem)
        .map_err(|e| ParseError(format!("not a private key capstan can use: {e}")))?;
    Ok(pair.subject_public_key_info())
}

/// Whether the private key belongs to the certificate.
pub fn key_matches(cert: &CertInfo, key_pem: &str) -> bool {
    key_public_der(key_pem).is_ok_and(|der| der == cert.public_key_der)
}
