//! The cluster lock: one run that changes the cluster at a time.
//!
//! Every command that changes hosts takes the lock before its first change: a file
//! `/var/lib/capstan/lock` on the first reachable control plane (inventory order), created
//! atomically (`ln` of a complete temporary file: the lock never exists half-written, and of
//! two runs exactly one `ln` succeeds). It says who holds it (user@operator-host, pid), for
//! which command, since when, and a heartbeat that a task renews every
//! [`HEARTBEAT_EVERY`] over the lock's own connection while the run lasts. The run releases
//! it at its end, also on failure and on Ctrl-C. Times are the lock host's clock (`date
//! +%s`), so operators' clocks never matter.
//!
//! A second run is refused ([`LockError::Held`], exit [`crate::error::EXIT_LOCKED`]) with the
//! holder's details. A lock whose heartbeat is older than [`stale_after`] belongs to a run
//! that was killed or lost its network: it is still refused, marked stale, and
//! `--break-lock` takes it over after printing whose it was. A live lock is never broken.
//!
//! Read-only commands (check, plan, upgrade plan, certs check-expiration, every
//! `--dry-run`) take no lock; nor does `etcd snapshot`, which changes nothing in the
//! cluster and must stay possible while another run holds the lock.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use crate::facts::sh_quote as q;
use crate::inventory::{Inventory, Role};
use crate::ssh::{Connection, SshError};
use crate::workflows::{SessionOptions, target};

/// Where the lock lives on the lock host.
pub const LOCK_DIR: &str = "/var/lib/capstan";
pub const LOCK_PATH: &str = "/var/lib/capstan/lock";
/// How often the holder renews the heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);
/// A heartbeat older than this makes the lock stale (default; see [`stale_after`]).
pub const STALE_AFTER_DEFAULT: Duration = Duration::from_secs(90);
/// Overrides [`STALE_AFTER_DEFAULT`], in seconds (slow links; tests).
pub const STALE_AFTER_ENV: &str = "CAPSTAN_LOCK_STALE_AFTER";

const MAGIC: &str = "capstan-lock 1";

/// The stale timeout: `CAPSTAN_LOCK_STALE_AFTER` seconds when set (at least the heartbeat
/// interval), else [`STALE_AFTER_DEFAULT`].
pub fn stale_after() -> Duration {
    std::env::var(STALE_AFTER_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(STALE_AFTER_DEFAULT, |s| {
            Duration::from_secs(s.max(HEARTBEAT_EVERY.as_secs()))
        })
}

/// What the lock file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockInfo {
    /// Random, per run: only its holder renews or releases it.
    pub token: String,
    /// user@operator-host
    pub holder: String,
    pub pid: u32,
    pub command: String,
    /// Unix seconds, lock host's clock.
    pub started: i64,
    pub heartbeat: i64,
}

impl LockInfo {
    /// The file's text (heartbeat and start filled in by the host when `None`).
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "{MAGIC}");
        let _ = writeln!(s, "token={}", self.token);
        let _ = writeln!(s, "holder={}", one_line(&self.holder));
        let _ = writeln!(s, "pid={}", self.pid);
        let _ = writeln!(s, "command={}", one_line(&self.command));
        let _ = writeln!(s, "started={}", self.started);
        let _ = writeln!(s, "heartbeat={}", self.heartbeat);
        s
    }

    /// Parses a lock file; `None` when it is not one (then it is shown raw).
    pub fn parse(text: &str) -> Option<LockInfo> {
        let mut lines = text.lines();
        if lines.next()?.trim() != MAGIC {
            return None;
        }
        let mut info = LockInfo {
            token: String::new(),
            holder: String::new(),
            pid: 0,
            command: String::new(),
            started: 0,
            heartbeat: 0,
        };
        let (mut has_token, mut has_heartbeat) = (false, false);
        for line in lines {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            match key {
                "token" => {
                    info.token = value.to_string();
                    has_token = true;
                }
                "holder" => info.holder = value.to_string(),
                "pid" => info.pid = value.parse().ok()?,
                "command" => info.command = value.to_string(),
                "started" => info.started = value.parse().ok()?,
                "heartbeat" => {
                    info.heartbeat = value.parse().ok()?;
                    has_heartbeat = true;
                }
                _ => {}
            }
        }
        (has_token && has_heartbeat && !info.token.is_empty()).then_some(info)
    }

    /// Seconds since the last heartbeat at `now` (never negative).
    pub fn age(&self, now: i64) -> u64 {
        u64::try_from(now.saturating_sub(self.heartbeat)).unwrap_or(0)
    }

    /// The staleness decision: no heartbeat for longer than `timeout`.
    pub fn is_stale(&self, now: i64, timeout: Duration) -> bool {
        self.age(now) > timeout.as_secs()
    }

    /// "init by alice@laptop (pid 42), since 2025-01-01T10:00:00Z, last heartbeat 3s ago".
    pub fn describe(&self, now: i64) -> String {
        format!(
            "`{}` by {} (pid {}), since {}, last heartbeat {}s ago",
            self.command,
            self.holder,
            self.pid,
            rfc3339(self.started),
            self.age(now)
        )
    }
}

fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// `unix` (seconds) as RFC 3339 UTC, `@SECONDS` when out of range.
pub(crate) fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("@{unix}"))
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum LockError {
    #[error("the cluster is locked on {host} ({path}) by another run: {what}")]
    #[diagnostic(
        code(capstan::locked),
        help(
            "wait for that run to end; if it was killed, its lock turns stale after {stale_after}s \
             without heartbeat and `--break-lock` takes it over"
        )
    )]
    Held {
        host: String,
        path: &'static str,
        what: String,
        stale_after: u64,
    },
    #[error(
        "the cluster lock on {host} ({path}) is stale: {what}; no heartbeat for more than {stale_after}s, \
         so that run was killed or lost its network"
    )]
    #[diagnostic(
        code(capstan::lock_stale),
        help("make sure that run is gone, then re-run with `--break-lock` to take the lock over")
    )]
    Stale {
        host: String,
        path: &'static str,
        what: String,
        stale_after: u64,
    },
    #[error("the cluster lock on {host} ({path}) holds something capstan cannot read: {raw:?}")]
    #[diagnostic(
        code(capstan::lock_unreadable),
        help("look at the file; remove it by hand only when no other capstan run is going on")
    )]
    Unreadable {
        host: String,
        path: &'static str,
        raw: String,
    },
    #[error("cannot take the cluster lock: no control plane is reachable ({tried})")]
    #[diagnostic(
        code(capstan::lock_unreachable),
        help(
            "the lock lives on the first reachable control plane; check the network and SSH access"
        )
    )]
    NoControlPlane { tried: String },
    #[error("cannot take the cluster lock on {host}: {message}")]
    #[diagnostic(code(capstan::lock_failed))]
    Failed { host: String, message: String },
}

impl From<(&str, SshError)> for LockError {
    fn from((host, e): (&str, SshError)) -> Self {
        LockError::Failed {
            host: host.to_string(),
            message: e.to_string(),
        }
    }
}

/// What the lock host answered to an acquire attempt.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Acquired { now: i64 },
    Held { now: i64, raw: String },
}

fn parse_answer(out: &str) -> Option<Answer> {
    let mut lines = out.lines();
    let status = lines.next()?.trim().to_string();
    let now: i64 = lines.next()?.strip_prefix("now=")?.trim().parse().ok()?;
    let rest: String = lines.fold(String::new(), |mut acc, l| {
        acc.push_str(l);
        acc.push('\n');
        acc
    });
    match status.as_str() {
        "acquired" => Some(Answer::Acquired { now }),
        "held" => Some(Answer::Held { now, raw: rest }),
        _ => None,
    }
}

