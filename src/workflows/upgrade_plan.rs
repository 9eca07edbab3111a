//! `capstan upgrade plan`: the versions the cluster runs now (read live, one exec per host),
//! the cluster version, the allowed targets, for the chosen (or newest allowed) target a
//! kubeadm-like table of component, host, current and target, what an upgrade would do in
//! order, and what to do next. Touches nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Instant;

use serde::Serialize;

use super::SessionOptions;
use crate::engine::context::APISERVER_PORT;
use crate::inventory::{ApiEndpointMode, Inventory, Version};
use crate::ui::{self, Color, Table};
use crate::upgrade::available::{self, Available};
use crate::upgrade::live::{self, LiveRead};
use crate::upgrade::policy::{self, AllowedTarget, MaxUnavailable, Part, Refusal, Source, Step};
use crate::upgrade::{LiveVersions, StepHost, TargetKind, Violation};

#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// `--to`: the target to check and plan for (default: the newest allowed target).
    pub to: Option<Version>,
    pub max_unavailable: MaxUnavailable,
}

/// A refused `--to`, with why and the path that is allowed.
#[derive(Debug, Clone, Serialize)]
pub struct Refused {
    pub target: Version,
    pub reason: String,
    pub path: String,
    pub detail: Refusal,
}

/// One row of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub component: Part,
    pub host: String,
    pub current: String,
    /// `None` when there is no target (nothing allowed, or the part's version is not
    /// capstan's to choose).
    pub target: Option<String>,
}

/// What `upgrade plan` found and would do.
#[derive(Debug, Clone, Serialize)]
pub struct UpgradePlan {
    /// The oldest API server's version (`None`: no API server answered).
    pub cluster_version: Option<Version>,
    /// What the inventory says (`cluster.kubernetes_version`).
    pub inventory_version: Version,
    pub available: Available,
    pub allowed_targets: Vec<AllowedTarget>,
    /// The target planned for: `--to`, else the newest allowed one.
    pub target: Option<Version>,
    /// True when `--to` chose the target.
    pub requested: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<Refused>,
    /// Components already outside the version-skew policy.
    pub violations: Vec<Violation>,
    pub warnings: Vec<String>,
    pub components: Vec<Row>,
    pub max_unavailable: MaxUnavailable,
    /// What an upgrade to `target` does, in order (empty: nothing to do, or refused).
    pub steps: Vec<Step>,
    /// Hosts already at the target (an upgrade skips them).
    pub up_to_date: Vec<String>,
    /// What the user should do next.
    pub next: Vec<String>,
    /// Hosts that could not be reached or read, with why.
    pub unreachable: BTreeMap<String, String>,
    /// Every version read, with its source.
    pub readings: LiveVersions,
    /// etcd: each member's version, the target, and the versions the members go through.
    pub etcd: EtcdPlan,
    pub seconds: f64,
}

/// etcd's part of the plan.
#[derive(Debug, Clone, Serialize)]
pub struct EtcdPlan {
    /// Each member (inventory order) and what `etcdctl endpoint status` reported.
    pub members: Vec<EtcdMemberNow>,
    /// The version the target needs (the inventory's `cluster.versions.etcd` at the target).
    pub target: Option<Version>,
    /// The versions the members go through, one member at a time each, in order (empty:
    /// nothing to do).
    pub path: Vec<Version>,
    /// The etcd releases available.
    pub available: Available,
}

#[derive(Debug, Clone, Serialize)]
pub struct EtcdMemberNow {
    pub member: String,
    /// As printed (`3.4.23`), or why it was not read.
    pub current: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<Version>,
}

/// The etcd version an upgrade to `to` needs: the inventory's `cluster.versions.etcd` as the
/// inventory resolves it at `to` (the one place that says it, for plan and apply).
pub fn etcd_target(inventory: &Inventory, to: Version) -> Option<Version> {
    inventory
        .at_version(to)
        .cluster
        .versions
        .get("etcd")
        .and_then(|v| policy::etcd_version(v))
}

/// The etcd members, in inventory order.
pub fn etcd_members(inventory: &Inventory) -> Vec<String> {
    inventory.etcd_members().map(|h| h.name.clone()).collect()
}

impl UpgradePlan {
    /// Whether the plan is complete (every host read, some API server answered).
    pub fn complete(&self) -> bool {
        self.unreachable.is_empty() && self.cluster_version.is_some()
    }
}

