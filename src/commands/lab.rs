//! `capstan lab up|down`: container hosts on this machine.

use std::process::ExitCode;

use crate::cli::{GlobalArgs, LabCommand, OutputFormat};
use crate::lab;

pub fn run(global: &GlobalArgs, cmd: LabCommand) -> miette::Result<ExitCode> {
    match cmd {
        LabCommand::Up(args) => {
            let mounts = args
                .mounts
                .iter()
                .map(|m| lab::parse_mount(m))
                .collect::<Result<Vec<_>, _>>()
                .map_err(bad_input)?;
            let spec = lab::LabSpec {
                out: args.out.unwrap_or_else(|| lab::default_out(&args.name)),
                name: args.name,
                control_planes: args.control_planes,
                workers: args.workers,
                etcd: args.etcd,
                load_balancers: args.load_balancers,
                image: args.image,
                mounts,
                mirror: args.mirror.map(|m| std::path::absolute(&m).unwrap_or(m)),
            };
            let summary = lab::up(&spec).map_err(bad_input)?;
            emit(global, &summary, &summary)?;
        }
        LabCommand::Down(args) => {
            let out = args.out.unwrap_or_else(|| lab::default_out(&args.name));
            let summary = lab::down(&args.name, &out).map_err(bad_input)?;
            emit(global, &summary, &summary)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn emit(
    global: &GlobalArgs,
    json: &impl serde::Serialize,
    text: &impl std::fmt::Display,
) -> miette::Result<()> {
    if global.output == OutputFormat::Json {
        crate::ui::emit_json(json)?;
    } else if !global.quiet {
        crate::ui::emit(&format!("{text}\n"));
    }
    Ok(())
}

/// Lab errors that are the user's input (a bad name or mount) exit 2, like any bad input.
fn bad_input(e: lab::LabError) -> miette::Report {
    if e.is_bad_input() {
        crate::error::BadInput::new(e.to_string(), "see `capstan lab up --help`").into()
    } else {
        miette::Report::new(e)
    }
}
