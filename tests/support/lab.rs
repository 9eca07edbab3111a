//! A lab of container hosts for one test binary, made with the real `capstan lab up` and
//! always removed with `capstan lab down`, also when the test fails.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Lab {
    pub name: String,
    pub dir: tempfile::TempDir,
    flags: Vec<String>,
}

impl Lab {
    /// Starts a lab named `capstan-t-<what>-<pid>` with the given `lab up` flags.
    pub fn up(what: &str, flags: &[&str]) -> Lab {
        let name = format!("ct-{what}-{}", std::process::id());
        let dir = tempfile::tempdir().expect("temp dir");
        let lab = Lab {
            name,
            dir,
            flags: flags.iter().map(|f| (*f).to_string()).collect(),
        };
        lab.bring_up();
        lab
    }

    /// Runs `lab up` (again): starts stopped hosts and waits until every host serves SSH.
    pub fn bring_up(&self) {
        let lab = self;
        let out = capstan()
            .args(["lab", "up", "--name", &lab.name, "--out"])
            .arg(lab.dir.path())
            .args(&lab.flags)
            .output()
            .expect("run capstan lab up");
        assert!(
            out.status.success(),
            "lab up failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn inventory(&self) -> PathBuf {
        self.dir.path().join("cluster.yaml")
    }

    pub fn container(&self, host: &str) -> String {
        format!("{}-{host}", self.name)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = capstan()
            .args(["lab", "down", "--name", &self.name, "--out"])
            .arg(self.dir.path())
            .output();
    }
}

pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The capstan binary under test.
pub fn capstan() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_capstan"));
    capstan_env(&mut cmd);
    cmd
}

/// The environment capstan runs in under test (also when `cmd` starts it indirectly): no
/// inventory or SSH agent from the caller's, no colours.
pub fn capstan_env(cmd: &mut Command) -> &mut Command {
    cmd.env_remove("CAPSTAN_INVENTORY")
        .env_remove("SSH_AUTH_SOCK")
        .env("NO_COLOR", "1")
}

#[allow(dead_code)]
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Real kubectl on this machine with the operator's admin.conf (`.capstan/admin.conf` beside
/// the inventory): stdout, or stderr as the error.
#[allow(dead_code)]
pub fn kubectl_admin(inv: &Path, args: &[&str]) -> Result<String, String> {
    let conf = inv
        .parent()
        .expect("the inventory is in a folder")
        .join(".capstan/admin.conf");
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&conf)
        .arg("--request-timeout=10s")
        .args(args)
        .output()
        .expect("run kubectl");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// This machine's real etcdctl reads the snapshot file at `path` (`snapshot status`).
#[allow(dead_code)]
pub fn assert_snapshot_readable(path: &Path) {
    let status = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "status", "-w", "json"])
        .arg(path)
        .output()
        .expect("etcdctl");
    assert!(
        status.status.success(),
        "etcdctl snapshot status {}: {}",
        path.display(),
        String::from_utf8_lossy(&status.stderr)
    );
}

