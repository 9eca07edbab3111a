//! `capstan etcd restore --snapshot FILE`: the whole etcd cluster back to a snapshot, for
//! when quorum is lost for good or the data must go back.
//!
//! Before anything stops: the snapshot checked on the operator machine (its sha256 against
//! the description `etcd snapshot` wrote beside it, the cluster it came from against this
//! inventory and its local PKI), then on every member (uploaded, sha256 again, `snapshot
//! status`), the members' etcd CA against the snapshot's, free space; the plan shown and
//! confirmed. Then, journalled step by step: the API servers stopped (their static pod
//! manifests moved aside; gate: gone) → etcd stopped on every member → each member's data
//! moved aside (kept, never deleted) and the snapshot restored there with a new cluster
//! token and the inventory's member list → etcd started on every member (gate: `endpoint
//! health --cluster`, the members the inventory names) → the API servers back one at a time
//! (gate: its `/readyz`) → the nodes Ready.
//!
//! Every step looks at the hosts before it acts, and the cluster token is kept in
//! `.capstan/restore.json` until the restore ends: an interrupted restore is finished by
//! running the same command again (a member restored already is not restored twice).
//! Members are the inventory's etcd members, stacked or external.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::cluster::{ClusterRun, RunReport, Stop, wait_for};
use super::converge::{self, ConvergeOptions};
use super::membership::peer_url;
use super::snapshot::{self, Meta};
use super::{SessionOptions, gates, init};
use crate::artifacts::cache::Cache;
use crate::error::BadInput;
use crate::inventory::{Inventory, Role};
use crate::pki;
use crate::ssh::{self, ExecOutput};
use crate::ui::{self, Color};

/// Where a member keeps the uploaded snapshot and the mark of its restore, and a control
/// plane its static pod manifests while the API servers are stopped.
const WORK_DIR: &str = "/var/lib/capstan/restore";
const REMOTE_SNAPSHOT: &str = "/var/lib/capstan/restore/snapshot.db";
/// Holds the cluster token of the restore that wrote this member's data.
const MARK: &str = "/var/lib/capstan/restore/restored";
const MANIFESTS: &str = "/etc/kubernetes/manifests";
const MANIFESTS_ASIDE: &str = "/var/lib/capstan/restore/manifests";
/// The static pods stopped while etcd is replaced: the API server, and the controllers
/// that would otherwise keep acting on what they cached from the old data.
const STATIC_PODS: [&str; 3] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];
const DATA_DIR: &str = "/var/lib/etcd";
const PATH: &str = "PATH=/usr/local/bin:/usr/local/sbin:/usr/bin:/usr/sbin:/bin:/sbin";
/// How long each gate waits.
const GATE_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub dry_run: bool,
    /// Ask on the terminal after the plan (no `--yes`).
    pub confirm: bool,
    /// Restore even when the snapshot cannot be shown to come from this cluster.
    pub allow_foreign: bool,
}

/// The snapshot as read and checked on the operator machine, before any connection.
#[derive(Debug)]
pub struct Local {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    pub sha256: String,
    /// Its description (`NAME.db.json`), when there is one.
    pub meta: Option<Meta>,
    /// An unfinished restore of this snapshot, to resume.
    pub progress: Option<Progress>,
}

/// An unfinished restore, in `.capstan/restore.json`: what a re-run needs to finish it with
/// the same cluster token (members restored with different tokens would not form one cluster).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Progress {
    pub snapshot: String,
    pub sha256: String,
    pub token: String,
    /// Names the folders the members' data is moved to (`/var/lib/etcd-before-restore-STAMP`).
    pub stamp: String,
    pub started: String,
}

fn progress_path(inv: &Inventory) -> PathBuf {
    inv.state_dir().join("restore.json")
}

/// Reads the snapshot at `path` and checks it against its description, this inventory and
/// the local PKI: every refusal here is bad input, and nothing was contacted.
pub fn check_local(inv: &Inventory, path: &Path, allow_foreign: bool) -> Result<Local, BadInput> {
    let shown = path.display();
    let meta_file = snapshot::meta_path(path);
    let bytes = match std::fs::metadata(path) {
        Ok(m) if m.is_file() => std::fs::read(path).map_err(|e| {
            BadInput::new(format!("cannot read {shown}: {e}"), "check its permissions")
        })?,
        Ok(_) => {
            return Err(BadInput::new(
                format!("--snapshot {shown} is not a file"),
                "name a snapshot file, e.g. one of .capstan/backups/etcd-*.db",
            ));
        }
        Err(e) => {
            return Err(BadInput::new(
                format!("--snapshot {shown}: {e}"),
                format!(
                    "name a snapshot file; `capstan etcd snapshot` keeps them in {}",
                    inv.state_dir().join("backups").display()
                ),
            ));
        }
    };
    if bytes.is_empty() {
        return Err(BadInput::new(
            format!("{shown} is empty: not an etcd snapshot"),
            "name another snapshot",
        ));
    }
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let meta = snapshot::read_meta(path).map_err(|e| {
        BadInput::new(
            e,
            format!("restore the description from where the snapshot came from, or move {} away and pass --allow-foreign-snapshot", meta_file.display()),
        )
    })?;
    if let Some(m) = &meta
        && (m.sha256 != sha256 || m.size != bytes.len() as u64)
    {
        return Err(BadInput::new(
            format!(
                "{shown} is not the snapshot {} describes (sha256 {sha256}, {} bytes; recorded \
                     {}, {} bytes): it changed or was damaged after it was taken",
                meta_file.display(),
                bytes.len(),
                m.sha256,
                m.size
            ),
            "restore another snapshot (`ls .capstan/backups/`)",
        ));
    }
    if !allow_foreign {
        origin_check(inv, path, meta.as_ref())?;
    }
    let progress = read_progress(inv)?;
    if let Some(p) = &progress
        && p.sha256 != sha256
    {
        return Err(BadInput::new(
            format!(
                "a restore of {} (sha256 {}) started at {} is not finished, and {shown} is another snapshot",
                p.snapshot, p.sha256, p.started
            ),
            format!(
                "finish that one first: `capstan etcd restore --snapshot {}`; or, to give it up, \
                 remove {}",
                p.snapshot,
                progress_path(inv).display()
            ),
        ));
    }
    Ok(Local {
        path: path.to_path_buf(),
        bytes,
        sha256,
        meta,
        progress,
    })
}

