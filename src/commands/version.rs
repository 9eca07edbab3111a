//! `capstan version`, `capstan completion SHELL`, `capstan man`: about capstan itself.

use std::process::ExitCode;

use clap::CommandFactory;
use serde::Serialize;

use crate::cli::Cli;

#[derive(Debug, Serialize)]
struct About {
    capstan: &'static str,
    /// The newest Kubernetes release the built-in catalog knows.
    newest_kubernetes: Option<String>,
    /// The Kubernetes minors the built-in catalog knows.
    kubernetes_minors: Vec<String>,
}

fn about() -> About {
    let catalog = crate::artifacts::Catalog::builtin();
    let newest = catalog
        .minors
        .values()
        .filter_map(|m| m.newest_patch)
        .max()
        .map(|v| v.to_string());
    About {
        capstan: env!("CARGO_PKG_VERSION"),
        newest_kubernetes: newest,
        kubernetes_minors: catalog.minor_names(),
    }
}

pub fn run() -> miette::Result<ExitCode> {
    let a = about();
    if crate::ui::ui().json {
        crate::ui::emit_json(&a)?;
    } else {
        crate::ui::emit(&format!(
            "capstan {}\nKubernetes: {} known (newest {})\n",
            a.capstan,
            a.kubernetes_minors.join(", "),
            a.newest_kubernetes.as_deref().unwrap_or("none")
        ));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn completion(shell: clap_complete::Shell) -> ExitCode {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "capstan", &mut out);
    crate::ui::emit(&String::from_utf8_lossy(&out));
    ExitCode::SUCCESS
}

pub fn man() -> miette::Result<ExitCode> {
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut out)
        .map_err(|e| miette::miette!("cannot render the man page: {e}"))?;
    crate::ui::emit(&String::from_utf8_lossy(&out));
    Ok(ExitCode::SUCCESS)
}
