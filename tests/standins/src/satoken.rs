//! Service account tokens as kube-apiserver issues and checks them: JWTs signed with
//! --service-account-signing-key-file (ES256 for a P-256 key, RS256 for RSA), verified
//! against the keys of --service-account-key-file.

use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use rustls_pki_types::pem::{PemObject, SectionKind};
use serde_json::Value;

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn unb64(s: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|e| format!("malformed token: {e}"))
}

enum SigningKey {
    Es256(EcdsaKeyPair),
    Rs256(RsaKeyPair),
}

/// The key that signs tokens.
pub struct Signer {
    key: SigningKey,
    kid: String,
}

/// A public key tokens are checked against.
#[derive(Clone, Debug)]
enum PublicKey {
    /// Uncompressed P-256 point.
    Es256(Vec<u8>),
    /// PKCS#1 RSAPublicKey DER.
    Rs256(Vec<u8>),
}

#[derive(Clone, Debug, Default)]
pub struct Verifier {
    keys: Vec<PublicKey>,
}

fn sections(pem: &[u8], what: &str) -> Result<Vec<(SectionKind, Vec<u8>)>, String> {
    <(SectionKind, Vec<u8>)>::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what}: invalid PEM: {e}"))
}

fn private_key(kind: SectionKind, der: &[u8]) -> Option<SigningKey> {
    let rng = SystemRandom::new();
    match kind {
        SectionKind::PrivateKey => {
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
                .ok()
                .map(SigningKey::Es256)
                .or_else(|| RsaKeyPair::from_pkcs8(der).ok().map(SigningKey::Rs256))
        }
        SectionKind::RsaPrivateKey => RsaKeyPair::from_der(der).ok().map(SigningKey::Rs256),
        _ => None,
    }
}

impl SigningKey {
    fn public(&self) -> PublicKey {
        match self {
            SigningKey::Es256(k) => PublicKey::Es256(k.public_key().as_ref().to_vec()),
            SigningKey::Rs256(k) => PublicKey::Rs256(k.public_key().as_ref().to_vec()),
        }
    }
}