/// The acquire script: writes the complete lock to a temporary file, then `ln`s it to the
/// lock path, which fails when the lock exists. `expect_break` (token, heartbeat) first
/// removes the lock when it is still exactly the stale one the operator was shown.
fn acquire_script(info: &LockInfo, expect_break: Option<(&str, i64)>) -> String {
    let tmp = format!("{LOCK_DIR}/lock.{}", info.token);
    let mut s = String::new();
    let _ = writeln!(s, "umask 077\nmkdir -p -m 0700 {LOCK_DIR} || exit 1");
    let _ = writeln!(s, "now=$(date +%s)");
    // Every attempt runs under an flock of the lock dir (released when this script ends):
    // a break checks, removes and takes over in one step, so of two runs breaking the same
    // stale lock at once the second sees the first one's lock, not the stale one; and a
    // plain attempt cannot slip its `ln` in between another run's break and take-over.
    let _ = writeln!(
        s,
        "exec 9<{LOCK_DIR}\nif command -v flock >/dev/null 2>&1; then flock -w 30 9 || exit 1; fi"
    );
    if let Some((token, heartbeat)) = expect_break {
        let _ = writeln!(
            s,
            "if grep -qx {} {l} && grep -qx {} {l}; then rm -f {l}; fi",
            q(&format!("token={token}")),
            q(&format!("heartbeat={heartbeat}")),
            l = LOCK_PATH
        );
    }
    let body = LockInfo {
        started: 0,
        heartbeat: 0,
        ..info.clone()
    }
    .render()
    .replace("started=0\n", "")
    .replace("heartbeat=0\n", "");
    let _ = writeln!(
        s,
        "{{ printf '%s' {}; printf 'started=%s\\nheartbeat=%s\\n' \"$now\" \"$now\"; }} > {t} || exit 1",
        q(&body),
        t = q(&tmp)
    );
    // A lock is never empty (`ln` of a complete file, heartbeats by `mv`): an empty read
    // means its holder released it between our `ln` and `cat` (or, on a host without
    // flock, another run broke it), so try again rather than report an unreadable lock.
    let _ = writeln!(
        s,
        "i=0\nwhile :; do\n\
         if ln {t} {LOCK_PATH} 2>/dev/null; then rm -f {t}; printf 'acquired\\nnow=%s\\n' \"$now\"; exit 0; fi\n\
         c=$(cat {LOCK_PATH} 2>/dev/null)\n\
         if [ -n \"$c\" ] || [ $i -ge 20 ]; then break; fi\n\
         i=$((i + 1))\n\
         done",
        t = q(&tmp)
    );
    let _ = writeln!(
        s,
        "rm -f {t}\nprintf 'held\\nnow=%s\\n%s\\n' \"$now\" \"$c\"\nexit 0",
        t = q(&tmp)
    );
    s
}

/// Renews the heartbeat when the lock is still ours; prints `ok` or `lost` (then the lock).
fn heartbeat_script(token: &str) -> String {
    let tmp = format!("{LOCK_DIR}/lock.hb.{token}");
    format!(
        "if grep -qx {tok} {LOCK_PATH} 2>/dev/null; then\n\
         awk -v now=\"$(date +%s)\" '/^heartbeat=/ {{ print \"heartbeat=\" now; next }} {{ print }}' {LOCK_PATH} > {t} && mv -f {t} {LOCK_PATH} && echo ok\n\
         else echo lost; cat {LOCK_PATH} 2>/dev/null; fi\n",
        tok = q(&format!("token={token}")),
        t = q(&tmp)
    )
}

/// Removes the lock when it is still ours.
fn release_script(token: &str) -> String {
    format!(
        "if grep -qx {} {LOCK_PATH} 2>/dev/null; then rm -f {LOCK_PATH}; echo released; else echo not-ours; fi\n",
        q(&format!("token={token}"))
    )
}

/// A held cluster lock. Release it with [`ClusterLock::release`]; when the process dies
/// instead, the lock stays and turns stale.
pub struct ClusterLock {
    conn: Arc<Connection>,
    host: String,
    token: String,
    heartbeat: tokio::task::JoinHandle<()>,
}

impl ClusterLock {
    /// Takes the lock for `command` on the first reachable control plane. With
    /// `break_lock`, a stale lock is taken over (after saying whose it was).
    pub async fn acquire(
        inventory: &Inventory,
        session: &SessionOptions,
        command: &str,
        break_lock: bool,
    ) -> Result<ClusterLock, LockError> {
        let (host, conn) = connect_lock_host(inventory, session).await?;
        let info = LockInfo {
            token: new_token(),
            holder: holder(),
            pid: std::process::id(),
            command: command.to_string(),
            started: 0,
            heartbeat: 0,
        };
        let timeout = stale_after();
        let mut answer = attempt(&conn, &host, &info, None).await?;
        if let Answer::Held { now, raw } = &answer {
            let Some(current) = LockInfo::parse(raw) else {
                return Err(LockError::Unreadable {
                    host,
                    path: LOCK_PATH,
                    raw: raw.trim().to_string(),
                });
            };
            let what = current.describe(*now);
            if !current.is_stale(*now, timeout) {
                return Err(LockError::Held {
                    host,
                    path: LOCK_PATH,
                    what,
                    stale_after: timeout.as_secs(),
                });
            }
            if !break_lock {
                return Err(LockError::Stale {
                    host,
                    path: LOCK_PATH,
                    what,
                    stale_after: timeout.as_secs(),
                });
            }
            eprintln!("capstan: breaking the stale cluster lock on {host}: it was held by {what}");
            answer = attempt(
                &conn,
                &host,
                &info,
                Some((&current.token, current.heartbeat)),
            )
            .await?;
            if let Answer::Held { now, raw } = &answer {
                // Someone else took it (or renewed it) in between.
                let what = LockInfo::parse(raw).map_or_else(|| raw.clone(), |i| i.describe(*now));
                return Err(LockError::Held {
                    host,
                    path: LOCK_PATH,
                    what,
                    stale_after: timeout.as_secs(),
                });
            }
        }
        let conn = Arc::new(conn);
        let heartbeat = tokio::spawn(heartbeat_loop(
            Arc::clone(&conn),
            host.clone(),
            info.token.clone(),
        ));
        tracing::debug!(host = %host, "cluster lock taken");
        Ok(ClusterLock {
            conn,
            host,
            token: info.token,
            heartbeat,
        })
    }

