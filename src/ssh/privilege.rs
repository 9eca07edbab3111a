//! `become: sudo`: how a command is wrapped, and how sudo's own failures are recognised.
//!
//! Without a become password the command runs as `sudo -n -- sh -c '<command>'` (never waits
//! for a password). With one, a small POSIX wrapper reads the password as the first line of
//! the channel's stdin, asks `sudo -n true` whether a password is needed at all, and only then
//! feeds it to `sudo -S -p ''`; the rest of stdin reaches the command unchanged either way.
//! The password is never part of the command line (so never in `ps`, logs or errors) and sudo
//! prints no prompt.

use super::quote;

/// The shell variable the wrapper keeps the password in, for the few microseconds it needs it.
const PW_VAR: &str = "capstan_become_pw";

/// The command line that runs `command` as root through sudo. When `with_password` is true,
/// the caller must send the password and a newline as the first line of stdin.
pub fn sudo_command(command: &str, with_password: bool) -> String {
    let inner = quote(command);
    if with_password {
        format!(
            "IFS= read -r {PW_VAR}; \
             if sudo -n true 2>/dev/null; then unset {PW_VAR}; exec sudo -n -- sh -c {inner}; \
             else {{ printf '%s\\n' \"${PW_VAR}\"; unset {PW_VAR}; exec cat; }} | sudo -S -p '' -- sh -c {inner}; fi"
        )
    } else {
        format!("sudo -n -- sh -c {inner}")
    }
}

