//! What to create, keep or re-issue, and why. [`plan`] is pure (state in, decisions out);
//! [`ensure`] carries a plan out in memory; the caller saves the state.
//!
//! A certificate is re-issued when it is missing, expired or expiring within
//! `cluster.pki.renew_before_days`, or when it no longer matches what the inventory needs:
//! subject, SANs, usages, key algorithm, its key, or its CA. CAs and the service-account key
//! are created when missing and otherwise never replaced (that would break the cluster); an
//! expiring CA is a warning.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use time::{Duration, OffsetDateTime};

use super::inspect::{self, CertInfo};
use super::spec::{self, CaKind, LeafSpec};
use super::{KeyedCert, PkiError, PkiState, issue, kubeconfig};
use crate::inventory::Inventory;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Keep,
    Create,
    Reissue,
    /// A kubeconfig re-rendered (new client cert, CA or server).
    Update,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Keep => "keep",
            Action::Create => "create",
            Action::Reissue => "re-issue",
            Action::Update => "update",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ItemKind {
    Ca,
    ServiceAccountKey,
    Certificate,
    Kubeconfig,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanItem {
    pub kind: ItemKind,
    /// Path under `.capstan/pki/` without extension (kubeconfigs: with).
    pub id: String,
    /// The name a user reads.
    pub name: String,
    pub action: Action,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Expiry of the certificate as it is now (kept) or was (re-issued).
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub expires: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PkiPlan {
    pub items: Vec<PlanItem>,
    pub warnings: Vec<String>,
}

impl PkiPlan {
    /// Items that create or change something.
    pub fn changes(&self) -> impl Iterator<Item = &PlanItem> {
        self.items.iter().filter(|i| i.action != Action::Keep)
    }

    pub fn has_changes(&self) -> bool {
        self.changes().next().is_some()
    }

    /// The item for `id`, if planned.
    pub fn item(&self, id: &str) -> Option<&PlanItem> {
        self.items.iter().find(|i| i.id == id)
    }
}

fn item(
    kind: ItemKind,
    id: &str,
    name: &str,
    action: Action,
    reason: Option<String>,
    expires: Option<OffsetDateTime>,
) -> PlanItem {
    PlanItem {
        kind,
        id: id.to_string(),
        name: name.to_string(),
        action,
        reason,
        expires,
    }
}

fn days(d: Duration) -> i64 {
    d.whole_days()
}

/// Why the certificate for `spec` must be re-issued, or `None` to keep it.
fn leaf_reason(
    inv: &Inventory,
    spec: &LeafSpec,
    have: &KeyedCert,
    info: &CertInfo,
    ca: &KeyedCert,
    now: OffsetDateTime,
) -> Option<String> {
    if have.key_pem.expose().is_empty() {
        return Some("its key is missing".into());
    }
    if !inspect::signed_by(&have.cert_pem, &ca.cert_pem) {
        return Some(format!("it is not signed by the current {}", spec.ca));
    }
    if info.common_name != spec.common_name || info.organization != spec.organization {
        return Some(format!(
            "its subject is CN={} O={:?}; the inventory needs CN={} O={:?}",
            info.common_name, info.organization, spec.common_name, spec.organization
        ));
    }
    if info.sans != spec.sans {
        let adds: Vec<String> = spec
            .sans
            .difference(&info.sans)
            .map(ToString::to_string)
            .collect();
        let drops: Vec<String> = info
            .sans
            .difference(&spec.sans)
            .map(ToString::to_string)
            .collect();
        let mut parts = Vec::new();
        if !adds.is_empty() {
            parts.push(format!("adds {}", adds.join(", ")));
        }
        if !drops.is_empty() {
            parts.push(format!("drops {}", drops.join(", ")));
        }
        return Some(format!("its SANs changed: {}", parts.join("; ")));
    }
    let want: BTreeSet<_> = spec.usages.iter().collect();
    let got: BTreeSet<_> = info.usages.iter().collect();
    if want != got {
        return Some(format!(
            "its extended key usages are {:?}; the inventory needs {:?}",
            info.usages, spec.usages
        ));
    }
    let alg = inv.cluster.pki.key_algorithm;
    if info.key_algorithm != Some(alg) {
        return Some(format!(
            "its key is {}; the inventory asks for {alg}",
            info.key_algorithm
                .map_or_else(|| "of another type".to_string(), |a| a.to_string())
        ));
    }
    if !inspect::key_matches(info, have.key_pem.expose()) {
        return Some("its key does not belong to it".into());
    }
    let left = info.not_after - now;
    if left <= Duration::ZERO {
        return Some(format!("it expired {} days ago", -days(left)));
    }
    let threshold = Duration::days(i64::from(inv.cluster.pki.renew_before_days));
    if left < threshold {
        return Some(format!(
            "it expires in {} days (renewed within {} days of expiry)",
            days(left),
            inv.cluster.pki.renew_before_days
        ));
    }
    None
}

/// Decides, for everything the inventory needs, whether to keep, create or re-issue it.
/// Pure: reads `state`, changes nothing.
pub fn plan(inv: &Inventory, state: &PkiState, now: OffsetDateTime) -> PkiPlan {
    let mut out = PkiPlan::default();
    let threshold = Duration::days(i64::from(inv.cluster.pki.renew_before_days));
    let mut new_cas: BTreeSet<CaKind> = BTreeSet::new();
    for kind in CaKind::ALL {
        match state.cas.get(&kind) {
            None => {
                new_cas.insert(kind);
                out.items.push(item(
                    ItemKind::Ca,
                    kind.id(),
                    kind.label(),
                    Action::Create,
                    Some("missing".into()),
                    None,
                ));
            }
            Some(ca) => {
                let info = inspect::parse_pem(&ca.cert_pem);
                let expires = info.as_ref().ok().map(|i| i.not_after);
                match &info {
                    Ok(i) if i.not_after - now < threshold => out.warnings.push(format!(
                        "the {kind} expires on {} ({} days): CAs are not renewed automatically; plan a CA rotation",
                        super::expiry::format_date(i.not_after),
                        days(i.not_after - now)
                    )),
                    Ok(i) if !inspect::key_matches(i, ca.key_pem.expose()) => out
                        .warnings
                        .push(format!("the {kind} key does not belong to its certificate")),
                    Err(e) => out.warnings.push(format!("the {kind} certificate is unreadable: {e}")),
                    _ => {}
                }
                out.items.push(item(
                    ItemKind::Ca,
                    kind.id(),
                    kind.label(),
                    Action::Keep,
                    None,
                    expires,
                ));
            }
        }
    }
    out.items.push(if state.sa.is_some() {
        item(
            ItemKind::ServiceAccountKey,
            "sa",
            "sa",
            Action::Keep,
            None,
            None,
        )
    } else {
        item(
            ItemKind::ServiceAccountKey,
            "sa",
            "sa",
            Action::Create,
            Some("missing".into()),
            None,
        )
    });

    let mut changed_certs: BTreeSet<String> = BTreeSet::new();
    for spec in spec::leaves(inv) {
        let have = state.leaves.get(&spec.id);
        let (action, reason, expires) = match (have, state.cas.get(&spec.ca)) {
            (None, _) => (Action::Create, Some("missing".to_string()), None),
            (Some(_), _) if new_cas.contains(&spec.ca) => (
                Action::Reissue,
                Some(format!("its CA ({}) is new", spec.ca)),
                None,
            ),
            (Some(have), Some(ca)) => match inspect::parse_pem(&have.cert_pem) {
                Err(e) => (
                    Action::Reissue,
                    Some(format!("it is unreadable: {e}")),
                    None,
                ),
                Ok(info) => match leaf_reason(inv, &spec, have, &info, ca, now) {
                    None => (Action::Keep, None, Some(info.not_after)),
                    Some(r) => (Action::Reissue, Some(r), Some(info.not_after)),
                },
            },
            (Some(_), None) => (
                Action::Reissue,
                Some(format!("its CA ({}) is new", spec.ca)),
                None,
            ),
        };
        if action != Action::Keep {
            changed_certs.insert(spec.id.clone());
        }
        out.items.push(item(
            ItemKind::Certificate,
            &spec.id,
            &spec.name,
            action,
            reason,
            expires,
        ));
    }

    for kc in spec::kubeconfigs(inv) {
        let name = if kc.file == "admin.conf" {
            "admin.conf (operator)".to_string()
        } else {
            format!(
                "{} ({})",
                kc.name,
                kc.file.split('/').nth(1).unwrap_or_default()
            )
        };
        let (action, reason) = match state.kubeconfigs.get(&kc.file) {
            None => (Action::Create, Some("missing".to_string())),
            Some(_) if changed_certs.contains(&kc.cert_id) => (
                Action::Update,
                Some("its client certificate changes".to_string()),
            ),
            Some(_) if new_cas.contains(&CaKind::Ca) => {
                (Action::Update, Some("the CA is new".to_string()))
            }
            Some(text) => match (state.leaves.get(&kc.cert_id), state.cas.get(&CaKind::Ca)) {
                (Some(client), Some(ca)) => {
                    let want = kubeconfig::render(
                        &inv.cluster.name,
                        &kc.server,
                        &kc.user,
                        &ca.cert_pem,
                        client,
                    );
                    if &want == text {
                        (Action::Keep, None)
                    } else {
                        (
                            Action::Update,
                            Some(format!("server or cluster changed (server {})", kc.server)),
                        )
                    }
                }
                _ => (
                    Action::Update,
                    Some("its client certificate changes".to_string()),
                ),
            },
        };
        out.items.push(item(
            ItemKind::Kubeconfig,
            &kc.file,
            &name,
            action,
            reason,
            None,
        ));
    }
    out
}

/// Plans and carries the plan out in memory: creates missing CAs and keys, issues and
/// re-issues certificates, renders kubeconfigs. Returns the plan it carried out; save the
/// state with [`super::Store::save`].
pub fn ensure(
    inv: &Inventory,
    state: &mut PkiState,
    now: OffsetDateTime,
) -> Result<PkiPlan, PkiError> {
    let planned = plan(inv, state, now);
    carry_out(inv, state, &planned, now)?;
    Ok(planned)
}

/// Re-issues the leaf certificates named in `names` (`all`, or names as `certs` shows them:
/// `apiserver`, `admin.conf`, `etcd-server` for every member's, `etcd-server (cp1)` for one),
/// then completes whatever else is missing. Unknown names are an error before anything changes.
pub fn renew(
    inv: &Inventory,
    state: &mut PkiState,
    names: &[String],
    now: OffsetDateTime,
    dry_run: bool,
) -> Result<PkiPlan, PkiError> {
    let leaves = spec::leaves(inv);
    let all = names.is_empty() || names.iter().any(|n| n == "all");
    let matches = |spec: &LeafSpec, n: &str| {
        spec.name == n
            || spec.id == n
            || spec
                .name
                .strip_prefix(n)
                .is_some_and(|rest| rest.starts_with(" ("))
    };
    if !all {
        for n in names {
            if !leaves.iter().any(|s| matches(s, n)) {
                let mut known: Vec<&str> = leaves
                    .iter()
                    .map(|s| s.name.split(" (").next().unwrap_or(&s.name))
                    .collect();
                known.dedup();
                known.sort_unstable();
                known.dedup();
                return Err(PkiError::Unknown {
                    name: n.clone(),
                    known: format!("certificates: all, {}", known.join(", ")),
                });
            }
        }
    }
    let mut planned = plan(inv, state, now);
    let selected: BTreeSet<&str> = leaves
        .iter()
        .filter(|s| all || names.iter().any(|n| matches(s, n)))
        .map(|s| s.id.as_str())
        .collect();
    let by_cert: BTreeMap<&str, Vec<String>> =
        spec::kubeconfigs(inv)
            .into_iter()
            .fold(BTreeMap::new(), |mut m, kc| {
                if let Some(id) = selected.iter().find(|id| **id == kc.cert_id) {
                    m.entry(*id).or_insert_with(Vec::new).push(kc.file);
                }
                m
            });
    for it in &mut planned.items {
        if it.kind == ItemKind::Certificate
            && selected.contains(it.id.as_str())
            && it.action == Action::Keep
        {
            it.action = Action::Reissue;
            it.reason = Some("renewal requested".into());
        }
        if it.kind == ItemKind::Kubeconfig
            && it.action == Action::Keep
            && by_cert.values().any(|files| files.contains(&it.id))
        {
            it.action = Action::Update;
            it.reason = Some("its client certificate is renewed".into());
        }
    }
    if !dry_run {
        carry_out(inv, state, &planned, now)?;
    }
    Ok(planned)
}

fn carry_out(
    inv: &Inventory,
    state: &mut PkiState,
    planned: &PkiPlan,
    now: OffsetDateTime,
) -> Result<(), PkiError> {
    let alg = inv.cluster.pki.key_algorithm;
    // Build the new state aside, so that an error leaves `state` untouched.
    let mut next = state.clone();
    for it in planned.changes() {
        match it.kind {
            ItemKind::Ca => {
                let kind = CaKind::ALL
                    .into_iter()
                    .find(|k| k.id() == it.id)
                    .ok_or_else(|| PkiError::Crypto(format!("unknown CA {}", it.id)))?;
                next.cas.insert(kind, issue::new_ca(kind, alg, now)?);
            }
            ItemKind::ServiceAccountKey => next.sa = Some(issue::new_sa(alg)?),
            ItemKind::Certificate | ItemKind::Kubeconfig => {}
        }
    }
    let specs: BTreeMap<String, LeafSpec> = spec::leaves(inv)
        .into_iter()
        .map(|s| (s.id.clone(), s))
        .collect();
    for it in planned
        .changes()
        .filter(|i| i.kind == ItemKind::Certificate)
    {
        let spec = specs
            .get(&it.id)
            .ok_or_else(|| PkiError::Crypto(format!("unknown certificate {}", it.id)))?;
        let ca = next.cas.get(&spec.ca).ok_or_else(|| PkiError::Missing {
            what: spec.ca.to_string(),
        })?;
        let pair = issue::new_leaf(spec, ca, alg, now)?;
        next.leaves.insert(spec.id.clone(), pair);
    }
    let ca_pem = next
        .cas
        .get(&CaKind::Ca)
        .map(|c| c.cert_pem.clone())
        .ok_or_else(|| PkiError::Missing { what: "ca".into() })?;
    for kc in spec::kubeconfigs(inv) {
        let client = next
            .leaves
            .get(&kc.cert_id)
            .ok_or_else(|| PkiError::Missing {
                what: kc.cert_id.clone(),
            })?;
        let text = kubeconfig::render(&inv.cluster.name, &kc.server, &kc.user, &ca_pem, client);
        next.kubeconfigs.insert(kc.file.clone(), text);
    }
    *state = next;
    Ok(())
}
