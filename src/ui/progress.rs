//! Progress bars, silent when not on a terminal (and with -q or JSON output). Every bar
//! lives in one [`MultiProgress`] on stderr, so a phase's bar and the hosts' bar of the
//! step inside it stack instead of overwriting each other, and lines written to stdout
//! meanwhile ([`super::emit`]) are printed above them.

use std::sync::OnceLock;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The bars of this process.
pub(super) fn multi() -> &'static MultiProgress {
    static MULTI: OnceLock<MultiProgress> = OnceLock::new();
    MULTI.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
}

pub struct HostProgress {
    bar: Option<ProgressBar>,
}

impl HostProgress {
    pub fn new(what: &str, hosts: usize) -> Self {
        if !super::ui().progress {
            return Self { bar: None };
        }
        let bar = multi().add(ProgressBar::new(hosts as u64));
        let style = ProgressStyle::with_template(
            "{spinner} {msg} [{bar:30}] {pos}/{len} hosts ({elapsed})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(what.to_string());
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        Self { bar: Some(bar) }
    }

    /// One host answered (or failed).
    pub fn host_done(&self, host: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(host.to_string());
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
