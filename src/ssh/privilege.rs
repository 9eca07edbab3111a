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
}
