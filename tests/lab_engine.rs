//! The engine against real lab hosts: `apply --roles common,containerd` installs a real
//! containerd from the test mirror, a second run changes nothing, drift is shown and
//! repaired, and a dry run leaves every host byte-identical.

mod support;

use std::path::{Path, PathBuf};

use capstan::facts::sh_quote;
use support::lab::{Lab, Run, bed, capstan_env, docker, run_capstan_cached, said_of};

/// The test mirror: the test bed's (tests/lab/prepare.sh), shared by every lab test.
fn mirror() -> PathBuf {
    bed().join("mirror")
}

fn run(args: &[&str], inv: &Path, cache: &Path) -> Run {
    run_capstan_cached(args, inv, cache)
}

const HOSTS: [&str; 3] = ["cp1", "w1", "w2"];

/// sha256, owner and mode of every path capstan manages or stages, as the host has them.
fn fingerprint(lab: &Lab, host: &str) -> String {
    let script = "for p in /usr/local/bin/containerd /usr/local/bin/containerd-shim-runc-v2 /usr/local/bin/ctr \
                  /usr/local/sbin/runc /etc/containerd /etc/containerd/config.toml \
                  /etc/systemd/system/containerd.service /etc/sysctl.d/99-capstan.conf \
                  /etc/modules-load.d/capstan.conf /etc/kubernetes /etc/kubernetes/manifests \
                  /etc/kubernetes/pki /var/lib/kubelet /opt/cni/bin /etc/cni/net.d /var/lib/capstan \
                  /var/lib/capstan/installed.tsv /var/lib/capstan/staging; do \
                  if [ -e \"$p\" ]; then stat -c '%n %U:%G %a %Y' \"$p\"; [ -f \"$p\" ] && sha256sum \"$p\"; else echo \"$p absent\"; fi; done; \
                  systemctl is-active containerd || true; ls /etc/containerd 2>&1; true";
    docker(&["exec", &lab.container(host), "sh", "-c", script])
}

