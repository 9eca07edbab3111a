//! capstan::ssh against real OpenSSH sshd instances on 127.0.0.1.
//!
//! Needs openssh-server (`/usr/sbin/sshd`), openssh-client and sudo, and root (sshd logs in as
//! root with the test's own authorized_keys file).
#![allow(clippy::unwrap_used)]

#[path = "support/sshd.rs"]
mod sshd;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use capstan::inventory::Become;
use capstan::ssh::{
    BastionTarget, Connection, SshError, SshOptions, Step, Target, connect_all, quote, sudo_command,
};
use sshd::{Agent, KeyPair, Sshd, SshdConfig, keygen};

/// Options that touch nothing of the machine's own SSH setup.
fn options(state: &Path) -> SshOptions {
    let mut opts = SshOptions::new(state.join(".capstan/known_hosts"));
    opts.known_hosts = vec![state.join("user_known_hosts")];
    opts.ssh_config = None;
    opts.agent_socket = None;
    opts.default_identities = Vec::new();
    opts.connect_timeout = Duration::from_secs(10);
    opts
}

fn target(name: &str, port: u16, key: Option<&Path>) -> Target {
    Target {
        name: name.into(),
        address: "127.0.0.1".into(),
        port: Some(port),
        user: Some("root".into()),
        identity_file: key.map(Path::to_path_buf),
        become_method: Become::None,
        bastion: None,
    }
}

/// An sshd with one authorized ed25519 key, whose host key the user's known_hosts holds.
struct Trusted {
    sshd: Sshd,
    key: KeyPair,
    state: tempfile::TempDir,
}

impl Trusted {
    fn new() -> Trusted {
        Self::with(Sshd::start())
    }

    fn with(sshd: Sshd) -> Trusted {
        let state = tempfile::tempdir().unwrap();
        let key = keygen(state.path(), "id_ed25519", "ed25519");
        sshd.authorize(&key.public);
        std::fs::write(
            state.path().join("user_known_hosts"),
            sshd.known_hosts_line(),
        )
        .unwrap();
        Trusted { sshd, key, state }
    }

    fn opts(&self) -> SshOptions {
        options(self.state.path())
    }

    fn target(&self) -> Target {
        target("node1", self.sshd.port, Some(&self.key.private))
    }