/// The snapshot comes from this cluster: its description names this cluster, and the etcd
/// CA it was taken under is the local PKI's (when there is one; the members' CA is compared
/// after connecting).
fn origin_check(inv: &Inventory, path: &Path, meta: Option<&Meta>) -> Result<(), BadInput> {
    const HELP: &str = "restore a snapshot of this cluster; if you mean to restore this one \
                        into it anyway (the cluster was rebuilt with a new PKI, say), pass \
                        --allow-foreign-snapshot";
    let Some(meta) = meta else {
        return Err(BadInput::new(
            format!(
                "cannot tell which cluster {} comes from: there is no {} beside it (`capstan etcd \
                 snapshot` writes one)",
                path.display(),
                snapshot::meta_path(path).display()
            ),
            HELP,
        ));
    };
    if meta.cluster != inv.cluster.name {
        return Err(BadInput::new(
            format!(
                "{} is a snapshot of cluster `{}` (taken on {} at {}), and this inventory is \
                 cluster `{}`: nothing was changed",
                path.display(),
                meta.cluster,
                meta.host,
                meta.taken_at,
                inv.cluster.name
            ),
            HELP,
        ));
    }
    let store = pki::Store::for_inventory(inv);
    if store.exists()
        && let Ok(state) = store.load()
        && let Some(ca) = state.cas.get(&pki::CaKind::EtcdCa)
    {
        let local = hex::encode(Sha256::digest(&ca.cert_pem));
        if local != meta.etcd_ca_sha256 {
            return Err(BadInput::new(
                format!(
                    "{} was taken under another etcd CA (sha256 {}) than this cluster's in {} \
                     (sha256 {local}): it is a snapshot of another cluster; nothing was changed",
                    path.display(),
                    meta.etcd_ca_sha256,
                    store.root().display()
                ),
                HELP,
            ));
        }
    }
    Ok(())
}

fn read_progress(inv: &Inventory) -> Result<Option<Progress>, BadInput> {
    let path = progress_path(inv);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            BadInput::new(
                format!("{} is not a restore record: {e}", path.display()),
                "move it away (the restore it recorded cannot be resumed then)",
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(BadInput::new(
            format!("cannot read {}: {e}", path.display()),
            "check its permissions",
        )),
    }
}

/// What the restore did.
#[derive(Debug, Serialize)]
pub struct RestoreReport {
    pub snapshot: PathBuf,
    pub sha256: String,
    /// The snapshot's revision (`snapshot status`), when it was verified on the members.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    /// The members restored, in inventory order.
    pub members: Vec<String>,
    /// Where each member's data from before the restore was moved (kept).
    pub kept: BTreeMap<String, String>,
    /// This run finished a restore an earlier run had started.
    pub resumed: bool,
    /// Why the restore was refused before anything was stopped (exit 2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    #[serde(flatten)]
    pub run: RunReport,
}

impl RestoreReport {
    pub fn ok(&self) -> bool {
        self.refused.is_none() && self.run.ok()
    }
}

/// Why the restore did not go on.
enum Halt {
    /// Before anything was stopped: the input is at fault (exit 2).
    Refused(String),
    Stop(Stop),
}

impl From<Stop> for Halt {
    fn from(s: Stop) -> Self {
        Halt::Stop(s)
    }
}

/// What the preflight read on one member.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct MemberFacts {
    /// sha256 of its etcd CA.
    ca: String,
    /// `systemctl is-active etcd`.
    etcd: String,
    /// Its local endpoint answers `endpoint health`.
    healthy: bool,
    /// It has data (`/var/lib/etcd/member`).
    data: bool,
    /// `etcdutl` when installed, else `etcdctl` (etcd 3.4 has no etcdutl).
    tool: String,
    /// The tool's restore knows `--bump-revision` (etcdutl 3.5.x and later).
    bump: bool,
    /// The cluster token its data was restored with, by an unfinished restore.
    mark: String,
    /// KiB free where the data goes.
    avail_kib: u64,
}

