//! `cluster.images.preload`: a folder of image archives (OCI layouts or `docker save`
//! tars) beside the inventory, imported into every node's containerd, so that an
//! air-gapped site needs no registry. Each archive is read here, before any connection, for
//! the image names it carries: the probe asks containerd for exactly those.

use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::model::InventoryFile;
use super::validate::{Collector, expand_path};

/// One archive of the preload folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PreloadArchive {
    /// Its file name, which it keeps on the hosts (`/var/lib/capstan/images/NAME`).
    pub name: String,
    pub path: PathBuf,
    /// The images it holds, as containerd names them (`docker.io/library/busybox:1.36`).
    pub images: Vec<String>,
}

pub(super) fn resolve(
    c: &mut Collector<'_>,
    file: &InventoryFile,
    base_dir: &Path,
) -> Vec<PreloadArchive> {
    let Some(given) = &file.cluster.images.preload else {
        return Vec::new();
    };
    let at = ["cluster", "images", "preload"];
    let dir = expand_path(given, base_dir, c.home.as_deref());
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) => {
            c.at(
                &at,
                format!("cannot read the preload folder {}: {e}", dir.display()),
                "name a folder of image archives (`ctr images export`, `docker save`), relative to the inventory's folder",
            );
            return Vec::new();
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "tar") && p.is_file())
        .collect();
    paths.sort();
    if paths.is_empty() {
        c.at(
            &at,
            format!("{} holds no image archive (*.tar)", dir.display()),
            "put the archives there (`ctr images export NAME.tar REF`, `docker save -o NAME.tar REF`), or remove the key",
        );
    }
    let mut out = Vec::new();
    for path in paths {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        {
            c.at(
                &at,
                format!("the archive name `{name}` has characters other than letters, digits, '.', '-' and '_'"),
                "rename it: it keeps its name on the hosts",
            );
            continue;
        }
        let read = std::fs::File::open(&path)
            .map_err(|e| e.to_string())
            .and_then(image_names);
        match read {
            Ok(images) if !images.is_empty() => out.push(PreloadArchive { name, path, images }),
            Ok(_) => c.at(
                &at,
                format!(
                    "{} names no image (no io.containerd.image.name or full org.opencontainers.image.ref.name in its index.json, no RepoTags in its manifest.json): containerd would import it without a name",
                    path.display()
                ),
                "export it with its name: `ctr images export FILE REF` or `docker save -o FILE REF`",
            ),
            Err(e) => c.at(
                &at,
                format!("{} is not an image archive: {e}", path.display()),
                "write it with `ctr images export` or `docker save`",
            ),
        }
    }
    out
}

