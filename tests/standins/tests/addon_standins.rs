//! The addon stand-ins (kube-proxy, CoreDNS, flanneld, pause) against a real etcd, the API
//! server stand-in and the machine's real kubectl and iptables. Tests that touch the kernel
//! (iptables, conntrack sysctls, port 53) run in a network namespace of their own
//! (`unshare --net`, the test re-executing itself), so the machine's rules stay untouched and
//! the kernel answers as it does in a container: a non-initial network namespace cannot write
//! net.netfilter.nf_conntrack_max.
#![allow(clippy::unwrap_used, clippy::format_collect)]

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use support::{Bed, Proc, free_port, kubectl, ok, stamped, wait_for, write};

const NETNS_ENV: &str = "CAPSTAN_ADDON_TEST_NETNS";

/// Runs test `name` again in a new network namespace; true when this is that run.
fn in_own_netns(name: &str) -> bool {
    if std::env::var(NETNS_ENV).ok().as_deref() == Some(name) {
        let st = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .unwrap();
        assert!(st.success());
        return true;
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("unshare")
        .arg("--net")
        .arg("--")
        .arg(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(NETNS_ENV, name)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name} in its own network namespace failed:\n{stdout}\n{stderr}"
    );
    false
}

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").args(["-c", cmd]).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn apply(bed: &Bed, name: &str, yaml: &str) {
    let f = write(bed.dir.path(), name, yaml);
    ok(&kubectl(&bed.admin, &["apply", "-f", &f]), "kubectl apply");
}

fn proxy_config(bed: &Bed, name: &str, healthz: u16, conntrack: &str) -> String {
    write(
        bed.dir.path(),
        name,
        &format!(
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nbindAddress: 0.0.0.0\n\
             clientConnection:\n  kubeconfig: {}\nclusterCIDR: 10.244.0.0/16\nmode: \"\"\n\
             healthzBindAddress: 127.0.0.1:{healthz}\n{conntrack}",
            bed.admin
        ),
    )
}

fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, buf))
}

/// `wait_for` that shows the process's log and the nat table when it times out.
fn wait_until(what: &str, p: &Proc, mut f: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!(
        "timed out waiting for {what}\n--- log:\n{}\n--- nat:\n{}",
        p.log_text(),
        nat_rules()
    );
}

fn nat_rules() -> String {
    sh("iptables -w 5 -t nat -S")
}

fn slice(ips: &[&str]) -> String {
    let eps: String = ips
        .iter()
        .map(|ip| format!("- addresses: [\"{ip}\"]\n  conditions: {{ready: true}}\n"))
        .collect();
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-1\n  namespace: default\n  labels:\n    kubernetes.io/service-name: web\n\
         addressType: IPv4\nports:\n- name: http\n  port: 8080\n  protocol: TCP\nendpoints:\n{eps}"
    )
}