fn parse_facts(stdout: &str) -> MemberFacts {
    let mut f = MemberFacts::default();
    for line in stdout.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim();
        match k {
            "ca" => f.ca = v.to_string(),
            "etcd" => f.etcd = v.to_string(),
            "health" => f.healthy = v == "ok",
            "data" => f.data = v == "yes",
            "tool" => f.tool = v.to_string(),
            "bump" => f.bump = v == "yes",
            "mark" => f.mark = v.to_string(),
            "avail" => f.avail_kib = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    f
}

/// One exec per member, reading only.
fn facts_script() -> String {
    format!(
        "{PATH}\n\
         echo \"ca=$(sha256sum {ca} 2>/dev/null | cut -d' ' -f1)\"\n\
         echo \"etcd=$(systemctl is-active etcd.service 2>/dev/null)\"\n\
         if {health} >/dev/null 2>&1; then echo health=ok; else echo health=no; fi\n\
         if [ -d {DATA_DIR}/member ]; then echo data=yes; else echo data=no; fi\n\
         if command -v etcdutl >/dev/null 2>&1; then echo tool=etcdutl\n\
           if etcdutl snapshot restore --help 2>&1 | grep -q -- --bump-revision; then echo bump=yes; fi\n\
         else echo tool=etcdctl; fi\n\
         echo \"mark=$(cat {MARK} 2>/dev/null)\"\n\
         echo \"avail=$(df -Pk /var/lib | awk 'NR==2 {{print $4}}')\"\n",
        ca = snapshot::ETCD_CA,
        health = gates::etcdctl("endpoint health"),
    )
}

/// The offline snapshot tool on a member.
fn tool(facts: &MemberFacts) -> String {
    if facts.tool == "etcdutl" {
        format!("{PATH} etcdutl")
    } else {
        format!("{PATH} ETCDCTL_API=3 etcdctl")
    }
}

/// `--initial-cluster` of the restored cluster: every etcd member of the inventory.
fn initial_cluster(inv: &Inventory) -> String {
    inv.etcd_members()
        .map(|h| format!("{}={}", h.name, peer_url(h)))
        .collect::<Vec<_>>()
        .join(",")
}

/// Where a member's data from before goes.
fn aside_dir(stamp: &str) -> String {
    format!("{DATA_DIR}-before-restore-{stamp}")
}

/// Restores the snapshot on one member: stops etcd, moves the data aside (a fresh folder
/// name if one is there already), restores into a temporary folder beside it and moves the
/// result into place, then marks the member restored with `token`. A member marked with
/// `token` already is left as it is (a resumed restore).
fn restore_script(
    inv: &Inventory,
    host: &crate::inventory::Host,
    facts: &MemberFacts,
    progress: &Progress,
) -> String {
    let token = ssh::quote(&progress.token);
    let aside = aside_dir(&progress.stamp);
    let tmp = format!("{DATA_DIR}-restore.tmp");
    let bump = if facts.bump {
        // Watchers (kubelets, controllers) then see their resource versions compacted and
        // list again instead of waiting for revisions that went back in time.
        " --bump-revision 1000000000 --mark-compacted"
    } else {
        ""
    };
    format!(
        "set -eu\n{PATH}\n\
         if [ \"$(cat {MARK} 2>/dev/null)\" = {token} ] && [ -d {DATA_DIR}/member ]; then echo restored-already; exit 0; fi\n\
         systemctl stop etcd.service\n\
         if systemctl is-active -q etcd.service; then echo 'etcd is still running' >&2; exit 1; fi\n\
         mkdir -p -m 0700 {DATA_DIR}\n\
         if [ -n \"$(ls -A {DATA_DIR})\" ]; then\n  \
           aside={aside}; n=1\n  \
           while [ -e \"$aside\" ] && [ -n \"$(ls -A \"$aside\")\" ]; do aside={aside}.$n; n=$((n+1)); done\n  \
           mkdir -p -m 0700 \"$aside\"\n  \
           find {DATA_DIR} -mindepth 1 -maxdepth 1 -exec mv -t \"$aside\" {{}} +\n  \
           echo \"aside=$aside\"\n\
         fi\n\
         rm -rf {tmp}\n\
         {tool} snapshot restore {REMOTE_SNAPSHOT} --data-dir {tmp} --name {name} \
           --initial-cluster {cluster} --initial-cluster-token {token} \
           --initial-advertise-peer-urls {peer}{bump} >&2\n\
         mv {tmp}/member {DATA_DIR}/member\n\
         rmdir {tmp}\n\
         printf '%s\\n' {token} > {MARK}.tmp && mv -f {MARK}.tmp {MARK}\n\
         echo restored\n",
        tool = tool(facts),
        name = ssh::quote(&host.name),
        cluster = ssh::quote(&initial_cluster(inv)),
        peer = ssh::quote(&peer_url(host)),
    )
}

/// Moves the static pod manifests aside on a control plane (the kubelet stops the pods).
fn stop_api_script() -> String {
    let mut s = format!("set -eu\nmkdir -p -m 0700 {MANIFESTS_ASIDE}\n");
    for pod in STATIC_PODS {
        let _ = writeln!(
            s,
            "if [ -f {MANIFESTS}/{pod}.yaml ]; then mv -f {MANIFESTS}/{pod}.yaml {MANIFESTS_ASIDE}/{pod}.yaml; echo moved {pod}; fi"
        );
    }
    s
}

/// Puts the manifests back (a manifest in place already wins over the one aside).
fn start_api_script() -> String {
    let mut s = String::from("set -eu\n");
    for pod in STATIC_PODS {
        let _ = writeln!(
            s,
            "if [ -f {MANIFESTS_ASIDE}/{pod}.yaml ] && [ ! -e {MANIFESTS}/{pod}.yaml ]; then mv {MANIFESTS_ASIDE}/{pod}.yaml {MANIFESTS}/{pod}.yaml; echo back {pod}; fi"
        );
    }
    s
}

/// curl's exit status against an API server: 7 when nothing listens there any more.
fn api_gone_script(server: &str) -> String {
    format!(
        "{PATH} curl -sk --max-time 3 -o /dev/null {}/healthz; echo \"rc=$?\"",
        ssh::quote(server)
    )
}

/// `capstan etcd restore`. The command checked `local` (see [`check_local`]) and holds the
/// cluster lock (unless this is a dry run).
pub async fn run(
    inventory: &Inventory,
    session: &SessionOptions,
    cache: Cache,
    local: &Local,
    opts: &RestoreOptions,
) -> miette::Result<RestoreReport> {
    let prepared = converge::prepare(inventory, &ConvergeOptions::default(), cache)?;
    let mut run = ClusterRun::connect(
        "etcd restore",
        inventory,
        session,
        prepared,
        opts.dry_run,
        false,
    )
    .await;
    let mut state = State {
        members: run.etcd_members(),
        cps: run.with_role(Role::ControlPlane),
        facts: BTreeMap::new(),
        revision: None,
        kept: BTreeMap::new(),
        progress: local.progress.clone(),
    };
    let resumed = local.progress.is_some();
    let outcome = steps(&mut run, &mut state, local, opts).await;
    let (refused, stopped) = match outcome {
        Ok(()) => (None, None),
        Err(Halt::Refused(why)) => (Some(why), None),
        Err(Halt::Stop(s)) => (None, Some(s)),
    };
    let members = state
        .members
        .iter()
        .map(|&i| run.host(i).name.clone())
        .collect();
    let report = run.finish(stopped).await;
    if report.ok() && refused.is_none() && !opts.dry_run {
        // Finished: a later restore starts afresh, with a new token.
        let _ = std::fs::remove_file(progress_path(inventory));
    }
    Ok(RestoreReport {
        snapshot: local.path.clone(),
        sha256: local.sha256.clone(),
        revision: state.revision,
        members,
        kept: state.kept,
        resumed,
        refused,
        run: report,
    })
}

struct State {
    members: Vec<usize>,
    cps: Vec<usize>,
    facts: BTreeMap<usize, MemberFacts>,
    revision: Option<i64>,
    kept: BTreeMap<String, String>,
    progress: Option<Progress>,
}

async fn steps(
    run: &mut ClusterRun<'_>,
    st: &mut State,
    local: &Local,
    opts: &RestoreOptions,
) -> Result<(), Halt> {
    let inv = run.inventory;
    if st.members.is_empty() {
        return Err(Halt::Refused(
            "the inventory names no etcd member".to_string(),
        ));
    }
    // 1. Preflight: every member and control plane reachable, the snapshot verified on each
    // member, the members' CA the snapshot's. Nothing is stopped before all of it holds.
    let mut critical = st.members.clone();
    critical.extend(st.cps.iter().copied().filter(|i| !st.members.contains(i)));
    init::critical(run, &critical, "connect")?;
    begin(run, "preflight")?;
    let results = on_each(run, &st.members, |_| facts_script()).await;
    for (i, r) in results {
        let out = r.map_err(|e| Stop(format!("{}: {e}", run.host(i).name)))?;
        st.facts.insert(i, parse_facts(&out.stdout_text()));
    }
    identity_check(run, st, local, opts)?;
    space_check(run, st, local)?;
    if !opts.dry_run {
        verify_on_members(run, st, local).await?;
    }
    let progress = match st.progress.clone() {
        Some(p) => p,
        None => new_progress(local),
    };
    print_plan(run, st, local, &progress, opts.dry_run);
    if opts.dry_run {
        note(run, "dry run: nothing was changed");
        return Ok(());
    }
    if opts.confirm
        && !ui::confirm(&format!(
            "Restore etcd of cluster {} from this snapshot?",
            inv.cluster.name
        ))
    {
        let _ = on_each(run, &st.members, |_| format!("rm -f {REMOTE_SNAPSHOT}")).await;
        return Err(Halt::Refused(
            "not confirmed: nothing was changed (answer y, or pass --yes)".to_string(),
        ));
    }
    if st.progress.is_none() {
        write_progress(inv, &progress)?;
        st.progress = Some(progress.clone());
    }
    end(run, "preflight");

    // 2. The API servers (and their controllers) stopped everywhere: nothing writes to etcd.
    begin(run, "stop the API servers")?;
    let cps = st.cps.clone();
    let results = all_ok(run, &cps, "moving the static pods aside", |_| {
        stop_api_script()
    })
    .await?;
    for (i, out) in results {
        let moved = out.lines().filter(|l| l.starts_with("moved ")).count();
        let name = run.host(i).name.clone();
        note(
            run,
            &format!("{name}: {moved} static pod manifests moved to {MANIFESTS_ASIDE}"),
        );
    }
    for &cp in &cps {
        api_gone_gate(run, cp).await?;
    }
    end(run, "stop the API servers");

    // 3. etcd stopped on every member.
    begin(run, "stop etcd")?;
    let members = st.members.clone();
    all_ok(run, &members, "systemctl stop etcd", |_| {
        "systemctl stop etcd.service && ! systemctl is-active -q etcd.service".to_string()
    })
    .await?;
    note(run, &format!("etcd stopped on {}", names(run, &members)));
    end(run, "stop etcd");

    // 4. Each member's data aside, the snapshot restored in its place.
    begin(run, "restore the snapshot")?;
    let scripts: BTreeMap<usize, String> = members
        .iter()
        .map(|&i| {
            let facts = st.facts.get(&i).cloned().unwrap_or_default();
            (i, restore_script(inv, run.host(i), &facts, &progress))
        })
        .collect();
    let results = all_ok(run, &members, "the snapshot restore", |i| {
        scripts.get(&i).cloned().unwrap_or_default()
    })
    .await?;
    for (i, out) in results {
        let name = run.host(i).name.clone();
        if let Some(aside) = out.lines().find_map(|l| l.strip_prefix("aside=")) {
            st.kept.insert(name.clone(), aside.to_string());
            note(
                run,
                &format!("{name}: the data from before moved to {aside} (kept)"),
            );
        }
        if out.lines().any(|l| l == "restored-already") {
            note(
                run,
                &format!("{name}: restored already by the interrupted run"),
            );
        } else {
            note(run, &format!("{name}: restored"));
        }
    }
    end(run, "restore the snapshot");

    // 5. etcd started on every member at once (a new cluster needs a quorum of them to elect
    // a leader), then healthy as the inventory names it.
    begin(run, "start etcd")?;
    all_ok(run, &members, "systemctl start etcd", |_| {
        "systemctl reset-failed etcd.service 2>/dev/null; systemctl start --no-block etcd.service"
            .to_string()
    })
    .await?;
    init::etcd_gate(run, members[0], members.len()).await?;
    member_list_gate(run, members[0]).await?;
    end(run, "start etcd");

    // 6. The API servers back one at a time, each ready before the next.
    begin(run, "start the API servers")?;
    for &cp in &cps {
        let name = run.host(cp).name.clone();
        all_ok(run, &[cp], "putting the static pods back", |_| {
            start_api_script()
        })
        .await?;
        init::api_gate_within(
            run,
            cp,
            Some(pki::spec::local_api_url(inv, run.host(cp))),
            &format!("the API server of {name}"),
            GATE_TIMEOUT,
        )
        .await?;
    }
    end(run, "start the API servers");

    // 7. The cluster serves: the API through the endpoint, every node Ready.
    begin(run, "nodes")?;
    let first = cps[0];
    init::api_gate_within(
        run,
        first,
        None,
        "the API through the endpoint",
        GATE_TIMEOUT,
    )
    .await?;
    let nodes: Vec<String> = (0..inv.hosts.len())
        .filter(|&i| pki::spec::runs_kubelet(run.host(i)))
        .map(|i| run.host(i).name.clone())
        .collect();
    init::nodes_ready(run, first, &nodes, None, GATE_TIMEOUT).await?;
    end(run, "nodes");

    // The uploaded snapshot and the marks have served; the data aside stays.
    let _ = on_each(run, &members, |_| {
        format!(
            "rm -f {REMOTE_SNAPSHOT} {MARK}; rmdir {MANIFESTS_ASIDE} {WORK_DIR} 2>/dev/null; true"
        )
    })
    .await;
    let _ = on_each(run, &cps, |_| {
        format!("rmdir {MANIFESTS_ASIDE} {WORK_DIR} 2>/dev/null; true")
    })
    .await;
    Ok(())
}

fn new_progress(local: &Local) -> Progress {
    let now = time::OffsetDateTime::now_utc();
    {
        Progress {
            snapshot: local.path.display().to_string(),
            sha256: local.sha256.clone(),
            token: format!("capstan-restore-{:016x}", rand::random::<u64>()),
            stamp: format!(
                "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
                now.year(),
                u8::from(now.month()),
                now.day(),
                now.hour(),
                now.minute(),
                now.second()
            ),
            started: now
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
        }
    }
}

fn write_progress(inv: &Inventory, p: &Progress) -> Result<(), Stop> {
    let path = progress_path(inv);
    let text = serde_json::to_vec_pretty(p).map_err(|e| Stop(e.to_string()))?;
    crate::fsutil::write_atomic(&path, &text, 0o600).map_err(|e| {
        Stop(format!(
            "cannot write {}: {e}; nothing was changed",
            path.display()
        ))
    })
}

/// The members run under the etcd CA the snapshot was taken under, and agree on it.
fn identity_check(
    run: &ClusterRun<'_>,
    st: &State,
    local: &Local,
    opts: &RestoreOptions,
) -> Result<(), Halt> {
    let mut cas: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (&i, f) in &st.facts {
        if f.ca.is_empty() {
            return Err(Stop(format!(
                "{} has no etcd CA ({}): it is not an etcd member capstan set up; run `capstan init` to set it up first",
                run.host(i).name,
                snapshot::ETCD_CA
            ))
            .into());
        }
        cas.entry(f.ca.as_str())
            .or_default()
            .push(run.host(i).name.as_str());
    }
    if cas.len() > 1 {
        let list: Vec<String> = cas
            .iter()
            .map(|(ca, hosts)| format!("{} has {ca}", hosts.join(", ")))
            .collect();
        return Err(Stop(format!(
            "the members do not share one etcd CA ({}): they are not one cluster; nothing was changed",
            list.join("; ")
        ))
        .into());
    }
    if opts.allow_foreign {
        return Ok(());
    }
    if let (Some(meta), Some((ca, _))) = (&local.meta, cas.iter().next())
        && meta.etcd_ca_sha256 != *ca
    {
        return Err(Halt::Refused(format!(
            "{} was taken under another etcd CA (sha256 {}) than the members run (sha256 {ca}): \
             it is a snapshot of another cluster; nothing was changed. Pass \
             --allow-foreign-snapshot to restore it anyway",
            local.path.display(),
            meta.etcd_ca_sha256
        )));
    }
    Ok(())
}

/// Each member holds the upload and the restored copy next to its data.
fn space_check(run: &ClusterRun<'_>, st: &State, local: &Local) -> Result<(), Stop> {
    let need_kib = (local.bytes.len() as u64 * 2) / 1024 + 64 * 1024;
    for (&i, f) in &st.facts {
        if f.avail_kib > 0 && f.avail_kib < need_kib {
            return Err(Stop(format!(
                "{} has {} MiB free in /var/lib, and the restore needs {} MiB there (the snapshot \
                 twice, and room to start); free some space, then run again. Nothing was changed",
                run.host(i).name,
                f.avail_kib / 1024,
                need_kib / 1024
            )));
        }
    }
    Ok(())
}

/// The snapshot uploaded to every member and checked there: the same sha256, and etcd's
/// own reading of it (`snapshot status`: its integrity, revision and keys).
async fn verify_on_members(
    run: &mut ClusterRun<'_>,
    st: &mut State,
    local: &Local,
) -> Result<(), Stop> {
    let members = st.members.clone();
    all_ok(run, &members, "preparing the upload", |_| {
        format!("mkdir -p -m 0700 {WORK_DIR}")
    })
    .await?;
    let uploads = members.iter().map(|&i| {
        let conn = run.hosts[i].conn.as_ref();
        async move {
            match conn {
                Some(c) => c
                    .upload(REMOTE_SNAPSHOT, &local.bytes, 0o600)
                    .await
                    .map_err(|e| e.to_string()),
                None => Err("not connected".to_string()),
            }
        }
    });
    for (r, &i) in futures::future::join_all(uploads)
        .await
        .into_iter()
        .zip(&members)
    {
        r.map_err(|e| {
            Stop(format!(
                "uploading the snapshot to {} failed: {e}; nothing was changed",
                run.host(i).name
            ))
        })?;
    }
    let facts = st.facts.clone();
    let results = all_ok(run, &members, "verifying the snapshot", |i| {
        let f = facts.get(&i).cloned().unwrap_or_default();
        format!(
            "set -eu\nsha256sum {REMOTE_SNAPSHOT}\n{} snapshot status {REMOTE_SNAPSHOT} -w json\n",
            tool(&f)
        )
    })
    .await?;
    for (i, out) in results {
        let name = run.host(i).name.clone();
        let mut lines = out.lines().filter(|l| !l.trim().is_empty());
        let sha = lines
            .next()
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_default();
        if sha != local.sha256 {
            return Err(Stop(format!(
                "the snapshot on {name} has sha256 {sha}, not {}: the upload was damaged; nothing was changed",
                local.sha256
            )));
        }
        let status = snapshot::parse_status(lines.next().unwrap_or_default()).map_err(|e| {
            Stop(format!(
                "{name}: the snapshot does not read as one: {e}; nothing was changed"
            ))
        })?;
        if let Some(m) = &local.meta
            && m.revision != status.revision
        {
            return Err(Stop(format!(
                "{name} reads revision {} from the snapshot, its description says {}; nothing was changed",
                status.revision, m.revision
            )));
        }
        st.revision = Some(status.revision);
        note(
            run,
            &format!(
                "{name}: snapshot verified (sha256, revision {}, {} keys)",
                status.revision, status.total_key
            ),
        );
    }
    Ok(())
}

fn print_plan(run: &mut ClusterRun<'_>, st: &State, local: &Local, p: &Progress, dry_run: bool) {
    let inv = run.inventory;
    let members = names(run, &st.members);
    let cps = names(run, &st.cps);
    let mut lines = Vec::new();
    match &local.meta {
        Some(m) => lines.push(format!(
            "snapshot {}: cluster {}, taken on {} at {}, revision {}, {} keys, {} bytes, sha256 {}",
            local.path.display(),
            m.cluster,
            m.host,
            m.taken_at,
            m.revision,
            m.total_keys,
            m.size,
            local.sha256
        )),
        None => lines.push(format!(
            "snapshot {}: {} bytes, sha256 {} (no description: its origin is not checked)",
            local.path.display(),
            local.bytes.len(),
            local.sha256
        )),
    }
    let now: Vec<String> = st
        .facts
        .iter()
        .map(|(&i, f)| {
            let data = if f.data { "has data" } else { "no data" };
            let health = if f.healthy { "healthy" } else { "not healthy" };
            format!("{} etcd {} ({health}, {data})", run.host(i).name, f.etcd)
        })
        .collect();
    lines.push(format!("etcd now: {}", now.join("; ")));
    if st.progress.is_some() {
        lines.push(format!(
            "resuming the restore started at {}: members restored already are kept as they are",
            p.started
        ));
    }
    let aside = aside_dir(&p.stamp);
    lines.extend([
        format!("1. stop the API servers on {cps}: static pod manifests to {MANIFESTS_ASIDE}; wait until they are gone"),
        format!("2. stop etcd on {members}"),
        format!(
            "3. on each member: data moved aside to {aside} (kept), the snapshot restored with a new cluster token as {}",
            initial_cluster(inv)
        ),
        format!("4. start etcd on {members}; wait for {} members healthy", st.members.len()),
        format!("5. start the API servers one at a time ({cps}), each ready before the next"),
        "6. wait for the API through the endpoint and every node Ready".to_string(),
        "writes made after the snapshot are not in the restored cluster (the data from before stays aside on each member)".to_string(),
    ]);
    let verb = if dry_run { "would do" } else { "plan" };
    if !ui::ui().json {
        let mut out = format!("  {}:\n", ui::paint(verb, Color::Bold));
        for l in &lines {
            let _ = writeln!(out, "    {l}");
        }
        ui::emit(&out);
    }
    if let Some(phase) = run.phases.last_mut() {
        phase.gates.extend(lines);
    }
}

/// The API server of control plane `cp` no longer listens.
async fn api_gone_gate(run: &mut ClusterRun<'_>, cp: usize) -> Result<(), Stop> {
    let name = run.host(cp).name.clone();
    let script = api_gone_script(&pki::spec::local_api_url(run.inventory, run.host(cp)));
    let run_ref = &*run;
    let check = || {
        let script = script.clone();
        async move {
            let out = run_ref.exec(cp, &script).await?;
            match out.stdout_text().trim() {
                "rc=7" => Ok(true),
                other => Err(format!("still answers (curl {other})")),
            }
        }
    };
    let result = wait_for(run_ref, cp, GATE_TIMEOUT, check).await;
    run.record_gate(&format!("the API server of {name} gone"), result)
}

/// The restored cluster's members are the inventory's, by name and peer URL.
async fn member_list_gate(run: &mut ClusterRun<'_>, on: usize) -> Result<(), Stop> {
    let out = run
        .exec(on, &gates::etcd_members_script())
        .await
        .map_err(|e| Stop(format!("etcd member list: {e}")))?;
    let listed = gates::parse_etcd_members(&out.stdout_text())
        .map_err(|e| Stop(format!("etcd member list: {e}")))?;
    let mut got: Vec<String> = listed
        .iter()
        .map(|m| format!("{}={}", m.name, m.peer_urls.join(",")))
        .collect();
    got.sort();
    let mut want: Vec<String> = run
        .inventory
        .etcd_members()
        .map(|h| format!("{}={}", h.name, peer_url(h)))
        .collect();
    want.sort();
    let result = if got == want {
        Ok(Some(0.0))
    } else {
        Err(format!(
            "the members are {}, not {}",
            got.join(", "),
            want.join(", ")
        ))
    };
    run.record_gate("etcd: the members the inventory names", result)
}

/// A step starts (unless the run was interrupted): journalled, printed, a phase of the
/// report.
fn begin(run: &mut ClusterRun<'_>, title: &str) -> Result<(), Stop> {
    if !run.dry_run {
        crate::interrupt::check().map_err(|e| Stop(format!("{title}: {e}")))?;
        crate::journal::append(title, "start");
    }
    if !ui::ui().quiet && !ui::ui().json {
        ui::emit(&format!("{} {title}\n", ui::paint("==>", Color::Bold)));
    }
    run.record_note(title, Vec::new());
    Ok(())
}

fn end(run: &ClusterRun<'_>, title: &str) {
    if !run.dry_run {
        crate::journal::append(title, "done");
    }
}

/// A line of the current step.
fn note(run: &mut ClusterRun<'_>, text: &str) {
    if !ui::ui().quiet && !ui::ui().json {
        ui::emit(&format!("  {text}\n"));
    }
    if let Some(p) = run.phases.last_mut() {
        p.gates.push(text.to_string());
    }
}

fn names(run: &ClusterRun<'_>, hosts: &[usize]) -> String {
    hosts
        .iter()
        .map(|&i| run.host(i).name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `script(host)` on each of `hosts` at once.
async fn on_each(
    run: &ClusterRun<'_>,
    hosts: &[usize],
    script: impl Fn(usize) -> String,
) -> Vec<(usize, Result<ExecOutput, String>)> {
    let work = hosts.iter().map(|&i| {
        let s = script(i);
        async move { (i, run.exec(i, &s).await) }
    });
    futures::future::join_all(work).await
}

/// [`on_each`], every host succeeding: their stdout, else a stop naming each host that
/// failed and why.
async fn all_ok(
    run: &ClusterRun<'_>,
    hosts: &[usize],
    what: &str,
    script: impl Fn(usize) -> String,
) -> Result<Vec<(usize, String)>, Stop> {
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for (i, r) in on_each(run, hosts, script).await {
        let name = &run.host(i).name;
        match r {
            Ok(out) if out.success() => ok.push((i, out.stdout_text())),
            Ok(out) => failed.push(format!("{name}: {}", gates::first_line(&out.stderr_text()))),
            Err(e) => failed.push(format!("{name}: {e}")),
        }
    }
    if failed.is_empty() {
        Ok(ok)
    } else {
        Err(Stop(format!(
            "{what} failed on {}. Fix that and run `capstan etcd restore` again with the same \
             snapshot: it goes on from where it is",
            failed.join("; ")
        )))
    }
}

/// Prints the run's end (or the JSON report).
pub fn print(report: &RestoreReport) -> miette::Result<()> {
    if ui::ui().json {
        return ui::emit_json(report);
    }
    let mut out = String::new();
    for (host, e) in &report.run.failed {
        if report.run.stopped.as_ref() != Some(e) {
            let _ = writeln!(
                out,
                "{} {}: {e}",
                ui::paint(host, Color::Bold),
                ui::paint("failed", Color::Red)
            );
        }
    }
    if let Some(why) = &report.refused {
        let _ = writeln!(out, "{} {why}", ui::paint("refused:", Color::Red));
    } else if let Some(why) = &report.run.stopped {
        let _ = writeln!(out, "{} {why}", ui::paint("stopped:", Color::Red));
    } else if report.run.dry_run {
        let _ = writeln!(out, "etcd restore: dry run, nothing was changed");
    } else {
        let _ = writeln!(
            out,
            "etcd restore: {} restored from {} ({:.1}s)",
            report.members.join(", "),
            report.snapshot.display(),
            report.run.seconds
        );
        for (host, dir) in &report.kept {
            let _ = writeln!(
                out,
                "  {host}: the data from before is kept in {dir}; remove it when you no longer need it"
            );
        }
    }
    ui::emit(&out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inventory(dir: &Path) -> Inventory {
        crate::inventory::load_str(
            "cluster: {name: prod, kubernetes_version: v1.32.4}\nhosts:\n\
             - {name: cp1, address: 10.0.0.1, roles: [control-plane]}\n\
             - {name: cp2, address: 10.0.0.2, roles: [control-plane]}\n\
             - {name: cp3, address: 10.0.0.3, roles: [control-plane]}\n",
            &dir.join("cluster.yaml"),
            Some(Path::new("/root")),
        )
        .expect("valid inventory")
    }

    fn meta(bytes: &[u8]) -> Meta {
        Meta {
            cluster: "prod".into(),
            kubernetes_version: "v1.32.4".into(),
            taken_at: "2026-12-07T21:00:00Z".into(),
            host: "cp1".into(),
            size: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(bytes)),
            revision: 42,
            total_keys: 7,
            cluster_id: "abc".into(),
            etcd_ca_sha256: "00".into(),
        }
    }

    fn write(dir: &Path, bytes: &[u8], meta: Option<&Meta>) -> PathBuf {
        let path = dir.join("etcd-prod.db");
        std::fs::write(&path, bytes).unwrap();
        if let Some(m) = meta {
            std::fs::write(snapshot::meta_path(&path), serde_json::to_vec(m).unwrap()).unwrap();
        }
        path
    }

    #[test]
    fn restore_refuses_snapshots_it_cannot_trust_before_connecting() {
        let dir = tempfile::tempdir().unwrap();
        let inv = inventory(dir.path());
        let bytes = b"not really bolt, but bytes";
        // No description: its origin is unknown.
        let path = write(dir.path(), bytes, None);
        let e = check_local(&inv, &path, false).unwrap_err();
        assert!(e.message.contains("cannot tell which cluster"), "{e}");
        assert!(check_local(&inv, &path, true).is_ok());
        // Another cluster's.
        let mut other = meta(bytes);
        other.cluster = "staging".into();
        let path = write(dir.path(), bytes, Some(&other));
        let e = check_local(&inv, &path, false).unwrap_err();
        assert!(e.message.contains("cluster `staging`"), "{e}");
        // Damaged after it was taken: refused even with the flag.
        let mut damaged = meta(bytes);
        damaged.sha256 = "ff".repeat(32);
        let path = write(dir.path(), bytes, Some(&damaged));
        let e = check_local(&inv, &path, true).unwrap_err();
        assert!(e.message.contains("changed or was damaged"), "{e}");
        // A good one.
        let path = write(dir.path(), bytes, Some(&meta(bytes)));
        let local = check_local(&inv, &path, false).unwrap();
        assert_eq!(local.meta.unwrap().revision, 42);
        // Missing file, empty file.
        let e = check_local(&inv, &dir.path().join("nope.db"), false).unwrap_err();
        assert!(e.message.contains("nope.db"), "{e}");
        let path = write(dir.path(), b"", None);
        assert!(
            check_local(&inv, &path, true)
                .unwrap_err()
                .message
                .contains("empty")
        );
    }

    #[test]
    fn an_unfinished_restore_of_another_snapshot_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let inv = inventory(dir.path());
        let bytes = b"snapshot bytes";
        let path = write(dir.path(), bytes, Some(&meta(bytes)));
        std::fs::create_dir_all(inv.state_dir()).unwrap();
        let p = Progress {
            snapshot: "/x/old.db".into(),
            sha256: "11".repeat(32),
            token: "t".into(),
            stamp: "s".into(),
            started: "2026-12-07T20:00:00Z".into(),
        };
        std::fs::write(progress_path(&inv), serde_json::to_vec(&p).unwrap()).unwrap();
        let e = check_local(&inv, &path, false).unwrap_err();
        assert!(e.message.contains("/x/old.db"), "{e}");
        // The same snapshot resumes, with the recorded token.
        let p = Progress {
            sha256: hex::encode(Sha256::digest(bytes)),
            ..p
        };
        std::fs::write(progress_path(&inv), serde_json::to_vec(&p).unwrap()).unwrap();
        assert_eq!(check_local(&inv, &path, false).unwrap().progress, Some(p));
    }

    #[test]
    fn member_facts_and_the_restore_script() {
        let f = parse_facts(
            "ca=abcd\netcd=inactive\nhealth=no\ndata=yes\ntool=etcdctl\nmark=\navail=1048576\n",
        );
        assert_eq!(f.ca, "abcd");
        assert!(!f.healthy && f.data && !f.bump);
        assert_eq!(f.avail_kib, 1_048_576);
        let dir = tempfile::tempdir().unwrap();
        let inv = inventory(dir.path());
        let p = Progress {
            snapshot: "s.db".into(),
            sha256: "00".into(),
            token: "capstan-restore-1".into(),
            stamp: "20261207T210000Z".into(),
            started: String::new(),
        };
        let s = restore_script(&inv, &inv.hosts[1], &f, &p);
        assert!(
            s.contains(
                "ETCDCTL_API=3 etcdctl snapshot restore /var/lib/capstan/restore/snapshot.db"
            ),
            "{s}"
        );
        assert!(s.contains(
            "--initial-cluster cp1=https://10.0.0.1:2380,cp2=https://10.0.0.2:2380,cp3=https://10.0.0.3:2380"
        ), "{s}");
        assert!(s.contains("--name cp2 "), "{s}");
        assert!(
            s.contains("--initial-advertise-peer-urls https://10.0.0.2:2380"),
            "{s}"
        );
        assert!(
            s.contains("--initial-cluster-token capstan-restore-1"),
            "{s}"
        );
        assert!(
            s.contains("/var/lib/etcd-before-restore-20261207T210000Z"),
            "{s}"
        );
        // Data is moved, never removed; only the restore's own temporary folder is.
        assert!(
            !s.contains("rm -rf /var/lib/etcd\n") && !s.contains("rm -rf /var/lib/etcd "),
            "{s}"
        );
        let f = MemberFacts {
            tool: "etcdutl".into(),
            bump: true,
            ..f
        };
        let s = restore_script(&inv, &inv.hosts[0], &f, &p);
        assert!(
            s.contains(" etcdutl snapshot restore") && s.contains("--bump-revision"),
            "{s}"
        );
    }
}
