//! The container lab against the real Docker engine: `capstan::lab::up` and `down`.
//!
//! The test makes its own uniquely named lab on an internal network and always removes it
//! (a Drop guard), also when an assertion fails. It talks only to the lab's containers.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Once;
use std::time::Instant;

use capstan::lab::{self, HostAction, LabSpec, LabSummary};

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

fn docker(args: &[&str]) -> String {
    let out = run("docker", args);
    assert!(out.status.success(), "docker {args:?}: {}", stderr(&out));
    stdout(&out)
}

fn exec(container: &str, cmd: &str) -> Output {
    run("docker", &["exec", container, "sh", "-c", cmd])
}

/// Builds the lab image when it is missing (the script skips a present image).
fn ensure_image() {
    static BUILD: Once = Once::new();
    BUILD.call_once(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lab/build-image.sh");
        let out = run(script.to_str().unwrap(), &[lab::DEFAULT_IMAGE]);
        assert!(
            out.status.success(),
            "build-image.sh failed:\n{}\n{}",
            stdout(&out),
            stderr(&out)
        );
    });
}

/// A lab that is removed when the test ends, however it ends.
struct LabGuard {
    name: String,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl LabGuard {
    fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("t-{tag}-{}-{nanos}", std::process::id());
        let dir = tempfile::tempdir().unwrap();
        Self {
            name,
            out: dir.path().join("lab"),
            _dir: dir,
        }
    }

    fn spec(&self, control_planes: u32, workers: u32) -> LabSpec {
        LabSpec {
            control_planes,
            workers,
            out: self.out.clone(),
            ..LabSpec::new(self.name.clone())
        }
    }
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        if let Err(e) = lab::down(&self.name, &self.out) {
            eprintln!("cleaning up lab {}: {e}", self.name);
        }
    }
}

fn ssh(guard: &LabGuard, known_hosts: &Path, user: &str, addr: &str, cmd: &str) -> Output {
    let identity = guard.out.join("id_ed25519");
    run(
        "ssh",
        &[
            "-F",
            "/dev/null",
            "-i",
            identity.to_str().unwrap(),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "IdentityAgent=none",
            "-o",
            &format!("UserKnownHostsFile={}", known_hosts.display()),
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=5",
            &format!("{user}@{addr}"),
            cmd,
        ],
    )
}