#[test]
fn kube_proxy_conntrack_contract_and_service_routing() {
    if !in_own_netns("kube_proxy_conntrack_contract_and_service_routing") {
        return;
    }
    let bed = Bed::start();
    let d = bed.dir.path();
    let bin = stamped(d, "kube-proxy", support::VERSION);
    let current: i64 = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    // Unknown flags are refused, as pflag does.
    let out = Command::new(&bin).arg("--no-such-flag").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown flag: --no-such-flag"));

    // A max different from the kernel's: written, and the kernel refuses it here, as in
    // every container: kube-proxy exits 1 with the OS error.
    let cfg = proxy_config(
        &bed,
        "refused.yaml",
        free_port(),
        &format!(
            "conntrack:\n  maxPerCore: 32768\n  min: {}\n",
            current + 4096
        ),
    );
    let out = Command::new(&bin)
        .args([format!("--config={cfg}"), "--hostname-override=n1".into()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(r#""Error running ProxyServer" err="open /proc/sys/net/netfilter/nf_conntrack_max: permission denied""#),
        "{err}"
    );

    // A container's /proc/sys is read-only (Docker mounts it so without --privileged): with
    // maxPerCore 0 the TCP timeouts are still set unless zeroed too, and the kernel refuses.
    let ro = |cfg: &str| {
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg("mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && exec \"$0\" \"$@\"")
            .arg(&bin)
            .args([format!("--config={cfg}"), "--hostname-override=n1".into()])
            .output()
            .unwrap()
    };
    let cfg = proxy_config(
        &bed,
        "ro.yaml",
        free_port(),
        "conntrack:\n  maxPerCore: 0\n",
    );
    let out = ro(&cfg);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(r#""Error running ProxyServer" err="open /proc/sys/net/netfilter/nf_conntrack_tcp_timeout_established: read-only file system""#),
        "{err}"
    );
    let hz = free_port();
    let cfg = proxy_config(
        &bed,
        "ro-zero.yaml",
        hz,
        "conntrack:\n  maxPerCore: 0\n  tcpEstablishedTimeout: 0s\n  tcpCloseWaitTimeout: 0s\n",
    );
    let mut zeroed = Proc::spawn(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg("mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && exec \"$0\" \"$@\"")
            .arg(&bin)
            .args([format!("--config={cfg}"), "--hostname-override=n1".into()]),
        d.join("proxy-ro.log"),
    );
    let addr = format!("127.0.0.1:{hz}");
    wait_for(
        "kube-proxy healthz (read-only /proc/sys)",
        Duration::from_secs(20),
        || http_get(&addr, "/healthz").is_some_and(|(s, _)| s == 200),
    );
    assert!(
        !zeroed.log_text().contains("Set sysctl"),
        "{}",
        zeroed.log_text()
    );
    zeroed.kill();

    // The same value as the kernel's: read, not written, so it starts.
    let hz = free_port();
    let cfg = proxy_config(
        &bed,
        "same.yaml",
        hz,
        &format!("conntrack:\n  maxPerCore: 1\n  min: {current}\n"),
    );
    let mut same = Proc::spawn(
        Command::new(&bin).args([format!("--config={cfg}"), "--hostname-override=n1".into()]),
        d.join("proxy-same.log"),
    );
    let addr = format!("127.0.0.1:{hz}");
    wait_for("kube-proxy healthz", Duration::from_secs(20), || {
        http_get(&addr, "/healthz").is_some_and(|(s, _)| s == 200)
    });
    assert!(
        !same.log_text().contains("net/netfilter/nf_conntrack_max"),
        "{}",
        same.log_text()
    );
    same.kill();

    // A network in this namespace for the Service traffic: the endpoint listens on 10.1.0.1.
    sh(
        "ip link add v0 type veth peer name v1 && ip addr add 10.1.0.1/24 dev v0 && ip link set v1 up && ip link set v0 up \
        && ip route add 10.96.0.0/12 dev v0",
    );
    let backend = TcpListener::bind("10.1.0.1:0").unwrap();
    let bport = backend.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut c in backend.incoming().flatten() {
            let _ = c.write_all(b"hello from the endpoint\n");
        }
    });
    apply(
        &bed,
        "web.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: default\nspec:\n  clusterIP: 10.96.0.50\n  \
         ports:\n  - name: http\n    port: 80\n    protocol: TCP\n    targetPort: 8080\n",
    );
    apply(
        &bed,
        "slice.yaml",
        &slice(&["10.1.0.1"]).replace("port: 8080", &format!("port: {bport}")),
    );

    // maxPerCore 0 leaves conntrack alone (capstan's setting on container hosts).
    let hz = free_port();
    let cfg = proxy_config(&bed, "zero.yaml", hz, "conntrack:\n  maxPerCore: 0\n");
    let proxy = Proc::spawn(
        Command::new(&bin).args([format!("--config={cfg}"), "--hostname-override=n1".into()]),
        d.join("proxy.log"),
    );
    let addr = format!("127.0.0.1:{hz}");
    wait_for("kube-proxy healthz", Duration::from_secs(20), || {
        http_get(&addr, "/healthz").is_some_and(|(s, _)| s == 200)
    });
    let dnat = format!("-j DNAT --to-destination 10.1.0.1:{bport}");
    wait_until("the DNAT rule", &proxy, || nat_rules().contains(&dnat));
    let rules = nat_rules();
    assert!(
        rules.contains(
            "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"
        ),
        "{rules}"
    );
    assert!(
        rules.contains(
            "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"
        ),
        "{rules}"
    );
    assert!(rules.contains("-A KUBE-SERVICES -d 10.96.0.50/32 -p tcp -m comment --comment \"default/web:http cluster IP\" -m tcp --dport 80 -j KUBE-SVC-"), "{rules}");
    assert!(
        !proxy.log_text().contains("nf_conntrack_max"),
        "{}",
        proxy.log_text()
    );

    // The ClusterIP really routes to the endpoint.
    let mut c =
        TcpStream::connect_timeout(&"10.96.0.50:80".parse().unwrap(), Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect 10.96.0.50:80: {e}\n{rules}"));
    let mut got = String::new();
    c.read_to_string(&mut got).unwrap();
    assert_eq!(got, "hello from the endpoint\n");

    // A second endpoint: resynced with a statistic split; the jumps are not duplicated.
    apply(
        &bed,
        "slice.yaml",
        &slice(&["10.1.0.1", "10.1.0.2"]).replace("port: 8080", &format!("port: {bport}")),
    );
    wait_for("two endpoints", Duration::from_secs(20), || {
        nat_rules().contains(&format!("--to-destination 10.1.0.2:{bport}"))
    });
    let rules = nat_rules();
    assert!(
        rules.contains("-m statistic --mode random --probability 0.50000000000"),
        "{rules}"
    );
    assert_eq!(
        rules
            .matches("-A OUTPUT -m comment --comment \"kubernetes service portals\"")
            .count(),
        1,
        "{rules}"
    );

    // A Service without endpoints: refused at once in the filter table.
    apply(
        &bed,
        "empty.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: empty\n  namespace: default\nspec:\n  clusterIP: 10.96.0.51\n  \
         ports:\n  - name: http\n    port: 80\n    protocol: TCP\n",
    );
    wait_for("the REJECT rule", Duration::from_secs(20), || {
        sh("iptables -w 5 -t filter -S").contains("-A KUBE-SERVICES -d 10.96.0.51/32 -p tcp -m comment --comment \"default/empty:http has no endpoints\" -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable")
    });
    let e = TcpStream::connect_timeout(&"10.96.0.51:80".parse().unwrap(), Duration::from_secs(5))
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
    ok(
        &kubectl(&bed.admin, &["delete", "service", "empty"]),
        "kubectl delete",
    );

    // The Service gone: its chains are deleted.
    ok(
        &kubectl(&bed.admin, &["delete", "service", "web"]),
        "kubectl delete",
    );
    wait_for("the service chains to go", Duration::from_secs(20), || {
        // Only web's: the API server's own `kubernetes` Service keeps its chains.
        !nat_rules().contains("default/web")
    });
    drop(proxy);

    // --cleanup removes every rule and chain of the proxy.
    let out = Command::new(&bin).arg("--cleanup").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rules = nat_rules();
    assert!(!rules.contains("KUBE-"), "{rules}");
    let rules = sh("iptables -w 5 -t filter -S");
    assert!(!rules.contains("KUBE-"), "{rules}");
}

#[test]
fn kube_proxy_forgives_unknown_fields_but_not_bad_values() {
    let bed = Bed::start();
    let bin = stamped(bed.dir.path(), "kube-proxy", support::VERSION);
    let cfg = write(
        bed.dir.path(),
        "bad.yaml",
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nconntrack:\n  maxPerCore: lots\n",
    );
    let out = Command::new(&bin)
        .arg(format!("--config={cfg}"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(r#""command failed" err="failed complete: failed to decode: json: cannot unmarshal string"#), "{err}");
    // An unknown field is a strict-decoding error the real kube-proxy logs and forgives;
    // here the missing kubeconfig then stops it.
    let cfg = write(
        bed.dir.path(),
        "lenient.yaml",
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nudpIdleTimeout: 250ms\n\
         clientConnection:\n  kubeconfig: /nonexistent/kubeconfig.conf\n",
    );
    let out = Command::new(&bin)
        .arg(format!("--config={cfg}"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(r#""Using lenient decoding as strict decoding failed" err="strict decoding error: unknown field \"udpIdleTimeout\"""#), "{err}");
    assert!(err.contains(r#""Error running ProxyServer" err="stat /nonexistent/kubeconfig.conf: no such file or directory""#), "{err}");
}

/// One DNS query over UDP or TCP; (rcode, A/AAAA addresses of the answer section).
fn dns_query(server: &str, name: &str, qtype: u16, tcp: bool) -> (u8, Vec<String>) {
    let q = dns_msg(name, qtype);
    let reply = if tcp {
        let mut s = TcpStream::connect(server).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(&u16::try_from(q.len()).unwrap().to_be_bytes())
            .unwrap();
        s.write_all(&q).unwrap();
        let mut len = [0u8; 2];
        s.read_exact(&mut len).unwrap();
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut buf).unwrap();
        buf
    } else {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.send_to(&q, server).unwrap();
        let mut buf = vec![0u8; 4096];
        let (n, _) = s.recv_from(&mut buf).unwrap();
        buf.truncate(n);
        buf
    };
    assert_eq!(reply[..2], q[..2], "reply id");
    assert!(reply[2] & 0x80 != 0, "QR bit");
    let rcode = reply[3] & 0x0f;
    let an = u16::from_be_bytes([reply[6], reply[7]]);
    // Skip the question (names are uncompressed in the question).
    let mut pos = 12;
    pos = skip_name(&reply, pos) + 4;
    let mut ips = Vec::new();
    for _ in 0..an {
        pos = skip_name(&reply, pos);
        let rtype = u16::from_be_bytes([reply[pos], reply[pos + 1]]);
        let len = usize::from(u16::from_be_bytes([reply[pos + 8], reply[pos + 9]]));
        let rd = &reply[pos + 10..pos + 10 + len];
        if rtype == 1 {
            ips.push(format!("{}.{}.{}.{}", rd[0], rd[1], rd[2], rd[3]));
        }
        pos += 10 + len;
    }
    (rcode, ips)
}

fn skip_name(m: &[u8], mut pos: usize) -> usize {
    loop {
        let l = m[pos];
        if l & 0xc0 == 0xc0 {
            return pos + 2;
        }
        pos += 1 + usize::from(l);
        if l == 0 {
            return pos;
        }
    }
}

fn dns_msg(name: &str, qtype: u16) -> Vec<u8> {
    let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for l in name.trim_end_matches('.').split('.') {
        m.push(u8::try_from(l.len()).unwrap());
        m.extend_from_slice(l.as_bytes());
    }
    m.push(0);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&[0, 1]);
    m
}

/// A fake upstream resolver: answers every A query with 192.0.2.7.
fn fake_upstream(addr: &str) {
    let s = std::net::UdpSocket::bind(addr).unwrap();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, peer)) = s.recv_from(&mut buf) {
            let q = &buf[..n];
            let qend = skip_name(q, 12) + 4;
            let mut r = q[..qend].to_vec();
            r[2] = 0x81;
            r[3] = 0x80;
            r[6..8].copy_from_slice(&[0, 1]);
            r[8..12].copy_from_slice(&[0, 0, 0, 0]);
            r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 7]);
            let _ = s.send_to(&r, peer);
        }
    });
}

fn corefile(kubeconfig: &str, resolv: &str, extra: &str) -> String {
    format!(
        ".:53 {{\n    errors\n    health {{\n       lameduck 5s\n    }}\n    ready\n    \
         kubernetes cluster.local in-addr.arpa ip6.arpa {{\n       kubeconfig {kubeconfig}\n       pods insecure\n       \
         fallthrough in-addr.arpa ip6.arpa\n       ttl 30\n    }}\n    prometheus :9153\n    \
         forward . {resolv} {{\n       max_concurrent 1000\n    }}\n    cache 30 {{\n       disable success cluster.local\n       \
         disable denial cluster.local\n    }}\n    loop\n    reload\n    loadbalance\n{extra}}}\n"
    )
}

fn coredns(bed: &Bed, conf: &str) -> Command {
    let mut c = Command::new(stamped(bed.dir.path(), "coredns", "v1.11.3"));
    c.args(["-conf", conf]).env("POD_IP", "127.0.0.1");
    c
}

#[test]
fn coredns_answers_from_services_forwards_and_fails_like_the_real_one() {
    if !in_own_netns("coredns_answers_from_services_forwards_and_fails_like_the_real_one") {
        return;
    }
    let bed = Bed::start();
    let d = bed.dir.path();
    sh(
        "ip link add v0 type veth peer name v1 && ip addr add 10.1.0.1/24 dev v0 && ip link set v1 up && ip link set v0 up",
    );
    let resolv = write(d, "resolv.conf", "search example\nnameserver 10.1.0.1\n");
    // Without POD_IP: the host's non-loopback addresses (pods share the host's network).
    let conf = write(d, "Corefile", &corefile(&bed.admin, &resolv, ""));
    let mut host = coredns(&bed, &conf);
    host.env_remove("POD_IP");
    let host = Proc::spawn(&mut host, d.join("coredns-host.log"));
    wait_for(
        "CoreDNS /ready on the host address",
        Duration::from_secs(20),
        || http_get("10.1.0.1:8181", "/ready").is_some_and(|(s, _)| s == 200),
    );
    // The API server's `kubernetes` Service answers there.
    let (rcode, answers) = dns_query(
        "10.1.0.1:53",
        "kubernetes.default.svc.cluster.local",
        1,
        true,
    );
    assert_eq!((rcode, answers.len()), (0, 1), "{answers:?}");
    assert!(
        TcpStream::connect("127.0.0.1:53").is_err(),
        "{}",
        host.log_text()
    );
    drop(host);
    fake_upstream("10.1.0.1:53");
    apply(
        &bed,
        "web.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: default\nspec:\n  clusterIP: 10.96.0.50\n  \
         ports:\n  - name: http\n    port: 80\n    protocol: TCP\n",
    );
    let conf = write(d, "Corefile", &corefile(&bed.admin, &resolv, ""));
    let dns1 = Proc::spawn(&mut coredns(&bed, &conf), d.join("coredns-1.log"));
    wait_for("CoreDNS /ready", Duration::from_secs(20), || {
        http_get("127.0.0.1:8181", "/ready").is_some_and(|(s, _)| s == 200)
    });
    assert_eq!(http_get("127.0.0.1:8080", "/health").unwrap().0, 200);
    let log = dns1.log_text();
    assert!(log.contains(".:53\n"), "{log}");
    assert!(log.contains("CoreDNS-1.11.3"), "{log}");
    assert!(
        log.contains("[INFO] plugin/reload: Running configuration SHA512 = "),
        "{log}"
    );

    // A second replica on the same address (SO_REUSEPORT) starts too.
    let mut dns2 = Proc::spawn(&mut coredns(&bed, &conf), d.join("coredns-2.log"));
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        dns2.child.try_wait().unwrap().is_none(),
        "{}",
        dns2.log_text()
    );
    dns2.kill();

    for tcp in [false, true] {
        let (rc, ips) = dns_query("127.0.0.1:53", "web.default.svc.cluster.local", 1, tcp);
        assert_eq!((rc, ips), (0, vec!["10.96.0.50".to_string()]), "tcp={tcp}");
        let (rc, ips) = dns_query("127.0.0.1:53", "nope.default.svc.cluster.local", 1, tcp);
        assert_eq!((rc, ips.len()), (3, 0), "NXDOMAIN, tcp={tcp}");
        let (rc, ips) = dns_query("127.0.0.1:53", "example.org", 1, tcp);
        assert_eq!(
            (rc, ips),
            (0, vec!["192.0.2.7".to_string()]),
            "forwarded, tcp={tcp}"
        );
    }
    // A Service created later is answered once listed.
    apply(
        &bed,
        "db.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: db\n  namespace: default\nspec:\n  clusterIP: 10.96.0.60\n  \
         ports:\n  - name: pg\n    port: 5432\n    protocol: TCP\n",
    );
    wait_for("db to resolve", Duration::from_secs(10), || {
        dns_query("127.0.0.1:53", "db.default.svc.cluster.local", 1, false).1
            == vec!["10.96.0.60".to_string()]
    });
    drop(dns1);

    // A loopback upstream is the pod itself: the loop plugin stops CoreDNS.
    let resolv = write(
        d,
        "resolv-stub.conf",
        "nameserver 127.0.0.53\noptions edns0 trust-ad\n",
    );
    let conf = write(d, "Corefile-loop", &corefile(&bed.admin, &resolv, ""));
    let out = coredns(&bed, &conf).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("[FATAL] plugin/loop: Loop (127.0.0.53:"),
        "{text}"
    );
    assert!(text.contains(" -> :53) detected for zone \".\", see https://coredns.io/plugins/loop#troubleshooting. Query: \"HINFO "), "{text}");

    // No nameserver at all.
    let resolv = write(d, "resolv-empty.conf", "search example\n");
    let conf = write(d, "Corefile-empty", &corefile(&bed.admin, &resolv, ""));
    let out = coredns(&bed, &conf).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("plugin/forward: no nameservers found"));

    // An unknown directive.
    let conf = write(
        d,
        "Corefile-bogus",
        &corefile(&bed.admin, "10.1.0.1", "    bogus on\n"),
    );
    let out = coredns(&bed, &conf).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{conf}:24 - Error during parsing: Unknown directive 'bogus'"
        )),
        "{err}"
    );
}

