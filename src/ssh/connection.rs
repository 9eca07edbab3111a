//! One authenticated SSH connection per host: exec (with become) and SFTP uploads.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use futures::StreamExt;
use russh::client::{self, Handle, Handler, Msg};
use russh::keys::PublicKeyOrCertificate;
use russh::{ChannelMsg, Disconnect, Sig};
use russh_sftp::client::RawSftpSession;
use russh_sftp::protocol::{FileAttributes, OpenFlags, Packet, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OnceCell, Semaphore};

use super::auth::{AuthContext, authenticate};
use super::config::{Hop, Route, resolve};
use super::error::{SshError, Step, command_summary, stderr_tail};
use super::hostkey::HostKeyPolicy;
use super::privilege::{sudo_command, sudo_failure};
use super::{Secret, SshOptions, Target, quote};
use crate::inventory::Become;

/// What a command produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_status: u32,
}

impl ExecOutput {
    /// Exit status 0.
    pub fn success(&self) -> bool {
        self.exit_status == 0
    }

    /// stdout as text (lossy UTF-8).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// stderr as text (lossy UTF-8).
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// russh's handler: verifies the host key, nothing else.
pub(crate) struct ClientHandler {
    policy: HostKeyPolicy,
}

#[derive(Debug)]
pub(crate) enum HandlerError {
    Russh(russh::Error),
    HostKey(SshError),
}

impl From<russh::Error> for HandlerError {
    fn from(e: russh::Error) -> Self {
        HandlerError::Russh(e)
    }
}

impl Handler for ClientHandler {
    type Error = HandlerError;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => self
                .policy
                .verify(key)
                .map(|_| true)
                .map_err(HandlerError::HostKey),
            PublicKeyOrCertificate::Certificate(_) => Ok(false),
        }
    }
}

/// The SFTP session of a connection, opened on first upload and reused.
struct Sftp {
    raw: RawSftpSession,
    posix_rename: bool,
    fsync: bool,
}

/// An authenticated connection to one host, reused for every exec and upload of a run.
/// All methods take `&self`. A clone shares the same SSH session (the cluster lock and
/// the run use one connection to the lock's host); [`Connection::close`] disconnects when
/// the last clone closes.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

impl std::ops::Deref for Connection {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}

/// The session behind a [`Connection`] and its clones.
pub struct Inner {
    name: String,
    address: String,
    user: String,
    become_method: Become,
    become_password: Option<Secret>,
    handle: Handle<ClientHandler>,
    /// Bastion connections the main one is tunnelled through; kept alive with it.
    jumps: Vec<Handle<ClientHandler>>,
    round_trips: AtomicU64,
    sftp: OnceCell<Sftp>,
    /// Bounds concurrent exec channels below sshd's `MaxSessions` (default 10, the SFTP
    /// session takes one): more at once would be refused by the server.
    sessions: Semaphore,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("name", &self.name)
            .field("address", &self.address)
            .field("user", &self.user)
            .field("become", &self.become_method)
            .field("jumps", &self.jumps.len())
            .finish_non_exhaustive()
    }
}

/// Where a connect attempt got to, for the timeout message.
struct Progress(AtomicU8);

impl Progress {
    fn set(&self, step: Step) {
        let v = match step {
            Step::HostKey => 1,
            Step::Auth => 2,
            _ => 0,
        };
        self.0.store(v, Ordering::Relaxed);
    }
    fn get(&self) -> Step {
        match self.0.load(Ordering::Relaxed) {
            1 => Step::HostKey,
            2 => Step::Auth,
            _ => Step::Connect,
        }
    }
}

const SFTP_CHUNK: usize = 32 * 1024;
/// Bytes read from the network at once: a full SSH packet (32 KiB of data) and more.
const READ_BUFFER: usize = 64 * 1024;

