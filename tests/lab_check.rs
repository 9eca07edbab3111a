//! `capstan check` against real lab hosts: systemd, sshd, real SSH with host-key checks.

mod support;

use support::lab::{Lab, capstan, docker, read};

fn run(args: &[&str], inventory: &std::path::Path) -> (i32, String, String) {
    let out = capstan()
        .args(args)
        .arg("-i")
        .arg(inventory)
        .output()
        .expect("run capstan");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_against_a_lab() {
    let lab = Lab::up("check", &["--control-planes", "1", "--workers", "2"]);
    let inv = lab.inventory();

    // A healthy lab passes, every host with its facts and checks.
    let (code, stdout, stderr) = run(&["check"], &inv);
    assert_eq!(
        code, 0,
        "check failed on a healthy lab:\n{stdout}\n{stderr}"
    );
    for host in ["cp1", "w1", "w2"] {
        assert!(stdout.contains(host), "{host} missing from:\n{stdout}");
    }
    // -v lists every check, passing ones included.
    let (_, verbose, _) = run(&["check", "-v"], &inv);
    assert!(
        verbose.contains("Swap") && verbose.contains("Port-6443"),
        "{verbose}"
    );
    assert!(
        stdout.contains("check passed: 3 hosts, 0 unreachable, 0 errors"),
        "{stdout}"
    );

    // JSON gives the same as one document.
    let (code, stdout, _) = run(&["check", "--output", "json"], &inv);
    assert_eq!(code, 0);
    let doc: serde_json::Value =
        serde_json::from_str(&stdout).expect("check --output json is JSON");
    let hosts = doc["hosts"].as_array().expect("hosts array");
    assert_eq!(hosts.len(), 3);
    for h in hosts {
        assert_eq!(h["facts"]["os"]["id"], "debian", "{h}");
        assert!(h["checks"].as_array().is_some_and(|c| !c.is_empty()));
    }

    // A stopped host is reported unreachable; the others are still checked.
    docker(&["stop", "-t", "1", &lab.container("w2")]);
    let (code, stdout, _) = run(&["check", "--connect-timeout", "3"], &inv);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("1 unreachable"), "{stdout}");
    // Each unreachable host on a line of its own; hosts that are alike share their facts.
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("w2 (") && l.contains(" unreachable: ")),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("cp1, w1: ") && l.contains("kernel")),
        "cp1 and w1 were checked: {stdout}"
    );
    // The checks of the two hosts that answered, each said once with its hosts.
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("ok ") && l.contains("more checks on cp1, w1")),
        "{stdout}"
    );
    lab.bring_up();

    // A changed host key is refused: give w1 the key recorded for cp1.
    let known = lab.dir.path().join(".capstan/known_hosts");
    let text = read(&known);
    let doc: serde_json::Value =
        serde_json::from_str(&run(&["check", "--output", "json"], &inv).1).unwrap_or_default();
    let addr = |name: &str| -> String {
        doc["hosts"]
            .as_array()
            .and_then(|hs| hs.iter().find(|h| h["name"] == name))
            .and_then(|h| h["address"].as_str())
            .map(str::to_string)
            .expect("host address")
    };
    let (cp1_addr, w1_addr) = (addr("cp1"), addr("w1"));
    let cp1_key = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(cp1_addr.as_str()))
        .and_then(|l| l.split_once(' ').map(|(_, k)| k.to_string()))
        .expect("cp1's key in known_hosts");
    let forged: String = text
        .lines()
        .map(|l| {
            if l.split_whitespace().next() == Some(w1_addr.as_str()) {
                format!("{w1_addr} {cp1_key}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&known, forged).expect("write known_hosts");
    for flags in [&["check"][..], &["check", "--accept-new-host-keys"][..]] {
        let (code, stdout, _) = run(flags, &inv);
        assert_eq!(code, 1, "{stdout}");
        let w1 = stdout.split("w1 (").nth(1).expect("w1 section");
        assert!(
            w1.contains("host key") && w1.to_lowercase().contains("has changed"),
            "{stdout}"
        );
    }
}

#[test]
fn bad_inventory_exits_2_before_any_connection() {
    let dir = tempfile::tempdir().expect("temp dir");
    let inv = dir.path().join("cluster.yaml");
    std::fs::write(
        &inv,
        "cluster: {name: x, kubernetes_version: v1.32.3}\nhosts:\n  - {name: cp1, address: 192.0.2.1, roles: [control-plane], sssh: {}}\n",
    )
    .expect("write inventory");
    let (code, _, stderr) = run(&["check"], &inv);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("cluster.yaml:3:") && stderr.contains("unknown key `sssh`"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("192.0.2.1:22"),
        "no connection may be attempted: {stderr}"
    );

    // A misspelt preflight name is refused too, before any connection.
    std::fs::write(
        &inv,
        "cluster: {name: x, kubernetes_version: v1.32.3}\nhosts:\n  - {name: cp1, address: 192.0.2.1, roles: [control-plane]}\n",
    )
    .expect("write inventory");
    let (code, _, stderr) = run(&["check", "--ignore-preflight-errors", "Swp"], &inv);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("unknown checks: Swp") && stderr.contains("Swap"),
        "{stderr}"
    );
}

/// `become: sudo` for real: `deploy` has passwordless sudo, `ops` needs the password `ops`,
/// which only comes from CAPSTAN_BECOME_PASSWORD and never shows in any output.
#[test]
fn become_sudo_with_and_without_a_password() {
    let lab = Lab::up("become", &["--control-planes", "1", "--workers", "1"]);
    let inv = lab.inventory();
    let text = read(&inv)
        .replace(
            "  - name: cp1\n",
            "  - name: cp1\n    ssh: {user: deploy, become: sudo}\n",
        )
        .replace(
            "  - name: w1\n",
            "  - name: w1\n    ssh: {user: ops, become: sudo}\n",
        );
    std::fs::write(&inv, text).expect("write inventory");

    let with_password = |pw: Option<&str>| {
        let mut cmd = capstan();
        cmd.args(["check", "-v", "-i"]).arg(&inv);
        if let Some(pw) = pw {
            cmd.env("CAPSTAN_BECOME_PASSWORD", pw);
        }
        let out = cmd.output().expect("run capstan");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (code, stdout, stderr) = with_password(Some("ops"));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    // Both hosts run commands as root, said once for the two.
    assert!(
        stdout.contains("ok [IsPrivilegedUser] on cp1, w1: commands run as root"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("ops\n") && !stderr.contains("password ops"),
        "the password leaked"
    );

    // Without the password, the host that needs one fails with what to do; the other passes.
    let (code, stdout, _) = with_password(None);
    assert_eq!(code, 1, "{stdout}");
    let w1 = stdout.split("w1 (").nth(1).expect("w1 section");
    assert!(
        w1.contains("unreachable:") && w1.contains("password"),
        "{stdout}"
    );
    let cp1 = stdout.split("cp1 (").nth(1).expect("cp1 section");
    assert!(
        cp1.split("w1 (")
            .next()
            .is_some_and(|s| !s.contains("unreachable")),
        "{stdout}"
    );

    // A wrong password is refused as such.
    let (code, stdout, _) = with_password(Some("wrong"));
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("w1 (") && stdout.contains("password"),
        "{stdout}"
    );
    assert!(!stdout.contains("wrong"), "the password leaked: {stdout}");
}
