//! Ctrl-C and friends: a run that changes hosts stops between steps, not in the middle.
//!
//! [`install`] (done by every command that takes the cluster lock) turns SIGINT and
//! SIGTERM into a cancellation flag: the host steps in flight finish, no new one starts
//! (the checks sit where steps start: [`check`] in a cluster run's phase loop, its execs and
//! gates, and before each host's apply), the lock is released, the journal says so, and
//! capstan prints what is done and what is not and exits 130 (SIGINT) or 143 (SIGTERM).
//! A second signal aborts at once (exit 130/143; the journal records it with the phases in
//! flight, see [`crate::journal::in_flight`]; the lock stays and turns stale, and
//! `--break-lock` takes it over). Losing the cluster lock cancels the same way (exit 1).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};

/// Why a run was cancelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interruption {
    /// The signal number (2, 15), or `None` for another cause (the lock was lost).
    pub signal: Option<i32>,
    pub reason: String,
}

impl Interruption {
    /// 128 + the signal (130 for SIGINT, 143 for SIGTERM); 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        self.signal
            .and_then(|s| u8::try_from(128 + s).ok())
            .unwrap_or(crate::error::EXIT_FAILED)
    }
}

/// 0 running, 1 cancelled.
static STATE: AtomicU8 = AtomicU8::new(0);
static WHY: Mutex<Option<Interruption>> = Mutex::new(None);

fn signal_name(sig: i32) -> &'static str {
    match sig {
        2 => "SIGINT",
        15 => "SIGTERM",
        _ => "a signal",
    }
}

/// Cancels the run: no new step starts. The first cause wins.
pub fn cancel_with(why: Interruption) {
    if STATE.swap(1, Ordering::SeqCst) == 0 {
        crate::journal::append("-", &format!("interrupted: {}", why.reason));
        if let Ok(mut w) = WHY.lock() {
            *w = Some(why);
        }
    }
}

/// Cancels the run for a reason that is not a signal.
pub fn cancel(reason: &str) {
    cancel_with(Interruption {
        signal: None,
        reason: reason.to_string(),
    });
}

/// Why the run was cancelled, if it was.
pub fn interrupted() -> Option<Interruption> {
    if STATE.load(Ordering::SeqCst) == 0 {
        return None;
    }
    WHY.lock().ok().and_then(|w| w.clone())
}

/// `Err` (the reason, for a step's error) once the run is cancelled: call it before
/// starting a step.
pub fn check() -> Result<(), String> {
    match interrupted() {
        None => Ok(()),
        Some(i) => Err(format!("not started: {}", i.reason)),
    }
}

/// Where an aborted run was: the phases (or hosts) in flight, from the journal.
fn abort_point(in_flight: &[String]) -> String {
    if in_flight.is_empty() {
        "between steps".to_string()
    } else {
        format!("during: {}", in_flight.join("; "))
    }
}

/// Installs the SIGINT/SIGTERM handlers on `rt`. `on_abort` is said on a second signal,
/// just before exiting.
pub fn install(rt: &tokio::runtime::Runtime, on_abort: String) {
    use tokio::signal::unix::{SignalKind, signal};
    let _guard = rt.enter();
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        eprintln!(
            "capstan: warning: cannot handle Ctrl-C: an interrupt will kill this run at once"
        );
        return;
    };
    rt.spawn(async move {
        loop {
            let sig = tokio::select! {
                _ = int.recv() => 2,
                _ = term.recv() => 15,
            };
            if interrupted().is_none() {
                eprintln!(
                    "\ncapstan: {} received: finishing the host steps in flight, starting no new ones \
                     (press Ctrl-C again to abort at once)",
                    signal_name(sig)
                );
                cancel_with(Interruption {
                    signal: Some(sig),
                    reason: format!("interrupted by {}", signal_name(sig)),
                });
            } else {
                let at = abort_point(&crate::journal::in_flight());
                crate::journal::append(
                    "-",
                    &format!(
                        "aborted by a second {} {at}; the cluster lock stays",
                        signal_name(sig)
                    ),
                );
                eprintln!(
                    "\ncapstan: aborted by a second {} {at}. {on_abort}",
                    signal_name(sig)
                );
                std::process::exit(128 + sig);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        let int = Interruption {
            signal: Some(2),
            reason: String::new(),
        };
        assert_eq!(int.exit_code(), 130);
        let term = Interruption {
            signal: Some(15),
            reason: String::new(),
        };
        assert_eq!(term.exit_code(), 143);
        let lost = Interruption {
            signal: None,
            reason: String::new(),
        };
        assert_eq!(lost.exit_code(), 1);
    }

    #[test]
    fn an_abort_says_what_was_in_flight() {
        assert_eq!(abort_point(&[]), "between steps");
        assert_eq!(
            abort_point(&["control plane cp1".to_string(), "workers".to_string()]),
            "during: control plane cp1; workers"
        );
    }
}
