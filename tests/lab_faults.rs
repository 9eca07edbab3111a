//! Faults on real lab hosts: the cluster lock (two runs at once, a stale lock and
//! `--break-lock`), Ctrl-C (once, then twice) in the middle of `init`, and SIGKILL in the middle of an apply on
//! five hosts. Each scenario ends with a run that converges and one more that changes
//! nothing.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::lab::{Lab, Run, bed, bed_lab, capstan, docker, said_of};

const LOCK: &str = "/var/lib/capstan/lock";

fn cache(inv: &Path) -> std::path::PathBuf {
    inv.parent().expect("well-formed").join("cache")
}

fn command(args: &[&str], inv: &Path, env: &[(&str, &str)]) -> Command {
    let mut cmd = capstan();
    cmd.args(args)
        .arg("-i")
        .arg(inv)
        .arg("--cache-dir")
        .arg(cache(inv));
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn run(args: &[&str], inv: &Path, env: &[(&str, &str)]) -> Run {
    let out = command(args, inv, env).output().expect("run capstan");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A capstan run in the background whose stdout lines arrive on a channel.
struct Background {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stderr: std::thread::JoinHandle<String>,
}

impl Background {
    fn start(args: &[&str], inv: &Path) -> Background {
        Background::start_with(args, inv, &[])
    }

    fn start_with(args: &[&str], inv: &Path, env: &[(&str, &str)]) -> Background {
        let mut child = command(args, inv, env)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn capstan");
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut s);
            s
        });
        Background {
            child,
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    /// Waits (at most `timeout`) for a stdout line starting with `prefix`.
    fn wait_for_line(&mut self, prefix: &str, timeout: Duration) {
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            match self.lines.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    let hit = line.starts_with(prefix);
                    self.seen.push(line);
                    if hit {
                        return;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        panic!(
            "no line starting with {prefix:?} within {timeout:?}:\n{}",
            self.seen.join("\n")
        );
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    fn wait(mut self) -> Run {
        let status = self.child.wait().expect("wait capstan");
        let mut stdout = self.seen.join("\n");
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            stdout.push('\n');
            stdout.push_str(&line);
        }
        Run {
            code: status.code().unwrap_or(-1),
            stdout,
            stderr: self.stderr.join().unwrap_or_default(),
        }
    }
}

/// The words of an error report, which may wrap its lines (`|` margins dropped).
fn flat(text: &str) -> String {
    text.split_whitespace()
        .filter(|w| *w != "|")
        .collect::<Vec<_>>()
        .join(" ")
}

fn sh(lab: &Lab, host: &str, script: &str) -> String {
    docker(&["exec", &lab.container(host), "sh", "-c", script])
}

/// Waits (at most 300 s) until `test` holds on `host`, polling inside the host so that the
/// moment is caught within 20 ms.
fn wait_in(lab: &Lab, host: &str, test: &str) {
    sh(
        lab,
        host,
        &format!("i=0; until {test}; do i=$((i+1)); [ $i -lt 15000 ] || exit 1; sleep 0.02; done"),
    );
}

fn lock_exists(lab: &Lab, host: &str) -> bool {
    sh(lab, host, &format!("test -e {LOCK} && echo yes || echo no")).trim() == "yes"
}

/// The "N changes" ("1 change") of a run's summary line.
fn changes(r: &Run) -> usize {
    let count = |line: &str| -> Option<usize> {
        let words: Vec<&str> = line.split_whitespace().collect();
        words.windows(2).find_map(|w| {
            let noun = w[1].trim_end_matches([',', '(']);
            (noun == "change" || noun == "changes")
                .then(|| w[0].parse().ok())
                .flatten()
        })
    };
    r.stdout
        .lines()
        .rev()
        .filter(|l| l.contains(" hosts, ") || l.contains(" host, "))
        .find_map(count)
        .unwrap_or_else(|| panic!("no change count in a summary line:\n{}", r.all()))
}

/// The run succeeded and changed nothing: `N hosts, 0 changes` (workflows) or
/// `N hosts, 0 changed, …` (apply).
fn assert_no_changes(r: &Run) {
    assert_eq!(r.code, 0, "{}", r.all());
    let summary = r
        .stdout
        .lines()
        .rev()
        .find(|l| l.contains(" hosts, "))
        .unwrap_or_else(|| panic!("no summary line:\n{}", r.all()));
    assert!(
        summary.contains(" 0 changes") || summary.contains(" 0 changed,"),
        "the run changed something:\n{}",
        r.all()
    );
}

/// Ctrl-C in the middle of init; then Ctrl-C twice in the middle of the next init; then
/// two inits at once taking that run's stale lock over; then a stale lock and
/// `--break-lock`. One cluster (1 control plane, 1 worker) throughout.
#[test]
fn init_interrupted_then_two_at_once_then_a_stale_lock() {
    let lab = bed_lab("lock", &["--control-planes", "1", "--workers", "1"]);
    let inv = lab.inventory();

    // 1. SIGINT once the etcd phase is done: the run stops between steps, exit 130, the
    //    lock is released, the output says what is done and what is not.
    let mut bg = Background::start(&["init"], &inv);
    bg.wait_for_line("==> etcd", Duration::from_secs(300));
    bg.signal("-INT");
    let r = bg.wait();
    assert_eq!(r.code, 130, "{}", r.all());
    assert!(r.stderr.contains("SIGINT received"), "{}", r.all());
    assert!(
        r.stdout.contains("stopped: interrupted by SIGINT"),
        "{}",
        r.all()
    );
    assert!(r.stdout.contains("not done:"), "{}", r.all());
    assert!(
        r.stdout
            .contains("done: hosts: certificates, base system, containerd; etcd"),
        "{}",
        r.all()
    );
    assert!(
        r.stderr.contains("the cluster lock is released"),
        "{}",
        r.all()
    );
    assert!(!lock_exists(&lab, "cp1"), "the lock was not released");
    let journal = std::fs::read_to_string(
        inv.parent()
            .expect("well-formed")
            .join(".capstan/journal.log"),
    )
    .expect("the journal exists");
    assert!(
        journal.contains("\tinit\t-\tinterrupted: interrupted by SIGINT"),
        "{journal}"
    );
    assert!(journal.contains("\tinit\tetcd\tdone"), "{journal}");

    // 1b. Ctrl-C twice while the next phase's apply is in flight: capstan exits 130 at
    //     once, the journal says where it was, the lock stays (live, then stale) and no
    //     managed file is partial.
    for h in ["cp1", "w1"] {
        sh(&lab, h, "touch /root/.t0 && sleep 1");
    }
    let mut bg = Background::start(&["init"], &inv);
    bg.wait_for_line("==> etcd", Duration::from_secs(300));
    // The first phase after etcd with anything to change uploads to cp1 (control plane
    // cp1: kubelet, manifests): catch it there and freeze cp1's SSH sessions, so that the
    // step stays in flight (a host that hangs: what a second Ctrl-C is for).
    wait_in(&lab, "cp1", "[ -d /var/lib/capstan/staging ]");
    sh(
        &lab,
        "cp1",
        "pkill -STOP -f '^sshd: root'; pkill -STOP -x sftp-server; true",
    );
    // The first SIGINT waits for the step in flight: capstan is still running.
    bg.signal("-INT");
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        bg.child.try_wait().expect("poll capstan").is_none(),
        "the first SIGINT did not wait for the step in flight"
    );
    bg.signal("-INT");
    let second = Instant::now();
    while bg.child.try_wait().expect("poll capstan").is_none()
        && second.elapsed() < Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = second.elapsed();
    if bg.child.try_wait().expect("poll capstan").is_none() {
        let _ = bg.child.kill();
    }
    let r = bg.wait();
    sh(
        &lab,
        "cp1",
        "pkill -CONT -f '^sshd: root'; pkill -CONT -x sftp-server; sleep 2",
    );
    assert_eq!(r.code, 130, "{}", r.all());
    assert!(
        took < Duration::from_secs(3),
        "the second SIGINT took {took:?} to abort:\n{}",
        r.all()
    );
    let words = flat(&r.stderr);
    for want in [
        "SIGINT received",
        "aborted by a second SIGINT during: ",
        "The cluster lock stays until it turns stale",
        "--break-lock",
        "journal.log",
    ] {
        assert!(words.contains(want), "{want:?}:\n{}", r.all());
    }
    assert!(
        !r.stderr.contains("the cluster lock is released"),
        "{}",
        r.all()
    );
    let journal = std::fs::read_to_string(
        inv.parent()
            .expect("well-formed")
            .join(".capstan/journal.log"),
    )
    .expect("the journal exists");
    let last = journal.lines().last().expect("a journal line");
    assert!(
        last.contains("\tinit\t-\taborted by a second SIGINT during: ")
            && last.ends_with("; the cluster lock stays"),
        "{journal}"
    );
    // Where it was: the phase in flight, started in this run and not ended.
    let during = last
        .split("during: ")
        .nth(1)
        .and_then(|w| w.strip_suffix("; the cluster lock stays"))
        .expect("well-formed");
    let this_run = &journal[journal.rfind("\tinit\t-\tstart, by ").expect("a start")..];
    assert!(
        this_run.contains(&format!("\tinit\t{during}\tstart\n")),
        "{journal}"
    );
    assert!(
        this_run.contains("\tinit\t-\tinterrupted: interrupted by SIGINT"),
        "{journal}"
    );
    let written: Vec<BTreeMap<String, String>> = ["cp1", "w1"]
        .iter()
        .map(|h| written_since_marker(&lab, h))
        .collect();
    let cp1_after_abort = leftovers(&lab, "cp1");
    // The lock stays: live at first (refused, holder named, when it turns stale), then
    // stale (refused, `--break-lock` named).
    assert!(lock_exists(&lab, "cp1"), "the aborted run's lock is gone");
    let r = run(&["init"], &inv, &[]);
    assert_eq!(r.code, 4, "{}", r.all());
    let words = flat(&r.stderr);
    for want in [
        "the cluster is locked on cp1",
        "`init` by root@",
        "turns stale after",
    ] {
        assert!(words.contains(want), "{want:?}:\n{}", r.all());
    }
    std::thread::sleep(Duration::from_secs(12));
    let stale = [("CAPSTAN_LOCK_STALE_AFTER", "10")];
    let r = run(&["init"], &inv, &stale);
    assert_eq!(r.code, 4, "{}", r.all());
    let words = flat(&r.stderr);
    for want in ["is stale", "`init` by root@", "--break-lock"] {
        assert!(words.contains(want), "{want:?}:\n{}", r.all());
    }

    // 2. Two inits at once, both with `--break-lock`: exactly one takes the stale lock
    //    over and completes the interrupted cluster; the other is refused by the lock,
    //    naming the holder.
    let both = ["init", "--break-lock"];
    let a = Background::start_with(&both, &inv, &stale);
    let b = Background::start_with(&both, &inv, &stale);
    let (a_pid, b_pid) = (a.child.id(), b.child.id());
    let (a, b) = (a.wait(), b.wait());
    let (winner, loser, winner_pid) = if a.code == 4 {
        (b, a, b_pid)
    } else {
        (a, b, a_pid)
    };
    assert_eq!(
        loser.code,
        4,
        "one init must be refused:\n{}\n{}",
        loser.all(),
        winner.all()
    );
    assert_eq!(winner.code, 0, "{}", winner.all());
    assert!(changes(&winner) > 0, "{}", winner.all());
    let words = flat(&loser.stderr);
    for want in [
        "the cluster is locked on cp1",
        "/var/lib/capstan/lock",
        "`init` by root@",
        &format!("(pid {winner_pid})"),
        "since ",
        "last heartbeat ",
    ] {
        assert!(words.contains(want), "{want:?}:\n{}", loser.all());
    }
    assert!(
        winner
            .stderr
            .contains("breaking the stale cluster lock on cp1"),
        "{}",
        winner.all()
    );
    assert!(!lock_exists(&lab, "cp1"));
    // No managed file was partial after the abort: every managed file the aborted run
    // wrote already held its final content (the installed-files record's sha256).
    let mut written_by_abort = 0;
    for (n, h) in ["cp1", "w1"].iter().enumerate() {
        let record = sh(&lab, h, "cut -f1,5 /var/lib/capstan/installed.tsv");
        for line in record.lines() {
            let (sha, path) = line.split_once('\t').expect("well-formed");
            if let Some(then) = written[n].get(path) {
                written_by_abort += 1;
                assert_eq!(then, sha, "{h}:{path} was partial after the abort");
            }
        }
        assert_eq!(leftovers(&lab, h), "", "{h} after the re-run");
    }
    // Either cp1 was cut mid-upload (its staging is left, nothing installed yet) or the
    // aborted run had installed files: both were checked above.
    assert!(
        written_by_abort > 0 || cp1_after_abort.contains("/var/lib/capstan/staging"),
        "the aborted run neither installed nor staged anything on cp1"
    );
    // After the first ends, init again is a no-op.
    assert_no_changes(&run(&["init"], &inv, &[]));

    // 3. A stale lock, written by hand: refused as stale (exit 4, the holder named);
    //    `--break-lock` says whose it was and proceeds (a no-op here); the lock is gone.
    sh(
        &lab,
        "cp1",
        &format!(
            "mkdir -p /var/lib/capstan && printf 'capstan-lock 1\\ntoken=deadbeef\\nholder=mallory@elsewhere\\npid=777\\ncommand=upgrade apply\\nstarted=1000\\nheartbeat=1000\\n' > {LOCK}"
        ),
    );
    let r = run(&["init"], &inv, &[]);
    assert_eq!(r.code, 4, "{}", r.all());
    for want in [
        "is stale",
        "mallory@elsewhere (pid 777)",
        "`upgrade apply`",
        "--break-lock",
    ] {
        assert!(flat(&r.stderr).contains(want), "{want:?}:\n{}", r.all());
    }
    assert!(lock_exists(&lab, "cp1"));
    // A dry run takes no lock: it works while the lock is held.
    let r = run(&["init", "--dry-run"], &inv, &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    let r = run(&["init", "--break-lock"], &inv, &[]);
    assert!(
        flat(&r.stderr).contains(
            "breaking the stale cluster lock on cp1: it was held by `upgrade apply` by mallory@elsewhere"
        ),
        "{}",
        r.all()
    );
    assert_no_changes(&r);
    assert!(!lock_exists(&lab, "cp1"));
    assert_no_changes(&run(&["init"], &inv, &[]));
}

/// sha256 of every regular file on `host`'s root file system modified since the marker
/// file `/root/.t0` was made: path -> sha256.
fn written_since_marker(lab: &Lab, host: &str) -> BTreeMap<String, String> {
    let out = sh(
        lab,
        host,
        "find / -xdev -type f -newer /root/.t0 ! -path '/proc/*' -exec sha256sum {} + 2>/dev/null; true",
    );
    out.lines()
        .filter_map(|l| l.split_once("  "))
        .map(|(h, p)| (p.to_string(), h.to_string()))
        .collect()
}

/// Leftovers of an interrupted apply on `host`: staging and `*.capstan-new` files.
fn leftovers(lab: &Lab, host: &str) -> String {
    sh(
        lab,
        host,
        "ls -d /var/lib/capstan/staging 2>/dev/null; \
         find / -xdev -name '*.capstan-new' 2>/dev/null; true",
    )
}

/// SIGKILL during `apply --roles common,containerd` on five hosts: no file is partial,
/// the lock stays (live, then stale; `--break-lock` takes it), the re-run does only what
/// is left and cleans the staging leftovers, and one more run changes nothing.
#[test]
fn sigkill_during_apply_on_five_hosts() {
    let mirror = bed().join("mirror");
    let lab = Lab::up(
        "kill",
        &[
            "--control-planes",
            "1",
            "--workers",
            "4",
            "--mirror",
            mirror.to_str().expect("utf-8 path"),
        ],
    );
    let inv = lab.inventory();
    let hosts = ["cp1", "w1", "w2", "w3", "w4"];
    let args = ["apply", "--roles", "common,containerd"];

    let plan = run(&["plan", "--roles", "common,containerd"], &inv, &[]);
    assert_eq!(plan.code, 0, "{}", plan.all());
    let total = changes(&plan);
    assert!(total > 0, "{}", plan.all());

    for h in hosts {
        sh(&lab, h, "touch /root/.t0 && sleep 1");
    }
    // Freeze w4's side of the connection while its upload is in flight, let the other four finish,
    // then kill capstan: one host is cut mid-upload, the others are done.
    let bg = Background::start(&args, &inv);
    wait_in(&lab, "w4", "[ -d /var/lib/capstan/staging ]");
    // (`docker pause` needs the cgroup freezer, which these hosts lack: stop the sshd
    // session processes instead; the listener and `docker exec` keep working.)
    sh(
        &lab,
        "w4",
        "pkill -STOP -f '^sshd: root'; pkill -STOP -x sftp-server; true",
    );
    for h in &hosts[..4] {
        wait_in(
            &lab,
            h,
            "grep -q /usr/local/bin/containerd /var/lib/capstan/installed.tsv 2>/dev/null \
             && systemctl is-enabled -q containerd && systemctl is-active -q containerd",
        );
    }
    bg.signal("-KILL");
    let killed = bg.wait();
    assert_eq!(killed.code, -1, "killed by a signal:\n{}", killed.all());
    sh(
        &lab,
        "w4",
        "pkill -CONT -f '^sshd: root'; pkill -CONT -x sftp-server; true",
    );
    let after_kill: Vec<String> = hosts.iter().map(|h| leftovers(&lab, h)).collect();
    let written: Vec<BTreeMap<String, String>> = hosts
        .iter()
        .map(|h| written_since_marker(&lab, h))
        .collect();

    // The killed run's lock stays: a live one (recent heartbeat) refuses the next run.
    assert!(lock_exists(&lab, "cp1"));
    let r = run(&args, &inv, &[]);
    assert_eq!(r.code, 4, "{}", r.all());
    assert!(
        r.stderr.contains("the cluster is locked on cp1"),
        "{}",
        r.all()
    );
    assert!(r.stderr.contains("`apply` by "), "{}", r.all());
    // Once its heartbeat is older than the timeout it is stale, and --break-lock takes it.
    std::thread::sleep(Duration::from_secs(12));
    let stale = [("CAPSTAN_LOCK_STALE_AFTER", "10")];
    let r = run(&args, &inv, &stale);
    assert_eq!(r.code, 4, "{}", r.all());
    assert!(r.stderr.contains("is stale"), "{}", r.all());
    let rerun = run(
        &["apply", "--roles", "common,containerd", "--break-lock"],
        &inv,
        &stale,
    );
    assert_eq!(rerun.code, 0, "{}", rerun.all());
    assert!(
        rerun
            .stderr
            .contains("breaking the stale cluster lock on cp1"),
        "{}",
        rerun.all()
    );
    // Only w4, cut mid-upload, had anything left to do.
    assert!(said_of(&rerun.stdout, "w4", "changed"), "{}", rerun.all());
    for h in &hosts[..4] {
        assert!(
            said_of(&rerun.stdout, h, "no changes"),
            "{h} was redone:\n{}",
            rerun.all()
        );
    }
    assert!(!lock_exists(&lab, "cp1"));
    // Every leftover of the killed run is gone, on every host (also those with nothing
    // left to change).
    for h in hosts {
        assert_eq!(leftovers(&lab, h), "", "{h} after the re-run");
    }
    // No managed file was partial: every managed file the killed run wrote (changed
    // since the marker) already held exactly its final content, which the record of
    // installed files gives with its sha256; the others it had not touched.
    let mut written_by_kill = 0;
    for (n, h) in hosts.iter().enumerate() {
        let record = sh(&lab, h, "cut -f1,5 /var/lib/capstan/installed.tsv");
        assert!(
            record.contains("/usr/local/bin/containerd"),
            "{h}: {record}"
        );
        for line in record.lines() {
            let (sha, path) = line.split_once('\t').expect("well-formed");
            if let Some(then) = written[n].get(path) {
                written_by_kill += 1;
                assert_eq!(then, sha, "{h}:{path} was partial after the kill");
            }
        }
    }
    assert!(written_by_kill > 0, "the killed run installed nothing");
    assert!(
        after_kill[4].contains("/var/lib/capstan/staging"),
        "w4 was not cut mid-upload: {after_kill:?}"
    );
    assert_no_changes(&run(&args, &inv, &[]));
}
