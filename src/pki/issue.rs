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

fn name(cn: &str, org: &[String]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for o in org {
        dn.push(DnType::OrganizationName, o.as_str());
    }
    dn.push(DnType::CommonName, cn);
    dn
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
    let ca_key = KeyPair::from_pem(ca.key_pem.expose())
        .map_err(|e| err(&format!("cannot read the {} key", spec.ca), e))?;
    let ca_pem = std::str::from_utf8(&ca.cert_pem)
        .map_err(|e| err(&format!("the {} certificate is not PEM", spec.ca), e))?;
    let issuer = Issuer::from_ca_cert_pem(ca_pem, &ca_key)
        .map_err(|e| err(&format!("cannot read the {} certificate", spec.ca), e))?;
    let ca_not_after = super::inspect::parse_pem(&ca.cert_pem)
        .map_err(|e| err(&format!("cannot read the {} certificate", spec.ca), e))?
        .not_after;

    let key = new_key(alg)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name(&spec.common_name, &spec.organization);
    params.serial_number = Some(serial());
    params.not_before = now - BACKDATE;
    params.not_after = (now - BACKDATE + LEAF_VALIDITY).min(ca_not_after);
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
    Ok(KeyedCert {
        cert_pem: cert.pem().into_bytes(),
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
