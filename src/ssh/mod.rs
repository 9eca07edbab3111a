//! The SSH layer: one russh connection per host, reused for every exec and upload of a run.
//!
//! - Auth with identity files (ed25519, ECDSA, RSA with rsa-sha2) and the ssh-agent.
//! - `~/.ssh/config` honoured for `HostName`, User, Port, `IdentityFile` and `ProxyJump`.
//! - Bastions through direct-tcpip channels; connect timeout; keepalive.
//! - Host keys checked against `known_hosts` (hashed entries too, `[addr]:port` off port 22);
//!   unknown keys refused unless `accept_new_host_keys`, then learned into capstan's own file;
//!   a changed key is always refused, before authentication.
//! - `become: sudo` with `sudo -n`, or with a password fed on stdin (never on a command line).
//! - Uploads through SFTP, atomically (temporary file beside the target, then rename).

mod auth;
mod config;
mod connection;
mod error;
mod hostkey;
mod pool;
mod privilege;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use connection::{Connection, ExecOutput};
pub use error::{SshError, Step};
pub use pool::Pool;
pub use privilege::sudo_command;

pub use crate::inventory::Become;

/// One host as the inventory gives it.
#[derive(Debug, Clone)]
pub struct Target {
    /// Inventory host name, used in every message.
    pub name: String,
    /// Where SSH reaches it; may be an alias that ssh config maps (`HostName`).
    pub address: String,
    /// `None`: ssh config's Port, else 22.
    pub port: Option<u16>,
    /// `None`: ssh config's User, else root.
    pub user: Option<String>,
    /// Tried first; then ssh config `IdentityFile`(s); then the agent.
    pub identity_file: Option<PathBuf>,
    pub become_method: Become,
    /// Explicit bastion; otherwise ssh config `ProxyJump` may give one.
    pub bastion: Option<BastionTarget>,
}

/// A bastion (jump host) on the way to a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BastionTarget {
    pub address: String,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub identity_file: Option<PathBuf>,
}

/// A secret string (the become password). Its `Debug` and `Display` never show the value,
/// and its memory is overwritten when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        let mut bytes = std::mem::take(&mut self.0).into_bytes();
        bytes.fill(0);
        std::hint::black_box(&bytes);
    }
}

/// How to connect, for every host of a run.
#[derive(Debug, Clone)]
pub struct SshOptions {
    /// Limit for TCP connect + handshake + authentication (bastions included).
    pub connect_timeout: Duration,
    /// Keepalive sent when the server has been silent this long (zero: off).
    pub keepalive_interval: Duration,
    /// Read-only `known_hosts` files checked (default `~/.ssh/known_hosts` and
    /// `/etc/ssh/ssh_known_hosts`).
    pub known_hosts: Vec<PathBuf>,
    /// capstan's own `known_hosts` beside the inventory: checked too, and where TOFU writes.
    pub capstan_known_hosts: PathBuf,
    /// Learn unknown host keys into `capstan_known_hosts` (never replaces a changed one).
    pub accept_new_host_keys: bool,
    /// ssh config to honour (default `~/.ssh/config` when it exists; `None`: none).
    pub ssh_config: Option<PathBuf>,
    /// Password for `become: sudo`, when sudo needs one.
    pub become_password: Option<Secret>,
    /// ssh-agent socket (default `$SSH_AUTH_SOCK`; `None`: no agent).
    pub agent_socket: Option<PathBuf>,
    /// Key files tried when neither the target nor ssh config names one, as OpenSSH does
    /// (default `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa`; missing files are skipped).
    pub default_identities: Vec<PathBuf>,
    /// Connections opened ahead of the work (see [`Pool`]); shared by clones of these options.
    pub pool: Pool,
}

