//! The certificate workflows: `certs generate` (local only), `certs renew` (local re-issue),
//! `certs distribute` (adopt the cluster's CAs when local state is lost, complete the PKI,
//! install each host's files through the engine: one probe per host, one apply when
//! something differs) and `certs check-expiration` (one exec per
//! host reading what it holds).
//!
//! Nothing here prints or logs key material: reports carry names, paths, fingerprints and
//! dates only.

use std::collections::BTreeMap;
use std::time::Instant;

use base64::Engine;
use serde::Serialize;
use time::OffsetDateTime;

use super::converge::{Archives, ProbeKind, pki_desired, plan_apply, probe_host};
use super::{SessionOptions, target};
use crate::engine::desired;
use crate::inventory::{EtcdTopology, Host, Inventory, Role};
use crate::pki::adopt::{self, Adopted, RemoteFiles};
use crate::pki::expiry::{self, ExpiryRow, Unreadable};
use crate::pki::hosts;
use crate::pki::{self, PkiError, PkiPlan, PkiState, Store};
use crate::ssh::{self, Connection};

/// What a local PKI run decided and did.
#[derive(Debug, Serialize)]
pub struct PkiReport {
    /// The pki folder.
    pub dir: String,
    pub key_algorithm: String,
    pub dry_run: bool,
    /// CAs and keys taken over from the cluster.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub adopted: Vec<Adopted>,
    pub plan: PkiPlan,
    /// Files written under the pki folder (none on a dry run).
    pub written: Vec<String>,
}

fn report(inv: &Inventory, store: &Store, dry_run: bool, plan: PkiPlan) -> PkiReport {
    PkiReport {
        dir: store.root().display().to_string(),
        key_algorithm: inv.cluster.pki.key_algorithm.to_string(),
        dry_run,
        adopted: Vec::new(),
        plan,
        written: Vec::new(),
    }
}

/// Writes the operator's admin.conf beside the pki folder too (`.capstan/admin.conf`).
fn save(inv: &Inventory, store: &Store, state: &PkiState) -> Result<Vec<String>, PkiError> {
    let mut written = store.save(state)?.written;
    if let Some(admin) = state.kubeconfigs.get("admin.conf") {
        let path = inv.state_dir().join("admin.conf");
        if std::fs::read(&path).ok().as_deref() != Some(admin.as_slice()) {
            pki::store::write_atomic(&path, admin, 0o600)?;
            written.push("../admin.conf".into());
        }
    }
    Ok(written)
}

/// `certs generate`: creates or completes the local PKI; touches no host.
pub fn generate(
    inv: &Inventory,
    now: OffsetDateTime,
    dry_run: bool,
) -> Result<PkiReport, PkiError> {
    let store = Store::for_inventory(inv);
    let mut state = store.load()?;
    if dry_run {
        return Ok(report(inv, &store, true, pki::plan(inv, &state, now)));
    }
    let plan = pki::ensure(inv, &mut state, now)?;
    let mut out = report(inv, &store, false, plan);
    out.written = save(inv, &store, &state)?;
    Ok(out)
}

/// `certs renew`: re-issues the named certificates (or all) in the local PKI.
pub fn renew(
    inv: &Inventory,
    names: &[String],
    now: OffsetDateTime,
    dry_run: bool,
) -> Result<PkiReport, PkiError> {
    let store = Store::for_inventory(inv);
    let mut state = store.load()?;
    if state.is_empty() {
        return Err(PkiError::Missing {
            what: "CA (nothing to renew)".into(),
        });
    }
    let plan = pki::plan::renew(inv, &mut state, names, now, dry_run)?;
    let mut out = report(inv, &store, dry_run, plan);
    if !dry_run {
        out.written = save(inv, &store, &state)?;
    }
    Ok(out)
}

/// Prints, per adoptable file that exists, `REL BASE64` (one line each).
pub fn fetch_script() -> String {
    let mut s = String::from("set -u\ncd /etc/kubernetes/pki 2>/dev/null || exit 0\n");
    for rel in adopt::ADOPTABLE {
        s.push_str(&format!(
            "[ -f {rel} ] && printf '%s %s\\n' {rel} \"$(base64 -w0 {rel})\"\n"
        ));
    }
    s.push_str("exit 0\n");
    s
}

/// Parses the fetch script's output.
pub fn parse_fetch(stdout: &str) -> RemoteFiles {
    stdout
        .lines()
        .filter_map(|l| {
            let (rel, b64) = l.split_once(' ')?;
            adopt::ADOPTABLE.contains(&rel).then_some(())?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .ok()?;
            Some((rel.to_string(), bytes))
        })
        .collect()
}