/// The test bed (tests/lab/prepare.sh): stand-ins at every version, the artifact mirror
/// and the image store, under the target dir; skipped when up to date. Once per test binary.
#[allow(dead_code)]
pub fn bed() -> &'static Path {
    static BED: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BED.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-bed");
        let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lab/prepare.sh"))
            .arg(&dir)
            // The lab image is built by the test command before any test runs.
            .env("CAPSTAN_SKIP_LAB_IMAGE", "1")
            .output()
            .expect("run prepare.sh");
        assert!(
            out.status.success(),
            "prepare.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}

/// `lab up` flags that give the hosts the bed's mirror and image store.
#[allow(dead_code)]
pub fn bed_flags() -> Vec<String> {
    let bed = bed();
    vec![
        "--mirror".into(),
        bed.join("mirror").display().to_string(),
        "--mount".into(),
        format!("{}:/var/lib/standin-images", bed.join("images").display()),
    ]
}

/// A lab whose hosts have the bed's mirror and image store (see [`bed_flags`]).
#[allow(dead_code)]
pub fn bed_lab(what: &str, flags: &[&str]) -> Lab {
    let mut all: Vec<String> = flags.iter().map(|f| (*f).to_string()).collect();
    all.extend(bed_flags());
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    Lab::up(what, &refs)
}

/// The output of a capstan run.
#[allow(dead_code)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

#[allow(dead_code)]
impl Run {
    /// Both streams, for assertion messages.
    pub fn all(&self) -> String {
        format!("--- stdout\n{}\n--- stderr\n{}", self.stdout, self.stderr)
    }
}

/// Runs capstan with `args` and `-i inv`, with the artifact cache under the lab's dir.
#[allow(dead_code)]
pub fn run_capstan(args: &[&str], inv: &Path) -> Run {
    run_capstan_cached(args, inv, &inv.parent().unwrap_or(inv).join("cache"))
}

/// [`run_capstan`] with the artifact cache in `cache`.
#[allow(dead_code)]
pub fn run_capstan_cached(args: &[&str], inv: &Path, cache: &Path) -> Run {
    let out = capstan()
        .args(args)
        .arg("-i")
        .arg(inv)
        .arg("--cache-dir")
        .arg(cache)
        .output()
        .expect("run capstan");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `docker` arguments running the host's real etcdctl against its local member over TLS,
/// with the healthcheck client cert.
#[allow(dead_code)]
pub fn etcdctl_on(container: &str) -> Vec<&str> {
    vec![
        "exec",
        container,
        "/usr/local/bin/etcdctl",
        "--endpoints=https://127.0.0.1:2379",
        "--cacert=/etc/kubernetes/pki/etcd/ca.crt",
        "--cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt",
        "--key=/etc/kubernetes/pki/etcd/healthcheck-client.key",
    ]
}

/// Runs `script` on `host`: (exit code, stdout + stderr).
#[allow(dead_code)]
pub fn sh(lab: &Lab, host: &str, script: &str) -> (i32, String) {
    let out = Command::new("docker")
        .args(["exec", &lab.container(host), "sh", "-c", script])
        .output()
        .expect("run docker exec");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Retries `script` on `host` until it exits 0 and `ok` holds for its output.
#[allow(dead_code)]
pub fn wait_for(
    lab: &Lab,
    host: &str,
    script: &str,
    ok: impl Fn(&str) -> bool,
    what: &str,
) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let (code, out) = sh(lab, host, script);
        if code == 0 && ok(&out) {
            return out;
        }
        if std::time::Instant::now() > deadline {
            let (_, journal) = sh(
                lab,
                host,
                "journalctl --no-pager -n 60 -u etcd -u kubelet -u containerd 2>&1 | tail -60",
            );
            panic!("{what}: not reached in 120 s; last output:\n{out}\njournal:\n{journal}");
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
}

/// Waits until the API server answers /readyz `ok` on `host`, through admin.conf.
#[allow(dead_code)]
pub fn wait_api_ready(lab: &Lab, host: &str) {
    wait_for(
        lab,
        host,
        "kubectl --kubeconfig /etc/kubernetes/admin.conf get --raw /readyz",
        |o| o.trim() == "ok",
        "API server ready",
    );
}

/// The control-plane static pods of `host` are in kube-system, as `kubectl` (a command
/// with its kubeconfig) lists them.
#[allow(dead_code)]
pub fn assert_control_plane_pods(lab: &Lab, host: &str, kubectl: &str) {
    let (_, pods) = sh(
        lab,
        host,
        &format!("{kubectl} -n kube-system get pods -o name"),
    );
    for pod in [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
    ] {
        assert!(pods.contains(&format!("pod/{pod}-{host}\n")), "{pods}");
    }
}

/// Sets `cluster.versions.KEY` (the lab writes the versions its mirror names) to `version`.
pub fn set_node_version(inv: &Path, key: &str, version: &str) {
    let text = std::fs::read_to_string(inv).expect("inventory");
    let prefix = format!("    {key}: ");
    assert!(
        text.lines().any(|l| l.starts_with(&prefix)),
        "the inventory names no {key} version:\n{text}"
    );
    let edited: String = text
        .lines()
        .map(|l| {
            if l.starts_with(&prefix) {
                format!("{prefix}{version}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(inv, edited).expect("write inventory");
}

/// Whether a line of `out` says `what` of `host`: capstan says it once for every host it is
/// true of (`cp1, w2 no changes`), optionally indented (a phase's `  w1 changed (kubelet)`).
pub fn said_of(out: &str, host: &str, what: &str) -> bool {
    out.lines().any(|l| {
        l.trim_start()
            .split_once(&format!(" {what}"))
            .is_some_and(|(hosts, _)| hosts.split(", ").any(|h| h == host))
    })
}