#[test]
fn flanneld_needs_the_nodes_pod_cidr_then_writes_the_subnet_file() {
    let bed = Bed::start();
    let d = bed.dir.path();
    let bin = stamped(d, "flanneld", "v0.26.7");
    let net_conf = write(
        d,
        "net-conf.json",
        "{\n  \"Network\": \"10.244.0.0/16\",\n  \"EnableNFTables\": false,\n  \"Backend\": {\n    \"Type\": \"vxlan\"\n  }\n}\n",
    );
    let subnet = d.join("run-flannel").join("subnet.env");
    let run = || {
        let mut c = Command::new(&bin);
        c.args([
            "--ip-masq".to_string(),
            "--kube-subnet-mgr".into(),
            format!("--kubeconfig-file={}", bed.admin),
            format!("--net-config-path={net_conf}"),
            format!("--subnet-file={}", subnet.display()),
        ])
        .env("NODE_NAME", "n1");
        c
    };
    let out = Command::new(&bin).arg("--no-such").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("flag provided but not defined: -no-such")
    );

    apply(
        &bed,
        "node.yaml",
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: n1\nstatus:\n  addresses:\n  - type: InternalIP\n    address: 10.1.0.9\n",
    );
    let out = run().output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "Error registering network: failed to acquire lease: node \"n1\" pod cidr not assigned"
        ),
        "{err}"
    );
    assert!(!subnet.exists());

    ok(
        &kubectl(
            &bed.admin,
            &[
                "patch",
                "node",
                "n1",
                "-p",
                r#"{"spec":{"podCIDR":"10.244.1.0/24","podCIDRs":["10.244.1.0/24"]}}"#,
            ],
        ),
        "kubectl patch node",
    );
    let mut p = Proc::spawn(&mut run(), d.join("flanneld.log"));
    wait_for("subnet.env", Duration::from_secs(15), || subnet.exists());
    assert_eq!(
        std::fs::read_to_string(&subnet).unwrap(),
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        p.child.try_wait().unwrap().is_none(),
        "flanneld stays up: {}",
        p.log_text()
    );
    assert!(
        p.log_text().contains("Running backend."),
        "{}",
        p.log_text()
    );
}