/// The image names a tar archive holds: an OCI layout's `index.json` (its manifests'
/// `io.containerd.image.name`, or an `org.opencontainers.image.ref.name` that is a whole
/// reference), else a `docker save` archive's `manifest.json` (`RepoTags`); each normalized
/// as containerd lists them. Every command loads the inventory, so the layers (the bulk of
/// an archive) are seeked over, not read.
pub(crate) fn image_names(archive: impl Read + Seek) -> Result<Vec<String>, String> {
    let mut tar = tar::Archive::new(archive);
    let mut index: Option<Vec<u8>> = None;
    let mut manifest: Option<Vec<u8>> = None;
    for entry in tar.entries_with_seek().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let path = entry.path().map_err(|e| e.to_string())?.into_owned();
        let slot = match path.to_str().map(|p| p.trim_start_matches("./")) {
            Some("index.json") => &mut index,
            Some("manifest.json") => &mut manifest,
            _ => continue,
        };
        let mut bytes = Vec::new();
        // An index is small; a larger one is not what this reads.
        entry
            .by_ref()
            .take(1 << 20)
            .read_to_end(&mut bytes)
            .map_err(|e| e.to_string())?;
        *slot = Some(bytes);
    }
    let mut names = Vec::new();
    if let Some(index) = index {
        let v: serde_json::Value =
            serde_json::from_slice(&index).map_err(|e| format!("index.json: {e}"))?;
        for m in v["manifests"].as_array().into_iter().flatten() {
            let a = &m["annotations"];
            let name = a["io.containerd.image.name"].as_str().or_else(|| {
                a["org.opencontainers.image.ref.name"]
                    .as_str()
                    .filter(|r| r.contains('/') || r.contains(':'))
            });
            if let Some(n) = name {
                names.push(normalize(n)?);
            }
        }
    } else if let Some(manifest) = manifest {
        let v: serde_json::Value =
            serde_json::from_slice(&manifest).map_err(|e| format!("manifest.json: {e}"))?;
        for m in v.as_array().into_iter().flatten() {
            for tag in m["RepoTags"].as_array().into_iter().flatten() {
                if let Some(t) = tag.as_str() {
                    names.push(normalize(t)?);
                }
            }
        }
    } else {
        return Err("it has neither index.json (OCI) nor manifest.json (docker save)".into());
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// An image reference as containerd lists it: `busybox` is `docker.io/library/busybox:latest`.
fn normalize(reference: &str) -> Result<String, String> {
    if reference.is_empty()
        || !reference.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'/' | b':' | b'@')
        })
    {
        return Err(format!("`{reference}` is not an image reference"));
    }
    let (first, rest) = reference.split_once('/').unwrap_or(("", reference));
    let domain_given =
        !first.is_empty() && (first.contains('.') || first.contains(':') || first == "localhost");
    let mut full = if domain_given {
        reference.to_string()
    } else if first.is_empty() {
        format!("docker.io/library/{rest}")
    } else {
        format!("docker.io/{reference}")
    };
    let last = full.rsplit('/').next().unwrap_or_default();
    if !last.contains(':') && !last.contains('@') {
        full.push_str(":latest");
    }
    Ok(full)
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn tar_of(files: &[(&str, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, text) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(text.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, path, text.as_bytes()).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn names_come_from_an_oci_index_or_a_docker_manifest() {
        let oci = tar_of(&[
            ("oci-layout", r#"{"imageLayoutVersion":"1.0.0"}"#),
            (
                "index.json",
                r#"{"schemaVersion":2,"manifests":[
                    {"digest":"sha256:aa","annotations":{"io.containerd.image.name":"registry.k8s.io/pause:3.10.1","org.opencontainers.image.ref.name":"3.10.1"}},
                    {"digest":"sha256:bb","annotations":{"org.opencontainers.image.ref.name":"ghcr.io/flannel-io/flannel:v0.26.7"}},
                    {"digest":"sha256:cc","annotations":{"org.opencontainers.image.ref.name":"latest"}}]}"#,
            ),
        ]);
        assert_eq!(
            image_names(Cursor::new(&oci)).unwrap(),
            vec![
                "ghcr.io/flannel-io/flannel:v0.26.7",
                "registry.k8s.io/pause:3.10.1"
            ]
        );
        let docker = tar_of(&[(
            "manifest.json",
            r#"[{"Config":"x.json","RepoTags":["busybox:1.36","example/app","localhost:5000/a/b:1"],"Layers":[]}]"#,
        )]);
        assert_eq!(
            image_names(Cursor::new(&docker)).unwrap(),
            vec![
                "docker.io/example/app:latest",
                "docker.io/library/busybox:1.36",
                "localhost:5000/a/b:1"
            ]
        );
    }

    #[test]
    fn what_is_not_an_image_archive_says_so() {
        let err = image_names(Cursor::new(tar_of(&[("hello.txt", "hi")]))).unwrap_err();
        assert!(err.contains("neither index.json"), "{err}");
        let err = image_names(Cursor::new(
            b"not a tar at all, but long enough to be read as one",
        ));
        assert!(err.is_err());
        let bad = tar_of(&[("index.json", "{")]);
        assert!(
            image_names(Cursor::new(&bad))
                .unwrap_err()
                .starts_with("index.json:")
        );
        let odd = tar_of(&[("manifest.json", r#"[{"RepoTags":["a b"]}]"#)]);
        assert!(
            image_names(Cursor::new(&odd))
                .unwrap_err()
                .contains("`a b`")
        );
    }
}
