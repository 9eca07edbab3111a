//! The errors of the SSH layer. Every variant names the inventory host, the address it was
//! reached at and the step that failed; the messages say what to do. None of them ever carries
//! key material or a password.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// The step of a host's SSH session that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Reading `~/.ssh/config`, resolving the target.
    Config,
    /// TCP connect and SSH protocol handshake.
    Connect,
    /// Verifying the server's host key against `known_hosts`.
    HostKey,
    /// User authentication.
    Auth,
    /// Running a command.
    Exec,
    /// Uploading a file.
    Upload,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Config => "ssh config",
            Step::Connect => "connect",
            Step::HostKey => "host key",
            Step::Auth => "auth",
            Step::Exec => "exec",
            Step::Upload => "upload",
        })
    }
}

/// Everything that can go wrong between capstan and one host.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// The ssh config file could not be read or parsed.
    #[error(
        "{host}: cannot use ssh config {path}: {message}. Fix the file, or point capstan at another one"
    )]
    Config {
        host: String,
        address: String,
        path: PathBuf,
        message: String,
    },

    /// TCP connect or the SSH handshake failed.
    #[error(
        "{host}: cannot connect to {address}: {message}. Check that the host is up, that sshd listens on that port and that no firewall is in the way"
    )]
    Connect {
        host: String,
        address: String,
        message: String,
    },

    /// A step did not finish in time.
    #[error(
        "{host}: {step} to {address} timed out after {}. The host may be down, or something that is not sshd answers on that port; raise the connect timeout if the network is slow",
        humantime(*.after)
    )]
    Timeout {
        host: String,
        address: String,
        step: Step,
        after: Duration,
    },

    /// The server presented a host key that no `known_hosts` file holds.
    #[error(
        "{host}: the host key of {address} is not known ({key}). If that fingerprint is right, {advice}"
    )]
    HostKeyUnknown {
        host: String,
        address: String,
        /// Algorithm and SHA256 fingerprint, e.g. `ssh-ed25519 key SHA256:…`.
        key: String,
        /// What to do, with the files involved.
        advice: String,
    },

    /// The server presented a key that differs from the one recorded. Always refused.
    #[error(
        "{host}: the host key of {address} has CHANGED: {location}, the server now presents {key}. Someone may be intercepting the connection, or the host was reinstalled. If you know the new key is right, remove the old entry (`{remedy}`) and connect again"
    )]
    HostKeyChanged {
        host: String,
        address: String,
        /// What the server offers: algorithm and SHA256 fingerprint.
        key: String,
        /// `FILE line N records KEY`: where, and what is recorded (algorithm, fingerprint).
        location: String,
        /// The `ssh-keygen -R` command that removes the stale entry.
        remedy: String,
    },

    /// Not contacted further because another host's key changed: a run stops before it
    /// sends anything to any host.
    #[error(
        "{host}: nothing was sent: the host key of {other} has changed, so the run stopped before contacting any host"
    )]
    StoppedByHostKey {
        host: String,
        address: String,
        other: String,
    },

    /// A `known_hosts` file could not be read or written.
    #[error("{host}: cannot use known_hosts file {}: {message}", path.display())]
    KnownHosts {
        host: String,
        address: String,
        path: PathBuf,
        message: String,
    },

    /// No identity was accepted.
    #[error(
        "{host}: authentication as {user}@{address} failed ({tried}). Put the public key in ~{user}/.ssh/authorized_keys on the host, or set ssh.user / ssh.identity_file in the inventory, or load the key into ssh-agent"
    )]
    Auth {
        host: String,
        address: String,
        user: String,
        tried: String,
    },

    /// The connection to the host through its bastion could not be set up.
    #[error("{host}: cannot reach {address} through bastion {bastion}: {source}")]
    Bastion {
        host: String,
        address: String,
        bastion: String,
        #[source]
        source: Box<SshError>,
    },

    /// A bastion accepted us but would not forward to the target.
    #[error("{host}: bastion {bastion} could not open a connection to {address}: {message}")]
    Tunnel {
        host: String,
        address: String,
        bastion: String,
        message: String,
    },

    /// The SSH connection broke or refused a channel while running a command or an upload.
    #[error(
        "{host}: the SSH connection to {address} failed during {step}: {message}. Check the host and re-run"
    )]
    Session {
        host: String,
        address: String,
        step: Step,
        message: String,
    },

    /// A command exited with a non-zero status (from `exec_checked`).
    #[error(
        "{host}: command `{command}` failed on {address} with exit status {exit_status}{}",
        stderr_suffix(stderr_tail)
    )]
    Exec {
        host: String,
        address: String,
        command: String,
        exit_status: u32,
        stderr_tail: String,
    },

    /// A command was killed by a signal.
    #[error(
        "{host}: command `{command}` on {address} was killed by signal {signal}{}",
        stderr_suffix(stderr_tail)
    )]
    Signal {
        host: String,
        address: String,
        command: String,
        /// `SIGKILL`, `SIGSEGV (core dumped)`.
        signal: String,
        stderr_tail: String,
    },

    /// `become: sudo` did not work.
    #[error("{host}: sudo on {address} refused to run `{command}`: {message}")]
    Become {
        host: String,
        address: String,
        command: String,
        message: String,
    },

    /// An upload failed.
    #[error("{host}: cannot upload {path} to {address}: {message}")]
    Upload {
        host: String,
        address: String,
        path: String,
        message: String,
    },
}

