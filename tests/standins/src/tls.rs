//! Certificates and keys: loading with clear errors, consistency checks (key matches cert,
//! cert signed by a CA), client-cert identities, rustls configs.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Who a client certificate says it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

impl User {
    pub fn in_group(&self, g: &str) -> bool {
        self.groups.iter().any(|x| x == g)
    }
}

fn read(path: &str, flag: &str) -> Result<Vec<u8>, String> {
    if path.is_empty() {
        return Err(format!("{flag}: empty path"));
    }
    std::fs::read(path).map_err(|e| format!("{flag}={path}: open {path}: {e}"))
}

pub fn certs_from_pem(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{what}: invalid PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what}: no CERTIFICATE block found"));
    }
    for c in &certs {
        x509_parser::parse_x509_certificate(c)
            .map_err(|e| format!("{what}: not a valid X.509 certificate: {e}"))?;
    }
    Ok(certs)
}

pub fn key_from_pem(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem)
        .map_err(|e| format!("{what}: no valid private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}"))
}

/// Certificates from a PEM file named by `flag`.
pub fn load_certs(path: &str, flag: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    certs_from_pem(&read(path, flag)?, &format!("{flag}={path}"))
}

pub fn load_key(path: &str, flag: &str) -> Result<PrivateKeyDer<'static>, String> {
    key_from_pem(&read(path, flag)?, &format!("{flag}={path}"))
}

/// Checks that `key` is the private key of the first cert; returns the rustls pair.
pub fn certified_key(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    what: &str,
) -> Result<Arc<CertifiedKey>, String> {
    let ck = CertifiedKey::from_der(certs, key, &provider())
        .map_err(|e| format!("{what}: private key does not match certificate: {e}"))?;
    Ok(Arc::new(ck))
}

pub fn load_pair(
    cert: &str,
    cert_flag: &str,
    key: &str,
    key_flag: &str,
) -> Result<Arc<CertifiedKey>, String> {
    let certs = load_certs(cert, cert_flag)?;
    let k = load_key(key, key_flag)?;
    certified_key(certs, k, &format!("{cert_flag}={cert} / {key_flag}={key}"))
}

pub fn roots(cas: &[CertificateDer<'static>], what: &str) -> Result<Arc<RootCertStore>, String> {
    let mut store = RootCertStore::empty();
    for c in cas {
        store
            .add(c.clone())
            .map_err(|e| format!("{what}: not usable as a CA certificate: {e}"))?;
    }
    Ok(Arc::new(store))
}

fn client_verifier(roots: Arc<RootCertStore>) -> Result<Arc<dyn ClientCertVerifier>, String> {
    WebPkiClientVerifier::builder_with_provider(roots, provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| format!("cannot build a client verifier: {e}"))
}

/// Verifies that `chain` (leaf first) is a client certificate issued by one of `roots`.
pub fn verify_client_chain(
    roots: &Arc<RootCertStore>,
    chain: &[CertificateDer<'static>],
) -> Result<(), String> {
    let Some((leaf, rest)) = chain.split_first() else {
        return Err("no certificate".into());
    };
    let v = client_verifier(roots.clone())?;
    v.verify_client_cert(leaf, rest, UnixTime::now())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Checks that a cert (its chain) is signed by `ca` for client use; error names both.
pub fn check_signed_by(
    chain: &[CertificateDer<'static>],
    what: &str,
    ca: &[CertificateDer<'static>],
    ca_what: &str,
) -> Result<(), String> {
    let r = roots(ca, ca_what)?;
    verify_client_chain(&r, chain).map_err(|e| {
        format!("{what} is not a valid client certificate signed by the CA in {ca_what}: {e}")
    })
}

/// User (CN) and groups (O) of a certificate.
pub fn identity(cert: &CertificateDer<'_>) -> Result<User, String> {
    let (_, c) = x509_parser::parse_x509_certificate(cert).map_err(|e| e.to_string())?;
    let name = c
        .subject()
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .unwrap_or_default()
        .to_string();
    let groups = c
        .subject()
        .iter_organization()
        .filter_map(|a| a.as_str().ok().map(ToString::to_string))
        .collect();
    Ok(User { name, groups })
}

/// Accepts any client certificate during the handshake (it still checks the handshake
/// signature, i.e. that the client holds the key); the chain is verified per request, so a
/// certificate from another CA gets 401 as from the real API server, not a TLS alert.
#[derive(Debug)]
struct RequestClientCert {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for RequestClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A server config serving `key`; with `client_roots`, client certs are requested (and
/// verified per request by the caller).
pub fn server_config(
    key: Arc<CertifiedKey>,
    client_roots: Option<Arc<RootCertStore>>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_roots {
        Some(r) => builder.with_client_cert_verifier(Arc::new(RequestClientCert {
            inner: client_verifier(r)?,
        })),
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(key)));
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// A self-signed serving certificate (what the components make when given none).
pub fn self_signed(hosts: &[String]) -> Result<Arc<CertifiedKey>, String> {
    let ck = rcgen::generate_simple_self_signed(hosts.to_vec()).map_err(|e| e.to_string())?;
    let cert = CertificateDer::from(ck.cert.der().to_vec());
    let key = PrivateKeyDer::try_from(ck.signing_key.serialize_der())
        .map_err(std::string::ToString::to_string)?;
    certified_key(vec![cert], key, "self-signed certificate")
}

/// Whether a PEM/der path exists (for messages).
pub fn exists(p: &str) -> bool {
    Path::new(p).exists()
}
