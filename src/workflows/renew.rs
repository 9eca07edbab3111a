//! `capstan certs renew` on the hosts: the renewed certificates installed and the
//! components that use them restarted, control planes and etcd members one at a time, each
//! gated before the next (etcd healthy, the API server ready), then every other node at once.
//!
//! The restarts come from the roles: etcd and the kubelet restart when their certificates or
//! kubeconfigs change (`restart_on`), and the static pods' manifests carry the fingerprint of
//! the host's PKI files, so the kubelet restarts them when it changes (what kubeadm's
//! "touch the manifests" does, declaratively).

use std::collections::BTreeMap;

use super::cluster::{ClusterRun, RunReport, Stop};
use super::converge::{self, ConvergeOptions};
use super::{SessionOptions, init};
use crate::artifacts::cache::Cache;
use crate::inventory::{Inventory, Role};
use crate::pki;

pub async fn roll(
    inventory: &Inventory,
    session: &SessionOptions,
    cache: Cache,
    dry_run: bool,
) -> miette::Result<RunReport> {
    let prepared = converge::prepare(inventory, &ConvergeOptions::default(), cache)?;
    let mut run =
        ClusterRun::connect("certs renew", inventory, session, prepared, dry_run, false).await;
    let stopped = steps(&mut run).await.err();
    Ok(run.finish(stopped).await)
}

async fn steps(run: &mut ClusterRun<'_>) -> Result<(), Stop> {
    let inv = run.inventory;
    let cps = run.with_role(Role::ControlPlane);
    let members = run.etcd_members();
    init::critical(run, &cps, "connect")?;
    init::critical(run, &members, "connect")?;
    run.probe().await;
    init::same_ca(run)?;
    let none = BTreeMap::new();
    let mut one_by_one: Vec<usize> = members.clone();
    one_by_one.extend(cps.iter().copied().filter(|i| !members.contains(i)));
    one_by_one.sort_unstable();
    for &i in &one_by_one {
        let name = run.host(i).name.clone();
        let failed = run
            .converge(
                &format!("{name}: certificates"),
                &[i],
                &["pki", "etcd", "kubelet", "control-plane"],
                &none,
            )
            .await;
        if !failed.is_empty() {
            return Err(Stop(format!(
                "installing the certificates on {name} failed; the other hosts were not touched. \
                 Fix it and run `capstan certs renew` again"
            )));
        }
        if members.contains(&i) {
            init::etcd_gate(run, i, members.len()).await?;
        }
        if cps.contains(&i) {
            let server = pki::spec::local_api_url(inv, run.host(i));
            init::api_gate(run, i, Some(server), &format!("the API server of {name}")).await?;
        }
    }
    let rest: Vec<usize> = (0..inv.hosts.len())
        .filter(|i| !one_by_one.contains(i))
        .collect();
    run.converge(
        "other hosts: certificates",
        &rest,
        &["pki", "kubelet"],
        &none,
    )
    .await;
    Ok(())
}
