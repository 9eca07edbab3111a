//! The download cache on the operator machine.
//!
//! Layout under the cache root (`~/.cache/capstan` unless given):
//!
//! ```text
//! blobs/sha256/{hex}                                  every verified download and extracted binary
//! index/{component}/{version}/{arch}/{file}.json      name → hashes (the download and each binary)
//! tmp/                                                partial files; renamed into blobs/ once verified
//! ```
//!
//! A fetch first learns the expected sha256 (pinned, or the mirror's small `.sha256` file).
//! When the index already maps the artifact to that hash and every blob is present, nothing
//! else is read from the mirror. Otherwise the file is streamed into `tmp/` while hashed,
//! compared, and renamed into `blobs/`; archive members are extracted the same way, each
//! with its own sha256 recorded (the engine compares those with the hosts' copies). A
//! mismatch removes the partial file and leaves the cache as it was.
//!
//! The API is blocking (file and HTTP reads); call it from `spawn_blocking` in async code.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ArtifactError;
use super::catalog::{ExpectedChecksum, ResolvedArtifact};

/// Largest `.sha256` file read (they hold one line; SHA256SUMS files a few dozen).
const MAX_CHECKSUM_FILE: u64 = 64 * 1024;

/// The download cache.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
    /// Honours HTTP(S)_PROXY / NO_PROXY.
    agent: ureq::Agent,
    /// For loopback mirrors, which never go through a proxy.
    direct: ureq::Agent,
}

/// One binary in the cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedBinary {
    /// The installed file name (`etcd`, `runc`, …).
    pub name: String,
    /// Lowercase hex sha256 of its content.
    pub sha256: String,
    pub size: u64,
    /// Its blob in the cache (mode 0755).
    pub path: PathBuf,
}

/// The result of [`Cache::fetch`].
#[derive(Debug, Clone)]
pub struct Fetched {
    pub artifact: ResolvedArtifact,
    /// The verified sha256 of the download.
    pub sha256: String,
    /// The download in the cache.
    pub path: PathBuf,
    /// The binaries it provides, in catalog order.
    pub binaries: Vec<CachedBinary>,
    /// True when nothing but (at most) the `.sha256` file was read from the mirror.
    pub from_cache: bool,
}

impl Fetched {
    pub fn binary(&self, name: &str) -> Option<&CachedBinary> {
        self.binaries.iter().find(|b| b.name == name)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct IndexEntry {
    url: String,
    file_name: String,
    sha256: String,
    binaries: Vec<IndexBinary>,
}

#[derive(Debug, Serialize, Deserialize)]
struct IndexBinary {
    name: String,
    member: Option<String>,
    sha256: String,
    size: u64,
}

impl Cache {
    /// A cache rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let config = || {
            ureq::Agent::config_builder()
                .timeout_connect(Some(Duration::from_secs(30)))
                .timeout_recv_response(Some(Duration::from_secs(60)))
                .timeout_per_read(Some(Duration::from_secs(60)))
                .user_agent(concat!("capstan/", env!("CARGO_PKG_VERSION")))
        };
        Self {
            root: root.into(),
            agent: ureq::Agent::new_with_config(config().build()),
            direct: ureq::Agent::new_with_config(config().proxy(None).build()),
        }
    }

