//! Minting keys and certificates (rcgen on aws-lc-rs), as kubeadm's pkiutil does:
//! random serials, subject and authority key identifiers, explicit validity (backdated five
//! minutes for clock skew), CAs for ten years and leaves for one, never past their CA.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, RsaKeySize, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use super::spec::{CaKind, LeafSpec, San, Usage};
use super::{KeyPem, KeyedCert, PkiError, SaKeys};
use crate::inventory::KeyAlgorithm;

/// CA validity (kubeadm: ten years).
pub const CA_VALIDITY: Duration = Duration::days(3650);
/// Leaf validity (kubeadm: one year).
pub const LEAF_VALIDITY: Duration = Duration::days(365);
/// How far `notBefore` is set back, for hosts whose clocks lag the operator's.
pub const BACKDATE: Duration = Duration::minutes(5);

fn err(what: &str, e: impl std::fmt::Display) -> PkiError {
    PkiError::Crypto(format!("{what}: {e}"))
}

/// A fresh private key of the inventory's type.
pub fn new_key(alg: KeyAlgorithm) -> Result<KeyPair, PkiError> {
    let pair = match alg {
        KeyAlgorithm::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
        KeyAlgorithm::Rsa2048 => {
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_2048)
        }
        KeyAlgorithm::Rsa3072 => {
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_3072)
        }
        KeyAlgorithm::Rsa4096 => {
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_4096)
        }
    };
    pair.map_err(|e| err(&format!("cannot generate a {alg} key"), e))
}

/// A random positive 128-bit serial number.
fn serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // Positive (top bit clear) and full length (second bit set): DER needs no padding.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

/// Most organizations (O, the groups of a client) one subject may hold.
pub const MAX_ORGANIZATIONS: usize = 16;
/// The DER of the organizationName attribute type's OID (2.5.4.10).
const ORG_OID_DER: [u8; 5] = [0x06, 0x03, 0x55, 0x04, 0x0a];
/// rcgen keeps one value per attribute type, so every O after the first is written under a
/// stand-in type 2.5.4.(112+i), whose OID encodes to the same length as O's, and renamed to
/// O in the signed bytes afterwards ([`rename_organizations`]).
const ORG_STANDIN_BASE: u8 = 0x70;

fn name(cn: &str, org: &[String]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for (i, o) in org.iter().enumerate() {
        let ty = if i == 0 {
            DnType::OrganizationName
        } else {
            DnType::CustomDnType(vec![2, 5, 4, u64::from(ORG_STANDIN_BASE) + i as u64])
        };
        dn.push(ty, o.as_str());
    }
    dn.push(DnType::CommonName, cn);
    dn
}

/// A DER element at `pos`: (header length, content length).
fn der_element(der: &[u8], pos: usize) -> Result<(usize, usize), PkiError> {
    let bad = || PkiError::Crypto("cannot re-read a certificate just signed (bad DER)".into());
    let first = *der.get(pos + 1).ok_or_else(bad)?;
    let (header, len) = if first < 0x80 {
        (2, usize::from(first))
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return Err(bad());
        }
        let bytes = der.get(pos + 2..pos + 2 + n).ok_or_else(bad)?;
        (
            2 + n,
            bytes
                .iter()
                .fold(0usize, |acc, b| acc << 8 | usize::from(*b)),
        )
    };
    if pos + header + len > der.len() {
        return Err(bad());
    }
    Ok((header, len))
}

fn der_header(tag: u8, len: usize) -> Vec<u8> {
    let mut out = vec![tag];
    let bytes: Vec<u8> = len
        .to_be_bytes()
        .into_iter()
        .skip_while(|b| *b == 0)
        .collect();
    match u8::try_from(len) {
        Ok(short) if short < 0x80 => out.push(short),
        // At most 8 length bytes: the count always fits the low bits.
        _ => {
            out.push(0x80 | u8::try_from(bytes.len()).unwrap_or(8));
            out.extend(bytes);
        }
    }
    out
}

/// Renames the stand-in O types of [`name`] in the subject of `cert_der` to O and signs the
/// result again with `ca_key` (the same algorithm; only the subject's bytes change, never
/// their length).
fn rename_organizations(cert_der: &[u8], ca_key: &KeyPair) -> Result<Vec<u8>, PkiError> {
    use rcgen::SigningKey;
    let (outer_h, _) = der_element(cert_der, 0)?;
    let tbs_start = outer_h;
    let (tbs_h, tbs_len) = der_element(cert_der, tbs_start)?;
    let tbs_end = tbs_start + tbs_h + tbs_len;
    let (alg_h, alg_len) = der_element(cert_der, tbs_end)?;
    let alg = &cert_der[tbs_end..tbs_end + alg_h + alg_len];
    let mut tbs = cert_der[tbs_start..tbs_end].to_vec();
    // TBSCertificate: [0] version, serial, signature, issuer, validity, subject, ...
    let mut pos = tbs_h;
    for _ in 0..5 {
        let (h, l) = der_element(&tbs, pos)?;
        pos += h + l;
    }
    let (h, l) = der_element(&tbs, pos)?;
    let subject = &mut tbs[pos..pos + h + l];
    for i in 0..subject.len().saturating_sub(4) {
        let window = &subject[i..i + 5];
        if window[..4] == ORG_OID_DER[..4]
            && window[4] > ORG_STANDIN_BASE
            && usize::from(window[4] - ORG_STANDIN_BASE) < MAX_ORGANIZATIONS
        {
            subject[i + 4] = ORG_OID_DER[4];
        }
    }
    let signature = ca_key
        .sign(&tbs)
        .map_err(|e| err("cannot sign the certificate", e))?;
    let mut bits = der_header(0x03, signature.len() + 1);
    bits.push(0);
    bits.extend(signature);
    let mut body = tbs;
    body.extend_from_slice(alg);
    body.extend(bits);
    let mut out = der_header(0x30, body.len());
    out.extend(body);
    Ok(out)
}

