//! `capstan join`: add the hosts that are in the inventory but not in the cluster yet.

use std::process::ExitCode;

use crate::cli::{GlobalArgs, JoinArgs};
use crate::workflows::init::Mode;

pub fn run(global: &GlobalArgs, args: &JoinArgs) -> miette::Result<ExitCode> {
    super::init::build(
        global,
        &args.init,
        Mode::Join {
            hosts: args.hosts.clone(),
        },
    )
}
