use super::*;
use crate::facts::{ListeningPort, Process, parse};

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("../../tests/fixtures/facts/", $name))
    };
}

const NOW: f64 = 1_795_380_065.0;

fn rocky() -> Facts {
    parse(fixture!("rocky9-amd64-cgroupv2-cluster.txt")).unwrap()
}
fn ubuntu() -> Facts {
    parse(fixture!("ubuntu2204-arm64-swap-foreign-ports.txt")).unwrap()
}
fn alpine() -> Facts {
    parse(fixture!("alpine-minimal-proc-fallback.txt")).unwrap()
}
fn debian() -> Facts {
    parse(fixture!("debian12-amd64-docker-nosystemd.txt")).unwrap()
}

fn input(name: &str, roles: &[Role], facts: Facts) -> PreflightInput {
    PreflightInput {
        name: name.into(),
        roles: roles.iter().copied().collect(),
        facts,
        received_at: None,
    }
}

fn one(name: &str, roles: &[Role], facts: Facts) -> HostReport {
    let mut facts = facts;
    facts.clock_epoch = NOW;
    evaluate(
        &[input(name, roles, facts)],
        NOW,
        &[],
        &Settings::stacked(true),
    )
    .remove(0)
}

fn level(r: &HostReport, check: &str) -> Level {
    r.check(check)
        .unwrap_or_else(|| panic!("no check {check} in {r:#?}"))
        .level
}

fn msg<'a>(r: &'a HostReport, check: &str) -> &'a str {
    &r.check(check).unwrap().message
}

#[test]
fn a_healthy_control_plane_with_its_own_components_running_passes() {
    let r = one("cp1", &[Role::ControlPlane], rocky());
    assert!(!r.has_errors(), "{:#?}", r.errors().collect::<Vec<_>>());
    assert_eq!(
        r.warnings().count(),
        0,
        "{:#?}",
        r.warnings().collect::<Vec<_>>()
    );
    for port in [
        "Port-6443",
        "Port-10257",
        "Port-10259",
        "Port-2379",
        "Port-2380",
        "Port-10250",
    ] {
        assert_eq!(level(&r, port), Level::Ok, "{port}");
    }
    // kube-controller-manager shows as `kube-controller` (comm is cut at 15 characters).
    assert!(msg(&r, "Port-10257").contains("kube-controller"));
    assert!(msg(&r, "Port-6443").contains("the cluster's own"));
    assert_eq!(level(&r, "NumCPU"), Level::Ok);
    assert_eq!(level(&r, "Mem"), Level::Ok);
    assert_eq!(level(&r, "SystemVerification"), Level::Ok);
    assert!(msg(&r, "SystemVerification").contains("Rocky Linux 9.4"));
}

#[test]
fn ports_depend_on_roles_and_etcd_topology() {
    let names = |r: &HostReport| -> Vec<&str> {
        r.checks
            .iter()
            .map(|c| c.name)
            .filter(|n| n.starts_with("Port-"))
            .collect()
    };
    let worker = one("w1", &[Role::Worker], rocky());
    assert_eq!(names(&worker), ["Port-10250"]);
    let etcd = one("e1", &[Role::Etcd], rocky());
    assert_eq!(names(&etcd), ["Port-2379", "Port-2380"]);
    let lb = one("lb1", &[Role::LoadBalancer], rocky());
    assert!(names(&lb).is_empty());
    // External etcd: control planes do not need 2379/2380.
    let mut f = rocky();
    f.clock_epoch = NOW;
    let cp = evaluate(
        &[input("cp1", &[Role::ControlPlane], f)],
        NOW,
        &[],
        &Settings::stacked(false),
    )
    .remove(0);
    assert_eq!(
        names(&cp),
        ["Port-6443", "Port-10257", "Port-10259", "Port-10250"]
    );
    // Node-only checks are not run on an etcd-only host.
    assert!(etcd.check("Swap").is_none());
    assert!(etcd.check("FileExisting-iptables").is_none());
    assert!(etcd.check("FileExisting-tar").is_some());
}

