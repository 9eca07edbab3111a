use super::*;
use crate::facts::{ProbeRequest, probe_script};

/// Runs the probe on this machine with `sh` and parses it: the script works on a real host.
#[test]
fn the_probe_runs_and_parses_on_this_machine() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("it's a file");
    std::fs::write(&file, b"hello\n").unwrap();
    let hostile = dir.path().join("a;touch pwned");
    let req = ProbeRequest {
        paths: vec![
            file.to_str().unwrap().to_owned(),
            dir.path().to_str().unwrap().to_owned(),
            hostile.to_str().unwrap().to_owned(),
            "/nonexistent/capstan".to_owned(),
        ],
        units: vec!["ssh.service".into(), "capstan-nonexistent.service".into()],
        ..ProbeRequest::default()
    };
    let script = probe_script(&req).unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    if let Ok(dest) = std::env::var("CAPSTAN_PROBE_DUMP") {
        std::fs::write(format!("{dest}.sh"), &script).unwrap();
        std::fs::write(format!("{dest}.txt"), &text).unwrap();
    }
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !dir.path().join("pwned").exists(),
        "a path name was executed"
    );
    let facts = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));

    let f = facts.paths[file.to_str().unwrap()].as_ref().unwrap();
    assert_eq!(f.size, 6);
    assert_eq!(
        f.sha256.as_deref(),
        Some("5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03")
    );
    assert_eq!(f.kind, "regular file");
    let d = facts.paths[dir.path().to_str().unwrap()].as_ref().unwrap();
    assert_eq!(d.kind, "directory");
    assert_eq!(d.sha256, None);
    assert_eq!(facts.paths["/nonexistent/capstan"], None);
    assert_eq!(facts.paths[hostile.to_str().unwrap()], None);
    assert!(facts.cpus >= 1);
    assert!(facts.memory_bytes > 100 * 1024 * 1024);
    assert!(!facts.kernel.is_empty());
    assert!(facts.has_tool("sh"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (facts.clock_epoch - now).abs() < 5.0,
        "{} vs {now}",
        facts.clock_epoch
    );
    assert!(facts.addresses.iter().any(|a| a.address.is_loopback()));
    assert!(facts.listening.is_some());
}

fn probe_here(req: &ProbeRequest) -> Facts {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(probe_script(req).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse(&String::from_utf8(out.stdout).unwrap()).unwrap()
}

/// A file whose size, mtime and inode match the installed record keeps the recorded hash
/// (it is not read); a changed stat, or `verify`, hashes it again.
#[test]
fn quick_check_uses_the_installed_record_until_the_stat_changes() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big binary");
    std::fs::write(&file, b"hello\n").unwrap();
    let real = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";
    let recorded = "a".repeat(64);
    let meta = std::fs::metadata(&file).unwrap();
    let state = dir.path().join("installed.tsv");
    let path = file.to_str().unwrap().to_owned();
    std::fs::write(
        &state,
        format!(
            "{recorded}\t{}\t{}\t{}\t{path}\n",
            meta.size(),
            meta.mtime(),
            meta.ino()
        ),
    )
    .unwrap();
    let mut req = ProbeRequest {
        paths: vec![path.clone()],
        installed_state: Some(state.to_str().unwrap().to_owned()),
        extra: vec![("my-section".into(), "echo hello from extra".into())],
        ..ProbeRequest::default()
    };
    let facts = probe_here(&req);
    // The recorded hash proves the file was not read.
    assert_eq!(
        facts.paths[&path].as_ref().unwrap().sha256.as_deref(),
        Some(recorded.as_str())
    );
    assert_eq!(
        facts.extra_sections["my-section"].trim(),
        "hello from extra"
    );
    req.verify = true;
    assert_eq!(
        probe_here(&req).paths[&path]
            .as_ref()
            .unwrap()
            .sha256
            .as_deref(),
        Some(real)
    );
    req.verify = false;
    std::fs::write(&file, b"hello, changed\n").unwrap();
    let changed = probe_here(&req).paths[&path]
        .as_ref()
        .unwrap()
        .sha256
        .clone()
        .unwrap();
    assert_ne!(changed, recorded);
    assert_ne!(changed, real);
}