    async fn connect(&self) -> Connection {
        Connection::connect(&self.target(), &self.opts())
            .await
            .unwrap_or_else(|e| panic!("{e}\nsshd log:\n{}", self.sshd.log()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_auth_with_ed25519_ecdsa_and_rsa() {
    let sshd = Sshd::start();
    let state = tempfile::tempdir().unwrap();
    std::fs::write(
        state.path().join("user_known_hosts"),
        sshd.known_hosts_line(),
    )
    .unwrap();
    for kind in ["ed25519", "ecdsa", "rsa"] {
        let key = keygen(state.path(), &format!("id_{kind}"), kind);
        sshd.authorize(&key.public);
        let conn = Connection::connect(
            &target(kind, sshd.port, Some(&key.private)),
            &options(state.path()),
        )
        .await
        .unwrap_or_else(|e| panic!("{kind}: {e}\n{}", sshd.log()));
        let out = conn.exec("echo hello from $(id -un)").await.unwrap();
        assert_eq!(out.stdout_text(), "hello from root\n", "{kind}");
        assert_eq!(conn.user(), "root");
        conn.close().await;
    }
    // RSA went through rsa-sha2 (OpenSSH 8.8+ refuses ssh-rsa/SHA-1 anyway).
    let log = sshd.log();
    assert!(log.contains("Accepted publickey for root"), "{log}");
    assert!(!log.contains("ssh-rsa,"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_key_without_file_or_agent_fails_auth_naming_what_was_tried() {
    let t = Trusted::new();
    let stranger = keygen(t.state.path(), "stranger", "ed25519");
    let err = Connection::connect(
        &target("node1", t.sshd.port, Some(&stranger.private)),
        &t.opts(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, SshError::Auth { .. }), "{err}");
    assert_eq!(err.step(), Step::Auth);
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(msg.contains("node1"), "{msg}");
    assert!(msg.contains("stranger"), "{msg}");
    assert!(msg.contains("authorized_keys"), "{msg}");
    // Never key material.
    let private = std::fs::read_to_string(&stranger.private).unwrap();
    let body = private.lines().nth(1).unwrap();
    assert!(!msg.contains(body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_auth() {
    let t = Trusted::new();
    let agent = Agent::start();
    let agent_key = keygen(t.state.path(), "agent_key", "ed25519");
    t.sshd.authorize(&agent_key.public);
    agent.add(&agent_key.private);
    // Keep only the public half on disk: the agent must do the signing.
    std::fs::remove_file(&agent_key.private).unwrap();
    let mut opts = t.opts();
    opts.agent_socket = Some(agent.socket.clone());
    let conn = Connection::connect(&target("node1", t.sshd.port, None), &opts)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", t.sshd.log()));
    assert_eq!(conn.exec("true").await.unwrap().exit_status, 0);
    conn.close().await;

    // An RSA key in the agent (rsa-sha2 through the agent).
    let rsa = keygen(t.state.path(), "agent_rsa", "rsa");
    let agent2 = Agent::start();
    agent2.add(&rsa.private);
    t.sshd.authorize(&rsa.public);
    opts.agent_socket = Some(agent2.socket.clone());
    let conn = Connection::connect(&target("node1", t.sshd.port, None), &opts)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", t.sshd.log()));
    conn.close().await;

    // Without the agent nothing is left to try.
    opts.agent_socket = None;
    let err = Connection::connect(&target("node1", t.sshd.port, None), &opts)
        .await
        .unwrap_err();
    assert!(matches!(err, SshError::Auth { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_host_key_is_refused_with_advice() {
    let t = Trusted::new();
    std::fs::remove_file(t.state.path().join("user_known_hosts")).unwrap();
    let err = Connection::connect(&t.target(), &t.opts())
        .await
        .unwrap_err();
    assert!(matches!(err, SshError::HostKeyUnknown { .. }), "{err}");
    assert_eq!(err.step(), Step::HostKey);
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(msg.contains("--accept-new-host-keys"), "{msg}");
    assert!(
        msg.contains(&format!("ssh-keyscan -p {} 127.0.0.1", t.sshd.port)),
        "{msg}"
    );
    assert!(msg.contains("SHA256:"), "{msg}");
    assert!(!t.state.path().join(".capstan").exists());
    assert!(!t.sshd.log().contains("Accepted publickey"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_new_learns_the_key_into_capstans_file() {
    let t = Trusted::new();
    std::fs::remove_file(t.state.path().join("user_known_hosts")).unwrap();
    let mut opts = t.opts();
    opts.accept_new_host_keys = true;
    let conn = Connection::connect(&t.target(), &opts).await.unwrap();
    conn.close().await;
    let learned = std::fs::read_to_string(&opts.capstan_known_hosts).unwrap();
    assert_eq!(learned, t.sshd.known_hosts_line());
    let dir_mode = std::fs::metadata(t.state.path().join(".capstan"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o700);

    // Next time only capstan's file is needed, without accept-new.
    let mut opts = t.opts();
    opts.known_hosts = Vec::new();
    let conn = Connection::connect(&t.target(), &opts).await.unwrap();
    conn.close().await;
    // And it was not appended twice.
    assert_eq!(
        std::fs::read_to_string(&opts.capstan_known_hosts).unwrap(),
        learned
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_host_key_is_refused_even_with_accept_new_before_auth() {
    let t = Trusted::new();
    let other = keygen(t.state.path(), "other_host_key", "ed25519");
    let other_pub: Vec<&str> = other.public.split_whitespace().collect();
    std::fs::write(
        t.state.path().join("user_known_hosts"),
        format!(
            "{} {} {}\n",
            t.sshd.known_hosts_name(),
            other_pub[0],
            other_pub[1]
        ),
    )
    .unwrap();
    let mut opts = t.opts();
    opts.accept_new_host_keys = true;
    let err = Connection::connect(&t.target(), &opts).await.unwrap_err();
    assert!(matches!(err, SshError::HostKeyChanged { .. }), "{err}");
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(msg.contains("CHANGED"), "{msg}");
    assert!(msg.contains("user_known_hosts line 1"), "{msg}");
    assert!(msg.contains("ssh-keygen -R"), "{msg}");
    assert!(!opts.capstan_known_hosts.exists(), "nothing learned");
    // The connection was dropped during key exchange: sshd never saw an auth attempt.
    let log = t.sshd.log();
    assert!(!log.contains("Accepted publickey"), "{log}");
    assert!(!log.contains("Failed publickey"), "{log}");

    // The same when the stale key sits in capstan's own file.
    std::fs::remove_file(t.state.path().join("user_known_hosts")).unwrap();
    std::fs::create_dir_all(opts.capstan_known_hosts.parent().unwrap()).unwrap();
    std::fs::write(
        &opts.capstan_known_hosts,
        format!(
            "{} {} {}\n",
            t.sshd.known_hosts_name(),
            other_pub[0],
            other_pub[1]
        ),
    )
    .unwrap();
    let err = Connection::connect(&t.target(), &opts).await.unwrap_err();
    assert!(matches!(err, SshError::HostKeyChanged { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashed_known_hosts_entries_work() {
    let t = Trusted::new();
    let file = t.state.path().join("user_known_hosts");
    let out = std::process::Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("|1|"), "{text}");
    t.connect().await.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_returns_stdout_stderr_and_status() {
    let t = Trusted::new();
    let conn = t.connect().await;
    let out = conn
        .exec("printf 'out\\n'; printf 'err\\n' >&2; exit 3")
        .await
        .unwrap();
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(out.exit_status, 3);
    assert!(!out.success());

    // stdin, larger than a channel window, while the command writes as much back.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let out = conn
        .exec_with_stdin("cat; echo done >&2", &big)
        .await
        .unwrap();
    assert_eq!(out.stdout.len(), big.len());
    assert!(out.stdout == big);
    assert_eq!(out.stderr, b"done\n");

    // exec_checked: non-zero status is an error with host, command, status and stderr.
    let err = conn
        .exec_checked("echo starting; echo 'no such unit' >&2; exit 5")
        .await
        .unwrap_err();
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(
        matches!(err, SshError::Exec { exit_status: 5, .. }),
        "{msg}"
    );
    assert!(msg.contains("node1"), "{msg}");
    assert!(msg.contains("echo starting;"), "{msg}");
    assert!(msg.contains("no such unit"), "{msg}");

    // A signal-killed command is an error naming the signal.
    let err = conn
        .exec("echo partial >&2; kill -KILL $$")
        .await
        .unwrap_err();
    assert!(matches!(err, SshError::Signal { .. }), "{err}");
    assert!(err.to_string().contains("SIGKILL"), "{err}");
    assert!(err.to_string().contains("partial"), "{err}");

    // The connection is still good afterwards, and reused.
    assert_eq!(conn.exec("echo again").await.unwrap().stdout, b"again\n");
    assert_eq!(conn.round_trips(), 5);
    conn.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalives_keep_a_quiet_connection_usable() {
    let sshd = Sshd::start_with(SshdConfig {
        extra: vec!["LogLevel DEBUG1".into()],
        ..SshdConfig::default()
    });
    let t = Trusted::with(sshd);
    let mut opts = t.opts();
    opts.keepalive_interval = Duration::from_millis(200);
    let conn = Connection::connect(&t.target(), &opts).await.unwrap();
    // Several keepalive rounds while a command is silent, and while the connection idles.
    let out = conn.exec("sleep 1.5; echo awake").await.unwrap();
    assert_eq!(out.stdout, b"awake\n");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(conn.exec("echo still").await.unwrap().stdout, b"still\n");
    conn.close().await;
    let log = t.sshd.log();
    assert!(
        log.contains("rtype keepalive@openssh.com"),
        "no keepalive reached sshd:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_execs_share_one_connection() {
    let t = Trusted::new();
    let conn = t.connect().await;
    let runs = (0..20).map(|i| {
        let conn = &conn;
        async move { conn.exec(&format!("echo {i}")).await.unwrap().stdout_text() }
    });
    let outs = futures::future::join_all(runs).await;
    for (i, out) in outs.iter().enumerate() {
        assert_eq!(out, &format!("{i}\n"));
    }
    assert_eq!(conn.round_trips(), 20);
    assert_eq!(t.sshd.log().matches("Accepted publickey").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quoting_survives_the_remote_shell_and_sudo() {
    let t = Trusted::new();
    let conn = t.connect().await;
    let nasty = "a'b; $(x) `y` \"z\" \\ * ~ $HOME\nnext";
    let out = conn
        .exec(&format!("printf '%s' {}", quote(nasty)))
        .await
        .unwrap();
    assert_eq!(out.stdout_text(), nasty);

    // Through the exact sudo wrappers `become: sudo` uses (root needs no password here, which
    // also exercises the password wrapper's "sudo needs none" branch: the password line must be
    // swallowed, not passed to the command).
    let cmd = format!("printf '%s' {}; id -u", quote(nasty));
    let out = conn.exec(&sudo_command(&cmd, false)).await.unwrap();
    assert_eq!(
        out.stdout_text(),
        format!("{nasty}0\n"),
        "{}",
        out.stderr_text()
    );
    let out = conn
        .exec_with_stdin(
            &sudo_command("cat; id -u", true),
            b"not-the-password\nDATA\n",
        )
        .await
        .unwrap();
    assert_eq!(out.stdout_text(), "DATA\n0\n", "{}", out.stderr_text());
    conn.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn become_sudo_as_root_runs_directly() {
    let t = Trusted::new();
    let mut target = t.target();
    target.become_method = Become::Sudo;
    let conn = Connection::connect(&target, &t.opts()).await.unwrap();
    let out = conn.exec("id -u; echo $0").await.unwrap();
    assert!(out.stdout_text().starts_with("0\n"), "{out:?}");
    conn.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_writes_exact_bytes_with_mode_atomically() {
    let t = Trusted::new();
    let conn = t.connect().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("file.bin");
    let remote = path.to_str().unwrap();

    // Several SFTP chunks, all byte values.
    let contents: Vec<u8> = (0..300_000u32)
        .map(|i| u8::try_from(i * 7 % 256).unwrap())
        .collect();
    conn.upload(remote, &contents, 0o640).await.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), contents);
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
    let first_inode = meta.ino();

    // Replacing: a new inode renamed over the old one (readers never see a partial file),
    // the mode set exactly (umask does not apply), no temporary file left behind.
    let mut reader = std::fs::File::open(&path).unwrap();
    conn.upload(remote, b"#!/bin/sh\necho new\n", 0o755)
        .await
        .unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    assert_ne!(meta.ino(), first_inode, "replaced by rename, not rewritten");
    assert_eq!(meta.permissions().mode() & 0o7777, 0o755);
    assert_eq!(std::fs::read(&path).unwrap(), b"#!/bin/sh\necho new\n");
    let mut old = Vec::new();
    std::io::Read::read_to_end(&mut reader, &mut old).unwrap();
    assert_eq!(old, contents, "an open reader keeps the complete old file");
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["file.bin".to_string()]);

    // Empty file.
    conn.upload(remote, b"", 0o600).await.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"");

    // Bad targets are errors naming the path.
    let missing = dir.path().join("no/such/dir/f");
    let err = conn
        .upload(missing.to_str().unwrap(), b"x", 0o644)
        .await
        .unwrap_err();
    assert!(matches!(err, SshError::Upload { .. }), "{err}");
    assert!(err.to_string().contains("no/such/dir/f"), "{err}");
    let err = conn.upload("relative/path", b"x", 0o644).await.unwrap_err();
    assert!(err.to_string().contains("absolute"), "{err}");
    assert_eq!(conn.round_trips(), 5);
    conn.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_config_alias_supplies_hostname_port_user_and_identity() {
    let t = Trusted::new();
    let config = t.state.path().join("ssh_config");
    std::fs::write(
        &config,
        format!(
            "Host myalias\n  HostName 127.0.0.1\n  Port {}\n  User root\n  IdentityFile {}\n\nHost *\n  ServerAliveInterval 30\n  UnknownOption yes\n",
            t.sshd.port,
            t.key.private.display()
        ),
    )
    .unwrap();
    let mut opts = t.opts();
    opts.ssh_config = Some(config);
    let target = Target {
        name: "aliased".into(),
        address: "myalias".into(),
        port: None,
        user: None,
        identity_file: None,
        become_method: Become::None,
        bastion: None,
    };
    let conn = Connection::connect(&target, &opts)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", t.sshd.log()));
    assert_eq!(conn.address(), format!("127.0.0.1:{}", t.sshd.port));
    assert_eq!(conn.user(), "root");
    assert_eq!(conn.name(), "aliased");
    conn.close().await;
}

/// A bastion sshd and a target sshd; the target's host key is only known, never dialled
/// directly by the test.
struct TwoHops {
    bastion: Sshd,
    inner: Sshd,
    key: KeyPair,
    state: tempfile::TempDir,
}

impl TwoHops {
    fn new(bastion_extra: Vec<String>) -> TwoHops {
        let bastion = Sshd::start_with(SshdConfig {
            extra: bastion_extra,
            ..SshdConfig::default()
        });
        let inner = Sshd::start_with(SshdConfig {
            host_key: "ecdsa",
            ..SshdConfig::default()
        });
        let state = tempfile::tempdir().unwrap();
        let key = keygen(state.path(), "id_ed25519", "ed25519");
        bastion.authorize(&key.public);
        inner.authorize(&key.public);
        std::fs::write(
            state.path().join("user_known_hosts"),
            format!("{}{}", bastion.known_hosts_line(), inner.known_hosts_line()),
        )
        .unwrap();
        TwoHops {
            bastion,
            inner,
            key,
            state,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bastion_through_the_explicit_field() {
    let h = TwoHops::new(Vec::new());
    let mut target = target("inner", h.inner.port, Some(&h.key.private));
    target.bastion = Some(BastionTarget {
        address: "127.0.0.1".into(),
        port: Some(h.bastion.port),
        user: Some("root".into()),
        identity_file: Some(h.key.private.clone()),
    });
    let conn = Connection::connect(&target, &options(h.state.path()))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", h.bastion.log(), h.inner.log()));
    let out = conn.exec("echo inside").await.unwrap();
    assert_eq!(out.stdout, b"inside\n");
    conn.upload(
        h.state.path().join("via-bastion").to_str().unwrap(),
        b"tunnelled",
        0o600,
    )
    .await
    .unwrap();
    assert_eq!(
        std::fs::read(h.state.path().join("via-bastion")).unwrap(),
        b"tunnelled"
    );
    conn.close().await;
    assert!(h.bastion.log().contains("Accepted publickey"));
    assert!(h.inner.log().contains("Accepted publickey"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bastion_through_ssh_config_proxyjump() {
    let h = TwoHops::new(Vec::new());
    let config = h.state.path().join("ssh_config");
    std::fs::write(
        &config,
        format!(
            "Host inner\n  HostName 127.0.0.1\n  Port {}\n  ProxyJump root@jumphost:{}\n\nHost jumphost\n  HostName 127.0.0.1\n\nHost *\n  IdentityFile {}\n",
            h.inner.port,
            h.bastion.port,
            h.key.private.display()
        ),
    )
    .unwrap();
    let mut opts = options(h.state.path());
    opts.ssh_config = Some(config);
    let target = Target {
        name: "inner".into(),
        address: "inner".into(),
        port: None,
        user: Some("root".into()),
        identity_file: None,
        become_method: Become::None,
        bastion: None,
    };
    let conn = Connection::connect(&target, &opts)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", h.bastion.log(), h.inner.log()));
    assert_eq!(conn.exec("echo hi").await.unwrap().stdout, b"hi\n");
    conn.close().await;
    assert!(h.bastion.log().contains("Accepted publickey"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bastion_that_refuses_forwarding_is_reported() {
    let h = TwoHops::new(vec!["AllowTcpForwarding no".into()]);
    let mut target = target("inner", h.inner.port, Some(&h.key.private));
    target.bastion = Some(BastionTarget {
        address: "127.0.0.1".into(),
        port: Some(h.bastion.port),
        user: None,
        identity_file: Some(h.key.private.clone()),
    });
    let err = Connection::connect(&target, &options(h.state.path()))
        .await
        .unwrap_err();
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(matches!(err, SshError::Tunnel { .. }), "{msg}");
    assert!(msg.contains("inner"), "{msg}");
    assert!(msg.contains("AllowTcpForwarding"), "{msg}");
    assert!(!h.inner.log().contains("Accepted publickey"));

    // A bastion with an unknown host key is refused like any host.
    std::fs::write(
        h.state.path().join("user_known_hosts"),
        h.inner.known_hosts_line(),
    )
    .unwrap();
    let err = Connection::connect(&target, &options(h.state.path()))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SshError::Bastion { source, .. } if matches!(**source, SshError::HostKeyUnknown { .. })),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_when_the_port_never_speaks() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = std::sync::Arc::new(Mutex::new(Vec::new()));
    let keep = std::sync::Arc::clone(&held);
    let acceptor = tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            keep.lock().unwrap().push(sock); // accept and never say a word
        }
    });
    let state = tempfile::tempdir().unwrap();
    let mut opts = options(state.path());
    opts.connect_timeout = Duration::from_millis(800);
    let start = Instant::now();
    let err = Connection::connect(&target("silent", port, None), &opts)
        .await
        .unwrap_err();
    let took = start.elapsed();
    assert!(matches!(err, SshError::Timeout { .. }), "{err}");
    assert!(took >= Duration::from_millis(800), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(err.is_unreachable());
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(msg.contains("silent"), "{msg}");
    assert!(msg.contains("timed out after"), "{msg}");
    acceptor.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_all_reports_the_dead_host_and_connects_the_rest() {
    let t = Trusted::new();
    let dead_port = sshd::free_port(); // nothing listens there
    let targets = vec![
        target("a", t.sshd.port, Some(&t.key.private)),
        target("dead", dead_port, Some(&t.key.private)),
        target("c", t.sshd.port, Some(&t.key.private)),
        target("d", t.sshd.port, Some(&t.key.private)),
    ];
    let seen = Mutex::new(Vec::new());
    let results = connect_all(&targets, &t.opts(), 2, |name, ok| {
        seen.lock().unwrap().push((name.to_string(), ok));
    })
    .await;
    assert_eq!(results.len(), 4);
    assert!(results[0].is_ok() && results[2].is_ok() && results[3].is_ok());
    let err = results[1].as_ref().unwrap_err();
    assert_eq!(err.host(), "dead");
    assert!(err.is_unreachable(), "{err}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{dead_port}")),
        "{err}"
    );
    let mut seen = seen.into_inner().unwrap();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("a".to_string(), true),
            ("c".to_string(), true),
            ("d".to_string(), true),
            ("dead".to_string(), false),
        ]
    );
    for r in results.into_iter().flatten() {
        let out = r.exec("hostname >/dev/null && echo ok").await.unwrap();
        assert_eq!(out.stdout, b"ok\n");
        r.close().await;
    }
}

/// The pool hands out clones of one session: the work on a host and the cluster lock share
/// one handshake, closing a clone keeps the session for the others, and the pool's
/// `close_all` ends it. A connect error is handed out once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_connections_share_one_session() {
    let t = Trusted::new();
    let opts = t.opts();
    let conn = t.connect().await;
    opts.pool.put("node1", Ok(conn));
    let work = match opts.pool.checkout("node1") {
        Some(Ok(c)) => c,
        other => panic!("expected the pooled connection, got {other:?}"),
    };
    let lock = match opts.pool.peek("node1") {
        Some(Ok(c)) => c,
        other => panic!("expected the pooled connection, got {other:?}"),
    };
    work.exec("true").await.unwrap();
    lock.exec("true").await.unwrap();
    // One session: both execs count on it.
    assert_eq!(lock.round_trips(), 2);
    work.close().await;
    assert_eq!(
        lock.exec("echo still").await.unwrap().stdout_text(),
        "still\n"
    );
    lock.close().await;
    // for_each_host takes the pooled connection instead of a new handshake.
    let accepted = |log: &str| log.matches("Accepted publickey").count();
    let before = accepted(&t.sshd.log());
    let trips = capstan::ssh::for_each_host(&[t.target()], &opts, 4, |_, c| async move {
        let c = c.expect("pooled");
        c.exec("true").await.unwrap();
        c.round_trips()
    })
    .await;
    assert_eq!(trips, [4]);
    assert_eq!(accepted(&t.sshd.log()), before, "a second handshake");
    opts.pool.close_all().await;
    assert!(opts.pool.checkout("node1").is_none());

    // An error is handed out once; the next step connects anew.
    let bad = capstan::ssh::Target {
        port: Some(1),
        ..t.target()
    };
    let err = Connection::connect(&bad, &opts).await.unwrap_err();
    opts.pool.put("node1", Err(err));
    assert!(matches!(opts.pool.checkout("node1"), Some(Err(_))));
    assert!(opts.pool.checkout("node1").is_none());
}
