//! capstan: declarative, SSH-driven Kubernetes cluster provisioning.
//!
//! The binary is a thin shell over [`run`]; everything else lives here so that the
//! integration tests and later workflows can use it.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod artifacts;
pub mod cli;
pub mod commands;
pub mod engine;
pub mod error;
pub mod facts;
pub mod fsutil;
pub mod interrupt;
pub mod inventory;
pub mod journal;
pub mod lab;
pub mod lock;
pub mod pki;
pub mod preflight;
pub mod ssh;
pub mod ui;
pub mod upgrade;
pub mod workflows;
pub mod yaml;

use std::process::ExitCode;

use clap::Parser;

/// Parses the command line, runs the subcommand and maps the outcome to an exit code.
pub fn run() -> miette::Result<ExitCode> {
    let cli = cli::Cli::parse();
    ui::init(&cli.global);
    commands::dispatch(cli)
}
