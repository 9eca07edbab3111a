//! The version stamp: a trailer appended to each built copy of the binary, read back from
//! /proc/self/exe, so every version has its own bytes and sha256.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

const MAGIC: &str = "\n#CAPSTAN-STANDIN-VERSION:";

/// The version stamped into the running copy.
pub fn current() -> Result<String, String> {
    let exe = std::fs::canonicalize("/proc/self/exe")
        .map_err(|e| format!("cannot resolve /proc/self/exe: {e}"))?;
    read_stamp(&exe)?.ok_or_else(|| {
        format!(
            "{} carries no version stamp: build stamped copies with tests/lab/build-standins.sh \
             (or `standin stamp SRC DEST vX.Y.Z`)",
            exe.display()
        )
    })
}

/// Reads the stamp at the end of `path`, if any.
pub fn read_stamp(path: &Path) -> Result<Option<String>, String> {
    let mut f =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let len = f
        .metadata()
        .map_err(|e| format!("cannot stat {}: {e}", path.display()))?
        .len();
    let tail_len = len.min(128);
    f.seek(SeekFrom::Start(len - tail_len))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let tail = String::from_utf8_lossy(&tail);
    let Some(at) = tail.rfind(MAGIC) else {
        return Ok(None);
    };
    let rest = &tail[at + MAGIC.len()..];
    let Some(v) = rest.strip_suffix('\n') else {
        return Ok(None);
    };
    Ok(valid_version(v).then(|| v.to_string()))
}

/// `vMAJOR.MINOR.PATCH`.
pub fn valid_version(v: &str) -> bool {
    let Some(rest) = v.strip_prefix('v') else {
        return false;
    };
    let parts: Vec<&str> = rest.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// (major, minor) of a valid version.
pub fn major_minor(v: &str) -> (String, String) {
    let mut it = v.trim_start_matches('v').split('.');
    (
        it.next().unwrap_or("1").to_string(),
        it.next().unwrap_or("0").to_string(),
    )
}

/// Writes a copy of `src` (without any previous stamp) to `dest` with `version` stamped.
pub fn stamp(src: &Path, dest: &Path, version: &str) -> Result<(), String> {
    if !valid_version(version) {
        return Err(format!(
            "version must be vMAJOR.MINOR.PATCH, not {version:?}"
        ));
    }
    let mut bytes =
        std::fs::read(src).map_err(|e| format!("cannot read {}: {e}", src.display()))?;
    if read_stamp(src)?.is_some() {
        let tail_start = bytes.len().saturating_sub(128);
        let tail = String::from_utf8_lossy(&bytes[tail_start..]).into_owned();
        if let Some(at) = tail.rfind(MAGIC) {
            bytes.truncate(tail_start + tail[..at].len());
        }
    }
    bytes.extend_from_slice(format!("{MAGIC}{version}\n").as_bytes());
    let tmp = dest.with_extension("stamp-tmp");
    {
        let mut f = std::fs::File::create(&tmp)
            .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
        f.write_all(&bytes)
            .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("cannot chmod {}: {e}", tmp.display()))?;
    }
    std::fs::rename(&tmp, dest).map_err(|e| format!("cannot rename to {}: {e}", dest.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_roundtrip_and_restamp() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::write(&src, b"\x7fELF binary bytes").unwrap();
        assert_eq!(read_stamp(&src).unwrap(), None);
        let a = dir.path().join("a");
        stamp(&src, &a, "v1.32.4").unwrap();
        assert_eq!(read_stamp(&a).unwrap().as_deref(), Some("v1.32.4"));
        let b = dir.path().join("b");
        stamp(&a, &b, "v1.33.1").unwrap();
        assert_eq!(read_stamp(&b).unwrap().as_deref(), Some("v1.33.1"));
        let raw = std::fs::read(&b).unwrap();
        assert!(raw.starts_with(b"\x7fELF binary bytes\n#CAPSTAN"));
        assert_eq!(raw.len(), std::fs::read(&a).unwrap().len());
        assert!(stamp(&src, &b, "1.2").is_err());
    }
}