#[test]
fn pause_sleeps_until_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let bin = stamped(dir.path(), "pause", "v3.10.0");
    let out = Command::new(&bin).arg("-v").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "pause.c v3.10\n");
    let mut p = Proc::spawn(&mut Command::new(&bin), dir.path().join("pause.log"));
    std::thread::sleep(Duration::from_millis(500));
    assert!(p.child.try_wait().unwrap().is_none());
    let pid = nix::unistd::Pid::from_raw(i32::try_from(p.child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let st = p.child.wait().unwrap();
    assert_eq!(st.code(), Some(0));
    assert!(
        p.log_text()
            .contains("Shutting down, got signal: Terminated"),
        "{}",
        p.log_text()
    );
}

#[test]
fn coredns_without_a_kubeconfig_needs_the_in_cluster_environment() {
    let dir = tempfile::tempdir().unwrap();
    let conf = write(
        dir.path(),
        "Corefile",
        ".:53 {\n    kubernetes cluster.local\n    forward . 192.0.2.53\n}\n",
    );
    let out = Command::new(stamped(dir.path(), "coredns", "v1.11.3"))
        .args(["-conf", &conf])
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "plugin/kubernetes: unable to load in-cluster configuration, KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be defined"
        ),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(stamped(dir.path(), "coredns", "v1.11.3"))
        .arg("-bogus")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("flag provided but not defined: -bogus"));
}
