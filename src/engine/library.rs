//! Where roles and templates come from: a folder beside the inventory (the user's
//! overrides, file by file), else the defaults built into capstan.

use std::path::{Path, PathBuf};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded.rs"));
}

#[derive(Debug, Clone, Default)]
pub struct Library {
    /// A folder holding `roles/` and/or `templates/`; its files win over the built-in ones.
    pub overlay: Option<PathBuf>,
}

impl Library {
    /// The built-in roles and templates, overridden by those beside the inventory.
    pub fn for_inventory(inventory_dir: &Path) -> Library {
        let has = |d: &str| inventory_dir.join(d).is_dir();
        Library {
            overlay: (has("roles") || has("templates")).then(|| inventory_dir.to_path_buf()),
        }
    }

    /// Only the built-in files.
    pub fn builtin() -> Library {
        Library { overlay: None }
    }

    /// Reads `rel` (e.g. `roles/common/role.yaml`); the second value says where it came from.
    pub fn read(&self, rel: &str) -> Option<(String, String)> {
        if rel.split('/').any(|p| p == ".." || p.is_empty()) {
            return None;
        }
        if let Some(dir) = &self.overlay {
            let path = dir.join(rel);
            if let Ok(text) = std::fs::read_to_string(&path) {
                return Some((text, path.display().to_string()));
            }
        }
        embedded::FILES
            .iter()
            .find(|(name, _)| *name == rel)
            .map(|(name, text)| ((*text).to_string(), (*name).to_string()))
    }

    /// Names of every role available (built in or in the overlay), sorted.
    pub fn role_names(&self) -> Vec<String> {
        let mut names: Vec<String> = embedded::FILES
            .iter()
            .filter_map(|(name, _)| {
                name.strip_prefix("roles/")
                    .and_then(|r| r.strip_suffix("/role.yaml"))
                    .map(str::to_string)
            })
            .collect();
        if let Some(dir) = &self.overlay
            && let Ok(entries) = std::fs::read_dir(dir.join("roles"))
        {
            for e in entries.flatten() {
                if e.path().join("role.yaml").is_file() {
                    names.push(e.file_name().to_string_lossy().into_owned());
                }
            }
        }
        names.sort();
        names.dedup();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_files_and_overlay() {
        let lib = Library::builtin();
        assert!(lib.role_names().contains(&"containerd".to_string()));
        let (text, from) = lib.read("templates/containerd/config.toml.j2").unwrap();
        assert!(text.contains("SystemdCgroup = true"));
        assert_eq!(from, "templates/containerd/config.toml.j2");
        assert!(lib.read("roles/../Cargo.toml").is_none());

        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("templates/containerd")).unwrap();
        std::fs::write(
            dir.path().join("templates/containerd/config.toml.j2"),
            "mine\n",
        )
        .unwrap();
        let lib = Library::for_inventory(dir.path());
        assert_eq!(
            lib.read("templates/containerd/config.toml.j2").unwrap().0,
            "mine\n"
        );
        assert!(
            lib.read("roles/common/role.yaml").is_some(),
            "others stay built in"
        );
    }
}
