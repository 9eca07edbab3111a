//! What the user sees: logging verbosity, colours, progress bars, tables.

mod progress;
mod table;

use std::io::IsTerminal;
use std::sync::OnceLock;

pub use progress::{HostProgress, PhaseProgress};
pub use table::Table;

use crate::cli::{GlobalArgs, OutputFormat};

#[derive(Debug, Clone, Copy)]
pub struct Ui {
    pub color: bool,
    pub quiet: bool,
    pub verbose: u8,
    pub json: bool,
    /// Progress bars only on a terminal, and never in quiet or JSON mode.
    pub progress: bool,
}

static UI: OnceLock<Ui> = OnceLock::new();

/// Sets up the error report style and logging from the global flags. Call once.
pub fn init(global: &GlobalArgs) {
    let stderr_tty = std::io::stderr().is_terminal();
    let json = global.output == OutputFormat::Json;
    let ui = Ui {
        color: !global.no_color && stderr_tty,
        quiet: global.quiet,
        verbose: global.verbose,
        json,
        progress: stderr_tty && !global.quiet && !json,
    };
    let _ = UI.set(ui);
    let color = ui.color;
    let _ = miette::set_hook(Box::new(move |_| {
        Box::new(
            miette::MietteHandlerOpts::new()
                .color(color)
                .unicode(color)
                .terminal_links(false)
                .build(),
        )
    }));
    let level = match (global.quiet, global.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        (false, _) => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CAPSTAN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("capstan={level}")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(color)
        .without_time()
        .try_init();
}

/// The settings chosen by [`init`] (defaults when `init` was not called, as in tests).
pub fn ui() -> Ui {
    UI.get().copied().unwrap_or(Ui {
        color: false,
        quiet: false,
        verbose: 0,
        json: false,
        progress: false,
    })
}

/// Wraps `text` in an ANSI colour when colours are on.
/// `1 change`, `2 changes`, `0 changes`: a count with its noun in agreement.
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Hosts whose lines say the same thing, said once: `(hosts, line)` in the order each line
/// first appears. Five hosts with nothing to do are one line, not five.
pub(crate) fn group_hosts<'a>(
    lines: impl IntoIterator<Item = (&'a str, String)>,
) -> Vec<(Vec<&'a str>, String)> {
    let mut groups: Vec<(Vec<&'a str>, String)> = Vec::new();
    for (host, line) in lines {
        match groups.iter_mut().find(|(_, l)| *l == line) {
            Some((hosts, _)) => hosts.push(host),
            None => groups.push((vec![host], line)),
        }
    }
    groups
}

pub fn paint(text: &str, color: Color) -> String {
    if !ui().color {
        return text.to_string();
    }
    let code = match color {
        Color::Red => "31",
        Color::Green => "32",
        Color::Yellow => "33",
        Color::Dim => "2",
        Color::Bold => "1",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

#[derive(Debug, Clone, Copy)]
pub enum Color {
    Red,
    Green,
    Yellow,
    Dim,
    Bold,
}

/// Writes `text` to stdout. A reader that went away (`capstan ... | head`) is not an error:
/// the rest of the output is simply not wanted.
/// `value` as one pretty JSON document on stdout (see [`emit`]).
pub fn emit_json<T: serde::Serialize + ?Sized>(value: &T) -> miette::Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| miette::miette!("cannot render JSON: {e}"))?;
    emit(&format!("{text}\n"));
    Ok(())
}

pub fn emit(text: &str) {
    use std::io::Write as _;
    let write = || {
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes()).and_then(|()| out.flush())
    };
    // Above any progress bar on the terminal, not through it.
    let result = if ui().progress {
        progress::multi().suspend(write)
    } else {
        write()
    };
    if let Err(e) = result
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        eprintln!("capstan: cannot write the output: {e}");
    }
}

/// stdin is a terminal someone can answer a question on.
pub fn can_ask() -> bool {
    use std::io::IsTerminal;
    std::io::stdin().is_terminal()
}

/// Asks `question` on the terminal (stderr, then a line of stdin): `true` for y/yes.
pub fn confirm(question: &str) -> bool {
    use std::io::{BufRead, Write};
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    matches!(answer.trim(), "y" | "Y" | "yes")
}

#[cfg(test)]
mod tests {
    use super::group_hosts;

    #[test]
    fn hosts_with_the_same_line_are_grouped_in_first_seen_order() {
        let lines = [
            ("cp1", "no changes".to_string()),
            ("w1", "changed".to_string()),
            ("cp2", "no changes".to_string()),
            ("w2", "changed".to_string()),
            ("lb1", "failed".to_string()),
        ];
        assert_eq!(
            group_hosts(lines),
            vec![
                (vec!["cp1", "cp2"], "no changes".to_string()),
                (vec!["w1", "w2"], "changed".to_string()),
                (vec!["lb1"], "failed".to_string()),
            ]
        );
        assert!(group_hosts(Vec::new()).is_empty());
    }
}