#[test]
fn a_port_held_by_someone_else_is_an_error_naming_the_holder() {
    let r = one("cp1", &[Role::ControlPlane], ubuntu());
    assert_eq!(level(&r, "Port-6443"), Level::Error);
    assert!(
        msg(&r, "Port-6443").contains("in use by nginx"),
        "{}",
        msg(&r, "Port-6443")
    );
    assert!(msg(&r, "Port-6443").contains("kube-apiserver must listen there"));
    assert_eq!(level(&r, "Port-10250"), Level::Error);
    assert!(msg(&r, "Port-10250").contains("node_exporter"));
    // No process information: cannot prove it is ours.
    assert_eq!(level(&r, "Port-2379"), Level::Error);
    assert!(msg(&r, "Port-2379").contains("cannot see"));
    assert_eq!(level(&r, "Port-10259"), Level::Ok);
}

#[test]
fn a_port_shared_by_ours_and_a_stranger_is_an_error() {
    let mut f = rocky();
    f.listening.as_mut().unwrap().push(ListeningPort {
        address: "127.0.0.1".into(),
        port: 10250,
        processes: vec![Process {
            name: "python3".into(),
            pid: Some(5),
        }],
    });
    let r = one("w1", &[Role::Worker], f);
    assert_eq!(level(&r, "Port-10250"), Level::Error);
    assert!(msg(&r, "Port-10250").contains("kubelet, python3"));
}

#[test]
fn unknown_listeners_make_port_checks_warnings() {
    let mut f = rocky();
    f.listening = None;
    let r = one("w1", &[Role::Worker], f);
    assert_eq!(level(&r, "Port-10250"), Level::Warning);
    assert!(msg(&r, "Port-10250").contains("make sure port 10250 is free"));
}

#[test]
fn swap_sysctls_modules_and_sizes_on_a_small_arm_board() {
    let r = one("pi", &[Role::ControlPlane], ubuntu());
    assert_eq!(level(&r, "Swap"), Level::Error);
    assert!(msg(&r, "Swap").contains("/swap.img") && msg(&r, "Swap").contains("swapoff -a"));
    assert_eq!(
        level(&r, "FileContent--proc-sys-net-ipv4-ip_forward"),
        Level::Error
    );
    assert!(msg(&r, "FileContent--proc-sys-net-ipv4-ip_forward").contains("it is 0"));
    assert_eq!(
        level(
            &r,
            "FileContent--proc-sys-net-bridge-bridge-nf-call-iptables"
        ),
        Level::Error
    );
    assert!(
        msg(
            &r,
            "FileContent--proc-sys-net-bridge-bridge-nf-call-iptables"
        )
        .contains("modprobe br_netfilter")
    );
    assert_eq!(level(&r, "KernelModule-overlay"), Level::Ok);
    assert_eq!(level(&r, "NumCPU"), Level::Error);
    assert!(msg(&r, "NumCPU").contains("1 is less than the required 2"));
    assert_eq!(level(&r, "Mem"), Level::Error);
    assert!(msg(&r, "Mem").contains("926 MiB"), "{}", msg(&r, "Mem"));
    // arm64 Ubuntu is supported.
    assert_eq!(level(&r, "SystemVerification"), Level::Ok);
    assert_eq!(level(&r, "Cgroups"), Level::Ok);
    // Mandatory tools are errors, optional ones warnings (kubeadm's split).
    assert_eq!(level(&r, "FileExisting-iptables"), Level::Error);
    assert!(msg(&r, "FileExisting-iptables").contains("iptables not found in the system path"));
    assert_eq!(level(&r, "FileExisting-conntrack"), Level::Warning);
    assert_eq!(level(&r, "FileExisting-socat"), Level::Warning);
    assert_eq!(level(&r, "FileExisting-ip"), Level::Ok);
    // Workers do not need the control-plane sizes.
    let w = one("pi", &[Role::Worker], ubuntu());
    assert!(w.check("NumCPU").is_none() && w.check("Mem").is_none());
}

#[test]
fn bridge_nf_call_iptables_zero_is_an_error() {
    let r = one("tiny", &[Role::Worker], alpine());
    let c = "FileContent--proc-sys-net-bridge-bridge-nf-call-iptables";
    assert_eq!(level(&r, c), Level::Error);
    assert!(msg(&r, c).contains("it is 0"));
}