/// Concurrent exec channels per connection (sshd's `MaxSessions` defaults to 10).
const MAX_CONCURRENT_EXECS: usize = 8;
const SFTP_IN_FLIGHT: usize = 16;

impl Connection {
    /// Connects (through bastions if any), verifies the host key and authenticates, all
    /// within `opts.connect_timeout`.
    pub async fn connect(target: &Target, opts: &SshOptions) -> Result<Connection, SshError> {
        let route = resolve(target, opts)?;
        let progress = Progress(AtomicU8::new(0));
        let address = route.target.address();
        match tokio::time::timeout(
            opts.connect_timeout,
            Self::connect_route(target, opts, &route, &progress),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(SshError::Timeout {
                host: target.name.clone(),
                address,
                step: progress.get(),
                after: opts.connect_timeout,
            }),
        }
    }

    async fn connect_route(
        target: &Target,
        opts: &SshOptions,
        route: &Route,
        progress: &Progress,
    ) -> Result<Connection, SshError> {
        let mut jumps: Vec<Handle<ClientHandler>> = Vec::new();
        for hop in &route.jumps {
            let label = hop.label();
            let wrap = |source: SshError| SshError::Bastion {
                host: target.name.clone(),
                address: route.target.address(),
                bastion: label.clone(),
                source: Box::new(source),
            };
            let handle = match jumps.last() {
                None => establish(&format!("bastion {label}"), hop, opts, progress).await,
                Some(previous) => {
                    let stream =
                        tunnel(previous, &route.jumps[jumps.len() - 1], "bastion", hop).await;
                    match stream {
                        Ok(stream) => {
                            establish_over(&format!("bastion {label}"), hop, opts, progress, stream)
                                .await
                        }
                        Err(e) => Err(e),
                    }
                }
            }
            .map_err(wrap)?;
            jumps.push(handle);
        }
        let handle = match jumps.last() {
            None => establish(&target.name, &route.target, opts, progress).await?,
            Some(last) => {
                let via = &route.jumps[route.jumps.len() - 1];
                let stream = tunnel(last, via, &target.name, &route.target).await?;
                establish_over(&target.name, &route.target, opts, progress, stream).await?
            }
        };
        Ok(Connection {
            inner: Arc::new(Inner {
                name: target.name.clone(),
                address: route.target.address(),
                user: route.target.user.clone(),
                become_method: target.become_method,
                become_password: opts.become_password.clone(),
                handle,
                jumps,
                round_trips: AtomicU64::new(0),
                sftp: OnceCell::new(),
                sessions: Semaphore::new(MAX_CONCURRENT_EXECS),
            }),
        })
    }