fn labelled(kind: &[&str], name: &str) -> Vec<String> {
    let filter = format!("label=capstan.lab={name}");
    let mut args = kind.to_vec();
    let format = if kind[0] == "ps" {
        "{{.Names}}"
    } else {
        "{{.Name}}"
    };
    args.extend(["--filter", &filter, "--format", format]);
    docker(&args)
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

fn hosts_of(summary: &LabSummary) -> Vec<(String, String)> {
    summary
        .hosts
        .iter()
        .map(|h| (h.name.clone(), h.address.to_string()))
        .collect()
}

#[test]
fn lab_up_twice_then_down() {
    ensure_image();
    let guard = LabGuard::new("updown");
    let shared = tempfile::tempdir().unwrap();
    std::fs::write(
        shared.path().join("hello.txt"),
        "from the operator machine\n",
    )
    .unwrap();
    let mount = lab::parse_mount(&format!("{}:/srv/shared", shared.path().display())).unwrap();
    let spec = LabSpec {
        mounts: vec![mount],
        ..guard.spec(1, 1)
    };

    let started = Instant::now();
    let summary = lab::up(&spec).unwrap_or_else(|e| panic!("lab up: {e}"));
    eprintln!(
        "{summary}\n(up took {:.1} s)",
        started.elapsed().as_secs_f64()
    );

    // --- what up reports and writes ----------------------------------------------------------
    let names: Vec<&str> = summary.hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["cp1", "w1"]);
    assert!(
        summary
            .hosts
            .iter()
            .all(|h| h.action == HostAction::Created)
    );
    assert_eq!(summary.inventory, guard.out.join("cluster.yaml"));
    let inventory =
        capstan::inventory::load(&summary.inventory).expect("the lab's inventory loads");
    assert_eq!(inventory.cluster.name, guard.name);
    let inv_hosts: Vec<(String, String)> = inventory
        .hosts
        .iter()
        .map(|h| (h.name.clone(), h.address.clone()))
        .collect();
    assert_eq!(inv_hosts, hosts_of(&summary));
    let key_mode = std::fs::metadata(guard.out.join("id_ed25519"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
    let state_dir = guard.out.join(".capstan");
    assert_eq!(
        std::fs::metadata(&state_dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let known_hosts = state_dir.join("known_hosts");
    let known_text = std::fs::read_to_string(&known_hosts).unwrap();
    for h in &summary.hosts {
        assert!(
            known_text.contains(&format!("{} ssh-ed25519 AAAA", h.address)),
            "{known_text}"
        );
    }

    // --- the network: internal, labelled, no default route in the hosts -----------------------
    let net = format!("{}-net", guard.name);
    assert_eq!(
        docker(&["network", "inspect", "-f", "{{.Internal}}", &net]),
        "true"
    );
    assert_eq!(
        labelled(&["network", "ls"], &guard.name),
        std::slice::from_ref(&net)
    );

    let mut machine_ids = BTreeSet::new();
    for h in &summary.hosts {
        let c = &h.container;
        let addr = h.address.to_string();

        // systemd is PID 1 and booted
        let state = stdout(&exec(c, "systemctl is-system-running"));
        assert!(
            state == "running" || state == "degraded",
            "{c}: systemd is {state}"
        );
        assert_eq!(stdout(&exec(c, "cat /proc/1/comm")), "systemd");
        assert_eq!(stdout(&exec(c, "hostname")), h.name);
        let id = stdout(&exec(c, "cat /etc/machine-id"));
        assert!(
            id.len() == 32 && id.chars().all(|ch| ch.is_ascii_hexdigit()),
            "{c}: {id}"
        );
        machine_ids.insert(id);

        // haproxy and nginx installed, left to capstan
        for unit in ["haproxy", "nginx"] {
            let enabled = stdout(&exec(c, &format!("systemctl is-enabled {unit}")));
            assert_eq!(enabled, "disabled", "{c}: {unit}");
        }

        // no egress: no default route, so nothing to 8.8.8.8 can even be sent
        let routes = stdout(&exec(c, "ip route"));
        assert!(!routes.contains("default"), "{c}: {routes}");
        let probe = exec(c, "ip route get 8.8.8.8");
        assert!(!probe.status.success());
        assert!(
            stderr(&probe).contains("Network is unreachable"),
            "{}",
            stderr(&probe)
        );

        // state dirs are volumes of this lab, /run is a tmpfs
        for dir in ["/var/lib/containerd", "/var/lib/kubelet"] {
            let format = format!(
                "{{{{range .Mounts}}}}{{{{if eq .Destination \"{dir}\"}}}}{{{{.Type}}}} {{{{.Name}}}}{{{{end}}}}{{{{end}}}}"
            );
            let mount = docker(&["inspect", "-f", &format, c]);
            let (kind, volume) = mount.split_once(' ').unwrap_or((&mount, ""));
            assert_eq!(kind, "volume", "{c}: {dir}");
            let label = docker(&[
                "volume",
                "inspect",
                "-f",
                "{{index .Labels \"capstan.lab\"}}",
                volume,
            ]);
            assert_eq!(label, guard.name);
        }
        assert_eq!(stdout(&exec(c, "findmnt -n -o FSTYPE /run")), "tmpfs");

        // --mount: the operator's folder, read-only
        assert_eq!(
            stdout(&exec(c, "cat /srv/shared/hello.txt")),
            "from the operator machine"
        );
        let write = exec(c, "touch /srv/shared/new");
        assert!(!write.status.success());
        assert!(
            stderr(&write).contains("Read-only file system"),
            "{}",
            stderr(&write)
        );
        assert_ne!(
            stdout(&exec(c, "findmnt -n -o FSTYPE /var/lib/containerd")),
            "overlay"
        );

        // OpenSSH against the collected host keys, for every user
        let out = ssh(&guard, &known_hosts, "root", &addr, "id -un");
        assert!(out.status.success(), "ssh root@{addr}: {}", stderr(&out));
        assert_eq!(stdout(&out), "root");
        // ops: key login, sudo wants the password `ops`
        let out = ssh(&guard, &known_hosts, "ops", &addr, "sudo -n true");
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("password is required"),
            "{}",
            stderr(&out)
        );
        let out = ssh(
            &guard,
            &known_hosts,
            "ops",
            &addr,
            "echo ops | sudo -S -p '' id -un",
        );
        assert!(
            out.status.success(),
            "ops sudo with password: {}",
            stderr(&out)
        );
        assert_eq!(stdout(&out), "root");
        // deploy: passwordless sudo
        let out = ssh(&guard, &known_hosts, "deploy", &addr, "sudo -n id -un");
        assert!(out.status.success(), "deploy sudo: {}", stderr(&out));
        assert_eq!(stdout(&out), "root");
        // passwords are refused by sshd altogether
        let config = stdout(&exec(c, "sshd -T"));
        assert!(config.contains("passwordauthentication no"), "{config}");
        assert!(
            config.contains("permitrootlogin without-password"),
            "{config}"
        );
    }
    assert_eq!(machine_ids.len(), 2, "each host has its own machine-id");

    // A host key that is not the collected one is refused.
    let empty = guard.out.join("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    let addr = summary.hosts[0].address.to_string();
    let out = ssh(&guard, &empty, "root", &addr, "true");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Host key verification failed"),
        "{}",
        stderr(&out)
    );
    std::fs::remove_file(&empty).unwrap();

    // --- a second up changes nothing ------------------------------------------------------------
    let inventory_bytes = std::fs::read(&summary.inventory).unwrap();
    let again = lab::up(&spec).unwrap_or_else(|e| panic!("second lab up: {e}"));
    assert!(again.hosts.iter().all(|h| h.action == HostAction::Kept));
    assert_eq!(hosts_of(&again), hosts_of(&summary));
    assert_eq!(std::fs::read(&summary.inventory).unwrap(), inventory_bytes);
    assert_eq!(std::fs::read_to_string(&known_hosts).unwrap(), known_text);

    // --- a stopped host is started again, with the same address and host key --------------------
    docker(&["stop", &summary.hosts[1].container]);
    let third = lab::up(&spec).unwrap_or_else(|e| panic!("lab up after stop: {e}"));
    assert_eq!(third.hosts[1].action, HostAction::Started);
    assert_eq!(third.hosts[0].action, HostAction::Kept);
    assert_eq!(hosts_of(&third), hosts_of(&summary));
    assert_eq!(std::fs::read(&summary.inventory).unwrap(), inventory_bytes);
    assert_eq!(std::fs::read_to_string(&known_hosts).unwrap(), known_text);
    let c = &third.hosts[1].container;
    assert!(!stdout(&exec(c, "ip route")).contains("default"));
    let out = ssh(
        &guard,
        &known_hosts,
        "root",
        &third.hosts[1].address.to_string(),
        "true",
    );
    assert!(out.status.success(), "ssh after restart: {}", stderr(&out));

    // --- down removes everything ----------------------------------------------------------------
    let down = lab::down(&guard.name, &guard.out).unwrap();
    assert_eq!(down.containers.len(), 2, "{down:?}");
    assert_eq!(down.volumes.len(), 4, "{down:?}");
    assert_eq!(down.networks, [net]);
    assert!(labelled(&["ps", "--all"], &guard.name).is_empty());
    let volumes = docker(&[
        "volume",
        "ls",
        "-q",
        "--filter",
        &format!("label=capstan.lab={}", guard.name),
    ]);
    assert!(volumes.is_empty(), "{volumes}");
    assert!(labelled(&["network", "ls"], &guard.name).is_empty());
    assert!(!guard.out.exists(), "down removes the files up wrote");
    // and a second down has nothing left to do
    let again = lab::down(&guard.name, &guard.out).unwrap();
    assert!(again.containers.is_empty() && again.volumes.is_empty() && again.networks.is_empty());
}

#[test]
fn missing_image_is_refused_with_the_build_command() {
    let guard = LabGuard::new("noimg");
    let spec = LabSpec {
        image: "capstan-lab:does-not-exist".into(),
        ..guard.spec(1, 0)
    };
    let err = lab::up(&spec).unwrap_err();
    assert!(matches!(err, lab::LabError::ImageMissing { .. }), "{err}");
    let help = miette::Diagnostic::help(&err).unwrap().to_string();
    assert!(help.contains("tests/lab/build-image.sh"), "{help}");
    assert!(
        labelled(&["network", "ls"], &guard.name).is_empty(),
        "nothing was created"
    );
}

/// Times `up` for a bigger lab: `CAPSTAN_LAB_HOSTS=10 cargo test --test lab_updown -- --ignored`.
#[test]
#[ignore = "timing run; set CAPSTAN_LAB_HOSTS"]
fn time_up_for_many_hosts() {
    ensure_image();
    let n: u32 = std::env::var("CAPSTAN_LAB_HOSTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let guard = LabGuard::new("many");
    let spec = guard.spec(1, n - 1);
    let started = Instant::now();
    let summary = lab::up(&spec).unwrap_or_else(|e| panic!("lab up: {e}"));
    let took = started.elapsed().as_secs_f64();
    eprintln!("{summary}");
    eprintln!("up of {n} hosts: {took:.1} s");
    let started = Instant::now();
    lab::up(&spec).unwrap();
    eprintln!(
        "second up of {n} hosts: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    lab::down(&guard.name, &guard.out).unwrap();
    eprintln!(
        "down of {n} hosts: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
