//! A real OpenSSH sshd on a free 127.0.0.1 port, with a fresh host key and its own
//! authorized_keys file, killed when dropped; plus key generation and a private ssh-agent.
//!
//! Needs `/usr/sbin/sshd` (Debian: openssh-server), `ssh-keygen`, `ssh-agent`, `ssh-add`.
#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SSHD: &str = "/usr/sbin/sshd";

/// A key pair made with ssh-keygen.
pub struct KeyPair {
    pub private: PathBuf,
    /// The public key line (`ssh-ed25519 AAAA… comment`).
    pub public: String,
}

/// Generates a key of `kind` (`ed25519`, `ecdsa`, `rsa`) without passphrase into `dir/name`.
pub fn keygen(dir: &Path, name: &str, kind: &str) -> KeyPair {
    let private = dir.join(name);
    let mut cmd = Command::new("ssh-keygen");
    cmd.args([
        "-q",
        "-t",
        kind,
        "-N",
        "",
        "-C",
        &format!("capstan-test-{name}"),
        "-f",
    ])
    .arg(&private);
    if kind == "rsa" {
        cmd.args(["-b", "3072"]);
    }
    let out = cmd.output().expect("ssh-keygen (install openssh-client)");
    assert!(
        out.status.success(),
        "ssh-keygen -t {kind}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = fs::read_to_string(private.with_extension("pub"))
        .expect("read .pub")
        .trim()
        .to_string();
    KeyPair { private, public }
}

/// Options for one sshd.
pub struct SshdConfig {
    /// Host key type (`ed25519`, `ecdsa`, `rsa`).
    pub host_key: &'static str,
    /// Extra sshd_config lines (they win over the defaults).
    pub extra: Vec<String>,
}

impl Default for SshdConfig {
    fn default() -> Self {
        SshdConfig {
            host_key: "ed25519",
            extra: Vec::new(),
        }
    }
}

pub struct Sshd {
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub authorized_keys: PathBuf,
    /// The host key's public line (`ssh-ed25519 AAAA…`, no comment).
    pub host_key_public: String,
    pub log: PathBuf,
    child: Child,
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local addr")
        .port()
}

impl Sshd {
    pub fn start() -> Sshd {
        Self::start_with(SshdConfig::default())
    }

    pub fn start_with(config: SshdConfig) -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: apt-get install -y openssh-server"
        );
        fs::create_dir_all("/run/sshd").expect("mkdir /run/sshd");
        let dir = tempfile::tempdir().expect("temp dir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).expect("chmod");
        let host_key = keygen(dir.path(), "host_key", config.host_key);
        let host_key_public = host_key
            .public
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let authorized_keys = dir.path().join("authorized_keys");
        fs::write(&authorized_keys, "").expect("authorized_keys");
        fs::set_permissions(&authorized_keys, fs::Permissions::from_mode(0o600)).expect("chmod");
        let log = dir.path().join("sshd.log");

        // A free port can be taken between our probe and sshd's bind: retry a few times.
        for _ in 0..5 {
            let port = free_port();
            let config_path = dir.path().join("sshd_config");
            // sshd keeps the first value it reads for an option: the extra lines go first.
            let mut text: String = config.extra.iter().fold(String::new(), |mut t, l| {
                t.push_str(l);
                t.push('\n');
                t
            });
            text.push_str(&format!(
                "Port {port}\n\
                 ListenAddress 127.0.0.1\n\
                 HostKey {}\n\
                 AuthorizedKeysFile {}\n\
                 PidFile none\n\
                 StrictModes no\n\
                 PermitRootLogin prohibit-password\n\
                 PubkeyAuthentication yes\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 UsePAM no\n\
                 AllowTcpForwarding yes\n\
                 MaxStartups 100\n\
                 LogLevel VERBOSE\n\
                 Subsystem sftp internal-sftp\n",
                host_key.private.display(),
                authorized_keys.display()
            ));
            fs::write(&config_path, text).expect("sshd_config");
            let log_file = fs::File::create(&log).expect("sshd log");
            let mut child = Command::new(SSHD)
                .arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file)
                .spawn()
                .expect("start sshd");
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // exited: port taken or bad config; retry or report below
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Sshd {
                        port,
                        dir,
                        authorized_keys,
                        host_key_public,
                        log,
                        child,
                    };
                }
                assert!(
                    Instant::now() < deadline,
                    "sshd did not listen within 10s: {}",
                    fs::read_to_string(&log).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.wait();
        }
        panic!(
            "sshd would not start: {}",
            fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Allows `public_key_line` to log in (as any user; the tests log in as root).
    pub fn authorize(&self, public_key_line: &str) {
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(&self.authorized_keys)
            .expect("open authorized_keys");
        writeln!(f, "{public_key_line}").expect("write authorized_keys");
    }

    /// The known_hosts name: `[127.0.0.1]:port`.
    pub fn known_hosts_name(&self) -> String {
        format!("[127.0.0.1]:{}", self.port)
    }

    /// A known_hosts line for this server.
    pub fn known_hosts_line(&self) -> String {
        format!("{} {}\n", self.known_hosts_name(), self.host_key_public)
    }

    /// What sshd logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private ssh-agent (`ssh-agent -D -a <socket>`), killed when dropped.
pub struct Agent {
    pub socket: PathBuf,
    _dir: tempfile::TempDir,
    child: Child,
}

impl Agent {
    pub fn start() -> Agent {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ssh-agent (install openssh-client)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "ssh-agent did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Agent {
            socket,
            _dir: dir,
            child,
        }
    }

    /// `ssh-add <key>` into this agent.
    pub fn add(&self, key: &Path) {
        let out = Command::new("ssh-add")
            .arg(key)
            .env("SSH_AUTH_SOCK", &self.socket)
            .output()
            .expect("ssh-add");
        assert!(
            out.status.success(),
            "ssh-add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
