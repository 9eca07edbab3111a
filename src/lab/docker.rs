//! A thin, synchronous driver of the `docker` CLI.

use std::io::Write;
use std::process::{Command, Stdio};

use super::LabError;

/// How much of a failed command's stderr an error carries.
const STDERR_TAIL: usize = 2000;

/// The output of a docker command that ran (whatever its exit status).
#[derive(Debug)]
pub(crate) struct Output {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }
}

/// Runs `docker ARGS` (stdin from `input` when given) and returns what it printed.
pub(crate) fn run(args: &[&str], input: Option<&[u8]>) -> Result<Output, LabError> {
    let mut cmd = Command::new("docker");
    cmd.args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            LabError::DockerMissing
        } else {
            LabError::Spawn {
                command: render(args),
                source,
            }
        }
    })?;
    if let (Some(bytes), Some(mut stdin)) = (input, child.stdin.take()) {
        // A command that exits early closes its stdin; its status tells the story.
        let _ = stdin.write_all(bytes);
    }
    let out = child.wait_with_output().map_err(|source| LabError::Spawn {
        command: render(args),
        source,
    })?;
    Ok(Output {
        status: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Runs `docker ARGS` and fails unless it exits 0; returns stdout.
pub(crate) fn check(args: &[&str]) -> Result<String, LabError> {
    check_with_input(args, None)
}

pub(crate) fn check_with_input(args: &[&str], input: Option<&[u8]>) -> Result<String, LabError> {
    let out = run(args, input)?;
    if out.success() {
        Ok(out.stdout)
    } else {
        Err(failed(args, &out))
    }
}

pub(crate) fn failed(args: &[&str], out: &Output) -> LabError {
    LabError::Docker {
        command: render(args),
        status: out.status,
        stderr: tail(&out.stderr),
    }
}

/// The last [`STDERR_TAIL`] bytes of `text`, trimmed, cut at a char boundary.
pub(crate) fn tail(text: &str) -> String {
    let text = text.trim();
    let mut start = text.len().saturating_sub(STDERR_TAIL);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_string()
}

pub(crate) fn render(args: &[&str]) -> String {
    let mut s = String::from("docker");
    for a in args {
        s.push(' ');
        s.push_str(&shell_escape::escape((*a).into()));
    }
    s
}

/// Names printed one per line by `docker ... --format {{.Name}}` / `-q`.
pub(crate) fn lines(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}