impl SshOptions {
    /// The defaults, with capstan's `known_hosts` at `capstan_known_hosts` (normally
    /// `<inventory dir>/.capstan/known_hosts`).
    pub fn new(capstan_known_hosts: impl Into<PathBuf>) -> Self {
        let ssh_dir = dirs::home_dir().map(|h| h.join(".ssh"));
        let ssh_config = ssh_dir
            .as_ref()
            .map(|d| d.join("config"))
            .filter(|p| p.is_file());
        SshOptions {
            connect_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(15),
            known_hosts: ssh_dir
                .as_ref()
                .map(|d| d.join("known_hosts"))
                .into_iter()
                .chain(std::iter::once(PathBuf::from("/etc/ssh/ssh_known_hosts")))
                .collect(),
            capstan_known_hosts: capstan_known_hosts.into(),
            accept_new_host_keys: false,
            ssh_config,
            become_password: None,
            agent_socket: std::env::var_os("SSH_AUTH_SOCK")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            default_identities: ssh_dir
                .map(|d| {
                    ["id_ed25519", "id_ecdsa", "id_rsa"]
                        .iter()
                        .map(|n| d.join(n))
                        .collect()
                })
                .unwrap_or_default(),
            pool: Pool::default(),
        }
    }
}

/// Connects to every target in parallel, at most `forks` connects at once (sshd's
/// `MaxStartups` drops excess unauthenticated connections). `on_each(name, ok)` is called as
/// each host finishes. The results are in the order of `targets`; a host that fails does not
/// stop the others.
pub async fn connect_all(
    targets: &[Target],
    opts: &SshOptions,
    forks: usize,
    on_each: impl Fn(&str, bool) + Sync,
) -> Vec<Result<Connection, SshError>> {
    let on_each = &on_each;
    for_each_host(targets, opts, forks, |i, result| async move {
        on_each(&targets[i].name, result.is_ok());
        result
    })
    .await
}

/// Connects to every target (at most `forks` connects at once), then runs `work` on each
/// host. Work starts only once every handshake is done: when a host's key has changed,
/// every host gets [`SshError::StoppedByHostKey`] instead of its connection, so nothing
/// is sent anywhere. `work(index, connection)` gets the connection or why there is none; the
/// results are in the order of `targets`.
pub async fn for_each_host<T, F, Fut>(
    targets: &[Target],
    opts: &SshOptions,
    forks: usize,
    work: F,
) -> Vec<T>
where
    F: Fn(usize, Result<Connection, SshError>) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let semaphore = Arc::new(tokio::sync::Semaphore::new(forks.max(1)));
    let opts = Arc::new(opts.clone());
    let connects = targets.iter().map(|target| {
        let target = target.clone();
        let opts = Arc::clone(&opts);
        let semaphore = Arc::clone(&semaphore);
        async move {
            if let Some(pooled) = opts.pool.checkout(&target.name) {
                return pooled;
            }
            let name = target.name.clone();
            let address = target.address.clone();
            // The handshake runs on a worker thread of its own: its crypto is CPU work.
            let task = tokio::spawn(async move {
                let _permit = semaphore.acquire_owned().await;
                Connection::connect(&target, &opts).await
            });
            task.await.unwrap_or_else(|e| {
                Err(SshError::Session {
                    host: name,
                    address,
                    step: Step::Connect,
                    message: format!("internal error: the connect task failed ({e})"),
                })
            })
        }
    });
    // Every host key is checked before any work starts: a changed key on one host stops
    // the run before anything is sent to any host.
    let connected = futures::future::join_all(connects).await;
    let connected = hostkey::stop_all_on_changed_key(connected, targets);
    let work = &work;
    futures::future::join_all(
        connected
            .into_iter()
            .enumerate()
            .map(|(i, result)| work(i, result)),
    )
    .await
}

/// Quotes `arg` for a POSIX shell: unchanged when it only holds characters no shell treats
/// specially, else in single quotes with each `'` written as `'\''`.
pub fn quote(arg: &str) -> String {
    let safe = !arg.is_empty()
        && arg.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'_' | b'-' | b'.' | b'/' | b':' | b'=' | b'@' | b'%' | b'+' | b','
                )
        });
    if safe {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote("plain/path-1.2"), "plain/path-1.2");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("a'b; $(x)"), r"'a'\''b; $(x)'");
        assert_eq!(quote("~"), "'~'");
        assert_eq!(quote("*"), "'*'");
    }

    #[test]
    fn quoting_round_trips_through_sh() {
        for s in [
            "a'b; $(x)",
            "",
            "''",
            "\\",
            "\n\t x",
            "$HOME `id` \"q\"",
            "-n",
        ] {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf '%s' {}", quote(s)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8(out.stdout).unwrap(), s);
        }
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s}"), "<redacted>");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        let mut opts = SshOptions::new("/x");
        opts.become_password = Some(s.clone());
        assert!(!format!("{opts:?}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }
}