    /// The inventory name of the host.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the connection (or a bastion it goes through) has ended: the server closed
    /// it, or the keepalive found it dead. Nothing more can be sent on it.
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed() || self.jumps.iter().any(Handle::is_closed)
    }

    /// `host:port` this connection reached (after ssh config).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The remote user authenticated as.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Number of execs and uploads done on this connection.
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    /// True when commands are wrapped in sudo (become: sudo and a non-root user).
    fn uses_sudo(&self) -> bool {
        self.become_method == Become::Sudo && self.user != "root"
    }

    /// Runs `command` (a shell command line; become applied) and returns what it produced.
    /// A non-zero exit status is not an error here; see [`Connection::exec_checked`].
    pub async fn exec(&self, command: &str) -> Result<ExecOutput, SshError> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        self.run(command, None).await
    }

    /// Like [`Connection::exec`], feeding `stdin` to the command.
    pub async fn exec_with_stdin(
        &self,
        command: &str,
        stdin: &[u8],
    ) -> Result<ExecOutput, SshError> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        self.run(command, Some(stdin)).await
    }

    /// Like [`Connection::exec`], but a non-zero exit status is an [`SshError::Exec`] naming
    /// the command, the status and the end of stderr.
    pub async fn exec_checked(&self, command: &str) -> Result<ExecOutput, SshError> {
        let out = self.exec(command).await?;
        if out.success() {
            Ok(out)
        } else {
            Err(self.exec_failed(command, &out))
        }
    }

    /// The error for a command that exited non-zero.
    pub fn exec_failed(&self, command: &str, out: &ExecOutput) -> SshError {
        SshError::Exec {
            host: self.name.clone(),
            address: self.address.clone(),
            command: command_summary(command),
            exit_status: out.exit_status,
            stderr_tail: stderr_tail(&out.stderr),
        }
    }

    fn session_error(&self, step: Step, e: &dyn std::fmt::Display) -> SshError {
        SshError::Session {
            host: self.name.clone(),
            address: self.address.clone(),
            step,
            message: e.to_string(),
        }
    }

    async fn run(&self, command: &str, stdin: Option<&[u8]>) -> Result<ExecOutput, SshError> {
        let sudo = self.uses_sudo();
        let password = if sudo {
            self.become_password.as_ref()
        } else {
            None
        };
        let line = if sudo {
            sudo_command(command, password.is_some())
        } else {
            command.to_string()
        };
        // The password travels only inside the channel's stdin.
        let mut input: Vec<u8> = Vec::new();
        if let Some(pw) = password {
            input.extend_from_slice(pw.expose().as_bytes());
            input.push(b'\n');
        }
        if let Some(data) = stdin {
            input.extend_from_slice(data);
        }
        let result = self.run_raw(command, &line, &input, Step::Exec).await;
        input.fill(0);
        let out = result?;
        if sudo && let Some(message) = sudo_failure(out.exit_status, &out.stderr, &self.user) {
            return Err(SshError::Become {
                host: self.name.clone(),
                address: self.address.clone(),
                command: command_summary(command),
                message,
            });
        }
        Ok(out)
    }

    /// Runs an already-wrapped command line (`shown` is the caller's command, for messages);
    /// a command killed by a signal is an error.
    async fn run_raw(
        &self,
        shown: &str,
        line: &str,
        input: &[u8],
        step: Step,
    ) -> Result<ExecOutput, SshError> {
        let _slot = self
            .sessions
            .acquire()
            .await
            .map_err(|e| self.session_error(step, &e))?;
        let started = std::time::Instant::now();
        let channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(|e| self.session_error(step, &e))?;
        channel
            .exec(true, line.as_bytes())
            .await
            .map_err(|e| self.session_error(step, &e))?;
        let (mut reader, writer) = channel.split();
        let write = async {
            if !input.is_empty() {
                writer.data(input).await?;
            }
            writer.eof().await
        };
        let read = async {
            let mut out = ExecOutput {
                stdout: Vec::new(),
                stderr: Vec::new(),
                exit_status: 0,
            };
            let mut status: Option<u32> = None;
            let mut signal: Option<String> = None;
            let mut refused = false;
            while let Some(msg) = reader.wait().await {
                match msg {
                    ChannelMsg::Data { data } => out.stdout.extend_from_slice(&data),
                    ChannelMsg::ExtendedData { data, ext: 1 } => {
                        out.stderr.extend_from_slice(&data);
                    }
                    ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
                    ChannelMsg::ExitSignal {
                        signal_name,
                        core_dumped,
                        ..
                    } => {
                        let mut label = signal_label(&signal_name);
                        if core_dumped {
                            label.push_str(" (core dumped)");
                        }
                        signal = Some(label);
                    }
                    ChannelMsg::Failure => refused = true,
                    _ => {}
                }
            }
            (out, status, signal, refused)
        };
        // The read side ends when the channel or the whole connection closes; a write still
        // waiting then (for window space the dead peer will never grant) is abandoned, so a
        // connection dropped in the middle of an upload fails this command instead of
        // hanging it.
        tokio::pin!(write);
        tokio::pin!(read);
        let mut written = None;
        let (mut out, status, signal, refused) = loop {
            tokio::select! {
                w = &mut write, if written.is_none() => written = Some(w),
                r = &mut read => break r,
            }
        };
        tracing::debug!(
            host = %self.name,
            ms = %ms(started),
            sent = line.len() + input.len(),
            received = out.stdout.len() + out.stderr.len(),
            "ssh: exec round trip"
        );
        if let Some(signal) = signal {
            return Err(SshError::Signal {
                host: self.name.clone(),
                address: self.address.clone(),
                command: command_summary(shown),
                signal,
                stderr_tail: stderr_tail(&out.stderr),
            });
        }
        match status {
            Some(s) => out.exit_status = s,
            None if refused => {
                return Err(self.session_error(step, &"the server refused to run the command"));
            }
            None => {
                let why = match written {
                    Some(Err(e)) => format!("the channel closed early ({e})"),
                    Some(Ok(())) => "the channel closed without an exit status".to_string(),
                    None => {
                        "the connection closed while the command's input was being sent".to_string()
                    }
                };
                return Err(self.session_error(step, &why));
            }
        }
        Ok(out)
    }

    async fn sftp(&self) -> Result<&Sftp, SshError> {
        self.sftp
            .get_or_try_init(|| async {
                let err = |e: &dyn std::fmt::Display| self.session_error(Step::Upload, e);
                let channel = self
                    .handle
                    .channel_open_session()
                    .await
                    .map_err(|e| err(&e))?;
                channel
                    .request_subsystem(true, "sftp")
                    .await
                    .map_err(|e| err(&e))?;
                let raw = RawSftpSession::new(channel.into_stream());
                let version = raw.init().await.map_err(|e| {
                    err(&format!(
                        "cannot start SFTP ({e}); is the sftp subsystem enabled in sshd_config?"
                    ))
                })?;
                let has = |name: &str| version.extensions.contains_key(name);
                Ok(Sftp {
                    posix_rename: has("posix-rename@openssh.com"),
                    fsync: has("fsync@openssh.com"),
                    raw,
                })
            })
            .await
    }

    /// Writes `contents` to `remote_path` with `mode`, atomically (a temporary file beside it,
    /// then a rename), through SFTP. With `become: sudo` and a non-root user the bytes go to
    /// a private temporary file first and sudo moves them into place.
    pub async fn upload(
        &self,
        remote_path: &str,
        contents: &[u8],
        mode: u32,
    ) -> Result<(), SshError> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let err = |message: String| SshError::Upload {
            host: self.name.clone(),
            address: self.address.clone(),
            path: remote_path.to_string(),
            message,
        };
        let Some((dir, base)) = remote_path.rsplit_once('/') else {
            return Err(err("the remote path must be absolute".into()));
        };
        if !remote_path.starts_with('/') || base.is_empty() || base == "." || base == ".." {
            return Err(err(
                "the remote path must be absolute and name a file".into()
            ));
        }
        if mode > 0o7777 {
            return Err(err(format!("mode {mode:o} is not a file mode")));
        }
        let sftp = self.sftp().await?;
        let suffix = random_suffix();
        if !self.uses_sudo() {
            let dir = if dir.is_empty() { "" } else { dir };
            let tmp = format!("{dir}/.{base}.capstan-{suffix}");
            return write_atomic(sftp, &tmp, remote_path, contents, mode)
                .await
                .map_err(err);
        }
        // become: sudo. Stage in /tmp (O_EXCL, 0600: no one else can read or swap it), then
        // let root copy it beside the target and rename it into place.
        let staged = format!("/tmp/.capstan-upload-{suffix}");
        write_file(sftp, &staged, contents, 0o600)
            .await
            .map_err(|m| err(format!("staging in /tmp failed: {m}")))?;
        let tmp = format!("{dir}/.{base}.capstan-{suffix}");
        let script = format!(
            "cp -- {src} {tmp} && chmod {mode:o} -- {tmp} && mv -f -- {tmp} {dst}; rc=$?; rm -f -- {src} {tmp}; exit $rc",
            src = quote(&staged),
            tmp = quote(&tmp),
            dst = quote(remote_path),
        );
        let result = self.run(&script, None).await;
        let out = match result {
            Ok(out) => out,
            Err(e) => {
                let _ = sftp.raw.remove(staged.as_str()).await;
                return Err(e);
            }
        };
        if out.success() {
            Ok(())
        } else {
            let _ = sftp.raw.remove(staged.as_str()).await;
            Err(err(format!(
                "moving it into place as root failed (exit status {}): {}",
                out.exit_status,
                stderr_tail(&out.stderr)
            )))
        }
    }

    /// Disconnects (the bastions last), unless a clone still uses the session: then the
    /// last clone to close disconnects.
    pub async fn close(self) {
        let Ok(inner) = Arc::try_unwrap(self.inner) else {
            return;
        };
        inner.close().await;
    }
}