/// The port each API server listens on (as the roles configure it).
pub(crate) fn apiserver_port(inventory: &Inventory) -> u16 {
    if inventory.cluster.api_endpoint.mode == ApiEndpointMode::Single {
        inventory.cluster.api_endpoint.port
    } else {
        APISERVER_PORT
    }
}

pub fn step_hosts(inventory: &Inventory) -> Vec<StepHost> {
    live::LiveHost::for_inventory(inventory, apiserver_port(inventory))
        .into_iter()
        .map(|h| StepHost {
            name: h.name,
            control_plane: h.control_plane,
            kubelet: h.kubelet,
            etcd: h.etcd,
        })
        .collect()
}

/// Reads the cluster and plans. Errors only when nothing could be planned (the mirror
/// cannot be listed); a refused target is in the plan.
pub async fn run(
    inventory: &Inventory,
    session: &SessionOptions,
    opts: &PlanOptions,
) -> miette::Result<UpgradePlan> {
    let t0 = Instant::now();
    let read = live::read_live(inventory, session, apiserver_port(inventory)).await;
    let arches = read.distinct_arches();
    let available = available::available(&inventory.cluster.artifacts, &arches).map_err(|e| {
        miette::miette!(
            help = "check `cluster.artifacts.mirror` in the inventory",
            "cannot tell which Kubernetes releases are available: {e}"
        )
    })?;
    let etcd_available = available::etcd(&inventory.cluster.artifacts, &arches).map_err(|e| {
        miette::miette!(
            help = "check `cluster.artifacts.mirror` in the inventory",
            "cannot tell which etcd releases are available: {e}"
        )
    })?;
    let mut plan = build(inventory, read, available, etcd_available, opts);
    plan.seconds = t0.elapsed().as_secs_f64();
    Ok(plan)
}

/// The plan from what was read (pure: tested without hosts).
pub fn build(
    inventory: &Inventory,
    read: LiveRead,
    available: Available,
    etcd_available: Available,
    opts: &PlanOptions,
) -> UpgradePlan {
    let live = read.versions;
    let current = live.cluster_version();
    // With `--to`, components already at that target are an upgrade stopped half-way,
    // which the plan finishes (see `policy::violations_toward`).
    let violations = match opts.to {
        Some(to) => policy::violations_toward(&live, to),
        None => policy::skew_violations(&live),
    };
    let mut warnings = policy::warnings(&live);
    let allowed = match current {
        Some(c) if violations.is_empty() => policy::allowed_targets(c, &available.versions),
        _ => Vec::new(),
    };
    let inventory_version = inventory.cluster.kubernetes_version;
    if let Some(c) = current
        && c != inventory_version
    {
        warnings.push(format!(
            "the inventory says kubernetes_version {inventory_version}, the cluster runs {c}: \
             `capstan init` or `join` would converge the hosts to the inventory's version"
        ));
    }

    let target = opts.to.or_else(|| allowed.last().map(|t| t.version));
    let members = etcd_members(inventory);
    let etcd_to = target.and_then(|t| etcd_target(inventory, t));
    let etcd_path = |to: Version| {
        policy::etcd_path(
            &live,
            &members,
            to,
            &etcd_available.versions,
            &etcd_available.source,
        )
    };
    let refused = match (opts.to, current) {
        (Some(to), Some(_)) => {
            policy::check_target(&live, to, &available.versions, &available.source).err()
        }
        _ => None,
    }
    .or_else(|| {
        // etcd refuses the target (planned or requested) when the members cannot get to it.
        let to = etcd_to?;
        current?;
        etcd_path(to).err().map(Refusal::Etcd)
    })
    .map(|r| Refused {
        target: target.unwrap_or(inventory_version),
        reason: r.reason(),
        path: r.path(),
        detail: r,
    });
    let hops = match etcd_to {
        Some(to) if refused.is_none() => etcd_path(to).unwrap_or_default(),
        _ => Vec::new(),
    };
    let hosts = step_hosts(inventory);
    let (steps, up_to_date) = match target {
        Some(t) if refused.is_none() && current.is_some() && violations.is_empty() => {
            policy::steps(&live, &hosts, t, &hops, opts.max_unavailable)
        }
        _ => (Vec::new(), Vec::new()),
    };

    // What the target puts on the hosts for the parts with their own versions: etcd's
    // target as computed above, containerd's as the inventory resolves it at the target.
    let at_target = target.map(|t| inventory.at_version(t));
    let mut pinned: BTreeMap<Part, String> = at_target
        .as_ref()
        .unwrap_or(inventory)
        .cluster
        .versions
        .get("containerd")
        .map(|v| (Part::Containerd, v.clone()))
        .into_iter()
        .collect();
    if let Some(e) = etcd_to {
        pinned.insert(Part::Etcd, e.to_string());
    }
    let etcd = EtcdPlan {
        members: members
            .iter()
            .map(|m| {
                let r = live
                    .readings
                    .iter()
                    .find(|r| r.part == Part::Etcd && r.host == *m);
                EtcdMemberNow {
                    member: m.clone(),
                    current: r.map_or_else(|| "?".to_string(), policy::Reading::shown),
                    version: r.and_then(|r| r.version),
                }
            })
            .collect(),
        target: etcd_to,
        path: hops,
        available: etcd_available,
    };
    // A refused target has no column in the table: only the versions now.
    let shown = if refused.is_some() { None } else { target };
    let components = rows(inventory, &live, shown, &pinned);

    let mut plan = UpgradePlan {
        cluster_version: current,
        inventory_version,
        available,
        allowed_targets: allowed,
        target,
        requested: opts.to.is_some(),
        refused,
        violations,
        warnings,
        components,
        max_unavailable: opts.max_unavailable,
        steps,
        up_to_date,
        next: Vec::new(),
        unreachable: read.unreachable,
        readings: live,
        etcd,
        seconds: 0.0,
    };
    plan.next = next(inventory, &plan);
    plan
}