fn to_pem(der: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out.into_bytes()
}

/// A self-signed CA of `kind`.
pub fn new_ca(kind: CaKind, alg: KeyAlgorithm, now: OffsetDateTime) -> Result<KeyedCert, PkiError> {
    let key = new_key(alg)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name(kind.common_name(), &[]);
    params.serial_number = Some(serial());
    params.not_before = now - BACKDATE;
    params.not_after = now - BACKDATE + CA_VALIDITY;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::KeyCertSign,
    ];
    let cert = params
        .self_signed(&key)
        .map_err(|e| err(&format!("cannot sign the {kind} certificate"), e))?;
    Ok(KeyedCert {
        cert_pem: cert.pem().into_bytes(),
        key_pem: KeyPem::new(key.serialize_pem()),
    })
}

/// A leaf certificate for `spec`, with a new key, signed by `ca`.
pub fn new_leaf(
    spec: &LeafSpec,
    ca: &KeyedCert,
    alg: KeyAlgorithm,
    now: OffsetDateTime,
) -> Result<KeyedCert, PkiError> {
    new_leaf_valid_for(spec, ca, alg, now, LEAF_VALIDITY)
}

/// [`new_leaf`] valid for `validity` from `now` (backdated the same way), never past its CA.
pub fn new_leaf_valid_for(
    spec: &LeafSpec,
    ca: &KeyedCert,
    alg: KeyAlgorithm,
    now: OffsetDateTime,
    validity: Duration,
) -> Result<KeyedCert, PkiError> {
    let ca_key = KeyPair::from_pem(ca.key_pem.expose())
        .map_err(|e| err(&format!("cannot read the {} key", spec.ca), e))?;
    let ca_pem = std::str::from_utf8(&ca.cert_pem)
        .map_err(|e| err(&format!("the {} certificate is not PEM", spec.ca), e))?;
    let issuer = Issuer::from_ca_cert_pem(ca_pem, &ca_key)
        .map_err(|e| err(&format!("cannot read the {} certificate", spec.ca), e))?;
    let ca_not_after = super::inspect::parse_pem(&ca.cert_pem)
        .map_err(|e| err(&format!("cannot read the {} certificate", spec.ca), e))?
        .not_after;

    if spec.organization.len() > MAX_ORGANIZATIONS {
        return Err(PkiError::Crypto(format!(
            "{} has {} organizations (groups); at most {MAX_ORGANIZATIONS} fit",
            spec.name,
            spec.organization.len()
        )));
    }
    let key = new_key(alg)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name(&spec.common_name, &spec.organization);
    params.serial_number = Some(serial());
    params.not_before = now - BACKDATE;
    params.not_after = (now - BACKDATE + validity).min(ca_not_after);
    params.is_ca = IsCa::ExplicitNoCa;
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = spec
        .usages
        .iter()
        .map(|u| match u {
            Usage::ServerAuth => ExtendedKeyUsagePurpose::ServerAuth,
            Usage::ClientAuth => ExtendedKeyUsagePurpose::ClientAuth,
        })
        .collect();
    params.subject_alt_names = spec
        .sans
        .iter()
        .map(|s| match s {
            San::Ip(ip) => Ok(SanType::IpAddress(*ip)),
            San::Dns(d) => d
                .clone()
                .try_into()
                .map(SanType::DnsName)
                .map_err(|e| err(&format!("`{d}` cannot be a DNS name in {}", spec.name), e)),
        })
        .collect::<Result<_, _>>()?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| err(&format!("cannot sign {}", spec.name), e))?;
    let cert_pem = if spec.organization.len() > 1 {
        to_pem(&rename_organizations(cert.der(), &ca_key)?)
    } else {
        cert.pem().into_bytes()
    };
    Ok(KeyedCert {
        cert_pem,
        key_pem: KeyPem::new(key.serialize_pem()),
    })
}

/// The service-account signing key pair (`sa.key`, `sa.pub`).
pub fn new_sa(alg: KeyAlgorithm) -> Result<SaKeys, PkiError> {
    let key = new_key(alg)?;
    Ok(SaKeys {
        public_pem: key.public_key_pem().into_bytes(),
        key_pem: KeyPem::new(key.serialize_pem()),
    })
}
