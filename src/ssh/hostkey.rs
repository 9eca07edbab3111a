//! Host key verification against `known_hosts` files, and trust on first use into capstan's
//! own `known_hosts`.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use russh::keys::known_hosts::known_host_keys_path;
use russh::keys::{Algorithm, HashAlg, PublicKey, check_known_hosts_path};

use super::error::SshError;

/// Serialises TOFU writes of concurrent connects into the same file.
static LEARN_LOCK: Mutex<()> = Mutex::new(());

/// What to check one server's key against.
#[derive(Debug, Clone)]
pub(crate) struct HostKeyPolicy {
    /// Inventory name (or "bastion …"), for messages.
    pub host: String,
    /// The name the key is recorded under (after ssh config `HostName`).
    pub known_host: String,
    pub port: u16,
    /// Read-only files (`~/.ssh/known_hosts`).
    pub files: Vec<PathBuf>,
    /// capstan's own file: checked too, and where new keys are learned.
    pub capstan_file: PathBuf,
    pub accept_new: bool,
}

/// How a key was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Known,
    Learned,
}

impl HostKeyPolicy {
    fn address(&self) -> String {
        if self.known_host.contains(':') {
            format!("[{}]:{}", self.known_host, self.port)
        } else {
            format!("{}:{}", self.known_host, self.port)
        }
    }

    /// The name as `known_hosts` spells it: `host`, or `[host]:port` off port 22.
    pub fn known_hosts_name(&self) -> String {
        if self.port == 22 {
            self.known_host.clone()
        } else {
            format!("[{}]:{}", self.known_host, self.port)
        }
    }

    fn all_files(&self) -> impl Iterator<Item = &Path> {
        self.files
            .iter()
            .map(PathBuf::as_path)
            .chain(std::iter::once(self.capstan_file.as_path()))
    }

    /// Host key algorithms to offer, those already recorded for this host first, so that a
    /// server with several host keys presents the one we know.
    pub fn preferred_algorithms(&self) -> Cow<'static, [Algorithm]> {
        let defaults = russh::Preferred::DEFAULT.key;
        let mut known: Vec<Algorithm> = Vec::new();
        for file in self.all_files() {
            if let Ok(entries) = known_host_keys_path(&self.known_host, self.port, file) {
                known.extend(entries.into_iter().map(|(_, k)| k.algorithm()));
            }
        }
        if known.is_empty() {
            return defaults;
        }
        let is_known = |a: &Algorithm| {
            known.iter().any(|k| {
                k == a || (matches!(k, Algorithm::Rsa { .. }) && matches!(a, Algorithm::Rsa { .. }))
            })
        };
        let (mut first, rest): (Vec<Algorithm>, Vec<Algorithm>) =
            defaults.iter().cloned().partition(is_known);
        first.extend(rest);
        Cow::Owned(first)
    }

    /// Checks `key`: known in some file -> Ok; recorded differently anywhere -> changed (always
    /// an error); unknown -> learned into capstan's file when allowed, else an error saying
    /// what to do.
    pub fn verify(&self, key: &PublicKey) -> Result<Verdict, SshError> {
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        let algorithm = key.algorithm().as_str().to_string();
        let mut known = false;
        for file in self.all_files() {
            match check_known_hosts_path(&self.known_host, self.port, key, file) {
                Ok(true) => known = true,
                Ok(false) => {}
                Err(russh::keys::Error::KeyChanged { line }) => {
                    let recorded: Vec<String> =
                        known_host_keys_path(&self.known_host, self.port, file)
                            .unwrap_or_default()
                            .into_iter()
                            .filter(|(_, k)| k.algorithm() == key.algorithm())
                            .map(|(_, k)| {
                                format!(
                                    "{} key {}",
                                    k.algorithm().as_str(),
                                    k.fingerprint(HashAlg::Sha256)
                                )
                            })
                            .collect();
                    let expected = if recorded.is_empty() {
                        "another key of that type".to_string()
                    } else {
                        recorded.join(", ")
                    };
                    return Err(SshError::HostKeyChanged {
                        host: self.host.clone(),
                        address: self.address(),
                        key: format!("{algorithm} key {fingerprint}"),
                        location: format!("{} line {line} records {expected}", file.display()),
                        remedy: format!(
                            "ssh-keygen -R '{}' -f {}",
                            self.known_hosts_name(),
                            file.display()
                        ),
                    });
                }
                Err(e) => {
                    return Err(SshError::KnownHosts {
                        host: self.host.clone(),
                        address: self.address(),
                        path: file.to_path_buf(),
                        message: format!(
                            "{e} (an entry for {} cannot be parsed; fix or remove it)",
                            self.known_hosts_name()
                        ),
                    });
                }
            }
        }
        if known {
            return Ok(Verdict::Known);
        }
        if !self.accept_new {
            let keyscan = if self.port == 22 {
                self.known_host.clone()
            } else {
                format!("-p {} {}", self.port, self.known_host)
            };
            let user_file = self.files.first().map_or_else(
                || "~/.ssh/known_hosts".to_string(),
                |p| p.display().to_string(),
            );
            return Err(SshError::HostKeyUnknown {
                host: self.host.clone(),
                address: self.address(),
                key: format!("{algorithm} key {fingerprint}"),
                advice: format!(
                    "add the key to {user_file} (e.g. `ssh-keyscan {keyscan} >> {user_file}`), or re-run with --accept-new-host-keys to trust it on first use (it is then recorded in {})",
                    self.capstan_file.display()
                ),
            });
        }
        self.learn(key)?;
        tracing::info!(
            host = %self.host,
            "learned host key {fingerprint} ({algorithm}) of {} into {}",
            self.known_hosts_name(),
            self.capstan_file.display()
        );
        Ok(Verdict::Learned)
    }

    fn learn(&self, key: &PublicKey) -> Result<(), SshError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let err = |message: String| SshError::KnownHosts {
            host: self.host.clone(),
            address: self.address(),
            path: self.capstan_file.clone(),
            message,
        };
        let _guard = LEARN_LOCK
            .lock()
            .map_err(|_| err("an earlier write panicked".into()))?;
        // Another connect may have learned it while we waited for the lock.
        if check_known_hosts_path(&self.known_host, self.port, key, &self.capstan_file)
            .unwrap_or(false)
        {
            return Ok(());
        }
        if let Some(parent) = self.capstan_file.parent()
            && !parent.as_os_str().is_empty()
            && !parent.exists()
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|e| err(format!("cannot create {}: {e}", parent.display())))?;
        }
        let entry = key
            .to_openssh()
            .map_err(|e| err(format!("cannot encode the key: {e}")))?;
        let existing = std::fs::read(&self.capstan_file).unwrap_or_default();
        let mut line = String::new();
        if existing.last().is_some_and(|b| *b != b'\n') {
            line.push('\n');
        }
        line.push_str(&self.known_hosts_name());
        line.push(' ');
        line.push_str(&entry);
        line.push('\n');
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.capstan_file)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .map_err(|e| err(e.to_string()))
    }
}