    /// `~/.cache/capstan` (the platform cache dir), or `.capstan-cache` when there is none.
    pub fn default_dir() -> PathBuf {
        dirs::cache_dir().map_or_else(|| PathBuf::from(".capstan-cache"), |d| d.join("capstan"))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The blob path of a sha256 (whether or not it exists).
    pub fn blob_path(&self, sha256: &str) -> PathBuf {
        self.root.join("blobs").join("sha256").join(sha256)
    }

    fn index_path(&self, a: &ResolvedArtifact) -> PathBuf {
        self.root
            .join("index")
            .join(a.component.name())
            .join(&a.version)
            .join(a.arch.as_str())
            .join(format!("{}.json", a.file_name))
    }

    /// Downloads (once), verifies and extracts `artifact`; see the module docs.
    pub fn fetch(&self, artifact: &ResolvedArtifact) -> Result<Fetched, ArtifactError> {
        let expected = match &artifact.checksum {
            ExpectedChecksum::Pinned(sha) => sha.to_ascii_lowercase(),
            ExpectedChecksum::MirrorFile(url) | ExpectedChecksum::Published(url) => {
                let text = self.read_small(url)?;
                parse_sha256_file(&text, &artifact.file_name).map_err(|reason| {
                    ArtifactError::BadChecksumFile {
                        url: url.clone(),
                        reason,
                    }
                })?
            }
        };

        if let Some(hit) = self.lookup(artifact, &expected) {
            return Ok(hit);
        }

        let download = self.blob_path(&expected);
        if !download.is_file() {
            self.download(artifact, &expected)?;
        }

        let binaries = if artifact.archive {
            self.extract(artifact, &download)?
        } else {
            let size = metadata(&download)?.len();
            set_mode(&download, 0o755)?;
            artifact
                .binaries
                .iter()
                .map(|b| IndexBinary {
                    name: b.name.clone(),
                    member: None,
                    sha256: expected.clone(),
                    size,
                })
                .collect()
        };

        let entry = IndexEntry {
            url: artifact.url.clone(),
            file_name: artifact.file_name.clone(),
            sha256: expected.clone(),
            binaries,
        };
        let json = serde_json::to_vec_pretty(&entry).map_err(|e| ArtifactError::Io {
            action: "encode the index entry for",
            path: self.index_path(artifact),
            source: io::Error::other(e),
        })?;
        self.write_atomic(&self.index_path(artifact), &json)?;
        Ok(self.fetched(artifact, &entry, false))
    }

    /// A cache hit: the index maps this artifact to `expected` and every blob is there.
    fn lookup(&self, artifact: &ResolvedArtifact, expected: &str) -> Option<Fetched> {
        let bytes = fs::read(self.index_path(artifact)).ok()?;
        let entry: IndexEntry = serde_json::from_slice(&bytes).ok()?;
        let names_match = entry.binaries.len() == artifact.binaries.len()
            && entry
                .binaries
                .iter()
                .zip(&artifact.binaries)
                .all(|(have, want)| have.name == want.name && have.member == want.member);
        let complete = entry.sha256 == expected
            && names_match
            && self.blob_path(&entry.sha256).is_file()
            && entry
                .binaries
                .iter()
                .all(|b| self.blob_path(&b.sha256).is_file());
        complete.then(|| self.fetched(artifact, &entry, true))
    }

    fn fetched(&self, artifact: &ResolvedArtifact, entry: &IndexEntry, hit: bool) -> Fetched {
        Fetched {
            artifact: artifact.clone(),
            sha256: entry.sha256.clone(),
            path: self.blob_path(&entry.sha256),
            binaries: entry
                .binaries
                .iter()
                .map(|b| CachedBinary {
                    name: b.name.clone(),
                    sha256: b.sha256.clone(),
                    size: b.size,
                    path: self.blob_path(&b.sha256),
                })
                .collect(),
            from_cache: hit,
        }
    }

    /// Streams the download into tmp/ while hashing; renames it into blobs/ when it matches.
    fn download(&self, artifact: &ResolvedArtifact, expected: &str) -> Result<(), ArtifactError> {
        let mut reader = self.open(&artifact.url)?;
        let mut tmp = TempFile::new(&self.root, &artifact.file_name)?;
        let (actual, _) =
            copy_hashing(&mut reader, &mut tmp).map_err(|e| ArtifactError::Download {
                url: artifact.url.clone(),
                reason: e.to_string(),
            })?;
        if actual != expected {
            // `tmp` is removed on drop: nothing reaches the cache.
            return Err(ArtifactError::ChecksumMismatch {
                file: artifact.file_name.clone(),
                url: artifact.url.clone(),
                expected: expected.to_string(),
                actual,
            });
        }
        tmp.persist(&self.blob_path(expected), 0o644)
    }

    /// Takes the wanted members out of a verified archive, each into its own blob.
    fn extract(
        &self,
        artifact: &ResolvedArtifact,
        archive: &Path,
    ) -> Result<Vec<IndexBinary>, ArtifactError> {
        let archive_err = |reason: String| ArtifactError::Archive {
            archive: artifact.file_name.clone(),
            reason,
        };
        let file = File::open(archive).map_err(|e| io_err("open", archive, e))?;
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(BufReader::new(file)));
        let wanted: Vec<(&str, String)> = artifact
            .binaries
            .iter()
            .filter_map(|b| b.member.as_deref().map(|m| (b.name.as_str(), clean(m))))
            .collect();
        let mut got: Vec<Option<IndexBinary>> = wanted.iter().map(|_| None).collect();
        let mut seen: Vec<String> = Vec::new();

        for entry in tar.entries().map_err(|e| archive_err(e.to_string()))? {
            let mut entry = entry.map_err(|e| archive_err(e.to_string()))?;
            let path = entry
                .path()
                .map_err(|e| archive_err(e.to_string()))?
                .to_string_lossy()
                .into_owned();
            let path = clean(&path);
            let Some(i) = wanted.iter().position(|(_, m)| *m == path) else {
                if seen.len() < 30 && !path.is_empty() {
                    seen.push(path);
                }
                continue;
            };
            if !entry.header().entry_type().is_file() {
                return Err(archive_err(format!("`{path}` is not a regular file")));
            }
            let mut tmp = TempFile::new(&self.root, wanted[i].0)?;
            let (sha, size) =
                copy_hashing(&mut entry, &mut tmp).map_err(|e| archive_err(e.to_string()))?;
            tmp.persist(&self.blob_path(&sha), 0o755)?;
            got[i] = Some(IndexBinary {
                name: wanted[i].0.to_string(),
                member: Some(wanted[i].1.clone()),
                sha256: sha,
                size,
            });
        }

        let mut out = Vec::with_capacity(got.len());
        for ((_, member), found) in wanted.iter().zip(got) {
            match found {
                Some(b) => out.push(b),
                None => {
                    return Err(ArtifactError::MissingMember {
                        archive: artifact.file_name.clone(),
                        member: member.clone(),
                        found: if seen.is_empty() {
                            "nothing".to_string()
                        } else {
                            seen.join(", ")
                        },
                    });
                }
            }
        }
        // Keep the catalog's member spelling (e.g. `./bridge`) in the index.
        for (b, spec) in out.iter_mut().zip(artifact.binaries.iter()) {
            b.member.clone_from(&spec.member);
        }
        Ok(out)
    }

