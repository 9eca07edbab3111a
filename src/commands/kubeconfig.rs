//! `capstan kubeconfig`: prints the admin kubeconfig, or one for `--user`/`--group` with a
//! fresh client certificate. The kubeconfig goes to stdout (it holds a private key: redirect
//! it to a file); a one-line summary without key material goes to stderr.

use std::process::ExitCode;

use time::OffsetDateTime;

use crate::cli::{GlobalArgs, KubeconfigArgs};
use crate::workflows::kubeconfig;

pub fn run(global: &GlobalArgs, args: &KubeconfigArgs) -> miette::Result<ExitCode> {
    // Flags first: a typo is reported before the inventory or the PKI is read.
    let request = match &args.user {
        Some(user) => Some((
            kubeconfig::identity(user, &args.groups)?,
            kubeconfig::parse_validity(&args.validity)?,
        )),
        None => None,
    };
    let inventory = super::load_inventory(global)?;
    let now = OffsetDateTime::now_utc();
    let issued = match &request {
        Some((who, validity)) => kubeconfig::for_identity(&inventory, who, *validity, now)?,
        None => kubeconfig::admin(&inventory, now)?,
    };
    let ui = crate::ui::ui();
    if ui.json {
        crate::ui::emit(&kubeconfig::to_json(&issued.kubeconfig)?);
    } else {
        crate::ui::emit(&String::from_utf8_lossy(&issued.kubeconfig));
    }
    if !ui.quiet {
        eprintln!("{}", kubeconfig::summary(&issued));
    }
    Ok(ExitCode::SUCCESS)
}