#[test]
fn unsupported_os_arch_no_systemd_and_not_root() {
    let r = one("tiny", &[Role::Worker], alpine());
    assert_eq!(level(&r, "SystemVerification"), Level::Error);
    let m = msg(&r, "SystemVerification");
    assert!(
        m.contains("architecture arm (armv7l)") && m.contains("Alpine Linux v3.20"),
        "{m}"
    );
    assert_eq!(level(&r, "SystemdInit"), Level::Error);
    assert!(msg(&r, "SystemdInit").contains("PID 1 is init"));
    assert_eq!(level(&r, "IsPrivilegedUser"), Level::Error);
    assert!(msg(&r, "IsPrivilegedUser").contains("uid 1000"));
    assert_eq!(level(&r, "Cgroups"), Level::Warning);
    assert_eq!(level(&r, "FileExisting-systemctl"), Level::Error);
    assert_eq!(level(&r, "FileExisting-sudo"), Level::Warning);
    assert_eq!(level(&r, "DuplicateMachineID"), Level::Warning);
    assert!(msg(&r, "DuplicateMachineID").contains("systemd-machine-id-setup"));
}

#[test]
fn derivatives_are_warnings_and_old_kernels_too() {
    let mut f = rocky();
    f.os.id = "linuxmint".into();
    f.os.id_like = vec!["ubuntu".into(), "debian".into()];
    f.os.pretty_name = "Linux Mint 21.3".into();
    f.kernel = "4.15.0-213-generic".into();
    let r = one("m", &[Role::Worker], f);
    assert_eq!(level(&r, "SystemVerification"), Level::Warning);
    assert!(msg(&r, "SystemVerification").contains("derives from ubuntu"));
    assert_eq!(level(&r, "KernelVersion"), Level::Warning);
    assert!(msg(&r, "KernelVersion").contains("older than 4.19"));
}

#[test]
fn the_lab_container_host_warns_about_cgroup_v1() {
    let r = one("lab1", &[Role::Worker], debian());
    assert_eq!(level(&r, "Cgroups"), Level::Warning);
    assert!(msg(&r, "Cgroups").contains("failCgroupV1: false"));
    assert_eq!(level(&r, "SystemdInit"), Level::Error);
    assert_eq!(
        level(&r, "FileContent--proc-sys-net-ipv4-ip_forward"),
        Level::Ok
    );
    assert_eq!(
        level(
            &r,
            "FileContent--proc-sys-net-bridge-bridge-nf-call-iptables"
        ),
        Level::Ok
    );
    assert_eq!(level(&r, "Swap"), Level::Ok);
}

#[test]
fn duplicate_hostnames_and_machine_ids_name_the_other_host() {
    // rocky and ubuntu fixtures share a machine-id (a cloned image).
    let mut a = rocky();
    let mut b = ubuntu();
    let mut c = rocky();
    a.clock_epoch = NOW;
    b.clock_epoch = NOW;
    c.clock_epoch = NOW;
    c.machine_id = Some("0123456789abcdef0123456789abcdef".into());
    c.hostname = "CP1.example.internal".into();
    let reports = evaluate(
        &[
            input("cp1", &[Role::ControlPlane], a),
            input("pi", &[Role::Worker], b),
            input("cp2", &[Role::ControlPlane], c),
        ],
        NOW,
        &[],
        &Settings::stacked(true),
    );
    let cp1 = &reports[0];
    assert_eq!(level(cp1, "DuplicateMachineID"), Level::Error);
    assert!(msg(cp1, "DuplicateMachineID").contains("also the machine-id of pi"));
    assert_eq!(level(cp1, "DuplicateHostname"), Level::Error);
    assert!(msg(cp1, "DuplicateHostname").contains("also the hostname of cp2"));
    assert!(msg(cp1, "DuplicateHostname").contains("hostnamectl set-hostname cp1"));
    assert_eq!(level(&reports[1], "DuplicateHostname"), Level::Ok);
    assert!(msg(&reports[1], "DuplicateMachineID").contains("of cp1"));
    assert_eq!(level(&reports[2], "DuplicateMachineID"), Level::Ok);
}

