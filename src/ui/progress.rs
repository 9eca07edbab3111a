//! Progress bars, silent when not on a terminal (and with -q or JSON output). Every bar
//! lives in one [`MultiProgress`] on stderr, so a phase's bar and the hosts' bar of the
//! step inside it stack instead of overwriting each other, and lines written to stdout
//! meanwhile ([`super::emit`]) are printed above them.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The bars of this process.
pub(super) fn multi() -> &'static MultiProgress {
    static MULTI: OnceLock<MultiProgress> = OnceLock::new();
    MULTI.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
}

/// A bar over hosts: how many have finished, and which are still at work (with their step)
/// once few are left, or how many are at each step while many are.
pub struct HostProgress {
    bar: Option<ProgressBar>,
    what: String,
    /// Hosts not finished yet, with the step each is at ("" before its first).
    pending: Mutex<BTreeMap<String, &'static str>>,
}

impl HostProgress {
    pub fn new<S: AsRef<str>>(what: &str, hosts: impl IntoIterator<Item = S>) -> Self {
        if !super::ui().progress {
            return Self {
                bar: None,
                what: what.to_string(),
                pending: Mutex::new(BTreeMap::new()),
            };
        }
        let pending: BTreeMap<String, &'static str> = hosts
            .into_iter()
            .map(|h| (h.as_ref().to_string(), ""))
            .collect();
        let bar = multi().add(ProgressBar::new(pending.len() as u64));
        let style = ProgressStyle::with_template(
            "{spinner} {wide_msg} [{bar:30}] {pos}/{len} hosts ({elapsed})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(at_work(what, &pending));
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        Self {
            bar: Some(bar),
            what: what.to_string(),
            pending: Mutex::new(pending),
        }
    }

    /// `host` has started `step` (e.g. "probing", "applying").
    pub fn step(&self, host: &str, step: &'static str) {
        self.update(|pending| {
            if let Some(s) = pending.get_mut(host) {
                *s = step;
            }
        });
    }

    /// One host answered (or failed).
    pub fn host_done(&self, host: &str) {
        self.update(|pending| {
            pending.remove(host);
        });
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    fn update(&self, change: impl FnOnce(&mut BTreeMap<String, &'static str>)) {
        let Some(bar) = &self.bar else { return };
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        change(&mut pending);
        bar.set_message(at_work(&self.what, &pending));
    }

    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
            multi().remove(&bar);
        }
    }
}

/// The bar's message: `what`, then the hosts still at work by name when there are at
/// most [`NAMED`] of them ("w1 applying, w2"), else how many are at each step.
fn at_work(what: &str, pending: &BTreeMap<String, &'static str>) -> String {
    if pending.is_empty() {
        return what.to_string();
    }
    if pending.len() <= NAMED {
        let hosts: Vec<String> = pending
            .iter()
            .map(|(h, s)| {
                if s.is_empty() {
                    h.clone()
                } else {
                    format!("{h} {s}")
                }
            })
            .collect();
        return format!("{what}: {}", hosts.join(", "));
    }
    let mut steps: BTreeMap<&str, usize> = BTreeMap::new();
    for s in pending.values().filter(|s| !s.is_empty()) {
        *steps.entry(s).or_default() += 1;
    }
    if steps.is_empty() {
        return what.to_string();
    }
    let counts: Vec<String> = steps.iter().map(|(s, n)| format!("{n} {s}")).collect();
    format!("{what}: {}", counts.join(", "))
}

/// Up to this many hosts at work are named in the message.
const NAMED: usize = 3;

/// A bar for one phase of a workflow (its steps, e.g. the hosts it upgrades), with what it
/// is doing now as the message and a line above the bars per finished step.
pub struct PhaseProgress {
    bar: Option<ProgressBar>,
}

impl PhaseProgress {
    pub fn new(phase: &str, steps: usize) -> Self {
        if !super::ui().progress {
            return Self { bar: None };
        }
        let bar = multi().add(ProgressBar::new(steps as u64));
        let style = ProgressStyle::with_template(
            "{spinner} {prefix:.bold} [{bar:30}] {pos}/{len} {msg} ({elapsed})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(phase.to_string());
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        Self { bar: Some(bar) }
    }

    /// What the phase is doing now.
    pub fn doing(&self, what: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(what.to_string());
        }
    }

    /// One line above the bars (a finished step); nothing when bars are off.
    pub fn line(&self, text: &str) {
        if self.bar.is_some() {
            let _ = multi().println(text);
        }
    }

    /// One step of the phase is done.
    pub fn inc(&self) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
            multi().remove(&bar);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(hosts: &[(&str, &'static str)]) -> BTreeMap<String, &'static str> {
        hosts.iter().map(|(h, s)| ((*h).to_string(), *s)).collect()
    }

    #[test]
    fn few_hosts_at_work_are_named_with_their_step() {
        let p = pending(&[("w1", "applying"), ("cp1", "probing"), ("w2", "")]);
        assert_eq!(
            at_work("converging", &p),
            "converging: cp1 probing, w1 applying, w2"
        );
    }

    #[test]
    fn many_hosts_at_work_are_counted_by_step() {
        let p = pending(&[
            ("w1", "applying"),
            ("w2", "probing"),
            ("w3", "probing"),
            ("w4", ""),
        ]);
        assert_eq!(
            at_work("converging", &p),
            "converging: 1 applying, 2 probing"
        );
        let not_started = pending(&[("w1", ""), ("w2", ""), ("w3", ""), ("w4", "")]);
        assert_eq!(at_work("connecting", &not_started), "connecting");
        assert_eq!(at_work("connecting", &BTreeMap::new()), "connecting");
    }
}
