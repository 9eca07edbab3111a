//! The load-balancer roles on real lab hosts: haproxy and nginx start with every control
//! plane as a backend, and a new backend reloads them (the main PID stays), never restarts.

mod support;

use std::path::Path;

use support::lab::{Lab, capstan, docker, read};

/// `capstan apply --roles ROLES [ARGS]` on the lab; panics unless it succeeds.
fn apply_with(inv: &Path, roles: &str, args: &[&str]) -> String {
    let out = capstan()
        .args(["apply", "--roles", roles])
        .args(args)
        .arg("-i")
        .arg(inv)
        .output()
        .expect("run capstan");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Applies `roles` to the load balancer only.
fn apply(inv: &Path, roles: &str) -> String {
    apply_with(inv, roles, &["--hosts", "lb1"])
}

/// `server ADDR:6443` lines: haproxy's and nginx's backends alike.
fn backends(cfg: &str) -> usize {
    cfg.lines()
        .filter(|l| l.trim_start().starts_with("server ") && l.contains(":6443"))
        .count()
}

fn main_pid(lab: &Lab, unit: &str) -> String {
    docker(&[
        "exec",
        &lab.container("lb1"),
        "systemctl",
        "show",
        "-p",
        "MainPID",
        "--value",
        unit,
    ])
    .trim()
    .to_string()
}

fn exercise(software: &str, role: &str, unit: &str, config: &str) {
    let lab = Lab::up(
        software,
        &["--control-planes", "1", "--load-balancers", "1"],
    );
    let inv = lab.inventory();
    if software == "nginx" {
        let text = read(&inv).replace(
            "    mode: external-lb\n",
            "    mode: external-lb\n    software: nginx\n",
        );
        std::fs::write(&inv, text).expect("write inventory");
    }

    let out = apply(&inv, role);
    assert!(out.contains(&format!("start unit {unit}")), "{out}");
    assert_eq!(
        docker(&[
            "exec",
            &lab.container("lb1"),
            "systemctl",
            "is-active",
            unit
        ])
        .trim(),
        "active"
    );
    let pid = main_pid(&lab, unit);
    assert_ne!(pid, "0");
    let cfg = docker(&["exec", &lab.container("lb1"), "cat", config]);
    assert_eq!(backends(&cfg), 1, "one backend: {cfg}");

    // Idempotent.
    assert!(apply(&inv, role).contains("1 host, 0 changed, 1 unchanged, 0 failed"));

    // Two more control planes in the inventory: the proxy reloads with three backends.
    let cp1 = read(&inv)
        .lines()
        .skip_while(|l| !l.contains("name: cp1"))
        .find_map(|l| l.trim().strip_prefix("address: ").map(str::to_string))
        .expect("cp1 address");
    let base = cp1
        .rsplit_once('.')
        .map(|(net, _)| net.to_string())
        .expect("IPv4");
    let mut text = read(&inv);
    for (i, name) in ["cp2", "cp3"].iter().enumerate() {
        text.push_str(&format!(
            "  - name: {name}\n    address: {base}.{}\n    roles: [control-plane]\n",
            200 + i
        ));
    }
    std::fs::write(&inv, text).expect("write inventory");
    let out = apply(&inv, role);
    assert!(out.contains(&format!("reload unit {unit}")), "{out}");
    assert!(!out.contains("restart unit"), "{out}");
    assert_eq!(
        main_pid(&lab, unit),
        pid,
        "{unit} was restarted, not reloaded"
    );
    let cfg = docker(&["exec", &lab.container("lb1"), "cat", config]);
    assert_eq!(backends(&cfg), 3, "three backends: {cfg}");
    assert_eq!(
        docker(&[
            "exec",
            &lab.container("lb1"),
            "systemctl",
            "is-active",
            unit
        ])
        .trim(),
        "active"
    );
    assert!(apply(&inv, role).contains("1 host, 0 changed, 1 unchanged, 0 failed"));
}

#[test]
fn haproxy_reloads_on_new_backends() {
    exercise(
        "haproxy",
        "lb-haproxy",
        "haproxy.service",
        "/etc/haproxy/haproxy.cfg",
    );
}

#[test]
fn nginx_reloads_on_new_backends() {
    exercise(
        "nginx",
        "lb-nginx",
        "nginx.service",
        "/etc/nginx/nginx.conf",
    );
}

/// local-proxy: every node gets haproxy on 127.0.0.1 with every control plane as a backend.
#[test]
fn local_proxy_on_every_node() {
    let lab = Lab::up("localproxy", &["--control-planes", "1", "--workers", "1"]);
    let inv = lab.inventory();
    let text = read(&inv).replace("    mode: single\n", "    mode: local-proxy\n");
    std::fs::write(&inv, text).expect("write inventory");
    let run = || apply_with(&inv, "local-proxy", &[]);
    let out = run();
    assert!(
        out.contains("2 hosts, 2 changed, 0 unchanged, 0 failed"),
        "{out}"
    );
    for host in ["cp1", "w1"] {
        let cfg = docker(&[
            "exec",
            &lab.container(host),
            "cat",
            "/etc/haproxy/haproxy.cfg",
        ]);
        assert!(cfg.contains("bind 127.0.0.1:6443"), "{cfg}");
        assert_eq!(backends(&cfg), 1, "{cfg}");
        let listening = docker(&["exec", &lab.container(host), "ss", "-ltnH", "sport = :6443"]);
        assert!(listening.contains("127.0.0.1:6443"), "{host}: {listening}");
    }
    assert!(run().contains("2 hosts, 0 changed, 2 unchanged, 0 failed"));
}
