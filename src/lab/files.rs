//! The files a lab writes into its output folder: the key pair, `known_hosts`, the inventory.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use russh::keys::PrivateKey;
use russh::keys::ssh_key::LineEnding;
use russh::keys::ssh_key::private::{Ed25519Keypair, KeypairData};

use super::{INVENTORY_FILE, KEY_FILE, LabError};

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LabError + '_ {
    move |source| LabError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates `dir` (and parents) and gives it `mode`.
pub(crate) fn ensure_dir(dir: &Path, mode: u32) -> Result<(), LabError> {
    fs::create_dir_all(dir).map_err(io(dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode)).map_err(io(dir))
}

/// Writes `bytes` to `path` atomically (temp file + rename) with `mode`.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), LabError> {
    crate::fsutil::write_atomic(path, bytes, mode).map_err(io(path))
}

/// Writes `bytes` unless the file already holds exactly them (then only its mode is set).
pub(crate) fn write_if_changed(path: &Path, bytes: &[u8], mode: u32) -> Result<bool, LabError> {
    if fs::read(path).is_ok_and(|old| old == bytes) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io(path))?;
        return Ok(false);
    }
    write_atomic(path, bytes, mode)?;
    Ok(true)
}

/// The lab's key pair.
pub(crate) struct KeyPair {
    /// `ssh-ed25519 AAAA… capstan-lab-<name>`
    pub public: String,
}

/// Reuses `OUT/id_ed25519` when it is there (so that `up` is idempotent), else makes a fresh
/// ed25519 key pair. The private key is written 0600, the public key beside it (`.pub`).
pub(crate) fn ensure_key_pair(out: &Path, lab: &str) -> Result<KeyPair, LabError> {
    let path = out.join(KEY_FILE);
    let pub_path = out.join(format!("{KEY_FILE}.pub"));
    let key = match fs::read_to_string(&path) {
        Ok(text) => {
            let key = PrivateKey::from_openssh(text.as_bytes()).map_err(|e| LabError::Key {
                path: path.clone(),
                detail: e.to_string(),
            })?;
            if key.is_encrypted() {
                return Err(LabError::Key {
                    path,
                    detail: "it is encrypted with a passphrase".into(),
                });
            }
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(io(&path))?;
            key
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let seed: [u8; 32] = rand::random();
            let pair = Ed25519Keypair::from_seed(&seed);
            let key = PrivateKey::new(KeypairData::Ed25519(pair), format!("capstan-lab-{lab}"))
                .map_err(|e| LabError::Key {
                    path: path.clone(),
                    detail: e.to_string(),
                })?;
            let pem = key.to_openssh(LineEnding::LF).map_err(|e| LabError::Key {
                path: path.clone(),
                detail: e.to_string(),
            })?;
            write_atomic(&path, pem.as_bytes(), 0o600)?;
            key
        }
        Err(e) => return Err(io(&path)(e)),
    };
    let public = key.public_key().to_openssh().map_err(|e| LabError::Key {
        path: path.clone(),
        detail: e.to_string(),
    })?;
    write_if_changed(&pub_path, format!("{public}\n").as_bytes(), 0o644)?;
    Ok(KeyPair { public })
}

/// Removes what `up` wrote into `out` (and `out/.capstan`, `out` when that leaves them empty).
/// Returns the paths removed.
pub(crate) fn remove_lab_files(out: &Path) -> Result<Vec<PathBuf>, LabError> {
    let state = out.join(crate::inventory::STATE_DIR);
    let mut removed = Vec::new();
    for path in [
        out.join(INVENTORY_FILE),
        out.join(crate::artifacts::data::OVERRIDE_NAME),
        out.join(KEY_FILE),
        out.join(format!("{KEY_FILE}.pub")),
        state.join("known_hosts"),
    ] {
        match fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path)(e)),
        }
    }
    for dir in [&state, out] {
        // Only when empty: other state (PKI, journal) is the user's to keep or delete.
        if fs::remove_dir(dir).is_ok() {
            removed.push(dir.to_path_buf());
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_pair_is_made_once_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure_key_pair(dir.path(), "t").unwrap();
        assert!(first.public.starts_with("ssh-ed25519 AAAA"));
        assert!(first.public.ends_with(" capstan-lab-t"));
        let key = dir.path().join(KEY_FILE);
        let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let pem = fs::read_to_string(&key).unwrap();
        assert!(pem.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
        let second = ensure_key_pair(dir.path(), "t").unwrap();
        assert_eq!(first.public, second.public);
        assert_eq!(pem, fs::read_to_string(&key).unwrap());
        let pub_file = fs::read_to_string(dir.path().join("id_ed25519.pub")).unwrap();
        assert_eq!(pub_file.trim_end(), first.public);
    }

    #[test]
    fn a_broken_key_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(KEY_FILE), "garbage").unwrap();
        let err = ensure_key_pair(dir.path(), "t").err().unwrap().to_string();
        assert!(
            err.contains("id_ed25519") && err.contains("not a usable SSH key"),
            "{err}"
        );
    }

    #[test]
    fn removal_keeps_what_up_did_not_write() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("lab");
        ensure_dir(&out.join(".capstan"), 0o700).unwrap();
        ensure_key_pair(&out, "t").unwrap();
        write_atomic(&out.join(INVENTORY_FILE), b"x", 0o644).unwrap();
        write_atomic(&out.join(".capstan/known_hosts"), b"x", 0o600).unwrap();
        fs::write(out.join(".capstan/journal"), "mine").unwrap();
        let removed = remove_lab_files(&out).unwrap();
        assert_eq!(removed.len(), 4, "{removed:?}");
        assert!(out.join(".capstan/journal").exists());
        fs::remove_file(out.join(".capstan/journal")).unwrap();
        let removed = remove_lab_files(&out).unwrap();
        assert_eq!(removed, [out.join(".capstan"), out.clone()]);
        assert!(!out.exists());
    }

    #[test]
    fn unchanged_content_is_not_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        assert!(write_if_changed(&p, b"a", 0o644).unwrap());
        assert!(!write_if_changed(&p, b"a", 0o600).unwrap());
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(write_if_changed(&p, b"b", 0o644).unwrap());
    }
}