impl Inner {
    async fn close(self) {
        if let Some(sftp) = self.sftp.get() {
            let _ = sftp.raw.close_session();
        }
        let _ = self
            .handle
            .disconnect(Disconnect::ByApplication, "", "en")
            .await;
        for jump in self.jumps.iter().rev() {
            let _ = jump.disconnect(Disconnect::ByApplication, "", "en").await;
        }
    }
}

fn signal_label(sig: &Sig) -> String {
    let name = match sig {
        Sig::ABRT => "ABRT",
        Sig::ALRM => "ALRM",
        Sig::FPE => "FPE",
        Sig::HUP => "HUP",
        Sig::ILL => "ILL",
        Sig::INT => "INT",
        Sig::KILL => "KILL",
        Sig::PIPE => "PIPE",
        Sig::QUIT => "QUIT",
        Sig::SEGV => "SEGV",
        Sig::TERM => "TERM",
        Sig::USR1 => "USR1",
        Sig::Custom(c) => c.as_str(),
    };
    format!("SIG{name}")
}

fn random_suffix() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn sftp_message(e: &russh_sftp::client::error::Error) -> String {
    match e {
        russh_sftp::client::error::Error::Status(s) => match s.status_code {
            StatusCode::PermissionDenied => format!(
                "permission denied ({}); use become: sudo or a user that may write there",
                s.error_message
            ),
            StatusCode::NoSuchFile => format!(
                "no such file or directory ({}); does the parent directory exist?",
                s.error_message
            ),
            _ => format!("{}: {}", s.status_code, s.error_message),
        },
        other => other.to_string(),
    }
}

