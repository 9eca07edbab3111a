//! `capstan versions`: the version catalog, with the inventory's override when there is one.

use std::process::ExitCode;

use crate::artifacts::Catalog;
use crate::artifacts::data::today;
use crate::cli::GlobalArgs;
use crate::workflows::versions::{render, report};

pub fn run(global: &GlobalArgs) -> miette::Result<ExitCode> {
    // Without an inventory: the built-in catalog (a catalog.yaml in the current folder too).
    let dir = match &global.inventory {
        Some(_) => {
            let path = crate::inventory::locate(global.inventory.as_deref())?;
            path.parent()
                .map(std::path::Path::to_path_buf)
                .unwrap_or_default()
        }
        None => std::path::PathBuf::from("."),
    };
    let catalog =
        Catalog::for_inventory_dir(&dir).map_err(|e| crate::inventory::InventoryErrors {
            file: e.file,
            problems: e.problems,
        })?;
    let r = report(&catalog, today());
    if crate::ui::ui().json {
        crate::ui::emit_json(&r)?;
    } else {
        crate::ui::emit(&render(&r));
    }
    Ok(ExitCode::SUCCESS)
}
