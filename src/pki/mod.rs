//! The cluster's PKI, issued from the operator's machine: CAs, leaf certificates, the
//! service-account key pair and kubeconfigs, with kubeadm's names, subjects and usages.
//!
//! - [`spec`]: what the inventory needs (pure).
//! - [`issue`]: minting keys and certificates (rcgen); [`inspect`]: reading them back
//!   (x509-parser).
//! - [`store`]: `<inventory dir>/.capstan/pki/`, the source of truth (dirs 0700, keys 0600,
//!   atomic writes; refused when group/others can read it).
//! - [`plan`]: what to create, keep or re-issue and why ([`plan::plan`] is pure;
//!   [`plan::ensure`] carries it out in memory, [`store::Store::save`] writes it).
//! - [`adopt`]: taking the CAs back from a cluster when local state is lost; refusing when
//!   they differ.
//! - [`hosts`]: which files each host gets, with kubeadm's paths, modes and owners.
//! - [`kubeconfig`]: kubeconfig rendering; [`expiry`]: `check-expiration` over what hosts hold.
//!
//! Private keys are held in [`KeyPem`], whose `Debug` never shows them; nothing here prints
//! key material.

pub mod adopt;
pub mod expiry;
pub mod hosts;
pub mod inspect;
pub mod issue;
pub mod kubeconfig;
pub mod plan;
pub mod spec;
pub mod store;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;

pub use hosts::{HostFile, host_files};
pub use plan::{Action, PkiPlan, PlanItem, ensure, plan};
pub use spec::{CaKind, KubeconfigSpec, LeafSpec, San, Usage};
pub use store::Store;

/// A PEM private key. Its `Debug` is redacted; [`KeyPem::expose`] is the one way to the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPem(String);

impl KeyPem {
    pub fn new(pem: impl Into<String>) -> Self {
        KeyPem(pem.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for KeyPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyPem(<redacted>)")
    }
}

/// A certificate (PEM) and its private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedCert {
    pub cert_pem: Vec<u8>,
    pub key_pem: KeyPem,
}

/// The service-account signing key pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaKeys {
    pub key_pem: KeyPem,
    pub public_pem: Vec<u8>,
}

/// Everything in `.capstan/pki/`, in memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PkiState {
    pub cas: BTreeMap<CaKind, KeyedCert>,
    pub sa: Option<SaKeys>,
    /// Leaf certificates by [`LeafSpec::id`]; a certificate whose key file is missing has an
    /// empty key (it is re-issued).
    pub leaves: BTreeMap<String, KeyedCert>,
    /// Rendered kubeconfigs by [`KubeconfigSpec::file`].
    pub kubeconfigs: BTreeMap<String, Vec<u8>>,
}

impl PkiState {
    /// True when no CA, no service-account key and no certificate exists.
    pub fn is_empty(&self) -> bool {
        self.cas.is_empty() && self.sa.is_none() && self.leaves.is_empty()
    }
}

/// A PKI problem; none of them leaves half-written state behind.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum PkiError {
    #[error("{} is readable by group or others (mode {mode:o})", path.display())]
    #[diagnostic(
        code(capstan::pki::insecure),
        help("it holds the cluster's private keys: run `chmod -R go-rwx {}` and try again", path.display())
    )]
    Insecure { path: PathBuf, mode: u32 },

    #[error("cannot {op} {}: {message}", path.display())]
    #[diagnostic(
        code(capstan::pki::io),
        help("check the permissions and free space of the inventory folder")
    )]
    Io {
        op: &'static str,
        path: PathBuf,
        message: String,
    },

    #[error("{} is not usable: {message}", path.display())]
    #[diagnostic(
        code(capstan::pki::unreadable),
        help(
            "restore it from a backup, or remove it to have it re-issued (a CA cannot be replaced without re-issuing every certificate it signed)"
        )
    )]
    Unreadable { path: PathBuf, message: String },

    #[error("{0}")]
    #[diagnostic(code(capstan::pki::crypto))]
    Crypto(String),

    #[error(
        "the {ca} on {host} differs from the local one in {}:\n  local:  {local}\n  {host}: {remote}",
        dir.display()
    )]
    #[diagnostic(
        code(capstan::pki::ca_mismatch),
        help("nothing was changed. The local PKI belongs to another cluster, or the cluster's CA was replaced. Point -i at this cluster's inventory, or move {} aside to adopt the cluster's CA", dir.display())
    )]
    CaMismatch {
        ca: String,
        host: String,
        local: String,
        remote: String,
        dir: PathBuf,
    },

    #[error("{host} has {what} but not its private key")]
    #[diagnostic(
        code(capstan::pki::adopt_incomplete),
        help(
            "capstan signs certificates itself and needs the CA key: copy the key to {path} on {host}, or restore .capstan/pki from a backup"
        )
    )]
    AdoptIncomplete {
        host: String,
        what: String,
        path: String,
    },

    #[error("the local PKI has no {what}")]
    #[diagnostic(
        code(capstan::pki::missing),
        help("run `capstan certs generate -i INVENTORY` first")
    )]
    Missing { what: String },

    #[error("no certificate is called `{name}`")]
    #[diagnostic(code(capstan::pki::unknown), help("{known}"))]
    Unknown { name: String, known: String },
}
