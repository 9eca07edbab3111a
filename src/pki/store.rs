//! `<inventory dir>/.capstan/pki/`: the PKI's source of truth, laid out with kubeadm's
//! names (`ca.crt`, `etcd/ca.key`, `sa.pub`, …; per-node material under `nodes/<name>/`,
//! kubeconfig client certs under `kubeconfig/`). Folders 0700, every file 0600, each written
//! atomically (a temporary file in the same folder, then rename).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::spec::CaKind;
use super::{KeyPem, KeyedCert, PkiError, PkiState, SaKeys};
use crate::inventory::Inventory;

/// The folder of a PKI.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// What [`Store::save`] did to each file.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Saved {
    /// Files written (new or changed), relative to the pki folder.
    pub written: Vec<String>,
}

fn io(op: &'static str, path: &Path, e: &std::io::Error) -> PkiError {
    PkiError::Io {
        op,
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

impl Store {
    /// `.capstan/pki/` beside the inventory.
    pub fn for_inventory(inv: &Inventory) -> Store {
        Store::new(inv.state_dir().join("pki"))
    }

    pub fn new(root: impl Into<PathBuf>) -> Store {
        Store { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn exists(&self) -> bool {
        self.root.is_dir()
    }

    /// Refuses a pki folder (or anything in it) that group or others can access.
    pub fn check_permissions(&self) -> Result<(), PkiError> {
        if !self.root.exists() {
            return Ok(());
        }
        let mut stack = vec![self.root.clone()];
        while let Some(path) = stack.pop() {
            let meta = fs::symlink_metadata(&path).map_err(|e| io("inspect", &path, &e))?;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(PkiError::Insecure { path, mode });
            }
            if meta.is_dir() {
                for entry in fs::read_dir(&path).map_err(|e| io("list", &path, &e))? {
                    stack.push(entry.map_err(|e| io("list", &path, &e))?.path());
                }
            }
        }
        Ok(())
    }

    fn read_opt(&self, rel: &str) -> Result<Option<Vec<u8>>, PkiError> {
        let path = self.root.join(rel);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("read", &path, &e)),
        }
    }

    fn read_key(&self, rel: &str) -> Result<Option<KeyPem>, PkiError> {
        match self.read_opt(rel)? {
            None => Ok(None),
            Some(bytes) => String::from_utf8(bytes)
                .map(KeyPem::new)
                .map(Some)
                .map_err(|_| PkiError::Unreadable {
                    path: self.root.join(rel),
                    message: "not a PEM text".into(),
                }),
        }
    }

    /// Reads the whole PKI (permissions checked first). A missing folder is an empty PKI.
    pub fn load(&self) -> Result<PkiState, PkiError> {
        self.check_permissions()?;
        let mut state = PkiState::default();
        if !self.root.exists() {
            return Ok(state);
        }
        for kind in CaKind::ALL {
            let id = kind.id();
            let cert = self.read_opt(&format!("{id}.crt"))?;
            let key = self.read_key(&format!("{id}.key"))?;
            match (cert, key) {
                (Some(cert_pem), Some(key_pem)) => {
                    state.cas.insert(kind, KeyedCert { cert_pem, key_pem });
                }
                (None, None) => {}
                (Some(_), None) => {
                    return Err(PkiError::Unreadable {
                        path: self.root.join(format!("{id}.key")),
                        message: format!("the {kind} certificate exists but its key is missing"),
                    });
                }
                (None, Some(_)) => {
                    return Err(PkiError::Unreadable {
                        path: self.root.join(format!("{id}.crt")),
                        message: format!("the {kind} key exists but its certificate is missing"),
                    });
                }
            }
        }
        match (self.read_key("sa.key")?, self.read_opt("sa.pub")?) {
            (Some(key_pem), Some(public_pem)) => {
                state.sa = Some(SaKeys {
                    key_pem,
                    public_pem,
                });
            }
            (None, None) => {}
            _ => {
                return Err(PkiError::Unreadable {
                    path: self.root.join("sa.key"),
                    message: "sa.key and sa.pub must both exist".into(),
                });
            }
        }
        let ca_ids: Vec<&str> = CaKind::ALL.iter().map(|k| k.id()).collect();
        for rel in self.files()? {
            if let Some(id) = rel.strip_suffix(".crt") {
                if ca_ids.contains(&id) {
                    continue;
                }
                let cert_pem = self.read_opt(&rel)?.unwrap_or_default();
                let key_pem = self
                    .read_key(&format!("{id}.key"))?
                    .unwrap_or_else(|| KeyPem::new(""));
                state
                    .leaves
                    .insert(id.to_string(), KeyedCert { cert_pem, key_pem });
            } else if rel.to_ascii_lowercase().ends_with(".conf") {
                let bytes = self.read_opt(&rel)?.unwrap_or_default();
                state.kubeconfigs.insert(rel, bytes);
            }
        }
        Ok(state)
    }

    /// Every file under the folder, relative, sorted.
    fn files(&self) -> Result<Vec<String>, PkiError> {
        let mut out = Vec::new();
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(&dir).map_err(|e| io("list", &dir, &e))? {
                let path = entry.map_err(|e| io("list", &dir, &e))?.path();
                if path.is_dir() {
                    stack.push(path);
                } else if let Ok(rel) = path.strip_prefix(&self.root) {
                    out.push(rel.to_string_lossy().into_owned());
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Writes every file of `state` whose bytes differ from the disk's. Folders are created
    /// 0700 and files 0600, atomically.
    pub fn save(&self, state: &PkiState) -> Result<Saved, PkiError> {
        let mut files: BTreeMap<String, &[u8]> = BTreeMap::new();
        for (kind, pair) in &state.cas {
            files.insert(format!("{}.crt", kind.id()), &pair.cert_pem);
            files.insert(
                format!("{}.key", kind.id()),
                pair.key_pem.expose().as_bytes(),
            );
        }
        if let Some(sa) = &state.sa {
            files.insert("sa.key".into(), sa.key_pem.expose().as_bytes());
            files.insert("sa.pub".into(), &sa.public_pem);
        }
        for (id, pair) in &state.leaves {
            files.insert(format!("{id}.crt"), &pair.cert_pem);
            if !pair.key_pem.expose().is_empty() {
                files.insert(format!("{id}.key"), pair.key_pem.expose().as_bytes());
            }
        }
        for (file, bytes) in &state.kubeconfigs {
            files.insert(file.clone(), bytes);
        }
        let mut saved = Saved::default();
        for (rel, bytes) in files {
            if self.read_opt(&rel)?.as_deref() == Some(bytes) {
                continue;
            }
            self.write(&rel, bytes)?;
            saved.written.push(rel);
        }
        Ok(saved)
    }

    /// Writes one file atomically with mode 0600, creating its folders 0700.
    pub fn write(&self, rel: &str, bytes: &[u8]) -> Result<(), PkiError> {
        let path = self.root.join(rel);
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        create_private_dir(&dir)?;
        write_atomic(&path, bytes, 0o600)
    }
}

/// Creates `dir` and its missing parents with mode 0700.
pub fn create_private_dir(dir: &Path) -> Result<(), PkiError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io("create", dir, &e))
}

/// Writes `bytes` to `path` through a temporary file in the same folder, created with `mode`.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PkiError> {
    crate::fsutil::write_atomic(path, bytes, mode).map_err(|e| io("write", path, &e))
}