#[test]
fn apply_common_and_containerd_on_three_hosts() {
    let mirror = mirror();
    let lab = Lab::up(
        "engine",
        &[
            "--control-planes",
            "1",
            "--workers",
            "2",
            "--mirror",
            mirror.to_str().expect("utf-8 path"),
        ],
    );
    let inv = lab.inventory();
    let cache = tempfile::tempdir().expect("temp dir");
    let cache = cache.path();

    // Dry run first: it shows everything and touches nothing.
    let before: Vec<String> = HOSTS.iter().map(|h| fingerprint(&lab, h)).collect();
    let r = run(
        &["apply", "--roles", "common,containerd", "--dry-run"],
        &inv,
        cache,
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("would change"), "{}", r.stdout);
    assert!(
        r.stdout.contains("+  SystemdCgroup = true"),
        "the plan shows diffs: {}",
        r.stdout
    );
    let after: Vec<String> = HOSTS.iter().map(|h| fingerprint(&lab, h)).collect();
    assert_eq!(before, after, "a dry run changed a host");

    // The real run converges all three; containerd really runs.
    let r = run(&["apply", "--roles", "common,containerd"], &inv, cache);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("3 hosts, 3 changed, 0 unchanged, 0 failed"),
        "{}",
        r.stdout
    );
    for host in HOSTS {
        let version = docker(&["exec", &lab.container(host), "ctr", "version"]);
        assert!(
            version.contains("Server:") && version.contains("1.6.20"),
            "{host}: {version}"
        );
        let cfg = docker(&[
            "exec",
            &lab.container(host),
            "cat",
            "/etc/containerd/config.toml",
        ]);
        assert!(
            cfg.contains("SystemdCgroup = true") && cfg.contains("restrict_oom_score_adj = true"),
            "{cfg}"
        );
        let tsv = docker(&[
            "exec",
            &lab.container(host),
            "cat",
            "/var/lib/capstan/installed.tsv",
        ]);
        assert!(tsv.contains("/usr/local/bin/containerd\n"), "{tsv}");
    }

    // Idempotent: the second run changes nothing, and plan agrees.
    let r = run(&["apply", "--roles", "common,containerd"], &inv, cache);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout
            .contains("3 hosts, 0 changed, 3 unchanged, 0 failed"),
        "{}",
        r.stdout
    );
    let r = run(
        &[
            "plan",
            "--roles",
            "common,containerd",
            "--detailed-exitcode",
        ],
        &inv,
        cache,
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("3 hosts, 0 changes"), "{}", r.stdout);

    // Drift on one host: plan shows exactly that file, with its diff, and the restart it needs.
    docker(&[
        "exec",
        &lab.container("w1"),
        "sh",
        "-c",
        "echo '# edited by hand' >> /etc/containerd/config.toml",
    ]);
    let r = run(
        &[
            "plan",
            "--roles",
            "common,containerd",
            "--detailed-exitcode",
        ],
        &inv,
        cache,
    );
    assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
    assert!(
        said_of(&r.stdout, "cp1", "no changes") && said_of(&r.stdout, "w2", "no changes"),
        "{}",
        r.stdout
    );
    let w1 = r
        .stdout
        .split("w1 would change")
        .nth(1)
        .expect("w1 section");
    let w1 = w1.split("w2 ").next().unwrap_or(w1);
    let changes: Vec<&str> = w1
        .lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("    "))
        .collect();
    assert_eq!(
        changes,
        vec![
            "  update file /etc/containerd/config.toml",
            "  restart unit containerd.service (because /etc/containerd/config.toml changed)"
        ],
        "{}",
        r.stdout
    );
    assert!(w1.contains("-# edited by hand"), "{w1}");
    assert!(r.stdout.contains("3 hosts, 2 changes"), "{}", r.stdout);

    // Owner and mode drift is fixed without touching content.
    docker(&[
        "exec",
        &lab.container("w2"),
        "chmod",
        "600",
        "/etc/containerd/config.toml",
    ]);

    // A real run puts both back, and converges.
    let r = run(&["apply", "--roles", "common,containerd"], &inv, cache);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("3 hosts, 2 changed, 1 unchanged, 0 failed"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("fix file /etc/containerd/config.toml (mode 0600 -> 0644)"),
        "{}",
        r.stdout
    );
    let reference = docker(&[
        "exec",
        &lab.container("cp1"),
        "sha256sum",
        "/etc/containerd/config.toml",
    ]);
    for host in ["w1", "w2"] {
        assert_eq!(
            docker(&[
                "exec",
                &lab.container(host),
                "sha256sum",
                "/etc/containerd/config.toml"
            ]),
            reference
        );
    }
    let r = run(
        &[
            "plan",
            "--roles",
            "common,containerd",
            "--detailed-exitcode",
            "--verify",
        ],
        &inv,
        cache,
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);

    // A hand-replaced binary of the same size and mtime is caught by --verify.
    docker(&[
        "exec",
        &lab.container("w2"),
        "sh",
        "-c",
        "f=/usr/local/sbin/runc; t=$(stat -c %y $f); s=$(stat -c %s $f); head -c $s /dev/zero > $f.x && cat $f.x > $f && rm $f.x && touch -d \"$t\" $f",
    ]);
    let r = run(
        &[
            "plan",
            "--roles",
            "common,containerd",
            "--detailed-exitcode",
            "--verify",
            "--hosts",
            "w2",
        ],
        &inv,
        cache,
    );
    assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("update file /usr/local/sbin/runc"),
        "{}",
        r.stdout
    );
    let r = run(
        &[
            "apply",
            "--roles",
            "common,containerd",
            "--verify",
            "--hosts",
            "w2",
        ],
        &inv,
        cache,
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let r = run(
        &[
            "plan",
            "--roles",
            "common,containerd",
            "--detailed-exitcode",
            "--verify",
        ],
        &inv,
        cache,
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);

    // On a terminal (a real pty, from util-linux's `script`) a run draws its bars: the
    // phase, the hosts still at work with their step, hosts done out of all. Piped, as
    // every run above, it draws none.
    assert!(
        !r.stderr.contains("hosts ("),
        "no bars without a terminal: {}",
        r.stderr
    );
    docker(&[
        "exec",
        &lab.container("w1"),
        "sh",
        "-c",
        "echo '# hand edit' >> /etc/containerd/config.toml",
    ]);
    let tty = on_a_terminal(&[
        "apply",
        "--roles",
        "common,containerd",
        "-i",
        inv.to_str().expect("utf-8 path"),
        "--cache-dir",
        cache.to_str().expect("utf-8 path"),
    ]);
    assert!(tty.contains("exit 0"), "{tty}");
    for drawn in ["connecting", "converging", "/3 hosts ("] {
        assert!(tty.contains(drawn), "`{drawn}` not drawn: {tty}");
    }
    assert!(
        tty.contains("3 hosts, 1 changed, 2 unchanged, 0 failed"),
        "{tty}"
    );
}

/// Runs capstan with `args` on a pseudo-terminal (`script`), returning what the terminal
/// showed, then `exit N`.
fn on_a_terminal(args: &[&str]) -> String {
    let mut line = sh_quote(env!("CARGO_BIN_EXE_capstan"));
    for a in args {
        line.push(' ');
        line.push_str(&sh_quote(a));
    }
    line.push_str("; echo \"exit $?\"");
    let out = capstan_env(&mut std::process::Command::new("script"))
        .args(["-q", "-e", "-c", &line, "/dev/null"])
        .env("TERM", "xterm")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run script (util-linux)");
    assert!(
        out.status.success(),
        "script: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn unknown_role_or_host_is_bad_input() {
    let dir = tempfile::tempdir().expect("temp dir");
    let inv = dir.path().join("cluster.yaml");
    std::fs::write(&inv, "cluster: {name: x, kubernetes_version: v1.32.4}\nhosts:\n  - {name: cp1, address: 192.0.2.1, roles: [control-plane]}\n")
        .expect("write");
    let r = run(&["apply", "--roles", "nope"], &inv, dir.path());
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("there is no role `nope`") && r.stderr.contains("containerd"),
        "{}",
        r.stderr
    );
    let r = run(&["plan", "--hosts", "cp9"], &inv, dir.path());
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("there is no host `cp9`"), "{}", r.stderr);
}