#[test]
fn clock_skew_thresholds_and_per_host_reception_time() {
    let at = |host_clock: f64, received: Option<f64>| {
        let mut f = rocky();
        f.clock_epoch = host_clock;
        let mut i = input("cp1", &[Role::Worker], f);
        i.received_at = received;
        evaluate(&[i], NOW, &[], &Settings::stacked(true)).remove(0)
    };
    assert_eq!(level(&at(NOW + 4.9, None), "ClockSkew"), Level::Ok);
    let w = at(NOW - 12.0, None);
    assert_eq!(level(&w, "ClockSkew"), Level::Warning);
    assert!(msg(&w, "ClockSkew").contains("12.0 s behind"));
    let e = at(NOW + 120.0, None);
    assert_eq!(level(&e, "ClockSkew"), Level::Error);
    assert!(
        msg(&e, "ClockSkew").contains("ahead of") && msg(&e, "ClockSkew").contains("timedatectl")
    );
    // The host answered 100 s after the operator's reference: compare with that moment.
    assert_eq!(
        level(&at(NOW + 100.0, Some(NOW + 100.5)), "ClockSkew"),
        Level::Ok
    );
}

#[test]
fn ignore_turns_matching_errors_into_warnings() {
    let mut f = ubuntu();
    f.clock_epoch = NOW;
    let hosts = [input("pi", &[Role::ControlPlane], f)];
    let r = evaluate(
        &hosts,
        NOW,
        &["swap".into(), " NumCPU ".into(), "port-6443".into()],
        &Settings::stacked(true),
    )
    .remove(0);
    let swap = r.check("Swap").unwrap();
    assert_eq!(swap.level, Level::Warning);
    assert!(swap.ignored);
    assert!(
        swap.message
            .ends_with("(ignored: --ignore-preflight-errors)")
    );
    assert_eq!(level(&r, "NumCPU"), Level::Warning);
    assert_eq!(level(&r, "Port-6443"), Level::Warning);
    assert_eq!(level(&r, "Mem"), Level::Error);
    // Warnings stay warnings, and ok stays ok.
    assert!(!r.check("FileExisting-socat").unwrap().ignored);
    assert!(!r.check("Port-10259").unwrap().ignored);

    let r = evaluate(&hosts, NOW, &["ALL".into()], &Settings::stacked(true)).remove(0);
    assert!(!r.has_errors());
    assert!(r.checks.iter().any(|c| c.ignored));
}

#[test]
fn typos_in_the_ignore_list_are_found() {
    let given = [
        "Swap".to_owned(),
        "all".into(),
        "port-2379".into(),
        "FileExisting-conntrak".into(),
    ];
    assert_eq!(unknown_ignores(&given), ["FileExisting-conntrak"]);
    let names = known_check_names();
    assert!(names.contains(&"FileExisting-conntrack") && names.contains(&"Port-10250"));
}

#[test]
fn reports_serialise_for_json_output() {
    let r = one("pi", &[Role::Worker], ubuntu());
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["host"], "pi");
    let swap = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "Swap")
        .unwrap();
    assert_eq!(swap["level"], "error");
    assert!(swap.get("ignored").is_none());
}

#[test]
fn a_fresh_lab_host_passes_as_a_control_plane_with_cgroup_v1_warned() {
    let mut f = parse(fixture!("debian12-amd64-lab-systemd.txt")).unwrap();
    f.clock_epoch = NOW;
    let r = one("cp1", &[Role::ControlPlane], f);
    assert!(!r.has_errors(), "{:#?}", r.errors().collect::<Vec<_>>());
    let warned: Vec<&str> = r.warnings().map(|c| c.name).collect();
    assert_eq!(warned, ["Cgroups"]);
}

#[test]
fn the_local_api_proxy_on_loopback_does_not_hold_the_api_servers_port() {
    // Under local-proxy every node runs haproxy on 127.0.0.1:6443, and the API server binds
    // the host's own address: both listen on 6443 without conflict.
    let mut f = rocky();
    f.listening.as_mut().unwrap().push(ListeningPort {
        address: "127.0.0.1".into(),
        port: 6443,
        processes: vec![Process {
            name: "haproxy".into(),
            pid: Some(7),
        }],
    });
    let r = one("cp1", &[Role::ControlPlane], f.clone());
    assert_eq!(
        level(&r, "Port-6443"),
        Level::Ok,
        "{}",
        msg(&r, "Port-6443")
    );
    // On the wildcard address it would take the API server's port.
    f.listening.as_mut().unwrap().last_mut().unwrap().address = "0.0.0.0".into();
    let r = one("cp1", &[Role::ControlPlane], f);
    assert_eq!(level(&r, "Port-6443"), Level::Error);
    assert!(msg(&r, "Port-6443").contains("haproxy"));
}