/// Creates `path` exclusively with `mode` and writes `contents` into it (pipelined writes).
async fn write_file(sftp: &Sftp, path: &str, contents: &[u8], mode: u32) -> Result<(), String> {
    let attrs = FileAttributes {
        permissions: Some(0o600),
        ..FileAttributes::empty()
    };
    let handle = sftp
        .raw
        .open(
            path,
            OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::EXCLUDE | OpenFlags::TRUNCATE,
            attrs,
        )
        .await
        .map_err(|e| sftp_message(&e))?
        .handle;
    let result = async {
        let writes = contents.chunks(SFTP_CHUNK).enumerate().map(|(i, chunk)| {
            let offset = (i * SFTP_CHUNK) as u64;
            sftp.raw.write(handle.as_str(), offset, chunk.to_vec())
        });
        let mut pending = futures::stream::iter(writes).buffer_unordered(SFTP_IN_FLIGHT);
        while let Some(r) = pending.next().await {
            r.map_err(|e| sftp_message(&e))?;
        }
        sftp.raw
            .fsetstat(
                handle.as_str(),
                FileAttributes {
                    permissions: Some(mode),
                    ..FileAttributes::empty()
                },
            )
            .await
            .map_err(|e| format!("cannot set mode {mode:o}: {}", sftp_message(&e)))?;
        if sftp.fsync {
            sftp.raw
                .fsync(handle.as_str())
                .await
                .map_err(|e| format!("fsync: {}", sftp_message(&e)))?;
        }
        Ok::<(), String>(())
    }
    .await;
    let closed = sftp.raw.close(handle.as_str()).await;
    if let Err(e) = result {
        let _ = sftp.raw.remove(path).await;
        return Err(e);
    }
    closed.map_err(|e| sftp_message(&e))?;
    Ok(())
}

