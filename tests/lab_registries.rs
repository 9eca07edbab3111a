//! `cluster.registries` against a real registry (issue 16): Debian's docker-registry
//! (distribution 2.8) in a container on the lab's internal network, serving one store twice:
//! with TLS (a CA this test makes) and htpasswd basic auth on :5443, and plain http on
//! :5000. The test packs a one-layer OCI image and pushes it there with the registry API.
//! After `capstan apply`, the lab host's real containerd pulls it through the CRI (the
//! kubelet's PullImage call) by its upstream name docker.io/library/capstan-test:1 through
//! the mirror, from the private registry with its credentials, and over plain http. Only
//! hosts.toml files change: containerd is never restarted. A second run changes nothing;
//! wrong credentials make the pull fail with the registry's 401 in containerd's log; a
//! registry taken out of the inventory takes its folder with it. No password or
//! Authorization header shows in any output, at -vvv or as JSON.

mod support;

use std::io::Write as _;
use std::path::Path;

use base64::Engine as _;
use support::lab::{Lab, Run, bed_lab, capstan, docker, sh};
use support::oci::{oci_image, sha256};
use support::secrets::assert_no_secret;

/// The registry's name on the lab network (a network alias of its container).
const REGISTRY: &str = "registry.capstan.test";
const REPO: &str = "library/capstan-test";
const USER: &str = "capstan";
const PASSWORD: &str = "reg-Pa55-7e1f0c9a";
/// The test's CRI client (tests/lab/cri-pull.py): the lab image has python3, no crictl.
const CRI_PULL: &str = include_str!("lab/cri-pull.py");

/// The registry container; removed before the lab (whose network it is on) goes.
struct RegistryContainer(String);

impl Drop for RegistryContainer {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", &self.0])
            .output();
    }
}