/// Reads the CAs and service-account keys from the first reachable control plane (and,
/// under external etcd, the etcd CA from the first reachable etcd host): one exec each.
/// Returns `(host, files)` per source; empty when no host could be reached.
pub async fn fetch_cas(
    inv: &Inventory,
    connections: &BTreeMap<String, Connection>,
) -> Result<Vec<(String, RemoteFiles)>, ssh::SshError> {
    let mut out = Vec::new();
    let first = |role: Role| {
        inv.hosts_with(role)
            .find(|h| connections.contains_key(&h.name))
            .map(|h| h.name.clone())
    };
    let script = fetch_script();
    if let Some(cp) = first(Role::ControlPlane) {
        let res = connections[&cp].exec_checked(&script).await?;
        out.push((cp, parse_fetch(&res.stdout_text())));
    }
    if inv.cluster.etcd_topology == EtcdTopology::External
        && let Some(e) = first(Role::Etcd)
    {
        let res = connections[&e].exec_checked(&script).await?;
        let etcd_only: RemoteFiles = parse_fetch(&res.stdout_text())
            .into_iter()
            .filter(|(k, _)| k.starts_with("etcd/"))
            .collect();
        out.push((e, etcd_only));
    }
    Ok(out)
}

/// One host's outcome of `certs distribute`.
#[derive(Debug, Serialize)]
pub struct HostDistribution {
    pub host: String,
    /// Paths installed or changed (dry run: that would be).
    pub changed: Vec<String>,
    pub unchanged: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct DistributeReport {
    pub pki: PkiReport,
    pub hosts: Vec<HostDistribution>,
    pub seconds: f64,
}

impl DistributeReport {
    pub fn failed(&self) -> usize {
        self.hosts.iter().filter(|h| h.error.is_some()).count()
    }
}

/// Installs one host's PKI files through the engine, as the `pki` role of `apply` does:
/// one probe that hashes them, then, when something differs, one apply (staged, renamed
/// into place, recorded). Returns the files changed (dry run: that would be) and how many
/// were already right.
async fn install(
    conn: &Connection,
    inv: &Inventory,
    host: &Host,
    state: &PkiState,
    dry_run: bool,
    archives: &Archives,
) -> Result<(Vec<String>, usize), String> {
    let desired = pki_desired(inv, host, Some(state), desired::Mode::Full)?;
    let files = desired
        .iter()
        .filter(|d| matches!(d, desired::Desired::File(_)))
        .count();
    if files == 0 {
        return Ok((Vec::new(), 0));
    }
    let shape = pki_desired(inv, host, Some(state), desired::Mode::Shape)?;
    let probed = probe_host(conn, &shape, true, ProbeKind::Light, !dry_run).await?;
    let (plan, _) = plan_apply(conn, &desired, &probed, dry_run, archives).await?;
    let changed: Vec<String> = plan
        .changes
        .into_iter()
        .filter(|c| c.kind == "file")
        .map(|c| c.target)
        .collect();
    let unchanged = files - changed.len();
    Ok((changed, unchanged))
}

/// `certs distribute`: connects to the hosts, adopts the cluster's CAs when the local PKI
/// lacks them (refusing when they differ, before anything is written), completes the local
/// PKI, and installs each selected host's files (one exec per host).
pub async fn distribute(
    inv: &Inventory,
    session: &SessionOptions,
    only: &[String],
    now: OffsetDateTime,
    dry_run: bool,
) -> miette::Result<DistributeReport> {
    let started = Instant::now();
    let store = Store::for_inventory(inv);
    let mut state = store.load()?;
    let selected: Vec<&Host> = inv
        .hosts
        .iter()
        .filter(|h| only.is_empty() || only.contains(&h.name))
        .collect();
    // Control planes and etcd hosts are always connected: they are where CAs are adopted from.
    let wanted: Vec<&Host> = inv
        .hosts
        .iter()
        .filter(|h| {
            selected.iter().any(|s| s.name == h.name)
                || h.has_role(Role::ControlPlane)
                || h.has_role(Role::Etcd)
        })
        .collect();
    let targets: Vec<ssh::Target> = wanted.iter().map(|h| target(h)).collect();
    let results = ssh::connect_all(&targets, &session.ssh, session.forks, |_, _| {}).await;
    let mut connections: BTreeMap<String, Connection> = BTreeMap::new();
    let mut errors: BTreeMap<String, String> = BTreeMap::new();
    for (host, res) in wanted.iter().zip(results) {
        match res {
            Ok(c) => {
                connections.insert(host.name.clone(), c);
            }
            Err(e) => {
                errors.insert(host.name.clone(), e.to_string());
            }
        }
    }
    let sources = fetch_cas(inv, &connections)
        .await
        .map_err(|e| miette::miette!("cannot read the cluster's CAs: {e}"))?;
    let mut adopted = Vec::new();
    for (host, files) in &sources {
        adopted.extend(adopt::adopt(&mut state, host, files, store.root())?);
    }
    let plan = if dry_run {
        pki::plan(inv, &state, now)
    } else {
        pki::ensure(inv, &mut state, now)?
    };
    let mut pki_report = report(inv, &store, dry_run, plan);
    pki_report.adopted = adopted;
    if !dry_run {
        pki_report.written = save(inv, &store, &state)?;
    }
    // On a dry run with nothing local, show what would be installed from a plan run in memory.
    if dry_run {
        pki::ensure(inv, &mut state, now)?;
    }
    let archives = Archives::default();
    let archives = &archives;
    let work = selected.iter().map(|host| {
        let conn = connections.get(&host.name);
        let err = errors.get(&host.name).cloned();
        let state = &state;
        async move {
            let mut out = HostDistribution {
                host: host.name.clone(),
                changed: Vec::new(),
                unchanged: 0,
                error: err,
            };
            let Some(conn) = conn else {
                return out;
            };
            match install(conn, inv, host, state, dry_run, archives).await {
                Ok((changed, unchanged)) => {
                    out.changed = changed;
                    out.unchanged = unchanged;
                }
                Err(e) => out.error = Some(e),
            }
            out
        }
    });
    let hosts_out = futures::future::join_all(work).await;
    for (_, c) in connections {
        c.close().await;
    }
    Ok(DistributeReport {
        pki: pki_report,
        hosts: hosts_out,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// `certs check-expiration`: what every host holds.
#[derive(Debug, Serialize)]
pub struct ExpirationReport {
    pub certificates: Vec<ExpiryRow>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<Unreadable>,
    /// Hosts that could not be read, with the cause.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub failed: BTreeMap<String, String>,
}

/// Reads every certificate and kubeconfig on every host (one exec per host).
pub async fn check_expiration(
    inv: &Inventory,
    session: &SessionOptions,
    now: OffsetDateTime,
) -> ExpirationReport {
    let targets: Vec<ssh::Target> = inv.hosts.iter().map(target).collect();
    let results = ssh::connect_all(&targets, &session.ssh, session.forks, |_, _| {}).await;
    let work = inv
        .hosts
        .iter()
        .zip(results)
        .map(|(host, conn)| async move {
            match conn {
                Err(e) => Err((host.name.clone(), e.to_string())),
                Ok(conn) => {
                    let res = conn.exec_checked(expiry::DUMP_SCRIPT).await;
                    conn.close().await;
                    match res {
                        Err(e) => Err((host.name.clone(), e.to_string())),
                        Ok(out) => Ok(expiry::parse_dump(
                            &host.name,
                            &out.stdout_text(),
                            &hosts::managed_paths(inv, host),
                            now,
                        )),
                    }
                }
            }
        });
    let mut report = ExpirationReport {
        certificates: Vec::new(),
        unreadable: Vec::new(),
        failed: BTreeMap::new(),
    };
    for r in futures::future::join_all(work).await {
        match r {
            Ok((rows, bad)) => {
                report.certificates.extend(rows);
                report.unreadable.extend(bad);
            }
            Err((host, e)) => {
                report.failed.insert(host, e);
            }
        }
    }
    report
}

/// Prints a local PKI report.
pub fn print_pki(r: &PkiReport) {
    use crate::ui::{self, Color, Table};
    let quiet = ui::ui().quiet;
    let mut out = String::new();
    for a in &r.adopted {
        out.push_str(&format!(
            "{} {} from {} (fingerprint {})\n",
            ui::paint("adopted", Color::Green),
            a.what,
            a.host,
            a.fingerprint
        ));
    }
    let mut table = Table::new(["ACTION", "WHAT", "EXPIRES", "WHY"]);
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    let mut shown = 0usize;
    for it in &r.plan.items {
        *count.entry(it.action.as_str()).or_default() += 1;
        if quiet || (it.action == pki::Action::Keep && ui::ui().verbose == 0) {
            continue;
        }
        let action = match it.action {
            pki::Action::Keep => ui::paint("keep", Color::Dim),
            pki::Action::Create => ui::paint("create", Color::Green),
            pki::Action::Reissue | pki::Action::Update => {
                ui::paint(it.action.as_str(), Color::Yellow)
            }
        };
        shown += 1;
        table.row([
            action,
            it.name.clone(),
            it.expires.map(expiry::format_date).unwrap_or_default(),
            it.reason.clone().unwrap_or_default(),
        ]);
    }
    if shown > 0 {
        out.push_str(&table.render());
    }
    for w in &r.plan.warnings {
        out.push_str(&format!("{} {w}\n", ui::paint("warning:", Color::Yellow)));
    }
    let n = |a: &str| count.get(a).copied().unwrap_or(0);
    let verb = if r.dry_run { "would " } else { "" };
    out.push_str(&format!(
        "PKI {} ({}): {verb}create {}, {verb}re-issue {}, {verb}update {} kubeconfigs, keep {}{}\n",
        r.dir,
        r.key_algorithm,
        n("create"),
        n("re-issue"),
        n("update"),
        n("keep"),
        if r.dry_run {
            " (dry run: nothing written)"
        } else {
            ""
        }
    ));
    crate::ui::emit(&out);
}

/// Prints a distribution report.
pub fn print_distribute(r: &DistributeReport) {
    use crate::ui::{self, Color};
    print_pki(&r.pki);
    let verb = if r.pki.dry_run {
        "would change"
    } else {
        "changed"
    };
    let mut out = String::new();
    for h in &r.hosts {
        if let Some(e) = &h.error {
            out.push_str(&format!(
                "{} {}\n  {e}\n",
                ui::paint(&h.host, Color::Bold),
                ui::paint("failed", Color::Red)
            ));
        } else if h.changed.is_empty() {
            if !ui::ui().quiet {
                out.push_str(&format!(
                    "{} {}\n",
                    ui::paint(&h.host, Color::Bold),
                    ui::paint("no changes", Color::Dim)
                ));
            }
        } else {
            out.push_str(&format!(
                "{} {verb} {} files\n",
                ui::paint(&h.host, Color::Bold),
                h.changed.len()
            ));
            if !ui::ui().quiet {
                for p in &h.changed {
                    out.push_str(&format!("  {p}\n"));
                }
            }
        }
    }
    let changed = r
        .hosts
        .iter()
        .filter(|h| h.error.is_none() && !h.changed.is_empty())
        .count();
    out.push_str(&format!(
        "{} hosts, {changed} {verb}, {} failed ({:.2}s)\n",
        r.hosts.len(),
        r.failed(),
        r.seconds
    ));
    crate::ui::emit(&out);
}

/// Prints kubeadm's table (or the JSON document).
pub fn print_expiration(r: &ExpirationReport, now: OffsetDateTime) {
    use crate::ui::{self, Color, Table};
    let mut rows: Vec<&ExpiryRow> = r.certificates.iter().collect();
    rows.sort_by(|a, b| {
        (a.is_ca, &a.host, &a.certificate).cmp(&(b.is_ca, &b.host, &b.certificate))
    });
    let mut t = Table::new([
        "CERTIFICATE",
        "HOST",
        "EXPIRES",
        "RESIDUAL TIME",
        "CERTIFICATE AUTHORITY",
        "EXTERNALLY MANAGED",
    ]);
    for row in rows.iter().filter(|r| !r.is_ca) {
        t.row(cells(row, now, true));
    }
    let mut cas = Table::new([
        "CERTIFICATE AUTHORITY",
        "HOST",
        "EXPIRES",
        "RESIDUAL TIME",
        "EXTERNALLY MANAGED",
    ]);
    for row in rows.iter().filter(|r| r.is_ca) {
        cas.row(cells(row, now, false));
    }
    let mut out = t.render();
    out.push('\n');
    out.push_str(&cas.render());
    for u in &r.unreadable {
        out.push_str(&format!(
            "{} {}:{}: {}\n",
            ui::paint("unreadable", Color::Yellow),
            u.host,
            u.path,
            u.message
        ));
    }
    for (host, e) in &r.failed {
        out.push_str(&format!(
            "{} {}\n  {e}\n",
            ui::paint(host, Color::Bold),
            ui::paint("failed", Color::Red)
        ));
    }
    crate::ui::emit(&out);
}

fn cells(row: &ExpiryRow, now: OffsetDateTime, with_ca: bool) -> Vec<String> {
    use crate::ui::{self, Color};
    let left = row.expires - now;
    let residual = if left < time::Duration::days(30) {
        ui::paint(&row.residual_time, Color::Red)
    } else {
        row.residual_time.clone()
    };
    let mut c = vec![
        row.certificate.clone(),
        row.host.clone(),
        expiry::format_date(row.expires),
        residual,
    ];
    if with_ca {
        c.push(row.certificate_authority.clone());
    }
    c.push(if row.externally_managed { "yes" } else { "no" }.into());
    c
}