/// The key id the real server puts in the header: base64url(sha256(SPKI DER)); here over
/// the public key bytes, which identifies the key just as well.
fn key_id(k: &PublicKey) -> String {
    let bytes = match k {
        PublicKey::Es256(b) | PublicKey::Rs256(b) => b,
    };
    b64(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

impl Signer {
    pub fn from_pem(pem: &[u8], what: &str) -> Result<Signer, String> {
        for (kind, der) in sections(pem, what)? {
            if let Some(key) = private_key(kind, &der) {
                let kid = key_id(&key.public());
                return Ok(Signer { key, kid });
            }
        }
        Err(format!(
            "{what}: no supported private key (an ECDSA P-256 or RSA key, PKCS#8 or PKCS#1 PEM)"
        ))
    }

    /// A compact JWS of `claims`.
    pub fn sign(&self, claims: &Value) -> Result<String, String> {
        let alg = match self.key {
            SigningKey::Es256(_) => "ES256",
            SigningKey::Rs256(_) => "RS256",
        };
        let header = serde_json::json!({"alg": alg, "kid": self.kid});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let rng = SystemRandom::new();
        let sig = match &self.key {
            SigningKey::Es256(k) => k
                .sign(&rng, input.as_bytes())
                .map_err(|_| "signing failed".to_string())?
                .as_ref()
                .to_vec(),
            SigningKey::Rs256(k) => {
                let mut out = vec![0; k.public().modulus_len()];
                k.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &rng,
                    input.as_bytes(),
                    &mut out,
                )
                .map_err(|_| "signing failed".to_string())?;
                out
            }
        };
        Ok(format!("{input}.{}", b64(&sig)))
    }
}

/// The public key of an SPKI DER (EC P-256 or RSA).
fn spki(der: &[u8]) -> Option<PublicKey> {
    use x509_parser::prelude::FromDer;
    let (_, info) = x509_parser::x509::SubjectPublicKeyInfo::from_der(der).ok()?;
    let oid = info.algorithm.algorithm.to_id_string();
    let data = info.subject_public_key.data.to_vec();
    match oid.as_str() {
        "1.2.840.10045.2.1" => Some(PublicKey::Es256(data)),
        "1.2.840.113549.1.1.1" => Some(PublicKey::Rs256(data)),
        _ => None,
    }
}

impl Verifier {
    /// The keys of a --service-account-key-file: public keys (PKIX or PKCS#1), private
    /// keys (their public halves) and certificates, as the real flag accepts.
    pub fn from_pem(pem: &[u8], what: &str) -> Result<Verifier, String> {
        let mut keys = Vec::new();
        for (kind, der) in sections(pem, what)? {
            match kind {
                SectionKind::PublicKey => keys.extend(spki(&der)),
                SectionKind::Certificate => {
                    if let Ok((_, c)) = x509_parser::parse_x509_certificate(&der) {
                        keys.extend(spki(c.tbs_certificate.subject_pki.raw));
                    }
                }
                k => keys.extend(private_key(k, &der).map(|p| p.public())),
            }
        }
        if keys.is_empty() {
            return Err(format!(
                "{what}: no ECDSA P-256 or RSA public or private key found"
            ));
        }
        Ok(Verifier { keys })
    }

    /// The claims of `token` when one of the keys signed it (issuer, expiry and audience
    /// are the caller's checks).
    pub fn verify(&self, token: &str) -> Result<Value, String> {
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("not a compact JWS".into());
        };
        let header: Value =
            serde_json::from_slice(&unb64(h)?).map_err(|e| format!("malformed header: {e}"))?;
        let sig = unb64(s)?;
        let input = format!("{h}.{c}");
        let ok = self.keys.iter().any(|k| match (k, header["alg"].as_str()) {
            (PublicKey::Es256(p), Some("ES256")) => {
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, p)
                    .verify(input.as_bytes(), &sig)
                    .is_ok()
            }
            (PublicKey::Rs256(p), Some("RS256")) => {
                signature::UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, p)
                    .verify(input.as_bytes(), &sig)
                    .is_ok()
            }
            _ => false,
        });
        if !ok {
            return Err("crypto/ecdsa: verification error".into());
        }
        serde_json::from_slice(&unb64(c)?).map_err(|e| format!("malformed claims: {e}"))
    }
}

/// Whether a string looks like a JWT (three base64url parts, the first a JSON header).
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
        && token
            .split('.')
            .next()
            .and_then(|h| unb64(h).ok())
            .is_some_and(|h| serde_json::from_slice::<Value>(&h).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn es256_and_rs256_round_trip_and_a_foreign_key_fails() {
        let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let rsa =
            rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
                .unwrap();
        for (key, alg) in [(&ec, "ES256"), (&rsa, "RS256")] {
            let s = Signer::from_pem(key.serialize_pem().as_bytes(), "key").unwrap();
            let t = s.sign(&json!({"sub": "x"})).unwrap();
            assert!(looks_like_jwt(&t));
            let h: Value =
                serde_json::from_slice(&unb64(t.split('.').next().unwrap()).unwrap()).unwrap();
            assert_eq!(h["alg"], alg);
            let v = Verifier::from_pem(key.public_key_pem().as_bytes(), "pub").unwrap();
            assert_eq!(v.verify(&t).unwrap()["sub"], "x");
            // The private key file works as a key file too.
            let v2 = Verifier::from_pem(key.serialize_pem().as_bytes(), "pub").unwrap();
            assert!(v2.verify(&t).is_ok());
            let other = rcgen::KeyPair::generate().unwrap();
            let v3 = Verifier::from_pem(other.public_key_pem().as_bytes(), "pub").unwrap();
            assert!(v3.verify(&t).is_err());
            // A tampered payload fails.
            let mut parts: Vec<String> = t.split('.').map(String::from).collect();
            parts[1] = b64(br#"{"sub":"y"}"#);
            assert!(v.verify(&parts.join(".")).is_err());
        }
    }
}