/// Writes a temporary file beside `target`, then renames it over `target`.
async fn write_atomic(
    sftp: &Sftp,
    tmp: &str,
    target: &str,
    contents: &[u8],
    mode: u32,
) -> Result<(), String> {
    write_file(sftp, tmp, contents, mode).await?;
    let renamed = if sftp.posix_rename {
        let mut data = Vec::with_capacity(tmp.len() + target.len() + 8);
        for s in [tmp, target] {
            let len = u32::try_from(s.len()).map_err(|_| "path too long".to_string())?;
            data.extend_from_slice(&len.to_be_bytes());
            data.extend_from_slice(s.as_bytes());
        }
        match sftp.raw.extended("posix-rename@openssh.com", data).await {
            Ok(Packet::Status(s)) if s.status_code == StatusCode::Ok => Ok(()),
            Ok(Packet::Status(s)) => Err(format!(
                "rename into place failed: {}: {}",
                s.status_code, s.error_message
            )),
            Ok(_) => Err("rename into place failed: unexpected SFTP reply".into()),
            Err(e) => Err(format!("rename into place failed: {}", sftp_message(&e))),
        }
    } else {
        // Plain SFTP rename refuses to replace: remove first (not atomic, but only on servers
        // without the OpenSSH extension).
        let _ = sftp.raw.remove(target).await;
        sftp.raw
            .rename(tmp, target)
            .await
            .map(|_| ())
            .map_err(|e| format!("rename into place failed: {}", sftp_message(&e)))
    };
    if renamed.is_err() {
        let _ = sftp.raw.remove(tmp).await;
    }
    renamed
}

fn client_config(policy: &HostKeyPolicy, opts: &SshOptions) -> Arc<client::Config> {
    let keepalive = (!opts.keepalive_interval.is_zero()).then_some(opts.keepalive_interval);
    Arc::new(client::Config {
        keepalive_interval: keepalive,
        keepalive_max: 3,
        nodelay: true,
        preferred: russh::Preferred {
            key: policy.preferred_algorithms(),
            ..russh::Preferred::DEFAULT
        },
        ..client::Config::default()
    })
}

fn policy_for(label: &str, hop: &Hop, opts: &SshOptions) -> HostKeyPolicy {
    HostKeyPolicy {
        host: label.to_string(),
        known_host: hop.host.clone(),
        port: hop.port,
        files: opts.known_hosts.clone(),
        capstan_file: opts.capstan_known_hosts.clone(),
        accept_new: opts.accept_new_host_keys,
    }
}

/// TCP connect to `hop`, then handshake and auth.
async fn establish(
    label: &str,
    hop: &Hop,
    opts: &SshOptions,
    progress: &Progress,
) -> Result<Handle<ClientHandler>, SshError> {
    progress.set(Step::Connect);
    let started = std::time::Instant::now();
    let stream = tokio::net::TcpStream::connect((hop.host.as_str(), hop.port))
        .await
        .map_err(|e| SshError::Connect {
            host: label.to_string(),
            address: hop.address(),
            message: e.to_string(),
        })?;
    let _ = stream.set_nodelay(true);
    tracing::debug!(host = label, ms = %ms(started), "ssh: TCP connected");
    establish_over(label, hop, opts, progress, stream).await
}

/// Milliseconds since `t`, for the phase timings logged at debug level (`-vv`).
fn ms(t: std::time::Instant) -> String {
    format!("{:.1}", t.elapsed().as_secs_f64() * 1000.0)
}