/// What went wrong when sudo itself (not the command) failed, from the exit status and
/// stderr; `None` when the failure is the command's own.
pub(crate) fn sudo_failure(exit_status: u32, stderr: &[u8], user: &str) -> Option<String> {
    if exit_status != 1 && exit_status != 127 {
        return None;
    }
    let text = String::from_utf8_lossy(stderr);
    let first = text.lines().find(|l| !l.trim().is_empty())?.trim();
    if exit_status == 127 && first.contains("sudo") && first.contains("not found") {
        return Some(
            "sudo is not installed on the host: install it, or connect as root with become: none"
                .into(),
        );
    }
    if !first.starts_with("sudo:")
        && !first.starts_with("Sorry, try again")
        && !first.contains("is not in the sudoers file")
    {
        return None;
    }
    if text.contains("a password is required") {
        Some(format!(
            "{user} needs a password for sudo: set CAPSTAN_BECOME_PASSWORD (or let capstan prompt for it), or allow {user} NOPASSWD in sudoers"
        ))
    } else if text.contains("incorrect password") || text.contains("Sorry, try again") {
        Some(format!(
            "sudo rejected the become password for {user}: check CAPSTAN_BECOME_PASSWORD"
        ))
    } else if text.contains("not in the sudoers file")
        || text.contains("is not allowed to")
        || text.contains("may not run sudo")
    {
        Some(format!(
            "{user} may not use sudo on this host: add {user} to sudoers (e.g. the sudo group), or connect as root"
        ))
    } else if text.contains("a terminal is required") || text.contains("must have a tty") {
        Some("sudo on this host requires a terminal (Defaults requiretty): remove requiretty for this user".into())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwordless_sudo_never_prompts_and_quotes_the_command() {
        assert_eq!(
            sudo_command("echo 'a b' > /x", false),
            r"sudo -n -- sh -c 'echo '\''a b'\'' > /x'"
        );
    }

    #[test]
    fn password_sudo_reads_the_password_from_stdin_not_argv() {
        let cmd = sudo_command("id -u", true);
        assert!(cmd.starts_with("IFS= read -r capstan_become_pw;"), "{cmd}");
        assert!(cmd.contains("sudo -S -p '' -- sh -c 'id -u'"), "{cmd}");
        assert!(cmd.contains("sudo -n -- sh -c 'id -u'"), "{cmd}");
        // Only the variable's name appears; a value could not be there, it is never passed in.
        assert!(!cmd.contains("ops"));
    }

    #[test]
    fn password_wrapper_runs_under_sh() {
        // The wrapper must be valid POSIX sh: check its syntax with the local sh.
        let cmd = sudo_command("printf '%s' \"$(echo x)\"; exit 3", true);
        let status = std::process::Command::new("sh")
            .args(["-n", "-c", &cmd])
            .status()
            .unwrap();
        assert!(status.success());
    }

    #[test]
    fn sudo_failures_are_recognised() {
        let f = |s: u32, e: &str| sudo_failure(s, e.as_bytes(), "ops");
        assert!(
            f(1, "sudo: a password is required\n")
                .unwrap()
                .contains("CAPSTAN_BECOME_PASSWORD")
        );
        assert!(
            f(1, "Sorry, try again.\nsudo: 1 incorrect password attempt\n")
                .unwrap()
                .contains("rejected")
        );
        assert!(
            f(1, "ops is not in the sudoers file.\n")
                .unwrap()
                .contains("sudoers")
        );
        assert!(
            f(
                1,
                "sudo: ops is not in the sudoers file.  This incident will be reported.\n"
            )
            .unwrap()
            .contains("sudoers")
        );
        assert!(
            f(127, "sh: 1: sudo: not found\n")
                .unwrap()
                .contains("not installed")
        );
        assert!(f(1, "grep: nothing\n").is_none());
        assert!(f(2, "sudo: a password is required\n").is_none());
    }

    /// A stand-in `sudo` with the real one's stdin contract: `-n` never reads stdin and fails
    /// when a password is needed; `-S` reads one line as the password, then runs the command
    /// with the rest of stdin.
    const FAKE_SUDO: &str = r#"#!/bin/sh
needs_pw=$(cat "$(dirname "$0")/needs_pw")
if [ "$1" = "-n" ]; then
  shift
  if [ "$needs_pw" = yes ]; then echo "sudo: a password is required" >&2; exit 1; fi
  [ "$1" = "--" ] && shift
  exec "$@"
fi
[ "$1" = "-S" ] || { echo "fake sudo: unexpected $*" >&2; exit 99; }
shift 3
[ "$1" = "--" ] && shift
IFS= read -r pw
if [ "$pw" != "s3cret pw" ]; then
  echo "Sorry, try again." >&2; echo "sudo: 1 incorrect password attempt" >&2; exit 1
fi
exec "$@"
"#;

    fn run_with_fake_sudo(needs_pw: bool, command: &str, stdin: &[u8]) -> std::process::Output {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let sudo = dir.path().join("sudo");
        std::fs::write(&sudo, FAKE_SUDO).unwrap();
        std::fs::set_permissions(&sudo, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(
            dir.path().join("needs_pw"),
            if needs_pw { "yes" } else { "no" },
        )
        .unwrap();
        let path = format!(
            "{}:{}",
            dir.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .env("PATH", path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child.wait_with_output().unwrap()
    }

    #[test]
    fn password_goes_to_sudo_and_the_rest_of_stdin_to_the_command() {
        let cmd = sudo_command("cat; echo end", true);
        // sudo needs the password: it gets the first line, the command the rest.
        let out = run_with_fake_sudo(true, &cmd, b"s3cret pw\nDATA 1\nDATA 2\n");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "DATA 1\nDATA 2\nend\n"
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // NOPASSWD: the password line is swallowed, never handed to the command.
        let out = run_with_fake_sudo(false, &cmd, b"s3cret pw\nDATA\n");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "DATA\nend\n");
        // Wrong password: recognised as sudo's failure, not the command's.
        let out = run_with_fake_sudo(true, &cmd, b"wrong\nDATA\n");
        let status = u32::try_from(out.status.code().unwrap()).unwrap();
        let why = sudo_failure(status, &out.stderr, "ops").unwrap();
        assert!(why.contains("rejected"), "{why}");
        // No password given but one is needed.
        let out = run_with_fake_sudo(true, &sudo_command("true", false), b"");
        let status = u32::try_from(out.status.code().unwrap()).unwrap();
        let why = sudo_failure(status, &out.stderr, "ops").unwrap();
        assert!(why.contains("CAPSTAN_BECOME_PASSWORD"), "{why}");
    }
}
