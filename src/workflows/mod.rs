//! Workflows: what a command does, in order, across the inventory's hosts.

pub mod addons_gate;
pub mod certs;
pub mod check;
pub mod cluster;
pub mod converge;
pub mod gates;
pub mod init;
pub mod kubeconfig;
pub mod membership;
pub mod node_labels;
pub mod renew;
pub mod reset;
pub mod restore;
pub mod snapshot;
pub(crate) mod snapshot_fetch;
pub(crate) mod snapshot_list;
pub mod upgrade;
pub mod upgrade_plan;
pub mod versions;

use std::time::Duration;

use crate::cli::GlobalArgs;
use crate::error::BadInput;
use crate::inventory::{Become, Host, Inventory};
use crate::ssh;

/// How this run reaches hosts: SSH options plus fan-out width.
pub struct SessionOptions {
    pub ssh: ssh::SshOptions,
    pub forks: usize,
}

/// The environment variable that carries the sudo password (never logged).
pub const BECOME_PASSWORD_ENV: &str = "CAPSTAN_BECOME_PASSWORD";

impl SessionOptions {
    pub fn from_flags(global: &GlobalArgs, inventory: &Inventory) -> Result<Self, BadInput> {
        let needs_password_source = inventory
            .hosts
            .iter()
            .any(|h| h.ssh.become_method == Become::Sudo);
        let become_password = if !needs_password_source {
            None
        } else if global.ask_become_pass {
            let pw = rpassword::prompt_password("sudo password: ").map_err(|e| {
                BadInput::new(
                    format!("cannot read the sudo password from the terminal: {e}"),
                    format!("run from a terminal, or set {BECOME_PASSWORD_ENV}"),
                )
            })?;
            Some(ssh::Secret::new(pw))
        } else {
            std::env::var(BECOME_PASSWORD_ENV)
                .ok()
                .map(ssh::Secret::new)
        };
        let mut options = ssh::SshOptions::new(inventory.known_hosts_path());
        options.connect_timeout = Duration::from_secs(global.connect_timeout);
        options.accept_new_host_keys = global.accept_new_host_keys;
        options.become_password = become_password;
        Ok(Self {
            ssh: options,
            forks: global.forks as usize,
        })
    }
}

/// The SSH target for an inventory host.
pub fn target(host: &Host) -> ssh::Target {
    ssh::Target {
        name: host.name.clone(),
        address: host.address.clone(),
        port: host.ssh.port,
        user: host.ssh.user.clone(),
        identity_file: host.ssh.identity_file.clone(),
        become_method: host.ssh.become_method,
        bastion: host.ssh.bastion.as_ref().map(|b| ssh::BastionTarget {
            address: b.address.clone(),
            port: b.port,
            user: b.user.clone(),
            identity_file: b.identity_file.clone(),
        }),
    }
}
