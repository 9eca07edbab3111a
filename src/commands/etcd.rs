//! `capstan etcd snapshot`: a verified etcd snapshot in .capstan/backups/.

use std::process::ExitCode;

use crate::cli::{EtcdCommand, GlobalArgs};
use crate::workflows::{SessionOptions, snapshot};

pub fn run(global: &GlobalArgs, cmd: &EtcdCommand) -> miette::Result<ExitCode> {
    match cmd {
        EtcdCommand::Snapshot => {
            let inventory = super::load_inventory(global)?;
            let session = SessionOptions::from_flags(global, &inventory)?;
            let snap = super::runtime()?.block_on(snapshot::run(&inventory, &session))?;
            if crate::ui::ui().json {
                crate::ui::emit_json(&snap)?;
            } else {
                crate::ui::emit(&format!(
                    "snapshot of etcd taken on {} (revision {}, {} keys, {} bytes, sha256 {})\n  {}\n",
                    snap.host,
                    snap.revision,
                    snap.total_keys,
                    snap.size,
                    snap.sha256,
                    snap.path.display()
                ));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