    /// The host that holds the lock file.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Stops the heartbeat and removes the lock (when it is still ours). A failure is
    /// reported, not fatal: the lock then turns stale.
    pub async fn release(self) {
        self.heartbeat.abort();
        let _ = self.heartbeat.await;
        match self.conn.exec(&release_script(&self.token)).await {
            Ok(out) if out.success() => {}
            Ok(out) => eprintln!(
                "capstan: warning: could not release the cluster lock on {}: {}",
                self.host,
                out.stderr_text().trim()
            ),
            Err(e) => eprintln!(
                "capstan: warning: could not release the cluster lock on {}: {e} (it turns stale after {}s)",
                self.host,
                stale_after().as_secs()
            ),
        }
        if let Ok(conn) = Arc::try_unwrap(self.conn) {
            conn.close().await;
        }
    }
}

async fn attempt(
    conn: &Connection,
    host: &str,
    info: &LockInfo,
    expect_break: Option<(&str, i64)>,
) -> Result<Answer, LockError> {
    let out = conn
        .exec(&acquire_script(info, expect_break))
        .await
        .map_err(|e| LockError::from((host, e)))?;
    if !out.success() {
        return Err(LockError::Failed {
            host: host.to_string(),
            message: format!(
                "cannot write {LOCK_PATH} (exit {}): {}",
                out.exit_status,
                out.stderr_text().trim()
            ),
        });
    }
    parse_answer(&out.stdout_text()).ok_or_else(|| LockError::Failed {
        host: host.to_string(),
        message: format!(
            "unexpected answer from the lock script: {:?}",
            out.stdout_text()
        ),
    })
}

async fn connect_lock_host(
    inventory: &Inventory,
    session: &SessionOptions,
) -> Result<(String, Connection), LockError> {
    let mut tried = Vec::new();
    for host in inventory
        .hosts
        .iter()
        .filter(|h| h.has_role(Role::ControlPlane))
    {
        // The run's own connection when it has one: no second handshake.
        let result = match session.ssh.pool.peek(&host.name) {
            Some(pooled) => pooled,
            None => Connection::connect(&target(host), &session.ssh)
                .await
                .map_err(|e| e.to_string()),
        };
        match result {
            Ok(conn) => return Ok((host.name.clone(), conn)),
            Err(e) => tried.push(format!("{}: {e}", host.name)),
        }
    }
    Err(LockError::NoControlPlane {
        tried: if tried.is_empty() {
            "the inventory has no control plane".into()
        } else {
            tried.join("; ")
        },
    })
}

async fn heartbeat_loop(conn: Arc<Connection>, host: String, token: String) {
    let script = heartbeat_script(&token);
    let mut warned = false;
    loop {
        tokio::time::sleep(HEARTBEAT_EVERY).await;
        match conn.exec(&script).await {
            Ok(out) if out.stdout_text().starts_with("ok") => warned = false,
            Ok(out) => {
                let raw = out.stdout_text();
                let now = time::OffsetDateTime::now_utc().unix_timestamp();
                let by = LockInfo::parse(raw.trim_start_matches("lost").trim_start())
                    .map_or_else(|| "nobody".to_string(), |i| i.describe(now));
                eprintln!(
                    "capstan: the cluster lock on {host} was taken away (now held by {by}): stopping after the steps in flight"
                );
                crate::interrupt::cancel("the cluster lock was lost");
                return;
            }
            Err(e) => {
                if !warned {
                    eprintln!(
                        "capstan: warning: cannot renew the cluster lock on {host}: {e} (retrying)"
                    );
                    warned = true;
                }
            }
        }
    }
}