/// A light probe leaves out addresses, sockets and version runs, and still parses.
#[test]
fn light_probe_leaves_out_the_costly_sections() {
    let req = ProbeRequest {
        light: true,
        ..ProbeRequest::default()
    };
    let script = probe_script(&req).unwrap();
    assert!(
        !script.contains("ss -ltnp")
            && !script.contains("ip -o addr")
            && !script.contains("version-")
    );
    let facts = probe_here(&req);
    assert!(facts.addresses.is_empty());
    assert!(facts.listening.is_none());
    assert!(
        facts
            .components
            .values()
            .flatten()
            .all(|c| c.version.is_none())
    );
    assert!(facts.cpus >= 1 && !facts.os.id.is_empty());
}

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("../../../tests/fixtures/facts/", $name))
    };
}

fn parse_fixture(text: &str) -> Facts {
    parse(text).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn captured_debian_bookworm_container() {
    let f = parse_fixture(fixture!("debian12-amd64-docker-nosystemd.txt"));
    assert_eq!(f.os.id, "debian");
    assert_eq!(f.os.version_id, "12");
    assert_eq!(f.os.pretty_name, "Debian GNU/Linux 12 (bookworm)");
    assert_eq!(f.arch, Arch::Amd64);
    assert_eq!(f.machine, "x86_64");
    assert_eq!(f.uid, Some(0));
    assert!(!f.init.systemd);
    assert_eq!(f.init.pid1.as_deref(), Some("process_api"));
    assert_eq!(f.container.as_deref(), Some("docker"));
    assert_eq!(f.cgroup.version, CgroupVersion::Hybrid);
    assert!(f.cgroup.systemd_managed);
    assert!(f.cgroup.controllers.contains(&"memory".to_owned()));
    assert!(!f.swap.is_on());
    assert_eq!(f.hostname, "vm");
    assert_eq!(
        f.machine_id.as_deref(),
        Some("3d1219c7c4c5404aaa1f6d2a48adfda4")
    );
    assert_eq!(f.sysctls.ip_forward.as_deref(), Some("1"));
    assert!(f.sysctls.bridge_dir);
    assert!(f.modules["overlay"].available());
    assert!(!f.modules["br_netfilter"].available());
    let containerd = f.component(Component::Containerd).unwrap();
    assert_eq!(containerd.version.as_deref(), Some("1.6.20~ds1"));
    assert_eq!(containerd.semver.unwrap().to_string(), "v1.6.20");
    assert_eq!(
        f.component(Component::Runc).unwrap().version.as_deref(),
        Some("1.1.5+ds1")
    );
    assert_eq!(
        f.component(Component::Etcd).unwrap().version.as_deref(),
        Some("3.4.23")
    );
    let kubectl = f.component(Component::Kubectl).unwrap();
    assert_eq!(kubectl.version.as_deref(), Some("v1.32.4-dispatcher"));
    assert_eq!(kubectl.semver.unwrap().to_string(), "v1.32.4");
    assert!(f.component(Component::Kubelet).is_none());
    assert!(!f.has_tool("conntrack"));
    assert_eq!(f.tools["ip"].as_deref(), Some("/usr/sbin/ip"));
    let listen = f.listening.as_ref().unwrap();
    assert_eq!(listen.len(), 1);
    assert_eq!(
        (listen[0].address.as_str(), listen[0].port),
        ("0.0.0.0", 2024)
    );
    assert!(listen[0].processes.is_empty());
    let eth0: Vec<_> = f
        .addresses
        .iter()
        .filter(|a| a.interface.as_deref() == Some("eth0"))
        .collect();
    assert_eq!(eth0.len(), 3);
    assert_eq!(eth0[0].address.to_string(), "192.0.2.2");
    assert_eq!(eth0[0].prefix_len, Some(24));
    let containerd_bin = f.paths["/usr/bin/containerd"].as_ref().unwrap();
    assert_eq!(containerd_bin.size, 48_168_072);
    assert_eq!(containerd_bin.mode, 0o755);
    assert_eq!(containerd_bin.sha256.as_deref().map(str::len), Some(64));
    assert_eq!(
        f.paths["/etc/os-release"].as_ref().unwrap().kind,
        "symbolic link"
    );
    assert_eq!(f.paths["/etc/kubernetes/admin.conf"], None);
    assert_eq!(f.paths["/etc/containerd"].as_ref().unwrap().sha256, None);
    // No systemd: unit states are unknown, not "inactive".
    assert_eq!(f.units.len(), 2);
    assert!(f.units.values().all(Option::is_none));
    assert!((f.clock_epoch - 1_795_380_065.0).abs() < 1.0 || f.clock_epoch > 1.7e9);
}

#[test]
fn rhel_family_host_with_a_running_control_plane() {
    let f = parse_fixture(fixture!("rocky9-amd64-cgroupv2-cluster.txt"));
    assert_eq!(f.os.id, "rocky");
    assert_eq!(f.os.id_like, ["rhel", "centos", "fedora"]);
    assert_eq!(f.os.version_id, "9.4");
    assert_eq!(f.cgroup.version, CgroupVersion::V2);
    assert!(f.cgroup.systemd_managed);
    assert_eq!(f.cgroup.controllers.len(), 8);
    assert!(f.init.systemd);
    assert_eq!(f.container, None);
    assert_eq!(f.cpus, 4);
    assert_eq!(f.memory_bytes, 7_869_560 * 1024);
    assert_eq!(f.hostname, "cp1.example.internal");
    assert_eq!(
        f.component(Component::Containerd)
            .unwrap()
            .version
            .as_deref(),
        Some("v1.7.24")
    );
    assert_eq!(
        f.component(Component::Runc).unwrap().version.as_deref(),
        Some("1.2.5")
    );
    assert_eq!(
        f.component(Component::Kubelet)
            .unwrap()
            .semver
            .unwrap()
            .to_string(),
        "v1.32.3"
    );
    assert_eq!(
        f.component(Component::Etcd).unwrap().version.as_deref(),
        Some("3.5.17")
    );
    assert_eq!(
        f.component(Component::Kubectl).unwrap().version.as_deref(),
        Some("v1.32.3")
    );
    assert_eq!(
        f.component(Component::Kubectl).unwrap().exit_status,
        Some(0)
    );

    let l6443 = f.listeners_on(6443);
    assert_eq!(l6443.len(), 1);
    assert_eq!(l6443[0].address, "*");
    assert_eq!(
        l6443[0].processes,
        [Process {
            name: "kube-apiserver".into(),
            pid: Some(2100)
        }]
    );
    assert_eq!(f.listeners_on(2379).len(), 2);
    assert_eq!(
        f.listeners_on(22)
            .iter()
            .map(|l| l.address.as_str())
            .collect::<Vec<_>>(),
        ["0.0.0.0", "::"]
    );

    assert_eq!(f.paths.len(), 5);
    let ca = f.paths["/etc/kubernetes/pki/ca.key"].as_ref().unwrap();
    assert_eq!((ca.mode, ca.owner.as_str(), ca.size), (0o600, "root", 1679));
    assert_eq!(
        ca.sha256.as_deref(),
        Some("1234567890abcdef1234567890abcdef1234567890abcdef1234567890abcdef")
    );
    assert_eq!(f.paths["/etc/kubernetes/kubelet conf (old)"], None);
    assert_eq!(
        f.paths["/etc/kubernetes/manifests"].as_ref().unwrap().kind,
        "directory"
    );

    let kubelet = f.units["kubelet"].as_ref().unwrap();
    assert_eq!(kubelet.id, "kubelet.service");
    assert!(kubelet.is_active());
    assert_eq!(kubelet.unit_file_state, "enabled");
    assert_eq!(
        f.units["etcd.service"].as_ref().unwrap().active_state,
        "failed"
    );
    let haproxy = f.units["haproxy.service"].as_ref().unwrap();
    assert!(!haproxy.exists());
    assert_eq!(haproxy.unit_file_state, "");
    assert!((f.clock_epoch - 1_795_380_065.25).abs() < 1e-6);

    // The JSON form is what `--output json` prints.
    let json = serde_json::to_value(&f).unwrap();
    assert_eq!(json["arch"], "amd64");
    assert_eq!(json["cgroup"]["version"], "v2");
    assert_eq!(json["paths"]["/etc/kubernetes/pki/ca.key"]["mode"], "600");
    assert_eq!(json["components"]["kubelet"]["semver"], "v1.32.3");
    assert!(json["components"]["containerd"]["path"].is_string());
}

#[test]
fn arm64_ubuntu_with_swap_old_kubectl_and_containerd_2() {
    let f = parse_fixture(fixture!("ubuntu2204-arm64-swap-foreign-ports.txt"));
    assert_eq!(f.arch, Arch::Arm64);
    assert_eq!(f.machine, "aarch64");
    assert_eq!(f.os.id_like, ["debian"]);
    assert!(f.swap.is_on());
    assert_eq!(f.swap.total_bytes, 2_097_148 * 1024);
    assert_eq!(f.swap.active.len(), 1);
    assert_eq!(f.swap.active[0].name, "/swap.img");
    assert_eq!(f.swap.active[0].kind, "file");
    assert_eq!(
        f.component(Component::Containerd)
            .unwrap()
            .version
            .as_deref(),
        Some("v2.0.2")
    );
    assert_eq!(
        f.component(Component::Runc)
            .unwrap()
            .semver
            .unwrap()
            .to_string(),
        "v1.1.12"
    );
    assert_eq!(
        f.component(Component::Kubectl).unwrap().version.as_deref(),
        Some("v1.26.15")
    );
    assert!(f.modules["overlay"].builtin);
    assert!(!f.sysctls.bridge_dir);
    assert_eq!(f.sysctls.bridge_nf_call_iptables, None);
    assert_eq!(f.sysctls.ip_forward.as_deref(), Some("0"));
    let nginx = f.listeners_on(6443);
    assert_eq!(nginx[0].processes.len(), 2);
    assert_eq!(nginx[0].processes[0].name, "nginx");
    assert_eq!(f.listeners_on(53)[0].address, "127.0.0.53");
    assert!(f.listeners_on(2379)[0].processes.is_empty());
    assert!(f.paths.is_empty() && f.units.is_empty());
}

#[test]
fn minimal_host_uses_the_proc_fallbacks() {
    let f = parse_fixture(fixture!("alpine-minimal-proc-fallback.txt"));
    assert_eq!(f.arch, Arch::Arm);
    assert_eq!(f.uid, Some(1000));
    assert!(!f.init.systemd);
    assert_eq!(f.machine_id, None);
    assert_eq!(f.cgroup.version, CgroupVersion::V1);
    assert!(!f.cgroup.systemd_managed);
    assert!(f.components.values().all(Option::is_none));
    // Addresses from fib_trie (no interface) and if_inet6.
    let addrs: Vec<String> = f.addresses.iter().map(|a| a.address.to_string()).collect();
    assert_eq!(
        addrs,
        [
            "127.0.0.1",
            "192.168.56.20",
            "::1",
            "fe80::250:560b:fe8d:1234"
        ]
    );
    assert_eq!(f.addresses[3].interface.as_deref(), Some("eth0"));
    assert_eq!(f.addresses[3].prefix_len, Some(64));
    // Listeners from /proc/net/tcp{,6}; the established socket is not one.
    let l = f.listening.as_ref().unwrap();
    let seen: Vec<(String, u16, Vec<String>)> = l
        .iter()
        .map(|l| {
            (
                l.address.clone(),
                l.port,
                l.processes.iter().map(|p| p.name.clone()).collect(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("0.0.0.0".into(), 22, vec!["sshd".into()]),
            ("127.0.0.1".into(), 10259, vec!["kube-apiserver".into()]),
            ("::".into(), 22, vec!["sshd".into()]),
        ]
    );
    assert_eq!(f.sysctls.bridge_nf_call_iptables.as_deref(), Some("0"));
    assert!(f.modules["br_netfilter"].loaded);
    // date without %N support: whole seconds.
    assert!((f.clock_epoch - 1_795_380_065.0).abs() < 1e-9);
    // A regular file that sha256sum did not report keeps no hash.
    assert_eq!(f.paths["/etc/passwd"].as_ref().unwrap().sha256, None);
    assert_eq!(f.units["kubelet.service"], None);
}

#[test]
fn truncated_output_names_the_open_section() {
    let err = parse(fixture!("truncated-in-listen-ss.txt")).unwrap_err();
    assert_eq!(
        err,
        FactsError::Truncated {
            section: "listen-ss".into()
        }
    );
    assert!(err.to_string().contains("`listen-ss`"), "{err}");
    assert!(err.to_string().contains("run it again"), "{err}");

    let err = parse(fixture!("truncated-no-done.txt")).unwrap_err();
    assert_eq!(
        err,
        FactsError::Unfinished {
            after: "clock".into()
        }
    );
}

#[test]
fn corrupt_output_names_the_section() {
    let err = parse(fixture!("corrupt-missing-meminfo.txt")).unwrap_err();
    assert_eq!(
        err,
        FactsError::MissingSection {
            section: "meminfo".into()
        }
    );

    let err = parse(fixture!("not-probe-output.txt")).unwrap_err();
    assert!(
        matches!(&err, FactsError::NotProbeOutput { first_line } if first_line == "Welcome to the bastion!"),
        "{err}"
    );

    let good = fixture!("ubuntu2204-arm64-swap-foreign-ports.txt");
    let bad = good.replace("cpus=1", "cpus=one");
    let err = parse(&bad).unwrap_err();
    assert!(
        err.to_string().contains("section `basics`") && err.to_string().contains("cpus=one"),
        "{err}"
    );

    let bad = good.replace("MemTotal:         948012 kB", "MemTotal: lots");
    let err = parse(&bad).unwrap_err();
    assert!(
        matches!(&err, FactsError::Malformed { section, line, .. } if section == "meminfo" && line == "MemTotal: lots"),
        "{err}"
    );

    let bad = good.replace("::capstan:: end os", "::capstan:: end osx");
    let err = parse(&bad).unwrap_err().to_string();
    assert!(
        err.contains("`os`") && err.contains("end of `osx`"),
        "{err}"
    );

    let bad = good.replace("::capstan:: probe 1", "::capstan:: probe 7");
    assert_eq!(
        parse(&bad).unwrap_err(),
        FactsError::UnsupportedFormat { found: "7".into() }
    );

    let bad = good.replace(
        "::capstan:: end version-runc 0",
        "::capstan:: end version-runc zero",
    );
    let err = parse(&bad).unwrap_err().to_string();
    assert!(
        err.contains("version-runc") && err.contains("exit status"),
        "{err}"
    );
}

#[test]
fn unknown_sections_from_a_newer_probe_are_kept() {
    let good = fixture!("ubuntu2204-arm64-swap-foreign-ports.txt");
    let newer = good.replace(
        "::capstan:: begin clock",
        "::capstan:: begin state-file\nsomething new\n::capstan:: end state-file\n::capstan:: begin clock",
    );
    let f = parse(&newer).unwrap();
    assert_eq!(f.extra_sections["state-file"], "something new");
}

#[test]
fn version_outputs_of_every_component() {
    let cases = [
        (
            Component::Containerd,
            "containerd github.com/containerd/containerd v1.7.24 88bf19b2105c",
            Some("v1.7.24"),
        ),
        (
            Component::Containerd,
            "containerd containerd.io 1.6.33 d2d58213f83a351ca8f528a95fbd145f5654e957",
            Some("1.6.33"),
        ),
        (
            Component::Runc,
            "runc version 1.2.5\ncommit: v1.2.5-0-g59923ef1",
            Some("1.2.5"),
        ),
        (Component::Kubelet, "Kubernetes v1.35.0", Some("v1.35.0")),
        (Component::Kubelet, "error: unknown flag", None),
        (
            Component::Etcd,
            "etcd Version: 3.5.17\nGit SHA: 507c0de",
            Some("3.5.17"),
        ),
        (
            Component::Kubectl,
            "Client Version: v1.32.3\nKustomize Version: v5.5.0",
            Some("v1.32.3"),
        ),
        (Component::Kubectl, "", None),
    ];
    for (c, out, want) in cases {
        assert_eq!(parse_version_output(c, out).as_deref(), want, "{c}: {out}");
    }
    assert_eq!(
        lenient_semver("v1.32.4-dispatcher").unwrap().to_string(),
        "v1.32.4"
    );
    assert_eq!(lenient_semver("3.5").map(|v| v.to_string()), None);
}

#[test]
fn captured_lab_host_with_systemd() {
    // Captured from a capstan-lab:bookworm-1 container (systemd as PID 1, cgroupns private).
    let f = parse_fixture(fixture!("debian12-amd64-lab-systemd.txt"));
    assert!(f.init.systemd);
    assert_eq!(f.init.pid1.as_deref(), Some("systemd"));
    assert_eq!(f.container.as_deref(), Some("docker"));
    assert_eq!(f.cgroup.version, CgroupVersion::Hybrid);
    assert!(f.has_tool("conntrack") && f.has_tool("socat"));
    let l = f.listeners_on(22);
    assert_eq!(l.len(), 2);
    assert_eq!(
        l[0].processes,
        [Process {
            name: "sshd".into(),
            pid: Some(69)
        }]
    );
    // `sshd` is an alias: the state is ssh.service's, reported under the requested name.
    assert_eq!(f.units["sshd"].as_ref().unwrap().id, "ssh.service");
    assert!(f.units["ssh.service"].as_ref().unwrap().is_active());
    assert!(!f.units["kubelet.service"].as_ref().unwrap().exists());
    let haproxy = f.units["haproxy.service"].as_ref().unwrap();
    assert_eq!(
        (
            haproxy.active_state.as_str(),
            haproxy.unit_file_state.as_str()
        ),
        ("inactive", "disabled")
    );
    assert_eq!(
        f.units["systemd-journald.service"]
            .as_ref()
            .unwrap()
            .unit_file_state,
        "static"
    );
    assert_eq!(f.paths["/usr/sbin/sshd"].as_ref().unwrap().mode, 0o755);
    assert_eq!(f.paths["/etc/kubernetes/admin.conf"], None);
}

#[test]
fn banners_and_stray_lines_between_sections_are_ignored() {
    let good = fixture!("rocky9-amd64-cgroupv2-cluster.txt");
    let noisy = good.replace(
        "::capstan:: begin os",
        "sudo: unable to resolve host cp1: Name or service not known\n::capstan:: begin os",
    );
    assert_eq!(parse(&noisy).unwrap(), parse(good).unwrap());
}

/// Units with no unit file are listed in `units-absent` (systemctl is not asked about them);
/// the others still pair with `systemctl show`'s blocks in order.
#[test]
fn units_without_a_unit_file_are_not_found_without_asking_systemd() {
    let good = fixture!("rocky9-amd64-cgroupv2-cluster.txt");
    let haproxy_block = "\nId=haproxy.service\nLoadState=not-found\nActiveState=inactive\nSubState=dead\nUnitFileState=\n::capstan:: end units 0";
    assert!(good.contains(haproxy_block));
    let split = good.replace(haproxy_block, "\n::capstan:: end units 0").replace(
        "::capstan:: begin units\n",
        "::capstan:: begin units-absent\nhaproxy.service\n::capstan:: end units-absent\n::capstan:: begin units\n",
    );
    assert_eq!(parse(&split).unwrap().units, parse(good).unwrap().units);

    // Every unit absent: no `units` section at all, yet every state is known.
    let req_end = good.find("::capstan:: end request-units\n").unwrap()
        + "::capstan:: end request-units\n".len();
    let units_end =
        good.find("::capstan:: end units 0\n").unwrap() + "::capstan:: end units 0\n".len();
    let none_asked = format!(
        "{}::capstan:: begin units-absent\nkubelet\ncontainerd.service\netcd.service\nhaproxy.service\n::capstan:: end units-absent\n{}",
        &good[..req_end],
        &good[units_end..]
    );
    let f = parse(&none_asked).unwrap();
    assert_eq!(f.units.len(), 4);
    assert!(f.units.values().all(|u| {
        u.as_ref()
            .is_some_and(|u| u.load_state == "not-found" && !u.is_active())
    }));

    // A name that was not requested is an error naming the section.
    let wrong = split.replace(
        "begin units-absent\nhaproxy.service",
        "begin units-absent\nnginx.service",
    );
    let err = parse(&wrong).unwrap_err().to_string();
    assert!(
        err.contains("units-absent") && err.contains("nginx.service"),
        "{err}"
    );
}

/// The fork-free basics (from /proc) say what `id`, `uname` and `nproc` say.
#[test]
fn basics_from_proc_match_the_commands() {
    let facts = probe_here(&ProbeRequest {
        light: true,
        ..ProbeRequest::default()
    });
    let run = |cmd: &str, args: &[&str]| {
        let out = std::process::Command::new(cmd).args(args).output().unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    assert_eq!(facts.uid, Some(run("id", &["-u"]).parse().unwrap()));
    assert_eq!(facts.kernel, run("uname", &["-r"]));
    assert_eq!(facts.machine, run("uname", &["-m"]));
    assert_eq!(facts.cpus, run("nproc", &[]).parse::<u32>().unwrap());
}

/// The files are read by awk when there is one, else by shell loops: both say the same.
#[test]
fn file_sections_by_awk_and_by_the_shell_agree() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("it's a file");
    std::fs::write(&file, "content\n").unwrap();
    let with_paths = ProbeRequest {
        light: true,
        paths: vec![
            file.display().to_string(),
            dir.path().display().to_string(),
            dir.path().join("missing").display().to_string(),
        ],
        installed_state: Some(dir.path().join("installed.tsv").display().to_string()),
        ..ProbeRequest::default()
    };
    let without_paths = ProbeRequest {
        light: true,
        ..ProbeRequest::default()
    };
    for req in [without_paths, with_paths] {
        let script = probe_script(&req).unwrap();
        let with_awk = probe_here(&req);
        // The same script where `have awk` fails.
        let no_awk = script.replace("if have awk; then", "if false; then");
        assert_ne!(no_awk, script);
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&no_awk)
            .output()
            .unwrap();
        assert!(out.status.success());
        let without = parse(&String::from_utf8(out.stdout).unwrap()).unwrap();
        assert_eq!(without.os, with_awk.os);
        assert_eq!(without.swap, with_awk.swap);
        assert_eq!(without.cgroup, with_awk.cgroup);
        assert_eq!(without.modules, with_awk.modules);
        assert!(without.memory_bytes > 0 && without.memory_bytes == with_awk.memory_bytes);
        assert_eq!(without.paths, with_awk.paths);
        assert_eq!(with_awk.paths.len(), req.paths.len());
        if let Some(p) = req.paths.first() {
            let facts = with_awk.paths[p].as_ref().expect("the file exists");
            assert_eq!(
                facts.sha256.as_deref(),
                Some("434728a410a78f56fc1b5899c3593436e61ab0c731e9072d95e96db290205e53")
            );
        }
    }
}
