//! Test bed for the stand-ins: a PKI made with rcgen, a real etcd over TLS on loopback,
//! stamped copies of the stand-in binary, kubeconfigs and the machine's real kubectl.
#![allow(dead_code, clippy::unwrap_used, clippy::missing_panics_doc)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

pub const VERSION: &str = "v1.32.4";

pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub pem: String,
}

pub struct Pair {
    pub cert: String,
    pub key: String,
}

impl Ca {
    pub fn new(cn: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = p.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    /// A leaf: CN, O (groups), SANs (IPs or DNS names), for server and/or client use.
    pub fn issue(
        &self,
        cn: &str,
        orgs: &[&str],
        sans: &[&str],
        server: bool,
        client: bool,
    ) -> Pair {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        for o in orgs {
            p.distinguished_name.push(DnType::OrganizationName, *o);
        }
        for s in sans {
            p.subject_alt_names.push(match s.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*s).try_into().unwrap()),
            });
        }
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        if server {
            p.extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if client {
            p.extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        Pair {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

pub fn write(dir: &Path, name: &str, content: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p.to_string_lossy().into_owned()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A copy of the stand-in named `name` with `version` stamped, in `dir`.
pub fn stamped(dir: &Path, name: &str, version: &str) -> PathBuf {
    let dest = dir.join(name);
    let st = Command::new(env!("CARGO_BIN_EXE_standin"))
        .args([
            "stamp",
            env!("CARGO_BIN_EXE_standin"),
            dest.to_str().unwrap(),
            version,
        ])
        .status()
        .unwrap();
    assert!(st.success());
    dest
}

/// A child process killed on drop; its output goes to a log file.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(cmd: &mut Command, log: PathBuf) -> Proc {
        let f = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdout(Stdio::from(f.try_clone().unwrap()))
            .stderr(Stdio::from(f))
            .spawn()
            .unwrap();
        Proc { child, log }
    }
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// A whole control plane on loopback: PKI, a real etcd over TLS and the API server stand-in.
pub struct Bed {
    pub dir: tempfile::TempDir,
    pub ca: Ca,
    pub etcd_ca: Ca,
    pub etcd_url: String,
    pub api_url: String,
    pub admin: String,
    pub etcd: Proc,
    pub api: Option<Proc>,
    pub etcd_client: Pair,
}

impl Bed {
    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }

    pub fn start() -> Bed {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ca = Ca::new("kubernetes");
        let etcd_ca = Ca::new("etcd-ca");
        write(d, "ca.crt", &ca.pem);
        write(d, "etcd-ca.crt", &etcd_ca.pem);
        let es = etcd_ca.issue("etcd-server", &[], &["127.0.0.1", "localhost"], true, true);
        write(d, "etcd-server.crt", &es.cert);
        write(d, "etcd-server.key", &es.key);
        let ec = etcd_ca.issue("kube-apiserver-etcd-client", &[], &[], false, true);
        write(d, "etcd-client.crt", &ec.cert);
        write(d, "etcd-client.key", &ec.key);
        let port = free_port();
        let peer = free_port();
        let etcd_url = format!("https://127.0.0.1:{port}");
        let etcd = Proc::spawn(
            Command::new("etcd").args([
                "--name",
                "t",
                "--data-dir",
                &d.join("etcd-data").to_string_lossy(),
                "--listen-client-urls",
                &etcd_url,
                "--advertise-client-urls",
                &etcd_url,
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
                "--initial-cluster",
                &format!("t=http://127.0.0.1:{peer}"),
                "--cert-file",
                &d.join("etcd-server.crt").to_string_lossy(),
                "--key-file",
                &d.join("etcd-server.key").to_string_lossy(),
                "--trusted-ca-file",
                &d.join("etcd-ca.crt").to_string_lossy(),
                "--client-cert-auth",
            ]),
            d.join("etcd.log"),
        );
        let apiserver_cert = ca.issue(
            "kube-apiserver",
            &[],
            &["127.0.0.1", "localhost", "kubernetes"],
            true,
            false,
        );
        write(d, "apiserver.crt", &apiserver_cert.cert);
        write(d, "apiserver.key", &apiserver_cert.key);
        let sa = KeyPair::generate().unwrap();
        write(d, "sa.key", &sa.serialize_pem());
        write(d, "sa.pub", &sa.public_key_pem());
        let admin = ca.issue("kubernetes-admin", &["system:masters"], &[], false, true);
        let api_port = free_port();
        let api_url = format!("https://127.0.0.1:{api_port}");
        let admin_kc = kubeconfig(d, "admin.conf", &api_url, &ca.pem, &admin);
        let mut bed = Bed {
            dir,
            ca,
            etcd_ca,
            etcd_url,
            api_url,
            admin: admin_kc,
            etcd,
            api: None,
            etcd_client: ec,
        };
        bed.start_apiserver(api_port);
        bed
    }

    pub fn apiserver_args(&self, port: u16) -> Vec<String> {
        let p = |n: &str| self.path(n);
        vec![
            "--advertise-address=127.0.0.1".into(),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={port}"),
            "--allow-privileged=true".into(),
            "--authorization-mode=Node,RBAC".into(),
            format!("--client-ca-file={}", p("ca.crt")),
            "--enable-admission-plugins=NodeRestriction".into(),
            "--enable-bootstrap-token-auth=true".into(),
            format!("--etcd-cafile={}", p("etcd-ca.crt")),
            format!("--etcd-certfile={}", p("etcd-client.crt")),
            format!("--etcd-keyfile={}", p("etcd-client.key")),
            format!("--etcd-servers={}", self.etcd_url),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-account-key-file={}", p("sa.pub")),
            format!("--service-account-signing-key-file={}", p("sa.key")),
            "--service-cluster-ip-range=10.96.0.0/12".into(),
            format!("--tls-cert-file={}", p("apiserver.crt")),
            format!("--tls-private-key-file={}", p("apiserver.key")),
        ]
    }

    fn start_apiserver(&mut self, port: u16) {
        let bin = stamped(self.dir.path(), "kube-apiserver", VERSION);
        let args = self.apiserver_args(port);
        self.api = Some(Proc::spawn(
            Command::new(bin).args(&args),
            self.dir.path().join("apiserver.log"),
        ));
        let admin = self.admin.clone();
        wait_for(
            "the API server to be ready",
            Duration::from_secs(30),
            || {
                kubectl(&admin, &["get", "--raw", "/readyz"])
                    .status
                    .success()
            },
        );
    }

    /// etcdctl get, values only.
    pub fn etcd_get(&self, key: &str, prefix: bool) -> String {
        let mut args = vec![
            format!("--endpoints={}", self.etcd_url),
            format!("--cacert={}", self.path("etcd-ca.crt")),
            format!("--cert={}", self.path("etcd-client.crt")),
            format!("--key={}", self.path("etcd-client.key")),
            "get".into(),
            key.into(),
            "--print-value-only".into(),
        ];
        if prefix {
            args.push("--prefix".into());
        }
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "etcdctl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn logs(&self) -> String {
        format!(
            "--- apiserver log:\n{}\n--- etcd log (tail):\n{}",
            self.api.as_ref().map(Proc::log_text).unwrap_or_default(),
            self.etcd
                .log_text()
                .lines()
                .rev()
                .take(15)
                .collect::<Vec<_>>()
                .join("\n")
        )
    }
}

pub fn kubeconfig(dir: &Path, name: &str, server: &str, ca_pem: &str, client: &Pair) -> String {
    use base64::Engine;
    let b = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\n\
         contexts:\n- name: ctx\n  context:\n    cluster: c\n    user: u\ncurrent-context: ctx\nusers:\n- name: u\n  user:\n    \
         client-certificate-data: {}\n    client-key-data: {}\n",
        b(ca_pem),
        b(&client.cert),
        b(&client.key)
    );
    write(dir, name, &text)
}

pub fn kubectl(kubeconfig: &str, args: &[&str]) -> Output {
    Command::new("kubectl")
        .arg(format!("--kubeconfig={kubeconfig}"))
        .arg("--request-timeout=20s")
        .args(args)
        .env_remove("KUBECONFIG")
        .output()
        .unwrap()
}

pub fn ok(out: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A kubelet stand-in at `version` registering node `name` through `bed`'s API server, with
/// an empty static pod folder. Killed on drop.
pub fn start_kubelet(bed: &Bed, name: &str, version: &str) -> Proc {
    let d = bed.dir.path().join(format!("kubelet-{name}"));
    std::fs::create_dir_all(d.join("manifests")).unwrap();
    std::fs::create_dir_all(d.join("images")).unwrap();
    let node = bed.ca.issue(
        &format!("system:node:{name}"),
        &["system:nodes"],
        &[],
        false,
        true,
    );
    let kc = kubeconfig(&d, "kubelet.conf", &bed.api_url, &bed.ca.pem, &node);
    let serving = bed.ca.issue(name, &[], &["127.0.0.1"], true, false);
    let cert = write(&d, "kubelet.crt", &serving.cert);
    let key = write(&d, "kubelet.key", &serving.key);
    let (port, hz) = (free_port(), free_port());
    let cfg = write(
        &d,
        "config.yaml",
        &format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nstaticPodPath: {}\n\
             cgroupDriver: systemd\nclusterDNS: [10.96.0.10]\nclusterDomain: cluster.local\n\
             tlsCertFile: {cert}\ntlsPrivateKeyFile: {key}\nauthentication:\n  x509:\n    clientCAFile: {}\n\
             port: {port}\nhealthzPort: {hz}\n",
            d.join("manifests").display(),
            bed.path("ca.crt")
        ),
    );
    let bin = stamped(&d, "kubelet", version);
    Proc::spawn(
        Command::new(bin)
            .env("CAPSTAN_STANDIN_IMAGE_STORE", d.join("images"))
            .env("CAPSTAN_STANDIN_POD_LOG_DIR", d.join("pod-logs"))
            .args([
                format!("--config={cfg}"),
                format!("--kubeconfig={kc}"),
                format!("--hostname-override={name}"),
                "--node-ip=127.0.0.1".into(),
                "--container-runtime-endpoint=unix:///run/containerd/containerd.sock".into(),
                format!("--root-dir={}", d.join("root").display()),
            ]),
        d.join("kubelet.log"),
    )
}