/// Handshake (host key check) and auth over an existing stream.
async fn establish_over<S>(
    label: &str,
    hop: &Hop,
    opts: &SshOptions,
    progress: &Progress,
    stream: S,
) -> Result<Handle<ClientHandler>, SshError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    progress.set(Step::Connect);
    let started = std::time::Instant::now();
    let policy = policy_for(label, hop, opts);
    let config = client_config(&policy, opts);
    let handler = ClientHandler { policy };
    // russh reads each packet's length, then its body, straight from the stream: two reads
    // (and a wake-up) per packet. Buffered, one read takes whatever has arrived.
    let stream = tokio::io::BufReader::with_capacity(READ_BUFFER, stream);
    let mut handle = match client::connect_stream(config, stream, handler).await {
        Ok(h) => h,
        Err(HandlerError::HostKey(e)) => return Err(e),
        Err(HandlerError::Russh(e)) => {
            return Err(SshError::Connect {
                host: label.to_string(),
                address: hop.address(),
                message: handshake_message(&e),
            });
        }
    };
    tracing::debug!(host = label, ms = %ms(started), "ssh: key exchange done, host key verified");
    progress.set(Step::Auth);
    let started = std::time::Instant::now();
    let address = hop.address();
    authenticate(
        &mut handle,
        &AuthContext {
            host: label,
            address: &address,
            user: &hop.user,
            identity_files: &hop.identity_files,
            agent_socket: opts.agent_socket.as_deref(),
        },
    )
    .await?;
    tracing::debug!(host = label, ms = %ms(started), "ssh: authenticated");
    Ok(handle)
}

fn handshake_message(e: &russh::Error) -> String {
    match e {
        russh::Error::Disconnect | russh::Error::HUP => {
            "the server closed the connection during the SSH handshake (too many concurrent connects for sshd MaxStartups? lower --forks)".into()
        }
        russh::Error::NoCommonAlgo { kind, ours, theirs } => format!(
            "no common {kind:?} algorithm (we offer {}, the server {})",
            ours.join(","),
            theirs.join(",")
        ),
        other => format!("SSH handshake failed: {other}"),
    }
}

/// Opens a direct-tcpip channel from `via` (the bastion `bastion`) to `hop`.
async fn tunnel(
    via: &Handle<ClientHandler>,
    bastion: &Hop,
    label: &str,
    hop: &Hop,
) -> Result<russh::ChannelStream<Msg>, SshError> {
    let channel = via
        .channel_open_direct_tcpip(hop.host.clone(), u32::from(hop.port), "127.0.0.1", 0)
        .await
        .map_err(|e| SshError::Tunnel {
            host: label.to_string(),
            address: hop.address(),
            bastion: bastion.label(),
            message: tunnel_message(&e),
        })?;
    Ok(channel.into_stream())
}

fn tunnel_message(e: &russh::Error) -> String {
    use russh::ChannelOpenFailure as F;
    match e {
        russh::Error::ChannelOpenFailure(F::AdministrativelyProhibited) => {
            "its sshd forbids forwarding (AllowTcpForwarding / PermitOpen in its sshd_config): allow it, or use another bastion".into()
        }
        russh::Error::ChannelOpenFailure(F::ConnectFailed) => {
            "the connection failed as seen from the bastion: check that the host is up and that sshd listens on that port".into()
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_are_named() {
        assert_eq!(signal_label(&Sig::KILL), "SIGKILL");
        assert_eq!(signal_label(&Sig::Custom("WINCH".into())), "SIGWINCH");
    }

    #[test]
    fn suffixes_differ() {
        assert_ne!(random_suffix(), random_suffix());
        assert_eq!(random_suffix().len(), 16);
    }

    #[allow(dead_code)]
    fn assert_send_sync() {
        fn is<T: Send + Sync>() {}
        is::<Connection>();
    }
}
