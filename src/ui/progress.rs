//! A progress bar over hosts, silent when not on a terminal.

use indicatif::{ProgressBar, ProgressStyle};

pub struct HostProgress {
    bar: Option<ProgressBar>,
}

impl HostProgress {
    pub fn new(what: &str, hosts: usize) -> Self {
        if !super::ui().progress {
            return Self { bar: None };
        }
        let bar = ProgressBar::new(hosts as u64);
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
        }
    }
}