/// One row per component and host, in the order of [`Part::ALL`] and the inventory.
fn rows(
    inventory: &Inventory,
    live: &LiveVersions,
    target: Option<Version>,
    pinned: &BTreeMap<Part, String>,
) -> Vec<Row> {
    let mut out = Vec::new();
    for part in Part::ALL {
        for host in &inventory.hosts {
            let of = |source: Source| {
                live.readings
                    .iter()
                    .find(|r| r.part == part && r.host == host.name && r.source == source)
            };
            // The main reading of each part, and a second one shown beside it when it differs.
            let (main, other) = match part {
                Part::ApiServer => (of(Source::Version), of(Source::Manifest)),
                Part::ControllerManager | Part::Scheduler => (of(Source::Manifest), None),
                Part::Kubelet => (of(Source::Binary), of(Source::Node)),
                Part::Kubectl | Part::Containerd => (of(Source::Binary), None),
                Part::Etcd => (of(Source::EndpointStatus), None),
            };
            let Some(main) = main.or(other) else {
                continue;
            };
            let mut current = main.shown();
            if let Some(o) = other
                && !std::ptr::eq(o, main)
                && o.raw != main.raw
            {
                let what = match o.source {
                    Source::Manifest => "manifest",
                    Source::Node => "Node",
                    _ => o.source.describe(),
                };
                let _ = write!(current, " ({what}: {})", o.shown());
            }
            out.push(Row {
                component: part,
                host: host.name.clone(),
                current,
                target: target
                    .and_then(|t| policy::target_of(part, t, pinned))
                    .map(|t| same_release(&t, main.raw.as_deref())),
            });
        }
    }
    out
}

/// `target`, or the current text when both name the same release (the inventory's `v3.4.23`
/// for a running `3.4.23`, `1.6.20` for Debian's `1.6.20~ds1`): no change.
fn same_release(target: &str, current: Option<&str>) -> String {
    match current {
        Some(c) if crate::facts::lenient_semver(c) == crate::facts::lenient_semver(target) => {
            c.to_string()
        }
        _ => target.to_string(),
    }
}