/// `capstan ARGS -i INV` with the artifact cache in `cache` and the password in the
/// environment (the mirror reads it from there, the private registry from a file).
fn run(args: &[&str], inv: &Path, cache: &Path) -> Run {
    let out = capstan()
        .args(args)
        .arg("-i")
        .arg(inv)
        .arg("--cache-dir")
        .arg(cache)
        .env("CAPSTAN_TEST_REGISTRY_PASSWORD", PASSWORD)
        .output()
        .expect("run capstan");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn ok(r: &Run, what: &str) {
    assert_eq!(r.code, 0, "{what}:\n{}", r.all());
}

/// containerd's main PID and start time on cp1.
fn containerd_started(lab: &Lab) -> String {
    let (code, out) = sh(
        lab,
        "cp1",
        "systemctl show -p MainPID -p ExecMainStartTimestampMonotonic containerd",
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        !out.contains("MainPID=0"),
        "containerd is not running: {out}"
    );
    out
}

/// Pulls `image` on cp1 through containerd's CRI: (exit code, output).
fn cri_pull(lab: &Lab, image: &str) -> (i32, String) {
    let mut child = std::process::Command::new("docker")
        .args(["exec", "-i", &lab.container("cp1"), "python3", "-", image])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("docker exec");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(CRI_PULL.as_bytes())
        .expect("send the CRI client");
    let out = child.wait_with_output().expect("wait for the pull");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Pushes the image to `base` (`http://IP:5000`) as REPO:`tag` with the registry API:
/// each blob by a monolithic upload (POST, then PUT with its digest), then the manifest.
fn push(base: &str, tag: &str, config: &[u8], layer: &[u8], manifest: &[u8]) {
    for blob in [config, layer] {
        let started = ureq::post(format!("{base}/v2/{REPO}/blobs/uploads/"))
            .send_empty()
            .expect("start a blob upload");
        let location = started
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .expect("the upload's location")
            .to_string();
        let url = if location.starts_with('/') {
            format!("{base}{location}")
        } else {
            location
        };
        let sep = if url.contains('?') { '&' } else { '?' };
        ureq::put(format!("{url}{sep}digest={}", sha256(blob)))
            .content_type("application/octet-stream")
            .send(blob)
            .expect("upload a blob");
    }
    ureq::put(format!("{base}/v2/{REPO}/manifests/{tag}"))
        .content_type("application/vnd.oci.image.manifest.v1+json")
        .send(manifest)
        .expect("put the manifest");
}

/// The CA, and the registry's serving pair for REGISTRY, made here.
fn tls() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "capstan registry test CA");
    let ca_cert = ca.self_signed(&ca_key).expect("CA");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().expect("key");
    let leaf = rcgen::CertificateParams::new(vec![REGISTRY.to_string()]).expect("params");
    let cert = leaf.signed_by(&key, &issuer).expect("serving cert");
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

/// Starts the registry on the lab's network: `docker-registry` from this machine (Debian's
/// package, tests/lab/install-deps.sh) in a container of the lab image, serving one store
/// with TLS + htpasswd on :5443 and plain http on :5000. Returns it and its address.
fn start_registry(lab: &Lab, work: &Path, cert: &str, key: &str) -> (RegistryContainer, String) {
    let htpasswd = std::process::Command::new("htpasswd")
        .args(["-nbB", USER, PASSWORD])
        .output()
        .expect("htpasswd (apache2-utils; tests/lab/install-deps.sh)");
    assert!(htpasswd.status.success(), "htpasswd failed");
    std::fs::write(work.join("htpasswd"), &htpasswd.stdout).expect("write");
    std::fs::write(work.join("server.crt"), cert).expect("write");
    std::fs::write(work.join("server.key"), key).expect("write");
    let config = |addr: &str, extra: &str| {
        format!(
            "version: 0.1\nlog: {{level: info}}\nstorage:\n  filesystem: {{rootdirectory: /var/lib/registry}}\nhttp:\n  addr: {addr}\n  secret: capstan-lab-test{extra}\n"
        )
    };
    std::fs::write(
        work.join("tls.yml"),
        config(
            ":5443",
            "\n  tls: {certificate: /etc/reg/server.crt, key: /etc/reg/server.key}\nauth:\n  htpasswd: {realm: capstan-test, path: /etc/reg/htpasswd}",
        ),
    )
    .expect("write");
    std::fs::write(work.join("plain.yml"), config(":5000", "")).expect("write");
    let name = format!("{}-registry", lab.name);
    let image = docker(&[
        "inspect",
        "--format",
        "{{.Config.Image}}",
        &lab.container("cp1"),
    ]);
    docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        &format!("{}-net", lab.name),
        "--network-alias",
        REGISTRY,
        "-v",
        "/usr/bin/docker-registry:/usr/bin/docker-registry:ro",
        "-v",
        &format!("{}:/etc/reg:ro", work.display()),
        "--entrypoint",
        "/bin/sh",
        image.trim(),
        "-c",
        "docker-registry serve /etc/reg/tls.yml & exec docker-registry serve /etc/reg/plain.yml",
    ]);
    let container = RegistryContainer(name.clone());
    let ip = docker(&[
        "inspect",
        "--format",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        &name,
    ])
    .trim()
    .to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while ureq::get(format!("http://{ip}:5000/v2/")).call().is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the registry did not start: {}",
            docker(&["logs", &name])
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    (container, ip)
}

/// The inventory's `cluster.registries`, inserted before its `ssh:` block.
fn registries(inv: &Path, lab_text: &str, block: &str) {
    let text = lab_text.replacen("\nssh:\n", &format!("\n  registries:\n{block}ssh:\n"), 1);
    assert_ne!(text, lab_text, "no ssh block in the lab's inventory");
    std::fs::write(inv, text).expect("write the inventory");
}