    /// Opens a mirror URL for reading: `file://` from disk, http(s) through the agent.
    fn open(&self, url: &str) -> Result<Box<dyn Read>, ArtifactError> {
        let dl_err = |reason: String| ArtifactError::Download {
            url: url.to_string(),
            reason,
        };
        if let Some(path) = url.strip_prefix("file://") {
            let path = percent_decode(path);
            let file = File::open(&path).map_err(|e| dl_err(format!("{path}: {e}")))?;
            return Ok(Box::new(BufReader::new(file)));
        }
        if url.starts_with("https://") || url.starts_with("http://") {
            let agent = if is_loopback(url) {
                &self.direct
            } else {
                &self.agent
            };
            let response = agent.get(url).call().map_err(|e| match e {
                ureq::Error::StatusCode(code) => dl_err(format!("HTTP {code}")),
                other => dl_err(other.to_string()),
            })?;
            return Ok(Box::new(response.into_body().into_reader()));
        }
        Err(dl_err(
            "only https://, http:// and file:/// mirrors are supported".to_string(),
        ))
    }

    fn read_small(&self, url: &str) -> Result<String, ArtifactError> {
        let mut text = String::new();
        self.open(url)?
            .take(MAX_CHECKSUM_FILE)
            .read_to_string(&mut text)
            .map_err(|e| ArtifactError::BadChecksumFile {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
        Ok(text)
    }

    fn write_atomic(&self, dest: &Path, bytes: &[u8]) -> Result<(), ArtifactError> {
        let mut tmp = TempFile::new(&self.root, "index")?;
        tmp.write_all(bytes)
            .map_err(|e| io_err("write", &tmp.path, e))?;
        tmp.persist(dest, 0o644)
    }
}

/// Parses a `.sha256` file: the hex sum alone, `HASH  name` / `HASH *name` (sha256sum),
/// `SHA256 (name) = HASH` (BSD), optionally `sha256:`-prefixed; with several lines, the one
/// naming `file_name`. Returns the lowercase hex sum.
pub fn parse_sha256_file(text: &str, file_name: &str) -> Result<String, String> {
    let mut candidates: Vec<(String, Option<String>)> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (hash, name) = if let Some(rest) = line.strip_prefix("SHA256 (") {
            let (name, hash) = rest
                .split_once(") = ")
                .ok_or_else(|| format!("cannot read the line `{line}`"))?;
            (hash.trim().to_string(), Some(name.to_string()))
        } else {
            let mut parts = line.splitn(2, char::is_whitespace);
            let hash = parts.next().unwrap_or_default().to_string();
            let name = parts
                .next()
                .map(|n| n.trim().trim_start_matches('*').to_string())
                .filter(|n| !n.is_empty());
            (hash, name)
        };
        let hash = hash
            .strip_prefix("sha256:")
            .unwrap_or(&hash)
            .to_ascii_lowercase();
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "`{}` is not a sha256 (64 hex digits)",
                truncate(&hash, 80)
            ));
        }
        candidates.push((hash, name));
    }
    let basename = |n: &str| n.rsplit('/').next().unwrap_or(n).to_string();
    match candidates.as_slice() {
        [] => Err("it is empty".to_string()),
        [(hash, None)] => Ok(hash.clone()),
        _ => {
            let matching: Vec<&String> = candidates
                .iter()
                .filter(|(_, n)| n.as_deref().map(basename).as_deref() == Some(file_name))
                .map(|(h, _)| h)
                .collect();
            match matching.as_slice() {
                [hash] => Ok((*hash).clone()),
                [] => Err(format!(
                    "it names {}, not {file_name}",
                    candidates
                        .iter()
                        .map(|(_, n)| n.as_deref().unwrap_or("(no name)").to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                _ => Err(format!("it lists {file_name} more than once")),
            }
        }
    }
}

/// `http://127.0.0.1:8080/…`, `http://localhost/…`, `http://[::1]/…`.
fn is_loopback(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if host.starts_with('[') {
        host.split(']')
            .next()
            .unwrap_or_default()
            .trim_start_matches('[')
    } else {
        host.split(':').next().unwrap_or_default()
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn truncate(s: &str, n: usize) -> &str {
    s.char_indices().nth(n).map_or(s, |(i, _)| &s[..i])
}

/// `./bin/ctr` → `bin/ctr`.
fn clean(path: &str) -> String {
    let mut p = path;
    while let Some(rest) = p.strip_prefix("./") {
        p = rest;
    }
    p.trim_end_matches('/').to_string()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(u8::try_from(hi * 16 + lo).unwrap_or(b'?'));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn copy_hashing(reader: &mut dyn Read, writer: &mut dyn Write) -> io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        writer.write_all(&buf[..n])?;
        total += n as u64;
    }
    writer.flush()?;
    Ok((hex::encode(hasher.finalize()), total))
}

fn io_err(action: &'static str, path: &Path, source: io::Error) -> ArtifactError {
    ArtifactError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn metadata(path: &Path) -> Result<fs::Metadata, ArtifactError> {
    fs::metadata(path).map_err(|e| io_err("stat", path, e))
}

fn set_mode(path: &Path, mode: u32) -> Result<(), ArtifactError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| io_err("set the mode of", path, e))
}

/// A file in `{root}/tmp`, removed on drop unless persisted.
struct TempFile {
    path: PathBuf,
    file: Option<File>,
    done: bool,
}

impl TempFile {
    fn new(root: &Path, hint: &str) -> Result<Self, ArtifactError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir = root.join("tmp");
        fs::create_dir_all(&dir).map_err(|e| io_err("create", &dir, e))?;
        let hint: String = hint
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = dir.join(format!(
            "{hint}.{}.{}.part",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let file = File::create(&path).map_err(|e| io_err("create", &path, e))?;
        Ok(Self {
            path,
            file: Some(file),
            done: false,
        })
    }

    /// fsyncs, sets `mode` and renames into `dest` (creating its folder).
    fn persist(mut self, dest: &Path, mode: u32) -> Result<(), ArtifactError> {
        if let Some(file) = self.file.take() {
            file.sync_all().map_err(|e| io_err("sync", &self.path, e))?;
        }
        set_mode(&self.path, mode)?;
        if let Some(dir) = dest.parent() {
            fs::create_dir_all(dir).map_err(|e| io_err("create", dir, e))?;
        }
        fs::rename(&self.path, dest).map_err(|e| io_err("move into place", dest, e))?;
        self.done = true;
        Ok(())
    }
}

impl Write for TempFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.file.as_mut() {
            Some(f) => f.write(buf),
            None => Err(io::Error::other("temporary file already closed")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().map_or(Ok(()), File::flush)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        drop(self.file.take());
        if !self.done {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "3e0c265fe80f3ea1b7271a00879d4dbd5e6ea1e91ecf067670c983e07c33a6f4";

    #[test]
    fn sha256_files_in_every_common_form() {
        assert_eq!(parse_sha256_file(H, "kubelet").unwrap(), H);
        assert_eq!(parse_sha256_file(&format!("{H}\n"), "kubelet").unwrap(), H);
        assert_eq!(
            parse_sha256_file(&format!("{}  kubelet\n", H.to_uppercase()), "kubelet").unwrap(),
            H
        );
        assert_eq!(
            parse_sha256_file(&format!("{H} *out/kubelet"), "kubelet").unwrap(),
            H
        );
        assert_eq!(
            parse_sha256_file(&format!("SHA256 (kubelet) = {H}"), "kubelet").unwrap(),
            H
        );
        assert_eq!(
            parse_sha256_file(&format!("sha256:{H}"), "kubelet").unwrap(),
            H
        );
        let other = "0".repeat(64);
        let sums = format!("{other}  runc.arm64\n{H}  runc.amd64\n");
        assert_eq!(parse_sha256_file(&sums, "runc.amd64").unwrap(), H);
        assert!(
            parse_sha256_file(&sums, "runc.s390x")
                .unwrap_err()
                .contains("runc.arm64, runc.amd64")
        );
        assert!(parse_sha256_file(&format!("{H}  kubectl"), "kubelet").is_err());
        assert!(
            parse_sha256_file("", "kubelet")
                .unwrap_err()
                .contains("empty")
        );
        assert!(
            parse_sha256_file("<html>404</html>", "kubelet")
                .unwrap_err()
                .contains("not a sha256")
        );
    }

    #[test]
    fn member_paths_are_compared_without_leading_dot() {
        assert_eq!(clean("./bridge"), "bridge");
        assert_eq!(clean("bin/ctr"), "bin/ctr");
        assert_eq!(percent_decode("/srv/my%20mirror/x"), "/srv/my mirror/x");
        assert!(is_loopback("http://127.0.0.1:8080/x"));
        assert!(is_loopback("http://localhost/x"));
        assert!(is_loopback("http://[::1]:80/x"));
        assert!(!is_loopback("https://dl.k8s.io/release"));
        assert!(!is_loopback("https://127.0.0.1.example.com/x"));
    }
}