fn next(inventory: &Inventory, plan: &UpgradePlan) -> Vec<String> {
    let inv = inventory.path.display().to_string();
    let mut out = Vec::new();
    if !plan.unreachable.is_empty() {
        out.push(format!(
            "reach every host first ({} could not be read): an upgrade needs them all",
            plan.unreachable
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
        if plan.cluster_version.is_some() {
            out.push("then run `capstan upgrade plan` again".into());
            return out;
        }
    }
    let Some(current) = plan.cluster_version else {
        out.push(
            "no API server answered: check the control planes (`capstan check`) before planning an upgrade"
                .into(),
        );
        return out;
    };
    if let Some(r) = &plan.refused {
        let what = if plan.requested { "--to" } else { "upgrade to" };
        out.push(format!("{what} {} is refused: {}", r.target, r.path));
        return out;
    }
    if !plan.violations.is_empty() {
        let fixes: BTreeSet<&str> = plan.violations.iter().map(|v| v.fix.as_str()).collect();
        for f in fixes {
            out.push(f.to_string());
        }
        out.push("then run `capstan upgrade plan` again".into());
        return out;
    }
    let Some(target) = plan.target else {
        out.push(format!(
            "nothing to upgrade: {current} is the newest release available from {} for this cluster",
            plan.available.source
        ));
        return out;
    };
    if plan.steps.is_empty() {
        out.push(format!(
            "nothing to do: every component already runs {target}"
        ));
    } else {
        let mu = if plan.max_unavailable == MaxUnavailable::default() {
            String::new()
        } else {
            format!(" --max-unavailable {}", plan.max_unavailable)
        };
        out.push(format!("capstan upgrade apply -i {inv} --to {target}{mu}"));
    }
    if plan.inventory_version != target {
        out.push(format!(
            "then set `cluster.kubernetes_version: {target}` in {inv}, so that init and join converge to it"
        ));
    }
    out
}

/// Prints the plan (text or JSON).
pub fn print(plan: &UpgradePlan) -> miette::Result<()> {
    if ui::ui().json {
        return ui::emit_json(plan);
    }
    ui::emit(&render(plan));
    Ok(())
}

/// The text form.
pub fn render(plan: &UpgradePlan) -> String {
    let mut out = String::new();
    let bold = |s: &str| ui::paint(s, Color::Bold);
    match plan.cluster_version {
        Some(v) => {
            let _ = writeln!(out, "{} {v}", bold("Cluster version:"));
        }
        None => {
            let _ = writeln!(
                out,
                "{} unknown (no API server answered)",
                bold("Cluster version:")
            );
        }
    }
    let _ = writeln!(
        out,
        "{} {}",
        bold("Inventory version:"),
        plan.inventory_version
    );
    let list: Vec<String> = plan
        .available
        .versions
        .iter()
        .map(ToString::to_string)
        .collect();
    let _ = writeln!(
        out,
        "{} {} ({})",
        bold("Available:"),
        if list.is_empty() {
            "none".to_string()
        } else {
            list.join(", ")
        },
        plan.available.source
    );
    let allowed: Vec<String> = plan
        .allowed_targets
        .iter()
        .map(|t| {
            let what = match t.kind {
                TargetKind::Patch => {
                    format!("newest patch of v{}.{}", t.version.major, t.version.minor)
                }
                TargetKind::Minor => format!(
                    "next minor, newest patch of v{}.{}",
                    t.version.major, t.version.minor
                ),
            };
            format!("{} ({what})", t.version)
        })
        .collect();
    let _ = writeln!(
        out,
        "{} {}",
        bold("Allowed targets:"),
        if allowed.is_empty() {
            "none".to_string()
        } else {
            allowed.join(", ")
        }
    );
    for (host, e) in &plan.unreachable {
        let _ = writeln!(
            out,
            "{} {}: {e}",
            ui::paint("unreachable", Color::Red),
            bold(host)
        );
    }

    out.push('\n');
    match plan.target.filter(|_| plan.refused.is_none()) {
        Some(t) => {
            let _ = writeln!(
                out,
                "{}",
                bold(&format!(
                    "Components ({} {t}):",
                    if plan.requested { "--to" } else { "upgrade to" }
                ))
            );
        }
        None => {
            let _ = writeln!(out, "{}", bold("Components:"));
        }
    }
    let mut table = Table::new(["COMPONENT", "HOST", "CURRENT", "TARGET"]);
    for r in &plan.components {
        let target = r.target.clone().unwrap_or_else(|| "-".into());
        let changes = r.target.as_deref().is_some_and(|t| {
            crate::facts::lenient_semver(t) != crate::facts::lenient_semver(&r.current)
        });
        table.row([
            r.component.name().to_string(),
            r.host.clone(),
            r.current.clone(),
            if changes {
                ui::paint(&target, Color::Yellow)
            } else {
                target
            },
        ]);
    }
    out.push_str(&table.render());

    if let Some(to) = plan.etcd.target
        && !plan.etcd.members.is_empty()
    {
        let now: Vec<String> = plan
            .etcd
            .members
            .iter()
            .map(|m| format!("{} {}", m.member, m.current))
            .collect();
        let path = if plan.etcd.path.is_empty() {
            "nothing to do".to_string()
        } else {
            let hops: Vec<String> = plan.etcd.path.iter().map(ToString::to_string).collect();
            format!(
                "through {}, one member at a time (etcd never skips a minor)",
                hops.join(" → ")
            )
        };
        let _ = writeln!(out, "\n{} {} → {to}: {path}", bold("etcd:"), now.join(", "));
    }
    if !plan.violations.is_empty() {
        let _ = writeln!(
            out,
            "\n{}",
            ui::paint("Outside the version-skew policy:", Color::Red)
        );
        for v in &plan.violations {
            let _ = writeln!(out, "  {v}");
        }
    }
    if !plan.warnings.is_empty() {
        let _ = writeln!(out, "\n{}", ui::paint("Warnings:", Color::Yellow));
        for w in &plan.warnings {
            let _ = writeln!(out, "  {w}");
        }
    }
    if let Some(r) = &plan.refused {
        let _ = writeln!(
            out,
            "\n{} {} {}: {}\n  allowed path: {}",
            ui::paint("Refused:", Color::Red),
            if plan.requested { "--to" } else { "upgrade to" },
            r.target,
            r.reason,
            r.path
        );
    } else if let Some(t) = plan.target
        && plan.violations.is_empty()
        && plan.cluster_version.is_some()
    {
        if plan.steps.is_empty() {
            let _ = writeln!(
                out,
                "\n{} every host already runs {t}",
                bold("What will happen:")
            );
        } else {
            let _ = writeln!(
                out,
                "\n{}",
                bold(&format!(
                    "What will happen, in order (--max-unavailable {}):",
                    plan.max_unavailable
                ))
            );
            for (i, s) in plan.steps.iter().enumerate() {
                let _ = writeln!(out, "  {}. {}", i + 1, s.describe());
            }
            if !plan.up_to_date.is_empty() {
                let _ = writeln!(
                    out,
                    "  already at {t}, skipped: {}",
                    plan.up_to_date.join(", ")
                );
            }
        }
    }
    let _ = writeln!(out, "\n{}", bold("Next:"));
    for n in &plan.next {
        let _ = writeln!(out, "  {n}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upgrade::Reading;

    fn inventory(version: &str) -> Inventory {
        inventory_etcd(version, "3.4.23")
    }

    fn inventory_etcd(version: &str, etcd: &str) -> Inventory {
        let text = format!(
            "cluster:\n  name: t\n  kubernetes_version: {version}\n  api_endpoint:\n    mode: single\n  artifacts:\n    mirror: file:///srv/mirror\n  versions:\n    etcd: {etcd}\nhosts:\n  - name: cp1\n    address: 10.0.0.1\n    roles: [control-plane]\n  - name: w1\n    address: 10.0.0.2\n    roles: [worker]\n"
        );
        crate::inventory::load_str(&text, std::path::Path::new("/inv/cluster.yaml"), None).unwrap()
    }

    fn v(t: &str) -> Version {
        Version::parse(t).unwrap()
    }

    fn read(version: &str, w1_kubelet: &str) -> LiveRead {
        let r = |part, host: &str, source, ver: &str| {
            Reading::ok(part, host, source, ver, crate::facts::lenient_semver(ver))
        };
        LiveRead {
            versions: LiveVersions {
                readings: vec![
                    r(Part::ApiServer, "cp1", Source::Version, version),
                    r(Part::ApiServer, "cp1", Source::Manifest, version),
                    r(Part::ControllerManager, "cp1", Source::Manifest, version),
                    r(Part::Scheduler, "cp1", Source::Manifest, version),
                    r(Part::Kubelet, "cp1", Source::Binary, version),
                    r(Part::Kubelet, "cp1", Source::Node, version),
                    r(Part::Kubelet, "w1", Source::Binary, w1_kubelet),
                    r(Part::Kubelet, "w1", Source::Node, version),
                    r(Part::Etcd, "cp1", Source::EndpointStatus, "3.4.23"),
                ],
            },
            ..LiveRead::default()
        }
    }

    fn avail() -> Available {
        Available {
            versions: ["v1.31.9", "v1.32.4", "v1.32.5", "v1.33.1"].map(v).to_vec(),
            source: "the mirror file:///srv/mirror".into(),
        }
    }

    fn etcd_avail(list: &[&str]) -> Available {
        Available {
            versions: list.iter().map(|t| v(t)).collect(),
            source: "the mirror file:///srv/mirror".into(),
        }
    }

    #[test]
    fn etcd_behind_its_target_is_upgraded_first_and_shown() {
        let plan = build(
            &inventory_etcd("v1.32.4", "v3.5.30"),
            read("v1.32.4", "v1.32.4"),
            avail(),
            etcd_avail(&["v3.4.23", "v3.5.30"]),
            &PlanOptions {
                to: Some(v("v1.32.5")),
                ..PlanOptions::default()
            },
        );
        assert!(plan.refused.is_none(), "{:?}", plan.refused);
        assert_eq!(plan.etcd.target, Some(v("v3.5.30")));
        assert_eq!(plan.etcd.path, [v("v3.5.30")]);
        assert_eq!(plan.etcd.members[0].member, "cp1");
        assert_eq!(plan.etcd.members[0].current, "3.4.23");
        let kinds: Vec<serde_json::Value> = plan
            .steps
            .iter()
            .map(|s| serde_json::to_value(s).unwrap()["step"].clone())
            .collect();
        assert_eq!(
            kinds,
            ["etcd-snapshot", "etcd-member", "control-plane", "workers"]
        );
        let etcd = plan
            .components
            .iter()
            .find(|r| r.component == Part::Etcd)
            .unwrap();
        assert_eq!(etcd.current, "3.4.23");
        assert_eq!(etcd.target.as_deref(), Some("v3.5.30"));
        let text = render(&plan);
        assert!(
            text.contains("etcd: cp1 3.4.23 → v3.5.30: through v3.5.30, one member at a time"),
            "{text}"
        );
        assert!(
            text.contains("2. etcd member cp1 (v3.4.23 → v3.5.30)"),
            "{text}"
        );
        let json = serde_json::to_value(&plan).unwrap();
        assert_eq!(json["etcd"]["path"][0], "v3.5.30");
        assert_eq!(json["etcd"]["members"][0]["version"], "v3.4.23");
        assert_eq!(json["steps"][1]["member"], "cp1");
    }

    #[test]
    fn etcd_that_would_skip_a_minor_refuses_the_plan_with_the_version_to_add() {
        let plan = build(
            &inventory_etcd("v1.32.4", "v3.6.5"),
            read("v1.32.4", "v1.32.4"),
            avail(),
            etcd_avail(&["v3.4.23", "v3.6.5"]),
            &PlanOptions::default(),
        );
        let r = plan.refused.as_ref().expect("refused");
        assert_eq!(r.target, v("v1.33.1"));
        assert!(
            r.reason.contains("needs every member at v3.5 first"),
            "{}",
            r.reason
        );
        assert!(r.path.contains("add an etcd v3.5.z release"), "{}", r.path);
        assert!(plan.steps.is_empty());
        let text = render(&plan);
        assert!(text.contains("Refused: upgrade to v1.33.1"), "{text}");
        assert!(
            plan.next[0].starts_with("upgrade to v1.33.1 is refused"),
            "{:?}",
            plan.next
        );
        let json = serde_json::to_value(&plan).unwrap();
        assert_eq!(json["refused"]["detail"]["kind"], "etcd");
        assert_eq!(json["refused"]["detail"]["etcd"], "missing");
        assert_eq!(json["refused"]["detail"]["minor"], 5);
    }

    #[test]
    fn without_to_the_newest_allowed_target_is_planned() {
        let plan = build(
            &inventory("v1.32.4"),
            read("v1.32.4", "v1.32.4"),
            avail(),
            etcd_avail(&["v3.4.23"]),
            &PlanOptions::default(),
        );
        assert_eq!(plan.cluster_version, Some(v("v1.32.4")));
        assert_eq!(
            plan.allowed_targets
                .iter()
                .map(|t| t.version)
                .collect::<Vec<_>>(),
            [v("v1.32.5"), v("v1.33.1")]
        );
        assert_eq!(plan.target, Some(v("v1.33.1")));
        assert!(plan.refused.is_none());
        assert_eq!(plan.steps.len(), 3, "{:?}", plan.steps);
        let text = render(&plan);
        assert!(
            text.contains("Allowed targets: v1.32.5 (newest patch of v1.32), v1.33.1"),
            "{text}"
        );
        assert!(text.contains("1. etcd snapshot on cp1"), "{text}");
        assert!(
            text.contains("capstan upgrade apply -i /inv/cluster.yaml --to v1.33.1"),
            "{text}"
        );
        assert!(
            text.contains("set `cluster.kubernetes_version: v1.33.1`"),
            "{text}"
        );
        // The etcd row goes to the inventory's version; the API server's to the target.
        let etcd = plan
            .components
            .iter()
            .find(|r| r.component == Part::Etcd)
            .unwrap();
        assert_eq!(etcd.target.as_deref(), Some("3.4.23"));
        assert_eq!(same_release("v3.4.23", Some("3.4.23")), "3.4.23");
        assert_eq!(same_release("v3.5.24", Some("3.4.23")), "v3.5.24");
        assert_eq!(same_release("1.6.20", Some("1.6.20~ds1")), "1.6.20~ds1");
        let api = plan
            .components
            .iter()
            .find(|r| r.component == Part::ApiServer)
            .unwrap();
        assert_eq!(api.current, "v1.32.4");
        assert_eq!(api.target.as_deref(), Some("v1.33.1"));
        let json = serde_json::to_value(&plan).unwrap();
        assert_eq!(json["target"], "v1.33.1");
        assert_eq!(json["steps"][0]["step"], "etcd-snapshot");
        assert_eq!(json["steps"][1]["step"], "control-plane");
    }

    #[test]
    fn a_refused_target_says_why_and_the_path() {
        let plan = build(
            &inventory("v1.31.9"),
            read("v1.31.9", "v1.31.9"),
            avail(),
            etcd_avail(&["v3.4.23"]),
            &PlanOptions {
                to: Some(v("v1.33.1")),
                ..PlanOptions::default()
            },
        );
        let r = plan.refused.as_ref().unwrap();
        assert!(r.reason.contains("skips a minor"), "{}", r.reason);
        assert_eq!(r.path, "upgrade to v1.32.5 first, then to v1.33.1");
        assert!(plan.steps.is_empty());
        let text = render(&plan);
        assert!(text.contains("Refused: --to v1.33.1"), "{text}");
        assert!(plan.components.iter().all(|r| r.target.is_none()));
        let json = serde_json::to_value(&plan).unwrap();
        assert_eq!(json["refused"]["detail"]["kind"], "skips-minor");
    }

    #[test]
    fn a_skew_violation_is_shown_and_blocks_every_target() {
        let plan = build(
            &inventory("v1.31.9"),
            read("v1.31.9", "v1.33.1"),
            avail(),
            etcd_avail(&["v3.4.23"]),
            &PlanOptions::default(),
        );
        assert_eq!(plan.violations.len(), 1);
        assert!(plan.allowed_targets.is_empty());
        assert!(plan.steps.is_empty());
        let text = render(&plan);
        assert!(text.contains("Outside the version-skew policy"), "{text}");
        assert!(text.contains("kubelet on w1 is v1.33.1"), "{text}");
        // The table shows both readings of w1's kubelet.
        assert!(text.contains("v1.33.1 (Node: v1.31.9)"), "{text}");
    }

    #[test]
    fn at_the_newest_release_nothing_is_allowed() {
        let plan = build(
            &inventory("v1.33.1"),
            read("v1.33.1", "v1.33.1"),
            avail(),
            etcd_avail(&["v3.4.23"]),
            &PlanOptions::default(),
        );
        assert!(plan.target.is_none());
        assert!(
            plan.next[0].contains("nothing to upgrade"),
            "{:?}",
            plan.next
        );
        // --to the same version: allowed, nothing to do.
        let plan = build(
            &inventory("v1.33.1"),
            read("v1.33.1", "v1.33.1"),
            avail(),
            etcd_avail(&["v3.4.23"]),
            &PlanOptions {
                to: Some(v("v1.33.1")),
                ..PlanOptions::default()
            },
        );
        assert!(plan.refused.is_none());
        assert!(plan.steps.is_empty());
        assert_eq!(plan.up_to_date, ["cp1", "w1"]);
        assert!(plan.next[0].contains("nothing to do"), "{:?}", plan.next);
    }
}