impl SshError {
    /// The inventory name of the host the error is about.
    pub fn host(&self) -> &str {
        match self {
            SshError::Config { host, .. }
            | SshError::Connect { host, .. }
            | SshError::Timeout { host, .. }
            | SshError::HostKeyUnknown { host, .. }
            | SshError::HostKeyChanged { host, .. }
            | SshError::StoppedByHostKey { host, .. }
            | SshError::KnownHosts { host, .. }
            | SshError::Auth { host, .. }
            | SshError::Bastion { host, .. }
            | SshError::Tunnel { host, .. }
            | SshError::Session { host, .. }
            | SshError::Exec { host, .. }
            | SshError::Signal { host, .. }
            | SshError::Become { host, .. }
            | SshError::Upload { host, .. } => host,
        }
    }

    /// The address (`addr:port`) the error is about.
    pub fn address(&self) -> &str {
        match self {
            SshError::Config { address, .. }
            | SshError::Connect { address, .. }
            | SshError::Timeout { address, .. }
            | SshError::HostKeyUnknown { address, .. }
            | SshError::HostKeyChanged { address, .. }
            | SshError::StoppedByHostKey { address, .. }
            | SshError::KnownHosts { address, .. }
            | SshError::Auth { address, .. }
            | SshError::Bastion { address, .. }
            | SshError::Tunnel { address, .. }
            | SshError::Session { address, .. }
            | SshError::Exec { address, .. }
            | SshError::Signal { address, .. }
            | SshError::Become { address, .. }
            | SshError::Upload { address, .. } => address,
        }
    }

    /// The step that failed.
    pub fn step(&self) -> Step {
        match self {
            SshError::Config { .. } => Step::Config,
            SshError::Connect { .. } | SshError::Bastion { .. } | SshError::Tunnel { .. } => {
                Step::Connect
            }
            SshError::Timeout { step, .. } | SshError::Session { step, .. } => *step,
            SshError::HostKeyUnknown { .. }
            | SshError::HostKeyChanged { .. }
            | SshError::StoppedByHostKey { .. }
            | SshError::KnownHosts { .. } => Step::HostKey,
            SshError::Auth { .. } => Step::Auth,
            SshError::Exec { .. } | SshError::Signal { .. } | SshError::Become { .. } => Step::Exec,
            SshError::Upload { .. } => Step::Upload,
        }
    }

    /// True when the host could not be reached or talked to at all (as opposed to a command
    /// that ran and failed): what `check` reports as "unreachable".
    pub fn is_unreachable(&self) -> bool {
        match self {
            SshError::Connect { .. } | SshError::Timeout { .. } | SshError::Tunnel { .. } => true,
            SshError::Bastion { source, .. } => source.is_unreachable(),
            _ => false,
        }
    }
}

fn humantime(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

fn stderr_suffix(tail: &str) -> String {
    let tail = tail.trim();
    if tail.is_empty() {
        String::new()
    } else {
        format!("; stderr ends with:\n{tail}")
    }
}

/// The first line of a command, shortened, for messages.
pub(crate) fn command_summary(command: &str) -> String {
    const MAX: usize = 120;
    let mut lines = command.lines().filter(|l| !l.trim().is_empty());
    let first = lines.next().unwrap_or("").trim();
    let more = lines.next().is_some();
    let mut out: String = first.chars().take(MAX).collect();
    if first.chars().count() > MAX || more {
        out.push_str(" …");
    }
    out
}

/// The last few lines (at most ~2 KiB) of a command's stderr, for messages.
pub(crate) fn stderr_tail(stderr: &[u8]) -> String {
    const MAX_LINES: usize = 10;
    const MAX_BYTES: usize = 2048;
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.trim_end().lines().collect();
    let start = lines.len().saturating_sub(MAX_LINES);
    let mut tail = lines[start..].join("\n");
    if tail.len() > MAX_BYTES {
        let mut cut = tail.len() - MAX_BYTES;
        while !tail.is_char_boundary(cut) {
            cut += 1;
        }
        tail = format!("…{}", &tail[cut..]);
    }
    tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_takes_the_first_line() {
        assert_eq!(command_summary("\n  echo hi\necho there"), "echo hi …");
        assert_eq!(command_summary("true"), "true");
        let long = "x".repeat(300);
        assert_eq!(command_summary(&long).chars().count(), 122);
    }

    #[test]
    fn tail_keeps_the_end() {
        let err: Vec<u8> = (0..30)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        let tail = stderr_tail(&err);
        assert!(tail.starts_with("line 20"));
        assert!(tail.ends_with("line 29"));
        let big = "é".repeat(5000);
        let tail = stderr_tail(big.as_bytes());
        assert!(tail.len() <= 2048 + 4);
    }

    #[test]
    fn exec_error_names_host_command_status_and_stderr() {
        let e = SshError::Exec {
            host: "cp1".into(),
            address: "10.0.0.1:22".into(),
            command: "systemctl start kubelet".into(),
            exit_status: 5,
            stderr_tail: "Unit kubelet.service not found.".into(),
        };
        let msg = e.to_string();
        assert!(msg.contains("cp1"), "{msg}");
        assert!(msg.contains("systemctl start kubelet"), "{msg}");
        assert!(msg.contains("exit status 5"), "{msg}");
        assert!(msg.contains("Unit kubelet.service not found."), "{msg}");
        assert_eq!(e.step(), Step::Exec);
    }

    #[test]
    fn errors_stay_small() {
        // clippy's result_large_err limit: callers return Result<_, SshError> everywhere.
        assert!(
            std::mem::size_of::<SshError>() <= 128,
            "{}",
            std::mem::size_of::<SshError>()
        );
    }
}