#[test]
fn containerd_pulls_through_mirrors_and_private_registries() {
    let lab = bed_lab("reg", &["--control-planes", "1"]);
    let inv = lab.inventory();
    let dir = inv.parent().expect("the lab's folder").to_path_buf();
    let lab_text = std::fs::read_to_string(&inv).expect("the lab's inventory");
    let work = tempfile::tempdir().expect("temp dir");
    let cache = work.path().join("cache");
    let (ca, cert, key) = tls();
    let (registry, ip) = start_registry(&lab, work.path(), &cert, &key);

    // The image: one layer holding a small file, pushed over plain http.
    let (config, layer, manifest) = oci_image("hello", b"#!/bin/sh\necho capstan registry test\n");
    push(
        &format!("http://{ip}:5000"),
        "1",
        &config,
        &layer,
        &manifest,
    );
    let image_id = sha256(&config);

    // containerd from the mirror, no registries yet.
    let roles = ["apply", "--roles", "common,containerd"];
    ok(&run(&roles, &inv, &cache), "first apply");
    let started = containerd_started(&lab);
    let (code, out) = cri_pull(&lab, &format!("{REGISTRY}:5000/{REPO}:1"));
    assert_ne!(
        code, 0,
        "plain http must not work before it is configured: {out}"
    );

    // The registries: Docker Hub through the TLS mirror (password from the environment),
    // the private registry with its CA and a password file, the plain http one.
    std::fs::write(dir.join("registry-ca.pem"), &ca).expect("write");
    std::fs::write(dir.join("registry.pass"), format!("{PASSWORD}\n")).expect("write");
    let block = format!(
        "    docker.io:\n      mirrors:\n        - url: https://{REGISTRY}:5443\n          ca_file: registry-ca.pem\n          username: {USER}\n          password_env: CAPSTAN_TEST_REGISTRY_PASSWORD\n\
         \x20   {REGISTRY}:5443:\n      server: {{ca_file: registry-ca.pem, username: {USER}, password_file: registry.pass}}\n\
         \x20   {REGISTRY}:5000:\n      server: {{url: http://{REGISTRY}:5000}}\n"
    );
    registries(&inv, &lab_text, &block);
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let secrets = vec![PASSWORD.to_string(), basic.clone()];
    let certs_d = "/etc/containerd/certs.d";
    let dry = run(
        &[
            "apply",
            "--roles",
            "common,containerd",
            "--dry-run",
            "-vvv",
            "--output",
            "json",
        ],
        &inv,
        &cache,
    );
    ok(&dry, "dry run");
    assert_no_secret(&dry, "apply --dry-run -vvv --output json", &secrets);
    assert!(dry.stdout.contains("(secret, changed)"), "{}", dry.stdout);
    let applied = run(
        &["apply", "--roles", "common,containerd", "-vvv"],
        &inv,
        &cache,
    );
    ok(&applied, "apply with registries");
    assert_no_secret(&applied, "apply -vvv", &secrets);
    let out = &applied.stdout;
    for want in [
        format!("create file {certs_d}/docker.io/hosts.toml"),
        format!("create file {certs_d}/docker.io/mirror-1-ca.crt"),
        format!("create file {certs_d}/{REGISTRY}:5443/hosts.toml"),
        format!("create file {certs_d}/{REGISTRY}:5000/hosts.toml"),
    ] {
        assert!(out.contains(&want), "`{want}` not in:\n{out}");
    }
    assert!(
        !out.contains("restart unit"),
        "only hosts.toml changed: {out}"
    );
    assert_eq!(
        containerd_started(&lab),
        started,
        "containerd was restarted"
    );
    let (_, modes) = sh(
        &lab,
        "cp1",
        &format!("stat -c '%a %n' {certs_d}/*/hosts.toml {certs_d}/*/*.crt"),
    );
    for want in [
        format!("600 {certs_d}/docker.io/hosts.toml"),
        format!("600 {certs_d}/{REGISTRY}:5443/hosts.toml"),
        format!("644 {certs_d}/{REGISTRY}:5000/hosts.toml"),
        format!("644 {certs_d}/docker.io/mirror-1-ca.crt"),
    ] {
        assert!(modes.contains(&want), "`{want}` not in:\n{modes}");
    }

    // Three pulls through the CRI, each the pushed image.
    for image in [
        format!("docker.io/{REPO}:1"),
        format!("{REGISTRY}:5443/{REPO}:1"),
        format!("{REGISTRY}:5000/{REPO}:1"),
    ] {
        let (code, out) = cri_pull(&lab, &image);
        let (_, journal) = sh(
            &lab,
            "cp1",
            "journalctl --no-pager -u containerd | tail -20",
        );
        assert_eq!(code, 0, "pull {image}: {out}\n{journal}");
        assert_eq!(out.trim(), image_id, "pull {image}");
    }
    // The mirror served Docker Hub's name: its log has the authenticated pull.
    let logs = docker(&["logs", &registry.0]);
    assert!(
        logs.contains(&format!("user.name=\"{USER}\"")) || logs.contains(USER),
        "{logs}"
    );

    // Nothing to do the second time.
    let again = run(&roles, &inv, &cache);
    ok(&again, "second apply");
    assert!(again.stdout.contains("0 changed"), "{}", again.stdout);

    // Wrong credentials: the hosts.toml changes (a secret), the pull fails with the 401.
    std::fs::write(dir.join("registry.pass"), "not-the-password\n").expect("write");
    let wrong = run(&roles, &inv, &cache);
    ok(&wrong, "apply with a wrong password");
    assert!(
        wrong
            .stdout
            .contains(&format!("update file {certs_d}/{REGISTRY}:5443/hosts.toml"))
            && wrong.stdout.contains("(secret, changed)"),
        "{}",
        wrong.stdout
    );
    assert!(
        !wrong.stdout.contains("not-the-password"),
        "{}",
        wrong.stdout
    );
    sh(
        &lab,
        "cp1",
        &format!("ctr -n k8s.io images rm {REGISTRY}:5443/{REPO}:1"),
    );
    let (_, before) = sh(
        &lab,
        "cp1",
        "journalctl --no-pager -u containerd | grep -c '401 Unauthorized'",
    );
    let (code, out) = cri_pull(&lab, &format!("{REGISTRY}:5443/{REPO}:1"));
    assert_ne!(code, 0, "a pull with a wrong password worked: {out}");
    let (_, after) = sh(
        &lab,
        "cp1",
        "journalctl --no-pager -u containerd | grep -c '401 Unauthorized'",
    );
    let count = |s: &str| s.trim().parse::<u32>().unwrap_or(0);
    assert!(
        count(&after) > count(&before),
        "no 401 in containerd's log ({before} -> {after})"
    );
    assert_eq!(
        containerd_started(&lab),
        started,
        "containerd was restarted"
    );

    // The plain http registry leaves the inventory: its folder goes, the others stay.
    std::fs::write(dir.join("registry.pass"), format!("{PASSWORD}\n")).expect("write");
    let block: String = block
        .lines()
        .filter(|l| !l.contains(":5000"))
        .flat_map(|l| [l, "\n"])
        .collect();
    registries(&inv, &lab_text, &block);
    let removed = run(&roles, &inv, &cache);
    ok(&removed, "apply without the plain http registry");
    assert!(
        removed
            .stdout
            .contains("run command remove-registries-not-in-the-inventory"),
        "{}",
        removed.stdout
    );
    let (_, listing) = sh(&lab, "cp1", &format!("ls {certs_d}"));
    assert_eq!(
        listing.split_whitespace().collect::<Vec<_>>(),
        ["docker.io", &format!("{REGISTRY}:5443")],
        "{listing}"
    );
    let last = run(&roles, &inv, &cache);
    ok(&last, "last apply");
    assert!(last.stdout.contains("0 changed"), "{}", last.stdout);
    assert_eq!(
        containerd_started(&lab),
        started,
        "containerd was restarted"
    );
    let (_, journal) = sh(&lab, "cp1", "journalctl --no-pager");
    assert!(
        !journal.contains(PASSWORD) && !journal.contains(&basic),
        "the host's journal has the password"
    );
    drop(registry);
}
