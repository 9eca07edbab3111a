//! The run journal: `.capstan/journal.log` beside the inventory, one line per event of a run
//! that changes hosts (start, each phase started and done, interrupted, aborted, end), so
//! that after a crash, a Ctrl-C or a second Ctrl-C the operator can see where a run got to.
//!
//! Line format (tab-separated): RFC 3339 time (UTC), the command, the subject (a phase, a
//! host, or `-` for the run), the event. `upgrade apply` writes its per-host steps in the
//! same file and format.
//!
//! The journal also keeps, in memory, the subjects started and not yet ended
//! ([`in_flight`]), so that a second Ctrl-C, which exits at once, can still write where the
//! run was when it stopped.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;

struct Journal {
    path: PathBuf,
    command: String,
    /// Subjects with a `start` event and no later event yet, in start order.
    open: Vec<String>,
}

static JOURNAL: Mutex<Option<Journal>> = Mutex::new(None);

/// Starts journaling `command` into `state_dir/journal.log` for the rest of the process.
pub fn open(state_dir: PathBuf, command: &str) {
    if let Ok(mut j) = JOURNAL.lock() {
        *j = Some(Journal {
            path: state_dir.join("journal.log"),
            command: command.to_string(),
            open: Vec::new(),
        });
    }
}

/// One line, when a journal is open; a journal that cannot be written never fails a run.
pub fn append(subject: &str, event: &str) {
    append_as(None, subject, event);
}

/// [`append`] under another command label than the run's (`upgrade v1.32.5` for
/// `upgrade apply`'s per-host steps), tracked in flight the same way.
pub fn append_as(command: Option<&str>, subject: &str, event: &str) {
    let Ok(mut guard) = JOURNAL.lock() else {
        return;
    };
    let Some(j) = guard.as_mut() else { return };
    if subject != "-" {
        j.open.retain(|s| s != subject);
        if event == "start" {
            j.open.push(subject.to_string());
        }
    }
    if let Some(dir) = j.path.parent() {
        use std::os::unix::fs::DirBuilderExt;
        let _ = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir);
    }
    let line = line(
        command.unwrap_or(&j.command),
        subject,
        event,
        time::OffsetDateTime::now_utc(),
    );
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&j.path)
    {
        let _ = f.write_all(line.as_bytes());
    }
}

/// The subjects (phases, hosts) started and not yet ended, oldest first.
pub fn in_flight() -> Vec<String> {
    JOURNAL
        .lock()
        .ok()
        .and_then(|j| j.as_ref().map(|j| j.open.clone()))
        .unwrap_or_default()
}

fn line(command: &str, subject: &str, event: &str, at: time::OffsetDateTime) -> String {
    let at = at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect()
    };
    format!(
        "{at}\t{}\t{}\t{}\n",
        clean(command),
        clean(subject),
        clean(event)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_four_tab_separated_fields() {
        let at = time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        assert_eq!(
            line("init", "etcd", "done\nforged\tfield", at),
            "2023-11-14T22:13:20Z\tinit\tetcd\tdone forged field\n"
        );
    }

    #[test]
    fn in_flight_is_what_started_and_has_not_ended() {
        let dir = tempfile::tempdir().unwrap();
        open(dir.path().to_path_buf(), "init");
        append("-", "start");
        append("etcd", "start");
        append("etcd", "done (3 changes)");
        append("control plane cp1", "start");
        append("workers", "start");
        append("workers", "failed on w1");
        assert_eq!(in_flight(), vec!["control plane cp1".to_string()]);
        // upgrade apply's per-host steps: their own command label, tracked alike.
        append_as(Some("upgrade v1.32.5"), "cp2", "start");
        assert_eq!(in_flight(), ["control plane cp1", "cp2"]);
        append_as(Some("upgrade v1.32.5"), "cp2", "done");
        assert_eq!(in_flight(), ["control plane cp1"]);
        let text = std::fs::read_to_string(dir.path().join("journal.log")).unwrap();
        assert_eq!(text.lines().count(), 8, "{text}");
        assert!(text.contains("\tupgrade v1.32.5\tcp2\tdone\n"), "{text}");
    }
}
