//! `cluster.etcd.snapshots`: scheduled etcd snapshots on every member, checked before any
//! connection; the schedule is turned into a systemd calendar event here.

use serde::Serialize;

use super::cron;
use super::model::InventoryFile;
use super::validate::Collector;

pub const DEFAULT_SCHEDULE: &str = "0 */6 * * *";
pub const DEFAULT_KEEP: u32 = 12;
pub const DEFAULT_DIR: &str = "/var/lib/capstan/etcd-snapshots";
/// etcd's data dir: snapshots (and their pruning) stay out of it.
const ETCD_DATA_DIR: &str = "/var/lib/etcd";

/// Scheduled snapshots, as every etcd member's timer takes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EtcdSnapshots {
    /// The cron expression as written.
    pub schedule: String,
    /// The same as a systemd calendar event (`OnCalendar=`).
    pub on_calendar: String,
    /// Snapshots each member keeps (the newest).
    pub keep: u32,
    /// Where each member keeps them (absolute).
    pub dir: String,
}

pub(super) fn resolve(c: &mut Collector<'_>, file: &InventoryFile) -> Option<EtcdSnapshots> {
    let spec = file.cluster.etcd.snapshots.as_ref()?;
    let at = |key: &'static str| ["cluster", "etcd", "snapshots", key];
    let schedule = spec
        .schedule
        .clone()
        .unwrap_or_else(|| DEFAULT_SCHEDULE.to_string());
    let on_calendar = match cron::to_on_calendar(&schedule) {
        Ok(o) => o,
        Err(why) => {
            c.at(
                &at("schedule"),
                format!("schedule: {why}"),
                format!(
                    "write a 5-field cron expression capstan can turn into a systemd timer, e.g. \"{DEFAULT_SCHEDULE}\" (every 6 hours)"
                ),
            );
            String::new()
        }
    };
    let keep = spec.keep.unwrap_or(DEFAULT_KEEP);
    if keep == 0 {
        c.at(
            &at("keep"),
            "keep: 0 would remove every snapshot as soon as it is taken",
            format!("keep at least 1 (default {DEFAULT_KEEP})"),
        );
    }
    let dir = spec.dir.clone().unwrap_or_else(|| DEFAULT_DIR.to_string());
    if let Err(why) = check_dir(&dir) {
        c.at(
            &at("dir"),
            format!("dir `{dir}` {why}"),
            format!(
                "an absolute path of letters, digits, `.`, `_`, `-` and `/`, e.g. {DEFAULT_DIR}"
            ),
        );
    }
    Some(EtcdSnapshots {
        schedule,
        on_calendar,
        keep,
        dir: dir.trim_end_matches('/').to_string(),
    })
}

fn check_dir(dir: &str) -> Result<(), &'static str> {
    if !dir.starts_with('/') {
        return Err("is not an absolute path");
    }
    if !dir
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-'))
    {
        return Err("has characters other than letters, digits, `.`, `_`, `-` and `/`");
    }
    if dir.split('/').any(|p| p == "..") {
        return Err("has `..` in it");
    }
    let trimmed = dir.trim_end_matches('/');
    if trimmed.is_empty() {
        return Err("is the root directory");
    }
    if trimmed == ETCD_DATA_DIR || trimmed.starts_with(&format!("{ETCD_DATA_DIR}/")) {
        return Err("is inside etcd's data dir (/var/lib/etcd)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    const HOSTS: &str = "hosts:\n  - {name: cp1, address: 10.0.0.1, roles: [control-plane]}\n";

    fn text(snapshots: &str) -> String {
        format!(
            "cluster:\n  name: a\n  kubernetes_version: v1.32.4\n  etcd:\n    snapshots: {snapshots}\n{HOSTS}"
        )
    }

    fn load(snapshots: &str) -> crate::inventory::Inventory {
        crate::inventory::load_str(&text(snapshots), Path::new("/x/cluster.yaml"), None)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn problems(snapshots: &str) -> Vec<String> {
        crate::inventory::validate::tests::problems(&text(snapshots))
    }

    #[test]
    fn absent_is_no_timer_and_an_empty_map_takes_the_defaults() {
        let inv = crate::inventory::load_str(
            &format!("cluster: {{name: a, kubernetes_version: v1.32.4}}\n{HOSTS}"),
            Path::new("/x/cluster.yaml"),
            None,
        )
        .unwrap();
        assert_eq!(inv.cluster.etcd_snapshots, None);
        let s = load("{}").cluster.etcd_snapshots.unwrap();
        assert_eq!(s.schedule, "0 */6 * * *");
        assert_eq!(s.on_calendar, "*-*-* 00/6:00:00");
        assert_eq!(s.keep, 12);
        assert_eq!(s.dir, "/var/lib/capstan/etcd-snapshots");
        let s = load("{schedule: \"30 1 * * sun\", keep: 2, dir: /srv/snaps/}")
            .cluster
            .etcd_snapshots
            .unwrap();
        assert_eq!(
            (s.on_calendar.as_str(), s.keep, s.dir.as_str()),
            ("Sun *-*-* 01:30:00", 2, "/srv/snaps")
        );
    }

    #[test]
    fn bad_values_are_reported_where_they_are() {
        let p = problems("{schedule: \"0 0 1 * 1\", keep: 0, dir: snaps}");
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(
            p[0].starts_with("5:27: schedule: `0 0 1 * 1` restricts both"),
            "{p:?}"
        );
        assert!(p[0].contains("| write a 5-field cron expression"), "{p:?}");
        assert!(p[1].starts_with("5:46: keep: 0 would remove"), "{p:?}");
        assert!(
            p[2].starts_with("5:54: dir `snaps` is not an absolute path"),
            "{p:?}"
        );
        let p = problems("{dir: /var/lib/etcd/snap}");
        assert!(p[0].contains("inside etcd's data dir"), "{p:?}");
        let p = problems("{dir: \"/srv/$(reboot)\"}");
        assert!(p[0].contains("has characters other than"), "{p:?}");
        let p = problems("{every: 6h}");
        assert!(p[0].contains("every"), "{p:?}");
    }
}