fn new_token() -> String {
    let bytes: [u8; 12] = rand::random();
    hex::encode(bytes)
}

/// user@operator-host of this process.
/// The name of this process's real user (CI and cron jobs often have no `$USER`):
/// its uid from /proc, looked up in /etc/passwd, else `uid N`.
fn user_of_this_process() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .to_string();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    Some(
        passwd
            .lines()
            .find_map(|l| {
                let mut fields = l.split(':');
                let name = fields.next()?;
                (fields.nth(1)? == uid).then(|| name.to_string())
            })
            .unwrap_or_else(|| format!("uid {uid}")),
    )
}

pub fn holder() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(user_of_this_process)
        .unwrap_or_else(|| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into());
    one_line(&format!("{user}@{host}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> LockInfo {
        LockInfo {
            token: "abc123".into(),
            holder: "alice@laptop".into(),
            pid: 4242,
            command: "upgrade apply".into(),
            started: 1_700_000_000,
            heartbeat: 1_700_000_100,
        }
    }

    #[test]
    fn the_lock_file_round_trips() {
        let text = info().render();
        assert!(text.starts_with("capstan-lock 1\n"), "{text}");
        assert_eq!(LockInfo::parse(&text), Some(info()));
    }

    #[test]
    fn newlines_in_fields_cannot_forge_lines() {
        let mut i = info();
        i.holder = "eve\nheartbeat=9999999999".into();
        let parsed = LockInfo::parse(&i.render()).unwrap();
        assert_eq!(parsed.heartbeat, 1_700_000_100);
        assert_eq!(parsed.holder, "eve heartbeat=9999999999");
    }

    #[test]
    fn what_is_not_a_lock_is_not_parsed() {
        assert_eq!(LockInfo::parse(""), None);
        assert_eq!(LockInfo::parse("hello\n"), None);
        assert_eq!(LockInfo::parse("capstan-lock 1\ntoken=x\n"), None);
        assert_eq!(
            LockInfo::parse("capstan-lock 1\ntoken=x\nheartbeat=soon\n"),
            None
        );
    }

    #[test]
    fn staleness_is_the_heartbeat_age_against_the_timeout() {
        let i = info();
        let t = Duration::from_secs(90);
        assert!(!i.is_stale(i.heartbeat, t));
        assert!(!i.is_stale(i.heartbeat + 90, t));
        assert!(i.is_stale(i.heartbeat + 91, t));
        // A host clock behind the heartbeat is not "negative age".
        assert_eq!(i.age(i.heartbeat - 50), 0);
        assert!(!i.is_stale(i.heartbeat - 50, t));
    }

    #[test]
    fn the_description_names_holder_command_start_and_heartbeat() {
        let d = info().describe(1_700_000_103);
        assert!(d.contains("`upgrade apply`"), "{d}");
        assert!(d.contains("alice@laptop (pid 4242)"), "{d}");
        assert!(d.contains("since 2023-11-14T22:13:20Z"), "{d}");
        assert!(d.contains("last heartbeat 3s ago"), "{d}");
    }

    #[test]
    fn answers_are_parsed() {
        assert_eq!(
            parse_answer("acquired\nnow=5\n"),
            Some(Answer::Acquired { now: 5 })
        );
        assert_eq!(
            parse_answer("held\nnow=7\ncapstan-lock 1\ntoken=t\n"),
            Some(Answer::Held {
                now: 7,
                raw: "capstan-lock 1\ntoken=t\n".into()
            })
        );
        assert_eq!(parse_answer("garbage"), None);
    }

    /// The scripts for real, against a temporary lock dir: one of two acquires wins, the
    /// heartbeat renews only our lock, release removes only ours, a break needs the exact
    /// stale lock.
    #[test]
    fn the_scripts_lock_atomically_here() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let sh = |script: &str| {
            let script = script.replace(LOCK_DIR, d);
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(&script)
                .output()
                .unwrap();
            assert!(out.status.success(), "{script}\n{out:?}");
            String::from_utf8(out.stdout).unwrap()
        };
        let mine = LockInfo {
            token: "aaaa".into(),
            ..info()
        };
        let theirs = LockInfo {
            token: "bbbb".into(),
            holder: "bob@ci".into(),
            ..info()
        };
        let first = parse_answer(&sh(&acquire_script(&mine, None))).unwrap();
        assert!(matches!(first, Answer::Acquired { .. }), "{first:?}");
        let second = parse_answer(&sh(&acquire_script(&theirs, None))).unwrap();
        let Answer::Held { raw, now } = second else {
            panic!("{second:?}")
        };
        let held = LockInfo::parse(&raw).unwrap();
        assert_eq!(held.token, "aaaa");
        assert_eq!(held.holder, "alice@laptop");
        assert!((held.heartbeat - now).abs() < 5);
        // Only the lock file remains: no temporaries.
        let names: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["lock".to_string()]);

        assert!(sh(&heartbeat_script("aaaa")).starts_with("ok"));
        assert!(sh(&heartbeat_script("bbbb")).starts_with("lost"));
        // A break that does not match the current lock leaves it alone.
        let wrong = acquire_script(&theirs, Some(("aaaa", held.heartbeat - 1000)));
        assert!(sh(&wrong).starts_with("held"));
        assert_eq!(sh(&release_script("bbbb")).trim(), "not-ours");
        // Make it stale by hand, then break it exactly.
        let path = format!("{d}/lock");
        let old = LockInfo {
            heartbeat: 1000,
            ..held.clone()
        };
        std::fs::write(&path, old.render()).unwrap();
        let brk = acquire_script(&theirs, Some(("aaaa", 1000)));
        assert!(sh(&brk).starts_with("acquired"));
        let now_held = LockInfo::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(now_held.holder, "bob@ci");
        assert_eq!(sh(&release_script("bbbb")).trim(), "released");
        assert!(!std::path::Path::new(&path).exists());
    }

    /// Two runs breaking the same stale lock at the same moment: exactly one takes it
    /// over, every time.
    #[test]
    fn of_two_simultaneous_breaks_exactly_one_wins() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let path = format!("{d}/lock");
        let stale = LockInfo {
            token: "0ld".into(),
            heartbeat: 1000,
            ..info()
        };
        let script = |token: &str| {
            let who = LockInfo {
                token: token.into(),
                ..info()
            };
            acquire_script(&who, Some(("0ld", 1000))).replace(LOCK_DIR, d)
        };
        for _ in 0..20 {
            std::fs::write(&path, stale.render()).unwrap();
            let runs: Vec<std::process::Child> = ["aaaa", "bbbb"]
                .iter()
                .map(|t| {
                    std::process::Command::new("sh")
                        .arg("-c")
                        .arg(script(t))
                        .stdout(std::process::Stdio::piped())
                        .spawn()
                        .unwrap()
                })
                .collect();
            let answers: Vec<Answer> = runs
                .into_iter()
                .map(|c| {
                    let out = c.wait_with_output().unwrap();
                    parse_answer(&String::from_utf8(out.stdout).unwrap()).unwrap()
                })
                .collect();
            let won = answers
                .iter()
                .filter(|a| matches!(a, Answer::Acquired { .. }))
                .count();
            assert_eq!(won, 1, "{answers:?}");
            std::fs::remove_file(&path).unwrap();
        }
    }

    /// A plain first attempt while another run is between breaking a stale lock and
    /// taking it over (holding the flock, the stale lock removed, its own not yet there):
    /// the attempt waits for the take-over and sees that lock; it never takes the gap.
    #[test]
    fn a_plain_attempt_never_slips_in_between_a_break_and_its_take_over() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let path = format!("{d}/lock");
        let breakers = LockInfo {
            token: "aaaa".into(),
            ..info()
        };
        std::fs::write(&path, "token=0ld\n").unwrap();
        let mut breaker = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "exec 9<{d}; flock 9; rm -f {path}; : > {d}/gap; sleep 1; printf '%s' \"$1\" > {path}.t; ln {path}.t {path}; rm {path}.t"
            ))
            .arg("sh")
            .arg(breakers.render())
            .spawn()
            .unwrap();
        let gap = std::path::Path::new(d).join("gap");
        while !gap.exists() {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let plain = LockInfo {
            token: "bbbb".into(),
            ..info()
        };
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(acquire_script(&plain, None).replace(LOCK_DIR, d))
            .output()
            .unwrap();
        assert!(breaker.wait().unwrap().success());
        let answer = parse_answer(&String::from_utf8(out.stdout).unwrap()).unwrap();
        let Answer::Held { raw, .. } = &answer else {
            panic!("the plain attempt took the lock in the gap: {answer:?}")
        };
        assert_eq!(LockInfo::parse(raw).unwrap().token, "aaaa");
    }
}