#[test]
fn resolv_conf_and_conntrack_on_container_and_resolved_hosts() {
    let mut lab = rocky();
    lab.clock_epoch = NOW;
    lab.container = Some("docker".into());
    lab.dns = crate::facts::Dns::from_lines(["host 127.0.0.11"]);
    let mut vm = rocky();
    vm.clock_epoch = NOW;
    vm.dns = crate::facts::Dns::from_lines([
        "host 127.0.0.53",
        "resolved_running",
        "resolved_file",
        "resolved 10.0.2.3",
    ]);
    let run = |hosts: &[PreflightInput], s: Settings| evaluate(hosts, NOW, &[], &s);

    // A lab of containers: kube-proxy's conntrack is handled; no upstream is a warning.
    let hosts = [
        input("cp1", &[Role::ControlPlane], lab.clone()),
        input("w1", &[Role::Worker], lab.clone()),
    ];
    let r = run(&hosts, Settings::stacked(true));
    assert_eq!(level(&r[1], "KubeProxyConntrack"), Level::Ok);
    let resolv = r[1].check("ResolvConf").unwrap();
    assert_eq!(resolv.level, Level::Warning);
    assert!(
        resolv.message.contains("loopback nameservers (127.0.0.11)"),
        "{}",
        resolv.message
    );
    assert!(
        resolv.message.contains("cluster.dns.upstream"),
        "{}",
        resolv.message
    );
    // With cluster.dns.upstream the kubelet gets capstan's file.
    let s = Settings {
        dns_upstream: true,
        ..Settings::stacked(true)
    };
    assert_eq!(level(&run(&hosts, s)[1], "ResolvConf"), Level::Ok);

    // A VM first control plane with resolved, a container worker: both need saying.
    let hosts = [
        input("cp1", &[Role::ControlPlane], vm.clone()),
        input("w1", &[Role::Worker], lab),
    ];
    let r = run(&hosts, Settings::stacked(true));
    let cp = r[0].check("ResolvConf").unwrap();
    assert_eq!(cp.level, Level::Ok);
    assert!(cp.message.contains("/run/systemd/resolve/resolv.conf"));
    assert!(
        r[0].check("KubeProxyConntrack").is_none(),
        "not a container"
    );
    let ct = r[1].check("KubeProxyConntrack").unwrap();
    assert_eq!(ct.level, Level::Warning);
    assert!(
        ct.message.contains("conntrack_max_per_core: 0"),
        "{}",
        ct.message
    );
    assert!(
        r[1].check("ResolvConf")
            .unwrap()
            .message
            .contains("no nameservers found"),
        "CoreDNS forwards (cp1 has an upstream) and would fail on w1"
    );
    let s = Settings {
        conntrack_set: true,
        ..Settings::stacked(true)
    };
    assert_eq!(level(&run(&hosts, s)[1], "KubeProxyConntrack"), Level::Ok);
}

#[test]
fn findings_shared_by_hosts_are_grouped() {
    let report = |host: &str, msg: &str| HostReport {
        host: host.into(),
        checks: vec![
            Check {
                name: "Cgroups",
                level: Level::Warning,
                message: "cgroup v1".into(),
                ignored: false,
            },
            Check {
                name: "Swap",
                level: Level::Warning,
                message: msg.into(),
                ignored: false,
            },
        ],
    };
    let reports = [
        report("cp1", "swap on"),
        report("w1", "swap on"),
        report("w2", "swap is 2 GiB"),
    ];
    let g = grouped(&reports, Level::Warning);
    let flat: Vec<(&str, &str, Vec<&str>)> = g
        .iter()
        .map(|(c, h)| (c.name, c.message.as_str(), h.clone()))
        .collect();
    assert_eq!(
        flat,
        vec![
            ("Cgroups", "cgroup v1", vec!["cp1", "w1", "w2"]),
            ("Swap", "swap on", vec!["cp1", "w1"]),
            ("Swap", "swap is 2 GiB", vec!["w2"]),
        ]
    );
    assert!(grouped(&reports, Level::Error).is_empty());
}