/// A run stops before it sends anything to any host when one host's key changed: every
/// connection made is dropped unused and each host reports which key stopped it.
pub(crate) fn stop_all_on_changed_key<T>(
    results: Vec<Result<T, SshError>>,
    targets: &[super::Target],
) -> Vec<Result<T, SshError>> {
    let changed: Vec<String> = results
        .iter()
        .filter_map(|r| match r {
            Err(SshError::HostKeyChanged { host, .. }) => Some(host.clone()),
            _ => None,
        })
        .collect();
    if changed.is_empty() {
        return results;
    }
    let other = changed.join(", ");
    results
        .into_iter()
        .zip(targets)
        .map(|(r, t)| match r {
            Err(e @ SshError::HostKeyChanged { .. }) => Err(e),
            _ => Err(SshError::StoppedByHostKey {
                host: t.name.clone(),
                address: t.address.clone(),
                other: other.clone(),
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use russh::keys::PrivateKey;

    fn key() -> PublicKey {
        PrivateKey::random(&mut russh::keys::key::safe_rng(), Algorithm::Ed25519)
            .unwrap()
            .public_key()
            .clone()
    }

    fn policy(dir: &Path, accept_new: bool) -> HostKeyPolicy {
        HostKeyPolicy {
            host: "cp1".into(),
            known_host: "10.0.0.1".into(),
            port: 2222,
            files: vec![dir.join("user_known_hosts")],
            capstan_file: dir.join("state/known_hosts"),
            accept_new,
        }
    }

    #[test]
    fn unknown_key_is_refused_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        let err = policy(dir.path(), false).verify(&key()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("--accept-new-host-keys"), "{msg}");
        assert!(msg.contains("ssh-keyscan -p 2222 10.0.0.1"), "{msg}");
        assert!(msg.contains("SHA256:"), "{msg}");
        assert!(!dir.path().join("state").exists());
    }

    #[test]
    fn accept_new_learns_then_knows_and_detects_change() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let k = key();
        assert_eq!(
            policy(dir.path(), true).verify(&k).unwrap(),
            Verdict::Learned
        );
        let text = std::fs::read_to_string(dir.path().join("state/known_hosts")).unwrap();
        assert!(text.starts_with("[10.0.0.1]:2222 ssh-ed25519 "), "{text}");
        let mode = std::fs::metadata(dir.path().join("state"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        assert_eq!(
            policy(dir.path(), false).verify(&k).unwrap(),
            Verdict::Known
        );
        let err = policy(dir.path(), true).verify(&key()).unwrap_err();
        assert!(matches!(err, SshError::HostKeyChanged { .. }), "{err}");
        assert!(err.to_string().contains("known_hosts line 1"), "{err}");
        let recorded = k.fingerprint(HashAlg::Sha256).to_string();
        assert!(err.to_string().contains(&recorded), "{err}");
        assert!(err.to_string().contains("ssh-keygen -R '[10.0.0.1]:2222'"));
    }

    #[test]
    fn known_algorithms_come_first() {
        let dir = tempfile::tempdir().unwrap();
        let p = policy(dir.path(), false);
        assert_eq!(p.preferred_algorithms()[0], Algorithm::Ed25519);
        let ecdsa = PrivateKey::random(
            &mut russh::keys::key::safe_rng(),
            Algorithm::Ecdsa {
                curve: russh::keys::EcdsaCurve::NistP256,
            },
        )
        .unwrap();
        let line = format!(
            "[10.0.0.1]:2222 {}\n",
            ecdsa.public_key().to_openssh().unwrap()
        );
        std::fs::write(dir.path().join("user_known_hosts"), line).unwrap();
        let algs = p.preferred_algorithms();
        assert_eq!(
            algs[0],
            Algorithm::Ecdsa {
                curve: russh::keys::EcdsaCurve::NistP256
            },
            "{algs:?}"
        );
        assert_eq!(algs.len(), russh::Preferred::DEFAULT.key.len());
    }
}
